"""Mutation insight: which changes helped this model, counted over one or several run folders.

For every member of every cycle, the change it made is read from its genes against the main line's
genes when its population started (not from the log's sentence): its *kind* (optimizer, learning
rate, batch size, activation, weight decay, dropout, label smoothing) and its *value* (the optimizer or
activation switched to, the new batch size, the learning-rate factor, the new dropout rate to one
decimal, the decade of a new weight decay or label smoothing, or "off").  For each kind and each value: how often it was tried, how often it
won its cycle, and the mean fitness difference against the cycle's control member (member 0 with
``control_member``), or against the cycle's median fitness where there is no control.  Every number
comes with its count; a member that diverged counts as tried, never as won, and has no difference.

    miha inspect RUN_DIR [RUN_DIR ...] --insight [--json]
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runlog import RunFolder
from .state import RunState, replay


@dataclass
class Tally:
    """What one kind of change (or one value of it) did."""

    tried: int = 0
    won: int = 0
    diffs: list[float] = field(default_factory=list)
    diverged: int = 0

    @property
    def win_rate(self) -> float | None:
        return self.won / self.tried if self.tried else None

    @property
    def mean_diff(self) -> float | None:
        return statistics.fmean(self.diffs) if self.diffs else None

    def to_dict(self) -> dict[str, Any]:
        return {"tried": self.tried, "won": self.won, "diverged": self.diverged, "compared": len(self.diffs),
                "mean_fitness_diff": self.mean_diff}


@dataclass(frozen=True)
class Change:
    """One member's change against its parent: ``kind`` and ``value`` (None for the control)."""

    kind: str
    value: str


def classify(parent: dict[str, Any], genes: dict[str, Any]) -> list[Change]:
    """The gene changes from ``parent`` to ``genes`` (both as ``Genes.to_dict()``); [] when equal."""
    out: list[Change] = []
    if genes.get("optimizer") != parent.get("optimizer"):
        out.append(Change("optimizer", str(genes.get("optimizer"))))
    elif genes.get("learning_rate") != parent.get("learning_rate") and parent.get("learning_rate"):
        factor = float(genes["learning_rate"]) / float(parent["learning_rate"])
        out.append(Change("learning_rate", f"×{factor:.3g}"))
    if genes.get("batch_size") != parent.get("batch_size"):
        out.append(Change("batch_size", str(genes.get("batch_size"))))
    before = parent.get("activations") or {}
    for layer, act in (genes.get("activations") or {}).items():
        if before.get(layer) != act:
            out.append(Change("activation", str(act)))
    # the genes of the second wave: values grouped coarsely, so a value's row counts more than one member
    if genes.get("weight_decay") is not None and genes.get("weight_decay") != parent.get("weight_decay"):
        out.append(Change("weight_decay", _decade(float(genes["weight_decay"]))))
    before = parent.get("dropouts") or {}
    for layer, rate in (genes.get("dropouts") or {}).items():
        if before.get(layer) != rate:
            out.append(Change("dropout", f"{float(rate):.1f}"))
    if genes.get("label_smoothing") is not None and genes.get("label_smoothing") != parent.get("label_smoothing"):
        out.append(Change("label_smoothing", _decade(float(genes["label_smoothing"]))))
    return out


def _decade(value: float) -> str:
    """"off" for 0, else the power of ten below the value ("1e-2" for 0.0161)."""
    return "off" if value <= 0 else f"1e{math.floor(math.log10(value))}"


def _parent_genes(st: RunState, branch_step: int, cycle: int) -> dict[str, Any] | None:
    """The main line's genes when cycle ``cycle``'s population started."""
    for step, genes in zip(st.main_steps, st.main_genes):
        if step == branch_step:
            return genes
    if branch_step == 0 or not st.main_steps:
        return st.config.get("genes_initial") or None
    return None


@dataclass
class Insight:
    """Tallies by kind and by (kind, value), over every run given."""

    runs: list[str] = field(default_factory=list)
    members: int = 0
    by_kind: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_value: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))
    baseline: str = ""

    def add_run(self, run_dir: str | Path) -> None:
        folder = RunFolder(run_dir)
        info = folder.open_existing()
        st = replay(run_dir)
        control = bool((info.get("config") or {}).get("control_member"))
        self.runs.append(str(run_dir))
        baselines = set()
        for cycle in st.cycles():
            members = [b for b in st.members(cycle) if b.trained]
            if not members:
                continue
            fits = [b.fitness for b in members if b.fitness is not None]
            ref: float | None = None
            if control:
                ctl = next((b for b in members if b.member == 0), None)
                ref = ctl.fitness if ctl is not None else None
                baselines.add("the control member")
            elif fits:
                ref = statistics.median(fits)
                baselines.add("the cycle's median")
            winner = st.winners.get(cycle)
            for b in members:
                parent = _parent_genes(st, b.branch_step, cycle) or info.get("genes_initial") or {}
                changes = classify(parent, b.genes)
                if not changes:
                    continue  # the control, or a mutation that could not change anything
                self.members += 1
                won = winner == b.member
                diff = b.fitness - ref if b.fitness is not None and ref is not None and math.isfinite(ref) else None
                for change in changes:
                    for tally in (self.by_kind[change.kind], self.by_value[(change.kind, change.value)]):
                        tally.tried += 1
                        tally.won += won
                        tally.diverged += b.fitness is None
                        if diff is not None:
                            tally.diffs.append(diff)
        self.baseline = " / ".join(sorted(baselines | ({self.baseline} if self.baseline else set())))

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "members": self.members, "baseline": self.baseline,
                "by_kind": {k: t.to_dict() for k, t in sorted(self.by_kind.items())},
                "by_value": [{"kind": k, "value": v, **t.to_dict()}
                             for (k, v), t in sorted(self.by_value.items(), key=lambda kv: (kv[0][0], -kv[1].tried))]}

    def rows(self) -> list[tuple[str, str, Tally]]:
        """(kind, value or "all", tally): each kind, then its values, most tried first."""
        out = []
        for kind, tally in sorted(self.by_kind.items()):
            out.append((kind, "all", tally))
            values = [(v, t) for (k, v), t in self.by_value.items() if k == kind]
            out.extend((kind, v, t) for v, t in sorted(values, key=lambda vt: (-vt[1].tried, vt[0])))
        return out

    def text(self) -> str:
        lines = [f"mutation insight over {len(self.runs)} run(s), {self.members} mutated members; fitness "
                 f"difference against {self.baseline or '—'} (higher is better)",
                 f"  {'kind':<14}{'value':<12}{'tried':>6}{'won':>6}{'win %':>7}{'diverged':>9}{'Δ fitness':>11}{'n':>5}"]
        for kind, value, t in self.rows():
            rate = f"{100 * t.win_rate:.0f}" if t.win_rate is not None else "—"
            diff = f"{t.mean_diff:+.3f}" if t.mean_diff is not None else "—"
            indent = "" if value == "all" else "  "
            lines.append(f"  {indent}{kind if value == 'all' else '':<{14 - len(indent)}}{value:<12}{t.tried:>6}"
                         f"{t.won:>6}{rate:>7}{t.diverged:>9}{diff:>11}{len(t.diffs):>5}")
        return "\n".join(lines)


def insight(run_dirs: list[str | Path]) -> Insight:
    out = Insight()
    for run_dir in run_dirs:
        out.add_run(run_dir)
    return out
