"""Weight initialisers: the course's ``he`` and ``xavier``, ``glorot_uniform``, ``zeros``.

Every initialiser is called ``init(shape, fan_in, fan_out, rng, dtype)`` and returns a
new array of that shape and dtype; a layer passes its own fans (a dense layer's
``n_in``/``n_out``, a convolution's ``kh * kw * C_in / groups`` and
``kh * kw * C_out / groups``). A user callable with the same signature works anywhere
a name does.
"""
import math

import numpy as np


def he(shape, fan_in, fan_out, rng, dtype=np.float32):
    """The course's He initialisation: ``randn(shape) * sqrt(2 / fan_in)``."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def xavier(shape, fan_in, fan_out, rng, dtype=np.float32):
    """The course's Xavier initialisation: ``randn(shape) * sqrt(1 / fan_in)``."""
    return (rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)).astype(dtype)


def glorot_uniform(shape, fan_in, fan_out, rng, dtype=np.float32):
    """Glorot/Keras uniform: ``U(-l, l)`` with ``l = sqrt(6 / (fan_in + fan_out))``."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def zeros(shape, fan_in, fan_out, rng, dtype=np.float32):
    """All zeros (the course's bias initialisation; breaks symmetry only for biases)."""
    return np.zeros(shape, dtype=dtype)


INITIALIZERS = {"he": he, "xavier": xavier, "glorot_uniform": glorot_uniform, "zeros": zeros}


def get(layer, init):
    """The initialiser a name or callable designates (ValueError naming the choices)."""
    if callable(init):
        return init
    if isinstance(init, str) and init in INITIALIZERS:
        return INITIALIZERS[init]
    raise ValueError(f"{layer}: init must be one of {sorted(INITIALIZERS)} or a callable, got {init!r}")


def make(layer, init, shape, fan_in, fan_out, rng, dtype):
    """Run an initialiser and check what it returned (shape, real numbers, finite)."""
    fn = get(layer, init)
    # a zero fan (an empty layer) would divide by zero: its arrays are empty anyway
    value = np.asarray(fn(tuple(shape), max(fan_in, 1), max(fan_out, 1), rng, dtype))
    if value.shape != tuple(shape):
        raise ValueError(f"{layer}: init returned shape {value.shape}, expected {tuple(shape)}")
    if value.dtype.kind not in "fiu":
        raise TypeError(f"{layer}: init returned dtype {value.dtype}, expected real numbers")
    return np.array(value, dtype=dtype, order="C")
