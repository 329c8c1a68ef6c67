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

import math
import tempfile
from pathlib import Path

DEFAULT_DURATION_S = 1800.0
#: Memory growth after the first minute the issue allows, in MB.
MEMORY_GROWTH_TARGET_MB = 5.0
#: The memory trace kept in the JSON: one point per this many seconds.
RSS_STEP_S = 5.0


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
