"""The app's responsiveness: time from process start to the window shown (with and without
--demo), the longest GUI-thread stall while a demo run trains (QTimer jitter), and the plot refresh
rate.  Offscreen Qt; all numbers from one process run of this script.

    python benchmarks/gui.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent


def launch_time(extra: list[str], repeats: int = 3) -> float:
    env = {**os.environ, "MIHA_TIMING": "1", "XDG_CONFIG_HOME": tempfile.mkdtemp()}
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-m", "miha_gui", "--quit-after-shown", *extra], capture_output=True,
                             text=True, env=env, timeout=120)
        line = [ln for ln in out.stderr.splitlines() if "window shown after" in ln][0]
        times.append(float(line.split("after")[1].split()[0]))
    return statistics.median(times)


def stall_during_demo_run(tab: str = "plots") -> dict:
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from miha_gui.app import load_demo
    from miha_gui.window import MainWindow

    app = QApplication.instance() or QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="miha-gui-bench-"))
    w = MainWindow(QSettings(str(tmp / "s.ini"), QSettings.IniFormat))
    w.show()
    if tab == "genealogy":
        w.views.setCurrentWidget(w.genealogy)
    load_demo(w)
    w.panel.run_dir.setText(str(tmp / "runs"))
    deadline = time.perf_counter() + 120
    while not w.run_action.isEnabled() and time.perf_counter() < deadline:  # the model is inspected in a child
        app.processEvents()
        time.sleep(0.01)
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]

    def tick():
        now = clock.nsecsElapsed()
        gaps.append((now - last[0]) / 1e6)
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    refreshes = [0]
    original = w.loss_plot.refresh

    def counted(st):
        refreshes[0] += 1
        original(st)

    w.loss_plot.refresh = counted
    timer.start()
    t0 = time.perf_counter()
    w.start_run()
    while w.running:
        app.processEvents()
        time.sleep(0.001)
    wall = time.perf_counter() - t0
    timer.stop()
    for _ in range(20):
        app.processEvents()
    stalls = sorted(g - 10.0 for g in gaps)
    w.close()
    w.deleteLater()
    timer.deleteLater()
    app.processEvents()
    return {"run_wall_s": wall, "ticks": len(gaps), "longest_stall_ms": max(stalls),
            "p99_stall_ms": stalls[int(0.99 * (len(stalls) - 1))], "median_stall_ms": statistics.median(stalls),
            "plot_refreshes_per_s": refreshes[0] / wall, "status": w.state.status}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="one launch of each kind instead of the median of three")
    ap.add_argument("--no-report", action="store_true", help="write only the JSON (run_all.py writes the report)")
    ap.add_argument("--tab", choices=("plots", "genealogy"), default="plots",
                    help="the view shown beside the plots while the demo run trains")
    ap.add_argument("--stall-only", type=int, metavar="RUNS", default=0,
                    help="only measure the longest stall, over RUNS demo runs, and write gui-stall-<tab>.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stall_only:
        runs = [stall_during_demo_run(args.tab) for _ in range(args.stall_only)]
        longest = [r["longest_stall_ms"] for r in runs]
        print(f"longest GUI stall with the {args.tab} tab shown, {len(runs)} demo runs: "
              + ", ".join(f"{v:.0f}" for v in longest) + f" ms (max {max(longest):.0f} ms)")
        (out / f"gui-stall-{args.tab}.json").write_text(json.dumps({"records": [
            {"system": "miha-gui", "task": "app", "seed": i, "epochs": 0, "wall_s": r["run_wall_s"],
             "metric": "longest_stall_ms", "value": r["longest_stall_ms"], "config": {"tab": args.tab, **r}}
            for i, r in enumerate(runs)]}, indent=2))
        return
    repeats = 1 if args.quick else 3
    plain = launch_time([], repeats)
    demo = launch_time(["--demo"], repeats)
    print(f"window shown after {plain:.3f} s (plain), {demo:.3f} s (--demo)")
    stall = stall_during_demo_run()
    print(json.dumps(stall, indent=2))
    result = {"launch_to_window_s": plain, "launch_to_window_demo_s": demo, **stall}
    result["records"] = [
        {"system": "miha-gui", "task": "app", "seed": 0, "epochs": 0, "wall_s": value if metric.startswith("launch") else stall["run_wall_s"],
         "metric": metric, "value": value, "config": {"repeats": repeats, "platform": os.environ.get("QT_QPA_PLATFORM")}}
        for metric, value in (("launch_to_window_s", plain), ("launch_to_window_demo_s", demo),
                              ("longest_stall_ms", stall["longest_stall_ms"]), ("p99_stall_ms", stall["p99_stall_ms"]),
                              ("plot_refreshes_per_s", stall["plot_refreshes_per_s"]))]
    (out / "gui.json").write_text(json.dumps(result, indent=2))
    if args.no_report:
        return
    section = "\n".join([
        "## The app's responsiveness",
        "",
        "`python benchmarks/gui.py` (offscreen Qt, 2 cores, while a demo run trains in the engine's child process).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| process start → window shown | {plain:.2f} s | ≤ 1.0 s |",
        f"| process start → window shown, `--demo` | {demo:.2f} s | ≤ 1.0 s |",
        f"| longest GUI-thread stall during a demo run (10 ms QTimer jitter) | {stall['longest_stall_ms']:.0f} ms | ≤ 50 ms |",
        f"| 99th-percentile stall | {stall['p99_stall_ms']:.0f} ms | |",
        f"| plot refreshes per second | {stall['plot_refreshes_per_s']:.1f} | |",
        "",
    ])
    from speed import _write_section

    _write_section(HERE / "REPORT.md", "## The app's responsiveness", section)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # PySide6 6.12 with pyqtgraph can crash in the interpreter's final garbage collection after a
    # QApplication made in a script; everything is written by now, so leave without it.
    os._exit(0)
