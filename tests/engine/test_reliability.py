"""The engine's own defences, in process, on real EEG: timestamps that go back or repeat hold
triggering, a DC offset leaves the band amplitude alone, and bad input never reaches a stage.
"""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest

from closedloop.engine import SETTLE_S, Engine
from tests.helpers.protocols import make_protocol
from tests.helpers.recordings import EYES_CLOSED


@pytest.fixture(scope="module")
def eyes_closed(recordings) -> tuple[np.ndarray, float, list[str]]:
    raw = mne.io.read_raw_edf(EYES_CLOSED, preload=True, verbose="error").crop(0, 30.0)
    return raw.get_data() * 1e6, raw.info["sfreq"], list(raw.ch_names)


def feed(
    engine: Engine, data: np.ndarray, sfreq: float, stamps: np.ndarray, chunk: int = 4
) -> list:
    """Process ``data`` in chunks with the given per-sample stamps; the state after each chunk."""
    states = []
    for start in range(0, data.shape[1], chunk):
        stop = min(start + chunk, data.shape[1])
        block = np.ascontiguousarray(data[:, start:stop])
        states.append((stop - 1, engine.process(block, float(stamps[stop - 1]), chunk / sfreq)))
        if states[-1][1].plan is not None:
            engine.deliver(states[-1][1].plan, states[-1][1].plan.time_s)
    return states


@pytest.mark.parametrize("fault", ["back", "repeat"])
def test_timestamps_that_go_back_or_repeat_close_the_gate_for_the_hold(eyes_closed, fault):
    data, sfreq, names = eyes_closed
    protocol = make_protocol(
        signal={"channel": "O2"}, estimator={"method": "ar"}, trigger={"baseline_s": 3.0}
    )
    stamps = np.arange(data.shape[1]) / sfreq
    at = int(15.0 * sfreq)
    if fault == "back":
        stamps[at:] -= 0.5  # the amplifier's clock jumps back half a second, for good
    else:
        stamps[at : at + 8] = stamps[at - 1]  # two chunks stamped like the sample before them
    engine = Engine(protocol, names, sfreq)
    states = feed(engine, data, sfreq, stamps)
    assert engine.counters.n_nonmonotonic >= 1
    gate = np.array([(i, s.gate) for i, s in states])
    before = gate[(gate[:, 0] > 10 * sfreq) & (gate[:, 0] < at)]
    assert before[:, 1].any(), "the gate never opened on the good data"
    hold_n = int(max(SETTLE_S, protocol.artifact.hold_s) * sfreq)
    during = gate[(gate[:, 0] >= at) & (gate[:, 0] < at + hold_n - 4)]
    assert not during[:, 1].any(), "the gate opened on untrustworthy timestamps"
    after = gate[gate[:, 0] > at + hold_n + 2 * sfreq]
    assert after[:, 1].any(), "a clock that jumped back for good held triggering for ever"


def test_a_dc_offset_does_not_reach_the_band_amplitude(eyes_closed):
    """Complex demodulation leaks DC into the band; the engine feeds it DC-free data."""
    data, sfreq, names = eyes_closed
    protocol = make_protocol(
        signal={"channel": "O2"}, estimator={"method": "ar"}, trigger={"baseline_s": 3.0}
    )
    stamps = np.arange(data.shape[1]) / sfreq
    amplitudes, n_bad = [], []
    for offset in (0.0, 5000.0, -3000.0):
        engine = Engine(protocol, names, sfreq)
        states = feed(engine, data + offset, sfreq, stamps)
        amplitudes.append(np.array([s.amplitude for _, s in states]))
        n_bad.append(engine.counters.n_bad_samples)
    assert n_bad[1] == n_bad[2] == n_bad[0]  # no artifact from the offset either
    settled = slice(int(2 * sfreq / 4), None)  # after the first 2 s
    for other in amplitudes[1:]:
        np.testing.assert_allclose(other[settled], amplitudes[0][settled], rtol=1e-6, atol=1e-6)
    assert math.isfinite(float(np.nanmedian(amplitudes[0]))) and np.nanmedian(amplitudes[0]) > 5.0
