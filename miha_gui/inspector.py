"""Inspect model files in another process, so TensorFlow never runs on the GUI thread.

Loading a Keras model imports TensorFlow (seconds, the first time) and deserialises the archive; done
on the GUI thread, the window froze meanwhile.  One ``miha inspect --serve`` process per app, started
on the first request and kept warm, answers every :class:`ModelInspector`: the first model takes the
TensorFlow start-up, the next ones take milliseconds.  A bad file gets the engine's own sentence.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from miha_engine.models import ModelInfo

#: Longest wait for one answer; past it the service is restarted and the request reported.
INSPECT_TIMEOUT_MS = 120_000


def engine_message(stderr: str, fallback: str) -> str:
    """The engine's own sentence from ``miha``'s stderr (TensorFlow's lines and prefixes dropped)."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("miha: error: "):
            return line[len("miha: error: "):]
        if line.startswith("miha: "):
            return line[len("miha: "):]
    return fallback


class _Service(QObject):
    """The shared ``miha inspect --serve`` child: requests by id, answers as JSON lines."""

    answered = Signal(int, object, str)  # request id, the summary or None, the error or ""

    def __init__(self):
        super().__init__()
        self.proc: QProcess | None = None
        self.buffer = b""
        self.pending: dict[int, str] = {}
        self.ids = itertools.count(1)

    def request(self, path: str, unsafe: bool) -> int:
        if self.proc is None or self.proc.state() == QProcess.NotRunning:
            self._start()
        rid = next(self.ids)
        self.pending[rid] = path
        self.proc.write((json.dumps({"id": rid, "path": path, "unsafe": unsafe}) + "\n").encode())
        QTimer.singleShot(INSPECT_TIMEOUT_MS, lambda: self._timeout(rid))
        return rid

    def _start(self) -> None:
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("TF_CPP_MIN_LOG_LEVEL", "3")
        proc.setProcessEnvironment(env)
        proc.setStandardErrorFile(QProcess.nullDevice())  # TensorFlow's start-up lines; never read
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._ended)
        self.proc, self.buffer = proc, b""
        proc.start(sys.executable, ["-m", "miha_engine", "inspect", "--serve"])

    def _read(self) -> None:
        self.buffer += bytes(self.proc.readAllStandardOutput())
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            rid = reply.get("id")
            if rid not in self.pending:
                continue
            self.pending.pop(rid)
            info, error = None, reply.get("error", "")
            if "info" in reply:
                try:
                    info = ModelInfo.from_dict(reply["info"])
                except (KeyError, TypeError, ValueError) as exc:
                    error = f"unreadable answer from the model inspector ({exc})"
            self.answered.emit(rid, info, error)

    def _ended(self, *_args) -> None:
        """The service died (killed, out of memory, a crash while loading): fail what was pending;
        the next request starts a new one."""
        pending, self.pending = self.pending, {}
        self.proc = None
        for rid, path in pending.items():
            self.answered.emit(rid, None, f"{Path(path).name} could not be inspected: the inspecting process ended "
                               "unexpectedly; the file may be damaged or too large for memory")

    def _timeout(self, rid: int) -> None:
        path = self.pending.pop(rid, None)
        if path is None:
            return
        self.answered.emit(rid, None, f"{Path(path).name} took more than {INSPECT_TIMEOUT_MS // 1000} s to load; "
                           "is it on a slow or remote disk?")
        self.stop()  # a stuck service is replaced on the next request

    def stop(self) -> None:
        if self.proc is not None:
            proc = self.proc
            proc.kill()
            proc.waitForFinished(2000)


_SERVICE: _Service | None = None


def _service() -> _Service:
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = _Service()
    return _SERVICE


def shutdown() -> None:
    """End the shared service (the app calls this as it quits)."""
    if _SERVICE is not None:
        _SERVICE.stop()


class ModelInspector(QObject):
    """Summarise model files; a new request replaces a pending one (only its answer is reported)."""

    #: (path, the summary or None, the error message or "")
    finished = Signal(str, object, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._rid: int | None = None
        self._path = ""
        _service().answered.connect(self._answered)

    def inspect(self, path: str | Path, unsafe: bool = False) -> None:
        self._path = str(path)
        self._rid = _service().request(self._path, unsafe)

    def cancel(self) -> None:
        self._rid = None

    def _answered(self, rid: int, info, error: str) -> None:
        if rid != self._rid:
            return
        self._rid = None
        self.finished.emit(self._path, info, error)
