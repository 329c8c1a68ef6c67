"""SafetyGate: minimum interval (with jitter), maximum count, absolute rate ceiling, holds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.protocol import (
    MAX_TRIGGER_RATE_HZ,
    MIN_INTERVAL_FLOOR_S,
    TriggerSettings,
    load_protocol,
)
from closedloop.safety import TIME_TOLERANCE_S, SafetyGate
from tests.protocol.test_protocol import PRESET_NAMES, trigger_settings

finite = {"allow_nan": False, "allow_infinity": False}


def allow(gate: SafetyGate, time_s: float, input_ok: bool = True) -> str | None:
    """Ask, and record when allowed, as the engine does at delivery; the reason if refused."""
    reason = gate.check(time_s, input_ok)
    if reason is None:
        gate.record(time_s)
    return reason


def test_min_interval_is_kept_and_exactly_reached():
    gate = SafetyGate(TriggerSettings(min_interval_s=2.0))
    assert allow(gate, 10.0) is None
    assert "since the last trigger" in gate.check(11.999)
    assert allow(gate, 11.999) is not None
    assert allow(gate, 12.0) is None
    assert gate.n_delivered == 2 and gate.last_time_s == 12.0


def test_time_going_backwards_is_refused():
    gate = SafetyGate(TriggerSettings(min_interval_s=1.0))
    gate.record(5.0)
    assert gate.check(3.0) is not None
    assert gate.check(math.nan) is not None and gate.check(math.inf) is not None


def test_max_triggers():
    gate = SafetyGate(TriggerSettings(min_interval_s=0.5, max_triggers=3))
    delivered = [t for t in np.arange(0.0, 10.0, 0.5) if allow(gate, float(t)) is None]
    assert delivered == [0.0, 0.5, 1.0]
    assert "max_triggers = 3 reached" in gate.check(100.0)
    gate.reset()
    assert gate.n_delivered == 0 and gate.check(100.0) is None


def test_no_limit_when_max_triggers_is_zero():
    gate = SafetyGate(TriggerSettings(min_interval_s=0.5, max_triggers=0))
    times = np.arange(400) * 0.5
    assert sum(allow(gate, float(t)) is None for t in times) == len(times)


def test_bad_or_held_input_refuses():
    gate = SafetyGate(TriggerSettings(min_interval_s=0.5))
    assert gate.check(1.0, input_ok=False) == "the input is bad or held"
    assert gate.check(1.0) is None


def test_record_refuses_what_check_refuses():
    gate = SafetyGate(TriggerSettings(min_interval_s=1.0, max_triggers=1))
    gate.record(0.0)
    with pytest.raises(RuntimeError, match="safety limit"):
        gate.record(0.5)
    with pytest.raises(RuntimeError, match="max_triggers"):
        gate.record(5.0)
    assert gate.n_delivered == 1


def test_floor_holds_even_for_settings_that_bypassed_validation():
    trig = TriggerSettings(min_interval_s=1.0)
    object.__setattr__(trig, "min_interval_s", 0.001)
    gate = SafetyGate(trig)
    times = np.arange(0.0, 10.0, 0.001)
    delivered = [t for t in times if allow(gate, float(t)) is None]
    assert np.diff(delivered).min() >= MIN_INTERVAL_FLOOR_S
    assert len(delivered) <= 10.0 * MAX_TRIGGER_RATE_HZ + 1


def test_burst_length_counts_towards_the_interval():
    trig = TriggerSettings(pulses=2, pulse_interval_s=1.075, min_interval_s=3.575)
    object.__setattr__(trig, "min_interval_s", 0.2)
    gate = SafetyGate(trig)
    gate.record(0.0)
    assert gate.check(1.075) is not None
    assert gate.check(1.075 + MIN_INTERVAL_FLOOR_S) is None


def test_jitter_draws_are_uniform_in_range_and_seeded():
    trig = TriggerSettings(min_interval_s=1.0, min_interval_jitter_s=0.5)

    def intervals(seed):
        gate = SafetyGate(trig, seed=seed)
        out = []
        for _ in range(400):
            out.append(gate.required_interval_s)
            gate.record((gate.last_time_s or 0.0) + gate.required_interval_s)
        return np.array(out)

    first, again, other = intervals(1), intervals(1), intervals(2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 1.0 and first.max() <= 1.5
    # uniform on [1, 1.5]: mean 1.25, sd 0.144; 400 draws put the mean within +/- 0.03
    assert abs(first.mean() - 1.25) < 0.03
    assert first.max() - first.min() > 0.4


def test_reset_restarts_the_jitter_sequence():
    gate = SafetyGate(TriggerSettings(min_interval_s=1.0, min_interval_jitter_s=1.0), seed=7)
    drawn = [gate.required_interval_s]
    gate.record(0.0)
    drawn.append(gate.required_interval_s)
    gate.reset()
    assert gate.required_interval_s == drawn[0]
    gate.record(0.0)
    assert gate.required_interval_s == drawn[1]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_gate_is_at_least_its_protocol(name):
    trig = load_protocol(name).trigger
    gate = SafetyGate(trig)
    assert gate.min_interval_s == max(trig.min_interval_s, MIN_INTERVAL_FLOOR_S)


# -- property: whatever the requests, the limits hold ---------------------------------------

requests = st.lists(
    st.tuples(
        st.floats(0.0, 0.6, **finite),  # time since the previous request
        st.booleans(),  # input good
        st.floats(0.0, 1.0, **finite),  # artifact hold set at this request (0 = none)
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trigger_settings(), requests, st.integers(0, 2**32 - 1))
def test_limits_hold_for_any_protocol_and_requests(trig, steps, seed):
    gate = SafetyGate(trig, seed=seed)
    time_s = 0.0
    held_until = -math.inf
    delivered: list[tuple[float, float]] = []  # (time, interval required before it)
    for gap, input_ok, hold_for in steps:
        time_s += gap
        if hold_for > 0.5:  # the engine's hold reaches the gate as input_ok = False
            held_until = max(held_until, time_s + hold_for)
        required = gate.required_interval_s
        since = time_s - delivered[-1][0] if delivered else math.inf
        reason = allow(gate, time_s, input_ok=input_ok and time_s >= held_until)
        if reason is None:
            assert input_ok and time_s >= held_until
            delivered.append((time_s, required))
        elif (
            input_ok
            and time_s >= held_until
            and since >= required + TIME_TOLERANCE_S
            and not (trig.max_triggers and len(delivered) >= trig.max_triggers)
        ):
            pytest.fail(f"refused a trigger that breaks no limit: {reason}")
    times = np.array([t for t, _ in delivered])
    assert gate.n_delivered == len(times)
    if trig.max_triggers:
        assert len(times) <= trig.max_triggers
    if len(times) > 1:
        gaps = np.diff(times)
        required = np.array([r for _, r in delivered[1:]])
        assert np.all(gaps >= required - TIME_TOLERANCE_S)
        assert np.all(required >= trig.min_interval_s - 1e-12)
        assert np.all(required <= trig.min_interval_s + trig.min_interval_jitter_s + 1e-12)
        assert gaps.min() >= MIN_INTERVAL_FLOOR_S
        assert gaps.min() >= trig.burst_duration_s + MIN_INTERVAL_FLOOR_S - 2 * TIME_TOLERANCE_S
        # the ceiling over any one-second window
        counts = np.searchsorted(times, times + 1.0, side="left") - np.arange(len(times))
        assert counts.max() <= MAX_TRIGGER_RATE_HZ


@settings(max_examples=50, deadline=None)
@given(trigger_settings(), st.floats(0.001, MIN_INTERVAL_FLOOR_S, **finite))
def test_ceiling_cannot_be_raised_by_a_tampered_protocol(trig, forced):
    tampered = dataclasses.replace(trig)  # a fresh instance, then forced below the floor
    object.__setattr__(tampered, "min_interval_s", forced)
    object.__setattr__(tampered, "min_interval_jitter_s", 0.0)
    object.__setattr__(tampered, "max_triggers", 0)
    gate = SafetyGate(tampered)
    times = np.arange(0.0, 5.0, forced / 3)
    delivered = np.array([t for t in times if allow(gate, float(t)) is None])
    assert np.diff(delivered).min() >= MIN_INTERVAL_FLOOR_S
    counts = np.searchsorted(delivered, delivered + 1.0, side="left") - np.arange(len(delivered))
    assert counts.max() <= MAX_TRIGGER_RATE_HZ
