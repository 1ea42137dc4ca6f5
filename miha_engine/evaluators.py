"""Where a population's members train.

The runner draws every member's genes (in order, from the run's seed), then hands the jobs to an
evaluator, which yields one :class:`MemberOutcome` per member as each finishes.  Scoring, saving,
logging and selection stay in the runner, so every evaluator leaves the same run folder.

- :class:`LocalEvaluator` (``evaluator = "local"``, the default): this process, one member after
  the other, on pooled compiled models.
- :class:`~miha_engine.ray_evaluator.RayEvaluator` (``evaluator = "ray"``): Ray tasks, in parallel,
  on a local Ray instance or a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import events as ev
from .genes import Genes

if TYPE_CHECKING:  # pragma: no cover
    from .models import Snapshot


@dataclass(frozen=True)
class MemberJob:
    """One member to train: its index in the population, its genes and what was mutated."""

    index: int
    genes: Genes
    change: str


@dataclass
class MemberOutcome:
    """What training one member gave.

    Exactly one of ``model`` (a live Keras model, in-process) and ``archive`` (the trained
    ``.keras`` archive as bytes, from a worker) is set, unless the member failed.  ``snapshot`` is
    the trained state as arrays (set by workers; the runner takes it from ``model`` otherwise).
    """

    job: MemberJob
    losses: list[float]
    val_losses: list[float]
    diverged: bool
    model: Any = None
    archive: bytes | None = None
    snapshot: Snapshot | None = None
    failure: str | None = None
    where: dict[str, Any] = field(default_factory=dict)


def member_seeds(seed: int, cycle: int, index: int) -> tuple[int, int]:
    """(Keras seed, shuffle counter) of one member: a member trains the same way whichever
    evaluator, worker or order runs it."""
    return seed * 100_003 + cycle * 1_000 + index, cycle * 1_000 + index


def seed_member(trainer, seed: int, cycle: int, index: int) -> int:
    """Seed Keras and the trainer's shuffles for one member; returns the shuffle counter to put back."""
    import keras

    keras_seed, counter = member_seeds(seed, cycle, index)
    keras.utils.set_random_seed(keras_seed)
    saved, trainer._shuffle_counter = trainer._shuffle_counter, counter
    return saved


class LocalEvaluator:
    """Train members in this process, one after the other."""

    name = "local"

    def describe(self) -> str:
        return "this process"

    def open(self, run) -> None:  # noqa: ARG002 - same interface as the Ray evaluator
        return None

    def close(self) -> None:
        return None

    def members(self, run, cycle: int, jobs: list[MemberJob], parent: Snapshot, branch_step: int) -> Iterator[MemberOutcome]:
        from . import models as mdl

        cfg = run.config
        for job in jobs:
            run.cancel.raise_if_cancelled()
            run.emit(ev.MemberStarted(cycle=cycle, member=job.index, genes=job.genes.to_dict(), change=job.change,
                                      branch_step=branch_step))
            model = run.pool.get(job.genes)
            mdl.restore(model, parent, job.genes)

            def on_epoch(epoch, loss, val, seconds, _i=job.index):
                run.emit(ev.EpochEnded(phase="member", cycle=cycle, member=_i, epoch=epoch + 1,
                                       step=branch_step + epoch + 1, loss=loss, val_loss=val, seconds=seconds))

            saved = seed_member(run.trainer, cfg.seed, cycle, job.index)
            try:
                result = run.trainer.fit(model, job.genes.batch_size, cfg.candidate_epochs, on_epoch, spec=run.spec)
            finally:
                run.trainer._shuffle_counter = saved  # the main line's shuffles go on as if no member ran
            run._after_fit()
            # The runner saves and snapshots the model before asking for the next member, so the
            # pooled model may be reused by the next job.
            yield MemberOutcome(job, result.losses, result.val_losses, result.diverged, model=model)


def make_evaluator(config) -> Any:
    """The evaluator a configuration asks for."""
    if config.evaluator == "ray":
        from .ray_evaluator import RayEvaluator

        return RayEvaluator(config)
    return LocalEvaluator()
