# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Ring buffer kernels: copy a chunk in at the write index, copy the newest samples out.

The kernels trust their inputs; ``closedloop.dsp.ringbuffer`` checks shapes and bounds.
"""

from libc.string cimport memcpy


cdef inline void _copy_in(double[:, ::1] buf, const double[:, ::1] chunk, Py_ssize_t src,
                          Py_ssize_t dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(buf.shape[0]):
        memcpy(&buf[c, dst], &chunk[c, src], n * sizeof(double))


cdef inline void _copy_out(const double[:, ::1] buf, double[:, ::1] out, Py_ssize_t src,
                           Py_ssize_t dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(buf.shape[0]):
        memcpy(&out[c, dst], &buf[c, src], n * sizeof(double))


def ring_write(double[:, ::1] buf, const double[:, ::1] chunk, Py_ssize_t head) -> None:
    """Write ``chunk`` into ``buf`` starting at column ``head``, wrapping at the end.

    Only the last ``capacity`` samples of a longer chunk are written (at the position they
    would have reached had the chunk been written sample by sample).
    """
    cdef Py_ssize_t capacity = buf.shape[1]
    cdef Py_ssize_t n = chunk.shape[1]
    cdef Py_ssize_t src = 0
    cdef Py_ssize_t first
    if n == 0 or capacity == 0:
        return
    with nogil:
        if n > capacity:
            src = n - capacity
            head = (head + src) % capacity
            n = capacity
        first = capacity - head
        if first >= n:
            _copy_in(buf, chunk, src, head, n)
        else:
            _copy_in(buf, chunk, src, head, first)
            _copy_in(buf, chunk, src + first, 0, n - first)


def ring_read(const double[:, ::1] buf, double[:, ::1] out, Py_ssize_t start) -> None:
    """Copy ``out.shape[1]`` samples from ``buf`` beginning at column ``start`` (wrapping)."""
    cdef Py_ssize_t capacity = buf.shape[1]
    cdef Py_ssize_t n = out.shape[1]
    cdef Py_ssize_t first
    if n == 0:
        return
    with nogil:
        first = capacity - start
        if first >= n:
            _copy_out(buf, out, start, 0, n)
        else:
            _copy_out(buf, out, start, 0, first)
            _copy_out(buf, out, 0, first, n - first)
