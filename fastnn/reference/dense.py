"""Dense layers, activations and softmax: the course's formulas in NumPy.

The course's linear_forward / linear_activation_forward and their backward passes,
batch-major: a batch is the rows of x, so Z = x W^T + b (the course's W A + b with
examples as columns, transposed). Gradients are plain sums over the batch (no 1/m).
This is the definition of correct for the compiled backends (docs/KERNELS.md).
"""
import numpy as np


def _act(kind, z, alpha):
    """act(z): the course's relu, sigmoid and tanh, and leaky ReLU max(z, alpha z)."""
    if kind is None:
        return z.copy()
    if kind == "relu":
        return np.maximum(z, 0)            # NaN stays NaN
    if kind == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-z))
    return np.tanh(z)


def _act_grad(kind, da, z, a, alpha):
    """dz = da * act'(z): 1 where z > 0 else 0 (relu) or alpha (leaky_relu); a (1 - a)
    for sigmoid and 1 - a^2 for tanh, from the output a."""
    if kind is None:
        return da.copy()
    if kind == "relu":
        return da * (z > 0)
    if kind == "leaky_relu":
        return da * np.where(z > 0, 1, alpha).astype(da.dtype)
    if kind == "sigmoid":
        return da * (a * (1 - a))
    return da * (1 - a * a)


def linear_forward(x, w, b, activation, alpha):
    with np.errstate(all="ignore"):
        z = x @ w.T
        if b is not None:
            z = z + b
        y = _act(activation, z, alpha)
    return y, (x, w, b is not None, activation, alpha, z, y)


def linear_backward(dy, state):
    x, w, has_bias, activation, alpha, z, y = state
    with np.errstate(all="ignore"):
        dz = _act_grad(activation, dy, z, y, alpha)
        dw = dz.T @ x
        db = dz.sum(axis=0) if has_bias else None
        dx = dz @ w
    return np.ascontiguousarray(dx), np.ascontiguousarray(dw), db


def activation_forward(z, kind, alpha):
    with np.errstate(all="ignore"):
        a = _act(kind, z, alpha)
    return a, (kind, alpha, z, a)


def activation_backward(da, state):
    kind, alpha, z, a = state
    with np.errstate(all="ignore"):
        return _act_grad(kind, da, z, a, alpha)


def softmax(z):
    """Each row: t = exp(z - max(z)), p = t / sum(t) (the course's softmax; subtracting
    the maximum changes nothing but keeps exp from overflowing)."""
    with np.errstate(all="ignore"):
        t = np.exp(z - z.max(axis=1, keepdims=True))
        return t / t.sum(axis=1, keepdims=True)
