"""Memory over many cycles: RSS after each cycle of a c=20 run, and its growth from cycle 2 to 20.

    python benchmarks/memory.py [--cycles 20] [--out benchmarks/results]
    python benchmarks/memory.py --cycles 100 --recycle-after 0 12 --plot benchmarks/plots/memory_cycles.png

The second form runs ``miha run`` (the CLI, as a user does) in a child process for each
``recycle_after`` value and reads its RSS from /proc after every cycle.  With ``--evaluator ray`` the
members train on a local Ray instance, and the Ray member workers' processes and RSS are read too.

The MNIST FNN (784-400-10) on the examples' 4,500 digits, pop_size=4, n=1, k=1, every gene kind on
(so the model pool builds models with new activations as the run goes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _rss_of(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return None


def _parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def ray_workers(root: int) -> dict[int, float]:
    """RSS (MB) of every Ray member worker (``ray::MemberWorker``) descended from process ``root``."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not cmd.startswith(b"ray::MemberWorker"):
            continue
        pid = up = int(entry.name)
        while up > 1 and up != root:
            up = _parent_of(up)
        rss = _rss_of(pid) if up == root else None
        if rss:
            found[pid] = rss
    return found


def run_cli(cycles: int, recycle_after: int, workdir: Path, log=print, evaluator: str = "local",
            recycle_rss_mb: int | None = None) -> dict:
    """``miha run`` in a child process (the way a user runs it); its RSS is read after every cycle from
    /proc (the CLI recycles itself in place with exec, so the PID stays the same)."""
    import subprocess
    import time

    import mnist_fnn
    import numpy as np

    x, y, xt, yt = mnist_fnn.load(quick=False)
    data = workdir / "mnist.npz"
    np.savez(data, x=x, y=y, x_test=xt, y_test=yt)
    model = workdir / "fnn.keras"
    mnist_fnn.build(0).save(model)
    run_dir = workdir / f"run-r{recycle_after}"
    cmd = [sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data), "-m", "1",
           "-n", "1", "-k", "1", "-c", str(cycles), "-p", "4", "--batch-size", "32", "--seed", "0",
           "--drop-intermediate", "--recycle-after", str(recycle_after), "--run-dir", str(run_dir), "--quiet",
           "--evaluator", evaluator]
    if recycle_rss_mb is not None:
        cmd += ["--recycle-rss-mb", str(recycle_rss_mb)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    by_cycle: dict[int, float] = {}
    workers_by_cycle: dict[int, dict[str, float]] = {}  # with Ray: the member workers' RSS, summed
    worker_pids: set[int] = set()
    peak, seen, restarts = 0.0, 0, 0
    events = run_dir / "events.jsonl"
    while proc.poll() is None:
        rss = _rss_of(proc.pid)
        if rss:
            peak = max(peak, rss)
        if events.exists():
            lines = events.read_text().splitlines()
            for line in lines[seen:]:
                e = json.loads(line)
                if e.get("kind") == "cycle_done" and rss:
                    by_cycle[int(e["cycle"])] = rss
                    extra = ""
                    if evaluator == "ray":
                        workers = ray_workers(proc.pid)
                        worker_pids.update(workers)
                        workers_by_cycle[int(e["cycle"])] = {"count": len(workers), "rss_mb": sum(workers.values())}
                        extra = f"; {len(workers)} Ray member workers, {sum(workers.values()):.0f} MB"
                    log(f"cycle {e['cycle']:3d}: RSS {rss:.0f} MB{extra}")
                elif e.get("kind") == "run_resumed":
                    restarts += 1
            seen = len(lines)
        time.sleep(0.05)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"miha run failed ({proc.returncode}): {err[-2000:]}")
    first = min(2, cycles)
    return {"cycles": cycles, "recycle_after": recycle_after, "rss_mb_by_cycle": by_cycle,
            "growth_mb_cycle2_to_last": by_cycle[cycles] - by_cycle[first] if cycles in by_cycle and first in by_cycle
            else None,
            "growth_mb_cycle2_to_20": (by_cycle[20] - by_cycle[2]) if 20 in by_cycle and 2 in by_cycle else None,
            "max_rss_after_cycle2_mb": max(v for c, v in by_cycle.items() if c >= first) - by_cycle[first],
            "peak_rss_mb": peak, "restarts": restarts, "wall_s": time.perf_counter() - t0, "evaluator": evaluator,
            **({"ray_workers_by_cycle": workers_by_cycle, "ray_worker_processes": len(worker_pids)}
               if evaluator == "ray" else {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--recycle-after", type=int, nargs="+",
                    help="run the CLI (a child process, sampled from /proc) with each of these recycle_after "
                    "values (0: never recycle); default: the in-process API run of the first wave")
    ap.add_argument("--recycle-rss-mb", type=int,
                    help="with --recycle-after: the CLI's memory trigger (0: off; default: the CLI's own)")
    ap.add_argument("--plot", help="with --recycle-after: write a PNG of RSS against cycles here")
    ap.add_argument("--evaluator", choices=["local", "ray"], default="local",
                    help="with --recycle-after: ray also reads the Ray member workers' RSS after every cycle")
    ap.add_argument("--no-report", action="store_true", help="write only the JSON (run_all.py writes the report)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.recycle_after:
        results = []
        with tempfile.TemporaryDirectory(prefix="miha-mem-") as tmp:
            for r in args.recycle_after:
                print(f"recycle_after={r}", flush=True)
                res = run_cli(args.cycles, r, Path(tmp), log=lambda s: print("  " + s, flush=True),
                              evaluator=args.evaluator, recycle_rss_mb=args.recycle_rss_mb)
                print(f"  growth cycle 2 → {args.cycles}: {res['growth_mb_cycle2_to_last']:+.0f} MB; most above "
                      f"cycle 2: {res['max_rss_after_cycle2_mb']:+.0f} MB; peak {res['peak_rss_mb']:.0f} MB; "
                      f"{res['restarts']} restarts; {res['wall_s']:.0f} s", flush=True)
                results.append(res)
        name = f"memory-cli-c{args.cycles}{'-ray' if args.evaluator == 'ray' else ''}.json"
        (out / name).write_text(json.dumps({"records": [
            {"system": f"miha-cli-recycle{r['recycle_after']}", "task": "mnist_fnn", "seed": 0,
             "epochs": 2 + args.cycles * 5, "wall_s": r["wall_s"], "metric": "rss_growth_mb_cycle2_to_last",
             "value": r["growth_mb_cycle2_to_last"], "config": r} for r in results]}, indent=1))
        if args.plot:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
            for r in results:
                cs = sorted(r["rss_mb_by_cycle"])
                rss = "the CLI's default" if args.recycle_rss_mb is None else f"{args.recycle_rss_mb} (0: off)"
                label = f"recycle_after {r['recycle_after']} (0: no count), recycle_rss_mb {rss}"
                ax.plot(cs, [r["rss_mb_by_cycle"][c] for c in cs], label=label)
            ax.set_xlabel("cycle")
            ax.set_ylabel("RSS after the cycle (MB)")
            ax.set_title(f"MNIST FNN, pop 4, n = k = 1, every gene kind, {args.cycles} cycles (miha run)")
            ax.grid(alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot)
            print(f"wrote {args.plot}")
        print(f"wrote {out / name}")
        return
    run_in_process(args, out)


def run_in_process(args, out: Path) -> None:
    import mnist_fnn

    import miha_engine as me

    x, y, xt, yt = mnist_fnn.load(quick=False)
    cfg = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=args.cycles, population_size=4,
                       batch_size=32, seed=0, drop_intermediate=True)
    samples: list[tuple[int, float]] = []

    def listener(e):
        if e.kind == "cycle_done":
            gc.collect()
            samples.append((e.cycle, rss_mb()))
            print(f"cycle {e.cycle:3d}: RSS {samples[-1][1]:.0f} MB", flush=True)

    me.run(mnist_fnn.build(0), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg,
           run_dir=Path(tempfile.mkdtemp(prefix="miha-mem-")) / "run", listeners=[listener])
    by_cycle = dict(samples)
    growth = by_cycle[args.cycles] - by_cycle[min(2, args.cycles)]
    result = {"cycles": args.cycles, "rss_mb_by_cycle": by_cycle, "growth_mb_cycle2_to_last": growth,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3}
    result["records"] = [{"system": "miha", "task": "mnist_fnn", "seed": 0, "epochs": cfg.total_epochs,
                          "wall_s": None, "metric": "rss_growth_mb_cycle2_to_last", "value": growth,
                          "config": {"cycles": args.cycles, "population_size": 4, "n": 1, "k": 1,
                                     "rss_mb_by_cycle": by_cycle, "peak_rss_mb": result["peak_rss_mb"]}}]
    (out / "memory.json").write_text(json.dumps(result, indent=2))
    print(f"growth from cycle 2 to {args.cycles}: {growth:+.0f} MB; peak {result['peak_rss_mb']:.0f} MB")
    if args.no_report:
        return
    from speed import _write_section

    rows = " ".join(f"{c}:{v:.0f}" for c, v in samples)
    _write_section(HERE / "REPORT.md", "## Memory", "\n".join([
        "## Memory", "",
        f"`python benchmarks/memory.py --cycles {args.cycles}`: the MNIST FNN, pop_size 4, n = k = 1, every gene kind on.",
        "", f"RSS after each cycle (MB): {rows}.", "",
        f"Growth from cycle 2 to cycle {args.cycles}: **{growth:+.0f} MB** (target ≤ 50 MB); peak RSS {result['peak_rss_mb']:.0f} MB.",
        "",
        "Where it goes (`python benchmarks/tf_trace_memory.py [plain|clear|nograppler]`): the "
        "Keras models themselves are released (weak references to every dropped model die at the next "
        "`gc.collect()`), but TensorFlow keeps about 8 MB for every model it has traced, even after the model "
        "is gone; `keras.backend.clear_session()`, `malloc_trim(0)` and turning Grappler off do not return it. "
        "A run whose mutations never build a new model (learning rate and batch size only; the model pool "
        "reuses its compiled models) grew 17 MB over ten cycles; with activation mutations every cycle builds "
        "about one new model. The app already runs each run in its own process, so the memory returns when "
        "the run ends. Proposed fix for long runs: recycle the engine's process every N new models through "
        "the resume checkpoint (the lineage is exact across a resume).",
        "",
    ]))


if __name__ == "__main__":
    main()
