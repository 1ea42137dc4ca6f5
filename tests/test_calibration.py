"""The calibrated validation loss (temperature scaling) and the greedy soup, on real Keras models."""

from __future__ import annotations

import json

import numpy as np
import pytest

import miha_engine as me
from miha_engine import events as ev
from miha_engine.calibration import temperature_nll
from miha_engine.testing import dense_classifier


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_scaling_finds_the_temperature_that_made_outputs_overconfident():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    logits = rng.normal(size=(n, k)) * 2.0
    y = np.array([rng.choice(k, p=p) for p in _softmax(logits)])  # labels drawn from softmax(logits)
    over = _softmax(3.0 * logits)  # the same ranking, three times too confident
    raw = float(-np.mean(np.log(over[np.arange(n), y])))
    value, temperature = temperature_nll(over, y, "sparse_categorical")
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert value < raw - 0.1
    # the same from logits, and from one-hot targets
    assert temperature_nll(3.0 * logits, y, "sparse_categorical", from_logits=True)[0] == pytest.approx(value, rel=2e-3)
    assert temperature_nll(over, np.eye(k)[y], "categorical")[0] == pytest.approx(value, rel=1e-6)
    # a well-calibrated model keeps T near 1 and gains almost nothing
    fair, t_fair = temperature_nll(_softmax(logits), y, "sparse_categorical")
    assert t_fair == pytest.approx(1.0, rel=0.1)
    assert fair == pytest.approx(float(-np.mean(np.log(_softmax(logits)[np.arange(n), y]))), rel=1e-2)
    # no temperature on a fine grid does better than the one found
    def nll(t):
        q = _softmax(np.log(np.clip(over, 1e-7, 1)) / t)  # clipped as Keras clips probabilities
        return float(-np.mean(np.log(q[np.arange(n), y])))

    assert value <= min(nll(t) for t in np.geomspace(0.1, 10, 400)) + 1e-9
    # binary: a sigmoid output twice too confident
    z = rng.normal(size=(n, 1)) * 2.0
    t = (rng.random((n, 1)) < 1 / (1 + np.exp(-z))).astype(float)
    value_b, t_b = temperature_nll(1 / (1 + np.exp(-2.0 * z)), t, "binary")
    assert t_b == pytest.approx(2.0, rel=0.15)
    raw_b = float(np.mean(np.logaddexp(0, -2.0 * z) * t + np.logaddexp(0, 2.0 * z) * (1 - t)))
    assert value_b < raw_b - 0.01
    # outputs with classes on the last of several axes (a per-position classifier): each position is
    # a sample, and T = 1 gives Keras' own cross-entropy
    import keras

    seq = _softmax(rng.normal(size=(300 * 3, 5)) * 2).reshape(300, 3, 5)
    onehot = np.eye(5)[rng.integers(0, 5, size=(300, 3))]
    keras_ce = float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(onehot, seq))))
    value_s, _ = temperature_nll(seq, onehot, "categorical")
    assert value_s <= keras_ce + 1e-6 and value_s > 0.5 * keras_ce


def test_a_run_scored_by_the_calibrated_loss_logs_it_every_epoch_and_selects_by_it(tmp_path, small_digits):
    x, y, xt, yt = small_digits
    cfg = me.RunConfig(runup_epochs=2, candidate_epochs=2, fixing_epochs=1, cycles=1, population_size=3, seed=1,
                       fitness_metric="calibrated_loss", selection="fittest", fitness="original")
    events: list[ev.Event] = []
    res = me.run(dense_classifier(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=tmp_path / "run",
                 listeners=[events.append])
    assert res.status == "finished"
    main = [e for e in events if isinstance(e, ev.EpochEnded) and e.member is None]
    assert len(main) == cfg.lineage_epochs - cfg.candidate_epochs
    for e in main:  # T = 1 is a candidate: never above Keras' own validation cross-entropy
        assert e.metrics["val_calibrated_loss"] <= e.val_loss * (1 + 1e-4)
    from miha_engine.fitness import fitness

    trained = [e for e in events if isinstance(e, ev.MemberTrained)]
    assert len(trained) == cfg.population_size
    for e in trained:
        assert len(e.metrics["val_calibrated_loss"]) == cfg.candidate_epochs
        assert all(c <= v * (1 + 1e-4) for c, v in zip(e.metrics["val_calibrated_loss"], e.val_losses))
        assert e.fitness == pytest.approx(fitness(e.metrics["val_calibrated_loss"], "original"))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["best_model"]["of"] == "val_calibrated_loss"
    # a regression loss has no temperature: refused with a message that says what to use
    model = dense_classifier(classes=1)
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(me.InputError, match="not a cross-entropy"):
        me.run(model, me.from_arrays(x, y.astype("float32")), cfg, run_dir=tmp_path / "bad")


def test_a_soup_continues_the_lineage_from_the_exact_mean_of_its_members(tmp_path, small_digits):
    x, y, xt, yt = small_digits
    for seed in (1, 2, 4):  # whether members improve the winner's average depends on the draw: take the first soup
        cfg = me.RunConfig(runup_epochs=2, candidate_epochs=2, fixing_epochs=0, cycles=2, population_size=3, seed=seed,
                           fitness_metric="calibrated_loss", soup=True,
                           search=me.SearchSpace(kinds=("learning_rate", "weight_decay")))
        root = tmp_path / f"run{seed}"
        res = me.run(dense_classifier(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=root)
        souped = {int(c): v["_cycle"]["decision"] for c, v in res.population.items()
                  if "soup:" in v["_cycle"]["decision"]}
        if souped:
            break
    assert souped, [v["_cycle"]["decision"] for v in res.population.values()]
    for cycle, decision in souped.items():
        members = [int(m) for m in decision.split("soup: the weights of members ")[1].split(" averaged")[0].split(", ")]
        assert len(members) >= 2
        weights = [me.load_model(root / "population" / f"{cycle}_{m}_model.keras").get_weights() for m in members]
        mean = [np.mean(ws, axis=0) for ws in zip(*weights)]
        for archive in (root / "population" / f"{cycle}_child_model.keras", root / "model" / f"model_{cycle}.keras"):
            got = me.load_model(archive).get_weights()
            assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(got, mean)), archive.name


def test_auto_scores_a_cross_entropy_classifier_with_a_validation_split_by_the_calibrated_loss(small_digits):
    from miha_engine.backend import KerasBackend
    from miha_engine.training import CancelToken

    x, y, _, _ = small_digits

    def resolved(model, data, **cfg):
        return KerasBackend.prepare(model, data, me.RunConfig(**cfg), CancelToken()).config.fitness_metric

    assert me.RunConfig().fitness_metric == "auto"
    assert resolved(dense_classifier(), me.from_arrays(x, y)) == "calibrated_loss"
    assert resolved(dense_classifier(), me.from_arrays(x, y), validation_split=0.0) == "loss"  # no split
    assert resolved(dense_classifier(), me.from_arrays(x[:4], y[:4]), batch_size=2) == "loss"  # split under one
    hinge = dense_classifier()
    hinge.compile(optimizer="adam", loss="categorical_hinge")  # filed as classification, not a cross-entropy
    assert resolved(hinge, me.from_arrays(x, np.eye(10, dtype="float32")[y])) == "loss"
    with pytest.raises(me.InputError, match="needs a validation split"):
        resolved(dense_classifier(), me.from_arrays(x, y), validation_split=0.0, fitness_metric="calibrated_loss")


def test_run_json_records_what_auto_resolved_to_and_a_resume_keeps_it(tmp_path, small_digits):
    x, y, xt, yt = small_digits
    cfg = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=0, cycles=2, population_size=2, seed=2)
    token = me.CancelToken()
    stop = [lambda e: isinstance(e, ev.CycleDone) and token.cancel()]
    root = tmp_path / "run"
    res = me.run(dense_classifier(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=root, listeners=stop,
                 cancel=token)
    assert res.status == "cancelled"
    assert json.loads((root / "run.json").read_text())["config"]["fitness_metric"] == "calibrated_loss"
    events: list[ev.Event] = []
    done = me.resume(root, data=me.from_arrays(x, y, x_test=xt, y_test=yt), listeners=[events.append])
    assert done.status == "finished"
    info = json.loads((root / "run.json").read_text())
    assert info["config"]["fitness_metric"] == "calibrated_loss" and info["best_model"]["of"] == "val_calibrated_loss"
    assert all("val_calibrated_loss" in e.metrics for e in events if isinstance(e, ev.EpochEnded) and e.member is None)
