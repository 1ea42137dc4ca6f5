"""Mutation operators: pure functions over genes, driven by a numpy Generator passed in."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .config import OPTIMIZER_DEFAULT_LR, SearchSpace
from .genes import Genes


def switch_learning_rate(old_opt: str, old_lr: float, new_opt: str, space: SearchSpace) -> float:
    """The learning rate a member starts with after switching optimizer.

    It keeps the current rate's ratio to the old optimizer's default, applied to the new one's
    default, so a run that has annealed its rate keeps annealing after a switch.
    """
    ratio = old_lr / OPTIMIZER_DEFAULT_LR.get(old_opt, old_lr or 1.0) if old_lr > 0 else 1.0
    lr = OPTIMIZER_DEFAULT_LR[new_opt] * ratio
    lo, hi = space.learning_rate_range
    return float(min(max(lr, lo), hi))


def _batch_choices(current: int, space: SearchSpace, n_train: int | None) -> list[int]:
    lo, hi = space.batch_size_range
    if n_train is not None:
        hi = max(lo, min(hi, n_train))
    choices = {max(lo, min(hi, v)) for v in (current // 2, current * 2)}
    powers = [2**i for i in range(0, 16) if lo <= 2**i <= hi]
    choices.update(powers)
    choices.discard(current)
    # Prefer neighbours: halving or doubling first, then other powers of two.
    near = [v for v in (current // 2, current * 2) if v in choices]
    return near or sorted(choices)


def possible_kinds(
    genes: Genes,
    space: SearchSpace,
    activation_choices: Mapping[str, tuple[str, ...]],
    n_train: int | None = None,
) -> list[str]:
    """The gene kinds that can actually change something for these genes."""
    kinds: list[str] = []
    for kind in space.kinds:
        if kind == "optimizer" and any(o != genes.optimizer for o in space.optimizers):
            kinds.append(kind)
        elif kind == "activation" and any(
            any(a != genes.activation_of(p) for a in acts) for p, acts in activation_choices.items()
        ):
            kinds.append(kind)
        elif kind == "batch_size" and _batch_choices(genes.batch_size, space, n_train):
            kinds.append(kind)
        elif kind == "learning_rate":
            kinds.append(kind)
        elif kind == "weight_decay" and genes.weight_decay is not None:
            kinds.append(kind)
        elif kind == "dropout" and genes.dropouts and space.dropout_range[0] < space.dropout_range[1]:
            kinds.append(kind)
        elif (kind == "label_smoothing" and genes.label_smoothing is not None
              and space.label_smoothing_range[0] < space.label_smoothing_range[1]):
            kinds.append(kind)
    return kinds


#: Multiplicative steps of a weight-decay mutation.
WEIGHT_DECAY_FACTORS = (1 / 3, 0.5, 2.0, 3.0)
#: Additive steps of a dropout-rate and a label-smoothing mutation.
DROPOUT_STEP, SMOOTHING_STEP = 0.1, 0.05


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if lo < hi else float(lo)


def _step(rng: np.random.Generator, value: float, step: float, lo: float, hi: float, fresh: bool) -> float:
    """A neighbour of ``value`` one ``step`` up or down within [lo, hi] (or, ``fresh``, any grid value)."""
    grid = [round(lo + i * step, 6) for i in range(int(round((hi - lo) / step)) + 1)] or [lo]
    if hi not in grid and hi - grid[-1] > 1e-9:
        grid.append(hi)
    if fresh:
        options = [v for v in grid if not math.isclose(v, value)]
    else:
        options = [v for v in (value - step, value + step) if lo - 1e-9 <= v <= hi + 1e-9]
        options = [float(min(max(round(v, 6), lo), hi)) for v in options if not math.isclose(v, value)]
        options = options or [v for v in grid if not math.isclose(v, value)]
    return float(options[int(rng.integers(len(options)))]) if options else float(value)


def mutate(
    genes: Genes,
    space: SearchSpace,
    rng: np.random.Generator,
    activation_choices: Mapping[str, tuple[str, ...]],
    n_train: int | None = None,
    kind: str | None = None,
    fresh: bool = False,
) -> tuple[Genes, str]:
    """Change one gene.

    Args:
        genes: the parent's genes.
        space: what may change and to what.
        rng: the source of randomness.
        activation_choices: for each mutable layer path, the activations it may take (the output
            layer's choices are restricted to those valid for the loss).
        n_train: number of training samples (caps the batch size).
        kind: force one gene kind (otherwise drawn uniformly among those that can change).
        fresh: explore: a new value drawn from the whole range instead of a neighbour (the run
            does so after a plateau).

    Returns:
        The new genes and a sentence saying what changed.
    """
    kinds = possible_kinds(genes, space, activation_choices, n_train)
    if not kinds:
        return genes, "no mutation possible: the search space allows no change"
    if kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "optimizer":
        options = [o for o in space.optimizers if o != genes.optimizer]
        new_opt = options[int(rng.integers(len(options)))]
        lr = switch_learning_rate(genes.optimizer, genes.learning_rate, new_opt, space)
        new = genes.replace(optimizer=new_opt, learning_rate=lr)
    elif kind == "activation":
        paths = [p for p, acts in activation_choices.items() if any(a != genes.activation_of(p) for a in acts)]
        path = paths[int(rng.integers(len(paths)))]
        options = [a for a in activation_choices[path] if a != genes.activation_of(path)]
        new = genes.with_activation(path, options[int(rng.integers(len(options)))])
    elif kind == "batch_size":
        options = _batch_choices(genes.batch_size, space, n_train)
        lo, hi = space.batch_size_range
        powers = [2**i for i in range(16) if lo <= 2**i <= min(hi, n_train or 2**16) and 2**i != genes.batch_size]
        if fresh and powers:
            options = powers
        new = genes.replace(batch_size=int(options[int(rng.integers(len(options)))]))
    elif kind == "learning_rate" and fresh:
        lo, hi = space.learning_rate_range
        lr = _log_uniform(rng, lo, hi)
        new = genes.replace(learning_rate=lr)
        return new, f"learning rate: {genes.learning_rate:.3g} --(fresh draw)--> {lr:.3g}"
    elif kind == "weight_decay":
        lo, hi = space.weight_decay_range
        wd = float(genes.weight_decay or 0.0)
        if wd <= 0 or fresh:
            wd_new = _log_uniform(rng, lo, hi)
        elif int(rng.integers(5)) == 0:
            wd_new = 0.0  # off again
        else:
            factor = WEIGHT_DECAY_FACTORS[int(rng.integers(len(WEIGHT_DECAY_FACTORS)))]
            wd_new = float(min(max(wd * factor, lo), hi))
            if math.isclose(wd_new, wd):
                wd_new = float(min(max(wd / factor, lo), hi))
        new = genes.replace(weight_decay=float(f"{wd_new:.4g}"))
    elif kind == "dropout":
        lo, hi = space.dropout_range
        path, rate = genes.dropouts[int(rng.integers(len(genes.dropouts)))]
        new = genes.with_dropout(path, _step(rng, rate, DROPOUT_STEP, lo, hi, fresh))
    elif kind == "label_smoothing":
        lo, hi = space.label_smoothing_range
        new = genes.replace(label_smoothing=_step(rng, float(genes.label_smoothing or 0.0), SMOOTHING_STEP, lo, hi,
                                                  fresh))
    elif kind == "learning_rate":
        lo, hi = space.learning_rate_range
        factor = space.lr_factors[int(rng.integers(len(space.lr_factors)))]
        lr = float(min(max(genes.learning_rate * factor, lo), hi))
        if math.isclose(lr, genes.learning_rate):
            # At a bound: step the other way.
            lr = float(min(max(genes.learning_rate / factor, lo), hi))
        new = genes.replace(learning_rate=lr)
        return new, f"learning rate: {genes.learning_rate:.3g} --(×{factor:g})--> {lr:.3g}"
    else:
        raise ValueError(f"unknown gene kind {kind!r}")
    return new, "; ".join(genes.diff(new))


def combine(ancestor: Genes, fitter: Genes, other: Genes) -> Genes:
    """Crossover of two siblings: the ancestor's genes with both siblings' mutations applied.

    Where both changed the same gene, the fitter one's value wins.
    """
    child = fitter
    if fitter.optimizer == ancestor.optimizer and fitter.learning_rate == ancestor.learning_rate:
        child = child.replace(optimizer=other.optimizer, learning_rate=other.learning_rate)
    if fitter.batch_size == ancestor.batch_size:
        child = child.replace(batch_size=other.batch_size)
    base = dict(ancestor.activations)
    fit_acts = dict(fitter.activations)
    for path, act in other.activations:
        if fit_acts.get(path) == base.get(path) and act != base.get(path):
            child = child.with_activation(path, act)
    if fitter.weight_decay == ancestor.weight_decay:
        child = child.replace(weight_decay=other.weight_decay)
    if fitter.label_smoothing == ancestor.label_smoothing:
        child = child.replace(label_smoothing=other.label_smoothing)
    base_rates, fit_rates = dict(ancestor.dropouts), dict(fitter.dropouts)
    for path, rate in other.dropouts:
        if fit_rates.get(path) == base_rates.get(path) and rate != base_rates.get(path):
            child = child.with_dropout(path, rate)
    return child


def explore(
    genes: Genes,
    space: SearchSpace,
    rng: np.random.Generator,
    activation_choices: Mapping[str, tuple[str, ...]],
    n_train: int | None = None,
) -> tuple[Genes, str]:
    """A bolder move, for a run on a plateau: two genes changed, each to a value drawn from the whole
    range rather than a neighbour (one gene when only one kind can change)."""
    first, said = mutate(genes, space, rng, activation_choices, n_train, fresh=True)
    kinds = possible_kinds(first, space, activation_choices, n_train)
    changed = {k for k in kinds if _kind_differs(genes, first, k)}
    others = [k for k in kinds if k not in changed]
    if not others:
        return first, f"explore: {said}"
    second, said2 = mutate(first, space, rng, activation_choices, n_train, kind=others[int(rng.integers(len(others)))],
                           fresh=True)
    return second, f"explore: {said}; {said2}"


def _kind_differs(a: Genes, b: Genes, kind: str) -> bool:
    if kind == "optimizer":
        return a.optimizer != b.optimizer
    if kind == "learning_rate":
        return a.learning_rate != b.learning_rate
    if kind == "batch_size":
        return a.batch_size != b.batch_size
    if kind == "activation":
        return a.activations != b.activations
    if kind == "weight_decay":
        return a.weight_decay != b.weight_decay
    if kind == "dropout":
        return a.dropouts != b.dropouts
    return a.label_smoothing != b.label_smoothing
