"""One source for settings: the CLI, the app and resume read RunConfig's fields and their metadata,
so they cannot disagree on a default, a range, a help text or what a resume may change."""

from __future__ import annotations

import dataclasses
import random

import pytest

from miha_engine import cli
from miha_engine.config import RunConfig, SearchSpace

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings  # noqa: E402

from miha_gui import setup_panel  # noqa: E402
from miha_gui.window import MainWindow  # noqa: E402


def _actions(parser):
    return {a.dest: a for a in parser._actions if a.dest not in ("help",)}


def _subparser(name):
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


def test_the_cli_offers_every_field_with_its_help_and_choices():
    run_opts = _actions(_subparser("run"))
    for name, f in RunConfig.options().items():
        if not f.metadata.get("cli", True):
            continue
        assert name in run_opts, f"miha run has no option for {name}"
        action = run_opts[name]
        assert action.default is None  # a flag left out keeps the configuration's value
        if f.metadata.get("choices"):
            assert tuple(action.choices) == tuple(f.metadata["choices"])
        if not f.metadata.get("flags"):
            assert action.help == f.metadata["help"]
    # with no flag at all, the CLI's configuration is RunConfig's
    args = cli._parser().parse_args(["run", "--model", "m.keras", "--data", "d.npz"])
    assert cli._config_from_args(args) == RunConfig()


def test_resume_everywhere_changes_exactly_the_resumable_fields():
    resumable = set(RunConfig.resumable_fields())
    assert resumable == {"evaluator", "ray_address", "ray_cpus_per_member", "ray_gpus_per_member",
                         "ray_max_retries", "steps_per_execution", "jit_compile", "tensorboard", "recycle_after",
                         "recycle_rss_mb"}
    live = set(RunConfig.live_fields())
    assert live == {"candidate_epochs", "fixing_epochs", "population_size", "search"}
    resume_opts = set(_actions(_subparser("resume"))) - {"run_dir", "data", "quiet", "verbose"}
    # the search space's own options stand for the "search" field
    assert resume_opts == resumable | live - {"search"} | {"search", "optimizers", "activations"}
    args = cli._parser().parse_args(["resume", "r", "--steps-per-execution", "8", "--no-xla", "--ray-address", "h:1"])
    assert cli.config_changes(args, resumable_only=True) == {"steps_per_execution": 8, "jit_compile": False,
                                                             "ray_address": "h:1", "evaluator": "ray"}


def test_the_app_reads_defaults_ranges_and_the_epoch_formula_from_the_config(qtbot, tmp_path, monkeypatch):
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    panel = w.panel
    # an untouched panel asks for RunConfig's defaults (the batch size made explicit)
    assert panel.config() == RunConfig(batch_size=32)
    for name in RunConfig.schedule_fields():
        meta = RunConfig.options()[name].metadata
        widget = panel.params[name]
        assert (widget.spin.minimum(), widget.spin.maximum()) == meta["bounds"]
        assert widget.value() == RunConfig.options()[name].default
    space = {f.name: f for f in dataclasses.fields(SearchSpace)}
    assert (panel.bs_lo.minimum(), panel.bs_hi.maximum()) == space["batch_size_range"].metadata["bounds"]
    assert [row[0] for row in setup_panel.PARAMS] == list(RunConfig.schedule_fields())
    rng = random.Random(0)
    for _ in range(5):
        values = {name: rng.randint(*RunConfig.options()[name].metadata["bounds"]) for name in RunConfig.schedule_fields()}
        for name, v in values.items():
            panel.params[name].setValue(v)
        cfg = RunConfig(**values)
        assert f"= {cfg.total_epochs} epochs; the final model's lineage: {cfg.lineage_epochs}" in panel.total_label.text()
    # Resume sends every resumable field the panel shows (an XLA change is not dropped)
    panel.xla.setChecked(True)
    panel.spe.setValue(8)
    sent = {}
    w.run_dir = tmp_path
    w.state.status = "cancelled"
    monkeypatch.setattr(w, "_start", lambda job: sent.update(job.kwargs))
    monkeypatch.setattr("miha_gui.window.replay", lambda path: w.state)
    assert w.resume_run()
    assert set(sent["execution"]) == set(RunConfig.resumable_fields()) | set(RunConfig.live_fields())
    assert sent["execution"]["jit_compile"] is True and sent["execution"]["steps_per_execution"] == 8


def test_the_panel_gives_back_a_configuration_it_was_given_and_wires_the_selection_boxes(qtbot, tmp_path):
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    panel = w.panel
    cfg = RunConfig(batch_size=64, fitness_metric="accuracy", final_anneal=0.1, recycle_after=4, recycle_rss_mb=0,
                    selection="fittest",
                    noise_false_switch=0.0,
                    explore_on_plateau=False, search=SearchSpace(weight_decay_range=(0.01, 0.5),
                                                                  kinds=("weight_decay", "dropout")))
    panel.apply_config(cfg)
    assert panel.config() == cfg
    panel.apply_config(RunConfig(batch_size=32))
    # exploring needs the noise rule (a plateau is a tie within its margin), which needs the control
    assert panel.explore.isEnabled()
    panel.noise_rule.setChecked(False)
    assert not panel.explore.isEnabled() and panel.config().selection == "fittest"
    panel.noise_rule.setChecked(True)
    panel.control.setChecked(False)
    assert not panel.noise_rule.isEnabled() and not panel.explore.isEnabled()
    assert panel.config().control_member is False
    # what members are scored by, and the soup, are chosen in the panel; a metric it does not list
    # (a loaded configuration's) is added, so it comes back out
    assert panel.config().fitness_metric == "auto" and panel.fitness_metric.currentData() == "auto"
    panel.fitness_metric.setCurrentIndex(panel.fitness_metric.findData("loss"))
    panel.soup.setChecked(True)
    assert (panel.config().fitness_metric, panel.config().soup) == ("loss", True)
    panel.apply_config(RunConfig(fitness_metric="auc", soup=False))
    assert (panel.config().fitness_metric, panel.config().soup) == ("auc", False)
