"""Tuning a protocol to one person (:func:`calibrate`, ``closedloop calibrate``).

From a baseline recording of the person (or the first minutes of a session):

1. the band: centred on the individual alpha peak of the derived signal (peak ±
   ``half_width_hz`` of the protocol), or the protocol's band when there is no clear peak; the
   same search the engine makes from a session's baseline (:func:`closedloop.engine.individual_band`),
   at the engine's working rate (:func:`closedloop.engine.working_rate`);
2. the estimator: every candidate (method and window/order) is fitted on the first part of the
   baseline and scored on the held-out rest against the offline ground truth in that band:
   the circular RMS phase error (spread and bias together) where the estimator's own amplitude
   passes the protocol's amplitude gate. Each method's bias correction is part of its fit.

The result is a complete protocol that ``run`` and ``replay`` load, named after the person (the
BIDS ``sub-`` label of the baseline's file name, else the file's name), not after the protocol it
started from: its markers, recordings and reports then say whose tuning was used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from closedloop.errors import DataError, UsageError

__all__ = ["CANDIDATES", "Calibration", "calibrate", "run_calibration", "score_candidate"]

logger = logging.getLogger("closedloop.calibration")

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


@dataclass
class Calibration:
    """What calibration found: the tuned protocol and how each candidate scored.

    ``scores`` holds one dict per candidate: ``method``, ``params``, ``rms_deg``, ``sd_deg``,
    ``mean_deg``, ``n``, or ``skipped`` (why it could not be scored).
    """

    protocol: object
    band_hz: tuple[float, float]
    band_note: str
    peak_hz: float | None
    sfreq: float
    seconds: float
    n_fit: int
    scores: list[dict] = field(default_factory=list)


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


def person_of(path) -> str:
    """Whose baseline this is, from its file name: ``sub-XX`` (and ``ses-YY``) if BIDS, else its stem."""
    name = Path(str(path)).name
    sub = re.search(r"(?:^|[_/])(sub-[A-Za-z0-9]+)", name)
    if sub:
        ses = re.search(r"_(ses-[A-Za-z0-9]+)", name)
        return sub.group(1) + (f"_{ses.group(1)}" if ses else "")
    stem = name.split(".")[0]
    return stem or name


def _candidates(methods: Sequence[str] | None) -> list[tuple[str, dict]]:
    if not methods:
        return list(CANDIDATES)
    wanted = [m.strip().lower() for m in methods if m.strip()]
    known = sorted({m for m, _ in CANDIDATES})
    for m in wanted:
        if m not in known:
            raise UsageError(f"--methods: {m!r} is not a calibratable estimator; accepted: {', '.join(known)}.")
    return [c for c in CANDIDATES if c[0] in wanted]


def run_calibration(
    baseline,
    protocol,
    *,
    seconds: float | None = None,
    holdout: float = 0.3,
    methods: Sequence[str] | None = None,
    name: str | None = None,
) -> Calibration:
    """:func:`calibrate`, with the band found and every candidate's score.

    Parameters as :func:`calibrate`.
    """
    from scipy.signal import decimate

    from closedloop.engine import individual_band, working_rate
    from closedloop.groundtruth import band_analytic, derived_signal, truth_fir
    from closedloop.io import open_recording
    from closedloop.protocol import EstimatorSettings, Protocol, load_protocol

    protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    if protocol.kind != "phase":
        raise UsageError(
            f"protocol {protocol.name!r} is a {protocol.kind!r} protocol; calibrate "
            'tunes phase protocols (kind = "phase").'
        )
    if not 0.1 <= holdout <= 0.6:
        raise UsageError(f"--holdout {holdout:g} is out of range; accepted: 0.1 to 0.6.")
    candidates = _candidates(methods)
    if seconds is not None and seconds <= 0:
        raise UsageError(f"--seconds {seconds:g} must be positive.")
    where = Path(str(baseline)).name
    with open_recording(baseline) as rec:
        n = rec.n_samples if seconds is None else min(rec.n_samples, round(seconds * rec.sfreq))
        data = rec.read(0, n)
        sfreq, ch_names = rec.sfreq, list(rec.ch_names)
    x = derived_signal(data, ch_names, protocol)
    factor, sfreq_work = working_rate(sfreq)
    if factor > 1:  # offline: a zero-phase decimation to the engine's working rate
        x = decimate(x, factor, ftype="fir", zero_phase=True)
    sfreq = sfreq_work
    if not np.all(np.isfinite(x)):
        raise DataError(f"{baseline}: the derived signal has NaN or infinite samples; choose a clean baseline.")
    length_s = x.shape[0] / sfreq
    if length_s < 20.0:
        raise DataError(
            f"{baseline}: {length_s:.1f} s of baseline is too short to calibrate; "
            "record at least 20 s (60 s or more is better)."
        )

    band = protocol.band
    peak, band_hz = individual_band(x, sfreq, band, always=True)
    if band_hz is not None:
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
    n_fit = round(x.shape[0] * (1.0 - holdout))
    trig = protocol.trigger
    # a running gate starts as its percentile of the baseline; a rate gate has no fixed level
    gate = float(trig.gate_value) if trig.gate_kind in ("percentile", "running") else None
    result = Calibration(protocol, band_hz, band_note, peak, sfreq, length_s, n_fit)
    for method, params in candidates:
        try:
            s = score_candidate(method, params, x, sfreq, band_hz, n_fit, gate, truth)
        except (DataError, UsageError) as exc:
            result.scores.append({"method": method, "params": params, "skipped": str(exc)})
            continue
        result.scores.append({"method": method, "params": params, **s})
    scored = [s for s in result.scores if "skipped" not in s and math.isfinite(s["rms_deg"])]
    if not scored:
        raise DataError(
            f"{baseline}: no estimator could be scored (too little signal above the "
            "amplitude gate in the held-out part)."
        )
    best = min(scored, key=lambda s: s["rms_deg"])
    if name is not None and not name.strip():
        raise UsageError("--name must not be empty.")
    result.protocol = dataclasses.replace(
        protocol,
        name=name or f"{protocol.name}-{person_of(baseline)}",
        band=dataclasses.replace(
            band, low_hz=round(band_hz[0], 3), high_hz=round(band_hz[1], 3), individual=False
        ),
        estimator=EstimatorSettings(method=best["method"], params=dict(best["params"])),
        description=(
            f"{protocol.summary} (calibrated on {where}: {band_note}, "
            f"{best['method']} {best['params'] or 'defaults'}, held-out RMS phase error "
            f"{best['rms_deg']:.1f} deg)"
        ),
    )
    logger.info(
        "chosen: %s %s, band %.2f-%.2f Hz", best["method"], best["params"] or "(defaults)", *band_hz
    )
    return result


def calibrate(
    baseline,
    protocol,
    *,
    seconds: float | None = None,
    holdout: float = 0.3,
    methods: Sequence[str] | None = None,
    name: str | None = None,
):
    """Tune ``protocol``'s band and estimator to one person's baseline recording.

    Parameters
    ----------
    baseline : str or Path
        The person's baseline recording (any format MNE reads, or XDF).
    protocol : Protocol or str
        The phase protocol to start from (a preset name or a TOML path too).
    seconds : float, optional
        Use only the first ``seconds`` of the recording.
    holdout : float
        Share of the baseline held out to score the candidates (0.1 to 0.6).
    methods : list of str, optional
        Estimators to consider (default every candidate of :data:`CANDIDATES`).
    name : str, optional
        The tuned protocol's name; default the protocol's name and the person's: the BIDS
        ``sub-`` (and ``ses-``) label of the baseline's file name, else the file's name, e.g.
        ``mu-trough-c3-sub-01_ses-02`` or ``mu-trough-c3-rest01``.

    Returns
    -------
    Protocol
        The tuned protocol: the band fixed (``individual = false``), the best estimator.
        Save it with :func:`closedloop.protocol.protocol_to_toml`.
    """
    return run_calibration(baseline, protocol, seconds=seconds, holdout=holdout, methods=methods, name=name).protocol
