"""TTL pulses through a serial port (``closedloop run --serial PORT``).

A pulse is one byte ``code`` written to the port, then, ``pulse_width_s`` later, the byte 0:
the usual protocol of USB-to-TTL trigger boxes that mirror each received byte on their output
lines. The live loop never blocks on serial I/O: :meth:`SerialTTL.fire` hands the whole pulse to
the instance's own thread, and :meth:`SerialTTL.trigger` writes the code byte at once (one
``write()`` call) and leaves the closing 0 to the thread. The time each code byte was written
(LSL ``local_clock()``, taken as the write returns) is returned by ``trigger`` and comes back for
every pulse through :attr:`SerialTTL.sent` and the optional ``on_sent`` callback.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import serial

from closedloop.errors import UsageError

__all__ = ["SerialTTL"]

logger = logging.getLogger(__name__)

_STOP = object()


class _End(NamedTuple):
    """A triggered pulse the thread still has to end (write 0 at t_written + width)."""

    code: int
    t_written: float


def _local_clock() -> float:
    import pylsl

    return pylsl.local_clock()


class SerialTTL:
    """Send TTL pulse codes through a serial port from a dedicated thread.

    Parameters
    ----------
    port : str
        The serial device (``/dev/ttyUSB0``, ``COM3``, ...).
    baudrate : int
        Line speed (default 115200).
    pulse_width_s : float
        Time between the code byte and the closing 0 byte (default 5 ms; 0.1 ms to 1 s).
    on_sent : callable, optional
        Called from the pulse thread as ``on_sent(code, t_written)`` after each fired pulse.

    Attributes
    ----------
    sent : queue.SimpleQueue of (int, float)
        ``(code, t_written)`` for every pulse sent by :meth:`fire` or :meth:`trigger`, in
        order, once the pulse has ended; ``t_written`` is the ``local_clock()`` time the
        code byte was written.
    error : Exception or None
        The first serial write error; pulses fired after it are dropped and counted.
    pulses_sent, pulses_dropped : int
        Counters for fired pulses.

    Raises
    ------
    UsageError
        If the port cannot be opened, or a setting is out of range.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        pulse_width_s: float = 0.005,
        on_sent: Callable[[int, float], None] | None = None,
    ) -> None:
        pulse_width_s = float(pulse_width_s)
        if not (math.isfinite(pulse_width_s) and 0.0001 <= pulse_width_s <= 1.0):
            raise UsageError(
                f"TTL pulse width {pulse_width_s!r} s is out of range; accepted: 0.0001 to 1 s."
            )
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise UsageError(
                f"serial baud rate {baudrate!r} is not usable; give a positive integer such as 115200."
            )
        self.port = str(port)
        self.baudrate = baudrate
        self.pulse_width_s = pulse_width_s
        self.on_sent = on_sent
        try:
            self._serial = serial.Serial(
                self.port, baudrate=baudrate, timeout=0, write_timeout=1.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise UsageError(
                f"cannot open the serial port {self.port!r} for TTL pulses: {_reason(exc)}. "
                f"{_available_ports()}"
            ) from None
        self.sent: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        self.error: Exception | None = None
        self.pulses_sent = 0
        self.pulses_dropped = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._io_lock = threading.Lock()
        self._high = False  # a triggered pulse is up and waits for the thread to end it
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ttl-serial", daemon=True)
        self._thread.start()

    @staticmethod
    def check_code(code: int) -> int:
        """Return ``code`` if it is a valid pulse code (1 to 255), else raise ``UsageError``."""
        if isinstance(code, bool) or not isinstance(code, numbers.Integral) or not 1 <= code <= 255:
            raise UsageError(
                f"TTL code {code!r} is not usable; accepted: an integer from 1 to 255 (0 ends a pulse)."
            )
        return int(code)

    def send(self, code: int) -> float:
        """Send one pulse now, in the calling thread (blocks for the pulse width).

        Parameters
        ----------
        code : int
            The byte to raise the lines to, 1 to 255.

        Returns
        -------
        float
            ``local_clock()`` when the code byte had been written.
        """
        code = self.check_code(code)
        if self._closed:
            raise UsageError(f"the TTL port {self.port!r} is closed; no pulse was sent.")
        return self._pulse(code)

    def _pulse(self, code: int) -> float:
        with self._io_lock:
            self._serial.write(bytes((code,)))
            t_written = _local_clock()
            _wait_until(t_written + self.pulse_width_s)
            self._serial.write(b"\x00")
        return t_written

    def trigger(self, code: int) -> float | None:
        """Raise the lines now: write the code byte in the calling thread, return at once.

        One ``write()`` call, no waiting: the pulse thread writes the closing 0 byte
        ``pulse_width_s`` later. Use this when the delivery time must be the moment the byte
        was written.

        Returns
        -------
        float or None
            ``local_clock()`` when the code byte had been written; None when no byte was
            written now: a pulse is still up (this one is then queued as by :meth:`fire`),
            the port failed (see :attr:`error`) or is closed.
        """
        code = self.check_code(code)
        if self._closed or self.error is not None:
            self.pulses_dropped += 1
            return None
        if not self._io_lock.acquire(blocking=False):
            self._queue.put(code)
            return None
        try:
            if self._high:
                self._queue.put(code)
                return None
            try:
                self._serial.write(bytes((code,)))
            except (serial.SerialException, OSError) as exc:
                self._fail(exc)
                return None
            t_written = _local_clock()
            self._high = True
            self._queue.put(_End(code, t_written))
            return t_written
        finally:
            self._io_lock.release()

    def fire(self, code: int) -> None:
        """Queue one pulse for the pulse thread and return at once.

        The write time arrives later on :attr:`sent` (and through ``on_sent``). Raises
        ``UsageError`` only for an invalid code; serial failures go to :attr:`error`.
        """
        code = self.check_code(code)
        if self._closed:
            self.pulses_dropped += 1
            return
        self._queue.put(code)

    def _end(self, item: _End) -> None:
        _wait_until(item.t_written + self.pulse_width_s)
        with self._io_lock:
            try:
                self._serial.write(b"\x00")
            finally:
                self._high = False

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
            logger.error("TTL pulses on %s stopped: %s", self.port, exc)
        self.pulses_dropped += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.error is not None:
                self.pulses_dropped += 1
                self._high = False
                continue
            try:
                if isinstance(item, _End):
                    self._end(item)
                    code, t_written = item.code, item.t_written
                else:
                    code, t_written = item, self._pulse(item)
            except (serial.SerialException, OSError) as exc:  # a fault must not end the thread
                self._fail(exc)
                continue
            self.pulses_sent += 1
            self.sent.put((code, t_written))
            if self.on_sent is not None:
                try:
                    self.on_sent(code, t_written)
                except Exception:
                    logger.exception("the TTL on_sent callback failed")

    def close(self) -> None:
        """Finish the pulses already fired, then close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        with self._io_lock:
            try:
                self._serial.close()
            except (serial.SerialException, OSError) as exc:  # pragma: no cover - vanished device
                logger.debug("closing %s: %s", self.port, exc)

    def __enter__(self) -> SerialTTL:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _wait_until(deadline: float) -> None:
    # Only the leading edge is time-critical; sleeping (no busy wait) keeps the GIL free for
    # the live loop, at the cost of ~0.1 ms extra width.
    remaining = deadline - _local_clock()
    while remaining > 0:
        time.sleep(remaining)
        remaining = deadline - _local_clock()


def _reason(exc: Exception) -> str:
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return os.strerror(code)
    return str(exc)


def _available_ports() -> str:
    try:
        from serial.tools import list_ports

        ports = sorted(p.device for p in list_ports.comports())
    except (ImportError, OSError):  # pragma: no cover - listing is a courtesy
        ports = []
    if ports:
        return "Serial ports on this machine: " + ", ".join(ports) + "."
    return "No serial ports were found on this machine; check the cable and the device path."
