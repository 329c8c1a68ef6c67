"""The UI process's readers of the session's LSL streams, and the hub that fans out to the pages.

One thread per stream blocks in liblsl (``pull_sample`` with a timeout, then a drain of what else
is there), so nothing here spins. Readers hand what they read to the :class:`Hub` on the asyncio
loop (``call_soon_threadsafe``); the hub keeps a short history for pages that connect later and
sends each page what its role may see: the operator everything, the participant only the
feedback value and the display settings.

State samples arrive once per processed chunk (up to a thousand a second); the hub sends them in
batches at most every :data:`FLUSH_MIN_S`, the newest always included, so a page draws the newest
value at its next frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import deque

import numpy as np

logger = logging.getLogger("closedloop.ui")

#: Shortest time between two State batches sent to the pages (120 per second at most).
FLUSH_MIN_S = 1.0 / 120.0
#: The operator's traces keep a State row at most this often (seconds of sample time).
STATE_ROW_S = 0.01
#: History kept for pages that connect later (seconds).
HISTORY_S = 12.0
#: EEG batches for the traces are sent this often (seconds).
EEG_BATCH_S = 0.05
#: Quality and spectrum are recomputed this often (seconds).
SLOW_S = 1.0
#: Messages queued for one page before newer ones are dropped (a page that stopped reading).
QUEUE_MAX = 512
#: Raw channels shown by default: the protocol's channel and its reference's (at most this many).
DEFAULT_TRACES = 4
MAX_TRACES = 8
#: State readers wake at most this often (a burst of samples is read in one go).
STATE_MIN_WAKE_S = 0.004
#: Status stream silent this long: the run is taken as gone.
STATUS_STALE_S = 2.0


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=float)


def _f(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


class Page:
    """One connected page: its role and a queue drained by its writer task."""

    def __init__(self, ws, role: str) -> None:
        self.ws = ws
        self.role = role
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0

    def send(self, text: str) -> None:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1


class Hub:
    """What the pages see, on the asyncio loop. Readers call :meth:`post` from their threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, protocol=None, view_only: bool = True,
                 control_note: str = "") -> None:
        self.loop = loop
        self.pages: set[Page] = set()
        self.view_only = view_only
        self.control_note = control_note
        self.protocol = protocol  # from --protocol, or from the status stream's protocol_toml
        self._protocol_toml = None
        self.status: dict | None = None
        self.status_at = -math.inf
        self.ended = False
        self.state_at = -math.inf
        self.last_state: list[float] | None = None  # push, sample_ts, phase, amplitude, feedback, gate
        self.state_rows: deque[list] = deque()
        self._pending_rows: list[list] = []
        self._newest_row: list | None = None
        self._last_kept_ts = -math.inf
        self._flush_handle = None
        self._last_flush = -math.inf
        self.markers: deque[dict] = deque(maxlen=2000)
        self.controls: deque[dict] = deque(maxlen=200)
        self.truths: deque[dict] = deque(maxlen=5000)
        self.triggers_seen = 0
        self.eeg_batches: deque[dict] = deque()
        self.quality: dict | None = None
        self.spectrum: dict | None = None
        self.trace_channels: list[str] | None = None  # chosen on the operator's page
        self.eeg_info: dict | None = None
        self.latencies: deque[float] = deque(maxlen=5000)  # State push - newest sample, ms

    # ------------------------------------------------------------------ from the reader threads
    def post(self, method: str, *args) -> None:
        """Thread-safe: run ``self.on_<method>(*args)`` on the loop."""
        try:
            self.loop.call_soon_threadsafe(getattr(self, "on_" + method), *args)
        except RuntimeError:  # the loop has closed: shutting down
            pass

    # ------------------------------------------------------------------ handlers (loop thread)
    def on_status(self, msg: dict) -> None:
        from closedloop.protocol import parse_protocol

        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        self.status = msg
        self.status_at = time.monotonic()
        self.ended = bool(msg.get("ended"))
        toml_text = msg.get("protocol_toml")
        if toml_text and toml_text != self._protocol_toml:
            self._protocol_toml = toml_text
            try:
                self.protocol = parse_protocol(tomllib.loads(toml_text), msg.get("protocol", "status"))
            except Exception as exc:  # a status from a newer closedloop: show what we can
                logger.warning("closedloop ui: the status stream's protocol could not be read: %s", exc)
            self._send_display()
        self._broadcast("operator", {"t": "status", **msg})

    def on_states(self, rows: list[list[float]]) -> None:
        now_mono = time.monotonic()
        self.state_at = now_mono
        horizon = rows[-1][1] - HISTORY_S
        for row in rows:
            self.latencies.append((row[0] - row[1]) * 1e3)
            if row[1] - self._last_kept_ts >= STATE_ROW_S:
                self._last_kept_ts = row[1]
                self.state_rows.append(row)
                self._pending_rows.append(row)
        while self.state_rows and self.state_rows[0][1] < horizon:
            self.state_rows.popleft()
        self.last_state = rows[-1]
        self._newest_row = rows[-1]
        self._schedule_flush()

    def on_marker(self, time_s: float, payload: dict) -> None:
        item = {"time": time_s, **payload}
        event = payload.get("event")
        if event in ("pause", "resume", "stop"):
            self.controls.append(item)
        else:
            self.markers.append(item)
            self.triggers_seen += 1
        self._broadcast("operator", {"t": "marker", **item})

    def on_truths(self, results: list[dict]) -> None:
        self.truths.extend(results)
        self._broadcast("operator", {"t": "truth", "items": results})

    def on_eeg(self, batch: dict) -> None:
        self.eeg_batches.append(batch)
        if batch["times"]:
            horizon = batch["times"][-1] - HISTORY_S
            while self.eeg_batches and (not self.eeg_batches[0]["times"] or self.eeg_batches[0]["times"][-1] < horizon):
                self.eeg_batches.popleft()
        self._broadcast("operator", {"t": "eeg", **batch})

    def on_eeg_info(self, info: dict) -> None:
        self.eeg_info = info
        self.eeg_batches.clear()
        self._broadcast("operator", {"t": "eeg_info", **info})

    def on_quality(self, msg: dict) -> None:
        self.quality = msg
        self._broadcast("operator", {"t": "quality", **msg})

    def on_spectrum(self, msg: dict) -> None:
        self.spectrum = msg
        self._broadcast("operator", {"t": "spectrum", **msg})

    # ------------------------------------------------------------------ sending
    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        delay = max(0.0, self._last_flush + FLUSH_MIN_S - self.loop.time())
        self._flush_handle = self.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._last_flush = self.loop.time()
        newest = self._newest_row
        if newest is None:
            return
        rows = self._pending_rows
        if not rows or rows[-1] is not newest:
            rows.append(newest)
        self._pending_rows = []
        self._newest_row = None
        op = {"t": "state", "rows": [[_f(v) for v in r] for r in rows]}
        self._broadcast("operator", op)
        fb = {"t": "fb", "v": _f(newest[4]), "push": newest[0], "ts": newest[1]}
        self._broadcast("participant", fb)

    def _broadcast(self, role: str, msg: dict) -> None:
        if not self.pages:
            return
        text = None
        for page in self.pages:
            if page.role == role:
                if text is None:
                    text = _json(msg)
                page.send(text)

    def display_message(self) -> dict:
        """What the participant's page needs: the protocol kind and its [display] settings."""
        p = self.protocol
        if p is None:
            return {"t": "display", "kind": None, "display": None}
        import dataclasses

        d = dataclasses.asdict(p.display)
        return {"t": "display", "kind": p.kind, "display": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in d.items()},
                "zscore": bool(p.feedback.zscore)}

    def _send_display(self) -> None:
        self._broadcast("participant", self.display_message())
        self._broadcast("operator", {"t": "display", **self.display_message()})

    def hello(self, role: str) -> list[str]:
        """The messages a page gets on connecting: for the operator, the recent history too."""
        out = [_json({"t": "hello", "role": role, "view_only": self.view_only, "control_note": self.control_note}),
               _json(self.display_message())]
        if role != "operator":
            if self.last_state is not None:
                s = self.last_state
                out.append(_json({"t": "fb", "v": _f(s[4]), "push": s[0], "ts": s[1]}))
            return out
        if self.status is not None:
            out.append(_json({"t": "status", **self.status}))
        if self.eeg_info is not None:
            out.append(_json({"t": "eeg_info", **self.eeg_info}))
        for batch in self.eeg_batches:
            out.append(_json({"t": "eeg", **batch}))
        if self.state_rows:
            out.append(_json({"t": "state", "rows": [[_f(v) for v in r] for r in self.state_rows]}))
        for m in list(self.markers)[-200:] + list(self.controls):
            out.append(_json({"t": "marker", **m}))
        if self.truths:
            out.append(_json({"t": "truth", "items": list(self.truths)}))
        for msg, kind in ((self.quality, "quality"), (self.spectrum, "spectrum")):
            if msg is not None:
                out.append(_json({"t": kind, **msg}))
        return out

    # ------------------------------------------------------------------ /api/status
    def api_status(self) -> dict:
        """The contract's keys (../shared/CONTRACTS.md, "Browser views") and everything else known."""
        now = time.monotonic()
        st = self.status if self.status is not None and now - self.status_at < STATUS_STALE_S else None
        state_fresh = now - self.state_at < 1.0
        last = self.last_state
        lat = np.asarray(self.latencies, dtype=float)
        out = {
            "protocol": (st or {}).get("protocol") or (self.protocol.name if self.protocol is not None else None),
            "connected": bool(st["connected"]) if st is not None else state_fresh,
            "gate": bool(last[5] > 0.5) if last is not None else False,
            "triggers_delivered": (st or {}).get("triggers_delivered", self.triggers_seen),
            "triggers_dropped": (st or {}).get("triggers_dropped"),
            "samples_dropped": (st or {}).get("samples_dropped"),
            "latency_p50_ms": (st or {}).get("latency_p50_ms",
                                             float(np.percentile(lat, 50)) if lat.size else None),
            "latency_p99_ms": (st or {}).get("latency_p99_ms",
                                             float(np.percentile(lat, 99)) if lat.size else None),
            "state_fresh": state_fresh,
            "status_stream": st is not None,
            "ended": self.ended,
            "view_only": self.view_only,
            "pages": {"operator": sum(p.role == "operator" for p in self.pages),
                      "participant": sum(p.role == "participant" for p in self.pages)},
            "truths": len(self.truths),
        }
        if st is not None:
            out["status"] = {k: v for k, v in st.items() if k != "protocol_toml"}
        return out


# ---------------------------------------------------------------------- readers
class Reader(threading.Thread):
    """A daemon thread reading one inlet until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()


class StatusReader(Reader):
    def __init__(self, info, hub: Hub) -> None:
        import pylsl

        super().__init__("closedloop-ui-status")
        self.inlet = pylsl.StreamInlet(info, max_buflen=5, recover=True)
        self.hub = hub

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                sample, ts = self.inlet.pull_sample(0.25)
            except Exception:  # lost for good: the run has ended
                return
            if ts is None:
                continue
            try:
                msg = json.loads(sample[0])
            except (ValueError, TypeError):
                continue
            if isinstance(msg, dict):
                self.hub.post("status", msg)


class StateReader(Reader):
    """Reads the State stream; each batch goes to the hub as rows of push time (local clock),
    sample_ts, phase, amplitude, feedback, gate."""

    def __init__(self, info, hub: Hub) -> None:
        import pylsl

        super().__init__("closedloop-ui-state")
        self.inlet = pylsl.StreamInlet(info, max_buflen=5, recover=True)
        self.inlet.open_stream(5.0)
        self.hub = hub
        self.dest = np.zeros((1024, info.channel_count()), dtype=np.float64)
        self.correction = 0.0

    def run(self) -> None:
        next_correction = 0.0
        while not self._stop_event.is_set():
            try:
                sample, ts = self.inlet.pull_sample(0.25)
                if ts is None:
                    continue
                _, stamps = self.inlet.pull_chunk(timeout=0.0, max_samples=self.dest.shape[0], dest_obj=self.dest)
            except Exception:
                return
            if time.monotonic() >= next_correction:
                try:
                    self.correction = float(self.inlet.time_correction(0.1))
                except Exception:
                    pass
                next_correction = time.monotonic() + 5.0
            c = self.correction
            rows = [[ts + c, *sample[:5]]]
            for k, t in enumerate(stamps):
                rows.append([t + c, *self.dest[k, :5].tolist()])
            self.hub.post("states", rows)
            self._stop_event.wait(STATE_MIN_WAKE_S)


class MarkerReader(Reader):
    def __init__(self, info, hub: Hub, truth_queue: deque | None) -> None:
        import pylsl

        super().__init__("closedloop-ui-markers")
        self.inlet = pylsl.StreamInlet(info, max_buflen=30, recover=True)
        self.inlet.open_stream(5.0)
        self.hub = hub
        self.truth_queue = truth_queue

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                sample, ts = self.inlet.pull_sample(0.25)
            except Exception:
                return
            if ts is None:
                continue
            try:
                payload = json.loads(sample[0])
            except (ValueError, TypeError):
                payload = {"event": str(sample[0])}
            if not isinstance(payload, dict):
                payload = {"event": str(payload)}
            try:
                ts = ts + float(self.inlet.time_correction(0.0))
            except Exception:
                pass
            self.hub.post("marker", ts, payload)
            if self.truth_queue is not None and payload.get("event") not in ("pause", "resume", "stop") \
                    and payload.get("target_phase_deg") is not None:
                self.truth_queue.append((int(payload.get("seq", 0) or 0), ts, float(payload["target_phase_deg"]),
                                         payload.get("phase_deg")))


class EEGReader(Reader):
    """Reads the input EEG: display traces, the derived signal's history, quality, spectrum, and
    the true phase of each delivered trigger (marker times arrive through ``truth_queue``)."""

    def __init__(self, info, hub: Hub) -> None:
        from closedloop.lsl.source import LSLSource
        from closedloop.ui.analysis import DerivedHistory, TruthTracker

        super().__init__("closedloop-ui-eeg")
        self.source = LSLSource(info, dejitter=False)
        self.source.prime_time_correction(1.0)
        self.hub = hub
        self.sfreq = self.source.sfreq
        self.ch_names = list(self.source.layout.ch_names)
        self.truth_queue: deque = deque()
        self.history = DerivedHistory(self.sfreq)
        self.truth = TruthTracker(self.sfreq)
        self._protocol = None
        self._weights = None
        self._traces: list[str] = []
        self._decimator = None
        self._band_trace = None
        self._band_hz = None
        self._quality = None
        self._next_slow = 0.0
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    # -------------------------------------------------------------- set-up from the protocol
    def _configure(self) -> None:
        from closedloop.dsp import spatial_weights
        from closedloop.ui.analysis import DisplayDecimator, QualityMeter

        protocol = self.hub.protocol
        if protocol is not self._protocol:
            self._protocol = protocol
            self._weights = None
            if protocol is not None:
                sig = protocol.signal
                targets = ((list(protocol.feedback.channels) or [sig.channel]) if protocol.kind == "feedback"
                           else [sig.channel])
                try:
                    self._weights = spatial_weights(
                        self.ch_names, targets, sig.reference, neighbors=list(sig.neighbors) or None,
                        bipolar_with=sig.bipolar_with, weights=dict(sig.weights) or None)
                except Exception as exc:  # the input lacks the protocol's channels: raw traces only
                    logger.warning("closedloop ui: no derived signal: %s", exc)
            self._quality = QualityMeter(
                self.sfreq, self.ch_names,
                flat_uv=protocol.artifact.flat_uv if protocol is not None else 0.5,
                saturation_uv=protocol.artifact.saturation_uv if protocol is not None else 0.0)
            self._traces = []  # rebuild the traces below
        chosen = self.hub.trace_channels or self._default_traces()
        chosen = [c for c in chosen if c in self.ch_names][:MAX_TRACES]
        if chosen != self._traces or self._decimator is None:
            self._traces = chosen
            rows = len(chosen) + (1 if self._weights is not None else 0)
            self._decimator = DisplayDecimator(self.sfreq, max(rows, 1))
            self._band_trace = None
            self.hub.post("eeg_info", {"names": list(self._traces), "all": self.ch_names,
                                        "derived": self._weights is not None, "sfreq": self.sfreq,
                                        "rate": self._decimator.rate_hz})

    def _default_traces(self) -> list[str]:
        if self._weights is None:
            return self.ch_names[:DEFAULT_TRACES]
        used = np.flatnonzero(np.any(self._weights != 0, axis=0))
        order = sorted(used, key=lambda i: -abs(self._weights[0, i]))
        return [self.ch_names[i] for i in order[:DEFAULT_TRACES]]

    def _band(self) -> tuple[float, float] | None:
        st = self.hub.status
        if st and st.get("band_hz"):
            return (float(st["band_hz"][0]), float(st["band_hz"][1]))
        if self._protocol is not None:
            return (self._protocol.band.low_hz, self._protocol.band.high_hz)
        return None

    # -------------------------------------------------------------- the loop
    def run(self) -> None:
        last_batch = time.monotonic()
        while not self._stop_event.is_set():
            try:
                chunk, stamps = self.source.pull(0.1)
            except Exception:
                return
            if chunk is None:
                continue
            self._pending.append((chunk, stamps + self.source.correction))
            now = time.monotonic()
            if now - last_batch < EEG_BATCH_S:
                continue
            last_batch = now
            try:
                self._process()
            except Exception:
                logger.exception("closedloop ui: the EEG display failed on a batch")
            # the next batch is read in one go: no wake-up per amplifier chunk
            self._stop_event.wait(max(0.0, EEG_BATCH_S - (time.monotonic() - now)))

    def _process(self) -> None:
        self._configure()
        chunk = np.concatenate([c for c, _ in self._pending], axis=1)
        stamps = np.concatenate([s for _, s in self._pending])
        self._pending = []
        index = [self.ch_names.index(c) for c in self._traces]
        rows = [chunk[index]]
        derived = None
        if self._weights is not None:
            derived = self._weights[0] @ np.nan_to_num(chunk)
            rows.append(derived[None, :])
            self.history.write(derived, stamps)
        x = np.ascontiguousarray(np.vstack(rows)) if rows else np.zeros((1, chunk.shape[1]))
        x = np.nan_to_num(x)
        idx, y = self._decimator.process(x)
        band = self._band()
        batch = {"times": stamps[idx].tolist()}
        traces = y[: len(self._traces)]
        batch["rows"] = np.round(traces, 2).tolist()
        if derived is not None and band is not None:
            if self._band_trace is None or self._band_hz != band:
                from closedloop.ui.analysis import BandTrace

                self._band_hz = band
                self._band_trace = BandTrace(self._decimator.rate_hz, band)
            batch["band"] = np.round(self._band_trace.process(y[-1]), 3).tolist()
        self.hub.post("eeg", batch)
        if self._quality is not None:
            q = self._quality.process(chunk)
            if q is not None:
                self.hub.post("quality", {"channels": q})
        now = time.monotonic()
        if derived is not None and band is not None:
            while self.truth_queue:
                self.truth.add(*self.truth_queue.popleft())
            done = self.truth.update(self.history, band)
            if done:
                self.hub.post("truths", done)
            if now >= self._next_slow:
                self._next_slow = now + SLOW_S
                from closedloop.ui.analysis import spectrum_db

                x, _ = self.history.latest(int(4 * self.sfreq))
                fmax = min(self.sfreq / 2.0, max(45.0, 2.0 * band[1]))
                freqs, db = spectrum_db(x, self.sfreq, fmax)
                self.hub.post("spectrum", {"freqs": np.round(freqs, 3).tolist(),
                                           "db": np.round(db, 2).tolist(), "band": list(band)})

    def close(self) -> None:
        self.source.close()
