"""Naive NumPy twins of the fastnn ops, written independently of the library.

They compute in float64 straight from the definitions in API.md and serve as an
independent check of ``fastnn.reference`` itself (the harness checks every backend
against the reference, and these check the reference). Layout NHWC throughout;
callers transpose NCHW themselves.
"""
import numpy as np


# --------------------------------------------------------------------------- geometry

def pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_pads(padding, hw, ksize, stride, dilation):
    """(top, bottom, left, right) for any padding form of API.md."""
    (kh, kw), (sh, sw), (dh, dw) = ksize, stride, dilation
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        assert padding == "same"
        pads = []
        for n, k, s, d in ((hw[0], kh, sh, dh), (hw[1], kw, sw, dw)):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, (tuple, list)) and isinstance(padding[0], (tuple, list)):
        (t, b), (l, r) = padding
        return t, b, l, r
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def conv_out(n, pad_a, pad_b, k, s, d):
    return (n + pad_a + pad_b - d * (k - 1) - 1) // s + 1


def pool_out(n, k, s, p, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1  # the last window would start in the right padding
    return out


# --------------------------------------------------------------------------- convolution

def conv2d_nhwc(x, w, b, stride, pads, dilation, groups):
    """y[n, oh, ow, co] = b[co] + sum xpad[n, oh*sh + i*dh, ow*sw + j*dw, g*Cg + ci] w[i, j, ci, co]."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, h, wd, c_in = x.shape
    kh, kw, cg, c_out = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    t, bo, l, r = pads
    ho, wo = conv_out(h, t, bo, kh, sh, dh), conv_out(wd, l, r, kw, sw, dw)
    xp = np.zeros((n, h + t + bo, wd + l + r, c_in))
    xp[:, t:t + h, l:l + wd, :] = x
    y = np.zeros((n, ho, wo, c_out))
    og = c_out // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                           j * dw: j * dw + sw * (wo - 1) + 1: sw, g * cg:(g + 1) * cg]
                y[..., g * og:(g + 1) * og] += np.einsum("nhwc,co->nhwo", patch, w[i, j, :, g * og:(g + 1) * og])
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(-1)
    return y


def im2col_nhwc(x, ksize, stride, pads, dilation):
    """Rows (n, oh, ow); columns (i, j, c)."""
    x = np.asarray(x, dtype=np.float64)
    n, h, wd, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = ksize, stride, dilation
    t, bo, l, r = pads
    ho, wo = conv_out(h, t, bo, kh, sh, dh), conv_out(wd, l, r, kw, sw, dw)
    xp = np.zeros((n, h + t + bo, wd + l + r, c))
    xp[:, t:t + h, l:l + wd, :] = x
    cols = np.zeros((n, ho, wo, kh, kw, c))
    for oh in range(ho):
        for ow in range(wo):
            for i in range(kh):
                for j in range(kw):
                    cols[:, oh, ow, i, j, :] = xp[:, oh * sh + i * dh, ow * sw + j * dw, :]
    return cols.reshape(n * ho * wo, kh * kw * c)


# --------------------------------------------------------------------------- pooling

def pool2d_nhwc(x, mode, ksize, stride, padding, dilation=(1, 1), ceil_mode=False, count_include_pad=True):
    """Max / average pooling by explicit loops over windows (PyTorch's semantics)."""
    x = np.asarray(x, dtype=np.float64)
    n, h, wd, c = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = ksize, stride, padding, dilation
    ho = pool_out(h, kh, sh, ph, dh, ceil_mode)
    wo = pool_out(wd, kw, sw, pw, dw, ceil_mode)
    y = np.zeros((n, ho, wo, c))
    for oh in range(ho):
        for ow in range(wo):
            h0, w0 = oh * sh - ph, ow * sw - pw
            rows = [h0 + i * dh for i in range(kh)]
            cols = [w0 + j * dw for j in range(kw)]
            inside = [(r, q) for r in rows for q in cols if 0 <= r < h and 0 <= q < wd]
            if mode == "max":
                if not inside:
                    y[:, oh, ow, :] = -np.inf
                    continue
                vals = np.stack([x[:, r, q, :] for r, q in inside])
                m = vals.max(axis=0)
                m[np.isnan(vals).any(axis=0)] = np.nan
                y[:, oh, ow, :] = m
            else:
                total = sum((x[:, r, q, :] for r, q in inside), np.zeros((n, c)))
                if count_include_pad:
                    h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, wd + pw)
                    divisor = (h1 - h0) * (w1 - w0)
                else:
                    divisor = len(inside)
                y[:, oh, ow, :] = total / divisor
    return y


def max_pool2d_backward_nhwc(dy, x, ksize, stride, padding):
    """First maximum in row-major window order gets the window's gradient."""
    x = np.asarray(x, dtype=np.float64)
    n, h, wd, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = ksize, stride, padding
    dx = np.zeros_like(x)
    _, ho, wo, _ = dy.shape
    for b in range(n):
        for ch in range(c):
            for oh in range(ho):
                for ow in range(wo):
                    best, where = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            r, q = oh * sh - ph + i, ow * sw - pw + j
                            if 0 <= r < h and 0 <= q < wd and (where is None or x[b, r, q, ch] > best):
                                best, where = x[b, r, q, ch], (r, q)
                    if where is not None:
                        dx[b, where[0], where[1], ch] += dy[b, oh, ow, ch]
    return dx


# --------------------------------------------------------------------------- matmul

def sum_to_shape(g, shape):
    """Sum g over the leading / broadcast axes so that it gets `shape`."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def bmm_backward(dc, a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dc = np.asarray(dc, dtype=np.float64)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    dc2 = dc
    if a.ndim == 1:
        dc2 = dc2[..., None, :] if b.ndim > 1 else dc2[..., None]
    if b.ndim == 1:
        dc2 = dc2[..., None]
    da = np.matmul(dc2, np.swapaxes(b2, -1, -2))
    db = np.matmul(np.swapaxes(a2, -1, -2), dc2)
    da = sum_to_shape(da, a2.shape).reshape(a.shape)
    db = sum_to_shape(db, b2.shape).reshape(b.shape)
    return da, db


# --------------------------------------------------------------------------- recurrent

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def rnn_cell(x_t, h_prev, W, b, activation="tanh"):
    z = np.concatenate([h_prev, x_t], axis=1) @ W.T + b
    return np.tanh(z) if activation == "tanh" else np.maximum(z, 0.0)


def gru_cell(x_t, h_prev, W, b):
    n_a = h_prev.shape[1]
    concat = np.concatenate([h_prev, x_t], axis=1)
    gu = sigmoid(concat @ W[:n_a].T + b[:n_a])
    gr = sigmoid(concat @ W[n_a:2 * n_a].T + b[n_a:2 * n_a])
    cand = np.tanh(np.concatenate([gr * h_prev, x_t], axis=1) @ W[2 * n_a:].T + b[2 * n_a:])
    return gu * cand + (1 - gu) * h_prev


def lstm_cell(x_t, h_prev, c_prev, W, b):
    n_a = h_prev.shape[1]
    z = np.concatenate([h_prev, x_t], axis=1) @ W.T + b
    gf, gu = sigmoid(z[:, :n_a]), sigmoid(z[:, n_a:2 * n_a])
    cand, go = np.tanh(z[:, 2 * n_a:3 * n_a]), sigmoid(z[:, 3 * n_a:])
    c = gf * c_prev + gu * cand
    return go * np.tanh(c), c


def run_sequence(cell, x, h0, *extra, c0=None):
    hs = []
    h, c = h0, c0
    for t in range(x.shape[0]):
        if c is None:
            h = cell(x[t], h, *extra)
        else:
            h, c = cell(x[t], h, c, *extra)
        hs.append(h)
    hs = np.stack(hs) if hs else np.zeros((0,) + h0.shape)
    return hs if c is None else (hs, c)
