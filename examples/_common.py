"""Shared bits of the examples: timing, results JSON, a plain-fit baseline."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: Where the committed results live: only full runs, written with ``--out examples/results``.
COMMITTED = Path(__file__).resolve().parent / "results"
#: Where a user's run writes its results unless told otherwise: never a file git tracks.
DEFAULT_OUT = Path("miha-results")


def add_out_option(ap) -> None:
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help=f"folder for the results JSON (default ./{DEFAULT_OUT}; the project's committed full "
                         "results are written with --out examples/results)")


def write_results(name: str, data: dict, out: str | Path = DEFAULT_OUT) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path


def plain_fit(model, x, y, x_val, y_val, epochs: int, batch_size: int, seed: int) -> tuple[object, float]:
    """Train ``model`` plainly with Keras' own ``fit`` for ``epochs``; returns (model, wall seconds)."""
    import keras

    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model, time.perf_counter() - t0
