"""closedloop: a real-time closed-loop EEG engine over Lab Streaming Layer.

Everything a script needs is here (../shared/CONTRACTS.md, "Python API")::

    import closedloop as cl

    protocol = cl.load_protocol("mu-trough-c3")       # preset name or TOML path -> cl.Protocol
    result = cl.replay("sub-01.edf", protocol)         # path, mne.io.BaseRaw or array -> cl.ReplayResult
    with cl.Session(protocol, source_id="amp-1", record="s.xdf") as session:
        session.on_trigger(print)                      # cl.Trigger after each delivery
        session.run(duration_s=600)
    with cl.Player("sub-01.edf", source_id="amp-1"):   # a recording as a live LSL amplifier
        ...

The names load on first use, so that ``import closedloop`` stays quick and pylsl is loaded only
when a live part is used (after a script's own liblsl configuration).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "load_protocol": "closedloop.protocol",
    "Protocol": "closedloop.protocol",
    "list_presets": "closedloop.protocol",
    "replay": "closedloop.offline",
    "ReplayResult": "closedloop.offline",
    "Session": "closedloop.session",
    "Player": "closedloop.play",
    "Trigger": "closedloop.records",
    "State": "closedloop.records",
    "Engine": "closedloop.engine",
    "calibrate": "closedloop.calibration",
    "Stimulator": "closedloop.stimulators",
    "TTLStimulator": "closedloop.stimulators",
    "ClosedLoopError": "closedloop.errors",
    "UsageError": "closedloop.errors",
    "ProtocolError": "closedloop.errors",
    "DataError": "closedloop.errors",
    "StreamError": "closedloop.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ loads them
    # ruff: noqa: F401
    from closedloop.calibration import calibrate
    from closedloop.engine import Engine
    from closedloop.errors import ClosedLoopError, DataError, ProtocolError, StreamError, UsageError
    from closedloop.offline import ReplayResult, replay
    from closedloop.play import Player
    from closedloop.protocol import Protocol, list_presets, load_protocol
    from closedloop.records import State, Trigger
    from closedloop.session import Session
    from closedloop.stimulators import Stimulator, TTLStimulator


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'closedloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
