"""``closedloop streams``: list the LSL streams visible now."""

from __future__ import annotations

import argparse
import json
import sys

from closedloop.lsl.streams import format_table, list_streams


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``streams`` options to ``parser``."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds to wait for streams to answer (default: 1.0)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run_command(args: argparse.Namespace) -> int:
    """Print the visible streams; exit 0 even when there are none."""
    streams = list_streams(args.timeout)
    if args.json:
        print(json.dumps(streams, indent=2))
        return 0
    if not streams:
        print(f"no LSL streams visible (waited {args.timeout:g} s)", file=sys.stderr)
        return 0
    print(format_table(streams))
    return 0
