"""Convolution kernels of the cython backend (NHWC, normalised arguments; docs/KERNELS.md).

The work is im2col + GEMM: NHWC makes every im2col row a few contiguous runs of
channels, so building it is a handful of memcpy calls per kernel row. The output
rows are cut into chunks whose im2col block stays in cache between being built and
being read by the GEMM (and that stay within ``workspace_bytes`` all together).

Threads: one OpenMP parallel region per call, each thread building its own chunk's
im2col and running a single-threaded GEMM on it. BLAS is held to one thread for the
duration (its own pool would otherwise oversubscribe the cores, and a fork/join per
chunk in two pools costs more than the im2col itself on a busy machine). Without
OpenMP or threadpoolctl the chunks run in turn and BLAS uses its own threads.

Backward recomputes the im2col chunk instead of keeping it in the state: it costs
one memory pass against GEMM work kh*kw*C_out times larger, and keeps the state
down to the inputs. dw is summed per thread over a fixed assignment of chunks and
the per-thread sums are added in order; dx is gathered per input row; so results
are bit-identical for a given thread count.

Column order of ``im2col``: column ``(i * kw + j) * C + c`` holds kernel tap
``(i, j)`` of channel ``c``, so that ``cols @ w.reshape(kh * kw * C, C_out)`` is the
convolution.
"""
import contextlib

import numpy as np

from ._threads import blas_on_one_thread as _blas_on_one_thread

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from ._blas cimport gemm

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastnn_conv_openmp(void) { return 1; }
    static int fastnn_conv_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastnn_conv_openmp(void) { return 0; }
    static int fastnn_conv_max_threads(void) { return 1; }
    #endif
    """
    int fastnn_conv_openmp() noexcept nogil
    int fastnn_conv_max_threads() noexcept nogil

cdef extern from "fn_sgemm.h":
    ctypedef struct fn_conv_geom:
        Py_ssize_t N, H, W, C, Ho, Wo, kh, kw, sh, sw, dh, dw, pt, pl, Cg
    int FN_MR
    int FN_TILES
    int fn_sgemm_supported() noexcept nogil
    size_t fn_sgemm_packed_size(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    void fn_sgemm_pack(Py_ssize_t K, Py_ssize_t N, const float* src, Py_ssize_t sk, Py_ssize_t sn,
                       float* P) noexcept nogil
    size_t fn_conv_scratch(const fn_conv_geom* g) noexcept nogil
    size_t fn_conv_dw_scratch(Py_ssize_t rows) noexcept nogil
    void fn_conv_forward(const fn_conv_geom* g, const float* x, Py_ssize_t c0, const float* P,
                         Py_ssize_t Cog, const float* bias, float* y, Py_ssize_t ldy,
                         Py_ssize_t m0, Py_ssize_t m1, const float* zeros, void** scratch) noexcept nogil
    void fn_conv_weight_grad(const fn_conv_geom* g, const float* x, Py_ssize_t c0, const float* dy,
                             Py_ssize_t ldy, Py_ssize_t co0, Py_ssize_t Cog, float* dw,
                             Py_ssize_t ldw, Py_ssize_t q0, Py_ssize_t q1, void** scratch) noexcept nogil


cdef int _num_threads = max(1, fastnn_conv_max_threads())

# im2col chunks aim at this size so a chunk is still in cache when the GEMM reads it.
# Rows are never cut below _MIN_CHUNK_ROWS, which keeps the GEMMs large enough to run
# near full speed.
cdef Py_ssize_t _CHUNK_BYTES = 2 * 2**20
cdef Py_ssize_t _MIN_CHUNK_ROWS = 256
# Stride-1 backward forms dx as a convolution of dy (see _backward_gemm) when the
# GEMM of the col2im route would be thin (few output channels per group) and the
# transposed one would not (enough input channels per group).
cdef Py_ssize_t _MIN_TRANSPOSED_CHANNELS = 8
cdef Py_ssize_t _MAX_TRANSPOSED_OUT_CHANNELS = 128
# BLAS takes int sizes; GEMMs over more rows than this are split.
cdef Py_ssize_t _MAX_GEMM_ROWS = 2**30


# float32 convolutions run on fastnn's own AVX-512 kernels (fn_sgemm.h: an implicit
# GEMM, no im2col buffer) where the CPU has them; they need this many columns per
# group in the product (output channels forward, input channels for dx) to fill
# their 64-wide tiles well enough to beat BLAS.
cdef bint _own_supported = fn_sgemm_supported() != 0
cdef bint _own_enabled = _own_supported
cdef Py_ssize_t _OWN_MIN_COLUMNS = 16
# Output pixels per forward task and the size of a weight-gradient task's slice of dy.
cdef Py_ssize_t _OWN_BLOCK_PIXELS = 96
cdef Py_ssize_t _OWN_DW_CHUNK_BYTES = 256 * 1024


def own_kernels(enabled=None):
    """Whether float32 convolutions use the own AVX-512 kernels; ``enabled`` switches them.

    Returns the setting in force before the call. They can only be enabled on a CPU
    with AVX-512 (otherwise every call takes the BLAS route).
    """
    global _own_enabled
    before = _own_enabled
    if enabled is not None:
        _own_enabled = bool(enabled) and _own_supported
    return before


def set_num_threads(n):
    """Use n OpenMP threads in these kernels (BLAS threads are set by the caller)."""
    global _num_threads
    _num_threads = max(1, int(n))


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fastnn_conv_openmp())




cdef struct Geometry:
    Py_ssize_t N, H, W, C          # input; C is the channel stride of x / dx
    Py_ssize_t Ho, Wo
    Py_ssize_t kh, kw, sh, sw, dh, dw
    Py_ssize_t pt, pl              # top and left padding (bottom/right follow from Ho, Wo)
    Py_ssize_t Cg                  # channels per im2col tap (one group's channels)


cdef Geometry _geometry(tuple x_shape, tuple ksize, tuple stride, tuple pads,
                        tuple dilation, tuple out_hw, Py_ssize_t c_group):
    cdef Geometry g
    g.N, g.H, g.W, g.C = x_shape
    g.Ho, g.Wo = out_hw
    g.kh, g.kw = ksize
    g.sh, g.sw = stride
    g.dh, g.dw = dilation
    g.pt = pads[0]
    g.pl = pads[2]
    g.Cg = c_group
    return g


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    if a <= 0:
        return -((-a) // b)
    return (a + b - 1) // b


cdef inline Py_ssize_t _clip(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


cdef void _im2col_row(const floating* x, floating* dst, const Geometry* g,
                      Py_ssize_t r, Py_ssize_t c0) noexcept nogil:
    """Row r = (n * Ho + oh) * Wo + ow of im2col, channels c0 .. c0 + Cg, into dst."""
    cdef Py_ssize_t ow = r % g.Wo
    cdef Py_ssize_t t = r // g.Wo
    cdef Py_ssize_t oh = t % g.Ho
    cdef Py_ssize_t n = t // g.Ho
    cdef Py_ssize_t Cg = g.Cg, C = g.C, kw = g.kw
    cdef Py_ssize_t ih0 = oh * g.sh - g.pt, iw0 = ow * g.sw - g.pl
    # taps j in [jlo, jhi) fall inside the input columns
    cdef Py_ssize_t jlo = _clip(_ceil_div(-iw0, g.dw), 0, kw)
    cdef Py_ssize_t jhi = _clip(_ceil_div(g.W - iw0, g.dw), jlo, kw)
    cdef Py_ssize_t i, j, ih
    cdef floating* drow
    cdef const floating* src
    for i in range(g.kh):
        ih = ih0 + i * g.dh
        drow = dst + i * kw * Cg
        if ih < 0 or ih >= g.H:
            memset(drow, 0, kw * Cg * sizeof(floating))
            continue
        if jlo > 0:
            memset(drow, 0, jlo * Cg * sizeof(floating))
        if jhi > jlo:
            # the input pixel of tap jlo (never a pointer outside x)
            src = x + ((n * g.H + ih) * g.W + iw0 + jlo * g.dw) * C + c0
            if g.dw == 1 and Cg == C:
                # consecutive taps are consecutive pixels: one run
                memcpy(drow + jlo * Cg, src, (jhi - jlo) * C * sizeof(floating))
            else:
                for j in range(jlo, jhi):
                    memcpy(drow + j * Cg, src + (j - jlo) * g.dw * C, Cg * sizeof(floating))
        if jhi < kw:
            memset(drow + jhi * Cg, 0, (kw - jhi) * Cg * sizeof(floating))


cdef void _im2col_rows(const floating* x, floating* cols, const Geometry* g,
                       Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, int nthreads) noexcept nogil:
    """Rows r0 .. r1 of im2col (channels c0 .. c0 + Cg) into cols, row r at cols[(r - r0) * K]."""
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t r
    for r in prange(r0, r1, nogil=True, schedule="dynamic", chunksize=64, num_threads=nthreads):
        _im2col_row(x, cols + (r - r0) * K, g, r, c0)


cdef void _col2im_input_row(floating* dx, const floating* dcols, const Geometry* g,
                            Py_ssize_t n, Py_ssize_t ih, Py_ssize_t r0, Py_ssize_t r1,
                            Py_ssize_t c0) noexcept nogil:
    """Add into dx[n, ih, :, c0:c0 + Cg] every entry of dcols rows r0 .. r1 that came from it.

    Gathering per input row lets each thread own whole rows of dx; the taps are added
    in a fixed (i, j, ow) order.
    """
    cdef Py_ssize_t Cg = g.Cg, C = g.C, K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t i, j, t, oh, ow, ow_lo, ow_hi, c, rowbase, iw
    cdef floating* drow = dx + (n * g.H + ih) * g.W * C + c0
    cdef floating* dpix
    cdef const floating* src
    for i in range(g.kh):
        t = ih + g.pt - i * g.dh
        if t < 0 or t % g.sh != 0:
            continue
        oh = t // g.sh
        if oh >= g.Ho:
            continue
        rowbase = (n * g.Ho + oh) * g.Wo
        if rowbase + g.Wo <= r0 or rowbase >= r1:
            continue
        for j in range(g.kw):
            # ow with 0 <= ow * sw - pl + j * dw < W, inside the chunk's rows
            ow_lo = _ceil_div(g.pl - j * g.dw, g.sw)
            ow_hi = _ceil_div(g.W + g.pl - j * g.dw, g.sw)
            if ow_lo < r0 - rowbase:
                ow_lo = r0 - rowbase
            if ow_lo < 0:
                ow_lo = 0
            if ow_hi > r1 - rowbase:
                ow_hi = r1 - rowbase
            if ow_hi > g.Wo:
                ow_hi = g.Wo
            for ow in range(ow_lo, ow_hi):
                iw = ow * g.sw - g.pl + j * g.dw
                dpix = drow + iw * C
                src = dcols + (rowbase + ow - r0) * K + (i * g.kw + j) * Cg
                for c in range(Cg):
                    dpix[c] += src[c]


cdef void _col2im_rows(floating* dx, const floating* dcols, const Geometry* g,
                       Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, int nthreads) noexcept nogil:
    """Add im2col rows r0 .. r1 (channels c0 .. c0 + Cg) back into dx."""
    cdef Py_ssize_t HoWo = g.Ho * g.Wo
    cdef Py_ssize_t n0, n1, q
    if r1 <= r0:
        return
    n0 = r0 // HoWo
    n1 = (r1 - 1) // HoWo + 1
    for q in prange(n0 * g.H, n1 * g.H, nogil=True, schedule="dynamic", num_threads=nthreads):
        _col2im_input_row(dx, dcols, g, q // g.H, q % g.H, r0, r1, c0)


cdef Py_ssize_t _chunk_rows(Py_ssize_t rows, Py_ssize_t row_bytes, Py_ssize_t weight_bytes,
                            Py_ssize_t workspace_bytes, int nthreads, Py_ssize_t align):
    """Output rows per im2col chunk: cache-sized, enough chunks for the threads, and one
    buffer per thread within the bound; a multiple of ``align`` rows when that fits.

    Every GEMM call packs the whole weight matrix again, so a chunk also spans at
    least a few times the weights' size to keep that repacking a small cost.
    """
    cdef Py_ssize_t target = max(_CHUNK_BYTES, 4 * weight_bytes)
    cdef Py_ssize_t chunk = max(target // row_bytes, _MIN_CHUNK_ROWS)
    if nthreads > 1:
        chunk = min(chunk, max((rows + nthreads - 1) // nthreads, _MIN_CHUNK_ROWS))
    chunk = min(chunk, workspace_bytes // (nthreads * row_bytes), _MAX_GEMM_ROWS, rows)
    if align > 1 and chunk >= align:
        chunk -= chunk % align
    return max(chunk, 1)


cdef void _column_sums(const floating* a, Py_ssize_t rows, Py_ssize_t cols, floating* out,
                       double[:, ::1] partial, int nthreads) noexcept nogil:
    """out[c] = sum over rows of a[r, c]; a fixed split of the rows per thread, added in order.

    Accumulates in double so float32 sums over large batches stay accurate.
    """
    cdef Py_ssize_t T = partial.shape[0]
    cdef Py_ssize_t t, r, c, lo, hi
    cdef double* acc
    cdef double s
    for t in prange(T, nogil=True, schedule="static", num_threads=nthreads):
        acc = &partial[t, 0]
        for c in range(cols):
            acc[c] = 0
        lo = rows * t // T
        hi = rows * (t + 1) // T
        for r in range(lo, hi):
            for c in range(cols):
                acc[c] += a[r * cols + c]
    for c in range(cols):
        s = 0
        for t in range(T):
            s = s + partial[t, c]
        out[c] = <floating>s


cdef tuple _plan(Py_ssize_t rows, Py_ssize_t row_bytes, Py_ssize_t weight_bytes,
                 Py_ssize_t workspace_bytes, Py_ssize_t align, bint whole):
    """(threads, rows per chunk, context to run in) for a pass over ``rows`` im2col rows.

    ``whole``: with more than one thread, chunks must be whole multiples of ``align``
    rows (images), so that threads scatter into disjoint parts of dx.
    """
    cdef Py_ssize_t unit = align if whole else 1
    cdef int nthreads = _num_threads if fastnn_conv_openmp() else 1
    nthreads = min(nthreads, max(1, workspace_bytes // (unit * row_bytes)),
                   max(1, (rows + unit - 1) // unit))
    context = contextlib.nullcontext()
    if nthreads > 1:
        context = _blas_on_one_thread()
        if context is None:
            nthreads, context = 1, contextlib.nullcontext()
    cdef Py_ssize_t chunk = _chunk_rows(rows, row_bytes, weight_bytes, workspace_bytes,
                                        nthreads, align)
    if nthreads > 1 and (rows + chunk - 1) // chunk < 2:
        nthreads, context = 1, contextlib.nullcontext()
    return nthreads, chunk, context


# ---------------------------------------------------------------------------
# The own AVX-512 kernels (float32)

cdef fn_conv_geom _fn_geometry(const Geometry* g):
    cdef fn_conv_geom f
    f.N, f.H, f.W, f.C, f.Ho, f.Wo = g.N, g.H, g.W, g.C, g.Ho, g.Wo
    f.kh, f.kw, f.sh, f.sw, f.dh, f.dw = g.kh, g.kw, g.sh, g.sw, g.dh, g.dw
    f.pt, f.pl, f.Cg = g.pt, g.pl, g.Cg
    return f


cdef void _own_forward_blocks(const fn_conv_geom* g, const float* x, const float* P,
                              Py_ssize_t psize, Py_ssize_t groups, Py_ssize_t Cog,
                              const float* bias, float* y, Py_ssize_t ldy, const float* zeros,
                              void** scratch, Py_ssize_t sstride, int nthreads) noexcept nogil:
    """Every output pixel of every group, in blocks of pixels spread over the threads."""
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t nblocks = (rows + _OWN_BLOCK_PIXELS - 1) // _OWN_BLOCK_PIXELS
    cdef Py_ssize_t blk, gi, m0, m1
    cdef void** sc
    cdef const float* bg
    for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=nthreads):
        sc = scratch + threadid() * sstride
        m0 = blk * _OWN_BLOCK_PIXELS
        m1 = min(m0 + _OWN_BLOCK_PIXELS, rows)
        for gi in range(groups):
            bg = NULL
            if bias != NULL:
                bg = bias + gi * Cog
            fn_conv_forward(g, x, gi * g.Cg, P + gi * psize, Cog, bg, y + gi * Cog, ldy,
                            m0, m1, zeros, sc)


cdef void _own_forward(const float* x, const float* w, Py_ssize_t w_group_off, Py_ssize_t w_sk,
                       const float* bias, float* y, Py_ssize_t ldy, const Geometry* geo,
                       Py_ssize_t groups, Py_ssize_t Cog) except *:
    """y[:, g * Cog : (g + 1) * Cog] = bias + the convolution of x with group g's weights.

    Group g's weights are the (kh * kw * Cg, Cog) matrix at w + g * w_group_off with
    row stride w_sk (unit column stride); they are packed once here. bias may be NULL.
    """
    cdef fn_conv_geom g = _fn_geometry(geo)
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t psize = <Py_ssize_t>fn_sgemm_packed_size(K, Cog)
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef int nthreads = _num_threads if fastnn_conv_openmp() else 1
    nthreads = <int>max(1, min(nthreads, (rows + _OWN_BLOCK_PIXELS - 1) // _OWN_BLOCK_PIXELS))
    cdef Py_ssize_t sstride = <Py_ssize_t>fn_conv_scratch(&g)
    cdef float[::1] packed = np.empty(max(1, groups * psize), dtype=np.float32)
    cdef float[::1] zeros = np.zeros(max(1, g.Cg), dtype=np.float32)
    cdef Py_ssize_t[::1] scratch = np.empty(max(1, nthreads * sstride), dtype=np.intp)
    cdef Py_ssize_t gi
    with nogil:
        for gi in range(groups):
            fn_sgemm_pack(K, Cog, w + gi * w_group_off, w_sk, 1, &packed[gi * psize])
        _own_forward_blocks(&g, x, &packed[0], psize, groups, Cog, bias, y, ldy, &zeros[0],
                            <void**>&scratch[0], sstride, nthreads)


cdef void _own_weight_grad_chunks(const fn_conv_geom* g, const float* x, const float* dy,
                                  Py_ssize_t groups, Py_ssize_t C_out, float* dw_partial,
                                  Py_ssize_t chunk, void** scratch, Py_ssize_t sstride,
                                  int nthreads) noexcept nogil:
    """dw_partial[t] (zeroed) += thread t's chunks of output rows; chunk c goes to thread
    c % nthreads, which fixes every summation order."""
    cdef Py_ssize_t rows = g.N * g.Ho
    cdef Py_ssize_t n_chunks = (rows + chunk - 1) // chunk
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t c, gi
    cdef int t
    for c in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=nthreads):
        t = threadid()
        for gi in range(groups):
            fn_conv_weight_grad(g, x, gi * g.Cg, dy, C_out, gi * Cog, Cog,
                                dw_partial + t * K * C_out + gi * Cog, C_out,
                                c * chunk, min((c + 1) * chunk, rows), scratch + t * sstride)


cdef object _own_weight_grad(const float* x, const float* dy, const Geometry* geo,
                             Py_ssize_t groups, Py_ssize_t C_out):
    """dw as a (kh * kw * Cg, C_out) array, summed over per-thread partials in order."""
    cdef fn_conv_geom g = _fn_geometry(geo)
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t rows = g.N * g.Ho
    cdef Py_ssize_t chunk = max(1, _OWN_DW_CHUNK_BYTES // max(1, g.Wo * C_out * 4))
    cdef int nthreads = _num_threads if fastnn_conv_openmp() else 1
    cdef Py_ssize_t t
    if nthreads > 1:
        chunk = min(chunk, max(1, (rows + nthreads - 1) // nthreads))
    nthreads = <int>max(1, min(nthreads, (rows + chunk - 1) // chunk))
    cdef Py_ssize_t sstride = <Py_ssize_t>fn_conv_dw_scratch(chunk)
    cdef Py_ssize_t[::1] scratch = np.empty(max(1, nthreads * sstride), dtype=np.intp)
    partial_arr = np.zeros((nthreads, K * C_out), dtype=np.float32)
    cdef float[:, ::1] partial = partial_arr
    with nogil:
        _own_weight_grad_chunks(&g, x, dy, groups, C_out, &partial[0, 0], chunk,
                                <void**>&scratch[0], sstride, nthreads)
    dw = partial_arr[0]
    for t in range(1, nthreads):
        dw += partial_arr[t]
    return dw


# ---------------------------------------------------------------------------
# Forward

cdef inline bint _is_pointwise(const Geometry* g) noexcept nogil:
    """1x1, stride 1, unpadded: x itself is the im2col matrix."""
    return (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1
            and g.pt == 0 and g.pl == 0 and g.Ho == g.H and g.Wo == g.W)


cdef void _forward_rows(const floating* x, const floating* w, const floating* b, bint has_bias,
                        floating* y, floating* buf, const Geometry* g, Py_ssize_t groups,
                        Py_ssize_t C_out, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Output rows r0 .. r1 on the calling thread: im2col into buf, one GEMM per group."""
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t r, c, gi
    cdef floating beta = 1 if has_bias else 0
    cdef bint pointwise = _is_pointwise(g)
    if has_bias:
        for r in range(r0, r1):
            for c in range(C_out):
                y[r * C_out + c] = b[c]
    for gi in range(groups):
        if pointwise:
            gemm(False, False, <int>(r1 - r0), <int>Cog, <int>K, <floating>1,
                 x + r0 * g.C + gi * g.Cg, <int>g.C, w + gi * Cog, <int>C_out,
                 beta, y + r0 * C_out + gi * Cog, <int>C_out)
        else:
            for r in range(r0, r1):
                _im2col_row(x, buf + (r - r0) * K, g, r, gi * g.Cg)
            gemm(False, False, <int>(r1 - r0), <int>Cog, <int>K, <floating>1,
                 buf, <int>K, w + gi * Cog, <int>C_out,
                 beta, y + r0 * C_out + gi * Cog, <int>C_out)


cdef void _forward_gemm(const floating* x, const floating* w, const floating* b, bint has_bias,
                        floating* y, floating* work, const Geometry* g, Py_ssize_t groups,
                        Py_ssize_t C_out, Py_ssize_t chunk, int nthreads) noexcept nogil:
    """All output rows in chunks; thread t uses work[t * chunk * K:]."""
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t n_chunks = (rows + chunk - 1) // chunk
    cdef Py_ssize_t c
    if nthreads == 1:
        for c in range(n_chunks):
            _forward_rows(x, w, b, has_bias, y, work, g, groups, C_out,
                          c * chunk, min((c + 1) * chunk, rows))
        return
    # chunks are independent, so a dynamic schedule balances uneven threads freely
    for c in prange(n_chunks, nogil=True, schedule="dynamic", num_threads=nthreads):
        _forward_rows(x, w, b, has_bias, y, work + threadid() * chunk * K, g, groups, C_out,
                      c * chunk, min((c + 1) * chunk, rows))


cdef void _forward_depthwise(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                             const floating* b, bint has_bias, floating[:, :, :, ::1] y,
                             const Geometry* g, int nthreads) noexcept nogil:
    """One input channel per group: a direct loop beats a GEMM whose K is kh * kw."""
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t mult = C_out // g.C
    cdef Py_ssize_t q, n, oh, ow, i, j, ih, iw, c, m, jlo, jhi, iw0
    cdef floating* yrow
    cdef const floating* xpix
    cdef const floating* wtap
    cdef floating xv
    for q in prange(g.N * g.Ho, nogil=True, schedule="dynamic", num_threads=nthreads):
        n = q // g.Ho
        oh = q % g.Ho
        for ow in range(g.Wo):
            yrow = &y[n, oh, ow, 0]
            for c in range(C_out):
                yrow[c] = b[c] if has_bias else 0
            iw0 = ow * g.sw - g.pl
            jlo = _clip(_ceil_div(-iw0, g.dw), 0, g.kw)
            jhi = _clip(_ceil_div(g.W - iw0, g.dw), jlo, g.kw)
            for i in range(g.kh):
                ih = oh * g.sh - g.pt + i * g.dh
                if ih < 0 or ih >= g.H:
                    continue
                for j in range(jlo, jhi):
                    iw = iw0 + j * g.dw
                    xpix = &x[n, ih, iw, 0]
                    wtap = &w[i, j, 0, 0]
                    if mult == 1:
                        for c in range(C_out):
                            yrow[c] += xpix[c] * wtap[c]
                    else:
                        for c in range(g.C):
                            xv = xpix[c]
                            for m in range(mult):
                                yrow[c * mult + m] += xv * wtap[c * mult + m]


cdef object _conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                            const floating[::1] b, bint has_bias, Py_ssize_t groups,
                            Geometry g, Py_ssize_t workspace_bytes):
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef bint pointwise = _is_pointwise(&g)
    cdef int nthreads
    cdef Py_ssize_t chunk
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((g.N, g.Ho, g.Wo, C_out), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef floating[::1] work
    if rows == 0 or C_out == 0:
        return y_arr
    if groups > 1 and g.Cg == 1:
        nthreads = _num_threads
        with nogil:
            _forward_depthwise(x, w, &b[0], has_bias, y, &g, nthreads)
        return y_arr
    if K == 0:
        y_arr[...] = np.asarray(b) if has_bias else 0
        return y_arr
    if floating is float:
        if _own_enabled and C_out // groups >= _OWN_MIN_COLUMNS:
            _own_forward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], C_out // groups, C_out,
                         &b[0] if has_bias else NULL, &y[0, 0, 0, 0], C_out, &g, groups,
                         C_out // groups)
            return y_arr
    nthreads, chunk, context = _plan(
        rows, K * sizeof(floating), K * (C_out // groups) * sizeof(floating),
        # pointwise needs no buffer, so the bound does not limit its chunks
        _MAX_GEMM_ROWS * K * sizeof(floating) if pointwise else workspace_bytes, 1, False)
    work_arr = np.empty(1 if pointwise else nthreads * chunk * K, dtype=dtype)
    work = work_arr
    with context:
        with nogil:
            _forward_gemm(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &b[0], has_bias, &y[0, 0, 0, 0],
                          &work[0], &g, groups, C_out, chunk, nthreads)
    return y_arr


# ---------------------------------------------------------------------------
# Backward

cdef void _backward_rows(const floating* x, const floating* w, const floating* dy,
                         floating* dx, floating* dw_acc, floating* buf, const Geometry* g,
                         Py_ssize_t groups, Py_ssize_t C_out, Py_ssize_t r0, Py_ssize_t r1,
                         bint want_dw, bint dx_by_col2im) noexcept nogil:
    """Output rows r0 .. r1 on the calling thread: dw_acc += cols^T @ dy (with
    ``want_dw``), and dx from them.

    dx: pointwise, its rows are dy @ w^T directly; with ``dx_by_col2im`` the chunk's
    dcols = dy @ w^T is gathered back into dx (zeroed; the chunk must cover whole
    images when other threads work on other chunks); otherwise dx is left alone.
    """
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t HoWo = g.Ho * g.Wo
    cdef Py_ssize_t gi, r, q
    for gi in range(groups):
        if _is_pointwise(g):
            if want_dw:
                gemm(True, False, <int>K, <int>Cog, <int>(r1 - r0), <floating>1,
                     x + r0 * g.C + gi * g.Cg, <int>g.C, dy + r0 * C_out + gi * Cog, <int>C_out,
                     <floating>1, dw_acc + gi * Cog, <int>C_out)
            if dx_by_col2im:
                gemm(False, True, <int>(r1 - r0), <int>K, <int>Cog, <floating>1,
                     dy + r0 * C_out + gi * Cog, <int>C_out, w + gi * Cog, <int>C_out,
                     <floating>0, dx + r0 * g.C + gi * g.Cg, <int>g.C)
            continue
        if want_dw:
            for r in range(r0, r1):
                _im2col_row(x, buf + (r - r0) * K, g, r, gi * g.Cg)
            gemm(True, False, <int>K, <int>Cog, <int>(r1 - r0), <floating>1,
                 buf, <int>K, dy + r0 * C_out + gi * Cog, <int>C_out,
                 <floating>1, dw_acc + gi * Cog, <int>C_out)
        if dx_by_col2im:
            # the same buffer now takes the gradient of the columns
            gemm(False, True, <int>(r1 - r0), <int>K, <int>Cog, <floating>1,
                 dy + r0 * C_out + gi * Cog, <int>C_out, w + gi * Cog, <int>C_out,
                 <floating>0, buf, <int>K)
            for q in range((r0 // HoWo) * g.H, ((r1 - 1) // HoWo + 1) * g.H):
                _col2im_input_row(dx, buf, g, q // g.H, q % g.H, r0, r1, gi * g.Cg)


cdef void _backward_dx_rows(const floating* dy, const floating* wflip, floating* dx,
                            floating* buf, const Geometry* gt, Py_ssize_t groups,
                            Py_ssize_t C_in, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0 .. r1 of dx (stride 1) as the convolution of dy with the flipped kernel.

    gt is the geometry with dy as input and dx as output; wflip is
    (groups, kh * kw * Cog, Cg). Its GEMM's inner dimension is kh * kw * Cog, not the
    thin Cog of the col2im route.
    """
    cdef Py_ssize_t K_t = gt.kh * gt.kw * gt.Cg
    cdef Py_ssize_t Cg = C_in // groups
    cdef Py_ssize_t gi, r
    for gi in range(groups):
        for r in range(r0, r1):
            _im2col_row(dy, buf + (r - r0) * K_t, gt, r, gi * gt.Cg)
        gemm(False, False, <int>(r1 - r0), <int>Cg, <int>K_t, <floating>1,
             buf, <int>K_t, wflip + gi * K_t * Cg, <int>Cg,
             <floating>0, dx + r0 * C_in + gi * Cg, <int>C_in)


cdef void _backward_gemm(const floating* x, const floating* w, const floating* wflip,
                         const floating* dy, floating* dx, floating* dw_partial, floating* work,
                         const Geometry* g, const Geometry* gt, Py_ssize_t groups,
                         Py_ssize_t C_out, Py_ssize_t chunk, Py_ssize_t chunk_t,
                         Py_ssize_t buf_stride, bint transposed, bint want_dw, bint want_dx,
                         int nthreads) noexcept nogil:
    """dw_partial[t] (zeroed, K * C_out each) gets thread t's share of dw (with
    ``want_dw``); dx is filled (with ``want_dx``).

    Chunk c goes to thread c % nthreads (static), which fixes every summation order.
    """
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t n_chunks = (rows + chunk - 1) // chunk
    cdef Py_ssize_t rows_t = g.N * g.H * g.W
    cdef Py_ssize_t n_chunks_t = (rows_t + chunk_t - 1) // chunk_t
    cdef Py_ssize_t c
    cdef int t
    if nthreads == 1:
        for c in range(n_chunks):
            _backward_rows(x, w, dy, dx, dw_partial, work, g, groups, C_out,
                           c * chunk, min((c + 1) * chunk, rows), want_dw,
                           want_dx and not transposed)
        if transposed and want_dx:
            for c in range(n_chunks_t):
                _backward_dx_rows(dy, wflip, dx, work, gt, groups, g.C,
                                  c * chunk_t, min((c + 1) * chunk_t, rows_t))
        return
    for c in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=nthreads):
        t = threadid()
        _backward_rows(x, w, dy, dx, dw_partial + t * K * C_out, work + t * buf_stride, g,
                       groups, C_out, c * chunk, min((c + 1) * chunk, rows), want_dw,
                       want_dx and not transposed)
    if transposed and want_dx:
        for c in prange(n_chunks_t, nogil=True, schedule="dynamic", num_threads=nthreads):
            _backward_dx_rows(dy, wflip, dx, work + threadid() * buf_stride, gt, groups, g.C,
                              c * chunk_t, min((c + 1) * chunk_t, rows_t))


cdef void _backward_depthwise(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                              const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                              double[:, ::1] dw_partial, const Geometry* g,
                              int nthreads) noexcept nogil:
    """dx gathered per input row; dw in per-thread partials (fixed split) added in order."""
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t mult = C_out // g.C
    cdef Py_ssize_t T = dw_partial.shape[0]
    cdef Py_ssize_t q, n, ih, i, j, t, oh, ow, ow_lo, ow_hi, iw, c, m, lo, hi, iw0, jlo, jhi
    cdef floating* dpix
    cdef const floating* dyp
    cdef const floating* wtap
    cdef const floating* xpix
    cdef double* acc
    cdef floating s
    cdef double xv
    for q in prange(g.N * g.H, nogil=True, schedule="dynamic", num_threads=nthreads):
        n = q // g.H
        ih = q % g.H
        for iw in range(g.W):
            dpix = &dx[n, ih, iw, 0]
            for c in range(g.C):
                dpix[c] = 0
        for i in range(g.kh):
            t = ih + g.pt - i * g.dh
            if t < 0 or t % g.sh != 0:
                continue
            oh = t // g.sh
            if oh >= g.Ho:
                continue
            for j in range(g.kw):
                ow_lo = max(_ceil_div(g.pl - j * g.dw, g.sw), 0)
                ow_hi = min(_ceil_div(g.W + g.pl - j * g.dw, g.sw), g.Wo)
                wtap = &w[i, j, 0, 0]
                for ow in range(ow_lo, ow_hi):
                    iw = ow * g.sw - g.pl + j * g.dw
                    dpix = &dx[n, ih, iw, 0]
                    dyp = &dy[n, oh, ow, 0]
                    if mult == 1:
                        for c in range(g.C):
                            dpix[c] += dyp[c] * wtap[c]
                    else:
                        for c in range(g.C):
                            s = 0
                            for m in range(mult):
                                s = s + dyp[c * mult + m] * wtap[c * mult + m]
                            dpix[c] += s
    # dw[i, j, 0, co] = sum over output pixels of x(window tap) * dy
    for t in prange(T, nogil=True, schedule="static", num_threads=nthreads):
        acc = &dw_partial[t, 0]
        for c in range(g.kh * g.kw * C_out):
            acc[c] = 0
        lo = g.N * g.Ho * t // T
        hi = g.N * g.Ho * (t + 1) // T
        for q in range(lo, hi):
            n = q // g.Ho
            oh = q % g.Ho
            for ow in range(g.Wo):
                dyp = &dy[n, oh, ow, 0]
                iw0 = ow * g.sw - g.pl
                jlo = _clip(_ceil_div(-iw0, g.dw), 0, g.kw)
                jhi = _clip(_ceil_div(g.W - iw0, g.dw), jlo, g.kw)
                for i in range(g.kh):
                    ih = oh * g.sh - g.pt + i * g.dh
                    if ih < 0 or ih >= g.H:
                        continue
                    for j in range(jlo, jhi):
                        xpix = &x[n, ih, iw0 + j * g.dw, 0]
                        if mult == 1:
                            for c in range(C_out):
                                acc[(i * g.kw + j) * C_out + c] += xpix[c] * dyp[c]
                        else:
                            for c in range(g.C):
                                xv = xpix[c]
                                for m in range(mult):
                                    acc[(i * g.kw + j) * C_out + c * mult + m] += xv * dyp[c * mult + m]


cdef tuple _conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                            const floating[:, :, :, ::1] w, bint has_bias, Py_ssize_t groups,
                            Geometry g, Py_ssize_t workspace_bytes):
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t K_t = g.kh * g.kw * Cog
    cdef int nthreads = _num_threads
    cdef Py_ssize_t t, chunk, chunk_t = 1, buf_stride
    dtype = np.float32 if floating is float else np.float64
    cdef bint pointwise = _is_pointwise(&g)
    cdef bint depthwise = groups > 1 and g.Cg == 1
    # float32 on the own kernels: dw as an implicit product (no im2col), and stride-1
    # dx as the forward convolution of dy with the flipped kernel
    cdef bint own_dw = False, own_dx = False
    if floating is float:
        own_dw = _own_enabled and not depthwise and Cog >= _OWN_MIN_COLUMNS
        own_dx = (_own_enabled and not depthwise and g.sh == 1 and g.sw == 1
                  and g.Cg >= _OWN_MIN_COLUMNS)
    cdef bint transposed = (not own_dx and not pointwise and not depthwise and g.sh == 1
                            and g.sw == 1 and g.Cg >= _MIN_TRANSPOSED_CHANNELS
                            and Cog < _MAX_TRANSPOSED_OUT_CHANNELS)
    dx_arr = (np.empty if (pointwise or depthwise or transposed or own_dx) else np.zeros)(
        (g.N, g.H, g.W, g.C), dtype=dtype)
    dw_arr = np.empty((g.kh, g.kw, g.Cg, C_out), dtype=dtype)
    db_arr = np.empty(C_out, dtype=dtype) if has_bias else None
    if rows == 0 or K == 0 or C_out == 0:
        dx_arr[...] = 0
        dw_arr[...] = 0
        if has_bias:
            db_arr[...] = np.asarray(dy).reshape(-1, C_out).sum(axis=0) if C_out else 0
        return dx_arr, dw_arr, db_arr
    cdef floating[:, :, :, ::1] dx = dx_arr
    cdef floating[:, ::1] dw_partial
    cdef floating[::1] db
    cdef double[:, ::1] partial
    cdef floating[::1] work
    cdef const floating[:, :, ::1] wflip
    cdef Geometry gt = g
    if transposed or own_dx:
        # dy seen as the input of a stride-1 convolution whose output is dx
        gt.H, gt.W, gt.C = g.Ho, g.Wo, C_out
        gt.Ho, gt.Wo = g.H, g.W
        gt.pt = (g.kh - 1) * g.dh - g.pt
        gt.pl = (g.kw - 1) * g.dw - g.pl
        gt.Cg = Cog
        # wflip[gi, (i, j, co), ci] = w[kh - 1 - i, kw - 1 - j, ci, gi * Cog + co]
        wflip_arr = np.ascontiguousarray(
            np.asarray(w)[::-1, ::-1].reshape(g.kh, g.kw, g.Cg, groups, Cog)
            .transpose(3, 0, 1, 4, 2).reshape(groups, K_t, g.Cg))
    else:
        wflip_arr = np.zeros((1, 1, 1), dtype=dtype)
    wflip = wflip_arr
    if floating is float:
        if own_dx:
            _own_forward(&dy[0, 0, 0, 0], &wflip[0, 0, 0], K_t * g.Cg, g.Cg, NULL,
                         &dx[0, 0, 0, 0], g.C, &gt, groups, g.Cg)
        if own_dw:
            dw_arr.reshape(-1)[...] = _own_weight_grad(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], &g,
                                                       groups, C_out)
    if depthwise:
        partial = np.empty((nthreads, g.kh * g.kw * C_out), dtype=np.float64)
        with nogil:
            _backward_depthwise(x, w, dy, dx, partial, &g, nthreads)
        dw_arr[...] = np.asarray(partial).sum(axis=0).reshape(dw_arr.shape)
    elif not (own_dw and own_dx):
        # the BLAS route for what the own kernels did not do
        nthreads, chunk, context = _plan(
            rows, K * sizeof(floating), K * Cog * sizeof(floating),
            _MAX_GEMM_ROWS * K * sizeof(floating) if pointwise else workspace_bytes,
            g.Ho * g.Wo, not (pointwise or transposed or own_dx))
        buf_stride = 0 if pointwise else chunk * K
        if transposed:
            chunk_t = _chunk_rows(g.N * g.H * g.W, K_t * sizeof(floating),
                                  K_t * g.Cg * sizeof(floating), workspace_bytes, nthreads, 1)
            buf_stride = max(buf_stride, chunk_t * K_t)
        work_arr = np.empty(max(1, nthreads * buf_stride), dtype=dtype)
        work = work_arr
        dw_partial = np.zeros((nthreads if not own_dw else 1, K * C_out), dtype=dtype)
        with context:
            with nogil:
                _backward_gemm(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &wflip[0, 0, 0], &dy[0, 0, 0, 0],
                               &dx[0, 0, 0, 0], &dw_partial[0, 0], &work[0], &g, &gt, groups,
                               C_out, chunk, chunk_t, buf_stride, transposed, not own_dw,
                               not own_dx, nthreads)
        del work_arr
        if not own_dw:
            dw_flat = dw_arr.reshape(-1)
            dw_flat[...] = dw_partial[0]
            for t in range(1, nthreads):
                dw_flat += dw_partial[t]
    if has_bias:
        db = db_arr
        nthreads = _num_threads
        partial = np.empty((nthreads, C_out), dtype=np.float64)
        with nogil:
            _column_sums(&dy[0, 0, 0, 0], rows, C_out, &db[0], partial, nthreads)
    return dx_arr, dw_arr, db_arr


# ---------------------------------------------------------------------------
# Kernels (docs/KERNELS.md)

def conv2d_forward(x, w, b, stride, pads, dilation, groups, out_hw, workspace_bytes):
    """y = conv(x, w) + b in NHWC; state keeps only x, w and the geometry."""
    cdef Geometry g = _geometry(x.shape, w.shape[:2], stride, pads, dilation, out_hw, w.shape[2])
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, dtype=x.dtype)
    if x.dtype == np.float32:
        y = _conv2d_forward[float](x, w, bias, has_bias, groups, g, workspace_bytes)
    else:
        y = _conv2d_forward[double](x, w, bias, has_bias, groups, g, workspace_bytes)
    state = (x, w, has_bias, stride, pads, dilation, groups, out_hw, workspace_bytes)
    return y, state


def conv2d_backward(dy, state):
    """(dx, dw, db) from dy and the state of conv2d_forward; db is None without a bias."""
    x, w, has_bias, stride, pads, dilation, groups, out_hw, workspace_bytes = state
    cdef Geometry g = _geometry(x.shape, w.shape[:2], stride, pads, dilation, out_hw, w.shape[2])
    if x.dtype == np.float32:
        return _conv2d_backward[float](dy, x, w, has_bias, groups, g, workspace_bytes)
    return _conv2d_backward[double](dy, x, w, has_bias, groups, g, workspace_bytes)


cdef object _im2col(const floating[:, :, :, ::1] x, Geometry g):
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.C
    dtype = np.float32 if floating is float else np.float64
    cols_arr = np.empty((rows, K), dtype=dtype)
    cdef floating[:, ::1] cols = cols_arr
    if rows == 0 or K == 0:
        return cols_arr
    with nogil:
        _im2col_rows(&x[0, 0, 0, 0], &cols[0, 0], &g, 0, rows, 0, _num_threads)
    return cols_arr


cdef object _col2im(const floating[:, ::1] cols, Geometry g):
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    dtype = np.float32 if floating is float else np.float64
    x_arr = np.zeros((g.N, g.H, g.W, g.C), dtype=dtype)
    cdef floating[:, :, :, ::1] x = x_arr
    if rows == 0 or g.C == 0 or x_arr.size == 0:
        return x_arr
    with nogil:
        _col2im_rows(&x[0, 0, 0, 0], &cols[0, 0], &g, 0, rows, 0, _num_threads)
    return x_arr


def im2col(x, ksize, stride, pads, dilation, out_hw):
    """cols (N * H_out * W_out, kh * kw * C); column (i * kw + j) * C + c is tap (i, j), channel c."""
    cdef Geometry g = _geometry(x.shape, ksize, stride, pads, dilation, out_hw, x.shape[3])
    if x.dtype == np.float32:
        return _im2col[float](x, g)
    return _im2col[double](x, g)


def col2im(cols, x_shape, ksize, stride, pads, dilation, out_hw):
    """The adjoint of im2col: every column entry is added into its input cell (padding dropped)."""
    cdef Geometry g = _geometry(tuple(x_shape), ksize, stride, pads, dilation, out_hw, x_shape[3])
    if cols.dtype == np.float32:
        return _col2im[float](cols, g)
    return _col2im[double](cols, g)

