"""Training: one member or one phase at a time, at the hardware's pace, stoppable at any batch.

Speed: inputs come from a cached ``tf.data`` pipeline (reshuffled every epoch), several batches run
per compiled call (``steps_per_execution``) and XLA compiles the step where the model allows it.
A model XLA cannot compile falls back to plain graph execution, once, and the run notes it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .calibration import CALIBRATED, temperature_nll
from .config import RunConfig
from .data import Dataset
from .errors import Cancelled

#: Upper bound of batches per compiled call when steps_per_execution is "auto".  The cancel token
#: is checked between calls, so this also bounds the stop latency.
AUTO_MAX_STEPS_PER_EXECUTION = 16


class CancelToken:
    """A thread-safe flag: set it from any thread; training stops at the next compiled call."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the run was stopped")


EpochCallback = Callable[[int, float, float | None, float], None]


@dataclass
class FitResult:
    losses: list[float]
    val_losses: list[float]
    diverged: bool
    #: every compiled metric's per-epoch value, by Keras' log name ("accuracy", "val_accuracy", ...)
    metrics: dict[str, list[float]] = field(default_factory=dict)


class Trainer:
    """Trains models on one dataset with the run's execution settings."""

    def __init__(self, data: Dataset, config: RunConfig, cancel: CancelToken, seed: int,
                 calibration: tuple[str, bool] | None = None):
        import tensorflow as tf

        self._tf = tf
        self.data = data
        self.config = config
        self.cancel = cancel
        self.seed = seed
        self._shuffle_counter = 0
        self._base = tf.data.Dataset.from_tensor_slices((data.x, data.y)).cache()
        self._val = None
        if data.has_validation:
            self._val = (
                tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val))
                .batch(max(256, config.batch_size or 32)).cache().prefetch(tf.data.AUTOTUNE)
            )
        self.xla_failed = False
        self.notes: list[str] = []
        #: the compiled metrics of the epoch that ended last (read by an epoch callback)
        self.last_metrics: dict[str, float] = {}
        #: (task, from_logits) when every epoch also logs val_calibrated_loss (see miha_engine.calibration)
        self.calibration = calibration if data.has_validation else None

    # -- execution settings ------------------------------------------------------------------
    def steps_per_execution(self, batch_size: int | None = None) -> int:
        """Batches per compiled call.  Keras runs a shorter last call when an epoch's batches are
        not a multiple, so one value serves every batch size (and one compiled model)."""
        spe = self.config.steps_per_execution
        if spe == "auto":
            return AUTO_MAX_STEPS_PER_EXECUTION
        return max(1, int(spe))

    def jit(self, model=None) -> bool:
        """XLA on or off.

        "auto" leaves XLA off: measured here (benchmarks/speed.py), XLA cuts the MNIST FNN's steady
        epoch by a third but costs ≈0.5 s of compilation for every new model and batch size, and
        MIHA's members train only n epochs each, so a whole original-configuration run took 77 s
        with XLA against 46 s without; on the gap-filling CNN XLA was slower even per epoch.
        ``True`` turns it on unless a layer declares it cannot be compiled; a model that still
        fails to compile falls back once, in ``fit``.
        """
        if self.xla_failed or self.config.jit_compile in ("auto", False):
            return False
        if model is not None:
            return all(getattr(layer, "supports_jit", True) for layer in model._flatten_layers())
        return True

    def _train_dataset(self, batch_size: int, shuffle: int | None = None):
        tf = self._tf
        if shuffle is None:
            self._shuffle_counter += 1
            shuffle = self._shuffle_counter
        return (
            self._base.shuffle(self.data.n_train, seed=self.seed * 100003 + shuffle,
                               reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    # -- training ----------------------------------------------------------------------------
    def fit(self, model, batch_size: int, epochs: int, on_epoch: EpochCallback, spec=None,
            shuffle: int | None = None, lr_schedule: list[float] | None = None) -> FitResult:
        """Train ``epochs`` epochs; call ``on_epoch(epoch, loss, val_loss, seconds)`` after each.

        ``shuffle`` fixes the shuffle stream of this fit (a member's, from its seeds); None takes
        the next of the trainer's own stream (the main line's).  ``lr_schedule`` gives each epoch's
        learning rate (the optimizer's rate is a variable: no new traced step).

        A loss that turns NaN/inf stops this fit at once (the remaining epochs count as NaN and
        ``diverged`` is set).  A cancel raises :class:`Cancelled` within one compiled call.
        """
        if epochs <= 0:
            return FitResult([], [], False)
        self.cancel.raise_if_cancelled()
        try:
            return self._fit(model, batch_size, epochs, on_epoch, shuffle, lr_schedule)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - XLA failures come in many types
            if not getattr(model, "jit_compile", False) or spec is None or not _looks_like_xla_error(exc):
                raise
            from .models import recompile

            self.xla_failed = True
            self.notes.append(f"XLA could not compile this model ({type(exc).__name__}); training without XLA")
            recompile(model, spec, self.steps_per_execution(batch_size), False)
            return self._fit(model, batch_size, epochs, on_epoch, shuffle, lr_schedule)

    def _fit(self, model, batch_size: int, epochs: int, on_epoch: EpochCallback, shuffle: int | None,
             lr_schedule: list[float] | None = None) -> FitResult:
        import keras

        cancel = self.cancel
        losses: list[float] = []
        val_losses: list[float] = []
        metrics: dict[str, list[float]] = {}
        trainer = self
        state = {"diverged": False, "t0": 0.0}

        class _Recorder(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                state["t0"] = time.perf_counter()
                if lr_schedule is not None and epoch < len(lr_schedule):
                    self.model.optimizer.learning_rate = float(lr_schedule[epoch])

            def on_train_batch_end(self, batch, logs=None):
                if cancel.cancelled:
                    raise Cancelled("the run was stopped")
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    state["diverged"] = True
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                logs = dict(logs or {})
                if trainer.calibration is not None and not state["diverged"]:
                    logs["val_" + CALIBRATED] = trainer.calibrated_val_loss(self.model)
                loss = float(logs.get("loss", float("nan")))
                val = logs.get("val_loss")
                val = None if val is None else float(val)
                if state["diverged"]:
                    loss = float("nan")
                    val = float("nan") if val is not None or self_has_val else None
                losses.append(loss)
                val_losses.append(val if val is not None else float("nan"))
                trainer.last_metrics = {}
                for name, value in logs.items():
                    if name in ("loss", "val_loss"):
                        continue
                    with contextlib.suppress(TypeError, ValueError):
                        v = float("nan") if state["diverged"] else float(value)
                        metrics.setdefault(name, []).append(v)
                        trainer.last_metrics[name] = v
                if lr_schedule is not None and epoch < len(lr_schedule):
                    trainer.last_metrics["learning_rate"] = float(lr_schedule[epoch])
                on_epoch(epoch, loss, val, time.perf_counter() - state["t0"])

        self_has_val = self._val is not None
        model.fit(
            self._train_dataset(batch_size, shuffle),
            epochs=epochs,
            validation_data=self._val,
            callbacks=[_Recorder()],
            shuffle=False,  # the pipeline reshuffles every epoch
            verbose=0,
        )
        diverged = state["diverged"]
        while len(losses) < epochs and diverged:
            losses.append(float("nan"))
            val_losses.append(float("nan"))
        if not self_has_val:
            val_losses = []
        for values in metrics.values():
            values += [float("nan")] * (len(losses) - len(values))
        return FitResult(losses, val_losses, diverged, metrics)

    def evaluate(self, model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Loss and metrics on (x, y), as plain floats."""
        out = model.evaluate(x, y, batch_size=max(256, self.config.batch_size or 32), verbose=0, return_dict=True)
        return {k: float(v) for k, v in out.items()}

    def calibrated_val_loss(self, model) -> float:
        """The validation cross-entropy after temperature scaling (see miha_engine.calibration).  The
        forward pass runs eagerly, in batches: no traced predict function per pooled model."""
        import keras

        if self.calibration is None:
            return float("nan")
        x, y = self.data.x_val, self.data.y_val
        size = max(256, self.config.batch_size or 32)
        out = np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + size], training=False))
                              for i in range(0, len(x), size)])
        if not np.all(np.isfinite(out)):
            return float("nan")
        return temperature_nll(out, y, *self.calibration)[0]

    def validation_loss(self, model, metric: str = "loss") -> float:
        """The loss (or a compiled metric, or the calibrated loss) on the validation split; NaN without one."""
        if self._val is None:
            return float("nan")
        if metric == CALIBRATED:
            return self.calibrated_val_loss(model)
        out = model.evaluate(self._val, verbose=0, return_dict=True)
        return float(out.get(metric, float("nan")))


def _looks_like_xla_error(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("xla", "jit", "compil", "unimplemented", "not supported", "invalidargument"))
