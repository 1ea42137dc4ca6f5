"""Typed failures.

A user's mistake (a bad file, a bad parameter) is an :class:`InputError`: the CLI prints its message
on one line and exits 2, the app shows it in a dialog.  Each message says what is wrong *and* what
to do.  A member whose loss turns NaN is not an error at all: it scores worst and the run goes on.
"""

from __future__ import annotations


class MihaError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(MihaError):
    """Bad input from the user: a file, an argument, a configuration value."""


class ModelLoadError(InputError):
    """A model file that cannot be loaded (missing, corrupt, unsafe, not Keras)."""


class DatasetError(InputError):
    """A dataset that cannot be loaded or does not fit the model."""


class ConfigError(InputError):
    """A run configuration value out of range, or an unknown option."""


class RunFolderError(InputError):
    """A run folder that cannot be used (not writable, holds another run, not a run)."""


class DivergedError(MihaError):
    """The main line's loss became NaN or infinite: the run stops and keeps its last good archive."""


class RecycleRequested(Exception):  # noqa: N818 - a request, not an error
    """The loop stopped at a checkpoint so that its process can be replaced by a fresh one that resumes
    the run (see ``RunConfig.recycle_after``): TensorFlow keeps memory for every model it has traced,
    and only a new process gives it back.  Raised only where the caller allowed it."""

    def __init__(self, run_dir, cycle: int, models: int, why: str = ""):
        #: why, in words: "N models traced" or "memory grew N MB"
        self.why = why or f"{models} models traced"
        super().__init__(f"restart the engine to resume {run_dir} after cycle {cycle} ({self.why})")
        self.run_dir, self.cycle, self.models = run_dir, cycle, models


class Cancelled(MihaError):
    """The run was stopped by its cancel token (Stop button, Ctrl-C)."""


class ExportError(InputError):
    """A model that cannot be written in the format asked for (a layer the converter lacks, a
    converter that is not installed), or whose export does not compute what the model computes."""


class ScheduleError(InputError):
    """A schedule file that cannot be read, or that does not fit the model it is replayed on."""


class FolderLockedError(RunFolderError):
    """Another process is writing the run folder."""
