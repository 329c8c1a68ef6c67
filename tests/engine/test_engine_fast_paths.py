"""The engine's fast paths give exactly what the plain paths give.

``SignalChain.process`` (spatial filter, decimation, notch, high-pass and envelope in one compiled
pass) is compared bit for bit, outputs and filter state, with the chain driven stage by stage
(``derive``, ``highpassed``, ``envelope_of``) on real recordings in uneven chunks, with NaN/Inf
runs, resets and a change of band in between; ``ArtifactDetector`` (one compiled pass over the
used channels) with a numpy reference of the same rules; ``Recording.iter_chunks`` with
``read``; the planner, which asks the safety limits before the estimator, asks the estimator only
when the window could take a trigger.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.dsp import spatial_weights
from closedloop.engine import ArtifactDetector, SignalChain
from closedloop.io import open_recording
from closedloop.protocol import ArtifactSettings
from closedloop.simulate import simulate_eeg
from tests.helpers.recordings import EYES_CLOSED, require_recordings

#: uneven chunk sizes, 0 and 1 included
SIZES = (10, 1, 0, 7, 33, 10, 2, 64, 5, 10, 3)


def _chunks(data: np.ndarray, sizes=SIZES):
    start, k = 0, 0
    while start < data.shape[1]:
        size = sizes[k % len(sizes)]
        yield start, np.ascontiguousarray(data[:, start : start + size])
        start += size
        k += 1


def _spoil(data: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NaN runs, lone Infs and a huge spike on the used channels (and NaN on an unused one)."""
    data = data.copy()
    n = data.shape[1]
    for _ in range(4):
        at = int(rng.integers(n // 10, n - 200))
        data[rows[int(rng.integers(len(rows)))], at : at + int(rng.integers(1, 150))] = np.nan
    data[rows[0], n // 3] = np.inf
    data[rows[-1], n // 2] = -np.inf
    data[rows[0], 2 * n // 3] = 1e300  # finite, but the weighted sum overflows
    unused = np.setdiff1d(np.arange(data.shape[0]), rows)
    if unused.size:
        data[unused[0], n // 4 : n // 4 + 50] = np.nan
    return data


def _chain_state(chain: SignalChain) -> list[np.ndarray | float | int]:
    stages = [chain.spatial, chain.decimator, chain.notch, chain.highpass, chain.envelope]
    state: list = [chain.newest_work_ts, chain._n_in_total, chain._n_work_total]
    for stage in stages:
        if stage is None:
            continue
        state += [stage.last_bad, stage.n_bad]
        for name in ("zi", "pending", "n_in", "n_out", "last_first"):
            value = getattr(stage, name, None)
            if value is not None:
                state.append(np.array(value, copy=True))
    return state


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _read(path, seconds):
    require_recordings()
    with open_recording(path) as rec:
        return rec.read(0, min(rec.n_samples, int(seconds * rec.sfreq))), rec.ch_names, rec.sfreq


def _drive(data, names, sfreq, target, reference, neighbors, notch_hz, bipolar_with=None):
    weights = spatial_weights(names, [target], reference, neighbors=neighbors, bipolar_with=bipolar_with)
    rows = np.flatnonzero(np.any(weights != 0, axis=0))
    data = _spoil(data, rows, np.random.default_rng(7))
    fused = SignalChain(weights, sfreq, notch_hz, (8.0, 13.0))
    stages = SignalChain(weights, sfreq, notch_hz, (8.0, 13.0))
    assert fused._kernel is not None
    n_compared = 0
    for k, (start, chunk) in enumerate(_chunks(data)):
        ts = (start + chunk.shape[1] - 1) / sfreq
        if k == 40:  # a gap: both restart
            fused.reset()
            stages.reset()
        if k == 60:  # the individual band, learnt from a baseline: the kernel is bound again
            base = np.tile(np.sin(np.arange(2000) / 9.0), (fused.n_derived, 1))
            assert _same(fused.set_band((9.0, 12.5), base), stages.set_band((9.0, 12.5), base))
        d1, h1, e1 = fused.process(chunk, ts)
        d2 = stages.derive(chunk, ts)
        if d2.shape[1]:
            h2 = stages.highpassed(d2)
            e2 = stages.envelope_of(h2)
            assert _same(d1, d2) and _same(h1, h2) and _same(e1, e2), f"chunk {k} differs"
            n_compared += d2.shape[1]
        else:
            assert d1.shape[1] == 0
        assert all(_same(a, b) for a, b in zip(_chain_state(fused), _chain_state(stages))), k
    assert n_compared > 1000
    # the spoiled samples went through the chain as NaN, counted alike
    assert fused.highpass.n_bad == stages.highpass.n_bad


def test_fused_chain_equals_the_stages_on_a_hjorth_derivation():
    _drive(*_read(EYES_CLOSED, 60.0), "C3", "hjorth", ["FC1", "FC5", "CP1", "CP5"], 0.0)


def test_fused_chain_equals_the_stages_with_a_notch_and_an_average_reference():
    _drive(*_read(EYES_CLOSED, 60.0), "O2", "average", None, 50.0)


def test_fused_chain_equals_the_stages_when_decimating_5khz():
    # simulated: the shared 5 kHz recording is under half a second long
    data, names, sfreq, _ = simulate_eeg(seconds=8, sfreq=5000.0, seed=3, n_channels=16)
    _drive(data, names, sfreq, "C3", "bipolar", None, 50.0, bipolar_with="Cz")


def test_a_chunk_of_another_layout_is_converted_or_refused():
    weights = np.array([[1.0, -0.5, -0.5]])
    chain = SignalChain(weights, 250.0, 0.0, (8.0, 13.0))
    other = SignalChain(weights, 250.0, 0.0, (8.0, 13.0))
    x = np.random.default_rng(1).normal(size=(20, 3)).T  # Fortran order
    d1, _, _ = chain.process(x, 1.0)
    assert _same(d1, other.derive(np.ascontiguousarray(x), 1.0))
    with pytest.raises(ValueError, match=r"shape \(3, n_samples\)"):
        chain.process(np.zeros((2, 5)), 2.0)
    with pytest.raises(ValueError, match="dtype float32"):
        chain.process(np.zeros((3, 5), dtype=np.float32), 2.0)


# ---------------------------------------------------------------------- artifacts
def _reference_mask(settings: ArtifactSettings, used: np.ndarray, state: dict, block_n: int):
    """The artifact rules in numpy (what the detector computed before its kernel)."""
    finite = np.isfinite(used)
    all_finite = bool(finite.all())
    mask = None if all_finite else ~finite.all(axis=0)
    if not settings.enabled:
        return mask
    if settings.saturation_uv > 0:
        sat = (np.abs(np.where(finite, used, 0.0)) >= settings.saturation_uv).any(axis=0)
        mask = sat if mask is None else (mask | sat)
    if settings.flat_uv > 0 and all_finite:
        state["min"] = np.minimum(state["min"], used.min(axis=1))
        state["max"] = np.maximum(state["max"], used.max(axis=1))
        state["n"] += used.shape[1]
        if state["n"] >= block_n:
            block = (state["min"], state["max"])
            if state["prev"] is not None:
                lo = np.minimum(block[0], state["prev"][0])
                hi = np.maximum(block[1], state["prev"][1])
                if ((hi - lo) < settings.flat_uv).any():
                    flat = np.ones(used.shape[1], dtype=bool)
                    mask = flat if mask is None else (mask | flat)
            state["prev"] = block
            state["min"] = np.full(used.shape[0], np.inf)
            state["max"] = np.full(used.shape[0], -np.inf)
            state["n"] = 0
    if mask is not None and not mask.any():
        return None
    return mask


@pytest.mark.parametrize(
    "settings",
    [
        ArtifactSettings(),
        ArtifactSettings(saturation_uv=150.0, flat_uv=2.0, flat_window_s=0.2),
        ArtifactSettings(enabled=False, saturation_uv=150.0),
    ],
    ids=["default", "saturation-and-flat", "disabled"],
)
def test_artifact_detector_follows_the_rules(settings):
    require_recordings()
    with open_recording(EYES_CLOSED) as rec:
        data, sfreq = rec.read(0, int(30 * rec.sfreq)), rec.sfreq
    rows = np.array([3, 8, 9, 20, 40])
    rng = np.random.default_rng(3)
    data = _spoil(data, rows, rng)
    data[rows[2], 1500:1700] = data[rows[2], 1500]  # a flat stretch
    data[rows[1], 2500:2510] = 400.0  # saturated
    detector = ArtifactDetector(settings, rows, sfreq)
    twin = ArtifactDetector(settings, rows, sfreq)
    state = {"min": np.full(len(rows), np.inf), "max": np.full(len(rows), -np.inf), "n": 0, "prev": None}
    n_bad_total = 0
    for k, (_, chunk) in enumerate(_chunks(data)):
        if chunk.shape[1] == 0:  # the engine never asks (the reference cannot take one)
            assert detector.process(chunk) is None and twin.scan(chunk) == 0
            continue
        want = _reference_mask(settings, chunk[rows], state, detector.flat_block_n)
        got = detector.process(chunk)
        n_bad = twin.scan(chunk)
        if want is None:
            assert got is None and n_bad == 0, k
            continue
        assert got is not None and got.dtype == bool and np.array_equal(got, want), k
        assert n_bad == int(want.sum()) and twin.last_bad == int(np.flatnonzero(want)[-1]), k
        assert twin.nonfinite == (not np.isfinite(chunk[rows]).all()), k
        n_bad_total += n_bad
    assert n_bad_total > 0


def test_over_limit_counts_beyond_max_abs_and_never_nan():
    detector = ArtifactDetector(ArtifactSettings(max_abs_uv=100.0), np.array([0]), 250.0)
    x = np.array([[0.0, 100.0, -100.5, 250.0, np.nan, -np.inf, 99.9]])
    assert detector.over_limit(x[0]) == 3
    strided = x[0, ::2]  # 0, -100.5, NaN, 99.9: the numpy path
    assert detector.over_limit(strided) == detector.over_limit(strided.copy()) == 1
    off = ArtifactDetector(ArtifactSettings(enabled=False), np.array([0]), 250.0)
    assert off.over_limit(x[0]) == 0


# ---------------------------------------------------------------------- reading
@pytest.mark.parametrize("chunk_size", [1, 10, 777])
def test_iter_chunks_are_contiguous_views_equal_to_read(chunk_size):
    require_recordings()
    with open_recording(EYES_CLOSED) as rec:
        whole = rec.read(0, rec.n_samples)
        pieces = list(rec.iter_chunks(chunk_size))
    assert all(c.flags.c_contiguous and c.dtype == np.float64 for _, c in pieces)
    assert [s for s, _ in pieces] == list(range(0, whole.shape[1], chunk_size))
    assert np.concatenate([c for _, c in pieces], axis=1).tobytes() == whole.tobytes()


# ---------------------------------------------------------------------- planning
def test_the_estimator_is_not_asked_while_the_limits_refuse_the_whole_window(monkeypatch):
    """After a trigger, for the minimum interval, no crossing can be planned: the planner asks
    the safety limits at the window's end first and leaves the estimator alone."""
    from closedloop.engine import DECISION_LATENCY_S, Engine, TriggerPlanner
    from closedloop.offline import run_engine
    from closedloop.protocol import load_protocol

    data, names, sfreq = _read(EYES_CLOSED, 60.0)
    protocol = load_protocol("alpha-trough-o2")
    engine = Engine(protocol, names, sfreq)
    horizon_s = 4 / sfreq
    now = {"ts": 0.0}
    asked = []
    estimator_class = type(engine._make_estimator())
    original = estimator_class.window_crossing

    def counting(self, target_phase_deg, start_s, end_s):
        # the window's end was allowed when the planner asked
        asked.append(engine.safety.check(now["ts"] + DECISION_LATENCY_S + horizon_s) is None)
        return original(self, target_phase_deg, start_s, end_s)

    monkeypatch.setattr(estimator_class, "window_crossing", counting)
    planned = []
    plan = TriggerPlanner.process

    def planning(self, *args, **kwargs):
        planned.append(1)
        return plan(self, *args, **kwargs)

    monkeypatch.setattr(TriggerPlanner, "process", planning)

    def chunks():
        for start in range(0, data.shape[1] - 3, 4):
            now["ts"] = (start + 3) / sfreq
            yield start, np.ascontiguousarray(data[:, start : start + 4])

    result = run_engine(engine, chunks(), chunk_size=4, keep_state=False)
    assert len(result.triggers) >= 5
    assert asked and all(asked)
    # the interval after each trigger was left out, not asked about
    assert len(asked) < 0.8 * len(planned)


@pytest.mark.parametrize("preset", ["mu-trough-c3", "alpha-peak-o2"])
def test_compact_input_decides_as_every_channel(preset):
    """An engine given only its used channels (``compact_input``, as replay reads them) keeps
    the same state, chunk by chunk, as one given every channel; it refuses a full chunk."""
    import closedloop as cl
    from closedloop.engine import Engine

    require_recordings()
    protocol = cl.load_protocol(preset)
    with open_recording(EYES_CLOSED) as rec:
        full = Engine(protocol, rec.ch_names, rec.sfreq)
        compact = Engine(protocol, rec.ch_names, rec.sfreq, compact_input=True)
        rows = compact.input_rows
        # C3 and its four neighbours; an average reference (alpha-peak-o2) uses every channel
        assert rows.shape[0] == (5 if preset == "mu-trough-c3" else rec.n_channels)
        assert np.array_equal(rows, full.used_channels)
        planned = 0
        for (i, a), (j, b) in zip(rec.iter_chunks(16), rec.iter_chunks(16, rows=rows)):
            assert i == j and np.array_equal(a[rows], b)
            ts = (i + a.shape[1] - 1) / rec.sfreq
            sa, sb = full.process(a, ts), compact.process(b, ts)
            assert sa.row() == sb.row() or np.array_equal(sa.row(), sb.row(), equal_nan=True)
            assert (sa.plan is None) == (sb.plan is None)
            if sa.plan is not None:
                planned += 1
                assert sa.plan.time_s == sb.plan.time_s and sa.plan.phase_deg == sb.plan.phase_deg
                full.pending = compact.pending = None
        assert full.counters == compact.counters
        assert planned > 0
        if rows.shape[0] < rec.n_channels:
            with pytest.raises(ValueError, match="expected a chunk of shape"):
                compact.process(a, ts + 1.0)
