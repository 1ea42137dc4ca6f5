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
    cfg = me.RunConfig(runup_epochs=2, candidate_epochs=2, fixing_epochs=0, cycles=2, population_size=3, seed=0,
                       fitness_metric="calibrated_loss", soup=True, search=me.SearchSpace(kinds=("learning_rate",
                                                                                                "weight_decay")))
    res = me.run(dense_classifier(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=tmp_path / "run")
    root = tmp_path / "run"
    souped = {int(c): v["_cycle"]["decision"] for c, v in res.population.items() if "soup:" in v["_cycle"]["decision"]}
    assert souped, [v["_cycle"]["decision"] for v in res.population.values()]
    for cycle, decision in souped.items():
        members = [int(m) for m in decision.split("soup: the weights of members ")[1].split(" averaged")[0].split(", ")]
        assert len(members) >= 2
        weights = [me.load_model(root / "population" / f"{cycle}_{m}_model.keras").get_weights() for m in members]
        mean = [np.mean(ws, axis=0) for ws in zip(*weights)]
        for archive in (root / "population" / f"{cycle}_child_model.keras", root / "model" / f"model_{cycle}.keras"):
            got = me.load_model(archive).get_weights()
            assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(got, mean)), archive.name
