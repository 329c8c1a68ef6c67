"""Sample times from stream timestamps that jitter.

Many amplifier drivers do not stamp samples when they were acquired but when the driver pushed
them: liblsl then stamps a chunk's newest sample with the push time and back-fills the rest at
the nominal rate. Bluetooth and USB links deliver in bursts, so those stamps are late by a
varying 0-40 ms (Wearable Sensing's DSI driver, as reported on its LSL app, pushed every 9th
sample 35 ms apart). Two things go wrong when such stamps are taken as sample times:

- a trigger is timed from the newest sample: a stamp late by ``j`` makes it late by ``j``,
  360 * f * j degrees of phase (40 ms is 144 degrees at 10 Hz);
- a late stamp followed by a prompt one looks like lost samples, and every such false gap
  restarts the filters and holds triggering.

:class:`SampleClock` maps the newest stamp of each chunk onto the amplifier's sample clock. Push
stamps are never early, so the sample clock is the lower envelope of the stamps against the sample
count. Per block of 0.25 s the lowest stamp is kept; the amplifier's true rate (up to a few per
cent off the nominal one) is the least-squares slope through the last 30 s of block minima, used
once it is precise; the envelope's level is the lowest of the last 2 s of minima along that slope
and rises by at most 1 ms per block. A chunk's time is that line, or its own stamp if lower (a
stamp below the line is followed at once). Until the first blocks are in, the estimate follows
stamps below it and creeps towards later ones (``creep_s``). A jump between successive stamps
larger than twice the jitter seen so far (and at least ``MIN_JUMP_S``) is not jitter but lost
samples or a clock step: the clock then starts again from that stamp (the fitted rate is kept),
so the engine sees the jump and handles it as it does with raw stamps.

liblsl's own ``proc_dejitter`` smooths with a recursive least-squares line through all stamps: its
line sits at the mean delay rather than at the envelope, and after lost samples it stays wrong for
about its 90 s half-time (it counts samples across the gap). Hence this class; it costs a few
arithmetic operations per chunk and a 120-point fit four times a second.

Measured (tests/lsl/test_dejitter.py, `python -m pytest -s tests/lsl/test_dejitter.py`): a 500 Hz stream in
chunks of 5 stamped at push, 0-40 ms late (median 23 ms), comes out 1-2 ms late in the median and
within -3..+8 ms after 3 s; 0 false gaps where the raw stamps make about 70 in 12 s.
"""

from __future__ import annotations

import math
from collections import deque

#: Jumps between successive stamps up to this are always taken as jitter at first; beyond it as
#: a gap until jitter that large has been seen (the engine's own gap tolerance, 20 ms).
MIN_JUMP_S = 0.02
#: A jump counts as a gap when it exceeds this multiple of the largest recent jitter.
JUMP_FACTOR = 2.0
#: Jitter beyond this is not learnt as jitter (a driver late by a quarter of a second is broken).
MAX_JITTER_S = 0.25
#: Memory of the jitter bound, seconds.
JITTER_MEMORY_S = 30.0
#: Length of the blocks whose minimum stamps fit the rate, and how many are kept.
BLOCK_S = 0.25
N_BLOCKS = 120
#: A block closes only with at least this many chunks in it (a backlog pulled at once is one).
MIN_BLOCK_CHUNKS = 5
#: The envelope's level is the lowest minimum of this many recent blocks.
ENVELOPE_BLOCKS = 8
#: The envelope's level rises by at most this much per block (4 ms/s).
MAX_RISE_S = 0.001
MAX_RISE_UNKNOWN_RATE_S = 0.006
#: The fitted rate stays within this fraction of the nominal one.
MAX_RATE_ERROR = 0.05
#: A fitted rate is used once its standard error, over this span, is below the tolerance.
RATE_CHECK_S = 2.0
RATE_TOLERANCE_S = 0.002


class SampleClock:
    """Dejitter stream timestamps chunk by chunk: :meth:`update` returns the newest sample's time.

    Parameters
    ----------
    sfreq : float
        Nominal sampling rate, Hz.
    creep_s : float
        Time constant with which the estimate rises towards stamps above it (a lasting increase
        of the driver's delay); drops below it are followed at once.
    learn_s : float
        For this long after the first chunk, jumps up to ``MAX_JITTER_S`` are learnt as jitter
        rather than taken as gaps (the jitter bound starts unknown).

    Attributes
    ----------
    n_resyncs : int
        Restarts at a jump (gaps, clock steps), after the first chunk.
    jitter_s : float
        The largest recent deviation of successive stamps from the sample count (decays over
        ``JITTER_MEMORY_S``).
    offset_s : float
        Raw stamp minus dejittered time for the newest chunk (0 when the stamps are exact).
    """

    def __init__(self, sfreq: float, *, creep_s: float = 1.0, learn_s: float = 1.0) -> None:
        self.dt_nominal = 1.0 / float(sfreq)
        self.dt = self.dt_nominal
        self.creep_s = float(creep_s)
        self.learn_s = float(learn_s)
        self.n_resyncs = 0
        self.rate_known = False
        self.jitter_s = 0.0
        self.offset_s = 0.0
        self.max_offset_s = 0.0
        self._seen_s = 0.0  # stream time since the first chunk
        self._last_stamp = math.nan
        self._block_n = max(1, round(BLOCK_S / self.dt_nominal))  # samples per block
        self._restart()

    def _restart(self) -> None:
        self.newest = math.nan
        self._count = 0  # samples in this segment
        self._blocks: deque[tuple[float, float]] = deque(maxlen=N_BLOCKS)
        self._block_end = self._block_n
        self._block_min = (math.inf, 0.0)  # (u, count) of the lowest stamp in the open block
        self._block_chunks = 0
        self._line: tuple[float, float] | None = None  # (intercept, slope) of u against the count

    @property
    def rate_hz(self) -> float:
        """The amplifier's rate as fitted from the stamps (nominal until it can be)."""
        return 1.0 / self.dt

    def threshold_s(self) -> float:
        """Jumps between successive stamps beyond this are gaps or clock steps."""
        return max(MIN_JUMP_S, 2.5 * self.dt_nominal, JUMP_FACTOR * self.jitter_s)

    def update(self, stamp: float, n: int) -> float:
        """Take a chunk of ``n`` samples whose newest is stamped ``stamp``; its dejittered time."""
        if n <= 0 or not math.isfinite(stamp):
            return stamp
        chunk_s = n * self.dt_nominal
        if self._count == 0:
            return self._start(stamp, n)
        jump = stamp - self._last_stamp - chunk_s
        self._last_stamp = stamp
        size = abs(jump)
        learning = self._seen_s < self.learn_s
        self._seen_s += chunk_s
        if size > (MAX_JITTER_S if learning else self.threshold_s()):
            self.n_resyncs += 1
            self._restart()
            return self._start(stamp, n, first=False)
        decay = math.exp(-chunk_s / JITTER_MEMORY_S)
        self.jitter_s = max(min(size, MAX_JITTER_S), self.jitter_s * decay)

        self._count += n
        self._fit_rate(stamp)
        if self._line is not None:
            # the line through the block minima: at the envelope, at the amplifier's rate
            intercept, slope = self._line
            line = intercept + self._count * (self.dt_nominal + slope)
            self.newest = min(stamp, line)
        else:
            # until three blocks are in: follow stamps below at once, rise slowly towards later ones
            predicted = self.newest + n * self.dt
            late = stamp - predicted
            if late <= 0.0:
                self.newest = stamp
            else:
                self.newest = predicted + late * (1.0 - math.exp(-chunk_s / self.creep_s))
        self.offset_s = stamp - self.newest
        self.max_offset_s = max(self.max_offset_s, self.offset_s)
        return self.newest

    def _start(self, stamp: float, n: int, first: bool = True) -> float:
        self.newest = stamp
        self._last_stamp = stamp
        self._count = n
        self.offset_s = 0.0
        if first:
            self._seen_s = n * self.dt_nominal
        return stamp

    def _fit_rate(self, stamp: float) -> None:
        """Track the block minimum of the stamps against the count; per block, refit the rate
        (kept once it is precise, and across restarts: a gap does not change the amplifier's
        rate) and the envelope's level."""
        u = stamp - self._count * self.dt_nominal
        if u < self._block_min[0]:
            self._block_min = (u, float(self._count))
        self._block_chunks += 1
        if self._count < self._block_end or self._block_chunks < MIN_BLOCK_CHUNKS:
            return
        self._blocks.append(self._block_min)
        self._block_min = (math.inf, 0.0)
        self._block_chunks = 0
        self._block_end = self._count + self._block_n
        m = len(self._blocks)
        if m < 3:
            return  # the envelope's level needs a few blocks: until then the creeping estimate
        mean_c = sum(c for _, c in self._blocks) / m
        mean_u = sum(v for v, _ in self._blocks) / m
        scc = sum((c - mean_c) ** 2 for _, c in self._blocks)
        if scc > 0.0:
            slope = sum((c - mean_c) * (v - mean_u) for v, c in self._blocks) / scc
            residual = sum((v - mean_u - slope * (c - mean_c)) ** 2 for v, c in self._blocks)
            stderr = math.sqrt(residual / max(m - 2, 1) / scc)
            limit = MAX_RATE_ERROR * self.dt_nominal
            # precise enough that over RATE_CHECK_S its error stays below RATE_TOLERANCE_S
            if stderr * RATE_CHECK_S / self.dt_nominal < RATE_TOLERANCE_S and abs(slope) <= limit:
                self.dt = self.dt_nominal + slope
                self.rate_known = True
        slope = self.dt - self.dt_nominal  # the nominal rate until the fit is precise
        # through the lowest of the recent block minima: the line is the envelope, not the
        # minima's mean, and the slope's error is not carried far
        # (until the rate is known, over the last two blocks only: a rate far from nominal
        # then costs little)
        recent = list(self._blocks)[-(ENVELOPE_BLOCKS if self.rate_known else 2) :]
        level = min(v - slope * c for v, c in recent)
        if self._line is not None:
            # rise towards a higher level step by step: the times stay smooth when a low minimum
            # leaves the window (falls are followed at once, by the stamps themselves); faster
            # while the rate is not known, to follow a rate far from nominal
            before = self._line[0] + self._count * self._line[1]
            rise = MAX_RISE_S if self.rate_known else MAX_RISE_UNKNOWN_RATE_S
            level = min(level, before + rise - slope * self._count)
        self._line = (level, slope)

    def summary(self) -> dict:
        return {
            "resyncs": self.n_resyncs,
            "jitter_ms": round(self.jitter_s * 1e3, 3),
            "max_offset_ms": round(self.max_offset_s * 1e3, 3),
            "rate_hz": round(self.rate_hz, 6),
        }
