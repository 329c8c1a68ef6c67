"""Choosing the one input stream (../shared/CONTRACTS.md, "Choosing the input stream").

Selectors combine: a stream must match every one given (``source_id`` and ``name`` exactly,
``type`` and ``host`` case-insensitively); with none given the type is ``EEG``. Only regularly
sampled numeric streams are candidates for the EEG input, so that a marker or annotations stream
published under the amplifier's own source_id (mne-lsl's ``PlayerLSL`` does that) is never taken.
More than one candidate is refused (exit 4) with each of them listed, so the user can pass a more
specific selector; none within the timeout is exit 4 with what is visible.

Resolving: liblsl answers a query as streams reply, and on loopback one stream may reply at once
and the others only to the unicast wave half a second later. Every resolve therefore waits a full
round (``ROUND_S``) and takes all that replied; a stream that only turned up in a later round
(started after us) is confirmed by one more round, so two streams started together are both seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pylsl

from closedloop.errors import DataError, StreamError
from closedloop.lsl.formats import format_name

logger = logging.getLogger("closedloop.lsl.selection")

#: Length of one resolve round, seconds: long enough for every stream on the network to reply
#: (loopback replies come at once or with liblsl's unicast wave after 0.5 s).
ROUND_S = 0.6
#: Most streams one resolve returns.
MAX_STREAMS = 1024

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()



def xpath_literal(value: str) -> str:
    """``value`` as an XPath 1.0 string literal (which has no escapes: quotes via concat)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    parts = value.split("'")
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in parts) + ")"


def _lower(expr: str) -> str:
    return f"translate({expr},'{_UPPER}','{_LOWER}')"


@dataclass(frozen=True)
class StreamSelector:
    """What the input stream must match; every field given must match.

    ``source_id`` and ``name`` match exactly, ``stype`` and ``host`` case-insensitively. With no
    field given, :meth:`effective` selects type ``EEG``.
    """

    source_id: str | None = None
    name: str | None = None
    stype: str | None = None
    host: str | None = None

    def effective(self) -> StreamSelector:
        """This selector, or type ``EEG`` when nothing is given."""
        if self.source_id or self.name or self.stype or self.host:
            return self
        return StreamSelector(stype="EEG")

    def predicate(self) -> str:
        """The XPath query liblsl resolves (``type``/``hostname`` compared in lower case)."""
        sel = self.effective()
        terms = []
        if sel.source_id:
            terms.append(f"source_id={xpath_literal(sel.source_id)}")
        if sel.name:
            terms.append(f"name={xpath_literal(sel.name)}")
        if sel.stype:
            terms.append(f"{_lower('type')}={xpath_literal(sel.stype.lower())}")
        if sel.host:
            terms.append(f"{_lower('hostname')}={xpath_literal(sel.host.lower())}")
        return " and ".join(terms)

    def matches(self, info: pylsl.StreamInfo) -> bool:
        """The same test in Python (for types and hosts beyond ASCII, and for listings)."""
        sel = self.effective()
        return (
            (not sel.source_id or info.source_id() == sel.source_id)
            and (not sel.name or info.name() == sel.name)
            and (not sel.stype or info.type().casefold() == sel.stype.casefold())
            and (not sel.host or info.hostname().casefold() == sel.host.casefold())
        )

    def describe(self) -> str:
        """``source_id 'X' and type 'EEG'``: the selectors in words."""
        sel = self.effective()
        parts = []
        for label, value in (
            ("source_id", sel.source_id),
            ("name", sel.name),
            ("type", sel.stype),
            ("host", sel.host),
        ):
            if value:
                parts.append(f"{label} {value!r}")
        return " and ".join(parts)


def stream_label(info: pylsl.StreamInfo) -> str:
    """A stream named completely: name, type, source_id, host, channels, rate, format."""
    rate = info.nominal_srate()
    return (
        f"{info.name()!r} (type {info.type()!r}, source_id {info.source_id()!r}, host "
        f"{info.hostname()!r}, {info.channel_count()} ch, "
        f"{f'{rate:g} Hz' if rate > 0 else 'irregular rate'}, {format_name(info)})"
    )


def describe_streams(infos: list) -> str:
    if not infos:
        return "no LSL streams are visible"
    return "visible streams: " + "; ".join(stream_label(i) for i in infos)


def why_not_eeg(info: pylsl.StreamInfo) -> str | None:
    """Why a stream cannot be the EEG input (None when it can): strings or an irregular rate."""
    if info.channel_format() == pylsl.cf_string:
        return (
            f"stream {info.name()!r} carries strings; EEG must be numeric "
            "(float32, double64 or an integer format)"
        )
    if not info.nominal_srate() > 0:
        return (
            f"stream {info.name()!r} has an irregular rate (nominal_srate 0); closedloop needs a "
            "regularly sampled EEG stream"
        )
    return None


def _unique(infos) -> list:
    seen, out = set(), []
    for info in infos:
        if info.uid() not in seen:
            seen.add(info.uid())
            out.append(info)
    return out


def resolve_all(predicate: str, wait_s: float) -> list:
    """Every stream matching ``predicate`` that replies within ``wait_s`` (one full round)."""
    return _unique(pylsl.resolve_bypred(predicate, MAX_STREAMS, max(0.05, wait_s)))


def find_streams(selector: StreamSelector, timeout: float, *, round_s: float = ROUND_S) -> list:
    """All streams matching ``selector`` once at least one has replied, or [] after ``timeout``."""
    predicate = selector.predicate()
    deadline = time.monotonic() + max(0.0, timeout)
    rounds = 0
    while True:
        remaining = deadline - time.monotonic()
        wait = min(round_s, remaining) if rounds else min(round_s, max(remaining, 0.05))
        found = [i for i in resolve_all(predicate, wait) if selector.matches(i)]
        rounds += 1
        if found:
            if rounds > 1:
                # it turned up during this round: give its companions a full round to reply
                more = [i for i in resolve_all(predicate, round_s) if selector.matches(i)]
                found = _unique(found + more)
            return found
        if time.monotonic() >= deadline:
            return []


def first_candidate(selector: StreamSelector, timeout: float) -> pylsl.StreamInfo | None:
    """The first EEG candidate matching ``selector`` to answer (None after ``timeout``), at once:
    no full round, so it need not be the only one (:func:`choose_stream` says that)."""
    predicate = f"{selector.predicate()} and number(nominal_srate)>0 and channel_format!='string'"
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        remaining = deadline - time.monotonic()
        for info in pylsl.resolve_bypred(predicate, 1, max(0.05, remaining)):
            if selector.matches(info) and why_not_eeg(info) is None:
                return info
        if time.monotonic() >= deadline:
            return None


def choose_stream(selector: StreamSelector, timeout: float = 5.0) -> pylsl.StreamInfo:
    """The one EEG candidate matching ``selector``.

    Raises
    ------
    StreamError
        Nothing matched within ``timeout`` (the message lists what is visible), or more than one
        candidate matched (each is listed): exit 4.
    DataError
        Streams matched but none can be EEG (strings, irregular rate): exit 3.
    """
    selector = selector.effective()
    matches = find_streams(selector, timeout)
    if not matches:
        visible = _unique(pylsl.resolve_streams(ROUND_S))
        raise StreamError(
            f"no LSL stream with {selector.describe()} appeared within {timeout:g} s; "
            f"{describe_streams(visible)}."
        )
    candidates = [i for i in matches if why_not_eeg(i) is None]
    if not candidates:
        reasons = "; ".join(why_not_eeg(i) for i in matches)
        raise DataError(f"{reasons}.")
    if len(candidates) > 1:
        candidates.sort(key=lambda i: (i.name(), i.source_id(), i.hostname()))
        listing = "; ".join(stream_label(i) for i in candidates)
        raise StreamError(
            f"{len(candidates)} EEG streams match {selector.describe()}: {listing}. Choose one with "
            "--source-id (and --host if two machines publish the same source_id)."
        )
    chosen = candidates[0]
    skipped = [i for i in matches if i is not chosen]
    if skipped:
        logger.info(
            "streams matching %s that are not EEG candidates: %s",
            selector.describe(),
            "; ".join(stream_label(i) for i in skipped),
        )
    return chosen
