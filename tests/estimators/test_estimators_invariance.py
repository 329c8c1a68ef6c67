"""Live equals replay, at the estimator: its answers depend on the samples only.

The same real recording fed in chunks of 1, 3, 7 and uneven sizes (0 included), with different
patterns of queries in between, must give the same phase, amplitude, frequency and
next-crossing answers, and the same crossings predicted for planning windows (the horizon-aware
prediction), at every sample point the runs have in common.
"""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest

from closedloop.channels import find_channel
from closedloop.estimators import make_estimator
from tests.helpers.recordings import EYES_CLOSED

BAND = (8.0, 13.0)
BASELINE_S = 30.0
FEED_S = 20.0
TARGETS = (0.0, 180.0)


@pytest.fixture(scope="module")
def o1(recordings):
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    x = raw.get_data(picks=[find_channel("O1", raw.ch_names)])[0] * 1e6
    return x, float(raw.info["sfreq"])


def _chunks(pattern: list[int], total: int) -> list[int]:
    sizes, pos, i = [], 0, 0
    while pos < total:
        size = min(pattern[i % len(pattern)], total - pos)
        sizes.append(size)
        pos += size
        i += 1
    return sizes


def _windows(est, sfreq: float) -> list[float]:
    """The crossings predicted for planning windows of one sample and of 25 ms (as after a
    chunk of 1 and of 4 at 160 Hz), and for one reaching past the longest trained horizon:
    wait and certainty, NaN where there is none."""
    out = []
    for start, end in ((0.001, 0.001 + 1 / sfreq), (0.001, 0.026), (0.09, 0.2)):
        for target in TARGETS:
            found = est.window_crossing(target, start, end)
            out += [math.nan, math.nan] if found is None else [found.wait_s, found.certainty]
    return out


def _feed(method: str, x: np.ndarray, sfreq: float, sizes: list[int], queries: str) -> dict:
    """Fit on the baseline, feed the rest in ``sizes``; answers after each chunk by sample."""
    n_base = round(BASELINE_S * sfreq)
    est = make_estimator(method, sfreq, BAND)
    est.fit(x[:n_base])
    est.process(x[:n_base])
    rest = x[n_base : n_base + round(FEED_S * sfreq)]
    rng = np.random.default_rng(3)
    answers, pos = {}, 0
    for i, size in enumerate(sizes):
        est.process(rest[pos : pos + size])
        pos += size
        if queries == "many":
            # extra queries of other phases, repeated, as a live loop with another horizon might
            for target in rng.uniform(-180.0, 180.0, 3):
                est.next_crossing_s(float(target))
            est.next_crossing_s(TARGETS[i % 2])
        elif queries == "sparse" and i % 5:
            continue
        if est.ready:
            answers[pos] = (
                est.phase_deg,
                est.amplitude,
                est.frequency_hz,
                *(est.next_crossing_s(t) for t in TARGETS),
                *_windows(est, sfreq),
            )
    assert pos == rest.shape[0]
    return answers


@pytest.mark.parametrize("method", ["auto", "ar", "echt", "etp"])
def test_answers_do_not_depend_on_chunking_or_queries(o1, method):
    x, sfreq = o1
    total = round(FEED_S * sfreq)
    runs = {
        "1, queried every sample": _feed(method, x, sfreq, _chunks([1], total), "every"),
        "3, queried a lot": _feed(method, x, sfreq, _chunks([3], total), "many"),
        "7, queried rarely": _feed(method, x, sfreq, _chunks([7], total), "sparse"),
        "uneven": _feed(method, x, sfreq, _chunks([0, 1, 13, 2, 0, 40, 5, 1, 97], total), "many"),
    }
    reference = runs.pop("1, queried every sample")
    assert len(reference) >= total - 1  # answers at (nearly) every sample
    for name, answers in runs.items():
        common = sorted(set(answers) & set(reference))
        assert len(common) >= 10, name
        for n in common:
            got, want = answers[n], reference[n]
            whats = ("phase", "amplitude", "frequency", "cross 0", "cross 180")
            whats += tuple(f"window answer {i}" for i in range(len(got) - len(whats)))
            for g, w, what in zip(got, want, whats):
                if what == "phase":
                    # wrap-around at +-180
                    diff = abs((g - w + 180.0) % 360.0 - 180.0)
                elif math.isnan(w):
                    assert math.isnan(g), f"{method}: chunks {name}, sample {n}: {what} {g!r}"
                    continue
                else:
                    diff = abs(g - w)
                assert diff <= 1e-9 * max(1.0, abs(w)), (
                    f"{method}: chunks {name} differ from single samples at sample {n} in {what}: "
                    f"{g!r} vs {w!r}"
                )
        assert all(math.isfinite(v) for v in reference[common[-1]][:5])
    found = np.array([v[5:] for v in reference.values()])
    assert np.isfinite(found).any()
    if method == "auto":
        # the horizon-aware prediction answers only for a crossing inside the window
        assert np.isnan(found).any()


def test_wiener_keeps_learning_without_queries(o1):
    """The bias tracking runs inside ``process``: with no query at all it still adapts."""
    x, sfreq = o1
    n_base = round(BASELINE_S * sfreq)
    est = make_estimator("auto", sfreq, BAND)
    est.fit(x[:n_base])
    grid_before = est.grid.copy()
    rot_before = est.rotation_acc
    est.process(x[n_base:])
    assert est.rotation_acc != rot_before
    assert not np.allclose(est.grid, grid_before)
