"""Acquisition from an LSL stream with the least delay the machine allows.

The inlet blocks in liblsl until the first new sample is there, then drains whatever else has
arrived without waiting (never for a full chunk), straight into a preallocated buffer of the
stream's exact dtype, through liblsl's own pull function (pylsl's wrapper allocates per call;
at 5 kHz in chunks of 5 that overhead is a large share of the loop's budget).

liblsl hands samples to the inlet one at a time as it parses them, so a pull can land in the
middle of a chunk the amplifier pushed at once (a push of 4 arrives as 1 + 3 now and then). The
engine decides once per chunk, so a split chunk means a different decision than the same data
gives in replay. The source therefore learns the amplifier's usual chunk size, and when a pull
ends part-way through one whose remaining samples are already due by their timestamps (pushed,
still in transit), it waits for just those, at most ``COMPLETE_WAIT_S``. Samples that are not due
yet are never waited for, so an amplifier with small or uneven chunks costs no latency.

The stream is chosen by :mod:`closedloop.lsl.selection` and its identity pinned at connect
(:mod:`closedloop.lsl.identity`): the inlet has no liblsl recovery; when the stream is lost (or
silent for ``SEARCH_AFTER_S``) the source looks for it again by its source_id in the background
and reads on only from a stream with the same identity.

Times: a sample cannot arrive before it was taken, so stamps that run ahead of the chunks'
arrivals (mne-lsl's ``PlayerLSL`` stamps a chunk ahead) are moved back by the most they lead, and
a sample's time is never later than its arrival; :class:`StampCheck` says so, and says when stamps
lag by more than a transport delay. Drivers that stamp every sample of a
chunk with the chunk's push time get their stamps spread back at the nominal rate, as liblsl does
for a chunk pushed with one stamp: otherwise every sample but the last is late by its distance to
the end of its chunk (0.8 ms for the first of 5 at 5 kHz), and a pull that catches a chunk split
in transit could not tell that the rest of it is due.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pylsl

from closedloop.errors import ClosedLoopError, DataError, StreamError
from closedloop.lsl.dejitter import SampleClock
from closedloop.lsl.formats import NUMPY_DTYPES, format_name
from closedloop.lsl.identity import StreamFinder, StreamIdentity, channel_fields
from closedloop.lsl.selection import (
    StreamSelector,
    choose_stream,
    first_candidate,
    stream_label,
    why_not_eeg,
)
from closedloop.lsl.selection import describe_streams as describe_streams  # noqa: PLC0414
from closedloop.lsl.stampcheck import StampCheck
from closedloop.units import factor_name, is_voltage_type, unit_to_uv

logger = logging.getLogger("closedloop.lsl.source")

# pylsl 1.16 exported these at the top level; 1.17+ keeps them in pylsl.util only
_LSLTimeout = getattr(pylsl, "TimeoutError", None) or pylsl.util.TimeoutError
_LSLLost = getattr(pylsl, "LostError", None) or pylsl.util.LostError


#: Unit words found in stream descriptions -> factor to microvolts (the full mapping, with
#: mne-lsl's numeric codes, is :func:`closedloop.units.unit_to_uv`).
UNIT_TO_UV = {
    "microvolts": 1.0, "microvolt": 1.0, "uv": 1.0, "µv": 1.0, "μv": 1.0,
    "millivolts": 1e3, "millivolt": 1e3, "mv": 1e3,
    "volts": 1e6, "volt": 1e6, "v": 1e6,
    "nanovolts": 1e-3, "nanovolt": 1e-3, "nv": 1e-3,
}
#: Without data for this long, the source starts looking for its stream again (it may have come
#: back under a new uid while the old connection hangs).
SEARCH_AFTER_S = 1.0
#: Longest wait for a stream found again to open, seconds.
OPEN_AGAIN_S = 2.0
#: A lead of stamps ahead of the arrivals is forgotten at most this fast (seconds per second).
LEAD_DECAY = 0.001
#: Samples of a pull stamped like their neighbour, seen this often, mean the driver stamps every
#: sample of a chunk with the chunk's push time.
SAME_STAMP_EVIDENCE = 3

#: Longest wait for the rest of a chunk that was split in transit, seconds (it normally follows
#: within tens of microseconds).
COMPLETE_WAIT_S = 0.002
#: Waits in vain (net of successes) after which the source stops completing chunks.
MAX_COMPLETION_MISSES = 8
#: Pull sizes up to this are counted when learning the amplifier's chunk size.
MAX_LEARNT_CHUNK = 64
#: Pulls seen before the learnt chunk size is used.
LEARN_PULLS = 20
#: A pull that returns sooner than this fraction of a sample period after the previous one holds
#: the rest of the same push (a chunk split in transit): the two count as one when learning the
#: chunk size. The amplifier's next chunk cannot come before its next sample exists.
SPLIT_GAP_PERIODS = 0.5


def resolve_stream(
    *,
    name: str | None = None,
    stype: str | None = None,
    source_id: str | None = None,
    host: str | None = None,
    timeout: float = 5.0,
) -> pylsl.StreamInfo:
    """The one EEG stream matching every selector given (type ``EEG`` when none is).

    See :func:`closedloop.lsl.selection.choose_stream`: selectors combine, type and host match
    case-insensitively, only regularly sampled numeric streams are candidates.

    Raises
    ------
    StreamError
        When nothing matches within ``timeout``, or more than one candidate does (exit 4); the
        message lists what is visible, or each match.
    DataError
        When the matching streams cannot be EEG (strings, irregular rate): exit 3.
    """
    return choose_stream(StreamSelector(source_id=source_id, name=name, stype=stype, host=host), timeout)


def open_source(selector: StreamSelector, timeout: float = 5.0, **options) -> LSLSource:
    """Choose the one EEG stream matching ``selector`` (:func:`choose_stream`) and connect to it.

    Choosing waits a full resolve round to see every stream that matches; connecting (the full
    header, the first clock offset) takes about as long. Both run at once: the source connects to
    the first candidate that answers while the round runs in a helper thread, and is kept if the
    round confirms it as the only one. The inlet is opened on the calling thread (its scheduling,
    e.g. --realtime, is inherited by liblsl's receiving threads). ``options`` go to
    :class:`LSLSource`.

    Raises
    ------
    StreamError, DataError
        As :func:`choose_stream`.
    """
    from concurrent.futures import ThreadPoolExecutor

    selector = selector.effective()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="closedloop-choose") as pool:
        choosing = pool.submit(choose_stream, selector, timeout)
        early = None
        first = first_candidate(selector, timeout)
        if first is not None:
            try:
                early = LSLSource(first, **options)
            except ClosedLoopError:
                early = None  # it went away, or did not answer: the round decides
        try:
            info = choosing.result()
        except BaseException:
            if early is not None:
                early.close()
            raise
    if early is not None and early.uid == info.uid():
        return early
    if early is not None:
        early.close()
    return LSLSource(info, **options)


@dataclass
class StreamLayout:
    """What the stream description says about its channels."""

    name: str
    stype: str
    source_id: str
    sfreq: float
    channel_format: str
    ch_names: list[str]
    ch_types: list[str]
    units: list[str]
    scale_to_uv: np.ndarray
    notes: list[str] = field(default_factory=list)
    xml: str = ""
    host: str = ""
    units_given: float | None = None  # the factor of --units, when it overrode the description

    def scale_of(self, channels) -> float | None:
        """The factor to microvolts applied to ``channels`` if they share one, else None."""
        values = {float(self.scale_to_uv[i]) for i in channels}
        return values.pop() if len(values) == 1 else None


def read_layout(info: pylsl.StreamInfo, units: float | None = None) -> StreamLayout:
    """Channel labels, types and units from a full stream description.

    Parameters
    ----------
    info : pylsl.StreamInfo
        The full info (``inlet.info()``), with its description.
    units : float, optional
        ``--units``: the factor to microvolts of every voltage channel (EEG, EOG, ... and
        channels without a type), whatever the description says.
    """
    n = info.channel_count()
    fmt = info.channel_format()
    labels, types, units_seen = channel_fields(info)
    types = [t or "EEG" for t in types]
    notes = []
    if not all(labels):
        labels = [lab or f"ch{i + 1}" for i, lab in enumerate(labels)]
        notes.append("the stream's description does not label every channel; unlabelled ones are named by index")
    scale = np.ones(n)
    unknown = set()
    for i, (unit, ch_type) in enumerate(zip(units_seen, types)):
        factor = unit_to_uv(unit, ch_type)
        if factor is not None:
            scale[i] = factor
        elif unit and is_voltage_type(ch_type):
            unknown.add(unit)
    if units is not None:
        voltage = [i for i, t in enumerate(types) if is_voltage_type(t)]
        declared = sorted({units_seen[i] or "none" for i in voltage})
        scale[voltage] = units
        notes.append(
            f"--units: the voltage channels are taken as {factor_name(units)} "
            f"(the stream says {', '.join(map(repr, declared))})"
        )
    else:
        if unknown:
            notes.append(f"unknown units {sorted(unknown)} taken as microvolts")
        if not any(units_seen):
            notes.append("the stream states no units; values are taken as microvolts")
    return StreamLayout(
        name=info.name(),
        stype=info.type(),
        source_id=info.source_id(),
        sfreq=info.nominal_srate(),
        channel_format=format_name(fmt),
        ch_names=labels,
        ch_types=types,
        units=units_seen,
        scale_to_uv=scale,
        notes=notes,
        xml=info.as_xml(),
        host=info.hostname(),
        units_given=units,
    )


class LSLSource:
    """An open inlet with preallocated buffers; :meth:`pull` returns float64 microvolt chunks.

    Parameters
    ----------
    info : pylsl.StreamInfo
        A resolved stream (:func:`resolve_stream`).
    max_buflen_s : int
        Seconds liblsl may buffer for us; small, so a stalled loop never works on old data.
    capacity : int
        Most samples returned by one pull.
    dejitter : bool
        Map each pull's newest stamp onto the amplifier's sample clock (:class:`SampleClock`) in
        :attr:`newest_ts`; False keeps the raw stamp there.
    units : float, optional
        ``--units``: factor to microvolts of every voltage channel, overriding the description.
    reconnect : bool
        Look for the stream again (same identity only) when it is lost; False ends the source
        with a :class:`StreamError` instead.

    Attributes
    ----------
    newest_ts : float
        Time of the last pull's newest sample in the stream's clock (add :attr:`correction` for
        the local clock): dejittered, or the raw stamp without ``dejitter``; never later than the
        pull's arrival.
    identity : StreamIdentity
        What was pinned at connect.
    stamps_per_chunk : bool
        The driver stamps every sample of a chunk with the same time (spread back here).
    """

    def __init__(
        self,
        info: pylsl.StreamInfo,
        *,
        max_buflen_s: int = 2,
        capacity: int = 4096,
        open_timeout: float = 5.0,
        dejitter: bool = True,
        units: float | None = None,
        reconnect: bool = True,
    ) -> None:
        reason = why_not_eeg(info)
        if reason is not None:
            raise DataError(reason + ".")
        fmt = info.channel_format()
        self.max_buflen_s = int(max_buflen_s)
        self.info = info
        try:
            inlet, full = self._open_inlet(info, open_timeout)
            inlet.open_stream(open_timeout)
        except _LSLTimeout as exc:
            raise StreamError(f"stream {info.name()!r} did not answer within {open_timeout:g} s.") from exc
        except _LSLLost as exc:
            raise StreamError(f"stream {stream_label(info)} went away while connecting.") from exc
        self.inlet = inlet
        self.layout = read_layout(full, units=units)
        self.identity = StreamIdentity.from_info(full)
        self.uid = info.uid()
        self.reconnect = reconnect
        self.n_channels = info.channel_count()
        self.sfreq = float(info.nominal_srate())
        self.dtype = NUMPY_DTYPES[fmt]
        self.capacity = int(capacity)
        self._buf = np.zeros((self.capacity, self.n_channels), dtype=self.dtype)
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        self._scale = np.ascontiguousarray(self.layout.scale_to_uv[:, None])
        self._unit_scale = bool(np.all(self.layout.scale_to_uv == 1.0))
        value_type = np.ctypeslib.as_ctypes_type(self.dtype)
        row = self.n_channels * ctypes.sizeof(value_type)
        base = self._buf.ctypes.data
        self._data_first = ctypes.c_void_p(base)
        self._data_rest = ctypes.c_void_p(base + row)
        self._ts_first = ctypes.c_void_p(self._ts.ctypes.data)
        self._ts_rest = ctypes.c_void_p(self._ts.ctypes.data + 8)
        self._n_rest_values = ctypes.c_size_t((self.capacity - 1) * self.n_channels)
        self._n_rest = ctypes.c_size_t(self.capacity - 1)
        self._n_first_values = ctypes.c_size_t(self.n_channels)
        self._one = ctypes.c_size_t(1)
        self._zero = ctypes.c_double(0.0)
        self._err = ctypes.c_int()
        self._pull = getattr(self.inlet, "do_pull_chunk", None)
        self._obj = self.inlet.obj
        self.correction = 0.0
        self.n_received = 0
        self.n_completed = 0  # pulls completed with the rest of a split chunk
        self.completion = True  # off for good after MAX_COMPLETION_MISSES waits in vain
        self._misses = 0
        self._last_n = 0
        self._size_counts = np.zeros(MAX_LEARNT_CHUNK + 1)
        self._mode = 1  # most frequent pull size so far
        self._n_pulls = 0
        self._pending = 0  # samples of the last push seen so far (counted once its rest is in)
        self._pending_at = -math.inf  # local clock when they came
        self.chunk_size = 0  # the amplifier's usual chunk size once learnt (0: not yet)
        self._dt = 1.0 / self.sfreq
        self._clock = pylsl.local_clock
        self.sample_clock = SampleClock(self.sfreq) if dejitter else None
        self.newest_ts = float("nan")
        self.arrival = float("nan")  # local clock when the last pull returned
        self.stamp_check = StampCheck()
        self._lead = 0.0  # how far the stamps run ahead of the arrivals (removed from newest_ts)
        self.max_lead_s = 0.0
        self.notices: deque[str] = deque()
        # the same stamp on every sample of a chunk
        self.stamps_per_chunk = False
        self._same_evidence = 0
        self._prev_last = math.nan  # the raw stamp of the previous pull's newest sample
        self._run_stamp = math.nan  # stamp of the run of equal stamps the last pull ended in
        self._run_pos = 0  # samples of that run seen so far
        self._run_counts = np.zeros(MAX_LEARNT_CHUNK + 1)
        self._push_len = 0  # usual length of a run (the driver's chunk), 0 until seen
        # identity and reconnection
        self.lost = False
        self.n_reconnects = 0
        self._finder: StreamFinder | None = None
        self._refused: dict[str, dict] = {}
        self._last_data = self._clock()
        self.prime_time_correction()

    # ------------------------------------------------------------------ connection
    def _open_inlet(self, info: pylsl.StreamInfo, timeout: float):
        """An inlet without liblsl's recovery (closedloop recovers by identity) and its full info."""
        inlet = pylsl.StreamInlet(info, max_buflen=self.max_buflen_s, max_chunklen=0, recover=False)
        try:
            full = inlet.info(timeout)
        except BaseException:
            _close_inlet(inlet)
            raise
        return inlet, full

    def prime_time_correction(self, timeout: float = 2.0) -> float:
        """First estimate of the offset to the local clock (takes a few ms), then cached updates."""
        try:
            self.correction = float(self.inlet.time_correction(timeout))
        except (_LSLTimeout, _LSLLost):
            pass
        return self.correction

    def refresh_time_correction(self) -> float:
        if self.lost:
            return self.correction
        try:
            self.correction = float(self.inlet.time_correction(0.1))
        except (_LSLTimeout, _LSLLost):
            pass
        return self.correction

    def _search(self, lost: bool) -> None:
        """Start looking for the stream again (or tell a running search that it is lost now)."""
        if not self.reconnect:
            return
        if self._finder is None or (self._finder.done.is_set() and self._finder.result is None):
            self._finder = StreamFinder(self.identity, self.uid, lost=lost, open_inlet=self._open_inlet)
        elif lost:
            self._finder.mark_lost()

    def _on_lost(self) -> None:
        if not self.reconnect:
            raise StreamError(
                f"stream {self.layout.name!r} (source_id {self.identity.source_id!r}) was lost."
            )
        if not self.lost:
            self.lost = True
            _close_inlet(self.inlet)
        self._search(lost=True)

    def _adopt(self) -> bool:
        """Take over the inlet the search found: the pinned stream, back."""
        finder = self._finder
        found = finder.take() if finder is not None else None
        if found is None:
            return False
        self._collect_notices()
        try:
            # here, on the loop's thread: liblsl's receiving thread inherits its scheduling
            found.inlet.open_stream(OPEN_AGAIN_S)
        except (_LSLTimeout, _LSLLost):
            _close_inlet(found.inlet)
            self._finder = None
            self._search(lost=self.lost)  # it went away again: look on
            return False
        if not self.lost:
            _close_inlet(self.inlet)
        self.inlet = found.inlet
        self._pull = getattr(self.inlet, "do_pull_chunk", None)
        self._obj = self.inlet.obj
        self.info = found.info
        self.uid = found.info.uid()
        self.correction = found.correction
        self.lost = False
        self._finder = None
        self.n_reconnects += 1
        self._prev_last = math.nan
        self._run_stamp, self._run_pos = math.nan, 0
        self._lead = 0.0
        self.notices.append(
            f"the stream is back under source_id {self.identity.source_id!r} with the identity "
            f"pinned at connect ({stream_label(found.info)})"
        )
        return True

    def _collect_notices(self) -> None:
        finder = self._finder
        if finder is None:
            return
        while finder.notices:
            self.notices.append(finder.notices.popleft())
        self._refused.update(finder.refused)

    def take_notices(self) -> list[str]:
        """Sentences for the operator since the last call (stream changes, odd timestamps)."""
        self._collect_notices()
        out = list(self.notices)
        self.notices.clear()
        return out

    @property
    def refused(self) -> dict[str, dict]:
        """Streams that appeared under the source_id with another identity and were not read."""
        self._collect_notices()
        return dict(self._refused)

    # ------------------------------------------------------------------ pulling
    def pull(self, timeout: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Wait up to ``timeout`` s for new samples; return ``(chunk, timestamps)`` or ``(None, None)``.

        ``chunk`` is ``(n_channels, n)`` float64 in microvolts; ``timestamps`` are the stream's own
        (add :attr:`correction` for the local clock), spread back at the nominal rate for drivers
        that stamp a whole chunk with one time.
        """
        if self._finder is not None:
            if self.lost:
                # nothing to read until the pinned stream is back: wait for the search, not the inlet
                if self._finder.result is None:
                    self._finder.done.wait(timeout)
                if not self._adopt():
                    self._collect_notices()
                    return None, None
            elif self._finder.result is not None:
                self._adopt()
        if self._pull is not None:
            err = self._err
            got = self._pull(
                self._obj, self._data_first, self._ts_first, self._n_first_values, self._one,
                ctypes.c_double(timeout), ctypes.byref(err),
            )
            if err.value:
                return self._failed(err)
            if not got:
                self._idle()
                return None, None
            more = self._pull(
                self._obj, self._data_rest, self._ts_rest, self._n_rest_values, self._n_rest,
                self._zero, ctypes.byref(err),
            )
            if err.value:
                return self._failed(err)
            n = 1 + more // self.n_channels
            self._check_stamps(n)
            typical = self.chunk_size
            if typical > 1 and n % typical and n < self.capacity and self.completion:
                n = self._complete(n, typical - n % typical, min(timeout, COMPLETE_WAIT_S))
            arrival = self._clock()
            self._learn(n, arrival)
        else:  # a pylsl without the raw entry point: the public low-latency path
            try:
                _, ts = self.inlet.pull_chunk(
                    timeout=timeout, max_samples=self.capacity, dest_obj=self._buf, min_samples=1
                )
            except _LSLLost:
                self._on_lost()
                return None, None
            n = len(ts)
            if not n:
                self._idle()
                return None, None
            self._ts[:n] = ts
            self._check_stamps(n)
            arrival = self._clock()
        self.arrival = arrival
        self._last_data = arrival
        if self._finder is not None and not self.lost:
            self._finder.stop_later()  # the stream only stalled: data again on the same inlet
            self._collect_notices()
            self._finder = None
        self.n_received += n
        self._last_n = n
        newest = float(self._ts[n - 1])
        arrived = arrival - self.correction
        message = self.stamp_check.update(arrived - newest, n * self._dt)
        if message is not None:
            self.notices.append(message)
        est = newest if self.sample_clock is None else self.sample_clock.update(newest, n)
        # a sample cannot arrive before it was taken: stamps that run ahead of the arrivals are
        # moved back by the most they lead (a constant shift keeps their own smoothness; taking
        # each arrival instead would bring in the sender's push jitter), at once when a chunk leads
        # by more, and forward again by at most LEAD_DECAY of the elapsed time
        ahead = est - arrived
        lead = self._lead
        if ahead > lead:
            lead = ahead
        elif lead > 0.0:
            lead = max(ahead, lead - LEAD_DECAY * n * self._dt, 0.0)
        self._lead = lead
        if lead > self.max_lead_s:
            self.max_lead_s = lead
        self.newest_ts = est - lead
        chunk = np.empty((self.n_channels, n), dtype=np.float64)
        if self._unit_scale:
            chunk[...] = self._buf[:n].T
        else:
            np.multiply(self._buf[:n].T, self._scale, out=chunk)
        return chunk, self._ts[:n].copy()

    def _failed(self, err: ctypes.c_int):
        try:
            pylsl.util.handle_error(err)
        except _LSLLost:
            self._on_lost()
        return None, None

    def _idle(self) -> None:
        """No data in this pull: after SEARCH_AFTER_S, look for the stream under a new uid."""
        if self._finder is None and self._clock() - self._last_data > SEARCH_AFTER_S:
            self._search(lost=False)
        else:
            self._collect_notices()

    def _check_stamps(self, n: int) -> None:
        """Spread back stamps shared by every sample of a chunk (once such a driver is seen)."""
        ts = self._ts
        if not self.stamps_per_chunk:
            if (n > 1 and ts[n - 1] == ts[n - 2]) or ts[0] == self._prev_last:
                self._same_evidence += 1
                if self._same_evidence >= SAME_STAMP_EVIDENCE:
                    self.stamps_per_chunk = True
                    self.notices.append(
                        "the input stream stamps every sample of a chunk with the same time; the "
                        "stamps are spread back from it at the nominal rate"
                    )
            self._prev_last = ts[n - 1]
            if not self.stamps_per_chunk:
                return
        self._spread(0, n)

    def _spread(self, start: int, stop: int) -> None:
        """Rewrite ``ts[start:stop]``: within a run of equal stamps ``t`` of length ``L`` (the
        driver's chunk), sample ``k`` gets ``t - (L - 1 - k) / sfreq``. A run cut off by the end
        of the pull continues in the next one; its length is taken as the usual one until seen."""
        ts = self._ts
        raw = ts[start:stop].copy()
        bounds = np.flatnonzero(raw[1:] != raw[:-1]) + 1
        edges = [0, *bounds.tolist(), raw.shape[0]]
        dt = self._dt
        for a, b in zip(edges[:-1], edges[1:]):
            t = float(raw[a])
            m = b - a
            if t == self._run_stamp:
                pos0 = self._run_pos
            else:
                if self._run_pos:
                    self._note_run(self._run_pos)
                pos0 = 0
            self._run_stamp, self._run_pos = t, pos0 + m
            complete = b < raw.shape[0]
            length = pos0 + m if complete else max(self._push_len, pos0 + m)
            k = np.arange(pos0, pos0 + m, dtype=np.float64)
            ts[start + a : start + b] = t - (length - 1 - k) * dt
            if complete:
                self._note_run(pos0 + m)
                self._run_stamp, self._run_pos = math.nan, 0

    def _note_run(self, length: int) -> None:
        counts = self._run_counts
        counts[min(length, MAX_LEARNT_CHUNK)] += 1.0
        if length < MAX_LEARNT_CHUNK and (self._push_len == 0 or counts[length] > counts[self._push_len]):
            self._push_len = length

    def _complete(self, n: int, missing: int, wait_s: float) -> int:
        """Wait up to ``wait_s`` for the rest of a split chunk, as far as it is due; new ``n``.

        ``missing`` samples would complete the usual chunk; only those whose timestamps have
        passed can have been pushed already, so only those are waited for.
        """
        late_s = self._clock() - (self._ts[n - 1] - self._lead + self.correction)
        due = min(missing, self.capacity - n, int(late_s * self.sfreq + 1e-6))
        if due <= 0:
            return n  # the rest is not due yet: a small chunk, not a split one
        value_type = self._buf.itemsize
        err = self._err
        got = self._pull(
            self._obj,
            ctypes.c_void_p(self._buf.ctypes.data + n * self.n_channels * value_type),
            ctypes.c_void_p(self._ts.ctypes.data + 8 * n),
            ctypes.c_size_t(due * self.n_channels), ctypes.c_size_t(due),
            ctypes.c_double(wait_s), ctypes.byref(err),
        )
        if err.value:
            try:
                pylsl.util.handle_error(err)
            except _LSLLost:
                return n  # the samples so far are good; the next pull finds the stream lost
        got //= self.n_channels
        if got and self.stamps_per_chunk:
            self._spread(n, n + got)
        if got == due:
            self.n_completed += 1
            self._misses = max(0, self._misses - 1)
        else:
            # the amplifier's timestamps run ahead of its pushes (or its chunks vary): after
            # repeated waits in vain, stop waiting altogether rather than add latency
            self._misses += 1
            if self._misses >= MAX_COMPLETION_MISSES:
                self.completion = False
        return n + got

    def _learn(self, n: int, arrival: float) -> None:
        """Learn the amplifier's chunk size from the pulls: ``n`` samples came at ``arrival``.

        A pull that follows the previous one within :data:`SPLIT_GAP_PERIODS` of a sample period
        carries the rest of the same push, split in transit (on a busy machine most pushes can
        come in two parts before a chunk size is known to complete them): the parts are counted
        as the one chunk they were. Each push is counted once its next pull shows it is whole.
        """
        if self._pending and arrival - self._pending_at < SPLIT_GAP_PERIODS * self._dt:
            self._pending += n
        else:
            if self._pending:
                self._count(self._pending)
            self._pending = n
        self._pending_at = arrival

    def _count(self, n: int) -> None:
        """Count one push of ``n`` samples; the most frequent size (smallest on ties) is the chunk size.

        Only the count just raised can overtake the leader (halving keeps the order), so the mode
        is kept up to date with one comparison instead of a search per push.
        """
        counts = self._size_counts
        counts[min(n, MAX_LEARNT_CHUNK)] += 1.0
        if n < MAX_LEARNT_CHUNK:  # backlogs (the last bucket) are no chunk size
            mode = self._mode
            if counts[n] > counts[mode] or (counts[n] == counts[mode] and n < mode):
                self._mode = n
        self._n_pulls += 1
        if self._n_pulls % 512 == 0:
            counts *= 0.5  # forget slowly: an amplifier may change its chunking
        if self._n_pulls >= LEARN_PULLS:
            self.chunk_size = self._mode

    def last_raw(self) -> np.ndarray:
        """A copy of the last pull's samples exactly as received: ``(n, n_channels)``, stream dtype."""
        return self._buf[: self._last_n].copy()

    # ------------------------------------------------------------------ figures
    def identity_summary(self) -> dict:
        """The pinned identity, reconnections and the streams that were not read (run summary)."""
        return {
            "pinned": self.identity.as_dict(),
            "uid": self.uid,
            "reconnects": self.n_reconnects,
            "lost": self.lost,
            "refused": list(self.refused.values()),
        }

    def timestamps_summary(self) -> dict:
        """What the stamps were like against this machine's clock (run summary ``timestamps``)."""
        return {
            **self.stamp_check.summary(),
            "lead_removed_ms_max": round(self.max_lead_s * 1e3, 3),
            "stamps_per_chunk": self.stamps_per_chunk,
        }

    def close(self) -> None:
        if self._finder is not None:
            self._finder.stop(join_s=1.5)
            self._finder = None
        if not self.lost:
            _close_inlet(self.inlet)
        try:
            del self.inlet
        except AttributeError:
            pass


def _close_inlet(inlet) -> None:
    try:
        inlet.close_stream()
    except Exception:
        pass
