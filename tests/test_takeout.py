"""Taking the tuned model out: the schedule and its replay, TensorBoard, deployment formats, the
run-folder lock and a quiet CLI, all on real tiny Keras runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import miha_engine as me
from miha_engine import events as ev
from miha_engine.errors import ExportError, FolderLockedError, ScheduleError
from miha_engine.runlog import RunFolder
from miha_engine.schedule import read_schedule, replay, write_schedule
from miha_engine.testing import FakeBackend, dense_classifier, residual_classifier

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "PYTHONUNBUFFERED": "1"}
CFG = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=2, population_size=3, seed=5,
                   search=me.SearchSpace(kinds=("optimizer", "learning_rate", "batch_size")))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits):
    """One real run (no activation changes), its dataset file, and its folder."""
    tmp = tmp_path_factory.mktemp("takeout")
    x, y, xt, yt = digits
    data = tmp / "digits.npz"
    np.savez(data, x=x[:400], y=y[:400], x_test=xt[:100], y_test=yt[:100])
    res = me.run(dense_classifier(), str(data), CFG, run_dir=tmp / "run")
    assert res.status == "finished"
    return tmp / "run", data


def test_replaying_a_schedule_gives_the_runs_lineage(finished_run, tmp_path):
    run_dir, data = finished_run
    schedule = write_schedule(run_dir, tmp_path / "schedule.toml")
    info, segments = read_schedule(schedule)
    assert info["epochs"] == CFG.lineage_epochs and segments[0].phase == "runup"
    assert [s.member is not None for s in segments] == [s.phase == "member" for s in segments]
    res = replay(schedule, run_dir / "model" / "model_source.keras", str(data), run_dir=tmp_path / "replay")
    want = RunFolder(run_dir).read_history()
    got = RunFolder(tmp_path / "replay").read_history()
    assert [r["genes"] for r in got] == [r["genes"] for r in want]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-5)
    np.testing.assert_allclose([r["val_loss"] for r in got], [r["val_loss"] for r in want], rtol=1e-5)
    assert res.status == "finished" and (tmp_path / "replay" / "model" / "model_final.keras").exists()
    # the app replays a replay's folder like any run
    from miha_engine.state import replay as replay_events

    assert replay_events(tmp_path / "replay").history_rows() == got


def test_a_replay_applies_activation_changes_at_the_same_epoch(tmp_path, ds):
    cfg = CFG.replace(search=me.SearchSpace(kinds=("activation",)), seed=11)
    me.run(dense_classifier(), ds, cfg, run_dir=tmp_path / "run")
    want = RunFolder(tmp_path / "run").read_history()
    assert len({json.dumps(r["genes"]) for r in want}) > 1  # the lineage changed activation
    schedule = write_schedule(tmp_path / "run", tmp_path / "s.toml")
    replay(schedule, tmp_path / "run" / "model" / "model_source.keras", ds, run_dir=tmp_path / "replay")
    got = RunFolder(tmp_path / "replay").read_history()
    assert [r["genes"] for r in got] == [r["genes"] for r in want]  # epoch by epoch
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-4)


def test_a_schedule_that_does_not_fit_the_model_is_refused_before_anything_is_written(finished_run, tmp_path, ds):
    run_dir, _ = finished_run
    schedule = write_schedule(run_dir, tmp_path / "s.toml")
    other = tmp_path / "resnet.keras"
    residual_classifier().save(other)
    with pytest.raises(ScheduleError, match="does not have or does not let change"):
        replay(schedule, other, ds, run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text(schedule.read_text().replace("from_epoch = 2", "from_epoch = 5"))
    with pytest.raises(ScheduleError, match="breaks the sequence"):
        read_schedule(broken)
    (tmp_path / "not.toml").write_text("this is [not toml")
    with pytest.raises(ScheduleError, match="not a readable TOML"):
        read_schedule(tmp_path / "not.toml")


def test_tensorboard_event_files_hold_the_runs_values(finished_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from miha_engine.tensorboard import export_tensorboard

    run_dir, _ = finished_run
    out = export_tensorboard(run_dir, tmp_path / "tb")

    def values(run, tag):
        acc = EventAccumulator(str(out / run))
        acc.Reload()
        return [(t.step, float(np.asarray(__import__("tensorflow").make_ndarray(t.tensor_proto))))
                for t in acc.Tensors(tag)]

    history = RunFolder(run_dir).read_history()
    main = values("main", "loss")
    assert [s for s, _ in main] == [r["step"] for r in history]
    np.testing.assert_allclose([v for _, v in main], [r["loss"] for r in history], rtol=1e-6)
    population = RunFolder(run_dir).read_population()
    for cycle in (1, 2):
        for member in range(3):
            run = f"cycle_{cycle:02d}/member_{member}"
            np.testing.assert_allclose([v for _, v in values(run, "val_loss")],
                                       population[str(cycle)][str(member)]["val_losses"], rtol=1e-6)
            acc = EventAccumulator(str(out / run))
            acc.Reload()
            assert "_hparams_/session_start_info" in acc.Tags()["tensors"]


def test_tensorboard_is_written_live_when_asked(tmp_path, ds):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = me.run(dense_classifier(), ds, CFG.replace(cycles=1, tensorboard=True), run_dir=tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "main"))
    acc.Reload()
    live = [float(np.asarray(__import__("tensorflow").make_ndarray(t.tensor_proto))) for t in acc.Tensors("loss")]
    np.testing.assert_allclose(live, [r["loss"] for r in res.history], rtol=1e-6)
    assert (tmp_path / "run" / "tensorboard" / "cycle_01" / "member_2").is_dir()


@pytest.mark.parametrize("name", ["out.keras", "out.h5", "saved", "out.tflite", "out.onnx"])
def test_every_export_format_is_checked_against_the_model(finished_run, tmp_path, name):
    from miha_engine.export import export_model, sample_for

    run_dir, data = finished_run
    x, origin = sample_for(run_dir)
    assert len(x) == 100 and origin.startswith("test samples")
    report = export_model(RunFolder(run_dir).best_archive("best"), tmp_path / name, x=x, sample_origin=origin)
    assert report.samples == 100 and report.max_abs_diff < 1e-4
    assert (tmp_path / name).exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_model_the_converter_cannot_take_leaves_no_file(tmp_path):
    import keras
    import tensorflow as tf

    from miha_engine.export import export_model

    @keras.saving.register_keras_serializable(package="miha_test")
    class NumpySquare(keras.layers.Layer):
        def call(self, x):
            y = tf.numpy_function(lambda a: (a * a).astype("float32"), [x], tf.float32)
            y.set_shape(x.shape)
            return y

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), NumpySquare()])
    src = tmp_path / "pyfunc.keras"
    model.save(src)
    existing = tmp_path / "old.tflite"
    existing.write_bytes(b"an earlier export")
    for out in (existing, tmp_path / "new.onnx"):
        with pytest.raises(ExportError, match="the converter lacks PyFunc"):
            export_model(src, out)
    assert existing.read_bytes() == b"an earlier export" and not (tmp_path / "new.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.tflite", "pyfunc.keras"]
    with pytest.raises(ExportError, match="must end in .tflite"):
        export_model(src, tmp_path / "x.onnx", "tflite")


def test_a_second_writer_is_refused_and_a_killed_holder_does_not_block(tmp_path):
    cfg = me.RunConfig(cycles=3)
    token = me.CancelToken()
    me.run(None, None, cfg, run_dir=tmp_path / "run", cancel=token, backend=FakeBackend(cfg, cancel=token),
           listeners=[lambda e: isinstance(e, ev.CycleDone) and token.cancel()])
    root = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from miha_engine.runlog import RunFolder\n"
        f"with RunFolder({str(root)!r}).lock():\n    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (root / "events.jsonl").read_bytes()
        with pytest.raises(FolderLockedError, match=f"PID {holder.pid}"):
            me.resume(root, backend=FakeBackend.for_resume(root))
        cli = subprocess.run([sys.executable, "-m", "miha_engine", "resume", str(root)], capture_output=True,
                             text=True, timeout=120)
        assert cli.returncode == 2 and f"PID {holder.pid}" in cli.stderr
        assert (root / "events.jsonl").read_bytes() == before  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    time.sleep(0.1)
    assert me.resume(root, backend=FakeBackend.for_resume(root)).status == "finished"


def test_the_cli_keeps_tensorflows_startup_lines_out_unless_verbose(files):
    model, _ = files
    quiet = subprocess.run([sys.executable, "-m", "miha_engine", "inspect", str(model)], capture_output=True,
                           text=True, timeout=120, env=ENV)
    loud = subprocess.run([sys.executable, "-m", "miha_engine", "inspect", str(model), "--verbose"],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert quiet.returncode == loud.returncode == 0
    assert "hidden" in quiet.stdout and quiet.stderr.strip() == ""
    assert len(loud.stderr.strip()) > 0  # TensorFlow's own lines, on request
