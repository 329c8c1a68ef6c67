"""Phase estimators: interface, kernels, known-phase signals, chunking, bad input, real EEG."""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

from closedloop.angles import wrap_deg
from closedloop.channels import find_channel
from closedloop.errors import DataError, ProtocolError
from closedloop.estimators import available_methods, kernels, make_estimator
from closedloop.groundtruth import GroundTruth, band_analytic, circular_stats
from closedloop.offline import replay
from tests.helpers.protocols import make_protocol
from tests.helpers.recordings import EYES_CLOSED

SFREQ = 250.0
BAND = (8.0, 13.0)
METHODS = ("ar", "echt", "etp", "wiener")


def _alpha(seconds: float, seed: int = 0, freq: float = 10.0, noise: float = 2.0):
    """A 10 Hz rhythm with slow phase wander, in 1/f-like noise with drift; exact phase known."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    phase = 2 * np.pi * freq * t + np.cumsum(rng.normal(0, 0.01, n))
    amp = 10.0 * (1.0 + 0.3 * np.sin(2 * np.pi * 0.2 * t))
    pink = lfilter([1.0], [1.0, -0.95], rng.normal(0, noise, n))
    return amp * np.cos(phase) + pink + rng.normal(0, noise, n) + 40.0, phase


# -- interface ------------------------------------------------------------------------------
def test_available_methods_and_auto():
    names = available_methods()
    assert names[0] == "auto" and set(METHODS) <= set(names)
    est = make_estimator("auto", SFREQ, BAND)
    assert est.name in METHODS and est.name == "wiener"
    assert make_estimator("ECHT", SFREQ, BAND).name == "echt"


def test_bad_method_params_and_band_are_named():
    with pytest.raises(ProtocolError, match="'kalmann' is not known; accepted: auto, ar"):
        make_estimator("kalmann", SFREQ, BAND)
    with pytest.raises(ProtocolError, match="no parameter 'orderr'; accepted: ahead_s"):
        make_estimator("ar", SFREQ, BAND, orderr=10)
    with pytest.raises(ProtocolError, match="'window_s' = -1 is out of range"):
        make_estimator("wiener", SFREQ, BAND, window_s=-1)
    with pytest.raises(ProtocolError, match="'ar_method' = 'lsq' is not known"):
        make_estimator("ar", SFREQ, BAND, ar_method="lsq")
    with pytest.raises(ProtocolError, match=r"band 13-8 Hz is invalid at 250 Hz"):
        make_estimator("echt", SFREQ, (13.0, 8.0))
    with pytest.raises(ProtocolError, match="high_hz < 50"):
        make_estimator("echt", 100.0, (8.0, 60.0))
    with pytest.raises(DataError, match="sampling rate"):
        make_estimator("echt", 0.0, BAND)


@pytest.mark.parametrize("method", METHODS)
def test_chunk_checks_and_short_baseline(method):
    est = make_estimator(method, SFREQ, BAND)
    with pytest.raises(ValueError, match="1-D chunk"):
        est.process(np.zeros((2, 10)))
    with pytest.raises(DataError, match="baseline has 100 samples"):
        est.fit(np.zeros(100))
    est.process(np.zeros(0))
    assert not est.ready and math.isnan(est.next_crossing_s(0.0))


# -- kernels --------------------------------------------------------------------------------
def test_levinson_matches_toeplitz_solve():
    rng = np.random.default_rng(1)
    x = lfilter([1.0], [1.0, -1.6, 0.8], rng.normal(size=4000))
    p = 6
    r = np.zeros(p + 1)
    kernels.autocorr(x, r)
    assert np.allclose(r, [x[: x.size - k] @ x[k:] / x.size for k in range(p + 1)])
    a = np.zeros(p)
    err = kernels.levinson(r, a, np.zeros(p))
    assert np.allclose(a, solve_toeplitz(r[:p], r[1:]), atol=1e-10)
    assert 0 < err < r[0]


def test_burg_recovers_an_ar2_process():
    rng = np.random.default_rng(2)
    x = lfilter([1.0], [1.0, -1.6, 0.8], rng.normal(size=20000))
    a = np.zeros(2)
    kernels.burg(x, a, np.zeros(x.size), np.zeros(x.size), np.zeros(2))
    assert np.allclose(a, [1.6, -0.8], atol=0.02)


def test_ar_extend_and_fir_kernels():
    y = np.zeros(10)
    y[:2] = [1.0, 0.5]
    kernels.ar_extend(y, 2, np.array([0.5, 0.25]))
    ref = [1.0, 0.5]
    for _ in range(8):
        ref.append(0.5 * ref[-1] + 0.25 * ref[-2])
    assert np.allclose(y, ref)
    rng = np.random.default_rng(4)
    x, h = rng.normal(size=50), rng.normal(size=7)
    out = np.zeros(44)
    kernels.fir_valid(x, h, out)
    assert np.allclose(out, np.correlate(x, h, mode="valid"))
    w = rng.normal(size=7) + 1j * rng.normal(size=7)
    re, im = np.zeros(3), np.zeros(3)
    kernels.complex_fir(
        x, 49, 3, np.ascontiguousarray(w.real), np.ascontiguousarray(w.imag), re, im
    )
    expected = [w @ x[e - 6 : e + 1] for e in (47, 48, 49)]
    assert np.allclose(re + 1j * im, expected)


# -- behaviour on signals of known phase ----------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_phase_frequency_and_crossing_on_known_alpha(method):
    x, phase = _alpha(30.0)
    est = make_estimator(method, SFREQ, BAND)
    est.fit(x[: int(20 * SFREQ)])
    est.process(x[: int(20 * SFREQ)])
    true_phase = np.degrees(phase)
    errors, crossings = [], []
    for n in range(int(20 * SFREQ), int(28 * SFREQ)):
        est.process(x[n : n + 1])
        if n % 25 == 0:
            assert est.ready
            errors.append(wrap_deg(est.phase_deg - true_phase[n]))
            assert 8.0 <= est.frequency_hz <= 13.0
            ahead = est.next_crossing_s(180.0)
            assert 0.0 <= ahead < 1.0 / 8.0
            crossings.append((n, ahead))
    errors = np.asarray(errors)
    assert abs(np.mean(errors)) < 15.0 and np.std(errors) < 25.0
    # the predicted time lands near a true trough
    landed = [wrap_deg(np.degrees(phase[n] + 2 * np.pi * 10.0 * a) - 180.0) for n, a in crossings]
    assert abs(np.mean(landed)) < 20.0
    assert 1.0 < est.amplitude < 25.0  # AR damps its forward prediction


def test_next_crossing_is_exact_for_a_clean_sine():
    t = np.arange(int(12 * SFREQ)) / SFREQ
    x = 20.0 * np.cos(2 * np.pi * 10.0 * t)
    est = make_estimator("wiener", SFREQ, BAND)
    est.fit(x[: int(10 * SFREQ)])
    est.process(x[: int(11 * SFREQ) + 3])  # newest sample at 11 s + 2 samples: phase 28.8 deg
    assert est.phase_deg == pytest.approx(28.8, abs=1.0)
    assert est.frequency_hz == pytest.approx(10.0, abs=0.05)
    for target, expected_s in ((90.0, (90 - 28.8) / 3600), (-90.0, (270 - 28.8) / 3600)):
        assert est.next_crossing_s(target) == pytest.approx(expected_s, abs=3e-4)


@pytest.mark.parametrize("method", METHODS)
def test_uneven_chunks_give_the_same_answers(method):
    x, _ = _alpha(14.0, seed=5)
    base = x[: int(8 * SFREQ)]
    rest = x[int(8 * SFREQ) :]
    one = make_estimator(method, SFREQ, BAND)
    one.fit(base)
    for v in rest:
        one.process(np.array([v]))
    chunked = make_estimator(method, SFREQ, BAND)
    chunked.fit(base)
    sizes = [0, 1, 7, 0, 300, 13, 1, 64]
    pos = 0
    for i in range(10_000):
        size = sizes[i % len(sizes)]
        chunked.process(rest[pos : pos + size])
        pos += size
        if pos >= rest.size:
            break
    assert chunked.phase_deg == pytest.approx(one.phase_deg, abs=1e-6)
    assert chunked.amplitude == pytest.approx(one.amplitude, rel=1e-9)
    assert chunked.frequency_hz == pytest.approx(one.frequency_hz, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_nan_input_is_counted_and_recovered_from(method):
    x, _ = _alpha(12.0, seed=6)
    est = make_estimator(method, SFREQ, BAND)
    est.fit(x[: int(8 * SFREQ)])
    est.process(x[int(8 * SFREQ) : int(9 * SFREQ)])
    assert est.ready
    chunk = x[int(9 * SFREQ) : int(9 * SFREQ) + 20].copy()
    chunk[[3, 17]] = [np.nan, np.inf]
    est.process(chunk[:18])
    assert est.last_bad == 2 and not est.ready and math.isnan(est.phase_deg)
    est.process(x[int(9 * SFREQ) + 20 : int(11 * SFREQ)])
    assert est.last_bad == 0 and est.ready and math.isfinite(est.phase_deg)


def test_wiener_delayed_truth_equals_the_offline_truth():
    x, _ = _alpha(20.0, seed=7)
    est = make_estimator("wiener", SFREQ, BAND)
    est.fit(x[: int(10 * SFREQ)])
    est.process(x)
    newest = x.size - 1
    known = np.arange(newest - est.delay - 100, newest - est.delay + 1)
    online = est._t_ring[known % est.ring_size]
    offline = band_analytic(x, SFREQ, BAND)[known]
    # the real part is the same FIR; the quadrature part is the finite filter's Hilbert pair
    assert np.allclose(online.real, offline.real, atol=1e-9)
    assert np.max(np.abs(online - offline) / np.abs(offline)) < 0.02
    assert np.max(np.abs(np.angle(online * np.conj(offline), deg=True))) < 1.0


# -- real EEG: the project's claim on strong eyes-closed alpha --------------------------------
@pytest.fixture(scope="module")
def eyes_closed_o1(recordings):
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    x = raw.get_data(picks=[find_channel("O1", raw.ch_names)])[0] * 1e6
    sfreq = raw.info["sfreq"]
    return x, sfreq, GroundTruth(x, sfreq, BAND)


def _engine_run(x, sfreq, method, targets_deg, truth, *, band=BAND, baseline_s=30.0, min_interval_s=0.25):
    """``x`` replayed through the real engine once per target, a decision after every sample,
    gate at the baseline's median; circular statistics of the triggers' true-phase errors
    (pooled over the targets) and their rate per target over the evaluated part."""
    end_s = x.shape[0] / sfreq - 1.0  # the truth's own edge
    errors = []
    for target in targets_deg:
        protocol = make_protocol(
            signal={"channel": "x", "reference": "none"},
            band={"low_hz": band[0], "high_hz": band[1]},
            estimator={"method": method},
            trigger={"target_phase_deg": target, "amplitude_gate": "percentile:50",
                     "baseline_s": baseline_s, "min_interval_s": min_interval_s},
            artifact={"enabled": False},
        )
        result = replay(x[None, :], protocol, sfreq=sfreq, ch_names=["x"], units="uV", chunk_size=1,
                        keep_state=False)
        onsets = result.onsets_s[result.onsets_s <= end_s]
        errors.append(wrap_deg(truth.phase_at(onsets) - target))
    errors = np.concatenate(errors)
    return circular_stats(errors), 60.0 * errors.size / len(targets_deg) / (end_s - baseline_s)


def test_wiener_beats_ar_and_echt_on_real_alpha(eyes_closed_o1):
    x, sfreq, truth = eyes_closed_o1
    # the README's claim: targets 0 and 180 pooled
    results = {method: _engine_run(x, sfreq, method, (0.0, 180.0), truth) for method in ("wiener", "ar", "echt")}
    best, rate = results["wiener"]
    assert best.n >= 100
    assert abs(best.mean_deg) <= 5.0 and best.sd_deg <= 16.0
    assert best.sd_deg < results["ar"][0].sd_deg and best.sd_deg < results["echt"][0].sd_deg
    assert rate >= results["ar"][1]


def test_wiener_window_follows_the_band_and_tracks_slow_oscillations():
    fs = 100.0
    assert make_estimator("wiener", fs, BAND).n_taps == 50  # alpha: 0.5 s
    est = make_estimator("wiener", fs, (0.5, 2.0))
    assert est.n_taps == 80  # one cycle of 1.25 Hz
    rng = np.random.default_rng(9)
    n = int(90 * fs)
    t = np.arange(n) / fs
    phase = 2 * np.pi * 0.9 * t + np.cumsum(rng.normal(0, 0.01, n))
    x = 60 * np.cos(phase) + lfilter([1.0], [1.0, -0.98], rng.normal(0, 3, n)) + rng.normal(0, 5, n)
    truth = GroundTruth(x, fs, (0.5, 2.0))
    stats, _ = _engine_run(x, fs, "wiener", (0.0,), truth, band=(0.5, 2.0), min_interval_s=2.0)
    assert stats.n >= 10
    assert stats.sd_deg < 12.0 and abs(stats.mean_deg) < 6.0


def test_wiener_corrects_a_bias_that_appears_after_the_baseline():
    # after the baseline the rhythm's frequency content changes (10 -> 11.5 Hz): the trained
    # filter's phase response there differs; the delayed-truth tracking must remove the bias
    rng = np.random.default_rng(11)
    n = int(80 * SFREQ)
    n_base = int(20 * SFREQ)
    freq = np.where(np.arange(n) < n_base, 9.0, 11.5)
    phase = np.cumsum(2 * np.pi * freq / SFREQ) + np.cumsum(rng.normal(0, 0.01, n))
    x = 10.0 * np.cos(phase) + lfilter([1.0], [1.0, -0.95], rng.normal(0, 1.0, n))
    truth = band_analytic(x, SFREQ, BAND)

    def run(adapt_s: float) -> tuple[float, float]:
        est = make_estimator("wiener", SFREQ, BAND, adapt_s=adapt_s)
        est.fit(x[:n_base])
        est.process(x[:n_base])
        early, late = [], []
        for k in range(n_base, n - 300):
            est.process(x[k : k + 1])
            if k % 10:
                continue
            err = wrap_deg(np.degrees(np.angle(truth[k])) - est.phase_deg)
            if k < n_base + int(3 * SFREQ):
                early.append(err)
            elif k > n - int(20 * SFREQ):
                late.append(err)
        return float(np.mean(early)), float(np.mean(late))

    fixed_early, fixed_late = run(0.0)
    early, late = run(5.0)
    assert abs(fixed_late) > 4.0  # without tracking the bias stays
    assert abs(late) < 0.4 * abs(fixed_late)  # with it, it shrinks
    assert abs(early - fixed_early) < abs(fixed_early) / 2 + 1.0  # tracking is slow, not jumpy
