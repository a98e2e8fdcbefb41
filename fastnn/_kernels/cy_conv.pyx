"""Convolution kernels of the cython backend (NHWC, normalised arguments; docs/KERNELS.md).

Every convolution with more than one input channel per group runs on fastnn's own
kernels (fn_gemm.h, through _fn.pxd) on the active CPU tier, in float32 and
float64:

- forward: an implicit GEMM, the kernel reading the input pixels where they lie
  through a table of row pointers (no im2col buffer); the weights are packed once
  per call;
- dw: an A^T B product over chunks of output rows, per-thread partial sums added
  in a fixed order;
- dx of a stride-1 convolution: the forward kernel applied to dy with the flipped,
  transposed weights;
- dx of a strided one, or of one with few input channels per group (fewer than
  half a panel: the transposed convolution's tiles would be mostly empty):
  dcols = dy @ w^T for a chunk of whole images at a time (the same GEMM core),
  gathered back into dx by col2im. The chunks are what the workspace limit
  bounds.

Depthwise convolutions (one input channel per group) are direct loops: a GEMM whose
reduction is kh * kw long would waste its tiles.

Threads: the forward and both dx routes split their output over the threads, each
tile (or image) computed whole by one thread; dw splits the batch into parts fixed
by the sizes and sums their partial gradients in order. So no result depends on the
thread count, and the work is handed out dynamically: a thread slowed by a busy
core takes less (and after a stall the module backs off to one thread for a
while, fn_base.h). Depthwise convolutions and the bias gradient keep per-thread
partial sums: bit-identical for a given thread count.

Column order of ``im2col``: column ``(i * kw + j) * C + c`` holds kernel tap
``(i, j)`` of channel ``c``, so that ``cols @ w.reshape(kh * kw * C, C_out)`` is the
convolution.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from ._fn_dense cimport column_sums_mt
from ._fn cimport (conv1_dw_rows, conv1_rows, conv_dw_scratch, conv_forward, conv_scratch, conv_weight_grad, fn_add_busy, fn_alloc,
                   fn_conv_geom, fn_free, fn_main_clock, fn_panel_width, fn_region, fn_region_begin, fn_region_end,
                   fn_region_threads, gemm_nn_mt, pack, pack_t, packed_size,
                   transpose_matrix)


include "_module.pxi"


# Output pixels per forward task; the size of a weight-gradient chunk's slice of dy;
# the parts of the batch whose weight gradients are summed separately: as many as
# make _DW_TASKS tasks with the blocks of output columns (C4's 256 columns, four
# blocks: 2 parts; C2's 64: 8), at most _DW_PARTIAL_BYTES of partial sums. They let
# the threads share a small batch's rows, and depend on the sizes only; each part
# more is a zeroed copy of dw to add up (six of C4's 2.4 MB took a tenth of its
# backward).
cdef Py_ssize_t _BLOCK_PIXELS = 96
cdef Py_ssize_t _DW_CHUNK_BYTES = 256 * 1024
cdef Py_ssize_t _DW_TASKS = 8
cdef Py_ssize_t _DW_PARTIAL_BYTES = 16 * 2**20
# Chunks of the strided dx's columns aim at this size, so that a chunk is still in
# cache when col2im reads it back.
cdef Py_ssize_t _CHUNK_BYTES = 2 * 2**20


cdef inline int _threads() noexcept nogil:
    return _num_threads if fn_openmp() else 1


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


# ---------------------------------------------------------------------------
# The implicit GEMM (forward, stride-1 dx) and the weight gradient

cdef fn_conv_geom _fn_geometry(const Geometry* g):
    cdef fn_conv_geom f
    f.N, f.H, f.W, f.C, f.Ho, f.Wo = g.N, g.H, g.W, g.C, g.Ho, g.Wo
    f.kh, f.kw, f.sh, f.sw, f.dh, f.dw = g.kh, g.kw, g.sh, g.sw, g.dh, g.dw
    f.pt, f.pl, f.Cg = g.pt, g.pl, g.Cg
    return f


cdef void _implicit_blocks(const fn_conv_geom* g, const floating* x, const floating* P,
                           Py_ssize_t psize, Py_ssize_t groups, Py_ssize_t Cog,
                           const floating* bias, floating* y, Py_ssize_t ldy, const floating* zeros,
                           void** scratch, Py_ssize_t sstride, int nthreads) noexcept nogil:
    """Every output pixel of every group, in blocks of pixels spread over the threads
    (a block is computed whole by one thread, so the result does not depend on which,
    and the threads may back off to one after a stall: fn_base.h)."""
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t nblocks = (rows + _BLOCK_PIXELS - 1) // _BLOCK_PIXELS
    cdef Py_ssize_t blk, gi, m0, m1
    cdef void** sc
    cdef const floating* bg
    cdef fn_region region
    cdef double t0
    nthreads = fn_region_threads(nthreads)
    fn_region_begin(&region)
    for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        sc = scratch + threadid() * sstride
        m0 = blk * _BLOCK_PIXELS
        m1 = min(m0 + _BLOCK_PIXELS, rows)
        for gi in range(groups):
            bg = NULL
            if bias != NULL:
                bg = bias + gi * Cog
            conv_forward(g, x, gi * g.Cg, P + gi * psize, Cog, bg, y + gi * Cog, ldy, m0, m1, zeros, sc)
        fn_add_busy(&region.busy, t0)
    if nthreads > 1:
        fn_region_end(&region)


cdef void _implicit_gemm(const floating* x, const floating* w, Py_ssize_t w_group_off, Py_ssize_t w_sk,
                         const floating* bias, floating* y, Py_ssize_t ldy, const Geometry* geo,
                         Py_ssize_t groups, Py_ssize_t Cog) except *:
    """y[:, g * Cog : (g + 1) * Cog] = bias + the convolution of x with group g's weights.

    Group g's weights are the (kh * kw * Cg, Cog) matrix at w + g * w_group_off with
    row stride w_sk (unit column stride); they are packed once here. bias may be NULL.
    """
    cdef bint dbl = floating is double
    cdef fn_conv_geom g = _fn_geometry(geo)
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t psize = <Py_ssize_t>packed_size(dbl, K, Cog)
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef int nthreads = <int>max(1, min(_threads(), (rows + _BLOCK_PIXELS - 1) // _BLOCK_PIXELS))
    cdef Py_ssize_t sstride = <Py_ssize_t>conv_scratch(dbl, &g)
    dtype = np.float64 if dbl else np.float32
    cdef floating[::1] packed = np.empty(max(1, groups * psize), dtype=dtype)
    cdef floating[::1] zeros = np.zeros(max(1, g.Cg), dtype=dtype)
    cdef Py_ssize_t[::1] scratch = np.empty(max(1, nthreads * sstride), dtype=np.intp)
    cdef Py_ssize_t gi
    with nogil:
        for gi in range(groups):
            pack(K, Cog, w + gi * w_group_off, w_sk, 1, &packed[gi * psize])
        _implicit_blocks(&g, x, &packed[0], psize, groups, Cog, bias, y, ldy, &zeros[0],
                         <void**>&scratch[0], sstride, nthreads)


cdef void _weight_grad_tasks(const fn_conv_geom* g, const floating* x, const floating* dy,
                             Py_ssize_t groups, Py_ssize_t C_out, floating* dw_partial, Py_ssize_t n_parts,
                             Py_ssize_t chunk, Py_ssize_t width, void** scratch, Py_ssize_t sstride,
                             int nthreads) noexcept nogil:
    """dw_partial[part] (zeroed) += the weight gradient over part `part` of the output
    rows, `width` output columns of each conv group at a time: a task is one part and
    one block of columns, its rows taken in chunks of `chunk` in order. The parts and
    blocks depend on the sizes only, so the sums do not depend on the thread count."""
    cdef Py_ssize_t rows = g.N * g.Ho
    cdef Py_ssize_t n_chunks = (rows + chunk - 1) // chunk
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t blocks = (Cog + width - 1) // width
    cdef Py_ssize_t task, part, gi, b, c, c1, co
    cdef fn_region region
    cdef double t0
    nthreads = fn_region_threads(nthreads)
    fn_region_begin(&region)
    for task in prange(n_parts * groups * blocks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        part = task // (groups * blocks)
        gi = task // blocks % groups
        b = task % blocks
        co = gi * Cog + b * width
        c1 = (part + 1) * n_chunks // n_parts
        for c in range(part * n_chunks // n_parts, c1):
            conv_weight_grad(g, x, gi * g.Cg, dy, C_out, co, min(width, Cog - b * width),
                             dw_partial + part * K * C_out + co, C_out,
                             c * chunk, min((c + 1) * chunk, rows), scratch + threadid() * sstride)
        fn_add_busy(&region.busy, t0)
    if nthreads > 1:
        fn_region_end(&region)


cdef object _flipped_weights(const floating* w, const Geometry* g, Py_ssize_t groups, Py_ssize_t Cog):
    """wflip[gi, (i * kw + j) * Cog + co, ci] = w[kh - 1 - i, kw - 1 - j, ci, gi * Cog + co]:
    the weights of the stride-1 dx as a convolution of dy, a (Cg, Cog) block
    transposed per tap and group."""
    cdef Py_ssize_t taps = g.kh * g.kw, C_out = groups * Cog, t, gi
    out = np.empty((groups, taps * Cog, g.Cg), dtype=np.float64 if floating is double else np.float32)
    cdef floating[:, :, ::1] f = out
    with nogil:
        for gi in range(groups):
            for t in range(taps):
                transpose_matrix(g.Cg, Cog, w + (taps - 1 - t) * g.Cg * C_out + gi * Cog, C_out,
                                 &f[gi, t * Cog, 0], g.Cg)
    return out


cdef object _weight_grad(const floating* x, const floating* dy, const Geometry* geo,
                         Py_ssize_t groups, Py_ssize_t C_out):
    """dw as a (kh * kw * Cg, C_out) array: partial sums over parts of the batch (as
    many as _DW_PARTIAL_BYTES of them hold, as many as make _DW_TASKS tasks) added in order."""
    cdef bint dbl = floating is double
    cdef fn_conv_geom g = _fn_geometry(geo)
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t rows = g.N * g.Ho
    cdef Py_ssize_t item = <Py_ssize_t>sizeof(floating)
    # rows per chunk: a chunk's share of dy stays cached while the taps go over it
    cdef Py_ssize_t chunk = max(1, _DW_CHUNK_BYTES // max(1, g.Wo * C_out * item))
    cdef Py_ssize_t n_chunks = (rows + chunk - 1) // chunk
    cdef Py_ssize_t width = 64
    cdef Py_ssize_t col_tasks = groups * ((C_out // groups + width - 1) // width)
    cdef Py_ssize_t n_parts = max(1, min((_DW_TASKS + col_tasks - 1) // col_tasks, n_chunks,
                                         _DW_PARTIAL_BYTES // max(1, K * C_out * item)))
    cdef Py_ssize_t tasks = n_parts * col_tasks
    cdef int nthreads = <int>max(1, min(_threads(), tasks))
    cdef Py_ssize_t t
    cdef Py_ssize_t sstride = <Py_ssize_t>conv_dw_scratch(dbl, chunk)
    cdef Py_ssize_t[::1] scratch = np.empty(max(1, nthreads * sstride), dtype=np.intp)
    partial_arr = np.zeros((n_parts, K * C_out), dtype=np.float64 if dbl else np.float32)
    cdef floating[:, ::1] partial = partial_arr
    with nogil:
        _weight_grad_tasks(&g, x, dy, groups, C_out, &partial[0, 0], n_parts, chunk, width,
                           <void**>&scratch[0], sstride, nthreads)
    dw = partial_arr[0]
    for t in range(1, n_parts):
        dw += partial_arr[t]
    return dw


# ---------------------------------------------------------------------------
# dx by columns: dcols = dy @ w^T, then col2im

cdef void _dx_by_columns_chunks(const floating* dy, const floating* packed, Py_ssize_t psize, floating* dx,
                             floating* work, const Geometry* g, Py_ssize_t groups, Py_ssize_t C_out,
                             Py_ssize_t images, int nthreads) noexcept nogil:
    """dx (zeroed) += col2im(dy @ w_g^T) of every group, `images` images per chunk,
    chunks spread over the threads (each owns its images' part of dx)."""
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t HoWo = g.Ho * g.Wo
    cdef Py_ssize_t n_chunks = (g.N + images - 1) // images
    cdef Py_ssize_t c, gi, r0, r1, q
    cdef floating* buf
    cdef fn_region region
    cdef double t0
    nthreads = fn_region_threads(nthreads)
    fn_region_begin(&region)
    for c in prange(n_chunks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        buf = work + threadid() * images * HoWo * K
        r0 = c * images * HoWo
        r1 = min((c + 1) * images, g.N) * HoWo
        for gi in range(groups):
            gemm_nn_mt(r1 - r0, K, Cog, dy + r0 * C_out + gi * Cog, C_out, packed + gi * psize, NULL,
                       buf, K, False, 1)
            for q in range((r0 // HoWo) * g.H, (r1 // HoWo) * g.H):
                _col2im_input_row(dx, buf, g, q // g.H, q % g.H, r0, r1, gi * g.Cg)
        fn_add_busy(&region.busy, t0)
    if nthreads > 1:
        fn_region_end(&region)


cdef void _dx_by_columns(const floating* dy, const floating* w, floating* dx, const Geometry* g,
                      Py_ssize_t groups, Py_ssize_t C_out, Py_ssize_t workspace_bytes) except *:
    cdef bint dbl = floating is double
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t image_bytes = g.Ho * g.Wo * K * <Py_ssize_t>sizeof(floating)
    cdef Py_ssize_t psize = <Py_ssize_t>packed_size(dbl, Cog, K)
    # whole images per chunk (threads own disjoint parts of dx), about _CHUNK_BYTES of
    # columns each, all chunks in flight within the workspace
    cdef Py_ssize_t images = max(1, min(g.N, _CHUNK_BYTES // max(1, image_bytes)))
    cdef int nthreads = <int>max(1, min(_threads(), (g.N + images - 1) // images,
                                        workspace_bytes // max(1, images * image_bytes)))
    images = max(1, min(images, workspace_bytes // max(1, nthreads * image_bytes)))
    dtype = np.float64 if dbl else np.float32
    cdef floating[::1] packed = np.empty(max(1, groups * psize), dtype=dtype)
    cdef floating[::1] work = np.empty(max(1, nthreads * images * g.Ho * g.Wo * K), dtype=dtype)
    cdef Py_ssize_t gi
    with nogil:
        for gi in range(groups):
            # op(B) = w_g^T, w_g the (K, Cog) block of group gi (row stride C_out)
            pack_t(Cog, K, w + gi * Cog, C_out, &packed[gi * psize])
        _dx_by_columns_chunks(dy, &packed[0], psize, dx, &work[0], g, groups, C_out, images, nthreads)


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



# A one-channel input with at most this many output channels runs the direct kernel
# (fn_gemm.h's conv1_rows) instead of the implicit GEMM.
cdef Py_ssize_t _CONV1_MAX_COUT = 32


cdef void _forward_one_channel(const fn_conv_geom* g, const floating* xp, Py_ssize_t Hp, Py_ssize_t Wp,
                               const floating* wp, Py_ssize_t Cp, Py_ssize_t C_out, const floating* bias,
                               floating* y, int nthreads) noexcept nogil:
    """Every output row of a one-channel convolution, in blocks of rows spread over the
    threads (each row computed whole by one thread: the same bits at any count)."""
    cdef Py_ssize_t rows = g.N * g.Ho
    cdef Py_ssize_t per = max(1, _BLOCK_PIXELS // max(1, g.Wo))
    cdef Py_ssize_t nblocks = (rows + per - 1) // per
    cdef Py_ssize_t blk
    cdef fn_region region
    cdef double t0
    nthreads = fn_region_threads(<int>min(nthreads, nblocks))
    fn_region_begin(&region)
    for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        conv1_rows(g, xp, Hp, Wp, wp, Cp, C_out, bias, y, blk * per, min(rows, (blk + 1) * per))
        fn_add_busy(&region.busy, t0)
    if nthreads > 1:
        fn_region_end(&region)


cdef tuple _one_channel_padded(const floating[:, :, :, ::1] x, Geometry* geo):
    """(xp, Hp, Wp): the one-channel input x padded for the direct kernels, (N, Hp, Wp),
    every row and column a window reads inside it."""
    cdef Py_ssize_t Hp = max(geo.H + geo.pt, (geo.Ho - 1) * geo.sh + (geo.kh - 1) * geo.dh + 1)
    cdef Py_ssize_t Wp = max(geo.W + geo.pl, (geo.Wo - 1) + (geo.kw - 1) * geo.dw + 1)
    xp = np.zeros((geo.N, Hp, Wp), dtype=np.float32 if floating is float else np.float64)
    xp[:, geo.pt:geo.pt + geo.H, geo.pl:geo.pl + geo.W] = np.asarray(x)[..., 0]
    return xp, Hp, Wp


cdef bint _one_channel(Geometry* g, Py_ssize_t groups, Py_ssize_t C_out):
    return groups == 1 and g.C == 1 and g.sw == 1 and C_out <= _CONV1_MAX_COUT


cdef object _conv_one_channel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                              const floating* bias, floating* y, Geometry geo):
    """The direct kernel's inputs: x padded and the weights (taps, Cp), Cp a multiple
    of its channel block, zeros past C_out."""
    cdef fn_conv_geom g = _fn_geometry(&geo)
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t Cp = (C_out + 7) // 8 * 8
    cdef Py_ssize_t Hp, Wp
    xp_arr, Hp, Wp = _one_channel_padded(x, &geo)
    wp_arr = np.zeros((geo.kh * geo.kw, Cp), dtype=xp_arr.dtype)
    wp_arr[:, :C_out] = np.asarray(w).reshape(geo.kh * geo.kw, C_out)
    cdef const floating[:, :, ::1] xp = xp_arr
    cdef const floating[:, ::1] wp = wp_arr
    with nogil:
        _forward_one_channel(&g, &xp[0, 0, 0], Hp, Wp, &wp[0, 0], Cp, C_out, bias, y, _threads())


cdef object _weight_grad_one_channel(const floating[:, :, :, ::1] x, const floating* dy, Geometry geo,
                                     Py_ssize_t C_out):
    """dw (taps * C_out,) of a one-channel convolution: the direct kernel's partial sums
    over fixed blocks of output rows (whatever the thread count), added in block order."""
    cdef fn_conv_geom g = _fn_geometry(&geo)
    cdef Py_ssize_t Cp = (C_out + 7) // 8 * 8
    cdef Py_ssize_t taps = geo.kh * geo.kw
    cdef Py_ssize_t rows = geo.N * geo.Ho
    cdef Py_ssize_t per = max(1, 4 * _BLOCK_PIXELS // max(1, geo.Wo))
    cdef Py_ssize_t nblocks = (rows + per - 1) // per
    cdef Py_ssize_t Wv = (geo.Wo + 15) // 16 * 16  # at least the kernel's (Wo rounded up to a vector)
    cdef Py_ssize_t sstride = per * Cp * Wv
    cdef Py_ssize_t Hp, Wp, blk
    cdef int nthreads = <int>max(1, min(_threads(), nblocks))
    xp_arr, Hp, Wp = _one_channel_padded(x, &geo)
    cdef const floating[:, :, ::1] xp = xp_arr
    cdef floating[:, :, ::1] part = np.empty((nblocks, taps, Cp), dtype=xp_arr.dtype)
    cdef floating[::1] scratch = np.empty(nthreads * sstride, dtype=xp_arr.dtype)
    cdef fn_region region
    cdef double t0
    with nogil:
        nthreads = fn_region_threads(nthreads)
        fn_region_begin(&region)
        for blk in prange(nblocks, schedule="dynamic", num_threads=nthreads):
            t0 = fn_main_clock()
            conv1_dw_rows(&g, &xp[0, 0, 0], Hp, Wp, dy, C_out, Cp, &part[blk, 0, 0], blk * per,
                          min(rows, (blk + 1) * per), &scratch[threadid() * sstride])
            fn_add_busy(&region.busy, t0)
        if nthreads > 1:
            fn_region_end(&region)
    return np.asarray(part)[:, :, :C_out].sum(axis=0, dtype=np.float64).astype(xp_arr.dtype).reshape(-1)


cdef object _conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                            const floating[::1] b, bint has_bias, Py_ssize_t groups, Geometry g):
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    dtype = np.float32 if floating is float else np.float64
    y_arr = np.empty((g.N, g.Ho, g.Wo, C_out), dtype=dtype)
    cdef floating[:, :, :, ::1] y = y_arr
    cdef int nthreads = _threads()
    if rows == 0 or C_out == 0:
        return y_arr
    if groups > 1 and g.Cg == 1:
        with nogil:
            _forward_depthwise(x, w, &b[0], has_bias, y, &g, nthreads)
        return y_arr
    if K == 0:
        y_arr[...] = np.asarray(b) if has_bias else 0
        return y_arr
    if _one_channel(&g, groups, C_out):
        _conv_one_channel(x, w, &b[0] if has_bias else NULL, &y[0, 0, 0, 0], g)
        return y_arr
    _implicit_gemm(&x[0, 0, 0, 0], &w[0, 0, 0, 0], C_out // groups, C_out, &b[0] if has_bias else NULL,
                   &y[0, 0, 0, 0], C_out, &g, groups, C_out // groups)
    return y_arr


# ---------------------------------------------------------------------------
# Backward

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
                            Geometry g, Py_ssize_t workspace_bytes, bint need_dx):
    cdef Py_ssize_t C_out = w.shape[3]
    cdef Py_ssize_t Cog = C_out // groups
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.Cg
    cdef Py_ssize_t K_t = g.kh * g.kw * Cog
    cdef int nthreads = _threads()
    dtype = np.float32 if floating is float else np.float64
    cdef bint depthwise = groups > 1 and g.Cg == 1
    # dx by columns and col2im for a strided convolution, and where the transposed
    # convolution's output (C_in per group) would fill less than half a panel
    cdef bint dbl = floating is double
    cdef bint by_columns = g.sh > 1 or g.sw > 1 or 2 * g.Cg < fn_panel_width(dbl)
    # without need_dx, only the depthwise kernel (which computes both together) writes dx
    dx_shape = (1, 1, 1, 1)
    if need_dx or depthwise:
        dx_shape = (g.N, g.H, g.W, g.C)
    dx_arr = (np.zeros if by_columns and not depthwise else np.empty)(dx_shape, dtype=dtype)
    dw_arr = np.empty((g.kh, g.kw, g.Cg, C_out), dtype=dtype)
    db_arr = np.empty(C_out, dtype=dtype) if has_bias else None
    if rows == 0 or K == 0 or C_out == 0:
        dx_arr[...] = 0
        dw_arr[...] = 0
        if has_bias:
            db_arr[...] = np.asarray(dy).reshape(-1, C_out).sum(axis=0) if C_out else 0
        return dx_arr if need_dx else None, dw_arr, db_arr
    cdef floating[:, :, :, ::1] dx = dx_arr
    cdef floating[::1] db
    cdef double[:, ::1] partial
    cdef const floating[:, :, ::1] wflip
    cdef Geometry gt = g
    if depthwise:
        partial = np.empty((nthreads, g.kh * g.kw * C_out), dtype=np.float64)
        with nogil:
            _backward_depthwise(x, w, dy, dx, partial, &g, nthreads)
        dw_arr[...] = np.asarray(partial).sum(axis=0).reshape(dw_arr.shape)
    else:
        if _one_channel(&g, groups, C_out):
            dw_arr.reshape(-1)[...] = _weight_grad_one_channel(x, &dy[0, 0, 0, 0], g, C_out)
        else:
            dw_arr.reshape(-1)[...] = _weight_grad(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], &g, groups, C_out)
        if not need_dx:
            pass
        elif by_columns:
            _dx_by_columns(&dy[0, 0, 0, 0], &w[0, 0, 0, 0], &dx[0, 0, 0, 0], &g, groups, C_out, workspace_bytes)
        else:
            # dx is the stride-1 convolution of dy (padded by the kernel's reach minus the
            # padding) with the flipped kernel, input and output channels swapped:
            # wflip[gi, (i, j, co), ci] = w[kh - 1 - i, kw - 1 - j, ci, gi * Cog + co]
            gt.H, gt.W, gt.C = g.Ho, g.Wo, C_out
            gt.Ho, gt.Wo = g.H, g.W
            gt.pt = (g.kh - 1) * g.dh - g.pt
            gt.pl = (g.kw - 1) * g.dw - g.pl
            gt.Cg = Cog
            wflip = _flipped_weights(&w[0, 0, 0, 0], &g, groups, Cog)
            _implicit_gemm(&dy[0, 0, 0, 0], &wflip[0, 0, 0], K_t * g.Cg, g.Cg, NULL,
                           &dx[0, 0, 0, 0], g.C, &gt, groups, g.Cg)
    if has_bias:
        db = db_arr
        with nogil:
            column_sums_mt(rows, C_out, &dy[0, 0, 0, 0], &db[0], nthreads)
    return dx_arr if need_dx else None, dw_arr, db_arr


# ---------------------------------------------------------------------------
# Kernels (docs/KERNELS.md)

def conv2d_forward(x, w, b, stride, pads, dilation, groups, out_hw, workspace_bytes):
    """y = conv(x, w) + b in NHWC; state keeps only x, w and the geometry."""
    cdef Geometry g = _geometry(x.shape, w.shape[:2], stride, pads, dilation, out_hw, w.shape[2])
    has_bias = b is not None
    bias = b if has_bias else np.zeros(1, dtype=x.dtype)
    if x.dtype == np.float32:
        y = _conv2d_forward[float](x, w, bias, has_bias, groups, g)
    else:
        y = _conv2d_forward[double](x, w, bias, has_bias, groups, g)
    state = (x, w, has_bias, stride, pads, dilation, groups, out_hw, workspace_bytes)
    return y, state


def conv2d_backward(dy, state, need_dx=True):
    """(dx, dw, db) from dy and the state of conv2d_forward; db is None without a bias,
    dx None when need_dx is false (it is then not computed)."""
    x, w, has_bias, stride, pads, dilation, groups, out_hw, workspace_bytes = state
    cdef Geometry g = _geometry(x.shape, w.shape[:2], stride, pads, dilation, out_hw, w.shape[2])
    if x.dtype == np.float32:
        return _conv2d_backward[float](dy, x, w, has_bias, groups, g, workspace_bytes, need_dx)
    return _conv2d_backward[double](dy, x, w, has_bias, groups, g, workspace_bytes, need_dx)


cdef object _im2col(const floating[:, :, :, ::1] x, Geometry g):
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    cdef Py_ssize_t K = g.kh * g.kw * g.C
    dtype = np.float32 if floating is float else np.float64
    cols_arr = np.empty((rows, K), dtype=dtype)
    cdef floating[:, ::1] cols = cols_arr
    if rows == 0 or K == 0:
        return cols_arr
    with nogil:
        _im2col_rows(&x[0, 0, 0, 0], &cols[0, 0], &g, 0, rows, 0, _threads())
    return cols_arr


cdef object _col2im(const floating[:, ::1] cols, Geometry g):
    cdef Py_ssize_t rows = g.N * g.Ho * g.Wo
    dtype = np.float32 if floating is float else np.float64
    x_arr = np.zeros((g.N, g.H, g.W, g.C), dtype=dtype)
    cdef floating[:, :, :, ::1] x = x_arr
    if rows == 0 or g.C == 0 or x_arr.size == 0:
        return x_arr
    with nogil:
        _col2im_rows(&x[0, 0, 0, 0], &cols[0, 0], &g, 0, rows, 0, _threads())
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

