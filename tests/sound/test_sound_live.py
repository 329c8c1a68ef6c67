"""Sound on a device that runs in real time: PulseAudio's null sink, its monitor recorded.

Each test plays through the real chain: ``SoundStimulator`` -> sounddevice -> PortAudio -> ALSA's
pulse plugin -> a private PulseAudio server's null sink (50 kHz: a clock to measure against, see
tests/helpers/pulse.py) -> its monitor, recorded by ``parecord``. The live sessions read real
EEG from a real LSL outlet.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time

import mne
import numpy as np
import pylsl
import pytest

import closedloop.engine  # noqa: F401  (imported before any stream starts: see open_sound)
import closedloop.lsl.dejitter  # noqa: F401
from closedloop.live import LiveSession
from closedloop.lsl.outputs import EngineOutlets
from closedloop.lsl.source import LSLSource, resolve_stream
from closedloop.protocol import load_protocol, parse_protocol, protocol_to_toml
from closedloop.records import State, Trigger
from closedloop.sound import SoundStimulator, start_sound
from tests.helpers.lsl import OutletThread
from tests.helpers.protocols import phase_toml
from tests.helpers.pulse import RATE, MonitorRecording, NullSink, find_onsets, missing_tools
from tests.helpers.recordings import EYES_CLOSED

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEVICE = "pulse"  # PortAudio's ALSA device that goes to the PulseAudio server in PULSE_SERVER
# PortAudio's "high" buffer (about 50 ms through the pulse plugin): the callback needs Python's
# GIL, and building the session's engine (compiled filter design) holds it for 30 ms in one
# piece, 40-80 ms on a loaded machine; the "low" buffer (about 10 ms) then underruns, and after
# an underrun the pulse plugin stalls the stream for 2 s. (A larger buffer makes the plans too
# far ahead for this protocol's estimator to make any.)
LATENCY = 'device_latency = "high"'
# The two live sessions through the sound server get one second attempt. Measured on this 2-core
# shared machine, 5 of 19 runs of the bursts test failed before it accounted for late bursts:
# the audio callback waited past its buffer (a 60-110 ms gap, two underflows; what held it is not
# found) or a delivery came a millisecond late; the first attempt's failure stays in pytest's report
# ("RERUN"), and a second failure fails the test.
REAL_TIME_RETRY = pytest.mark.flaky(reruns=1, reruns_delay=2)


@pytest.fixture(scope="module")
def null_sink():
    missing = missing_tools()
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: the sound tests need Debian's pulseaudio, pulseaudio-utils, "
            "libasound2-plugins and libportaudio2 (.ci/run installs them)"
        )
    with NullSink() as sink:
        yield sink


def _alpha_protocol(min_interval_s: float = 0.3):
    # echt: its fit after the baseline is a few milliseconds (the estimator does not matter here,
    # and a long fit on a normal-priority thread holds the GIL against the audio callback)
    text = phase_toml("sound-alpha", "O2", target_phase_deg=0.0, amplitude_gate="percentile:30", baseline_s=8.0,
                      method="echt")
    text = text.replace("min_interval_s = 0.25", f"min_interval_s = {min_interval_s}")
    text += f"[sound]\nsample_rate_hz = {RATE}\nduration_ms = 50.0\nramp_ms = 5.0\nlevel_db = -12.0\n{LATENCY}\n"
    return parse_protocol(tomllib.loads(text), "sound-alpha.toml")


def _eyes_closed() -> tuple[np.ndarray, float, list[str]]:
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error")
    return raw.get_data() * 1e6, raw.info["sfreq"], raw.ch_names


def _drain(inlet) -> list[tuple[float, dict]]:
    out = []
    while True:
        sample, ts = inlet.pull_sample(0.0)
        if ts is None:
            return out
        out.append((ts, json.loads(sample[0])))


def _marker_inlet(source_id: str):
    found = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
    assert found, "the Markers stream did not appear"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5.0)
    return inlet


@REAL_TIME_RETRY
def test_bursts_land_on_the_markers_timing_and_none_while_paused(null_sink, recordings, source_id, tmp_path):
    """S001R02 (eyes closed) played by ``closedloop play``, O2 alpha peaks: every delivered trigger
    is one burst in the recorded audio, the bursts' intervals equal those of the frames they were
    placed at (p99 within 1 ms) and the markers' (p99 within 2 ms: the loop's delivery jitter on a
    shared machine added), and nothing sounds between pause and resume.

    The loop runs as ``run --realtime`` runs it (SCHED_FIFO): the audio callback needs the GIL,
    and a normal-priority thread holding it can be preempted for tens of milliseconds by the
    other programs on a loaded machine, longer than any device buffer.
    """
    protocol = _alpha_protocol()
    player = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "play", str(EYES_CLOSED), "--source-id", source_id,
         "--chunk-size", "4", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    monitor = MonitorRecording(null_sink, tmp_path / "monitor.raw").start()
    window: dict = {}
    box: dict = {}
    started = threading.Event()

    def loop():
        from closedloop import realtime

        box["rt"] = realtime.request(lock_memory=False)
        try:
            # in closedloop run's order: the loop is built first and the sound started last, so
            # that nothing holds the GIL for long once the audio callback runs
            sound = box["sound"] = SoundStimulator.from_protocol(protocol, DEVICE)
            info = resolve_stream(source_id=source_id, timeout=10.0)
            source = LSLSource(info)
            outlets = EngineOutlets(protocol.name, marker_source_id=source_id + "-m", state_source_id=source_id + "-s")
            box["session"] = session = LiveSession(protocol, source, outlets, duration_s=28.0, stimulators=[sound])
            box["inlet"] = _marker_inlet(source_id + "-m")
            start_sound(sound)
            session.refresh_output_latency()
            started.set()
            try:
                box["summary"] = session.run()
                time.sleep(0.3)
                box["markers"] = _drain(box["inlet"])
            finally:
                source.close(), outlets.close()
        except BaseException as exc:  # reported by the test thread
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        assert started.wait(30) and "error" not in box, box.get("error")
        sound, session = box["sound"], box["session"]
        assert sound.samplerate == RATE and sound.latency_s >= sound.reported_latency_s
        assert session.output_latency_s == sound.latency_s  # the plans are made that much earlier
        # after some bursts: a 3 s pause, then resume
        deadline = time.monotonic() + 20.0
        while sound.n_started < 12 and time.monotonic() < deadline:
            time.sleep(0.1)  # seldom: this thread takes the GIL the audio callback needs
        window["pause"] = pylsl.local_clock()
        session.pause(source="test")
        time.sleep(3.0)
        window["resume"] = pylsl.local_clock()
        session.resume(source="test")
        thread.join(40)
        assert "error" not in box, box.get("error")
        audio = monitor.stop()
    finally:
        player.terminate()
        player.wait(10)
        monitor.stop()
    summary, markers = box["summary"], box["markers"]
    print(f"\nloop real-time: {box['rt'].fifo}; audio threads real-time: {sound.realtime}")
    stims = [(ts, m) for ts, m in markers if m["event"] == "stim"]
    controls = [m for _, m in markers if m["event"] in ("pause", "resume")]
    assert [m["event"] for m in controls] == ["pause", "resume"]
    cancelled = {tuple(c) for c in controls[0].get("sound_cancelled", [])}
    sounded = [(ts, m) for ts, m in stims if not m.get("sound_cancelled") and (m["seq"], 0) not in cancelled]
    snd = summary["stimulators"]["SoundStimulator"]
    assert summary["stimulator_errors"] == {}
    brief = {k: snd[k] for k in ("late", "late_dropped", "underflows", "underflows_at_s", "callback_gap_ms_max",
                                 "callback_gap_max_at_s", "realtime_thread", "latency_ms")}
    print("\nsound device:", brief)
    assert snd["underflows"] == 0, brief
    assert snd["cancelled"] == len(cancelled)
    assert len(sounded) >= 20, f"only {len(sounded)} triggers"
    # Every burst the loop queued in time starts on its frame. On a shared, loaded machine a few
    # can miss it (the loop is real-time, the player feeding it is not): each such one is counted,
    # started at most 5 ms late (its lateness logged) or dropped and never heard.
    log = {(o["seq"], o["pulse"]): o for o in sound.onset_log()}
    assert snd["late"] + snd["late_dropped"] <= max(2, len(sounded) // 8), brief
    played = [(ts, m) for ts, m in sounded if (m["seq"], 0) in log]
    assert len(played) == len(sounded) - snd["late_dropped"], (len(played), len(sounded), brief)
    late_s = np.array([log[(m["seq"], 0)]["late_s"] for _, m in played])
    assert np.sum(late_s > 0) == snd["late"] and np.all(late_s <= 0.005), late_s
    onsets = find_onsets(audio, RATE)
    assert len(onsets) == len(played), (len(onsets), len(played), snd)

    # the timing: intervals between onsets in the recorded audio against those between markers
    # (a late start moved back by the lateness the stimulator logged for it)
    delivered = np.array([ts for ts, _ in played])
    scheduled = np.array([m["sound_scheduled_ts"] for _, m in played])
    planned = np.array([m["sound_planned_ts"] for _, m in played])
    onset_s = onsets / RATE - late_s
    # each burst on the frame it was placed at: the intervals against those of the frames' LSL
    # times (the audio clock's line, which wanders by tenths of a millisecond over seconds on this
    # virtual device), and against those of the markers (the loop's delivery jitter added)
    placed_ms = (np.diff(onset_s) - np.diff(scheduled)) * 1e3
    err_ms = (np.diff(onset_s) - np.diff(delivered)) * 1e3
    p99 = float(np.percentile(np.abs(err_ms), 99))
    placed_p99 = float(np.percentile(np.abs(placed_ms), 99))
    # each marker says when its onset was planned: the delivery plus the device's latency
    assert np.allclose(planned - delivered, sound.latency_s, atol=0.002)
    assert np.all(np.abs(scheduled - planned) <= 1.0 / RATE)
    offset_ms = (onset_s - onset_s[0]) - (scheduled - scheduled[0])
    print(
        f"\nsound onsets: {len(onsets)} bursts = {len(sounded)} markers ({len(cancelled)} cancelled by the pause, "
        f"{snd['late']} started late, {snd['late_dropped']} dropped late); "
        f"interval error vs placed frames p99 {placed_p99:.4f} ms, "
        f"vs markers p50 {np.median(np.abs(err_ms)):.4f} ms, p99 {p99:.4f} ms, "
        f"max {np.abs(err_ms).max():.4f} ms; onset vs schedule spread {np.ptp(offset_ms) * 1e3:.4f} ms; "
        f"queued {sound.latency_s * 1e3:.2f} ms ahead (reported {sound.reported_latency_s * 1e3:.2f} ms); "
        f"device clock {snd['clock']['rate_ppm']:+.1f} ppm"
    )
    assert placed_p99 < 1.0, placed_ms
    assert p99 < 2.0, err_ms

    # nothing written after the pause: map the audio onto the LSL clock by the bursts themselves;
    # what was written before the pause reaches the DAC up to latency_s later, and a burst begun
    # then ends one duration later
    fit = np.polyfit(onset_s, scheduled, 1)
    audio_ts = np.polyval(fit, np.arange(audio.size) / RATE)
    loud = np.abs(audio) > 1e-3
    written_before = window["pause"] + sound.latency_s + protocol.sound.duration_ms * 1e-3 + 0.001
    during = loud & (audio_ts > written_before) & (audio_ts < window["resume"])
    assert not during.any(), "a burst sounded while the session was paused"
    assert any(window["resume"] < ts for ts, _ in sounded), "no burst after resume"


def test_pause_cancels_a_queued_burst_and_says_so(null_sink):
    """A burst queued for 0.3 s ahead is cancelled by a pause at once, named in the return value,
    and never sounds; one queued after resume plays."""
    protocol = _alpha_protocol()
    with SoundStimulator.from_protocol(protocol, DEVICE) as sound:
        now = pylsl.local_clock()

        def trigger(seq, at):
            return Trigger(seq=seq, time_s=now, sample_ts=now, event="stim", target_phase_deg=0.0,
                           phase_deg=0.0, amplitude=1.0, scheduled_s=now, crossing_s=at, pulses=2,
                           pulse_interval_s=0.2)

        fields = sound.fire(trigger(1, now + 0.3))
        assert set(fields) == {"sound_planned_ts", "sound_scheduled_ts"}
        told = sound.pause()
        assert told == {"sound_cancelled": [[1, 0], [1, 1]]}
        assert sound.fire(trigger(2, pylsl.local_clock() + 0.1)) == {"sound_cancelled": True}
        sound.resume()
        sound.fire(trigger(3, pylsl.local_clock() + 0.05))
        deadline = time.monotonic() + 3.0
        while sound.n_started < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.4)
        assert sound.n_cancelled == 2
        assert [(o["seq"], o["pulse"]) for o in sound.onset_log()] == [(3, 0), (3, 1)]


def test_feedback_tone_follows_a_known_sequence_without_clicks(null_sink, tmp_path):
    """A pitch tone driven by a known sequence of feedback values through on_state: the recorded
    tone's frequency steps to each value's pitch, and no sample-to-sample step exceeds what a
    sine at the highest pitch can make (a click would)."""
    text = protocol_to_toml(load_protocol("faa-neurofeedback"))
    text = text.replace("sample_rate_hz = 0.0", f"sample_rate_hz = {float(RATE)}")
    text = text.replace('device_latency = "low"', LATENCY)
    protocol = parse_protocol(tomllib.loads(text), "faa.toml")
    values = [-2.0, 0.0, 2.0, 1.0, -1.0, 5.0]  # 5 is beyond feedback_range: clipped to its top
    hold_s = 0.6
    monitor = MonitorRecording(null_sink, tmp_path / "tone.raw").start()
    sound = SoundStimulator.from_protocol(protocol, DEVICE)
    assert sound.feedback
    with sound.start():
        tone = sound._tone
        starts = []
        for v in values:
            starts.append(pylsl.local_clock())
            sound.on_state(State(pylsl.local_clock(), math.nan, math.nan, v, False))
            time.sleep(hold_s)
        sound.on_state(State(pylsl.local_clock(), math.nan, math.nan, math.nan, False))  # NaN: fades out
        time.sleep(0.5)
        expected_hz = [tone.frequency_hz(v) for v in values]
    audio = monitor.stop()
    assert expected_hz[0] == pytest.approx(220.0) and expected_hz[2] == pytest.approx(880.0)
    assert expected_hz[5] == pytest.approx(880.0)
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    assert loud.size, "no tone was recorded"
    tone_audio = audio[loud[0] : loud[-1] + 1]
    # no clicks: a sine of amplitude A at f Hz moves at most 2 pi f A / rate per sample
    amp = 10 ** (protocol.sound.tone_level_db / 20)
    bound = 2 * math.pi * 880.0 * amp / RATE
    steps = np.abs(np.diff(tone_audio))
    assert steps.max() <= 1.05 * bound + 2 / 32768, (steps.max(), bound)
    # the pitch in the middle of each value's stretch (the recording starts with the tone)
    found = []
    for k in range(len(values)):
        mid = int((k + 0.5) * hold_s * RATE)
        seg = tone_audio[mid - 4096 : mid + 4096] * np.hanning(8192)
        spec = np.abs(np.fft.rfft(seg, 8 * 8192))
        found.append(np.argmax(spec) * RATE / (8 * 8192))
    print(f"\nfeedback tone: expected {np.round(expected_hz, 1)} Hz, found {np.round(found, 1)} Hz, "
          f"largest step {steps.max():.5f} (bound {bound:.5f})")
    assert np.allclose(found, expected_hz, rtol=0.01)
    # the tone ends in a fade, not a cut
    assert np.abs(tone_audio[-200:]).max() < 0.2 * amp


@REAL_TIME_RETRY
def test_run_sound_plays_the_clas_presets_two_clicks(null_sink, source_id, tmp_path):
    """``closedloop run --sound`` with the so-upstate-clas preset (its baseline shortened) on a slow
    oscillation at Fz: two clicks per trigger, 1.075 s apart on the audio clock, as many pairs
    as markers."""
    clas = load_protocol("so-upstate-clas")
    text = protocol_to_toml(clas).replace("baseline_s = 30.0", "baseline_s = 8.0")
    text = text.replace("sample_rate_hz = 0.0", f"sample_rate_hz = {float(RATE)}")
    text = text.replace('device_latency = "low"', LATENCY)
    path = tmp_path / "clas.toml"
    path.write_text(text)
    sfreq = 250.0
    t = np.arange(int(40 * sfreq)) / sfreq
    rng = np.random.default_rng(7)
    data = rng.normal(0, 5.0, (3, t.size))
    data[0] += 60.0 * np.sin(2 * np.pi * 0.9 * t)  # Fz: a 120 uV peak-to-peak slow oscillation
    outlet = OutletThread(data, sfreq, source_id, chunk_size=5, ch_names=["Fz", "Cz", "Pz"]).start()
    monitor = MonitorRecording(null_sink, tmp_path / "clas.raw").start()
    summary_path = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "run", "--protocol", str(path), "--source-id", source_id,
         "--duration", "24", "--realtime", "--sound", DEVICE, "--marker-source-id", source_id + "-m",
         "--state-source-id", source_id + "-s", "--summary-json", str(summary_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        inlet = _marker_inlet(source_id + "-m")
        out, err = proc.communicate(timeout=60)
        markers = _drain(inlet)
        audio = monitor.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
        outlet.close()
        monitor.stop()
    assert proc.returncode == 0, err
    assert "sound on 'pulse'" in err
    summary = json.loads(summary_path.read_text())
    stims = [m for _, m in markers if m["event"] == "stim"]
    assert len(stims) >= 3, err
    assert all(m["pulses"] == 2 and "sound_scheduled_ts" in m for m in stims)
    onsets = find_onsets(audio, RATE) / RATE
    assert len(onsets) == 2 * len(stims), (len(onsets), len(stims), summary["stimulators"])
    pairs = np.diff(onsets)[::2]
    snd = summary["stimulators"]["SoundStimulator"]
    off = np.abs(pairs - 1.075) > 0.001
    if off.any():
        # the stimulator places both clicks 1.075 s apart on the device's frame count; the recorded
        # audio can only differ when the device itself lost time between them (an underrun on a
        # loaded machine inserts silence), and the stimulator must have seen that: one pair at most,
        # longer, never shorter, with an underflow, a callback gap that accounts for it, or DAC
        # times off its clock's line
        excess_ms = float(np.max(pairs[off]) - 1.075) * 1e3
        seen = (snd["underflows"] > 0 or snd["callback_gap_ms_max"] >= 0.5 * excess_ms
                or snd["clock"]["outliers"] > 0)
        assert off.sum() == 1 and np.all(pairs[off] > 1.075) and seen, (pairs, snd)
    assert len(pairs) - off.sum() >= 2, pairs
    assert summary["stimulators"]["SoundStimulator"]["started"] == 2 * len(stims)
