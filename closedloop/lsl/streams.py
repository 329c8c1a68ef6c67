"""The LSL streams visible now (``closedloop streams``)."""

from __future__ import annotations

import math

from closedloop.errors import UsageError

__all__ = ["format_table", "list_streams"]


_COLUMNS = ("name", "type", "channels", "rate", "format", "source_id", "host")


def list_streams(timeout: float = 1.0) -> list[dict[str, object]]:
    """Resolve every LSL stream that answers within ``timeout`` seconds.

    Parameters
    ----------
    timeout : float
        Seconds to wait (above 0).

    Returns
    -------
    list of dict
        One dict per stream with ``name``, ``type``, ``channels``, ``rate`` (Hz, 0 for an
        irregular stream), ``format``, ``source_id`` and ``host``, sorted by name, then
        source_id.
    """
    timeout = float(timeout)
    if not (math.isfinite(timeout) and 0.0 < timeout <= 3600.0):
        raise UsageError(
            f"--timeout {timeout!r} is not usable; give seconds above 0 (at most 3600)."
        )
    import pylsl

    from closedloop.lsl.formats import format_name

    # liblsl (1.18) often overruns a wait that ends with its first query wave (0.5 s) by 5 s
    # when nothing answers; a wait a few tens of ms longer does not.
    wait_s = 0.53 if 0.49 <= timeout < 0.53 else timeout
    found = []
    for info in pylsl.resolve_streams(wait_time=wait_s):
        found.append(
            {
                "name": info.name(),
                "type": info.type(),
                "channels": info.channel_count(),
                "rate": info.nominal_srate(),
                "format": format_name(info),
                "source_id": info.source_id(),
                "host": info.hostname(),
            }
        )
    found.sort(key=lambda s: (str(s["name"]), str(s["source_id"])))
    return found


def _format_rate(rate: float) -> str:
    if rate == 0:
        return "irregular"
    return f"{rate:g} Hz"


def format_table(streams: list[dict[str, object]]) -> str:
    """Render streams as an aligned plain-text table with a header row."""
    rows = [[c.upper() if c != "source_id" else "SOURCE_ID" for c in _COLUMNS]]
    for s in streams:
        rows.append(
            [
                str(s["name"]),
                str(s["type"]),
                str(s["channels"]),
                _format_rate(float(s["rate"])),
                str(s["format"]),
                str(s["source_id"]),
                str(s["host"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
