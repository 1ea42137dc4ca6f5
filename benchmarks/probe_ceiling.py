"""How far can one configuration of the search space take a task?  Plain training of each.

    python benchmarks/probe_ceiling.py [--task mnist_fnn|gapfill_good] [--seed 0] [--epochs 80] [--out benchmarks/records]

Trains the MNIST FNN of ``benchmarks/quality.py`` (4,050 training digits, 500 test) with Keras
``fit`` for each single configuration below, held constant (optimizer, learning rate, batch size,
hidden activation, weight decay), and prints its test accuracy every 20 epochs.  A run of MIHA
changes these along its lineage; if no constant configuration clears plain training's 0.940 by much,
the target "+0.005 over plain training" asks for more than choosing hyperparameters can give on this
data.  ``--task gapfill_good`` asks the same of the good gap-filling CNN (gap MSE, lower is better) at
MIHA's lineage length of 80 epochs, against plain training's 0.0027 at 200: a configuration that
trains 2.5× faster is what MIHA would need to find.  Writes ``probe-ceiling-<task>-s<seed>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

# (optimizer, learning rate, batch size, hidden activation, weight decay)
CONFIGS = (
    ("adam", 1e-3, 32, "relu", 0.0),  # the initial configuration
    ("adam", 1e-3, 32, "relu", 0.05), ("adam", 1e-3, 32, "relu", 0.2), ("adam", 1e-3, 32, "relu", 1.0),
    ("adam", 3e-4, 32, "relu", 0.0), ("adam", 2e-3, 32, "relu", 0.0),
    ("adam", 1e-3, 8, "relu", 0.0), ("adam", 1e-3, 128, "relu", 0.0),
    ("sgd", 0.05, 32, "relu", 0.0), ("rmsprop", 1e-3, 32, "relu", 0.0),
    ("adam", 1e-3, 32, "gelu", 0.0), ("adam", 1e-3, 32, "tanh", 0.0), ("adam", 1e-3, 32, "sigmoid", 0.0),
)
# the gap-filling CNN keeps its activations (relu); None: the layer's own
GAPFILL = (
    ("adam", 1e-3, 32, None, 0.0),  # the good initial configuration
    ("adam", 2e-3, 32, None, 0.0), ("adam", 4e-3, 32, None, 0.0), ("adam", 1e-3, 16, None, 0.0),
    ("adam", 2e-3, 16, None, 0.0), ("nadam", 2e-3, 32, None, 0.0), ("rmsprop", 1e-3, 32, None, 0.0),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["mnist_fnn", "gapfill_good"], default="mnist_fnn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--out", default=str(HERE / "records"))
    args = ap.parse_args()
    import keras
    import quality

    task = quality.ARTICLE_TASKS[args.task](False)
    configs = CONFIGS if args.task == "mnist_fnn" else GAPFILL
    rows = []
    reads = list(range(20, args.epochs + 1, 20))
    print(f"{task.name}, test {task.metric}, seed {args.seed}\n")
    print("| optimizer | lr | batch | hidden | weight decay | " + " | ".join(f"ep {e}" for e in reads) + " |")
    print("|---|---|---|---|---|" + "---|" * len(reads))
    for opt, lr, batch, act, wd in configs:
        keras.utils.set_random_seed(args.seed)
        model = task.build(args.seed)
        if act is not None:
            model.get_layer("hidden").activation = keras.activations.get(act)
        kwargs = {"learning_rate": lr, **({"weight_decay": wd} if wd else {})}
        optimizer = keras.optimizers.SGD(momentum=0.9, **kwargs) if opt == "sgd" else \
            keras.optimizers.get({"class_name": opt, "config": kwargs})
        model.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"] if task.higher_is_better else [])
        accs, done = [], 0
        for stop in reads:
            model.fit(task.x, task.y, batch_size=batch, epochs=stop - done, verbose=0)
            done = stop
            accs.append(task.score(model))
        rows.append({"optimizer": opt, "learning_rate": lr, "batch_size": batch, "hidden": act or "as built",
                     "weight_decay": wd, task.metric: dict(zip(reads, accs))})
        print(f"| {opt} | {lr:g} | {batch} | {act or 'as built'} | {wd:g} | " +
              " | ".join(f"{a:.4g}" for a in accs) + " |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"probe-ceiling-{args.task}-s{args.seed}.json").write_text(
        json.dumps({"task": args.task, "metric": task.metric, "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
