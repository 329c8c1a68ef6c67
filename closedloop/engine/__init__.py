"""The decision pipeline shared by the live loop and replay, as a composition of units.

| module | unit |
|---|---|
| :mod:`.continuity` | :class:`TimestampCheck`: gaps, time going back, overlapping chunks |
| :mod:`.artifacts` | :class:`ArtifactDetector`: NaN/Inf, saturation, flat channels, over-limit |
| :mod:`.signal` | :class:`SignalChain`: spatial filter, decimation, notch, high-pass, envelope |
| :mod:`.baseline` | :class:`Baseline`, :func:`individual_band`, :func:`fit_estimator` |
| :mod:`.gate` | :class:`AmplitudeGate` |
| :mod:`.planning` | :class:`TriggerPlanner`, :class:`ArrivalLead`, :data:`DECISION_LATENCY_S`: the one rule by which live and replay decide alike |
| :mod:`.feedback` | :class:`FeedbackMeter` |
| :mod:`.core` | :class:`Engine`, which wires them |

Each unit has its settings fixed at construction, ``process(...)`` and ``reset()``.
"""

from closedloop.engine.artifacts import ArtifactDetector
from closedloop.engine.baseline import Baseline, fit_estimator, individual_band
from closedloop.engine.continuity import GAP_TOLERANCE_S, TimestampCheck
from closedloop.engine.core import SETTLE_S, Engine, EngineCounters, EngineState, run_inline
from closedloop.engine.feedback import FEEDBACK_STEP_S, FeedbackMeter
from closedloop.engine.gate import AmplitudeGate
from closedloop.engine.planning import (
    DECISION_LATENCY_S,
    ArrivalLead,
    TriggerPlan,
    TriggerPlanner,
    arrival_slack_s,
    planning_horizon_s,
    replay_delivery_s,
)
from closedloop.engine.signal import NYQUIST_MARGIN, WORKING_RATE_MAX_HZ, SignalChain, working_rate

__all__ = [
    "DECISION_LATENCY_S",
    "FEEDBACK_STEP_S",
    "GAP_TOLERANCE_S",
    "NYQUIST_MARGIN",
    "SETTLE_S",
    "WORKING_RATE_MAX_HZ",
    "AmplitudeGate",
    "ArrivalLead",
    "ArtifactDetector",
    "Baseline",
    "Engine",
    "EngineCounters",
    "EngineState",
    "FeedbackMeter",
    "SignalChain",
    "TimestampCheck",
    "TriggerPlan",
    "TriggerPlanner",
    "arrival_slack_s",
    "fit_estimator",
    "individual_band",
    "planning_horizon_s",
    "replay_delivery_s",
    "run_inline",
    "working_rate",
]
