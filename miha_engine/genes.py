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
        weight_decay: the optimizer's decoupled weight decay (Keras' ``weight_decay``: every step
            takes ``w -= w * weight_decay * learning_rate``); 0 turns it off.  None (genes written
            before this gene existed) leaves the optimizer as it was compiled.
        dropouts: ``(layer_path, rate)`` for every ``Dropout`` layer of the model, in model order.
        label_smoothing: the loss's label smoothing; None where the loss does not take it.
    """

    optimizer: str
    learning_rate: float
    batch_size: int
    activations: tuple[tuple[str, str], ...] = ()
    weight_decay: float | None = None
    dropouts: tuple[tuple[str, float], ...] = ()
    label_smoothing: float | None = None

    def activation_of(self, path: str) -> str | None:
        return dict(self.activations).get(path)

    def with_activation(self, path: str, activation: str) -> Genes:
        acts = tuple((p, activation if p == path else a) for p, a in self.activations)
        return replace(self, activations=acts)

    def dropout_of(self, path: str) -> float | None:
        return dict(self.dropouts).get(path)

    def with_dropout(self, path: str, rate: float) -> Genes:
        return replace(self, dropouts=tuple((p, float(rate) if p == path else r) for p, r in self.dropouts))

    def replace(self, **changes: Any) -> Genes:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "optimizer": self.optimizer,
            "learning_rate": float(self.learning_rate),
            "batch_size": int(self.batch_size),
            "activations": {p: a for p, a in self.activations},
        }
        if self.weight_decay is not None:
            out["weight_decay"] = float(self.weight_decay)
        if self.dropouts:
            out["dropouts"] = {p: float(r) for p, r in self.dropouts}
        if self.label_smoothing is not None:
            out["label_smoothing"] = float(self.label_smoothing)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genes:
        wd, ls = data.get("weight_decay"), data.get("label_smoothing")
        return cls(
            optimizer=str(data["optimizer"]),
            learning_rate=float(data["learning_rate"]),
            batch_size=int(data["batch_size"]),
            activations=tuple((str(p), str(a)) for p, a in dict(data.get("activations", {})).items()),
            weight_decay=None if wd is None else float(wd),
            dropouts=tuple((str(p), float(r)) for p, r in dict(data.get("dropouts", {})).items()),
            label_smoothing=None if ls is None else float(ls),
        )

    def short(self) -> str:
        """A compact one-line description, for tables and tooltips."""
        text = f"{self.optimizer} lr={self.learning_rate:.3g} bs={self.batch_size}"
        if self.weight_decay:
            text += f" wd={self.weight_decay:.3g}"
        if self.label_smoothing:
            text += f" ls={self.label_smoothing:.3g}"
        return text

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
        if other.weight_decay != self.weight_decay and other.weight_decay is not None:
            out.append(f"weight decay: {_num(self.weight_decay)} → {_num(other.weight_decay)}")
        rates = dict(self.dropouts)
        for path, rate in other.dropouts:
            if rates.get(path) != rate:
                out.append(f"dropout of {path}: {_num(rates.get(path))} → {_num(rate)}")
        if other.label_smoothing != self.label_smoothing and other.label_smoothing is not None:
            out.append(f"label smoothing: {_num(self.label_smoothing)} → {_num(other.label_smoothing)}")
        return out


def _num(value: float | None) -> str:
    return "default" if value is None else f"{value:.3g}"
