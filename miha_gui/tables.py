"""The population table and the run-folder browser."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QDir, QEvent, QModelIndex, QSize, Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QFileSystemModel,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolTip,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from miha_engine.runlog import describe_file, parse_archive_name
from miha_engine.state import RunState

COLUMNS = ("member", "change", "losses", "fitness", "chosen")


class ElidedLabel(QLabel):
    """One line of text, cut with "…" to the width it is given; the whole text is its tooltip.
    Its minimum width does not depend on the text, so a long text never widens the window."""

    def __init__(self, text: str = ""):
        super().__init__()
        self._full = ""
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self.setToolTip(text)
        self._elide()

    def text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(20, super().minimumSizeHint().height())

    def _elide(self) -> None:
        super().setText(self.fontMetrics().elidedText(self._full, Qt.ElideRight, max(20, self.width())))


class PopulationTable(QWidget):
    """One cycle's members: what changed, their losses, their fitness, which one was chosen."""

    def __init__(self):
        super().__init__()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Population of cycle"))
        self.cycle = QSpinBox()
        self.cycle.setRange(0, 0)
        self.cycle.setEnabled(False)
        self.follow = True
        self.cycle.valueChanged.connect(self._on_cycle_picked)
        top.addWidget(self.cycle)
        # the decision beside the cycle, on one line, elided, whole in its tooltip (and in the Log):
        # a plain label's minimum width is its text's, and a long decision pushed the whole window
        # wider mid-run (every plot repainted); wrapped, it took the table's rows
        self.decision = ElidedLabel()
        self.decision.setStyleSheet("color:#2b8a3e")
        top.addWidget(self.decision, 1)
        lay.addLayout(top)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        for i, tip in ((2, "Validation loss (training loss without a validation split), first → last epoch"),
                       (3, "Higher is better. Scored on what the run's fitness metric names: for a classifier, by "
                           "default its calibrated validation loss (the loss after temperature scaling), not the "
                           "raw loss shown beside; the decision above says which rule chose")):
            self.table.horizontalHeaderItem(i).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setWordWrap(False)  # one line per member (a long change is elided; its tooltip has it)
        h = self.table.horizontalHeader()
        h.setSectionResizeMode(1, QHeaderView.Stretch)
        for i in (0, 2, 3, 4):
            h.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        lay.addWidget(self.table)
        self._state: RunState | None = None

    def _on_cycle_picked(self, value: int) -> None:
        if self._state is not None:
            cycles = self._state.cycles()
            self.follow = bool(cycles) and value == cycles[-1]
            self._fill(self._state, value)

    def refresh(self, st: RunState) -> None:
        self._state = st
        cycles = st.cycles()
        if not cycles:
            self.cycle.setEnabled(False)
            self.table.setRowCount(0)
            self.decision.setText("")
            return
        self.cycle.setEnabled(True)
        self.cycle.blockSignals(True)
        self.cycle.setRange(cycles[0], cycles[-1])
        if self.follow:
            self.cycle.setValue(cycles[-1])
        self.cycle.blockSignals(False)
        self._fill(st, self.cycle.value())

    def _fill(self, st: RunState, cycle: int) -> None:
        members = st.members(cycle)
        signature = (cycle, st.winners.get(cycle), st.decisions.get(cycle),
                     tuple((b.member, len(b.losses), b.fitness, b.trained) for b in members))
        if signature == getattr(self, "_sig", None):
            return  # the shown cycle did not change: no rebuild of its rows
        self._sig = signature
        self.table.setRowCount(len(members))
        winner = st.winners.get(cycle)
        for row, b in enumerate(members):
            curve = b.val_losses if any(v == v for v in b.val_losses) else b.losses
            values = [
                str(b.member),
                b.change,
                " → ".join(f"{v:.4g}" for v in curve),
                "diverged" if b.trained and b.fitness is None else ("" if b.fitness is None else f"{b.fitness:.4g}"),
                "★ chosen" if winner == b.member else "",
            ]
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if winner == b.member:
                    item.setBackground(QBrush(QColor("#e6fcf5")))
                self.table.setItem(row, col, item)
        self.decision.setText(st.decisions.get(cycle, "training…" if members else ""))


def describe_archive(name: str, st: RunState | None) -> str:
    """A sentence saying what a file of the run folder is: what the run journalled about it, else
    what its name says (the run folder's own reader of names)."""
    if st is not None and name in st.archives:
        return f"{name}: {st.archives[name]}"
    archive = parse_archive_name(name)
    if archive is not None and archive.kind == "member" and st is not None:
        b = st.branches.get((archive.cycle, archive.member))
        if b is not None and b.change:
            return f"{name}: {archive.text()}, {b.change}"
    text = describe_file(name)
    return f"{name}: {text}" if text else name


class RunBrowser(QTreeView):
    """The run folder's files, updating as archives appear.  Double-click shows a model."""

    modelActivated = Signal(str)
    exportRequested = Signal(str)
    scheduleRequested = Signal()
    replayRequested = Signal()
    forkRequested = Signal(str)

    def __init__(self):
        super().__init__()
        self.state: RunState | None = None
        self.fs = QFileSystemModel(self)  # plain: a Python data() override ran for every cell at every repaint
        self.fs.setFilter(QDir.AllDirs | QDir.Files | QDir.NoDotAndDotDot)  # hidden temporaries stay hidden
        self.fs.setNameFilters(["*.keras", "*.h5", "*.json", "*.jsonl", "*.csv", "*.png", "model", "population"])
        self.fs.setNameFilterDisables(False)
        self.setModel(self.fs)
        self.setHeaderHidden(False)
        for col in (2, 3):
            self.hideColumn(col)
        self.header().setSectionResizeMode(0, QHeaderView.Stretch)
        self.header().setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.header().setStretchLastSection(False)
        self.setMinimumWidth(260)  # the file names, not only their sizes
        self.setContextMenuPolicy(Qt.CustomContextMenu)
        self.customContextMenuRequested.connect(self._menu)
        self.doubleClicked.connect(self._activated)
        self.fs.directoryLoaded.connect(self._on_loaded)
        self.root: Path | None = None
        self.hide()  # until there is a run folder to show

    def tooltip_at(self, pos) -> str:
        """What the run journalled about the file under `pos` (viewport coordinates), or ''."""
        index = self.indexAt(pos)
        return describe_archive(self.fs.fileName(index), self.state) if index.isValid() else ""

    def viewportEvent(self, event) -> bool:
        if event.type() == QEvent.ToolTip:
            text = self.tooltip_at(event.pos())
            if text:
                QToolTip.showText(event.globalPos(), text, self.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)

    @Slot(str)
    def _on_loaded(self, _path: str) -> None:
        self.expandAll()

    def set_root(self, path: str | Path) -> None:
        self.root = Path(path)
        self.show()
        idx = self.fs.setRootPath(str(self.root))
        self.setRootIndex(idx)
        self.expandAll()

    def select(self, path: str | Path) -> bool:
        """Select and show a file of the run folder (the genealogy's clicks land here)."""
        index = self.fs.index(str(path))
        if not index.isValid():
            return False
        self.setCurrentIndex(index)
        self.scrollTo(index)
        return True

    def listed_files(self) -> list[str]:
        """Names of the files the view lists now (for tests and the status bar)."""
        out = []

        def walk(parent: QModelIndex) -> None:
            for r in range(self.fs.rowCount(parent)):
                idx = self.fs.index(r, 0, parent)
                if self.fs.isDir(idx):
                    walk(idx)
                else:
                    out.append(self.fs.fileName(idx))

        if self.root is not None:
            walk(self.rootIndex())
        return sorted(out)

    def _activated(self, index: QModelIndex) -> None:
        path = self.fs.filePath(index)
        if path.endswith((".keras", ".h5")):
            self.modelActivated.emit(path)

    def _menu(self, pos) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices
        from PySide6.QtWidgets import QMenu

        index = self.indexAt(pos)
        menu = QMenu(self)
        if index.isValid():
            path = self.fs.filePath(index)
            if path.endswith((".keras", ".h5")):
                menu.addAction("Show summary", lambda: self.modelActivated.emit(path))
                menu.addAction("Export…", lambda: self.exportRequested.emit(path))
                if parse_archive_name(Path(path).name) is not None:
                    menu.addAction("Fork from here…", lambda: self.forkRequested.emit(path))
            menu.addAction("Show in folder", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))))
            menu.addSeparator()
        menu.addAction("Write the lineage's schedule…", self.scheduleRequested.emit)
        menu.addAction("Replay the schedule on new data…", self.replayRequested.emit)
        menu.exec(self.viewport().mapToGlobal(pos))
