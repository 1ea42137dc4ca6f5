"""A model's trainable state as plain arrays: what a member starts from and what selection keeps.

Keras-free, so the loop, a fake backend and a Ray worker's reply all share it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .genes import Genes


@dataclass
class Snapshot:
    """Weights and optimizer variables, with the genes they were trained under.

    A population member starts from its parent's snapshot; the two fittest members are kept as
    snapshots, not as live models, so a pooled model can be reused while they wait.
    """

    genes: Genes
    weights: list[np.ndarray]
    optimizer: str
    optimizer_vars: list[np.ndarray] | None


def average_weights(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    """The mean of two weight lists of the same model (crossover's "average")."""
    return [(x + y) / 2.0 for x, y in zip(a, b)]
