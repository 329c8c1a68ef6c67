"""The sound card as a :class:`~closedloop.stimulators.Stimulator`, timed on the card's own clock.

One PortAudio output stream is opened at :meth:`SoundStimulator.start` and kept running. Its
callback fills each buffer: silence, or the feedback tone, plus every queued stimulus that
overlaps the buffer, each starting at its exact output frame. :meth:`~SoundStimulator.fire`
(on the live loop's timing thread, at the delivery moment) only converts the planned onset
(the predicted target-phase time, less the protocol's ``technical_delay_s``) from the LSL clock
to an output frame through :class:`~closedloop.sound.clock.DacClock` and queues it: a few
microseconds, no lock, no allocation beyond the marker's dict. The session fires
:attr:`~SoundStimulator.latency_s` before the planned onset, which is the time a buffer takes
from the callback to the DAC plus two buffers, so every onset frame is still to be written when
it is queued.

Cancelling: :meth:`~SoundStimulator.pause` (an operator's pause, and the session's stop)
cancels every queued stimulus whose first sample has not been written yet, and refuses new
ones until :meth:`~SoundStimulator.resume`; a stimulus already playing ends with its ramp (cut
short, it would click). The later pulses of a burst are queued with the first, on the audio
clock, so a pause between them cancels the rest of the burst.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from closedloop.errors import ClosedLoopError
from closedloop.protocol import Protocol, SoundSettings
from closedloop.records import Trigger
from closedloop.sound.clock import DacClock
from closedloop.sound.devices import SoundError, find_output_device, sounddevice
from closedloop.sound.signals import FeedbackTone, stimulus

__all__ = ["SoundStimulator", "open_sound"]

log = logging.getLogger("closedloop.sound")

#: Output buffers last about this long (rounded to a power of two of frames).
BLOCK_S = 0.005
#: Added to the scheduling latency: the time ``fire`` itself may take and the callback's jitter.
GUARD_S = 0.001
#: A stimulus whose onset frame was already written is still played if it is at most this late,
#: from the next frame (e.g. queued while the callback for its buffer was running); later, it
#: is dropped: a late stimulus lands on the wrong phase.
MAX_LATE_S = 0.005
#: Queued or playing stimuli at once (a ring); far above the safety gate's 10 per second.
QUEUE_SIZE = 256
#: Started stimuli kept in :attr:`SoundStimulator.onsets` (a ring, newest last).
ONSET_LOG_SIZE = 4096
#: Readings of the output clock before :meth:`SoundStimulator.start` returns (about 1 s):
#: the largest callback-to-DAC time seen meanwhile sets :attr:`SoundStimulator.latency_s`.
WARMUP_READINGS = 200
#: The first callbacks fill the device's buffer before it starts playing: their DAC times are
#: not on the clock's line (measured through PulseAudio: the first two or three off by 1-10 ms).
PREFILL_CALLBACKS = 10
#: A callback pair (LSL clock, stream clock) read further apart than this is not used.
PAIR_MAX_S = 50e-6
#: Callback-to-DAC times kept for the summary's percentiles (a ring).
LEAD_LOG_SIZE = 1 << 14
#: ``fire`` refuses when the last callback is older than this: the device has stopped.
STALE_S = 0.5

# states of a queue entry
_FREE, _QUEUED, _PLAYING, _DONE, _CANCELLED, _LATE = 0, 1, 2, 3, 4, 5


def _realtime_audio_thread() -> bool:
    """Put the audio threads under ``SCHED_FIFO`` just below the live loop's priority, as audio
    servers do with their own: the calling thread (PortAudio's, in its first callback) and, when
    the device is PulseAudio's ALSA plugin, libpulse's thread in this process ("threaded-ml")
    that hands the buffers to the server. False where the system does not allow it.

    At normal priority either of them waits behind every busy program: with the machine loaded
    (6 busy processes on 2 cores) the callback missed its buffer by 25 ms, and after each such
    underrun the pulse plugin stalled the stream for 2 s. Both do little work per buffer, so at
    real-time priority they take almost nothing from anyone.
    """
    import os

    from closedloop.realtime import DEFAULT_PRIORITY

    if not hasattr(os, "sched_setscheduler"):
        return False
    param = os.sched_param(DEFAULT_PRIORITY - 1)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, param)
    except OSError:
        return False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return True
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                name = fh.read().strip()
            if name == "threaded-ml":
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, param)
        except OSError:
            continue
    return True


def _block_frames(samplerate: float) -> int:
    return int(2 ** round(math.log2(max(16.0, BLOCK_S * samplerate))))


class SoundStimulator:
    """Plays the protocol's ``[sound]`` stimulus at each trigger, or its feedback tone.

    Parameters
    ----------
    settings : SoundSettings
        The protocol's ``[sound]`` section.
    device : int or str or None
        Output device: index, name or a unique part of one (``closedloop sound`` lists them);
        None = the default output.
    feedback : bool
        Play the continuous feedback tone (feedback protocols; needs ``tone`` not "off").
    technical_delay_s : float
        The protocol's ``technical_delay_s``: the onset is placed this much before the
        predicted target time, as a TTL pulse would be fired.
    base_dir : path, optional
        Where a relative ``wav`` path is found (the protocol file's folder).

    Attributes
    ----------
    latency_s : float
        Known after :meth:`start`: how long before its onset a stimulus must be queued (the
        measured callback-to-DAC time, at least the device's reported output latency, plus
        two buffers and :data:`GUARD_S`). The session takes it off every plan.
    onsets : list of dict
        The started stimuli (see :meth:`onset_log`).
    """

    def __init__(
        self,
        settings: SoundSettings,
        device: int | str | None = None,
        *,
        feedback: bool = False,
        technical_delay_s: float = 0.0,
        base_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(settings, SoundSettings):
            raise TypeError(f"SoundStimulator needs SoundSettings, not {type(settings).__name__}.")
        self.settings = settings
        self.device_spec = device
        self.feedback = bool(feedback) and settings.tone != "off"
        self.technical_delay_s = float(technical_delay_s)
        self.base_dir = base_dir
        self.latency_s = 0.0
        self.samplerate = 0.0
        self.block_frames = 0
        self.reported_latency_s = math.nan
        self.device: dict = {}
        self._stream = None
        self._clock: DacClock | None = None
        self._tone: FeedbackTone | None = None
        self._stim = np.zeros((0, 1), dtype=np.float32)
        self._frame = 0
        self._gen = 0
        self._cancel_from = 0
        self._held = False
        self._closed = False
        self._control = threading.Lock()
        # the queue: written by fire (one thread), read by the callback
        self._start = np.zeros(QUEUE_SIZE, dtype=np.int64)  # scheduled onset frame
        self._began = np.zeros(QUEUE_SIZE, dtype=np.int64)  # frame its first sample was written at
        self._state = np.zeros(QUEUE_SIZE, dtype=np.int8)
        self._entry_gen = np.zeros(QUEUE_SIZE, dtype=np.int64)
        self._seq = np.zeros(QUEUE_SIZE, dtype=np.int64)
        self._pulse = np.zeros(QUEUE_SIZE, dtype=np.int64)
        self._written = 0
        self._read = 0
        # started stimuli: seq, pulse, scheduled frame, first frame written
        self._log = np.zeros((ONSET_LOG_SIZE, 4), dtype=np.int64)
        self._n_log = 0
        self._last_callback = -math.inf
        self._lead_max = 0.0
        self._leads = np.full(LEAD_LOG_SIZE, np.nan)
        self.n_queued = 0
        self.n_started = 0
        self.n_cancelled = 0
        self.n_late = 0
        self.n_late_dropped = 0
        self.late_max_s = 0.0
        self.n_underflows = 0
        self._underflow_at = np.zeros(16, dtype=np.int64)  # the first underflows' callback numbers
        self.n_callbacks = 0
        #: The longest time between two callbacks after the first buffers (their own period is
        #: one buffer; much more means the callback's thread was kept from running).
        self.callback_gap_max_s = 0.0
        self._gap_at = 0
        self.callback_error: str | None = None
        #: Whether the audio callback's thread runs under SCHED_FIFO (when the system allows it).
        self.realtime = False

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def from_protocol(cls, protocol: Protocol, device: int | str | None = None) -> SoundStimulator:
        """A stimulator for ``protocol``'s ``[sound]`` section (not started)."""
        source = Path(protocol.source) if protocol.source else None
        base = source.parent if source is not None and source.suffix.lower() == ".toml" else None
        return cls(
            protocol.sound,
            device,
            feedback=protocol.kind == "feedback",
            technical_delay_s=protocol.trigger.technical_delay_s,
            base_dir=base,
        )

    def start(self, timeout_s: float = 10.0) -> SoundStimulator:
        """Open the output stream, start it and wait until its clock is known.

        Raises
        ------
        UsageError
            An unknown device (the message lists the output devices).
        ProtocolError
            A ``[sound]`` stimulus that cannot be made (an unreadable WAV file ...).
        SoundError
            PortAudio missing, the device refusing the stream, or no callbacks from it.
        """
        import pylsl

        sd = sounddevice()
        self.device = find_output_device(self.device_spec)
        rate = self.settings.sample_rate_hz or float(self.device["samplerate_hz"])
        self.samplerate = float(rate)
        self.block_frames = _block_frames(self.samplerate)
        mono = stimulus(self.settings, self.samplerate, self.base_dir)
        channels = min(2, int(self.device["channels"]))
        self._stim = np.ascontiguousarray(np.repeat(mono[:, None], channels, axis=1))
        self._mono = np.zeros(self.block_frames, dtype=np.float32)
        if self.feedback:
            self._tone = FeedbackTone(self.settings, self.samplerate, self.block_frames)
        self._clock = DacClock(self.samplerate)
        self._max_late_frames = int(MAX_LATE_S * self.samplerate)
        self._lc = pylsl.local_clock
        # The callback needs the GIL, and a full garbage collection of a process that has loaded
        # mne and scipy holds it for about 100 ms (measured here): longer than any device buffer.
        # Everything built so far is moved out of the collector's reach, as the live loop does at
        # its start (which then costs nothing); close() lets it go again.
        gc.collect()
        gc.freeze()
        self._froze = True
        try:
            self._stream = sd.OutputStream(
                device=self.device["index"], samplerate=self.samplerate, channels=channels,
                dtype="float32", blocksize=self.block_frames, latency=self.settings.device_latency,
                callback=self._callback, dither_off=True,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise SoundError(
                f"the sound device {self.device['name']!r} cannot play {channels} channel(s) at "
                f"{self.samplerate:g} Hz: {exc}."
            ) from None
        self.reported_latency_s = float(self._stream.latency)
        self._stream.start()
        deadline = pylsl.local_clock() + timeout_s
        while self._clock.n_updates < WARMUP_READINGS:
            if self.callback_error is not None or pylsl.local_clock() > deadline:
                self.close()
                why = self.callback_error or f"no callbacks within {timeout_s:g} s"
                raise SoundError(f"the sound device {self.device['name']!r} does not play: {why}.")
            threading.Event().wait(0.01)
        lead = max(self._lead_max, self.reported_latency_s)
        # two buffers: the one that may be written while fire runs, and the callbacks' jitter
        self.latency_s = lead + 2.0 * self.block_frames / self.samplerate + GUARD_S
        log.info(
            "sound: %r at %g Hz, %d frames per buffer, reported latency %.2f ms, callback to DAC "
            "%.2f ms: stimuli are queued %.2f ms ahead", self.device["name"], self.samplerate,
            self.block_frames, self.reported_latency_s * 1e3, self._lead_max * 1e3, self.latency_s * 1e3,
        )
        return self

    def drain(self, timeout_s: float = 3.0) -> None:
        """Let the stimuli already queued play out, for at most ``timeout_s``: a session that ends
        by its duration finishes the burst in progress (an operator's stop cancels it instead)."""
        if self._stream is None or self._closed:
            return
        with self._control:
            ends = [
                int(self._start[k % QUEUE_SIZE])
                for k in range(self._read, self._written)
                if self._state[k % QUEUE_SIZE] in (_QUEUED, _PLAYING)
            ]
        if not ends:
            return
        last = max(ends) + self._stim.shape[0] + 2 * self.block_frames  # through the DAC's buffers
        deadline = time.monotonic() + timeout_s
        while self._frame < last and time.monotonic() < deadline and self._stream.active:
            threading.Event().wait(0.005)
        threading.Event().wait(self.latency_s)  # the last buffer written reaches the DAC

    def close(self) -> None:
        """Cancel what is queued, fade the tone out, stop and close the stream (idempotent)."""
        if self._closed:
            return
        self.pause()
        stream = self._stream
        if stream is not None:
            if self._tone is not None and stream.active:
                wait = 5.0 * self.settings.tone_smoothing_ms * 1e-3 + 2.0 * self.latency_s
                threading.Event().wait(min(wait, 1.0))
            try:
                stream.stop()
                stream.close()
            except Exception as exc:  # a device that went away: nothing left to stop
                log.warning("sound: closing the stream failed: %s", exc)
        self._closed = True
        if getattr(self, "_froze", False):
            gc.unfreeze()
            self._froze = False
        if self.n_late or self.n_late_dropped:
            log.warning(
                "sound: %d stimuli started late (at most %.2f ms) and %d were dropped as more than "
                "%.0f ms late", self.n_late, self.late_max_s * 1e3, self.n_late_dropped, MAX_LATE_S * 1e3,
            )

    def __enter__(self) -> SoundStimulator:
        if self._stream is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("playing" if self._stream is not None else "not started")
        name = self.device.get("name", self.device_spec)
        return (f"SoundStimulator(device={name!r}, {state}, samplerate={self.samplerate:g}, "
                f"latency_s={self.latency_s:.4f}, feedback={self.feedback})")

    # ---------------------------------------------------------------- the session's calls
    def fire(self, trigger: Trigger) -> Mapping[str, object]:
        """Queue the stimulus (each pulse of the burst) at its planned onset on the audio clock.

        Returns the marker's sound fields: ``sound_planned_ts`` (LSL time the onset should reach
        the DAC) and ``sound_scheduled_ts`` (the LSL time of the output frame it was placed at),
        or ``sound_cancelled`` when a pause came first.
        """
        clock = self._clock
        if self._closed or clock is None or clock.line is None:
            raise SoundError("the sound output is not running.")
        if self.callback_error is not None:
            raise SoundError(f"the audio callback failed: {self.callback_error}")
        now = self._lc()
        if now - self._last_callback > STALE_S:
            raise SoundError(f"the sound device has stopped (no callback for {now - self._last_callback:.2f} s).")
        gen = self._gen
        if self._held:
            return {"sound_cancelled": True}
        planned = trigger.crossing_s - self.technical_delay_s
        if not math.isfinite(planned):
            planned = now + self.latency_s
        pulses = max(1, int(trigger.pulses))
        if self._written + pulses - self._read > QUEUE_SIZE:
            raise SoundError("the sound queue is full (the audio callback is not keeping up).")
        first = 0
        for k in range(pulses):
            frame = int(round(clock.frame_of(planned + k * trigger.pulse_interval_s)))
            i = (self._written + k) % QUEUE_SIZE
            self._start[i] = frame
            self._entry_gen[i] = gen
            self._seq[i] = trigger.seq
            self._pulse[i] = k
            self._state[i] = _QUEUED
            if k == 0:
                first = frame
        self._written += pulses  # publishes the entries to the callback
        self.n_queued += pulses
        out = {"sound_planned_ts": planned, "sound_scheduled_ts": clock.time_of(first)}
        if self._gen != gen and first >= self._cancel_from:  # a pause came in between: cancelled
            out["sound_cancelled"] = True
        return out

    def on_state(self, state) -> None:
        """The engine's newest State (loop thread): the feedback tone follows its value."""
        tone = self._tone
        if tone is not None:
            tone.value = float(state.feedback)

    def pause(self) -> dict:
        """Cancel the queued stimuli, refuse new ones, fade the tone out.

        Cancelled: every queued stimulus whose onset lies beyond the buffer being written now
        (exactly those; one that starts inside that buffer still plays, whole). Returns
        ``{"sound_cancelled": [[seq, pulse], ...]}`` naming them (empty dict: none), which the
        session writes into its pause (or stop) marker.
        """
        with self._control:
            self._held = True
            # the first frame no callback may be writing now (the one running writes up to
            # self._frame + one buffer); written before the generation, which the callback reads first
            self._cancel_from = self._frame + self.block_frames
            before = self._gen
            self._gen = before + 1
            cancelled = []
            state, gens, start = self._state, self._entry_gen, self._start
            for k in range(self._read, self._written):
                i = k % QUEUE_SIZE
                if state[i] == _QUEUED and gens[i] == before and start[i] >= self._cancel_from:
                    cancelled.append([int(self._seq[i]), int(self._pulse[i])])
            if self._tone is not None:
                self._tone.muted = True
        return {"sound_cancelled": cancelled} if cancelled else {}

    def resume(self) -> None:
        """Accept stimuli again after :meth:`pause` (those cancelled stay cancelled)."""
        with self._control:
            if self._closed:
                return
            self._held = False
            if self._tone is not None:
                self._tone.muted = False

    # ---------------------------------------------------------------- the audio callback
    def _callback(self, outdata, frames, time_info, status) -> None:
        try:
            self._fill(outdata, frames, time_info, status)
        except Exception as exc:  # never let an exception stop the stream silently
            outdata.fill(0)
            if self.callback_error is None:
                self.callback_error = f"{type(exc).__name__}: {exc}"

    def _fill(self, outdata, frames, time_info, status) -> None:
        if self.n_callbacks == 0:
            self.realtime = _realtime_audio_thread()
        lc = self._lc
        first = self._frame
        a = lc()
        stream_now = self._stream.time
        b = lc()
        dac = time_info.outputBufferDacTime
        if status.output_underflow:
            if self.n_underflows < len(self._underflow_at):
                self._underflow_at[self.n_underflows] = self.n_callbacks
            self.n_underflows += 1
        clock = self._clock
        self.n_callbacks += 1
        if self.n_callbacks <= PREFILL_CALLBACKS:
            pass
        elif dac > 0 and b - a < PAIR_MAX_S:
            clock.update(first, dac + 0.5 * (a + b) - stream_now)
        elif dac <= 0:  # a host API that gives no DAC time: the reported latency from now
            clock.update(first, a + self.reported_latency_s)
        gap = a - self._last_callback
        if gap > self.callback_gap_max_s and self.n_callbacks > PREFILL_CALLBACKS:
            self.callback_gap_max_s = gap
            self._gap_at = self.n_callbacks
        self._last_callback = a
        if clock.line is not None:
            lead = clock.time_of(first) - a
            self._leads[self.n_callbacks % LEAD_LOG_SIZE] = lead
            if lead > self._lead_max:
                self._lead_max = lead
        end = first + frames
        tone = self._tone
        if tone is not None:
            mono = self._mono[:frames] if frames <= self._mono.shape[0] else np.zeros(frames, np.float32)
            tone.render(mono)
            outdata[:] = mono[:, None]
        else:
            outdata.fill(0)
        written = self._written
        k = self._read
        if k < written:
            gen = self._gen
            cancel_from, stim = self._cancel_from, self._stim
            length = stim.shape[0]
            state, start, began = self._state, self._start, self._began
            while k < written:
                i = k % QUEUE_SIZE
                st = state[i]
                if st == _QUEUED:
                    s = int(start[i])
                    if self._entry_gen[i] != gen and s >= cancel_from:
                        state[i] = st = _CANCELLED
                        self.n_cancelled += 1
                    elif s < end:
                        late = first - s
                        if late > self._max_late_frames:
                            state[i] = st = _LATE
                            self.n_late_dropped += 1
                        else:
                            began[i] = s if late <= 0 else first
                            state[i] = st = _PLAYING
                            self.n_started += 1
                            if late > 0:
                                self.n_late += 1
                                self.late_max_s = max(self.late_max_s, late / self.samplerate)
                            row = self._log[self._n_log % ONSET_LOG_SIZE]
                            row[0], row[1], row[2], row[3] = self._seq[i], self._pulse[i], s, began[i]
                            self._n_log += 1
                if st == _PLAYING:
                    s = int(began[i])
                    lo = max(first, s)
                    hi = min(s + length, end)
                    if hi > lo:
                        outdata[lo - first : hi - first] += stim[lo - s : hi - s]
                    if s + length <= end:
                        state[i] = _DONE
                k += 1
            k = self._read
            while k < written and state[k % QUEUE_SIZE] >= _DONE:
                k += 1
            self._read = k
            np.clip(outdata, -1.0, 1.0, out=outdata)
        self._frame = end

    # ---------------------------------------------------------------- figures
    def onset_log(self) -> list[dict]:
        """The started stimuli, oldest first (at most :data:`ONSET_LOG_SIZE`): trigger ``seq``,
        ``pulse`` index, ``scheduled_ts`` (LSL time of its scheduled frame) and ``late_s``."""
        n = self._n_log
        rows = self._log[: n] if n <= ONSET_LOG_SIZE else np.roll(self._log, -(n % ONSET_LOG_SIZE), axis=0)
        clock = self._clock
        return [
            {"seq": int(r[0]), "pulse": int(r[1]), "scheduled_ts": clock.time_of(int(r[2])) if clock.ready else math.nan,
             "late_s": (int(r[3]) - int(r[2])) / self.samplerate}
            for r in rows
        ]

    def summary(self) -> dict:
        """Counts and clock figures for the session's summary."""
        return {
            "device": self.device.get("name"),
            "hostapi": self.device.get("hostapi"),
            "samplerate_hz": self.samplerate,
            "block_frames": self.block_frames,
            "reported_latency_ms": round(self.reported_latency_s * 1e3, 3),
            "callback_to_dac_ms": round(self._lead_max * 1e3, 3),
            "callback_to_dac_ms_p50_p99": [round(float(v) * 1e3, 3) for v in np.nanpercentile(self._leads, [50, 99])]
            if np.isfinite(self._leads).any() else None,
            "latency_ms": round(self.latency_s * 1e3, 3),
            "queued": self.n_queued,
            "started": self.n_started,
            "cancelled": self.n_cancelled,
            "late": self.n_late,
            "late_max_ms": round(self.late_max_s * 1e3, 3),
            "late_dropped": self.n_late_dropped,
            "underflows": self.n_underflows,
            "callback_gap_ms_max": round(self.callback_gap_max_s * 1e3, 3),
            "callback_gap_max_at_s": round(self._gap_at * self.block_frames / self.samplerate, 3) if self.samplerate else None,
            "underflows_at_s": [round(float(k) * self.block_frames / self.samplerate, 3)
                                for k in self._underflow_at[: min(self.n_underflows, 16)]] if self.samplerate else [],
            "callback_error": self.callback_error,
            "realtime_thread": self.realtime,
            "clock": self._clock.summary() if self._clock is not None else None,
        }


def open_sound(protocol: Protocol, device: int | str | None = None) -> SoundStimulator:
    """A started :class:`SoundStimulator` for ``protocol`` on ``device`` (``run --sound``).

    The live session's modules are imported first: importing a compiled module (scipy's) holds
    the GIL for its whole load, tens of milliseconds that the running audio callback would
    spend waiting (an underrun, measured here when the engine was first built after the
    stream had started).
    """
    import closedloop.engine  # noqa: F401
    import closedloop.lsl.dejitter  # noqa: F401
    import closedloop.lsl.outputs  # noqa: F401

    return start_sound(SoundStimulator.from_protocol(protocol, device))


def start_sound(stim: SoundStimulator) -> SoundStimulator:
    """Start ``stim``'s output stream; PortAudio's own errors become a :class:`SoundError`.

    A live session builds its loop (and imports what it needs) first and starts the sound last,
    so that nothing holds the GIL for long while the audio callback already runs.
    """
    try:
        return stim.start()
    except ClosedLoopError:
        raise
    except Exception as exc:  # PortAudio's own errors, as a sentence
        stim.close()
        raise SoundError(f"the sound device {stim.device_spec!r} cannot be used: {exc}.") from None
