"""Timing qualification on the lab's own hardware: the TTL output looped back into the amplifier.

The analysis behind ``closedloop bench loopback``, on a session recording (``--record`` XDF: the
input stream with its trigger channel, the Markers stream, and the ``FILE.xdf.summary.json``
beside it when there is one):

1. **Sample clock.** The input stream's timestamps are mapped onto this machine's clock (the
   recording's clock offsets) and then onto the amplifier's sample clock: per stretch between
   gaps, the straight line below every stamp that lies closest to them (the lower envelope;
   stamps can be late, never early, so this removes push-time jitter; exact stamps lie on it).
2. **Edges.** A rising edge is the first sample at which the trigger channel is "high" after a
   sample that is not: any nonzero level by default, the lines of a code (``--trigger-code``), or
   a level above a threshold (``--trigger-threshold``, for a TTL into an analog input).
3. **Pulses.** Every marker is one trigger with its planned delivery time (``scheduled_ts``) and
   its number of pulses (a train is spaced by the protocol's ``pulse_interval_s``); the time each
   code byte was written comes from the marker (the delivery time) or, when the session logged
   them, from the serial port's own log of every pulse.
4. **Pairing.** The typical delay is the densest cluster of edge-minus-plan differences within
   ``max_delay_s``; each planned pulse then takes the edge nearest to its plan plus that delay
   within ``window_s`` (and never past half the way to a neighbouring pulse, so the pairing keeps
   the order). A pulse left without an edge then takes the first free edge after its window, up
   to ``max_delay_s`` and short of the next pulse's window ("late": it counts in the delays, so the
   tail is not hidden). Pulses still without an edge are missed, edges without a pulse are extra;
   all are counted and listed.
5. **Figures.** The loop-back delay is edge time minus planned delivery time: p50, p95, p99, max,
   with bootstrap 95 % confidence intervals (percentile method, fixed seed); also the delivery
   (write minus plan) and the transit (edge minus write). With a signal channel, the true phase at
   each edge (:class:`closedloop.groundtruth.GroundTruth`, the truth of ``bench accuracy``)
   against the trigger's target: circular mean, SD, n.

An edge is the first sample at the new level, so edge times are quantised to the sampling step:
up to one step late, half a step on average.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from closedloop.errors import DataError, UsageError

__all__ = [
    "EdgeRule",
    "LoopbackData",
    "Pairing",
    "PlannedPulse",
    "analyse",
    "bootstrap_ci",
    "find_edges",
    "fit_sample_clock",
    "load_xdf",
    "pair_edges",
    "planned_pulses",
]

logger = logging.getLogger(__name__)

#: Edges are searched this far either side of a planned pulse to find the typical delay.
MAX_DELAY_S = 0.1
#: An edge pairs with a pulse when it lies this close to the pulse's plan plus the typical delay.
WINDOW_S = 0.02
#: Bootstrap resamples for the confidence intervals, and their seed.
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
#: Extra edges allowed before the trigger line counts as driven by a second source: this share
#: of the pulses sent, and at least ``MIN_EXTRA_ALLOWED``.
EXTRA_SHARE = 0.1
MIN_EXTRA_ALLOWED = 1
#: A jump of the stamps against the sample count beyond this (or 2.5 sampling steps) that lasts
#: (``PERSIST_S`` later the stamps have not come back) is a gap: lost samples or a clock step.
GAP_MIN_S = 0.02
PERSIST_S = 1.0
#: The lower envelope is fitted through at most this many block minima per stretch.
HULL_MAX_POINTS = 20000
#: A fitted rate further than this from the nominal one is not used (the nominal rate is).
MAX_RATE_ERROR = 0.05
#: A marker's pulse matches a write in the serial log this close to its plan (or later).
SENT_EARLY_S = 0.002
#: Half-width of the cluster that finds the typical delay: this, or two sampling steps.
CLUSTER_MIN_S = 0.002


# ---------------------------------------------------------------------- edges
@dataclass(frozen=True)
class EdgeRule:
    """When the trigger channel is "high": a nonzero level (default), a code's lines, or a level
    above a threshold.

    Parameters
    ----------
    code : int, optional
        High when every line of ``code`` is set: ``(round(level) & code) == code``. For a channel
        that holds the TTL box's byte, ``--trigger-code 1`` sees stimulation pulses, 2 sham ones.
    threshold : float, optional
        High when the level is above this (a TTL into an analog input, in the channel's units).
    """

    code: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.code is not None and self.threshold is not None:
            raise UsageError("give --trigger-code or --trigger-threshold, not both.")
        if self.code is not None and (
            isinstance(self.code, bool) or not isinstance(self.code, (int, np.integer)) or not 1 <= int(self.code) < 2**31
        ):
            raise UsageError(f"--trigger-code {self.code!r} is not usable; give a whole number from 1 "
                                 "(the lines of the TTL box's byte, e.g. 1 for stimulation, 2 for sham).")
        if self.threshold is not None and not math.isfinite(float(self.threshold)):
            raise UsageError(f"--trigger-threshold {self.threshold!r} must be a finite number.")

    def high(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of the samples at which the line is high (NaN counts as low)."""
        v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if self.threshold is not None:
            return v > float(self.threshold)
        if self.code is not None:
            code = int(self.code)
            return (np.rint(v).astype(np.int64) & code) == code
        return v != 0

    def describe(self) -> str:
        if self.threshold is not None:
            return f"level above {self.threshold:g}"
        if self.code is not None:
            return f"the lines of code {int(self.code)} set"
        return "any nonzero level"


def find_edges(values: np.ndarray, rule: EdgeRule) -> np.ndarray:
    """Sample indices of the rising edges: high samples whose predecessor is not high."""
    high = rule.high(values)
    return np.flatnonzero(high[1:] & ~high[:-1]) + 1


# ---------------------------------------------------------------------- sample clock
@dataclass
class SampleClockFit:
    """The amplifier's sample clock: a time for every sample, on this machine's clock.

    Attributes
    ----------
    times : ndarray
        Time of each sample (the lower envelope of the stamps, per stretch between gaps).
    starts : ndarray of int
        First sample of each stretch.
    rate_hz : float
        The rate fitted over the longest stretch.
    max_lateness_s : float
        The largest stamp minus its sample-clock time (jitter of push-time stamps; 0 when exact).
    notes : list of str
    """

    times: np.ndarray
    starts: np.ndarray
    rate_hz: float
    max_lateness_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_gaps(self) -> int:
        return int(self.starts.size - 1)


def _lower_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the lower convex hull of points sorted by ``x`` (Andrew's monotone chain)."""
    hx: list[float] = []
    hy: list[float] = []
    for px, py in zip(x.tolist(), y.tolist()):
        while len(hx) >= 2 and (hx[-1] - hx[-2]) * (py - hy[-2]) - (hy[-1] - hy[-2]) * (px - hx[-2]) <= 0:
            hx.pop()
            hy.pop()
        hx.append(px)
        hy.append(py)
    return np.asarray(hx), np.asarray(hy)


def _envelope_line(k: np.ndarray, u: np.ndarray) -> tuple[float, float]:
    """``(intercept, slope)`` of the line below every ``(k, u)`` with the least total distance.

    That line touches the lower convex hull along the edge above the mean of ``k`` (the
    linear-programming clock-skew estimate for one-way delays, Moon, Skelly & Towsley 1999).
    Long stretches are first reduced to block minima.
    """
    n = k.size
    if n == 1:
        return float(u[0]), 0.0
    block = max(1, -(-n // HULL_MAX_POINTS))
    if block > 1:
        m = (n // block) * block
        ub = u[:m].reshape(-1, block)
        arg = ub.argmin(axis=1)
        rows = np.arange(ub.shape[0])
        kx = np.concatenate([k[:m].reshape(-1, block)[rows, arg], k[m:]])
        uy = np.concatenate([ub[rows, arg], u[m:]])
    else:
        kx, uy = k, u
    hx, hy = _lower_hull(kx.astype(np.float64), uy)
    if hx.size == 1:
        return float(hy[0]), 0.0
    mean_k = float(k.mean())
    i = int(np.clip(np.searchsorted(hx, mean_k, side="right") - 1, 0, hx.size - 2))
    slope = (hy[i + 1] - hy[i]) / (hx[i + 1] - hx[i])
    return float(hy[i] - slope * hx[i]), float(slope)


def fit_sample_clock(stamps: np.ndarray, sfreq: float) -> SampleClockFit:
    """The amplifier's sample clock from a stream's timestamps (this machine's clock).

    Parameters
    ----------
    stamps : ndarray, shape (n_samples,)
        The samples' timestamps as recorded, on this machine's clock.
    sfreq : float
        The nominal rate, Hz.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n = stamps.size
    dt = 1.0 / sfreq
    notes: list[str] = []
    if n == 0:
        return SampleClockFit(stamps.copy(), np.zeros(1, dtype=int), sfreq, 0.0, notes)
    origin = float(stamps[0])
    k = np.arange(n, dtype=np.float64)
    u = (stamps - origin) - k * dt  # lateness against the nominal count, plus the clock's offset
    threshold = max(GAP_MIN_S, 2.5 * dt)
    persist = max(1, round(PERSIST_S * sfreq))
    steps = np.diff(u)
    breaks: list[int] = []
    for b in (np.flatnonzero(np.abs(steps) > threshold) + 1).tolist():
        start = max(breaks[-1] if breaks else 0, b - persist)
        before = u[start:b].min()
        after = u[b : b + persist].min()
        # lost samples lift the envelope for good; a late chunk does not (the next prompt one
        # brings it back). A lasting fall (a clock stepped back) needs a settled envelope before it.
        if after - before > threshold or (before - after > threshold and b - start >= persist // 2):
            breaks.append(b)
    starts = np.asarray([0, *breaks], dtype=int)
    stops = np.asarray([*breaks, n], dtype=int)
    times = np.empty(n)
    best_len, rate = 0, float(sfreq)
    for a, b in zip(starts.tolist(), stops.tolist()):
        kk, uu = k[a:b], u[a:b]
        intercept, slope = _envelope_line(kk, uu)
        if abs(slope) > MAX_RATE_ERROR * dt:
            notes.append(f"samples {a}-{b - 1}: the stamps give a rate {1.0 / (dt + slope):.3f} Hz, more than "
                         f"{100 * MAX_RATE_ERROR:g} % off the nominal {sfreq:g} Hz; the nominal rate is used there.")
            slope = 0.0
            intercept = float(uu.min())
        times[a:b] = origin + intercept + kk * (dt + slope)
        if b - a > best_len:
            best_len, rate = b - a, 1.0 / (dt + slope)
    lateness = stamps - times
    if lateness.size and lateness.min() < -1e-9:
        # only a line whose slope fell back to nominal can lie above a stamp; follow the stamp there
        times = np.minimum(times, stamps)
        lateness = stamps - times
    return SampleClockFit(times, starts, rate, float(lateness.max()) if n else 0.0, notes)


# ---------------------------------------------------------------------- pulses
@dataclass
class PlannedPulse:
    """One pulse the loop planned: the first of a trigger, or a later one of its train.

    Times are this machine's LSL clock (``local_clock()``).
    """

    seq: int
    pulse: int  # 0 for a trigger's first pulse, 1, 2, ... for the rest of its train
    event: str
    code: int  # the TTL code written: 2 for sham, 1 otherwise
    planned_s: float
    sent: bool  # written to the port (taken as written when the session kept no serial log)
    sent_s: float  # when the code byte was written (NaN when not known)
    target_phase_deg: float  # the trigger's target (NaN for the later pulses of a train)


def planned_pulses(
    markers: list[tuple[float, dict]],
    pulse_interval_s: float | None,
    ttl_log: list[tuple[int, float]] | None = None,
    *,
    max_delay_s: float = MAX_DELAY_S,
) -> list[PlannedPulse]:
    """The pulses of the recorded triggers, in planned order.

    Parameters
    ----------
    markers : list of (float, dict)
        ``(timestamp, payload)`` of each closedloop marker: the timestamp is the delivery time
        (the first pulse's write time), the payload holds ``seq``, ``scheduled_ts``, ``pulses``,
        ``event`` and ``target_phase_deg``.
    pulse_interval_s : float or None
        Spacing of a train's pulses (the protocol's ``pulse_interval_s``); needed only when a
        trigger has more than one pulse.
    ttl_log : list of (int, float), optional
        ``(code, t_written)`` of every pulse the serial port wrote. Given, it decides which pulses
        were sent and when; otherwise each pulse counts as sent, the first at the marker's time.
    """
    pulses: list[PlannedPulse] = []
    for ts, payload in markers:
        scheduled = float(payload["scheduled_ts"])
        n = int(payload.get("pulses") or 1)
        if n > 1 and pulse_interval_s is None:
            raise UsageError(
                f"trigger {payload.get('seq')} has a train of {n} pulses, but their spacing is unknown; "
                "give --protocol (its [trigger] pulse_interval_s)."
            )
        event = str(payload.get("event", "stim"))
        target = payload.get("target_phase_deg")
        for j in range(n):
            pulses.append(PlannedPulse(
                seq=int(payload.get("seq", 0)),
                pulse=j,
                event=event,
                code=2 if event == "sham" else 1,
                planned_s=scheduled + j * (pulse_interval_s or 0.0),
                sent=True,
                sent_s=float(ts) if j == 0 else math.nan,
                target_phase_deg=float(target) if j == 0 and target is not None else math.nan,
            ))
    pulses.sort(key=lambda p: p.planned_s)
    if ttl_log is not None:
        # each write belongs to the latest plan at or before it (writes are never early, and late
        # by far less than a train's spacing), in order; a write no plan explains is left over
        for p in pulses:
            p.sent, p.sent_s = False, math.nan
        plans = np.asarray([p.planned_s for p in pulses])
        last = -1
        for w in sorted(float(t) for _, t in ttl_log):
            j = int(np.searchsorted(plans, w + SENT_EARLY_S, side="right")) - 1
            if j > last and w - plans[j] <= max_delay_s:
                pulses[j].sent, pulses[j].sent_s = True, w
                last = j
    return pulses


# ---------------------------------------------------------------------- pairing
@dataclass
class Pairing:
    """Which edge belongs to which planned pulse.

    Attributes
    ----------
    edge_of_pulse : ndarray of int
        Index into the edges for each pulse, -1 where it has none.
    typical_delay_s : float
        The delay the pairing was centred on (NaN when no edge lies near any pulse).
    extra : ndarray of int
        Indices of the edges that belong to no pulse.
    late : ndarray of bool
        Pulses paired in the second pass, with an edge later than their window.
    """

    edge_of_pulse: np.ndarray
    typical_delay_s: float
    extra: np.ndarray
    late: np.ndarray  # pulses paired with an edge after their window (a late pulse, not a stray)


def _typical_delay(planned: np.ndarray, edges: np.ndarray, max_delay_s: float, half_width_s: float) -> float:
    diffs = []
    for p in planned.tolist():
        lo = np.searchsorted(edges, p - max_delay_s, side="left")
        hi = np.searchsorted(edges, p + max_delay_s, side="right")
        diffs.append(edges[lo:hi] - p)
    d = np.sort(np.concatenate(diffs)) if diffs else np.zeros(0)
    if d.size == 0:
        return math.nan
    counts = np.searchsorted(d, d + half_width_s, side="right") - np.searchsorted(d, d - half_width_s, side="left")
    best = d[counts == counts.max()]
    centre = float(best[np.argmin(np.abs(best))])
    near = d[np.abs(d - centre) <= half_width_s]
    return float(np.median(near))


def pair_edges(
    planned_s: np.ndarray,
    edge_s: np.ndarray,
    *,
    max_delay_s: float = MAX_DELAY_S,
    window_s: float = WINDOW_S,
    sample_step_s: float = 0.0,
) -> Pairing:
    """Pair edges with planned pulses by time and order (see the module's description).

    Parameters
    ----------
    planned_s, edge_s : ndarray
        Ascending times of the planned pulses and of the edges.
    max_delay_s : float
        Edges further than this from every pulse are never paired.
    window_s : float
        Half-width of a pulse's window around its plan plus the typical delay.
    sample_step_s : float
        The sampling step (widens the cluster that finds the typical delay on slow amplifiers).
    """
    planned = np.asarray(planned_s, dtype=np.float64)
    edges = np.asarray(edge_s, dtype=np.float64)
    edge_of_pulse = np.full(planned.size, -1, dtype=int)
    late = np.zeros(planned.size, dtype=bool)
    if planned.size == 0 or edges.size == 0:
        return Pairing(edge_of_pulse, math.nan, np.arange(edges.size), late)
    d0 = _typical_delay(planned, edges, max_delay_s, max(CLUSTER_MIN_S, 2.0 * sample_step_s))
    if not math.isfinite(d0):
        return Pairing(edge_of_pulse, math.nan, np.arange(edges.size), late)
    gaps = np.diff(planned)
    half_prev = np.concatenate([[math.inf], gaps / 2])
    half_next = np.concatenate([gaps / 2, [math.inf]])
    used = np.zeros(edges.size, dtype=bool)
    for i, p in enumerate(planned.tolist()):
        centre = p + d0
        # half-open cells [centre - w, centre + w): neighbouring cells touch but never overlap
        lo_w = min(window_s, half_prev[i])
        hi_w = min(window_s, half_next[i])
        lo = max(centre - lo_w, p - max_delay_s)
        hi = min(centre + hi_w, p + max_delay_s)
        a = np.searchsorted(edges, lo, side="left")
        b = np.searchsorted(edges, hi, side="left")
        if b > a:
            j = a + int(np.argmin(np.abs(edges[a:b] - centre)))
            if not used[j]:
                edge_of_pulse[i] = j
                used[j] = True
    # second pass: a pulse without an edge in its window takes the first free edge after it, up to
    # max_delay_s and short of the next pulse's window: a late pulse must weigh in the tail of the
    # delays, not vanish as "missed" plus "extra"
    for i in np.flatnonzero(edge_of_pulse < 0).tolist():
        p = planned[i]
        lo = p + d0 + min(window_s, half_next[i])
        hi = p + max_delay_s
        if i + 1 < planned.size:
            hi = min(hi, planned[i + 1] + d0 - min(window_s, half_next[i]))
        a = np.searchsorted(edges, lo, side="left")
        b = np.searchsorted(edges, hi, side="left")
        free = [j for j in range(a, b) if not used[j]]
        if free:
            edge_of_pulse[i] = free[0]
            used[free[0]] = True
            late[i] = True
    return Pairing(edge_of_pulse, d0, np.flatnonzero(~used), late)


# ---------------------------------------------------------------------- statistics
def bootstrap_ci(
    values: np.ndarray,
    percentiles: tuple[float, ...] = (50.0, 95.0, 99.0),
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> dict[float, tuple[float, float]]:
    """Bootstrap confidence intervals of percentiles (percentile method, seeded, reproducible).

    Returns ``{q: (low, high)}``; NaNs with fewer than two values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return {q: (math.nan, math.nan) for q in percentiles}
    rng = np.random.default_rng(seed)
    stats = np.empty((n_boot, len(percentiles)))
    per_block = max(1, 1_000_000 // v.size)  # resamples drawn at once (bounded memory)
    for start in range(0, n_boot, per_block):
        stop = min(n_boot, start + per_block)
        resampled = v[rng.integers(0, v.size, size=(stop - start, v.size))]
        stats[start:stop] = np.percentile(resampled, percentiles, axis=1).T
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail], axis=0)
    return {q: (float(lo), float(hi)) for q, lo, hi in zip(percentiles, low, high)}


def _summary_ms(values_s: np.ndarray, *, with_ci: bool = False, n_boot: int = N_BOOTSTRAP,
                seed: int = BOOTSTRAP_SEED) -> dict:
    v = np.asarray(values_s, dtype=np.float64)
    v = v[np.isfinite(v)] * 1e3
    out: dict = {"n": int(v.size)}
    if v.size:
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        out.update(p50=float(p50), p95=float(p95), p99=float(p99), max=float(v.max()), min=float(v.min()),
                   mean=float(v.mean()), sd=float(v.std(ddof=1)) if v.size > 1 else math.nan)
    else:
        out.update({key: math.nan for key in ("p50", "p95", "p99", "max", "min", "mean", "sd")})
    if with_ci:
        ci = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        for q in (50, 95, 99):
            out[f"ci95_p{q}"] = list(ci[float(q)])
    return out


# ---------------------------------------------------------------------- the recording
@dataclass
class LoopbackData:
    """What the analysis needs from one session recording.

    Times are this machine's LSL clock (the recording's clock offsets applied).
    """

    path: Path
    stream_name: str
    source_id: str
    sfreq: float
    ch_names: list[str]
    stamps: np.ndarray
    trigger_channel: str
    trigger: np.ndarray
    markers: list[tuple[float, dict]]
    signal_channel: str | None = None
    signal: np.ndarray | None = None  # µV
    summary: dict | None = None  # the run's summary, from FILE.xdf.summary.json
    notes: list[str] = field(default_factory=list)

    @property
    def ttl_log(self) -> list[tuple[int, float]] | None:
        ttl = (self.summary or {}).get("ttl")
        if not isinstance(ttl, dict) or not isinstance(ttl.get("sent"), list):
            return None
        return [(int(code), float(t)) for code, t in ttl["sent"]]

    @property
    def protocol_data(self) -> dict | None:
        proto = (self.summary or {}).get("protocol")
        return proto if isinstance(proto, dict) else None


def _first(value, default=None):
    while isinstance(value, list):
        value = value[0] if value else default
    return default if value is None else value


def _offset_map(stream: dict):
    """Clock offset of a stream as a function of its own time (a line through the recorded offsets).

    The XDF convention (LabRecorder) stamps each offset's collection time in the stream's clock;
    ``closedloop run``'s recorder stamps it in the recording machine's. Which one a file uses shows
    when the offset is large (the amplifier on another machine): the collection times then lie by
    the stream's own stamps, or that far away from them. Either way the line is read at the right
    moment, so that a drifting clock is not mapped off by drift times offset.
    """
    times = np.asarray(stream.get("clock_times") or [], dtype=np.float64)
    values = np.asarray(stream.get("clock_values") or [], dtype=np.float64)
    if values.size == 0:
        return lambda t: np.zeros_like(np.asarray(t, dtype=np.float64))
    med = float(np.median(values))
    if values.size < 3 or np.ptp(times) <= 0:
        return lambda t: np.full_like(np.asarray(t, dtype=np.float64), med)
    spread = np.median(np.abs(values - med)) * 5 + 1e-6
    keep = np.abs(values - med) <= spread  # one slow time-correction reply is not the clock
    slope, intercept = np.polyfit(times[keep] - times[0], values[keep], 1) if keep.sum() >= 2 else (0.0, med)
    t_ref = times[0]
    stamps = np.asarray(stream.get("time_stamps") if len(stream.get("time_stamps", [])) else [np.nan])
    middle = float(np.nanmedian(stamps))
    # collection times on the recording machine's clock: read the line at stamp + offset
    shift = med if math.isfinite(middle) and abs(np.median(times) - (middle + med)) < abs(np.median(times) - middle) else 0.0
    return lambda t: intercept + slope * (np.asarray(t, dtype=np.float64) + shift - t_ref)


def _closedloop_markers(streams: list[dict]) -> tuple[dict | None, list[tuple[float, dict]]]:
    """The marker stream with closedloop trigger markers (JSON with ``scheduled_ts``), mapped."""
    best, best_rows = None, []
    for s in streams:
        if _first(s["info"].get("channel_format")) != "string":
            continue
        rows = []
        for ts, value in zip(s["time_stamps"], s["time_series"]):
            text = value[0] if isinstance(value, (list, tuple, np.ndarray)) and len(value) else value
            try:
                payload = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(payload, dict) and "scheduled_ts" in payload and payload.get("scheduled_ts") is not None:
                rows.append((float(ts), payload))
        if len(rows) > len(best_rows):
            best, best_rows = s, rows
    if best is None:
        return None, []
    offset = _offset_map(best)
    mapped = []
    for ts, payload in best_rows:
        shift = float(offset(ts))
        payload = dict(payload, scheduled_ts=float(payload["scheduled_ts"]) + shift)
        mapped.append((ts + shift, payload))
    return best, mapped


def _read_sidecar(path: Path, notes: list[str]) -> dict | None:
    side = Path(str(path) + ".summary.json")
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{side.name} could not be read ({exc}); counts of planned pulses come from the markers.")
        return None
    return data if isinstance(data, dict) else None


def _find_label(wanted: str, labels: list[str], what: str, option: str) -> int:
    from closedloop.channels import find_channel

    try:
        return find_channel(wanted, labels)
    except DataError as exc:
        raise DataError(f"{option}: no {what} named {wanted!r} in the input stream. {exc}") from None


def check_channels(ch_names: list[str], trigger_channel: str, signal_channel: str | None) -> tuple[int, int | None]:
    """Indices of the trigger (and signal) channel in ``ch_names``; DataError naming the nearest."""
    trig = _find_label(trigger_channel, ch_names, "trigger channel", "--trigger-channel")
    sig = _find_label(signal_channel, ch_names, "signal channel", "--signal-channel") if signal_channel else None
    if sig is not None and sig == trig:
        raise UsageError(f"--signal-channel and --trigger-channel both name {ch_names[trig]!r}; the signal "
                         "channel is the EEG input the function generator's sine (or the EEG) goes into.")
    return trig, sig


def load_xdf(path: str | Path, *, trigger_channel: str, signal_channel: str | None = None,
             stream: str | None = None) -> LoopbackData:
    """Read a session recording for the analysis.

    Parameters
    ----------
    path : str or Path
        An XDF file written by ``closedloop run --record`` or ``closedloop bench loopback``
        (or LabRecorder, holding the input stream and closedloop's Markers stream).
    trigger_channel, signal_channel : str
        Channel labels in the input stream (matched across vendor spellings).
    stream : str, optional
        Name, type or source_id of the input stream, when more than one holds the trigger channel.

    Raises
    ------
    DataError
        Unreadable file, no marker stream, no input stream with the trigger channel (the nearest
        channel names are listed).
    """
    import pyxdf

    from closedloop.io import _xdf_channels

    path = Path(path)
    if not path.is_file():
        raise DataError(f"recording {str(path)!r} does not exist; give the XDF file of a session.")
    pyxdf_logger = logging.getLogger("pyxdf")
    level, propagate = pyxdf_logger.level, pyxdf_logger.propagate
    pyxdf_logger.setLevel(logging.ERROR)
    pyxdf_logger.propagate = False
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises many kinds on damaged files
        raise DataError(f"could not read {str(path)!r} as XDF: {exc}.") from exc
    finally:
        pyxdf_logger.setLevel(level)
        pyxdf_logger.propagate = propagate
    notes: list[str] = []
    listing = "; ".join(f"{_first(s['info'].get('name'), '?')!r} ({_first(s['info'].get('type'), '?')})"
                        for s in streams) or "none"
    _, markers = _closedloop_markers(streams)
    if not markers:
        raise DataError(f"{path.name!r} holds no closedloop trigger markers (JSON with scheduled_ts) "
                        f"(streams: {listing}); record the session with closedloop run --serial --record.")

    def label_of(s: dict) -> tuple[str, str, str]:
        info = s["info"]
        return (str(_first(info.get("name"), "")), str(_first(info.get("type"), "")),
                str(_first(info.get("source_id"), "")))

    pool = [s for s in streams if _first(s["info"].get("channel_format")) != "string"
            and float(_first(s["info"].get("nominal_srate"), 0) or 0) > 0 and len(s["time_stamps"]) > 1
            and label_of(s)[1] != "ClosedLoopState"]
    if stream is not None:
        pool = [s for s in pool if stream in label_of(s)]
        if not pool:
            raise DataError(f"{path.name!r} has no regular numeric stream named, typed or with source_id "
                            f"{stream!r} (streams: {listing}).")
    if not pool:
        raise DataError(f"{path.name!r} has no input stream with samples (streams: {listing}).")
    candidates = []
    for s in pool:
        n_ch = int(_first(s["info"].get("channel_count"), 1))
        labels = [ch["label"] or f"ch{i + 1}" for i, ch in enumerate(_xdf_channels(s["info"], n_ch))]
        try:
            idx = check_channels(labels, trigger_channel, signal_channel)
        except DataError as exc:
            candidates.append((s, labels, None, exc))
            continue
        candidates.append((s, labels, idx, None))
    usable = [c for c in candidates if c[2] is not None]
    if not usable:
        raise max(candidates, key=lambda c: len(c[0]["time_stamps"]))[3]
    if len(usable) > 1:
        names = ", ".join(repr(label_of(c[0])[0]) for c in usable)
        notes.append(f"several streams hold {trigger_channel!r} ({names}); the longest is analysed "
                     "(choose one with --stream-name or --source-id).")
    s, labels, (trig, sig), _ = max(usable, key=lambda c: len(c[0]["time_stamps"]))
    name, _, source_id = label_of(s)
    sfreq = float(_first(s["info"].get("nominal_srate")))
    series = np.asarray(s["time_series"])
    if series.ndim == 1:
        series = series[:, None]
    raw_stamps = np.asarray(s["time_stamps"], dtype=np.float64)
    stamps = raw_stamps + _offset_map(s)(raw_stamps)
    signal = None
    if sig is not None:
        from closedloop.lsl.source import UNIT_TO_UV

        unit = _xdf_channels(s["info"], len(labels))[sig]["unit"].lower().replace(" ", "")
        signal = series[:, sig].astype(np.float64) * UNIT_TO_UV.get(unit, 1.0)
    return LoopbackData(
        path=path, stream_name=name, source_id=source_id, sfreq=sfreq, ch_names=labels, stamps=stamps,
        trigger_channel=labels[trig], trigger=series[:, trig].astype(np.float64), markers=markers,
        signal_channel=labels[sig] if sig is not None else None, signal=signal,
        summary=_read_sidecar(path, notes), notes=notes,
    )


# ---------------------------------------------------------------------- the analysis
def _phase_at_edges(data: LoopbackData, clock: SampleClockFit, edge_idx: np.ndarray,
                    band_hz: tuple[float, float]) -> tuple[np.ndarray, int]:
    """True phase (degrees) at each edge sample, NaN where the ground truth is not trusted (near
    either end of a stretch between gaps); also how many edges that leaves out."""
    from closedloop.groundtruth import GroundTruth, truth_fir

    phase = np.full(edge_idx.size, np.nan)
    margin = truth_fir(data.sfreq, band_hz).shape[0] // 2
    stops = np.concatenate([clock.starts[1:], [data.signal.size]])
    for a, b in zip(clock.starts.tolist(), stops.tolist()):
        inside = (edge_idx >= a + margin) & (edge_idx < b - margin)
        if not inside.any():
            continue
        truth = GroundTruth(data.signal[a:b], data.sfreq, band_hz)
        phase[inside] = truth.phase_deg[edge_idx[inside] - a]
    return phase, int(np.sum(~np.isfinite(phase)))


def analyse(
    data: LoopbackData,
    *,
    rule: EdgeRule | None = None,
    pulse_interval_s: float | None = None,
    band_hz: tuple[float, float] | None = None,
    n_planned: int | None = None,
    max_delay_s: float = MAX_DELAY_S,
    window_s: float = WINDOW_S,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """Pair the trigger channel's edges with the session's pulses and compute the figures.

    Parameters
    ----------
    data : LoopbackData
        The session (:func:`load_xdf`).
    rule : EdgeRule, optional
        When the trigger channel is high (default: any nonzero level).
    pulse_interval_s : float, optional
        Spacing of the pulses of a train (the protocol's).
    band_hz : (float, float), optional
        Band of the ground truth for the phase at the edges (needed with a signal channel).
    n_planned : int, optional
        Pulses the engine planned, dropped ones included (from the run's summary); default: the
        recorded ones.
    max_delay_s, window_s : float
        Pairing search range and window (see :func:`pair_edges`).

    Returns
    -------
    dict
        The figures (JSON-ready; see ``closedloop bench loopback``), with ``problem`` set to a
        sentence when the data cannot qualify the set-up (no edge at all, edges that belong to no
        pulse beyond the allowance): the caller reports everything, then fails with exit 3.
    """
    rule = rule or EdgeRule()
    sfreq = data.sfreq
    step_s = 1.0 / sfreq
    clock = fit_sample_clock(data.stamps, sfreq)
    notes = list(data.notes) + clock.notes
    pulses = planned_pulses(data.markers, pulse_interval_s, data.ttl_log, max_delay_s=max_delay_s)
    sent = [p for p in pulses if p.sent]
    t_first, t_last = float(clock.times[0]), float(clock.times[-1])
    edge_idx = find_edges(data.trigger, rule)
    edge_s = clock.times[edge_idx]
    sent_planned = np.asarray([p.planned_s for p in sent])
    pairing = pair_edges(sent_planned, edge_s, max_delay_s=max_delay_s, window_s=window_s, sample_step_s=step_s)
    d0 = pairing.typical_delay_s if math.isfinite(pairing.typical_delay_s) else 0.0
    # a pulse whose window reaches past the recorded samples could not have been seen
    checkable = (sent_planned + d0 + min(window_s, max_delay_s) <= t_last) & (sent_planned + d0 >= t_first)
    found = pairing.edge_of_pulse >= 0
    checkable |= found
    n_sent = len(sent)
    n_found = int(found.sum())
    n_missed = int(np.sum(checkable & ~found))
    n_unchecked = int(np.sum(~checkable))
    extra = pairing.extra
    n_extra = int(extra.size)

    delay = np.full(n_sent, np.nan)
    delay[found] = edge_s[pairing.edge_of_pulse[found]] - sent_planned[found]
    sent_s = np.asarray([p.sent_s for p in sent])
    delivery = sent_s - sent_planned
    transit = np.full(n_sent, np.nan)
    transit[found] = edge_s[pairing.edge_of_pulse[found]] - sent_s[found]

    levels = data.trigger
    rows = []
    true_phase = np.full(n_sent, np.nan)
    phase_section = None
    if data.signal is not None:
        if band_hz is None:
            raise UsageError("--signal-channel needs the protocol's band for the ground truth; give --protocol.")
        firsts = np.asarray([p.pulse == 0 and math.isfinite(p.target_phase_deg) for p in sent], dtype=bool)
        use = found & firsts
        phases, _ = _phase_at_edges(data, clock, edge_idx[pairing.edge_of_pulse[use]], band_hz)
        true_phase[use] = phases
        from closedloop.groundtruth import circular_stats, wrap_deg

        targets = np.asarray([p.target_phase_deg for p in sent])
        errors = wrap_deg(true_phase - targets)
        ok = np.isfinite(errors)
        stats = circular_stats(errors[ok])
        unique_targets = np.unique(targets[use & ok])
        phase_section = {
            "channel": data.signal_channel,
            "band_hz": [float(band_hz[0]), float(band_hz[1])],
            "target_deg": float(unique_targets[0]) if unique_targets.size == 1 else None,
            "n": stats.n,
            "circ_mean_deg": stats.mean_deg,
            "circ_sd_deg": stats.sd_deg,
            "plv": stats.plv,
            "within45": stats.within_45,
            "n_excluded": int(np.sum(use & ~ok)),
            "errors_deg": [round(float(e), 3) for e in errors[ok]],
        }
    for i, p in enumerate(sent):
        j = int(pairing.edge_of_pulse[i])
        rows.append({
            "seq": p.seq,
            "pulse": p.pulse,
            "event": p.event,
            "code": p.code,
            "planned_s": p.planned_s - t_first,
            "sent_s": p.sent_s - t_first if math.isfinite(p.sent_s) else None,
            "edge_s": float(edge_s[j] - t_first) if j >= 0 else None,
            "edge_sample": int(edge_idx[j]) if j >= 0 else None,
            "edge_level": float(levels[edge_idx[j]]) if j >= 0 else None,
            "delay_ms": float(delay[i] * 1e3) if j >= 0 else None,
            "delivery_ms": float(delivery[i] * 1e3) if math.isfinite(delivery[i]) else None,
            "transit_ms": float(transit[i] * 1e3) if math.isfinite(transit[i]) else None,
            "status": ("late" if pairing.late[i] else "found") if j >= 0 else ("missed" if checkable[i] else "unchecked"),
            "target_phase_deg": p.target_phase_deg if math.isfinite(p.target_phase_deg) else None,
            "true_phase_deg": float(true_phase[i]) if math.isfinite(true_phase[i]) else None,
        })
    extra_rows = []
    for j in extra.tolist():
        t = float(edge_s[j])
        nearest = int(np.argmin(np.abs(sent_planned - t))) if n_sent else -1
        extra_rows.append({
            "edge_s": t - t_first,
            "edge_sample": int(edge_idx[j]),
            "edge_level": float(levels[edge_idx[j]]),
            "nearest_seq": sent[nearest].seq if nearest >= 0 else None,
            "nearest_pulse": sent[nearest].pulse if nearest >= 0 else None,
            "from_nearest_ms": (t - sent_planned[nearest]) * 1e3 if nearest >= 0 else None,
        })
    planned_total = len(pulses) if n_planned is None else max(int(n_planned), len(pulses))
    if n_planned is None:
        notes.append("the number of pulses planned is that of the recorded triggers (the run's summary, "
                     "which counts dropped plans too, was not found beside the recording).")
    if data.ttl_log is None:
        notes.append("the recording holds no serial log: every recorded pulse is taken as sent, and the "
                     "later pulses of a train have no write time.")
    else:
        unexplained = len(data.ttl_log) - sum(1 for p in pulses if p.sent)
        if unexplained > 0:
            notes.append(f"{unexplained} write(s) in the serial log match no planned pulse.")

    result = {
        "benchmark": "loopback",
        "recording": str(data.path),
        "stream": {
            "name": data.stream_name,
            "source_id": data.source_id,
            "sfreq": sfreq,
            "n_samples": int(data.stamps.size),
            "duration_s": float(t_last - t_first + step_s),
            "rate_fitted_hz": clock.rate_hz,
            "gaps": clock.n_gaps,
            "stamp_jitter_max_ms": clock.max_lateness_s * 1e3,
        },
        "trigger_channel": data.trigger_channel,
        "edge_rule": rule.describe(),
        "n_planned": planned_total,
        "n_sent": n_sent,
        "n_found": n_found,
        "n_missed": n_missed,
        "n_extra": n_extra,
        "n_unchecked": n_unchecked,
        "n_late": int(pairing.late.sum()),
        "n_edges": int(edge_idx.size),
        "sample_step_ms": step_s * 1e3,
        "typical_delay_ms": pairing.typical_delay_s * 1e3,
        "delay_ms": _summary_ms(delay, with_ci=True, n_boot=n_boot, seed=seed),
        "delivery_ms": _summary_ms(delivery),
        "transit_ms": _summary_ms(transit),
        "phase": phase_section,
        "pulses": rows,
        "extra_edges": extra_rows,
        "settings": {"max_delay_ms": max_delay_s * 1e3, "window_ms": window_s * 1e3,
                     "bootstrap": {"n": n_boot, "seed": seed, "method": "percentile"}},
        "notes": notes,
        "problem": None,
    }
    found_delays = delay[found]
    if found_delays.size:
        jitter = found_delays - np.median(found_delays)
        result["delay_ms"]["jitter_p95_abs_ms"] = float(np.percentile(np.abs(jitter), 95) * 1e3)
        # the edge is the first sample at the new level: on average half a step after the rise
        result["suggested_technical_delay_s"] = max(0.0, float(np.median(found_delays)) - step_s / 2)
    result["problem"] = _problem(result, data, rule)
    if result["problem"] is None and n_missed > max(MIN_EXTRA_ALLOWED, EXTRA_SHARE * n_sent):
        notes.append(f"{n_missed} of {n_sent} pulses sent have no edge: pulses shorter than the sampling step "
                     f"({step_s * 1e3:g} ms) can fall between two samples (lengthen --ttl-width), or the line "
                     "loses pulses.")
    return result


def _problem(result: dict, data: LoopbackData, rule: EdgeRule) -> str | None:
    """The sentence that makes the run fail with exit 3, or None."""
    name, n_sent = data.trigger_channel, result["n_sent"]
    if n_sent == 0:
        return None
    if result["n_edges"] == 0:
        values = np.unique(np.nan_to_num(data.trigger))
        if values.size == 1:
            return (f"the trigger channel {name!r} held the value {values[0]:g} in all {data.trigger.size} samples "
                    f"while {n_sent} pulses were sent: no pulse reached the amplifier. Check that the TTL box's "
                    "output is wired into the amplifier's trigger input and that --trigger-channel names that input.")
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
        return (f"the trigger channel {name!r} never rose to {rule.describe()} while {n_sent} pulses were sent "
                f"(its values: {shown}); check --trigger-code / --trigger-threshold and the wiring.")
    allowed = max(MIN_EXTRA_ALLOWED, int(EXTRA_SHARE * n_sent))
    if result["n_found"] == 0:
        return (f"none of the {result['n_edges']} edges in the trigger channel {name!r} lies within "
                f"{result['settings']['max_delay_ms']:g} ms of any of the {n_sent} pulses sent: the line carries "
                "another source, or the delay is longer (raise --max-delay-ms).")
    if result["n_extra"] > allowed:
        return (f"the trigger channel {name!r} has {result['n_edges']} rising edges for {n_sent} pulses sent; "
                f"{result['n_extra']} belong to no pulse (at most {allowed} allowed): a second source drives the "
                "trigger line (another device on the same input, or a noisy line). The "
                f"{result['n_found']} pulses found are reported.")
    return None
