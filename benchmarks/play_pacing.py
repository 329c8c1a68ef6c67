"""Pacing of ``closedloop play``: does the stream keep time with the wall clock, without drift?

Plays a real 5 kHz recording (the NeurOne BrainVision file in ../shared/recordings, 65
channels, looped) through :class:`closedloop.play.Player` with channel 0 carrying the sample
index, and receives it in a separate process with a real pylsl inlet. Reports, per window:

* producer lag: local clock when a chunk's push returned minus the timestamp of its newest
  sample (how far the stream's time trails the wall clock);
* consumer lag: arrival time in the receiving process minus the newest sample's timestamp;
* missing / repeated samples (from the index channel), and the player's CPU use.

"growth" is the linear trend of the per-window median lag, in ms per 10 minutes: a player that
drifted would show it there, while scheduling spikes from a busy machine would not bias it.

Usage::

    python benchmarks/play_pacing.py --seconds 120            # the README figure (2 minutes)
    python benchmarks/play_pacing.py --seconds 600 --window 60 # the issue's 10-minute target

Run from the project root with the package importable (``pip install -e .`` or PYTHONPATH=.).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORDING = (
    ROOT.parent / "shared" / "recordings" / "mne-testing-data" / "Brainvision" / "test_NO.vhdr"
)


def consume(source_id: str, n_expected: int, timeout: float) -> dict:
    """Receive ``n_expected`` samples; return lags per pull and index checks (runs in a subprocess)."""
    import pylsl

    found = pylsl.resolve_byprop("source_id", source_id, 1, 20.0)
    if not found:
        return {"error": f"stream {source_id} not found"}
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    inlet.open_stream(timeout=10.0)
    n_channels = inlet.info().channel_count()
    buf = np.zeros((4096, n_channels), dtype=np.float32)
    index = np.empty(n_expected + 4096, dtype=np.float64)
    pulls = []  # (newest stamp, arrival - newest stamp)
    n = 0
    deadline = time.monotonic() + timeout
    while n < n_expected and time.monotonic() < deadline:
        sample, stamp = inlet.pull_sample(timeout=1.0)
        if stamp is None:
            continue
        index[n] = sample[0]
        n += 1
        newest = stamp
        _, more = inlet.pull_chunk(timeout=0.0, max_samples=buf.shape[0], dest_obj=buf)
        m = min(len(more), len(index) - n)
        if m:
            index[n : n + m] = buf[:m, 0]
            n += m
            newest = more[m - 1]
        pulls.append((newest, pylsl.local_clock() - newest))
    del inlet
    idx = index[:n]
    steps = np.diff(idx)
    return {
        "received": int(n),
        "first_index": float(idx[0]) if n else None,
        "missing": int(np.sum(np.clip(steps - 1, 0, None))),
        "repeated_or_backwards": int(np.sum(steps < 1)),
        "pulls": pulls,
    }


def windows(times: np.ndarray, values: np.ndarray, width: float) -> list[dict]:
    out = []
    for start in np.arange(0.0, times[-1] + 1e-9, width):
        sel = (times >= start) & (times < start + width)
        if not sel.any():
            continue
        v = values[sel] * 1e3
        out.append(
            {
                "from_s": float(start),
                "median_ms": float(np.median(v)),
                "p99_ms": float(np.percentile(v, 99)),
                "max_ms": float(v.max()),
            }
        )
    return out


def growth_per_10min(rows: list[dict]) -> float:
    """Trend of the per-window median lag (robust to scheduling spikes), in ms per 10 minutes."""
    if len(rows) < 2:
        return 0.0
    start = np.array([r["from_s"] for r in rows])
    median = np.array([r["median_ms"] for r in rows])
    return float(np.polyfit(start, median, 1)[0] * 600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--seconds", type=float, default=120.0, help="stream time to play")
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--window", type=float, default=10.0, help="report window in s")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument(
        "--consumer", nargs=3, metavar=("SOURCE_ID", "N", "TIMEOUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.consumer:
        source_id, n, timeout = args.consumer
        print(json.dumps(consume(source_id, int(n), float(timeout))))
        return 0

    import pylsl

    from closedloop.io import open_recording
    from closedloop.play import Player

    recording = open_recording(args.recording)
    source_id = f"bench-play-{uuid.uuid4().hex[:8]}"
    n_total = round(args.seconds * recording.sfreq)
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--consumer", source_id, str(n_total), str(args.seconds + 60)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    player = Player(
        recording,
        name="bench-play",
        source_id=source_id,
        chunk_size=args.chunk_size,
        loop=True,
        duration=args.seconds,
        index_channel=True,
        wait_consumers=30.0,
        record_lags=True,
    )
    print(
        f"playing {recording.path.name}: {recording.n_channels} ch at {recording.sfreq:g} Hz, "
        f"chunks of {args.chunk_size}, {args.seconds:g} s (looped) ...",
        file=sys.stderr,
    )
    cpu0 = time.process_time()
    player.start()
    player.join()
    wall = pylsl.local_clock() - player.t0
    cpu = time.process_time() - cpu0
    player.stop()
    out, _ = consumer.communicate(timeout=120)
    received = json.loads(out)

    pushed, lag = (np.array(v, dtype=np.float64) for v in zip(*player.lags))
    stream_t = pushed / recording.sfreq
    pulls = np.array(received.pop("pulls"), dtype=np.float64)
    cons_t, cons_lag = pulls[:, 0] - player.t0, pulls[:, 1]
    prod_windows = windows(stream_t, lag, args.window)
    cons_windows = windows(cons_t, cons_lag, args.window)
    result = {
        "recording": recording.path.name,
        "n_channels": recording.n_channels,
        "sfreq": recording.sfreq,
        "chunk_size": args.chunk_size,
        "seconds": args.seconds,
        "samples_pushed": int(player.n_pushed),
        "player_cpu_percent": 100.0 * cpu / wall,
        "producer_lag": {
            "median_ms": float(np.median(lag) * 1e3),
            "p99_ms": float(np.percentile(lag, 99) * 1e3),
            "max_ms": float(lag.max() * 1e3),
            "final_ms": float(lag[-1] * 1e3),
            "growth_ms_per_10min": growth_per_10min(prod_windows),
            "windows": prod_windows,
        },
        "consumer": {
            **received,
            "lag_median_ms": float(np.median(cons_lag) * 1e3),
            "lag_p99_ms": float(np.percentile(cons_lag, 99) * 1e3),
            "lag_max_ms": float(cons_lag.max() * 1e3),
            "growth_ms_per_10min": growth_per_10min(cons_windows),
            "windows": cons_windows,
        },
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    p, c = result["producer_lag"], result["consumer"]
    print(
        f"samples pushed {result['samples_pushed']}, received {c['received']}, "
        f"missing {c['missing']}, repeated {c['repeated_or_backwards']}; player CPU {result['player_cpu_percent']:.1f}%"
    )
    print(
        f"producer lag: median {p['median_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms, max {p['max_ms']:.2f} ms, "
        f"final {p['final_ms']:.3f} ms, growth {p['growth_ms_per_10min']:+.4f} ms/10 min"
    )
    print(
        f"consumer lag: median {c['lag_median_ms']:.3f} ms, p99 {c['lag_p99_ms']:.3f} ms, "
        f"max {c['lag_max_ms']:.2f} ms, growth {c['growth_ms_per_10min']:+.4f} ms/10 min"
    )
    print(
        f"{'window':>8} {'prod med':>9} {'prod p99':>9} {'prod max':>9} {'cons med':>9} {'cons p99':>9}"
    )
    for pw, cw in zip(p["windows"], c["windows"]):
        print(
            f"{pw['from_s']:7.0f}s {pw['median_ms']:9.3f} {pw['p99_ms']:9.3f} {pw['max_ms']:9.2f} "
            f"{cw['median_ms']:9.3f} {cw['p99_ms']:9.3f}"
        )
    ok = c["missing"] == 0 and c["repeated_or_backwards"] == 0 and c["received"] == n_total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
