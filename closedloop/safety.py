"""The one place where stimulation limits are enforced, at the moment of delivery.

Whatever the estimator, the input or the protocol says, :class:`SafetyGate` allows a
trigger (a single pulse or a whole burst) only if

- the input is good and not held after an artifact;
- at least ``min_interval_s`` (plus this interval's jitter draw) has passed since the last
  delivered trigger, and never less than ``MIN_INTERVAL_FLOOR_S`` (so never more than
  ``MAX_TRIGGER_RATE_HZ`` triggers per second);
- fewer than ``max_triggers`` have been delivered (0 = no limit).
"""

from __future__ import annotations

import math

import numpy as np

from closedloop.protocol import MIN_INTERVAL_FLOOR_S, TriggerSettings

__all__ = ["TIME_TOLERANCE_S", "SafetyGate"]

# Protocol intervals are compared with this slack so that a delivery planned at exactly
# last + interval is not refused for a rounding error; far below any stimulator's resolution.
# MIN_INTERVAL_FLOOR_S is compared without it.
TIME_TOLERANCE_S = 1e-9


class SafetyGate:
    """Decides, at delivery, whether a trigger may go out now.

    Parameters
    ----------
    trigger : TriggerSettings
        The protocol's trigger section (interval, jitter, maximum count, burst length).
    seed : int or None
        Seed of the jitter draws; the same seed gives the same intervals (replay is
        deterministic). None draws from the operating system.

    Attributes
    ----------
    n_delivered : int
        Triggers delivered since construction or :meth:`reset`.
    last_time_s : float or None
        Time of the last delivered trigger.
    required_interval_s : float
        The interval the next trigger must keep from the last one (jitter included).

    Notes
    -----
    Use :meth:`check` to ask and :meth:`record` once the trigger went out; the engine's holds
    (artifacts, gaps, pauses) reach :meth:`check` as ``input_ok``. :meth:`record` refuses a time that breaks the interval or count
    limits (``RuntimeError``), so a caller that skipped :meth:`check` cannot overstimulate.
    """

    def __init__(self, trigger: TriggerSettings, seed: int | None = 0) -> None:
        if not isinstance(trigger, TriggerSettings):
            raise TypeError(f"SafetyGate needs TriggerSettings, not {type(trigger).__name__}.")
        self.trigger = trigger
        self.seed = seed
        # The floor applies even to settings built around validation; a burst must also end
        # before the next may start.
        self.min_interval_s = max(
            float(trigger.min_interval_s),
            MIN_INTERVAL_FLOOR_S,
            trigger.burst_duration_s + MIN_INTERVAL_FLOOR_S,
        )
        self.jitter_s = max(0.0, float(trigger.min_interval_jitter_s))
        self.max_triggers = max(0, int(trigger.max_triggers))
        self.reset()

    def reset(self) -> None:
        """Forget all deliveries; restart the jitter draws from the seed."""
        self._rng = np.random.default_rng(self.seed)
        self.n_delivered = 0
        self.last_time_s: float | None = None
        self.required_interval_s = self._draw_interval()

    def _draw_interval(self) -> float:
        if self.jitter_s == 0.0:
            return self.min_interval_s
        return self.min_interval_s + float(self._rng.uniform(0.0, self.jitter_s))

    def check(self, time_s: float, input_ok: bool = True) -> str | None:
        """Whether a trigger may be delivered at ``time_s``.

        Parameters
        ----------
        time_s : float
            Delivery time in seconds, on the clock of earlier :meth:`record` calls.
        input_ok : bool
            False while the input is bad (artifact, NaN, gap) or the stream is held.

        Returns
        -------
        str or None
            None when allowed, else the reason in a few words.
        """
        time_s = float(time_s)
        if not math.isfinite(time_s):
            return f"the delivery time {time_s} is not a finite number"
        if not input_ok:
            return "the input is bad or held"
        if self.max_triggers and self.n_delivered >= self.max_triggers:
            return f"max_triggers = {self.max_triggers} reached"
        if self.last_time_s is not None:
            since = time_s - self.last_time_s
            # the floor itself gets no slack: the rate ceiling is exact
            limit = max(self.required_interval_s - TIME_TOLERANCE_S, MIN_INTERVAL_FLOOR_S)
            if since < limit:
                return (
                    f"{since:.3f} s since the last trigger, "
                    f"{self.required_interval_s:.3f} s required"
                )
        return None

    def record(self, time_s: float) -> None:
        """Note a trigger (or burst) delivered at ``time_s``; draws the next interval.

        Raises
        ------
        RuntimeError
            If ``time_s`` breaks the interval or count limits: a delivery must be asked
            for with :meth:`check` first.
        """
        reason = self.check(time_s, input_ok=True)
        if reason is not None:
            raise RuntimeError(f"safety limit: a trigger at {time_s} s is not allowed ({reason}).")
        self.n_delivered += 1
        self.last_time_s = float(time_s)
        self.required_interval_s = self._draw_interval()
