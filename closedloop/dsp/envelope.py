"""Causal instantaneous band amplitude (kernel in ``closedloop._dsp_envelope``)."""

from __future__ import annotations

import numpy as np
from scipy import signal

from closedloop._dsp_envelope import EnvelopeKernel
from closedloop.dsp._checks import band, check_chunk, chunk_error, positive_float, positive_int
from closedloop.dsp.sosfilt import sos_group_delay_s


class Envelope:
    """Instantaneous amplitude of the ``low_hz``-``high_hz`` band, causal, per channel.

    Complex demodulation: the signal is multiplied by ``exp(-i 2 pi fc t)`` with
    ``fc = (low_hz + high_hz) / 2`` and low-passed by a Butterworth filter of ``order`` with
    cutoff ``(high_hz - low_hz) / 2``. Together that is a complex band-pass with -3 dB edges at
    ``low_hz`` and ``high_hz``, whose magnitude doubled is the band amplitude: a sine of
    amplitude A in the band reads A (same units as the input, µV in the engine).

    The amplitude lags the signal by the low-pass group delay, ``delay_s`` (at the band centre;
    it grows towards the band edges). The image of the band at ``-fc`` is rejected by the
    low-pass at ``low_hz + fc``; for narrow bands (alpha, mu, beta) that is > 60 dB, for bands
    wider than about twice ``low_hz`` the amplitude ripples at twice the signal frequency.

    Parameters
    ----------
    sfreq : float
        Sampling rate, Hz.
    low_hz, high_hz : float
        Band edges, ``0 < low_hz < high_hz < sfreq / 2``.
    n_channels : int
        Channels per chunk.
    order : int
        Butterworth order of the low-pass.
    """

    def __init__(
        self, sfreq: float, low_hz: float, high_hz: float, n_channels: int, *, order: int = 4
    ) -> None:
        self.sfreq = positive_float(sfreq, "sfreq")
        self.low_hz, self.high_hz = band(low_hz, high_hz, self.sfreq)
        self.n_channels = positive_int(n_channels, "n_channels")
        self.order = positive_int(order, "order")
        self.center_hz = (self.low_hz + self.high_hz) / 2.0
        self.cutoff_hz = (self.high_hz - self.low_hz) / 2.0
        self.sos = np.ascontiguousarray(
            signal.butter(self.order, self.cutoff_hz, btype="lowpass", fs=self.sfreq, output="sos")
        )
        self.zi_unit = np.ascontiguousarray(signal.sosfilt_zi(self.sos))
        # State (n_sections, 2, 2 * n_channels): in-phase lanes, then quadrature lanes.
        self.zi = np.zeros((self.sos.shape[0], 2, 2 * self.n_channels), dtype=np.float64)
        self.pending = np.ones(self.n_channels, dtype=np.uint8)
        self._work = np.zeros(2 * self.n_channels, dtype=np.float64)
        self.omega = 2.0 * np.pi * self.center_hz / self.sfreq
        self._kernel = EnvelopeKernel(
            self.sos, self.zi_unit, self.zi, self.pending, self._work, self.omega
        )
        self.delay_s = float(sos_group_delay_s(self.sos, 0.0, self.sfreq)[0])
        self.reset()

    def reset(self) -> None:
        """Back to the initial state; the next sample restarts the filter at its steady state."""
        self.zi[:] = 0.0
        self.pending[:] = 1
        self.n_in = 0
        self.last_bad = 0
        self.n_bad = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Band amplitude (n_channels, n_samples) of ``chunk``; NaN where the input is bad."""
        chunk = check_chunk(chunk, self.n_channels, "Envelope.process")
        out = np.empty(chunk.shape, dtype=np.float64)
        try:
            bad = self._kernel.run(chunk, out, self.n_in)
        except (ValueError, TypeError):
            raise chunk_error(chunk, self.n_channels, "Envelope.process") from None
        self.n_in += chunk.shape[1]
        self.last_bad = bad
        self.n_bad += bad
        return out
