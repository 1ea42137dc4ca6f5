"""Small real models and data for tests, examples and the demo (no download, no mock)."""

from __future__ import annotations

import numpy as np


def digits(n_test: int = 297, seed: int = 0):
    """scikit-learn's 8×8 digits (1,797 real samples, shipped with scikit-learn), scaled to [0, 1].

    Returns ``(x, y, x_test, y_test)``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def dense_classifier(inputs: int = 64, hidden: int = 16, classes: int = 10, optimizer: str = "adam", seed: int = 0):
    """A compiled Sequential FNN: inputs → hidden (relu) → classes (softmax)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(classes, activation="softmax", name="out"),
    ], name="fnn")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def residual_classifier(inputs: int = 64, width: int = 16, classes: int = 10, seed: int = 0):
    """A compiled Functional model with a residual branch and a nested Sequential block."""
    import keras

    keras.utils.set_random_seed(seed)
    x_in = keras.Input((inputs,), name="x")
    h = keras.layers.Dense(width, activation="relu", name="stem")(x_in)
    block = keras.Sequential([
        keras.Input((width,)),
        keras.layers.Dense(width, activation="tanh", name="inner_a"),
        keras.layers.Dense(width, activation="relu", name="inner_b"),
    ], name="block")
    r = keras.layers.Add(name="add")([h, block(h)])
    r = keras.layers.Activation("relu", name="post")(r)
    out = keras.layers.Dense(classes, activation="softmax", name="out")(r)
    model = keras.Model(x_in, out, name="resnet_tiny")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
