"""Dense layers, activations, Flatten and Dropout over fastnn's public ops."""
import math
import numbers

import numpy as np

from .. import (activation_backward, activation_forward, dropout_backward, dropout_forward, linear_backward,
               linear_forward)
from . import init as _init
from ._base import (Layer, as_float_input, check_choice, check_dtype, check_dy, check_int, check_rng, register)

ACTIVATIONS = (None, "relu", "leaky_relu", "sigmoid", "tanh")


def check_alpha(layer, alpha):
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise ValueError(f"{layer}: alpha must be a finite real number, got {alpha!r}")
    return float(alpha)


def default_init(activation):
    """He for ReLU-family layers, Xavier otherwise (the course's pairing)."""
    return "he" if activation in ("relu", "leaky_relu") else "xavier"


@register
class Linear(Layer):
    """Fully connected layer ``y = act(x @ w.T + b)``.

    ``x`` is ``(..., n_in)`` (any leading axes), ``y`` is ``(..., n_out)``; ``w`` is
    ``(n_out, n_in)`` (the course's ``W^[l]``, PyTorch's ``weight``), ``b`` is
    ``(n_out,)`` and starts at zero. The activation is fused into the product
    (``fastnn.linear_forward``).
    """

    prefix = "linear"

    def __init__(self, n_in, n_out, activation=None, *, alpha=0.01, bias=True, init=None, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.n_in = check_int("Linear", "n_in", n_in, 0)
        self.n_out = check_int("Linear", "n_out", n_out, 0)
        self.activation = check_choice("Linear", "activation", activation, ACTIVATIONS)
        self.alpha = check_alpha("Linear", alpha)
        self.bias = bool(bias)
        self.init = init
        self.dtype = check_dtype("Linear", dtype)
        rng = check_rng("Linear", rng)
        self._add_param("w", _init.make("Linear", init if init is not None else default_init(activation),
                                        (self.n_out, self.n_in), self.n_in, self.n_out, rng, self.dtype))
        if self.bias:
            self._add_param("b", np.zeros(self.n_out, self.dtype))
        self._cache = None
        self._out_shape = None

    def forward(self, x, training=True):
        x = as_float_input("Linear", x, min_ndim=1, dtype=self.dtype)
        if x.shape[-1] != self.n_in:
            raise ValueError(f"Linear.forward: x has {x.shape[-1]} input features (last axis of shape {x.shape}) "
                             f"but the layer expects n_in = {self.n_in}")
        y, self._cache = linear_forward(x, self._params["w"], self._params.get("b"),
                                        activation=self.activation, alpha=self.alpha)
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("Linear", dy, self._out_shape, self.dtype)
        dx, dw, db = linear_backward(dy, self._cache)
        self._grads["w"] = dw
        if self.bias:
            self._grads["b"] = db
        return dx

    def _config_args(self):
        return {"n_in": self.n_in, "n_out": self.n_out, "activation": self.activation, "alpha": self.alpha,
                "bias": self.bias, "init": self.init if isinstance(self.init, str) else None,
                "dtype": self.dtype.name}


class _Activation(Layer):
    """An elementwise activation through ``fastnn.activation_forward``; keeps x's dtype."""

    kind = None

    def __init__(self):
        super().__init__()
        self._cache = None
        self._out_shape = None
        self._dtype = None

    def forward(self, x, training=True):
        x = as_float_input(type(self).__name__, x)
        a, self._cache = activation_forward(x, self.kind, **self._kwargs())
        self._out_shape, self._dtype = a.shape, a.dtype
        return a

    def _kwargs(self):
        return {}

    def backward(self, dy):
        dy = check_dy(type(self).__name__, dy, self._out_shape, self._dtype)
        return activation_backward(dy, self._cache)


@register
class ReLU(_Activation):
    """``max(0, x)``."""
    prefix = "relu"
    kind = "relu"


@register
class Sigmoid(_Activation):
    """``1 / (1 + e^-x)``."""
    prefix = "sigmoid"
    kind = "sigmoid"


@register
class Tanh(_Activation):
    """``tanh(x)``."""
    prefix = "tanh"
    kind = "tanh"


@register
class LeakyReLU(_Activation):
    """``x`` where ``x > 0``, else ``alpha * x`` (the course's ``max(0.01 x, x)``)."""
    prefix = "leakyrelu"
    kind = "leaky_relu"

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = check_alpha("LeakyReLU", alpha)

    def _kwargs(self):
        return {"alpha": self.alpha}

    def _config_args(self):
        return {"alpha": self.alpha}


@register
class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1 * d2 * ...)`` (C order: NHWC flattens as (h, w, c))."""

    prefix = "flatten"

    def __init__(self):
        super().__init__()
        self._in_shape = None
        self._out_shape = None

    def forward(self, x, training=True):
        x = as_float_input("Flatten", x, min_ndim=1)
        self._in_shape = x.shape
        # a copy, not a view: writing into the output must not change the caller's x
        # (the feature count is explicit: -1 cannot be inferred for an empty batch)
        y = np.array(x.reshape(x.shape[0], int(np.prod(x.shape[1:]))), order="C")
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("Flatten", dy, self._out_shape, None)
        return np.array(dy.reshape(self._in_shape), order="C")


@register
class Dropout(Layer):
    """Inverted dropout (the course's): keep each value with probability ``keep_prob``
    and divide by it; the identity in eval mode. The masks come from the layer's own
    generator (``rng``: a Generator, an int seed or None), so a seeded layer is reproducible.
    """

    prefix = "dropout"

    def __init__(self, keep_prob=0.5, *, rng=None):
        super().__init__()
        if (isinstance(keep_prob, (bool, np.bool_)) or not isinstance(keep_prob, numbers.Real)
                or not (0 < keep_prob <= 1)):
            raise ValueError(f"Dropout: keep_prob must be a number in (0, 1], got {keep_prob!r}")
        self.keep_prob = float(keep_prob)
        self.rng = check_rng("Dropout", rng)
        self._cache = None
        self._out_shape = None
        self._dtype = None

    def forward(self, x, training=True):
        x = as_float_input("Dropout", x)
        if not self._mode(training):
            self._cache = None
            self._out_shape, self._dtype = x.shape, x.dtype
            return x.copy()
        y, self._cache = dropout_forward(x, self.keep_prob, rng=self.rng)
        self._out_shape, self._dtype = y.shape, y.dtype
        return y

    def backward(self, dy):
        dy = check_dy("Dropout", dy, self._out_shape, self._dtype)
        if self._cache is None:  # the last forward pass was in eval mode: the identity
            return dy.copy()
        return dropout_backward(dy, self._cache)

    def _config_args(self):
        return {"keep_prob": self.keep_prob}
