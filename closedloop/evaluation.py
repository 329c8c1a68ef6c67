"""Phase accuracy of delivered triggers against the offline ground truth.

The truth is the zero-phase FIR band-pass + Hilbert of the whole recording, on the same spatially
filtered signal the engine derived (closedloop.groundtruth), read at each trigger's exact delivery
time. Shared by the demo, ``bench accuracy`` and reports so that they all measure the same way.
"""

from __future__ import annotations

import numpy as np

from closedloop.dsp import spatial_weights
from closedloop.groundtruth import GroundTruth, circular_stats, wrap_deg


def derived_signal(data: np.ndarray, ch_names: list[str], protocol) -> np.ndarray:
    """The protocol's derived signal (channel after its reference), 1-D, for the ground truth."""
    sig = protocol.signal
    weights = spatial_weights(
        list(ch_names),
        [sig.channel],
        sig.reference,
        neighbors=list(sig.neighbors) or None,
        bipolar_with=sig.bipolar_with,
        weights=dict(sig.weights) or None,
    )
    return (weights @ np.nan_to_num(data))[0]


def phase_errors(
    derived: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    onsets_s: np.ndarray,
    targets_deg: np.ndarray,
    *,
    truth: GroundTruth | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """True phase at each onset and its error against the target (degrees, wrapped)."""
    truth = truth or GroundTruth(derived, sfreq, band_hz)
    onsets_s = np.asarray(onsets_s, dtype=float)
    end = (truth.n_samples - 1) / sfreq
    keep = (onsets_s >= 0) & (onsets_s <= end)
    true_phase = np.full(onsets_s.shape, np.nan)
    true_phase[keep] = truth.phase_at(onsets_s[keep])
    return true_phase, wrap_deg(true_phase - np.asarray(targets_deg, dtype=float))


#: Triggers in a recording's last second are not scored: the truth's filter reaches past its end.
TRUTH_END_MARGIN_S = 1.0


def scored_span_s(n_samples: int, sfreq: float, eval_after_s: float) -> tuple[float, float]:
    """``(start, end)`` in seconds of the stretch whose triggers are scored.

    From ``eval_after_s`` (usually the protocol's baseline) to :data:`TRUTH_END_MARGIN_S` before
    the last sample.
    """
    return float(eval_after_s), (n_samples - 1) / sfreq - TRUTH_END_MARGIN_S


def scored_errors(
    derived: np.ndarray,
    sfreq: float,
    band_hz: tuple[float, float],
    onsets_s: np.ndarray,
    targets_deg: np.ndarray | float,
    *,
    eval_after_s: float,
    truth: GroundTruth | None = None,
) -> np.ndarray:
    """Phase errors of the triggers delivered within :func:`scored_span_s`, degrees.

    Each error is the true phase at the trigger's exact delivery time minus its target
    (:func:`phase_errors`); triggers outside the span, or where the truth is undefined, are left out.
    """
    start, end = scored_span_s(derived.shape[0], sfreq, eval_after_s)
    onsets = np.asarray(onsets_s, dtype=float)
    targets = np.broadcast_to(np.asarray(targets_deg, dtype=float), onsets.shape)
    keep = (onsets >= start) & (onsets <= end)
    _, errors = phase_errors(derived, sfreq, band_hz, onsets[keep], targets[keep], truth=truth)
    return errors[np.isfinite(errors)]


def accuracy(errors_deg: np.ndarray) -> dict:
    """Circular statistics of phase errors as a plain dict (NaNs skipped)."""
    e = np.asarray(errors_deg, dtype=float)
    return circular_stats(e[np.isfinite(e)]).as_dict()
