"""Experiment 2 of the MIHA article: filling gaps in images with a small CNN autoencoder.

Data: 32×32 grey patches (stride 16) cut from ``skimage.data.brick()`` (a real photograph shipped
with scikit-image; a textured image leaves a network room to learn, see shared/notes). In each input
a random square gap of side 8–16 is blanked, and the gap mask is the second channel; the target is
the full patch. Fixed split: 80% training, 20% test (seed 0).

Two initial configurations: one like the article's (relu convolutions, Adam, batch 32) and a
deliberately poor one (sigmoid everywhere, plain SGD). For each, MIHA against plain training of the
same initial model for the same lineage epochs. Scores are MSE over the **gap pixels** of the test
set, where the network must invent something, beside the whole-patch MSE and a trivial fill (each gap
filled with the mean of its patch's known pixels) that every network must beat.

    python examples/gapfill_cnn.py            # full run
    python examples/gapfill_cnn.py --quick    # a small run, under 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_out_option, plain_fit, write_results


def make_patches(image: str = "brick", size: int = 32, stride: int = 16, seed: int = 0, limit: int | None = None):
    """Return (x, y, mask): x = (gapped patch, mask), y = full patch, mask = 1 inside the gap."""
    from skimage import data as skdata
    from skimage.color import rgb2gray

    img = getattr(skdata, image)()
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    img = img.astype("float32")
    if img.max() > 1.0:
        img /= 255.0
    rng = np.random.default_rng(seed)
    patches = [img[r:r + size, c:c + size]
               for r in range(0, img.shape[0] - size + 1, stride)
               for c in range(0, img.shape[1] - size + 1, stride)]
    y = np.stack(patches)[..., None]
    rng.shuffle(y)
    if limit:
        y = y[:limit]
    mask = np.zeros_like(y)
    for i in range(len(y)):
        g = int(rng.integers(8, 17))
        r, c = rng.integers(0, size - g + 1, size=2)
        mask[i, r:r + g, c:c + g, 0] = 1.0
    x = np.concatenate([y * (1.0 - mask), mask], axis=-1)
    return x.astype("float32"), y.astype("float32"), mask.astype("float32")


def split(x, y, mask, frac: float = 0.8):
    n = int(len(x) * frac)
    return (x[:n], y[:n], mask[:n]), (x[n:], y[n:], mask[n:])


def build(poor: bool, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    act = "sigmoid" if poor else "relu"
    model = keras.Sequential([
        keras.Input((32, 32, 2)),
        keras.layers.Conv2D(16, 3, padding="same", activation=act, name="enc1"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Conv2D(32, 3, padding="same", activation=act, name="enc2"),
        keras.layers.UpSampling2D(2, name="up"),
        keras.layers.Conv2D(16, 3, padding="same", activation=act, name="dec1"),
        keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="out"),
    ], name="gapfill_poor" if poor else "gapfill")
    optimizer = keras.optimizers.SGD(0.01) if poor else keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def gap_mse(pred, y, mask) -> float:
    return float(np.sum(((pred - y) ** 2) * mask) / np.sum(mask))


def whole_mse(pred, y) -> float:
    return float(np.mean((pred - y) ** 2))


def trivial_fill(x, mask):
    known = x[..., :1]
    inv = 1.0 - mask
    mean = np.sum(known * inv, axis=(1, 2, 3), keepdims=True) / np.sum(inv, axis=(1, 2, 3), keepdims=True)
    return known * inv + mean * mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    add_out_option(ap)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import miha_engine as me

    x, y, mask = make_patches(limit=400 if args.quick else None)
    (xtr, ytr, _), (xte, yte, mte) = split(x, y, mask)
    cfg = (me.RunConfig(runup_epochs=2, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3)
           if args.quick else
           me.RunConfig(runup_epochs=5, candidate_epochs=2, fixing_epochs=2, cycles=6, population_size=4))
    cfg = cfg.replace(batch_size=32, seed=args.seed)
    data = me.from_arrays(xtr, ytr, x_test=xte, y_test=yte).with_validation_split(cfg.validation_split, cfg.seed)
    trivial = trivial_fill(xte, mte)
    results = {"task": f"gap filling, skimage brick(), {len(xtr)} train / {len(xte)} test 32x32 patches",
               "config": cfg.to_dict(),
               "trivial_fill": {"gap_mse": gap_mse(trivial, yte, mte), "whole_mse": whole_mse(trivial, yte)},
               "article": {"miha": 0.13, "initial_configuration": 0.38}}
    print(f"{len(xtr)} training and {len(xte)} test patches; trivial mean fill: gap MSE "
          f"{results['trivial_fill']['gap_mse']:.5f}, whole-patch MSE {results['trivial_fill']['whole_mse']:.5f}")
    print(f"MIHA: {cfg.total_epochs} compute epochs, {cfg.lineage_epochs} in the lineage; baseline: "
          f"{cfg.lineage_epochs} epochs")
    for poor in (False, True):
        name = "poor" if poor else "good"
        run_dir = Path(tempfile.mkdtemp(prefix=f"miha-gapfill-{name}-")) / "run"
        t0 = time.perf_counter()
        res = me.run(build(poor, args.seed), data, cfg, run_dir=run_dir)
        miha_wall = time.perf_counter() - t0
        miha_model = me.load_model(res.final_model)
        pred = miha_model.predict(xte, verbose=0)
        base, base_wall = plain_fit(build(poor, args.seed), data.x, data.y, data.x_val, data.y_val,
                                    cfg.lineage_epochs, 32, args.seed)
        bpred = base.predict(xte, verbose=0)
        results[name] = {
            "miha": {"gap_mse": gap_mse(pred, yte, mte), "whole_mse": whole_mse(pred, yte), "wall_s": miha_wall,
                     "final_genes": res.genes.to_dict(), "run_dir": str(run_dir)},
            "baseline": {"gap_mse": gap_mse(bpred, yte, mte), "whole_mse": whole_mse(bpred, yte), "wall_s": base_wall},
        }
        r = results[name]
        print(f"{name} initial configuration:")
        print(f"  MIHA      gap MSE {r['miha']['gap_mse']:.5f}  whole {r['miha']['whole_mse']:.5f}  "
              f"wall {miha_wall:.1f} s  genes {res.genes.short()} {dict(res.genes.activations)}")
        print(f"  baseline  gap MSE {r['baseline']['gap_mse']:.5f}  whole {r['baseline']['whole_mse']:.5f}  "
              f"wall {base_wall:.1f} s")
        print(f"  MIHA / baseline (gap MSE): {r['miha']['gap_mse'] / r['baseline']['gap_mse']:.2f}")
    path = write_results("gapfill_cnn_quick" if args.quick else "gapfill_cnn", results, args.out)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
