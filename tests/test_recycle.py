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
    assert "restarting the engine to give their memory back" in out.stderr
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
