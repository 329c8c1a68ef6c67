"""The audio output's clock: which output frame is heard at which LSL time.

A sound card plays its frames at its own crystal's rate, a few to a few hundred parts per
million away from the computer's clock, and each audio callback learns when the first frame of
the buffer it fills will reach the DAC (PortAudio's ``outputBufferDacTime``, mapped to the LSL
clock). Those per-callback readings scatter by tens to hundreds of microseconds and, with some
drivers, wander by a millisecond or two for seconds at a time, while the true relation is a
straight line (a frame is played exactly ``1 / rate`` after the one before it). So the clock is
a least-squares line through the readings with exponential forgetting (``window_s``): it follows
a real drift in the card's rate and averages the reading noise away. A reading far off the line
(a late callback) is left out; many in a row mean the timeline really moved (an underrun, a
device restart), and the line starts again from the new readings.
"""

from __future__ import annotations

import math

__all__ = ["DacClock"]


class DacClock:
    """Output frame index <-> LSL time, fitted from the audio callbacks' DAC-time readings.

    Parameters
    ----------
    samplerate : float
        The stream's nominal rate (Hz).
    window_s : float
        Time constant of the forgetting: readings older than this weigh less (1/e per window).
    jump_s : float
        A reading further than this from the line is an outlier ...
    jumps_to_reset : int
        ... and this many outliers in a row restart the fit.

    Notes
    -----
    :meth:`update` is called from the audio callback only; :meth:`time_of` and
    :meth:`frame_of` may be called from any thread: they read :attr:`line`, one tuple replaced
    whole at each update.
    """

    #: Below this span of readings the rate is taken as nominal (a slope from a few
    #: milliseconds of noisy readings would be worse than none).
    MIN_SPAN_S = 0.25

    def __init__(self, samplerate: float, *, window_s: float = 30.0, jump_s: float = 0.003,
                 jumps_to_reset: int = 20) -> None:
        if not (samplerate > 0 and math.isfinite(samplerate)):
            raise ValueError(f"samplerate must be a positive number of Hz, got {samplerate!r}.")
        self.samplerate = float(samplerate)
        self.window_s = float(window_s)
        self.jump_s = float(jump_s)
        self.jumps_to_reset = int(jumps_to_reset)
        self.n_updates = 0
        self.n_outliers = 0
        self.n_resets = 0
        self.reset()

    def reset(self) -> None:
        """Forget every reading (the next one anchors a new line)."""
        self._f0 = None  # reference frame, and the nominal line's time there
        self._t0 = 0.0
        self._s0 = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._last_frame = None
        self._run = 0
        #: ``(frame, time_s, seconds_per_frame)``: the line through ``frame`` at ``time_s``.
        self.line: tuple[float, float, float] | None = None

    @property
    def ready(self) -> bool:
        return self.line is not None

    @property
    def rate_hz(self) -> float:
        """The fitted rate: frames per second of the LSL clock (NaN before the first reading)."""
        line = self.line
        return 1.0 / line[2] if line is not None else math.nan

    def time_of(self, frame: float) -> float:
        """LSL time at which output frame ``frame`` reaches the DAC."""
        f, t, p = self.line
        return t + (frame - f) * p

    def frame_of(self, time_s: float) -> float:
        """Output frame (fractional) that reaches the DAC at LSL time ``time_s``."""
        f, t, p = self.line
        return f + (time_s - t) / p

    def update(self, frame: int, time_s: float) -> None:
        """One callback's reading: output frame ``frame`` reaches the DAC at ``time_s``."""
        fs = self.samplerate
        if self._f0 is None:
            self._f0 = float(frame)
            self._t0 = float(time_s)
        elif self.line is not None and self._s0 > 0:
            predicted = self.time_of(frame)
            if abs(time_s - predicted) > self.jump_s:
                self.n_outliers += 1
                self._run += 1
                if self._run >= self.jumps_to_reset:
                    self.n_resets += 1
                    self.reset()
                    self.update(frame, time_s)
                return
        self._run = 0
        if self._last_frame is not None:
            forget = math.exp(-(frame - self._last_frame) / fs / self.window_s)
            self._s0 *= forget
            self._sx *= forget
            self._sy *= forget
            self._sxx *= forget
            self._sxy *= forget
        self._last_frame = frame
        x = frame - self._f0
        if x / fs > self.window_s:  # keep the numbers small: move the reference frame here
            self._recentre(x)
            x = 0.0
        y = time_s - (self._t0 + x / fs)  # the reading against the nominal line, seconds
        self._s0 += 1.0
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        self.n_updates += 1
        s0 = self._s0
        mean_x = self._sx / s0
        mean_y = self._sy / s0
        var_x = self._sxx / s0 - mean_x * mean_x
        slope = 0.0
        if var_x > 0 and math.sqrt(var_x * 12.0) / fs >= self.MIN_SPAN_S:
            slope = (self._sxy / s0 - mean_x * mean_y) / var_x
        # the line through the readings' centroid, expressed at the newest frame
        t_at = self._t0 + mean_x / fs + mean_y + (x - mean_x) * (1.0 / fs + slope)
        self.line = (float(frame), float(t_at), float(1.0 / fs + slope))

    def _recentre(self, shift: float) -> None:
        d = shift
        self._sxx = self._sxx - 2.0 * d * self._sx + d * d * self._s0
        self._sxy = self._sxy - d * self._sy
        self._sx = self._sx - d * self._s0
        self._f0 += d
        self._t0 += d / self.samplerate

    def summary(self) -> dict:
        rate = self.rate_hz
        return {
            "rate_hz": round(float(rate), 4) if math.isfinite(rate) else None,
            "rate_ppm": round(float(rate / self.samplerate - 1.0) * 1e6, 2) if math.isfinite(rate) else None,
            "readings": self.n_updates,
            "outliers": self.n_outliers,
            "restarts": self.n_resets,
        }
