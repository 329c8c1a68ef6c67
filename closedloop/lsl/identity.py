"""The input stream's identity, pinned at connect, and the search for it after it was lost.

liblsl's own recovery (``recover=True``) looks the stream up again by name, type, source_id,
channel count and format only, and connects to whatever answers: another device that appears
under the same source_id with other channel labels, another rate or on another host would be read
as if it were the amplifier, and ``inlet.info()`` would still return the first stream's header
(the full info is fetched once per inlet). closedloop therefore opens its inlet without recovery
and does the recovery itself: :class:`StreamFinder` resolves the source_id again in the
background, fetches each new stream's full header, and hands over an open inlet only for a stream
whose :class:`StreamIdentity` equals the pinned one (source_id, host, channel count and labels,
rate, format, units). A stream that differs is never read; what differs is reported once.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import asdict, dataclass

import pylsl

from closedloop.lsl.selection import (
    format_name,
    resolve_all,
    stream_label,
    why_not_eeg,
    xpath_literal,
)

logger = logging.getLogger("closedloop.lsl.identity")

#: Length of one search round, seconds.
SEARCH_ROUND_S = 1.0
#: Longest wait for a candidate's full header, seconds.
HEADER_TIMEOUT_S = 2.0


def channel_fields(info: pylsl.StreamInfo) -> tuple[list[str], list[str], list[str]]:
    """Labels, types and units as the full description writes them (empty where missing)."""
    n = info.channel_count()
    labels, types, units = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(labels) < n:
        labels.append(ch.child_value("label").strip())
        types.append(ch.child_value("type").strip())
        units.append(ch.child_value("unit").strip())
        ch = ch.next_sibling("channel")
    pad = [""] * (n - len(labels))
    return labels + pad, types + pad, units + pad


@dataclass(frozen=True)
class StreamIdentity:
    """What must not change when a stream comes back under its source_id."""

    source_id: str
    host: str
    n_channels: int
    labels: tuple[str, ...]
    sfreq: float
    channel_format: str
    units: tuple[str, ...]

    @classmethod
    def from_info(cls, full: pylsl.StreamInfo) -> StreamIdentity:
        """From a full stream info (``inlet.info()``, with its description)."""
        labels, _, units = channel_fields(full)
        return cls(
            source_id=full.source_id(),
            host=full.hostname(),
            n_channels=full.channel_count(),
            labels=tuple(labels),
            sfreq=float(full.nominal_srate()),
            channel_format=format_name(full),
            units=tuple(units),
        )

    def differences(self, other: StreamIdentity) -> list[str]:
        """What ``other`` has different, in words (empty when it is the same stream)."""
        out = []
        if other.source_id != self.source_id:
            out.append(f"source_id {other.source_id!r} instead of {self.source_id!r}")
        if other.host != self.host:
            out.append(f"host {other.host!r} instead of {self.host!r}")
        if other.n_channels != self.n_channels:
            out.append(f"{other.n_channels} channels instead of {self.n_channels}")
        elif other.labels != self.labels:
            changed = [i for i, (a, b) in enumerate(zip(self.labels, other.labels)) if a != b]
            shown = ", ".join(
                f"channel {i + 1} {other.labels[i]!r} instead of {self.labels[i]!r}" for i in changed[:3]
            )
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            out.append(f"channel labels differ ({shown}{more})")
        if not math.isclose(other.sfreq, self.sfreq, rel_tol=1e-9, abs_tol=1e-9):
            out.append(f"rate {other.sfreq:g} Hz instead of {self.sfreq:g} Hz")
        if other.channel_format != self.channel_format:
            out.append(f"format {other.channel_format} instead of {self.channel_format}")
        if other.n_channels == self.n_channels and other.units != self.units:
            changed = sorted({(a, b) for a, b in zip(self.units, other.units) if a != b})
            shown = ", ".join(f"{b or 'none'!r} instead of {a or 'none'!r}" for a, b in changed[:3])
            out.append(f"units differ ({shown})")
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["units"] = list(self.units)
        return d


@dataclass
class Reconnection:
    """An inlet on the pinned stream, found again (not yet opened), with its first clock offset."""

    inlet: pylsl.StreamInlet
    info: pylsl.StreamInfo
    correction: float


class StreamFinder:
    """Search, in a thread of its own, for the pinned stream under its source_id.

    Parameters
    ----------
    identity : StreamIdentity
        The stream to find again.
    current_uid : str
        The uid of the inlet's stream when the search starts: while that stream still answers
        (it only stalled), nothing is handed over.
    lost : bool
        True when the current inlet is gone for good (liblsl reported it lost): then a stream
        with the same identity is taken even if the old uid still answers somewhere.
    open_inlet : callable
        ``open_inlet(info) -> (inlet, full_info)``: how the source opens an inlet (its buffer
        sizes), without recovery.

    Attributes
    ----------
    result : Reconnection or None
        Set once the stream is found; the caller adopts it.
    notices : deque of str
        Sentences for the operator (a stream that differs, several identical streams), each
        said once.
    refused : dict
        uid -> {"stream": label, "differs": [...]} of the streams that were not read.
    """

    def __init__(self, identity: StreamIdentity, current_uid: str, *, lost: bool, open_inlet) -> None:
        self.identity = identity
        self.current_uid = current_uid
        self.lost = lost
        self._open_inlet = open_inlet
        self.result: Reconnection | None = None
        self.notices: deque[str] = deque()
        self.refused: dict[str, dict] = {}
        self._checked: set[str] = set()
        self._told_several = False
        self._adopted = False
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="closedloop-stream-finder", daemon=True)
        self._thread.start()

    def mark_lost(self) -> None:
        """The current inlet was reported lost while the search ran."""
        self.lost = True

    def stop(self, join_s: float = SEARCH_ROUND_S + HEADER_TIMEOUT_S + 1.0) -> None:
        """End the search and wait up to ``join_s`` for its thread; an inlet found but not taken
        is closed."""
        self._stop.set()
        self._thread.join(timeout=join_s)
        self._discard()

    def stop_later(self) -> None:
        """End the search without waiting (the thread closes what it may still find)."""
        self._stop.set()
        if self.done.is_set():
            self._discard()

    def _discard(self) -> None:
        if self.result is not None and not self._adopted:
            _close(self.result.inlet)
            self.result = None

    def take(self) -> Reconnection | None:
        """The found stream, handed over once (the finder no longer closes it)."""
        result = self.result
        if result is not None:
            self._adopted = True
        return result

    def _run(self) -> None:
        from closedloop import realtime

        realtime.normal()  # a search must not compete with a real-time loop
        predicate = f"source_id={xpath_literal(self.identity.source_id)}"
        try:
            while not self._stop.is_set():
                try:
                    found = self._round(predicate)
                except Exception as exc:  # a failed round is retried, never silently fatal
                    logger.info("a search round for %r failed: %s", self.identity.source_id, exc)
                    self._stop.wait(SEARCH_ROUND_S)
                    continue
                if found is not None:
                    if self._stop.is_set():
                        _close(found.inlet)
                    else:
                        self.result = found
                    return
        finally:
            self.done.set()

    def _round(self, predicate: str) -> Reconnection | None:
        """One resolve round: the pinned stream found and connected, or None."""
        infos = resolve_all(predicate, SEARCH_ROUND_S)
        if self._stop.is_set():
            return None
        uids = {i.uid() for i in infos}
        if not self.lost and self.current_uid in uids:
            return None  # the stream we have is still there: it only stalled
        same = []
        for info in infos:
            if info.uid() == self.current_uid or why_not_eeg(info) is not None:
                continue  # the old one (lost), or a marker stream under the same id
            if info.uid() in self._checked:
                if info.uid() not in self.refused:
                    same.append(info)
                continue
            if self._check(info):
                same.append(info)
        if len(same) == 1 and not self._stop.is_set():
            return self._connect(same[0])
        if len(same) > 1 and not self._told_several:
            self._told_several = True
            self._say(
                f"{len(same)} streams with the pinned identity answer under source_id "
                f"{self.identity.source_id!r}; none is read until one remains: "
                + "; ".join(stream_label(i) for i in same)
            )
        return None

    def _check(self, info: pylsl.StreamInfo) -> bool:
        """Fetch the full header of a new stream under the source_id; True if it is the pinned one."""
        try:
            inlet, full = self._open_inlet(info, HEADER_TIMEOUT_S)
        except Exception as exc:  # it went away again, or never answered
            logger.info("could not read the header of %s: %s", stream_label(info), exc)
            return False
        _close(inlet)
        self._checked.add(info.uid())
        diffs = self.identity.differences(StreamIdentity.from_info(full))
        if diffs:
            self.refused[info.uid()] = {"stream": stream_label(info), "differs": diffs}
            self._say(
                f"a stream appeared under source_id {self.identity.source_id!r} that is not the "
                f"amplifier this run connected to: {'; '.join(diffs)}. It is not read; triggering "
                "stays held until the original stream returns"
            )
            return False
        return True

    def _connect(self, info: pylsl.StreamInfo) -> Reconnection | None:
        try:
            inlet, full = self._open_inlet(info, HEADER_TIMEOUT_S)
            diffs = self.identity.differences(StreamIdentity.from_info(full))
            if diffs:  # it changed between the check and now: treat as new
                _close(inlet)
                self._checked.discard(info.uid())
                return None
            # the stream itself is opened by the source, on the loop's thread, so that liblsl's
            # receiving thread inherits the loop's scheduling (--realtime)
            try:
                correction = float(inlet.time_correction(HEADER_TIMEOUT_S))
            except Exception:
                correction = 0.0
        except Exception as exc:
            logger.info("could not reconnect to %s: %s", stream_label(info), exc)
            return None
        return Reconnection(inlet=inlet, info=info, correction=correction)

    def _say(self, text: str) -> None:
        logger.info(text)
        self.notices.append(text)


def _close(inlet) -> None:
    try:
        inlet.close_stream()
    except Exception:
        pass
