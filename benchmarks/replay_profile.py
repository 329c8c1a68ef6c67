"""Where replay's time goes: the estimator's kernel, its fit, reading, and the engine around them.

Replays a recording as ``closedloop replay`` does (``Recording.iter_chunks`` of the channels
the engine uses into ``run_engine``) and times, inside the same run, with ``time.perf_counter``:

* the estimator's per-chunk ``process`` and, within it, the compiled kernels it calls
  (every function of ``closedloop.estimators.kernels``, as the estimators look them up there,
  and the ``run``/``step`` of its kernel objects, such as ``WienerKernel``: ``step`` includes
  the answers at the newest sample);
* the estimator's ``next_crossing_s`` (the planner's query);
* the fit on the baseline (``fit_estimator``: training, calibration pass, warm-up), which replay
  runs in line, once per recording;
* reading alone (a separate pass over the file, the same chunks);
* the rest: the engine's units (continuity, artifacts, signal chain, gate, planning) and
  replay's loop.

The wrappers cost about 0.1 us a call, charged to the part they wrap. On a shared machine take
the best of several rounds (``--rounds``): the wall clock of a busy machine inflates every part.

Usage::

    python benchmarks/replay_profile.py sim20.edf --protocol mu-trough-c3 --rounds 3
    closedloop simulate sim20.edf --seconds 1200 --sfreq 1000 --channels 64   # where the file can be made at once

Run from the project root with the package importable (``pip install -e .`` or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def profile_once(path: str, protocol: str, chunk_size: int | None) -> dict:
    """One replay of ``path`` with the parts timed; seconds per part."""
    import closedloop as cl
    from closedloop.engine import Engine
    from closedloop.engine import core as engine_core
    from closedloop.estimators import kernels
    from closedloop.io import open_recording

    from closedloop.offline import default_chunk_size, run_engine

    clock = time.perf_counter
    spent = {"process": 0.0, "kernels": 0.0, "crossing": 0.0, "fit": 0.0}
    inside_fit = [False]
    undo = []

    def wrap(owner, name, key, *, outside_fit_only=True):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if outside_fit_only and inside_fit[0]:
                return original(*args, **kwargs)
            t0 = clock()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += clock() - t0

        setattr(owner, name, timed)
        undo.append((owner, name, original))

    def bind(name):
        """A kernel object (its arrays bound once): its ``run`` timed through a proxy."""
        cls = getattr(kernels, name)

        class Timed:
            def __init__(self, *args, **kwargs):
                self._inner = cls(*args, **kwargs)

            def _timed(self, method, *args):
                if inside_fit[0]:
                    return method(*args)
                t0 = clock()
                try:
                    return method(*args)
                finally:
                    spent["kernels"] += clock() - t0

            def run(self, *args):
                return self._timed(self._inner.run, *args)

            def step(self, *args):
                return self._timed(self._inner.step, *args)

            def __getattr__(self, attr):
                return getattr(self._inner, attr)

        setattr(kernels, name, Timed)
        undo.append((kernels, name, cls))

    def fit(estimator, baseline, sfreq):
        inside_fit[0] = True
        t0 = clock()
        try:
            return original_fit(estimator, baseline, sfreq)
        finally:
            spent["fit"] += clock() - t0
            inside_fit[0] = False

    original_fit = engine_core.fit_estimator
    engine_core.fit_estimator = fit
    undo.append((engine_core, "fit_estimator", original_fit))
    for name in [n for n in dir(kernels) if not n.startswith("_") and callable(getattr(kernels, n))]:
        if isinstance(getattr(kernels, name), type):
            bind(name)
        else:
            wrap(kernels, name, "kernels")
    try:
        protocol_obj = cl.load_protocol(protocol)
        with open_recording(path) as rec:
            # as replay: the engine takes only the channels it uses, and only those are read
            rows = Engine(protocol_obj, rec.ch_names, rec.sfreq, compact_input=True).input_rows
            size = chunk_size or default_chunk_size(rec.sfreq)
            t0 = clock()
            for _ in rec.iter_chunks(size, rows=rows):
                pass
            reading = clock() - t0
        with open_recording(path) as rec:
            engine = Engine(protocol_obj, rec.ch_names, rec.sfreq, compact_input=True)
            estimator_cls = type(engine._make_estimator())
            wrap(estimator_cls, "next_crossing_s", "crossing")
            wrap(estimator_cls, "process", "process")  # its own or PhaseEstimator's
            cpu0, t0 = time.process_time(), clock()
            result = run_engine(
                engine, rec.iter_chunks(size, rows=engine.input_rows), chunk_size=size,
                keep_state=True,
            )
            total, cpu = clock() - t0, time.process_time() - cpu0
    finally:
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)
    rest = total - spent["process"] - spent["crossing"] - spent["fit"] - reading
    return {
        "data_s": result.duration_s,
        "chunks": result.summary["chunks"],
        "chunk_size": size,
        "triggers": len(result.triggers),
        "estimator": result.summary["estimator"],
        "total_s": total,
        "cpu_s": cpu,
        "reading_s": reading,
        "estimator_process_s": spent["process"],
        "estimator_kernels_s": spent["kernels"],
        "estimator_python_s": spent["process"] - spent["kernels"],
        "next_crossing_s": spent["crossing"],
        "fit_s": spent["fit"],
        "engine_and_loop_s": rest,
    }


PARTS = (
    ("estimator kernels (compiled)", "estimator_kernels_s"),
    ("estimator process, Python around them", "estimator_python_s"),
    ("estimator next_crossing_s", "next_crossing_s"),
    ("estimator fit on the baseline (once)", "fit_s"),
    ("reading the recording", "reading_s"),
    ("engine units + replay loop", "engine_and_loop_s"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", help="a recording closedloop replay reads")
    parser.add_argument("--protocol", "-p", default="mu-trough-c3", help="preset or TOML (default mu-trough-c3)")
    parser.add_argument("--chunk-size", type=int, default=None, help="samples per chunk (default: 10 ms)")
    parser.add_argument("--rounds", type=int, default=3, help="replays; the fastest is reported (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="write every round's figures here")
    args = parser.parse_args(argv)
    if not Path(args.recording).is_file():
        print(f"replay_profile: no recording at {args.recording}", file=sys.stderr)
        return 3
    if args.rounds < 1 or (args.chunk_size is not None and args.chunk_size < 1):
        print("replay_profile: --rounds and --chunk-size must be >= 1", file=sys.stderr)
        return 2
    rounds = [profile_once(args.recording, args.protocol, args.chunk_size) for _ in range(args.rounds)]
    best = min(rounds, key=lambda r: r["total_s"])
    print(f"{args.recording}, {args.protocol} ({best['estimator']}): {best['data_s']:.0f} s of data, "
          f"{best['chunks']} chunks of {best['chunk_size']}, {best['triggers']} triggers")
    print(f"  replay {best['total_s']:.2f} s wall = {best['data_s'] / best['total_s']:.0f}x real time, "
          f"{best['cpu_s']:.2f} s CPU (best of {len(rounds)})")
    for label, key in PARTS:
        value = best[key]
        print(f"  {label:40s} {value:7.2f} s  {100 * value / best['total_s']:5.1f} %  "
              f"{1e6 * value / max(1, best['chunks']):7.2f} us/chunk")
    if args.json is not None:
        args.json.write_text(json.dumps({"best": best, "rounds": rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
