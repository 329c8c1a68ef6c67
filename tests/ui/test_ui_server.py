"""The views' server and the run's status and control paths, without a browser: raw HTTP to a
real ``closedloop ui``, a real run's status stream, and ``run --control PATH`` with a standalone ui."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pylsl
import pytest

from closedloop.ui.server import token_ok
from tests.helpers.faults import LIVE_CH_NAMES, LIVE_PROTOCOL, LIVE_SFREQ
from tests.helpers.lsl import OutletThread
from tests.helpers.ui import Markers, ViewsProcess, request, status, wait_until

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def alpha(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = int(LIVE_SFREQ * seconds)
    t = np.arange(n) / LIVE_SFREQ
    data = rng.normal(0, 2.0, (len(LIVE_CH_NAMES), n))
    data[2] += 20.0 * np.cos(2 * np.pi * 10.0 * t)
    return data


@pytest.fixture
def live(source_id, tmp_path):
    """A real outlet of alpha on O2 and a real ``closedloop run --control PATH`` on it."""
    proto = tmp_path / "p.toml"
    proto.write_text(LIVE_PROTOCOL)
    outlet = OutletThread(alpha(40.0), LIVE_SFREQ, source_id, ch_names=LIVE_CH_NAMES, loop=True).start()
    control = tmp_path / "control.sock"
    run = ViewsProcess("run", "--protocol", proto, "--source-id", source_id, "--duration", "30",
                       "--marker-source-id", source_id + "-m", "--state-source-id", source_id + "-s",
                       "--control", control, log=tmp_path / "run.log")
    yield run, control, source_id
    run.close()
    outlet.close()


def test_status_stream_reports_baseline_countdown_hold_reason_and_counts(live):
    run, _, source_id = live
    found = pylsl.resolve_byprop("source_id", source_id + "-s-status", 1, 20.0)
    assert found, run.text()
    inlet = pylsl.StreamInlet(found[0])
    info = inlet.info(5.0)
    assert info.type() == "ClosedLoopStatus" and info.name() == "closedloop-status"
    streams = info.desc().child("streams")
    assert streams.child_value("state_source_id") == source_id + "-s"
    assert streams.child_value("marker_source_id") == source_id + "-m"
    assert streams.child_value("input_source_id") == source_id
    messages, stamps = [], []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (messages and messages[-1]["triggers_delivered"] >= 3):
        sample, ts = inlet.pull_sample(1.0)
        if ts is not None:
            messages.append(json.loads(sample[0]))
            stamps.append(ts)
    assert messages and messages[-1]["triggers_delivered"] >= 3, run.text()
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 2.5 < rate < 6.0  # a few a second (4)
    during = [m for m in messages if m["connected"] and not m["baseline"]["done"]]
    assert len(during) >= 2
    assert all(m["hold"]["reason"] == "baseline" for m in during)
    remaining = [m["baseline"]["remaining_s"] for m in during]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]
    assert all(0 <= r <= 2.0 for r in remaining)
    last = messages[-1]
    assert last["baseline"]["done"] and last["hold"]["reason"] in ("", "settle")
    assert last["protocol"] == "reliability" and "[trigger]" in last["protocol_toml"]
    assert last["band_hz"] == [8.0, 13.0] and last["estimator"] == "echt"
    assert last["input"]["ch_names"] == LIVE_CH_NAMES and last["samples_dropped"] == 0
    assert 0 < last["latency_p50_ms"] <= last["latency_p99_ms"]
    assert last["control_path"].endswith("control.sock") and last["recording"]["path"] is None
    assert last["triggers_dropped"] == sum(last["dropped_by_reason"].values())


def test_standalone_ui_controls_a_run_through_its_control_socket(live, tmp_path):
    run, control, source_id = live
    wait_until(control.exists, 20, "the control socket")
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600
    ui = ViewsProcess("ui", "--control", control, "--port", "0", "--status-source-id", source_id + "-s-status",
                      log=tmp_path / "ui.log")
    try:
        ui.wait_ready()
        assert ui.token and ui.operator.endswith(f"#token={ui.token}")
        markers = Markers(source_id + "-m")
        wait_until(lambda: status(ui.port)["connected"], 15, "the ui to see the session")
        code, body = request(ui.port, "POST", "/api/control", body={"action": "pause"})
        assert code == 403
        assert markers.wait_for("pause", 1.0) is None
        code, body = request(ui.port, "POST", "/api/control", body={"action": "explode"},
                             headers={"X-Closedloop-Token": ui.token})
        assert code == 400 and b"accepted: pause, resume, stop" in body
        code, body = request(ui.port, "POST", "/api/control", body={"action": "pause"},
                             headers={"X-Closedloop-Token": ui.token, "Origin": "http://evil.example"})
        assert code == 403 and b"another origin" in body
        code, body = request(ui.port, "POST", "/api/control", body={"action": "pause"},
                             headers={"X-Closedloop-Token": ui.token})
        assert code == 200 and json.loads(body) == {"ok": True, "action": "pause"}
        ts, marker = markers.wait_for("pause", 5.0)
        assert marker["source"] == "ui" and marker["protocol"] == "reliability"
        wait_until(lambda: status(ui.port)["status"]["paused"], 5, "the status to say paused")
        assert status(ui.port)["status"]["hold"]["reason"] == "paused"
        code, _ = request(ui.port, "POST", "/api/control", body={"action": "stop"},
                          headers={"X-Closedloop-Token": ui.token})
        assert code == 200
        assert markers.wait_for("stop", 5.0) is not None
        assert run.wait(20) == 0
        assert not control.exists()  # removed at the end of the run
        wait_until(lambda: not status(ui.port)["connected"], 10, "the ui to see the run gone")
    finally:
        ui.close()


def test_run_control_path_that_exists_is_refused(tmp_path, source_id):
    taken = tmp_path / "taken"
    taken.write_text("")
    proto = tmp_path / "p.toml"
    proto.write_text(LIVE_PROTOCOL)
    outlet = OutletThread(alpha(10.0), LIVE_SFREQ, source_id, ch_names=LIVE_CH_NAMES, loop=True).start()
    try:
        run = ViewsProcess("run", "--protocol", proto, "--source-id", source_id, "--duration", "5",
                           "--control", taken, log=tmp_path / "run.log")
        assert run.wait(30) == 2
        assert "already exists" in run.text() and "Traceback" not in run.text()
    finally:
        outlet.close()


# ---------------------------------------------------------------------- the server's refusals
@pytest.fixture(scope="module")
def view_only_ui(tmp_path_factory):
    """``closedloop ui`` on a State stream of this test (view-only: no control path)."""
    import uuid

    tmp = tmp_path_factory.mktemp("ui")
    sid = f"closedloop-test-{uuid.uuid4().hex[:12]}"
    info = pylsl.StreamInfo("t", "ClosedLoopState", 5, pylsl.IRREGULAR_RATE, "double64", sid)
    outlet = pylsl.StreamOutlet(info)
    ui = ViewsProcess("ui", "--state-source-id", sid, "--protocol", "faa-neurofeedback", "--port", "0",
                      log=tmp / "ui.log")
    try:
        ui.wait_ready()
        for k in range(20):
            outlet.push_sample([pylsl.local_clock(), 0.0, 1.0, 0.5 * k, 0.0])
        yield ui
    finally:
        ui.close()
        del outlet


TRAVERSALS = [
    "/../../etc/passwd",
    "/static/../../etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e/server.py",
    "/static/%2E%2E%2Fserver.py",
    "/static/..\\server.py",
    "/etc/passwd",
    "//etc/passwd",
    "/static//etc/passwd",
    "/static/operator.js/../../ui/server.py",
    "/static/server.py",
    "/static/__init__.py",
    "/closedloop/ui/server.py",
    "/static/%00operator.js",
    "http://127.0.0.1/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_requests_outside_the_static_files_and_api_are_refused(view_only_ui, path):
    code, body = request(view_only_ui.port, "GET", path)
    assert code in (400, 403, 404), (path, code)
    assert b"root:" not in body and b"import" not in body and b"def " not in body


def test_the_pages_their_files_and_the_status_api_are_served(view_only_ui):
    port = view_only_ui.port
    for path in ("/", "/participant", "/static/operator.js", "/static/participant.js", "/static/style.css"):
        code, body = request(port, "GET", path)
        assert code == 200 and body, path
    code, body = request(port, "GET", "/")
    assert b'src="/static/operator.js"' in body
    api = status(port)
    for key in ("protocol", "connected", "gate", "triggers_delivered", "triggers_dropped", "samples_dropped",
                "latency_p50_ms", "latency_p99_ms"):
        assert key in api
    assert api["protocol"] == "faa-neurofeedback" and api["view_only"] and not api["status_stream"]
    # view-only: with the token or not, control is refused and says how to get it
    code, body = request(port, "POST", "/api/control", body={"action": "pause"})
    assert code == 403
    assert view_only_ui.token is None and "view only" in view_only_ui.text()


def test_requests_naming_another_host_are_refused(view_only_ui):
    # a web page elsewhere could reach 127.0.0.1 through a DNS name that points here
    code, body = request(view_only_ui.port, "GET", "/api/status", host="attacker.example:80")
    assert code == 403
    code, _ = request(view_only_ui.port, "GET", "/api/status", host=f"localhost:{view_only_ui.port}")
    assert code == 200


def test_only_page_files_are_packaged_and_no_page_loads_from_a_network():
    from closedloop.ui.server import STATIC, load_static

    files = load_static()
    assert set(files) == set(STATIC)
    for name, (body, _) in files.items():
        text = body.decode("utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, name
        assert "cdn" not in text.lower(), name


def test_token_comparison():
    assert token_ok("abc", "abc")
    for given in (None, "", "ab", "abcd", "ABC", "abc "):
        assert not token_ok(given, "abc")
