"""Development harness: the engine's trigger decision rule on an in-memory signal.

Until the engine's offline replay is available, this applies the same rule the engine uses:
after every sample (chunk size 1) ask ``next_crossing_s(target)``; when the crossing falls
before the next sample, commit a trigger at exactly that time; deliver it only if the
amplitude gate was open and at least ``min_interval_s`` passed since the last delivery. The
true phase is read from :class:`closedloop.groundtruth.GroundTruth` at the exact time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, sosfilt

from closedloop.errors import DataError
from closedloop.estimators.base import PhaseEstimator
from closedloop.groundtruth import CircularStats, GroundTruth, circular_stats, wrap_deg


def causal_envelope(x: np.ndarray, sfreq: float, band_hz: tuple[float, float]) -> np.ndarray:
    """Causal band amplitude for the gate: Butterworth band-pass, RMS over one cycle, x sqrt 2."""
    sos = butter(2, band_hz, btype="bandpass", fs=sfreq, output="sos")
    y = sosfilt(sos, np.asarray(x, dtype=np.float64))
    n = max(1, round(sfreq * 2.0 / (band_hz[0] + band_hz[1])))
    power = np.convolve(y * y, np.ones(n) / n)[: y.shape[0]]
    return np.sqrt(2.0 * power)


@dataclass
class TriggerRun:
    """Triggers delivered in one run and their errors against the truth."""

    method: str
    target_deg: float
    times_s: np.ndarray
    errors_deg: np.ndarray
    evaluated_s: float
    us_per_update: float
    stats: CircularStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = circular_stats(self.errors_deg)

    @property
    def per_minute(self) -> float:
        return 60.0 * self.times_s.shape[0] / self.evaluated_s if self.evaluated_s > 0 else math.nan


def run_triggers(
    estimator: PhaseEstimator,
    x: np.ndarray,
    sfreq: float,
    target_deg: float,
    *,
    truth: GroundTruth,
    baseline_s: float = 30.0,
    min_interval_s: float = 0.25,
    gate_percentile: float | None = 50.0,
    envelope: np.ndarray | None = None,
    end_margin_s: float = 1.0,
    gate_source: str = "envelope",
) -> TriggerRun:
    """Fit on the first ``baseline_s``, then trigger sample by sample on the rest.

    Parameters
    ----------
    estimator : PhaseEstimator
        A fresh estimator at ``sfreq``.
    x : ndarray, shape (n_samples,)
        Derived signal, µV.
    target_deg : float
        Target phase.
    truth : GroundTruth
        Offline truth of ``x``.
    gate_percentile : float or None
        Amplitude gate at this percentile of the baseline's causal envelope; None = no gate.
    end_margin_s : float
        The last part is not evaluated (the offline truth's own edge).
    gate_source : {"envelope", "estimator"}
        Gate on a shared causal band envelope (:func:`causal_envelope`, or ``envelope``), or
        on the estimator's own ``amplitude`` with the threshold from its amplitude over the
        baseline.
    """
    n_base = round(baseline_s * sfreq)
    n_end = x.shape[0] - round(end_margin_s * sfreq)
    if n_base < 1 or n_end - n_base < sfreq:
        raise DataError(
            f"the recording has {x.shape[0] / sfreq:.1f} s; it needs more than "
            f"{baseline_s + end_margin_s + 1:g} s for a {baseline_s:g} s baseline and an evaluation."
        )
    if envelope is None:
        envelope = causal_envelope(x, sfreq, estimator.band_hz)
    estimator.reset()
    estimator.fit(x[:n_base])
    if gate_percentile is None:
        threshold = -math.inf
    elif gate_source == "estimator":
        threshold = estimator.amplitude_threshold(gate_percentile)
    else:
        threshold = float(np.percentile(envelope[:n_base], gate_percentile))
    estimator.reset()
    estimator.process(x[:n_base])
    dt = 1.0 / sfreq
    last = -math.inf
    times: list[float] = []
    t0 = time.perf_counter()
    for n in range(n_base, n_end):
        estimator.process(x[n : n + 1])
        ahead = estimator.next_crossing_s(target_deg)
        if not (ahead < dt):
            continue
        t = n * dt + ahead
        amp = estimator.amplitude if gate_source == "estimator" else envelope[n]
        if amp >= threshold and t - last >= min_interval_s:
            times.append(t)
            last = t
    elapsed = time.perf_counter() - t0
    t_arr = np.asarray(times)
    errors = wrap_deg(truth.phase_at(t_arr) - target_deg) if t_arr.size else np.zeros(0)
    return TriggerRun(
        estimator.name,
        float(target_deg),
        t_arr,
        errors,
        (n_end - n_base) / sfreq,
        1e6 * elapsed / max(1, n_end - n_base),
    )
