"""The feedback meter: band power, a ratio or an asymmetry, smoothed and z-scored."""

from __future__ import annotations

import math

import numpy as np

from closedloop.dsp import BandPower
from closedloop.protocol import FeedbackSettings

__all__ = ["FEEDBACK_STEP_S", "FeedbackMeter"]

#: Feedback values are recomputed at most this often (seconds of data).
FEEDBACK_STEP_S = 0.05


class FeedbackMeter:
    """The protocol's feedback value from the derived signals at the working rate.

    Parameters
    ----------
    settings : FeedbackSettings
        ``measure`` (power, ratio, asymmetry), window, smoothing, z-scoring, the ratio's band.
    sfreq : float
        The working rate, Hz.
    n_derived : int
        Derived signals (2 for an asymmetry).
    band_hz : (float, float)
        The band whose power is measured (:meth:`set_band` moves it to the individual band).

    Attributes
    ----------
    value : float
        The current feedback value: NaN until the first window is full (and, when z-scored,
        during the baseline).
    """

    def __init__(self, settings: FeedbackSettings, sfreq: float, n_derived: int, band_hz: tuple[float, float]) -> None:
        self.settings = settings
        self.sfreq = float(sfreq)
        self.n_derived = int(n_derived)
        self.band_hz = band_hz
        self.step_n = max(1, int(round(FEEDBACK_STEP_S * self.sfreq)))
        self.reset()

    def reset(self) -> None:
        self.bandpower = BandPower(self.sfreq, self.settings.window_s, self.n_derived)
        self._since = 0
        self._smooth = math.nan
        self._mean = 0.0
        self._std = 1.0
        self._seen_s = 0.0
        self.value = math.nan

    def set_band(self, band_hz: tuple[float, float]) -> None:
        self.band_hz = band_hz

    def _measure(self, bandpower: BandPower) -> float:
        """Power, ratio or asymmetry of the band over the power window (NaN if undefined)."""
        fb = self.settings
        power = bandpower.power(*self.band_hz)
        with np.errstate(divide="ignore", invalid="ignore"):
            if fb.measure == "asymmetry":
                return float(np.log(power[0]) - np.log(power[1]))
            if fb.measure == "ratio":
                return float(np.mean(power) / np.mean(bandpower.power(*fb.ratio_band_hz)))
            return float(np.mean(power))

    def _smoothed(self, previous: float, value: float, step_s: float) -> float:
        tau = self.settings.smoothing_s
        if math.isnan(previous) or tau <= 0:
            return value
        return previous + (1.0 - math.exp(-step_s / tau)) * (value - previous)

    def calibrate(self, base: np.ndarray) -> None:
        """The z-score reference: smoothed values over the baseline, in the (final) band."""
        values = self._reference(base)
        if values.size >= 2:
            self._mean = float(values.mean())
            self._std = float(values.std()) or 1.0

    def _reference(self, base: np.ndarray) -> np.ndarray:
        fb = self.settings
        bandpower = BandPower(self.sfreq, fb.window_s, self.n_derived)
        step = self.step_n
        start = int(math.ceil(fb.window_s * self.sfreq))
        values, smooth = [], math.nan
        bandpower.process(np.ascontiguousarray(base[:, :start]))
        for i in range(start, base.shape[1] - step + 1, step):
            bandpower.process(np.ascontiguousarray(base[:, i : i + step]))
            value = self._measure(bandpower)
            if math.isfinite(value):
                smooth = self._smoothed(smooth, value, step / self.sfreq)
                values.append(smooth)
        if math.isfinite(smooth):
            self._smooth = smooth
        return np.asarray(values)

    def process(self, derived: np.ndarray, collecting: bool) -> float:
        """Take a chunk of the derived signals; returns :attr:`value`. ``collecting``: during
        the baseline (a z-scored value is not defined yet)."""
        fb = self.settings
        self.bandpower.process(derived)
        m = derived.shape[1]
        self._since += m
        self._seen_s += m / self.sfreq
        if self._since < self.step_n or self._seen_s < fb.window_s:
            return self.value
        step_s = self._since / self.sfreq
        self._since = 0
        value = self._measure(self.bandpower)
        if not math.isfinite(value):
            return self.value
        self._smooth = self._smoothed(self._smooth, value, step_s)
        if collecting:
            self.value = math.nan if fb.zscore else self._smooth
        elif fb.zscore:
            self.value = (self._smooth - self._mean) / self._std
        else:
            self.value = self._smooth
        return self.value
