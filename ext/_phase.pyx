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
