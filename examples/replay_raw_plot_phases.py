"""Replay an MNE Raw through the engine and plot where its triggers fell on the true phase.

    python examples/replay_raw_plot_phases.py RECORDING [--protocol alpha-trough-o2] [--out phases.png]

The true phase comes from the offline ground truth (zero-phase band-pass + Hilbert of the whole
recording), the same as `closedloop bench accuracy` uses.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mne
import numpy as np

import closedloop as cl
from closedloop.angles import wrap_deg
from closedloop.groundtruth import GroundTruth, circular_stats, derived_signal

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("recording", nargs="?", default=Path(__file__).parents[1] / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf")
parser.add_argument("--protocol", default="alpha-trough-o2")
parser.add_argument("--out", default="phases.png")
args = parser.parse_args()

raw = mne.io.read_raw(args.recording, preload=True, verbose="error")  # in volts, as MNE holds it
protocol = cl.load_protocol(args.protocol)
result = cl.replay(raw, protocol)  # the same triggers as `closedloop replay`
print(result)

# the truth on the same derived signal, in the band the engine actually used (learnt if individual)
data_uv = raw.get_data() * 1e6
band = tuple(result.summary["band_hz"])
truth = GroundTruth(derived_signal(data_uv, raw.ch_names, protocol), raw.info["sfreq"], band)
onsets = result.onsets_s[truth.covers(result.onsets_s)]
errors = wrap_deg(truth.phase_at(onsets) - protocol.trigger.target_phase_deg)
stats = circular_stats(errors)
print(f"{stats.n} triggers: circular mean error {stats.mean_deg:+.1f} deg, circular SD {stats.sd_deg:.1f} deg")

fig = plt.figure(figsize=(4, 4))
ax = fig.add_subplot(projection="polar")
ax.hist(np.radians(truth.phase_at(onsets)), bins=36, color="tab:blue")
ax.axvline(np.radians(protocol.trigger.target_phase_deg), color="tab:red", label="target")
ax.set_title(f"{protocol.name}: true phase at each trigger")
ax.set_theta_zero_location("N")
fig.savefig(args.out, dpi=100, bbox_inches="tight")
print(f"wrote {args.out}")
