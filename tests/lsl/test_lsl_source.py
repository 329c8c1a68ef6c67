"""LSLSource on a real loopback outlet: chunks split in transit are completed, small ones are not waited for."""

from __future__ import annotations

import threading
import time

import numpy as np
import pylsl
import pytest

from closedloop.lsl.source import (
    COMPLETE_WAIT_S,
    LEARN_PULLS,
    MAX_COMPLETION_MISSES,
    LSLSource,
    resolve_stream,
)

pytestmark = pytest.mark.e2e  # real LSL sessions, subprocesses, browsers or servers

SFREQ = 250.0
N_CH = 3


def _outlet(source_id: str) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo("src-test", "EEG", N_CH, SFREQ, "float32", source_id)
    return pylsl.StreamOutlet(info)


def _source(source_id: str) -> LSLSource:
    return LSLSource(resolve_stream(source_id=source_id, timeout=10.0))


def _pull_n(source: LSLSource, n: int, deadline_s: float = 5.0) -> list[np.ndarray]:
    """Pull until ``n`` samples have come; return the index channel of each pull."""
    got, pulls = 0, []
    end = time.monotonic() + deadline_s
    while got < n and time.monotonic() < end:
        chunk, _ = source.pull(0.2)
        if chunk is not None:
            pulls.append(chunk[0].copy())
            got += chunk.shape[1]
    return pulls


def _learn_chunks_of_four(
    outlet: pylsl.StreamOutlet, source: LSLSource, start: int = 0, split: bool = False
) -> int:
    """Push chunks of 4 at the amplifier's pace (one per 16 ms) and pull each; returns the next
    sample index. With ``split``, every chunk goes out as 1 then (0.2 ms later) 3, as a busy
    machine's transfer thread can send it."""
    k = start
    for _ in range(LEARN_PULLS + 5):
        now = pylsl.local_clock()
        stamps = [now - (3 - j) / SFREQ for j in range(4)]
        block = _block(k, 4)
        if split:
            _push_split_and_pull(outlet, source, block, stamps)
        else:
            outlet.push_chunk(block, stamps)
            _pull_n(source, 4)
        k += 4
        time.sleep(max(0.0, now + 4 / SFREQ - pylsl.local_clock()))
    return k


def _push_split_and_pull(outlet, source: LSLSource, block: np.ndarray, stamps: list[float]) -> list[np.ndarray]:
    """Push a chunk as its first sample then (0.2 ms later) the rest; pull all of it."""
    outlet.push_chunk(block[:1], stamps[:1])
    timer = threading.Timer(0.0002, outlet.push_chunk, args=(block[1:], stamps[1:]))
    timer.start()
    pulls = _pull_n(source, block.shape[0])
    timer.join()
    return pulls


@pytest.fixture
def learnt(source_id):
    """An outlet and a source that has learnt chunks of 4: ``(outlet, source, next_index)``."""
    outlet = _outlet(source_id)
    source = _source(source_id)
    try:
        k = _learn_chunks_of_four(outlet, source)
        assert source.chunk_size == 4
        yield outlet, source, k
    finally:
        source.close()
        del outlet


def _block(k: int, n: int) -> np.ndarray:
    """Samples ``k .. k + n - 1`` with their index on every channel."""
    return np.tile(np.arange(k, k + n, dtype=np.float32)[:, None], (1, N_CH))


def test_a_chunk_split_in_transit_is_completed_before_it_reaches_the_engine(learnt):
    outlet, source, k = learnt
    whole = 0
    for _ in range(10):
        # one chunk of 4 whose samples are all due, arriving as 1 then (0.2 ms later) 3
        now = pylsl.local_clock()
        stamps = [now - (3 - j) / SFREQ for j in range(4)]
        pulls = _push_split_and_pull(outlet, source, _block(k, 4), stamps)
        whole += len(pulls) == 1
        np.testing.assert_array_equal(np.concatenate(pulls), np.arange(k, k + 4))
        k += 4
    # without completion every one arrives as 1 + 3; a thread scheduled late on a busy
    # machine can still miss the COMPLETE_WAIT_S window now and then
    assert whole >= 8, whole
    assert source.n_completed >= 1


def test_the_chunk_size_is_learnt_when_every_chunk_comes_split_in_transit(source_id):
    # before the size is known nothing is completed: each push arrives as two pulls (1 + 3),
    # which must count as one chunk of 4, not as chunks of 1 (that would switch completion off
    # in effect, and plan the triggers over a window a quarter of the amplifier's chunk)
    outlet = _outlet(source_id)
    source = _source(source_id)
    try:
        _learn_chunks_of_four(outlet, source, split=True)
        assert source.chunk_size == 4
    finally:
        source.close()
        del outlet


def test_samples_not_due_yet_are_not_waited_for(learnt):
    outlet, source, k = learnt
    waits = []
    for _ in range(10):
        # an amplifier that sends 2 samples as soon as the second exists: the other 2 of a
        # "usual" chunk lie in the future, so the pulls must not wait for them
        now = pylsl.local_clock()
        t0 = time.perf_counter()
        outlet.push_chunk(_block(k, 2), [now - 1 / SFREQ, now])
        pulls = _pull_n(source, 2)
        waits.append(time.perf_counter() - t0)
        np.testing.assert_array_equal(np.concatenate(pulls), np.arange(k, k + 2))
        k += 2
    # a wait for the missing half would cost COMPLETE_WAIT_S every time
    assert np.median(waits) < COMPLETE_WAIT_S / 2, waits
    assert source.completion


def test_completion_switches_off_when_due_samples_never_come(learnt):
    outlet, source, k = learnt
    # stamps 40 ms old, 2 samples per push: the other 2 of a usual chunk look due but are never
    # in transit, so each pull waits in vain until the source stops waiting
    for _ in range(MAX_COMPLETION_MISSES):
        now = pylsl.local_clock()
        outlet.push_chunk(_block(k, 2), [now - 0.04 - 1 / SFREQ, now - 0.04])
        chunk, _ = source.pull(0.5)
        assert chunk is not None and chunk.shape[1] == 2
        k += 2
    assert not source.completion
    waits = []
    for _ in range(5):
        now = pylsl.local_clock()
        t0 = time.perf_counter()
        outlet.push_chunk(_block(k, 2), [now - 0.04 - 1 / SFREQ, now - 0.04])
        pulls = _pull_n(source, 2)
        waits.append(time.perf_counter() - t0)
        np.testing.assert_array_equal(np.concatenate(pulls), np.arange(k, k + 2))
        k += 2
    assert np.median(waits) < COMPLETE_WAIT_S / 2, waits
