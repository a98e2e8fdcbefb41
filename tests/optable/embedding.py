"""Embedding lookup."""
import numpy as np

from fastnn import embedding_backward, embedding_forward

from . import Op

# ids shape, V, D: "small" repeats ids (their gradients add up) and leaves rows unused
DIMS = {"small": ((2, 3), 4, 3), "empty": ((0, 3), 4, 3), "ones": ((1,), 1, 1)}
API = {"embedding_forward": ["ids", "table"], "embedding_backward": ["dy", "cache"]}


def _forward(be, size, r):
    shape, n_rows, width = DIMS[size]
    ids = r.rng.integers(0, n_rows, shape)
    table = r((n_rows, width))
    y, cache = embedding_forward(ids, table, backend=be)
    return [ids, table], [y], cache


def _backward(outputs, cache, r):
    dy = r(outputs[0].shape)
    return [dy], [embedding_backward(dy, cache)]


def _gradcheck(be, rng):
    ids = np.array([[3, 0, 3], [1, 3, 0]])  # repeats, and row 2 unused
    table = rng.standard_normal((4, 5))
    weights = rng.standard_normal(ids.shape + (5,))

    def loss():
        return float(np.sum(embedding_forward(ids, table, backend=be)[0] * weights))
    _, cache = embedding_forward(ids, table, backend=be)
    return loss, {"table": table}, {"table": embedding_backward(weights, cache)}


def _torch(be, dtype, rng):
    import torch
    import torch.nn.functional as F
    ids = rng.integers(0, 11, (5, 7))
    table = rng.standard_normal((11, 6)).astype(dtype)
    dy = rng.standard_normal(ids.shape + (6,)).astype(dtype)
    y, cache = embedding_forward(ids, table, backend=be)
    tt = torch.from_numpy(table).requires_grad_()
    ty = F.embedding(torch.from_numpy(ids), tt)
    ty.backward(torch.from_numpy(dy))
    return [("y", y, ty.detach().numpy()), ("dtable", embedding_backward(dy, cache), tt.grad.numpy())]


OPS = [Op("embedding", API, ("embedding_forward", "embedding_backward"), _forward, _backward, _gradcheck, _torch, bench=("N4",))]
