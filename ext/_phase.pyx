# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Phase estimation kernels: they trust their inputs; closedloop.estimators validates and owns state."""

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, atan2, floor, hypot, isfinite, isinf, sqrt


cdef inline void _complex_dot(const double[::1] x, Py_ssize_t start,
                              const double[::1] w_re, const double[::1] w_im,
                              double* out_re, double* out_im) noexcept nogil:
    """(out_re, out_im) = sum_k w[k] * x[start + k] over the length of w."""
    cdef Py_ssize_t k
    cdef double acc_re = 0.0
    cdef double acc_im = 0.0
    cdef double v
    for k in range(w_re.shape[0]):
        v = x[start + k]
        acc_re += w_re[k] * v
        acc_im += w_im[k] * v
    out_re[0] = acc_re
    out_im[0] = acc_im


cpdef void complex_fir(const double[::1] buf, Py_ssize_t end, Py_ssize_t n_out,
                const double[::1] w_re, const double[::1] w_im,
                double[::1] out_re, double[::1] out_im) noexcept nogil:
    """out[j] = sum_k w[k] * buf[end - n_out + j + 1 - L + k] for j < n_out (L = len(w)).

    ``buf[end]`` is the newest sample; the oldest weight multiplies the oldest sample.
    """
    cdef Py_ssize_t L = w_re.shape[0]
    cdef Py_ssize_t j
    for j in range(n_out):
        _complex_dot(buf, end - n_out + j + 2 - L, w_re, w_im, &out_re[j], &out_im[j])


cpdef void fir_valid(const double[::1] x, const double[::1] h, double[::1] out) noexcept nogil:
    """Valid-mode correlation: out[i] = sum_k h[k] * x[i + k], len(out) = len(x) - len(h) + 1."""
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t m = h.shape[0]
    cdef Py_ssize_t i, k
    cdef double acc
    for i in range(n):
        acc = 0.0
        for k in range(m):
            acc += h[k] * x[i + k]
        out[i] = acc


cpdef void autocorr(const double[::1] x, double[::1] r) noexcept nogil:
    """Biased autocorrelation r[k] = sum_n x[n] x[n+k] / N for k < len(r) (Yule-Walker)."""
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t p = r.shape[0]
    cdef Py_ssize_t i, k
    cdef double acc
    for k in range(p):
        acc = 0.0
        for i in range(n - k):
            acc += x[i] * x[i + k]
        r[k] = acc / n


cpdef double levinson(const double[::1] r, double[::1] a, double[::1] tmp) noexcept nogil:
    """Levinson-Durbin recursion on autocorrelation r[0..p].

    Writes predictor coefficients a[0..p-1] with x[n] ~ sum_k a[k] x[n-1-k]; returns the
    final prediction-error power (<= 0 when r is degenerate; a is then left at zero).
    """
    cdef Py_ssize_t p = a.shape[0]
    cdef Py_ssize_t i, k
    cdef double err = r[0]
    cdef double acc, refl
    for k in range(p):
        a[k] = 0.0
    if err <= 0.0:
        return 0.0
    for i in range(p):
        acc = r[i + 1]
        for k in range(i):
            acc -= a[k] * r[i - k]
        refl = acc / err
        for k in range(i):
            tmp[k] = a[k] - refl * a[i - 1 - k]
        for k in range(i):
            a[k] = tmp[k]
        a[i] = refl
        err *= (1.0 - refl * refl)
        if err <= 0.0:
            return err
    return err


cpdef double burg(const double[::1] x, double[::1] a, double[::1] f, double[::1] b,
         double[::1] tmp) noexcept nogil:
    """Burg's method: predictor a[0..p-1] with x[n] ~ sum_k a[k] x[n-1-k]; returns error power.

    ``f`` and ``b`` are work arrays of len(x); ``tmp`` of len(a).
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t p = a.shape[0]
    cdef Py_ssize_t m, i, k
    cdef double num, den, refl, fi, err = 0.0
    for i in range(n):
        f[i] = x[i]
        b[i] = x[i]
        err += x[i] * x[i]
    err /= n
    for k in range(p):
        a[k] = 0.0
    for m in range(p):
        num = 0.0
        den = 0.0
        for i in range(m + 1, n):
            num += f[i] * b[i - 1]
            den += f[i] * f[i] + b[i - 1] * b[i - 1]
        if den <= 0.0:
            return 0.0
        refl = 2.0 * num / den
        for k in range(m):
            tmp[k] = a[k] - refl * a[m - 1 - k]
        for k in range(m):
            a[k] = tmp[k]
        a[m] = refl
        for i in range(n - 1, m, -1):
            fi = f[i]
            f[i] = fi - refl * b[i - 1]
            b[i] = b[i - 1] - refl * fi
        err *= (1.0 - refl * refl)
    return err


cpdef void ar_extend(double[::1] y, Py_ssize_t n_known, const double[::1] a) noexcept nogil:
    """Fill y[n_known:] by iterating the AR predictor a over the values before each point."""
    cdef Py_ssize_t n = y.shape[0]
    cdef Py_ssize_t p = a.shape[0]
    cdef Py_ssize_t i, k
    cdef double acc
    for i in range(n_known, n):
        acc = 0.0
        for k in range(p):
            acc += a[k] * y[i - 1 - k]
        y[i] = acc


cpdef void wiener_run(const double[::1] x, double[::1] hist, Py_ssize_t[::1] pos,
                      const double[::1] w_re, const double[::1] w_im,
                      const double[::1] t_re, const double[::1] t_im,
                      double[::1] zr_re, double[::1] zr_im,
                      double[::1] cr_re, double[::1] cr_im,
                      double[::1] tr_re, double[::1] tr_im,
                      double[::1] acc, double[::1] grid_re, double[::1] grid_im,
                      Py_ssize_t delay, double keep, bint adapt) noexcept nogil:
    """Advance the Wiener estimator by the samples of ``x``, one sample at a time.

    ``hist`` is a doubled ring (each sample at ``i`` and ``i + H``, ``H = len(hist) // 2``);
    ``pos[0]`` is the newest sample's ring index, ``pos[1]`` the samples seen since reset.
    Sample ``n`` (counted from the reset) lives at ``n % R`` of the rings ``zr`` (raw estimate
    ``sum w x``), ``cr`` (estimate rotated by the tracked rotation of that moment) and ``tr``
    (the zero-phase truth, known ``delay`` samples late). With ``adapt``, every sample whose
    truth becomes known updates, with forgetting factor ``keep``: the rotation accumulator
    ``acc`` (truth times conjugate raw estimate) and the grid of the remaining error against
    the rotated estimate's phase (``len(grid)`` bins over (-180, 180], linear interpolation).
    Missing values are NaN. The result depends on the samples only, not on how they are chunked.
    """
    cdef Py_ssize_t H = hist.shape[0] // 2
    cdef Py_ssize_t L = w_re.shape[0]
    cdef Py_ssize_t T = t_re.shape[0]
    cdef Py_ssize_t R = zr_re.shape[0]
    cdef Py_ssize_t G = grid_re.shape[0]
    cdef Py_ssize_t i, k, idx, n, kk, b0, b1
    cdef double a_re, a_im, mag, u_re, u_im, pr, pi_, er, ei, cre, cim, posb, frac
    cdef double gain = 1.0 - keep
    cdef double step = 360.0 / G
    cdef double nan = NAN
    for i in range(x.shape[0]):
        idx = pos[0] + 1
        if idx >= H:
            idx = 0
        hist[idx] = x[i]
        hist[idx + H] = x[i]
        pos[0] = idx
        pos[1] += 1
        n = pos[1] - 1
        # the truth for sample n - delay first: the rotation then includes everything known
        if adapt and pos[1] >= T:
            _complex_dot(hist, idx + H - T + 1, t_re, t_im, &a_re, &a_im)
            kk = (n - delay) % R
            tr_re[kk] = a_re
            tr_im[kk] = a_im
            er = zr_re[kk]
            ei = zr_im[kk]
            if er == er and ei == ei:
                # rotation: mean of truth * conj(raw estimate)
                pr = a_re * er + a_im * ei
                pi_ = a_im * er - a_re * ei
                acc[0] = keep * acc[0] + gain * pr
                acc[1] = keep * acc[1] + gain * pi_
            cre = cr_re[kk]
            cim = cr_im[kk]
            if cre == cre and cim == cim:
                # remaining error as a function of the rotated estimate's phase
                pr = a_re * cre + a_im * cim
                pi_ = a_im * cre - a_re * cim
                posb = (atan2(cim, cre) * 57.29577951308232 + 180.0) / step
                b0 = <Py_ssize_t>floor(posb)
                frac = posb - b0
                b0 = b0 % G
                b1 = (b0 + 1) % G
                for k in range(G):
                    grid_re[k] *= keep
                    grid_im[k] *= keep
                grid_re[b0] += gain * (1.0 - frac) * pr
                grid_im[b0] += gain * (1.0 - frac) * pi_
                grid_re[b1] += gain * frac * pr
                grid_im[b1] += gain * frac * pi_
        kk = n % R
        if pos[1] >= L:
            _complex_dot(hist, idx + H - L + 1, w_re, w_im, &a_re, &a_im)
            zr_re[kk] = a_re
            zr_im[kk] = a_im
            mag = sqrt(acc[0] * acc[0] + acc[1] * acc[1])
            if mag > 0.0:
                u_re = acc[0] / mag
                u_im = acc[1] / mag
            else:
                u_re = 1.0
                u_im = 0.0
            cr_re[kk] = a_re * u_re - a_im * u_im
            cr_im[kk] = a_re * u_im + a_im * u_re
        else:
            zr_re[kk] = nan
            zr_im[kk] = nan
            cr_re[kk] = nan
            cr_im[kk] = nan
        # the truth slot of sample n is written delay samples later
        if adapt:
            tr_re[kk] = nan
            tr_im[kk] = nan


cpdef void horizon_predict(const double[::1] hist, Py_ssize_t start,
                           const double[:, ::1] w_re, const double[:, ::1] w_im,
                           Py_ssize_t k0, Py_ssize_t k1, double u_re, double u_im,
                           double[::1] out_re, double[::1] out_im) noexcept nogil:
    """out[k - k0] = u * sum_j w[k, j] * hist[start + j] for k0 <= k < k1 (one complex FIR per
    prediction horizon over the same contiguous window; ``u`` a complex gain)."""
    cdef Py_ssize_t L = w_re.shape[1]
    cdef Py_ssize_t k, j
    cdef double acc_re, acc_im, v
    for k in range(k0, k1):
        acc_re = 0.0
        acc_im = 0.0
        for j in range(L):
            v = hist[start + j]
            acc_re += w_re[k, j] * v
            acc_im += w_im[k, j] * v
        out_re[k - k0] = acc_re * u_re - acc_im * u_im
        out_im[k - k0] = acc_re * u_im + acc_im * u_re


cpdef double first_crossing(const double[::1] z_re, const double[::1] z_im, Py_ssize_t n,
                            double aim_re, double aim_im, double lo, double hi) noexcept nogil:
    """Position (index units, fractional) of the first upward crossing of the phase ``aim`` by
    the trajectory ``z[0 .. n-1]`` inside ``[lo, hi]``, or NaN.

    The phase relative to ``aim`` is taken as linear between neighbouring points (their step
    wrapped into (-pi, pi]); a crossing is where it passes upwards through 0.
    """
    cdef Py_ssize_t j
    cdef double prev, cur, d, pos
    cdef double two_pi = 6.283185307179586
    cdef double pi = 3.141592653589793
    if n < 2:
        return NAN
    prev = atan2(z_im[0] * aim_re - z_re[0] * aim_im, z_re[0] * aim_re + z_im[0] * aim_im)
    for j in range(1, n):
        cur = atan2(z_im[j] * aim_re - z_re[j] * aim_im, z_re[j] * aim_re + z_im[j] * aim_im)
        d = cur - prev
        if d > pi:
            d -= two_pi
        elif d <= -pi:
            d += two_pi
        if prev <= 0.0 and d > 0.0 and prev + d > 0.0:
            pos = (j - 1) + (-prev) / d
            if pos > hi:
                return NAN
            if pos >= lo:
                return pos
        prev = cur
    return NAN


# -- the Wiener estimator's kernel, its arrays bound once ---------------------------------------

cdef enum:
    _BLOCK = 16  # most samples whose dot products are computed side by side (independent sums)
    _PAD = 16  # values after the doubled ring that the 4-wide path may read (never used)


cdef extern from *:
    """
    /* closedloop: the side-by-side dot products in 4-wide vectors where the CPU has AVX2.
       Per lane exactly the scalar operations (product, then sum; no fused multiply-add: the
       avx2 target does not enable FMA), so the results are the same bits as the scalar path. */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    typedef double cl_v4d __attribute__((vector_size(32)));
    typedef double cl_v4du __attribute__((vector_size(32), aligned(8)));
    #define CL_DOTS(NV)                                                                 \
        {                                                                               \
            cl_v4d ar[NV], ai[NV];                                                      \
            for (int v = 0; v < NV; v++) { ar[v] = (cl_v4d){0.0, 0.0, 0.0, 0.0};        \
                                           ai[v] = ar[v]; }                             \
            for (Py_ssize_t k = 0; k < L; k++) {                                        \
                cl_v4d a = (cl_v4d){wr[k], wr[k], wr[k], wr[k]};                        \
                cl_v4d b = (cl_v4d){wi[k], wi[k], wi[k], wi[k]};                        \
                for (int v = 0; v < NV; v++) {                                          \
                    cl_v4d xv = *(const cl_v4du*)(x + k + 4 * v);                       \
                    ar[v] = ar[v] + a * xv;                                             \
                    ai[v] = ai[v] + b * xv;                                             \
                }                                                                       \
            }                                                                           \
            for (int v = 0; v < NV; v++)                                                \
                for (int j = 0; j < 4; j++) { ore[4 * v + j] = ar[v][j];                \
                                              oim[4 * v + j] = ai[v][j]; }              \
        }
    __attribute__((target("avx2"), noinline))
    static void cl_dots4(const double* x, Py_ssize_t n_out, const double* wr,
                         const double* wi, Py_ssize_t L, double* ore, double* oim) {
        /* n_out <= 16; writes 4 * ceil(n_out / 4) outputs, reading that many windows */
        switch ((n_out + 3) / 4) {
            case 1: CL_DOTS(1) break;
            case 2: CL_DOTS(2) break;
            case 3: CL_DOTS(3) break;
            default: CL_DOTS(4) break;
        }
    }
    static int cl_have_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    }
    #else
    static void cl_dots4(const double* x, Py_ssize_t n_out, const double* wr,
                         const double* wi, Py_ssize_t L, double* ore, double* oim) {}
    static int cl_have_avx2(void) { return 0; }
    #endif
    """
    void cl_dots4(const double* x, Py_ssize_t n_out, const double* wr, const double* wi,
                  Py_ssize_t L, double* ore, double* oim) noexcept nogil
    int cl_have_avx2() noexcept nogil


cnp.import_array()

cdef bint _have_avx2 = cl_have_avx2()
PAD = _PAD


cdef inline void _dots_side_by_side(const double* x, Py_ssize_t n_out, const double* w_re,
                                    const double* w_im, Py_ssize_t L, double* out_re,
                                    double* out_im) noexcept nogil:
    """out[j] = sum_k w[k] * x[j + k] for j < n_out, each sum in the order k = 0 .. L-1.

    Exactly the operations of :func:`_complex_dot` for each output (start at 0.0, add
    ``w[k] * x[j + k]`` for ascending k), so the results are bit-identical; but the sums of
    up to ``_BLOCK`` neighbouring outputs advance together, independent of each other, so the
    compiler keeps them in vector registers instead of waiting on one addition at a time.
    """
    cdef double a_re[_BLOCK]
    cdef double a_im[_BLOCK]
    cdef double wr, wi, v
    cdef Py_ssize_t j0 = 0
    cdef Py_ssize_t j, k
    cdef const double* xk
    while n_out - j0 >= 8:
        for j in range(8):
            a_re[j] = 0.0
            a_im[j] = 0.0
        for k in range(L):
            wr = w_re[k]
            wi = w_im[k]
            xk = x + j0 + k
            for j in range(8):
                a_re[j] = a_re[j] + wr * xk[j]
                a_im[j] = a_im[j] + wi * xk[j]
        for j in range(8):
            out_re[j0 + j] = a_re[j]
            out_im[j0 + j] = a_im[j]
        j0 += 8
    if n_out - j0 >= 4:
        for j in range(4):
            a_re[j] = 0.0
            a_im[j] = 0.0
        for k in range(L):
            wr = w_re[k]
            wi = w_im[k]
            xk = x + j0 + k
            for j in range(4):
                a_re[j] = a_re[j] + wr * xk[j]
                a_im[j] = a_im[j] + wi * xk[j]
        for j in range(4):
            out_re[j0 + j] = a_re[j]
            out_im[j0 + j] = a_im[j]
        j0 += 4
    if n_out - j0 >= 2:
        for j in range(2):
            a_re[j] = 0.0
            a_im[j] = 0.0
        for k in range(L):
            wr = w_re[k]
            wi = w_im[k]
            xk = x + j0 + k
            for j in range(2):
                a_re[j] = a_re[j] + wr * xk[j]
                a_im[j] = a_im[j] + wi * xk[j]
        for j in range(2):
            out_re[j0 + j] = a_re[j]
            out_im[j0 + j] = a_im[j]
        j0 += 2
    if n_out - j0 >= 1:
        a_re[0] = 0.0
        a_im[0] = 0.0
        for k in range(L):
            v = x[j0 + k]
            a_re[0] = a_re[0] + w_re[k] * v
            a_im[0] = a_im[0] + w_im[k] * v
        out_re[j0] = a_re[0]
        out_im[j0] = a_im[0]


cdef class WienerKernel:
    """:func:`wiener_run` with its arrays bound once (``closedloop.estimators.wiener`` owns them).

    :meth:`run` gives bit-identical results and state to ``wiener_run`` over the same samples,
    however they are chunked. It differs in how it gets there: the samples of a chunk go into
    the history ring first (the newer copy; the older copy after the dot products, so that no
    window still being read is overwritten), then the estimate's and the truth's dot products of
    up to ``_BLOCK`` consecutive samples are computed side by side (their windows are consecutive
    in the doubled ring), then the per-sample recursion (rotation, grid, rings) runs over the
    chunk in sample order with those values. A chunk is taken in pieces that do not wrap the ring.
    """

    cdef double[::1] hist
    cdef Py_ssize_t H
    cdef bint wide
    cdef Py_ssize_t[::1] pos
    cdef const double[::1] w_re, w_im, t_re, t_im
    cdef double[:, ::1] rings
    cdef double[::1] acc, grid_re, grid_im
    cdef Py_ssize_t delay
    cdef double keep
    cdef bint adapt
    cdef double z_re[_BLOCK]
    cdef double z_im[_BLOCK]
    cdef double d_re[_BLOCK]
    cdef double d_im[_BLOCK]
    cdef Py_ssize_t n_taps, lag
    cdef double sfreq, low_hz, high_hz, center_hz

    def bind_answers(self, Py_ssize_t n_taps, Py_ssize_t lag, double sfreq, double low_hz,
                     double high_hz, double center_hz):
        """The constants :meth:`step` computes the answers with (the estimator's)."""
        self.n_taps = n_taps
        self.lag = lag
        self.sfreq = sfreq
        self.low_hz = low_hz
        self.high_hz = high_hz
        self.center_hz = center_hz

    def step(self, object x, double c_re, double c_im):
        """:meth:`run`, then the answers at the newest sample: ``(phase_deg, amplitude,
        frequency_hz)``, or None before the first full window; False (nothing done) unless
        ``x`` is a non-empty, C-contiguous, 1-D float64 ndarray of finite values (the caller
        then takes the general path: conversion, non-finite samples).

        The arithmetic of the estimator's Python it replaces, operation for operation (the
        same bits): the rotated estimate times the correction ``c`` (a complex product), its
        angle in degrees and magnitude (as ``abs`` of a complex), and the frequency from the
        raw estimates' phase step over ``lag`` samples, clamped to the band (the band's centre
        until ``lag`` more samples are there).
        """
        cdef Py_ssize_t count, newest, k, kt, R, i, n
        cdef double zr, zi, a_re, a_im, b_re, b_im, dzr, dzi, amp, freq
        cdef cnp.ndarray arr
        cdef const double* xp
        if not cnp.PyArray_Check(x):
            return False
        arr = <cnp.ndarray> x
        if (cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr)):
            return False
        n = cnp.PyArray_DIM(arr, 0)
        if n == 0:
            return False
        xp = <const double*> cnp.PyArray_DATA(arr)
        for i in range(n):
            if not isfinite(xp[i]):
                return False
        self._run(xp, n)
        count = self.pos[1]
        if count < self.n_taps:
            return None
        R = self.rings.shape[1]
        newest = count - 1
        k = newest % R
        a_re = self.rings[2, k]
        a_im = self.rings[3, k]
        zr = a_re * c_re - a_im * c_im
        zi = a_re * c_im + a_im * c_re
        if isfinite(zr) and isfinite(zi):
            amp = hypot(zr, zi)
        elif isinf(zr) or isinf(zi):
            amp = INFINITY
        else:
            amp = NAN
        if count >= self.n_taps + self.lag:
            kt = (newest - self.lag) % R
            a_re = self.rings[0, k]
            a_im = self.rings[1, k]
            b_re = self.rings[0, kt]
            b_im = -self.rings[1, kt]
            dzr = a_re * b_re - a_im * b_im
            dzi = a_re * b_im + a_im * b_re
            freq = atan2(dzi, dzr) * self.sfreq / (6.283185307179586 * <double>self.lag)
            # min(max(freq, low), high) as Python takes them (NaN passes through)
            if self.low_hz > freq:
                freq = self.low_hz
            if self.high_hz < freq:
                freq = self.high_hz
        else:
            freq = self.center_hz
        return (atan2(zi, zr) * 57.29577951308232, amp, freq)

    @property
    def vector_width(self) -> int:
        """Doubles per vector of the dot products' path: 4 (AVX2) or 2 (the compiler's SSE2)."""
        return 4 if self.wide else 2

    def __init__(self, double[::1] hist, Py_ssize_t span, Py_ssize_t[::1] pos,
                 const double[::1] w_re, const double[::1] w_im, const double[::1] t_re,
                 const double[::1] t_im, double[:, ::1] rings, double[::1] acc,
                 double[::1] grid_re, double[::1] grid_im, Py_ssize_t delay, double keep,
                 bint adapt, bint wide=True):
        """``hist`` is the doubled ring of ``span`` (``2 * span`` values) followed by
        :data:`PAD` values the kernel may read and never uses; ``rings`` has six rows: raw
        estimate (re, im), rotated estimate (re, im), delayed truth (re, im); the rest as
        :func:`wiener_run`. ``wide``: use the 4-wide vector path where the CPU has it (the
        same bits either way)."""
        self.hist = hist
        self.H = span
        self.wide = wide and _have_avx2
        self.pos = pos
        self.w_re = w_re
        self.w_im = w_im
        self.t_re = t_re
        self.t_im = t_im
        self.rings = rings
        self.acc = acc
        self.grid_re = grid_re
        self.grid_im = grid_im
        self.delay = delay
        self.keep = keep
        self.adapt = adapt

    def run(self, const double[::1] x):
        """Advance by the samples of ``x`` (C-contiguous float64)."""
        if x.shape[0]:
            self._run(&x[0], x.shape[0])

    cdef void _run(self, const double* x, Py_ssize_t n_x) noexcept nogil:
        cdef Py_ssize_t H = self.H
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t m, j, idx0
        cdef double* hist = &self.hist[0]
        while done < n_x:
            # a piece: at most _BLOCK samples, none past the ring's end
            idx0 = self.pos[0] + 1
            if idx0 >= H:
                idx0 = 0
            m = n_x - done
            if m > _BLOCK:
                m = _BLOCK
            if m > H - idx0:
                m = H - idx0
            for j in range(m):
                hist[idx0 + j + H] = x[done + j]
            self._piece(x + done, m, idx0, H)
            for j in range(m):
                hist[idx0 + j] = x[done + j]
            done += m

    cdef void _piece(self, const double* x, Py_ssize_t m, Py_ssize_t idx0,
                     Py_ssize_t H) noexcept nogil:
        cdef Py_ssize_t L = self.w_re.shape[0]
        cdef Py_ssize_t T = self.t_re.shape[0]
        cdef Py_ssize_t R = self.rings.shape[1]
        cdef Py_ssize_t G = self.grid_re.shape[0]
        cdef Py_ssize_t i, k, n, kk, b0, b1
        cdef double a_re, a_im, mag, u_re, u_im, pr, pi_, er, ei, cre, cim, posb, frac
        cdef double keep = self.keep
        cdef double gain = 1.0 - keep
        cdef double step = 360.0 / G
        cdef double nan = NAN
        cdef const double* hist = &self.hist[0]
        cdef double* zr_re = &self.rings[0, 0]
        cdef double* zr_im = &self.rings[1, 0]
        cdef double* cr_re = &self.rings[2, 0]
        cdef double* cr_im = &self.rings[3, 0]
        cdef double* tr_re = &self.rings[4, 0]
        cdef double* tr_im = &self.rings[5, 0]
        cdef double* acc = &self.acc[0]
        cdef double* grid_re = &self.grid_re[0]
        cdef double* grid_im = &self.grid_im[0]
        cdef Py_ssize_t seen = self.pos[1]
        # the windows of this piece's samples start at consecutive ring positions
        if self.adapt and seen + m >= T:
            if self.wide:
                cl_dots4(hist + idx0 + H - T + 1, m, &self.t_re[0], &self.t_im[0], T,
                         self.d_re, self.d_im)
            else:
                _dots_side_by_side(hist + idx0 + H - T + 1, m, &self.t_re[0], &self.t_im[0],
                                   T, self.d_re, self.d_im)
        if seen + m >= L:
            if self.wide:
                cl_dots4(hist + idx0 + H - L + 1, m, &self.w_re[0], &self.w_im[0], L,
                         self.z_re, self.z_im)
            else:
                _dots_side_by_side(hist + idx0 + H - L + 1, m, &self.w_re[0], &self.w_im[0],
                                   L, self.z_re, self.z_im)
        for i in range(m):
            seen += 1
            n = seen - 1
            # the truth for sample n - delay first: the rotation then includes everything known
            if self.adapt and seen >= T:
                a_re = self.d_re[i]
                a_im = self.d_im[i]
                kk = (n - self.delay) % R
                tr_re[kk] = a_re
                tr_im[kk] = a_im
                er = zr_re[kk]
                ei = zr_im[kk]
                if er == er and ei == ei:
                    pr = a_re * er + a_im * ei
                    pi_ = a_im * er - a_re * ei
                    acc[0] = keep * acc[0] + gain * pr
                    acc[1] = keep * acc[1] + gain * pi_
                cre = cr_re[kk]
                cim = cr_im[kk]
                if cre == cre and cim == cim:
                    pr = a_re * cre + a_im * cim
                    pi_ = a_im * cre - a_re * cim
                    posb = (atan2(cim, cre) * 57.29577951308232 + 180.0) / step
                    b0 = <Py_ssize_t>floor(posb)
                    frac = posb - b0
                    b0 = b0 % G
                    b1 = (b0 + 1) % G
                    for k in range(G):
                        grid_re[k] *= keep
                        grid_im[k] *= keep
                    grid_re[b0] += gain * (1.0 - frac) * pr
                    grid_im[b0] += gain * (1.0 - frac) * pi_
                    grid_re[b1] += gain * frac * pr
                    grid_im[b1] += gain * frac * pi_
            kk = n % R
            if seen >= L:
                a_re = self.z_re[i]
                a_im = self.z_im[i]
                zr_re[kk] = a_re
                zr_im[kk] = a_im
                mag = sqrt(acc[0] * acc[0] + acc[1] * acc[1])
                if mag > 0.0:
                    u_re = acc[0] / mag
                    u_im = acc[1] / mag
                else:
                    u_re = 1.0
                    u_im = 0.0
                cr_re[kk] = a_re * u_re - a_im * u_im
                cr_im[kk] = a_re * u_im + a_im * u_re
            else:
                zr_re[kk] = nan
                zr_im[kk] = nan
                cr_re[kk] = nan
                cr_im[kk] = nan
            if self.adapt:
                tr_re[kk] = nan
                tr_im[kk] = nan
        self.pos[0] = idx0 + m - 1
        self.pos[1] = seen
