"""Embedding lookup: each integer id selects a row of a (V, D) table.

The backward pass is a scatter-add: row v of the table's gradient sums the output
gradients of every position whose id is v (in position order), and rows no id
selects are zero.
"""
import numpy as np

from . import _args as A
from . import _backends

__all__ = ["embedding_forward", "embedding_backward"]


def embedding_forward(ids, table, *, backend=None):
    """Embedding forward pass: returns (y, cache) for embedding_backward.

    ids: integers of any shape, each in [0, V) (a TypeError for non-integer data, a
    ValueError naming the first id out of range). table: (V, D) floats (integers
    compute in float64). y = table[ids], of shape ids.shape + (D,).
    """
    fn = "embedding_forward"
    arrays, dtype = A.as_arrays(fn, table=table)
    table = arrays["table"]
    A.check_ndim(fn, "table", table, 2, "(V, D): V rows of D values")
    n_rows, width = table.shape
    given = ids
    ids = A.indices(fn, "ids", ids, n_rows, "row indices of table")
    if ids.ndim == 1 and np.ndim(given) == 0:
        ids = ids.reshape(())  # a single id (A.indices hands back at least 1-D): y is (D,)
    if ids is given or not ids.flags.owndata:
        ids = ids.copy()  # the cache keeps the ids: a later change to the caller's must not reach backward
    shape = ids.shape + (width,)
    A.check_output_size(fn, "y", shape, dtype)
    name, kernel = _backends.resolve(fn, "embedding_forward", backend)
    y, state = kernel(ids.reshape(-1), A.contiguous(table, dtype))
    y, = A.owned_outputs((y,), state)
    return y.reshape(shape), A.Cache("embedding", name, state, ids_shape=ids.shape, table_shape=table.shape,
                                     dtype=dtype)


def embedding_backward(dy, cache):
    """Gradient of the table, (V, D): row v is the sum of dy over the positions whose id
    is v (repeated ids add up); rows no id selected are zero."""
    fn = "embedding_backward"
    A.check_cache(fn, cache, "embedding")
    n_rows, width = cache.meta["table_shape"]
    dy = A.grad_array(fn, "dy", dy, cache.meta["ids_shape"] + (width,))
    dy = A.contiguous(dy, cache.meta["dtype"]).reshape(A.prod(cache.meta["ids_shape"]), width)
    return _backends.kernel_of(cache.backend, "embedding_backward")(dy, cache.state)
