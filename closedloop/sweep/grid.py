"""The grid of a sweep: ``--set KEY=V1,V2`` values, and every combination as a checked protocol."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from closedloop.errors import ClosedLoopError, ProtocolError, UsageError
from closedloop.sweep.recordings import SweepRecording, stream_for

#: Bump when a cell's row would change for the same recording and settings (scoring, columns'
#: meaning), so that resumed sweeps redo their cells instead of mixing old and new rows.
CELL_FORMAT = 1
#: Options of the replay (not protocol keys) that a grid may sweep too.
REPLAY_KEYS = ("chunk_size", "seed")


@dataclass(frozen=True)
class Setting:
    """One combination of the swept values, resolved.

    ``values`` are the swept keys with their values as the protocol holds them (validated,
    normalised: ``-180`` is stored as ``180.0``, ``"WIENER"`` as ``"wiener"``).
    """

    values: tuple[tuple[str, Any], ...]
    protocol: Any  # closedloop.protocol.Protocol
    chunk_size: int | None
    seed: int

    @functools.cached_property
    def digest(self) -> str:
        """12 hex digits of the resolved protocol (as TOML), chunk size and seed."""
        from closedloop.protocol import protocol_to_toml

        text = json.dumps(
            [CELL_FORMAT, protocol_to_toml(self.protocol), self.chunk_size, self.seed]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return (
            ", ".join(f"{k}={format_value(v)}" for k, v in self.values) or "(the protocol as given)"
        )

    @property
    def short_label(self) -> str:
        """The values alone, for figures whose axis names the keys."""
        return " / ".join(format_value(v) for _, v in self.values) or "(as given)"


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` at the commas outside brackets, braces and quotes."""
    items, current, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch in "[{":
            depth += 1
            current.append(ch)
        elif ch in "]}":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return items


def _field_type(protocol, key: str) -> str:
    """The annotation of a protocol key's field (``"str"``, ``"float"``, ...), or ``""``."""
    parts = key.split(".")
    if len(parts) == 1:
        obj = protocol
    elif len(parts) == 2 and hasattr(protocol, parts[0]):
        obj = getattr(protocol, parts[0])
    else:
        return ""
    for f in dataclasses.fields(obj):
        if f.name == parts[-1]:
            return str(f.type)
    return ""


def parse_value(protocol, key: str, text: str) -> Any:
    """A ``--set`` value as TOML reads it (``180``, ``true``, ``[7, 14]``, ``"x"``); bare words
    are strings, and so is anything given for a key that holds text."""
    import tomllib

    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if _field_type(protocol, key) in ("str", "str | None") and not isinstance(value, str):
        return text
    return value


def parse_set(text: str, protocol) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` -> ``(KEY, [values])``; values converted by :func:`parse_value`.

    Raises
    ------
    UsageError
        For a missing ``=``, key or value.
    """
    key, sep, rest = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(
            f"--set {text!r} is not KEY=V1,V2,...; e.g. --set estimator.method=wiener,ar."
        )
    raw = split_values(rest)
    if any(not v for v in raw):
        raise UsageError(
            f"--set {text!r} has an empty value; give KEY=V1,V2,... with each value once."
        )
    if key in REPLAY_KEYS:
        values: list[Any] = []
        for v in raw:
            try:
                values.append(int(v))
            except ValueError:
                raise UsageError(f"--set {key}: {v!r} is not a whole number.") from None
        return key, values
    return key, [parse_value(protocol, key, v) for v in raw]


def _resolved(protocol, key: str) -> Any:
    """The value ``protocol`` holds under a dotted key (lists for tuples)."""
    parts = key.split(".")
    obj: Any = protocol
    for i, part in enumerate(parts):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part)
    return list(obj) if isinstance(obj, tuple) else obj


def format_value(value: Any) -> str:
    """A setting's value as written in ``results.csv`` (TOML-like for lists and tables)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def build_settings(
    protocol,
    grid: Sequence[tuple[str, Sequence[Any]]],
    *,
    chunk_size: int | None = None,
    seed: int = 0,
) -> list[Setting]:
    """Every combination of ``grid`` applied to ``protocol``, validated, in grid order.

    ``grid`` is ``[(key, [values]), ...]``: dotted protocol keys
    (:func:`closedloop.protocol.with_overrides`) or :data:`REPLAY_KEYS`. The last key varies
    fastest.

    Raises
    ------
    ProtocolError
        A key that is not a protocol key, a value it refuses, a combination that is not a valid
        protocol, or a protocol that is not ``kind = "phase"``.
    UsageError
        A key given twice, a value given twice, or two combinations that are the same protocol.
    """
    from closedloop.protocol import with_overrides

    keys = [key for key, _ in grid]
    for key in set(keys):
        if keys.count(key) > 1:
            raise UsageError(
                f"--set {key} is given more than once; give all its values in one --set."
            )
    for key, values in grid:
        if not values:
            raise UsageError(f"--set {key} has no values.")
        shown = [format_value(v) for v in values]
        for v in set(shown):
            if shown.count(v) > 1:
                raise UsageError(f"--set {key} lists {v} more than once.")
        if key in REPLAY_KEYS:
            low = 1 if key == "chunk_size" else 0
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or v < low:
                    raise UsageError(
                        f"--set {key}: {v!r} is not accepted: expected a whole number >= {low}."
                    )
    if chunk_size is not None and chunk_size < 1:
        raise UsageError(f"--chunk-size must be a whole number of samples >= 1, got {chunk_size}.")
    if seed < 0:
        raise UsageError(f"--seed must be a whole number >= 0, got {seed}.")
    settings: list[Setting] = []
    seen: dict[str, Setting] = {}
    for combo in itertools.product(*(values for _, values in grid)):
        chosen = dict(zip(keys, combo))
        overrides = {k: v for k, v in chosen.items() if k not in REPLAY_KEYS}
        where = ", ".join(f"{k}={format_value(v)}" for k, v in chosen.items())
        try:
            resolved = with_overrides(protocol, overrides) if overrides else protocol
        except ProtocolError as exc:
            raise ProtocolError(f"--set {where}: {exc}") from None
        if resolved.kind != "phase":
            raise ProtocolError(
                f"--set {where}: protocol {resolved.name!r} is kind = {resolved.kind!r}; a sweep scores "
                'phase-locked triggers, so it needs kind = "phase".'
            )
        setting = Setting(
            values=tuple(
                (k, chosen[k] if k in REPLAY_KEYS else _resolved(resolved, k)) for k in keys
            ),
            protocol=resolved,
            chunk_size=chosen.get("chunk_size", chunk_size),
            seed=chosen.get("seed", seed),
        )
        digest = setting.digest
        if digest in seen:
            raise UsageError(
                f"--set: {seen[digest].label} and {setting.label} are the same protocol; give each setting once."
            )
        seen[digest] = setting
        settings.append(setting)
    return settings


def check_settings(
    settings: Sequence[Setting], recordings: Sequence[SweepRecording], stream: str | None = None
) -> None:
    """Build the engine of every setting on the first recording that opens, before any work.

    The engine refuses some protocols only once it knows the input (estimator parameters that do
    not suit the method, a baseline too short for it); those are protocol errors of the setting,
    raised here. Anything about the recording itself is left to its cells.

    Raises
    ------
    ProtocolError
        Naming the setting.
    """
    from closedloop.engine import Engine
    from closedloop.io import open_recording

    for rec in recordings:
        try:
            recording = open_recording(rec.path, stream=stream_for(rec.path, stream))
        except ClosedLoopError:
            continue
        try:
            for setting in settings:
                try:
                    Engine(setting.protocol, recording.ch_names, recording.sfreq, seed=setting.seed)
                except ProtocolError as exc:
                    raise ProtocolError(f"--set {setting.label}: {exc}") from None
                except ClosedLoopError:
                    continue
        finally:
            recording.close()
        return
