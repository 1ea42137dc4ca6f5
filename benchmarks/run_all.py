"""Every benchmark, then the report: quality on equal budgets, overhead, memory, the app, scaling.

    pip install -e ".[bench]"
    python benchmarks/run_all.py            # full: 3 seeds, 3 tasks (about 1.5 h on 2 cores)
    python benchmarks/run_all.py --quick    # a smoke run of every part (a few minutes)
    python benchmarks/run_all.py --report-only   # rebuild REPORT.md from DIR/*.json

Each part runs in its own process (a crash or a leak in one cannot skew another) and writes
``DIR/*.json`` as ``{"records": [{system, task, seed, epochs, wall_s, metric, value, config}]}``.
The full run writes ``benchmarks/REPORT.md`` and its plots in ``benchmarks/plots/``; ``--quick``
writes its report and plots into DIR, so a smoke run never overwrites the full report.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TASK_TITLES = {"mnist_fnn": "MNIST-FNN (test accuracy, higher is better)",
               "gapfill_cnn": "Gap-filling CNN from the poor initial configuration (test MSE over the gap pixels, lower is better)",
               "digits": "sklearn digits (test accuracy, higher is better)"}
PEERS = ("optuna", "keras-tuner-hyperband", "keras-tuner-random")
FAILED: list[str] = []


def _run(args: list[str], log) -> float:
    t0 = time.perf_counter()
    log(f"$ python {' '.join(args)}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    proc = subprocess.run([sys.executable, *args], cwd=HERE.parent, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout.splitlines():
        if not line.startswith(("W0000", "I0000", "WARNING: All log")) and "propagateSizeHints" not in line:
            log("    " + line)
    if proc.returncode != 0:
        # one part failing must not lose the others (nor the report built from them)
        log(f"run_all: {' '.join(args)} FAILED with exit code {proc.returncode}")
        FAILED.append(" ".join(args))
    return time.perf_counter() - t0


def run_parts(out: Path, quick: bool, seeds: list[int], tasks: list[str], log, with_ray: bool) -> dict[str, float]:
    q = ["--quick"] if quick else []
    spent: dict[str, float] = {}
    for task in tasks:
        for seed in seeds:
            spent[f"quality {task} seed {seed}"] = _run(
                ["benchmarks/quality.py", *q, "--tasks", task, "--seeds", str(seed), "--out", str(out)], log)
    spent["overhead and scaling"] = _run(["benchmarks/overhead.py", *q, "--out", str(out)], log)
    spent["memory"] = _run(["benchmarks/memory.py", "--cycles", "4" if quick else "20", "--out", str(out), "--no-report"], log)
    spent["app"] = _run(["benchmarks/gui.py", *q, "--out", str(out), "--no-report"], log)
    if with_ray and importlib.util.find_spec("ray") is None:
        log("run_all: Ray is not installed (pip install -e '.[ray]'), so the Ray part is skipped")
    elif with_ray:
        spent["ray"] = _run(["benchmarks/ray_speedup.py", *q, "--out", str(out)], log)
    return spent


# -- report -------------------------------------------------------------------------------------

def load_records(out: Path, prefix: str) -> list[dict[str, Any]]:
    records = []
    for path in sorted(out.glob(f"{prefix}*.json")):
        records.extend(json.loads(path.read_text()).get("records", []))
    return records


def _median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def _spread(values) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return "1 seed"
    return f"{min(values):.4g} – {max(values):.4g}"


def quality_summary(records: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    groups: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r["task"]][(r["system"], int(r["config"].get("budget", 1)))].append(r)
    out: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for task, by in groups.items():
        out[task] = {}
        for key, rs in by.items():
            out[task][key] = {"value": _median([r["value"] for r in rs]), "spread": _spread([r["value"] for r in rs]),
                              "epochs": _median([r["epochs"] for r in rs]), "wall_s": _median([r["wall_s"] for r in rs]),
                              "seeds": len(rs), "metric": rs[0]["metric"], "values": [r["value"] for r in rs],
                              "budget_epochs": rs[0]["config"].get("miha_budget_epochs")}
    return out


def _verdict(value: float, goal: float, lower_is_better: bool) -> str:
    if not math.isfinite(value):
        return "not measured"
    ok = value <= goal if lower_is_better else value >= goal
    if ok:
        return "**met**"
    return f"**missed** by {abs(value - goal) / abs(goal):.0%}" if goal else "**missed**"


def _plot_quality(summary, task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary[task]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    def err(vs):  # the range across seeds, as error bars around the median
        lo = [v["value"] - min(v["values"]) for v in vs]
        hi = [max(v["values"]) - v["value"] for v in vs]
        return [lo, hi]

    for system in PEERS:
        vs = sorted((v for (sy, _b), v in s.items() if sy == system), key=lambda v: v["epochs"])
        if vs:
            ax.errorbar([v["epochs"] for v in vs], [v["value"] for v in vs], yerr=err(vs), marker="o", capsize=3,
                        label=system)
    styles = {"miha": ("*", 14), "miha-crossover": ("P", 10), "baseline-lineage": ("s", 7), "baseline-compute": ("D", 7)}
    for system, (marker, size) in styles.items():
        v = s.get((system, 1))
        if v:
            ax.errorbar([v["epochs"]], [v["value"]], yerr=err([v]), marker=marker, markersize=size, linestyle="none",
                        capsize=3, label=system)
    trivial = s.get(("trivial-fill", 1))
    if trivial:
        ax.axhline(trivial["value"], color="grey", linestyle="--", linewidth=1, label="trivial mean fill")
    ax.set_xlabel("epochs trained (all models of the search)")
    ax.set_ylabel(next(iter(s.values()))["metric"].replace("_", " "))
    ax.set_title(task + " — medians over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_series(xs, ys, xlabel, ylabel, title, path: Path, labels=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    if labels is None:
        ax.plot(xs, ys, marker="o")
    else:
        for (x, y), label in zip(zip(xs, ys), labels):
            ax.plot(x, y, marker="o", label=label)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _miha_config_text(quick: bool) -> str:
    from quality import miha_config

    c = miha_config(quick)
    return (f"m = {c.runup_epochs}, c = {c.cycles}, pop_size = {c.population_size}, n = {c.candidate_epochs}, "
            f"k = {c.fixing_epochs} ({c.total_epochs} compute epochs, {c.lineage_epochs} in the lineage)")


def write_report(out: Path, report: Path, plots: Path, quick: bool, spent: dict[str, float] | None = None) -> str:
    plots.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(plots, report.parent)
    quality = quality_summary(load_records(out, "quality"))
    targets: list[tuple[str, str, str, str]] = []
    lines = ["# MIHA benchmark report", "",
             f"Generated by `python benchmarks/run_all.py{' --quick' if quick else ''}` on {os.cpu_count()} CPU cores "
             f"({'with an NVIDIA GPU' if os.path.exists('/proc/driver/nvidia/gpus') else 'no GPU'}) on {time.strftime('%Y-%m-%d')}; records in `{os.path.relpath(out, HERE.parent)}/*.json`. "
             "Timings on this shared machine vary by about ±30 % between runs: ratios are taken within one run.", ""]
    if quick:
        lines += ["**This is a `--quick` smoke run: tiny data, one seed, one task. Its numbers say that every part "
                  "runs, not how good anything is.**", ""]
    target_rows_at = len(lines)

    # 1. quality
    from quality import TRIAL_EPOCHS, TRIAL_EPOCHS_QUICK

    te = TRIAL_EPOCHS_QUICK if quick else TRIAL_EPOCHS
    miha_text = _miha_config_text(quick)
    lines += ["## 1. Quality on a budget", "",
              "Every system sees the same split, the same topology and the same search space (the activation of each "
              "hidden layer among 10, the optimizer among SGD-momentum/Adam/AdamW/RMSprop/Adadelta/Nadam, the learning "
              "rate in [1e-4, 0.3], the batch size in 16–256) and chooses on validation; test is reported once, for "
              "what it chose. The budget is MIHA's compute epochs, 2m + c(pop_size·n + k). Each peer searched to 4× "
              "that budget; its value at 1×, 2× and 4× is its best trial (by validation loss) among those that had "
              "*finished* within that many epochs. `epochs` counts every epoch of every model trained. "
              f"Optuna: TPE sampler with a MedianPruner, {te}-epoch trials; KerasTuner: Hyperband (max {te} epochs, "
              f"factor 3) and RandomSearch ({te}-epoch trials). Baselines: the initial configuration trained plainly "
              "for MIHA's lineage epochs and for its compute epochs. MIHA starts from the initial configuration: "
              f"{miha_text}.", ""]
    for task, s in quality.items():
        metric = next(iter(s.values()))["metric"]
        higher = "accuracy" in metric
        budget = next((v["budget_epochs"] for v in s.values() if v.get("budget_epochs")), None)
        lines += [f"### {TASK_TITLES.get(task, task)}", "",
                  f"MIHA's budget: {budget} epochs. Medians over {max(v['seeds'] for v in s.values())} seed(s), "
                  "with the range across seeds.", "",
                  f"| system | budget | epochs | wall s | {metric} | range |", "|---|---|---|---|---|---|"]
        order = ["miha", "miha-crossover", "baseline-lineage", "baseline-compute", *PEERS, "trivial-fill"]
        for system in order:
            for b in (1, 2, 4):
                v = s.get((system, b))
                if v:
                    bold = "**" if system.startswith("miha") else ""
                    lines.append(f"| {bold}{system}{bold} | {b}× | {v['epochs']:.0f} | {v['wall_s']:.1f} | "
                                 f"{bold}{v['value']:.4g}{bold} | {v['spread']} |")
        png = plots / f"quality_{task}.png"
        _plot_quality(quality, task, png)
        lines += ["", f"![{task}]({rel}/{png.name})", ""]
        miha = s.get(("miha", 1), {}).get("value", math.nan)
        if task == "mnist_fnn":
            # peers read at a budget where they had trained at least twice MIHA's epochs
            m_ep = s.get(("miha", 1), {}).get("epochs", math.nan)
            eligible = {(p, b): v for (p, b), v in s.items() if p in PEERS and v["epochs"] >= 2 * m_ep}
            if eligible:
                (best_peer, b), v = max(eligible.items(), key=lambda kv: kv[1]["value"])
                goal = v["value"]
                targets.append(("MNIST-FNN: MIHA's test accuracy ≥ the best peer's at ≤ 0.5× that peer's epochs "
                                f"(best such peer: {best_peer} at {b}×, {v['epochs']:.0f} epochs against MIHA's {m_ep:.0f})",
                                f"{miha:.4f} vs {goal:.4f}", f"≥ {goal:.4f}", _verdict(miha, goal, False)))
        if task == "gapfill_cnn":
            base = s.get(("baseline-compute", 1), {}).get("value", math.nan)
            ratio = miha / base if base else math.nan
            targets.append(("Gap filling: MIHA's gap MSE ÷ the poor initial configuration's at equal (compute) epochs",
                            f"{ratio:.2f}", "≤ 0.35", _verdict(ratio, 0.35, True)))
            lin = s.get(("baseline-lineage", 1), {}).get("value", math.nan)
            lines += [f"MIHA ÷ poor initial configuration: {ratio:.2f} at equal compute epochs, "
                      f"{miha / lin if lin else math.nan:.2f} at equal lineage epochs.", ""]
        if higher is False and task != "gapfill_cnn":
            pass

    # 2. overhead
    ovh = load_records(out, "overhead")
    if ovh:
        o = ovh[0]["config"]
        lines += ["## 2. Overhead against the physical limit", "",
                  f"`benchmarks/overhead.py`: the MNIST FNN, {o['config']}, {o['compute_epochs']} compute epochs on "
                  f"{o['samples']} samples. The limits train one model for the same epochs at the same batch sizes in "
                  f"the same order ({o['batch_size_segments']} runs of equal batch size), with the same validation pass, "
                  "in the same process.", "",
                  "| measure | seconds | ratio |", "|---|---|---|",
                  f"| MIHA run, wall | {o['miha_wall_s']:.1f} | |",
                  f"| limit: the engine's Trainer on one model | {o['trainer_limit_wall_s']:.1f} | MIHA ÷ limit = **{o['overhead_vs_trainer']:.2f}** |",
                  f"| Keras' plain `fit` on one model | {o['keras_fit_wall_s']:.1f} | MIHA ÷ plain fit = **{o['overhead_vs_keras_fit']:.2f}** |",
                  f"| training inside the MIHA run (`Trainer.fit`, {o['fits']} fits) | {o['training_in_miha_s']:.1f} | |",
                  "", "Where the rest goes (seconds, whole run):", "", "| part | seconds | share of wall |", "|---|---|---|"]
        for part, sec in sorted(o["outside_training_s"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {part} | {sec:.2f} | {sec / o['miha_wall_s']:.0%} |")
        lines.append("")
        targets.append(("Overhead: MIHA wall ÷ plain training of the same epochs (engine's Trainer)",
                        f"{o['overhead_vs_trainer']:.2f}", "≤ 1.10", _verdict(o["overhead_vs_trainer"], 1.10, True)))

    # 3. memory
    mem_path = out / "memory.json"
    if mem_path.exists():
        mem = json.loads(mem_path.read_text())
        by = {int(k): v for k, v in mem["rss_mb_by_cycle"].items()}
        png = plots / "memory.png"
        _plot_series(list(by), list(by.values()), "cycle", "RSS after the cycle (MB)",
                     f"RSS over {mem['cycles']} cycles (MNIST FNN, pop 4, n = k = 1)", png)
        lines += ["## 3. Memory", "",
                  f"`benchmarks/memory.py --cycles {mem['cycles']}`: RSS after each cycle. Growth from cycle 2 to "
                  f"cycle {mem['cycles']}: **{mem['growth_mb_cycle2_to_last']:+.0f} MB**; peak RSS {mem['peak_rss_mb']:.0f} MB.",
                  "", f"![memory]({rel}/{png.name})", ""]
        targets.append((f"Memory growth, cycle 2 → {mem['cycles']}", f"{mem['growth_mb_cycle2_to_last']:+.0f} MB",
                        "≤ 50 MB", _verdict(mem["growth_mb_cycle2_to_last"], 50, True)))

    # 4. app
    gui_path = out / "gui.json"
    if gui_path.exists():
        g = json.loads(gui_path.read_text())
        lines += ["## 4. The app", "",
                  "`benchmarks/gui.py` (offscreen Qt; the demo run trains in the engine's child process).", "",
                  "| measure | value |", "|---|---|",
                  f"| process start → window shown | {g['launch_to_window_s']:.2f} s |",
                  f"| process start → window shown, `--demo` | {g['launch_to_window_demo_s']:.2f} s |",
                  f"| longest GUI-thread stall during a demo run (10 ms QTimer) | {g['longest_stall_ms']:.0f} ms |",
                  f"| 99th-percentile stall | {g['p99_stall_ms']:.0f} ms |",
                  f"| plot refreshes per second | {g['plot_refreshes_per_s']:.1f} |", ""]
        worst = max(g["launch_to_window_s"], g["launch_to_window_demo_s"])
        targets.append(("The window shows after start (worse of plain and `--demo`)", f"{worst:.2f} s", "≤ 1.0 s",
                        _verdict(worst, 1.0, True)))
        targets.append(("Longest GUI-thread stall while a demo run trains", f"{g['longest_stall_ms']:.0f} ms",
                        "≤ 50 ms", _verdict(g["longest_stall_ms"], 50, True)))

    # 5. scaling
    sc = load_records(out, "scaling")
    if sc:
        lines += ["## 5. How cost grows", "",
                  "`benchmarks/overhead.py`: m = n = k = 1, c = 2, the MNIST FNN. Cost per member-epoch should stay flat "
                  "as pop_size grows (linear in pop_size·n), and grow with the samples.", "",
                  "| varied | pop_size | samples | member epochs | wall s | wall ÷ member epochs |", "|---|---|---|---|---|---|"]
        series = defaultdict(list)
        for r in sc:
            c = r["config"]
            lines.append(f"| {c['axis']} | {c['population_size']} | {c['samples']} | {c['member_epochs']} | "
                         f"{r['wall_s']:.1f} | {r['wall_s'] / c['member_epochs']:.2f} |")
            series[c["axis"]].append((c["population_size"] if c["axis"] == "pop_size" else c["samples"], r["wall_s"]))
        pops = sorted(series.get("pop_size", []))
        if len(pops) >= 2:
            (p0, w0), (p1, w1) = pops[0], pops[-1]
            slope = (w1 - w0) / (p1 - p0)
            lines += ["", f"Wall time grows by {slope:.2f} s per extra member (c·n = 2 member epochs each); "
                      f"from pop {p0} to {p1} the wall grew ×{w1 / w0:.2f} for ×{p1 / p0:.1f} members "
                      "(the run-up, fixing and final epochs are a fixed part).", ""]
        for axis, pts in series.items():
            pts = sorted(pts)
            png = plots / f"scaling_{axis}.png"
            _plot_series([p for p, _ in pts], [w for _, w in pts], axis.replace("_", " "), "wall time (s)",
                         f"MIHA wall time against {axis.replace('_', ' ')}", png)
            lines += [f"![scaling {axis}]({rel}/{png.name})", ""]

    # 6. Ray (issue: scale out)
    ray_path = out / "ray_speedup.json"
    if ray_path.exists():
        r = json.loads(ray_path.read_text())
        lo, ry = r["local"], r["ray"]
        c = lo["config"]
        lines += ["## 6. Members on Ray against in-process", "",
                  f"`benchmarks/ray_speedup.py`: the MNIST FNN, m = {c['runup_epochs']}, c = {c['cycles']}, "
                  f"pop_size = {c['population_size']}, n = {c['candidate_epochs']}, k = {c['fixing_epochs']}; the same run "
                  f"(same genes: {r['same_genes']}) in-process and on a local Ray instance with {r['workers']} one-CPU "
                  f"workers, on {r['cpu_count']} cores, one process run. Medians over the cycles.", "",
                  "| | in-process | Ray | in-process ÷ Ray |", "|---|---|---|---|",
                  f"| one cycle (members + selection + fixing + saving) | {lo['median_cycle_s']:.2f} s | {ry['median_cycle_s']:.2f} s | ×{r['speedup_per_cycle']:.2f} |",
                  f"| the population phase of a cycle | {lo['median_population_s']:.2f} s | {ry['median_population_s']:.2f} s | ×{r['speedup_population_phase']:.2f} |",
                  f"| one member epoch | {lo['median_member_epoch_s']:.3f} s (TensorFlow on every core) | {ry['median_member_epoch_s']:.3f} s (one thread per worker) | |",
                  f"| whole run | {lo['wall_s']:.1f} s | {ry['wall_s']:.1f} s | ×{lo['wall_s'] / ry['wall_s']:.2f} |",
                  "", f"Starting the local Ray instance took {r['ray_start_s']:.1f} s (not in the cycle times); a remote "
                  f"member's fixed cost beyond its epochs (shipping and loading the parent archive, tracing, sending "
                  f"the trained archive back) was about {r['remote_member_overhead_s']:.2f} s. The analysis of what to "
                  "expect on k GPUs is in `docs/cluster.md`; with this run's costs (a remote member's fixed cost = "
                  f"{r['amdahl']['member_overhead_epochs']:.2f} member epochs, serial work per cycle beyond its fixing "
                  f"epochs = {r['amdahl']['serial_overhead_per_cycle_epochs']:.2f} epochs):", "",
                  "| configuration | serial share | 1 | 2 | 4 | 8 | 16 GPUs | limit (g ≥ pop_size, no member cost) |",
                  "|---|---|---|---|---|---|---|---|",
                  *[f"| {row['config']} | {row['serial_share']:.0%} | "
                    + " | ".join(f"×{v:.2f}" for v in row["speedup"].values()) + f" | ×{row['limit']:.2f} |"
                    for row in r["amdahl"]["table"]], ""]

    if spent:
        lines += ["## Run time of this report", "", "| part | seconds |", "|---|---|",
                  *[f"| {k} | {v:.0f} |" for k, v in spent.items()], ""]
    table = ["## Targets", "", "| target | measured | goal | verdict |", "|---|---|---|---|",
             *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets], ""]
    lines[target_rows_at:target_rows_at] = table
    text = "\n".join(lines)
    # keep the sections other scripts own (speed.py's "Training speed", analyses added by hand)
    if report.exists():
        old = report.read_text()
        for heading in ("## Training speed", "## Analysis"):
            if heading in old:
                start = old.index(heading)
                nxt = old.find("\n## ", start + len(heading))
                text += "\n" + (old[start:nxt] if nxt != -1 else old[start:]).rstrip() + "\n"
    report.write_text(text.rstrip() + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of every part: tiny data, one seed, one task")
    ap.add_argument("--out", help="where the JSON records go (default benchmarks/results)")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--tasks", nargs="+", choices=list(TASK_TITLES))
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from the JSON already in --out")
    ap.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None,
                    help="also time members on a local Ray instance (benchmarks/ray_speedup.py; default: in full runs)")
    args = ap.parse_args(argv)
    # a smoke run never writes where the full run's records live
    out = Path(args.out) if args.out else HERE / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    tasks = args.tasks or (["digits"] if args.quick else list(TASK_TITLES))
    log_file = (out / "run_all.log").open("a")

    def log(message: str) -> None:
        print(message, flush=True)
        log_file.write(message + "\n")
        log_file.flush()

    spent = None
    if not args.report_only:
        t0 = time.perf_counter()
        with_ray = args.ray if args.ray is not None else not args.quick
        spent = run_parts(out, args.quick, seeds, tasks, log, with_ray)
        spent["total"] = time.perf_counter() - t0
        (out / "run_all.json").write_text(json.dumps({"records": [], "seconds": spent, "quick": args.quick}, indent=1))
    elif (out / "run_all.json").exists():
        spent = json.loads((out / "run_all.json").read_text()).get("seconds")
    report = out / "REPORT.md" if args.quick else HERE / "REPORT.md"
    plots = out / "plots" if args.quick else HERE / "plots"
    text = write_report(out, report, plots, args.quick, spent)
    log(text[text.index("## Targets"):text.index("## 1.")] if "## Targets" in text else "")
    log(f"report: {report}")
    if FAILED:
        log("run_all: these parts failed (their sections are missing from the report):\n  " + "\n  ".join(FAILED))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
