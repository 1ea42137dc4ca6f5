"""Fuzzing the loaders and the configuration parser: nothing escapes but the engine's own errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import miha_engine as me  # noqa: E402
from miha_engine.data import load_dataset, validate  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from(["float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "U3", "datetime64[s]"])
TASKS = st.sampled_from(["sparse_categorical", "categorical", "binary", "regression"])


@st.composite
def arrays(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    return draw(hnp.arrays(np.dtype(dtype), shape))


@FAST
@given(x=arrays(), y=arrays(), task=TASKS, width=st.integers(1, 4))
def test_npz_of_random_arrays_loads_or_says_why(x, y, task, width):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, x=x, y=y)
        try:
            ds = load_dataset(path)
            validate(ds, (None, *ds.x.shape[1:]), (None, width), task)
        except me.DatasetError as exc:
            assert str(exc)


@FAST
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".npz", ".h5", ".hdf5", ".csv"]))
def test_random_bytes_as_a_dataset_file(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(content)
        try:
            load_dataset(path)
        except me.DatasetError as exc:
            assert str(exc)


@FAST
@given(text=st.text(alphabet="0123456789,.-+eE naNifx\n\"'", max_size=200))
def test_random_csv_text(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        path.write_text(text)
        try:
            ds = load_dataset(path)
            assert len(ds.x) == len(ds.y)
        except me.DatasetError as exc:
            assert str(exc)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.one_of(st.integers(-3, 300), st.floats(), st.text(max_size=6)), max_size=3))
KEYS = st.sampled_from(["runup_epochs", "candidate_epochs", "fixing_epochs", "cycles", "population_size", "batch_size",
                        "seed", "crossover", "crossover_weights", "control_member", "fitness", "validation_split",
                        "steps_per_execution", "jit_compile", "nonsense"])
SEARCH_KEYS = st.sampled_from(["kinds", "optimizers", "hidden_activations", "batch_size_range",
                               "learning_rate_range", "lr_factors", "colour"])


@FAST
@given(data=st.dictionaries(KEYS, VALUES, max_size=5), search=st.dictionaries(SEARCH_KEYS, VALUES, max_size=3))
def test_config_from_random_tables(data, search):
    table = dict(data)
    if search:
        table["search"] = search
    try:
        cfg = me.RunConfig.from_dict(table)
        assert cfg.total_epochs >= 0
    except me.ConfigError as exc:
        assert str(exc)


@FAST
@given(text=st.text(max_size=120))
def test_config_file_with_random_text(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text)
        try:
            me.RunConfig.load(path)
        except me.ConfigError as exc:
            assert str(exc)
