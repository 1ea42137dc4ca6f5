"""The wheel: built with `python -m build`, installed in a clean virtual environment, it starts the
CLI and the app (package data included).  The clean venv reuses this environment's dependencies
through a .pth file instead of downloading TensorFlow again; the wheel itself is installed with
--no-deps, so only what the wheel holds is tested."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_the_wheel_installs_in_a_clean_venv_and_starts(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=500)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheels = list(dist.glob("miha-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_miha_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    bindir = py.parent
    # outside the source tree, so the installed package (not the checkout) is what runs
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": "", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    where = subprocess.run([str(py), "-c", "import miha_engine, miha_gui; print(miha_engine.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
    cli = subprocess.run([str(bindir / "miha"), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert cli.returncode == 0 and "schedule" in cli.stdout and "replay" in cli.stdout
    gui = subprocess.run([str(bindir / "miha-gui"), "--demo", "--quit-after-shown"], capture_output=True, text=True,
                         cwd=tmp_path, env={**env, "MIHA_TIMING": "1"}, timeout=120)
    assert gui.returncode == 0 and "window shown after" in gui.stderr, gui.stderr[-2000:]
    demo = subprocess.run([str(py), "-c", "from miha_gui import demo_paths; print(*[p.stat().st_size for p in demo_paths()])"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert all(int(n) > 1000 for n in demo.stdout.split()), demo.stdout + demo.stderr
