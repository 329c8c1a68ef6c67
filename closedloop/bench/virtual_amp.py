"""A virtual looped-back amplifier: an LSL EEG outlet whose trigger channel follows a serial line.

``closedloop bench loopback`` measures the whole chain of a lab's own hardware: the TTL box's
output wired back into the amplifier's trigger input. This module stands in for that hardware on
any machine. The "TTL box" is one end of a pseudo-terminal, the port ``closedloop run --serial``
writes to; the amplifier reads the other end with ``select``, stamps every byte with
``local_clock()`` the moment it arrives, and gives each sample of its trigger channel the line's
level at that sample's own time on the amplifier's sample clock (sample ``k`` at ``t0 + k /
sfreq``), not at the time the chunk is pushed. A pulse therefore shows from the first sample at or
after its byte arrived, as a hardware trigger input that samples its lines with the EEG does; the
TTL box's byte becomes the channel's value (a box mirrors each byte on its output lines).

The EEG channels carry a function generator's sine (the hardware phase check: a sine into an EEG
input) or a recording, looped. Chunks are pushed when their newest sample is due, stamped on the
sample clock, as an amplifier with a hardware clock does.

Faults of the line, for testing the analysis (:class:`LineFaults`): a constant hardware delay,
pulses the line loses, stray pulses from a second source after given pulses or at random.
"""

from __future__ import annotations

import bisect
import errno
import logging
import math
import os
import select
import threading
import time
import tty
from dataclasses import dataclass

import numpy as np

from closedloop.errors import UsageError

__all__ = ["LineFaults", "LoopedSignal", "SineGenerator", "TriggerLine", "VirtualAmplifier"]

logger = logging.getLogger(__name__)

#: Default label of the trigger channel.
TRIGGER_LABEL = "TRIG"
#: Bytes read from the line at most per read.
_READ_BYTES = 4096
#: Seconds of noise generated once and looped under the sine.
NOISE_BLOCK_S = 20.0


@dataclass(frozen=True)
class LineFaults:
    """What can go wrong between the TTL box and the amplifier's trigger input.

    Parameters
    ----------
    delay_s : float
        Constant delay of the line (TTL box, cable, input stage), seconds, >= 0.
    miss_pulses : frozenset of int
        Numbers (1, 2, ...) of the TTL pulses the line loses: they never show.
    stray_after : frozenset of int
        After each of these TTL pulses, a stray pulse of ``stray_code`` appears
        ``stray_offset_s`` later (a second source on the trigger line).
    stray_offset_s : float
        Time from a TTL pulse to its stray pulse, seconds.
    stray_rate_hz : float
        Random stray pulses (Poisson) per second from a second source, 0 for none.
    stray_code : int
        Level a stray pulse raises (ORed with the TTL box's level).
    stray_width_s : float
        Width of a stray pulse, seconds.
    seed : int
        Seed of the random strays.
    """

    delay_s: float = 0.0
    miss_pulses: frozenset[int] = frozenset()
    stray_after: frozenset[int] = frozenset()
    stray_offset_s: float = 0.1
    stray_rate_hz: float = 0.0
    stray_code: int = 4
    stray_width_s: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delay_s", "stray_offset_s", "stray_rate_hz"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"line fault {name} = {value!r} is not usable; give a number >= 0.")
        if not (math.isfinite(self.stray_width_s) and self.stray_width_s > 0):
            raise UsageError(f"stray pulse width {self.stray_width_s!r} s must be a positive number.")
        if not 1 <= int(self.stray_code) <= 255:
            raise UsageError(f"stray pulse code {self.stray_code!r} must be 1 to 255.")
        for name in ("miss_pulses", "stray_after"):
            values = getattr(self, name)
            if any(int(v) < 1 for v in values):
                raise UsageError(f"line fault {name} numbers pulses from 1; got {sorted(values)}.")
            object.__setattr__(self, name, frozenset(int(v) for v in values))


class TriggerLine:
    """The level of an amplifier's trigger input over time, from the bytes a TTL box received.

    :meth:`feed` takes each byte with its arrival time, in order; :meth:`levels` gives the level
    at any times not earlier than the oldest kept transition. The TTL box's level is its last
    byte; stray pulses are ORed onto it. The input latches: a pulse stays up for at least
    ``min_width_s`` (one sampling step), so that it shows in at least one sample even when it was
    shorter, or its closing byte was read together with its code.
    """

    def __init__(self, faults: LineFaults | None = None, *, min_width_s: float = 0.0) -> None:
        self.faults = faults or LineFaults()
        self.min_width_s = float(min_width_s)
        self._rise_t = -math.inf
        self._ttl_t: list[float] = []
        self._ttl_v: list[int] = []
        self._ttl_before = 0  # level before the first kept TTL transition
        self._stray_t: list[float] = []
        self._stray_v: list[int] = []
        self._stray_before = 0
        self._byte = 0  # the last byte received
        self._suppressed = False  # the current pulse is one the line loses
        self._rng = np.random.default_rng(self.faults.seed)
        self._next_random = math.inf
        self.pulses_received = 0  # rising bytes (0 -> nonzero) from the TTL box
        self.pulses_lost = 0
        self.strays = 0

    @property
    def level_byte(self) -> int:
        """The last byte the TTL box sent."""
        return self._byte

    def start(self, t0: float) -> None:
        """Begin the random strays at ``t0`` (the first sample's time)."""
        rate = self.faults.stray_rate_hz
        self._next_random = t0 + self._rng.exponential(1.0 / rate) if rate > 0 else math.inf

    def feed(self, t: float, byte: int) -> None:
        """One byte from the TTL box, arrived at ``t`` (local clock)."""
        faults = self.faults
        if byte and not self._byte:
            self.pulses_received += 1
            n = self.pulses_received
            self._suppressed = n in faults.miss_pulses
            if self._suppressed:
                self.pulses_lost += 1
            if n in faults.stray_after:
                self._add_stray(t + faults.delay_s + faults.stray_offset_s)
        rising = bool(byte) and not self._byte
        self._byte = byte
        if self._suppressed:
            if byte == 0:
                self._suppressed = False
            return
        at = t + faults.delay_s
        if self._ttl_t:
            at = max(at, self._ttl_t[-1])  # a latched fall can lie after the next byte's arrival
        if rising:
            self._rise_t = at
        elif byte == 0:
            at = max(at, self._rise_t + self.min_width_s)
        self._ttl_t.append(at)
        self._ttl_v.append(int(byte))

    def _add_stray(self, start: float) -> None:
        width = self.faults.stray_width_s
        i = bisect.bisect_right(self._stray_t, start)
        self._stray_t[i:i] = [start, start + width]
        self._stray_v[i:i] = [1, 0]
        self.strays += 1

    def levels(self, times: np.ndarray) -> np.ndarray:
        """The line's level at each of ``times`` (ascending), as float64."""
        last = float(times[-1])
        while self._next_random <= last:
            self._add_stray(self._next_random)
            self._next_random += self._rng.exponential(1.0 / self.faults.stray_rate_hz)
        ttl = _step_values(self._ttl_t, self._ttl_v, self._ttl_before, times)
        if self._stray_t:
            stray = _step_values(self._stray_t, self._stray_v, self._stray_before, times)
            ttl = ttl | np.where(stray > 0, self.faults.stray_code, 0)
        return ttl.astype(np.float64)

    def forget_before(self, t: float) -> None:
        """Drop transitions before ``t`` that no later sample needs (keeps memory bounded)."""
        for times, values, attr in ((self._ttl_t, self._ttl_v, "_ttl_before"),
                                    (self._stray_t, self._stray_v, "_stray_before")):
            i = bisect.bisect_right(times, t)
            if i > 1:
                setattr(self, attr, values[i - 2])
                del times[: i - 1]
                del values[: i - 1]


def _step_values(times: list[float], values: list[int], before: int, at: np.ndarray) -> np.ndarray:
    """Value of a step function (``values[i]`` from ``times[i]`` on) at each of ``at``."""
    if not times:
        return np.full(at.shape, before, dtype=np.int64)
    idx = np.searchsorted(np.asarray(times), at, side="right") - 1
    table = np.asarray([before, *values], dtype=np.int64)
    return table[idx + 1]


class SineGenerator:
    """A function generator's sine on one EEG input, with a little white noise (µV).

    Sample ``k`` is ``amplitude_uv * cos(2 pi f k / sfreq)`` plus noise: computed from the
    sample index, so the sine stays continuous however long the amplifier runs (the noise, a
    seeded block of ``NOISE_BLOCK_S``, repeats).
    """

    def __init__(self, sfreq: float, *, frequency_hz: float = 10.5, amplitude_uv: float = 50.0,
                 noise_uv: float = 1.0, seed: int = 0) -> None:
        if not (math.isfinite(frequency_hz) and 0 < frequency_hz < sfreq / 2):
            raise UsageError(f"sine frequency {frequency_hz!r} Hz must be above 0 and below {sfreq / 2:g} Hz "
                             "(half the sampling rate).")
        if not (math.isfinite(amplitude_uv) and amplitude_uv > 0):
            raise UsageError(f"sine amplitude {amplitude_uv!r} µV must be a positive number.")
        if not (math.isfinite(noise_uv) and noise_uv >= 0):
            raise UsageError(f"noise level {noise_uv!r} µV must be a number >= 0.")
        self.sfreq = float(sfreq)
        self.frequency_hz = float(frequency_hz)
        self.amplitude_uv = float(amplitude_uv)
        n_noise = max(1, round(NOISE_BLOCK_S * self.sfreq))
        self._noise = np.random.default_rng(seed).normal(0.0, noise_uv, n_noise) if noise_uv > 0 else np.zeros(1)
        self.n_channels = 1

    def samples(self, start: int, n: int) -> np.ndarray:
        """Samples ``start`` to ``start + n``: ``(n, 1)`` µV."""
        k = np.arange(start, start + n)
        cycles = np.mod(k * (self.frequency_hz / self.sfreq), 1.0)
        x = self.amplitude_uv * np.cos(2 * np.pi * cycles) + self._noise[k % self._noise.size]
        return x[:, None]


class LoopedSignal:
    """Samples of a recording (or any array), ``(n_channels, n_samples)`` µV, played in a loop."""

    def __init__(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] < 1:
            raise UsageError(f"the virtual amplifier's signal has shape {data.shape}; give "
                             "(n_channels, n_samples) with at least one sample.")
        self._data = np.ascontiguousarray(np.nan_to_num(data).T)
        self.n_channels = data.shape[0]

    def samples(self, start: int, n: int) -> np.ndarray:
        """Samples ``start`` to ``start + n`` (wrapping at the end): ``(n, n_channels)`` µV."""
        return self._data[np.arange(start, start + n) % self._data.shape[0]]


class VirtualAmplifier:
    """An LSL amplifier with a trigger input wired to a pseudo-terminal's TTL box (a thread).

    Parameters
    ----------
    signal : SineGenerator or LoopedSignal
        What the EEG channels carry (anything with ``n_channels`` and ``samples(start, n)``
        giving ``(n, n_channels)`` µV).
    ch_names : list of str
        Labels of the EEG channels; the trigger channel is added after them.
    sfreq : float
        Sampling rate, Hz.
    source_id : str
        The stream's source_id.
    name : str
        The stream's name.
    chunk_size : int, optional
        Samples per push (default: about 10 ms of samples).
    trigger_label : str
        Label of the trigger channel.
    faults : LineFaults, optional
        Faults of the line between the TTL box and the trigger input.
        Bytes are stamped when the thread reads them: in a process whose other threads keep the
        interpreter busy, shorten ``sys.setswitchinterval`` (``bench virtual-amp`` runs with
        0.1 ms), or a pulse can be read late and, read together with its closing 0, not show at
        all (counted in :attr:`collapsed_pulses`).
    master_fd : int, optional
        The master end of a pseudo-terminal whose slave the caller gives to ``--serial``
        (the amplifier takes it over and closes it). Default: the amplifier opens its own pair
        and keeps the slave open; its path is :attr:`port`.

    Attributes
    ----------
    port : str or None
        Path of the slave end (``closedloop run --serial PORT``) when the amplifier opened it.
    t0 : float
        ``local_clock()`` time of sample 0 (NaN before :meth:`start`).
    n_pushed : int
        Samples pushed so far.
    line : TriggerLine
        The trigger input (its counters: pulses received, lost, strays).
    """

    def __init__(self, signal, ch_names: list[str], sfreq: float, *, source_id: str,
                 name: str = "closedloop-virtual-amp", chunk_size: int | None = None,
                 trigger_label: str = TRIGGER_LABEL, faults: LineFaults | None = None,
                 master_fd: int | None = None) -> None:
        import pylsl

        if signal.n_channels != len(ch_names):
            raise UsageError(f"the virtual amplifier's signal has {signal.n_channels} channel(s) but "
                             f"{len(ch_names)} label(s) were given; give one label per channel.")
        if not (math.isfinite(sfreq) and sfreq > 0):
            raise UsageError(f"virtual amplifier rate {sfreq!r} Hz must be a positive number.")
        if trigger_label in ch_names:
            raise UsageError(f"the trigger channel's label {trigger_label!r} is already an EEG channel's; "
                             "choose another label.")
        self.sfreq = float(sfreq)
        self.chunk_size = int(chunk_size) if chunk_size else max(1, round(0.01 * self.sfreq))
        if self.chunk_size < 1:
            raise UsageError(f"virtual amplifier chunk size {chunk_size!r} must be a whole number >= 1.")
        self.signal = signal
        self.ch_names = [*ch_names, trigger_label]
        self.trigger_label = trigger_label
        self.source_id = source_id
        self.name = name
        self.line = TriggerLine(faults, min_width_s=1.0 / self.sfreq)
        self._own_slave: int | None = None
        self.port: str | None = None
        if master_fd is None:
            master_fd, slave = os.openpty()
            tty.setraw(slave)  # bytes pass untouched whoever writes them
            self._own_slave = slave
            self.port = os.ttyname(slave)
        os.set_blocking(master_fd, False)
        self._master = master_fd
        self._line_open = True
        info = pylsl.StreamInfo(name, "EEG", len(self.ch_names), self.sfreq, "float32", source_id)
        chans = info.desc().append_child("channels")
        for label in self.ch_names:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            is_trigger = label == trigger_label
            ch.append_child_value("unit", "" if is_trigger else "microvolts")
            ch.append_child_value("type", "TRIG" if is_trigger else "EEG")
        info.desc().append_child_value("manufacturer", "closedloop virtual looped-back amplifier")
        self.outlet = pylsl.StreamOutlet(info, chunk_size=self.chunk_size, max_buffered=60)
        self.t0 = math.nan
        self.n_pushed = 0
        self.bytes_received = 0
        self.collapsed_pulses = 0  # pulses whose rise and fall came in one read (too narrow to show)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-amplifier", daemon=True)

    def __repr__(self) -> str:
        state = "running" if self._thread.is_alive() else "stopped"
        return (f"<VirtualAmplifier {self.name!r} ({len(self.ch_names)} ch, {self.sfreq:g} Hz), {state}, "
                f"{self.n_pushed} samples, {self.line.pulses_received} pulses received>")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> VirtualAmplifier:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop, then close the outlet and the line. Idempotent."""
        self.stop()
        for fd_name in ("_master", "_own_slave"):
            fd = getattr(self, fd_name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, fd_name, None)
        if hasattr(self, "outlet"):
            del self.outlet

    def __enter__(self) -> VirtualAmplifier:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ------------------------------------------------------------------ the thread
    def _read_line(self, clock) -> None:
        """Take every byte waiting on the line, stamped with the time it was read."""
        while True:
            try:
                data = os.read(self._master, _READ_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # no one holds the port any more: the line is idle
                    self._line_open = False
                    return
                raise
            if not data:
                self._line_open = False
                return
            now = clock()
            self.bytes_received += len(data)
            rose = False
            for byte in data:
                if byte and not self.line.level_byte:
                    rose = True
                elif not byte and self.line.level_byte and rose:
                    # a pulse's rise and fall in one read: the reader was late by its whole width
                    self.collapsed_pulses += 1
                    rose = False
                self.line.feed(now, byte)

    def _run(self) -> None:
        import pylsl

        clock = pylsl.local_clock
        try:
            self._loop(clock)
        except Exception as exc:  # the amplifier stops; the reader of the stream sees it stall
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("the virtual amplifier stopped")

    def _loop(self, clock) -> None:
        cs, dt = self.chunk_size, 1.0 / self.sfreq
        n_eeg = self.signal.n_channels
        chunk = np.empty((cs, n_eeg + 1), dtype=np.float32)
        offsets = np.arange(cs)
        t0 = clock() + 0.05
        self.t0 = t0
        self.line.start(t0)
        k = 0
        master = self._master
        while not self._stop.is_set():
            due = t0 + (k + cs - 1) * dt  # the chunk's newest sample
            wait = due - clock()
            if wait > 0:
                if self._line_open:
                    ready, _, _ = select.select([master], [], [], min(wait, 0.1))
                    if ready:
                        self._read_line(clock)
                else:
                    time.sleep(min(wait, 0.1))
                continue
            if self._line_open:
                self._read_line(clock)  # everything that arrived up to now
            chunk[:, :n_eeg] = self.signal.samples(k, cs)
            times = t0 + (k + offsets) * dt
            chunk[:, n_eeg] = self.line.levels(times)
            self.outlet.push_chunk(chunk, due)
            self.line.forget_before(times[0] - 1.0)
            k += cs
            self.n_pushed = k
