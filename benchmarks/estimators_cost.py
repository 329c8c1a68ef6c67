"""Microseconds per update of every estimator, one sample per update, at a given rate.

    python benchmarks/estimators_cost.py [--sfreq 1000] [--seconds 5]

The signal is a 10 Hz rhythm in noise; each estimator is fitted on 30 s first. Prints one
line per estimator: mean and 99th percentile of the time per ``process`` of one sample plus
one ``next_crossing_s`` query (what the engine does per sample at chunk size 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from closedloop.estimators import available_methods, make_estimator


def measure(method: str, sfreq: float, seconds: float) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    n_base = int(30 * sfreq)
    n = n_base + int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = 10 * np.cos(2 * np.pi * 10 * t) + np.cumsum(rng.normal(0, 1, n)) * 0.1 + rng.normal(0, 3, n)
    est = make_estimator(method, sfreq, (8.0, 13.0))
    est.fit(x[:n_base])
    est.process(x[:n_base])
    times = np.empty(n - n_base)
    clock = time.perf_counter
    for i in range(n_base, n):
        t0 = clock()
        est.process(x[i : i + 1])
        est.next_crossing_s(180.0)
        times[i - n_base] = clock() - t0
    return 1e6 * float(np.mean(times)), 1e6 * float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sfreq", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"{'method':8s} {'mean us':>8s} {'p99 us':>8s}   (per sample at {args.sfreq:g} Hz)")
    for method in available_methods()[1:]:
        mean, p99 = measure(method, args.sfreq, args.seconds)
        print(f"{method:8s} {mean:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
