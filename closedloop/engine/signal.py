"""The engine's front end: raw channels to the derived signal at the working rate, its DC-free
version and its band envelope, and where the newest working-rate sample sits in time."""

from __future__ import annotations

import math

import numpy as np

from closedloop.dsp import (
    Decimator,
    Envelope,
    SOSFilter,
    SpatialFilter,
    design_highpass,
    design_notch,
)
from closedloop.errors import DataError

__all__ = ["NYQUIST_MARGIN", "WORKING_RATE_MAX_HZ", "SignalChain", "check_band_fits", "working_rate"]

#: Estimators run at or below this rate; faster amplifiers are decimated by an integer factor.
WORKING_RATE_MAX_HZ = 1000.0
#: A band's upper edge must stay below this fraction of the working Nyquist frequency.
NYQUIST_MARGIN = 0.9


def working_rate(sfreq: float) -> tuple[int, float]:
    """``(factor, working rate)``: the integer decimation that brings ``sfreq`` to at most
    :data:`WORKING_RATE_MAX_HZ`."""
    factor = max(1, int(math.ceil(sfreq / WORKING_RATE_MAX_HZ - 1e-9)))
    return factor, sfreq / factor


def check_band_fits(band, sfreq: float, sfreq_work: float) -> None:
    """Refuse (``DataError``) a rate too low for the band (or the individual-peak search range)."""
    high = band.high_hz
    if band.individual:
        high = max(high, band.peak_search_hz[1] + band.half_width_hz)
    nyquist = sfreq_work / 2.0
    if high >= NYQUIST_MARGIN * nyquist:
        raise DataError(
            f"a sampling rate of {sfreq:g} Hz cannot carry the protocol's band up to {high:g} Hz; "
            f"the band must stay below {NYQUIST_MARGIN:g} x Nyquist ({NYQUIST_MARGIN * nyquist:g} Hz), "
            f"so at least {high / NYQUIST_MARGIN * 2:g} Hz is needed."
        )


class SignalChain:
    """Spatial filter -> decimation -> notch, then a high-pass and the band envelope.

    Parameters
    ----------
    weights : ndarray, shape (n_derived, n_channels)
        Spatial filter weights (:func:`closedloop.dsp.spatial_weights`).
    sfreq : float
        The input's rate, Hz.
    notch_hz : float
        Line-noise notch at the working rate (0: none).
    band_hz : (float, float)
        The band of the envelope.

    Attributes
    ----------
    sfreq_work, factor : float, int
        The working rate and the decimation factor.
    delay_s : float
        The decimator's delay, compensated in :attr:`newest_work_ts`.
    newest_work_ts : float
        Input-clock time of the newest working-rate sample produced so far.
    """

    def __init__(self, weights: np.ndarray, sfreq: float, notch_hz: float, band_hz: tuple[float, float]) -> None:
        self.sfreq = float(sfreq)
        self.factor, self.sfreq_work = working_rate(self.sfreq)
        self.n_derived = weights.shape[0]
        self.spatial = SpatialFilter(weights)
        self.decimator = Decimator(self.factor, self.n_derived, self.sfreq) if self.factor > 1 else None
        self.delay_s = self.decimator.delay_s if self.decimator is not None else 0.0
        self._dec_offset = int(getattr(self.decimator, "offset", 0))
        self.notch = SOSFilter(design_notch(notch_hz, self.sfreq_work), self.n_derived) if notch_hz else None
        self.highpass_cut_hz = min(0.5, band_hz[0] / 4.0)
        self.highpass = SOSFilter(design_highpass(self.highpass_cut_hz, self.sfreq_work), self.n_derived)
        self.envelope = Envelope(self.sfreq_work, *band_hz, self.n_derived)
        self.newest_work_ts = -math.inf
        self._n_in_total = 0  # input samples fed to the decimator since its last reset
        self._n_work_total = 0  # working-rate samples produced so far

    def set_band(self, band_hz: tuple[float, float], baseline: np.ndarray) -> np.ndarray:
        """Move the envelope to a new band (the individual band learnt from ``baseline``).

        The new envelope is run over the baseline (through a fresh high-pass) and carries on from
        its end; returns the baseline's envelope in the new band, the gate's reference.
        """
        self.envelope = Envelope(self.sfreq_work, *band_hz, self.n_derived)
        highpass = SOSFilter(self.highpass.sos, self.n_derived)
        return self.envelope.process(highpass.process(np.ascontiguousarray(baseline)))

    def reset(self) -> None:
        for stage in (self.spatial, self.decimator, self.notch, self.highpass, self.envelope):
            if stage is not None:
                stage.reset()
        self._n_in_total = 0
        self._n_work_total = 0

    def derive(self, chunk: np.ndarray, newest_ts: float) -> np.ndarray:
        """The derived signal at the working rate, ``(n_derived, m)`` (``m`` may be 0), notched;
        updates :attr:`newest_work_ts`."""
        derived = self.spatial.process(np.ascontiguousarray(chunk))
        if self.decimator is not None:
            self._n_in_total += derived.shape[1]
            derived = self.decimator.process(derived)
        m = derived.shape[1]
        if m == 0:
            return derived
        if self.notch is not None:
            derived = self.notch.process(derived)
        self._n_work_total += m
        if self.decimator is not None:
            # the newest output corresponds to an input sample some way back from the newest input
            newest_in = (self._n_work_total - 1) * self.factor + self._dec_offset
            back = (self._n_in_total - 1) - newest_in
            self.newest_work_ts = newest_ts - back * (1.0 / self.sfreq) - self.delay_s
        else:
            self.newest_work_ts = newest_ts
        return derived

    def highpassed(self, derived: np.ndarray) -> np.ndarray:
        """The DC-free derived signal. The envelope's complex demodulation leaks a DC offset into
        the band (about -50 dB: 5 mV reads as several µV of amplitude), so it follows this."""
        return self.highpass.process(derived)

    def envelope_of(self, derived_hp: np.ndarray) -> np.ndarray:
        return self.envelope.process(derived_hp)
