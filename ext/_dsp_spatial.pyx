# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Spatial filter kernels: a few-channel weighted sum without copying the used rows, and the
non-finite check of an output computed elsewhere (BLAS). ``closedloop.dsp.spatial`` decides
which to use."""

from libc.math cimport NAN

from _dsp_sos cimport _finite


def weighted_rows(const double[:, ::1] weights, const Py_ssize_t[::1] rows,
                  const double[:, ::1] x, double[:, ::1] out) -> int:
    """``out[o] = sum_k weights[o, k] * x[rows[k]]``; non-finite results become NaN and are
    counted (the return value)."""
    cdef Py_ssize_t n_out = weights.shape[0]
    cdef Py_ssize_t n_used = weights.shape[1]
    cdef Py_ssize_t n = x.shape[1]
    cdef Py_ssize_t o, k, i
    cdef Py_ssize_t bad = 0
    cdef double w
    cdef const double* row
    cdef double* dst
    with nogil:
        for o in range(n_out):
            dst = &out[o, 0]
            for i in range(n):
                dst[i] = 0.0
            for k in range(n_used):
                w = weights[o, k]
                row = &x[rows[k], 0]
                for i in range(n):
                    dst[i] += w * row[i]
            for i in range(n):
                if not _finite(dst[i]):
                    dst[i] = NAN
                    bad += 1
    return bad


def mark_bad(double[:, ::1] out) -> int:
    """Replace non-finite values of ``out`` by NaN; return how many there were."""
    cdef Py_ssize_t r, i
    cdef Py_ssize_t bad = 0
    with nogil:
        for r in range(out.shape[0]):
            for i in range(out.shape[1]):
                if not _finite(out[r, i]):
                    out[r, i] = NAN
                    bad += 1
    return bad
