"""Batch normalisation kernels of the cython backend (normalised arguments; docs/KERNELS.md).

x reaches the kernels as (P, C, S), the channel in the middle: NHWC images and
dense batches as (N * H * W, C, 1), NCHW images as (N, C, H * W), so both layouts
run in place, without a transposed copy. The arithmetic is C (fn_norm.h), written
once over the vector type of each CPU tier and element type: one pass over x for
the statistics (fixed-size chunks, each by the corrected two-pass algorithm while it
is in the level-1 cache, merged in double in chunk order), one for y; backward one
pass for its two sums and one for dx. Chunks are computed by any thread but merged in
a fixed order, so the results do not depend on the thread count.

The state kept for the backward pass is x itself, gamma, and the mean and
1 / sqrt(var + eps) in double.
"""
import numpy as np

from ._fn_norm cimport bn_backward, bn_forward, bn_inference, fn_bn_geom
from .._arena import empty as _empty

include "_module.pxi"


cdef fn_bn_geom _geometry(shape):
    cdef fn_bn_geom g
    g.P, g.C, g.S = shape
    return g


def batch_norm_forward(x, gamma, beta, double eps):
    """(y, mean, var, state): training-mode batch normalisation of x (P, C, S)."""
    cdef fn_bn_geom g = _geometry(x.shape)
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef int status = 0
    cdef void *xp
    cdef void *gp
    cdef void *bp
    cdef void *yp
    cdef void *mp
    cdef void *vp
    cdef double *mdp
    cdef double *idp
    y = _empty(x.shape, dtype=x.dtype)
    mean = np.empty(g.C, dtype=x.dtype)
    var = np.empty(g.C, dtype=x.dtype)
    mean_d = np.empty(g.C, dtype=np.float64)
    invstd_d = np.empty(g.C, dtype=np.float64)
    xp, gp, bp, yp, mp, vp = _data(x), _data(gamma), _data(beta), _data(y), _data(mean), _data(var)
    mdp = <double *>_data(mean_d)
    idp = <double *>_data(invstd_d)
    with nogil:
        if single:
            status = bn_forward(&g, <const float *>xp, <const float *>gp, <const float *>bp, eps, <float *>yp,
                                <float *>mp, <float *>vp, mdp, idp, threads)
        else:
            status = bn_forward(&g, <const double *>xp, <const double *>gp, <const double *>bp, eps,
                                <double *>yp, <double *>mp, <double *>vp, mdp, idp, threads)
    if status != 0:
        raise MemoryError("batch_norm_forward: no memory for the partial statistics")
    return y, mean, var, (x, gamma, mean_d, invstd_d)


def batch_norm_backward(dy, state):
    """(dx, dgamma, dbeta) of batch_norm_forward."""
    x, gamma, mean_d, invstd_d = state
    cdef fn_bn_geom g = _geometry(x.shape)
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef int status = 0
    cdef void *xp
    cdef void *dyp
    cdef void *gp
    cdef void *dxp
    cdef void *dgp
    cdef void *dbp
    cdef const double *mdp
    cdef const double *idp
    dx = _empty(x.shape, dtype=x.dtype)
    dgamma = np.empty(g.C, dtype=x.dtype)
    dbeta = np.empty(g.C, dtype=x.dtype)
    xp, dyp, gp, dxp, dgp, dbp = _data(x), _data(dy), _data(gamma), _data(dx), _data(dgamma), _data(dbeta)
    mdp = <const double *>_data(mean_d)
    idp = <const double *>_data(invstd_d)
    with nogil:
        if single:
            status = bn_backward(&g, <const float *>xp, <const float *>dyp, <const float *>gp, mdp, idp,
                                 <float *>dxp, <float *>dgp, <float *>dbp, threads)
        else:
            status = bn_backward(&g, <const double *>xp, <const double *>dyp, <const double *>gp, mdp, idp,
                                 <double *>dxp, <double *>dgp, <double *>dbp, threads)
    if status != 0:
        raise MemoryError("batch_norm_backward: no memory for the partial sums")
    return dx, dgamma, dbeta


def batch_norm_inference(x, gamma, beta, mean, var, double eps):
    """y = gamma (x - mean) / sqrt(var + eps) + beta per channel of x (P, C, S)."""
    cdef fn_bn_geom g = _geometry(x.shape)
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef int status = 0
    cdef void *xp
    cdef void *gp
    cdef void *bp
    cdef void *mp
    cdef void *vp
    cdef void *yp
    y = _empty(x.shape, dtype=x.dtype)
    xp, gp, bp, mp, vp, yp = _data(x), _data(gamma), _data(beta), _data(mean), _data(var), _data(y)
    with nogil:
        if single:
            status = bn_inference(&g, <const float *>xp, <const float *>gp, <const float *>bp,
                                  <const float *>mp, <const float *>vp, eps, <float *>yp, threads)
        else:
            status = bn_inference(&g, <const double *>xp, <const double *>gp, <const double *>bp,
                                  <const double *>mp, <const double *>vp, eps, <double *>yp, threads)
    if status != 0:
        raise MemoryError("batch_norm_inference: no memory for the coefficients")
    return y
