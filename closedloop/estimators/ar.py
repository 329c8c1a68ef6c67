"""AR forward prediction (Zrenner et al. 2018, Brain Stimulation).

At every update: the last ``window_s`` of the raw signal is band-passed with a linear-phase
FIR whose half length is the removed edge (``edge_s``), an AR model is fitted to the valid
part (Yule-Walker via Levinson-Durbin, or Burg), the series is predicted forward over the
edge and ``ahead_s`` beyond the newest sample, and the phase at the newest sample is read
from the Hilbert transform of the extended series. Sizes are given in seconds, and the AR
order at Zrenner's 1 kHz, so they scale to the working rate.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.fft import fft, ifft, next_fast_len
from scipy.signal import firwin

from closedloop.errors import ProtocolError
from closedloop.estimators import kernels
from closedloop.estimators.base import History, PhaseEstimator, bias_from_truth, track
from closedloop.groundtruth import interior_analytic

REFERENCE_SFREQ = 1000.0


class AREstimator(PhaseEstimator):
    """Zrenner-style AR forward prediction (the window is detrended before filtering).

    Parameters (``**params``)
    -------------------------
    window_s : float
        Analysis window (default 0.5 s).
    edge_s : float
        Edge removed after filtering = half the FIR length (default 0.064 s).
    ahead_s : float
        Prediction beyond the newest sample, so that the Hilbert edge falls after it
        (default 0.064 s; with the edge, 128 ms are predicted).
    order : int
        AR order at 1 kHz (default 30); scaled by ``sfreq / 1000`` (at least 2).
    ar_method : str
        ``"yule-walker"`` (default) or ``"burg"``.
    calibrate_bias : bool
        Learn a phase offset on the baseline (default False: the paper's method).
    """

    name = "ar"
    defaults: ClassVar[dict[str, Any]] = {
        "window_s": 0.5,
        "edge_s": 0.064,
        "ahead_s": 0.064,
        "order": 30,
        "ar_method": "yule-walker",
        "calibrate_bias": False,
    }

    def _init_params(self) -> None:
        window_s = self._param_number("window_s", 0.1, 10.0)
        edge_s = self._param_number("edge_s", 0.0, 1.0)
        ahead_s = self._param_number("ahead_s", 0.0, 1.0)
        order_ref = self._param_number("order", 1, 500, integer=True)
        method = str(self.params["ar_method"]).lower()
        if method not in ("yule-walker", "burg"):
            raise ProtocolError(
                f"estimator 'ar' parameter 'ar_method' = {self.params['ar_method']!r} is not "
                "known; accepted: 'yule-walker', 'burg'."
            )
        self.ar_method = method
        self.n_window = round(window_s * self.sfreq)
        self.edge = round(edge_s * self.sfreq)
        self.n_taps = 2 * self.edge + 1
        self.n_ahead = round(ahead_s * self.sfreq)
        self.order = max(2, round(order_ref * self.sfreq / REFERENCE_SFREQ))
        self.n_valid = self.n_window - self.n_taps + 1
        if self.n_valid < 2 * self.order + 2:
            raise ProtocolError(
                f"estimator 'ar': a {window_s:g} s window minus {2 * edge_s:g} s of edges leaves "
                f"{self.n_valid} samples at {self.sfreq:g} Hz, too few for AR order {self.order}; "
                "use a longer window_s or a shorter edge_s."
            )
        if self.n_taps > 1:
            self.fir = firwin(self.n_taps, self.band_hz, pass_zero=False, fs=self.sfreq)
        else:
            self.fir = np.ones(1)
        self.history = History(self.n_window)
        self.n_ext = self.n_valid + self.edge + self.n_ahead
        self.now_index = self.n_valid + self.edge - 1
        self.n_fft = next_fast_len(self.n_ext + self.n_ahead)
        self._y = np.zeros(self.n_ext)
        self._r = np.zeros(self.order + 1)
        self._a = np.zeros(self.order)
        self._tmp = np.zeros(self.order)
        self._fb = np.zeros((2, self.n_valid))
        self._h = np.zeros(self.n_fft)
        self._h[0] = 1.0
        self._h[1 : (self.n_fft + 1) // 2] = 2.0
        if self.n_fft % 2 == 0:
            self._h[self.n_fft // 2] = 1.0
        ramp = np.linspace(-1.0, 1.0, self.n_window)
        self._ramp = ramp / np.linalg.norm(ramp)
        self._detrended = np.zeros(self.n_window)
        self.freq_lag = max(1, round(self.sfreq / self.center_hz / 4.0))
        self.correction = 1.0 + 0.0j

    def _reset_state(self) -> None:
        self.history.clear()

    def _analytic_now(self) -> tuple[complex, complex]:
        """Analytic value at the newest sample and ``freq_lag`` samples before it."""
        window = self.history.last(self.n_window)
        # remove the window's offset and linear drift (the short FIR does not reject them)
        w = self._detrended
        np.subtract(window, window.mean(), out=w)
        w -= self._ramp * (self._ramp @ window)
        window = w
        y = self._y
        kernels.fir_valid(window, self.fir, y[: self.n_valid])
        valid = y[: self.n_valid]
        if self.ar_method == "burg":
            kernels.burg(valid, self._a, self._fb[0], self._fb[1], self._tmp)
        else:
            kernels.autocorr(valid, self._r)
            kernels.levinson(self._r, self._a, self._tmp)
        kernels.ar_extend(y, self.n_valid, self._a)
        spec = fft(y, self.n_fft)
        spec *= self._h
        z = ifft(spec)
        return complex(z[self.now_index]), complex(z[self.now_index - self.freq_lag])

    def _process_good(self, x: np.ndarray) -> None:
        self.history.push(x)
        if self.history.count < self.n_window:
            return
        z_now, z_then = self._analytic_now()
        z_now *= self.correction
        self.phase_deg = math.degrees(math.atan2(z_now.imag, z_now.real))
        self.amplitude = abs(z_now)
        dz = z_now * (z_then * self.correction).conjugate()
        freq = math.atan2(dz.imag, dz.real) * self.sfreq / (2.0 * math.pi * self.freq_lag)
        self.frequency_hz = min(max(freq, self.band_hz[0]), self.band_hz[1])
        self.ready = True

    def fit(self, baseline: np.ndarray) -> None:
        x = self._check_baseline(baseline)
        if self.params["calibrate_bias"]:
            self.correction = 1.0 + 0.0j
            z_est = track(self, x)
            self.correction = bias_from_truth(z_est, interior_analytic(x, self.sfreq, self.band_hz))
            self.reset()
        self.fitted = True
        self._note_baseline_amplitude(x)
