"""Angles in degrees, wrapped into (-180, 180] (the phase convention of ../shared/CONTRACTS.md)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["wrap_deg"]


def wrap_deg(angle):
    """Wrap an angle, or an array of angles, in degrees into (-180, 180].

    A Python float (the engine's hot path) is wrapped with scalar arithmetic and returned as a
    float; anything else as a float64 array.
    """
    if isinstance(angle, (float, int)) and not isinstance(angle, bool):
        wrapped = math.fmod(angle, 360.0)
        if wrapped <= -180.0:
            wrapped += 360.0
        elif wrapped > 180.0:
            wrapped -= 360.0
        return wrapped
    a = np.mod(np.asarray(angle, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)
