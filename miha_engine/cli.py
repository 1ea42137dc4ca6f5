"""``miha``: run, resume, export and inspect from a terminal.

Exit codes: 0 done; 2 bad input or arguments (one clear line on stderr, no traceback);
130 stopped by Ctrl-C (status cancelled); 1 unexpected error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

from . import events as ev
from .config import GENE_KINDS, RunConfig, SearchSpace
from .errors import InputError, MihaError
from .export import FORMATS as EXPORT_FORMATS

EXIT_OK, EXIT_ERROR, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line and exit 2, as for any bad input
        self.print_usage(sys.stderr)
        print(f"miha: error: {message}", file=sys.stderr)
        sys.exit(EXIT_INPUT)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true",
                        help="let TensorFlow's own start-up messages through (hidden by default)")
    p = _ArgParser(prog="miha", description="Tune a Keras model's hyperparameters while it trains.",
                   parents=[common])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_ArgParser)

    r = sub.add_parser("run", parents=[common], help="optimise a model on a dataset")
    r.add_argument("--model", required=True, help=".keras or .h5 model file")
    r.add_argument("--data", required=True, help=".npz, .h5/.hdf5 or .csv dataset")
    r.add_argument("--config", help="a .toml or .json file of run options (flags override it)")
    _add_search_options(r)
    r.add_argument("--run-dir", help="folder for the run (default runs/miha-<time>)")
    r.add_argument("--target", help="CSV column to predict (default: the last)")
    add_config_options(r)
    r.add_argument("--unsafe-model", action="store_true",
                   help="allow Lambda layers and other unsafe code in the model file (trusted files only)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    s = sub.add_parser("resume", parents=[common], help="continue an interrupted run from its last completed cycle")
    s.add_argument("run_dir")
    s.add_argument("--data", help="the dataset, if it moved since the run started")
    add_config_options(s, resumable_only=True)
    _add_search_options(s)

    f = sub.add_parser("fork", parents=[common], help="a what-if run from any archive of a run (main line or member)")
    f.add_argument("run_dir", help="the run to fork from (only read)")
    f.add_argument("archive", help="one of its archives: model_3.keras, 3_1_model.keras, model_init.keras…")
    f.add_argument("--run-dir", dest="new_run_dir", help="folder for the new run (default: beside the parent)")
    f.add_argument("--data", help="the dataset (default: the parent's)")
    add_config_options(f)
    _add_search_options(f)
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.add_argument("--quiet", "-q", action="store_true")

    e = sub.add_parser("export", parents=[common], help="write a run's final or best model (or any archive) in a deployment format")
    e.add_argument("src", metavar="RUN_DIR|ARCHIVE", help="a run folder, or one .keras archive")
    e.add_argument("out", help="output: .keras, .h5, .tflite, .onnx, or a folder name for a SavedModel")
    e.add_argument("--which", choices=["final", "best"], default="final",
                   help="of a run folder: final (model_final) or best (the main-line archive with the lowest "
                        "validation loss)")
    e.add_argument("--format", choices=list(EXPORT_FORMATS), help="the format (default: from OUT's suffix; "
                   "savedmodel for a name without one)")
    e.add_argument("--data", help="a dataset to check the export on (default: the run's test split, else "
                   "random inputs)")
    e.add_argument("--json", action="store_true", help="print the report as JSON")

    sc = sub.add_parser("schedule", parents=[common], help="write a run's lineage as a replayable schedule (TOML)")
    sc.add_argument("run_dir")
    sc.add_argument("out", help="the schedule file, e.g. schedule.toml")

    rp = sub.add_parser("replay", parents=[common], help="train a fresh model through a schedule, with no population")
    rp.add_argument("schedule", help="a schedule written by 'miha schedule'")
    rp.add_argument("--model", required=True, help="the initial model (.keras or .h5), e.g. the run's "
                    "model/model_source.keras")
    rp.add_argument("--data", required=True, help=".npz, .h5/.hdf5 or .csv dataset")
    rp.add_argument("--run-dir", help="folder for the replay (default runs/miha-<time>)")
    rp.add_argument("--target", help="CSV column to predict (default: the last)")
    rp.add_argument("--unsafe-model", action="store_true", help="allow Lambda layers (trusted files only)")
    rp.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    tb = sub.add_parser("tensorboard", parents=[common], help="write a run as TensorBoard event files")
    tb.add_argument("run_dir")
    tb.add_argument("out_dir", help="then: tensorboard --logdir OUT_DIR")

    i = sub.add_parser("inspect", parents=[common], help="describe a model file or a run folder")
    i.add_argument("path", nargs="*", help="a .keras/.h5 model file or a run folder (with --insight: run folders)")
    i.add_argument("--insight", action="store_true",
                   help="which mutations helped: for each kind and value, how often tried and won, and the mean "
                        "fitness difference against the control member (or the cycle's median), over all runs given")
    i.add_argument("--serve", action="store_true",
                   help="answer requests from standard input, one JSON line each ({\"path\", \"unsafe\"}), with one "
                        "JSON line each: how the app inspects models without TensorFlow in its own process")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--unsafe-model", action="store_true",
                   help="allow Lambda layers and other unsafe code in the model file (trusted files only)")
    return p


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search", help=f"comma-separated gene kinds to mutate: {','.join(GENE_KINDS)}")
    parser.add_argument("--optimizers", help="comma-separated optimizers a member may switch to")
    parser.add_argument("--activations", help="comma-separated activations for hidden layers")


def _search_changes(a: argparse.Namespace) -> dict:
    """The search-space fields the command line sets."""
    out = {}
    for flag, key in (("search", "kinds"), ("optimizers", "optimizers"), ("activations", "hidden_activations")):
        value = getattr(a, flag, None)
        if value is not None:
            out[key] = [k.strip() for k in value.split(",") if k.strip()]
    return out


def _flag(name: str, meta) -> str:
    return meta.get("flag") or "--" + name.replace("_", "-")


def _value_type(f: dataclasses.Field):
    """How the CLI reads a field's value, from its annotation: a number, 'auto' or a number, a name."""
    kinds = {t.strip() for t in str(f.type).split("|")}
    if {"int", "str"} <= kinds:
        return _auto_or_int
    if "int" in kinds:
        return int
    if "float" in kinds:
        return float
    return str


def _auto_or_int(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number, got {text!r}") from None


def add_config_options(parser: argparse.ArgumentParser, resumable_only: bool = False) -> None:
    """One option per :class:`RunConfig` field, read from the field's metadata: the CLI lists no
    field by hand.  ``resumable_only``: the fields a resume may change (how members train, and the
    live ones, which apply from the next cycle)."""
    for name, f in RunConfig.options().items():
        meta = f.metadata
        if not meta.get("cli", True) or (resumable_only and not (meta.get("resumable") or meta.get("live"))):
            continue
        helptext = meta["help"]
        if meta.get("flags"):
            group = parser.add_mutually_exclusive_group()
            for flag, value in meta["flags"].items():
                group.add_argument(flag, dest=name, action="store_const", const=value, default=None,
                                   help=helptext if value is True else f"the opposite of {next(iter(meta['flags']))}")
            continue
        flags = [f for f in (meta.get("short"), _flag(name, meta)) if f]
        if isinstance(f.default, bool):
            parser.add_argument(*flags, dest=name, action="store_true", default=None, help=helptext)
        else:
            parser.add_argument(*flags, dest=name, type=_value_type(f), choices=meta.get("choices"),
                                default=None, help=helptext)


def config_changes(a: argparse.Namespace, resumable_only: bool = False) -> dict:
    """The fields the command line sets (those left out keep the configuration's value); with
    ``resumable_only``, what a resume may change (how members train, and the live fields)."""
    names = (RunConfig.resumable_fields() + RunConfig.live_fields()) if resumable_only else tuple(RunConfig.options())
    changes = {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}
    if changes.get("ray_address") and "evaluator" not in changes:
        changes["evaluator"] = "ray"  # an address means Ray
    return changes


def _config_from_args(a: argparse.Namespace) -> RunConfig:
    base = RunConfig.load(a.config) if a.config else RunConfig()
    changes = config_changes(a)
    changes["search"] = SearchSpace.from_dict({**base.search.to_dict(), **_search_changes(a)})
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


def _recycling(command):
    """Run ``command`` allowing the loop to ask for a fresh process (``RunConfig.recycle_after``): the
    CLI then replaces itself, in place (the same PID, terminal and exit code), by ``miha resume``."""

    def wrapped(a: argparse.Namespace) -> int:
        from .errors import RecycleRequested
        from .runner import allow_recycling

        allow_recycling(True)
        try:
            return command(a)
        except RecycleRequested as req:
            allow_recycling(False)
            args = [sys.executable, "-m", "miha_engine", "resume", str(req.run_dir)]
            if getattr(a, "data", None):
                args += ["--data", str(Path(a.data).resolve())]
            args += ["--verbose"] * bool(getattr(a, "verbose", False)) + ["--quiet"] * bool(getattr(a, "quiet", False))
            print(f"miha: {req.why}; restarting the engine to give its memory back "
                  f"(resuming after cycle {req.cycle})", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(sys.executable, args)
            return EXIT_ERROR  # not reached
        finally:  # main() may be called in-process (tests, scripts): the permission ends with the command
            allow_recycling(False)

    return wrapped


@_recycling
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


@_recycling
def _cmd_resume(a: argparse.Namespace) -> int:
    from .runner import resume
    from .training import CancelToken

    token = CancelToken()
    _install_sigint(token)
    changes = config_changes(a, resumable_only=True)
    if _search_changes(a):
        changes["search"] = _search_changes(a)  # merged into the run's search space from the next cycle
    return _report(resume(a.run_dir, data=a.data, listeners=[_Progress(a.quiet)], cancel=token,
                          execution=changes or None))


@_recycling
def _cmd_fork(a: argparse.Namespace) -> int:
    from .runner import fork
    from .training import CancelToken

    token = CancelToken()
    _install_sigint(token)
    changes = config_changes(a)
    if _search_changes(a):
        changes["search"] = _search_changes(a)
    return _report(fork(a.run_dir, a.archive, a.new_run_dir, data=a.data, changes=changes or None,
                        listeners=[_Progress(a.quiet)], cancel=token))


def _cmd_export(a: argparse.Namespace) -> int:
    from .export import export_model, sample_for
    from .runlog import RunFolder

    src = Path(a.src)
    run_dir = src if src.is_dir() else None
    if run_dir is not None:
        src = RunFolder(run_dir).best_archive(a.which)
    elif (src.parent.parent / "run.json").is_file():  # an archive of a run folder: check on the run's data
        run_dir = src.parent.parent
    x, origin = sample_for(run_dir, a.data)
    report = export_model(src, a.out, a.format, x=x, sample_origin=origin)
    if a.json:
        print(json.dumps(report.to_dict()))
    print(f"miha: {report.text()}", file=sys.stderr)
    return EXIT_OK


def _cmd_schedule(a: argparse.Namespace) -> int:
    from .schedule import write_schedule

    out = write_schedule(a.run_dir, a.out)
    print(f"miha: wrote the lineage's schedule to {out}; replay it with 'miha replay {out} --model INIT --data DATA'",
          file=sys.stderr)
    return EXIT_OK


def _cmd_replay(a: argparse.Namespace) -> int:
    from .schedule import replay
    from .training import CancelToken

    token = CancelToken()
    _install_sigint(token)
    result = replay(a.schedule, a.model, a.data, run_dir=a.run_dir, listeners=[_Progress(a.quiet)], cancel=token,
                    unsafe_model=a.unsafe_model, target=a.target)
    if result.status == "cancelled":
        print(f"miha: replay stopped; {result.run_dir} keeps its epochs (a replay cannot be resumed: replay the "
              "schedule again to finish)", file=sys.stderr)
        return EXIT_CANCELLED
    return _report(result)


def _cmd_tensorboard(a: argparse.Namespace) -> int:
    from .tensorboard import export_tensorboard

    out = export_tensorboard(a.run_dir, a.out_dir)
    print(f"miha: wrote TensorBoard event files to {out}; view them with 'tensorboard --logdir {out}'", file=sys.stderr)
    return EXIT_OK


def _serve_inspections() -> int:
    """Read {"id", "path", "unsafe"} lines; answer {"id", "info"} or {"id", "error"} lines."""
    from .models import load_model, summarize

    for line in sys.stdin:
        req: dict = {}
        try:
            req = json.loads(line)
            info = summarize(load_model(req["path"], unsafe=bool(req.get("unsafe"))))
            reply = {"id": req.get("id"), "info": dataclasses.asdict(info)}
        except InputError as exc:
            reply = {"id": req.get("id"), "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the service
            reply = {"id": req.get("id") if isinstance(req, dict) else None,
                     "error": f"the model could not be inspected ({type(exc).__name__}: {exc})"}
        print(json.dumps(reply, default=str), flush=True)
    return EXIT_OK


def _cmd_inspect(a: argparse.Namespace) -> int:
    if a.serve:
        return _serve_inspections()
    if not a.path:
        raise InputError("inspect needs a model file or a run folder")
    if a.insight:
        from .insight import insight

        result = insight([Path(p) for p in a.path])
        print(json.dumps(result.to_dict(), indent=2) if a.json else result.text())
        return EXIT_OK
    if len(a.path) > 1:
        raise InputError("inspect describes one model or run folder at a time (several run folders: --insight)")
    path = Path(a.path[0])
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

    info = summarize(load_model(path, unsafe=a.unsafe_model))
    if a.json:
        print(json.dumps(dataclasses.asdict(info), indent=2, default=str))
    else:
        print(info.text())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ["MIHA_VERBOSE"] = "1"
    handlers = {"run": _cmd_run, "resume": _cmd_resume, "export": _cmd_export, "inspect": _cmd_inspect,
                "schedule": _cmd_schedule, "replay": _cmd_replay, "tensorboard": _cmd_tensorboard, "fork": _cmd_fork}
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
