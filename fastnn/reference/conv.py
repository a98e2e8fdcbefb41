"""Convolution (cross-correlation), NHWC, the course's way: pad, then loop over windows.

The definition of correct for every backend (see docs/KERNELS.md): plain loops over
``(n, oh, ow, co)`` taking one window slice each, as in the course's
``conv_single_step``/``conv_forward``/``conv_backward``, generalised to stride,
dilation, asymmetric padding and groups. Meant for small shapes only.
"""
import numpy as np


def zero_pad(x, pads):
    """x (N, H, W, C) with zeros added around H and W; pads = (top, bottom, left, right)."""
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="constant", constant_values=0)


def _window(oh, ow, ksize, stride, dilation):
    """The (rows, cols) slices of the padded input that output cell (oh, ow) reads."""
    (kh, kw), (sh, sw), (dh, dw) = ksize, stride, dilation
    vert_start, horiz_start = oh * sh, ow * sw
    rows = slice(vert_start, vert_start + (kh - 1) * dh + 1, dh)
    cols = slice(horiz_start, horiz_start + (kw - 1) * dw + 1, dw)
    return rows, cols


def conv_single_step(a_slice, w, b):
    """One output value: the window times the filter, summed, plus the bias (course)."""
    z = np.sum(a_slice * w)
    if b is not None:
        z = z + b
    return z


def conv2d_forward(x, w, b, stride, pads, dilation, groups, out_hw, workspace_bytes):
    """y[n, oh, ow, co] = b[co] + sum over the window of xpad * w[..., co] (own group only).

    ``workspace_bytes`` does not apply: no im2col buffer is built here.
    """
    n_batch = x.shape[0]
    kh, kw, c_group, c_out = w.shape
    h_out, w_out = out_hw
    c_out_group = c_out // groups
    x_pad = zero_pad(x, pads)
    y = np.zeros((n_batch, h_out, w_out, c_out), dtype=x.dtype)
    for n in range(n_batch):
        for oh in range(h_out):
            for ow in range(w_out):
                rows, cols = _window(oh, ow, (kh, kw), stride, dilation)
                for co in range(c_out):
                    g = co // c_out_group
                    a_slice = x_pad[n, rows, cols, g * c_group:(g + 1) * c_group]
                    y[n, oh, ow, co] = conv_single_step(a_slice, w[:, :, :, co], None if b is None else b[co])
    state = (x, w, b is not None, stride, pads, dilation, groups, out_hw)
    return y, state


def conv2d_backward(dy, state, need_dx=True):
    """The course's conv_backward: each dy value flows back through its window (dx is
    None when need_dx is false)."""
    x, w, has_bias, stride, pads, dilation, groups, out_hw = state
    n_batch, height, width, _ = x.shape
    kh, kw, c_group, c_out = w.shape
    h_out, w_out = out_hw
    c_out_group = c_out // groups
    top, _, left, _ = pads
    x_pad = zero_pad(x, pads)
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = np.zeros(c_out, dtype=x.dtype)
    for n in range(n_batch):
        for oh in range(h_out):
            for ow in range(w_out):
                rows, cols = _window(oh, ow, (kh, kw), stride, dilation)
                for co in range(c_out):
                    g = co // c_out_group
                    channels = slice(g * c_group, (g + 1) * c_group)
                    dz = dy[n, oh, ow, co]
                    dx_pad[n, rows, cols, channels] += w[:, :, :, co] * dz
                    dw[:, :, :, co] += x_pad[n, rows, cols, channels] * dz
                    db[co] += dz
    # The padding only existed for the windows; its gradient belongs to nobody.
    dx = np.ascontiguousarray(dx_pad[:, top:top + height, left:left + width, :]) if need_dx else None
    return dx, dw, (db if has_bias else None)


def im2col(x, ksize, stride, pads, dilation, out_hw):
    """One row per output cell (n, oh, ow); column (i * kw + j) * C + c holds xpad[..., c]."""
    n_batch, _, _, channels = x.shape
    kh, kw = ksize
    (sh, sw), (dh, dw) = stride, dilation
    h_out, w_out = out_hw
    x_pad = zero_pad(x, pads)
    cols = np.zeros((n_batch * h_out * w_out, kh * kw * channels), dtype=x.dtype)
    for n in range(n_batch):
        for oh in range(h_out):
            for ow in range(w_out):
                row = (n * h_out + oh) * w_out + ow
                for i in range(kh):
                    for j in range(kw):
                        col = (i * kw + j) * channels
                        cols[row, col:col + channels] = x_pad[n, oh * sh + i * dh, ow * sw + j * dw, :]
    return cols


def col2im(cols, x_shape, ksize, stride, pads, dilation, out_hw):
    """The adjoint of im2col: add every column entry back into the cell it was read from."""
    n_batch, height, width, channels = x_shape
    kh, kw = ksize
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = pads
    h_out, w_out = out_hw
    x_pad = np.zeros((n_batch, height + top + bottom, width + left + right, channels), dtype=cols.dtype)
    for n in range(n_batch):
        for oh in range(h_out):
            for ow in range(w_out):
                row = (n * h_out + oh) * w_out + ow
                for i in range(kh):
                    for j in range(kw):
                        col = (i * kw + j) * channels
                        x_pad[n, oh * sh + i * dh, ow * sw + j * dw, :] += cols[row, col:col + channels]
    # Entries that were read from the padding have no input cell to go back to.
    return np.ascontiguousarray(x_pad[:, top:top + height, left:left + width, :])
