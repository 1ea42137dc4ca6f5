"""The calibrated validation loss: a classifier's cross-entropy after the one temperature that fits it best.

Why: once a classifier overfits, its validation cross-entropy rises while its accuracy still climbs.
The loss then mostly measures over-confidence, which one scalar fixes after training (temperature
scaling, Guo et al., 2017), not how well the model separates the classes.  Selection on the raw loss
therefore prefers members that are merely less confident: measured on the MNIST FNN of
``benchmarks/quality.py``, the raw validation loss is lowest at epoch 8 (test accuracy 0.928) and
rises to epoch 38 (0.942), while this loss falls throughout; it also ranks a sigmoid hidden layer
(0.916) below relu, where the raw loss ranks it above from epoch 23 on.

The value is ``min over T of mean NLL(softmax(log p / T))`` (for a sigmoid output, of the logit
divided by T).  The NLL is convex in 1/T, so a golden-section search over log(1/T) finds it; T = 1
(the raw loss) is always a candidate, so the value never exceeds the raw cross-entropy.  Numpy only.
"""

from __future__ import annotations

import math

import numpy as np

#: The name ``fitness_metric`` takes to score members by this loss (Keras' log name gets "val_").
CALIBRATED = "calibrated_loss"
#: The losses it applies to (``models.task_from_loss`` kinds).
CLASSIFICATION = ("sparse_categorical", "categorical", "binary")

_EPS = 1e-7


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def temperature_nll(outputs: np.ndarray, y: np.ndarray, task: str, from_logits: bool = False) -> tuple[float, float]:
    """(the lowest mean cross-entropy over temperatures, that temperature) of a classifier's outputs.

    ``outputs``: what the model returns (probabilities, or logits with ``from_logits``); ``y``: class
    indices (``sparse_categorical``), one-hot or soft targets (``categorical``), 0/1 targets (``binary``).
    """
    out = np.asarray(outputs, dtype=np.float64)
    if task == "binary":
        logit = out if from_logits else np.log(np.clip(out, _EPS, 1 - _EPS)) - np.log(np.clip(1 - out, _EPS, 1))
        target = np.asarray(y, dtype=np.float64).reshape(logit.shape)

        def nll(beta: float) -> float:
            z = beta * logit  # BCE with logits: max(z, 0) - z*t + log(1 + exp(-|z|))
            return float(np.mean(np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))))
    else:
        out = out.reshape(len(out), -1)
        logp = _log_softmax(out) if from_logits else np.log(np.clip(out, _EPS, 1.0))
        if task == "sparse_categorical":
            idx = np.asarray(y).reshape(-1).astype(np.int64)
            target = np.zeros_like(logp)
            target[np.arange(len(idx)), idx] = 1.0
        else:
            target = np.asarray(y, dtype=np.float64).reshape(logp.shape)

        def nll(beta: float) -> float:
            return float(-np.mean(np.sum(target * _log_softmax(beta * logp), axis=-1)))

    # golden section on u = log(beta), beta = 1/T in [e^-4, e^4]
    lo, hi = -4.0, 4.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(math.exp(a)), nll(math.exp(b))
    for _ in range(40):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(math.exp(b))
    u = (lo + hi) / 2
    best, beta = nll(math.exp(u)), math.exp(u)
    raw = nll(1.0)
    if not math.isfinite(best) or raw <= best:
        return raw, 1.0
    return best, 1.0 / beta
