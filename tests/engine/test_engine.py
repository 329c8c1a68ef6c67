"""The shared decision pipeline on signals whose true phase is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.angles import wrap_deg
from closedloop.engine import DECISION_LATENCY_S, Engine
from closedloop.errors import DataError
from closedloop.offline import replay
from tests.helpers.protocols import make_protocol

CH = ["O1", "O2", "Cz", "Fz"]


def sine_data(sfreq: float, seconds: float, freq: float = 10.0, amp: float = 20.0, noise: float = 2.0, seed: int = 1):
    """Channels of noise with a cosine on O2: phase 0 at its peaks, known at every time."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    data = rng.normal(0, noise, (len(CH), n))
    data[1] += amp * np.cos(2 * np.pi * freq * t)
    return data, t


def true_phase_deg(onsets: np.ndarray, freq: float = 10.0) -> np.ndarray:
    return wrap_deg_array(360.0 * freq * onsets)


def wrap_deg_array(a):
    return np.array([wrap_deg(float(x)) for x in np.atleast_1d(a)])


def circ_mean_sd(err_deg: np.ndarray) -> tuple[float, float]:
    z = np.exp(1j * np.radians(err_deg)).mean()
    return float(np.degrees(np.angle(z))), float(np.degrees(np.sqrt(-2 * np.log(abs(z)))))


@pytest.mark.parametrize("target", [0.0, 180.0, -90.0])
def test_triggers_land_on_the_target_phase_of_a_known_sine(target):
    sfreq = 500.0
    data, _ = sine_data(sfreq, 20.0)
    protocol = make_protocol(trigger={"target_phase_deg": target})
    result = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=5)
    onsets = result.onsets_s
    assert len(onsets) > 40  # 15 s after the baseline at up to one trigger per 0.3 s
    assert onsets.min() >= 5.0  # nothing during the baseline
    err = wrap_deg_array(true_phase_deg(onsets) - target)
    mean, sd = circ_mean_sd(err)
    assert abs(mean) < 8.0, (mean, sd)
    assert sd < 10.0, (mean, sd)
    assert np.diff(onsets).min() >= 0.25 - 1e-9


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_triggers_are_planned_from_the_newest_sample_plus_the_decision_latency(chunk_size):
    # the rule live and replay share: each delivery falls in [t + L, t + L + one chunk] after the
    # newest sample t it was decided on, so live has L to act and the windows still tile time
    sfreq = 500.0
    data, _ = sine_data(sfreq, 20.0)
    result = replay(data, make_protocol(), sfreq=sfreq, ch_names=CH, units="uV", chunk_size=chunk_size)
    assert len(result.triggers) > 40
    lead = np.array([t.time_s - t.sample_ts for t in result.triggers])
    assert lead.min() >= DECISION_LATENCY_S - 1e-9, lead.min()
    assert lead.max() <= DECISION_LATENCY_S + chunk_size / sfreq + 1e-9, lead.max()


def test_a_lead_opens_the_planning_window_whole_chunks_later_and_keeps_the_phase():
    # live, for streams whose chunks arrive late: the window moves on by the lead, and the plans
    # made that much further ahead still land on the target
    sfreq, chunk, lead = 500.0, 5, 0.03
    data, _ = sine_data(sfreq, 20.0)
    engine = Engine(make_protocol(), CH, sfreq)
    ahead, fired = [], []
    for start in range(0, data.shape[1] - chunk + 1, chunk):
        newest = (start + chunk - 1) / sfreq
        state = engine.process(np.ascontiguousarray(data[:, start : start + chunk]), newest, chunk / sfreq, lead)
        if state.plan is not None and engine.deliver(state.plan, state.plan.time_s):
            ahead.append(state.plan.time_s - newest)
            fired.append(state.plan.time_s)
    assert len(fired) > 40
    ahead = np.array(ahead)
    assert ahead.min() >= DECISION_LATENCY_S + lead - 1e-9, ahead.min()
    assert ahead.max() <= DECISION_LATENCY_S + lead + chunk / sfreq + 1e-9, ahead.max()
    mean, sd = circ_mean_sd(wrap_deg_array(true_phase_deg(np.array(fired))))
    assert abs(mean) < 8.0 and sd < 10.0, (mean, sd)


def test_decimated_5khz_input_keeps_phase_accuracy():
    sfreq = 5000.0
    data, _ = sine_data(sfreq, 12.0)
    protocol = make_protocol(trigger={"baseline_s": 4.0})
    engine = Engine(protocol, CH, sfreq)
    assert engine.factor == 5 and engine.sfreq_work == 1000.0
    result = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=5)
    err = wrap_deg_array(true_phase_deg(result.onsets_s))
    mean, sd = circ_mean_sd(err)
    assert len(err) > 20
    assert abs(mean) < 8.0 and sd < 10.0, (mean, sd)


def test_amplitude_gate_blocks_triggers_when_the_rhythm_is_weak():
    sfreq = 250.0
    data, t = sine_data(sfreq, 30.0)
    data[1] -= 20.0 * np.cos(2 * np.pi * 10 * t) * (t > 15)  # rhythm gone after 15 s
    protocol = make_protocol(trigger={"amplitude_gate": "percentile:10", "baseline_s": 10.0})
    result = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=2)
    onsets = result.onsets_s
    assert np.sum(onsets < 15.0) > 10
    assert np.sum(onsets > 16.0) == 0


def test_nan_run_holds_triggering_and_recovers():
    sfreq = 250.0
    data, _ = sine_data(sfreq, 30.0)
    data[1, int(15 * sfreq) : int(15.5 * sfreq)] = np.nan
    protocol = make_protocol(artifact={"hold_s": 1.0})
    result = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=3)
    onsets = result.onsets_s
    # a trigger planned before the NaN arrived may still land at 15.000 s, as it would live
    assert not np.any((onsets > 15.01) & (onsets < 16.5)), onsets
    assert np.sum(onsets > 17.0) > 10  # it recovered
    assert result.summary["bad_samples"] >= int(0.5 * sfreq)
    err = wrap_deg_array(true_phase_deg(onsets[onsets > 17.0]))
    assert abs(circ_mean_sd(err)[0]) < 10.0


def test_missing_channel_is_a_data_error_naming_the_nearest():
    protocol = make_protocol(signal={"channel": "O3"})
    with pytest.raises(DataError, match=r"'O3'.*Nearest"):
        Engine(protocol, ["EEG O1", "EEG O2", "Cz"], 500.0)


def test_rate_too_low_for_the_band_is_a_data_error():
    protocol = make_protocol(band={"low_hz": 8.0, "high_hz": 13.0})
    with pytest.raises(DataError, match=r"20 Hz cannot carry"):
        Engine(protocol, CH, 20.0)


def test_chunk_with_wrong_channel_count_is_rejected():
    engine = Engine(make_protocol(), CH, 250.0)
    with pytest.raises(ValueError, match=r"expected a chunk of shape \(4, n_samples\)"):
        engine.process(np.zeros((3, 5)), 0.0)


def test_replay_is_deterministic_and_chunk_size_changes_little():
    sfreq = 250.0
    data, _ = sine_data(sfreq, 20.0, noise=5.0)
    protocol = make_protocol()
    a = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=4)
    b = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=4)
    assert a.triggers == b.triggers
    c = replay(data, protocol, sfreq=sfreq, ch_names=CH, units="uV", chunk_size=1)
    # different chunking, same rhythm: about as many triggers, all on the target phase
    assert abs(len(c.triggers) - len(a.triggers)) <= 0.1 * len(a.triggers)
    for res in (a, c):
        mean, sd = circ_mean_sd(true_phase_deg(res.onsets_s))
        assert abs(mean) < 8.0 and sd < 12.0, (res.chunk_size, mean, sd)


def test_feedback_asymmetry_follows_the_power_ratio():
    sfreq = 250.0
    rng = np.random.default_rng(3)
    n = int(30 * sfreq)
    t = np.arange(n) / sfreq
    ch = ["F3", "F4", "Cz"]
    data = rng.normal(0, 2.0, (3, n))
    amp4 = np.where(t < 20, 10.0, 30.0)  # F4 alpha triples after 20 s
    data[0] += 10.0 * np.sin(2 * np.pi * 10 * t)
    data[1] += amp4 * np.sin(2 * np.pi * 10 * t + 1.0)
    protocol = make_protocol(
        name="fb",
        kind="feedback",
        signal={"channel": "F4"},
        feedback={"measure": "asymmetry", "channels": ["F4", "F3"], "zscore": False, "smoothing_s": 0.2},
        trigger={"baseline_s": 5.0},
    )
    result = replay(data, protocol, sfreq=sfreq, ch_names=ch, units="uV", chunk_size=5)
    fb, ts = result.state["feedback"], result.state["time_s"]
    early = fb[(ts > 10) & (ts < 19)]
    late = fb[ts > 25]
    assert np.all(np.isfinite(early)) and np.all(np.isfinite(late))
    assert abs(np.median(early)) < 0.3  # equal power: ln ratio ~ 0
    assert abs(np.median(late) - np.log(9.0)) < 0.3  # power ratio 9
    assert result.triggers == []


def test_hold_reason_names_why_triggering_is_held():
    # the status stream and the operator's page show this; each cause set where the engine knows it
    sfreq = 500.0
    data, _ = sine_data(sfreq, 14.0)
    protocol = make_protocol(estimator={"method": "echt"}, trigger={"baseline_s": 2.0})
    engine = Engine(protocol, CH, sfreq)
    step = 5

    def feed(start_s: float, stop_s: float, offset_s: float = 0.0):
        for k in range(int(start_s * sfreq), int(stop_s * sfreq), step):
            engine.process(np.ascontiguousarray(data[:, k : k + step]), (k + step - 1) / sfreq + offset_s)

    assert engine.hold_reason == "baseline"
    feed(0.0, 4.0)
    assert engine.hold_reason == "" and engine.gate  # amplitude gate "none": open
    bad = data[:, 2000:2005].copy()
    bad[1, 2] = np.nan
    engine.process(bad, 2004 / sfreq)
    assert engine.hold_reason == "artifact" and not engine.gate
    feed(4.02, 6.0)  # the hold (1 s) ends, and the estimator has settled again
    assert engine.hold_reason == ""
    feed(6.5, 7.0)  # 0.5 s of samples missing
    assert engine.counters.n_gaps == 1 and engine.hold_reason == "gap"
    feed(7.0, 9.0)
    assert engine.hold_reason == ""
    engine.stream_gap(9.0)
    assert engine.hold_reason == "stream"
    feed(9.0, 11.0)
    engine.paused = True
    assert engine.hold_reason == "paused"
    engine.paused = False
    engine.process(np.ascontiguousarray(data[:, 100:105]), 1.0)  # timestamps back in time
    assert engine.hold_reason == "timestamps"
