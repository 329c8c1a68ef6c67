"""Educated Temporal Prediction (Shirinpour et al. 2020, J Neural Eng).

Training on the baseline learns the person's typical cycle length: the median interval
between peaks of the offline ground truth. At run time the last ``window_s`` is band-passed
with a zero-phase FIR inside the window, the newest peak before the filter's edge is found,
and the phase advances linearly from it at the learnt cycle length. The remaining systematic
offset is learnt on the baseline too (the paper's training step tunes the prediction to the
person's data).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.signal import firwin

from closedloop.angles import wrap_deg
from closedloop.errors import DataError, ProtocolError
from closedloop.estimators import kernels
from closedloop.estimators.base import History, PhaseEstimator, bias_from_truth, track
from closedloop.groundtruth import interior_analytic


class ETPEstimator(PhaseEstimator):
    """ETP: last peak in a zero-phase filtered (detrended) window plus the trained cycle length.

    Parameters (``**params``)
    -------------------------
    window_s : float
        Analysis window (default 0.5 s).
    edge_s : float
        Half length of the in-window FIR; the newest ``edge_s`` cannot be filtered and is
        bridged by prediction (default 0.064 s).
    calibrate_bias : bool
        Learn the phase offset on the baseline (default True).
    """

    name = "etp"
    defaults: ClassVar[dict[str, Any]] = {"window_s": 0.5, "edge_s": 0.064, "calibrate_bias": True}
    needs_fit = True

    def _init_params(self) -> None:
        window_s = self._param_number("window_s", 0.1, 10.0)
        edge_s = self._param_number("edge_s", 0.0, 1.0)
        self.n_window = round(window_s * self.sfreq)
        self.edge = round(edge_s * self.sfreq)
        n_taps = 2 * self.edge + 1
        self.n_valid = self.n_window - n_taps + 1
        if self.n_valid * 2 < self.sfreq / self.band_hz[0]:
            raise ProtocolError(
                f"estimator 'etp': window_s = {window_s:g} s leaves too little filtered signal to "
                f"find a peak at {self.band_hz[0]:g} Hz; use a longer window_s."
            )
        self.fir = (
            firwin(n_taps, self.band_hz, pass_zero=False, fs=self.sfreq)
            if n_taps > 1
            else np.ones(1)
        )
        self.history = History(self.n_window)
        self._y = np.zeros(self.n_valid)
        ramp = np.linspace(-1.0, 1.0, self.n_window)
        self._ramp = ramp / np.linalg.norm(ramp)
        self._detrended = np.zeros(self.n_window)
        self.period_s = 1.0 / self.center_hz
        self.offset_deg = 0.0

    def _reset_state(self) -> None:
        self.history.clear()

    def _process_good(self, x: np.ndarray) -> None:
        self.history.push(x)
        if self.history.count < self.n_window:
            return
        y = self._y
        window = self.history.last(self.n_window)
        # remove the window's offset and linear drift (a short FIR does not reject them)
        w = self._detrended
        np.subtract(window, window.mean(), out=w)
        w -= self._ramp * (self._ramp @ window)
        kernels.fir_valid(w, self.fir, y)
        inner = y[1:-1]
        peaks = np.flatnonzero((inner > y[:-2]) & (inner >= y[2:]))
        if peaks.shape[0] == 0:
            self.ready = False
            return
        p = peaks[-1] + 1
        # parabolic refinement of the peak between samples
        denom = y[p - 1] - 2.0 * y[p] + y[p + 1]
        frac = 0.5 * (y[p - 1] - y[p + 1]) / denom if denom < 0 else 0.0
        since_s = (self.n_valid - 1 - p - frac + self.edge) / self.sfreq
        self.phase_deg = wrap_deg(360.0 * since_s / self.period_s + self.offset_deg)
        self.amplitude = float(y[p])
        self.frequency_hz = 1.0 / self.period_s
        self.ready = True

    def fit(self, baseline: np.ndarray) -> None:
        x = self._check_baseline(baseline)
        z = interior_analytic(x, self.sfreq, self.band_hz)
        phase = np.angle(z[np.isfinite(z)])
        # peaks of the truth: phase wraps from positive through 0 (rising phase crosses 0)
        cross = np.flatnonzero((phase[:-1] < 0) & (phase[1:] >= 0))
        if cross.shape[0] < 5:
            raise DataError(
                f"the baseline has only {cross.shape[0]} cycles in {self.band_hz[0]:g}-"
                f"{self.band_hz[1]:g} Hz; 'etp' needs a baseline with the rhythm present."
            )
        frac = -phase[cross] / (phase[cross + 1] - phase[cross])
        times = (cross + frac) / self.sfreq
        intervals = np.diff(times)
        low, high = self.band_hz
        intervals = intervals[(intervals > 1.0 / high) & (intervals < 1.0 / low)]
        if intervals.shape[0] >= 3:
            self.period_s = float(np.median(intervals))
        self.offset_deg = 0.0
        if self.params["calibrate_bias"]:
            z_est = track(self, x)
            gain = bias_from_truth(z_est, z)
            self.offset_deg = math.degrees(math.atan2(gain.imag, gain.real))
            self.reset()
        self.fitted = True
        self._note_baseline_amplitude(x)
