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
    deadline = time.time() + 120
    while not w.run_action.isEnabled() and time.time() < deadline:  # the demo model is inspected in a child
        app.processEvents()
        time.sleep(0.02)
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
    # the views beside the plots
    w.views.setCurrentWidget(w.genealogy)
    w._refresh()
    app.processEvents()
    key = next(k for k in w.genealogy.member_nodes() if k.cycle == 2)
    w.genealogy.hover(key)
    w.genealogy.click(key)
    app.processEvents()
    w.grab().save(str(out / "4-genealogy.png"))
    w.genealogy.export(out / "genealogy.svg")
    w.views.setCurrentWidget(w.insight)
    app.processEvents()
    w.grab().save(str(out / "5-insight.png"))
    # a fork from cycle 2's winner with a wider population, then both runs compared
    parent = w.run_dir
    w.panel.params["population_size"].setValue(6)
    w.fork_from(str(parent / "model" / "model_2.keras"))
    while w.running and time.time() < deadline + 600:
        app.processEvents()
        time.sleep(0.02)
    dialog = w.compare_runs([parent, w.run_dir])
    dialog.resize(1100, 700)
    app.processEvents()
    dialog.grab().save(str(out / "6-compare.png"))
    print(f"screenshots in {out}; run folder {parent}; fork {w.run_dir}; status {w.state.status}")
    w.close()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip the final GC that can abort with PySide6 6.12 + pyqtgraph (see miha_gui.app.cli)
