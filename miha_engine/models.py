"""Keras models: load safely, summarise, rebuild with new genes, save atomically, export.

This module and :mod:`miha_engine.training` are the only ones that import Keras/TensorFlow, and
they do so lazily, so the app's window can appear before TensorFlow loads.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import os
import weakref
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULT_BATCH_SIZE, KNOWN_ACTIVATIONS, OPTIMIZER_DEFAULT_LR, RunConfig
from .errors import ModelLoadError
from .genes import Genes
from .runlog import atomic_write, atomic_write_bytes
from .snapshot import Snapshot

_TF_CONFIGURED: dict[str, Any] = {}



def tensorflow_threads() -> int:
    """Threads for one TensorFlow op: every core this process may use but one.

    The spare core runs the input pipeline, the app's window and the run's bookkeeping; measured on
    2 cores (``benchmarks/versus_keras.py``), one intra-op thread trained the MNIST FNN and the
    gap-filling CNN faster than two, which fought those for the cores.  ``MIHA_TF_THREADS`` sets it.
    """
    value = os.environ.get("MIHA_TF_THREADS", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    return max(1, _cores() - 1)


def _env_int(name: str) -> int:
    try:
        return max(0, int(os.environ.get(name, "").strip()))
    except ValueError:
        return 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_tensorflow() -> str:
    """Quiet TensorFlow's logs, set its threads (:func:`tensorflow_threads`), turn on GPU memory
    growth, and say which device trains.

    TensorFlow's C++ start-up lines ("oneDNN custom operations…", "Could not find cuda drivers…")
    go to a buffer, not the terminal: :func:`startup_log` gives them (``miha --verbose`` and
    ``MIHA_VERBOSE=1`` let them through)."""
    if "device" in _TF_CONFIGURED:
        return _TF_CONFIGURED["device"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with captured_stderr() as log:
        import tensorflow as tf

        threads = tensorflow_threads()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow was started first (a model built before me.run): keep its setting,
            # which is TF_NUM_INTRAOP_THREADS when set (``import miha_engine`` sets it) and reads as 0
            threads = (tf.config.threading.get_intra_op_parallelism_threads()
                       or _env_int("TF_NUM_INTRAOP_THREADS") or _cores())
        # the processes this one starts (a recycled engine, the app's engine child) use the same
        # number, so their sums run in the same order and their losses stay equal to this process's
        # (a Ray worker uses its member's CPUs instead: ray_evaluator._limit_threads)
        os.environ["MIHA_TF_THREADS"] = str(threads)
        _TF_CONFIGURED["threads"] = threads
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError):  # already initialised: keep going
                pass
    _TF_CONFIGURED["log"] = log()
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except Exception:  # noqa: BLE001
                names.append(gpu.name)
        device = "GPU: " + ", ".join(names)
    else:
        device = f"CPU ({os.cpu_count()} cores)"
    _TF_CONFIGURED["device"] = device
    return device


def startup_log() -> str:
    """What TensorFlow printed while it started (empty before it started, or when not captured)."""
    return _TF_CONFIGURED.get("log", "")


@contextlib.contextmanager
def captured_stderr():
    """Send file descriptor 2 (where TensorFlow's C++ logging writes) to a temporary file meanwhile;
    yields a function that returns what was written.  A no-op when ``MIHA_VERBOSE`` is set."""
    if os.environ.get("MIHA_VERBOSE") or not hasattr(os, "dup"):
        yield lambda: ""
        return
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        text = {"value": ""}
        try:
            yield lambda: text["value"]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text["value"] = buf.read().decode(errors="replace")


def _keras():
    configure_tensorflow()
    import keras

    return keras


# -- loading -----------------------------------------------------------------------------------

def load_model(path: str | Path, unsafe: bool = False, compile: bool = True):
    """Load a ``.keras`` or legacy ``.h5`` model in Keras' safe mode.

    Raises:
        ModelLoadError: with what is wrong and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give a .keras or .h5 model file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path.name} is not a Keras archive (a .keras file is a zip); it may be corrupt or truncated")
    elif suffix in (".h5", ".hdf5"):
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                raise ModelLoadError(f"{path.name} is not an HDF5 file; it may be corrupt or truncated")
    else:
        raise ModelLoadError(f"{path.name}: unknown model format {suffix or '(none)'}; give a .keras or .h5 file")
    keras = _keras()
    import warnings

    try:
        with warnings.catch_warnings():
            # An archive saved before training holds an unbuilt optimizer: Keras warns, harmlessly.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras.saving.load_model(path, compile=compile, safe_mode=not unsafe)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; each becomes one message
        raise ModelLoadError(_explain_load_error(path, exc)) from exc
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{path.name} holds a {type(model).__name__}, not a Keras model")
    return model


def _explain_load_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    low = text.lower()
    if "lambda" in low and ("safe" in low or "unsafe" in low):
        return (
            f"{path.name} contains a Lambda layer, whose code Keras refuses to run in safe mode. "
            "If you trust the file, load it with --unsafe-model; "
            "better, replace the Lambda by a built-in layer"
        )
    if "could not locate" in low or "unknown layer" in low or "custom_objects" in low or "registered" in low:
        return (
            f"{path.name} uses a custom layer or function that MIHA cannot rebuild ({text.splitlines()[0][:200]}). "
            "Register it with keras.saving.register_keras_serializable in an importable module, "
            "or use built-in layers"
        )
    if "version" in low and ("newer" in low or "keras" in low and "format" in low):
        return f"{path.name} was saved by an unknown or newer Keras format ({text.splitlines()[0][:200]}); upgrade Keras"
    if isinstance(exc, (zipfile.BadZipFile, KeyError, OSError, EOFError)) or "zip" in low or "truncated" in low:
        return f"{path.name} is corrupt or not a Keras model file ({type(exc).__name__}: {text.splitlines()[0][:200] if text else ''})"
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    return f"{path.name} cannot be loaded as a Keras model: {first}"


# -- summary ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerInfo:
    path: str
    class_name: str
    activation: str | None
    params: int
    output_shape: str


@dataclass(frozen=True)
class ModelInfo:
    """Plain values describing a model, for the CLI, the app and validation."""

    name: str
    layers: tuple[LayerInfo, ...]
    input_shape: Any
    output_shape: Any
    params: int
    compiled: bool
    loss: str | None
    optimizer: str | None
    learning_rate: float | None
    metrics: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        """Rebuild from ``dataclasses.asdict`` (``miha inspect --json``): the app inspects models in
        another process, so TensorFlow never runs on its GUI thread."""
        def shape(v):  # one input: a tuple; several: a list of tuples (as summarize gives them)
            return [tuple(x) for x in v] if v and isinstance(v[0], list) else tuple(v)

        return cls(**{**data, "layers": tuple(LayerInfo(**layer) for layer in data["layers"]),
                      "input_shape": shape(data["input_shape"]), "output_shape": shape(data["output_shape"]),
                      "metrics": tuple(data.get("metrics") or ())})

    def text(self) -> str:
        lines = [
            f"model {self.name}: {self.params:,} parameters, input {self.input_shape}, output {self.output_shape}",
            f"compiled: loss={self.loss or '—'} optimizer={self.optimizer or '—'}"
            + (f" lr={self.learning_rate:.3g}" if self.learning_rate else "")
            + (f" metrics={', '.join(self.metrics)}" if self.metrics else ""),
        ]
        for layer in self.layers:
            act = f" [{layer.activation}]" if layer.activation else ""
            lines.append(f"  {layer.path:<28} {layer.class_name:<18}{act:<14} {layer.params:>10,}  {layer.output_shape}")
        return "\n".join(lines)


def iter_layers(model, prefix: str = ""):
    """Yield ``(path, layer)`` for every layer, descending into nested models."""
    keras = _keras()
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield path, layer
            yield from iter_layers(layer, prefix=path + "/")
        else:
            yield path, layer


def _activation_name(layer) -> str | None:
    cfg = layer.get_config()
    act = cfg.get("activation")
    if isinstance(act, str):
        return act
    if isinstance(act, dict):
        return str(act.get("config", act.get("class_name", "custom")))
    return None


def _shape_text(layer) -> str:
    try:
        shape = layer.output.shape
        return str(tuple(shape))
    except Exception:  # noqa: BLE001
        return "?"


def loss_name(loss: Any) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return str(loss.get("class_name") or loss.get("config", {}).get("name"))
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
    return str(name)


def _from_logits(loss: Any) -> bool:
    if isinstance(loss, dict):
        return bool(loss.get("config", {}).get("from_logits", False))
    cfg = getattr(loss, "get_config", None)
    if callable(cfg):
        try:
            return bool(cfg().get("from_logits", False))
        except Exception:  # noqa: BLE001
            return False
    return False


def task_from_loss(loss: Any) -> str:
    """"sparse_categorical", "categorical", "binary" or "regression"."""
    name = (loss_name(loss) or "").lower().replace("_", "")
    if "sparsecategorical" in name:
        return "sparse_categorical"
    if "categorical" in name or name == "kldivergence" or "focal" in name and "categorical" in name:
        return "categorical"
    if "binary" in name:
        return "binary"
    return "regression"


def summarize(model) -> ModelInfo:
    layers = []
    for path, layer in iter_layers(model):
        layers.append(LayerInfo(path, type(layer).__name__, _activation_name(layer),
                                int(layer.count_params()) if layer.built else 0, _shape_text(layer)))
    loss = getattr(model, "loss", None) if getattr(model, "compiled", False) else None
    opt = getattr(model, "optimizer", None)
    lr = None
    if opt is not None:
        try:
            lr = float(np.asarray(opt.learning_rate))
        except Exception:  # noqa: BLE001
            lr = None
    metrics: tuple[str, ...] = ()
    try:
        cfg = model.get_compile_config() or {}
        metrics = tuple(_metric_name(m) for m in (cfg.get("metrics") or []))
    except Exception:  # noqa: BLE001
        pass

    def shape_of(t):
        if isinstance(t, (list, tuple)) and t and hasattr(t[0], "shape"):
            return [tuple(x.shape) for x in t]
        return tuple(t.shape)

    return ModelInfo(
        name=model.name,
        layers=tuple(layers),
        input_shape=shape_of(model.inputs if len(model.inputs) > 1 else model.inputs[0]),
        output_shape=shape_of(model.outputs if len(model.outputs) > 1 else model.outputs[0]),
        params=int(model.count_params()),
        compiled=bool(getattr(model, "compiled", False)),
        loss=loss_name(loss),
        optimizer=type(opt).__name__.lower() if opt is not None and getattr(model, "compiled", False) else None,
        learning_rate=lr,
        metrics=metrics,
    )


def _metric_name(m: Any) -> str:
    if isinstance(m, str):
        return m
    if isinstance(m, dict):
        return str(m.get("config", {}).get("name") or m.get("class_name"))
    return str(getattr(m, "name", m))


# -- compile spec and search slots --------------------------------------------------------------

def _deserialize(obj: Any) -> Any:
    keras = _keras()
    if isinstance(obj, dict) and "class_name" in obj:
        return keras.saving.deserialize_keras_object(obj)
    if isinstance(obj, list):
        return [_deserialize(o) for o in obj]
    return obj


@dataclass
class CompileSpec:
    """What every member is compiled with besides its optimizer: loss and metrics."""

    loss: Any
    metrics: list[Any]
    optimizer_template: Any = None

    @property
    def task(self) -> str:
        return task_from_loss(self.loss)

    @property
    def from_logits(self) -> bool:
        return _from_logits(self.loss)


def refuse_mixed_precision(model) -> None:
    """Raise ModelLoadError when ``model`` computes in mixed precision, which MIHA does not train yet:
    its members' loss-scale optimizers would be reset to zeros and train to NaN."""
    mixed = sorted({layer.dtype_policy.name for layer in model._flatten_layers()
                    if getattr(getattr(layer, "dtype_policy", None), "name", "").startswith("mixed")})
    if mixed or type(getattr(model, "optimizer", None)).__name__ == "LossScaleOptimizer":
        raise ModelLoadError(
            f"the model computes in mixed precision ({', '.join(mixed) or 'a loss-scale optimizer'}), which MIHA "
            "does not train yet (its members would lose the loss scale and train to NaN); build or load it under "
            "keras.mixed_precision.set_global_policy('float32') and train it with MIHA in float32")


def compile_spec(model, config: RunConfig) -> CompileSpec:
    """Read loss, metrics and optimizer from the model's compile config (or the run config)."""
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        cfg = model.get_compile_config() or {}
        loss = model.loss
        metrics = _deserialize(cfg.get("metrics")) or []
        if not isinstance(metrics, list):
            metrics = [metrics]
        template = model.optimizer
        if config.optimizer:
            template = None
        return CompileSpec(loss=loss, metrics=metrics, optimizer_template=template)
    if not config.loss:
        raise ModelLoadError(
            "the model is not compiled, so MIHA does not know its loss; give --loss "
            "(e.g. sparse_categorical_crossentropy or mse) and optionally --optimizer"
        )
    return CompileSpec(loss=config.loss, metrics=[], optimizer_template=None)


def activation_choices(model, spec: CompileSpec, config: RunConfig, y: np.ndarray | None) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """For each layer whose activation may change, the activations it may take.

    Hidden layers draw from the search space's hidden set.  The output layer draws only from what
    the loss allows: softmax stays softmax under a (sparse) categorical cross-entropy, sigmoid under a
    binary one, linear under any ``from_logits=True`` loss; a regression output may take the
    activations whose range covers the targets.  Layers whose activation is linear are left alone
    (a bottleneck, logits or projection by design), and so are recurrent layers and layers with a
    custom activation.

    Returns:
        The choices by layer path, and notes saying which layers were left alone and why.
    """
    keras = _keras()
    notes: list[str] = []
    choices: dict[str, tuple[str, ...]] = {}
    outputs = set(output_layer_paths(model))
    for path, layer in iter_layers(model):
        if isinstance(layer, keras.Model):
            continue
        cfg = layer.get_config()
        if "activation" not in cfg:
            continue
        act = _activation_name(layer)
        if "recurrent_activation" in cfg:
            notes.append(f"{path}: recurrent layer left alone (changing it breaks the fused kernel)")
            continue
        if act not in KNOWN_ACTIVATIONS:
            notes.append(f"{path}: custom activation {act!r} left alone")
            continue
        if path in outputs:
            allowed = _output_activations(spec, act, y)
            if len(allowed) <= 1:
                notes.append(f"{path}: output activation {act} kept (the loss {loss_name(spec.loss)} needs it)")
                continue
            choices[path] = allowed
        else:
            if act == "linear":
                notes.append(f"{path}: linear activation kept (linear layers are left alone)")
                continue
            choices[path] = tuple(dict.fromkeys((act, *config.search.hidden_activations)))
    return choices, notes


def _output_activations(spec: CompileSpec, current: str, y: np.ndarray | None) -> tuple[str, ...]:
    task = spec.task
    if spec.from_logits:
        return ("linear",)
    if task in ("sparse_categorical", "categorical"):
        return ("softmax",)
    if task == "binary":
        return ("sigmoid",)
    allowed = [current, "linear"]
    if y is not None and y.size:
        lo, hi = float(np.min(y)), float(np.max(y))
        if lo >= 0 and hi <= 1:
            allowed += ["sigmoid", "hard_sigmoid"]
        if lo >= 0:
            allowed += ["relu", "softplus"]
        if lo >= -1 and hi <= 1:
            allowed += ["tanh"]
    return tuple(dict.fromkeys(allowed))


def output_layer_paths(model, prefix: str = "") -> list[str]:
    """Paths of the layers that produce the model's outputs (descending into nested models)."""
    keras = _keras()
    paths = []
    for t in model.outputs:
        hist = getattr(t, "_keras_history", None)
        op = hist[0] if hist else (model.layers[-1] if model.layers else None)
        if op is None:
            continue
        path = f"{prefix}{op.name}"
        if isinstance(op, keras.Model):
            paths.extend(output_layer_paths(op, prefix=path + "/"))
        else:
            paths.append(path)
    return paths


def initial_genes(model, spec: CompileSpec, config: RunConfig, choices: Mapping[str, tuple[str, ...]]) -> Genes:
    opt = spec.optimizer_template
    if opt is not None:
        name = type(opt).__name__.lower()
        try:
            lr = float(f"{float(np.asarray(opt.learning_rate)):.6g}")  # float32 noise off
        except Exception:  # noqa: BLE001
            lr = OPTIMIZER_DEFAULT_LR.get(name, 1e-3)
    else:
        name = (config.optimizer or "adam").lower()
        if name not in OPTIMIZER_DEFAULT_LR:
            raise ModelLoadError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZER_DEFAULT_LR)}")
        lr = OPTIMIZER_DEFAULT_LR[name]
    acts = []
    by_path = dict(iter_layers(model))
    for path in choices:
        acts.append((path, _activation_name(by_path[path]) or "linear"))
    wd = getattr(opt, "weight_decay", None) if opt is not None and name == (
        type(opt).__name__.lower()) else None
    return Genes(optimizer=name, learning_rate=lr, batch_size=config.batch_size or DEFAULT_BATCH_SIZE,
                 activations=tuple(acts), weight_decay=float(f"{float(wd or 0.0):.6g}"),
                 dropouts=tuple((p, float(f"{float(layer.rate):.6g}")) for p, layer in dropout_layers(model)),
                 label_smoothing=loss_label_smoothing(spec.loss))


# -- genes that act without a new traced step ------------------------------------------------------
#
# Keras reads an optimizer's ``weight_decay`` and a ``Dropout`` layer's ``rate`` as plain Python
# values when it traces the train step, so changing them on a compiled model does nothing until the
# step is traced again.  Each pooled model instead gets a ``tf.Variable`` per knob that its traced
# step reads (the optimizer's weight-decay update and each Dropout layer's ``call`` are replaced on
# the instance), and a restore assigns the genes' values to them: a member with another weight decay
# or dropout rate reuses the traced step.  The Python attributes are kept equal to the variables, so
# a saved archive holds the values it trained with and loads as plain Keras.  Label smoothing lives
# in the loss, which Keras traces with a Python ``if``: a pooled model gets its own loss instance
# whose function smooths the labels by a variable first (exactly Keras' formula) and then calls
# Keras' own function without smoothing.

#: Losses whose Keras class takes ``label_smoothing``.
SMOOTHABLE_LOSSES = {
    "categoricalcrossentropy": "CategoricalCrossentropy",
    "binarycrossentropy": "BinaryCrossentropy",
    "categoricalfocalcrossentropy": "CategoricalFocalCrossentropy",
    "binaryfocalcrossentropy": "BinaryFocalCrossentropy",
}


def _loss_key(loss: Any) -> str:
    return (loss_name(loss) or "").lower().replace("_", "")


def loss_label_smoothing(loss: Any) -> float | None:
    """The label smoothing of ``loss`` (0.0 when it takes smoothing but has none); None when the loss
    cannot smooth labels (sparse categorical cross-entropy, regression losses)."""
    if _loss_key(loss) not in SMOOTHABLE_LOSSES:
        return None
    get = getattr(loss, "get_config", None)
    if callable(get):
        try:
            return float(get().get("label_smoothing", 0.0) or 0.0)
        except Exception:  # noqa: BLE001
            return 0.0
    return 0.0


def smoothing_by_variable(loss: Any) -> bool:
    """Whether a pooled model may read ``loss``'s label smoothing from a variable (see
    :func:`install_knobs`): Keras' own loss, given by name, function or an instance of exactly its
    class.  A subclass or a function of the user's own that goes by a Keras name is kept as given
    (each smoothing value then has its own pooled model)."""
    key = _loss_key(loss)
    if key not in SMOOTHABLE_LOSSES:
        return False
    if isinstance(loss, str):
        return True
    cls = getattr(_keras().losses, SMOOTHABLE_LOSSES[key])
    if isinstance(loss, type) or not callable(loss):
        return False
    if type(loss) is cls:
        return True
    return not hasattr(loss, "get_config") and getattr(loss, "__module__", "").startswith("keras.")


def smoothed_loss(loss: Any, label_smoothing: float | None, fresh: bool = False):
    """``loss`` with the given label smoothing (the loss itself when there is nothing to change,
    unless ``fresh``: then always a new instance of its Keras class, which a pooled model may patch)."""
    if label_smoothing is None or _loss_key(loss) not in SMOOTHABLE_LOSSES:
        return loss
    if loss_label_smoothing(loss) == float(label_smoothing) and not fresh:
        return loss
    keras = _keras()
    cls = getattr(keras.losses, SMOOTHABLE_LOSSES[_loss_key(loss)])
    cfg: dict[str, Any] = {}
    get = getattr(loss, "get_config", None)
    if callable(get):
        with contextlib.suppress(Exception):
            cfg = dict(get())
    cfg.pop("name", None)
    cfg["label_smoothing"] = float(label_smoothing)
    known = {"from_logits", "label_smoothing", "axis", "reduction", "alpha", "gamma", "apply_class_balancing",
             "dtype"}
    return cls(**{k: v for k, v in cfg.items() if k in known})


def dropout_layers(model) -> list[tuple[str, Any]]:
    """``(path, layer)`` of every plain ``Dropout`` layer (not the spatial or alpha kinds)."""
    keras = _keras()
    return [(p, layer) for p, layer in iter_layers(model)
            if type(layer) is keras.layers.Dropout]  # noqa: E721 - subclasses shape their noise otherwise


class _Knobs:
    """The variables a pooled model's traced step reads for weight decay, dropout rates and switched
    activations."""

    def __init__(self) -> None:
        self.weight_decay = None
        self.dropout: dict[str, Any] = {}
        #: layer path -> (index variable, the activation names it chooses from)
        self.activation: dict[str, tuple[Any, tuple[str, ...]]] = {}
        #: (smoothing variable, the compiled loss instance) when the loss smooths labels
        self.label_smoothing: tuple[Any, Any] | None = None
        #: optimizer kind -> its optimizer, built on this model when a member first takes the kind,
        #: when one model serves every optimizer kind of the run (see :func:`add_optimizer`)
        self.optimizers: dict[str, Any] | None = None
        #: whether the compiled loss's and metrics' variables were built before any trace
        self.compiled_state = False


#: Keras layers that apply ``self.activation`` to their output at call time: their activation can be
#: switched by a variable inside one traced step (see :func:`install_knobs`).
SWITCHABLE_LAYERS = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                     "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D",
                     "Activation")


def switchable_slots(model, choices: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The activation slots of ``model`` that one traced step can serve with every choice: a Keras
    layer that calls its ``activation`` attribute, with more than one choice."""
    by_path = dict(iter_layers(model))
    return {path: tuple(names) for path, names in choices.items()
            if len(names) > 1 and path in by_path and type(by_path[path]).__name__ in SWITCHABLE_LAYERS
            and type(by_path[path]).__module__.startswith("keras.") and callable(getattr(by_path[path], "activation", None))}


_KNOBS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: How many times each model's training chunks (with the train step in them) were traced, by
#: ``id(model)``: a test counts retraces.  A model has a chunk per optimizer it trains with.
TRACES: collections.Counter = collections.Counter()
#: How many times a model that serves several optimizer kinds had its forward and backward pass traced
#: (once: every kind's chunk calls the same traced pass), by ``id(model)``.
STEP_TRACES: collections.Counter = collections.Counter()


def install_knobs(model, genes: Genes, switch: Mapping[str, tuple[str, ...]] | None = None,
                  smoothing: bool = False, switch_optimizers: bool = False) -> None:
    """Give ``model`` (compiled) variables for the genes that can change without a retrace.

    ``switch`` (see :func:`switchable_slots`): layers whose activation becomes a ``tf.switch_case``
    on an index variable, so one traced step serves every activation of the slot (only the chosen
    branch runs).  The layer's ``get_config`` names the chosen activation, so a saved archive is
    plain Keras.

    ``smoothing``: the compiled loss is this model's own instance of a Keras loss class (see
    :func:`smoothing_by_variable`), whose function may read the label smoothing from a variable.

    ``switch_optimizers``: the model serves every optimizer kind of the run: each kind is a plain
    Keras optimizer built on it when first needed (:func:`add_optimizer`), and the chosen one is
    ``model.optimizer`` (:func:`select_optimizer`), so snapshots, configs and archives are that
    optimizer's.  The trainer traces the model's forward and backward pass once, and each kind's
    update once (``training._CompiledLoop``)."""
    import tensorflow as tf

    keras = _keras()
    knobs = _Knobs()
    if switch_optimizers:
        knobs.optimizers = {genes.optimizer: model.optimizer}
    by_path = dict(iter_layers(model)) if switch else {}
    for path, names in (switch or {}).items():
        layer = by_path[path]
        fns = tuple(keras.activations.get(n) for n in names)
        var = tf.Variable(0, trainable=False, dtype=tf.int32, name="miha_activation")
        knobs.activation[path] = (var, tuple(names))

        def switched(x, _var=var, _fns=fns):
            return tf.switch_case(tf.convert_to_tensor(_var), [(lambda f=f: f(x)) for f in _fns])

        def get_config(_layer=layer, _var=var, _fns=fns, _class=layer.__class__.get_config):
            current = _layer.activation
            _layer.activation = _fns[int(_var.numpy())]
            try:
                return _class(_layer)
            finally:
                _layer.activation = current

        layer.activation = switched
        layer.get_config = get_config
    opt = model.optimizer
    if genes.weight_decay is not None and opt is not None:
        knobs.weight_decay = tf.Variable(float(genes.weight_decay), trainable=False, dtype=tf.float32,
                                         name="miha_weight_decay")
        _decay_by_variable(opt, knobs.weight_decay)
    loss = getattr(model, "loss", None)
    if smoothing and genes.label_smoothing is not None and callable(getattr(loss, "fn", None)):
        # float64, as Keras computes ``1 - smoothing`` and ``0.5 * smoothing`` on Python floats
        var = tf.Variable(float(genes.label_smoothing), trainable=False, dtype=tf.float64, name="miha_smoothing")
        knobs.label_smoothing = (var, loss)
        binary = type(loss).__name__.startswith("Binary")

        def smoothed(y_true, y_pred, label_smoothing=0.0, _fn=loss.fn, _var=var, _binary=binary, **kwargs):
            # what Keras' loss function does for ``if label_smoothing:``, with the smoothing read from
            # the variable (a smoothing of 0 leaves the labels exactly as they are)
            y_pred = tf.convert_to_tensor(y_pred)
            y_true = tf.cast(y_true, y_pred.dtype)
            keep = tf.cast(1.0 - _var, y_pred.dtype)
            if _binary:
                y_true = y_true * keep + tf.cast(0.5 * _var, y_pred.dtype)
            else:
                y_true = y_true * keep + tf.cast(_var, y_pred.dtype) / tf.cast(tf.shape(y_true)[-1], y_pred.dtype)
            return _fn(y_true, y_pred, label_smoothing=0.0, **kwargs)

        loss.fn = smoothed
    for path, layer in dropout_layers(model):
        var = tf.Variable(float(layer.rate), trainable=False, dtype=tf.float32, name="miha_dropout")
        knobs.dropout[path] = var

        def call(inputs, training=False, _layer=layer, _var=var):
            if not training:
                return inputs
            from keras.src.random.seed_generator import draw_seed

            seed = tf.cast(draw_seed(_layer.seed_generator), tf.int32)
            noise_shape = _layer.noise_shape
            if noise_shape is not None:
                noise_shape = [tf.shape(inputs)[i] if d is None else d for i, d in enumerate(noise_shape)]
            rate = tf.cast(_var, inputs.dtype)
            return tf.nn.experimental.stateless_dropout(inputs, rate=rate, noise_shape=noise_shape, seed=seed)

        layer.call = call
    _KNOBS[model] = knobs
    set_knobs(model, genes)


def _decay_by_variable(opt, var) -> None:
    """Make ``opt`` read its weight decay from ``var`` (so a new decay needs no new traced step), and
    name the variable's value in its config."""
    import tensorflow as tf

    keras = _keras()
    class_config = type(opt).get_config

    def apply_weight_decay(variables, _opt=opt, _var=var):
        def decay():
            for variable in variables:
                if _opt._use_weight_decay(variable):
                    v = variable.value if isinstance(variable, keras.Variable) else variable
                    v.assign_sub(v * tf.cast(_var, v.dtype) * tf.cast(_opt.learning_rate, v.dtype))
            return tf.constant(True)

        tf.cond(_var > 0, decay, lambda: tf.constant(False))

    def get_config(_opt=opt, _var=var, _class=class_config):
        cfg = _class(_opt)
        wd = float(_var.numpy())
        cfg["weight_decay"] = wd if wd > 0 or type(_opt).__name__ == "AdamW" else None
        return cfg

    opt._apply_weight_decay = apply_weight_decay
    opt.get_config = get_config


def uses_only_keras_layers(model) -> bool:
    """True when every layer is one of Keras' own, none a ``Lambda`` (whose function, like a custom
    layer's, may call TensorFlow's stateful random ops)."""
    keras = _keras()
    return all(type(layer).__module__.startswith("keras.") and not isinstance(layer, keras.layers.Lambda)
               for layer in model._flatten_layers())


def set_random_seed(seed: int, keep_kernels: bool = True) -> None:
    """What ``keras.utils.set_random_seed`` does (Python's, NumPy's, Keras' and TensorFlow's global
    seeds), without clearing TensorFlow's kernel cache.

    ``tf.random.set_seed`` clears that cache, and every kernel of every model is then made again:
    measured, the next fit's first epoch took ≈110 ms longer, once per member (a quarter of MIHA's
    overhead over one model's training). The seeds set are the same, so a ``tf.data`` shuffle or a
    Keras random op draws what it drew before; the kernels MIHA runs take explicit seeds (stateless
    dropout, seeded shuffles), so keeping them changes no result. A stateful random op (a custom or
    ``Lambda`` layer calling ``tf.random.uniform``) would go on with its stream instead of starting it
    again: for such models pass ``keep_kernels=False``, which is Keras' own function. It is also the
    fallback where TensorFlow's or Keras' internals differ.
    """
    import random

    import keras

    if not keep_kernels:
        keras.utils.set_random_seed(seed)
        return
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
        from tensorflow.python.eager import context

        ctx = context.context()
        if not (hasattr(ctx, "_seed") and hasattr(ctx, "_rng")):
            raise AttributeError("TensorFlow's context keeps its seed elsewhere")
        global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        random.seed(seed)
        np.random.seed(seed)
        ctx._seed = seed
        ctx._rng = random.Random(seed)
    except (ImportError, AttributeError):
        keras.utils.set_random_seed(seed)


def reset_seed_generators(model, seed: int) -> None:
    """Set the state of every layer's random stream (Dropout's, GaussianNoise's) from ``seed``.

    Keras keeps these streams in the layers, apart from the weights and from the global seed, so a
    pooled model's dropout masks would depend on what it trained before; a member and a main-line
    phase reset them from their own seeds instead, so they train alike wherever and whenever they run.
    """
    for i, (_, layer) in enumerate(iter_layers(model)):
        gen = getattr(layer, "seed_generator", None)
        state = getattr(gen, "state", None)
        if state is not None:
            state.assign(np.array([(seed * 7919 + i) % (2**31 - 1), 0], dtype=state.dtype))


def set_knobs(model, genes: Genes) -> None:
    """Put the genes' weight decay, dropout rates and switched activations into ``model``'s variables
    (and attributes)."""
    knobs = _KNOBS.get(model)
    if knobs is None:
        return
    for path, name in genes.activations:
        entry = knobs.activation.get(path)
        if entry is not None:
            if name not in entry[1]:
                raise ValueError(f"layer {path}: activation {name!r} is not one this run's model can switch to "
                                 f"({', '.join(entry[1])})")
            entry[0].assign(entry[1].index(name))
    if knobs.label_smoothing is not None and genes.label_smoothing is not None:
        var, loss = knobs.label_smoothing
        var.assign(float(genes.label_smoothing))
        loss.label_smoothing = float(genes.label_smoothing)  # what its get_config (an archive) names
        loss._fn_kwargs["label_smoothing"] = float(genes.label_smoothing)
    if knobs.weight_decay is not None and genes.weight_decay is not None:
        knobs.weight_decay.assign(float(genes.weight_decay))
        model.optimizer.weight_decay = float(genes.weight_decay) if genes.weight_decay > 0 else None
    if not knobs.dropout:
        return
    by_path = dict(iter_layers(model))
    for path, rate in genes.dropouts:
        var = knobs.dropout.get(path)
        if var is not None:
            var.assign(float(rate))
            by_path[path].rate = float(rate)


def switches_optimizers(model) -> bool:
    """Whether ``model`` serves every optimizer kind of the run (see :func:`install_knobs`)."""
    knobs = _KNOBS.get(model)
    return knobs is not None and knobs.optimizers is not None


def shares_forward_pass(model) -> bool:
    """Whether the trainer may trace ``model``'s forward and backward pass once for every optimizer
    kind it serves (``training._shared_step``, which is Keras' own ``train_step`` split in two): the
    model serves several kinds, trains with Keras' own ``train_step`` (not a class of the user's own
    that overrides it), has trainable weights, and its compiled loss and metrics were built eagerly
    (else they would be created while the pass is traced inside a chunk's trace)."""
    knobs = _KNOBS.get(model)
    if knobs is None or knobs.optimizers is None or not knobs.compiled_state or not model.trainable_weights:
        return False
    try:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    except ImportError:
        return False
    return type(model).train_step is TensorFlowTrainer.train_step


def add_optimizer(model, kind: str, opt) -> None:
    """Give a model that serves every optimizer kind its optimizer of ``kind`` (``opt``, not built):
    built on the model's trainable variables, its first state kept for resets, its weight decay read
    from the model's variable."""
    knobs = _KNOBS[model]
    _build_optimizer(opt, model)
    if knobs.weight_decay is not None:
        _decay_by_variable(opt, knobs.weight_decay)
    knobs.optimizers[kind] = opt


def select_optimizer(model, kind: str) -> None:
    """Make ``model``'s optimizer of ``kind`` its ``model.optimizer`` (and the one its archive names);
    nothing for a model that does not serve several kinds."""
    knobs = _KNOBS.get(model)
    if knobs is None or knobs.optimizers is None:
        return
    if kind not in knobs.optimizers:
        raise ValueError(f"optimizer {kind!r} is not built on this model ({', '.join(knobs.optimizers)})")
    opt = knobs.optimizers[kind]
    if model.optimizer is not opt:
        model.optimizer = opt
        model._compile_config.config["optimizer"] = opt  # what get_compile_config (an archive) names


# -- building members ---------------------------------------------------------------------------

def make_optimizer(name: str, lr: float, template=None):
    keras = _keras()
    if template is not None and type(template).__name__.lower() == name:
        cfg = template.get_config()
        cfg["learning_rate"] = float(lr)
        return type(template).from_config(cfg)
    classes = {
        "sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop, "adadelta": keras.optimizers.Adadelta,
        "nadam": keras.optimizers.Nadam, "adamax": keras.optimizers.Adamax,
        "adagrad": keras.optimizers.Adagrad,
    }
    if name not in classes:
        raise ModelLoadError(f"unknown optimizer {name!r}")
    kwargs: dict[str, Any] = {"learning_rate": float(lr)}
    if name == "sgd":
        kwargs["momentum"] = 0.9
    return classes[name](**kwargs)


def _set_activations(config: dict[str, Any], changes: Mapping[str, str], prefix: str = "") -> None:
    for entry in config.get("layers", []):
        cfg = entry.get("config", {})
        name = cfg.get("name") or entry.get("name")
        path = f"{prefix}{name}"
        if path in changes:
            cfg["activation"] = changes[path]
        if isinstance(cfg.get("layers"), list):
            _set_activations(cfg, changes, prefix=path + "/")


def rebuild(model, activations: Mapping[str, str]):
    """A new model of the same topology with some activations changed; weights copied exactly."""
    keras = _keras()
    config = copy.deepcopy(model.get_config())
    _set_activations(config, activations)
    if isinstance(model, keras.Sequential):
        new = keras.Sequential.from_config(config)
    else:
        new = type(model).from_config(config)
    new.set_weights(model.get_weights())
    return new


def recompile(model, spec: CompileSpec, spe: int, jit: bool | str) -> None:
    """Compile again with other execution settings, keeping the optimizer, its state and the loss
    (with its label smoothing)."""
    loss = model.loss if getattr(model, "loss", None) is not None else spec.loss
    model.compile(optimizer=model.optimizer, loss=loss, metrics=spec.metrics,
                  steps_per_execution=spe, jit_compile=jit)


def build_compiled_state(model, x, y) -> bool:
    """Create the compiled loss's and metrics' variables now, eagerly, from one sample.

    Without a distribution strategy Keras creates them while it traces the first train (or test)
    step, and a variable created while tracing makes TensorFlow trace that step a second time:
    measured, every new model of a run traced its train step twice.  Metrics are reset at the start
    of every fit and evaluation, so this changes no result.  Returns False (and leaves the building
    to Keras) when the model cannot be called on one sample.
    """
    try:
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred)
        model.compute_metrics(x, y, y_pred)
        model.reset_metrics()
        return True
    except Exception:  # noqa: BLE001 - e.g. a fixed batch size: Keras builds them as before
        return False


# -- saving ------------------------------------------------------------------------------------

def save_model(model, path: str | Path) -> Path:
    """Save as a ``.keras`` archive, atomically (see :func:`miha_engine.runlog.atomic_write`)."""
    return atomic_write(Path(path), model.save)


@functools.cache
def _recording_store(h5_store) -> type:
    """A stand-in for Keras' weights store (a subclass of its ``H5IOStore``, which Keras' saver
    insists on) that writes nothing: it keeps a copy of every entry (path, metadata, the variables'
    values) in order, for :func:`archive_writer` to write later."""

    class RecordingStore(h5_store):
        def __init__(self) -> None:  # no file: nothing of H5IOStore's own state is used
            self.entries: list[tuple[str, dict | None, list[tuple[str, np.ndarray]]]] = []

        def __bool__(self) -> bool:  # Keras saves a saveable's variables only "if weights_store"
            return True

        def make(self, path, metadata=None):
            self.entries.append((path, metadata, []))
            return self

        def __setitem__(self, key, value) -> None:
            from keras import ops

            self.entries[-1][2].append((key, np.array(ops.convert_to_numpy(value), copy=True)))

        def close(self) -> None:
            pass

    return RecordingStore


def archive_bytes(model) -> bytes:
    """``model``'s ``.keras`` archive as bytes (written through a temporary file, as Keras writes it)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="miha-archive-") as tmp:
        return save_model(model, Path(tmp) / "model.keras").read_bytes()


def archive_writer(model) -> ArchiveCopy:
    """An :class:`ArchiveCopy` of ``model``'s ``.keras`` archive *as it is now*, whatever happens to
    the model afterwards: the config is serialized and every variable copied here, and the archive
    is laid out later (on another thread, or in another process: the copy pickles) by Keras' own
    stores, exactly as ``model.save`` lays it out.  Where Keras' saver is not the one this was
    written against, or a layer keeps assets (a lookup table's vocabulary), the copy is a whole
    archive written into memory now.  ``tests/test_models.py`` compares its archives with Keras' own."""
    try:
        from keras.src.saving import saving_lib as sl

        serialize, save_state = sl._serialize_model_as_json, sl._save_state
        sl.H5IOStore, sl.DiskIOStore, sl._VARS_FNAME_H5  # noqa: B018 - what ArchiveCopy writes with
    except (ImportError, AttributeError):
        serialize = None
    if serialize is None or any(hasattr(layer, "save_assets") for layer in model._flatten_layers()):
        return ArchiveCopy(data=archive_bytes(model))
    config_json, metadata_json = serialize(model)
    record = _recording_store(sl.H5IOStore)()
    save_state(model, weights_store=record, assets_store=None, inner_path="", visited_saveables=set())
    return ArchiveCopy(metadata_json=metadata_json, config_json=config_json, entries=record.entries)


@dataclass(eq=False)
class ArchiveCopy:
    """A model's ``.keras`` archive, copied and not yet written: call it with a path to write it
    (atomically).  Either the archive's bytes, or what Keras' saver would write (the metadata and
    config JSON, and every saveable's variables in order), laid out by Keras' own stores."""

    data: bytes | None = field(default=None, repr=False)
    metadata_json: str = field(default="", repr=False)
    config_json: str = field(default="", repr=False)
    entries: list = field(default_factory=list, repr=False)

    def __call__(self, path: str | Path) -> Path:
        if self.data is not None:
            return atomic_write_bytes(Path(path), self.data)
        return atomic_write(Path(path), self._lay_out)

    def _lay_out(self, tmp: Path) -> None:
        from keras.src.saving import saving_lib as sl

        with open(tmp, "wb") as f, zipfile.ZipFile(f, "w") as zf:
            zf.writestr(sl._METADATA_FILENAME, self.metadata_json)
            zf.writestr(sl._CONFIG_FILENAME, self.config_json)
            weights = sl.H5IOStore(sl._VARS_FNAME_H5, archive=zf, mode="w")
            try:
                for path, metadata, values in self.entries:
                    weights.make(path, metadata=metadata)
                    for key, value in values:
                        weights[key] = value
            finally:
                weights.close()
            sl.DiskIOStore(sl._ASSETS_DIRNAME, archive=zf, mode="w").close()


# -- snapshots and the model pool ----------------------------------------------------------------

def snapshot(model, genes: Genes) -> Snapshot:
    opt = getattr(model, "optimizer", None)
    opt_vars = None
    if opt is not None and getattr(opt, "built", False):
        opt_vars = [np.array(v.numpy(), copy=True) for v in opt.variables]
    return Snapshot(genes, [np.array(w, copy=True) for w in model.get_weights()],
                    type(opt).__name__.lower() if opt is not None else genes.optimizer, opt_vars)


def restore(model, snap: Snapshot, genes: Genes, weights: list[np.ndarray] | None = None) -> bool:
    """Load ``snap`` into ``model`` (whose optimizer is of ``genes.optimizer``'s kind).

    The optimizer state is carried exactly when the kind is unchanged, else reset to a fresh
    state; then the learning rate is set to ``genes.learning_rate``.

    Returns:
        True when the optimizer state was carried over.
    """
    model.set_weights(snap.weights if weights is None else weights)
    select_optimizer(model, genes.optimizer)
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    carried = False
    if snap.optimizer == genes.optimizer and snap.optimizer_vars is not None:
        if len(snap.optimizer_vars) == len(opt.variables) and all(
                tuple(a.shape) == tuple(v.shape) for a, v in zip(snap.optimizer_vars, opt.variables)):
            for a, v in zip(snap.optimizer_vars, opt.variables):
                v.assign(a)
            carried = True
    if not carried:
        fresh = _FRESH_OPTIMIZER.get(opt)
        if fresh is None or len(fresh) != len(opt.variables):
            fresh = [np.zeros(tuple(v.shape), dtype=v.dtype) for v in opt.variables]
        for v, a in zip(opt.variables, fresh):
            v.assign(a)
    opt.learning_rate = float(genes.learning_rate)
    set_knobs(model, genes)
    return carried


#: Each pooled optimizer's variables as first built (Adagrad's accumulators start at 0.1,
#: Nadam's u_product at 1): a reset to "a fresh optimizer" restores these, not zeros.
_FRESH_OPTIMIZER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _build_optimizer(opt, model) -> None:
    """Build a pooled model's optimizer on its trainable variables and keep its first state for resets."""
    opt.build(model.trainable_variables)
    _FRESH_OPTIMIZER[opt] = [np.array(v.numpy(), copy=True) for v in opt.variables]

#: The most memory (MB) one model may spend on the state of every optimizer kind of the run (its
#: slots per weight, float32); above it each kind keeps a pooled model of its own.
OPTIMIZER_SWITCH_MB = 256
_OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2, "adamw": 2, "rmsprop": 1, "adadelta": 2, "nadam": 2, "adamax": 2,
                    "adagrad": 1}


class ModelPool:
    """Compiled models kept for reuse: one per optimizer kind (one for every kind when the backend
    passes ``optimizers``, ``MIHA_OPTIMIZER_SWITCH=1``), and one per activation that no switch serves (label smoothing too where the loss is the user's own
    class).

    Building, compiling and tracing (plus XLA compilation) a fresh model costs more than an epoch
    of a small network; members that differ from a previous one only by learning rate or batch
    size reuse its compiled model and its traced step.  The pool is bounded (least recently used
    out), so memory stays flat over any number of cycles.
    """

    def __init__(self, base, spec: CompileSpec, spe: int, jit, max_size: int = 6, sample=None,
                 choices: Mapping[str, tuple[str, ...]] | None = None, optimizers: Sequence[str] = ()):
        self.base = base
        self.spec = spec
        #: activation slots that one traced step serves with every choice (see :func:`install_knobs`);
        #: none under XLA: a ``switch_case`` inside an XLA-compiled step crashed TensorFlow 2.20 (a
        #: segmentation fault, tests/test_cli.py), so XLA keeps one model per activation
        self._choices = dict(choices or {})
        self.switched = switchable_slots(base, self._choices) if jit is not True else {}
        #: a loss whose label smoothing one traced step serves (through a variable, see install_knobs)
        self._smoothable = smoothing_by_variable(spec.loss)
        #: optimizer kinds that one model serves (see :func:`install_knobs`); a kind outside them (the
        #: search space edited during a run) gets a pooled model of its own
        self._kinds = tuple(dict.fromkeys(o.lower() for o in optimizers))
        self.optimizer_kinds = self._switch_kinds(jit)
        #: one training sample (x, y): a new model's compiled loss and metrics are built with it
        self.sample = sample
        self.spe = spe
        self.jit = jit
        self.max_size = max_size
        self._models: dict[tuple, Any] = {}
        self.built = 0
        self.reused = 0
        self.evicted = 0

    def _switch_kinds(self, jit) -> tuple[str, ...]:
        """The optimizer kinds one model serves: none under XLA (as for activations), with a single
        kind, with an optimizer that keeps more than its slots (an EMA, accumulated gradients), scales
        its loss, or is a class of the user's own, or when every kind's state would take more than
        ``OPTIMIZER_SWITCH_MB``."""
        template = self.spec.optimizer_template
        if jit is not False or len(self._kinds) < 2:  # "auto" may turn XLA on (on a GPU)
            return ()
        if template is not None and (
                getattr(template, "use_ema", False) or getattr(template, "gradient_accumulation_steps", None)
                or getattr(template, "loss_scale_factor", None) is not None
                or not type(template).__module__.startswith("keras.")):
            return ()
        weights = sum(int(np.prod(w.shape)) for w in self.base.trainable_weights)
        slots = sum(_OPTIMIZER_SLOTS.get(kind, 3) for kind in self._kinds)
        if weights * 4 * slots / 2**20 > OPTIMIZER_SWITCH_MB:
            return ()
        return self._kinds

    def key(self, genes: Genes) -> tuple:
        """What needs a model of its own: an optimizer kind that no model serves with the others, any
        activation that no switch serves, and the label smoothing of a loss of the user's own (switched
        optimizers and activations, a Keras loss's smoothing, weight decay, dropout rates, learning
        rate and batch size do not)."""
        fixed = tuple((p, a) for p, a in genes.activations if p not in self.switched)
        kind = "*" if genes.optimizer in self.optimizer_kinds else genes.optimizer
        smoothing = genes.label_smoothing if genes.label_smoothing is None or not self._smoothable else "*"
        return (fixed, kind, smoothing, genes.weight_decay is None)

    def get(self, genes: Genes):
        """A compiled model for ``genes`` (its optimizer of their kind selected); its state is whatever
        it last held: :func:`restore` a snapshot into it."""
        key = self.key(genes)
        model = self._models.pop(key, None)
        if model is None:
            model = rebuild(self.base, dict(genes.activations))
            template = self.spec.optimizer_template
            opt = make_optimizer(genes.optimizer, genes.learning_rate, template)
            model.compile(optimizer=opt, loss=smoothed_loss(self.spec.loss, genes.label_smoothing,
                                                            fresh=self._smoothable),
                          metrics=self.spec.metrics, steps_per_execution=self.spe, jit_compile=self.jit)
            _build_optimizer(opt, model)
            built_state = self.sample is not None and build_compiled_state(model, *self.sample)
            install_knobs(model, genes, self.switched, smoothing=self._smoothable, switch_optimizers=key[1] == "*")
            _KNOBS[model].compiled_state = built_state
            self.built += 1
        else:
            self.reused += 1  # its knobs (activation switches among them) are set by restore()
            if key[1] == "*" and genes.optimizer not in _KNOBS[model].optimizers:
                add_optimizer(model, genes.optimizer,
                              make_optimizer(genes.optimizer, genes.learning_rate, self.spec.optimizer_template))
        select_optimizer(model, genes.optimizer)
        self._models[key] = model
        while len(self._models) > self.max_size:
            oldest = next(iter(self._models))
            del self._models[oldest]
            self.evicted += 1
        return model

    def disable_jit(self) -> None:
        """XLA failed: later models compile without it (existing ones are recompiled on use)."""
        self.jit = False
        self.evicted += len(self._models)
        self._models.clear()
        self.switched = switchable_slots(self.base, self._choices)
        self.optimizer_kinds = self._switch_kinds(False)
