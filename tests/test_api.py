"""The public Python API (../shared/CONTRACTS.md, "Python API"), used as a researcher's script
would: only names from ``import closedloop as cl``, real recordings, real LSL on loopback."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time

import mne
import numpy as np
import pytest

import closedloop as cl
from closedloop.commands.run import configure_parser
from closedloop.offline import read_events_tsv
from tests.helpers.recordings import EYES_CLOSED

PUBLIC = (
    "load_protocol", "Protocol", "replay", "ReplayResult", "Session", "Player", "Trigger", "State",
    "Engine", "calibrate", "Stimulator", "ClosedLoopError", "ProtocolError", "DataError", "StreamError",
)


def test_every_public_name_is_exported_documented_and_typed():
    assert set(PUBLIC) <= set(cl.__all__)
    for name in cl.__all__:
        if name == "__version__":
            continue
        obj = getattr(cl, name)
        doc = inspect.getdoc(obj) or ""
        assert len(doc) > 40, f"cl.{name} has no useful docstring"
    for name in ("Trigger", "State"):
        params = getattr(cl, name).__dataclass_params__
        assert params.frozen, f"cl.{name} must be frozen"
    assert {f.name for f in dataclasses.fields(cl.Trigger)} >= {
        "seq", "time_s", "sample_ts", "event", "target_phase_deg", "phase_deg", "amplitude", "sample"
    }
    assert [f.name for f in dataclasses.fields(cl.State)][:5] == [
        "sample_ts", "phase_deg", "amplitude", "feedback", "gate"
    ]
    for error in ("ProtocolError", "DataError", "StreamError"):
        assert issubclass(getattr(cl, error), cl.ClosedLoopError)
    import closedloop

    assert (closedloop.__file__ and (inspect.getfile(closedloop)).endswith("__init__.py"))
    from importlib import resources

    assert resources.files("closedloop").joinpath("py.typed").is_file()


def test_session_takes_every_run_option_as_a_keyword():
    import argparse

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    options = {a.dest for a in parser._actions if a.dest not in ("help", "protocol")}
    keywords = set(inspect.signature(cl.Session).parameters)
    assert options <= keywords, options - keywords


def test_replay_a_file_a_raw_and_an_array_gives_the_command_line_triggers(recordings, tmp_path):
    from closedloop.cli import main

    assert main(["replay", str(EYES_CLOSED), "--protocol", "mu-trough-c3", "--out", str(tmp_path), "--quiet"]) == 0
    cli_rows = read_events_tsv(tmp_path / "events.tsv")
    protocol = cl.load_protocol("mu-trough-c3")
    from_file = cl.replay(EYES_CLOSED, protocol)
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    from_raw = cl.replay(raw, protocol)
    from_array = cl.replay(raw.get_data() * 1e3, protocol, sfreq=raw.info["sfreq"], ch_names=raw.ch_names, units="mV")
    assert len(from_file.triggers) == len(cli_rows) > 5
    for result in (from_file, from_raw, from_array):
        assert isinstance(result, cl.ReplayResult)
        assert all(isinstance(t, cl.Trigger) for t in result.triggers)
        assert [t.sample for t in result.triggers] == [r["sample"] for r in cli_rows]
        np.testing.assert_allclose([t.time_s for t in result.triggers], [r["onset"] for r in cli_rows], atol=1e-6)
    assert from_raw.triggers == from_file.triggers
    assert "triggers" in repr(from_file) and "mu-trough-c3" in repr(from_file)
    out = from_raw.write(tmp_path / "again")
    assert (out / "events.tsv").read_bytes() == (tmp_path / "events.tsv").read_bytes()


def test_replay_refuses_what_it_cannot_read_with_the_command_line_errors(recordings, tmp_path):
    raw = mne.io.read_raw(EYES_CLOSED, preload=True, verbose="error")
    with pytest.raises(cl.DataError, match="an array needs its units"):
        cl.replay(raw.get_data(), "default", sfreq=160.0, ch_names=raw.ch_names)
    with pytest.raises(cl.DataError, match="'furlongs' is not a voltage unit"):
        cl.replay(raw.get_data(), "default", sfreq=160.0, ch_names=raw.ch_names, units="furlongs")
    with pytest.raises(cl.DataError, match="does not exist"):
        cl.replay(tmp_path / "missing.edf", "default")
    with pytest.raises(cl.ProtocolError, match="is neither a protocol file nor a preset"):
        cl.replay(EYES_CLOSED, "no-such-preset")
    with pytest.raises(cl.DataError, match="channel 'C7' is not in the data"):
        cl.replay(raw.get_data(), _protocol_on("C7"),
                  sfreq=160.0, ch_names=raw.ch_names, units="V")


def _protocol_on(channel: str):
    from tests.helpers.protocols import make_protocol

    return make_protocol(signal={"channel": channel, "reference": "none"})


def test_calibrate_returns_a_protocol_named_after_the_recording(recordings):
    tuned = cl.calibrate(EYES_CLOSED, "alpha-trough-o2", methods=["wiener", "echt"])
    assert isinstance(tuned, cl.Protocol)
    assert tuned.name == "alpha-trough-o2-S001R02_first60s"
    assert tuned.band.individual is False and tuned.estimator.method in ("wiener", "echt")
    assert len(cl.replay(EYES_CLOSED, tuned).triggers) > 5


# -- a live session, as a script runs one ----------------------------------------------------
def _alpha(seconds: float, sfreq: float) -> np.ndarray:
    rng = np.random.default_rng(5)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    data = rng.normal(0, 2e-6, (3, n))
    data[1] += 20e-6 * np.cos(2 * np.pi * 10.0 * t)
    return data


def _live_protocol():
    from tests.helpers.protocols import make_protocol

    return make_protocol(trigger={"baseline_s": 4.0, "min_interval_s": 0.25})


def test_a_session_calls_back_for_every_trigger_and_a_raising_or_slow_callback_changes_nothing(
    source_id, caplog
):
    raw = mne.io.RawArray(_alpha(16.0, 500.0), mne.create_info(["O1", "O2", "Cz"], 500.0, "eeg"), verbose="error")
    got: list = []
    states: list = []

    def raises(trigger):
        raise RuntimeError("a bug in the experiment script")

    def slow(state):
        time.sleep(0.5)  # far slower than the states arrive

    with cl.Player(raw, source_id=source_id, chunk_size=5):
        with cl.Session(
            _live_protocol(), source_id=source_id, marker_source_id=source_id + "-m",
            state_source_id=source_id + "-s", callback_queue=64,
        ) as session:
            session.on_trigger(raises)
            session.on_trigger(got.append)
            session.on_state(states.append)
            session.on_state(slow)
            assert "not started" in repr(session)
            with caplog.at_level(logging.ERROR, logger="closedloop"):
                summary = session.run(duration_s=12.0)
    assert summary["triggers"] > 10
    assert [t.seq for t in got] == list(range(1, summary["triggers"] + 1))
    assert all(isinstance(t, cl.Trigger) and t.protocol == "test-phase" for t in got)
    calls = summary["callbacks"]
    assert calls["trigger"]["errors"] == summary["triggers"]  # each call of `raises`, counted
    assert calls["state"]["dropped"] > 0  # the slow callback filled the queue: dropped, counted
    assert all(isinstance(s, cl.State) for s in states)
    # the triggers went out all the same: none dropped (late or otherwise), none later than the
    # phase tolerance (30 deg at 10 Hz: 8.3 ms; about 0.03 ms on a quiet machine)
    assert summary["triggers_dropped"] == 0, summary["dropped_by_reason"]
    assert summary["delivery_error_ms_p99"] < 30.0 / 360.0 / 10.0 * 1e3
    assert sum("a bug in the experiment script" in r.getMessage() or r.exc_info is not None
               for r in caplog.records) == 1  # logged once, not once per call
    assert "ended" in repr(session)


def test_a_started_session_runs_in_the_background_pauses_resumes_and_stops(source_id):
    raw = mne.io.RawArray(_alpha(30.0, 500.0), mne.create_info(["O1", "O2", "Cz"], 500.0, "eeg"), verbose="error")
    times: list = []
    with cl.Player(raw, source_id=source_id, chunk_size=5):
        session = cl.Session(_live_protocol(), source_id=source_id, marker_source_id=source_id + "-m",
                             state_source_id=source_id + "-s")
        session.on_trigger(lambda t: times.append(t.time_s))
        session.start(duration_s=60.0)
        deadline = time.monotonic() + 20
        while len(times) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.running and "running" in repr(session)
        session.pause()
        time.sleep(0.1)
        n_paused = len(times)
        time.sleep(2.0)
        assert len(times) == n_paused  # nothing while paused
        session.resume()
        deadline = time.monotonic() + 10
        while len(times) == n_paused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(times) > n_paused
        t0 = time.monotonic()
        session.stop()
        assert time.monotonic() - t0 < 2.0
        summary = session.wait(5)
    assert summary["end_reason"] == "stopped"
    assert [c["action"] for c in summary["control"]] == ["pause", "resume"]
    with pytest.raises(cl.UsageError, match="already started"):
        session.start()


def test_a_session_without_its_stream_raises_stream_error(source_id):
    session = cl.Session("default", source_id=source_id + "-absent", resolve_timeout=0.5)
    with pytest.raises(cl.StreamError, match="no LSL stream with source_id"):
        session.run(duration_s=1)
    with pytest.raises(cl.UsageError, match="--duration must be a positive number"):
        cl.Session("default", duration=-1)
