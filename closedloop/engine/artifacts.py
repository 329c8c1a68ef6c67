"""Artifact detection on the raw input: NaN/Inf, saturation, flat channels, and over-limit
excursions of the derived signal."""

from __future__ import annotations

import numpy as np

from closedloop._artifacts import ArtifactKernel, count_over
from closedloop.protocol import ArtifactSettings

__all__ = ["ArtifactDetector"]


class ArtifactDetector:
    """Marks the samples on which no decision may rest.

    Parameters
    ----------
    settings : ArtifactSettings
        The protocol's ``[artifact]`` section (saturation, flat and over-limit thresholds).
    used_channels : ndarray of int
        The input channels the derived signal is built from; only they are checked.
    sfreq : float
        The input's rate, Hz (the flat check compares blocks of half ``flat_window_s``).

    Attributes
    ----------
    last_bad : int
        After :meth:`scan`: index of the chunk's last bad sample (-1: none).
    nonfinite : bool
        After :meth:`scan`: a used channel had NaN or Inf in the chunk.

    Notes
    -----
    The per-chunk checks run in one pass of a compiled kernel (``closedloop._artifacts``) over
    the used channels; the flat check's block bookkeeping stays here.
    """

    def __init__(self, settings: ArtifactSettings, used_channels: np.ndarray, sfreq: float) -> None:
        self.settings = settings
        self.used_channels = np.asarray(used_channels)
        self.flat_block_n = max(1, int(round(settings.flat_window_s * sfreq / 2)))
        n = len(self.used_channels)
        self._rows = np.ascontiguousarray(self.used_channels, dtype=np.intp)
        self._n_channels = int(self._rows.max()) + 1 if n else 0
        self._acc_min = np.full(n, np.inf)
        self._acc_max = np.full(n, -np.inf)
        self._kernel_rows = -1  # the channel count the kernel was built for
        self._kernel_obj: ArtifactKernel | None = None
        self._saturation_uv = float(settings.saturation_uv) if settings.enabled else 0.0
        self._track_range = bool(settings.enabled and settings.flat_uv > 0)
        self._over_limit = bool(settings.enabled)
        self._max_abs_uv = float(settings.max_abs_uv)
        self.reset()

    def reset(self) -> None:
        self._acc_min.fill(np.inf)
        self._acc_max.fill(-np.inf)
        self._acc_n = 0
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self.last_bad = -1
        self.nonfinite = False

    def _kernel(self, n_channels: int) -> ArtifactKernel:
        """The kernel for chunks of ``n_channels`` rows (the used ones must be among them)."""
        if n_channels != self._kernel_rows:
            if n_channels < self._n_channels:
                raise ValueError(
                    f"a chunk of {n_channels} channels lacks used channel {self._n_channels - 1}."
                )
            self._kernel_obj = ArtifactKernel(self._rows, self._acc_min, self._acc_max, n_channels)
            self._kernel_rows = n_channels
        return self._kernel_obj

    def scan(self, chunk: np.ndarray) -> int:
        """How many samples of ``chunk`` (n_channels, n) are bad on any used channel (NaN/Inf,
        saturated, or a flat channel: its range over the last two blocks below ``flat_uv``);
        sets :attr:`last_bad` and :attr:`nonfinite`."""
        kernel = self._kernel(chunk.shape[0])
        n_bad = kernel.scan(chunk, self._saturation_uv, self._track_range)
        if n_bad < 0:  # not C-contiguous float64: read a converted copy
            chunk = np.ascontiguousarray(chunk, dtype=np.float64)
            n_bad = kernel.scan(chunk, self._saturation_uv, self._track_range)
        self.last_bad = kernel.last_bad
        self.nonfinite = kernel.nonfinite
        if self._track_range and not self.nonfinite:
            n = chunk.shape[1]
            self._acc_n += n
            if self._acc_n >= self.flat_block_n and self._flat_block_ends() and n:
                n_bad = n
                self.last_bad = n - 1
        return n_bad

    def _flat_block_ends(self) -> bool:
        """A block of the flat check is complete: True if a channel was flat over it and the
        block before."""
        block = (self._acc_min.copy(), self._acc_max.copy())
        flat = False
        if self._prev is not None:
            lo = np.minimum(block[0], self._prev[0])
            hi = np.maximum(block[1], self._prev[1])
            flat = bool(((hi - lo) < self.settings.flat_uv).any())
        self._prev = block
        self._acc_min.fill(np.inf)
        self._acc_max.fill(-np.inf)
        self._acc_n = 0
        return flat

    def process(self, chunk: np.ndarray) -> np.ndarray | None:
        """Samples of ``chunk`` that are bad on any used channel (NaN/Inf, saturated, or a flat
        channel: its range over the last two blocks below ``flat_uv``); None when none are."""
        n_bad = self.scan(chunk)
        if not n_bad:
            return None
        n = chunk.shape[1]
        if n_bad == n:
            return np.ones(n, dtype=bool)
        flags = np.zeros(n, dtype=np.uint8)
        kernel = self._kernel(chunk.shape[0])
        if kernel.mask(chunk, self._saturation_uv, flags) < 0:
            kernel.mask(np.ascontiguousarray(chunk, dtype=np.float64), self._saturation_uv, flags)
        return flags.view(bool)

    def over_limit(self, derived_hp: np.ndarray) -> int:
        """How many samples of the (DC-free) derived signal exceed ``max_abs_uv``."""
        if not self._over_limit:
            return 0
        over = count_over(derived_hp, self._max_abs_uv)
        if over < 0:
            over = int(np.count_nonzero(np.abs(np.asarray(derived_hp, dtype=np.float64)) > self._max_abs_uv))
        return over
