"""The live monitor against real live sessions: in-process, and ``closedloop run --monitor`` on a pty."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time

import mne
import numpy as np
import pytest
from rich.console import Console

from closedloop.live import LiveSession
from closedloop.lsl.outputs import EngineOutlets
from closedloop.lsl.source import LSLSource, resolve_stream
from closedloop.monitor import MAX_LATENCIES, Monitor
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import feedback_toml, make_protocol
from tests.helpers.recordings import EYES_CLOSED

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def eyes_closed() -> tuple[np.ndarray, float, list[str]]:
    raw = mne.io.read_raw(EYES_CLOSED, verbose="error")
    return raw.get_data(stop=int(20 * raw.info["sfreq"])) * 1e6, raw.info["sfreq"], raw.ch_names


def last_frame(text: str, protocol_name: str) -> str:
    plain = ANSI.sub("", text)
    start = plain.rfind(f"closedloop run: {protocol_name}")
    assert start >= 0, plain[-500:]
    return plain[start:]


def test_monitor_shows_the_loop_figures_refreshed_from_its_own_thread(recordings, source_id):
    data, sfreq, ch_names = eyes_closed()
    protocol = make_protocol(
        signal={"channel": "O1", "reference": "none"},
        estimator={"method": "echt"},
        trigger={"target_phase_deg": 180.0, "baseline_s": 2.0, "amplitude_gate": "none"},
    )
    outlet = OutletThread(data, sfreq, source_id, chunk_size=2, ch_names=ch_names).start()
    source = LSLSource(resolve_stream(source_id=source_id, timeout=10.0))
    outlets = EngineOutlets(protocol.name, marker_source_id=source_id + "-m", state_source_id=source_id + "-s")
    buffer = io.StringIO()
    try:
        session = LiveSession(protocol, source, outlets, duration_s=5.0)
        monitor = Monitor(session, window_s=2.0,
                          console=Console(file=buffer, force_terminal=True, width=140, color_system=None))
        monitor.start()
        try:
            session.run()
        finally:
            monitor.stop()
    finally:
        source.close()
        outlet.close()
        outlets.close()
    assert not any(t.name == "closedloop-monitor" for t in threading.enumerate())
    assert monitor.frames >= 10  # 4 per second for 5 s, allowing for a busy machine
    assert buffer.getvalue().count("closedloop run:") >= monitor.frames

    stats = session.stats
    frame = last_frame(buffer.getvalue(), protocol.name)
    assert f"samples {stats.samples}" in frame
    assert "nominal 160 Hz" in frame
    rate = float(re.search(r"rate ([\d.]+) Hz", frame).group(1))
    assert 140.0 < rate < 180.0  # the last 2 s, after the start-up backlog
    assert f"dropped {session.engine.counters.n_missing_samples} in {session.engine.counters.n_gaps} gap(s)" in frame
    assert f"triggers  delivered {stats.triggers}  dropped {session.engine.counters.n_dropped}" in frame
    assert stats.triggers >= 3

    # latency percentiles over the newest chunks, recomputed here from the loop's own list
    m = re.search(r"p50 ([\d.]+) ms  p99 ([\d.]+) ms  \(last 2 s, (\d+) chunks\)", frame)
    assert m, frame
    n = int(m.group(3))
    assert 0.5 * 2.0 * sfreq / 2 < n <= min(MAX_LATENCIES, len(stats.latency_s))
    newest = np.asarray(stats.latency_s[-n:]) * 1e3
    assert float(m.group(1)) == pytest.approx(np.percentile(newest, 50), abs=0.006)
    assert float(m.group(2)) == pytest.approx(np.percentile(newest, 99), abs=0.006)

    state = stats.last_state
    amp = float(re.search(r"amplitude ([\d.]+) µV", frame).group(1))
    assert amp == pytest.approx(state.amplitude, abs=0.051)
    phase = int(re.search(r"phase ([+-]\d+)°", frame).group(1))
    assert abs((phase - state.phase_deg + 180) % 360 - 180) <= 0.51
    gate = re.search(r"gate\s+(open|closed)  hold (yes|no)  threshold ([\d.]+) µV", frame)
    assert gate, frame
    assert (gate.group(1) == "open") == bool(state.gate)
    assert float(gate.group(3)) == pytest.approx(session.engine.gate_threshold, abs=0.051)
    assert re.search(r"feedback\s+n/a", frame)  # a phase protocol has no feedback value
    # each refresh reads a few numbers and one slice: far below a refresh period
    assert np.median(monitor.snapshot_s) < 0.005


FEEDBACK_PROTOCOL = feedback_toml(
    "monitor-faa", baseline_s=1.0, window_s=0.5, smoothing_s=0.2, zscore=False
)


def test_run_monitor_draws_on_a_terminal_with_the_feedback_value(recordings, source_id, tmp_path):
    data, sfreq, ch_names = eyes_closed()
    proto = tmp_path / "faa.toml"
    proto.write_text(FEEDBACK_PROTOCOL)
    outlet = OutletThread(data, sfreq, source_id, chunk_size=4, ch_names=ch_names).start()
    master, slave = pty.openpty()
    chunks: list[bytes] = []
    try:
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="140", LINES="30")
        proc = subprocess.Popen(
            [sys.executable, "-m", "closedloop", "run", "--protocol", str(proto), "--source-id", source_id,
             "--duration", "3.5", "--monitor", "--marker-source-id", source_id + "-m",
             "--state-source-id", source_id + "-s"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env,
        )
        os.close(slave)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    block = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not block:
                    break
                chunks.append(block)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        outlet.close()
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in text  # drawn as a terminal display, redrawn in place
    assert ANSI.sub("", text).count("closedloop run: monitor-faa") >= 6
    frame = last_frame(text, "monitor-faa")
    assert "feedback protocol (no triggers)" in frame
    value = float(re.search(r"feedback\s+([+-][\d.]+)", frame).group(1))
    assert np.isfinite(value) and abs(value) < 5.0  # ln P(F4) - ln P(F3) of real EEG
    assert "triggers  delivered 0  dropped 0" in frame
    assert re.search(r"latency\s+p50 [\d.]+ ms  p99 [\d.]+ ms", frame)
    summary = re.search(r"(\d+) samples, (\d+) dropped", ANSI.sub("", text))
    assert summary and f"samples {summary.group(1)}" in frame


def test_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="refresh_hz must be a positive number"):
        Monitor(None, refresh_hz=0)
    with pytest.raises(ValueError, match="window_s must be a positive number of seconds"):
        Monitor(None, window_s=float("nan"))
