"""The live session's optional stimulator hooks: on_state, pause/resume (what they report goes into
the control marker), summary, and a burst's later pulses held while paused (real LSL on loopback)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pylsl
import pytest

from closedloop.live import LiveSession
from closedloop.lsl.outputs import EngineOutlets
from closedloop.lsl.source import LSLSource, resolve_stream
from closedloop.protocol import parse_protocol
from closedloop.records import State
from tests.helpers.faults import alpha_stream
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import phase_toml

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SFREQ = 500.0


def _protocol():
    text = phase_toml("hooks-test", "O2", target_phase_deg=0.0, amplitude_gate="none", baseline_s=4.0)
    # bursts of 3 pulses 0.3 s apart, so that a pause can fall inside one
    text = text.replace("min_interval_s = 0.25", "min_interval_s = 1.0\npulses = 3\npulse_interval_s = 0.3")
    return parse_protocol(tomllib.loads(text), "hooks-test.toml")


def _alpha(seconds: float) -> np.ndarray:
    """O1, O2, Cz in µV: a 10 Hz cosine on O2 in noise."""
    return alpha_stream(seconds, SFREQ, seed=5, n_channels=3, channel=1)


class Device:
    latency_s = 0.0

    def __init__(self) -> None:
        self.states: list[State] = []
        self.fired: list[float] = []
        self.pulses: list[tuple[float, int]] = []
        self.calls: list[tuple[str, float]] = []

    def fire(self, trigger):
        self.fired.append(pylsl.local_clock())

    def pulse(self, trigger, index):
        self.pulses.append((pylsl.local_clock(), index))

    def on_state(self, state):
        self.states.append(state)

    def pause(self):
        self.calls.append(("pause", pylsl.local_clock()))
        return {"device_cancelled": [len(self.fired)]}

    def resume(self):
        self.calls.append(("resume", pylsl.local_clock()))

    def summary(self):
        return {"states_seen": len(self.states)}


def test_hooks_reach_the_device_and_its_report_reaches_the_pause_marker(source_id):
    outlet = OutletThread(_alpha(16.0), SFREQ, source_id, ch_names=["O1", "O2", "Cz"]).start()
    device = Device()
    info = resolve_stream(source_id=source_id, timeout=10.0)
    source = LSLSource(info)
    outlets = EngineOutlets("hooks-test", marker_source_id=source_id + "-m", state_source_id=source_id + "-s")
    session = LiveSession(_protocol(), source, outlets, duration_s=13.0, stimulators=[device])
    found = pylsl.resolve_byprop("source_id", source_id + "-m", 1, 10.0)
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5.0)
    window = {}

    def operator():
        # pause right after the first pulse of a burst, inside it
        deadline = time.monotonic() + 12.0
        while len(device.fired) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
        window["pause"] = pylsl.local_clock()
        session.pause(source="op")
        time.sleep(2.0)
        session.resume(source="op")

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        summary = session.run()
        thread.join(5)
        time.sleep(0.2)
        markers = []
        while True:
            sample, ts = inlet.pull_sample(0.0)
            if ts is None:
                break
            markers.append((ts, json.loads(sample[0])))
    finally:
        source.close(), outlets.close(), outlet.close()
    # on_state: one State record per processed chunk, in order, with the State stream's fields
    assert len(device.states) == summary["chunks"]
    assert all(isinstance(s, State) for s in device.states)
    stamps = [s.sample_ts for s in device.states]
    assert stamps == sorted(stamps) and np.isfinite(device.states[-1].phase_deg)
    # pause and resume reached the device at once, and its report is in the pause marker
    assert [c for c, _ in device.calls] == ["pause", "resume"]
    assert device.calls[0][1] - window["pause"] < 0.01
    pause_marker = next(m for _, m in markers if m["event"] == "pause")
    assert pause_marker["device_cancelled"] == [2] and pause_marker["source"] == "op"
    # the rest of the burst under way at the pause was held: no pulse while paused
    resumed = next(ts for ts, m in markers if m["event"] == "resume")
    assert not [t for t, _ in device.pulses if window["pause"] < t < resumed]
    assert summary["stimulators"] == {"Device": {"states_seen": len(device.states)}}
    assert summary["stimulator_errors"] == {}
