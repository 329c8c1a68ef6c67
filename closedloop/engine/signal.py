"""The engine's front end: raw channels to the derived signal at the working rate, its DC-free
version and its band envelope, and where the newest working-rate sample sits in time."""

from __future__ import annotations

import math

import numpy as np

from closedloop._signal_chain import ChainKernel
from closedloop.dsp import (
    Decimator,
    Envelope,
    SOSFilter,
    SpatialFilter,
    design_highpass,
    design_notch,
)
from closedloop.dsp._checks import check_chunk
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

    Notes
    -----
    :meth:`process` runs the whole chain in one compiled pass per chunk
    (``closedloop._signal_chain``) on the stages' own state, with the same floating-point
    operations as the stages one by one (:meth:`derive`, :meth:`highpassed`,
    :meth:`envelope_of`); a spatial filter that needs BLAS (more than a few hundred
    multiply-adds per sample) takes the stages one by one.
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
        self._outputs: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._bind_kernel()

    def _bind_kernel(self) -> None:
        """The fused kernel on the stages' current state arrays (None: the stages one by one)."""
        self._kernel = None
        spatial = self.spatial
        if not spatial._direct:
            return
        dec, notch, hp, env = self.decimator, self.notch, self.highpass, self.envelope
        self._kernel = ChainKernel(
            spatial._weights_used,
            spatial.used,
            spatial.n_channels,
            (dec.sos, dec.zi_unit, dec.zi, dec.pending) if dec is not None else (),
            (notch.sos, notch.zi_unit, notch.zi, notch.pending) if notch is not None else (),
            (hp.sos, hp.zi_unit, hp.zi, hp.pending),
            (env.sos, env.zi_unit, env.zi, env.pending),
            env.omega,
        )

    def set_band(self, band_hz: tuple[float, float], baseline: np.ndarray) -> np.ndarray:
        """Move the envelope to a new band (the individual band learnt from ``baseline``).

        The new envelope is run over the baseline (through a fresh high-pass) and carries on from
        its end; returns the baseline's envelope in the new band, the gate's reference.
        """
        self.envelope = Envelope(self.sfreq_work, *band_hz, self.n_derived)
        highpass = SOSFilter(self.highpass.sos, self.n_derived)
        envelope = self.envelope.process(highpass.process(np.ascontiguousarray(baseline)))
        self._bind_kernel()
        return envelope

    def reset(self) -> None:
        for stage in (self.spatial, self.decimator, self.notch, self.highpass, self.envelope):
            if stage is not None:
                stage.reset()
        self._n_in_total = 0
        self._n_work_total = 0

    def process(self, chunk: np.ndarray, newest_ts: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole chain on one chunk: ``(derived, highpassed, envelope)``, each
        ``(n_derived, m)`` at the working rate (``m`` may be 0), as :meth:`derive`,
        :meth:`highpassed` and :meth:`envelope_of` one after the other; updates
        :attr:`newest_work_ts`.

        The three arrays belong to the chain and are overwritten by the next call of the same
        length: copy what must outlive it.
        """
        kernel = self._kernel
        if kernel is None:
            return self._process_stages(chunk, newest_ts)
        n = chunk.shape[1]
        dec = self.decimator
        if dec is not None:
            factor = dec.factor
            first = (dec.offset - dec.n_in) % factor
            m = (n - first + factor - 1) // factor if n > first else 0
        else:
            factor, first, m = 1, 0, n
        outputs = self._outputs
        if outputs is None or outputs[0] != m:
            buf = np.empty((3, self.n_derived, m))
            outputs = self._outputs = (m, buf[0], buf[1], buf[2])
        _, derived, hp, env = outputs
        envelope = self.envelope
        if kernel.run(chunk, derived, hp, env, first, factor, envelope.n_in) < 0:
            chunk = check_chunk(chunk, self.spatial.n_channels, "SignalChain.process")
            kernel.run(chunk, derived, hp, env, first, factor, envelope.n_in)
        # the stages' bookkeeping, as their own process() keeps it
        spatial = self.spatial
        spatial.last_bad = bad = kernel.spatial_bad
        spatial.n_bad += bad
        if dec is not None:
            dec.last_first = first
            dec.n_in += n
            dec.n_out += m
            dec.last_bad = bad = kernel.decimator_bad
            dec.n_bad += bad
            self._n_in_total += n
        if m == 0:
            return derived, hp, env
        if self.notch is not None:
            self.notch.last_bad = bad = kernel.notch_bad
            self.notch.n_bad += bad
        self.highpass.last_bad = bad = kernel.highpass_bad
        self.highpass.n_bad += bad
        envelope.n_in += m
        envelope.last_bad = bad = kernel.envelope_bad
        envelope.n_bad += bad
        self._advance(m, newest_ts)
        return derived, hp, env

    def _process_stages(self, chunk: np.ndarray, newest_ts: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        derived = self.derive(chunk, newest_ts)
        if derived.shape[1] == 0:
            return derived, derived, derived
        hp = self.highpassed(derived)
        return derived, hp, self.envelope_of(hp)

    def _advance(self, m: int, newest_ts: float) -> None:
        """``m`` working-rate samples were produced from a chunk whose newest is ``newest_ts``."""
        self._n_work_total += m
        if self.decimator is not None:
            # the newest output corresponds to an input sample some way back from the newest input
            newest_in = (self._n_work_total - 1) * self.factor + self._dec_offset
            back = (self._n_in_total - 1) - newest_in
            self.newest_work_ts = newest_ts - back * (1.0 / self.sfreq) - self.delay_s
        else:
            self.newest_work_ts = newest_ts

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
        self._advance(m, newest_ts)
        return derived

    def highpassed(self, derived: np.ndarray) -> np.ndarray:
        """The DC-free derived signal. The envelope's complex demodulation leaks a DC offset into
        the band (about -50 dB: 5 mV reads as several µV of amplitude), so it follows this."""
        return self.highpass.process(derived)

    def envelope_of(self, derived_hp: np.ndarray) -> np.ndarray:
        return self.envelope.process(derived_hp)
