"""MIHA engine: tune a Keras model's hyperparameters while it trains.

The heavy parts (Keras, TensorFlow) load lazily: ``import miha_engine`` is cheap, and the first
call that needs Keras pays for it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .config import GENE_KINDS, HIDDEN_ACTIVATIONS, OPTIMIZER_DEFAULT_LR, RunConfig, SearchSpace
from .data import Dataset, from_arrays, load_dataset
from .errors import (
    Cancelled,
    ConfigError,
    DatasetError,
    DivergedError,
    InputError,
    MihaError,
    ModelLoadError,
    RunFolderError,
)
from .genes import Genes
from .runlog import RunFolder
from .training import CancelToken

__all__ = [
    "GENE_KINDS", "HIDDEN_ACTIVATIONS", "OPTIMIZER_DEFAULT_LR", "RunConfig", "SearchSpace",
    "Dataset", "from_arrays", "load_dataset", "Cancelled", "ConfigError", "DatasetError",
    "DivergedError", "InputError", "MihaError", "ModelLoadError", "RunFolderError", "Genes",
    "RunFolder", "CancelToken", "run", "resume", "RunResult", "load_model", "summarize", "export_model", "replay", "fork",
    "LiveEdits", "insight",
]

_LAZY = {
    "run": ("runner", "run"),
    "resume": ("runner", "resume"),
    "fork": ("runner", "fork"),
    "LiveEdits": ("runner", "LiveEdits"),
    "insight": ("insight", "insight"),
    "RunResult": ("runner", "RunResult"),
    "load_model": ("models", "load_model"),
    "summarize": ("models", "summarize"),
    "export_model": ("export", "export_model"),
    "replay": ("schedule", "replay"),
}


def _preset_threads() -> None:
    """Give TensorFlow the engine's thread count (:func:`models.tensorflow_threads`) before it starts.

    ``configure_tensorflow`` sets it when a run begins, but TensorFlow fixes its threads when it first
    runs an op, so a caller who built the model before ``run`` kept TensorFlow's default (every
    core), which trained the MNIST FNN 20-50 % slower on 2 cores.  TensorFlow reads the variable when
    its runtime starts; where it is imported already (``import keras`` first) but has run nothing,
    the count is set on it directly.  A count the user set either way is kept."""
    import os
    import sys

    from .models import tensorflow_threads

    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(tensorflow_threads()))
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            if not tf.config.threading.get_intra_op_parallelism_threads():
                tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
        except (AttributeError, RuntimeError, ValueError):  # started already, or a partial import: keep it
            pass


_preset_threads()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'miha_engine' has no attribute {name!r}")
