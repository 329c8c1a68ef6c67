"""``closedloop streams`` as a user runs it: a subprocess that finds real outlets on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pylsl
import pytest

from tests.helpers.recordings import PROJECT_ROOT

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # carries LSLAPICFG from conftest: loopback only
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "closedloop", "streams", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=PROJECT_ROOT,
    )


@pytest.fixture
def outlets(source_id: str):
    eeg = pylsl.StreamOutlet(pylsl.StreamInfo("cl-test-amp", "EEG", 8, 250.0, "float32", source_id))
    markers = pylsl.StreamOutlet(
        pylsl.StreamInfo("cl-test-markers", "Markers", 1, 0.0, "string", source_id + "-mk")
    )
    state = pylsl.StreamOutlet(
        pylsl.StreamInfo("cl-test-state", "ClosedLoopState", 5, 0.0, "double64", source_id + "-st")
    )
    yield source_id
    del eeg, markers, state


def test_json_lists_every_visible_stream_with_its_properties(outlets: str) -> None:
    done = run_cli("--json", "--timeout", "1.5")
    assert done.returncode == 0, done.stderr
    listed = {s["source_id"]: s for s in json.loads(done.stdout)}
    host = socket.gethostname()
    assert listed[outlets] == {
        "name": "cl-test-amp",
        "type": "EEG",
        "channels": 8,
        "rate": 250.0,
        "format": "float32",
        "source_id": outlets,
        "host": host,
    }
    assert listed[outlets + "-mk"] == {
        "name": "cl-test-markers",
        "type": "Markers",
        "channels": 1,
        "rate": 0.0,
        "format": "string",
        "source_id": outlets + "-mk",
        "host": host,
    }
    assert listed[outlets + "-st"]["format"] == "double64"
    assert listed[outlets + "-st"]["channels"] == 5


def test_table_has_a_header_and_one_row_per_stream(outlets: str) -> None:
    done = run_cli("--timeout", "1.5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CHANNELS", "RATE", "FORMAT", "SOURCE_ID", "HOST"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["cl-test-amp"][1:7] == ["EEG", "8", "250", "Hz", "float32", outlets]
    assert rows["cl-test-markers"][1:6] == ["Markers", "1", "irregular", "string", outlets + "-mk"]
    # columns line up: every row starts its SOURCE_ID cell where the header does
    col = lines[0].index("SOURCE_ID")
    assert all(line[col:].startswith(line.split()[-2]) for line in lines[1:])


@pytest.mark.parametrize("bad", ["0", "-1", "nan"])
def test_unusable_timeout_exits_2_naming_the_option(bad: str) -> None:
    done = run_cli("--timeout", bad)
    assert done.returncode == 2
    assert "--timeout" in done.stderr and "above 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_nothing_visible_is_not_an_error(tmp_path, lsl_config, outlets: str) -> None:
    # a different LSL session id hides this session's outlets from the command
    cfg = tmp_path / "lsl_api.cfg"
    cfg.write_text(lsl_config.read_text().replace("SessionID = ", "SessionID = other-"))
    env = dict(os.environ, LSLAPICFG=str(cfg))
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    base = [sys.executable, "-m", "closedloop", "streams", "--timeout", "0.5"]
    t0 = time.monotonic()
    done = subprocess.run(base, check=False, capture_output=True, text=True, env=env, timeout=60)
    # the wait is what was asked for (liblsl overruns exactly 0.5 s by 5 s unless nudged)
    assert time.monotonic() - t0 < 4.0
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no LSL streams visible (waited 0.5 s)" in done.stderr
    done = subprocess.run(
        base + ["--json"], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and json.loads(done.stdout) == []
