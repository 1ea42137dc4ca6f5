"""Fitness of a population member, from its per-epoch loss curve.

Default formula (``"log_slope"``), for the member's losses L_1..L_n over its n epochs (validation
losses when the run has a validation split, else training losses) and the parent's loss L_0 at the
fork (the same for every member of a cycle):

    fitness = -log(L_n) + w * (log(L_0) - log(L_n)) / n

The first term rewards a low last loss, the second a fast decrease (the mean per-epoch drop of
log-loss since the fork); ``w`` is ``RunConfig.fitness_slope_weight`` (default 1).  Working on
log-losses makes it independent of the loss's scale: MSE on pixels and cross-entropy on digits
score alike.

Measuring the fall from L_0 rather than from each member's own first epoch matters: from L_1, a
mutation that damages the model in its first epoch and then partly recovers scores as a fast
learner.  From the shared L_0 the slope term cannot reward damage; within one cycle it ranks
members exactly as their last loss does, and what it adds is a scale: a cycle that falls fast
spreads its fitnesses further, which the noise rule (:func:`noise_margin`) weighs in the same units.
``"log_slope_l1"`` keeps the first wave's formula (from L_1, over n - 1 epochs) for comparison.

The original MIHA formula (``"original"``) is ``L_1 - 2 * L_n``, which is ``(L_1 - L_n) - L_n``.

A curve with any non-finite value scores ``-inf``: it is never chosen and never crashes the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WORST = float("-inf")

#: Metrics (by Keras' name, without "val_") where higher is better and 1 is perfect: fitness scores
#: their shortfall 1 - value, a positive "loss" that falls as the metric rises.
HIGHER_IS_BETTER = ("accuracy", "auc", "precision", "recall", "f1", "iou", "r2", "top_k", "categorical_hinge_acc")
#: Metrics where lower is better (scored as they are).
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle", "squared", "absolute", "hinge", "crossentropy",
                   "poisson", "cosh", "divergence")


def metric_direction(name: str) -> str | None:
    """"higher" or "lower" is better for the metric ``name`` (Keras' log name); None if unknown."""
    key = name.lower().removeprefix("val_")
    if any(t in key for t in LOWER_IS_BETTER) and "accuracy" not in key:
        return "lower"
    if any(t in key for t in HIGHER_IS_BETTER):
        return "higher"
    return None


def as_loss(values: Sequence[float], name: str) -> list[float]:
    """A metric's curve as a positive, lower-is-better curve that the fitness formulas score."""
    if metric_direction(name) == "higher":
        return [max(1.0 - float(v), 1e-6) if v is not None and math.isfinite(float(v)) else math.nan for v in values]
    return [float(v) if v is not None else math.nan for v in values]


def is_finite_curve(losses: Sequence[float]) -> bool:
    return len(losses) > 0 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses)


def fitness(losses: Sequence[float], formula: str = "log_slope", slope_weight: float = 1.0,
            anchor: float | None = None) -> float:
    """Score a loss curve; higher is better.  ``anchor`` is L_0, the parent's loss at the fork (without
    it, "log_slope" falls back to the curve's own first epoch)."""
    if not is_finite_curve(losses):
        return WORST
    first, last = float(losses[0]), float(losses[-1])
    if formula == "original":
        return first - 2.0 * last
    if formula not in ("log_slope", "log_slope_l1"):
        raise ValueError(f"unknown fitness formula {formula!r}")
    eps = 1e-12
    log_last = math.log(max(last, eps))
    if formula == "log_slope" and anchor is not None and math.isfinite(anchor) and anchor > 0:
        slope = (math.log(max(anchor, eps)) - log_last) / len(losses)
    else:
        slope = (math.log(max(first, eps)) - log_last) / max(len(losses) - 1, 1)
    return -log_last + slope_weight * slope


def epoch_noise(segments: Sequence[Sequence[float]]) -> float | None:
    """The spread of a loss curve from one epoch to the next, in log-loss: the pooled standard
    deviation of each segment's epoch-to-epoch changes of log(L) around that segment's own mean change
    (so a steady fall or rise is not counted as noise).  It estimates how much two runs of the same
    configuration differ at one epoch, which is what a member and the control differ by when the
    mutation does nothing.  None when the segments give fewer than two degrees of freedom."""
    squares, dof = 0.0, 0
    for seg in segments:
        vals = [float(v) for v in seg if v is not None and math.isfinite(float(v)) and float(v) > 0]
        if len(vals) < 3:
            continue
        diffs = [math.log(b) - math.log(a) for a, b in zip(vals, vals[1:])]
        mean = sum(diffs) / len(diffs)
        squares += sum((d - mean) ** 2 for d in diffs)
        dof += len(diffs) - 1
    if dof < 2:
        return None
    return math.sqrt(squares / dof)


def noise_margin(control: Sequence[float], sigma: float, formula: str = "log_slope", slope_weight: float = 1.0,
                 anchor: float | None = None) -> float:
    """How much the fitness of the control's curve moves when its last loss moves by ``sigma`` (in
    log-loss): the margin a mutant must beat the control by, in fitness units, whatever the formula."""
    if not is_finite_curve(control) or not math.isfinite(sigma) or sigma <= 0:
        return 0.0
    base = fitness(control, formula, slope_weight, anchor)
    worse = [*list(control)[:-1], float(control[-1]) * math.exp(sigma)]
    return abs(base - fitness(worse, formula, slope_weight, anchor))


def family_z(mutants: int, false_switch: float) -> float:
    """Noise units the best of ``mutants`` null mutants exceeds with probability ``false_switch``:
    z with P(max of M standard normals > z) = false_switch, i.e. Φ(z)^M = 1 - false_switch.  At
    least 1 (one unit per mutant, the rule without this correction); 1 when it is off (0)."""
    if false_switch <= 0 or mutants < 1:
        return 1.0
    from statistics import NormalDist

    return max(1.0, NormalDist().inv_cdf((1.0 - false_switch) ** (1.0 / mutants)))


def rank_key(score: float, index: int) -> tuple[float, int]:
    """Sort key of a member: fittest first; equal fitness goes to the lower index (the control, if
    any), whatever order members finished in."""
    return (-score if score != WORST and not math.isnan(score) else math.inf, index)


def ranking(scores: Sequence[float]) -> list[int]:
    """Member indices, fittest first; ties keep the lower index first."""
    return sorted(range(len(scores)), key=lambda i: rank_key(scores[i], i))
