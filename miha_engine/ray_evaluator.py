"""Train each population's members on Ray workers, in parallel, on one machine or a cluster.

The driver (the process running :func:`miha_engine.run`) keeps the whole MIHA loop: it draws the
genes, trains the run-up, fixing and final phases, scores, selects and writes the run folder.  Only
the members go to Ray, to long-lived worker actors (:class:`MemberWorker`: as many as the cluster's
CPUs, or GPUs, let train at once, started as members need them).  Each keeps its training set-up
and traced models between members, and is replaced after it built ``recycle_after`` models, which
bounds its memory.  Each member call receives:

- the main line's state as arrays (its :class:`~miha_engine.snapshot.Snapshot`: the weights and the
  optimizer's state exactly), put in Ray's object store once per cycle,
- a reference to the current main model's archive (``model_<cycle>.keras``), which a worker fetches
  only for its first member, to build the model,
- its genes,
- a reference to the training and validation arrays (put in the object store once per run),

and returns its per-epoch losses, a copy of its trained archive
(:class:`~miha_engine.models.ArchiveCopy`, which the driver's archive thread writes into the run
folder) and its trained state as arrays (for selection and crossover).  Epoch results stream back
through a small Ray queue while members train, so the app's plots stay live.

A worker that dies mid-member (a crash, a lost node, out of memory) is started again and the member
retried by Ray up to ``ray_max_retries`` times; after that the member scores worst, the worker is
replaced, and the run goes on.  An exception raised by the member's own code is not retried: it
fails the run as it would in-process.

Probe a cluster from the command line (the app does this to show its resources)::

    python -m miha_engine.ray_evaluator --probe [auto|HOST:PORT]
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import Cancelled, InputError, MihaError
from .evaluators import EvaluatorContext, MemberJob, MemberListener, MemberOutcome, Parent

#: Ray exceptions that mean "the worker or its node went away", as opposed to an error in MIHA's
#: own code or in the cluster's set-up: after Ray's retries the member scores worst and the run goes on.
_DEATH_ERRORS = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError",
                 "OwnerDiedError", "LocalRayletDiedError", "ActorDiedError", "RayActorError",
                 "ActorUnavailableError")


_INSTALL_HINT = ("Every Ray worker needs TensorFlow, Keras 3, numpy and h5py, and the driver's Python minor "
                 "version (docs/cluster.md)")


def _last_line(exc: BaseException) -> str:
    """The last line of an error's text (Ray's carry the remote traceback above it)."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else ""


def _engine_cannot_start(exc: BaseException) -> MihaError:
    return MihaError(f"a Ray worker could not start MIHA's engine ({type(exc).__name__}: {_last_line(exc)}). "
                     f"{_INSTALL_HINT}")


def _death_types(ray) -> tuple[type, ...]:
    return tuple(t for t in (getattr(ray.exceptions, n, None) for n in _DEATH_ERRORS) if isinstance(t, type))


def _import_ray(local: bool = False):
    """Import Ray with usage statistics off.  ``local``: this process will start a local instance,
    which then binds and advertises 127.0.0.1 only (Ray reads this setting at import)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local and "ray" not in sys.modules:
        # Ray's switch for single-machine use (named after the platforms where it is the default):
        # the node address becomes loopback, so no port of a local instance is reachable from outside.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise InputError("the Ray evaluator needs Ray: pip install 'miha[ray]' (or choose the in-process "
                         "evaluator)") from exc
    return ray


def preflight(config) -> None:
    """What can be checked before a run folder exists or anything trains: Ray is installed, and a
    cluster address answers."""
    if config.evaluator != "ray":
        return
    _import_ray(local=not config.ray_address or _is_loopback(config.ray_address))
    if config.ray_address and config.ray_address != "auto":
        _check_reachable(config.ray_address)


def connect(address: str | None, num_cpus: int | None = None, ship_code: bool = True) -> bool:
    """Join the cluster at ``address`` or start a local Ray instance bound to loopback.

    ``ship_code``: send this engine to the cluster's workers (a run needs it; a probe does not).
    Returns True when this call started Ray (so the caller should shut it down), False when this
    process was already connected.
    """
    loopback = not address or _is_loopback(address)
    ray = _import_ray(local=loopback)
    if ray.is_initialized():
        return False
    if address and address != "auto":
        _check_reachable(address)
    previous = _loopback_only() if loopback else None  # else Ray swaps 127.0.0.1 for the network address
    common = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False, configure_logging=True)
    try:
        if address:
            import miha_engine

            # Ship this version of the engine with the job, so workers need only TensorFlow,
            # Keras, numpy and h5py installed (and the same Python minor version).
            env = {"py_modules": [os.path.dirname(miha_engine.__file__)]} if ship_code else None
            ray.init(address=address, runtime_env=env, **common)
        else:
            ray.init(num_cpus=num_cpus, **common)
    except ConnectionError as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {exc}. Start it with "
                         "'ray start --head' (see docs/cluster.md) or leave the address empty to start "
                         "a local Ray instance") from exc
    except (RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(f"cannot start or join {where}: {exc}") from exc
    finally:
        if previous is not None:  # the node's address is fixed now; later connections decide anew
            _set_cluster_switch(previous)
    return True


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rpartition(":")[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def _loopback_only() -> bool | None:
    """Make the next ``ray.init`` use 127.0.0.1 as the node's address: the switch Ray reads at
    import (set by :func:`_import_ray`), set again on the module Ray reads it from, for a Ray imported
    before.  Returns the switch's previous value (None if this Ray has no such switch)."""
    try:
        from ray._private import ray_constants

        previous = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        return previous
    except (ImportError, AttributeError):  # another Ray layout: it advertises its usual address
        return None


def _set_cluster_switch(value: bool) -> None:
    try:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = value
    except (ImportError, AttributeError):
        pass


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with a clear message, where Ray itself would retry for minutes."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"the Ray address {address!r} is not HOST:PORT (or 'auto', or ray://HOST:PORT)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(f"nothing answers at the Ray address {address} ({exc.strerror or exc}). Start the cluster "
                         "with 'ray start --head' on that machine and use the address it prints (see "
                         "docs/cluster.md), or leave the address empty to start a local Ray instance") from exc


def cluster_resources() -> dict[str, Any]:
    ray = _import_ray()
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [{"CPU": float(n.get("Resources", {}).get("CPU", 0)), "GPU": float(n.get("Resources", {}).get("GPU", 0))}
                for n in nodes]
    return {"nodes": len(nodes), "CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0)),
            "max_node_CPU": max((r["CPU"] for r in per_node), default=0.0),
            "max_node_GPU": max((r["GPU"] for r in per_node), default=0.0), "per_node": per_node}


def describe_resources(res: dict[str, Any]) -> str:
    gpus = f", {res['GPU']:g} GPU{'s' if res['GPU'] != 1 else ''}" if res.get("GPU") else ", no GPU"
    return f"{res['nodes']} node{'s' if res['nodes'] != 1 else ''}, {res['CPU']:g} CPUs{gpus}"


# -- the worker side ------------------------------------------------------------------------------

class _WorkerContext:
    """What a worker process keeps between members of one run: the training set-up, built from the
    first parent archive it is given, exactly as the driver builds its own."""

    def __init__(self, setup: dict[str, Any], data: dict[str, Any]):
        from .config import RunConfig
        from .data import from_arrays

        self.setup = setup
        self.config = RunConfig.from_dict(setup["config"])
        self.data = from_arrays(data["x"], data["y"], data.get("x_val"), data.get("y_val"))
        self.backend = None

    def ensure_backend(self, archive: list) -> None:
        """The first member of a run builds the training set-up from the parent's archive (``archive``
        holds its object reference, fetched only then: members start from the parent's arrays)."""
        if self.backend is None:
            import ray

            from . import models as mdl
            from .backend import KerasBackend
            from .training import CancelToken

            with tempfile.TemporaryDirectory(prefix="miha-ray-") as tmp:
                path = Path(tmp) / "parent.keras"
                path.write_bytes(ray.get(archive[0]))
                model = mdl.load_model(path, unsafe=bool(self.setup.get("unsafe")))
            self.backend = KerasBackend(model, self.data, self.config, CancelToken(), self.setup.get("search_context"))


class _RemoteMember:
    """A member trained on a Ray worker: a copy of its archive (:class:`models.ArchiveCopy`, laid
    out on the driver's archive thread) and its state as arrays."""

    def __init__(self, archive, snapshot):
        self.archive, self._snapshot = archive, snapshot

    def write_archive(self, path: Path) -> None:
        self.archive(path)

    def archive_writer(self):
        return self.archive

    def snapshot(self):
        return self._snapshot


_CONTEXT: dict[str, _WorkerContext] = {}


def _limit_threads(cpus: float) -> None:
    """Before TensorFlow starts in this worker: use the CPUs its member asked for, not the machine's.

    ``MIHA_TF_THREADS`` is set too, because :func:`models.configure_tensorflow` reads it first and a
    local worker inherits the driver's (which counts the driver's cores): two one-CPU members, each
    with the driver's two threads, trained at half speed on 2 cores (``benchmarks/ray_speedup.py``)."""
    if "tensorflow" in sys.modules:
        return
    n = str(max(1, int(math.ceil(cpus))))
    os.environ["MIHA_TF_THREADS"] = os.environ["TF_NUM_INTRAOP_THREADS"] = n
    os.environ["TF_NUM_INTEROP_THREADS"] = "1" if n == "1" else "2"


def train_member(setup: dict[str, Any], data: dict[str, Any], archive: list, parent, job: dict[str, Any],
                 queue) -> dict[str, Any]:
    """One member, in a Ray worker: start from the parent's state, mutate, train n epochs."""
    _limit_threads(setup.get("cpus", 1.0))
    from .genes import Genes

    ctx = _CONTEXT.get(setup["run_id"])
    if ctx is None:
        _CONTEXT.clear()  # one run at a time per worker: free the previous run's models
        ctx = _CONTEXT[setup["run_id"]] = _WorkerContext(setup, data)
    ctx.ensure_backend(archive)
    genes = Genes.from_dict(job["genes"])
    cycle, index = int(job["cycle"]), int(job["index"])
    token = uuid.uuid4().hex
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    queue.put(("begin", cycle, index, token, where))

    def on_epoch(epoch, loss, val, seconds):
        queue.put(("epoch", cycle, index, token, epoch, loss, val, seconds))

    # the parent's arrays are read from Ray's object store in place; nothing here keeps them after
    # the member (they would pin the cycle's object until this worker's next member)
    result, trained = ctx.backend.train_member(genes, parent, cycle, index, int(job["epochs"]), on_epoch)
    return {"losses": result.losses, "val_losses": result.val_losses, "diverged": result.diverged,
            "metrics": result.metrics, "archive": _archive_copy(trained, setup), "snapshot": trained.snapshot(), "where": where,
            "notes": ctx.backend.pop_notes()}


def _archive_copy(trained, setup: dict[str, Any]):
    """The member's archive for the driver to write: a copy of its state, laid out by the driver's
    Keras, when the driver runs the same Keras version (the layout is private to each version);
    else the archive's bytes, written by this worker's own Keras."""
    import keras

    from . import models as mdl

    if setup.get("keras") == keras.__version__:
        return trained.archive_writer()
    return mdl.ArchiveCopy(data=mdl.archive_bytes(trained.model))


def capacity(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> int:
    """How many members the live nodes (``ray.nodes()``, or the probe's ``per_node`` resources) can
    train at once: per node, its CPUs over the member's (and its GPUs over the member's share), so a
    member never waits for room that exists only summed over nodes (two nodes of 3 CPUs hold two 2-CPU
    members, not three)."""
    total = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        res = node.get("Resources", node)
        k = int(float(res.get("CPU", 0)) / cpus + 1e-9)
        if gpus:
            k = min(k, int(float(res.get("GPU", 0)) / gpus + 1e-9))
        total += k
    return total


class MemberWorker:
    """A Ray actor: one worker process that trains members one after another.

    It keeps its context (the training set-up, the parent's state and the pool of traced models)
    for the whole run, as the driver's own process does, so a member pays neither TensorFlow's
    start nor a new trace for a model its worker has built before.  Ray spread plain tasks over more
    processes than it ran at once (three or four for two CPUs, each starting TensorFlow and tracing
    on its own); an actor per CPU slot bounds both the processes and their traces."""

    def train(self, setup: dict[str, Any], data: dict[str, Any], archive: list, parent, job: dict[str, Any],
              queue) -> dict[str, Any]:
        res = train_member(setup, data, archive, parent, job, queue)
        ctx = _CONTEXT.get(setup["run_id"])
        res["built"] = int(ctx.backend.pool.built) if ctx is not None and ctx.backend is not None else 0
        return res


# -- the driver side ------------------------------------------------------------------------------

def _keras_version() -> str:
    import keras

    return keras.__version__


class RayEvaluator:
    """Train each population's members on Ray worker actors (see the module's text)."""

    name = "ray"

    def __init__(self, config):
        self.config = config
        self.ray = None
        self.started = False
        self.queue = None
        self.setup_ref = None
        self.data_ref = None
        self.resources: dict[str, Any] = {}
        self.gpus = 0.0
        self.ctx: EvaluatorContext | None = None

    def describe(self) -> str:
        where = f"the Ray cluster at {self.config.ray_address}" if self.config.ray_address else "a local Ray instance"
        res = f" ({describe_resources(self.resources)})" if self.resources else ""
        gpu = f", {self.gpus:g} GPU per member" if self.gpus else ""
        return f"{where}{res}, {self.config.ray_cpus_per_member:g} CPU{gpu} per member, in parallel"

    def open(self, ctx: EvaluatorContext) -> None:
        cfg = self.config
        self.ctx = ctx
        self.ray = ray = _import_ray(local=not cfg.ray_address or _is_loopback(cfg.ray_address))
        self.started = connect(cfg.ray_address)
        self.resources = res = cluster_resources()
        if cfg.ray_cpus_per_member > res["max_node_CPU"]:
            raise InputError(f"each member asks for {cfg.ray_cpus_per_member:g} CPUs but no Ray node has more than "
                             f"{res['max_node_CPU']:g}; lower ray_cpus_per_member")
        self.gpus = cfg.ray_gpus_per_member if res["GPU"] > 0 else 0.0
        if cfg.ray_gpus_per_member and not res["GPU"]:
            ctx.note(f"the Ray cluster has no GPU, so ray_gpus_per_member = {cfg.ray_gpus_per_member:g} is ignored; "
                     "members train on CPUs")
        elif res["GPU"] and not cfg.ray_gpus_per_member:
            ctx.note(f"the Ray cluster has {res['GPU']:g} GPU(s) but ray_gpus_per_member is 0, so members train on "
                     "CPUs; set it to a fraction such as 0.25 to share each GPU among four members")
        if self.gpus > res["max_node_GPU"]:
            raise InputError(f"each member asks for {self.gpus:g} GPUs but no Ray node has more than "
                             f"{res['max_node_GPU']:g}; lower ray_gpus_per_member")
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: the queue lives and dies with the run, not with a worker node
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self._queue_ok = True
        data = ctx.backend.data
        arrays = {"x": data.x, "y": data.y}
        if data.has_validation:
            arrays.update(x_val=data.x_val, y_val=data.y_val)
        self.data_ref = ray.put(arrays)
        self.setup_ref = ray.put({
            "run_id": uuid.uuid4().hex, "config": cfg.to_dict(), "search_context": ctx.backend.search_context(),
            "keras": _keras_version(),
            "unsafe": ctx.unsafe_model, "cpus": cfg.ray_cpus_per_member,
        })
        self._actor_class = ray.remote(MemberWorker)
        self.actors: list[Any] = []  # every worker alive, ready or starting
        self.ready: set[Any] = set()  # workers that have started (the others are being placed)
        self.starting: dict[Any, Any] = {}  # __ray_ready__ reference -> worker
        self.slots = self._capacity()
        self._counted_at = time.monotonic()

    def _capacity(self) -> int:
        return capacity(self.ray.nodes(), self.config.ray_cpus_per_member, self.gpus)

    def _recount(self, idle: list[Any]) -> None:
        """Follow the cluster: a lost node lowers the count (idle workers beyond it are retired, so
        a worker restarting elsewhere finds room), a new node raises it."""
        self.slots = self._capacity()
        self._counted_at = time.monotonic()
        surplus = len(self.actors) - self.slots
        for ref, actor in list(self.starting.items()):
            if surplus <= 0:
                break
            del self.starting[ref]
            self._retire(actor)
            surplus -= 1
        while surplus > 0 and idle:
            self._retire(idle.pop())
            surplus -= 1

    def _new_actor(self):
        cfg = self.config
        # a worker that dies is started again (a member it was training is retried up to
        # ray_max_retries times, system failures only, like a task); the driver retires a worker
        # whose member failed for good, and one that built recycle_after models (its memory)
        actor = self._actor_class.options(num_cpus=cfg.ray_cpus_per_member, num_gpus=self.gpus, max_restarts=-1,
                                          max_task_retries=cfg.ray_max_retries).remote()
        self.actors.append(actor)
        self.starting[actor.__ray_ready__.remote()] = actor
        return actor

    def _retire(self, actor) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
        self.ready.discard(actor)
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self) -> None:
        ray = self.ray
        if ray is None:
            return
        for actor in list(getattr(self, "actors", [])):  # on a cluster they would hold their CPUs
            self._retire(actor)
        self.starting = {}
        try:
            if self.queue is not None:
                self.queue.shutdown(force=True)
            if self.started and ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - closing must never hide the run's own outcome
            pass
        self.queue = None
        self.ray = None
        self.ctx = None

    def members(self, parent: Parent, jobs: list[MemberJob], listener: MemberListener) -> Iterator[MemberOutcome]:
        """Each member goes to the next worker that is free and started (new workers start while
        fewer than the nodes can hold live), so a slow member (a small batch size) does not hold the
        others back, and no member waits on a worker that is still being placed."""
        from collections import deque

        ray, cfg, ctx = self.ray, self.config, self.ctx
        assert ray is not None and ctx is not None, "open() first"
        if not Path(parent.archive).exists():
            raise MihaError("internal: the main model's archive is missing, so remote members cannot start")
        # the parent's state as arrays for every member; its archive (in a list, so that Ray does not
        # fetch it with every call) only for a worker's first member, which builds the model from it
        parent_ref = ray.put(parent.snapshot)
        archive_ref = [ray.put(Path(parent.archive).read_bytes())]
        waiting = deque(jobs)
        idle = [a for a in self.actors if a in self.ready]
        pending: dict[Any, tuple[MemberJob, Any]] = {}
        tokens: dict[int, str] = {}
        attempts: dict[int, int] = {}
        by_index = {job.index: job for job in jobs}
        try:
            while waiting or pending:
                if ctx.cancel.cancelled:
                    raise Cancelled("the run was stopped")
                if time.monotonic() - self._counted_at > 2.0:
                    self._recount(idle)
                while waiting and len(self.actors) < self.slots and len(idle) + len(self.starting) < len(waiting):
                    self._new_actor()
                while waiting and idle:
                    actor, job = idle.pop(0), waiting.popleft()
                    listener.started(job)
                    spec = {"cycle": parent.cycle, "index": job.index, "genes": job.genes.to_dict(),
                            "epochs": job.epochs}
                    ref = actor.train.remote(self.setup_ref, self.data_ref, archive_ref, parent_ref, spec, self.queue)
                    pending[ref] = (job, actor)
                if not pending and not self.starting:
                    raise MihaError("no live Ray node has room for a member now "
                                    f"({cfg.ray_cpus_per_member:g} CPU{', ' if self.gpus else ''}"
                                    f"{f'{self.gpus:g} GPU' if self.gpus else ''} each); start nodes or lower "
                                    "ray_cpus_per_member")
                ready, _ = ray.wait([*pending, *self.starting], num_returns=1, timeout=0.2)
                self._drain(parent.cycle, listener, by_index, tokens, attempts)
                for ref in ready:
                    if ref in self.starting:
                        actor = self.starting.pop(ref)
                        if self._started(ref, actor):
                            idle.append(actor)
                        continue
                    job, actor = pending.pop(ref)
                    outcome, alive, built = self._outcome(ref, job, attempts.get(job.index, 1), listener)
                    if alive and not (cfg.recycle_after and built >= cfg.recycle_after):
                        idle.append(actor)
                    else:  # failed for good, or holding recycle_after traced models: a fresh process
                        self._retire(actor)
                        if not alive:
                            self._recount(idle)
                    yield outcome
        finally:
            for _job, actor in pending.values():  # stopped or failed: do not leave members training
                self._retire(actor)

    def _started(self, ref, actor) -> bool:
        """Whether a worker has started.  One that cannot even load the engine (a node without
        TensorFlow or numpy, another Python) stops the run with what to install; one that died while
        starting (its node lost) is dropped, and another starts when members need it."""
        try:
            self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted below
            self._retire(actor)
            if getattr(exc, "actor_init_failed", False) or not isinstance(exc, _death_types(self.ray)):
                raise _engine_cannot_start(exc) from exc
            return False
        self.ready.add(actor)
        return True

    def _drain(self, cycle: int, listener: MemberListener, jobs: dict[int, MemberJob], tokens, attempts) -> None:
        from ray.util.queue import Empty

        while self._queue_ok:
            try:
                n = self.queue.qsize()
                if not n:
                    return
                items = self.queue.get_nowait_batch(n)
            except Empty:
                return
            except Exception as exc:  # noqa: BLE001 - live epochs are a convenience: results still come
                self._queue_ok = False
                listener.note(f"the Ray queue that streams epochs failed ({type(exc).__name__}); members' epochs "
                              "will appear when each member ends")
                return
            for item in items:
                kind, c, i = item[0], item[1], item[2]
                if c != cycle:
                    continue
                if kind == "begin":
                    token, where = item[3], item[4]
                    if i in tokens:  # Ray started this member again after its worker died
                        attempts[i] = attempts.get(i, 1) + 1
                        listener.note(f"cycle {cycle}, member {i}: its worker died; Ray started it again on "
                                      f"{where['host']} (attempt {attempts[i]} of {self.config.ray_max_retries + 1})")
                        listener.started(jobs[i])
                    tokens[i] = token
                elif kind == "epoch" and tokens.get(i) == item[3]:
                    _, _, _, _, epoch, loss, val, seconds = item
                    listener.epoch(jobs[i], epoch, loss, val, seconds)

    def _outcome(self, ref, job: MemberJob, attempt: int,
                 listener: MemberListener) -> tuple[MemberOutcome, bool, int]:
        """The member's outcome, whether its worker may train another, and how many models it built."""
        ray = self.ray
        try:
            res = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted below
            cause = getattr(exc, "cause", None)
            if getattr(exc, "actor_init_failed", False):  # not a death: the engine cannot load there
                raise _engine_cannot_start(exc) from exc
            deaths = _death_types(ray)
            if isinstance(exc, deaths) or isinstance(cause, deaths):
                return MemberOutcome.failed(job, job.epochs, self.ctx.backend.data.has_validation,
                                            f"its worker died or could not be reached "
                                            f"{self.config.ray_max_retries + 1} time(s) "
                                            f"({type(exc).__name__}), so it could not be trained"), False, 0
            if isinstance(cause, MihaError):
                raise type(cause)(str(cause)) from exc
            what = cause if cause is not None else exc
            hint = ""
            if isinstance(what, ImportError) or "RuntimeEnv" in type(exc).__name__:
                hint = ". " + _INSTALL_HINT
            raise MihaError(f"cycle member {job.index} failed on a Ray worker: {type(what).__name__}: "
                            f"{_last_line(what)}{hint}") from exc
        for note in res.get("notes", []):
            listener.note(f"member {job.index}: {note}")
        where = dict(res.get("where") or {})
        where["attempt"] = attempt
        return (MemberOutcome(job, res["losses"], res["val_losses"], res["diverged"],
                              trained=_RemoteMember(res["archive"], res["snapshot"]), where=where,
                              metrics=dict(res.get("metrics") or {})), True, int(res.get("built", 0)))


# -- probing (the app asks this in a subprocess, so the window never waits on Ray) ----------------

def probe(address: str | None) -> dict[str, Any]:
    """What a run on Ray would get: for no address, this machine (without starting Ray); for an
    address, the cluster's resources."""
    try:
        ray = _import_ray()
    except InputError as exc:
        return {"ok": False, "error": str(exc)}
    if not address:
        cpus, gpus = float(os.cpu_count() or 1), float(_local_gpus())
        return {"ok": True, "local": True, "ray": ray.__version__, "nodes": 1, "CPU": cpus, "GPU": gpus,
                "per_node": [{"CPU": cpus, "GPU": gpus}]}
    try:
        connect(address, ship_code=False)
        res = cluster_resources()
        ray.shutdown()
    except InputError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "local": False, "ray": ray.__version__, **res}


def _local_gpus() -> int:
    try:
        return sum(1 for name in os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m miha_engine.ray_evaluator")
    ap.add_argument("--probe", nargs="?", const="", metavar="ADDRESS",
                    help="print, as JSON, the resources a Ray run would get (no address: this machine)")
    args = ap.parse_args(argv)
    if args.probe is None:
        ap.print_help()
        return 2
    t0 = time.perf_counter()
    out = probe(args.probe or None)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(_main())
