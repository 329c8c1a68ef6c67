# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Streaming decimation kernel: IIR anti-alias filter on every input sample, keep every
``factor``-th output. ``closedloop.dsp.decimate`` owns the state and the sample phase."""

from _dsp_sos cimport sos_run


cdef class DecimateKernel:
    """Bound views of the anti-alias ``sos``, ``zi_unit``, ``zi`` (n_sections, 2, n_channels),
    ``pending`` and ``work`` arrays, all owned by the caller."""

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

    def run(self, const double[:, ::1] x, double[:, ::1] y, Py_ssize_t start,
            Py_ssize_t factor) -> int:
        """Filter ``x``; write input sample ``start + j * factor`` of the output to ``y[:, j]``.

        ``y`` must have exactly the number of kept samples. Returns the bad-value count.
        """
        cdef Py_ssize_t bad
        with nogil:
            bad = sos_run(self.sos, self.zi_unit, self.zi, self.pending, self.work, x, y,
                          start, factor)
        return bad
