"""``closedloop replay``: the live engine run offline on a recording, on the sample clock.

Everything from the first processing stage on is the engine the live loop uses; only the source
(a file read in chunks of ``--chunk-size`` samples) and the clock (``sample_index / sfreq``)
differ. A trigger the engine plans is delivered at its planned time, exactly as the live loop's
scheduler would deliver it before the next chunk arrives; the same input, protocol, chunk size and
seed give byte-identical outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from closedloop.errors import UsageError

if TYPE_CHECKING:
    from closedloop.engine import Engine, TriggerPlan

#: Default chunking: the samples in about 10 ms, what LSL amplifiers typically push.
DEFAULT_CHUNK_S = 0.010
#: Replay keeps one State row per this many seconds of data for reports.
STATE_STEP_S = 0.01

EVENT_COLUMNS = ("onset", "duration", "trial_type", "sample", "phase_deg", "amplitude", "target_phase_deg")


def default_chunk_size(sfreq: float) -> int:
    return max(1, int(round(sfreq * DEFAULT_CHUNK_S)))


@dataclass
class OfflineResult:
    """What an offline run produced."""

    sfreq: float
    n_samples: int
    chunk_size: int
    triggers: list[dict]
    summary: dict
    state: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def onsets_s(self) -> np.ndarray:
        return np.array([t["onset"] for t in self.triggers], dtype=float)

    @property
    def speed_x(self) -> float:
        return (self.n_samples / self.sfreq) / self.wall_s if self.wall_s > 0 else math.inf


def _trigger_row(plan: TriggerPlan, delivered_s: float, sfreq: float) -> dict:
    return {
        "onset": delivered_s,
        "duration": 0.0,
        "trial_type": plan.event,
        "sample": int(round(delivered_s * sfreq)),
        "phase_deg": plan.phase_deg,
        "amplitude": plan.amplitude,
        "target_phase_deg": plan.target_phase_deg,
        "seq": plan.seq,
        "decided_sample_ts": plan.sample_ts,
    }


def run_engine(
    engine: Engine,
    chunks: Iterable[tuple[int, np.ndarray]],
    *,
    chunk_size: int,
    keep_state: bool = True,
    progress=None,
    units_check=None,
) -> OfflineResult:
    """Feed ``(start_index, chunk)`` pairs to ``engine`` on the sample clock and collect triggers.

    ``units_check`` (a :class:`closedloop.plausibility.UnitsCheck`) holds triggering, as live,
    while the data are not plausibly EEG in microvolts.
    """
    sfreq = engine.sfreq
    horizon_s = chunk_size / sfreq
    triggers: list[dict] = []
    step = max(1, int(round(STATE_STEP_S * sfreq)))
    state_rows: list[tuple[float, float, float, float, float]] = []
    next_state = 0
    n_total = 0
    t0 = time.perf_counter()
    for start, chunk in chunks:
        n = chunk.shape[1]
        if n == 0:
            continue
        newest = start + n - 1
        newest_ts = newest / sfreq
        if units_check is not None and not units_check.ok and not units_check.process(chunk):
            engine.hold(horizon_s, newest_ts)
        state = engine.process(chunk, newest_ts, horizon_s)
        n_total = max(n_total, newest + 1)
        plan = state.plan
        if plan is not None:
            delivered_s = max(plan.time_s, newest_ts)
            if engine.deliver(plan, delivered_s):
                triggers.append(_trigger_row(plan, delivered_s, sfreq))
        if keep_state and newest >= next_state:
            state_rows.append(
                (state.sample_ts, state.phase_deg, state.amplitude, state.feedback, float(state.gate))
            )
            next_state = newest + step
        if progress is not None:
            progress(n)
    wall = time.perf_counter() - t0
    if engine.pending is not None:
        engine.drop(engine.pending, "end of data")
    arr = np.array(state_rows, dtype=float).reshape(-1, 5)
    state = {
        "time_s": arr[:, 0],
        "phase_deg": arr[:, 1],
        "amplitude": arr[:, 2],
        "feedback": arr[:, 3],
        "gate": arr[:, 4],
    }
    summary = engine.summary()
    return OfflineResult(sfreq, n_total, chunk_size, triggers, summary, state, wall)


def iter_array_chunks(data: np.ndarray, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Split ``(n_channels, n_samples)`` into contiguous float64 chunks of ``chunk_size``."""
    n = data.shape[1]
    for start in range(0, n, chunk_size):
        yield start, np.ascontiguousarray(data[:, start : start + chunk_size], dtype=np.float64)


def run_offline(
    data: np.ndarray,
    sfreq: float,
    ch_names: list[str],
    protocol,
    *,
    chunk_size: int = 1,
    seed: int = 0,
    keep_state: bool = True,
) -> OfflineResult:
    """Run the real engine over an in-memory recording (microvolts) and return its triggers.

    ``triggers[i]["onset"]`` is the exact delivery time in seconds from the first sample (between
    samples where the prediction says so); ``"sample"`` is the nearest sample.
    """
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be a whole number of samples >= 1, got {chunk_size}.")
    from closedloop.engine import Engine

    engine = Engine(protocol, ch_names, sfreq, seed=seed)
    return run_engine(engine, iter_array_chunks(data, chunk_size), chunk_size=chunk_size, keep_state=keep_state)


# ---------------------------------------------------------------------- outputs
def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.6f}"
    return str(value)


def write_events_tsv(path: Path, triggers: list[dict]) -> None:
    """BIDS events (../shared/CONTRACTS.md): one row per delivered trigger."""
    lines = ["\t".join(EVENT_COLUMNS)]
    for row in triggers:
        lines.append("\t".join(_fmt(row[col]) for col in EVENT_COLUMNS))
    path.write_text("\n".join(lines) + "\n")


def read_events_tsv(path: Path) -> list[dict]:
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


def protocol_dict(protocol) -> dict:
    return json.loads(json.dumps(asdict(protocol), default=list))


# ---------------------------------------------------------------------- command
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="recording file (any format MNE reads, or XDF)")
    p.add_argument("--protocol", "-p", required=True, help="protocol file (.toml) or preset name")
    p.add_argument("--out", help="output folder (default: a folder named after the recording)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="samples per chunk to simulate (default: the samples in 10 ms)",
    )
    p.add_argument("--stream", help="XDF: the EEG stream's name or type")
    p.add_argument("--units", metavar="UNIT",
                   help="the units of the recording's voltage values, overriding its header: V, mV, uV "
                        "(or µV), nV, or mne-lsl's codes 0, -3, -6, -9")
    p.add_argument("--seed", type=int, default=0, help="seed for sham phases and interval jitter")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.engine import Engine
    from closedloop.io import open_recording
    from closedloop.plausibility import UnitsCheck
    from closedloop.progress import progress_bar
    from closedloop.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    units = None
    if getattr(args, "units", None) is not None:
        from closedloop.units import parse_units_option

        try:
            units = parse_units_option(args.units)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    recording = open_recording(args.recording, stream=args.stream, units=units)
    for note in recording.notes:
        if note.startswith("--units"):
            print(f"closedloop replay: note: {note}.", file=sys.stderr)
    try:
        chunk_size = args.chunk_size or default_chunk_size(recording.sfreq)
        if chunk_size < 1:
            raise UsageError(f"--chunk-size must be a whole number of samples >= 1, got {chunk_size}.")
        out = Path(args.out) if args.out else Path(Path(args.recording).name.split(".")[0] + "_replay")
        out.mkdir(parents=True, exist_ok=True)
        engine = Engine(protocol, recording.ch_names, recording.sfreq, seed=args.seed)
        used = [int(i) for i in engine.used_channels]
        scales = {float(recording.value_scale[i]) for i in used}
        check = UnitsCheck(recording.sfreq, used, ch_names=[recording.ch_names[i] for i in used],
                           declared_scale=scales.pop() if len(scales) == 1 else None) if used else None
        with progress_bar(recording.n_samples, "replay", disable=args.quiet) as advance:
            result = run_engine(
                engine,
                recording.iter_chunks(chunk_size),
                chunk_size=chunk_size,
                progress=advance,
                units_check=check,
            )
    finally:
        recording.close()
    if check is not None:
        result.summary["units"] = check.summary()
        if check.first_verdict == "implausible":
            held = "for the whole recording" if check.status != "ok" else "until the amplitude became plausible"
            print(f"closedloop replay: {check.message()} Triggering was held {held}.", file=sys.stderr)
    write_outputs(out, result, protocol, recording_path=str(args.recording), ch_names=recording.ch_names)
    s = result.summary
    for note in s.get("notes", []):
        print(f"closedloop replay: {note}", file=sys.stderr)
    print(
        f"replay: {result.n_samples / result.sfreq:.1f} s of data in {result.wall_s:.2f} s "
        f"({result.speed_x:.0f}x real time); triggers delivered {s['triggers_delivered']}, "
        f"dropped {s['triggers_dropped']}; outputs in {out}/"
    )
    return 0


def write_outputs(out: Path, result: OfflineResult, protocol, *, recording_path: str, ch_names) -> None:
    """events.tsv, summary.json and state.npz (for reports) in ``out``."""
    write_events_tsv(out / "events.tsv", result.triggers)
    summary = {
        "recording": recording_path,
        "protocol": protocol_dict(protocol),
        "sfreq": result.sfreq,
        "n_channels": len(ch_names),
        "n_samples": result.n_samples,
        "duration_s": result.n_samples / result.sfreq,
        "chunk_size": result.chunk_size,
        "counts": result.summary,
        "wall_s": round(result.wall_s, 4),
        "speed_x_realtime": round(result.speed_x, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    np.savez_compressed(out / "state.npz", **result.state)
