"""Spatial filters on real channel layouts against explicit numpy, and the ring buffer."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.dsp import RingBuffer, SettingsError, SpatialFilter, spatial_weights
from closedloop.errors import DataError
from tests.helpers.recordings import ANT_1KHZ, EEGMAT, EYES_CLOSED, require_recordings


@cache
def load(path: str, seconds: float = 10.0) -> tuple[np.ndarray, list[str]]:
    require_recordings()
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    data = np.ascontiguousarray(raw.get_data()[:, : int(seconds * raw.info["sfreq"])] * 1e6)
    data.flags.writeable = False
    return data, list(raw.ch_names)


def idx(names: list[str], *wanted: str) -> list[int]:
    return [names.index(w) for w in wanted]


def test_hjorth_default_neighbours_on_eegmmidb_layout() -> None:
    data, names = load(str(EYES_CLOSED))
    weights = spatial_weights(names, ["C3"], "hjorth")
    assert weights.shape == (1, 64)
    c3 = names.index("C3..")
    neighbours = idx(names, "Fc3.", "C5..", "C1..", "Cp3.")
    assert set(np.flatnonzero(weights[0])) == {c3, *neighbours}
    derived = SpatialFilter(weights).process(data)
    explicit = data[c3] - data[neighbours].mean(axis=0)
    np.testing.assert_allclose(derived[0], explicit, rtol=1e-12, atol=1e-9)


def test_hjorth_explicit_neighbours_in_vendor_spellings() -> None:
    data, names = load(str(EYES_CLOSED))
    weights = spatial_weights(names, ["fc5"], "hjorth", neighbors=["FC3", "F5", "FT7", "c5"])
    derived = SpatialFilter(weights).process(data)
    target = names.index("Fc5.")
    others = idx(names, "Fc3.", "F5..", "Ft7.", "C5..")
    np.testing.assert_allclose(
        derived[0], data[target] - data[others].mean(axis=0), rtol=1e-12, atol=1e-9
    )


def test_hjorth_skips_bad_neighbours() -> None:
    _, names = load(str(EYES_CLOSED))
    weights = spatial_weights(names, ["C3"], "hjorth", bad=["C1.."])
    used = {names[i] for i in np.flatnonzero(weights[0])}
    assert "C1.." not in used and len(used) == 5


def test_average_reference_on_eegmmidb_and_two_targets() -> None:
    data, names = load(str(EYES_CLOSED))
    weights = spatial_weights(names, ["C3", "c4"], "average")
    derived = SpatialFilter(weights).process(data)
    mean = data.mean(axis=0)
    np.testing.assert_allclose(derived[0], data[names.index("C3..")] - mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(derived[1], data[names.index("C4..")] - mean, rtol=1e-12, atol=1e-9)


def test_average_reference_leaves_out_non_eeg_and_bad_channels() -> None:
    data, names = load(str(EEGMAT))
    assert "ECG ECG" in names
    weights = spatial_weights(names, ["O2"], "average", bad=["EEG Fp1"])
    x = np.array(data)
    x[names.index("ECG ECG")] = np.nan  # an unused channel must not leak
    x[names.index("EEG Fp1")] = np.inf
    stage = SpatialFilter(weights)
    derived = stage.process(x)
    good = [i for i, n in enumerate(names) if n.startswith("EEG") and n != "EEG Fp1"]
    assert len(good) == 19
    explicit = data[names.index("EEG O2")] - data[good].mean(axis=0)
    np.testing.assert_allclose(derived[0], explicit, rtol=1e-12, atol=1e-9)
    assert stage.last_bad == 0


def test_average_on_ant_layout_excludes_eog_and_bipolar_inputs() -> None:
    _, names = load(str(ANT_1KHZ), 2.0)
    weights = spatial_weights(names, ["Cz"], "average")
    used = {names[i] for i in np.flatnonzero(weights[0])}
    assert "EOG" not in used and not any(n.startswith("BIP") for n in used)
    assert "M1" in used and len(used) == 63  # 64 scalp/mastoid channels minus EOG


def test_bipolar_none_and_explicit_weights() -> None:
    data, names = load(str(EEGMAT))
    o1, o2 = names.index("EEG O1"), names.index("EEG O2")
    bipolar = SpatialFilter(spatial_weights(names, ["O2"], "bipolar", bipolar_with="o1"))
    np.testing.assert_allclose(bipolar.process(data)[0], data[o2] - data[o1], rtol=1e-12)
    plain = SpatialFilter(spatial_weights(names, ["EEG O2"], "none")).process(data)
    np.testing.assert_array_equal(plain[0], data[o2])
    custom = spatial_weights(names, ["O2"], "weights", weights={"O2": 1.0, "P4": -0.5, "Pz": -0.5})
    p4, pz = names.index("EEG P4"), names.index("EEG Pz")
    np.testing.assert_allclose(
        SpatialFilter(custom).process(data)[0], data[o2] - 0.5 * (data[p4] + data[pz]), rtol=1e-12
    )


def test_nan_in_a_used_channel_is_reported() -> None:
    data, names = load(str(EYES_CLOSED), 2.0)
    stage = SpatialFilter(spatial_weights(names, ["C3"], "hjorth"))
    x = np.array(data[:, :50])
    x[names.index("Cp3."), 10:13] = np.nan
    x[names.index("O1.."), :] = np.nan  # not used by C3's Hjorth
    out = stage.process(x)
    assert stage.last_bad == 3
    assert np.isnan(out[0, 10:13]).all() and np.isfinite(np.delete(out[0], [10, 11, 12])).all()


def test_missing_channel_names_the_nearest() -> None:
    _, names = load(str(EYES_CLOSED), 1.0)
    with pytest.raises(
        DataError, match=r"channel 'C9' is not in the data\. Nearest: .*'C[0-9z]"
    ) as e:
        spatial_weights(names, ["C9"], "none")
    assert e.value.exit_code == 3
    with pytest.raises(DataError, match="'Cp7' is not in the data"):
        spatial_weights(names, ["C3"], "hjorth", neighbors=["Cp7", "C1"])
    with pytest.raises(DataError, match="marked bad"):
        spatial_weights(names, ["C3"], "average", bad=["c3"])


def test_reference_settings_are_validated() -> None:
    _, names = load(str(EYES_CLOSED), 1.0)
    with pytest.raises(SettingsError, match="reference must be one of none, average, hjorth"):
        spatial_weights(names, ["C3"], "laplacian")
    with pytest.raises(SettingsError, match="needs bipolar_with"):
        spatial_weights(names, ["C3"], "bipolar")
    with pytest.raises(SettingsError, match="is the target itself"):
        spatial_weights(names, ["C3"], "bipolar", bipolar_with="C3..")
    with pytest.raises(SettingsError, match="needs weights="):
        spatial_weights(names, ["C3"], "weights")
    with pytest.raises(DataError, match="no position in the standard 10-05 layout"):
        spatial_weights(["C3", "Cz", "C4", "Pz", "Fz", "X1"], ["X1"], "hjorth")
    with pytest.raises(SettingsError, match=r"shape \(n_out, n_channels\)"):
        SpatialFilter(np.ones(4))
    stage = SpatialFilter(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(4, n_samples\); got shape \(5, 2\)"):
        stage.process(np.zeros((5, 2)))
    assert stage.process(np.zeros((4, 0))).shape == (1, 0)


# ---------------------------------------------------------------- RingBuffer


@given(
    capacity=st.integers(1, 300),
    sizes=st.lists(
        st.one_of(st.sampled_from([0, 1, 2, 7, 64]), st.integers(65, 700)), min_size=1, max_size=25
    ),
    wanted=st.integers(0, 400),
)
@settings(max_examples=60, deadline=None)
def test_ringbuffer_matches_concatenation(capacity: int, sizes: list[int], wanted: int) -> None:
    data, _ = load(str(EYES_CLOSED), 20.0)
    data = data[:3]
    buffer = RingBuffer(3, capacity)
    written = 0
    for size in sizes:
        chunk = np.ascontiguousarray(data[:, written : written + size])
        buffer.write(chunk)
        written += chunk.shape[1]
        assert buffer.n_written == written
        latest = buffer.latest(wanted)
        m = min(wanted, written, capacity)
        assert latest.shape == (3, m) and latest.flags.c_contiguous
        np.testing.assert_array_equal(latest, data[:, written - m : written])


def test_ringbuffer_edges_and_errors() -> None:
    buffer = RingBuffer(2, 4)
    assert buffer.latest(3).shape == (2, 0)
    buffer.write(np.arange(20.0).reshape(2, 10))  # longer than the capacity
    np.testing.assert_array_equal(buffer.latest(10), [[6, 7, 8, 9], [16, 17, 18, 19]])
    latest = buffer.latest(2)
    latest[:] = -1  # a copy: the buffer is untouched
    np.testing.assert_array_equal(buffer.latest(2), [[8, 9], [18, 19]])
    with pytest.raises(
        ValueError, match=r"RingBuffer.write expects .*\(2, n_samples\); got shape \(3, 1\)"
    ):
        buffer.write(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="got dtype int64"):
        buffer.write(np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="sample count >= 0; got -1"):
        buffer.latest(-1)
    with pytest.raises(SettingsError, match="capacity must be an integer >= 1; got 0"):
        RingBuffer(2, 0)
    buffer.reset()
    assert buffer.n_written == 0 and buffer.latest(4).shape == (2, 0)


def test_average_of_every_channel_matches_numpy_and_marks_inf() -> None:
    data, names = load(str(EYES_CLOSED), 5.0)
    weights = spatial_weights(names, names, "average")  # 64 x 64: the BLAS path
    assert weights.shape == (64, 64)
    stage = SpatialFilter(weights)
    np.testing.assert_allclose(stage.process(data), data - data.mean(axis=0), rtol=1e-10, atol=1e-9)
    x = np.array(data[:, :40])
    x[5, 7] = np.inf
    out = stage.process(x)
    assert stage.last_bad == 64  # every derived channel reads channel 5 at sample 7
    assert np.isnan(out[:, 7]).all() and np.isfinite(np.delete(out, 7, axis=1)).all()


@given(
    sizes=st.lists(
        st.one_of(st.sampled_from([0, 1, 2, 7, 64]), st.integers(65, 800)), min_size=1, max_size=20
    ),
    reference=st.sampled_from(["hjorth", "average"]),
)
@settings(max_examples=20, deadline=None)
def test_spatial_filter_chunked_equals_whole(sizes: list[int], reference: str) -> None:
    data, names = load(str(EYES_CLOSED))
    stage = SpatialFilter(spatial_weights(names, ["C3", "Cz"], reference))
    whole = stage.process(data)
    pieces, start, i = [], 0, 0
    while start < data.shape[1]:
        stop = min(data.shape[1], start + sizes[i % len(sizes)] + (sum(sizes) == 0))
        pieces.append(stage.process(np.ascontiguousarray(data[:, start:stop])))
        start, i = stop, i + 1
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=1e-10, atol=0)


def test_default_neighbours_on_a_10_20_layout_with_old_names() -> None:
    data, names = load(str(EEGMAT))
    weights = spatial_weights(names, ["C3"], "hjorth")
    used = {names[i] for i in np.flatnonzero(weights[0])}
    assert used == {"EEG C3", "EEG F3", "EEG P3", "EEG Cz", "EEG T3"}
    neighbours = idx(names, "EEG F3", "EEG P3", "EEG Cz", "EEG T3")
    explicit = data[names.index("EEG C3")] - data[neighbours].mean(axis=0)
    np.testing.assert_allclose(
        SpatialFilter(weights).process(data)[0], explicit, rtol=1e-12, atol=1e-9
    )
