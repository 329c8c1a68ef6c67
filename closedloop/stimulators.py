"""Output devices a live session drives at each delivered trigger.

A :class:`Stimulator` is anything with a ``fire(trigger)`` method: the serial TTL box
(:class:`TTLStimulator`), the sound card (``closedloop.sound``), or a user's own device passed to
``cl.Session(stimulators=[...])``. The session calls it on its timing thread at the moment of
delivery, after the safety gate allowed the trigger, so ``fire`` must return within a fraction of
a millisecond: hand anything slow to a thread of your own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from closedloop.records import Trigger

__all__ = ["Stimulator", "TTLStimulator", "stimulator_latency_s"]


@runtime_checkable
class Stimulator(Protocol):
    """The interface of an output device (a structural protocol: no base class needed).

    Required
    --------
    fire(trigger) -> float | Mapping | None
        Deliver the stimulus for ``trigger`` now. ``trigger.time_s`` is the moment the session
        decided to deliver. Return None, or the time (LSL ``local_clock()``) the stimulus
        actually went out if the device knows it better (the TTL box returns the time its code
        byte was written), or a mapping whose ``"time_s"`` entry, if any, is that time and whose
        other entries are added to the trigger's marker (e.g. a sound card's scheduled onset).
        Raising is counted in the session's summary; it never stops the session.

    Optional
    --------
    pulse(trigger, index) -> None
        The later pulses of a burst (``index`` 1 .. ``trigger.pulses - 1``), at their times.
        Without it, only the first pulse of a burst is delivered to this device.
    latency_s : float
        Fixed delay between ``fire`` and the stimulus reaching the person; the session fires
        this much earlier, exactly as the protocol's ``technical_delay_s``.
    close() -> None
        Called once when the session ends.
    on_state(state) -> None
        Each :class:`~closedloop.records.State`, once per processed chunk, on the loop thread
        (a feedback tone follows ``state.feedback``): store it and return, in microseconds.
    pause() -> None, resume() -> None
        Called at once (from the thread that asked) when an operator pauses or resumes the
        session, and ``pause()`` when it is stopped: a device that queues stimuli ahead of
        their onset (a sound card) cancels what has not begun. Must be thread-safe.
    summary() -> dict
        The device's own figures, added to the session's summary under ``stimulators``.
    """

    def fire(self, trigger: Trigger) -> float | Mapping[str, object] | None:
        """Deliver the stimulus for ``trigger`` now (see the class notes)."""
        ...


def stimulator_latency_s(stimulator: object) -> float:
    """The stimulator's declared ``latency_s`` (0 when it declares none)."""
    value = getattr(stimulator, "latency_s", 0.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if value > 0 else 0.0


class TTLStimulator:
    """TTL pulses through a serial trigger box, as a :class:`Stimulator`.

    Parameters
    ----------
    ttl : closedloop.ttl.SerialTTL
        An open port.
    stim_code, sham_code : int
        The byte sent for ``"stim"`` and ``"sham"`` triggers (1 and 2 by default).
    """

    latency_s = 0.0

    def __init__(self, ttl, *, stim_code: int = 1, sham_code: int = 2) -> None:
        self.ttl = ttl
        self.stim_code = ttl.check_code(stim_code)
        self.sham_code = ttl.check_code(sham_code)

    def _code(self, trigger: Trigger) -> int:
        return self.sham_code if trigger.event == "sham" else self.stim_code

    def fire(self, trigger: Trigger) -> float | None:
        """Write the code byte now; the delivery time is the moment it was written."""
        return self.ttl.trigger(self._code(trigger))

    def pulse(self, trigger: Trigger, index: int) -> None:
        """A later pulse of the burst, due now: written at once, like the first one.

        The loop has waited for its time; handing it to the port's thread instead would add that
        thread's wake-up (milliseconds on a busy machine, enough to merge two pulses on the
        line). While the previous pulse is still up, the port's thread sends it right after.
        """
        self.ttl.trigger(self._code(trigger))

    def close(self) -> None:
        self.ttl.close()

    def __repr__(self) -> str:
        return f"TTLStimulator(port={self.ttl.port!r}, stim_code={self.stim_code}, sham_code={self.sham_code})"
