"""Where MIHA's memory growth comes from: build, compile, train and drop the same small model again
and again, and watch RSS and whether the dropped models are really freed.

    python benchmarks/tf_trace_memory.py [plain|clear|nograppler]

``clear`` calls ``keras.backend.clear_session()`` after each model; ``nograppler`` turns TensorFlow's
graph optimiser off.  Prints, per model: RSS in MB and how many dropped models are still alive.
"""

from __future__ import annotations

import gc
import os
import sys
import weakref
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE))


def main() -> None:
    import keras
    import mnist_fnn
    import tensorflow as tf
    from memory import rss_mb

    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if mode == "nograppler":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    x, y, _, _ = mnist_fnn.load(quick=False)
    ds = tf.data.Dataset.from_tensor_slices((x[:1000], y[:1000])).batch(32)
    base = mnist_fnn.build(0)
    refs = []
    for i in range(12):
        m = keras.Sequential.from_config(base.get_config())
        m.set_weights(base.get_weights())
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", steps_per_execution=16)
        m.fit(ds, epochs=1, verbose=0, validation_data=ds)
        refs.append(weakref.ref(m))
        del m
        gc.collect()
        if mode == "clear":
            keras.backend.clear_session(free_memory=True)
        print(f"model {i:2d}: RSS {rss_mb():.0f} MB, dropped models still alive: {sum(r() is not None for r in refs)}")


if __name__ == "__main__":
    main()
