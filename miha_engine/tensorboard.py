"""A run in TensorBoard: the main line and every member as scalars, the genes as hyperparameters.

Runs (folders under the output folder):

- ``main``: the final model's lineage, ``loss`` and ``val_loss`` at each lineage step, and its
  ``learning_rate`` and ``batch_size`` as they change;
- ``cycle_03/member_2``: each member's epochs (at the lineage steps its branch covers), its
  ``fitness``, and its genes as hyperparameters (HParams dashboard).

``miha tensorboard RUN_DIR OUT_DIR`` writes them from the run folder (its journal, cut back at every
resume); ``tensorboard = true`` in the configuration (``--tensorboard``) writes ``RUN_DIR/tensorboard``
live during the run.  Then ``tensorboard --logdir OUT_DIR``.  Needs the ``tensorboard`` package
(``pip install 'miha[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import events as ev
from .errors import InputError


def _require() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise InputError("TensorBoard output needs the tensorboard package: pip install 'miha[tensorboard]'")


def member_run(cycle: int, member: int) -> str:
    return f"cycle_{cycle:02d}/member_{member}"


def _hparams(genes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"optimizer": genes.get("optimizer", ""), "learning_rate": float(genes.get("learning_rate", 0)),
                           "batch_size": int(genes.get("batch_size", 0))}
    for layer, act in (genes.get("activations") or {}).items():
        out[f"activation/{layer}"] = str(act)
    return out


class TensorBoardWriter:
    """Writes event files under ``out_dir``; also an event listener (``writer(event)``) for live runs."""

    def __init__(self, out_dir: str | Path):
        _require()
        from .models import configure_tensorflow

        configure_tensorflow()
        self.out = Path(out_dir)
        self._writers: dict[str, Any] = {}
        self._main_genes: dict[str, Any] = {}
        self._member_genes: dict[tuple[int, int], dict[str, Any]] = {}
        self._points: dict[tuple[int, int], list[tuple[int, float, float | None]]] = {}
        self._genes: dict[str, Any] = {}

    def _writer(self, run: str):
        import tensorflow as tf

        w = self._writers.get(run)
        if w is None:
            w = self._writers[run] = tf.summary.create_file_writer(str(self.out / run))
        return w

    def main_point(self, step: int, loss: float, val_loss: float | None, genes: dict[str, Any]) -> None:
        import tensorflow as tf

        with self._writer("main").as_default(step=step):
            tf.summary.scalar("loss", loss)
            if val_loss is not None:
                tf.summary.scalar("val_loss", val_loss)
            if genes != self._main_genes:
                tf.summary.scalar("learning_rate", float(genes.get("learning_rate", 0)))
                tf.summary.scalar("batch_size", float(genes.get("batch_size", 0)))
                tf.summary.text("genes", str(genes))
                self._main_genes = dict(genes)

    def member_point(self, cycle: int, member: int, step: int, loss: float, val_loss: float | None) -> None:
        import tensorflow as tf

        with self._writer(member_run(cycle, member)).as_default(step=step):
            tf.summary.scalar("loss", loss)
            if val_loss is not None:
                tf.summary.scalar("val_loss", val_loss)

    def member_result(self, cycle: int, member: int, genes: dict[str, Any], change: str, fitness: float | None,
                      step: int) -> None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        with self._writer(member_run(cycle, member)).as_default(step=step):
            hp.hparams(_hparams(genes), trial_id=member_run(cycle, member))
            if fitness is not None:
                tf.summary.scalar("fitness", fitness)
            tf.summary.text("change", change)

    def close(self) -> None:
        for w in self._writers.values():
            w.flush()
            w.close()
        self._writers.clear()

    # -- live --------------------------------------------------------------------------------
    def __call__(self, e: ev.Event) -> None:
        if isinstance(e, ev.MemberStarted):
            self._member_genes[(e.cycle, e.member)] = e.genes
            self._points[(e.cycle, e.member)] = []
        elif isinstance(e, ev.EpochEnded):
            if e.member is None:
                self.main_point(e.step, e.loss, e.val_loss, self._genes)
            else:
                self.member_point(e.cycle, e.member, e.step, e.loss, e.val_loss)
                self._points.setdefault((e.cycle, e.member), []).append((e.step, e.loss, e.val_loss))
        elif isinstance(e, ev.MemberTrained):
            import math

            fit = e.fitness if e.fitness is not None and math.isfinite(e.fitness) else None
            self.member_result(e.cycle, e.member, e.genes, e.change, fit, 0)
        elif isinstance(e, ev.CycleDone):
            genes = self._member_genes.get((e.cycle, e.winner), e.genes)
            for step, loss, val in self._points.get((e.cycle, e.winner), []):  # the winner's epochs join the lineage
                self.main_point(step, loss, val, genes)
            self._points = {k: v for k, v in self._points.items() if k[0] != e.cycle}
            for w in self._writers.values():
                w.flush()
        elif isinstance(e, ev.RunFinished | ev.RunFailed):
            self.close()
        if isinstance(e, (ev.RunStarted, ev.CycleDone, ev.GenesChanged)) or (isinstance(e, ev.RunResumed) and e.genes):
            self._genes = e.genes


def export_tensorboard(run_dir: str | Path, out_dir: str | Path) -> Path:
    """``miha tensorboard``: write a run folder's picture (its journal, as the app replays it)."""
    from .runlog import RunFolder
    from .state import replay

    RunFolder(run_dir).open_existing()
    st = replay(run_dir)
    out = Path(out_dir)
    writer = TensorBoardWriter(out)
    try:
        for step, loss, val, genes in zip(st.main_steps, st.main_losses, st.main_raw_val, st.main_genes):
            writer.main_point(step, loss, val, genes)
        for (cycle, member), b in sorted(st.branches.items()):
            for step, loss, val in zip(b.steps, b.losses, b.val_losses):
                writer.member_point(cycle, member, step, loss, None if val != val else val)
            if b.trained:
                writer.member_result(cycle, member, b.genes, b.change, b.fitness, b.branch_step)
    finally:
        writer.close()
    return out
