"""Causal IIR filtering in second-order sections, and the filter designs the engine uses.

Kernel: ``closedloop._sosfilt`` (direct form II transposed, every channel, state across chunks).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from closedloop._sosfilt import SosKernel
from closedloop.dsp._checks import (
    SettingsError,
    band,
    check_chunk,
    chunk_error,
    positive_float,
    positive_int,
    sos_array,
)

INITS = ("steady", "zero")


class SOSFilter:
    """Streaming IIR filter over several channels, state kept across chunks.

    Parameters
    ----------
    sos : array, shape (n_sections, 6)
        Second-order sections (as from ``scipy.signal.butter(..., output="sos")``).
    n_channels : int
        Channels per chunk.
    init : {"steady", "zero"}
        Initial state: "steady" starts each channel as if its first sample had been there for
        ever (no start-up transient from a DC offset); "zero" starts from rest, like
        ``scipy.signal.sosfilt`` without ``zi``.

    Attributes
    ----------
    zi : ndarray, shape (n_sections, 2, n_channels)
        Filter state (channels innermost, the kernel's layout).
    last_bad, n_bad : int
        Non-finite values in the last chunk, and since construction or ``reset``.

    Notes
    -----
    A NaN or Inf input gives NaN at that sample; the channel restarts from the steady state of
    its next finite sample (whatever ``init`` is).
    """

    def __init__(self, sos: np.ndarray, n_channels: int, init: str = "steady") -> None:
        self.sos = sos_array(sos)
        self.n_channels = positive_int(n_channels, "n_channels")
        if init not in INITS:
            raise SettingsError(f"init must be one of {', '.join(INITS)}; got {init!r}.")
        self.init = init
        self.n_sections = self.sos.shape[0]
        self.zi_unit = np.ascontiguousarray(signal.sosfilt_zi(self.sos))
        # State (n_sections, 2, n_channels): channels innermost, see ext/_dsp_sos.pxd.
        self.zi = np.zeros((self.n_sections, 2, self.n_channels), dtype=np.float64)
        self.pending = np.zeros(self.n_channels, dtype=np.uint8)
        self._work = np.zeros(self.n_channels, dtype=np.float64)
        self._kernel = SosKernel(self.sos, self.zi_unit, self.zi, self.pending, self._work)
        self.last_bad = 0
        self.n_bad = 0
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (the next sample starts the filter afresh)."""
        self.zi[:] = 0.0
        self.pending[:] = 1 if self.init == "steady" else 0
        self.last_bad = 0
        self.n_bad = 0

    def process(self, chunk: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Filter ``chunk`` (n_channels, n_samples) float64; return the filtered chunk.

        ``out`` (same shape, float64, C-contiguous) receives the result when given; it may be
        ``chunk`` itself.
        """
        chunk = check_chunk(chunk, self.n_channels, "SOSFilter.process")
        if out is None:
            out = np.empty(chunk.shape, dtype=np.float64)
        elif out.shape != chunk.shape:
            raise ValueError(f"out must have shape {chunk.shape}; got {out.shape}.")
        try:
            bad = self._kernel.run(chunk, out)
        except (ValueError, TypeError):
            raise chunk_error(out, self.n_channels, "SOSFilter.process (out)") from None
        self.last_bad = bad
        self.n_bad += bad
        return out


def design_bandpass(low_hz: float, high_hz: float, sfreq: float, order: int = 4) -> np.ndarray:
    """Butterworth band-pass as second-order sections (``order`` sections, 2 * order poles).

    Parameters
    ----------
    low_hz, high_hz : float
        -3 dB edges, ``0 < low_hz < high_hz < sfreq / 2``.
    sfreq : float
        Sampling rate, Hz.
    order : int
        Butterworth order of the low-pass prototype.
    """
    sfreq = positive_float(sfreq, "sfreq")
    low, high = band(low_hz, high_hz, sfreq)
    order = positive_int(order, "order")
    return signal.butter(order, [low, high], btype="bandpass", fs=sfreq, output="sos")


def _design_one_edge(cutoff_hz: float, sfreq: float, order: int, btype: str) -> np.ndarray:
    """Butterworth ``btype`` ("highpass" or "lowpass") at ``cutoff_hz`` as second-order sections."""
    sfreq = positive_float(sfreq, "sfreq")
    cutoff = positive_float(cutoff_hz, "cutoff_hz")
    if cutoff >= sfreq / 2:
        raise SettingsError(
            f"cutoff_hz must be below the Nyquist frequency ({sfreq / 2:g} Hz); got {cutoff:g} Hz."
        )
    order = positive_int(order, "order")
    return signal.butter(order, cutoff, btype=btype, fs=sfreq, output="sos")


def design_highpass(cutoff_hz: float, sfreq: float, order: int = 2) -> np.ndarray:
    """Butterworth high-pass (removes DC offsets and drifts) as second-order sections."""
    return _design_one_edge(cutoff_hz, sfreq, order, "highpass")


def design_lowpass(cutoff_hz: float, sfreq: float, order: int = 4) -> np.ndarray:
    """Butterworth low-pass as second-order sections."""
    return _design_one_edge(cutoff_hz, sfreq, order, "lowpass")


def design_notch(
    freq_hz: float,
    sfreq: float,
    harmonics: bool = True,
    q: float = 30.0,
    *,
    max_hz: float | None = None,
) -> np.ndarray:
    """Notch at the line frequency (50 or 60 Hz), and its harmonics below Nyquist.

    Parameters
    ----------
    freq_hz : float
        Line frequency; any frequency in (0, sfreq / 2) is accepted.
    sfreq : float
        Sampling rate, Hz.
    harmonics : bool
        Also notch 2 f, 3 f, ... below ``sfreq / 2`` (and below ``max_hz`` when given).
    q : float
        Quality factor of every notch (bandwidth = frequency / q).
    max_hz : float, optional
        Highest frequency to notch.

    Returns
    -------
    sos : array, shape (n_notches, 6)
    """
    sfreq = positive_float(sfreq, "sfreq")
    freq = positive_float(freq_hz, "freq_hz")
    q = positive_float(q, "q")
    nyquist = sfreq / 2.0
    if freq >= nyquist:
        raise SettingsError(
            f"freq_hz must be below the Nyquist frequency ({nyquist:g} Hz); got {freq:g} Hz."
        )
    ceiling = nyquist if max_hz is None else min(nyquist, positive_float(max_hz, "max_hz"))
    if freq > ceiling:
        raise SettingsError(f"max_hz ({ceiling:g} Hz) is below freq_hz ({freq:g} Hz).")
    count = int(np.floor(ceiling / freq)) if harmonics else 1
    # A notch must sit strictly inside (0, Nyquist); drop a harmonic that lands on Nyquist.
    freqs = [k * freq for k in range(1, count + 1) if k * freq < nyquist * (1 - 1e-9)]
    sections = []
    for f in freqs:
        b, a = signal.iirnotch(f, q, fs=sfreq)
        sections.append(np.concatenate([b, a]))
    return np.array(sections, dtype=np.float64)


def sos_group_delay_s(sos: np.ndarray, freq_hz: float | np.ndarray, sfreq: float) -> np.ndarray:
    """Group delay of a second-order-section cascade at ``freq_hz``, in seconds."""
    freqs = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    total = np.zeros_like(freqs)
    for row in np.asarray(sos, dtype=np.float64):
        _, delay = signal.group_delay((row[:3], row[3:]), w=freqs, fs=sfreq)
        total += delay
    return total / sfreq


def sos_phase_delay_s(sos: np.ndarray, freq_hz: float | np.ndarray, sfreq: float) -> np.ndarray:
    """Phase delay (-phase / angular frequency) of a cascade at ``freq_hz`` > 0, seconds."""
    freqs = np.atleast_1d(np.asarray(freq_hz, dtype=np.float64))
    if np.any(freqs <= 0) or np.any(freqs >= sfreq / 2):
        raise SettingsError(
            f"phase delay needs frequencies in (0, {sfreq / 2:g}) Hz; got {freq_hz!r}."
        )
    # Unwrap along a fine grid from 0 so that the phase is continuous up to each frequency.
    phases = []
    for f in freqs:
        grid = np.linspace(0.0, f, max(64, int(f / sfreq * 20000)))
        _, h = signal.sosfreqz(sos, worN=grid, fs=sfreq)
        phases.append(np.unwrap(np.angle(h))[-1])
    return -np.array(phases) / (2 * np.pi * freqs)
