"""``closedloop bench throughput``: how many channels the live loop sustains, and replay speed.

Live: for each rate (default 5 kHz and 1 kHz) an amplifier outlet in this process pushes
simulated EEG with N channels while ``closedloop run`` (separate process) runs the protocol on it.
A trial passes when the engine reports no dropped samples and no gaps, its latency does not grow
(median of the last quarter of the trial within ``LAG_GROWTH_MS`` of the first quarter) and stays
low (median of the last quarter under ``LAG_MAX_MS``), and the amplifier kept its pace. N doubles from 64 until a trial fails, then bisects between the last
pass and the first failure with short trials; the largest passing N is confirmed with one trial
of ``--duration`` seconds (default 30). The trials use the protocol with a short baseline (2 s)
so that most of each trial runs the full triggering pipeline (5 s: the
slowest estimator needs 4 s of baseline).

Replay: the engine offline (``closedloop.offline.run_engine``) on simulated 64-channel 1 kHz EEG
looped to ``--replay-seconds`` of data, chunks of 10 ms; speed as a multiple of real time.
The DSP front end figures of ``closedloop.dsp.bench.run`` are included when it is importable.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from pathlib import Path

#: A trial fails when latency grows by more than this between its first and last quarter ...
LAG_GROWTH_MS = 2.0
#: ... or when the median latency of its last quarter is above this (a backlog being worked off).
LAG_MAX_MS = 20.0
#: ... or when the amplifier thread itself fell behind its schedule by this much (median).
AMP_LATE_MS = 2.0
#: Baseline of the trial protocol, seconds.
TRIAL_BASELINE_S = 5.0

logger = logging.getLogger("closedloop.bench")


def trial_protocol(spec: str, folder: Path, baseline_s: float = TRIAL_BASELINE_S) -> str:
    """A copy of protocol ``spec`` with a short baseline, written to ``folder``; returns its path."""
    from closedloop.protocol import load_protocol, protocol_to_toml

    text = protocol_to_toml(load_protocol(spec))
    text = re.sub(r"(?m)^baseline_s\s*=.*$", f"baseline_s = {baseline_s:g}", text)
    path = folder / "trial-protocol.toml"
    path.write_text(text)
    load_protocol(str(path))
    return str(path)


def live_trial(n_channels: int, sfreq: float, chunk_size: int, seconds: float, protocol_path: str,
               base, *, progress: bool = False) -> dict:
    """One live run with ``n_channels``; returns its figures and whether it passed."""
    import numpy as np

    from closedloop.bench import common

    block, labels = common.amplifier_block(n_channels, sfreq, chunk_size, base=base)
    amp_id = common.fresh_id("eeg")
    amp = common.Amplifier(block, labels, sfreq, chunk_size, source_id=amp_id, name=amp_id,
                           capacity_s=seconds + common.ENGINE_START_TIMEOUT_S + 20.0).start()
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-bench-tp-"))
    state_id, marker_id = common.fresh_id("state"), common.fresh_id("markers")
    summary_path = workdir / "summary.json"
    cmd = common.engine_command(source_id=amp_id, state_id=state_id, marker_id=marker_id,
                                protocol=protocol_path, duration_s=seconds, summary_json=str(summary_path))
    capacity = int((seconds + common.ENGINE_START_TIMEOUT_S) * sfreq / chunk_size) + 1000
    error = None
    run = None
    try:
        run = common.run_live(f"{n_channels} ch @ {sfreq:g} Hz", amp, cmd, state_id=state_id, marker_id=marker_id,
                              duration_s=seconds, summary_json=summary_path, state_capacity=capacity,
                              progress=progress)
    except common.EngineStartError:
        raise  # bad settings, not load: searching further would not help
    except Exception as exc:  # noqa: BLE001 -- a run that breaks down under load is "not sustained"
        error = str(exc)
    finally:
        amp_fig = common.amplifier_figures(amp)
        amp.close()
    out: dict = {"channels": n_channels, "sfreq": sfreq, "seconds": seconds, "amplifier": amp_fig}
    if run is None:
        out.update(passed=False, reason=f"the run failed: {error}")
        return out
    m = common.match_states(run)
    keep = m["received"] >= (m["received"][0] + common.WARMUP_S) if m["received"].size else np.zeros(0, bool)
    lat = m["latency_s"][keep]
    quarter = max(1, lat.size // 4)
    growth = float(np.median(lat[-quarter:]) - np.median(lat[:quarter])) * 1e3 if lat.size >= 8 else math.nan
    final = float(np.median(lat[-quarter:])) * 1e3 if lat.size >= 8 else math.nan
    s = run.summary or {}
    out.update(
        latency_ms=common.summarize_ms(lat),
        lag_growth_ms=growth,
        final_latency_ms=final,
        dropped_samples=s.get("dropped_samples"),
        gaps=s.get("gaps"),
        engine_samples=s.get("samples"),
        **common.process_figures(run),
    )
    reasons = []
    if s.get("dropped_samples") or s.get("gaps"):
        reasons.append(f"{s.get('dropped_samples')} samples dropped in {s.get('gaps')} gaps")
    if not math.isfinite(growth):
        reasons.append("too few State samples to judge the lag")
    elif growth > LAG_GROWTH_MS:
        reasons.append(f"latency grew by {growth:.1f} ms")
    elif final > LAG_MAX_MS:
        reasons.append(f"latency at the end was {final:.0f} ms (a backlog)")
    if amp_fig["push_lateness_ms"]["p50"] > AMP_LATE_MS:
        reasons.append("the amplifier outlet in this process could not keep its pace")
    out["passed"] = not reasons
    out["reason"] = "; ".join(reasons)
    return out


def search_channels(sfreq: float, settings: dict, protocol_path: str, *, progress: bool, log) -> dict:
    """Double, then bisect, then confirm: the largest channel count sustained at ``sfreq``."""
    from closedloop.bench import common

    base = common.simulated_base(sfreq)
    trials: list[dict] = []

    def attempt(n: int, seconds: float) -> bool:
        t = live_trial(n, sfreq, settings["chunk_size"], seconds, protocol_path, base, progress=False)
        trials.append(t)
        log(f"  {sfreq:g} Hz, {n} ch, {seconds:g} s: {'sustained' if t['passed'] else 'not sustained: ' + t['reason']}")
        return t["passed"]

    lo, hi = 0, None
    n = settings["start_channels"]
    while n <= settings["max_channels"]:
        if attempt(n, settings["trial_s"]):
            lo = n
            n *= 2
        else:
            hi = n
            break
    if hi is None and lo < settings["max_channels"] and lo > 0:
        if attempt(settings["max_channels"], settings["trial_s"]):
            lo = settings["max_channels"]
        else:
            hi = settings["max_channels"]
    if hi is None and lo == 0:
        hi = settings["start_channels"]
    while hi is not None and hi - lo > max(8, lo // 8):
        mid = (lo + hi) // 2
        if attempt(mid, settings["trial_s"]):
            lo = mid
        else:
            hi = mid
    confirmed = None
    if lo > 0:
        confirmed = attempt(lo, settings["duration_s"])
        if not confirmed:
            lo = int(lo * 0.85)
            confirmed = attempt(lo, settings["duration_s"]) if lo > 0 else False
    return {
        "sfreq": sfreq,
        "max_channels_sustained": lo,
        "first_failing_channels": hi,
        "capped_at_max": hi is None,
        "confirmed_for_s": settings["duration_s"] if confirmed else None,
        "trials": trials,
    }


def replay_speed(seconds: float, *, n_channels: int = 64, sfreq: float = 1000.0, protocol: str = "default") -> dict:
    """The offline engine on looped simulated EEG: data seconds per wall second (the engine
    given only the channels it uses, as replay reads them from a file)."""
    import numpy as np

    from closedloop.bench.common import simulated_base
    from closedloop.engine import Engine
    from closedloop.offline import default_chunk_size, run_engine
    from closedloop.protocol import load_protocol

    chunk = default_chunk_size(sfreq)
    data, names = simulated_base(sfreq, 60.0, n_channels)
    n_loop = data.shape[1] - data.shape[1] % chunk
    total = round(seconds * sfreq)
    total -= total % chunk

    # as replay reads a recording: the engine takes only the channels it uses
    engine = Engine(load_protocol(protocol), names, sfreq, seed=0, compact_input=True)
    data = np.ascontiguousarray(data[engine.input_rows])

    def chunks():
        for start in range(0, total, chunk):
            pos = start % n_loop
            yield start, np.ascontiguousarray(data[:, pos : pos + chunk])

    cpu0 = time.process_time()
    result = run_engine(engine, chunks(), chunk_size=chunk, keep_state=False)
    cpu_s = time.process_time() - cpu0  # this process's CPU: steadier than wall on a shared machine
    return {
        "channels": n_channels,
        "sfreq": sfreq,
        "chunk_size": chunk,
        "data_seconds": total / sfreq,
        "wall_s": result.wall_s,
        "speed_x_realtime": result.speed_x,
        "cpu_s": cpu_s,
        "speed_x_cpu": total / sfreq / cpu_s if cpu_s > 0 else None,
        "triggers": len(result.triggers),
    }


def dsp_figures() -> dict | None:
    try:
        from closedloop.dsp import bench as dsp_bench
    except ImportError:
        return None
    return dsp_bench.run(n_channels=64, sfreq=5000.0, chunk_size=5, duration_s=2.0)


def run_throughput(settings: dict, *, progress: bool = True, log=None) -> dict:
    """Run the benchmark with ``settings`` and return its figures (``log(text)`` for progress lines)."""
    log = log or logger.info
    from closedloop.bench import common

    common.start_lsl()
    result: dict = {"benchmark": "throughput", "settings": dict(settings),
                    "criteria": {"lag_growth_ms_max": LAG_GROWTH_MS, "final_latency_ms_max": LAG_MAX_MS, "dropped_samples": 0,
                                 "trial_baseline_s": TRIAL_BASELINE_S}}
    if settings["live"]:
        folder = Path(tempfile.mkdtemp(prefix="closedloop-bench-tp-"))
        protocol_path = trial_protocol(settings["protocol"], folder)
        result["live"] = [search_channels(rate, settings, protocol_path, progress=progress, log=log)
                          for rate in settings["rates"]]
    t0 = time.perf_counter()
    result["replay"] = replay_speed(settings["replay_seconds"], protocol=settings["protocol"])
    log(f"  replay: {result['replay']['speed_x_realtime']:.0f}x real time "
        f"({time.perf_counter() - t0:.1f} s)")
    if settings["dsp"]:
        result["dsp"] = dsp_figures()
    result["machine"] = common.machine_info()
    return result
