"""Is the good gap-filling start limited by its rate's noise (an anneal would help) or by its
progress (a faster rate would)?  Plain training of a few schedules for MIHA's lineage length.

    python benchmarks/probe_anneal.py [--seeds 0 1] [--epochs 80] [--out benchmarks/records]

The good gap-filling CNN of ``benchmarks/quality.py`` (the same training and validation split as
every system there), Adam at batch 32, trained with Keras ``fit`` for ``--epochs`` epochs, constant
or with a cosine anneal to 1 % of the rate over its last 10, 30 or all epochs (as MIHA's final
phase anneals its last m epochs); the test gap MSE at the end.  Plain training's gap MSE at 200
epochs (``quality.py``'s baseline) is what MIHA's 80-epoch lineage is compared with: #13's target
is 0.95× of it.  Writes ``probe-anneal-gapfill_good.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

#: (learning rate, epochs of cosine anneal at the end; 0: constant)
SCHEDULES = ((1e-3, 0), (1e-3, 10), (1e-3, 30), (1e-3, 80), (2e-3, 0), (2e-3, 30), (4e-3, 0), (4e-3, 30), (8e-3, 30))


def cosine_tail(lr: float, tail: int, epochs: int, floor: float = 0.01):
    def rate(epoch: int, _current: float) -> float:
        start = epochs - tail
        if epoch < start:
            return lr
        low = lr * floor
        return low + (lr - low) * (1 + math.cos(math.pi * (epoch - start) / tail)) / 2
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--out", default=str(HERE / "records"))
    args = ap.parse_args()
    import keras
    import quality

    task = quality.ARTICLE_TASKS["gapfill_good"](False)
    rows = []
    print("| seed | Adam rate | cosine anneal over the last | test gap MSE |\n|---|---|---|---|")
    for seed in args.seeds:
        for lr, tail in SCHEDULES:
            keras.utils.set_random_seed(seed)
            model = task.build(seed)
            model.compile(optimizer=keras.optimizers.Adam(lr), loss=model.loss)
            callbacks = [keras.callbacks.LearningRateScheduler(cosine_tail(lr, tail, args.epochs))] if tail else []
            model.fit(task.x, task.y, validation_data=(task.x_val, task.y_val), batch_size=32, epochs=args.epochs,
                      verbose=0, callbacks=callbacks)
            value = task.score(model)
            rows.append({"seed": seed, "learning_rate": lr, "cosine_tail_epochs": tail, "epochs": args.epochs,
                         "test_gap_mse": value})
            print(f"| {seed} | {lr:g} | {tail or 'constant'} | {value:.5f} |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe-anneal-gapfill_good.json").write_text(json.dumps({"task": "gapfill_good", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
