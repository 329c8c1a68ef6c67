"""How good can a causal phase estimate be on a recording? Floors for ``bench accuracy``.

    python benchmarks/estimators_floor.py REC --channel O1 [--rate 152] [--baseline-s 30]

Triggers follow the harness rule (closedloop.estimators.evaluate: after every sample, fire at a
predicted crossing of 0 or 180 degrees that falls before the next sample, 0.25 s apart) on a
complex estimate given for every sample. The gate threshold is set so that the trigger rate
equals ``--rate`` (give ``ar``'s rate from ``bench accuracy``), so that estimators are compared
at the same rate. Each estimate's global rotation against the truth is removed first: the
figures are circular SDs, what bias tracking cannot fix. Printed per estimate:

- ``wiener (baseline)``: the default estimator's weights, trained on the baseline only;
- ``linear, trained on the evaluated part``: the best causal linear filter over the same
  window, least squares on the data it is scored on (an optimistic floor for linear methods);
- ``oracle gate on the true amplitude``: the baseline wiener's phase, gated on the offline
  truth's amplitude instead of its own.
"""

from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import numpy as np

from closedloop.angles import wrap_deg
from closedloop.channels import find_channel
from closedloop.estimators import make_estimator
from closedloop.estimators.wiener import _normal_equations
from closedloop.groundtruth import GroundTruth, circular_stats
from closedloop.io import open_recording

BAND_HZ = (8.0, 13.0)
TARGETS_DEG = (0.0, 180.0)
MIN_INTERVAL_S = 0.25


def trigger_errors(
    z: np.ndarray, score: np.ndarray, threshold: float, truth: GroundTruth, start: int, stop: int
) -> tuple[np.ndarray, float]:
    """Errors (degrees) of the triggers at 0 and 180 degrees, and the rate per minute."""
    sfreq = truth.sfreq
    lag = max(1, round(sfreq / np.mean(BAND_HZ) / 4.0))
    freq = np.full(z.shape[0], np.mean(BAND_HZ))
    freq[lag:] = np.clip(
        np.angle(z[lag:] * np.conj(z[:-lag])) * sfreq / (2 * np.pi * lag), *BAND_HZ
    )
    freq = np.nan_to_num(freq, nan=float(np.mean(BAND_HZ)))
    phase = np.degrees(np.angle(z))
    errors = []
    for target in TARGETS_DEG:
        ahead_s = ((target - phase) % 360.0) / (360.0 * freq)
        with np.errstate(invalid="ignore"):
            fire = np.flatnonzero((ahead_s < 1.0 / sfreq) & (score >= threshold))
        fire = fire[(fire >= start) & (fire < stop)]
        times, last = [], -math.inf
        for n in fire:
            t = n / sfreq + ahead_s[n]
            if t - last >= MIN_INTERVAL_S:
                times.append(t)
                last = t
        if times:
            errors.append(wrap_deg(truth.phase_at(np.asarray(times)) - target))
    err = np.concatenate(errors) if errors else np.zeros(0)
    return err, 60.0 * err.shape[0] / len(TARGETS_DEG) / ((stop - start) / sfreq)


def at_rate(z, score, truth, start, stop, rate):
    """Bisect the gate's percentile (over the evaluated part) to the rate; stats there."""
    values = score[start:stop]
    values = values[np.isfinite(values)]
    low, high = 0.0, 99.0
    for _ in range(14):
        q = 0.5 * (low + high)
        err, got = trigger_errors(z, score, float(np.percentile(values, q)), truth, start, stop)
        low, high = (q, high) if got > rate else (low, q)
    return circular_stats(err), got


def linear_fit(x, z_true, n_taps, start, stop):
    """Causal complex FIR by ridge least squares on rows start..stop (wiener's training)."""
    q, _ = np.linalg.qr(np.vstack([np.ones(n_taps), np.linspace(-1.0, 1.0, n_taps)]).T)
    proj = np.eye(n_taps) - q @ q.T
    xtx, xtz = _normal_equations(x, z_true, n_taps, proj, start, stop)
    evals, evecs = np.linalg.eigh(xtx)
    w = evecs @ ((evecs.T @ xtz) / (np.maximum(evals, 0.0) + 1e-3 * evals.mean()))
    z = np.full(x.shape[0], np.nan + 0j)
    z[n_taps - 1 :] = np.convolve(x, w[::-1], mode="valid")
    return z


def recording_parser(doc: str, rate_help: str) -> argparse.ArgumentParser:
    """The options every estimator benchmark takes: the recording, the protocol channel, the
    trigger rate to compare at and the baseline's length."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("recording")
    parser.add_argument("--channel", default="O1")
    parser.add_argument("--rate", type=float, default=150.0, help=rate_help)
    parser.add_argument("--baseline-s", type=float, default=30.0)
    return parser


class Setup(NamedTuple):
    """A recording read whole, its protocol channel's truth and the evaluated rows."""

    data: np.ndarray  # (n_channels, n_samples), µV
    sfreq: float
    names: list[str]
    channel: int  # row of the protocol channel
    truth: GroundTruth
    start: int  # first evaluated row: the end of the baseline
    stop: int  # evaluation ends 1 s before the end (the truth's edge)


def load(args: argparse.Namespace) -> Setup:
    """Read ``args.recording``; truth on ``args.channel``; evaluate after ``args.baseline_s``."""
    with open_recording(args.recording) as rec:
        data = rec.read(0, rec.n_samples)
        sfreq, names = rec.sfreq, list(rec.ch_names)
    channel = find_channel(args.channel, names)
    truth = GroundTruth(data[channel], sfreq, BAND_HZ)
    start = round(args.baseline_s * sfreq)
    stop = data.shape[1] - round(sfreq)
    return Setup(data, sfreq, names, channel, truth, start, stop)


def derotate(z: np.ndarray, z_true: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``z`` turned by its global rotation against the truth over rows ``start..stop``."""
    rot = np.nanmean((z_true * np.conj(z))[start:stop])
    return z * rot / abs(rot)


def main() -> None:
    args = recording_parser(__doc__, "triggers per minute").parse_args()
    data, sfreq, _, channel, truth, start, stop = load(args)
    x = data[channel]
    z_true = truth.analytic
    est = make_estimator("wiener", sfreq, BAND_HZ, adapt_s=0.0)
    est.fit(x[:start])
    estimates = {
        "wiener (baseline)": est.analytic_over(x),
        "linear, trained on the evaluated part": linear_fit(x, z_true, est.n_taps, start, stop),
    }
    print(f"{args.recording} {args.channel}: circular SD at {args.rate:g} triggers/min")
    for name, z in estimates.items():
        z = derotate(z, z_true, start, stop)
        stats, got = at_rate(z, np.abs(z), truth, start, stop, args.rate)
        print(f"  {name:40s} SD {stats.sd_deg:5.1f}  ({got:.1f}/min)")
        if name.startswith("wiener"):
            stats, got = at_rate(z, np.abs(z_true), truth, start, stop, args.rate)
            print(
                f"  {'oracle gate on the true amplitude':40s} SD {stats.sd_deg:5.1f}  ({got:.1f}/min)"
            )


if __name__ == "__main__":
    main()
