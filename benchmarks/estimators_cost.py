"""Microseconds per update of every estimator, one sample per update, at a given rate.

    python benchmarks/estimators_cost.py [--sfreq 1000] [--seconds 5]

The signal is a 10 Hz rhythm in noise; each estimator is fitted on 30 s first. Prints one
line per estimator: mean and 99th percentile of the time per ``process`` of one sample plus
one ``window_crossing`` query for the planning window of that sample (what the engine does per
sample at chunk size 1: ``[L, L + 1 / sfreq]`` after it, ``L`` the decision latency), and the
mean time of one query for a 20 ms window (what it asks once per chunk of 20 ms).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from closedloop.engine import DECISION_LATENCY_S
from closedloop.estimators import available_methods, make_estimator

CHUNK_S = 0.020


def measure(method: str, sfreq: float, seconds: float) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    n_base = int(30 * sfreq)
    n = n_base + int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = 10 * np.cos(2 * np.pi * 10 * t) + np.cumsum(rng.normal(0, 1, n)) * 0.1 + rng.normal(0, 3, n)
    est = make_estimator(method, sfreq, (8.0, 13.0))
    est.fit(x[:n_base])
    est.process(x[:n_base])
    times = np.empty(n - n_base)
    chunk_queries = np.empty(n - n_base)
    clock = time.perf_counter
    start, end = DECISION_LATENCY_S, DECISION_LATENCY_S + 1.0 / sfreq
    for i in range(n_base, n):
        t0 = clock()
        est.process(x[i : i + 1])
        est.window_crossing(180.0, start, end)
        t1 = clock()
        est.window_crossing(180.0, start, start + CHUNK_S)
        chunk_queries[i - n_base] = clock() - t1
        times[i - n_base] = t1 - t0
    return (
        1e6 * float(np.mean(times)),
        1e6 * float(np.percentile(times, 99)),
        1e6 * float(np.mean(chunk_queries)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sfreq", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(
        f"{'method':8s} {'mean us':>8s} {'p99 us':>8s} {'20 ms query us':>15s}"
        f"   (per sample at {args.sfreq:g} Hz)"
    )
    for method in available_methods()[1:]:
        mean, p99, query = measure(method, args.sfreq, args.seconds)
        print(f"{method:8s} {mean:8.1f} {p99:8.1f} {query:15.1f}")


if __name__ == "__main__":
    main()
