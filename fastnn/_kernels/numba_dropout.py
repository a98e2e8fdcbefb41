"""Numba dropout kernels (flat arrays; see docs/KERNELS.md).

One pass per call: forward compares the caller's draws with keep_prob, writes the
one-byte mask and y = (x * mask) / keep_prob in x's dtype (the reference's rounding:
keep_prob is rounded to x's dtype and divided by, not multiplied by its inverse, so
every backend gives the same bits); backward applies the mask to dy. Elementwise, so
the thread count changes nothing.
"""
import numpy as np
from numba import njit, prange

from .._arena import empty as _empty


@njit(cache=True, parallel=True)
def _forward(x, draws, keep_prob, kp, one, zero, y, mask):
    for i in prange(x.shape[0]):
        kept = draws[i] < keep_prob
        mask[i] = 1 if kept else 0
        y[i] = (x[i] * (one if kept else zero)) / kp


@njit(cache=True, parallel=True)
def _backward(dy, mask, kp, one, zero, dx):
    for i in prange(dy.shape[0]):
        dx[i] = (dy[i] * (one if mask[i] else zero)) / kp


def _scalars(dtype, keep_prob):
    kind = dtype.type
    return kind(keep_prob), kind(1), kind(0)


def dropout_forward(x, draws, keep_prob):
    """(y, (mask, keep_prob)): mask = draws < keep_prob (uint8), y = x * mask / keep_prob;
    draws None (keep_prob == 1): y is a copy of x and the mask None."""
    y = _empty(x.shape[0], x.dtype)
    if draws is None:
        np.copyto(y, x)
        return y, (None, keep_prob)
    mask = _empty(x.shape[0], np.uint8)
    if x.shape[0]:
        _forward(x, draws, float(keep_prob), *_scalars(x.dtype, keep_prob), y, mask)
    return y, (mask, keep_prob)


def dropout_backward(dy, state):
    """dx = dy * mask / keep_prob (a copy of dy when every element was kept)."""
    mask, keep_prob = state
    dx = _empty(dy.shape[0], dy.dtype)
    if mask is None:
        np.copyto(dx, dy)
    elif dy.shape[0]:
        _backward(dy, mask, *_scalars(dy.dtype, keep_prob), dx)
    return dx
