"""The ablation table of benchmarks/REPORT.md: each second-wave change switched off, seeds 0-2, medians.

    python benchmarks/ablation_table.py   (from the repository root)
"""
import glob
import json
import statistics as st
from collections import defaultdict

v = defaultdict(dict)
for f in glob.glob("benchmarks/records/article/article-*.json"):
    for r in json.load(open(f))["records"]:
        v[(r["task"], r["system"], r["config"].get("read"))][r["seed"]] = r["value"]
rows = ["miha", "miha-first_wave", "miha-fittest", "miha-no_control", "miha-l1_slope", "miha-no_explore", "miha-no_new_genes", "miha-no_anneal", "miha-acc_fitness", "plain-lineage", "plain-compute"]
label = {"miha": "MIHA, every change on (the defaults)", "miha-first_wave": "every change off (the first wave's selection)",
 "miha-fittest": "noise rule off (control on, the fittest wins)", "miha-no_control": "control and noise rule off",
 "miha-l1_slope": "slope from L1 instead of L0", "miha-no_explore": "no exploration after a plateau",
 "miha-no_new_genes": "no weight decay / dropout / smoothing genes", "miha-no_anneal": "no final anneal",
 "miha-acc_fitness": "+ --fitness-metric accuracy", "plain-lineage": "plain fit, 80 epochs", "plain-compute": "plain fit, 200 epochs"}
print("| change | MNIST final | MNIST best | digits final | digits best |\n|---|---|---|---|---|")
for s in rows:
    cells = []
    for t in ("mnist_fnn", "digits"):
        for rd in ("final", "best"):
            d = v.get((t, s, rd), {})
            vals = [d[k] for k in (0, 1, 2) if k in d]
            cells.append(f"{st.median(vals):.4f}" if len(vals) == 3 else "–")
    print(f"| {label[s]} | " + " | ".join(cells) + " |")
