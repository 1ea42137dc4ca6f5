"""``miha-gui [--demo] [RUN_DIR]``: start the app.

The window appears before TensorFlow loads: nothing on this path imports it.
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import sys
import time

_T0 = time.perf_counter()

XCB_LIBS = {"xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-keysyms": "libxcb-keysyms1"}


def platform_problem() -> str | None:
    """Explain, before Qt aborts, why the xcb platform plugin would fail to load."""
    if sys.platform != "linux":
        return None
    plat = os.environ.get("QT_QPA_PLATFORM", "")
    if plat and not plat.startswith("xcb"):
        return None
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return ("no display found (DISPLAY is not set). Run MIHA on a desktop session, or set "
                "QT_QPA_PLATFORM=offscreen to run without a screen")
    if os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
        return None
    missing = [pkg for lib, pkg in XCB_LIBS.items() if ctypes.util.find_library(lib) is None]
    if missing:
        return ("Qt's xcb platform plugin needs system libraries that are missing: "
                f"{' '.join(missing)}. Install them with: sudo apt-get install {' '.join(missing)}")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miha-gui", description="MIHA: tune a Keras model's hyperparameters while it trains.")
    parser.add_argument("run_dir", nargs="?", help="a run folder to open")
    parser.add_argument("--demo", action="store_true", help="open with the built-in MNIST demo loaded, ready to Run")
    parser.add_argument("--run", action="store_true", help="with --demo: start the run at once")
    parser.add_argument("--quit-after-shown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    problem = platform_problem()
    if problem:
        print(f"miha-gui: {problem}", file=sys.stderr)
        return 2

    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("MIHA")
    app.setOrganizationName("MIHA")
    from . import resources
    from .window import MainWindow

    app.setWindowIcon(QIcon(str(resources.icon_path())))
    window = MainWindow()
    window.show()
    shown = time.perf_counter() - _T0
    if os.environ.get("MIHA_TIMING"):
        print(f"miha-gui: window shown after {shown:.3f} s", file=sys.stderr)
    if args.quit_after_shown:
        window.save_on_close = False  # a timing probe must not overwrite the user's window geometry
        QTimer.singleShot(0, app.quit)
        app.exec()
        return 0
    if args.demo:
        QTimer.singleShot(0, lambda: load_demo(window, start=args.run))
    elif args.run_dir:
        QTimer.singleShot(0, lambda: window.open_run(args.run_dir))
    return app.exec()


def load_demo(window, start: bool = False) -> None:
    """Load the demo model and dataset shipped in the package, with a quick schedule."""
    from miha_engine.config import RunConfig

    from . import demo_paths

    model, data = demo_paths()
    window.panel.apply_config(RunConfig(runup_epochs=2, candidate_epochs=2, fixing_epochs=1, cycles=5,
                                        population_size=4, batch_size=32, seed=0))
    pending = [True]

    def model_checked(ok: bool) -> None:
        if not pending:  # a model the user opens later is not the demo's
            return
        pending.clear()
        if ok and window.panel.load_data(data):
            window.statusBar().showMessage("Demo loaded: 2,000 MNIST digits and a 784-64-10 network. Press Run.")
            if start:
                window.start_run()

    window.panel.modelChecked.connect(model_checked)
    window.statusBar().showMessage("Loading the demo model…")
    window.panel.load_model(model)


def cli() -> None:
    """Console entry point: run the app, then leave without the interpreter's final garbage
    collection, which can abort with PySide6 6.12 and pyqtgraph ("none_dealloc") after the window has
    closed; settings and run folders are all written by then."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
