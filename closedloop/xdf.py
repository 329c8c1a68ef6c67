"""Incremental XDF writer for session recordings (``closedloop run --record FILE.xdf``).

The file follows the XDF 1.0 chunk layout (https://github.com/sccn/xdf/wiki/Specifications):
the magic bytes ``XDF:``, then chunks, each ``[NumLengthBytes][Length][Tag][Content]`` where
NumLengthBytes is 1, 4 or 8, Length (little-endian) counts the 2-byte tag and the content, and
the tag is one of FileHeader (1), StreamHeader (2), Samples (3), ClockOffset (4), Boundary (5)
and StreamFooter (6). Stream headers, samples, clock offsets and footers start with a 4-byte
stream id. A sample is ``[TimeStampBytes]`` (8, or 0 when the reader deduces the time stamp as
the previous one plus 1 / nominal_srate), the optional float64 time stamp, then the values:
little-endian numbers, or for string streams one length-prefixed UTF-8 value per channel.

Chunks are encoded in the caller's thread and appended to an in-memory buffer; a background
thread hands the buffer to the operating system every ``flush_interval_s`` (and at once after
a stream header or boundary chunk). Only whole chunks are ever handed over, so a process killed
at any moment leaves a file that ``pyxdf.load_xdf`` opens, missing at most the last interval.
A failed write (disk full, file size limit) never raises into the caller: the writer trims the
file back to its last complete chunk, records the error in :attr:`XDFWriter.error` and stops.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from closedloop.errors import UsageError

__all__ = ["CHANNEL_FORMATS", "XDFWriter"]

logger = logging.getLogger(__name__)

TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6

# The Boundary chunk's fixed 16-byte signature (XDF specification); readers scan for it to
# resynchronise after a damaged chunk.
BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")

# XDF channel formats -> little-endian numpy dtype (None: string stream)
CHANNEL_FORMATS: dict[str, np.dtype | None] = {
    "float32": np.dtype("<f4"),
    "double64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "string": None,
}

_MAX_STREAM_ID = 2**32 - 1
# Pending bytes above which a write wakes the flusher before its interval is up.
_EARLY_FLUSH_BYTES = 1 << 20


def _varlen(n: int) -> bytes:
    """Encode ``n`` as an XDF variable-length integer (1, 4 or 8 bytes after a size byte)."""
    if n < 256:
        return bytes((1, n))
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _fmt_float(x: float) -> str:
    # repr round-trips a float64 exactly
    return repr(float(x))


class _StreamState:
    """What the writer knows about one stream: format, and running footer statistics."""

    __slots__ = (
        "clock_offsets",
        "dtype",
        "first_ts",
        "fmt",
        "last_ts",
        "n_channels",
        "name",
        "sample_count",
        "srate",
        "stream_id",
        "tdiff",
    )

    def __init__(self, stream_id: int, n_channels: int, srate: float, fmt: str, name: str) -> None:
        self.stream_id = stream_id
        self.n_channels = n_channels
        self.srate = srate
        # the reader deduces a missing time stamp as previous + 1.0 / srate, in float64
        self.tdiff = 1.0 / srate if srate > 0 else 0.0
        self.fmt = fmt
        self.dtype = CHANNEL_FORMATS[fmt]
        self.sample_count = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.clock_offsets: list[tuple[float, float]] = []
        self.name = name


class XDFWriter:
    """Write an XDF file incrementally, safely from several threads.

    Parameters
    ----------
    path : str or path-like
        The file to create (overwritten if it exists).
    flush_interval_s : float
        The longest time encoded chunks wait in memory before they are handed to the
        operating system (default 0.5 s). Data handed over survives a crash of the process.

    Attributes
    ----------
    path : Path
        The file being written.
    error : OSError or None
        The first write error; after it the writer writes nothing more, and the file holds
        every chunk completed before it.
    bytes_written : int
        Bytes in the file so far.
    dropped_chunks : int
        Chunks discarded because of a write error or because the writer was closed.

    Raises
    ------
    UsageError
        If the file cannot be created or its header cannot be written.

    Examples
    --------
    >>> w = XDFWriter("session.xdf")                                       # doctest: +SKIP
    >>> w.add_stream(1, XDFWriter.stream_header_xml("eeg", "EEG", 2, 250.0,
    ...              "float32", "amp-1", ch_labels=["C3", "C4"]))           # doctest: +SKIP
    >>> w.write_samples(1, timestamps, samples)   # (n,), (n, 2)          # doctest: +SKIP
    >>> w.close()                                                         # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, flush_interval_s: float = 0.5) -> None:
        flush_interval_s = float(flush_interval_s)
        if not (math.isfinite(flush_interval_s) and 0.0 < flush_interval_s <= 10.0):
            raise UsageError(
                f"flush_interval_s={flush_interval_s!r} is not usable; give a number of "
                "seconds above 0 and at most 10."
            )
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.error: OSError | None = None
        self.bytes_written = 0
        self.dropped_chunks = 0
        self._streams: dict[int, _StreamState] = {}
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()  # streams, pending buffer
        self._io_lock = threading.Lock()  # the file descriptor, in write order
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise UsageError(
                f"cannot create the recording {str(self.path)!r}: {exc.strerror}. "
                "Give a file path in an existing, writable folder."
            ) from None
        started = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat()
        file_header = (
            '<?xml version="1.0"?><info><version>1.0</version>'
            f"<datetime>{started}</datetime><writer>closedloop</writer></info>"
        )
        header = b"XDF:" + _chunk(TAG_FILE_HEADER, file_header.encode("utf-8"))
        self._write_all([header])
        if self.error is not None:
            os.close(self._fd)
            raise UsageError(
                f"cannot write the recording {str(self.path)!r}: {self.error.strerror}."
            )
        self._flusher = threading.Thread(target=self._flush_loop, name="xdf-flush", daemon=True)
        self._flusher.start()

    # ------------------------------------------------------------------ stream headers
    @staticmethod
    def stream_header_xml(
        name: str,
        type: str,
        channel_count: int,
        nominal_srate: float,
        channel_format: str,
        source_id: str,
        ch_labels: Sequence[str] | None = None,
        ch_units: Sequence[str] | None = None,
        ch_types: Sequence[str] | None = None,
        desc_xml: str = "",
    ) -> str:
        """Build a stream header ``<info>`` document like the one an LSL outlet publishes.

        Parameters
        ----------
        name, type, source_id : str
            The stream's name, content type and source id.
        channel_count : int
            Number of channels (at least 1).
        nominal_srate : float
            Nominal rate in Hz; 0 for an irregular stream (markers, states).
        channel_format : str
            One of ``float32``, ``double64``, ``int8``, ``int16``, ``int32``, ``int64``,
            ``string``.
        ch_labels, ch_units, ch_types : sequence of str, optional
            Per-channel label, unit and type, written to ``desc/channels/channel``.
        desc_xml : str
            Further XML elements to place inside ``<desc>`` (after ``<channels>``).

        Returns
        -------
        str
            The XML document.
        """
        channel_count = int(channel_count)
        if channel_count < 1:
            raise ValueError(f"channel_count must be at least 1, got {channel_count}.")
        if channel_format not in CHANNEL_FORMATS:
            raise ValueError(
                f"channel_format {channel_format!r} is not an XDF format; "
                f"accepted: {', '.join(CHANNEL_FORMATS)}."
            )
        nominal_srate = float(nominal_srate)
        if not (math.isfinite(nominal_srate) and nominal_srate >= 0):
            raise ValueError(f"nominal_srate must be >= 0 Hz (0 = irregular), got {nominal_srate}.")
        per_channel = {"label": ch_labels, "unit": ch_units, "type": ch_types}
        for key, values in per_channel.items():
            if values is not None and len(values) != channel_count:
                raise ValueError(
                    f"ch_{key}s has {len(values)} entries but the stream has {channel_count} "
                    "channels; give one per channel."
                )
        import socket

        import pylsl

        created_at = pylsl.local_clock()

        info = ET.Element("info")
        for tag, text in (
            ("name", name),
            ("type", type),
            ("channel_count", str(channel_count)),
            ("channel_format", channel_format),
            ("source_id", source_id),
            ("nominal_srate", _fmt_float(nominal_srate)),
            ("version", "1.1"),
            ("created_at", _fmt_float(created_at)),
            ("hostname", socket.gethostname()),
        ):
            ET.SubElement(info, tag).text = str(text)
        desc = ET.SubElement(info, "desc")
        if any(v is not None for v in per_channel.values()):
            channels = ET.SubElement(desc, "channels")
            for i in range(channel_count):
                ch = ET.SubElement(channels, "channel")
                for key, values in per_channel.items():
                    if values is not None:
                        ET.SubElement(ch, key).text = str(values[i])
        if desc_xml:
            try:
                extra = ET.fromstring(f"<desc>{desc_xml}</desc>")
            except ET.ParseError as exc:
                raise ValueError(f"desc_xml is not well-formed XML ({exc}).") from None
            desc.extend(list(extra))
        return '<?xml version="1.0"?>' + ET.tostring(info, encoding="unicode")

    def add_stream(self, stream_id: int, header_xml: str) -> None:
        """Declare a stream and write its StreamHeader chunk.

        Parameters
        ----------
        stream_id : int
            The id this file uses for the stream (0 to 2**32 - 1, unique in the file).
        header_xml : str
            The full ``<info>`` document: ``pylsl.StreamInfo.as_xml()`` of an inlet's info,
            or :meth:`stream_header_xml`. It must give ``channel_count``, ``nominal_srate``
            and ``channel_format``.
        """
        stream_id = self._check_id(stream_id)
        try:
            root = ET.fromstring(header_xml)
        except ET.ParseError as exc:
            raise ValueError(
                f"the header of stream {stream_id} is not well-formed XML ({exc})."
            ) from None
        if root.tag != "info":
            raise ValueError(
                f"the header of stream {stream_id} must have <info> as its root, not <{root.tag}>."
            )
        values = {}
        for key in ("channel_count", "nominal_srate", "channel_format"):
            text = root.findtext(key)
            if text is None or not text.strip():
                raise ValueError(
                    f"the header of stream {stream_id} has no <{key}>; it is required."
                )
            values[key] = text.strip()
        fmt = values["channel_format"]
        if fmt not in CHANNEL_FORMATS:
            raise ValueError(
                f"the header of stream {stream_id} has channel_format {fmt!r}; "
                f"accepted: {', '.join(CHANNEL_FORMATS)}."
            )
        try:
            n_channels = int(values["channel_count"])
            srate = float(values["nominal_srate"])
        except ValueError:
            raise ValueError(
                f"the header of stream {stream_id} has a non-numeric channel_count "
                f"({values['channel_count']!r}) or nominal_srate ({values['nominal_srate']!r})."
            ) from None
        if n_channels < 1 or not (math.isfinite(srate) and srate >= 0):
            raise ValueError(
                f"the header of stream {stream_id} has channel_count {n_channels} and "
                f"nominal_srate {srate}; need at least 1 channel and a rate >= 0."
            )
        name = root.findtext("name") or ""
        content = struct.pack("<I", stream_id) + header_xml.encode("utf-8")
        with self._lock:
            if stream_id in self._streams:
                raise ValueError(
                    f"stream id {stream_id} is already in this file; give each stream its own id."
                )
            self._streams[stream_id] = _StreamState(stream_id, n_channels, srate, fmt, name)
            self._append(_chunk(TAG_STREAM_HEADER, content))
        self._wake.set()

    # ------------------------------------------------------------------ samples
    def write_samples(
        self,
        stream_id: int,
        timestamps: np.ndarray | Sequence[float],
        samples: np.ndarray | Sequence,
    ) -> None:
        """Append one Samples chunk.

        Parameters
        ----------
        stream_id : int
            A stream declared with :meth:`add_stream`.
        timestamps : array-like, shape (n,)
            Time stamps in seconds. A time stamp that equals the previous one plus
            1 / nominal_srate exactly is left for the reader to deduce (except the first
            of each chunk), which loses nothing.
        samples : ndarray, shape (n, n_channels), or list of str
            Numeric values (cast to the stream's format; floats are refused for integer
            streams), or for string streams a list of n strings (one channel) or of n
            lists of strings.

        Notes
        -----
        Never raises for I/O problems (see :attr:`error`); raises ``ValueError`` for samples
        that do not fit the stream.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ValueError(f"stream id {stream_id!r} was not added; call add_stream first.")
        ts = np.ascontiguousarray(timestamps, dtype=np.float64).reshape(-1)
        n = ts.shape[0]
        if stream.dtype is None:
            encoded_values = self._encode_strings(stream, samples, n)
            values = None
        else:
            values = self._check_numeric(stream, samples, n)
            encoded_values = None
        if n == 0:
            return
        # Which samples the reader can deduce (ts[k] == ts[k-1] + 1/srate). The first sample
        # of a chunk always carries its stamp, so a chunk encodes on its own, outside the lock,
        # and a reader that skipped a damaged chunk still gets the next one's times right.
        stamped = np.ones(n, dtype=bool)
        if stream.tdiff > 0 and n > 1:
            stamped[1:] = ts[1:] != ts[:-1] + stream.tdiff
        if values is not None:
            body = self._encode_numeric(ts, stamped, values)
        else:
            body = self._encode_string_samples(ts, stamped, encoded_values)
        chunk = _chunk(TAG_SAMPLES, struct.pack("<I", stream.stream_id) + _varlen(n) + body)
        with self._lock:
            if self._closing or self.error is not None:
                self.dropped_chunks += 1
                return
            if stream.first_ts is None:
                stream.first_ts = float(ts[0])
            stream.last_ts = float(ts[-1])
            stream.sample_count += n
            self._append(chunk)
            wake = self._pending_bytes >= _EARLY_FLUSH_BYTES
        if wake:
            self._wake.set()

    @staticmethod
    def _check_numeric(stream: _StreamState, samples, n: int) -> np.ndarray:
        arr = np.asarray(samples)
        if arr.ndim == 1 and stream.n_channels == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape != (n, stream.n_channels):
            raise ValueError(
                f"samples for stream {stream.stream_id} ({stream.name!r}) have shape {arr.shape}; "
                f"expected ({n}, {stream.n_channels}): one row per time stamp, one column per channel."
            )
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"samples for stream {stream.stream_id} have dtype {arr.dtype}; expected numbers "
                f"for its {stream.fmt} format."
            )
        if stream.dtype.kind == "i" and arr.dtype.kind == "f":
            raise ValueError(
                f"samples for stream {stream.stream_id} are floats ({arr.dtype}) but the stream "
                f"is {stream.fmt}; give integers."
            )
        return np.ascontiguousarray(arr, dtype=stream.dtype)

    @staticmethod
    def _encode_numeric(ts: np.ndarray, stamped: np.ndarray, values: np.ndarray) -> bytes:
        n, row_bytes = values.shape[0], values.itemsize * values.shape[1]
        rec = np.empty((n, 9 + row_bytes), dtype=np.uint8)
        rec[:, 0] = np.where(stamped, 8, 0)
        rec[:, 1:9] = ts.astype("<f8").view(np.uint8).reshape(n, 8)
        rec[:, 9:] = values.view(np.uint8).reshape(n, row_bytes)
        if stamped.all():
            return rec.tobytes()
        keep = np.ones(rec.shape, dtype=bool)
        keep[~stamped, 1:9] = False
        return rec[keep].tobytes()

    @staticmethod
    def _encode_strings(stream: _StreamState, samples, n: int) -> list[bytes]:
        if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence | np.ndarray):
            raise TypeError(
                f"samples for string stream {stream.stream_id} must be a list of {n} strings "
                "(or of lists of strings, one per channel)."
            )
        if len(samples) != n:
            raise ValueError(
                f"stream {stream.stream_id} got {len(samples)} samples for {n} time stamps; "
                "give one sample per time stamp."
            )
        out = []
        for sample in samples:
            if isinstance(sample, str):
                row = [sample]
            elif isinstance(sample, Sequence | np.ndarray):
                row = list(sample)
            else:
                row = [sample]
            if len(row) != stream.n_channels or not all(isinstance(v, str) for v in row):
                raise ValueError(
                    f"string stream {stream.stream_id} has {stream.n_channels} channel(s); "
                    f"got the sample {sample!r}. Give one str per channel."
                )
            parts = []
            for v in row:
                raw = v.encode("utf-8")
                parts.append(_varlen(len(raw)))
                parts.append(raw)
            out.append(b"".join(parts))
        return out

    @staticmethod
    def _encode_string_samples(ts: np.ndarray, stamped: np.ndarray, values: list[bytes]) -> bytes:
        parts = []
        for k, raw in enumerate(values):
            parts.append(b"\x08" + struct.pack("<d", ts[k]) if stamped[k] else b"\x00")
            parts.append(raw)
        return b"".join(parts)

    # ------------------------------------------------------------------ other chunks
    def write_clock_offset(self, stream_id: int, collection_time: float, offset: float) -> None:
        """Append a ClockOffset chunk for a stream.

        Parameters
        ----------
        stream_id : int
            A stream declared with :meth:`add_stream`.
        collection_time : float
            When the offset was measured, in the stream's own clock (LabRecorder writes
            ``local_clock() - offset``).
        offset : float
            Seconds to add to the stream's time stamps to get the recorder's clock
            (``inlet.time_correction()``).
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ValueError(f"stream id {stream_id!r} was not added; call add_stream first.")
        content = struct.pack("<Idd", stream_id, float(collection_time), float(offset))
        with self._lock:
            if self._closing or self.error is not None:
                self.dropped_chunks += 1
                return
            stream.clock_offsets.append((float(collection_time), float(offset)))
            self._append(_chunk(TAG_CLOCK_OFFSET, content))

    def write_boundary(self) -> None:
        """Append a Boundary chunk (a resynchronisation point) and flush soon after.

        The flush happens on the writer's thread, so this never blocks on the disk.
        """
        with self._lock:
            if self._closing or self.error is not None:
                self.dropped_chunks += 1
                return
            self._append(_chunk(TAG_BOUNDARY, BOUNDARY_UUID))
        self._wake.set()

    def flush(self) -> None:
        """Hand every chunk written so far to the operating system now (blocking)."""
        with self._io_lock:
            with self._lock:
                chunks, self._pending, self._pending_bytes = self._pending, [], 0
            if not chunks:
                return
            if self._closed:
                self.dropped_chunks += len(chunks)
                return
            self._write_all(chunks)

    def close(self, footers: Mapping[int, Mapping[str, object]] | None = None) -> None:
        """Write a StreamFooter per stream, flush, and close the file. Idempotent.

        Parameters
        ----------
        footers : dict, optional
            ``{stream_id: {element: value}}``: extra elements for a stream's footer
            ``<info>``; a key that names a computed element (``first_timestamp``,
            ``last_timestamp``, ``sample_count``) replaces it.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self.error is None:
                for stream_id, stream in self._streams.items():
                    extra = (footers or {}).get(stream_id, {})
                    xml = self._footer_xml(stream, extra).encode("utf-8")
                    self._append(_chunk(TAG_STREAM_FOOTER, struct.pack("<I", stream_id) + xml))
        self._wake.set()
        self._flusher.join()
        self.flush()
        with self._io_lock:
            try:
                if self.error is None:
                    os.fsync(self._fd)
            except OSError as exc:  # pragma: no cover - fsync failures are rare
                self._record_error(exc)
            finally:
                os.close(self._fd)
                self._closed = True

    @staticmethod
    def _footer_xml(stream: _StreamState, extra: Mapping[str, object]) -> str:
        info = ET.Element("info")
        fields: dict[str, str] = {}
        if stream.sample_count:
            fields["first_timestamp"] = _fmt_float(stream.first_ts)
            fields["last_timestamp"] = _fmt_float(stream.last_ts)
        fields["sample_count"] = str(stream.sample_count)
        for key, value in extra.items():
            fields[str(key)] = _fmt_float(value) if isinstance(value, float) else str(value)
        for key, text in fields.items():
            try:
                ET.SubElement(info, key).text = text
            except ValueError:  # pragma: no cover - ET accepts most names
                continue
        offsets = ET.SubElement(info, "clock_offsets")
        for t, v in stream.clock_offsets:
            off = ET.SubElement(offsets, "offset")
            ET.SubElement(off, "time").text = _fmt_float(t)
            ET.SubElement(off, "value").text = _fmt_float(v)
        return '<?xml version="1.0"?>' + ET.tostring(info, encoding="unicode")

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_id(stream_id: int) -> int:
        if isinstance(stream_id, bool) or not isinstance(stream_id, (int, np.integer)):
            raise TypeError(f"stream id must be an integer, got {stream_id!r}.")
        if not 0 <= int(stream_id) <= _MAX_STREAM_ID:
            raise ValueError(
                f"stream id {stream_id} is out of range; accepted: 0 to {_MAX_STREAM_ID}."
            )
        return int(stream_id)

    def _append(self, chunk: bytes) -> None:
        # caller holds self._lock
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)

    def _flush_loop(self) -> None:
        from closedloop import realtime

        realtime.background()  # below a real-time loop
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()
            if self._closing:
                return

    def _write_all(self, chunks: list[bytes]) -> None:
        """Write whole chunks; on failure trim the file to the last complete chunk and stop."""
        if self.error is not None:
            self.dropped_chunks += len(chunks)
            return
        data = b"".join(chunks)
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            complete = 0
            kept = 0
            for chunk in chunks:
                if complete + len(chunk) > done:
                    break
                complete += len(chunk)
                kept += 1
            try:
                os.ftruncate(self._fd, self.bytes_written + complete)
            except OSError:  # pragma: no cover - trimming a file rarely fails
                pass
            self.bytes_written += complete
            self.dropped_chunks += len(chunks) - kept
            self._record_error(exc)
            return
        finally:
            view.release()
        self.bytes_written += done

    def _record_error(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc
            logger.error(
                "recording %s stopped: %s; the file keeps the %d bytes written before it.",
                self.path,
                exc.strerror or exc,
                self.bytes_written,
            )
        with self._lock:
            self.dropped_chunks += len(self._pending)
            self._pending, self._pending_bytes = [], 0

    def __enter__(self) -> XDFWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def stream_ids(self) -> list[int]:
        """Ids of the streams added so far, in order."""
        return list(self._streams)

    def sample_count(self, stream_id: int) -> int:
        """Samples written for a stream so far."""
        return self._streams[stream_id].sample_count
