"""Each bad file, tried where a user meets it: the Python API, the CLI and the app, with the same text."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import load_model_into
from PySide6.QtCore import QSettings

import miha_engine as me
from miha_engine.data import load_dataset
from miha_gui.window import MainWindow

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
rng = np.random.default_rng(0)
X = rng.random((40, 64)).astype("float32")
Y = rng.integers(0, 10, 40)


def _npz(**arrays):
    def write(path):
        np.savez(path, **arrays)
    return write


def _bytes(content: bytes):
    def write(path):
        path.write_bytes(content)
    return write


DATASETS = {
    "missing keys": ("d.npz", _npz(features=X), "missing array(s) x, y"),
    "object arrays": ("d.npz", _npz(x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3)), "pickled"),
    "not a zip": ("d.npz", _bytes(b"plain text"), "not a valid .npz"),
    "empty file": ("d.npz", _bytes(b""), "is empty"),
    "not HDF5": ("d.h5", _bytes(b"not hdf5"), "not a valid HDF5"),
    "text csv": ("d.csv", _bytes(b"a,b\nx,y\n"), "non-numeric"),
    "unknown format": ("d.parquet", _bytes(b"PAR1"), "unknown dataset format"),
    # found only against the model (the app flags it before Run, the CLI and API before training)
    "labels out of range": ("d.npz", _npz(x=X, y=Y + 10), "classes (0..9)"),
    "wrong shape": ("d.npz", _npz(x=X[:, :10], y=Y), "expects (64)"),
    "NaN inputs": ("d.npz", _npz(x=np.where(X > 0.9, np.nan, X), y=Y), "NaN"),
    "length mismatch": ("d.npz", _npz(x=X, y=Y[:30]), "must be equal"),
    "huge values": ("d.npz", _npz(x=X * 1e9, y=Y), "scale the inputs"),
}

def _zip_without_config() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", '{"keras_version": "9.9.0", "date_saved": "2031-01-01"}')
    return buf.getvalue()


MODELS = {
    "unknown or newer format": ("m.keras", _zip_without_config(), "cannot be loaded|corrupt or not a Keras"),
    "not a zip": ("m.keras", b"plain text", "not a Keras archive"),
    "empty": ("m.keras", b"", "is empty"),
    "not HDF5": ("m.h5", b"GIF89a", "not an HDF5 file"),
    "not a model": ("m.txt", b"hello", "unknown model format"),
}


@pytest.fixture
def window(qtbot, tmp_path):
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    return w


def _cli(model, data, tmp_path):
    return subprocess.run([sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data),
                           "--run-dir", str(tmp_path / "run"), "-q"], capture_output=True, text=True, env=ENV,
                          timeout=120)


def _one_line(proc, expected):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("miha: error:")]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(DATASETS))
def test_bad_dataset_in_api_cli_and_app(case, files, tmp_path, window, qtbot):
    model, _ = files
    name, write, expected = DATASETS[case]
    path = tmp_path / name
    write(path)
    # API
    with pytest.raises(me.DatasetError, match=expected.replace("(", r"\(").replace(")", r"\)")) as api:
        me.run(str(model), str(path), me.RunConfig(), run_dir=tmp_path / "api")
    # CLI: exit 2, one line, the same text
    line = _one_line(_cli(model, path, tmp_path), expected)
    assert str(api.value) in line
    # app: the same text, in a message or in the mismatch line before Run
    assert load_model_into(qtbot, window.panel, model)
    loaded = window.panel.load_data(str(path))
    shown = window.panel.mismatch_text() if loaded else window.last_error
    assert str(api.value) in shown
    assert not window.run_action.isEnabled()
    assert not (tmp_path / "run").exists() and not (tmp_path / "api").exists()


@pytest.mark.parametrize("case", list(MODELS))
def test_bad_model_in_api_cli_and_app(case, files, tmp_path, window, qtbot):
    _, data = files
    name, content, expected = MODELS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(me.ModelLoadError, match=expected) as api:
        me.load_model(path)
    line = [ln for ln in _cli(path, data, tmp_path).stderr.splitlines() if ln.startswith("miha: error:")]
    assert len(line) == 1 and str(api.value) in line[0]
    assert not load_model_into(qtbot, window.panel, path)
    assert str(api.value) in window.last_error
    assert load_dataset(data).n_train > 0  # nothing else was harmed
