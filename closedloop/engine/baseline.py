"""The baseline: the first ``baseline_s`` of the derived signal, and what is learnt from it
(the individual band, the gate's reference, the estimator's fit). Everything here runs
synchronously; where the fit runs (in line, or on a thread of the live session's) is the
caller's choice (:class:`closedloop.engine.Engine`'s ``run_fit``)."""

from __future__ import annotations

import math

import numpy as np

from closedloop.dsp import individual_peak_hz

__all__ = ["Baseline", "fit_estimator", "individual_band"]


class Baseline:
    """Collects ``n_samples`` of the derived signal and its envelope at the working rate.

    Attributes
    ----------
    fill : int
        Samples collected so far.
    done : bool
        Set by the engine once the baseline has been used (at once when ``n_samples`` is 0).
    """

    def __init__(self, n_derived: int, n_samples: int) -> None:
        self.n_samples = int(n_samples)
        self.n_derived = int(n_derived)
        self.reset()

    def reset(self) -> None:
        self._data = np.empty((self.n_derived, max(self.n_samples, 1)))
        self._env = np.empty((self.n_derived, max(self.n_samples, 1)))
        self.fill = 0
        self.done = self.n_samples == 0

    @property
    def full(self) -> bool:
        return self.fill >= self.n_samples

    def process(self, derived: np.ndarray, env: np.ndarray) -> int:
        """Take what still fits of a chunk; returns how many samples were taken."""
        take = min(derived.shape[1], self.n_samples - self.fill)
        self._data[:, self.fill : self.fill + take] = derived[:, :take]
        self._env[:, self.fill : self.fill + take] = env[:, :take]
        self.fill += take
        return take

    @property
    def data(self) -> np.ndarray:
        """The derived signal collected, ``(n_derived, fill)``."""
        return self._data[:, : self.fill]

    @property
    def envelope(self) -> np.ndarray:
        """Its envelope, ``(n_derived, fill)`` (writable: replaced when the band changes)."""
        return self._env[:, : self.fill]

    def release(self) -> None:
        """Free the signal once it has been used (the envelope stays for inspection)."""
        self._data = self._data[:, :0]


def individual_band(
    signal_1d: np.ndarray, sfreq: float, band, *, always: bool = False
) -> tuple[float | None, tuple[float, float] | None]:
    """The individual peak and band (peak +/- ``half_width_hz``) of a protocol's ``[band]``.

    ``signal_1d`` is the finite part of the baseline's main derived signal at ``sfreq``. Returns
    ``(None, None)`` when the band is not individual (unless ``always``: calibration looks for
    the peak whatever the protocol says), the signal is shorter than 2 s, or it shows no peak in
    ``peak_search_hz``.
    """
    if not (band.individual or always) or signal_1d.size < int(2 * sfreq):
        return None, None
    peak = individual_peak_hz(signal_1d, sfreq, tuple(band.peak_search_hz))
    if not math.isfinite(peak):
        return None, None
    return float(peak), (max(0.1, peak - band.half_width_hz), peak + band.half_width_hz)


def fit_estimator(estimator, baseline: np.ndarray, sfreq: float):
    """Fit ``estimator`` on the baseline and warm it up on its last 2 s; returns it.

    The fit's linear algebra runs on one BLAS thread: a multi-threaded BLAS sums in an order that
    depends on its thread count, which would show in the last digits of the fit, so the same
    recording would give other triggers on a machine with another number of cores.
    """
    from threadpoolctl import threadpool_limits

    if baseline.size:
        with threadpool_limits(limits=1, user_api="blas"):
            estimator.fit(baseline)
        warm = baseline[-int(min(baseline.size, 2 * sfreq)) :]
        estimator.process(np.ascontiguousarray(warm))
    return estimator
