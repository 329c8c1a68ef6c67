"""Reading recordings in pieces: every format MNE reads, and XDF through pyxdf.

Samples come out as ``(n_channels, n_samples)`` float64, C-contiguous, voltage channels in
microvolts (MNE's volts and XDF's declared units are converted here, once), other channels in
their own units. Annotations and XDF marker streams become :class:`Event` objects with onsets
in seconds from the recording's first sample.

MNE formats are opened with ``preload=False`` and read with ``raw.get_data(start, stop)``, so
long files are never loaded whole. XDF files have to be parsed whole by pyxdf.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from closedloop.errors import DataError, UsageError
from closedloop.units import factor_name, unit_to_uv

ACCEPTED_FORMATS = (
    "EDF/EDF+ (.edf), BDF (.bdf), GDF (.gdf), FIF (.fif), BrainVision (.vhdr), "
    "EEGLAB (.set) and the other formats mne.io.read_raw opens, and XDF (.xdf, .xdfz)"
)
MICROVOLTS = "microvolts"

# Voltage units in XDF/LSL headers (words, symbols and mne-lsl's numeric codes) are read by
# closedloop.units.unit_to_uv.
# XDF channel types whose samples are voltages (scaled to microvolts; unknown unit -> µV).
_VOLTAGE_TYPES = {"eeg", "eog", "emg", "ecg", "ekg", "seeg", "ecog", "bio", "exg", "ref", "gnd", "dbs"}
_TRUNCATED_EDF = "Number of records from the header does not match the file size"


@dataclass
class Event:
    """One annotation or marker.

    Attributes
    ----------
    onset_s : float
        Seconds from the recording's first sample.
    duration_s : float
        Seconds (0 for markers).
    description : str
        The annotation's text or the marker string.
    """

    onset_s: float
    duration_s: float
    description: str


class Recording:
    """An open recording: metadata up front, samples read on demand in pieces.

    Made by :func:`open_recording` (files) or :func:`array_recording` (arrays in memory).

    Attributes
    ----------
    path : pathlib.Path or None
        The file (None for an array).
    value_scale : ndarray
        Per channel, the factor from the file's own values (in the unit its header states, or
        ``--units``) to the microvolts :meth:`read` returns.
    format : str
        ``"mne"`` (any format MNE reads; see ``mne_class``), ``"xdf"`` or ``"array"``.
    sfreq : float
        Nominal sampling rate in Hz.
    ch_names, ch_types, units : list of str
        Per channel: label, lower-case type (``"eeg"``, ``"stim"``, ``"misc"``, ...) and unit of
        the samples :meth:`read` returns (``"microvolts"`` for every voltage channel).
    n_samples : int
        Samples per channel.
    duration_s : float
        ``n_samples / sfreq``.
    events : list of Event
        Annotations or markers, sorted by onset.
    notes : list of str
        Assumptions and oddities found while opening (unknown units, irregular XDF clock, ...).
    """

    def __init__(
        self,
        *,
        path: Path | None,
        format: str,
        sfreq: float,
        ch_names: Sequence[str],
        ch_types: Sequence[str],
        units: Sequence[str],
        n_samples: int,
        events: Sequence[Event],
        notes: Sequence[str],
        reader,
        scale: np.ndarray,
        mne_class: str = "",
        value_scale: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.mne_class = mne_class
        self.sfreq = float(sfreq)
        self.ch_names = [str(n) for n in ch_names]
        self.ch_types = [str(t) for t in ch_types]
        self.units = [str(u) for u in units]
        self.n_samples = int(n_samples)
        self.duration_s = self.n_samples / self.sfreq
        self.events = sorted(events, key=lambda e: e.onset_s)
        self.notes = list(notes)
        self._reader = reader
        self._scale = np.asarray(scale, dtype=np.float64).reshape(-1, 1)
        self._needs_scale = bool(np.any(self._scale != 1.0))
        # factor from the values as the file holds them (in the unit its header states, or
        # --units) to microvolts: what a units check reports the values as "taken as"
        self.value_scale = np.asarray(value_scale if value_scale is not None else scale, dtype=np.float64).reshape(-1)

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return len(self.ch_names)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._reader is None

    def __repr__(self) -> str:
        where = self.path.name if self.path is not None else "array"
        return (
            f"<Recording {where} | {self.n_channels} ch, {self.sfreq:g} Hz, "
            f"{self.duration_s:.1f} s, {len(self.events)} events>"
        )

    def __enter__(self) -> Recording:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        if self._reader is None:
            raise ValueError(f"{self!r} is closed; open it again to read samples.")
        try:
            start_i, stop_i = int(start), int(stop)
        except (TypeError, ValueError):
            raise ValueError(f"start and stop must be integers, got {start!r} and {stop!r}.")
        if start_i != start or stop_i != stop:
            raise ValueError(f"start and stop must be integers, got {start!r} and {stop!r}.")
        if not 0 <= start_i <= stop_i <= self.n_samples:
            raise ValueError(
                f"samples {start_i}..{stop_i} are out of range: "
                f"need 0 <= start <= stop <= n_samples ({self.n_samples})."
            )
        return start_i, stop_i

    def read(self, start: int, stop: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Samples ``start`` (inclusive) to ``stop`` (exclusive) of every channel, or of the
        channels ``rows`` (indices, ascending: an engine's ``input_rows``) only.

        Returns
        -------
        ndarray, shape (n_channels or len(rows), stop - start)
            float64, C-contiguous, voltage channels in microvolts.

        Raises
        ------
        ValueError
            When the range is outside ``0 <= start <= stop <= n_samples``.
        DataError
            When the file cannot be read there (changed or damaged since it was opened).
        """
        start, stop = self._check_range(start, stop)
        rows = self._check_rows(rows)
        n_rows = self.n_channels if rows is None else rows.shape[0]
        if stop == start:
            return np.zeros((n_rows, 0), dtype=np.float64)
        try:
            data = self._reader(start, stop) if rows is None else self._reader(start, stop, rows)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"could not read samples {start}..{stop} of {self._where()}: {exc}. "
                "The file may have changed or be damaged since it was opened."
            ) from exc
        data = np.array(data, dtype=np.float64, order="C", copy=True)
        if self._needs_scale:
            data *= self._scale if rows is None else self._scale[rows]
        return data

    def _check_rows(self, rows) -> np.ndarray | None:
        if rows is None:
            return None
        rows = np.asarray(rows)
        if (
            rows.ndim != 1
            or rows.shape[0] < 1
            or rows.dtype.kind not in "iu"
            or rows[0] < 0
            or rows[-1] >= self.n_channels
            or np.any(np.diff(rows) <= 0)
        ):
            raise ValueError(
                f"rows must be ascending channel indices within 0..{self.n_channels - 1}, "
                f"got {rows!r}."
            )
        if rows.shape[0] == self.n_channels:
            return None  # every channel: the plain read
        return rows.astype(np.intp)

    def iter_chunks(
        self, chunk_size: int, start: int = 0, stop: int | None = None,
        rows: np.ndarray | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Consecutive chunks of ``chunk_size`` samples (the last may be shorter), of every
        channel or of the channels ``rows`` only (as :meth:`read`).

        The file is read in larger blocks behind the scenes, so small chunks stay cheap.

        Yields
        ------
        index : int
            Index of the chunk's first sample.
        chunk : ndarray, shape (n_channels, n)
            As :meth:`read`.
        """
        if (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, (int, np.integer))
            or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
        stop = self.n_samples if stop is None else stop
        start, stop = self._check_range(start, stop)
        chunk_size = int(chunk_size)
        rows = self._check_rows(rows)
        n_rows = self.n_channels if rows is None else rows.shape[0]
        per_block = max(1, (1 << 19) // max(1, n_rows))  # about 4 MB of float64
        block_size = max(chunk_size, per_block // chunk_size * chunk_size)
        for block_start in range(start, stop, block_size):
            block_stop = min(stop, block_start + block_size)
            block = self.read(block_start, block_stop, rows)
            m = block_stop - block_start
            whole = m // chunk_size * chunk_size
            if whole:
                # one copy per block into chunk-major order, so that every chunk is a
                # C-contiguous view (not a copy per chunk)
                tiles = np.ascontiguousarray(
                    block[:, :whole].reshape(n_rows, whole // chunk_size, chunk_size).swapaxes(0, 1)
                )
                for j in range(tiles.shape[0]):
                    yield block_start + j * chunk_size, tiles[j]
            if whole < m:
                yield block_start + whole, np.ascontiguousarray(block[:, whole:])

    def close(self) -> None:
        """Release the file; :meth:`read` fails afterwards."""
        self._reader = None

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "the array recording"


def open_recording(path: str | Path, stream: str | None = None, units: float | None = None) -> Recording:
    """Open a recording for reading in pieces.

    Parameters
    ----------
    path : str or Path
        Any file ``mne.io.read_raw`` opens (EDF/EDF+, BDF, GDF, FIF, BrainVision ``.vhdr``,
        EEGLAB ``.set``, ...) or an XDF file (``.xdf``, ``.xdfz``).
    stream : str, optional
        XDF only: name or type of the stream to read. Default: the stream of type EEG, else
        the largest numeric stream.
    units : float, optional
        The factor to microvolts of the values the file holds on its voltage channels, whatever
        its header declares (``--units``: 1e6 when they are in volts); for MNE formats relative to
        the unit the header states (``raw._orig_units``), volts where none is known.

    Returns
    -------
    Recording

    Raises
    ------
    DataError
        Missing, unreadable, truncated or unsupported file; no usable stream or rate.
    UsageError
        ``stream`` given for a file that is not XDF.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"recording {str(path)!r} does not exist.")
    if path.is_dir():
        raise DataError(
            f"recording {str(path)!r} is a folder; give a file. Accepted formats: {ACCEPTED_FORMATS}."
        )
    if _is_xdf(path):
        return _open_xdf(path, stream, units)
    if stream is not None:
        raise UsageError(
            f"stream={stream!r} applies to XDF files only, but {path.name!r} is not XDF; "
            "leave the stream out."
        )
    return _open_mne(path, units)


def unit_factors(units, n_channels: int) -> np.ndarray:
    """The factor to microvolts of each channel's ``units`` (one unit for all, or one each).

    Raises
    ------
    DataError
        No units given, or a unit that is not a voltage.
    """
    from closedloop.units import ACCEPTED

    if units is None:
        raise DataError(
            "an array needs its units: pass units= (one for all channels or one per channel); "
            f"accepted: {ACCEPTED}. An MNE Raw is in volts: pass the Raw itself."
        )
    per_channel = [units] * n_channels if isinstance(units, str) else list(units)
    if len(per_channel) != n_channels:
        raise DataError(f"units has {len(per_channel)} entries; the data has {n_channels} channels.")
    scale = np.empty(n_channels)
    for i, unit in enumerate(per_channel):
        factor = unit_to_uv(unit, "eeg")
        if factor is None:
            raise DataError(f"units {unit!r} is not a voltage unit closedloop knows; accepted: {ACCEPTED}.")
        scale[i] = factor
    return scale


def array_in_microvolts(data: np.ndarray, units, n_channels: int) -> np.ndarray:
    """``data`` scaled to microvolts from ``units`` (:func:`unit_factors`)."""
    scale = unit_factors(units, n_channels)
    data = np.asarray(data, dtype=np.float64)
    return data * scale[:, None] if np.any(scale != 1.0) else data


def declared_scale(recording: Recording, channels) -> float | None:
    """The factor to microvolts the recording's header declared for ``channels`` if they share
    one, else None (what the units check names in its message)."""
    values = {float(recording.value_scale[i]) for i in channels}
    return values.pop() if len(values) == 1 else None


def array_recording(
    data: np.ndarray,
    sfreq: float,
    ch_names: Sequence[str] | None = None,
    *,
    ch_types: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    events: Sequence[Event] = (),
    value_scale: np.ndarray | None = None,
) -> Recording:
    """Wrap an array ``(n_channels, n_samples)`` already in its final units as a Recording
    (``units`` only labels the channels; :func:`array_in_microvolts` converts, and
    ``value_scale`` says by which factors, for the units check's messages)."""
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(
            f"data must have shape (n_channels, n_samples) with both > 0, got {data.shape}."
        )
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"data must be real numbers, got dtype {data.dtype}.")
    n_channels, n_samples = data.shape
    sfreq = _check_sfreq(sfreq, "the array")
    ch_names = list(ch_names) if ch_names is not None else [f"ch{i + 1}" for i in range(n_channels)]
    ch_types = list(ch_types) if ch_types is not None else ["eeg"] * n_channels
    units = list(units) if units is not None else [MICROVOLTS] * n_channels
    for what, values in (("ch_names", ch_names), ("ch_types", ch_types), ("units", units)):
        if len(values) != n_channels:
            raise ValueError(f"{what} has {len(values)} entries; data has {n_channels} channels.")
    return Recording(
        path=None,
        format="array",
        sfreq=sfreq,
        ch_names=ch_names,
        ch_types=ch_types,
        units=units,
        n_samples=n_samples,
        events=list(events),
        notes=[],
        reader=lambda start, stop, rows=None: (
            data[:, start:stop] if rows is None else data[rows, start:stop]
        ),
        scale=np.ones(n_channels),
        value_scale=value_scale,
    )


def _check_sfreq(sfreq, where: str) -> float:
    try:
        value = float(sfreq)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise DataError(
            f"{where} has an unusable sampling rate ({sfreq!r}); a positive, finite rate in Hz "
            "is needed."
        )
    return value


def _is_xdf(path: Path) -> bool:
    if path.suffix.lower() in (".xdf", ".xdfz"):
        return True
    try:
        with open(path, "rb") as fid:
            return fid.read(4) == b"XDF:"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# MNE formats


def _mne_unit_name(unit: int) -> str:
    from mne.io.constants import FIFF

    names = {
        int(FIFF.FIFF_UNIT_V): "volts",
        int(FIFF.FIFF_UNIT_T): "tesla",
        int(FIFF.FIFF_UNIT_T_M): "tesla/m",
        int(FIFF.FIFF_UNIT_MOL): "mol",
        int(FIFF.FIFF_UNIT_CEL): "celsius",
        int(FIFF.FIFF_UNIT_AM): "ampere-meter",
        int(FIFF.FIFF_UNIT_S): "seconds",
        int(FIFF.FIFF_UNIT_NONE): "n/a",
        int(FIFF.FIFF_UNIT_UNITLESS): "n/a",
    }
    return names.get(int(unit), f"FIFF unit {int(unit)}")


def _edf_header_records(path: Path) -> int | None:
    """The record count an EDF/BDF header declares (-1: unknown), or None if unreadable."""
    try:
        with open(path, "rb") as fid:
            head = fid.read(256)
        return int(head[236:244].decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _open_mne(path: Path, units: float | None = None) -> Recording:
    import mne

    mne_logger = logging.getLogger("mne")
    mute = logging.Filter("closedloop.mute")  # a name no record has: rejects every record
    mne_logger.addFilter(mute)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = mne.io.read_raw(path, preload=False, verbose="warning")
        except FileNotFoundError as exc:
            missing = getattr(exc, "filename", None) or str(exc)
            raise DataError(
                f"recording {str(path)!r} refers to a file that is missing: {missing}. "
                "Keep the files of a recording together (e.g. .vhdr, .vmrk and .eeg)."
            ) from None
        except ValueError as exc:
            if "Unsupported file type" in str(exc) or "not supported" in str(exc).lower():
                raise DataError(
                    f"{path.name!r} is not a format closedloop can read ({path.suffix or 'no suffix'}). "
                    f"Accepted formats: {ACCEPTED_FORMATS}."
                ) from exc
            raise _unreadable(path, exc) from exc
        except Exception as exc:  # MNE's readers raise many kinds on damaged files
            raise _unreadable(path, exc) from exc
        finally:
            mne_logger.removeFilter(mute)
    messages = [str(w.message) for w in caught]
    if any(_TRUNCATED_EDF in m for m in messages) and _edf_header_records(path) not in (None, -1):
        declared = _edf_header_records(path)
        raise DataError(
            f"recording {str(path)!r} is truncated: its header declares {declared} data records "
            f"but the file ends after {raw.n_times / raw.info['sfreq']:.1f} s. Copy or export it again."
        )
    notes = [f"MNE: {m}" for m in dict.fromkeys(messages)]
    return raw_recording(raw, path=path, notes=notes, units=units)


def is_mne_raw(obj) -> bool:
    """True for an MNE Raw (``mne.io.BaseRaw``)."""
    from mne.io import BaseRaw

    return isinstance(obj, BaseRaw)


def raw_recording(
    raw, *, path: Path | None = None, notes: Sequence[str] = (), units: float | None = None
) -> Recording:
    """Wrap an MNE Raw (``mne.io.BaseRaw``, loaded or not) as a Recording.

    MNE holds voltages in volts: voltage channels are read in microvolts, as from files.
    ``units`` (``--units``) is the factor to microvolts of the values the file held, whatever its
    header declared.
    """
    notes = list(notes)
    from mne.io.constants import FIFF

    where = repr(path.name) if path is not None else "the MNE Raw"
    sfreq = _check_sfreq(raw.info["sfreq"], where)
    if raw.n_times < 1 or len(raw.ch_names) < 1:
        what = f"recording {str(path)!r}" if path is not None else "the MNE Raw"
        raise DataError(f"{what} holds no samples; nothing to read.")

    scale = np.ones(len(raw.ch_names))
    value_scale = np.ones(len(raw.ch_names))
    given, units = units, []
    orig = getattr(raw, "_orig_units", None) or {}
    for i, ch in enumerate(raw.info["chs"]):
        if int(ch["unit"]) == int(FIFF.FIFF_UNIT_V):
            scale[i] = 1e6
            units.append(MICROVOLTS)
            declared = unit_to_uv(orig.get(ch["ch_name"]), "eeg") or 1e6
            value_scale[i] = declared
            if given is not None:
                # MNE scaled the file's values by the unit its header states; the values are in
                # `given` instead
                scale[i] = 1e6 * given / declared
                value_scale[i] = given
        else:
            units.append(_mne_unit_name(ch["unit"]))
    if given is not None:
        stated = sorted({str(orig.get(n, "V")) for n, ch in zip(raw.ch_names, raw.info["chs"])
                         if int(ch["unit"]) == int(FIFF.FIFF_UNIT_V)})
        notes.append(
            f"--units: the voltage channels' values are taken as {factor_name(given)} "
            f"(the file says {', '.join(stated) or 'nothing'})"
        )
    annotations = raw.annotations
    first_time = raw.first_time
    events = [
        Event(float(onset) - first_time, float(duration), str(description))
        for onset, duration, description in zip(
            annotations.onset, annotations.duration, annotations.description
        )
    ]

    def reader(start: int, stop: int, rows=None) -> np.ndarray:
        return raw.get_data(picks=rows, start=start, stop=stop, verbose="error")

    return Recording(
        path=path if path is not None else (Path(raw.filenames[0]) if raw.filenames and raw.filenames[0] else None),
        format="mne",
        mne_class=type(raw).__name__,
        sfreq=sfreq,
        ch_names=raw.ch_names,
        ch_types=raw.get_channel_types(),
        units=units,
        n_samples=raw.n_times,
        events=events,
        notes=notes,
        reader=reader,
        scale=scale,
        value_scale=value_scale,
    )


def _unreadable(path: Path, exc: BaseException) -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = "".join(c if c.isprintable() else "?" for c in reason)
    reason = (reason[:117] + "...") if len(reason) > 120 else reason.rstrip(".")
    return DataError(
        f"could not read recording {str(path)!r}: {reason}. It may be damaged or truncated, or "
        f"not a recording. Accepted formats: {ACCEPTED_FORMATS}."
    )


# ---------------------------------------------------------------------------------------------
# XDF


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _first(value, default=None):
    """pyxdf wraps every header value in a one-element list."""
    while isinstance(value, list):
        if not value:
            return default
        value = value[0]
    return default if value is None else value


def _stream_label(stream: dict) -> str:
    info = stream["info"]
    return (
        f"{_first(info.get('name'), '?')!r} (type {_first(info.get('type'), '?')!r}, "
        f"{_first(info.get('channel_count'), '?')} ch, {_first(info.get('nominal_srate'), '?')} Hz, "
        f"{_first(info.get('channel_format'), '?')})"
    )


def _is_numeric(stream: dict) -> bool:
    return _first(stream["info"].get("channel_format"), "") != "string"


def _n_values(stream: dict) -> int:
    return len(stream["time_stamps"]) * int(_first(stream["info"].get("channel_count"), 1))


def _select_xdf_stream(path: Path, streams: list[dict], wanted: str | None) -> dict:
    listing = "; ".join(_stream_label(s) for s in streams) or "none"
    if wanted is not None:
        key = wanted.strip().lower()
        matches = [
            s
            for s in streams
            if key
            in (
                str(_first(s["info"].get("name"), "")).lower(),
                str(_first(s["info"].get("type"), "")).lower(),
            )
        ]
        if not matches:
            raise DataError(
                f"{path.name!r} has no stream named or typed {wanted!r}. Streams: {listing}."
            )
        numeric = [s for s in matches if _is_numeric(s)]
        if not numeric:
            raise DataError(
                f"stream {wanted!r} in {path.name!r} holds strings (markers), not samples; "
                f"choose a numeric stream. Streams: {listing}."
            )
        return max(numeric, key=_n_values)
    numeric = [s for s in streams if _is_numeric(s) and len(s["time_stamps"]) > 0]
    regular = [s for s in numeric if float(_first(s["info"].get("nominal_srate"), 0) or 0) > 0]
    eeg = [s for s in regular if str(_first(s["info"].get("type"), "")).lower() == "eeg"]
    pool = eeg or regular or numeric
    if not pool:
        raise DataError(
            f"{path.name!r} has no numeric stream with samples, only: {listing}. "
            "An XDF recording needs an EEG (or other numeric) stream."
        )
    return max(pool, key=_n_values)


def _xdf_channels(info: dict, n_channels: int) -> list[dict]:
    desc = _first(info.get("desc"))
    channels = []
    if isinstance(desc, dict):
        chans = _first(desc.get("channels"))
        if isinstance(chans, dict):
            channels = chans.get("channel") or []
    out = []
    for i in range(n_channels):
        ch = channels[i] if i < len(channels) and isinstance(channels[i], dict) else {}
        out.append(
            {
                "label": str(_first(ch.get("label"), "") or "").strip(),
                "unit": str(_first(ch.get("unit"), "") or "").strip(),
                "type": str(_first(ch.get("type"), "") or "").strip(),
            }
        )
    return out


def _open_xdf(path: Path, wanted: str | None, given: float | None = None) -> Recording:
    import pyxdf

    collector = _LogCollector()
    logger = logging.getLogger("pyxdf")
    logger.addHandler(collector)
    old_propagate = logger.propagate
    logger.propagate = False
    try:
        streams, _header = pyxdf.load_xdf(str(path))
    except Exception as exc:  # pyxdf raises OSError, ParseError, struct.error ... on damage
        raise _unreadable(path, exc) from exc
    finally:
        logger.removeHandler(collector)
        logger.propagate = old_propagate
    notes = [f"pyxdf: {m}" for m in dict.fromkeys(collector.messages)]

    chosen = _select_xdf_stream(path, streams, wanted)
    info = chosen["info"]
    name = str(_first(info.get("name"), "?"))
    stream_type = str(_first(info.get("type"), "") or "")
    sfreq = float(_first(info.get("nominal_srate"), 0) or 0)
    if not sfreq > 0:
        raise DataError(
            f"stream {name!r} in {path.name!r} has an irregular rate (nominal_srate 0); "
            "closedloop needs a stream with a fixed sampling rate."
        )
    series = np.asarray(chosen["time_series"])
    stamps = np.asarray(chosen["time_stamps"], dtype=np.float64)
    if series.ndim == 1:
        series = series[:, None]
    if len(stamps) == 0 or series.size == 0:
        raise DataError(f"stream {name!r} in {path.name!r} holds no samples; nothing to read.")
    n_samples, n_channels = series.shape

    ch_names, ch_types, units, scale = [], [], [], np.ones(n_channels)
    unlabelled, unknown_units = 0, []
    default_type = stream_type.lower() if stream_type.lower() in _VOLTAGE_TYPES else "eeg"
    for i, ch in enumerate(_xdf_channels(info, n_channels)):
        label = ch["label"] or f"ch{i + 1}"
        unlabelled += not ch["label"]
        ch_type = (ch["type"] or default_type).lower()
        factor = unit_to_uv(ch["unit"], ch_type if ch_type in _VOLTAGE_TYPES else "misc")
        if given is not None and (ch_type in _VOLTAGE_TYPES or factor is not None):
            scale[i] = given
            unit = MICROVOLTS
        elif factor is not None:
            scale[i] = factor
            unit = MICROVOLTS
        elif ch_type in _VOLTAGE_TYPES or not ch["unit"]:
            unknown_units.append(label)
            unit = MICROVOLTS
        else:
            unit = ch["unit"]
        ch_names.append(label)
        ch_types.append(ch_type)
        units.append(unit)
    if unlabelled:
        notes.append(
            f"{unlabelled} of {n_channels} channels of stream {name!r} have no label in the "
            "stream header; they are named ch1, ch2, ... by position."
        )
    if stream_type.lower() != "eeg" and not any(
        ch["type"] for ch in _xdf_channels(info, n_channels)
    ):
        notes.append(
            f"stream {name!r} has type {stream_type!r} and no channel types; its channels are "
            f"taken as {default_type!r}."
        )
    if given is not None:
        notes.append(f"--units: the voltage channels of stream {name!r} are taken as {factor_name(given)}")
    elif unknown_units:
        shown = ", ".join(unknown_units[:6]) + (" ..." if len(unknown_units) > 6 else "")
        notes.append(
            f"no known voltage unit in the header for {len(unknown_units)} channel(s) ({shown}); "
            "their values are assumed to be microvolts."
        )
    if len(stamps) > 1:
        steps = np.diff(stamps)
        # pyxdf's dejittering smooths gaps shorter than its segment break (max(1 s, 500 samples))
        gaps = int(np.sum(steps > 1.5 / sfreq))
        effective = 1.0 / float(np.median(steps)) if np.median(steps) > 0 else float("nan")
        if not math.isfinite(effective) or abs(effective / sfreq - 1) > 1e-4:
            notes.append(
                f"stream {name!r} ran at {effective:.4f} Hz by its timestamps, not its nominal "
                f"{sfreq:g} Hz; samples are kept as recorded and played at the nominal rate; "
                "markers, if any, are placed at the sample recorded with them."
            )
        if gaps:
            notes.append(
                f"stream {name!r} has {gaps} gap(s) in its timestamps; the samples are kept back "
                "to back."
            )

    events = _xdf_events(streams, chosen, stamps, sfreq)
    data = np.ascontiguousarray(series.T, dtype=np.float64)

    return Recording(
        path=path,
        format="xdf",
        sfreq=sfreq,
        ch_names=ch_names,
        ch_types=ch_types,
        units=units,
        n_samples=n_samples,
        events=events,
        notes=notes,
        reader=lambda start, stop, rows=None: (
            data[:, start:stop] if rows is None else data[rows, start:stop]
        ),
        scale=scale,
    )


def _xdf_events(streams: list[dict], chosen: dict, stamps: np.ndarray, sfreq: float) -> list[Event]:
    """Marker streams -> events, each at the (fractional) sample recorded at its time."""
    index = np.arange(len(stamps), dtype=np.float64)
    events: list[Event] = []
    for stream in streams:
        if stream is chosen or len(stream["time_stamps"]) == 0:
            continue
        info = stream["info"]
        is_string = not _is_numeric(stream)
        is_numeric_marker = (
            float(_first(info.get("nominal_srate"), 0) or 0) == 0
            and "marker" in str(_first(info.get("type"), "")).lower()
        )
        if not (is_string or is_numeric_marker):
            continue
        times = np.asarray(stream["time_stamps"], dtype=np.float64)
        if len(stamps) > 1:
            position = np.interp(times, stamps, index)
            # outside the EEG stream: extend at the nominal rate
            before, after = times < stamps[0], times > stamps[-1]
            position[before] = (times[before] - stamps[0]) * sfreq
            position[after] = index[-1] + (times[after] - stamps[-1]) * sfreq
        else:
            position = (times - stamps[0]) * sfreq
        for pos, value in zip(position, stream["time_series"]):
            values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
            text = "|".join(_format_marker(v) for v in values)
            events.append(Event(float(pos) / sfreq, 0.0, text))
    return events


def _format_marker(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
