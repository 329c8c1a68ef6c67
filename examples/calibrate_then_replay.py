"""Tune a protocol to one person's baseline, save it, and replay a session with it.

    python examples/calibrate_then_replay.py BASELINE [SESSION] [--protocol alpha-trough-o2] [--out tuned.toml]

`cl.calibrate` centres the band on the person's alpha peak and picks the estimator that tracks
their held-out baseline best; the tuned protocol is named after the baseline recording.
"""

import argparse
from pathlib import Path

import closedloop as cl
from closedloop.protocol import protocol_to_toml

here = Path(__file__).parents[1] / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("baseline", nargs="?", default=here)
parser.add_argument("session", nargs="?", default=None, help="default: the baseline itself")
parser.add_argument("--protocol", default="alpha-trough-o2")
parser.add_argument("--out", default="tuned.toml")
args = parser.parse_args()

tuned = cl.calibrate(args.baseline, args.protocol, methods=["wiener", "echt"])
Path(args.out).write_text(protocol_to_toml(tuned))
print(f"{tuned.name}: band {tuned.band.low_hz:g}-{tuned.band.high_hz:g} Hz, estimator {tuned.estimator.method}; wrote {args.out}")

before = cl.replay(args.session or args.baseline, args.protocol)
after = cl.replay(args.session or args.baseline, cl.load_protocol(args.out))
print(f"preset: {len(before.triggers)} triggers; tuned: {len(after.triggers)} triggers")
