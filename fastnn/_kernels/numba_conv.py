"""Numba convolution kernels, NHWC (see docs/KERNELS.md).

Dense and grouped convolutions are im2col + BLAS GEMM. The output rows ``(n, oh)``
are split into one contiguous range ("slot") per thread. A slot fills its own im2col
buffer chunk by chunk, each chunk of about ``_CHUNK_BYTES`` (OpenBLAS runs these
tall-and-thin GEMMs markedly faster on a few thousand rows than on the whole batch),
and multiplies it with a single-threaded NumPy GEMM while the buffer is still hot.

Slots run on plain Python threads: the im2col/col2im kernels are serial and release
the GIL, and so does BLAS, which is held to one thread (threadpoolctl) while slots
run. Alternating Numba ``prange`` kernels with multi-threaded BLAS calls instead made
two threads ten times slower than one: after its part, each of the two thread pools
keeps its workers spinning, and on a small machine they take the cores the other
pool needs. NumPy's BLAS is used rather than SciPy's (the one Numba can call from
compiled code) because it can be the faster build of the two.

Determinism: slot and chunk boundaries depend only on the shape and the thread
count, and the slots' partial weight gradients are summed in slot order.

im2col column order, as in the contract: column ``(i * kw + j) * C + c`` holds
``xpad[n, oh*sh + i*dh, ow*sw + j*dw, c]``, so ``cols @ w.reshape(kh*kw*C, C_out)``
is the convolution. A group's columns follow the same order over its own channels,
and its GEMM reads its columns of ``w`` in place (leading dimension ``C_out``).

Depthwise convolutions (``groups == C_in``) skip im2col: each output is a short dot
product over the window, and a direct loop vectorised over channels beats
``C_in`` GEMMs with one column each.

The state keeps only ``x`` and ``w`` (already alive in the caller); backward
rebuilds each im2col chunk instead of holding the whole buffer.
"""
import contextlib
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from ._threads import blas_on_one_thread as _blas_on_one_thread

# Target size of one im2col chunk. GEMM throughput with the narrow (C_out <= 256)
# right operand peaks for chunks of about this size (they stay in L2/L3 next to w).
_CHUNK_BYTES = 2 * 2**20
# Fixed number of partial sums in reductions over the batch: the result then
# depends on the shape only, never on how many threads ran.
_REDUCE_BLOCKS = 16


@njit(cache=True, parallel=True)
def _im2col_rows(x, geom, r0, r1, c0, cg, cols):
    """Fill cols with the patches of output rows r0 <= n * H_out + oh < r1.

    Only channels c0 <= c < c0 + cg are taken (one group); cols row 0 is the first
    pixel of output row r0. geom = (kh, kw, sh, sw, top, left, dh, dw, H_out, W_out);
    top and left may be negative (the window then starts inside the input).
    """
    height, width, chans = x.shape[1], x.shape[2], x.shape[3]
    kh, kw, sh, sw, top, left, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    run = kw * cg
    contiguous = dw == 1 and cg == chans
    # Each input row is first copied into a zero-padded row covering every window
    # column, so the patch copies below need no border tests.
    span = (w_out - 1) * sw + (kw - 1) * dw + 1
    lo = min(max(0, -left), span)
    hi = max(lo, min(width, span - left))
    for r in prange(r0, r1):
        n = r // h_out
        oh = r - n * h_out
        block = cols[(r - r0) * w_out:(r - r0 + 1) * w_out]
        padded = np.zeros(span * chans, dtype=x.dtype)
        for i in range(kh):
            h = oh * sh - top + i * dh
            if h < 0 or h >= height:
                for ow in range(w_out):
                    d = block[ow, i * run:(i + 1) * run]
                    for t in range(run):
                        d[t] = 0
                continue
            src = x[n, h].reshape(width * chans)[lo * chans:hi * chans]
            dst = padded[(lo + left) * chans:(hi + left) * chans]
            for t in range(src.size):
                dst[t] = src[t]
            if contiguous and run < 32:
                # Short runs (few channels): plain scalar copies beat making views.
                for ow in range(w_out):
                    base = ow * sw * chans
                    for t in range(run):
                        block[ow, i * run + t] = padded[base + t]
            elif contiguous:
                # The kw cells of a dense window row are adjacent in NHWC.
                for ow in range(w_out):
                    d = block[ow, i * run:(i + 1) * run]
                    s = padded[ow * sw * chans:ow * sw * chans + run]
                    for t in range(run):
                        d[t] = s[t]
            else:
                for ow in range(w_out):
                    for j in range(kw):
                        d = block[ow, i * run + j * cg:i * run + (j + 1) * cg]
                        base = (ow * sw + j * dw) * chans + c0
                        s = padded[base:base + cg]
                        for c in range(cg):
                            d[c] = s[c]


def _serial(kernel, name):
    """A serial, GIL-releasing compilation of a prange kernel, for one slot's thread.

    Compiled from the same source (prange is range there) under its own name, so
    its on-disk cache entry is its own.
    """
    fn = types.FunctionType(kernel.py_func.__code__.replace(co_name=name, co_qualname=name),
                            kernel.py_func.__globals__, name)
    fn.__qualname__ = name
    return njit(cache=True, nogil=True)(fn)


_im2col_chunk = _serial(_im2col_rows, "_im2col_chunk")


@njit(cache=True)
def _col2im_row(cols, geom, r0, r1, c0, cg, dx, n, h):
    """Add into dx[n, h] what cols (output rows r0..r1, laid out as im2col) holds for it."""
    width, chans = dx.shape[2], dx.shape[3]
    kh, kw, sh, sw, top, left, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    run = kw * cg
    contiguous = dw == 1 and cg == chans
    dst_row = dx[n, h].reshape(width * chans)
    for i in range(kh):
        t = h + top - i * dh
        if t < 0 or t % sh != 0:
            continue
        oh = t // sh
        r = n * h_out + oh
        if oh >= h_out or r < r0 or r >= r1:
            continue
        for ow in range(w_out):
            src = cols[(r - r0) * w_out + ow, i * run:(i + 1) * run]
            w0 = ow * sw - left
            if contiguous:
                jlo = min(kw, max(0, -w0))
                jhi = max(jlo, min(kw, width - w0))
                d = dst_row[(w0 + jlo) * chans:(w0 + jhi) * chans]
                s = src[jlo * cg:jhi * cg]
                for u in range(d.size):
                    d[u] += s[u]
            else:
                for j in range(kw):
                    wc = w0 + j * dw
                    if wc >= 0 and wc < width:
                        d = dst_row[wc * chans + c0:wc * chans + c0 + cg]
                        s = src[j * cg:(j + 1) * cg]
                        for c in range(cg):
                            d[c] += s[c]


@njit(cache=True, parallel=True)
def _col2im_rows(cols, geom, r0, r1, c0, cg, dx):
    """Add cols (output rows r0..r1, as _im2col_rows lays them out) into dx.

    Parallel over input rows (n, h): each thread owns the dx rows it writes, so
    no two threads touch one cell and the summation order is fixed.
    """
    height = dx.shape[1]
    h_out = geom[8]
    n_first = r0 // h_out
    n_last = (r1 - 1) // h_out
    for q in prange((n_last - n_first + 1) * height):
        n = n_first + q // height
        _col2im_row(cols, geom, r0, r1, c0, cg, dx, n, q - (n - n_first) * height)


@njit(cache=True, nogil=True)
def _col2im_chunk(cols, geom, r0, r1, c0, cg, dx):
    """Serial _col2im_rows, for a thread that owns the dx images of rows r0..r1."""
    h_out = geom[8]
    for n in range(r0 // h_out, (r1 - 1) // h_out + 1):
        for h in range(dx.shape[1]):
            _col2im_row(cols, geom, r0, r1, c0, cg, dx, n, h)


@njit(cache=True, parallel=True)
def _column_sums(a, nblocks):
    """Sums over the rows of a 2-D array, accumulated in float64 in fixed blocks."""
    rows, ncols = a.shape
    partial = np.zeros((nblocks, ncols))
    for blk in prange(nblocks):
        lo = blk * rows // nblocks
        hi = (blk + 1) * rows // nblocks
        acc = partial[blk]
        for r in range(lo, hi):
            for c in range(ncols):
                acc[c] += a[r, c]
    out = np.zeros(ncols, dtype=a.dtype)
    for c in range(ncols):
        s = 0.0
        for blk in range(nblocks):
            s += partial[blk, c]
        out[c] = s
    return out


# Same blocks, same sums: serially for when BLAS threads are to follow (see the
# module docstring), so no Numba workers are left spinning beside them.
_column_sums_serial = _serial(_column_sums, "_column_sums_serial")


@njit(cache=True, parallel=True)
def _depthwise_forward(x, w, b, has_bias, geom, y):
    """Direct depthwise convolution: output channel co reads input channel co // mult."""
    n_img, height, width, chans = x.shape
    kh, kw, sh, sw, top, left, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    c_out = w.shape[3]
    mult = c_out // chans
    for r in prange(n_img * h_out):
        n = r // h_out
        oh = r - n * h_out
        for ow in range(w_out):
            acc = y[n, oh, ow]
            if has_bias:
                for co in range(c_out):
                    acc[co] = b[co]
            else:
                for co in range(c_out):
                    acc[co] = 0
            for i in range(kh):
                h = oh * sh - top + i * dh
                if h < 0 or h >= height:
                    continue
                for j in range(kw):
                    wc = ow * sw - left + j * dw
                    if wc < 0 or wc >= width:
                        continue
                    xv = x[n, h, wc]
                    wv = w[i, j, 0]
                    if mult == 1:
                        for c in range(chans):
                            acc[c] += xv[c] * wv[c]
                    else:
                        for c in range(chans):
                            for k in range(mult):
                                acc[c * mult + k] += xv[c] * wv[c * mult + k]


@njit(cache=True, parallel=True)
def _depthwise_backward_input(dy, w, geom, dx):
    """dx of a depthwise convolution, gathered per input row (n, h)."""
    n_img, height, width, chans = dx.shape
    kh, kw, sh, sw, top, left, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    c_out = w.shape[3]
    mult = c_out // chans
    for q in prange(n_img * height):
        n = q // height
        h = q - n * height
        dxrow = dx[n, h]
        for wc in range(width):
            for c in range(chans):
                dxrow[wc, c] = 0
        for i in range(kh):
            t = h + top - i * dh
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            if oh >= h_out:
                continue
            for ow in range(w_out):
                g = dy[n, oh, ow]
                for j in range(kw):
                    wc = ow * sw - left + j * dw
                    if wc < 0 or wc >= width:
                        continue
                    wv = w[i, j, 0]
                    d = dxrow[wc]
                    if mult == 1:
                        for c in range(chans):
                            d[c] += g[c] * wv[c]
                    else:
                        for c in range(chans):
                            s = d[c]
                            for k in range(mult):
                                s += g[c * mult + k] * wv[c * mult + k]
                            d[c] = s


@njit(cache=True, parallel=True)
def _depthwise_backward_weight(x, dy, geom, kh, kw, nblocks):
    """dw of a depthwise convolution, summed in fixed blocks of output rows."""
    n_img, height, width, chans = x.shape
    _, _, sh, sw, top, left, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    c_out = dy.shape[3]
    mult = c_out // chans
    rows = n_img * h_out
    partial = np.zeros((nblocks, kh, kw, c_out), dtype=x.dtype)
    for blk in prange(nblocks):
        part = partial[blk]
        for r in range(blk * rows // nblocks, (blk + 1) * rows // nblocks):
            n = r // h_out
            oh = r - n * h_out
            for i in range(kh):
                h = oh * sh - top + i * dh
                if h < 0 or h >= height:
                    continue
                for ow in range(w_out):
                    g = dy[n, oh, ow]
                    for j in range(kw):
                        wc = ow * sw - left + j * dw
                        if wc < 0 or wc >= width:
                            continue
                        xv = x[n, h, wc]
                        p = part[i, j]
                        if mult == 1:
                            for c in range(chans):
                                p[c] += xv[c] * g[c]
                        else:
                            for c in range(chans):
                                for k in range(mult):
                                    p[c * mult + k] += xv[c] * g[c * mult + k]
    dwt = np.zeros((kh, kw, 1, c_out), dtype=x.dtype)
    for blk in range(nblocks):
        for i in range(kh):
            for j in range(kw):
                for co in range(c_out):
                    dwt[i, j, 0, co] += partial[blk, i, j, co]
    return dwt


def _geometry(ksize, stride, pads, dilation, out_hw):
    return np.array((ksize[0], ksize[1], stride[0], stride[1], pads[0], pads[2],
                     dilation[0], dilation[1], out_hw[0], out_hw[1]), dtype=np.int64)




_pool = None
_pool_lock = threading.Lock()


def _quiet(work, s):
    """work(s) on a pool thread with NumPy's floating-point warnings off, as on the
    calling thread (numba_backend.py): the pool's threads do not share its errstate."""
    with np.errstate(all="ignore"):
        work(s)


def _run_slots(work, nslots):
    """work(s) for s < nslots, slot 0 on the calling thread, the others on the pool."""
    global _pool
    if nslots == 1:
        work(0)
        return
    with _pool_lock:
        if _pool is None or _pool._max_workers < nslots - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=nslots - 1, thread_name_prefix="fastnn-numba-conv")
        pool = _pool
    futures = [pool.submit(_quiet, work, s) for s in range(1, nslots)]
    try:
        work(0)
    finally:
        for f in futures:
            f.result()


def _plan(total, unit, row_bytes, workspace_bytes):
    """(slot bounds, rows per chunk, context, (im2col, col2im) kernels) for a pass over ``total`` output rows (n, oh).

    One slot per thread; ``unit``: slots hold whole multiples of this many rows (H_out
    when slots scatter into dx, so that no two write one cell). A slot's chunks are of
    equal size, about _CHUNK_BYTES of im2col rows, and all slots' buffers together stay
    within workspace_bytes (one row always fits: the public layer checked one image).
    """
    row_bytes = max(1, row_bytes)  # zero input channels make empty rows
    threads = min(numba.get_num_threads(), max(1, total // unit), max(1, workspace_bytes // row_bytes))
    context = contextlib.nullcontext()
    if threads > 1:
        context = _blas_on_one_thread()
        if context is None:  # BLAS threads started from every slot would oversubscribe
            threads, context = 1, contextlib.nullcontext()
    units = total // unit
    bounds = [(s * units // threads) * unit for s in range(threads + 1)]
    bounds[-1] = total
    per = max(hi - lo for lo, hi in zip(bounds, bounds[1:]))
    budget = min(_CHUNK_BYTES, workspace_bytes // threads)
    chunks = max(1, -(-per // max(1, min(per, budget // row_bytes))))
    if numba.get_num_threads() == 1:
        # Numba compiles these loops faster as (one-thread) parallel loops than serially;
        # with one thread nothing else runs beside them.
        kernels = _im2col_rows, _col2im_rows
    else:
        kernels = _im2col_chunk, _col2im_chunk
    return bounds, -(-per // chunks), context, kernels


def _is_pointwise(w, stride, pads, groups):
    return w.shape[0] == 1 and w.shape[1] == 1 and stride == (1, 1) and not any(pads) and groups == 1


def _group_weights(w, groups):
    """Per group, the (kh*kw*Cg, C_out/groups) GEMM operand (views when groups == 1)."""
    kh, kw, cg, c_out = w.shape
    if groups == 1:
        return [w.reshape(kh * kw * cg, c_out)]
    cog = c_out // groups
    return [np.ascontiguousarray(w[:, :, :, g * cog:(g + 1) * cog]).reshape(kh * kw * cg, cog)
            for g in range(groups)]


def _gemm_conv(x, geom, cg, wmats, bias, out2, row_bytes, workspace_bytes):
    """out2 = im2col(x) @ W (+ bias), group by group, im2col channels cg and W = wmats[g] per group.

    ``out2`` is (rows, C) with rows ordered like im2col's; each slot fills and
    consumes its own buffer chunk by chunk.
    """
    n_img, chans = x.shape[0], x.shape[3]
    w_out = int(geom[9])
    kcols = wmats[0].shape[0]
    cog = wmats[0].shape[1]
    groups = len(wmats)
    bounds, step, context, (to_cols, _) = _plan(n_img * int(geom[8]), 1, row_bytes, workspace_bytes)

    def slot(s):
        buf = np.empty((step * w_out, kcols), dtype=x.dtype)
        for r0 in range(bounds[s], bounds[s + 1], step):
            r1 = min(bounds[s + 1], r0 + step)
            cols = buf[:(r1 - r0) * w_out]
            outs = out2[r0 * w_out:r1 * w_out]
            for g in range(groups):
                to_cols(x, geom, r0, r1, g * cg, cg, cols)
                np.matmul(cols, wmats[g], out=outs[:, g * cog:(g + 1) * cog] if groups > 1 else outs)
            if bias is not None:
                outs += bias

    with context:
        _run_slots(slot, len(bounds) - 1)


def conv2d_forward(x, w, b, stride, pads, dilation, groups, out_hw, workspace_bytes):
    n_img, height, width, chans = x.shape
    kh, kw, cg, c_out = w.shape
    h_out, w_out = out_hw
    y = np.empty((n_img, h_out, w_out, c_out), dtype=x.dtype)
    state = (x, w, b is not None, stride, pads, dilation, groups, out_hw, workspace_bytes)
    if n_img == 0:
        return y, state
    geom = _geometry((kh, kw), stride, pads, dilation, out_hw)
    if groups == chans and groups > 1:
        bias = b if b is not None else np.zeros(c_out, dtype=x.dtype)
        _depthwise_forward(x, w, bias, b is not None, geom, y)
        return y, state
    y2 = y.reshape(n_img * h_out * w_out, c_out)
    if _is_pointwise(w, stride, pads, groups):
        # x is its own im2col matrix: one GEMM on BLAS's own threads, no Numba threads.
        np.matmul(x.reshape(n_img * height * width, chans), w.reshape(chans, c_out), out=y2)
        if b is not None:
            y2 += b
        return y, state
    _gemm_conv(x, geom, cg, _group_weights(w, groups), b, y2, w_out * kh * kw * cg * x.itemsize,
               workspace_bytes)
    return y, state


def conv2d_backward(dy, state, need_dx=True):
    x, w, has_bias, stride, pads, dilation, groups, out_hw, workspace_bytes = state
    n_img, height, width, chans = x.shape
    kh, kw, cg, c_out = w.shape
    h_out, w_out = out_hw
    dy2 = dy.reshape(n_img * h_out * w_out, c_out)
    sums = _column_sums if numba.get_num_threads() == 1 else _column_sums_serial
    db = sums(dy2, _REDUCE_BLOCKS) if has_bias else None
    if n_img == 0:
        return np.zeros(x.shape, dtype=x.dtype) if need_dx else None, np.zeros(w.shape, dtype=x.dtype), db
    geom = _geometry((kh, kw), stride, pads, dilation, out_hw)
    if groups == chans and groups > 1:
        dx = None
        if need_dx:
            dx = np.empty(x.shape, dtype=x.dtype)
            _depthwise_backward_input(dy, w, geom, dx)
        dw = _depthwise_backward_weight(x, dy, geom, kh, kw, min(_REDUCE_BLOCKS, n_img * h_out))
        return dx, dw, db
    if _is_pointwise(w, stride, pads, groups):
        # Two GEMMs on BLAS's own threads.
        x2 = x.reshape(n_img * height * width, chans)
        w2 = w.reshape(chans, c_out)
        dw = np.matmul(x2.T, dy2).reshape(w.shape)
        dx = np.matmul(dy2, w2.T).reshape(x.shape) if need_dx else None
        return dx, dw, db
    cog = c_out // groups
    kcols = kh * kw * cg
    wmats = _group_weights(w, groups)
    transposed = (_dx_by_transposed_conv(stride, cg, cog)
                  and width * kh * kw * cog * x.itemsize <= workspace_bytes)
    dx = None
    if need_dx:
        dx = np.empty(x.shape, dtype=x.dtype) if transposed else np.zeros(x.shape, dtype=x.dtype)
    # Slots scatter into dx through col2im, so each must own whole images.
    bounds, step, context, (to_cols, from_cols) = _plan(n_img * h_out, 1 if transposed else h_out,
                                  w_out * kcols * x.itemsize, workspace_bytes)
    dw_parts = np.empty((len(bounds) - 1, kcols, c_out), dtype=x.dtype)

    def slot(s):
        part = dw_parts[s]
        if bounds[s] == bounds[s + 1]:
            part[...] = 0
        buf = np.empty((step * w_out, kcols), dtype=x.dtype)
        tmp = np.empty((kcols, cog), dtype=x.dtype)
        for r0 in range(bounds[s], bounds[s + 1], step):
            r1 = min(bounds[s + 1], r0 + step)
            cols = buf[:(r1 - r0) * w_out]
            dys = dy2[r0 * w_out:r1 * w_out]
            for g in range(groups):
                dyg = dys[:, g * cog:(g + 1) * cog]
                dwg = part[:, g * cog:(g + 1) * cog]
                to_cols(x, geom, r0, r1, g * cg, cg, cols)
                if r0 == bounds[s]:
                    np.matmul(cols.T, dyg, out=dwg)
                else:
                    np.matmul(cols.T, dyg, out=tmp)
                    dwg += tmp
                if not transposed and need_dx:
                    # cols has served dw; it now receives this chunk's column gradients.
                    np.matmul(dyg, wmats[g].T, out=cols)
                    from_cols(cols, geom, r0, r1, g * cg, cg, dx)

    with context:
        _run_slots(slot, len(bounds) - 1)
    if transposed and need_dx:
        _transposed_conv(dy, w, groups, pads, dilation, workspace_bytes, dx)
    # Slot order: a fixed summation order for a given thread count.
    dw = dw_parts[0] if len(dw_parts) == 1 else dw_parts[0].copy()
    for part in dw_parts[1:]:
        dw += part
    return dx, dw.reshape(w.shape), db


def _dx_by_transposed_conv(stride, cg, cog):
    """Whether dx is better computed as a convolution of dy than through col2im.

    With stride 1, dx is dy convolved with the flipped kernel (channels swapped):
    one well-shaped GEMM per chunk writing dx directly, no scatter pass. When the
    input has few channels, that GEMM would be very thin and its im2col of dy
    large, so col2im wins there.
    """
    return stride == (1, 1) and cg >= 16 and cg * 4 >= cog


def _transposed_conv(dy, w, groups, pads, dilation, workspace_bytes, dx):
    """dx[n, h, w, c] = sum over i, j, co of dy[n, h + top - i*dh, w + left - j*dw, co] * w[i, j, c, co].

    The im2col of dy with the kernel flipped: tap i' = kh - 1 - i sits at
    dy row h - (dh*(kh-1) - top) + i'*dh, i.e. padding dh*(kh-1) - top (which may
    be negative: im2col only bounds-checks) and output size (H, W).
    """
    n_img, height, width, chans = dx.shape
    kh, kw, cg, c_out = w.shape
    cog = c_out // groups
    dh, dw_ = dilation
    top, left = pads[0], pads[2]
    geom = _geometry((kh, kw), (1, 1), (dh * (kh - 1) - top, 0, dw_ * (kw - 1) - left, 0),
                     dilation, (height, width))
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    wmats = [np.ascontiguousarray(flipped[:, :, g * cog:(g + 1) * cog, :]).reshape(kh * kw * cog, cg)
             for g in range(groups)]
    _gemm_conv(dy, geom, cog, wmats, None, dx.reshape(n_img * height * width, chans),
               width * kh * kw * cog * dx.itemsize, workspace_bytes)


def im2col(x, ksize, stride, pads, dilation, out_hw):
    n_img, _, _, chans = x.shape
    h_out, w_out = out_hw
    cols = np.empty((n_img * h_out * w_out, ksize[0] * ksize[1] * chans), dtype=x.dtype)
    if n_img:
        _im2col_rows(x, _geometry(ksize, stride, pads, dilation, out_hw), 0, n_img * h_out, 0, chans, cols)
    return cols


def col2im(cols, x_shape, ksize, stride, pads, dilation, out_hw):
    x_shape = tuple(int(s) for s in x_shape)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    n_img, chans = x_shape[0], x_shape[3]
    if n_img:
        _col2im_rows(cols, _geometry(ksize, stride, pads, dilation, out_hw), 0, n_img * out_hw[0], 0, chans, dx)
    return dx
