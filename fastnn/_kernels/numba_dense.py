"""Numba dense-layer kernels (normalised arguments; docs/KERNELS.md).

The products go to BLAS through numba_matmul.gemm (numba's own numba_xxgemm, the
helper behind np.dot) with explicit transposes, so W^T and dz^T are read in place;
the bias, the activation and its derivative are prange loops over rows.

Every product is cut into blocks of ROWS x COLS outputs, a cut fixed by the sizes,
and the blocks run in a prange with BLAS held to one thread: OpenBLAS's own split of
one product over its threads changes float64 results with the thread count (its
edge kernels sum differently), a fixed cut does not.

What the backward pass reads is what the cython backend keeps: a byte per value
(z > 0) for relu and leaky_relu, a copy of the output y for sigmoid and tanh, both
written by the loop that applies the activation.
db sums fixed chunks of DB_ROWS rows in parallel and adds the chunks in order, so
it does not depend on the thread count.
"""
import contextlib

import numpy as np
from numba import njit, prange

from .._arena import empty as _empty
from ._threads import blas_on_one_thread
from .numba_matmul import gemm, scalars

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = 0, 1, 2, 3, 4
_KIND = {None: IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID, "tanh": TANH}
DB_ROWS = 32
# output rows and columns per block of a product
ROWS = 512
COLS = 512
# below this many elements an elementwise loop runs on one thread
_PARALLEL_ELEMENTS = 65536


@njit(cache=True)
def _gemm_block(q, col_blocks, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, one_zero):
    """Block q of C: rows of ROWS by columns of COLS, its own product."""
    r0 = (q // col_blocks) * ROWS
    c0 = (q % col_blocks) * COLS
    gemm(trans_a, trans_b, min(ROWS, M - r0), min(COLS, N - c0), K, A, r0 * lda if not trans_a else r0, lda,
         B, c0 * ldb if trans_b else c0, ldb, False, C, r0 * ldc + c0, ldc, one_zero)


@njit(cache=True, parallel=True)
def _gemm_blocks(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, one_zero):
    """C (M, N) = op(A) @ op(B) (numba_matmul.gemm's arguments) in blocks of ROWS x COLS."""
    col_blocks = (N + COLS - 1) // COLS
    blocks = (M + ROWS - 1) // ROWS * col_blocks
    for q in prange(blocks):
        _gemm_block(q, col_blocks, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, one_zero)


def _product(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc):
    """C = op(A) @ op(B) on flat arrays, in _gemm_blocks's blocks with BLAS on one thread
    (a product of one block is that block's call, without a parallel region: on a busy
    machine entering one can wait milliseconds for a thread)."""
    if M <= 0 or N <= 0:
        return
    context = blas_on_one_thread()
    with context if context is not None else contextlib.nullcontext():
        if M <= ROWS and N <= COLS:
            _gemm_block(0, 1, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, scalars(C))
        else:
            _gemm_blocks(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, scalars(C))


@njit(cache=True)
def _act_vec(kind, alpha, n, z, y, keep, mask):
    """y[:n] = act(z[:n]) (y may be z); keep gets y (sigmoid, tanh), mask z > 0 (relu,
    leaky_relu). One loop per kind, so that each is a plain loop LLVM vectorises; the
    constants take alpha's type (the arrays' dtype) so float32 stays float32."""
    zero = alpha * 0
    one = zero + 1
    if kind == RELU:
        for j in range(n):
            v = z[j]
            mask[j] = v > 0
            y[j] = v if not v <= 0 else zero  # NaN stays NaN
    elif kind == LEAKY_RELU:
        for j in range(n):
            v = z[j]
            mask[j] = v > 0
            y[j] = v if v > 0 else alpha * v
    elif kind == SIGMOID:
        for j in range(n):
            a = one / (one + np.exp(-z[j]))
            y[j] = a
            keep[j] = a
    elif kind == TANH:
        for j in range(n):
            a = np.tanh(z[j])
            y[j] = a
            keep[j] = a
    else:
        for j in range(n):
            y[j] = z[j]


@njit(cache=True)
def _grad_vec(kind, alpha, n, d, keep, mask, dz):
    """dz[:n] = d * act'(.) from the kept output (sigmoid, tanh) or the mask (relu, leaky_relu)."""
    one = alpha * 0 + 1
    if kind == RELU:
        for j in range(n):
            dz[j] = d[j] * (one if mask[j] else one * 0)
    elif kind == LEAKY_RELU:
        for j in range(n):
            dz[j] = d[j] * (one if mask[j] else alpha)
    elif kind == SIGMOID:
        for j in range(n):
            k = keep[j]
            dz[j] = d[j] * (k * (one - k))
    elif kind == TANH:
        for j in range(n):
            k = keep[j]
            dz[j] = d[j] * (one - k * k)
    else:
        for j in range(n):
            dz[j] = d[j]


@njit(cache=True)
def _act_rows(kind, alpha, r0, r1, y, b, has_b, keep, mask):
    """y = act(y + b) in place for rows r0 .. r1 (keep and mask laid out as y)."""
    n = y.shape[1]
    for i in range(r0, r1):
        row = y[i]
        if has_b:
            for j in range(n):
                row[j] += b[j]
        if kind != IDENTITY:
            _act_vec(kind, alpha, n, row, row, keep[i if keep.shape[0] > 1 else 0],
                     mask[i if mask.shape[0] > 1 else 0])


@njit(cache=True, parallel=True)
def _act_all(kind, alpha, y, b, has_b, keep, mask, parallel):
    m, n = y.shape
    if parallel:
        chunk = max(1, 4096 // max(n, 1))
        for c in prange((m + chunk - 1) // chunk):
            _act_rows(kind, alpha, c * chunk, min(m, (c + 1) * chunk), y, b, has_b, keep, mask)
    else:
        _act_rows(kind, alpha, 0, m, y, b, has_b, keep, mask)


def _kept(kind, shape, dtype):
    """(keep, mask) the backward pass of `kind` reads."""
    if kind in (SIGMOID, TANH):
        return _empty(shape, dtype=dtype), None
    if kind in (RELU, LEAKY_RELU):
        return None, _empty(shape, dtype=np.int8)
    return None, None


def linear_forward(x, w, b, activation, alpha):
    M, K = x.shape
    N = w.shape[0]
    kind = _KIND[activation]
    y = _empty((M, N), dtype=x.dtype)
    keep, mask = _kept(kind, (M, N), x.dtype)
    if M * N:
        _product(False, True, M, N, K, x.reshape(-1), K, w.reshape(-1), K, y.reshape(-1), N)
        if kind != IDENTITY or b is not None:
            has_b = b is not None
            # a record the kind does not keep is stood in for by one unused row
            _act_all(kind, x.dtype.type(alpha), y, b if has_b else np.zeros(1, dtype=x.dtype), has_b,
                     keep if keep is not None else np.empty((1, N), x.dtype),
                     mask if mask is not None else np.empty((1, N), np.int8), M * N >= _PARALLEL_ELEMENTS)
    return y, (x, w, b is not None, kind, alpha, keep, mask)


@njit(cache=True)
def _grad_chunk(kind, alpha, r0, r1, dy, keep, mask, dz, partial, c, has_b):
    n = dy.shape[1]
    for i in range(r0, r1):
        if kind == IDENTITY:
            row = dy[i]
        else:
            _grad_vec(kind, alpha, n, dy[i], keep[i if keep.shape[0] > 1 else 0], mask[i if mask.shape[0] > 1 else 0],
                      dz[i])
            row = dz[i]
        if has_b:
            s = partial[c]
            if i == r0:
                for j in range(n):
                    s[j] = row[j]
            else:
                for j in range(n):
                    s[j] += row[j]


@njit(cache=True, parallel=True)
def _grad_and_sums(kind, alpha, dy, keep, mask, dz, partial, has_b, db, parallel):
    """dz = dy * act'(.); partial[c] = column sums of dz's chunk c of DB_ROWS rows;
    db = the chunks' sums added in chunk order."""
    m, n = dy.shape
    chunks = (m + DB_ROWS - 1) // DB_ROWS
    if parallel:
        for c in prange(chunks):
            _grad_chunk(kind, alpha, c * DB_ROWS, min(m, (c + 1) * DB_ROWS), dy, keep, mask, dz, partial, c, has_b)
    else:
        for c in range(chunks):
            _grad_chunk(kind, alpha, c * DB_ROWS, min(m, (c + 1) * DB_ROWS), dy, keep, mask, dz, partial, c, has_b)
    if has_b:
        for j in range(n):
            db[j] = 0.0
        for c in range(chunks):
            for j in range(n):
                db[j] += partial[c, j]


def linear_backward(dy, state):
    x, w, has_bias, kind, alpha, keep, mask = state
    M, K = x.shape
    N = w.shape[0]
    dx = _empty((M, K), dtype=x.dtype)
    dw = _empty((N, K), dtype=x.dtype)
    db = _empty(N, dtype=x.dtype) if has_bias else None
    dz = dy
    if kind != IDENTITY or has_bias:
        chunks = (M + DB_ROWS - 1) // DB_ROWS
        if kind != IDENTITY:
            dz = _empty((M, N), dtype=x.dtype)
        partial = np.empty((chunks if has_bias else 0, N), dtype=x.dtype)
        # a record the kind does not keep is stood in for by one unused row
        _grad_and_sums(kind, x.dtype.type(alpha), dy, keep if keep is not None else np.empty((1, N), x.dtype),
                       mask if mask is not None else np.empty((1, N), np.int8), dz, partial, has_bias,
                       db if has_bias else np.empty(0, dtype=x.dtype), M * N >= _PARALLEL_ELEMENTS)
    # dx (M, K) = dz @ w; dw (N, K) = dz^T @ x (gemm zero-fills when the reduction is empty)
    _product(False, False, M, K, N, dz.reshape(-1), N, w.reshape(-1), K, dx.reshape(-1), K)
    _product(True, False, N, K, M, dz.reshape(-1), N, x.reshape(-1), K, dw.reshape(-1), K)
    return dx, dw, db


@njit(cache=True)
def _part(record, i0, i1):
    """Elements i0:i1 of a kept record, or its one-element stand-in as it is."""
    return record[i0:i1] if record.shape[0] > 1 else record


@njit(cache=True)
def _flat_block(backward, kind, alpha, src, keep, mask, dst, i0, i1):
    if backward:
        _grad_vec(kind, alpha, i1 - i0, src[i0:i1], _part(keep, i0, i1), _part(mask, i0, i1), dst[i0:i1])
    else:
        _act_vec(kind, alpha, i1 - i0, src[i0:i1], dst[i0:i1], _part(keep, i0, i1), _part(mask, i0, i1))


@njit(cache=True, parallel=True)
def _flat(backward, kind, alpha, src, keep, mask, dst, parallel):
    """dst = act(src) with keep and mask written (forward), or dst = src * act'(.) from
    them (backward), over flat arrays: blocks of 4096 elements, in parallel when asked."""
    n = src.shape[0]
    block = 4096
    if parallel:
        for c in prange((n + block - 1) // block):
            i0 = c * block
            _flat_block(backward, kind, alpha, src, keep, mask, dst, i0, min(n, i0 + block))
    else:
        _flat_block(backward, kind, alpha, src, keep, mask, dst, 0, n)


def _run_flat(backward, code, alpha, src, keep, mask, dst):
    """_flat on src's elements; a record the kind does not keep is stood in for by one
    unused element."""
    if src.shape[0]:
        _flat(backward, code, src.dtype.type(alpha), src, keep if keep is not None else np.empty(1, src.dtype),
              mask if mask is not None else np.empty(1, np.int8), dst, src.shape[0] >= _PARALLEL_ELEMENTS)


def activation_forward(z, kind, alpha):
    code = _KIND[kind]
    a = _empty(z.shape[0], dtype=z.dtype)
    keep, mask = _kept(code, z.shape[0], z.dtype)
    _run_flat(False, code, alpha, z, keep, mask, a)
    return a, (code, alpha, keep, mask)


def activation_backward(da, state):
    code, alpha, keep, mask = state
    dz = _empty(da.shape[0], dtype=da.dtype)
    _run_flat(True, code, alpha, da, keep, mask, dz)
    return dz


@njit(cache=True)
def _softmax_rows(z, p, r0, r1):
    n = z.shape[1]
    for i in range(r0, r1):
        mx = z[i, 0]
        for j in range(1, n):
            v = z[i, j]
            if v != v or (mx == mx and v > mx):
                mx = v
        s = 0.0
        for j in range(n):
            e = np.exp(z[i, j] - mx)
            p[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(n):
            p[i, j] = p[i, j] * inv


@njit(cache=True, parallel=True)
def _softmax(z, p, parallel):
    rows, n = z.shape
    if parallel:
        chunk = max(1, 4096 // n)
        for c in prange((rows + chunk - 1) // chunk):
            _softmax_rows(z, p, c * chunk, min(rows, (c + 1) * chunk))
    else:
        _softmax_rows(z, p, 0, rows)


def softmax(z):
    p = _empty(z.shape, dtype=z.dtype)
    if z.size:
        _softmax(z, p, z.size >= _PARALLEL_ELEMENTS)
    return p
