"""The Ray evaluator on a real local Ray instance (2 CPUs, loopback only, no usage stats).

Members train on Ray worker actors; these tests check that a run on Ray leaves the
same run folder and the same genes as in-process, that epochs stream back live, that a worker
killed mid-member is retried (or, with no retries left, its member scores worst and the run goes
on), and that the CLI and the app reach it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray  # noqa: E402  (the dev extra installs miha[ray]; a missing Ray must fail here, not skip)

import miha_engine as me  # noqa: E402
from miha_engine import ray_evaluator  # noqa: E402
from miha_engine.testing import dense_classifier  # noqa: E402

CFG = me.RunConfig(runup_epochs=1, candidate_epochs=2, fixing_epochs=1, cycles=2, population_size=3, seed=5)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module: 2 CPUs, bound to 127.0.0.1."""
    assert ray_evaluator.connect(None, num_cpus=2)
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")  # a local instance listens on loopback only
    yield address
    ray.shutdown()


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _worker_pids(idle_too: bool = False) -> list[int]:
    """Member workers of *this* test's Ray instance (descendants of this process) training a member
    now, or alive at all with ``idle_too`` (Ray titles an actor ``ray::MemberWorker`` when idle and
    ``ray::MemberWorker.train`` while it trains)."""
    title = "ray::MemberWorker" if idle_too else "ray::MemberWorker.train"
    me_pid, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if not cmd.startswith(title):
            continue
        pid = int(entry.name)
        while pid > 1 and pid != me_pid:
            pid = _parent(pid)
        if pid == me_pid:
            pids.append(int(entry.name))
    return pids


def test_ray_run_matches_in_process_run(cluster, ds, tmp_path):
    local = me.run(dense_classifier(seed=1), ds, CFG, run_dir=tmp_path / "local")
    seen: list[tuple[str, int | None]] = []
    remote = me.run(dense_classifier(seed=1), ds, CFG.replace(evaluator="ray"), run_dir=tmp_path / "ray",
                    listeners=[lambda e: seen.append((e.kind, getattr(e, "member", None)))])
    assert remote.status == local.status == "finished"
    # the same seed draws the same genes, member by member, and each member trains the same way
    # (the same shuffles and seeds; only the float summation order of one thread against two differs)
    for cycle in ("1", "2"):
        for i in ("0", "1", "2"):
            a, b = local.population[cycle][i], remote.population[cycle][i]
            assert b["genes"] == a["genes"] and b["change"] == a["change"]
            assert b["losses"] == pytest.approx(a["losses"], rel=2e-2)
        assert remote.population[cycle]["_cycle"]["winner"] == local.population[cycle]["_cycle"]["winner"]
    assert [r["loss"] for r in remote.history] == pytest.approx([r["loss"] for r in local.history], rel=2e-2)
    for cycle in ("1", "2"):
        for i in ("0", "1", "2"):
            worker = remote.population[cycle][i]["worker"]
            assert worker["pid"] != os.getpid() and worker["attempt"] == 1
    # the same run folder: every archive, each a loadable model with the run's topology
    names = sorted(p.name for p in (tmp_path / "local").rglob("*.keras"))
    assert names == sorted(p.name for p in (tmp_path / "ray").rglob("*.keras"))
    member = me.load_model(tmp_path / "ray" / "population" / "2_1_model.keras")
    assert member.count_params() == dense_classifier().count_params()
    assert len(remote.history) == len(local.history) == CFG.lineage_epochs
    events = [json.loads(line)["kind"] for line in (tmp_path / "ray" / "events.jsonl").read_text().splitlines()]
    assert events.count("member_trained") == CFG.cycles * CFG.population_size
    assert events.count("epoch_ended") == CFG.total_epochs
    # epochs stream back while members train: each member's epochs come before its result
    for i in range(3):
        first_epoch = seen.index(("epoch_ended", i))
        assert first_epoch < seen.index(("member_trained", i))
    assert any("population members train on a local Ray instance" in n for n in _notes(tmp_path / "ray"))


def _notes(run_dir: Path) -> list[str]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e["message"] for e in map(json.loads, lines) if e["kind"] == "note"]


def _kill_one_member_worker(done: list[int]):
    def listener(e):
        if done or e.kind != "epoch_ended" or e.phase != "member" or e.cycle != 1:
            return
        pids = _worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            done.append(pids[0])
    return listener


def _bigger(ds):
    # enough epochs (about 3 s) that a member is still training when the test kills its worker
    return CFG.replace(candidate_epochs=30, cycles=1, population_size=2, batch_size=8)


def test_killed_worker_is_retried_and_the_run_goes_on(cluster, ds, tmp_path):
    killed: list[int] = []
    res = me.run(dense_classifier(), ds, _bigger(ds).replace(evaluator="ray", ray_max_retries=2), run_dir=tmp_path / "r",
                 listeners=[_kill_one_member_worker(killed)])
    assert killed, "no member worker was found to kill"
    assert res.status == "finished"
    notes = _notes(tmp_path / "r")
    assert any("its worker died; Ray started it again" in n for n in notes), notes
    entries = {k: v for k, v in res.population["1"].items() if k != "_cycle"}
    assert sorted(e["worker"]["attempt"] for e in entries.values()) == [1, 2]
    for i in entries:
        assert (tmp_path / "r" / "population" / f"1_{i}_model.keras").exists()
        assert len(entries[i]["losses"]) == 30 and all(v == v for v in entries[i]["losses"])


def test_worker_dead_after_retries_scores_worst_and_the_run_goes_on(cluster, ds, tmp_path):
    killed: list[int] = []
    res = me.run(dense_classifier(), ds, _bigger(ds).replace(evaluator="ray", ray_max_retries=0), run_dir=tmp_path / "r",
                 listeners=[_kill_one_member_worker(killed)])
    assert killed and res.status == "finished"
    entries = {k: v for k, v in res.population["1"].items() if k != "_cycle"}
    failed = [i for i, e in entries.items() if "failed" in e]
    assert len(failed) == 1
    (bad,) = failed
    assert entries[bad]["fitness"] is None and not entries[bad]["chosen"]
    assert "worker died" in entries[bad]["failed"]
    assert not (tmp_path / "r" / "population" / f"1_{bad}_model.keras").exists()
    assert any(e["chosen"] for e in entries.values())
    assert any("scores worst" in n for n in _notes(tmp_path / "r"))
    assert me.load_model(res.final_model) is not None


def test_cli_runs_on_ray_and_explains_a_bad_address(cluster, files, tmp_path):
    from miha_engine.cli import main

    model, data = files
    code = main(["run", "--model", str(model), "--data", str(data), "-m", "1", "-n", "1", "-k", "1", "-c", "1", "-p", "2",
                 "--evaluator", "ray", "--run-dir", str(tmp_path / "cli"), "--quiet"])
    assert code == 0
    population = json.loads((tmp_path / "cli" / "population.json").read_text())
    assert {e["worker"]["attempt"] for k, e in population["1"].items() if k != "_cycle"} == {1}
    info = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert info["config"]["evaluator"] == "ray"
    # a cluster that does not answer: a clear message in seconds, exit code 2, nothing trained
    # (in a subprocess: this one stays connected to the test cluster)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "miha_engine", "run", "--model", str(model), "--data", str(data),
                          "-c", "1", "--ray-address", "127.0.0.1:9", "--run-dir", str(tmp_path / "bad"), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "nothing answers at the Ray address 127.0.0.1:9" in out.stderr and "ray start --head" in out.stderr
    assert time.perf_counter() - t0 < 60


def test_stopped_local_run_resumes_on_ray(cluster, ds, tmp_path):
    token = me.CancelToken()

    def stop_after_cycle_1(e):  # stopped once cycle 1 is checkpointed, as cycle 2 begins
        if e.kind == "member_started" and e.cycle == 2:
            token.cancel()

    first = me.run(dense_classifier(), ds, CFG, run_dir=tmp_path / "r", cancel=token, listeners=[stop_after_cycle_1])
    assert first.status == "cancelled"
    with pytest.raises(me.InputError, match="resume can change how members train"):
        me.resume(tmp_path / "r", data=ds, execution={"cycles": 9})
    res = me.resume(tmp_path / "r", data=ds, execution={"evaluator": "ray"})
    assert res.status == "finished" and len(res.history) == CFG.lineage_epochs
    assert "worker" not in res.population["1"]["0"] and res.population["2"]["0"]["worker"]["attempt"] == 1
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["config"]["evaluator"] == "ray"


def test_config_checks_ray_settings():
    with pytest.raises(me.ConfigError, match="evaluator must be one of local, ray"):
        me.RunConfig(evaluator="dask")
    with pytest.raises(me.ConfigError, match="ray_gpus_per_member"):
        me.RunConfig(ray_gpus_per_member=-1)
    with pytest.raises(me.ConfigError, match="ray_max_retries"):
        me.RunConfig(ray_max_retries=-1)
    cfg = me.RunConfig(evaluator="ray", ray_address="auto", ray_gpus_per_member=0.25)
    assert me.RunConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_app_trains_the_population_on_a_ray_cluster(cluster, qtbot, tmp_path, files):
    pytest.importorskip("PySide6")
    from PySide6.QtCore import QSettings

    from miha_gui.window import MainWindow

    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.panel.run_dir.setText(str(tmp_path / "runs"))
    w.show()
    w.panel.apply_config(me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=1, population_size=2))
    model, data = files
    from conftest import load_model_into

    assert load_model_into(qtbot, w.panel, model) and w.panel.load_data(str(data))
    panel = w.panel
    assert not panel.ray_address.isEnabled()
    panel.evaluator.setCurrentIndex(panel.evaluator.findData("ray"))
    assert panel.ray_address.isEnabled()
    qtbot.waitUntil(lambda: "CPUs" in panel.ray_status.text(), timeout=30_000)
    assert "local Ray instance" in panel.ray_status.text()
    # the cluster started for these tests: the probe joins it and shows its resources
    panel.ray_address.setText(cluster)
    panel.probe_ray()
    qtbot.waitUntil(lambda: "CPUs" in panel.ray_status.text(), timeout=60_000)
    assert f"cluster at {cluster}" in panel.ray_status.text()
    assert "2 CPUs" in panel.ray_status.text() and "1 node" in panel.ray_status.text()
    assert "up to 2 members train at once" in panel.ray_status.text()
    cfg = panel.config()
    assert cfg.evaluator == "ray" and cfg.ray_address == cluster
    w.start_run()
    qtbot.waitUntil(lambda: not w.running, timeout=240_000)
    assert w.state.status == "finished", w.state.message
    assert len([b for b in w.state.branches.values() if b.trained]) == 2
    assert any("Ray cluster at" in n for n in w.state.notes)
    w.close()


def test_workers_are_bounded_and_recycled_after_recycle_after_models(cluster, ds, tmp_path):
    # recycle_after=1: a worker that built a model is replaced after its member, so each of the three
    # members of cycle 1 trains in a fresh process, and the run still matches the in-process one
    cfg = CFG.replace(cycles=1, evaluator="ray", recycle_after=1)
    res = me.run(dense_classifier(seed=1), ds, cfg, run_dir=tmp_path / "r")
    local = me.run(dense_classifier(seed=1), ds, cfg.replace(evaluator="local"), run_dir=tmp_path / "l")
    pids = [res.population["1"][i]["worker"]["pid"] for i in ("0", "1", "2")]
    assert len(set(pids)) == 3
    for i in ("0", "1", "2"):
        assert res.population["1"][i]["losses"] == pytest.approx(local.population["1"][i]["losses"], rel=2e-2)
    # recycle_after=0 (never): the two CPU slots' workers train all three members
    kept = me.run(dense_classifier(seed=1), ds, cfg.replace(recycle_after=0), run_dir=tmp_path / "k")
    assert len({kept.population["1"][i]["worker"]["pid"] for i in ("0", "1", "2")}) <= 2
    deadline = time.monotonic() + 10  # the run's workers end with it, busy or idle (ray.kill does not wait)
    while _worker_pids(idle_too=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_pids(idle_too=True)


def test_a_worker_uses_the_cpus_its_member_asked_for(monkeypatch):
    # a local worker inherits the driver's MIHA_TF_THREADS (the driver's cores): the member's CPUs win
    monkeypatch.setenv("MIHA_TF_THREADS", "2")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # what `import miha_engine` preset from it
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "2")
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as in a worker before TensorFlow starts
    ray_evaluator._limit_threads(1.0)
    assert os.environ["MIHA_TF_THREADS"] == os.environ["TF_NUM_INTRAOP_THREADS"] == "1"
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "1"


class _NoEngineWorker(ray_evaluator.MemberWorker):
    """A worker whose process cannot load the engine (as on a node without numpy or TensorFlow)."""

    def __init__(self):
        raise ImportError("No module named 'numpy'")


def test_a_worker_that_cannot_load_the_engine_stops_the_run_with_what_to_install(cluster, ds, tmp_path, monkeypatch):
    # before: every member "died" and scored worst, and the run went on training nothing
    monkeypatch.setattr(ray_evaluator, "MemberWorker", _NoEngineWorker)
    with pytest.raises(me.MihaError, match="could not start MIHA's engine.*Every Ray worker needs TensorFlow"):
        me.run(dense_classifier(), ds, CFG.replace(cycles=1, evaluator="ray"), run_dir=tmp_path / "r")
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == "failed" and "numpy" in info["error"]


def test_workers_are_counted_per_node_not_summed_over_the_cluster(cluster):
    # two nodes of 3 CPUs hold two 2-CPU members, not 3 (6 / 2): a third worker would wait forever
    nodes = [{"Alive": True, "Resources": {"CPU": 3.0}}, {"Alive": True, "Resources": {"CPU": 3.0}},
             {"Alive": False, "Resources": {"CPU": 64.0}}]  # a lost node counts for nothing
    assert ray_evaluator.capacity(nodes, 2.0, 0.0) == 2
    # two 1-GPU nodes at 0.4 GPU per member: 4 members, not 5
    gpu_nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}] * 2
    assert ray_evaluator.capacity(gpu_nodes, 1.0, 0.4) == 4
    # this test's real instance: one node of 2 CPUs, two one-CPU members
    assert ray_evaluator.capacity(ray.nodes(), 1.0, 0.0) == 2
    # the app says what the run will start, from the probe's resources per node
    pytest.importorskip("PySide6")
    from miha_gui.setup_panel import ray_status_text

    probe = {"ok": True, "local": False, "ray": "2", "nodes": 2, "CPU": 6.0, "GPU": 0.0,
             "per_node": [{"CPU": 3.0, "GPU": 0.0}] * 2, "share": 0.0, "cpus_per_member": 2.0}
    assert "up to 2 members train at once" in ray_status_text(probe, "h:1")
    gpus = {**probe, "GPU": 2.0, "per_node": [{"CPU": 8.0, "GPU": 1.0}] * 2, "share": 0.4, "cpus_per_member": 1.0}
    assert "up to 4 members train at once" in ray_status_text(gpus, "h:1")


def test_stop_during_a_ray_population_ends_its_workers(cluster, ds, tmp_path):
    token = me.CancelToken()

    def stop_at_first_member_epoch(e):
        if e.kind == "epoch_ended" and e.phase == "member":
            token.cancel()

    res = me.run(dense_classifier(), ds, _bigger(ds).replace(evaluator="ray"), run_dir=tmp_path / "r", cancel=token,
                 listeners=[stop_at_first_member_epoch])
    assert res.status == "cancelled"
    deadline = time.monotonic() + 10  # no worker keeps training (or idling) after the stop
    while _worker_pids(idle_too=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_pids(idle_too=True)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "cancelled"


_TWO_NODES = """
import os, sys, tempfile
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
import ray
import miha_engine as me
from miha_engine.testing import dense_classifier, digits
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
cluster.add_node(num_cpus=3)
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
x, y, xt, yt = digits()
cfg = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3, seed=1,
                   evaluator="ray", ray_address=cluster.address, ray_cpus_per_member=2)
res = me.run(dense_classifier(), me.from_arrays(x, y, x_test=xt, y_test=yt), cfg, run_dir=tempfile.mkdtemp() + "/r")
pids = {res.population[c][i]["worker"]["pid"] for c in ("1", "2") for i in ("0", "1", "2")}
print("RESULT", res.status, len(pids))
ray.shutdown()
cluster.shutdown()
"""


def test_two_nodes_of_three_cpus_train_two_cpu_members_without_waiting_forever():
    # Ray's own multi-node test cluster (in a child process: this one holds the module's instance).
    # Counted over the cluster, 6 CPUs / 2 would start three workers where two fit, and the third
    # member would wait forever on a worker that cannot be placed.
    out = subprocess.run([sys.executable, "-c", _TWO_NODES], capture_output=True, text=True, timeout=150,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RESULT finished 2" in out.stdout, out.stdout[-2000:]


def test_a_worker_on_another_keras_returns_its_archive_as_bytes_that_load(tmp_path):
    # a member's archive copy is laid out by the driver's Keras: only when both run the same version
    # (the layout is private to each); else the worker's own Keras writes it, and it loads the same
    import pickle

    import numpy as np

    from miha_engine import models as mdl
    from miha_engine.backend import _LiveMember
    from miha_engine.genes import Genes

    model = dense_classifier()
    member = _LiveMember(model, Genes(optimizer="adam", learning_rate=1e-3, batch_size=32))
    same = ray_evaluator._archive_copy(member, {"keras": ray_evaluator._keras_version()})
    other = ray_evaluator._archive_copy(member, {"keras": "3.0.0"})
    assert same.data is None and same.entries
    assert other.data is not None and not other.entries
    for i, copy in enumerate((same, other)):
        path = tmp_path / f"{i}.keras"
        pickle.loads(pickle.dumps(copy))(path)
        for a, b in zip(mdl.load_model(path).get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
