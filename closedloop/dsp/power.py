"""Windowed spectral power (Welch) for neurofeedback, and the individual alpha peak."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from closedloop.dsp._checks import SettingsError, band, positive_float, positive_int
from closedloop.dsp.ringbuffer import RingBuffer
from closedloop.errors import DataError


def welch_psd(
    data: np.ndarray, sfreq: float, nperseg: int, noverlap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of ``data`` (n_channels, n) along the last axis: Hann window, mean removed per
    segment, one-sided density (units^2 / Hz), as ``scipy.signal.welch`` with those settings."""
    window = signal.get_window("hann", nperseg)
    step = nperseg - noverlap
    segments = sliding_window_view(data, nperseg, axis=-1)[..., ::step, :]
    segments = segments - segments.mean(axis=-1, keepdims=True)
    spectra = np.fft.rfft(segments * window, axis=-1)
    psd = (spectra.real**2 + spectra.imag**2).mean(axis=-2)
    psd /= sfreq * np.sum(window**2)
    if nperseg % 2:
        psd[..., 1:] *= 2.0
    else:
        psd[..., 1:-1] *= 2.0
    return np.fft.rfftfreq(nperseg, 1.0 / sfreq), psd


class BandPower:
    """Welch power spectrum over the newest ``window_s`` seconds, per channel.

    Parameters
    ----------
    sfreq : float
        Sampling rate, Hz.
    window_s : float
        Length of the analysed window, seconds.
    n_channels : int
        Channels per chunk.
    segment_s : float, optional
        Welch segment length (default: the window, up to 1 s); 50 % overlap, Hann taper.

    Notes
    -----
    Until ``segment_s`` of data have arrived, and while a NaN or Inf lies in the window,
    ``power`` and ``spectrum`` return NaN. ``last_bad`` counts non-finite values per chunk.
    """

    def __init__(
        self, sfreq: float, window_s: float, n_channels: int, *, segment_s: float | None = None
    ) -> None:
        self.sfreq = positive_float(sfreq, "sfreq")
        self.window_s = positive_float(window_s, "window_s")
        self.n_channels = positive_int(n_channels, "n_channels")
        self.n_window = round(self.window_s * self.sfreq)
        if segment_s is None:
            segment_s = min(self.window_s, 1.0)
        self.segment_s = positive_float(segment_s, "segment_s")
        self.nperseg = round(self.segment_s * self.sfreq)
        if self.nperseg < 8:
            raise SettingsError(
                f"segment_s must hold at least 8 samples at {self.sfreq:g} Hz; got"
                f" {self.segment_s:g} s."
            )
        if self.nperseg > self.n_window:
            raise SettingsError(
                f"segment_s ({self.segment_s:g} s) must not exceed window_s ({self.window_s:g} s)."
            )
        self.noverlap = self.nperseg // 2
        self.freqs = np.fft.rfftfreq(self.nperseg, 1.0 / self.sfreq)
        self._buffer = RingBuffer(self.n_channels, self.n_window)
        self.reset()

    def reset(self) -> None:
        """Forget the window."""
        self._buffer.reset()
        self._cache_at = -1
        self._psd = np.full((self.n_channels, len(self.freqs)), np.nan)
        self.last_bad = 0
        self.n_bad = 0

    def process(self, chunk: np.ndarray) -> None:
        """Add ``chunk`` (n_channels, n_samples) to the window."""
        self._buffer.write(chunk)
        bad = chunk.size - int(np.count_nonzero(np.isfinite(chunk))) if chunk.size else 0
        self.last_bad = bad
        self.n_bad += bad

    @property
    def n_available(self) -> int:
        """Samples currently in the window."""
        return self._buffer.n_available

    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """``(freqs, psd)``: Welch density (units^2/Hz), psd shape (n_channels, n_freqs)."""
        if self._cache_at != self._buffer.n_written:
            self._cache_at = self._buffer.n_written
            data = self._buffer.latest(self.n_window)
            if data.shape[1] < self.nperseg:
                self._psd = np.full((self.n_channels, len(self.freqs)), np.nan)
            else:
                usable = (data.shape[1] - self.noverlap) // (self.nperseg - self.noverlap)
                n = usable * (self.nperseg - self.noverlap) + self.noverlap
                _, self._psd = welch_psd(data[:, -n:], self.sfreq, self.nperseg, self.noverlap)
        return self.freqs, self._psd.copy()

    def power(self, low_hz: float, high_hz: float) -> np.ndarray:
        """Power in ``[low_hz, high_hz]`` (density summed over those bins times the bin width),
        per channel, units^2."""
        low, high = band(low_hz, high_hz, self.sfreq)
        freqs, psd = self.spectrum()
        mask = (freqs >= low) & (freqs <= high)
        if not mask.any():
            raise SettingsError(
                f"no frequency bin between {low:g} and {high:g} Hz at"
                f" {freqs[1]:g} Hz resolution; widen the band or lengthen segment_s."
            )
        return psd[:, mask].sum(axis=1) * (freqs[1] - freqs[0])


def individual_peak_hz(
    signal_1d: np.ndarray,
    sfreq: float,
    search_hz: tuple[float, float] = (7.0, 14.0),
    *,
    segment_s: float = 4.0,
) -> float:
    """Frequency of the spectral peak (individual alpha peak) in ``search_hz``, or NaN.

    Welch spectrum (Hann, segments of ``segment_s`` or the whole signal if shorter, 50 %
    overlap); the 1/f background is a line fitted to log power against log frequency over
    2-40 Hz outside the search range; the peak is the largest local maximum above that line
    inside the range, refined by a parabola through the log power of the three bins around it.
    A peak counts only if it rises above the background by more than three times the spread
    of the fit residuals (robust estimate), and by at least 0.05 (12 %).

    Returns
    -------
    float
        The peak frequency in Hz; NaN when the range holds no peak above the background.

    Raises
    ------
    DataError
        Shorter than 2 s, or containing NaN or Inf.
    """
    sfreq = positive_float(sfreq, "sfreq")
    if len(search_hz) != 2:
        raise SettingsError(f"search_hz must be (low_hz, high_hz); got {search_hz!r}.")
    low, high = band(search_hz[0], search_hz[1], sfreq)
    x = np.asarray(signal_1d, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"individual_peak_hz expects a 1-D signal; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise DataError("the signal for the individual peak contains NaN or Inf.")
    minimum = round(2.0 * sfreq)
    if x.size < minimum:
        raise DataError(
            f"the individual peak needs at least 2 s of signal; got {x.size / sfreq:.2f} s."
        )
    nperseg = min(x.size, round(positive_float(segment_s, "segment_s") * sfreq))
    freqs, psd = signal.welch(x, fs=sfreq, nperseg=nperseg, noverlap=nperseg // 2)
    log_psd = np.log10(np.maximum(psd, np.finfo(float).tiny))
    positive = np.maximum(freqs, freqs[1])
    fit = (freqs >= 2.0) & (freqs <= min(40.0, sfreq / 2)) & ((freqs < low) | (freqs > high))
    if fit.sum() >= 3:
        slope, intercept = np.polyfit(np.log10(freqs[fit]), log_psd[fit], 1)
        residual = log_psd - (intercept + slope * np.log10(positive))
        spread = 1.4826 * np.median(np.abs(residual[fit] - np.median(residual[fit])))
    else:
        residual = log_psd - np.median(log_psd)
        spread = 0.0
    threshold = max(0.05, 3.0 * spread)
    best = None
    for i in np.flatnonzero((freqs >= low) & (freqs <= high)):
        if not 0 < i < len(freqs) - 1:
            continue
        is_peak = residual[i] > residual[i - 1] and residual[i] >= residual[i + 1]
        if is_peak and residual[i] > threshold and (best is None or residual[i] > residual[best]):
            best = i
    if best is None:
        return float("nan")
    a, b, c = residual[best - 1], residual[best], residual[best + 1]
    denominator = a - 2 * b + c
    shift = 0.5 * (a - c) / denominator if denominator != 0 else 0.0
    return float(freqs[best] + np.clip(shift, -0.5, 0.5) * (freqs[1] - freqs[0]))
