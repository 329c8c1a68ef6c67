"""A sweep's plan: its recordings and settings, each cell's identity and the layout of its row."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.sweep.cell import MEASURED_COLUMNS, RESULT_COLUMNS, CellTask, one_line
from closedloop.sweep.grid import REPLAY_KEYS, Setting, build_settings, check_settings, format_value
from closedloop.sweep.recordings import ENTITY_COLUMNS, SweepRecording, find_recordings

_ROUND = {
    "rate_per_min": 3,
    "circ_mean_deg": 4,
    "circ_sd_deg": 4,
    "plv": 5,
    "within45": 5,
    "scored_s": 4,
    "duration_s": 4,
    "wall_s": 3,
    "speed_x": 1,
}


def _cell_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        digits = _ROUND.get(name)
        return f"{value:.{digits}f}" if digits is not None else repr(value)
    return str(value)


@dataclass
class SweepPlan:
    """The recordings and settings of a sweep, and how its rows are laid out.

    Cell ``i`` is recording ``i // len(settings)`` under setting ``i % len(settings)``; its key
    is ``<recording digest>-<setting digest>``.

    Attributes
    ----------
    protocol : Protocol
        The protocol before the grid was applied.
    recordings : list of SweepRecording
    settings : list of Setting
    keys : list of str
        The swept keys, in grid order (replay keys among them have columns of their own).
    stream : str or None
        XDF recordings: the stream to read.
    """

    protocol: Any
    recordings: list[SweepRecording]
    settings: list[Setting]
    keys: list[str]
    stream: str | None = None
    _recording_pos: dict[str, int] = field(init=False, repr=False)
    _setting_pos: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._recording_pos = {r.digest: i for i, r in enumerate(self.recordings)}
        self._setting_pos = {s.digest: i for i, s in enumerate(self.settings)}
        self._recording_digests = [r.digest for r in self.recordings]
        self._setting_digests = [s.digest for s in self.settings]

    @property
    def n_cells(self) -> int:
        return len(self.recordings) * len(self.settings)

    @property
    def columns(self) -> list[str]:
        swept = [k for k in self.keys if k not in REPLAY_KEYS]
        return ["recording", *ENTITY_COLUMNS, *swept, *RESULT_COLUMNS]

    def cell_key(self, index: int) -> str:
        r, s = divmod(index, len(self.settings))
        return f"{self._recording_digests[r]}-{self._setting_digests[s]}"

    def index_of(self, cell_key: str) -> int | None:
        """The cell's position in the sweep, or None when the key is not one of its cells."""
        rec, _, setting = str(cell_key).partition("-")
        r, s = self._recording_pos.get(rec), self._setting_pos.get(setting)
        return None if r is None or s is None else r * len(self.settings) + s

    def task(self, index: int, *, keep_events: bool = False) -> CellTask:
        r, s = divmod(index, len(self.settings))
        rec, setting = self.recordings[r], self.settings[s]
        return CellTask(
            cell=self.cell_key(index),
            path=rec.path,
            size=rec.size,
            mtime_ns=rec.mtime_ns,
            protocol=setting.protocol,
            chunk_size=setting.chunk_size,
            seed=setting.seed,
            stream=self.stream,
            keep_events=keep_events,
        )

    def row(self, index: int, measured: dict) -> list[str]:
        """The CSV row of cell ``index`` from what its worker measured."""
        r, s = divmod(index, len(self.settings))
        rec, setting = self.recordings[r], self.settings[s]
        values = dict(setting.values)
        out = [rec.path, *(dict(rec.entities).get(k, "") for k in ENTITY_COLUMNS)]
        out += [format_value(values[k]) for k in self.keys if k not in REPLAY_KEYS]
        chunk = values.get("chunk_size", setting.chunk_size) or measured.get("chunk_size")
        out += [
            "" if chunk in (None, "") else str(chunk),
            str(values.get("seed", setting.seed)),
        ]
        out += [_cell_text(name, measured.get(name)) for name in MEASURED_COLUMNS]
        out += [one_line(measured.get("error") or ""), self.cell_key(index)]
        return out


def plan_sweep(
    recordings: Iterable[str | os.PathLike],
    protocol,
    grid: Sequence[tuple[str, Sequence[Any]]] = (),
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    stream: str | None = None,
    out: str | os.PathLike | None = None,
    check: bool = True,
) -> SweepPlan:
    """Find the recordings, build and check every setting: a :class:`SweepPlan`.

    Raises
    ------
    ProtocolError, UsageError
        For a bad grid (see :func:`build_settings`, :func:`check_settings`).
    DataError
        When no recording is found.
    """
    settings = build_settings(protocol, grid, chunk_size=chunk_size, seed=seed)
    found = find_recordings(recordings, exclude=[Path(out)] if out is not None else [])
    if check:
        check_settings(settings, found, stream)
    return SweepPlan(protocol, found, settings, [key for key, _ in grid], stream=stream)
