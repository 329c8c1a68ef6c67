"""engine/planning.py: the window rule, the planner, the arrival lead."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.engine import (
    DECISION_LATENCY_S,
    ArrivalLead,
    TriggerPlanner,
    arrival_slack_s,
    planning_horizon_s,
    replay_delivery_s,
)
from closedloop.estimators.base import PhaseEstimator
from closedloop.protocol import TriggerSettings
from closedloop.safety import SafetyGate


class Sine:
    """An exactly known 10 Hz phase: what a perfect estimator would answer."""

    name = "sine"

    def __init__(self, phase_deg: float, freq_hz: float = 10.0, amplitude: float = 5.0) -> None:
        self.phase_deg, self.freq, self.amplitude = phase_deg, freq_hz, amplitude

    def next_crossing_s(self, target_deg: float) -> float:
        return ((target_deg - self.phase_deg) % 360.0) / (360.0 * self.freq)

    window_crossing = PhaseEstimator.window_crossing  # the base rule: the next crossing, anywhere


def plan(estimator, *, newest_ts=1.0, newest_work_ts=1.0, horizon_s=0.01, lead_s=0.0, trig=None, delay_s=0.0):
    trig = trig or TriggerSettings(target_phase_deg=0.0, min_interval_s=0.25)
    planner = TriggerPlanner(trig, output_delay_s=delay_s)
    return planner.process(estimator, newest_ts, newest_work_ts, estimator.freq, 10.5, 1.0, horizon_s, lead_s,
                           SafetyGate(trig))


def test_a_crossing_inside_the_window_is_planned_at_its_time():
    # crossing 5 ms after the newest sample: inside [t + 1 ms, t + 11 ms]
    est = Sine(phase_deg=-18.0)  # 18 deg before the peak = 5 ms at 10 Hz
    p = plan(est)
    assert p is not None
    assert p.crossing_s == pytest.approx(1.005) and p.time_s == pytest.approx(1.005)
    assert abs(p.phase_deg) < 1e-9 and p.sample_ts == 1.0
    assert p.tolerance_s == pytest.approx(30.0 / 3600.0)


@pytest.mark.parametrize("ahead_ms", [0.5, 11.5, 50.0])
def test_crossings_before_or_after_the_window_are_left(ahead_ms):
    est = Sine(phase_deg=-360.0 * 10.0 * ahead_ms / 1000.0)
    assert plan(est) is None  # before: the previous chunk's; after: the next chunk's


def test_the_windows_of_successive_chunks_tile_the_time_axis():
    # a crossing anywhere after the first chunk's window opens is planned by exactly one chunk
    horizon = planning_horizon_s(5, 500.0)
    for crossing in np.linspace(1.0 + DECISION_LATENCY_S, 1.1, 97):
        owners = []
        for k in range(30):
            newest = 1.0 + k * horizon
            ahead = crossing - newest
            if ahead < 0:
                continue
            est = Sine(phase_deg=-360.0 * 10.0 * ahead)
            if plan(est, newest_ts=newest, newest_work_ts=newest, horizon_s=horizon) is not None:
                owners.append(k)
        assert len(owners) == 1, (crossing, owners)


def test_lead_output_delay_and_technical_delay_move_the_delivery():
    est = Sine(phase_deg=-36.0 * 3)  # crossing 30 ms ahead
    assert plan(est) is None
    assert plan(est, lead_s=0.025) is not None  # a late stream plans whole chunks further ahead
    trig = TriggerSettings(target_phase_deg=0.0, min_interval_s=0.25, technical_delay_s=0.02)
    p = plan(est, trig=trig, delay_s=0.005)
    assert p.time_s == pytest.approx(1.030 - 0.025) and p.crossing_s == pytest.approx(1.030)


def test_random_targets_come_from_the_seed():
    trig = TriggerSettings(target_phase_deg=0.0, min_interval_s=0.25, random_phase=True, event="sham")
    draws = []
    for _ in range(2):
        planner = TriggerPlanner(trig, seed=7)
        draws.append([planner.rng.uniform(-180, 180) for _ in range(3)])
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="output_delay_s must be 0 to 1 s"):
        TriggerPlanner(trig, output_delay_s=-0.1)


def test_replay_delivers_at_the_planned_time_and_the_slack_is_latency_plus_half_the_tolerance():
    est = Sine(phase_deg=-18.0)
    p = plan(est)
    assert replay_delivery_s(p, 1.0) == p.time_s
    trig = TriggerSettings(phase_tolerance_deg=30.0)
    assert arrival_slack_s(trig, (8.0, 12.0)) == pytest.approx(DECISION_LATENCY_S + 15.0 / 3600.0)


def test_arrival_lead_is_zero_on_a_prompt_stream_and_whole_chunks_on_a_late_one():
    rng = np.random.default_rng(2)
    horizon, latency = 0.01, 0.001
    prompt = ArrivalLead()
    assert max(prompt.process(lag, latency, horizon) for lag in rng.uniform(0.0002, 0.0006, 5000)) == 0.0
    late = ArrivalLead()
    leads = np.array([late.process(lag, latency, horizon) for lag in rng.uniform(0.0, 0.040, 5000)])[500:]
    assert set(np.round(leads / horizon, 9)) <= {3.0, 4.0}
    late.reset()
    assert late.lag_s == 0.0 and late.max_lead_s == 0.0 and not math.isnan(late.process(0.0, latency, horizon))
