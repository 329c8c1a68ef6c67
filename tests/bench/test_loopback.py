"""The loop-back analysis in pieces: edges, the amplifier's sample clock, pairing, bootstrap, and
the virtual amplifier's trigger line (a real pseudo-terminal and a real LSL inlet).

Signals whose truth must be known exactly are made here; the whole command on the virtual
amplifier is tested in test_loopback_cli.py.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pylsl
import pytest

from closedloop.bench.loopback import (
    EdgeRule,
    bootstrap_ci,
    find_edges,
    fit_sample_clock,
    pair_edges,
    planned_pulses,
)
from closedloop.bench.virtual_amp import LineFaults, SineGenerator, TriggerLine, VirtualAmplifier
from closedloop.errors import UsageError
from closedloop.ttl import SerialTTL
from tests.helpers.loopback import short_switch_interval  # noqa: F401 (a fixture)


# ---------------------------------------------------------------------- edges
def test_edges_any_level_code_lines_and_threshold() -> None:
    levels = np.array([1, 1, 0, 0, 1, 1, 0, 2, 0, 3, 3, 0, 5, 0], dtype=float)
    # a line already high at the first sample is no edge
    assert find_edges(levels, EdgeRule()).tolist() == [4, 7, 9, 12]
    assert find_edges(levels, EdgeRule(code=1)).tolist() == [4, 9, 12]  # 1, 3 and 5 have line 1 set
    assert find_edges(levels, EdgeRule(code=2)).tolist() == [7, 9]
    analog = np.array([0.1, -0.2, 4.9, 5.1, 0.3, 2.6, 0.0, np.nan, 4.0])
    assert find_edges(analog, EdgeRule(threshold=2.5)).tolist() == [2, 5, 8]
    assert find_edges(np.zeros(50), EdgeRule()).size == 0


def test_edge_rule_refuses_bad_settings() -> None:
    with pytest.raises(UsageError, match="not both"):
        EdgeRule(code=1, threshold=0.5)
    with pytest.raises(UsageError, match="--trigger-code 0 is not usable"):
        EdgeRule(code=0)
    with pytest.raises(UsageError, match="finite"):
        EdgeRule(threshold=float("nan"))


# ---------------------------------------------------------------------- sample clock
def test_sample_clock_removes_push_jitter_and_keeps_real_gaps() -> None:
    sfreq, chunk = 500.0, 5
    rng = np.random.default_rng(3)
    n = 20 * int(sfreq)
    true = 1000.0 + np.arange(n) / (sfreq * (1 + 40e-6))  # the amplifier runs 40 ppm fast
    # a driver that stamps each chunk when it pushes it: 0-30 ms late, back-filled at the nominal rate
    stamps = np.empty(n)
    for start in range(0, n, chunk):
        late = rng.uniform(0.0, 0.03) if rng.random() > 0.2 else 0.0
        newest = true[start + chunk - 1] + late
        stamps[start : start + chunk] = newest - (chunk - 1 - np.arange(chunk)) / sfreq
    fit = fit_sample_clock(stamps, sfreq)
    assert fit.n_gaps == 0
    assert np.max(np.abs(fit.times - true)) < 2e-4
    assert fit.rate_hz == pytest.approx(sfreq * (1 + 40e-6), rel=2e-6)
    assert fit.max_lateness_s > 0.02
    # 100 samples lost: a lasting jump, so a stretch of its own; the clock stays exact on both sides
    kept = np.r_[np.arange(0, 4000), np.arange(4100, n)]
    fit = fit_sample_clock(stamps[kept], sfreq)
    assert fit.n_gaps == 1 and fit.starts.tolist() == [0, 4000]
    assert np.max(np.abs(fit.times - true[kept])) < 2e-4
    # exact stamps are left exactly as they are
    exact = 50.0 + np.arange(3000) / 1000.0
    assert np.max(np.abs(fit_sample_clock(exact, 1000.0).times - exact)) < 1e-9


# ---------------------------------------------------------------------- pulses and pairing
def _markers(times: list[float], pulses: int = 1) -> list[tuple[float, dict]]:
    return [(t + 0.0001, {"seq": i + 1, "scheduled_ts": t, "pulses": pulses, "event": "stim",
                          "target_phase_deg": 0.0}) for i, t in enumerate(times)]


def test_pairing_survives_a_missed_and_an_extra_edge_and_finds_a_long_delay() -> None:
    rng = np.random.default_rng(7)
    planned = np.cumsum(rng.uniform(0.25, 0.6, 40)) + 100.0
    delay = 0.025 + rng.uniform(0.0, 0.001, planned.size)  # a slow chain: 25 ms and a sampling step
    delay[35] = 0.090  # one pulse 65 ms later than usual: far outside its window, still its own
    edges = planned + delay
    missing = 12
    edges = np.delete(edges, missing)
    stray_after = 20  # an edge 100 ms after pulse 20: nowhere near a plan plus the typical delay
    edges = np.sort(np.r_[edges, planned[stray_after] + 0.1, planned[30] + 0.032])
    pairing = pair_edges(planned, edges)
    assert pairing.typical_delay_s == pytest.approx(0.0255, abs=0.001)
    found = pairing.edge_of_pulse >= 0
    assert np.flatnonzero(~found).tolist() == [missing]
    got = edges[pairing.edge_of_pulse[found]] - planned[found]
    assert np.allclose(got, np.delete(delay, missing))  # every pulse kept its own edge, in order
    assert np.flatnonzero(pairing.late).tolist() == [35]  # counted in the delays, not missed + extra
    extra_times = edges[pairing.extra]
    assert extra_times.tolist() == pytest.approx([planned[stray_after] + 0.1, planned[30] + 0.032])
    # without the typical delay found first, a 20 ms window around the plan would have lost them all
    assert np.all(np.diff(pairing.edge_of_pulse[found]) > 0)


def test_a_train_and_the_serial_log_give_every_pulse_its_write_time() -> None:
    markers = _markers([10.0, 11.0], pulses=3)
    log = [(1, 10.0001), (1, 10.0102), (1, 10.0201), (1, 11.0001), (1, 11.0203)]  # one write missing
    pulses = planned_pulses(markers, 0.01, log)
    assert [round(p.planned_s, 4) for p in pulses] == [10.0, 10.01, 10.02, 11.0, 11.01, 11.02]
    assert [p.sent for p in pulses] == [True, True, True, True, False, True]
    assert pulses[1].sent_s == pytest.approx(10.0102) and np.isnan(pulses[4].sent_s)
    assert np.isnan(pulses[1].target_phase_deg) and pulses[0].target_phase_deg == 0.0
    with pytest.raises(UsageError, match="train of 3 pulses.*give --protocol"):
        planned_pulses(markers, None)


def test_bootstrap_intervals_are_seeded_cover_the_percentile_and_narrow_with_more_pulses() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(0.0, 1.0, 30)
    large = rng.uniform(0.0, 1.0, 3000)
    a = bootstrap_ci(small, seed=5)
    assert a == bootstrap_ci(small, seed=5)
    assert a != bootstrap_ci(small, seed=6)
    for q, (lo, hi) in a.items():
        assert lo <= np.percentile(small, q) <= hi
    b = bootstrap_ci(large)
    assert b[50.0][1] - b[50.0][0] < 0.3 * (a[50.0][1] - a[50.0][0])
    assert b[50.0][0] < 0.5 < b[50.0][1]
    assert all(np.isnan(v) for v in bootstrap_ci(np.array([1.0]))[50.0])


# ---------------------------------------------------------------------- the virtual trigger line
def test_trigger_line_levels_at_sample_times_with_delay_losses_and_strays() -> None:
    line = TriggerLine(LineFaults(delay_s=0.002, miss_pulses=frozenset({2}), stray_after=frozenset({3})))
    line.start(0.0)
    for t, byte in [(0.0105, 1), (0.0155, 0), (0.0305, 1), (0.0355, 0), (0.0505, 1), (0.0555, 0)]:
        line.feed(t, byte)
    times = np.arange(0, 200) / 1000.0
    levels = line.levels(times)
    edges = find_edges(levels, EdgeRule())
    # pulse 1 shows from the first sample at or after 10.5 + 2 ms; pulse 2 is lost; pulse 3, then
    # its stray (code 4) 100 ms later
    assert edges.tolist() == [13, 53, 153]
    assert levels[13] == 1 and levels[153] == 4
    assert (line.pulses_received, line.pulses_lost, line.strays) == (3, 1, 1)


def test_trigger_line_latches_a_pulse_read_together_with_its_closing_byte() -> None:
    line = TriggerLine(min_width_s=0.001)
    line.feed(0.0102, 1)
    line.feed(0.0102, 0)  # a late reader: the code and the closing 0 in one read
    line.feed(0.0301, 3)
    line.feed(0.0302, 0)  # a pulse far shorter than the step
    levels = line.levels(np.arange(0, 50) / 1000.0)
    assert np.flatnonzero(levels).tolist() == [11, 31] and levels[31] == 3
    # a burst read after the reader was held off: the times stay in order (the second pulse cannot
    # rise before the first one's latched fall), each level showing for a step in the order sent
    line.feed(0.0405, 1)
    line.feed(0.0405, 0)
    line.feed(0.0405, 2)
    line.feed(0.0405, 0)
    levels = line.levels(np.arange(0, 50) / 1000.0)
    assert levels[40:44].tolist() == [0, 1, 2, 0]


@pytest.mark.usefixtures("short_switch_interval")
def test_virtual_amplifier_samples_the_pty_at_each_samples_own_time(source_id: str) -> None:
    """Real pty, real SerialTTL, real LSL: each pulse's edge is the first sample after its byte."""
    sfreq = 1000.0
    with VirtualAmplifier(SineGenerator(sfreq), ["O2"], sfreq, source_id=source_id, chunk_size=50) as amp:
        info = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
        assert info, "the virtual amplifier's stream did not appear"
        inlet = pylsl.StreamInlet(info[0])
        inlet.open_stream(5.0)
        written = []
        with SerialTTL(amp.port, pulse_width_s=0.004) as ttl:
            for _ in range(8):
                time.sleep(0.137)
                written.append(ttl.trigger(1))
        samples, stamps = [], []
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (not stamps or stamps[-1] < written[-1] + 0.05):
            chunk, ts = inlet.pull_chunk(timeout=0.2)
            samples += chunk
            stamps += ts
        inlet.close_stream()
    levels = np.asarray(samples)[:, 1]
    edges = find_edges(levels, EdgeRule())
    assert edges.size == len(written) == amp.line.pulses_received, (edges.tolist(), amp.collapsed_pulses)
    lag = np.asarray(stamps)[edges] - np.asarray(written)
    # the byte arrives within a fraction of a millisecond and shows from the first sample at or
    # after it: never before the write, typically within the 1 ms step, although the chunks are
    # pushed 50 ms apart (levels taken at push time would lag by 25 ms on average); a loaded
    # machine can wake the reader late now and then
    assert np.all(lag > 0) and np.median(lag) < 1.2e-3 and np.sum(lag < 2e-3) >= 6, lag
    falling = np.flatnonzero((levels[1:] == 0) & (levels[:-1] != 0)) + 1
    # 4 ms pulses: about 4 samples high (the closing byte is sleep-timed, so late under load)
    assert np.all(falling > edges) and 3 <= np.median(falling - edges) <= 6
    assert set(np.unique(levels)) == {0.0, 1.0}
    sine = np.asarray(samples)[:, 0]
    assert 45 < np.max(np.abs(sine)) < 56  # 50 µV and a little noise


def test_virtual_amplifier_refuses_a_clashing_trigger_label(source_id: str) -> None:
    with pytest.raises(UsageError, match="already an EEG channel's"):
        VirtualAmplifier(SineGenerator(250.0), ["TRIG"], 250.0, source_id=source_id)
    with pytest.raises(UsageError, match="below 125 Hz"):
        SineGenerator(250.0, frequency_hz=200.0)


def test_pty_fd_mode_reads_a_line_opened_by_the_caller(source_id: str) -> None:
    master, slave = os.openpty()
    try:
        amp = VirtualAmplifier(SineGenerator(500.0), ["C3"], 500.0, source_id=source_id, master_fd=master)
        assert amp.port is None  # the caller holds the slave and knows its path
        with amp:
            os.write(slave, b"\x07")
            deadline = time.monotonic() + 5.0
            while amp.line.pulses_received == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert amp.line.pulses_received == 1 and amp.bytes_received == 1
    finally:
        os.close(slave)


# ---------------------------------------------------------------------- the analysis, on known sessions
def _session(edge_delay_s: float | None, *, level: int = 1, n_pulses: int = 20, stray_code: int = 0):
    """A synthetic 1 kHz session: pulses planned every 0.3 s from 2 s, each shown (when
    ``edge_delay_s`` is given) from the first sample at or after plan + delay, 5 samples high."""
    from pathlib import Path

    from closedloop.bench.loopback import LoopbackData

    sfreq, t0 = 1000.0, 500.0
    n = int(8 * sfreq)
    stamps = t0 + np.arange(n) / sfreq
    trigger = np.zeros(n)
    planned = t0 + 2.0 + 0.3 * np.arange(n_pulses) + 0.00037
    markers = [(p + 0.0001, {"seq": i + 1, "scheduled_ts": float(p), "pulses": 1, "event": "stim",
                             "target_phase_deg": 0.0}) for i, p in enumerate(planned)]
    if edge_delay_s is not None:
        for p in planned:
            k = int(np.ceil(round((p + edge_delay_s - t0) * sfreq, 9)))
            trigger[k : k + 5] = level
    if stray_code:
        trigger[100:105] = stray_code
    data = LoopbackData(path=Path("synthetic.xdf"), stream_name="amp", source_id="amp-1", sfreq=sfreq,
                        ch_names=["O2", "TRIG"], stamps=stamps, trigger_channel="TRIG", trigger=trigger,
                        markers=markers)
    return data, planned


def test_analyse_gives_the_exact_delays_of_a_known_session() -> None:
    from closedloop.bench.loopback import analyse

    data, _ = _session(0.0023)
    r = analyse(data, n_planned=22)
    assert r["problem"] is None
    assert (r["n_planned"], r["n_sent"], r["n_found"], r["n_missed"], r["n_extra"]) == (22, 20, 20, 0, 0)
    # plans 0.37 ms after a sample; plan + 2.3 ms is 0.33 ms before the next sample, which is the
    # edge: 2.63 ms after the plan, every time
    assert r["delay_ms"]["p50"] == pytest.approx(2.63, abs=1e-6)
    assert r["delay_ms"]["max"] == pytest.approx(2.63, abs=1e-6)
    assert r["transit_ms"]["p50"] == pytest.approx(2.53, abs=1e-6)  # the marker says written 0.1 ms late
    assert r["suggested_technical_delay_s"] == pytest.approx(0.00213, abs=1e-9)


def test_analyse_names_each_way_the_line_can_fail() -> None:
    from closedloop.bench.loopback import analyse

    data, _ = _session(None)
    assert "held the value 0 in all 8000 samples while 20 pulses were sent" in analyse(data)["problem"]
    data, _ = _session(0.001, level=4)  # the box raises line 3, the rule asks for line 1
    problem = analyse(data, rule=EdgeRule(code=1))["problem"]
    assert "never rose to the lines of code 1 set" in problem and "its values: 0, 4" in problem
    data, _ = _session(0.150)  # everything arrives 150 ms late: outside the search
    problem = analyse(data)["problem"]
    assert "none of the 20 edges" in problem and "within 100 ms" in problem
    result = analyse(data, max_delay_s=0.2)  # with a longer search they are found
    assert result["problem"] is None and result["n_found"] == 20
    assert result["delay_ms"]["p50"] == pytest.approx(150.63, abs=1e-6)
    data, _ = _session(0.001, stray_code=4)  # one stray before the first pulse: allowed, counted
    result = analyse(data)
    assert result["problem"] is None and result["n_extra"] == 1 and result["extra_edges"][0]["edge_level"] == 4


def test_clock_offsets_are_read_in_either_convention_of_collection_time() -> None:
    """An amplifier on another machine, 5e4 s behind and drifting 20 ppm: whether the offsets'
    collection times are on its clock (XDF, LabRecorder) or the recorder's (closedloop run), its
    stamps map onto the recorder's clock exactly (read at the wrong moment: off by 1 s)."""
    from closedloop.bench.loopback import _offset_map

    stamps = 1000.0 + np.arange(0, 300, 0.01)
    behind, drift = 5e4, 20e-6

    def offset(local_t):
        return behind + drift * (local_t - (1000.0 + behind))

    true = stamps + offset(stamps + behind)
    collected = stamps[::500]
    for times in (collected, collected + behind):  # stream clock, recorder's clock
        values = list(offset(collected + behind))
        mapped = stamps + _offset_map({"clock_times": list(times), "clock_values": values, "time_stamps": stamps})(stamps)
        assert np.max(np.abs(mapped - true)) < 1e-6
