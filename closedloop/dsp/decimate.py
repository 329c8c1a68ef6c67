"""Streaming decimation by an integer factor (kernel in ``closedloop._decimate``)."""

from __future__ import annotations

import numpy as np
from scipy import signal

from closedloop._decimate import DecimateKernel
from closedloop.dsp._checks import (
    SettingsError,
    check_chunk,
    chunk_error,
    positive_float,
    positive_int,
)
from closedloop.dsp.sosfilt import sos_group_delay_s, sos_phase_delay_s


class Decimator:
    """Anti-alias IIR filter then keep every ``factor``-th sample, across chunks.

    The anti-alias filter is elliptic, designed with ``scipy.signal.ellipord`` so that the
    pass band (up to ``passband_hz``, default 0.8 x the new Nyquist frequency) ripples by at
    most ``ripple_db`` and everything at or above the new Nyquist frequency is attenuated by at
    least ``stop_db``. Output sample ``k`` (counted from the first chunk after construction or
    ``reset``) is the filtered input sample ``k * factor + offset``, with ``offset = factor - 1``:
    a chunk whose length is a multiple of ``factor`` yields its own newest sample.

    Parameters
    ----------
    factor : int
        Decimation factor (1 passes the chunk through unchanged).
    n_channels : int
        Channels per chunk.
    sfreq : float
        Input sampling rate, Hz.
    passband_hz : float, optional
        Edge of the pass band; must be below ``sfreq / factor / 2``.
    stop_db, ripple_db : float
        Stop-band attenuation and pass-band ripple of the anti-alias filter, dB.

    Attributes
    ----------
    sfreq_out : float
        Output rate, Hz.
    delay_s : float
        Group delay of the anti-alias filter at 0 Hz, seconds (nearly constant over the EEG
        bands; see ``group_delay_s`` and ``phase_delay_s`` for a given frequency).
    sos : array
        The anti-alias filter (None when ``factor == 1``).
    last_first : int
        Index, within the last chunk, of its first kept sample (the others follow every
        ``factor`` samples).
    last_bad : int
        Non-finite input values in the last chunk (their kept outputs are NaN).
    """

    def __init__(
        self,
        factor: int,
        n_channels: int,
        sfreq: float,
        *,
        passband_hz: float | None = None,
        stop_db: float = 80.0,
        ripple_db: float = 0.1,
    ) -> None:
        self.factor = positive_int(factor, "factor")
        self.n_channels = positive_int(n_channels, "n_channels")
        self.sfreq = positive_float(sfreq, "sfreq")
        self.sfreq_out = self.sfreq / self.factor
        self.stop_db = positive_float(stop_db, "stop_db")
        self.ripple_db = positive_float(ripple_db, "ripple_db")
        nyquist_out = self.sfreq_out / 2.0
        if passband_hz is None:
            passband_hz = 0.8 * nyquist_out
        self.passband_hz = positive_float(passband_hz, "passband_hz")
        if self.factor > 1 and self.passband_hz >= nyquist_out:
            raise SettingsError(
                f"passband_hz must be below the output Nyquist frequency ({nyquist_out:g} Hz);"
                f" got {self.passband_hz:g} Hz."
            )
        self.offset = self.factor - 1
        if self.factor == 1:
            self.sos = None
            self.delay_s = 0.0
        else:
            order, edge = signal.ellipord(
                self.passband_hz, nyquist_out, self.ripple_db, self.stop_db, fs=self.sfreq
            )
            self.sos = np.ascontiguousarray(
                signal.ellip(order, self.ripple_db, self.stop_db, edge, fs=self.sfreq, output="sos")
            )
            self.zi_unit = np.ascontiguousarray(signal.sosfilt_zi(self.sos))
            self.zi = np.zeros((self.sos.shape[0], 2, self.n_channels), dtype=np.float64)
            self.pending = np.ones(self.n_channels, dtype=np.uint8)
            self._work = np.zeros(self.n_channels, dtype=np.float64)
            self._kernel = DecimateKernel(self.sos, self.zi_unit, self.zi, self.pending, self._work)
            self.delay_s = float(sos_group_delay_s(self.sos, 0.0, self.sfreq)[0])
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: sample phase 0, filter restarted by the next sample."""
        self.n_in = 0
        self.n_out = 0
        self.last_first = 0
        self.last_bad = 0
        self.n_bad = 0
        if self.sos is not None:
            self.zi[:] = 0.0
            self.pending[:] = 1

    def group_delay_s(self, freq_hz: float) -> float:
        """Group delay of the anti-alias filter at ``freq_hz``, seconds."""
        if self.sos is None:
            return 0.0
        return float(sos_group_delay_s(self.sos, freq_hz, self.sfreq)[0])

    def phase_delay_s(self, freq_hz: float) -> float:
        """Phase delay of the anti-alias filter at ``freq_hz`` (a sine comes out late by this)."""
        if self.sos is None:
            return 0.0
        return float(sos_phase_delay_s(self.sos, freq_hz, self.sfreq)[0])

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Filter and downsample ``chunk`` (n_channels, n_samples); returns (n_channels, n_out)."""
        chunk = check_chunk(chunk, self.n_channels, "Decimator.process")
        n = chunk.shape[1]
        factor = self.factor
        first = (self.offset - self.n_in) % factor
        n_out = (n - first + factor - 1) // factor if n > first else 0
        self.last_first = first
        self.n_in += n
        self.n_out += n_out
        if self.sos is None:
            out = chunk.copy()
            finite = np.isfinite(out)
            bad = out.size - int(np.count_nonzero(finite))
            if bad:
                out[~finite] = np.nan
            self.last_bad = bad
            self.n_bad += bad
            return out
        out = np.empty((self.n_channels, n_out), dtype=np.float64)
        try:
            bad = self._kernel.run(chunk, out, first, factor)
        except (ValueError, TypeError):
            raise chunk_error(chunk, self.n_channels, "Decimator.process") from None
        self.last_bad = bad
        self.n_bad += bad
        return out
