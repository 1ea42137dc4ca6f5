"""Fitness of a population member, from its per-epoch loss curve.

Default formula (``"log_slope"``), for the member's losses L_1..L_n over its n epochs (validation
losses when the run has a validation split, else training losses):

    fitness = -log(L_n) + w * (log(L_1) - log(L_n)) / max(n - 1, 1)

The first term rewards a low last loss, the second a fast decrease (the mean per-epoch drop of
log-loss); ``w`` is ``RunConfig.fitness_slope_weight`` (default 1).  Working on log-losses makes it
independent of the loss's scale: MSE on pixels and cross-entropy on digits score alike.  For n = 1
only the last loss counts.

The original MIHA formula (``"original"``) is ``L_1 - 2 * L_n``, which is ``(L_1 - L_n) - L_n``.

A curve with any non-finite value scores ``-inf``: it is never chosen and never crashes the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

WORST = float("-inf")


def is_finite_curve(losses: Sequence[float]) -> bool:
    return len(losses) > 0 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses)


def fitness(losses: Sequence[float], formula: str = "log_slope", slope_weight: float = 1.0) -> float:
    """Score a loss curve; higher is better."""
    if not is_finite_curve(losses):
        return WORST
    first, last = float(losses[0]), float(losses[-1])
    if formula == "original":
        return first - 2.0 * last
    if formula != "log_slope":
        raise ValueError(f"unknown fitness formula {formula!r}")
    eps = 1e-12
    log_first, log_last = math.log(max(first, eps)), math.log(max(last, eps))
    slope = (log_first - log_last) / max(len(losses) - 1, 1)
    return -log_last + slope_weight * slope


def rank_key(score: float, index: int) -> tuple[float, int]:
    """Sort key of a member: fittest first; equal fitness goes to the lower index (the control, if
    any), whatever order members finished in."""
    return (-score if score != WORST and not math.isnan(score) else math.inf, index)


def ranking(scores: Sequence[float]) -> list[int]:
    """Member indices, fittest first; ties keep the lower index first."""
    return sorted(range(len(scores)), key=lambda i: rank_key(scores[i], i))
