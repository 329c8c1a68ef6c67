"""SerialTTL against a real pseudo-terminal pair: pyserial opens the slave, the test reads the master."""

from __future__ import annotations

import itertools
import os
import select
import statistics
import threading
import time

import numpy as np
import pylsl
import pytest

from closedloop.errors import UsageError
from closedloop.records import Trigger
from closedloop.stimulators import TTLStimulator
from closedloop.ttl import SerialTTL


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(slave)
    os.close(master)


def read_bytes(master: int, count: int, timeout_s: float = 5.0) -> list[tuple[int, float]]:
    """Read ``count`` bytes from the master side, each with its local_clock() arrival time."""
    out: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            data = os.read(master, 256)
            now = pylsl.local_clock()
            out.extend((b, now) for b in data)
    return out


def test_fired_pulses_arrive_in_order_with_their_width(pty_pair) -> None:
    master, port = pty_pair
    width = 0.005
    # bytes a cooked terminal would alter (LF, CR, XON, XOFF, DEL) must pass untouched
    codes = [1, 10, 13, 17, 19, 127, 255, 42]
    callbacks: list[tuple[int, float]] = []
    ttl = SerialTTL(port, pulse_width_s=width, on_sent=lambda c, t: callbacks.append((c, t)))
    try:
        t0 = time.perf_counter()
        for code in codes:
            ttl.fire(code)
        fire_s = time.perf_counter() - t0
        got = read_bytes(master, 2 * len(codes))
        sent = [ttl.sent.get(timeout=5) for _ in codes]
    finally:
        ttl.close()
    # firing queues the pulses: far quicker than the pulses themselves
    assert fire_s < 0.5 * width * len(codes)
    assert [b for b, _ in got] == [x for c in codes for x in (c, 0)]
    assert [c for c, _ in sent] == codes
    assert callbacks == sent
    assert ttl.pulses_sent == len(codes) and ttl.error is None
    widths, lags = [], []
    for i, (code, t_written) in enumerate(sent):
        t_code, t_zero = got[2 * i][1], got[2 * i + 1][1]
        # the 0 byte can only have been written pulse_width_s after the code byte
        assert t_zero - t_written >= width
        widths.append(t_zero - t_code)
        lags.append(t_code - t_written)
    # sleep-based: the closing edge is late by the scheduler's wake-up delay (~0.1 ms idle,
    # several ms on a saturated machine), never early
    assert width - 0.001 < statistics.median(widths) < width + 0.010
    assert abs(statistics.median(lags)) < 0.002
    assert all(b > a for (_, a), (_, b) in itertools.pairwise(sent))


def test_send_is_synchronous_and_returns_the_write_time(pty_pair) -> None:
    master, port = pty_pair
    with SerialTTL(port, pulse_width_s=0.002) as ttl:
        before = pylsl.local_clock()
        t_written = ttl.send(200)
        after = pylsl.local_clock()
    assert before <= t_written and after - t_written >= 0.002
    assert [b for b, _ in read_bytes(master, 2)] == [200, 0]


def test_close_finishes_pulses_already_fired(pty_pair) -> None:
    master, port = pty_pair
    ttl = SerialTTL(port, pulse_width_s=0.01)
    for code in (5, 6, 7):
        ttl.fire(code)
    ttl.close()
    ttl.close()
    assert [b for b, _ in read_bytes(master, 6)] == [5, 0, 6, 0, 7, 0]
    ttl.fire(8)  # after close: dropped, never raises
    assert ttl.pulses_dropped == 1


def test_missing_port_is_a_usage_error_naming_it() -> None:
    with pytest.raises(
        UsageError,
        match=r"cannot open the serial port '/dev/ttyCLOSEDLOOP_NONE'.*"
        r"No such file or directory",
    ) as info:
        SerialTTL("/dev/ttyCLOSEDLOOP_NONE")
    assert info.value.exit_code == 2


def test_bad_settings_and_codes_are_refused(pty_pair) -> None:
    _, port = pty_pair
    with pytest.raises(
        UsageError, match="pulse width 0.0 s is out of range; accepted: 0.0001 to 1 s"
    ):
        SerialTTL(port, pulse_width_s=0.0)
    with pytest.raises(UsageError, match="baud rate -5"):
        SerialTTL(port, baudrate=-5)
    with SerialTTL(port) as ttl:
        assert ttl.check_code(np.uint8(7)) == 7
        for bad in (0, 256, -1, 3.0, True, np.float64(2.0)):
            with pytest.raises(UsageError, match="accepted: an integer from 1 to 255"):
                ttl.fire(bad)


def test_a_vanished_device_is_recorded_not_raised() -> None:
    master, slave = os.openpty()
    ttl = SerialTTL(os.ttyname(slave), pulse_width_s=0.001)
    try:
        ttl.fire(9)
        assert [b for b, _ in read_bytes(master, 2)] == [9, 0]
        ttl.sent.get(timeout=5)
        os.close(master)  # the other end goes away: writes to the port now fail (EIO)
        master = -1
        ttl.fire(10)
        ttl.fire(11)
        deadline = time.monotonic() + 5
        while ttl.pulses_dropped < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ttl.error is not None
        assert ttl.pulses_dropped == 2 and ttl.pulses_sent == 1
    finally:
        ttl.close()
        os.close(slave)
        if master >= 0:
            os.close(master)


def test_trigger_writes_the_code_at_once_and_the_thread_ends_the_pulse(pty_pair) -> None:
    master, port = pty_pair
    width = 0.01
    with SerialTTL(port, pulse_width_s=width) as ttl:
        t0 = pylsl.local_clock()
        t_written = ttl.trigger(77)
        returned_after = pylsl.local_clock() - t0
        # a second pulse while the first is still up is queued, never interleaved
        assert ttl.trigger(78) is None
        got = read_bytes(master, 4)
        sent = [ttl.sent.get(timeout=5) for _ in range(2)]
    assert t_written is not None and t0 <= t_written
    assert returned_after < width / 2  # no waiting for the pulse width in the caller
    assert [b for b, _ in got] == [77, 0, 78, 0]
    assert sent[0] == (77, t_written)
    assert sent[1][0] == 78 and sent[1][1] >= t_written + width
    assert got[1][1] - t_written >= width  # the closing 0 only after the width
    assert ttl.pulses_sent == 2


def test_a_later_pulse_of_a_train_is_written_by_the_loop_itself_and_ended_by_the_port(pty_pair) -> None:
    # the loop has waited for the pulse's time: the code byte must go out from its own thread at
    # once (the port's thread wakes late on a busy machine), and only the closing 0 from the port's
    master, port = pty_pair
    writers: list[tuple[bytes, bool]] = []
    now = pylsl.local_clock()
    train = Trigger(seq=1, time_s=now, sample_ts=now, event="stim", target_phase_deg=0.0, phase_deg=0.0,
                    amplitude=1.0, scheduled_s=now, crossing_s=now, pulses=3, pulse_interval_s=0.03)
    with SerialTTL(port, pulse_width_s=0.002) as ttl:
        write = ttl._serial.write

        def watched(data):
            writers.append((bytes(data), threading.current_thread() is threading.main_thread()))
            return write(data)

        ttl._serial.write = watched
        stim = TTLStimulator(ttl, stim_code=9)
        t0 = pylsl.local_clock()
        stim.pulse(train, 1)
        t1 = pylsl.local_clock()
        got = read_bytes(master, 2)
        code, t_written = ttl.sent.get(timeout=5)
    assert [b for b, _ in got] == [9, 0]
    assert writers == [(b"\x09", True), (b"\x00", False)]
    assert code == 9 and t0 <= t_written <= t1


def test_trigger_on_a_vanished_device_returns_none_and_records_the_error() -> None:
    master, slave = os.openpty()
    ttl = SerialTTL(os.ttyname(slave), pulse_width_s=0.001)
    try:
        os.close(master)
        assert ttl.trigger(3) is None
        assert ttl.error is not None and ttl.pulses_dropped == 1
        assert ttl.trigger(4) is None
        assert ttl.pulses_dropped == 2 and ttl.pulses_sent == 0
    finally:
        ttl.close()
        os.close(slave)
