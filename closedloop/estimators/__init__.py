"""Phase estimators: ``make_estimator(method, sfreq, band_hz, **params)``.

Every estimator follows :class:`closedloop.estimators.base.PhaseEstimator`. ``"auto"`` names
the project's best method.
"""

from __future__ import annotations

from typing import Any

from closedloop.errors import ProtocolError
from closedloop.estimators.ar import AREstimator
from closedloop.estimators.base import PhaseEstimator
from closedloop.estimators.echt import ECHTEstimator
from closedloop.estimators.etp import ETPEstimator
from closedloop.estimators.wiener import WienerEstimator

_REGISTRY: dict[str, type[PhaseEstimator]] = {
    "ar": AREstimator,
    "echt": ECHTEstimator,
    "etp": ETPEstimator,
    "wiener": WienerEstimator,
}
AUTO_METHOD = "wiener"


def available_methods() -> tuple[str, ...]:
    """Names ``make_estimator`` accepts, ``"auto"`` first."""
    return ("auto", *_REGISTRY)


def make_estimator(
    method: str, sfreq: float, band_hz: tuple[float, float], **params: Any
) -> PhaseEstimator:
    """Build a phase estimator by name.

    Parameters
    ----------
    method : str
        One of :func:`available_methods`; ``"auto"`` is the project's best.
    sfreq : float
        Working sampling rate of the derived signal, Hz.
    band_hz : (float, float)
        Band of the oscillation, Hz.
    **params
        Method parameters (the protocol's ``[estimator.params]``).
    """
    key = str(method).strip().lower()
    if key == "auto":
        key = AUTO_METHOD
    if key not in _REGISTRY:
        raise ProtocolError(
            f"estimator.method {method!r} is not known; accepted: {', '.join(available_methods())}."
        )
    return _REGISTRY[key](sfreq, band_hz, **params)


__all__ = ["AUTO_METHOD", "PhaseEstimator", "available_methods", "make_estimator"]
