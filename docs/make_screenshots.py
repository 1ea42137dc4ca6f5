"""Save offscreen screenshots of the main window before, during and after a demo run.

    QT_QPA_PLATFORM=offscreen python docs/make_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "screenshots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from miha_gui.app import load_demo
    from miha_gui.window import MainWindow

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="miha-shots-"))
    settings = QSettings(str(tmp / "settings.ini"), QSettings.IniFormat)
    w = MainWindow(settings)
    w.panel.run_dir.setText(str(tmp / "runs"))
    w.resize(1600, 1000)
    w.show()
    load_demo(w)
    w.panel.run_dir.setText(str(tmp / "runs"))
    app.processEvents()
    w.grab().save(str(out / "1-before.png"))
    w.start_run()
    shot_taken = False
    deadline = time.time() + 600
    while w.running and time.time() < deadline:
        app.processEvents()
        time.sleep(0.02)
        if not shot_taken and w.state.current_cycle >= 3 and w.state.current_phase == "member":
            w._refresh()
            app.processEvents()
            w.grab().save(str(out / "2-during.png"))
            shot_taken = True
    app.processEvents()
    w._refresh()
    app.processEvents()
    w.tabs.setCurrentIndex(0)
    w.grab().save(str(out / "3-after.png"))
    print(f"screenshots in {out}; run folder {w.run_dir}; status {w.state.status}")
    w.close()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip the final GC that can abort with PySide6 6.12 + pyqtgraph (see miha_gui.app.cli)
