"""Hyperparameters as a small value object ("genes")."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Genes:
    """The hyperparameters MIHA mutates.

    Attributes:
        optimizer: lower-case Keras optimizer name ("adam", "sgd", ...).
        learning_rate: the optimizer's learning rate.
        batch_size: training batch size.
        activations: ``(layer_path, activation)`` pairs for every layer whose activation may change,
            in model order.  A nested layer's path is ``"outer/inner"``.
    """

    optimizer: str
    learning_rate: float
    batch_size: int
    activations: tuple[tuple[str, str], ...] = ()

    def activation_of(self, path: str) -> str | None:
        for p, act in self.activations:
            if p == path:
                return act
        return None

    def with_activation(self, path: str, activation: str) -> Genes:
        acts = tuple((p, activation if p == path else a) for p, a in self.activations)
        return replace(self, activations=acts)

    def replace(self, **changes: Any) -> Genes:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate),
            "batch_size": int(self.batch_size),
            "activations": {p: a for p, a in self.activations},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genes:
        return cls(
            optimizer=str(data["optimizer"]),
            learning_rate=float(data["learning_rate"]),
            batch_size=int(data["batch_size"]),
            activations=tuple((str(p), str(a)) for p, a in dict(data.get("activations", {})).items()),
        )

    def short(self) -> str:
        """A compact one-line description, for tables and tooltips."""
        return f"{self.optimizer} lr={self.learning_rate:.3g} bs={self.batch_size}"

    def diff(self, other: Genes) -> list[str]:
        """Sentences describing how ``other`` differs from ``self``."""
        out: list[str] = []
        if other.optimizer != self.optimizer:
            out.append(f"optimizer: {self.optimizer} → {other.optimizer} (lr {other.learning_rate:.3g})")
        elif other.learning_rate != self.learning_rate:
            out.append(f"learning rate: {self.learning_rate:.3g} → {other.learning_rate:.3g}")
        if other.batch_size != self.batch_size:
            out.append(f"batch size: {self.batch_size} → {other.batch_size}")
        mine = dict(self.activations)
        for path, act in other.activations:
            if mine.get(path) != act:
                out.append(f"activation of {path}: {mine.get(path)} → {act}")
        return out
