"""Running the loop-back qualification live, and the virtual looped-back amplifier as a process.

:func:`run_session` runs the protocol with the real live loop (:class:`closedloop.live.LiveSession`)
in this process, its TTL pulses on a serial port and the session recorded to XDF, exactly as
``closedloop run --serial PORT --record FILE`` does; what the recording itself does not hold (the
serial port's log of every pulse written, the engine's counts of planned and dropped triggers,
the protocol) goes into ``FILE.xdf.summary.json`` beside it, so that the analysis of a fresh
session and the re-analysis of a stored one (``--from-xdf``) read the same things.

In-process rather than ``closedloop run`` as a subprocess: the serial port's own log of every
write (``SerialTTL.on_sent``, the later pulses of trains included) and the engine's counts are at
hand without a second channel between processes, while the loop itself is the same code.

:class:`VirtualAmplifierProcess` starts ``closedloop bench virtual-amp`` in a process of its own
(its thread then never competes with the loop for this interpreter's lock), handing it the
master end of a pseudo-terminal opened here; the slave end is the ``--serial`` port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
import uuid
from pathlib import Path

from closedloop.errors import ClosedLoopError, StreamError

__all__ = ["VirtualAmplifierProcess", "run_session", "write_sidecar"]

logger = logging.getLogger(__name__)

#: How long the virtual amplifier's process may take to publish its stream.
AMP_START_TIMEOUT_S = 30.0
#: The session stops early when this many pulses went out and the trigger channel never rose ...
EARLY_CHECK_PULSES = 5
#: ... this long after the last of them.
EARLY_CHECK_GRACE_S = 1.0
#: The wiring check reads the trigger channel this often.
EARLY_CHECK_POLL_S = 0.1


class WiringCheck:
    """Stop a session early when pulses go out but the trigger channel never rises (wiring).

    A thread with an inlet of its own on the input stream reads the trigger channel every
    ``EARLY_CHECK_POLL_S`` until the first rising edge, then closes it and ends: the rest of the
    session runs without it. When ``EARLY_CHECK_PULSES`` pulses were written (``sent``, the serial
    port's log) and ``EARLY_CHECK_GRACE_S`` passed after the last without any edge, it stops the
    session and says why in :attr:`tripped`; the recording so far is then analysed as usual.
    """

    def __init__(self, info, channel: int, rule, sent: list, session, clock) -> None:
        self.info, self.channel, self.rule = info, channel, rule
        self.sent, self.session, self.clock = sent, session, clock
        self.edge_seen = False
        self.tripped: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-wiring-check", daemon=True)

    def start(self) -> WiringCheck:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import numpy as np
        import pylsl

        from closedloop import realtime

        realtime.background()
        try:
            inlet = pylsl.StreamInlet(self.info, max_buflen=5)
            inlet.open_stream(5.0)
        except RuntimeError as exc:  # pylsl's timeouts and losses; the check is a courtesy
            logger.debug("the wiring check could not open its inlet: %s", exc)
            return
        capacity = 4096
        dtype = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64, pylsl.cf_int8: np.int8,
                 pylsl.cf_int16: np.int16, pylsl.cf_int32: np.int32, pylsl.cf_int64: np.int64}
        buf = np.zeros((capacity, self.info.channel_count()), dtype=dtype.get(self.info.channel_format(), np.float64))
        was_high = None
        try:
            while not self._stop.wait(EARLY_CHECK_POLL_S):
                _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=capacity, dest_obj=buf)
                n = len(stamps)
                if n:
                    high = self.rule.high(buf[:n, self.channel])
                    prev = np.r_[high[0] if was_high is None else was_high, high[:-1]]
                    if np.any(high & ~prev):
                        self.edge_seen = True
                        return
                    was_high = bool(high[-1])
                if len(self.sent) >= EARLY_CHECK_PULSES:
                    last = self.sent[EARLY_CHECK_PULSES - 1][1]
                    if self.clock() - last > EARLY_CHECK_GRACE_S:
                        self.tripped = (f"{len(self.sent)} pulses went out and the trigger channel never rose; "
                                        "the session was stopped early")
                        self.session.stop()
                        return
        finally:
            with contextlib.suppress(RuntimeError):  # a lost stream has nothing left to close
                inlet.close_stream()


def write_sidecar(record: str | os.PathLike, summary: dict) -> Path:
    """Write the session's summary beside its recording as ``FILE.xdf.summary.json``."""
    import json

    path = Path(str(record) + ".summary.json")
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


def run_session(
    protocol,
    *,
    serial: str,
    record: str | os.PathLike,
    trigger_channel: str,
    signal_channel: str | None = None,
    rule=None,
    early_check: bool = True,
    ttl_width_s: float = 0.005,
    duration_s: float = 60.0,
    stream_name: str | None = None,
    stream_type: str | None = None,
    source_id: str | None = None,
    resolve_timeout_s: float = 10.0,
    seed: int = 0,
    raw_timestamps: bool = False,
    realtime: bool = False,
) -> dict:
    """Run ``protocol`` live for ``duration_s`` with TTL pulses on ``serial``, recorded to ``record``.

    The trigger and signal channels are checked against the stream's labels before anything
    runs (a ``DataError`` names the nearest labels). With ``early_check``, a :class:`WiringCheck`
    stops the session when pulses go out and the trigger channel (high by ``rule``) never rises;
    the summary then says so under ``early_stop``. Returns the session's summary (that of
    ``closedloop run``) with ``ttl`` (port, width, counts, and ``sent``: ``[code, t_written]`` of
    every pulse) and ``protocol`` (the protocol as a dict) added; it is also written beside the
    recording (:func:`write_sidecar`).
    """
    from closedloop.bench.loopback import EdgeRule, check_channels
    from closedloop.live import LiveSession
    from closedloop.lsl.outputs import EngineOutlets
    from closedloop.lsl.source import LSLSource, resolve_stream
    from closedloop.ttl import SerialTTL

    rt = None
    if realtime:
        from closedloop import realtime as rt_module

        rt = rt_module.request(rt_module.DEFAULT_PRIORITY)  # before the inlet: its threads inherit it
        for note in rt.notes:
            logger.warning("%s", note)
    info = resolve_stream(name=stream_name, stype=stream_type, source_id=source_id, timeout=resolve_timeout_s)
    source = LSLSource(info, dejitter=not raw_timestamps)
    outlets = ttl = check = None
    sent: list[tuple[int, float]] = []
    try:
        trigger_index, _ = check_channels(source.layout.ch_names, trigger_channel, signal_channel)
        if ttl_width_s < 2.0 / source.sfreq:
            logger.warning(
                "TTL pulses of %g ms are shorter than two sampling steps at %g Hz: an amplifier whose trigger "
                "input does not latch can miss them between two samples; give --ttl-width %g or more.",
                ttl_width_s * 1e3, source.sfreq, 2.0 / source.sfreq)
        ttl = SerialTTL(serial, pulse_width_s=ttl_width_s, on_sent=lambda code, t: sent.append((code, t)))
        tag = uuid.uuid4().hex[:10]
        outlets = EngineOutlets(
            protocol.name,
            marker_name="closedloop-loopback-markers", marker_source_id=f"closedloop-loopback-markers-{tag}",
            state_name="closedloop-loopback-state", state_source_id=f"closedloop-loopback-state-{tag}",
        )
        session = LiveSession(protocol, source, outlets, duration_s=duration_s, record=str(record), ttl=ttl,
                              seed=seed)
        session.install_signal_handlers()
        if early_check:
            import pylsl

            check = WiringCheck(info, trigger_index, rule or EdgeRule(), sent, session, pylsl.local_clock).start()
        logger.info("running %r live for %g s on %r with TTL pulses on %s", protocol.name, duration_s,
                    source.layout.name, serial)
        try:
            summary = session.run()  # closes the port (after its last pulse) and the recording
        except StreamError:
            summary = session.summary()
            summary["stream_error"] = True
            _finish(summary, ttl, sent, protocol, rt, record, check)
            raise
    finally:
        if check is not None:
            check.stop()
        if ttl is not None:
            ttl.close()
        source.close()
        if outlets is not None:
            outlets.close()
        if rt is not None:
            from closedloop import realtime as rt_module

            rt_module.normal()  # the analysis is no real-time work
    _finish(summary, ttl, sent, protocol, rt, record, check)
    return summary


def protocol_dict(protocol) -> dict:
    """The protocol as plain JSON data (``closedloop.protocol.parse_protocol`` reads it back)."""
    import dataclasses
    import json

    return json.loads(json.dumps(dataclasses.asdict(protocol), default=list))


def _finish(summary: dict, ttl, sent, protocol, rt, record, check) -> None:
    if check is not None and check.tripped:
        summary["early_stop"] = check.tripped
    summary["ttl"] = {
        "port": ttl.port,
        "pulse_width_s": ttl.pulse_width_s,
        "pulses_sent": ttl.pulses_sent,
        "pulses_dropped": ttl.pulses_dropped,
        "error": str(ttl.error) if ttl.error is not None else None,
        "sent": [[int(code), float(t)] for code, t in sent],
    }
    summary["protocol"] = protocol_dict(protocol)
    summary["realtime"] = rt.as_dict() if rt is not None else {"requested": False}
    write_sidecar(record, summary)


class VirtualAmplifierProcess:
    """``closedloop bench virtual-amp`` in its own process, its TTL port a pseudo-terminal opened here.

    Parameters
    ----------
    options : list of str
        Options for ``closedloop bench virtual-amp`` (signal, rate, faults ...), without
        ``--source-id`` and ``--pty-fd``, which this class sets.
    duration_s : float
        The amplifier stops by itself after this long (it is stopped earlier by :meth:`stop`).

    Attributes
    ----------
    port : str
        The serial port to give the live loop (the pseudo-terminal's slave end).
    source_id : str
        The amplifier stream's source_id.
    summary : dict or None
        After :meth:`stop`: the amplifier's counts (``bench virtual-amp --summary-json``).
    """

    def __init__(self, options: list[str], *, duration_s: float) -> None:
        self.source_id = f"closedloop-virtual-amp-{uuid.uuid4().hex[:10]}"
        self.options = list(options)
        self.duration_s = float(duration_s)
        self.port = ""
        self.summary: dict | None = None
        self._slave: int | None = None
        self._proc: subprocess.Popen | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="closedloop-virtual-amp-"))
        self._stderr = self._folder / "stderr.txt"
        self._summary = self._folder / "summary.json"

    def start(self, timeout_s: float = AMP_START_TIMEOUT_S) -> VirtualAmplifierProcess:
        """Start the process and wait until its stream is visible."""
        import pylsl

        master, slave = os.openpty()
        tty.setraw(slave)
        self._slave = slave  # held open for the whole run, so the line never hangs up in between
        self.port = os.ttyname(slave)
        cmd = [sys.executable, "-m", "closedloop", "bench", "virtual-amp", *self.options,
               "--source-id", self.source_id, "--pty-fd", str(master), "--duration", f"{self.duration_s:g}",
               "--summary-json", str(self._summary)]
        with open(self._stderr, "wb") as err:
            self._proc = subprocess.Popen(cmd, pass_fds=(master,), stdout=subprocess.DEVNULL, stderr=err)
        os.close(master)  # the child has it
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pylsl.resolve_byprop("source_id", self.source_id, 1, 0.5):
                return self
            if self._proc.poll() is not None:
                message = (f"the virtual amplifier ended (exit {self._proc.returncode}) before its stream appeared: "
                           f"{self.last_error()}")
                self.stop()
                raise ClosedLoopError(message)
        message = f"the virtual amplifier published no stream within {timeout_s:g} s: {self.last_error()}"
        self.stop()
        raise StreamError(message)

    def last_error(self) -> str:
        try:
            lines = [ln for ln in self._stderr.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no output)"
        return lines[-1] if lines else "(no output)"

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s) and close the port. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.summary is None and self._summary.exists():
            import json

            try:
                self.summary = json.loads(self._summary.read_text())
            except ValueError:
                self.summary = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> VirtualAmplifierProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
