"""A smoke run of the benchmarks: ``benchmarks/run_all.py --quick`` runs every part on tiny data.

It checks that every part runs and writes records in the agreed shape and a report with its
tables and plots. It asserts nothing about speed or quality: the numbers of a smoke run on tiny
data mean nothing, and the real ones are in benchmarks/REPORT.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"system", "task", "seed", "epochs", "wall_s", "metric", "value", "config"}


@pytest.mark.timeout(600)
def test_run_all_quick_writes_records_and_a_report(tmp_path):
    committed = (ROOT / "benchmarks" / "REPORT.md").read_bytes()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = {}
    for path in tmp_path.glob("*.json"):
        data = json.loads(path.read_text())
        assert isinstance(data.get("records"), list), path.name
        for r in data["records"]:
            assert FIELDS <= set(r), (path.name, r)
        records[path.stem] = data["records"]
    assert {"quality-digits-s0", "overhead", "scaling", "memory", "gui"} <= set(records)
    systems = {r["system"] for r in records["quality-digits-s0"]}
    # the smoke run keeps one peer (KerasTuner's are in the full run only)
    assert {"miha", "miha-crossover", "baseline-lineage", "baseline-compute", "optuna"} <= systems
    budgets = {r["config"]["budget"] for r in records["quality-digits-s0"] if r["system"] == "optuna"}
    assert budgets == {1, 2, 4}
    for r in records["quality-digits-s0"]:
        assert 0.0 <= r["value"] <= 1.0 and r["epochs"] <= 4 * r["config"]["miha_budget_epochs"]
    report = (tmp_path / "REPORT.md").read_text()
    for heading in ("## Targets", "## 1. Quality on a budget", "## 2. Overhead", "## 3. Memory", "## 4. The app",
                    "## 5. How cost grows"):
        assert heading in report
    assert "| Overhead: MIHA wall ÷ plain training" in report and "smoke run" in report
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "quality_digits.png" in pngs and "memory.png" in pngs
    for name in pngs:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a smoke run never touches the committed report
    assert (ROOT / "benchmarks" / "REPORT.md").read_bytes() == committed
