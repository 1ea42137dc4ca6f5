"""The calibrated validation loss: a classifier's cross-entropy after the one temperature that fits it best.

Why: once a classifier overfits, its validation cross-entropy rises while its accuracy still climbs.
The loss then mostly measures over-confidence, which one scalar fixes after training (temperature
scaling, Guo et al., 2017), not how well the model separates the classes.  Selection on the raw loss
therefore prefers members that are merely less confident.  Measured on the MNIST FNN of
``benchmarks/quality.py`` (``benchmarks/probe_calibration.py``): the raw validation loss is lowest at
epoch 8 (test accuracy 0.928) and then rises to epoch 38 (0.942), while this loss falls throughout.
In MIHA's lineages on that task, mutations to sigmoid layers and to SGD at 0.01 beat the control on
the raw loss, and those lineages ended 0.006-0.016 below plain training.

The value is ``min over T of mean NLL(softmax(log p / T))`` (for a sigmoid output, of the logit
divided by T).  The NLL is convex in 1/T, so Newton's method from T = 1 finds it in a few steps; T = 1
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

        def fgh(beta: float) -> tuple[float, float, float]:
            z = beta * logit  # BCE with logits: max(z, 0) - z*t + log(1 + exp(-|z|))
            value = float(np.mean(np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))))
            p = 0.5 * (1.0 + np.tanh(z / 2))  # the sigmoid, without overflow for large |z|
            return value, float(np.mean((p - target) * logit)), float(np.mean(p * (1 - p) * logit * logit))
    else:
        out = out.reshape(-1, out.shape[-1])  # classes on the last axis, every other position a sample
        logp = _log_softmax(out) if from_logits else np.log(np.clip(out, _EPS, 1.0))
        if task == "sparse_categorical":
            idx = np.asarray(y).reshape(-1).astype(np.int64)
            true, mass = logp[np.arange(len(idx)), idx], np.ones(len(idx))
        else:  # one-hot or soft targets: -sum_k t_k log q_k = mass * logsumexp - beta * sum_k t_k l_k
            target = np.asarray(y, dtype=np.float64).reshape(logp.shape)
            true, mass = np.sum(target * logp, axis=-1), target.sum(axis=-1)

        def fgh(beta: float) -> tuple[float, float, float]:
            # NLL(beta) = mean[logsumexp(beta*l) - beta*l_true]; its derivatives are the mean and the
            # variance of l under softmax(beta*l): convex in beta
            z = beta * logp
            top = z.max(axis=-1, keepdims=True)
            e = np.exp(z - top)
            total = e.sum(axis=-1, keepdims=True)
            p = e / total
            mean = np.sum(p * logp, axis=-1)
            value = float(np.mean(mass * (np.log(total[:, 0]) + top[:, 0]) - beta * true))
            variance = np.sum(p * logp * logp, axis=-1) - mean * mean
            return value, float(np.mean(mass * mean - true)), float(np.mean(mass * variance))

    # Newton's method on beta = 1/T from the raw loss (beta = 1), each step halved until the loss
    # falls; beta stays in [e^-4, e^4]
    lo, hi = math.exp(-4.0), math.exp(4.0)
    beta = 1.0
    value, grad, hess = fgh(beta)
    raw = value
    for _ in range(50):
        if not math.isfinite(value) or hess <= 1e-12 or abs(grad) < 1e-9:
            break
        step = grad / hess
        for _ in range(30):
            trial = min(max(beta - step, lo), hi)
            t_value, t_grad, t_hess = fgh(trial)
            if t_value <= value:
                break
            step /= 2
        else:
            break
        converged = abs(trial - beta) <= 1e-7 * beta
        beta, value, grad, hess = trial, t_value, t_grad, t_hess
        if converged:
            break
    if not math.isfinite(value) or raw <= value:
        return raw, 1.0
    return value, 1.0 / beta
