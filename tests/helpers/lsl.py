"""Real pylsl outlets that stand in for amplifiers in tests (never a mock), each in its own
process (:mod:`tests.helpers.hosted`)."""

from __future__ import annotations

import time

import numpy as np
import pylsl

from tests.helpers.hosted import HostedOutlet


def eeg_info(
    name: str,
    n_channels: int,
    sfreq: float,
    channel_format: str,
    source_id: str,
    ch_names: list[str],
    unit: str = "microvolts",
) -> pylsl.StreamInfo:
    """An EEG StreamInfo whose description lists ``ch_names``, each with label, unit and type."""
    info = pylsl.StreamInfo(name, "EEG", n_channels, sfreq, channel_format, source_id)
    chans = info.desc().append_child("channels")
    for label in ch_names:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", "EEG")
    return info


class OutletThread(HostedOutlet):
    """Push ``data`` (n_channels, n_samples) through a real LSL outlet at real-time pace.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Samples to send; converted to float32.
    sfreq : float
        Nominal rate; pacing follows a virtual clock (sample k is due at start + k / sfreq).
    source_id : str
        The outlet's source_id (tests always resolve by it).
    chunk_size : int
        Samples per push.
    index_channel : bool
        When True, channel 0 carries the sample index (0, 1, 2, ...) so drops and
        repeats show.
    loop : bool
        Start again at the end until stopped.
    ch_names : list of str, optional
        Labels written into the stream description.
    """

    def __init__(
        self,
        data: np.ndarray,
        sfreq: float,
        source_id: str,
        *,
        name: str = "test-eeg",
        chunk_size: int = 5,
        index_channel: bool = False,
        loop: bool = False,
        ch_names: list[str] | None = None,
        channel_format: str = "float32",
    ) -> None:
        self.data = np.ascontiguousarray(data, dtype=np.float32 if channel_format == "float32" else np.float64)
        if index_channel:
            self.data = self.data.copy()
            self.data[0] = np.arange(self.data.shape[1], dtype=self.data.dtype)
        self.sfreq = float(sfreq)
        self.chunk_size = int(chunk_size)
        self.loop = loop
        names = ch_names or [f"ch{i}" for i in range(self.data.shape[0])]
        self._info_args = (name, self.data.shape[0], self.sfreq, channel_format, source_id, names)
        self.sent = 0
        self.t0: float | None = None  # LSL time of sample 0

    def _open(self) -> None:
        self.outlet = pylsl.StreamOutlet(eeg_info(*self._info_args), chunk_size=self.chunk_size, max_buffered=60)

    def _loop(self, halt) -> None:
        n = self.data.shape[1]
        start = pylsl.local_clock() + 0.05
        self._set(t0=start)
        k = 0
        while not halt.is_set():
            if k >= n and not self.loop:
                break
            stop = k + self.chunk_size
            due = start + stop / self.sfreq
            delay = due - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            idx = np.arange(k, stop) % n
            chunk = self.data[:, idx].T.copy()
            stamp = start + (stop - 1) / self.sfreq
            self.outlet.push_chunk(chunk, stamp)
            self._set(sent=stop)
            k = stop


class VendorOutlet(HostedOutlet):
    """A real pylsl outlet written the way amplifier apps write them, in its own process.

    ``data`` (n_channels, n_samples, µV) is sent in chunks of ``chunk_size`` at real-time pace
    (looped), scaled to ``unit`` (``"V"``, ``"mV"``, ``"µV"``, ...; ``scale`` = the factor from
    µV to the values sent), with channel labels, units and type in the description, and stamped
    as ``stamping`` says:

    - ``"backfill"``: the newest sample's true time, liblsl back-fills the rest (the ideal driver);
    - ``"push"``: one stamp per chunk, the time of the push, which comes ``U(0, jitter_s)`` late
      (drivers behind USB or Bluetooth links);
    - ``"same"``: the push time on *every* sample of the chunk;
    - ``"ahead"``: the newest sample's true time plus ``lead_s`` (a chunk early, as mne-lsl's
      PlayerLSL does).

    ``t0`` is the LSL time of sample 0; ``sent`` the samples pushed so far.
    """

    def __init__(
        self,
        data: np.ndarray,
        sfreq: float,
        source_id: str,
        *,
        name: str = "vendor-eeg",
        ch_names: list[str],
        unit: str = "microvolts",
        scale: float = 1.0,
        chunk_size: int = 8,
        stamping: str = "backfill",
        jitter_s: float = 0.02,
        lead_s: float = 0.05,
        channel_format: str = "float32",
        seed: int = 0,
    ) -> None:
        if stamping not in ("backfill", "push", "same", "ahead"):
            raise ValueError(f"stamping {stamping!r}: accepted backfill, push, same, ahead")
        dtype = np.float32 if channel_format == "float32" else np.float64
        self.data = np.ascontiguousarray((np.asarray(data) * scale).T, dtype=dtype)  # (n, ch)
        self.sfreq = float(sfreq)
        self.chunk_size = int(chunk_size)
        self.stamping = stamping
        self.jitter_s = float(jitter_s)
        self.lead_s = float(lead_s)
        self.rng = np.random.default_rng(seed)
        self._info_args = (name, self.data.shape[1], self.sfreq, channel_format, source_id, ch_names, unit)
        self.t0: float | None = None
        self.sent = 0

    def _open(self) -> None:
        self.outlet = pylsl.StreamOutlet(eeg_info(*self._info_args), chunk_size=self.chunk_size, max_buffered=60)

    def _loop(self, halt) -> None:
        n = self.data.shape[0]
        start = pylsl.local_clock() + 0.05
        self._set(t0=start)
        k = 0
        while not halt.is_set():
            stop = k + self.chunk_size
            due = start + (stop - 1) / self.sfreq  # the newest sample's true time
            late = self.rng.uniform(0.0, self.jitter_s) if self.stamping in ("push", "same") else 0.0
            delay = due + late - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            chunk = self.data[np.arange(k, stop) % n]
            if self.stamping == "backfill":
                self.outlet.push_chunk(chunk, due)
            elif self.stamping == "ahead":
                self.outlet.push_chunk(chunk, due + self.lead_s)
            elif self.stamping == "push":
                self.outlet.push_chunk(chunk, pylsl.local_clock())
            else:
                now = pylsl.local_clock()
                self.outlet.push_chunk(chunk, [now] * len(chunk))
            self._set(sent=stop)
            k = stop
