"""``closedloop bench throughput``: the largest channel count the live loop sustains; replay speed (:mod:`closedloop.bench.throughput`)."""

from __future__ import annotations

import argparse

from closedloop.bench.throughput import TRIAL_BASELINE_S, run_throughput


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates", default="5000,1000", help="sampling rates in Hz, comma-separated (default 5000,1000)")
    p.add_argument("--chunk-size", type=int, default=5, help="samples per push (default 5)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of the confirming trial (default 30)")
    p.add_argument("--trial", type=float, default=12.0, help="seconds of each search trial (default 12)")
    p.add_argument("--start-channels", type=int, default=64, help="first channel count tried (default 64)")
    p.add_argument("--max-channels", type=int, default=16384, help="largest channel count tried (default 16384)")
    p.add_argument("--protocol", "-p", default="default", help="protocol (default: the preset 'default')")
    p.add_argument("--replay-seconds", type=float, default=600.0,
                   help="seconds of 64-channel 1 kHz data replayed for the speed figure (default 600)")
    p.add_argument("--no-live", action="store_true", help="skip the live channel-count search")
    p.add_argument("--no-dsp", action="store_true", help="skip the DSP front-end figures")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _parse_rates(text: str) -> list[float]:
    from closedloop.checks import positive_float
    from closedloop.errors import UsageError

    try:
        rates = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--rates must be numbers in Hz separated by commas (e.g. 5000,1000), got {text!r}.") from None
    if not rates:
        raise UsageError("--rates names no rate; give e.g. 5000,1000.")
    for r in rates:
        positive_float(r, "each of --rates")
        if r < 200:
            raise UsageError(f"--rates: {r:g} Hz is below 200 Hz, the lowest rate the simulated signal has.")
    return rates


def print_result(result: dict) -> None:
    from closedloop.bench.common import fmt
    from closedloop.commands._tables import machine_rows, print_table

    s = result["settings"]
    rows = [("settings", (f"chunks of {s['chunk_size']}, trials {s['trial_s']:g} s, confirmation {s['duration_s']:g} s, "
                         f"protocol {s['protocol']!r} (baseline {TRIAL_BASELINE_S:g} s)"))]
    for live in result.get("live", []):
        confirmed = f"confirmed for {live['confirmed_for_s']:g} s" if live["confirmed_for_s"] else "not confirmed"
        cap = " (the largest tried)" if live["capped_at_max"] else f"; {live['first_failing_channels']} failed"
        rows.append((f"live, {live['sfreq']:g} Hz", (f"{live['max_channels_sustained']} channels sustained, "
                                                      f"{confirmed}{cap}")))
    r = result["replay"]
    rows.append(("replay speed", (f"{fmt(r['speed_x_realtime'], '.0f')}x real time ({r['channels']} ch, {r['sfreq']:g} Hz, "
                                 f"{r['data_seconds']:g} s of data in {fmt(r['wall_s'], '.2f')} s; "
                                 f"{fmt(r.get('speed_x_cpu'), '.0f')}x per CPU second)")))
    d = result.get("dsp")
    if d:
        c = d["closedloop"]
        rows.append(("DSP chain per chunk", (f"p50 {fmt(c['p50_us'], '.1f')} us, p99 {fmt(c['p99_us'], '.1f')} us "
                                            f"({d['n_channels']} ch, {d['sfreq']:g} Hz, chunks of {d['chunk_size']}); "
                                            f"{fmt(d.get('speedup_mean'), '.1f')}x scipy")))
    rows += machine_rows(result["machine"])
    print_table("closedloop bench throughput", rows)


def run_command(args: argparse.Namespace) -> int:
    import sys

    from closedloop.bench.common import write_json
    from closedloop.checks import positive_float, positive_int
    from closedloop.errors import UsageError

    settings = {
        "rates": _parse_rates(args.rates),
        "chunk_size": positive_int(args.chunk_size, "--chunk-size"),
        "duration_s": positive_float(args.duration, "--duration"),
        "trial_s": positive_float(args.trial, "--trial"),
        "start_channels": positive_int(args.start_channels, "--start-channels"),
        "max_channels": positive_int(args.max_channels, "--max-channels"),
        "protocol": args.protocol,
        "replay_seconds": positive_float(args.replay_seconds, "--replay-seconds"),
        "live": not args.no_live,
        "dsp": not args.no_dsp,
    }
    if settings["max_channels"] < settings["start_channels"]:
        raise UsageError(f"--max-channels ({settings['max_channels']}) must be at least --start-channels "
                         f"({settings['start_channels']}).")

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    result = run_throughput(settings, progress=not args.quiet, log=log)
    write_json(args.json, result)
    print_result(result)
    return 0
