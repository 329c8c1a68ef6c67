"""Throughput of the DSP front end, against the same filters run with ``scipy.signal.sosfilt``.

The chain, per input chunk: spatial filter (common average: every channel in, every channel
out, the heaviest reference) -> decimation to ``sfreq_out`` -> 50 Hz notch and harmonics
below the new Nyquist -> 1-45 Hz band-pass -> 8-13 Hz envelope. The scipy chain is the same
maths with ``scipy.signal.sosfilt`` (state carried through ``zi``) for every filter, chunk by
chunk. ``run`` is what ``closedloop bench throughput`` and ``benchmarks/dsp_throughput.py`` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from scipy import signal

from closedloop.dsp.decimate import Decimator
from closedloop.dsp.envelope import Envelope
from closedloop.dsp.sosfilt import SOSFilter, design_bandpass, design_notch
from closedloop.dsp.spatial import SpatialFilter

LINE_HZ = 50.0
BAND_HZ = (1.0, 45.0)
ENVELOPE_HZ = (8.0, 13.0)


def synthetic_eeg(n_channels: int, n_samples: int, sfreq: float, seed: int = 0) -> np.ndarray:
    """Brown-ish noise + 10 Hz alpha + 50 Hz line, µV, for runs without a recording."""
    rng = np.random.default_rng(seed)
    noise = np.cumsum(rng.standard_normal((n_channels, n_samples)), axis=1)
    noise -= noise.mean(axis=1, keepdims=True)
    t = np.arange(n_samples) / sfreq
    alpha = 20.0 * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi, (n_channels, 1)))
    return np.ascontiguousarray(noise + alpha + 5.0 * np.sin(2 * np.pi * LINE_HZ * t))


def _tile(data: np.ndarray, n_channels: int, n_samples: int) -> np.ndarray:
    rows = np.resize(np.arange(data.shape[0]), n_channels)
    reps = -(-n_samples // data.shape[1])
    return np.ascontiguousarray(np.tile(data[rows], (1, reps))[:, :n_samples])


def bench_weights(n_channels: int, reference: str) -> np.ndarray:
    """ "average": every channel minus the mean of all (n_channels outputs); "hjorth": channel 0
    minus the mean of channels 1-4 (one output, what the engine derives for one target)."""
    if reference == "average":
        return np.eye(n_channels) - 1.0 / n_channels
    if reference == "hjorth":
        if n_channels < 5:
            raise ValueError(f"the hjorth chain needs at least 5 channels; got {n_channels}.")
        weights = np.zeros((1, n_channels))
        weights[0, 0], weights[0, 1:5] = 1.0, -0.25
        return weights
    raise ValueError(f"reference must be 'average' or 'hjorth'; got {reference!r}.")


class _Chain:
    """The closedloop stages for the benchmark chain."""

    def __init__(self, weights: np.ndarray, sfreq: float, factor: int) -> None:
        self.spatial = SpatialFilter(weights)
        n_out = weights.shape[0]
        self.decimator = Decimator(factor, n_out, sfreq)
        sfreq_out = sfreq / factor
        self.notch = SOSFilter(design_notch(LINE_HZ, sfreq_out), n_out)
        self.bandpass = SOSFilter(design_bandpass(*BAND_HZ, sfreq_out), n_out)
        self.envelope = Envelope(sfreq_out, *ENVELOPE_HZ, n_out)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        x = self.decimator.process(self.spatial.process(chunk))
        x = self.bandpass.process(self.notch.process(x, x), x)
        return self.envelope.process(x)


class _ScipyChain:
    """The same filters with ``scipy.signal.sosfilt`` per chunk and numpy for the rest; every
    filter starts at the steady state of its first input sample, as the stages do."""

    def __init__(self, chain: _Chain) -> None:
        self.weights = chain.spatial.weights
        self.factor = chain.decimator.factor
        self.offset = chain.decimator.offset
        self.sos = [chain.decimator.sos, chain.notch.sos, chain.bandpass.sos, chain.envelope.sos]
        self.zi_unit = [signal.sosfilt_zi(s)[:, None, :] for s in self.sos]
        self.zi: list[np.ndarray | None] = [None] * 4
        self.omega = chain.envelope.omega
        self.n_in = 0
        self.n_out = 0

    def _filter(self, k: int, x: np.ndarray) -> np.ndarray:
        if x.shape[1] == 0:
            return x
        if self.zi[k] is None:
            self.zi[k] = self.zi_unit[k] * x[None, :, 0, None]
        y, self.zi[k] = signal.sosfilt(self.sos[k], x, axis=1, zi=self.zi[k])
        return y

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        y = self._filter(0, self.weights @ chunk)
        first = (self.offset - self.n_in) % self.factor
        self.n_in += chunk.shape[1]
        y = self._filter(2, self._filter(1, y[:, first :: self.factor]))
        phase = self.omega * (self.n_out + np.arange(y.shape[1]))
        self.n_out += y.shape[1]
        iq = self._filter(3, np.concatenate([y * np.cos(phase), -y * np.sin(phase)]))
        n = y.shape[0]
        return 2.0 * np.hypot(iq[:n], iq[n:])


def _time_chunks(
    step: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray], warmup: int
) -> tuple[np.ndarray, float, float]:
    """Per-chunk wall times (s) after ``warmup`` chunks; total wall and process CPU time."""
    for chunk in chunks[:warmup]:
        step(chunk)
    times = np.empty(len(chunks) - warmup)
    clock = time.perf_counter
    wall0, cpu0 = clock(), time.process_time()
    for i, chunk in enumerate(chunks[warmup:]):
        t0 = clock()
        step(chunk)
        times[i] = clock() - t0
    return times, clock() - wall0, time.process_time() - cpu0


def _stats_us(times: np.ndarray) -> dict[str, float]:
    return {
        "p50_us": float(np.percentile(times, 50) * 1e6),
        "p99_us": float(np.percentile(times, 99) * 1e6),
        "mean_us": float(times.mean() * 1e6),
        "max_us": float(times.max() * 1e6),
    }


def run(
    n_channels: int = 64,
    sfreq: float = 5000.0,
    chunk_size: int = 5,
    sfreq_out: float = 1000.0,
    duration_s: float = 4.0,
    *,
    data: np.ndarray | None = None,
    reference: str = "average",
    compare_scipy: bool = True,
    warmup_s: float = 0.2,
) -> dict:
    """Time the DSP chain chunk by chunk on ``duration_s`` of data.

    Parameters
    ----------
    n_channels, sfreq, chunk_size, sfreq_out : as named
        ``sfreq / sfreq_out`` must be an integer (the decimation factor).
    duration_s : float
        Seconds of data pushed through (after ``warmup_s`` more).
    data : array (n_ch, n), optional
        Real recording at ``sfreq`` in µV, tiled to ``n_channels`` and the duration; by
        default a synthetic signal.
    reference : {"average", "hjorth"}
        "average" filters every channel (the heavy case); "hjorth" derives one signal, as the
        engine does for a single target, and filters that.
    compare_scipy : bool
        Also time the scipy chain on the same chunks.

    Returns
    -------
    dict
        Settings, ``closedloop`` timing (``p50_us``, ``p99_us``, ``mean_us``, ``max_us``,
        ``cpu_share``: process CPU time / real-time duration of the data, ``wall_share``:
        wall time / duration), and when compared
        ``scipy`` timing, ``speedup_mean`` and ``speedup_p50`` (scipy time / ours) and
        ``max_abs_diff_uv`` between the two chains' envelopes (checked on the warm-up chunks).
        p99 on a shared machine is dominated by preemption, so no p99 ratio is given.
    """
    factor = round(sfreq / sfreq_out)
    if factor < 1 or abs(factor * sfreq_out - sfreq) > 1e-9 * sfreq:
        raise ValueError(f"sfreq / sfreq_out must be an integer; got {sfreq:g} / {sfreq_out:g}.")
    n_warm = round(warmup_s * sfreq / chunk_size)
    n_chunks = round(duration_s * sfreq / chunk_size)
    total = (n_warm + n_chunks) * chunk_size
    if data is None:
        source = synthetic_eeg(n_channels, total, sfreq)
    else:
        source = _tile(np.asarray(data, dtype=np.float64), n_channels, total)
    chunks = [
        np.ascontiguousarray(source[:, i : i + chunk_size]) for i in range(0, total, chunk_size)
    ]
    weights = bench_weights(n_channels, reference)
    chain = _Chain(weights, sfreq, factor)
    ours, wall, cpu = _time_chunks(chain, chunks, n_warm)
    seconds_of_data = n_chunks * chunk_size / sfreq
    result: dict = {
        "n_channels": n_channels,
        "sfreq": sfreq,
        "sfreq_out": sfreq_out,
        "chunk_size": chunk_size,
        "n_chunks": n_chunks,
        "reference": reference,
        "n_derived": weights.shape[0],
        "chain": f"{reference} reference ({weights.shape[0]} derived) > decimate > notch 50 Hz"
        " + harmonics > band-pass 1-45 Hz > envelope 8-13 Hz",
        "closedloop": {
            **_stats_us(ours),
            "cpu_share": cpu / seconds_of_data,
            "wall_share": wall / seconds_of_data,
        },
    }
    if compare_scipy:
        mine = _Chain(weights, sfreq, factor)
        scipy_chain = _ScipyChain(mine)
        n_check = min(len(chunks), max(n_warm, 1))
        diff = 0.0
        for chunk in chunks[:n_check]:
            a, b = mine(chunk), scipy_chain(chunk)
            diff = max(diff, float(np.max(np.abs(a - b), initial=0.0)))
        result["max_abs_diff_uv"] = diff
        scipy_chain = _ScipyChain(_Chain(weights, sfreq, factor))
        theirs, _, cpu_s = _time_chunks(scipy_chain, chunks, n_warm)
        result["scipy"] = {**_stats_us(theirs), "cpu_share": cpu_s / seconds_of_data}
        result["speedup_mean"] = float(theirs.mean() / ours.mean())
        result["speedup_p50"] = float(np.median(theirs) / np.median(ours))
    return result
