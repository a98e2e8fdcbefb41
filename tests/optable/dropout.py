"""Inverted dropout."""
import numpy as np

from fastnn import dropout_backward, dropout_forward

from . import Op

SHAPES = {"small": (3, 5), "empty": (0, 5), "ones": (1, 1)}
API = {"dropout_forward": ["x", "keep_prob"], "dropout_backward": ["dy", "cache"]}
KEEP = 0.7
SEED = 5


def _forward(be, size, r):
    x = r(SHAPES[size])
    y, cache = dropout_forward(x, KEEP, rng=SEED, backend=be)
    return [x], [y], cache


def _backward(outputs, cache, r):
    dy = r(outputs[0].shape)
    return [dy], [dropout_backward(dy, cache)]


def _gradcheck(be, rng):
    x = rng.standard_normal((4, 6))
    weights = rng.standard_normal(x.shape)

    def loss():  # the same seed: the same mask at every evaluation
        return float(np.sum(dropout_forward(x, KEEP, rng=SEED, backend=be)[0] * weights))
    _, cache = dropout_forward(x, KEEP, rng=SEED, backend=be)
    return loss, {"x": x}, {"x": dropout_backward(weights, cache)}


def _torch(be, dtype, rng):
    """PyTorch draws its own masks; the comparison applies the mask fastnn's contract
    defines (the course's, from a generator of the same seed) with torch ops and
    lets autograd differentiate it."""
    import torch
    x = rng.standard_normal((7, 5, 3)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = dropout_forward(x, KEEP, rng=SEED, backend=be)
    mask = torch.from_numpy(np.random.default_rng(SEED).random(x.shape) < KEEP)
    tx = torch.from_numpy(x).requires_grad_()
    ty = tx * mask / KEEP
    ty.backward(torch.from_numpy(dy))
    return [("y", y, ty.detach().numpy()), ("dx", dropout_backward(dy, cache), tx.grad.numpy())]


OPS = [Op("dropout", API, ("dropout_forward", "dropout_backward"), _forward, _backward, _gradcheck, _torch)]
