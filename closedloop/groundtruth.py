"""Offline ground truth for phase: zero-phase FIR band-pass + Hilbert over a whole recording.

The true phase is the angle of the analytic signal of the band-passed derived signal (phase
convention of ../shared/CONTRACTS.md: 0 = peak, 180 = trough, -90 = rising zero crossing).
Triggers fall between samples, so :class:`GroundTruth` interpolates the analytic signal at
arbitrary times. Circular statistics of phase errors live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.signal import firwin, hilbert, oaconvolve

from closedloop.angles import wrap_deg
from closedloop.errors import DataError, UsageError


def truth_fir(
    sfreq: float, band_hz: tuple[float, float], transition_hz: float | None = None
) -> np.ndarray:
    """Linear-phase (odd-length, symmetric) FIR band-pass used for the ground truth.

    Hamming window; the transition width defaults to ``min(2 Hz, low_hz / 2)``, so the
    filter spans about ``3.3 / transition`` seconds.
    """
    low, high = (float(v) for v in band_hz)
    nyquist = sfreq / 2.0
    if not (0.0 < low < high < nyquist):
        raise UsageError(
            f"band {low:g}-{high:g} Hz is invalid at {sfreq:g} Hz; it needs "
            f"0 < low < high < {nyquist:g}."
        )
    tw = transition_hz if transition_hz is not None else min(2.0, low / 2.0)
    numtaps = math.ceil(3.3 / tw * sfreq) | 1
    return zero_dc(firwin(numtaps, [low, high], pass_zero=False, window="hamming", fs=sfreq))


def zero_dc(h: np.ndarray) -> np.ndarray:
    """Make a windowed band-pass FIR's gain at 0 Hz exactly zero, keeping it symmetric.

    A window design leaves a small DC gain; with electrode offsets of thousands of µV that
    leak is as large as the rhythm. A scaled Hann taper is subtracted to cancel it.
    """
    taper = np.hanning(h.shape[0] + 2)[1:-1]
    return h - taper * (h.sum() / taper.sum())


def band_analytic(
    x: np.ndarray, sfreq: float, band_hz: tuple[float, float], transition_hz: float | None = None
) -> np.ndarray:
    """Analytic signal of ``x`` band-passed with a zero-phase FIR (non-causal, offline).

    The filter is applied once, centred (zero phase), with odd-symmetric extension at both
    ends; the Hilbert transform runs on a padded copy to keep its circular wrap away.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        The derived signal.
    sfreq : float
        Sampling rate, Hz.
    band_hz : (float, float)
        Pass band, Hz.

    Returns
    -------
    ndarray of complex128, shape (n_samples,)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise DataError(f"the ground truth needs a 1-D signal; got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise DataError(
            "the signal contains NaN or infinite samples; the ground truth needs finite data."
        )
    h = truth_fir(sfreq, band_hz, transition_hz)
    half = h.shape[0] // 2
    if x.shape[0] < 2:
        raise DataError("the signal is too short for a ground truth (fewer than 2 samples).")
    pad = min(half, x.shape[0] - 1)
    left = 2 * x[0] - x[pad:0:-1]
    right = 2 * x[-1] - x[-2 : -pad - 2 : -1]
    ext = np.concatenate(
        [np.full(half - pad, left[0]), left, x, right, np.full(half - pad, right[-1])]
    )
    y = oaconvolve(ext, h, mode="valid")
    n_fft = 1 << math.ceil(math.log2(y.shape[0] + 2 * half))
    padded = np.zeros(n_fft)
    padded[half : half + y.shape[0]] = y
    return hilbert(padded)[half : half + y.shape[0]]


def interior_analytic(x: np.ndarray, sfreq: float, band_hz: tuple[float, float]) -> np.ndarray:
    """:func:`band_analytic` with NaN where the filter reaches past either end (edge effects).

    For training and calibrating estimators on a baseline: only trustworthy targets remain.
    """
    z = band_analytic(x, sfreq, band_hz)
    margin = min(truth_fir(sfreq, band_hz).shape[0] // 2, z.shape[0] // 4)
    z[:margin] = np.nan
    if margin:
        z[-margin:] = np.nan
    return z


class GroundTruth:
    """The true analytic signal of a recording, readable at fractional-sample times.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        Derived signal (the same spatial filter as the online pipeline), µV.
    sfreq : float
        Sampling rate, Hz; sample ``k`` is at time ``k / sfreq``.
    band_hz : (float, float)
        Pass band, Hz.
    """

    def __init__(
        self,
        x: np.ndarray,
        sfreq: float,
        band_hz: tuple[float, float],
        transition_hz: float | None = None,
    ) -> None:
        self.sfreq = float(sfreq)
        self.band_hz = (float(band_hz[0]), float(band_hz[1]))
        self.analytic = band_analytic(x, self.sfreq, self.band_hz, transition_hz)
        self.n_samples = self.analytic.shape[0]
        t = np.arange(self.n_samples) / self.sfreq
        self._spline = CubicSpline(t, self.analytic)

    @property
    def phase_deg(self) -> np.ndarray:
        """True phase at every sample, degrees in (-180, 180]."""
        return np.degrees(np.angle(self.analytic))

    @property
    def amplitude(self) -> np.ndarray:
        """True band amplitude (envelope) at every sample, µV."""
        return np.abs(self.analytic)

    def _check_times(self, times_s: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
        end = (self.n_samples - 1) / self.sfreq
        if t.size and (not np.all(np.isfinite(t)) or t.min() < 0 or t.max() > end):
            raise DataError(
                f"times must lie within the recording, 0 to {end:.4f} s; "
                f"got {t.min():.4f} to {t.max():.4f} s."
            )
        return t

    def covers(self, times_s: np.ndarray) -> np.ndarray:
        """Which of ``times_s`` lie within the recording (where the truth can be read)."""
        t = np.asarray(times_s, dtype=np.float64)
        return np.isfinite(t) & (t >= 0) & (t <= (self.n_samples - 1) / self.sfreq)

    def analytic_at(self, times_s: np.ndarray) -> np.ndarray:
        """Analytic signal at arbitrary times (s from the first sample), cubic interpolation."""
        return self._spline(self._check_times(times_s))

    def phase_at(self, times_s: np.ndarray) -> np.ndarray:
        """True phase (degrees, (-180, 180]) at arbitrary times in seconds."""
        return np.degrees(np.angle(self.analytic_at(times_s)))

    def amplitude_at(self, times_s: np.ndarray) -> np.ndarray:
        """True band amplitude (µV) at arbitrary times in seconds."""
        return np.abs(self.analytic_at(times_s))


@dataclass(frozen=True)
class CircularStats:
    """Summary of phase errors (true phase at delivery minus target), degrees."""

    n: int
    mean_deg: float  # circular mean error
    sd_deg: float  # circular standard deviation, sqrt(-2 ln R)
    plv: float  # resultant length R (phase-locking value)
    within_45: float  # share of errors within +/-45 degrees

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "mean_deg": self.mean_deg,
            "sd_deg": self.sd_deg,
            "plv": self.plv,
            "within_45": self.within_45,
        }


def circular_stats(errors_deg: np.ndarray) -> CircularStats:
    """Circular mean, circular SD, resultant length and share within ±45° of phase errors.

    NaN for every statistic when there are no errors.
    """
    e = np.asarray(errors_deg, dtype=np.float64).ravel()
    if e.size == 0:
        return CircularStats(0, math.nan, math.nan, math.nan, math.nan)
    if not np.all(np.isfinite(e)):
        raise DataError("phase errors contain NaN or infinite values.")
    vec = np.mean(np.exp(1j * np.radians(e)))
    plv = float(abs(vec))
    sd = math.degrees(math.sqrt(-2.0 * math.log(plv))) if plv > 0 else math.inf
    within = float(np.mean(np.abs(wrap_deg(e)) <= 45.0))
    return CircularStats(int(e.size), float(np.degrees(np.angle(vec))), sd, plv, within)


def derived_signal(data: np.ndarray, ch_names: list[str], protocol) -> np.ndarray:
    """The protocol's derived signal (channel after its reference), 1-D, for the ground truth."""
    from closedloop.dsp import spatial_weights

    sig = protocol.signal
    weights = spatial_weights(
        list(ch_names),
        [sig.channel],
        sig.reference,
        neighbors=list(sig.neighbors) or None,
        bipolar_with=sig.bipolar_with,
        weights=dict(sig.weights) or None,
    )
    return (weights @ np.nan_to_num(data))[0]


def derived_from_recording(recording, protocol, progress=None) -> np.ndarray:
    """The protocol's derived signal of a whole open recording, read in blocks (``progress(n)``
    after each)."""
    # derived_signal is linear in the data: applied to the identity it gives the spatial weights.
    weights = derived_signal(np.eye(recording.n_channels), recording.ch_names, protocol)
    out = np.empty(recording.n_samples)
    block = max(1, (1 << 19) // max(1, recording.n_channels))
    for start in range(0, recording.n_samples, block):
        stop = min(recording.n_samples, start + block)
        out[start:stop] = weights @ np.nan_to_num(recording.read(start, stop))
        if progress is not None:
            progress(stop - start)
    return out


def phase_errors(
    derived: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    onsets_s: np.ndarray,
    targets_deg: np.ndarray,
    *,
    truth: GroundTruth | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """True phase at each onset and its error against the target (degrees, wrapped); NaN where
    an onset lies outside the recording."""
    truth = truth or GroundTruth(derived, sfreq, band_hz)
    onsets_s = np.asarray(onsets_s, dtype=float)
    keep = truth.covers(onsets_s)
    true_phase = np.full(onsets_s.shape, np.nan)
    true_phase[keep] = truth.phase_at(onsets_s[keep])
    return true_phase, wrap_deg(true_phase - np.asarray(targets_deg, dtype=float))


#: Triggers in a recording's last second are not scored: the truth's filter reaches past its end.
TRUTH_END_MARGIN_S = 1.0


def scored_span_s(n_samples: int, sfreq: float, eval_after_s: float) -> tuple[float, float]:
    """``(start, end)`` in seconds of the stretch whose triggers are scored.

    From ``eval_after_s`` (usually the protocol's baseline) to :data:`TRUTH_END_MARGIN_S` before
    the last sample.
    """
    return float(eval_after_s), (n_samples - 1) / sfreq - TRUTH_END_MARGIN_S


def scored_errors(
    derived: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    onsets_s: np.ndarray,
    targets_deg: np.ndarray | float,
    *,
    eval_after_s: float,
    truth: GroundTruth | None = None,
) -> np.ndarray:
    """Phase errors of the triggers delivered within :func:`scored_span_s`, degrees: the scoring
    of ``bench accuracy``, sweeps and the demo.

    Each error is the true phase at the trigger's exact delivery time minus its target
    (:func:`phase_errors`); triggers outside the span, or where the truth is undefined, are left out.
    """
    return scored_triggers(derived, sfreq, band_hz, onsets_s, targets_deg, eval_after_s=eval_after_s, truth=truth)[1]


def scored_triggers(
    derived: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    onsets_s: np.ndarray,
    targets_deg: np.ndarray | float,
    *,
    eval_after_s: float,
    truth: GroundTruth | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scored_errors` with the onsets of the triggers scored: ``(onsets, errors)``."""
    start, end = scored_span_s(derived.shape[0], sfreq, eval_after_s)
    onsets = np.asarray(onsets_s, dtype=float)
    targets = np.broadcast_to(np.asarray(targets_deg, dtype=float), onsets.shape)
    keep = (onsets >= start) & (onsets <= end)
    _, errors = phase_errors(derived, sfreq, band_hz, onsets[keep], targets[keep], truth=truth)
    finite = np.isfinite(errors)
    return onsets[keep][finite], errors[finite]


def accuracy(errors_deg: np.ndarray) -> dict:
    """Circular statistics of phase errors as a plain dict (NaNs skipped)."""
    e = np.asarray(errors_deg, dtype=float)
    return circular_stats(e[np.isfinite(e)]).as_dict()
