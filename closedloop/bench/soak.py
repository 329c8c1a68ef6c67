"""``closedloop bench soak``: a long live session, watched for memory growth, drops and drift.

The set-up of ``closedloop bench latency`` (an amplifier outlet here, default 64 channels at
5 kHz in chunks of 5; ``closedloop run`` with the default protocol as a separate process) runs
for ``--duration`` seconds (default 30 minutes). The engine process's resident memory is sampled
four times a second (psutil); latency (push of the input chunk to receipt of its State sample)
is summarised per minute. Reported: memory growth after the first minute (the largest resident
size after minute one minus the size at minute one; target under 5 MB), dropped samples and gaps
(target 0), and the spread of the per-minute percentiles (flat is the target).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

DEFAULT_DURATION_S = 1800.0
#: Memory growth after the first minute the issue allows, in MB.
MEMORY_GROWTH_TARGET_MB = 5.0
#: The memory trace kept in the JSON: one point per this many seconds.
RSS_STEP_S = 5.0


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


def run_soak(settings: dict, *, progress: bool = True) -> dict:
    """Run the soak with ``settings`` and return its figures."""
    import numpy as np

    from closedloop.bench import common

    common.start_lsl()
    from closedloop.protocol import load_protocol

    load_protocol(settings["protocol"])
    bench_rt = common.bench_realtime(settings.get("realtime", False))
    n_ch, sfreq, cs, duration = settings["channels"], settings["sfreq"], settings["chunk_size"], settings["duration_s"]
    block, labels = common.amplifier_block(n_ch, sfreq, cs)
    amp_id = common.fresh_id("eeg")
    amp = common.Amplifier(block, labels, sfreq, cs, source_id=amp_id, name=amp_id,
                           capacity_s=duration + common.ENGINE_START_TIMEOUT_S + 30.0).start()
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-bench-soak-"))
    state_id, marker_id = common.fresh_id("state"), common.fresh_id("markers")
    summary_path = workdir / "summary.json"
    cmd = common.engine_command(source_id=amp_id, state_id=state_id, marker_id=marker_id,
                                protocol=settings["protocol"], duration_s=duration, summary_json=str(summary_path),
                                realtime=settings.get("realtime", False))
    capacity = int((duration + common.ENGINE_START_TIMEOUT_S) * sfreq / cs) + 1000
    try:
        run = common.run_live("soak", amp, cmd, state_id=state_id, marker_id=marker_id, duration_s=duration,
                              summary_json=summary_path, state_capacity=capacity, progress=progress)
    finally:
        amp_fig = common.amplifier_figures(amp)
        amp.close()

    m = common.match_states(run)
    t_first = run.states.received[0] if run.states.n else math.nan
    since = m["received"] - t_first
    per_minute = []
    for minute in range(math.ceil(duration / 60.0)):
        sel = (since >= minute * 60.0) & (since < (minute + 1) * 60.0)
        if minute == 0:
            sel &= since >= common.WARMUP_S
        per_minute.append({"minute": minute + 1, **common.summarize_ms(m["latency_s"][sel])})

    t = np.asarray(run.trace.time) - t_first
    rss_mb = np.asarray(run.trace.rss, dtype=float) / 2**20
    t_last = (run.states.received[run.states.n - 1] - t_first) if run.states.n else math.inf
    after = (t >= 60.0) & (t <= t_last)  # not the engine's exit, after its loop has ended
    if after.any():
        at_one_minute = float(rss_mb[after][0])
        growth = float(rss_mb[after].max() - at_one_minute)
        growth_end = float(rss_mb[after][-1] - at_one_minute)
    else:
        at_one_minute = growth = growth_end = math.nan
    trace = []
    next_t = -math.inf
    for ti, r in zip(t, rss_mb):
        if ti >= next_t:
            trace.append([round(float(ti), 2), round(float(r), 3)])
            next_t = ti + RSS_STEP_S
    full = [p for p in per_minute if p["n"]]
    s = run.summary or {}
    result = {
        "benchmark": "soak",
        "settings": dict(settings),
        "targets": {"memory_growth_mb": MEMORY_GROWTH_TARGET_MB, "dropped_samples": 0},
        "dropped_samples": s.get("dropped_samples"),
        "gaps": s.get("gaps"),
        "stalls": s.get("stalls"),
        "engine_samples": s.get("samples"),
        "triggers": s.get("triggers"),
        "triggers_dropped": s.get("triggers_dropped"),
        "rss_mb_at_1_min": at_one_minute,
        "memory_growth_mb": growth,
        "memory_growth_end_mb": growth_end,
        "rss_mb_trace": trace,
        "latency_ms": common.summarize_ms(m["latency_s"][since >= common.WARMUP_S]),
        "latency_per_minute_ms": per_minute,
        "p50_spread_ms": float(max(p["p50"] for p in full) - min(p["p50"] for p in full)) if full else math.nan,
        "p99_spread_ms": float(max(p["p99"] for p in full) - min(p["p99"] for p in full)) if full else math.nan,
        "cpu_percent_of_one_core": common.process_figures(run)["cpu_percent_of_one_core"],
        "state_samples": int(run.states.n),
        "amplifier": amp_fig,
        "realtime": {"engine": s.get("realtime", {"requested": False}), "bench": bench_rt},
        "machine": common.machine_info(),
    }
    return result


def print_result(result: dict) -> None:
    from closedloop.bench.common import fmt, machine_rows, print_table

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
    from closedloop.bench.common import positive, whole, write_json

    settings = {
        "duration_s": positive(args.duration, "--duration"),
        "channels": whole(args.channels, "--channels"),
        "sfreq": positive(args.sfreq, "--sfreq"),
        "chunk_size": whole(args.chunk_size, "--chunk-size"),
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
