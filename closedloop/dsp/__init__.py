"""Streaming DSP stages of the engine's front end.

Each stage validates its settings at construction (``SettingsError``: a ``UsageError``, exit
2, and a ``ValueError``), then ``process(chunk)`` takes float64 ``(n_channels, n_samples)``
chunks (``n_samples`` may be 0; another channel count or dtype is a ``ValueError``), keeps its
state across chunks, and ``reset()`` starts it afresh. Output does not depend on how the
signal is cut into chunks. NaN/Inf input gives NaN output at those samples, is counted in
``last_bad`` (and ``n_bad``), and the stage restarts from the next good sample.

Delays a caller may need to compensate: ``Decimator.delay_s`` (anti-alias filter, about 2 ms
from 5 kHz to 1 kHz; ``phase_delay_s(f)`` exactly), ``Envelope.delay_s`` (about
``0.83 / (high_hz - low_hz)`` s with the default order 4, e.g. 0.17 s for 8-13 Hz).

Kernels are compiled Cython, one private module per Python module: ``closedloop._ringbuf``,
``_sosfilt``, ``_decimate``, ``_dsp_envelope``, ``_dsp_spatial`` (sources in ``ext/``).
"""

from closedloop.dsp._checks import SettingsError
from closedloop.dsp.decimate import Decimator
from closedloop.dsp.envelope import Envelope
from closedloop.dsp.power import BandPower, individual_peak_hz, welch_psd
from closedloop.dsp.ringbuffer import RingBuffer
from closedloop.dsp.sosfilt import (
    SOSFilter,
    design_bandpass,
    design_highpass,
    design_lowpass,
    design_notch,
    sos_group_delay_s,
    sos_phase_delay_s,
)
from closedloop.dsp.spatial import SpatialFilter, default_neighbors, spatial_weights

__all__ = [
    "BandPower",
    "Decimator",
    "Envelope",
    "RingBuffer",
    "SOSFilter",
    "SettingsError",
    "SpatialFilter",
    "default_neighbors",
    "design_bandpass",
    "design_highpass",
    "design_lowpass",
    "design_notch",
    "individual_peak_hz",
    "sos_group_delay_s",
    "sos_phase_delay_s",
    "spatial_weights",
    "welch_psd",
]
