"""Reference kernels of the cross-entropy losses: the course's formulas in NumPy.

Softmax cross-entropy: L = -sum_j y_j log ŷ_j with ŷ = softmax(z), computed as
log ŷ = (z - max z) - log sum exp(z - max z) (the log-sum-exp, never the log of a
rounded probability); dz = ŷ - y per example (the course's dz^[L] = ŷ - y, here
ŷ sum_j y_j - y, which is the same when y sums to 1). Sigmoid cross-entropy:
L = -(y log a + (1 - y) log(1 - a)) with a = sigmoid(z), computed as
max(z, 0) - z y + log1p(e^-|z|); dz = a - y. Terms whose weight is 0 are 0
(0 log 0 = 0), also where the logit is infinite. "sum" and "mean" add the
per-example losses in float64.
"""
import numpy as np


def _reduce(loss, count, reduction):
    if reduction == "none":
        return loss
    total = loss.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / count if count > 0 else np.nan
    return np.array(total, dtype=loss.dtype)


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy_forward(logits, target, reduction):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log_p = _log_softmax(logits)
        if target.ndim == 1:
            loss = -log_p[np.arange(logits.shape[0]), target]
        else:
            loss = -np.where(target != 0, target * log_p, 0).sum(axis=1)
    return _reduce(loss.astype(logits.dtype), logits.shape[0], reduction), (logits, target, reduction)


def _upstream(dloss, count, reduction):
    """Every example's upstream gradient: dloss[i], or the scalar (over count for mean)."""
    if dloss.ndim == 1:
        return dloss
    g = float(dloss)
    if reduction == "mean" and count > 0:
        g = g / count
    return np.asarray(g, dtype=dloss.dtype)


def softmax_cross_entropy_backward(dloss, state):
    logits, target, reduction = state
    n, c = logits.shape
    g = _upstream(dloss, n, reduction)
    with np.errstate(invalid="ignore", over="ignore"):
        y_hat = np.exp(_log_softmax(logits))
        if target.ndim == 1:
            y = np.zeros_like(logits)
            y[np.arange(n), target] = 1
            dz = y_hat - y
        else:
            dz = y_hat * target.sum(axis=1, keepdims=True) - target
    return (dz * (g[:, None] if g.ndim == 1 else g)).astype(logits.dtype)


def sigmoid_cross_entropy_forward(logits, target, reduction):
    z, y = logits, target
    with np.errstate(invalid="ignore", over="ignore"):
        # max(z, 0) - z y = |z| (1 - y) for z >= 0 and |z| y below
        weight = np.where(z >= 0, 1 - y, y)
        loss = np.where(weight == 0, 0, np.abs(z) * weight) + np.log1p(np.exp(-np.abs(z)))
    return _reduce(loss.astype(z.dtype), z.size, reduction), (z, y, reduction)


def sigmoid_cross_entropy_backward(dloss, state):
    z, y, reduction = state
    g = _upstream(dloss, z.size, reduction)
    e = np.exp(-np.abs(z))
    a = np.where(z >= 0, 1 / (1 + e), e / (1 + e))  # sigmoid(z) without overflow
    return ((a - y) * g).astype(z.dtype)
