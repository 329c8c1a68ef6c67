"""``closedloop demo``: the whole loop, once, on the recording that ships in ``recordings/``.

It plays the recording over LSL on loopback (a private liblsl configuration, so nothing leaves
this machine), runs the default phase protocol live against it with the real live loop, and
prints figures measured in this run: samples received and dropped, triggers, loop latency, and
the phase of the delivered triggers against the offline ground truth.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import numpy as np

from closedloop.errors import DataError

SHIPPED = "simulated-alpha-eeg_32ch_500hz_seed1"


def shipped_recording() -> Path:
    """The simulated recording in the repository's ``recordings/`` folder."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "recordings", here / "data"):
        found = sorted(folder.glob(f"{SHIPPED}.*")) if folder.is_dir() else []
        found = [f for f in found if f.suffix.lower() not in (".md", ".txt")]
        if found:
            return found[0]
    raise DataError(
        f"the shipped recording {SHIPPED}.* is not in {here.parent / 'recordings'}; "
        "run the demo from a checkout (pip install -e .) or pass --recording FILE."
    )


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

    from closedloop.evaluation import accuracy, derived_signal, phase_errors
    from closedloop.io import open_recording
    from closedloop.live import LiveSession
    from closedloop.lsl.outputs import EngineOutlets
    from closedloop.lsl.source import LSLSource, resolve_stream
    from closedloop.play import Player
    from closedloop.protocol import load_protocol

    path = Path(args.recording) if args.recording else shipped_recording()
    protocol = load_protocol(args.protocol)
    with open_recording(path) as rec:
        n_play = min(rec.n_samples, int(round((args.duration + 5.0) * rec.sfreq)))
        data = rec.read(0, n_play)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)

    tag = uuid.uuid4().hex[:8]
    player = Player(
        data, sfreq, ch_names,
        name=f"closedloop-demo-eeg-{tag}", source_id=f"closedloop-demo-{tag}",
        chunk_size=args.chunk_size,
    )
    print(f"demo: playing {path.name} ({len(ch_names)} ch, {sfreq:g} Hz) over LSL on loopback; "
          f"protocol {protocol.name!r}, {args.duration:g} s ...", file=sys.stderr)
    player.start()
    source = outlets = None
    try:
        info = resolve_stream(source_id=f"closedloop-demo-{tag}", timeout=10.0)
        source = LSLSource(info)
        outlets = EngineOutlets(
            protocol.name,
            marker_name=f"closedloop-demo-markers-{tag}", marker_source_id=f"closedloop-demo-markers-{tag}",
            state_name=f"closedloop-demo-state-{tag}", state_source_id=f"closedloop-demo-state-{tag}",
        )
        session = LiveSession(protocol, source, outlets, duration_s=args.duration, seed=args.seed)
        session.install_signal_handlers()
        summary = session.run()
        t0 = player.t0
    finally:
        if source is not None:
            source.close()
        player.stop()
        if outlets is not None:
            outlets.close()

    log = session.stats.marker_log
    onsets = np.array([m["time"] - t0 for m in log])
    targets = np.array([m["target_phase_deg"] for m in log])
    derived = derived_signal(data, ch_names, protocol)
    _, errors = phase_errors(derived, sfreq, session.engine.band_hz, onsets, targets)
    acc = accuracy(errors)
    received = summary["samples"]
    out = {
        "recording": str(path),
        "protocol": protocol.name,
        "duration_s": args.duration,
        "samples_received": received,
        "samples_sent": int(player.n_pushed),
        "samples_dropped": summary["dropped_samples"],
        "triggers": summary["triggers"],
        "triggers_dropped": summary["triggers_dropped"],
        "latency_ms_p50": summary["latency_ms_p50"],
        "latency_ms_p99": summary["latency_ms_p99"],
        "delivery_error_ms_p99": summary["delivery_error_ms_p99"],
        "phase_error_mean_deg": acc["mean_deg"],
        "phase_error_sd_deg": acc["sd_deg"],
        "plv": acc["plv"],
        "within_45": acc["within_45"],
        "estimator": summary["engine"]["estimator"],
        "target_phase_deg": protocol.trigger.target_phase_deg,
    }
    print(format_summary(out))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def format_summary(s: dict) -> str:
    def f(value, spec=".2f"):
        return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)

    lines = [
        "closedloop demo: summary (measured in this run)",
        f"  recording         {Path(s['recording']).name}",
        f"  protocol          {s['protocol']} (estimator {s['estimator']}, target {s['target_phase_deg']:g} deg)",
        f"  samples           {s['samples_received']} received, {s['samples_dropped']} dropped",
        f"  triggers          {s['triggers']} delivered, {s['triggers_dropped']} dropped",
        f"  loop latency      p50 {f(s['latency_ms_p50'], '.3f')} ms, p99 {f(s['latency_ms_p99'], '.3f')} ms "
        "(newest sample -> State pushed)",
        f"  delivery timing   p99 {f(s['delivery_error_ms_p99'], '.3f')} ms from the scheduled time",
        f"  phase vs truth    mean error {f(s['phase_error_mean_deg'], '+.1f')} deg, circular SD "
        f"{f(s['phase_error_sd_deg'], '.1f')} deg, PLV {f(s['plv'], '.2f')}, "
        f"{f(100 * s['within_45'] if s['within_45'] == s['within_45'] else float('nan'), '.0f')}% within +/-45 deg",
    ]
    return "\n".join(lines)
