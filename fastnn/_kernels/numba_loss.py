"""Numba cross-entropy kernels (see docs/KERNELS.md).

Softmax: one task per row (parallel over rows): the row maximum, the sum of
exponentials, the loss; the forward keeps the maximum, log of the sum and target
mass of each row, and the backward recomputes the probabilities from them.
Sigmoid: parallel over fixed chunks of elements. The sums over the batch are taken
in float64 after the parallel loops, over per-row losses or per-chunk partial sums
in a fixed order, so no result depends on the thread count.
"""
import math

import numpy as np
from numba import njit, prange

from .._arena import empty as _empty

# the elements of one partial sum of the sigmoid loss (as fn_loss.h's FN_XENT_CHUNK)
_CHUNK = 2048


@njit(cache=True, parallel=True)
def _softmax_forward(x, index, prob, use_index, zero, loss, stats):
    """zero: 0 of x's dtype, so that the sum of exponentials adds in it (float32
    exponentials cost half of float64 ones)"""
    n_rows, n_cls = x.shape
    for r in prange(n_rows):
        row = x[r]
        m = row[0]
        for j in range(1, n_cls):
            if row[j] > m or m != m:
                m = row[j]
        s = zero
        for j in range(n_cls):
            s += math.exp(row[j] - m)
        ls = math.log(np.float64(s))
        if use_index:
            mass = 1.0
            cross = np.float64(m) - np.float64(row[index[r]])
        else:
            mass = 0.0
            cross = 0.0
            for j in range(n_cls):
                t = prob[r, j]
                if t != 0:
                    cross += np.float64(t) * (np.float64(m) - np.float64(row[j]))
                mass += t
        loss[r] = cross + ls * mass
        stats[r, 0] = m
        stats[r, 1] = ls
        stats[r, 2] = mass


@njit(cache=True)
def _row_sum(loss):
    total = 0.0
    for i in range(loss.shape[0]):
        total += loss[i]
    return total


@njit(cache=True, parallel=True)
def _softmax_backward(x, index, prob, use_index, stats, g, g0, per_row, dx):
    n_rows, n_cls = x.shape
    for r in prange(n_rows):
        gr = g[r] if per_row else g0
        m = stats[r, 0]
        ls = stats[r, 1]
        row = x[r]
        out = dx[r]
        if use_index:
            for j in range(n_cls):
                out[j] = gr * math.exp((row[j] - m) - ls)
            t = index[r]
            out[t] = gr * (math.exp((row[t] - m) - ls) - 1)
        else:
            mass = stats[r, 2]
            for j in range(n_cls):
                out[j] = gr * (math.exp((row[j] - m) - ls) * mass - prob[r, j])


@njit(cache=True, inline="always")
def _sigmoid_loss(z, y):
    a = abs(z)
    w = 1.0 - y if z >= 0 else y
    return (0.0 if w == 0 else a * w) + math.log1p(math.exp(-a))


@njit(cache=True, parallel=True)
def _sigmoid_forward(x, t, loss, keep, partial):
    n = x.shape[0]
    for c in prange(partial.shape[0]):
        s = 0.0
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            v = _sigmoid_loss(x[i], t[i])
            if keep:
                loss[i] = v
            s += v
        partial[c] = s


@njit(cache=True, parallel=True)
def _sigmoid_backward(x, t, g, g0, per_elem, dx):
    n = x.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            z = x[i]
            u = 1.0 - t[i]
            e = math.exp(-abs(z))
            num = (u - t[i] * e) if z >= 0 else (e * u - t[i])
            dx[i] = (g[i] if per_elem else g0) * (num / (1.0 + e))


def _reduce(total, count, reduction, dtype):
    if reduction == "mean":
        total = total / count if count > 0 else float("nan")
    return np.array(total, dtype=dtype)


def _targets(x, target):
    """(index, prob, use_index): the kernels take both arrays, one of them a stand-in."""
    if target.ndim == 1:
        return target, np.empty((0, 0), dtype=x.dtype), True
    return np.empty(0, dtype=np.int64), target, False


def softmax_cross_entropy_forward(x, target, reduction):
    n_rows = x.shape[0]
    loss = np.empty(n_rows, dtype=x.dtype)
    stats = np.empty((n_rows, 3), dtype=x.dtype)
    if n_rows > 0:
        index, prob, use_index = _targets(x, target)
        _softmax_forward(x, index, prob, use_index, x.dtype.type(0), loss, stats)
    out = loss if reduction == "none" else _reduce(_row_sum(loss) if n_rows else 0.0, n_rows, reduction, x.dtype)
    return out, (x, target, stats, reduction)


def softmax_cross_entropy_backward(dloss, state):
    x, target, stats, reduction = state
    n_rows = x.shape[0]
    dx = _empty(x.shape, dtype=x.dtype)
    if dx.size:
        index, prob, use_index = _targets(x, target)
        per_row = dloss.ndim == 1
        g0 = 0.0 if per_row else float(dloss) / (n_rows if reduction == "mean" else 1)
        g = dloss if per_row else np.empty(0, dtype=x.dtype)
        _softmax_backward(x, index, prob, use_index, stats, g, x.dtype.type(g0), per_row, dx)
    return dx


def sigmoid_cross_entropy_forward(x, target, reduction):
    n = x.shape[0]
    keep = reduction == "none"
    loss = _empty(n if keep else 0, dtype=x.dtype)
    partial = np.empty((n + _CHUNK - 1) // _CHUNK, dtype=np.float64)
    if n > 0:
        _sigmoid_forward(x, target, loss, keep, partial)
    out = loss if keep else _reduce(_row_sum(partial) if n else 0.0, n, reduction, x.dtype)
    return out, (x, target, reduction)


def sigmoid_cross_entropy_backward(dloss, state):
    x, target, reduction = state
    n = x.shape[0]
    dx = _empty(n, dtype=x.dtype)
    if n > 0:
        per_elem = dloss.ndim == 1
        g0 = 0.0 if per_elem else float(dloss) / (n if reduction == "mean" else 1)
        g = dloss if per_elem else np.empty(0, dtype=x.dtype)
        _sigmoid_backward(x, target, g, x.dtype.type(g0), per_elem, dx)
    return dx
