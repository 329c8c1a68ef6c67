"""The live loop on an LSL stream (``closedloop run``, :class:`closedloop.Session`).

One thread does everything that decides timing: it blocks in liblsl until new samples arrive,
runs the engine on them, publishes a State sample, and delivers planned triggers on time (sleep,
then a short precise wait for the last fraction of a millisecond). Recording, TTL output and the
monitor run on their own threads and never hold it up.
"""

from __future__ import annotations

import gc
import logging
import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from closedloop.errors import StreamError

logger = logging.getLogger("closedloop.live")

#: The last stretch before a trigger is waited out by spinning on the clock (sleep overshoots).
SPIN_S = 0.0004
#: Below this much time to a planned trigger, the loop stops pulling data and waits it out.
GUARD_S = 0.0012
#: Longest single wait for data, so stop requests and stalls are noticed promptly.
POLL_S = 0.05
#: GIL switch interval while the loop runs (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0001
#: Time correction is refreshed (and written to the recording) this often.
CLOCK_REFRESH_S = 5.0
#: Deliveries kept in ``LiveStats.marker_log`` (the demo's accuracy, the monitor).
MARKER_LOG_SIZE = 4096


class LatencyLog:
    """Loop latencies in bounded memory: a ring of the most recent values (for the monitor) and a
    fine histogram of all of them (for whole-session percentiles), so a long session does not grow.

    ``log[-n:]`` gives the newest ``n`` values in order, like a list would.
    """

    BIN_S = 1e-6  # 1 µs bins
    MAX_S = 0.1  # 100 ms; longer latencies land in the last bin

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._ring = np.zeros(capacity)
        self._n = 0
        self._hist = np.zeros(int(self.MAX_S / self.BIN_S) + 1, dtype=np.int64)
        self._max = -math.inf

    def append(self, value: float) -> None:
        self._ring[self._n % self._ring.size] = value
        self._n += 1
        k = int(value / self.BIN_S) if value > 0 else 0
        self._hist[k if k < self._hist.size else -1] += 1
        if value > self._max:
            self._max = value

    def __len__(self) -> int:
        return min(self._n, self._ring.size)

    def recent(self) -> np.ndarray:
        """The values still in the ring, oldest first."""
        size = self._ring.size
        if self._n <= size:
            return self._ring[: self._n].copy()
        start = self._n % size
        return np.concatenate((self._ring[start:], self._ring[:start]))

    def __getitem__(self, index):
        return self.recent()[index]

    def newest(self, n: int) -> np.ndarray:
        """The newest ``n`` values (fewer if fewer were logged), oldest first; copies only those."""
        size = self._ring.size
        n = max(0, min(int(n), self._n, size))
        stop = self._n % size
        if n <= stop:
            return self._ring[stop - n : stop].copy()
        return np.concatenate((self._ring[size - (n - stop) :], self._ring[:stop]))

    @property
    def count(self) -> int:
        return self._n

    def percentile(self, q: float) -> float:
        """Percentile over the whole session (to the bin width, 1 µs)."""
        if self._n == 0:
            return math.nan
        if q >= 100:
            return self._max
        cum = np.cumsum(self._hist)
        k = int(np.searchsorted(cum, q / 100.0 * self._n, side="left"))
        return (k + 0.5) * self.BIN_S


@dataclass
class LiveStats:
    """Running figures of one live session (also what the monitor shows)."""

    started: float = 0.0
    samples: int = 0
    chunks: int = 0
    stalls: int = 0
    stall_s: float = 0.0
    stalled: bool = False
    triggers: int = 0
    dropped: int = 0
    latency_s: LatencyLog = field(default_factory=LatencyLog)  # newest sample -> State pushed
    # |actual - scheduled| delivery time, bounded like the latencies
    delivery_error_s: LatencyLog = field(default_factory=lambda: LatencyLog(1 << 12))
    last_state: object = None
    record_error: str | None = None
    # the most recent deliveries (demo, monitor); bounded so that a long session does not grow
    marker_log: deque = field(default_factory=lambda: deque(maxlen=MARKER_LOG_SIZE))
    # operator actions (time, "pause" | "resume" | "stop", source), bounded
    control_log: deque = field(default_factory=lambda: deque(maxlen=MARKER_LOG_SIZE))


class Recorder:
    """Writes the session to XDF from its own thread (input samples, markers, state, clock offsets,
    the protocol as resolved, and any other streams a :class:`~closedloop.lsl.capture.StreamCapture`
    adds)."""

    EEG, MARKERS, STATE, PROTOCOL = 1, 2, 3, 4
    FIRST_EXTRA = 5

    def __init__(self, path: str, source, outlets, protocol=None) -> None:
        from closedloop.xdf import XDFWriter

        self.writer = XDFWriter(path)
        self.writer.add_stream(self.EEG, source.layout.xml)
        self.writer.add_stream(self.MARKERS, outlets.marker_info.as_xml())
        self.writer.add_stream(self.STATE, outlets.state_info.as_xml())
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.extra_errors: list[str] = []
        self._next_id = self.FIRST_EXTRA
        self._id_lock = threading.Lock()
        self.has_protocol = protocol is not None
        if protocol is not None:
            import pylsl

            from closedloop import provenance

            source_id = outlets.marker_info.source_id() + "-protocol"
            self.writer.add_stream(self.PROTOCOL, provenance.header_xml(protocol, source_id))
            self.protocol(provenance.start_record(protocol), pylsl.local_clock())
        self.thread = threading.Thread(target=self._run, name="closedloop-recorder", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from closedloop import realtime

        realtime.background()
        while True:
            item = self.queue.get()
            if item is None:
                return
            kind, sid, a, b = item
            try:
                if kind == "samples":
                    self.writer.write_samples(sid, a, b)
                elif kind == "offset":
                    self.writer.write_clock_offset(sid, a, b)
                elif kind == "boundary":
                    self.writer.write_boundary()
                elif kind == "header":
                    self.writer.add_stream(sid, a)
            except (ValueError, TypeError) as exc:
                if sid < self.FIRST_EXTRA:
                    raise
                # another program's stream with samples its own header does not describe: that
                # stream stops, the session's own streams go on
                if len(self.extra_errors) < 100:
                    self.extra_errors.append(f"stream {sid}: {exc}")

    def samples(self, stream_id: int, timestamps, values) -> None:
        self.queue.put(("samples", stream_id, timestamps, values))

    def clock_offset(self, stream_id: int, collected: float, offset: float) -> None:
        self.queue.put(("offset", stream_id, collected, offset))

    def boundary(self) -> None:
        self.queue.put(("boundary", 0, None, None))

    def add_stream(self, header_xml: str) -> int:
        """Declare another stream (its header is written by the recorder thread); its id."""
        with self._id_lock:
            sid = self._next_id
            self._next_id += 1
        self.queue.put(("header", sid, header_xml, None))
        return sid

    def protocol(self, record: dict, stamp: float) -> None:
        """One sample of the protocol stream (closedloop.provenance)."""
        from closedloop import provenance

        self.samples(self.PROTOCOL, np.array([stamp]), [provenance.dumps(record)])

    @property
    def error(self):
        return getattr(self.writer, "error", None)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)
        self.writer.close()


def fit_in_background(job):
    """The live engine's fit runner: the estimator's fit on a thread at normal priority (a long
    fit must not hold a core against the loop and the machine); a Future of its result."""
    from concurrent.futures import Future

    from closedloop import realtime

    future: Future = Future()

    def run() -> None:
        realtime.normal()
        try:
            future.set_result(job())
        except BaseException as exc:  # handed to the loop's thread by the engine
            future.set_exception(exc)

    threading.Thread(target=run, name="closedloop-fit", daemon=True).start()
    return future


class LiveSession:
    """The live closed loop for one protocol on one resolved LSL source."""

    def __init__(
        self,
        protocol,
        source,
        outlets,
        *,
        duration_s: float | None = None,
        stall_timeout_s: float = 30.0,
        record: str | None = None,
        ttl=None,
        stimulators=(),
        dispatcher=None,
        seed: int = 0,
        keep_latencies: bool = True,
        record_streams: list[str] | None = None,
        record_markers: bool = False,
        check_units: bool = True,
    ) -> None:
        from closedloop.engine import ArrivalLead, Engine
        from closedloop.stimulators import TTLStimulator, stimulator_latency_s

        self.protocol = protocol
        self.source = source
        self.outlets = outlets
        # the TTL box first: its write time is the delivery time
        self.stimulators = ([TTLStimulator(ttl)] if ttl is not None else []) + list(stimulators)
        self.stimulator_errors: dict[str, int] = {}
        # devices that follow the engine's State (a feedback tone): called once per chunk
        self._state_sinks = [s for s in self.stimulators if callable(getattr(s, "on_state", None))]
        # the slowest device's declared latency is taken off every plan, as technical_delay_s is
        self.output_latency_s = max((stimulator_latency_s(s) for s in self.stimulators), default=0.0)
        # units wrong by a factor of a thousand or more hold triggering (the engine's units check)
        self.engine = Engine(
            protocol, source.layout.ch_names, source.sfreq, seed=seed, run_fit=fit_in_background,
            output_delay_s=self.output_latency_s,
            declared_scale=source.layout.scale_of if check_units else False,
        )
        self.duration_s = duration_s
        self.stall_timeout_s = stall_timeout_s
        self.ttl = ttl
        self.stats = LiveStats()
        self.arrival = ArrivalLead()
        self.keep_latencies = keep_latencies
        self.stop_event = threading.Event()
        self.recorder = Recorder(record, source, outlets, protocol) if record else None
        self.end_reason = ""
        self.capture = None
        if self.recorder is not None and (record_streams or record_markers):
            from closedloop.lsl.capture import StreamCapture

            self.capture = StreamCapture(
                self.recorder,
                wanted=list(record_streams or []),
                all_markers=record_markers,
                exclude_source_ids={outlets.marker_info.source_id(), outlets.state_info.source_id()},
                input_source_id=source.identity.source_id,
                exclude_uids={getattr(source, "uid", "")},
            )
        self.warnings: list[str] = []  # said on stderr during the run, kept for the summary
        # user callbacks (closedloop.Session.on_trigger/on_state), called from their own thread
        self.dispatcher = dispatcher
        # operator control (pause, resume, stop) from any thread; the loop thread writes the markers
        self.paused = False
        self._control: queue.SimpleQueue = queue.SimpleQueue()

    def refresh_output_latency(self) -> float:
        """Take the stimulators' declared latencies again (a sound card knows its own once its
        stream runs) and plan with the largest from now on; returns it."""
        from closedloop.stimulators import stimulator_latency_s

        self.output_latency_s = max((stimulator_latency_s(s) for s in self.stimulators), default=0.0)
        self.engine.planner.output_delay_s = self.output_latency_s
        return self.output_latency_s

    # --------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            self.stop_event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def stop(self, source: str = "") -> None:
        """End the session (any thread); with ``source`` a ``stop`` marker names who asked."""
        extra = self._hold_stimulators("pause")
        if source:
            self._control.put(("stop", source, extra))
        self.stop_event.set()

    def pause(self, source: str = "") -> None:
        """Hold triggering until :meth:`resume` (any thread; takes effect before the next delivery).

        A ``pause`` marker (with ``source``, who asked) goes onto the Markers stream and into the
        recording.
        """
        self.paused = True
        self._control.put(("pause", source, self._hold_stimulators("pause")))

    def resume(self, source: str = "") -> None:
        """Let triggering go on after :meth:`pause` (a ``resume`` marker is written)."""
        self._control.put(("resume", source, self._hold_stimulators("resume")))

    def _hold_stimulators(self, action: str) -> dict:
        """Tell devices that queue ahead (a sound card) to cancel or accept again, at once; what
        they report (e.g. the stimuli cancelled) goes into the control marker."""
        extra: dict = {}
        for stim in self.stimulators:
            hook = getattr(stim, action, None)
            if callable(hook):
                try:
                    out = hook()
                except Exception:
                    self._count_stimulator_error(stim)
                    continue
                if isinstance(out, dict):
                    extra.update(out)
        return extra

    def _apply_control(self, clock) -> None:
        """Loop thread: carry out operator requests and write their markers."""
        import json

        while True:
            try:
                action, source, extra = self._control.get_nowait()
            except queue.Empty:
                return
            if action == "pause":
                self.paused = True
            elif action == "resume":
                self.paused = False
            self.engine.paused = self.paused
            text = json.dumps({"event": action, "source": source, "protocol": self.protocol.name, **extra},
                              separators=(",", ":"))
            now = clock()
            self.outlets.push_marker(text, now)
            if self.recorder is not None:
                self.recorder.samples(Recorder.MARKERS, np.array([now]), [text])
            self.stats.control_log.append((now, action, source))

    # --------------------------------------------------------------- the loop
    def run(self) -> dict:
        import pylsl

        from closedloop.engine import arrival_slack_s, planning_horizon_s
        from closedloop.provenance import learned_ready, learned_record

        clock = pylsl.local_clock
        engine, source, outlets, stats = self.engine, self.source, self.outlets, self.stats
        sfreq = source.sfreq
        stats.started = clock()
        deadline = stats.started + self.duration_s if self.duration_s else math.inf
        last_data = stats.started
        next_clock = stats.started
        chunk_interval = 0.0  # typical time between chunks, learnt as we go
        stall_after = 0.1
        pending = None
        pulses: list[float] = []
        burst_index = 1
        correction = source.correction
        rec = self.recorder
        from closedloop.records import State

        dispatcher = self.dispatcher
        wants_states = dispatcher is not None and dispatcher.wants_states
        wants_record = wants_states or bool(self._state_sinks)
        if dispatcher is not None:
            dispatcher.start()
        units = engine.units
        units_ok = units is None or units.ok
        units_told = False
        learned_written = rec is None
        # chunks later than this after their newest sample move the planning window on
        slack_s = arrival_slack_s(self.protocol.trigger, engine.band_hz)
        # Helper threads (recorder, TTL, monitor) must hand the GIL back quickly, or a waiting
        # delivery can be late by a whole default switch interval (5 ms).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if self.capture is not None:
            self.capture.start()
        # everything built so far (mne, numpy, the engine) is moved out of the collector's reach:
        # a full collection then walks only what the session itself allocates (milliseconds less)
        gc.collect()
        gc.freeze()
        try:
            while not self.stop_event.is_set():
                if not self._control.empty():
                    self._apply_control(clock)
                    if self.paused and pending is not None:
                        engine.drop(pending, "paused")
                        pending = None
                now = clock()
                if now >= deadline:
                    self.end_reason = "duration reached"
                    self._finish_burst(pulses, burst_index, clock)
                    break
                if pulses and self.paused:  # the rest of a burst is held too
                    pulses.clear()
                    continue
                if pulses and now >= pulses[0] - SPIN_S:
                    self._wait_until(pulses[0], clock)
                    pulses.pop(0)
                    self._pulse(burst_index)
                    burst_index += 1
                    continue
                if pending is not None:
                    to_fire = pending.time_s - now
                    if to_fire <= GUARD_S:
                        fired_at = self._deliver(pending, clock)
                        if fired_at is not None and pending.pulses > 1:
                            pulses = [fired_at + k * pending.pulse_interval_s for k in range(1, pending.pulses)]
                            burst_index = 1
                        pending = None
                        continue
                    timeout = min(to_fire - GUARD_S, POLL_S)
                elif pulses:
                    timeout = min(max(pulses[0] - SPIN_S - now, 0.0), POLL_S)
                else:
                    timeout = POLL_S
                chunk, stamps = source.pull(timeout)
                now = clock()
                if source.notices:
                    self._say_notices()
                if chunk is None:
                    silent = now - last_data
                    if not stats.stalled and silent > stall_after and stats.chunks:
                        stats.stalled = True
                        stats.stalls += 1
                        engine.stream_gap(now)
                        if pending is not None:
                            engine.drop(pending, "stream stalled")
                            pending = None
                        logger.warning("the input stream stalled (%.2f s without data); triggering held.", silent)
                    if silent > self.stall_timeout_s:
                        self.end_reason = f"no data for {silent:.1f} s (--timeout)"
                        refused = list(getattr(source, "refused", {}).values())
                        others = (
                            "; a stream under the same source_id that is not this amplifier was not read ("
                            + "; ".join(r["differs"][0] for r in refused[:2]) + ")"
                            if refused
                            else ""
                        )
                        raise StreamError(
                            f"no data from stream {source.layout.name!r} for {silent:.1f} s "
                            f"(--timeout {self.stall_timeout_s:g} s){others}; the recording was closed cleanly."
                        )
                    continue
                if stats.stalled:
                    stats.stalled = False
                    stats.stall_s += now - last_data
                    correction = source.refresh_time_correction()
                    if rec is not None:
                        rec.boundary()
                    logger.warning("data resumed after %.2f s; waiting for the filters to settle.", now - last_data)
                if stats.chunks:
                    gap = now - last_data
                    chunk_interval = gap if chunk_interval == 0.0 else 0.95 * chunk_interval + 0.05 * gap
                    stall_after = max(0.1, 4.0 * chunk_interval)
                last_data = now
                n = chunk.shape[1]
                stats.samples += n
                stats.chunks += 1
                if rec is not None:
                    rec.samples(Recorder.EEG, stamps, source.last_raw())
                    if stats.record_error is None and rec.error is not None:
                        stats.record_error = str(rec.error)
                        logger.warning(
                            "the recording stopped (%s); it keeps what was written so far and the "
                            "session goes on.", rec.error,
                        )
                # the newest sample's time on the amplifier's sample clock (push-time stamps that
                # jitter are dejittered by the source), in this machine's clock
                newest_ts = source.newest_ts + correction
                # plan only what falls before the next chunk is due on the sample clock (one usual
                # chunk after this one's newest sample), exactly as replay does; a late chunk then
                # costs a cycle, never a different decision rule. Streams whose chunks usually
                # arrive later than the decision latency plan that many chunks further ahead.
                horizon = planning_horizon_s(source.chunk_size or n, sfreq)
                lead = self.arrival.process(now - newest_ts, slack_s, horizon)
                state = engine.process(chunk, newest_ts, horizon, lead)
                pushed = outlets.push_state(state)
                if not units_ok:  # until the input's units are judged plausible
                    units_ok = units.ok
                    if not units_ok and units.status == "implausible" and not units_told:
                        units_told = True
                        self._warn(f"{units.message()} Triggering is held.")
                    elif units_ok and units_told:
                        self._warn("the input's amplitude is plausible EEG now; triggering is allowed again.")
                if self.keep_latencies:
                    # from the chunk's own stamp (the time it was pushed, for push-stamping drivers),
                    # or from its arrival when the stamp is later than that (stamps ahead of the clock)
                    stats.latency_s.append(pushed - min(stamps[-1] + correction, now))
                stats.last_state = state
                if rec is not None:
                    rec.samples(Recorder.STATE, np.array([pushed]), np.array([state.row()]))
                if wants_record:  # one State record for the devices that follow it and the callbacks
                    record = State(state.sample_ts, state.phase_deg, state.amplitude, state.feedback, state.gate, pushed)
                    if self._state_sinks:
                        self._feed_state(record)
                    if wants_states:
                        dispatcher.post("state", record)
                if state.plan is not None:
                    pending = state.plan
                if not learned_written and rec.has_protocol and learned_ready(engine):
                    learned_written = True
                    rec.protocol(learned_record(engine), now)
                if now >= next_clock:
                    correction = source.refresh_time_correction()
                    if rec is not None:
                        # collected at this moment of the stream's clock (LabRecorder's convention)
                        rec.clock_offset(Recorder.EEG, now - correction, correction)
                        # markers, state and protocol are stamped with this machine's clock: offset 0
                        rec.clock_offset(Recorder.MARKERS, now, 0.0)
                        rec.clock_offset(Recorder.STATE, now, 0.0)
                        if rec.has_protocol:
                            rec.clock_offset(Recorder.PROTOCOL, now, 0.0)
                    if self.capture is not None and (self.capture.notices or self.capture.errors):
                        self._say_notices()
                    next_clock = now + CLOCK_REFRESH_S
        finally:
            sys.setswitchinterval(switch_interval)
            gc.unfreeze()
            if pending is not None:
                engine.drop(pending, "session ended")
            if not self._control.empty():  # a stop() ends the loop before its marker is written
                self._apply_control(clock)
            self._close()
        if not self.end_reason:
            self.end_reason = "stopped"
        return self.summary()

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        logger.warning("%s", text)

    def _say_notices(self) -> None:
        """Say what the source (stream changes, odd stamps) and the capture found since."""
        for text in self.source.take_notices():
            self._warn(text.rstrip(".") + ".")
        if self.capture is not None:
            for text in self.capture.take_notices():
                self._warn(text.rstrip(".") + ".")

    def _wait_until(self, target: float, clock) -> float:
        """Sleep most of the way, then spin for the last fraction of a millisecond."""
        remaining = target - clock()
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)
        while True:
            now = clock()
            if now >= target:
                return now

    def _deliver(self, plan, clock) -> float | None:
        engine, stats = self.engine, self.stats
        if clock() <= plan.time_s:
            self._wait_until(plan.time_s, clock)
        fired_at = clock()
        if self.paused:  # asked between the plan and now: never deliver
            engine.drop(plan, "paused")
            stats.dropped += 1
            return None
        if not engine.deliver(plan, fired_at):
            stats.dropped += 1
            return None
        extra: dict = {}
        if self.stimulators:
            trigger = self._trigger(plan, fired_at)
            for k, stim in enumerate(self.stimulators):
                try:
                    out = stim.fire(trigger)
                except Exception:  # a device fault must never stop the loop
                    self._count_stimulator_error(stim)
                    continue
                if isinstance(out, dict):
                    extra.update({key: value for key, value in out.items() if key != "time_s"})
                    out = out.get("time_s")
                if k == 0 and out is not None:
                    # the first device (the TTL box) knows when it really went out
                    fired_at = float(out)
            self._burst_trigger = trigger
        from closedloop.lsl.outputs import marker_payload

        text = marker_payload(plan, self.protocol.name, extra)
        self.outlets.push_marker(text, fired_at)
        stats.triggers += 1
        stats.delivery_error_s.append(abs(fired_at - plan.time_s))
        stats.marker_log.append({"time": fired_at, "scheduled": plan.time_s, "sample_ts": plan.sample_ts, "phase_deg": plan.phase_deg, "target_phase_deg": plan.target_phase_deg, "seq": plan.seq})
        if self.recorder is not None:
            self.recorder.samples(Recorder.MARKERS, np.array([fired_at]), [text])
        if self.dispatcher is not None and self.dispatcher.wants_triggers:
            self.dispatcher.post("trigger", self._trigger(plan, fired_at))
        return fired_at

    def _trigger(self, plan, time_s: float):
        from closedloop.records import Trigger

        return Trigger(
            seq=plan.seq, time_s=time_s, sample_ts=plan.sample_ts, event=plan.event,
            target_phase_deg=plan.target_phase_deg, phase_deg=plan.phase_deg, amplitude=plan.amplitude,
            scheduled_s=plan.time_s, crossing_s=plan.crossing_s, pulses=plan.pulses,
            pulse_interval_s=plan.pulse_interval_s, protocol=self.protocol.name,
        )

    def _finish_burst(self, pulses: list[float], index: int, clock) -> None:
        """At the end of the duration: the later pulses of the burst in progress go out on time, and
        devices that queue their own (a sound card) play what they queued. A stop cancels them."""
        if self.paused:
            pulses.clear()
            return
        for due in pulses:
            self._wait_until(due, clock)
            self._pulse(index)
            index += 1
        pulses.clear()
        for stim in self.stimulators:
            drain = getattr(stim, "drain", None)
            if drain is not None:
                try:
                    drain()
                except Exception:
                    self._count_stimulator_error(stim)

    def _pulse(self, index: int) -> None:
        """The later pulses of the last delivered burst, on every device that does bursts."""
        trigger = getattr(self, "_burst_trigger", None)
        for stim in self.stimulators:
            pulse = getattr(stim, "pulse", None)
            if pulse is None or trigger is None:
                continue
            try:
                pulse(trigger, index)
            except Exception:
                self._count_stimulator_error(stim)

    def _feed_state(self, record) -> None:
        """Each State to the devices that follow it (a feedback tone), on the loop thread: their
        ``on_state`` must only hand the value over."""
        for sink in self._state_sinks:
            try:
                sink.on_state(record)
            except Exception:
                self._count_stimulator_error(sink)

    def _count_stimulator_error(self, stim) -> None:
        name = type(stim).__name__
        self.stimulator_errors[name] = self.stimulator_errors.get(name, 0) + 1

    def _close(self) -> None:
        if self.capture is not None:
            self.capture.stop()  # before the recorder: their last samples go in first
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.recorder is not None:
            try:
                self.recorder.close()
            finally:
                self.stats.record_error = str(self.recorder.error) if self.recorder.error else None
        for stim in self.stimulators:
            close = getattr(stim, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self._count_stimulator_error(stim)

    # --------------------------------------------------------------- figures
    def summary(self) -> dict:
        stats, engine = self.stats, self.engine
        counts = engine.summary()
        return {
            "end_reason": self.end_reason,
            "samples": stats.samples,
            "chunks": stats.chunks,
            "chunk_size_learnt": getattr(self.source, "chunk_size", 0),
            "split_chunks_completed": getattr(self.source, "n_completed", 0),
            "dropped_samples": counts["missing_samples"],
            "gaps": counts["gaps"],
            "stalls": stats.stalls,
            "triggers": stats.triggers,
            "triggers_dropped": counts["triggers_dropped"],
            "dropped_by_reason": counts["dropped_by_reason"],
            "latency_ms_p50": stats.latency_s.percentile(50) * 1e3,
            "latency_ms_p99": stats.latency_s.percentile(99) * 1e3,
            "latency_ms_max": stats.latency_s.percentile(100) * 1e3,
            "delivery_error_ms_p50": stats.delivery_error_s.percentile(50) * 1e3,
            "delivery_error_ms_p99": stats.delivery_error_s.percentile(99) * 1e3,
            "record_error": stats.record_error,
            "stimulator_errors": dict(self.stimulator_errors),
            "callbacks": self.dispatcher.summary() if self.dispatcher is not None else {},
            "stimulators": {type(s).__name__: s.summary() for s in self.stimulators if callable(getattr(s, "summary", None))},
            "control": [{"time": t, "action": a, "source": src} for t, a, src in stats.control_log],
            "timestamps": self._timestamps_summary(),
            "input": self._input_summary(),
            "units": self.engine.units.summary() if self.engine.units is not None else None,
            "recorded_streams": self.capture.summary() if self.capture is not None else [],
            "warnings": list(self.warnings),
            "engine": counts,
        }

    def _input_summary(self) -> dict:
        source = self.source
        layout = source.layout
        out = {
            "name": layout.name,
            "type": layout.stype,
            "source_id": layout.source_id,
            "host": getattr(layout, "host", ""),
            "channels": source.n_channels,
            "sfreq": source.sfreq,
            "format": layout.channel_format,
            "units": sorted(set(layout.units)),
            "units_given": getattr(layout, "units_given", None),
        }
        if hasattr(source, "identity_summary"):
            out["identity"] = source.identity_summary()
        return out

    def _timestamps_summary(self) -> dict:
        clock = getattr(self.source, "sample_clock", None)
        lead = {"plan_lead_ms_max": round(self.arrival.max_lead_s * 1e3, 3),
                "arrival_lag_ms_p90": round(self.arrival.lag_s * 1e3, 3)}
        if hasattr(self.source, "timestamps_summary"):
            lead.update(self.source.timestamps_summary())
        if clock is None:
            return {"dejitter": False, **lead}
        return {"dejitter": True, **clock.summary(), **lead}
