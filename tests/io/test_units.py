"""Units: every spelling of the unit field, for LSL streams, XDF and MNE files, and the
plausibility check that holds triggering when the data are a thousand times off.

The spellings mne-lsl writes are produced by mne-lsl itself (its ``StreamInfo.set_channel_units``
on a real outlet); files are written by closedloop's XDF writer and MNE, and replayed by the real
``closedloop replay``.
"""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest

from closedloop.io import open_recording
from closedloop.lsl.source import LSLSource, resolve_stream
from closedloop.offline import read_events_tsv
from closedloop.plausibility import UnitsCheck, robust_amplitude
from closedloop.units import parse_units_option, unit_to_uv
from closedloop.xdf import XDFWriter
from tests.helpers.faults import run_cli
from tests.helpers.recordings import EYES_CLOSED


@pytest.mark.parametrize(
    "unit, ch_type, factor",
    [
        ("V", "EEG", 1e6), ("volts", "eeg", 1e6), ("Volt", "EEG", 1e6),
        ("mV", "EEG", 1e3), ("millivolts", "EEG", 1e3), ("milli-volts", "EEG", 1e3),
        ("µV", "EEG", 1.0), ("\u03bcV", "EEG", 1.0), ("uV", "EEG", 1.0), ("UV", "EEG", 1.0),
        ("microvolts", "EEG", 1.0), ("Micro Volts", "EEG", 1.0), ("microvolt", "EOG", 1.0),
        ("nV", "EEG", 1e-3), ("nanovolts", "EEG", 1e-3),
        # mne-lsl: the FIFF unit multiplier of the channel's SI unit
        ("0", "eeg", 1e6), ("-3", "eeg", 1e3), ("-6", "eeg", 1.0), ("-9", "ecg", 1e-3),
        ("+0", "eeg", 1e6), ("107", "EEG", 1e6),  # MNE's FIFF code of the volt
        ("0", "", 1e6),  # no type: an EEG stream's channel
        ("0", "stim", None), ("-6", "misc", None),  # a multiplier of another SI unit
        ("", "EEG", None), ("furlongs", "EEG", None), ("6", "EEG", None),
    ],
)
def test_every_spelling_of_the_unit_field_maps_to_its_factor(unit, ch_type, factor):
    got = unit_to_uv(unit, ch_type)
    assert got == factor, (unit, ch_type, got)


def test_units_option_accepts_the_spellings_and_names_what_it_accepts():
    assert parse_units_option("V") == 1e6
    assert parse_units_option("-6") == 1.0
    with pytest.raises(ValueError, match=r"--units 'volt-ish' is not a voltage unit; accepted: V, mV, uV"):
        parse_units_option("volt-ish")


@pytest.mark.parametrize(
    "given, on_the_wire",
    [
        # what PlayerLSL does: the FIFF unit multipliers of the Raw's channels, as integers
        ([0, -3, -6, 0], ["0", "-3", "-6", "0"]),
        (["volts", "millivolts", "microvolts", "none"], ["volts", "millivolts", "microvolts", "none"]),
    ],
)
def test_mne_lsl_units_on_a_real_outlet_scale_to_microvolts(source_id, given, on_the_wire):
    """mne-lsl's StreamInfo.set_channel_units on a real outlet, read by closedloop."""
    from mne_lsl.lsl import StreamInfo, StreamOutlet

    names = ["C3", "C4", "Cz", "STI"]
    info = StreamInfo("mne-lsl-units", "eeg", len(names), 250.0, "float32", source_id)
    info.set_channel_names(names)
    info.set_channel_types(["eeg", "eeg", "eeg", "stim"])
    info.set_channel_units(given)
    outlet = StreamOutlet(info)
    try:
        source = LSLSource(resolve_stream(source_id=source_id, timeout=10.0))
        try:
            assert source.layout.units == on_the_wire
            np.testing.assert_array_equal(source.layout.scale_to_uv, [1e6, 1e3, 1.0, 1.0])
            assert source.layout.notes == []
        finally:
            source.close()
    finally:
        del outlet


def _eyes_closed_uv(seconds: float = 60.0) -> tuple[np.ndarray, float, list[str]]:
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error")
    n = int(seconds * raw.info["sfreq"])
    return raw.get_data()[:, :n] * 1e6, float(raw.info["sfreq"]), list(raw.ch_names)


@pytest.mark.parametrize(
    "factor, status, looks_like",
    [(1.0, "ok", None), (1e-6, "implausible", "volts"), (1e-3, "implausible", "millivolts"),
     (1e3, "implausible", "nanovolts")],
)
def test_the_check_names_the_units_real_eeg_looks_like(recordings, factor, status, looks_like):
    data, sfreq, names = _eyes_closed_uv(10.0)
    picks = [names.index("O1.."), names.index("O2..")]
    check = UnitsCheck(sfreq, picks, ch_names=["O1", "O2"], declared_scale=1.0)
    x = data * factor  # the values as a stream in that unit, taken as microvolts
    results = [check.process(np.ascontiguousarray(x[:, i : i + 7])) for i in range(0, x.shape[1], 7)]
    assert check.status == status
    assert results[-1] == (status == "ok")
    if looks_like is None:
        assert 5.0 < check.amplitude_uv < 200.0
    else:
        assert check.summary()["looks_like"] == looks_like
        message = check.message()
        assert f"the values look like {looks_like}, but are taken as microvolts" in message
        assert "--units" in message


def test_dc_offset_drift_and_nan_do_not_fool_it_and_a_flat_start_is_not_judged(recordings):
    data, sfreq, names = _eyes_closed_uv(12.0)
    x = data[[names.index("O1..")]].copy()
    t = np.arange(x.shape[1]) / sfreq
    x += 5000.0 + 300.0 * t  # 5 mV of DC and 300 µV/s of drift (a DC-coupled amplifier)
    x[0, 700:740] = np.nan
    n_flat = int(2 * sfreq)  # one whole window
    x[0, :n_flat] = 0.0  # the amplifier sends zeros while it starts
    check = UnitsCheck(sfreq, [0])
    for i in range(0, x.shape[1], 4):
        check.process(np.ascontiguousarray(x[:, i : i + 4]))
    assert check.status == "ok" and check.first_verdict == "ok", check.summary()
    assert 5.0 < check.amplitude_uv < 200.0


def test_a_start_up_transient_holds_only_until_a_window_passes(recordings):
    data, sfreq, names = _eyes_closed_uv(10.0)
    x = data[[names.index("O1..")]].copy()
    x[0, : int(2 * sfreq)] *= 1e3  # the first two seconds: a huge electrode-settling transient
    check = UnitsCheck(sfreq, [0])
    oks = [check.process(np.ascontiguousarray(x[:, i : i + 16])) for i in range(0, x.shape[1], 16)]
    assert check.first_verdict == "implausible" and check.status == "ok"
    first_ok = oks.index(True) * 16 / sfreq
    assert 3.9 <= first_ok <= 4.1  # the second window (2-4 s) passed


def test_chunking_does_not_change_the_verdict(recordings):
    data, sfreq, _ = _eyes_closed_uv(4.0)
    picks = list(range(8))
    verdicts = []
    for size in (1, 5, 33, data.shape[1]):
        check = UnitsCheck(sfreq, picks)
        for i in range(0, data.shape[1], size):
            check.process(np.ascontiguousarray(data[:, i : i + size]))
        verdicts.append((check.status, check.amplitude_uv))
    assert len(set(verdicts)) == 1, verdicts
    # and the amplitude is the median over the channels of the robust spread of the first window
    expected = float(np.median(robust_amplitude(data[picks, : int(2 * sfreq)])))
    assert math.isclose(verdicts[0][1], expected, rel_tol=1e-12)


def _write_xdf(path, data_uv, sfreq, names, unit: str, ch_type: str = "EEG", scale: float = 1.0):
    with XDFWriter(path) as writer:
        writer.add_stream(
            1,
            XDFWriter.stream_header_xml(
                "amp", "EEG", len(names), sfreq, "double64", "amp-1",
                ch_labels=names, ch_units=[unit] * len(names), ch_types=[ch_type] * len(names),
            ),
        )
        stamps = 1000.0 + np.arange(data_uv.shape[1]) / sfreq
        writer.write_samples(1, stamps, (data_uv * scale).T)
    return path


@pytest.mark.parametrize(
    "unit, scale", [("0", 1e-6), ("V", 1e-6), ("-3", 1e-3), ("millivolts", 1e-3), ("-6", 1.0), ("nV", 1e3)]
)
def test_xdf_files_in_any_spelling_read_back_in_microvolts(tmp_path, recordings, unit, scale):
    data, sfreq, names = _eyes_closed_uv(3.0)
    path = _write_xdf(tmp_path / "s.xdf", data[:4], sfreq, names[:4], unit, "eeg", scale)
    with open_recording(path) as rec:
        assert rec.units == ["microvolts"] * 4
        np.testing.assert_allclose(rec.read(0, rec.n_samples), data[:4], rtol=1e-9, atol=1e-9)
        assert not any("assumed to be microvolts" in n for n in rec.notes)


def test_xdf_numeric_code_on_a_stim_channel_is_not_a_voltage(tmp_path):
    with XDFWriter(tmp_path / "s.xdf") as writer:
        writer.add_stream(1, XDFWriter.stream_header_xml(
            "amp", "EEG", 2, 100.0, "double64", "amp-1",
            ch_labels=["Cz", "STI"], ch_units=["0", "0"], ch_types=["eeg", "stim"]))
        writer.write_samples(1, np.arange(200) / 100.0, np.tile([[2e-5, 3.0]], (200, 1)))
    with open_recording(tmp_path / "s.xdf") as rec:
        values = rec.read(0, 200)
    np.testing.assert_allclose(values[0], 20.0)
    np.testing.assert_allclose(values[1], 3.0)  # the trigger code, untouched


def _replay(recording, out, *extra):
    return run_cli("replay", str(recording), "--protocol", "default", "--out", str(out), "--quiet", *extra)


def test_replay_of_volts_declared_as_microvolts_holds_and_units_overrides(tmp_path, recordings):
    """The recording the issue saw live, as a file: EEG in volts labelled microvolts. Replay holds
    (0 triggers) and says the values look like volts; --units V gives the EDF's triggers."""
    data, sfreq, names = _eyes_closed_uv(60.0)
    wrong = _write_xdf(tmp_path / "volts.xdf", data, sfreq, names, "microvolts", scale=1e-6)
    held = _replay(wrong, tmp_path / "held")
    assert held.returncode == 0, held.stderr
    assert "the values look like volts, but are taken as microvolts" in held.stderr
    assert "give --units V" in held.stderr and "Triggering was held for the whole recording" in held.stderr
    assert read_events_tsv(tmp_path / "held" / "events.tsv") == []

    fixed = _replay(wrong, tmp_path / "fixed", "--units", "V")
    edf = _replay(EYES_CLOSED, tmp_path / "edf")
    assert fixed.returncode == 0 and edf.returncode == 0, (fixed.stderr, edf.stderr)
    assert "note: --units" in fixed.stderr and "look like" not in fixed.stderr
    n_fixed = len(read_events_tsv(tmp_path / "fixed" / "events.tsv"))
    n_edf = len(read_events_tsv(tmp_path / "edf" / "events.tsv"))
    assert n_edf > 40 and n_fixed == n_edf, (n_fixed, n_edf)


def test_replay_of_an_edf_given_the_wrong_units_is_held_and_told_the_right_ones(tmp_path, recordings):
    done = _replay(EYES_CLOSED, tmp_path / "mv", "--units", "mV")
    assert done.returncode == 0, done.stderr
    assert "the values look like microvolts, but are taken as millivolts" in done.stderr
    assert "give --units uV" in done.stderr
    assert read_events_tsv(tmp_path / "mv" / "events.tsv") == []
    bad = _replay(EYES_CLOSED, tmp_path / "bad", "--units", "parsecs")
    assert bad.returncode == 2 and "--units 'parsecs' is not a voltage unit" in bad.stderr


def test_units_check_in_a_live_run_holds_and_says_so(tmp_path, source_id):
    """A live stream in volts that states no units: the run holds triggering, says the values
    look like volts, and ends with 0 triggers and the verdict in its summary."""
    from tests.helpers.faults import LIVE_SFREQ, FaultyOutlet, alpha_stream, run_live

    outlet = FaultyOutlet(alpha_stream(20.0) * 1e-6, LIVE_SFREQ, source_id, unit="").start()
    try:
        done, summary = run_live(tmp_path, source_id, 6.0)
    finally:
        outlet.close()
    assert done.returncode == 0, done.stderr
    assert "the values look like volts, but are taken as microvolts" in done.stderr
    assert "Triggering is held" in done.stderr
    assert summary["triggers"] == 0
    assert summary["units"]["status"] == "implausible" and summary["units"]["looks_like"] == "volts"
    assert "triggering was held for the whole session" in done.stderr
