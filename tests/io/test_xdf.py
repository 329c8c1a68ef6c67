"""XDFWriter: byte layout, exact round trips through pyxdf, threads, real LSL, real recordings."""

from __future__ import annotations

import itertools
import struct
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pylsl
import pytest
import pyxdf

from closedloop.errors import UsageError
from closedloop.xdf import BOUNDARY_UUID, XDFWriter
from tests.helpers.lsl import OutletThread
from tests.helpers.recordings import XDF_MARKERS


def load_raw(path: Path) -> dict[str, dict]:
    """pyxdf streams by name, time stamps exactly as stored (no sync, no dejitter)."""
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def read_varlen(buf: bytes, pos: int) -> tuple[int, int]:
    size = buf[pos]
    fmt = {1: "<B", 4: "<I", 8: "<Q"}[size]
    return struct.unpack_from(fmt, buf, pos + 1)[0], pos + 1 + size


def read_chunks(path: Path) -> list[tuple[int, bytes, int]]:
    """An independent reader of the XDF chunk layout: (tag, content, NumLengthBytes)."""
    buf = Path(path).read_bytes()
    assert buf[:4] == b"XDF:"
    pos, chunks = 4, []
    while pos < len(buf):
        length_bytes = buf[pos]
        length, pos = read_varlen(buf, pos)
        (tag,) = struct.unpack_from("<H", buf, pos)
        chunks.append((tag, buf[pos + 2 : pos + length], length_bytes))
        pos += length
    assert pos == len(buf), "the last chunk runs past the end of the file"
    return chunks


def channel_labels(stream: dict) -> list[str]:
    channels = stream["info"]["desc"][0]["channels"][0]["channel"]
    return [ch["label"][0] for ch in channels]


def test_numeric_and_string_streams_round_trip_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "session.xdf"
    n = 1000
    sfreq = 500.0
    # regular stamps built the way a reader deduces them (previous + 1/srate), with jitter
    # from sample 600 on, so both stamped and deduced samples occur
    eeg_ts = np.empty(n)
    eeg_ts[0] = 1234.5
    for k in range(1, n):
        eeg_ts[k] = eeg_ts[k - 1] + 1.0 / sfreq
    eeg_ts[600:] += rng.uniform(-1e-4, 1e-4, n - 600)
    eeg = rng.standard_normal((n, 4)).astype(np.float32) * 50
    eeg[:, 0] = np.arange(n)
    state = rng.standard_normal((n // 10, 5))
    state[3, 1] = np.nan
    state_ts = eeg_ts[::10] + 0.0007
    ints = {
        "int8": rng.integers(-128, 127, (50, 2), dtype=np.int8),
        "int16": rng.integers(-32768, 32767, (50, 2), dtype=np.int16),
        "int32": rng.integers(-(2**31), 2**31 - 1, (50, 2), dtype=np.int32),
        "int64": rng.integers(-(2**62), 2**62, (50, 2), dtype=np.int64),
    }
    markers = ['{"event": "stim", "seq": 1}', "", "ünïcode ✓", "x" * 300]
    marker_ts = [1234.6, 1234.7, 1234.7, 1235.0]

    w = XDFWriter(path)
    labels = ["idx", "C3", "Cz", "C4"]
    w.add_stream(
        0,
        XDFWriter.stream_header_xml(
            "eeg",
            "EEG",
            4,
            sfreq,
            "float32",
            "amp-1",
            ch_labels=labels,
            ch_units=["n/a"] + ["microvolts"] * 3,
            ch_types=["MISC", "EEG", "EEG", "EEG"],
            desc_xml="<acquisition><manufacturer>test</manufacturer></acquisition>",
        ),
    )
    w.add_stream(
        7,
        XDFWriter.stream_header_xml(
            "state",
            "ClosedLoopState",
            5,
            0,
            "double64",
            "cl-state",
            ch_labels=["sample_ts", "phase_deg", "amplitude", "feedback", "gate"],
        ),
    )
    w.add_stream(
        2**32 - 1, XDFWriter.stream_header_xml("markers", "Markers", 1, 0, "string", "cl-mk")
    )
    for i, fmt in enumerate(ints):
        w.add_stream(100 + i, XDFWriter.stream_header_xml(fmt, "Misc", 2, 100.0, fmt, f"src-{fmt}"))
    # uneven chunk sizes, including 0 and 1
    edges = [0, 0, 1, 2, 7, 64, 65, 300, 600, 601, 999, n]
    for a, b in itertools.pairwise(edges):
        w.write_samples(0, eeg_ts[a:b], eeg[a:b])
        if b % 2:
            w.write_clock_offset(0, eeg_ts[b - 1], -0.0021 - b * 1e-7)
    w.write_samples(7, state_ts[:30], state[:30])
    w.write_boundary()
    w.write_samples(7, state_ts[30:], state[30:])
    w.write_samples(2**32 - 1, marker_ts[:1], markers[:1])
    w.write_samples(2**32 - 1, marker_ts[1:], [[m] for m in markers[1:]])
    for i, (fmt, values) in enumerate(ints.items()):
        ts = 50.0 + np.arange(50) / 100.0
        w.write_samples(100 + i, ts[:20], values[:20])
        w.write_samples(100 + i, ts[20:], values[20:])
    w.close(footers={0: {"dropped_samples": 0, "note": "clean stop"}})
    assert w.error is None

    got = load_raw(path)
    s = got["eeg"]
    assert s["time_series"].dtype == np.float32
    np.testing.assert_array_equal(s["time_series"], eeg)
    np.testing.assert_array_equal(s["time_stamps"], eeg_ts)
    np.testing.assert_array_equal(s["time_series"][:, 0], np.arange(n))
    assert channel_labels(s) == labels
    assert s["info"]["desc"][0]["acquisition"][0]["manufacturer"] == ["test"]
    assert s["info"]["source_id"] == ["amp-1"]
    odd = [b for b in edges[1:] if b % 2]
    np.testing.assert_array_equal(s["clock_times"], [eeg_ts[b - 1] for b in odd])
    np.testing.assert_array_equal(s["clock_values"], [-0.0021 - b * 1e-7 for b in odd])
    footer = s["footer"]["info"]
    assert float(footer["first_timestamp"][0]) == eeg_ts[0]
    assert float(footer["last_timestamp"][0]) == eeg_ts[-1]
    assert footer["sample_count"] == [str(n)]
    assert footer["note"] == ["clean stop"]
    offsets = footer["clock_offsets"][0]["offset"]
    assert [float(o["value"][0]) for o in offsets] == [-0.0021 - b * 1e-7 for b in odd]

    st = got["state"]
    np.testing.assert_array_equal(st["time_series"], state)  # NaN in the same place
    np.testing.assert_array_equal(st["time_stamps"], state_ts)
    assert channel_labels(st)[4] == "gate"
    assert st["footer"]["info"]["sample_count"] == [str(len(state))]

    mk = got["markers"]
    assert mk["time_series"] == [[m] for m in markers]
    np.testing.assert_array_equal(mk["time_stamps"], marker_ts)
    assert mk["info"]["stream_id"] == 2**32 - 1

    for fmt, values in ints.items():
        assert got[fmt]["time_series"].dtype == values.dtype
        np.testing.assert_array_equal(got[fmt]["time_series"], values)

    # and it opens with pyxdf's default clock synchronisation and dejittering
    streams, header = pyxdf.load_xdf(str(path))
    assert header["info"]["version"] == ["1.0"]
    assert header["info"]["writer"] == ["closedloop"]
    eeg_synced = next(x for x in streams if x["info"]["name"] == ["eeg"])
    np.testing.assert_array_equal(eeg_synced["time_series"][:, 0], np.arange(n))


def test_chunk_layout_follows_the_specification(tmp_path: Path) -> None:
    path = tmp_path / "layout.xdf"
    sfreq = 100.0
    ts = np.empty(300)
    ts[0] = 10.0
    for k in range(1, 300):
        ts[k] = ts[k - 1] + 1.0 / sfreq
    w = XDFWriter(path)
    header = XDFWriter.stream_header_xml("eeg", "EEG", 2, sfreq, "int16", "s")
    w.add_stream(3, header)
    w.write_samples(3, ts[:200], np.ones((200, 2), dtype=np.int16))  # 200 samples: 1-byte count
    w.write_samples(3, ts[200:], np.ones((100, 2), dtype=np.int16))
    w.write_clock_offset(3, 11.0, 0.25)
    w.write_boundary()
    w.write_samples(3, np.array([20.0]), np.full((1, 2), 3, dtype=np.int16))
    w.close()
    chunks = read_chunks(path)
    assert [c[0] for c in chunks] == [1, 2, 3, 3, 4, 5, 3, 6]
    assert b"<version>1.0</version>" in chunks[0][1]
    _, content, _ = chunks[1]
    assert struct.unpack_from("<I", content)[0] == 3 and content[4:].decode() == header
    # samples: stream id, varlen count, then per sample [8 + float64 | 0] + 2 x int16;
    # only the first sample of each chunk carries its time stamp here
    content = chunks[2][1]
    assert struct.unpack_from("<I", content)[0] == 3
    count, pos = read_varlen(content, 4)
    assert count == 200
    assert content[pos] == 8 and struct.unpack_from("<d", content, pos + 1)[0] == 10.0
    assert len(content) == pos + (1 + 8 + 4) + 199 * (1 + 4)
    assert content[pos + 13] == 0
    assert chunks[4][1] == struct.pack("<Idd", 3, 11.0, 0.25)
    assert chunks[5][1] == BOUNDARY_UUID
    assert chunks[-1][0] == 6 and b"<sample_count>301</sample_count>" in chunks[-1][1]


def test_deduced_time_stamps_save_eight_bytes_each_and_lose_nothing(tmp_path: Path) -> None:
    n, sfreq, sizes = 1000, 250.0, []
    regular = np.empty(n)
    regular[0] = 5.0
    for k in range(1, n):
        regular[k] = regular[k - 1] + 1.0 / sfreq
    jittered = regular + np.random.default_rng(1).uniform(1e-6, 1e-5, n)
    data = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    n_chunks = 0
    for name, ts in (("regular", regular), ("jittered", jittered)):
        path = tmp_path / f"{name}.xdf"
        with XDFWriter(path) as w:
            w.add_stream(1, XDFWriter.stream_header_xml("s", "EEG", 3, sfreq, "double64", "x"))
            n_chunks = 0
            for a in range(0, n, 37):
                w.write_samples(1, ts[a : a + 37], data[a : a + 37])
                n_chunks += 1
        got = load_raw(path)["s"]
        np.testing.assert_array_equal(got["time_stamps"], ts)
        np.testing.assert_array_equal(got["time_series"], data)
        sizes.append(path.stat().st_size)
    # footers differ only in the text of their time stamps; compare the sample chunks
    regular_samples = sum(len(c[1]) for c in read_chunks(tmp_path / "regular.xdf") if c[0] == 3)
    jittered_samples = sum(len(c[1]) for c in read_chunks(tmp_path / "jittered.xdf") if c[0] == 3)
    assert jittered_samples - regular_samples == 8 * (n - n_chunks)


def test_writes_from_several_threads_keep_every_sample_in_order(tmp_path: Path) -> None:
    path = tmp_path / "threads.xdf"
    w = XDFWriter(path, flush_interval_s=0.01)
    n_streams, n_chunks, chunk = 4, 300, 3
    for sid in range(n_streams):
        w.add_stream(sid, XDFWriter.stream_header_xml(f"s{sid}", "EEG", 2, 0, "int32", f"src{sid}"))
    w.add_stream(99, XDFWriter.stream_header_xml("mk", "Markers", 1, 0, "string", "mk"))
    start = threading.Barrier(n_streams + 1)

    def produce(sid: int) -> None:
        start.wait()
        for c in range(n_chunks):
            idx = np.arange(c * chunk, (c + 1) * chunk)
            w.write_samples(sid, idx * 0.001, np.stack([idx, np.full(chunk, sid)], axis=1))

    def markers() -> None:
        start.wait()
        for k in range(200):
            w.write_samples(99, [float(k)], [f"m{k}"])
            if k % 20 == 0:
                w.write_clock_offset(99, float(k), 0.0)
                w.write_boundary()

    threads = [threading.Thread(target=produce, args=(sid,)) for sid in range(n_streams)]
    threads.append(threading.Thread(target=markers))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    got = load_raw(path)
    for sid in range(n_streams):
        series = got[f"s{sid}"]["time_series"]
        np.testing.assert_array_equal(series[:, 0], np.arange(n_chunks * chunk))
        assert (series[:, 1] == sid).all()
    assert got["mk"]["time_series"] == [[f"m{k}"] for k in range(200)]
    assert len(got["mk"]["clock_times"]) == 10


def test_lsl_stream_recorded_with_every_sample_exactly_once(tmp_path: Path, source_id: str) -> None:
    sfreq, n = 500.0, 600
    data = np.random.default_rng(3).standard_normal((6, n)) * 20
    labels = ["idx", "Fz", "C3", "Cz", "C4", "Pz"]
    outlet = OutletThread(data, sfreq, source_id, chunk_size=5, index_channel=True, ch_names=labels).start(paused=True)
    found = pylsl.resolve_byprop("source_id", source_id, timeout=5.0)
    assert found, "the test outlet was not found on loopback"
    inlet = pylsl.StreamInlet(found[0], max_buflen=10)
    info = inlet.info(timeout=5.0)
    inlet.open_stream(timeout=5.0)
    path = tmp_path / "live.xdf"
    w = XDFWriter(path, flush_interval_s=0.1)
    w.add_stream(1, info.as_xml())
    w.add_stream(2, XDFWriter.stream_header_xml("mk", "Markers", 1, 0, "string", source_id + "-mk"))
    buf = np.empty((256, 6), dtype=np.float32)
    received = 0
    stop = threading.Event()

    def mark() -> None:  # a second writer thread, as in the live loop
        k = 0
        while not stop.wait(0.05):
            k += 1
            w.write_samples(2, [pylsl.local_clock()], [f"tick {k}"])

    marker_thread = threading.Thread(target=mark)
    marker_thread.start()
    try:
        offset = inlet.time_correction(timeout=5.0)
        w.write_clock_offset(1, pylsl.local_clock() - offset, offset)
        outlet.go()
        deadline = time.monotonic() + 10.0
        while received < n and time.monotonic() < deadline:
            sample, ts = inlet.pull_sample(timeout=0.5)
            if sample is None:
                continue
            buf[0] = sample
            _, stamps = inlet.pull_chunk(
                timeout=0.0, max_samples=buf.shape[0] - 1, dest_obj=buf[1:]
            )
            k = 1 + len(stamps)
            w.write_samples(1, np.concatenate([[ts], stamps]), buf[:k])
            received += k
    finally:
        stop.set()
        marker_thread.join()
        inlet.close_stream()
        del inlet
        outlet.close()
    w.close()
    assert received == n
    streams, _ = pyxdf.load_xdf(str(path))  # defaults: clock sync + dejitter
    eeg = next(s for s in streams if s["info"]["source_id"] == [source_id])
    np.testing.assert_array_equal(eeg["time_series"][:, 0], np.arange(n))
    np.testing.assert_array_equal(eeg["time_series"][:, 1:], data[1:].T.astype(np.float32))
    assert channel_labels(eeg) == labels
    assert len(eeg["clock_times"]) == 1
    assert eeg["footer"]["info"]["sample_count"] == [str(n)]
    mk = next(s for s in streams if s["info"]["name"] == ["mk"])
    assert len(mk["time_series"]) >= 1


def raw_stream_headers(path: Path) -> dict[int, str]:
    headers = {}
    for tag, content, _ in read_chunks(path):
        if tag == 2:
            headers[struct.unpack_from("<I", content)[0]] = content[4:].decode("utf-8")
    return headers


def test_rewriting_a_labrecorder_file_reproduces_it(recordings: Path, tmp_path: Path) -> None:
    original = load_raw(XDF_MARKERS)
    headers = raw_stream_headers(XDF_MARKERS)
    path = tmp_path / "copy.xdf"
    w = XDFWriter(path)
    by_name = {}
    for sid, xml in headers.items():
        w.add_stream(sid, xml)
        by_name[ET.fromstring(xml).findtext("name")] = sid
    for name, s in original.items():
        sid = by_name[name]
        ts, series = s["time_stamps"], s["time_series"]
        step = 97
        for a in range(0, len(ts), step):
            w.write_samples(sid, ts[a : a + step], series[a : a + step])
        for t, v in zip(s["clock_times"], s["clock_values"]):
            w.write_clock_offset(sid, t, v)
    w.close()
    copy = load_raw(path)
    assert set(copy) == set(original)
    for name, s in original.items():
        c = copy[name]
        np.testing.assert_array_equal(c["time_stamps"], s["time_stamps"])
        if isinstance(s["time_series"], list):
            assert c["time_series"] == s["time_series"]
        else:
            assert c["time_series"].dtype == s["time_series"].dtype
            np.testing.assert_array_equal(c["time_series"], s["time_series"])
        np.testing.assert_array_equal(c["clock_times"], s["clock_times"])
        np.testing.assert_array_equal(c["clock_values"], s["clock_values"])
        assert c["info"]["desc"] == s["info"]["desc"]
        assert int(c["footer"]["info"]["sample_count"][0]) == len(s["time_stamps"])


def test_boundary_flushes_without_waiting_for_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "b.xdf"
    w = XDFWriter(path, flush_interval_s=10.0)
    w.add_stream(1, XDFWriter.stream_header_xml("s", "EEG", 1, 0, "double64", "x"))
    time.sleep(0.2)  # the header goes out at once (it wakes the writer thread)
    size_after_header = path.stat().st_size
    w.write_samples(1, [1.0, 2.0], [[1.0], [2.0]])
    time.sleep(0.2)
    assert path.stat().st_size == size_after_header  # buffered
    w.write_boundary()
    deadline = time.monotonic() + 2.0
    while path.stat().st_size == size_after_header and time.monotonic() < deadline:
        time.sleep(0.01)
    chunks = read_chunks(path)
    assert [c[0] for c in chunks] == [1, 2, 3, 5]
    w.close()


def test_close_is_idempotent_and_later_writes_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "c.xdf"
    w = XDFWriter(path)
    w.add_stream(1, XDFWriter.stream_header_xml("s", "EEG", 1, 0, "double64", "x"))
    w.write_samples(1, [1.0], [[1.0]])
    w.close()
    size = path.stat().st_size
    w.close()
    w.write_samples(1, [2.0], [[2.0]])
    w.write_clock_offset(1, 2.0, 0.0)
    w.write_boundary()
    assert path.stat().st_size == size
    assert w.dropped_chunks == 3
    assert [c[0] for c in read_chunks(path)] == [1, 2, 3, 6]


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"cannot create the recording .*no/such/dir.*writable folder"
    ):
        XDFWriter(tmp_path / "no" / "such" / "dir" / "x.xdf")
    with pytest.raises(UsageError, match="flush_interval_s"):
        XDFWriter(tmp_path / "x.xdf", flush_interval_s=0)
    with XDFWriter(tmp_path / "x.xdf") as w:
        w.add_stream(1, XDFWriter.stream_header_xml("s", "EEG", 3, 100, "int16", "x"))
        with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(2, 3\)"):
            w.write_samples(1, [0.0, 0.01], np.zeros((2, 2), dtype=np.int16))
        with pytest.raises(ValueError, match="floats .* int16"):
            w.write_samples(1, [0.0], np.zeros((1, 3)))
        with pytest.raises(ValueError, match="stream id 5 was not added"):
            w.write_samples(5, [0.0], np.zeros((1, 3)))
        with pytest.raises(ValueError, match="already in this file"):
            w.add_stream(1, XDFWriter.stream_header_xml("s", "EEG", 3, 100, "int16", "x"))
        with pytest.raises(ValueError, match="no <channel_format>"):
            w.add_stream(
                2, "<info><channel_count>1</channel_count><nominal_srate>0</nominal_srate></info>"
            )
        with pytest.raises(ValueError, match="channel_format 'float16'.*accepted: float32"):
            w.add_stream(
                2,
                XDFWriter.stream_header_xml("s", "EEG", 1, 0, "float32", "x").replace(
                    "float32", "float16"
                ),
            )
        with pytest.raises(ValueError, match="out of range"):
            w.add_stream(2**32, XDFWriter.stream_header_xml("s", "EEG", 1, 0, "float32", "x"))
        w.add_stream(2, XDFWriter.stream_header_xml("m", "Markers", 1, 0, "string", "m"))
        with pytest.raises(ValueError, match="got 1 samples for 2 time stamps"):
            w.write_samples(2, [0.0, 1.0], ["a"])
        with pytest.raises(ValueError, match="one str per channel"):
            w.write_samples(2, [0.0], [3])
    with pytest.raises(ValueError, match="ch_labels has 2 entries but the stream has 3"):
        XDFWriter.stream_header_xml("s", "EEG", 3, 100, "float32", "x", ch_labels=["a", "b"])
    with pytest.raises(ValueError, match="not an XDF format"):
        XDFWriter.stream_header_xml("s", "EEG", 3, 100, "float", "x")
