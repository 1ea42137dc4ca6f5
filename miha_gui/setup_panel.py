"""The run set-up panel: model and dataset loaders, m/n/k/c/pop_size, the search space."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from miha_engine.config import (
    DEFAULT_BATCH_SIZE,
    GENE_KINDS,
    HIDDEN_ACTIVATIONS,
    OPTIMIZER_DEFAULT_LR,
    RunConfig,
    SearchSpace,
)
from miha_engine.data import Dataset, load_dataset, validate
from miha_engine.errors import InputError

from .inspector import ModelInspector


def _meta(cls, name: str) -> dict:
    """A RunConfig or SearchSpace field's front-end metadata (see miha_engine.config.option)."""
    return dict({f.name: f for f in dataclasses.fields(cls)}[name].metadata)


def _bounds(cls, name: str) -> tuple:
    return _meta(cls, name)["bounds"]


#: The schedule's sliders, all read from RunConfig: (key, label, tip, low, high, default).
PARAMS = tuple((name, _meta(RunConfig, name)["label"], _meta(RunConfig, name)["help"],
                *_bounds(RunConfig, name), RunConfig.options()[name].default) for name in RunConfig.schedule_fields())

#: how long the app waits for ``ray_evaluator --probe`` before saying the cluster does not answer
PROBE_TIMEOUT_MS = 30_000

KIND_LABELS = {"optimizer": "Optimizer", "activation": "Activations", "batch_size": "Batch size",
               "learning_rate": "Learning rate", "weight_decay": "Weight decay", "dropout": "Dropout rates",
               "label_smoothing": "Label smoothing"}
KIND_TIPS = {"weight_decay": "The optimizer's decoupled weight decay: a member may turn it on, scale it or turn it "
                             "off (no new traced step: cheap)",
             "dropout": "The rate of each Dropout layer the model has (no new traced step: cheap)",
             "label_smoothing": "The loss's label smoothing, where the loss takes it (categorical or binary "
                                "cross-entropy; not sparse)"}
#: what members can be scored by (label, fitness_metric); a loaded configuration's other metric is added
FITNESS_METRICS = (("auto: calibrated loss for a classifier, else loss", "auto"), ("validation loss", "loss"),
                   ("calibrated validation loss", "calibrated_loss"), ("validation accuracy", "accuracy"))
#: search-space and selection settings the panel does not show: kept as applied, so a configuration
#: loaded into the panel comes back out unchanged
_SPACE_KEPT = ("lr_factors", "weight_decay_range", "dropout_range", "label_smoothing_range")
_CONFIG_KEPT = ("fitness", "fitness_slope_weight", "final_anneal", "recycle_after", "recycle_rss_mb", "noise_false_switch",
                "crossover_weights", "validation_split", "tensorboard")


def _file_row(placeholder: str, empty: str, browse) -> tuple[QLineEdit, QPushButton, QLabel]:
    """A read-only path field, its Open… button and the summary label below them."""
    edit = QLineEdit()
    edit.setReadOnly(True)
    edit.setPlaceholderText(placeholder)
    button = QPushButton("Open…")
    button.clicked.connect(browse)
    summary = QLabel(empty)
    summary.setWordWrap(True)
    summary.setStyleSheet("color:#444; font-size:9pt")
    return edit, button, summary


class SliderSpin(QWidget):
    """A slider and a spin box showing one integer."""

    valueChanged = Signal(int)

    def __init__(self, low: int, high: int, value: int, tip: str):
        super().__init__()
        self.slider = QSlider(Qt.Horizontal)
        self.spin = QSpinBox()
        for w in (self.slider, self.spin):
            w.setRange(low, high)
            w.setValue(value)
            w.setToolTip(tip)
        self.spin.setMinimumWidth(56)
        self.slider.valueChanged.connect(self.spin.setValue)
        self.spin.valueChanged.connect(self.slider.setValue)
        self.spin.valueChanged.connect(self.valueChanged)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)

    def value(self) -> int:
        return self.spin.value()

    def setValue(self, v: int) -> None:
        self.spin.setValue(v)


class SetupPanel(QWidget):
    """Everything a run needs, as widgets.  ``config()`` reads them into a RunConfig."""

    changed = Signal()
    error = Signal(str)
    #: a model file was inspected: True when it loaded (and is now the panel's model)
    modelChecked = Signal(bool)

    def __init__(self):
        super().__init__()
        self.model_path: Path | None = None
        self.data_path: Path | None = None
        self.model_info = None
        self.dataset: Dataset | None = None
        self.seconds_per_sample: float | None = None  # learnt from runs
        self.last_dir: str | None = None  # restored from and saved to QSettings by the window
        self._pending_summary = ""
        self.inspector = ModelInspector(self)
        self.inspector.finished.connect(self._model_inspected)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)

        # -- model and data ----------------------------------------------------------------
        files = self._files_group = QGroupBox("Model and data")
        fl = QGridLayout(files)
        self.model_edit, self.model_btn, self.model_summary = _file_row(
            "a saved Keras model (.keras, .h5)", "No model loaded.", self._browse_model)
        self.model_summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.model_summary.setStyleSheet("color:#444; font-size:8pt")
        self.data_edit, self.data_btn, self.data_summary = _file_row(
            "a dataset (.npz, .h5, .csv)", "No dataset loaded.", self._browse_data)
        self.mismatch = QLabel("")
        self.mismatch.setWordWrap(True)
        self.mismatch.setStyleSheet("color:#c92a2a; font-weight:600")
        self.mismatch.hide()
        self.unsafe = QCheckBox("Allow unsafe model code (trusted files only)")
        self.unsafe.setToolTip("Keras' safe mode refuses to run code stored in a model file. Turn this on only for files you trust.")
        fl.addWidget(QLabel("Model"), 0, 0)
        fl.addWidget(self.model_edit, 0, 1)
        fl.addWidget(self.model_btn, 0, 2)
        fl.addWidget(self.model_summary, 1, 0, 1, 3)
        fl.addWidget(QLabel("Dataset"), 2, 0)
        fl.addWidget(self.data_edit, 2, 1)
        fl.addWidget(self.data_btn, 2, 2)
        fl.addWidget(self.data_summary, 3, 0, 1, 3)
        fl.addWidget(self.mismatch, 4, 0, 1, 3)
        fl.addWidget(self.unsafe, 5, 0, 1, 3)
        outer.addWidget(files)

        # -- schedule ----------------------------------------------------------------------
        sched = QGroupBox("Schedule")
        form = QFormLayout(sched)
        form.setLabelAlignment(Qt.AlignLeft)
        self.params: dict[str, SliderSpin] = {}
        for key, label, tip, lo, hi, default in PARAMS:
            w = SliderSpin(lo, hi, default, tip)
            w.valueChanged.connect(self._update_totals)
            self.params[key] = w
            lab = QLabel(label)
            lab.setToolTip(tip)
            form.addRow(lab, w)
        self.batch = QSpinBox()
        self.batch.setRange(*_bounds(RunConfig, "batch_size"))
        self.batch.setValue(DEFAULT_BATCH_SIZE)
        self.batch.setToolTip(_meta(RunConfig, "batch_size")["help"])
        self.seed = QSpinBox()
        self.seed.setRange(*_bounds(RunConfig, "seed"))
        self.seed.setValue(RunConfig.options()["seed"].default)
        self.seed.setToolTip(_meta(RunConfig, "seed")["help"])
        row = QHBoxLayout()
        row.addWidget(QLabel("batch"))
        row.addWidget(self.batch)
        row.addSpacing(12)
        row.addWidget(QLabel("seed"))
        row.addWidget(self.seed)
        row.addStretch(1)
        form.addRow(row)
        self.total_label = QLabel()
        self.total_label.setWordWrap(True)
        self.total_label.setStyleSheet("font-weight:600")
        form.addRow(self.total_label)
        outer.addWidget(sched)

        # -- search space ------------------------------------------------------------------
        search = QGroupBox("Search space")
        sl = QVBoxLayout(search)
        kinds_row = QGridLayout()
        kinds_row.addWidget(QLabel("Mutate:"), 0, 0)
        self.kind_boxes: dict[str, QCheckBox] = {}
        for i, kind in enumerate(GENE_KINDS):
            box = QCheckBox(KIND_LABELS[kind])
            box.setChecked(True)
            if kind in KIND_TIPS:
                box.setToolTip(KIND_TIPS[kind])
            box.toggled.connect(self._update_enabled)
            self.kind_boxes[kind] = box
            kinds_row.addWidget(box, i // 2, 1 + i % 2)
        sl.addLayout(kinds_row)
        self.opt_group = QGroupBox("Optimizers")
        og = QGridLayout(self.opt_group)
        self.opt_boxes: dict[str, QCheckBox] = {}
        defaults = set(SearchSpace().optimizers)
        for i, name in enumerate(OPTIMIZER_DEFAULT_LR):
            box = QCheckBox(name)
            box.setChecked(name in defaults)
            self.opt_boxes[name] = box
            og.addWidget(box, i // 4, i % 4)
        sl.addWidget(self.opt_group)
        self.act_group = QGroupBox("Hidden-layer activations")
        ag = QGridLayout(self.act_group)
        self.act_boxes: dict[str, QCheckBox] = {}
        for i, name in enumerate(HIDDEN_ACTIVATIONS):
            box = QCheckBox(name)
            box.setChecked(True)
            self.act_boxes[name] = box
            ag.addWidget(box, i // 4, i % 4)
        sl.addWidget(self.act_group)
        ranges = QFormLayout()
        space = SearchSpace()
        self.bs_lo, self.bs_hi = QSpinBox(), QSpinBox()
        for w, v in zip((self.bs_lo, self.bs_hi), space.batch_size_range):
            w.setRange(*_bounds(SearchSpace, "batch_size_range"))
            w.setValue(v)
        r1 = QHBoxLayout()
        r1.addWidget(self.bs_lo)
        r1.addWidget(QLabel("to"))
        r1.addWidget(self.bs_hi)
        r1.addStretch(1)
        ranges.addRow("Batch-size range", r1)
        self.lr_lo, self.lr_hi = QDoubleSpinBox(), QDoubleSpinBox()
        for w, v in zip((self.lr_lo, self.lr_hi), space.learning_rate_range):
            w.setDecimals(6)
            w.setRange(*_bounds(SearchSpace, "learning_rate_range"))
            w.setSingleStep(1e-4)
            w.setValue(v)
        r2 = QHBoxLayout()
        r2.addWidget(self.lr_lo)
        r2.addWidget(QLabel("to"))
        r2.addWidget(self.lr_hi)
        r2.addStretch(1)
        ranges.addRow("Learning-rate range", r2)
        sl.addLayout(ranges)
        sel = QHBoxLayout()
        sel.addWidget(QLabel("Keep:"))
        self.selection_radio = QRadioButton("Selection")
        self.selection_radio.setToolTip("Keep the fittest member")
        self.crossover_radio = QRadioButton("Crossover")
        self.crossover_radio.setToolTip("Combine the two fittest members' mutations; kept only if it does at least as well as the fitter parent")
        self.selection_radio.setChecked(True)
        sel.addWidget(self.selection_radio)
        sel.addWidget(self.crossover_radio)
        sl.addLayout(sel)
        self._selection_widgets = (self.selection_radio, self.crossover_radio)
        self.control = QCheckBox("Control member (member 0 keeps the genes)")
        self.control.setToolTip("Member 0 of each population is trained without any mutation, as a control")
        self.control.setChecked(RunConfig.options()["control_member"].default)
        self.noise_rule = QCheckBox("Noise-aware: a mutant must beat the control by more than the noise")
        self.noise_rule.setToolTip(_meta(RunConfig, "selection")["help"])
        self.noise_rule.setChecked(RunConfig.options()["selection"].default == "noise")
        self.explore = QCheckBox("Explore harder after a plateau")
        self.explore.setToolTip(_meta(RunConfig, "explore_on_plateau")["help"])
        self.explore.setChecked(RunConfig.options()["explore_on_plateau"].default)
        self.soup = QCheckBox("Soup: average in members that lower the validation score")
        self.soup.setToolTip(_meta(RunConfig, "soup")["help"] + " (off by default: it did not pay on the "
                             "benchmark's tasks)")
        self.soup.setChecked(RunConfig.options()["soup"].default)
        self.control.toggled.connect(self._update_enabled)
        self.noise_rule.toggled.connect(self._update_enabled)  # a plateau is a tie within the noise margin
        for w in (self.control, self.noise_rule, self.explore, self.soup):
            sl.addWidget(w)
        score = QHBoxLayout()
        score.addWidget(QLabel("Score members by:"))
        self.fitness_metric = QComboBox()
        for label, value in FITNESS_METRICS:
            self.fitness_metric.addItem(label, value)
        self.fitness_metric.setCurrentIndex(self.fitness_metric.findData(RunConfig.options()["fitness_metric"].default))
        self.fitness_metric.setToolTip(_meta(RunConfig, "fitness_metric")["help"])
        score.addWidget(self.fitness_metric)
        score.addStretch(1)
        sl.addLayout(score)
        outer.addWidget(search)

        # -- execution ---------------------------------------------------------------------
        execution = self._execution_group = QGroupBox("Execution")
        el = QHBoxLayout(execution)
        el.addWidget(QLabel("Batches per compiled call"))
        self.spe = QSpinBox()
        self.spe.setRange(*_bounds(RunConfig, "steps_per_execution"))
        self.spe.setSpecialValueText("auto")
        self.spe.setToolTip("steps_per_execution: several batches per call cut per-batch overhead; "
                            "Stop is checked between calls. 'auto' = 16")
        el.addWidget(self.spe)
        self.xla = QCheckBox("XLA")
        self.xla.setToolTip("Compile training steps with XLA: faster epochs, but a slower start for every "
                            "new model and batch size (off by default; see benchmarks/REPORT.md)")
        el.addWidget(self.xla)
        el.addStretch(1)
        outer.addWidget(execution)
        self._population_group = self._build_population_group()
        outer.addWidget(self._population_group)

        # -- output ------------------------------------------------------------------------
        out = self._out_group = QGroupBox("Run folder")
        ol = QGridLayout(out)
        self.run_dir = QLineEdit(str(default_run_base()))
        self.run_dir.setToolTip("each run gets its own sub-folder miha-<date>-<time> here (by default in your "
                                "user data folder, whatever folder the app was started from)")
        self.run_dir_btn = QPushButton("Browse…")
        self.run_dir_btn.clicked.connect(self._browse_run_dir)
        self.keep = QCheckBox("Keep the intermediate models")
        self.keep.setToolTip("Unchecked: at the end only model_final.keras and the logs stay in the run folder")
        self.keep.setChecked(True)
        ol.addWidget(self.run_dir, 0, 0)
        ol.addWidget(self.run_dir_btn, 0, 1)
        ol.addWidget(self.keep, 1, 0, 1, 2)
        outer.addWidget(out)
        outer.addStretch(1)
        self._update_enabled()
        self._update_totals()

    def set_running(self, running: bool) -> None:
        """While a run goes, only the live settings stay editable: n, k, pop_size and the search
        space (they apply from the next cycle); the rest is fixed for the run."""
        if running == getattr(self, "live", None):
            return
        live = set(RunConfig.live_fields())
        for group in (self._files_group, self._execution_group, self._population_group, self._out_group):
            group.setEnabled(not running)
        for key, widget in self.params.items():
            widget.setEnabled(not running or key in live)
        for w in (self.batch, self.seed, self.control, self.noise_rule, self.explore, self.soup, self.fitness_metric,
                  *self._selection_widgets):
            w.setEnabled(not running)
        for w in (*self.kind_boxes.values(), self.opt_group, self.act_group, self.bs_lo, self.bs_hi,
                  self.lr_lo, self.lr_hi):
            w.setEnabled("search" in live or not running)
        self._apply_enabled()
        self.live = running

    # -- file loading -------------------------------------------------------------------------
    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a Keras model", str(self._start_dir()), "Keras models (*.keras *.h5 *.hdf5);;All files (*)")
        if path:
            self.load_model(path)

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", str(self._start_dir()), "Datasets (*.npz *.h5 *.hdf5 *.csv);;All files (*)")
        if path:
            self.load_data(path)

    def _browse_run_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for runs", self.run_dir.text())
        if path:
            self.run_dir.setText(path)

    def _start_dir(self) -> Path:
        if self.model_path or self.data_path:
            return (self.model_path or self.data_path).parent
        return Path(self.last_dir) if self.last_dir else Path.cwd()

    @Slot(str)
    def load_model(self, path: str | Path) -> None:
        """Inspect a model file in another process (the window never waits on TensorFlow); when it
        answers, show its summary, or say why it cannot be used and keep the previous model.
        ``modelChecked`` tells the outcome."""
        self._pending_summary = self.model_summary.text()
        self.model_summary.setText(f"Loading {Path(path).name}…")
        self.model_btn.setEnabled(False)
        self.inspector.inspect(path, unsafe=self.unsafe.isChecked())

    @Slot(str, object, str)
    def _model_inspected(self, path: str, info, error: str) -> None:
        self.model_btn.setEnabled(True)
        if info is None:
            error = app_words(error)
            keep = "" if self.model_info is None else f"<br>Still loaded: {self.model_path.name}."
            self.model_summary.setText(f"<span style='color:#c92a2a'><b>Could not open {Path(path).name}:</b> "
                                       f"{error}</span>{keep}")
            self.error.emit(error)
            self.modelChecked.emit(False)
            return
        self.model_path, self.model_info = Path(path), info
        self.model_edit.setText(str(path))
        rows = "".join(
            f"<tr><td>{layer.path}</td><td>{layer.class_name}</td><td>{layer.activation or ''}</td>"
            f"<td align='right'>{layer.params:,}</td><td>{layer.output_shape}</td></tr>" for layer in info.layers)
        self.model_summary.setText(
            f"<b>{info.name}</b>: {info.params:,} parameters, input {info.input_shape}, output {info.output_shape}<br>"
            f"loss <b>{info.loss or '— (not compiled)'}</b>, optimizer <b>{info.optimizer or '—'}</b>"
            + (f" lr {info.learning_rate:.3g}" if info.learning_rate else "")
            + f"<table cellspacing='4'><tr><th align='left'>layer</th><th align='left'>type</th><th align='left'>activation</th>"
            f"<th align='right'>params</th><th align='left'>output</th></tr>{rows}</table>")
        self._check_match()
        self._update_totals()
        self.changed.emit()
        self.modelChecked.emit(True)

    @Slot(str)
    def load_data(self, path: str | Path) -> bool:
        try:
            ds = load_dataset(path)
        except InputError as exc:
            self.error.emit(str(exc))
            return False
        self.data_path, self.dataset = Path(path), ds
        self.data_edit.setText(str(path))
        y = ds.y
        if y.dtype.kind in "iu" or (y.ndim == 1 and y.size and (y == y.astype(int)).all() and len(set(y.tolist())) <= 100):
            kind = f"classification, {len(set(y.reshape(-1).tolist()))} classes"
        else:
            kind = "regression"
        val = f"{len(ds.x_val)} given" if ds.has_validation else "10% of training, held out"
        test = f"{len(ds.x_test)}" if ds.has_test else "none"
        self.data_summary.setText(
            f"{ds.n_train:,} samples of shape {tuple(ds.x.shape[1:])}; targets {tuple(ds.y.shape[1:]) or 'scalar'} ({kind})<br>"
            f"validation: {val}; test: {test}")
        self._check_match()
        self._update_totals()
        self.changed.emit()
        return True

    def _check_match(self) -> None:
        self.mismatch.hide()
        if self.model_info is None or self.dataset is None:
            return
        from miha_engine.models import task_from_loss

        task = task_from_loss(self.model_info.loss) if self.model_info.loss else "regression"
        try:
            validate(self.dataset, self.model_info.input_shape, self.model_info.output_shape, task)
        except InputError as exc:
            self.mismatch.setText(f"The dataset does not fit the model: {exc}")
            self.mismatch.show()

    def mismatch_text(self) -> str:
        return self.mismatch.text() if not self.mismatch.isHidden() else ""

    # -- totals ------------------------------------------------------------------------------
    def _update_enabled(self) -> None:
        self._apply_enabled()
        self.changed.emit()

    def _apply_enabled(self) -> None:
        """Each search range is editable only while its gene kind is ticked."""
        for box in self.kind_boxes.values():
            box.setEnabled(True)
        self.opt_group.setEnabled(self.kind_boxes["optimizer"].isChecked())
        self.act_group.setEnabled(self.kind_boxes["activation"].isChecked())
        for w in (self.bs_lo, self.bs_hi):
            w.setEnabled(self.kind_boxes["batch_size"].isChecked())
        for w in (self.lr_lo, self.lr_hi):
            w.setEnabled(self.kind_boxes["learning_rate"].isChecked())
        # the noise rule and the plateau both compare mutants with the control
        self.noise_rule.setEnabled(self.control.isChecked() and self.control.isEnabled())
        self.explore.setEnabled(self.control.isChecked() and self.noise_rule.isChecked() and self.control.isEnabled())

    def _update_totals(self) -> None:
        v = {k: w.value() for k, w in self.params.items()}
        total, lineage = RunConfig.epoch_counts(v["runup_epochs"], v["candidate_epochs"], v["fixing_epochs"],
                                                v["cycles"], v["population_size"])
        text = f"Total: 2m + c·(pop·n + k) = {total} epochs; the final model's lineage: {lineage}"
        est = self.estimate_seconds(total)
        if est is not None:
            text += f"<br>Estimated time: {format_duration(est)}"
        self.total_label.setText(text)
        self.changed.emit()

    def estimate_seconds(self, epochs: int) -> float | None:
        """Epochs × samples × seconds per sample, measured by the last run, else a FLOP guess."""
        if self.dataset is None or self.model_info is None:
            return None
        samples = self._train_samples()
        if self.seconds_per_sample is not None:  # measured: it holds the run's own overheads already
            return epochs * samples * self.seconds_per_sample
        per = 6.0 * self.model_info.params / 3e10 + 2e-5  # ~30 GFLOP/s effective, plus overhead
        return epochs * samples * per + 0.3 * epochs

    def _train_samples(self) -> float:
        return self.dataset.n_train * (0.9 if not self.dataset.has_validation else 1.0)

    def learn_speed(self, seconds_per_epoch: float) -> None:
        """What a finished (or stopped) run measured: later estimates use it, the shown one at once."""
        if self.dataset is None:
            return
        self.seconds_per_sample = seconds_per_epoch / max(1.0, self._train_samples())
        self._update_totals()

    # -- where members train ------------------------------------------------------------------
    def _build_population_group(self) -> QGroupBox:
        box = QGroupBox("Train population on")
        column = QVBoxLayout(box)
        grid = QGridLayout()
        column.addLayout(grid)
        self.evaluator = QComboBox()
        self.evaluator.addItem("this process", "local")
        self.evaluator.addItem("Ray (members in parallel)", "ray")
        self.ray_available = importlib.util.find_spec("ray") is not None
        if not self.ray_available:
            item = self.evaluator.model().item(1)
            item.setEnabled(False)
            item.setToolTip("Ray is not installed: pip install 'miha[ray]'")
        self.evaluator.setToolTip("this process: members train one after the other here. Ray: members train on "
                                  "Ray workers, on this machine or a cluster, several at once")
        self.ray_address = QLineEdit()
        self.ray_address.setPlaceholderText("empty: a local Ray instance; or auto, HOST:PORT")
        self.ray_address.setToolTip("The address of a running Ray cluster ('ray start --head' prints it; "
                                    "see docs/cluster.md). Empty starts Ray on this machine for the run")
        self.ray_gpus = QDoubleSpinBox()
        self.ray_gpus.setRange(*_bounds(RunConfig, "ray_gpus_per_member"))
        self.ray_gpus.setSingleStep(0.25)
        self.ray_gpus.setDecimals(2)
        self.ray_gpus.setToolTip("The fraction of a GPU each member gets when the cluster has GPUs "
                                 "(0.25: four members share one GPU). Ignored on a cluster without GPUs")
        self.ray_check = QPushButton("Check")
        self.ray_check.setToolTip("Ask the cluster (or this machine) what resources a run would get")
        self.ray_check.clicked.connect(self.probe_ray)
        self.ray_status = QLabel()
        self.ray_status.setWordWrap(True)
        self.ray_status.setObjectName("hint")
        self.ray_resources: dict = {}
        # no widget: the configuration's defaults, or what a loaded configuration said
        self._ray_kept = {k: RunConfig.options()[k].default for k in ("ray_cpus_per_member", "ray_max_retries")}
        self._space_kept = {k: getattr(SearchSpace(), k) for k in _SPACE_KEPT}
        self._config_kept = {k: RunConfig.options()[k].default for k in _CONFIG_KEPT}
        grid.addWidget(self.evaluator, 0, 0, 1, 3)
        grid.addWidget(QLabel("Address"), 1, 0)
        grid.addWidget(self.ray_address, 1, 1)
        grid.addWidget(self.ray_check, 1, 2)
        grid.addWidget(QLabel("GPU per member"), 2, 0)
        grid.addWidget(self.ray_gpus, 2, 1)
        column.addWidget(self.ray_status)
        self._probe: QProcess | None = None
        self.evaluator.currentIndexChanged.connect(self._evaluator_changed)
        self.ray_address.editingFinished.connect(self._address_edited)
        self._evaluator_changed()
        return box

    def _address_edited(self) -> None:
        if self.evaluator.currentData() == "ray":
            self.probe_ray()

    def _evaluator_changed(self) -> None:
        ray = self.evaluator.currentData() == "ray"
        for w in (self.ray_address, self.ray_gpus, self.ray_check):
            w.setEnabled(ray)
        if not ray:
            self.ray_status.setText("Members train one after the other in the engine's process."
                                    if self.ray_available else
                                    "Members train one after the other in the engine's process. To train them in "
                                    "parallel on Ray: pip install 'miha[ray]'.")
        else:
            self.probe_ray()
        self.changed.emit()

    @Slot()
    def probe_ray(self) -> None:
        """Ask, in a subprocess (the window never waits on Ray), what a Ray run would get."""
        if self._probe is not None:
            old, self._probe = self._probe, None
            old.kill()
            old.waitForFinished(1000)
        address = self.ray_address.text().strip()
        self.ray_status.setText(f"Asking the Ray cluster at {address}…" if address else "Looking at this machine…")
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.MergedChannels)
        proc.finished.connect(lambda *_: self._probe_done(proc, address))
        proc.errorOccurred.connect(lambda err: err == QProcess.FailedToStart and self._probe_done(proc, address))
        self._probe = proc
        proc.start(sys.executable, ["-m", "miha_engine.ray_evaluator", "--probe", *([address] if address else [])])
        QTimer.singleShot(PROBE_TIMEOUT_MS, lambda: self._probe_timeout(proc, address))

    def _probe_timeout(self, proc: QProcess, address: str) -> None:
        if proc is self._probe:
            self._probe = None
            proc.kill()
            proc.deleteLater()
            self.ray_status.setText(f"Ray: no answer from {address or 'this machine'} within "
                                    f"{PROBE_TIMEOUT_MS // 1000} s; check the address (docs/cluster.md)")

    def _probe_done(self, proc: QProcess, address: str) -> None:
        if proc is not self._probe:
            return
        self._probe = None
        out = bytes(proc.readAll()).decode(errors="replace").strip().splitlines()
        proc.deleteLater()
        try:
            info = json.loads(out[-1]) if out else {"ok": False, "error": proc.errorString() or "no answer"}
        except ValueError:
            info = {"ok": False, "error": out[-1]}
        info["share"] = self.ray_gpus.value()
        info["cpus_per_member"] = self._ray_kept["ray_cpus_per_member"]
        self.ray_status.setText(ray_status_text(info, address))
        self.ray_resources = info
        self.changed.emit()

    # -- configuration -----------------------------------------------------------------------
    def config(self) -> RunConfig:
        kinds = tuple(k for k, b in self.kind_boxes.items() if b.isChecked())
        space = SearchSpace(
            kinds=kinds,
            optimizers=tuple(n for n, b in self.opt_boxes.items() if b.isChecked()),
            hidden_activations=tuple(n for n, b in self.act_boxes.items() if b.isChecked()),
            batch_size_range=(self.bs_lo.value(), self.bs_hi.value()),
            learning_rate_range=(self.lr_lo.value(), self.lr_hi.value()),
            **self._space_kept,
        )
        return RunConfig(
            **{k: w.value() for k, w in self.params.items()},
            batch_size=self.batch.value(),
            seed=self.seed.value(),
            search=space,
            crossover=self.crossover_radio.isChecked(),
            control_member=self.control.isChecked(),
            selection="noise" if self.noise_rule.isChecked() else "fittest",
            explore_on_plateau=self.explore.isChecked(),
            soup=self.soup.isChecked(),
            fitness_metric=self.fitness_metric.currentData(),
            **self._config_kept,
            drop_intermediate=not self.keep.isChecked(),
            steps_per_execution=self.spe.value() or "auto",
            jit_compile=True if self.xla.isChecked() else "auto",
            evaluator=self.evaluator.currentData(),
            ray_address=self.ray_address.text().strip() or None,
            ray_gpus_per_member=self.ray_gpus.value(),
            **self._ray_kept,
        )

    def apply_config(self, cfg: RunConfig) -> None:
        for k, w in self.params.items():
            w.setValue(int(getattr(cfg, k)))
        self.batch.setValue(cfg.batch_size or DEFAULT_BATCH_SIZE)
        self.seed.setValue(cfg.seed)
        for k, b in self.kind_boxes.items():
            b.setChecked(k in cfg.search.kinds)
        for n, b in self.opt_boxes.items():
            b.setChecked(n in cfg.search.optimizers)
        for n, b in self.act_boxes.items():
            b.setChecked(n in cfg.search.hidden_activations)
        self.bs_lo.setValue(cfg.search.batch_size_range[0])
        self.bs_hi.setValue(cfg.search.batch_size_range[1])
        self.lr_lo.setValue(cfg.search.learning_rate_range[0])
        self.lr_hi.setValue(cfg.search.learning_rate_range[1])
        (self.crossover_radio if cfg.crossover else self.selection_radio).setChecked(True)
        self.control.setChecked(cfg.control_member)
        self.noise_rule.setChecked(cfg.selection == "noise")
        self.explore.setChecked(cfg.explore_on_plateau)
        self.soup.setChecked(cfg.soup)
        if self.fitness_metric.findData(cfg.fitness_metric) < 0:
            self.fitness_metric.addItem(cfg.fitness_metric, cfg.fitness_metric)
        self.fitness_metric.setCurrentIndex(self.fitness_metric.findData(cfg.fitness_metric))
        self._space_kept = {k: getattr(cfg.search, k) for k in _SPACE_KEPT}
        self._config_kept = {k: getattr(cfg, k) for k in _CONFIG_KEPT}
        self.keep.setChecked(not cfg.drop_intermediate)
        self.spe.setValue(0 if cfg.steps_per_execution == "auto" else int(cfg.steps_per_execution))
        self.xla.setChecked(cfg.jit_compile is True)
        if cfg.evaluator == "local" or self.ray_available:
            self.evaluator.setCurrentIndex(self.evaluator.findData(cfg.evaluator))
        self.ray_address.setText(cfg.ray_address or "")
        self.ray_gpus.setValue(cfg.ray_gpus_per_member)
        self._ray_kept = {"ray_cpus_per_member": cfg.ray_cpus_per_member, "ray_max_retries": cfg.ray_max_retries}


def ray_status_text(info: dict, address: str) -> str:
    """One sentence on what a Ray run would get, from ``ray_evaluator --probe``'s answer."""
    if not info.get("ok"):
        return f"Ray: {info.get('error', 'no answer')}"
    from miha_engine.ray_evaluator import capacity

    cpus, gpus = info.get("CPU", 0), info.get("GPU", 0)
    gpu_text = f"{gpus:g} GPU{'s' if gpus != 1 else ''}" if gpus else "no GPU"
    share = info.get("share") or 0.0
    # what the run will start: workers counted node by node, as the engine counts them
    nodes = info.get("per_node") or [{"CPU": cpus, "GPU": gpus}]
    at_once = capacity(nodes, float(info.get("cpus_per_member") or 1.0), share if gpus else 0.0)
    if info.get("local"):
        return (f"Ray {info.get('ray', '')}: a local Ray instance starts with the run, on this machine's "
                f"{cpus:g} CPUs and {gpu_text}; up to {at_once} members train at once.")
    n_nodes = info.get("nodes", 0)
    return (f"Ray {info.get('ray', '')} cluster at {address}: {n_nodes} node{'s' if n_nodes != 1 else ''}, "
            f"{cpus:g} CPUs, {gpu_text}; up to {at_once} members train at once.")


def default_run_base() -> Path:
    """Where the app puts runs unless told otherwise: the per-user data folder (QStandardPaths),
    not whatever folder the app was started from."""
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation)
    return Path(base) / "runs" if base else Path.home() / "MIHA" / "runs"


def app_words(message: str) -> str:
    """The engine's advice, in the app's own words (its controls, not the CLI's flags)."""
    return message.replace("load it with --unsafe-model",
                           "tick 'Allow unsafe model code (trusted files only)' under the model and open it again")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"
