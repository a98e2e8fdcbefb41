"""Batch matmul: one plain matrix product per batch entry (see docs/KERNELS.md).

Broadcasting arrives as index arrays: batch entry p multiplies a[a_index[p]] by
b[b_index[p]], so an operand shared by several entries receives their gradients summed.
"""
import numpy as np


def matmul(a, b):
    """a (M, K) @ b (K, N), each entry the inner product of a row of a and a column of b."""
    rows, cols = a.shape[0], b.shape[1]
    c = np.zeros((rows, cols), dtype=np.result_type(a, b))
    for i in range(rows):
        for j in range(cols):
            c[i, j] = np.dot(a[i, :], b[:, j])
    return c


def _operand(x, trans):
    return x.T if trans else x


def bmm(a, b, a_index, b_index, trans_a, trans_b):
    m = a.shape[2] if trans_a else a.shape[1]
    n = b.shape[1] if trans_b else b.shape[2]
    batch = len(a_index)
    c = np.zeros((batch, m, n), dtype=np.result_type(a, b))
    for p in range(batch):
        c[p] = matmul(_operand(a[a_index[p]], trans_a), _operand(b[b_index[p]], trans_b))
    return c


def bmm_backward(dc, a, b, a_index, b_index, trans_a, trans_b):
    """C = A @ B gives dA = dC @ B.T and dB = A.T @ dC, transposed back when passed transposed."""
    da = np.zeros_like(a)
    db = np.zeros_like(b)
    for p in range(len(a_index)):
        a_p = _operand(a[a_index[p]], trans_a)
        b_p = _operand(b[b_index[p]], trans_b)
        da_p = matmul(dc[p], b_p.T)
        db_p = matmul(a_p.T, dc[p])
        da[a_index[p]] += _operand(da_p, trans_a)
        db[b_index[p]] += _operand(db_p, trans_b)
    return da, db
