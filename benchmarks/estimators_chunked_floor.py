"""What does chunked arrival cost a causal phase estimate, at the same trigger rate? (issue 17)

    python benchmarks/estimators_chunked_floor.py REC --channel O1 --rate 70 --chunk-sizes 1,2,4
        [--baseline-s 30]

Decisions are made once per chunk, at its newest sample ``t``, for the crossings of 0 and 180
degrees predicted in the engine's planning window ``[t + L, t + L + chunk]`` (``L`` =
closedloop.engine.DECISION_LATENCY_S), 0.25 s apart; the amplitude gate (the estimate's own
amplitude at ``t``) is set so that the trigger rate per target equals ``--rate``, so that every
chunk size and estimate is compared at the same rate. Each estimate's global rotation against
the truth is removed per horizon (what bias tracking cannot fix, as in
benchmarks/estimators_floor.py). Printed per chunk size, circular SD of the phase error:

- ``carried forward``: the baseline-trained ``wiener`` estimate at ``t``, its phase carried
  forward at its instantaneous frequency (the engine's rule before issue 17);
- ``direct (baseline)``: the baseline-trained ``wiener`` direct multi-step predictors, one per
  horizon of its grid (what the engine asks now);
- ``direct, trained on the evaluated part``: the same predictors fitted by least squares on the
  data they are scored on (an optimistic floor for causal linear prediction at each horizon).

The difference between a chunk size's figures and the chunk-1 figures of the same line is what
the chunked arrival itself costs: the truth at a crossing predicted ``h`` ahead depends on ``h``
more of the future than at ``t``.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from estimators_floor import derotate, load, recording_parser

from closedloop.engine import DECISION_LATENCY_S
from closedloop.estimators import make_estimator
from closedloop.estimators.wiener import _horizon_cross_terms, _normal_equations
from closedloop.groundtruth import circular_stats, wrap_deg

BAND_HZ = (8.0, 13.0)
TARGETS_DEG = (0.0, 180.0)
MIN_INTERVAL_S = 0.25


def predictions(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(n_horizons, n_samples)``: each horizon's complex FIR over ``x`` (NaN before a window)."""
    n_taps = weights.shape[1]
    out = np.full((weights.shape[0], x.shape[0]), np.nan + 0j)
    for k, w in enumerate(weights):
        out[k, n_taps - 1 :] = np.convolve(x, w[::-1], mode="valid")
    return out


def oracle_weights(x, z_true, n_taps, horizons, start, stop, ridge=1e-3) -> np.ndarray:
    """Direct predictors per horizon, least squares on the rows ``start .. stop - 1``."""
    q, _ = np.linalg.qr(np.vstack([np.ones(n_taps), np.linspace(-1.0, 1.0, n_taps)]).T)
    proj = np.eye(n_taps) - q @ q.T
    stop = stop - int(horizons[-1])
    xtx, _ = _normal_equations(x, z_true, n_taps, proj, start, stop)
    xtz = proj @ _horizon_cross_terms(x, z_true, n_taps, horizons, start, stop)
    evals, evecs = np.linalg.eigh(xtx)
    gain = 1.0 / (np.maximum(evals, 0.0) + ridge * evals.mean())
    return (evecs @ ((evecs.T @ xtz) * gain[:, None])).T


def carried_forward(z0: np.ndarray, horizons: np.ndarray, sfreq: float) -> np.ndarray:
    """The estimate at ``t`` carried forward at its instantaneous frequency, per horizon."""
    lag = max(1, round(sfreq / np.mean(BAND_HZ) / 4.0))
    freq = np.full(z0.shape[0], np.mean(BAND_HZ))
    freq[lag:] = np.clip(
        np.angle(z0[lag:] * np.conj(z0[:-lag])) * sfreq / (2 * np.pi * lag), *BAND_HZ
    )
    freq = np.nan_to_num(freq, nan=float(np.mean(BAND_HZ)))
    return z0[None, :] * np.exp(2j * np.pi * freq[None, :] * horizons[:, None] / sfreq)


def candidates(
    z: np.ndarray, step: int, sfreq: float, chunk: int, start: int, stop: int, target: float
):
    """Per chunk end ``n``: the first predicted upward crossing of ``target`` in the window, as
    (n, time in s); phase interpolated linearly between the horizon grid's points."""
    lo = DECISION_LATENCY_S * sfreq / step
    hi = (DECISION_LATENCY_S * sfreq + chunk) / step
    k0, k1 = math.floor(lo), math.ceil(hi)
    ends = np.arange(start + chunk - 1 - start % chunk, stop, chunk)
    rel = np.angle(z[k0 : k1 + 1][:, ends] * np.exp(-1j * math.radians(target)))  # (K, n)
    out = []
    for j, n in enumerate(ends):
        prev = rel[0, j]
        for i in range(1, rel.shape[0]):
            d = math.remainder(rel[i, j] - prev, 2 * math.pi)
            if prev <= 0 < d and prev + d > 0:
                pos = k0 + i - 1 + (-prev) / d
                if pos > hi:
                    break
                if pos >= lo:
                    out.append((n, (n + pos * step) / sfreq))
                    break
            prev = rel[i, j]
    return out


def errors_at_rate(z, step, sfreq, chunk, truth, start, stop, rate):
    """Bisect the gate on ``|z[0]|`` at the chunk ends to ``rate``; errors and the rate got."""
    cands = {t: candidates(z, step, sfreq, chunk, start, stop, t) for t in TARGETS_DEG}
    amp = np.abs(z[0])
    values = amp[start:stop][np.isfinite(amp[start:stop])]
    minutes = (stop - start) / sfreq / 60.0

    def fire(threshold):
        errs = []
        for target, cand in cands.items():
            times, last = [], -math.inf
            for n, t in cand:
                if amp[n] >= threshold and t - last >= MIN_INTERVAL_S:
                    times.append(t)
                    last = t
            if times:
                errs.append(wrap_deg(truth.phase_at(np.asarray(times)) - target))
        e = np.concatenate(errs) if errs else np.zeros(0)
        return e, e.shape[0] / len(TARGETS_DEG) / minutes

    low, high = 0.0, 99.0
    for _ in range(14):
        q = 0.5 * (low + high)
        e, got = fire(float(np.percentile(values, q)))
        low, high = (q, high) if got > rate else (low, q)
    return circular_stats(e), got


def main() -> None:
    parser = recording_parser(__doc__, "triggers per minute per target")
    parser.add_argument("--chunk-sizes", default="1,2,4")
    args = parser.parse_args()
    data, sfreq, _, channel, truth, start, stop = load(args)
    x = data[channel]
    z_true = truth.analytic
    chunks = [int(c) for c in args.chunk_sizes.split(",")]
    est = make_estimator("wiener", sfreq, BAND_HZ, adapt_s=0.0)
    est.fit(x[:start])
    step = est.horizon_step
    need = math.ceil((DECISION_LATENCY_S * sfreq + max(chunks)) / step) + 1
    horizons = np.arange(min(need, est.n_horizons)) * step
    stop = min(stop, x.shape[0] - int(horizons[-1]))
    direct = predictions(x, est.horizon_weights[: horizons.shape[0]])
    estimates = {
        "carried forward": carried_forward(direct[0], horizons, sfreq),
        "direct (baseline)": direct,
        "direct, trained on the evaluated part": predictions(
            x, oracle_weights(x, z_true, est.n_taps, horizons, start, stop)
        ),
    }
    print(f"{args.recording} {args.channel}: circular SD at {args.rate:g} triggers/min per target")
    print(
        f"  {'estimate':40s} "
        + " ".join(f"{f'chunk {c} ({1000 * c / sfreq:.1f} ms)':>20s}" for c in chunks)
    )
    for name, z in estimates.items():
        z = np.array(
            [derotate(z[k], np.roll(z_true, -int(h)), start, stop) for k, h in enumerate(horizons)]
        )
        cells = []
        for c in chunks:
            stats, got = errors_at_rate(z, step, sfreq, c, truth, start, stop, args.rate)
            cells.append(f"{stats.sd_deg:6.1f} ({got:5.1f}/min)")
        print(f"  {name:40s} " + " ".join(f"{cell:>20s}" for cell in cells))


if __name__ == "__main__":
    main()
