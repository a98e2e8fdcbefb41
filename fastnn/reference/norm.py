"""Reference batch normalisation kernels: the course's formulas in NumPy (docs/KERNELS.md).

x arrives as (P, C, S), the channel in the middle (NHWC and dense: (N * H * W, C, 1);
NCHW: (N, C, H * W)); every statistic is over axes 0 and 2. The arithmetic is done
in float64 whatever the element type (np.mean's pairwise sums, the two-pass
variance), and the results rounded to it once, so this backend is the accurate one
the compiled backends are measured against:

    mu = 1/m sum x        var = 1/m sum (x - mu)^2        (the course's sigma^2, biased)
    x_norm = (x - mu) / sqrt(var + eps)                   y = gamma x_norm + beta

and backward (gradients are sums over the batch, CS231n's simplified form):

    dbeta = sum dy        dgamma = sum dy x_norm
    dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_norm mean(dy x_norm))
"""
import numpy as np

_AXES = (0, 2)


def _channel(v):
    """A (C,) vector as (1, C, 1), to broadcast against (P, C, S)."""
    return v.reshape(1, -1, 1)


def batch_norm_forward(x, gamma, beta, eps):
    xd = x.astype(np.float64)
    mu = xd.mean(axis=_AXES)
    var = ((xd - _channel(mu)) ** 2).mean(axis=_AXES)
    invstd = 1.0 / np.sqrt(var + eps)
    x_norm = (xd - _channel(mu)) * _channel(invstd)
    y = _channel(gamma.astype(np.float64)) * x_norm + _channel(beta.astype(np.float64))
    return y.astype(x.dtype), mu.astype(x.dtype), var.astype(x.dtype), (x_norm, gamma, invstd)


def batch_norm_backward(dy, state):
    x_norm, gamma, invstd = state
    dyd = dy.astype(np.float64)
    dbeta = dyd.sum(axis=_AXES)
    dgamma = (dyd * x_norm).sum(axis=_AXES)
    m = x_norm.shape[0] * x_norm.shape[2]
    dx = _channel(gamma.astype(np.float64) * invstd) * (
        dyd - _channel(dbeta / m) - x_norm * _channel(dgamma / m))
    return dx.astype(dy.dtype), dgamma.astype(dy.dtype), dbeta.astype(dy.dtype)


def batch_norm_inference(x, gamma, beta, mean, var, eps):
    xd = x.astype(np.float64)
    x_norm = (xd - _channel(mean.astype(np.float64))) / np.sqrt(_channel(var.astype(np.float64)) + eps)
    y = _channel(gamma.astype(np.float64)) * x_norm + _channel(beta.astype(np.float64))
    return y.astype(x.dtype)
