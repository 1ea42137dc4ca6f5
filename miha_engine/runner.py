"""The MIHA loop: run-up, c cycles of population → train → fitness → select → fix, then final.

Policy (mutation, fitness, selection) lives in pure modules; training lives behind the
:class:`~miha_engine.backend.Backend` protocol; members train through an
:class:`~miha_engine.evaluators.Evaluator`.  This module owns the one loop that applies the policy,
builds every event, and writes the run folder.  :func:`run` and :func:`resume` only produce the
loop's starting :class:`Checkpoint`.

The journal (``events.jsonl``) is the run's record.  ``history.csv`` and ``population.json`` are
views of it, derived through :class:`~miha_engine.state.RunState` and written at each checkpoint
and at the end; a resume cuts all of them back in one place (the ``RunResumed`` event).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import events as ev
from .backend import Backend, main_line_seed, main_shuffle
from .config import RunConfig, SearchSpace
from .data import Dataset, from_arrays, load_dataset
from .errors import (
    Cancelled,
    DivergedError,
    InputError,
    MihaError,
    RecycleRequested,
    RunFolderError,
)
from .evaluators import EvaluatorContext, MemberJob, Parent, make_evaluator
from .fitness import (
    as_loss,
    epoch_noise,
    family_z,
    fitness,
    metric_direction,
    noise_margin,
    rank_key,
)
from .genes import Genes
from .mutation import combine, explore, mutate
from .runlog import RunFolder, atomic_copy, describe_file, read_events
from .snapshot import Snapshot, average_weights
from .state import RunState
from .training import CancelToken


@dataclass
class RunResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    status: str
    final_model: Path | None
    genes: Genes | None
    history: list[dict[str, Any]] = field(default_factory=list)
    population: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class Checkpoint:
    """Where the loop starts: after cycle ``completed`` (0: after the run-up; None: before it),
    with ``step`` lineage epochs done, the main line's ``genes``, and ``elapsed`` seconds spent."""

    completed: int | None
    step: int
    genes: Genes
    elapsed: float = 0.0
    #: the best lineage score so far and its lineage step (model_best.keras holds that state)
    best: dict[str, Any] | None = None


#: Whether a loop may stop at a checkpoint to have its process replaced (``RunConfig.recycle_after``).
#: Only a caller that can start the fresh process sets it: the CLI (which re-executes itself as
#: ``miha resume``) and the app's engine process (whose parent starts the resume).
RECYCLING = {"allowed": False}


#: The most archive writes queued behind training (each holds a copy of a model's state).
ARCHIVES_QUEUED = 2

#: A memory restart (``RunConfig.recycle_rss_mb``) only with at least this many cycles still to run.
MEMORY_RESTART_CYCLES_LEFT = 10


def current_rss_mb() -> float | None:
    """This process's resident memory in MB (psutil where installed, else Linux's /proc); None where
    neither answers."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


def allow_recycling(allowed: bool = True) -> None:
    RECYCLING["allowed"] = bool(allowed)


def default_run_dir(base: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"miha-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = Path(base) / f"miha-{stamp}-{i}"
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions(backend: Backend) -> dict[str, str]:
    from . import __version__

    return {"miha": __version__, **backend.versions(), "numpy": np.__version__, "python": platform.python_version()}


def _as_dataset(data: Dataset | str | Path | tuple, target: str | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return load_dataset(data, target=target)
    if isinstance(data, tuple) and len(data) in (2, 4, 6):
        return from_arrays(*data)
    raise InputError("data must be a Dataset, a file path, or a tuple (x, y[, x_val, y_val[, x_test, y_test]])")


def archive_count(config: RunConfig) -> int:
    """Archives a run writes: source, init, one per member, one per cycle, final."""
    return 3 + config.cycles * (config.population_size + 1)


def disk_space_warning(root: Path, params: int, config: RunConfig) -> str | None:
    """A sentence with the numbers when the run's archives (of a model of ``params`` parameters)
    may not fit on the disk."""
    import shutil

    # weights plus up to two optimizer slots per weight, float32, plus the archive's config
    per_archive = int(params) * 4 * 3 + 64_000
    peak = per_archive * (archive_count(config) if not config.drop_intermediate else config.population_size + 3)
    free = shutil.disk_usage(root).free
    if peak > free:
        return (f"the run will write {archive_count(config)} archives of about {per_archive / 1e6:.1f} MB "
                f"({peak / 1e6:.0f} MB in all) but only {free / 1e6:.0f} MB are free on {root}; free some "
                "space, choose another run folder, or use fewer cycles or a smaller population")
    return None


class LiveEdits:
    """A thread-safe mailbox of settings changes for a running run (n, k, pop_size, the search
    space): another thread calls :meth:`request`; the loop takes them at the next cycle's start."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._changes: dict[str, Any] = {}

    def request(self, **changes: Any) -> None:
        with self._lock:
            self._changes.update(changes)

    def poll(self) -> dict[str, Any] | None:
        with self._lock:
            changes, self._changes = self._changes, {}
        return changes or None


class _MemberEvents:
    """The runner's side of :class:`~miha_engine.evaluators.MemberListener`: evaluators report,
    the runner builds the events."""

    def __init__(self, loop: _Loop, cycle: int, branch_step: int):
        self.loop, self.cycle, self.branch_step = loop, cycle, branch_step

    def started(self, job: MemberJob) -> None:
        self.loop.emit(ev.MemberStarted(cycle=self.cycle, member=job.index, genes=job.genes.to_dict(),
                                        change=job.change, branch_step=self.branch_step))

    def epoch(self, job: MemberJob, epoch: int, loss: float, val_loss: float | None, seconds: float) -> None:
        self.loop.emit(ev.EpochEnded(phase="member", cycle=self.cycle, member=job.index, epoch=epoch + 1,
                                     step=self.branch_step + epoch + 1, loss=loss, val_loss=val_loss,
                                     seconds=seconds))

    def note(self, message: str) -> None:
        self.loop.note(message)


class _ArchiveQueue:
    """Archives written on one background thread, in the order they were asked for.

    Writing a ``.keras`` archive (Keras' saver, h5py, the zip, two fsyncs) took 1.1–1.3 s of a 22 s
    article run on the training thread.  The loop now copies the state (``archive_writer``) and
    queues the writing; training goes on meanwhile (TensorFlow's kernels release the GIL).  One
    thread keeps the order of every write, copy and deletion of the same files.  The loop journals
    an archive only once it is on disk, and waits for every queued write before a checkpoint names
    them and before the run ends, so the folder is consistent at every kill point as before.
    """

    def __init__(self) -> None:
        import collections

        self._executor = None
        self._pending: collections.deque = collections.deque()

    def submit(self, fn, path: Path, description: str | None) -> None:
        """Queue ``fn(path)``; ``description`` (None: not journalled) comes back from :meth:`finished`."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="miha-archives")
        self._pending.append((self._executor.submit(fn, path), path, description))

    def finished(self, wait: bool = False, at_most: int | None = None
                 ) -> list[tuple[Path, str | None, BaseException | None]]:
        """The queued jobs done so far, in order: (path, description, the error it raised or None).
        ``wait``: all of them, waiting; ``at_most``: waiting for the oldest until no more than that
        many are left (each queued job holds a copy of a model's state: memory stays bounded)."""
        out = []
        while self._pending and (wait or self._pending[0][0].done()
                                 or (at_most is not None and len(self._pending) > at_most)):
            future, path, description = self._pending.popleft()
            out.append((path, description, future.exception()))
        return out

    def settle(self) -> None:
        """Wait for every queued job, whatever it raised (the run is ending or failing anyway)."""
        self.finished(wait=True)

    def close(self) -> None:
        self.settle()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class _Loop:
    """One run's loop, from a checkpoint to the end (see the module's text)."""

    def __init__(self, folder: RunFolder, config: RunConfig, backend: Backend, listeners: Iterable[ev.Listener],
                 cancel: CancelToken, state: RunState, info: dict[str, Any], edits: LiveEdits | None = None):
        self.folder = folder
        self.config = config
        self.backend = backend
        self.listeners = list(listeners)
        self.cancel = cancel
        self.state = state
        self.info = info
        if config.tensorboard:  # live event files; the listener turns events into summaries
            from .tensorboard import TensorBoardWriter

            self.listeners.append(TensorBoardWriter(folder.root / "tensorboard"))
        self.evaluator = make_evaluator(config)
        self.genes: Genes | None = None
        self.step = 0
        self.archive: Path | None = None  # the main line's latest archive (what remote members start from)
        self.t_start = time.perf_counter()
        self.elapsed_before = 0.0
        self.edits = edits
        self.pending_edits: dict[str, Any] = {}
        self.kept_edits: dict[str, Any] = {}
        self.best: dict[str, Any] = {"score": math.inf, "step": None}
        #: (hidden archive, description) of a model_best state no checkpoint has recorded yet
        self._pending_best: tuple[Path, str] | None = None
        self._collected_at = 0  # models evicted from the pool when garbage was last collected
        self._archives = _ArchiveQueue()
        self._rss_base: float | None = None  # this process's RSS (MB) at the end of its second cycle
        self._rss_cycles = 0  # cycles ended in this process

    # -- events and records ------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        try:
            self.folder.append_event(event)
        except OSError as exc:
            raise RunFolderError(f"cannot write to the run folder {self.folder.root}: {exc.strerror or exc}") from exc
        self.state.apply(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not end the run
                print(f"miha: a listener failed on {event.kind}: {exc}", file=sys.stderr)

    def note(self, message: str) -> None:
        self.emit(ev.Note(message=message))

    def _flush_notes(self) -> None:
        for message in self.backend.pop_notes():
            self.note(message)

    def write_views(self) -> None:
        """history.csv and population.json, derived from the journal's picture of the run."""
        self.folder.write_history(self.state.history_rows())
        self.folder.write_population(self.state.population())

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    def _save(self, writer, path: Path, description: str) -> None:
        """Queue ``writer(path)`` (an archive, atomically, by the writer: see :class:`_ArchiveQueue`);
        it is journalled once written.  ``writer`` owns what it writes (a copy of the state)."""
        self._queue_write(writer, path, description)
        self._journal_archives(at_most=ARCHIVES_QUEUED)

    def _queue_write(self, writer, path: Path, description: str | None) -> None:
        """Queue ``writer(path)`` on the archive thread, with the loop's error handling (``_write``)."""
        self._archives.submit(lambda p: self._write(writer, p), path, description)

    def _journal_archives(self, wait: bool = False, at_most: int | None = None) -> None:
        """Journal the archives written (all queued ones, waiting for them, with ``wait``; the oldest
        until ``at_most`` are left); raise the first write's error."""
        for path, description, error in self._archives.finished(wait, at_most):
            if error is not None:
                raise error
            if description is not None:
                self.emit(ev.ArchiveSaved(path=str(path.relative_to(self.folder.root)), description=description))

    def _write(self, write, path: Path) -> None:
        try:
            write(path)
        except OSError as exc:
            raise RunFolderError(
                f"cannot save {path.name} in {path.parent}: {exc.strerror or exc}. "
                "Free some disk space (or choose another run folder), then 'miha resume' the run"
            ) from exc

    def _save_main(self, name: str) -> Path:
        path = self.folder.model_path(name)
        self._save(self.backend.main_archive_writer(), path, describe_file(path.name))
        return path

    def _checkpoint(self, cycle: int) -> None:
        assert self.genes is not None and self.archive is not None
        self._journal_archives(wait=True)  # the checkpoint names archives that must be on disk
        self.write_views()
        self.folder.write_state({
            "completed_cycle": cycle,
            "step": self.step,
            "genes": self.genes.to_dict(),
            "model": str(self.archive.relative_to(self.folder.root)),
            "elapsed_seconds": self.elapsed(),
            "best": self.best if self.best["step"] is not None else None,
        })
        self._promote_best()

    def _promote_best(self) -> None:
        """model_best.keras becomes the pending best state, now that a checkpoint (or the run's end)
        records its step; then it is journalled."""
        if self._pending_best is None:
            return
        pending, description = self._pending_best
        self._pending_best = None
        best = self.folder.promote_best(pending)
        self.emit(ev.ArchiveSaved(path=str(best.relative_to(self.folder.root)), description=description))

    # -- the loop ----------------------------------------------------------------------------
    def run(self, start: Checkpoint, how: str = "new") -> RunResult:
        """Run from ``start`` to the end, leaving the folder consistent whatever happens.

        ``how``: "new" (a run from its start), "resumed" (the journal is cut back to ``start``), or
        "forked" (a new run that starts from another run's archive, at that archive's cycle)."""
        self.elapsed_before = start.elapsed
        try:
            return self._guarded(lambda: self._body(start, how))
        finally:
            self._archives.close()
            self.evaluator.close()

    def _body(self, start: Checkpoint, how: str) -> RunResult:
        cfg, folder, backend = self.config, self.folder, self.backend
        self.genes, self.step = start.genes, start.step
        if folder.settle_pending_best(start.best.get("step") if start.best else None):
            self.emit(ev.ArchiveSaved(path=str(folder.model_path("best").relative_to(folder.root)),
                                      description=f"best model: lineage epoch {start.best['step']} (promoted at the "
                                      "resume: the run stopped after its checkpoint, before the rename)"))
        if start.best and start.best.get("step") is not None and folder.model_path("best").exists():
            self.best = {"score": float(start.best["score"]), "step": int(start.best["step"])}
        if how == "resumed":  # the journal's picture (and so every view) is cut back to the checkpoint here
            self.emit(ev.RunResumed(cycle=-1 if start.completed is None else start.completed, step=start.step,
                                    genes=start.genes.to_dict()))
            if self.kept_edits:
                first = 1 if start.completed is None else start.completed + 1
                total, lineage = self._totals(start)
                if start.completed is not None:
                    total += self.state.epochs_done
                self.emit(ev.ConfigChanged(cycle=first, changes=self.kept_edits, config=cfg.to_dict(),
                                           total_epochs=total, lineage_epochs=lineage))
            self.write_views()
        if start.completed is None or how == "forked":
            total, lineage = self._totals(start)
            self.emit(ev.RunStarted(run_dir=str(folder.root), config=cfg.to_dict(), total_epochs=total,
                                    lineage_epochs=lineage, genes=start.genes.to_dict()))
        if how == "forked":
            fork = self.info["forked_from"]
            self.note(f"forked from {fork['archive']} of {fork['run']} (after cycle {fork['cycle']}, lineage epoch "
                      f"{fork['step']})")
        warning = disk_space_warning(folder.root, backend.param_count(), cfg)
        if warning:
            self.note(warning)
        for message in backend.layer_notes:
            self.note(message)
        backend.start(self.genes)
        if start.completed is None:
            if not folder.model_path("source").exists():
                self._save_main("source")
            initial_test = backend.test_metrics()
            folder.update_run(test_initial=initial_test)
            self._train_main("runup", 0, cfg.runup_epochs)
            self.archive = self._save_main("init")
            self._checkpoint(0)
            first = 1
        else:
            if start.completed >= 1:  # as the run was after that cycle's population (a resume starts anew)
                backend.reseed(main_line_seed(cfg.seed, start.completed))
            if how == "forked":  # the archive it starts from, scored as this run's initial model
                folder.update_run(test_initial=backend.test_metrics())
                self.info["test_initial"] = folder.open_existing().get("test_initial")
            initial_test = self.info.get("test_initial") or {}
            self.archive = folder.model_path("init" if start.completed == 0 else str(start.completed))
            first = start.completed + 1
        if first <= cfg.cycles:
            self.evaluator.open(EvaluatorContext(cfg, backend, self.cancel, self.note,
                                                 bool(self.info.get("unsafe_model"))))
            if self.evaluator.name != "local":
                self.note(f"population members train on {self.evaluator.describe()}")
        for cycle in range(first, self.config.cycles + 1):
            self._cycle(cycle)
        return self._finish(initial_test)

    def _train_main(self, phase: str, cycle: int, epochs: int, lr_schedule: list[float] | None = None) -> None:
        """Train the main line; its epochs join the lineage."""
        assert self.genes is not None

        def on_epoch(epoch: int, loss: float, val: float | None, seconds: float) -> None:
            self.step += 1
            metrics = self.backend.last_epoch_metrics() or None
            self.emit(ev.EpochEnded(phase=phase, cycle=cycle, member=None, epoch=epoch + 1, step=self.step,
                                    loss=loss, val_loss=val, seconds=seconds, metrics=metrics))
            self._check_best(self._curve([loss], [val] if val is not None else [], metrics or {})[0],
                             self.backend.main_archive_writer)

        if lr_schedule is None:
            result = self.backend.train_main(self.genes, epochs, on_epoch, main_shuffle(cycle))
        else:
            result = self.backend.train_main(self.genes, epochs, on_epoch, main_shuffle(cycle), lr_schedule)
        self._flush_notes()
        if result.diverged:
            raise DivergedError(
                f"the main model's loss became NaN/inf during the {phase} phase"
                + (f" of cycle {cycle}" if cycle else "")
                + "; the last good archive is kept. Lower the learning rate or check the data"
            )

    def _score_name(self) -> str:
        """Keras' log name of what fitness and model_best score ("val_loss", "val_accuracy", ...)."""
        prefix = "val_" if self.backend.data.has_validation else ""
        return prefix + self.config.fitness_metric

    def _curve(self, losses: list[float], val_losses: list[float], metrics: dict[str, Any]) -> list[float]:
        """The curve fitness scores, lower is better: the validation loss (training loss without a
        validation split), or the fitness metric's (its shortfall 1 - value where higher is better)."""
        name = self.config.fitness_metric
        if name == "loss":
            return list(val_losses if self.backend.data.has_validation else losses)
        values = metrics.get(self._score_name())
        if values is None:
            return [math.nan] * len(losses)
        return as_loss(values if isinstance(values, list) else [values], name)

    def _check_best(self, score: float | None, capture) -> None:
        """Keep model_best.keras: the lineage's state with the best score (validation loss, or the
        fitness metric), checked at every lineage epoch; ``capture()`` gives a writer of that state."""
        if score is None or not math.isfinite(score) or score >= self.best["score"]:
            return
        name = self._score_name()
        shown = 1.0 - score if metric_direction(self.config.fitness_metric) == "higher" else score
        pending = self.folder.pending_best_path(self.step)
        self._queue_write(capture(), pending, None)
        if self._pending_best is not None and self._pending_best[0] != pending:
            superseded = self._pending_best[0]  # before any checkpoint saw it; after its own write (one queue)
            self._archives.submit(lambda p: p.unlink(missing_ok=True), superseded, None)
        self._pending_best = (pending, f"best model: lineage epoch {self.step}, {name} {shown:.4g}")
        self.best = {"score": float(score), "step": self.step, "of": name}
        self._journal_archives(at_most=ARCHIVES_QUEUED)

    def _totals(self, start: Checkpoint) -> tuple[int, int]:
        """(compute, lineage) epochs of the whole run as seen from ``start``."""
        if start.completed is None:
            return self.config.total_epochs, self.config.lineage_epochs
        total, lineage = self.config.remaining_epochs(start.completed + 1)
        return total, start.step + lineage

    def _apply_edits(self, cycle: int) -> None:
        """Apply the settings changed since the last cycle (live edits, or a resume's overrides):
        checked as a whole, journalled, written to run.json (so a resume keeps them), and in force
        from this cycle on.  An edit the configuration refuses is noted and dropped."""
        changes = dict(self.pending_edits)
        self.pending_edits.clear()
        if self.edits is not None:
            while (more := self.edits.poll()) is not None:
                changes.update(more)
        if not changes:
            return
        live = set(RunConfig.live_fields())
        refused = sorted(set(changes) - live)
        if refused:
            self.note(f"cycle {cycle}: {', '.join(refused)} cannot change during a run (only {', '.join(sorted(live))})")
        changes = {k: v for k, v in changes.items() if k in live}
        if isinstance(changes.get("search"), dict):
            changes["search"] = {**self.config.search.to_dict(), **changes["search"]}
        try:
            if "search" in changes:
                changes["search"] = SearchSpace.from_dict(changes["search"])
            new = self.config.replace(**changes)
        except InputError as exc:
            self.note(f"cycle {cycle}: the edit was refused, the settings stay as they were: {exc}")
            return
        diff = {k: getattr(new, k) for k in changes if getattr(new, k) != getattr(self.config, k)}
        if not diff:
            return
        self.config = new
        total, lineage = new.remaining_epochs(cycle)
        total, lineage = self.state.epochs_done + total, self.step + lineage
        self.folder.update_run(config=new.to_dict(), total_epochs=total, lineage_epochs=lineage)
        shown = {k: (v.to_dict() if isinstance(v, SearchSpace) else v) for k, v in diff.items()}
        self.emit(ev.ConfigChanged(cycle=cycle, changes=shown, config=new.to_dict(), total_epochs=total,
                                   lineage_epochs=lineage))

    def _jobs(self, cycle: int) -> list[MemberJob]:
        """Every member's genes first, in order, from the seed: the same run on any evaluator."""
        cfg = self.config
        assert self.genes is not None
        rng = np.random.default_rng([cfg.seed, cycle])
        bold = cfg.explore_on_plateau and self.state.plateaus.get(cycle - 1, False)
        jobs = []
        for i in range(cfg.population_size):
            if self._has_control() and i == 0:
                genes, change = self.genes, "control: unchanged"
            elif bold and i % 2 == 1:
                genes, change = explore(self.genes, cfg.search, rng, self.backend.choices, self.backend.data.n_train)
            else:
                genes, change = mutate(self.genes, cfg.search, rng, self.backend.choices, self.backend.data.n_train)
            jobs.append(MemberJob(i, genes, change, cfg.candidate_epochs))
        if bold:
            bolder = [str(j.index) for j in jobs if j.change.startswith("explore:")]
            self.note(f"cycle {cycle}: every member of cycle {cycle - 1} tied with the control within the noise; "
                      f"exploring harder: member{'s' if len(bolder) > 1 else ''} {', '.join(bolder)} draw fresh "
                      "values for two genes instead of a neighbour of one")
        return jobs

    def _has_control(self) -> bool:
        return self.config.control_member and self.config.population_size >= 2

    def _cycle(self, cycle: int) -> None:
        self._apply_edits(cycle)
        cfg, folder, backend = self.config, self.folder, self.backend
        assert self.genes is not None and self.archive is not None
        ancestor = self.genes
        parent = Parent(cycle, backend.snapshot(ancestor), self.archive)
        jobs = self._jobs(cycle)
        # L0: the parent's loss at the fork, the same for every member (see miha_engine.fitness)
        anchor = self._anchor(parent, ancestor)
        best: list[tuple[float, int, Snapshot]] = []  # the two fittest so far, as snapshots
        scores: list[float] = [-math.inf] * cfg.population_size
        curves: dict[int, list[float]] = {}
        control_snap: Snapshot | None = None
        last_val: dict[int, float] = {}
        lengths: dict[int, int] = {}
        kept: dict[int, Snapshot] = {}  # with cfg.soup: every finite member's state, for the soup
        for out in self.evaluator.members(parent, jobs, _MemberEvents(self, cycle, self.step)):
            i, change = out.job.index, out.job.change
            curves[i] = self._curve(out.losses, out.val_losses, out.metrics)
            score = fitness(curves[i], cfg.fitness, cfg.fitness_slope_weight, anchor)
            if out.failure:
                score = -math.inf
                self.note(f"cycle {cycle}, member {i} ({change}): {out.failure}; it scores worst and is never chosen")
            elif out.diverged:
                self.note(f"cycle {cycle}, member {i} ({change}): loss became NaN/inf; it scores worst and is never chosen")
            else:
                self._save(out.archive_writer(), folder.member_path(cycle, i), f"cycle {cycle}, member {i}: {change}")
            scores[i] = score
            lengths[i] = len(out.losses)
            if out.val_losses:
                last_val[i] = out.val_losses[-1]
            self.emit(ev.MemberTrained(cycle=cycle, member=i, genes=out.job.genes.to_dict(), change=change,
                                       losses=out.losses, val_losses=out.val_losses, fitness=score,
                                       worker=out.where or None, failed=out.failure, metrics=out.metrics or None))
            if math.isfinite(score) and (len(best) < 2 or rank_key(score, i) < rank_key(*best[-1][:2])):
                best = sorted([*best, (score, i, out.snapshot())], key=lambda t: rank_key(t[0], t[1]))[:2]
            is_control = i == 0 and self._has_control() and math.isfinite(score)
            souped = cfg.soup and math.isfinite(score) and bool(curves[i]) and math.isfinite(curves[i][-1])
            if is_control or souped:  # one snapshot serves both (it copies every weight)
                snap = next((t[2] for t in best if t[1] == i), None) or out.snapshot()
                control_snap = snap if is_control else control_snap
                if souped:
                    kept[i] = snap
        backend.reseed(main_line_seed(cfg.seed, cycle))

        weights, child = None, None
        merged: tuple[str, float | None] | None = None  # (description, score) of a state no member had
        rule, margin, plateau = "fittest", None, False
        if not best:
            decision = "every member diverged: the model from before the population is kept"
            self.note(f"cycle {cycle}: {decision}")
            winner, chosen, rule = -1, parent.snapshot, "kept"
        else:
            _, winner, chosen = best[0]
            decision = f"selection: member {winner} ({jobs[winner].change}) is the fittest"
            if cfg.selection == "noise" and control_snap is not None:
                mutants = [(scores[j], j) for j in range(1, cfg.population_size) if math.isfinite(scores[j])]
                z = family_z(len(mutants), cfg.noise_false_switch)
                margin, sigma = self._margin(curves[0], anchor, z)
                rule = "noise"
                top_score, top = max(mutants, key=lambda t: (t[0], -t[1])) if mutants else (-math.inf, -1)
                gain = top_score - scores[0]
                plateau = bool(mutants) and all(abs(sc - scores[0]) <= margin for sc, _ in mutants)
                noise_text = (f"noise {margin:.3g} (epoch-to-epoch spread {sigma:.3g} in log "
                              f"{self._score_name()}" + (f", ×{z:.2f} for the best of {len(mutants)} mutants"
                                                          if z > 1.0 else "") + ")")
                if top >= 0 and gain > margin:
                    winner, chosen = top, next(t[2] for t in best if t[1] == top)
                    decision = (f"noise rule: member {top} ({jobs[top].change}) beats the control by "
                                f"{gain:.3g} > {noise_text}")
                else:
                    winner, chosen = 0, control_snap
                    said = (f"the best mutant, member {top} ({jobs[top].change}), is fitter by only {gain:.3g}"
                            if gain > 0 else f"no mutant is fitter (best: member {top}, {gain:.3g})") if top >= 0 \
                        else "no mutant trained"
                    decision = f"noise rule: the control keeps the parent's genes; {said} ≤ {noise_text}"
                if plateau:
                    decision += "; every member tied within the noise (a plateau)"
            if cfg.crossover and len(best) >= 2 and winner == best[0][1] and (
                    rule != "noise" or (best[1][1] != 0 and scores[best[1][1]] - scores[0] > (margin or 0.0))):
                decision, chosen, weights, child = self._crossover(ancestor, best, last_val, decision)
            self.step += lengths[winner]  # the winner's n epochs join the lineage
            if cfg.soup and child is None and weights is None and len(kept) > 1 and winner in kept:
                soup, soup_score, ingredients = self._soup(winner, kept, curves)
                if soup is not None:
                    weights = soup
                    merged = (f"cycle {cycle}: soup of members {', '.join(map(str, ingredients))}", soup_score)
                    decision += (f"; soup: the weights of members {', '.join(map(str, ingredients))} averaged "
                                 f"({self._score_name()} {soup_score:.4g} < member {winner}'s "
                                 f"{curves[winner][-1]:.4g})")
            if child is None and weights is None:  # the lineage's state is the winner's, as archived
                member = folder.member_path(cycle, winner)
                self._check_best(curves[winner][-1] if curves.get(winner) else None,
                                 lambda: (lambda path: atomic_copy(member, path)))
        self.genes = chosen.genes
        backend.set_main(chosen, self.genes, weights=weights)
        if child is not None:
            merged = (f"cycle {cycle}: crossover of members {child[0]} and {child[1]}", None)
        if merged is not None:
            self._save(backend.main_archive_writer(), folder.child_path(cycle), merged[0])
            self._check_best(merged[1], backend.main_archive_writer)
        del best, parent, kept
        self.emit(ev.CycleDone(cycle=cycle, winner=winner, fitnesses=[s if math.isfinite(s) else None for s in scores],
                               decision=decision, genes=self.genes.to_dict(), rule=rule, margin=margin,
                               plateau=plateau))
        if cfg.fixing_epochs:
            self._train_main("fixing", cycle, cfg.fixing_epochs)
        self.archive = self._save_main(str(cycle))
        self._checkpoint(cycle)
        if cfg.drop_intermediate:
            folder.drop_superseded(cycle)
        built = int(getattr(backend, "models_built", 0))
        evicted = int(getattr(backend, "models_evicted", built))
        if evicted != self._collected_at:
            # a model left the pool: free its reference cycles now. Only then: a full collection
            # costs ≈0.2 s with TensorFlow loaded (it ran after every cycle: 5 % of an article run)
            gc.collect()
            self._collected_at = evicted
        if not RECYCLING["allowed"] or cycle >= cfg.cycles:
            return
        if cfg.recycle_after and built >= cfg.recycle_after:
            self.note(f"after cycle {cycle}: {built} models traced in this process; the engine restarts in a "
                      "fresh process to give TensorFlow's memory back, and resumes from this checkpoint")
            raise RecycleRequested(folder.root, cycle, built)
        grown = self._rss_growth()
        # a few copies of the weights (snapshots of the parent and the kept members) come and go
        # with a cycle's work: a larger model gets a larger allowance
        budget = max(cfg.recycle_rss_mb, 4 * 4 * backend.param_count() / 2**20)
        # a restart costs seconds (TensorFlow's start, the traces): near the end a run cannot grow far
        # enough to be worth it (the article's 10 cycles never restart for memory)
        if cfg.recycle_rss_mb and grown is not None and grown > budget and cfg.cycles - cycle >= MEMORY_RESTART_CYCLES_LEFT:
            self.note(f"after cycle {cycle}: this process's memory grew {grown:.0f} MB since its second cycle (more "
                      f"than {budget:.0f} MB, recycle_rss_mb); the engine restarts in a fresh process to give it "
                      "back, and resumes from this checkpoint")
            raise RecycleRequested(folder.root, cycle, built, f"memory grew {grown:.0f} MB")

    def _rss_growth(self) -> float | None:
        """MB this process's RSS grew since the end of its second cycle; None until it has ended 4
        (a fresh process's first cycles allocate what every cycle reuses, and it never restarts at
        once) or where the RSS cannot be read."""
        self._rss_cycles += 1
        if self._rss_cycles < 2:
            return None
        rss = current_rss_mb()
        if rss is None:
            return None
        if self._rss_base is None:
            self._rss_base = rss
        return rss - self._rss_base if self._rss_cycles >= 4 else None

    def _soup(self, winner: int, kept: dict[int, Snapshot], curves: dict[int, list[float]]):
        """A greedy soup (Wortsman et al., 2022): from the winner's weights, add each other member
        with the same activations, best score first, to the average when that lowers the validation
        score.  Members share the parent, so their average stays in its basin.  Returns (weights,
        score, ingredients), or (None, None, [winner]) when no member improves the winner."""
        backend, base = self.backend, kept[winner]
        order = sorted((j for j in kept if j != winner and kept[j].genes.activations == base.genes.activations),
                       key=lambda j: (curves[j][-1], j))
        ingredients, total = [winner], [np.asarray(w, dtype=np.float64) for w in base.weights]
        score, weights = curves[winner][-1], None
        if not backend.data.has_validation:  # the curve is the running training loss: re-evaluate alike
            score = self._curve_value(backend.holdout_loss(base, base.genes, metric=self.config.fitness_metric))
        for j in order:
            trial = [t + np.asarray(w, dtype=np.float64) for t, w in zip(total, kept[j].weights)]
            mean = [(t / (len(ingredients) + 1)).astype(w.dtype) for t, w in zip(trial, base.weights)]
            value = self._curve_value(backend.holdout_loss(base, base.genes, mean, metric=self.config.fitness_metric))
            if math.isfinite(value) and value < score:
                ingredients, total, score, weights = [*ingredients, j], trial, value, mean
        return weights, score, sorted(ingredients)

    def _curve_value(self, value: float) -> float:
        """A holdout value as the fitness curve scores it (lower is better)."""
        return self._curve([value], [value], {self._score_name(): [value]})[0]

    def _margin(self, control: list[float], anchor: float | None, z: float = 1.0) -> tuple[float, float]:
        """(margin in fitness units, epoch-to-epoch noise in log-loss) from the control's curve (from
        the parent's loss) and the lineage's last epochs: what a mutant must beat the control by
        (``z`` noise units, see :func:`miha_engine.fitness.family_z`)."""
        cfg = self.config
        if cfg.fitness_metric == "loss":
            recent = self.state.main_raw_val if self.backend.data.has_validation else self.state.main_losses
            recent = [v for v in recent[-8:] if v is not None]
        else:
            name = self._score_name()
            recent = as_loss([m.get(name, math.nan) for m in self.state.main_metrics[-8:]], cfg.fitness_metric)
        sigma = epoch_noise([recent, ([anchor] if anchor else []) + list(control)])
        if sigma is None:
            return 0.0, 0.0
        return noise_margin(control, z * sigma, cfg.fitness, cfg.fitness_slope_weight, anchor), sigma

    def _anchor(self, parent: Parent, genes: Genes) -> float | None:
        """L0: the parent's score at the fork, the same for every member (see miha_engine.fitness)."""
        cfg = self.config
        if self.backend.data.has_validation:
            return self._curve_value(self.backend.holdout_loss(parent.snapshot, genes, metric=cfg.fitness_metric))
        if not self.state.main_losses:
            return None
        last = self.state.main_metrics[-1] if self.state.main_metrics else {}
        return self._curve(self.state.main_losses[-1:], [], {k: [v] for k, v in last.items()})[0]

    def _crossover(self, ancestor: Genes, best, last_val: dict[int, float], decision: str):
        """Child of the two fittest: the ancestor's genes with both mutations, the fitter parent's
        weights (or the average of both).  Kept only if its validation loss is no worse than the
        fitter parent's.  Returns (decision, chosen snapshot, weights, (a, b) when the child is kept)."""
        backend = self.backend
        (_, ia, snap_a), (_, ib, snap_b) = best[0], best[1]
        ga = snap_a.genes
        child_genes = combine(ancestor, ga, snap_b.genes)
        if child_genes == ga:
            return f"{decision}; crossover with member {ib} adds nothing new", snap_a, None, None
        weights = None
        if self.config.crossover_weights == "average":
            weights = average_weights(snap_a.weights, snap_b.weights)
        child = Snapshot(child_genes, snap_a.weights, snap_a.optimizer, snap_a.optimizer_vars)
        child_val = backend.holdout_loss(child, child_genes, weights)
        parent_val = last_val[ia] if backend.data.has_validation else backend.holdout_loss(snap_a, ga)
        if math.isfinite(child_val) and child_val <= parent_val:
            untested = weights is None and child_genes.activations == ga.activations
            caveat = ("; the genes it adds (optimizer, learning rate, batch size) act only in training, "
                      "so the check cannot tell them apart" if untested else "")
            return (f"crossover: members {ia} × {ib} → {'; '.join(ancestor.diff(child_genes))} "
                    f"(val loss {child_val:.4g} ≤ {parent_val:.4g}{caveat})"), child, weights, (ia, ib)
        return (f"{decision}; crossover child of {ia} × {ib} rejected "
                f"(loss {child_val:.4g} > {parent_val:.4g})"), snap_a, None, None

    def _finish(self, initial_test: dict[str, float]) -> RunResult:
        cfg, folder = self.config, self.folder
        schedule = final_schedule(self.genes.learning_rate, cfg.runup_epochs, cfg.final_anneal) if self.genes else None
        if schedule is not None:
            self.note(f"final phase: the learning rate anneals along a cosine from {schedule[0]:.3g} to "
                      f"{schedule[-1]:.3g} over {len(schedule)} epochs")
        self._train_main("final", cfg.cycles + 1, cfg.runup_epochs, schedule)
        final = self._save_main("final")
        self._journal_archives(wait=True)
        if self._pending_best is not None:  # as at a checkpoint: state.json records the best, then the rename
            folder.write_state({**(folder.read_state() or {}), "best": self.best})
            self._promote_best()
        test = {"initial": initial_test, "final": self.backend.test_metrics()} if initial_test else {}
        best_path = folder.model_path("best")
        if self.best["step"] is not None and best_path.exists():
            ema = getattr(getattr(getattr(self.backend, "main", None), "optimizer", None), "use_ema", False)
            if test and self.best["step"] == self.step and not ema:
                # the last lineage epoch was the best: the same state (with an EMA optimizer, Keras puts
                # the averaged weights into the model after the last epoch: not the same)
                test["best"] = dict(test["final"])
            elif test:
                test["best"] = self.backend.archive_test_metrics(best_path)
            folder.update_run(best_model={"path": str(best_path.relative_to(folder.root)),
                                          "lineage_epoch": self.best["step"], "score": self.best["score"],
                                          "of": self._score_name()})
        wall = self.elapsed()
        self.write_views()
        # Finished first, then delete: a kill in between leaves a finished run, never a checkpoint
        # that points at a deleted archive.
        folder.write_state({**(folder.read_state() or {}), "finished": True,
                            "model": str(final.relative_to(folder.root)),
                            "best": self.best if self.best["step"] is not None else None})
        folder.update_run(status="finished", finished_at=_now(), wall_seconds=wall, test_metrics=test,
                          genes_final=self.genes.to_dict() if self.genes else None)
        if cfg.drop_intermediate:
            folder.drop_intermediate()
        self.emit(ev.RunFinished(status="finished", final_model=str(final.relative_to(folder.root)),
                                 wall_seconds=wall, test_metrics=test))
        return self._result("finished", final, test, wall)

    def _result(self, status: str, final: Path | None, test: dict[str, Any], wall: float) -> RunResult:
        return RunResult(self.folder.root, status, final, self.genes, self.state.history_rows(),
                         self.state.population(), test, wall)

    def _guarded(self, body) -> RunResult:
        try:
            return self._handled(body)
        finally:
            self._archives.settle()  # no write goes on behind the caller's back (or the unlink below)
            # a stop or a failure resumes from the last checkpoint, whose model_best is promoted
            # already: a newer best state belongs to epochs the resume trains again (a finished run
            # and a recycle have promoted theirs)
            if self._pending_best is not None:
                with contextlib.suppress(OSError):
                    self._pending_best[0].unlink(missing_ok=True)
                self._pending_best = None

    def _handled(self, body) -> RunResult:
        try:
            return body()
        except RecycleRequested:
            self.write_views()  # the checkpoint is written; the folder stays "running" for the resume
            raise
        except (Cancelled, KeyboardInterrupt):
            wall = self.elapsed()
            self.write_views()
            self.folder.update_run(status="cancelled", stopped_at=_now(), wall_seconds=wall)
            self.emit(ev.RunFinished(status="cancelled", final_model=None, wall_seconds=wall, test_metrics={}))
            return self._result("cancelled", None, {}, wall)
        except OSError as exc:
            # A write that failed outside an archive save (journal, views, checkpoint): the same
            # advice, as a typed error the CLI and the app turn into one clear message.
            error = RunFolderError(
                f"cannot write to the run folder {self.folder.root}: {exc.strerror or exc}. Free some disk "
                f"space (or fix the folder's permissions), then 'miha resume {self.folder.root}'")
            self._record_failure(str(error), "RunFolderError")
            raise error from exc
        except BaseException as exc:
            message = str(exc) if isinstance(exc, MihaError) else f"{type(exc).__name__}: {exc}"
            self._record_failure(message, type(exc).__name__)
            raise

    def _record_failure(self, message: str, error_type: str) -> None:
        try:
            self.write_views()
            self.folder.update_run(status="failed", error=message, error_type=error_type, stopped_at=_now(),
                                   wall_seconds=self.elapsed())
            self.emit(ev.RunFailed(message=message, error_type=error_type))
        except Exception:  # noqa: BLE001 - the disk may be what failed
            pass


def final_schedule(lr: float, epochs: int, floor: float) -> list[float] | None:
    """Each final-phase epoch's learning rate: a cosine from ``lr`` down toward ``lr · floor`` (reached
    just after the last epoch), or None for a constant rate (``floor`` 1, or no epochs).

    Short-horizon selection errs toward small rates (a smaller rate gives an immediate drop in loss)
    and never anneals on its own; the final phase trains one configuration for m epochs, where a
    decaying rate is known to settle the weights into a lower-loss region."""
    if epochs <= 0 or floor >= 1.0:
        return None
    low = lr * floor
    return [low + (lr - low) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]


def run(
    model,
    data: Dataset | str | Path | tuple,
    config: RunConfig | None = None,
    run_dir: str | Path | None = None,
    listeners: Iterable[ev.Listener] = (),
    cancel: CancelToken | None = None,
    unsafe_model: bool = False,
    target: str | None = None,
    backend: Backend | None = None,
    edits: LiveEdits | None = None,
) -> RunResult:
    """Run MIHA on ``model`` (a Keras model or a path) with ``data``.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras``/``.h5`` file.
        data: a :class:`Dataset`, a dataset file path, or a tuple of arrays.
        config: the run configuration (defaults: a tiny run).
        run_dir: the run folder to create (default ``runs/miha-<timestamp>``).
        listeners: callables that receive every :mod:`~miha_engine.events` event.
        cancel: a token another thread may set to stop the run at the next batch.
        unsafe_model: allow Lambda layers and other unsafe deserialisation (trusted files only).
        target: the CSV column to predict.
        backend: the training set-up to use instead of Keras (tests pass
            :class:`miha_engine.testing.FakeBackend`; ``model`` and ``data`` are then ignored).
        edits: a :class:`LiveEdits` another thread may fill while the run goes (n, k, pop_size, the
            search space); they apply from the next cycle.

    Returns:
        A :class:`RunResult`; its status is "finished" or "cancelled".

    Raises:
        InputError: bad model, data, configuration or run folder (before anything trains).
        DivergedError: the main line's loss became NaN/inf.
    """
    config = config or RunConfig()
    cancel = cancel or CancelToken()
    source_path = data_source = None
    if backend is None:
        from . import models as mdl
        from .backend import KerasBackend

        dataset = _as_dataset(data, target)  # before the model: no TensorFlow start-up to learn of a bad file
        if isinstance(model, (str, Path)):
            source_path = str(Path(model).resolve())
            model = mdl.load_model(model, unsafe=unsafe_model)
        if isinstance(data, (str, Path)):
            data_source = str(Path(data).resolve())
        if config.evaluator == "ray":  # Ray missing or a cluster that does not answer: say so before anything trains
            from .ray_evaluator import preflight

            preflight(config)
        backend = KerasBackend.prepare(model, dataset, config, cancel)
    config = resolved_fitness_metric(config, backend)
    folder = RunFolder(run_dir or default_run_dir())
    folder.create()
    with folder.lock():
        return _start_run(folder, backend, config, listeners, cancel, source_path, data_source, target, unsafe_model,
                          edits)


def resolved_fitness_metric(config: RunConfig, backend: Backend) -> RunConfig:
    """``config`` with fitness_metric "auto" replaced by what the backend chose for its model (the
    calibrated loss for a classifier, else the loss): run.json records the choice, so a resume, a
    recycled process and a Ray worker score exactly as the run began."""
    if config.fitness_metric != "auto":
        return config
    chosen = getattr(getattr(backend, "config", None), "fitness_metric", "auto")
    return config.replace(fitness_metric=chosen if chosen != "auto" else "loss")


def _start_run(folder: RunFolder, backend: Backend, config: RunConfig, listeners, cancel: CancelToken,
               source_path: str | None, data_source: str | None, target: str | None, unsafe_model: bool,
               edits: LiveEdits | None) -> RunResult:
    genes = backend.initial_genes()
    info = _run_info(backend, config, genes, source_path, data_source, target, unsafe_model)
    loop = _Loop(folder, config, backend, listeners, cancel, RunState(), info, edits)  # may refuse: before run.json
    folder.write_run(info)
    loop.write_views()
    return loop.run(Checkpoint(None, 0, genes))


def _run_info(backend: Backend, config: RunConfig, genes: Genes, source_path: str | None, data_source: str | None,
              target: str | None, unsafe_model: bool, search_context: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json as a run starts: what it is, on what, and with which versions."""
    data = backend.data
    return {
        "format": 1, "status": "running", "config": config.to_dict(), "seed": config.seed,
        "versions": _versions(backend), "device": backend.device, "started_at": _now(),
        "model_source": source_path, "data_source": data_source, "target": target, "unsafe_model": unsafe_model,
        "total_epochs": config.total_epochs, "lineage_epochs": config.lineage_epochs,
        "data": {"train": data.n_train, "validation": 0 if data.x_val is None else len(data.x_val),
                 "test": 0 if data.x_test is None else len(data.x_test)},
        "genes_initial": genes.to_dict(),
        "search_context": search_context or backend.search_context(),
        "framework_log": backend.startup_log,
    }


def resume(
    run_dir: str | Path,
    data: Dataset | str | Path | tuple | None = None,
    listeners: Iterable[ev.Listener] = (),
    cancel: CancelToken | None = None,
    execution: dict[str, Any] | None = None,
    backend: Backend | None = None,
    edits: LiveEdits | None = None,
) -> RunResult:
    """Continue an interrupted run from its last completed cycle.

    The lineage is cut back to that cycle's last epoch, so after the resume it has no duplicated or
    missing epochs.  The dataset is read again from the path in run.json unless ``data`` is given.
    ``execution`` may change the fields :meth:`RunConfig.resumable_fields` names (where and how
    members train, never the genes or the lineage) and the live ones (:meth:`RunConfig.live_fields`:
    n, k, pop_size, the search space), which apply from the first cycle the resume trains and are
    journalled like a live edit.  ``backend``: as in :func:`run` (a fake one for tests; it must start
    from the checkpoint's state itself).  ``edits``: as in :func:`run`.
    """
    folder = RunFolder(run_dir)
    folder.open_existing()
    with folder.lock():  # before anything is read for writing, or written
        return _resume_locked(folder, data, listeners, cancel, execution, backend, edits)


def _resume_locked(folder: RunFolder, data, listeners, cancel, execution, backend, edits) -> RunResult:
    info = folder.open_existing()
    if info.get("kind") == "replay":
        raise RunFolderError(f"{folder.root} holds a replay of a schedule, which cannot be resumed; replay the schedule "
                             "again into a new folder")
    if info.get("status") == "finished":
        raise RunFolderError(f"the run in {folder.root} has already finished; nothing to resume")
    config = RunConfig.from_stored(info["config"])
    live: dict[str, Any] = {}
    if execution:
        resumable, live_names = set(RunConfig.resumable_fields()), set(RunConfig.live_fields())
        unknown = set(execution) - resumable - live_names
        if unknown:
            raise InputError(f"resume can change how members train ({', '.join(sorted(resumable))}) and, from the "
                             f"next cycle, {', '.join(sorted(live_names))}; not {', '.join(sorted(unknown))}")
        live = {k: v for k, v in execution.items() if k in live_names}
        config = config.replace(**{k: v for k, v in execution.items() if k in resumable})
        config.replace(**{k: SearchSpace.from_dict({**config.search.to_dict(), **v})
                          if k == "search" and isinstance(v, dict) else v
                          for k, v in live.items()})  # refuse a bad edit before anything is written
    folder.remove_stale_temporaries()
    folder.repair_journal()
    ckpt = folder.read_state()
    if ckpt is not None and ckpt.get("finished"):
        folder.update_run(status="finished")
        raise RunFolderError(f"the run in {folder.root} has already finished; nothing to resume")
    cancel = cancel or CancelToken()
    if backend is None:
        backend = _keras_backend_for_resume(folder, info, ckpt, config, data, cancel)
    if ckpt is None:  # killed during the run-up: start over from the model as given
        start = Checkpoint(None, 0, backend.initial_genes())
    else:
        start = Checkpoint(int(ckpt["completed_cycle"]), int(ckpt["step"]), Genes.from_dict(ckpt["genes"]),
                           float(ckpt.get("elapsed_seconds", 0.0)), ckpt.get("best"))
    state = RunState()
    for event in read_events(folder.events_path):
        state.apply(event)
    done = -1 if start.completed is None else start.completed
    # edits applied after the checkpoint stay in force (run.json holds them) though the resume cuts
    # their events: they are journalled again at the first cycle the resume trains
    kept = {k: v for c, e in sorted(state.edits.items()) if c > done for k, v in e.items()}
    loop = _Loop(folder, config, backend, listeners, cancel, state, info, edits)
    loop.pending_edits.update(live)
    loop.kept_edits = kept
    folder.update_run(status="running", resumed_at=_now(), config=config.to_dict())
    return loop.run(start, "resumed")


def _keras_backend_for_resume(folder: RunFolder, info: dict[str, Any], ckpt: dict[str, Any] | None,
                              config: RunConfig, data, cancel: CancelToken) -> Backend:
    """The Keras set-up a resume continues with: the checkpoint's archive (the model as given, when
    the run-up never finished), the run's dataset, and the search context the run started with."""
    from . import models as mdl
    from .backend import KerasBackend

    if config.evaluator == "ray":
        from .ray_evaluator import preflight

        preflight(config)
    if data is None:
        data = info.get("data_source")
        if not data:
            raise InputError("this run was given arrays in memory; pass the same data to resume()")
    dataset = _as_dataset(data, info.get("target"))
    unsafe = bool(info.get("unsafe_model"))
    if ckpt is None:
        source = folder.model_path("source")
        if not source.exists():
            if not info.get("model_source"):
                raise RunFolderError(f"{folder.root} has no model_source.keras to restart from")
            source = Path(info["model_source"])
        model = mdl.load_model(source, unsafe=unsafe)
    else:
        model = mdl.load_model(folder.root / ckpt["model"], unsafe=unsafe)
    return KerasBackend.prepare(model, dataset, config, cancel, info.get("search_context"))


def fork(
    run_dir: str | Path,
    archive: str | Path,
    new_run_dir: str | Path | None = None,
    data: Dataset | str | Path | tuple | None = None,
    changes: dict[str, Any] | None = None,
    listeners: Iterable[ev.Listener] = (),
    cancel: CancelToken | None = None,
    backend: Backend | None = None,
    edits: LiveEdits | None = None,
) -> RunResult:
    """A what-if run that starts from one archive of another run, at that archive's place.

    The new run starts from the archive's weights, optimizer state and genes, after the cycle the
    archive closes (``model_3.keras``, a member ``3_1_model.keras`` or a child ``3_child_model.keras``:
    cycle 4 comes next; ``model_init.keras``: cycle 1; ``model_source.keras``: the run-up), with the
    parent's settings and search space unless ``changes`` says otherwise (any :class:`RunConfig`
    field; raise ``cycles`` to train further than the parent planned).  Its ``run.json`` names the
    parent run and archive.  The parent's folder is only read.

    Raises:
        RunFolderError: ``archive`` is missing, or not an archive of ``run_dir``.
    """
    from .runlog import parse_archive_name
    from .state import replay as replay_events

    parent = RunFolder(run_dir)
    pinfo = parent.open_existing()
    src = Path(archive)
    if not src.is_absolute() and not src.exists():
        named = parse_archive_name(src.name)
        src = parent.population_dir / src.name if named is not None and named.kind != "main" else parent.model_dir / src.name
    name = parse_archive_name(src.name)
    if name is None or not src.is_file():
        raise RunFolderError(f"{archive} is not an archive of {parent.root} (fork from model_<cycle>.keras, model_init, "
                             "model_source, or a member's <cycle>_<member>_model.keras)")
    try:
        relative = src.resolve().relative_to(parent.root.resolve())
    except ValueError:
        raise RunFolderError(f"{src} does not belong to the run {parent.root}; fork from one of its own archives") from None
    st = replay_events(parent.root)
    completed, step, genes = _fork_point(st, pinfo, name, src)
    # the parent's settings as they were in force after that cycle (later live edits left out)
    config = RunConfig.from_stored(st.initial_config or pinfo["config"])
    for cycle, edit in sorted(st.edits.items()):
        if completed is not None and cycle <= completed + 1:
            config = config.replace(**{k: SearchSpace.from_dict(v) if k == "search" else v for k, v in edit.items()})
    if changes:
        if isinstance(changes.get("search"), dict):
            changes = {**changes, "search": SearchSpace.from_dict({**config.search.to_dict(), **changes["search"]})}
        config = config.replace(**changes)
    cancel = cancel or CancelToken()
    data_source = target = None
    if backend is None:
        from . import models as mdl
        from .backend import KerasBackend

        if data is None:
            data = pinfo.get("data_source")
            if not data:
                raise InputError("the parent run was given arrays in memory; pass the same data to fork()")
        data_source = str(Path(data).resolve()) if isinstance(data, (str, Path)) else None
        target = pinfo.get("target")
        dataset = _as_dataset(data, target)
        if config.evaluator == "ray":
            from .ray_evaluator import preflight

            preflight(config)
        model = mdl.load_model(src, unsafe=bool(pinfo.get("unsafe_model")))
        backend = KerasBackend.prepare(model, dataset, config, cancel, pinfo.get("search_context"))
    config = resolved_fitness_metric(config, backend)
    folder = RunFolder(new_run_dir or default_run_dir(parent.root.parent))
    folder.create()
    with folder.lock():
        # the archive is the fork's model as given and, after a cycle, its checkpoint archive
        copies = ["source"] + ([] if completed is None else ["init" if completed == 0 else str(completed)])
        for copy_name in copies:
            atomic_copy(src, folder.model_path(copy_name))
        start = Checkpoint(completed, step, genes) if completed is not None else Checkpoint(None, 0, genes)
        info = _run_info(backend, config, genes, str(src.resolve()), data_source, target or pinfo.get("target"),
                         bool(pinfo.get("unsafe_model")), pinfo.get("search_context"))
        info["forked_from"] = {"run": str(parent.root.resolve()), "archive": str(relative),
                               "cycle": completed, "step": step, "parent_genes": genes.to_dict()}
        loop = _Loop(folder, config, backend, listeners, cancel, RunState(), info, edits)
        total, lineage = loop._totals(start)
        info.update(total_epochs=total, lineage_epochs=lineage)
        folder.write_run(info)
        loop.write_views()
        if completed is not None:  # a checkpoint from the start: a fork stopped in its first cycle resumes there
            folder.write_state({"completed_cycle": completed, "step": step, "genes": genes.to_dict(),
                                "model": str(folder.model_path("init" if completed == 0 else str(completed))
                                             .relative_to(folder.root)), "elapsed_seconds": 0.0})
        return loop.run(start, "forked" if completed is not None else "new")


def _fork_point(st: RunState, info: dict[str, Any], name, src: Path) -> tuple[int | None, int, Genes]:
    """(cycle the archive closes, lineage steps before it, its genes) from the parent's journal."""
    if name.kind == "main" and name.which == "source":
        return None, 0, Genes.from_dict(info["genes_initial"])
    if name.kind == "main":
        if name.which == "init":
            cycle = 0
        elif name.which == "final":
            cycle = int(info["config"]["cycles"])
        else:
            cycle = int(name.which)
        rows = [s for s, c, p in zip(st.main_steps, st.main_cycles, st.main_phases)
                if (c <= cycle and p != "final") or name.which == "final"]
        genes = st.cycle_genes.get(cycle) if 1 <= cycle <= int(info["config"]["cycles"]) else None
        if name.which == "final":
            genes = st.main_genes[-1] if st.main_genes else None
        if genes is None:  # the run-up's genes (the cycle kept the parent's when every member diverged)
            genes = next((g for c, g in zip(reversed(st.main_cycles), reversed(st.main_genes)) if c <= cycle),
                         info["genes_initial"])
        if not rows and cycle > 0:
            raise RunFolderError(f"the parent's journal does not reach {src.name}; fork from an earlier archive")
        return cycle, rows[-1] if rows else 0, Genes.from_dict(genes)
    b = st.branches.get((name.cycle, name.member)) if name.kind == "member" else st.branches.get(
        (name.cycle, st.winners.get(name.cycle, -1)))
    if b is None or not b.trained:
        raise RunFolderError(f"the parent's journal has no trained member for {src.name}")
    genes = b.genes if name.kind == "member" else st.cycle_genes.get(name.cycle, b.genes)
    return name.cycle, b.branch_step + len(b.result_losses), Genes.from_dict(genes)
