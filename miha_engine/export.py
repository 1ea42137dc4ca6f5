"""Take a trained model out: Keras, legacy HDF5, TensorFlow SavedModel, TFLite and ONNX.

Every export is written under a hidden temporary name, *checked* (reloaded with its own runtime, a
sample run through it, the largest difference from the Keras model's outputs measured), and only
then renamed into place: a model that cannot convert, or converts wrongly, leaves no file behind and
never touches an existing one.

- ``keras`` and ``h5``: Keras itself; reloaded with Keras.
- ``savedmodel``: ``model.export(format="tf_saved_model")``, a folder; reloaded with
  ``tf.saved_model.load`` and called through its ``serve`` signature.
- ``tflite``: ``model.export(format="litert")`` (TensorFlow's converter); run with TFLite's
  interpreter.
- ``onnx``: ``model.export(format="onnx")`` (``tf2onnx``); run with ``onnxruntime``.  Both come with
  ``pip install 'miha[export]'``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError, InputError
from .runlog import _fsync_dir, atomic_write

#: Format name → the file suffix it is written with ("" for a folder).
FORMATS: dict[str, str] = {"keras": ".keras", "h5": ".h5", "savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}

#: What each format needs besides TensorFlow and Keras, and how to get it.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnx": (("tf2onnx", "onnx", "onnxruntime"), "pip install 'miha[export]'"),
}

#: The largest output difference an export may show before it is refused as wrong.
TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it computes what the Keras model computes."""

    source: str
    path: str
    format: str
    samples: int
    sample_origin: str
    max_abs_diff: float
    seconds: float

    def text(self) -> str:
        return (f"exported {Path(self.source).name} as {self.format} to {self.path}; checked on {self.samples} "
                f"{self.sample_origin}: largest difference from the Keras model's outputs {self.max_abs_diff:.2g}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def format_for(out: str | Path, fmt: str | None = None) -> str:
    """The format asked for, or the one ``out``'s suffix names (no suffix: a SavedModel folder)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if fmt is None:
        by_suffix = {s: f for f, s in FORMATS.items() if s}
        by_suffix[".hdf5"] = "h5"
        if suffix in by_suffix:
            return by_suffix[suffix]
        if suffix:
            raise ExportError(f"{out.name}: unknown model format {suffix}; use .keras, .h5, .tflite, .onnx, or a "
                              "folder name (no suffix) for a SavedModel")
        return "savedmodel"
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    want = FORMATS[fmt]
    if want and suffix not in (want, ".hdf5" if fmt == "h5" else want):
        raise ExportError(f"{out.name}: a {fmt} export must end in {want}")
    if not want and suffix in {s for s in FORMATS.values() if s}:
        raise ExportError(f"{out.name}: a SavedModel is a folder; give a name without {suffix}")
    return fmt


def _check_installed(fmt: str) -> None:
    import importlib.util

    needs = NEEDS.get(fmt)
    if needs is None:
        return
    missing = [m for m in needs[0] if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"{fmt} export needs {', '.join(missing)}, which is not installed: {needs[1]}")


def default_sample(model, n: int = 16, seed: int = 0) -> np.ndarray:
    """Random inputs of the model's input shape, for a check when no data is at hand."""
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ExportError(f"the model's input shape {shape} has unknown sizes; give data to check the export with")
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _run_export(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The exported artifact's outputs on ``x``, computed by the format's own runtime."""
    if fmt in ("keras", "h5"):
        from .models import load_model

        return np.asarray(load_model(path, compile=False).predict(x, verbose=0))
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return np.asarray(loaded.serve(tf.constant(x)))
    if fmt == "tflite":
        interpreter = _tflite_interpreter(path)
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(out["index"]))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _tflite_interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter  # TFLite's own runtime, where installed
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # "use ai_edge_litert": it is used where installed
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def _write(model, path: Path, fmt: str) -> None:
    if fmt in ("keras", "h5"):
        model.save(path)
    elif fmt == "savedmodel":
        model.export(str(path), format="tf_saved_model", verbose=False)
    elif fmt == "tflite":
        model.export(str(path), format="litert", verbose=False)
    else:
        model.export(str(path), format="onnx", verbose=False)


def export_model(src: str | Path, out: str | Path, fmt: str | None = None, x: np.ndarray | None = None,
                 sample_origin: str = "", unsafe: bool = False) -> ExportReport:
    """Write the archive ``src`` as ``fmt`` at ``out``, check it on ``x`` (random inputs when None),
    and return what was measured.

    Raises:
        ExportError: the format is unknown or not installed, the converter fails, or the export's
            outputs differ from the model's by more than :data:`TOLERANCE`.  Nothing is left at ``out``.
    """
    from .models import configure_tensorflow, load_model

    t0 = time.perf_counter()
    out = Path(out)
    fmt = format_for(out, fmt)
    _check_installed(fmt)
    model = load_model(src, unsafe=unsafe)
    if x is None:
        x, sample_origin = default_sample(model), "random inputs of the model's input shape"
    x = np.asarray(x, dtype="float32")
    configure_tensorflow()
    want = np.asarray(model.predict(x, verbose=0))
    result: dict[str, float] = {}

    def write_and_check(tmp: Path) -> None:
        from .models import captured_stderr

        unsupported: list[str] = []
        try:
            with captured_stderr() as printed, _converter_log() as unsupported:
                _write(model, tmp, fmt)
        except Exception as exc:  # noqa: BLE001 - converters raise anything; each becomes one message
            import re

            unsupported += re.findall(r"Custom ops: ([^\n]+)", printed()) + re.findall(r"Custom ops: ([^\n]+)", str(exc))
            if unsupported:
                raise ExportError(f"the model cannot be exported as {fmt}: the converter lacks "
                                  f"{', '.join(dict.fromkeys(unsupported))}; export as .keras or as a SavedModel "
                                  "instead") from exc
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ExportError(f"the model cannot be exported as {fmt}: {type(exc).__name__}: {first}. A layer the "
                              "converter lacks is the usual cause; export as .keras instead") from exc
        if unsupported:
            raise ExportError(f"the model cannot be exported as {fmt}: the converter lacks "
                              f"{', '.join(unsupported)}; export as .keras or as a SavedModel instead")
        try:
            got = _run_export(tmp, fmt, x)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"the {fmt} export was written but could not be run to check it: "
                              f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
        if got.shape != want.shape:
            raise ExportError(f"the {fmt} export gives outputs of shape {got.shape}, the model {want.shape}")
        diff = float(np.max(np.abs(got.astype("float64") - want))) if want.size else 0.0
        if not diff <= TOLERANCE:
            raise ExportError(f"the {fmt} export computes something else than the model (largest difference "
                              f"{diff:.3g} > {TOLERANCE:g}); it was not kept")
        result["diff"] = diff

    if FORMATS[fmt]:
        atomic_write(out, write_and_check)
    else:
        _atomic_folder(out, write_and_check)
    return ExportReport(str(src), str(out), fmt, len(x), sample_origin or "samples", result["diff"],
                        time.perf_counter() - t0)


@contextlib.contextmanager
def _converter_log():
    """Keep tf2onnx's error log out of the terminal; yield the operations it could not convert."""
    import logging
    import re

    found: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            m = re.search(r"Unsupported ops: Counter\((.*)\)", record.getMessage())
            if m:
                found.extend(re.findall(r"'([^']+)'", m.group(1)))

    logger = logging.getLogger("tf2onnx")
    handler, level, propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _atomic_folder(out: Path, write) -> None:
    """``atomic_write`` for a folder: build it under a hidden name, then swap it in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out.parent)


def sample_for(run_dir: str | Path | None, data: str | Path | None = None, n: int = 256) -> tuple[np.ndarray | None, str]:
    """Inputs to check an export with: ``data``'s test split (else its first samples), else the run's
    dataset as run.json names it; (None, "") when neither can be read (random inputs are used)."""
    import json

    from .data import load_dataset

    target = None
    if data is None and run_dir is not None:
        try:
            info = json.loads((Path(run_dir) / "run.json").read_text())
        except (OSError, ValueError):
            return None, ""
        data, target = info.get("data_source"), info.get("target")
    if not data:
        return None, ""
    try:
        ds = load_dataset(data, target=target)
    except InputError:
        if run_dir is not None:  # the run's dataset moved: check on random inputs instead
            return None, ""
        raise
    if ds.has_test:
        return ds.x_test[:n], f"test samples of {Path(data).name}"
    return ds.x[:n], f"samples of {Path(data).name}"
