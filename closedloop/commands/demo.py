"""``closedloop demo``: the whole loop on the shipped recording: play over LSL, run live, summary."""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recording", help="recording to play (default: the simulated one in recordings/)")
    p.add_argument("--protocol", "-p", default="default", help="protocol file or preset (default: default)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of live loop (default 20)")
    p.add_argument("--chunk-size", type=int, default=5, help="samples per LSL push (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed for sham phases and interval jitter")
    p.add_argument("--json", help="also write the summary to this JSON file")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.lsl.config import use_loopback_config

    use_loopback_config()  # before pylsl loads

    from closedloop.demo import format_summary, run_demo

    out = run_demo(args.recording, args.protocol, duration_s=args.duration, chunk_size=args.chunk_size, seed=args.seed)
    print(format_summary(out))
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0
