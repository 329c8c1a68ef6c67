"""The decision pipeline shared by the live loop and replay: the units, wired.

``Engine.process(chunk, newest_ts)`` takes one chunk of raw samples (float64 microvolts,
``(n_channels, n_samples)``) and the timestamp of its newest sample, and returns an
:class:`EngineState`: phase, amplitude, feedback, gate, and possibly a
:class:`~closedloop.engine.planning.TriggerPlan`, a trigger the caller must deliver at
``plan.time_s``. Whoever delivers it (the live loop's precise wait, or replay's sample clock)
asks :meth:`Engine.deliver` at the moment of delivery, where the safety limits are applied
whatever the estimator asked for.

Per chunk: timestamps (:mod:`.continuity`) -> artifacts (:mod:`.artifacts`) -> the signal chain
(:mod:`.signal`) -> the baseline (:mod:`.baseline`) -> the decision: a phase protocol's estimator,
gate (:mod:`.gate`) and planner (:mod:`.planning`), or a feedback protocol's meter
(:mod:`.feedback`).

Times are seconds in the input stream's clock (live: LSL local clock after time correction;
replay: ``sample_index / sfreq``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from closedloop.angles import wrap_deg
from closedloop.dsp import spatial_weights
from closedloop.engine.artifacts import ArtifactDetector
from closedloop.engine.baseline import Baseline, fit_estimator, individual_band
from closedloop.engine.continuity import OK, TimestampCheck
from closedloop.engine.feedback import FeedbackMeter
from closedloop.engine.gate import AmplitudeGate
from closedloop.engine.planning import TriggerPlan, TriggerPlanner
from closedloop.engine.signal import SignalChain, check_band_fits, working_rate
from closedloop.errors import DataError, ProtocolError
from closedloop.estimators import make_estimator
from closedloop.protocol import Protocol
from closedloop.safety import SafetyGate

__all__ = ["SETTLE_S", "Engine", "EngineCounters", "EngineState", "run_inline"]

#: After a reset (NaN run, gap) the estimator's filters need this long to settle before triggering.
SETTLE_S = 1.0

#: Hold reasons (:attr:`Engine.hold_reason`), for displays and the session summary.
HOLD_REASONS = ("artifact", "over limit", "gap", "timestamps", "stream", "units", "paused", "baseline")


@dataclass(slots=True)
class EngineState:
    """What the engine knows after one chunk (one State stream sample)."""

    sample_ts: float
    phase_deg: float
    amplitude: float
    feedback: float
    gate: bool
    plan: TriggerPlan | None = None
    n_bad: int = 0

    def row(self) -> tuple[float, float, float, float, float]:
        """The State stream's channels (:data:`closedloop.records.STATE_FIELDS`) as floats."""
        return (self.sample_ts, self.phase_deg, self.amplitude, self.feedback, 1.0 if self.gate else 0.0)


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


def run_inline(job: Callable[[], object]) -> Future:
    """Run ``job`` now, in the caller's thread; its result (or exception) in a done Future."""
    future: Future = Future()
    try:
        future.set_result(job())
    except BaseException as exc:  # handed to the engine, which decides
        future.set_exception(exc)
    return future


class Engine:
    """The closed-loop decision pipeline for one protocol and one input layout.

    Parameters
    ----------
    protocol : Protocol
        A validated protocol (``closedloop.load_protocol``).
    ch_names : list of str
        Channel labels of the input, in order.
    sfreq : float
        Nominal sampling rate of the input (Hz).
    seed : int
        Seed for everything random (sham phases, interval jitter), so replay is deterministic.
    run_fit : callable, optional
        Where the estimator's fit on the baseline runs: ``run_fit(job)`` must start ``job()``
        and return a :class:`concurrent.futures.Future` of its result. Default: in line, on the
        sample clock, so that replay does not depend on the machine's speed. The live session
        passes one that runs it on a thread; meanwhile the loop keeps taking samples with the
        gate closed.
    output_delay_s : float
        The output devices' own latency (a sound card's), taken off every plan as the protocol's
        ``technical_delay_s`` is.
    declared_scale : float, callable, None or False
        The factor the source applied to bring the used channels to microvolts (from the units it
        declared; a callable is given the used channels' indices), for the units check's message;
        None when unknown. False turns the units check off.
    compact_input : bool
        Chunks carry only the rows of :attr:`input_rows` (the channels the protocol uses, in
        input order) instead of every channel: what a reader that can read just those gives
        (replay). The decisions are the same bits either way.

    Attributes
    ----------
    input_rows : ndarray of int
        The input channels a chunk holds, in order: all of them, or with ``compact_input`` the
        used ones (:attr:`used_channels`).
    paused : bool
        Set by an operator's pause: the gate stays closed and nothing is planned until cleared.
    hold_until, hold_reason : float, str
        Input-clock time until which triggering is held, and why (see :data:`HOLD_REASONS`).
    """

    def __init__(
        self,
        protocol: Protocol,
        ch_names: list[str],
        sfreq: float,
        *,
        seed: int = 0,
        run_fit: Callable[[Callable[[], object]], Future] | None = None,
        output_delay_s: float = 0.0,
        declared_scale=None,
        compact_input: bool = False,
    ) -> None:
        if not (sfreq > 0 and math.isfinite(sfreq)):
            raise DataError(f"the input sampling rate {sfreq!r} Hz is not usable; a positive rate is needed.")
        self.protocol = protocol
        self.ch_names = list(ch_names)
        self.n_channels = len(self.ch_names)
        self.sfreq = float(sfreq)
        self.kind = protocol.kind
        self.paused = False
        self.counters = EngineCounters()
        trig, sig, band = protocol.trigger, protocol.signal, protocol.band

        self.factor, self.sfreq_work = working_rate(self.sfreq)
        check_band_fits(band, self.sfreq, self.sfreq_work)

        # units, in the order a chunk meets them
        self.timestamps = TimestampCheck(self.sfreq)
        targets = (list(protocol.feedback.channels) or [sig.channel]) if self.kind == "feedback" else [sig.channel]
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
        # where the used channels are in a chunk: every row given, or only the used ones
        self.input_rows = self.used_channels if compact_input else np.arange(self.n_channels)
        rows = np.arange(self.used_channels.size) if compact_input else self.used_channels
        if compact_input:
            weights = weights[:, self.used_channels]
        self.artifacts = ArtifactDetector(protocol.artifact, rows, self.sfreq)
        self.units = None  # UnitsCheck: triggering held while the input is not plausibly EEG in µV
        if declared_scale is not False and self.used_channels.size:
            from closedloop.plausibility import UnitsCheck

            used = [int(i) for i in self.used_channels]
            scale = declared_scale(used) if callable(declared_scale) else declared_scale
            self.units = UnitsCheck(
                self.sfreq, [int(i) for i in rows], ch_names=[self.ch_names[i] for i in used],
                declared_scale=scale,
            )
        self.band_hz = (float(band.low_hz), float(band.high_hz))
        self.signal = SignalChain(weights, self.sfreq, sig.notch_hz, self.band_hz)
        self.baseline = Baseline(self.n_derived, int(round(trig.baseline_s * self.sfreq_work)))
        self.individual_peak_hz: float | None = None
        self.notes: list[str] = []

        self.estimator = None
        self.fit_error: str | None = None
        self._run_fit = run_fit or run_inline
        self._fit: Future | None = None
        self._fit_backlog: list[np.ndarray] = []
        self.gate_unit = AmplitudeGate(trig)
        self.planner = TriggerPlanner(trig, seed=seed, output_delay_s=output_delay_s)
        self.safety = SafetyGate(trig, seed=seed)
        self.meter: FeedbackMeter | None = None
        if self.kind == "phase":
            self._decide = self._decide_phase
            # build one now: bad [estimator.params] and a baseline too short for the method are
            # refused before the session starts, not when the baseline ends
            probe = self._make_estimator()
            need_s = float(getattr(probe, "min_baseline_s", 0.0))
            if trig.baseline_s < need_s:
                raise ProtocolError(
                    f"{protocol.source}: [trigger] baseline_s = {trig.baseline_s:g} is too short for "
                    f"estimator {probe.name!r}; it needs at least {need_s:g} s of baseline."
                )
        else:
            self._decide = self._decide_feedback
            fb = protocol.feedback
            if fb.measure == "asymmetry" and self.n_derived != 2:
                raise ProtocolError(
                    f"{protocol.source}: [feedback] channels must name exactly two channels for "
                    f"measure = 'asymmetry' (got {list(fb.channels)})."
                )
            self.meter = FeedbackMeter(fb, self.sfreq_work, self.n_derived, self.band_hz)
        self.pending: TriggerPlan | None = None
        self.delivered: deque[TriggerPlan] = deque(maxlen=1024)  # the most recent, for inspection

        self._hold_until = -math.inf
        self._hold_cause = ""
        self._hold_s = protocol.artifact.hold_s
        self._settle_s = max(self._hold_s, SETTLE_S)
        self.phase_deg = math.nan
        self.amplitude = math.nan
        self.frequency_hz = math.nan
        self.gate = False
        if self.baseline.done:
            self._finish_baseline()

    # ------------------------------------------------------------------ read-only views
    @property
    def output_delay_s(self) -> float:
        return self.planner.output_delay_s

    @property
    def gate_threshold(self) -> float:
        """The amplitude the gate asks for, µV (0 until the baseline is done, for ``none``)."""
        return self.gate_unit.threshold

    @property
    def baseline_done(self) -> bool:
        return self.baseline.done

    @property
    def baseline_remaining_s(self) -> float:
        """Seconds of data until the baseline is complete (0 once done)."""
        if self.baseline.done:
            return 0.0
        return (self.baseline.n_samples - self.baseline.fill) / self.sfreq_work

    @property
    def fitting(self) -> bool:
        """The estimator's fit is still running (live: no trigger meanwhile)."""
        return self._fit is not None

    @property
    def delay_s(self) -> float:
        return self.signal.delay_s

    def __repr__(self) -> str:
        stage = "baseline" if not self.baseline.done else ("fitting" if self.fitting else "deciding")
        return (
            f"<Engine {self.protocol.name!r} ({self.kind}) on {self.n_channels} ch at {self.sfreq:g} Hz "
            f"(working {self.sfreq_work:g} Hz), band {self.band_hz[0]:g}-{self.band_hz[1]:g} Hz, {stage}, "
            f"{self.counters.n_delivered} triggers>"
        )

    # ------------------------------------------------------------------ baseline
    def _make_estimator(self):
        try:
            return make_estimator(
                self.protocol.estimator.method, self.sfreq_work, self.band_hz, **dict(self.protocol.estimator.params)
            )
        except TypeError as exc:
            raise ProtocolError(
                f"{self.protocol.source}: [estimator.params] does not suit method "
                f"{self.protocol.estimator.method!r}: {exc}."
            ) from exc

    def _finish_baseline(self) -> None:
        """Turn the collected baseline into the band, gate threshold, estimator and feedback reference."""
        base = self.baseline.data
        main = base[0]
        finite = main[np.isfinite(main)]
        peak, band_hz = individual_band(finite, self.sfreq_work, self.protocol.band)
        if band_hz is not None:
            self.individual_peak_hz, self.band_hz = peak, band_hz
            # the gate's reference, again in the individual band; the envelope then carries on
            # from the end of the baseline
            self.baseline.envelope[:] = self.signal.set_band(self.band_hz, base)
        if self.meter is None:
            self.gate_unit.calibrate(self.baseline.envelope[0], self.sfreq_work)
            estimator = self._make_estimator()
            baseline = finite.copy() if self._run_fit is not run_inline else finite
            self._fit = self._run_fit(lambda: fit_estimator(estimator, baseline, self.sfreq_work))
            if self._fit.done():
                self._take_fit()
        else:
            self.meter.set_band(self.band_hz)
            self.meter.calibrate(base)
        self.baseline.done = True
        self.baseline.release()

    def _take_fit(self) -> None:
        """Install the fitted estimator and feed it what arrived while it was being fitted."""
        fit, self._fit = self._fit, None
        exc = fit.exception()
        if exc is not None:
            if not isinstance(exc, (DataError, ProtocolError, ValueError, np.linalg.LinAlgError)):
                raise exc
            # the baseline could not train the estimator (no rhythm, too short a clean stretch):
            # the session goes on, recorded, but never triggers
            self.fit_error = f"the estimator could not be trained on the baseline: {exc}"
            self.notes.append(self.fit_error + " Triggering stays off for this session.")
            return
        self.estimator = fit.result()
        self.gate_unit.use_estimator(self.estimator)
        if self._fit_backlog:
            backlog = np.concatenate(self._fit_backlog)
            self._fit_backlog = []
            keep = int(2 * self.sfreq_work)
            self._estimate(np.ascontiguousarray(backlog[-keep:]), held=False)

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
            The planning window's length (:func:`~closedloop.engine.planning.planning_horizon_s`:
            one usual chunk); a trigger is planned only if its delivery falls inside the window
            (otherwise the next chunk gives a better estimate). Default: this chunk's duration.
        lead_s : float
            Extra time before the window opens, for streams whose chunks arrive late after their
            newest sample's time (0 in replay; live, from
            :class:`~closedloop.engine.planning.ArrivalLead`).

        Notes
        -----
        The planning rule is in :mod:`closedloop.engine.planning`: live and replay plan alike.
        """
        if chunk.ndim != 2 or chunk.shape[0] != self.input_rows.shape[0]:
            raise ValueError(
                f"expected a chunk of shape ({self.input_rows.shape[0]}, n_samples), "
                f"got {chunk.shape}"
            )
        n = chunk.shape[1]
        if n == 0:
            return self._state(newest_ts)
        c = self.counters
        c.n_chunks += 1
        c.n_samples += n
        if horizon_s is None:
            horizon_s = n * (1.0 / self.sfreq)
        units = self.units
        if units is not None and not units.ok and not units.process(chunk):
            # not plausibly EEG in the units it is taken in: no trigger on it
            self._hold(newest_ts + horizon_s, "units")
        settle_s = self._settle_s
        continuity = self.timestamps.process(n, newest_ts)
        if continuity is OK:
            pass
        elif continuity.kind == "backwards":
            # timestamps that go back (or repeat) cannot time a stimulus: hold, counted from the
            # new timeline, so that a clock that jumped back for good does not hold forever
            c.n_nonmonotonic += 1
            self._hold_until = newest_ts + settle_s
            self._hold_cause = "timestamps"
            self.gate = False
        elif continuity.kind == "overlap":
            c.n_nonmonotonic += 1  # push-time stamps with jitter; counted, not held
        elif continuity.kind == "gap":
            c.n_gaps += 1
            c.n_missing_samples += continuity.missing
            self._reset_signal(newest_ts, "gap")

        artifacts = self.artifacts
        n_bad = artifacts.scan(chunk)
        if n_bad:
            c.n_bad_samples += n_bad
            last_bad = artifacts.last_bad
            bad_ts = newest_ts - (n - 1 - last_bad) * (1.0 / self.sfreq)
            self._hold(bad_ts + settle_s, "artifact")
            if artifacts.nonfinite:
                # never feed NaN/Inf forward: restart the chain from the next good sample
                self._reset_signal(None, "artifact")
                chunk = chunk[:, last_bad + 1 :]
                if chunk.shape[1] == 0:
                    return self._state(newest_ts)

        derived, hp, env = self.signal.process(chunk, newest_ts)
        if derived.shape[1] == 0:
            return self._state(newest_ts)
        over = artifacts.over_limit(hp[0])
        if over:
            c.n_bad_samples += over
            # held through this chunk's own decision even with hold_s = 0: the hold ends after
            # the chunk's newest sample, never on it
            self._hold(max(newest_ts + self._hold_s, math.nextafter(newest_ts, math.inf)), "over limit")

        if not self.baseline.done:
            return self._collect_baseline(derived, env, newest_ts)
        self.amplitude = float(env[0, -1])
        return self._decide(derived, newest_ts, horizon_s, lead_s)

    def _collect_baseline(self, derived: np.ndarray, env: np.ndarray, newest_ts: float) -> EngineState:
        take = self.baseline.process(derived, env)
        if self.meter is not None:
            self.meter.process(derived, collecting=True)
        if self.baseline.full:
            self._finish_baseline()
            rest = derived[:, take:]
            if rest.shape[1] and self.meter is None:
                if self._fit is not None:
                    self._fit_backlog.append(rest[0].copy())
                elif self.estimator is not None:  # None: the fit failed (fit_error)
                    self._estimate(np.ascontiguousarray(rest[0]), newest_ts < self._hold_until)
        self.amplitude = float(env[0, -1])
        return self._state(newest_ts)

    def _decide_feedback(self, derived: np.ndarray, newest_ts: float, horizon_s: float, lead_s: float) -> EngineState:
        self.meter.process(derived, collecting=False)
        self.gate = False
        return self._state(newest_ts)

    def _decide_phase(self, derived: np.ndarray, newest_ts: float, horizon_s: float, lead_s: float) -> EngineState:
        if self._fit is not None:
            if not self._fit.done():
                self._fit_backlog.append(derived[0].copy())
                self.gate = False
                return self._state(newest_ts)
            self._take_fit()
        est = self.estimator
        if est is None:  # training failed (fit_error): never trigger
            self.gate = False
            return self._state(newest_ts)
        artifact_held = newest_ts < self._hold_until
        self._estimate(derived[0], artifact_held)  # a row of the chain's C-contiguous output
        if not est.ready:
            self.gate = False
            self.phase_deg = math.nan
            return self._state(newest_ts)
        self.frequency_hz = frequency_hz = float(est.frequency_hz)
        newest_work_ts = self.signal.newest_work_ts
        lag = newest_ts - newest_work_ts
        self.phase_deg = phase_deg = wrap_deg(est.phase_deg + 360.0 * frequency_hz * lag)
        gate_unit = self.gate_unit
        if gate_unit.on_estimator and math.isfinite(est.amplitude):
            self.amplitude = float(est.amplitude)
        amplitude = self.amplitude
        held = artifact_held or self.paused
        if not held:
            gate_unit.elapse(derived.shape[1] / self.sfreq_work)
        self.gate = gate = (not held) and gate_unit.process(amplitude)
        state = EngineState(newest_ts, phase_deg, amplitude, math.nan, gate)
        if gate and self.pending is None:
            plan = self.planner.process(
                est, newest_ts, newest_work_ts, frequency_hz, sum(self.band_hz) / 2,
                amplitude, horizon_s, lead_s, self.safety,
                gate=gate_unit.process if gate_unit.on_estimator else None,
            )
            if plan is not None:
                self.pending = plan
                self.counters.n_planned += 1
                state.plan = plan
        return state

    def _estimate(self, x: np.ndarray, held: bool) -> None:
        """Feed the estimator; a running gate sees the amplitude of the new samples."""
        self.estimator.process(x)
        self.gate_unit.observe(self.estimator, x.shape[0], held)

    def _state(self, newest_ts: float) -> EngineState:
        return EngineState(
            sample_ts=newest_ts,
            phase_deg=self.phase_deg,
            amplitude=self.amplitude,
            feedback=self.meter.value if self.meter is not None else math.nan,
            gate=self.gate,
        )

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
        self.gate_unit.delivered()
        self.counters.n_delivered += 1
        plan.seq = self.counters.n_delivered
        self.delivered.append(plan)
        return True

    def drop(self, plan: TriggerPlan, reason: str) -> None:
        """The caller could not deliver ``plan`` (stream stalled, paused, stopped ...)."""
        if plan is self.pending:
            self.pending = None
        self._count_drop(reason)

    def _count_drop(self, reason: str) -> None:
        key = reason.split(":")[0].split(" (")[0]
        self.counters.dropped[key] = self.counters.dropped.get(key, 0) + 1

    # ------------------------------------------------------------------ holds and resets
    def _hold(self, until_ts: float, reason: str) -> None:
        if until_ts > self._hold_until:
            self._hold_until = until_ts
            self._hold_cause = reason
        self.gate = False

    @property
    def hold_reason(self) -> str:
        """Why triggering is held now ("" when it is not): ``paused``, ``baseline``, or the cause of
        the hold in force (see :data:`HOLD_REASONS`)."""
        if self.paused:
            return "paused"
        if not self.baseline.done:
            return "baseline"
        last = self.timestamps.last_ts
        if last is not None and last < self._hold_until:
            return self._hold_cause
        return ""

    @property
    def hold_until(self) -> float:
        """Input-clock time until which triggering is held (-inf when not held)."""
        return self._hold_until

    def stream_gap(self, now_ts: float | None = None) -> None:
        """The input stalled or reconnected: restart the signal chain and hold until it settles."""
        self._reset_signal(now_ts, "stream")

    def _reset_signal(self, now_ts: float | None, reason: str) -> None:
        self.signal.reset()
        if self.estimator is not None:
            self.estimator.reset()
        self._fit_backlog = []
        last = self.timestamps.last_ts
        base = now_ts if now_ts is not None else (last if last is not None else 0.0)
        self._hold(base + max(SETTLE_S, self.protocol.artifact.hold_s), reason)
        self.phase_deg = math.nan

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
            "gate": self.gate_unit.summary(),
            "estimator": getattr(self.estimator, "name", None),
            "units": self.units.summary() if self.units is not None else None,
            "notes": list(self.notes),
        }
