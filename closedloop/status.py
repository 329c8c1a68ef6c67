"""The run's status stream: what an operator needs beyond the Markers and State streams.

:class:`StatusPublisher` publishes a fourth LSL stream beside the engine's own, ``closedloop-status``
(type ``ClosedLoopStatus``, one ``string`` channel, irregular rate): a JSON object a few times a
second with the hold reason, the baseline countdown, triggers delivered and dropped by reason,
loop latency, recording status, stimulator errors, the protocol as resolved (learned band and
gate threshold included) and the source_ids of the session's other streams. The browser views
(:mod:`closedloop.ui`) read it; so can any LSL program.

It runs on a helper thread of its own, one priority step below a real-time loop, and only reads:
each refresh copies a handful of numbers from ``session.stats`` and ``session.engine`` and the
newest latencies, as the terminal monitor does. It never takes a lock the loop could wait on.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque

import numpy as np

logger = logging.getLogger("closedloop.status")

#: Status messages per second.
STATUS_HZ = 4.0
#: Loop latency percentiles in a status message cover this many seconds.
LATENCY_WINDOW_S = 5.0
#: At most this many of the newest latencies enter the percentiles.
MAX_LATENCIES = 5000
#: Control actions repeated in each message (the newest).
CONTROL_SHOWN = 20
#: The stream's type; its name defaults to ``closedloop-status``.
STATUS_TYPE = "ClosedLoopStatus"
STATUS_NAME = "closedloop-status"
#: Version of the message's layout (a reader can refuse what it does not know).
STATUS_VERSION = 1


def _finite(value) -> float | None:
    """A float for JSON, None for NaN and infinities."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _newest(log, n: int) -> np.ndarray:
    """The newest ``n`` values of a :class:`closedloop.live.LatencyLog` (only those copied)."""
    newest = getattr(log, "newest", None)
    if newest is not None:
        return newest(n)
    return np.asarray(log[-n:], dtype=float)


def baseline_remaining_s(engine) -> float:
    """Seconds of baseline still to collect (0 once it is done)."""
    if engine.baseline_done:
        return 0.0
    remaining = getattr(engine, "baseline_remaining_s", None)
    if remaining is not None:
        return float(remaining)
    return (engine.baseline_n - engine._baseline_fill) / float(engine.sfreq_work)


def hold_reason(session, sample_ts: float | None) -> str:
    """Why triggering is not allowed now, other than the amplitude gate ("" when nothing holds it).

    ``paused`` (the operator), ``baseline`` (collecting it), ``fit`` (training the estimator),
    ``fit failed``, the engine's own reason for a hold after bad input (artifact, gap, stall or
    stream, timestamps...) while it lasts, or ``settle`` (the estimator's history since a restart).
    """
    engine = session.engine
    if session.paused or engine.paused:
        return "paused"
    if not engine.baseline_done:
        return "baseline"
    fitting = getattr(engine, "fitting", None)
    if fitting is None:
        fitting = getattr(engine, "_fit_thread", None) is not None
    if fitting:
        return "fit"
    if getattr(engine, "fit_error", None):
        return "fit failed"
    if sample_ts is not None and sample_ts < engine.hold_until:
        return str(getattr(engine, "hold_reason", "") or "hold")
    est = engine.estimator
    if session.protocol.kind == "phase" and est is not None and not est.ready:
        return "settle"
    return ""


class StatusPublisher:
    """Publishes ``closedloop-status`` for one :class:`closedloop.live.LiveSession`.

    Parameters
    ----------
    session : LiveSession
        The running session (``stats``, ``engine``, ``source``, ``protocol``, ``outlets``).
    name : str, optional
        Stream name (default ``closedloop-status``).
    source_id : str, optional
        Stream source_id (default stable for the protocol and host, like the markers').
    record : str, optional
        The ``--record`` path, reported with the recording's state.
    rate_hz : float
        Messages per second.
    """

    def __init__(self, session, *, name: str | None = None, source_id: str | None = None,
                 record: str | None = None, rate_hz: float = STATUS_HZ) -> None:
        import pylsl

        from closedloop.lsl.outputs import default_source_id
        from closedloop.protocol import protocol_to_toml

        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}.")
        self.session = session
        self.period_s = 1.0 / rate_hz
        self.record = record
        protocol = session.protocol
        self.source_id = source_id or default_source_id("status", protocol.name)
        self.name = name or STATUS_NAME
        info = pylsl.StreamInfo(self.name, STATUS_TYPE, 1, pylsl.IRREGULAR_RATE, "string", self.source_id)
        desc = info.desc()
        desc.append_child_value("protocol", protocol.name)
        desc.append_child_value("version", str(STATUS_VERSION))
        streams = desc.append_child("streams")
        layout = session.source.layout
        self.input_ids = {
            "input_source_id": str(getattr(layout, "source_id", "") or ""),
            "input_name": str(getattr(layout, "name", "") or ""),
            "state_source_id": session.outlets.state_info.source_id(),
            "marker_source_id": session.outlets.marker_info.source_id(),
        }
        for key, value in self.input_ids.items():
            streams.append_child_value(key, value)
        desc.append_child("channels").append_child("channel").append_child_value("label", "status")
        self.info = info
        self.outlet = pylsl.StreamOutlet(info)
        self._protocol_toml = protocol_to_toml(protocol)
        self._history: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.messages = 0
        self.control: str | None = None  # how control reaches the run: "ui" (a pipe) or a socket path
        self.views: dict | None = None  # the browser views' addresses, when run --ui serves them

    # ------------------------------------------------------------------ the message
    def snapshot(self) -> dict:
        """The status message now, as a JSON-ready dict."""
        import pylsl

        session = self.session
        stats, engine = session.stats, session.engine
        counters = engine.counters
        now = pylsl.local_clock()
        chunks = stats.chunks
        history = self._history
        history.append((now, chunks))
        while len(history) > 2 and now - history[1][0] >= LATENCY_WINDOW_S:
            history.popleft()
        recent = min(max(chunks - history[0][1], 1), MAX_LATENCIES)
        latencies = _newest(stats.latency_s, recent) * 1e3 if len(stats.latency_s) else np.zeros(0)
        state = stats.last_state
        last_ts = getattr(state, "sample_ts", None)
        hold_until = engine.hold_until
        reason = hold_reason(session, last_ts)
        baseline_s = float(session.protocol.trigger.baseline_s)
        collected_s = max(0.0, baseline_s - baseline_remaining_s(engine))
        dropped = dict(counters.dropped)
        recorder = session.recorder
        record_error = stats.record_error or (str(recorder.error) if recorder is not None and recorder.error else None)
        source = session.source
        layout = source.layout
        msg = {
            "v": STATUS_VERSION,
            "time": now,
            "protocol": session.protocol.name,
            "kind": session.protocol.kind,
            "protocol_toml": self._protocol_toml,
            "input": {
                "name": self.input_ids["input_name"],
                "source_id": self.input_ids["input_source_id"],
                "n_channels": int(source.n_channels),
                "sfreq": float(source.sfreq),
                "ch_names": list(layout.ch_names),
            },
            "streams": dict(self.input_ids),
            "connected": bool(stats.chunks > 0 and not stats.stalled),
            "stalled": bool(stats.stalled),
            "elapsed_s": now - stats.started if stats.started else 0.0,
            "samples": int(stats.samples),
            "chunks": int(chunks),
            "samples_dropped": int(counters.n_missing_samples),
            "gaps": int(counters.n_gaps),
            "bad_samples": int(counters.n_bad_samples),
            "stalls": int(stats.stalls),
            "gate": bool(getattr(state, "gate", False)),
            "gate_threshold_uv": _finite(engine.gate_threshold),
            "amplitude": _finite(getattr(state, "amplitude", math.nan)),
            "phase_deg": _finite(getattr(state, "phase_deg", math.nan)),
            "feedback": _finite(getattr(state, "feedback", math.nan)),
            "band_hz": [float(engine.band_hz[0]), float(engine.band_hz[1])],
            "individual_peak_hz": _finite(engine.individual_peak_hz) if engine.individual_peak_hz else None,
            "estimator": getattr(engine.estimator, "name", None),
            "baseline": {
                "done": bool(engine.baseline_done),
                "s": baseline_s,
                "collected_s": collected_s,
                "remaining_s": max(0.0, baseline_s - collected_s) if not engine.baseline_done else 0.0,
            },
            "hold": {
                "reason": reason,
                "remaining_s": (_finite(hold_until - last_ts)
                                if last_ts is not None and hold_until > last_ts else 0.0),
            },
            "paused": bool(session.paused),
            "triggers_delivered": int(stats.triggers),
            "triggers_dropped": int(sum(dropped.values())),
            "dropped_by_reason": dropped,
            "latency_p50_ms": _finite(np.percentile(latencies, 50)) if latencies.size else None,
            "latency_p99_ms": _finite(np.percentile(latencies, 99)) if latencies.size else None,
            "latency_window_s": LATENCY_WINDOW_S,
            "latency_session_p50_ms": _finite(stats.latency_s.percentile(50) * 1e3),
            "latency_session_p99_ms": _finite(stats.latency_s.percentile(99) * 1e3),
            "recording": {
                "path": self.record,
                "active": bool(recorder is not None and record_error is None),
                "error": record_error,
                "bytes": int(getattr(getattr(recorder, "writer", None), "bytes_written", 0) or 0),
            },
            "stimulator_errors": dict(session.stimulator_errors),
            "control": [{"time": t, "action": a, "source": s}
                        for t, a, s in list(stats.control_log)[-CONTROL_SHOWN:]],
            "control_path": self.control,
            "views": self.views,
            "notes": list(engine.notes),
            "ended": bool(session.end_reason),
            "end_reason": session.end_reason or None,
        }
        return msg

    def publish(self) -> dict:
        """Push one message now; returns it."""
        import pylsl

        msg = self.snapshot()
        self.outlet.push_sample([json.dumps(msg, separators=(",", ":"))], pylsl.local_clock())
        self.messages += 1
        return msg

    # ------------------------------------------------------------------ thread
    def start(self) -> StatusPublisher:
        """Start publishing (returns self)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="closedloop-status", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import time

        from closedloop import realtime

        realtime.background()  # below a real-time loop
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.period_s
            try:
                self.publish()
            except Exception:  # a status message must never end the run
                logger.exception("closedloop status: a status message could not be published")

    def stop(self) -> None:
        """Publish a last message (with the end reason) and stop."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.publish()
        except Exception:
            logger.exception("closedloop status: the last status message could not be published")

    def close(self) -> None:
        self.stop()
        if hasattr(self, "outlet"):
            del self.outlet
