"""Inspect a model file in another process, so TensorFlow never runs on the GUI thread.

Loading a Keras model imports TensorFlow (seconds, the first time) and deserialises the archive; done
on the GUI thread, the window froze meanwhile.  :class:`ModelInspector` runs ``miha inspect PATH
--json`` through a :class:`QProcess` and reports the summary, or the engine's one-line message for a
bad file, with a signal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from miha_engine.models import ModelInfo

#: Longest wait for an answer; a model that takes longer to load is reported as such.
INSPECT_TIMEOUT_MS = 120_000


def _message(stderr: str, fallback: str) -> str:
    """The engine's own sentence from ``miha``'s stderr (TensorFlow's start-up lines dropped)."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("miha: error: "):
            return line[len("miha: error: "):]
        if line.startswith("miha: "):
            return line[len("miha: "):]
    return fallback


class ModelInspector(QObject):
    """Summarise model files one at a time; a new request replaces a pending one."""

    #: (path, the summary or None, the error message or "")
    finished = Signal(str, object, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._proc: QProcess | None = None
        self._path = ""

    @property
    def busy(self) -> bool:
        return self._proc is not None

    def inspect(self, path: str | Path, unsafe: bool = False) -> None:
        self.cancel()
        self._path = str(path)
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("TF_CPP_MIN_LOG_LEVEL", "3")
        proc.setProcessEnvironment(env)
        proc.finished.connect(lambda *_: self._done(proc))
        proc.errorOccurred.connect(lambda err: err == QProcess.FailedToStart and self._done(proc))
        self._proc = proc
        args = ["-m", "miha_engine", "inspect", self._path, "--json"] + (["--unsafe-model"] if unsafe else [])
        proc.start(sys.executable, args)
        if not proc.waitForStarted(10_000):
            self._done(proc)
            return
        from PySide6.QtCore import QTimer

        QTimer.singleShot(INSPECT_TIMEOUT_MS, lambda: self._timeout(proc))

    def cancel(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.waitForFinished(2000)
            proc.deleteLater()

    def _timeout(self, proc: QProcess) -> None:
        if proc is self._proc:
            self.cancel()
            self.finished.emit(self._path, None, f"{Path(self._path).name} took more than "
                               f"{INSPECT_TIMEOUT_MS // 1000} s to load; is it on a slow or remote disk?")

    def _done(self, proc: QProcess) -> None:
        if proc is not self._proc:
            return
        self._proc = None
        out = bytes(proc.readAllStandardOutput()).decode(errors="replace")
        err = bytes(proc.readAllStandardError()).decode(errors="replace")
        ok = proc.exitStatus() == QProcess.NormalExit and proc.exitCode() == 0
        proc.deleteLater()
        if ok:
            try:
                self.finished.emit(self._path, ModelInfo.from_dict(json.loads(out)), "")
                return
            except (ValueError, KeyError, TypeError) as exc:
                err = f"miha: error: unreadable answer from the model inspector ({exc})"
        self.finished.emit(self._path, None, _message(err, proc.errorString() or "the model could not be inspected"))
