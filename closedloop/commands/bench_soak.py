"""``closedloop bench soak``: a long live session (:mod:`closedloop.bench.soak`)."""

from __future__ import annotations

import argparse

from closedloop.bench.soak import DEFAULT_DURATION_S, run_soak


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                   help="seconds of live loop (default 1800 = 30 min)")
    p.add_argument("--channels", type=int, default=64, help="amplifier channels (default 64)")
    p.add_argument("--sfreq", type=float, default=5000.0, help="amplifier rate in Hz (default 5000)")
    p.add_argument("--chunk-size", type=int, default=5, help="samples per push (default 5)")
    p.add_argument("--protocol", "-p", default="default", help="protocol (default: the preset 'default')")
    from closedloop.bench.common import REALTIME_HELP

    p.add_argument("--realtime", action="store_true", help=REALTIME_HELP)
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def print_result(result: dict) -> None:
    from closedloop.bench.common import fmt
    from closedloop.commands._tables import machine_rows, print_table

    s = result["settings"]
    rows = [
        ("settings", (f"{s['channels']} ch, {s['sfreq']:g} Hz, chunks of {s['chunk_size']}, {s['duration_s']:g} s, "
                     f"protocol {s['protocol']!r}{', real-time scheduling' if s.get('realtime') else ''}")),
        ("memory growth after minute 1", (f"{fmt(result['memory_growth_mb'], '.2f')} MB (at the end "
                                         f"{fmt(result['memory_growth_end_mb'], '.2f')} MB; target < 5)")),
        ("resident memory at minute 1", f"{fmt(result['rss_mb_at_1_min'], '.1f')} MB"),
        ("dropped samples / gaps / stalls", f"{result['dropped_samples']} / {result['gaps']} / {result['stalls']}"),
        ("triggers", f"{result['triggers']} delivered, {result['triggers_dropped']} dropped"),
        ("engine CPU (% of one core)", fmt(result["cpu_percent_of_one_core"], ".1f")),
        ("latency over the run (ms)", (f"p50 {fmt(result['latency_ms']['p50'])}  p99 {fmt(result['latency_ms']['p99'])}  "
                                      f"max {fmt(result['latency_ms']['max'])}")),
        ("per-minute spread (ms)", f"p50 {fmt(result['p50_spread_ms'])}  p99 {fmt(result['p99_spread_ms'])}"),
    ]
    for p in result["latency_per_minute_ms"]:
        rows.append((f"  minute {p['minute']}", (f"p50 {fmt(p['p50'])}  p95 {fmt(p['p95'])}  p99 {fmt(p['p99'])}  "
                                                f"max {fmt(p['max'])}  (n {p['n']})")))
    rows += machine_rows(result["machine"])
    print_table("closedloop bench soak", rows)


def run_command(args: argparse.Namespace) -> int:
    from closedloop.bench.common import write_json
    from closedloop.checks import positive_float, positive_int

    settings = {
        "duration_s": positive_float(args.duration, "--duration"),
        "channels": positive_int(args.channels, "--channels"),
        "sfreq": positive_float(args.sfreq, "--sfreq"),
        "chunk_size": positive_int(args.chunk_size, "--chunk-size"),
        "protocol": args.protocol,
        "realtime": bool(args.realtime),
    }
    if settings["sfreq"] < 200:
        from closedloop.errors import UsageError

        raise UsageError(f"--sfreq must be at least 200 Hz for the simulated signal, got {args.sfreq:g}.")
    result = run_soak(settings, progress=not args.quiet)
    write_json(args.json, result)
    print_result(result)
    return 0
