"""Dense-layer kernels of the cython backend (normalised arguments; docs/KERNELS.md).

Every product runs on fastnn's own GEMM core (fn_gemm.h) on the active CPU tier,
float32 and float64 alike, no BLAS; the drivers are C (fn_dense.h, through
_fn_dense.pxd):

- linear_forward: the tasks are panels of W^T, each packed by its task where it
  stays in the level-2 cache, every row of x run on it from the bias, and the
  activation applied to that strip of y while it is still in cache. That same pass
  writes what the backward pass reads: a byte per value (z > 0) for relu /
  leaky_relu, a copy of y for sigmoid / tanh (so the returned y is never copied),
  nothing for no activation.
- linear_backward: dz = dy * act'(.), db the column sums of fixed chunks of rows
  added in order, then dx = dz @ W and dW = dz^T @ x the same way.
- activation_forward / activation_backward: the same elementwise code over the
  flat array; softmax: rows in tasks, the maximum subtracted first.

Every output value is computed by one thread in a fixed order, and db's chunks do
not depend on the thread count, so results are the same bits on any thread count.
Outputs and scratch come from fastnn's buffer cache (fastnn/_arena.py).
"""
import numpy as np
from libc.stdint cimport int8_t

from .._arena import empty as _empty

from ._fn cimport FN_ACT_RELU, FN_ACT_SIGMOID, FN_ACT_TANH
from ._fn_dense cimport (FN_ACT_IDENTITY, FN_ACT_LEAKY_RELU, dense_act_mt, dense_dw_direct,
                         dense_grad_mt, dense_linear_backward, dense_linear_forward, dense_slots_size,
                         dense_softmax)

include "_module.pxi"

_KIND = {None: FN_ACT_IDENTITY, "relu": FN_ACT_RELU, "leaky_relu": FN_ACT_LEAKY_RELU,
         "sigmoid": FN_ACT_SIGMOID, "tanh": FN_ACT_TANH}


cdef inline void* _data_or_null(object a):
    return NULL if a is None else _data(a)


cdef inline int _threads() noexcept nogil:
    return _num_threads if fn_openmp() else 1


def _kept(int kind, shape, dtype):
    """(keep, mask): what the backward pass of `kind` reads, allocated for `shape`."""
    if kind == FN_ACT_SIGMOID or kind == FN_ACT_TANH:
        return _empty(shape, dtype=dtype), None
    if kind == FN_ACT_RELU or kind == FN_ACT_LEAKY_RELU:
        return None, _empty(shape, dtype=np.int8)
    return None, None


def linear_forward(x, w, b, activation, alpha):
    """y = act(x @ w.T + b) and the state for linear_backward."""
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    cdef int kind = _KIND[activation]
    cdef bint single = x.dtype == np.float32
    cdef double a = alpha
    cdef int threads = _threads()
    cdef void* xp
    cdef void* wp
    cdef void* bp
    cdef void* yp
    cdef void* kp
    cdef void* mp
    cdef void* sp
    y = _empty((M, N), dtype=x.dtype)
    keep, mask = _kept(kind, (M, N), x.dtype)
    if M > 0 and N > 0:
        slots = _empty(<Py_ssize_t>dense_slots_size(not single, K, threads), dtype=x.dtype)
        xp, wp, bp, yp, sp = _data(x), _data(w), _data_or_null(b), _data(y), _data(slots)
        kp, mp = _data_or_null(keep), _data_or_null(mask)
        with nogil:
            if single:
                dense_linear_forward(M, N, K, <const float*>xp, <const float*>wp, <const float*>bp, kind, a,
                                     <float*>yp, <float*>kp, <int8_t*>mp, <float*>sp, threads)
            else:
                dense_linear_forward(M, N, K, <const double*>xp, <const double*>wp, <const double*>bp, kind, a,
                                     <double*>yp, <double*>kp, <int8_t*>mp, <double*>sp, threads)
    return y, (x, w, b is not None, kind, a, keep, mask)


def linear_backward(dy, state):
    """(dx, dw, db) of linear_forward; db is None when there was no bias."""
    x, w, has_bias, kind_, alpha_, keep, mask = state
    cdef int kind = kind_
    cdef double a = alpha_
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _threads()
    cdef bint ok = True
    cdef void* dyp
    cdef void* xp
    cdef void* wp
    cdef void* kp
    cdef void* mp
    cdef void* dzp
    cdef void* dtp
    cdef void* sp
    cdef void* dxp
    cdef void* dwp
    cdef void* dbp
    dx = _empty((M, K), dtype=x.dtype)
    dw = _empty((N, K), dtype=x.dtype)
    db = _empty(N, dtype=x.dtype) if has_bias else None
    dz = _empty((M, N), dtype=x.dtype) if kind != FN_ACT_IDENTITY and M * N > 0 else None
    dzt = _empty((N, M), dtype=x.dtype) if K > 0 and dense_dw_direct(not single, M, N) else None
    slots = _empty(<Py_ssize_t>dense_slots_size(not single, max(M, N), threads), dtype=x.dtype)
    dyp, xp, wp, kp, mp = _data(dy), _data(x), _data(w), _data_or_null(keep), _data_or_null(mask)
    dzp, dtp, sp = _data_or_null(dz), _data_or_null(dzt), _data(slots)
    dxp, dwp, dbp = _data(dx), _data(dw), _data_or_null(db)
    with nogil:
        if single:
            ok = dense_linear_backward(M, N, K, <const float*>dyp, <const float*>xp, <const float*>wp,
                                       <const float*>kp, <const int8_t*>mp, kind, a, <float*>dzp, <float*>dtp,
                                       <float*>sp, <float*>dxp, <float*>dwp, <float*>dbp, threads)
        else:
            ok = dense_linear_backward(M, N, K, <const double*>dyp, <const double*>xp, <const double*>wp,
                                       <const double*>kp, <const int8_t*>mp, kind, a, <double*>dzp,
                                       <double*>dtp, <double*>sp, <double*>dxp, <double*>dwp, <double*>dbp,
                                       threads)
    if not ok:
        raise MemoryError("linear_backward: cannot allocate the scratch of the weight gradient")
    return dx, dw, db


def activation_forward(z, kind, alpha):
    """a = act(z) over a flat array, and the state for activation_backward (the byte
    mask of z > 0, or a copy of a, written in the same pass)."""
    cdef int code = _KIND[kind]
    cdef double al = alpha
    cdef Py_ssize_t n = z.shape[0]
    cdef bint single = z.dtype == np.float32
    cdef int threads = _threads()
    cdef void* zp
    cdef void* ap
    cdef void* kp
    cdef void* mp
    a = _empty(n, dtype=z.dtype)
    keep, mask = _kept(code, n, z.dtype)
    if n > 0:
        zp, ap, kp, mp = _data(z), _data(a), _data_or_null(keep), _data_or_null(mask)
        with nogil:
            if single:
                dense_act_mt(code, al, n, <const float*>zp, <float*>ap, <float*>kp, <int8_t*>mp, threads)
            else:
                dense_act_mt(code, al, n, <const double*>zp, <double*>ap, <double*>kp, <int8_t*>mp, threads)
    return a, (code, al, keep, mask)


def activation_backward(da, state):
    """dz = da * act'(.) over a flat array."""
    code_, alpha_, keep, mask = state
    cdef int code = code_
    cdef double al = alpha_
    cdef Py_ssize_t n = da.shape[0]
    cdef bint single = da.dtype == np.float32
    cdef int threads = _threads()
    cdef void* dp
    cdef void* kp
    cdef void* mp
    cdef void* zp
    dz = _empty(n, dtype=da.dtype)
    if n > 0:
        dp, kp, mp, zp = _data(da), _data_or_null(keep), _data_or_null(mask), _data(dz)
        with nogil:
            if single:
                dense_grad_mt(code, al, n, <const float*>dp, <const float*>kp, <const int8_t*>mp, <float*>zp,
                              threads)
            else:
                dense_grad_mt(code, al, n, <const double*>dp, <const double*>kp, <const int8_t*>mp, <double*>zp,
                              threads)
    return dz


def softmax(z):
    """p = softmax of every row of z (rows, C)."""
    cdef Py_ssize_t rows = z.shape[0], n = z.shape[1]
    cdef bint single = z.dtype == np.float32
    cdef int threads = _threads()
    cdef void* zp
    cdef void* pp
    p = _empty((rows, n), dtype=z.dtype)
    if rows > 0 and n > 0:
        zp, pp = _data(z), _data(p)
        with nogil:
            if single:
                dense_softmax(rows, n, <const float*>zp, <float*>pp, threads)
            else:
                dense_softmax(rows, n, <const double*>zp, <double*>pp, threads)
    return p
