# cython: language_level=3
"""Shared inline kernel: cascaded second-order sections, direct form II transposed.

Included by ``_sosfilt.pyx`` (plain filtering), ``_decimate.pyx`` (filter, keep every
``step``-th output) and ``_dsp_envelope.pyx``. Trusts its inputs.
"""

from libc.math cimport NAN


cdef inline bint _finite(double v) noexcept nogil:
    # False for NaN (v - v is NaN) and for +-Inf (Inf - Inf is NaN).
    return (v - v) == 0.0


cdef inline void sos_steady(const double[:, ::1] zi_unit, double* z, double v,
                            Py_ssize_t n_sections) noexcept nogil:
    """State ``z`` (n_sections * 2) of a filter that has seen ``v`` for ever."""
    cdef Py_ssize_t s
    for s in range(n_sections):
        z[2 * s] = zi_unit[s, 0] * v
        z[2 * s + 1] = zi_unit[s, 1] * v


cdef inline double sos_step(const double[:, ::1] sos, double* z, double v,
                            Py_ssize_t n_sections) noexcept nogil:
    """One input sample through every section; ``sos`` rows are b0 b1 b2 1 a1 a2."""
    cdef Py_ssize_t s
    cdef double out, z0, z1
    for s in range(n_sections):
        z0 = z[2 * s]
        z1 = z[2 * s + 1]
        out = sos[s, 0] * v + z0
        z[2 * s] = sos[s, 1] * v - sos[s, 4] * out + z1
        z[2 * s + 1] = sos[s, 2] * v - sos[s, 5] * out
        v = out
    return v


cdef inline Py_ssize_t sos_run(const double[:, ::1] sos, const double[:, ::1] zi_unit,
                               double[:, :, ::1] zi, unsigned char[::1] pending,
                               const double[:, ::1] x, double[:, ::1] y,
                               Py_ssize_t start, Py_ssize_t step) noexcept nogil:
    """Filter every channel of ``x``; write sample ``start + j * step`` to ``y[:, j]``.

    A channel whose ``pending`` flag is set starts from the steady state of its next finite
    sample. A non-finite input (or output) gives NaN where it is kept, sets ``pending`` and
    counts as bad. Returns the number of bad values.
    """
    cdef Py_ssize_t n_channels = x.shape[0]
    cdef Py_ssize_t n = x.shape[1]
    cdef Py_ssize_t n_sections = sos.shape[0]
    cdef Py_ssize_t c, i, j, next_out
    cdef Py_ssize_t bad = 0
    cdef double v
    cdef double* z
    for c in range(n_channels):
        z = &zi[c, 0, 0]
        next_out = start
        j = 0
        for i in range(n):
            v = x[c, i]
            if _finite(v):
                if pending[c]:
                    sos_steady(zi_unit, z, v, n_sections)
                    pending[c] = 0
                v = sos_step(sos, z, v, n_sections)
                if not _finite(v):
                    pending[c] = 1
                    bad += 1
                    v = NAN
            else:
                pending[c] = 1
                bad += 1
                v = NAN
            if i == next_out:
                y[c, j] = v
                j += 1
                next_out += step
    return bad
