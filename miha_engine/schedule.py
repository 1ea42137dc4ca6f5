"""The tuned model's recipe: the lineage's hyperparameters as a schedule, and replaying it.

``miha schedule RUN_DIR OUT.toml`` writes, for each stretch of the final model's lineage, the epoch
it starts at and the genes it trained with (optimizer, learning rate, batch size, activations), plus
what a replay needs to train the same way (the phase and, for a chosen member's epochs, its cycle and
index, which seed its shuffles).  ``miha replay OUT.toml --model INIT --data DATA`` trains a fresh
model through that schedule with no population: the "train it again on all my data" path.

On the run's own data, seed and initial model, a replay reproduces the lineage's losses (to float
rounding; a model with dropout draws other masks).  An activation change is applied at the same
epoch, weights carried exactly, as the run did.  A crossover child whose weights were *averaged*
cannot be replayed from genes alone: the schedule says so, and a replay keeps the fitter parent's
weights there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import events as ev
from .backend import Backend, main_line_seed, main_shuffle
from .config import RunConfig
from .errors import Cancelled, InputError, ScheduleError
from .genes import Genes
from .runlog import RunFolder, describe_file
from .state import RunState
from .training import CancelToken

FORMAT = 1


@dataclass(frozen=True)
class Segment:
    """From lineage epoch ``start`` (1-based), ``epochs`` epochs of ``phase`` with ``genes``."""

    start: int
    epochs: int
    phase: str
    cycle: int
    genes: Genes
    member: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from_epoch": self.start, "epochs": self.epochs, "phase": self.phase,
                               "cycle": self.cycle}
        if self.member is not None:
            out["member"] = self.member
        out.update(self.genes.to_dict())  # optimizer, learning rate, batch size, activations, weight decay, ...
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Segment:
        genes = Genes.from_dict(d)
        return cls(int(d["from_epoch"]), int(d["epochs"]), str(d["phase"]), int(d["cycle"]), genes,
                   None if d.get("member") is None else int(d["member"]))


def schedule_from_run(run_dir: str | Path) -> dict[str, Any]:
    """The lineage of a run folder (finished or not) as a schedule (a plain dict, TOML-ready)."""
    folder = RunFolder(run_dir)
    info = folder.open_existing()
    rows = folder.read_history()
    if not rows:
        raise ScheduleError(f"{folder.root} has no lineage yet (history.csv is empty); nothing to schedule")
    if info.get("forked_from") or rows[0]["step"] != 1:
        parent = (info.get("forked_from") or {}).get("run", "its parent run")
        raise ScheduleError(f"{folder.root} is a fork: its lineage starts at epoch {rows[0]['step']}, the earlier epochs "
                            f"are {parent}'s. Write the parent's schedule, or replay from the fork's model_source.keras")
    population = folder.read_population()
    segments: list[Segment] = []
    notes: list[str] = []
    for row in rows:
        genes = Genes.from_dict(row["genes"])
        cycle, phase = int(row["cycle"]), row["phase"]
        last = segments[-1] if segments else None
        if last is not None and (last.phase, last.cycle, last.genes) == (phase, cycle, genes):
            segments[-1] = Segment(last.start, last.epochs + 1, phase, cycle, genes, last.member)
            continue
        member = None
        if phase == "member":
            member = int(population.get(str(cycle), {}).get("_cycle", {}).get("winner", -1))
            decision = population.get(str(cycle), {}).get("_cycle", {}).get("decision", "")
            if decision.startswith("crossover") and info.get("config", {}).get("crossover_weights") == "average":
                notes.append(f"cycle {cycle}: the crossover child's weights were averaged from two members; a replay "
                             "continues with the fitter member's weights")
            if "; soup:" in decision:
                notes.append(f"cycle {cycle}: the lineage continued from a soup (the average of several members' "
                             "weights); a replay continues with the chosen member's weights")
        segments.append(Segment(int(row["step"]), 1, phase, cycle, genes, member))
    cfg = info.get("config", {})
    return {
        "format": FORMAT,
        "about": "MIHA schedule: from each from_epoch on, train with these hyperparameters "
                 "(miha replay SCHEDULE --model INIT --data DATA)",
        "source_run": str(folder.root.resolve()),
        "epochs": len(rows),
        "seed": cfg.get("seed", 0),
        "validation_split": cfg.get("validation_split", 0.1),
        "candidate_epochs": cfg.get("candidate_epochs", 1),
        # the final phase's cosine anneal (1: none; runs from before it existed had none)
        "final_anneal": cfg.get("final_anneal", 1.0),
        "notes": notes,
        "segment": [s.to_dict() for s in segments],
    }


def write_schedule(run_dir: str | Path, out: str | Path) -> Path:
    """``miha schedule``: the run's schedule as TOML at ``out`` (written atomically)."""
    import tomli_w

    from .runlog import atomic_write_bytes

    out = Path(out)
    data = schedule_from_run(run_dir)
    return atomic_write_bytes(out, tomli_w.dumps(data).encode("utf-8"))


def read_schedule(path: str | Path) -> tuple[dict[str, Any], list[Segment]]:
    """Read and check a schedule file: contiguous segments, genes that parse."""
    path = Path(path)
    if not path.is_file():
        raise ScheduleError(f"schedule file not found: {path}")
    try:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ScheduleError(f"{path.name} is not a readable TOML schedule ({exc})") from exc
    if data.get("format") != FORMAT or not isinstance(data.get("segment"), list) or not data["segment"]:
        raise ScheduleError(f"{path.name} is not a MIHA schedule (write one with 'miha schedule RUN_DIR OUT.toml')")
    try:
        segments = [Segment.from_dict(d) for d in data["segment"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ScheduleError(f"{path.name}: a segment is incomplete or malformed ({exc})") from exc
    expected = 1
    for s in segments:
        if s.start != expected or s.epochs < 1 or s.phase not in ("runup", "member", "fixing", "final"):
            raise ScheduleError(f"{path.name}: the segment starting at epoch {s.start} breaks the sequence "
                                f"(expected epoch {expected}, at least one epoch, a known phase)")
        expected += s.epochs
    return data, segments


def check_fits(segments: list[Segment], choices: dict[str, tuple[str, ...]]) -> None:
    """Every activation the schedule sets names a layer the model lets change, to a value it allows."""
    for s in segments:
        for layer, act in s.genes.activations:
            if layer not in choices:
                raise ScheduleError(f"the schedule sets the activation of layer {layer!r} (epoch {s.start}), which this "
                                    f"model does not have or does not let change (it has: "
                                    f"{', '.join(choices) or 'none'}); was it written for another model?")
            if act not in choices[layer]:
                raise ScheduleError(f"the schedule gives layer {layer!r} the activation {act!r} (epoch {s.start}), "
                                    f"which it cannot take here (allowed: {', '.join(choices[layer])})")


def replay(schedule: str | Path, model, data, run_dir: str | Path | None = None,
           listeners: Iterable[ev.Listener] = (), cancel: CancelToken | None = None, unsafe_model: bool = False,
           target: str | None = None, backend: Backend | None = None):
    """Train ``model`` from scratch through ``schedule``, with no population.

    The run folder gets the usual journal, ``history.csv`` and ``model/model_final.keras`` (and
    ``model_source.keras``), so the app opens it like any run.

    Returns:
        A :class:`miha_engine.runner.RunResult`.
    """
    from .runner import RunResult, _as_dataset, _now, default_run_dir, final_schedule

    info, segments = read_schedule(schedule)
    seed = int(info.get("seed", 0))
    config = RunConfig(seed=seed, validation_split=float(info.get("validation_split", 0.1)),
                       candidate_epochs=max(1, int(info.get("candidate_epochs", 1))),
                       runup_epochs=0, cycles=0, batch_size=segments[0].genes.batch_size)
    cancel = cancel or CancelToken()
    source_path = None
    if backend is None:
        from . import models as mdl
        from .backend import KerasBackend

        dataset = _as_dataset(data, target)
        if isinstance(model, (str, Path)):
            source_path = str(Path(model).resolve())
            model = mdl.load_model(model, unsafe=unsafe_model)
        backend = KerasBackend.prepare(model, dataset, config, cancel)
    check_fits(segments, backend.choices)
    folder = RunFolder(run_dir or default_run_dir())
    folder.create()
    state = RunState()
    listeners = list(listeners)

    def emit(event: ev.Event) -> None:
        folder.append_event(event)
        state.apply(event)
        for listener in listeners:
            listener(event)

    with folder.lock():
        t0 = time.perf_counter()
        folder.write_run({"format": 1, "kind": "replay", "status": "running", "schedule": str(Path(schedule).resolve()),
                          "source_run": info.get("source_run"), "model_source": source_path, "seed": seed,
                          "device": backend.device, "started_at": _now(), "config": config.to_dict(),
                          "total_epochs": info.get("epochs"), "lineage_epochs": info.get("epochs")})
        genes = segments[0].genes
        emit(ev.RunStarted(run_dir=str(folder.root), config=config.to_dict(), total_epochs=int(info.get("epochs", 0)),
                           lineage_epochs=int(info.get("epochs", 0)), genes=genes.to_dict()))
        backend.start(genes)

        def save(name: str) -> Path:
            path = folder.model_path(name)
            backend.save_main(path)
            emit(ev.ArchiveSaved(path=str(path.relative_to(folder.root)), description=describe_file(path.name)))
            return path

        save("source")
        step, reseeded = 0, 0
        try:
            for seg in segments:
                if seg.genes != genes:
                    emit(ev.GenesChanged(step=step, genes=seg.genes.to_dict(), change="; ".join(genes.diff(seg.genes))))
                    backend.set_main(backend.snapshot(genes), seg.genes)
                    genes = seg.genes
                # the run set the main line's seed after each cycle's population, chosen member or not
                after = seg.cycle if seg.phase == "fixing" else seg.cycle - 1 if seg.phase == "final" else 0
                if after > reseeded:
                    backend.reseed(main_line_seed(seed, after))
                    reseeded = after
                base = step

                def on_epoch(e, loss, val, seconds, _seg=seg, _base=base):  # the lineage's own phases
                    emit(ev.EpochEnded(phase=_seg.phase, cycle=_seg.cycle, member=None, epoch=e + 1, step=_base + e + 1,
                                       loss=loss, val_loss=val, seconds=seconds))

                if seg.phase == "member" and seg.member is not None and seg.member >= 0:
                    # the run trained these epochs as member (cycle, member): the same seeds, then the
                    # main line's seed after that cycle
                    result, trained = backend.train_member(genes, backend.snapshot(genes), seg.cycle, seg.member,
                                                           seg.epochs, on_epoch)
                    backend.set_main(trained.snapshot(), genes)
                    backend.reseed(main_line_seed(seed, seg.cycle))
                    reseeded = seg.cycle
                else:
                    anneal = final_schedule(genes.learning_rate, seg.epochs, float(info.get("final_anneal", 1.0))) \
                        if seg.phase == "final" else None
                    if anneal is None:
                        result = backend.train_main(genes, seg.epochs, on_epoch, main_shuffle(seg.cycle))
                    else:
                        result = backend.train_main(genes, seg.epochs, on_epoch, main_shuffle(seg.cycle), anneal)
                step += seg.epochs
                if result.diverged:
                    raise InputError(f"the loss became NaN/inf at epoch {step} of the replay; the data may differ "
                                     "too much from the run's, or the schedule's learning rate is too high for it")
            final = save("final")
            test = backend.test_metrics()
            wall = time.perf_counter() - t0
            folder.write_history(state.history_rows())
            folder.update_run(status="finished", finished_at=_now(), wall_seconds=wall,
                              test_metrics={"final": test} if test else {}, genes_final=genes.to_dict())
            emit(ev.RunFinished(status="finished", final_model=str(final.relative_to(folder.root)), wall_seconds=wall,
                                test_metrics={"final": test} if test else {}))
        except (Cancelled, KeyboardInterrupt):
            wall = time.perf_counter() - t0
            folder.write_history(state.history_rows())
            folder.update_run(status="cancelled", stopped_at=_now(), wall_seconds=wall)
            emit(ev.RunFinished(status="cancelled", final_model=None, wall_seconds=wall, test_metrics={}))
            return RunResult(folder.root, "cancelled", None, genes, state.history_rows(), {}, {}, wall)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            folder.write_history(state.history_rows())
            folder.update_run(status="failed", stopped_at=_now(), error=message)
            try:
                emit(ev.RunFailed(message=message, error_type=type(exc).__name__))
            except Exception:  # noqa: BLE001 - the disk may be what failed
                pass
            raise
    return RunResult(folder.root, "finished", final, genes, state.history_rows(), {}, {"final": test} if test else {},
                     wall)

