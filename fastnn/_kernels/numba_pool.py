"""Numba pooling kernels, NHWC (see docs/KERNELS.md).

Pooling is memory-bound, so every kernel is one pass over its input with the
innermost loop over the contiguous channels, parallel over rows of the output
(forward) or of the input (backward).

Max pooling keeps, per output value, the window-local index ``i * kw + j`` of its
first maximum (int32; -1 for a window with no cell inside the input; int8 records
made LLVM's forward loop slower here, 0.64 -> 0.93 ms on P1).
Backward is a gather: each input row collects the gradients of the windows that
cover it, so a thread owns every cell it writes, overlapping windows need no
atomics, and the summation order is fixed. When the windows of an output row do not
overlap (k2 s2), the first output row covering an input row assigns its cells
(zeros between windows) instead of zeroing the row and adding to it.

Inner loops index views from 0: with computed offsets LLVM cannot rule out negative
(wrapped-around) indices inside a prange body and does not vectorise them.
"""
import numpy as np
from numba import njit, prange

from .._arena import empty as _empty


@njit(cache=True)
def _inside(start, step, k, size):
    """The taps [lo, hi) of start + t * step, t < k, that fall in [0, size)."""
    lo = 0
    if start < 0:
        lo = (-start + step - 1) // step
    hi = 0
    if start <= size - 1:
        hi = (size - 1 - start) // step + 1
    hi = min(hi, k)
    lo = min(lo, hi)
    return lo, hi


@njit(cache=True, parallel=True)
def _max_forward(x, geom, y, arg):
    n_img, height, width, chans = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    neg_inf = -np.inf
    for r in prange(n_img * h_out):
        n = r // h_out
        oh = r - n * h_out
        h0 = oh * sh - ph
        ilo, ihi = _inside(h0, dh, kh, height)
        for ow in range(w_out):
            yv = y[n, oh, ow]
            av = arg[n, oh, ow]
            w0 = ow * sw - pw
            jlo, jhi = _inside(w0, dw, kw, width)
            if ilo >= ihi or jlo >= jhi:
                for c in range(chans):
                    yv[c] = neg_inf
                    av[c] = -1
                continue
            # Start from the first cell inside the input, so that a window of -inf
            # still names a (first) maximum.
            xv = x[n, h0 + ilo * dh, w0 + jlo * dw]
            first = ilo * kw + jlo
            for c in range(chans):
                yv[c] = xv[c]
                av[c] = first
            for i in range(ilo, ihi):
                xrow = x[n, h0 + i * dh]
                for j in range(jlo, jhi):
                    if i == ilo and j == jlo:
                        continue
                    xv = xrow[w0 + j * dw]
                    tap = i * kw + j
                    for c in range(chans):
                        v = xv[c]
                        a = yv[c]
                        # Strictly greater keeps the first maximum; the first NaN wins.
                        take = v > a or (v != v and a == a)
                        yv[c] = v if take else a
                        av[c] = tap if take else av[c]


@njit(cache=True, parallel=True)
def _max_backward(dy, arg, geom, dx):
    n_img, height, width, chans = dx.shape
    kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    disjoint = (kw - 1) * dw + 1 <= sw
    for q in prange(n_img * height):
        n = q // height
        h = q - n * height
        dxrow = dx[n, h]
        first = True
        for i in range(kh):
            t = h + ph - i * dh
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            if oh >= h_out:
                continue
            if first and disjoint:
                # each cell of the row is reached by at most one window: assign, and
                # zero the cells no window reaches
                nxt = 0
                for ow in range(w_out):
                    g = dy[n, oh, ow]
                    av = arg[n, oh, ow]
                    for j in range(kw):
                        wc = ow * sw - pw + j * dw
                        if wc < 0 or wc >= width:
                            continue
                        for z in range(nxt, wc):
                            d = dxrow[z]
                            for c in range(chans):
                                d[c] = 0
                        nxt = wc + 1
                        tap = i * kw + j
                        d = dxrow[wc]
                        for c in range(chans):
                            d[c] = g[c] if av[c] == tap else 0
                for z in range(nxt, width):
                    d = dxrow[z]
                    for c in range(chans):
                        d[c] = 0
                first = False
                continue
            if first:
                for wc in range(width):
                    d = dxrow[wc]
                    for c in range(chans):
                        d[c] = 0
                first = False
            for ow in range(w_out):
                g = dy[n, oh, ow]
                av = arg[n, oh, ow]
                for j in range(kw):
                    wc = ow * sw - pw + j * dw
                    if wc < 0 or wc >= width:
                        continue
                    tap = i * kw + j
                    d = dxrow[wc]
                    for c in range(chans):
                        d[c] += g[c] if av[c] == tap else 0
        if first:
            for wc in range(width):
                d = dxrow[wc]
                for c in range(chans):
                    d[c] = 0


@njit(cache=True)
def _avg_divisor(h0, w0, kh, kw, ph, pw, height, width, count_include_pad):
    if count_include_pad:
        # The window clipped to the padded input: a ceil_mode overhang is not counted.
        return (min(h0 + kh, height + ph) - h0) * (min(w0 + kw, width + pw) - w0)
    return (min(h0 + kh, height) - max(h0, 0)) * (min(w0 + kw, width) - max(w0, 0))


@njit(cache=True, parallel=True)
def _avg_forward(x, geom, count_include_pad, y):
    n_img, height, width, chans = x.shape
    kh, kw, sh, sw, ph, pw, _, _, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    for r in prange(n_img * h_out):
        n = r // h_out
        oh = r - n * h_out
        h0 = oh * sh - ph
        ilo, ihi = _inside(h0, 1, kh, height)
        for ow in range(w_out):
            yv = y[n, oh, ow]
            w0 = ow * sw - pw
            jlo, jhi = _inside(w0, 1, kw, width)
            for c in range(chans):
                yv[c] = 0
            for i in range(ilo, ihi):
                xrow = x[n, h0 + i]
                for j in range(jlo, jhi):
                    xv = xrow[w0 + j]
                    for c in range(chans):
                        yv[c] += xv[c]
            # one division, then a multiply per channel (a division per channel is
            # a visible part of a k2 s2 pooling); within an ulp of sum / divisor
            scale = yv.dtype.type(1.0) / yv.dtype.type(
                _avg_divisor(h0, w0, kh, kw, ph, pw, height, width, count_include_pad))
            for c in range(chans):
                yv[c] *= scale


@njit(cache=True, parallel=True)
def _avg_backward(dy, geom, count_include_pad, dx):
    n_img, height, width, chans = dx.shape
    kh, kw, sh, sw, ph, pw, _, _, h_out, w_out = (
        geom[0], geom[1], geom[2], geom[3], geom[4], geom[5], geom[6], geom[7], geom[8], geom[9])
    disjoint = kw <= sw
    one = dx.dtype.type(1.0)
    for q in prange(n_img * height):
        n = q // height
        h = q - n * height
        dxrow = dx[n, h]
        first = True
        for i in range(kh):
            t = h + ph - i
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            if oh >= h_out:
                continue
            h0 = oh * sh - ph
            assign = first and disjoint
            if first and not disjoint:
                for wc in range(width):
                    d = dxrow[wc]
                    for c in range(chans):
                        d[c] = 0
            first = False
            nxt = 0
            for ow in range(w_out):
                w0 = ow * sw - pw
                jlo, jhi = _inside(w0, 1, kw, width)
                if jlo >= jhi:
                    continue
                g = dy[n, oh, ow]
                scale = one / dx.dtype.type(
                    _avg_divisor(h0, w0, kh, kw, ph, pw, height, width, count_include_pad))
                if assign:
                    # windows of a row do not overlap: assign, zeros between them
                    for z in range(nxt, w0 + jlo):
                        d = dxrow[z]
                        for c in range(chans):
                            d[c] = 0
                    nxt = w0 + jhi
                    for j in range(jlo, jhi):
                        d = dxrow[w0 + j]
                        for c in range(chans):
                            d[c] = g[c] * scale
                else:
                    for j in range(jlo, jhi):
                        d = dxrow[w0 + j]
                        for c in range(chans):
                            d[c] += g[c] * scale
            if assign:
                for z in range(nxt, width):
                    d = dxrow[z]
                    for c in range(chans):
                        d[c] = 0
        if first:
            for wc in range(width):
                d = dxrow[wc]
                for c in range(chans):
                    d[c] = 0


def _geometry(ksize, stride, pads, dilation, out_hw):
    return np.array((ksize[0], ksize[1], stride[0], stride[1], pads[0], pads[1],
                     dilation[0], dilation[1], out_hw[0], out_hw[1]), dtype=np.int64)


def pool2d_forward(x, mode, ksize, stride, pads, dilation, out_hw, count_include_pad):
    n_img, _, _, chans = x.shape
    y = _empty((n_img, out_hw[0], out_hw[1], chans), dtype=x.dtype)
    geom = _geometry(ksize, stride, pads, dilation, out_hw)
    if mode == "max":
        arg = _empty(y.shape, dtype=np.int32)
        if n_img:
            _max_forward(x, geom, y, arg)
        return y, ("max", x.shape, geom, arg)
    if n_img:
        _avg_forward(x, geom, bool(count_include_pad), y)
    return y, ("avg", x.shape, geom, bool(count_include_pad))


def pool2d_backward(dy, state):
    mode, x_shape, geom, extra = state
    dx = _empty(tuple(x_shape), dtype=dy.dtype)
    if x_shape[0] == 0:
        return dx
    if mode == "max":
        _max_backward(dy, extra, geom, dx)
    else:
        _avg_backward(dy, geom, extra, dx)
    return dx
