# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Streaming IIR kernel: cascaded second-order sections (DF-II transposed), many channels.

``SosKernel`` binds the coefficient, state and scratch arrays that ``closedloop.dsp.sosfilt``
allocates, so a call per chunk only has to take the input and output views.
"""

from _dsp_sos cimport sos_run


cdef class SosKernel:
    """Bound views of ``sos`` (n_sections, 6), ``zi_unit`` (n_sections, 2), ``zi``
    (n_sections, 2, n_channels), ``pending`` (n_channels,) uint8 and ``work`` (n_channels,)
    scratch; all owned by the caller."""

    cdef const double[:, ::1] sos
    cdef const double[:, ::1] zi_unit
    cdef double[:, :, ::1] zi
    cdef unsigned char[::1] pending
    cdef double[::1] work

    def __init__(self, const double[:, ::1] sos, const double[:, ::1] zi_unit,
                 double[:, :, ::1] zi, unsigned char[::1] pending, double[::1] work):
        self.sos = sos
        self.zi_unit = zi_unit
        self.zi = zi
        self.pending = pending
        self.work = work

    def run(self, const double[:, ::1] x, double[:, ::1] y) -> int:
        """Filter ``x`` (n_channels, n) into ``y`` (same shape); return the bad-value count."""
        cdef Py_ssize_t bad
        with nogil:
            bad = sos_run(self.sos, self.zi_unit, self.zi, self.pending, self.work, x, y, 0, 1)
        return bad
