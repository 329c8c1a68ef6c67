"""XDFWriter under failure: SIGKILL mid-session, a full disk, a file size limit."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from closedloop.xdf import XDFWriter
from tests.helpers.recordings import PROJECT_ROOT

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

SFREQ = 1000.0
CHUNK = 10

# A recorder that writes a 1 kHz, 4-channel stream (channel 0 = sample index) at real-time pace
# in chunks of 10, plus a marker and a clock offset every 100 chunks, and reports each chunk
# it has handed to the writer on stdout.
WRITER_SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    import numpy as np
    from closedloop.xdf import XDFWriter

    w = XDFWriter(sys.argv[1])
    w.add_stream(1, XDFWriter.stream_header_xml("eeg", "EEG", 4, {SFREQ}, "float32", "crash-eeg",
                                                ch_labels=["idx", "C3", "Cz", "C4"]))
    w.add_stream(2, XDFWriter.stream_header_xml("mk", "Markers", 1, 0, "string", "crash-mk"))
    start = time.monotonic()
    k = 0
    while True:
        due = start + (k + {CHUNK}) / {SFREQ}
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        idx = np.arange(k, k + {CHUNK})
        chunk = np.zeros(({CHUNK}, 4), dtype=np.float32)
        chunk[:, 0] = idx
        chunk[:, 1:] = np.sin(idx)[:, None]
        w.write_samples(1, 100.0 + idx / {SFREQ}, chunk)
        if k % ({CHUNK} * 100) == 0:
            w.write_samples(2, [100.0 + k / {SFREQ}], [f"marker {{k}}"])
            w.write_clock_offset(1, 100.0 + k / {SFREQ}, -0.001)
        k += {CHUNK}
        print(k - 1, flush=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigkill_mid_session_leaves_a_readable_file_missing_at_most_one_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "killed.xdf"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    last_reported = -1
    try:
        deadline = time.monotonic() + 20.0
        while last_reported < 2.5 * SFREQ and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last_reported = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert last_reported >= 2.5 * SFREQ, f"the recorder did not run: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL

    streams, _ = pyxdf.load_xdf(str(path))  # pyxdf's defaults: clock sync + dejitter
    eeg = next(s for s in streams if s["info"]["name"] == ["eeg"])
    index = eeg["time_series"][:, 0]
    # every sample once, in order, and nothing lost but (at most) the last second
    np.testing.assert_array_equal(index, np.arange(len(index)))
    assert index[-1] >= last_reported - SFREQ, (index[-1], last_reported)
    assert "footer" not in eeg
    assert [ch["label"][0] for ch in eeg["info"]["desc"][0]["channels"][0]["channel"]] == [
        "idx",
        "C3",
        "Cz",
        "C4",
    ]
    assert len(eeg["clock_times"]) >= 2
    mk = next(s for s in streams if s["info"]["name"] == ["mk"])
    assert mk["time_series"][0] == ["marker 0"]


def _fill_until_error(w: XDFWriter, timeout_s: float = 10.0) -> int:
    """Write 1 kHz chunks of 8 channels until the writer reports an error; return samples sent."""
    sent = 0
    deadline = time.monotonic() + timeout_s
    while w.error is None and time.monotonic() < deadline:
        idx = np.arange(sent, sent + 50)
        chunk = np.zeros((50, 8))
        chunk[:, 0] = idx
        w.write_samples(1, idx / 1000.0, chunk)  # must never raise
        sent += 50
        time.sleep(0.001)
    return sent


def _check_prefix(path: Path, sent: int) -> int:
    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False, dejitter_timestamps=False)
    index = streams[0]["time_series"][:, 0]
    assert len(index) > 0
    np.testing.assert_array_equal(index, np.arange(len(index)))
    np.testing.assert_array_equal(streams[0]["time_stamps"], index / 1000.0)
    assert len(index) < sent
    return len(index)


def test_full_disk_stops_the_recording_without_raising(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the file size limit test covers this")
    try:
        path = mount / "full.xdf"
        w = XDFWriter(path, flush_interval_s=0.02)
        w.add_stream(1, XDFWriter.stream_header_xml("eeg", "EEG", 8, 1000, "double64", "full"))
        sent = _fill_until_error(w)
        assert isinstance(w.error, OSError) and w.error.errno == errno.ENOSPC
        w.write_boundary()  # still never raises
        w.write_clock_offset(1, 0.0, 0.0)
        w.close()
        w.close()
        kept = _check_prefix(path, sent)
        assert kept * 8 * 8 > 100_000  # it wrote what it could before the disk filled
        assert w.dropped_chunks > 0
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


LIMIT_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    import numpy as np
    from closedloop.xdf import XDFWriter

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    w = XDFWriter(sys.argv[1], flush_interval_s=0.02)
    w.add_stream(1, XDFWriter.stream_header_xml("eeg", "EEG", 8, 1000, "double64", "limit"))
    sent = 0
    while w.error is None and sent < 10_000_000:
        idx = np.arange(sent, sent + 50)
        chunk = np.zeros((50, 8))
        chunk[:, 0] = idx
        w.write_samples(1, idx / 1000.0, chunk)
        sent += 50
        time.sleep(0.001)
    w.write_boundary()
    w.close()
    print(json.dumps({"errno": w.error.errno, "sent": sent, "dropped": w.dropped_chunks,
                      "bytes": w.bytes_written}))
    """
)


def test_file_size_limit_trims_to_the_last_complete_chunk(tmp_path: Path) -> None:
    path = tmp_path / "limited.xdf"
    done = subprocess.run(
        [sys.executable, "-c", LIMIT_SCRIPT, str(path)],
        check=False,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errno"] == errno.EFBIG
    assert report["dropped"] > 0
    size = path.stat().st_size
    assert size == report["bytes"] <= 100_000
    assert size > 100_000 - 50 * (1 + 8 + 64) - 64  # trimmed by less than one chunk
    _check_prefix(path, report["sent"])
