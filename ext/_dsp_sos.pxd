# cython: language_level=3
"""Shared inline kernel: cascaded second-order sections, direct form II transposed.

Used by ``_sosfilt.pyx`` (plain filtering), ``_decimate.pyx`` (filter, keep every ``step``-th
output) and ``_dsp_envelope.pyx``. Trusts its inputs.

Layout: the state ``zi`` is (n_sections, 2, n_lanes) and one input sample of every lane (a
channel, or a quadrature component) sits in ``work`` (n_lanes,). Each section runs over all
lanes before the next: the lanes are independent, so the inner loop has no dependency chain
and the compiler vectorises it, which a channel-by-channel loop (a chain of dependent
multiply-adds per sample) cannot.
"""

from libc.math cimport NAN


cdef inline bint _finite(double v) noexcept nogil:
    # False for NaN (v - v is NaN) and for +-Inf (Inf - Inf is NaN).
    return (v - v) == 0.0


cdef inline void sos_steady(const double[:, ::1] zi_unit, double[:, :, ::1] zi,
                            Py_ssize_t lane, double v) noexcept nogil:
    """State of ``lane`` for a filter that has seen ``v`` for ever."""
    cdef Py_ssize_t s
    for s in range(zi_unit.shape[0]):
        zi[s, 0, lane] = zi_unit[s, 0] * v
        zi[s, 1, lane] = zi_unit[s, 1] * v


cdef inline void sos_sections(const double[:, ::1] sos, double[:, :, ::1] zi,
                              double* work, Py_ssize_t n_lanes) noexcept nogil:
    """One sample of every lane (in ``work``, replaced by the output) through every section;
    ``sos`` rows are b0 b1 b2 1 a1 a2."""
    cdef Py_ssize_t s, c
    cdef double b0, b1, b2, a1, a2, v, out
    cdef double* z0
    cdef double* z1
    for s in range(sos.shape[0]):
        b0 = sos[s, 0]
        b1 = sos[s, 1]
        b2 = sos[s, 2]
        a1 = sos[s, 4]
        a2 = sos[s, 5]
        z0 = &zi[s, 0, 0]
        z1 = &zi[s, 1, 0]
        for c in range(n_lanes):
            v = work[c]
            out = b0 * v + z0[c]
            z0[c] = b1 * v - a1 * out + z1[c]
            z1[c] = b2 * v - a2 * out
            work[c] = out


cdef inline Py_ssize_t sos_run(const double[:, ::1] sos, const double[:, ::1] zi_unit,
                               double[:, :, ::1] zi, unsigned char[::1] pending,
                               double[::1] work, const double[:, ::1] x, double[:, ::1] y,
                               Py_ssize_t start, Py_ssize_t step) noexcept nogil:
    """Filter every channel of ``x``; write sample ``start + j * step`` to ``y[:, j]``.

    A channel whose ``pending`` flag is set starts from the steady state of its next finite
    sample. A non-finite input (or output) gives NaN, sets ``pending`` and counts as bad.
    Returns the number of bad values.
    """
    cdef Py_ssize_t n_channels = x.shape[0]
    cdef Py_ssize_t n = x.shape[1]
    cdef Py_ssize_t c, i
    cdef Py_ssize_t j = 0
    cdef Py_ssize_t next_out = start
    cdef Py_ssize_t bad = 0
    cdef double v
    cdef double* w = &work[0]
    for i in range(n):
        for c in range(n_channels):
            v = x[c, i]
            if _finite(v):
                if pending[c]:
                    sos_steady(zi_unit, zi, c, v)
                    pending[c] = 0
            else:
                # NaN runs through this lane's state; the lane restarts at its next good sample.
                pending[c] = 1
                bad += 1
                v = NAN
            w[c] = v
        sos_sections(sos, zi, w, n_channels)
        for c in range(n_channels):
            v = w[c]
            if not _finite(v):
                if not pending[c]:
                    pending[c] = 1
                    bad += 1
                v = NAN
            if i == next_out:
                y[c, j] = v
        if i == next_out:
            j += 1
            next_out += step
    return bad
