"""Replay: the live engine run offline on a recording, on the sample clock (:func:`closedloop.replay`).

Everything from the first processing stage on is the engine the live loop uses; only the source
(a recording read in chunks of ``chunk_size`` samples) and the clock (``sample_index / sfreq``)
differ. A trigger the engine plans is delivered at its planned time, exactly as the live loop's
scheduler would deliver it before the next chunk arrives
(:func:`closedloop.engine.replay_delivery_s`); the same input, protocol, chunk size and seed give
byte-identical outputs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from closedloop.errors import DataError, UsageError
from closedloop.records import STATE_FIELDS, Trigger

if TYPE_CHECKING:
    from closedloop.engine import Engine
    from closedloop.protocol import Protocol

__all__ = [
    "DEFAULT_CHUNK_S",
    "EVENT_COLUMNS",
    "ReplayResult",
    "default_chunk_size",
    "read_events_tsv",
    "replay",
    "run_engine",
    "write_events_tsv",
]

logger = logging.getLogger("closedloop.replay")

#: Default chunking: the samples in about 10 ms, what LSL amplifiers typically push.
DEFAULT_CHUNK_S = 0.010
#: Replay keeps one State row per this many seconds of data for reports.
STATE_STEP_S = 0.01

EVENT_COLUMNS = ("onset", "duration", "trial_type", "sample", "phase_deg", "amplitude", "target_phase_deg")


def default_chunk_size(sfreq: float) -> int:
    """The default chunking of replay: the samples in about 10 ms (at least 1)."""
    return max(1, int(round(sfreq * DEFAULT_CHUNK_S)))


@dataclass
class ReplayResult:
    """What a replay produced.

    Attributes
    ----------
    triggers : list of Trigger
        The delivered triggers, in delivery order; ``time_s`` is the exact delivery time in
        seconds from the first sample (between samples where the prediction says so),
        ``sample`` the nearest sample, as in ``events.tsv``.
    summary : dict
        The engine's counts and what it learnt (band, gate threshold, estimator, notes).
    state : dict of ndarray
        One State row per 10 ms of data: ``time_s``, ``phase_deg``, ``amplitude``, ``feedback``,
        ``gate`` (empty with ``keep_state=False``).
    sfreq, n_samples, chunk_size : float, int, int
        The recording's rate and length, and the chunking replayed.
    wall_s : float
        Seconds the replay took.
    protocol : Protocol, optional
        The protocol replayed.
    recording : str
        What was replayed (a path, or a description of a Raw or an array).
    ch_names : list of str
        The recording's channel labels.
    """

    sfreq: float
    n_samples: int
    chunk_size: int
    triggers: list[Trigger]
    summary: dict
    state: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0
    protocol: Protocol | None = None
    recording: str = ""
    ch_names: list[str] = field(default_factory=list)

    @property
    def onsets_s(self) -> np.ndarray:
        """Delivery times of the triggers, seconds from the first sample."""
        return np.array([t.time_s for t in self.triggers], dtype=float)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sfreq

    @property
    def speed_x(self) -> float:
        """Seconds of data replayed per second of wall time."""
        return self.duration_s / self.wall_s if self.wall_s > 0 else math.inf

    def write(self, out: str | Path) -> Path:
        """``events.tsv``, ``summary.json`` and ``state.npz`` in ``out`` (created), as
        ``closedloop replay`` writes them; returns the folder."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_events_tsv(out / "events.tsv", self.triggers)
        summary = {
            "recording": self.recording,
            "protocol": _protocol_dict(self.protocol) if self.protocol is not None else None,
            "sfreq": self.sfreq,
            "n_channels": len(self.ch_names),
            "n_samples": self.n_samples,
            "duration_s": self.duration_s,
            "chunk_size": self.chunk_size,
            "counts": self.summary,
            "wall_s": round(self.wall_s, 4),
            "speed_x_realtime": round(self.speed_x, 2),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        np.savez_compressed(out / "state.npz", **self.state)
        return out

    def __repr__(self) -> str:
        name = self.protocol.name if self.protocol is not None else "?"
        return (
            f"<ReplayResult {name!r} on {self.recording or 'data'}: {len(self.triggers)} triggers in "
            f"{self.duration_s:.1f} s (chunks of {self.chunk_size}, {self.speed_x:.0f}x real time)>"
        )


def run_engine(
    engine: Engine,
    chunks: Iterable[tuple[int, np.ndarray]],
    *,
    chunk_size: int,
    keep_state: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Feed ``(start_index, chunk)`` pairs to ``engine`` on the sample clock and collect triggers."""
    from closedloop.engine import planning_horizon_s, replay_delivery_s

    sfreq = engine.sfreq
    horizon_s = planning_horizon_s(chunk_size, sfreq)
    triggers: list[Trigger] = []
    step = max(1, int(round(STATE_STEP_S * sfreq)))
    state_rows: list[tuple[float, float, float, float, float]] = []
    next_state = 0
    n_total = 0
    name = engine.protocol.name
    process = engine.process
    t0 = time.perf_counter()
    for start, chunk in chunks:
        n = chunk.shape[1]
        if n == 0:
            continue
        newest = start + n - 1
        newest_ts = newest / sfreq
        state = process(chunk, newest_ts, horizon_s)
        if newest >= n_total:
            n_total = newest + 1
        plan = state.plan
        if plan is not None:
            delivered_s = replay_delivery_s(plan, newest_ts)
            if engine.deliver(plan, delivered_s):
                triggers.append(
                    Trigger(
                        seq=plan.seq, time_s=delivered_s, sample_ts=plan.sample_ts, event=plan.event,
                        target_phase_deg=plan.target_phase_deg, phase_deg=plan.phase_deg,
                        amplitude=plan.amplitude, scheduled_s=plan.time_s, crossing_s=plan.crossing_s,
                        pulses=plan.pulses, pulse_interval_s=plan.pulse_interval_s,
                        sample=int(round(delivered_s * sfreq)), protocol=name,
                    )
                )
        if keep_state and newest >= next_state:
            state_rows.append(state.row())
            next_state = newest + step
        if progress is not None:
            progress(n)
    wall = time.perf_counter() - t0
    if engine.pending is not None:
        engine.drop(engine.pending, "end of data")
    arr = np.array(state_rows, dtype=float).reshape(-1, len(STATE_FIELDS))
    state = {("time_s" if key == "sample_ts" else key): arr[:, i] for i, key in enumerate(STATE_FIELDS)}
    return ReplayResult(
        sfreq, n_total, chunk_size, triggers, engine.summary(), state, wall,
        protocol=engine.protocol, ch_names=list(engine.ch_names),
    )


def replay(
    source,
    protocol,
    *,
    chunk_size: int | None = None,
    seed: int = 0,
    sfreq: float | None = None,
    ch_names: Sequence[str] | None = None,
    units=None,
    stream: str | None = None,
    keep_state: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run the engine offline over a recording, exactly as ``closedloop replay`` does.

    Parameters
    ----------
    source : str, Path, mne.io.BaseRaw, ndarray or Recording
        A recording file (any format MNE reads, or XDF), an MNE Raw (in volts, as MNE holds
        it), an array ``(n_channels, n_samples)`` with ``sfreq``, ``ch_names`` and ``units``, or
        an open :class:`closedloop.io.Recording`.
    protocol : Protocol or str
        A :class:`closedloop.Protocol`, a preset name or a TOML path.
    chunk_size : int, optional
        Samples per chunk to simulate; default the samples in 10 ms (the command's default).
    seed : int
        Seed for sham phases and interval jitter.
    sfreq, ch_names : float, list of str
        For an array: its rate and channel labels.
    units : str or list of str
        For an array, required: ``"V"``, ``"mV"``, ``"uV"``, ``"nV"`` (one for all channels, or
        one per channel). An array without units is refused: a recording in volts read as
        microvolts never triggers.
    stream : str, optional
        XDF: the EEG stream's name or type.
    keep_state : bool
        Keep the State rows (for reports).
    progress : callable, optional
        Called with the number of samples after each chunk (a progress bar's advance).

    Returns
    -------
    ReplayResult

    Raises
    ------
    ProtocolError, DataError, UsageError
        As the command: a malformed protocol, an unreadable recording, a missing channel, an
        unusable rate, an array without units.
    """
    from closedloop.engine import Engine
    from closedloop.io import (
        Recording,
        array_in_microvolts,
        array_recording,
        declared_scale,
        is_mne_raw,
        open_recording,
        raw_recording,
        unit_factors,
    )
    from closedloop.protocol import Protocol, load_protocol

    if not isinstance(protocol, Protocol):
        protocol = load_protocol(protocol)
    owned = False
    if isinstance(source, Recording):
        recording = source
        label = str(source.path) if source.path is not None else "array"
    elif isinstance(source, (str, Path)):
        recording, owned, label = open_recording(source, stream=stream), True, str(source)
    elif is_mne_raw(source):
        recording = raw_recording(source)
        label = str(recording.path) if recording.path is not None else f"MNE {type(source).__name__}"
    elif isinstance(source, np.ndarray):
        if sfreq is None:
            raise UsageError("replaying an array needs its sampling rate: pass sfreq=.")
        data = np.asarray(source)
        if data.ndim != 2:
            raise DataError(f"an array to replay must be (n_channels, n_samples), got shape {data.shape}.")
        names = list(ch_names) if ch_names is not None else None
        if names is None:
            raise UsageError("replaying an array needs its channel names: pass ch_names=.")
        factors = unit_factors(units, data.shape[0])
        recording = array_recording(array_in_microvolts(data, units, data.shape[0]), sfreq, names,
                                    value_scale=factors)
        label = "array"
    else:
        raise UsageError(
            f"cannot replay a {type(source).__name__}; give a recording's path, an MNE Raw, or an "
            "array with sfreq, ch_names and units."
        )
    try:
        size = chunk_size if chunk_size is not None else default_chunk_size(recording.sfreq)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise UsageError(f"--chunk-size must be a whole number of samples >= 1, got {size}.")
        # the engine takes only the channels it uses, and only those are read
        engine = Engine(protocol, recording.ch_names, recording.sfreq, seed=seed,
                        declared_scale=lambda used: declared_scale(recording, used),
                        compact_input=True)
        result = run_engine(
            engine, recording.iter_chunks(int(size), rows=engine.input_rows), chunk_size=int(size),
            keep_state=keep_state, progress=progress,
        )
    finally:
        if owned:
            recording.close()
    result.recording = label
    units = engine.units
    if units is not None and units.first_verdict == "implausible":
        held = "for the whole recording" if units.status != "ok" else "until the amplitude became plausible"
        logger.warning("%s Triggering was held %s.", units.message(), held)
    return result


def iter_array_chunks(data: np.ndarray, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Split ``(n_channels, n_samples)`` into contiguous float64 chunks of ``chunk_size``."""
    n = data.shape[1]
    for start in range(0, n, chunk_size):
        yield start, np.ascontiguousarray(data[:, start : start + chunk_size], dtype=np.float64)


# ---------------------------------------------------------------------- outputs
def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.6f}"
    return str(value)


def _event_row(trigger: Trigger) -> tuple:
    return (trigger.time_s, 0.0, trigger.event, trigger.sample, trigger.phase_deg, trigger.amplitude,
            trigger.target_phase_deg)


def write_events_tsv(path: Path, triggers: Sequence[Trigger]) -> None:
    """BIDS events (../shared/CONTRACTS.md): one row per delivered trigger."""
    lines = ["\t".join(EVENT_COLUMNS)]
    for trigger in triggers:
        lines.append("\t".join(_fmt(value) for value in _event_row(trigger)))
    path.write_text("\n".join(lines) + "\n")


def read_events_tsv(path: Path) -> list[dict]:
    """The rows of an ``events.tsv`` as dicts (numbers as float, ``sample`` as int)."""
    rows = path.read_text().splitlines()
    header = rows[0].split("\t")
    out = []
    for line in rows[1:]:
        values = dict(zip(header, line.split("\t")))
        for key in ("onset", "duration", "phase_deg", "amplitude", "target_phase_deg"):
            values[key] = float("nan") if values[key] == "n/a" else float(values[key])
        values["sample"] = int(values["sample"])
        out.append(values)
    return out


def _protocol_dict(protocol) -> dict:
    return json.loads(json.dumps(asdict(protocol), default=list))
