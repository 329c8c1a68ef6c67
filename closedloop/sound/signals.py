"""The sounds: a pink-noise burst or a WAV file with onset and offset ramps, and the feedback tone.

Everything here is computed once, before the output stream starts, except
:meth:`FeedbackTone.render`, which runs in the audio callback and only writes into arrays it
allocated at construction.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from closedloop.errors import ProtocolError
from closedloop.protocol import MAX_STIMULUS_S, SoundSettings

__all__ = ["FeedbackTone", "apply_ramps", "db_to_gain", "load_wav", "pink_noise", "stimulus"]

#: Seed of the pink noise: every burst of every session is the same ("frozen") noise.
NOISE_SEED = 20130501


def db_to_gain(level_db: float) -> float:
    """Peak amplitude for a level in dB re full scale (0 dB = 1.0)."""
    return 10.0 ** (level_db / 20.0)


def pink_noise(n: int, samplerate: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of pink (1/f power) noise, zero mean, unit peak.

    Shaped in the frequency domain from white Gaussian noise: each bin's amplitude scaled by
    1/sqrt(f) above 20 Hz (below, the bins are zero: no inaudible rumble in a short burst).
    At least one second is generated and the middle ``n`` samples kept, so that a short burst
    has the spectrum of a long stretch of pink noise, not of its own few cycles.
    """
    if n <= 0:
        raise ValueError(f"pink_noise needs n > 0 samples, got {n}.")
    total = max(n, int(samplerate))
    spectrum = rng.normal(size=total // 2 + 1) + 1j * rng.normal(size=total // 2 + 1)
    freqs = np.fft.rfftfreq(total, 1.0 / samplerate)
    scale = np.zeros_like(freqs)
    audible = freqs >= 20.0
    scale[audible] = 1.0 / np.sqrt(freqs[audible])
    noise = np.fft.irfft(spectrum * scale, n=total)
    start = (total - n) // 2
    out = noise[start : start + n]
    out = out - out.mean()
    peak = np.max(np.abs(out))
    return out / peak if peak > 0 else out


def apply_ramps(signal: np.ndarray, ramp_samples: int) -> np.ndarray:
    """Raised-cosine onset and offset ramps of ``ramp_samples`` each (a copy).

    The first sample is 0 and the ramp reaches 1 at ``ramp_samples``: no step at the onset,
    so no click.
    """
    out = np.array(signal, dtype=np.float64, copy=True)
    m = int(ramp_samples)
    if m <= 0:
        return out
    if 2 * m > out.size:
        raise ValueError(f"ramps of {m} samples each do not fit in {out.size} samples.")
    ramp = 0.5 * (1.0 - np.cos(np.pi * np.arange(m) / m))
    out[:m] *= ramp
    out[out.size - m :] *= ramp[::-1]
    return out


def load_wav(path: str | Path, samplerate: float) -> np.ndarray:
    """A WAV file as float64 mono (its first channel) at ``samplerate``, peak-normalised to 1.

    Raises
    ------
    ProtocolError
        When the file is missing, unreadable, silent or longer than ``MAX_STIMULUS_S``.
    """
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    path = Path(path)
    where = f"[sound] wav = {str(path)!r}"
    if not path.is_file():
        raise ProtocolError(f"{where}: no such file (give the path of a WAV file).")
    try:
        rate, data = wavfile.read(str(path))
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"{where} cannot be read as a WAV file: {exc}.") from None
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[:, 0]
    if data.size == 0:
        raise ProtocolError(f"{where} holds no samples.")
    if data.dtype.kind == "i":
        data = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    elif data.dtype.kind == "u":  # 8-bit WAV is unsigned, centred on 128
        data = (data.astype(np.float64) - 128.0) / 128.0
    else:
        data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise ProtocolError(f"{where} holds samples that are not finite numbers.")
    if data.size / rate > MAX_STIMULUS_S:
        raise ProtocolError(
            f"{where} lasts {data.size / rate:.3f} s; a stimulus may last at most {MAX_STIMULUS_S:g} s."
        )
    if rate != samplerate:
        g = math.gcd(int(rate), int(samplerate))
        data = resample_poly(data, int(samplerate) // g, int(rate) // g)
    peak = np.max(np.abs(data))
    if peak == 0:
        raise ProtocolError(f"{where} is silent (every sample is 0).")
    return data / peak


def stimulus(settings: SoundSettings, samplerate: float, base_dir: str | Path | None = None) -> np.ndarray:
    """The stimulus of a ``[sound]`` section at ``samplerate``: float32 mono, peak at ``level_db``.

    Parameters
    ----------
    settings : SoundSettings
        The protocol's ``[sound]`` section.
    samplerate : float
        The output stream's rate (Hz).
    base_dir : path, optional
        A relative ``wav`` path is taken from here (the protocol file's folder).
    """
    ramp = int(round(settings.ramp_ms * 1e-3 * samplerate))
    if settings.stimulus == "wav":
        path = Path(settings.wav)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        raw = load_wav(path, samplerate)
        if 2 * ramp > raw.size:
            raise ProtocolError(
                f"[sound] ramp_ms = {settings.ramp_ms:g} is not accepted: the onset and offset ramps "
                f"must fit in the WAV file's {raw.size / samplerate * 1e3:.1f} ms."
            )
    else:
        n = max(1, int(round(settings.duration_ms * 1e-3 * samplerate)))
        raw = pink_noise(n, samplerate, np.random.default_rng(NOISE_SEED))
        ramp = min(ramp, n // 2)
    shaped = apply_ramps(raw, ramp)
    peak = np.max(np.abs(shaped))
    gain = db_to_gain(settings.level_db) / peak if peak > 0 else 0.0
    return np.ascontiguousarray(shaped * gain, dtype=np.float32)


class FeedbackTone:
    """A continuous sine whose pitch or loudness follows the feedback value, without clicks.

    The oscillator is phase-continuous (a running phase accumulator); pitch (in octaves) and
    amplitude glide towards their targets through a one-pole smoother applied per sample
    (time constant ``tone_smoothing_ms``), so a new feedback value never makes a step in the
    waveform. A NaN feedback value (no value yet, a hold) or :attr:`muted` fades the tone
    out the same way.

    Parameters
    ----------
    settings : SoundSettings
        ``tone``, ``tone_hz``, ``tone_span_octaves``, ``tone_level_db``, ``tone_depth_db``,
        ``feedback_range``, ``tone_smoothing_ms``.
    samplerate : float
        The output stream's rate.
    max_frames : int
        The largest block :meth:`render` is asked for at once (the stream's block size).
    """

    def __init__(self, settings: SoundSettings, samplerate: float, max_frames: int) -> None:
        if settings.tone == "off":
            raise ValueError('FeedbackTone needs tone = "pitch" or "loudness", not "off".')
        self.mode = settings.tone
        self.samplerate = float(samplerate)
        self.low, self.high = settings.feedback_range
        self.centre_octave = math.log2(settings.tone_hz)
        self.span = settings.tone_span_octaves
        self.level_db = settings.tone_level_db
        self.depth_db = settings.tone_depth_db
        tau = settings.tone_smoothing_ms * 1e-3
        a = math.exp(-1.0 / (tau * self.samplerate)) if tau > 0 else 0.0
        self.max_frames = int(max_frames)
        # a^(n+1), n = 0..max_frames-1: the smoother's step response within one block
        self._decay = a ** np.arange(1, self.max_frames + 1, dtype=np.float64)
        self._octave = np.zeros(self.max_frames)
        self._amp = np.zeros(self.max_frames)
        self._phase = np.zeros(self.max_frames)
        self._wave = np.zeros(self.max_frames)
        self.phase = 0.0
        self.octave = self.centre_octave
        self.amplitude = 0.0
        #: The latest feedback value (written by the loop thread, read by the audio callback).
        self.value = math.nan
        #: True while a pause holds stimulation: the tone fades out.
        self.muted = False

    def targets(self, value: float) -> tuple[float, float]:
        """``(pitch in octaves, amplitude)`` the tone moves towards for feedback ``value``."""
        if self.muted or not math.isfinite(value):
            return self.octave, 0.0
        x = (value - self.low) / (self.high - self.low)
        x = 0.0 if x < 0.0 else (min(x, 1.0))
        if self.mode == "pitch":
            return self.centre_octave + self.span * (2.0 * x - 1.0), db_to_gain(self.level_db)
        return self.centre_octave, db_to_gain(self.level_db - self.depth_db * (1.0 - x))

    def frequency_hz(self, value: float) -> float:
        """The steady pitch for feedback ``value`` (NaN when it would be silent)."""
        octave, amp = self.targets(value)
        return 2.0**octave if amp > 0 else math.nan

    def render(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` samples of the tone into ``out`` (1-D float array)."""
        frames = out.shape[0]
        done = 0
        while done < frames:
            n = min(frames - done, self.max_frames)
            self._render_block(out[done : done + n], n)
            done += n

    def _render_block(self, out: np.ndarray, n: int) -> None:
        target_octave, target_amp = self.targets(self.value)
        if self.amplitude < 1e-7:
            self.octave = target_octave  # silent: a new pitch starts where it should, no glide
        decay = self._decay[:n]
        octave, amp, phase, wave = self._octave[:n], self._amp[:n], self._phase[:n], self._wave[:n]
        np.multiply(decay, self.octave - target_octave, out=octave)
        octave += target_octave
        np.exp2(octave, out=phase)
        phase *= 2.0 * math.pi / self.samplerate  # phase increment per sample
        np.cumsum(phase, out=phase)
        phase += self.phase
        np.sin(phase, out=wave)
        np.multiply(decay, self.amplitude - target_amp, out=amp)
        amp += target_amp
        np.multiply(wave, amp, out=out)
        self.phase = math.fmod(float(phase[n - 1]), 2.0 * math.pi)
        self.octave = float(octave[n - 1])
        self.amplitude = float(amp[n - 1])
