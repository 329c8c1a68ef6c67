"""Protocols built inside tests: through the real loader, or as the TOML text of a file."""

from __future__ import annotations

import copy
import math

from closedloop.protocol import Protocol, parse_protocol

BASE = {
    "name": "test-phase",
    "kind": "phase",
    "signal": {"channel": "O2", "reference": "none"},
    "band": {"low_hz": 8.0, "high_hz": 13.0},
    "estimator": {"method": "auto"},
    "trigger": {
        "target_phase_deg": 0.0,
        "min_interval_s": 0.25,
        "amplitude_gate": "none",
        "baseline_s": 5.0,
    },
}


def make_protocol(**sections) -> Protocol:
    """BASE with sections updated key by key, e.g. ``make_protocol(trigger={"baseline_s": 2})``."""
    data = copy.deepcopy(BASE)
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name].update(values)
        else:
            data[name] = values
    return parse_protocol(data, "test protocol")


def toml_value(value: object) -> str:
    """``value`` as TOML: NaN and infinities spelt out, odd characters as ``\\u`` escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return (
            '"'
            + "".join(
                c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value
            )
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    """``key`` bare where TOML allows it, else quoted."""
    return (
        key
        if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii()
        else toml_value(key)
    )


def to_toml(data: dict) -> str:
    """Our own small TOML writer: top-level scalars first, then one [table] per section."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_key(k)}]")
            lines += [f"{toml_key(kk)} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _sections(name: str, kind: str, sections: dict[str, dict]) -> dict:
    """The protocol as a dict, without the keys given as None and the sections left empty."""
    data: dict = {"name": name, "kind": kind}
    for section, values in sections.items():
        given = {key: value for key, value in values.items() if value is not None}
        if given:
            data[section] = given
    return data


def phase_toml(
    name: str,
    channel: str,
    *,
    baseline_s: float,
    target_phase_deg: float = 0.0,
    amplitude_gate: str = "percentile:50",
    reference: str | None = None,
    method: str | None = None,
    hold_s: float | None = None,
) -> str:
    """TOML text of a phase protocol: ``channel``, 8-13 Hz, at most one trigger per 0.25 s.

    ``reference``, ``method`` and ``hold_s`` are written only when given.
    """
    return to_toml(
        _sections(
            name,
            "phase",
            {
                "signal": {"channel": channel, "reference": reference},
                "band": {"low_hz": 8.0, "high_hz": 13.0},
                "estimator": {"method": method},
                "trigger": {
                    "target_phase_deg": target_phase_deg,
                    "min_interval_s": 0.25,
                    "amplitude_gate": amplitude_gate,
                    "baseline_s": baseline_s,
                },
                "artifact": {"hold_s": hold_s},
            },
        )
    )


def feedback_toml(
    name: str, *, baseline_s: float, window_s: float, smoothing_s: float, zscore: bool
) -> str:
    """TOML text of a frontal alpha asymmetry protocol: F4 against F3, 8-13 Hz."""
    return to_toml(
        _sections(
            name,
            "feedback",
            {
                "signal": {"channel": "F4"},
                "band": {"low_hz": 8.0, "high_hz": 13.0},
                "trigger": {"baseline_s": baseline_s},
                "feedback": {
                    "measure": "asymmetry",
                    "channels": ["F4", "F3"],
                    "window_s": window_s,
                    "smoothing_s": smoothing_s,
                    "zscore": zscore,
                },
            },
        )
    )
