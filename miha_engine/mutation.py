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
    return kinds


def mutate(
    genes: Genes,
    space: SearchSpace,
    rng: np.random.Generator,
    activation_choices: Mapping[str, tuple[str, ...]],
    n_train: int | None = None,
    kind: str | None = None,
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
        new = genes.replace(batch_size=int(options[int(rng.integers(len(options)))]))
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
    return child
