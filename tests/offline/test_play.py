"""``closedloop play``: real recordings through real LSL outlets, received by real pylsl inlets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest

from closedloop.errors import UsageError
from closedloop.io import Event, open_recording
from closedloop.play import BOUNDARY, Player, default_source_id
from tests.helpers import recordings as rec

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Received:
    """Everything one inlet got: samples (n, n_channels), timestamps, lag at each pull."""

    def __init__(self, data: np.ndarray, stamps: np.ndarray, lags: list[tuple[float, float]]):
        self.data, self.stamps, self.lags = data, stamps, lags


def start_play(recording: Path, source_id: str, *options: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "closedloop", "play", str(recording), "--source-id", source_id]
    cmd += ["--index-channel", "--wait-consumers", "20", *options]
    return subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def open_inlet(source_id: str, timeout: float = 20.0) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
    assert found, f"no LSL stream with source_id {source_id!r} within {timeout} s"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
    inlet.open_stream(timeout=10.0)
    return inlet


def receive(inlet: pylsl.StreamInlet, n_expected: int, timeout: float) -> Received:
    n_channels = inlet.info().channel_count()
    data = np.zeros((n_expected + 1024, n_channels), dtype=np.float32)
    stamps = np.zeros(n_expected + 1024)
    buf = np.zeros((512, n_channels), dtype=np.float32)
    lags: list[tuple[float, float]] = []
    n = 0
    deadline = time.monotonic() + timeout
    while n < n_expected and time.monotonic() < deadline:
        sample, stamp = inlet.pull_sample(timeout=0.5)
        if stamp is None:
            continue
        data[n], stamps[n] = sample, stamp
        n += 1
        _, more = inlet.pull_chunk(timeout=0.0, max_samples=min(512, len(stamps) - n), dest_obj=buf)
        m = len(more)
        data[n : n + m], stamps[n : n + m] = buf[:m], more
        n += m
        lags.append((stamps[n - 1], pylsl.local_clock() - stamps[n - 1]))
    return Received(data[:n], stamps[:n], lags)


def receive_markers(
    inlet: pylsl.StreamInlet, n_expected: int, timeout: float
) -> list[tuple[str, float]]:
    markers = []
    deadline = time.monotonic() + timeout
    while len(markers) < n_expected and time.monotonic() < deadline:
        sample, stamp = inlet.pull_sample(timeout=0.2)
        if stamp is not None:
            markers.append((sample[0], stamp))
    return markers


def finish(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def channel_info(inlet: pylsl.StreamInlet) -> list[tuple[str, str, str]]:
    ch = inlet.info(timeout=5.0).desc().child("channels").child("channel")
    out = []
    while not ch.empty():
        out.append((ch.child_value("label"), ch.child_value("unit"), ch.child_value("type")))
        ch = ch.next_sibling()
    return out


def test_play_edf_every_sample_once_with_labels_and_markers(recordings, source_id):
    speed, seconds = 6.0, 12.0
    recording = open_recording(rec.MOTOR)
    proc = start_play(
        rec.MOTOR, source_id, "--duration", str(seconds), "--speed", str(speed), "--quiet"
    )
    try:
        markers_inlet = open_inlet(source_id + "-markers")
        inlet = open_inlet(source_id)
        info = inlet.info()
        assert info.nominal_srate() == 160.0
        assert info.channel_format() == pylsl.cf_float32
        assert info.type() == "EEG" and info.name() == "S001R03"
        labels = channel_info(inlet)
        assert [label for label, _, _ in labels] == ["sample_index"] + recording.ch_names[1:]
        assert {(unit, kind) for _, unit, kind in labels[1:]} == {("microvolts", "EEG")}
        n = int(seconds * recording.sfreq)
        got = receive(inlet, n, timeout=30)
        expected_events = [e for e in recording.events if e.onset_s * recording.sfreq < n - 0.5]
        markers = receive_markers(markers_inlet, len(expected_events), timeout=5)
        del inlet, markers_inlet
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == 0, err
    assert err == ""  # --quiet
    np.testing.assert_array_equal(got.data[:, 0], np.arange(n, dtype=np.float32))
    np.testing.assert_array_equal(got.data[:, 1:].T, recording.read(0, n)[1:].astype(np.float32))
    period = 1.0 / (recording.sfreq * speed)
    np.testing.assert_allclose(got.stamps - got.stamps[0], np.arange(n) * period, atol=1e-6)
    assert len(expected_events) >= 3
    assert [m for m, _ in markers] == [e.description for e in expected_events]
    np.testing.assert_allclose(
        [t - got.stamps[0] for _, t in markers],
        [e.onset_s / speed for e in expected_events],
        atol=1e-6,
    )


def test_play_loop_sends_boundary_at_each_wrap(recordings, source_id):
    recording = open_recording(rec.NEURONE_5KHZ)  # 2238 samples at 5 kHz
    n_file = recording.n_samples
    proc = start_play(
        rec.NEURONE_5KHZ, source_id, "--loop", "--duration", "1.0", "--chunk-size", "50", "--quiet"
    )
    try:
        markers_inlet = open_inlet(source_id + "-markers")
        inlet = open_inlet(source_id)
        got = receive(inlet, 5000, timeout=20)
        markers = receive_markers(markers_inlet, 2, timeout=5)
        del inlet, markers_inlet
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == 0, err
    assert len(got.stamps) == 5000
    np.testing.assert_array_equal(got.data[:, 0], np.arange(5000, dtype=np.float32))
    whole = recording.read(0, n_file).astype(np.float32)
    np.testing.assert_array_equal(got.data[:, 1:].T, whole[1:, np.arange(5000) % n_file])
    assert [m for m, _ in markers] == [BOUNDARY, BOUNDARY]
    np.testing.assert_allclose([t for _, t in markers], got.stamps[[n_file, 2 * n_file]], atol=1e-6)


def test_play_xdf_replays_markers_with_their_recorded_timing(recordings, source_id):
    recording = open_recording(rec.XDF_MARKERS)
    speed, seconds = 20.0, 40.0
    proc = start_play(
        rec.XDF_MARKERS,
        source_id,
        "--speed",
        str(speed),
        "--duration",
        str(seconds),
        "--chunk-size",
        "25",
        "--quiet",
    )
    try:
        markers_inlet = open_inlet(source_id + "-markers")
        inlet = open_inlet(source_id)
        assert [label for label, _, _ in channel_info(inlet)] == ["sample_index"] + [
            f"ch{i}" for i in range(2, 9)
        ]
        n = int(seconds * recording.sfreq)
        got = receive(inlet, n, timeout=20)
        expected = [e for e in recording.events if round(e.onset_s * recording.sfreq) < n]
        markers = receive_markers(markers_inlet, len(expected), timeout=5)
        del inlet, markers_inlet
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == 0, err
    np.testing.assert_array_equal(got.data[:, 0], np.arange(n, dtype=np.float32))
    assert len(expected) >= 5
    assert [m for m, _ in markers] == [e.description for e in expected]
    np.testing.assert_allclose(
        [t - got.stamps[0] for _, t in markers], [e.onset_s / speed for e in expected], atol=1e-6
    )


def test_play_keeps_pace_with_the_wall_clock(recordings, source_id):
    """5 s at 500 Hz: stamps follow the virtual clock; arrival stays close and does not drift."""
    recording = open_recording(rec.EEGMAT)
    proc = start_play(rec.EEGMAT, source_id, "--duration", "5", "--quiet")
    try:
        inlet = open_inlet(source_id)
        got = receive(inlet, 2500, timeout=20)
        del inlet
        rc, err = finish(proc)
    finally:
        proc.kill()
    assert rc == 0, err
    np.testing.assert_array_equal(got.data[:, 0], np.arange(2500, dtype=np.float32))
    np.testing.assert_allclose(
        got.stamps - got.stamps[0], np.arange(2500) / recording.sfreq, atol=1e-6
    )
    stamp, lag = np.array(got.lags).T
    # lag = arrival (local clock) - timestamp of the newest sample received
    assert np.median(lag) < 0.005
    first, last = lag[stamp < stamp[0] + 1.0], lag[stamp > stamp[-1] - 1.0]
    assert np.median(last) - np.median(first) < 0.002
    # the whole run took its nominal time: the last sample's arrival is on time
    assert abs(lag[-1]) < 0.05


def test_player_in_process_with_an_array(source_id):
    sfreq = 1000.0
    data = np.vstack([np.zeros(3000), np.sin(np.arange(3000) / 10.0) * 50.0])
    events = [Event(0.5, 0.0, "half"), Event(2.0, 0.0, "two")]
    player = Player(
        data,
        sfreq,
        ["idx", "C3"],
        name="array-test",
        source_id=source_id,
        chunk_size=20,
        speed=2.0,
        index_channel=True,
        wait_consumers=10.0,
        events=events,
    )
    player.start()
    try:
        markers_inlet = open_inlet(source_id + "-markers")
        inlet = open_inlet(source_id)
        got = receive(inlet, 3000, timeout=20)
        markers = receive_markers(markers_inlet, 2, timeout=5)
        assert player.join(timeout=10)
    finally:
        player.stop()
    assert player.error is None
    assert player.n_pushed == 3000 and player.n_markers == 2
    np.testing.assert_array_equal(got.data[:, 0], np.arange(3000, dtype=np.float32))
    np.testing.assert_allclose(got.data[:, 1], data[1].astype(np.float32))
    np.testing.assert_allclose(got.stamps - player.t0, np.arange(3000) / (sfreq * 2.0), atol=1e-6)
    assert [m for m, _ in markers] == ["half", "two"]
    np.testing.assert_allclose([t - player.t0 for _, t in markers], [0.25, 1.0], atol=1e-6)


def test_player_stop_is_prompt(source_id):
    player = Player(np.zeros((4, 100_000)), 100.0, name="stop-test", source_id=source_id)
    player.start()
    deadline = time.monotonic() + 5
    while player.n_pushed < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert player.n_pushed >= 10
    started = time.monotonic()
    player.stop()
    assert time.monotonic() - started < 1.0
    assert not player.running and player.error is None
    assert player.n_pushed < 1000


def test_player_rejects_bad_settings():
    data = np.zeros((2, 100))
    with pytest.raises(UsageError, match="chunk_size must be an integer >= 1; got 0"):
        Player(data, 100.0, chunk_size=0)
    with pytest.raises(UsageError, match="speed must be a positive number; got -1"):
        Player(data, 100.0, speed=-1)
    with pytest.raises(UsageError, match="sfreq is required"):
        Player(data)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_stop_cleanly(recordings, source_id, signum):
    # started the way a shell starts a background job: SIGINT ignored, which Python keeps unless
    # the program installs its own handler
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "play", str(rec.EYES_OPEN), "--source-id", source_id],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        inlet = open_inlet(source_id)
        got = receive(inlet, 80, timeout=10)
        assert len(got.stamps) >= 80
        proc.send_signal(signum)
        rc, err = finish(proc, timeout=10)
        del inlet
    finally:
        proc.kill()
    assert rc == 0
    assert "playing S001R01.edf: 64 ch, 160 Hz, 61.0 s, 1 events" in err
    assert "stopped:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["/nonexistent/missing.edf"], 3, "does not exist"),
        ([str(rec.MOTOR), "--speed", "0"], 2, "--speed must be a positive number"),
        ([str(rec.MOTOR), "--chunk-size", "0"], 2, "--chunk-size must be an integer >= 1; got 0"),
        ([str(rec.MOTOR), "--stream", "EEG"], 2, "XDF files only"),
        ([str(rec.XDF_MARKERS), "--stream", "MarkerStream"], 3, "holds strings"),
    ],
)
def test_cli_errors(recordings, args, code, message):
    proc = subprocess.run(
        [sys.executable, "-m", "closedloop", "play", *args],
        check=False,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_names(recordings):
    assert default_source_id(rec.MOTOR) == "closedloop-play-S001R03"
    player = Player(open_recording(rec.MOTOR), name="S001R03")
    assert player.source_id == "closedloop-play-S001R03"
    assert player.n_total == 20000 and player.chunk_size == 10


def test_progress_line_shows_rate_position_and_lag(source_id):
    import io

    from closedloop.commands.play import _Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    player = Player(
        np.zeros((2, 400)), 200.0, name="progress-test", source_id=source_id, chunk_size=20
    )
    player.start()
    screen = Terminal()
    progress = _Progress(player, screen, enabled=True)
    try:
        assert player.join(timeout=10)
    finally:
        player.stop()
    progress.update(final=True)
    line = screen.getvalue()
    assert line.startswith("\r") and line.endswith("\n")
    assert "2.0 s / 2.0 s" in line and "samples/s" in line and "lag" in line and "markers 0" in line
