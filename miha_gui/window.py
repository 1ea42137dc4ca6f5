"""The main window: set-up on the left, live plots in the centre, the run folder on the right."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import (
    QCoreApplication,
    QProcess,
    QProcessEnvironment,
    QSettings,
    Qt,
    QThread,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QFont, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from miha_engine import events as ev
from miha_engine.config import RunConfig
from miha_engine.errors import InputError
from miha_engine.export import FORMATS as EXPORT_FORMATS
from miha_engine.process import Job
from miha_engine.state import RunState, replay

from . import resources
from .explore import CompareDialog, InsightPanel
from .genealogy import GenealogyView
from .inspector import ModelInspector, engine_message
from .plots import FitnessPlot, GenesPlot, LossPlot
from .setup_panel import SetupPanel, format_duration
from .tables import PopulationTable, RunBrowser, describe_archive
from .worker import EngineWorker, start_worker


def ask(parent, title: str, text: str) -> bool:
    """A yes/no question (tests replace this function)."""
    return QMessageBox.question(parent, title, text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes


#: The export dialog's file types and the format each one asks for.
EXPORT_FILTERS = {
    "Keras archive (*.keras)": "keras",
    "Legacy HDF5 (*.h5)": "h5",
    "TensorFlow SavedModel (a folder) (*)": "savedmodel",
    "TFLite (*.tflite)": "tflite",
    "ONNX (*.onnx)": "onnx",
}


def _import_run_modules() -> None:
    import miha_engine.runner  # noqa: F401


class MainWindow(QMainWindow):
    #: an export finished and was checked: (path, the report's sentence)
    exported = Signal(str, str)

    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings("MIHA", "MIHA")
        self.setWindowTitle("MIHA — hyperparameters tuned while the network trains")
        self.setWindowIcon(QIcon(str(resources.icon_path())))
        self.state = RunState()
        self.run_dir: Path | None = None
        self.thread: QThread | None = None
        self.worker: EngineWorker | None = None
        self.last_error = ""
        self.last_result = None
        self._export: QProcess | None = None
        self._sent_edits: dict = {}
        self._dirty = False
        self._refreshing = False  # a staggered refresh (see _refresh_part) is under way
        self._dialogs: list[QMessageBox] = []

        self.panel = SetupPanel()
        self.panel.error.connect(self.show_error)
        self.panel.changed.connect(self._update_buttons)
        self.panel.changed.connect(self._panel_changed_while_running)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(480)

        self.loss_plot = LossPlot()
        self.fitness_plot = FitnessPlot()
        self.genes_plot = GenesPlot()
        self.table = PopulationTable()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setFont(QFont("monospace", 9))
        lower_plots = QSplitter(Qt.Horizontal)
        lower_plots.addWidget(self.fitness_plot)
        lower_plots.addWidget(self.genes_plot)
        self.framework_log = QCheckBox("Show TensorFlow's start-up messages")
        self.framework_log.setToolTip("TensorFlow's own lines (oneDNN, CUDA drivers…), kept out of the log unless asked")
        self.framework_log.toggled.connect(self._show_framework_log)
        log_page = QWidget()
        log_layout = QVBoxLayout(log_page)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_layout.addWidget(self.log)
        log_layout.addWidget(self.framework_log)
        tabs = QTabWidget()
        tabs.addTab(self.table, "Population")
        tabs.addTab(log_page, "Log")
        self.tabs = tabs
        plots = QSplitter(Qt.Vertical)
        plots.addWidget(self.loss_plot)
        plots.addWidget(lower_plots)
        plots.setSizes([420, 260])
        self.genealogy = GenealogyView()
        self.genealogy.archiveClicked.connect(self._select_archive)
        self.genealogy.parentRequested.connect(self.open_run)
        self.genealogy.export_btn.clicked.connect(self._browse_export_genealogy)
        self.insight = InsightPanel()
        self.views = QTabWidget()
        self.views.addTab(plots, "Plots")
        self.views.addTab(self.genealogy, "Genealogy")
        self.views.addTab(self.insight, "Insight")
        self.views.currentChanged.connect(lambda _i: self._refresh_views(force=True))
        self.edit_banner = QLabel("")
        self.edit_banner.setWordWrap(True)
        self.edit_banner.setStyleSheet("background:#fff3bf; color:#5c3c00; padding:4px; border-radius:3px")
        self.edit_banner.hide()
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.edit_banner)
        top_layout.addWidget(self.views, 1)
        centre = QSplitter(Qt.Vertical)
        centre.addWidget(top)
        centre.addWidget(tabs)
        centre.setSizes([680, 220])

        self.browser = RunBrowser()
        self.browser.modelActivated.connect(self.show_model_summary)
        self.archive_inspector = ModelInspector(self)
        self.archive_inspector.finished.connect(self._archive_inspected)
        self.browser.exportRequested.connect(self.export_archive)
        self.browser.scheduleRequested.connect(self.write_schedule)
        self.browser.replayRequested.connect(self.replay_schedule)
        self.browser.forkRequested.connect(self.fork_from)
        self.browser_label = QLabel("No run folder yet.")
        self.browser_label.setWordWrap(True)
        self.export_btn = QPushButton("Export best model…")
        self.export_btn.clicked.connect(lambda: self.export_best("best"))
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(4, 4, 4, 4)
        title = QLabel("<b>Run folder</b>")
        rl.addWidget(title)
        rl.addWidget(self.browser_label)
        rl.addWidget(self.browser, 100)
        rl.addStretch(1)
        rl.addWidget(self.export_btn)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(scroll)
        split.addWidget(centre)
        split.addWidget(right)
        split.setSizes([500, 860, 300])
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 0)
        split.setCollapsible(1, False)
        self.split = split
        self.setCentralWidget(split)
        self.save_on_close = True

        self._build_toolbar()
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(320)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().showMessage("Load a model and a dataset, then press Run.")

        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._refresh_if_dirty)
        self.timer.start()
        self._restore_settings()
        self._update_buttons()
        # the run's module (no TensorFlow) is read while the app is idle, not when Run is pressed
        QTimer.singleShot(800, self, _import_run_modules)

    # -- layout pieces ---------------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        tb = QToolBar("Run")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.addToolBar(tb)
        self.run_action = QAction("▶ Run", self, shortcut=QKeySequence("Ctrl+R"), triggered=self.start_run)
        self.stop_action = QAction("■ Stop", self, triggered=self.stop_run)
        self.resume_action = QAction("⟳ Resume", self, triggered=self.resume_run)
        self.open_action = QAction("Open run folder…", self, shortcut=QKeySequence.Open, triggered=self._browse_run)
        self.export_action = QAction("Export best model…", self, triggered=lambda: self.export_best("best"))
        self.export_final_action = QAction("Export final model…", self, triggered=lambda: self.export_best("final"))
        self.plots_action = QAction("Export plots…", self, triggered=self._browse_export_plots)
        self.compare_action = QAction("Compare runs…", self, triggered=self.compare_runs)
        self.schedule_action = QAction("Write the lineage's schedule…", self, triggered=self.write_schedule)
        self.replay_action = QAction("Replay a schedule…", self, triggered=self.replay_schedule)
        self.about_action = QAction("About", self, triggered=self.about)
        for a in (self.run_action, self.stop_action, self.resume_action):
            tb.addAction(a)
        tb.addSeparator()
        for a in (self.open_action, self.export_action, self.plots_action):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.about_action)
        menu = self.menuBar().addMenu("&File")
        for a in (self.open_action, self.export_action, self.export_final_action, self.plots_action):
            menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.compare_action)
        menu.addAction(self.schedule_action)
        menu.addAction(self.replay_action)
        menu.addSeparator()
        menu.addAction(QAction("Quit", self, shortcut=QKeySequence.Quit, triggered=self.close))
        runm = self.menuBar().addMenu("&Run")
        for a in (self.run_action, self.stop_action, self.resume_action):
            runm.addAction(a)
        self.menuBar().addMenu("&Help").addAction(self.about_action)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def _update_buttons(self) -> None:
        running = self.running
        ready = self.panel.model_path is not None and self.panel.data_path is not None and not self.panel.mismatch_text()
        self.run_action.setEnabled(ready and not running)
        self.stop_action.setEnabled(running)
        resumable = (self.run_dir is not None and not running and self.state.status in ("cancelled", "failed", "interrupted"))
        self.resume_action.setEnabled(resumable)
        has_archive = self.run_dir is not None and (self.run_dir / "model").is_dir()
        self.export_action.setEnabled(has_archive)
        self.export_final_action.setEnabled(self.run_dir is not None and (self.run_dir / "model" / "model_final.keras").exists())
        self.export_btn.setEnabled(has_archive)
        self.schedule_action.setEnabled(not running and self.run_dir is not None
                                        and (self.run_dir / "history.csv").exists())
        self.replay_action.setEnabled(not running)
        self.panel.set_running(running)

    # -- messages --------------------------------------------------------------------------------
    @Slot(str)
    def show_error(self, text: str) -> None:
        """Show a message the user can act on; never blocks the event loop."""
        self.last_error = text
        self.log_line(f"error: {text}")
        self.statusBar().showMessage(text, 15000)
        box = QMessageBox(QMessageBox.Warning, "MIHA", text, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()
        self._dialogs = [d for d in self._dialogs if d.isVisible()] + [box]

    def log_line(self, text: str) -> None:
        self.log.appendPlainText(text)

    # -- running ---------------------------------------------------------------------------------
    @Slot()
    def start_run(self) -> bool:
        if self.running:
            return False
        if self.panel.model_path is None or self.panel.data_path is None:
            self.show_error("Load a model and a dataset first (Model: Open…, Dataset: Open…).")
            return False
        if self.panel.mismatch_text():
            self.show_error(self.panel.mismatch_text())
            return False
        try:
            config = self.panel.config()
        except InputError as exc:
            self.show_error(str(exc))
            return False
        from miha_engine.runner import default_run_dir

        run_dir = default_run_dir(self.panel.run_dir.text() or "runs")
        job = Job("run", {"model": str(self.panel.model_path), "data": str(self.panel.data_path), "config": config,
                          "run_dir": str(run_dir), "unsafe_model": self.panel.unsafe.isChecked()})

        self._clear_run()
        self._set_run_dir(run_dir, create_later=True)
        self.log_line(f"run started in {run_dir}: {config.total_epochs} epochs")
        self._start(job)
        self.statusBar().showMessage("Training. n, k, pop_size and the search space stay editable: a change applies "
                                     "from the next cycle.")
        return True

    @Slot()
    def resume_run(self) -> bool:
        if self.running or self.run_dir is None:
            return False
        run_dir = self.run_dir
        # where the remaining members train follows the panel now (it changes no gene, no epoch)
        try:
            cfg = self.panel.config()
        except InputError:  # a half-edited panel: the run's own settings stay
            cfg = None
        execution = None
        if cfg is not None:
            # how members train, and the live settings (applied from the next cycle where they differ)
            execution = {k: getattr(cfg, k) for k in RunConfig.resumable_fields() + RunConfig.live_fields()}
            execution["search"] = cfg.search.to_dict()
        job = Job("resume", {"run_dir": str(run_dir), "execution": execution})

        self.state = replay(run_dir)
        self.log_line(f"resuming {run_dir}")
        self._start(job)
        return True

    def _start(self, job) -> None:
        self.last_error = ""
        self.last_result = None
        self._sent_edits = {}
        self.edit_banner.hide()
        self.thread, self.worker = start_worker(self, job)
        self.worker.event.connect(self.on_event)
        self.worker.done.connect(self.on_done)
        self.worker.failed.connect(self.on_failed)
        self.thread.finished.connect(self.on_thread_finished)
        self.thread.start()
        self.progress.setFormat("starting TensorFlow…")
        self._update_buttons()

    @Slot()
    def stop_run(self) -> None:
        if self.worker is not None and self.running:
            self.worker.cancel.cancel()
            self.progress.setFormat("stopping at the next batch…")
            self.log_line("stop requested")

    @Slot(object)
    def on_event(self, event: ev.Event) -> None:
        self.state.apply(event)
        self._dirty = True
        if isinstance(event, ev.RunStarted):
            self._set_run_dir(Path(event.run_dir))
        elif isinstance(event, ev.MemberStarted):
            self.log_line(f"cycle {event.cycle}, member {event.member}: {event.change}")
        elif isinstance(event, ev.MemberTrained):
            self.log_line(f"  member {event.member}: fitness {event.fitness:.4g}; losses " + ", ".join(f"{v:.4g}" for v in (event.val_losses or event.losses)))
        elif isinstance(event, ev.CycleDone):
            self.log_line(f"cycle {event.cycle}: {event.decision}")
        elif isinstance(event, ev.ConfigChanged):
            what = ", ".join(f"{k} = {v}" if k != "search" else "search space" for k, v in event.changes.items())
            self.log_line(f"from cycle {event.cycle}: {what}")
            self.edit_banner.setText(f"Applied from cycle {event.cycle}: {what}")
            self.edit_banner.show()
            self._sent_edits = {}
        elif isinstance(event, ev.Note):
            self.log_line(f"note: {event.message}")
        elif isinstance(event, ev.RunFinished):
            self.log_line(f"run {event.status} in {event.wall_seconds:.1f} s")
            if event.test_metrics:
                self.log_line("test: " + json.dumps(event.test_metrics))

    @Slot(object)
    def on_done(self, result) -> None:
        self.last_result = result
        if result.status == "finished":
            msg = f"Finished in {format_duration(result.wall_seconds)}. Final model: {result.final_model}"
            test = (result.test_metrics or {}).get("final")
            if test:
                msg += "  Test: " + ", ".join(f"{k} {v:.4g}" for k, v in test.items())
            self.statusBar().showMessage(msg)
        else:
            self.statusBar().showMessage("Stopped. The run folder is consistent; press Resume to continue it.")

    @Slot(str, bool)
    def on_failed(self, message: str, user_error: bool) -> None:
        self.state.status = "failed"
        self.show_error(message if user_error else f"The run stopped: {message}")

    @Slot()
    def on_thread_finished(self) -> None:
        thread = self.thread
        self.thread, self.worker = None, None
        if thread is not None:
            thread.deleteLater()
        self._refresh()
        if self.state.epochs_done and self.state.seconds_done and self.panel.dataset is not None:
            # the whole run's time (archives, evaluations included) when it finished, else its epochs'
            spent = self.state.wall_seconds if self.state.status == "finished" and self.state.wall_seconds \
                else self.state.seconds_done
            self.panel.learn_speed(spent / self.state.epochs_done)
        if self.run_dir is not None and self.run_dir.is_dir() and self.state.main_steps:
            try:
                self.loss_plot.export(self.run_dir / "learning_history.png")
            except Exception as exc:  # noqa: BLE001 - a plot export must not break the app
                self.log_line(f"could not save learning_history.png: {exc}")
        self.progress.setFormat(self.state.status)
        self._refresh_views(force=True)
        self._update_buttons()

    # -- drawing ---------------------------------------------------------------------------------
    def _clear_run(self) -> None:
        self.state = RunState()
        for p in (self.loss_plot, self.fitness_plot, self.genes_plot):
            p.clear_run()
        self._dirty = True

    def _set_run_dir(self, path: Path, create_later: bool = False) -> None:
        self.run_dir = Path(path)
        self.browser_label.setText(str(self.run_dir))
        if self.run_dir.is_dir():
            self.browser.set_root(self.run_dir)
            self.browser.state = self.state

    @Slot()
    def _refresh_if_dirty(self) -> None:
        if self._dirty and not self._refreshing:  # one chain of parts at a time
            self._dirty = False
            self._refreshing = True
            self._refresh_part(0)

    # The live refresh, in parts a few ms apart, so that each repaint between them stays short: the
    # three plots repainted in one go held the GUI thread for 30-40 ms on 2 busy cores.
    _STAGGER_MS = 25

    def _refresh_part(self, part: int = 0) -> None:
        try:
            self._draw(part)
        except Exception:
            self._refreshing = False  # a failed part must not stop every later refresh
            raise
        if part < 2:
            QTimer.singleShot(self._STAGGER_MS, self, lambda: self._refresh_part(part + 1))  # dropped if closed
        else:
            self._refreshing = False

    def _draw(self, part: int) -> None:
        """One part of the picture: 0 the loss plot and progress, 1 the fitness plot and table,
        2 the genes plot and the shown tab."""
        st = self.state
        if part == 0:
            self.browser.state = st
            self.loss_plot.refresh(st)
            self._refresh_progress()
        elif part == 1:
            self.fitness_plot.refresh(st)
            self.table.refresh(st)
        else:
            self.genes_plot.refresh(st)
            self._refresh_views()

    def _refresh(self) -> None:
        """Everything at once (after a run, on opening a folder, and in tests)."""
        self._dirty = False
        for part in range(3):
            self._draw(part)

    def _refresh_progress(self) -> None:
        st = self.state
        self.progress.setValue(int(st.progress * 100))
        if self.running:
            where = (f"cycle {st.current_cycle}/{st.config.get('cycles', '?')}"
                     + (f", member {st.current_member}" if st.current_phase == "member" else f", {st.current_phase}"))
            eta = st.eta_seconds()
            self.progress.setFormat(f"{where} — epoch {st.epochs_done}/{st.total_epochs}"
                                    + (f" — ETA {format_duration(eta)}" if eta is not None else ""))

    def _refresh_views(self, force: bool = False) -> None:
        """The genealogy and insight tabs, only while shown (they cost more than a curve's update)."""
        current = self.views.currentWidget()
        if current is self.genealogy:
            self.genealogy.refresh(self.state, self.run_dir, self._forked_from())
        elif current is self.insight and (force or not self.running) and self.run_dir is not None \
                and (self.run_dir / "events.jsonl").exists():
            if force or self.insight.runs != [self.run_dir]:
                self.insight.refresh([self.run_dir])

    def _forked_from(self) -> dict | None:
        if self.run_dir is None or not (self.run_dir / "run.json").exists():
            return None
        if getattr(self, "_fork_cache", (None, None))[0] != self.run_dir:
            try:
                info = json.loads((self.run_dir / "run.json").read_text())
            except (OSError, ValueError):
                info = {}
            self._fork_cache = (self.run_dir, info.get("forked_from"))
        return self._fork_cache[1]

    @Slot(str)
    def _select_archive(self, relative: str) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / relative
        if self.browser.select(path):
            self.statusBar().showMessage(describe_archive(path.name, self.state))
        else:
            self.statusBar().showMessage(f"{relative} is not in the run folder (dropped, or not saved yet)")

    def _browse_export_genealogy(self) -> None:
        start = str((self.run_dir or Path.cwd()) / "genealogy.png")
        out, _ = QFileDialog.getSaveFileName(self, "Export the genealogy", start, "PNG image (*.png);;SVG drawing (*.svg)")
        if out:
            try:
                self.genealogy.export(out)
                self.statusBar().showMessage(f"Genealogy saved to {out}")
            except OSError as exc:
                self.show_error(f"Could not save the genealogy: {exc}")

    # -- live edits, forks, comparison ------------------------------------------------------------
    @Slot()
    def _panel_changed_while_running(self) -> None:
        """A live setting (n, k, pop_size, the search space) changed during a run: send it to the
        engine, which applies it from the next cycle; the banner says so."""
        if not self.running or self.worker is None:
            return
        running = RunConfig.from_stored(self.state.config) if self.state.config else None
        if running is None:
            return
        try:
            wanted = self.panel.config()
        except InputError as exc:
            self.edit_banner.setText(f"This edit cannot apply: {exc}")
            self.edit_banner.show()
            return
        changes = [k for k in RunConfig.live_fields() if getattr(wanted, k) != getattr(running, k)]
        # every live setting goes, not only the changed ones: the last message wins, so an edit
        # taken back before the next cycle is taken back in the engine too
        message = {k: getattr(wanted, k) for k in RunConfig.live_fields()}
        message["search"] = wanted.search.to_dict()
        if message == self._sent_edits:
            return
        self._sent_edits = dict(message)
        self.worker.engine.send_edits(message)
        cycle = min(self.state.current_cycle + 1, int(self.state.config.get("cycles", 0)))
        if changes:
            what = ", ".join(f"{k} {getattr(running, k)} → {getattr(wanted, k)}" if k != "search" else "search space"
                             for k in changes)
            self.edit_banner.setText(f"Applies from cycle {cycle}: {what}")
        else:
            self.edit_banner.setText("Edits withdrawn: the settings stay as the run has them")
        self.edit_banner.show()

    @Slot(str)
    def fork_from(self, archive: str) -> bool:
        """Start a what-if run from an archive of the open run, with the panel's settings (the run's
        own, unless you changed them) and dataset."""
        if self.running or self.run_dir is None:
            return False
        try:
            cfg = self.panel.config()
            parent = RunConfig.from_stored(json.loads((self.run_dir / "run.json").read_text())["config"])
        except (InputError, OSError, ValueError, KeyError) as exc:
            self.show_error(f"Cannot fork: {exc}")
            return False
        changes = {k: getattr(cfg, k) for k in RunConfig.options() if getattr(cfg, k) != getattr(parent, k)}
        if "search" in changes:
            changes["search"] = cfg.search.to_dict()
        from miha_engine.runner import default_run_dir

        new_dir = default_run_dir(self.panel.run_dir.text() or "runs")
        kwargs = {"run_dir": str(self.run_dir), "archive": str(archive), "new_run_dir": str(new_dir),
                  "changes": changes or None}
        if self.panel.data_path is not None:
            kwargs["data"] = str(self.panel.data_path)
        self._clear_run()
        self._set_run_dir(new_dir, create_later=True)
        self.log_line(f"forking {Path(archive).name} of {kwargs['run_dir']} into {new_dir}"
                      + (f" with {', '.join(changes)} changed" if changes else ""))
        self._start(Job("fork", kwargs))
        return True

    @Slot()
    def compare_runs(self, folders: list[str | Path] | None = None) -> CompareDialog:
        runs = [Path(f) for f in folders] if folders is not None else ([self.run_dir] if self.run_dir else [])
        dialog = CompareDialog(self, runs)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.show()
        return dialog

    # -- run folders and export ------------------------------------------------------------------
    def _browse_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a MIHA run folder", str(self.run_dir or Path.cwd()))
        if path:
            self.open_run(path)

    def open_run(self, path: str | Path) -> bool:
        """Rebuild plots and table from a run folder's files alone."""
        if self.running:
            self.show_error("Stop the current run before opening another run folder.")
            return False
        path = Path(path)
        from miha_engine.runlog import RunFolder

        try:
            info = RunFolder(path).open_existing()
        except InputError as exc:
            self.show_error(str(exc))
            return False
        self._clear_run()
        self.state = replay(path)
        if info.get("status") in ("cancelled", "failed"):
            self.state.status = info["status"]
        try:
            self.panel.apply_config(RunConfig.from_stored(info.get("config", {})))
        except InputError:
            pass
        self._set_run_dir(path)
        self._refresh()
        self.progress.setFormat(self.state.status)
        self.log_line(f"opened {path}: {self.state.status}, {self.state.epochs_done}/{self.state.total_epochs} epochs")
        self.statusBar().showMessage(f"Opened {path} ({self.state.status})")
        self._update_buttons()
        return True

    def export_best(self, which: str = "best") -> None:
        if self.run_dir is None:
            return
        from miha_engine.runlog import RunFolder

        try:
            src = RunFolder(self.run_dir).best_archive(which)
        except InputError as exc:
            self.show_error(str(exc))
            return
        self.export_archive(str(src))

    @Slot(str)
    def export_archive(self, src: str, out: str | None = None, fmt: str | None = None) -> bool:
        """Export an archive in a deployment format, in a child process (converters take seconds and
        load TensorFlow); ``exported`` or an error message tells the outcome."""
        if out is None:
            start = str(Path(self.settings.value("export_dir", str(Path.cwd()))) / Path(src).stem)
            out, chosen = QFileDialog.getSaveFileName(self, "Export model", start, ";;".join(EXPORT_FILTERS))
            if not out:
                return False
            fmt = EXPORT_FILTERS[chosen]
            suffix = EXPORT_FORMATS[fmt]
            if suffix and not out.lower().endswith(suffix):
                out += suffix
        if self._export is not None:
            self.show_error("An export is still running; wait for it to finish.")
            return False
        args = ["-m", "miha_engine", "export", str(src), str(out), "--json"] + (["--format", fmt] if fmt else [])
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("TF_CPP_MIN_LOG_LEVEL", "3")
        proc.setProcessEnvironment(env)
        proc.finished.connect(lambda *_: self._export_done(proc, src, out))
        self._export = proc
        self.statusBar().showMessage(f"Exporting {Path(src).name} to {out}…")
        self.log_line(f"exporting {src} → {out}")
        proc.start(sys.executable, args)
        return True

    def _export_done(self, proc: QProcess, src: str, out: str) -> None:
        self._export = None
        stdout = bytes(proc.readAllStandardOutput()).decode(errors="replace")
        stderr = bytes(proc.readAllStandardError()).decode(errors="replace")
        proc.deleteLater()
        report = None
        for line in stdout.splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                continue
        if proc.exitCode() != 0 or report is None:
            self.show_error("Export failed: " + engine_message(stderr, f"the exporter ended with code {proc.exitCode()}"))
            return
        self.settings.setValue("export_dir", str(Path(out).parent))
        text = (f"Exported {Path(src).name} as {report['format']} to {report['path']}; checked on "
                f"{report['samples']} {report['sample_origin']}: largest output difference {report['max_abs_diff']:.2g}")
        self.statusBar().showMessage(text)
        self.log_line(text)
        self.exported.emit(report["path"], text)

    # -- schedule and replay ---------------------------------------------------------------------
    @Slot()
    def write_schedule(self, out: str | None = None) -> Path | None:
        """Write the open run's lineage as a schedule (TOML; no TensorFlow needed)."""
        if self.run_dir is None:
            self.show_error("Open or run a run folder first: its lineage becomes the schedule.")
            return None
        if out is None:
            out, _ = QFileDialog.getSaveFileName(self, "Write the lineage's schedule",
                                                 str(self.run_dir / "schedule.toml"), "Schedule (*.toml)")
            if not out:
                return None
        from miha_engine.schedule import write_schedule

        try:
            path = write_schedule(self.run_dir, out)
        except (InputError, OSError) as exc:
            self.show_error(f"Could not write the schedule: {exc}")
            return None
        self.log_line(f"schedule written to {path}")
        self.statusBar().showMessage(f"Schedule written to {path}; 'Replay the schedule…' trains a fresh model with it")
        return path

    @Slot()
    def replay_schedule(self, schedule: str | None = None) -> bool:
        """Train a fresh model through a schedule on the panel's dataset (no population): the
        initial model is the open run's model_source.keras, else the panel's model."""
        if self.running:
            return False
        if schedule is None:
            start = str(self.run_dir / "schedule.toml") if self.run_dir else str(Path.cwd())
            schedule, _ = QFileDialog.getOpenFileName(self, "Replay a schedule", start, "Schedule (*.toml)")
            if not schedule:
                return False
        source = self.run_dir / "model" / "model_source.keras" if self.run_dir else None
        model = source if source is not None and source.exists() else self.panel.model_path
        if model is None or self.panel.data_path is None:
            self.show_error("A replay needs the initial model (a run folder's model_source.keras, or Model: Open…) "
                            "and a dataset (Dataset: Open…).")
            return False
        from miha_engine.runner import default_run_dir

        run_dir = default_run_dir(self.panel.run_dir.text() or "runs")
        job = Job("replay", {"schedule": str(schedule), "model": str(model), "data": str(self.panel.data_path),
                             "run_dir": str(run_dir), "unsafe_model": self.panel.unsafe.isChecked()})
        self._clear_run()
        self._set_run_dir(run_dir, create_later=True)
        self.log_line(f"replaying {schedule} on {self.panel.data_path.name} from {Path(model).name} in {run_dir}")
        self._start(job)
        return True

    # -- TensorFlow's own messages ---------------------------------------------------------------
    @Slot(bool)
    def _show_framework_log(self, on: bool) -> None:
        if not on:
            return
        text = ""
        if self.run_dir is not None and (self.run_dir / "run.json").exists():
            try:
                text = json.loads((self.run_dir / "run.json").read_text()).get("framework_log", "")
            except (OSError, ValueError):
                text = ""
        self.log_line("— TensorFlow's start-up messages for this run —")
        self.log_line(text.strip() or "(none recorded)")
        self.log_line("—")

    def _browse_export_plots(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the plots", str(self.run_dir or Path.cwd()))
        if folder:
            self.export_plots(folder)

    def export_plots(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        out = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, plot in (("loss", self.loss_plot), ("fitness", self.fitness_plot), ("genes", self.genes_plot)):
                for suffix in (".png", ".svg", ".csv"):
                    out.append(plot.export(folder / f"{name}{suffix}"))
        except OSError as exc:
            self.show_error(f"Could not save the plots in {folder}: {exc.strerror or exc}")
            return out
        self.statusBar().showMessage(f"Saved {len(out)} plot files in {folder}")
        return out

    @Slot(str)
    def show_model_summary(self, path: str) -> None:
        """Summarise an archive of the run folder (inspected in another process)."""
        self.statusBar().showMessage(f"Reading {Path(path).name}…")
        self.archive_inspector.inspect(path)

    @Slot(str, object, str)
    def _archive_inspected(self, path: str, info, error: str) -> None:
        if info is None:
            self.show_error(error)
            return
        self.statusBar().clearMessage()
        box = QMessageBox(QMessageBox.Information, "Model summary", describe_archive(Path(path).name, self.state), QMessageBox.Ok, self)
        box.setDetailedText(info.text())
        box.setInformativeText(f"{info.params:,} parameters; loss {info.loss}; optimizer {info.optimizer}")
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()
        self._dialogs.append(box)

    def about(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("About MIHA")
        box.setIconPixmap(QIcon(str(resources.logo_path())).pixmap(96, 96))
        from miha_engine import __version__

        box.setText(f"<b>MIHA {__version__}</b><br>Model-Integrated Hyperparameter Adaptation: one network, "
                    "tuned while it trains.<br>Keras 3 · TensorFlow · PySide6 · pyqtgraph")
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()

    # -- settings and closing --------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            from PySide6.QtGui import QGuiApplication

            screen = QGuiApplication.primaryScreen()
            avail = screen.availableGeometry() if screen is not None else None
            if avail is not None and avail.width() > 0:
                self.resize(min(1600, int(avail.width() * 0.95)), min(1000, int(avail.height() * 0.95)))
            else:
                self.resize(1600, 1000)
        cfg = self.settings.value("config")
        if cfg:
            try:
                self.panel.apply_config(RunConfig.from_dict(json.loads(cfg)))
            except (InputError, ValueError, TypeError):
                pass
        self.panel.last_dir = self.settings.value("open_dir") or None
        run_base = self.settings.value("run_base")
        if run_base:
            self.panel.run_dir.setText(str(run_base))

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        try:
            self.settings.setValue("config", json.dumps(self.panel.config().to_dict()))
        except InputError:
            pass
        self.settings.setValue("run_base", self.panel.run_dir.text())
        opened = self.panel.model_path or self.panel.data_path
        if opened is not None:
            self.settings.setValue("open_dir", str(opened.parent))
        self.settings.sync()

    def resizeEvent(self, event) -> None:
        """Give the plots what is left after the set-up panel and the browser, at any window size."""
        super().resizeEvent(event)
        width = self.split.width()
        left = min(500, max(self.split.widget(0).minimumWidth(), int(width * 0.34)))
        right = min(320, max(180, int(width * 0.2)))
        self.split.setSizes([left, max(300, width - left - right), right])

    def closeEvent(self, event) -> None:
        if self.running:
            if not ask(self, "Stop the run?", "A run is training. Stop it and close MIHA? "
                       "Everything saved so far stays in the run folder, and Resume can continue it later."):
                event.ignore()
                return
            self.stop_run()
            worker, thread = self.worker, self.thread
            if not thread.wait(60_000) and worker is not None:
                # Stop is checked after each batch; a child stuck elsewhere is ended (resumable).
                worker.engine.terminate()
                thread.wait(30_000)
            QCoreApplication.sendPostedEvents()  # the last events (and thread.finished), before the final picture
            if self.thread is not None:
                self.on_thread_finished()
        if self.save_on_close:
            self.save_settings()
        self.panel.inspector.cancel()
        self.archive_inspector.cancel()
        self.timer.stop()
        event.accept()
