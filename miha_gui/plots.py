"""pyqtgraph views of a :class:`~miha_engine.state.RunState`.

Each curve is created once and updated with ``setData``; the window calls ``refresh`` on a timer,
so a burst of events costs one repaint.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from miha_engine.state import RunState

pg.setConfigOptions(antialias=True, background="w", foreground="#222")

MAIN_PEN = pg.mkPen("#1f3b73", width=2.5)
VAL_PEN = pg.mkPen("#d9480f", width=2, style=Qt.DashLine)
BORDER_PEN = pg.mkPen("#9aa5b1", width=1, style=Qt.DotLine)


def member_color(member: int, alpha: int = 200) -> QColor:
    c = pg.intColor(member, hues=9, values=1, maxValue=210)
    c.setAlpha(alpha)
    return c


def export_svg(widget, path: Path) -> Path:
    """Vector SVG of a plot widget through Qt's QSvgGenerator.

    pyqtgraph 0.14's SVGExporter fails on Qt 6.10+ path data ending in "Z" (pyqtgraph #3495), so
    the app renders the widget into an SVG painter instead.
    """
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(widget.size())
    gen.setViewBox(widget.rect())
    gen.setTitle("MIHA plot")
    painter = QPainter(gen)
    try:
        widget.render(painter)
    finally:
        painter.end()
    return path


def _patch_pyqtgraph_svg_exporter() -> None:
    """Make the plots' right-click Export… → SVG work on Qt ≥ 6.10 too (pyqtgraph #3495): when
    pyqtgraph's own SVG writer fails, render the plot through QSvgGenerator instead."""
    from pyqtgraph.exporters.SVGExporter import SVGExporter

    if getattr(SVGExporter, "_miha_patched", False):
        return
    original = SVGExporter.export

    def export(self, fileName=None, toBytes=False, copy=False):
        try:
            return original(self, fileName=fileName, toBytes=toBytes, copy=copy)
        except ValueError:
            if not fileName:
                raise
            item = self.item
            scene = item.scene() if hasattr(item, "scene") and callable(item.scene) else item
            views = scene.views() if scene is not None else []
            if not views:
                raise
            return export_svg(views[0], Path(fileName))

    SVGExporter.export = export
    SVGExporter._miha_patched = True


_patch_pyqtgraph_svg_exporter()


def _nanfree(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


class _Base(pg.PlotWidget):
    def __init__(self, title: str, xlabel: str, ylabel: str):
        super().__init__()
        self.setTitle(title, size="11pt")
        self.setLabel("bottom", xlabel)
        self.setLabel("left", ylabel)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setMinimumHeight(180)
        self.addLegend(offset=(-10, 10), labelTextSize="9pt")

    def export(self, path: str | Path) -> Path:
        """PNG, SVG or CSV by suffix, through pyqtgraph's own exporters."""
        import pyqtgraph.exporters as ex

        path = Path(path)
        if path.suffix.lower() == ".svg":
            return export_svg(self, path)
        kind = {".png": ex.ImageExporter, ".csv": ex.CSVExporter}[path.suffix.lower()]
        exporter = kind(self.plotItem)
        if path.suffix.lower() == ".png":
            exporter.parameters()["width"] = max(800, int(self.width() * 2))
        exporter.export(str(path))
        return path


class LossPlot(_Base):
    """The main line's training and validation loss, the cycle borders, and each member's branch."""

    def __init__(self):
        super().__init__("Loss of the main line and of each population member", "epoch of the lineage", "loss")
        self.setLogMode(y=True)
        self.main = self.plot([], [], pen=MAIN_PEN, name="main line: training loss")
        self.val = self.plot([], [], pen=VAL_PEN, name="main line: validation loss")
        self.branches: dict[tuple[int, int], pg.PlotDataItem] = {}
        self.borders: list[pg.InfiniteLine] = []
        for item in (self.main, self.val):
            item.setClipToView(True)
            item.setDownsampling(auto=True, method="peak")
        self.hint = pg.TextItem("The loss of every epoch appears here\nonce a run starts.",
                                color="#868e96", anchor=(0.5, 0.5))
        self.hint.setPos(5.5, 0.0)
        self.addItem(self.hint)
        self._empty_range()

    def _empty_range(self) -> None:
        """Before a run: whole epochs 1-10 and losses 0.1-10 (pyqtgraph's default 0-1 range showed
        tenths of an epoch); the data's own range takes over with the first epoch."""
        self.setRange(xRange=(1, 10), yRange=(-1, 1), padding=0)

    def clear_run(self) -> None:
        self._main_sig = None
        for item in self.branches.values():
            self.removeItem(item)
        for line in self.borders:
            self.removeItem(line)
        self.branches.clear()
        self.borders.clear()
        self.main.setData([], [])
        self.val.setData([], [])
        self.hint.setVisible(True)
        self._empty_range()

    def _main_value_at(self, st: RunState, step: int, use_val: bool) -> float:
        if step <= 0 or step > len(st.main_steps):
            return math.nan
        idx = st.main_steps.index(step) if step in st.main_steps else step - 1
        arr = st.main_val_losses if use_val else st.main_losses
        return arr[idx] if idx < len(arr) else math.nan

    def refresh(self, st: RunState) -> None:
        # Only what changed is set again: every setData repaints the plot, and a repaint of all the
        # branches was the app's longest stall (benchmarks/gui.py)
        self.hint.setVisible(not st.main_steps and not st.branches)
        has_val = any(v == v for v in st.main_val_losses)
        main_sig = (len(st.main_steps), st.main_steps[-1] if st.main_steps else None, has_val)
        if main_sig != getattr(self, "_main_sig", None):
            before = getattr(self, "_main_sig", None)
            if main_sig[0] and (before is None or not before[0]):  # the first epoch: the data's range
                self.enableAutoRange()
            self._main_sig = main_sig
            self.main.setData(np.array(st.main_steps, float), _positive(st.main_losses))
            self.val.setData(np.array(st.main_steps, float) if has_val else [],
                             _positive(st.main_val_losses) if has_val else [])
        while len(self.borders) < len(st.cycle_borders):
            line = pg.InfiniteLine(angle=90, movable=False, pen=BORDER_PEN)
            self.addItem(line)
            self.borders.append(line)
        for line, step in zip(self.borders, st.cycle_borders):
            line.setValue(step + 0.5)
        for key, b in st.branches.items():
            item = self.branches.get(key)
            winner = st.winners.get(b.cycle) == b.member
            signature = (len(b.steps), winner, b.branch_step)
            if item is not None and getattr(item, "_miha_sig", None) == signature:
                continue
            if item is None:
                item = self.plot([], [], pen=pg.mkPen(member_color(b.member, 150), width=1.3), antialias=False)
                item.setToolTip(f"cycle {b.cycle}, member {b.member}: {b.change}")
                self.branches[key] = item
            use_val = has_val and any(v == v for v in b.val_losses)
            ys = b.val_losses if use_val else b.losses
            start = self._main_value_at(st, b.branch_step, use_val)
            xs = [b.branch_step, *b.steps] if start == start else list(b.steps)
            ys = [start, *ys] if start == start else list(ys)
            # thin losing branches draw without antialiasing: much cheaper to repaint
            item.setData(np.array(xs, float), _positive(ys), antialias=winner)
            item._miha_sig = signature
            item.setPen(pg.mkPen(member_color(b.member, 255 if winner else 140), width=3.2 if winner else 1.2))
            item.setZValue(5 if winner else 1)
        for key in [k for k in self.branches if k not in st.branches]:
            self.removeItem(self.branches.pop(key))

    def main_point_count(self) -> int:
        x, _ = self.main.getData()
        return 0 if x is None else len(x)


def _positive(values) -> np.ndarray:
    arr = _nanfree(values)
    arr[~np.isfinite(arr)] = np.nan
    arr[arr <= 0] = np.nan
    return arr


class FitnessPlot(_Base):
    """Every member's fitness per cycle; the winner is a star.  Hover a point for its mutation."""

    def __init__(self):
        super().__init__("Fitness (★ = chosen)", "cycle", "fitness (higher is better)")
        self.plotItem.legend.hide()
        self.scatter = pg.ScatterPlotItem(size=11, hoverable=True, hoverSize=15, tip=self._tip)
        self.addItem(self.scatter)
        self.best = self.plot([], [], pen=pg.mkPen("#2b8a3e", width=2))
        self.getAxis("bottom").setTickSpacing(1, 1)

    @staticmethod
    def _tip(x, y, data):
        return str(data)

    def clear_run(self) -> None:
        self._sig = None
        self.scatter.setData([])
        self.best.setData([], [])

    def refresh(self, st: RunState) -> None:
        points = sorted(st.fitness_points())
        signature = (tuple(points), st.config.get("cycles"))
        if signature == getattr(self, "_sig", None):
            return  # nothing new: no repaint
        self._sig = signature
        spots = []
        pop = max(1, int(st.config.get("population_size", 1) or 1))
        wx, wy = [], []
        for cycle, member, fit, winner in points:
            b = st.branches[(cycle, member)]
            jitter = (member - (pop - 1) / 2) * min(0.06, 0.5 / pop)
            spots.append({
                "pos": (cycle + jitter, fit),
                "brush": pg.mkBrush(member_color(member, 230)),
                "pen": pg.mkPen("#000" if winner else "#ffffff", width=1.5 if winner else 0.5),
                "symbol": "star" if winner else "o",
                "size": 18 if winner else 10,
                "data": f"cycle {cycle}, member {member}{' (chosen)' if winner else ''}\n{b.change}\nfitness {fit:.4g}",
            })
            if winner:
                wx.append(cycle + jitter)
                wy.append(fit)
        self.scatter.setData(spots)
        self.best.setData(wx, wy)
        cycles = int(st.config.get("cycles", 0) or 0)
        if cycles:
            self.setXRange(0.5, cycles + 0.5, padding=0)

    def point_count(self) -> int:
        return len(self.scatter.data)


class GenesPlot(pg.GraphicsLayoutWidget):
    """The genes along the lineage: learning rate and weight decay (log) above, batch size below,
    x-linked; each change of optimizer, activations, dropout rates or label smoothing is labelled where
    it happens."""

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(180)
        self.lr_plot = self.addPlot(row=0, col=0, title="Genes along the lineage")
        # no axis title above: the legend names the curves, and in the app's short plot two axis
        # titles overlapped
        self.lr_plot.getAxis("left").enableAutoSIPrefix(False)  # log values: no "(x0.001)" scale
        self.lr_plot.setLogMode(y=True)
        self.lr_plot.showGrid(x=True, y=True, alpha=0.25)
        self.lr_plot.hideAxis("bottom")
        self.bs_plot = self.addPlot(row=1, col=0)
        self.bs_plot.setLabel("left", "batch size")
        self.bs_plot.setLabel("bottom", "epoch of the lineage")
        self.bs_plot.showGrid(x=True, y=True, alpha=0.25)
        self.bs_plot.setXLink(self.lr_plot)
        self.ci.layout.setRowStretchFactor(0, 3)
        self.ci.layout.setRowStretchFactor(1, 2)
        for plot in (self.lr_plot, self.bs_plot):
            plot.getAxis("left").setWidth(64)
        self.lr = self.lr_plot.plot([], [], pen=pg.mkPen("#5f3dc4", width=2))
        self.wd = self.lr_plot.plot([], [], pen=pg.mkPen("#2b8a3e", width=2, style=Qt.DashLine))
        self.bs = self.bs_plot.plot([], [], pen=pg.mkPen("#e67700", width=2))
        # the legend on a row of its own, under the plots: inside, it hid the curves and their labels
        # (the batch size has its own plot and axis title)
        self.legend = pg.LegendItem(labelTextSize="8pt", colCount=2)
        self.addItem(self.legend, row=2, col=0)
        self.ci.layout.setRowStretchFactor(2, 0)
        for item, name in ((self.lr, "learning rate"), (self.wd, "weight decay")):
            self.legend.addItem(item, name)
        self.labels: list[pg.TextItem] = []
        self.plotItem = self.lr_plot  # for the CSV exporter
        self._empty_ranges()

    def _empty_ranges(self) -> None:
        """Before a run: typical ranges instead of pyqtgraph's 0–1 (on the log axis its ticks piled up
        into an unreadable stack); the curves' own ranges take over when data comes."""
        self.lr_plot.setRange(xRange=(1, 10), yRange=(-4, -2), padding=0)
        self.lr_plot.getAxis("left").setTicks([[(-4, "0.0001"), (-3, "0.001"), (-2, "0.01")], []])
        self.bs_plot.setYRange(16, 64, padding=0)

    def clear_run(self) -> None:
        self._drawn = -1
        self.lr.setData([], [])
        self.wd.setData([], [])
        self.bs.setData([], [])
        for t in self.labels:
            self.lr_plot.removeItem(t)
        self.labels.clear()
        self._empty_ranges()

    def export(self, path: str | Path) -> Path:
        import pyqtgraph.exporters as ex

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            ex.CSVExporter(self.lr_plot).export(str(path))
            with open(path, "a", encoding="utf-8") as fh:
                x, y = self.bs.getData()
                fh.write("\nstep,batch_size\n")
                for a, b in zip([] if x is None else x, [] if y is None else y):
                    fh.write(f"{a},{b}\n")
        elif suffix == ".svg":
            export_svg(self, path)
        else:
            e = ex.ImageExporter(self.scene())
            e.parameters()["width"] = max(800, int(self.width() * 2))
            e.export(str(path))
        return path

    def refresh(self, st: RunState) -> None:
        if len(st.main_steps) == getattr(self, "_drawn", -1):
            return  # nothing new on the lineage: skip rebuilding the labels
        self._drawn = len(st.main_steps)
        steps = np.array(st.main_steps, float)
        genes = st.main_genes
        metrics = list(getattr(st, "main_metrics", [])) + [{}] * len(genes)
        # an epoch's own rate where the journal has it (the final phase's anneal), else the genes'
        lr = np.array([m.get("learning_rate", g.get("learning_rate", np.nan)) for g, m in zip(genes, metrics)], float)
        bs = np.array([g.get("batch_size", np.nan) for g in genes], float)
        self.lr.setData(steps, lr, stepMode=None)
        wd = np.array([g.get("weight_decay") or np.nan for g in genes], float)  # 0 has no log: a gap
        self.wd.setData(steps, wd, connect="finite")
        self.bs.setData(steps, bs)
        if steps.size:  # the curves' own ranges and ticks (set by hand before a run)
            self.lr_plot.getAxis("left").setTicks(None)
            self.lr_plot.enableAutoRange()
        finite = bs[np.isfinite(bs)]
        if finite.size:  # room around the batch sizes (a constant one drew as 31.8 … 32.2)
            self.bs_plot.setYRange(finite.min() / 1.6, finite.max() * 1.6, padding=0)
        for t in self.labels:
            self.lr_plot.removeItem(t)
        self.labels.clear()
        prev = None
        for s, g in zip(st.main_steps, genes):
            acts = "/".join(str(a) for a in (g.get("activations") or {}).values())
            text = g.get("optimizer", "") + (f" · {acts}" if acts else "")
            rates = "/".join(f"{r:g}" for r in (g.get("dropouts") or {}).values())
            text += (f" · dropout {rates}" if rates else "") + (
                f" · smoothing {g['label_smoothing']:g}" if g.get("label_smoothing") else "")
            lr_value = g.get("learning_rate", math.nan)
            if text != prev and lr_value and math.isfinite(lr_value) and lr_value > 0:
                item = pg.TextItem(text, color="#333", anchor=(0, 1.1))
                item.setPos(s, math.log10(lr_value))
                self.lr_plot.addItem(item)
                self.labels.append(item)
                prev = text
