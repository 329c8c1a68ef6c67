"""The decision pipeline shared by the live loop and replay.

``Engine.process(chunk, newest_ts)`` takes one chunk of raw samples (float64 microvolts,
``(n_channels, n_samples)``) and the timestamp of its newest sample, and returns an
:class:`EngineState`: phase, amplitude, feedback, gate, and possibly a :class:`TriggerPlan`, a
trigger the caller must deliver at ``plan.time_s``. Whoever delivers it (the live loop's precise
wait, or replay's sample clock) asks :meth:`Engine.deliver` at the moment of delivery, where the
safety limits are applied whatever the estimator asked for.

Times are seconds in the input stream's clock (live: LSL local clock after time correction;
replay: ``sample_index / sfreq``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from closedloop.dsp import (
    Decimator,
    Envelope,
    SOSFilter,
    SpatialFilter,
    BandPower,
    design_highpass,
    design_notch,
    individual_peak_hz,
    spatial_weights,
)
from closedloop.errors import DataError, ProtocolError
from closedloop.estimators import make_estimator
from closedloop.estimators.base import wrap_deg
from closedloop.protocol import Protocol
from closedloop.safety import SafetyGate

#: Estimators run at or below this rate; faster amplifiers are decimated by an integer factor.
WORKING_RATE_MAX_HZ = 1000.0
#: After a reset (NaN run, gap) the estimator's filters need this long to settle before triggering.
SETTLE_S = 1.0
#: A jump in timestamps counts as a gap (lost samples) beyond this, or 2.5 samples if longer:
#: amplifier drivers that stamp chunks with their push time jitter by a few milliseconds.
GAP_TOLERANCE_S = 0.02
#: Time the live loop is given between a chunk's newest sample and its decision being carried out
#: (transport, processing, the wait before delivery). Triggers are planned from the newest sample
#: plus this much onwards, in replay exactly as live, so that the two decide alike and live is on
#: time while its latency stays below it (p99 0.5 ms at 64 ch / 5 kHz; at 0.5 ms about one trigger
#: in 40 went out late); the planning windows of successive chunks still tile the time axis, so no
#: crossing falls between them. Longer costs accuracy: every plan predicts further ahead (S001R02
#: O1, wiener, circular SD 13.1 deg at 0, 14.4-14.5 at 0.5-1 ms, 15.4 at 2 ms; the BDF within noise).
DECISION_LATENCY_S = 0.001
#: A band's upper edge must stay below this fraction of the working Nyquist frequency.
NYQUIST_MARGIN = 0.9
#: Feedback values are recomputed at most this often (seconds of data).
FEEDBACK_STEP_S = 0.05


@dataclass
class TriggerPlan:
    """A trigger the engine wants delivered at ``time_s``."""

    time_s: float  # delivery time: predicted crossing minus the stimulator's technical delay
    crossing_s: float  # predicted time of the target phase
    target_phase_deg: float
    phase_deg: float  # estimated phase at the delivery time
    amplitude: float
    sample_ts: float  # newest input sample the decision used
    tolerance_s: float  # how late delivery may be before the trigger must be dropped
    event: str
    pulses: int = 1
    pulse_interval_s: float = 0.0
    seq: int = 0  # set on delivery


@dataclass
class EngineState:
    """What the engine knows after one chunk (one State stream sample)."""

    sample_ts: float
    phase_deg: float
    amplitude: float
    feedback: float
    gate: bool
    plan: TriggerPlan | None = None
    n_bad: int = 0


@dataclass
class EngineCounters:
    n_chunks: int = 0
    n_samples: int = 0
    n_bad_samples: int = 0
    n_gaps: int = 0
    n_missing_samples: int = 0
    n_nonmonotonic: int = 0
    n_planned: int = 0
    n_delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


class Engine:
    """The closed-loop decision pipeline for one protocol and one input layout.

    Parameters
    ----------
    protocol : Protocol
        A validated protocol (``closedloop.protocol.load_protocol``).
    ch_names : list of str
        Channel labels of the input, in order.
    sfreq : float
        Nominal sampling rate of the input (Hz).
    seed : int
        Seed for everything random (sham phases, interval jitter), so replay is deterministic.
    background_fit : bool
        Fit the estimator on the baseline in a background thread (live: the loop keeps taking
        samples, with the gate closed, until the fit is done). Replay fits in line, on the
        sample clock, so its result does not depend on the machine's speed.
    output_delay_s : float
        The output devices' own latency (a sound card's), taken off every plan as the protocol's
        ``technical_delay_s`` is.

    Attributes
    ----------
    paused : bool
        Set by an operator's pause: the gate stays closed and nothing is planned until cleared.
    """

    def __init__(
        self,
        protocol: Protocol,
        ch_names: list[str],
        sfreq: float,
        *,
        seed: int = 0,
        background_fit: bool = False,
        output_delay_s: float = 0.0,
    ) -> None:
        if not (sfreq > 0 and math.isfinite(sfreq)):
            raise DataError(f"the input sampling rate {sfreq!r} Hz is not usable; a positive rate is needed.")
        self.protocol = protocol
        self.ch_names = list(ch_names)
        self.n_channels = len(self.ch_names)
        self.sfreq = float(sfreq)
        self.kind = protocol.kind
        if not (math.isfinite(output_delay_s) and 0.0 <= output_delay_s <= 1.0):
            raise ValueError(f"output_delay_s must be 0 to 1 s, got {output_delay_s!r}.")
        self.output_delay_s = float(output_delay_s)
        self.paused = False
        self.rng = np.random.default_rng(seed)
        self.counters = EngineCounters()

        self.factor = max(1, int(math.ceil(self.sfreq / WORKING_RATE_MAX_HZ - 1e-9)))
        self.sfreq_work = self.sfreq / self.factor
        self._check_rate()

        sig = protocol.signal
        if self.kind == "feedback":
            targets = list(protocol.feedback.channels) or [sig.channel]
        else:
            targets = [sig.channel]
        weights = spatial_weights(
            self.ch_names,
            targets,
            sig.reference,
            neighbors=list(sig.neighbors) or None,
            bipolar_with=sig.bipolar_with,
            weights=dict(sig.weights) or None,
        )
        self.n_derived = weights.shape[0]
        self.used_channels = np.flatnonzero(np.any(weights != 0, axis=0))
        self.spatial = SpatialFilter(weights)
        self.decimator = Decimator(self.factor, self.n_derived, self.sfreq) if self.factor > 1 else None
        self.delay_s = self.decimator.delay_s if self.decimator is not None else 0.0
        self.notch = (
            SOSFilter(design_notch(sig.notch_hz, self.sfreq_work), self.n_derived)
            if sig.notch_hz
            else None
        )
        band = protocol.band
        self.band_hz = (float(band.low_hz), float(band.high_hz))
        hp_cut = min(0.5, self.band_hz[0] / 4.0)
        self.highpass = SOSFilter(design_highpass(hp_cut, self.sfreq_work), self.n_derived)
        self.envelope = Envelope(self.sfreq_work, *self.band_hz, self.n_derived)

        trig = protocol.trigger
        self.baseline_n = int(round(trig.baseline_s * self.sfreq_work))
        self._baseline = np.empty((self.n_derived, max(self.baseline_n, 1)))
        self._baseline_env = np.empty((self.n_derived, max(self.baseline_n, 1)))
        self._baseline_fill = 0
        self.baseline_done = self.baseline_n == 0
        self.gate_threshold = 0.0
        self._gate_on_estimator = False
        self.individual_peak_hz: float | None = None

        self.estimator = None
        self.fit_error: str | None = None
        self.notes: list[str] = []
        self._estimator_kwargs = dict(protocol.estimator.params)
        if self.kind == "phase":
            # build one now: bad [estimator.params] and a baseline too short for the method are
            # refused before the session starts, not when the baseline ends
            probe = self._make_estimator()
            need_s = float(getattr(probe, "min_baseline_s", 0.0))
            if trig.baseline_s < need_s:
                raise ProtocolError(
                    f"{protocol.source}: [trigger] baseline_s = {trig.baseline_s:g} is too short for "
                    f"estimator {probe.name!r}; it needs at least {need_s:g} s of baseline."
                )
        self.background_fit = background_fit
        self._fit_thread: threading.Thread | None = None
        self._fit_result: dict = {}
        self._fit_backlog: list[np.ndarray] = []
        self.safety = SafetyGate(trig, seed=seed)
        self.pending: TriggerPlan | None = None
        self.delivered: deque[TriggerPlan] = deque(maxlen=1024)  # the most recent, for inspection

        art = protocol.artifact
        self._hold_until = -math.inf
        self._hold_cause = ""  # why the current hold was set: artifact, gap, stall, clock, operator
        self._flat_block_n = max(1, int(round(art.flat_window_s * self.sfreq / 2)))
        self._flat_acc_min = np.full(len(self.used_channels), np.inf)
        self._flat_acc_max = np.full(len(self.used_channels), -np.inf)
        self._flat_acc_n = 0
        self._flat_prev: tuple[np.ndarray, np.ndarray] | None = None

        self._last_ts: float | None = None
        self._n_in_total = 0  # input samples fed to the decimator since its last reset
        self._n_work_total = 0  # working-rate samples produced so far
        self._newest_work_ts = -math.inf
        self.phase_deg = math.nan
        self.amplitude = math.nan
        self.frequency_hz = math.nan
        self.gate = False

        self.feedback_value = math.nan
        if self.kind == "feedback":
            fb = protocol.feedback
            if fb.measure == "asymmetry" and self.n_derived != 2:
                raise ProtocolError(
                    f"{protocol.source}: [feedback] channels must name exactly two channels for "
                    f"measure = 'asymmetry' (got {list(fb.channels)})."
                )
            self.bandpower = BandPower(self.sfreq_work, fb.window_s, self.n_derived)
            self._fb_step_n = max(1, int(round(FEEDBACK_STEP_S * self.sfreq_work)))
            self._fb_since = 0
            self._fb_smooth = math.nan
            self._fb_mean = 0.0
            self._fb_std = 1.0
            self._fb_seen_s = 0.0
        if self.baseline_done:
            self._finish_baseline()

    # ------------------------------------------------------------------ set-up
    def _check_rate(self) -> None:
        band = self.protocol.band
        high = band.high_hz
        if band.individual:
            high = max(high, band.peak_search_hz[1] + band.half_width_hz)
        nyquist = self.sfreq_work / 2.0
        if high >= NYQUIST_MARGIN * nyquist:
            raise DataError(
                f"a sampling rate of {self.sfreq:g} Hz cannot carry the protocol's band up to {high:g} Hz; "
                f"the band must stay below {NYQUIST_MARGIN:g} x Nyquist ({NYQUIST_MARGIN * nyquist:g} Hz), "
                f"so at least {high / NYQUIST_MARGIN * 2:g} Hz is needed."
            )

    def _make_estimator(self):
        try:
            return make_estimator(
                self.protocol.estimator.method, self.sfreq_work, self.band_hz, **self._estimator_kwargs
            )
        except TypeError as exc:
            raise ProtocolError(
                f"{self.protocol.source}: [estimator.params] does not suit method "
                f"{self.protocol.estimator.method!r}: {exc}."
            ) from exc

    def _finish_baseline(self) -> None:
        """Turn the collected baseline into the gate threshold, band, estimator and feedback reference."""
        n = self._baseline_fill
        base = self._baseline[:, :n]
        band = self.protocol.band
        main = base[0]
        finite = main[np.isfinite(main)]
        if band.individual and finite.size >= int(2 * self.sfreq_work):
            peak = individual_peak_hz(finite, self.sfreq_work, tuple(band.peak_search_hz))
            if math.isfinite(peak):
                self.individual_peak_hz = float(peak)
                self.band_hz = (max(0.1, peak - band.half_width_hz), peak + band.half_width_hz)
                self.envelope = Envelope(self.sfreq_work, *self.band_hz, self.n_derived)
                # the gate's reference, again in the individual band; the envelope then
                # carries on from the end of the baseline
                highpass = SOSFilter(self.highpass.sos, self.n_derived)
                self._baseline_env[:, :n] = self.envelope.process(highpass.process(np.ascontiguousarray(base)))
        if self.kind == "phase":
            self.gate_threshold = self._gate_threshold(self._baseline_env[0, :n])
            estimator = self._make_estimator()
            if self.background_fit:
                self._fit_thread = threading.Thread(
                    target=self._fit_in_background, args=(estimator, finite.copy()), name="closedloop-fit", daemon=True
                )
                self._fit_thread.start()
            else:
                self._fit_job(estimator, finite)
                self._take_fit()
        else:
            values = self._feedback_reference(base)
            if values.size >= 2:
                self._fb_mean = float(values.mean())
                self._fb_std = float(values.std()) or 1.0
        self.baseline_done = True
        self._baseline = self._baseline[:, :0]

    def _fit_in_background(self, estimator, baseline: np.ndarray) -> None:
        from closedloop import realtime

        realtime.normal()  # a long fit must not hold a core against the loop and the machine
        self._fit_job(estimator, baseline)

    def _fit_job(self, estimator, baseline: np.ndarray) -> None:
        try:
            if baseline.size:
                estimator.fit(baseline)
                warm = baseline[-int(min(baseline.size, 2 * self.sfreq_work)) :]
                estimator.process(np.ascontiguousarray(warm))
            self._fit_result["estimator"] = estimator
        except BaseException as exc:  # handed to the loop's thread by _take_fit
            self._fit_result["error"] = exc

    def _take_fit(self) -> None:
        """Install the fitted estimator and feed it what arrived while it was being fitted."""
        self._fit_thread = None
        if "error" in self._fit_result:
            exc = self._fit_result.pop("error")
            if not isinstance(exc, (DataError, ProtocolError, ValueError, np.linalg.LinAlgError)):
                raise exc
            # the baseline could not train the estimator (no rhythm, too short a clean stretch):
            # the session goes on, recorded, but never triggers
            self.fit_error = f"the estimator could not be trained on the baseline: {exc}"
            self.notes.append(self.fit_error + " Triggering stays off for this session.")
            return
        self.estimator = self._fit_result.pop("estimator")
        trig = self.protocol.trigger
        threshold = getattr(self.estimator, "amplitude_threshold", None)
        if trig.gate_kind == "percentile" and threshold is not None:
            # the estimator's own amplitude has no envelope-filter lag: gate on it, against the
            # same percentile of its values over the baseline
            value = float(threshold(trig.gate_value))
            if math.isfinite(value):
                self.gate_threshold = value
                self._gate_on_estimator = True
        if self._fit_backlog:
            backlog = np.concatenate(self._fit_backlog)
            self._fit_backlog = []
            keep = int(2 * self.sfreq_work)
            self.estimator.process(np.ascontiguousarray(backlog[-keep:]))

    def _gate_threshold(self, env: np.ndarray) -> float:
        trig = self.protocol.trigger
        kind, value = trig.gate_kind, trig.gate_value
        if kind == "none":
            return 0.0
        if kind == "uv":
            return float(value)
        # skip the envelope filter's own settling at the start of the baseline
        settle = min(env.size // 4, int(self.sfreq_work))
        values = env[settle:]
        values = values[np.isfinite(values)]
        if values.size == 0:
            return math.inf
        return float(np.percentile(values, value))

    # ------------------------------------------------------------------ per chunk
    def process(
        self, chunk: np.ndarray, newest_ts: float, horizon_s: float | None = None, lead_s: float = 0.0
    ) -> EngineState:
        """Process one chunk and return the state after it.

        Parameters
        ----------
        chunk : ndarray, shape (n_channels, n_samples), float64
            Raw samples in microvolts.
        newest_ts : float
            Time of the chunk's newest sample (seconds, input clock).
        horizon_s : float, optional
            How long until the next chunk is expected; a trigger is planned only if its delivery
            falls before then (otherwise the next chunk gives a better estimate). Default: this
            chunk's duration.
        lead_s : float
            Extra time before the planning window opens, for streams whose chunks arrive late
            after their newest sample's time (0 in replay; live, whole chunks of the usual arrival
            delay beyond ``DECISION_LATENCY_S`` plus half the phase tolerance).

        Notes
        -----
        Planning runs on the sample clock alone, in live as in replay, so that the same samples in
        the same chunks give the same decisions: a trigger is planned if its delivery falls in
        ``[newest_ts + DECISION_LATENCY_S, newest_ts + DECISION_LATENCY_S + horizon_s]``. Live, a
        chunk processed later than ``DECISION_LATENCY_S`` after its newest sample can make a plan
        whose moment has passed: it is delivered at once and dropped at delivery if that is later
        than the protocol's phase tolerance.
        """
        if chunk.ndim != 2 or chunk.shape[0] != self.n_channels:
            raise ValueError(
                f"expected a chunk of shape ({self.n_channels}, n_samples), got {chunk.shape}"
            )
        n = chunk.shape[1]
        c = self.counters
        if n == 0:
            return self._state(newest_ts)
        c.n_chunks += 1
        c.n_samples += n
        dt = 1.0 / self.sfreq
        if horizon_s is None:
            horizon_s = n * dt
        if self._last_ts is not None:
            first_ts = newest_ts - (n - 1) * dt
            step = first_ts - self._last_ts
            if newest_ts <= self._last_ts:
                # timestamps that go back (or repeat) cannot time a stimulus: hold, counted from
                # the new timeline, so that a clock that jumped back for good does not hold forever
                c.n_nonmonotonic += 1
                self._hold_until = newest_ts + max(self.protocol.artifact.hold_s, SETTLE_S)
                self._hold_cause = "clock"
                self.gate = False
            elif step < -0.5 * dt:
                # chunks that overlap a little: push-time stamps with jitter; counted, not held
                c.n_nonmonotonic += 1
            elif step > max(2.5 * dt, GAP_TOLERANCE_S):
                missing = int(round(step * self.sfreq)) - 1
                c.n_gaps += 1
                c.n_missing_samples += missing
                self._reset_signal(newest_ts, "gap")
        self._last_ts = newest_ts

        bad_mask = self._artifact_mask(chunk)
        n_bad = int(bad_mask.sum()) if bad_mask is not None else 0
        if n_bad:
            c.n_bad_samples += n_bad
            last_bad = int(np.flatnonzero(bad_mask)[-1])
            bad_ts = newest_ts - (n - 1 - last_bad) * dt
            self._hold(bad_ts + max(self.protocol.artifact.hold_s, SETTLE_S), "artifact")
            if not np.isfinite(chunk[self.used_channels]).all():
                # never feed NaN/Inf forward: restart the chain from the next good sample
                self._reset_signal(None, "artifact")
                chunk = chunk[:, last_bad + 1 :]
                if chunk.shape[1] == 0:
                    return self._state(newest_ts)

        derived = self.spatial.process(np.ascontiguousarray(chunk))
        if self.decimator is not None:
            self._n_in_total += derived.shape[1]
            derived = self.decimator.process(derived)
        m = derived.shape[1]
        if m == 0:
            return self._state(newest_ts)
        if self.notch is not None:
            derived = self.notch.process(derived)
        self._n_work_total += m
        if self.decimator is not None:
            # the newest output corresponds to an input sample some way back from the newest input
            newest_in = (self._n_work_total - 1) * self.factor + self._dec_offset
            back = (self._n_in_total - 1) - newest_in
            self._newest_work_ts = newest_ts - back * dt - self.delay_s
        else:
            self._newest_work_ts = newest_ts

        # the envelope's complex demodulation leaks a DC offset into the band (about -50 dB:
        # 5 mV reads as several µV of amplitude), so it follows the DC-free signal
        hp = self.highpass.process(derived)
        if self.protocol.artifact.enabled:
            over = np.abs(hp[0]) > self.protocol.artifact.max_abs_uv
            if over.any():
                c.n_bad_samples += int(over.sum())
                self._hold(newest_ts + self.protocol.artifact.hold_s, "artifact")
        env = self.envelope.process(hp)

        if not self.baseline_done:
            take = min(m, self.baseline_n - self._baseline_fill)
            self._baseline[:, self._baseline_fill : self._baseline_fill + take] = derived[:, :take]
            self._baseline_env[:, self._baseline_fill : self._baseline_fill + take] = env[:, :take]
            self._baseline_fill += take
            if self.kind == "feedback":
                self._update_feedback(derived, collecting=True)
            if self._baseline_fill >= self.baseline_n:
                self._finish_baseline()
                rest = derived[:, take:]
                if rest.shape[1] and self.kind == "phase":
                    if self._fit_thread is not None:
                        self._fit_backlog.append(rest[0].copy())
                    elif self.estimator is not None:  # None: the fit failed (fit_error)
                        self.estimator.process(np.ascontiguousarray(rest[0]))
            self.amplitude = float(env[0, -1])
            return self._state(newest_ts)

        self.amplitude = float(env[0, -1])
        if self.kind == "feedback":
            self._update_feedback(derived, collecting=False)
            self.gate = False
            return self._state(newest_ts)

        if self._fit_thread is not None:
            if self._fit_thread.is_alive():
                self._fit_backlog.append(derived[0].copy())
                self.gate = False
                return self._state(newest_ts)
            self._fit_thread.join()
            self._take_fit()
        est = self.estimator
        if est is None:  # training failed (fit_error): never trigger
            self.gate = False
            return self._state(newest_ts)
        est.process(np.ascontiguousarray(derived[0]))
        if not est.ready:
            self.gate = False
            self.phase_deg = math.nan
            return self._state(newest_ts)
        self.frequency_hz = float(est.frequency_hz)
        lag = newest_ts - self._newest_work_ts
        self.phase_deg = wrap_deg(est.phase_deg + 360.0 * self.frequency_hz * lag)
        if self._gate_on_estimator and math.isfinite(est.amplitude):
            self.amplitude = float(est.amplitude)
        held = newest_ts < self._hold_until or self.paused
        self.gate = (not held) and self.amplitude >= self.gate_threshold
        state = self._state(newest_ts)
        if self.gate and self.pending is None:
            state.plan = self._plan(newest_ts, horizon_s, lead_s)
        return state

    def _state(self, newest_ts: float) -> EngineState:
        return EngineState(
            sample_ts=newest_ts,
            phase_deg=self.phase_deg,
            amplitude=self.amplitude,
            feedback=self.feedback_value,
            gate=self.gate,
        )

    def _plan(self, newest_ts: float, horizon_s: float, lead_s: float = 0.0) -> TriggerPlan | None:
        trig = self.protocol.trigger
        est = self.estimator
        target = trig.target_phase_deg
        if trig.random_phase:
            target = wrap_deg(float(self.rng.uniform(-180.0, 180.0)))
        wait = float(est.next_crossing_s(target))
        if not math.isfinite(wait) or wait < 0:
            return None
        crossing = self._newest_work_ts + wait
        fire = crossing - trig.technical_delay_s - self.output_delay_s
        earliest = newest_ts + DECISION_LATENCY_S + lead_s
        if fire > earliest + horizon_s:
            return None
        freq = self.frequency_hz if self.frequency_hz > 0 else sum(self.band_hz) / 2
        tolerance_s = trig.phase_tolerance_deg / (360.0 * freq)
        if fire < earliest:
            # planned by the previous chunk's window, or passed already (inside the decimator's
            # delay); never planned late by design
            return None
        if self.safety.check(fire, input_ok=True) is not None:
            return None
        phase_at_fire = wrap_deg(est.phase_deg + 360.0 * freq * (fire - self._newest_work_ts))
        plan = TriggerPlan(
            time_s=fire,
            crossing_s=crossing,
            target_phase_deg=target,
            phase_deg=phase_at_fire,
            amplitude=float(est.amplitude) if math.isfinite(est.amplitude) else self.amplitude,
            sample_ts=newest_ts,
            tolerance_s=tolerance_s,
            event=trig.event,
            pulses=trig.pulses,
            pulse_interval_s=trig.pulse_interval_s,
        )
        self.pending = plan
        self.counters.n_planned += 1
        return plan

    # ------------------------------------------------------------------ delivery
    def deliver(self, plan: TriggerPlan, time_s: float) -> bool:
        """Ask to deliver ``plan`` now (``time_s``); the safety limits decide. True = fire it."""
        if plan is self.pending:
            self.pending = None
        if time_s - plan.time_s > plan.tolerance_s:
            self._count_drop("late")
            return False
        reason = self.safety.check(time_s, input_ok=time_s >= self._hold_until)
        if reason is not None:
            self._count_drop(reason)
            return False
        self.safety.record(time_s)
        self.counters.n_delivered += 1
        plan.seq = self.counters.n_delivered
        self.delivered.append(plan)
        return True

    def drop(self, plan: TriggerPlan, reason: str) -> None:
        """The caller could not deliver ``plan`` (stream stalled, stopped ...)."""
        if plan is self.pending:
            self.pending = None
        self._count_drop(reason)

    def _count_drop(self, reason: str) -> None:
        key = reason.split(":")[0].split(" (")[0]
        self.counters.dropped[key] = self.counters.dropped.get(key, 0) + 1

    # ------------------------------------------------------------------ holds and resets
    def _hold(self, until_ts: float, cause: str = "operator") -> None:
        if until_ts > self._hold_until:
            self._hold_until = until_ts
            self._hold_cause = cause
        self.gate = False

    @property
    def hold_reason(self) -> str:
        """Why triggering is not allowed now, other than the amplitude gate ("" when nothing holds it).

        ``"baseline"`` (collecting it), ``"fit"`` (the estimator is being trained), ``"fit failed"``,
        ``"paused"`` (the operator), a hold after bad input (``"artifact"``, ``"gap"``, ``"stall"``,
        ``"clock"``: timestamps went back, ``"operator"``: :meth:`hold`), or ``"settle"`` (the
        estimator has too little history since a restart). Read from any thread (plain attributes).
        """
        if self.paused:
            return "paused"
        if not self.baseline_done:
            return "baseline"
        if self._fit_thread is not None:
            return "fit"
        if self.fit_error is not None:
            return "fit failed"
        if self._last_ts is not None and self._last_ts < self._hold_until:
            return self._hold_cause or "hold"
        est = self.estimator
        if self.kind == "phase" and est is not None and not est.ready:
            return "settle"
        return ""

    @property
    def hold_until(self) -> float:
        """Input-clock time until which triggering is held (-inf when not held)."""
        return self._hold_until

    def hold(self, seconds: float, now_ts: float | None = None) -> None:
        """Hold triggering for ``seconds`` after ``now_ts`` (default: after the newest sample)."""
        base = now_ts if now_ts is not None else (self._last_ts if self._last_ts is not None else 0.0)
        self._hold(base + seconds)

    def stream_gap(self, now_ts: float | None = None) -> None:
        """The input stalled or reconnected: restart the signal chain and hold until it settles."""
        self._reset_signal(now_ts, "stall")

    def _reset_signal(self, now_ts: float | None, cause: str = "gap") -> None:
        for stage in (self.spatial, self.decimator, self.notch, self.highpass, self.envelope):
            if stage is not None:
                stage.reset()
        self._n_in_total = 0
        self._n_work_total = 0
        if self.estimator is not None:
            self.estimator.reset()
        self._fit_backlog = []
        base = now_ts if now_ts is not None else (self._last_ts if self._last_ts is not None else 0.0)
        self._hold(base + max(SETTLE_S, self.protocol.artifact.hold_s), cause)
        self.phase_deg = math.nan

    @property
    def _dec_offset(self) -> int:
        return int(getattr(self.decimator, "offset", 0))

    def _artifact_mask(self, chunk: np.ndarray) -> np.ndarray | None:
        """Samples that are bad on any used channel: NaN/Inf, saturated, or a flat channel."""
        used = chunk[self.used_channels]
        finite = np.isfinite(used)
        all_finite = bool(finite.all())
        mask = None
        if not all_finite:
            mask = ~finite.all(axis=0)
        art = self.protocol.artifact
        if not art.enabled:
            return mask
        if art.saturation_uv > 0:
            sat = (np.abs(np.where(finite, used, 0.0)) >= art.saturation_uv).any(axis=0)
            mask = sat if mask is None else (mask | sat)
        if art.flat_uv > 0 and all_finite:
            self._flat_acc_min = np.minimum(self._flat_acc_min, used.min(axis=1))
            self._flat_acc_max = np.maximum(self._flat_acc_max, used.max(axis=1))
            self._flat_acc_n += used.shape[1]
            if self._flat_acc_n >= self._flat_block_n:
                block = (self._flat_acc_min, self._flat_acc_max)
                if self._flat_prev is not None:
                    lo = np.minimum(block[0], self._flat_prev[0])
                    hi = np.maximum(block[1], self._flat_prev[1])
                    if ((hi - lo) < art.flat_uv).any():
                        flat = np.ones(used.shape[1], dtype=bool)
                        mask = flat if mask is None else (mask | flat)
                self._flat_prev = block
                self._flat_acc_min = np.full(len(self.used_channels), np.inf)
                self._flat_acc_max = np.full(len(self.used_channels), -np.inf)
                self._flat_acc_n = 0
        if mask is not None and not mask.any():
            return None
        return mask

    # ------------------------------------------------------------------ feedback
    def _feedback_measure(self, bandpower) -> float:
        """Power, ratio or asymmetry of the protocol's band over the power window (NaN if undefined)."""
        fb = self.protocol.feedback
        power = bandpower.power(*self.band_hz)
        with np.errstate(divide="ignore", invalid="ignore"):
            if fb.measure == "asymmetry":
                return float(np.log(power[0]) - np.log(power[1]))
            if fb.measure == "ratio":
                return float(np.mean(power) / np.mean(bandpower.power(*fb.ratio_band_hz)))
            return float(np.mean(power))

    def _smooth(self, previous: float, value: float, step_s: float) -> float:
        tau = self.protocol.feedback.smoothing_s
        if math.isnan(previous) or tau <= 0:
            return value
        return previous + (1.0 - math.exp(-step_s / tau)) * (value - previous)

    def _feedback_reference(self, base: np.ndarray) -> np.ndarray:
        """Smoothed feedback values over the baseline, in the final (maybe individual) band."""
        fb = self.protocol.feedback
        bandpower = BandPower(self.sfreq_work, fb.window_s, self.n_derived)
        step = self._fb_step_n
        start = int(math.ceil(fb.window_s * self.sfreq_work))
        values, smooth = [], math.nan
        bandpower.process(np.ascontiguousarray(base[:, :start]))
        for i in range(start, base.shape[1] - step + 1, step):
            bandpower.process(np.ascontiguousarray(base[:, i : i + step]))
            value = self._feedback_measure(bandpower)
            if math.isfinite(value):
                smooth = self._smooth(smooth, value, step / self.sfreq_work)
                values.append(smooth)
        if math.isfinite(smooth):
            self._fb_smooth = smooth
        return np.asarray(values)

    def _update_feedback(self, derived: np.ndarray, collecting: bool) -> None:
        fb = self.protocol.feedback
        self.bandpower.process(derived)
        m = derived.shape[1]
        self._fb_since += m
        self._fb_seen_s += m / self.sfreq_work
        if self._fb_since < self._fb_step_n or self._fb_seen_s < fb.window_s:
            return
        step_s = self._fb_since / self.sfreq_work
        self._fb_since = 0
        value = self._feedback_measure(self.bandpower)
        if not math.isfinite(value):
            return
        self._fb_smooth = self._smooth(self._fb_smooth, value, step_s)
        if collecting:
            self.feedback_value = math.nan if fb.zscore else self._fb_smooth
        elif fb.zscore:
            self.feedback_value = (self._fb_smooth - self._fb_mean) / self._fb_std
        else:
            self.feedback_value = self._fb_smooth

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict:
        c = self.counters
        return {
            "chunks": c.n_chunks,
            "samples": c.n_samples,
            "bad_samples": c.n_bad_samples,
            "gaps": c.n_gaps,
            "missing_samples": c.n_missing_samples,
            "nonmonotonic_timestamps": c.n_nonmonotonic,
            "triggers_planned": c.n_planned,
            "triggers_delivered": c.n_delivered,
            "triggers_dropped": c.n_dropped,
            "dropped_by_reason": dict(c.dropped),
            "working_sfreq": self.sfreq_work,
            "band_hz": list(self.band_hz),
            "individual_peak_hz": self.individual_peak_hz,
            "gate_threshold_uv": self.gate_threshold,
            "estimator": getattr(self.estimator, "name", None),
            "notes": list(self.notes),
        }
