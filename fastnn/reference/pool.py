"""Max and average pooling, NHWC, the course's pool_forward/pool_backward generalised.

Each channel is pooled on its own, so the loops run over the windows ``(n, oh, ow)``
and treat the channels of a window together. Padding, dilation and ceil_mode
overhang are handled by visiting only the window cells that lie inside the input
(see docs/KERNELS.md); this is the definition of correct and is meant for small shapes.
"""
import numpy as np


def _max_window_cells(oh, ow, height, width, ksize, stride, pads, dilation):
    """Row and column indices of the window's cells inside the input, row-major window order."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = ksize, stride, pads, dilation
    rows, cols = [], []
    for i in range(kh):
        r = oh * sh - ph + i * dh
        if not 0 <= r < height:
            continue  # padding is -inf: it never wins a max
        for j in range(kw):
            c = ow * sw - pw + j * dw
            if 0 <= c < width:
                rows.append(r)
                cols.append(c)
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def first_max_index(values):
    """For each column of values (cells, C): the row of its first maximum, NaN beating all.

    The course's create_mask_from_window marks every cell equal to the maximum; the
    gradient must go to exactly one of them, the first in window order (PyTorch's rule).
    """
    is_nan = np.isnan(values)
    first_nan = np.argmax(is_nan, axis=0)
    first_max = np.argmax(values, axis=0)
    return np.where(is_nan.any(axis=0), first_nan, first_max)


def _avg_window(oh, ow, height, width, ksize, stride, pads, count_include_pad):
    """(row slice, col slice, divisor) of an average-pooling window."""
    (kh, kw), (sh, sw), (ph, pw) = ksize, stride, pads
    h0, w0 = oh * sh - ph, ow * sw - pw
    # The window clipped to the padded input, so that a ceil_mode overhang is never counted.
    h1, w1 = min(h0 + kh, height + ph), min(w0 + kw, width + pw)
    rows = slice(max(h0, 0), min(h0 + kh, height))
    cols = slice(max(w0, 0), min(w0 + kw, width))
    if count_include_pad:
        divisor = (h1 - h0) * (w1 - w0)
    else:
        divisor = (rows.stop - rows.start) * (cols.stop - cols.start)
    return rows, cols, divisor


def pool2d_forward(x, mode, ksize, stride, pads, dilation, out_hw, count_include_pad):
    n_batch, height, width, channels = x.shape
    h_out, w_out = out_hw
    y = np.empty((n_batch, h_out, w_out, channels), dtype=x.dtype)
    channel_ids = np.arange(channels)
    if mode == "max":
        # Flat input position (row * W + col) of each output's winner; -1: empty window.
        argmax = np.full((n_batch, h_out, w_out, channels), -1, dtype=np.int64)
        for oh in range(h_out):
            for ow in range(w_out):
                rows, cols = _max_window_cells(oh, ow, height, width, ksize, stride, pads, dilation)
                if rows.size == 0:
                    y[:, oh, ow, :] = -np.inf  # only dilation can leave a window empty
                    continue
                for n in range(n_batch):
                    values = x[n, rows, cols, :]  # (cells, C)
                    best = first_max_index(values)
                    y[n, oh, ow, :] = values[best, channel_ids]
                    argmax[n, oh, ow, :] = rows[best] * width + cols[best]
        return y, ("max", x.shape, argmax)
    for oh in range(h_out):
        for ow in range(w_out):
            rows, cols, divisor = _avg_window(oh, ow, height, width, ksize, stride, pads, count_include_pad)
            for n in range(n_batch):
                y[n, oh, ow, :] = np.sum(x[n, rows, cols, :], axis=(0, 1)) / x.dtype.type(divisor)
    return y, ("avg", x.shape, (ksize, stride, pads, count_include_pad))


def pool2d_backward(dy, state):
    mode, x_shape, info = state
    n_batch, height, width, channels = x_shape
    _, h_out, w_out, _ = dy.shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    if mode == "max":
        argmax = info
        for n in range(n_batch):
            for oh in range(h_out):
                for ow in range(w_out):
                    position = argmax[n, oh, ow, :]
                    hit = np.nonzero(position >= 0)[0]  # channels whose window was not empty
                    rows, cols = np.divmod(position[hit], width)
                    # One cell per channel, so no index repeats within this update.
                    dx[n, rows, cols, hit] += dy[n, oh, ow, hit]
        return dx
    ksize, stride, pads, count_include_pad = info
    for oh in range(h_out):
        for ow in range(w_out):
            rows, cols, divisor = _avg_window(oh, ow, height, width, ksize, stride, pads, count_include_pad)
            for n in range(n_batch):
                # The course's distribute_value: the window's gradient shared out evenly.
                dx[n, rows, cols, :] += dy[n, oh, ow, :] / dy.dtype.type(divisor)
    return dx
