"""Where a fit's slow first epoch comes from: a new model, a new batch size, or every fit.

    python benchmarks/first_epoch.py [--out benchmarks/records]

The MNIST FNN (784-400-10, Adam, batch 32) on the examples' 4,500 digits, set up as a run sets it up
(`KerasBackend`). Members of 3 epochs train from the same parent on the pooled model: first three
with the model's own genes (the first of them traces the model), then with batch sizes 64, 64, 16,
16 and 32, then with SGD (a new optimizer kind: a new pooled model) twice. Each member's epoch times
are printed and written; the first epoch's excess over the member's later ones is what
`benchmarks/overhead.py` counts as "retracing".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "records"))
    ap.add_argument("--name", default="first-epoch")
    args = ap.parse_args(argv)

    import mnist_fnn

    import miha_engine as me
    from miha_engine.backend import KerasBackend
    from miha_engine.training import CancelToken

    x, y, xt, yt = mnist_fnn.load(quick=False)
    backend = KerasBackend.prepare(mnist_fnn.build(0), me.from_arrays(x, y, x_test=xt, y_test=yt),
                                   me.RunConfig(batch_size=32, seed=0), CancelToken())
    genes = backend.initial_genes()
    backend.start(genes)
    parent = backend.snapshot(genes)
    plan = [("the model's own genes", genes)] * 3
    plan += [(f"batch size {b}", genes.replace(batch_size=b)) for b in (64, 64, 16, 16, 32)]
    plan += [("sgd (a new optimizer kind)", genes.replace(optimizer="sgd", learning_rate=0.01))] * 2
    records = []
    for index, (label, g) in enumerate(plan, start=1):
        seconds: list[float] = []
        built = backend.pool.built
        backend.train_member(g, parent, 1, index, 3, lambda e, loss, val, s, out=seconds: out.append(s))
        excess = seconds[0] - statistics.median(seconds[1:])
        records.append({"member": label, "epoch_s": seconds, "first_epoch_excess_s": excess,
                        "new_model": backend.pool.built > built})
        print(f"{label:>28}: epochs {', '.join(f'{s:.3f}' for s in seconds)} s; first epoch's excess "
              f"{excess * 1000:+.0f} ms{' (a new model)' if backend.pool.built > built else ''}", flush=True)
    path = Path(args.out) / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"records": records}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
