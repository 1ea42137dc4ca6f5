"""What one traced training step costs with one optimizer kind against every kind of the search space.

    python benchmarks/trace_cost.py [--repeats 2] [--out benchmarks/records]

The MNIST FNN (784-400-10, Adam, batch 32) on the examples' 4,500 digits, set up as a run sets it up
(`KerasBackend`). For each setting, in a fresh process: the Python trace of the training chunk
(16 steps), its first call (TensorFlow's graph optimisation and kernels), a second call, and the steady
epoch (the median of 8). "one" searches only Adam (the pool keeps one optimizer); "all" searches the
default six kinds, every one a branch of the same traced step (models.ModelPool, part 7). Before part 7
each kind a run used was a new model: its build, trace and first call (≈0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def child(mode: str) -> dict:
    import mnist_fnn
    import tensorflow as tf

    import miha_engine as me
    from miha_engine.backend import KerasBackend
    from miha_engine.training import CancelToken

    x, y, xt, yt = mnist_fnn.load(quick=False)
    cfg = me.RunConfig(batch_size=32, seed=0)
    if mode == "one":
        cfg = cfg.replace(search=me.SearchSpace(optimizers=("adam",)))
    backend = KerasBackend.prepare(mnist_fnn.build(0), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, CancelToken())
    genes = backend.initial_genes()
    backend.start(genes)
    trainer = backend.trainer
    loop = trainer._loop(backend.main)
    args = (trainer._x, trainer._y, tf.constant(trainer.epoch_order(1, 0)), tf.constant(0, tf.int64),
            tf.constant(16, tf.int64), tf.constant(32, tf.int64))
    t0 = time.perf_counter()
    loop.train.get_concrete_function(*args)
    t1 = time.perf_counter()
    loop.train(*args)
    t2 = time.perf_counter()
    loop.train(*args)
    t3 = time.perf_counter()
    epochs: list[float] = []
    backend.train_main(genes, int(os.environ.get("MIHA_BENCH_EPOCHS", 8)), lambda e, loss, val, s: epochs.append(s), shuffle=2)
    return {"mode": mode, "kinds": list(backend.pool.optimizer_kinds) or [genes.optimizer],
            "trace_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2,
            "steady_epoch_s": statistics.median(epochs[1:])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "records"))
    ap.add_argument("--name", default="trace-cost")
    ap.add_argument("--child", choices=("one", "all"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)), flush=True)
        return
    records = []
    for r in range(args.repeats):
        for mode in ("one", "all"):  # interleaved: each pair shares the machine's state of the moment
            out = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True)
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rec["repeat"] = r
            records.append(rec)
            print(f"repeat {r} {mode:>3} ({len(rec['kinds'])} kinds): trace {rec['trace_s']:.3f} s, first call "
                  f"{rec['first_call_s']:.3f} s, second {rec['second_call_s']:.3f} s, steady epoch "
                  f"{rec['steady_epoch_s']:.4f} s", flush=True)
    for r in range(args.repeats):
        one, every = (next(x for x in records if x["repeat"] == r and x["mode"] == m) for m in ("one", "all"))
        print(f"repeat {r}: all ÷ one — trace + first call {(every['trace_s'] + every['first_call_s']) / (one['trace_s'] + one['first_call_s']):.2f}×, "
              f"steady epoch {every['steady_epoch_s'] / one['steady_epoch_s']:.3f}×")
    path = Path(args.out) / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"records": records}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
