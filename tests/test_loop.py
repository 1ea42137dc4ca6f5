"""The MIHA loop on a fake training set-up (numpy, closed-form losses): selection, ties, crossover,
divergence, the derived records and resume truncation, in milliseconds and without TensorFlow.

The loop is the same code that drives Keras; only the :class:`~miha_engine.backend.Backend` differs
(``miha_engine.testing.FakeBackend``).  Tests that need real training live in test_run.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import miha_engine as me
from miha_engine import config as config_module
from miha_engine import events as ev
from miha_engine.evaluators import LocalEvaluator
from miha_engine.runner import resume, run
from miha_engine.state import replay
from miha_engine.testing import FakeBackend

# the plain rule (no control, the fittest wins) unless a test says otherwise; the noise rule has its own tests
CFG = me.RunConfig(runup_epochs=2, candidate_epochs=3, fixing_epochs=1, cycles=4, population_size=4, seed=7,
                   control_member=False, selection="fittest")
NAN = math.nan


def _run(tmp_path, cfg=CFG, name="run", script=None, listeners=(), cancel=None, **kw):
    backend = FakeBackend(cfg, script=script, cancel=cancel, **kw)
    events: list[ev.Event] = []
    res = run(None, None, cfg, run_dir=tmp_path / name, listeners=[events.append, *listeners], cancel=cancel,
              backend=backend)
    return res, events, backend


def _decisions(res):
    return {int(c): v["_cycle"] for c, v in res.population.items()}


def test_the_loop_runs_without_tensorflow(tmp_path):
    res, events, _ = _run(tmp_path)
    assert res.status == "finished"
    assert len(res.history) == CFG.lineage_epochs
    assert sum(isinstance(e, ev.EpochEnded) for e in events) == CFG.total_epochs
    # in a fresh interpreter (this one may have loaded TensorFlow for other tests): no TensorFlow
    code = ("import sys, miha_engine as me; from miha_engine.testing import FakeBackend; "
            "cfg = me.RunConfig(cycles=2); "
            f"res = me.run(None, None, cfg, run_dir={str(tmp_path / 'fresh')!r}, backend=FakeBackend(cfg)); "
            "print(res.status, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["finished", "False", "False"], out.stderr


def test_the_best_curve_wins_and_its_epochs_join_the_lineage(tmp_path):
    script = {(1, 0): [0.9, 0.8, 0.7], (1, 1): [0.9, 0.5, 0.3], (1, 2): [0.9, 0.8, 0.75], (1, 3): [0.9, 0.85, 0.8]}
    res, _, _ = _run(tmp_path, script=script)
    assert _decisions(res)[1]["winner"] == 1
    assert res.population["1"]["1"]["chosen"] and not res.population["1"]["0"]["chosen"]
    member_rows = [r for r in res.history if r["phase"] == "member" and r["cycle"] == 1]
    assert [r["val_loss"] for r in member_rows] == [0.9, 0.5, 0.3]
    assert [r["genes"] for r in member_rows] == [res.population["1"]["1"]["genes"]] * 3
    # the next phase continues from the winner's state: the first fixing epoch improves on 0.3
    fixing = [r for r in res.history if r["phase"] == "fixing" and r["cycle"] == 1][0]
    assert fixing["val_loss"] < 0.3 and fixing["step"] == member_rows[-1]["step"] + 1


def test_equal_fitness_goes_to_the_lower_index_in_any_finishing_order(tmp_path, monkeypatch):
    curve = [0.9, 0.6, 0.4]
    script = {(1, i): curve for i in range(4)}
    res, _, _ = _run(tmp_path, script=script)
    assert _decisions(res)[1]["winner"] == 0
    # an evaluator that finishes members last-first: the same winner, the same folder
    monkeypatch.setitem(config_module.EVALUATOR_CLASSES, "reversed", f"{__name__}:ReversedEvaluator")
    res2, _, _ = _run(tmp_path, CFG.replace(evaluator="reversed"), name="reversed", script=script)
    assert _decisions(res2)[1]["winner"] == 0
    assert [r["val_loss"] for r in res2.history] == [r["val_loss"] for r in res.history]
    assert list(res2.population["1"]) == ["0", "1", "2", "3", "_cycle"]  # sorted, whatever the order


class ReversedEvaluator(LocalEvaluator):
    """A third evaluator, registered from outside the engine: members finish last-first."""

    name = "reversed"

    def members(self, parent, jobs, listener):
        yield from super().members(parent, list(reversed(jobs)), listener)


def test_a_control_member_that_ties_keeps_the_parents_genes(tmp_path):
    cfg = CFG.replace(control_member=True, cycles=1)
    script = {(1, i): [0.9, 0.6, 0.4] for i in range(4)}
    res, _, _ = _run(tmp_path, cfg, script=script)
    assert _decisions(res)[1]["winner"] == 0
    assert res.population["1"]["0"]["change"] == "control: unchanged"
    assert res.genes.to_dict() == res.population["1"]["0"]["genes"]


NOISY = CFG.replace(control_member=True, selection="noise", cycles=2, population_size=4)


def test_the_noise_rule_keeps_the_parents_genes_when_mutants_only_tie(tmp_path):
    # the control's own curve wobbles by about 5% from epoch to epoch; mutants end 1-2% lower
    script = {(1, 0): [0.50, 0.46, 0.49], (1, 1): [0.50, 0.47, 0.485], (1, 2): [0.49, 0.47, 0.482],
              (1, 3): [0.52, 0.48, 0.488]}
    res, events, _ = _run(tmp_path, NOISY, script=script)
    plain, _, _ = _run(tmp_path, NOISY.replace(selection="fittest"), name="plain", script=script)
    assert _decisions(plain)[1]["winner"] == 2  # the fittest rule is fooled by the noise
    assert _decisions(res)[1]["winner"] == 0
    done = [e for e in events if isinstance(e, ev.CycleDone)]
    assert done[0].rule == "noise" and done[0].margin > 0 and done[0].plateau
    assert done[0].decision.startswith("noise rule: the control keeps the parent's genes")
    assert "member 2" in done[0].decision and "plateau" in done[0].decision
    assert "spread" in done[0].decision and "in log val_loss" in done[0].decision  # names what it measured
    assert "for the best of 3 mutants" in done[0].decision  # and the correction for picking the best of three
    assert done[0].genes == res.population["1"]["0"]["genes"] and res.population["1"]["_cycle"]["plateau"]
    # after the plateau the next population explores, and says so
    notes = [e.message for e in events if isinstance(e, ev.Note)]
    assert any(n.startswith("cycle 2: every member of cycle 1 tied with the control") for n in notes), notes
    changes = [res.population["2"][str(i)]["change"] for i in range(4)]
    assert changes[0] == "control: unchanged"
    assert changes[1].startswith("explore:") and changes[3].startswith("explore:")
    assert not changes[2].startswith("explore:")
    # without exploration the same cycle mutates as usual
    calm, _, _ = _run(tmp_path, NOISY.replace(explore_on_plateau=False), name="calm", script=script)
    assert not any(calm.population["2"][str(i)]["change"].startswith("explore:") for i in range(4))


def test_the_noise_rule_lets_a_clearly_better_mutant_replace_the_control(tmp_path):
    script = {(1, 0): [0.50, 0.46, 0.49], (1, 1): [0.45, 0.30, 0.20], (1, 2): [0.49, 0.47, 0.48],
              (1, 3): [0.52, 0.48, 0.488]}
    res, events, _ = _run(tmp_path, NOISY, script=script)
    done = [e for e in events if isinstance(e, ev.CycleDone)][0]
    assert done.winner == 1 and not done.plateau
    assert done.decision.startswith("noise rule: member 1") and "beats the control by" in done.decision
    gain = float(done.decision.split("beats the control by ")[1].split(" ")[0])
    assert gain > done.margin


def test_model_best_holds_the_lineage_state_with_the_lowest_validation_loss(tmp_path):
    # the winner of cycle 1 reaches 0.1 at its last member epoch; with no fixing epochs every later
    # epoch of the lineage is worse: model_best is that member's state, copied from its archive
    script = {(1, 0): [0.9, 0.5, 0.1], (1, 1): [0.9, 0.9, 0.9], (1, 2): [0.95, 0.95, 0.95], (1, 3): [1, 1, 1],
              (2, 0): [0.9, 0.8, 0.7], (2, 1): [0.9, 0.8, 0.7], (2, 2): [0.9, 0.8, 0.6], (2, 3): [1, 1, 1]}
    res, events, _ = _run(tmp_path, CFG.replace(cycles=2, fixing_epochs=0), script=script)
    root = tmp_path / "run"
    best = json.loads((root / "model" / "model_best.keras").read_text())
    vals = [r["val_loss"] for r in res.history]
    assert min(vals) == pytest.approx(0.1)
    # the archive holds the state whose val loss was lowest: the fake's val loss is (floor + d) * 1.05
    assert (0.05 + best["distance"]) * 1.05 == pytest.approx(0.1)
    info = json.loads((root / "run.json").read_text())
    step = [r["step"] for r in res.history if r["val_loss"] == min(vals)][0]
    assert info["best_model"]["lineage_epoch"] == step and info["best_model"]["path"] == "model/model_best.keras"
    assert set(info["test_metrics"]) == {"initial", "final", "best"}
    assert info["test_metrics"]["best"]["loss"] < info["test_metrics"]["final"]["loss"]
    assert me.RunFolder(root).best_archive("best") == root / "model" / "model_best.keras"
    # drop_intermediate keeps it
    assert (root / "model" / "model_best.keras").read_bytes() == (root / "population" / "1_0_model.keras").read_bytes()
    res2, _, _ = _run(tmp_path, CFG.replace(cycles=2, drop_intermediate=True), name="drop", script=script)
    assert sorted(p.name for p in (tmp_path / "drop" / "model").iterdir()) == ["model_best.keras",
                                                                              "model_final.keras"]


def test_when_the_last_epoch_is_the_best_its_test_metrics_are_not_computed_twice(tmp_path, monkeypatch):
    def not_twice(self, path):
        raise AssertionError("model_best is the final state: no second evaluation")

    monkeypatch.setattr(FakeBackend, "archive_test_metrics", not_twice)
    res, _, _ = _run(tmp_path, CFG.replace(cycles=1))  # the fake's lineage improves at every epoch
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["best_model"]["lineage_epoch"] == CFG.replace(cycles=1).lineage_epochs
    assert info["test_metrics"]["best"] == info["test_metrics"]["final"]


def test_diverged_members_are_never_chosen_and_all_diverged_keeps_the_parent(tmp_path):
    script = {(1, 0): [0.9, NAN, NAN], (1, 1): [0.5, 0.4, 0.35], (1, 2): [NAN, NAN, NAN], (1, 3): [0.9, 0.9, 0.9]}
    script.update({(2, i): [NAN] * 3 for i in range(4)})
    res, events, _ = _run(tmp_path, script=script)
    assert _decisions(res)[1]["winner"] == 1
    assert res.population["1"]["0"]["fitness"] is None and res.population["1"]["2"]["fitness"] is None
    assert _decisions(res)[2] == {"decision": "every member diverged: the model from before the population is kept",
                                  "winner": -1}
    # the kept cycle adds no member epochs: the lineage is n epochs shorter than planned
    assert len(res.history) == CFG.lineage_epochs - CFG.candidate_epochs
    assert [r["step"] for r in res.history] == list(range(1, len(res.history) + 1))
    notes = [e.message for e in events if isinstance(e, ev.Note)]
    assert any("member 0" in n and "NaN" in n for n in notes)
    assert not (tmp_path / "run" / "population" / "1_0_model.keras").exists()  # a diverged member leaves no archive


def test_crossover_keeps_a_child_that_is_no_worse_and_rejects_one_that_is(tmp_path):
    cfg = CFG.replace(crossover=True, cycles=2, search=me.SearchSpace(kinds=("activation", "learning_rate")))
    res, _, _ = _run(tmp_path, cfg)
    decisions = [d["decision"] for d in _decisions(res).values()]
    assert all(d.startswith(("crossover:", "selection:")) for d in decisions)
    kept = [c for c, d in _decisions(res).items() if d["decision"].startswith("crossover:")]
    for c in kept:  # an accepted child is saved beside the members
        assert (tmp_path / "run" / "population" / f"{c}_child_model.keras").exists()
    # the fake's holdout loss ignores genes, so a child with the fitter parent's weights ties it: kept
    assert kept, decisions
    # averaged weights of a much worse second member make a worse child: rejected
    script = {(1, 0): [0.9, 0.2, 0.1], (1, 1): [2.0, 1.9, 1.8], (1, 2): [3.0, 2.9, 2.8], (1, 3): [4.0, 3.9, 3.8]}
    res2, _, _ = _run(tmp_path, cfg.replace(crossover_weights="average", cycles=1), name="avg", script=script)
    d = _decisions(res2)[1]["decision"]
    assert d.startswith("selection: member 0") and ("rejected" in d or "adds nothing new" in d)


def test_history_and_population_are_views_of_the_journal(tmp_path):
    seen_population = []

    def on_event(e):
        if isinstance(e, ev.MemberTrained) and e.cycle == 2:
            seen_population.append(json.loads((tmp_path / "run" / "population.json").read_text()))

    res, _, _ = _run(tmp_path, listeners=[on_event])
    root = tmp_path / "run"
    # written at checkpoints, not after every member: during cycle 2 the file holds cycle 1 only
    assert seen_population and all(set(p) == {"1"} for p in seen_population)
    st = replay(root)
    assert me.RunFolder(root).read_history() == st.history_rows() == res.history
    assert json.loads((root / "population.json").read_text()) == st.population() == res.population


@pytest.mark.parametrize("stop_at", [("runup", 0, None), ("member", 2, 1), ("fixing", 3, None)])
def test_resume_after_a_stop_gives_the_uninterrupted_lineage(tmp_path, stop_at):
    reference, _, _ = _run(tmp_path, name="reference")
    phase, cycle, member = stop_at
    token = me.CancelToken()

    def stop(e):
        if isinstance(e, ev.EpochEnded) and (e.phase, e.cycle, e.member) == (phase, cycle, member):
            token.cancel()

    stopped, _, _ = _run(tmp_path, name="run", listeners=[stop], cancel=token)
    root = tmp_path / "run"
    assert stopped.status == "cancelled"
    done = {int(c) for c in json.loads((root / "population.json").read_text())}
    assert set(range(1, cycle)) <= done <= set(range(1, cycle + 1))  # the views hold what the journal holds
    res = resume(root, backend=FakeBackend.for_resume(root))
    assert res.status == "finished"
    for got, want in zip(res.history, reference.history, strict=True):
        assert got == want
    assert res.population == reference.population
    st = replay(root)
    assert st.history_rows() == reference.history and st.status == "finished"


def test_resume_may_change_only_how_members_train(tmp_path):
    token = me.CancelToken()
    _run(tmp_path, listeners=[lambda e: isinstance(e, ev.CycleDone) and token.cancel()], cancel=token)
    root = tmp_path / "run"
    with pytest.raises(me.InputError, match="resume can change how members train"):
        resume(root, execution={"cycles": 9}, backend=FakeBackend.for_resume(root))
    assert json.loads((root / "run.json").read_text())["status"] == "cancelled"  # untouched
    res = resume(root, execution={"steps_per_execution": 4, "jit_compile": False},
                 backend=FakeBackend.for_resume(root))
    info = json.loads((root / "run.json").read_text())
    assert res.status == "finished" and info["config"]["steps_per_execution"] == 4
    assert info["config"]["jit_compile"] is False


def test_the_final_phase_anneals_the_learning_rate_unless_told_not_to(tmp_path):
    res, events, backend = _run(tmp_path, CFG.replace(runup_epochs=4, cycles=1))
    *earlier, final = backend.lr_schedules
    assert earlier == [None, None]  # the run-up and the fixing phase train at the genes' rate
    lr = res.genes.learning_rate
    assert final[0] == pytest.approx(lr) and all(a > b for a, b in zip(final, final[1:]))
    assert lr * CFG.final_anneal < final[-1] < lr / 4
    assert any(isinstance(e, ev.Note) and e.message.startswith("final phase: the learning rate anneals") for e in events)
    _, _, constant = _run(tmp_path, CFG.replace(runup_epochs=4, cycles=1, final_anneal=1.0), name="constant")
    assert constant.lr_schedules[-1] is None


def test_a_soup_averages_members_only_when_that_lowers_the_validation_loss(tmp_path):
    # the noise rule keeps the control (0.49); members 1 and 2 end lower but only within the noise.
    # The fake's validation loss is linear in its one weight, so averaging the control with member 2
    # (0.482) lowers it, while adding member 3 (0.488, worse than the running mean) does not.
    script = {(1, 0): [0.50, 0.46, 0.49], (1, 1): [0.50, 0.47, 0.485], (1, 2): [0.49, 0.47, 0.482],
              (1, 3): [0.52, 0.48, 0.488]}
    cfg = NOISY.replace(soup=True, cycles=1, fixing_epochs=0, explore_on_plateau=False)
    res, events, backend = _run(tmp_path, cfg, script=script)
    done = [e for e in events if isinstance(e, ev.CycleDone)][0]
    assert done.winner == 0 and "soup: the weights of members 0, 1, 2 averaged" in done.decision, done.decision
    distance = [v / FakeBackend.val_factor - FakeBackend.floor for v in (0.49, 0.485, 0.482)]
    root = tmp_path / "run"
    saved = json.loads((root / "population" / "1_child_model.keras").read_text())
    assert saved["distance"] == pytest.approx(sum(distance) / 3)
    # the lineage continues from the soup: model_1 (no fixing epochs) is the soup, and model_best too
    assert json.loads((root / "model" / "model_1.keras").read_text())["distance"] == pytest.approx(sum(distance) / 3)
    assert json.loads((root / "model" / "model_best.keras").read_text())["distance"] <= saved["distance"] + 1e-12
    # without the soup the control's own state continues
    plain, _, _ = _run(tmp_path, cfg.replace(soup=False), name="plain", script=script)
    assert "soup" not in plain.population["1"]["_cycle"]["decision"]
    assert not (tmp_path / "plain" / "population" / "1_child_model.keras").exists()


def test_no_soup_when_every_other_member_is_worse_than_the_winner(tmp_path):
    script = {(1, 0): [0.9, 0.2, 0.1], (1, 1): [2.0, 1.9, 1.8], (1, 2): [3.0, 2.9, 2.8], (1, 3): [4.0, 3.9, 3.8]}
    res, _, _ = _run(tmp_path, CFG.replace(soup=True, cycles=1), script=script)
    decision = _decisions(res)[1]["decision"]
    assert decision.startswith("selection: member 0") and "soup" not in decision


def test_a_kill_between_a_new_best_and_its_checkpoint_leaves_model_best_matching_the_checkpoint(tmp_path):
    # killed (no clean-up runs) right after cycle 2's decision: the chosen member's last epoch was a
    # new best, but no checkpoint has recorded it yet
    root = tmp_path / "run"
    code = ("import os, sys, miha_engine as me; from miha_engine import events as ev; "
            "from miha_engine.testing import FakeBackend; "
            "cfg = me.RunConfig(runup_epochs=2, candidate_epochs=3, fixing_epochs=1, cycles=4, population_size=4, "
            "seed=7, control_member=False, selection='fittest'); "
            "kill = lambda e: isinstance(e, ev.CycleDone) and e.cycle == 2 and os._exit(9); "
            f"me.run(None, None, cfg, run_dir={str(root)!r}, listeners=[kill], backend=FakeBackend(cfg))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    state = json.loads((root / "state.json").read_text())
    assert state["completed_cycle"] == 1
    best = json.loads((root / "model" / "model_best.keras").read_text())
    # the fake's validation loss is (floor + distance) * 1.05: model_best holds the checkpoint's best state
    assert (FakeBackend.floor + best["distance"]) * FakeBackend.val_factor == pytest.approx(state["best"]["score"])
    # the newer state is written on the archive thread: killed before, during or after that write, it
    # is hidden (a whole pending file, or the temporary of the write the kill cut), never model_best
    for left in (root / "model").glob("*pending*"):
        if ".partial" in left.name:
            assert left.name.startswith("..model_best.pending-")
        else:
            assert left.name.startswith(".model_best.pending-") and json.loads(left.read_text())["distance"] >= 0
    res = resume(root, backend=FakeBackend.for_resume(root))
    assert res.status == "finished" and not list((root / "model").glob("*pending*"))  # temporaries too
    info = json.loads((root / "run.json").read_text())
    best = json.loads((root / "model" / "model_best.keras").read_text())
    assert (FakeBackend.floor + best["distance"]) * FakeBackend.val_factor == pytest.approx(info["best_model"]["score"])


def test_a_finished_run_records_the_same_best_in_state_json_and_run_json(tmp_path):
    # the final phase's best is recorded in state.json before model_best is renamed (a kill while the
    # test metrics are computed then leaves the two in step)
    res, _, _ = _run(tmp_path, CFG.replace(cycles=1))  # the fake's lineage improves at every epoch
    root = tmp_path / "run"
    state, info = json.loads((root / "state.json").read_text()), json.loads((root / "run.json").read_text())
    assert state["best"]["step"] == info["best_model"]["lineage_epoch"] == CFG.replace(cycles=1).lineage_epochs
    assert state["best"]["score"] == pytest.approx(info["best_model"]["score"])


def test_a_kill_after_the_checkpoint_and_before_the_rename_promotes_the_pending_best_at_resume(tmp_path):
    folder = me.RunFolder(tmp_path / "run")
    folder.model_dir.mkdir(parents=True)
    folder.model_path("best").write_text("old")
    folder.pending_best_path(7).write_text("seven")  # the checkpoint recorded step 7, then the kill
    folder.pending_best_path(9).write_text("nine")  # a later state the resume trains again
    assert folder.settle_pending_best(7)
    assert folder.model_path("best").read_text() == "seven" and not folder.pending_best()
    folder.pending_best_path(11).write_text("eleven")
    assert not folder.settle_pending_best(7) and folder.model_path("best").read_text() == "seven"
    assert not folder.pending_best()


def test_the_noise_rule_for_the_best_of_several_mutants_asks_a_larger_margin(tmp_path):
    # member 2 beats the control by more than one noise unit, but by less than the best of three null
    # mutants would by chance one cycle in ten: the corrected rule keeps the control, and says why
    from miha_engine.fitness import family_z

    script = {(1, 0): [0.50, 0.46, 0.49], (1, 1): [0.50, 0.47, 0.485], (1, 2): [0.49, 0.40, 0.30],
              (1, 3): [0.52, 0.48, 0.488]}
    one, one_events, _ = _run(tmp_path, NOISY.replace(noise_false_switch=0.0), name="one", script=script)
    res, events, _ = _run(tmp_path, NOISY, script=script)  # the default: 0.1
    first = [e for e in one_events if isinstance(e, ev.CycleDone)][0]
    assert first.winner == 2 and first.margin < float(first.decision.split("by ")[1].split(" ")[0])
    done = [e for e in events if isinstance(e, ev.CycleDone)][0]
    assert done.winner == 0 and done.decision.startswith("noise rule: the control keeps the parent's genes")
    assert done.margin == pytest.approx(first.margin * family_z(3, 0.1), rel=1e-6)
    assert f"×{family_z(3, 0.1):.2f} for the best of 3 mutants" in done.decision
    assert "for the best of" not in first.decision and me.RunConfig().noise_false_switch == 0.1
    assert family_z(3, 0.1) == pytest.approx(1.82, abs=0.01) and family_z(3, 0.0) == 1.0


def test_a_run_made_before_the_noise_correction_resumes_with_the_rule_it_started_with(tmp_path):
    # run.json of an older run has no noise_false_switch: its resume (and a fork) keeps one noise
    # unit per mutant, as it chose before the stop; a new run gets the default
    token = me.CancelToken()
    _run(tmp_path, NOISY, listeners=[lambda e: isinstance(e, ev.CycleDone) and token.cancel()], cancel=token)
    root = tmp_path / "run"
    info = json.loads((root / "run.json").read_text())
    del info["config"]["noise_false_switch"]
    (root / "run.json").write_text(json.dumps(info))
    assert me.RunConfig.from_stored(info["config"]).noise_false_switch == 0.0
    assert me.RunConfig.from_dict(info["config"]).noise_false_switch == 0.1
    events: list[ev.Event] = []
    res = resume(root, backend=FakeBackend.for_resume(root), listeners=[events.append])
    assert res.status == "finished"
    assert json.loads((root / "run.json").read_text())["config"]["noise_false_switch"] == 0.0
    later = [e for e in events if isinstance(e, ev.CycleDone)]
    assert later and all("for the best of" not in e.decision for e in later)
    with pytest.raises(me.ConfigError, match="noise_false_switch must be in"):
        me.RunConfig(noise_false_switch=0.9)


def test_the_archive_queue_keeps_order_reports_errors_and_holds_at_most_its_bound(tmp_path):
    # archives are written on one background thread: in the order asked, an error comes back with
    # its job, and the training thread waits once more than ARCHIVES_QUEUED writes (each holding a
    # copy of a model's state) are behind it
    import threading
    import time as _time

    from miha_engine.runner import ARCHIVES_QUEUED, _ArchiveQueue

    queue, written, release = _ArchiveQueue(), [], threading.Event()

    def slow(path):
        release.wait(5)
        written.append(path.name)

    def broken(path):
        raise OSError(28, "No space left on device")

    try:
        for i in range(3):
            queue.submit(slow, tmp_path / f"m{i}", f"member {i}")
        queue.submit(broken, tmp_path / "m3", "member 3")
        assert queue.finished() == [] and not written  # nothing done yet: nothing waits, nothing is journalled
        threading.Timer(0.2, release.set).start()
        t = _time.perf_counter()
        done = queue.finished(at_most=ARCHIVES_QUEUED)
        assert _time.perf_counter() - t >= 0.15  # it waited for the oldest
        assert len(done) >= 4 - ARCHIVES_QUEUED and written[:2] == ["m0", "m1"]  # (and any done meanwhile)
        every = done + queue.finished(wait=True)
        assert [d for _, d, _ in every] == [f"member {i}" for i in range(4)] and written == ["m0", "m1", "m2"]
        assert [e for _, _, e in every][:3] == [None] * 3 and isinstance(every[3][2], OSError)
    finally:
        release.set()
        queue.close()
