"""Timestamps that jitter: the sample clock behind them (closedloop.lsl.dejitter), and a live run
on an amplifier whose driver stamps at push time.

The unit tests feed :class:`SampleClock` stamp sequences built from a known sample clock (what a
driver's push-time stamping, bursts, a rate off nominal, lost samples and clock steps make of it)
and compare its answers with that clock. The live test plays such a stream from a real outlet into
`closedloop run` with and without dejittering.
"""

from __future__ import annotations

import time

import numpy as np
import pylsl
import pytest

from closedloop.engine import GAP_TOLERANCE_S
from closedloop.lsl.dejitter import SampleClock
from tests.helpers.faults import (
    LIVE_SFREQ,
    FaultyOutlet,
    MarkerConsumer,
    alpha_stream,
    circular_mean_deg,
    run_live_together,
    sine_phase_deg,
)

T0 = 1000.0  # LSL clock at the first sample


def push_stamped(
    sfreq: float,
    seconds: float,
    chunk: int,
    jitter_s: float,
    *,
    rate_factor: float = 1.0,
    lost: tuple[float, float] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Chunks as a push-stamping driver delivers them: (newest sample's stamp, its true time).

    Sample ``k`` is acquired at ``T0 + k / (sfreq * rate_factor)``; each chunk is stamped when
    pushed, ``U(0, jitter_s)`` after its newest sample, and never before the previous push.
    ``lost = (at_s, for_s)`` drops the samples acquired in that stretch.
    """
    rng = np.random.default_rng(seed)
    rate = sfreq * rate_factor
    n = round(seconds * rate)
    keep = np.ones(n, dtype=bool)
    if lost is not None:
        keep[round(lost[0] * rate) : round((lost[0] + lost[1]) * rate)] = False
    index = np.flatnonzero(keep)
    newest = index[chunk - 1 :: chunk]
    true = T0 + newest / rate
    stamps = np.maximum.accumulate(true + rng.uniform(0.0, jitter_s, true.size))
    return stamps, true


def run_clock(clock: SampleClock, stamps: np.ndarray, chunk: int) -> np.ndarray:
    """The clock's answer for every chunk of ``chunk`` samples."""
    return np.array([clock.update(float(stamp), chunk) for stamp in stamps])


def test_exact_stamps_pass_unchanged():
    chunk = 5
    stamps, true = push_stamped(500.0, 30.0, chunk, 0.0)
    clock = SampleClock(500.0)
    out = run_clock(clock, stamps, chunk)
    assert np.max(np.abs(out - true)) < 1e-9
    assert clock.n_resyncs == 0 and clock.jitter_s < 1e-9


# a rate 2 % off nominal is learnt from the jittery stamps within about 10 s
@pytest.mark.parametrize(("rate_factor", "settle_s"), [(1.0, 3.0), (1.02, 10.0), (0.98, 10.0)])
def test_push_time_jitter_of_40_ms_is_removed_and_makes_no_gaps(rate_factor, settle_s):
    sfreq, chunk = 500.0, 5
    stamps, true = push_stamped(sfreq, 60.0, chunk, 0.040, rate_factor=rate_factor)
    clock = SampleClock(sfreq)
    out = run_clock(clock, stamps, chunk)
    settled = true > T0 + settle_s
    raw_error = (stamps - true)[settled]
    error = (out - true)[settled]
    assert raw_error.max() > 0.035 and np.median(raw_error) > 0.015  # the stamps are late ...
    # ... the sample clock by a few ms at most, on both sides
    assert np.median(np.abs(error)) < 0.003, np.median(error)
    assert error.max() < 0.008, error.max()
    assert error.min() > -0.002, error.min()
    assert abs(clock.rate_hz / (sfreq * rate_factor) - 1.0) < 1e-4
    assert clock.n_resyncs == 0
    # the engine counts a gap where successive times step by more than its tolerance: the raw
    # stamps make many, the sample clock none
    expected = chunk / (sfreq * rate_factor)
    assert np.sum(np.diff(stamps) - expected > GAP_TOLERANCE_S) > 10
    assert np.max(np.abs(np.diff(out) - expected)) < GAP_TOLERANCE_S
    assert np.max(np.abs(np.diff(out) - expected)[settled[1:]]) < GAP_TOLERANCE_S / 2


def test_bursts_stamped_at_push_and_split_pulls_follow_the_sample_clock():
    """A driver that pushes 9 samples at 300 Hz every 30 ms, each stamped at its push (a few µs
    apart), and an inlet whose pulls end anywhere inside a burst."""
    sfreq, burst = 300.0, 9
    rng = np.random.default_rng(1)
    n = round(120.0 * sfreq)
    true = T0 + np.arange(n) / sfreq
    push = np.repeat(true[burst - 1 :: burst], burst)[:n] + rng.uniform(0.0, 0.004, n // burst + 1).repeat(burst)[:n]
    stamps = push + np.tile(np.arange(burst) * 1e-5, n // burst + 1)[:n]
    ends = np.unique(np.r_[np.cumsum(rng.integers(1, 2 * burst, n // 3)), n])
    ends = ends[ends <= n]
    clock = SampleClock(sfreq)
    start = 0
    errors = []
    for end in ends:
        out = clock.update(float(stamps[end - 1]), int(end - start))
        errors.append(out - true[end - 1])
        start = end
    errors = np.array(errors)[len(ends) // 10 :]
    assert np.max(np.abs(stamps - true)) > 0.025
    assert errors.max() < 0.005 and errors.min() > -0.001, (errors.min(), errors.max())
    assert clock.n_resyncs == 0


def test_lost_samples_restart_the_clock_at_the_jump():
    sfreq, chunk = 500.0, 5
    stamps, true = push_stamped(sfreq, 40.0, chunk, 0.030, lost=(20.0, 0.3))
    clock = SampleClock(sfreq)
    out = run_clock(clock, stamps, chunk)
    assert clock.n_resyncs == 1
    steps = np.diff(out)
    big = np.flatnonzero(steps > 0.2)
    assert big.size == 1 and abs(true[big[0]] - (T0 + 20.0)) < 0.02  # the jump is where it was
    after = true > T0 + 23.0
    assert np.max(np.abs(out - true)[after]) < 0.004


def test_a_clock_step_back_is_passed_on_as_it_is():
    """The engine holds on timestamps that go back; the sample clock must not hide the step."""
    sfreq, chunk = 500.0, 5
    stamps, _ = push_stamped(sfreq, 20.0, chunk, 0.0)
    stamps = stamps.copy()
    stamps[stamps > T0 + 10.0] -= 0.3
    clock = SampleClock(sfreq)
    out = run_clock(clock, stamps, chunk)
    step = np.flatnonzero(np.diff(out) < -0.2)
    assert step.size == 1
    assert np.allclose(out[step[0] + 1 :], stamps[step[0] + 1 :], atol=1e-9)
    assert clock.n_resyncs == 1


# ---------------------------------------------------------------------- live
JITTER_S = 0.040


class jittered_push:  # a stamp function, named as one
    """``FaultyOutlet`` stamp function of a push-stamping driver: push ``U(0, JITTER_S)`` after
    the chunk is due and stamp it with the push time (a class, so that it goes to the outlet's
    process)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, number: int, due: float) -> float:
        push_at = due + self.rng.uniform(0.0, JITTER_S)
        wait = push_at - pylsl.local_clock()
        if wait > 0:
            time.sleep(wait)
        return pylsl.local_clock()


@pytest.mark.slow
def test_live_push_stamped_stream_makes_no_false_gaps_and_stays_phase_locked(tmp_path, source_id):
    """Two runs at once, each on its own push-stamping amplifier (40 ms of jitter): dejittered,
    then with ``--raw-timestamps``. Only the first is free of false gaps and phase-locked."""
    duration = 12.0
    modes = {"dejitter": (), "raw": ("--raw-timestamps",)}
    ids = {mode: f"{source_id}-{mode}" for mode in modes}
    outlets = {
        mode: FaultyOutlet(alpha_stream(duration + 20.0), LIVE_SFREQ, ids[mode], stamp=jittered_push(i)).start()
        for i, mode in enumerate(modes)
    }
    consumers = {mode: MarkerConsumer(ids[mode] + "-m") for mode in modes}
    try:
        results = run_live_together(tmp_path, [(ids[mode], duration, extra) for mode, extra in modes.items()])
    finally:
        for item in consumers.values():
            item.disconnect()
        for item in outlets.values():
            item.close()
    (code, err, good), (raw_code, raw_err, raw) = results
    assert code == 0, err
    assert raw_code == 0, raw_err
    assert good["timestamps"]["dejitter"] is True and raw["timestamps"]["dejitter"] is False
    assert good["gaps"] == 0 and good["dropped_samples"] == 0, good
    assert good["timestamps"]["jitter_ms"] > 20.0, good["timestamps"]
    assert raw["gaps"] > 0, raw  # without the sample clock the jitter looks like lost samples

    stamps = np.array(consumers["dejitter"].stamps)
    assert stamps.size >= 5, (good['triggers'], consumers['dejitter'].connected.is_set(), good)
    # target 0 deg: the peak of the O2 cosine, whose true phase follows the outlet's sample clock
    mean, spread = circular_mean_deg(sine_phase_deg(stamps, outlets["dejitter"].t0, LIVE_SFREQ))
    print(
        f"dejittered: {stamps.size} triggers, phase error mean {mean:.1f} SD {spread:.1f} deg, "
        f"plan lead up to {good['timestamps']['plan_lead_ms_max']:g} ms; raw stamps: "
        f"{raw['gaps']} false gaps, {raw['triggers']} triggers; dejittered run's timestamps: "
        f"{good['timestamps']}"
    )
    assert abs(mean) < 25.0 and spread < 35.0, (mean, spread, stamps.size)
