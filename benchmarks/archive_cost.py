"""What an archive costs the training thread: Keras' own save against the copy the engine makes.

    python benchmarks/archive_cost.py [--calls 30] [--out benchmarks/records]

The MNIST FNN (784-400-10, Adam) after one epoch, set up as a run sets it up (`KerasBackend`). Each
figure is the mean of ``--calls`` calls: ``models.save_model`` (Keras' ``model.save`` through
``atomic_write``, what the training thread did before part 7); ``models.archive_writer`` (the copy
the training thread makes now: Keras' config JSON and every variable's value), split into its two
parts; and the writer it returns (the zip, the h5 file and the fsyncs, run on the archive thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--out", default=str(HERE / "records"))
    ap.add_argument("--name", default="archive-cost")
    args = ap.parse_args(argv)

    import mnist_fnn
    from keras.src.saving import saving_lib

    import miha_engine as me
    from miha_engine import models as mdl
    from miha_engine.backend import KerasBackend
    from miha_engine.training import CancelToken

    x, y, xt, yt = mnist_fnn.load(quick=True)
    backend = KerasBackend.prepare(mnist_fnn.build(0), me.from_arrays(x, y, x_test=xt, y_test=yt),
                                   me.RunConfig(batch_size=32), CancelToken())
    genes = backend.initial_genes()
    backend.start(genes)
    backend.train_main(genes, 1, lambda *a: None, shuffle=1)
    model = backend.main
    folder = Path(tempfile.mkdtemp(prefix="miha-archive-cost-"))

    def mean_ms(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(args.calls):
            fn()
        return (time.perf_counter() - t) / args.calls * 1000

    def walk():
        store = mdl._recording_store(saving_lib.H5IOStore)()
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())

    writer = mdl.archive_writer(model)
    rec = {
        "keras_save_ms": mean_ms(lambda: mdl.save_model(model, folder / "keras.keras")),
        "copy_ms": mean_ms(lambda: mdl.archive_writer(model)),
        "copy_config_json_ms": mean_ms(lambda: saving_lib._serialize_model_as_json(model)),
        "copy_variables_walk_ms": mean_ms(walk),
        "write_on_the_archive_thread_ms": mean_ms(lambda: writer(folder / "later.keras")),
        "calls": args.calls,
        "params": int(model.count_params()),
    }
    for key, value in rec.items():
        print(f"{key:>32}: {value:.2f}" if isinstance(value, float) else f"{key:>32}: {value}")
    print(f"the training thread's share: {rec['copy_ms'] / rec['keras_save_ms']:.2f}× of Keras' save")
    path = Path(args.out) / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"records": [rec]}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
