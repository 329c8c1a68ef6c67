"""``results.csv``: the plan's row layout, resuming from an earlier run, putting rows in order."""

from __future__ import annotations

import contextlib
import csv
import heapq
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from closedloop.errors import UsageError
from closedloop.sweep.plan import SweepPlan

#: Rows sorted in memory at once when ``results.csv`` is put in order; more go through files.
SORT_CHUNK_ROWS = 10_000


def _rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of an earlier ``results.csv`` as dicts; a last line cut short by a kill is left out."""
    with open(path, "rb") as fid:
        fid.seek(0, os.SEEK_END)
        size = fid.tell()
        if size:
            fid.seek(size - 1)
            complete = fid.read(1) == b"\n"
        else:
            complete = True
    with open(path, newline="", encoding="utf-8") as fid:
        reader = csv.reader(fid)
        header = next(reader, None)
        if header is None:
            return
        if "cell" not in header or "error" not in header:
            raise UsageError(
                f"{str(path)!r} is not the results of a closedloop sweep (no cell and error columns); "
                "give another --out, or move that file away."
            )
        previous = None
        for values in reader:
            if previous is not None:
                yield previous
            previous = dict(zip(header, values)) if len(values) == len(header) else None
        if previous is not None and complete:
            yield previous


def resume(results: Path, plan: SweepPlan) -> tuple[bytearray, int, int]:
    """Keep the finished cells of an earlier run of this sweep; returns ``(done, kept, moved)``.

    ``results.csv`` is rewritten with the kept rows (their identity and setting columns as this
    sweep lays them out, their measurements as measured); rows of cells that are not in this
    sweep are moved to ``superseded/results-<time>.csv``; failed cells are left to run again.
    """
    done = bytearray(plan.n_cells)
    header = plan.columns
    kept = moved = 0
    if not results.exists():
        with open(results, "w", newline="", encoding="utf-8") as fid:
            csv.writer(fid, lineterminator="\n").writerow(header)
        return done, kept, moved
    tmp = results.with_name(results.name + ".tmp")
    superseded_writer = None
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for old in _rows(results):
            index = plan.index_of(old.get("cell", ""))
            if index is not None and not old.get("error") and not done[index]:
                done[index] = 1
                kept += 1
                writer.writerow(plan.row(index, old))
                continue
            if index is not None:
                continue  # failed before (runs again), or a duplicate
            if superseded_writer is None:
                folder = results.parent / "superseded"
                folder.mkdir(exist_ok=True)
                name = folder / f"results-{time.strftime('%Y%m%d-%H%M%S')}.csv"
                superseded = files.enter_context(open(name, "a", newline="", encoding="utf-8"))
                superseded_writer = csv.DictWriter(
                    superseded, fieldnames=list(old), lineterminator="\n", extrasaction="ignore"
                )
                superseded_writer.writeheader()
            superseded_writer.writerow(old)
            moved += 1
    os.replace(tmp, results)
    return done, kept, moved


def sort_results(results: Path, plan: SweepPlan) -> int:
    """Rewrite ``results.csv`` in cell order (each cell once); returns the number of rows.

    Sorted in runs of :data:`SORT_CHUNK_ROWS` rows merged from temporary files, so the memory
    needed does not grow with the sweep.
    """
    header = plan.columns
    runs: list[Path] = []
    chunk: list[tuple[int, list[str]]] = []
    folder = results.parent

    def spill() -> None:
        chunk.sort(key=lambda item: item[0])
        fd, name = tempfile.mkstemp(prefix=".sort-", suffix=".csv", dir=folder)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fid:
            w = csv.writer(fid, lineterminator="\n")
            for index, values in chunk:
                w.writerow([index, *values])
        runs.append(Path(name))
        chunk.clear()

    def read_run(path: Path) -> Iterator[tuple[int, list[str]]]:
        with open(path, newline="", encoding="utf-8") as fid:
            for values in csv.reader(fid):
                yield int(values[0]), values[1:]

    try:
        with open(results, newline="", encoding="utf-8") as fid:
            reader = csv.reader(fid)
            next(reader, None)
            position = header.index("cell")
            for values in reader:
                if len(values) != len(header):
                    continue
                index = plan.index_of(values[position])
                if index is not None:
                    chunk.append((index, values))
                    if len(chunk) >= SORT_CHUNK_ROWS:
                        spill()
        if runs:
            spill()
            merged: Iterable[tuple[int, list[str]]] = heapq.merge(
                *(read_run(p) for p in runs), key=lambda t: t[0]
            )
        else:
            chunk.sort(key=lambda item: item[0])
            merged = list(chunk)
        tmp = results.with_name(results.name + ".tmp")
        n = 0
        last = -1
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(header)
            for index, values in merged:
                if index != last:
                    w.writerow(values)
                    n += 1
                    last = index
        os.replace(tmp, results)
        return n
    finally:
        for p in runs:
            p.unlink(missing_ok=True)
