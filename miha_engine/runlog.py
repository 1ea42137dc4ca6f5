"""The run folder: every write atomic, the event journal append-only.

Layout (the contract with the app and the user)::

    RUN_DIR/
      run.json          config, versions, seed, status, timings, device, test metrics
      events.jsonl      one JSON event a line, flushed and fsynced; a torn last line is skipped
      history.csv       the lineage: step, phase, cycle, epoch, loss, val_loss, genes
      population.json   {cycle: {member: {genes, change, losses, val_losses, fitness, chosen}}}
      state.json        the checkpoint ``miha resume`` continues from
      model/            model_init.keras, model_<cycle>.keras, model_final.keras
      population/       <cycle>_<member>_model.keras
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import FolderLockedError, InputError, RunFolderError
from .events import Event, event_from_dict

HISTORY_FIELDS = ("step", "phase", "cycle", "epoch", "loss", "val_loss", "genes")

_MEMBER_NAME = re.compile(r"^(\d+)_(\d+|child)_model\.keras$")
_MAIN_NAME = re.compile(r"^model_(\w+)\.keras$")
_MAIN_TEXT = {"init": "main model after the run-up", "final": "final model",
              "source": "the model as given, before training",
              "best": "best model: the lineage's state with the best validation score"}
_FILE_TEXT = {"run.json": "configuration, status, timings, test metrics",
              "events.jsonl": "the journal of every event (replayable)",
              "history.csv": "the final model's lineage, one row per epoch",
              "population.json": "every member of every cycle",
              "state.json": "the checkpoint 'miha resume' continues from"}


@dataclass(frozen=True)
class ArchiveName:
    """What an archive's file name says: a main-line state (``which``: source, init, a cycle
    number, final) or a member of a cycle (``member`` None for a crossover child)."""

    kind: str  # "main" | "member" | "child"
    which: str = ""
    cycle: int | None = None
    member: int | None = None

    def text(self) -> str:
        if self.kind == "main":
            return _MAIN_TEXT.get(self.which, f"main model after cycle {self.which}")
        if self.kind == "child":
            return f"cycle {self.cycle}, crossover child"
        return f"cycle {self.cycle}, member {self.member}"


def parse_archive_name(name: str) -> ArchiveName | None:
    """The one reader of the run folder's archive names (the writers are RunFolder's paths)."""
    m = _MEMBER_NAME.match(name)
    if m:
        if m.group(2) == "child":
            return ArchiveName("child", cycle=int(m.group(1)))
        return ArchiveName("member", cycle=int(m.group(1)), member=int(m.group(2)))
    m = _MAIN_NAME.match(name)
    if m:
        return ArchiveName("main", which=m.group(1))
    return None


def describe_file(name: str) -> str:
    """A few words on a run-folder file from its name alone."""
    archive = parse_archive_name(name)
    if archive is not None:
        return archive.text()
    return _FILE_TEXT.get(name, "")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), default=_json_default, indent=indent, ensure_ascii=False)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """The one way MIHA writes a file: ``write(tmp)`` fills a hidden temporary in the same folder,
    which is fsynced, renamed over ``path``, and the folder fsynced, so a reader (or a crash, or a
    power cut) sees the old file or the new one, never a torn one.  On failure nothing is left.

    The temporary keeps ``path``'s suffix (Keras decides the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_archive_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path



def atomic_copy(src: Path, path: Path) -> Path:
    """Copy ``src`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(Path(path), lambda tmp: shutil.copyfile(src, tmp))

def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a platform that cannot open folders (Windows) skips it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def temp_archive_path(final: Path) -> Path:
    """A hidden temporary name in the same folder, with the final suffix (Keras requires .keras)."""
    return final.with_name(f".{final.stem}.partial{final.suffix}")


def read_events(path: Path) -> Iterator[Event]:
    """Yield the journal's events; a torn or unknown line is skipped."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                event = event_from_dict(data)
                if event is not None:
                    yield event


class RunFolder:
    """Owns one run folder's files."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def events_path(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def history_path(self) -> Path:
        return self.root / "history.csv"

    @property
    def population_path(self) -> Path:
        return self.root / "population.json"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def population_dir(self) -> Path:
        return self.root / "population"

    def model_path(self, name: str) -> Path:
        return self.model_dir / f"model_{name}.keras"

    def member_path(self, cycle: int, member: int) -> Path:
        return self.population_dir / f"{cycle}_{member}_model.keras"

    def child_path(self, cycle: int) -> Path:
        return self.population_dir / f"{cycle}_child_model.keras"

    # model_best is written as a hidden pending archive named by its lineage step, and promoted to
    # model_best.keras only when a checkpoint records that step (or the run finishes): a kill between
    # the two leaves model_best.keras matching state.json, and the resume settles the pending file.
    def pending_best_path(self, step: int) -> Path:
        return self.model_dir / f".model_best.pending-{int(step)}.keras"

    def pending_best(self) -> dict[int, Path]:
        """The pending model_best archives, by lineage step."""
        found: dict[int, Path] = {}
        if self.model_dir.is_dir():
            for p in self.model_dir.glob(".model_best.pending-*.keras"):
                step = p.name.removeprefix(".model_best.pending-").removesuffix(".keras")
                if step.isdigit():
                    found[int(step)] = p
        return found

    def promote_best(self, pending: Path) -> Path:
        """Rename a pending model_best archive over model_best.keras (atomic, durable)."""
        target = self.model_path("best")
        os.replace(pending, target)
        _fsync_dir(target.parent)
        return target

    def settle_pending_best(self, step: int | None) -> bool:
        """At a resume: promote the pending archive of the checkpoint's best ``step`` (a kill came
        after the checkpoint was written and before the rename), delete every other one (states of
        a path the resume trains again).  True when one was promoted."""
        promoted = False
        for at, path in sorted(self.pending_best().items()):
            if step is not None and at == step:
                self.promote_best(path)
                promoted = True
            else:
                path.unlink(missing_ok=True)
        return promoted

    def best_archive(self, which: str = "final") -> Path:
        """The archive an export writes: ``final`` (model_final), or ``best``: model_best (the
        lineage's state with the best validation score, checked at every lineage epoch); for a run
        folder written before model_best existed, the main-line archive whose last epoch had the
        lowest validation (else training) loss, among model_init, model_<cycle> and model_final."""
        self.open_existing()
        if which == "best" and self.model_path("best").exists():
            return self.model_path("best")
        final = self.model_path("final")
        if which == "final":
            if not final.exists():
                raise InputError(f"{self.root} has no model_final.keras (the run did not finish); "
                                 "export the best model instead, or resume the run first")
            return final
        ends: dict[str, float] = {}
        for row in self.read_history():
            loss = row["val_loss"] if row["val_loss"] is not None else row["loss"]
            if loss is None:
                continue
            name = {"runup": "init", "final": "final"}.get(row["phase"], str(row["cycle"]))
            ends[name] = loss
        found = [(loss, name) for name, loss in ends.items() if self.model_path(name).exists()]
        if not found:
            raise InputError(f"{self.root} holds no main-line archive yet")
        return self.model_path(min(found, key=lambda t: t[0])[1])  # ties: the earlier archive

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / ".miha.lock"

    @contextlib.contextmanager
    def lock(self):
        """Hold the folder's writer lock while a run or a resume writes it.

        A second writer (the app resuming a folder a CLI run is still writing, say) is refused at
        once with the holder's PID.  The lock is the operating system's (``filelock``), so a holder
        that was killed leaves nothing that blocks the next resume.

        Raises:
            FolderLockedError: another live process holds the lock.
        """
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path))
        owner = self.lock_path.with_name(".miha.lock.owner")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                holder = owner.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise FolderLockedError(
                f"{self.root} is being written by another MIHA process (PID {holder}); wait until it ends, or "
                "stop it, then try again") from None
        except OSError as exc:  # a read-only folder, a full disk
            raise RunFolderError(f"cannot write to the run folder {self.root} ({exc.strerror or exc}); fix its "
                                 "permissions or free some space, then try again") from exc
        try:
            owner.write_text(str(os.getpid()))
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def is_run(self) -> bool:
        return self.run_json.is_file()

    def create(self) -> None:
        """Prepare a new run folder; refuse a file, a read-only folder or a folder holding a run."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise RunFolderError(f"run folder {root} is a file; choose a folder path")
        if root.is_dir() and self.is_run():
            raise RunFolderError(
                f"run folder {root} already holds a run; choose a new folder, or continue it with "
                f"'miha resume {root}'"
            )
        if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise RunFolderError(f"run folder {root} is not empty; choose a new or empty folder")
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self.population_dir.mkdir(parents=True, exist_ok=True)
            probe = root / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(
                f"run folder {root} is not writable ({exc.strerror or exc}); choose a folder you can write to"
            ) from exc

    def open_existing(self) -> dict[str, Any]:
        if not self.root.is_dir():
            raise RunFolderError(f"{self.root} is not a folder; give a MIHA run folder")
        if not self.is_run():
            raise RunFolderError(f"{self.root} is not a MIHA run folder (no run.json)")
        try:
            return read_json(self.run_json)
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{self.run_json} cannot be read: {exc}") from exc

    # -- writers -----------------------------------------------------------------------------
    def write_run(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.run_json, info)

    def update_run(self, **changes: Any) -> dict[str, Any]:
        info = read_json(self.run_json) if self.run_json.exists() else {}
        info.update(changes)
        self.write_run(info)
        return info

    def append_event(self, event: Event) -> None:
        line = dumps(event.to_dict()) + "\n"
        with open(self.events_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            out = dict(row)
            out["genes"] = dumps(row.get("genes", {}))
            for key in ("loss", "val_loss"):
                v = out.get(key)
                out[key] = "" if v is None else repr(float(v))
            writer.writerow({k: out.get(k, "") for k in HISTORY_FIELDS})
        atomic_write_text(self.history_path, buf.getvalue())

    def read_history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        rows = []
        with open(self.history_path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({
                    "step": int(row["step"]),
                    "phase": row["phase"],
                    "cycle": int(row["cycle"]),
                    "epoch": int(row["epoch"]),
                    "loss": float(row["loss"]) if row["loss"] else None,
                    "val_loss": float(row["val_loss"]) if row["val_loss"] else None,
                    "genes": json.loads(row["genes"]) if row["genes"] else {},
                })
        return rows

    def write_population(self, population: dict[str, Any]) -> None:
        atomic_write_json(self.population_path, population)

    def read_population(self) -> dict[str, Any]:
        if not self.population_path.exists():
            return {}
        return read_json(self.population_path)

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            return read_json(self.state_path)
        except (OSError, ValueError):
            return None

    def remove_stale_temporaries(self) -> None:
        """Temporary files left by a killed write are never valid: remove them."""
        for folder in (self.root, self.model_dir, self.population_dir):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.startswith(".") and (".partial" in p.name or p.name.endswith(".tmp")):
                        try:
                            p.unlink()
                        except OSError:
                            pass

    def repair_journal(self) -> None:
        """Cut a torn last line (a kill or a full disk mid-write) so the next event starts clean."""
        path = self.events_path
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def drop_superseded(self, cycle: int) -> None:
        """With drop_intermediate, free space after cycle ``cycle``'s checkpoint: its members and
        the earlier main archives are no longer needed (a resume starts from model_<cycle>)."""
        for p in self.population_dir.glob(f"{cycle}_*_model.keras"):
            p.unlink(missing_ok=True)
        for name in ["source", "init"] + [str(c) for c in range(1, cycle)]:
            self.model_path(name).unlink(missing_ok=True)

    def drop_intermediate(self) -> None:
        """Delete every archive but model_final.keras and model_best.keras; logs stay."""
        if self.population_dir.is_dir():
            shutil.rmtree(self.population_dir, ignore_errors=True)
            self.population_dir.mkdir(exist_ok=True)
        for p in self.model_dir.glob("model_*.keras"):
            if p.name not in ("model_final.keras", "model_best.keras"):
                p.unlink(missing_ok=True)
