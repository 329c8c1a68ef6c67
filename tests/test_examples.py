"""Every script in examples/ runs as a researcher would run it, on the shared recordings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.recordings import EYES_CLOSED, PROJECT_ROOT, RECORDINGS

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

EXAMPLES = PROJECT_ROOT / "examples"
FAA = RECORDINGS / "eegmmidb" / "S001R03.edf"  # 64 channels, F3/F4, 125 s


def run_example(name: str, *args: str, cwd: Path, timeout: float = 180.0) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_example_is_tested():
    tested = {"replay_raw_plot_phases.py", "live_on_trigger.py", "custom_stimulator.py", "feedback_display.py",
              "calibrate_then_replay.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_replay_raw_plot_phases(recordings, tmp_path):
    out = run_example("replay_raw_plot_phases.py", EYES_CLOSED, "--out", tmp_path / "p.png", cwd=tmp_path)
    assert "circular SD" in out and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_live_on_trigger(recordings, tmp_path):
    out = run_example("live_on_trigger.py", EYES_CLOSED, "--seconds", "20", cwd=tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("pulse ")]
    assert len(lines) > 10
    assert f"{len(lines)} triggers, {len(lines)} callbacks" in out


def test_custom_stimulator(recordings, tmp_path):
    out = run_example("custom_stimulator.py", EYES_CLOSED, "--seconds", "20", "--port", "0", cwd=tmp_path)
    n = int(out.split(" triggers")[0].split()[-1])
    assert n > 10 and f"{n} triggers, {n} sent, {n} received; device errors: none" in out


@pytest.mark.parametrize("recording", [FAA])
def test_feedback_display(recordings, tmp_path, recording):
    out = run_example("feedback_display.py", recording, "--seconds", "45", cwd=tmp_path)
    bars = [line for line in out.splitlines() if "|" in line]
    assert len(bars) > 20  # feedback drawn after the 30 s baseline
    assert ", 0 feedback values shown" not in out


def test_calibrate_then_replay(recordings, tmp_path):
    out = run_example("calibrate_then_replay.py", EYES_CLOSED, "--out", tmp_path / "t.toml", cwd=tmp_path)
    assert "alpha-trough-o2-S001R02_first60s" in out and (tmp_path / "t.toml").exists()
    assert "tuned:" in out
