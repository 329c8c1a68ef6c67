"""Validation of the DSP stages: bands, chunks and filter sections (the generic checks are
:mod:`closedloop.checks`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.checks import SettingsError, positive_float, positive_int

__all__ = ["F64", "SettingsError", "band", "check_chunk", "chunk_error", "positive_float", "positive_int", "sos_array"]

F64 = np.dtype(np.float64)


def band(low_hz: Any, high_hz: Any, sfreq: float) -> tuple[float, float]:
    """A pass band ``0 < low_hz < high_hz < sfreq / 2``, or a SettingsError saying why."""
    low = positive_float(low_hz, "low_hz")
    high = positive_float(high_hz, "high_hz")
    nyquist = sfreq / 2.0
    if not low < high:
        raise SettingsError(f"the band needs low_hz < high_hz; got {low:g} to {high:g} Hz.")
    if high >= nyquist:
        raise SettingsError(
            f"high_hz must be below the Nyquist frequency ({nyquist:g} Hz at sfreq {sfreq:g} Hz);"
            f" got {high:g} Hz."
        )
    return low, high


def chunk_error(chunk: Any, n_channels: int, stage: str) -> ValueError:
    """The ValueError explaining why ``chunk`` is not a float64 (n_channels, n_samples) array."""
    expected = f"a float64 array of shape ({n_channels}, n_samples)"
    if not isinstance(chunk, np.ndarray):
        return ValueError(f"{stage} expects {expected}; got {type(chunk).__name__}.")
    if chunk.dtype != F64:
        return ValueError(f"{stage} expects {expected}; got dtype {chunk.dtype}.")
    if chunk.ndim != 2 or chunk.shape[0] != n_channels:
        return ValueError(f"{stage} expects {expected}; got shape {chunk.shape}.")
    return ValueError(f"{stage} expects {expected}; got an array it cannot read.")


def check_chunk(chunk: Any, n_channels: int, stage: str) -> np.ndarray:
    """Return ``chunk`` as a C-contiguous float64 (n_channels, n) array, or raise ValueError.

    The dtype is never converted (a float32 chunk is a caller's bug); memory order is.
    """
    if (
        type(chunk) is not np.ndarray
        or chunk.dtype is not F64
        and chunk.dtype != F64
        or chunk.ndim != 2
        or chunk.shape[0] != n_channels
    ):
        if (
            isinstance(chunk, np.ndarray)
            and chunk.dtype == F64
            and chunk.ndim == 2
            and chunk.shape[0] == n_channels
        ):
            return np.ascontiguousarray(chunk)
        raise chunk_error(chunk, n_channels, stage)
    if not chunk.flags.c_contiguous:
        return np.ascontiguousarray(chunk)
    return chunk


def sos_array(sos: Any) -> np.ndarray:
    """Second-order sections as a C-contiguous (n_sections, 6) array with a0 == 1, checked
    for finite coefficients and stable poles."""
    try:
        array = np.array(sos, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError):
        raise SettingsError(
            f"sos must be an array of shape (n_sections, 6); got {sos!r}."
        ) from None
    if array.ndim != 2 or array.shape[1] != 6 or array.shape[0] < 1:
        raise SettingsError(
            f"sos must have shape (n_sections, 6) with at least one section; got {array.shape}."
        )
    if not np.isfinite(array).all():
        raise SettingsError("sos contains NaN or Inf coefficients.")
    a0 = array[:, 3].copy()
    if np.any(a0 == 0):
        raise SettingsError("sos has a section with a0 == 0; each row must be b0 b1 b2 a0 a1 a2.")
    array /= a0[:, None]
    a1, a2 = array[:, 4], array[:, 5]
    # Jury's conditions for a second-order denominator 1 + a1 z^-1 + a2 z^-2.
    if np.any(np.abs(a2) >= 1) or np.any(np.abs(a1) >= 1 + a2):
        raise SettingsError("sos is unstable: a section has a pole on or outside the unit circle.")
    return array
