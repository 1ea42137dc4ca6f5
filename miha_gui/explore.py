"""Mutation insight and run comparison: what the run folders say beyond one run's plots."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from miha_engine.compare import RunSummary, compare
from miha_engine.errors import InputError
from miha_engine.insight import Insight, insight

COLORS = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599", "#c92a2a", "#5c940d"]


def _item(text: str, align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemIsEditable)
    if align_right:
        item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
    return item


class InsightPanel(QWidget):
    """For each mutation kind and value: tried, won, the mean fitness difference, with counts."""

    HEADERS = ("kind", "value", "tried", "won", "win %", "diverged", "Δ fitness", "n (Δ)")

    def __init__(self):
        super().__init__()
        self.runs: list[Path] = []
        self.extra: list[Path] = []
        self.result: Insight | None = None
        self.label = QLabel("Which changes helped: open or run a run folder.")
        self.label.setWordWrap(True)
        self.add_btn = QPushButton("Add run folders…")
        self.add_btn.setToolTip("Count the mutations of other runs of this model too")
        self.add_btn.clicked.connect(self._browse)
        self.table = QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(self.HEADERS)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        top = QHBoxLayout()
        top.addWidget(self.label, 1)
        top.addWidget(self.add_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a run folder to the insight")
        if path:
            self.add_run(path)

    def add_run(self, path: str | Path) -> str:
        """Count another run folder too; returns an error message or ""."""
        path = Path(path)
        if path not in self.extra:
            self.extra.append(path)
        return self.refresh(self.runs)

    def refresh(self, runs: list[Path]) -> str:
        self.runs = list(runs)
        folders = list(dict.fromkeys([*self.runs, *self.extra]))
        if not folders:
            return ""
        try:
            self.result = insight(folders)
        except (InputError, OSError) as exc:
            self.label.setText(f"Cannot read a run folder: {exc}")
            return str(exc)
        r = self.result
        self.label.setText(f"{r.members} mutated members over {len(r.runs)} run(s); fitness difference against "
                           f"{r.baseline or '—'} (higher is better). No number without its count.")
        rows = r.rows()
        self.table.setRowCount(len(rows))
        for i, (kind, value, t) in enumerate(rows):
            cells = (kind if value == "all" else "", value, str(t.tried), str(t.won),
                     f"{100 * t.win_rate:.0f}" if t.win_rate is not None else "—", str(t.diverged),
                     f"{t.mean_diff:+.3f}" if t.mean_diff is not None else "—", str(len(t.diffs)))
            for j, text in enumerate(cells):
                item = _item(text, j >= 2)
                if value == "all":
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if j == 6 and t.mean_diff is not None:
                    item.setForeground(QBrush(QColor("#2f9e44" if t.mean_diff > 0 else "#c92a2a")))
                self.table.setItem(i, j, item)
        return ""

    def cell(self, row: int, col: int) -> str:
        item = self.table.item(row, col)
        return item.text() if item is not None else ""


class CompareDialog(QDialog):
    """Overlay the main-line validation curves and the final test metrics of several run folders."""

    def __init__(self, parent=None, runs: list[Path] | None = None):
        super().__init__(parent)
        self.setWindowTitle("Compare runs")
        self.resize(1000, 640)
        self.folders: list[Path] = []
        self.summaries: list[RunSummary] = []
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.setLabel("bottom", "lineage step")
        self.plot.setLabel("left", "validation loss")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setLogMode(y=True)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().hide()
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color:#c92a2a")
        add = QPushButton("Add run folder…")
        add.clicked.connect(self._browse)
        clear = QPushButton("Clear")
        clear.clicked.connect(lambda: self.set_runs([]))
        bar = QHBoxLayout()
        bar.addWidget(add)
        bar.addWidget(clear)
        bar.addStretch(1)
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setSizes([400, 200])
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.note)
        self.set_runs(runs or [])

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add a run folder to compare")
        if path:
            self.add_run(path)

    def add_run(self, path: str | Path) -> str:
        return self.set_runs([*self.folders, Path(path)])

    def set_runs(self, folders: list[Path]) -> str:
        try:
            summaries = compare(folders)
        except (InputError, OSError) as exc:
            self.note.setText(f"Cannot compare: {exc}")
            return str(exc)
        self.folders, self.summaries = list(folders), summaries
        self.plot.clear()
        self.legend.clear()
        metrics = sorted({k for s in summaries for k in s.test})
        headers = ["run", "status", "epochs", "best val loss", *[f"test {m}" for m in metrics], "forked from", "note"]
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(summaries))
        for i, s in enumerate(summaries):
            color = COLORS[i % len(COLORS)]
            style = Qt.DashLine if s.flag else Qt.SolidLine
            self.plot.plot(s.steps, s.val_losses, pen=pg.mkPen(color, width=2, style=style),
                           name=s.name + (" ⚠" if s.flag else ""))
            cells = [s.name, s.status, str(s.epochs), f"{s.best_val:.4g}" if s.best_val is not None else "—",
                     *[f"{s.test[m]:.4g}" if m in s.test else "—" for m in metrics], s.forked_from or "",
                     f"⚠ {s.flag}" if s.flag else ""]
            for j, text in enumerate(cells):
                item = _item(text, 1 < j < len(cells) - 2)
                if j == 0:
                    item.setForeground(QBrush(QColor(color)))
                if s.flag:
                    item.setBackground(QBrush(QColor("#fff5f5")))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        flagged = [s.name for s in summaries if s.flag]
        self.note.setText(f"⚠ {', '.join(flagged)}: another task than {summaries[0].name}; shown dashed, its numbers "
                          "are not comparable" if flagged else "")
        return ""

    def curve_count(self) -> int:
        return len(self.plot.getPlotItem().listDataItems())
