"""Dense (fully connected) layers, activations and softmax.

``linear_forward`` is the course's ``linear_activation_forward`` batch-major:
``y = act(x @ w.T + b)`` with ``x (..., n_in)`` and ``w (n_out, n_in)`` (the course's
``W^[l]``, PyTorch's ``Linear.weight``), the bias and the activation applied in the
product's pass. The kernels see x as a matrix ``(M, n_in)``, M the product of its
leading axes.
"""
import numpy as np

from . import _args as A
from . import _backends

__all__ = ["linear_forward", "linear_backward", "activation_forward", "activation_backward", "softmax"]

ACTIVATIONS = (None, "relu", "leaky_relu", "sigmoid", "tanh")


def _activation(fn, name, value):
    if value is not None and not (isinstance(value, str) and value in ACTIVATIONS):
        raise ValueError(f"{fn}: {name} must be one of {ACTIVATIONS}, got {value!r}")
    return value


def linear_forward(x, w, b=None, *, activation=None, alpha=0.01, backend=None):
    """y = act(x @ w.T + b) and the cache for linear_backward.

    x (..., n_in); w (n_out, n_in); b None or any shape holding n_out values (the
    course's (n_out, 1) included); y (..., n_out). activation: None (no activation),
    "relu", "leaky_relu" (slope alpha for z <= 0), "sigmoid" or "tanh".
    """
    fn = "linear_forward"
    activation = _activation(fn, "activation", activation)
    alpha = A.real(fn, "alpha", alpha)
    arrays, dtype = A.as_arrays(fn, optional=("b",), x=x, w=w, b=b)
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    if x.ndim < 1:
        raise ValueError(f"{fn}: x must have at least 1 dimension (..., n_in), got shape {x.shape}")
    A.check_ndim(fn, "w", w, 2, "(n_out, n_in)")
    n_out, n_in = w.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"{fn}: x has {x.shape[-1]} input features (last axis of shape {x.shape}) "
                         f"but w of shape {w.shape} expects n_in = {n_in}")
    b_shape = None
    if b is not None:
        b_shape = b.shape
        b = A.contiguous(A.bias_vector(fn, "b", b, n_out, "one per output unit"), dtype)
    lead = x.shape[:-1]
    y_shape = lead + (n_out,)
    A.check_output_size(fn, "y", y_shape, dtype)
    name, kernel = _backends.resolve(fn, "linear_forward", backend)
    x2 = A.contiguous(x, dtype).reshape(A.prod(lead), n_in)
    y, state = kernel(x2, A.contiguous(w, dtype), b, activation, alpha)
    y, = A.owned_outputs((y,), state)
    cache = A.Cache("linear", name, state, x_shape=x.shape, y_shape=y_shape, b_shape=b_shape, dtype=dtype)
    return y.reshape(y_shape), cache


def linear_backward(dy, cache):
    """Gradients (dx, dw, db) of linear_forward: dx in x's shape, dw (n_out, n_in), db
    in b's shape (None when b was None). Plain sums over the batch (no 1/m)."""
    fn = "linear_backward"
    A.check_cache(fn, cache, "linear")
    meta = cache.meta
    dy = A.grad_array(fn, "dy", dy, meta["y_shape"])
    dy = A.contiguous(dy, meta["dtype"]).reshape(A.prod(meta["y_shape"][:-1]), meta["y_shape"][-1])
    dx, dw, db = _backends.kernel_of(cache.backend, "linear_backward")(dy, cache.state)
    if db is not None:
        db = db.reshape(meta["b_shape"])
    return dx.reshape(meta["x_shape"]), dw, db


def activation_forward(z, kind, *, alpha=0.01, backend=None):
    """a = act(z) elementwise, and the cache for activation_backward.

    kind: "relu", "leaky_relu" (max(z, alpha z) for alpha in [0, 1]; z if z > 0 else
    alpha z in general), "sigmoid", "tanh", or None: the identity (a is a copy of z),
    so that "no activation" is one more kind, as in linear_forward.
    """
    fn = "activation_forward"
    kind = _activation(fn, "kind", kind)
    alpha = A.real(fn, "alpha", alpha)
    arrays, dtype = A.as_arrays(fn, z=z)
    z = arrays["z"]
    A.check_output_size(fn, "a", z.shape, dtype)
    name, kernel = _backends.resolve(fn, "activation_forward", backend)
    a, state = kernel(A.contiguous(z, dtype).reshape(-1), kind, alpha)
    a, = A.owned_outputs((a,), state)
    cache = A.Cache("activation", name, state, shape=z.shape, dtype=dtype)
    return a.reshape(z.shape), cache


def activation_backward(da, cache):
    """dz = da * act'(z) for activation_forward's z. ReLU's derivative at 0 is 0
    (PyTorch's rule); leaky ReLU's is alpha there."""
    fn = "activation_backward"
    A.check_cache(fn, cache, "activation")
    shape = cache.meta["shape"]
    da = A.contiguous(A.grad_array(fn, "da", da, shape), cache.meta["dtype"]).reshape(-1)
    dz = _backends.kernel_of(cache.backend, "activation_backward")(da, cache.state)
    return dz.reshape(shape)


def softmax(z, axis=-1, *, backend=None):
    """p = exp(z - max) / sum(exp(z - max)) along `axis` (numerically stable: the
    maximum is subtracted first). p has z's shape; each slice along axis sums to 1."""
    fn = "softmax"
    arrays, dtype = A.as_arrays(fn, z=z)
    z = arrays["z"]
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{fn}: axis must be an int, got {axis!r}")
    if not -z.ndim <= axis < z.ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for z of shape {z.shape} ({z.ndim}-D)")
    axis = int(axis) % z.ndim
    A.check_output_size(fn, "p", z.shape, dtype)
    _, kernel = _backends.resolve(fn, "softmax", backend)
    if z.size == 0:  # no slice, or slices of no values: nothing to normalise
        return np.empty(z.shape, dtype)
    moved = np.moveaxis(z, axis, -1)
    p = kernel(A.contiguous(moved, dtype).reshape(A.prod(moved.shape[:-1]), z.shape[axis]))
    p = p.reshape(moved.shape)
    return p if axis == z.ndim - 1 else np.ascontiguousarray(np.moveaxis(p, -1, axis))
