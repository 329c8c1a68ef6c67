"""``closedloop bench``: each benchmark run briefly through the real CLI, in a subprocess, against a
real ``closedloop run`` process over loopback LSL; the JSON must hold plausible figures whose
counts agree. Timings are reported, never asserted (except the soak's memory growth and drops,
which are the reliability issue's requirements).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from closedloop.bench.common import match_states

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """``python -m closedloop bench ...`` with this session's loopback LSL configuration."""
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "bench", *args],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout, check=False,
    )


def short_baseline_protocol(folder: Path, baseline_s: float = 4.0) -> str:
    """The default protocol with a baseline short enough for triggers within a few seconds."""
    from closedloop.bench.throughput import trial_protocol

    return trial_protocol("default", folder, baseline_s)


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_percentiles(p: dict, *, n_min: int = 1) -> None:
    assert p["n"] >= n_min
    for key in ("p50", "p95", "p99", "max", "mean"):
        assert finite_positive(p[key]), (key, p)
    assert p["p50"] <= p["p95"] <= p["p99"] <= p["max"]


def check_machine(machine: dict) -> None:
    assert machine["cpu_model"]
    assert machine["logical_cores"] >= 1 and machine["usable_cores"] >= 1
    assert machine["versions"]["closedloop"] and machine["versions"]["numpy"]
    assert machine["versions"]["liblsl"]


# ---------------------------------------------------------------------- latency
def test_latency_with_mne_lsl_comparison(tmp_path):
    out = tmp_path / "latency.json"
    protocol = short_baseline_protocol(tmp_path)
    proc = bench("latency", "--duration", "7", "--protocol", protocol, "--compare", "mne-lsl",
                 "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "closedloop bench latency" in proc.stdout and "ratio" in proc.stdout
    r = json.loads(out.read_text())
    assert r["settings"] == {"channels": 64, "sfreq": 5000.0, "chunk_size": 5, "duration_s": 7.0,
                             "protocol": protocol, "monitor": False, "compare": "mne-lsl", "ui": False,
                             "stamping": "nominal", "realtime": False}
    c = r["closedloop"]
    # 7 s at 1000 chunks/s: thousands of State samples, every one paired with a pushed chunk
    check_percentiles(c["latency_ms"], n_min=1000)
    check_percentiles(c["engine_ms"], n_min=1000)
    assert c["state_samples_matched"] + c["state_samples_unmatched"] == c["state_samples"]
    assert c["state_samples_unmatched"] <= 2
    assert abs(c["clock_offset_ms"]) < 0.1  # one machine: the time correction is tiny
    # every State sample is pushed after its chunk, and received after it is pushed
    assert c["engine_ms"]["p50"] <= c["latency_ms"]["p50"]
    assert c["state_samples"] <= c["engine_summary"]["chunks"]
    assert isinstance(c["dropped_samples"], int) and c["dropped_samples"] >= 0
    assert 0 < c["cpu_percent_of_one_core"] < 200
    assert c["rss_mb_end"] > 10
    # triggers: the receiver saw every marker the engine says it delivered
    assert c["triggers"] >= 1, "no trigger in 3 s after the baseline"
    assert c["markers"] == c["triggers"] and c["markers_unreadable"] == 0
    check_percentiles(c["marker_latency_ms"], n_min=c["triggers"])
    assert c["delivery_error_ms"]["n"] == c["triggers"] == len(c["delivery_error_ms_signed"])
    assert c["delivery_over_0_2ms"] == sum(abs(e) > 0.2 for e in c["delivery_error_ms_signed"])
    # each plan was published with the State sample of its chunk
    assert len(c["plan_lead_ms"]) == c["triggers"] and c["plans_without_state"] == 0
    assert c["delivery_error_ms_planned_ahead"]["n"] + c["plans_overdue_when_made"] == c["triggers"]
    assert c["plans_overdue_when_made"] == sum(lead <= 0 for lead in c["plan_lead_ms"])
    assert 0 <= c["delivery_error_ms"]["p50"] <= c["delivery_error_ms"]["max"] < 1000
    amp = r["amplifier"]
    assert amp["samples_pushed"] == 5 * amp["chunks_pushed"]
    assert amp["samples_pushed"] >= c["engine_summary"]["samples"] > 5000 * 5
    m = r["mne_lsl"]
    check_percentiles(m["latency_ms"], n_min=100)
    assert m["state_samples_matched"] + m["state_samples_unmatched"] == m["state_samples"]
    assert finite_positive(m["cpu_percent_of_one_core"])
    assert r["ratio_p50_mne_lsl_over_closedloop"] == pytest.approx(m["latency_ms"]["p50"] / c["latency_ms"]["p50"])
    check_machine(r["machine"])


@pytest.mark.browser
def test_latency_with_the_browser_views_open(tmp_path):
    out = tmp_path / "latency-ui.json"
    protocol = short_baseline_protocol(tmp_path)
    proc = bench("latency", "--duration", "8", "--protocol", protocol, "--ui", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "with --ui and both pages open" in proc.stdout and "cost of the views" in proc.stdout
    r = json.loads(out.read_text())
    u = r["with_ui"]
    assert u["error"] is None
    # the second run is measured from a second after the pages were open, for about --duration
    assert 0 < u["pages_open_after_s"] < 12
    check_percentiles(u["latency_ms"], n_min=3000)
    assert u["state_samples"] > r["closedloop"]["state_samples"]  # it lasted longer
    assert r["ui_p99_cost_ms"] == pytest.approx(u["latency_ms"]["p99"] - r["closedloop"]["latency_ms"]["p99"])
    for page in ("operator", "participant"):
        figures = u["pages"][page]
        assert figures["frames"] > 10
        check_percentiles(figures["display_latency_ms"], n_min=20)
    assert u["dropped_samples"] == 0


def test_latency_bad_options_exit_2():
    proc = bench("latency", "--duration", "-3")
    assert proc.returncode == 2
    assert "--duration must be a positive number" in proc.stderr and "Traceback" not in proc.stderr
    proc = bench("latency", "--channels", "0")
    assert proc.returncode == 2 and "--channels must be an integer >= 1" in proc.stderr
    proc = bench("latency", "--protocol", "no-such-preset", "--duration", "1")
    assert proc.returncode == 2 and "no-such-preset" in proc.stderr


def test_bench_without_benchmark_names_them():
    proc = bench()
    assert proc.returncode == 2
    assert "latency, accuracy, throughput, soak" in proc.stderr


def test_accuracy_is_wired_in():
    proc = bench("accuracy", "--help")
    if (ROOT / "closedloop" / "bench" / "accuracy.py").exists():
        assert proc.returncode == 0 and "usage" in proc.stdout
    else:
        proc = bench("accuracy")
        assert proc.returncode == 2 and "not available" in proc.stderr


# ---------------------------------------------------------------------- throughput
def test_throughput_short_search_and_replay(tmp_path):
    out = tmp_path / "throughput.json"
    proc = bench("throughput", "--rates", "1000", "--trial", "5", "--duration", "6", "--start-channels", "64",
                 "--max-channels", "64", "--replay-seconds", "20", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    (live,) = r["live"]
    assert live["sfreq"] == 1000.0
    assert 0 <= live["max_channels_sustained"] <= 64
    assert 1 <= len(live["trials"]) <= 10
    for t in live["trials"]:
        assert t["channels"] <= 64 and isinstance(t["passed"], bool)
        if t["passed"]:
            assert t["dropped_samples"] == 0 and t["gaps"] == 0 and t["reason"] == ""
            assert t["lag_growth_ms"] <= r["criteria"]["lag_growth_ms_max"]
            assert t["final_latency_ms"] <= r["criteria"]["final_latency_ms_max"]
            check_percentiles(t["latency_ms"], n_min=500)
        else:
            assert t["reason"]
    if live["max_channels_sustained"]:
        assert any(t["passed"] and t["channels"] == live["max_channels_sustained"] for t in live["trials"])
    rep = r["replay"]
    assert rep["data_seconds"] == 20.0 and rep["channels"] == 64 and rep["sfreq"] == 1000.0
    assert finite_positive(rep["speed_x_realtime"])
    assert rep["speed_x_realtime"] == pytest.approx(rep["data_seconds"] / rep["wall_s"])
    assert finite_positive(r["dsp"]["closedloop"]["p50_us"])
    check_machine(r["machine"])


def test_throughput_bad_rates_exit_2():
    proc = bench("throughput", "--rates", "5k")
    assert proc.returncode == 2 and "--rates must be numbers" in proc.stderr
    proc = bench("throughput", "--start-channels", "128", "--max-channels", "64")
    assert proc.returncode == 2 and "--max-channels" in proc.stderr


# ---------------------------------------------------------------------- pairing, no LSL
def _fake_run(stamps, pushed, sample_ts, received, chunk_size=5, sfreq=5000.0):
    amp = SimpleNamespace(stamps=np.asarray(stamps, float), pushed=np.asarray(pushed, float),
                          n_chunks=len(stamps), chunk_size=chunk_size, sfreq=sfreq)
    states = SimpleNamespace(sample_ts=np.asarray(sample_ts, float), received=np.asarray(received, float),
                             state_ts=np.asarray(received, float) - 1e-5, n=len(sample_ts))
    return SimpleNamespace(amplifier=amp, states=states)


def test_match_states_pairs_each_state_with_its_chunk():
    dt = 1 / 5000.0
    stamps = 100.0 + (np.arange(20) * 5 + 4) * dt  # newest sample of each chunk
    pushed = stamps + 0.00007
    offset = 3e-6  # the engine inlet's time correction
    chosen = np.array([0, 1, 2, 5, 6, 19])
    sample_ts = stamps[chosen] + offset
    sample_ts[3] -= 2 * dt  # a pull that got only the first 3 samples of chunk 5
    received = pushed[chosen] + np.array([1, 2, 3, 4, 5, 6]) * 1e-4
    m = match_states(_fake_run(stamps, pushed, sample_ts, received))
    assert list(m["chunk"]) == list(chosen)
    assert m["unmatched"] == 0
    assert m["offset_s"] == pytest.approx(offset)
    np.testing.assert_allclose(m["latency_s"], np.array([1, 2, 3, 4, 5, 6]) * 1e-4, atol=1e-12)


def test_match_states_leaves_out_states_after_the_last_push():
    dt = 1 / 5000.0
    stamps = 10.0 + (np.arange(10) * 5 + 4) * dt
    sample_ts = np.r_[stamps[[3, 4, 5, 6, 7]], stamps[-1] + 10 * dt]
    m = match_states(_fake_run(stamps, stamps, sample_ts, sample_ts + 3e-4))
    assert m["unmatched"] == 1 and list(m["chunk"]) == [3, 4, 5, 6, 7]


# ---------------------------------------------------------------------- soak (2 minutes)
@pytest.mark.slow
def test_soak_two_minutes(tmp_path):
    out = tmp_path / "soak.json"
    proc = bench("soak", "--duration", "120", "--realtime", "--json", str(out), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["settings"]["duration_s"] == 120.0 and r["settings"]["channels"] == 64
    # real-time scheduling asked for on both sides; granted or refused with a note, never silently
    for side in ("engine", "bench"):
        rt = r["realtime"][side]
        assert rt["requested"] is True and (rt["fifo"] or rt["notes"]), rt
    assert [p["minute"] for p in r["latency_per_minute_ms"]] == [1, 2]
    for p in r["latency_per_minute_ms"]:
        check_percentiles(p, n_min=10000)
    assert r["rss_mb_at_1_min"] > 10
    assert len(r["rss_mb_trace"]) >= 20
    # the requirements
    assert r["dropped_samples"] == 0 and r["gaps"] == 0
    assert r["memory_growth_mb"] < 5.0
