"""Per-person causal Wiener predictor of the analytic signal, self-calibrating (our design).

Training (``fit``): from the baseline, ridge least squares finds complex FIR weights on the
most recent raw derived samples that best reproduce the offline ground-truth analytic signal
(zero-phase band-pass + Hilbert) at the newest sample. That is the linear minimum-mean-square
causal estimate of the analytic signal for this person's spectrum, noise and rhythm: the
filter's delay, bias and band shape are learnt, not assumed. The weights ignore offsets and
linear drifts inside the window (the band excludes them); the ridge strength is chosen on a
held-out last part of the baseline by the circular spread of the phase error where the rhythm
is strong.

Run time: one complex dot product per sample. Two slow corrections keep it unbiased when the
rhythm drifts away from the baseline (alpha frequency, waveform, noise):

- the offline truth becomes available ``D`` samples late (``D`` = half the truth filter), so
  the estimator computes it for the sample ``D`` back and tracks the mean rotation between
  its own estimate and the truth there (exponential forgetting over ``adapt_s``);
- every predicted crossing (``next_crossing_s`` falling before the next sample) is checked
  against the delayed truth at that exact moment, and the mean error as a function of the
  phase aimed at is tracked on a 30-degree grid. ``next_crossing_s`` aims at the phase whose
  expected outcome is the target. The grid starts from a pass over the baseline in ``fit``.
"""

from __future__ import annotations

import cmath
import math
from typing import Any, ClassVar

import numpy as np
from scipy.fft import fft, ifft, next_fast_len

from closedloop.errors import DataError
from closedloop.estimators import kernels
from closedloop.estimators.base import History, wrap_deg
from closedloop.estimators.linear import ComplexFIREstimator
from closedloop.groundtruth import interior_analytic, truth_fir

RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
GRID_STEP_DEG = 30.0


def analytic_fir(h: np.ndarray) -> np.ndarray:
    """Complex FIR whose output is the analytic signal of the real linear-phase FIR ``h``'s."""
    n_fft = next_fast_len(8 * h.shape[0])
    spec = fft(h, n_fft)
    spec[1 : (n_fft + 1) // 2] *= 2.0
    spec[(n_fft + 2) // 2 :] = 0.0
    return ifft(spec)[: h.shape[0]]


def _normal_equations(
    x: np.ndarray, z: np.ndarray, n_taps: int, proj: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """``P X^T X P`` and ``P X^T z`` for the windows ending at samples ``start .. stop - 1``.

    ``X`` holds one window of ``n_taps`` raw samples per row and ``P`` (``proj``) removes
    offset and drift. ``X^T X`` comes from prefix sums of lagged products: O(n L), not
    O(n L^2). The mean of ``x`` is removed first (``P`` ignores it; precision gains).
    """
    x = x - x.mean()
    n = x.shape[0]
    first = start - n_taps + 1  # first sample of the first window
    xtx = np.zeros((n_taps, n_taps))
    i = np.arange(n_taps)
    for k in range(n_taps):
        prefix = np.concatenate([[0.0], np.cumsum(x[: n - k] * x[k:])])
        rows = i[: n_taps - k]
        vals = prefix[stop - n_taps + 1 + rows] - prefix[first + rows]
        xtx[rows, rows + k] = vals
        xtx[rows + k, rows] = vals
    windows = np.lib.stride_tricks.sliding_window_view(x, n_taps)[first : stop - n_taps + 1]
    xtz = windows.T @ z[start:stop]
    return proj @ xtx @ proj, proj @ xtz


def _phase_spread(z_est: np.ndarray, z_true: np.ndarray) -> float:
    amp = np.abs(z_true)
    strong = amp >= np.median(amp)
    err = np.angle(z_true[strong] * np.conj(z_est[strong]))
    r = abs(np.mean(np.exp(1j * err)))
    return math.sqrt(-2.0 * math.log(r)) if r > 0 else math.inf


class WienerEstimator(ComplexFIREstimator):
    """Causal Wiener filter for the analytic signal, trained on the person's baseline.

    Parameters (``**params``)
    -------------------------
    window_s : float or "auto"
        Length of the FIR over the raw signal; "auto" (default): one cycle of the band centre,
        at least 0.5 s.
    ridge : float or "auto"
        Ridge strength relative to the mean input power; "auto" (default) chooses it on the
        held-out last quarter of the baseline.
    holdout : float
        Share of the baseline held out to choose the ridge (default 0.25).
    adapt_s : float
        Time constant of the delayed-truth corrections, s (default 20; 0 turns them off).
    """

    name = "wiener"
    defaults: ClassVar[dict[str, Any]] = {
        "window_s": "auto",
        "ridge": "auto",
        "holdout": 0.25,
        "adapt_s": 20.0,
    }
    needs_fit = True

    @property
    def min_baseline_s(self) -> float:  # type: ignore[override]
        return max(4.0, 8.0 * self.n_taps / self.sfreq)

    # -- set-up ----------------------------------------------------------------------------
    def _init_params(self) -> None:
        if self.params["window_s"] == "auto":
            # at least one cycle of the band centre: 0.5 s for alpha, 0.8 s for 0.5-2 Hz
            window_s = max(0.5, 1.0 / self.center_hz)
        else:
            window_s = self._param_number("window_s", 0.05, 5.0)
        self.window_s = window_s
        self._param_number("holdout", 0.05, 0.5)
        if self.params["ridge"] != "auto":
            self._param_number("ridge", 0.0, 1e6)
        self.adapt_s = self._param_number("adapt_s", 0.0, 3600.0)
        self._keep_sample = (
            math.exp(-1.0 / (self.adapt_s * self.sfreq)) if self.adapt_s > 0 else 0.0
        )
        n = max(4, round(window_s * self.sfreq))
        # until fitted: a plain quadrature pair at the band centre (a rough answer; fit replaces it)
        t = (np.arange(n) - (n - 1)) / self.sfreq
        taper = np.hanning(n + 2)[1:-1]
        self.correction = 1.0 + 0.0j
        self.chosen_ridge = math.nan
        h_truth = analytic_fir(truth_fir(self.sfreq, self.band_hz))[::-1]
        self.delay = h_truth.shape[0] // 2
        self._t_re = np.ascontiguousarray(h_truth.real)
        self._t_im = np.ascontiguousarray(h_truth.imag)
        self.grid_deg = np.arange(-180.0, 180.0, GRID_STEP_DEG)
        self.grid = np.zeros(self.grid_deg.shape[0], dtype=np.complex128)
        self.rotation_acc = 0.0 + 0.0j
        self._setup_fir(2.0 * taper * np.exp(2j * np.pi * self.center_hz * t) / taper.sum())

    def _setup_fir(self, weights: np.ndarray) -> None:
        super()._setup_fir(weights)
        self.piece = max(1, int(self.sfreq))  # samples handled per kernel call
        span = max(self.n_taps + self.freq_lag, self._t_re.shape[0])
        self.history = History(span + self.piece)
        self.ring_size = self.delay + 2 * self.piece + 2
        self._z_ring = np.full(self.ring_size, np.nan + 0j)
        self._t_ring = np.full(self.ring_size, np.nan + 0j)
        self._pend: list[tuple[float, float, float]] = []
        self._last_query: tuple[int, float] | None = None
        self._last_chunk_n = 1

    def _reset_state(self) -> None:
        super()._reset_state()
        if hasattr(self, "_z_ring"):
            self._z_ring[:] = np.nan
            self._t_ring[:] = np.nan
            self._pend = []
            self._last_query = None

    @property
    def rotation(self) -> complex:
        """Unit rotation applied to the raw estimate (delayed-truth phase tracking)."""
        acc = self.rotation_acc
        return acc / abs(acc) if abs(acc) > 0 else 1.0 + 0.0j

    # -- run time --------------------------------------------------------------------------
    def _process_good(self, x: np.ndarray) -> None:
        self._last_chunk_n = x.shape[0]
        for start in range(0, x.shape[0], self.piece):
            self._process_piece(x[start : start + self.piece])
        hist = self.history
        if hist.count < self.n_taps:
            return
        newest = hist.count - 1
        zh = self._z_ring
        z_now = complex(zh[newest % self.ring_size]) * self.rotation * self.correction
        self.phase_deg = math.degrees(math.atan2(z_now.imag, z_now.real))
        self.amplitude = abs(z_now)
        self.ready = True
        lag = self.freq_lag
        z_then = complex(zh[(newest - lag) % self.ring_size])
        if hist.count >= self.n_taps + lag and cmath.isfinite(z_then):
            dz = z_now * (z_then * self.rotation * self.correction).conjugate()
            freq = math.atan2(dz.imag, dz.real) * self.sfreq / (2.0 * math.pi * lag)
            self.frequency_hz = min(max(freq, self.band_hz[0]), self.band_hz[1])
        else:
            self.frequency_hz = self.center_hz

    def _process_piece(self, x: np.ndarray) -> None:
        m = x.shape[0]
        if m == 1:
            self._process_one(x)
            return
        hist = self.history
        hist.push(x)
        newest = hist.count - 1
        end = hist.index + hist.size
        ring = self.ring_size
        idx = np.arange(newest - m + 1, newest + 1)
        n_est = min(m, hist.count - self.n_taps + 1)
        if n_est > 0:
            self._ensure_out(m)
            kernels.complex_fir(
                hist.buf, end, n_est, self._w_re, self._w_im, self._out_re, self._out_im
            )
            self._z_ring[idx[m - n_est :] % ring] = self._out_re[:n_est] + 1j * self._out_im[:n_est]
        n_truth = min(m, hist.count - self._t_re.shape[0] + 1)
        if self.adapt_s <= 0 or n_truth <= 0:
            return
        self._ensure_out(m)
        kernels.complex_fir(
            hist.buf, end, n_truth, self._t_re, self._t_im, self._out_re, self._out_im
        )
        t_idx = idx[m - n_truth :] - self.delay
        truth = self._out_re[:n_truth] + 1j * self._out_im[:n_truth]
        self._t_ring[t_idx % ring] = truth
        # rotation tracking: weight ~ |truth| |estimate|, forgetting per sample
        prod = truth * np.conj(self._z_ring[t_idx % ring])
        prod = np.where(np.isfinite(prod), prod, 0.0)
        keep = self._keep_sample
        decay = keep ** np.arange(n_truth - 1, -1, -1)
        self.rotation_acc = self.rotation_acc * keep**n_truth + (1.0 - keep) * np.dot(decay, prod)
        if self._pend:
            self._check_crossings(t_idx[-1])

    def _process_one(self, x: np.ndarray) -> None:
        """The per-sample path of :meth:`_process_piece` with scalars (chunk size 1)."""
        hist = self.history
        hist.push(x)
        newest = hist.count - 1
        end = hist.index + hist.size
        ring = self.ring_size
        out_re, out_im = self._out_re, self._out_im
        if out_re.shape[0] < 1:
            self._ensure_out(1)
            out_re, out_im = self._out_re, self._out_im
        if hist.count >= self.n_taps:
            kernels.complex_fir(hist.buf, end, 1, self._w_re, self._w_im, out_re, out_im)
            self._z_ring[newest % ring] = complex(out_re[0], out_im[0])
        if self.adapt_s <= 0 or hist.count < self._t_re.shape[0]:
            return
        kernels.complex_fir(hist.buf, end, 1, self._t_re, self._t_im, out_re, out_im)
        truth = complex(out_re[0], out_im[0])
        k = (newest - self.delay) % ring
        self._t_ring[k] = truth
        prod = truth * complex(self._z_ring[k]).conjugate()
        keep = self._keep_sample
        if cmath.isfinite(prod):
            self.rotation_acc = self.rotation_acc * keep + (1.0 - keep) * prod
        else:
            self.rotation_acc *= keep
        if self._pend:
            self._check_crossings(newest - self.delay)

    def _check_crossings(self, last_truth: int) -> None:
        """Score pending crossings whose truth is known now; update the grid."""
        ring = self.ring_size
        still = []
        keep = math.exp(-1.0 / (self.adapt_s * self.center_hz))  # per crossing: ~1 a cycle
        for t, aimed, weight in self._pend:
            k = math.floor(t)
            if k + 1 > last_truth:
                still.append((t, aimed, weight))
                continue
            if k < last_truth - ring + 2:
                continue
            frac = t - k
            z = self._t_ring[k % ring] * (1.0 - frac) + self._t_ring[(k + 1) % ring] * frac
            if not np.isfinite(z):
                continue
            err = (
                z * abs(z) * complex(math.cos(math.radians(aimed)), -math.sin(math.radians(aimed)))
            )
            self._grid_update(aimed, err, keep)
        self._pend = still

    def _grid_update(self, aimed: float, err: complex, keep: float) -> None:
        pos = (wrap_deg(aimed) + 180.0) / GRID_STEP_DEG
        i = math.floor(pos) % self.grid.shape[0]
        u = pos - math.floor(pos)
        j = (i + 1) % self.grid.shape[0]
        for g, w in ((i, 1.0 - u), (j, u)):
            if w > 0:
                a = 1.0 - keep**w
                self.grid[g] = (1.0 - a) * self.grid[g] + a * err

    def _grid_bias_deg(self, aimed: float) -> float:
        pos = (wrap_deg(aimed) + 180.0) / GRID_STEP_DEG
        i = math.floor(pos) % self.grid.shape[0]
        u = pos - math.floor(pos)
        v = self.grid[i] * (1.0 - u) + self.grid[(i + 1) % self.grid.shape[0]] * u
        return math.degrees(math.atan2(v.imag, v.real)) if abs(v) > 0 else 0.0

    def aimed_phase_deg(self, target_phase_deg: float) -> float:
        """The estimated phase to fire at so that the true phase at delivery is the target."""
        aimed = float(target_phase_deg)
        if self.adapt_s > 0:
            for _ in range(2):
                aimed = target_phase_deg - self._grid_bias_deg(aimed)
        return aimed

    def next_crossing_s(self, target_phase_deg: float) -> float:
        """Seconds to the next crossing of the target, aimed so that it hits on average."""
        if not self.ready or not math.isfinite(self.phase_deg):
            return math.nan
        aimed = self.aimed_phase_deg(target_phase_deg)
        ahead = ((aimed - self.phase_deg) % 360.0) / (360.0 * self.frequency_hz)
        self._note_crossing(ahead, aimed)
        return ahead

    def _note_crossing(self, ahead: float, aimed: float) -> None:
        """Remember a crossing a caller would act on now, to score it when the truth is known.

        A caller deciding once per chunk of n samples fires for crossings before the next chunk
        arrives; the estimator takes the size of the latest chunk as that horizon.
        """
        if self.adapt_s <= 0 or ahead * self.sfreq >= self._last_chunk_n:
            return
        newest = self.history.count - 1
        key = (newest, round(aimed, 6))
        if key == self._last_query:
            return
        self._last_query = key
        if len(self._pend) < 10_000:
            self._pend.append((newest + ahead * self.sfreq, aimed, 1.0))

    # -- training --------------------------------------------------------------------------
    def _projection(self) -> np.ndarray:
        n = self.n_taps
        basis = np.vstack([np.ones(n), np.linspace(-1.0, 1.0, n)]).T
        q, _ = np.linalg.qr(basis)
        return np.eye(n) - q @ q.T

    @staticmethod
    def _ridge_solver(xtx: np.ndarray, xtz: np.ndarray):
        """Weights for any ridge strength from one eigendecomposition of ``P X^T X P``."""
        evals, evecs = np.linalg.eigh(xtx)
        scale = max(float(np.mean(evals)), 1e-300)
        rhs = evecs.T @ xtz

        def solve(ridge: float) -> np.ndarray:
            return evecs @ (rhs / (np.maximum(evals, 0.0) + ridge * scale))

        return solve

    def fit(self, baseline: np.ndarray) -> None:
        """Train the weights on the baseline, then calibrate the corrections on a pass over it."""
        x = self._check_baseline(baseline, min_seconds=self.min_baseline_s)
        z = interior_analytic(x, self.sfreq, self.band_hz)
        finite = np.flatnonzero(np.isfinite(z))
        start = max(int(finite[0]) if finite.size else x.shape[0], self.n_taps - 1)
        stop = int(finite[-1]) + 1 if finite.size else 0
        n_rows = stop - start
        if n_rows < 4 * self.n_taps:
            raise DataError(
                f"the baseline is too short to train 'wiener' with a {self.n_taps}-sample window: "
                f"{max(n_rows, 0)} usable samples; record a longer baseline (30 s or more)."
            )
        proj = self._projection()
        ridge = self.params["ridge"]
        if ridge == "auto":
            split = start + int(n_rows * (1.0 - float(self.params["holdout"])))
            solve = self._ridge_solver(*_normal_equations(x, z, self.n_taps, proj, start, split))
            test = np.arange(split + self.n_taps, stop)
            windows = np.lib.stride_tricks.sliding_window_view(x, self.n_taps)[
                test - self.n_taps + 1
            ]
            scores = [_phase_spread(windows @ solve(c), z[test]) for c in RIDGE_GRID]
            ridge = RIDGE_GRID[int(np.argmin(scores))]
        ridge = float(ridge)
        solve = self._ridge_solver(*_normal_equations(x, z, self.n_taps, proj, start, stop))
        self.chosen_ridge = ridge
        self.correction = 1.0 + 0.0j
        self.rotation_acc = 0.0 + 0.0j
        self.grid[:] = 0.0
        self._setup_fir(solve(ridge))
        self.fitted = True
        self.reset()
        if self.adapt_s > 0:
            self._calibrate_pass(x, z)
        self._note_baseline_amplitude(x)

    def _calibrate_pass(self, x: np.ndarray, z_true: np.ndarray) -> None:
        """Start both corrections from the baseline, computed at once for every sample.

        The rotation starts at the mean rotation between estimate and truth; the grid gets
        every crossing of every grid phase the estimator would have predicted on the baseline,
        scored against the truth at that moment.
        """
        z = self.analytic_over(x)
        ok = np.isfinite(z) & np.isfinite(z_true)
        prod = z_true[ok] * np.conj(z[ok])
        if prod.size == 0:
            return
        self.rotation_acc = complex(np.mean(prod))
        zc = z * self.rotation
        lag = self.freq_lag
        phase = np.angle(zc[lag:], deg=True)
        dphi = np.angle(zc[lag:] * np.conj(zc[:-lag]))
        freq = np.clip(dphi * self.sfreq / (2.0 * np.pi * lag), *self.band_hz)
        step_deg = 360.0 * freq / self.sfreq
        keep = math.exp(-1.0 / (self.adapt_s * self.center_hz))
        for aimed in self.grid_deg:
            ahead_deg = (aimed - phase) % 360.0
            hit = np.flatnonzero((ahead_deg < step_deg) & np.isfinite(phase))
            t = hit + lag + ahead_deg[hit] / step_deg[hit]
            k = np.floor(t).astype(int)
            good = k + 1 < x.shape[0]
            k, t = k[good], t[good]
            frac = t - k
            zt = z_true[k] * (1.0 - frac) + z_true[np.minimum(k + 1, x.shape[0] - 1)] * frac
            zt = zt[np.isfinite(zt)]
            for v in zt * np.abs(zt) * np.exp(-1j * np.radians(aimed)):
                self._grid_update(float(aimed), complex(v), keep)
