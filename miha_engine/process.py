"""Run the engine in a child process and stream its events back through a queue.

The app uses this so that TensorFlow's work never competes with the GUI thread for Python's GIL:
tracing a new model or saving an archive can hold the GIL for hundreds of milliseconds, which froze
the window for up to 0.4 s when the engine ran in a thread of the app's own process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, MihaError
from .training import CancelToken


class ProcessCancelToken(CancelToken):
    """A cancel token backed by a multiprocessing Event, shared with the child."""

    def __init__(self, event) -> None:  # noqa: D107 - the parent class documents it
        self._event = event


@dataclass(frozen=True)
class Job:
    """What to run: ``kind`` is "run", "resume", "replay" or "fork"; ``kwargs`` go to
    :func:`miha_engine.run`, :func:`miha_engine.resume`, :func:`miha_engine.replay` or
    :func:`miha_engine.fork` (plain picklable values: paths, a RunConfig, flags)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _watch_parent(cancel_event, parent: int) -> None:
    """Cancel the run if the app dies: an orphaned engine would go on writing the run folder."""
    while not cancel_event.is_set():
        if os.getppid() != parent:
            cancel_event.set()
            return
        time.sleep(0.5)


class QueueEdits:
    """Live edits sent by the app through a multiprocessing queue (the loop polls at each cycle)."""

    def __init__(self, queue) -> None:
        self.queue = queue

    def poll(self) -> dict | None:
        changes: dict = {}
        while True:
            try:
                changes.update(self.queue.get_nowait())
            except (queue_module.Empty, OSError, ValueError):
                return changes or None


def _child(job: Job, out, cancel_event, parent: int | None = None, edits=None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(cancel_event, parent), daemon=True).start()
    from .errors import RecycleRequested

    try:
        from . import runner, schedule

        runner.allow_recycling(True)  # the parent starts the fresh process (EngineProcess.pump)
        fn = {"run": runner.run, "resume": runner.resume, "replay": schedule.replay, "fork": runner.fork}[job.kind]
        extra = {"edits": QueueEdits(edits)} if edits is not None and job.kind != "replay" else {}
        result = fn(**job.kwargs, listeners=[out.put], cancel=ProcessCancelToken(cancel_event), **extra)
        out.put(("done", result))
    except RecycleRequested as req:
        data = job.kwargs.get("data")
        out.put(("recycle", str(req.run_dir), data if isinstance(data, (str, os.PathLike)) else None))
    except InputError as exc:
        out.put(("failed", str(exc), True))
    except MihaError as exc:
        out.put(("failed", str(exc), False))
    except MemoryError:
        out.put(("failed", "out of memory: use a smaller batch size, model or dataset", False))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a message for the parent
        out.put(("failed", f"unexpected error: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}", False))


class EngineProcess:
    """Start a job in a spawned child process; ``pump`` delivers its messages."""

    def __init__(self, job: Job):
        self._ctx = ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.cancel_event = ctx.Event()
        self.cancel = ProcessCancelToken(self.cancel_event)
        self.edits = ctx.Queue()
        self.recycled = 0
        self.process = self._new_process(job)

    def _new_process(self, job: Job):
        return self._ctx.Process(target=_child, args=(job, self.queue, self.cancel_event, os.getpid(), self.edits),
                                 daemon=True, name="miha-engine")

    def send_edits(self, changes: dict) -> None:
        """Settings for the loop to apply from its next cycle (n, k, pop_size, the search space)."""
        self.edits.put(dict(changes))

    def start(self) -> None:
        self.process.start()

    def pump(self, on_event: Callable[[Any], None], timeout: float = 0.1):
        """Wait for the job to end, passing each event to ``on_event``.

        Returns:
            ("done", result) or ("failed", message, is_input_error).
        """
        while True:
            try:
                msg = self.queue.get(timeout=timeout)
            except queue_module.Empty:
                if not self.process.is_alive():
                    try:  # the last messages may still be in the pipe
                        msg = self.queue.get(timeout=1.0)
                    except queue_module.Empty:
                        code = self.process.exitcode
                        return ("failed", f"the engine process ended unexpectedly (exit code {code}); "
                                "the run folder keeps everything saved so far: press Resume to continue", False)
                else:
                    continue
            if isinstance(msg, tuple) and msg and msg[0] == "recycle":
                # the child stopped at a checkpoint to give TensorFlow's memory back: a fresh child resumes
                # the run; the same queues and cancel event carry on, so the caller sees one run
                self.process.join(timeout=30)
                kwargs = {"run_dir": msg[1], **({"data": msg[2]} if msg[2] else {})}
                self.process = self._new_process(Job("resume", kwargs))
                self.recycled += 1
                self.process.start()
                continue
            if isinstance(msg, tuple) and msg and msg[0] in ("done", "failed"):
                self.process.join(timeout=30)
                return msg
            on_event(msg)

    def terminate(self) -> None:
        """Last resort when the child does not stop: end it (the run folder stays resumable)."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
