"""``closedloop bench accuracy RECORDING --protocol P``: phase accuracy of every estimator.

The recording is replayed through the real engine (:func:`closedloop.replay.run_offline`) once
per estimator and target phase, with the protocol's settings otherwise unchanged. Each
delivered trigger's exact onset is compared with the offline ground truth (zero-phase FIR
band-pass + Hilbert of the whole recording on the same derived signal). Per estimator: number
and rate of triggers, circular mean error, circular SD, PLV and the share within ±45°; a table
on stdout, ``--json FILE``, and a polar histogram per estimator with ``--figures DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

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
        "--harness",
        action="store_true",
        help="use the estimators' development harness instead of the engine: the same "
        "decision rule after every sample, gated on each estimator's own amplitude",
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


def _method_entry(
    errors: np.ndarray, span_s: float, n_targets: int, by_target: dict, **extra: float
) -> dict:
    """One method's results: circular statistics of its pooled ``errors`` (degrees), triggers
    per minute per target over ``span_s``, ``by_target``, ``extra``, then the errors."""
    from closedloop.groundtruth import circular_stats

    entry = circular_stats(errors).as_dict()
    entry["per_min"] = 60.0 * errors.size / span_s / max(1, n_targets)
    entry["by_target"] = by_target
    entry.update(extra)
    entry["errors_deg"] = [round(float(e), 3) for e in errors]
    return entry


def evaluate_recording(
    data: np.ndarray,
    sfreq: float,
    ch_names: list[str],
    protocol,
    *,
    methods: list[str],
    targets: list[float],
    eval_after_s: float,
    chunk_size: int = 1,
) -> dict:
    """Replay ``data`` through the engine per method and target; return the results as a dict.

    Returns
    -------
    dict
        ``{"methods": {name: {"n", "per_min", "mean_deg", "sd_deg", "plv", "within_45",
        "by_target": {target: {...}}, "errors_deg": [...], "replay_x": speed}}, ...}``.
    """
    from closedloop.evaluation import derived_signal, scored_errors, scored_span_s
    from closedloop.groundtruth import GroundTruth, circular_stats
    from closedloop.protocol import EstimatorSettings
    from closedloop.replay import run_offline

    band = (float(protocol.band.low_hz), float(protocol.band.high_hz))
    derived = derived_signal(data, ch_names, protocol)
    truth = GroundTruth(derived, sfreq, band)
    start_s, end_s = scored_span_s(data.shape[1], sfreq, eval_after_s)
    span_s = end_s - start_s
    if span_s <= 1.0:
        raise UsageError(
            f"the recording lasts {data.shape[1] / sfreq:.1f} s; evaluating after "
            f"{eval_after_s:g} s leaves too little. Use a longer recording or a smaller --eval-after-s."
        )
    own_method = protocol.estimator.method
    results: dict = {
        "band_hz": list(band),
        "eval_after_s": eval_after_s,
        "evaluated_s": span_s,
        "targets_deg": targets,
        "chunk_size": chunk_size,
        "methods": {},
    }
    for method in methods:
        params = dict(protocol.estimator.params) if method == own_method else {}
        pooled: list[np.ndarray] = []
        by_target = {}
        speeds = []
        for target in targets:
            p = dataclasses.replace(
                protocol,
                estimator=EstimatorSettings(method=method, params=params),
                trigger=dataclasses.replace(protocol.trigger, target_phase_deg=float(target)),
            )
            run = run_offline(data, sfreq, ch_names, p, chunk_size=chunk_size, keep_state=False)
            speeds.append(run.speed_x)
            errors = scored_errors(
                derived, sfreq, band, run.onsets_s, float(target), eval_after_s=eval_after_s, truth=truth
            )
            pooled.append(errors)
            stats = circular_stats(errors).as_dict()
            stats["per_min"] = 60.0 * errors.size / span_s
            by_target[f"{float(target):g}"] = stats
        errors = np.concatenate(pooled) if pooled else np.zeros(0)
        results["methods"][method] = _method_entry(
            errors,
            span_s,
            len(targets),
            by_target,
            replay_x=float(np.mean(speeds)) if speeds else math.nan,
        )
    return results


def evaluate_harness(
    data: np.ndarray,
    sfreq: float,
    ch_names: list[str],
    protocol,
    *,
    methods: list[str],
    targets: list[float],
    eval_after_s: float,
) -> dict:
    """Like :func:`evaluate_recording` with :func:`closedloop.estimators.evaluate.run_triggers`.

    The decision rule is the engine's at chunk size 1; the amplitude gate compares each
    estimator's own ``amplitude`` with the protocol's percentile of it over the baseline.
    No artifact holds, no individual band.
    """
    from closedloop.estimators import make_estimator
    from closedloop.estimators.evaluate import run_triggers
    from closedloop.evaluation import derived_signal
    from closedloop.groundtruth import GroundTruth

    trig = protocol.trigger
    if trig.gate_kind == "uv":
        raise UsageError('--harness supports amplitude_gate = "percentile:P" or "none" only.')
    percentile = float(trig.gate_value) if trig.gate_kind == "percentile" else None
    band = (float(protocol.band.low_hz), float(protocol.band.high_hz))
    derived = derived_signal(data, ch_names, protocol)
    truth = GroundTruth(derived, sfreq, band)
    if eval_after_s < trig.baseline_s:
        raise UsageError(
            "--harness evaluates after the baseline; --eval-after-s must be >= baseline_s."
        )
    results: dict = {
        "band_hz": list(band),
        "eval_after_s": eval_after_s,
        "targets_deg": targets,
        "chunk_size": 1,
        "harness": True,
        "methods": {},
    }
    own_method = protocol.estimator.method
    for method in methods:
        params = dict(protocol.estimator.params) if method == own_method else {}
        pooled, by_target, span_s = [], {}, math.nan
        for target in targets:
            est = make_estimator(method, sfreq, band, **params)
            run = run_triggers(
                est,
                derived,
                sfreq,
                float(target),
                truth=truth,
                baseline_s=eval_after_s,
                min_interval_s=trig.min_interval_s,
                gate_percentile=percentile,
                gate_source="estimator",
            )
            span_s = run.evaluated_s
            pooled.append(run.errors_deg)
            stats = run.stats.as_dict()
            stats["per_min"] = run.per_minute
            stats["us_per_update"] = run.us_per_update
            by_target[f"{float(target):g}"] = stats
        errors = np.concatenate(pooled)
        results["methods"][method] = _method_entry(errors, span_s, len(targets), by_target)
    results["evaluated_s"] = span_s
    return results


def _polar_figure(path: Path, method: str, errors_deg: list[float], stats: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4.2, 4.4))
    ax = fig.add_subplot(projection="polar")
    edges = np.radians(np.arange(-180, 181, 10))
    counts, _ = np.histogram(np.radians(errors_deg), bins=edges)
    ax.bar(edges[:-1], counts, width=np.radians(10), align="edge", color="tab:blue", alpha=0.75)
    if stats["n"]:
        ax.annotate(
            "",
            xy=(math.radians(stats["mean_deg"]), stats["plv"] * max(counts.max(), 1)),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 2},
        )
    ax.set_theta_zero_location("N")
    ax.set_title(
        f"{method}: error vs target (n={stats['n']})\n"
        f"mean {stats['mean_deg']:.1f}°, SD {stats['sd_deg']:.1f}°, PLV {stats['plv']:.2f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    if args.harness:
        results = evaluate_harness(
            data,
            sfreq,
            ch_names,
            protocol,
            methods=methods,
            targets=targets,
            eval_after_s=eval_after,
        )
    else:
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
        + (
            "development harness, estimator-amplitude gate"
            if args.harness
            else f"engine, chunk {args.chunk_size}"
        )
    )
    print(_table(results))
    if args.figures:
        out = Path(args.figures)
        out.mkdir(parents=True, exist_ok=True)
        for method, r in results["methods"].items():
            _polar_figure(out / f"accuracy_{method}.png", method, r["errors_deg"], r)
        print(f"figures: {out}/accuracy_<estimator>.png", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))
    return 0
