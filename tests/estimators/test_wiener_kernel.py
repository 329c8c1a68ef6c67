"""The Wiener estimator's bound kernel (``WienerKernel``) against the sample-at-a-time reference
(``wiener_run``): the same bits in every array it owns, on a real recording's derived signal,
for every chunking (pieces that wrap the ring, a piece longer than the kernel's block, single
samples), on both of its dot-product paths (the 4-wide AVX2 one where the CPU has it, and the
compiler's) and with the delayed-truth tracking on and off. The replay references
(tests/offline/test_replay_golden.py) are the end-to-end judge; this pins the kernel itself.
"""

from __future__ import annotations

import mne
import numpy as np
import pytest

from closedloop.channels import find_channel
from closedloop.estimators import kernels, make_estimator
from tests.helpers.recordings import EYES_CLOSED

SFREQ_FEED_S = 12.0
CHUNKINGS = ([10], [1], [3, 17, 8, 1, 40, 0, 5], [16], [33])


@pytest.fixture(scope="module")
def derived(recordings):
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    x = raw.get_data(picks=[find_channel("O1", raw.ch_names)])[0] * 1e6
    sfreq = float(raw.info["sfreq"])
    n = int(SFREQ_FEED_S * sfreq)
    return np.ascontiguousarray(x[:n] - x[:n].mean()), sfreq


def _arrays(est, pad_value):
    """Fresh copies of the state the kernel works on, from a fitted-shape estimator."""
    span = est._span
    buf = np.full(2 * span + kernels.WIENER_PAD, pad_value)
    buf[: 2 * span] = 0.0
    pos = np.array([span - 1, 0], dtype=np.intp)
    rings = np.full((6, est.ring_size), np.nan)
    acc = np.array([3.0, -1.0])  # a non-zero start, as after the calibration pass
    grid = np.linspace(-1.0, 1.0, est._grid_re.shape[0])
    return buf, span, pos, rings, acc, grid.copy(), grid[::-1].copy()


def _feed(x, chunks, run):
    i = c = 0
    while i < x.shape[0]:
        m = chunks[c % len(chunks)]
        c += 1
        run(np.ascontiguousarray(x[i : i + m]))
        i += m


@pytest.mark.parametrize("adapt", [True, False])
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=lambda c: "-".join(map(str, c)))
def test_bound_kernel_equals_reference(derived, chunks, adapt):
    x, sfreq = derived
    est = make_estimator("wiener", sfreq, (8.0, 13.0))
    keep = est._keep_sample
    # the reference, sample at a time, in chunks of 10
    buf, span, pos, rings, acc, g_re, g_im = _arrays(est, 0.0)
    hist = buf[: 2 * span]

    def reference(xs):
        kernels.wiener_run(
            xs, hist, pos, est._w_re, est._w_im, est._t_re, est._t_im, *rings, acc, g_re, g_im,
            est.delay, keep, adapt,
        )

    _feed(x, [10], reference)
    expected = (hist, pos, rings, acc, g_re, g_im)
    for wide in (True, False):
        # the pad holds garbage: the vector path may read it, nothing may depend on it
        buf2, span2, pos2, rings2, acc2, g_re2, g_im2 = _arrays(est, 1e300)
        kernel = kernels.WienerKernel(
            buf2, span2, pos2, est._w_re, est._w_im, est._t_re, est._t_im, rings2, acc2,
            g_re2, g_im2, est.delay, keep, adapt, wide,
        )
        assert kernel.vector_width in ((2, 4) if wide else (2,))
        _feed(x, chunks, kernel.run)
        got = (buf2[: 2 * span2], pos2, rings2, acc2, g_re2, g_im2)
        for name, a, b in zip(("hist", "pos", "rings", "acc", "grid_re", "grid_im"), expected, got):
            assert np.array_equal(a, b, equal_nan=True), (name, wide, chunks)
        assert np.all(buf2[2 * span2 :] == 1e300)  # read at most, never written


def test_estimator_runs_the_bound_kernel(derived):
    """The estimator's answers after a fit come from the bound kernel and match a second
    estimator fed the same samples in other chunks (the kernel's state is the estimator's)."""
    x, sfreq = derived
    split = int(8 * sfreq)
    a = make_estimator("wiener", sfreq, (8.0, 13.0))
    b = make_estimator("wiener", sfreq, (8.0, 13.0))
    a.fit(x[:split])
    b.fit(x[:split])
    _feed(x[split:], [10], a.process)
    _feed(x[split:], [7, 1, 19], b.process)
    assert a.ready and b.ready
    assert (a.phase_deg, a.amplitude, a.frequency_hz) == (b.phase_deg, b.amplitude, b.frequency_hz)
    assert a.rotation_acc == b.rotation_acc
    assert np.array_equal(a.grid, b.grid)


def test_answers_are_the_python_arithmetic(derived):
    """``step``'s answers are the complex arithmetic the estimator's Python did, bit for bit,
    with a correction that is not 1 (phase, amplitude) and through the band clamp (frequency)."""
    import math

    x, sfreq = derived
    est = make_estimator("wiener", sfreq, (8.0, 13.0))
    est.fit(x[: int(8 * sfreq)])
    est.correction = 0.8 - 0.35j
    r, lag, seen = est._rings, est.freq_lag, 0
    clamped = 0
    for i in range(int(8 * sfreq), x.shape[0], 10):
        est.process(x[i : i + 10])
        seen = int(est._pos[1])
        if seen < est.n_taps + lag:
            continue
        k = (seen - 1) % est.ring_size
        z = complex(r[2, k], r[3, k]) * est.correction
        assert est.phase_deg == math.degrees(math.atan2(z.imag, z.real))
        assert est.amplitude == abs(z)
        kt = (seen - 1 - lag) % est.ring_size
        dz = complex(r[0, k], r[1, k]) * complex(r[0, kt], -r[1, kt])
        freq = math.atan2(dz.imag, dz.real) * est.sfreq / (2.0 * math.pi * lag)
        assert est.frequency_hz == min(max(freq, est.band_hz[0]), est.band_hz[1])
        clamped += est.frequency_hz in est.band_hz
    assert seen > est.n_taps + lag
    assert 0 < clamped


def test_general_path_for_other_chunks(derived):
    """Chunks the kernel's one-call path does not take (a strided view, float32, a list, an
    empty chunk, non-finite samples) go through the general path with the same result as the
    same samples given as C-contiguous float64."""
    x, sfreq = derived
    split = int(8 * sfreq)
    x32 = x.astype(np.float32).astype(np.float64)  # values float32 can hold exactly
    a = make_estimator("wiener", sfreq, (8.0, 13.0))
    b = make_estimator("wiener", sfreq, (8.0, 13.0))
    for est in (a, b):
        est.fit(x32[:split])
    tail = x32[split:]
    wide = np.vstack([tail, tail]).T  # column 0 is a strided view of tail
    bad_at = 400
    kinds = 0
    for i in range(0, tail.shape[0], 10):
        chunk = np.ascontiguousarray(tail[i : i + 10])
        if i == bad_at:
            chunk[3] = np.nan
        a.process(chunk)
        kind = (i // 10) % 4
        if i == bad_at:
            other = chunk.copy()
        elif kind == 0:
            other = wide[i : i + 10, 0]
        elif kind == 1:
            other = chunk.astype(np.float32)
        elif kind == 2:
            other = chunk.tolist()
        else:
            other = chunk
        b.process(np.zeros(0))
        b.process(other)
        kinds += 1
        assert (a.last_bad, a.n_samples, a.ready) == (b.last_bad, b.n_samples, b.ready)
        assert np.array_equal(
            [a.phase_deg, a.amplitude, a.frequency_hz],
            [b.phase_deg, b.amplitude, b.frequency_hz],
            equal_nan=True,
        )
        if i == bad_at:
            assert a.last_bad == 1 and not a.ready
    assert a.ready and kinds > 40
