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

import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunFolderError
from .events import Event, event_from_dict

HISTORY_FIELDS = ("step", "phase", "cycle", "epoch", "loss", "val_loss", "genes")


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def temp_archive_path(final: Path) -> Path:
    """A hidden temporary name in the same folder, ending in .keras as Keras requires."""
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

    # -- lifecycle ---------------------------------------------------------------------------
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

    def drop_intermediate(self) -> None:
        """Delete every archive but model_final.keras; logs stay."""
        if self.population_dir.is_dir():
            shutil.rmtree(self.population_dir, ignore_errors=True)
            self.population_dir.mkdir(exist_ok=True)
        for p in self.model_dir.glob("model_*.keras"):
            if p.name != "model_final.keras":
                p.unlink(missing_ok=True)
