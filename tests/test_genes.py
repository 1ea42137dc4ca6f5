"""The genes that act on generalisation (weight decay, Dropout rates, label smoothing) on real Keras
models: each changes training as it claims, weight decay and dropout without a new traced step, and a
member's state moves exactly between pooled models, archives and the main line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import miha_engine as me
from miha_engine import events as ev
from miha_engine import models as mdl
from miha_engine.backend import KerasBackend
from miha_engine.fitness import as_loss, fitness
from miha_engine.training import CancelToken

CFG = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=1, population_size=2, seed=4)


def _model(loss="sparse_categorical_crossentropy", dropout=0.2, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(24, activation="relu", name="h"),
        keras.layers.Dropout(dropout, name="drop"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


def _backend(small_digits, model, cfg=CFG, one_hot=False):
    x, y, xt, yt = small_digits
    if one_hot:
        y, yt = np.eye(10, dtype="float32")[y], np.eye(10, dtype="float32")[yt]
    return KerasBackend.prepare(model, me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, CancelToken())


def _train(backend, genes, parent, index=1):
    result, member = backend.train_member(genes, parent, 1, index, 2, lambda *a: None)
    return result, member.snapshot()


def test_weight_decay_and_dropout_change_training_without_a_new_traced_step(small_digits):
    backend = _backend(small_digits, _model())
    genes = backend.initial_genes()
    assert genes.weight_decay == 0.0 and genes.dropouts == (("drop", 0.2),) and genes.label_smoothing is None
    backend.start(genes)
    parent = backend.snapshot(genes)
    base, base_snap = _train(backend, genes, parent)
    model = backend.pool.get(genes)
    traces = mdl.TRACES[id(model)]
    assert traces == 1  # its compiled metrics were built before: no second trace
    again, again_snap = _train(backend, genes, parent)
    assert again.losses == base.losses  # the same genes from the same parent train the same way
    decayed, decayed_snap = _train(backend, genes.replace(weight_decay=1.0), parent)
    dropped, dropped_snap = _train(backend, genes.with_dropout("drop", 0.6), parent)
    no_drop, _ = _train(backend, genes.with_dropout("drop", 0.0), parent)
    # one pooled model, one traced step for all of them
    assert backend.pool.built == 1 and mdl.TRACES[id(model)] == traces
    # weight decay shrinks the weights; more dropout makes the training loss worse, none makes it better
    norm = [float(sum(np.sum(w ** 2) for w in s.weights)) for s in (base_snap, decayed_snap)]
    assert norm[1] < 0.97 * norm[0]  # 24 steps of w -= w·1.0·1e-3 take ≈5% off the squared norm
    assert dropped.losses[-1] > base.losses[-1] > no_drop.losses[-1]
    # a later member with the first genes still trains exactly as the first did
    assert _train(backend, genes, parent)[0].losses == base.losses


def test_an_optimizer_switch_traces_the_model_once_and_trains_like_a_model_compiled_with_it(small_digits, tmp_path,
                                                                                           monkeypatch):
    # one model serves every optimizer kind of the search space: its forward and backward pass is
    # traced once; a kind traces its update once, when first used, and switching back to a kind used
    # before traces nothing; each kind trains exactly as a model compiled with that optimizer alone
    # (one pooled model per kind, as without the switch); the archive is plain Keras.  Opt-in for now
    monkeypatch.setenv("MIHA_OPTIMIZER_SWITCH", "1")
    backend = _backend(small_digits, _model())
    adam = backend.initial_genes()
    assert backend.pool.optimizer_kinds[0] == "adam" and {"sgd", "rmsprop", "nadam"} <= set(backend.pool.optimizer_kinds)
    kinds = [adam, adam.replace(optimizer="sgd", learning_rate=0.01), adam.replace(optimizer="rmsprop"),
             adam.replace(optimizer="nadam", weight_decay=0.5)]
    backend.start(adam)
    parent = backend.snapshot(adam)
    first = {g.optimizer: _train(backend, g, parent) for g in kinds}
    model = backend.pool.get(adam)
    assert backend.pool.built == 1 and mdl.STEP_TRACES[id(model)] == 1 and mdl.TRACES[id(model)] == len(kinds)
    assert len({tuple(f.losses) for f, _ in first.values()}) == len(kinds)  # the kinds train differently
    for g in kinds[::-1]:
        assert _train(backend, g, parent)[0].losses == first[g.optimizer][0].losses
    assert backend.pool.built == 1 and mdl.STEP_TRACES[id(model)] == 1 and mdl.TRACES[id(model)] == len(kinds)
    # the same members on a pool without the switch: one model (and trace) per kind, the same training
    plain = _backend(small_digits, _model())
    plain.pool = mdl.ModelPool(plain.model, plain.spec, plain.trainer.steps_per_execution(), False,
                               sample=(small_digits[0][:1], small_digits[1][:1]), choices=plain.choices)
    assert plain.pool.optimizer_kinds == ()
    plain.start(adam)
    plain_parent = plain.snapshot(adam)
    for g in kinds:
        fit, snap = _train(plain, g, plain_parent)
        assert fit.losses == first[g.optimizer][0].losses
        assert snap.optimizer == g.optimizer and len(snap.optimizer_vars) == len(first[g.optimizer][1].optimizer_vars)
        for a, b in zip(snap.optimizer_vars, first[g.optimizer][1].optimizer_vars):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(snap.weights, first[g.optimizer][1].weights):
            np.testing.assert_array_equal(a, b)
    assert plain.pool.built == len(kinds)
    # the archive of the nadam member names Nadam (with its weight decay) and holds its state
    nadam = kinds[-1]
    mdl.restore(model, first["nadam"][1], nadam)
    loaded = mdl.load_model(mdl.save_model(model, tmp_path / "nadam.keras"))
    assert type(loaded.optimizer).__name__ == "Nadam" and loaded.optimizer.get_config()["weight_decay"] == 0.5
    for a, b in zip(loaded.optimizer.variables, first["nadam"][1].optimizer_vars):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_an_optimizer_of_the_users_own_or_one_that_scales_its_loss_is_not_switched(small_digits, monkeypatch):
    # the train step scales the loss by the optimizer it was traced with, and a class of the user's own
    # may keep state a fresh instance of another kind would not know: each keeps a pooled model per kind
    import keras

    monkeypatch.setenv("MIHA_OPTIMIZER_SWITCH", "1")
    assert _backend(small_digits, _model()).pool.optimizer_kinds  # the switch is on for a plain model
    scaled = _model()
    scaled.compile(optimizer=keras.optimizers.Adam(loss_scale_factor=8.0), loss="sparse_categorical_crossentropy")
    assert _backend(small_digits, scaled).pool.optimizer_kinds == ()

    class Mine(keras.optimizers.SGD):
        pass

    own = _model()
    own.compile(optimizer=Mine(), loss="sparse_categorical_crossentropy")
    assert _backend(small_digits, own).pool.optimizer_kinds == ()
    no_mutation = _backend(small_digits, _model(), cfg=CFG.replace(search=me.SearchSpace(kinds=("learning_rate",))))
    assert no_mutation.pool.optimizer_kinds == ()


def test_a_model_with_its_own_train_step_keeps_it_when_one_model_serves_every_optimizer(small_digits):
    # the split step is Keras' own train_step: a model class that overrides train_step trains with its
    # own, traced by each optimizer's chunk (the same model serving both optimizers)
    import keras

    seen = []

    class Counted(keras.Sequential):
        def train_step(self, data):
            seen.append(type(self.optimizer).__name__)  # Python runs here only while a chunk is traced
            return super().train_step(data)

    backend = _backend(small_digits, _model())
    genes = backend.initial_genes()
    for cls, shared in ((keras.Sequential, True), (Counted, False)):
        keras.utils.set_random_seed(0)
        model = cls([keras.Input((64,)), keras.layers.Dense(10, activation="softmax", name="out")])
        model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        built = mdl.build_compiled_state(model, small_digits[0][:1], small_digits[1][:1])
        mdl.install_knobs(model, genes, switch_optimizers=True)
        mdl._KNOBS[model].compiled_state = built
        mdl.add_optimizer(model, "sgd", keras.optimizers.SGD(learning_rate=0.01))
        assert mdl.switches_optimizers(model) and mdl.shares_forward_pass(model) is shared
        for kind in ("adam", "sgd"):
            mdl.select_optimizer(model, kind)
            backend.trainer.fit(model, 32, 1, lambda *a: None)
    assert seen == ["Adam", "SGD"]


def test_an_activation_switch_reuses_the_traced_step_and_trains_like_a_model_built_with_it(small_digits, tmp_path):
    # every activation of a slot is a branch of one traced step: switching (and back) traces nothing
    # more; a member on the switch trains exactly as a model built with that activation; its archive
    # is plain Keras and names the activation
    backend = _backend(small_digits, _model())
    genes = backend.initial_genes()
    assert "h" in backend.pool.switched and "elu" in backend.pool.switched["h"]
    # under XLA a switch crashed TensorFlow: XLA keeps a model per activation
    assert not mdl.ModelPool(backend.model, backend.spec, 4, True, choices=backend.choices).switched
    backend.start(genes)
    parent = backend.snapshot(genes)
    relu = _train(backend, genes, parent)[0].losses
    elu_genes = genes.with_activation("h", "elu").replace(optimizer="adam")
    elu_fit, elu_snap = _train(backend, elu_genes, parent)
    elu = elu_fit.losses
    model = backend.pool.get(genes)
    assert backend.pool.built == 1 and mdl.TRACES[id(model)] == 1
    assert elu != relu and _train(backend, genes, parent)[0].losses == relu
    assert backend.pool.built == 1 and mdl.TRACES[id(model)] == 1
    built = mdl.rebuild(_model(), {"h": "elu"})  # the same weights (the same seed), elu built in
    built.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reference = _backend(small_digits, built)
    assert reference.pool.switched  # its own switch, set to elu
    eg = reference.initial_genes()
    assert dict(eg.activations)["h"] == "elu"
    reference.start(eg)
    assert _train(reference, eg, reference.snapshot(eg))[0].losses == pytest.approx(elu, rel=1e-6)
    # the archive of the elu member: plain Keras (safe mode), elu by name, the same outputs
    member = backend.pool.get(elu_genes)
    mdl.restore(member, elu_snap, elu_genes)
    path = mdl.save_model(member, tmp_path / "elu.keras")
    loaded = mdl.load_model(path)
    assert loaded.get_layer("h").get_config()["activation"] == "elu"
    x = small_digits[0][:16]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), member.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_dropout_rate_set_through_the_variable_trains_like_a_model_compiled_with_it(small_digits):
    import keras

    backend = _backend(small_digits, _model(dropout=0.2))
    genes = backend.initial_genes()
    backend.start(genes)
    parent = backend.snapshot(genes)
    through_variable, _ = _train(backend, genes.with_dropout("drop", 0.5), parent)
    fresh = _backend(small_digits, _model(dropout=0.5))  # the same weights: the same seed builds them
    g5 = fresh.initial_genes()
    fresh.start(g5)
    compiled_with_it, _ = _train(fresh, g5, fresh.snapshot(g5))
    assert through_variable.losses == pytest.approx(compiled_with_it.losses, rel=1e-6)
    keras.backend.clear_session()


def test_label_smoothing_is_a_gene_where_the_loss_takes_it_and_state_moves_exactly(small_digits, tmp_path):
    backend = _backend(small_digits, _model(loss="categorical_crossentropy"), one_hot=True)
    genes = backend.initial_genes()
    assert genes.label_smoothing == 0.0
    backend.start(genes)
    parent = backend.snapshot(genes)
    plain, plain_snap = _train(backend, genes, parent)
    smooth_genes = genes.replace(label_smoothing=0.2, weight_decay=0.3).with_dropout("drop", 0.4)
    smooth, smooth_snap = _train(backend, smooth_genes, parent)
    model = backend.pool.get(genes)
    # the smoothing is a variable the loss reads: the same pooled model and traced step
    assert backend.pool.built == 1 and mdl.TRACES[id(model)] == 1
    assert smooth.losses[0] > plain.losses[0]  # smoothed targets cannot be fitted as closely
    assert _train(backend, genes, parent)[0].losses == plain.losses  # and back to none, exactly
    assert backend.pool.built == 1 and mdl.TRACES[id(model)] == 1
    # the same member on a model compiled with Keras' own smoothed loss trains the same way
    import keras

    built = _model(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2))
    reference = _backend(small_digits, built, one_hot=True)
    rg = reference.initial_genes()
    assert rg.label_smoothing == pytest.approx(0.2)
    reference.start(rg)
    assert _train(reference, smooth_genes, reference.snapshot(rg))[0].losses == pytest.approx(smooth.losses, rel=1e-6)
    # the smoothed member's state moves exactly into the main line
    backend.set_main(smooth_snap, smooth_genes)
    for a, b in zip(backend.snapshot(smooth_genes).weights, smooth_snap.weights):
        np.testing.assert_array_equal(a, b)
    # recompiled (the XLA fallback does so) it keeps its weights, its smoothed loss and its knobs
    main = backend.main
    mdl.recompile(main, backend.spec, 4, False)
    assert main.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    for a, b in zip(main.get_weights(), smooth_snap.weights):
        np.testing.assert_array_equal(a, b)
    assert mdl._KNOBS[main].weight_decay.numpy() == pytest.approx(0.3)
    # its archive holds the genes it trained with and loads as plain Keras, in safe mode
    path = tmp_path / "m.keras"
    backend.save_main(path)
    loaded = me.load_model(path)
    assert loaded.get_layer("drop").rate == pytest.approx(0.4)
    assert loaded.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    assert loaded.optimizer.get_config()["weight_decay"] == pytest.approx(0.3)
    for a, b in zip(loaded.get_weights(), smooth_snap.weights):
        np.testing.assert_array_equal(a, b)
    # the sparse loss takes no smoothing: no gene, and the search says so by never mutating it
    sparse = _backend(small_digits, _model()).initial_genes()
    assert sparse.label_smoothing is None


def test_a_run_mutates_the_new_genes_and_a_fitness_metric_scores_members(tmp_path, small_digits):
    x, y, xt, yt = small_digits
    space = me.SearchSpace(kinds=("weight_decay", "dropout"))
    cfg = CFG.replace(search=space, population_size=3, fitness="original", fitness_metric="accuracy",
                      selection="fittest", runup_epochs=2)
    events: list[ev.Event] = []
    res = me.run(_model(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=tmp_path / "run",
                 listeners=[events.append])
    assert res.status == "finished"
    trained = [e for e in events if isinstance(e, ev.MemberTrained)]
    changes = [e.change for e in trained if e.member != 0]
    assert all(c.startswith(("weight decay:", "dropout of drop:")) for c in changes), changes
    for e in trained:  # fitness scored the validation accuracy's shortfall, not the loss
        assert e.fitness == pytest.approx(fitness(as_loss(e.metrics["val_accuracy"], "accuracy"), "original"))
    main = [e for e in events if isinstance(e, ev.EpochEnded) and e.member is None]
    assert all("val_accuracy" in e.metrics for e in main)
    # the final phase annealed the rate in Keras, epoch by epoch, and the saved model keeps the genes' rate
    final = [e.metrics["learning_rate"] for e in main if e.phase == "final"]
    assert len(final) == 2 and final[0] == pytest.approx(res.genes.learning_rate) and final[1] < final[0] / 1.5
    assert float(me.load_model(res.final_model).optimizer.learning_rate) == pytest.approx(res.genes.learning_rate)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["best_model"]["of"] == "val_accuracy"
    assert set(info["test_metrics"]["best"]) >= {"loss", "accuracy"}
    with pytest.raises(me.InputError, match="not one of the model's compiled metrics"):
        me.run(_model(), me.from_arrays(x, y), cfg.replace(fitness_metric="auc"), run_dir=tmp_path / "bad")


def test_a_loss_of_the_users_own_is_kept_as_given(small_digits):
    # a loss subclass of the user's own (going by a Keras name) is compiled as given, never replaced by
    # Keras' class: smoothing then gets a pooled model per value
    import keras

    @keras.saving.register_keras_serializable(package="miha_test")
    class Heavier(keras.losses.CategoricalCrossentropy):
        def call(self, y_true, y_pred):
            return 2.0 * super().call(y_true, y_pred)

    backend = _backend(small_digits, _model(loss=Heavier()), one_hot=True)
    genes = backend.initial_genes()
    assert genes.label_smoothing == 0.0 and not mdl.smoothing_by_variable(backend.spec.loss)
    backend.start(genes)
    assert type(backend.main.loss) is Heavier
    parent = backend.snapshot(genes)
    _train(backend, genes.replace(label_smoothing=0.1), parent)
    assert backend.pool.built == 2 and mdl.smoothing_by_variable(keras.losses.CategoricalCrossentropy())
