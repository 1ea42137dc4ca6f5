"""A disk that fills while archives are saved: a clear error, nothing torn, and resume finishes.

Uses a small tmpfs (needs root and mount rights, as on CI); skipped where mounting is not allowed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest

import miha_engine as me
from miha_engine.testing import dense_classifier


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_saves_then_resume(small_disk, ds):
    cfg = me.RunConfig(runup_epochs=1, candidate_epochs=1, fixing_epochs=1, cycles=2, population_size=3, seed=1)
    root = small_disk / "run"
    model = dense_classifier(hidden=2048)  # archives of about 1.8 MB with Adam's state
    notes = []
    with pytest.raises(me.RunFolderError, match="Free some disk space") as info:
        me.run(model, ds, cfg, run_dir=root, listeners=[lambda e: notes.append(e) if e.kind == "note" else None])
    assert "miha resume" in str(info.value)
    assert any("free on" in n.message for n in notes)  # warned before training, with the numbers
    for archive in root.rglob("*.keras"):
        if not archive.name.startswith("."):
            assert zipfile.is_zipfile(archive), archive  # whole archives only
    # free space (grow the disk), then resume finishes with an exact lineage
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    res = me.resume(root, data=ds)
    assert res.status == "finished"
    rows = me.RunFolder(root).read_history()
    assert [r["step"] for r in rows] == list(range(1, cfg.lineage_epochs + 1))
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
