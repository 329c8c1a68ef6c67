"""Does a multichannel causal Wiener predictor beat the single-channel one? (issue 4)

    python benchmarks/estimators_multichannel.py REC --channel O1 --rate 151.5 [--baseline-s 30]
        [--window-s 0.5] [--sets "O1;O1,O2;O1,O2,P3,Pz,P4;eeg"]

The estimate of the protocol channel's truth analytic signal (closedloop.groundtruth, zero-phase
FIR + Hilbert of that channel, no re-reference) at the newest sample is a complex linear
function of the last ``--window-s`` of raw samples of a set of channels: per channel, the
window's offset and linear drift are projected out (as in ``wiener``) and the channel is scaled
to unit RMS on the training rows; the weights are ridge least squares (ridge relative to the
mean eigenvalue of ``X^T X``). Only past and present samples enter the features.

Per channel set (``;``-separated, each a comma list of names found with
closedloop.channels.find_channel, or ``eeg`` = every channel except EMG/EOG/ECG/trigger/
accelerometer/status ones) three variants are scored:

- ``base``: trained on the baseline (its own interior truth, as ``wiener.fit`` does), ridge
  chosen on the held-out last quarter of the baseline by the circular spread of the phase
  error where the truth is strong (``wiener``'s rule), then refitted on the whole baseline;
- ``eval``: trained on the evaluated part itself with the ridge fixed at 1e-3 (an optimistic
  floor, as the ``linear`` line of benchmarks/estimators_floor.py);
- ``cv``: trained on alternate 10 s blocks of the evaluated part and scored on the others
  (two folds, ridge 1e-3): what more training data from the same state would give, held out;
- ``bsp`` / ``esp`` (sets of more than one channel): every channel through the protocol
  channel's baseline-trained single-channel filter, then one complex weight per channel (ridge
  1e-3), fitted on the baseline / on the evaluated part: few parameters, the same run-time cost;
- the default ``wiener`` (adapt_s=0) is printed first as the reference.

Scoring is benchmarks/estimators_floor.py's: each estimate's global rotation against the truth
over the evaluated part is removed, the amplitude gate is set so that the trigger rate (per
target, targets 0 and 180, 0.25 s apart, the harness's crossing rule after every sample)
equals ``--rate`` (give ``ar``'s rate from ``bench accuracy``), and the circular SD of the
phase error is printed. Also printed: the SD at the protocol's own gate (median of the
estimate's amplitude over the baseline; none for ``cv``, which has no baseline estimate), the
chosen ridge and the cost (taps x channels of real-by-complex multiply-adds per sample).

The runs of November 2026 (rates: ``ar``'s with ``bench accuracy --harness``, the same
trigger rule; on S001R02 the engine's rate is about half the harness's):

    B=../shared/recordings/mne-testing-data/multiple_annotation_chans.bdf
    python benchmarks/estimators_multichannel.py $B --channel O1 --rate 151.5
    python benchmarks/estimators_multichannel.py $B --channel O2 --rate 143.8 \
        --sets "O2;O1,O2;O1,O2,P3,Pz,P4;eeg"
    E=../shared/recordings/eegmmidb/S001R02_first60s.edf
    S="O1,O2;O1,Oz,O2;O1,Oz,O2,Po7,Po3,Poz,Po4,Po8;O1,Oz,O2,Po7,Po3,Poz,Po4,Po8,P3,Pz,P4;eeg"
    python benchmarks/estimators_multichannel.py $E --channel O1 --rate 135.5 --sets "O1;$S"
    python benchmarks/estimators_multichannel.py $E --channel O2 --rate 115.9 --sets "O2;$S"

Outcome on the BDF: no baseline-trained multichannel variant beats the single channel by more
than noise at ar's rate (O1 19.5 single, 19.7-20.6 multichannel; O2 18.2 against 18.0-19.0);
trained on the evaluated part the floor falls to 17.4 (O1) / 15.5 (O2), but held out (``cv``)
only to 18.2 / 17.1. S001R02 (30 s evaluated, too short for ``eval``/``cv`` to mean much)
is neither clearly helped nor hurt: 12.6-16.0 against 13.8 / 14.6.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from estimators_floor import BAND_HZ, at_rate, derotate, load, recording_parser, trigger_errors

from closedloop.channels import find_channel
from closedloop.errors import DataError
from closedloop.estimators import make_estimator
from closedloop.estimators.wiener import RIDGE_GRID, _phase_spread
from closedloop.groundtruth import circular_stats, interior_analytic

NOT_EEG = ("emg", "eog", "ecg", "ekg", "trigger", "status", "acc", "stim", "resp")
GRID = (*RIDGE_GRID, 1.0, 10.0)


def projection(n_taps: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.vstack([np.ones(n_taps), np.linspace(-1.0, 1.0, n_taps)]).T)
    return np.eye(n_taps) - q @ q.T


class Features:
    """Projected, scaled windows of several channels; rows are indexed by their newest sample."""

    def __init__(self, data: np.ndarray, n_taps: int):
        self.data = data - data.mean(axis=1, keepdims=True)
        self.n_taps = n_taps
        self.proj = projection(n_taps)
        self.scale = np.ones(data.shape[0])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Feature matrix (len(idx), channels * taps) for windows ending at samples ``idx``."""
        out = np.empty((idx.shape[0], self.data.shape[0] * self.n_taps))
        for c, x in enumerate(self.data):
            win = np.lib.stride_tricks.sliding_window_view(x, self.n_taps)[idx - self.n_taps + 1]
            out[:, c * self.n_taps : (c + 1) * self.n_taps] = (win @ self.proj) / self.scale[c]
        return out

    def set_scale(self, idx: np.ndarray) -> None:
        self.scale[:] = 1.0
        x = self.rows(idx)
        rms = np.sqrt(np.mean(x.reshape(x.shape[0], -1, self.n_taps) ** 2, axis=(0, 2)))
        self.scale[:] = np.where(rms > 0, rms, 1.0)

    def predict(self, w: np.ndarray, chunk: int = 4096) -> np.ndarray:
        n = self.data.shape[1]
        z = np.full(n, np.nan + 0j)
        for a in range(self.n_taps - 1, n, chunk):
            idx = np.arange(a, min(n, a + chunk))
            z[idx] = self.rows(idx) @ w
        return z


def ridge_solver(x: np.ndarray, z: np.ndarray):
    xtx = x.T @ x
    evals, evecs = np.linalg.eigh(xtx)
    scale = max(float(np.mean(evals)), 1e-300)
    rhs = evecs.T @ (x.T @ z)

    def solve(ridge: float) -> np.ndarray:
        return evecs @ (rhs / (np.maximum(evals, 0.0) + ridge * scale))

    return solve


def fit_baseline(feat: Features, x_proto: np.ndarray, start: int, sfreq: float, holdout=0.25):
    """Train on the baseline's interior truth; ridge on the held-out last quarter."""
    z = interior_analytic(x_proto[:start], sfreq, BAND_HZ)
    ok = np.flatnonzero(np.isfinite(z))
    first = max(int(ok[0]), feat.n_taps - 1)
    last = int(ok[-1]) + 1
    split = first + int((last - first) * (1.0 - holdout))
    feat.set_scale(np.arange(first, last))
    train = np.arange(first, split)
    test = np.arange(split + feat.n_taps, last)
    solve = ridge_solver(feat.rows(train), z[train])
    xt = feat.rows(test)
    scores = [_phase_spread(xt @ solve(c), z[test]) for c in GRID]
    ridge = GRID[int(np.argmin(scores))]
    rows = np.arange(first, last)
    return ridge_solver(feat.rows(rows), z[rows])(ridge), ridge


def fit_eval(feat: Features, z_true: np.ndarray, start: int, stop: int, ridge=1e-3):
    rows = np.arange(start, stop)
    feat.set_scale(rows)
    return ridge_solver(feat.rows(rows), z_true[rows])(ridge)


def fit_crossval(feat: Features, z_true, start, stop, sfreq, block_s=10.0, ridge=1e-3):
    """Two-fold over alternate blocks of the evaluated part: each block predicted by weights
    trained on the other fold's blocks (more training data, from the same state, held out)."""
    rows = np.arange(start, stop)
    feat.set_scale(rows)
    fold = ((rows - start) // round(block_s * sfreq)) % 2
    z = np.full(z_true.shape[0], np.nan + 0j)
    for k in (0, 1):
        train, test = rows[fold != k], rows[fold == k]
        w = ridge_solver(feat.rows(train), z_true[train])(ridge)
        z[test] = feat.rows(test) @ w
    return z


def spatial_outputs(feat: Features, w1: np.ndarray) -> np.ndarray:
    """Every channel through the protocol channel's single-channel filter: (channels, samples)."""
    n_taps, n = feat.n_taps, feat.data.shape[1]
    out = np.full((feat.data.shape[0], n), np.nan + 0j)
    for c, x in enumerate(feat.data):
        win = np.lib.stride_tricks.sliding_window_view(x, n_taps)
        out[c, n_taps - 1 :] = (win @ feat.proj) @ w1
    return out


def fit_spatial(y: np.ndarray, z: np.ndarray, rows: np.ndarray, ridge=1e-3) -> np.ndarray:
    """Complex spatial weights a (one per channel): z ~ sum_c a_c y_c, ridge least squares."""
    a = y[:, rows].T
    g = a.conj().T @ a
    g += ridge * np.trace(g).real / g.shape[0] * np.eye(g.shape[0])
    return np.linalg.solve(g, a.conj().T @ z[rows]) @ y


def score(z, z_true, truth, start, stop, rate):
    z = derotate(z, z_true, start, stop)
    stats, got = at_rate(z, np.abs(z), truth, start, stop, rate)
    base_amp = np.abs(z[:start])
    base_amp = base_amp[np.isfinite(base_amp)]
    if not base_amp.size:  # no estimate over the baseline (cv): no protocol gate
        return stats.sd_deg, got, math.nan, math.nan
    err, own = trigger_errors(z, np.abs(z), float(np.median(base_amp)), truth, start, stop)
    return stats.sd_deg, got, circular_stats(err).sd_deg, own


def resolve(spec: str, names: list[str], proto: int) -> list[int]:
    if spec.strip().lower() == "eeg":
        idx = [i for i, n in enumerate(names) if not n.lower().startswith(NOT_EEG)]
    else:
        idx = []
        for name in spec.split(","):
            try:
                idx.append(find_channel(name.strip(), names))
            except DataError:
                print(f"    (no channel {name.strip()!r}, skipped)")
    return [proto] + [i for i in dict.fromkeys(idx) if i != proto]


def show(tag: str, label: str, result: tuple, ridge: float, cost: str) -> None:
    sd, got, sdg, own = result
    print(f"  {tag:4s} {label:39s} {sd:5.1f} {got:6.1f} {sdg:7.1f} {own:6.1f}  {ridge:.0e}  {cost}")
    sys.stdout.flush()


def main() -> None:
    parser = recording_parser(__doc__, "triggers per minute per target")
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--sets", default="O1;O1,O2;O1,O2,P3,Pz,P4;eeg")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluated-part fits")
    args = parser.parse_args()
    data, sfreq, names, proto, truth, start, stop = load(args)
    x = data[proto]
    z_true = truth.analytic
    n_taps = max(4, round(args.window_s * sfreq))
    print(
        f"{args.recording} {names[proto]} ({sfreq:g} Hz): circular SD at {args.rate:g}/min per "
        f"target; window {n_taps} taps; SD@gate = at the baseline-median gate"
    )
    print(f"  {'variant':44s} {'SD':>5s} {'/min':>6s} {'SD@gate':>7s} {'/min':>6s}  ridge  cost")
    est = make_estimator("wiener", sfreq, BAND_HZ, adapt_s=0.0)
    est.fit(x[:start])
    sd, got, sdg, own = score(est.analytic_over(x), z_true, truth, start, stop, args.rate)
    print(
        f"  {'wiener (default, baseline)':44s} {sd:5.1f} {got:6.1f} {sdg:7.1f} {own:6.1f}"
        f"  {est.chosen_ridge:.0e}  {est.n_taps}x1"
    )
    w1, _ = fit_baseline(Features(data[[proto]], n_taps), x, start, sfreq)
    z_base = interior_analytic(x[:start], sfreq, BAND_HZ)
    base_rows = np.flatnonzero(np.isfinite(z_base))
    base_rows = base_rows[base_rows >= n_taps - 1]
    for spec in args.sets.split(";"):
        chans = resolve(spec, names, proto)
        label = ",".join(names[i].strip(".") for i in chans)
        if len(label) > 30:
            label = label[:27] + "..."
        cost = f"{n_taps}x{len(chans)}"
        feat = Features(data[chans], n_taps)
        w, ridge = fit_baseline(feat, x, start, sfreq)
        show(
            "base",
            label,
            score(feat.predict(w), z_true, truth, start, stop, args.rate),
            ridge,
            cost,
        )
        if len(chans) > 1:
            y = spatial_outputs(feat, w1)
            for tag, target, rows in (
                ("bsp", z_base, base_rows),
                ("esp", z_true, np.arange(start, stop)),
            ):
                z = fit_spatial(y, target, rows)
                show(tag, label, score(z, z_true, truth, start, stop, args.rate), 1e-3, cost)
        if args.no_eval:
            continue
        z = feat.predict(fit_eval(feat, z_true, start, stop))
        show("eval", label, score(z, z_true, truth, start, stop, args.rate), 1e-3, cost)
        z = fit_crossval(feat, z_true, start, stop, sfreq)
        show("cv", label, score(z, z_true, truth, start, stop, args.rate), 1e-3, cost)


if __name__ == "__main__":
    main()
