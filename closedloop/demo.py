"""The whole loop, once, on the recording that ships in ``recordings/`` (``closedloop demo``).

It plays the recording over LSL on loopback (a private liblsl configuration, so nothing leaves
this machine), runs the default phase protocol live against it with the real live loop, and
measures in this run: samples received and dropped, triggers, loop latency, and the phase of the
delivered triggers against the offline ground truth.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np

from closedloop.errors import DataError

__all__ = ["format_summary", "run_demo", "shipped_recording"]

logger = logging.getLogger("closedloop.demo")

SHIPPED = "simulated-alpha-eeg_32ch_500hz_seed1"


def shipped_recording() -> Path:
    """The simulated recording in the repository's ``recordings/`` folder."""
    here = Path(__file__).resolve().parent
    folder = here.parent / "recordings"
    found = sorted(folder.glob(f"{SHIPPED}.*")) if folder.is_dir() else []
    found = [f for f in found if f.suffix.lower() not in (".md", ".txt")]
    if found:
        return found[0]
    raise DataError(
        f"the shipped recording {SHIPPED}.* is not in {folder}; "
        "run the demo from a checkout (pip install -e .) or pass --recording FILE."
    )


def run_demo(
    recording: str | Path | None = None,
    protocol="default",
    *,
    duration_s: float = 20.0,
    chunk_size: int = 5,
    seed: int = 0,
) -> dict:
    """Play ``recording`` over loopback LSL, run ``protocol`` live against it; the figures.

    Call :func:`closedloop.lsl.config.use_loopback_config` before anything loads pylsl to keep
    the streams on this machine (the command does).
    """
    from closedloop.groundtruth import GroundTruth, circular_stats, derived_signal
    from closedloop.io import open_recording
    from closedloop.play import Player
    from closedloop.protocol import Protocol, load_protocol
    from closedloop.session import Session

    path = Path(recording) if recording else shipped_recording()
    protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    with open_recording(path) as rec:
        n_play = min(rec.n_samples, int(round((duration_s + 5.0) * rec.sfreq)))
        data = rec.read(0, n_play)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)

    tag = uuid.uuid4().hex[:8]
    player = Player(
        data, sfreq, ch_names,
        name=f"closedloop-demo-eeg-{tag}", source_id=f"closedloop-demo-{tag}", chunk_size=chunk_size,
    )
    logger.info(
        "playing %s (%d ch, %g Hz) over LSL on loopback; protocol %r, %g s ...",
        path.name, len(ch_names), sfreq, protocol.name, duration_s,
    )
    delivered = []
    with player:
        session = Session(
            protocol, source_id=f"closedloop-demo-{tag}", duration=duration_s, seed=seed,
            marker_name=f"closedloop-demo-markers-{tag}", marker_source_id=f"closedloop-demo-markers-{tag}",
            state_name=f"closedloop-demo-state-{tag}", state_source_id=f"closedloop-demo-state-{tag}",
        )
        session.on_trigger(delivered.append)
        summary = session.run()
        t0 = player.t0
        n_sent = int(player.n_pushed)

    onsets = np.array([t.time_s - t0 for t in delivered])
    targets = np.array([t.target_phase_deg for t in delivered])
    band_hz = tuple(summary["engine"]["band_hz"])
    truth = GroundTruth(derived_signal(data, ch_names, protocol), sfreq, band_hz)
    inside = truth.covers(onsets)
    stats = circular_stats(truth.phase_at(onsets[inside]) - targets[inside])
    return {
        "recording": str(path),
        "protocol": protocol.name,
        "duration_s": duration_s,
        "samples_received": summary["samples"],
        "samples_sent": n_sent,
        "samples_dropped": summary["dropped_samples"],
        "triggers": summary["triggers"],
        "triggers_dropped": summary["triggers_dropped"],
        "latency_ms_p50": summary["latency_ms_p50"],
        "latency_ms_p99": summary["latency_ms_p99"],
        "delivery_error_ms_p99": summary["delivery_error_ms_p99"],
        "phase_error_mean_deg": stats.mean_deg,
        "phase_error_sd_deg": stats.sd_deg,
        "plv": stats.plv,
        "within_45": stats.within_45,
        "estimator": summary["engine"]["estimator"],
        "target_phase_deg": protocol.trigger.target_phase_deg,
    }


def format_summary(s: dict) -> str:
    """The demo's figures as the lines ``closedloop demo`` prints."""
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
