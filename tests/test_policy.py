"""Pure policy: mutation, fitness, crossover of genes, configuration (no Keras)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from miha_engine.config import RunConfig, SearchSpace
from miha_engine.errors import ConfigError
from miha_engine.fitness import WORST, fitness, ranking
from miha_engine.genes import Genes
from miha_engine.mutation import combine, mutate

CHOICES = {"hidden": ("relu", "elu", "tanh"), "out": ("linear", "sigmoid")}
BASE = Genes("adam", 1e-3, 32, (("hidden", "relu"), ("out", "linear")))


def test_engine_import_does_not_load_qt_or_tensorflow():
    import subprocess

    code = "import sys, miha_engine; print('PySide6' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_mutation_changes_exactly_one_gene_and_describes_it():
    rng = np.random.default_rng(0)
    space = SearchSpace()
    for _ in range(200):
        new, change = mutate(BASE, space, rng, CHOICES, n_train=1000)
        diffs = BASE.diff(new)
        assert len(diffs) == 1, (diffs, change)
        assert change.split(":")[0] == diffs[0].split(":")[0]
        lo, hi = space.batch_size_range
        assert lo <= new.batch_size <= hi
        assert space.learning_rate_range[0] <= new.learning_rate <= space.learning_rate_range[1]
        assert new.activation_of("out") in CHOICES["out"]
        assert new.optimizer in space.optimizers or new.optimizer == BASE.optimizer


def test_mutation_respects_switched_off_kinds():
    rng = np.random.default_rng(1)
    space = SearchSpace(kinds=("batch_size",))
    for _ in range(50):
        new, _ = mutate(BASE, space, rng, CHOICES, n_train=1000)
        assert new.optimizer == BASE.optimizer and new.activations == BASE.activations
        assert new.learning_rate == BASE.learning_rate and new.batch_size != BASE.batch_size


def test_batch_size_never_exceeds_training_samples():
    rng = np.random.default_rng(2)
    genes = BASE.replace(batch_size=32)
    for _ in range(30):
        new, _ = mutate(genes, SearchSpace(kinds=("batch_size",)), rng, CHOICES, n_train=40)
        assert new.batch_size <= 40


def test_same_seed_same_mutations():
    def seq(seed):
        rng = np.random.default_rng(seed)
        return [mutate(BASE, SearchSpace(), rng, CHOICES)[1] for _ in range(20)]

    assert seq(7) == seq(7)
    assert seq(7) != seq(8)


def test_optimizer_switch_sets_a_sensible_learning_rate():
    rng = np.random.default_rng(3)
    space = SearchSpace(kinds=("optimizer",), optimizers=("sgd",))
    new, change = mutate(BASE, space, rng, CHOICES)
    assert new.optimizer == "sgd" and math.isclose(new.learning_rate, 0.01)
    assert "adam → sgd" in change


def test_fitness_prefers_low_last_loss_and_fast_decrease():
    assert fitness([1.0, 0.5]) > fitness([1.0, 0.8])
    # same last loss, steeper fall scores higher
    assert fitness([2.0, 0.5]) > fitness([0.6, 0.5])
    assert fitness([1.0, float("nan")]) == WORST
    assert fitness([float("inf")]) == WORST
    assert fitness([1.0, 0.4], "original") == pytest.approx(1.0 - 0.8)
    assert ranking([0.1, WORST, 0.3, 0.3]) == [2, 3, 0, 1]


def test_fitness_is_scale_free():
    a = [1.0, 0.5, 0.25]
    assert fitness(a) - fitness([v * 100 for v in a]) == pytest.approx(math.log(100))
    assert ranking([fitness([v * 100 for v in c]) for c in ([1, 0.5], [1, 0.6])]) == [0, 1]


def test_combine_applies_both_mutations():
    a = BASE.replace(batch_size=64)
    b = BASE.with_activation("hidden", "elu")
    child = combine(BASE, a, b)
    assert child.batch_size == 64 and child.activation_of("hidden") == "elu"
    # both changed the batch size: the fitter one wins
    assert combine(BASE, a, BASE.replace(batch_size=16)).batch_size == 64


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="population_size"):
        RunConfig(population_size=0)
    with pytest.raises(ConfigError, match="empty"):
        RunConfig(search=SearchSpace(kinds=()))
    with pytest.raises(ConfigError, match="candidate_epochs"):
        RunConfig(candidate_epochs=0)
    with pytest.raises(ConfigError, match="unknown option"):
        RunConfig.from_dict({"cycle": 3})


def test_config_round_trips_through_json_and_toml(tmp_path):
    cfg = RunConfig(cycles=4, crossover=True, search=SearchSpace(kinds=("optimizer", "learning_rate")))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    toml = tmp_path / "c.toml"
    toml.write_text('cycles = 5\npopulation_size = 4\n[search]\nkinds = ["batch_size"]\n')
    loaded = RunConfig.load(toml)
    assert loaded.cycles == 5 and loaded.population_size == 4 and loaded.search.kinds == ("batch_size",)
    assert loaded.total_epochs == 2 * 2 + 5 * (4 * 1 + 1)


def test_the_slope_from_the_parents_loss_does_not_reward_early_damage():
    from miha_engine.fitness import fitness

    damaged, steady = [3.0, 0.62], [0.55, 0.60]  # the damaged member ends worse
    assert fitness(damaged, "log_slope_l1") > fitness(steady, "log_slope_l1")  # the first wave's formula is fooled
    assert fitness(damaged, "log_slope", anchor=0.5) < fitness(steady, "log_slope", anchor=0.5)
    # from a shared L0 the ranking is the last loss's
    curves = [[0.9, 0.4], [0.3, 0.45], [0.7, 0.41]]
    ranked = sorted(range(3), key=lambda i: -fitness(curves[i], anchor=0.8))
    assert ranked == sorted(range(3), key=lambda i: curves[i][-1])


def test_epoch_noise_ignores_a_steady_trend_and_measures_the_wobble():
    import math

    from miha_engine.fitness import epoch_noise, noise_margin

    steady = [1.0 * 0.9**k for k in range(8)]
    assert epoch_noise([steady]) == pytest.approx(0.0, abs=1e-9)
    wobbly = [v * (1.05 if k % 2 else 0.95) for k, v in enumerate(steady)]
    sigma = epoch_noise([wobbly])
    assert 0.05 < sigma < 0.15
    assert epoch_noise([[1.0, 0.9]]) is None  # too few epochs to tell
    margin = noise_margin([0.5, 0.45, 0.4], sigma, anchor=0.6)
    assert margin == pytest.approx(sigma * (1 + 1 / 3), rel=1e-6)
    assert math.isfinite(margin)
