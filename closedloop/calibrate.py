"""``closedloop calibrate BASELINE --protocol P --out TUNED.toml``: tune a protocol to one person.

From a baseline recording of the person (or the first minutes of a session):

1. the band: centred on the individual alpha peak of the derived signal (peak ±
   ``half_width_hz`` of the protocol), or the protocol's band when there is no clear peak;
2. the estimator: every candidate (method and window/order) is fitted on the first part of the
   baseline and scored on the held-out rest against the offline ground truth in that band:
   the circular RMS phase error (spread and bias together) where the estimator's own amplitude
   passes the protocol's amplitude gate. Each method's bias correction is part of its fit.

The best candidate is written with the band into a complete protocol file that ``run`` and
``replay`` load. It is named after the person (``--name``, else the BIDS ``sub-`` label of the
baseline's file name, else the file's name), not after the protocol it started from: its markers,
its recordings and its reports then say whose tuning was used.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from pathlib import Path

import numpy as np

from closedloop.errors import DataError, UsageError

#: (method, params) tried by default: our Wiener predictor and the published methods, each
#: at a few windows/orders around their defaults.
CANDIDATES: tuple[tuple[str, dict], ...] = (
    ("wiener", {"window_s": 0.25}),
    ("wiener", {"window_s": 0.5}),
    ("wiener", {"window_s": 1.0}),
    ("echt", {"window_s": 0.25}),
    ("echt", {"window_s": 0.5}),
    ("echt", {"window_s": 1.0}),
    ("ar", {}),
    ("ar", {"ar_method": "burg"}),
    ("ar", {"window_s": 1.0, "order": 60}),
    ("etp", {}),
)
MAX_WORK_SFREQ = 1000.0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "baseline", help="baseline recording of the person (any format MNE reads, or XDF)"
    )
    p.add_argument("--protocol", required=True, help="protocol file or preset name to start from")
    p.add_argument("--out", required=True, help="where to write the tuned protocol (.toml)")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="use only the first S seconds of the recording (default: all of it)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.3,
        help="share of the baseline held out to score candidates (default 0.3)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods to consider (default: all candidates)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="name of the tuned protocol (default: the protocol's name and the person: the BIDS "
        "sub- label of the baseline's file name, else the file's name)",
    )


def person_of(path: str | Path) -> str:
    """Whose baseline this is, from its file name: ``sub-XX`` (and ``ses-YY``) if BIDS, else its stem."""
    name = Path(path).name
    sub = re.search(r"(?:^|[_/])(sub-[A-Za-z0-9]+)", name)
    if sub:
        ses = re.search(r"_(ses-[A-Za-z0-9]+)", name)
        return sub.group(1) + (f"_{ses.group(1)}" if ses else "")
    stem = name.split(".")[0]
    return stem or name


def score_candidate(
    method: str,
    params: dict,
    x: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    n_fit: int,
    gate_percentile: float | None,
    truth: np.ndarray,
) -> dict:
    """Fit on ``x[:n_fit]``, run causally over all of ``x``, score phase on ``x[n_fit:]``.

    Returns ``{"rms_deg", "sd_deg", "mean_deg", "n"}`` over the held-out samples where the
    estimator's amplitude passes the gate (all of them with no gate).
    """
    from closedloop.estimators import make_estimator
    from closedloop.estimators.base import track
    from closedloop.groundtruth import circular_stats

    est = make_estimator(method, sfreq, band_hz, **params)
    est.fit(x[:n_fit])
    threshold = (
        est.amplitude_threshold(gate_percentile) if gate_percentile is not None else -math.inf
    )
    if hasattr(est, "analytic_over") and not hasattr(est, "rotation"):
        z = est.analytic_over(x)
    else:
        z = track(est, x, max_updates=min(x.shape[0], 6000))
    held = slice(n_fit, x.shape[0])
    zt, ze = truth[held], z[held]
    ok = np.isfinite(zt) & np.isfinite(ze)
    ok[ok] = np.abs(ze[ok]) >= threshold
    if ok.sum() < 20:
        return {"rms_deg": math.inf, "sd_deg": math.nan, "mean_deg": math.nan, "n": int(ok.sum())}
    err = np.angle(zt[ok] * np.conj(ze[ok]), deg=True)
    s = circular_stats(err)
    return {
        "rms_deg": math.hypot(s.sd_deg, s.mean_deg),
        "sd_deg": s.sd_deg,
        "mean_deg": s.mean_deg,
        "n": s.n,
    }


def run_command(args: argparse.Namespace) -> int:
    from scipy.signal import decimate

    from closedloop.dsp.power import individual_peak_hz
    from closedloop.evaluation import derived_signal
    from closedloop.groundtruth import band_analytic, truth_fir
    from closedloop.io import open_recording
    from closedloop.protocol import EstimatorSettings, load_protocol, protocol_to_toml

    protocol = load_protocol(args.protocol)
    if protocol.kind != "phase":
        raise UsageError(
            f"protocol {protocol.name!r} is a {protocol.kind!r} protocol; calibrate "
            'tunes phase protocols (kind = "phase").'
        )
    if not 0.1 <= args.holdout <= 0.6:
        raise UsageError(f"--holdout {args.holdout:g} is out of range; accepted: 0.1 to 0.6.")
    candidates = list(CANDIDATES)
    if args.methods:
        wanted = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
        known = sorted({m for m, _ in CANDIDATES})
        for m in wanted:
            if m not in known:
                raise UsageError(
                    f"--methods: {m!r} is not a calibratable estimator; accepted: {', '.join(known)}."
                )
        candidates = [c for c in candidates if c[0] in wanted]
    out = Path(args.out)
    if out.suffix.lower() != ".toml":
        raise UsageError(f"--out {str(out)!r} must be a .toml file.")

    with open_recording(args.baseline) as rec:
        n = rec.n_samples
        if args.seconds is not None:
            if args.seconds <= 0:
                raise UsageError(f"--seconds {args.seconds:g} must be positive.")
            n = min(n, round(args.seconds * rec.sfreq))
        data = rec.read(0, n)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)
    x = derived_signal(data, ch_names, protocol)
    factor = math.ceil(sfreq / MAX_WORK_SFREQ)
    if factor > 1:
        x = decimate(x, factor, ftype="fir", zero_phase=True)
        sfreq = sfreq / factor
    if not np.all(np.isfinite(x)):
        raise DataError(
            f"{args.baseline}: the derived signal has NaN or infinite samples; "
            "choose a clean baseline."
        )
    seconds = x.shape[0] / sfreq
    if seconds < 20.0:
        raise DataError(
            f"{args.baseline}: {seconds:.1f} s of baseline is too short to calibrate; "
            "record at least 20 s (60 s or more is better)."
        )

    band = protocol.band
    peak = individual_peak_hz(x, sfreq, tuple(band.peak_search_hz))
    if math.isfinite(peak):
        band_hz = (max(0.5, peak - band.half_width_hz), peak + band.half_width_hz)
        band_note = f"individual peak {peak:.2f} Hz"
    else:
        band_hz = (float(band.low_hz), float(band.high_hz))
        band_note = "no clear peak: the protocol's band"
    if band_hz[1] >= sfreq / 2:
        raise DataError(
            f"the band {band_hz[0]:g}-{band_hz[1]:g} Hz does not fit under half the "
            f"sampling rate ({sfreq / 2:g} Hz)."
        )

    truth = band_analytic(x, sfreq, band_hz)
    edge = truth_fir(sfreq, band_hz).shape[0] // 2
    truth[-edge:] = np.nan
    n_fit = round(x.shape[0] * (1.0 - args.holdout))
    trig = protocol.trigger
    gate = float(trig.gate_value) if trig.gate_kind == "percentile" else None

    print(
        f"calibrate: {Path(args.baseline).name}, {seconds:.0f} s at {sfreq:g} Hz, channel "
        f"{protocol.signal.channel} ({protocol.signal.reference}); band {band_hz[0]:.2f}-"
        f"{band_hz[1]:.2f} Hz ({band_note}); fit on {n_fit / sfreq:.0f} s, scored on "
        f"{(x.shape[0] - n_fit) / sfreq:.0f} s held out"
    )
    print(f"{'method':8s} {'params':28s} {'RMS°':>6s} {'SD°':>6s} {'mean°':>6s} {'n':>6s}")
    scored = []
    for method, params in candidates:
        try:
            s = score_candidate(method, params, x, sfreq, band_hz, n_fit, gate, truth)
        except (DataError, UsageError) as exc:
            print(f"{method:8s} {params!s:28s} skipped: {exc}")
            continue
        scored.append((s["rms_deg"], method, params, s))
        print(
            f"{method:8s} {params!s:28s} {s['rms_deg']:6.1f} {s['sd_deg']:6.1f} "
            f"{s['mean_deg']:6.1f} {s['n']:6d}"
        )
    scored = [c for c in scored if math.isfinite(c[0])]
    if not scored:
        raise DataError(
            f"{args.baseline}: no estimator could be scored (too little signal above the "
            "amplitude gate in the held-out part)."
        )
    best_rms, method, params, _ = min(scored, key=lambda c: c[0])
    name = args.name if args.name else f"{protocol.name}-{person_of(args.baseline)}"
    if not name.strip():
        raise UsageError("--name must not be empty.")
    tuned = dataclasses.replace(
        protocol,
        name=name,
        band=dataclasses.replace(
            band, low_hz=round(band_hz[0], 3), high_hz=round(band_hz[1], 3), individual=False
        ),
        estimator=EstimatorSettings(method=method, params=dict(params)),
        description=(
            f"{protocol.summary} (calibrated on {Path(args.baseline).name}: {band_note}, "
            f"{method} {params or 'defaults'}, held-out RMS phase error {best_rms:.1f} deg)"
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(protocol_to_toml(tuned), encoding="utf-8")
    load_protocol(str(out))  # what we wrote must load
    print(
        f"chosen: {method} {params or '(defaults)'}, band {band_hz[0]:.2f}-{band_hz[1]:.2f} Hz; "
        f"wrote {out} (protocol {name!r})",
        file=sys.stderr,
    )
    return 0
