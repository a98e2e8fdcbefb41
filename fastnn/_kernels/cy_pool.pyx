"""Pooling kernels of the cython backend (NHWC, normalised arguments; docs/KERNELS.md).

The kernels are C (fn_pool.h), written once over the vector type of each CPU tier
and element type: the channel loop is vectorised (the channels of a pixel are
contiguous), rows of the output (forward) or of the input (backward) are the tasks
of the OpenMP threads, and every output value and input gradient is computed by one
thread in a fixed order, so the results do not depend on the thread count.

Max pooling records, per output value, the tap of its first maximum inside the window
(``i * kw + j``; -1 for an empty window) as int8 when the window has fewer than 128
taps, else int32; backward replays each input row's covering windows and routes a
gradient where the recorded tap is the cell's. Outputs and gradients come from the
buffer cache (fastnn/_arena.py) and are fully written by the kernels.
"""
import numpy as np

from .._arena import empty as _empty

from ._fn_pool cimport (fn_pool_arg_bytes, fn_pool_avg_forward_d, fn_pool_avg_forward_f, fn_pool_backward_d,
                        fn_pool_backward_f, fn_pool_geom, fn_pool_max_forward_d, fn_pool_max_forward_f)


include "_module.pxi"


cdef fn_pool_geom _geometry(x_shape, ksize, stride, pads, dilation, out_hw, bint count_include_pad):
    cdef fn_pool_geom g
    g.N, g.H, g.W, g.C = x_shape
    g.Ho, g.Wo = out_hw
    g.kh, g.kw = ksize
    g.sh, g.sw = stride
    g.ph, g.pw = pads
    g.dh, g.dw = dilation
    g.count_include_pad = count_include_pad
    g.arg_bytes = fn_pool_arg_bytes(g.kh, g.kw)
    return g


def pool2d_forward(x, mode, ksize, stride, pads, dilation, out_hw, count_include_pad):
    """y and the state for pool2d_backward (max: the taps of the maxima; avg: the geometry)."""
    cdef bint is_max = mode == "max"
    cdef fn_pool_geom g = _geometry(x.shape, ksize, stride, pads, dilation, out_hw, count_include_pad)
    cdef bint single = x.dtype == np.float32
    cdef int threads = _num_threads
    cdef void *xp
    cdef void *yp
    cdef void *ap = NULL
    y = _empty((g.N, g.Ho, g.Wo, g.C), dtype=x.dtype)
    arg = None
    if is_max:
        arg = _empty((g.N, g.Ho, g.Wo, g.C), dtype=np.int8 if g.arg_bytes == 1 else np.int32)
    if g.N * g.Ho * g.Wo * g.C > 0:
        xp = _data(x)
        yp = _data(y)
        if is_max:
            ap = _data(arg)
            with nogil:
                if single:
                    fn_pool_max_forward_f(&g, <const float *>xp, <float *>yp, ap, threads)
                else:
                    fn_pool_max_forward_d(&g, <const double *>xp, <double *>yp, ap, threads)
        else:
            with nogil:
                if single:
                    fn_pool_avg_forward_f(&g, <const float *>xp, <float *>yp, threads)
                else:
                    fn_pool_avg_forward_d(&g, <const double *>xp, <double *>yp, threads)
    return y, (x.shape, arg, ksize, stride, pads, dilation, out_hw, bool(count_include_pad))


def pool2d_backward(dy, state):
    """dx: max routes to the recorded first maximum, avg spreads gradient / divisor."""
    x_shape, arg, ksize, stride, pads, dilation, out_hw, count_include_pad = state
    cdef fn_pool_geom g = _geometry(x_shape, ksize, stride, pads, dilation, out_hw, count_include_pad)
    cdef bint single = dy.dtype == np.float32
    cdef int threads = _num_threads
    cdef void *dyp
    cdef void *dxp
    cdef const void *ap = NULL
    cdef int status = 0
    dx = _empty(x_shape, dtype=dy.dtype)
    if g.N * g.H * g.W * g.C > 0:
        dyp = _data(dy)
        dxp = _data(dx)
        if arg is not None:
            ap = _data(arg)
        with nogil:
            if single:
                status = fn_pool_backward_f(&g, <const float *>dyp, ap, <float *>dxp, threads)
            else:
                status = fn_pool_backward_d(&g, <const double *>dyp, ap, <double *>dxp, threads)
        if status != 0:
            raise MemoryError("pool2d_backward: no memory for the column table")
    return dx
