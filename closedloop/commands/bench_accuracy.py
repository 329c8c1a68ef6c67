"""``closedloop bench accuracy RECORDING --protocol P``: phase accuracy of every estimator (:mod:`closedloop.bench.accuracy`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from closedloop.bench.accuracy import evaluate_recording, polar_figure
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
        type=int,
        default=1,
        help="samples per engine update (default 1: a decision after every sample)",
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


def _table(results: dict) -> str:
    head = f"{'estimator':10s} {'n':>5s} {'/min':>6s} {'mean°':>7s} {'SD°':>6s} {'PLV':>5s} {'±45°':>5s}"
    lines = [head, "-" * len(head)]
    for method, r in results["methods"].items():

        def f(v, spec):
            return format(v, spec) if v is not None and math.isfinite(v) else "n/a"

        lines.append(
            f"{method:10s} {r['n']:5d} {f(r['per_min'], '6.1f')} {f(r['mean_deg'], '7.1f')} "
            f"{f(r['sd_deg'], '6.1f')} {f(r['plv'], '5.2f')} {f(r['within_45'], '5.2f')}"
        )
        if len(r["by_target"]) > 1:
            for target, s in r["by_target"].items():
                lines.append(
                    f"  @{target:>6s}° {s['n']:5d} {f(s['per_min'], '6.1f')} {f(s['mean_deg'], '7.1f')} "
                    f"{f(s['sd_deg'], '6.1f')} {f(s['plv'], '5.2f')} {f(s['within_45'], '5.2f')}"
                )
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
    known = [m for m in available_methods() if m != "auto"]
    methods = _parse_list(args.methods, "methods", str) or known
    for m in methods:
        if m not in available_methods():
            raise UsageError(
                f"--methods: {m!r} is not an estimator; accepted: {', '.join(available_methods())}."
            )
    targets = _parse_list(args.targets, "targets", float) or [protocol.trigger.target_phase_deg]
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be a whole number >= 1, got {args.chunk_size}.")
    eval_after = (
        protocol.trigger.baseline_s if args.eval_after_s is None else float(args.eval_after_s)
    )
    with open_recording(args.recording) as rec:
        data = rec.read(0, rec.n_samples)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)
    results = evaluate_recording(
        data,
        sfreq,
        ch_names,
        protocol,
        methods=methods,
        targets=targets,
        eval_after_s=eval_after,
        chunk_size=args.chunk_size,
    )
    results["recording"] = str(args.recording)
    results["protocol"] = protocol.name
    print(
        f"bench accuracy: {Path(args.recording).name}, protocol {protocol.name!r}, channel "
        f"{protocol.signal.channel} ({protocol.signal.reference}), band {results['band_hz'][0]:g}-"
        f"{results['band_hz'][1]:g} Hz, targets {', '.join(f'{t:g}' for t in targets)}°, "
        f"evaluated {results['evaluated_s']:.0f} s after {eval_after:g} s, "
        + f"engine, chunk {args.chunk_size}"
    )
    print(_table(results))
    if args.figures:
        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        for method, r in results["methods"].items():
            polar_figure(out / f"accuracy_{method}.png", method, r["errors_deg"], r)
        print(f"figures: {out}/accuracy_<estimator>.png", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))
    return 0
