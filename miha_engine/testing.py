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


# -- a training set-up without TensorFlow -------------------------------------------------------

#: The learning rate at which each optimizer makes the fake model learn fastest.
FAKE_IDEAL_LR = {"sgd": 0.05, "adam": 0.003, "adamw": 0.003, "rmsprop": 0.002, "adadelta": 1.0, "nadam": 0.003,
                 "adamax": 0.004, "adagrad": 0.05}
#: How much each activation lets the fake model learn per epoch (1 = best).
FAKE_ACTIVATION_GAIN = {"relu": 1.0, "gelu": 0.95, "silu": 0.95, "elu": 0.9, "selu": 0.85, "mish": 0.9,
                        "leaky_relu": 0.95, "tanh": 0.7, "softplus": 0.75, "sigmoid": 0.4}


class _FakeMember:
    def __init__(self, backend: FakeBackend, distance: float, genes):
        self.backend, self.distance, self.genes = backend, distance, genes

    def write_archive(self, path) -> None:
        self.backend._write(path, self.distance, self.genes)

    def snapshot(self):
        return self.backend._snap(self.distance, self.genes)


class FakeBackend:
    """A :class:`~miha_engine.backend.Backend` whose "model" is one number, its distance to the
    optimum, and whose loss is ``floor + distance`` (validation loss 5% higher).  An epoch shrinks the
    distance by a factor set by the genes: the learning rate's distance (in log) from its optimizer's
    :data:`FAKE_IDEAL_LR`, and the activation's :data:`FAKE_ACTIVATION_GAIN`.  A learning rate 30×
    its optimizer's ideal or more diverges (NaN).  No TensorFlow: a whole run takes milliseconds.

    ``script`` fixes the validation-loss curve of given members, ``{(cycle, index): [L1, ..., Ln]}``
    (NaN for a diverging member), to test selection rules exactly; the member's state then ends at
    its last loss.  Archives are small JSON files under the usual ``.keras`` names.
    """

    device = "fake (numpy, no TensorFlow)"
    startup_log = ""
    floor = 0.05
    val_factor = 1.05

    def __init__(self, config, distance: float = 1.0, genes=None, script: dict | None = None, n: int = 200,
                 cancel=None):
        from .data import from_arrays
        from .genes import Genes
        from .training import CancelToken

        self.config = config
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 4)).astype("float32")
        y = rng.integers(0, 3, size=n)
        self.data = from_arrays(x, y, x_test=x[:20], y_test=y[:20]).with_validation_split(config.validation_split,
                                                                                           config.seed)
        self.choices = {"hidden": ("relu", "tanh", "sigmoid", "elu")}
        self.layer_notes: list[str] = []
        self._genes0 = genes or Genes("sgd", 0.01, config.batch_size or 32, (("hidden", "tanh"),))
        self.start_distance = float(distance)
        self.distance = float(distance)
        self.script = dict(script or {})
        #: the learning-rate schedule of every main-line phase (None: the genes' constant rate)
        self.lr_schedules: list = []
        self.cancel = cancel or CancelToken()

    @classmethod
    def for_resume(cls, run_dir, config=None, **kwargs) -> FakeBackend:
        """The fake set-up a resume continues with: the checkpoint archive's state, or the state the
        run started from when the run-up never finished."""
        import json
        from pathlib import Path

        from .config import RunConfig

        root = Path(run_dir)
        info = json.loads((root / "run.json").read_text())
        config = config or RunConfig.from_stored(info["config"])
        state_path = root / "state.json"
        archive = root / (json.loads(state_path.read_text())["model"] if state_path.exists()
                          else "model/model_source.keras")
        return cls.from_archive(config, archive, **kwargs)

    @classmethod
    def from_archive(cls, config, archive, **kwargs) -> FakeBackend:
        """The fake set-up whose model is the state saved in ``archive`` (a fork starts so)."""
        import json
        from pathlib import Path

        from .genes import Genes

        saved = json.loads(Path(archive).read_text())
        return cls(config, distance=saved["distance"], genes=Genes.from_dict(saved["genes"]), **kwargs)

    # -- the fake model's physics ----------------------------------------------------------
    def loss(self, distance: float) -> float:
        return self.floor + distance

    def shrink(self, genes) -> float:
        """The factor one epoch multiplies the distance by (NaN: the run diverges)."""
        import math

        ideal = FAKE_IDEAL_LR.get(genes.optimizer, 0.01)
        off = abs(math.log(genes.learning_rate / ideal))
        if off >= math.log(30):
            return math.nan
        gain = min(FAKE_ACTIVATION_GAIN.get(a, 0.5) for _, a in genes.activations) if genes.activations else 1.0
        return 1.0 - 0.5 * gain * math.exp(-off * off / 2) * min(1.0, 64 / genes.batch_size) ** 0.25

    def _epochs(self, distance: float, genes, epochs: int, on_epoch, curve=None, main: bool = False):
        import math

        from .training import FitResult

        losses, vals, diverged = [], [], False
        for e in range(epochs):
            self.cancel.raise_if_cancelled()
            if curve is not None:
                val = float(curve[e])
                distance = val / self.val_factor - self.floor if math.isfinite(val) else math.nan
            else:
                distance = distance * self.shrink(genes)
            loss = self.loss(distance)
            if not math.isfinite(loss):
                diverged = True
            val = loss * self.val_factor if math.isfinite(loss) else math.nan
            losses.append(loss)
            vals.append(val)
            if main:  # the main line's state at its epoch's end, as a Keras callback sees it
                self.distance = distance
            on_epoch(e, loss, val if self.data.has_validation else None, 0.0)
            if diverged:
                losses += [math.nan] * (epochs - e - 1)
                vals += [math.nan] * (epochs - e - 1)
                break
        return FitResult(losses, vals if self.data.has_validation else [], diverged), distance

    def _snap(self, distance: float, genes):
        from .snapshot import Snapshot

        return Snapshot(genes, [np.array([distance])], genes.optimizer, [np.array([0.0])])

    def _write(self, path, distance: float, genes) -> None:
        import json

        from .runlog import atomic_write_bytes

        atomic_write_bytes(path, json.dumps({"distance": distance, "genes": genes.to_dict()}).encode())

    # -- the Backend protocol --------------------------------------------------------------
    def initial_genes(self):
        return self._genes0

    def versions(self) -> dict[str, str]:
        return {}

    def search_context(self) -> dict:
        return {"choices": {p: list(a) for p, a in self.choices.items()}, "optimizer_template": None}

    def param_count(self) -> int:
        return 1

    def start(self, genes) -> None:
        self.distance, self.genes = self.start_distance, genes

    def train_main(self, genes, epochs: int, on_epoch, shuffle: int = 0, lr_schedule=None):
        self.genes = genes
        self.lr_schedules.append(list(lr_schedule) if lr_schedule is not None else None)
        result, self.distance = self._epochs(self.distance, genes, epochs, on_epoch, main=True)
        return result

    def snapshot(self, genes):
        return self._snap(self.distance, genes)

    def set_main(self, snap, genes, weights=None) -> None:
        self.distance, self.genes = float((weights if weights is not None else snap.weights)[0][0]), genes

    def save_main(self, path) -> None:
        self._write(path, self.distance, self.genes)

    def main_archive_writer(self):
        distance, genes = self.distance, self.genes
        return lambda path: self._write(path, distance, genes)

    def train_member(self, genes, parent, cycle: int, index: int, epochs: int, on_epoch):
        curve = self.script.get((cycle, index))
        result, distance = self._epochs(float(parent.weights[0][0]), genes, epochs, on_epoch, curve)
        return result, _FakeMember(self, distance, genes)

    def last_epoch_metrics(self) -> dict[str, float]:
        return {}

    def holdout_loss(self, snap, genes, weights=None, metric: str = "loss") -> float:
        distance = float((weights if weights is not None else snap.weights)[0][0])
        return self.loss(distance) * (self.val_factor if self.data.has_validation else 1.0)

    def test_metrics(self) -> dict[str, float]:
        return {"loss": self.loss(self.distance)} if self.data.has_test else {}

    def archive_test_metrics(self, path) -> dict[str, float]:
        import json
        from pathlib import Path

        return {"loss": self.loss(json.loads(Path(path).read_text())["distance"])} if self.data.has_test else {}

    def reseed(self, seed: int) -> None:
        return None

    def pop_notes(self) -> list[str]:
        return []
