"""A neurofeedback display of your own, reading the engine's State once per chunk.

    python examples/feedback_display.py [RECORDING] [--seconds 60]

Runs the frontal alpha asymmetry protocol (`faa-neurofeedback`): after the baseline, each State
carries the z-scored feedback value. This draws it as a bar in the terminal a few times a second;
a PsychoPy or pygame window would read the same `state.feedback`. (`closedloop run --ui` serves a
full-screen participant page of its own.)
"""

import argparse
import math
import threading
from pathlib import Path

from closedloop.lsl.config import use_loopback_config

use_loopback_config()  # this example's streams stay on this machine (before pylsl loads)

import closedloop as cl  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("recording", nargs="?", default=Path(__file__).parents[1] / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf")
parser.add_argument("--seconds", type=float, default=60.0)
args = parser.parse_args()

latest = {"value": math.nan, "n": 0}
lock = threading.Lock()


def on_state(state: cl.State) -> None:
    with lock:  # the callback thread writes, the display below reads
        latest["value"], latest["n"] = state.feedback, latest["n"] + 1


def draw(value: float) -> str:
    if not math.isfinite(value):
        return "baseline ..."
    width = int(round(max(-3.0, min(3.0, value)) / 3.0 * 20))
    return f"{value:+5.2f} |" + (" " * 20 + "#" * width if width >= 0 else " " * (20 + width) + "#" * -width)


protocol = cl.load_protocol("faa-neurofeedback")
with cl.Player(args.recording, source_id="example-amp", chunk_size=10):
    session = cl.Session(protocol, source_id="example-amp")
    session.on_state(on_state)
    session.start(duration_s=args.seconds)
    shown = []
    while session.wait(timeout=0.25) is None:
        with lock:
            value = latest["value"]
        shown.append(value)
        print(draw(value), flush=True)
    summary = session.wait()

finite = [v for v in shown if math.isfinite(v)]
print(f"{latest['n']} states, {len(finite)} feedback values shown; dropped {summary['callbacks']['state']['dropped']}")
