"""Per-person causal Wiener predictor of the analytic signal, self-calibrating (our design).

Training (``fit``): from the baseline, ridge least squares finds complex FIR weights on the
most recent raw derived samples that best reproduce the offline ground-truth analytic signal
(zero-phase band-pass + Hilbert) at the newest sample. That is the linear minimum-mean-square
causal estimate of the analytic signal for this person's spectrum, noise and rhythm: the
filter's delay, bias and band shape are learnt, not assumed. The weights ignore offsets and
linear drifts inside the window (the band excludes them); the ridge strength is chosen on a
held-out last part of the baseline by the circular spread of the phase error where the rhythm
is strong.

Run time (one Cython kernel, ``WienerKernel``, its arrays bound once): one complex dot product
per sample for the estimate and one for the delayed truth; those of the samples of a chunk are
computed side by side in vector registers (each in its own order, so the same bits as one
sample at a time), then the per-sample recursion below runs over them in sample order. Two
slow corrections keep it unbiased when the rhythm drifts away from the baseline (alpha
frequency, waveform, noise):

- the offline truth becomes available ``D`` samples late (``D`` = half the truth filter), so
  the estimator computes it for the sample ``D`` back and tracks the mean rotation between
  its own estimate and the truth there (exponential forgetting over ``adapt_s``);
- at the same samples it tracks the remaining error as a function of the (rotated)
  estimated phase on a 30-degree grid; ``next_crossing_s`` aims at the estimated phase whose
  expected true phase is the target. Both start from the baseline in ``fit``.

Every correction is learnt inside ``process`` from the samples alone: the state after N
samples does not depend on how they were chunked nor on when or how often it was queried
(live equals replay); ``next_crossing_s`` and the other answers change nothing.

Prediction for the horizon asked (issue 17): the engine decides once per chunk, for the
crossings due before the next chunk. ``fit`` also trains one complex FIR per horizon of a grid
(``horizon_step`` samples apart, up to :data:`MAX_HORIZON_S`) that predicts the offline truth
that far after the newest sample, by the same ridge least squares; ``window_crossing`` predicts
the analytic signal on the grid points spanning the planning window and returns the first
crossing of the aimed phase inside it, instead of carrying the phase at the newest sample
forward at the instantaneous frequency.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.fft import fft, ifft, next_fast_len
from scipy.signal import fftconvolve

from closedloop.angles import wrap_deg
from closedloop.errors import DataError
from closedloop.estimators import kernels
from closedloop.estimators.base import Crossing
from closedloop.estimators.linear import ComplexFIREstimator
from closedloop.groundtruth import interior_analytic, truth_fir

RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
GRID_STEP_DEG = 30.0
#: Longest prediction horizon with weights of its own: a 40 ms chunk plus the decision latency,
#: a decimator's delay, an arrival lead or a stimulator's delay of some tens of ms. Beyond it,
#: the prediction at this horizon is carried forward at the instantaneous frequency.
MAX_HORIZON_S = 0.1
#: Horizons are trained this many per cycle of the band's upper edge (at least one per sample);
#: between them the predicted phase is interpolated linearly (22.5 degrees apart at the edge).
HORIZONS_PER_CYCLE = 16


def analytic_fir(h: np.ndarray) -> np.ndarray:
    """Complex FIR whose output is the analytic signal of the real linear-phase FIR ``h``'s."""
    n_fft = next_fast_len(8 * h.shape[0])
    spec = fft(h, n_fft)
    spec[1 : (n_fft + 1) // 2] *= 2.0
    spec[(n_fft + 2) // 2 :] = 0.0
    return ifft(spec)[: h.shape[0]]


def _lagged_gram(
    x: np.ndarray, n_taps: int, start: int, stops: tuple[int, ...]
) -> list[np.ndarray]:
    """``X^T X`` (not projected) for the windows ending at samples ``start .. stop - 1``, one
    matrix per ``stop`` of ``stops``, from one pass of prefix sums of lagged products: O(n L),
    not O(n L^2). ``x`` has its mean removed already."""
    n = x.shape[0]
    first = start - n_taps + 1  # first sample of the first window
    out = [np.zeros((n_taps, n_taps)) for _ in stops]
    i = np.arange(n_taps)
    for k in range(n_taps):
        prefix = np.concatenate([[0.0], np.cumsum(x[: n - k] * x[k:])])
        rows = i[: n_taps - k]
        low = prefix[first + rows]
        for xtx, stop in zip(out, stops):
            vals = prefix[stop - n_taps + 1 + rows] - low
            xtx[rows, rows + k] = vals
            xtx[rows + k, rows] = vals
    return out


#: Rows of a real matrix cast to complex at a time by :func:`_rows_times` (a few MB); a
#: multiple of the rows a BLAS matrix-vector kernel takes together (4 or 8), so that every row
#: goes through the same kernel code as in the whole product.
CAST_ROWS = 64


def _rows_times(a: np.ndarray, vectors: list[np.ndarray]) -> list[np.ndarray]:
    """``a @ v`` for each complex ``v`` of ``vectors``, ``a`` a real 2-D array (a view of any
    strides): the products a mixed real-complex ``@`` computes, bit for bit, without its slow
    casting path and without a complex copy of the whole of ``a``.

    NumPy computes the mixed product on a C-contiguous complex copy of ``a``, one BLAS
    matrix-vector product in which every output is its own dot product over a row; here the
    copy is made and multiplied :data:`CAST_ROWS` rows at a time (the same dot products).
    """
    out = [np.empty(a.shape[0], dtype=np.complex128) for _ in vectors]
    for i in range(0, a.shape[0], CAST_ROWS):
        block = np.ascontiguousarray(a[i : i + CAST_ROWS], dtype=np.complex128)
        for o, v in zip(out, vectors):
            o[i : i + CAST_ROWS] = block @ v
    return out


def _window_cross(x: np.ndarray, z: np.ndarray, n_taps: int, start: int, stop: int) -> np.ndarray:
    """``X^T z`` for the windows ending at samples ``start .. stop - 1`` (``x`` mean-free)."""
    first = start - n_taps + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, n_taps)[first : stop - n_taps + 1]
    return _rows_times(windows.T, [z[start:stop]])[0]


def _normal_equations(
    x: np.ndarray, z: np.ndarray, n_taps: int, proj: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """``P X^T X P`` and ``P X^T z`` for the windows ending at samples ``start .. stop - 1``.

    ``X`` holds one window of ``n_taps`` raw samples per row and ``P`` (``proj``) removes
    offset and drift. ``X^T X`` comes from prefix sums of lagged products: O(n L), not
    O(n L^2). The mean of ``x`` is removed first (``P`` ignores it; precision gains).
    """
    x = x - x.mean()
    (xtx,) = _lagged_gram(x, n_taps, start, (stop,))
    xtz = _window_cross(x, z, n_taps, start, stop)
    return proj @ xtx @ proj, proj @ xtz


def _horizon_cross_terms(
    x: np.ndarray, z: np.ndarray, n_taps: int, horizons: np.ndarray, start: int, stop: int
) -> np.ndarray:
    """``X^T z_h`` for every horizon ``h``: the windows ending at ``start .. stop - 1`` against
    the truth ``h`` samples after each, as columns ``(n_taps, n_horizons)``. One FFT correlation
    per horizon; the windows are never materialised. The mean of ``x`` is removed first, as in
    :func:`_normal_equations`."""
    xs = (x - x.mean())[start - n_taps + 1 : stop]
    out = np.empty((n_taps, horizons.shape[0]), dtype=np.complex128)
    for k, h in enumerate(horizons):
        out[:, k] = fftconvolve(xs, z[start + h : stop + h][::-1], mode="valid")
    return out


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

    Attributes
    ----------
    horizon_step, n_horizons : int
        The prediction horizons' grid: ``k * horizon_step`` samples ahead, ``k < n_horizons``.
    horizon_weights : ndarray, complex, (n_horizons, n_taps)
        One direct predictor per horizon (row 0 is ``weights``, the estimate at the newest sample).
    horizon_rms : ndarray, (n_horizons,)
        Each predictor's RMS error on the baseline, µV (NaN before ``fit``).
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
        self._grid_re = np.zeros(self.grid_deg.shape[0])
        self._grid_im = np.zeros(self.grid_deg.shape[0])
        self._acc = np.zeros(2)  # rotation accumulator (re, im)
        self.horizon_step = max(1, round(self.sfreq / (HORIZONS_PER_CYCLE * self.band_hz[1])))
        self.n_horizons = math.ceil(MAX_HORIZON_S * self.sfreq / self.horizon_step) + 1
        weights = 2.0 * taper * np.exp(2j * np.pi * self.center_hz * t) / taper.sum()
        self._setup_fir(weights)
        ahead = np.arange(self.n_horizons) * self.horizon_step / self.sfreq
        rotate = np.exp(2j * np.pi * self.center_hz * ahead)[:, None]
        self._setup_horizons(weights[None, :] * rotate)
        self.horizon_rms = np.full(self.n_horizons, np.nan)

    def _setup_fir(self, weights: np.ndarray) -> None:
        super()._setup_fir(weights)
        self._span = max(self.n_taps, self._t_re.shape[0])
        # the doubled ring, then the values the kernel's vector path may read past it
        self._hist_buf = np.zeros(2 * self._span + kernels.WIENER_PAD)
        self._hist = self._hist_buf[: 2 * self._span]
        self._pos = np.zeros(2, dtype=np.intp)  # newest ring index, samples since reset
        self._pos[0] = self._span - 1
        self.ring_size = self.delay + max(self.freq_lag, int(self.sfreq)) + 2
        # rows: raw estimate (re, im), rotated estimate (re, im), delayed truth (re, im)
        self._rings = np.full((6, self.ring_size), np.nan)
        # the kernel holds these arrays (and the truth FIR, rotation and grid) from here on:
        # they are changed in place only
        self._kernel = kernels.WienerKernel(
            self._hist_buf, self._span, self._pos, self._w_re, self._w_im, self._t_re, self._t_im,
            self._rings, self._acc, self._grid_re, self._grid_im,
            self.delay, self._keep_sample, self.adapt_s > 0,
        )
        self._kernel.bind_answers(
            self.n_taps, self.freq_lag, self.sfreq, self.band_hz[0], self.band_hz[1],
            self.center_hz,
        )

    def _setup_horizons(self, weights: np.ndarray) -> None:
        """Weights ``(n_horizons, n_taps)`` predicting the analytic signal ``k * horizon_step``
        samples after the newest (row 0: the estimate at the newest sample)."""
        self.horizon_weights = np.asarray(weights, dtype=np.complex128)
        self._hw_re = np.ascontiguousarray(self.horizon_weights.real)
        self._hw_im = np.ascontiguousarray(self.horizon_weights.imag)
        self._pred_re = np.zeros(self.n_horizons)
        self._pred_im = np.zeros(self.n_horizons)

    def _reset_state(self) -> None:
        super()._reset_state()
        if hasattr(self, "_rings"):
            self._hist[:] = 0.0
            self._pos[0] = self._span - 1
            self._pos[1] = 0
            self._rings[:] = np.nan

    @property
    def rotation_acc(self) -> complex:
        """Tracked mean of truth times conjugate raw estimate (its angle is the rotation)."""
        return complex(self._acc[0], self._acc[1])

    @property
    def rotation(self) -> complex:
        """Unit rotation applied to the raw estimate (delayed-truth phase tracking)."""
        acc = self.rotation_acc
        return acc / abs(acc) if abs(acc) > 0 else 1.0 + 0.0j

    @property
    def grid(self) -> np.ndarray:
        """Tracked mean error (truth times conjugate rotated estimate) per phase bin."""
        return self._grid_re + 1j * self._grid_im

    @property
    def _t_ring(self) -> np.ndarray:
        """Delayed truth per sample (ring of ``ring_size``; NaN where not known yet)."""
        return self._rings[4] + 1j * self._rings[5]

    # -- run time --------------------------------------------------------------------------
    def process(self, x: np.ndarray) -> None:
        """As :meth:`PhaseEstimator.process`; the usual chunk (C-contiguous float64, finite)
        in one call of the kernel, which checks it; any other through the general path."""
        c = self.correction
        out = self._kernel.step(x, c.real, c.imag)
        if out is False:
            super().process(x)
            return
        self.last_bad = 0
        self.n_samples += x.shape[0]
        if out is not None:
            self.phase_deg, self.amplitude, self.frequency_hz = out
            self.ready = True

    def _process_good(self, x: np.ndarray) -> None:
        # the kernel advances, then computes the answers at the newest sample: the rotated
        # estimate times the correction (phase, amplitude), and the frequency from the raw
        # estimates' phase step over freq_lag samples (the rotation cancels in it), clamped
        # to the band (the centre until freq_lag more samples are there); x is non-empty,
        # C-contiguous, float64 and finite here (PhaseEstimator.process), which step takes
        c = self.correction
        out = self._kernel.step(x, c.real, c.imag)
        if out is not None:
            self.phase_deg, self.amplitude, self.frequency_hz = out
            self.ready = True

    def _grid_bias_deg(self, aimed: float) -> float:
        pos = (wrap_deg(aimed) + 180.0) / GRID_STEP_DEG
        n_bins = self._grid_re.shape[0]
        i = math.floor(pos) % n_bins
        u = pos - math.floor(pos)
        j = (i + 1) % n_bins
        re = self._grid_re[i] * (1.0 - u) + self._grid_re[j] * u
        im = self._grid_im[i] * (1.0 - u) + self._grid_im[j] * u
        return math.degrees(math.atan2(im, re)) if (re or im) else 0.0

    def aimed_phase_deg(self, target_phase_deg: float) -> float:
        """The estimated phase to fire at so that the true phase at delivery is the target."""
        aimed = float(target_phase_deg)
        if self.adapt_s > 0:
            for _ in range(2):
                aimed = target_phase_deg - self._grid_bias_deg(aimed)
        return aimed

    def next_crossing_s(self, target_phase_deg: float) -> float:
        """Seconds to the next crossing of the target, aimed so that it hits on average.

        A pure query: it changes no state, so answers depend on the samples only.
        """
        if not self.ready or not math.isfinite(self.phase_deg):
            return math.nan
        aimed = self.aimed_phase_deg(target_phase_deg)
        return ((aimed - self.phase_deg) % 360.0) / (360.0 * self.frequency_hz)

    def window_crossing(
        self, target_phase_deg: float, start_s: float, end_s: float
    ) -> Crossing | None:
        """The first crossing of the target inside ``[start_s, end_s]`` after the newest sample,
        predicted for those horizons, or None.

        The analytic signal is predicted on the horizon grid that spans the window, each point
        with the weights trained for it (a direct multi-step predictor, not the current phase
        carried forward), rotated by the tracked rotation; the phase aimed at is the one whose
        expected true phase is the target (the tracked grid). The crossing's ``certainty`` is
        the amplitude predicted there: the least-squares prediction shrinks where the horizon
        makes it less predictable, so the gate asks more of a crossing further ahead. Past the
        longest trained horizon the prediction there is carried forward at the instantaneous
        frequency. A pure query: it changes no state.
        """
        if not self.ready or not math.isfinite(self.phase_deg) or not end_s >= start_s:
            return None
        start_s = max(0.0, float(start_s))
        step = self.horizon_step / self.sfreq
        lo, hi = start_s / step, float(end_s) / step  # in grid units
        last = self.n_horizons - 1
        aimed = self.aimed_phase_deg(target_phase_deg)
        rad = math.radians(aimed)
        aim_re, aim_im = math.cos(rad), math.sin(rad)
        rot = self.rotation * self.correction
        window = self._pos[0] + self._span - self.n_taps + 1
        k0 = min(math.floor(lo), last - 1)
        k1 = min(max(math.ceil(hi), k0 + 1), last)
        kernels.horizon_predict(
            self._hist, window, self._hw_re, self._hw_im, k0, k1 + 1, rot.real, rot.imag,
            self._pred_re, self._pred_im,
        )
        pos = kernels.first_crossing(
            self._pred_re, self._pred_im, k1 - k0 + 1, aim_re, aim_im, lo - k0, hi - k0
        )
        if math.isfinite(pos):
            i = min(int(pos), k1 - k0 - 1)
            u = pos - i
            amplitude = (1.0 - u) * math.hypot(self._pred_re[i], self._pred_im[i]) + u * math.hypot(
                self._pred_re[i + 1], self._pred_im[i + 1]
            )
            return Crossing((k0 + pos) * step, amplitude, wrap_deg(aimed))
        if hi <= last:
            return None
        # past the trained horizons: the last prediction carried forward
        j = k1 - k0
        z_re, z_im = self._pred_re[j], self._pred_im[j]
        rel = math.atan2(z_im * aim_re - z_re * aim_im, z_re * aim_re + z_im * aim_im)
        freq = self.frequency_hz
        wait = last * step + ((-rel) % (2.0 * math.pi)) / (2.0 * math.pi * freq)
        if wait < start_s:  # the first crossing in the window is a whole number of cycles later
            wait += math.ceil((start_s - wait) * freq) / freq
        if wait > end_s:
            return None
        return Crossing(wait, math.hypot(z_re, z_im), wrap_deg(aimed))

    def recent_amplitudes(self, n: int) -> np.ndarray:
        """The estimate's amplitude at each of the newest ``n`` samples (NaN before the first
        full window or beyond what the estimator keeps), oldest first."""
        n = max(0, int(n))
        out = np.full(n, np.nan)
        count = int(self._pos[1])
        keep = min(n, count, self.ring_size - self.delay - 1)
        if keep > 0:
            idx = np.arange(count - keep, count) % self.ring_size
            amplitude = np.hypot(self._rings[2, idx], self._rings[3, idx])
            out[n - keep :] = amplitude * abs(self.correction)
        return out

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
            gain = 1.0 / (np.maximum(evals, 0.0) + ridge * scale)
            return evecs @ (rhs * gain.reshape(-1, *([1] * (rhs.ndim - 1))))

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
        # every horizon on the same rows: those whose truth is known at the longest horizon
        horizons = np.arange(self.n_horizons) * self.horizon_step
        train_stop = stop - int(horizons[-1])
        if train_stop - start < 4 * self.n_taps:
            raise DataError(
                f"the baseline is too short to train 'wiener' with a {self.n_taps}-sample window "
                f"and {MAX_HORIZON_S:g} s of prediction: {max(train_stop - start, 0)} usable "
                "samples; record a longer baseline (30 s or more)."
            )
        x_free = x - x.mean()
        split = start + int(n_rows * (1.0 - float(self.params["holdout"])))
        # the Gram matrices of the final rows and of the ridge's training rows in one pass
        *grams, gram = _lagged_gram(
            x_free, self.n_taps, start, (split, train_stop) if ridge == "auto" else (train_stop,)
        )
        if ridge == "auto":
            (gram_split,) = grams
            solve = self._ridge_solver(
                proj @ gram_split @ proj,
                proj @ _window_cross(x_free, z, self.n_taps, start, split),
            )
            test = np.arange(split + self.n_taps, stop)
            # the windows ending at the test samples (a view; none if the test is empty)
            windows = np.lib.stride_tricks.sliding_window_view(x, self.n_taps)[
                split + 1 : stop - self.n_taps + 1
            ]
            estimates = _rows_times(windows, [solve(c) for c in RIDGE_GRID])
            scores = [_phase_spread(z_est, z[test]) for z_est in estimates]
            ridge = RIDGE_GRID[int(np.argmin(scores))]
        ridge = float(ridge)
        stop = train_stop
        xtx = proj @ gram @ proj
        xtz = proj @ _horizon_cross_terms(x, z, self.n_taps, horizons, start, stop)
        weights = self._ridge_solver(xtx, xtz)(ridge).T  # (n_horizons, n_taps)
        # RMS error per horizon on the training rows (kept for inspection: how the error grows
        # with the horizon), from the normal equations: the weights lie in the projected space,
        # so |t - Xw|^2 = |t|^2 - 2 Re(w^H X^T t) + w^H X^T X w
        energy = np.array([np.sum(np.abs(z[start + h : stop + h]) ** 2) for h in horizons])
        cross = np.einsum("kl,lk->k", weights.conj(), xtz).real
        quad = np.sum((weights.conj() @ xtx) * weights, axis=1).real
        rms = np.sqrt(np.maximum(energy - 2.0 * cross + quad, 0.0) / (stop - start))
        self.horizon_rms = rms
        self.chosen_ridge = ridge
        self.correction = 1.0 + 0.0j
        self._acc[:] = 0.0
        self._grid_re[:] = 0.0
        self._grid_im[:] = 0.0
        self._setup_fir(weights[0])
        self._setup_horizons(weights)
        self.fitted = True
        self.reset()
        if self.adapt_s > 0:
            self._calibrate_pass(x, z)
        self._note_baseline_amplitude(x)

    def _calibrate_pass(self, x: np.ndarray, z_true: np.ndarray) -> None:
        """Start both corrections from the baseline, as the run-time tracking would see it.

        The rotation starts at the mean of truth times conjugate estimate; the grid at the
        mean remaining error per phase bin of the rotated estimate (the same per-sample
        quantities the run-time kernel averages with forgetting).
        """
        z = self.analytic_over(x)
        ok = np.isfinite(z) & np.isfinite(z_true)
        if not ok.any():
            return
        prod = z_true[ok] * np.conj(z[ok])
        acc = complex(np.mean(prod))
        self._acc[:] = (acc.real, acc.imag)
        c = z[ok] * self.rotation
        err = z_true[ok] * np.conj(c)
        n_bins = self._grid_re.shape[0]
        pos = (np.angle(c, deg=True) + 180.0) / GRID_STEP_DEG
        low = np.floor(pos)
        frac = pos - low
        i = low.astype(int) % n_bins
        j = (i + 1) % n_bins
        for part in ("real", "imag"):
            v = getattr(err, part)
            g = np.bincount(i, (1.0 - frac) * v, n_bins) + np.bincount(j, frac * v, n_bins)
            (self._grid_re if part == "real" else self._grid_im)[:] = g / err.shape[0]
