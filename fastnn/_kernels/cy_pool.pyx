"""Pooling kernels of the cython backend (NHWC, normalised arguments; docs/KERNELS.md).

Pooling is memory-bound, so each kernel is one pass over the data with the innermost
loop running over the contiguous channels of one pixel (branch-free, so the compiler
vectorises it). Max pooling records, per output value, the position of its maximum
inside the window (``i * kw + j``, int32; -1 for an empty window); backward replays
the window taps and routes each gradient to the tap whose position matches, which
needs no integer division and no scattered stores.

Work is handed out per output row (forward, and backward when the windows of
different rows cannot overlap) or per image (backward otherwise), dynamically so a
thread slowed by a busy machine holds nobody up; every output value and every input
cell is computed by one thread in a fixed order, so results do not depend on the
schedule.
"""
import numpy as np

from .._arena import empty as _empty

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastnn_pool_openmp(void) { return 1; }
    static int fastnn_pool_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastnn_pool_openmp(void) { return 0; }
    static int fastnn_pool_max_threads(void) { return 1; }
    #endif
    """
    int fastnn_pool_openmp() noexcept nogil
    int fastnn_pool_max_threads() noexcept nogil


ctypedef int index_t

cdef int _num_threads = max(1, fastnn_pool_max_threads())


def set_num_threads(n):
    """Use n OpenMP threads in these kernels."""
    global _num_threads
    _num_threads = max(1, int(n))


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fastnn_pool_openmp())


cdef struct Geometry:
    Py_ssize_t N, H, W, C, Ho, Wo
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    bint count_include_pad


cdef Geometry _geometry(tuple x_shape, tuple ksize, tuple stride, tuple pads, tuple dilation,
                        tuple out_hw, bint count_include_pad):
    cdef Geometry g
    g.N, g.H, g.W, g.C = x_shape
    g.Ho, g.Wo = out_hw
    g.kh, g.kw = ksize
    g.sh, g.sw = stride
    g.ph, g.pw = pads
    g.dh, g.dw = dilation
    g.count_include_pad = count_include_pad
    return g


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    if a <= 0:
        return -((-a) // b)
    return (a + b - 1) // b


cdef inline void _taps(Py_ssize_t start, Py_ssize_t k, Py_ssize_t d, Py_ssize_t size,
                       Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The taps t in [lo, hi) with 0 <= start + t * d < size."""
    cdef Py_ssize_t a = _ceil_div(-start, d), b = _ceil_div(size - start, d)
    if a < 0:
        a = 0
    if b > k:
        b = k
    if a > b:
        a = b
    lo[0] = a
    hi[0] = b


cdef inline bint _rows_disjoint(const Geometry* g) noexcept nogil:
    """True when windows of different output rows never share an input row."""
    return (g.kh - 1) * g.dh + 1 <= g.sh


# ---------------------------------------------------------------------------
# Max pooling

cdef void _max_forward(const floating* x, floating* y, index_t* arg, const Geometry* g,
                       int nthreads) noexcept nogil:
    cdef Py_ssize_t q
    for q in prange(g.N * g.Ho, nogil=True, schedule="dynamic", num_threads=nthreads):
        _max_forward_row(x, y, arg, g, q)


cdef void _max_forward_row(const floating* x, floating* y, index_t* arg, const Geometry* g,
                           Py_ssize_t q) noexcept nogil:
    """Output row q = n * Ho + oh."""
    cdef Py_ssize_t C = g.C
    cdef Py_ssize_t n = q // g.Ho, oh = q % g.Ho
    cdef Py_ssize_t ow, i, j, c, ilo, ihi, jlo, jhi, iw0
    cdef Py_ssize_t ih0 = oh * g.sh - g.ph
    cdef const floating* ximg = x + n * g.H * g.W * C
    cdef floating* yp
    cdef index_t* ap
    cdef const floating* xp
    cdef floating v, best
    cdef index_t k
    cdef bint take
    _taps(ih0, g.kh, g.dh, g.H, &ilo, &ihi)
    for ow in range(g.Wo):
        yp = y + (q * g.Wo + ow) * C
        ap = arg + (q * g.Wo + ow) * C
        iw0 = ow * g.sw - g.pw
        _taps(iw0, g.kw, g.dw, g.W, &jlo, &jhi)
        if ilo >= ihi or jlo >= jhi:
            for c in range(C):
                yp[c] = -INFINITY
                ap[c] = -1
            continue
        # the first cell inside the input seeds the maximum; later cells replace it
        # only when strictly larger or NaN (and the current maximum is not NaN), so
        # the first maximum in row-major window order wins
        xp = ximg + ((ih0 + ilo * g.dh) * g.W + iw0 + jlo * g.dw) * C
        k = <index_t>(ilo * g.kw + jlo)
        for c in range(C):
            yp[c] = xp[c]
            ap[c] = k
        for i in range(ilo, ihi):
            for j in range(jlo, jhi):
                if i == ilo and j == jlo:
                    continue
                xp = ximg + ((ih0 + i * g.dh) * g.W + iw0 + j * g.dw) * C
                k = <index_t>(i * g.kw + j)
                for c in range(C):
                    v = xp[c]
                    best = yp[c]
                    take = (not (v <= best)) & (best == best)
                    yp[c] = v if take else best
                    ap[c] = k if take else ap[c]


cdef void _max_backward(const floating* dy, const index_t* arg, floating* dx, const Geometry* g,
                        int nthreads) noexcept nogil:
    """dx (zeroed) += each window's gradient at its recorded tap."""
    cdef Py_ssize_t q
    if _rows_disjoint(g):
        for q in prange(g.N * g.Ho, nogil=True, schedule="dynamic", num_threads=nthreads):
            _max_backward_rows(dy, arg, dx, g, q // g.Ho, q % g.Ho, q % g.Ho + 1)
    else:
        for q in prange(g.N, nogil=True, schedule="dynamic", num_threads=nthreads):
            _max_backward_rows(dy, arg, dx, g, q, 0, g.Ho)


cdef void _max_backward_rows(const floating* dy, const index_t* arg, floating* dx,
                             const Geometry* g, Py_ssize_t n, Py_ssize_t oh0,
                             Py_ssize_t oh1) noexcept nogil:
    cdef Py_ssize_t C = g.C
    cdef Py_ssize_t oh, ow, i, j, c, ilo, ihi, jlo, jhi, ih0, iw0, r
    cdef floating* dimg = dx + n * g.H * g.W * C
    cdef floating* dp
    cdef const floating* gp
    cdef const index_t* ap
    cdef index_t k
    cdef floating gv
    # windows of one row overlap only when kw > sw (with unit dilation)
    cdef bint assign = g.dw == 1 and g.kw <= g.sw and _rows_disjoint(g)
    for oh in range(oh0, oh1):
        ih0 = oh * g.sh - g.ph
        _taps(ih0, g.kh, g.dh, g.H, &ilo, &ihi)
        for ow in range(g.Wo):
            r = (n * g.Ho + oh) * g.Wo + ow
            gp = dy + r * C
            ap = arg + r * C
            iw0 = ow * g.sw - g.pw
            _taps(iw0, g.kw, g.dw, g.W, &jlo, &jhi)
            for i in range(ilo, ihi):
                for j in range(jlo, jhi):
                    dp = dimg + ((ih0 + i * g.dh) * g.W + iw0 + j * g.dw) * C
                    k = <index_t>(i * g.kw + j)
                    # a select of loaded values, then an unconditional add: both
                    # compile branch-free (a conditional load or add does not)
                    if assign:
                        for c in range(C):
                            gv = gp[c]
                            dp[c] = gv if ap[c] == k else 0
                    else:
                        for c in range(C):
                            gv = gp[c]
                            dp[c] = dp[c] + (gv if ap[c] == k else 0)


# ---------------------------------------------------------------------------
# Average pooling (dilation is always 1)

cdef inline Py_ssize_t _divisor(const Geometry* g, Py_ssize_t h0, Py_ssize_t w0) noexcept nogil:
    """kh * kw clipped to the padded input (count_include_pad) or the count of real cells."""
    cdef Py_ssize_t h1, w1
    if g.count_include_pad:
        h1 = min(h0 + g.kh, g.H + g.ph)
        w1 = min(w0 + g.kw, g.W + g.pw)
    else:
        h1 = min(h0 + g.kh, g.H)
        w1 = min(w0 + g.kw, g.W)
        h0 = max(h0, 0)
        w0 = max(w0, 0)
    if h1 <= h0 or w1 <= w0:
        return 1  # unreachable for validated arguments; avoids a division by zero
    return (h1 - h0) * (w1 - w0)


cdef void _avg_forward(const floating* x, floating* y, const Geometry* g,
                       int nthreads) noexcept nogil:
    cdef Py_ssize_t q
    for q in prange(g.N * g.Ho, nogil=True, schedule="dynamic", num_threads=nthreads):
        _avg_forward_row(x, y, g, q)


cdef void _avg_forward_row(const floating* x, floating* y, const Geometry* g,
                           Py_ssize_t q) noexcept nogil:
    """Output row q = n * Ho + oh."""
    cdef Py_ssize_t C = g.C
    cdef Py_ssize_t n = q // g.Ho, oh = q % g.Ho
    cdef Py_ssize_t ow, i, j, c, ilo, ihi, jlo, jhi, iw0
    cdef Py_ssize_t ih0 = oh * g.sh - g.ph
    cdef const floating* ximg = x + n * g.H * g.W * C
    cdef floating* yp
    cdef const floating* xp
    cdef floating div
    _taps(ih0, g.kh, 1, g.H, &ilo, &ihi)
    for ow in range(g.Wo):
        yp = y + (q * g.Wo + ow) * C
        iw0 = ow * g.sw - g.pw
        _taps(iw0, g.kw, 1, g.W, &jlo, &jhi)
        div = <floating>_divisor(g, ih0, iw0)
        for c in range(C):
            yp[c] = 0
        for i in range(ilo, ihi):
            for j in range(jlo, jhi):
                xp = ximg + ((ih0 + i) * g.W + iw0 + j) * C
                for c in range(C):
                    yp[c] += xp[c]
        for c in range(C):
            yp[c] = yp[c] / div


cdef void _avg_backward_rows(const floating* dy, floating* dx, floating* scaled,
                             const Geometry* g, Py_ssize_t n, Py_ssize_t oh0,
                             Py_ssize_t oh1) noexcept nogil:
    cdef Py_ssize_t C = g.C
    cdef Py_ssize_t oh, ow, i, j, c, ilo, ihi, jlo, jhi, ih0, iw0
    cdef floating* dimg = dx + n * g.H * g.W * C
    cdef floating* dp
    cdef const floating* gp
    cdef floating div
    cdef bint assign = g.kw <= g.sw and _rows_disjoint(g)
    for oh in range(oh0, oh1):
        ih0 = oh * g.sh - g.ph
        _taps(ih0, g.kh, 1, g.H, &ilo, &ihi)
        for ow in range(g.Wo):
            gp = dy + ((n * g.Ho + oh) * g.Wo + ow) * C
            iw0 = ow * g.sw - g.pw
            _taps(iw0, g.kw, 1, g.W, &jlo, &jhi)
            div = <floating>_divisor(g, ih0, iw0)
            for c in range(C):
                scaled[c] = gp[c] / div
            for i in range(ilo, ihi):
                for j in range(jlo, jhi):
                    dp = dimg + ((ih0 + i) * g.W + iw0 + j) * C
                    if assign:
                        for c in range(C):
                            dp[c] = scaled[c]
                    else:
                        for c in range(C):
                            dp[c] += scaled[c]


cdef void _avg_backward(const floating* dy, floating* dx, floating* scratch, const Geometry* g,
                        int nthreads) noexcept nogil:
    """dx (zeroed) += each window's gradient / divisor over its cells; scratch: C per thread."""
    cdef Py_ssize_t q
    if _rows_disjoint(g):
        for q in prange(g.N * g.Ho, nogil=True, schedule="dynamic", num_threads=nthreads):
            _avg_backward_rows(dy, dx, scratch + threadid() * g.C, g, q // g.Ho, q % g.Ho, q % g.Ho + 1)
    else:
        for q in prange(g.N, nogil=True, schedule="dynamic", num_threads=nthreads):
            _avg_backward_rows(dy, dx, scratch + threadid() * g.C, g, q, 0, g.Ho)


# ---------------------------------------------------------------------------
# Kernels (docs/KERNELS.md)

cdef tuple _forward(const floating[:, :, :, ::1] x, bint is_max, Geometry g):
    dtype = np.float32 if floating is float else np.float64
    y_arr = _empty((g.N, g.Ho, g.Wo, g.C), dtype=dtype)
    arg_arr = _empty((g.N, g.Ho, g.Wo, g.C), dtype=np.int32) if is_max else None
    if y_arr.size == 0:
        return y_arr, arg_arr
    cdef floating[:, :, :, ::1] y = y_arr
    cdef index_t[:, :, :, ::1] arg
    cdef int nthreads = _num_threads
    if is_max:
        arg = arg_arr
        with nogil:
            _max_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &arg[0, 0, 0, 0], &g, nthreads)
    else:
        with nogil:
            _avg_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &g, nthreads)
    return y_arr, arg_arr


cdef object _backward(const floating[:, :, :, ::1] dy, object arg_arr, Geometry g):
    dtype = np.float32 if floating is float else np.float64
    dx_arr = _empty((g.N, g.H, g.W, g.C), dtype=dtype)
    dx_arr.fill(0)
    if dx_arr.size == 0 or dy.shape[0] * dy.shape[1] * dy.shape[2] * dy.shape[3] == 0:
        return dx_arr
    cdef floating[:, :, :, ::1] dx = dx_arr
    cdef const index_t[:, :, :, ::1] arg
    cdef floating[::1] scratch
    cdef int nthreads = _num_threads
    if arg_arr is not None:
        arg = arg_arr
        with nogil:
            _max_backward(&dy[0, 0, 0, 0], &arg[0, 0, 0, 0], &dx[0, 0, 0, 0], &g, nthreads)
    else:
        scratch = np.empty(max(nthreads, fastnn_pool_max_threads(), 1) * g.C, dtype=dtype)
        with nogil:
            _avg_backward(&dy[0, 0, 0, 0], &dx[0, 0, 0, 0], &scratch[0], &g, nthreads)
    return dx_arr


def pool2d_forward(x, mode, ksize, stride, pads, dilation, out_hw, count_include_pad):
    """y and the state for pool2d_backward (max: the argmax taps; avg: the geometry)."""
    cdef bint is_max = mode == "max"
    cdef Geometry g = _geometry(x.shape, ksize, stride, pads, dilation, out_hw, count_include_pad)
    if x.dtype == np.float32:
        y, arg = _forward[float](x, is_max, g)
    else:
        y, arg = _forward[double](x, is_max, g)
    state = (x.shape, arg, ksize, stride, pads, dilation, out_hw, bool(count_include_pad))
    return y, state


def pool2d_backward(dy, state):
    """dx: max routes to the recorded first maximum, avg spreads gradient / divisor."""
    x_shape, arg, ksize, stride, pads, dilation, out_hw, count_include_pad = state
    cdef Geometry g = _geometry(x_shape, ksize, stride, pads, dilation, out_hw, count_include_pad)
    if dy.dtype == np.float32:
        return _backward[float](dy, arg, g)
    return _backward[double](dy, arg, g)
