"""Dropout kernels of the cython backend (flat arrays, normalised arguments; docs/KERNELS.md).

The public layer draws the uniform numbers from the user's generator; forward compares
them with keep_prob into the one-byte mask and applies it block by block (the block's
mask is still cached when it is applied), so no float mask is ever formed. Backward
replays the mask on dy. The loops are C compiled per CPU tier (fn_dropout.h).

Each element is computed on its own, as the reference computes it (``x * mask``, then
``/ keep_prob`` rounded to x's dtype: a multiply by 1 / keep_prob would round
differently, and ``x * 0`` keeps NaN and the sign of zero as NumPy does), so every
backend gives the same bits and the thread count changes nothing. Blocks of elements
are the threads' tasks; a call too small to split runs on the calling thread.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from .._arena import empty as _empty
from ._fn_dropout cimport fn_drop_apply_d, fn_drop_apply_f, fn_drop_mask

include "_module.pxi"
include "_tasks.pxi"

# elements per task: 16 Ki float32 elements, their draws, mask and output are 272 KiB of
# traffic, far above the cost of handing out a task
cdef Py_ssize_t _BLOCK = 16384


cdef inline void _apply(const floating* x, const uint8_t* mask, floating kp, floating* y, Py_ssize_t i0,
                        Py_ssize_t i1) noexcept nogil:
    if floating is float:
        fn_drop_apply_f(x + i0, mask + i0, kp, y + i0, i1 - i0)
    else:
        fn_drop_apply_d(x + i0, mask + i0, kp, y + i0, i1 - i0)


cdef inline void _copy_block(const floating* src, floating* dst, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    memcpy(dst + i0, src + i0, (i1 - i0) * sizeof(floating))


cdef void _run(int kind, const floating* x, const double* draws, const uint8_t* mask_in, double keep_prob,
               floating* y, uint8_t* mask_out, Py_ssize_t n, int nthreads) noexcept nogil:
    """kind 0: forward (draws -> mask_out, y); 1: backward (mask_in applied to x); 2: copy."""
    cdef floating kp = <floating>keep_prob
    cdef Py_ssize_t nblocks = (n + _BLOCK - 1) // _BLOCK
    cdef Py_ssize_t blk, i0, i1
    cdef fn_region region
    cdef double t0
    nthreads = _team_begin(nblocks, nthreads, &region)
    for blk in prange(nblocks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        i0 = blk * _BLOCK
        i1 = min(i0 + _BLOCK, n)
        if kind == 0:
            # the block's mask is still in the level-1/2 cache when it is applied
            fn_drop_mask(draws + i0, keep_prob, mask_out + i0, i1 - i0)
            _apply(x, mask_out, kp, y, i0, i1)
        elif kind == 1:
            _apply(x, mask_in, kp, y, i0, i1)
        else:
            _copy_block(x, y, i0, i1)
        fn_add_busy(&region.busy, t0)
    _team_end(nthreads, &region)


cdef _dispatch(int kind, x, draws, mask_in, double keep_prob, y, mask_out):
    cdef Py_ssize_t n = x.shape[0]
    cdef int threads = _num_threads
    cdef bint single = x.dtype == np.float32
    cdef const void* xp = _data(x)
    cdef void* yp = _data(y)
    cdef const double* dp = NULL
    cdef const uint8_t* mp = NULL
    cdef uint8_t* mo = NULL
    if n == 0:
        return
    if draws is not None:
        dp = <const double*>_data(draws)
    if mask_in is not None:
        mp = <const uint8_t*>_data(mask_in)
    if mask_out is not None:
        mo = <uint8_t*>_data(mask_out)
    with nogil:
        if single:
            _run(kind, <const float*>xp, dp, mp, keep_prob, <float*>yp, mo, n, threads)
        else:
            _run(kind, <const double*>xp, dp, mp, keep_prob, <double*>yp, mo, n, threads)


def dropout_forward(x, draws, double keep_prob):
    """(y, (mask, keep_prob)): mask = draws < keep_prob (uint8), y = x * mask / keep_prob.
    draws None (keep_prob == 1): y is a copy of x and the mask None."""
    y = _empty(x.shape[0], x.dtype)
    if draws is None:
        _dispatch(2, x, None, None, keep_prob, y, None)
        return y, (None, keep_prob)
    mask = _empty(x.shape[0], np.uint8)
    _dispatch(0, x, draws, None, keep_prob, y, mask)
    return y, (mask, keep_prob)


def dropout_backward(dy, state):
    """dx = dy * mask / keep_prob (a copy of dy when every element was kept)."""
    mask, keep_prob = state
    dx = _empty(dy.shape[0], dy.dtype)
    _dispatch(2 if mask is None else 1, dy, None, mask, keep_prob, dx, None)
    return dx
