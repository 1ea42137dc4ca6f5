"""Does the validation loss follow test accuracy?  The raw and the calibrated loss, epoch by epoch.

    python benchmarks/probe_calibration.py [--seed 0] [--out benchmarks/records]

Trains the MNIST FNN of ``benchmarks/quality.py`` (4,050 / 450 / 500 digits) with three
configurations that MIHA's lineages reached (relu + Adam, sigmoid + Adam, relu + SGD 0.01) and
prints, every 5 epochs, the raw validation cross-entropy, the calibrated one (after temperature
scaling, ``miha_engine.calibration``), the fitted temperature, validation and test accuracy.  Writes
``probe-calibration.json``.  It is the measurement behind ``fitness_metric="auto"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

CONFIGS = (("relu", "adam", 1e-3), ("sigmoid", "adam", 1e-3), ("relu", "sgd", 0.01))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=38)
    ap.add_argument("--out", default=str(HERE / "records"))
    args = ap.parse_args()
    import keras
    import quality

    from miha_engine.calibration import temperature_nll

    task = quality.mnist_task(False)
    rows = []
    print("| hidden | optimizer | epoch | raw val loss | calibrated | T | val acc | test acc |\n|---|---|---|---|---|---|---|---|")
    for act, opt, lr in CONFIGS:
        keras.utils.set_random_seed(args.seed)
        model = task.build(args.seed)
        model.get_layer("hidden").activation = keras.activations.get(act)
        optimizer = keras.optimizers.SGD(lr) if opt == "sgd" else keras.optimizers.Adam(lr)
        model.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"])
        done = 0
        for stop in [3, *range(8, args.epochs + 1, 5)]:
            model.fit(task.x, task.y, batch_size=32, epochs=stop - done, verbose=0)
            done = stop
            p = model.predict(task.x_val, verbose=0)
            raw = float(-np.mean(np.log(np.clip(p[np.arange(len(task.y_val)), task.y_val], 1e-7, 1))))
            cal, temperature = temperature_nll(p, task.y_val, "sparse_categorical")
            row = {"hidden": act, "optimizer": f"{opt} {lr:g}", "epoch": stop, "raw_val_loss": raw,
                   "calibrated_val_loss": cal, "temperature": temperature,
                   "val_accuracy": float(np.mean(p.argmax(1) == task.y_val)), "test_accuracy": task.score(model)}
            rows.append(row)
            print(f"| {act} | {opt} {lr:g} | {stop} | {raw:.4f} | {cal:.4f} | {temperature:.2f} | "
                  f"{row['val_accuracy']:.4f} | {row['test_accuracy']:.3f} |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe-calibration.json").write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
