"""A real pylsl outlet that stands in for an amplifier in tests (never a mock)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl


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


class OutletThread:
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
        info = eeg_info(name, self.data.shape[0], self.sfreq, channel_format, source_id, names)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=self.chunk_size, max_buffered=60)
        self.sent = 0
        self.t0: float | None = None  # LSL time of sample 0
        self.push_times: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "OutletThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        n = self.data.shape[1]
        start = pylsl.local_clock() + 0.05
        self.t0 = start
        k = 0
        while not self._stop.is_set():
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
            self.sent = stop
            k = stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self.stop()
        del self.outlet
