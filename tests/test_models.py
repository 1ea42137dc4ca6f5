"""Mutations applied to real Keras models: weights exact, optimizer state carried, outputs valid."""

from __future__ import annotations

import numpy as np

from miha_engine import models as mdl
from miha_engine.config import RunConfig
from miha_engine.testing import dense_classifier, residual_classifier


def _trained(model, x, y):
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return model


def _member(parent, parent_genes, genes, spec, spe=4, jit=False):
    """A population member the way the runner makes one: a pooled compiled model, restored from the
    parent's snapshot."""
    pool = mdl.ModelPool(parent, spec, spe, jit)
    child = pool.get(genes)
    mdl.restore(child, mdl.snapshot(parent, parent_genes), genes)
    return child


def _setup(model, y):
    """The compile spec, activation slots and initial genes the runner derives from a model."""
    spec = mdl.compile_spec(model, RunConfig())
    choices, notes = mdl.activation_choices(model, spec, RunConfig(), y)
    return spec, choices, mdl.initial_genes(model, spec, RunConfig(), choices), notes


def test_rebuild_changes_activation_and_keeps_every_weight(small_digits):
    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    spec, choices, genes, _ = _setup(model, y)
    new_genes = genes.with_activation("hidden", "elu")
    child = _member(model, genes, new_genes, spec, 4, "auto")
    assert child.get_layer("hidden").get_config()["activation"] == "elu"
    assert len(child.get_weights()) == len(model.get_weights())
    for a, b in zip(model.get_weights(), child.get_weights()):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert child.count_params() == model.count_params()


def test_optimizer_state_is_carried_exactly(small_digits):
    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    spec, choices, genes, _ = _setup(model, y)
    child = _member(model, genes, genes.replace(learning_rate=5e-4), spec, 1, False)
    src, dst = model.optimizer.variables, child.optimizer.variables
    assert int(np.asarray(child.optimizer.iterations)) == int(np.asarray(model.optimizer.iterations)) > 0
    moments = [i for i, v in enumerate(src) if "momentum" in v.name or "velocity" in v.name]
    assert len(moments) == 2 * len(model.trainable_variables)
    for i in moments:
        assert src[i].name.endswith(dst[i].name) or dst[i].name.endswith(src[i].name)
        assert np.abs(np.asarray(src[i])).sum() > 0
        assert np.array_equal(np.asarray(src[i]), np.asarray(dst[i])), src[i].name
    assert np.isclose(float(np.asarray(child.optimizer.learning_rate)), 5e-4)
    # a switch to another optimizer starts a fresh state with the new rate
    switched = _member(model, genes, genes.replace(optimizer="sgd", learning_rate=0.01), spec, 1, False)
    assert type(switched.optimizer).__name__ == "SGD"
    for a, b in zip(model.get_weights(), switched.get_weights()):
        assert np.array_equal(a, b)


def test_output_activation_is_restricted_by_the_loss(small_digits):
    x, y, _, _ = small_digits
    model = dense_classifier()
    spec = mdl.compile_spec(model, RunConfig())
    choices, notes = mdl.activation_choices(model, spec, RunConfig(), y)
    assert "out" not in choices and any("softmax kept" in n for n in notes)
    assert "hidden" in choices


def test_regression_output_may_take_activations_covering_the_targets():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid", name="o")])
    model.compile("adam", "mse")
    spec = mdl.compile_spec(model, RunConfig())
    choices, _ = mdl.activation_choices(model, spec, RunConfig(), np.linspace(0, 1, 10))
    assert set(choices["o"]) >= {"sigmoid", "linear", "relu"} and "softmax" not in choices["o"]
    choices, _ = mdl.activation_choices(model, spec, RunConfig(), np.linspace(-5, 5, 10))
    assert "sigmoid" not in choices["o"] or choices["o"][0] == "sigmoid"
    assert "relu" not in choices["o"]


def test_functional_residual_nested_model_rebuilds(small_digits):
    x, y, _, _ = small_digits
    model = _trained(residual_classifier(), x, y)
    spec = mdl.compile_spec(model, RunConfig())
    choices, _ = mdl.activation_choices(model, spec, RunConfig(), y)
    assert {"stem", "block/inner_a", "block/inner_b", "post"} <= set(choices)
    genes = mdl.initial_genes(model, spec, RunConfig(), choices)
    new = genes.with_activation("block/inner_a", "gelu").with_activation("post", "selu")
    child = _member(model, genes, new, spec, 2, "auto")
    acts = {p: layer.get_config().get("activation") for p, layer in mdl.iter_layers(child)}
    assert acts["block/inner_a"] == "gelu" and acts["post"] == "selu" and acts["stem"] == "relu"
    for a, b in zip(model.get_weights(), child.get_weights()):
        assert np.array_equal(a, b)
    child.fit(x, y, epochs=1, verbose=0)


def test_safe_save_load_round_trip(tmp_path, small_digits):
    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    path = mdl.save_model(model, tmp_path / "m.keras")
    assert not list(tmp_path.glob(".*"))
    loaded = mdl.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:5], verbose=0), model.predict(x[:5], verbose=0), rtol=1e-5)
    info = mdl.summarize(loaded)
    assert info.loss == "sparse_categorical_crossentropy" and info.optimizer == "adam"
    assert [layer.path for layer in info.layers] == ["hidden", "out"]


def test_pool_reuses_compiled_models_and_restores_state_exactly(small_digits):
    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    spec, choices, genes, _ = _setup(model, y)
    pool = mdl.ModelPool(model, spec, 4, "auto", max_size=2)
    parent = mdl.snapshot(model, genes)
    a = pool.get(genes.replace(learning_rate=2e-3))
    assert mdl.restore(a, parent, genes.replace(learning_rate=2e-3))
    for w0, w1 in zip(model.get_weights(), a.get_weights()):
        assert np.array_equal(w0, w1)
    # every optimizer variable equal except the learning rate, which is the new one
    for v0, v1 in zip(model.optimizer.variables, a.optimizer.variables):
        if "learning_rate" in v0.name:
            assert np.isclose(float(np.asarray(v1)), 2e-3)
        else:
            assert np.array_equal(np.asarray(v0), np.asarray(v1)), v0.name
    # same activations and optimizer: the same compiled model comes back
    assert pool.get(genes.replace(batch_size=64)) is a and pool.reused == 1
    # another optimizer kind: fresh state, new rate, same weights
    g2 = genes.replace(optimizer="rmsprop", learning_rate=1e-3)
    b = pool.get(g2)
    assert not mdl.restore(b, parent, g2)
    assert int(np.asarray(b.optimizer.iterations)) == 0
    assert all(np.array_equal(w0, w1) for w0, w1 in zip(model.get_weights(), b.get_weights()))
    # the pool is bounded
    pool.get(genes.with_activation("hidden", "tanh"))
    assert len(pool._models) == 2 and pool.built == 3
    a.fit(x, y, epochs=1, verbose=0)


def test_switching_optimizer_starts_from_a_truly_fresh_state(small_digits):
    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    spec, _, genes, _ = _setup(model, y)
    pool = mdl.ModelPool(model, spec, 4, False)
    for name, value in (("nadam", 1.0), ("adagrad", 0.1)):
        g = genes.replace(optimizer=name, learning_rate=1e-3)
        member = pool.get(g)
        member.fit(x, y, epochs=1, verbose=0)  # dirty its state, as a previous member would
        mdl.restore(member, mdl.snapshot(model, genes), g)
        opt = member.optimizer
        values = [np.asarray(opt._u_product)] if name == "nadam" else [
            np.asarray(v) for v in opt.variables if "accumulator" in v.name]
        assert values and all(np.allclose(v, value) for v in values), name
        assert int(np.asarray(member.optimizer.iterations)) == 0


def test_a_mixed_precision_model_is_refused_with_what_to_do(tmp_path, small_digits):
    # its members' optimizers would lose the loss scale and train to NaN: refused before anything runs
    import keras
    import pytest

    import miha_engine as me

    x, y, _, _ = small_digits
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax", dtype="float32")])
        model.compile("adam", "sparse_categorical_crossentropy")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(me.ModelLoadError, match="mixed precision.*set_global_policy\\('float32'\\)"):
        me.run(model, me.from_arrays(x, y), RunConfig(runup_epochs=1, cycles=0), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()


def test_an_archive_written_later_from_a_copy_is_keras_own_archive_of_the_state_at_the_copy(small_digits, tmp_path):
    # the loop copies a model's state and writes its archive on another thread while training goes
    # on: the file must be what model.save writes at the copy (config, every variable of the model
    # and of its optimizer, the same h5 layout), untouched by training after the copy, and load safely
    import pickle
    import zipfile

    import h5py

    x, y, _, _ = small_digits
    model = _trained(dense_classifier(), x, y)
    mdl.save_model(model, tmp_path / "keras.keras")
    writer = mdl.archive_writer(model)
    before = [w.copy() for w in model.get_weights()]
    _trained(model, x, y)  # the state moves on before the write
    writer(tmp_path / "later.keras")
    # a Ray worker returns the copy to the driver, which writes it: the same archive after pickling
    pickle.loads(pickle.dumps(writer))(tmp_path / "shipped.keras")

    def contents(path):
        with zipfile.ZipFile(path) as zf:
            names = sorted(zf.namelist())
            config = zf.read("config.json")
            h5 = tmp_path / f"{path.stem}.h5"
            h5.write_bytes(zf.read("model.weights.h5"))
        datasets = {}
        with h5py.File(h5) as f:
            f.visititems(lambda name, obj: datasets.__setitem__(name, np.array(obj)) if isinstance(obj, h5py.Dataset)
                         else datasets.__setitem__(name, dict(obj.attrs)))
        return names, config, datasets

    names, config, datasets = contents(tmp_path / "keras.keras")
    later = contents(tmp_path / "later.keras")
    shipped = contents(tmp_path / "shipped.keras")
    assert shipped[0] == later[0] and shipped[1] == later[1] and shipped[2].keys() == later[2].keys()
    for key, value in later[2].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(shipped[2][key], value)
    assert later[0] == names and later[1] == config and later[2].keys() == datasets.keys()
    assert any(k.startswith("optimizer/") for k in datasets) and len(datasets) > 8
    for key, value in datasets.items():  # every variable's values, every group's metadata
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(later[2][key], value)
        else:
            assert later[2][key] == value
    loaded = mdl.load_model(tmp_path / "later.keras")
    for a, b in zip(loaded.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
