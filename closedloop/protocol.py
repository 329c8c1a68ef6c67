"""Protocols: what to listen to and when to stimulate, loaded from TOML files or presets.

A protocol is a tree of frozen dataclasses (:class:`Protocol` and its sections). Every value
is checked when a section is built, so an invalid protocol cannot exist; loading a file adds
the file's name to the message and rejects unknown keys with a "did you mean". The file
format is the protocol section of ../shared/CONTRACTS.md; presets live in
``closedloop/presets/*.toml``.

Absolute limits that no protocol can raise (enforced again at delivery by
:class:`closedloop.safety.SafetyGate`):

- ``MIN_INTERVAL_FLOOR_S`` = 0.1 s: no two triggers (or bursts) closer than this, so the
  trigger rate never exceeds ``MAX_TRIGGER_RATE_HZ`` = 10 Hz;
- ``MIN_PULSE_INTERVAL_S`` = 0.005 s and ``MAX_PULSES_PER_TRIGGER`` = 10 for pulse patterns;
  a burst must end at least ``MIN_INTERVAL_FLOOR_S`` before the next trigger may start.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from closedloop.channels import normalize_name
from closedloop.errors import ProtocolError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "MAX_PULSES_PER_TRIGGER",
    "MAX_TRIGGER_RATE_HZ",
    "MIN_INTERVAL_FLOOR_S",
    "MIN_PULSE_INTERVAL_S",
    "ArtifactSettings",
    "BandSettings",
    "DisplaySettings",
    "EstimatorSettings",
    "FeedbackSettings",
    "Protocol",
    "SignalSettings",
    "SoundSettings",
    "TriggerSettings",
    "list_presets",
    "load_protocol",
    "parse_protocol",
    "preset_text",
    "protocol_to_toml",
    "with_overrides",
]

MIN_INTERVAL_FLOOR_S = 0.1
MAX_TRIGGER_RATE_HZ = 1.0 / MIN_INTERVAL_FLOOR_S
MIN_PULSE_INTERVAL_S = 0.005
MAX_PULSES_PER_TRIGGER = 10
MAX_TECHNICAL_DELAY_S = 1.0

REFERENCES = ("none", "average", "hjorth", "bipolar", "weights")
KINDS = ("phase", "feedback")
MEASURES = ("power", "ratio", "asymmetry")
NOTCH_HZ = (0.0, 50.0, 60.0)
DIRECTIONS = ("up", "down")
SHAPES = ("bar", "circle")
TONE_MAPS = ("pitch", "loudness")
#: The participant's tone stays within what a small speaker plays and an ear finds comfortable.
TONE_HZ_LIMITS = (50.0, 4000.0)
STIMULI = ("pink", "wav")
TONES = ("pitch", "loudness", "off")
DEVICE_LATENCIES = ("low", "high")
#: The longest sound stimulus (a burst or a WAV file), seconds.
MAX_STIMULUS_S = 2.0

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_GATE = re.compile(r"^\s*(percentile|uv|running|rate)\s*:\s*([^\s]+)\s*$", re.IGNORECASE)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


_MISSING = object()


class _FieldError(ProtocolError):
    """A bad value in one section; :func:`parse_protocol` prefixes the file's name."""

    def __init__(self, key: str, value: Any, accepted: str) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted
        if value is _MISSING:
            super().__init__(f"{key} is missing: {accepted}.")
        else:
            super().__init__(f"{key} = {_show(value)} is not accepted: {accepted}.")


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (strings quoted, lists bracketed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # as a TOML basic string: control characters escaped, so a message stays on one line
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
        return '"' + escaped + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return repr(value)


# -- value checks: each returns the normalised value or raises _FieldError -------------------


def _number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    what: str = "a number",
    note: str = "",
) -> float:
    accepted = f"expected {what}{_range_text(low, high, low_open)}{note}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _FieldError(key, value, accepted)
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and number > high
    if too_low or too_high:
        raise _FieldError(key, value, accepted)
    return number


def _range_text(low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


def _integer(key: str, value: Any, *, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise _FieldError(key, value, f"expected a whole number {bound}")
    return int(value)


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(key, value, "expected true or false")
    return value


def _text(key: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise _FieldError(
            key, value, "expected a non-empty string" if not allow_empty else "expected a string"
        )
    return value.strip() if not allow_empty else value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    options = " | ".join(f'"{c}"' for c in choices)
    if not isinstance(value, str):
        raise _FieldError(key, value, f"expected one of {options}")
    lowered = value.strip().lower()
    if lowered not in choices:
        raise _FieldError(key, value, f"expected one of {options}{_did_you_mean(lowered, choices)}")
    return lowered


def _channel_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _FieldError(key, value, 'expected a list of channel names, e.g. ["F4", "F3"]')
    names = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _FieldError(key, value, "expected a list of non-empty channel names")
        names.append(item.strip())
    seen = [normalize_name(n) for n in names]
    if len(set(seen)) != len(seen):
        raise _FieldError(key, value, "expected each channel once")
    return tuple(names)


def _band_pair(key: str, value: Any) -> tuple[float, float]:
    accepted = "expected two frequencies [low, high] in Hz with 0 < low < high"
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _FieldError(key, value, accepted)
    low, high = value
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _FieldError(key, value, accepted)
    if not 0 < low < high:
        raise _FieldError(key, value, accepted)
    return (float(low), float(high))


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# -- the sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalSettings:
    """Which signal to listen to: one channel and its spatial reference.

    Parameters
    ----------
    channel : str
        Channel name, matched across vendor spellings (``closedloop.channels``).
    reference : str
        ``"none"``, ``"average"``, ``"hjorth"`` (channel minus the mean of its neighbours),
        ``"bipolar"`` (channel minus ``bipolar_with``) or ``"weights"`` (the weighted sum of
        the channels in ``weights``).
    neighbors : tuple of str
        Hjorth neighbours; empty means the default from the standard 10-05 layout.
    bipolar_with : str or None
        The second channel of a bipolar derivation; required for ``"bipolar"`` only.
    weights : dict of str to float
        ``{channel: weight}`` for ``"weights"`` only.
    notch_hz : float
        Line-noise notch (with harmonics): 0 (off), 50 or 60.
    """

    channel: str
    reference: str = "none"
    neighbors: tuple[str, ...] = ()
    bipolar_with: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    notch_hz: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "channel", _text("channel", self.channel))
        ref = _choice("reference", self.reference, REFERENCES)
        _set(self, "reference", ref)
        # Keys for another reference are checked and kept but not used (the contract's
        # example lists bipolar_with beside reference = "hjorth").
        neighbors = _channel_list("neighbors", self.neighbors)
        if normalize_name(self.channel) in {normalize_name(n) for n in neighbors}:
            raise _FieldError(
                "neighbors",
                list(neighbors),
                f'expected channels around "{self.channel}", not the channel itself',
            )
        _set(self, "neighbors", neighbors)
        if self.bipolar_with is not None:
            other = _text("bipolar_with", self.bipolar_with)
            if normalize_name(other) == normalize_name(self.channel):
                raise _FieldError(
                    "bipolar_with", other, f'expected a channel other than "{self.channel}"'
                )
            _set(self, "bipolar_with", other)
        elif ref == "bipolar":
            raise _FieldError(
                "bipolar_with",
                _MISSING,
                'reference = "bipolar" needs bipolar_with, the second channel',
            )
        weights = self.weights
        if not isinstance(weights, dict):
            raise _FieldError("weights", weights, "expected a table {channel = weight}")
        clean: dict[str, float] = {}
        for name, w in weights.items():
            if not isinstance(name, str) or not name.strip():
                raise _FieldError("weights", weights, "expected channel names as keys")
            clean[name.strip()] = _number(f"weights.{name}", w, what="a finite weight")
        if ref == "weights" and not clean:
            raise _FieldError(
                "weights",
                _MISSING,
                'reference = "weights" needs a [signal.weights] table, e.g. C3 = 1.0, FC3 = -0.25',
            )
        if ref == "weights" and all(w == 0.0 for w in clean.values()):
            raise _FieldError("weights", weights, "expected at least one non-zero weight")
        _set(self, "weights", clean)
        notch = _number("notch_hz", self.notch_hz, what="0 (off), 50 or 60")
        if notch not in NOTCH_HZ:
            raise _FieldError("notch_hz", self.notch_hz, "expected 0 (off), 50 or 60")
        _set(self, "notch_hz", notch)


@dataclass(frozen=True)
class BandSettings:
    """The frequency band whose phase (or power) the protocol follows.

    ``low_hz``/``high_hz`` are the band, or the fallback when ``individual`` is true and the
    baseline shows no peak in ``peak_search_hz``; an individual band is peak +/-
    ``half_width_hz``. The upper limit (below sfreq/2) is checked against the data.
    """

    low_hz: float
    high_hz: float
    individual: bool = False
    peak_search_hz: tuple[float, float] = (7.0, 14.0)
    half_width_hz: float = 2.0

    def __post_init__(self) -> None:
        low = _number("low_hz", self.low_hz, low=0.0, low_open=True, what="a frequency in Hz")
        high = _number("high_hz", self.high_hz, low=0.0, low_open=True, what="a frequency in Hz")
        if high <= low:
            raise _FieldError(
                "high_hz", self.high_hz, f"expected a frequency above low_hz = {low:g} Hz"
            )
        _set(self, "low_hz", low)
        _set(self, "high_hz", high)
        _set(self, "individual", _boolean("individual", self.individual))
        _set(self, "peak_search_hz", _band_pair("peak_search_hz", self.peak_search_hz))
        half = _number(
            "half_width_hz", self.half_width_hz, low=0.0, low_open=True, what="a half width in Hz"
        )
        if self.individual and half >= self.peak_search_hz[0]:
            raise _FieldError(
                "half_width_hz",
                self.half_width_hz,
                "expected a half width below the lowest searched peak "
                f"({self.peak_search_hz[0]:g} Hz), so that the band stays above 0 Hz",
            )
        _set(self, "half_width_hz", half)


@dataclass(frozen=True)
class EstimatorSettings:
    """The phase estimator: a name from ``closedloop.estimators`` and its parameters."""

    method: str = "auto"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        method = _text("method", self.method).lower()
        known = _available_methods()
        if known is not None and method not in known:
            options = " | ".join(f'"{m}"' for m in known)
            raise _FieldError(
                "method", self.method, f"expected one of {options}{_did_you_mean(method, known)}"
            )
        _set(self, "method", method)
        if not isinstance(self.params, dict):
            raise _FieldError("params", self.params, "expected a table of estimator parameters")
        _set(self, "params", dict(self.params))


def _available_methods() -> tuple[str, ...] | None:
    """Names ``closedloop.estimators`` accepts, or None while that package cannot say."""
    try:
        from closedloop.estimators import available_methods
    except ImportError:
        return None
    names = tuple(str(m).lower() for m in available_methods())
    return names if "auto" in names else ("auto", *names)


@dataclass(frozen=True)
class TriggerSettings:
    """When to trigger: target phase, gates, timing and the pulse pattern.

    ``amplitude_gate`` is ``"percentile:P"`` (P in [0, 100] of the baseline band amplitude),
    ``"uv:X"`` (X > 0 µV), ``"running:P"`` (the P-th percentile of the amplitude over the last
    ``gate_window_s``, seeded by the baseline), ``"rate:N"`` (N triggers per minute, at most
    ``60 / min_interval_s``: the running percentile adapts to hold it) or ``"none"``;
    :attr:`gate_kind` and :attr:`gate_value` give it parsed. A target phase of -180 is stored
    as 180.
    """

    target_phase_deg: float = 0.0
    phase_tolerance_deg: float = 30.0
    min_interval_s: float = 2.0
    min_interval_jitter_s: float = 0.0
    amplitude_gate: str = "percentile:50"
    gate_window_s: float = 60.0
    baseline_s: float = 30.0
    max_triggers: int = 0
    technical_delay_s: float = 0.0
    event: str = "stim"
    random_phase: bool = False
    pulses: int = 1
    pulse_interval_s: float = 0.01

    def __post_init__(self) -> None:
        phase = _number(
            "target_phase_deg",
            self.target_phase_deg,
            low=-180.0,
            high=180.0,
            what="a phase in degrees (0 = peak, 180 = trough)",
        )
        _set(self, "target_phase_deg", 180.0 if phase == -180.0 else phase)
        _set(
            self,
            "phase_tolerance_deg",
            _number(
                "phase_tolerance_deg",
                self.phase_tolerance_deg,
                low=0.0,
                high=180.0,
                low_open=True,
                what="an angle in degrees",
            ),
        )
        _set(
            self,
            "min_interval_s",
            _number(
                "min_interval_s",
                self.min_interval_s,
                low=MIN_INTERVAL_FLOOR_S,
                what="seconds",
                note=" (the absolute floor, MIN_INTERVAL_FLOOR_S; at most "
                f"{MAX_TRIGGER_RATE_HZ:g} triggers per second)",
            ),
        )
        _set(
            self,
            "min_interval_jitter_s",
            _number("min_interval_jitter_s", self.min_interval_jitter_s, low=0.0, what="seconds"),
        )
        _set(self, "amplitude_gate", _parse_gate(self.amplitude_gate)[0])
        _set(
            self,
            "gate_window_s",
            _number(
                "gate_window_s", self.gate_window_s, low=1.0, high=3600.0, what="seconds"
            ),
        )
        if self.gate_kind == "rate" and self.gate_value > 60.0 / self.min_interval_s + 1e-9:
            raise _FieldError(
                "amplitude_gate",
                self.amplitude_gate,
                f"expected a rate of at most 60 / min_interval_s = {60.0 / self.min_interval_s:g} "
                "triggers per minute",
            )
        _set(self, "baseline_s", _number("baseline_s", self.baseline_s, low=0.0, what="seconds"))
        _set(self, "max_triggers", _integer("max_triggers", self.max_triggers, low=0))
        _set(
            self,
            "technical_delay_s",
            _number(
                "technical_delay_s",
                self.technical_delay_s,
                low=0.0,
                high=MAX_TECHNICAL_DELAY_S,
                what="seconds",
            ),
        )
        event = _text("event", self.event)
        if any(not ch.isprintable() for ch in event):
            raise _FieldError("event", self.event, "expected printable text")
        _set(self, "event", event)
        _set(self, "random_phase", _boolean("random_phase", self.random_phase))
        pulses = _integer("pulses", self.pulses, low=1, high=MAX_PULSES_PER_TRIGGER)
        _set(self, "pulses", pulses)
        spacing = _number(
            "pulse_interval_s",
            self.pulse_interval_s,
            low=MIN_PULSE_INTERVAL_S,
            what="seconds",
            note=" (the absolute floor, MIN_PULSE_INTERVAL_S)",
        )
        _set(self, "pulse_interval_s", spacing)
        shortest = self.burst_duration_s + MIN_INTERVAL_FLOOR_S
        if pulses > 1 and self.min_interval_s < shortest - 1e-12:
            raise _FieldError(
                "min_interval_s",
                self.min_interval_s,
                f"a burst of {pulses} pulses {spacing:g} s apart lasts "
                f"{self.burst_duration_s:g} s, so min_interval_s must be at least {shortest:g} s "
                f"(the burst plus MIN_INTERVAL_FLOOR_S = {MIN_INTERVAL_FLOOR_S:g} s)",
            )

    @property
    def gate_kind(self) -> str:
        """``"percentile"``, ``"uv"``, ``"running"``, ``"rate"`` or ``"none"``."""
        return _parse_gate(self.amplitude_gate)[1]

    @property
    def gate_value(self) -> float:
        """The percentile (0-100), the microvolt threshold or the triggers per minute; 0.0 for
        ``"none"``."""
        return _parse_gate(self.amplitude_gate)[2]

    @property
    def burst_duration_s(self) -> float:
        """Time from the first to the last pulse of one trigger."""
        return (self.pulses - 1) * self.pulse_interval_s


def _parse_gate(value: Any) -> tuple[str, str, float]:
    """``(normalised text, kind, value)`` of an amplitude gate."""
    accepted = (
        'expected "percentile:P" with P from 0 to 100, "uv:X" with X > 0 (microvolts), '
        '"running:P" with P from 0 to 100, "rate:N" with N > 0 (triggers per minute), or "none"'
    )
    if not isinstance(value, str):
        raise _FieldError("amplitude_gate", value, accepted)
    if value.strip().lower() == "none":
        return "none", "none", 0.0
    match = _GATE.match(value)
    if match is None:
        raise _FieldError("amplitude_gate", value, accepted)
    kind = match.group(1).lower()
    try:
        number = float(match.group(2))
    except ValueError:
        raise _FieldError("amplitude_gate", value, accepted) from None
    if not math.isfinite(number):
        raise _FieldError("amplitude_gate", value, accepted)
    if kind in ("percentile", "running") and not 0.0 <= number <= 100.0:
        raise _FieldError("amplitude_gate", value, accepted)
    if kind in ("uv", "rate") and number <= 0.0:
        raise _FieldError("amplitude_gate", value, accepted)
    return f"{kind}:{number:g}", kind, number


@dataclass(frozen=True)
class ArtifactSettings:
    """Artifact hold-off: triggering stops for ``hold_s`` after the last bad sample.

    A sample is bad when it is NaN/Inf, above ``max_abs_uv`` on the derived DC-removed
    signal, on a channel flatter than ``flat_uv`` peak-to-peak over ``flat_window_s``, or
    at/above ``saturation_uv`` in the raw data (0 = no saturation check).
    """

    enabled: bool = True
    max_abs_uv: float = 200.0
    flat_uv: float = 0.5
    flat_window_s: float = 0.5
    saturation_uv: float = 0.0
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "enabled", _boolean("enabled", self.enabled))
        _set(
            self,
            "max_abs_uv",
            _number("max_abs_uv", self.max_abs_uv, low=0.0, low_open=True, what="microvolts"),
        )
        _set(
            self,
            "flat_uv",
            _number("flat_uv", self.flat_uv, low=0.0, what="microvolts (0 = no flat check)"),
        )
        _set(
            self,
            "flat_window_s",
            _number("flat_window_s", self.flat_window_s, low=0.0, low_open=True, what="seconds"),
        )
        _set(
            self,
            "saturation_uv",
            _number("saturation_uv", self.saturation_uv, low=0.0, what="microvolts (0 = off)"),
        )
        _set(self, "hold_s", _number("hold_s", self.hold_s, low=0.0, what="seconds"))


@dataclass(frozen=True)
class FeedbackSettings:
    """Neurofeedback value for ``kind = "feedback"``.

    ``"power"``: mean band power over ``channels`` (empty: the signal channel);
    ``"ratio"``: power in the band / power in ``ratio_band_hz``; ``"asymmetry"``:
    ln P(channels[0]) - ln P(channels[1]). Computed over ``window_s``, smoothed with time
    constant ``smoothing_s`` (0 = none), z-scored against the baseline if ``zscore``.
    """

    measure: str = "power"
    channels: tuple[str, ...] = ()
    window_s: float = 1.0
    smoothing_s: float = 0.5
    zscore: bool = True
    ratio_band_hz: tuple[float, float] = (4.0, 8.0)

    def __post_init__(self) -> None:
        measure = _choice("measure", self.measure, MEASURES)
        _set(self, "measure", measure)
        channels = _channel_list("channels", self.channels)
        if measure == "asymmetry" and len(channels) != 2:
            raise _FieldError(
                "channels",
                list(channels),
                'measure = "asymmetry" needs exactly two channels, '
                'e.g. ["F4", "F3"] for ln P(F4) - ln P(F3)',
            )
        _set(self, "channels", channels)
        _set(
            self,
            "window_s",
            _number("window_s", self.window_s, low=0.0, low_open=True, what="seconds"),
        )
        _set(
            self,
            "smoothing_s",
            _number("smoothing_s", self.smoothing_s, low=0.0, what="seconds (0 = no smoothing)"),
        )
        _set(self, "zscore", _boolean("zscore", self.zscore))
        _set(self, "ratio_band_hz", _band_pair("ratio_band_hz", self.ratio_band_hz))


def _range_pair(key: str, value: Any, *, low: float | None = None, high: float | None = None,
                what: str = "numbers") -> tuple[float, float]:
    """Two increasing numbers ``[a, b]`` (within ``low``/``high`` when given)."""
    bounds = _range_text(low, high, False)
    accepted = f"expected two {what} [low, high] with low < high{bounds and ', each' + bounds}"
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _FieldError(key, value, accepted)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _FieldError(key, value, accepted)
        if (low is not None and v < low) or (high is not None and v > high):
            raise _FieldError(key, value, accepted)
    a, b = float(value[0]), float(value[1])
    if not a < b:
        raise _FieldError(key, value, accepted)
    return (a, b)


def _colour(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _COLOUR.match(value.strip()):
        raise _FieldError(key, value, 'expected a colour as "#rrggbb", e.g. "#3cb371"')
    return value.strip().lower()


@dataclass(frozen=True)
class DisplaySettings:
    """What the participant sees and hears (``closedloop ui``, the ``/participant`` page).

    A feedback protocol's value moves a bar (its height) or a circle (its size) across the
    screen: ``range`` is the value shown empty (first) and full (second), in the feedback's own
    units (z-scores when ``[feedback] zscore`` is true); ``direction = "down"`` fills it as the
    value falls instead. ``smoothing_s`` smooths the display on top of the engine's smoothing
    (exponential, time constant in seconds; 0 = none). The shape has ``color``, or, with
    ``color_low`` given, a colour blended from ``color_low`` (empty) to ``color`` (full). With
    ``tone = true`` the page offers a tone (started by a click) whose pitch (``pitch_hz``, from
    empty to full) or loudness (``loudness``, gain 0-1) follows the value. Phase protocols show
    a fixation cross and ignore the rest.
    """

    direction: str = "up"
    range: tuple[float, float] = (-2.0, 2.0)
    smoothing_s: float = 0.25
    shape: str = "bar"
    color: str = "#3cb371"
    color_low: str | None = None
    tone: bool = False
    tone_maps: str = "pitch"
    pitch_hz: tuple[float, float] = (220.0, 880.0)
    loudness: tuple[float, float] = (0.05, 0.5)

    def __post_init__(self) -> None:
        _set(self, "direction", _choice("direction", self.direction, DIRECTIONS))
        _set(self, "range", _range_pair("range", self.range, what="feedback values"))
        _set(
            self,
            "smoothing_s",
            _number("smoothing_s", self.smoothing_s, low=0.0, high=10.0,
                    what="seconds (0 = no smoothing)"),
        )
        _set(self, "shape", _choice("shape", self.shape, SHAPES))
        _set(self, "color", _colour("color", self.color))
        if self.color_low is not None:
            _set(self, "color_low", _colour("color_low", self.color_low))
        _set(self, "tone", _boolean("tone", self.tone))
        _set(self, "tone_maps", _choice("tone_maps", self.tone_maps, TONE_MAPS))
        _set(
            self,
            "pitch_hz",
            _range_pair("pitch_hz", self.pitch_hz, low=TONE_HZ_LIMITS[0], high=TONE_HZ_LIMITS[1],
                        what="frequencies in Hz"),
        )
        _set(self, "loudness", _range_pair("loudness", self.loudness, low=0.0, high=1.0,
                                           what="gains"))


@dataclass(frozen=True)
class SoundSettings:
    """What ``run --sound DEVICE`` plays (``closedloop.sound``).

    Phase protocols play ``stimulus`` at each delivered trigger (each pulse of a burst):
    ``"pink"``, a pink-noise burst of ``duration_ms``, or ``"wav"``, the file ``wav`` (mono or
    its first channel, resampled to the device's rate). Either is shaped by raised-cosine onset
    and offset ramps of ``ramp_ms`` and scaled so that its peak is at ``level_db`` dB re digital
    full scale (0 = full scale; the sound pressure this gives depends on the lab's amplifier
    and transducer). Feedback protocols play a continuous tone whose ``tone`` ("pitch" or
    "loudness") follows the feedback value across ``feedback_range`` (clipped beyond it; NaN
    feedback, a hold or a pause fades it out): pitch from ``tone_span_octaves`` below to as
    many above ``tone_hz`` (log scale) at ``tone_level_db``; loudness from ``tone_depth_db``
    below ``tone_level_db`` up to it, at ``tone_hz``. Pitch and level glide with time constant
    ``tone_smoothing_ms``. ``sample_rate_hz`` 0 takes the device's default rate;
    ``device_latency`` is PortAudio's suggested latency: "low", "high" (for devices that
    underrun at "low") or seconds.
    """

    stimulus: str = "pink"
    duration_ms: float = 50.0
    level_db: float = -20.0
    ramp_ms: float = 5.0
    wav: str = ""
    sample_rate_hz: float = 0.0
    device_latency: str | float = "low"
    tone: str = "pitch"
    tone_hz: float = 440.0
    tone_span_octaves: float = 1.0
    tone_level_db: float = -20.0
    tone_depth_db: float = 30.0
    feedback_range: tuple[float, float] = (-2.0, 2.0)
    tone_smoothing_ms: float = 50.0

    def __post_init__(self) -> None:
        stimulus = _choice("stimulus", self.stimulus, STIMULI)
        _set(self, "stimulus", stimulus)
        longest_ms = MAX_STIMULUS_S * 1e3
        duration = _number(
            "duration_ms", self.duration_ms, low=0.0, high=longest_ms, low_open=True,
            what="milliseconds",
        )
        _set(self, "duration_ms", duration)
        _set(self, "level_db", _number("level_db", self.level_db, low=-120.0, high=0.0,
                                       what="a peak level in dB re full scale"))
        ramp = _number("ramp_ms", self.ramp_ms, low=0.0, what="milliseconds")
        if stimulus == "pink" and ramp > duration / 2.0:
            raise _FieldError(
                "ramp_ms", self.ramp_ms,
                f"expected at most half of duration_ms = {duration:g} (onset and offset ramps "
                "must fit in the burst)",
            )
        _set(self, "ramp_ms", ramp)
        if not isinstance(self.wav, str):
            raise _FieldError("wav", self.wav, "expected the path of a WAV file as a string")
        wav = self.wav.strip()
        if stimulus == "wav" and not wav:
            raise _FieldError("wav", _MISSING, 'stimulus = "wav" needs wav, the path of a WAV file')
        _set(self, "wav", wav)
        rate = _number("sample_rate_hz", self.sample_rate_hz, low=0.0, high=384000.0,
                       what="a rate in Hz (0 = the device's default)")
        if 0.0 < rate < 8000.0:
            raise _FieldError("sample_rate_hz", self.sample_rate_hz,
                              "expected 0 (the device's default) or a rate from 8000 to 384000 Hz")
        _set(self, "sample_rate_hz", rate)
        latency = self.device_latency
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            latency = _number("device_latency", latency, low=0.001, high=1.0,
                              what='"low", "high" or seconds')
        else:
            latency = _choice("device_latency", latency, DEVICE_LATENCIES)
        _set(self, "device_latency", latency)
        _set(self, "tone", _choice("tone", self.tone, TONES))
        _set(self, "tone_hz", _number("tone_hz", self.tone_hz, low=20.0, high=20000.0,
                                      what="a frequency in Hz"))
        span = _number("tone_span_octaves", self.tone_span_octaves, low=0.0, high=4.0,
                       what="octaves")
        if self.tone_hz * 2.0**span > 20000.0 or self.tone_hz / 2.0**span < 20.0:
            raise _FieldError(
                "tone_span_octaves", self.tone_span_octaves,
                f"expected a span that keeps tone_hz = {self.tone_hz:g} Hz times 2^(+/-span) "
                "within 20-20000 Hz",
            )
        _set(self, "tone_span_octaves", span)
        _set(self, "tone_level_db", _number("tone_level_db", self.tone_level_db, low=-120.0,
                                            high=0.0, what="a peak level in dB re full scale"))
        _set(self, "tone_depth_db", _number("tone_depth_db", self.tone_depth_db, low=0.0,
                                            high=120.0, what="decibels"))
        _set(self, "feedback_range", _band_pair_any("feedback_range", self.feedback_range))
        _set(self, "tone_smoothing_ms", _number("tone_smoothing_ms", self.tone_smoothing_ms,
                                                low=0.0, high=10000.0, what="milliseconds"))


def _band_pair_any(key: str, value: Any) -> tuple[float, float]:
    """Two finite numbers ``[low, high]`` with low < high (negative values allowed)."""
    accepted = "expected two numbers [low, high] with low < high"
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _FieldError(key, value, accepted)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _FieldError(key, value, accepted)
    low, high = float(value[0]), float(value[1])
    if not low < high:
        raise _FieldError(key, value, accepted)
    return (low, high)


@dataclass(frozen=True)
class Protocol:
    """A complete, validated protocol.

    Parameters
    ----------
    name : str
        Free text; names the protocol in markers and outputs.
    kind : str
        ``"phase"`` (phase-locked triggers) or ``"feedback"`` (neurofeedback values).
    signal, band, estimator, trigger, artifact, feedback, display, sound
        The sections. Every protocol has all of them; a feedback protocol uses only
        ``baseline_s`` from ``trigger``, a phase protocol does not use ``feedback`` (and shows
        the participant a fixation cross whatever ``display`` says); ``sound`` is used by
        ``run --sound`` only.
    description : str
        One or more lines; the first is the summary in ``closedloop protocols``.
    source : str
        Where it came from: the file path or the preset name.
    """

    name: str
    kind: str
    signal: SignalSettings
    band: BandSettings
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    artifact: ArtifactSettings = field(default_factory=ArtifactSettings)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    display: DisplaySettings = field(default_factory=DisplaySettings)
    sound: SoundSettings = field(default_factory=SoundSettings)
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        _set(self, "name", _text("name", self.name))
        _set(self, "kind", _choice("kind", self.kind, KINDS))
        _set(self, "description", _text("description", self.description, allow_empty=True))
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ProtocolError(
                    f"[{name}] must be a {cls.__name__}, not {type(getattr(self, name)).__name__}."
                )
        trigger = self.trigger
        needs = []
        if self.kind == "phase" and trigger.gate_kind in ("percentile", "running", "rate"):
            needs.append(f'amplitude_gate = "{trigger.amplitude_gate}"')
        if self.band.individual:
            needs.append("[band] individual = true")
        if self.kind == "feedback" and self.feedback.zscore:
            needs.append("[feedback] zscore = true")
        if needs and trigger.baseline_s <= 0.0:
            raise ProtocolError(
                f"[trigger] baseline_s = {trigger.baseline_s:g} is not accepted: "
                f"{' and '.join(needs)} require a baseline; expected seconds > 0."
            )

    @property
    def baseline_s(self) -> float:
        """Seconds of data collected before triggering or feedback starts."""
        return self.trigger.baseline_s

    @property
    def summary(self) -> str:
        """The first line of the description (or the name)."""
        lines = [ln.strip() for ln in self.description.strip().splitlines() if ln.strip()]
        return lines[0] if lines else self.name


_SECTIONS: dict[str, type] = {
    "signal": SignalSettings,
    "band": BandSettings,
    "estimator": EstimatorSettings,
    "trigger": TriggerSettings,
    "artifact": ArtifactSettings,
    "feedback": FeedbackSettings,
    "display": DisplaySettings,
    "sound": SoundSettings,
}
_TOP_KEYS = ("name", "kind", "description")
# sub-tables whose keys are free (channel names, estimator parameters)
_FREE_TABLES = {("signal", "weights"), ("estimator", "params")}


def _section_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown(where: str, key: str, options: list[str]) -> str:
    hint = _did_you_mean(key, options)
    listed = ", ".join(options)
    return f"unknown key {where}{key}{hint}; accepted here: {listed}."


# -- parsing -----------------------------------------------------------------------------------


def parse_protocol(data: dict, source: str) -> Protocol:
    """Build a :class:`Protocol` from parsed TOML.

    Parameters
    ----------
    data : dict
        The TOML document as a dict (``tomllib.loads``).
    source : str
        The file path or preset name, used in messages and stored in ``Protocol.source``.

    Raises
    ------
    ProtocolError
        Naming ``source``, the key, the bad value and what is accepted.
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}expected a TOML table of protocol settings.")
    allowed = [*_TOP_KEYS, *_SECTIONS]
    for key in data:
        if key not in allowed:
            raise ProtocolError(where + _unknown("", key, allowed))
    for key in ("name", "kind"):
        if key not in data:
            accepted = '"phase" or "feedback"' if key == "kind" else "free text"
            raise ProtocolError(f"{where}missing required key {key} (top level, {accepted}).")
    try:
        kind = _choice("kind", data["kind"], KINDS)
    except _FieldError as exc:
        raise ProtocolError(f"{where}{exc}") from None
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ProtocolError(
                f"{where}{name} must be a [{name}] section (a TOML table), not {_show(table)}."
            )
        keys = _section_keys(cls)
        for key, value in table.items():
            if key not in keys:
                raise ProtocolError(where + _unknown(f"[{name}] ", key, keys))
            if isinstance(value, dict) and (name, key) not in _FREE_TABLES:
                raise ProtocolError(f"{where}[{name}] {key} must be a value, not a table.")
        if name == "signal" and "channel" not in table:
            raise ProtocolError(
                f"{where}missing required key [signal] channel "
                f'(the channel to listen to, e.g. "C3").'
            )
        if name == "band" and not table and kind == "feedback":
            table = {"low_hz": 8.0, "high_hz": 13.0}  # feedback defaults to alpha
        if name == "band":
            for key in ("low_hz", "high_hz"):
                if key not in table:
                    raise ProtocolError(
                        f"{where}missing required key [band] {key} (the band's edges in Hz; "
                        f"a feedback protocol without a [band] section uses 8-13 Hz)."
                    )
        try:
            sections[name] = cls(**table)
        except _FieldError as exc:
            raise ProtocolError(f"{where}[{name}] {exc}") from None
        except TypeError as exc:  # a required key of a section that has one
            raise ProtocolError(f"{where}[{name}] is incomplete: {exc}.") from None
    try:
        return Protocol(
            name=data["name"],
            kind=kind,
            description=data.get("description", ""),
            source=str(source),
            **sections,
        )
    except _FieldError as exc:
        raise ProtocolError(f"{where}{exc}") from None
    except ProtocolError as exc:
        raise ProtocolError(f"{where}{exc}") from None


def _presets_dir():
    return resources.files("closedloop") / "presets"


def _preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def _unknown_preset(name: str) -> ProtocolError:
    names = _preset_names()
    hint = _did_you_mean(name.lower(), names)
    return ProtocolError(
        f'"{name}" is neither a protocol file nor a preset{hint}. '
        f"Presets: {', '.join(names)}; or give the path of a .toml file."
    )


def preset_text(name: str) -> str:
    """The commented TOML of preset ``name`` (a file to start a protocol from).

    Raises
    ------
    ProtocolError
        For an unknown name, listing the presets and the nearest name.
    """
    key = str(name).strip().lower()
    if key not in _preset_names():
        raise _unknown_preset(str(name))
    return (_presets_dir() / f"{key}.toml").read_text(encoding="utf-8")


def list_presets() -> list[tuple[str, str]]:
    """``(name, one-line summary)`` of every preset, sorted by name."""
    return [(name, load_protocol(name).summary) for name in _preset_names()]


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(".toml") or os.sep in spec or "/" in spec


def load_protocol(spec: str | os.PathLike) -> Protocol:
    """Load a protocol from a TOML file path or a preset name.

    A string is a file when such a file exists, or when it ends in ``.toml`` or contains a
    path separator; otherwise it is a preset name (``closedloop protocols`` lists them).

    Raises
    ------
    ProtocolError
        Missing or unreadable file, TOML syntax error, unknown preset, or any invalid value.
    """
    if isinstance(spec, os.PathLike) or Path(str(spec)).is_file() or _looks_like_path(str(spec)):
        path = Path(spec)
        if path.exists() and not path.is_file():
            raise ProtocolError(f"protocol file {str(path)!r} is not a file (give a .toml file).")
        if not path.is_file():
            raise ProtocolError(
                f"protocol file {str(path)!r} does not exist (give a .toml file or a preset name)."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"protocol file {str(path)!r} cannot be read: {exc}.") from None
        return _parse_text(text, str(path))
    return _parse_text(preset_text(str(spec)), str(spec).strip().lower())


def _parse_text(text: str, source: str) -> Protocol:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML: {exc}.") from None
    return parse_protocol(data, source)


def with_overrides(protocol: Protocol, overrides: dict[str, Any]) -> Protocol:
    """A copy of ``protocol`` with some keys replaced, validated as a protocol file is.

    Parameters
    ----------
    protocol : Protocol
        The protocol to start from; its ``source`` names the result in messages.
    overrides : dict
        Dotted protocol keys and their new values as TOML would give them, e.g.
        ``{"estimator.method": "ar", "trigger.target_phase_deg": 0.0}``: ``name``, ``kind`` and
        ``description`` at the top level, ``section.key`` in a section, and
        ``signal.weights.CHANNEL`` or ``estimator.params.NAME`` in the free tables.

    Raises
    ------
    ProtocolError
        For a key that is not a protocol key (with the nearest and the accepted ones), or a
        value (or a combination of values) that the protocol file would refuse.
    """
    data = tomllib.loads(protocol_to_toml(protocol))
    for key, value in overrides.items():
        parts = str(key).split(".")
        if any(not part for part in parts):
            raise ProtocolError(f"{key!r} is not a dotted protocol key (e.g. estimator.method).")
        head = parts[0]
        if head in _TOP_KEYS:
            if len(parts) > 1:
                raise ProtocolError(f"{key} is not a protocol key: {head} is a top-level value.")
            data[head] = value
            continue
        if head not in _SECTIONS:
            raise ProtocolError(f"{key}: " + _unknown("", head, [*_TOP_KEYS, *_SECTIONS]))
        keys = _section_keys(_SECTIONS[head])
        if len(parts) == 1:
            raise ProtocolError(
                f"{key} is a section, not a key; give one of its keys, e.g. {head}.{keys[0]} "
                f"(accepted: {', '.join(keys)})."
            )
        name = parts[1]
        if name not in keys:
            raise ProtocolError(f"{key}: " + _unknown(f"[{head}] ", name, keys))
        section = data.setdefault(head, {})
        if len(parts) == 2:
            section[name] = value
        elif len(parts) == 3 and (head, name) in _FREE_TABLES:
            table = section.get(name)
            section[name] = {**(table if isinstance(table, dict) else {}), parts[2]: value}
        else:
            free = ", ".join(f"{s}.{k}.NAME" for s, k in sorted(_FREE_TABLES))
            raise ProtocolError(
                f"{key} is not a protocol key: only {free} go one level deeper than section.key."
            )
    return parse_protocol(data, protocol.source)


# -- writing -----------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
            .replace("\r", "\\r")
        )
        escaped = "".join(c if c.isprintable() else f"\\U{ord(c):08x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + "}"
        )
    raise ProtocolError(f"cannot write {value!r} ({type(value).__name__}) to TOML.")


def _write_table(lines: list[str], header: str, table: dict[str, Any]) -> None:
    lines.append(f"[{header}]")
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines.append("")
    for key, value in nested:
        _write_table(lines, f"{header}.{_toml_key(key)}", value)


def protocol_to_toml(p: Protocol) -> str:
    """A complete TOML file for ``p``; :func:`load_protocol` reads it back to an equal protocol.

    ``source`` is not written (it says where a protocol was read from).
    """
    lines = [f"name = {_toml_value(p.name)}", f"kind = {_toml_value(p.kind)}"]
    if p.description:
        lines.append(f"description = {_toml_value(p.description)}")
    lines.append("")
    for name in _SECTIONS:
        section = getattr(p, name)
        table: dict[str, Any] = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is None or (isinstance(value, dict) and not value):
                continue
            if isinstance(value, tuple) and not value:
                continue
            table[f.name] = list(value) if isinstance(value, tuple) else value
        _write_table(lines, name, table)
    return "\n".join(lines).rstrip() + "\n"
