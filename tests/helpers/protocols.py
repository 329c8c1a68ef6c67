"""Protocols built inside tests through the real loader."""

from __future__ import annotations

import copy

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
