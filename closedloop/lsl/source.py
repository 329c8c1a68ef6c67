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
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np
import pylsl

from closedloop.errors import DataError, StreamError
from closedloop.lsl.dejitter import SampleClock

# pylsl 1.16 exported these at the top level; 1.17+ keeps them in pylsl.util only
_LSLTimeout = getattr(pylsl, "TimeoutError", None) or pylsl.util.TimeoutError
_LSLLost = getattr(pylsl, "LostError", None) or pylsl.util.LostError

_NUMPY_DTYPES = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int64: np.int64,
}
_FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int8: "int8",
    pylsl.cf_int16: "int16",
    pylsl.cf_int32: "int32",
    pylsl.cf_int64: "int64",
}

#: Unit spellings found in stream descriptions -> factor to microvolts.
UNIT_TO_UV = {
    "microvolts": 1.0, "microvolt": 1.0, "uv": 1.0, "µv": 1.0, "μv": 1.0,
    "millivolts": 1e3, "millivolt": 1e3, "mv": 1e3,
    "volts": 1e6, "volt": 1e6, "v": 1e6,
    "nanovolts": 1e-3, "nanovolt": 1e-3, "nv": 1e-3,
}

#: Longest wait for the rest of a chunk that was split in transit, seconds (it normally follows
#: within tens of microseconds).
COMPLETE_WAIT_S = 0.002
#: Waits in vain (net of successes) after which the source stops completing chunks.
MAX_COMPLETION_MISSES = 8
#: Pull sizes up to this are counted when learning the amplifier's chunk size.
MAX_LEARNT_CHUNK = 64
#: Pulls seen before the learnt chunk size is used.
LEARN_PULLS = 20


def describe_streams(infos: list) -> str:
    if not infos:
        return "no LSL streams are visible"
    parts = [
        f"{i.name()!r} (type {i.type()!r}, source_id {i.source_id()!r}, {i.channel_count()} ch, "
        f"{i.nominal_srate():g} Hz)"
        for i in infos
    ]
    return "visible streams: " + "; ".join(parts)


def resolve_stream(
    *, name: str | None = None, stype: str | None = None, source_id: str | None = None, timeout: float = 5.0
) -> pylsl.StreamInfo:
    """Find one stream by source_id, name or type (in that order of preference).

    Raises
    ------
    StreamError
        When nothing matches within ``timeout`` (exit 4); the message lists what is visible.
    """
    if source_id:
        prop, value = "source_id", source_id
    elif name:
        prop, value = "name", name
    elif stype:
        prop, value = "type", stype
    else:
        prop, value = "type", "EEG"
    found = pylsl.resolve_byprop(prop, value, 1, timeout)
    if not found:
        visible = pylsl.resolve_streams(1.0)
        raise StreamError(f"no LSL stream with {prop} {value!r} appeared within {timeout:g} s; {describe_streams(visible)}.")
    if source_id is None and len(found) > 1:
        found.sort(key=lambda i: i.created_at())
    return found[0]


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


def read_layout(info: pylsl.StreamInfo) -> StreamLayout:
    """Channel labels, types and units from a full stream description."""
    n = info.channel_count()
    fmt = info.channel_format()
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label").strip())
        types.append(ch.child_value("type").strip() or "EEG")
        units.append(ch.child_value("unit").strip())
        ch = ch.next_sibling("channel")
    notes = []
    if len(labels) < n or not all(labels):
        labels = [lab or f"ch{i + 1}" for i, lab in enumerate(labels)] + [f"ch{i + 1}" for i in range(len(labels), n)]
        notes.append("the stream's description does not label every channel; unlabelled ones are named by index")
    types += ["EEG"] * (n - len(types))
    units += [""] * (n - len(units))
    scale = np.ones(n)
    unknown = set()
    for i, unit in enumerate(units):
        key = unit.lower().replace(" ", "")
        if key in UNIT_TO_UV:
            scale[i] = UNIT_TO_UV[key]
        elif key:
            unknown.add(unit)
    if unknown:
        notes.append(f"unknown units {sorted(unknown)} taken as microvolts")
    if not any(units):
        notes.append("the stream states no units; values are taken as microvolts")
    return StreamLayout(
        name=info.name(),
        stype=info.type(),
        source_id=info.source_id(),
        sfreq=info.nominal_srate(),
        channel_format=_FORMAT_NAMES.get(fmt, str(fmt)),
        ch_names=labels,
        ch_types=types,
        units=units,
        scale_to_uv=scale,
        notes=notes,
        xml=info.as_xml(),
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

    Attributes
    ----------
    newest_ts : float
        Time of the last pull's newest sample in the stream's clock (add :attr:`correction` for
        the local clock): dejittered, or the raw stamp without ``dejitter``.
    """

    def __init__(
        self,
        info: pylsl.StreamInfo,
        *,
        max_buflen_s: int = 2,
        capacity: int = 4096,
        open_timeout: float = 5.0,
        dejitter: bool = True,
    ) -> None:
        fmt = info.channel_format()
        if fmt == pylsl.cf_string:
            raise DataError(
                f"stream {info.name()!r} carries strings; EEG must be numeric "
                "(float32, double64 or an integer format)."
            )
        if not info.nominal_srate() > 0:
            raise DataError(
                f"stream {info.name()!r} has an irregular rate (nominal_srate 0); closedloop needs a "
                "regularly sampled EEG stream."
            )
        self.inlet = pylsl.StreamInlet(info, max_buflen=max_buflen_s, max_chunklen=0, recover=True)
        try:
            full = self.inlet.info(open_timeout)
            self.inlet.open_stream(open_timeout)
        except _LSLTimeout as exc:
            raise StreamError(f"stream {info.name()!r} did not answer within {open_timeout:g} s.") from exc
        self.layout = read_layout(full)
        self.n_channels = info.channel_count()
        self.sfreq = float(info.nominal_srate())
        self.dtype = _NUMPY_DTYPES[fmt]
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
        self.chunk_size = 0  # the amplifier's usual chunk size once learnt (0: not yet)
        self._dt = 1.0 / self.sfreq
        self._clock = pylsl.local_clock
        self.sample_clock = SampleClock(self.sfreq) if dejitter else None
        self.newest_ts = float("nan")
        self.prime_time_correction()

    def prime_time_correction(self, timeout: float = 2.0) -> float:
        """First estimate of the offset to the local clock (takes a few ms), then cached updates."""
        try:
            self.correction = float(self.inlet.time_correction(timeout))
        except _LSLTimeout:
            pass
        return self.correction

    def refresh_time_correction(self) -> float:
        try:
            self.correction = float(self.inlet.time_correction(0.1))
        except (_LSLTimeout, _LSLLost):
            pass
        return self.correction

    def pull(self, timeout: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Wait up to ``timeout`` s for new samples; return ``(chunk, timestamps)`` or ``(None, None)``.

        ``chunk`` is ``(n_channels, n)`` float64 in microvolts; ``timestamps`` are the stream's own
        (add :attr:`correction` for the local clock).
        """
        if self._pull is not None:
            err = self._err
            got = self._pull(
                self._obj, self._data_first, self._ts_first, self._n_first_values, self._one,
                ctypes.c_double(timeout), ctypes.byref(err),
            )
            if err.value:
                self._raise(err)
            if not got:
                return None, None
            more = self._pull(
                self._obj, self._data_rest, self._ts_rest, self._n_rest_values, self._n_rest,
                self._zero, ctypes.byref(err),
            )
            if err.value:
                self._raise(err)
            n = 1 + more // self.n_channels
            typical = self.chunk_size
            if typical > 1 and n % typical and n < self.capacity and self.completion:
                n = self._complete(n, typical - n % typical, min(timeout, COMPLETE_WAIT_S))
            self._learn(n)
        else:  # a pylsl without the raw entry point: the public low-latency path
            _, ts = self.inlet.pull_chunk(
                timeout=timeout, max_samples=self.capacity, dest_obj=self._buf, min_samples=1
            )
            n = len(ts)
            if not n:
                return None, None
            self._ts[:n] = ts
        self.n_received += n
        self._last_n = n
        newest = float(self._ts[n - 1])
        self.newest_ts = newest if self.sample_clock is None else self.sample_clock.update(newest, n)
        chunk = np.empty((self.n_channels, n), dtype=np.float64)
        if self._unit_scale:
            chunk[...] = self._buf[:n].T
        else:
            np.multiply(self._buf[:n].T, self._scale, out=chunk)
        return chunk, self._ts[:n].copy()

    def _complete(self, n: int, missing: int, wait_s: float) -> int:
        """Wait up to ``wait_s`` for the rest of a split chunk, as far as it is due; new ``n``.

        ``missing`` samples would complete the usual chunk; only those whose timestamps have
        passed can have been pushed already, so only those are waited for.
        """
        late_s = self._clock() - (self._ts[n - 1] + self.correction)
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
            self._raise(err)
        got //= self.n_channels
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

    def _learn(self, n: int) -> None:
        """Count pull sizes; the most frequent one (smallest on ties) is the amplifier's chunk size.

        Only the count just raised can overtake the leader (halving keeps the order), so the mode
        is kept up to date with one comparison instead of a search per pull.
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

    def _raise(self, err: ctypes.c_int) -> None:
        try:
            pylsl.util.handle_error(err)
        except _LSLLost as exc:
            raise StreamError(
                f"stream {self.layout.name!r} was lost and cannot be recovered (it has no source_id "
                "to find it again by)."
            ) from exc

    def last_raw(self) -> np.ndarray:
        """A copy of the last pull's samples exactly as received: ``(n, n_channels)``, stream dtype."""
        return self._buf[: self._last_n].copy()

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:
            pass
        del self.inlet

