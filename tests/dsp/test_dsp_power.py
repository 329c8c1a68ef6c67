"""BandPower against scipy.signal.welch, and the individual alpha peak on real EEG."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from closedloop.dsp import BandPower, SettingsError, individual_peak_hz
from closedloop.errors import DataError
from tests.helpers.recordings import EEGMAT, EYES_CLOSED, EYES_OPEN, require_recordings


@cache
def load(path: str) -> tuple[np.ndarray, float, list[str]]:
    require_recordings()
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    data = np.ascontiguousarray(raw.get_data() * 1e6)
    data.flags.writeable = False
    return data, float(raw.info["sfreq"]), list(raw.ch_names)


@given(
    sizes=st.lists(
        st.one_of(st.sampled_from([0, 1, 2, 7, 64]), st.integers(65, 900)), min_size=1, max_size=20
    ),
    window_s=st.sampled_from([1.0, 2.0, 3.3]),
)
@settings(max_examples=15, deadline=None)
def test_bandpower_equals_welch_over_the_last_window(sizes: list[int], window_s: float) -> None:
    data, sfreq, _ = load(str(EEGMAT))
    data = data[:6, : int(12 * sfreq)]
    stage = BandPower(sfreq, window_s, 6)
    written = 0
    for size in sizes * 3:
        stage.process(np.ascontiguousarray(data[:, written : written + size]))
        written = min(data.shape[1], written + size)
    freqs, psd = stage.spectrum()
    n = min(written, stage.n_window)
    if n < stage.nperseg:
        assert np.isnan(psd).all() and np.isnan(stage.power(8.0, 13.0)).all()
        return
    window = data[:, written - n : written]
    step = stage.nperseg - stage.noverlap
    used = ((n - stage.noverlap) // step) * step + stage.noverlap
    ref_f, ref_psd = signal.welch(
        window[:, n - used :], sfreq, nperseg=stage.nperseg, noverlap=stage.noverlap, axis=1
    )
    np.testing.assert_allclose(freqs, ref_f)
    np.testing.assert_allclose(psd, ref_psd, rtol=1e-10, atol=1e-12 * ref_psd.max())
    band = (ref_f >= 8.0) & (ref_f <= 13.0)
    expected = ref_psd[:, band].sum(axis=1) * (ref_f[1] - ref_f[0])
    np.testing.assert_allclose(stage.power(8.0, 13.0), expected, rtol=1e-10)


def test_bandpower_alpha_ratio_separates_eyes_closed_from_open() -> None:
    ratios = []
    for path in (EYES_CLOSED, EYES_OPEN):
        data, sfreq, names = load(str(path))
        o1 = names.index("O1..")
        stage = BandPower(sfreq, 30.0, 1, segment_s=2.0)
        stage.process(np.ascontiguousarray(data[o1 : o1 + 1, : int(30 * sfreq)]))
        ratios.append(stage.power(8.0, 13.0)[0] / stage.power(2.0, 40.0)[0])
    closed, opened = ratios
    assert 0.55 < closed < 0.9  # README: 0.73 over the whole minute
    assert opened < 0.5 * closed


def test_bandpower_nan_clears_when_it_leaves_the_window() -> None:
    data, sfreq, _ = load(str(EEGMAT))
    stage = BandPower(sfreq, 1.0, 2)
    x = np.array(data[:2, : int(3 * sfreq)])
    x[1, 100] = np.nan
    stage.process(np.ascontiguousarray(x[:, :500]))
    assert stage.last_bad == 1
    power = stage.power(8.0, 13.0)
    assert np.isfinite(power[0]) and np.isnan(power[1])
    stage.process(np.ascontiguousarray(x[:, 500:]))
    assert np.isfinite(stage.power(8.0, 13.0)).all()
    stage.reset()
    assert np.isnan(stage.power(8.0, 13.0)).all()


def test_bandpower_settings_and_errors() -> None:
    with pytest.raises(SettingsError, match=r"segment_s \(2 s\) must not exceed window_s \(1 s\)"):
        BandPower(250.0, 1.0, 2, segment_s=2.0)
    with pytest.raises(SettingsError, match="window_s must be a positive"):
        BandPower(250.0, 0.0, 2)
    stage = BandPower(250.0, 1.0, 2)
    with pytest.raises(ValueError, match=r"shape \(2, n_samples\); got shape \(1, 5\)"):
        stage.process(np.zeros((1, 5)))
    with pytest.raises(SettingsError, match="no frequency bin between 10.2 and 10.5 Hz"):
        stage.power(10.2, 10.5)


def test_individual_alpha_peak_on_eyes_closed_eeg() -> None:
    data, sfreq, names = load(str(EYES_CLOSED))
    peak = individual_peak_hz(data[names.index("O1..")], sfreq)
    assert peak == pytest.approx(10.0, abs=0.5)  # README: peak 10.0 Hz


def test_individual_peak_follows_a_known_rhythm_and_reports_none() -> None:
    sfreq = 250.0
    rng = np.random.default_rng(7)
    n = int(60 * sfreq)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 0.5)), n) * 20
    t = np.arange(n) / sfreq
    with_rhythm = pink + 3.0 * np.sin(2 * np.pi * 11.3 * t)
    assert individual_peak_hz(with_rhythm, sfreq) == pytest.approx(11.3, abs=0.15)
    assert np.isnan(individual_peak_hz(pink, sfreq))
    with pytest.raises(DataError, match="at least 2 s of signal; got 1.00 s"):
        individual_peak_hz(pink[:250], sfreq)
    with pytest.raises(DataError, match="NaN or Inf"):
        individual_peak_hz(np.full(1000, np.nan), sfreq)
