"""Artifact detection on the raw input: NaN/Inf, saturation, flat channels, and over-limit
excursions of the derived signal."""

from __future__ import annotations

import numpy as np

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
    """

    def __init__(self, settings: ArtifactSettings, used_channels: np.ndarray, sfreq: float) -> None:
        self.settings = settings
        self.used_channels = np.asarray(used_channels)
        self.flat_block_n = max(1, int(round(settings.flat_window_s * sfreq / 2)))
        self.reset()

    def reset(self) -> None:
        n = len(self.used_channels)
        self._acc_min = np.full(n, np.inf)
        self._acc_max = np.full(n, -np.inf)
        self._acc_n = 0
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def process(self, chunk: np.ndarray) -> np.ndarray | None:
        """Samples of ``chunk`` that are bad on any used channel (NaN/Inf, saturated, or a flat
        channel: its range over the last two blocks below ``flat_uv``); None when none are."""
        used = chunk[self.used_channels]
        finite = np.isfinite(used)
        all_finite = bool(finite.all())
        mask = None
        if not all_finite:
            mask = ~finite.all(axis=0)
        art = self.settings
        if not art.enabled:
            return mask
        if art.saturation_uv > 0:
            sat = (np.abs(np.where(finite, used, 0.0)) >= art.saturation_uv).any(axis=0)
            mask = sat if mask is None else (mask | sat)
        if art.flat_uv > 0 and all_finite:
            self._acc_min = np.minimum(self._acc_min, used.min(axis=1))
            self._acc_max = np.maximum(self._acc_max, used.max(axis=1))
            self._acc_n += used.shape[1]
            if self._acc_n >= self.flat_block_n:
                block = (self._acc_min, self._acc_max)
                if self._prev is not None:
                    lo = np.minimum(block[0], self._prev[0])
                    hi = np.maximum(block[1], self._prev[1])
                    if ((hi - lo) < art.flat_uv).any():
                        flat = np.ones(used.shape[1], dtype=bool)
                        mask = flat if mask is None else (mask | flat)
                self._prev = block
                n = len(self.used_channels)
                self._acc_min = np.full(n, np.inf)
                self._acc_max = np.full(n, -np.inf)
                self._acc_n = 0
        if mask is not None and not mask.any():
            return None
        return mask

    def over_limit(self, derived_hp: np.ndarray) -> int:
        """How many samples of the (DC-free) derived signal exceed ``max_abs_uv``."""
        if not self.settings.enabled:
            return 0
        over = np.abs(derived_hp) > self.settings.max_abs_uv
        return int(over.sum()) if over.any() else 0
