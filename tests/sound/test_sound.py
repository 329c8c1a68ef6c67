"""Sound without a device: the [sound] section, the stimuli, the feedback tone, the output clock."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.io import wavfile
from scipy.signal import welch

from closedloop.errors import ProtocolError
from closedloop.protocol import SoundSettings, load_protocol, parse_protocol, protocol_to_toml
from closedloop.sound import DacClock, FeedbackTone, stimulus
from closedloop.sound.signals import apply_ramps, load_wav, pink_noise
from tests.helpers.protocols import BASE, make_protocol

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


# -- [sound] -------------------------------------------------------------------------------------


def test_every_protocol_has_a_sound_section_and_the_clas_preset_states_its_clicks():
    clas = load_protocol("so-upstate-clas").sound
    assert (clas.stimulus, clas.duration_ms, clas.ramp_ms) == ("pink", 50.0, 5.0)
    faa = load_protocol("faa-neurofeedback").sound
    assert faa.tone == "pitch" and faa.feedback_range == (-2.0, 2.0)
    assert make_protocol().sound == SoundSettings()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stimulus": "noise"}, r'\[sound\] stimulus = "noise" is not accepted: expected one of "pink" \| "wav"'),
        ({"duration_ms": 0}, r"duration_ms = 0 is not accepted: expected milliseconds in \(0, 2000\]"),
        ({"duration_ms": 3000.0}, r"duration_ms = 3000.0 is not accepted"),
        ({"level_db": 3.0}, r"level_db = 3.0 is not accepted: expected a peak level in dB re full scale in \[-120, 0\]"),
        ({"ramp_ms": 30.0}, r"ramp_ms = 30.0 is not accepted: expected at most half of duration_ms = 50"),
        ({"stimulus": "wav"}, r'wav is missing: stimulus = "wav" needs wav, the path of a WAV file'),
        ({"sample_rate_hz": 4000}, r"sample_rate_hz = 4000 is not accepted: expected 0 \(the device's default\) or a rate"),
        ({"device_latency": "lo"}, r'device_latency = "lo" is not accepted: expected one of "low" \| "high" \(did you mean "low"\?\)'),
        ({"tone": "volume"}, r'tone = "volume" is not accepted: expected one of "pitch" \| "loudness" \| "off"'),
        ({"tone_hz": 10.0}, r"tone_hz = 10.0 is not accepted: expected a frequency in Hz in \[20, 20000\]"),
        ({"tone_hz": 15000.0, "tone_span_octaves": 1.0}, r"tone_span_octaves = 1.0 is not accepted: expected a span that keeps"),
        ({"feedback_range": [2.0, -2.0]}, r"feedback_range = \[2.0, -2.0\] is not accepted: expected two numbers \[low, high\] with low < high"),
        ({"tone_smoothing_ms": -1.0}, r"tone_smoothing_ms = -1.0 is not accepted"),
    ],
)
def test_a_bad_sound_value_is_named_with_what_is_accepted(values, message):
    with pytest.raises(ProtocolError, match=message):
        make_protocol(sound=values)


def test_an_unknown_sound_key_gets_a_did_you_mean():
    with pytest.raises(ProtocolError, match=r"unknown key \[sound\] duration \(did you mean \"duration_ms\"\?\)"):
        make_protocol(sound={"duration": 50})


def test_sound_section_round_trips_through_toml():
    sound = {"stimulus": "wav", "wav": "click.wav", "ramp_ms": 2.0, "level_db": -30.0, "sample_rate_hz": 48000.0,
             "device_latency": "high", "tone": "loudness", "tone_hz": 300.0, "tone_depth_db": 20.0,
             "feedback_range": [-1.0, 3.0], "tone_smoothing_ms": 0.0}
    p = make_protocol(sound=sound)
    again = parse_protocol(tomllib.loads(protocol_to_toml(p)), "test protocol")
    assert again == p and again.sound.feedback_range == (-1.0, 3.0)
    # the CLAS preset as a file reads back to itself
    clas = load_protocol("so-upstate-clas")
    assert parse_protocol(tomllib.loads(protocol_to_toml(clas)), "so-upstate-clas") == clas


# -- stimuli -------------------------------------------------------------------------------------


def test_pink_noise_has_a_one_over_f_spectrum():
    x = pink_noise(2**16, 48000.0, np.random.default_rng(1))
    f, pxx = welch(x, 48000.0, nperseg=4096)
    band = (f > 50) & (f < 10000)
    slope = np.polyfit(np.log10(f[band]), np.log10(pxx[band]), 1)[0]
    assert -1.15 < slope < -0.85
    assert abs(x.mean()) < 1e-12 and np.max(np.abs(x)) == pytest.approx(1.0)


def test_a_burst_has_its_duration_level_and_click_free_ramps():
    s = SoundSettings(duration_ms=50.0, ramp_ms=5.0, level_db=-20.0)
    burst = stimulus(s, 48000.0)
    assert burst.dtype == np.float32 and burst.shape == (2400,)
    assert np.max(np.abs(burst)) == pytest.approx(0.1, rel=1e-6)
    assert burst[0] == 0.0 and burst[-1] == 0.0 or abs(burst[-1]) < 1e-6
    # the ramps: the envelope rises smoothly over 240 samples (no step at the onset)
    assert np.max(np.abs(burst[:24])) < 0.01 * 0.1 * 10
    assert np.max(np.abs(np.diff(burst[:240]))) < np.max(np.abs(np.diff(burst[240:-240])))
    # frozen noise: every burst is the same
    assert np.array_equal(burst, stimulus(s, 48000.0))


def test_apply_ramps_is_a_raised_cosine():
    out = apply_ramps(np.ones(100), 10)
    assert out[0] == 0.0 and out[10] == 1.0 and out[-1] == pytest.approx(0.0, abs=0.03)
    assert np.allclose(out[:10], 0.5 * (1 - np.cos(np.pi * np.arange(10) / 10)))
    with pytest.raises(ValueError, match="do not fit"):
        apply_ramps(np.ones(10), 6)


def test_a_wav_stimulus_is_read_resampled_and_levelled(tmp_path):
    rate = 16000
    t = np.arange(int(0.1 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype(np.int16)
    wavfile.write(tmp_path / "beep.wav", rate, np.stack([tone, tone], axis=1))
    s = SoundSettings(stimulus="wav", wav="beep.wav", ramp_ms=2.0, level_db=-6.0)
    out = stimulus(s, 48000.0, base_dir=tmp_path)
    assert out.shape == (4800,)
    assert np.max(np.abs(out)) == pytest.approx(10 ** (-6 / 20), rel=1e-5)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 48000 / out.size == pytest.approx(1000, abs=15)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: (d / "bad.wav").write_bytes(b"not a wav file") and d / "bad.wav", "cannot be read as a WAV file"),
        (lambda d: wavfile.write(d / "quiet.wav", 8000, np.zeros(800, np.int16)) or d / "quiet.wav", "is silent"),
        (lambda d: wavfile.write(d / "long.wav", 8000, np.ones(8000 * 3, np.int16)) or d / "long.wav", "at most 2 s"),
    ],
)
def test_an_unusable_wav_is_a_protocol_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ProtocolError, match=message):
        load_wav(path, 48000.0)


# -- the feedback tone ---------------------------------------------------------------------------


def _render(tone: FeedbackTone, values, per_value: int, block: int) -> np.ndarray:
    out = np.zeros(len(values) * per_value, dtype=np.float32)
    k = 0
    for v in values:
        tone.value = v
        for _ in range(per_value // block):
            tone.render(out[k : k + block])
            k += block
    return out


def test_the_tone_follows_the_value_with_bounded_sample_steps():
    rate, block = 48000.0, 256
    s = SoundSettings(tone="pitch", tone_hz=440.0, tone_span_octaves=1.0, tone_level_db=-10.0,
                      feedback_range=(-2.0, 2.0), tone_smoothing_ms=30.0)
    tone = FeedbackTone(s, rate, block)
    values = [-2.0, 2.0, 0.0, 1.0, -5.0]
    per = 256 * 94  # 0.5 s each
    out = _render(tone, values, per, block)
    amp = 10 ** (-10 / 20)
    # a phase-continuous sine at <= 880 Hz never steps more than 2 pi f A / rate between samples
    assert np.max(np.abs(np.diff(out))) <= 2 * math.pi * 880 * amp / rate * 1.0001
    for k, v in enumerate(values):
        seg = out[k * per + per // 2 : (k + 1) * per]
        zero_up = np.flatnonzero((seg[:-1] < 0) & (seg[1:] >= 0))
        f = (zero_up.size - 1) / ((zero_up[-1] - zero_up[0]) / rate)
        assert f == pytest.approx(tone.frequency_hz(v), rel=0.005)
    assert tone.frequency_hz(-5.0) == pytest.approx(220.0)  # clipped at the range's end


def test_loudness_mode_and_nan_and_mute_fade_out():
    rate, block = 48000.0, 128
    s = SoundSettings(tone="loudness", tone_hz=500.0, tone_level_db=-6.0, tone_depth_db=20.0,
                      feedback_range=(0.0, 1.0), tone_smoothing_ms=10.0)
    tone = FeedbackTone(s, rate, block)
    out = _render(tone, [1.0, 0.0], 128 * 100, block)
    top = np.max(np.abs(out[6000:12800]))
    bottom = np.max(np.abs(out[19000:25600]))
    assert top == pytest.approx(10 ** (-6 / 20), rel=0.01)
    assert 20 * math.log10(top / bottom) == pytest.approx(20.0, abs=0.2)
    faded = _render(tone, [math.nan], 128 * 50, block)
    assert np.max(np.abs(faded[-1000:])) < 1e-6 and np.max(np.abs(np.diff(faded))) < 0.01
    tone.muted = True
    assert tone.targets(0.5)[1] == 0.0


# -- the output clock ----------------------------------------------------------------------------


def _readings(rate_true, n, block, noise_s, seed=0, wander=None):
    rng = np.random.default_rng(seed)
    frames = np.arange(n) * block
    t = 100.0 + frames / rate_true
    if wander is not None:
        t = t + wander(frames / rate_true)
    return frames, t + rng.normal(0, noise_s, n)


def test_the_clock_finds_a_drifting_cards_rate_and_averages_the_noise():
    nominal, true = 48000.0, 48000.0 * (1 + 250e-6)
    frames, readings = _readings(true, 4000, 256, 80e-6)
    clock = DacClock(nominal)
    for f, t in zip(frames, readings):
        clock.update(int(f), float(t))
    assert clock.rate_hz == pytest.approx(true, rel=5e-6)
    # a frame a second ahead is placed within 20 us of its true time
    ahead = frames[-1] + 48000
    assert abs(clock.time_of(ahead) - (100.0 + ahead / true)) < 20e-6
    assert abs(clock.frame_of(clock.time_of(12345.0)) - 12345.0) < 1e-6
    assert clock.summary()["rate_ppm"] == pytest.approx(250, abs=5)


def test_the_clock_skips_a_late_reading_and_restarts_after_a_real_jump():
    frames, readings = _readings(48000.0, 1000, 256, 20e-6)
    readings[500] += 0.05  # one callback 50 ms off: ignored
    readings[700:] += 0.02  # the timeline moved 20 ms (an underrun): followed after a few readings
    clock = DacClock(48000.0, jumps_to_reset=10)
    for f, t in zip(frames[:600], readings[:600]):
        clock.update(int(f), float(t))
    assert clock.n_outliers == 1 and abs(clock.time_of(frames[599]) - (100 + frames[599] / 48000)) < 20e-6
    for f, t in zip(frames[600:], readings[600:]):
        clock.update(int(f), float(t))
    assert clock.n_resets == 1
    assert abs(clock.time_of(frames[-1]) - (100.02 + frames[-1] / 48000)) < 50e-6


def test_the_clock_settles_after_the_readings_wander_as_measured_through_pulseaudio():
    # through PulseAudio the readings drifted 1.5-1.8 ms over the first ~5 s after the stream
    # started, then stayed on a line: intervals a second apart are off by a third of a
    # millisecond at worst while that lasts, and by microseconds once it is over
    frames, readings = _readings(48000.0, 6000, 256, 30e-6, wander=lambda s: 1.5e-3 * np.clip(s / 5.0, 0, 1))
    clock = DacClock(48000.0)
    errors = []
    for f, t in zip(frames, readings):
        clock.update(int(f), float(t))
        errors.append(clock.time_of(f) - (100.0015 + f / 48000))
    err = np.array(errors)
    step = np.abs(err[188:] - err[:-188])  # 188 readings = 1 s
    seconds = frames[188:] / 48000
    assert step.max() < 0.5e-3
    assert step[seconds > 15].max() < 0.03e-3


# -- the command ---------------------------------------------------------------------------------


def test_sound_command_refuses_bad_options_with_exit_2():
    for args, message in (
        (["--test", "x", "--count", "0"], "--count must be a whole number from 1 to 100"),
        (["--test", "x", "--interval", "0.01"], "--interval must be 0.1 to 10 seconds"),
    ):
        r = subprocess.run([sys.executable, "-m", "closedloop", "sound", *args], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_base_protocol_unchanged_by_sound():
    assert "sound" not in BASE
