"""Inverted dropout (the course's): keep each element with probability keep_prob and
scale the kept ones by 1 / keep_prob, so that the expected output equals the input.

The mask is drawn here, from the caller's generator, as the course draws it
(``rng.random(x.shape) < keep_prob``, float64 draws in C order), so every backend
applies the same mask; the kernels compare the draws with keep_prob, scale, and keep
a one-byte mask for the backward pass.
"""
import numpy as np

from . import _args as A
from . import _backends
from ._arena import empty as _empty

__all__ = ["dropout_forward", "dropout_backward"]


def dropout_forward(x, keep_prob, *, rng=None, backend=None):
    """Inverted dropout forward pass: returns (y, cache) for dropout_backward.

    mask = rng.random(x.shape) < keep_prob; y = x * mask / keep_prob (x's dtype;
    integers and bools compute in float64). keep_prob in (0, 1]. rng: a
    numpy.random.Generator, used as it is (the next call draws the next mask), or a
    seed (int, SeedSequence, None for fresh entropy) for a new generator.

    keep_prob == 1 keeps every element whatever the draws, so nothing is drawn (the
    generator does not advance, as PyTorch's dropout with p=0 draws nothing) and y is
    a copy of x.
    """
    fn = "dropout_forward"
    keep_prob = A.real(fn, "keep_prob", keep_prob, 0.0, 1.0, low_open=True)
    rng = A.generator(fn, "rng", rng)
    arrays, dtype = A.as_arrays(fn, x=x)
    x = arrays["x"]
    A.check_output_size(fn, "y", x.shape, dtype)
    name, kernel = _backends.resolve(fn, "dropout_forward", backend)
    flat = A.contiguous(x, dtype).reshape(-1)
    draws = None
    if keep_prob < 1.0:
        draws = _empty(flat.shape[0], np.float64)
        rng.random(out=draws)  # the same numbers, in the same order, as rng.random(x.shape)
    y, state = kernel(flat, draws, keep_prob)
    y, = A.owned_outputs((y,), state)
    return y.reshape(x.shape), A.Cache("dropout", name, state, shape=x.shape, dtype=dtype)


def dropout_backward(dy, cache):
    """Gradient dx = dy * mask / keep_prob of dropout_forward (x's shape and dtype)."""
    fn = "dropout_backward"
    A.check_cache(fn, cache, "dropout")
    shape = cache.meta["shape"]
    dy = A.grad_array(fn, "dy", dy, shape)
    dy = A.contiguous(dy, cache.meta["dtype"]).reshape(-1)
    dx = _backends.kernel_of(cache.backend, "dropout_backward")(dy, cache.state)
    return dx.reshape(shape)
