"""``closedloop bench latency``: push-to-receipt latency of the live loop (:mod:`closedloop.bench.latency`)."""

from __future__ import annotations

import argparse

from closedloop.bench.latency import (
    DEFAULT_CHANNELS,
    DEFAULT_CHUNK,
    DEFAULT_DURATION_S,
    DEFAULT_SFREQ,
    run_latency,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels", type=int, default=DEFAULT_CHANNELS, help="amplifier channels (default 64)")
    p.add_argument("--sfreq", type=float, default=DEFAULT_SFREQ, help="amplifier rate in Hz (default 5000)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="samples per push (default 5)")
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S,
                   help="seconds of live loop per run (default 30)")
    p.add_argument("--protocol", "-p", default="default", help="protocol (default: the preset 'default')")
    p.add_argument("--monitor", action="store_true", help="run the engine with --monitor (its cost shows in p99)")
    p.add_argument("--compare", choices=["mne-lsl"], help="also measure an mne-lsl StreamLSL pipeline")
    p.add_argument("--ui", action="store_true",
                   help="also run the engine with --ui and both pages open in headless Chromium, and compare")
    p.add_argument("--stamping", choices=["nominal", "push"], default="nominal",
                   help="timestamp of each chunk: its due time on the sample clock (default) or its push time")
    from closedloop.bench.common import REALTIME_HELP

    p.add_argument("--realtime", action="store_true", help=REALTIME_HELP)
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _settings(args: argparse.Namespace) -> dict:
    from closedloop.checks import positive_float, positive_int

    settings = {
        "channels": positive_int(args.channels, "--channels"),
        "sfreq": positive_float(args.sfreq, "--sfreq"),
        "chunk_size": positive_int(args.chunk_size, "--chunk-size"),
        "duration_s": positive_float(args.duration, "--duration"),
        "protocol": args.protocol,
        "monitor": bool(args.monitor),
        "compare": args.compare,
        "ui": bool(getattr(args, "ui", False)),
        "stamping": args.stamping,
        "realtime": bool(args.realtime),
    }
    from closedloop.errors import UsageError

    if settings["sfreq"] < 200:
        raise UsageError(f"--sfreq must be at least 200 Hz for the simulated signal, got {args.sfreq:g}.")
    if settings["ui"]:
        from closedloop.ui.browser import chromium_paths

        chromium_paths()  # refused now, with how to install, rather than after the first run
    if settings["compare"] == "mne-lsl":
        import importlib.util

        if importlib.util.find_spec("mne_lsl") is None:
            raise UsageError("--compare mne-lsl needs mne-lsl, which is not installed "
                             "(pip install 'closedloop[compare]').")
    return settings



def print_result(result: dict) -> None:
    from closedloop.bench.common import fmt
    from closedloop.commands._tables import machine_rows, print_table

    s = result["settings"]
    c = result["closedloop"]
    lat, eng, dly = c["latency_ms"], c["engine_ms"], c["delivery_error_ms"]
    rows = [
        ("settings", (f"{s['channels']} ch, {s['sfreq']:g} Hz, chunks of {s['chunk_size']}, {s['duration_s']:g} s, "
                     f"protocol {s['protocol']!r}, monitor {'on' if s['monitor'] else 'off'}, "
                     f"stamps {s['stamping']}")),
        ("push -> State received (ms)", (f"p50 {fmt(lat['p50'])}  p95 {fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  "
                                        f"max {fmt(lat['max'])}  (n {lat['n']}; target p50 <= 0.35, p99 <= 1.0)")),
        ("push -> State pushed (ms)", f"p50 {fmt(eng['p50'])}  p99 {fmt(eng['p99'])}  max {fmt(eng['max'])}"),
        ("trigger delivery |actual - scheduled| (ms)",
         f"p50 {fmt(dly['p50'])}  p99 {fmt(dly['p99'])}  max {fmt(dly['max'])}  (n {dly['n']}; target p99 <= 0.2)"),
        ("  of plans made ahead (ms)",
         (f"p50 {fmt(c['delivery_error_ms_planned_ahead']['p50'])}  p99 {fmt(c['delivery_error_ms_planned_ahead']['p99'])}  "
         f"(n {c['delivery_error_ms_planned_ahead']['n']}; {c['plans_overdue_when_made']} plans were overdue when made)")),
        ("marker push -> received (ms)", f"p50 {fmt(c['marker_latency_ms']['p50'])}  p99 {fmt(c['marker_latency_ms']['p99'])}"),
        ("dropped samples / gaps", f"{c['dropped_samples']} / {c['gaps']}  (target 0)"),
        ("triggers", f"{c['triggers']} delivered, {c['engine_summary'].get('triggers_dropped')} dropped"),
        ("engine CPU (% of one core)", f"{fmt(c['cpu_percent_of_one_core'], '.1f')}  (target < 50)"),
        ("State samples", (f"{c['state_samples']} received, {c['state_samples_unmatched']} unmatched, "
                          f"{c['chunks_without_own_state']} chunks merged into a later one")),
        ("amplifier push lateness (ms)", (f"p50 {fmt(result['amplifier']['push_lateness_ms']['p50'])}  "
                                         f"p99 {fmt(result['amplifier']['push_lateness_ms']['p99'])}")),
    ]
    if "with_ui" in result:
        u = result["with_ui"]
        m = u["latency_ms"]
        rows += [
            ("with --ui and both pages open (ms)", (f"p50 {fmt(m['p50'])}  p95 {fmt(m['p95'])}  p99 {fmt(m['p99'])}  "
                                                    f"max {fmt(m['max'])}  (n {m['n']}, from {fmt(u['pages_open_after_s'], '.1f')} s "
                                                    "after the first State, when the pages were open)")),
            ("  cost of the views", (f"p50 {fmt(result['ui_p50_cost_ms'], '+.3f')} ms  p99 {fmt(result['ui_p99_cost_ms'], '+.3f')} ms"
                                     f"  (x{fmt(result['ratio_p99_ui_over_without'], '.2f')}; target p99 <= +0.1 ms)")),
            ("  engine CPU with the views (%)", fmt(u["cpu_percent_of_one_core"], ".1f")),
        ]
        for name, page in (u.get("pages") or {}).items():
            d = page["display_latency_ms"]
            rows.append((f"  {name} page: State push -> frame (ms)",
                         f"p50 {fmt(d['p50'], '.1f')}  p95 {fmt(d['p95'], '.1f')}  (n {d['n']}, {page['frames']} frames)"))
        if u.get("error"):
            rows.append(("  browser", u["error"]))
    if "mne_lsl" in result:
        m = result["mne_lsl"]["latency_ms"]
        rows += [
            ("mne-lsl push -> State received (ms)", (f"p50 {fmt(m['p50'])}  p95 {fmt(m['p95'])}  p99 {fmt(m['p99'])}  "
                                                    f"max {fmt(m['max'])}  (n {m['n']})")),
            ("mne-lsl CPU (% of one core)", fmt(result["mne_lsl"]["cpu_percent_of_one_core"], ".1f")),
            ("p50 ratio mne-lsl / closedloop", f"{fmt(result['ratio_p50_mne_lsl_over_closedloop'], '.2f')}x  (target >= 3)"),
        ]
    rows += machine_rows(result["machine"])
    print_table("closedloop bench latency", rows)


def run_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    result = run_latency(settings, progress=not args.quiet)
    from closedloop.bench.common import write_json

    write_json(args.json, result)
    print_result(result)
    return 0
