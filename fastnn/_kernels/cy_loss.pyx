"""Cross-entropy kernels of the cython backend (normalised arguments; docs/KERNELS.md).

The kernels are C (fn_loss.h), written once over the vector type of each CPU tier
and element type, with the exponential of fn_math.h. Softmax: one pass for the
row maximum, one for the sum of exponentials (the row still in the level-1
cache); the forward keeps three numbers a row (max, log-sum-exp, target mass) and
the backward recomputes the probabilities, which costs less than writing them out
and reading them back. Sigmoid: one pass each way over fixed chunks of elements.
Rows (chunks) are the tasks of the OpenMP threads, and the sums over the batch are
taken afterwards in double in a fixed order, so the results do not depend on the
thread count. The input gradient comes from the buffer cache (fastnn/_arena.py)
and is fully written by the kernels.
"""
import numpy as np
from libc.stdint cimport int64_t

from .._arena import empty as _empty
from ._fn_loss cimport (FN_XENT_CHUNK, fn_loss_math_d, fn_loss_math_f, fn_sigmoid_xent_backward_d,
                        fn_sigmoid_xent_backward_f, fn_sigmoid_xent_forward_d, fn_sigmoid_xent_forward_f,
                        fn_softmax_xent_backward_d, fn_softmax_xent_backward_f, fn_softmax_xent_forward_d,
                        fn_softmax_xent_forward_f)

include "_module.pxi"


cdef void _target_data(target, const int64_t **index, const void **prob):
    """Softmax's target as the kernels take it: class indices (N,) or probabilities (N, C)."""
    if target.ndim == 1:
        index[0] = <const int64_t *>_data(target)
    else:
        prob[0] = _data(target)


cdef double _upstream(dloss, reduction, Py_ssize_t n, const void **per_item):
    """The upstream gradient as the backward kernels take it: one value for every item
    (0-d dloss, divided by n for "mean"), returned, or one per item (*per_item)."""
    cdef double g0 = 0.0
    if dloss.ndim == 0:
        g0 = float(dloss)
        if reduction == "mean":
            g0 = g0 / n
    else:
        per_item[0] = _data(dloss)
    return g0


def _reduce(total, n, reduction, dtype):
    """The reduced loss as a 0-d array: the sum, or the mean (NaN over nothing)."""
    if reduction == "mean":
        total = total / n if n > 0 else float("nan")
    return np.array(total, dtype=dtype)


def softmax_cross_entropy_forward(x, target, reduction):
    """Per-row losses (N,) or their sum / mean (0-d), and the state for backward."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef const int64_t *ip = NULL
    cdef const void *pp = NULL
    cdef const void *xp
    cdef void *lp
    cdef void *sp
    cdef double total = 0.0
    loss = np.empty(N, dtype=x.dtype)
    stats = np.empty((N, 3), dtype=x.dtype)
    if N > 0:
        _target_data(target, &ip, &pp)
        xp = _data(x)
        lp = _data(loss)
        sp = _data(stats)
        with nogil:
            if single:
                total = fn_softmax_xent_forward_f(N, C, <const float *>xp, ip, <const float *>pp, <float *>lp,
                                                  <float *>sp, threads)
            else:
                total = fn_softmax_xent_forward_d(N, C, <const double *>xp, ip, <const double *>pp, <double *>lp,
                                                  <double *>sp, threads)
    out = loss if reduction == "none" else _reduce(total, N, reduction, x.dtype)
    return out, (x, target, stats, reduction)


def softmax_cross_entropy_backward(dloss, state):
    """dlogits (N, C) for an upstream dloss: 0-d (every example's, mean: divided by N) or (N,)."""
    x, target, stats, reduction = state
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef const int64_t *ip = NULL
    cdef const void *pp = NULL
    cdef const void *gp = NULL
    cdef const void *xp
    cdef const void *sp
    cdef void *dp
    cdef double g0 = 0.0
    dx = _empty((N, C), dtype=x.dtype)
    if N > 0 and C > 0:
        g0 = _upstream(dloss, reduction, N, &gp)
        _target_data(target, &ip, &pp)
        xp = _data(x)
        sp = _data(stats)
        dp = _data(dx)
        with nogil:
            if single:
                fn_softmax_xent_backward_f(N, C, <const float *>xp, ip, <const float *>pp, <const float *>sp,
                                           <const float *>gp, <float>g0, <float *>dp, threads)
            else:
                fn_softmax_xent_backward_d(N, C, <const double *>xp, ip, <const double *>pp, <const double *>sp,
                                           <const double *>gp, g0, <double *>dp, threads)
    return dx


def sigmoid_cross_entropy_forward(x, target, reduction):
    """Per-element losses (n,) or their sum / mean (0-d), and the state for backward."""
    cdef Py_ssize_t n = x.shape[0]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef const void *xp
    cdef const void *tp
    cdef void *lp = NULL
    cdef double *partial
    cdef double total = 0.0
    loss = _empty(n, dtype=x.dtype) if reduction == "none" else None
    chunks = np.empty((n + FN_XENT_CHUNK - 1) // FN_XENT_CHUNK, dtype=np.float64)
    if n > 0:
        xp = _data(x)
        tp = _data(target)
        partial = <double *>_data(chunks)
        if loss is not None:
            lp = _data(loss)
        with nogil:
            if single:
                total = fn_sigmoid_xent_forward_f(n, <const float *>xp, <const float *>tp, <float *>lp, partial,
                                                  threads)
            else:
                total = fn_sigmoid_xent_forward_d(n, <const double *>xp, <const double *>tp, <double *>lp,
                                                  partial, threads)
    out = loss if loss is not None else _reduce(total, n, reduction, x.dtype)
    return out, (x, target, reduction)


def sigmoid_cross_entropy_backward(dloss, state):
    """dlogits (n,) for an upstream dloss: 0-d (every element's, mean: divided by n) or (n,)."""
    x, target, reduction = state
    cdef Py_ssize_t n = x.shape[0]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef const void *gp = NULL
    cdef const void *xp
    cdef const void *tp
    cdef void *dp
    cdef double g0 = 0.0
    dx = _empty(n, dtype=x.dtype)
    if n > 0:
        g0 = _upstream(dloss, reduction, n, &gp)
        xp = _data(x)
        tp = _data(target)
        dp = _data(dx)
        with nogil:
            if single:
                fn_sigmoid_xent_backward_f(n, <const float *>xp, <const float *>tp, <const float *>gp, <float>g0,
                                           <float *>dp, threads)
            else:
                fn_sigmoid_xent_backward_d(n, <const double *>xp, <const double *>tp, <const double *>gp, g0,
                                           <double *>dp, threads)
    return dx


def _vector_math(kind, x):
    """fn_math.h's log ("log") or log1p ("log1p") applied to a 1-D float array, on the
    active tier (for the tests: the C functions have no other way out)."""
    x = np.ascontiguousarray(x)
    if x.ndim != 1 or x.dtype not in (np.float32, np.float64):
        raise ValueError("_vector_math: x must be a 1-D float32 or float64 array")
    cdef int k = {"log": 0, "log1p": 1}[kind]
    cdef Py_ssize_t n = x.shape[0]
    y = np.empty_like(x)
    cdef const void *xp = _data(x)
    cdef void *yp = _data(y)
    cdef bint single = x.dtype == np.float32
    with nogil:
        if single:
            fn_loss_math_f(k, n, <const float *>xp, <float *>yp)
        else:
            fn_loss_math_d(k, n, <const double *>xp, <double *>yp)
    return y
