"""Where a population's members train.

The runner draws every member's genes (in order, from the run's seed) and hands the jobs to an
:class:`Evaluator`, which yields one :class:`MemberOutcome` per member as each finishes and reports
starts and epochs to a :class:`MemberListener`.  The runner builds every event, scores, saves, logs
and selects, so every evaluator leaves the same run folder.  An evaluator touches nothing of the
runner but the :class:`EvaluatorContext` it is opened with.

- :class:`LocalEvaluator` (``evaluator = "local"``, the default): this process, one member after
  the other, through the run's own :class:`~miha_engine.backend.KerasBackend`.
- ``miha_engine.ray_evaluator.RayEvaluator`` (``evaluator = "ray"``): Ray workers, in parallel, on a
  local Ray instance or a cluster.

A new evaluator (a local process pool, say) implements the protocol and registers its class path in
:data:`miha_engine.config.EVALUATOR_CLASSES`; the runner does not change.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .genes import Genes

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend, TrainedMember
    from .config import RunConfig
    from .snapshot import Snapshot
    from .training import CancelToken


@dataclass(frozen=True)
class MemberJob:
    """One member to train: its index in the population, its genes, what was mutated, and how many
    epochs it trains (n, which a live edit may change from one cycle to the next)."""

    index: int
    genes: Genes
    change: str
    epochs: int


@dataclass(frozen=True)
class Parent:
    """What every member of a cycle starts from: the main line's state, as arrays and as the
    archive the run folder holds (for evaluators in other processes)."""

    cycle: int
    snapshot: Snapshot
    archive: Path


@dataclass
class MemberOutcome:
    """What training one member gave.

    ``trained`` holds the member's state (it writes the archive and gives the snapshot), unless
    the member failed, when ``failure`` says why.
    """

    job: MemberJob
    losses: list[float]
    val_losses: list[float]
    diverged: bool
    trained: TrainedMember | None = None
    failure: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    #: per-epoch values of the compiled metrics, by Keras' log name ("val_accuracy", "accuracy", ...)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def failed(cls, job: MemberJob, epochs: int, has_validation: bool, why: str,
               where: dict[str, Any] | None = None) -> MemberOutcome:
        nan = [math.nan] * epochs
        return cls(job, nan, nan if has_validation else [], False, failure=why, where=where or {})

    def write_archive(self, path: Path) -> None:
        assert self.trained is not None, "a failed member has no archive"
        self.trained.write_archive(path)

    def archive_writer(self) -> Callable[[Path], Any]:
        """A function that writes this member's archive later, whatever trains meanwhile: the trained
        member's own (a copy of its state, :class:`miha_engine.models.ArchiveCopy`) where it has one,
        else its ``write_archive`` (a member that holds nothing a later training can change)."""
        assert self.trained is not None, "a failed member has no archive"
        capture = getattr(self.trained, "archive_writer", None)
        return capture() if capture is not None else self.trained.write_archive

    def snapshot(self) -> Snapshot:
        assert self.trained is not None, "a failed member has no state"
        return self.trained.snapshot()


class MemberListener(Protocol):
    """How an evaluator reports progress; the runner turns each call into an event."""

    def started(self, job: MemberJob) -> None:
        """A member began training (again, if its worker died: its earlier epochs no longer count)."""

    def epoch(self, job: MemberJob, epoch: int, loss: float, val_loss: float | None, seconds: float) -> None:
        """A member finished epoch ``epoch`` (0-based)."""

    def note(self, message: str) -> None:
        """Something the user should know."""


@dataclass
class EvaluatorContext:
    """Everything an evaluator may use, handed over once when the members' phase opens."""

    config: RunConfig
    backend: Backend
    cancel: CancelToken
    note: Callable[[str], None]
    unsafe_model: bool = False


class Evaluator(Protocol):
    """Trains a population's members (see the module's text)."""

    name: str

    def describe(self) -> str:
        """Where members train, in a few words for the log."""

    def open(self, ctx: EvaluatorContext) -> None:
        """Get ready (connect, ship the data); called once before the first population."""

    def members(self, parent: Parent, jobs: list[MemberJob], listener: MemberListener) -> Iterator[MemberOutcome]:
        """Train ``jobs``, each from ``parent``; yield outcomes as members finish (any order).

        The runner writes and snapshots each outcome before asking for the next one."""

    def close(self) -> None:
        """Release what :meth:`open` took; safe to call more than once, and after a failed open."""


class LocalEvaluator:
    """Train members in this process, one after the other, on the run's own backend."""

    name = "local"

    def __init__(self, config: RunConfig | None = None):  # noqa: ARG002 - every evaluator is built alike
        self.ctx: EvaluatorContext | None = None

    def describe(self) -> str:
        return "this process"

    def open(self, ctx: EvaluatorContext) -> None:
        self.ctx = ctx

    def close(self) -> None:
        self.ctx = None

    def members(self, parent: Parent, jobs: list[MemberJob], listener: MemberListener) -> Iterator[MemberOutcome]:
        ctx = self.ctx
        assert ctx is not None, "open() first"
        for job in jobs:
            ctx.cancel.raise_if_cancelled()
            listener.started(job)

            def on_epoch(epoch, loss, val, seconds, _job=job):
                listener.epoch(_job, epoch, loss, val, seconds)

            result, trained = ctx.backend.train_member(job.genes, parent.snapshot, parent.cycle, job.index,
                                                       job.epochs, on_epoch)
            for message in ctx.backend.pop_notes():
                listener.note(message)
            yield MemberOutcome(job, result.losses, result.val_losses, result.diverged, trained=trained,
                                metrics=dict(result.metrics))


def make_evaluator(config: RunConfig) -> Evaluator:
    """The evaluator a configuration asks for."""
    from .config import EVALUATOR_CLASSES

    module, _, cls = EVALUATOR_CLASSES[config.evaluator].partition(":")
    return getattr(importlib.import_module(module), cls)(config)
