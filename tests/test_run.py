"""Whole runs of the engine on real tiny Keras models."""

from __future__ import annotations

import json

import numpy as np
import pytest

import miha_engine as me
from miha_engine import events as ev
from miha_engine.runlog import read_events
from miha_engine.state import replay
from miha_engine.testing import dense_classifier, residual_classifier

TINY = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=2, population_size=3, seed=3)


def _run(tmp_path, data, config=TINY, name="run", model=None, **kw):
    collected: list[ev.Event] = []
    res = me.run(model or dense_classifier(), data, config, run_dir=tmp_path / name,
                 listeners=[collected.append], **kw)
    return res, collected


def test_run_writes_the_whole_folder_and_counts_epochs(tmp_path, ds):
    res, events = _run(tmp_path, ds)
    cfg, root = TINY, tmp_path / "run"
    assert res.status == "finished"
    # the lineage has 2m + c(n+k) epochs, contiguous
    rows = me.RunFolder(root).read_history()
    assert len(rows) == cfg.lineage_epochs == 2 * 1 + 2 * (2 + 1)
    assert [r["step"] for r in rows] == list(range(1, cfg.lineage_epochs + 1))
    assert [r["phase"] for r in rows] == ["runup", "member", "member", "fixing"] * 1 + ["member", "member", "fixing", "final"]
    # compute spent: 2m + c(pop*n + k) epochs
    epochs = [e for e in events if isinstance(e, ev.EpochEnded)]
    assert len(epochs) == cfg.total_epochs == 2 + 2 * (3 * 2 + 1)
    assert sum(e.phase == "member" for e in epochs) == 2 * 3 * 2
    # archives
    names = sorted(p.name for p in (root / "model").iterdir())
    assert names == ["model_1.keras", "model_2.keras", "model_best.keras", "model_final.keras", "model_init.keras",
                     "model_source.keras"]
    assert sorted(p.name for p in (root / "population").iterdir()) == [f"{c}_{m}_model.keras" for c in (1, 2) for m in range(3)]
    # population.json structure
    pop = json.loads((root / "population.json").read_text())
    assert set(pop) == {"1", "2"}
    for cycle in pop.values():
        members = {k: v for k, v in cycle.items() if not k.startswith("_")}
        assert set(members) == {"0", "1", "2"}
        assert sum(m["chosen"] for m in members.values()) == 1
        for m in members.values():
            assert set(m) == {"genes", "change", "losses", "val_losses", "fitness", "chosen"}
            assert len(m["losses"]) == 2 and len(m["val_losses"]) == 2
    info = json.loads((root / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 3
    assert "CPU" in info["device"] or "GPU" in info["device"]
    assert info["test_metrics"]["final"]["accuracy"] > info["test_metrics"]["initial"]["accuracy"]
    # every archive loads, and the final one predicts like the in-memory final model
    final = me.load_model(root / "model" / "model_final.keras")
    assert final.predict(ds.x_test[:3], verbose=0).shape == (3, 10)
    # the journal replays to the same picture
    st = replay(root)
    assert len(st.main_steps) == cfg.lineage_epochs and len(st.branches) == 2 * 3
    assert st.status == "finished" and len(st.fitness_points()) == 6


def test_same_seed_gives_same_genes_and_changes(tmp_path, ds):
    def changes(name):
        _, events = _run(tmp_path, ds, name=name)
        return [(e.cycle, e.member, e.change, json.dumps(e.genes, sort_keys=True))
                for e in events if isinstance(e, ev.MemberStarted)]

    assert changes("a") == changes("b")


def test_control_member_and_crossover(tmp_path, ds):
    cfg = TINY.replace(control_member=True, crossover=True, crossover_weights="average", population_size=3,
                       selection="fittest")
    res, events = _run(tmp_path, ds, cfg)
    started = [e for e in events if isinstance(e, ev.MemberStarted)]
    assert all(e.change == "control: unchanged" for e in started if e.member == 0)
    assert all(e.change != "control: unchanged" for e in started if e.member != 0)
    decisions = [e.decision for e in events if isinstance(e, ev.CycleDone)]
    assert len(decisions) == 2 and all(("crossover" in d) for d in decisions)
    assert res.status == "finished"


def test_functional_residual_model_runs(tmp_path, ds):
    cfg = TINY.replace(cycles=1, search=me.SearchSpace(kinds=("activation",)), control_member=False)
    res, events = _run(tmp_path, ds, cfg, model=residual_classifier())
    assert res.status == "finished"
    assert all("activation of" in e.change for e in events if isinstance(e, ev.MemberStarted))


def test_cancel_stops_at_next_batch_and_resume_completes_exact_lineage(tmp_path, ds):
    token = me.CancelToken()
    seen = []

    def stop_in_cycle_2(e):
        seen.append(e)
        if isinstance(e, ev.EpochEnded) and e.phase == "member" and e.cycle == 2 and e.member == 1:
            token.cancel()

    res = me.run(dense_classifier(), ds, TINY, run_dir=tmp_path / "r", listeners=[stop_in_cycle_2], cancel=token)
    assert res.status == "cancelled"
    root = tmp_path / "r"
    assert json.loads((root / "run.json").read_text())["status"] == "cancelled"
    assert not (root / "model" / "model_final.keras").exists()
    # archives written so far load
    me.load_model(root / "model" / "model_1.keras")
    # no more member epochs after the cancel
    last = [e for e in seen if isinstance(e, ev.EpochEnded)][-1]
    assert (last.cycle, last.member) == (2, 1)
    res2 = me.resume(root, data=ds)
    assert res2.status == "finished"
    rows = me.RunFolder(root).read_history()
    assert [r["step"] for r in rows] == list(range(1, TINY.lineage_epochs + 1))
    st = replay(root)
    assert len(st.main_steps) == TINY.lineage_epochs and st.status == "finished"
    assert sorted(st.branches) == [(c, m) for c in (1, 2) for m in range(3)]
    with pytest.raises(me.RunFolderError, match="already finished"):
        me.resume(root, data=ds)


def test_diverging_members_score_worst_and_are_never_chosen(tmp_path, small_digits):
    # SGD at a learning rate of 1e6 on a linear regression head overflows at once.
    import keras

    x, y, xt, yt = small_digits
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, name="o")])
    model.compile("adam", "mse")
    space = me.SearchSpace(kinds=("optimizer",), optimizers=("sgd",), learning_rate_range=(1e6, 1e7))
    cfg = TINY.replace(cycles=1, population_size=2, control_member=True, search=space)
    res, events = _run(tmp_path, (x, y.astype("float32"), None, None, xt, yt.astype("float32")), cfg, model=model)
    trained = [e for e in events if isinstance(e, ev.MemberTrained)]
    assert trained[1].fitness == float("-inf") and np.isfinite(trained[0].fitness)
    done = [e for e in events if isinstance(e, ev.CycleDone)][0]
    assert done.winner == 0
    assert any("NaN" in e.message for e in events if isinstance(e, ev.Note))
    assert res.status == "finished"
    pop = json.loads((tmp_path / "run" / "population.json").read_text())
    assert pop["1"]["1"]["fitness"] is None and pop["1"]["0"]["chosen"] is True


def test_drop_intermediate_keeps_final_and_logs(tmp_path, ds):
    res, _ = _run(tmp_path, ds, TINY.replace(cycles=1, drop_intermediate=True))
    root = tmp_path / "run"
    assert sorted(p.name for p in (root / "model").iterdir()) == ["model_best.keras", "model_final.keras"]
    assert not list((root / "population").iterdir())
    assert (root / "history.csv").exists() and (root / "population.json").exists()


def test_bad_inputs_raise_typed_errors_before_training(tmp_path, small_digits):
    x, y, _, _ = small_digits
    with pytest.raises(me.DatasetError, match="labels in 'y' range"):
        me.run(dense_classifier(), (x, y + 5), TINY, run_dir=tmp_path / "a")
    with pytest.raises(me.DatasetError, match="expects"):
        me.run(dense_classifier(), (x[:, :10], y), TINY, run_dir=tmp_path / "b")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(me.DatasetError, match="NaN"):
        me.run(dense_classifier(), (bad, y), TINY, run_dir=tmp_path / "c")
    with pytest.raises(me.InputError, match="batch_size"):
        me.run(dense_classifier(), (x, y), TINY.replace(batch_size=10_000), run_dir=tmp_path / "d")
    import keras

    raw = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(me.ModelLoadError, match="--loss"):
        me.run(raw, (x, y), TINY, run_dir=tmp_path / "e")
    for name in "abcde":
        assert not (tmp_path / name).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(me.RunFolderError, match="is a file"):
        me.run(dense_classifier(), (x, y), TINY, run_dir=tmp_path / "file")
    assert len(list(read_events(tmp_path / "nothing.jsonl"))) == 0


def test_drop_intermediate_frees_space_as_it_goes(tmp_path, ds):
    seen = []
    root = tmp_path / "run"

    def listener(e):
        if isinstance(e, ev.CycleDone) and e.cycle == 2:
            seen.append(sorted(p.name for p in root.rglob("*.keras")))

    me.run(dense_classifier(), ds, TINY.replace(cycles=3, drop_intermediate=True), run_dir=root, listeners=[listener])
    # when cycle 2's winner is chosen, cycle 1's members and the archives before model_1 are gone
    assert seen and "model_1.keras" in seen[0] and "model_init.keras" not in seen[0]
    assert not any(n.startswith("1_") for n in seen[0])


def test_disk_space_is_checked_before_a_run(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from miha_engine.runner import archive_count, disk_space_warning

    model = dense_classifier()
    cfg = TINY.replace(cycles=10, population_size=5)
    assert archive_count(cfg) == 3 + 10 * 6
    assert disk_space_warning(tmp_path, model.count_params(), cfg) is None
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    text = disk_space_warning(tmp_path, model.count_params(), cfg)
    assert "63 archives" in text and "free" in text and "fewer cycles" in text


def test_main_line_divergence_stops_with_a_clear_status(tmp_path, small_digits):
    import keras

    x, y, _, _ = small_digits
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1, name="o")])
    model.compile(keras.optimizers.SGD(1e5), "mse")
    with pytest.raises(me.DivergedError, match="NaN/inf during the runup phase"):
        me.run(model, (x, y.astype("float32")), TINY, run_dir=tmp_path / "r")
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == "failed" and "last good archive" in info["error"]
    assert (tmp_path / "r" / "model" / "model_source.keras").exists()


def test_folder_that_holds_a_run_or_sits_under_a_file_is_refused(tmp_path, ds):
    me.run(dense_classifier(), ds, TINY.replace(cycles=0), run_dir=tmp_path / "done")
    with pytest.raises(me.RunFolderError, match="already holds a run"):
        me.run(dense_classifier(), ds, TINY, run_dir=tmp_path / "done")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(me.RunFolderError, match="not writable"):
        me.run(dense_classifier(), ds, TINY, run_dir=tmp_path / "afile" / "sub")


def test_when_every_member_diverges_the_cycle_keeps_the_parent(tmp_path, small_digits):
    import keras

    x, y, _, _ = small_digits
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, name="o")])
    model.compile("adam", "mse")
    space = me.SearchSpace(kinds=("optimizer",), optimizers=("sgd",), learning_rate_range=(1e6, 1e7))
    cfg = TINY.replace(cycles=1, population_size=2, search=space, control_member=False)
    res, events = _run(tmp_path, (x, y.astype("float32")), cfg, model=model)
    done = [e for e in events if isinstance(e, ev.CycleDone)][0]
    assert done.winner == -1 and "every member diverged" in done.decision
    assert done.genes["optimizer"] == "adam"  # the parent's genes carry on
    assert res.status == "finished" and np.isfinite(res.history[-1]["loss"])
    # no member epochs joined the lineage for that cycle
    assert [r["phase"] for r in res.history] == ["runup", "fixing", "final"]


def test_a_kill_between_finishing_and_cleaning_up_still_reads_as_finished(tmp_path, ds):
    root = tmp_path / "run"
    me.run(dense_classifier(), ds, TINY.replace(cycles=1, drop_intermediate=True), run_dir=root)
    info = json.loads((root / "run.json").read_text())
    info["status"] = "running"  # as if killed after state.json said finished, before run.json did
    (root / "run.json").write_text(json.dumps(info))
    with pytest.raises(me.RunFolderError, match="already finished"):
        me.resume(root, data=ds)
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
    assert json.loads((root / "run.json").read_text())["search_context"]["choices"] == {"hidden": list(
        dict.fromkeys(("relu", *me.HIDDEN_ACTIVATIONS)))}


def test_a_torn_journal_line_is_cut_before_appending(tmp_path):
    folder = me.RunFolder(tmp_path)
    folder.append_event(ev.Note(message="first"))
    with open(folder.events_path, "a") as fh:
        fh.write('{"kind": "note", "mess')  # a write cut short
    folder.repair_journal()
    folder.append_event(ev.RunResumed(cycle=1, step=3))
    assert [e.kind for e in read_events(folder.events_path)] == ["note", "run_resumed"]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_stop_at_a_random_point_leaves_loadable_archives_and_resumes_exactly(tmp_path, ds, seed):
    rng = np.random.default_rng(seed)
    stop_after = int(rng.integers(1, TINY.total_epochs))  # some epoch of the run, any phase
    token = me.CancelToken()
    count = [0]

    def listener(e):
        if isinstance(e, ev.EpochEnded):
            count[0] += 1
            if count[0] == stop_after:
                token.cancel()

    root = tmp_path / "run"
    res = me.run(dense_classifier(), ds, TINY, run_dir=root, listeners=[listener], cancel=token)
    assert res.status == "cancelled"
    assert json.loads((root / "run.json").read_text())["status"] == "cancelled"
    for archive in root.rglob("*.keras"):
        assert not archive.name.startswith(".")
        me.load_model(archive)
    done = me.resume(root, data=ds)
    assert done.status == "finished"
    assert [r["step"] for r in me.RunFolder(root).read_history()] == list(range(1, TINY.lineage_epochs + 1))


def test_a_stopped_and_resumed_run_trains_exactly_like_an_uninterrupted_one(tmp_path, ds):
    """Every phase's shuffles and seeds come from (seed, cycle, member), never from how many fits the
    process ran, so a resume (a new process, a new trainer) gives the same losses epoch by epoch."""
    cfg = TINY.replace(cycles=3)
    whole = me.run(dense_classifier(), ds, cfg, run_dir=tmp_path / "whole")
    token = me.CancelToken()

    def stop(e):
        if isinstance(e, ev.MemberStarted) and (e.cycle, e.member) == (2, 1):
            token.cancel()

    me.run(dense_classifier(), ds, cfg, run_dir=tmp_path / "stopped", cancel=token, listeners=[stop])
    res = me.resume(tmp_path / "stopped", data=ds)
    assert [r["step"] for r in res.history] == [r["step"] for r in whole.history]
    assert [r["genes"] for r in res.history] == [r["genes"] for r in whole.history]
    np.testing.assert_allclose([r["loss"] for r in res.history], [r["loss"] for r in whole.history], rtol=1e-5)
    np.testing.assert_allclose([r["val_loss"] for r in res.history], [r["val_loss"] for r in whole.history], rtol=1e-5)
