"""``closedloop bench latency``: push-to-receipt latency of the live loop, measured from outside.

An amplifier outlet in this process pushes simulated EEG in real time (default 64 channels at
5 kHz in chunks of 5); ``closedloop run`` with the default phase protocol runs as a separate
process; inlets here receive its State and Markers streams. For every State sample, latency is
its receipt time here minus the push time of the input chunk holding the newest sample it reports
(matched by ``sample_ts``). Trigger delivery precision is each marker's LSL timestamp (the moment
of delivery) against the ``scheduled_ts`` in its JSON. Dropped samples come from the run's own
summary; CPU use is the engine process's user+system time over wall time (psutil).

``--compare mne-lsl`` then runs, against the same outlet, a pipeline built on mne-lsl's
``StreamLSL`` (``acquisition_delay=0.001``, ``filter(8, 13)``, ``get_data``, phase of the last
sample by the Hilbert transform of the latest window) in its own process, publishing a State
sample per new chunk, measured the same way. The worker is this module run as a script
(``python -m closedloop.bench.latency mne-lsl-worker ...``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

DEFAULT_CHANNELS = 64
DEFAULT_SFREQ = 5000.0
DEFAULT_CHUNK = 5
DEFAULT_DURATION_S = 30.0
#: Window the mne-lsl pipeline takes the Hilbert transform of.
MNE_LSL_WINDOW_S = 0.5
#: The targets of the live-loop issue, shown next to the figures.
TARGETS = {"latency_p50_ms": 0.35, "latency_p99_ms": 1.0, "delivery_p99_ms": 0.2, "cpu_percent": 50.0,
           "ratio_mne_lsl": 3.0, "monitor_p99_cost_ms": 0.1}


def run_latency(settings: dict, *, progress: bool = True) -> dict:
    """Run the benchmark with ``settings`` (see :func:`configure_parser`) and return its figures."""
    from closedloop.bench import common

    common.start_lsl()
    from closedloop.protocol import load_protocol

    protocol = load_protocol(settings["protocol"])  # a bad protocol fails here, not in the child
    realtime = bool(settings.get("realtime", False))
    bench_rt = common.bench_realtime(realtime)
    n_ch, sfreq, cs, duration = settings["channels"], settings["sfreq"], settings["chunk_size"], settings["duration_s"]
    n_runs = 2 if settings["compare"] else 1
    block, labels = common.amplifier_block(n_ch, sfreq, cs)
    amp_id = common.fresh_id("eeg")
    amp = common.Amplifier(
        block, labels, sfreq, cs, source_id=amp_id, name=amp_id,
        capacity_s=n_runs * (duration + common.ENGINE_START_TIMEOUT_S + 30.0), stamping=settings["stamping"],
    ).start()
    state_capacity = int((duration + common.ENGINE_START_TIMEOUT_S) * sfreq / cs) + 1000
    workdir = Path(tempfile.mkdtemp(prefix="closedloop-bench-latency-"))
    result: dict = {"benchmark": "latency", "settings": dict(settings), "targets": TARGETS}
    try:
        state_id, marker_id = common.fresh_id("state"), common.fresh_id("markers")
        summary_path = workdir / "summary.json"
        cmd = common.engine_command(
            source_id=amp_id, state_id=state_id, marker_id=marker_id, protocol=settings["protocol"],
            duration_s=duration, summary_json=str(summary_path), monitor=settings["monitor"],
            realtime=realtime,
        )
        run = common.run_live("closedloop", amp, cmd, state_id=state_id, marker_id=marker_id,
                              duration_s=duration, summary_json=summary_path,
                              state_capacity=state_capacity, progress=progress)
        result["closedloop"] = _closedloop_figures(run)
        result["realtime"] = {"engine": (run.summary or {}).get("realtime", {"requested": False}), "bench": bench_rt}
        if settings["compare"] == "mne-lsl":
            channel = protocol.signal.channel
            mne_id = common.fresh_id("mne-lsl-state")
            cmd = [sys.executable, "-m", "closedloop.bench.latency", "mne-lsl-worker", "--source-id", amp_id,
                   "--state-source-id", mne_id, "--channel", channel,
                   "--band", str(protocol.band.low_hz), str(protocol.band.high_hz),
                   "--duration", f"{duration:g}"] + (["--realtime"] if realtime else [])
            # mne-lsl ships its own liblsl (1.17); it is pointed at pylsl's, so that both pipelines
            # use the same transport (and resolve each other reliably)
            import pylsl

            lib = getattr(getattr(pylsl.lib, "lib", None), "_name", None)
            env = {"MNE_LSL_LIB": lib} if lib and Path(lib).exists() else None
            mrun = common.run_live("mne-lsl", amp, cmd, state_id=mne_id, marker_id=None,
                                   duration_s=duration, summary_json=None,
                                   state_capacity=state_capacity, progress=progress, extra_env=env)
            figures = common.state_figures(mrun)
            figures.update(common.process_figures(mrun))
            figures["liblsl"] = lib if env else "mne-lsl's own"
            figures["pipeline"] = (f"mne_lsl.stream.StreamLSL(bufsize=2).connect(acquisition_delay=0.001); "
                                   f"filter({protocol.band.low_hz:g}, {protocol.band.high_hz:g}, picks={channel!r}); "
                                   f"get_data({MNE_LSL_WINDOW_S:g} s, picks={channel!r}); Hilbert phase of the last sample")
            result["mne_lsl"] = figures
            ours = result["closedloop"]["latency_ms"]
            theirs = figures["latency_ms"]
            result["ratio_p50_mne_lsl_over_closedloop"] = theirs["p50"] / ours["p50"] if ours["p50"] > 0 else math.nan
            result["ratio_p99_mne_lsl_over_closedloop"] = theirs["p99"] / ours["p99"] if ours["p99"] > 0 else math.nan
    finally:
        amp_figures = common.amplifier_figures(amp)
        amp.close()
    result["amplifier"] = amp_figures
    result["machine"] = common.machine_info()
    return result


def _closedloop_figures(run) -> dict:
    from closedloop.bench import common

    figures = common.state_figures(run)
    figures.update(common.marker_figures(run))
    figures.update(common.process_figures(run))
    s = run.summary or {}
    figures["engine_summary"] = {
        key: s.get(key) for key in ("samples", "chunks", "dropped_samples", "gaps", "stalls", "triggers",
                                    "triggers_dropped", "dropped_by_reason", "latency_ms_p50", "latency_ms_p99",
                                    "delivery_error_ms_p50", "delivery_error_ms_p99", "end_reason")
    }
    figures["dropped_samples"] = s.get("dropped_samples")
    figures["gaps"] = s.get("gaps")
    figures["triggers"] = s.get("triggers")
    return figures


# ---------------------------------------------------------------------- the mne-lsl worker
def mne_lsl_worker(source_id: str, state_source_id: str, channel: str, band: tuple[float, float],
                   duration_s: float) -> int:
    """The comparison pipeline: mne-lsl acquisition and filtering, a State sample per new chunk."""
    import time

    import numpy as np
    import pylsl
    from mne_lsl.stream import StreamLSL
    from scipy.signal import hilbert

    from closedloop.channels import find_channel

    stream = StreamLSL(bufsize=2.0, source_id=source_id)
    deadline = time.monotonic() + 30.0
    while True:  # resolution on a busy machine can miss a round; the outlet is known to exist
        try:
            stream.connect(acquisition_delay=0.001, timeout=5)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    pick = stream.ch_names[find_channel(channel, stream.ch_names)]
    stream.filter(band[0], band[1], picks=pick)
    info = pylsl.StreamInfo(state_source_id, "ClosedLoopState", 5, pylsl.IRREGULAR_RATE, "double64",
                            state_source_id)
    outlet = pylsl.StreamOutlet(info)
    while stream.n_new_samples == 0:  # the buffer fills before the first window
        time.sleep(0.01)
    time.sleep(MNE_LSL_WINDOW_S)
    clock = pylsl.local_clock
    deadline = clock() + duration_s
    row = [0.0] * 5
    while clock() < deadline:
        if stream.n_new_samples == 0:
            time.sleep(0.0001)
            continue
        data, ts = stream.get_data(winsize=MNE_LSL_WINDOW_S, picks=pick)
        analytic = hilbert(data[0])
        row[0] = float(ts[-1])
        row[1] = float(np.degrees(np.angle(analytic[-1])))
        row[2] = float(np.abs(analytic[-1]) * 1e6)
        row[3] = math.nan
        row[4] = 1.0
        outlet.push_sample(row, clock())
    del outlet
    stream.disconnect()
    return 0


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m closedloop.bench.latency")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("mne-lsl-worker")
    w.add_argument("--source-id", required=True)
    w.add_argument("--state-source-id", required=True)
    w.add_argument("--channel", required=True)
    w.add_argument("--band", type=float, nargs=2, required=True)
    w.add_argument("--duration", type=float, required=True)
    w.add_argument("--realtime", action="store_true")
    args = p.parse_args(argv)
    if args.realtime:  # the same scheduling as the engine it is compared with
        from closedloop import realtime

        realtime.request()
    import mne

    mne.set_log_level("ERROR")
    return mne_lsl_worker(args.source_id, args.state_source_id, args.channel, tuple(args.band), args.duration)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
