"""Streaming DSP stages of the engine's front end.

Each stage validates its settings at construction, then ``process(chunk)`` takes float64
``(n_channels, n_samples)`` chunks (``n_samples`` may be 0), keeps its state across chunks and
``reset()`` starts it afresh. Kernels are compiled Cython (``closedloop._ringbuf``,
``_sosfilt``, ``_decimate``, ``_dsp_envelope``).
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
