"""``closedloop bench accuracy RECORDING --protocol P``: phase accuracy of every estimator.

The recording is replayed through the real engine (:func:`closedloop.replay`) once
per estimator, target phase and chunk size, with the protocol's settings otherwise unchanged.
Each delivered trigger's exact onset is compared with the offline ground truth (zero-phase FIR
band-pass + Hilbert of the whole recording on the same derived signal). Per estimator and chunk
size: number and rate of triggers, circular mean error, circular SD, PLV and the share within
±45°, and the trigger rate over time (the gate's behaviour as the rhythm changes); a table on
stdout with the chunk sizes side by side, ``--json FILE``, and a polar histogram per estimator
with ``--figures DIR``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from closedloop.errors import UsageError

#: Width of the bins of the trigger rate over time, seconds.
RATE_BIN_S = 10.0


def _method_entry(
    errors: np.ndarray, span_s: float, n_targets: int, by_target: dict, **extra: float
) -> dict:
    """One method's results: circular statistics of its pooled ``errors`` (degrees), triggers
    per minute per target over ``span_s``, ``by_target``, ``extra``, then the errors."""
    from closedloop.groundtruth import circular_stats

    entry = circular_stats(errors).as_dict()
    entry["sd_se_deg"] = bootstrap_sd_se(errors)
    entry["per_min"] = 60.0 * errors.size / span_s / max(1, n_targets)
    entry["by_target"] = by_target
    entry.update(extra)
    entry["errors_deg"] = [round(float(e), 3) for e in errors]
    return entry


def bootstrap_sd_se(errors_deg: np.ndarray, n_boot: int = 1000, seed: int = 0) -> float:
    """Standard error of the circular SD of ``errors_deg`` from ``n_boot`` bootstrap resamples
    of the triggers (seeded: the same errors give the same figure); NaN for fewer than 3."""
    e = np.radians(np.asarray(errors_deg, dtype=float))
    if e.size < 3:
        return math.nan
    rng = np.random.default_rng(seed)
    unit = np.exp(1j * e)
    r = np.abs(unit[rng.integers(0, e.size, (n_boot, e.size))].mean(axis=1))
    sd = np.degrees(np.sqrt(-2.0 * np.log(np.clip(r, 1e-300, 1.0))))
    return float(np.std(sd, ddof=1))


def rate_over_time(
    onsets_s: np.ndarray, start_s: float, end_s: float, n_targets: int, bin_s: float = RATE_BIN_S
) -> dict:
    """Triggers per minute per target in consecutive bins of ``bin_s`` from ``start_s`` (a
    remainder shorter than half a bin joins the last bin; rates are per the bin's length)."""
    edges = np.arange(start_s, end_s, bin_s)
    if edges.size > 1 and end_s - edges[-1] < 0.5 * bin_s:
        edges[-1] = end_s
    else:
        edges = np.append(edges, end_s)
    counts, _ = np.histogram(onsets_s, bins=edges)
    minutes = np.diff(edges) / 60.0
    per_min = counts / np.maximum(minutes, 1e-12) / max(1, n_targets)
    return {
        "bin_s": float(bin_s),
        "start_s": [round(float(e), 3) for e in edges[:-1]],
        "per_min": [round(float(r), 2) for r in per_min],
    }


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
    rate_bin_s: float = RATE_BIN_S,
) -> dict:
    """Replay ``data`` through the engine per method and target; return the results as a dict.

    Returns
    -------
    dict
        ``{"methods": {name: {"n", "per_min", "mean_deg", "sd_deg", "plv", "within_45",
        "by_target": {target: {...}}, "rate_over_time": {...}, "errors_deg": [...],
        "replay_x": speed}}, ...}``.
    """
    from closedloop.groundtruth import GroundTruth, circular_stats, derived_signal, scored_span_s, scored_triggers
    from closedloop.offline import replay
    from closedloop.protocol import EstimatorSettings

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
        "chunk_ms": 1000.0 * chunk_size / sfreq,
        "methods": {},
    }
    for method in methods:
        params = dict(protocol.estimator.params) if method == own_method else {}
        pooled: list[np.ndarray] = []
        times: list[np.ndarray] = []
        by_target = {}
        speeds = []
        for target in targets:
            p = dataclasses.replace(
                protocol,
                estimator=EstimatorSettings(method=method, params=params),
                trigger=dataclasses.replace(protocol.trigger, target_phase_deg=float(target)),
            )
            run = replay(data, p, sfreq=sfreq, ch_names=ch_names, units="uV", chunk_size=chunk_size, keep_state=False)
            speeds.append(run.speed_x)
            onsets, errors = scored_triggers(
                derived, sfreq, band, run.onsets_s, float(target), eval_after_s=eval_after_s, truth=truth
            )
            pooled.append(errors)
            times.append(onsets)
            stats = circular_stats(errors).as_dict()
            stats["per_min"] = 60.0 * errors.size / span_s
            by_target[f"{float(target):g}"] = stats
        errors = np.concatenate(pooled) if pooled else np.zeros(0)
        onsets = np.concatenate(times) if times else np.zeros(0)
        results["methods"][method] = _method_entry(
            errors,
            span_s,
            len(targets),
            by_target,
            replay_x=float(np.mean(speeds)) if speeds else math.nan,
            rate_over_time=rate_over_time(onsets, eval_after_s, end_s, len(targets), rate_bin_s),
        )
    return results


def evaluate_chunkings(
    data: np.ndarray,
    sfreq: float,
    ch_names: list[str],
    protocol,
    *,
    methods: list[str],
    targets: list[float],
    eval_after_s: float,
    chunk_sizes: list[int],
    rate_bin_s: float = RATE_BIN_S,
) -> dict:
    """:func:`evaluate_recording` for each of ``chunk_sizes`` (per-sample decisions and chunked
    arrival side by side).

    Returns
    -------
    dict
        The first chunk size's results (as :func:`evaluate_recording`, for readers of one), plus
        ``"chunk_sizes"`` and ``"by_chunk"``: ``{str(chunk_size): results}``.
    """
    if not chunk_sizes:
        raise UsageError("give at least one chunk size.")
    by_chunk = {}
    for size in chunk_sizes:
        by_chunk[str(size)] = evaluate_recording(
            data, sfreq, ch_names, protocol, methods=methods, targets=targets,
            eval_after_s=eval_after_s, chunk_size=size, rate_bin_s=rate_bin_s,
        )
    results = dict(by_chunk[str(chunk_sizes[0])])
    results["chunk_sizes"] = list(chunk_sizes)
    results["by_chunk"] = by_chunk
    return results


def polar_figure(path: Path, method: str, errors_deg: list[float], stats: dict) -> None:
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
