"""Bounded memory by recycling the engine's process: after ``recycle_after`` newly traced models the
loop stops at its checkpoint and a fresh process resumes the run (the CLI re-executes itself, the
app's engine process is replaced by its parent).  The lineage must be exactly the one an
uninterrupted run trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import miha_engine as me
from miha_engine.process import EngineProcess, Job
from miha_engine.testing import dense_classifier

CFG = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3, seed=6,
                   search=me.SearchSpace(kinds=("activation", "optimizer")))


def _lineage(run_dir):
    return [(r["step"], r["phase"], r["loss"], r["val_loss"]) for r in me.RunFolder(run_dir).read_history()]


def _kinds(run_dir):
    return [json.loads(line)["kind"] for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_a_recycled_engine_trains_exactly_the_lineage_of_an_uninterrupted_run(tmp_path, small_digits):
    x, y, xt, yt = small_digits
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=y, x_test=xt, y_test=yt)
    model = tmp_path / "m.keras"
    dense_classifier(hidden=8).save(model)
    # the Python API never recycles: the reference lineage
    ref = me.run(str(model), str(data), CFG.replace(recycle_after=1), run_dir=tmp_path / "api")
    assert ref.status == "finished" and "run_resumed" not in _kinds(tmp_path / "api")

    # the CLI replaces itself by 'miha resume' after cycle 1 (every new model counts: 1 is reached at once)
    out = subprocess.run([sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data),
                          "-m", "1", "-n", "1", "-k", "1", "-c", "2", "-p", "3", "--seed", "6",
                          "--search", "activation,optimizer", "--recycle-after", "1", "--run-dir",
                          str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "models traced; restarting the engine to give its memory back" in out.stderr
    assert json.loads(out.stdout)["status"] == "finished"
    kinds = _kinds(tmp_path / "cli")
    assert kinds.count("run_resumed") == 1 and kinds[-1] == "run_finished"
    assert _lineage(tmp_path / "cli") == _lineage(tmp_path / "api")

    # the app's engine process: its parent starts the fresh child, and the caller sees one run
    engine = EngineProcess(Job("run", {"model": str(model), "data": str(data), "config": CFG.replace(recycle_after=1),
                                       "run_dir": str(tmp_path / "app")}))
    engine.start()
    seen = []
    outcome = engine.pump(seen.append)
    assert outcome[0] == "done" and outcome[1].status == "finished", outcome
    assert engine.recycled == 1
    assert any(getattr(e, "kind", "") == "run_resumed" for e in seen)
    assert _lineage(tmp_path / "app") == _lineage(tmp_path / "api")
    info = json.loads((tmp_path / "app" / "run.json").read_text())
    assert info["status"] == "finished"


def test_a_process_whose_memory_grows_past_its_budget_restarts_and_the_lineage_is_unchanged(tmp_path, small_digits):
    # no model count is reached (recycle_after 0): the trigger is the process's own RSS, read at each
    # cycle's end against its second cycle's. A listener holds 96 MB of touched memory from cycle 3 on,
    # so at the end of cycle 4 (the first check: a process runs 4 cycles before it may restart) the
    # growth passes the 48 MB budget (and 11 cycles remain: near its end a run never restarts for
    # memory); the run stops at that checkpoint and resumes exactly
    from miha_engine.errors import RecycleRequested
    from miha_engine.runner import allow_recycling, current_rss_mb

    assert current_rss_mb() is not None  # Linux: /proc (or psutil)
    x, y, xt, yt = small_digits
    data = me.from_arrays(x, y, x_test=xt, y_test=yt)
    cfg = CFG.replace(cycles=15, population_size=2, recycle_after=0, recycle_rss_mb=48)
    ref = me.run(dense_classifier(hidden=8), data, cfg, run_dir=tmp_path / "ref")
    assert ref.status == "finished"

    held: list[np.ndarray] = []

    def hog(e):
        if getattr(e, "kind", "") == "cycle_done" and e.cycle == 3 and not held:
            held.append(np.ones(96 * 2**20 // 8))

    seen: list = []
    allow_recycling(True)
    try:
        with pytest.raises(RecycleRequested) as req:
            me.run(dense_classifier(hidden=8), data, cfg, run_dir=tmp_path / "run", listeners=[hog, seen.append])
    finally:
        allow_recycling(False)
    assert req.value.cycle == 4 and req.value.why.startswith("memory grew ")
    assert any("recycle_rss_mb" in getattr(e, "message", "") for e in seen)
    held.clear()
    res = me.resume(tmp_path / "run", data)
    assert res.status == "finished"
    assert _lineage(tmp_path / "run") == _lineage(tmp_path / "ref")
    # the same growth in a run of 12 cycles (8 left after cycle 4): no restart is worth it there
    allow_recycling(True)
    try:
        short = me.run(dense_classifier(hidden=8), data, cfg.replace(cycles=12), run_dir=tmp_path / "short",
                       listeners=[hog])
    finally:
        allow_recycling(False)
        held.clear()
    assert short.status == "finished"
