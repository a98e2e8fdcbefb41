"""Dense-layer kernels of the cython backend (normalised arguments; docs/KERNELS.md).

Every product runs on fastnn's own GEMM core (fn_gemm.h) on the active CPU tier,
float32 and float64 alike, no BLAS; the drivers are C (fn_dense.h, through
_fn_dense.pxd):

- linear_forward packs W^T into the core's panels, then threads take blocks of
  whole rows, each block's product (started from the bias) followed at once by
  its activation while the block is still in the level-2 cache. What the backward
  pass reads is written by that same pass: z for relu / leaky_relu, y for sigmoid /
  tanh (so the returned y never needs a copy), nothing for no activation.
- linear_backward: dz = dy * act'(.) with the column sums of fixed chunks of rows
  (db adds the chunks in order), dx = dz @ W, dW = dz^T @ x.
- activation_forward / activation_backward: the same elementwise code over the
  flat array; softmax: rows in tasks, the maximum subtracted first.

Every output value is computed by one thread in a fixed order, and db's chunks do
not depend on the thread count, so results are the same bits on any thread count.
Outputs and scratch come from fastnn's buffer cache (fastnn/_arena.py).
"""
import numpy as np
cimport numpy as cnp

from .._arena import empty as _empty

from ._fn cimport (FN_ACT_RELU, FN_ACT_SIGMOID, FN_ACT_TANH, fn_cpu_tier, fn_max_threads, fn_openmp,
                   fn_set_tier, fn_tier, packed_size)
from ._fn_dense cimport (FN_ACT_IDENTITY, FN_ACT_LEAKY_RELU, FN_DENSE_DB_ROWS, dense_act_mt, dense_grad_mt,
                         dense_linear_backward, dense_linear_forward, dense_softmax)

cnp.import_array()

include "_module.pxi"

_KIND = {None: FN_ACT_IDENTITY, "relu": FN_ACT_RELU, "leaky_relu": FN_ACT_LEAKY_RELU,
         "sigmoid": FN_ACT_SIGMOID, "tanh": FN_ACT_TANH}


cdef inline void* _data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void* _data_or_null(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int _threads() noexcept nogil:
    return _num_threads if fn_openmp() else 1


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
    cdef void* pp
    y = _empty((M, N), dtype=x.dtype)
    keep = None if kind == FN_ACT_IDENTITY else _empty((M, N), dtype=x.dtype)
    if M > 0 and N > 0:
        packed = _empty(max(1, <Py_ssize_t>packed_size(not single, K, N)), dtype=x.dtype)
        xp, wp, bp, yp, kp, pp = _data(x), _data(w), _data_or_null(b), _data(y), _data_or_null(keep), _data(packed)
        with nogil:
            if single:
                dense_linear_forward(M, N, K, <const float*>xp, <const float*>wp, <float*>pp, <const float*>bp,
                                     kind, a, <float*>yp, <float*>kp, threads)
            else:
                dense_linear_forward(M, N, K, <const double*>xp, <const double*>wp, <double*>pp,
                                     <const double*>bp, kind, a, <double*>yp, <double*>kp, threads)
    return y, (x, w, b is not None, kind, a, keep)


def linear_backward(dy, state):
    """(dx, dw, db) of linear_forward; db is None when there was no bias."""
    x, w, has_bias, kind_, alpha_, keep = state
    cdef int kind = kind_
    cdef double a = alpha_
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0]
    cdef bint single = x.dtype == np.float32
    cdef int threads = _threads()
    cdef bint ok = True
    cdef Py_ssize_t chunks = (M + FN_DENSE_DB_ROWS - 1) // FN_DENSE_DB_ROWS
    cdef void* dyp
    cdef void* xp
    cdef void* wp
    cdef void* kp
    cdef void* dzp
    cdef void* pp
    cdef void* sp
    cdef void* dxp
    cdef void* dwp
    cdef void* dbp
    dx = _empty((M, K), dtype=x.dtype)
    dw = _empty((N, K), dtype=x.dtype)
    db = _empty(N, dtype=x.dtype) if has_bias else None
    dz = _empty((M, N), dtype=x.dtype) if kind != FN_ACT_IDENTITY and M * N > 0 else None
    packed = _empty(max(1, <Py_ssize_t>packed_size(not single, N, K)), dtype=x.dtype)
    partial = _empty(max(1, chunks * N), dtype=x.dtype) if has_bias else None
    dyp, xp, wp, kp, dzp = _data(dy), _data(x), _data(w), _data_or_null(keep), _data_or_null(dz)
    pp, sp, dxp, dwp, dbp = _data(packed), _data_or_null(partial), _data(dx), _data(dw), _data_or_null(db)
    with nogil:
        if single:
            ok = dense_linear_backward(M, N, K, <const float*>dyp, <const float*>xp, <const float*>wp,
                                       <const float*>kp, kind, a, <float*>dzp, <float*>pp, <float*>sp,
                                       <float*>dxp, <float*>dwp, <float*>dbp, threads)
        else:
            ok = dense_linear_backward(M, N, K, <const double*>dyp, <const double*>xp, <const double*>wp,
                                       <const double*>kp, kind, a, <double*>dzp, <double*>pp, <double*>sp,
                                       <double*>dxp, <double*>dwp, <double*>dbp, threads)
    if not ok:
        raise MemoryError("linear_backward: cannot allocate the scratch of the weight gradient")
    return dx, dw, db


def activation_forward(z, kind, alpha):
    """a = act(z) over a flat array, and the state for activation_backward: z itself for
    relu / leaky_relu, a copy of a (written in the same pass) for sigmoid / tanh."""
    cdef int code = _KIND[kind]
    cdef double al = alpha
    cdef Py_ssize_t n = z.shape[0]
    cdef bint single = z.dtype == np.float32
    cdef int threads = _threads()
    cdef void* zp
    cdef void* ap
    cdef void* kp
    a = _empty(n, dtype=z.dtype)
    keep = None
    if code == FN_ACT_SIGMOID or code == FN_ACT_TANH:
        keep = _empty(n, dtype=z.dtype)
    elif code != FN_ACT_IDENTITY:
        keep = z
    if n > 0:
        zp, ap = _data(z), _data(a)
        kp = _data_or_null(keep) if keep is not z else NULL
        with nogil:
            if single:
                dense_act_mt(code, al, n, <const float*>zp, <float*>ap, <float*>kp, threads)
            else:
                dense_act_mt(code, al, n, <const double*>zp, <double*>ap, <double*>kp, threads)
    return a, (code, al, keep)


def activation_backward(da, state):
    """dz = da * act'(.) over a flat array."""
    code_, alpha_, keep = state
    cdef int code = code_
    cdef double al = alpha_
    cdef Py_ssize_t n = da.shape[0]
    cdef bint single = da.dtype == np.float32
    cdef int threads = _threads()
    cdef void* dp
    cdef void* kp
    cdef void* zp
    dz = _empty(n, dtype=da.dtype)
    if n > 0:
        dp, kp, zp = _data(da), _data_or_null(keep), _data(dz)
        with nogil:
            if single:
                dense_grad_mt(code, al, n, <const float*>dp, <const float*>kp, <float*>zp, threads)
            else:
                dense_grad_mt(code, al, n, <const double*>dp, <const double*>kp, <double*>zp, threads)
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
