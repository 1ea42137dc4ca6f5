"""Events: frozen values the engine emits to listeners (the CLI, the app, a test).

They hold numbers and strings only, never a Keras object, so a listener can keep them, send them to
another thread, or write them as one JSON line each (``events.jsonl``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str = field(init=False, default="event")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunStarted(Event):
    run_dir: str
    config: dict[str, Any]
    total_epochs: int
    lineage_epochs: int
    genes: dict[str, Any]
    kind: str = field(init=False, default="run_started")


@dataclass(frozen=True)
class RunResumed(Event):
    """The run continues after cycle ``cycle`` (0: after the run-up, -1: from the start); ``step``
    lineage epochs exist and ``genes`` are the main line's genes at that checkpoint.  Whatever the
    journal holds after that checkpoint no longer counts."""

    cycle: int
    step: int
    genes: dict[str, Any] | None = None
    kind: str = field(init=False, default="run_resumed")


@dataclass(frozen=True)
class MemberStarted(Event):
    cycle: int
    member: int
    genes: dict[str, Any]
    change: str
    branch_step: int
    kind: str = field(init=False, default="member_started")


@dataclass(frozen=True)
class EpochEnded(Event):
    """One epoch done.  ``step`` is the lineage step for run-up, fixing and final epochs, and the
    branch step (branch point + epoch) for a member's epochs."""

    phase: str  # runup | member | fixing | final
    cycle: int
    member: int | None
    epoch: int
    step: int
    loss: float
    val_loss: float | None
    seconds: float
    #: the compiled metrics of a main-line epoch ("accuracy", "val_accuracy", ...); None for members
    metrics: dict[str, float] | None = None
    kind: str = field(init=False, default="epoch_ended")


@dataclass(frozen=True)
class MemberTrained(Event):
    cycle: int
    member: int
    genes: dict[str, Any]
    change: str
    losses: list[float]
    val_losses: list[float]
    fitness: float
    #: where it trained (a Ray worker's host, pid and attempt); None in this process
    worker: dict[str, Any] | None = None
    #: why it could not be trained (its worker died too often); None when it trained
    failed: str | None = None
    #: the compiled metrics' per-epoch values ("accuracy", "val_accuracy", ...)
    metrics: dict[str, list[float]] | None = None
    kind: str = field(init=False, default="member_trained")


@dataclass(frozen=True)
class CycleDone(Event):
    """A cycle chose; ``rule`` says how ("noise", "fittest", "kept": every member diverged),
    ``margin`` is the noise margin in fitness units (None when the rule did not use one), and
    ``plateau`` is True when every member tied with the control within it."""

    cycle: int
    winner: int
    fitnesses: list[float]
    decision: str
    genes: dict[str, Any]
    rule: str = "fittest"
    margin: float | None = None
    plateau: bool = False
    kind: str = field(init=False, default="cycle_done")


@dataclass(frozen=True)
class ConfigChanged(Event):
    """Settings changed while the run was going (or at a resume): they apply from cycle ``cycle``.
    ``changes`` holds the new values of the changed fields; ``config`` the whole configuration."""

    cycle: int
    changes: dict[str, Any]
    config: dict[str, Any]
    total_epochs: int
    lineage_epochs: int
    kind: str = field(init=False, default="config_changed")


@dataclass(frozen=True)
class GenesChanged(Event):
    """The main line's genes change outside a cycle's selection (a replayed schedule): epochs from
    ``step`` + 1 on train with ``genes``."""

    step: int
    genes: dict[str, Any]
    change: str
    kind: str = field(init=False, default="genes_changed")


@dataclass(frozen=True)
class ArchiveSaved(Event):
    path: str
    description: str
    kind: str = field(init=False, default="archive_saved")


@dataclass(frozen=True)
class Note(Event):
    """Something the user should know that is not an error (a layer left alone, a NaN member)."""

    message: str
    kind: str = field(init=False, default="note")


@dataclass(frozen=True)
class RunFinished(Event):
    status: str  # finished | cancelled
    final_model: str | None
    wall_seconds: float
    test_metrics: dict[str, Any]
    kind: str = field(init=False, default="run_finished")


@dataclass(frozen=True)
class RunFailed(Event):
    message: str
    error_type: str
    kind: str = field(init=False, default="run_failed")


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__dataclass_fields__["kind"].default: cls  # type: ignore[misc]
    for cls in (RunStarted, RunResumed, MemberStarted, EpochEnded, MemberTrained, CycleDone,
                ConfigChanged, GenesChanged, ArchiveSaved, Note, RunFinished, RunFailed)
}

Listener = Callable[[Event], None]


def event_from_dict(data: dict[str, Any]) -> Event | None:
    """Rebuild an event from its JSON form; unknown kinds give None (a newer writer)."""
    cls = EVENT_TYPES.get(data.get("kind", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in data.items() if k in names})
