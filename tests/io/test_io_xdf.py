"""XDF details on small files written here byte by byte (XDF 1.0 chunk layout), read through pyxdf:
units from the header, stream choice, markers on their samples, irregular clocks."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from closedloop.errors import DataError
from closedloop.io import open_recording
from closedloop.play import Player


def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1]) + struct.pack("<B", n)
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


def _header_xml(name, kind, channels, srate, fmt) -> bytes:
    chans = "".join(
        "<channel>"
        + "".join(f"<{key}>{value}</{key}>" for key, value in ch.items() if value is not None)
        + "</channel>"
        for ch in channels
    )
    desc = f"<desc><channels>{chans}</channels></desc>" if chans else "<desc/>"
    return (
        f'<?xml version="1.0"?><info><name>{name}</name><type>{kind}</type>'
        f"<channel_count>{max(1, len(channels))}</channel_count><nominal_srate>{srate}</nominal_srate>"
        f"<channel_format>{fmt}</channel_format><created_at>0</created_at>{desc}</info>"
    ).encode()


def write_xdf(path: Path, streams: list[dict]) -> Path:
    """streams: dicts with name, type, srate, format, channels (list of dicts), stamps, values."""
    out = bytearray(b"XDF:")
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    for sid, s in enumerate(streams, start=1):
        channels = s.get("channels", [])
        out += _chunk(
            2,
            struct.pack("<I", sid)
            + _header_xml(s["name"], s["type"], channels, s["srate"], s["format"]),
        )
    for sid, s in enumerate(streams, start=1):
        body = bytearray(struct.pack("<I", sid) + _varlen(len(s["stamps"])))
        for stamp, value in zip(s["stamps"], s["values"]):
            body += bytes([8]) + struct.pack("<d", stamp)
            if s["format"] == "string":
                text = str(value).encode()
                body += _varlen(len(text)) + text
            else:
                body += np.asarray(value, dtype="<f4").tobytes()
        out += _chunk(3, bytes(body))
    for sid, s in enumerate(streams, start=1):
        footer = (
            f'<?xml version="1.0"?><info><first_timestamp>{s["stamps"][0]}</first_timestamp>'
            f"<last_timestamp>{s['stamps'][-1]}</last_timestamp><sample_count>{len(s['stamps'])}"
            "</sample_count></info>"
        )
        out += _chunk(6, struct.pack("<I", sid) + footer.encode())
    path.write_bytes(bytes(out))
    return path


def eeg_stream(n=200, sfreq=100.0, t0=1000.0, channels=None, name="amp", kind="EEG", values=None):
    channels = channels or [{"label": "C3", "unit": "microvolts", "type": "EEG"}]
    rng = np.random.default_rng(1)
    values = (
        values if values is not None else rng.normal(0, 1, (n, len(channels))).astype(np.float32)
    )
    return {
        "name": name,
        "type": kind,
        "srate": sfreq,
        "format": "float32",
        "channels": channels,
        "stamps": t0 + np.arange(n) / (sfreq or 50.0),
        "values": values,
    }


def marker_stream(stamps, texts, name="markers"):
    return {
        "name": name,
        "type": "Markers",
        "srate": 0,
        "format": "string",
        "stamps": stamps,
        "values": texts,
    }


def test_units_from_the_header_become_microvolts(tmp_path):
    channels = [
        {"label": "C3", "unit": "volts", "type": "EEG"},
        {"label": "C4", "unit": "mV", "type": "EEG"},
        {"label": "Cz", "unit": "\u00b5V", "type": "EEG"},
        {"label": "Pz", "unit": "uV", "type": "EEG"},
        {"label": "AccX", "unit": "g", "type": "ACC"},
        {"label": "Oz", "unit": None, "type": "EEG"},
    ]
    values = np.tile(np.array([1e-5, 0.02, 3.0, 4.0, 0.5, 6.0], dtype=np.float32), (50, 1))
    path = write_xdf(tmp_path / "units.xdf", [eeg_stream(50, channels=channels, values=values)])
    recording = open_recording(path)
    assert recording.ch_names == ["C3", "C4", "Cz", "Pz", "AccX", "Oz"]
    assert recording.ch_types == ["eeg", "eeg", "eeg", "eeg", "acc", "eeg"]
    assert recording.units == ["microvolts"] * 4 + ["g", "microvolts"]
    expected = values[0].astype(np.float64) * np.array([1e6, 1e3, 1, 1, 1, 1])
    np.testing.assert_allclose(
        recording.read(0, 50), np.repeat(expected[:, None], 50, axis=1), rtol=1e-6
    )
    assert any("(Oz)" in n and "assumed to be microvolts" in n for n in recording.notes)
    assert not any("no label" in n for n in recording.notes)


def test_eeg_stream_preferred_then_largest(tmp_path):
    big_data = eeg_stream(
        400, channels=[{"label": f"x{i}"} for i in range(4)], name="big", kind="Data"
    )
    small_eeg = eeg_stream(100, name="small-eeg")
    path = write_xdf(tmp_path / "two.xdf", [big_data, small_eeg])
    assert open_recording(path).ch_names == ["C3"]
    assert open_recording(path, stream="big").n_channels == 4
    assert open_recording(path, stream="DATA").n_samples == 400
    only_data = write_xdf(
        tmp_path / "one.xdf", [big_data, eeg_stream(100, name="tiny", kind="Aux")]
    )
    assert open_recording(only_data).n_channels == 4


def test_markers_land_on_their_samples(tmp_path):
    eeg = eeg_stream(300, sfreq=100.0, t0=500.0)
    # at samples 37 and 250, half way between 120 and 121, and 0.5 s before the first sample
    stamps = np.array([500.37, 502.50, 501.205, 499.5])
    path = write_xdf(tmp_path / "m.xdf", [eeg, marker_stream(stamps, ["a", "b", "c", "early"])])
    recording = open_recording(path)
    by_text = {e.description: e.onset_s for e in recording.events}
    assert by_text["a"] == pytest.approx(0.37, abs=1e-9)
    assert by_text["b"] == pytest.approx(2.50, abs=1e-9)
    assert by_text["c"] == pytest.approx(1.205, abs=1e-9)
    assert by_text["early"] == pytest.approx(-0.5, abs=1e-9)
    assert [e.description for e in recording.events] == ["early", "a", "c", "b"]
    player = Player(recording, name="m")
    assert player.events_skipped == 1  # "early" lies before the first sample


def test_irregular_clock_keeps_samples_and_nominal_rate(tmp_path):
    eeg = eeg_stream(1000, sfreq=100.0)
    stamps = eeg["stamps"] * 1.01  # the amplifier ran 1 % slow
    stamps[500:] += 10.0  # and lost 10 s of connection (long enough for pyxdf to keep the gap)
    eeg["stamps"] = stamps
    path = write_xdf(tmp_path / "irregular.xdf", [eeg])
    recording = open_recording(path)
    assert recording.sfreq == 100.0 and recording.n_samples == 1000
    np.testing.assert_array_equal(recording.read(0, 1000)[0], eeg["values"][:, 0])
    assert any("not its nominal 100 Hz" in n for n in recording.notes)
    assert any("1 gap(s)" in n for n in recording.notes)


def test_unlabelled_channels_and_unusable_streams(tmp_path):
    unlabelled = eeg_stream(20, channels=[{"label": None}, {"label": None}])
    recording = open_recording(write_xdf(tmp_path / "u.xdf", [unlabelled]))
    assert recording.ch_names == ["ch1", "ch2"]
    irregular = eeg_stream(20, sfreq=0)
    with pytest.raises(DataError, match=r"'amp' in 'irr\.xdf' has an irregular rate"):
        open_recording(write_xdf(tmp_path / "irr.xdf", [irregular]))
    only_markers = marker_stream(np.array([1.0, 2.0]), ["x", "y"])
    with pytest.raises(
        DataError, match=r"no numeric stream with samples.*'markers' \(type 'Markers'"
    ):
        open_recording(write_xdf(tmp_path / "markers_only.xdf", [only_markers]))
