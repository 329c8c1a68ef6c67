"""Running a sweep: cells to the workers, rows to ``results.csv`` as they come back."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.errors import UsageError
from closedloop.offline import write_events_tsv
from closedloop.sweep.backends import (
    WORKER_ENVIRONMENT,
    DaskBackend,
    LocalBackend,
    environment,
    local_workers,
)
from closedloop.sweep.grid import CELL_FORMAT
from closedloop.sweep.plan import SweepPlan
from closedloop.sweep.results import resume, sort_results

logger = logging.getLogger("closedloop.sweep")

#: A cell in flight when its worker process died this many times is recorded as failed.
MAX_WORKER_DEATHS = 2
#: Failed cells named in :attr:`SweepOutcome.failures` (all are in results.csv).
MAX_FAILURES_KEPT = 20


@dataclass
class SweepOutcome:
    """What a sweep did."""

    out: Path
    results: Path
    summary: Path | None
    n_cells: int
    n_run: int
    n_reused: int
    n_failed: int
    n_moved: int
    backend: str
    wall_s: float
    #: times a worker process died and the cells it held ran again (local workers)
    n_worker_deaths: int = 0
    #: (recording, setting, error) of the first failed cells
    failures: list[tuple[str, str, str]] = field(default_factory=list)


def run_sweep(
    plan: SweepPlan,
    out: str | os.PathLike,
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    scheduler_timeout_s: float = 30.0,
    keep_events: bool = False,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int, int, str], None] | None = None,
    summary: bool = True,
) -> SweepOutcome:
    """Run every cell of ``plan`` not finished in ``out`` yet; write ``out/results.csv``.

    Parameters
    ----------
    plan : SweepPlan
        Recordings x settings.
    out : path
        The sweep's folder: ``results.csv``, ``summary.html``, ``sweep.json`` and, with
        ``keep_events``, ``events/<cell>.tsv`` (each cell's triggers as ``closedloop replay``
        writes them).
    jobs : int, optional
        Local worker processes (default: every core this process may use).
    scheduler : str, optional
        Address of a Dask distributed scheduler; the cells run on its workers instead.
    scheduler_timeout_s : float
        How long to try to reach the scheduler, and to wait for its first worker.
    progress : callable, optional
        Called with 1 after each cell.
    on_start : callable, optional
        Called once with ``(cells to run now, cells kept, where they run)`` before the first cell.

    Raises
    ------
    UsageError
        For bad ``jobs``, both ``jobs`` and ``scheduler``, or an ``out`` that is not a folder.
    ClosedLoopError
        When the Dask scheduler cannot be reached or is lost (finished rows are kept).
    """
    if jobs is not None and scheduler is not None:
        raise UsageError(
            "--jobs and --scheduler exclude each other: local workers, or a Dask cluster's."
        )
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"--jobs must be a whole number of worker processes >= 1, got {jobs!r}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder for the sweep's results.")
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    started = time.perf_counter()
    done, kept, moved = resume(results, plan)
    pending = plan.n_cells - kept
    if keep_events:
        (out / "events").mkdir(exist_ok=True)

    n_run = n_failed = n_deaths = 0
    failures: list[tuple[str, str, str]] = []
    backend: LocalBackend | DaskBackend | None = None
    aborted = True
    try:
        with (
            environment(WORKER_ENVIRONMENT),
            open(results, "a", newline="", encoding="utf-8") as fid,
        ):
            if pending:
                backend = (
                    DaskBackend(scheduler, timeout_s=scheduler_timeout_s)
                    if scheduler is not None
                    else LocalBackend(min(jobs or local_workers(), pending))
                )
            where = backend.describe() if backend is not None else "nothing to run"
            if on_start is not None:
                on_start(pending, kept, where)
            writer = csv.writer(fid, lineterminator="\n")
            todo = (i for i in range(plan.n_cells) if not done[i])
            # cells that were in flight when a worker process died: each runs again alone, so
            # that a cell which kills its worker is told apart from those beside it
            suspects: deque[int] = deque()
            deaths: dict[int, int] = {}
            in_flight: dict[Any, int] = {}
            while backend is not None:
                if suspects:
                    if not in_flight:
                        index = suspects.popleft()
                        in_flight[backend.submit(plan.task(index, keep_events=keep_events))] = index
                else:
                    while len(in_flight) < backend.capacity():
                        index = next(todo, None)
                        if index is None:
                            break
                        in_flight[backend.submit(plan.task(index, keep_events=keep_events))] = index
                if not in_flight:
                    break
                broken = False
                for future in backend.wait(in_flight):
                    index = in_flight.pop(future)
                    measured = backend.outcome(future)
                    if measured is None:  # its worker process died
                        broken = True
                        deaths[index] = deaths.get(index, 0) + 1
                        if deaths[index] < MAX_WORKER_DEATHS:
                            suspects.append(index)
                            continue
                        measured = {
                            "error": "the worker process died while replaying this cell, alone "
                            "(out of memory, or killed)"
                        }
                    deaths.pop(index, None)
                    events = measured.pop("events", None)
                    if events is not None and not measured.get("error"):
                        # before the row: a kept row always has its events
                        write_events_tsv(out / "events" / f"{plan.cell_key(index)}.tsv", events)
                    row = plan.row(index, measured)
                    writer.writerow(row)
                    fid.flush()
                    n_run += 1
                    if measured.get("error"):
                        n_failed += 1
                        if len(failures) < MAX_FAILURES_KEPT:
                            r, s = divmod(index, len(plan.settings))
                            failures.append(
                                (plan.recordings[r].path, plan.settings[s].label, row[-2])
                            )
                    if progress is not None:
                        progress(1)
                if broken:
                    n_deaths += 1
                    logger.warning("a worker process died; the cells it held run again")
                    # the pool fails every cell it held; they become suspects too
                    for future, index in list(in_flight.items()):
                        in_flight.pop(future)
                        deaths[index] = deaths.get(index, 0) + 1
                        suspects.append(index)
                    backend.restart()
        aborted = False
    finally:
        if backend is not None:
            backend.close(abort=aborted)
    n_rows = sort_results(results, plan)
    wall = time.perf_counter() - started
    outcome = SweepOutcome(
        out=out,
        results=results,
        summary=None,
        n_cells=plan.n_cells,
        n_run=n_run,
        n_reused=kept,
        n_failed=n_failed,
        n_moved=moved,
        backend=where,
        wall_s=wall,
        n_worker_deaths=n_deaths,
        failures=failures,
    )
    if n_rows != plan.n_cells:
        logger.warning("results.csv has %d rows for %d cells", n_rows, plan.n_cells)
    _write_description(out / "sweep.json", plan, outcome)
    if summary:
        from closedloop.sweep.summary import write_summary

        outcome.summary = write_summary(results, out / "summary.html", plan=plan, outcome=outcome)
    return outcome


def _write_description(path: Path, plan: SweepPlan, outcome: SweepOutcome) -> None:
    """``sweep.json``: what was swept, and how the last run went."""
    import closedloop
    from closedloop.protocol import protocol_to_toml

    base = plan.protocol
    data = {
        "closedloop": closedloop.__version__,
        "cell_format": CELL_FORMAT,
        "protocol": {"source": getattr(base, "source", ""), "name": getattr(base, "name", "")},
        "keys": plan.keys,
        "settings": [
            {
                "label": s.label,
                "digest": s.digest,
                "values": {k: v for k, v in s.values},
                "chunk_size": s.chunk_size,
                "seed": s.seed,
            }
            for s in plan.settings
        ],
        "recordings": [
            {"path": r.path, "digest": r.digest, **dict(r.entities)} for r in plan.recordings
        ],
        "cells": outcome.n_cells,
        "last_run": {
            "run": outcome.n_run,
            "reused": outcome.n_reused,
            "failed": outcome.n_failed,
            "moved_aside": outcome.n_moved,
            "where": outcome.backend,
            "wall_s": round(outcome.wall_s, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "base_protocol_toml": protocol_to_toml(base) if base is not None else "",
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
