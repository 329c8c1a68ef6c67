"""``closedloop sweep RECORDING... --protocol P --set KEY=V1,V2 ... --out DIR`` (../shared/CONTRACTS.md)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from closedloop.errors import DataError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Replay every recording under every combination of the --set values and score each cell "
        "against the offline ground truth; one row per cell in DIR/results.csv, figures in "
        "DIR/summary.html. Run the same command again to resume: finished cells are kept."
    )
    p.add_argument(
        "recordings",
        nargs="+",
        metavar="RECORDING",
        help="recording files, folders (searched recursively) or BIDS roots",
    )
    p.add_argument("--protocol", "-p", required=True, help="protocol file (.toml) or preset name")
    p.add_argument(
        "--set",
        dest="grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a dotted protocol key and its values, e.g. estimator.method=wiener,ar or "
        "trigger.target_phase_deg=0,180 (also chunk_size=... and seed=...); repeat for a grid",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="the sweep's folder (created; reused to resume)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--jobs", "-j", type=int, default=None, help="local worker processes (default: every core)"
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the cells on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786 (its workers "
        "must have closedloop and see the recordings at the same paths)",
    )
    p.add_argument(
        "--scheduler-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to try to reach the scheduler and wait for a worker (default 30)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="samples per chunk to simulate (default: as closedloop replay, the samples in 10 ms)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for sham phases and interval jitter (default 0)"
    )
    p.add_argument("--stream", default=None, help="XDF recordings: the EEG stream's name or type")
    p.add_argument(
        "--events",
        action="store_true",
        help="also write each cell's triggers as DIR/events/<cell>.tsv (as closedloop replay's events.tsv)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace) -> int:
    from closedloop.progress import progress_bar
    from closedloop.protocol import load_protocol
    from closedloop.sweep import parse_set, plan_sweep, run_sweep

    protocol = load_protocol(args.protocol)
    grid = [parse_set(text, protocol) for text in args.grid]
    plan = plan_sweep(
        args.recordings,
        protocol,
        grid,
        chunk_size=args.chunk_size,
        seed=args.seed,
        stream=args.stream,
        out=args.out,
    )
    done = [0]

    with contextlib.ExitStack() as stack:
        bar: list = []

        def on_start(pending: int, kept: int, where: str) -> None:
            kept_text = f", {kept} kept from an earlier run" if kept else ""
            to_run = f"{pending} to run on {where}" if pending else "nothing to run"
            print(
                f"sweep: {len(plan.recordings)} recordings x {len(plan.settings)} settings = "
                f"{plan.n_cells} cells{kept_text}; {to_run}",
                file=sys.stderr,
            )
            bar.append(
                stack.enter_context(
                    progress_bar(pending, "sweep", disable=args.quiet or not pending)
                )
            )

        def advance(n: int) -> None:
            done[0] += n
            if bar:
                bar[0](n)

        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        stack.callback(signal.signal, signal.SIGTERM, previous)
        try:
            outcome = run_sweep(
                plan,
                args.out,
                jobs=args.jobs,
                scheduler=args.scheduler,
                scheduler_timeout_s=args.scheduler_timeout,
                keep_events=args.events,
                progress=advance,
                on_start=on_start,
            )
        except KeyboardInterrupt:
            stack.close()
            print(
                f"closedloop sweep: interrupted after {done[0]} cells; they are in "
                f"{args.out}/results.csv. Run the same command again to go on.",
                file=sys.stderr,
            )
            return 130
    for recording, label, error in outcome.failures[:5]:
        print(f"sweep: failed: {recording} [{label}]: {error}", file=sys.stderr)
    if outcome.n_failed > 5:
        print(
            f"sweep: ... and {outcome.n_failed - 5} more failed cells (see results.csv)",
            file=sys.stderr,
        )
    if outcome.n_worker_deaths:
        print(
            f"sweep: a worker process died {outcome.n_worker_deaths} time(s); the cells it held "
            "ran again, each alone",
            file=sys.stderr,
        )
    if outcome.n_moved:
        print(
            f"sweep: {outcome.n_moved} rows of an earlier sweep in {args.out} are not cells of this one; "
            f"moved to {args.out}/superseded/",
            file=sys.stderr,
        )
    print(
        f"sweep: {outcome.n_cells} cells ({outcome.n_run} run now in {outcome.wall_s:.1f} s, "
        f"{outcome.n_reused} kept, {outcome.n_failed} failed); results in {outcome.results}, "
        f"summary in {outcome.summary}"
    )
    if outcome.n_failed and outcome.n_failed == outcome.n_cells:
        first = outcome.failures[0][2] if outcome.failures else "see results.csv"
        raise DataError(f"every cell of the sweep failed; the first: {first}")
    return 0
