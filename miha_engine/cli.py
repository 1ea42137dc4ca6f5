"""``miha``: run, resume, export and inspect from a terminal.

Exit codes: 0 done; 2 bad input or arguments (one clear line on stderr, no traceback);
130 stopped by Ctrl-C (status cancelled); 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import events as ev
from .config import GENE_KINDS, RunConfig, SearchSpace
from .errors import InputError, MihaError

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line and exit 2, as for any bad input
        self.print_usage(sys.stderr)
        print(f"miha: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def _parser() -> argparse.ArgumentParser:
    p = _ArgParser(prog="miha", description="Tune a Keras model's hyperparameters while it trains.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_ArgParser)

    r = sub.add_parser("run", help="optimise a model on a dataset")
    r.add_argument("--model", required=True, help=".keras or .h5 model file")
    r.add_argument("--data", required=True, help=".npz, .h5/.hdf5 or .csv dataset")
    r.add_argument("--config", help="a .toml or .json file of run options (flags override it)")
    r.add_argument("--runup-epochs", "-m", type=int, dest="runup_epochs")
    r.add_argument("--candidate-epochs", "-n", type=int, dest="candidate_epochs")
    r.add_argument("--fixing-epochs", "-k", type=int, dest="fixing_epochs")
    r.add_argument("--cycles", "-c", type=int, dest="cycles")
    r.add_argument("--population-size", "-p", type=int, dest="population_size")
    r.add_argument("--batch-size", type=int, dest="batch_size")
    r.add_argument("--seed", type=int)
    r.add_argument("--run-dir", help="folder for the run (default runs/miha-<time>)")
    r.add_argument("--search", help=f"comma-separated gene kinds to mutate: {','.join(GENE_KINDS)}")
    r.add_argument("--optimizers", help="comma-separated optimizers a member may switch to")
    r.add_argument("--activations", help="comma-separated activations for hidden layers")
    r.add_argument("--crossover", action="store_true", default=None, help="cross over the two fittest")
    r.add_argument("--control-member", action="store_true", default=None, help="member 0 is never mutated")
    r.add_argument("--drop-intermediate", action="store_true", default=None,
                   help="delete intermediate archives at the end (keep model_final and logs)")
    r.add_argument("--validation-split", type=float, dest="validation_split")
    r.add_argument("--fitness", choices=["log_slope", "original"])
    r.add_argument("--loss", help="loss for an uncompiled model (e.g. sparse_categorical_crossentropy)")
    r.add_argument("--optimizer", help="initial optimizer for an uncompiled model")
    r.add_argument("--target", help="CSV column to predict (default: the last)")
    r.add_argument("--steps-per-execution", dest="steps_per_execution",
                   help="batches per compiled call: auto or a number")
    xla = r.add_mutually_exclusive_group()
    xla.add_argument("--xla", action="store_true", help="compile training steps with XLA (faster epochs, "
                     "slower start for every new model and batch size)")
    xla.add_argument("--no-xla", action="store_true", help="train without XLA (the default)")
    r.add_argument("--evaluator", choices=["local", "ray"],
                   help="where each population's members train: local (this process, the default) or ray "
                        "(Ray tasks in parallel; pip install 'miha[ray]')")
    r.add_argument("--ray-address", dest="ray_address", metavar="auto|HOST:PORT",
                   help="the Ray cluster to join (default: start a local Ray instance); implies --evaluator ray")
    r.add_argument("--ray-cpus-per-member", type=float, dest="ray_cpus_per_member", metavar="N",
                   help="CPUs each member's Ray task asks for (default 1)")
    r.add_argument("--ray-gpus-per-member", type=float, dest="ray_gpus_per_member", metavar="F",
                   help="GPUs each member asks for when the cluster has GPUs, e.g. 0.25 to share one GPU among four")
    r.add_argument("--ray-retries", type=int, dest="ray_max_retries", metavar="N",
                   help="times a member whose worker died is started again before it scores worst (default 2)")
    r.add_argument("--unsafe-model", action="store_true",
                   help="allow Lambda layers and other unsafe code in the model file (trusted files only)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    s = sub.add_parser("resume", help="continue an interrupted run from its last completed cycle")
    s.add_argument("run_dir")
    s.add_argument("--data", help="the dataset, if it moved since the run started")
    s.add_argument("--evaluator", choices=["local", "ray"], help="train the remaining populations here or on Ray")
    s.add_argument("--ray-address", dest="ray_address", metavar="auto|HOST:PORT",
                   help="the Ray cluster to join now (implies --evaluator ray)")
    s.add_argument("--quiet", "-q", action="store_true")

    e = sub.add_parser("export", help="write a run's final or best model")
    e.add_argument("run_dir")
    e.add_argument("out", help="output file, .keras or .h5")
    e.add_argument("--which", choices=["final", "best"], default="final",
                   help="final: model_final; best: the main-line model with the lowest validation loss")

    i = sub.add_parser("inspect", help="describe a model file or a run folder")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _config_from_args(a: argparse.Namespace) -> RunConfig:
    base = RunConfig.load(a.config) if a.config else RunConfig()
    changes = {}
    for name in ("runup_epochs", "candidate_epochs", "fixing_epochs", "cycles", "population_size",
                 "batch_size", "seed", "crossover", "control_member", "drop_intermediate",
                 "validation_split", "fitness", "loss", "optimizer", "evaluator", "ray_address",
                 "ray_cpus_per_member", "ray_gpus_per_member", "ray_max_retries"):
        value = getattr(a, name)
        if value is not None:
            changes[name] = value
    if a.steps_per_execution is not None:
        spe = a.steps_per_execution
        if spe != "auto":
            try:
                spe = int(spe)
            except ValueError:
                raise InputError(f"--steps-per-execution must be 'auto' or a number, got {spe!r}") from None
        changes["steps_per_execution"] = spe
    if a.no_xla:
        changes["jit_compile"] = False
    elif a.xla:
        changes["jit_compile"] = True
    if a.ray_address and a.evaluator is None:
        changes["evaluator"] = "ray"
    search = base.search.to_dict()
    if a.search is not None:
        search["kinds"] = [k.strip() for k in a.search.split(",") if k.strip()]
    if a.optimizers:
        search["optimizers"] = [k.strip() for k in a.optimizers.split(",") if k.strip()]
    if a.activations:
        search["hidden_activations"] = [k.strip() for k in a.activations.split(",") if k.strip()]
    changes["search"] = SearchSpace.from_dict(search)
    return base.replace(**changes)


class _Progress:
    """A one-line progress display on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty() and os.environ.get("MIHA_PROGRESS") != "1"
        self.total = 0
        self.done = 0
        self.t0 = time.perf_counter()
        self.last_len = 0

    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.RunStarted):
            self.total = e.total_epochs
            print(f"miha: run folder {e.run_dir}; {e.total_epochs} epochs "
                  f"({e.lineage_epochs} in the final model's lineage)", file=sys.stderr)
        elif isinstance(e, ev.RunResumed):
            print(f"miha: resuming after {'cycle ' + str(e.cycle) if e.cycle > 0 else 'the run-up' if e.cycle == 0 else 'nothing (restart)'}",
                  file=sys.stderr)
        elif isinstance(e, ev.EpochEnded):
            self.done += 1
            if self.quiet:
                return
            frac = self.done / self.total if self.total else 0
            width = 24
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0
            who = e.phase if e.member is None else f"cycle {e.cycle} member {e.member}"
            val = f" val {e.val_loss:.4g}" if e.val_loss is not None else ""
            line = f"\r[{bar}] {self.done}/{self.total} {who} epoch {e.epoch} loss {e.loss:.4g}{val} ETA {eta:.0f}s"
            sys.stderr.write(line + " " * max(0, self.last_len - len(line)))
            sys.stderr.flush()
            self.last_len = len(line)
        elif isinstance(e, ev.CycleDone):
            self._line(f"cycle {e.cycle}: {e.decision}")
        elif isinstance(e, ev.Note):
            self._line(f"note: {e.message}")
        elif isinstance(e, ev.RunFinished):
            self._line(f"{e.status} in {e.wall_seconds:.1f}s" + (f"; final model {e.final_model}" if e.final_model else ""))

    def _line(self, text: str) -> None:
        if self.last_len:
            sys.stderr.write("\r" + " " * self.last_len + "\r")
            self.last_len = 0
        print(f"miha: {text}", file=sys.stderr)


def _install_sigint(token) -> None:
    def handler(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        print("\nmiha: stopping at the next batch (Ctrl-C again to abort at once)", file=sys.stderr)
        token.cancel()

    signal.signal(signal.SIGINT, handler)


def _cmd_run(a: argparse.Namespace) -> int:
    from .runner import run
    from .training import CancelToken

    config = _config_from_args(a)
    token = CancelToken()
    _install_sigint(token)
    result = run(a.model, a.data, config, run_dir=a.run_dir, listeners=[_Progress(a.quiet)], cancel=token,
                 unsafe_model=a.unsafe_model, target=a.target)
    return _report(result)


def _report(result) -> int:
    if result.status == "cancelled":
        print(f"miha: cancelled; continue with 'miha resume {result.run_dir}'", file=sys.stderr)
        return EXIT_CANCELLED
    print(json.dumps({"run_dir": str(result.run_dir), "status": result.status,
                      "final_model": str(result.final_model), "genes": result.genes.to_dict() if result.genes else None,
                      "test_metrics": result.test_metrics, "wall_seconds": round(result.wall_seconds, 2)}, indent=2))
    return EXIT_OK


def _cmd_resume(a: argparse.Namespace) -> int:
    from .runner import resume
    from .training import CancelToken

    token = CancelToken()
    _install_sigint(token)
    execution = {}
    if a.evaluator:
        execution["evaluator"] = a.evaluator
    if a.ray_address:
        execution.update(ray_address=a.ray_address, evaluator=a.evaluator or "ray")
    return _report(resume(a.run_dir, data=a.data, listeners=[_Progress(a.quiet)], cancel=token,
                          execution=execution or None))


def best_archive(run_dir: str | Path, which: str = "final") -> Path:
    """The archive ``miha export`` writes: model_final, or the main-line model with the lowest
    last validation (else training) loss among model_init, model_<cycle>, model_final."""
    from .runlog import RunFolder

    folder = RunFolder(run_dir)
    folder.open_existing()
    final = folder.model_path("final")
    if which == "final":
        if not final.exists():
            raise InputError(f"{folder.root} has no model_final.keras (the run did not finish); "
                             "use --which best, or 'miha resume' it first")
        return final
    rows = folder.read_history()
    best, best_loss = None, float("inf")
    ends: dict[str, float] = {}
    for row in rows:
        loss = row["val_loss"] if row["val_loss"] is not None else row["loss"]
        if loss is None:
            continue
        if row["phase"] == "runup":
            ends["init"] = loss
        elif row["phase"] in ("fixing", "member"):
            ends[str(row["cycle"])] = loss
        elif row["phase"] == "final":
            ends["final"] = loss
    for name, loss in ends.items():
        path = folder.model_path(name)
        if path.exists() and loss < best_loss:
            best, best_loss = path, loss
    if best is None:
        raise InputError(f"{folder.root} holds no main-line archive yet")
    return best


def _cmd_export(a: argparse.Namespace) -> int:
    from .models import export_model

    src = best_archive(a.run_dir, a.which)
    out = export_model(src, a.out)
    print(f"miha: exported {src.name} to {out}", file=sys.stderr)
    return EXIT_OK


def _cmd_inspect(a: argparse.Namespace) -> int:
    path = Path(a.path)
    if path.is_dir():
        from .runlog import RunFolder
        from .state import replay

        info = RunFolder(path).open_existing()
        st = replay(path)
        summary = {"run_dir": str(path), "status": info.get("status"), "config": info.get("config"),
                   "epochs_done": st.epochs_done, "total_epochs": info.get("total_epochs"),
                   "winners": st.winners, "decisions": st.decisions, "genes_final": info.get("genes_final"),
                   "test_metrics": info.get("test_metrics"), "wall_seconds": info.get("wall_seconds")}
        if a.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(f"run {path}: {summary['status']}, {st.epochs_done}/{summary['total_epochs']} epochs")
            for c, d in sorted(st.decisions.items()):
                print(f"  cycle {c}: {d}")
            if summary["test_metrics"]:
                print(f"  test: {json.dumps(summary['test_metrics'])}")
        return EXIT_OK
    from .models import load_model, summarize

    info = summarize(load_model(path))
    if a.json:
        import dataclasses

        print(json.dumps(dataclasses.asdict(info), indent=2, default=str))
    else:
        print(info.text())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "resume": _cmd_resume, "export": _cmd_export, "inspect": _cmd_inspect}
    try:
        return handlers[args.command](args)
    except InputError as exc:
        print(f"miha: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("miha: aborted", file=sys.stderr)
        return EXIT_CANCELLED
    except MihaError as exc:
        print(f"miha: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"miha: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
