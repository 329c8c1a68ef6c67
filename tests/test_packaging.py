"""Issue 2: `python -m build` makes an sdist with the Cython sources and a wheel that imports."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sdist_has_cython_sources_and_wheel_imports(tmp_path):
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
    # the working tree may hold changes not committed yet: build what is on disk
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split():
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdist = next(dist.glob("*.tar.gz"))
    names = tarfile.open(sdist).getnames()
    pyx = sorted(p.name for p in (ROOT / "ext").glob("*.pyx"))
    assert pyx and all(any(n.endswith(f"ext/{p}") for n in names) for p in pyx)
    assert not any(n.endswith((".c", ".so")) for n in names)
    wheel = next(dist.glob("*.whl"))
    unpacked = tmp_path / "wheel"
    zipfile.ZipFile(wheel).extractall(unpacked)
    modules = [p.stem for p in (ROOT / "ext").glob("_*.pyx")]
    code = "import importlib, closedloop;" + "".join(
        f"importlib.import_module('closedloop.{m}');" for m in modules
    ) + "import closedloop.cli; print(closedloop.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert str(unpacked) in run.stdout
    assert any(n.startswith("closedloop/presets/") for n in zipfile.ZipFile(wheel).namelist())
