"""`closedloop run` as a real process against a real LSL outlet on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pylsl
import pytest
import pyxdf

from tests.helpers.faults import alpha_stream
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import phase_toml

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def protocol(target_phase_deg: float) -> str:
    return phase_toml(
        "live-test", "O2", target_phase_deg=target_phase_deg, amplitude_gate="none", baseline_s=4.0
    )


class Collector:
    """Pull every sample of a stream (resolved by source_id) on a thread."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self.samples: list = []
        self.stamps: list[float] = []
        self.received: list[float] = []
        self.info = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # one long resolve: repeated short ones are paced by liblsl and can take seconds
        found = pylsl.resolve_byprop("source_id", self.source_id, 1, 20.0)
        if not found:
            return
        inlet = pylsl.StreamInlet(found[0], max_buflen=5)
        self.info = inlet.info(5.0)
        inlet.open_stream(5.0)
        while not self._stop.is_set():
            sample, ts = inlet.pull_sample(0.1)
            if ts is not None:
                self.received.append(pylsl.local_clock())
                self.samples.append(sample)
                self.stamps.append(ts)
        inlet.close_stream()
        del inlet

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def test_live_run_delivers_phase_locked_markers_state_and_a_complete_recording(tmp_path, source_id):
    sfreq = 500.0
    ch_names = ["index", "O1", "O2", "Cz"]
    data = alpha_stream(30.0, sfreq)
    proto = tmp_path / "p.toml"
    proto.write_text(protocol(180.0))
    record = tmp_path / "session.xdf"
    summary_path = tmp_path / "summary.json"
    markers = Collector(source_id + "-m")
    state = Collector(source_id + "-s")
    outlet = OutletThread(data, sfreq, source_id, chunk_size=5, index_channel=True, ch_names=ch_names).start()
    try:
        proc = subprocess.run(
            [
                sys.executable, "-m", "closedloop", "run", "--protocol", str(proto),
                "--source-id", source_id, "--duration", "9", "--record", str(record),
                "--marker-source-id", source_id + "-m", "--state-source-id", source_id + "-s",
                "--summary-json", str(summary_path),
            ],
            capture_output=True, text=True, timeout=60,
        )
        time.sleep(0.3)
    finally:
        markers.stop()
        state.stop()
        outlet.close()
    assert proc.returncode == 0, proc.stderr

    # State: one sample per chunk, five labelled channels
    assert state.info is not None
    labels = []
    ch = state.info.desc().child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        ch = ch.next_sibling()
    assert labels == ["sample_ts", "phase_deg", "amplitude", "feedback", "gate"]
    assert len(state.samples) > 400  # 7 s of 10 ms chunks, less start-up
    states = np.array(state.samples)
    assert np.nanmax(states[:, 4]) == 1.0  # the gate opened after the baseline

    # Markers: JSON with the contract's fields, phase-locked to the sine's trough
    assert len(markers.samples) >= 10
    payloads = [json.loads(s[0]) for s in markers.samples]
    for key in ("event", "seq", "sample_ts", "target_phase_deg", "phase_deg", "amplitude", "protocol"):
        assert key in payloads[0]
    assert [p["seq"] for p in payloads] == list(range(1, len(payloads) + 1))
    stamps = np.array(markers.stamps)
    assert np.diff(stamps).min() >= 0.25 - 1e-4
    t_data = stamps - outlet.t0
    err = np.angle(np.exp(1j * (2 * np.pi * 10.0 * t_data - np.pi)), deg=True)
    z = np.exp(1j * np.radians(err)).mean()
    assert abs(np.degrees(np.angle(z))) < 15.0
    assert np.degrees(np.sqrt(-2 * np.log(abs(z)))) < 20.0

    summary = json.loads(summary_path.read_text())
    assert summary["triggers"] == len(payloads)
    assert summary["dropped_samples"] == 0
    # never early, never later than the phase tolerance (30 deg at ~10 Hz = 8.3 ms)
    lateness = stamps - np.array([p["scheduled_ts"] for p in payloads])
    assert lateness.min() >= 0.0
    assert lateness.max() <= 30.0 / 360.0 / 8.0

    # Recording: every input sample exactly once, markers and state present
    streams, _ = pyxdf.load_xdf(str(record), dejitter_timestamps=False)
    by_type = {s["info"]["type"][0]: s for s in streams}
    eeg = by_type["EEG"]
    index = np.asarray(eeg["time_series"])[:, 0].astype(np.int64)
    assert len(index) > 3000
    assert np.array_equal(index, np.arange(index[0], index[0] + len(index)))
    assert len(by_type["Markers"]["time_series"]) == len(payloads)
    assert len(by_type["ClosedLoopState"]["time_series"]) > 400


def test_run_without_the_stream_exits_4_and_lists_what_is_visible(source_id):
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "run", "--protocol", "default",
         "--source-id", source_id + "-absent", "--resolve-timeout", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "no LSL stream with source_id" in proc.stderr
    assert "Traceback" not in proc.stderr
