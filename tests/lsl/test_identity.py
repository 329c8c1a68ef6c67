"""The input stream's identity is pinned at connect: a stream that appears under the same source_id
with other channel labels (or another rate, host, format, units) is never read, triggering stays
held, the run says what differs, and it resumes only when the original returns, or ends with exit
4 after --timeout. `closedloop run` as a process against real outlets that come and go.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import pyxdf

from tests.helpers.faults import (
    LIVE_CH_NAMES,
    LIVE_SFREQ,
    FaultyOutlet,
    MarkerConsumer,
    alpha_stream,
    finish,
    read_summary,
    run_args,
    start_cli,
    wait_for_line,
    write_protocol,
)

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

#: Channel 0 of the impostor carries this plus its sample index, so its samples show in a recording.
IMPOSTOR_MARK = 1e7


def _impostor(source_id: str, **kw) -> FaultyOutlet:
    data = alpha_stream(60.0, seed=7)
    data[0] = IMPOSTOR_MARK + np.arange(data.shape[1])
    return FaultyOutlet(data, kw.pop("sfreq", LIVE_SFREQ), source_id, index_channel=False, name="faulty-eeg", **kw)


def test_an_impostor_under_the_same_source_id_is_never_read_and_the_original_resumes(tmp_path, source_id):
    protocol = write_protocol(tmp_path / "p.toml")
    record, summary_path = tmp_path / "s.xdf", tmp_path / "s.json"
    original = FaultyOutlet(alpha_stream(60.0), LIVE_SFREQ, source_id).start()
    markers = MarkerConsumer(source_id + "-m")
    run = start_cli(*run_args(protocol, source_id, "--duration", "28", "--timeout", "25",
                              "--record", str(record), "--summary-json", str(summary_path)))
    seen: list[str] = []
    impostor = back = None
    try:
        assert markers.wait_for(3, 25.0), "no triggers before the amplifier went away"
        original.close()  # the amplifier's outlet is gone
        assert wait_for_line(run, "stalled", 5.0, seen), seen
        impostor = _impostor(source_id, ch_names=["index", "Fp1", "Fp2", "Fz"]).start()
        assert wait_for_line(run, "is not the amplifier this run connected to", 10.0, seen), seen
        n_held = len(markers.markers)
        held_from = time.monotonic()
        time.sleep(3.0)  # the impostor streams on: nothing of it may be read
        assert len(markers.markers) == n_held
        back = FaultyOutlet(alpha_stream(60.0, seed=3), LIVE_SFREQ, source_id).start()
        assert wait_for_line(run, "the stream is back under source_id", 10.0, seen), seen
        assert wait_for_line(run, "resumed", 5.0, seen), seen
        held_s = time.monotonic() - held_from
        impostor.close()  # (three outlets on this busy machine's test process make pushes late)
        impostor = None
        assert markers.wait_for(n_held + 3, 15.0), "triggering did not resume with the original"
        code, err = finish(run)
    finally:
        markers.disconnect()
        for outlet in (impostor, back):
            if outlet is not None:
                outlet.close()
        if run.poll() is None:
            run.kill()
    stderr = "".join(seen) + err
    assert code == 0, stderr
    line = next(s for s in seen if "is not the amplifier" in s)
    assert "channel labels differ (channel 2 'Fp1' instead of 'O1', channel 3 'Fp2' instead of 'O2'" in line
    assert "It is not read; triggering stays held until the original stream returns" in line
    summary = read_summary(summary_path)
    identity = summary["input"]["identity"]
    assert identity["reconnects"] == 1 and len(identity["refused"]) == 1
    assert identity["refused"][0]["differs"][0].startswith("channel labels differ")
    # one stall for the fault (on a loaded machine late pushes can add short ones)
    assert summary["stalls"] >= 1 and summary["triggers"] == len(markers.markers), stderr
    # not one sample of the impostor in the recording; both runs of the original are there
    streams, _ = pyxdf.load_xdf(str(record), synchronize_clocks=False, dejitter_timestamps=False)
    eeg = next(s for s in streams if s["info"]["type"] == ["EEG"])
    index = np.asarray(eeg["time_series"])[:, 0]
    assert index.max() < IMPOSTOR_MARK
    assert np.count_nonzero(np.diff(index) != 1) == 1  # the original, then the original again
    assert held_s > 3.0


def test_an_impostor_that_stays_ends_the_run_with_exit_4_naming_what_differs(tmp_path, source_id):
    protocol = write_protocol(tmp_path / "p.toml")
    original = FaultyOutlet(alpha_stream(60.0), LIVE_SFREQ, source_id).start()
    markers = MarkerConsumer(source_id + "-m")
    run = start_cli(*run_args(protocol, source_id, "--duration", "40", "--timeout", "6",
                              "--summary-json", str(tmp_path / "s.json")))
    seen: list[str] = []
    impostor = None
    try:
        assert markers.wait_for(2, 25.0), "no triggers before the amplifier went away"
        original.close()
        impostor = _impostor(source_id, sfreq=250.0).start()  # same labels, another rate
        n_before = len(markers.markers)
        code, err = finish(run, timeout=40.0)
    finally:
        markers.disconnect()
        if impostor is not None:
            impostor.close()
    stderr = "".join(seen) + err
    assert code == 4, stderr
    assert "rate 250 Hz instead of 500 Hz" in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("closedloop run: error: no data from stream 'faulty-eeg'")
    assert "a stream under the same source_id that is not this amplifier was not read (rate 250 Hz" in last
    assert len(markers.markers) == n_before
    summary = read_summary(tmp_path / "s.json")
    assert summary["input"]["identity"]["refused"][0]["differs"] == ["rate 250 Hz instead of 500 Hz"]
    assert LIVE_CH_NAMES == summary["input"]["identity"]["pinned"]["labels"]
