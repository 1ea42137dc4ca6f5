"""Every deployment format on the project's two example models: the largest difference between the
export's outputs (run by its own runtime) and the Keras model's, on held-out samples.

    python benchmarks/export_check.py [--out benchmarks/records]

Each model is trained a few epochs first (an untrained network's outputs are too uniform to show a
difference), saved as .keras, then exported through ``miha_engine.export.export_model``, which
checks every export and refuses one that differs by more than 1e-3.  Writes ``DIR/export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

TARGETS = {"keras": "model.keras", "h5": "model.h5", "savedmodel": "model_savedmodel", "tflite": "model.tflite",
           "onnx": "model.onnx"}


def models():
    import gapfill_cnn
    import mnist_fnn

    x, y, xt, yt = mnist_fnn.load(quick=False)
    fnn = mnist_fnn.build(0)
    fnn.fit(x, y, epochs=2, batch_size=32, verbose=0)
    yield "MNIST FNN 784-400-10", fnn, xt[:500]
    px, py, mask = gapfill_cnn.make_patches()
    (tx, ty, _), (vx, _, _) = gapfill_cnn.split(px, py, mask)
    cnn = gapfill_cnn.build(False, 0)
    cnn.fit(tx, ty, epochs=2, batch_size=32, verbose=0)
    yield "gap-filling CNN autoencoder (32×32×2 → 32×32×1)", cnn, vx[:193]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    from miha_engine.export import export_model

    records = []
    tmp = Path(tempfile.mkdtemp(prefix="miha-export-"))
    for name, model, x in models():
        src = tmp / f"{len(records)}.keras"
        model.save(src)
        for fmt, target in TARGETS.items():
            out = tmp / f"{len(records)}-{target}"
            report = export_model(src, out, fmt, x=x, sample_origin="held-out samples")
            records.append({"system": "miha", "task": name, "metric": "max_abs_diff", "format": fmt,
                            "value": report.max_abs_diff, "samples": report.samples, "seconds": report.seconds})
            print(f"{name:52s} {fmt:11s} max |diff| {report.max_abs_diff:.2e} on {report.samples} samples "
                  f"({report.seconds:.1f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").write_text(json.dumps({"records": records}, indent=1))


if __name__ == "__main__":
    main()
