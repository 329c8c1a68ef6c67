"""The Markers and State streams the engine publishes (../shared/CONTRACTS.md)."""

from __future__ import annotations

import hashlib
import json
import math
import socket

import pylsl

from closedloop.records import STATE_FIELDS


def default_source_id(kind: str, protocol_name: str) -> str:
    """Stable across restarts for the same protocol and host."""
    digest = hashlib.sha1(f"{protocol_name}@{socket.gethostname()}".encode()).hexdigest()[:12]
    return f"closedloop-{kind}-{digest}"


def marker_payload(plan, protocol_name: str, extra: dict | None = None) -> str:
    """The marker string: a JSON object with the fields CONTRACTS.md names (and a few more).

    ``extra`` (a stimulator's own fields, e.g. a sound card's scheduled onset) is added after them.
    """
    fields = {
        "event": plan.event,
        "seq": plan.seq,
        "sample_ts": plan.sample_ts,
        "target_phase_deg": round(plan.target_phase_deg, 3),
        "phase_deg": round(plan.phase_deg, 3) if math.isfinite(plan.phase_deg) else None,
        "amplitude": round(plan.amplitude, 4) if math.isfinite(plan.amplitude) else None,
        "protocol": protocol_name,
        "scheduled_ts": plan.time_s,
        "pulses": plan.pulses,
    }
    if extra:
        fields.update({k: v for k, v in extra.items() if k not in fields})
    return json.dumps(fields, separators=(",", ":"))


class EngineOutlets:
    """Markers (string, irregular) and State (double64, irregular) outlets."""

    def __init__(
        self,
        protocol_name: str,
        *,
        marker_name: str | None = None,
        marker_source_id: str | None = None,
        state_name: str | None = None,
        state_source_id: str | None = None,
    ) -> None:
        self.protocol_name = protocol_name
        m_info = pylsl.StreamInfo(
            marker_name or "closedloop-markers",
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            "string",
            marker_source_id or default_source_id("markers", protocol_name),
        )
        m_info.desc().append_child_value("protocol", protocol_name)
        m_info.desc().append_child("channels").append_child("channel").append_child_value("label", "marker")
        s_info = pylsl.StreamInfo(
            state_name or "closedloop-state",
            "ClosedLoopState",
            len(STATE_FIELDS),
            pylsl.IRREGULAR_RATE,
            "double64",
            state_source_id or default_source_id("state", protocol_name),
        )
        s_info.desc().append_child_value("protocol", protocol_name)
        chans = s_info.desc().append_child("channels")
        for label in STATE_FIELDS:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", {"phase_deg": "degrees", "amplitude": "microvolts"}.get(label, ""))
        self.marker_info = m_info
        self.state_info = s_info
        self.markers = pylsl.StreamOutlet(m_info)
        self.state = pylsl.StreamOutlet(s_info)

    def push_state(self, state) -> float:
        """Push one State sample; returns the push time (its LSL timestamp)."""
        stamp = pylsl.local_clock()
        self.state.push_sample(state.row(), stamp)
        return stamp

    def push_marker(self, text: str, timestamp: float) -> None:
        self.markers.push_sample([text], timestamp)

    def close(self) -> None:
        for name in ("markers", "state"):
            if hasattr(self, name):
                delattr(self, name)
