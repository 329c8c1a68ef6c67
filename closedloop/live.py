"""``closedloop run``: the live loop on an LSL stream.

One thread does everything that decides timing: it blocks in liblsl until new samples arrive,
runs the engine on them, publishes a State sample, and delivers planned triggers on time (sleep,
then a short precise wait for the last fraction of a millisecond). Recording, TTL output and the
monitor run on their own threads and never hold it up.
"""

from __future__ import annotations

import argparse
import gc
import math
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from closedloop.errors import StreamError, UsageError

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
        seed: int = 0,
        keep_latencies: bool = True,
        record_streams: list[str] | None = None,
        record_markers: bool = False,
        check_units: bool = True,
    ) -> None:
        from closedloop.engine import Engine
        from closedloop.lsl.dejitter import ArrivalLead
        from closedloop.plausibility import UnitsCheck

        self.protocol = protocol
        self.source = source
        self.outlets = outlets
        self.engine = Engine(protocol, source.layout.ch_names, source.sfreq, seed=seed, background_fit=True)
        self.duration_s = duration_s
        self.stall_timeout_s = stall_timeout_s
        self.ttl = ttl
        self.stats = LiveStats()
        self.arrival = ArrivalLead()
        self.keep_latencies = keep_latencies
        self.stop_event = threading.Event()
        self.recorder = Recorder(record, source, outlets, protocol) if record else None
        self.end_reason = ""
        used = [int(i) for i in self.engine.used_channels]
        # units that are wrong by a factor of a thousand or more hold triggering, and say so
        self.units_check = (
            UnitsCheck(
                source.sfreq,
                used,
                ch_names=[source.layout.ch_names[i] for i in used],
                declared_scale=source.layout.scale_of(used),
            )
            if check_units and used
            else None
        )
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

    # --------------------------------------------------------------- signals
    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            self.stop_event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    def stop(self) -> None:
        self.stop_event.set()

    # --------------------------------------------------------------- the loop
    def run(self) -> dict:
        import pylsl

        from closedloop.engine import DECISION_LATENCY_S
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
        correction = source.correction
        rec = self.recorder
        units = self.units_check
        units_ok = units is None
        units_told = False
        learned_written = rec is None
        # chunks later than this after their newest sample move the planning window on: the
        # decision latency plus half the phase tolerance (plans up to the tolerance late still go
        # out, so prompt streams keep the replay rule exactly)
        trig = self.protocol.trigger
        slack_s = DECISION_LATENCY_S + 0.5 * trig.phase_tolerance_deg / (360.0 * sum(engine.band_hz) / 2.0)
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
                now = clock()
                if now >= deadline:
                    self.end_reason = "duration reached"
                    break
                if pulses and now >= pulses[0] - SPIN_S:
                    self._wait_until(pulses[0], clock)
                    pulses.pop(0)
                    if self.ttl is not None:
                        self.ttl.fire(self._ttl_code())
                    continue
                if pending is not None:
                    to_fire = pending.time_s - now
                    if to_fire <= GUARD_S:
                        fired_at = self._deliver(pending, clock)
                        if fired_at is not None and pending.pulses > 1:
                            pulses = [fired_at + k * pending.pulse_interval_s for k in range(1, pending.pulses)]
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
                        print(f"closedloop run: the input stream stalled ({silent:.2f} s without data); triggering held.", file=sys.stderr)
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
                    print(f"closedloop run: data resumed after {now - last_data:.2f} s; waiting for the filters to settle.", file=sys.stderr)
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
                        print(
                            f"closedloop run: the recording stopped ({rec.error}); it keeps what was "
                            "written so far and the session goes on.",
                            file=sys.stderr,
                        )
                # the newest sample's time on the amplifier's sample clock (push-time stamps that
                # jitter are dejittered by the source), in this machine's clock
                newest_ts = source.newest_ts + correction
                # plan only what falls before the next chunk is due on the sample clock (one usual
                # chunk after this one's newest sample), exactly as replay does; a late chunk then
                # costs a cycle, never a different decision rule. Streams whose chunks usually
                # arrive later than the decision latency plan that many chunks further ahead.
                horizon = (source.chunk_size or n) / sfreq
                lead = self.arrival.update(now - newest_ts, slack_s, horizon)
                if not units_ok:
                    units_ok = units.process(chunk)
                    if not units_ok:
                        # not plausibly EEG in the units it is taken in: no trigger on it
                        engine.hold(horizon, newest_ts)
                        if units.status == "implausible" and not units_told:
                            units_told = True
                            self._warn(f"{units.message()} Triggering is held.")
                    elif units_told:
                        self._warn("the input's amplitude is plausible EEG now; triggering is allowed again.")
                state = engine.process(chunk, newest_ts, horizon, lead)
                pushed = outlets.push_state(state)
                if self.keep_latencies:
                    # from the chunk's own stamp (the time it was pushed, for push-stamping drivers),
                    # or from its arrival when the stamp is later than that (stamps ahead of the clock)
                    stats.latency_s.append(pushed - min(stamps[-1] + correction, now))
                stats.last_state = state
                if rec is not None:
                    rec.samples(Recorder.STATE, np.array([pushed]), np.array([[state.sample_ts, state.phase_deg, state.amplitude, state.feedback, float(state.gate)]]))
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
            self._close()
        if not self.end_reason:
            self.end_reason = "stopped"
        return self.summary()

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        print(f"closedloop run: {text}", file=sys.stderr)

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
        if not engine.deliver(plan, fired_at):
            stats.dropped += 1
            return None
        if self.ttl is not None:
            # the delivery time is the moment the code byte went out
            written = self.ttl.trigger(self._ttl_code())
            if written is not None:
                fired_at = written
        from closedloop.lsl.outputs import marker_payload

        text = marker_payload(plan, self.protocol.name)
        self.outlets.push_marker(text, fired_at)
        stats.triggers += 1
        stats.delivery_error_s.append(abs(fired_at - plan.time_s))
        stats.marker_log.append({"time": fired_at, "scheduled": plan.time_s, "sample_ts": plan.sample_ts, "phase_deg": plan.phase_deg, "target_phase_deg": plan.target_phase_deg, "seq": plan.seq})
        if self.recorder is not None:
            self.recorder.samples(Recorder.MARKERS, np.array([fired_at]), [text])
        return fired_at

    def _ttl_code(self) -> int:
        return 2 if self.protocol.trigger.event == "sham" else 1

    def _close(self) -> None:
        if self.capture is not None:
            self.capture.stop()  # before the recorder: their last samples go in first
        if self.recorder is not None:
            try:
                self.recorder.close()
            finally:
                self.stats.record_error = str(self.recorder.error) if self.recorder.error else None
        if self.ttl is not None:
            self.ttl.close()

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
            "timestamps": self._timestamps_summary(),
            "input": self._input_summary(),
            "units": self.units_check.summary() if self.units_check is not None else None,
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


# ---------------------------------------------------------------------- command
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", "-p", required=True, help="protocol file (.toml) or preset name")
    src = p.add_argument_group(
        "source", "the one input stream: it must match every selector given (type EEG if none is); only "
        "regularly sampled numeric streams are candidates; more than one match is refused (exit 4)"
    )
    src.add_argument("--stream-name", help="the input stream's name (exact)")
    src.add_argument("--stream-type", help="the input stream's type, any case (default EEG)")
    src.add_argument("--source-id", help="the input stream's source_id (exact; the most specific)")
    src.add_argument("--host", help="the host name of the machine publishing the input stream (any case)")
    src.add_argument("--units", metavar="UNIT",
                     help="the units of the input's voltage channels, overriding what the stream says: "
                          "V, mV, uV (or µV), nV, or mne-lsl's codes 0, -3, -6, -9")
    p.add_argument("--resolve-timeout", type=float, default=10.0, help="seconds to wait for the stream (default 10)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="end with exit 4 after this long without data (default 30 s)")
    p.add_argument("--record", help="record the session to this XDF file")
    p.add_argument("--record-stream", action="append", default=[], metavar="NAME_OR_SOURCE_ID",
                   help="with --record: also record every stream with this name or source_id (repeatable; "
                        "streams that appear later are picked up)")
    p.add_argument("--record-markers", action="store_true",
                   help="with --record: also record every marker stream visible (every stream of irregular rate)")
    p.add_argument("--marker-name", help="Markers stream name (default closedloop-markers)")
    p.add_argument("--marker-source-id", help="Markers stream source_id")
    p.add_argument("--state-name", help="State stream name (default closedloop-state)")
    p.add_argument("--state-source-id", help="State stream source_id")
    p.add_argument("--serial", help="serial port for TTL pulses (e.g. /dev/ttyUSB0)")
    p.add_argument("--ttl-width", type=float, default=0.005, help="TTL pulse width in seconds (default 0.005)")
    p.add_argument("--monitor", action="store_true", help="live terminal monitor")
    p.add_argument("--realtime", action="store_true",
                   help="run the loop under real-time scheduling (Linux SCHED_FIFO) with locked memory, so that "
                        "other programs cannot delay it; needs root or CAP_SYS_NICE (refused: a note, normal priority)")
    p.add_argument("--realtime-priority", type=int, default=None, metavar="P",
                   help="SCHED_FIFO priority 1-98 with --realtime (default 70)")
    p.add_argument("--raw-timestamps", action="store_true",
                   help="time triggers from the stream's timestamps as they are; by default they are mapped onto the "
                        "amplifier's sample clock, which removes the jitter of drivers that stamp at push time")
    p.add_argument("--seed", type=int, default=0, help="seed for sham phases and interval jitter")
    p.add_argument("--summary-json", help="write the end-of-run summary to this JSON file")


def run_command(args: argparse.Namespace) -> int:
    from closedloop.lsl.outputs import EngineOutlets
    from closedloop.lsl.source import open_source
    from closedloop.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if args.duration is not None and not args.duration > 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration}.")
    if (args.record_stream or args.record_markers) and not args.record:
        raise UsageError("--record-stream and --record-markers need --record FILE.xdf to record into.")
    units = None
    if args.units is not None:
        from closedloop.units import parse_units_option

        try:
            units = parse_units_option(args.units)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    rt = None
    if args.realtime_priority is not None and not args.realtime:
        raise UsageError("--realtime-priority needs --realtime.")
    if args.realtime:
        from closedloop import realtime

        priority = realtime.DEFAULT_PRIORITY if args.realtime_priority is None else args.realtime_priority
        # before the inlet opens: liblsl's receiving threads inherit the policy
        try:
            rt = realtime.request(priority)
        except ValueError as exc:  # the priority's range is realtime.request's to check
            raise UsageError(f"--realtime-priority: {exc}") from exc
        for note in rt.notes:
            print(f"closedloop run: note: {note}.", file=sys.stderr)
    ttl = None
    if args.serial:
        from closedloop.ttl import SerialTTL

        ttl = SerialTTL(args.serial, pulse_width_s=args.ttl_width)
    from closedloop.lsl.selection import StreamSelector

    selector = StreamSelector(
        source_id=args.source_id, name=args.stream_name, stype=args.stream_type, host=args.host
    )
    source = open_source(selector, args.resolve_timeout, dejitter=not args.raw_timestamps, units=units)
    info = source.info
    for note in source.layout.notes:
        print(f"closedloop run: note: {note}.", file=sys.stderr)
    outlets = EngineOutlets(
        protocol.name,
        marker_name=args.marker_name,
        marker_source_id=args.marker_source_id,
        state_name=args.state_name,
        state_source_id=args.state_source_id,
    )
    try:
        session = LiveSession(
            protocol,
            source,
            outlets,
            duration_s=args.duration,
            stall_timeout_s=args.timeout,
            record=args.record,
            ttl=ttl,
            seed=args.seed,
            record_streams=args.record_stream,
            record_markers=args.record_markers,
        )
        session.install_signal_handlers()
        from closedloop.lsl.selection import stream_label

        print(
            f"closedloop run: {protocol.name!r} on {stream_label(info)}; "
            f"baseline {protocol.trigger.baseline_s:g} s.",
            file=sys.stderr,
        )
        monitor = None
        if args.monitor:
            from closedloop.monitor import Monitor

            monitor = Monitor(session)
            monitor.start()
        try:
            summary = session.run()
        except StreamError:
            if args.summary_json:
                _write_summary(args.summary_json, session.summary())
            raise
        finally:
            if monitor is not None:
                monitor.stop()
    finally:
        source.close()
        outlets.close()
    summary["realtime"] = rt.as_dict() if rt is not None else {"requested": False}
    print(
        f"closedloop run: {summary['end_reason']}; {summary['samples']} samples, "
        f"{summary['dropped_samples']} dropped, {summary['triggers']} triggers "
        f"({summary['triggers_dropped']} dropped); latency p50 {summary['latency_ms_p50']:.3f} ms, "
        f"p99 {summary['latency_ms_p99']:.3f} ms.",
        file=sys.stderr,
    )
    for note in summary["engine"].get("notes", []):
        print(f"closedloop run: {note}", file=sys.stderr)
    checked = summary.get("units") or {}
    if checked.get("status") == "implausible":
        like = f"; the values look like {checked['looks_like']}" if checked.get("looks_like") else ""
        print(
            f"closedloop run: triggering was held for the whole session: the amplitude was implausible "
            f"for EEG (robust {checked['amplitude_uv']:.3g} µV{like}); see --units.",
            file=sys.stderr,
        )
    elif checked.get("status") == "pending" and summary["samples"] >= checked["window_s"] * source.sfreq:
        print(
            "closedloop run: triggering was held for the whole session: the protocol's channels never "
            "carried a signal to judge its units by (flat or not finite).",
            file=sys.stderr,
        )
    if summary["record_error"]:
        print(f"closedloop run: the recording stopped early: {summary['record_error']}", file=sys.stderr)
    if args.summary_json:
        _write_summary(args.summary_json, summary)
    if args.record:
        # beside the recording, for reports: what the XDF itself does not hold
        try:
            _write_summary(args.record + ".summary.json", summary)
        except OSError as exc:
            print(f"closedloop run: could not write {args.record}.summary.json: {exc}", file=sys.stderr)
    return 0


def _write_summary(path: str, summary: dict) -> None:
    import json

    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
