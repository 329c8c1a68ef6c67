# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Phase estimation kernels: they trust their inputs; closedloop.estimators validates and owns state."""

from libc.math cimport sqrt


cpdef void complex_fir(const double[::1] buf, Py_ssize_t end, Py_ssize_t n_out,
                const double[::1] w_re, const double[::1] w_im,
                double[::1] out_re, double[::1] out_im) noexcept nogil:
    """out[j] = sum_k w[k] * buf[end - n_out + j + 1 - L + k] for j < n_out (L = len(w)).

    ``buf[end]`` is the newest sample; the oldest weight multiplies the oldest sample.
    """
    cdef Py_ssize_t L = w_re.shape[0]
    cdef Py_ssize_t j, k, start
    cdef double acc_re, acc_im, v
    for j in range(n_out):
        start = end - n_out + j + 2 - L
        acc_re = 0.0
        acc_im = 0.0
        for k in range(L):
            v = buf[start + k]
            acc_re += w_re[k] * v
            acc_im += w_im[k] * v
        out_re[j] = acc_re
        out_im[j] = acc_im


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


cpdef void kalman_oscillators(const double[::1] x, double[::1] state, double[::1] cov,
                       const double[::1] rot, const double[::1] q, double r,
                       double[::1] out_re, double[::1] out_im) noexcept nogil:
    """Kalman filter of a sum of damped rotating oscillators observed through their real parts.

    Wodeyar et al. 2021: each oscillator j has a 2-D state rotated by ``rot[4j:4j+4]``
    (damping times rotation, row major) with process noise variance ``q[j]``; the observation
    is the sum of the first components plus white noise of variance ``r``. ``state`` (2m) and
    ``cov`` (2m x 2m, row major) are updated in place; out_* get the first oscillator's state
    after each sample.
    """
    cdef Py_ssize_t m = q.shape[0]
    cdef Py_ssize_t d = 2 * m
    cdef Py_ssize_t t, i, j, o, oi, oj
    cdef double s0, s1, innov, s_var, g
    cdef double c00, c01, c10, c11, r00, r01, r10, r11
    cdef double pc[64]   # P h (observation column), d <= 64
    for t in range(x.shape[0]):
        # predict: state and covariance, block-diagonal rotation
        for o in range(m):
            r00 = rot[4 * o]
            r01 = rot[4 * o + 1]
            r10 = rot[4 * o + 2]
            r11 = rot[4 * o + 3]
            s0 = state[2 * o]
            s1 = state[2 * o + 1]
            state[2 * o] = r00 * s0 + r01 * s1
            state[2 * o + 1] = r10 * s0 + r11 * s1
        # cov = R cov R^T + Q: left multiply rows then right multiply columns
        for o in range(m):
            r00 = rot[4 * o]
            r01 = rot[4 * o + 1]
            r10 = rot[4 * o + 2]
            r11 = rot[4 * o + 3]
            for j in range(d):
                c00 = cov[(2 * o) * d + j]
                c10 = cov[(2 * o + 1) * d + j]
                cov[(2 * o) * d + j] = r00 * c00 + r01 * c10
                cov[(2 * o + 1) * d + j] = r10 * c00 + r11 * c10
        for o in range(m):
            r00 = rot[4 * o]
            r01 = rot[4 * o + 1]
            r10 = rot[4 * o + 2]
            r11 = rot[4 * o + 3]
            for i in range(d):
                c00 = cov[i * d + 2 * o]
                c01 = cov[i * d + 2 * o + 1]
                cov[i * d + 2 * o] = c00 * r00 + c01 * r01
                cov[i * d + 2 * o + 1] = c00 * r10 + c01 * r11
            cov[(2 * o) * d + 2 * o] += q[o]
            cov[(2 * o + 1) * d + 2 * o + 1] += q[o]
        # update with y = sum_o state[2o] + noise
        innov = x[t]
        for o in range(m):
            innov -= state[2 * o]
        for i in range(d):
            pc[i] = 0.0
            for o in range(m):
                pc[i] += cov[i * d + 2 * o]
        s_var = r
        for o in range(m):
            s_var += pc[2 * o]
        for i in range(d):
            g = pc[i] / s_var
            state[i] += g * innov
        for i in range(d):
            for j in range(d):
                cov[i * d + j] -= pc[i] * pc[j] / s_var
        out_re[t] = state[0]
        out_im[t] = state[1]
