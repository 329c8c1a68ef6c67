"""The amplitude gate: triggering only while the rhythm is strong enough."""

from __future__ import annotations

import math

import numpy as np

from closedloop.protocol import TriggerSettings

__all__ = ["AmplitudeGate"]


class AmplitudeGate:
    """``percentile:P`` of the baseline amplitude, ``uv:X`` absolute, or ``none``.

    The threshold is first set from the baseline's envelope (:meth:`calibrate`); a percentile
    gate then moves to the estimator's own amplitude, which has no envelope-filter lag, against
    the same percentile of its values over the baseline (:meth:`use_estimator`).
    """

    def __init__(self, trigger: TriggerSettings) -> None:
        self.kind = trigger.gate_kind
        self.value = trigger.gate_value
        self.reset()

    def reset(self) -> None:
        self.threshold = 0.0
        self.on_estimator = False

    def calibrate(self, envelope: np.ndarray, sfreq: float) -> float:
        """Set the threshold from the baseline's envelope (1-D, at ``sfreq``); returns it."""
        self.threshold = self._from_envelope(envelope, sfreq)
        return self.threshold

    def _from_envelope(self, env: np.ndarray, sfreq: float) -> float:
        if self.kind == "none":
            return 0.0
        if self.kind == "uv":
            return float(self.value)
        # skip the envelope filter's own settling at the start of the baseline
        settle = min(env.size // 4, int(sfreq))
        values = env[settle:]
        values = values[np.isfinite(values)]
        if values.size == 0:
            return math.inf
        return float(np.percentile(values, self.value))

    def use_estimator(self, estimator) -> None:
        """A percentile gate on the fitted estimator's own amplitude, where it offers one."""
        threshold = getattr(estimator, "amplitude_threshold", None)
        if self.kind == "percentile" and threshold is not None:
            value = float(threshold(self.value))
            if math.isfinite(value):
                self.threshold = value
                self.on_estimator = True

    def process(self, amplitude: float) -> bool:
        """Whether ``amplitude`` opens the gate."""
        return amplitude >= self.threshold
