"""A Qt-free picture of a run, built by applying events (live, or replayed from events.jsonl).

The app's plots and tables draw from this object only, so a finished or interrupted run folder gives
exactly the picture the live run gave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events as ev
from .runlog import read_events


@dataclass
class Branch:
    cycle: int
    member: int
    branch_step: int
    change: str
    genes: dict[str, Any]
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    fitness: float | None = None
    trained: bool = False
    #: the member's whole curves as its MemberTrained event gave them (NaN-padded if it diverged)
    result_losses: list[float] = field(default_factory=list)
    result_val_losses: list[float] = field(default_factory=list)
    result_metrics: dict[str, list[float]] = field(default_factory=dict)
    worker: dict[str, Any] | None = None
    failed: str | None = None


@dataclass
class RunState:
    """Everything the app shows, as plain values."""

    run_dir: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    total_epochs: int = 0
    lineage_epochs: int = 0
    status: str = "idle"
    message: str = ""
    main_steps: list[int] = field(default_factory=list)
    main_losses: list[float] = field(default_factory=list)
    main_val_losses: list[float] = field(default_factory=list)
    main_phases: list[str] = field(default_factory=list)
    main_genes: list[dict[str, Any]] = field(default_factory=list)
    main_cycles: list[int] = field(default_factory=list)
    main_epochs: list[int] = field(default_factory=list)
    main_raw_val: list[float | None] = field(default_factory=list)
    #: each lineage epoch's compiled metrics (empty where the journal has none)
    main_metrics: list[dict[str, float]] = field(default_factory=list)
    cycle_borders: list[int] = field(default_factory=list)
    branches: dict[tuple[int, int], Branch] = field(default_factory=dict)
    winners: dict[int, int] = field(default_factory=dict)
    decisions: dict[int, str] = field(default_factory=dict)
    #: cycles where every member tied with the control within the noise margin
    plateaus: dict[int, bool] = field(default_factory=dict)
    #: settings changed during the run, by the cycle they apply from
    edits: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: the configuration the run started with (``config`` follows live edits)
    initial_config: dict[str, Any] = field(default_factory=dict)
    #: the main line's genes right after each cycle's decision (a crossover child's, when kept)
    cycle_genes: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    archives: dict[str, str] = field(default_factory=dict)
    epochs_done: int = 0
    seconds_done: float = 0.0
    current_cycle: int = 0
    current_member: int | None = None
    current_phase: str = ""
    genes: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    # -- applying events ----------------------------------------------------------------------
    def apply(self, event: ev.Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: ev.RunStarted) -> None:
        if self.status != "resuming":
            self.__init__()  # type: ignore[misc]
        self.run_dir, self.config = e.run_dir, e.config
        self.initial_config = self.initial_config or e.config
        self.total_epochs, self.lineage_epochs = e.total_epochs, e.lineage_epochs
        self.genes = e.genes
        self.status = "running"

    def _on_run_resumed(self, e: ev.RunResumed) -> None:
        keep = e.step
        n = sum(1 for s in self.main_steps if s <= keep)
        for name in _MAIN_COLUMNS:
            setattr(self, name, getattr(self, name)[:n])
        self.branches = {k: b for k, b in self.branches.items() if k[0] <= e.cycle}
        self.winners = {c: w for c, w in self.winners.items() if c <= e.cycle}
        self.decisions = {c: d for c, d in self.decisions.items() if c <= e.cycle}
        self.plateaus = {c: d for c, d in self.plateaus.items() if c <= e.cycle}
        self.edits = {c: d for c, d in self.edits.items() if c <= e.cycle}
        self.cycle_genes = {c: g for c, g in self.cycle_genes.items() if c <= e.cycle}
        self.cycle_borders = [s for s in self.cycle_borders if s <= keep]
        if e.genes is not None:
            self.genes = e.genes
        self.epochs_done = self._compute_epochs()
        self.status = "running" if e.cycle >= 0 else "resuming"
        self.notes.append(f"resumed after {'the run-up' if e.cycle == 0 else f'cycle {e.cycle}' if e.cycle > 0 else 'an interrupted run-up'}")

    def _compute_epochs(self) -> int:
        c = self.config
        n_main = sum(1 for p in self.main_phases if p != "member")
        return n_main + sum(len(b.steps) for b in self.branches.values()) if c else len(self.main_steps)

    def _on_member_started(self, e: ev.MemberStarted) -> None:
        if e.member == 0 and e.branch_step not in self.cycle_borders:
            self.cycle_borders.append(e.branch_step)
        old = self.branches.get((e.cycle, e.member))
        if old is not None:  # started again (a Ray worker died): its first try's epochs no longer count
            self.epochs_done -= len(old.steps)
        self.branches[(e.cycle, e.member)] = Branch(e.cycle, e.member, e.branch_step, e.change, e.genes)
        self.current_cycle, self.current_member, self.current_phase = e.cycle, e.member, "member"

    def _on_epoch_ended(self, e: ev.EpochEnded) -> None:
        self.epochs_done += 1
        self.seconds_done += e.seconds
        self.current_phase = e.phase
        if e.member is not None:  # a population member's epoch (a replay's lineage has none)
            b = self.branches.get((e.cycle, e.member))
            if b is None:
                return
            b.steps.append(e.step)
            b.losses.append(e.loss)
            b.val_losses.append(_nan(e.val_loss))
        else:
            self.current_cycle = e.cycle
            self._append_main(e.step, e.loss, e.val_loss, e.phase, e.cycle, e.epoch, e.metrics)

    def _append_main(self, step, loss, val, phase, cycle, epoch, metrics=None) -> None:
        self.main_metrics.append(dict(metrics or {}))
        self.main_steps.append(step)
        self.main_losses.append(loss)
        self.main_val_losses.append(_nan(val))
        self.main_raw_val.append(val)
        self.main_phases.append(phase)
        self.main_genes.append(dict(self.genes))
        self.main_cycles.append(cycle)
        self.main_epochs.append(epoch)

    def _on_member_trained(self, e: ev.MemberTrained) -> None:
        b = self.branches.get((e.cycle, e.member))
        if b is not None:
            b.fitness = e.fitness if e.fitness is not None and math.isfinite(e.fitness) else None
            b.trained = True
            b.genes, b.change = e.genes, e.change
            b.result_losses, b.result_val_losses = list(e.losses), list(e.val_losses)
            b.worker, b.failed = e.worker, e.failed
            b.result_metrics = dict(e.metrics or {})

    def _on_cycle_done(self, e: ev.CycleDone) -> None:
        self.winners[e.cycle] = e.winner
        self.decisions[e.cycle] = e.decision
        self.plateaus[e.cycle] = bool(e.plateau)
        self.cycle_genes[e.cycle] = e.genes
        b = self.branches.get((e.cycle, e.winner))
        self.genes = e.genes
        if b is not None:
            saved = dict(self.genes)
            self.genes = b.genes
            vals = b.result_val_losses
            for i, loss in enumerate(b.result_losses):  # the winner's n epochs join the lineage
                self._append_main(b.branch_step + i + 1, loss, vals[i] if i < len(vals) else None, "member",
                                  e.cycle, i + 1, {k: v[i] for k, v in b.result_metrics.items() if i < len(v)})
            self.genes = saved

    def _on_config_changed(self, e: ev.ConfigChanged) -> None:
        self.config = e.config
        self.total_epochs, self.lineage_epochs = e.total_epochs, e.lineage_epochs
        self.edits[e.cycle] = dict(e.changes)
        self.notes.append(f"from cycle {e.cycle}: " + ", ".join(f"{k} = {v}" for k, v in e.changes.items()))

    def _on_genes_changed(self, e: ev.GenesChanged) -> None:
        self.genes = e.genes
        self.notes.append(f"from epoch {e.step + 1}: {e.change}")

    def _on_archive_saved(self, e: ev.ArchiveSaved) -> None:
        self.archives[Path(e.path).name] = e.description

    def _on_note(self, e: ev.Note) -> None:
        self.notes.append(e.message)

    def _on_run_finished(self, e: ev.RunFinished) -> None:
        self.status = e.status
        self.test_metrics = e.test_metrics
        self.wall_seconds = e.wall_seconds

    def _on_run_failed(self, e: ev.RunFailed) -> None:
        self.status = "failed"
        self.message = e.message

    # -- queries -----------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        return 0.0 if not self.total_epochs else min(1.0, self.epochs_done / self.total_epochs)

    def eta_seconds(self) -> float | None:
        if self.epochs_done == 0 or not self.total_epochs:
            return None
        per = self.seconds_done / self.epochs_done
        return per * (self.total_epochs - self.epochs_done)

    def cycles(self) -> list[int]:
        return sorted({c for c, _ in self.branches})

    def members(self, cycle: int) -> list[Branch]:
        return [b for (c, _), b in sorted(self.branches.items()) if c == cycle]

    # -- the run folder's derived records ----------------------------------------------------
    def history_rows(self) -> list[dict[str, Any]]:
        """The lineage as ``history.csv`` rows: one per epoch of the final model's line."""
        return [{"step": s, "phase": p, "cycle": c, "epoch": ep, "loss": loss, "val_loss": val, "genes": g}
                for s, p, c, ep, loss, val, g in zip(self.main_steps, self.main_phases, self.main_cycles,
                                                     self.main_epochs, self.main_losses, self.main_raw_val,
                                                     self.main_genes)]

    def population(self) -> dict[str, Any]:
        """Every trained member of every cycle, as ``population.json`` holds them."""
        out: dict[str, Any] = {}
        for (cycle, member), b in sorted(self.branches.items()):
            if not b.trained:
                continue
            entry: dict[str, Any] = {"genes": b.genes, "change": b.change, "losses": b.result_losses,
                                     "val_losses": b.result_val_losses, "fitness": b.fitness,
                                     "chosen": self.winners.get(cycle) == member}
            if b.worker:
                entry["worker"] = b.worker
            if b.failed:
                entry["failed"] = b.failed
            out.setdefault(str(cycle), {})[str(member)] = entry
        for cycle, decision in sorted(self.decisions.items()):
            out.setdefault(str(cycle), {})["_cycle"] = {"decision": decision, "winner": self.winners[cycle]}
            if self.plateaus.get(cycle):
                out[str(cycle)]["_cycle"]["plateau"] = True
        return out

    def fitness_points(self) -> list[tuple[int, int, float, bool]]:
        """(cycle, member, fitness, is_winner) for every trained member with a finite fitness."""
        return [(b.cycle, b.member, b.fitness, self.winners.get(b.cycle) == b.member)
                for b in self.branches.values() if b.trained and b.fitness is not None]


_MAIN_COLUMNS = ("main_steps", "main_losses", "main_val_losses", "main_raw_val", "main_phases", "main_genes",
                 "main_cycles", "main_epochs", "main_metrics")


def _nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def replay(run_dir: str | Path) -> RunState:
    """Rebuild a run's picture from its events.jsonl."""
    state = RunState()
    for event in read_events(Path(run_dir) / "events.jsonl"):
        state.apply(event)
    if state.status == "running":
        # The journal ends mid-run: the process was killed.  run.json may say more.
        state.status = "interrupted"
    return state
