"""Sweeps: many recordings replayed under a grid of protocol settings, every cell scored.

A *cell* is one recording replayed under one setting (one combination of the swept values) by
the engine and defaults of ``closedloop replay``, then scored as ``closedloop bench accuracy``
scores: each delivered trigger's true phase at its exact delivery time (zero-phase FIR + Hilbert
of the whole recording, on the protocol's derived signal, in the band the engine used) minus its
target, over the triggers delivered after the baseline (:func:`closedloop.groundtruth.scored_errors`).

How a sweep runs (../shared/CONTRACTS.md, "Sweeps"):

- Recordings are files, folders (searched recursively for the formats MNE reads and XDF) or BIDS
  roots (found with mne-bids; subject, session, task and run become columns).
- Only paths and settings travel to the workers (a :class:`CellTask`: the recording's absolute
  path, its size and modification time, the resolved protocol, chunk size and seed); each worker
  reads its recording from that path and sends back one small row. On a cluster of several
  machines the recordings must be on a shared path that every worker sees the same way.
- Local runs use a pool of worker processes (:class:`concurrent.futures.ProcessPoolExecutor`,
  started with ``spawn``); ``scheduler=ADDRESS`` sends the same cells to a Dask distributed
  cluster. Either way at most a few cells per worker are in flight, and every row is appended to
  ``results.csv`` (and flushed) as it arrives: memory does not grow with the number of cells
  beyond one byte per cell.
- A cell's identity is ``<recording>-<setting>``: 12 hex digits of a hash of the recording's
  absolute path, size and modification time, and 12 of the resolved protocol (as TOML), chunk
  size and seed. A sweep started again in the same folder keeps the rows of finished cells and
  runs the rest (cells that failed are tried again); rows of other cells are moved aside to
  ``superseded/``. When every cell is done, ``results.csv`` is rewritten in a fixed order
  (recordings in the order found, then settings in the order of the grid), so the same sweep
  gives the same rows however it ran; only ``wall_s`` and ``speed_x`` differ from run to run.
- A cell that fails (unreadable file, missing channel, a worker that died while it ran alone)
  is a row with its ``error``; the sweep goes on.

Modules: ``recordings`` (finding them), ``grid`` (``--set`` values, the checked settings),
``plan`` (recordings x settings, cell keys, the row layout), ``cell`` (what a worker runs),
``backends`` (local processes, Dask), ``results`` (resuming, putting rows in order), ``runner``
(:func:`run_sweep`), ``summary`` (``summary.html``). The command line is
``closedloop/commands/sweep.py``.
"""

from __future__ import annotations

from closedloop.sweep.cell import MEASURED_COLUMNS, RESULT_COLUMNS, CellTask, run_cell
from closedloop.sweep.grid import (
    REPLAY_KEYS,
    Setting,
    build_settings,
    check_settings,
    format_value,
    parse_set,
    parse_value,
    split_values,
)
from closedloop.sweep.plan import SweepPlan, plan_sweep
from closedloop.sweep.recordings import ENTITY_COLUMNS, SweepRecording, find_recordings
from closedloop.sweep.runner import SweepOutcome, run_sweep

__all__ = [
    "ENTITY_COLUMNS",
    "MEASURED_COLUMNS",
    "REPLAY_KEYS",
    "RESULT_COLUMNS",
    "CellTask",
    "Setting",
    "SweepOutcome",
    "SweepPlan",
    "SweepRecording",
    "build_settings",
    "check_settings",
    "find_recordings",
    "format_value",
    "parse_set",
    "parse_value",
    "plan_sweep",
    "run_cell",
    "run_sweep",
    "split_values",
]
