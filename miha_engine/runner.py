"""The MIHA loop: run-up, c cycles of population → train → fitness → select → fix, then final.

Policy (mutation, fitness, selection) lives in pure modules; this module applies it to Keras models,
drives the :class:`~miha_engine.training.Trainer`, writes the run folder and emits events.
"""

from __future__ import annotations

import gc
import math
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import events as ev
from .config import RunConfig
from .data import Dataset, from_arrays, load_dataset, validate
from .errors import Cancelled, DivergedError, InputError, MihaError, RunFolderError
from .evaluators import MemberJob, make_evaluator
from .fitness import fitness
from .genes import Genes
from .mutation import combine, mutate
from .runlog import RunFolder
from .training import CancelToken, Trainer


@dataclass
class RunResult:
    """What a finished (or stopped) run left behind."""

    run_dir: Path
    status: str
    final_model: Path | None
    genes: Genes | None
    history: list[dict[str, Any]] = field(default_factory=list)
    population: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


def default_run_dir(base: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"miha-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = Path(base) / f"miha-{stamp}-{i}"
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from . import __version__

    return {"miha": __version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _as_dataset(data: Dataset | str | Path | tuple, target: str | None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return load_dataset(data, target=target)
    if isinstance(data, tuple) and len(data) in (2, 4, 6):
        return from_arrays(*data)
    raise InputError("data must be a Dataset, a file path, or a tuple (x, y[, x_val, y_val[, x_test, y_test]])")


class _Run:
    def __init__(self, folder: RunFolder, config: RunConfig, listeners: Iterable[ev.Listener],
                 cancel: CancelToken | None):
        self.folder = folder
        self.config = config
        self.listeners = list(listeners)
        self.cancel = cancel or CancelToken()
        self.history: list[dict[str, Any]] = []
        self.population: dict[str, Any] = {}
        self.step = 0
        self.t_start = time.perf_counter()
        self.elapsed_before = 0.0
        self.model = None
        self.genes: Genes | None = None
        #: the archive of the main model as it is now (what remote members start from)
        self.main_archive: Path | None = None
        self.unsafe_model = False
        self.evaluator = make_evaluator(config)

    # -- events -----------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        try:
            self.folder.append_event(event)
        except OSError as exc:
            raise RunFolderError(f"cannot write to the run folder {self.folder.root}: {exc.strerror or exc}") from exc
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not end the run
                print(f"miha: a listener failed on {event.kind}: {exc}", file=sys.stderr)

    def note(self, message: str) -> None:
        self.emit(ev.Note(message=message))

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self, model, data: Dataset) -> None:
        from . import models as mdl

        cfg = self.config
        self.device = mdl.configure_tensorflow()
        import keras

        keras.utils.set_random_seed(cfg.seed)
        self.spec = mdl.compile_spec(model, cfg)
        info = mdl.summarize(model)
        validate(data, info.input_shape, info.output_shape, self.spec.task)
        data = data.with_validation_split(cfg.validation_split, cfg.seed)
        if cfg.batch_size is not None and cfg.batch_size > data.n_train:
            raise InputError(
                f"batch_size {cfg.batch_size} is larger than the {data.n_train} training samples; "
                f"choose at most {data.n_train}"
            )
        self.data = data
        self.choices, layer_notes = mdl.activation_choices(model, self.spec, cfg, data.y)
        self.layer_notes = layer_notes
        self.trainer = Trainer(data, cfg, self.cancel, cfg.seed)

    def search_context(self) -> dict[str, Any]:
        """What resume needs to mutate exactly as the original run would: the activation slots and
        the user's optimizer settings, both taken from the model as first given."""
        import keras

        template = self.spec.optimizer_template
        return {"choices": {p: list(a) for p, a in self.choices.items()},
                "optimizer_template": keras.saving.serialize_keras_object(template) if template is not None else None}

    def restore_search_context(self, context: dict[str, Any] | None) -> None:
        if not context:
            return
        import keras

        self.choices = {p: tuple(a) for p, a in context.get("choices", {}).items()}
        template = context.get("optimizer_template")
        self.spec.optimizer_template = keras.saving.deserialize_keras_object(template) if template else None

    def start_pool(self, model, genes: Genes) -> None:
        """Create the model pool and put ``model``'s state (weights, optimizer) on the main line."""
        from . import models as mdl

        spe = self.trainer.steps_per_execution(genes.batch_size)
        self.pool = mdl.ModelPool(model, genes, self.spec, spe, self.trainer.jit(model))
        self.model = self.pool.get(genes)
        mdl.restore(self.model, mdl.snapshot(model, genes), genes)

    def open_evaluator(self) -> None:
        """Start the evaluator (a Ray evaluator connects and ships the data here) and say where
        members train."""
        self.evaluator.open(self)
        if self.evaluator.name != "local":
            self.note(f"population members train on {self.evaluator.describe()}")

    def _after_fit(self) -> None:
        self._flush_trainer_notes()
        if self.trainer.xla_failed and self.pool.jit is not False:
            self.pool.disable_jit()

    # -- phases -----------------------------------------------------------------------------
    def _train_main(self, phase: str, cycle: int, epochs: int) -> None:
        """Train the main line; its epochs join the lineage."""
        genes = self.genes
        assert genes is not None

        def on_epoch(epoch: int, loss: float, val: float | None, seconds: float) -> None:
            self.step += 1
            self.history.append({"step": self.step, "phase": phase, "cycle": cycle, "epoch": epoch + 1,
                                 "loss": loss, "val_loss": val, "genes": genes.to_dict()})
            self.emit(ev.EpochEnded(phase=phase, cycle=cycle, member=None, epoch=epoch + 1,
                                    step=self.step, loss=loss, val_loss=val, seconds=seconds))

        result = self.trainer.fit(self.model, genes.batch_size, epochs, on_epoch, spec=self.spec)
        self._after_fit()
        self.folder.write_history(self.history)
        if result.diverged:
            raise DivergedError(
                f"the main model's loss became NaN/inf during the {phase} phase"
                + (f" of cycle {cycle}" if cycle else "")
                + "; the last good archive is kept. Lower the learning rate or check the data"
            )

    def _flush_trainer_notes(self) -> None:
        while self.trainer.notes:
            self.note(self.trainer.notes.pop(0))

    def _save(self, model, path: Path, description: str) -> None:
        """Save ``model`` (a Keras model, or an archive's bytes a worker sent back) atomically."""
        from . import models as mdl
        from .runlog import atomic_write_bytes

        try:
            if isinstance(model, bytes):
                atomic_write_bytes(path, model)
            else:
                mdl.save_model(model, path)
        except OSError as exc:
            raise RunFolderError(
                f"cannot save {path.name} in {path.parent}: {exc.strerror or exc}. "
                "Free some disk space (or choose another run folder), then 'miha resume' the run"
            ) from exc
        self.emit(ev.ArchiveSaved(path=str(path.relative_to(self.folder.root)), description=description))

    def _checkpoint(self, cycle: int) -> None:
        assert self.genes is not None
        self.folder.write_population(self.population)
        self.folder.write_state({
            "completed_cycle": cycle,
            "step": self.step,
            "genes": self.genes.to_dict(),
            "model": str((self.folder.model_path("init" if cycle == 0 else str(cycle))).relative_to(self.folder.root)),
            "elapsed_seconds": self.elapsed(),
        })

    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    def run_cycle(self, cycle: int) -> None:
        from . import models as mdl

        cfg = self.config
        parent_genes = self.genes
        assert self.model is not None and parent_genes is not None
        parent = mdl.snapshot(self.model, parent_genes)
        branch_step = self.step
        rng = np.random.default_rng([cfg.seed, cycle])
        has_val = self.data.has_validation
        entries: dict[str, Any] = {}
        self.population[str(cycle)] = entries
        # Every member's genes first, in order, from the seed: the same run on any evaluator.
        jobs: list[MemberJob] = []
        for i in range(cfg.population_size):
            if cfg.control_member and i == 0:
                genes, change = parent_genes, "control: unchanged"
            else:
                genes, change = mutate(parent_genes, cfg.search, rng, self.choices, self.data.n_train)
            jobs.append(MemberJob(i, genes, change))
        best: list[tuple[float, int, mdl.Snapshot]] = []  # the two fittest so far, as snapshots
        scores: list[float] = [-math.inf] * cfg.population_size
        curves: dict[int, tuple[list[float], list[float]]] = {}
        for out in self.evaluator.members(self, cycle, jobs, parent, branch_step):
            i, genes, change = out.job.index, out.job.genes, out.job.change
            curve = out.val_losses if has_val else out.losses
            score = fitness(curve, cfg.fitness, cfg.fitness_slope_weight)
            if out.failure:
                score = -math.inf
                self.note(f"cycle {cycle}, member {i} ({change}): {out.failure}; it scores worst and is never chosen")
            elif out.diverged:
                self.note(f"cycle {cycle}, member {i} ({change}): loss became NaN/inf; it scores worst and is never chosen")
            scores[i] = score
            curves[i] = (out.losses, out.val_losses)
            entry = {"genes": genes.to_dict(), "change": change, "losses": out.losses,
                     "val_losses": out.val_losses, "fitness": score if math.isfinite(score) else None,
                     "chosen": False}
            if out.where:
                entry["worker"] = out.where
            if out.failure:
                entry["failed"] = out.failure
            else:
                self._save(out.model if out.model is not None else out.archive,
                           self.folder.member_path(cycle, i), f"cycle {cycle}, member {i}: {change}")
            entries[str(i)] = entry
            self.folder.write_population(self.population)
            self.emit(ev.MemberTrained(cycle=cycle, member=i, genes=genes.to_dict(), change=change,
                                       losses=out.losses, val_losses=out.val_losses, fitness=score))
            # Ties go to the lower index, whatever order members finish in.
            if math.isfinite(score) and (len(best) < 2 or (-score, i) < (-best[-1][0], best[-1][1])):
                snap = out.snapshot if out.snapshot is not None else mdl.snapshot(out.model, genes)
                best.append((score, i, snap))
                best.sort(key=lambda t: (-t[0], t[1]))
                best = best[:2]
        entries_sorted = {k: entries[k] for k in sorted(entries, key=int)}
        entries.clear()
        entries.update(entries_sorted)
        import keras

        # the main line's randomness after a population does not depend on where members trained
        keras.utils.set_random_seed(cfg.seed * 100_003 + cycle * 1_000 + 999)

        weights = None
        if not best:
            decision = "every member diverged: the model from before the population is kept"
            self.note(f"cycle {cycle}: {decision}")
            winner, chosen = -1, parent
        else:
            _, winner, chosen = best[0]
            decision = f"selection: member {winner} ({entries[str(winner)]['change']})"
            if cfg.crossover and len(best) >= 2:
                decision, chosen, weights = self._crossover(cycle, parent_genes, best, curves, decision)
            entries[str(winner)]["chosen"] = True
            losses, vals = curves[winner]
            for e, loss in enumerate(losses):  # the winner's n epochs join the lineage
                self.step += 1
                self.history.append({"step": self.step, "phase": "member", "cycle": cycle, "epoch": e + 1,
                                     "loss": loss, "val_loss": vals[e] if vals else None,
                                     "genes": best[0][2].genes.to_dict()})
        self.genes = chosen.genes
        self.model = self.pool.get(self.genes)
        mdl.restore(self.model, chosen, self.genes, weights=weights)
        entries["_cycle"] = {"decision": decision, "winner": winner}
        del best, parent
        self.folder.write_population(self.population)
        self.folder.write_history(self.history)
        self.emit(ev.CycleDone(cycle=cycle, winner=winner, fitnesses=[s if math.isfinite(s) else None for s in scores],
                               decision=decision, genes=self.genes.to_dict()))
        if cfg.fixing_epochs:
            self._train_main("fixing", cycle, cfg.fixing_epochs)
        self._save(self.model, self.folder.model_path(str(cycle)), f"main model after cycle {cycle}")
        self.main_archive = self.folder.model_path(str(cycle))
        self._checkpoint(cycle)
        if cfg.drop_intermediate:
            self._drop_as_we_go(cycle)
        gc.collect()

    def _drop_as_we_go(self, cycle: int) -> None:
        """With drop_intermediate, free space after each checkpoint: this cycle's members and the
        previous main archives are no longer needed (resume starts from model_<cycle>)."""
        for p in self.folder.population_dir.glob(f"{cycle}_*_model.keras"):
            p.unlink(missing_ok=True)
        previous = ["source", "init"] + [str(c) for c in range(1, cycle)]
        for name in previous:
            self.folder.model_path(name).unlink(missing_ok=True)

    def _crossover(self, cycle, ancestor: Genes, best, curves, decision: str):
        """Child of the two fittest: the ancestor's genes with both mutations, the fitter parent's
        weights (or the average of both).  Kept only if its validation loss is no worse than the
        fitter parent's."""
        from . import models as mdl

        (_, ia, snap_a), (_, ib, snap_b) = best[0], best[1]
        ga = snap_a.genes
        child_genes = combine(ancestor, ga, snap_b.genes)
        if child_genes == ga:
            return f"{decision}; crossover with member {ib} adds nothing new", snap_a, None
        weights = None
        if self.config.crossover_weights == "average":
            weights = mdl.average_weights(snap_a.weights, snap_b.weights)
        child_snap = mdl.Snapshot(child_genes, snap_a.weights, snap_a.optimizer, snap_a.optimizer_vars)
        child = self.pool.get(child_genes)
        mdl.restore(child, child_snap, child_genes, weights=weights)
        if self.data.has_validation:
            child_val = self.trainer.validation_loss(child)
            parent_val = curves[ia][1][-1]
        else:
            child_val = self.trainer.evaluate(child, self.data.x, self.data.y)["loss"]
            parent_model = self.pool.get(ga)
            mdl.restore(parent_model, snap_a, ga)
            parent_val = self.trainer.evaluate(parent_model, self.data.x, self.data.y)["loss"]
            mdl.restore(child, child_snap, child_genes, weights=weights)
        if math.isfinite(child_val) and child_val <= parent_val:
            self._save(child, self.folder.population_dir / f"{cycle}_child_model.keras",
                       f"cycle {cycle}: crossover of members {ia} and {ib}")
            untested = weights is None and child_genes.activations == ga.activations
            caveat = ("; the genes it adds (optimizer, learning rate, batch size) act only in training, "
                      "so the check cannot tell them apart" if untested else "")
            return (f"crossover: members {ia} × {ib} → {'; '.join(ancestor.diff(child_genes))} "
                    f"(val loss {child_val:.4g} ≤ {parent_val:.4g}{caveat})"), child_snap, weights
        return (f"{decision}; crossover child of {ia} × {ib} rejected "
                f"(loss {child_val:.4g} > {parent_val:.4g})"), snap_a, None

    # -- whole run --------------------------------------------------------------------------
    def test_metrics(self, model) -> dict[str, float]:
        if not self.data.has_test:
            return {}
        return self.trainer.evaluate(model, self.data.x_test, self.data.y_test)

    def finish(self, initial_test: dict[str, float]) -> RunResult:
        cfg = self.config
        self._train_main("final", cfg.cycles + 1, cfg.runup_epochs)
        final = self.folder.model_path("final")
        self._save(self.model, final, "final model")
        test = {}
        if initial_test:
            test = {"initial": initial_test, "final": self.test_metrics(self.model)}
        wall = self.elapsed()
        # Finished first, then delete: a kill in between leaves a finished run, never a checkpoint
        # that points at a deleted archive.
        self.folder.write_state({**(self.folder.read_state() or {}), "finished": True,
                                 "model": str(final.relative_to(self.folder.root))})
        self.folder.update_run(status="finished", finished_at=_now(), wall_seconds=wall, test_metrics=test,
                               genes_final=self.genes.to_dict() if self.genes else None)
        if cfg.drop_intermediate:
            self.folder.drop_intermediate()
        self.emit(ev.RunFinished(status="finished", final_model=str(final.relative_to(self.folder.root)),
                                 wall_seconds=wall, test_metrics=test))
        return RunResult(self.folder.root, "finished", final, self.genes, self.history, self.population, test, wall)

    def guarded(self, body) -> RunResult:
        """Run ``body`` and leave the folder consistent whatever happens."""
        try:
            return self._guarded(body)
        finally:
            self.evaluator.close()

    def _guarded(self, body) -> RunResult:
        try:
            return body()
        except (Cancelled, KeyboardInterrupt):
            wall = self.elapsed()
            self.folder.write_history(self.history) if self.history else None
            self.folder.update_run(status="cancelled", stopped_at=_now(), wall_seconds=wall)
            self.emit(ev.RunFinished(status="cancelled", final_model=None, wall_seconds=wall, test_metrics={}))
            return RunResult(self.folder.root, "cancelled", None, self.genes, self.history, self.population, {}, wall)
        except OSError as exc:
            # A write that failed outside an archive save (journal, history, checkpoint): the same
            # advice, as a typed error the CLI and the app turn into one clear message.
            error = RunFolderError(
                f"cannot write to the run folder {self.folder.root}: {exc.strerror or exc}. Free some disk "
                f"space (or fix the folder's permissions), then 'miha resume {self.folder.root}'")
            try:
                self.folder.update_run(status="failed", error=str(error), error_type="RunFolderError",
                                       stopped_at=_now(), wall_seconds=self.elapsed())
                self.emit(ev.RunFailed(message=str(error), error_type="RunFolderError"))
            except Exception:  # noqa: BLE001 - the disk is what failed
                pass
            raise error from exc
        except BaseException as exc:
            message = str(exc) if isinstance(exc, MihaError) else f"{type(exc).__name__}: {exc}"
            try:
                self.folder.update_run(status="failed", error=message, error_type=type(exc).__name__,
                                       stopped_at=_now(), wall_seconds=self.elapsed())
                self.emit(ev.RunFailed(message=message, error_type=type(exc).__name__))
            except Exception:  # noqa: BLE001 - the disk may be what failed
                pass
            raise


def archive_count(config: RunConfig) -> int:
    """Archives a run writes: source, init, one per member, one per cycle, final."""
    return 3 + config.cycles * (config.population_size + 1)


def disk_space_warning(root: Path, model, config: RunConfig) -> str | None:
    """A sentence with the numbers when the run's archives may not fit on the disk."""
    import shutil

    # weights plus up to two optimizer slots per weight, float32, plus the archive's config
    per_archive = int(model.count_params()) * 4 * 3 + 64_000
    peak = per_archive * (archive_count(config) if not config.drop_intermediate else config.population_size + 3)
    free = shutil.disk_usage(root).free
    if peak > free:
        return (f"the run will write {archive_count(config)} archives of about {per_archive / 1e6:.1f} MB "
                f"({peak / 1e6:.0f} MB in all) but only {free / 1e6:.0f} MB are free on {root}; free some "
                "space, choose another run folder, or use fewer cycles or a smaller population")
    return None


def run(
    model,
    data: Dataset | str | Path | tuple,
    config: RunConfig | None = None,
    run_dir: str | Path | None = None,
    listeners: Iterable[ev.Listener] = (),
    cancel: CancelToken | None = None,
    unsafe_model: bool = False,
    target: str | None = None,
) -> RunResult:
    """Run MIHA on ``model`` (a Keras model or a path) with ``data``.

    Args:
        model: a ``keras.Model`` or the path of a ``.keras``/``.h5`` file.
        data: a :class:`Dataset`, a dataset file path, or a tuple of arrays.
        config: the run configuration (defaults: a tiny run).
        run_dir: the run folder to create (default ``runs/miha-<timestamp>``).
        listeners: callables that receive every :mod:`~miha_engine.events` event.
        cancel: a token another thread may set to stop the run at the next batch.
        unsafe_model: allow Lambda layers and other unsafe deserialisation (trusted files only).
        target: the CSV column to predict.

    Returns:
        A :class:`RunResult`; its status is "finished" or "cancelled".

    Raises:
        InputError: bad model, data, configuration or run folder (before anything trains).
        DivergedError: the main line's loss became NaN/inf.
    """
    from . import models as mdl

    config = config or RunConfig()
    dataset = _as_dataset(data, target)  # before the model: no TensorFlow start-up to learn of a bad file
    source_path = None
    if isinstance(model, (str, Path)):
        source_path = str(Path(model).resolve())
        model = mdl.load_model(model, unsafe=unsafe_model)
    if config.evaluator == "ray":  # Ray missing or a cluster that does not answer: say so before anything trains
        from .ray_evaluator import preflight

        preflight(config)
    folder = RunFolder(run_dir or default_run_dir())
    r = _Run(folder, config, listeners, cancel)
    r.unsafe_model = unsafe_model
    r.prepare(model, dataset)
    folder.create()
    r.genes = mdl.initial_genes(model, r.spec, config, r.choices)
    folder.write_run({
        "format": 1, "status": "running", "config": config.to_dict(), "seed": config.seed,
        "versions": _versions(), "device": r.device, "started_at": _now(),
        "model_source": source_path, "data_source": str(Path(data).resolve()) if isinstance(data, (str, Path)) else None,
        "target": target, "unsafe_model": unsafe_model,
        "total_epochs": config.total_epochs, "lineage_epochs": config.lineage_epochs,
        "data": {"train": r.data.n_train, "validation": 0 if r.data.x_val is None else len(r.data.x_val),
                 "test": 0 if r.data.x_test is None else len(r.data.x_test)},
        "genes_initial": r.genes.to_dict(),
        "search_context": r.search_context(),
    })
    folder.write_history([])
    folder.write_population({})

    def body() -> RunResult:
        r.emit(ev.RunStarted(run_dir=str(folder.root), config=config.to_dict(), total_epochs=config.total_epochs,
                             lineage_epochs=config.lineage_epochs, genes=r.genes.to_dict()))
        warning = disk_space_warning(folder.root, model, config)
        if warning:
            r.note(warning)
        for n in r.layer_notes:
            r.note(n)
        r.start_pool(model, r.genes)
        r._save(r.model, folder.model_dir / "model_source.keras", "the model as given, before training")
        initial_test = r.test_metrics(r.model)
        folder.update_run(test_initial=initial_test)
        r._train_main("runup", 0, config.runup_epochs)
        r._save(r.model, folder.model_path("init"), "main model after the run-up")
        r.main_archive = folder.model_path("init")
        r._checkpoint(0)
        if config.cycles:
            r.open_evaluator()
        for cycle in range(1, config.cycles + 1):
            r.run_cycle(cycle)
        return r.finish(initial_test)

    return r.guarded(body)


def resume(
    run_dir: str | Path,
    data: Dataset | str | Path | tuple | None = None,
    listeners: Iterable[ev.Listener] = (),
    cancel: CancelToken | None = None,
    execution: dict[str, Any] | None = None,
) -> RunResult:
    """Continue an interrupted run from its last completed cycle.

    The lineage is cut back to that cycle's last epoch, so after the resume it has no duplicated or
    missing epochs.  The dataset is read again from the path in run.json unless ``data`` is given.
    ``execution`` may change where and how members train (``evaluator``, ``ray_address``, the
    ``ray_*`` resources, ``steps_per_execution``, ``jit_compile``): none of them changes the run's
    genes or its lineage.
    """
    from . import models as mdl

    folder = RunFolder(run_dir)
    info = folder.open_existing()
    if info.get("status") == "finished":
        raise RunFolderError(f"the run in {folder.root} has already finished; nothing to resume")
    config = RunConfig.from_dict(info["config"])
    if execution:
        allowed = {"evaluator", "ray_address", "ray_cpus_per_member", "ray_gpus_per_member", "ray_max_retries",
                   "steps_per_execution", "jit_compile"}
        unknown = set(execution) - allowed
        if unknown:
            raise InputError(f"resume can change only how members train ({', '.join(sorted(allowed))}), "
                             f"not {', '.join(sorted(unknown))}")
        config = config.replace(**execution)
    if config.evaluator == "ray":
        from .ray_evaluator import preflight

        preflight(config)
    if data is None:
        src = info.get("data_source")
        if not src:
            raise InputError("this run was given arrays in memory; pass the same data to resume()")
        data = src
    dataset = _as_dataset(data, info.get("target"))
    folder.remove_stale_temporaries()
    folder.repair_journal()
    state = folder.read_state()
    if state is not None and state.get("finished"):
        folder.update_run(status="finished")
        raise RunFolderError(f"the run in {folder.root} has already finished; nothing to resume")
    r = _Run(folder, config, listeners, cancel)
    r.unsafe_model = bool(info.get("unsafe_model"))
    if state is None:
        # Killed during the run-up: start over from the model as given.
        source = folder.model_dir / "model_source.keras"
        if not source.exists():
            src = info.get("model_source")
            if not src:
                raise RunFolderError(f"{folder.root} has no model_source.keras to restart from")
            source = Path(src)
        model = mdl.load_model(source, unsafe=bool(info.get("unsafe_model")))
        completed, step, genes = None, 0, None
    else:
        completed, step = int(state["completed_cycle"]), int(state["step"])
        model = mdl.load_model(folder.root / state["model"], unsafe=bool(info.get("unsafe_model")))
        genes = Genes.from_dict(state["genes"])
        r.elapsed_before = float(state.get("elapsed_seconds", 0.0))
    r.prepare(model, dataset)
    r.restore_search_context(info.get("search_context"))
    r.genes = genes or mdl.initial_genes(model, r.spec, config, r.choices)
    r.history = [row for row in folder.read_history() if row["step"] <= step]
    r.step = step
    r.population = {k: v for k, v in folder.read_population().items()
                    if completed is not None and int(k) <= completed}
    folder.write_history(r.history)
    folder.write_population(r.population)
    folder.update_run(status="running", resumed_at=_now(), config=config.to_dict())

    def body() -> RunResult:
        r.emit(ev.RunResumed(cycle=-1 if completed is None else completed, step=step))
        if completed is None:
            r.emit(ev.RunStarted(run_dir=str(folder.root), config=config.to_dict(), total_epochs=config.total_epochs,
                                 lineage_epochs=config.lineage_epochs, genes=r.genes.to_dict()))
            r.start_pool(model, r.genes)
            r._train_main("runup", 0, config.runup_epochs)
            r._save(r.model, folder.model_path("init"), "main model after the run-up")
            r.main_archive = folder.model_path("init")
            r._checkpoint(0)
            start = 1
        else:
            r.start_pool(model, r.genes)  # carries the loaded optimizer's state exactly
            r.main_archive = folder.root / state["model"]
            start = completed + 1
        if start <= config.cycles:
            r.open_evaluator()
        for cycle in range(start, config.cycles + 1):
            r.run_cycle(cycle)
        return r.finish(info.get("test_initial") or {})

    return r.guarded(body)
