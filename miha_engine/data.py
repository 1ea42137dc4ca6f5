"""Datasets: load ``.npz``/``.h5``/``.csv`` (or take arrays), split, and check them against a model.

Nothing here imports Keras, so the app can inspect a dataset before TensorFlow has loaded.
Files are loaded safely: ``np.load(allow_pickle=False)``, and object arrays are refused.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError

SPLIT_KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")


@dataclass
class Dataset:
    """Arrays for training, and optionally validation and test."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = "arrays"

    @property
    def n_train(self) -> int:
        return int(len(self.x))

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0

    @property
    def has_test(self) -> bool:
        return self.x_test is not None and len(self.x_test) > 0

    def with_validation_split(self, fraction: float, seed: int) -> Dataset:
        """Hold out ``fraction`` of the training data (a seeded shuffle) unless x_val is given."""
        if self.has_validation or fraction <= 0:
            return self
        n = len(self.x)
        n_val = int(round(n * fraction))
        if n_val < 1 or n - n_val < 1:
            return self
        order = np.random.default_rng(seed).permutation(n)
        val_idx, train_idx = order[:n_val], order[n_val:]
        return Dataset(
            x=self.x[train_idx], y=self.y[train_idx], x_val=self.x[val_idx], y_val=self.y[val_idx],
            x_test=self.x_test, y_test=self.y_test, source=self.source,
        )


def _check_array(name: str, arr: object, source: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        try:
            arr = np.asarray(arr)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad dataset
            raise DatasetError(f"{source}: array {name!r} cannot be read as numbers ({exc})") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DatasetError(
            f"{source}: array {name!r} has dtype {arr.dtype}, not numbers; save it as a numeric array "
            "(float32 features, integer or float labels)"
        )
    if arr.ndim == 0:
        raise DatasetError(f"{source}: array {name!r} is a single value, not a dataset")
    return arr


def from_arrays(x, y, x_val=None, y_val=None, x_test=None, y_test=None, source: str = "arrays") -> Dataset:
    arrays = dict(x=x, y=y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    checked = {k: (None if v is None else _check_array(k, v, source)) for k, v in arrays.items()}
    for a, b in (("x_val", "y_val"), ("x_test", "y_test")):
        if (checked[a] is None) != (checked[b] is None):
            raise DatasetError(f"{source}: {a} and {b} must be given together")
    return Dataset(source=source, **checked)


def load_dataset(path: str | Path, target: str | None = None) -> Dataset:
    """Load a dataset file.

    ``.npz`` and ``.h5``/``.hdf5`` hold arrays named x, y and optionally x_val, y_val, x_test,
    y_test.  A ``.csv`` file's target is its last column unless ``target`` names one.
    """
    path = Path(path)
    source = path.name
    if not path.exists():
        raise DatasetError(f"dataset file not found: {path}")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; give a .npz, .h5 or .csv file")
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset file {path} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, source)
    if suffix in (".h5", ".hdf5"):
        return _load_h5(path, source)
    if suffix in (".csv", ".txt"):
        return _load_csv(path, source, target)
    raise DatasetError(f"{path}: unknown dataset format {suffix or '(none)'}; use .npz, .h5/.hdf5 or .csv")


def _pick(found: dict[str, np.ndarray], source: str, available: list[str]) -> Dataset:
    missing = [k for k in ("x", "y") if k not in found]
    if missing:
        raise DatasetError(
            f"{source}: missing array(s) {', '.join(missing)}; the file holds {', '.join(available) or 'nothing'}. "
            "Store the inputs as 'x' and the targets as 'y' (optionally x_val, y_val, x_test, y_test)"
        )
    return from_arrays(**{k: found.get(k) for k in SPLIT_KEYS}, source=source)


def _load_npz(path: Path, source: str) -> Dataset:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{source}: not a valid .npz file (not a zip archive); save the arrays with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            found = {}
            for k in SPLIT_KEYS:
                if k in names:
                    found[k] = npz[k]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DatasetError(
                f"{source}: holds pickled/object arrays, which MIHA refuses to load for safety; "
                "save plain numeric arrays with numpy.savez"
            ) from exc
        raise DatasetError(f"{source}: not a valid .npz file ({exc})") from exc
    except (OSError, EOFError, Exception) as exc:  # noqa: BLE001 - zip errors come in many types
        raise DatasetError(f"{source}: not a valid .npz file ({type(exc).__name__}: {exc})") from exc
    return _pick(found, source, names)


def _load_h5(path: Path, source: str) -> Dataset:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            names = list(h5.keys())
            found = {}
            for k in SPLIT_KEYS:
                if k in h5:
                    obj = h5[k]
                    if not isinstance(obj, h5py.Dataset):
                        raise DatasetError(f"{source}: '{k}' is a group, not an array")
                    if obj.dtype.kind not in "biuf":
                        raise DatasetError(f"{source}: array '{k}' has dtype {obj.dtype}, not numbers")
                    found[k] = obj[()]
    except DatasetError:
        raise
    except (OSError, Exception) as exc:  # noqa: BLE001
        raise DatasetError(f"{source}: not a valid HDF5 file ({exc})") from exc
    return _pick(found, source, names)


def _load_csv(path: Path, source: str, target: str | None) -> Dataset:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{source}: cannot be read as text CSV ({exc})") from exc
    if not rows:
        raise DatasetError(f"{source}: no rows")
    header: list[str] | None = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DatasetError(f"{source}: a header but no data rows")
    width = len(rows[0])
    if width < 2:
        raise DatasetError(f"{source}: needs at least two columns (features and a target)")
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DatasetError(f"{source}: row {i + 1 + (header is not None)} has {len(r)} columns, expected {width}")
    try:
        table = np.array([[float(c) for c in r] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{source}: non-numeric value ({exc}); MIHA reads numeric CSV only") from exc
    col = width - 1
    if target is not None:
        if header is None or target not in header:
            raise DatasetError(
                f"{source}: no column named {target!r}; columns are {', '.join(header or []) or '(no header)'}"
            )
        col = header.index(target)
    y = table[:, col]
    x = np.delete(table, col, axis=1).astype(np.float32)
    if np.all(np.equal(np.mod(y, 1), 0)):
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float32)
    return from_arrays(x, y, source=source)


# -- validation against a model -----------------------------------------------------------------

def _fmt(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def validate(dataset: Dataset, input_shape, output_shape, task: str) -> None:
    """Check a dataset against a model before any training.

    Args:
        input_shape: the model's input shape including the batch axis (``(None, 784)``).
        output_shape: the model's output shape including the batch axis.
        task: "sparse_categorical", "categorical", "binary" or "regression" (from the loss).

    Raises:
        DatasetError: with a sentence saying what is wrong and what to do.
    """
    src = dataset.source
    pairs = [("x", "y", dataset.x, dataset.y)]
    if dataset.x_val is not None:
        pairs.append(("x_val", "y_val", dataset.x_val, dataset.y_val))
    if dataset.x_test is not None:
        pairs.append(("x_test", "y_test", dataset.x_test, dataset.y_test))
    if isinstance(input_shape, list):
        raise DatasetError("models with several inputs are not supported yet; give a model with one input")
    if isinstance(output_shape, list):
        raise DatasetError("models with several outputs are not supported yet; give a model with one output")
    for xn, yn, x, y in pairs:
        if len(x) == 0:
            raise DatasetError(f"{src}: '{xn}' is empty; a dataset needs at least one sample")
        if len(x) != len(y):
            raise DatasetError(f"{src}: '{xn}' has {len(x)} samples but '{yn}' has {len(y)}; they must be equal")
        if x.size == 0 or y.size == 0:
            empty = xn if x.size == 0 else yn
            raise DatasetError(f"{src}: the samples of '{empty}' hold no values (shape {_fmt(x.shape if x.size == 0 else y.shape)})")
        want = tuple(input_shape[1:])
        got = tuple(x.shape[1:])
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
            raise DatasetError(
                f"{src}: '{xn}' samples have shape {_fmt(got)} but the model expects {_fmt(want)}; "
                "reshape the data or choose the matching model"
            )
        if not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise DatasetError(f"{src}: '{xn}' holds {bad} NaN or infinite value(s); clean or impute them first")
        if x.dtype.kind == "f" and np.max(np.abs(x)) > 1e6:
            raise DatasetError(
                f"{src}: '{xn}' holds values up to {float(np.max(np.abs(x))):.3g}; scale the inputs "
                "(e.g. to [0, 1] or zero mean, unit variance) before training"
            )
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise DatasetError(f"{src}: '{yn}' holds NaN or infinite values; clean them first")
        _validate_targets(src, yn, y, output_shape, task)


def _validate_targets(src: str, yn: str, y: np.ndarray, output_shape, task: str) -> None:
    out = tuple(output_shape[1:])
    width = out[-1] if out else 1
    if task == "sparse_categorical":
        yy = y.reshape(len(y), -1)
        if yy.shape[1] != 1:
            raise DatasetError(
                f"{src}: '{yn}' has shape {_fmt(y.shape)}, but the loss expects one class index per sample; "
                "give integer labels, or use categorical_crossentropy for one-hot targets"
            )
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise DatasetError(f"{src}: '{yn}' holds non-integer values, but the loss expects class indices 0..{width - 1}")
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= width:
            raise DatasetError(
                f"{src}: labels in '{yn}' range {lo}..{hi}, but the model's output has {width} classes (0..{width - 1}); "
                "fix the labels or give a model with more output units"
            )
    elif task == "categorical":
        if tuple(y.shape[1:]) != out:
            raise DatasetError(
                f"{src}: '{yn}' has shape {_fmt(y.shape)}, but the model outputs {_fmt(output_shape)}; "
                "give one-hot targets of that width, or use sparse_categorical_crossentropy for class indices"
            )
    elif task == "binary":
        if np.min(y) < 0 or np.max(y) > 1:
            raise DatasetError(f"{src}: '{yn}' must lie in [0, 1] for binary cross-entropy")
        if y.size // max(len(y), 1) != int(np.prod([d for d in out if d is not None] or [1])):
            raise DatasetError(f"{src}: '{yn}' has shape {_fmt(y.shape)}, the model outputs {_fmt(output_shape)}")
    else:
        got = tuple(y.shape[1:])
        squeezed_ok = (got == () and out in ((1,), ())) or (got == (1,) and out == ())
        if not squeezed_ok and (len(got) != len(out) or any(o is not None and o != g for o, g in zip(out, got))):
            raise DatasetError(
                f"{src}: '{yn}' samples have shape {_fmt(got)} but the model outputs {_fmt(out)}; "
                "the targets must match the model's output"
            )
