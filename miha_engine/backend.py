"""The one training set-up: what it takes to train a model's main line and its members with Keras.

:class:`KerasBackend` is built once from (model, data, configuration, search context) and owns the
compile spec, the :class:`~miha_engine.training.Trainer`, the model pool, the activation choices
and the XLA fallback.  The driver's loop (:mod:`miha_engine.runner`) trains the main line through
it, the in-process evaluator trains members through it, and a Ray worker builds the same object
from the parent archive it receives, so a member trains the same way wherever it runs.

The loop sees only the :class:`Backend` protocol.  :class:`miha_engine.testing.FakeBackend`
implements it with closed-form numpy losses, so selection, ties, crossover and resume can be tested
in milliseconds without TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .config import RunConfig
from .data import Dataset, validate
from .errors import InputError
from .genes import Genes
from .snapshot import Snapshot

if TYPE_CHECKING:  # pragma: no cover
    from .training import CancelToken, FitResult

EpochCallback = Callable[[int, float, "float | None", float], None]


def member_seeds(seed: int, cycle: int, index: int) -> tuple[int, int]:
    """(framework seed, shuffle counter) of one member: a member trains the same way whichever
    evaluator, worker or order runs it."""
    return seed * 100_003 + cycle * 1_000 + index, cycle * 1_000 + index + 1


def main_shuffle(cycle: int) -> int:
    """The shuffle stream of the main line's phase after cycle ``cycle`` (0: the run-up; cycles + 1:
    the final phase): fixed by the cycle, never by how many fits ran before (a resume starts anew)."""
    return cycle * 1_000 + 999


def main_line_seed(seed: int, cycle: int) -> int:
    """The main line's seed after cycle ``cycle``'s population: its randomness does not depend on
    where or in what order members trained."""
    return seed * 100_003 + cycle * 1_000 + 999


class TrainedMember(Protocol):
    """A trained member's state, however it is held (a live model here; an archive copy and arrays
    from a Ray worker)."""

    def write_archive(self, path: Path) -> None:
        """Write the member's ``.keras`` archive at ``path`` (atomically)."""

    def snapshot(self) -> Snapshot:
        """The member's trained state as arrays."""


class Backend(Protocol):
    """What the MIHA loop needs from a training framework (see the module's text)."""

    data: Dataset
    choices: dict[str, tuple[str, ...]]
    layer_notes: list[str]
    device: str
    #: what the framework printed while it started (kept out of the terminal, shown on request)
    startup_log: str

    def initial_genes(self) -> Genes: ...
    def versions(self) -> dict[str, str]: ...
    def search_context(self) -> dict[str, Any]: ...
    def param_count(self) -> int: ...
    def start(self, genes: Genes) -> None: ...
    def train_main(self, genes: Genes, epochs: int, on_epoch: EpochCallback, shuffle: int,
                   lr_schedule: list[float] | None = None) -> FitResult: ...
    def snapshot(self, genes: Genes) -> Snapshot: ...
    def set_main(self, snap: Snapshot, genes: Genes, weights: list[np.ndarray] | None = None) -> None: ...
    def save_main(self, path: Path) -> None: ...
    def main_archive_writer(self) -> Callable[[Path], Any]: ...
    def train_member(self, genes: Genes, parent: Snapshot, cycle: int, index: int, epochs: int,
                     on_epoch: EpochCallback) -> tuple[FitResult, TrainedMember]: ...
    def holdout_loss(self, snap: Snapshot, genes: Genes, weights: list[np.ndarray] | None = None,
                     metric: str = "loss") -> float: ...
    def last_epoch_metrics(self) -> dict[str, float]: ...
    def test_metrics(self) -> dict[str, float]: ...
    def archive_test_metrics(self, path: Path) -> dict[str, float]: ...
    def reseed(self, seed: int) -> None: ...
    def pop_notes(self) -> list[str]: ...


def auto_fitness_metric(loss, data: Dataset) -> str:
    """What fitness_metric "auto" scores: a classifier with a validation split, its calibrated
    validation loss (it follows accuracy once the model overfits, where the raw loss follows
    over-confidence; see miha_engine.calibration); anything else, its loss."""
    from .calibration import CALIBRATED

    return CALIBRATED if calibration_applies(loss) and data.has_validation else "loss"


def calibration_applies(loss) -> bool:
    """Whether temperature scaling means something for ``loss``: a (sparse) categorical or binary
    cross-entropy (not a hinge, focal or KL loss, which ``models.task_from_loss`` also files as
    classification)."""
    from . import models as mdl
    from .calibration import CLASSIFICATION

    name = mdl._loss_key(loss)
    return mdl.task_from_loss(loss) in CLASSIFICATION and "crossentropy" in name and "focal" not in name


class _LiveMember:
    """A member trained in this process: its pooled model, valid until the next member is asked for."""

    def __init__(self, model, genes: Genes):
        self.model, self.genes = model, genes

    def write_archive(self, path: Path) -> None:
        from . import models as mdl

        mdl.save_model(self.model, path)

    def archive_writer(self):
        """A writer of this member's archive as it is now (the pooled model trains the next member)."""
        from . import models as mdl

        return mdl.archive_writer(self.model)

    def snapshot(self) -> Snapshot:
        from . import models as mdl

        return mdl.snapshot(self.model, self.genes)


class KerasBackend:
    """Keras 3 on TensorFlow: the real :class:`Backend`.

    Args:
        model: the model whose topology every member shares (and whose state starts the main line).
        data: the dataset, its validation split already made (see :meth:`prepare`).
        config: the run configuration.
        cancel: the token training checks after every compiled call.
        search_context: what an earlier run (or the driver, for a worker) decided about the
            activation slots and the user's optimizer settings; None decides them from ``model``.
    """

    def __init__(self, model, data: Dataset, config: RunConfig, cancel: CancelToken,
                 search_context: dict[str, Any] | None = None):
        from . import models as mdl
        from .training import Trainer

        self.device = mdl.configure_tensorflow()
        self.startup_log = mdl.startup_log()
        self.model = model
        self.data = data
        self.spec = mdl.compile_spec(model, config)
        if config.fitness_metric == "auto":
            config = config.replace(fitness_metric=auto_fitness_metric(self.spec.loss, data))
        self.config = config
        self.choices, self.layer_notes = mdl.activation_choices(model, self.spec, config, data.y)
        if search_context:
            import keras

            self.choices = {p: tuple(a) for p, a in search_context.get("choices", {}).items()}
            template = search_context.get("optimizer_template")
            self.spec.optimizer_template = keras.saving.deserialize_keras_object(template) if template else None
        from .calibration import CALIBRATED

        calibration = (self.spec.task, self.spec.from_logits) if config.fitness_metric == CALIBRATED else None
        self.trainer = Trainer(data, config, cancel, config.seed, calibration=calibration)
        # one sample: a new pooled model builds its compiled loss and metrics eagerly with it
        # the optimizer kinds a member may take, when one model serves them all (see
        # models.install_knobs): opt-in (MIHA_OPTIMIZER_SWITCH=1) because the article configuration
        # measured 4-15 % slower with it and the overhead run 8-15 % faster (benchmarks/REPORT.md, part 9)
        kinds: tuple[str, ...] = ()
        if "optimizer" in config.search.kinds and os.environ.get("MIHA_OPTIMIZER_SWITCH", "0") == "1":
            kinds = (mdl.initial_genes(model, self.spec, config, self.choices).optimizer, *config.search.optimizers)
        self.pool = mdl.ModelPool(model, self.spec, self.trainer.steps_per_execution(), self.trainer.jit(model),
                                  sample=(data.x[:1], data.y[:1]), choices=self.choices, optimizers=kinds)
        self.main = None  # the pooled model that holds the main line now
        # a model of Keras' own layers draws only seeded, stateless randomness: reseeding may keep
        # TensorFlow's kernels (see models.set_random_seed)
        self._keras_layers_only = mdl.uses_only_keras_layers(model)

    @classmethod
    def prepare(cls, model, data: Dataset, config: RunConfig, cancel: CancelToken,
                search_context: dict[str, Any] | None = None) -> KerasBackend:
        """Check the data against the model, make the validation split, and build the set-up.

        Raises:
            InputError: the data does not fit the model, or the batch size does not fit the data.
        """
        from . import models as mdl

        mdl.configure_tensorflow()
        import keras

        keras.utils.set_random_seed(config.seed)
        mdl.refuse_mixed_precision(model)
        spec = mdl.compile_spec(model, config)
        info = mdl.summarize(model)
        validate(data, info.input_shape, info.output_shape, spec.task)
        from .calibration import CALIBRATED

        if config.fitness_metric not in ("loss", "auto", CALIBRATED):  # auto and calibrated: after the split
            names = [mdl._metric_name(m) for m in spec.metrics]
            if config.fitness_metric not in names:
                raise InputError(f"fitness_metric {config.fitness_metric!r} is not one of the model's compiled "
                                 f"metrics ({', '.join(names) or 'none'}); compile the model with it, or use loss")
        data = data.with_validation_split(config.validation_split, config.seed)
        if config.fitness_metric == CALIBRATED:
            if not calibration_applies(spec.loss):
                raise InputError(f"fitness_metric {CALIBRATED!r} scores a classifier's cross-entropy after "
                                 f"temperature scaling; this model's loss ({mdl.loss_name(spec.loss)}) is not a "
                                 "cross-entropy. Use loss, or a compiled metric")
            if not data.has_validation:
                raise InputError(f"fitness_metric {CALIBRATED!r} needs a validation split, and this dataset has "
                                 f"none (validation_split {config.validation_split} of {data.n_train} samples is "
                                 "under one); give validation data or a larger validation_split")
        if config.batch_size is not None and config.batch_size > data.n_train:
            raise InputError(f"batch_size {config.batch_size} is larger than the {data.n_train} training samples; "
                             f"choose at most {data.n_train}")
        return cls(model, data, config, cancel, search_context)

    # -- what the loop asks once --------------------------------------------------------------
    def initial_genes(self) -> Genes:
        from . import models as mdl

        return mdl.initial_genes(self.model, self.spec, self.config, self.choices)

    def versions(self) -> dict[str, str]:
        import keras
        import tensorflow as tf

        return {"keras": keras.__version__, "tensorflow": tf.__version__}

    def search_context(self) -> dict[str, Any]:
        """What a resume (or a worker) needs to mutate and compile exactly as this run does: the
        activation slots and the user's optimizer settings, both taken from the model as first given."""
        import keras

        template = self.spec.optimizer_template
        return {"choices": {p: list(a) for p, a in self.choices.items()},
                "optimizer_template": keras.saving.serialize_keras_object(template) if template is not None else None}

    def param_count(self) -> int:
        return int(self.model.count_params())

    # -- the main line ------------------------------------------------------------------------
    def start(self, genes: Genes) -> None:
        """Put the given model's state (weights and optimizer) on the main line."""
        from . import models as mdl

        self.main = self.pool.get(genes)
        mdl.restore(self.main, mdl.snapshot(self.model, genes), genes)

    def train_main(self, genes: Genes, epochs: int, on_epoch: EpochCallback, shuffle: int,
                   lr_schedule: list[float] | None = None) -> FitResult:
        """Train the main line; ``shuffle`` (see :func:`main_shuffle`) fixes the order of its batches,
        so a resumed run shuffles exactly as an uninterrupted one; ``lr_schedule`` gives each epoch's
        learning rate (the final phase's anneal), after which the genes' rate is set back."""
        from . import models as mdl

        mdl.reset_seed_generators(self.main, self.config.seed * 100_003 + shuffle)
        try:
            return self._fit(self.main, genes, epochs, on_epoch, shuffle=shuffle, lr_schedule=lr_schedule)
        finally:
            if lr_schedule is not None:
                self.main.optimizer.learning_rate = float(genes.learning_rate)

    def snapshot(self, genes: Genes) -> Snapshot:
        from . import models as mdl

        return mdl.snapshot(self.main, genes)

    def set_main(self, snap: Snapshot, genes: Genes, weights: list[np.ndarray] | None = None) -> None:
        from . import models as mdl

        self.main = self.pool.get(genes)
        mdl.restore(self.main, snap, genes, weights=weights)

    def save_main(self, path: Path) -> None:
        from . import models as mdl

        mdl.save_model(self.main, path)

    def main_archive_writer(self):
        """A function ``write(path)`` of the main line's archive as it is now, to run later (see
        :func:`miha_engine.models.archive_writer`)."""
        from . import models as mdl

        return mdl.archive_writer(self.main)

    def test_metrics(self) -> dict[str, float]:
        if not self.data.has_test:
            return {}
        return self.trainer.evaluate(self.main, self.data.x_test, self.data.y_test)

    def archive_test_metrics(self, path: Path) -> dict[str, float]:
        """Test metrics of a saved archive of this run (model_best), loaded safely."""
        from . import models as mdl

        if not self.data.has_test:
            return {}
        model = mdl.load_model(path)
        return self.trainer.evaluate(model, self.data.x_test, self.data.y_test)

    def reseed(self, seed: int) -> None:
        from . import models as mdl

        mdl.set_random_seed(seed, keep_kernels=self._keras_layers_only)

    # -- members ------------------------------------------------------------------------------
    def train_member(self, genes: Genes, parent: Snapshot, cycle: int, index: int, epochs: int,
                     on_epoch: EpochCallback) -> tuple[FitResult, _LiveMember]:
        """Start from ``parent`` with ``genes`` on a pooled model and train ``epochs`` epochs, seeded by
        (seed, cycle, index) alone; the main line's shuffles go on as if no member ran.

        The returned member lives in the pool: write or snapshot it before asking for the next."""
        from . import models as mdl

        model = self.pool.get(genes)
        mdl.restore(model, parent, genes)
        keras_seed, shuffle = member_seeds(self.config.seed, cycle, index)
        self.reseed(keras_seed)
        mdl.reset_seed_generators(model, keras_seed)
        result = self._fit(model, genes, epochs, on_epoch, shuffle=shuffle)
        return result, _LiveMember(model, genes)

    def holdout_loss(self, snap: Snapshot, genes: Genes, weights: list[np.ndarray] | None = None,
                     metric: str = "loss") -> float:
        """The loss (or a compiled metric) of a state on the validation split (the training data when
        there is none)."""
        from . import models as mdl

        model = self.pool.get(genes)
        mdl.restore(model, snap, genes, weights=weights)
        if self.data.has_validation:
            return self.trainer.validation_loss(model, metric)
        return self.trainer.evaluate(model, self.data.x, self.data.y).get(metric, float("nan"))

    def last_epoch_metrics(self) -> dict[str, float]:
        """The compiled metrics of the epoch that ended last (main line or member)."""
        return dict(self.trainer.last_metrics)

    # -- shared --------------------------------------------------------------------------------
    def _fit(self, model, genes: Genes, epochs: int, on_epoch: EpochCallback, shuffle: int | None = None,
             lr_schedule: list[float] | None = None) -> FitResult:
        result = self.trainer.fit(model, genes.batch_size, epochs, on_epoch, spec=self.spec, shuffle=shuffle,
                                  lr_schedule=lr_schedule)
        if self.trainer.xla_failed and self.pool.jit is not False:
            self.pool.disable_jit()
        return result

    def pop_notes(self) -> list[str]:
        notes, self.trainer.notes[:] = list(self.trainer.notes), []
        return notes

    @property
    def models_built(self) -> int:
        """Models compiled (and so traced) in this process: what a recycle counts."""
        return self.pool.built

    @property
    def models_evicted(self) -> int:
        """Models the pool let go (their memory comes back at the next garbage collection)."""
        return self.pool.evicted
