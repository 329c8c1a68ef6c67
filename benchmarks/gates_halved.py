"""Do the amplitude gates follow a rhythm that halves? Trigger rates per half of a recording.

    python benchmarks/gates_halved.py REC --protocol benchmarks/estimators_alpha_o2.toml
        [--gates "percentile:50,running:50@60,running:50@30,running:50@20,rate:60"] [--scale 0.5]

The recording is replayed through the engine twice per gate: as it is, and with everything from
its middle on multiplied by ``--scale``. Printed per gate: triggers per minute in the first half
(after the baseline) and in the second, and the second's share of the first. ``GATE@S`` sets
``gate_window_s`` to S. A fixed ``percentile`` gate collapses when the rhythm halves; a running
gate keeps the rate once its window has moved on (about half the window), and ``rate:N`` holds N
per minute of the time it could trigger in (artifact holds excluded).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from closedloop.io import open_recording
from closedloop.protocol import load_protocol
from closedloop.offline import replay


def half_rates(
    onsets: np.ndarray, start_s: float, mid_s: float, end_s: float
) -> tuple[float, float]:
    """Triggers per minute in ``[start_s, mid_s)`` and ``[mid_s, end_s)``."""
    first = np.sum((onsets >= start_s) & (onsets < mid_s)) / ((mid_s - start_s) / 60.0)
    second = np.sum((onsets >= mid_s) & (onsets < end_s)) / ((end_s - mid_s) / 60.0)
    return float(first), float(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording")
    parser.add_argument("--protocol", required=True)
    parser.add_argument(
        "--gates", default="percentile:50,running:50@60,running:50@30,running:50@20,rate:60"
    )
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    protocol = load_protocol(args.protocol)
    with open_recording(args.recording) as rec:
        data = rec.read(0, rec.n_samples)
        sfreq, names = rec.sfreq, list(rec.ch_names)
    mid = data.shape[1] // 2
    scaled = data.copy()
    scaled[:, mid:] *= args.scale
    span = (protocol.trigger.baseline_s, mid / sfreq, data.shape[1] / sfreq - 1.0)
    print(
        f"{args.recording}, {protocol.name}: triggers per minute per half, the second half "
        f"(from {mid / sfreq:.1f} s) as it is and x {args.scale:g}"
    )
    print(f"  {'gate':18s} {'as it is':>22s} {f'second half x {args.scale:g}':>28s}")
    for spec in args.gates.split(","):
        gate, _, window = spec.partition("@")
        trigger = dataclasses.replace(
            protocol.trigger,
            amplitude_gate=gate,
            gate_window_s=float(window or protocol.trigger.gate_window_s),
        )
        p = dataclasses.replace(protocol, trigger=trigger)
        cells = []
        for signal in (data, scaled):
            result = replay(signal, p, sfreq=sfreq, ch_names=names, units="uV", keep_state=False)
            first, second = half_rates(result.onsets_s, *span)
            cells.append(f"{first:6.1f} {second:6.1f} ({second / first:4.0%})")
        print(f"  {spec:18s} {cells[0]:>22s} {cells[1]:>28s}")


if __name__ == "__main__":
    main()
