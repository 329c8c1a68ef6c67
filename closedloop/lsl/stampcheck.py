"""Are a stream's timestamps plausible against this machine's clock?

A chunk cannot arrive before its newest sample was taken, and on a working link it arrives within
a transport delay of it (on one machine well under a millisecond; over USB or Bluetooth with a
push-stamping driver tens of milliseconds). Two faults break that and mislead the loop:

- stamps *ahead* of the local clock: the newest sample is stamped later than the moment it
  arrives. mne-lsl's ``PlayerLSL`` stamps each chunk with the time its last sample would have
  been taken had the file been acquired live, and pushes it at once, a chunk early. Latencies
  measured from such stamps come out negative (or are clipped to zero), and a trigger planned
  from them is planned for data that has not happened;
- stamps *behind* by more than any transport delay: the sender's clock is not synchronised with
  this machine (LSL's time correction failed or the driver stamps with a clock of its own), or
  the data arrive far too late to close a loop on.

:class:`StampCheck` takes each chunk's lag (arrival on the local clock minus the newest sample's
stamp, after LSL's time correction) and judges it per window of stream time: the median lag of a
window below ``-ahead_tol_s`` is "ahead", the smallest lag of a window above ``max_delay_s`` is
"behind". Each is reported once, when first seen, and counted.
"""

from __future__ import annotations

import math

import numpy as np

#: A window's median lag below minus this is "ahead" (LSL's time correction is good to well
#: under a millisecond on a LAN).
AHEAD_TOL_S = 0.001
#: A window's smallest lag above this is "behind": more than any transport delay.
MAX_DELAY_S = 0.25
#: Stream time per judged window, seconds.
WINDOW_S = 2.0
#: Most chunks kept per window (a window with more is judged early).
MAX_CHUNKS = 8192


class StampCheck:
    """Judge the lag of a stream's chunks (arrival minus newest stamp) window by window.

    Parameters
    ----------
    window_s : float
        Seconds of stream time per judged window.
    ahead_tol_s, max_delay_s : float
        A window is "ahead" when its median lag is below ``-ahead_tol_s``, "behind" when its
        smallest lag is above ``max_delay_s``.

    Attributes
    ----------
    ahead, behind : bool
        Seen at least once.
    windows, windows_ahead, windows_behind : int
        Windows judged, and how many were ahead or behind.
    """

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        ahead_tol_s: float = AHEAD_TOL_S,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        self.window_s = float(window_s)
        self.ahead_tol_s = float(ahead_tol_s)
        self.max_delay_s = float(max_delay_s)
        self._lags = np.empty(MAX_CHUNKS)
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._span = 0.0
        self.ahead = False
        self.behind = False
        self.windows = 0
        self.windows_ahead = 0
        self.windows_behind = 0
        self.lag_min_s = math.inf
        self.lag_max_s = -math.inf
        self.last_median_s = math.nan
        self._medians: list[float] = []

    def update(self, lag_s: float, chunk_s: float) -> str | None:
        """Take one chunk's lag; a sentence the first time the stamps are found ahead or behind."""
        if not math.isfinite(lag_s):
            return None
        self._lags[self._n] = lag_s
        self._n += 1
        self._span += chunk_s
        self.lag_min_s = min(self.lag_min_s, lag_s)
        self.lag_max_s = max(self.lag_max_s, lag_s)
        if self._span < self.window_s and self._n < MAX_CHUNKS:
            return None
        return self._judge()

    def _judge(self) -> str | None:
        lags = self._lags[: self._n]
        median = float(np.median(lags))
        smallest = float(lags.min())
        self._n = 0
        self._span = 0.0
        self.windows += 1
        self.last_median_s = median
        if len(self._medians) < 100_000:
            self._medians.append(median)
        message = None
        if median < -self.ahead_tol_s:
            self.windows_ahead += 1
            if not self.ahead:
                self.ahead = True
                message = (
                    f"the input stream's timestamps run {-median * 1e3:.1f} ms ahead of this "
                    "machine's clock (its newest sample is stamped later than it arrives; mne-lsl's "
                    "PlayerLSL stamps each chunk a chunk early). Sample times are taken as at most "
                    "their arrival, and latencies are measured from it"
                )
        elif smallest > self.max_delay_s:
            self.windows_behind += 1
            if not self.behind:
                self.behind = True
                message = (
                    f"the input stream's timestamps are {smallest * 1e3:.0f} ms or more behind this "
                    f"machine's clock, more than a transport delay ({self.max_delay_s * 1e3:.0f} ms): "
                    "the sender's clock is not synchronised with this machine, or its data arrive "
                    "too late to close a loop on; triggers timed from these stamps are off"
                )
        return message

    def summary(self) -> dict:
        medians = np.asarray(self._medians)
        return {
            "stamps_ahead": self.ahead,
            "stamps_behind": self.behind,
            "windows_judged": self.windows,
            "windows_ahead": self.windows_ahead,
            "windows_behind": self.windows_behind,
            "arrival_minus_stamp_ms_min": _ms(self.lag_min_s),
            "arrival_minus_stamp_ms_median": _ms(float(np.median(medians))) if medians.size else None,
            "arrival_minus_stamp_ms_max": _ms(self.lag_max_s),
        }


def _ms(value: float) -> float | None:
    return round(value * 1e3, 3) if math.isfinite(value) else None
