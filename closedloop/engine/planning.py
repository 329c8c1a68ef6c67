"""Trigger planning: the one rule by which live and replay decide alike.

The engine decides once per chunk. A trigger is planned from a chunk only if its delivery falls
in the planning window

    [t + L + lead, t + L + lead + horizon]

on the sample clock, with ``t`` the chunk's newest sample, ``L`` = :data:`DECISION_LATENCY_S`
(the time the live loop is given to act), ``horizon`` one usual chunk (:func:`planning_horizon_s`)
and ``lead`` 0, except live on a stream whose chunks usually arrive late (:class:`ArrivalLead`).
Successive windows tile the time axis, so no crossing falls between them; a crossing beyond the
window is left to the next chunk, which estimates it better. Replay delivers a plan at its
planned time (:func:`replay_delivery_s`), as the live scheduler does before the next chunk
arrives; live delivers it on the clock and drops it if it is later than the phase tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from closedloop.angles import wrap_deg
from closedloop.protocol import TriggerSettings

__all__ = [
    "DECISION_LATENCY_S",
    "ArrivalLead",
    "TriggerPlan",
    "TriggerPlanner",
    "arrival_slack_s",
    "planning_horizon_s",
    "replay_delivery_s",
]

#: Time the live loop is given between a chunk's newest sample and its decision being carried out
#: (transport, processing, the wait before delivery). Triggers are planned from the newest sample
#: plus this much onwards, in replay exactly as live, so that the two decide alike and live is on
#: time while its latency stays below it (p99 0.5 ms at 64 ch / 5 kHz; at 0.5 ms about one trigger
#: in 40 went out late); the planning windows of successive chunks still tile the time axis, so no
#: crossing falls between them. Longer costs accuracy: every plan predicts further ahead (S001R02
#: O1, wiener, circular SD 13.1 deg at 0, 14.4-14.5 at 0.5-1 ms, 15.4 at 2 ms; the BDF within noise).
DECISION_LATENCY_S = 0.001


@dataclass
class TriggerPlan:
    """A trigger the engine wants delivered at ``time_s``."""

    time_s: float  # delivery time: predicted crossing minus the stimulator's technical delay
    crossing_s: float  # predicted time of the target phase
    target_phase_deg: float
    phase_deg: float  # estimated phase at the delivery time
    amplitude: float
    sample_ts: float  # newest input sample the decision used
    tolerance_s: float  # how late delivery may be before the trigger must be dropped
    event: str
    pulses: int = 1
    pulse_interval_s: float = 0.0
    seq: int = 0  # set on delivery


def planning_horizon_s(chunk_size: int, sfreq: float) -> float:
    """The planning window's length: one usual chunk (``chunk_size`` samples at ``sfreq``)."""
    return chunk_size / sfreq


def replay_delivery_s(plan: TriggerPlan, newest_ts: float) -> float:
    """When replay delivers ``plan`` made from a chunk whose newest sample is at ``newest_ts``:
    at its planned time, which the window never puts before the chunk itself."""
    return max(plan.time_s, newest_ts)


def arrival_slack_s(trigger: TriggerSettings, band_hz: tuple[float, float]) -> float:
    """How late a chunk may arrive before the window moves on (:class:`ArrivalLead`): the
    decision latency plus half the phase tolerance at the band's centre (plans late by less
    still go out, so prompt streams keep the replay rule exactly)."""
    return DECISION_LATENCY_S + 0.5 * trigger.phase_tolerance_deg / (360.0 * sum(band_hz) / 2.0)


class TriggerPlanner:
    """Turns the estimator's predicted crossing into a :class:`TriggerPlan` inside the window.

    Parameters
    ----------
    trigger : TriggerSettings
        Target phase (or random phase), technical delay, phase tolerance, event and burst.
    seed : int
        Seed of the random target phases of a sham protocol (replay is deterministic).
    output_delay_s : float
        The output devices' own latency, taken off every plan as ``technical_delay_s`` is.
    """

    def __init__(self, trigger: TriggerSettings, *, seed: int = 0, output_delay_s: float = 0.0) -> None:
        if not (math.isfinite(output_delay_s) and 0.0 <= output_delay_s <= 1.0):
            raise ValueError(f"output_delay_s must be 0 to 1 s, got {output_delay_s!r}.")
        self.trigger = trigger
        self.seed = seed
        self.output_delay_s = float(output_delay_s)
        self.reset()

    def reset(self) -> None:
        """Restart the random target phases from the seed."""
        self.rng = np.random.default_rng(self.seed)

    def process(
        self,
        estimator,
        newest_ts: float,
        newest_work_ts: float,
        frequency_hz: float,
        fallback_hz: float,
        amplitude: float,
        horizon_s: float,
        lead_s: float,
        safety,
        gate: Callable[[float], bool] | None = None,
    ) -> TriggerPlan | None:
        """A plan for the estimator's crossing of the target inside the window, or None.

        ``newest_ts`` is the chunk's newest input sample, ``newest_work_ts`` the time of the
        estimator's newest (working-rate) sample; ``frequency_hz`` the estimated frequency
        (``fallback_hz`` when it is not positive); ``safety`` a :class:`~closedloop.safety.SafetyGate`
        asked whether the planned time could be delivered at all; ``gate`` (the amplitude gate)
        asked about the crossing's certainty (:class:`~closedloop.estimators.base.Crossing`).

        The estimator is given the window of crossing times, relative to its newest sample
        (:meth:`~closedloop.estimators.base.PhaseEstimator.window_crossing`), so that one that
        predicts for the horizon asked can do so.
        """
        trig = self.trigger
        target = trig.target_phase_deg
        if trig.random_phase:
            target = wrap_deg(float(self.rng.uniform(-180.0, 180.0)))
        delays_s = trig.technical_delay_s + self.output_delay_s
        earliest = newest_ts + DECISION_LATENCY_S + lead_s
        latest = earliest + horizon_s
        if safety.check(latest, input_ok=True) is not None:
            # the limits only ever refuse the times before a bound (the interval since the last
            # trigger) or all times (the count): refused at the window's end, refused throughout
            # it, whatever the crossing; window_crossing is a pure query, so not asking it
            # changes nothing
            return None
        start_s = earliest + delays_s - newest_work_ts
        found = estimator.window_crossing(target, start_s, start_s + horizon_s)
        if found is None:
            return None
        crossing = newest_work_ts + found.wait_s
        fire = crossing - trig.technical_delay_s - self.output_delay_s
        if fire > latest:
            return None
        freq = frequency_hz if frequency_hz > 0 else fallback_hz
        tolerance_s = trig.phase_tolerance_deg / (360.0 * freq)
        if fire < earliest:
            # planned by the previous chunk's window, or passed already (inside the decimator's
            # delay); never planned late by design
            return None
        if gate is not None and not gate(found.certainty):
            return None
        if safety.check(fire, input_ok=True) is not None:
            return None
        if math.isfinite(found.phase_deg):
            phase_at_fire = wrap_deg(found.phase_deg - 360.0 * freq * (crossing - fire))
        else:
            phase_at_fire = wrap_deg(estimator.phase_deg + 360.0 * freq * (fire - newest_work_ts))
        return TriggerPlan(
            time_s=fire,
            crossing_s=crossing,
            target_phase_deg=target,
            phase_deg=phase_at_fire,
            amplitude=float(estimator.amplitude) if math.isfinite(estimator.amplitude) else amplitude,
            sample_ts=newest_ts,
            tolerance_s=tolerance_s,
            event=trig.event,
            pulses=trig.pulses,
            pulse_interval_s=trig.pulse_interval_s,
        )


class ArrivalLead:
    """How much later than usual to open the planning window when chunks arrive late.

    A chunk that arrives ``lag`` after its newest sample's (dejittered) time cannot act on a
    crossing due before it arrived. The engine plans from the newest sample plus
    ``DECISION_LATENCY_S``; when the stream's chunks usually arrive later than the slack the
    caller gives (:func:`arrival_slack_s`), as from a bursty link or a push-stamping driver, the
    window is moved on by whole chunks, so that it still tiles the time axis, until the
    ``quantile`` of the recent lags falls inside it. On a prompt stream the lead stays 0 and live
    plans exactly as replay does.
    """

    def __init__(self, quantile: float = 0.9, step_s: float = 0.0002) -> None:
        self.quantile = float(quantile)
        self.step_s = float(step_s)
        self.reset()

    def reset(self) -> None:
        self.lag_s = 0.0  # running estimate of the lags' quantile
        self.chunks = 0  # current lead, in chunks
        self.max_lead_s = 0.0

    def process(self, lag_s: float, slack_s: float, horizon_s: float) -> float:
        """Take one chunk's arrival lag; the lead to plan with, seconds (a multiple of the horizon)."""
        if lag_s > self.lag_s:
            self.lag_s += self.step_s * self.quantile
        else:
            self.lag_s -= self.step_s * (1.0 - self.quantile)
        if horizon_s <= 0:
            return 0.0
        need = (self.lag_s - slack_s) / horizon_s
        if need > self.chunks:
            self.chunks = math.ceil(need)
        elif need < self.chunks - 1.25:  # hysteresis: no flapping between neighbours
            self.chunks = max(0, math.ceil(need))
        lead = self.chunks * horizon_s
        self.max_lead_s = max(self.max_lead_s, lead)
        return lead
