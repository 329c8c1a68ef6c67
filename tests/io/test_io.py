"""Reading recordings: every shared recording, MNE formats in pieces, XDF, events, errors."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import mne
import numpy as np
import pytest
import pyxdf

from closedloop.errors import DataError, UsageError
from closedloop.io import Event, Recording, array_recording, open_recording
from tests.helpers import recordings as rec

mne.set_log_level("ERROR")

MNE_FILES = [
    rec.EYES_CLOSED,
    rec.EYES_OPEN,
    rec.MOTOR,
    rec.RECORDINGS / "eegmmidb" / "S001R04.edf",
    rec.RECORDINGS / "eegmmidb" / "S088R10.edf",
    rec.EEGMAT,
    rec.BDF_SLEEP,
    rec.ANT_1KHZ,
    rec.NEURONE_5KHZ,
]
XDF_FILES = [rec.XDF_MARKERS, rec.XDF_UNICORN]

# (file, sfreq, n_channels, approximate length in s, number of events) from ../shared/recordings/README.md
README_FACTS = [
    (rec.EYES_OPEN, 160.0, 64, 61.0, None),
    (rec.EYES_CLOSED, 160.0, 64, 60.0, None),
    (rec.MOTOR, 160.0, 64, 125.0, 30),
    (rec.RECORDINGS / "eegmmidb" / "S088R10.edf", 128.0, 64, 124.0, None),
    (rec.EEGMAT, 500.0, 21, 62.0, None),
    (rec.BDF_SLEEP, 125.0, 19, 247.0, None),
    (rec.ANT_1KHZ, 1000.0, 88, 9.6, None),
    (rec.NEURONE_5KHZ, 5000.0, 65, 0.45, None),
    (rec.XDF_MARKERS, 250.0, 8, 210.0, 51),
    (rec.XDF_UNICORN, 250.0, 17, 72.0, None),
]


def _ids(paths):
    return [Path(p).name for p in paths]


@pytest.mark.parametrize(
    "path,sfreq,n_channels,length_s,n_events", README_FACTS, ids=_ids([f[0] for f in README_FACTS])
)
def test_every_shared_recording_opens_with_its_documented_shape(
    recordings, path, sfreq, n_channels, length_s, n_events
):
    with open_recording(path) as recording:
        assert recording.sfreq == sfreq
        assert recording.n_channels == n_channels
        assert (
            len(recording.ch_names) == len(recording.ch_types) == len(recording.units) == n_channels
        )
        assert recording.duration_s == pytest.approx(length_s, abs=max(0.5, 0.01 * length_s))
        assert recording.duration_s == recording.n_samples / recording.sfreq
        if n_events is not None:
            assert len(recording.events) == n_events
        onsets = [e.onset_s for e in recording.events]
        assert onsets == sorted(onsets)
        middle = recording.n_samples // 2
        piece = recording.read(middle, min(recording.n_samples, middle + 37))
        assert piece.dtype == np.float64 and piece.flags.c_contiguous
        assert piece.shape == (n_channels, min(recording.n_samples, middle + 37) - middle)
        assert np.isfinite(piece).all()
    assert recording.closed
    with pytest.raises(ValueError, match="closed"):
        recording.read(0, 1)


@pytest.mark.parametrize("path", MNE_FILES, ids=_ids(MNE_FILES))
def test_mne_formats_match_mne_in_microvolts(recordings, path):
    raw = mne.io.read_raw(path, preload=False)
    recording = open_recording(path)
    assert recording.ch_names == raw.ch_names
    assert recording.ch_types == raw.get_channel_types()
    start = raw.n_times // 3
    stop = min(raw.n_times, start + 500)
    expected = raw.get_data(start=start, stop=stop)
    got = recording.read(start, stop)
    for i, ch in enumerate(raw.info["chs"]):
        if ch["unit"] == mne.io.constants.FIFF.FIFF_UNIT_V:
            assert recording.units[i] == "microvolts"
            np.testing.assert_allclose(got[i], expected[i] * 1e6, rtol=1e-12, atol=0)
        else:
            assert recording.units[i] != "microvolts"
            np.testing.assert_array_equal(got[i], expected[i])
    annotations = raw.annotations
    assert [e.description for e in recording.events] == list(annotations.description)
    np.testing.assert_allclose(
        [e.onset_s for e in recording.events], annotations.onset - raw.first_time
    )
    np.testing.assert_allclose([e.duration_s for e in recording.events], annotations.duration)


def test_edf_values_are_plausible_microvolts(recordings):
    # EEG in volts would be ~1e-5; in microvolts, tens of µV.
    recording = open_recording(rec.EYES_CLOSED)
    data = recording.read(0, 1600)
    median_abs = np.median(np.abs(data - data.mean(axis=1, keepdims=True)))
    assert 1.0 < median_abs < 500.0


def test_non_voltage_channels_keep_their_units(recordings):
    recording = open_recording(rec.BDF_SLEEP)
    raw = mne.io.read_raw(rec.BDF_SLEEP, preload=False)
    stim = recording.ch_types.index("stim")
    assert recording.units[stim] == "n/a"
    np.testing.assert_array_equal(
        recording.read(0, 2000)[stim], raw.get_data(picks=[stim], start=0, stop=2000)[0]
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 160, 5000])
def test_iter_chunks_concatenate_to_read(recordings, chunk_size):
    recording = open_recording(rec.MOTOR)
    start, stop = 1234, 1234 + 3001
    pieces = list(recording.iter_chunks(chunk_size, start=start, stop=stop))
    assert [i for i, _ in pieces] == list(range(start, stop, chunk_size))
    assert all(c.flags.c_contiguous and c.dtype == np.float64 for _, c in pieces)
    assert all(c.shape[1] == chunk_size for _, c in pieces[:-1])
    np.testing.assert_array_equal(
        np.concatenate([c for _, c in pieces], axis=1), recording.read(start, stop)
    )


def test_iter_chunks_whole_file_by_default(recordings):
    recording = open_recording(rec.NEURONE_5KHZ)
    total = sum(c.shape[1] for _, c in recording.iter_chunks(100))
    assert total == recording.n_samples


def test_reading_a_piece_does_not_load_the_file(recordings):
    recording = open_recording(rec.MOTOR)  # 64 ch x 20000 samples = 10 MB as float64
    tracemalloc.start()
    try:
        recording.read(10000, 10160)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


def test_read_range_errors(recordings):
    recording = open_recording(rec.EYES_OPEN)
    with pytest.raises(ValueError, match=r"out of range.*n_samples \(9760\)"):
        recording.read(0, recording.n_samples + 1)
    with pytest.raises(ValueError, match="out of range"):
        recording.read(10, 5)
    with pytest.raises(ValueError, match="integers"):
        recording.read(0.5, 10)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        next(recording.iter_chunks(0))
    assert recording.read(5, 5).shape == (64, 0)


def test_fif_with_first_samp_keeps_events_on_their_samples(recordings, tmp_path):
    raw = mne.io.read_raw(rec.MOTOR, preload=True).crop(tmin=10.0, tmax=40.0)
    assert raw.first_samp == 1600
    out = tmp_path / "motor_crop_raw.fif"
    raw.save(out)
    recording = open_recording(out)
    assert recording.n_samples == raw.n_times
    np.testing.assert_allclose(
        recording.read(100, 200), raw.get_data(start=100, stop=200) * 1e6, rtol=1e-6
    )
    original = open_recording(rec.MOTOR)
    # crop clips an annotation running across 10 s to onset 0; compare those starting after it
    expected = [e for e in original.events if 10.0 < e.onset_s <= 40.0]
    inside = [e for e in recording.events if e.onset_s > 1e-9]
    assert len(expected) >= 5
    assert [e.description for e in inside] == [e.description for e in expected]
    np.testing.assert_allclose(
        [e.onset_s for e in inside], [e.onset_s - 10.0 for e in expected], atol=1e-9
    )


def test_xdf_with_markers(recordings):
    recording = open_recording(rec.XDF_MARKERS)
    streams, _ = pyxdf.load_xdf(str(rec.XDF_MARKERS))
    eeg = next(s for s in streams if s["info"]["type"][0] == "EEG")
    markers = next(s for s in streams if s["info"]["type"][0] == "Markers")
    assert recording.format == "xdf"
    assert recording.ch_names == [f"ch{i}" for i in range(1, 9)]
    assert any("no label" in n for n in recording.notes)
    assert any("assumed to be microvolts" in n for n in recording.notes)
    assert any("nominal 250 Hz" in n for n in recording.notes)
    np.testing.assert_array_equal(
        recording.read(0, 100), eeg["time_series"][:100].T.astype(np.float64)
    )
    assert [e.description for e in recording.events] == [m[0] for m in markers["time_series"]]
    # each marker sits at the EEG sample recorded at its time
    nearest = np.abs(eeg["time_stamps"][None, :] - markers["time_stamps"][:, None]).argmin(axis=1)
    placed = np.array([e.onset_s * recording.sfreq for e in recording.events])
    assert np.all(np.abs(placed - nearest) <= 0.5 + 1e-9)
    # relative to the first EEG sample, within the clock difference (effective vs nominal rate)
    relative = markers["time_stamps"] - eeg["time_stamps"][0]
    np.testing.assert_allclose([e.onset_s for e in recording.events], relative, atol=0.2)


def test_xdf_stream_choice(recordings):
    assert open_recording(rec.XDF_MARKERS, stream="obci_eeg1").n_channels == 8
    assert open_recording(rec.XDF_MARKERS, stream="eeg").n_channels == 8
    with pytest.raises(DataError, match=r"'MarkerStream'.*holds strings.*choose a numeric stream"):
        open_recording(rec.XDF_MARKERS, stream="MarkerStream")
    with pytest.raises(DataError, match=r"no stream named or typed 'nope'.*obci_eeg1"):
        open_recording(rec.XDF_MARKERS, stream="nope")
    unicorn = open_recording(rec.XDF_UNICORN)  # type "Data": the largest numeric stream
    assert unicorn.n_channels == 17
    assert any("type 'Data'" in n for n in unicorn.notes)
    with pytest.raises(UsageError, match="XDF files only"):
        open_recording(rec.MOTOR, stream="EEG")


def test_truncated_edf_is_a_data_error(recordings, tmp_path):
    data = rec.MOTOR.read_bytes()
    truncated = tmp_path / "truncated.edf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError,
        match=r"truncated\.edf.*is truncated: its header declares 125 data records but the file ends after 62\.0 s",
    ):
        open_recording(truncated)
    header_only = tmp_path / "header_only.edf"
    header_only.write_bytes(data[:300])
    with pytest.raises(
        DataError, match=r"could not read recording .*header_only\.edf.*Accepted formats: EDF"
    ):
        open_recording(header_only)


def test_garbage_and_missing_files(tmp_path):
    rng = np.random.default_rng(0)
    for suffix in (".edf", ".bdf", ".vhdr", ".fif", ".xdf"):
        garbage = tmp_path / f"garbage{suffix}"
        garbage.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        with pytest.raises(DataError, match=rf"garbage\{suffix}.*Accepted formats"):
            open_recording(garbage)
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("hello")
    with pytest.raises(
        DataError, match=r"'notes\.xyz' is not a format closedloop can read \(\.xyz\).*BrainVision"
    ):
        open_recording(unknown)
    with pytest.raises(DataError, match="does not exist"):
        open_recording(tmp_path / "missing.edf")
    with pytest.raises(DataError, match="is a folder"):
        open_recording(tmp_path)


def test_brainvision_missing_data_file(recordings, tmp_path):
    src = rec.NEURONE_5KHZ
    for suffix in (".vhdr", ".vmrk"):
        shutil.copy(src.with_suffix(suffix), tmp_path / ("test_NO" + suffix))
    with pytest.raises(DataError, match=r"refers to a file that is missing: .*test_NO\.eeg"):
        open_recording(tmp_path / "test_NO.vhdr")


def test_array_recording():
    data = np.arange(30, dtype=np.float32).reshape(3, 10)
    recording = array_recording(data, 100.0, ["C3", "C4", "Cz"], events=[Event(0.05, 0.0, "x")])
    assert isinstance(recording, Recording)
    np.testing.assert_array_equal(recording.read(2, 5), data[:, 2:5])
    assert recording.read(2, 5).dtype == np.float64
    assert recording.units == ["microvolts"] * 3
    with pytest.raises(ValueError, match="ch_names has 1 entries; data has 3 channels"):
        array_recording(data, 100.0, ["C3"])
    with pytest.raises(DataError, match="unusable sampling rate"):
        array_recording(data, 0.0)
    with pytest.raises(ValueError, match=r"shape \(n_channels, n_samples\)"):
        array_recording(np.zeros(5), 100.0)


def test_file_changed_after_opening_is_a_data_error(recordings, tmp_path):
    copy = tmp_path / "copy.edf"
    shutil.copy(rec.EYES_OPEN, copy)
    recording = open_recording(copy)
    os.remove(copy)
    with pytest.raises(DataError, match=r"could not read samples 0\.\.10 of .*copy\.edf"):
        recording.read(0, 10)


def test_read_of_some_rows_equals_the_rows_of_a_full_read(recordings):
    """``rows``: only those channels are read (MNE's picks), the same values as the full read's
    rows; every row is the plain read; unordered or out-of-range rows are refused."""
    with open_recording(rec.EYES_CLOSED) as r:
        rows = np.array([2, 5, 11, r.n_channels - 1])
        full = r.read(100, 900)
        part = r.read(100, 900, rows)
        assert part.flags.c_contiguous and np.array_equal(full[rows], part)
        assert np.array_equal(r.read(0, 50, np.arange(r.n_channels)), r.read(0, 50))
        chunks = list(r.iter_chunks(7, 0, 100, rows=rows))
        assert np.array_equal(np.concatenate([c for _, c in chunks], axis=1), r.read(0, 100)[rows])
        for bad in ([5, 2], [0, r.n_channels], [-1, 3], [], [1.5]):
            with pytest.raises(ValueError, match="rows must be ascending"):
                r.read(0, 10, np.array(bad))
