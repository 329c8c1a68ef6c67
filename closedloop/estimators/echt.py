"""Endpoint-corrected Hilbert transform (Schreglmann et al. 2021, Nature Communications).

The window's FFT is made analytic (negative frequencies zeroed) and multiplied by the
frequency response of a causal 2nd-order Butterworth band-pass; the inverse FFT's last
sample is the estimate at the newest sample. All of that is linear in the window, so it is
precomputed into one complex FIR. The remaining systematic phase offset is calibrated on the
baseline against the offline truth (as Osmers and Kolossa propose for ecHT).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.signal import butter, freqz

from closedloop.estimators.base import bias_from_truth
from closedloop.estimators.linear import ComplexFIREstimator
from closedloop.groundtruth import interior_analytic


def echt_weights(n: int, sfreq: float, band_hz: tuple[float, float], order: int = 1) -> np.ndarray:
    """Complex FIR (oldest tap first) equal to ecHT's value at the last sample of an n-window."""
    mask = np.zeros(n)
    mask[0] = 1.0
    mask[1 : (n + 1) // 2] = 2.0
    if n % 2 == 0:
        mask[n // 2] = 1.0
    b, a = butter(order, band_hz, btype="bandpass", fs=sfreq)
    _, h = freqz(b, a, worN=np.arange(n) * sfreq / n, fs=sfreq)
    gain = mask * h
    # response at the last sample to a unit impulse at each position
    k = np.arange(n)
    steer = np.exp(2j * np.pi * k * (n - 1) / n)
    dft = np.exp(-2j * np.pi * np.outer(k, np.arange(n)) / n)
    return (gain * steer) @ dft / n


class ECHTEstimator(ComplexFIREstimator):
    """ecHT over the last ``window_s`` seconds; ``calibrate_bias`` uses the baseline.

    Parameters (``**params``)
    -------------------------
    window_s : float
        Analysis window, s (default 0.5).
    filter_order : int
        Butterworth order (1 gives the paper's 2nd-order band-pass).
    calibrate_bias : bool
        Learn the phase offset and amplitude scale from the baseline in ``fit`` (default True).
    """

    name = "echt"
    defaults: ClassVar[dict[str, Any]] = {
        "window_s": 0.5,
        "filter_order": 1,
        "calibrate_bias": True,
    }

    def _init_params(self) -> None:
        window_s = self._param_number("window_s", 0.05, 10.0)
        order = int(self._param_number("filter_order", 1, 4, integer=True))
        n = max(8, round(window_s * self.sfreq))
        self.correction = 1.0 + 0.0j
        self._setup_fir(echt_weights(n, self.sfreq, self.band_hz, order))

    def fit(self, baseline: np.ndarray) -> None:
        x = self._check_baseline(baseline)
        if self.params["calibrate_bias"]:
            self.correction = 1.0 + 0.0j
            z_est = self.analytic_over(x)
            z_true = interior_analytic(x, self.sfreq, self.band_hz)
            self.correction = bias_from_truth(z_est, z_true)
        self.fitted = True
        self._note_baseline_amplitude(x)
