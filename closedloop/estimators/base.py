"""The phase estimator interface every method implements (docs/architecture.md).

An estimator sees the derived signal (spatially filtered, not band-passed, µV) one chunk at a
time and answers, at the newest sample: phase (degrees, 0 = peak, 180 = trough), band
amplitude, instantaneous frequency, and the time to the next crossing of a target phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from closedloop.errors import DataError, ProtocolError


@dataclass(frozen=True)
class Crossing:
    """A predicted crossing of a target phase (:meth:`PhaseEstimator.window_crossing`).

    Attributes
    ----------
    wait_s : float
        Seconds from the newest sample to the crossing.
    certainty : float
        What an amplitude gate compares with its threshold for this crossing, µV: the amplitude
        predicted at the crossing where the estimator predicts for the horizon (``wiener``: a
        least-squares prediction, smaller where the horizon makes it less predictable), else its
        amplitude at the newest sample.
    phase_deg : float
        The estimated phase at the crossing (the phase aimed at), or NaN when the estimator
        leaves it to the caller to carry its current phase forward.
    """

    wait_s: float
    certainty: float
    phase_deg: float = math.nan


class History:
    """Preallocated ring of the newest ``size`` samples, readable as one contiguous view.

    Every sample is written twice (at ``i`` and ``i + size``), so the last ``size`` samples
    are always ``buf[i + 1 : i + 1 + size]`` after the write at ``i``: no copy on read.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.buf = np.zeros(2 * self.size, dtype=np.float64)
        self.index = self.size - 1  # position of the newest sample
        self.count = 0

    def clear(self) -> None:
        self.buf[:] = 0.0
        self.index = self.size - 1
        self.count = 0

    def push(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n >= self.size:
            self.buf[: self.size] = x[n - self.size :]
            self.buf[self.size :] = x[n - self.size :]
            self.index = self.size - 1
        else:
            start = (self.index + 1) % self.size
            first = min(n, self.size - start)
            self.buf[start : start + first] = x[:first]
            self.buf[start + self.size : start + self.size + first] = x[:first]
            rest = n - first
            if rest:
                self.buf[:rest] = x[first:]
                self.buf[self.size : self.size + rest] = x[first:]
            self.index = (self.index + n) % self.size
        self.count += n

    def last(self, n: int) -> np.ndarray:
        """The newest ``n <= size`` samples, oldest first (a view)."""
        end = self.index + 1 + self.size
        return self.buf[end - n : end]


class PhaseEstimator:
    """Base class: validation, NaN handling, and the shared answers.

    Subclasses set ``name`` and ``defaults`` (parameter name -> default value), implement
    ``_process_good(x)`` for a chunk of finite samples, ``_reset_state()``, and may override
    ``fit``. After ``_process_good`` they leave ``ready``, ``phase_deg``, ``amplitude`` and
    ``frequency_hz`` describing the newest sample.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the derived signal, Hz.
    band_hz : tuple of float
        (low, high) edges of the oscillation's band, Hz; ``0 < low < high < sfreq / 2``.
    **params
        Method parameters; unknown names raise :class:`ProtocolError`.
    """

    name: str = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    #: shortest baseline ``fit`` accepts, seconds (the engine checks protocols against it)
    min_baseline_s: float = 2.0

    def __init__(self, sfreq: float, band_hz: tuple[float, float], **params: Any) -> None:
        try:
            sfreq = float(sfreq)
        except (TypeError, ValueError):
            raise DataError(
                f"sampling rate {sfreq!r} is not a number; give a rate in Hz."
            ) from None
        if not math.isfinite(sfreq) or sfreq <= 0:
            raise DataError(
                f"sampling rate {sfreq!r} Hz is unusable; it must be a positive number."
            )
        try:
            low, high = (float(v) for v in band_hz)
        except (TypeError, ValueError):
            raise ProtocolError(
                f"band {band_hz!r} is not a (low_hz, high_hz) pair of numbers."
            ) from None
        nyquist = sfreq / 2.0
        if not (0.0 < low < high < nyquist):
            raise ProtocolError(
                f"band {low:g}-{high:g} Hz is invalid at {sfreq:g} Hz: it needs "
                f"0 < low_hz < high_hz < {nyquist:g} (half the sampling rate)."
            )
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise ProtocolError(
                f"estimator {self.name!r} has no parameter {unknown[0]!r}; accepted: {accepted}."
            )
        self.sfreq = sfreq
        self.band_hz = (low, high)
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.fitted = False
        self.baseline_amplitude = np.zeros(0)
        #: the estimate over the fitted baseline, one complex value per sample (NaN where none)
        self.baseline_track = np.zeros(0, dtype=np.complex128)
        self.last_bad = 0
        self.n_samples = 0
        self._init_params()
        self.reset()

    # -- to implement ---------------------------------------------------------------------
    def _init_params(self) -> None:
        """Validate ``self.params`` and derive sizes; allocate buffers."""

    def _reset_state(self) -> None:
        """Clear run-time state (history, filters); keep what ``fit`` learnt."""

    def _process_good(self, x: np.ndarray) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def _param_number(self, key: str, low: float, high: float, *, integer: bool = False) -> float:
        value = self.params[key]
        try:
            number = int(value) if integer else float(value)
            if integer and number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            kind = "an integer" if integer else "a number"
            raise ProtocolError(
                f"estimator {self.name!r} parameter {key!r} = {value!r} is not {kind}."
            ) from None
        if not (low <= number <= high) or not math.isfinite(number):
            raise ProtocolError(
                f"estimator {self.name!r} parameter {key!r} = {value!r} is out of range; "
                f"accepted: {low:g} to {high:g}."
            )
        return number

    def reset(self) -> None:
        """Forget the signal seen so far (what ``fit`` learnt stays)."""
        self.ready = False
        self.phase_deg = math.nan
        self.amplitude = math.nan
        self.frequency_hz = math.nan
        self._reset_state()

    @property
    def center_hz(self) -> float:
        return 0.5 * (self.band_hz[0] + self.band_hz[1])

    def fit(self, baseline: np.ndarray) -> None:
        """Train or calibrate on a baseline of the derived signal (1-D, µV, at ``sfreq``).

        The base implementation only checks the input; methods without training keep it.
        Every ``fit`` ends with :meth:`_note_baseline_amplitude`.
        """
        x = self._check_baseline(baseline)
        self.fitted = True
        self._note_baseline_amplitude(x)

    def _note_baseline_amplitude(self, x: np.ndarray) -> None:
        """Keep this estimator's own amplitude over the baseline in ``baseline_amplitude`` (and
        its whole estimate, per sample, in ``baseline_track``).

        An amplitude gate on ``amplitude`` compares it with a percentile of these values
        (the estimator's amplitude is unlagged; a separate envelope filter lags the rhythm).
        The estimator is left reset.
        """
        z = self._baseline_track(x)
        self.baseline_track = z
        self.baseline_amplitude = np.abs(z[np.isfinite(z)])
        self.reset()

    def _baseline_track(self, x: np.ndarray) -> np.ndarray:
        return track(self, x, max_updates=3000)

    def amplitude_threshold(self, percentile: float) -> float:
        """The ``percentile`` (0-100) of ``amplitude`` over the fitted baseline (NaN before fit)."""
        if self.baseline_amplitude.size == 0:
            return math.nan
        return float(np.percentile(self.baseline_amplitude, percentile))

    def _check_baseline(self, baseline: np.ndarray, min_seconds: float | None = None) -> np.ndarray:
        if min_seconds is None:
            min_seconds = self.min_baseline_s
        x = np.asarray(baseline, dtype=np.float64)
        if x.ndim != 1:
            raise DataError(
                f"the baseline must be a 1-D derived signal; got an array of shape {x.shape}."
            )
        need = math.ceil(min_seconds * self.sfreq)
        if x.shape[0] < need:
            raise DataError(
                f"the baseline has {x.shape[0]} samples ({x.shape[0] / self.sfreq:.2f} s); "
                f"estimator {self.name!r} needs at least {min_seconds:g} s ({need} samples)."
            )
        if not np.all(np.isfinite(x)):
            raise DataError(
                f"the baseline contains {int(np.sum(~np.isfinite(x)))} NaN or infinite samples; "
                "remove them or choose a clean stretch."
            )
        return x

    def process(self, x: np.ndarray) -> None:
        """Take a 1-D chunk of the derived signal (any length, 0 too) and update the answers.

        Non-finite samples are counted in ``last_bad``; the estimator then restarts from the
        next finite sample (answers are NaN and ``ready`` is False until it has enough again).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(
                f"estimator {self.name!r} takes a 1-D chunk of the derived signal; "
                f"got shape {x.shape}."
            )
        n = x.shape[0]
        if n == 0:
            self.last_bad = 0
            return
        finite = np.isfinite(x)
        if finite.all():
            self.last_bad = 0
            self.n_samples += n
            self._process_good(np.ascontiguousarray(x))
            return
        bad = np.flatnonzero(~finite)
        self.last_bad = int(bad.shape[0])
        self.n_samples += n
        self.reset()
        tail = x[bad[-1] + 1 :]
        if tail.shape[0]:
            self._process_good(np.ascontiguousarray(tail))

    def next_crossing_s(self, target_phase_deg: float) -> float:
        """Seconds from the newest sample to the next moment the phase equals the target.

        Extrapolates the current phase at the current instantaneous frequency; 0 when the
        phase is exactly on target; NaN when not ready.
        """
        if not self.ready or not math.isfinite(self.phase_deg):
            return math.nan
        freq = self.frequency_hz
        if not math.isfinite(freq) or freq <= 0:
            freq = self.center_hz
        ahead = (float(target_phase_deg) - self.phase_deg) % 360.0
        return ahead / (360.0 * freq)

    def window_crossing(
        self, target_phase_deg: float, start_s: float, end_s: float
    ) -> Crossing | None:
        """The crossing of the target phase to plan for in ``[start_s, end_s]`` after the newest
        sample (the planning window, :mod:`closedloop.engine.planning`), or None.

        The base implementation carries the phase at the newest sample forward at the
        instantaneous frequency (:meth:`next_crossing_s`) and leaves the window to the caller:
        it returns the next crossing wherever it falls. Estimators that predict for the horizon
        asked (``wiener``) return only a crossing inside the window. A pure query.
        """
        wait = float(self.next_crossing_s(target_phase_deg))
        if not math.isfinite(wait) or wait < 0:
            return None
        return Crossing(wait, self.amplitude)

    def recent_amplitudes(self, n: int) -> np.ndarray:
        """The amplitude at each of the newest ``n`` samples, oldest first (for a running gate).

        The base implementation repeats the newest sample's amplitude; estimators that keep
        their per-sample estimates (``wiener``) give each sample its own, so that what a running
        gate learns does not depend on how the samples were chunked.
        """
        return np.full(max(0, int(n)), self.amplitude)

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(sfreq={self.sfreq:g}, band_hz={self.band_hz}, {extra})"


def bias_from_truth(z_est: np.ndarray, z_true: np.ndarray) -> complex:
    """Complex gain that best maps estimated onto true analytic signal where alpha is strong.

    Uses samples where both are finite and the true amplitude is at least its median (where
    an amplitude gate at the 50th percentile lets triggers through): the rotation is minus the
    circular mean phase error, the scale the ratio of median amplitudes. Returns 1 when there
    is nothing to learn from.
    """
    ok = np.isfinite(z_est) & np.isfinite(z_true)
    if ok.sum() < 10:
        return 1.0 + 0.0j
    ze, zt = z_est[ok], z_true[ok]
    amp = np.abs(zt)
    strong = amp >= np.median(amp)
    ze, zt = ze[strong], zt[strong]
    err = np.angle(zt) - np.angle(ze)
    rot = np.exp(1j * np.angle(np.mean(np.exp(1j * err))))
    est_amp = np.median(np.abs(ze))
    scale = float(np.median(np.abs(zt)) / est_amp) if est_amp > 0 else 1.0
    return complex(rot * scale)


def track(estimator: PhaseEstimator, x: np.ndarray, max_updates: int = 3000) -> np.ndarray:
    """Run ``estimator`` over ``x`` from a reset and return its analytic estimate per sample.

    The signal is fed in equal chunks so that at most ``max_updates`` answers are computed;
    samples between chunk ends are NaN. The estimator is reset before and left after ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape[0], np.nan + 0j)
    step = max(1, math.ceil(x.shape[0] / max_updates))
    estimator.reset()
    for end in range(step, x.shape[0] + 1, step):
        estimator.process(x[end - step : end])
        if estimator.ready:
            out[end - 1] = estimator.amplitude * np.exp(1j * np.radians(estimator.phase_deg))
    return out
