"""A live session that tells the experiment script the moment of each pulse.

    python examples/live_on_trigger.py [RECORDING] [--seconds 30]

A recording is played over LSL on this machine as a stand-in amplifier (`cl.Player`); with a real
amplifier, drop the player and give its `source_id`. `on_trigger` runs on a thread of its own:
a slow or failing callback never delays a trigger (the summary counts what it cost).
"""

import argparse
from pathlib import Path

from closedloop.lsl.config import use_loopback_config

use_loopback_config()  # this example's streams stay on this machine (before pylsl loads)

import closedloop as cl  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("recording", nargs="?", default=Path(__file__).parents[1] / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf")
parser.add_argument("--protocol", default="default")
parser.add_argument("--seconds", type=float, default=30.0)
args = parser.parse_args()

pulses = []


def on_trigger(trigger: cl.Trigger) -> None:
    # e.g. PsychoPy: log the pulse against the screen's clock, or show a stimulus
    pulses.append(trigger.time_s)
    print(f"pulse {trigger.seq}: at {trigger.time_s:.4f} s (LSL clock), estimated phase "
          f"{trigger.phase_deg:+.0f} deg, target {trigger.target_phase_deg:g} deg")


with cl.Player(args.recording, source_id="example-amp", chunk_size=5):
    with cl.Session(args.protocol, source_id="example-amp") as session:
        session.on_trigger(on_trigger)
        summary = session.run(duration_s=args.seconds)

print(f"{summary['triggers']} triggers, {len(pulses)} callbacks; loop latency p99 "
      f"{summary['latency_ms_p99']:.2f} ms; callbacks: {summary['callbacks']['trigger']}")
