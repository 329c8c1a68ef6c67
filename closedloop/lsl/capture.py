"""Recording other LSL streams beside the input, as LabRecorder would (``run --record-stream``).

A lab records more than the amplifier: the stimulus program's markers, the amplifier's own
trigger or marker stream, a second device. :class:`StreamCapture` finds the streams asked for
(by name or source_id, or every marker stream, that is every stream of irregular rate) when the
session starts and again every ``REDISCOVER_S`` while it runs (a stimulus program started later is
picked up), and records each from a thread of its own: its full header, every sample with its
stamp, its clock offset every ``CLOCK_REFRESH_S`` (collection time in the stream's clock, as
LabRecorder writes it) and, when the recording closes, its footer. The writing itself is the
recorder thread's; nothing here runs on the loop's thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np
import pylsl

from closedloop.lsl.formats import NUMPY_DTYPES
from closedloop.lsl.selection import ROUND_S, stream_label, why_not_eeg

logger = logging.getLogger("closedloop.lsl.capture")

#: Seconds between looks for streams that appeared since.
REDISCOVER_S = 3.0
#: Seconds between clock offset measurements of each recorded stream.
CLOCK_REFRESH_S = 5.0
#: Longest block of one pull, seconds (so that a stop is noticed promptly).
PULL_WAIT_S = 0.2
#: Most samples drained at once.
MAX_DRAIN = 4096



class _Recorded:
    """One stream being recorded: its inlet, pulled on a thread until stopped."""

    def __init__(self, info: pylsl.StreamInfo, recorder, stop: threading.Event, errors: deque) -> None:
        self.info = info
        self.label = stream_label(info)
        self.samples = 0
        self.stream_id: int | None = None
        self._recorder = recorder
        self._stop = stop
        self._errors = errors
        self.thread = threading.Thread(target=self._run, name="closedloop-capture", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()
        try:
            inlet = pylsl.StreamInlet(self.info, max_buflen=360, recover=True)
            full = inlet.info(5.0)
            inlet.open_stream(5.0)
        except Exception as exc:
            self._errors.append(f"could not record {self.label}: {exc}")
            return
        self.stream_id = self._recorder.add_stream(full.as_xml())
        fmt = self.info.channel_format()
        n_ch = self.info.channel_count()
        is_string = fmt == pylsl.cf_string
        buf = None if is_string else np.zeros((MAX_DRAIN, n_ch), dtype=NUMPY_DTYPES.get(fmt, np.float64))
        next_clock = 0.0
        try:
            while not self._stop.is_set():
                now = pylsl.local_clock()
                if now >= next_clock:
                    try:
                        offset = float(inlet.time_correction(1.0))
                        self._recorder.clock_offset(self.stream_id, now - offset, offset)
                    except Exception:  # the stream is recovering; try again next time
                        pass
                    next_clock = now + CLOCK_REFRESH_S
                # block for the first sample, then take what else is there (never wait for a full chunk)
                if is_string:
                    values, stamps = inlet.pull_chunk(timeout=PULL_WAIT_S, max_samples=MAX_DRAIN, min_samples=1)
                    if not stamps:
                        continue
                    self._recorder.samples(self.stream_id, np.asarray(stamps), values)
                else:
                    _, stamps = inlet.pull_chunk(
                        timeout=PULL_WAIT_S, max_samples=MAX_DRAIN, dest_obj=buf, min_samples=1
                    )
                    if not len(stamps):
                        continue
                    self._recorder.samples(self.stream_id, np.asarray(stamps), buf[: len(stamps)].copy())
                self.samples += len(stamps)
        except Exception as exc:
            self._errors.append(f"recording {self.label} stopped: {exc}")
        finally:
            try:
                inlet.close_stream()
            except Exception:
                pass


class StreamCapture:
    """Find and record the streams a session asks for, beside its input.

    Parameters
    ----------
    recorder
        The session's recorder: ``add_stream(header_xml) -> stream_id``, ``samples(sid, ts,
        values)``, ``clock_offset(sid, time, offset)``; thread-safe.
    wanted : list of str
        Names or source_ids; every stream matching one of them is recorded.
    all_markers : bool
        Also every stream of irregular rate (marker, annotation and event streams).
    exclude_source_ids : set of str
        Streams the session records anyway (its own Markers and State).
    input_source_id : str
        The input's source_id: a regularly sampled numeric stream under it is the input itself
        (recorded anyway), other streams under it (an amplifier's markers) may be recorded.
    exclude_uids : set of str
        Streams never to record (the input, at its current uid).
    """

    def __init__(
        self,
        recorder,
        *,
        wanted: list[str] | None = None,
        all_markers: bool = False,
        exclude_source_ids: set[str] = frozenset(),
        input_source_id: str = "",
        exclude_uids: set[str] = frozenset(),
    ) -> None:
        self.recorder = recorder
        self.wanted = [w for w in (wanted or []) if w]
        self.all_markers = bool(all_markers)
        self.exclude_source_ids = set(exclude_source_ids)
        self.input_source_id = input_source_id
        self.exclude_uids = set(exclude_uids)
        self.recorded: dict[str, _Recorded] = {}
        self.notices: deque[str] = deque()
        self.errors: deque[str] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.wanted or self.all_markers)

    def wants(self, info: pylsl.StreamInfo) -> bool:
        """Whether ``info`` is a stream this capture records."""
        if info.uid() in self.exclude_uids or info.source_id() in self.exclude_source_ids:
            return False
        if info.source_id() == self.input_source_id and why_not_eeg(info) is None:
            return False  # the input itself (maybe back under a new uid): recorded as the EEG
        if info.name() in self.wanted or info.source_id() in self.wanted:
            return True
        return self.all_markers and not info.nominal_srate() > 0

    def discover(self, wait_s: float = ROUND_S) -> list[str]:
        """Look once for wanted streams not recorded yet and start recording them; their labels."""
        started = []
        found = pylsl.resolve_streams(wait_s) if self.active else []
        for info in found:
            with self._lock:
                if self._stop.is_set() or info.uid() in self.recorded or not self.wants(info):
                    continue
                self.recorded[info.uid()] = _Recorded(info, self.recorder, self._stop, self.errors)
            label = stream_label(info)
            started.append(label)
            self.notices.append(f"recording also {label}")
        return started

    def missing(self) -> list[str]:
        """Names or source_ids asked for that match no recorded stream (yet)."""
        seen = set()
        for rec in self.recorded.values():
            seen.add(rec.info.name())
            seen.add(rec.info.source_id())
        return [w for w in self.wanted if w not in seen]

    def start(self) -> StreamCapture:
        """Look for the streams now and every ``REDISCOVER_S`` after, in the background."""
        if self.active and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="closedloop-capture-find", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()
        while True:
            try:
                self.discover()
            except Exception as exc:  # never fatal to the session
                logger.info("looking for streams to record failed: %s", exc)
            if self._stop.wait(REDISCOVER_S):
                return

    def take_notices(self) -> list[str]:
        out = list(self.notices) + list(self.errors)
        self.notices.clear()
        self.errors.clear()
        return out

    def stop(self) -> None:
        """Stop every recording thread (before the recorder closes: their samples go first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=ROUND_S + 2.0)
        for rec in list(self.recorded.values()):
            rec.thread.join(timeout=PULL_WAIT_S + 6.0)

    def summary(self) -> list[dict]:
        return [
            {
                "stream": rec.label,
                "name": rec.info.name(),
                "type": rec.info.type(),
                "source_id": rec.info.source_id(),
                "stream_id": rec.stream_id,
                "samples": rec.samples,
            }
            for rec in self.recorded.values()
        ]
