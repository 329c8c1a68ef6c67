"""Estimators whose analytic signal at the newest sample is one complex FIR of the raw input.

The endpoint-corrected Hilbert transform (``echt``) and our per-person Wiener predictor
(``wiener``) both reduce to ``z[n] = sum_k w[k] x[n - L + 1 + k]`` with complex ``w``; they
differ in how ``w`` is made. Cost per sample: one complex dot product of length L.
"""

from __future__ import annotations

import math

import numpy as np

from closedloop.estimators import kernels
from closedloop.estimators.base import History, PhaseEstimator


class ComplexFIREstimator(PhaseEstimator):
    """Shared state and run-time path: history ring, complex FIR, frequency from phase slope.

    Subclasses set ``self.weights`` (complex, oldest tap first) in ``_init_params``/``fit``
    and may set ``self.correction`` (complex gain applied to the output: bias rotation and
    amplitude scale).
    """

    weights: np.ndarray

    def _setup_fir(self, weights: np.ndarray) -> None:
        self.weights = np.asarray(weights, dtype=np.complex128)
        self._w_re = np.ascontiguousarray(self.weights.real)
        self._w_im = np.ascontiguousarray(self.weights.imag)
        self.n_taps = self.weights.shape[0]
        # phase slope over about a quarter cycle of the band centre gives the frequency
        self.freq_lag = max(1, round(self.sfreq / self.center_hz / 4.0))
        self.history = History(self.n_taps + self.freq_lag + 1)
        self._z_hist = np.zeros(self.freq_lag + 1, dtype=np.complex128)
        self._out_re = np.zeros(0)
        self._out_im = np.zeros(0)
        if not hasattr(self, "correction"):
            self.correction = 1.0 + 0.0j

    def _reset_state(self) -> None:
        if hasattr(self, "history"):
            self.history.clear()
            self._z_hist[:] = 0.0
            self._z_count = 0

    def _ensure_out(self, n: int) -> None:
        if self._out_re.shape[0] < n:
            self._out_re = np.zeros(n)
            self._out_im = np.zeros(n)

    def _process_good(self, x: np.ndarray) -> None:
        hist = self.history
        lag = self.freq_lag
        hist.push(x)
        if hist.count < self.n_taps:
            return
        # outputs for the newest samples only: the answers need the last lag + 1 of them
        n_out = min(x.shape[0], lag + 1, hist.count - self.n_taps + 1)
        self._ensure_out(n_out)
        kernels.complex_fir(
            hist.buf,
            hist.index + hist.size,
            n_out,
            self._w_re,
            self._w_im,
            self._out_re,
            self._out_im,
        )
        z = (self._out_re[:n_out] + 1j * self._out_im[:n_out]) * self.correction
        zh = self._z_hist
        if n_out < zh.shape[0]:
            zh[:-n_out] = zh[n_out:].copy()
        zh[-n_out:] = z
        self._z_count = min(self._z_count + n_out, zh.shape[0])
        z_now = complex(zh[-1])
        self.phase_deg = math.degrees(math.atan2(z_now.imag, z_now.real))
        self.amplitude = abs(z_now)
        self.ready = self.fitted or not self.needs_fit
        if self._z_count > lag:
            dz = z_now * complex(zh[0]).conjugate()
            freq = math.atan2(dz.imag, dz.real) * self.sfreq / (2.0 * math.pi * lag)
            low, high = self.band_hz
            self.frequency_hz = min(max(freq, low), high)
        else:
            self.frequency_hz = self.center_hz

    needs_fit = False

    def analytic_over(self, x: np.ndarray) -> np.ndarray:
        """The estimator's analytic signal at every sample of ``x`` (NaN before the first full
        window), computed at once; equals running ``process`` sample by sample."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full(x.shape[0], np.nan + 0j)
        if x.shape[0] >= self.n_taps:
            out[self.n_taps - 1 :] = (
                np.convolve(x, self.weights[::-1], mode="valid") * self.correction
            )
        return out

    def _baseline_track(self, x: np.ndarray) -> np.ndarray:
        return self.analytic_over(x)
