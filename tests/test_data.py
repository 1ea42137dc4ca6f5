"""Dataset and model file formats: .npz, .h5, .csv, legacy .h5 models; each bad file named."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import miha_engine as me
from miha_engine.data import load_dataset, validate


def test_npz_h5_and_csv_load_the_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 4)).astype("float32")
    y = rng.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:5], y_test=y[:5])
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["x"], h5["y"], h5["x_val"], h5["y_val"] = x, y, x[:6], y[:6]
    header = "a,b,label,c"
    rows = [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(x.tolist(), y.tolist())]
    (tmp_path / "d.csv").write_text("\n".join([header, *rows]) + "\n")
    npz, h5d = load_dataset(tmp_path / "d.npz"), load_dataset(tmp_path / "d.h5")
    csv = load_dataset(tmp_path / "d.csv", target="label")
    assert np.array_equal(npz.x, x) and np.array_equal(h5d.y, y) and npz.has_test and h5d.has_validation
    assert csv.x.shape == (30, 3) and np.array_equal(csv.y, y) and csv.y.dtype.kind == "i"
    np.testing.assert_allclose(csv.x[:, 2], x[:, 2], rtol=1e-6)
    last = load_dataset(tmp_path / "d.csv")  # default target: the last column
    np.testing.assert_allclose(last.y, x[:, 2], rtol=1e-6)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.npz", b"", "is empty"),
        ("junk.npz", b"not a zip at all", "not a valid .npz"),
        ("junk.h5", b"not hdf5", "not a valid HDF5"),
        ("data.txtx", b"1,2", "unknown dataset format"),
        ("text.csv", b"a,b\nx,y\n", "non-numeric"),
        ("ragged.csv", b"1,2,3\n4,5\n", "has 2 columns"),
        ("one.csv", b"1\n2\n", "at least two columns"),
    ],
)
def test_bad_dataset_files_say_what_is_wrong(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(me.DatasetError, match=message):
        load_dataset(path)


def test_missing_dataset_and_unknown_csv_column(tmp_path):
    with pytest.raises(me.DatasetError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(me.DatasetError, match="no column named 'z'"):
        load_dataset(tmp_path / "d.csv", target="z")


@pytest.mark.parametrize(
    "x, y, task, message",
    [
        (np.zeros((0, 4)), np.zeros(0), "sparse_categorical", "empty"),
        (np.zeros((5, 4)), np.zeros(4), "sparse_categorical", "must be equal"),
        (np.zeros((5, 3)), np.zeros(5), "sparse_categorical", "expects"),
        (np.full((5, 4), np.inf), np.zeros(5), "sparse_categorical", "NaN or infinite"),
        (np.full((5, 4), 1e9), np.zeros(5), "sparse_categorical", "scale the inputs"),
        (np.zeros((5, 4)), np.full(5, 0.5), "sparse_categorical", "non-integer"),
        (np.zeros((5, 4)), np.full(5, -1), "sparse_categorical", "range -1..-1"),
        (np.zeros((5, 4)), np.zeros((5, 2)), "categorical", "one-hot"),
        (np.zeros((5, 4)), np.full(5, 2.0), "binary", r"\[0, 1\]"),
        (np.zeros((5, 4)), np.zeros((5, 2)), "regression", "must match"),
        (np.zeros((5, 4)), np.full(5, np.nan), "regression", "NaN"),
    ],
)
def test_validation_against_the_model(x, y, task, message):
    out = (None, 3) if task != "binary" and task != "regression" else (None, 1)
    with pytest.raises(me.DatasetError, match=message):
        validate(me.from_arrays(x, y), (None, 4), out, task)


def test_object_arrays_are_refused():
    with pytest.raises(me.DatasetError, match="not numbers"):
        me.from_arrays(np.array(["a", "b"]), np.zeros(2))


def test_legacy_h5_model_loads_and_runs(tmp_path, small_digits):
    from miha_engine.testing import dense_classifier

    x, y, xt, yt = small_digits
    path = tmp_path / "legacy.h5"
    dense_classifier().save(path)
    model = me.load_model(path)
    info = me.summarize(model)
    assert info.loss is not None and [layer.path for layer in info.layers] == ["hidden", "out"]
    cfg = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=0, cycles=1, population_size=2)
    res = me.run(path, me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=tmp_path / "run")
    assert res.status == "finished" and res.final_model.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.keras", b"", "is empty"),
        ("notes.txt", b"hello", "unknown model format"),
        ("broken.h5", b"GIF89a....", "not an HDF5 file"),
        ("broken.keras", b"PK\x03\x04 truncated zip", "not a Keras archive|corrupt"),
    ],
)
def test_bad_model_files_say_what_is_wrong(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(me.ModelLoadError, match=message):
        me.load_model(path)


def test_unregistered_custom_layer_is_explained(tmp_path):
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((4,)), Doubler(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "custom.keras"
    model.save(path)
    with pytest.raises(me.ModelLoadError, match="custom layer") as info:
        me.load_model(path)
    assert "register_keras_serializable" in str(info.value)
