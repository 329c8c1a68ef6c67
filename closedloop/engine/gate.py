"""The amplitude gate: triggering only while the rhythm is strong enough.

Kinds (the protocol's ``amplitude_gate``):

- ``percentile:P``: the P-th percentile of the baseline's amplitude, fixed for the session;
- ``uv:X``: X µV, absolute;
- ``running:P``: the P-th percentile of the amplitude over the last ``gate_window_s`` seconds of
  the session (:class:`RunningPercentile`), seeded by the baseline, so that the gate follows the
  rhythm when it weakens or grows (drowsiness, eyes opening) instead of closing for good or
  passing weak stretches;
- ``rate:N``: a running percentile whose P adapts so that N triggers per minute go out
  (:class:`RateControl`), for protocols that ask for a number of stimuli rather than a level;
- ``none``.

Everything is on the sample clock and learnt from the samples and the deliveries alone, so the
gate is causal and deterministic: live decides as replay does. The running window takes the
amplitude at fixed sample positions (every :data:`GATE_TICK_S` of samples); with an estimator
that keeps its per-sample amplitude (``wiener``) it does not depend on the chunking either.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

import numpy as np

from closedloop.protocol import TriggerSettings

__all__ = [
    "GATE_TICK_S",
    "AmplitudeGate",
    "RateControl",
    "RunningPercentile",
    "baseline_rate_percentile",
]

#: The running window takes one amplitude per this much of the sample clock (6000 values in the
#: default 60 s window): far finer than the amplitude's own changes (the band's width, 5 Hz,
#: decorrelates it in about 0.1 s), far coarser than the sampling.
GATE_TICK_S = 0.01

_RUNNING_KINDS = ("running", "rate")


class RunningPercentile:
    """Percentiles of the newest ``capacity`` values pushed (a FIFO kept sorted alongside).

    ``push`` costs O(log n) comparisons plus one list move; ``percentile`` is O(1), with numpy's
    default (linear) interpolation.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}.")
        self.capacity = int(capacity)
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, value: float) -> None:
        """Add ``value`` (finite), dropping the oldest once full."""
        if len(self._fifo) == self.capacity:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        self._fifo.append(value)
        insort(self._sorted, value)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the values held; NaN when empty."""
        n = len(self._sorted)
        if n == 0:
            return math.nan
        pos = min(max(q, 0.0), 100.0) / 100.0 * (n - 1)
        low = math.floor(pos)
        high = min(low + 1, n - 1)
        frac = pos - low
        return self._sorted[low] + (self._sorted[high] - self._sorted[low]) * frac


class RateControl:
    """The percentile of a ``rate:N`` gate, adapted to hold N triggers per minute.

    An integral controller on the sample clock: every delivered trigger raises the percentile by
    ``gain`` points, every second of time the gate could have triggered in lowers it by
    ``gain * N / 60``; at N per minute the two balance. ``gain = 100 / (N * window_min)``: a rate
    off by 100 % for one whole gate window would move the percentile across its full range, so
    the controller settles in a fraction of the window (its time constant is the window times
    the ratio of N to the rate with the gate fully open) and one trigger moves it little. The
    percentile stays in [0, 100], so an unreachable rate does not wind it up.
    """

    def __init__(self, per_min: float, window_s: float, start_percentile: float) -> None:
        self.per_min = float(per_min)
        self.gain = 100.0 / (self.per_min * window_s / 60.0)
        self.percentile = min(max(float(start_percentile), 0.0), 100.0)

    def elapse(self, seconds: float) -> None:
        self.percentile = max(0.0, self.percentile - self.gain * self.per_min / 60.0 * seconds)

    def delivered(self) -> None:
        self.percentile = min(100.0, self.percentile + self.gain)


def baseline_rate_percentile(
    track: np.ndarray,
    sfreq: float,
    target_phase_deg: float,
    min_interval_s: float,
    per_min: float,
) -> float:
    """The percentile of the baseline's amplitude at which its own estimate would have given
    ``per_min`` triggers per minute (where a ``rate:N`` gate starts).

    ``track`` is the estimator's analytic estimate over the baseline, one complex value per
    sample (NaN where none). A trigger is an upward crossing of the target phase between two
    estimates whose amplitude is above the threshold, at least ``min_interval_s`` after the last;
    the percentile is bisected. 0 when even an open gate gives fewer, 100 when no estimate.
    """
    idx = np.flatnonzero(np.isfinite(track))
    if idx.shape[0] < 2:
        return 100.0
    z = track[idx] * np.exp(-1j * math.radians(target_phase_deg))
    rel = np.angle(z)
    step = np.angle(z[1:] * np.conj(z[:-1]))
    up = (rel[:-1] <= 0.0) & (step > 0.0) & (rel[:-1] + step > 0.0)
    at = np.flatnonzero(up)
    times = idx[at] / sfreq
    amps = np.abs(z[at])
    minutes = (idx[-1] - idx[0] + 1) / sfreq / 60.0
    values = np.abs(z)

    def rate(threshold: float) -> float:
        count, last = 0, -math.inf
        for t, a in zip(times, amps):
            if a >= threshold and t - last >= min_interval_s:
                count += 1
                last = t
        return count / minutes

    if rate(-math.inf) <= per_min:
        return 0.0
    low, high = 0.0, 100.0
    for _ in range(14):
        mid = 0.5 * (low + high)
        if rate(float(np.percentile(values, mid))) > per_min:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


class AmplitudeGate:
    """The protocol's amplitude gate (see the module's docstring for the kinds).

    The threshold is first set from the baseline's envelope (:meth:`calibrate`); the gate then
    moves to the estimator's own amplitude, which has no envelope-filter lag, against the same
    statistic of its values over the baseline (:meth:`use_estimator`). The engine tells a
    running gate the amplitude of every sample it processes (:meth:`observe`), and a rate gate
    how long it could trigger (:meth:`elapse`) and when a trigger went out (:meth:`delivered`).
    """

    def __init__(self, trigger: TriggerSettings) -> None:
        self.kind = trigger.gate_kind
        self.value = trigger.gate_value
        self.window_s = float(trigger.gate_window_s)
        self.min_interval_s = float(trigger.min_interval_s)
        self.target_phase_deg = float(trigger.target_phase_deg)
        self.reset()

    def reset(self) -> None:
        self.threshold = 0.0
        self.on_estimator = False
        self.window: RunningPercentile | None = None
        self.rate: RateControl | None = None
        self._tick = 1
        self._phase = 0  # samples since the last tick
        self.active_s = 0.0  # sample-clock time the gate could have triggered in (not held)

    @property
    def running(self) -> bool:
        """The threshold follows the session (``running`` or ``rate``)."""
        return self.kind in _RUNNING_KINDS

    @property
    def percentile(self) -> float:
        """The percentile the threshold is at (``percentile``, ``running``, ``rate``), else NaN."""
        if self.rate is not None:
            return self.rate.percentile
        return float(self.value) if self.kind in ("percentile", "running") else math.nan

    def calibrate(self, envelope: np.ndarray, sfreq: float) -> float:
        """Set the threshold from the baseline's envelope (1-D, at ``sfreq``); returns it."""
        if self.running:
            self._tick = max(1, round(GATE_TICK_S * sfreq))
            self._phase = 0
            self.window = RunningPercentile(max(1, round(self.window_s / (self._tick / sfreq))))
            if self.kind == "rate":
                self.rate = RateControl(self.value, self.window_s, 50.0)
        self.threshold = self._from_envelope(envelope, sfreq)
        return self.threshold

    def _from_envelope(self, env: np.ndarray, sfreq: float) -> float:
        if self.kind == "none":
            return 0.0
        if self.kind == "uv":
            return float(self.value)
        # skip the envelope filter's own settling at the start of the baseline
        settle = min(env.size // 4, int(sfreq))
        values = env[settle:]
        values = values[np.isfinite(values)]
        if values.size == 0:
            return math.inf
        return float(np.percentile(values, self.percentile))

    def use_estimator(self, estimator) -> None:
        """A percentile gate on the fitted estimator's own amplitude, where it offers one; a
        running gate's window seeded with it over the baseline (one value per tick)."""
        threshold = getattr(estimator, "amplitude_threshold", None)
        if self.kind == "percentile" and threshold is not None:
            value = float(threshold(self.value))
            if math.isfinite(value):
                self.threshold = value
                self.on_estimator = True
            return
        track = getattr(estimator, "baseline_track", None)
        if not self.running or track is None or self.window is None:
            return
        finite = np.flatnonzero(np.isfinite(track))
        if finite.shape[0] == 0:
            return
        # the first estimate in each tick's span of the baseline, oldest first
        _, first = np.unique(finite // self._tick, return_index=True)
        seed = np.abs(track[finite[first]])
        for value in seed[-self.window.capacity :]:
            self.window.push(float(value))
        if self.rate is not None:
            self.rate.percentile = baseline_rate_percentile(
                track, estimator.sfreq, self.target_phase_deg, self.min_interval_s, self.value
            )
        self.on_estimator = True
        self._update()

    def observe(self, estimator, n_samples: int, held: bool) -> None:
        """The estimator has just taken ``n_samples``; a running window takes its amplitude at
        the ticks among them (none while ``held``: artifacts do not move the gate)."""
        if self.window is None or not self.on_estimator or n_samples <= 0:
            return
        first = (self._tick - 1 - self._phase) % self._tick  # offset of the first tick
        self._phase = (self._phase + n_samples) % self._tick
        if first >= n_samples or held:
            return
        amps = estimator.recent_amplitudes(n_samples)[first :: self._tick]
        for value in amps:
            if math.isfinite(value):
                self.window.push(float(value))
        self._update()

    def elapse(self, seconds: float) -> None:
        """``seconds`` of sample clock passed in which the gate could trigger (the rate gate
        counts its rate over this time)."""
        self.active_s += seconds
        if self.rate is not None and self.on_estimator:
            self.rate.elapse(seconds)
            self._update()

    def delivered(self) -> None:
        """A trigger went out (rate gate)."""
        if self.rate is not None and self.on_estimator:
            self.rate.delivered()
            self._update()

    def _update(self) -> None:
        value = self.window.percentile(self.percentile) if self.window is not None else math.nan
        if math.isfinite(value):
            self.threshold = value

    def process(self, amplitude: float) -> bool:
        """Whether ``amplitude`` opens the gate."""
        return amplitude >= self.threshold

    def summary(self) -> dict:
        """What the gate is at now: kind, threshold, percentile (NaN where none), window and
        the seconds it could have triggered in."""
        return {
            "kind": self.kind,
            "threshold_uv": self.threshold,
            "percentile": self.percentile,
            "window_s": self.window_s if self.running else None,
            "active_s": round(self.active_s, 6),
            "on_estimator": self.on_estimator,
        }
