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
    core), whose MNIST FNN epochs took 1.3-1.8x as long on 2 cores.  So importing the engine sets
    ``TF_NUM_INTRAOP_THREADS`` (TensorFlow reads it when its runtime starts; child processes inherit
    it), and where TensorFlow is imported already (``import keras`` first) but has run nothing, sets
    the count on it directly.  A count set by the user (that variable, ``MIHA_TF_THREADS``, or
    TensorFlow's own setting) is kept, and so is a TensorFlow that runs already."""
    import os
    import sys

    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
        return
    from .models import tensorflow_threads

    n = tensorflow_threads()
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            if tf.config.threading.get_intra_op_parallelism_threads():
                return
            tf.config.threading.set_intra_op_parallelism_threads(n)
        except Exception:  # noqa: BLE001 - started already (RuntimeError), or a partial import: leave it
            return
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)


_preset_threads()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'miha_engine' has no attribute {name!r}")
