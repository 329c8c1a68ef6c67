"""The throughput benchmark runs, compares like with like, and its script works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from closedloop.dsp import bench
from tests.helpers.recordings import NEURONE_5KHZ, require_recordings

ROOT = Path(__file__).resolve().parents[2]


def test_bench_run_reports_timings_and_equal_outputs() -> None:
    result = bench.run(n_channels=16, duration_s=0.3, warmup_s=0.05)
    ours, theirs = result["closedloop"], result["scipy"]
    assert result["n_chunks"] == 300
    for stats in (ours, theirs):
        assert 0 < stats["p50_us"] <= stats["p99_us"] <= stats["max_us"]
        assert stats["cpu_share"] > 0
    # Both chains compute the same envelope; the comparison is like with like.
    assert result["max_abs_diff_uv"] < 1e-9
    # Generous: the measured speed-up is about 8x; this only catches a gross regression.
    assert result["speedup_p50"] > 2.0


def test_bench_script_on_the_5khz_recording() -> None:
    require_recordings()
    assert NEURONE_5KHZ.is_file()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dsp_throughput.py"),
            "--duration",
            "0.2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"].startswith("test_NO.vhdr")
    assert report["64ch"]["n_channels"] == 64 and report["256ch"]["n_channels"] == 256
    assert np.isfinite(report["256ch"]["closedloop"]["cpu_share"])
