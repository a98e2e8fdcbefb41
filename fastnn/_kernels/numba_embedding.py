"""Numba embedding kernels (flat ids; see docs/KERNELS.md).

Forward copies one table row per position, positions split over the threads.
Backward groups the positions by id with a counting sort (stable: each group in
position order), then the rows of the table's gradient are split over the threads,
each row written once by one thread: zeros, or ``0 + dy[p1] + dy[p2] + ...`` in
increasing position order (np.add.at onto zeros, to the bit), whatever the thread count.
"""
import numpy as np
from numba import njit, prange

from .._arena import empty as _empty


@njit(cache=True, parallel=True)
def _gather(ids, table, y):
    width = table.shape[1]
    for p in prange(ids.shape[0]):
        src = table[ids[p]]
        dst = y[p]
        for d in range(width):
            dst[d] = src[d]


@njit(cache=True)
def _group_by_id(ids, n_rows):
    """(start, order): the positions with id v are order[start[v]:start[v + 1]], increasing."""
    start = np.zeros(n_rows + 2, dtype=np.int64)
    for p in range(ids.shape[0]):
        start[ids[p] + 2] += 1
    for v in range(1, n_rows + 2):
        start[v] += start[v - 1]
    order = np.empty(ids.shape[0], dtype=np.int64)
    for p in range(ids.shape[0]):  # start[v + 1] is the next free slot of id v
        v = ids[p] + 1
        order[start[v]] = p
        start[v] += 1
    return start, order


@njit(cache=True, parallel=True)
def _scatter_rows(dy, start, order, out):
    width = out.shape[1]
    zero = out.dtype.type(0)
    for v in prange(out.shape[0]):
        row = out[v]
        s, e = start[v], start[v + 1]
        if s == e:
            for d in range(width):
                row[d] = zero
            continue
        src = dy[order[s]]
        for d in range(width):
            row[d] = zero + src[d]  # as onto zeros: -0.0 becomes +0.0
        for q in range(s + 1, e):
            src = dy[order[q]]
            for d in range(width):
                row[d] += src[d]


def embedding_forward(ids, table):
    """(y, (ids, V)): y[p] = table[ids[p]], (P, D)."""
    y = _empty((ids.shape[0], table.shape[1]), table.dtype)
    if y.size:
        _gather(ids, table, y)
    return y, (ids, table.shape[0])


def embedding_backward(dy, state):
    """dtable (V, D): row v = 0 + the dy rows of the positions with id v, in position order."""
    ids, n_rows = state
    out = _empty((n_rows, dy.shape[1]), dy.dtype)
    if out.size:
        start, order = _group_by_id(ids, n_rows)
        _scatter_rows(dy, start, order, out)
    return out
