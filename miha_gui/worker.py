"""The engine on a worker thread: a thin QObject moved to a QThread the window owns.

Engine events arrive on the worker thread; they are re-emitted as Qt signals, which Qt queues to
slots on the GUI thread.  The worker touches no widget.  It turns every exception into ``failed``
and always emits ``finished``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from miha_engine.errors import InputError, MihaError
from miha_engine.training import CancelToken

#: Every thread the app started, so tests can fail when one is left running.
LIVE_THREADS: weakref.WeakSet[QThread] = weakref.WeakSet()

Job = Callable[[Callable[[Any], None], CancelToken], Any]


class EngineWorker(QObject):
    event = Signal(object)
    done = Signal(object)
    failed = Signal(str, bool)  # message, is the user's input at fault
    finished = Signal()

    def __init__(self, job: Job):
        super().__init__()
        self._job = job
        self.cancel = CancelToken()

    @Slot()
    def run(self) -> None:
        try:
            result = self._job(self.event.emit, self.cancel)
            self.done.emit(result)
        except InputError as exc:
            self.failed.emit(str(exc), True)
        except MihaError as exc:
            self.failed.emit(str(exc), False)
        except MemoryError:
            self.failed.emit("out of memory: use a smaller batch size, model or dataset", False)
        except Exception as exc:  # noqa: BLE001 - the app must stay usable
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}", False)
        finally:
            self.finished.emit()


def start_worker(parent: QObject, job: Job) -> tuple[QThread, EngineWorker]:
    """Create a QThread owned by ``parent``, move a worker onto it and start it."""
    thread = QThread(parent)
    thread.setObjectName("miha-engine")
    worker = EngineWorker(job)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # Direct: QThread.quit is thread-safe, and a queued call would never run while the GUI thread
    # waits for the thread (closing the window during a run).
    worker.finished.connect(thread.quit, Qt.DirectConnection)
    worker.finished.connect(worker.deleteLater)
    LIVE_THREADS.add(thread)
    return thread, worker
