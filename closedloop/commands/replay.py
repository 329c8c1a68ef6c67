"""``closedloop replay RECORDING --protocol P``: the engine offline, deterministic (:func:`closedloop.offline`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    from closedloop.errors import UsageError
    from closedloop.io import open_recording
    from closedloop.offline import replay
    from closedloop.progress import progress_bar
    from closedloop.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if args.chunk_size is not None and args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be a whole number of samples >= 1, got {args.chunk_size}.")
    units = None
    if args.units is not None:
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
        out = Path(args.out) if args.out else Path(Path(args.recording).name.split(".")[0] + "_replay")
        out.mkdir(parents=True, exist_ok=True)
        with progress_bar(recording.n_samples, "replay", disable=args.quiet) as advance:
            result = replay(recording, protocol, chunk_size=args.chunk_size, seed=args.seed, progress=advance)
    finally:
        recording.close()
    result.recording = str(args.recording)
    result.write(out)
    s = result.summary
    for note in s.get("notes", []):
        print(f"closedloop replay: {note}", file=sys.stderr)
    print(
        f"replay: {result.duration_s:.1f} s of data in {result.wall_s:.2f} s "
        f"({result.speed_x:.0f}x real time); triggers delivered {s['triggers_delivered']}, "
        f"dropped {s['triggers_dropped']}; outputs in {out}/"
    )
    return 0
