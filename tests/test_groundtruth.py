"""Offline ground truth and circular statistics, against signals whose phase is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.errors import DataError
from closedloop.groundtruth import (
    GroundTruth,
    band_analytic,
    circular_stats,
    interior_analytic,
    truth_fir,
    wrap_deg,
)

SFREQ = 250.0


def _sine(seconds: float = 20.0, freq: float = 10.3, phase0: float = 0.7, amp: float = 12.0):
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    return t, amp * np.cos(2 * np.pi * freq * t + phase0), (freq, phase0, amp)


def test_truth_phase_of_a_sine_at_fractional_times():
    t, x, (freq, phase0, amp) = _sine()
    truth = GroundTruth(x, SFREQ, (8.0, 13.0))
    times = np.array([3.0, 5.00173, 7.33333, 11.9999, 15.5025])
    expected = wrap_deg(np.degrees(2 * np.pi * freq * times + phase0))
    assert np.max(np.abs(wrap_deg(truth.phase_at(times) - expected))) < 0.5
    assert np.allclose(truth.amplitude_at(times), amp, rtol=0.02)
    # at sample times the interpolation returns the samples themselves
    assert np.allclose(truth.analytic_at(t[1000:1003]), truth.analytic[1000:1003])


def test_truth_follows_the_phase_convention():
    # cos: peak at phase 0; the trough is 180; the rising zero crossing is -90
    _t, x, (_freq, _, _) = _sine(phase0=0.0, freq=10.0)
    truth = GroundTruth(x, SFREQ, (8.0, 13.0))
    k = round(10.0 * SFREQ)  # t = 10 s is a peak of cos(2 pi 10 t)
    assert abs(wrap_deg(truth.phase_deg[k])) < 0.5
    assert abs(wrap_deg(truth.phase_at(10.05) - 180.0)) < 0.5
    assert abs(wrap_deg(truth.phase_at(10.075) + 90.0)) < 0.5


def test_large_offset_and_drift_do_not_move_the_truth():
    t, x, _ = _sine()
    drifted = x + 5000.0 + 300.0 * np.sin(2 * np.pi * 0.05 * t)
    a = band_analytic(x, SFREQ, (8.0, 13.0))
    b = band_analytic(drifted, SFREQ, (8.0, 13.0))
    inner = slice(1000, -1000)
    assert np.max(np.abs(np.angle(a[inner] * np.conj(b[inner]), deg=True))) < 1.0
    assert abs(truth_fir(SFREQ, (8.0, 13.0)).sum()) < 1e-12


def test_interior_analytic_marks_the_edges():
    _, x, _ = _sine(seconds=10.0)
    z = interior_analytic(x, SFREQ, (8.0, 13.0))
    margin = truth_fir(SFREQ, (8.0, 13.0)).shape[0] // 2
    assert np.all(np.isnan(z[:margin])) and np.all(np.isnan(z[-margin:]))
    assert np.all(np.isfinite(z[margin:-margin]))


def test_truth_rejects_bad_input_and_times():
    _, x, _ = _sine(seconds=5.0)
    truth = GroundTruth(x, SFREQ, (8.0, 13.0))
    with pytest.raises(DataError, match="within the recording, 0 to"):
        truth.phase_at([1.0, 6.0])
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        GroundTruth(bad, SFREQ, (8.0, 13.0))
    with pytest.raises(DataError, match="1-D"):
        band_analytic(np.zeros((2, 100)), SFREQ, (8.0, 13.0))


def test_circular_stats_known_values():
    s = circular_stats(np.full(50, 12.0))
    assert s.n == 50 and s.mean_deg == pytest.approx(12.0) and s.plv == pytest.approx(1.0)
    assert s.sd_deg == pytest.approx(0.0, abs=1e-4) and s.within_45 == 1.0
    # wrap-around: errors of 170 and -170 average to 180, not 0
    s = circular_stats(np.array([170.0, -170.0]))
    assert abs(wrap_deg(s.mean_deg - 180.0)) < 1e-9
    # two errors of +-d: R = cos d, circular sd = sqrt(-2 ln cos d)
    d = 30.0
    s = circular_stats(np.array([d, -d]))
    assert s.plv == pytest.approx(math.cos(math.radians(d)))
    assert s.sd_deg == pytest.approx(
        math.degrees(math.sqrt(-2 * math.log(math.cos(math.radians(d)))))
    )
    s = circular_stats(np.array([0.0, 44.0, -46.0, 90.0]))
    assert s.within_45 == pytest.approx(0.5)
    # narrow normal errors: circular sd close to the linear sd
    e = np.random.default_rng(3).normal(5.0, 10.0, 20000)
    s = circular_stats(e)
    assert s.sd_deg == pytest.approx(10.0, rel=0.05) and s.mean_deg == pytest.approx(5.0, abs=0.5)


def test_circular_stats_empty_and_bad():
    s = circular_stats(np.zeros(0))
    assert s.n == 0 and math.isnan(s.sd_deg)
    with pytest.raises(DataError, match="NaN"):
        circular_stats(np.array([1.0, np.nan]))
