"""``closedloop.Session``: the live closed loop for scripts (and for ``closedloop run``).

A session connects to one LSL stream, runs one protocol on it, publishes the Markers and State
streams, drives its stimulators (a serial TTL box, a sound card, a user's own device), records to
XDF if asked, and hands every delivered trigger and every State to the user's callbacks on a
thread of their own.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from closedloop.errors import UsageError

__all__ = ["Session"]

logger = logging.getLogger("closedloop.session")


class Session:
    """A live session: one protocol on one LSL stream.

    Parameters
    ----------
    protocol : Protocol or str
        A :class:`closedloop.Protocol`, a preset name or a TOML path.
    source_id, stream_name, stream_type, host : str, optional
        Which input stream: it must match every selector given (``source_id`` and name exactly,
        type and host in any case; type EEG when none is given); only regularly sampled numeric
        streams are candidates, and more than one match is refused. Once connected, the stream's
        identity is pinned: a stream under the same source_id with other channels, rate or host
        is never read.
    units : str or float, optional
        The units of the input's voltage channels, overriding what the stream says (``"V"``,
        ``"mV"``, ``"uV"``, ``"nV"``, or mne-lsl's codes ``0``, ``-3``, ``-6``, ``-9``); a factor
        to microvolts as a float.
    resolve_timeout : float
        Seconds to wait for the stream (default 10).
    duration : float, optional
        Stop after this many seconds (``run(duration_s=...)`` overrides it).
    timeout : float
        End with :class:`~closedloop.errors.StreamError` after this long without data (default 30 s).
    record : str, optional
        Record the session to this XDF file (and its summary beside it, ``FILE.summary.json``),
        with the protocol as resolved.
    record_stream : iterable of str
        With ``record``: also record every stream with these names or source_ids, as LabRecorder
        would (streams that appear later are picked up).
    record_markers : bool
        With ``record``: also record every marker stream visible.
    marker_name, marker_source_id, state_name, state_source_id : str, optional
        Names and source_ids of the Markers and State streams.
    serial : str, optional
        Serial port of a TTL trigger box; ``ttl_width`` its pulse width (default 5 ms).
    sound : str or int, optional
        Play the protocol's ``[sound]`` stimulus at each trigger (a feedback protocol: its tone)
        on this output device, timed on the device's own clock (``closedloop sound`` lists them).
    stimulators : iterable of Stimulator
        More output devices (:class:`closedloop.Stimulator`), driven after the TTL box.
    monitor : bool
        A live terminal panel on stderr.
    realtime : bool
        Run the loop under ``SCHED_FIFO`` with locked memory (``realtime_priority``, default 70);
        refused without the privilege: a note, normal priority.
    raw_timestamps : bool
        Take the stream's timestamps as they are (no dejittering).
    seed : int
        Seed for sham phases and interval jitter.
    summary_json : str, optional
        Write the end-of-run summary to this JSON file.
    ui : bool
        Serve the operator's and the participant's browser pages beside the loop, from a process
        of their own (``ui_port``, ``ui_host``; it prints their addresses and the control token).
    control : str, optional
        Open a Unix-domain control socket at this path (mode 0600), so that a standalone
        ``closedloop ui --control PATH`` may pause, resume and stop the session.
    status_name, status_source_id : str, optional
        The session's status stream (``closedloop-status``, always published: hold reason,
        baseline countdown, counts, the protocol as resolved).
    callback_queue : int
        Triggers and States the callback queue holds; beyond it they are dropped and counted.

    Examples
    --------
    >>> import closedloop as cl
    >>> with cl.Session("mu-trough-c3", source_id="amp-1", record="s.xdf") as session:
    ...     session.on_trigger(lambda trigger: print(trigger.seq, trigger.phase_deg))
    ...     summary = session.run(duration_s=600)
    """

    def __init__(
        self,
        protocol,
        *,
        source_id: str | None = None,
        stream_name: str | None = None,
        stream_type: str | None = None,
        host: str | None = None,
        units: str | float | None = None,
        resolve_timeout: float = 10.0,
        duration: float | None = None,
        timeout: float = 30.0,
        record: str | None = None,
        record_stream: Iterable[str] = (),
        record_markers: bool = False,
        marker_name: str | None = None,
        marker_source_id: str | None = None,
        state_name: str | None = None,
        state_source_id: str | None = None,
        serial: str | None = None,
        ttl_width: float = 0.005,
        sound: str | int | None = None,
        stimulators: Iterable = (),
        monitor: bool = False,
        realtime: bool = False,
        realtime_priority: int | None = None,
        raw_timestamps: bool = False,
        seed: int = 0,
        summary_json: str | None = None,
        ui: bool = False,
        ui_port: int = 8765,
        ui_host: str = "127.0.0.1",
        control: str | None = None,
        status_name: str | None = None,
        status_source_id: str | None = None,
        callback_queue: int = 1024,
    ) -> None:
        from closedloop.callbacks import CallbackDispatcher
        from closedloop.protocol import Protocol, load_protocol

        self.protocol = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
        self.duration = _check_duration(duration, "duration")
        if realtime_priority is not None and not realtime:
            raise UsageError("--realtime-priority needs --realtime.")
        timeout = _check_duration(timeout, "--timeout")
        from closedloop.lsl.selection import StreamSelector

        self.selector = StreamSelector(source_id=source_id, name=stream_name, stype=stream_type, host=host)
        self.units = _units_factor(units)
        self.record_stream = [str(x) for x in ([record_stream] if isinstance(record_stream, str) else record_stream)]
        self.record_markers = bool(record_markers)
        if (self.record_stream or self.record_markers) and not record:
            raise UsageError("--record-stream and --record-markers need --record FILE.xdf to record into.")
        self.resolve_timeout = float(resolve_timeout)
        self.timeout = float(timeout)
        self.record = record
        self.outlet_names = {
            "marker_name": marker_name, "marker_source_id": marker_source_id,
            "state_name": state_name, "state_source_id": state_source_id,
        }
        self.serial, self.ttl_width = serial, ttl_width
        self.sound = sound
        self.stimulators = list(stimulators)
        self.monitor = bool(monitor)
        self.realtime, self.realtime_priority = bool(realtime), realtime_priority
        self.raw_timestamps = bool(raw_timestamps)
        self.seed = seed
        self.summary_json = summary_json
        self.views_options = {
            "ui": bool(ui), "ui_port": ui_port, "ui_host": ui_host, "control": control,
            "status_name": status_name, "status_source_id": status_source_id,
        }
        self.dispatcher = CallbackDispatcher(callback_queue)
        self.info = None  # the resolved pylsl.StreamInfo
        self.outlets = None
        self.ttl = None
        self.live = None  # the running closedloop.live.LiveSession
        self.summary: dict | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop_requested = False

    # ------------------------------------------------------------------ callbacks
    def on_trigger(self, callback: Callable) -> Callable:
        """Call ``callback(trigger)`` (a :class:`closedloop.Trigger`) after each delivery.

        Runs on the session's callback thread, never on the loop's; returns ``callback`` (so it
        can decorate a function).
        """
        self.dispatcher.add("trigger", callback)
        return callback

    def on_state(self, callback: Callable) -> Callable:
        """Call ``callback(state)`` (a :class:`closedloop.State`) once per processed chunk."""
        self.dispatcher.add("state", callback)
        return callback

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> Session:
        """Choose the input stream and open the outputs (Markers and State streams, the TTL port).

        Call it first to fail early (a stream that is missing or ambiguous, a port that cannot be
        opened); :meth:`run` does what is left. The inlet itself opens in :meth:`run`, on the
        thread that runs the loop (real-time scheduling is inherited by liblsl's threads).
        """
        from closedloop.lsl.selection import choose_stream

        self._open_outputs()
        if self.info is None:
            try:
                self.info = choose_stream(self.selector, self.resolve_timeout)
            except BaseException:
                self._close_outputs()
                raise
        return self

    def _open_outputs(self) -> None:
        from closedloop.lsl.outputs import EngineOutlets

        try:
            if self.serial and self.ttl is None:
                from closedloop.ttl import SerialTTL

                self.ttl = SerialTTL(self.serial, pulse_width_s=self.ttl_width)
            if self.outlets is None:
                self.outlets = EngineOutlets(self.protocol.name, **self.outlet_names)
        except BaseException:
            self._close_outputs()
            raise

    def _open_source(self):
        """The input, on this thread: the stream chosen by :meth:`connect`, or chosen and
        connected to at once (the first candidate connects while the round confirms it)."""
        from closedloop.lsl.source import LSLSource, open_source

        options = {"dejitter": not self.raw_timestamps, "units": self.units}
        if self.info is not None:
            return LSLSource(self.info, **options)
        source = open_source(self.selector, self.resolve_timeout, **options)
        self.info = source.info
        return source

    def run(self, duration_s: float | None = None) -> dict:
        """Run the loop in this thread until ``duration_s`` (or the session's ``duration``) has
        passed, :meth:`stop` is called, or Ctrl-C; returns the summary.

        Raises
        ------
        StreamError
            The stream is not found, or is lost beyond recovery (no data for ``timeout``).
        DataError, ProtocolError
            The stream does not suit the protocol (a missing channel, an unusable rate, strings).
        """
        from closedloop.live import LiveSession
        from closedloop.lsl.selection import stream_label

        duration = _check_duration(duration_s, "duration_s") if duration_s is not None else self.duration
        rt = None
        if self.realtime:
            from closedloop import realtime

            priority = realtime.DEFAULT_PRIORITY if self.realtime_priority is None else self.realtime_priority
            try:  # before the inlet opens: liblsl's receiving threads inherit the policy
                rt = realtime.request(priority)
            except ValueError as exc:  # the priority's range is realtime.request's to check
                raise UsageError(f"--realtime-priority: {exc}") from exc
            for note in rt.notes:
                logger.warning("note: %s.", note)
        source = monitor = views = sound = None
        try:
            self._open_outputs()
            source = self._open_source()
            for note in source.layout.notes:
                logger.warning("note: %s.", note)
            stimulators = list(self.stimulators)
            if self.sound is not None:
                from closedloop.sound import SoundStimulator

                sound = SoundStimulator.from_protocol(self.protocol, self.sound)
                stimulators.append(sound)
            self.live = live = LiveSession(
                self.protocol, source, self.outlets,
                duration_s=duration, stall_timeout_s=self.timeout, record=self.record,
                ttl=self.ttl, stimulators=stimulators, dispatcher=self.dispatcher, seed=self.seed,
                record_streams=self.record_stream, record_markers=self.record_markers,
            )
            self.ttl = None  # the session's stimulators own and close it now
            if self._stop_requested:
                live.stop()
            logger.info("%r on %s; baseline %g s.", self.protocol.name, stream_label(self.info),
                        self.protocol.trigger.baseline_s)
            if self.monitor:
                from closedloop.monitor import Monitor

                monitor = Monitor(live)
                monitor.start()
            views = self._start_views(live)
            if sound is not None:  # last: nothing may hold the GIL for long once its callback runs
                from closedloop.sound import start_sound

                start_sound(sound)
                live.refresh_output_latency()
            restore = _stop_on_signals(live)
            try:
                summary = live.run()
            except BaseException:
                self.summary = self._finish(live.summary(), rt)
                raise
            finally:
                restore()
        except BaseException:
            if sound is not None and self.live is None:  # never handed to a loop that closes it
                sound.close()
            raise
        finally:
            if views is not None:
                views.close()
            if monitor is not None:
                monitor.stop()
            if source is not None:
                source.close()
            self._close_outputs()
        self.summary = self._finish(summary, rt)
        return self.summary

    def start(self, duration_s: float | None = None) -> Session:
        """Run the loop on a background thread; :meth:`wait` or :meth:`stop` to end it."""
        if self._thread is not None:
            raise UsageError("this session was already started; make a new Session to run again.")

        def target() -> None:
            try:
                self.run(duration_s)
            except BaseException as exc:  # re-raised by wait()
                self._error = exc

        self._thread = threading.Thread(target=target, name="closedloop-session", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> dict | None:
        """Wait for a started session to end; its summary (None while it still runs). An error
        that ended the session is raised here."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.summary

    def stop(self) -> None:
        """End the session (from any thread); a started session is waited for."""
        self._stop_requested = True
        if self.live is not None:
            self.live.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def pause(self) -> None:
        """Hold triggering (a ``pause`` marker is written) until :meth:`resume`."""
        self._running("pause").pause(source="api")

    def resume(self) -> None:
        self._running("resume").resume(source="api")

    @property
    def running(self) -> bool:
        return self.live is not None and self.summary is None

    def _running(self, what: str):
        if self.live is None:
            raise UsageError(f"cannot {what}: the session is not running.")
        return self.live

    def close(self) -> None:
        """Stop, and release the outputs if the session never ran."""
        self.stop()
        self._close_outputs()

    def __enter__(self) -> Session:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        chosen = {k: getattr(self.selector, k) for k in ("source_id", "name", "stype", "host")}
        where = ", ".join(f"{k}={v!r}" for k, v in chosen.items() if v) or "type 'EEG'"
        if self.summary is not None:
            state = f"ended ({self.summary.get('end_reason')}, {self.summary.get('triggers')} triggers)"
        elif self.live is not None:
            state = f"running ({self.live.stats.triggers} triggers)"
        else:
            state = "not started"
        return f"<Session {self.protocol.name!r} on {where}: {state}>"

    # ------------------------------------------------------------------ internals
    def _start_views(self, live):
        """The status stream (always), the browser views (``ui``) and the control socket."""
        from types import SimpleNamespace

        from closedloop.ui.launch import start_views

        args = SimpleNamespace(
            **self.views_options, record=self.record,
            state_source_id=self.outlet_names["state_source_id"],
        )
        views = start_views(live, args)
        if live.capture is not None:  # the session's own status stream is not another program's
            live.capture.exclude_source_ids.add(views.status.source_id)
        return views

    def _close_outputs(self) -> None:
        if self.outlets is not None:
            self.outlets.close()
            self.outlets = None
        if self.ttl is not None:
            self.ttl.close()
            self.ttl = None

    def _finish(self, summary: dict, rt) -> dict:
        summary["realtime"] = rt.as_dict() if rt is not None else {"requested": False}
        for note in summary["engine"].get("notes", []):
            logger.warning("%s", note)
        if summary.get("record_error"):
            logger.warning("the recording stopped early: %s", summary["record_error"])
        if self.summary_json:
            _write_json(self.summary_json, summary)
        if self.record:
            # beside the recording, for reports: what the XDF itself does not hold
            try:
                _write_json(self.record + ".summary.json", summary)
            except OSError as exc:
                logger.warning("could not write %s.summary.json: %s", self.record, exc)
        return summary


def _units_factor(units) -> float | None:
    """``units`` (a spelling, an mne-lsl code, or a factor to microvolts) as a factor, or None."""
    if units is None:
        return None
    if isinstance(units, (int, float)) and not isinstance(units, bool) and not isinstance(units, int):
        return float(units)
    from closedloop.units import parse_units_option

    try:
        return parse_units_option(str(units))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_duration(value, what: str) -> float | None:
    from closedloop.checks import positive_float

    if value is None:
        return None
    return positive_float(value, "--duration" if what == "duration" else what, "seconds")


def _stop_on_signals(live) -> Callable[[], None]:
    """SIGINT/SIGTERM stop the loop cleanly while it runs on the main thread; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        live.stop()

    saved: list[tuple[int, object]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved.append((sig, signal.signal(sig, handler)))
        except ValueError:  # pragma: no cover - not the main thread
            pass

    def restore() -> None:
        for sig, previous in saved:
            signal.signal(sig, previous)

    return restore


def _write_json(path: str | Path, summary: dict) -> None:
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
