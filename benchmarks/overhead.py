"""Overhead against the physical limit, and how cost grows with pop_size and dataset size.

    python benchmarks/overhead.py [--quick] [--out DIR]

Overhead: a MIHA run's wall time divided by the wall time of training one model for the same
compute epochs, at the same batch sizes in the same order, with the same validation pass, measured
in the same process run.  Two limits: the engine's own Trainer on one model (no members, no
archives, no log), and Keras' plain ``fit``.  The time outside training is broken down by timing the
engine's own functions during the run: building and compiling members (the model pool), restoring and
snapshotting weights, saving archives, writing the log, evaluating; retracing is the first epoch of
each fit less a steady epoch.

Scaling: wall time against pop_size and against the number of training samples.

Writes ``DIR/overhead.json`` and ``DIR/scaling.json`` (``{"records": [...]}``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


class Timers:
    """Wrap functions of the engine's modules with wall-clock accumulators (restored on exit)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []
        self._depth = 0

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*a, **k):
            outer = self._depth == 0  # nested timed calls count once, in the outermost
            self._depth += 1
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self._depth -= 1
                if outer:
                    self.seconds[label] += time.perf_counter() - t
                    self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)


def _segments(batch_sizes: list[int]) -> list[tuple[int, int]]:
    """Consecutive equal batch sizes as (batch size, epochs)."""
    out: list[tuple[int, int]] = []
    for b in batch_sizes:
        if out and out[-1][0] == b:
            out[-1] = (b, out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out


def warm_up(data, cfg) -> float:
    """Train a small throwaway model for one epoch with the engine's Trainer and with Keras' ``fit``:
    TensorFlow's function runtime starts up at a process's first traced call (measured 0.74 s in
    part 7, ``benchmarks/first_epoch.py``), and without this only the run timed first (MIHA's) paid
    it.  Returns the seconds it took."""
    import keras

    import miha_engine as me
    from miha_engine.training import Trainer

    def small():
        return keras.Sequential([keras.Input(data.x.shape[1:]), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])

    t0 = time.perf_counter()
    trainer = Trainer(data, cfg, me.CancelToken(), 0)
    mine = small()
    mine.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                 steps_per_execution=trainer.steps_per_execution(32), jit_compile=trainer.jit(mine))
    trainer.fit(mine, 32, 1, lambda *a: None)
    plain = small()
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    plain.fit(data.x, data.y, validation_data=(data.x_val, data.y_val), batch_size=32, epochs=1, verbose=0)
    return time.perf_counter() - t0


def overhead(quick: bool, cold: bool = False) -> dict[str, Any]:
    import mnist_fnn

    import miha_engine as me
    from miha_engine import models as mdl
    from miha_engine.runlog import RunFolder
    from miha_engine.training import Trainer

    x, y, xt, yt = mnist_fnn.load(quick=quick)
    cfg = (me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=2)
           if quick else me.RunConfig(runup_epochs=5, candidate_epochs=2, fixing_epochs=2, cycles=6, population_size=4))
    cfg = cfg.replace(batch_size=32, seed=0)
    data = me.from_arrays(x, y, x_test=xt, y_test=yt).with_validation_split(cfg.validation_split, cfg.seed)

    warm_up_s = None if cold else warm_up(data, cfg)
    batch_sizes: list[int] = []
    epoch_seconds: list[tuple[str, int, float]] = []  # (fit id, batch size, seconds)
    current = {"bs": cfg.batch_size, "fit": "runup"}

    def listener(e):
        kind = e.kind
        if kind in ("run_started", "cycle_done"):
            current["bs"] = e.genes["batch_size"]
            current["fit"] = f"main-{getattr(e, 'cycle', 0)}"
        elif kind == "member_started":
            current["bs"], current["fit"] = e.genes["batch_size"], f"m{e.cycle}-{e.member}"
        elif kind == "member_trained":
            current["fit"] = "between"
        elif kind == "epoch_ended":
            if e.phase == "final":
                current["fit"] = "final"
            batch_sizes.append(current["bs"])
            epoch_seconds.append((current["fit"], current["bs"], e.seconds))

    pools: list[Any] = []  # the run's model pools: how many models it built (a new traced step each)
    pool_init = mdl.ModelPool.__init__

    def counted_init(self, *a, **k):
        pool_init(self, *a, **k)
        pools.append(self)

    mdl.ModelPool.__init__ = counted_init
    try:
        with Timers() as timers:
            timers.wrap(Trainer, "fit", "training (fit)")
            timers.wrap(Trainer, "evaluate", "evaluating (test, crossover)")
            timers.wrap(Trainer, "validation_loss", "evaluating (test, crossover)")
            timers.wrap(mdl.ModelPool, "get", "building and compiling members")
            timers.wrap(mdl, "restore", "restoring weights and optimizer state")
            timers.wrap(mdl, "snapshot", "snapshotting weights")
            timers.wrap(mdl, "save_model", "saving archives")
            if hasattr(mdl, "archive_writer"):  # since part 7 the training thread only copies; a thread writes
                timers.wrap(mdl, "archive_writer", "saving archives")
            for name in ("append_event", "write_history", "write_population", "write_state", "write_run", "update_run"):
                timers.wrap(RunFolder, name, "writing the log")
            model = mnist_fnn.build(0)
            t0 = time.perf_counter()
            me.run(model, data, cfg, run_dir=Path(tempfile.mkdtemp(prefix="miha-ovh-")) / "run", listeners=[listener])
            miha_wall = time.perf_counter() - t0
    finally:
        mdl.ModelPool.__init__ = pool_init
    breakdown = dict(timers.seconds)
    calls = dict(timers.calls)
    # first epoch of each fit beyond a steady epoch of its batch size: tracing and first-call costs
    steady: dict[int, list[float]] = defaultdict(list)
    first: dict[str, tuple[int, float]] = {}
    for fit_id, bs, s in epoch_seconds:
        if fit_id in first:
            steady[bs].append(s)
        else:
            first[fit_id] = (bs, s)
    all_steady = statistics.median([s for v in steady.values() for s in v]) if steady else 0.0
    excess = {f: max(0.0, s - statistics.median(steady.get(bs) or [all_steady])) for f, (bs, s) in first.items()}
    retrace = sum(excess.values())
    segments = _segments(batch_sizes)

    # Limit 1: the engine's Trainer, one model, same epochs and batch sizes.
    limit_model = mnist_fnn.build(0)
    trainer = Trainer(data, cfg, me.CancelToken(), 0)
    limit_model.compile(optimizer=limit_model.optimizer, loss=limit_model.loss, metrics=["accuracy"],
                        steps_per_execution=trainer.steps_per_execution(32), jit_compile=trainer.jit(limit_model))
    limit_epochs: list[float] = []
    t0 = time.perf_counter()
    for bs, n in segments:
        trainer.fit(limit_model, bs, n, lambda epoch, loss, val, seconds: limit_epochs.append(seconds))
    trainer_wall = time.perf_counter() - t0
    # the limit's own first epoch beyond its steady ones (its one trace)
    limit_first_excess = max(0.0, limit_epochs[0] - statistics.median(limit_epochs[1:] or limit_epochs))

    # Limit 2: Keras' plain fit.
    plain = mnist_fnn.build(0)
    t0 = time.perf_counter()
    for bs, n in segments:
        plain.fit(data.x, data.y, validation_data=(data.x_val, data.y_val), batch_size=bs, epochs=n, verbose=0)
    keras_wall = time.perf_counter() - t0

    training = breakdown.get("training (fit)", 0.0)
    new_models = sum(p.built for p in pools)
    outside = {k: v for k, v in breakdown.items() if k != "training (fit)"}
    outside["retracing (first epoch of each fit beyond a steady one; inside fit)"] = retrace
    outside["other (selection, fitness, Python)"] = miha_wall - training - sum(
        v for k, v in breakdown.items() if k != "training (fit)")
    return {
        "config": f"m={cfg.runup_epochs} c={cfg.cycles} pop={cfg.population_size} n={cfg.candidate_epochs} k={cfg.fixing_epochs}",
        "compute_epochs": len(batch_sizes), "batch_size_segments": len(segments),
        "samples": data.n_train, "miha_wall_s": miha_wall, "trainer_limit_wall_s": trainer_wall,
        "keras_fit_wall_s": keras_wall, "overhead_vs_trainer": miha_wall / trainer_wall,
        "overhead_vs_keras_fit": miha_wall / keras_wall, "training_in_miha_s": training,
        "outside_training_s": outside, "calls": calls, "fits": len(first), "new_models": new_models,
        "first_epoch_excess_s": {f: round(v, 3) for f, v in excess.items()},
        "warm_up_s": warm_up_s, "trainer_limit_first_epoch_excess_s": limit_first_excess,
    }


def scaling(quick: bool) -> list[dict[str, Any]]:
    import mnist_fnn

    import miha_engine as me

    x, y, xt, yt = mnist_fnn.load(quick=False)
    base = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, batch_size=32, seed=0,
                        drop_intermediate=True)
    pops = (2, 3) if quick else (2, 4, 8)
    sizes = (300, 600) if quick else (1000, 2000, 4000)
    mid_size = sizes[-1] if quick else 2000
    records = []

    def one(pop: int, n: int, axis: str) -> None:
        cfg = base.replace(population_size=pop)
        data = me.from_arrays(x[:n], y[:n])
        t0 = time.perf_counter()
        me.run(mnist_fnn.build(0), data, cfg, run_dir=Path(tempfile.mkdtemp(prefix="miha-scale-")) / "run")
        wall = time.perf_counter() - t0
        records.append({"system": "miha", "task": "mnist_fnn", "seed": 0, "epochs": cfg.total_epochs,
                        "wall_s": wall, "metric": "wall_s", "value": wall,
                        "config": {"axis": axis, "population_size": pop, "samples": n,
                                   "member_epochs": cfg.cycles * pop * cfg.candidate_epochs}})
        print(f"  scaling {axis:8s} pop={pop} samples={n}: {wall:.1f} s", flush=True)

    for pop in pops:
        one(pop, mid_size, "pop_size")
    for n in sizes:
        one(4 if not quick else 2, n, "samples")
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--only", choices=("overhead", "scaling"))
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up: the run timed first (MIHA's) also pays TensorFlow's start-up (as before part 9)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only != "scaling":
        o = overhead(args.quick, cold=args.cold)
        print(json.dumps(o, indent=2), flush=True)
        rec = {"system": "miha", "task": "mnist_fnn", "seed": 0, "epochs": o["compute_epochs"], "wall_s": o["miha_wall_s"],
               "metric": "overhead_vs_trainer", "value": o["overhead_vs_trainer"], "config": o}
        (out / "overhead.json").write_text(json.dumps({"records": [rec], "quick": args.quick}, indent=1))
    if args.only != "overhead":
        (out / "scaling.json").write_text(json.dumps({"records": scaling(args.quick), "quick": args.quick}, indent=1))


if __name__ == "__main__":
    main()
