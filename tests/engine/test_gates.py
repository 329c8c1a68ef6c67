"""Amplitude gates that follow the session: ``running:P`` and ``rate:N`` (issue 17).

Units first (the running window against numpy, the rate controller, the baseline seed), then the
grammar, then the engine on a real recording whose second half is scaled by 0.5: the fixed
``percentile`` gate collapses there, ``running`` keeps the rate and ``rate`` holds its number.
"""

from __future__ import annotations

import dataclasses
import math

import mne
import numpy as np
import pytest

import closedloop as cl
from closedloop.engine import Engine
from closedloop.engine.gate import (
    GATE_TICK_S,
    RateControl,
    RunningPercentile,
    baseline_rate_percentile,
)
from closedloop.errors import ProtocolError
from closedloop.offline import replay
from tests.helpers.protocols import make_protocol
from tests.helpers.recordings import EYES_CLOSED, RECORDINGS

IMAGERY = RECORDINGS / "eegmmidb" / "S001R04.edf"  # 125 s; O2 alpha steady (16-19 uV)
ALPHA_O2 = "benchmarks/estimators_alpha_o2.toml"


# ---------------------------------------------------------------------- units
def test_running_percentile_is_numpy_percentile_of_the_newest_values():
    rng = np.random.default_rng(7)
    window = RunningPercentile(50)
    values = rng.lognormal(0.0, 0.6, 400)
    for i, v in enumerate(values):
        window.push(float(v))
        if i % 17 == 0:
            newest = values[max(0, i - 49) : i + 1]
            assert len(window) == newest.size
            for q in (0.0, 10.0, 50.0, 97.5, 100.0):
                assert window.percentile(q) == pytest.approx(np.percentile(newest, q), rel=1e-12)
    assert math.isnan(RunningPercentile(3).percentile(50.0))


def test_rate_control_settles_where_the_rate_is_met():
    # a plant whose trigger rate falls linearly with the percentile: 180/min open, 0 at 100
    control = RateControl(per_min=60.0, window_s=60.0, start_percentile=10.0)
    due, dt = 0.0, 0.01
    history = []
    for _ in range(int(300 / dt)):
        control.elapse(dt)
        due += 180.0 / 60.0 * (1.0 - control.percentile / 100.0) * dt
        if due >= 1.0:
            due -= 1.0
            control.delivered()
        history.append(control.percentile)
    late = np.array(history[int(150 / dt) :])
    # 60 of 180 per minute: the percentile of two thirds
    assert abs(late.mean() - 66.7) < 3.0
    assert 0.0 <= min(history) and max(history) <= 100.0


def test_rate_control_does_not_wind_up_on_an_unreachable_rate():
    control = RateControl(per_min=100.0, window_s=60.0, start_percentile=50.0)
    control.elapse(600.0)  # ten minutes without a trigger
    assert control.percentile == 0.0
    control.delivered()
    assert control.percentile == pytest.approx(100.0 / 100.0)


def test_baseline_rate_percentile_gives_the_rate_asked_on_the_baseline():
    sfreq = 250.0
    t = np.arange(int(60 * sfreq)) / sfreq
    rng = np.random.default_rng(3)
    amp = np.exp(0.5 * np.convolve(rng.normal(size=t.size), np.ones(100) / 10, "same"))
    track = amp * np.exp(2j * np.pi * 10.0 * t)
    for per_min in (30.0, 90.0):
        q = baseline_rate_percentile(track, sfreq, 180.0, 0.25, per_min)
        threshold = np.percentile(np.abs(track), q)
        up = np.flatnonzero((np.angle(track[:-1] * -1) <= 0) & (np.angle(track[1:] * -1) > 0))
        count, last = 0, -math.inf
        for i in up:
            if np.abs(track[i]) >= threshold and t[i] - last >= 0.25:
                count, last = count + 1, t[i]
        assert count == pytest.approx(per_min, rel=0.1), (per_min, q)
    # more than an open gate can give: start fully open
    assert baseline_rate_percentile(track, sfreq, 0.0, 0.25, 239.0) == 0.0


# ---------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    ("gate", "kind", "value"),
    [("running:50", "running", 50.0), (" Rate : 60 ", "rate", 60.0), ("running:0", "running", 0.0)],
)
def test_running_and_rate_gates_parse(gate, kind, value):
    trigger = make_protocol(trigger={"amplitude_gate": gate}).trigger
    assert (trigger.gate_kind, trigger.gate_value) == (kind, value)
    assert trigger.gate_window_s == 60.0


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (
            {"amplitude_gate": "running:101"},
            r'amplitude_gate = "running:101" is not accepted: .*"running:P" with P from 0 to 100',
        ),
        ({"amplitude_gate": "rate:0"}, r'"rate:N" with N > 0 \(triggers per minute\)'),
        ({"amplitude_gate": "rate:300"}, r"at most 60 / min_interval_s = 240 triggers per minute"),
        (
            {"amplitude_gate": "running:50", "gate_window_s": 0.5},
            r"gate_window_s = 0.5 is not accepted: expected seconds in \[1, 3600\]",
        ),
        (
            {"amplitude_gate": "rate:20", "baseline_s": 0.0},
            r'amplitude_gate = "rate:20" require a baseline',
        ),
    ],
)
def test_bad_running_and_rate_gates_are_refused_with_what_is_accepted(trigger, message):
    with pytest.raises(ProtocolError, match=message):
        make_protocol(trigger=trigger)


# ---------------------------------------------------------------------- on real EEG
@pytest.fixture(scope="module")
def imagery(recordings):
    raw = mne.io.read_raw(IMAGERY, preload=True, verbose="error")
    return raw.get_data() * 1e6, float(raw.info["sfreq"]), list(raw.ch_names)


def _with_gate(gate: str, window_s: float = 60.0):
    protocol = cl.load_protocol(ALPHA_O2)
    trigger = dataclasses.replace(protocol.trigger, amplitude_gate=gate, gate_window_s=window_s)
    return dataclasses.replace(protocol, trigger=trigger)


def _half_rates(
    onsets: np.ndarray, start_s: float, mid_s: float, end_s: float
) -> tuple[float, float]:
    first = np.sum((onsets >= start_s) & (onsets < mid_s)) / ((mid_s - start_s) / 60.0)
    second = np.sum((onsets >= mid_s) & (onsets < end_s)) / ((end_s - mid_s) / 60.0)
    return float(first), float(second)


def test_running_gate_keeps_the_rate_when_the_rhythm_halves_and_percentile_collapses(imagery):
    data, sfreq, names = imagery
    mid = data.shape[1] // 2
    scaled = data.copy()
    scaled[:, mid:] *= 0.5  # from 62.5 s on, everything at half amplitude
    span = (30.0, mid / sfreq, data.shape[1] / sfreq - 1.0)
    fixed = replay(scaled, _with_gate("percentile:50"), sfreq=sfreq, ch_names=names, units="uV")
    first, second = _half_rates(fixed.onsets_s, *span)
    assert first > 100 and second < 0.5 * first, (first, second)  # measured 144 and 41 per min
    # a 20 s window: the threshold crosses over within about half of it (docs/estimators.md)
    running = replay(
        scaled, _with_gate("running:50", 20.0), sfreq=sfreq, ch_names=names, units="uV"
    )
    first, second = _half_rates(running.onsets_s, *span)
    assert first > 100 and abs(second / first - 1.0) <= 0.2, (first, second)  # 142 and 137
    assert running.summary["gate"]["kind"] == "running"
    assert running.summary["gate"]["threshold_uv"] < 0.75 * fixed.summary["gate"]["threshold_uv"]


def test_rate_gate_holds_its_rate_before_and_after_the_rhythm_halves(imagery):
    data, sfreq, names = imagery
    mid = data.shape[1] // 2
    scaled = data.copy()
    scaled[:, mid:] *= 0.5
    span = (30.0, mid / sfreq, data.shape[1] / sfreq - 1.0)
    for signal in (data, scaled):
        result = replay(signal, _with_gate("rate:60"), sfreq=sfreq, ch_names=names, units="uV")
        gate = result.summary["gate"]
        # per minute of the time it could trigger in (artifact holds do not count)
        per_active_min = 60.0 * len(result.triggers) / gate["active_s"]
        assert per_active_min == pytest.approx(60.0, rel=0.1), per_active_min
        first, second = _half_rates(result.onsets_s, *span)
        assert abs(second / first - 1.0) <= 0.15, (first, second)


def test_running_gate_learns_the_same_at_any_chunking(recordings):
    # the window takes the estimator's amplitude at fixed sample positions: chunk ends do not
    # move it, so the threshold at a sample is the same whether samples came 1 or 5 at a time
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    data, sfreq = raw.get_data() * 1e6, float(raw.info["sfreq"])
    protocol = _with_gate("running:50", 20.0)
    protocol = dataclasses.replace(
        protocol,
        trigger=dataclasses.replace(protocol.trigger, baseline_s=10.0),
        # artifact holds start at a chunk's newest sample: off, so that only the gate is compared
        artifact=dataclasses.replace(protocol.artifact, enabled=False),
    )
    thresholds = {}
    for chunk in (1, 5):
        engine = Engine(protocol, list(raw.ch_names), sfreq)
        seen = {}
        for start in range(0, int(40 * sfreq), chunk):
            part = np.ascontiguousarray(data[:, start : start + chunk])
            engine.process(part, (start + chunk - 1) / sfreq, chunk / sfreq)
            seen[start + chunk] = engine.gate_threshold
        thresholds[chunk] = seen
    common = sorted(set(thresholds[1]) & set(thresholds[5]))
    common = [n for n in common if n > 12 * sfreq]
    assert len(common) > 100
    assert engine.gate_unit.window is not None and len(engine.gate_unit.window) > round(
        10.0 / GATE_TICK_S * 0.9
    )
    for n in common:
        assert thresholds[5][n] == thresholds[1][n], n
