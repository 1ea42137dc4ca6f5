"""The app, driven through its real widgets with pytest-qt (offscreen), training real tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from conftest import load_model_into  # noqa: E402
from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402

from miha_engine.config import RunConfig  # noqa: E402
from miha_gui import window as window_module  # noqa: E402
from miha_gui.worker import LIVE_THREADS  # noqa: E402

CFG = RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=2, population_size=3, seed=2)


@pytest.fixture(autouse=True)
def no_thread_left_running():
    yield
    running = [t for t in list(LIVE_THREADS) if t.isRunning()]
    for t in running:
        t.quit()
        t.wait(30000)
    assert not running, "a test left a QThread running"


@pytest.fixture
def win(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = window_module.MainWindow(settings)
    qtbot.addWidget(w)
    w.panel.run_dir.setText(str(tmp_path / "runs"))
    w.show()
    w._qtbot = qtbot
    return w


def _load(win, files, cfg=CFG):
    model, data = files
    win.panel.apply_config(cfg)
    assert load_model_into(win._qtbot, win.panel, model)
    assert win.panel.load_data(str(data))
    assert win.run_action.isEnabled()


def _wait_done(qtbot, win, timeout=240_000):
    qtbot.waitUntil(lambda: not win.running, timeout=timeout)
    qtbot.wait(50)


def test_full_run_draws_everything_and_reopens_identically(qtbot, win, files, tmp_path):
    _load(win, files)
    assert "Total: 2m + c·(pop·n + k) = 16 epochs" in win.panel.total_label.text()
    assert win.start_run()
    assert win.stop_action.isEnabled() and not win.run_action.isEnabled()
    _wait_done(qtbot, win)
    assert win.last_error == "" and win.last_result.status == "finished"
    # the estimate learns from the run: the same settings are estimated at the run's own wall time
    assert win.panel.estimate_seconds(16) == pytest.approx(win.state.wall_seconds, rel=1e-6)
    assert f"Estimated time: {window_module.format_duration(win.state.wall_seconds)}" in win.panel.total_label.text()
    win._refresh()
    lineage = 2 * 1 + 2 * (2 + 1)
    assert win.loss_plot.main_point_count() == lineage
    assert len(win.loss_plot.branches) == 2 * 3
    assert win.fitness_plot.point_count() == 2 * 3
    assert win.table.table.rowCount() == 3
    assert sum(win.table.table.item(r, 4).text() == "★ chosen" for r in range(3)) == 1
    expected = {"model_init.keras", "model_1.keras", "model_2.keras", "model_final.keras"} | {
        f"{c}_{m}_model.keras" for c in (1, 2) for m in range(3)}
    qtbot.waitUntil(lambda: expected <= set(win.browser.listed_files()), timeout=10_000)
    assert (win.run_dir / "learning_history.png").stat().st_size > 1000
    tip = window_module.describe_archive("2_1_model.keras", win.state)
    assert tip.startswith("2_1_model.keras: cycle 2, member 1") and len(tip) > len("2_1_model.keras: cycle 2, member 1")
    assert win.browser.select(win.run_dir / "population" / "2_1_model.keras")
    assert win.browser.tooltip_at(win.browser.visualRect(win.browser.currentIndex()).center()) == tip
    # the decisions' long texts wrap: they never force the window wider (that made every plot repaint)
    decision = win.state.decisions[2]
    assert len(decision) > 100 and win.table.decision.text() == decision
    # the whole decision is in the tooltip, with the noise rule's correction for the best of 2 mutants
    assert win.table.decision.toolTip() == decision
    assert decision.startswith("noise rule") and "for the best of 2 mutants" in decision
    with_text = win.minimumSizeHint().width()
    win.table.decision.setText("")
    assert with_text <= win.minimumSizeHint().width() + 20
    win.table.decision.setText(decision)

    # export the best model through the same slot the menu uses; it loads back
    out = tmp_path / "exported.keras"
    from miha_engine.models import load_model
    from miha_engine.runlog import RunFolder

    with qtbot.waitSignal(win.exported, timeout=120_000) as done:  # exported and checked in a child process
        assert win.export_archive(str(RunFolder(win.run_dir).best_archive("best")), str(out))
    assert done.args[0] == str(out) and "largest output difference 0" in done.args[1]
    assert load_model(out).predict(np.zeros((1, 64), "float32"), verbose=0).shape == (1, 10)
    assert "test samples of digits.npz" in win.statusBar().currentMessage()
    shots = win.export_plots(tmp_path / "plots")
    assert all(p.exists() and p.stat().st_size > 100 for p in shots)

    # a new window rebuilds the same picture from the folder alone
    live_x, live_y = win.loss_plot.main.getData()
    other = window_module.MainWindow(QSettings(str(tmp_path / "s2.ini"), QSettings.IniFormat))
    qtbot.addWidget(other)
    assert other.open_run(win.run_dir)
    x, y = other.loss_plot.main.getData()
    assert np.array_equal(x, live_x) and np.allclose(y, live_y, equal_nan=True)
    assert other.fitness_plot.point_count() == 6 and other.table.table.rowCount() == 3
    assert other.panel.params["cycles"].value() == 2


def test_gui_thread_stays_responsive_during_a_run(qtbot, win, files):
    """The longest gap between ticks of a 20 ms timer while a run trains: TensorFlow runs in a child
    process, so the GUI thread is never held for long. A 400 ms stall (what tracing in the GUI's own
    process once caused) fails this; the bound leaves room for a loaded 2-core machine."""
    from PySide6.QtCore import QElapsedTimer

    _load(win, files, CFG.replace(cycles=3))
    clock = QElapsedTimer()
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    win.start_run()
    qtbot.waitUntil(lambda: win.state.epochs_done >= 1, timeout=120_000)  # the child has started TensorFlow
    clock.start()
    timer.start()
    qtbot.waitUntil(lambda: win.state.epochs_done >= 8, timeout=120_000)
    assert win.running
    bar = win.tabs.tabBar()
    qtbot.mouseClick(bar, Qt.LeftButton, pos=bar.tabRect(1).center())
    assert win.tabs.currentIndex() == 1 and win.running
    _wait_done(qtbot, win)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) > 20, "the timer barely ticked while the run trained"
    assert max(gaps) < 250, f"the GUI thread stalled {max(gaps)} ms"


def test_stop_leaves_cancelled_and_resume_finishes(qtbot, win, files):
    _load(win, files)
    win.start_run()
    qtbot.waitUntil(lambda: any(b.steps for b in win.state.branches.values()), timeout=120_000)
    win.stop_run()
    _wait_done(qtbot, win)
    info = json.loads((win.run_dir / "run.json").read_text())
    assert info["status"] == "cancelled" and win.last_result.status == "cancelled"
    assert win.run_action.isEnabled() and win.resume_action.isEnabled()
    assert win.last_error == ""
    assert win.resume_run()
    _wait_done(qtbot, win)
    assert win.last_result.status == "finished"
    win._refresh()
    assert win.loss_plot.main_point_count() == 2 * 1 + 2 * (2 + 1)


def test_bad_files_show_a_message_and_nothing_breaks(qtbot, win, files, tmp_path):
    model, data = files
    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes(b"\x00" * 100)
    assert not load_model_into(qtbot, win.panel, corrupt)
    assert "not a Keras archive" in win.last_error
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((4, 64)))
    assert not win.panel.load_data(str(wrong))
    assert "missing array(s) x, y" in win.last_error
    # a dataset that does not fit the model is flagged before Run, in plain words
    assert load_model_into(qtbot, win.panel, model)
    short = tmp_path / "short.npz"
    np.savez(short, x=np.zeros((20, 12), "float32"), y=np.zeros(20, "int64"))
    assert win.panel.load_data(str(short))
    assert "expects (64)" in win.panel.mismatch_text() and not win.panel.mismatch.isHidden()
    assert not win.run_action.isEnabled()
    assert not win.start_run()
    # the app is still usable: the right dataset clears the message
    assert win.panel.load_data(str(data))
    assert win.panel.mismatch_text() == "" and win.run_action.isEnabled()
    assert not win.open_run(tmp_path)
    assert "not a MIHA run folder" in win.last_error


def test_engine_failure_during_run_is_reported_and_app_stays_usable(qtbot, win, files, tmp_path):
    _load(win, files)
    win.panel.run_dir.setText(str(tmp_path / "file-not-folder"))
    (tmp_path / "file-not-folder").write_text("x")
    win.start_run()
    _wait_done(qtbot, win)
    assert "file-not-folder" in win.last_error
    assert win.run_action.isEnabled()


def test_closing_during_a_run_asks_then_stops_cleanly(qtbot, tmp_path, files, monkeypatch):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = window_module.MainWindow(settings)
    w.panel.run_dir.setText(str(tmp_path / "runs"))
    w.show()
    w._qtbot = qtbot
    _load(w, files, CFG.replace(cycles=4))
    w.start_run()
    qtbot.waitUntil(lambda: w.state.epochs_done >= 1, timeout=120_000)
    asked = []
    monkeypatch.setattr(window_module, "ask", lambda *a: asked.append(a) or False)
    w.close()
    assert asked and w.isVisible() and w.running  # "No" keeps the window and the run
    monkeypatch.setattr(window_module, "ask", lambda *a: True)
    w.close()
    assert not w.isVisible() and not w.running
    assert json.loads((w.run_dir / "run.json").read_text())["status"] == "cancelled"
    # settings persist
    assert QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat).value("config")
    w.deleteLater()


def test_execution_settings_reach_the_config(win):
    assert win.panel.config().steps_per_execution == "auto" and win.panel.config().jit_compile == "auto"
    win.panel.spe.setValue(64)
    win.panel.xla.setChecked(True)
    cfg = win.panel.config()
    assert cfg.steps_per_execution == 64 and cfg.jit_compile is True
    win.panel.apply_config(RunConfig())
    assert win.panel.spe.text() == "auto" and not win.panel.xla.isChecked()


def test_demo_loads_and_launcher_starts(qtbot, win):
    from miha_gui.app import load_demo

    load_demo(win)
    assert "Loading" in win.panel.model_summary.text()  # inspected in another process: the window goes on
    qtbot.waitUntil(lambda: win.panel.dataset is not None, timeout=120_000)
    assert win.panel.model_info is not None and win.panel.model_info.params == 784 * 64 + 64 + 64 * 10 + 10
    assert win.panel.dataset.n_train == 2000 and win.run_action.isEnabled()
    assert "MIHA" in win.windowTitle() and not win.windowIcon().isNull()
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen", "MIHA_TIMING": "1"}
    proc = subprocess.run([sys.executable, "-m", "miha_gui", "--quit-after-shown"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "window shown after" in proc.stderr
    assert "tensorflow" not in proc.stderr.lower()


def test_launcher_explains_missing_xcb_libraries(monkeypatch):
    import ctypes.util

    from miha_gui import app

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "xcb-cursor" else real(name))
    problem = app.platform_problem()
    assert problem is not None and "libxcb-cursor0" in problem and "apt-get install" in problem
    monkeypatch.delenv("DISPLAY")
    assert "QT_QPA_PLATFORM=offscreen" in app.platform_problem()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert app.platform_problem() is None


def test_window_does_not_import_tensorflow_until_needed():
    code = ("import os, sys; os.environ['QT_QPA_PLATFORM']='offscreen';"
            "from PySide6.QtWidgets import QApplication; app = QApplication([]);"
            "from miha_gui.window import MainWindow; w = MainWindow(); w.show(); app.processEvents();"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr




def test_right_click_svg_export_works(qtbot, win, tmp_path):
    import pyqtgraph.exporters as ex

    win.loss_plot.main.setData([1.0, 2.0, 3.0], [1.0, 0.5, 0.3])
    out = tmp_path / "loss.svg"
    ex.SVGExporter(win.loss_plot.plotItem).export(fileName=str(out))
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()


def test_engine_process_killed_mid_run_is_reported_and_resumable(qtbot, win, files):
    import json as _json
    import signal

    _load(win, files, CFG.replace(cycles=4))
    win.start_run()
    qtbot.waitUntil(lambda: win.state.epochs_done >= 2, timeout=120_000)
    os_kill = __import__("os").kill
    os_kill(win.worker.engine.process.pid, signal.SIGKILL)
    _wait_done(qtbot, win)
    assert "ended unexpectedly" in win.last_error and "Resume" in win.last_error
    assert _json.loads((win.run_dir / "run.json").read_text())["status"] == "running"
    assert win.resume_action.isEnabled() and win.run_action.isEnabled()
    assert win.resume_run()
    _wait_done(qtbot, win)
    assert win.last_result is not None and win.last_result.status == "finished"


def test_empty_search_space_is_refused_with_the_engines_text(qtbot, win, files):
    _load(win, files)
    for box in win.panel.kind_boxes.values():
        box.setChecked(False)
    assert not win.start_run()
    assert "search space is empty" in win.last_error and not win.running


def test_qt_keeps_its_references():
    """PySide6 6.12.0 gave back borrowed references from emit() and processEvents(): each call took
    one reference from True or None, and the app (which no longer imports TensorFlow, whose modules
    held hundreds of thousands of them) aborted mid-run with "deallocating None". In a fresh
    process, 5,000 such calls must leave both counts about where they were."""
    code = textwrap.dedent("""
        import gc, os, sys
        from PySide6.QtCore import QObject, Signal
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        class Source(QObject):
            changed = Signal()
        source = Source()
        source.changed.connect(lambda: None)
        ballast = [None, True] * 20000  # so that a leak shows as a count, not as an abort
        gc.collect()
        before = sys.getrefcount(None), sys.getrefcount(True)
        for _ in range(5000):
            source.changed.emit()
            app.processEvents()
        after = sys.getrefcount(None), sys.getrefcount(True)
        print(after[0] - before[0], after[1] - before[1], flush=True)
        os._exit(0)
    """)
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    none_delta, true_delta = map(int, out.stdout.split())
    assert abs(none_delta) < 500 and abs(true_delta) < 500, (none_delta, true_delta)


def test_model_inspection_survives_its_service_dying(qtbot, win, files):
    """Models are inspected by one warm child process; if it dies, the pending request gets a clear
    message and the next Open starts a new one."""
    from miha_gui import inspector

    model, _ = files
    assert load_model_into(qtbot, win.panel, model)
    service = inspector._service()
    first = service.proc.processId()
    with qtbot.waitSignal(win.panel.modelChecked, timeout=60_000) as blocker:
        win.panel.load_model(str(model))
        service.proc.kill()
    assert blocker.args == [False] and "ended unexpectedly" in win.last_error
    assert load_model_into(qtbot, win.panel, model)
    assert service.proc.processId() != first


def test_take_the_model_out_from_the_app(qtbot, win, files, tmp_path):
    """Export in a deployment format, write the lineage's schedule, replay it, and read TensorFlow's
    start-up messages on request: all from the window, the window never waiting on TensorFlow."""
    _load(win, files)
    assert win.start_run()
    _wait_done(qtbot, win)
    # TFLite export, checked against the model on the run's test split
    out = tmp_path / "model.tflite"
    with qtbot.waitSignal(win.exported, timeout=120_000) as done:
        assert win.export_archive(str(win.run_dir / "model" / "model_final.keras"), str(out), "tflite")
    assert out.stat().st_size > 1000 and "as tflite" in done.args[1]
    # a name the exporter refuses: the engine's sentence, no file
    assert win.export_archive(str(win.run_dir / "model" / "model_final.keras"), str(tmp_path / "model.txt"))
    qtbot.waitUntil(lambda: win._export is None, timeout=120_000)
    assert "unknown model format .txt" in win.last_error and not (tmp_path / "model.txt").exists()
    # the schedule, then a replay of it on the panel's dataset from the run's initial model
    run_dir = win.run_dir
    schedule = win.write_schedule(str(tmp_path / "schedule.toml"))
    assert schedule is not None and "[[segment]]" in schedule.read_text()
    assert win.replay_schedule(str(schedule))
    _wait_done(qtbot, win)
    assert win.last_result.status == "finished" and win.run_dir != run_dir
    from miha_engine.runlog import RunFolder

    want, got = RunFolder(run_dir).read_history(), RunFolder(win.run_dir).read_history()
    assert [r["genes"] for r in got] == [r["genes"] for r in want]
    assert np.allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-4)
    win.framework_log.setChecked(True)
    assert "TensorFlow's start-up messages" in win.log.toPlainText()


def test_app_words_and_folders(qtbot, win, tmp_path):
    """The app names its own controls in advice, and puts runs in the user's data folder by default."""
    import keras

    from miha_gui.setup_panel import default_run_base

    fresh = window_module.MainWindow(QSettings(str(tmp_path / "fresh.ini"), QSettings.IniFormat))
    qtbot.addWidget(fresh)
    assert fresh.panel.run_dir.text() == str(default_run_base())
    assert Path(fresh.panel.run_dir.text()).resolve() != (Path.cwd() / "runs").resolve()
    lam = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: t * 2.0),
                      keras.layers.Dense(10, activation="softmax")]).save(lam)
    assert not load_model_into(qtbot, win.panel, lam)
    assert "Allow unsafe model code" in win.last_error and "--unsafe-model" not in win.last_error
    assert "Allow unsafe model code" in win.panel.model_summary.text()
    win.panel.unsafe.setChecked(True)
    assert load_model_into(qtbot, win.panel, lam)


def test_genealogy_insight_fork_and_compare(qtbot, win, files, tmp_path):
    """The genealogy tab draws one node per member and the winner path of population.json, live and
    from the folder; a click selects the archive; the insight tab's counts are the journal's; a
    fork from the browser starts from that archive and links back; runs compare, other tasks flagged."""
    from miha_engine.insight import insight
    from miha_engine.runlog import RunFolder

    _load(win, files)
    win.views.setCurrentWidget(win.genealogy)
    assert win.start_run()
    qtbot.waitUntil(lambda: len(win.genealogy.member_nodes()) >= 1, timeout=120_000)  # live, during the run
    _wait_done(qtbot, win)
    win._refresh()
    pop = RunFolder(win.run_dir).read_population()
    members = [(int(c), int(m)) for c, v in pop.items() for m in v if m != "_cycle"]
    assert sorted((k.cycle, k.member) for k in win.genealogy.member_nodes()) == sorted(members)
    assert win.genealogy.thick_member_nodes() == {int(c): v["_cycle"]["winner"] for c, v in pop.items()}
    # click a member node: its archive is selected in the browser
    key = next(k for k in win.genealogy.member_nodes() if (k.cycle, k.member) == (2, 1))
    win.genealogy.click(key)
    assert Path(win.browser.fs.filePath(win.browser.currentIndex())).name == "2_1_model.keras"
    win.genealogy.hover(key)
    assert len(win.genealogy.curve.getPlotItem().listDataItems()) == 2
    for suffix in (".png", ".svg"):
        out = win.genealogy.export(tmp_path / f"tree{suffix}")
        assert out.stat().st_size > 2000
    win.genealogy.fold.setChecked(True)
    assert len(win.genealogy.member_nodes()) == 2  # one winner per cycle, the losers folded
    win.genealogy.fold.setChecked(False)
    # the insight tab counts what insight() counts from the journal
    win.views.setCurrentWidget(win.insight)
    want = insight([win.run_dir])
    assert win.insight.result is not None and win.insight.result.members == want.members > 0
    rows = {(win.insight.cell(r, 0) or None, win.insight.cell(r, 1)): win.insight.cell(r, 2)
            for r in range(win.insight.table.rowCount())}
    for kind, tally in want.by_kind.items():
        assert rows[(kind, "all")] == str(tally.tried)
    # fork from a member archive, from the browser's menu action, with one more cycle
    parent = win.run_dir
    win.panel.params["cycles"].setValue(3)
    assert win.fork_from(str(parent / "population" / "2_1_model.keras"))
    _wait_done(qtbot, win)
    assert win.last_result.status == "finished" and win.run_dir != parent
    fork_pop = RunFolder(win.run_dir).read_population()
    assert sorted(fork_pop, key=int) == ["3"]
    win.views.setCurrentWidget(win.genealogy)
    win._refresh()
    assert "Forked from" in win.genealogy.parent_link.text() and parent.name in win.genealogy.parent_link.text()
    # compare the parent and the fork (same task) and a run of another task (flagged)
    other_data = tmp_path / "other.npz"
    from miha_engine.testing import digits

    x, y, xt, yt = digits()
    np.savez(other_data, x=x[:300], y=y[:300])
    import miha_engine as me

    me.run(str(files[0]), str(other_data), CFG.replace(cycles=1), run_dir=tmp_path / "other")
    dialog = win.compare_runs([parent, win.run_dir, tmp_path / "other"])
    qtbot.addWidget(dialog)
    assert dialog.curve_count() == 3 and dialog.table.rowCount() == 3
    assert not dialog.summaries[1].flag and "different task" in dialog.summaries[2].flag
    assert "accuracy" in " ".join(dialog.table.horizontalHeaderItem(c).text() for c in range(dialog.table.columnCount()))
    dialog.grab().save(str(tmp_path / "compare.png"))


def test_a_live_edit_in_the_app_applies_from_the_next_cycle(qtbot, win, files):
    _load(win, files, CFG.replace(cycles=3, population_size=3))
    assert win.start_run()
    qtbot.waitUntil(lambda: win.state.current_cycle >= 1 and win.state.current_phase == "member", timeout=120_000)
    assert win.panel.params["population_size"].isEnabled() and not win.panel.params["cycles"].isEnabled()
    assert not win.panel._files_group.isEnabled()
    win.panel.params["population_size"].setValue(2)
    assert "Applies from cycle" in win.edit_banner.text() and "population_size 3 → 2" in win.edit_banner.text()
    _wait_done(qtbot, win)
    from miha_engine.runlog import RunFolder

    pop = RunFolder(win.run_dir).read_population()
    sizes = [len([m for m in pop[c] if m != "_cycle"]) for c in sorted(pop, key=int)]
    assert sizes[0] == 3 and sizes[-1] == 2  # the current cycle kept its members; later ones changed
    applied = next(c for c, e in sorted(win.state.edits.items()) if e.get("population_size") == 2)
    assert all(s == 3 for s in sizes[: applied - 1]) and all(s == 2 for s in sizes[applied - 1:])
    assert "Applied from cycle" in win.edit_banner.text()
    # replayed from the folder alone, the edit is there too
    from miha_engine.state import replay

    assert replay(win.run_dir).edits == win.state.edits


def test_the_genes_plot_draws_weight_decay_the_annealed_rate_and_dropout(qtbot):
    from miha_engine.state import RunState
    from miha_gui.plots import GenesPlot

    plot = GenesPlot()
    qtbot.addWidget(plot)
    st = RunState()
    base = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32, "activations": {"h": "relu"},
            "weight_decay": 0.0, "dropouts": {"drop": 0.2}}
    st.main_steps = [1, 2, 3, 4]
    st.main_genes = [base, {**base, "weight_decay": 0.1}, {**base, "weight_decay": 0.1, "dropouts": {"drop": 0.4}},
                     {**base, "weight_decay": 0.1, "dropouts": {"drop": 0.4}}]
    st.main_metrics = [{}, {}, {}, {"learning_rate": 2.5e-4}]  # the final phase's annealed rate
    plot.refresh(st)
    _, wd = plot.wd.getData()  # the plot is in log mode: it gives log10 of the values
    assert np.isnan(wd[0]) and list(10 ** wd[1:]) == pytest.approx([0.1] * 3)  # 0 has no log: a gap
    _, lr = plot.lr.getData()
    assert list(10 ** lr) == pytest.approx([1e-3, 1e-3, 1e-3, 2.5e-4])
    labels = [t.toPlainText() for t in plot.labels]
    assert any("dropout 0.2" in t for t in labels) and any("dropout 0.4" in t for t in labels)


def test_the_empty_loss_plot_shows_whole_epochs_and_the_data_takes_over(qtbot):
    from miha_engine.state import RunState
    from miha_gui.plots import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.show()
    (x0, x1), (y0, y1) = plot.getViewBox().viewRange()
    assert (x0, x1, y0, y1) == pytest.approx((1, 10, -1, 1))  # epochs 1-10, losses 0.1-10 (log axis)
    st = RunState()
    st.main_steps = list(range(1, 31))
    st.main_losses = [0.01 * (1 + 1 / s) for s in st.main_steps]
    st.main_val_losses = [float("nan")] * 30
    plot.refresh(st)
    qtbot.waitUntil(lambda: plot.getViewBox().viewRange()[0][1] >= 30 and plot.getViewBox().viewRange()[1][0] < -1.5)
    assert not plot.hint.isVisible()
    plot.clear_run()
    assert plot.getViewBox().viewRange()[0] == pytest.approx([1, 10]) and plot.hint.isVisible()


def test_the_empty_genes_plot_shows_a_readable_rate_axis_and_the_data_takes_over(qtbot):
    # before a run pyqtgraph's default 0-1 range on the log axis piled its tick labels into a stack
    from miha_engine.state import RunState
    from miha_gui.plots import GenesPlot

    plot = GenesPlot()
    qtbot.addWidget(plot)
    plot.resize(400, 260)
    plot.show()
    axis = plot.lr_plot.getAxis("left")
    assert plot.lr_plot.viewRange()[1] == pytest.approx([-4, -2])
    assert [label for _, label in axis._tickLevels[0]] == ["0.0001", "0.001", "0.01"]  # set by setTicks
    st = RunState()
    st.main_steps = [1, 2, 3]
    st.main_genes = [{"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 128}] * 3
    plot.refresh(st)
    qtbot.waitUntil(lambda: plot.lr_plot.viewRange()[1][0] < -1.3 < plot.lr_plot.viewRange()[1][1])  # log10(0.05)
    assert axis._tickLevels is None  # pyqtgraph's own ticks for the data
    low, high = plot.bs_plot.viewRange()[1]
    assert low < 128 < high
    plot.clear_run()
    assert plot.lr_plot.viewRange()[1] == pytest.approx([-4, -2])


def test_an_elided_label_keeps_its_whole_text_and_never_asks_for_its_width(qtbot):
    from PySide6.QtWidgets import QLabel

    from miha_gui.tables import ElidedLabel

    label = ElidedLabel()
    qtbot.addWidget(label)
    label.show()
    text = "noise rule: the control keeps the parent's genes; " * 4
    label.setText(text)
    label.resize(120, 20)
    shown = QLabel.text(label)
    assert label.text() == text and label.toolTip() == text
    assert shown.endswith("…") and len(shown) < len(text)
    assert label.minimumSizeHint().width() < 50
    label.resize(4000, 20)
    assert QLabel.text(label) == text  # wide enough: nothing cut


def test_a_failing_refresh_part_does_not_stop_later_refreshes(win, monkeypatch):
    def broken(st):
        raise RuntimeError("a plot failed")

    monkeypatch.setattr(win.fitness_plot, "refresh", broken)
    win._dirty = True
    win._refresh_if_dirty()  # part 0 now; part 1 is queued
    assert win._refreshing
    with pytest.raises(RuntimeError):
        win._refresh_part(1)
    assert not win._refreshing
    monkeypatch.undo()
    win._dirty = True
    win._refresh_if_dirty()  # a new chain starts
    assert win._refreshing and not win._dirty
