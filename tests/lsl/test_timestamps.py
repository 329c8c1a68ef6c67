"""Timestamps against this machine's clock: stamps ahead of it (mne-lsl's PlayerLSL) or behind it
by more than a transport delay are detected and reported, a sample's time is never later than its
arrival, latencies are never negative, and drivers that stamp every sample of a chunk with the
push time get per-sample stamps (issue 14, item 8).

Item 8, explained: an outlet that stamps all 5 samples of each chunk with the chunk's push time
(64 ch, 5 kHz) made State ``sample_ts`` come out 0.8 ms earlier than with ``--raw-timestamps``.
liblsl hands samples over one at a time, so a pull often caught such a chunk split in transit; the
raw stamp of the partial pull's newest sample was the *chunk's* push time, 4 samples (0.8 ms)
after that sample was taken, and because that stamp said "just now" the source could not tell the
rest of the chunk was already due, so it did not complete the chunk either. The dejittered time
(the lower envelope of the stamps against the sample count) was right; the raw one was late.
The source now spreads such stamps back at the nominal rate, as liblsl does for a chunk pushed
with one stamp: every sample's stamp is its own, raw and dejittered agree, and split chunks are
completed as with back-filled stamps.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import numpy as np
import pylsl
import pytest

from closedloop.lsl.source import LSLSource, resolve_stream
from closedloop.lsl.stampcheck import StampCheck
from tests.helpers.faults import (
    LIVE_SFREQ,
    FaultyOutlet,
    alpha_stream,
    run_cli,
    run_live_together,
)
from tests.helpers.hosted import HostedOutlet

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers


def test_stamp_check_tells_ahead_and_behind_once_and_is_quiet_on_jitter():
    rng = np.random.default_rng(0)
    quiet = StampCheck()
    for lag in rng.uniform(0.0, 0.04, 2000):  # a push-stamping driver: 0-40 ms late
        assert quiet.update(float(lag), 0.01) is None
    assert not quiet.ahead and not quiet.behind and quiet.windows == 10

    ahead = StampCheck()
    said = [ahead.update(float(lag), 0.0625) for lag in -0.0625 + rng.uniform(0.0, 0.06, 200)]
    messages = [m for m in said if m]
    assert len(messages) == 1 and ahead.windows_ahead == ahead.windows
    assert "timestamps run" in messages[0] and "ms ahead of this machine's clock" in messages[0]

    behind = StampCheck()
    said = [behind.update(0.5 + float(lag), 0.01) for lag in rng.uniform(0.0, 0.02, 1000)]
    messages = [m for m in said if m]
    assert len(messages) == 1 and "behind this machine's clock" in messages[0]
    assert behind.summary()["arrival_minus_stamp_ms_min"] >= 500.0


def _shifted(shift_s: float, number: int, true: float) -> float:
    """A ``FaultyOutlet`` stamp function: the true time plus ``shift_s``."""
    return true + shift_s


class _Pusher(HostedOutlet):
    """A real outlet in its own process: 5-sample chunks at ``sfreq``, channel 0 the sample
    index, stamped with the push time plus ``lead_s`` for the whole chunk, or on every sample
    with ``per_sample``; started on construction."""

    def __init__(self, source_id, sfreq, n_ch, *, per_sample, lead_s=0.0, chunk=5):
        self.sfreq, self.chunk, self.per_sample, self.lead_s = sfreq, chunk, per_sample, lead_s
        self.source_id, self.n_ch = source_id, n_ch
        self.pushed: dict[int, float] = {}  # chunk number -> the stamp it was given
        self.t0 = pylsl.local_clock() + 0.3
        self.start()

    def _open(self):
        info = pylsl.StreamInfo("pusher", "EEG", self.n_ch, self.sfreq, "float32", self.source_id)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=self.chunk)

    def _loop(self, halt):
        k = 0
        block = np.zeros((self.chunk, self.n_ch), dtype=np.float32)
        while not halt.is_set():
            due = self.t0 + (k + self.chunk - 1) / self.sfreq
            delay = due - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
            block[:, 0] = np.arange(k, k + self.chunk)
            stamp = pylsl.local_clock() + self.lead_s
            self._store("pushed", k // self.chunk, stamp)
            self.outlet.push_chunk(block, [stamp] * self.chunk if self.per_sample else stamp)
            k += self.chunk


def _pull(source: LSLSource, seconds: float) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """(index channel, stamps, newest_ts, arrival in the stream's clock) of every pull."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        chunk, stamps = source.pull(0.1)
        if chunk is not None:
            out.append((chunk[0].astype(np.int64), stamps, source.newest_ts, source.arrival - source.correction))
    return out


def test_stamps_shared_by_a_chunk_are_spread_back_and_split_chunks_completed(source_id):
    """Item 8: 64 ch at 5 kHz in chunks of 5, one outlet stamping every sample with the push time,
    one pushing with liblsl's back-filled stamps (the reference), read at the same time."""
    sfreq, n_ch = 5000.0, 64
    pushers = {
        mode: _Pusher(f"{source_id}-{mode}", sfreq, n_ch, per_sample=(mode == "same"))
        for mode in ("same", "backfilled")
    }
    pulls = {}
    try:
        sources = {mode: LSLSource(resolve_stream(source_id=f"{source_id}-{mode}", timeout=10.0))
                   for mode in pushers}
        threads = [
            threading.Thread(target=lambda m=mode: pulls.__setitem__(m, _pull(sources[m], 5.0)))
            for mode in pushers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        for source in sources.values():
            source.close()
    finally:
        for pusher in pushers.values():
            pusher.close()
    assert sources["same"].stamps_per_chunk and not sources["backfilled"].stamps_per_chunk
    split = {}
    for mode, got in pulls.items():
        late = got[len(got) // 5 :]  # once the source has seen a few chunks
        index = np.concatenate([p[0] for p in late])
        stamps = np.concatenate([p[1] for p in late])
        chunk_no, pos = index // 5, index % 5
        expected = np.array([pushers[mode].pushed[c] for c in chunk_no]) - (4 - pos) / sfreq
        # every sample carries its own time: its chunk's stamp minus its distance to the chunk's end
        np.testing.assert_allclose(stamps, expected, rtol=0, atol=1e-9)
        split[mode] = np.mean([p[0].size % 5 != 0 for p in late])
        # never later than its arrival
        assert all(p[2] <= p[3] + 1e-9 for p in got)
    # split chunks are completed as they are with back-filled stamps (before: ~5 % stayed split)
    assert split["same"] <= 2 * split["backfilled"] + 0.01, split


@pytest.mark.parametrize("dejitter", [True, False])
def test_stamps_ahead_of_the_clock_are_reported_and_never_make_a_time_later_than_arrival(
    source_id, dejitter
):
    """A chunk stamped 62.5 ms ahead, as PlayerLSL does at 160 Hz in chunks of 10."""
    sfreq = 160.0
    pusher = _Pusher(source_id, sfreq, 4, per_sample=False, chunk=10, lead_s=10 / sfreq)
    try:
        source = LSLSource(resolve_stream(source_id=source_id, timeout=10.0), dejitter=dejitter)
        got = _pull(source, 3.0)
        notices = source.take_notices()
        summary = source.timestamps_summary()
        source.close()
    finally:
        pusher.close()
    assert len(got) > 20
    # never later than its arrival, on every pull
    assert all(newest_ts <= arrived + 1e-9 for _, _, newest_ts, arrived in got)
    # the stamps themselves are as sent (liblsl back-fills the chunk's one stamp at the nominal rate)
    index = np.concatenate([p[0] for p in got])
    stamps = np.concatenate([p[1] for p in got])
    expected = np.array([pusher.pushed[c] for c in index // 10]) - (9 - index % 10) / sfreq
    np.testing.assert_allclose(stamps, expected, rtol=0, atol=1e-9)
    # and so mostly ahead of their arrival (a pull delayed more than 62.5 ms on a busy machine is not)
    ahead = np.array([p[1][-1] - p[3] for p in got])
    assert np.mean(ahead > 0) > 0.8 and np.median(ahead) > 0.03, ahead
    assert summary["stamps_ahead"] and summary["arrival_minus_stamp_ms_median"] < -50.0
    assert any("ms ahead of this machine's clock" in n for n in notices), notices


def test_live_runs_on_stamps_ahead_and_behind_warn_and_latencies_are_never_negative(tmp_path, source_id):
    ids = {"ahead": f"{source_id}-ahead", "behind": f"{source_id}-behind"}
    shift = {"ahead": +0.04, "behind": -0.5}
    outlets = {
        mode: FaultyOutlet(alpha_stream(30.0), LIVE_SFREQ, sid, stamp=partial(_shifted, shift[mode])).start()
        for mode, sid in ids.items()
    }
    try:
        results = run_live_together(
            tmp_path, [(sid, 8.0, ("--record", str(tmp_path / f"{mode}.xdf"))) for mode, sid in ids.items()]
        )
    finally:
        for outlet in outlets.values():
            outlet.close()
    (code_a, err_a, ahead), (code_b, err_b, behind) = results
    assert code_a == 0 and code_b == 0, (err_a, err_b)
    assert "ms ahead of this machine's clock" in err_a
    assert ahead["timestamps"]["stamps_ahead"] and not ahead["timestamps"]["stamps_behind"]
    assert "behind this machine's clock, more than a transport delay" in err_b
    assert behind["timestamps"]["stamps_behind"]
    for summary in (ahead, behind):
        assert summary["latency_ms_p50"] > 0 and summary["latency_ms_max"] > 0
    assert ahead["latency_ms_p99"] < 20.0  # from arrival, not the 40 ms-early stamp
    assert ahead["triggers"] > 5
    # the report of the recording: latency from the State's own sample times, never negative
    report = run_cli("report", str(tmp_path / "ahead.xdf"), "--out", str(tmp_path / "ahead.html"), "--quiet")
    assert report.returncode == 0, report.stderr
    import json

    numbers = json.loads((tmp_path / "ahead.json").read_text())
    assert numbers["latency_ms"]["p50"] >= 0.0 and numbers["latency_ms"]["p99"] >= 0.0
