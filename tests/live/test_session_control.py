"""The live session drives stimulators and obeys pause, resume and stop (real LSL on loopback)."""

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
from closedloop.stimulators import Stimulator
from tests.helpers.faults import alpha_stream
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import phase_toml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

SFREQ = 500.0


def _protocol():
    text = phase_toml("control-test", "O2", target_phase_deg=0.0, amplitude_gate="none", baseline_s=4.0)
    return parse_protocol(tomllib.loads(text), "control-test.toml")


def _alpha(seconds: float) -> np.ndarray:
    """O1, O2, Cz in µV: a 10 Hz cosine on O2 in noise."""
    return alpha_stream(seconds, SFREQ, seed=3, n_channels=3, channel=1)


class Recording:
    """A user's own device: keeps every trigger it was asked to fire."""

    latency_s = 0.0

    def __init__(self) -> None:
        self.fired: list = []
        self.pulses: list = []
        self.closed = False

    def fire(self, trigger):
        self.fired.append((pylsl.local_clock(), trigger))
        return {"device_note": f"seq {trigger.seq}"}

    def pulse(self, trigger, index):
        self.pulses.append((trigger.seq, index))

    def close(self):
        self.closed = True


class Broken:
    def fire(self, trigger):
        raise RuntimeError("the device fell over")


def _session(source_id, stimulators, duration_s):
    info = resolve_stream(source_id=source_id, timeout=10.0)
    source = LSLSource(info)
    outlets = EngineOutlets("control-test", marker_source_id=source_id + "-m", state_source_id=source_id + "-s")
    session = LiveSession(_protocol(), source, outlets, duration_s=duration_s, stimulators=stimulators)
    return session, source, outlets


def _markers(source_id):
    found = pylsl.resolve_byprop("source_id", source_id + "-m", 1, 10.0)
    assert found, "the Markers stream did not appear"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5.0)
    return inlet


def _drain(inlet) -> list[tuple[float, dict]]:
    out = []
    while True:
        sample, ts = inlet.pull_sample(0.0)
        if ts is None:
            return out
        out.append((ts, json.loads(sample[0])))


def test_user_stimulator_gets_every_trigger_and_a_broken_one_never_stops_the_session(source_id):
    assert isinstance(Recording(), Stimulator) and isinstance(Broken(), Stimulator)
    outlet = OutletThread(_alpha(14.0), SFREQ, source_id, ch_names=["O1", "O2", "Cz"]).start()
    device, broken = Recording(), Broken()
    session, source, outlets = _session(source_id, [broken, device], duration_s=12.0)
    inlet = _markers(source_id)
    try:
        summary = session.run()
        time.sleep(0.2)
        markers = [m for _, m in _drain(inlet)]
    finally:
        source.close(), outlets.close(), outlet.close()
    stims = [m for m in markers if m["event"] == "stim"]
    assert summary["triggers"] > 10
    assert len(device.fired) == summary["triggers"] == len(stims)
    assert [t.seq for _, t in device.fired] == [m["seq"] for m in stims]
    assert all(m["device_note"] == f"seq {m['seq']}" for m in stims)  # the device's fields reach the marker
    assert summary["stimulator_errors"] == {"Broken": summary["triggers"]}
    assert device.closed
    # the trigger handed to the device is the plan's, at its planned time
    for fired_at, trigger in device.fired:
        assert abs(fired_at - trigger.scheduled_s) < 0.005
        assert trigger.protocol == "control-test" and trigger.event == "stim"


def test_pause_holds_every_trigger_and_resume_lets_them_go_on_with_markers(source_id):
    outlet = OutletThread(_alpha(20.0), SFREQ, source_id, ch_names=["O1", "O2", "Cz"]).start()
    device = Recording()
    session, source, outlets = _session(source_id, [device], duration_s=18.0)
    inlet = _markers(source_id)
    times = {}

    def operator():
        # after the baseline and a few triggers: pause for 4 s, then resume
        deadline = time.monotonic() + 15.0
        while len(device.fired) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        session.pause(source="test-operator")
        times["pause"] = pylsl.local_clock()
        time.sleep(4.0)
        times["resume"] = pylsl.local_clock()
        session.resume(source="test-operator")

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    try:
        summary = session.run()
        thread.join(5)
        time.sleep(0.2)
        markers = _drain(inlet)
    finally:
        source.close(), outlets.close(), outlet.close()
    control = [(ts, m) for ts, m in markers if m["event"] in ("pause", "resume")]
    assert [m["event"] for _, m in control] == ["pause", "resume"]
    assert all(m["source"] == "test-operator" for _, m in control)
    paused_at, resumed_at = control[0][0], control[1][0]
    assert paused_at - times["pause"] < 0.1  # carried out within the loop's poll interval
    stims = [ts for ts, m in markers if m["event"] == "stim"]
    assert not [ts for ts in stims if times["pause"] < ts < resumed_at], "a trigger went out while paused"
    assert [ts for ts in stims if ts > resumed_at], "no trigger after resume"
    assert [a for _, a, _ in session.stats.control_log] == ["pause", "resume"]
    assert summary["control"][0]["action"] == "pause"


@pytest.mark.parametrize("latency_s", [0.0, 0.02])
def test_a_stimulator_latency_is_fired_that_much_earlier(source_id, latency_s):
    outlet = OutletThread(_alpha(12.0), SFREQ, source_id, ch_names=["O1", "O2", "Cz"]).start()
    device = Recording()
    device.latency_s = latency_s
    session, source, outlets = _session(source_id, [device], duration_s=10.0)
    try:
        session.run()
    finally:
        source.close(), outlets.close(), outlet.close()
    assert len(device.fired) > 5
    leads = [t.crossing_s - t.scheduled_s for _, t in device.fired]
    assert np.allclose(leads, latency_s, atol=1e-9)
