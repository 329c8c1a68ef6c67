# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The engine's front end in one pass per sample: spatial filter (the direct weighted sum),
decimation (anti-alias filter, every ``factor``-th output kept), notch, high-pass and band
envelope, into the caller's output arrays.

Each stage does exactly the floating-point operations of its own kernel (``_dsp_spatial``
``weighted_rows``, ``_dsp_sos`` ``sos_run``, ``_dsp_envelope``), in the same order, on the same
state arrays, which stay owned by the stages' Python objects (``closedloop.engine.signal``
binds them here); running a chunk through this kernel or through the stages one by one gives
bit-identical outputs and state. The input is an ndarray checked here for shape, dtype and
memory order; the outputs are allocated by the caller with the right shapes.
"""

cimport numpy as cnp
from libc.math cimport cos, sin, sqrt, NAN

from _dsp_sos cimport _finite, sos_sections, sos_steady

cnp.import_array()


cdef inline bint _fits(object x, Py_ssize_t rows, Py_ssize_t cols) noexcept:
    """``x`` is a C-contiguous float64 ndarray of shape (rows, cols), cols < 0: any."""
    if not cnp.PyArray_Check(x):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray> x
    return (
        cnp.PyArray_NDIM(arr) == 2
        and cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE
        and cnp.PyArray_IS_C_CONTIGUOUS(arr)
        and cnp.PyArray_DIM(arr, 0) == rows
        and (cols < 0 or cnp.PyArray_DIM(arr, 1) == cols)
    )


cdef inline double _lane_in(double v, const double[:, ::1] zi_unit, double[:, :, ::1] zi,
                            unsigned char[::1] pending, Py_ssize_t c,
                            Py_ssize_t* bad) noexcept nogil:
    """``sos_run``'s input step for lane ``c``: restart a pending lane at a finite value; a
    non-finite value becomes NaN, sets ``pending`` and counts."""
    if _finite(v):
        if pending[c]:
            sos_steady(zi_unit, zi, c, v)
            pending[c] = 0
        return v
    pending[c] = 1
    bad[0] += 1
    return NAN


cdef inline double _lane_out(double v, unsigned char[::1] pending, Py_ssize_t c,
                             Py_ssize_t* bad) noexcept nogil:
    """``sos_run``'s output step for lane ``c``."""
    if not _finite(v):
        if not pending[c]:
            pending[c] = 1
            bad[0] += 1
        return NAN
    return v


cdef class ChainKernel:
    """Bound weights and state of the stages (see ``closedloop.engine.signal.SignalChain``).

    The counts of the last :meth:`run` (non-finite values per stage, as each stage's own kernel
    counts them) are in ``spatial_bad``, ``decimator_bad``, ``notch_bad``, ``highpass_bad`` and
    ``envelope_bad``.
    """

    cdef const double[:, ::1] weights
    cdef const Py_ssize_t[::1] rows
    cdef Py_ssize_t n_channels, n_out

    cdef bint has_dec
    cdef const double[:, ::1] dec_sos
    cdef const double[:, ::1] dec_zi_unit
    cdef double[:, :, ::1] dec_zi
    cdef unsigned char[::1] dec_pending

    cdef bint has_notch
    cdef const double[:, ::1] notch_sos
    cdef const double[:, ::1] notch_zi_unit
    cdef double[:, :, ::1] notch_zi
    cdef unsigned char[::1] notch_pending

    cdef const double[:, ::1] hp_sos
    cdef const double[:, ::1] hp_zi_unit
    cdef double[:, :, ::1] hp_zi
    cdef unsigned char[::1] hp_pending

    cdef const double[:, ::1] env_sos
    cdef const double[:, ::1] env_zi_unit
    cdef double[:, :, ::1] env_zi
    cdef unsigned char[::1] env_pending
    cdef double omega

    cdef double[::1] work  # 2 * n_out lanes of scratch

    cdef public Py_ssize_t spatial_bad, decimator_bad, notch_bad, highpass_bad, envelope_bad

    def __init__(self, const double[:, ::1] weights, const Py_ssize_t[::1] rows,
                 Py_ssize_t n_channels, tuple decimator, tuple notch, tuple highpass,
                 tuple envelope, double omega):
        """``decimator`` and ``notch``: ``(sos, zi_unit, zi, pending)`` or ``()`` for none;
        ``highpass`` and ``envelope`` likewise (always present; the envelope's state has
        ``2 * n_out`` lanes)."""
        self.weights = weights
        self.rows = rows
        self.n_channels = n_channels
        self.n_out = weights.shape[0]
        self.has_dec = len(decimator) > 0
        if self.has_dec:
            self.dec_sos, self.dec_zi_unit, self.dec_zi, self.dec_pending = decimator
        self.has_notch = len(notch) > 0
        if self.has_notch:
            self.notch_sos, self.notch_zi_unit, self.notch_zi, self.notch_pending = notch
        self.hp_sos, self.hp_zi_unit, self.hp_zi, self.hp_pending = highpass
        self.env_sos, self.env_zi_unit, self.env_zi, self.env_pending = envelope
        self.omega = omega
        import numpy as np
        self.work = np.zeros(2 * self.n_out, dtype=np.float64)

    def run(self, object x, object derived, object highpassed, object envelope,
            Py_ssize_t first, Py_ssize_t factor, long long env_index0) -> int:
        """Run ``x`` (n_channels, n) through the chain; keep input sample ``first + j * factor``
        (``first`` 0 and ``factor`` 1 without a decimator) as working sample ``j``, written to
        ``derived`` (notched), ``highpassed`` and ``envelope``, all (n_out, m) with ``m`` the
        number of kept samples. ``env_index0`` is the envelope's absolute index of working
        sample 0. Returns ``m``, or -1 when ``x`` or an output does not fit."""
        if not _fits(x, self.n_channels, -1):
            return -1
        cdef cnp.ndarray arr = <cnp.ndarray> x
        cdef Py_ssize_t n = cnp.PyArray_DIM(arr, 1)
        cdef Py_ssize_t m
        if factor < 1 or first < 0:
            return -1
        if self.has_dec:
            m = (n - first + factor - 1) // factor if n > first else 0
        else:
            if factor != 1 or first != 0:
                return -1
            m = n
        if (not _fits(derived, self.n_out, m) or not _fits(highpassed, self.n_out, m)
                or not _fits(envelope, self.n_out, m)):
            return -1
        cdef const double* xin = <const double*> cnp.PyArray_DATA(arr)
        cdef double* dout = <double*> cnp.PyArray_DATA(<cnp.ndarray> derived)
        cdef double* hout = <double*> cnp.PyArray_DATA(<cnp.ndarray> highpassed)
        cdef double* eout = <double*> cnp.PyArray_DATA(<cnp.ndarray> envelope)
        cdef Py_ssize_t n_out = self.n_out
        cdef Py_ssize_t n_used = self.rows.shape[0]
        cdef Py_ssize_t i, j, o, k
        cdef Py_ssize_t next_out = first
        cdef Py_ssize_t sp_bad = 0, dec_bad = 0, notch_bad = 0, hp_bad = 0, env_bad = 0
        cdef double acc, v, re, im, cs, sn, arg
        cdef double* w = &self.work[0]
        with nogil:
            j = 0
            for i in range(n):
                # spatial filter: out[o] = 0 + sum_k weights[o, k] * x[rows[k]], in k order
                for o in range(n_out):
                    acc = 0.0
                    for k in range(n_used):
                        acc += self.weights[o, k] * xin[self.rows[k] * n + i]
                    if not _finite(acc):
                        acc = NAN
                        sp_bad += 1
                    w[o] = acc
                if self.has_dec:
                    for o in range(n_out):
                        w[o] = _lane_in(w[o], self.dec_zi_unit, self.dec_zi, self.dec_pending,
                                        o, &dec_bad)
                    sos_sections(self.dec_sos, self.dec_zi, w, n_out)
                    for o in range(n_out):
                        w[o] = _lane_out(w[o], self.dec_pending, o, &dec_bad)
                    if i != next_out:
                        continue
                    next_out += factor
                # one working-rate sample in w[0:n_out]
                if self.has_notch:
                    for o in range(n_out):
                        w[o] = _lane_in(w[o], self.notch_zi_unit, self.notch_zi,
                                        self.notch_pending, o, &notch_bad)
                    sos_sections(self.notch_sos, self.notch_zi, w, n_out)
                    for o in range(n_out):
                        w[o] = _lane_out(w[o], self.notch_pending, o, &notch_bad)
                for o in range(n_out):
                    dout[o * m + j] = w[o]
                    w[o] = _lane_in(w[o], self.hp_zi_unit, self.hp_zi, self.hp_pending, o,
                                    &hp_bad)
                sos_sections(self.hp_sos, self.hp_zi, w, n_out)
                for o in range(n_out):
                    w[o] = _lane_out(w[o], self.hp_pending, o, &hp_bad)
                    hout[o * m + j] = w[o]
                # envelope: complex demodulation, the low-pass over in-phase and quadrature lanes
                arg = self.omega * <double>(env_index0 + j)
                cs = cos(arg)
                sn = sin(arg)
                for o in range(n_out):
                    v = w[o]
                    if _finite(v):
                        re = v * cs
                        im = -v * sn
                        if self.env_pending[o]:
                            sos_steady(self.env_zi_unit, self.env_zi, o, re)
                            sos_steady(self.env_zi_unit, self.env_zi, n_out + o, im)
                            self.env_pending[o] = 0
                    else:
                        self.env_pending[o] = 1
                        env_bad += 1
                        re = NAN
                        im = NAN
                    w[o] = re
                    w[n_out + o] = im
                sos_sections(self.env_sos, self.env_zi, w, 2 * n_out)
                for o in range(n_out):
                    re = w[o]
                    im = w[n_out + o]
                    v = 2.0 * sqrt(re * re + im * im)
                    if not _finite(v):
                        if not self.env_pending[o]:
                            self.env_pending[o] = 1
                            env_bad += 1
                        v = NAN
                    eout[o * m + j] = v
                j += 1
        self.spatial_bad = sp_bad
        self.decimator_bad = dec_bad
        self.notch_bad = notch_bad
        self.highpass_bad = hp_bad
        self.envelope_bad = env_bad
        return m
