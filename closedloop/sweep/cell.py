"""One cell of a sweep: a recording replayed under one setting, and scored.

This is all that runs on a worker: it receives a :class:`CellTask` (paths and settings only) and
sends back one small row.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.errors import ClosedLoopError, DataError
from closedloop.sweep.recordings import file_identity, stream_for

#: Columns after the recording, its entities and the swept protocol keys.
RESULT_COLUMNS = (
    "chunk_size",
    "seed",
    "n_triggers",
    "rate_per_min",
    "circ_mean_deg",
    "circ_sd_deg",
    "plv",
    "within45",
    "n_scored",
    "scored_s",
    "band_hz",
    "estimator",
    "sfreq",
    "n_channels",
    "duration_s",
    "wall_s",
    "speed_x",
    "notes",
    "error",
    "cell",
)
#: Columns a worker computes; a resumed sweep copies these from the earlier row.
MEASURED_COLUMNS = RESULT_COLUMNS[2:-2]
#: A worker's view of a recording's modification time may differ this much from the client's.
MTIME_TOLERANCE_NS = 1_000_000_000


@dataclass(frozen=True)
class CellTask:
    """What a worker needs for one cell: paths and settings only."""

    cell: str
    path: str
    size: int
    mtime_ns: int
    protocol: Any
    chunk_size: int | None
    seed: int
    stream: str | None = None
    keep_events: bool = False


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_cell(task: CellTask) -> dict:
    """Replay and score one cell; never raises for a failure of the cell (it goes in ``error``).

    BLAS runs on one thread for the cell, whatever the worker's environment: a multi-threaded
    BLAS sums in an order that depends on its thread count, which shows in the last digits of
    the estimator's fit, so a cell would otherwise differ between machines and cluster set-ups.
    (The cells themselves are what runs in parallel.)

    Returns
    -------
    dict
        :data:`MEASURED_COLUMNS` (values as floats, ints or strings) plus ``"error"``, and
        ``"events"`` (the delivered triggers as ``closedloop replay`` writes them) when
        ``task.keep_events``.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run_cell(task)


def _run_cell(task: CellTask) -> dict:
    from closedloop.groundtruth import circular_stats, derived_from_recording, scored_errors, scored_span_s
    from closedloop.io import open_recording
    from closedloop.offline import default_chunk_size, replay

    row: dict[str, Any] = {name: None for name in MEASURED_COLUMNS}
    started = time.perf_counter()
    try:
        path = Path(task.path)
        size, mtime_ns = file_identity(path)
        if task.size >= 0 and size < 0:
            raise DataError(
                f"recording {task.path!r} cannot be found here (host {platform.node()})."
            )
        # modification times may be kept more or less finely by another machine's view of a
        # shared file system: the size must match, the time within MTIME_TOLERANCE_NS
        if task.size >= 0 and (
            size != task.size or abs(mtime_ns - task.mtime_ns) > MTIME_TOLERANCE_NS
        ):
            raise DataError(
                f"recording {task.path!r} is not the file the sweep planned: {size} bytes modified "
                f"{mtime_ns} ns here, {task.size} bytes modified {task.mtime_ns} ns when the sweep "
                "started (changed meanwhile, or another file on this worker)."
            )
        with open_recording(path, stream=stream_for(task.path, task.stream)) as recording:
            sfreq = recording.sfreq
            row.update(
                sfreq=sfreq, n_channels=recording.n_channels, duration_s=recording.duration_s
            )
            chunk_size = task.chunk_size or default_chunk_size(sfreq)
            row["chunk_size"] = chunk_size
            protocol = task.protocol
            # exactly `closedloop replay`: the same engine, chunking and seed, so the same triggers
            result = replay(recording, protocol, chunk_size=chunk_size, seed=task.seed, keep_state=False)
            derived = derived_from_recording(recording, protocol)
        summary = result.summary
        band = (float(summary["band_hz"][0]), float(summary["band_hz"][1]))
        baseline_s = float(protocol.trigger.baseline_s)
        start_s, end_s = scored_span_s(derived.shape[0], sfreq, baseline_s)
        triggers = result.triggers
        after_s = result.n_samples / sfreq - baseline_s
        row.update(
            n_triggers=len(triggers),
            rate_per_min=60.0 * len(triggers) / after_s if after_s > 0 else math.nan,
            band_hz=f"{band[0]:g}-{band[1]:g}",
            estimator=summary.get("estimator") or "",
            notes="; ".join(one_line(n) for n in summary.get("notes", [])),
            scored_s=max(0.0, end_s - start_s),
        )
        if task.keep_events:
            row["events"] = triggers
        if end_s - start_s <= 1.0:
            raise DataError(
                f"the recording lasts {recording.duration_s:.1f} s; after the baseline "
                f"({baseline_s:g} s) and the truth's last second too little is left to score."
            )
        errors = scored_errors(
            derived,
            sfreq,
            band,
            np.array([t.time_s for t in triggers], dtype=float),
            np.array([t.target_phase_deg for t in triggers], dtype=float),
            eval_after_s=baseline_s,
        )
        stats = circular_stats(errors)
        row.update(
            n_scored=stats.n,
            circ_mean_deg=stats.mean_deg,
            circ_sd_deg=stats.sd_deg,
            plv=stats.plv,
            within45=stats.within_45,
        )
        row["error"] = ""
    except ClosedLoopError as exc:
        row["error"] = one_line(exc)
    except MemoryError:
        row["error"] = "out of memory while replaying this recording"
    except Exception as exc:  # noqa: BLE001 -- a failed cell is a row, never the end of the sweep
        row["error"] = one_line(f"internal error: {type(exc).__name__}: {exc}")
    wall = time.perf_counter() - started
    row["wall_s"] = wall
    duration = row.get("duration_s")
    row["speed_x"] = duration / wall if duration and wall > 0 and not row["error"] else None
    return row
