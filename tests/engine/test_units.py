"""The engine's other units: continuity, artifacts, the signal chain, baseline, gate, feedback."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal as sps

from closedloop.dsp import spatial_weights
from closedloop.engine import (
    AmplitudeGate,
    ArtifactDetector,
    Baseline,
    FeedbackMeter,
    SignalChain,
    TimestampCheck,
    fit_estimator,
    individual_band,
    working_rate,
)
from closedloop.estimators import make_estimator
from closedloop.protocol import ArtifactSettings, BandSettings, FeedbackSettings, TriggerSettings


# -- continuity ------------------------------------------------------------------------------
def test_timestamp_check_tells_gaps_backwards_and_overlaps_apart():
    check = TimestampCheck(500.0)
    dt = 1 / 500.0
    assert check.process(5, 1.0).kind == "ok"  # the first chunk
    assert check.process(5, 1.0 + 5 * dt).kind == "ok"
    gap = check.process(5, 1.0 + 5 * dt + 105 * dt)  # 100 samples lost
    assert gap.kind == "gap" and gap.missing == 100
    assert check.process(5, 0.5).kind == "backwards"
    assert check.process(5, 0.5 + 3 * dt).kind == "overlap"  # 2 samples overlap: jitter
    assert check.process(5, 0.5 + 3 * dt + 5 * dt + 0.015).kind == "ok"  # within the 20 ms tolerance
    check.reset()
    assert check.last_ts is None


# -- artifacts -------------------------------------------------------------------------------
def test_artifact_detector_marks_nan_saturation_flat_and_over_limit_on_used_channels_only():
    settings = ArtifactSettings(saturation_uv=1000.0, flat_uv=0.5, flat_window_s=0.1, max_abs_uv=100.0)
    det = ArtifactDetector(settings, np.array([0, 1]), 500.0)
    rng = np.random.default_rng(0)
    chunk = rng.normal(0, 10, (3, 25))
    assert det.process(chunk) is None
    chunk[2, 3] = np.nan  # an unused channel: no matter
    assert det.process(chunk) is None
    chunk[0, 4] = np.nan
    chunk[1, 7] = 2000.0
    mask = det.process(chunk)
    assert np.flatnonzero(mask).tolist() == [4, 7]
    flat = np.zeros((3, 25))
    flat[1] = rng.normal(0, 10, 25)
    marks = [det.process(flat.copy()) for _ in range(4)]  # two blocks of 25 samples to see it
    assert marks[-1] is not None and marks[-1].all()
    assert det.over_limit(np.array([0.0, 150.0, -120.0, 10.0])) == 2
    off = ArtifactDetector(ArtifactSettings(enabled=False), np.array([0]), 500.0)
    assert off.over_limit(np.array([1e6])) == 0
    bad = np.zeros((1, 3))
    bad[0, 1] = np.inf
    assert off.process(bad).tolist() == [False, True, False]  # NaN/Inf always


# -- the signal chain ------------------------------------------------------------------------
def test_working_rate_is_an_integer_decimation_to_at_most_1_khz():
    assert working_rate(5000.0) == (5, 1000.0)
    assert working_rate(1000.0) == (1, 1000.0)
    assert working_rate(2048.0) == (3, 2048.0 / 3)
    assert working_rate(160.0) == (1, 160.0)


@pytest.mark.parametrize("sfreq", [500.0, 5000.0])
def test_signal_chain_chunked_equals_whole_and_times_its_output(sfreq):
    rng = np.random.default_rng(1)
    n = int(4 * sfreq)
    data = rng.normal(0, 10, (4, n))
    weights = spatial_weights(["a", "b", "c", "d"], ["b"], "average")
    whole = SignalChain(weights, sfreq, 50.0, (8.0, 13.0))
    out_whole = whole.envelope_of(whole.highpassed(whole.derive(data, (n - 1) / sfreq)))
    chunked = SignalChain(weights, sfreq, 50.0, (8.0, 13.0))
    pieces, start = [], 0
    for size in rng.integers(0, 37, 400):
        stop = min(n, start + int(size))
        derived = chunked.derive(data[:, start:stop], (stop - 1) / sfreq)
        if derived.shape[1]:
            pieces.append(chunked.envelope_of(chunked.highpassed(derived)))
        start = stop
    pieces.append(chunked.envelope_of(chunked.highpassed(chunked.derive(data[:, start:], (n - 1) / sfreq))))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), out_whole, rtol=1e-10, atol=1e-10)
    # the newest working sample is the newest input sample minus the decimation's hold and delay
    factor = whole.factor
    newest_in = (out_whole.shape[1] - 1) * factor + (factor - 1 if factor > 1 else 0)
    expected = (n - 1) / sfreq - ((n - 1) - newest_in) / sfreq - whole.delay_s
    assert whole.newest_work_ts == pytest.approx(expected)


# -- baseline ---------------------------------------------------------------------------------
def _alpha(seconds: float, sfreq: float, freq: float = 10.3, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sfreq)) / sfreq
    pink = sps.lfilter([1.0], [1.0, -0.97], rng.normal(0, 3, t.size))
    return 12 * np.cos(2 * np.pi * freq * t + np.cumsum(rng.normal(0, 0.01, t.size))) + pink


def test_baseline_takes_exactly_its_length_and_finds_the_individual_peak():
    base = Baseline(1, 1000)
    x = _alpha(20.0, 250.0)
    taken = [base.process(x[None, k : k + 300], x[None, k : k + 300]) for k in range(0, 1200, 300)]
    assert taken == [300, 300, 300, 100] and base.full and base.data.shape == (1, 1000)
    band = BandSettings(low_hz=8.0, high_hz=13.0, individual=True)
    peak, band_hz = individual_band(x, 250.0, band)
    assert abs(peak - 10.3) < 0.3 and band_hz == pytest.approx((peak - 2.0, peak + 2.0))
    assert individual_band(x, 250.0, BandSettings(low_hz=8.0, high_hz=13.0, individual=False)) == (None, None)
    assert individual_band(x, 250.0, BandSettings(low_hz=8.0, high_hz=13.0, individual=False), always=True)[0] == peak
    assert individual_band(x[:400], 250.0, band) == (None, None)  # under 2 s


def test_fit_estimator_fits_and_warms_up_on_the_last_two_seconds():
    x = _alpha(20.0, 250.0)
    est = fit_estimator(make_estimator("wiener", 250.0, (8.0, 13.0)), x, 250.0)
    assert est.ready and math.isfinite(est.phase_deg)


# -- gate --------------------------------------------------------------------------------------
def test_amplitude_gate_percentile_uv_none_and_the_estimators_own_amplitude():
    env = np.concatenate([np.full(250, 1000.0), np.arange(1000.0)])  # a settling start, then a ramp
    gate = AmplitudeGate(TriggerSettings(amplitude_gate="percentile:50"))
    assert gate.calibrate(env, 250.0) == pytest.approx(np.percentile(env[250:], 50))
    assert gate.process(600.0) and not gate.process(400.0)
    assert AmplitudeGate(TriggerSettings(amplitude_gate="uv:7.5")).calibrate(env, 250.0) == 7.5
    assert AmplitudeGate(TriggerSettings(amplitude_gate="none")).calibrate(env, 250.0) == 0.0
    assert gate.calibrate(np.full(100, np.nan), 250.0) == math.inf  # no usable baseline: never open
    est = fit_estimator(make_estimator("wiener", 250.0, (8.0, 13.0)), _alpha(20.0, 250.0), 250.0)
    gate.use_estimator(est)
    assert gate.on_estimator and gate.threshold == pytest.approx(est.amplitude_threshold(50.0))


# -- feedback ----------------------------------------------------------------------------------
def test_feedback_meter_measures_asymmetry_and_z_scores_against_the_baseline():
    sfreq = 250.0
    a, b = _alpha(40.0, sfreq, seed=1), _alpha(40.0, sfreq, seed=2)
    settings = FeedbackSettings(measure="asymmetry", channels=("F4", "F3"), window_s=2.0, smoothing_s=0.0)
    meter = FeedbackMeter(settings, sfreq, 2, (8.0, 12.0))
    base = np.vstack([a[:5000], b[:5000]])
    values = [meter.process(base[:, k : k + 25], collecting=True) for k in range(0, 5000, 25)]
    assert all(math.isnan(v) for v in values)  # z-scored: undefined during the baseline
    meter.calibrate(base)
    x = np.vstack([2.0 * a[5000:], b[5000:]])  # F4 twice the amplitude: ln 4 more power
    out = [meter.process(x[:, k : k + 25], collecting=False) for k in range(0, 5000, 25)]
    def plain_values(signals):
        plain = FeedbackMeter(FeedbackSettings(measure="asymmetry", channels=("F4", "F3"), window_s=2.0,
                                               smoothing_s=0.0, zscore=False), sfreq, 2, (8.0, 12.0))
        return np.array([plain.process(signals[:, k : k + 25], collecting=False) for k in range(0, 5000, 25)])

    before = np.nanmedian(plain_values(np.vstack([a[5000:], b[5000:]]))[100:])
    after = np.nanmedian(plain_values(x)[100:])
    assert after - before == pytest.approx(math.log(4.0), abs=0.02)  # ln P(F4) - ln P(F3)
    assert np.nanmedian(out[100:]) > 3.0  # far above the baseline's distribution
    meter.reset()
    assert math.isnan(meter.value)
