"""Where the logo and icon live: the repository's assets/ when present, else the packaged copies."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent / "resources"
_REPO_ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _find(name: str) -> Path:
    for folder in (_REPO_ASSETS, _PKG):
        if (folder / name).exists():
            return folder / name
    return _PKG / name


def logo_path() -> Path:
    return _find("miha-logo.svg")


def icon_path() -> Path:
    return _find("miha-icon-256.png")
