"""``closedloop simulate``: a simulated resting EEG recording with known content.

The simulation is a small forward model. Electrodes sit on a unit sphere at idealised 10-10
positions: the ring Fpz-T7-Oz-T8 on the equator and Cz at the pole (the spherical head of
BESA-style layouts), 10 % steps of 18 degrees around the ring and 22.5 degrees along the midline,
each coronal row the circle through its two ring electrodes and its midline electrode divided
into equal arcs (the 10-10 construction of Oostenveld & Praamstra 2001). After fitting a sphere,
MNE's template 10-20 positions lie within 10 degrees of these (5 on average). Brain sources are
radial current dipoles 0.45 radius below the surface; an electrode sees a source with the
infinite-medium dipole gain ``(e - r0) . u / |e - r0|^3``, normalised to 1 at the electrode
straight above the source, so every source spreads over its neighbours and reverses sign far
away, as volume conduction does. The potentials are reference-free (an ideal, infinitely
distant reference).

Content, all drawn from one seed:

- Background: 72 independent sources spread evenly over the head above the ears, each
  1/f^a noise (power) with its own exponent a in [1.5, 2.2] and a 1 Hz knee, mixed into every
  channel; about 17-22 µV RMS per channel.
- Occipital alpha: one source patch under O1 and O2. Bursts of 0.5-3 s (raised-cosine edges, amplitude
  slowly modulated within the burst) separated by gaps of 0.3-2 s, over a weak tonic rhythm.
  The instantaneous frequency drifts slowly (tens of seconds) and jitters a little around a
  centre in 9.5-10.5 Hz, always within 8-12 Hz. On O1/O2 the Welch power ratio 8-13 Hz over
  2-40 Hz is about 0.55 (under 0.2 frontally); bursts cover about 60 % of the time.
- Central mu: one source under C3 and one under C4, independent bursts and frequencies (centre
  10-11.5 Hz, within 8-12 Hz), about 60 % of the occipital amplitude, with a small
  phase-locked second harmonic (the arch shape of mu); alpha ratio about 0.35 at C3/C4.
- Line noise: 50 Hz common to all channels with a per-channel amplitude of 1-5 µV, slowly
  fluctuating, plus a weaker third harmonic when the rate allows.
- Blinks: every 7-15 s, a skewed positive bump of 200-400 ms, 100-200 µV at Fp1/Fp2, decaying
  with angular distance from the eyes (about a quarter at Fz, 5 % at Cz, nothing occipital).
- Amplifier noise: 0.7 µV RMS white noise per channel.

Events (blink, occipital alpha burst, left/right mu burst) are returned with the data and
written as annotations. A channel's signal does not depend on which other channels are
simulated: ``n_channels`` picks channels, it does not change them.

Files are written by our own writers, deterministically (fixed header date, no file ids):
EDF+ (``.edf``, 16-bit, 0.1 µV resolution, annotations in an "EDF Annotations" signal) and
BrainVision (``.vhdr`` + ``.vmrk`` + ``.eeg``, 16-bit, 0.1 µV). MNE reads both natively.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import NamedTuple

import numpy as np

from closedloop.errors import UsageError

DEFAULT_SECONDS = 120.0
DEFAULT_SFREQ = 500.0
DEFAULT_SEED = 1
DEFAULT_N_CHANNELS = 32
LINE_HZ = 50.0
MIN_SFREQ = 4 * LINE_HZ
MAX_SFREQ = 20_000.0
MIN_SECONDS = 1.0
MAX_SECONDS = 3600.0
MAX_VALUES = 50_000_000  # channels x samples, about 400 MB as float64
RESOLUTION_UV = 0.1  # of the 16-bit files
_SOURCE_DEPTH = 0.45  # of the head radius, below the electrodes
_BACKGROUND_UV = 10.0  # std of one background source at the electrode straight above it
_BACKGROUND_EXPONENTS = (1.5, 2.2)  # range of the 1/f^a power exponents
_ALPHA_UV = 25.0  # burst amplitude at the strongest electrode (before the +-30 % draws)
_MU_UV = 15.0
FORMATS = {".edf": "EDF+", ".vhdr": "BrainVision"}

# The 64-channel 10-10 set, front to back, left to right: the order channels are returned in.
MONTAGE_64: tuple[str, ...] = (
    "Fp1", "Fpz", "Fp2",
    "AF7", "AF3", "AFz", "AF4", "AF8",
    "F7", "F5", "F3", "F1", "Fz", "F2", "F4", "F6", "F8",
    "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8",
    "T7", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "T8",
    "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8",
    "P9", "P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "P10",
    "PO7", "PO3", "POz", "PO4", "PO8",
    "O1", "Oz", "O2", "Iz",
)  # fmt: skip

# Which channels a smaller montage keeps: the first 32 are the usual 32-channel 10-20 cap.
_PRIORITY: tuple[str, ...] = (
    "O1", "O2", "Oz", "C3", "C4", "Cz", "Pz", "Fz", "Fp1", "Fp2", "F3", "F4", "P3", "P4",
    "T7", "T8", "F7", "F8", "P7", "P8", "PO3", "PO4", "AF3", "AF4",
    "FC1", "FC2", "FC5", "FC6", "CP1", "CP2", "CP5", "CP6",
    "POz", "FCz", "CPz", "Fpz", "AFz", "C1", "C2", "C5", "C6", "F1", "F2", "F5", "F6",
    "P1", "P2", "P5", "P6", "FC3", "FC4", "CP3", "CP4", "PO7", "PO8", "AF7", "AF8",
    "FT7", "FT8", "TP7", "TP8", "P9", "P10", "Iz",
)  # fmt: skip

# Random streams, one per component, so that components never share draws.
_KEY_BACKGROUND, _KEY_RHYTHM, _KEY_BLINK, _KEY_LINE, _KEY_SENSOR, _KEY_BACKGROUND_SET = range(6)


class SimEvent(NamedTuple):
    """One simulated event: ``onset_s`` from the first sample, ``duration_s``, ``description``."""

    onset_s: float
    duration_s: float
    description: str


# --------------------------------------------------------------------------- geometry


def _on_sphere(lat_deg: float, az_deg: float) -> np.ndarray:
    """Unit vector in head coordinates (x right, y nose, z up); azimuth from the nose, + right."""
    lat, az = math.radians(lat_deg), math.radians(az_deg)
    return np.array([math.cos(lat) * math.sin(az), math.cos(lat) * math.cos(az), math.sin(lat)])


def _arc_points(left: np.ndarray, mid: np.ndarray, right: np.ndarray, n_steps: int) -> list:
    """Points dividing the arc ``left`` -> ``mid`` of the circle through the three into equal parts."""
    # Circumcentre of the triangle (left, mid, right): the centre of the circle on the sphere.
    a, b = left - mid, right - mid
    axb = np.cross(a, b)
    centre = mid + (np.dot(a, a) * np.cross(b, axb) + np.dot(b, b) * np.cross(axb, a)) / (
        2.0 * np.dot(axb, axb)
    )
    u, v = left - centre, mid - centre
    radius = np.linalg.norm(u)
    angle = math.acos(np.clip(np.dot(u, v) / (radius * np.linalg.norm(v)), -1.0, 1.0))
    w = v - np.dot(v, u) / radius**2 * u
    w *= radius / np.linalg.norm(w)
    points = []
    for k in range(n_steps + 1):
        t = angle * k / n_steps
        p = centre + u * math.cos(t) + w * math.sin(t)
        points.append(p / np.linalg.norm(p))
    return points


def electrode_positions() -> dict[str, np.ndarray]:
    """Unit-sphere positions of the 64 simulated electrodes (x right, y nose, z up).

    Returns
    -------
    dict
        Channel name -> unit vector, for every name in :data:`MONTAGE_64`.
    """
    pos: dict[str, np.ndarray] = {}
    ring_lat = 0.0  # Fpz, T7, Oz, T8 on the equator, Cz at the pole
    step = (90.0 - ring_lat) / 4.0  # 10 % of the nasion-inion arc along the midline
    ring = {
        "Fp": 18,
        "AF": 36,
        "F": 54,
        "FT": 72,
        "T": 90,
        "TP": 108,
        "P": 126,
        "PO": 144,
        "O": 162,
    }
    for stem, az in ring.items():
        left_name, right_name = (
            (f"{stem}1", f"{stem}2") if stem in ("Fp", "O") else (f"{stem}7", f"{stem}8")
        )
        pos[left_name] = _on_sphere(ring_lat, -az)
        pos[right_name] = _on_sphere(ring_lat, az)
    pos["Fpz"] = _on_sphere(ring_lat, 0.0)
    pos["Oz"] = _on_sphere(ring_lat, 180.0)
    pos["Iz"] = _on_sphere(ring_lat - step, 180.0)
    pos["P9"], pos["P10"] = _on_sphere(ring_lat - step, -126.0), _on_sphere(ring_lat - step, 126.0)
    for k, name in enumerate(("AFz", "Fz", "FCz", "Cz", "CPz", "Pz", "POz"), start=1):
        lat = ring_lat + step * k
        pos[name] = _on_sphere(lat if lat <= 90.0 else 180.0 - lat, 0.0 if lat <= 90.0 else 180.0)
    rows = {"AF": ("AF7", "AFz", "AF8"), "F": ("F7", "Fz", "F8"), "FC": ("FT7", "FCz", "FT8"),
            "C": ("T7", "Cz", "T8"), "CP": ("TP7", "CPz", "TP8"), "P": ("P7", "Pz", "P8"),
            "PO": ("PO7", "POz", "PO8")}  # fmt: skip
    for stem, (left, mid, right) in rows.items():
        left_arc = _arc_points(pos[left], pos[mid], pos[right], 4)
        right_arc = _arc_points(pos[right], pos[mid], pos[left], 4)
        for k, (odd, even) in enumerate(((5, 6), (3, 4), (1, 2)), start=1):
            pos.setdefault(f"{stem}{odd}", left_arc[k])
            pos.setdefault(f"{stem}{even}", right_arc[k])
    return {name: pos[name] for name in MONTAGE_64}


def dipole_gain(electrodes: np.ndarray, direction: np.ndarray, depth_frac: float) -> np.ndarray:
    """Gain of a radial dipole ``depth_frac`` below the surface at unit vector ``direction``.

    Infinite homogeneous medium, unit sphere of electrodes; 1 at the electrode straight above.
    """
    u = direction / np.linalg.norm(direction)
    rho = 1.0 - depth_frac
    d = electrodes - rho * u
    gain = (d @ u) / np.linalg.norm(d, axis=1) ** 3
    return gain * (1.0 - rho) ** 2


def _patch_gain(electrodes: np.ndarray, patch: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Gain of dipoles (lat, az) acting together, scaled to 1 at their strongest electrode."""
    directions = [_on_sphere(lat, az) for lat, az in patch]
    everywhere = np.array(list(electrode_positions().values()))
    peak = max(sum(dipole_gain(everywhere, d, _SOURCE_DEPTH) for d in directions))
    return sum(dipole_gain(electrodes, d, _SOURCE_DEPTH) for d in directions) / peak


def _angle_deg(electrodes: np.ndarray, direction: np.ndarray) -> np.ndarray:
    u = direction / np.linalg.norm(direction)
    return np.degrees(np.arccos(np.clip(electrodes @ u, -1.0, 1.0)))


def _fibonacci_directions(n: int, min_z: float) -> np.ndarray:
    """``n`` nearly evenly spread unit vectors with z >= ``min_z``."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n * (1.0 - min_z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z**2)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), z])


# --------------------------------------------------------------------------- signals


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _shaped_noise(rng: np.random.Generator, n: int, sfreq: float, amplitude) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``amplitude(freqs)``, zero mean, unit std."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    spectrum *= amplitude(freqs)
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    std = x.std()
    return x / std if std > 0 else x


def _lowpass_noise(rng: np.random.Generator, n: int, sfreq: float, cutoff_hz: float) -> np.ndarray:
    return _shaped_noise(rng, n, sfreq, lambda f: np.exp(-0.5 * (f / cutoff_hz) ** 2))


def _pink_noise(rng: np.random.Generator, n: int, sfreq: float, exponent: float) -> np.ndarray:
    knee_hz = 1.0
    return _shaped_noise(rng, n, sfreq, lambda f: (f**2 + knee_hz**2) ** (-exponent / 4.0))


def _burst_rhythm(
    rng: np.random.Generator,
    n: int,
    sfreq: float,
    centre_range_hz: tuple[float, float],
    gap_s: tuple[float, float],
    tonic: float,
    harmonic: float,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A waxing and waning 8-12 Hz rhythm of unit burst amplitude, and its bursts (onset, dur)."""
    seconds = n / sfreq
    centre = rng.uniform(*centre_range_hz)
    drift = 1.2 * np.tanh(_lowpass_noise(rng, n, sfreq, 0.03))
    jitter = 0.25 * _lowpass_noise(rng, n, sfreq, 1.0)
    freq = np.clip(centre + drift + jitter, 8.0, 12.0)
    phase = rng.uniform(-math.pi, math.pi) + 2.0 * math.pi * np.cumsum(freq) / sfreq
    wobble = 1.0 + 0.25 * _lowpass_noise(rng, n, sfreq, 0.5)

    envelope = np.full(n, tonic)
    bursts: list[tuple[float, float]] = []
    t = rng.uniform(0.0, gap_s[1])
    edge = 0.3  # fraction of a burst spent rising, and again falling
    while True:
        duration = rng.uniform(0.5, 3.0)
        height = rng.uniform(0.7, 1.3)
        gap = rng.uniform(*gap_s)
        if t + duration > seconds:
            break
        start, stop = round(t * sfreq), round((t + duration) * sfreq)
        u = np.linspace(0.0, 1.0, stop - start, endpoint=False)
        shape = np.ones_like(u)
        rise, fall = u < edge, u > 1.0 - edge
        shape[rise] = 0.5 - 0.5 * np.cos(math.pi * u[rise] / edge)
        shape[fall] = 0.5 - 0.5 * np.cos(math.pi * (1.0 - u[fall]) / edge)
        envelope[start:stop] = np.maximum(envelope[start:stop], height * shape)
        bursts.append((start / sfreq, (stop - start) / sfreq))
        t += duration + gap
    signal = envelope * wobble * (np.cos(phase) + harmonic * np.cos(2.0 * phase + math.pi / 3.0))
    return signal, bursts


def _blinks(
    rng: np.random.Generator, n: int, sfreq: float
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Blink waveform in µV at the eyes' strongest electrode, and the blinks (onset, duration)."""
    seconds = n / sfreq
    wave = np.zeros(n)
    blinks: list[tuple[float, float]] = []
    t = rng.uniform(1.5, min(6.0, max(1.5, seconds - 0.5)))
    while True:
        duration = rng.uniform(0.2, 0.4)
        height = rng.uniform(100.0, 200.0)
        gap = rng.uniform(7.0, 15.0)
        if t + duration > seconds:
            break
        start, stop = round(t * sfreq), round((t + duration) * sfreq)
        u = np.linspace(0.0, 1.0, stop - start, endpoint=False)
        bump = u**1.5 * (1.0 - u) ** 2.5  # fast rise, slower fall
        wave[start:stop] += height * bump / bump.max()
        blinks.append((start / sfreq, (stop - start) / sfreq))
        t += duration + gap
    return wave, blinks


def check_arguments(seconds: float, sfreq: float, seed: int, n_channels: int) -> None:
    if (
        not isinstance(seconds, numbers.Real)
        or not math.isfinite(seconds)
        or not (MIN_SECONDS <= seconds <= MAX_SECONDS)
    ):
        raise UsageError(
            f"seconds must be between {MIN_SECONDS:g} and {MAX_SECONDS:g}; got {seconds!r}."
        )
    if (
        not isinstance(sfreq, numbers.Real)
        or not math.isfinite(sfreq)
        or not (MIN_SFREQ <= sfreq <= MAX_SFREQ)
    ):
        raise UsageError(
            f"sfreq must be between {MIN_SFREQ:g} and {MAX_SFREQ:g} Hz (the {LINE_HZ:g} Hz line "
            f"noise needs a Nyquist frequency at least twice as high); got {sfreq!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a whole number >= 0; got {seed!r}.")
    if (
        isinstance(n_channels, bool)
        or not isinstance(n_channels, (int, np.integer))
        or not (1 <= n_channels <= len(MONTAGE_64))
    ):
        raise UsageError(
            f"the channel count (n_channels, --channels) must be a whole number from 1 to "
            f"{len(MONTAGE_64)}; got {n_channels!r}."
        )
    n_samples = round(seconds * sfreq)
    if n_samples * n_channels > MAX_VALUES:
        raise UsageError(
            f"{n_channels} channels x {n_samples} samples is too much to simulate at once "
            f"(at most {MAX_VALUES:,} values); lower the duration, rate or channel count."
        )


def simulate_eeg(
    seconds: float = DEFAULT_SECONDS,
    sfreq: float = DEFAULT_SFREQ,
    seed: int = DEFAULT_SEED,
    n_channels: int = DEFAULT_N_CHANNELS,
) -> tuple[np.ndarray, list[str], float, list[SimEvent]]:
    """Simulate resting EEG with occipital alpha, central mu, 1/f background, line noise, blinks.

    See the module docstring for the model. The result depends only on the arguments.

    Parameters
    ----------
    seconds : float
        Duration, 1 to 3600 s; ``round(seconds * sfreq)`` samples are made.
    sfreq : float
        Sampling rate, 200 to 20000 Hz.
    seed : int
        Seed (>= 0) of every random draw.
    n_channels : int
        1 to 64 channels of the 10-10 system; 32 gives the usual 32-channel 10-20 cap. Fewer
        channels keep the most useful ones (O1, O2, Oz, C3, C4, Cz, Pz, Fz, Fp1, Fp2, ...).

    Returns
    -------
    data_uV : ndarray, shape (n_channels, n_samples)
        float64, microvolts, C-contiguous.
    ch_names : list of str
        Names as in MNE's standard 10-20 montage, front to back.
    sfreq : float
        The sampling rate.
    events : list of SimEvent
        Blinks (``"blink"``), occipital alpha bursts (``"alpha"``) and central mu bursts
        (``"mu-left"``, ``"mu-right"``), sorted by onset.

    Raises
    ------
    UsageError
        When an argument is out of range; the message names it and what is accepted.
    """
    check_arguments(seconds, sfreq, seed, n_channels)
    sfreq = float(sfreq)
    seed = int(seed)
    n = round(seconds * sfreq)
    keep = set(_PRIORITY[:n_channels])
    ch_names = [name for name in MONTAGE_64 if name in keep]
    canonical = [MONTAGE_64.index(name) for name in ch_names]
    all_positions = electrode_positions()
    electrodes = np.array([all_positions[name] for name in ch_names])
    data = np.zeros((len(ch_names), n))

    # Background: independent 1/f sources, mixed block by block to bound memory.
    n_background = 72
    directions = _fibonacci_directions(n_background, min_z=-0.35)
    set_rng = _rng(seed, _KEY_BACKGROUND_SET)
    exponents = set_rng.uniform(*_BACKGROUND_EXPONENTS, n_background)
    gains = np.column_stack([dipole_gain(electrodes, d, _SOURCE_DEPTH) for d in directions])
    block = 8
    for first in range(0, n_background, block):
        idx = range(first, min(first + block, n_background))
        sources = np.array(
            [_pink_noise(_rng(seed, _KEY_BACKGROUND, k), n, sfreq, exponents[k]) for k in idx]
        )
        data += gains[:, list(idx)] @ sources * _BACKGROUND_UV

    # Rhythms: occipital alpha, left and right mu.
    events: list[SimEvent] = []
    rhythms = (
        # label, patch of radial dipoles (lat, az), amplitude µV, centre Hz, gaps s, tonic,
        # second harmonic
        ("alpha", ((10.0, -162.0), (10.0, 162.0)), _ALPHA_UV, (9.5, 10.5), (0.3, 2.0), 0.15, 0.0),
        ("mu-left", ((45.0, -90.0),), _MU_UV, (10.0, 11.5), (0.5, 2.5), 0.1, 0.2),
        ("mu-right", ((45.0, 90.0),), _MU_UV, (10.0, 11.5), (0.5, 2.5), 0.1, 0.2),
    )
    for k, (label, patch, amplitude, centre, gaps, tonic, harmonic) in enumerate(rhythms):
        rhythm, bursts = _burst_rhythm(
            _rng(seed, _KEY_RHYTHM, k), n, sfreq, centre, gaps, tonic, harmonic
        )
        data += np.outer(_patch_gain(electrodes, patch) * amplitude, rhythm)
        events.extend(SimEvent(onset, dur, label) for onset, dur in bursts)

    # Blinks: strongest at Fp1/Fp2, falling off with the angle from the eyes.
    wave, blinks = _blinks(_rng(seed, _KEY_BLINK), n, sfreq)
    eyes = [_on_sphere(-20.0, -25.0), _on_sphere(-20.0, 25.0)]
    fall_deg = 25.0

    def eye_gain(points: np.ndarray) -> np.ndarray:
        return sum(np.exp(-_angle_deg(points, eye) / fall_deg) for eye in eyes)

    fp = np.array([all_positions["Fp1"], all_positions["Fp2"]])
    data += np.outer(eye_gain(electrodes) / eye_gain(fp).mean(), wave)
    events.extend(SimEvent(onset, dur, "blink") for onset, dur in blinks)

    # Line noise: common 50 Hz with per-channel pick-up, slowly fluctuating; amplifier noise.
    line_rng = _rng(seed, _KEY_LINE)
    line_phase = line_rng.uniform(-math.pi, math.pi)
    line_level = 1.0 + 0.2 * _lowpass_noise(line_rng, n, sfreq, 0.2)
    t = np.arange(n) / sfreq
    line = np.cos(2.0 * math.pi * LINE_HZ * t + line_phase)
    if 3.0 * LINE_HZ < 0.45 * sfreq:
        line += 0.2 * np.cos(2.0 * math.pi * 3.0 * LINE_HZ * t + 3.0 * line_phase)
    line *= line_level
    for row, index in enumerate(canonical):
        channel_rng = _rng(seed, _KEY_SENSOR, index)
        pickup_uv = math.exp(channel_rng.uniform(math.log(1.0), math.log(5.0)))
        data[row] += pickup_uv * line + 0.7 * channel_rng.standard_normal(n)

    events.sort(key=lambda e: (e.onset_s, e.description))
    return np.ascontiguousarray(data), ch_names, sfreq, events


# --------------------------------------------------------------------------- writers


def _to_int16(data_uv: np.ndarray) -> np.ndarray:
    digital = np.rint(np.asarray(data_uv, dtype=np.float64) / RESOLUTION_UV)
    return np.clip(digital, -32768, 32767).astype("<i2")


def _field(value: object, width: int) -> bytes:
    text = str(value)
    if len(text) > width or not text.isascii():
        raise UsageError(f"EDF header field {text!r} does not fit in {width} ASCII characters.")
    return text.ljust(width).encode("ascii")


def _edf_number(value: float) -> str:
    text = f"{value:.10g}"
    return text if len(text) <= 8 else f"{value:.6g}"


def _tal(onset_s: float, duration_s: float | None, text: str) -> bytes:
    head = f"+{onset_s:.6f}".rstrip("0").rstrip(".")
    if duration_s is not None:
        head += f"\x15{duration_s:.6f}".rstrip("0").rstrip(".")
    return (head + "\x14" + text + "\x14\x00").encode("utf-8")


def write_edf(
    path: str | Path,
    data_uv: np.ndarray,
    ch_names: list[str],
    sfreq: float,
    events: list[SimEvent] = (),
    recording_id: str = "closedloop_simulate",
) -> None:
    """Write an EDF+ file (16-bit, 0.1 µV steps, ±3276.8 µV), deterministically.

    The header carries the fixed start date 01.01.1985 00:00:00 (the EDF convention for an
    unknown date) and no other varying field; events become EDF+ annotations.

    Raises
    ------
    UsageError
        When the rate is not a whole number of Hz or the length not a whole number of seconds
        (EDF stores 1 s data records).
    """
    data_uv = np.asarray(data_uv)
    n_channels, n = data_uv.shape
    spr = round(sfreq)
    if abs(sfreq - spr) > 1e-9:
        raise UsageError(f"EDF needs a whole number of samples per second; got sfreq={sfreq!r}.")
    if n == 0 or n % spr:
        raise UsageError(
            f"EDF stores whole seconds; got {n} samples at {spr} Hz ({n / spr:g} s). "
            "Choose a whole number of seconds, or write BrainVision (.vhdr)."
        )
    n_records = n // spr

    per_record: list[list[bytes]] = [[_tal(r, None, "")] for r in range(n_records)]
    for event in events:
        record = min(int(event.onset_s), n_records - 1)
        per_record[record].append(_tal(event.onset_s, event.duration_s, event.description))
    ann_bytes = max(sum(len(t) for t in tals) for tals in per_record)
    ann_samples = max(15, (ann_bytes + 1) // 2)
    annotations = np.zeros((n_records, 2 * ann_samples), dtype=np.uint8)
    for r, tals in enumerate(per_record):
        blob = b"".join(tals)
        annotations[r, : len(blob)] = np.frombuffer(blob, dtype=np.uint8)

    n_signals = n_channels + 1
    labels = list(ch_names) + ["EDF Annotations"]
    pmin, pmax = -32768 * RESOLUTION_UV, 32767 * RESOLUTION_UV
    header = b"".join(
        [
            _field("0", 8),
            _field("X X X X", 80),
            _field(f"Startdate 01-JAN-1985 X X {recording_id}", 80),
            _field("01.01.85", 8),
            _field("00.00.00", 8),
            _field(256 * (n_signals + 1), 8),
            _field("EDF+C", 44),
            _field(n_records, 8),
            _field(1, 8),
            _field(n_signals, 4),
            *[_field(label, 16) for label in labels],
            *[_field("simulated" if i < n_channels else "", 80) for i in range(n_signals)],
            *[_field("uV" if i < n_channels else "", 8) for i in range(n_signals)],
            *[_field(_edf_number(pmin) if i < n_channels else -1, 8) for i in range(n_signals)],
            *[_field(_edf_number(pmax) if i < n_channels else 1, 8) for i in range(n_signals)],
            *[_field(-32768, 8) for _ in range(n_signals)],
            *[_field(32767, 8) for _ in range(n_signals)],
            *[_field("", 80) for _ in range(n_signals)],
            *[_field(spr if i < n_channels else ann_samples, 8) for i in range(n_signals)],
            *[_field("", 32) for _ in range(n_signals)],
        ]
    )
    samples = _to_int16(data_uv).reshape(n_channels, n_records, spr).transpose(1, 0, 2)
    records = np.concatenate([samples.reshape(n_records, -1).view(np.uint8), annotations], axis=1)
    with open(path, "wb") as f:
        f.write(header)
        f.write(records.tobytes())


def write_brainvision(
    path: str | Path,
    data_uv: np.ndarray,
    ch_names: list[str],
    sfreq: float,
    events: list[SimEvent] = (),
) -> None:
    """Write BrainVision ``.vhdr`` + ``.vmrk`` + ``.eeg`` (16-bit, 0.1 µV steps), deterministically.

    Events become ``Comment`` markers (MNE reads them as ``"Comment/<description>"``).
    """
    vhdr = Path(path)
    eeg, vmrk = vhdr.with_suffix(".eeg"), vhdr.with_suffix(".vmrk")
    data_uv = np.asarray(data_uv)
    n_channels = data_uv.shape[0]
    interval_us = 1e6 / sfreq
    channel_lines = [f"Ch{i + 1}={name},,{RESOLUTION_UV:g},µV" for i, name in enumerate(ch_names)]
    vhdr.write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n"
        "; simulated EEG written by closedloop simulate\n\n"
        "[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={eeg.name}\nMarkerFile={vmrk.name}\n"
        "DataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        f"NumberOfChannels={n_channels}\nSamplingInterval={interval_us!r}\n\n"
        "[Binary Infos]\nBinaryFormat=INT_16\n\n"
        "[Channel Infos]\n" + "\n".join(channel_lines) + "\n",
        encoding="utf-8",
    )
    markers = ["Mk1=New Segment,,1,1,0"]
    for k, event in enumerate(events, start=2):
        position = round(event.onset_s * sfreq) + 1
        length = max(1, round(event.duration_s * sfreq))
        markers.append(f"Mk{k}=Comment,{event.description},{position},{length},0")
    vmrk.write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n\n"
        f"[Common Infos]\nCodepage=UTF-8\nDataFile={eeg.name}\n\n"
        "[Marker Infos]\n" + "\n".join(markers) + "\n",
        encoding="utf-8",
    )
    eeg.write_bytes(np.ascontiguousarray(_to_int16(data_uv).T).tobytes())


def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        accepted = ", ".join(f"{ext} ({name})" for ext, name in FORMATS.items())
        raise UsageError(f"cannot write {path.name!r}: the output extension must be {accepted}.")
    if not path.parent.is_dir():
        raise UsageError(
            f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist."
        )
    return path


def write_recording(
    path: str | Path,
    data_uv: np.ndarray,
    ch_names: list[str],
    sfreq: float,
    events: list[SimEvent] = (),
) -> list[Path]:
    """Write a recording in the format its extension names (``.edf`` or ``.vhdr``).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    UsageError
        For another extension, a missing folder, or data the format cannot hold.
    """
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix == ".edf":
        write_edf(path, data_uv, ch_names, sfreq, events)
        return [path]
    write_brainvision(path, data_uv, ch_names, sfreq, events)
    return [path, path.with_suffix(".vmrk"), path.with_suffix(".eeg")]


# --------------------------------------------------------------------------- command
