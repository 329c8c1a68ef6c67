"""``closedloop calibrate BASELINE --protocol P --out TUNED.toml``: tune a protocol to one person."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "baseline", help="baseline recording of the person (any format MNE reads, or XDF)"
    )
    p.add_argument("--protocol", required=True, help="protocol file or preset name to start from")
    p.add_argument("--out", required=True, help="where to write the tuned protocol (.toml)")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="use only the first S seconds of the recording (default: all of it)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.3,
        help="share of the baseline held out to score candidates (default 0.3)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods to consider (default: all candidates)",
    )
    p.add_argument("--name", help="the tuned protocol's name (default: the protocol's and the recording's)")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.calibration import run_calibration
    from closedloop.errors import UsageError
    from closedloop.protocol import load_protocol, protocol_to_toml

    out = Path(args.out)
    if out.suffix.lower() != ".toml":
        raise UsageError(f"--out {str(out)!r} must be a .toml file.")
    methods = args.methods.split(",") if args.methods else None
    result = run_calibration(
        args.baseline, args.protocol, seconds=args.seconds, holdout=args.holdout, methods=methods, name=args.name
    )
    x_s, fit_s = result.seconds, result.n_fit / result.sfreq
    start = result.protocol
    print(
        f"calibrate: {Path(args.baseline).name}, {x_s:.0f} s at {result.sfreq:g} Hz, channel "
        f"{start.signal.channel} ({start.signal.reference}); band {result.band_hz[0]:.2f}-"
        f"{result.band_hz[1]:.2f} Hz ({result.band_note}); fit on {fit_s:.0f} s, scored on "
        f"{x_s - fit_s:.0f} s held out"
    )
    print(f"{'method':8s} {'params':28s} {'RMS°':>6s} {'SD°':>6s} {'mean°':>6s} {'n':>6s}")
    for s in result.scores:
        if "skipped" in s:
            print(f"{s['method']:8s} {s['params']!s:28s} skipped: {s['skipped']}")
        else:
            print(
                f"{s['method']:8s} {s['params']!s:28s} {s['rms_deg']:6.1f} {s['sd_deg']:6.1f} "
                f"{s['mean_deg']:6.1f} {s['n']:6d}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(protocol_to_toml(result.protocol), encoding="utf-8")
    load_protocol(str(out))  # what we wrote must load
    print(f"wrote {out} (protocol {result.protocol.name!r})", file=sys.stderr)
    return 0
