"""The genealogy of a run: why the final model is what it is.

A tree drawn left to right: the run-up, then for each cycle its members as children of the main-line
state they started from, and the state after the cycle (fixing epochs included) as the child of the
chosen member.  The winner path is drawn thick.  Each node says the change it made, its fitness and
its last validation loss; hovering shows its loss curve beside the tree, clicking selects its archive
in the run-folder browser.  Large trees fold the losing members of each cycle into one node.

Everything comes from a :class:`~miha_engine.state.RunState`, so a live run and a replayed folder
draw the same tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from miha_engine.state import RunState

NODE_W, NODE_H, COL_W, ROW_H = 170, 48, 210, 60
#: Above this many members, the losers of each cycle are folded into one node (the box can undo it).
FOLD_ABOVE = 60

WIN = QColor("#e8590c")
MAIN = QColor("#1c7ed6")
LOSER = QColor("#868e96")
DIVERGED = QColor("#c92a2a")


@dataclass(frozen=True)
class NodeKey:
    """A node of the tree: ``kind`` "main" (``cycle`` 0: after the run-up; c: after cycle c;
    cycles + 1: final), "member", or "folded" (the losers of a cycle)."""

    kind: str
    cycle: int
    member: int = -1


def _fmt(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4g}"


class _Node(QGraphicsRectItem):
    def __init__(self, view: GenealogyView, key: NodeKey, rect: QRectF, title: str, detail: str, color: QColor,
                 thick: bool):
        super().__init__(rect)
        self.view, self.key = view, key
        self.setPen(QPen(color, 3.0 if thick else 1.2))
        self.setBrush(QBrush(QColor("#fff4e6") if thick else QColor("white")))
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip(f"{title}\n{detail}")
        bold = QFont()
        bold.setPointSize(8)
        bold.setBold(thick)
        small = QFont()
        small.setPointSize(8)
        for i, (text, font) in enumerate(((title, bold), (detail, small))):
            item = QGraphicsSimpleTextItem(_elide(text, 27), self)
            item.setFont(font)
            item.setPos(rect.x() + 6, rect.y() + 5 + 19 * i)

    def hoverEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.view.hover(self.key)
        super().hoverEnterEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.view.click(self.key)
        super().mousePressEvent(event)


def _elide(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class GenealogyView(QWidget):
    """The tree, a zoom/fold/export bar, and the hovered node's curve."""

    #: an archive of the run folder was clicked: its path relative to the run folder
    archiveClicked = Signal(str)
    #: the "forked from" link was clicked: the parent run's folder
    parentRequested = Signal(str)

    def __init__(self):
        super().__init__()
        self.state: RunState | None = None
        self.run_dir: Path | None = None
        self._signature: tuple = ()
        self.nodes: dict[NodeKey, _Node] = {}
        self.winner_keys: list[NodeKey] = []
        self.scene = QGraphicsScene(self)
        self.view = QGraphicsView(self.scene)
        self.view.setRenderHint(QPainter.Antialiasing)
        self.view.setDragMode(QGraphicsView.ScrollHandDrag)
        self.view.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.fold = QCheckBox("Fold losing members")
        self.fold.setToolTip(f"Show each cycle's losers as one node (on by default above {FOLD_ABOVE} members)")
        self.fold.toggled.connect(self._fold_toggled)
        self._fold_set_by_user = False
        self._user_zoomed = False
        self.parent_link = QLabel("")
        self.parent_link.setTextFormat(Qt.RichText)
        self.parent_link.linkActivated.connect(self.parentRequested.emit)
        bar = QHBoxLayout()
        for text, tip, slot in (("−", "Zoom out", lambda: self.zoom(1 / 1.25)), ("+", "Zoom in", lambda: self.zoom(1.25)),
                                ("Fit", "Fit the whole tree", self.fit)):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.setMaximumWidth(44)
            b.clicked.connect(slot)
            bar.addWidget(b)
        bar.addWidget(self.fold)
        bar.addWidget(self.parent_link, 1)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Save the tree as PNG or SVG")
        bar.addWidget(self.export_btn)
        self.curve = pg.PlotWidget()
        self.curve.setBackground("w")
        self.curve.setLabel("bottom", "lineage step")
        self.curve.setLabel("left", "validation loss")
        self.curve.getAxis("left").enableAutoSIPrefix(False)
        self.curve.addLegend(offset=(5, 5))
        self.curve.setMinimumWidth(220)
        self.summary = QLabel("Hover a node for its loss curve; click it to select its archive.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.curve, 1)
        sl.addWidget(self.summary)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([800, 220])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self.empty_hint = self.scene.addText("The run's tree appears here as members train.")

    # -- building ------------------------------------------------------------------------------
    def refresh(self, st: RunState, run_dir: Path | None = None, forked_from: dict | None = None) -> None:
        """Rebuild the tree when its shape or a member's result changed (not on every epoch)."""
        self.state, self.run_dir = st, run_dir
        if forked_from:
            parent = forked_from.get("run", "")
            self.parent_link.setText(f"Forked from <a href='{parent}'>{Path(parent).name}</a> "
                                     f"({forked_from.get('archive', '')}, after cycle {forked_from.get('cycle')})")
        else:
            self.parent_link.setText("")
        sig = (len(st.branches), sum(b.trained for b in st.branches.values()), tuple(sorted(st.winners.items())),
               len(st.main_steps) > 0, st.status, self.fold.isChecked())
        if sig == self._signature:
            return
        self._signature = sig
        if not self._fold_set_by_user:
            self.fold.blockSignals(True)
            self.fold.setChecked(len(st.branches) > FOLD_ABOVE)
            self.fold.blockSignals(False)
        self._build(st)

    def _fold_toggled(self, _on: bool) -> None:
        self._fold_set_by_user = True
        self._signature = ()
        if self.state is not None:
            self.refresh(self.state, self.run_dir)

    def _main_loss(self, st: RunState, cycle: int) -> float | None:
        """The main line's last loss in ``cycle`` (validation where there is one): after its fixing
        epochs, or after the chosen member's when there are none."""
        vals = [v if v == v else loss for c, v, loss in zip(st.main_cycles, st.main_val_losses, st.main_losses)
                if c == cycle]
        return vals[-1] if vals else None

    def _build(self, st: RunState) -> None:
        self.scene.clear()
        self.nodes.clear()
        self.winner_keys = []
        cycles = st.cycles()
        if not st.main_steps and not cycles:
            self.empty_hint = self.scene.addText("The run's tree appears here as members train.")
            return
        fold = self.fold.isChecked()
        thick = QPen(WIN, 3.0)
        thin = QPen(LOSER, 1.0)

        def main_node(cycle: int, column: int, title: str) -> _Node:
            key = NodeKey("main", cycle)
            rect = QRectF(column * COL_W, 0, NODE_W, NODE_H)
            node = _Node(self, key, rect, title, f"val loss {_fmt(self._main_loss(st, cycle))}", MAIN, True)
            self.scene.addItem(node)
            self.nodes[key] = node
            self.winner_keys.append(key)
            return node

        prev = main_node(0, 0, "run-up")
        column = 1
        for cycle in cycles:
            members = st.members(cycle)
            winner = st.winners.get(cycle)
            shown = [b for b in members if not fold or b.member == winner]
            folded = [b for b in members if fold and b.member != winner]
            row = 1
            winner_node = None
            for b in shown:
                key = NodeKey("member", cycle, b.member)
                won = b.member == winner
                last_val = next((v for v in reversed(b.val_losses or b.losses) if v == v), None)
                detail = ("training…" if not b.trained else "diverged" if b.fitness is None
                          else f"fit {_fmt(b.fitness)} · val {_fmt(last_val)}")
                title = f"{cycle}.{b.member} {b.change}"
                color = WIN if won else DIVERGED if b.trained and b.fitness is None else LOSER
                rect = QRectF(column * COL_W, row * ROW_H, NODE_W, NODE_H)
                node = _Node(self, key, rect, title, detail, color, won)
                self.scene.addItem(node)
                self.nodes[key] = node
                self._edge(prev, node, thick if won else thin)
                if won:
                    winner_node = node
                    self.winner_keys.append(key)
                row += 1
            if folded:
                key = NodeKey("folded", cycle)
                best = max((b.fitness for b in folded if b.fitness is not None), default=None)
                rect = QRectF(column * COL_W, row * ROW_H, NODE_W, NODE_H)
                node = _Node(self, key, rect, f"+{len(folded)} other members", f"best fit {_fmt(best)}", LOSER, False)
                self.scene.addItem(node)
                self.nodes[key] = node
                self._edge(prev, node, thin)
            if cycle in st.winners:
                nxt = main_node(cycle, column + 1, f"after cycle {cycle}")
                self._edge(winner_node if winner_node is not None else prev, nxt, thick)
                prev = nxt
                column += 2
            else:
                column += 1
        if st.status == "finished" and any(p == "final" for p in st.main_phases):
            final_cycle = max(st.main_cycles)
            nxt = main_node(final_cycle, column, "final")
            self.nodes[NodeKey("main", final_cycle)].setToolTip("final model")
            self._edge(prev, nxt, thick)
        self.scene.setSceneRect(self.scene.itemsBoundingRect().adjusted(-20, -20, 20, 20))
        if not self._user_zoomed:  # the whole height readable, the newest cycle in view
            height = self.scene.sceneRect().height()
            scale = max(0.35, min(1.0, (self.view.viewport().height() - 10) / height)) if height else 1.0
            self.view.resetTransform()
            self.view.scale(scale, scale)
            self.view.ensureVisible(QRectF(self.scene.sceneRect().right() - 10, 0, 10, 10))

    def _edge(self, a: _Node, b: _Node, pen: QPen) -> None:
        ra, rb = a.rect(), b.rect()
        line = self.scene.addLine(ra.right(), ra.center().y(), rb.left(), rb.center().y(), pen)
        line.setZValue(-1)

    # -- interaction ---------------------------------------------------------------------------
    def zoom(self, factor: float) -> None:
        self._user_zoomed = True
        self.view.scale(factor, factor)

    def fit(self) -> None:
        self._user_zoomed = True
        self.view.fitInView(self.scene.sceneRect(), Qt.KeepAspectRatio)

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.modifiers() & Qt.ControlModifier:
            self.zoom(1.15 if event.angleDelta().y() > 0 else 1 / 1.15)
            event.accept()
            return
        super().wheelEvent(event)

    def hover(self, key: NodeKey) -> None:
        st = self.state
        if st is None:
            return
        self.curve.clear()
        self.curve.plot(st.main_steps, st.main_val_losses, pen=pg.mkPen("#adb5bd", width=1), name="main line")
        if key.kind == "member":
            b = st.branches.get((key.cycle, key.member))
            if b is not None and b.steps:
                vals = b.val_losses if any(v == v for v in b.val_losses) else b.losses
                self.curve.plot(b.steps, vals, pen=pg.mkPen(WIN, width=2), symbol="o", symbolSize=5,
                                name=f"cycle {key.cycle}, member {key.member}")
        elif key.kind == "main":
            xs = [s for s, c in zip(st.main_steps, st.main_cycles) if c == key.cycle]
            ys = [v for v, c in zip(st.main_val_losses, st.main_cycles) if c == key.cycle]
            self.curve.plot(xs, ys, pen=pg.mkPen(MAIN, width=2), symbol="o", symbolSize=5, name="this stretch")

    def archive_for(self, key: NodeKey) -> str | None:
        st = self.state
        if key.kind == "member":
            return f"population/{key.cycle}_{key.member}_model.keras"
        if key.kind == "main":
            if key.cycle == 0:
                return "model/model_init.keras"
            if st is not None and st.main_phases and key.cycle == max(st.main_cycles) and st.status == "finished" \
                    and "final" in st.main_phases:
                return "model/model_final.keras"
            return f"model/model_{key.cycle}.keras"
        return None

    def click(self, key: NodeKey) -> None:
        st = self.state
        path = self.archive_for(key)
        text = ""
        if st is not None and key.kind == "member":
            b = st.branches.get((key.cycle, key.member))
            if b is not None:
                genes = ", ".join(f"{k} {v}" for k, v in b.genes.items() if k != "activations")
                text = (f"<b>cycle {key.cycle}, member {key.member}</b>: {b.change}<br>fitness {_fmt(b.fitness)}; "
                        f"{genes}<br>{'★ chosen' if st.winners.get(key.cycle) == key.member else 'not chosen'}")
        elif key.kind == "main":
            text = f"<b>main line</b> {'after the run-up' if key.cycle == 0 else f'after cycle {key.cycle}'}"
        if path:
            text += f"<br><i>{path}</i>"
        self.summary.setText(text or "—")
        if path:
            self.archiveClicked.emit(path)

    # -- export ---------------------------------------------------------------------------------
    def export(self, path: str | Path) -> Path:
        """The whole tree (not just the visible part) as PNG or SVG."""
        path = Path(path)
        rect = self.scene.sceneRect()
        if path.suffix.lower() == ".svg":
            from PySide6.QtCore import QSize
            from PySide6.QtSvg import QSvgGenerator

            gen = QSvgGenerator()
            gen.setFileName(str(path))
            gen.setSize(QSize(int(rect.width()), int(rect.height())))
            gen.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
            gen.setTitle("MIHA run genealogy")
            painter = QPainter(gen)
            self.scene.render(painter, QRectF(0, 0, rect.width(), rect.height()), rect)
            painter.end()
        else:
            image = QImage(int(rect.width() * 2), int(rect.height() * 2), QImage.Format_ARGB32)
            image.fill(QColor("white"))
            painter = QPainter(image)
            painter.setRenderHint(QPainter.Antialiasing)
            self.scene.render(painter, QRectF(0, 0, image.width(), image.height()), rect)
            painter.end()
            if not image.save(str(path)):
                raise OSError(f"cannot write {path}")
        return path

    # -- for tests -----------------------------------------------------------------------------
    def member_nodes(self) -> list[NodeKey]:
        return [k for k in self.nodes if k.kind == "member"]

    def thick_member_nodes(self) -> dict[int, int]:
        """{cycle: member} of the member nodes drawn on the winner path."""
        return {k.cycle: k.member for k in self.winner_keys if k.kind == "member"}

