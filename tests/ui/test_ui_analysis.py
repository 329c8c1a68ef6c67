"""What the operator's page computes: quality flags, display decimation, and the true phase at
each trigger from a second of later data, against the whole-recording ground truth."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from scipy.signal import welch

from closedloop.groundtruth import GroundTruth, derived_signal
from closedloop.protocol import load_protocol
from closedloop.ui.analysis import (
    DerivedHistory,
    DisplayDecimator,
    QualityMeter,
    TruthTracker,
    spectrum_db,
)
from tests.helpers.recordings import EYES_CLOSED


def test_true_phase_from_a_second_of_later_data_equals_the_whole_recording_truth(recordings):
    raw = mne.io.read_raw(EYES_CLOSED, verbose="error")
    sfreq = raw.info["sfreq"]
    protocol = load_protocol("alpha-trough-o2")
    x = derived_signal(raw.get_data() * 1e6, raw.ch_names, protocol)
    band = (8.0, 13.0)
    whole = GroundTruth(x, sfreq, band)
    t0 = 1000.0  # the LSL time of sample 0, with a little push jitter on the stamps
    rng = np.random.default_rng(0)
    stamps = t0 + np.arange(x.size) / sfreq + rng.uniform(0, 0.004, x.size)
    history = DerivedHistory(sfreq)
    tracker = TruthTracker(sfreq)
    onsets = np.arange(5.0, 55.0, 0.77) + 0.3 / sfreq  # between samples
    for k, t in enumerate(onsets):
        tracker.add(k + 1, t0 + t, 180.0, None)
    done = []
    step = 8
    for start in range(0, x.size, step):  # chunk by chunk, as the EEG reader feeds it
        history.write(x[start : start + step], stamps[start : start + step])
        done += tracker.update(history, band)
    assert len(done) == len(onsets) and not tracker.pending
    got = np.array([d["true_phase_deg"] for d in done])
    expected = whole.phase_at(onsets)
    err = (got - expected + 180.0) % 360.0 - 180.0
    # the segment's filter and Hilbert edges, and the fitted stamps, cost at most a few degrees
    assert np.median(np.abs(err)) < 3.0 and np.abs(err).max() < 12.0, err
    # each was scored once its later data was in, not before
    assert tracker.after_s(band) >= 1.0


def test_a_trigger_without_enough_earlier_data_or_across_a_gap_is_not_scored():
    sfreq = 250.0
    t = np.arange(int(8 * sfreq)) / sfreq
    x = 20 * np.cos(2 * np.pi * 10 * t)
    stamps = 50.0 + t
    stamps[1000:] += 0.5  # half a second missing
    history = DerivedHistory(sfreq)
    history.write(x, stamps)
    tracker = TruthTracker(sfreq)
    tracker.add(1, 50.2, 0.0, None)  # 0.2 s after the first sample
    tracker.add(2, stamps[1000] - 0.3, 0.0, None)  # across the gap
    done = tracker.update(history, (8.0, 13.0))
    notes = {d["seq"]: d["note"] for d in done}
    assert all(d["true_phase_deg"] is None for d in done)
    assert "too little data before" in notes[1] and "gap" in notes[2]


def test_quality_flags_flat_noisy_saturated_and_line_noise():
    sfreq = 500.0
    n = int(sfreq)
    rng = np.random.default_rng(1)
    t = np.arange(n) / sfreq
    names = ["ok1", "ok2", "ok3", "flat", "noisy", "rail", "line"]
    data = rng.normal(0, 8.0, (len(names), n)) + 10 * np.sin(2 * np.pi * 10 * t)
    data[3] = 3.0 + rng.normal(0, 0.01, n)
    data[4] = rng.normal(0, 150.0, n)
    data[5] = np.clip(data[5] * 20, -100.0, 100.0)
    data[6] += 60 * np.sin(2 * np.pi * 50 * t)
    meter = QualityMeter(sfreq, names)
    assert meter.process(data[:, :200]) is None  # a block is one second
    out = meter.process(data[:, 200:])
    flags = {c["name"]: c["flags"] for c in out}
    assert flags["ok1"] == flags["ok2"] == flags["ok3"] == []
    assert flags["flat"] == ["flat"]
    assert "noisy" in flags["noisy"]
    assert "saturated" in flags["rail"]
    assert flags["line"] == ["line noise"]
    assert {c["name"]: c["std_uv"] for c in out}["noisy"] == pytest.approx(150.0, rel=0.15)


def test_display_decimation_is_continuous_across_chunks_and_spectrum_matches_welch():
    sfreq = 5000.0
    t = np.arange(int(2 * sfreq)) / sfreq
    x = np.vstack([np.sin(2 * np.pi * 10 * t), np.cos(2 * np.pi * 3 * t)])
    whole = DisplayDecimator(sfreq, 2)
    idx_w, y_w = whole.process(x)
    chunked = DisplayDecimator(sfreq, 2)
    parts, taken = [], []
    for start in range(0, x.shape[1], 37):
        idx, y = chunked.process(x[:, start : start + 37])
        parts.append(y)
        taken.append(idx + start)
    assert whole.rate_hz == 250.0
    np.testing.assert_array_equal(np.concatenate(taken), idx_w)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), y_w, atol=1e-9)
    # a 10 Hz sine comes through the display low-pass unchanged in amplitude
    assert np.abs(y_w[0, 100:]).max() == pytest.approx(1.0, abs=0.02)
    freqs, db = spectrum_db(x[0], sfreq, 45.0)
    f_ref, p_ref = welch(x[0], fs=sfreq, nperseg=int(2 * sfreq), noverlap=int(sfreq))
    keep = (f_ref > 0) & (f_ref <= 45.0)
    np.testing.assert_allclose(db, 10 * np.log10(np.maximum(p_ref[keep], 1e-12)))
    assert freqs[np.argmax(db)] == pytest.approx(10.0, abs=0.5)
