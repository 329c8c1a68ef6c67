"""What the operator's page shows beyond the streams themselves, computed in the UI process.

- :class:`DisplayDecimator`: chosen raw channels and the derived band signal, low-passed and
  decimated to a display rate (the pages draw a few hundred points per second per trace);
- :class:`QualityMeter`: per-channel signal quality over one-second blocks: flat, noisy,
  saturated, line noise;
- :func:`spectrum_db`: Welch spectrum of the derived signal;
- :class:`TruthTracker`: the **true** phase at each delivered trigger, once about a second of
  later data is in, by the same zero-phase ground truth as ``closedloop bench accuracy``
  (:class:`closedloop.groundtruth.GroundTruth`: FIR band-pass + Hilbert) on the protocol's
  derived signal around the trigger, at the input's own rate.

All of it runs on the UI process's EEG thread, never in the run.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi, welch

from closedloop.dsp.ringbuffer import RingBuffer

#: Traces are drawn at or below this rate.
DISPLAY_RATE_MAX_HZ = 250.0
#: Seconds of derived signal kept for the spectrum and the ground truth.
HISTORY_S = 12.0
#: The true phase of a trigger is computed once this much later data is in (at least half the
#: ground-truth filter, plus a margin for the Hilbert transform's edge).
TRUTH_AFTER_MIN_S = 1.0
#: ... and with this much data before it (at most).
TRUTH_BEFORE_S = 3.0
#: A stretch with a step between stamps beyond this many sample periods has a gap: not scored.
GAP_SAMPLES = 2.5
#: Quality thresholds.
NOISY_UV = 50.0  # standard deviation above this (or 4x the median channel's) is noisy
NOISY_FACTOR = 4.0
LINE_RATIO_DB = 0.0  # line-frequency power above the 1-40 Hz EEG power
CLIPPED_SHARE = 0.02  # this share of a block's samples at its extreme value: clipped at a rail


class DisplayDecimator:
    """Low-pass (4th-order Butterworth at 0.4 x the display rate) and keep every ``factor``-th sample."""

    def __init__(self, sfreq: float, n_rows: int) -> None:
        self.factor = max(1, int(math.ceil(sfreq / DISPLAY_RATE_MAX_HZ - 1e-9)))
        self.rate_hz = sfreq / self.factor
        self.n_rows = n_rows
        self._phase = 0  # index within the current decimation block of the next input sample
        if self.factor > 1:
            self.sos = butter(4, 0.4 * self.rate_hz, fs=sfreq, output="sos")
            self.zi = np.zeros((self.sos.shape[0], n_rows, 2))
            self._primed = False
        else:
            self.sos = None

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, n)`` in -> ``(kept samples' indices within x, (rows, m) decimated)``."""
        n = x.shape[1]
        if self.sos is not None and n:
            if not self._primed:  # start from the first values, not from zero (no step)
                self.zi = sosfilt_zi(self.sos)[:, None, :] * x[None, :, 0, None]
                self._primed = True
            y, self.zi = sosfilt(self.sos, x, axis=1, zi=self.zi)
        else:
            y = x
        first = (-self._phase) % self.factor
        idx = np.arange(first, n, self.factor)
        self._phase = (self._phase + n) % self.factor
        return idx, y[:, idx]


class BandTrace:
    """The derived signal band-passed for display (causal 2nd-order Butterworth at the display rate)."""

    def __init__(self, rate_hz: float, band_hz: tuple[float, float]) -> None:
        self.band_hz = band_hz
        high = min(band_hz[1], 0.45 * rate_hz)
        self.sos = butter(2, [band_hz[0], high], btype="bandpass", fs=rate_hz, output="sos")
        self.zi = np.zeros((self.sos.shape[0], 2))

    def process(self, x: np.ndarray) -> np.ndarray:
        if not x.size:
            return x
        y, self.zi = sosfilt(self.sos, x, zi=self.zi)
        return y


class QualityMeter:
    """Per-channel quality over blocks of one second of raw input (µV).

    A channel is *flat* below ``flat_uv`` peak to peak, *saturated* at or above ``saturation_uv``
    (when the protocol sets one) or when at least 2 % of a block sits at its extreme value (a
    clipped rail), *noisy* above 50 µV standard deviation or 4x the median channel's, and has
    *line noise* when its power at the line frequency (50 or 60 Hz, the larger) exceeds its
    1-40 Hz power. The thresholds come from the protocol's ``[artifact]`` section where it has one.
    """

    def __init__(self, sfreq: float, ch_names: list[str], *, flat_uv: float = 0.5,
                 saturation_uv: float = 0.0) -> None:
        self.sfreq = float(sfreq)
        self.ch_names = list(ch_names)
        self.n = len(ch_names)
        self.block_n = max(1, int(round(self.sfreq)))
        self.flat_uv = flat_uv
        self.saturation_uv = saturation_uv
        self._buf = np.zeros((self.n, self.block_n))
        self._fill = 0
        self.last: list[dict] | None = None

    def process(self, chunk: np.ndarray) -> list[dict] | None:
        """Feed raw samples; returns the quality of a block each time one completes."""
        out = None
        pos = 0
        n = chunk.shape[1]
        while pos < n:
            take = min(n - pos, self.block_n - self._fill)
            self._buf[:, self._fill : self._fill + take] = chunk[:, pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == self.block_n:
                out = self.assess(self._buf)
                self._fill = 0
        if out is not None:
            self.last = out
        return out

    def assess(self, block: np.ndarray) -> list[dict]:
        """Quality of each channel over ``block`` (n_channels, n_samples)."""
        finite = np.isfinite(block)
        x = np.where(finite, block, 0.0)
        lo, hi = x.min(axis=1), x.max(axis=1)
        ptp = hi - lo
        std = x.std(axis=1)
        at_rail = np.maximum((x == lo[:, None]).mean(axis=1), (x == hi[:, None]).mean(axis=1))
        median_std = float(np.median(std)) if std.size else 0.0
        line = self._line_ratio_db(x)
        out = []
        for i, name in enumerate(self.ch_names):
            flags = []
            if not finite[i].all():
                flags.append("missing")
            if ptp[i] < self.flat_uv:
                flags.append("flat")
            elif (self.saturation_uv > 0 and max(abs(lo[i]), abs(hi[i])) >= self.saturation_uv) or (
                at_rail[i] >= CLIPPED_SHARE and x.shape[1] >= 50
            ):
                flags.append("saturated")
            if std[i] > max(NOISY_UV, NOISY_FACTOR * median_std) and "flat" not in flags:
                flags.append("noisy")
            if line is not None and line[i] > LINE_RATIO_DB and "flat" not in flags:
                flags.append("line noise")
            out.append({
                "name": name,
                "std_uv": round(float(std[i]), 2),
                "ptp_uv": round(float(ptp[i]), 2),
                "line_db": None if line is None else round(float(line[i]), 1),
                "flags": flags,
            })
        return out

    def _line_ratio_db(self, x: np.ndarray) -> np.ndarray | None:
        """Power within 1 Hz of 50 or 60 Hz (the stronger) over the 1-40 Hz power, dB."""
        if self.sfreq < 130.0 or x.shape[1] < 64:
            return None
        spec = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], 1.0 / self.sfreq)
        eeg = spec[:, (freqs >= 1.0) & (freqs <= 40.0)].sum(axis=1)
        best = None
        for line_hz in (50.0, 60.0):
            band = (freqs >= line_hz - 1.0) & (freqs <= line_hz + 1.0)
            p = spec[:, band].sum(axis=1)
            best = p if best is None else np.maximum(best, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 10.0 * np.log10(best / eeg)
        return np.where(np.isfinite(ratio), ratio, -99.0)


def spectrum_db(x: np.ndarray, sfreq: float, fmax_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum (2 s segments, half overlap) of ``x`` up to ``fmax_hz``, in dB re 1 µV²/Hz."""
    nper = int(min(x.size, 2 * sfreq))
    if nper < 16:
        return np.zeros(0), np.zeros(0)
    freqs, power = welch(x, fs=sfreq, nperseg=nper, noverlap=nper // 2)
    keep = (freqs > 0) & (freqs <= fmax_hz)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(np.maximum(power[keep], 1e-12))
    return freqs[keep], db


class DerivedHistory:
    """The newest seconds of the derived signal and of its samples' times (LSL clock)."""

    def __init__(self, sfreq: float, seconds: float = HISTORY_S) -> None:
        self.sfreq = float(sfreq)
        self.ring = RingBuffer(2, int(seconds * self.sfreq) + 1)

    def write(self, derived: np.ndarray, stamps: np.ndarray) -> None:
        self.ring.write(np.ascontiguousarray(np.vstack((derived, stamps))))

    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        both = self.ring.latest(n)
        return both[0], both[1]

    @property
    def newest_ts(self) -> float:
        if not self.ring.n_available:
            return -math.inf
        return float(self.ring.latest(1)[1, 0])


class TruthTracker:
    """The true phase at each delivered trigger, computed once enough later data is in.

    ``add(seq, time_s, target_deg, estimated_deg)`` registers a delivery (its LSL time);
    ``update(history, band_hz)`` scores every registered trigger whose later data has arrived and
    returns the new results, each a dict with ``seq``, ``time``, ``true_phase_deg`` (None when it
    cannot be scored), ``target_phase_deg``, ``phase_deg`` (the engine's estimate) and ``note``.
    """

    def __init__(self, sfreq: float) -> None:
        from closedloop.groundtruth import truth_fir

        self.sfreq = float(sfreq)
        self._truth_fir = truth_fir
        self.pending: list[dict] = []
        self.results: list[dict] = []

    def add(self, seq: int, time_s: float, target_deg: float, estimated_deg: float | None) -> None:
        self.pending.append({"seq": seq, "time": time_s, "target_phase_deg": target_deg,
                             "phase_deg": estimated_deg})

    def after_s(self, band_hz: tuple[float, float]) -> float:
        """Later data needed: half the ground-truth filter plus a fifth of a second."""
        half = (self._truth_fir(self.sfreq, band_hz).shape[0] // 2) / self.sfreq
        return max(TRUTH_AFTER_MIN_S, half + 0.2)

    def update(self, history: DerivedHistory, band_hz: tuple[float, float]) -> list[dict]:
        if not self.pending:
            return []
        from closedloop.groundtruth import GroundTruth

        newest = history.newest_ts
        after = self.after_s(band_hz)
        done, keep = [], []
        for item in self.pending:
            if item["time"] + after > newest:
                keep.append(item)
                continue
            n = int((newest - item["time"] + TRUTH_BEFORE_S) * self.sfreq)
            x, ts = history.latest(n)
            result = dict(item, true_phase_deg=None, note="")
            half = (self._truth_fir(self.sfreq, band_hz).shape[0] // 2) / self.sfreq
            steps = np.diff(ts)
            if x.size < 3 or item["time"] < ts[0] + half:
                result["note"] = "too little data before the trigger"
            elif steps.size and steps.max() > GAP_SAMPLES / self.sfreq:
                result["note"] = "a gap in the input around the trigger"
            elif not np.isfinite(x).all():
                result["note"] = "bad samples around the trigger"
            else:
                # the samples' times on a straight line at its lower envelope: push-time stamps are
                # late by a varying amount, never early (the engine's sample clock does the same)
                k = np.arange(ts.size, dtype=float)
                slope, intercept = np.polyfit(k, ts, 1)
                intercept += float(np.min(ts - (intercept + slope * k)))
                pos = (item["time"] - intercept) / slope
                truth = GroundTruth(x, self.sfreq, band_hz)
                result["true_phase_deg"] = float(truth.phase_at(np.array([pos / self.sfreq]))[0])
            done.append(result)
        self.pending = keep
        self.results.extend(done)
        return done
