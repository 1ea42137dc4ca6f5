"""Wall time per cycle: members in this process against members on Ray workers, in one process run.

    python benchmarks/ray_speedup.py [--quick] [--workers 2] [--repeat 3] [--out DIR]

The MNIST FNN on the examples' 4,500 digits; m = 1, c = 4, pop_size = 4, n = 2, k = 1.  The same run
(same seed, same genes) as pairs: ``evaluator = "local"`` (members one after the other, with the
engine's TensorFlow threads), then ``evaluator = "ray"`` on a local Ray instance with ``--workers``
CPUs (one CPU and one TensorFlow thread per member, so that many members train at once), ``--repeat``
pairs alternating; the speed-up is the median over the pairs of the mean time of cycles 2 to c (the
first cycle on Ray starts the workers).  Per cycle, the time from the first member's start to the
cycle's result (the parallel part) and the fixing phase (serial) are taken from the events; the Ray
instance's start-up is reported apart.

First it measures this machine's ceiling: ``--workers`` one-thread processes training members at
once, against one alone (no Ray), i.e. the most a population phase on as many workers can gain.

It also writes the inputs of the Amdahl estimate in docs/cluster.md: the serial share of a run and
the per-member overhead of a remote member.  Writes ``DIR/ray_speedup.json`` (``{"records": [...]}``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def timed_run(evaluator: str, quick: bool, workers: int) -> dict[str, Any]:
    import mnist_fnn

    import miha_engine as me

    x, y, xt, yt = mnist_fnn.load(quick=quick)
    cfg = me.RunConfig(runup_epochs=1, candidate_epochs=1 if quick else 2, fixing_epochs=1, cycles=2 if quick else 4,
                       population_size=workers * 2, batch_size=32, seed=0, evaluator=evaluator)
    marks: list[tuple[str, int, float]] = []
    member_epochs: list[float] = []
    member_first: list[float] = []  # each member's first epoch (a new model's trace lands there)
    member_later: list[float] = []
    main_epochs: list[float] = []

    def listener(e):
        now = time.perf_counter()
        if e.kind == "member_started" and e.member == 0:
            marks.append(("cycle_start", e.cycle, now))
        elif e.kind == "cycle_done":
            marks.append(("population_done", e.cycle, now))
        elif e.kind == "archive_saved" and e.description.startswith("main model after cycle"):
            marks.append(("cycle_saved", int(e.description.rsplit(" ", 1)[1]), now))
        elif e.kind == "epoch_ended":
            (member_epochs if e.phase == "member" else main_epochs).append(e.seconds)
            if e.phase == "member" and e.cycle > 1:  # cycle 1 on Ray includes the workers' start
                (member_first if e.epoch == 1 else member_later).append(e.seconds)

    t0 = time.perf_counter()
    res = me.run(mnist_fnn.build(0), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg,
                 run_dir=Path(tempfile.mkdtemp(prefix=f"miha-ray-{evaluator}-")) / "run", listeners=[listener])
    wall = time.perf_counter() - t0
    at = {(k, c): t for k, c, t in marks}
    population_s = [at[("population_done", c)] - at[("cycle_start", c)] for c in range(1, cfg.cycles + 1)]
    cycle_s = [at[("cycle_saved", c)] - at[("cycle_start", c)] for c in range(1, cfg.cycles + 1)]
    genes = {c: [e["genes"] for k, e in sorted(res.population[c].items()) if k != "_cycle"] for c in res.population}
    return {"evaluator": evaluator, "wall_s": wall, "population_s": population_s, "cycle_s": cycle_s,
            "median_population_s": statistics.median(population_s), "median_cycle_s": statistics.median(cycle_s),
            # cycles after the first (on Ray the first includes starting the workers)
            "warm_cycle_s": statistics.mean(cycle_s[1:]), "warm_population_s": statistics.mean(population_s[1:]),
            "median_member_epoch_s": statistics.median(member_epochs), "median_main_epoch_s": statistics.median(main_epochs),
            "median_member_first_epoch_s": statistics.median(member_first) if member_first else None,
            "median_member_later_epoch_s": statistics.median(member_later) if member_later else None,
            "config": cfg.to_dict(), "genes": genes, "test_accuracy": res.test_metrics.get("final", {}).get("accuracy")}


def c_k(r: dict[str, Any]) -> int:
    """Fixing epochs per cycle."""
    return int(r["config"]["fixing_epochs"])


_PROBE = """
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["MIHA_TF_THREADS"] = os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
sys.path.insert(0, {examples!r})
import miha_engine as me
import mnist_fnn
from miha_engine.backend import KerasBackend
from miha_engine.training import CancelToken
x, y, _, _ = mnist_fnn.load(quick=False)
be = KerasBackend.prepare(mnist_fnn.build(0), me.from_arrays(x, y), me.RunConfig(batch_size=32, seed=0), CancelToken())
genes = be.initial_genes()
be.start(genes)
parent = be.snapshot(genes)
be.train_member(genes, parent, 1, 0, 2, lambda *a: None)  # trace and warm up
print("ready", flush=True)
sys.stdin.readline()  # all start timing together
t = time.perf_counter()
be.train_member(genes, parent, 2, 0, {epochs}, lambda *a: None)
print(time.perf_counter() - t)
"""


def concurrency_ceiling(workers: int, epochs: int = 12) -> dict[str, Any]:
    """What ``workers`` one-thread processes training members at once give over one alone, on this
    machine: the most a population phase on as many one-CPU Ray workers can gain (no Ray in it)."""
    import subprocess

    code = _PROBE.format(examples=str(HERE.parent / "examples"), epochs=epochs)

    def batch(k: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True) for _ in range(k)]
        for p in procs:  # every process has started TensorFlow and traced before any is timed
            while p.stdout.readline().strip() != "ready":
                pass
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    alone = batch(1)[0]
    together = batch(workers)
    ceiling = workers * alone / max(together)
    return {"epochs": epochs, "alone_s": alone, "together_s": together, "throughput_ratio": ceiling}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (one member each)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--repeat", type=int, default=3,
                    help="pairs of runs (in-process, then Ray), alternating; the ratio reported is their median")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from miha_engine import ray_evaluator

    ceiling = concurrency_ceiling(args.workers)
    print(f"{args.workers} one-thread processes training at once: {ceiling['throughput_ratio']:.2f}× the "
          f"throughput of one ({ceiling['epochs']} epochs in {ceiling['alone_s']:.2f} s alone, "
          + ", ".join(f"{v:.2f}" for v in ceiling["together_s"]) + " s together)")
    local = timed_run("local", args.quick, args.workers)
    t = time.perf_counter()
    ray_evaluator.connect(None, num_cpus=args.workers)
    ray_start = time.perf_counter() - t
    remote = timed_run("ray", args.quick, args.workers)
    pairs = [(local, remote)]
    for _ in range(args.repeat - 1):  # alternate, so a slow spell of the machine hits both
        pairs.append((timed_run("local", args.quick, args.workers), timed_run("ray", args.quick, args.workers)))
    import ray

    ray.shutdown()
    same_genes = all(a["genes"] == b["genes"] for a, b in pairs)
    repeats = [{"local_cycle_s": a["warm_cycle_s"], "ray_cycle_s": b["warm_cycle_s"],
                "speedup_per_cycle": a["warm_cycle_s"] / b["warm_cycle_s"],
                "speedup_population_phase": a["warm_population_s"] / b["warm_population_s"],
                "local_member_epoch_s": a["median_member_later_epoch_s"],
                "ray_member_epoch_s": b["median_member_later_epoch_s"]} for a, b in pairs]
    # the pair whose ratio is the median one stands for the run in the fields below
    order = sorted(range(len(pairs)), key=lambda i: repeats[i]["speedup_per_cycle"])
    local, remote = pairs[order[len(order) // 2]]
    speedup_cycle = statistics.median(r["speedup_per_cycle"] for r in repeats)
    speedup_population = statistics.median(r["speedup_population_phase"] for r in repeats)
    pop = local["config"]["population_size"]
    n = local["config"]["candidate_epochs"]
    # a remote member's cost beyond its epochs: the population phase on Ray, minus the epochs it
    # trained, spread over the members (each worker trains pop/workers of them in turn)
    per_member_overhead = (remote["median_population_s"] - (pop / args.workers) * n * remote["median_member_epoch_s"]) / (pop / args.workers)
    # Amdahl: everything in units of one member epoch t, from this run's measurements
    t = local["median_member_epoch_s"]
    serial_per_cycle = max(0.0, local["median_cycle_s"] - local["median_population_s"] - c_k(local) * local["median_main_epoch_s"])
    o = serial_per_cycle / t
    r_epochs = max(0.0, per_member_overhead) / max(remote["median_member_epoch_s"], 1e-9)
    amdahl = {"member_overhead_epochs": r_epochs, "serial_overhead_per_cycle_epochs": o, "table": []}
    for name, (m, c, p, nn, k) in {"article (m=10 c=10 pop=5 n=3 k=3)": (10, 10, 5, 3, 3),
                                   "wide (m=5 c=10 pop=16 n=3 k=2)": (5, 10, 16, 3, 2)}.items():
        t1 = (2 * m + c * k) + c * o + c * p * nn
        row = {"config": name, "serial_share": ((2 * m + c * k) + c * o) / t1, "speedup": {}}
        for g in (1, 2, 4, 8, 16):
            tg = (2 * m + c * k) + c * o + c * -(-p // g) * (nn + r_epochs)
            row["speedup"][g] = t1 / tg
        row["limit"] = 1 / (row["serial_share"] + (1 - row["serial_share"]) / p)
        amdahl["table"].append(row)
    result = {
        "amdahl": amdahl,
        "workers": args.workers, "cpu_count": os.cpu_count(), "quick": args.quick,
        "concurrency_ceiling": ceiling, "local": local, "ray": remote, "ray_start_s": ray_start, "same_genes": same_genes, "repeats": repeats,
        "speedup_per_cycle": speedup_cycle, "speedup_population_phase": speedup_population,
        "remote_member_overhead_s": per_member_overhead,
    }
    result["records"] = [
        {"system": f"miha-{r['evaluator']}", "task": "mnist_fnn", "seed": 0,
         "epochs": 2 * r["config"]["runup_epochs"] + r["config"]["cycles"] * (pop * n + r["config"]["fixing_epochs"]),
         "wall_s": r["wall_s"], "metric": "median_cycle_s", "value": r["median_cycle_s"],
         "config": {"evaluator": r["evaluator"], "workers": args.workers if r["evaluator"] == "ray" else 1,
                    "population_size": pop, "n": n, "median_population_s": r["median_population_s"],
                    "median_member_epoch_s": r["median_member_epoch_s"]}}
        for r in (local, remote)]
    (out / "ray_speedup.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"per cycle (cycles 2-{local['config']['cycles']}): in-process {local['warm_cycle_s']:.2f} s, Ray "
          f"({args.workers} workers) {remote['warm_cycle_s']:.2f} s: speed-up ×{speedup_cycle:.2f} (population phase ×{speedup_population:.2f}); "
          f"member epoch {local['median_member_epoch_s']:.3f} s in-process vs {remote['median_member_epoch_s']:.3f} s "
          f"on a 1-CPU worker; Ray start {ray_start:.1f} s; same genes: {same_genes}")
    print("  per pair: " + ", ".join(f"×{r['speedup_per_cycle']:.2f}" for r in repeats))
    for r in (local, remote):
        print(f"  {r['evaluator']}: cycles {', '.join(f'{v:.2f}' for v in r['cycle_s'])} s; from cycle 2 a member's "
              f"first epoch {r['median_member_first_epoch_s']:.3f} s, its later epochs {r['median_member_later_epoch_s']:.3f} s")
    for row in amdahl["table"]:
        print(f"Amdahl, {row['config']}: serial share {row['serial_share']:.0%}; speed-up on 1/2/4/8/16 GPUs "
              + " / ".join(f"{v:.2f}" for v in row["speedup"].values()) + f"; limit {row['limit']:.2f}")


if __name__ == "__main__":
    main()
