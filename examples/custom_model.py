"""The MIHA Python API in about 30 lines: build a model, give it arrays, run, read the results.

    python examples/custom_model.py
"""

import keras
from sklearn.datasets import load_digits

import miha_engine as me

digits = load_digits()  # 1,797 real 8x8 digits shipped with scikit-learn
x, y = (digits.data / 16.0).astype("float32"), digits.target
data = me.from_arrays(x[:1500], y[:1500], x_test=x[1500:], y_test=y[1500:])

model = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

config = me.RunConfig(runup_epochs=3, candidate_epochs=2, fixing_epochs=1, cycles=4, population_size=4,
                      search=me.SearchSpace(kinds=("optimizer", "learning_rate", "activation")))


def show(event):
    if event.kind == "cycle_done":
        print(f"cycle {event.cycle}: {event.decision}")


result = me.run(model, data, config, run_dir=None, listeners=[show])
print("status:", result.status, "| run folder:", result.run_dir)
print("final genes:", result.genes.short(), dict(result.genes.activations))
test = result.test_metrics
print(f"test accuracy: initial {test['initial']['accuracy']:.3f} -> final {test['final']['accuracy']:.3f}")
trained = me.load_model(result.final_model)  # a ready-to-use Keras model
