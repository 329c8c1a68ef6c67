"""A recording as a live LSL amplifier (:class:`Player`, ``closedloop play``).

Samples go out on a float32 LSL outlet at the recording's nominal rate, paced by a virtual
clock: sample ``k`` is due at ``t0 + k / (sfreq * speed)``. The player sleeps until the newest
sample of a chunk is due, then pushes the chunk stamped with its samples' times; being late
never shifts later samples, so the stream cannot drift from the wall clock. Annotations and
XDF marker strings go out on a companion ``Markers`` stream stamped with their own times; with
``--loop`` a ``boundary`` marker is sent at the first sample of every new pass.

:class:`Player` is the reusable core (``closedloop demo``, benchmarks).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from closedloop.checks import non_empty_text, positive_float, positive_int
from closedloop.errors import UsageError

BOUNDARY = "boundary"
DEFAULT_CHUNK_SIZE = 10
_LSL_TYPES = {
    "eeg": "EEG",
    "eog": "EOG",
    "emg": "EMG",
    "ecg": "ECG",
    "stim": "STIM",
    "misc": "MISC",
}


class Player:
    """Play a recording (or an array) over LSL in real time, in a background thread.

    Parameters
    ----------
    source : str, Path, mne.io.BaseRaw, Recording or ndarray, shape (n_channels, n_samples)
        What to play: a recording's path (any format MNE reads, or XDF), an MNE Raw (in volts;
        played in microvolts, as files are), an open Recording, or an array, taken as microvolts
        unless ``units`` says otherwise.
    sfreq : float, optional
        Nominal rate in Hz; required for an array, taken from a Recording.
    ch_names : list of str, optional
        Channel labels for an array (default ``ch1``, ``ch2``, ...).
    name : str
        LSL stream name; the marker stream is ``<name>-markers``.
    source_id : str, optional
        LSL source_id (default ``closedloop-play-<name>``); markers use ``<source_id>-markers``.
    chunk_size : int
        Samples per push.
    speed : float
        Multiple of real time (2.0 plays twice as fast).
    loop : bool
        Start again at the end, with a ``boundary`` marker at each wrap.
    duration : float, optional
        Seconds of recording to play (at ``speed`` != 1 the wall time is ``duration / speed``).
        Default: the whole recording once, or forever with ``loop``.
    index_channel : bool
        Replace channel 0 by the running sample index (0, 1, 2, ...), labelled
        ``sample_index``, so receivers can check that no sample is lost or repeated
        (float32 holds the index exactly up to 2**24 samples: 56 min at 5 kHz).
    wait_consumers : float
        Wait up to this many seconds for a consumer of the data stream before the first
        sample (a receiver wanting every marker opens its marker inlet first).
    record_lags : bool
        Keep every chunk's lag in :attr:`lags` (for benchmarks).
    events : list of Event, optional
        Markers for an array source (a Recording brings its own).

    Attributes
    ----------
    n_pushed : int
        Samples pushed so far.
    n_markers : int
        Markers pushed so far (boundaries included).
    lag_s, max_lag_s : float
        How late the last chunk, and the latest chunk so far, left after its newest sample
        was due (local clock minus its timestamp).
    t0 : float or None
        LSL time at which sample 0 was due.
    error : BaseException or None
        What stopped the player thread, if it failed.
    """

    def __init__(
        self,
        source,
        sfreq: float | None = None,
        ch_names: Sequence[str] | None = None,
        *,
        name: str = "closedloop-play",
        source_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        speed: float = 1.0,
        loop: bool = False,
        duration: float | None = None,
        index_channel: bool = False,
        wait_consumers: float = 0.0,
        record_lags: bool = False,
        events=None,
        ch_types: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
    ) -> None:
        from closedloop.io import (
            Recording,
            array_recording,
            is_mne_raw,
            open_recording,
            raw_recording,
        )

        self._owned = None
        if isinstance(source, (str, Path)):
            source = self._owned = open_recording(source)
        elif is_mne_raw(source):
            source = raw_recording(source)
        if isinstance(source, Recording):
            if sfreq is not None and float(sfreq) != source.sfreq:
                raise UsageError(
                    f"sfreq={sfreq!r} differs from the recording's {source.sfreq:g} Hz; leave it out."
                )
            recording = source
        else:
            if sfreq is None:
                raise UsageError("sfreq is required when playing an array.")
            recording = array_recording(
                source, sfreq, ch_names, ch_types=ch_types, units=units, events=events or ()
            )
        self.recording = recording
        self.sfreq = recording.sfreq
        self.name = non_empty_text(name, "name")
        self.source_id = non_empty_text(source_id or f"closedloop-play-{self.name}", "source_id")
        self.chunk_size = positive_int(chunk_size, "chunk_size")
        self.speed = positive_float(speed, "speed")
        self.loop = bool(loop)
        self.duration = None if duration is None else positive_float(duration, "duration")
        self.index_channel = bool(index_channel)
        self.wait_consumers = float(wait_consumers)
        self.record_lags = record_lags

        n_file = recording.n_samples
        if self.duration is not None:
            wanted = max(1, round(self.duration * self.sfreq))
            self.n_total: int | None = wanted if self.loop else min(wanted, n_file)
        else:
            self.n_total = None if self.loop else n_file
        self.ch_names = list(recording.ch_names)
        self.ch_types = list(recording.ch_types)
        self.units = list(recording.units)
        if self.index_channel:
            self.ch_names[0], self.ch_types[0], self.units[0] = "sample_index", "misc", "n/a"

        positions = np.array([e.onset_s * self.sfreq for e in recording.events], dtype=np.float64)
        inside = (positions > -0.5) & (positions < n_file - 0.5)
        self.events_skipped = int(np.sum(~inside))
        order = np.argsort(positions[inside], kind="stable")
        self._event_pos = positions[inside][order]
        self._event_sample = np.rint(self._event_pos).astype(np.int64)
        texts = [e.description for e, keep in zip(recording.events, inside) if keep]
        self._event_text = [texts[i] for i in order]

        self.n_pushed = 0
        self.n_markers = 0
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.lags: list[tuple[int, float]] = []
        self.t0: float | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._outlet = None
        self._marker_outlet = None

    # -- public API -------------------------------------------------------------------------

    @property
    def position_s(self) -> float:
        """Seconds of recording played (all passes)."""
        return self.n_pushed / self.sfreq

    @property
    def running(self) -> bool:
        """True while the player thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Player:
        """Create the outlets (resolvable as soon as this returns) and start playing."""
        if self._thread is not None:
            raise UsageError("this player was already started; make a new Player to play again.")
        self._open_outlets()
        self._thread = threading.Thread(target=self._run, name=f"play-{self.name}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of playback; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def stop(self) -> None:
        """Stop playing and close the outlets. Safe to call more than once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._close_outlets()
        if self._owned is not None and not self.running:
            self._owned.close()

    def __repr__(self) -> str:
        state = "playing" if self.running else ("stopped" if self._thread is not None else "not started")
        return (
            f"<Player {self.name!r} (source_id {self.source_id!r}) | {len(self.ch_names)} ch, "
            f"{self.sfreq:g} Hz, chunks of {self.chunk_size}, {state} at {self.position_s:.1f} s>"
        )

    def __enter__(self) -> Player:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- outlets ----------------------------------------------------------------------------

    def _open_outlets(self) -> None:
        import pylsl

        info = pylsl.StreamInfo(
            self.name, "EEG", len(self.ch_names), self.sfreq, "float32", self.source_id
        )
        desc = info.desc()
        channels = desc.append_child("channels")
        for label, ch_type, unit in zip(self.ch_names, self.ch_types, self.units):
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", _LSL_TYPES.get(ch_type.lower(), ch_type.upper()))
        acquisition = desc.append_child("acquisition")
        acquisition.append_child_value("manufacturer", "closedloop")
        acquisition.append_child_value("model", "play")
        if self.recording.path is not None:
            acquisition.append_child_value("source_file", self.recording.path.name)
        acquisition.append_child_value("speed", f"{self.speed:g}")
        self._outlet = pylsl.StreamOutlet(info, chunk_size=self.chunk_size, max_buffered=60)

        markers = pylsl.StreamInfo(
            f"{self.name}-markers",
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            "string",
            f"{self.source_id}-markers",
        )
        markers.desc().append_child("channels").append_child("channel").append_child_value(
            "label", "marker"
        )
        self._marker_outlet = pylsl.StreamOutlet(markers)

    def _close_outlets(self) -> None:
        # markers first: consumers of the data stream outlive their marker inlets
        self._marker_outlet = None
        self._outlet = None

    # -- the player thread ------------------------------------------------------------------

    def _blocks(self):
        """Float32 blocks (pass, file_start, samples x channels) in playing order.

        Read in the player thread right after a push, where the wait for the next chunk leaves
        the most room; blocks of about 0.1 s keep each read short. (A prefetch thread would
        hold the GIL while reading and delay the player by up to the interpreter's switch
        interval, 5 ms.)
        """
        recording = self.recording
        n_file = recording.n_samples
        per_block = max(self.chunk_size, int(0.1 * self.sfreq), 4096 // max(1, len(self.ch_names)))
        block_size = -(-per_block // self.chunk_size) * self.chunk_size
        remaining = self.n_total if self.n_total is not None else math.inf
        passes = 0
        while remaining > 0:
            for start in range(0, n_file, block_size):
                stop = int(min(n_file, start + block_size, start + remaining))
                yield (
                    passes,
                    start,
                    np.ascontiguousarray(recording.read(start, stop).T, dtype=np.float32),
                )
                remaining -= stop - start
                if remaining <= 0:
                    break
            passes += 1

    def _sleep_until(self, due: float, clock) -> None:
        delay = due - clock()
        if delay > 0.05:
            self._stop.wait(delay - 0.02)
            delay = due - clock()
        if delay > 0:
            time.sleep(delay)

    def _run(self) -> None:
        import pylsl

        clock = pylsl.local_clock
        outlet, marker_outlet = self._outlet, self._marker_outlet
        try:
            if self.wait_consumers > 0:
                outlet.wait_for_consumers(self.wait_consumers)
            period = 1.0 / (self.sfreq * self.speed)
            n_file = self.recording.n_samples
            k = 0  # samples pushed, all passes
            t0 = None
            for passes, block_start, block in self._blocks():
                if self._stop.is_set():
                    break
                pass_start = k - block_start  # global index of this pass's sample 0
                if t0 is None:
                    t0 = self.t0 = clock()
                for i in range(0, block.shape[0], self.chunk_size):
                    if self._stop.is_set():
                        break
                    chunk = block[i : i + self.chunk_size]
                    n = chunk.shape[0]
                    if self.index_channel:
                        chunk[:, 0] = np.arange(k, k + n, dtype=np.float64)
                    due = t0 + (k + n - 1) * period
                    self._sleep_until(due, clock)
                    if self.speed == 1.0:
                        outlet.push_chunk(chunk, due)
                    else:
                        outlet.push_chunk(chunk, [t0 + (k + j) * period for j in range(n)])
                    lag = clock() - due
                    self._push_markers(
                        marker_outlet, passes, block_start + i, n, pass_start, t0, period
                    )
                    k += n
                    self.n_pushed = k
                    self.lag_s = lag
                    self.max_lag_s = max(self.max_lag_s, lag)
                    if self.record_lags:
                        self.lags.append((k, lag))
            if n_file and not self._stop.is_set():
                self._stop.wait(0.5)  # let consumers drain the last chunks before the outlets go
        except Exception as exc:  # noqa: BLE001 (reported by whoever joins the player)
            self.error = exc
        finally:
            self._stop.set()
            self._done.set()

    def _push_markers(
        self, outlet, passes: int, first: int, n: int, pass_start: int, t0: float, period: float
    ) -> None:
        """Markers whose sample lies in file samples [first, first + n) of this pass."""
        if passes > 0 and first == 0:
            outlet.push_sample([BOUNDARY], t0 + pass_start * period)
            self.n_markers += 1
        lo, hi = np.searchsorted(self._event_sample, [first, first + n], side="left")
        for j in range(lo, hi):
            outlet.push_sample(
                [self._event_text[j]], t0 + (pass_start + self._event_pos[j]) * period
            )
            self.n_markers += 1


# ---------------------------------------------------------------------------------------------
# helpers


def default_source_id(path: str | Path) -> str:
    """The source_id ``closedloop play`` uses for a file: ``closedloop-play-<file stem>``."""
    return f"closedloop-play-{Path(path).stem}"
