"""Is the input plausibly EEG in microvolts? A check on the first seconds of data.

Units that are declared wrongly (or not at all) put every absolute threshold of a protocol a
thousand or a million times off: a stream in volts read as microvolts looks flat to the artifact
check and holds triggering for good, one in nanovolts is over every amplitude limit; either way
the session runs and never triggers, silently. EEG's robust amplitude (the spread of a few seconds
of signal, after its DC level and drift are removed) lies between about 1 and 200 µV on any
montage; below 0.1 µV or above 10 mV it is not EEG in the units it is taken in.

:class:`UnitsCheck` is a streaming stage like the others (settings at construction, ``process``,
``reset``): it collects the first ``window_s`` of the channels a protocol uses and judges them. The
caller holds triggering while :attr:`UnitsCheck.ok` is False; it is False until the first window is
judged and stays False while windows keep looking implausible (a start-up transient lets a later
window pass). Once a window passes, the check costs one attribute test per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from closedloop.units import factor_name, factor_symbol

#: Robust amplitude below which the data are not EEG in microvolts, µV.
LOW_UV = 0.1
#: Robust amplitude above which the data are not EEG in microvolts, µV (10 mV).
HIGH_UV = 1e4
#: Typical robust amplitude of EEG, µV: the unit the data "look like" is the one that brings
#: them nearest to it.
TYPICAL_UV = 20.0
#: Candidate corrections (factors to microvolts relative to the units the data are taken in).
_CORRECTIONS = (1e6, 1e3, 1.0, 1e-3, 1e-6)
#: Scale factor of the median absolute deviation to a normal distribution's standard deviation.
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class UnitsCheckSettings:
    """How the check judges: the window it looks at and the amplitude range it accepts (µV)."""

    window_s: float = 2.0
    low_uv: float = LOW_UV
    high_uv: float = HIGH_UV

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds, got {self.window_s!r}.")
        if not (0 < self.low_uv < self.high_uv):
            raise ValueError(
                f"need 0 < low_uv < high_uv, got low_uv={self.low_uv!r}, high_uv={self.high_uv!r}."
            )


def robust_amplitude(x: np.ndarray) -> np.ndarray:
    """Per channel of ``(n_channels, n)``: the spread after a straight line is taken out.

    1.4826 times the median absolute deviation of the detrended signal (the standard deviation
    for normal data), over the finite samples; NaN for a channel with fewer than 3 of them.
    """
    out = np.full(x.shape[0], np.nan)
    t = np.arange(x.shape[1], dtype=np.float64)
    for i, row in enumerate(x):
        ok = np.isfinite(row)
        if ok.sum() < 3:
            continue
        tt, yy = t[ok], row[ok]
        slope, intercept = np.polyfit(tt, yy, 1)
        resid = yy - (intercept + slope * tt)
        out[i] = _MAD_TO_SD * float(np.median(np.abs(resid - np.median(resid))))
    return out


class UnitsCheck:
    """Judge whether the channels a protocol uses carry plausible EEG amplitudes in microvolts.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the chunks, Hz.
    channels : sequence of int
        Rows of the chunk to judge (the channels the protocol's derived signal uses).
    ch_names : sequence of str, optional
        Labels of those rows, for messages.
    declared_scale : float, optional
        The factor that turned the source's values into the microvolts given to :meth:`process`
        (1e6 for a stream declared in volts); the check then says which units the source's
        values look like. None when the channels were scaled differently or it is unknown.
    settings : UnitsCheckSettings
        The window and the accepted range.

    Attributes
    ----------
    status : str
        ``"pending"`` (the first window is not complete), ``"ok"`` or ``"implausible"``.
    amplitude_uv : float
        The robust amplitude of the last judged window (median over the channels), µV.
    correction : float
        The factor the values are off by: 1 when plausible, 1e6 when they look like volts taken
        as microvolts, ...; NaN when no unit makes them plausible (or pending).
    windows : int
        Windows judged so far.
    """

    def __init__(
        self,
        sfreq: float,
        channels: Sequence[int],
        *,
        ch_names: Sequence[str] | None = None,
        declared_scale: float | None = 1.0,
        settings: UnitsCheckSettings = UnitsCheckSettings(),
    ) -> None:
        if not (math.isfinite(sfreq) and sfreq > 0):
            raise ValueError(f"sfreq must be a positive rate in Hz, got {sfreq!r}.")
        self.channels = np.asarray(list(channels), dtype=np.intp)
        if self.channels.size == 0:
            raise ValueError("the check needs at least one channel to judge.")
        self.ch_names = list(ch_names) if ch_names is not None else [f"#{i}" for i in self.channels]
        if len(self.ch_names) != self.channels.size:
            raise ValueError(
                f"ch_names has {len(self.ch_names)} entries for {self.channels.size} channels."
            )
        self.sfreq = float(sfreq)
        self.declared_scale = declared_scale
        self.settings = settings
        self.window_n = max(3, round(settings.window_s * self.sfreq))
        self._buf = np.empty((self.channels.size, self.window_n))
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next chunks start a new first window."""
        self._fill = 0
        self.status = "pending"
        self.ok = False
        self.amplitude_uv = math.nan
        self.correction = math.nan
        self.windows = 0
        self.first_verdict: str | None = None

    def process(self, chunk: np.ndarray) -> bool:
        """Take one chunk ``(n_channels, n)`` (µV); True when triggering may go on."""
        if self.ok:
            return True
        n = chunk.shape[1]
        start = 0
        while start < n:
            take = min(n - start, self.window_n - self._fill)
            self._buf[:, self._fill : self._fill + take] = chunk[self.channels, start : start + take]
            self._fill += take
            start += take
            if self._fill == self.window_n:
                self._judge()
                self._fill = 0
                if self.ok:
                    return True
        return False

    def _judge(self) -> None:
        amp = robust_amplitude(self._buf)
        amp = amp[np.isfinite(amp)]
        if amp.size == 0 or float(np.median(amp)) == 0.0:
            return  # no finite signal, or exactly flat: nothing to judge the units by; next window
        value = float(np.median(amp))
        self.windows += 1
        self.amplitude_uv = value
        s = self.settings
        if s.low_uv <= value <= s.high_uv:
            self.status, self.ok, self.correction = "ok", True, 1.0
        else:
            self.status, self.ok = "implausible", False
            fits = [f for f in _CORRECTIONS if s.low_uv <= value * f <= s.high_uv]
            self.correction = (
                min(fits, key=lambda f: abs(math.log(value * f / TYPICAL_UV))) if fits else math.nan
            )
        if self.first_verdict is None:
            self.first_verdict = self.status

    @property
    def looks_like(self) -> float | None:
        """Factor to microvolts of the units the source's values look like (None if unknown)."""
        if not math.isfinite(self.correction) or self.declared_scale is None:
            return None
        return self.declared_scale * self.correction

    def message(self) -> str:
        """One or two sentences on an implausible verdict: what was seen and what to do."""
        s = self.settings
        where = ", ".join(self.ch_names[:4]) + (" ..." if len(self.ch_names) > 4 else "")
        side = "below" if self.amplitude_uv < s.low_uv else "above"
        text = (
            f"the input's amplitude on {where} is {self.amplitude_uv:.3g} µV (robust, over "
            f"{s.window_s:g} s), far {side} EEG's ({s.low_uv:g} µV to {s.high_uv / 1e3:g} mV)"
        )
        like = self.looks_like
        if like is not None:
            taken = factor_name(self.declared_scale) if self.declared_scale is not None else "?"
            text += (
                f": the values look like {factor_name(like)}, but are taken as {taken}. "
                f"If they are {factor_name(like)}, give --units {factor_symbol(like)}"
            )
        elif math.isfinite(self.correction):
            text += f": the values look {self.correction:g} times too small; give --units"
        else:
            text += ": no unit makes them plausible EEG; check the amplifier and its units"
        return text + "."

    def summary(self) -> dict:
        return {
            "status": self.status,
            "first_verdict": self.first_verdict,
            "amplitude_uv": None if math.isnan(self.amplitude_uv) else float(self.amplitude_uv),
            "looks_like": factor_name(self.looks_like) if self.looks_like is not None else None,
            "windows_judged": self.windows,
            "window_s": self.settings.window_s,
        }
