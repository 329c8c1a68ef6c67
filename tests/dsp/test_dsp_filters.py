"""SOSFilter, filter designs, Decimator and Envelope against scipy/numpy, on real recordings."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import signal

from closedloop.dsp import (
    Decimator,
    Envelope,
    SettingsError,
    SOSFilter,
    design_bandpass,
    design_highpass,
    design_notch,
)
from closedloop.errors import UsageError
from tests.helpers.recordings import (
    ANT_1KHZ,
    EEGMAT,
    EYES_CLOSED,
    NEURONE_5KHZ,
    require_recordings,
)

CHUNK_SIZES = st.one_of(st.sampled_from([0, 1, 2, 7, 64]), st.integers(65, 1500))
HYPOTHESIS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def load(path: str, seconds: float | None = None) -> tuple[np.ndarray, float, list[str]]:
    """A real recording in µV, read-only, with its rate and channel names."""
    require_recordings()
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    data = raw.get_data() * 1e6
    if seconds is not None:
        data = data[:, : int(seconds * raw.info["sfreq"])]
    data = np.ascontiguousarray(data)
    data.flags.writeable = False
    return data, float(raw.info["sfreq"]), list(raw.ch_names)


def split(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into consecutive chunks, cycling through ``sizes`` (zeros included)."""
    if sum(sizes) == 0:
        sizes = [*sizes, 1]
    bounds, start, i = [], 0, 0
    while start < n:
        stop = min(n, start + sizes[i % len(sizes)])
        bounds.append((start, stop))
        start, i = stop, i + 1
    bounds.append((n, n))
    return bounds


def run_chunked(stage, data: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``data`` in the chunks given by ``sizes``; concatenate the outputs."""
    outs = [
        stage.process(np.ascontiguousarray(data[:, a:b])) for a, b in split(data.shape[1], sizes)
    ]
    return np.concatenate(outs, axis=1)


def steady_zi(sos: np.ndarray, first: np.ndarray) -> np.ndarray:
    """scipy's zi (n_sections, n_channels, 2) for a filter at rest at each channel's ``first``."""
    return signal.sosfilt_zi(sos)[:, None, :] * first[None, :, None]


# ---------------------------------------------------------------- SOSFilter


@given(sizes=st.lists(CHUNK_SIZES, min_size=1, max_size=30))
@HYPOTHESIS
def test_sosfilter_chunked_equals_whole_and_scipy(sizes: list[int]) -> None:
    data, sfreq, _ = load(str(EYES_CLOSED), 20.0)
    sos = design_bandpass(8.0, 13.0, sfreq)
    whole = SOSFilter(sos, data.shape[0]).process(data)
    chunked = run_chunked(SOSFilter(sos, data.shape[0]), data, sizes)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=0)
    reference, _ = signal.sosfilt(sos, data, axis=1, zi=steady_zi(sos, data[:, 0]))
    np.testing.assert_allclose(whole, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())


@given(sizes=st.lists(CHUNK_SIZES, min_size=1, max_size=30))
@HYPOTHESIS
def test_sosfilter_zero_init_matches_plain_sosfilt(sizes: list[int]) -> None:
    data, sfreq, _ = load(str(EEGMAT), 12.0)
    sos = np.vstack([design_highpass(0.5, sfreq), design_notch(50.0, sfreq)])
    chunked = run_chunked(SOSFilter(sos, data.shape[0], init="zero"), data, sizes)
    reference = signal.sosfilt(sos, data, axis=1)
    np.testing.assert_allclose(chunked, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())


def test_steady_init_has_no_offset_transient() -> None:
    data, sfreq, _ = load(str(EEGMAT), 12.0)
    offset = data[:3] + 5000.0  # a large DC offset, as from an amplifier
    steady = SOSFilter(design_highpass(0.5, sfreq), 3).process(np.ascontiguousarray(offset))
    zero = SOSFilter(design_highpass(0.5, sfreq), 3, init="zero").process(
        np.ascontiguousarray(offset)
    )
    first_s = slice(0, int(sfreq))
    assert np.abs(steady[:, first_s]).max() < 0.1 * np.abs(zero[:, first_s]).max()
    assert np.abs(zero[:, 0]).min() > 4000.0


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_sosfilter_recovers_from_bad_samples(bad_value: float) -> None:
    data, sfreq, _ = load(str(EYES_CLOSED), 20.0)
    x = np.array(data[:4])
    x[1, 1000:1010] = bad_value
    x[2, 1500] = bad_value
    sos = design_bandpass(8.0, 13.0, sfreq)
    stage = SOSFilter(sos, 4)
    head = stage.process(np.ascontiguousarray(x[:, :1200]))
    assert stage.last_bad == 10
    tail = stage.process(np.ascontiguousarray(x[:, 1200:]))
    assert stage.last_bad == 1 and stage.n_bad == 11
    out = np.concatenate([head, tail], axis=1)
    assert np.isnan(out[1, 1000:1010]).all() and np.isnan(out[2, 1500])
    assert np.isfinite(np.delete(out[1], np.s_[1000:1010])).all()
    # Channel 1 restarts at the steady state of its next good sample (1010).
    restart, _ = signal.sosfilt(sos, x[1:2, 1010:], axis=1, zi=steady_zi(sos, x[1:2, 1010]))
    np.testing.assert_allclose(out[1, 1010:], restart[0], rtol=1e-10, atol=1e-9)
    # Untouched channels are the same as without the bad samples.
    clean = SOSFilter(sos, 4).process(np.ascontiguousarray(data[:4]))
    np.testing.assert_array_equal(out[[0, 3]], clean[[0, 3]])


def test_sosfilter_rejects_bad_chunks_with_clear_errors() -> None:
    stage = SOSFilter(design_bandpass(8.0, 13.0, 160.0), 64)
    with pytest.raises(ValueError, match=r"shape \(64, n_samples\); got shape \(3, 10\)"):
        stage.process(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="got dtype float32"):
        stage.process(np.zeros((64, 10), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got shape \(64,\)"):
        stage.process(np.zeros(64))
    with pytest.raises(ValueError, match="got list"):
        stage.process([[0.0]] * 64)
    empty = stage.process(np.zeros((64, 0)))
    assert empty.shape == (64, 0)
    fortran = np.asfortranarray(np.random.default_rng(1).standard_normal((64, 9)))
    expected = SOSFilter(stage.sos, 64).process(np.ascontiguousarray(fortran))
    np.testing.assert_array_equal(SOSFilter(stage.sos, 64).process(fortran), expected)


def test_sosfilter_reset_repeats_output() -> None:
    data, sfreq, _ = load(str(EEGMAT), 4.0)
    stage = SOSFilter(design_bandpass(8.0, 13.0, sfreq), data.shape[0])
    first = stage.process(data)
    stage.reset()
    np.testing.assert_array_equal(stage.process(data), first)


def test_settings_are_validated() -> None:
    with pytest.raises(SettingsError, match="init must be one of steady, zero; got 'warm'"):
        SOSFilter(design_highpass(1.0, 100.0), 2, init="warm")
    with pytest.raises(SettingsError, match="unstable"):
        SOSFilter([[1, 0, 0, 1, -2.5, 1.2]], 1)
    with pytest.raises(SettingsError, match=r"shape \(n_sections, 6\)"):
        SOSFilter(np.ones((2, 5)), 1)
    with pytest.raises(SettingsError, match="n_channels must be an integer >= 1; got 0"):
        SOSFilter(design_highpass(1.0, 100.0), 0)
    with pytest.raises(SettingsError, match="low_hz < high_hz; got 13 to 8 Hz"):
        design_bandpass(13.0, 8.0, 160.0)
    with pytest.raises(SettingsError, match=r"Nyquist frequency \(80 Hz"):
        design_bandpass(8.0, 90.0, 160.0)
    with pytest.raises(SettingsError, match="freq_hz must be a positive"):
        design_notch(-50.0, 1000.0)
    with pytest.raises(UsageError, match="cutoff_hz must be below the Nyquist") as err:
        design_highpass(600.0, 1000.0)
    assert err.value.exit_code == 2 and isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    ("line", "sfreq", "expected"), [(50.0, 5000.0, 49), (50.0, 1000.0, 9), (60.0, 500.0, 4)]
)
def test_notch_covers_harmonics_below_nyquist(line: float, sfreq: float, expected: int) -> None:
    sos = design_notch(line, sfreq)
    assert sos.shape == (expected, 6)
    harmonics = line * np.arange(1, expected + 1)
    _, h = signal.sosfreqz(sos, worN=harmonics, fs=sfreq)
    assert np.abs(h).max() < 1e-6
    _, h_pass = signal.sosfreqz(sos, worN=[10.0, line * 1.5], fs=sfreq)
    assert np.all(np.abs(h_pass) > 0.97)
    assert design_notch(line, sfreq, harmonics=False).shape == (1, 6)
    assert design_notch(line, sfreq, max_hz=2.5 * line).shape == (2, 6)


def test_notch_removes_line_noise_from_real_eeg() -> None:
    data, sfreq, _ = load(str(EEGMAT), 12.0)
    x = data[:4] + 40.0 * np.sin(2 * np.pi * 50.0 * np.arange(data.shape[1]) / sfreq)
    y = SOSFilter(design_notch(50.0, sfreq), 4).process(np.ascontiguousarray(x))
    settled = slice(int(2 * sfreq), None)
    f, p_in = signal.welch(x[:, settled], sfreq, nperseg=int(sfreq))
    _, p_out = signal.welch(y[:, settled], sfreq, nperseg=int(sfreq))
    at50 = np.argmin(np.abs(f - 50.0))
    at10 = np.argmin(np.abs(f - 10.0))
    assert np.all(p_out[:, at50] < 1e-3 * p_in[:, at50])
    np.testing.assert_allclose(p_out[:, at10], p_in[:, at10], rtol=0.05)


# ---------------------------------------------------------------- Decimator


@given(sizes=st.lists(CHUNK_SIZES, min_size=1, max_size=30), factor=st.sampled_from([2, 5]))
@HYPOTHESIS
def test_decimator_chunked_equals_whole_and_scipy(sizes: list[int], factor: int) -> None:
    data, sfreq, _ = load(str(NEURONE_5KHZ))
    assert sfreq == 5000.0
    whole_stage = Decimator(factor, data.shape[0], sfreq)
    whole = whole_stage.process(data)
    chunked = run_chunked(Decimator(factor, data.shape[0], sfreq), data, sizes)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=0)
    sos = whole_stage.sos
    filtered, _ = signal.sosfilt(sos, data, axis=1, zi=steady_zi(sos, data[:, 0]))
    # Output sample k is input sample k * factor + offset, offset = factor - 1.
    reference = filtered[:, factor - 1 :: factor]
    assert whole.shape == reference.shape
    np.testing.assert_allclose(whole, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())


@given(sizes=st.lists(CHUNK_SIZES, min_size=1, max_size=30), factor=st.sampled_from([2, 4]))
@HYPOTHESIS
def test_decimator_on_1khz_recording_with_amplifier_fault(sizes: list[int], factor: int) -> None:
    data, sfreq, _ = load(str(ANT_1KHZ))
    data = data[:64]  # the EEG inputs; the recording ends with an amplifier disconnection
    whole_stage = Decimator(factor, 64, sfreq)
    whole = whole_stage.process(data)
    chunked = run_chunked(Decimator(factor, 64, sfreq), data, sizes)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=0)
    sos = whole_stage.sos
    filtered, _ = signal.sosfilt(sos, data, axis=1, zi=steady_zi(sos, data[:, 0]))
    reference = filtered[:, factor - 1 :: factor]
    np.testing.assert_allclose(whole, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())


def test_decimator_output_positions_across_chunks() -> None:
    stage = Decimator(5, 1, 5000.0)
    ramp = np.arange(23, dtype=np.float64)
    kept = []
    for a, b in [(0, 3), (3, 3), (3, 11), (11, 12), (12, 23)]:
        out = stage.process(np.ascontiguousarray(ramp[None, a:b]))
        kept.extend(range(a + stage.last_first, b, 5))
        assert out.shape[1] == len(range(a + stage.last_first, b, 5))
    assert kept == [4, 9, 14, 19]
    assert stage.n_in == 23 and stage.n_out == 4
    assert stage.sfreq_out == 1000.0


@pytest.mark.parametrize("tone_hz", [500.0, 620.0, 1300.0, 2400.0])
def test_decimator_rejects_aliases_by_the_designed_amount(tone_hz: float) -> None:
    sfreq = 5000.0
    stage = Decimator(5, 1, sfreq, stop_db=80.0)
    t = np.arange(int(sfreq)) / sfreq
    tone = 100.0 * np.sin(2 * np.pi * tone_hz * t)[None, :]
    out = stage.process(np.ascontiguousarray(tone))[0, 200:]  # skip 0.2 s of start-up
    rms_in = 100.0 / np.sqrt(2)
    attenuation_db = 20 * np.log10(np.sqrt(np.mean(out**2)) / rms_in)
    assert attenuation_db <= -80.0 + 0.5
    # Without the anti-alias filter the tone would come through at full strength.
    assert np.sqrt(np.mean(tone[0, 4::5] ** 2)) > 0.5 * rms_in or tone_hz % 500 == 0


def test_decimator_passband_and_reported_delay() -> None:
    sfreq, factor = 5000.0, 5
    stage = Decimator(factor, 2, sfreq)
    n = int(4 * sfreq)
    t = np.arange(n) / sfreq
    freqs = (10.0, 11.0)
    x = np.ascontiguousarray(np.vstack([np.sin(2 * np.pi * f * t) for f in freqs]))
    out = stage.process(x)
    t_out = t[factor - 1 :: factor]
    settled = t_out > 1.0
    phases = []
    for row, f in enumerate(freqs):
        # Least-squares fit a sin + b cos at the output times: amplitude and phase lag.
        basis = np.column_stack([np.sin(2 * np.pi * f * t_out), np.cos(2 * np.pi * f * t_out)])
        (a, b), *_ = np.linalg.lstsq(basis[settled], out[row, settled], rcond=None)
        assert abs(20 * np.log10(np.hypot(a, b))) <= 0.1 + 1e-3  # pass-band ripple
        lag = -np.arctan2(b, a)
        phases.append(lag)
        assert lag / (2 * np.pi * f) == pytest.approx(stage.phase_delay_s(f), abs=2e-6)
    measured_group = (phases[1] - phases[0]) / (2 * np.pi * (freqs[1] - freqs[0]))
    assert stage.delay_s == pytest.approx(measured_group, rel=0.02)
    assert 1e-3 < stage.delay_s < 5e-3


def test_decimator_recovers_from_nan_and_rejects_bad_settings() -> None:
    data, sfreq, _ = load(str(NEURONE_5KHZ))
    x = np.array(data[:2])
    x[0, 100:120] = np.nan
    stage = Decimator(5, 2, sfreq)
    out = stage.process(np.ascontiguousarray(x))
    assert stage.last_bad == 20
    assert np.isnan(out[0, 20:24]).all() and np.isfinite(out[0, 24:]).all()
    assert np.isfinite(out[1]).all()
    with pytest.raises(SettingsError, match="factor must be an integer >= 1; got 2.5"):
        Decimator(2.5, 2, sfreq)
    with pytest.raises(SettingsError, match="passband_hz must be below"):
        Decimator(5, 2, sfreq, passband_hz=600.0)
    with pytest.raises(ValueError, match=r"Decimator.process expects .*shape \(2, n_samples\)"):
        stage.process(np.zeros((3, 5)))
    passthrough = Decimator(1, 2, sfreq)
    np.testing.assert_array_equal(passthrough.process(data[:2]), data[:2])
    assert passthrough.delay_s == 0.0
    x[1, 5] = np.inf
    through = passthrough.process(np.ascontiguousarray(x))
    assert passthrough.last_bad == 21 and np.isnan(through[1, 5])


# ---------------------------------------------------------------- Envelope


def envelope_reference(x: np.ndarray, sfreq: float, low: float, high: float) -> np.ndarray:
    """Complex demodulation with numpy and scipy.signal.sosfilt, steady start."""
    center, half = (low + high) / 2, (high - low) / 2
    sos = signal.butter(4, half, btype="lowpass", fs=sfreq, output="sos")
    phase = 2 * np.pi * center / sfreq * np.arange(x.shape[1])
    iq = np.concatenate([x * np.cos(phase), -x * np.sin(phase)])
    iq, _ = signal.sosfilt(sos, iq, axis=1, zi=steady_zi(sos, iq[:, 0]))
    n = x.shape[0]
    return 2 * np.hypot(iq[:n], iq[n:])


@given(sizes=st.lists(CHUNK_SIZES, min_size=1, max_size=30))
@HYPOTHESIS
def test_envelope_chunked_equals_whole_and_reference(sizes: list[int]) -> None:
    data, sfreq, _ = load(str(EYES_CLOSED), 20.0)
    whole = Envelope(sfreq, 8.0, 13.0, data.shape[0]).process(data)
    chunked = run_chunked(Envelope(sfreq, 8.0, 13.0, data.shape[0]), data, sizes)
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=0)
    reference = envelope_reference(data, sfreq, 8.0, 13.0)
    np.testing.assert_allclose(whole, reference, rtol=1e-9, atol=1e-9 * np.abs(reference).max())


def test_envelope_reads_sine_amplitude_and_rejects_other_bands() -> None:
    sfreq = 1000.0
    t = np.arange(int(6 * sfreq)) / sfreq
    x = np.vstack([7.0 * np.sin(2 * np.pi * 10.0 * t + 0.3), 7.0 * np.sin(2 * np.pi * 30.0 * t)])
    amplitude = Envelope(sfreq, 8.0, 13.0, 2).process(np.ascontiguousarray(x))
    settled = t > 2.0
    np.testing.assert_allclose(amplitude[0, settled], 7.0, rtol=2e-3)
    assert amplitude[1, settled].max() < 0.01 * 7.0
    edge = Envelope(sfreq, 8.0, 13.0, 1).process(
        np.ascontiguousarray(x[:1] * 0 + 7.0 * np.sin(2 * np.pi * 13.0 * t)[None])
    )
    assert edge[0, settled].mean() == pytest.approx(7.0 / np.sqrt(2), rel=0.01)  # -3 dB edge


def test_envelope_reported_delay_matches_a_burst() -> None:
    sfreq = 1000.0
    stage = Envelope(sfreq, 8.0, 13.0, 1)
    t = np.arange(int(8 * sfreq)) / sfreq
    burst_center_s, width_s = 4.0, 0.4
    burst = np.exp(-0.5 * ((t - burst_center_s) / width_s) ** 2) * np.sin(2 * np.pi * 10.5 * t)
    amplitude = stage.process(np.ascontiguousarray(burst[None]))[0]
    measured = t[np.argmax(amplitude)] - burst_center_s
    assert measured == pytest.approx(stage.delay_s, rel=0.1)
    assert 0.05 < stage.delay_s < 0.5


def test_envelope_recovers_after_nan() -> None:
    data, sfreq, _ = load(str(EYES_CLOSED), 20.0)
    x = np.array(data[:2])
    x[0, 500:520] = np.nan
    stage = Envelope(sfreq, 8.0, 13.0, 2)
    out = stage.process(np.ascontiguousarray(x))
    assert stage.last_bad == 20
    assert np.isnan(out[0, 500:520]).all()
    assert np.isfinite(out[0, 520:]).all() and np.isfinite(out[1]).all()
    clean = Envelope(sfreq, 8.0, 13.0, 2).process(np.ascontiguousarray(data[:2]))
    # Within a few time constants the amplitude is back on the clean track.
    later = slice(520 + int(2 * sfreq), None)
    np.testing.assert_allclose(
        out[0, later], clean[0, later], rtol=0.05, atol=0.05 * clean[0].mean()
    )
    with pytest.raises(SettingsError, match="high_hz must be below the Nyquist"):
        Envelope(sfreq, 8.0, 80.0, 1)
