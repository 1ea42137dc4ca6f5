"""The run configuration: a frozen, validated dataclass that round-trips through JSON and TOML."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Optimizers MIHA can switch to, with the learning rate each starts from when switched to.
OPTIMIZER_DEFAULT_LR: dict[str, float] = {
    "sgd": 0.01,
    "adam": 1e-3,
    "adamw": 1e-3,
    "rmsprop": 1e-3,
    "adadelta": 1.0,
    "nadam": 1e-3,
    "adamax": 2e-3,
    "adagrad": 0.01,
}

HIDDEN_ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "leaky_relu",
    "softplus",
    "mish",
)

#: Activations Keras knows by name; a layer whose activation is not one of these is left alone.
KNOWN_ACTIVATIONS = {
    "relu", "elu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid", "hard_sigmoid", "leaky_relu",
    "softplus", "softsign", "mish", "linear", "softmax", "relu6", "exponential", "hard_silu",
    "hard_swish", "log_softmax", "celu", "glu", "tanh_shrink", "hard_tanh", "sparse_plus",
    "sparsemax", "squareplus", "soft_shrink", "hard_shrink", "threshold", "log_sigmoid",
}

GENE_KINDS: tuple[str, ...] = ("optimizer", "activation", "batch_size", "learning_rate", "weight_decay", "dropout",
                                "label_smoothing")

#: "log_slope" measures the fall from the parent's loss at the fork (L0, the same for every member);
#: "log_slope_l1" from each member's own first epoch (L1, the first wave's formula); "original" is
#: the article's L1 - 2 Ln.
FITNESS_FORMULAS: tuple[str, ...] = ("log_slope", "log_slope_l1", "original")

#: How a cycle chooses: "noise" keeps the control (the parent's genes) unless a mutant beats it by
#: more than the noise the run measures; "fittest" takes the fittest member whatever the margin.
SELECTION_RULES: tuple[str, ...] = ("noise", "fittest")
#: Options added after runs were already being made, with the value that reproduces how such an older
#: run behaved: a resume or a fork of it reads its stored configuration with these filled in
#: (``RunConfig.from_stored``), while a new run gets the option's default.
STORED_DEFAULTS: dict[str, object] = {"noise_false_switch": 0.0}


#: What a crossover child's weights are: the fitter parent's, or the mean of both parents'.
CROSSOVER_WEIGHTS: tuple[str, ...] = ("fitter", "average")

#: The batch size a run starts from when neither the configuration nor the model says.
DEFAULT_BATCH_SIZE = 32


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING,
           label: str | None = None, short: str | None = None, flag: str | None = None,
           flags: dict[str, Any] | None = None, choices: tuple | None = None,
           bounds: tuple[float, float] | None = None, resumable: bool = False, live: bool = False,
           cli: bool = True) -> Any:
    """A configuration field and what every front end needs to know of it, in one place.

    Args:
        help: one sentence for ``--help`` and the app's tooltip.
        label: the app's label (fields with a label get a slider in the app).
        short, flag: the CLI's short option and long option (default ``--name-with-dashes``).
        flags: instead of one option, several switches that each set a value (``--xla``/``--no-xla``).
        choices: the values allowed (the CLI offers exactly these).
        bounds: the range the app's widget offers.
        resumable: ``miha resume`` (and the app's Resume) may change it: it changes how members
            train, never the genes or the lineage.
        live: it may change while the run goes (the app's sliders stay live; ``miha resume`` takes
            it too), applied from the next cycle and journalled.
        cli: False for a field the CLI sets another way (``search`` has its own options).
    """
    meta = {"help": help, "label": label, "short": short, "flag": flag, "flags": flags, "choices": choices,
            "bounds": bounds, "resumable": resumable, "live": live, "cli": cli}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _seq(name: str, value: Any, kind: type, length: int | None = None) -> tuple:
    """A list/tuple of ``kind`` values (of ``length`` items), or a ConfigError naming the field."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{name} must have {length} items (low, high), got {value!r}")
    out = []
    for v in value:
        if kind is str:
            ok = isinstance(v, str)
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if kind is int:
                ok = ok and float(v).is_integer()
        if not ok:
            raise ConfigError(f"{name} must hold {kind.__name__} values, got {v!r}")
        out.append(kind(v))
    return tuple(out)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SearchSpace:
    """Which genes may mutate, and to what.

    Attributes:
        kinds: the gene kinds that may mutate (any of ``GENE_KINDS``).
        optimizers: optimizer names a member may switch to.
        hidden_activations: activations a hidden layer may take.
        batch_size_range: inclusive bounds for the batch size.
        learning_rate_range: inclusive bounds for the learning rate.
        lr_factors: the multiplicative steps of a learning-rate mutation (PBT style).
        weight_decay_range: bounds of a non-zero weight decay (a mutation may also turn it off).
        dropout_range: bounds of a Dropout layer's rate.
        label_smoothing_range: bounds of the loss's label smoothing.
    """

    kinds: tuple[str, ...] = GENE_KINDS
    optimizers: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop", "adadelta", "nadam")
    hidden_activations: tuple[str, ...] = HIDDEN_ACTIVATIONS
    batch_size_range: tuple[int, int] = option((16, 256), help="inclusive bounds for the batch size",
                                               bounds=(1, 65536))
    learning_rate_range: tuple[float, float] = option((1e-5, 1.0), help="inclusive bounds for the learning rate",
                                                      bounds=(1e-6, 10.0))
    lr_factors: tuple[float, ...] = (0.5, 0.8, 1.25, 2.0)
    weight_decay_range: tuple[float, float] = option((1e-3, 1.0), help="bounds of a non-zero weight decay "
                                                     "(decoupled: each step takes w·decay·lr off every weight)",
                                                     bounds=(1e-6, 10.0))
    dropout_range: tuple[float, float] = option((0.0, 0.6), help="bounds of a Dropout layer's rate",
                                                bounds=(0.0, 0.95))
    label_smoothing_range: tuple[float, float] = option((0.0, 0.2), help="bounds of the loss's label smoothing",
                                                        bounds=(0.0, 0.5))

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _seq("search.kinds", self.kinds, str))
        object.__setattr__(self, "optimizers", tuple(o.lower() for o in _seq("search.optimizers", self.optimizers, str)))
        object.__setattr__(self, "hidden_activations", _seq("search.hidden_activations", self.hidden_activations, str))
        object.__setattr__(self, "batch_size_range", _seq("search.batch_size_range", self.batch_size_range, int, 2))
        object.__setattr__(self, "learning_rate_range", _seq("search.learning_rate_range", self.learning_rate_range, float, 2))
        object.__setattr__(self, "lr_factors", _seq("search.lr_factors", self.lr_factors, float))
        for name in ("weight_decay_range", "dropout_range", "label_smoothing_range"):
            object.__setattr__(self, name, _seq(f"search.{name}", getattr(self, name), float, 2))
        for kind in self.kinds:
            _check(kind in GENE_KINDS, f"search: unknown gene kind {kind!r}; choose from {', '.join(GENE_KINDS)}")
        _check(len(self.kinds) > 0, "search: the search space is empty; enable at least one of " + ", ".join(GENE_KINDS))
        for name in self.optimizers:
            _check(
                name in OPTIMIZER_DEFAULT_LR,
                f"search: unknown optimizer {name!r}; choose from {', '.join(OPTIMIZER_DEFAULT_LR)}",
            )
        if "optimizer" in self.kinds:
            _check(len(self.optimizers) >= 1, "search: optimizer mutation is on but no optimizer is allowed")
        if "activation" in self.kinds:
            _check(len(self.hidden_activations) >= 1, "search: activation mutation is on but no activation is allowed")
        output_only = sorted(set(self.hidden_activations) & {"softmax", "log_softmax", "linear"})
        _check(not output_only, f"search: {', '.join(output_only)} cannot be a hidden layer's activation (softmax and "
               "log_softmax belong to an output layer, and linear layers are left alone); choose from "
               f"{', '.join(HIDDEN_ACTIVATIONS)}")
        unknown_acts = [a for a in self.hidden_activations if a not in KNOWN_ACTIVATIONS]
        _check(not unknown_acts, f"search: unknown activation(s) {', '.join(unknown_acts)}; choose from "
               f"{', '.join(sorted(KNOWN_ACTIVATIONS - {'softmax', 'log_softmax', 'linear'}))}")
        lo, hi = self.batch_size_range
        _check(1 <= lo <= hi, f"search: batch_size_range must be 1 <= low <= high, got {lo}..{hi}")
        lo_lr, hi_lr = self.learning_rate_range
        _check(
            0 < lo_lr <= hi_lr and math.isfinite(hi_lr),
            f"search: learning_rate_range must be 0 < low <= high, got {lo_lr}..{hi_lr}",
        )
        _check(all(f > 0 and f != 1 for f in self.lr_factors), "search: lr_factors must be positive and not 1")
        lo_wd, hi_wd = self.weight_decay_range
        _check(0 < lo_wd <= hi_wd, f"search: weight_decay_range must be 0 < low <= high, got {lo_wd}..{hi_wd}")
        lo_d, hi_d = self.dropout_range
        _check(0 <= lo_d <= hi_d < 1, f"search: dropout_range must be 0 <= low <= high < 1, got {lo_d}..{hi_d}")
        lo_s, hi_s = self.label_smoothing_range
        _check(0 <= lo_s <= hi_s < 1,
               f"search: label_smoothing_range must be 0 <= low <= high < 1, got {lo_s}..{hi_s}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f"search: unknown option(s) {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


#: Where a population's members train (see ``RunConfig.evaluator``): each name and the class that
#: implements :class:`miha_engine.evaluators.Evaluator` for it, as "module:Class", imported only
#: when chosen.  A new evaluator registers here; the runner does not change.
EVALUATOR_CLASSES: dict[str, str] = {
    "local": "miha_engine.evaluators:LocalEvaluator",
    "ray": "miha_engine.ray_evaluator:RayEvaluator",
}
EVALUATORS = tuple(EVALUATOR_CLASSES)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a MIHA run.

    Attributes:
        runup_epochs: m, epochs before the first cycle and again after the last.
        candidate_epochs: n, epochs each population member trains.
        fixing_epochs: k, epochs the chosen member trains after each cycle.
        cycles: c, number of population cycles.
        population_size: pop_size, members per cycle.
        batch_size: initial batch size (None: 32).
        seed: seeds numpy, Keras and the mutation stream.
        search: the search space.
        crossover: build a child of the two fittest instead of plain selection.
        crossover_weights: "fitter" (the fitter parent's weights) or "average".
        control_member: member 0 of each population keeps the parent's genes (with pop_size >= 2).
        selection: "noise" (a mutant must beat the control by more than the measured noise) or
            "fittest".
        noise_false_switch: with the noise rule, the chance that noise alone lets the best of M
            mutants replace the control: the margin is z noise units with P(max of M normals > z)
            equal to it (at least one unit); 0.1 by default; 0 asks each mutant to beat one unit
            (the rule before part 6, which let a null mutant win half the cycles of a pop of 5).
        explore_on_plateau: after a cycle where every member tied with the control, draw fresh
            values and two-gene moves.
        fitness: "log_slope" (default) or "original" (first - 2*last).
        fitness_slope_weight: weight of the decrease term in "log_slope".
        fitness_metric: what fitness and model_best score: "auto" (the default: "calibrated_loss" for
            a classifier with a validation split, else "loss"), "loss", "calibrated_loss" (see
            ``miha_engine.calibration``) or a compiled metric such as "accuracy".
        soup: after selection, average the winner's weights with other members' when that lowers
            the validation score (a greedy soup; off by default, see docs/architecture.md).
        validation_split: fraction of the training data held out when no x_val is given.
        drop_intermediate: delete the intermediate archives at the end (keep model_final and logs).
        steps_per_execution: batches per compiled call ("auto" or an int).
        jit_compile: XLA ("auto", True, False).
        evaluator: where each population's members train: "local" (this process, one after the
            other; the default) or "ray" (Ray workers, in parallel; needs ``pip install 'miha[ray]'``).
        ray_address: the Ray cluster to join ("auto", "HOST:PORT", "ray://HOST:PORT"); None starts
            a local Ray instance on this machine.
        ray_cpus_per_member, ray_gpus_per_member: the resources each member's worker asks for; a GPU
            fraction below 1 lets several members share one GPU (used only when the cluster has GPUs).
        ray_max_retries: how many times a member whose worker died is started again before it
            scores worst.
        loss, optimizer: used only for uncompiled models.
    """

    runup_epochs: int = option(2, label="m  run-up epochs", short="-m", bounds=(0, 50),
                               help="epochs before the first cycle, and again after the last (m)")
    candidate_epochs: int = option(1, label="n  member epochs", short="-n", bounds=(1, 20), live=True,
                                   help="epochs each population member trains (n)")
    fixing_epochs: int = option(1, label="k  fixing epochs", short="-k", bounds=(0, 20), live=True,
                                help="epochs the chosen member trains after each cycle (k)")
    cycles: int = option(2, label="c  cycles", short="-c", bounds=(0, 50), help="number of population cycles (c)")
    population_size: int = option(3, label="pop_size", short="-p", bounds=(1, 20), live=True,
                                  help="members per population (pop_size)")
    batch_size: int | None = option(None, bounds=(1, 65536),
                                    help=f"initial batch size (default {DEFAULT_BATCH_SIZE})")
    seed: int = option(0, bounds=(0, 2**31 - 1), help="seeds numpy, Keras and the mutations: the same seed gives "
                       "the same mutations")
    search: SearchSpace = option(factory=SearchSpace, cli=False, live=True, help="the search space")
    crossover: bool = option(False, help="cross over the two fittest members instead of plain selection")
    crossover_weights: str = option("fitter", choices=CROSSOVER_WEIGHTS,
                                    help="a crossover child's weights: the fitter parent's, or the average of both")
    control_member: bool = option(True, flags={"--control": True, "--no-control": False},
                                  help="member 0 of each population keeps the parent's genes (the control; "
                                  "on by default, needs pop_size >= 2)")
    selection: str = option("noise", choices=SELECTION_RULES,
                            help="noise: a mutant replaces the control only when it is fitter by more than the "
                            "noise the run measures; fittest: the fittest member always wins")
    noise_false_switch: float = option(0.1, bounds=(0.0, 0.5),
                                       help="with the noise rule: the chance that noise alone lets the best of the "
                                       "cycle's mutants replace the control (the margin grows with the number of "
                                       "mutants); 0 asks each mutant to beat one noise unit")
    explore_on_plateau: bool = option(True, flags={"--explore": True, "--no-explore": False},
                                      help="when every member ties with the control, the next population draws "
                                      "fresh values and two-gene moves")
    soup: bool = option(False, flags={"--soup": True, "--no-soup": False},
                        help="after selection, average the winner's weights with other members' (same "
                        "activations) when that lowers the validation score: a greedy soup")
    fitness: str = option("log_slope", choices=FITNESS_FORMULAS, help="the fitness formula")
    final_anneal: float = option(0.01, bounds=(0.0, 1.0),
                                 help="the final phase anneals the learning rate along a cosine, from the "
                                 "lineage's rate down to this fraction of it; 1 keeps it constant")
    fitness_slope_weight: float = option(1.0, help="weight of the loss's fall in the log_slope fitness")
    fitness_metric: str = option("auto", help="what fitness and model_best score: auto (calibrated_loss for a "
                                 "classifier, else loss); the loss; calibrated_loss (a classifier's validation cross-entropy after temperature scaling, which follows "
                                 "accuracy once the model overfits); or a compiled metric such as accuracy (its "
                                 "direction is known: accuracy scores its error 1 - accuracy)")
    validation_split: float = option(0.1, help="fraction of the training data held out when the dataset has "
                                     "no validation split")
    drop_intermediate: bool = option(False, help="delete the intermediate archives at the end (keep "
                                     "model_final and the logs)")
    tensorboard: bool = option(False, resumable=True,
                               help="write TensorBoard event files live into RUN_DIR/tensorboard (pip install "
                               "'miha[tensorboard]'); 'miha tensorboard' writes them after the fact")
    steps_per_execution: int | str = option("auto", resumable=True, bounds=(0, 1024),
                                            help="batches per compiled call: auto or a number (Stop is checked "
                                            "between calls)")
    jit_compile: bool | str = option("auto", resumable=True, flags={"--xla": True, "--no-xla": False},
                                     help="compile training steps with XLA (faster epochs, slower start for every "
                                     "new model and batch size); off by default")
    recycle_after: int = option(12, resumable=True, bounds=(0, 1000),
                                help="restart the engine's process after this many newly traced models (the "
                                "run resumes exactly from its checkpoint; TensorFlow's memory comes back); "
                                "0 never (recycle_rss_mb is the memory trigger); the CLI and the app do it, the Python API does not; Ray workers are "
                                "replaced after as many, whatever started the run")
    recycle_rss_mb: int = option(40, resumable=True, bounds=(0, 1_000_000),
                                 help="also restart the engine's process when its memory (RSS) has grown this many "
                                 "MB (at least four copies of the weights) since the end of its second cycle, "
                                 "checked from its fourth, while 10 or more cycles remain; 0 never")
    evaluator: str = option("local", choices=EVALUATORS, resumable=True,
                            help="where each population's members train: local (this process) or ray "
                            "(Ray workers in parallel; pip install 'miha[ray]')")
    ray_address: str | None = option(None, resumable=True,
                                     help="the Ray cluster to join, auto or HOST:PORT (default: start a local Ray "
                                     "instance); implies the ray evaluator")
    ray_cpus_per_member: float = option(1.0, resumable=True, help="CPUs each member's Ray worker asks for (and its "
                                        "TensorFlow threads)")
    ray_gpus_per_member: float = option(0.0, resumable=True, bounds=(0.0, 8.0),
                                        help="GPUs each member asks for when the cluster has GPUs, e.g. 0.25 to "
                                        "share one GPU among four")
    ray_max_retries: int = option(2, resumable=True, flag="--ray-retries",
                                  help="times a member whose worker died is started again before it scores worst")
    loss: str | None = option(None, help="loss for an uncompiled model (e.g. sparse_categorical_crossentropy)")
    optimizer: str | None = option(None, help="initial optimizer for an uncompiled model")

    def __post_init__(self) -> None:
        if isinstance(self.search, dict):
            object.__setattr__(self, "search", SearchSpace.from_dict(self.search))
        _check(isinstance(self.search, SearchSpace), f"search must be a table of options, got {self.search!r}")
        for name in ("crossover", "control_member", "drop_intermediate", "tensorboard", "explore_on_plateau", "soup"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
               f"seed must be a whole number >= 0, got {self.seed!r}")
        _check(_number(self.validation_split), f"validation_split must be a number in [0, 1), got {self.validation_split!r}")
        _check(_number(self.final_anneal) and 0 < self.final_anneal <= 1,
               f"final_anneal must be a fraction in (0, 1] (1: no anneal), got {self.final_anneal!r}")
        _check(_number(self.fitness_slope_weight) and self.fitness_slope_weight >= 0,
               f"fitness_slope_weight must be a number >= 0, got {self.fitness_slope_weight!r}")
        _check(isinstance(self.fitness_metric, str) and self.fitness_metric.strip() != "",
               f"fitness_metric must be auto, loss, calibrated_loss or the name of a compiled metric, "
               f"got {self.fitness_metric!r}")
        if self.fitness_metric not in ("loss", "auto"):
            from .fitness import metric_direction

            _check(metric_direction(self.fitness_metric) is not None,
                   f"fitness_metric {self.fitness_metric!r}: MIHA does not know whether higher or lower is better; "
                   "use loss, or a metric such as accuracy, auc, precision, recall, mae or mse")
        for name in ("loss", "optimizer"):
            _check(getattr(self, name) is None or isinstance(getattr(self, name), str),
                   f"{name} must be a name, got {getattr(self, name)!r}")
        for name in ("runup_epochs", "candidate_epochs", "fixing_epochs", "cycles"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                   f"{name} must be a whole number >= 0, got {value!r}")
        _check(self.candidate_epochs >= 1, f"candidate_epochs (n) must be >= 1, got {self.candidate_epochs}")
        p = self.population_size
        _check(isinstance(p, int) and not isinstance(p, bool) and p >= 1, f"population_size must be >= 1, got {p!r}")
        if self.crossover:
            _check(p >= 2, "crossover needs population_size >= 2")
        _check(isinstance(self.selection, str) and self.selection in SELECTION_RULES,
               f"selection must be one of {', '.join(SELECTION_RULES)}, got {self.selection!r}")
        _check(isinstance(self.noise_false_switch, (int, float)) and not isinstance(self.noise_false_switch, bool)
               and 0.0 <= self.noise_false_switch <= 0.5,
               f"noise_false_switch must be in [0, 0.5] (a chance; above 0.5 the margin is one noise unit, as "
               f"with 0), got {self.noise_false_switch!r}")
        if self.batch_size is not None:
            _check(isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and self.batch_size >= 1,
                   f"batch_size must be >= 1, got {self.batch_size!r}")
        _check(isinstance(self.crossover_weights, str) and self.crossover_weights in CROSSOVER_WEIGHTS,
               f"crossover_weights must be 'fitter' or 'average', got {self.crossover_weights!r}")
        _check(isinstance(self.fitness, str) and self.fitness in FITNESS_FORMULAS,
               f"fitness must be one of {', '.join(FITNESS_FORMULAS)}, got {self.fitness!r}")
        _check(0.0 <= self.validation_split < 1.0,
               f"validation_split must be in [0, 1), got {self.validation_split}")
        _check(isinstance(self.recycle_after, int) and not isinstance(self.recycle_after, bool)
               and self.recycle_after >= 0, f"recycle_after must be a whole number >= 0, got {self.recycle_after!r}")
        spe = self.steps_per_execution
        _check(spe == "auto" or (isinstance(spe, int) and not isinstance(spe, bool) and spe >= 1),
               f"steps_per_execution must be 'auto' or an int >= 1, got {spe!r}")
        _check(isinstance(self.jit_compile, (str, bool)) and self.jit_compile in ("auto", True, False),
               f"jit_compile must be 'auto', true or false, got {self.jit_compile!r}")
        _check(isinstance(self.evaluator, str) and self.evaluator in EVALUATOR_CLASSES,
               f"evaluator must be one of {', '.join(EVALUATOR_CLASSES)}, got {self.evaluator!r}")
        _check(self.ray_address is None or (isinstance(self.ray_address, str) and self.ray_address.strip() != ""),
               f"ray_address must be 'auto', HOST:PORT or ray://HOST:PORT, got {self.ray_address!r}")
        _check(_number(self.ray_cpus_per_member) and self.ray_cpus_per_member > 0,
               f"ray_cpus_per_member must be a number > 0, got {self.ray_cpus_per_member!r}")
        _check(_number(self.ray_gpus_per_member) and 0 <= self.ray_gpus_per_member,
               f"ray_gpus_per_member must be a number >= 0 (a fraction of one GPU, or whole GPUs), got {self.ray_gpus_per_member!r}")
        _check(isinstance(self.ray_max_retries, int) and not isinstance(self.ray_max_retries, bool)
               and 0 <= self.ray_max_retries <= 100,
               f"ray_max_retries must be a whole number in [0, 100], got {self.ray_max_retries!r}")

    @staticmethod
    def epoch_counts(m: int, n: int, k: int, c: int, pop_size: int) -> tuple[int, int]:
        """(compute epochs 2m + c(pop_size*n + k), lineage epochs 2m + c(n + k)): the one formula."""
        return 2 * m + c * (pop_size * n + k), 2 * m + c * (n + k)

    def _counts(self) -> tuple[int, int]:
        return self.epoch_counts(self.runup_epochs, self.candidate_epochs, self.fixing_epochs, self.cycles,
                                 self.population_size)

    @property
    def total_epochs(self) -> int:
        """Compute spent: 2m + c(pop_size*n + k)."""
        return self._counts()[0]

    @property
    def lineage_epochs(self) -> int:
        """Epochs in the final model's history: 2m + c(n + k)."""
        return self._counts()[1]

    @classmethod
    def options(cls) -> dict[str, dataclasses.Field]:
        """Every field by name, with its front-end metadata (see :func:`option`)."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def resumable_fields(cls) -> tuple[str, ...]:
        """The fields a resume may change: how members train, never the genes or the lineage."""
        return tuple(name for name, f in cls.options().items() if f.metadata.get("resumable"))

    @classmethod
    def live_fields(cls) -> tuple[str, ...]:
        """The fields that may change while a run goes, applied from the next cycle."""
        return tuple(name for name, f in cls.options().items() if f.metadata.get("live"))

    def remaining_epochs(self, from_cycle: int) -> tuple[int, int]:
        """(compute, lineage) epochs of cycles ``from_cycle``..c and the final phase."""
        left = max(0, self.cycles - from_cycle + 1)
        return (left * (self.population_size * self.candidate_epochs + self.fixing_epochs) + self.runup_epochs,
                left * (self.candidate_epochs + self.fixing_epochs) + self.runup_epochs)

    @classmethod
    def schedule_fields(cls) -> tuple[str, ...]:
        """m, n, k, c, pop_size: the fields the app shows as sliders."""
        return tuple(name for name, f in cls.options().items() if f.metadata.get("label"))

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["search"] = self.search.to_dict()
        return out

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> RunConfig:
        """A configuration stored in a run folder (``run.json``, the journal): an option added after
        the run was made takes the value that reproduces how that run chose (see
        :data:`STORED_DEFAULTS`), so a resume or a fork of an old run goes on as it started."""
        return cls.from_dict({**STORED_DEFAULTS, **data})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f"config: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        data = dict(data)
        if "search" in data and isinstance(data["search"], dict):
            data["search"] = SearchSpace.from_dict(data["search"])
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - defensive
            raise ConfigError(f"config: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a configuration from a ``.toml`` or ``.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".toml":
                if sys.version_info >= (3, 11):
                    import tomllib
                else:  # pragma: no cover
                    import tomli as tomllib
                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a table of options")
        return cls.from_dict(data)
