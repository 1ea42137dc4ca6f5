from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Qt settings written by the app under test (also in subprocesses) never touch the user's own.
import tempfile  # noqa: E402

os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="miha-test-config-")
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="miha-test-data-")  # the app's default run folder

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    from miha_engine.testing import digits as load

    return load()


@pytest.fixture
def small_digits(digits):
    x, y, xt, yt = digits
    return x[:400], y[:400], xt[:100], yt[:100]


@pytest.fixture
def ds(small_digits):
    """400 training digits (10% become validation) and 100 test digits."""
    from miha_engine import from_arrays

    x, y, xt, yt = small_digits
    return from_arrays(x, y, x_test=xt, y_test=yt)


@pytest.fixture
def files(tmp_path, small_digits):
    """The small digits as an .npz file (with a test split) and a saved compiled FNN."""
    import numpy as np

    from miha_engine.testing import dense_classifier

    x, y, xt, yt = small_digits
    data = tmp_path / "digits.npz"
    np.savez(data, x=x, y=y, x_test=xt, y_test=yt)
    model = tmp_path / "fnn.keras"
    dense_classifier().save(model)
    return model, data


_EXIT = {"status": None}


def pytest_sessionfinish(session, exitstatus):
    _EXIT["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without the interpreter's final garbage collection once Qt was loaded.

    With PySide6 6.12 and pyqtgraph 0.14, that last collection can abort the interpreter ("Fatal Python
    error: none_dealloc") after every test has passed and the summary is printed, which would turn a
    green run red. Everything is reported by now (this hook runs last), so exit with pytest's status.
    """
    import sys

    if _EXIT["status"] is not None and "PySide6.QtWidgets" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])


def load_model_into(qtbot, panel, path) -> bool:
    """Open a model in the app's set-up panel the way a user does, and wait for the inspection (in
    another process) to answer; True when the panel took the model."""
    with qtbot.waitSignal(panel.modelChecked, timeout=120_000) as blocker:
        panel.load_model(str(path))
    return bool(blocker.args[0])
