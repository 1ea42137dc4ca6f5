"""Seeing and steering the search from the engine's side: mutation insight, forks and live edits
(the app's views of them are in test_gui.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import miha_engine as me
from miha_engine import events as ev
from miha_engine.insight import classify, insight
from miha_engine.runlog import read_events
from miha_engine.runner import LiveEdits, fork, resume, run
from miha_engine.testing import FakeBackend, dense_classifier

CFG = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=4, population_size=4, seed=3,
                   control_member=False, selection="fittest")  # the plain rule unless a test turns the control on


def _fake_run(tmp_path, cfg=CFG, name="run", **kw):
    return run(None, None, cfg, run_dir=tmp_path / name, backend=FakeBackend(cfg), **kw)


def test_insight_classifies_every_gene_a_member_may_mutate():
    # weight decay, dropout rates and label smoothing are genes too: a member that changed only one of
    # them is a mutated member of that kind (the app's Insight tab left them out)
    parent = {"optimizer": "adam", "learning_rate": 0.001, "batch_size": 32, "activations": {"h": "relu"},
              "weight_decay": 0.0, "dropouts": {"drop": 0.2}, "label_smoothing": 0.0}
    assert classify(parent, dict(parent)) == []
    changes = classify(parent, {**parent, "weight_decay": 0.0161, "dropouts": {"drop": 0.45},
                                "label_smoothing": 0.1})
    assert [(c.kind, c.value) for c in changes] == [("weight_decay", "1e-2"), ("dropout", "0.5"),
                                                    ("label_smoothing", "1e-1")]
    assert [(c.kind, c.value) for c in classify({**parent, "weight_decay": 0.3}, parent)] == [("weight_decay", "off")]
    # a run made before these genes existed has none of them: nothing is counted for them
    old = {k: parent[k] for k in ("optimizer", "learning_rate", "batch_size", "activations")}
    assert classify(old, {**old, "batch_size": 64}) == [classify(parent, {**parent, "batch_size": 64})[0]]


def test_insight_counts_match_the_journal(tmp_path):
    _fake_run(tmp_path)
    _fake_run(tmp_path, CFG.replace(seed=4, control_member=True), name="ctl")
    result = insight([tmp_path / "run", tmp_path / "ctl"])
    # count every mutated member and every win straight from the journal
    tried: dict[str, int] = {}
    won: dict[str, int] = {}
    members = 0
    for name in ("run", "ctl"):
        events = list(read_events(tmp_path / name / "events.jsonl"))
        genes = next(e.genes for e in events if isinstance(e, ev.RunStarted))
        winners = {e.cycle: e.winner for e in events if isinstance(e, ev.CycleDone)}
        parent = genes
        for e in events:
            if isinstance(e, ev.MemberTrained):
                kinds = {c.kind for c in classify(parent, e.genes)}
                members += bool(kinds)
                for k in kinds:
                    tried[k] = tried.get(k, 0) + 1
                    won[k] = won.get(k, 0) + (winners[e.cycle] == e.member)
            elif isinstance(e, ev.CycleDone):
                parent = e.genes
    assert result.members == members > 0
    assert {k: t.tried for k, t in result.by_kind.items()} == tried
    assert {k: t.won for k, t in result.by_kind.items()} == won
    # each value's counts add up to its kind's, and no number comes without its count
    for kind, tally in result.by_kind.items():
        assert sum(t.tried for (k, _), t in result.by_value.items() if k == kind) >= tally.tried
    for row in result.to_dict()["by_value"]:
        assert row["tried"] >= 1 and (row["mean_fitness_diff"] is None) == (row["compared"] == 0)
    assert "the control member" in result.baseline and "the cycle's median" in result.baseline
    cli = subprocess.run([sys.executable, "-m", "miha_engine", "inspect", str(tmp_path / "run"), str(tmp_path / "ctl"),
                          "--insight", "--json"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and json.loads(cli.stdout)["members"] == members


def test_a_live_edit_changes_the_next_cycle_and_not_the_current_one(tmp_path):
    edits = LiveEdits()

    def on_event(e):
        if isinstance(e, ev.MemberStarted) and (e.cycle, e.member) == (2, 0):
            edits.request(population_size=2, candidate_epochs=3,
                          search={"kinds": ["learning_rate"]})

    res = _fake_run(tmp_path, listeners=[on_event], edits=edits)
    pop = res.population
    assert [len([k for k in pop[c] if k != "_cycle"]) for c in ("1", "2", "3", "4")] == [4, 4, 2, 2]
    assert all(len(m["losses"]) == 2 for k, m in pop["2"].items() if k != "_cycle")
    assert all(len(m["losses"]) == 3 for k, m in pop["3"].items() if k != "_cycle")
    assert all(m["change"].startswith("learning rate") for c in ("3", "4") for k, m in pop[c].items() if k != "_cycle")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["population_size"] == 2 and info["config"]["search"]["kinds"] == ["learning_rate"]
    assert len(res.history) == 2 * 1 + 2 * (2 + 1) + 2 * (3 + 1) == info["lineage_epochs"]
    changed = [e for e in read_events(tmp_path / "run" / "events.jsonl") if isinstance(e, ev.ConfigChanged)]
    assert len(changed) == 1 and changed[0].cycle == 3 and changed[0].changes["population_size"] == 2
    # an edit the configuration refuses is noted and changes nothing
    edits2 = LiveEdits()
    edits2.request(search={"hidden_activations": ["softmax"]})
    res2 = _fake_run(tmp_path, name="refused", edits=edits2)
    assert len([k for k in res2.population["1"] if k != "_cycle"]) == 4
    notes = [e.message for e in read_events(tmp_path / "refused" / "events.jsonl") if isinstance(e, ev.Note)]
    assert any("edit was refused" in n and "softmax" in n for n in notes)


def test_resume_takes_live_overrides_from_the_next_cycle(tmp_path):
    token = me.CancelToken()
    run(None, None, CFG, run_dir=tmp_path / "run", cancel=token, backend=FakeBackend(CFG, cancel=token),
        listeners=[lambda e: isinstance(e, ev.MemberStarted) and e.cycle == 3 and token.cancel()])
    root = tmp_path / "run"
    with pytest.raises(me.ConfigError, match="cannot be a hidden layer's activation"):
        resume(root, execution={"search": {"hidden_activations": ["softmax"]}}, backend=FakeBackend.for_resume(root))
    res = resume(root, execution={"population_size": 2}, backend=FakeBackend.for_resume(root))
    assert [len([k for k in res.population[c] if k != "_cycle"]) for c in ("1", "2", "3", "4")] == [4, 4, 2, 2]


def test_a_fork_starts_from_the_archives_exact_state_and_numbering(tmp_path, ds):
    from miha_engine.models import load_model

    cfg = CFG.replace(cycles=2, population_size=2)
    run(dense_classifier(), ds, cfg, run_dir=tmp_path / "parent")
    parent = tmp_path / "parent"
    before = {p.name: p.stat().st_mtime_ns for p in parent.rglob("*")}
    member = parent / "population" / "1_1_model.keras"
    # no cycle and no final epoch left: the fork's final model is the state it started from, exactly
    still = fork(parent, member, tmp_path / "still", data=ds, changes={"cycles": 1, "runup_epochs": 0})
    a, b = load_model(member), load_model(still.final_model)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.optimizer.variables, b.optimizer.variables))
    # with a cycle more than the parent had, the fork trains cycles 2 and 3 from the member
    res = fork(parent, "1_1_model.keras", tmp_path / "more", data=ds, changes={"cycles": 3})
    info = json.loads((tmp_path / "more" / "run.json").read_text())
    assert res.status == "finished" and sorted(res.population, key=int) == ["2", "3"]
    assert info["forked_from"]["archive"] == "population/1_1_model.keras" and info["forked_from"]["cycle"] == 1
    pop = json.loads((parent / "population.json").read_text())
    assert res.history[0]["step"] == info["forked_from"]["step"] + 1 == cfg.runup_epochs + cfg.candidate_epochs + 1
    assert info["genes_initial"] == pop["1"]["1"]["genes"]
    assert {p.name: p.stat().st_mtime_ns for p in parent.rglob("*")} == before  # the parent is only read
    with pytest.raises(me.RunFolderError, match="is not an archive of"):
        fork(parent, "9_9_model.keras", tmp_path / "x", data=ds)
    foreign = tmp_path / "elsewhere" / "model_1.keras"  # an archive's name, another run's file
    foreign.parent.mkdir()
    dense_classifier().save(foreign)
    with pytest.raises(me.RunFolderError, match="does not belong to the run"):
        fork(parent, foreign, tmp_path / "y", data=ds)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert math.isfinite(res.history[-1]["loss"])


def _fake_fork(parent, archive, new, cfg, **kw):
    return fork(parent, archive, new, changes=kw.pop("changes", None),
                backend=FakeBackend.from_archive(kw.pop("config", cfg), Path(parent) / archive, **kw.pop("fb", {})), **kw)


def test_forks_resume_where_they_started_and_keep_the_parents_settings_at_that_point(tmp_path, monkeypatch):
    edits = LiveEdits()
    cfg = CFG.replace(cycles=4)

    def late_edit(e):  # the parent changes pop_size from cycle 4 on
        if isinstance(e, ev.MemberStarted) and (e.cycle, e.member) == (3, 0):
            edits.request(population_size=2)

    _fake_run(tmp_path, cfg, name="parent", listeners=[late_edit], edits=edits)
    parent = tmp_path / "parent"
    # a fork from model_2 uses the settings in force there (pop_size 4), not the later edit
    whole = _fake_fork(parent, "model/model_2.keras", tmp_path / "whole", cfg)
    assert [len([k for k in whole.population[c] if k != "_cycle"]) for c in ("3", "4")] == [4, 4]
    # stopped in its first cycle, a fork resumes from where it started, with the same lineage
    token = me.CancelToken()
    _fake_fork(parent, "model/model_2.keras", tmp_path / "stopped", cfg, cancel=token, fb={"cancel": token},
               listeners=[lambda e: isinstance(e, ev.MemberStarted) and e.member == 1 and token.cancel()])
    res = resume(tmp_path / "stopped", backend=FakeBackend.for_resume(tmp_path / "stopped"))
    assert [r["step"] for r in res.history] == [r["step"] for r in whole.history]
    assert res.history == whole.history
    # a fork's schedule would start mid-lineage: refused with the reason
    from miha_engine.errors import ScheduleError
    from miha_engine.schedule import schedule_from_run

    with pytest.raises(ScheduleError, match="is a fork"):
        schedule_from_run(tmp_path / "whole")
    # relative run folder, absolute archive path
    monkeypatch.chdir(tmp_path)
    rel = _fake_fork("parent", str(parent / "model" / "model_1.keras"), tmp_path / "mixed", cfg)
    assert rel.status == "finished" and json.loads((tmp_path / "mixed" / "run.json").read_text())[
        "forked_from"]["archive"] == "model/model_1.keras"


def test_fork_points_without_fixing_or_run_up(tmp_path):
    cfg = CFG.replace(cycles=2, fixing_epochs=0, runup_epochs=0, crossover=True,
                      search=me.SearchSpace(kinds=("learning_rate", "batch_size")))
    res = _fake_run(tmp_path, cfg, name="p")
    parent = tmp_path / "p"
    init = _fake_fork(parent, "model/model_init.keras", tmp_path / "f0", cfg)
    assert init.status == "finished" and sorted(init.population, key=int) == ["1", "2"]
    after1 = json.loads((parent / "population.json").read_text())["1"]["_cycle"]
    f1 = _fake_fork(parent, "model/model_1.keras", tmp_path / "f1", cfg)
    forked = json.loads((tmp_path / "f1" / "run.json").read_text())["forked_from"]
    from miha_engine.state import replay as replay_events

    assert forked["parent_genes"] == replay_events(parent).cycle_genes[1]  # the decision's genes, child or winner
    assert f1.status == "finished" and after1["winner"] >= 0 and res.status == "finished"


def test_a_resume_keeps_a_live_edit_that_is_in_force(tmp_path):
    edits = LiveEdits()
    token = me.CancelToken()

    def on_event(e):
        if isinstance(e, ev.MemberStarted) and (e.cycle, e.member) == (2, 0):
            edits.request(population_size=2)
        if isinstance(e, ev.MemberStarted) and (e.cycle, e.member) == (3, 1):
            token.cancel()  # stopped inside the first edited cycle: the resume starts it again

    run(None, None, CFG, run_dir=tmp_path / "run", cancel=token, backend=FakeBackend(CFG, cancel=token),
        listeners=[on_event], edits=edits)
    res = resume(tmp_path / "run", backend=FakeBackend.for_resume(tmp_path / "run"))
    from miha_engine.state import replay as replay_events

    assert replay_events(tmp_path / "run").edits == {3: {"population_size": 2}}
    assert [len([k for k in res.population[c] if k != "_cycle"]) for c in ("1", "2", "3", "4")] == [4, 4, 2, 2]


def test_a_stopped_replay_is_cancelled_and_not_resumable(tmp_path, ds):
    from miha_engine.schedule import replay, write_schedule

    _fake_run(tmp_path, CFG, name="run")
    schedule = write_schedule(tmp_path / "run", tmp_path / "s.toml")
    token = me.CancelToken()
    res = replay(schedule, None, None, run_dir=tmp_path / "replay", cancel=token,
                 backend=FakeBackend(CFG.replace(cycles=0), cancel=token),
                 listeners=[lambda e: isinstance(e, ev.EpochEnded) and e.step == 3 and token.cancel()])
    assert res.status == "cancelled"
    assert json.loads((tmp_path / "replay" / "run.json").read_text())["status"] == "cancelled"
    with pytest.raises(me.RunFolderError, match="replay of a schedule, which cannot be resumed"):
        resume(tmp_path / "replay", backend=FakeBackend(CFG))
