# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Causal band amplitude by complex demodulation.

Each channel is shifted down by the band centre (multiplied by exp(-i w n)), the real and
imaginary parts go through the same low-pass SOS cascade (together a complex band-pass around
the centre), and the amplitude is 2 |low-passed|. ``closedloop.dsp.envelope`` owns the state.
"""

from libc.math cimport cos, sin, sqrt, NAN

from _dsp_sos cimport _finite, sos_sections, sos_steady


cdef class EnvelopeKernel:
    """Bound views of the low-pass ``sos``, ``zi_unit``, ``zi`` (n_sections, 2, 2 * n_channels:
    in-phase lanes, then quadrature lanes), ``pending`` (n_channels,) uint8 and ``work``
    (2 * n_channels,) scratch; ``omega`` is the band centre in radians per sample."""

    cdef const double[:, ::1] sos
    cdef const double[:, ::1] zi_unit
    cdef double[:, :, ::1] zi
    cdef unsigned char[::1] pending
    cdef double[::1] work
    cdef double omega

    def __init__(self, const double[:, ::1] sos, const double[:, ::1] zi_unit,
                 double[:, :, ::1] zi, unsigned char[::1] pending, double[::1] work,
                 double omega):
        self.sos = sos
        self.zi_unit = zi_unit
        self.zi = zi
        self.pending = pending
        self.work = work
        self.omega = omega

    def run(self, const double[:, ::1] x, double[:, ::1] y, long long index0) -> int:
        """Amplitude of ``x`` (n_channels, n) into ``y``; ``index0`` is the absolute index of
        ``x[:, 0]`` (the demodulation phase). Returns the bad-value count."""
        cdef Py_ssize_t n_channels = x.shape[0]
        cdef Py_ssize_t n = x.shape[1]
        cdef Py_ssize_t c, i
        cdef Py_ssize_t bad = 0
        cdef double v, re, im, cs, sn, arg
        cdef double* w = &self.work[0]
        with nogil:
            for i in range(n):
                arg = self.omega * <double>(index0 + i)
                cs = cos(arg)
                sn = sin(arg)
                for c in range(n_channels):
                    v = x[c, i]
                    if _finite(v):
                        re = v * cs
                        im = -v * sn
                        if self.pending[c]:
                            sos_steady(self.zi_unit, self.zi, c, re)
                            sos_steady(self.zi_unit, self.zi, n_channels + c, im)
                            self.pending[c] = 0
                    else:
                        self.pending[c] = 1
                        bad += 1
                        re = NAN
                        im = NAN
                    w[c] = re
                    w[n_channels + c] = im
                sos_sections(self.sos, self.zi, w, 2 * n_channels)
                for c in range(n_channels):
                    re = w[c]
                    im = w[n_channels + c]
                    v = 2.0 * sqrt(re * re + im * im)
                    if not _finite(v):
                        if not self.pending[c]:
                            self.pending[c] = 1
                            bad += 1
                        v = NAN
                    y[c, i] = v
        return bad
