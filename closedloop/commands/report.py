"""``closedloop report SESSION``: one self-contained HTML report of a recorded or replayed session."""

from __future__ import annotations

import argparse
import sys

from closedloop.report import make_report


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="an XDF file from closedloop run --record, or a closedloop replay output folder")
    p.add_argument("--out", "-o", help="the HTML file (default: report.html in a replay folder, or the XDF's "
                   "name with .html); the numbers go to the same name with .json")
    p.add_argument("--protocol", "-p", help="protocol file or preset (default: the one the session names)")
    p.add_argument("--recording", help="replay folders: the recording, if summary.json's path no longer leads to it")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.progress import progress_bar

    with progress_bar(5, "report", disable=args.quiet) as advance:
        out, json_path, numbers = make_report(
            args.session, args.out, protocol=args.protocol, recording=args.recording, progress=advance
        )
    t = numbers["triggers"]
    truth = numbers.get("phase_true")
    line = f"report: {t['delivered']} triggers"
    if truth and truth.get("plv") is not None:
        line += f", true phase error {truth['mean_deg']:+.1f} deg (PLV {truth['plv']:.2f})"
    lat = numbers.get("latency_ms")
    if lat and lat.get("p99") is not None:
        line += f", latency p99 {lat['p99']:.2f} ms"
    print(f"{line}; written {out} and {json_path}", file=sys.stderr)
    for note in numbers.get("notes", []):
        print(f"closedloop report: note: {note}", file=sys.stderr)
    return 0
