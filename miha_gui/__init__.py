"""MIHA desktop app (PySide6 + pyqtgraph) over :mod:`miha_engine`.

No training logic lives here: the app builds a run configuration from widgets, runs the engine in a
worker thread, and draws what the engine reports.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_DIR", "RESOURCES", "demo_paths"]

DEMO_DIR = Path(__file__).resolve().parent / "demo"
RESOURCES = Path(__file__).resolve().parent / "resources"


def demo_paths() -> tuple[Path, Path]:
    """The demo model and dataset shipped inside the package."""
    return DEMO_DIR / "mnist_fnn.keras", DEMO_DIR / "mnist_digits.npz"
