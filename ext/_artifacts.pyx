# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Artifact checks on the raw chunk in one pass: NaN/Inf and saturation per sample over the
used channels, and the running range of each used channel for the flat check; the over-limit
count of the derived signal. ``closedloop.engine.artifacts`` owns the state and the policy.

Chunks come in as ndarrays and are checked here for shape, dtype and memory order (cheaper per
call than acquiring typed memoryviews); an array that does not fit is refused with -1 and the
caller converts it.
"""

cimport numpy as cnp
from libc.math cimport fabs

cnp.import_array()


cdef inline bint _finite(double v) noexcept nogil:
    # False for NaN (v - v is NaN) and for +-Inf (Inf - Inf is NaN).
    return (v - v) == 0.0


cdef inline bint _usable(object x, Py_ssize_t ndim) noexcept:
    """``x`` is a C-contiguous float64 ndarray of ``ndim`` dimensions."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray> x
    return (
        cnp.PyArray_NDIM(arr) == ndim
        and cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE
        and cnp.PyArray_IS_C_CONTIGUOUS(arr)
    )


cdef class ArtifactKernel:
    """Bound ``rows`` (the used channels, intp) and the flat check's running ``acc_min`` and
    ``acc_max`` (one per used channel), all owned by the caller.

    Attributes
    ----------
    last_bad : int
        Index of the last bad sample of the last scanned chunk (-1: none).
    nonfinite : bool
        The last scanned chunk had a NaN or Inf on a used channel.
    """

    cdef const Py_ssize_t[::1] rows
    cdef double[::1] acc_min
    cdef double[::1] acc_max
    cdef Py_ssize_t n_channels
    cdef public Py_ssize_t last_bad
    cdef public bint nonfinite

    def __init__(self, const Py_ssize_t[::1] rows, double[::1] acc_min, double[::1] acc_max,
                 Py_ssize_t n_channels):
        self.rows = rows
        self.acc_min = acc_min
        self.acc_max = acc_max
        self.n_channels = n_channels
        self.last_bad = -1
        self.nonfinite = False

    def scan(self, object x, double saturation_uv, bint track_range) -> int:
        """Bad samples of ``x`` (n_channels, n): a used channel NaN/Inf, or at/above
        ``saturation_uv`` in magnitude (0: no saturation check). With ``track_range`` and no
        NaN/Inf, every used channel's min and max are folded into ``acc_min``/``acc_max``.
        Returns the count (sets ``last_bad`` and ``nonfinite``), or -1 when ``x`` is not a
        C-contiguous float64 (n_channels, n) array."""
        if not _usable(x, 2) or cnp.PyArray_DIM(<cnp.ndarray> x, 0) != self.n_channels:
            return -1
        cdef cnp.ndarray arr = <cnp.ndarray> x
        cdef const double* data = <const double*> cnp.PyArray_DATA(arr)
        cdef Py_ssize_t n = cnp.PyArray_DIM(arr, 1)
        cdef Py_ssize_t n_used = self.rows.shape[0]
        cdef Py_ssize_t i, r
        cdef Py_ssize_t n_bad = 0
        cdef Py_ssize_t last = -1
        cdef bint nonfinite = False
        cdef bint bad
        cdef bint check_sat = saturation_uv > 0
        cdef double v, lo, hi
        cdef const double* row
        with nogil:
            for i in range(n):
                bad = False
                for r in range(n_used):
                    v = data[self.rows[r] * n + i]
                    if not _finite(v):
                        nonfinite = True
                        bad = True
                    elif check_sat and fabs(v) >= saturation_uv:
                        bad = True
                if bad:
                    n_bad += 1
                    last = i
            if track_range and not nonfinite and n > 0:
                for r in range(n_used):
                    row = data + self.rows[r] * n
                    lo = self.acc_min[r]
                    hi = self.acc_max[r]
                    for i in range(n):
                        v = row[i]
                        if v < lo:
                            lo = v
                        if v > hi:
                            hi = v
                    self.acc_min[r] = lo
                    self.acc_max[r] = hi
        self.last_bad = last
        self.nonfinite = nonfinite
        return n_bad

    def mask(self, object x, double saturation_uv, cnp.ndarray out) -> int:
        """The per-sample verdict of :meth:`scan` (without touching the range) into ``out``
        (uint8, at least n long); returns the bad count, or -1 for an unusable ``x``/``out``."""
        if not _usable(x, 2) or cnp.PyArray_DIM(<cnp.ndarray> x, 0) != self.n_channels:
            return -1
        cdef cnp.ndarray arr = <cnp.ndarray> x
        cdef Py_ssize_t n = cnp.PyArray_DIM(arr, 1)
        if (cnp.PyArray_TYPE(out) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(out)
                or cnp.PyArray_NDIM(out) != 1 or cnp.PyArray_DIM(out, 0) < n):
            return -1
        cdef const double* data = <const double*> cnp.PyArray_DATA(arr)
        cdef unsigned char* flags = <unsigned char*> cnp.PyArray_DATA(out)
        cdef Py_ssize_t n_used = self.rows.shape[0]
        cdef Py_ssize_t i, r
        cdef Py_ssize_t n_bad = 0
        cdef bint bad
        cdef bint check_sat = saturation_uv > 0
        cdef double v
        with nogil:
            for i in range(n):
                bad = False
                for r in range(n_used):
                    v = data[self.rows[r] * n + i]
                    if not _finite(v) or (check_sat and fabs(v) >= saturation_uv):
                        bad = True
                flags[i] = bad
                n_bad += bad
        return n_bad


def count_over(object x, double limit) -> int:
    """How many values of the 1-D C-contiguous float64 ``x`` exceed ``limit`` in magnitude
    (NaN never does); -1 when ``x`` is not such an array."""
    if not _usable(x, 1):
        return -1
    cdef cnp.ndarray arr = <cnp.ndarray> x
    cdef const double* data = <const double*> cnp.PyArray_DATA(arr)
    cdef Py_ssize_t n = cnp.PyArray_DIM(arr, 0)
    cdef Py_ssize_t i
    cdef Py_ssize_t count = 0
    with nogil:
        for i in range(n):
            if fabs(data[i]) > limit:
                count += 1
    return count
