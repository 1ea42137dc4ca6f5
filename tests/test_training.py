"""The Trainer's speed settings keep what they could break: stop latency, exact losses, fallbacks."""

from __future__ import annotations

import os

import numpy as np
import pytest

import miha_engine as me
from miha_engine.models import compile_spec
from miha_engine.testing import dense_classifier
from miha_engine.training import Trainer


def _data(n=640, d=64, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return me.from_arrays(rng.random((n, d), dtype=np.float32), rng.integers(0, classes, n))


def test_stop_latency_is_at_most_one_compiled_call_with_large_steps_per_execution():
    data = _data(n=3200)  # 100 batches of 32 per epoch
    cfg = me.RunConfig(validation_split=0.0, steps_per_execution=64)
    token = me.CancelToken()
    trainer = Trainer(data, cfg, token, 0)
    model = dense_classifier()
    model.compile(optimizer=model.optimizer, loss=model.loss, steps_per_execution=trainer.steps_per_execution(32),
                  jit_compile=trainer.jit(model))
    epochs_seen = []

    def on_epoch(epoch, loss, val, seconds):
        epochs_seen.append(epoch)
        token.cancel()  # stop during the next epoch

    with pytest.raises(me.Cancelled):
        trainer.fit(model, 32, 50, on_epoch)
    assert epochs_seen == [0]
    done = int(np.asarray(model.optimizer.iterations))
    assert 100 <= done <= 100 + 64


def test_per_epoch_losses_match_keras_for_any_steps_per_execution():
    data = _data()
    losses = {}
    for spe in (1, 7, 64):
        trainer = Trainer(data, me.RunConfig(validation_split=0.0, steps_per_execution=spe, jit_compile=False), me.CancelToken(), 0)
        model = dense_classifier(seed=1)
        model.compile(optimizer="sgd", loss=model.loss, steps_per_execution=trainer.steps_per_execution(32), jit_compile=False)
        losses[spe] = trainer.fit(model, 32, 2, lambda *a: None).losses
        assert int(np.asarray(model.optimizer.iterations)) == 2 * 20
    np.testing.assert_allclose(losses[1], losses[7], rtol=1e-4)
    np.testing.assert_allclose(losses[1], losses[64], rtol=1e-4)


def test_shuffling_changes_every_epoch_and_is_seeded():
    data = _data(n=64)
    trainer = Trainer(data, me.RunConfig(validation_split=0.0), me.CancelToken(), 5)
    first, second = trainer.epoch_order(3, 0).tolist(), trainer.epoch_order(3, 1).tolist()
    assert first != second and sorted(first) == sorted(second) == list(range(64))
    assert trainer.epoch_order(4, 0).tolist() != first  # another fit's stream
    again = Trainer(data, me.RunConfig(validation_split=0.0), me.CancelToken(), 5)
    assert again.epoch_order(3, 0).tolist() == first


def test_a_fit_is_keras_train_step_on_the_shuffled_batches():
    """The compiled loop trains exactly as Keras' own train_on_batch does on the same batches, in
    the same order, with the last batch short, for any batch size and steps per call; its epoch
    loss and validation loss are Keras' own."""
    data = _data(n=300).with_validation_split(0.2, 0)
    for batch, spe in ((32, 16), (7, 3), (64, 1)):
        trainer = Trainer(data, me.RunConfig(validation_split=0.0, steps_per_execution=spe), me.CancelToken(), 2)
        ours, ref = dense_classifier(seed=1), dense_classifier(seed=1)
        for m in (ours, ref):
            m.compile(optimizer="adam", loss=m.loss, metrics=["accuracy"], steps_per_execution=spe, jit_compile=False)
        result = trainer.fit(ours, batch, 2, lambda *a: None, shuffle=9)
        for epoch in range(2):
            order = trainer.epoch_order(9, epoch)
            loss = correct = 0.0
            for i in range(0, data.n_train, batch):  # train_on_batch resets the metrics: weigh them here
                rows = order[i:i + batch]
                logs = ref.train_on_batch(data.x[rows], data.y[rows], return_dict=True)
                loss, correct = loss + logs["loss"] * len(rows), correct + logs["accuracy"] * len(rows)
            np.testing.assert_allclose(result.losses[epoch], loss / data.n_train, rtol=1e-5)
            np.testing.assert_allclose(result.metrics["accuracy"][epoch], correct / data.n_train, rtol=1e-5)
        val = ref.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)
        np.testing.assert_allclose(result.val_losses[-1], val["loss"], rtol=1e-5)
        np.testing.assert_allclose(result.metrics["val_accuracy"][-1], val["accuracy"], rtol=1e-6)
        for a, b in zip(ours.get_weights(), ref.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert int(np.asarray(ours.optimizer.iterations)) == 2 * -(-data.n_train // batch)


def test_test_metrics_are_keras_evaluate_on_the_same_data():
    # run.json's test metrics come from the model's compiled validation pass, not model.evaluate:
    # the same loss (with a regularizer, which Keras adds to it) and metrics, on the training set
    # and on another array of another length (a second shape: the pass is traced once more)
    import keras

    data = _data(n=300, seed=3)
    trainer = Trainer(data, me.RunConfig(validation_split=0.1), me.CancelToken(), 0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu",
                                                                     kernel_regularizer=keras.regularizers.L2(0.01)),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trainer.fit(model, 32, 2, lambda *a: None)
    other = _data(n=77, seed=4)
    for x, y in ((data.x, data.y), (other.x, other.y)):
        ours = trainer.evaluate(model, x, y)
        keras_own = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        assert ours.keys() == keras_own.keys() == {"loss", "accuracy"}
        assert ours["accuracy"] == pytest.approx(float(keras_own["accuracy"]), abs=1e-7)
        assert ours["loss"] == pytest.approx(float(keras_own["loss"]), rel=1e-5)
        plain = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, model.predict(x, verbose=0))))
        assert ours["loss"] > plain + 1e-4  # the L2 penalty is in it, as in Keras' own


def test_a_model_xla_cannot_compile_still_trains():
    import keras
    import tensorflow as tf

    class HostOp(keras.layers.Layer):
        """Runs numpy on the host: XLA cannot compile it, though the layer claims nothing."""

        def call(self, x):
            y = tf.numpy_function(lambda a: a * 1.0, [x], tf.float32)
            return tf.reshape(y, tf.shape(x))

    data = _data()
    trainer = Trainer(data, me.RunConfig(validation_split=0.0, jit_compile=True), me.CancelToken(), 0)
    model = keras.Sequential([keras.Input((64,)), HostOp(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    spec = compile_spec(model, me.RunConfig())
    result = trainer.fit(model, 32, 2, lambda *a: None, spec=spec)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert trainer.xla_failed and any("XLA" in n for n in trainer.notes)
    assert trainer.jit(model) is False


def test_xla_is_opt_in_and_off_for_layers_that_declare_it_unsupported():
    import keras

    assert Trainer(_data(), me.RunConfig(), me.CancelToken(), 0).jit(dense_classifier()) is False
    trainer = Trainer(_data(), me.RunConfig(jit_compile=True), me.CancelToken(), 0)
    assert trainer.jit(dense_classifier()) is True
    aug = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomRotation(0.1), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    assert trainer.jit(aug) is False
    assert Trainer(_data(), me.RunConfig(jit_compile=False), me.CancelToken(), 0).jit(dense_classifier()) is False


def test_tensorflow_threads_leave_a_core_and_follow_the_environment(monkeypatch):
    import os

    from miha_engine.models import tensorflow_threads

    monkeypatch.delenv("MIHA_TF_THREADS", raising=False)
    assert tensorflow_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    monkeypatch.setenv("MIHA_TF_THREADS", "3")
    assert tensorflow_threads() == 3
    monkeypatch.setenv("MIHA_TF_THREADS", "0")
    assert tensorflow_threads() == 1
    monkeypatch.setenv("MIHA_TF_THREADS", "many")  # not a number: the default
    assert tensorflow_threads() == max(1, len(os.sched_getaffinity(0)) - 1)


def test_miha_seeds_draw_what_keras_seeds_draw_without_clearing_kernels():
    import random

    import keras
    import tensorflow as tf
    from tensorflow.python.framework import random_seed

    from miha_engine.models import set_random_seed

    def draws():
        order = list(tf.data.Dataset.range(20).shuffle(20, seed=5).as_numpy_iterator())
        return order, float(keras.random.uniform(())), random.random(), float(np.random.rand()), random_seed.get_seed(None)

    keras.utils.set_random_seed(42)
    expected = draws()
    set_random_seed(7)  # another seed draws otherwise: the comparison can fail
    assert draws() != expected
    set_random_seed(42)
    assert draws() == expected

    # a stateful random op (what a custom or Lambda layer may call) starts its stream again only when
    # the kernels are cleared, as Keras' own function does: such models reseed with keep_kernels=False
    @tf.function
    def stateful():
        return float(tf.random.uniform(()))

    set_random_seed(3, keep_kernels=False)
    first = stateful()
    set_random_seed(3, keep_kernels=False)
    assert stateful() == first


def test_only_keras_own_layers_keep_kernels_across_reseeds():
    import keras

    from miha_engine.models import configure_tensorflow, uses_only_keras_layers

    configure_tensorflow()
    assert os.environ["MIHA_TF_THREADS"].isdigit()  # what this process's children will use
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.1)])
    with_lambda = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(3)])
    assert uses_only_keras_layers(plain) and not uses_only_keras_layers(with_lambda)


def test_the_engine_threads_hold_when_the_model_is_built_before_the_run(tmp_path):
    # TensorFlow fixes its threads when it first runs an op: `import miha_engine` presets them, so a
    # caller who builds the model first still trains with the engine's count, and says so to children
    import subprocess
    import sys

    def threads(first: str, env: dict[str, str]) -> list[str]:
        code = (f"import os, {first}\n"
                "import keras, tensorflow as tf\n"
                "keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])(keras.ops.ones((1, 3)))\n"
                "import miha_engine\n"
                "from miha_engine.models import configure_tensorflow, _TF_CONFIGURED\n"
                "configure_tensorflow()\n"
                "print(tf.config.threading.get_intra_op_parallelism_threads()"
                " or os.environ.get('TF_NUM_INTRAOP_THREADS', '-'), os.environ['MIHA_TF_THREADS'],"
                " _TF_CONFIGURED['threads'])\n")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    env = {k: v for k, v in os.environ.items() if k not in ("TF_NUM_INTRAOP_THREADS", "MIHA_TF_THREADS")}
    env.update(MIHA_TF_THREADS="3", TF_CPP_MIN_LOG_LEVEL="3")
    # the engine imported first, or after Keras (the README's order): either way the engine's count
    assert threads("miha_engine", env) == ["3", "3", "3"]
    assert threads("keras, miha_engine", env) == ["3", "3", "3"]
    # a value the user gave TensorFlow is kept, and reported to children as what runs
    assert threads("miha_engine", {**env, "TF_NUM_INTRAOP_THREADS": "1"}) == ["1", "1", "1"]
    # TensorFlow ran an op before the engine was imported: it keeps its default (every core), and
    # that is what children are told, not the engine's count
    cores = str(len(os.sched_getaffinity(0)))
    assert threads("sys", env) == ["-", cores, cores]


def test_a_metric_with_one_value_per_class_is_left_out_of_the_logs_and_trains():
    # keras.metrics.F1Score gives one value per class: it has no single number to log or score
    import keras

    data = _data(n=200).with_validation_split(0.2, 0)
    data = me.from_arrays(data.x, np.eye(10, dtype="float32")[data.y], x_val=data.x_val,
                          y_val=np.eye(10, dtype="float32")[data.y_val])
    trainer = Trainer(data, me.RunConfig(validation_split=0.0), me.CancelToken(), 0)
    model = dense_classifier(seed=1)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy", keras.metrics.F1Score()])
    result = trainer.fit(model, 32, 2, lambda *a: None)
    assert set(result.metrics) == {"accuracy", "val_accuracy"} and all(np.isfinite(result.losses + result.val_losses))


def test_data_too_large_for_the_gpu_stays_in_host_memory_and_trains_alike(monkeypatch):
    from miha_engine import training

    assert training.data_device(10 * 2**30, has_gpu=False) == (None, "")
    assert training.data_device(2**20, has_gpu=True) == (None, "")
    where, note = training.data_device(2 * 2**30, has_gpu=True)
    assert where == "/CPU:0" and "stays in host memory" in note and "MIHA_DEVICE_DATA_MB" in note
    monkeypatch.setenv("MIHA_DEVICE_DATA_MB", "4096")
    assert training.data_device(2 * 2**30, has_gpu=True) == (None, "")
    # the host-memory path (gathers pinned to the CPU) trains exactly as the default one
    data = _data(n=300).with_validation_split(0.2, 0)
    losses = {}
    for forced in (False, True):
        if forced:
            monkeypatch.setattr(training, "data_device", lambda nbytes, has_gpu: ("/CPU:0", "kept on the host"))
        trainer = Trainer(data, me.RunConfig(validation_split=0.0), me.CancelToken(), 3)
        model = dense_classifier(seed=1)
        model.compile(optimizer="adam", loss=model.loss, metrics=["accuracy"], jit_compile=False)
        fit = trainer.fit(model, 32, 2, lambda *a: None, shuffle=1)
        losses[forced] = (fit.losses, fit.val_losses)
        assert trainer.notes == (["kept on the host"] if forced else [])
    assert losses[True] == losses[False]
