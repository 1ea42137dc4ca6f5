"""Compare run folders: their main-line validation curves and final test metrics, side by side.

Runs of the same task (forks of one another, or unrelated runs of one model on one dataset) compare
directly; a run of another task (other data, another model's layers or output) is shown but flagged,
because its numbers mean something else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runlog import RunFolder
from .state import replay


@dataclass
class RunSummary:
    """What the comparison shows of one run folder."""

    path: Path
    name: str
    status: str
    steps: list[int]
    val_losses: list[float]
    test: dict[str, float]
    best_val: float | None
    epochs: int
    task: tuple
    task_text: str
    forked_from: str | None = None
    flag: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _task(info: dict[str, Any]) -> tuple[tuple, str]:
    """What must match for two runs' numbers to be comparable: the data and the model's shape."""
    data = info.get("data") or {}
    source = Path(info.get("data_source") or "arrays in memory").name
    layers = tuple(sorted((info.get("genes_initial") or {}).get("activations", {})))
    loss = (info.get("config") or {}).get("loss")
    key = (source, data.get("train"), data.get("validation"), data.get("test"), layers, loss)
    text = f"{source} ({data.get('train')} train / {data.get('test')} test), layers {', '.join(layers) or '—'}"
    return key, text


def summarize_run(run_dir: str | Path) -> RunSummary:
    folder = RunFolder(run_dir)
    info = folder.open_existing()
    st = replay(run_dir)
    vals = [v if v == v else loss for v, loss in zip(st.main_val_losses, st.main_losses)]
    finite = [v for v in vals if math.isfinite(v)]
    test = (info.get("test_metrics") or {}).get("final") or {}
    key, text = _task(info)
    fork = info.get("forked_from")
    return RunSummary(path=folder.root, name=folder.root.name, status=info.get("status", st.status),
                      steps=list(st.main_steps), val_losses=vals, test={k: float(v) for k, v in test.items()},
                      best_val=min(finite) if finite else None, epochs=st.epochs_done, task=key, task_text=text,
                      forked_from=f"{Path(fork['run']).name}/{fork['archive']}" if fork else None)


def compare(run_dirs: list[str | Path]) -> list[RunSummary]:
    """Summaries in the order given; every run whose task differs from the first's is flagged."""
    runs = [summarize_run(p) for p in run_dirs]
    if runs:
        first = runs[0]
        for r in runs[1:]:
            if r.task != first.task:
                r.flag = f"different task: {r.task_text} (the first run: {first.task_text})"
    return runs
