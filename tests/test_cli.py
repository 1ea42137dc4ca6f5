"""The ``miha`` command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def miha(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "miha_engine", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def _one_clear_line(proc):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("miha: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_run_inspect_export(tmp_path, files):
    model, data = files
    run_dir = tmp_path / "run"
    proc = miha("run", "--model", model, "--data", data, "-m", 1, "-n", 1, "-k", 1, "-c", 1, "-p", 2,
                "--seed", 5, "--run-dir", run_dir, "--search", "batch_size,learning_rate", "--xla",
                "--steps-per-execution", 8)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "finished" and out["final_model"].endswith("model_final.keras")
    assert "accuracy" in out["test_metrics"]["final"]
    info = miha("inspect", run_dir, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["status"] == "finished"
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["jit_compile"] is True and config["steps_per_execution"] == 8
    exported = tmp_path / "best.h5"
    exp = miha("export", run_dir, exported, "--which", "best")
    assert exp.returncode == 0, exp.stderr
    summary = miha("inspect", exported)
    assert summary.returncode == 0 and "hidden" in summary.stdout and "softmax" in summary.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "missing.keras"], "model file not found"),
        (["--cycles", "-1"], "cycles must be"),
        (["--search", "colour"], "unknown gene kind"),
        (["--search", ""], "search space is empty"),
        (["--population-size", "0"], "population_size"),
        (["--activations", "relu,bogus"], "unknown activation(s) bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, files, args, expected):
    model, data = files
    base = {"--model": str(model), "--data": str(data), "--run-dir": str(tmp_path / "r")}
    argv = ["run"]
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    line = _one_clear_line(miha(*argv, *args))
    assert expected in line
    assert not (tmp_path / "r").exists()


def test_bad_files_exit_2_with_one_line(tmp_path, files):
    model, data = files
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip")
    assert "not a Keras archive" in _one_clear_line(miha("run", "--model", corrupt, "--data", data))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, features=np.zeros((3, 64)))
    assert "missing array(s) x, y" in _one_clear_line(miha("run", "--model", model, "--data", wrong))
    objs = tmp_path / "objects.npz"
    np.savez(objs, x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3))
    assert "pickled" in _one_clear_line(miha("run", "--model", model, "--data", objs))
    x = np.random.default_rng(0).random((20, 64)).astype("float32")
    badlabels = tmp_path / "labels.npz"
    np.savez(badlabels, x=x, y=np.arange(20))
    line = _one_clear_line(miha("run", "--model", model, "--data", badlabels, "--run-dir", tmp_path / "r"))
    assert "10 classes" in line and not (tmp_path / "r").exists()


def test_lambda_model_is_refused_in_safe_mode(tmp_path, files):
    import keras

    _, data = files
    m = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: t * 2.0),
                          keras.layers.Dense(10, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "lambda.keras"
    m.save(path)
    line = _one_clear_line(miha("run", "--model", path, "--data", data))
    assert "Lambda" in line and "--unsafe-model" in line
    from miha_engine.models import load_model

    assert load_model(path, unsafe=True).count_params() > 0  # the knowing opt-in works


def test_run_folder_problems_exit_2(tmp_path, files):
    model, data = files
    (tmp_path / "a-file").write_text("x")
    line = _one_clear_line(miha("run", "--model", model, "--data", data, "--run-dir", tmp_path / "a-file"))
    assert "is a file" in line
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    line = _one_clear_line(miha("run", "--model", model, "--data", data, "--run-dir", tmp_path / "r"))
    assert "already holds a run" in line and "miha resume" in line
    assert "not a MIHA run folder" in _one_clear_line(miha("resume", tmp_path))


def test_ctrl_c_cancels_and_resume_finishes(tmp_path, files):
    model, data = files
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data),
         "-m", "1", "-n", "2", "-k", "1", "-c", "3", "-p", "3", "--seed", "1", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    journal = run_dir / "events.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and '"member_started"' in journal.read_text():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the run never reached a population")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "miha resume" in err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    res = miha("resume", run_dir)
    assert res.returncode == 0, res.stderr
    rows = (run_dir / "history.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 2 * 1 + 3 * (2 + 1) + 1))
