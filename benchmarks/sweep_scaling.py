"""How a sweep scales: the same 64-cell sweep on 1 and 2 local workers and on a 2-worker Dask
LocalCluster, and the memory of the process that drives a sweep as the number of cells grows.

    python benchmarks/sweep_scaling.py [--rounds N] [--json FILE] [--skip-memory]

The sweep: 8 recordings (the shared ones with an O2 channel, 128-500 Hz, 60-247 s, and the
simulated one that ships) x 8 settings (``estimator.method`` wiener, echt x
``trigger.target_phase_deg`` 0, 90, 180, -90) of the ``default`` protocol. Per run: wall time
from the call to the last row (worker start-up included), the sum of the cells' own times
(``wall_s`` in results.csv: open, replay, ground truth, scoring), speed-up against one worker,
and the overhead per cell, ``(wall x workers - sum of cell times) / cells``: what running the
cells in other processes costs beyond the cells themselves. All three runs must give the same
rows (timing columns aside). The machine is shared: ``--rounds N`` repeats the three runs in a
rotating order; speed-ups are ratios within a round, and every round is kept in the JSON.

Machinery: 2,000 cells of missing recordings (each fails at once) on the 2 local workers and on
the Dask cluster: the cost of a cell beyond its own work (submit, ship, open, row back, write).

Memory: a driver process sweeps N cells of missing recordings (each fails at once, so the
driver's own work, not the replay, is what is measured) and reports its peak resident memory,
for N = 1,000 and 20,000.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the cluster's own log (a worker's last heartbeat racing the scheduler's close) is not a result
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

try:
    import closedloop
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import closedloop

from closedloop.protocol import load_protocol
from closedloop.sweep import parse_set, plan_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "recordings"
RECORDINGS = [
    SHARED / "eegmmidb" / "S001R01.edf",
    SHARED / "eegmmidb" / "S001R02_first60s.edf",
    SHARED / "eegmmidb" / "S001R03.edf",
    SHARED / "eegmmidb" / "S001R04.edf",
    SHARED / "eegmmidb" / "S088R10.edf",
    SHARED / "eegmat" / "Subject04_2.edf",
    SHARED / "mne-testing-data" / "multiple_annotation_chans.bdf",
    ROOT / "recordings" / "simulated-alpha-eeg_32ch_500hz_seed1.edf",
]
GRID = ["estimator.method=wiener,echt", "trigger.target_phase_deg=0,90,180,-90"]
TIMING = ("wall_s", "speed_x")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fid:
        return list(csv.DictReader(fid))


def _one_run(plan, label: str, workers: int, **where) -> tuple[dict, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as folder:
        started = time.perf_counter()
        outcome = run_sweep(plan, folder, summary=False, **where)
        wall = time.perf_counter() - started
        rows = _rows(Path(folder) / "results.csv")
    cells = sum(float(r["wall_s"]) for r in rows)
    result = {
        "run": label,
        "where": outcome.backend,
        "workers": workers,
        "cells": len(rows),
        "failed": outcome.n_failed,
        "wall_s": round(wall, 3),
        "cell_time_sum_s": round(cells, 3),
        "overhead_per_cell_ms": round(1000.0 * (wall * workers - cells) / len(rows), 1),
        "data_hours": round(sum(float(r["duration_s"] or 0) for r in rows) / 3600.0, 3),
    }
    result["x_real_time"] = round(result["data_hours"] * 3600.0 / wall, 1)
    print(
        f"{label:>24s}: {wall:6.2f} s wall, cells {cells:6.2f} s, overhead "
        f"{result['overhead_per_cell_ms']:6.1f} ms/cell, {result['x_real_time']:.0f}x real time",
        flush=True,
    )
    return result, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def scaling(rounds: int = 1) -> dict:
    """The three runs, ``rounds`` times (in a rotating order, so that a busy spell of the shared
    machine does not always fall on the same run); speed-ups are ratios within a round."""
    import statistics

    from distributed import LocalCluster

    missing = [str(p) for p in RECORDINGS if not p.is_file()]
    if missing:
        sys.exit(f"sweep_scaling: recordings missing: {', '.join(missing)}")
    protocol = load_protocol("default")
    plan = plan_sweep(RECORDINGS, protocol, [parse_set(s, protocol) for s in GRID])
    print(
        f"sweep: {len(plan.recordings)} recordings x {len(plan.settings)} settings = {plan.n_cells} cells"
    )
    started = time.perf_counter()
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
    ) as cluster:
        cluster_start_s = time.perf_counter() - started
        configs = [
            ("local, 1 worker", 1, {"jobs": 1}),
            ("local, 2 workers", 2, {"jobs": 2}),
            ("Dask LocalCluster, 2", 2, {"scheduler": cluster.scheduler_address}),
        ]
        runs: list[dict] = []
        reference = None
        same = True
        for i in range(rounds):
            order = configs[i % 3 :] + configs[: i % 3]
            by_label = {}
            for label, workers, where in order:
                result, rows = _one_run(plan, label, workers, **where)
                result["round"] = i + 1
                result["load_1min"] = round(os.getloadavg()[0], 2)
                reference = rows if reference is None else reference
                same = same and rows == reference
                by_label[label] = result
                runs.append(result)
            one = by_label["local, 1 worker"]["wall_s"]
            for label, result in by_label.items():
                result["speedup_vs_1"] = round(one / result["wall_s"], 2)
        machinery = []
        for label, workers, where in configs[1:]:
            machinery.append(_machinery_overhead(label, workers, **where))
    summary = {}
    for label, workers, _ in configs:
        mine = [r for r in runs if r["run"] == label]
        summary[label] = {
            key: round(statistics.median(r[key] for r in mine), 3)
            for key in (
                "wall_s",
                "cell_time_sum_s",
                "overhead_per_cell_ms",
                "speedup_vs_1",
                "x_real_time",
            )
        }
    for label, figures in summary.items():
        print(
            f"median of {rounds}, {label}: {figures['wall_s']:.1f} s, speed-up {figures['speedup_vs_1']:.2f}x, "
            f"overhead {figures['overhead_per_cell_ms']:.0f} ms/cell"
        )
    print(f"Dask cluster start {cluster_start_s:.1f} s (not counted); rows identical: {same}")
    return {
        "runs": runs,
        "median": summary,
        "machinery": machinery,
        "cluster_start_s": round(cluster_start_s, 3),
        "rows_identical": same,
        "grid": GRID,
        "recordings": [str(p) for p in RECORDINGS],
    }


def _failing_plan(n: int):
    """``n`` cells of recordings that do not exist: each fails at once, so a sweep of them costs
    only what running a cell elsewhere costs (submit, ship, open, row back, write)."""
    from closedloop.sweep import SweepPlan, SweepRecording, build_settings

    protocol = load_protocol("default")
    settings = build_settings(protocol, [("seed", list(range(10)))])
    recordings = [SweepRecording(f"/nonexistent/recording-{i}.edf") for i in range(n // 10)]
    return SweepPlan(protocol, recordings, settings, ["seed"])


def _machinery_overhead(label: str, workers: int, n: int = 2000, **where) -> dict:
    plan = _failing_plan(n)
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as folder:
        started = time.perf_counter()
        outcome = run_sweep(plan, folder, summary=False, **where)
        wall = time.perf_counter() - started
    result = {
        "run": label,
        "cells": plan.n_cells,
        "failed": outcome.n_failed,
        "wall_s": round(wall, 3),
        "ms_per_cell_per_worker": round(1000.0 * wall * workers / plan.n_cells, 2),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(
        f"{label:>24s}: {plan.n_cells} cells that fail at once in {wall:.1f} s: "
        f"{result['ms_per_cell_per_worker']:.1f} ms per cell per worker (start-up included)",
        flush=True,
    )
    return result


def _driver_memory(n: int) -> None:
    """(In a fresh process.) Sweep ``n`` cells of missing recordings; print peak RSS in MB."""

    def peak_mb() -> float:
        # VmHWM is this process's own high-water mark (ru_maxrss survives exec, and would
        # report the parent's size)
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    start = peak_mb()
    plan = _failing_plan(n)
    planned = peak_mb()
    with tempfile.TemporaryDirectory(prefix="sweep-mem-") as folder:
        started = time.perf_counter()
        outcome = run_sweep(plan, folder, jobs=2, summary=False)
        wall = time.perf_counter() - started
    result = {
        "cells": plan.n_cells,
        "failed": outcome.n_failed,
        "wall_s": round(wall, 2),
        "peak_rss_mb_start": round(start, 1),
        "peak_rss_mb_planned": round(planned, 1),
        "peak_rss_mb": round(peak_mb(), 1),
    }
    print(json.dumps(result))


def memory() -> list[dict]:
    out = []
    for n in (1_000, 20_000):
        done = subprocess.run(
            [sys.executable, __file__, "--driver-memory", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"driver, {result['cells']:>6d} cells: peak RSS {result['peak_rss_mb']:.1f} MB "
            f"(planned: {result['peak_rss_mb_planned']:.1f} MB), {result['wall_s']:.1f} s",
            flush=True,
        )
        out.append(result)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--skip-memory", action="store_true", help="only the 64-cell scaling runs")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three runs (default 1)")
    parser.add_argument("--driver-memory", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver_memory is not None:
        _driver_memory(args.driver_memory)
        return 0
    results = {
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "closedloop": closedloop.__version__,
        },
        "scaling": scaling(args.rounds),
    }
    if not args.skip_memory:
        results["driver_memory"] = memory()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if results["scaling"]["rows_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
