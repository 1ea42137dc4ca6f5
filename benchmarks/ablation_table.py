"""The ablation table of benchmarks/REPORT.md: each change switched off, seeds 0-2, medians.

    python benchmarks/ablation_table.py [--dir benchmarks/records/article-part4]   (from the repository root)

Reads the article suite's records (``benchmarks/quality.py --suite article``); a row whose three
seeds are not all there shows "–".  The plain baselines are read from ``--plain-dir`` when the
records folder has none (they do not depend on the engine).
"""
import argparse
import glob
import json
import statistics as st
from collections import defaultdict

ROWS = {
    "miha": "MIHA, every change on (the defaults)",
    "miha-first_wave": "every change off (the first wave's selection, raw loss)",
    "miha-loss_fitness": "raw validation loss instead of the calibrated one",
    "miha-fittest": "noise rule off (control on, the fittest wins)",
    "miha-no_control": "control and noise rule off",
    "miha-l1_slope": "slope from L1 instead of L0",
    "miha-no_explore": "no exploration after a plateau",
    "miha-no_new_genes": "no weight decay / dropout / smoothing genes",
    "miha-no_anneal": "no final anneal",
    "miha-acc_fitness": "validation accuracy instead of the calibrated loss",
    "miha-soup": "+ greedy soup of members (off by default)",
    "plain-lineage": "plain fit, 80 epochs",
    "plain-compute": "plain fit, 200 epochs",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="benchmarks/records/article-part4")
    ap.add_argument("--plain-dir", default="benchmarks/records/article")
    args = ap.parse_args()
    v = defaultdict(dict)
    files = glob.glob(f"{args.dir}/article-*.json")
    if not any("-plain-" in f for f in files):
        files += glob.glob(f"{args.plain_dir}/article-*-plain-*.json")
    for f in files:
        for r in json.load(open(f))["records"]:
            v[(r["task"], r["system"], r["config"].get("read"))][r["seed"]] = r["value"]
    print("| change | MNIST final | MNIST best | digits final | digits best |\n|---|---|---|---|---|")
    for system, label in ROWS.items():
        cells = []
        for t in ("mnist_fnn", "digits"):
            for rd in ("final", "best"):
                d = v.get((t, system, rd), {})
                vals = [d[k] for k in (0, 1, 2) if k in d]
                cells.append(f"{st.median(vals):.4f}" if len(vals) == 3 else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
