"""Training: one member or one phase at a time, at the hardware's pace, stoppable at any batch.

Speed: the data stays in tensors for the whole run; several batches run per compiled call
(``steps_per_execution``), each gathered by a per-epoch shuffled index inside the call, and XLA
compiles the step where the model allows it (off by default).
A model XLA cannot compile falls back to plain graph execution, once, and the run notes it.
"""

from __future__ import annotations

import contextlib
import math
import os
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
        # the data lives as tensors for the whole run: every fit of every member gathers its batches
        # from them inside the compiled step (see _CompiledLoop); on the GPU when there is one and the
        # data fits the limit (data_device), else in host memory
        arrays = [a for a in (data.x, data.y, data.x_val, data.y_val) if a is not None]
        self.data_device, note = data_device(sum(int(a.nbytes) for a in arrays), bool(tf.config.list_logical_devices("GPU")))
        self.notes: list[str] = [note] if note else []
        with tf.device(self.data_device) if self.data_device else contextlib.nullcontext():
            self._x, self._y = tf.constant(data.x), tf.constant(data.y)
            self._xv = self._yv = None
            if data.has_validation:
                self._xv, self._yv = tf.constant(data.x_val), tf.constant(data.y_val)
        self._eval_batch = max(256, config.batch_size or 32)
        self.xla_failed = False
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

    def epoch_order(self, shuffle: int, epoch: int) -> np.ndarray:
        """The order of the training samples in one epoch: a permutation seeded by (the trainer's
        seed, the fit's shuffle stream, the epoch), so it changes every epoch and a resumed run
        draws exactly what an uninterrupted one drew."""
        rng = np.random.default_rng((self.seed & 0xFFFFFFFF, shuffle & 0xFFFFFFFF, epoch))
        return rng.permutation(self.data.n_train).astype(np.int64)

    def _loop(self, model) -> _CompiledLoop:
        """The model's compiled pieces (made once per model and XLA setting; see :class:`_CompiledLoop`)."""
        jit = bool(getattr(model, "jit_compile", False))
        loop = getattr(model, "_miha_loop", None)
        if loop is None or loop.jit != jit or loop.data_device != self.data_device:
            loop = _CompiledLoop(model, jit, self.data_device)
            model._miha_loop = loop
        return loop

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
        tf = self._tf
        if shuffle is None:
            self._shuffle_counter += 1
            shuffle = self._shuffle_counter
        loop = self._loop(model)
        spe = self.steps_per_execution(batch_size)
        steps = -(-self.data.n_train // batch_size)
        batch = tf.constant(batch_size, tf.int64)
        # each compiled call's first and end step, made once per fit (the same every epoch)
        chunks = [(tf.constant(a, tf.int64), tf.constant(min(a + spe, steps), tf.int64)) for a in range(0, steps, spe)]
        losses: list[float] = []
        val_losses: list[float] = []
        metrics: dict[str, list[float]] = {}
        diverged = False
        for epoch in range(epochs):
            t0 = time.perf_counter()
            if lr_schedule is not None and epoch < len(lr_schedule):
                model.optimizer.learning_rate = float(lr_schedule[epoch])
            order = tf.constant(self.epoch_order(shuffle, epoch))
            model.reset_metrics()
            logs: dict[str, float] = {}
            for start, stop in chunks:
                self.cancel.raise_if_cancelled()
                logs = loop.train(self._x, self._y, order, start, stop, batch)
                if not math.isfinite(float(logs["loss"])):
                    diverged = True
                    break
            logs = _scalars(logs)
            if not diverged and self._xv is not None:
                val_logs, pred = loop.evaluate(self._xv, self._yv, self._eval_batch, self.calibration is not None)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
                if self.calibration is not None:
                    logs["val_" + CALIBRATED] = self._calibrated(pred)
            loss = float("nan") if diverged else logs.get("loss", float("nan"))
            val = None if self._xv is None else (float("nan") if diverged else logs.get("val_loss", float("nan")))
            losses.append(loss)
            val_losses.append(val if val is not None else float("nan"))
            self.last_metrics = {}
            for name, value in logs.items():
                if name in ("loss", "val_loss"):
                    continue
                v = float("nan") if diverged else value
                metrics.setdefault(name, []).append(v)
                self.last_metrics[name] = v
            if lr_schedule is not None and epoch < len(lr_schedule):
                self.last_metrics["learning_rate"] = float(lr_schedule[epoch])
            on_epoch(epoch, loss, val, time.perf_counter() - t0)
            if diverged:
                break
        while len(losses) < epochs and diverged:
            losses.append(float("nan"))
            val_losses.append(float("nan"))
        if self._xv is None:
            val_losses = []
        for values in metrics.values():
            values += [float("nan")] * (len(losses) - len(values))
        return FitResult(losses, val_losses, diverged, metrics)

    def evaluate(self, model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Loss and metrics on (x, y), as plain floats, by the model's compiled validation pass: Keras'
        own loss and metrics, as ``model.evaluate`` gives them, without the data adapter and the test
        function that ``model.evaluate`` sets up (on the MNIST FNN its first call took 0.43 s, this 0.11 s;
        later calls 53 ms against 3 ms).  The loss is summed in float64 (``model.evaluate``'s float32
        mean differs in the last digits)."""
        tf = self._tf
        if x is self.data.x and y is self.data.y:
            xs, ys = self._x, self._y
        else:
            # the dtypes the model trained on, as Keras' adapter casts floats (and no trace per dtype)
            x, y = _like(x, self.data.x), _like(y, self.data.y)
            if self.data_device is None and tf.config.list_logical_devices("GPU") and \
                    data_device(int(x.nbytes + y.nbytes), True)[0] is not None:
                # too large to put on the GPU whole: Keras' evaluate copies one batch at a time
                out = model.evaluate(x, y, batch_size=self._eval_batch, verbose=0, return_dict=True)
                return _scalars(out)
            with tf.device(self.data_device) if self.data_device else contextlib.nullcontext():
                xs, ys = tf.constant(x), tf.constant(y)
        return self._loop(model).evaluate(xs, ys, self._eval_batch, False, other=True)[0]

    def _calibrated(self, pred: np.ndarray) -> float:
        if self.calibration is None or not np.all(np.isfinite(pred)):
            return float("nan")
        return temperature_nll(pred, self.data.y_val, *self.calibration)[0]

    def calibrated_val_loss(self, model) -> float:
        """The validation cross-entropy after temperature scaling (see miha_engine.calibration)."""
        if self.calibration is None or self._xv is None:
            return float("nan")
        return self._calibrated(self._loop(model).evaluate(self._xv, self._yv, self._eval_batch, True)[1])

    def validation_loss(self, model, metric: str = "loss") -> float:
        """The loss (or a compiled metric, or the calibrated loss) on the validation split; NaN without one."""
        if self._xv is None:
            return float("nan")
        if metric == CALIBRATED:
            return self.calibrated_val_loss(model)
        return float(self._loop(model).evaluate(self._xv, self._yv, self._eval_batch, False)[0].get(metric, float("nan")))


class _CompiledLoop:
    """One model's compiled training chunk and validation pass.

    Keras' ``fit`` costs more than its steps here: a new ``tf.data`` iterator per fit, a data
    adapter, callbacks, and an ``evaluate`` per epoch that sets all of that up again.  A member trains
    only n epochs, so that was a quarter of its time (benchmarks/REPORT.md, "Second wave, part 6").
    This runs Keras' own ``train_step`` (the loss, the metrics and the optimizer exactly as Keras
    runs them) inside a ``tf.function`` over a chunk of steps, each batch gathered from the
    dataset's tensors by an index that the trainer shuffles per epoch.  The batch size is a tensor:
    one trace serves every batch size.  A model that serves several optimizer kinds has a chunk per
    optimizer, traced when first used, and Keras' step split in two (:func:`_shared_step`): its
    forward and backward pass is traced once.  With XLA on, each step is compiled (once per batch
    shape) and called from the chunk.  The validation pass also returns the predictions, so the
    calibrated loss needs no second forward pass.
    """

    def __init__(self, model, jit: bool, data_device: str | None = None):
        import tensorflow as tf

        self.jit = jit
        self.data_device = data_device

        def on_data():  # gather where the data lives (the host when it stays there), train on the device
            return tf.device(data_device) if data_device else contextlib.nullcontext()

        from .models import TRACES, shares_forward_pass

        key = id(model)
        shared = None
        if not jit and shares_forward_pass(model):
            with contextlib.suppress(ImportError):  # else Keras' own step, traced again by each kind's chunk
                shared = _shared_step(model, key)

        def make_chunk():  # traced with the model's optimizer of the moment, which its step updates with
            if shared is not None:
                step = shared
            elif jit:  # compiled once per batch shape, and per optimizer (a chunk each)
                step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)
            else:
                step = model.train_step

            @tf.function(reduce_retracing=True)
            def train(x, y, order, start, stop, batch):
                TRACES[key] += 1  # Python runs here only while the chunk (and the train step in it) is traced
                for i in tf.range(start, stop):
                    with on_data():
                        rows = order[i * batch:(i + 1) * batch]
                        xb, yb = tf.gather(x, rows), tf.gather(y, rows)
                    step((xb, yb))
                return model.get_metrics_result()
            return train

        # one chunk per optimizer the model trains with (one, unless the model serves every optimizer
        # kind of the run: then each kind's chunk is traced when first used)
        chunks: dict[int, tuple] = {}

        def train(*args):
            opt = model.optimizer
            entry = chunks.get(id(opt))
            if entry is None or entry[0] is not opt:
                entry = chunks[id(opt)] = (opt, make_chunk())
            return entry[1](*args)

        # as Keras' test_step computes it (its wrapper drops ``training`` for an override of
        # compute_loss written before Keras 3.3)
        compute_loss = getattr(model, "_compute_loss", None) or model.compute_loss

        def evaluate(x, y, size, with_pred):
            model.reset_metrics()
            n = tf.shape(x)[0]
            total = tf.constant(0.0, tf.float64)
            preds = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
            for k in tf.range((n + size - 1) // size):
                with on_data():
                    xb, yb = x[k * size:(k + 1) * size], y[k * size:(k + 1) * size]
                pred = model(xb, training=False)
                loss = compute_loss(x=xb, y=yb, y_pred=pred, training=False)
                total += tf.cast(loss, tf.float64) * tf.cast(tf.shape(xb)[0], tf.float64)
                model.compute_metrics(xb, yb, pred)
                if with_pred:
                    preds = preds.write(k, tf.cast(pred, tf.float32))
            logs = dict(model.get_metrics_result())
            logs["loss"] = total / tf.cast(n, tf.float64)
            return logs, (preds.concat() if with_pred else tf.zeros((0,)))

        self.train = train
        # the validation split's pass, and another for other arrays (the test set): one function for
        # both would be traced again for a generic shape, and the per-epoch validation pass measured
        # slower that way
        self._evaluate = tf.function(evaluate, reduce_retracing=True)
        self._evaluate_other = tf.function(evaluate, reduce_retracing=True)

    def evaluate(self, x, y, size: int, with_pred: bool, other: bool = False) -> tuple[dict[str, float], np.ndarray | None]:
        logs, pred = (self._evaluate_other if other else self._evaluate)(x, y, size, with_pred)
        return _scalars(logs), (pred.numpy() if with_pred else None)


def _shared_step(model, key: int):
    """A train step for a model that serves several optimizer kinds: Keras' own ``train_step`` (the
    same operations, in effect in the same order), with the forward and backward pass and the metric
    updates in a ``tf.function`` of their own, traced once and called by every kind's chunk, and the
    update by whichever optimizer is ``model.optimizer`` while a chunk is traced.  So a new optimizer
    kind traces only its update and the chunk's loop.  The step runs Keras' operations; the nested
    call is expected to be inlined (not yet checked: benchmarks/REPORT.md, part 9, measured long runs
    slower with it).  Such a model's optimizers never scale the loss (``ModelPool._switch_kinds``)."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.losses import loss as loss_module

    from .models import STEP_TRACES

    @tf.function(reduce_retracing=True)
    def forward_backward(x, y):
        STEP_TRACES[key] += 1  # Python runs here only while the forward and backward pass is traced
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=True)
            model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss), sample_weight=tf.shape(
                next(i for i in tree.flatten(x) if i is not None))[0])
        gradients = tape.gradient(loss, model.trainable_weights)
        model.compute_metrics(x, y, y_pred, sample_weight=None)
        return gradients

    def step(data):
        x, y = data
        gradients = forward_backward(x, y)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_weights))

    return step


#: The most data (training and validation arrays, in MB) kept in the GPU's memory for a whole run;
#: more stays in host memory and each batch is copied over.  ``MIHA_DEVICE_DATA_MB`` overrides it.
DEVICE_DATA_MB = 1024


def data_device(nbytes: int, has_gpu: bool) -> tuple[str | None, str]:
    """Where the run's data tensors live: None (TensorFlow's default device, the GPU when there is one)
    or "/CPU:0" when a GPU is there but the data is larger than the limit (several Ray workers may
    share one GPU, each with its own copy); and a note that says so."""
    if not has_gpu:
        return None, ""
    try:
        limit = float(os.environ.get("MIHA_DEVICE_DATA_MB", DEVICE_DATA_MB))
    except ValueError:
        limit = DEVICE_DATA_MB
    if nbytes <= limit * 2**20:
        return None, ""
    return "/CPU:0", (f"the dataset ({nbytes / 2**20:.0f} MB) is larger than the {limit:.0f} MB kept on the GPU for a "
                      "run: it stays in host memory and each batch is copied to the GPU (MIHA_DEVICE_DATA_MB "
                      "raises the limit)")


def _like(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``a`` as ``ref``'s dtype where both are floating point (a float64 test set of a float32 run)."""
    a = np.asarray(a)
    if a.dtype != ref.dtype and np.issubdtype(a.dtype, np.floating) and np.issubdtype(ref.dtype, np.floating):
        return a.astype(ref.dtype)
    return a


def _scalars(logs) -> dict[str, float]:
    """Keras' logs as floats, without the metrics that give one value per class (``F1Score``'s
    default): they have no single number to log or score, as the engine's callbacks always skipped."""
    return {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}


def _looks_like_xla_error(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("xla", "jit", "compil", "unimplemented", "not supported", "invalidargument"))
