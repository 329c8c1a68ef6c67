"""Recording like LabRecorder: `run --record` also takes the stimulus program's markers, the
amplifier's own marker stream (by source_id) and every marker stream visible, each with its
header, clock offsets and footer; the protocol as the session resolved it goes into the file, and
`closedloop report` uses it instead of a preset of the same name."""

from __future__ import annotations

import json
import threading

import numpy as np
import pylsl
import pytest
import pyxdf

from closedloop.protocol import load_protocol, parse_protocol, tomllib
from closedloop.provenance import read_protocol_stream
from tests.helpers.faults import (
    LIVE_PROTOCOL,
    LIVE_SFREQ,
    FaultyOutlet,
    alpha_stream,
    run_cli,
    run_live,
)

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


class MarkerPusher:
    """A real marker outlet pushing ``prefix-<n>`` every ``every_s`` from a thread."""

    def __init__(self, name: str, source_id: str, *, stype: str = "Markers", fmt: str = "string",
                 every_s: float = 0.25, start_after_s: float = 0.0) -> None:
        self.name, self.source_id, self.stype, self.fmt = name, source_id, stype, fmt
        self.every_s, self.start_after_s = every_s, start_after_s
        self.sent: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self._stop.wait(self.start_after_s):
            return
        info = pylsl.StreamInfo(self.name, self.stype, 1, 0.0, self.fmt, self.source_id)
        outlet = pylsl.StreamOutlet(info)
        n = 0
        while not self._stop.wait(self.every_s):
            value = f"{self.name}-{n}" if self.fmt == "string" else n
            stamp = pylsl.local_clock()
            outlet.push_sample([value], stamp)
            self.sent.append((stamp, value))
            n += 1
        del outlet

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)


def _by_name(streams: list[dict]) -> dict[str, dict]:
    return {s["info"]["name"][0]: s for s in streams}


def test_record_holds_other_streams_and_the_protocol_as_resolved(tmp_path, source_id):
    amp = FaultyOutlet(alpha_stream(40.0), LIVE_SFREQ, source_id, name="amp").start()
    pushers = [
        MarkerPusher("stim-program", f"{source_id}-psychopy"),  # by name
        MarkerPusher("amp-triggers", source_id, fmt="int32"),  # the amplifier's own, by its source_id
        MarkerPusher("late-markers", f"{source_id}-late", start_after_s=4.0),  # --record-markers, later
    ]
    record = tmp_path / "s.xdf"
    try:
        done, summary = run_live(
            tmp_path, source_id, 12.0, LIVE_PROTOCOL, "--record", str(record),
            "--record-stream", "stim-program", "--record-stream", source_id, "--record-markers",
        )
    finally:
        for pusher in pushers:
            pusher.close()
        amp.close()
    assert done.returncode == 0, done.stderr
    assert "recording also 'stim-program'" in done.stderr
    assert "recording also 'late-markers'" in done.stderr
    streams = _by_name(pyxdf.load_xdf(str(record), synchronize_clocks=False, dejitter_timestamps=False)[0])
    assert {"amp", "closedloop-markers", "closedloop-state", "closedloop-protocol",
            "stim-program", "amp-triggers", "late-markers"} <= set(streams)
    assert sum(s["info"]["source_id"][0] == source_id and s["info"]["type"][0] == "EEG"
               for s in streams.values()) == 1  # the input once, not again through --record-stream
    run_end = float(streams["closedloop-state"]["time_stamps"][-1])
    for pusher in pushers:
        stream = streams[pusher.name]
        assert "footer" in stream and stream["clock_times"], pusher.name  # footer and clock offsets
        got = [v[0] for v in stream["time_series"]]
        sent = {v: t for t, v in pusher.sent}
        assert len(got) >= 10, (pusher.name, len(got))
        # from the first recorded marker on (markers sent before the inlet opened are not
        # LSL's to keep) every marker is there, in order, with the stamp it was sent with
        first = list(sent).index(got[0])
        assert got == list(sent)[first : first + len(got)]
        np.testing.assert_array_equal(stream["time_stamps"], [sent[v] for v in got])
        assert sent[got[-1]] >= run_end - 0.5, (pusher.name, sent[got[-1]], run_end)
    assert streams["amp-triggers"]["info"]["channel_format"] == ["int32"]
    assert {r["name"] for r in summary["recorded_streams"]} == {"stim-program", "amp-triggers", "late-markers"}

    # the protocol as resolved: the TOML, and what the baseline taught the engine
    resolved = read_protocol_stream(streams["closedloop-protocol"])
    recorded = parse_protocol(tomllib.loads(resolved["toml"]), "recorded")
    given = parse_protocol(tomllib.loads(LIVE_PROTOCOL), "recorded")
    assert recorded == given
    learned = resolved["learned"]
    assert learned["estimator"] == "echt" and len(learned["estimator_digest"]) == 64
    assert learned["band_hz"] == [8.0, 13.0] and learned["fit_error"] is None
    assert learned["gate_threshold_uv"] == summary["engine"]["gate_threshold_uv"]


def test_report_uses_the_recorded_protocol_not_a_preset_of_its_name(tmp_path, source_id):
    """A protocol file named like a preset ("default") but with another channel and band: the
    report of its recording must take the file's (recorded) protocol, and the learned band."""
    text = LIVE_PROTOCOL.replace('name = "reliability"', 'name = "default"').replace(
        "[band]", "[band]\nindividual = true\npeak_search_hz = [8.0, 12.0]\nhalf_width_hz = 1.5", 1
    )
    amp = FaultyOutlet(alpha_stream(30.0), LIVE_SFREQ, source_id).start()
    record = tmp_path / "s.xdf"
    try:
        done, summary = run_live(tmp_path, source_id, 10.0, text, "--record", str(record))
    finally:
        amp.close()
    assert done.returncode == 0, done.stderr
    band = summary["engine"]["band_hz"]
    assert 9.0 < (band[0] + band[1]) / 2 < 11.0 and summary["engine"]["individual_peak_hz"]
    report = run_cli("report", str(record), "--out", str(tmp_path / "r.html"), "--quiet")
    assert report.returncode == 0, report.stderr
    numbers = json.loads((tmp_path / "r.json").read_text())
    session = numbers["session"]
    assert session["protocol"] == "default"
    assert session["band_hz"] == band  # learned, not the preset's 8-13
    assert session["baseline_s"] == 2.0  # the file's, not the preset's 10 s
    assert session["gate_threshold_inferred"] is False  # the preset's percentile gate would be
    assert session["estimator"] == "echt"
    # the ground truth was computed on the file's channel (O2, no reference), so the phase is known
    assert numbers["phase_true"]["n"] > 0
    assert load_protocol("default").signal.channel == "O2"


def test_record_stream_options_need_record(tmp_path, source_id):
    done = run_cli("run", "--protocol", "default", "--source-id", source_id, "--record-markers",
                   "--resolve-timeout", "1")
    assert done.returncode == 2
    assert "--record-stream and --record-markers need --record FILE.xdf" in done.stderr
