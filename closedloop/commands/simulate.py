"""``closedloop simulate OUT``: write a simulated EEG recording."""

from __future__ import annotations

import argparse

from closedloop.errors import UsageError
from closedloop.simulate import (
    DEFAULT_N_CHANNELS,
    DEFAULT_SECONDS,
    DEFAULT_SEED,
    DEFAULT_SFREQ,
    MIN_SFREQ,
    check_arguments,
    check_output_path,
    simulate_eeg,
    write_recording,
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``closedloop simulate``."""
    parser.description = (
        "Write a simulated resting EEG recording: 1/f background mixed by volume conduction, "
        "occipital alpha and central mu bursts with drifting 8-12 Hz peaks, 50 Hz line noise "
        "and blinks. Same arguments, same file, bit for bit."
    )
    parser.add_argument(
        "out", metavar="OUT", help="output file: .edf (EDF+) or .vhdr (BrainVision)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=f"duration in seconds, whole seconds for .edf (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--sfreq",
        type=float,
        default=DEFAULT_SFREQ,
        metavar="F",
        help=f"sampling rate in Hz, at least {MIN_SFREQ:g} (default {DEFAULT_SFREQ:g})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        metavar="N",
        help=f"random seed >= 0 (default {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=DEFAULT_N_CHANNELS,
        metavar="N",
        help=f"number of 10-10 channels, 1-64 (default {DEFAULT_N_CHANNELS})",
    )


def run_command(args: argparse.Namespace) -> int:
    """Simulate and write; prints one line describing the file."""
    out = check_output_path(args.out)
    suffix = out.suffix.lower()
    if suffix == ".edf":
        check_arguments(args.seconds, args.sfreq, args.seed, args.channels)
        if (
            abs(args.sfreq - round(args.sfreq)) > 1e-9
            or abs(args.seconds - round(args.seconds)) > 1e-9
        ):
            raise UsageError(
                f"EDF stores whole seconds at a whole number of Hz; got --seconds {args.seconds:g} "
                f"and --sfreq {args.sfreq:g}. Round them, or write BrainVision (.vhdr)."
            )
    data, ch_names, sfreq, events = simulate_eeg(args.seconds, args.sfreq, args.seed, args.channels)
    files = write_recording(out, data, ch_names, sfreq, events)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    n_blinks = sum(e.description == "blink" for e in events)
    print(
        f"wrote {out} (simulated): {len(ch_names)} channels x {data.shape[1] / sfreq:g} s at "
        f"{sfreq:g} Hz, seed {args.seed}, {len(events)} events ({n_blinks} blinks), {size_mb:.1f} MB"
    )
    return 0
