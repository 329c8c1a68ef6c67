"""Preallocated multichannel ring buffer (kernels in ``closedloop._ringbuf``)."""

from __future__ import annotations

import numpy as np

from closedloop._ringbuf import ring_read, ring_write
from closedloop.dsp._checks import check_chunk, positive_int


class RingBuffer:
    """The newest ``capacity`` samples of ``n_channels`` channels, float64.

    Writing copies the chunk in at the write index (wrapping); reading the newest ``n``
    samples copies only those ``n``.

    Parameters
    ----------
    n_channels : int
        Number of channels (rows).
    capacity : int
        Samples kept per channel.
    """

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.n_channels = positive_int(n_channels, "n_channels")
        self.capacity = positive_int(capacity, "capacity")
        self.buffer = np.zeros((self.n_channels, self.capacity), dtype=np.float64)
        self.head = 0
        self.n_written = 0

    def write(self, chunk: np.ndarray) -> None:
        """Append ``chunk`` (n_channels, n_samples); n_samples may exceed the capacity or be 0."""
        chunk = check_chunk(chunk, self.n_channels, "RingBuffer.write")
        n = chunk.shape[1]
        if n == 0:
            return
        ring_write(self.buffer, chunk, self.head)
        self.head = (self.head + n) % self.capacity
        self.n_written += n

    @property
    def n_available(self) -> int:
        """Samples that can be read back (at most the capacity)."""
        return min(self.n_written, self.capacity)

    def latest(self, n: int) -> np.ndarray:
        """The newest ``min(n, n_available)`` samples, oldest first, as a new contiguous array."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"RingBuffer.latest needs a sample count >= 0; got {n!r}.")
        m = min(int(n), self.n_available)
        out = np.empty((self.n_channels, m), dtype=np.float64)
        if m:
            ring_read(self.buffer, out, (self.head - m) % self.capacity)
        return out

    def reset(self) -> None:
        """Forget everything written."""
        self.buffer[:] = 0.0
        self.head = 0
        self.n_written = 0
