"""Continuity of the input's timestamps: lost samples, time going back, overlapping chunks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GAP_TOLERANCE_S", "Continuity", "TimestampCheck"]

#: A jump in timestamps counts as a gap (lost samples) beyond this, or 2.5 samples if longer:
#: amplifier drivers that stamp chunks with their push time jitter by a few milliseconds.
GAP_TOLERANCE_S = 0.02


@dataclass(frozen=True)
class Continuity:
    """What one chunk's timestamps say against the previous chunk's.

    ``kind`` is ``"ok"``, ``"gap"`` (``missing`` samples were lost), ``"backwards"`` (time went
    back or repeated: it cannot time a stimulus) or ``"overlap"`` (a small overlap, as from
    push-time stamps with jitter: counted, not held).
    """

    kind: str
    missing: int = 0


OK = Continuity("ok")
BACKWARDS = Continuity("backwards")
OVERLAP = Continuity("overlap")


class TimestampCheck:
    """Compares each chunk's first sample time with the previous chunk's newest.

    Parameters
    ----------
    sfreq : float
        The input's nominal rate, Hz.
    gap_tolerance_s : float
        Jumps up to this (or 2.5 samples, if longer) are not gaps.
    """

    def __init__(self, sfreq: float, gap_tolerance_s: float = GAP_TOLERANCE_S) -> None:
        self.sfreq = float(sfreq)
        self.dt = 1.0 / self.sfreq
        self.gap_tolerance_s = float(gap_tolerance_s)
        self.reset()

    def reset(self) -> None:
        self.last_ts: float | None = None

    def process(self, n: int, newest_ts: float) -> Continuity:
        """Check a chunk of ``n`` samples whose newest is at ``newest_ts``."""
        last, self.last_ts = self.last_ts, newest_ts
        if last is None:
            return OK
        dt = self.dt
        step = (newest_ts - (n - 1) * dt) - last
        if newest_ts <= last:
            return BACKWARDS
        if step < -0.5 * dt:
            return OVERLAP
        if step > max(2.5 * dt, self.gap_tolerance_s):
            return Continuity("gap", int(round(step * self.sfreq)) - 1)
        return OK
