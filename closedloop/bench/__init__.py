"""Benchmarks: latency, accuracy, throughput and soak (``closedloop bench ...``).

Each module measures and returns its figures as a dict; the command line's side (options,
tables) is in ``closedloop/commands/bench_*.py``. Nothing heavy is imported here, so that
``python -m closedloop.bench.latency`` (the mne-lsl worker) starts quickly and pylsl loads only
after the loopback configuration is set.
"""
