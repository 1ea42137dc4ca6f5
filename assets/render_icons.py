"""Render assets/miha-logo.svg to the PNG sizes the app and README use, and copy them into the
package (miha_gui/resources) so an installed app finds them.

    QT_QPA_PLATFORM=offscreen python assets/render_icons.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

HERE = Path(__file__).resolve().parent
PKG = HERE.parent / "miha_gui" / "resources"


def main() -> None:
    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 - needed for painting
    renderer = QSvgRenderer(str(HERE / "miha-logo.svg"))
    PKG.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "miha-logo.svg", PKG / "miha-logo.svg")
    for size in (16, 32, 64, 128, 256, 512):
        img = QImage(size, size, QImage.Format_ARGB32)
        img.fill(Qt.transparent)
        p = QPainter(img)
        p.setRenderHint(QPainter.Antialiasing)
        renderer.render(p)
        p.end()
        name = f"miha-icon-{size}.png"
        img.save(str(HERE / name))
        if size in (64, 256):
            shutil.copy(HERE / name, PKG / name)
    print("rendered icons")


if __name__ == "__main__":
    main()
