"""Peak RSS of `miha run` at the article's configuration, as a user runs it.

    python benchmarks/peak_rss.py [--recycle-after 12 4] [--out benchmarks/records]

The MNIST FNN (784-400-10, Adam, batch 32) on the examples' 4,500 digits, m=10 c=10 pop=5 n=3 k=3
(200 compute epochs). Each setting runs the CLI in a child process; its peak RSS is the child's
``ru_maxrss`` (a recycled engine re-executes itself in the same process, so the peak covers every
part of the run).

``--floors`` also measures, the same way, what the framework takes without MIHA: a child that only
imports TensorFlow and Keras, and a child that trains the same model on the same data with Keras'
default ``fit`` for the same 200 epochs (batch 32, the same validation split).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def _files(folder: Path) -> tuple[Path, Path]:
    import mnist_fnn
    import numpy as np

    x, y, xt, yt = mnist_fnn.load(quick=False)
    model_path, data_path = folder / "fnn.keras", folder / "mnist.npz"
    mnist_fnn.build(0).save(model_path)
    np.savez(data_path, x=x, y=y, x_test=xt, y_test=yt)
    return model_path, data_path


_FLOOR_IMPORT = "import tensorflow, keras"
_FLOOR_FIT = """
import sys, numpy as np, keras
d = np.load(sys.argv[2], allow_pickle=False)
model = keras.saving.load_model(sys.argv[1])
model.fit(d["x"], d["y"], batch_size=32, epochs=200, validation_split=0.1, verbose=0)
print("test", model.evaluate(d["x_test"], d["y_test"], verbose=0))
"""


def _peak_of(cmd: list[str]) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in MB, wall seconds, output) of ``cmd`` run in a child of a fresh parent."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stdout + r.stderr); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    code, peak_kb = (int(v) for v in out.stdout.split()[-2:])
    return code, peak_kb / 1024, wall, out.stderr


def floors(model: Path, data: Path) -> list[dict]:
    records = []
    for name, cmd in (("import TensorFlow and Keras", [sys.executable, "-c", _FLOOR_IMPORT]),
                      ("Keras' default fit, 200 epochs", [sys.executable, "-c", _FLOOR_FIT, str(model), str(data)])):
        code, peak, wall, err = _peak_of(cmd)
        if code != 0:
            raise SystemExit(f"{name} failed ({code}): {err[-2000:]}")
        records.append({"floor": name, "peak_rss_mb": peak, "wall_s": wall})
    return records


def peak_of_run(model: Path, data: Path, recycle_after: int, run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data),
           "-m", "10", "-n", "3", "-k", "3", "-c", "10", "-p", "5", "--batch-size", "32", "--seed", "0",
           "--recycle-after", str(recycle_after), "--run-dir", str(run_dir)]
    # a fresh parent per setting: ru_maxrss of children is the largest child a process has waited for
    code, peak, wall, err = _peak_of(cmd)
    if code != 0:
        raise SystemExit(f"miha run failed ({code}): {err[-2000:]}")
    restarts = err.count("restarts in a fresh process")
    return {"recycle_after": recycle_after, "peak_rss_mb": peak, "wall_s": wall, "restarts": restarts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recycle-after", type=int, nargs="+", default=[12])
    ap.add_argument("--out", default=str(HERE / "records"))
    ap.add_argument("--floors", action="store_true",
                    help="also the peak RSS of importing TensorFlow and Keras, and of Keras' default fit of the model")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="miha-peak-"))
    model, data = _files(tmp)
    records = []
    for r in args.recycle_after:
        rec = peak_of_run(model, data, r, tmp / f"run-{r}")
        records.append(rec)
        print(f"recycle_after={r}: peak RSS {rec['peak_rss_mb']:.0f} MB, wall {rec['wall_s']:.1f} s, "
              f"{rec['restarts']} restart(s)", flush=True)
    for rec in floors(model, data) if args.floors else ():
        records.append(rec)
        print(f"{rec['floor']}: peak RSS {rec['peak_rss_mb']:.0f} MB, wall {rec['wall_s']:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peak-rss-article.json").write_text(json.dumps({"records": records}, indent=2))


if __name__ == "__main__":
    main()
