"""What the engine hands to the world: a delivered :class:`Trigger` and a :class:`State` per chunk.

Both are frozen dataclasses (../shared/CONTRACTS.md, "Python API"): live sessions pass them to
``on_trigger`` / ``on_state`` callbacks and stimulators, replay returns its triggers as a list of
them, and the State stream's channels are :data:`STATE_FIELDS`, in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["STATE_FIELDS", "State", "Trigger"]

#: The State stream's channels, in order (../shared/CONTRACTS.md, "LSL streams").
STATE_FIELDS = ("sample_ts", "phase_deg", "amplitude", "feedback", "gate")


@dataclass(frozen=True)
class Trigger:
    """One delivered (or, for a stimulator, being delivered) trigger.

    Attributes
    ----------
    seq : int
        1, 2, ... in delivery order within a session.
    time_s : float
        Delivery time, seconds, in the engine's clock: live, the LSL clock of this machine
        (the input stream's timestamps after time correction); replay, seconds from the
        recording's first sample.
    sample_ts : float
        Time of the newest input sample the decision used (same clock).
    event : str
        ``"stim"``, or ``"sham"`` in a sham protocol.
    target_phase_deg : float
        The phase aimed at (drawn per trigger in a random-phase protocol).
    phase_deg : float
        The estimated phase at the delivery time.
    amplitude : float
        The estimated band amplitude, microvolts.
    scheduled_s : float
        The planned delivery time (``time_s`` minus the delivery error).
    crossing_s : float
        The predicted time of the target phase (delivery + the stimulator's technical delay).
    pulses : int
        Pulses in this trigger's burst.
    pulse_interval_s : float
        Time between the burst's pulses.
    sample : int or None
        Replay: the index of the delivery sample, as in ``events.tsv``; live: None.
    protocol : str
        The protocol's name.
    """

    seq: int
    time_s: float
    sample_ts: float
    event: str
    target_phase_deg: float
    phase_deg: float
    amplitude: float
    scheduled_s: float = math.nan
    crossing_s: float = math.nan
    pulses: int = 1
    pulse_interval_s: float = 0.0
    sample: int | None = None
    protocol: str = ""


@dataclass(frozen=True)
class State:
    """What the engine knows after one processed chunk: one sample of the State stream.

    Attributes
    ----------
    sample_ts : float
        Time of the chunk's newest input sample (engine clock, see :class:`Trigger`).
    phase_deg : float
        Estimated phase at that sample (NaN before the estimator is ready).
    amplitude : float
        Estimated band amplitude, microvolts.
    feedback : float
        The protocol's feedback value (NaN where it has none).
    gate : bool
        True when triggering is allowed right now.
    time_s : float
        Live: when the State sample was pushed (LSL clock); replay: ``sample_ts``.
    """

    sample_ts: float
    phase_deg: float
    amplitude: float
    feedback: float
    gate: bool
    time_s: float = math.nan

    def as_row(self) -> tuple[float, float, float, float, float]:
        """The State stream's channels (:data:`STATE_FIELDS`) as floats."""
        return (self.sample_ts, self.phase_deg, self.amplitude, self.feedback, 1.0 if self.gate else 0.0)
