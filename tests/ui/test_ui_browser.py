"""The browser views in a real browser (headless Chromium through selenium) on real sessions.

The operator's page is opened on a real ``closedloop run --ui`` fed by a real LSL outlet playing
real eyes-closed EEG; the participant's page on ``closedloop ui`` attached to a State stream this
test pushes, so that what the page must show is known exactly. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time

import mne
import numpy as np
import pylsl
import pytest

from closedloop.records import STATE_FIELDS
from closedloop.ui.browser import headless_chromium
from tests.helpers.hosted import HostedOutlet
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import phase_toml
from tests.helpers.recordings import EYES_CLOSED
from tests.helpers.ui import Markers, ViewsProcess, artifact, request, status, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium(width=1400, height=2300)
    yield driver
    driver.quit()


def js(driver, expr: str):
    return driver.execute_script(f"return {expr};")


def screenshot(driver, name: str) -> str:
    path = artifact(name)
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return str(path)


def wrap(a):
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


# ---------------------------------------------------------------------- the operator, on run --ui
def test_operator_page_on_a_live_run(browser, recordings, source_id, tmp_path):
    raw = mne.io.read_raw(EYES_CLOSED, verbose="error")
    data, sfreq = raw.get_data() * 1e6, raw.info["sfreq"]
    proto = tmp_path / "o1.toml"
    proto.write_text(phase_toml("ui-o1-trough", "O1", reference="none", method="echt", target_phase_deg=180.0,
                                amplitude_gate="none", baseline_s=8.0))
    outlet = OutletThread(data, sfreq, source_id, chunk_size=4, ch_names=raw.ch_names, loop=True).start()
    run = ViewsProcess("run", "--protocol", proto, "--source-id", source_id, "--duration", "55",
                       "--ui", "--ui-port", "0", "--marker-source-id", source_id + "-m",
                       "--state-source-id", source_id + "-s", "--record", tmp_path / "s.xdf",
                       log=tmp_path / "run.log")
    try:
        run.wait_ready()
        markers = Markers(source_id + "-m")
        browser.get(run.operator)
        # the baseline countdown, before any trigger
        text = wait_until(lambda: (t := browser.find_element("id", "baseline").text) and "left" in t and t,
                          15, "the baseline countdown")
        assert float(text.split()[0]) <= 8.0
        assert "hold: baseline" in browser.find_element("id", "hold").text
        # traces move: the newest drawn time advances, and the canvas changes
        wait_until(lambda: js(browser, "window.closedloopOperator.tracesDrawnTo"), 15, "drawn traces")
        first = js(browser, "window.closedloopOperator.tracesDrawnTo")
        image = js(browser, "document.getElementById('traces').toDataURL()")
        wait_until(lambda: js(browser, "window.closedloopOperator.tracesDrawnTo") > first + 1.0, 10,
                   "the traces to scroll")
        assert js(browser, "document.getElementById('traces').toDataURL()") != image
        assert js(browser, "window.closedloopOperator.stateRows") > 20
        assert "O1" in browser.find_element("id", "trace-note").text
        # triggers delivered grow on the page as on the Markers stream, and the rose plot fills
        count = lambda: int(browser.find_element("id", "triggers-delivered").text)  # noqa: E731
        wait_until(lambda: count() >= 3, 30, "three triggers on the page")
        seen = count()
        wait_until(lambda: count() > seen, 15, "the trigger count to grow")
        roses = lambda: int(browser.find_element("id", "rose-n").text)  # noqa: E731
        wait_until(lambda: roses() >= 3, 20, "three true phases in the rose plot")
        rose_before = roses()
        wait_until(lambda: roses() > rose_before, 15, "the rose plot to grow")
        assert js(browser, "window.closedloopOperator.triggersShown") >= 1  # marked on the traces
        # the true phases sit near the trough (strong eyes-closed alpha): the truth is timed right
        truths = js(browser, "window.closedloopOperator.truths")
        phases = np.array([t["true_phase_deg"] for t in truths if t["true_phase_deg"] is not None])
        mean = math.degrees(np.angle(np.mean(np.exp(1j * np.radians(phases)))))
        assert abs(wrap(mean - 180.0)) < 60.0, phases
        assert "ground truth" in browser.find_element("id", "rose-note").text
        # the page's figures are the run's status
        api = status(run.port)
        for key in ("protocol", "connected", "gate", "triggers_delivered", "triggers_dropped", "samples_dropped",
                    "latency_p50_ms", "latency_p99_ms"):
            assert key in api, key
        assert api["protocol"] == "ui-o1-trough" and api["connected"] and api["samples_dropped"] == 0
        assert 0 < api["latency_p50_ms"] < api["latency_p99_ms"] < 50
        assert "recording" in browser.find_element("id", "recording").text
        assert "s.xdf" in browser.find_element("id", "recording-detail").text
        assert browser.find_element("id", "band").text.startswith("8.00-13.00 Hz")
        assert "ui-o1-trough" in browser.find_element("id", "protocol").text
        assert browser.find_element("css selector", "#quality tr[data-channel='O1..']")
        screenshot(browser, "operator-phase.png")

        # control without the token, or with another, is refused and writes nothing
        markers.drain()
        for headers in ({}, {"X-Closedloop-Token": "not-the-token"}, {"X-Closedloop-Token": run.token[:-1]}):
            code, body = request(run.port, "POST", "/api/control", body={"action": "pause"}, headers=headers)
            assert code == 403, body
            assert b"token" in body
        assert markers.wait_for("pause", 1.0) is None
        # with the token (the page has it from the address it was opened with): a pause marker
        assert browser.find_element("id", "token").get_attribute("value") == run.token
        browser.find_element("id", "pause").click()
        paused = markers.wait_for("pause", 5.0)
        assert paused is not None and paused[1]["source"] == "ui"
        wait_until(lambda: browser.find_element("id", "paused").is_displayed(), 5, "the PAUSED badge")
        wait_until(lambda: "hold" in browser.find_element("id", "hold-reason").text or
                   browser.find_element("id", "hold-reason").text.startswith("paused"), 5, "the hold reason")
        time.sleep(1.5)  # a second and a half paused: no trigger may go out
        browser.find_element("id", "resume").click()
        resumed = markers.wait_for("resume", 5.0)
        assert resumed is not None, (browser.find_element("id", "control-msg").text, browser.find_element("id", "log").text,
                                     markers.seen[-5:])
        stims = [ts for ts, m in markers.seen if m.get("event") == "stim"]
        assert not [ts for ts in stims if paused[0] < ts < resumed[0]], "a trigger went out while paused"
        wait_until(lambda: "resume" in js(browser, "window.closedloopOperator.controls"), 5, "the resume marker on the page")
        # the participant's page of a phase protocol: a fixation cross, nothing else
        browser.get(run.participant)
        wait_until(lambda: browser.find_element("id", "fixation").is_displayed(), 10, "the fixation cross")
        assert not browser.find_element("id", "feedback").is_displayed()
        assert "trigger" not in browser.find_element("tag name", "body").text.lower()
        screenshot(browser, "participant-phase.png")
        # stop from the operator's page ends the run, with a stop marker
        browser.get(run.operator)
        wait_until(lambda: js(browser, "window.closedloopOperator.stateRows") > 0, 10, "the page to reconnect")
        browser.execute_script("window.confirm = () => true;")
        browser.find_element("id", "stop").click()
        stopped = markers.wait_for("stop", 10.0)
        assert stopped is not None and stopped[1]["source"] == "ui"
        assert run.wait(30) == 0
        assert "stopped" in run.text()
    finally:
        run.close()
        outlet.close()
    # every control action is in the recording too
    import pyxdf

    streams, _ = pyxdf.load_xdf(str(tmp_path / "s.xdf"))
    recorded = [json.loads(v[0])["event"] for s in streams if s["info"]["type"][0] == "Markers"
                for v in s["time_series"]]
    assert [e for e in recorded if e != "stim"] == ["pause", "resume", "stop"]


# ---------------------------------------------------------------------- the participant, on a known signal
FEEDBACK_DISPLAY = """
name = "ui-feedback"
kind = "feedback"

[signal]
channel = "F4"

[trigger]
baseline_s = 10.0

[feedback]
measure = "asymmetry"
channels = ["F4", "F3"]

[display]
direction = "{direction}"
range = [-2.0, 2.0]
smoothing_s = 0.0
shape = "{shape}"
color = "#00ff00"
color_low = "#0000ff"
tone = true
tone_maps = "pitch"
pitch_hz = [220.0, 880.0]
"""


class KnownState(HostedOutlet):
    """A real State outlet, in its own process, pushing a feedback value the test sets
    (``state.value = v``), 100 times a second."""

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._value = multiprocessing.get_context("spawn").Value("d", math.nan)
        self.start()

    @property
    def value(self) -> float:
        return self._value.value

    @value.setter
    def value(self, value: float) -> None:
        self._value.value = value

    def _open(self) -> None:
        info = pylsl.StreamInfo("test-state", "ClosedLoopState", 5, pylsl.IRREGULAR_RATE, "double64", self.source_id)
        chans = info.desc().append_child("channels")
        for label in STATE_FIELDS:
            chans.append_child("channel").append_child_value("label", label)
        self.outlet = pylsl.StreamOutlet(info)

    def _loop(self, halt) -> None:
        while not halt.wait(0.01):
            now = pylsl.local_clock()
            self.outlet.push_sample([now - 0.0003, 0.0, 5.0, self._value.value, 0.0], now)


def level(driver, shape: str) -> float:
    if shape == "bar":
        return js(driver, "document.getElementById('bar').getBoundingClientRect().height"
                          " / document.getElementById('frame').clientHeight")
    return js(driver, "document.getElementById('circle').getBoundingClientRect().width"
                      " / document.getElementById('circle-frame').clientWidth")


@pytest.mark.parametrize(("shape", "direction"), [("bar", "up"), ("circle", "down")])
def test_participant_page_follows_a_known_feedback_signal(browser, source_id, tmp_path, shape, direction):
    proto = tmp_path / "fb.toml"
    proto.write_text(FEEDBACK_DISPLAY.format(shape=shape, direction=direction))
    state = KnownState(source_id + "-s")
    ui = ViewsProcess("ui", "--state-source-id", source_id + "-s", "--protocol", proto, "--port", "0",
                      log=tmp_path / "ui.log")
    try:
        ui.wait_ready()
        assert "view only" in ui.text()
        browser.get(ui.participant)
        wait_until(lambda: browser.find_element("id", "feedback").is_displayed(), 10, "the feedback display")
        assert not browser.find_element("id", "fixation").is_displayed()
        # the baseline (NaN): nothing filled
        wait_until(lambda: js(browser, "window.closedloopParticipant.samples") > 5, 10, "State samples on the page")
        assert js(browser, "window.closedloopParticipant.shown") is None
        for value in (-1.0, 1.5, 0.0, 3.0, -2.5):
            state.value = value
            expected = min(1.0, max(0.0, (value + 2.0) / 4.0))
            if direction == "down":
                expected = 1.0 - expected
            wait_until(lambda: abs(level(browser, shape) - expected) < 0.01, 5,
                       f"the {shape} to show {value} as {expected:.3f}")
            assert js(browser, "window.closedloopParticipant.shown") == pytest.approx(value)
            # the colour is blended from color_low (empty) to color (full)
            colour = js(browser, f"getComputedStyle(document.getElementById('{shape}')).backgroundColor")
            rgb = [int(v) for v in colour[colour.index("(") + 1 : -1].split(",")[:3]]
            assert rgb[1] == pytest.approx(255 * expected, abs=2) and rgb[2] == pytest.approx(255 * (1 - expected), abs=2)
            if value == 1.5:
                screenshot(browser, f"participant-feedback-{shape}.png")
        # the tone starts with a click and its pitch follows the value
        assert browser.find_element("id", "tone-prompt").is_displayed()
        browser.find_element("id", "stage").click()
        wait_until(lambda: js(browser, "window.closedloopParticipant.tone.on"), 5, "the tone to start")
        state.value = 1.0
        expected = 0.75 if direction == "up" else 0.25
        pitch = 220.0 * 4.0 ** expected
        wait_until(lambda: (f := js(browser, "window.closedloopParticipant.tone.frequency")) and abs(f - pitch) < 0.5,
                   5, f"the pitch {pitch:.1f} Hz")
        assert not browser.find_element("id", "tone-prompt").is_displayed()
        # display latency: State push to the frame that drew it, on the LSL clock
        lat = js(browser, "window.closedloopParticipant.latencies.values")
        assert len(lat) > 50
        assert 0.0 < float(np.median(lat)) < 100.0
        # no operator information on the page
        body = browser.find_element("tag name", "body").text.lower()
        assert "ui-feedback" not in body and "trigger" not in body and "token" not in body
    finally:
        ui.close()
        state.close()
