"""``closedloop bench accuracy RECORDING --protocol P``: phase accuracy of every estimator (:mod:`closedloop.bench.accuracy`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from closedloop.bench.accuracy import RATE_BIN_S, evaluate_chunkings, polar_figure
from closedloop.errors import UsageError


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="a recording (any format MNE reads, or XDF)")
    p.add_argument("--protocol", required=True, help="protocol file or preset name")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated estimators (default: every method but 'auto')",
    )
    p.add_argument(
        "--targets",
        default=None,
        help="comma-separated target phases in degrees (default: the protocol's)",
    )
    p.add_argument(
        "--eval-after-s",
        type=float,
        default=None,
        help="evaluate triggers after this time (default: the protocol's baseline_s)",
    )
    p.add_argument(
        "--chunk-size",
        default="1",
        help="samples per engine update, or a comma-separated list of them to compare side by "
        "side (default 1: a decision after every sample; amplifiers push 10-40 ms)",
    )
    p.add_argument(
        "--gate",
        default=None,
        help="use this amplitude gate instead of the protocol's, e.g. 'rate:100' to compare "
        "estimators at the same trigger rate",
    )
    p.add_argument(
        "--rate-bin-s",
        type=float,
        default=RATE_BIN_S,
        help=f"bins of the trigger rate over time, seconds (default {RATE_BIN_S:g})",
    )
    p.add_argument(
        "--json", dest="json_path", default=None, help="write the results to this JSON file"
    )
    p.add_argument("--figures", default=None, help="write a polar histogram PNG per estimator here")


def _parse_list(text: str | None, what: str, convert):
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise UsageError(f"--{what} is empty; give a comma-separated list.")
    try:
        return [convert(t) for t in items]
    except ValueError:
        raise UsageError(
            f"--{what} {text!r} is not a comma-separated list of {convert.__name__}s."
        ) from None


def _f(value, spec: str) -> str:
    return format(value, spec) if value is not None and math.isfinite(value) else "n/a"


def _cells(s: dict) -> str:
    return (
        f"{s['n']:5d} {_f(s['per_min'], '6.1f')} {_f(s['mean_deg'], '6.1f')} "
        f"{_f(s['sd_deg'], '5.1f')} {_f(s['within_45'], '5.2f')}"
    )


def _table(results: dict) -> str:
    """The estimators' figures, one block of columns per chunk size."""
    chunks = results["chunk_sizes"]
    by_chunk = results["by_chunk"]
    width = len(_cells({"n": 0, "per_min": 0.0, "mean_deg": 0.0, "sd_deg": 0.0, "within_45": 0.0}))
    top = " " * 10 + " | ".join(
        f"chunk {c} ({by_chunk[str(c)]['chunk_ms']:.1f} ms)".center(width) for c in chunks
    )
    head = f"{'estimator':10s}" + " | ".join(
        f"{'n':>5s} {'/min':>6s} {'mean°':>6s} {'SD°':>5s} {'±45°':>5s}" for _ in chunks
    )
    lines = [top, head, "-" * len(head)]
    first = by_chunk[str(chunks[0])]["methods"]
    for method in first:
        rows = [by_chunk[str(c)]["methods"][method] for c in chunks]
        lines.append(f"{method:10s}" + " | ".join(_cells(r) for r in rows))
        if len(rows[0]["by_target"]) > 1:
            for target in rows[0]["by_target"]:
                lines.append(
                    f"  @{target:>6s}°"
                    + " | ".join(_cells(r["by_target"][target]) for r in rows)
                )
    return "\n".join(lines)


def _rate_table(results: dict) -> str:
    """Triggers per minute (per target) over time, per estimator and chunk size."""
    chunks = results["chunk_sizes"]
    by_chunk = results["by_chunk"]
    first = by_chunk[str(chunks[0])]["methods"]
    any_entry = next(iter(first.values()))["rate_over_time"]
    starts = any_entry["start_s"]
    lines = [
        f"trigger rate over time (per minute per target, {any_entry['bin_s']:g} s bins from "
        f"{starts[0]:g} s):" if starts else "trigger rate over time: no bins",
        f"{'estimator':10s} {'chunk':>5s} " + " ".join(f"{s:5.0f}" for s in starts),
    ]
    for method in first:
        for c in chunks:
            rates = by_chunk[str(c)]["methods"][method]["rate_over_time"]["per_min"]
            lines.append(f"{method:10s} {c:5d} " + " ".join(f"{r:5.0f}" for r in rates))
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    from closedloop.estimators import available_methods
    from closedloop.io import open_recording
    from closedloop.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if protocol.kind != "phase":
        raise UsageError(
            f"protocol {protocol.name!r} is a {protocol.kind!r} protocol; "
            'bench accuracy needs kind = "phase".'
        )
    if args.gate is not None:
        from closedloop.errors import ProtocolError

        try:
            trigger = dataclasses.replace(protocol.trigger, amplitude_gate=args.gate)
            protocol = dataclasses.replace(protocol, trigger=trigger)
        except ProtocolError as exc:
            raise UsageError(f"--gate {args.gate!r}: {exc}") from None
    known = [m for m in available_methods() if m != "auto"]
    methods = _parse_list(args.methods, "methods", str) or known
    for m in methods:
        if m not in available_methods():
            raise UsageError(
                f"--methods: {m!r} is not an estimator; accepted: {', '.join(available_methods())}."
            )
    targets = _parse_list(args.targets, "targets", float) or [protocol.trigger.target_phase_deg]
    chunk_sizes = _parse_list(args.chunk_size, "chunk-size", int)
    if any(c < 1 for c in chunk_sizes):
        raise UsageError(f"--chunk-size must be whole numbers >= 1, got {args.chunk_size}.")
    if not (math.isfinite(args.rate_bin_s) and args.rate_bin_s > 0):
        raise UsageError(
            f"--rate-bin-s must be a positive number of seconds, got {args.rate_bin_s}."
        )
    eval_after = (
        protocol.trigger.baseline_s if args.eval_after_s is None else float(args.eval_after_s)
    )
    with open_recording(args.recording) as rec:
        data = rec.read(0, rec.n_samples)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)
    results = evaluate_chunkings(
        data,
        sfreq,
        ch_names,
        protocol,
        methods=methods,
        targets=targets,
        eval_after_s=eval_after,
        chunk_sizes=chunk_sizes,
        rate_bin_s=args.rate_bin_s,
    )
    results["recording"] = str(args.recording)
    results["protocol"] = protocol.name
    results["amplitude_gate"] = protocol.trigger.amplitude_gate
    print(
        f"bench accuracy: {Path(args.recording).name}, protocol {protocol.name!r}, channel "
        f"{protocol.signal.channel} ({protocol.signal.reference}), band {results['band_hz'][0]:g}-"
        f"{results['band_hz'][1]:g} Hz, gate {protocol.trigger.amplitude_gate}, targets "
        f"{', '.join(f'{t:g}' for t in targets)}°, evaluated {results['evaluated_s']:.0f} s after "
        f"{eval_after:g} s, engine, chunks of {', '.join(str(c) for c in chunk_sizes)} samples"
    )
    print(_table(results))
    print()
    print(_rate_table(results))
    if args.figures:
        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        for method, r in results["methods"].items():
            polar_figure(out / f"accuracy_{method}.png", method, r["errors_deg"], r)
        print(f"figures: {out}/accuracy_<estimator>.png (chunk {chunk_sizes[0]})", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))
    return 0
