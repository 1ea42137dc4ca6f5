"""The engine behind the window: a thin QObject on a QThread that drives a child process.

The child process trains (TensorFlow never runs in the app's process during a run, so it never holds
the GUI's GIL); the worker thread relays the child's events as Qt signals, which Qt queues to slots on
the GUI thread.  The worker touches no widget.  It turns every failure into ``failed`` and always
emits ``finished``.
"""

from __future__ import annotations

import weakref

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from miha_engine.process import EngineProcess, Job

#: Every thread the app started, so tests can fail when one is left running.
LIVE_THREADS: weakref.WeakSet[QThread] = weakref.WeakSet()


class EngineWorker(QObject):
    event = Signal(object)
    done = Signal(object)
    failed = Signal(str, bool)  # message, is the user's input at fault
    finished = Signal()

    def __init__(self, job: Job):
        super().__init__()
        self.engine = EngineProcess(job)
        self.cancel = self.engine.cancel

    @Slot()
    def run(self) -> None:
        try:
            self.engine.start()
            outcome = self.engine.pump(self.event.emit)
            if outcome[0] == "done":
                self.done.emit(outcome[1])
            else:
                self.failed.emit(outcome[1], bool(outcome[2]))
        except Exception as exc:  # noqa: BLE001 - the app must stay usable
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}", False)
        finally:
            self.finished.emit()


def start_worker(parent: QObject, job: Job) -> tuple[QThread, EngineWorker]:
    """Create a QThread owned by ``parent``, move a worker onto it (not started yet)."""
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
