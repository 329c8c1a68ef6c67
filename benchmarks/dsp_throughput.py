"""DSP front-end throughput (issue 3): closedloop stages against scipy.signal.sosfilt.

    python benchmarks/dsp_throughput.py [--duration 4] [--json]

64 channels at 5 kHz in chunks of 5 through average reference (all channels kept), decimation to 1 kHz, 50 Hz
notch + harmonics, 1-45 Hz band-pass and 8-13 Hz envelope (p99 per chunk, speed-up over
scipy), then 256 channels (share of one core), then 64 channels reduced to one Hjorth signal. Input: the 5 kHz NeurOne recording in
../shared/recordings when present (tiled to the channel count), else synthetic EEG.
BLAS is limited to one thread so that the figures are single-threaded.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

try:
    from closedloop.dsp import bench
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from closedloop.dsp import bench

RECORDING = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "recordings"
    / "mne-testing-data"
    / "Brainvision"
    / "test_NO.vhdr"
)


def load_recording() -> np.ndarray | None:
    """The 5 kHz NeurOne recording in µV, or None when the shared recordings are absent."""
    if not RECORDING.is_file():
        return None
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(RECORDING, preload=True, verbose="error")
    if raw.info["sfreq"] != 5000.0:
        return None
    return raw.get_data() * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of data per run")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    data = load_recording()
    source = "test_NO.vhdr (5 kHz, real)" if data is not None else "synthetic"
    r64 = bench.run(64, 5000.0, 5, 1000.0, args.duration, data=data)
    r256 = bench.run(256, 5000.0, 5, 1000.0, args.duration, data=data, compare_scipy=False)
    r1 = bench.run(64, 5000.0, 5, 1000.0, args.duration, data=data, reference="hjorth")
    if args.json:
        print(
            json.dumps({"source": source, "64ch": r64, "256ch": r256, "64ch_hjorth": r1}, indent=1)
        )
        return
    ours, theirs = r64["closedloop"], r64["scipy"]
    print(f"input: {source}; chain: {r64['chain']}")
    print(f"64 ch, 5 kHz, chunks of 5 ({r64['n_chunks']} chunks):")
    print(
        f"  closedloop  p50 {ours['p50_us']:7.1f} us  p99 {ours['p99_us']:7.1f} us"
        f"  mean {ours['mean_us']:7.1f} us  (target p99 <= 50 us)"
    )
    print(
        f"  scipy       p50 {theirs['p50_us']:7.1f} us  p99 {theirs['p99_us']:7.1f} us"
        f"  mean {theirs['mean_us']:7.1f} us"
    )
    print(
        f"  speed-up    {r64['speedup_mean']:.1f}x mean, {r64['speedup_p50']:.1f}x p50"
        f"  (target >= 5x); chains agree to {r64['max_abs_diff_uv']:.1e} uV"
    )
    h = r1["closedloop"]
    print(
        f"64 ch -> 1 Hjorth signal (the engine's usual load): p50 {h['p50_us']:.1f} us,"
        f" p99 {h['p99_us']:.1f} us; scipy p50 {r1['scipy']['p50_us']:.1f} us,"
        f" speed-up {r1['speedup_mean']:.1f}x mean"
    )
    c = r256["closedloop"]
    print(
        f"256 ch, 5 kHz: {100 * c['cpu_share']:.1f} % of one core (CPU time),"
        f" {100 * c['wall_share']:.1f} % wall; p99 {c['p99_us']:.1f} us (target < 25 %)"
    )


if __name__ == "__main__":
    main()
