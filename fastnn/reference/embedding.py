"""Embedding lookup: the row of the table selected by each id (the course's
``E · o_j``, a one-hot vector times the embedding matrix, without forming the
one-hot vector). Flat ids; see docs/KERNELS.md.
"""
import numpy as np


def embedding_forward(ids, table):
    """(y, state): y[p] = table[ids[p]] for the flat ids (P,); y is (P, D)."""
    y = table[ids]
    return y, (ids, table.shape[0])


def embedding_backward(dy, state):
    """dtable (V, D): row v is the sum of dy[p] over the positions p with ids[p] == v,
    added in increasing p onto zeros (a row no id selects stays zero)."""
    ids, n_rows = state
    dtable = np.zeros((n_rows, dy.shape[1]), dtype=dy.dtype)
    np.add.at(dtable, ids, dy)
    return dtable
