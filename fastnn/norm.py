"""Batch normalisation: training mode (batch statistics) forward and backward, and
inference with given statistics.

Every axis but the channel axis is reduced: x is (N, C) (dense), an NHWC image
(N, H, W, C) or, with layout="NCHW", (N, C, H, W). The kernels see x as (P, C, S)
with the channel in the middle — (N * H * W, C, 1) for NHWC and dense x, (N, C, H * W)
for NCHW — a reshape of the caller's array, so both layouts run without a copy.
"""
import numpy as np

from . import _args as A
from . import _backends

__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]

_X_DOC = {"NHWC": "(N, H, W, C)", "NCHW": "(N, C, H, W)"}


def _geometry(fn, x, layout):
    """(P, C, S) of x: the view the kernels take."""
    if x.ndim == 2:  # (N, C) whatever the layout: the channel axis is the last
        return x.shape[0], x.shape[1], 1
    if x.ndim == 4:
        if layout == "NHWC":
            n, h, w, c = x.shape
            return n * h * w, c, 1
        n, c, h, w = x.shape
        return n, c, h * w
    raise ValueError(f"{fn}: x must be 2-D (N, C) or 4-D {_X_DOC[layout]} (layout {layout}), got shape {x.shape}")


def _channel_vectors(fn, arrays, names, channels, x_shape, layout):
    """Each named array as (C,): any shape holding exactly C values."""
    out = []
    for name in names:
        what = f"one per channel of x of shape {tuple(x_shape)} (layout {layout})"
        out.append(A.bias_vector(fn, name, arrays[name], channels, what))
    return out


def batch_norm_forward(x, gamma, beta, *, eps=1e-5, layout="NHWC", backend=None):
    """Training-mode batch normalisation: returns (y, mean, var, cache).

    x: (N, C), or an image (N, H, W, C) (NHWC) / (N, C, H, W) (layout="NCHW"); a 2-D
    x is (N, C) under either layout. gamma, beta: any shape holding C values (the
    course's (n, 1) included). Per channel c, over every other axis:
    mean = 1/m sum x, var = 1/m sum (x - mean)^2 (biased: the course's sigma^2),
    y = gamma (x - mean) / sqrt(var + eps) + beta. mean and var come back as (C,).
    A batch with no value per channel (N * H * W == 0) has no statistics: ValueError.
    The cache refers to x: modifying x before batch_norm_backward changes dx.
    """
    fn = "batch_norm_forward"
    layout = A.check_layout(fn, layout)
    arrays, dtype = A.as_arrays(fn, x=x, gamma=gamma, beta=beta)
    x = arrays["x"]
    p, c, s = _geometry(fn, x, layout)
    gamma, beta = _channel_vectors(fn, arrays, ("gamma", "beta"), c, x.shape, layout)
    eps = A.real(fn, "eps", eps, low=0.0)
    if p * s == 0:
        raise ValueError(f"{fn}: the batch statistics need at least one value per channel, but x of shape "
                         f"{x.shape} (layout {layout}) has {p * s} (use batch_norm_inference for an empty batch)")
    A.check_output_size(fn, "y", x.shape, dtype)
    name, kernel = _backends.resolve(fn, "batch_norm_forward", backend)
    # gamma is copied (C values): an optimizer updating it in place before the backward
    # pass must not change dx
    y, mean, var, state = kernel(A.contiguous(x, dtype).reshape(p, c, s), np.array(gamma, dtype=dtype),
                                 A.contiguous(beta, dtype), eps)
    y, mean, var = A.owned_outputs((y, mean, var), state)
    cache = A.Cache("batch_norm", name, state, x_shape=x.shape, dtype=dtype, geometry=(p, c, s),
                    gamma_shape=arrays["gamma"].shape, beta_shape=arrays["beta"].shape)
    return y.reshape(x.shape), mean, var, cache


def batch_norm_backward(dy, cache):
    """Gradients (dx, dgamma, dbeta) of batch_norm_forward, the batch statistics
    differentiated too (training mode). dgamma and dbeta come back in gamma's and
    beta's shapes; they are sums over the batch (dbeta = sum dy)."""
    fn = "batch_norm_backward"
    A.check_cache(fn, cache, "batch_norm")
    meta = cache.meta
    dy = A.grad_array(fn, "dy", dy, meta["x_shape"])
    dy = A.contiguous(dy, meta["dtype"]).reshape(meta["geometry"])
    dx, dgamma, dbeta = _backends.kernel_of(cache.backend, "batch_norm_backward")(dy, cache.state)
    return dx.reshape(meta["x_shape"]), dgamma.reshape(meta["gamma_shape"]), dbeta.reshape(meta["beta_shape"])


def batch_norm_inference(x, gamma, beta, mean, var, *, eps=1e-5, layout="NHWC", backend=None):
    """Batch normalisation with given statistics (test time: the running averages):
    y = gamma (x - mean) / sqrt(var + eps) + beta per channel. Shapes as in
    batch_norm_forward; mean and var hold C values each. An empty batch gives an
    empty y. A negative var + eps gives NaN, as the square root does."""
    fn = "batch_norm_inference"
    layout = A.check_layout(fn, layout)
    arrays, dtype = A.as_arrays(fn, x=x, gamma=gamma, beta=beta, mean=mean, var=var)
    x = arrays["x"]
    p, c, s = _geometry(fn, x, layout)
    vectors = _channel_vectors(fn, arrays, ("gamma", "beta", "mean", "var"), c, x.shape, layout)
    eps = A.real(fn, "eps", eps, low=0.0)
    A.check_output_size(fn, "y", x.shape, dtype)
    name, kernel = _backends.resolve(fn, "batch_norm_inference", backend)
    y = kernel(A.contiguous(x, dtype).reshape(p, c, s), *(A.contiguous(v, dtype) for v in vectors), eps)
    return y.reshape(x.shape)
