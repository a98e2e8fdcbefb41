"""Softmax and sigmoid cross-entropy losses, computed stably from the logits.

The losses compute in the dtype of the logits (float32 stays float32; integer
logits compute in float64); targets are data, converted to it, and never change
it. ``"sum"`` and ``"mean"`` return a 0-d array of that dtype (as PyTorch returns a
0-d tensor; ``float(loss)`` gives the number), ``"none"`` the per-example losses.
"""
import numpy as np

from . import _args as A
from . import _backends

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
           "sigmoid_cross_entropy_forward", "sigmoid_cross_entropy_backward"]

REDUCTIONS = ("mean", "sum", "none")


def _logits(fn, logits):
    arrays, dtype = A.as_arrays(fn, logits=logits)
    return arrays["logits"], dtype


def _target_array(fn, target):
    try:
        return np.asarray(target)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{fn}: target cannot be read as a numeric array ({exc})") from None


def _probabilities(fn, target, dtype, what):
    """A target of probabilities (or 0/1 labels), checked to lie in [0, 1] (NaN passes
    through to the loss), as a C-contiguous array of the logits' dtype."""
    A.float_dtype(fn, "target", target)  # complex, object, strings: TypeError
    t = A.contiguous(target, dtype).reshape(target.shape)
    with np.errstate(invalid="ignore"):
        bad = (t < 0) | (t > 1)
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), target.shape)
        raise ValueError(f"{fn}: target must hold {what} in [0, 1]; got {t[where]!r} at index "
                         f"{tuple(int(i) for i in where)}")
    return t


def softmax_cross_entropy_forward(logits, target, *, reduction="mean", backend=None):
    """Softmax cross-entropy of logits (..., C) over the last axis: returns (loss, cache).

    target: integer class indices of shape logits.shape[:-1] (each in [0, C)), or
    probabilities / one-hot rows of logits' shape (each in [0, 1]; terms with a zero
    target are 0 even against a logit of -inf). The loss of an example is
    -sum_j t_j log softmax(z)_j, computed from the log-sum-exp of the logits.
    reduction: "mean" (over the examples, the course's 1/m; NaN for none), "sum", or
    "none" (per-example losses, shape logits.shape[:-1]). "mean" and "sum" give a
    0-d array of the logits' dtype.
    """
    fn = "softmax_cross_entropy_forward"
    reduction = A.choice(fn, "reduction", reduction, REDUCTIONS)
    x, dtype = _logits(fn, logits)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{fn}: logits must have a last axis of C >= 1 classes, got shape {x.shape}")
    batch_shape, n_classes = x.shape[:-1], x.shape[-1]
    t = _target_array(fn, target)
    if t.shape == x.shape:
        t = _probabilities(fn, t, dtype, "probabilities").reshape(-1, n_classes)
    elif t.shape == batch_shape:
        if t.dtype.kind not in "iu":
            raise TypeError(f"{fn}: a target of shape logits.shape[:-1] = {batch_shape} holds class indices "
                            f"and must be integers, got dtype {t.dtype}; probabilities must have logits' "
                            f"shape {x.shape}")
        index = A.indices(fn, "target", t, n_classes, "class indices").reshape(-1)
        # the cache keeps its own copy (N integers): a caller refilling its label
        # buffer before the backward pass must not move the gradient's one-hot
        t = index.copy() if np.may_share_memory(index, t) else index
    else:
        raise ValueError(f"{fn}: target must have shape logits.shape[:-1] = {batch_shape} (class indices) or "
                         f"logits' shape {x.shape} (probabilities), got {t.shape}")
    name, kernel = _backends.resolve(fn, "softmax_cross_entropy_forward", backend)
    loss, state = kernel(A.contiguous(x, dtype).reshape(-1, n_classes), t, reduction)
    loss, = A.owned_outputs((loss,), state)
    if reduction == "none":
        loss = loss.reshape(batch_shape)
    return loss, A.Cache("softmax_cross_entropy", name, state, reduction=reduction, loss_shape=loss.shape,
                         logits_shape=x.shape, dtype=dtype)


def sigmoid_cross_entropy_forward(logits, target, *, reduction="mean", backend=None):
    """Sigmoid (binary) cross-entropy, every logit its own example: returns (loss, cache).

    target: logits' shape, each in [0, 1]. The loss of a logit z with target t is
    -(t log σ(z) + (1 - t) log(1 - σ(z))), computed as max(z, 0) - z t + log1p(e^-|z|)
    (a term whose weight is 0 is 0 even against an infinite logit).
    reduction: "mean" (divides by logits.size, as PyTorch's
    binary_cross_entropy_with_logits; NaN for none), "sum", or "none" (shape
    logits.shape). "mean" and "sum" give a 0-d array of the logits' dtype.
    """
    fn = "sigmoid_cross_entropy_forward"
    reduction = A.choice(fn, "reduction", reduction, REDUCTIONS)
    x, dtype = _logits(fn, logits)
    t = _target_array(fn, target)
    if t.shape != x.shape:
        raise ValueError(f"{fn}: target must have logits' shape {x.shape}, got {t.shape}")
    t = _probabilities(fn, t, dtype, "targets (probabilities or 0/1 labels)").reshape(-1)
    name, kernel = _backends.resolve(fn, "sigmoid_cross_entropy_forward", backend)
    loss, state = kernel(A.contiguous(x, dtype).reshape(-1), t, reduction)
    loss, = A.owned_outputs((loss,), state)
    if reduction == "none":
        loss = loss.reshape(x.shape)
    return loss, A.Cache("sigmoid_cross_entropy", name, state, reduction=reduction, loss_shape=loss.shape,
                         logits_shape=x.shape, dtype=dtype)


def _upstream(fn, dloss, cache):
    """dloss as the kernels take it: 0-d (one upstream gradient for every example) or,
    for reduction "none", the per-example gradients flattened."""
    arrays, _ = A.as_arrays(fn, dloss=dloss)
    g = arrays["dloss"]
    reduction, loss_shape = cache.meta["reduction"], cache.meta["loss_shape"]
    if g.shape == ():
        return np.asarray(g, dtype=cache.meta["dtype"])  # (np.ascontiguousarray would make it 1-D)
    if reduction == "none" and g.shape == loss_shape:
        return A.contiguous(g, cache.meta["dtype"]).reshape(-1)
    want = (f"a scalar or an array of the losses' shape {loss_shape}" if reduction == "none"
            else f"a scalar (reduction {reduction!r})")
    raise ValueError(f"{fn}: dloss must be {want}, got shape {g.shape}")


def softmax_cross_entropy_backward(cache, dloss=1.0):
    """dlogits (logits' shape) of softmax_cross_entropy_forward: dloss times
    (softmax(z) - t) per example (softmax(z) sum_j t_j - t for probability targets),
    over the number of examples for "mean". dloss: a scalar for "mean" / "sum"; for
    "none" an array of the losses' shape, or a scalar for every example."""
    fn = "softmax_cross_entropy_backward"
    A.check_cache(fn, cache, "softmax_cross_entropy")
    g = _upstream(fn, dloss, cache)
    dx = _backends.kernel_of(cache.backend, "softmax_cross_entropy_backward")(g, cache.state)
    return dx.reshape(cache.meta["logits_shape"])


def sigmoid_cross_entropy_backward(cache, dloss=1.0):
    """dlogits (logits' shape) of sigmoid_cross_entropy_forward: dloss times
    (sigmoid(z) - t), over logits.size for "mean". dloss: a scalar for "mean" / "sum";
    for "none" an array of logits' shape, or a scalar for every logit."""
    fn = "sigmoid_cross_entropy_backward"
    A.check_cache(fn, cache, "sigmoid_cross_entropy")
    g = _upstream(fn, dloss, cache)
    dx = _backends.kernel_of(cache.backend, "sigmoid_cross_entropy_backward")(g, cache.state)
    return dx.reshape(cache.meta["logits_shape"])
