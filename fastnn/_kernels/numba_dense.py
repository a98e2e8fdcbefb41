"""Numba dense-layer kernels (normalised arguments; docs/KERNELS.md).

The products go to BLAS through numba_matmul.gemm (numba's own numba_xxgemm, the
helper behind np.dot) with explicit transposes, so W^T and dz^T are read in place;
the bias, the activation and its derivative are prange loops over rows.

What the backward pass reads is what the cython backend keeps: z for relu and
leaky_relu, the output y (a copy written by the same loop) for sigmoid and tanh.
db sums fixed chunks of DB_ROWS rows in parallel and adds the chunks in order, so
it does not depend on the thread count.
"""
import numpy as np
from numba import njit, prange

from .._arena import empty as _empty
from .numba_matmul import gemm, scalars

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = 0, 1, 2, 3, 4
_KIND = {None: IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID, "tanh": TANH}
DB_ROWS = 32
# below this many elements an elementwise loop runs on one thread
_PARALLEL_ELEMENTS = 65536


@njit(cache=True, inline="always")
def _act1(kind, v, alpha):
    if kind == RELU:
        return v if not v <= 0 else 0.0  # NaN stays NaN
    if kind == LEAKY_RELU:
        return v if v > 0 else alpha * v
    if kind == SIGMOID:
        return 1.0 / (1.0 + np.exp(-v))
    if kind == TANH:
        return np.tanh(v)
    return v


@njit(cache=True, inline="always")
def _grad1(kind, d, k, alpha):
    if kind == RELU:
        return d * (1.0 if k > 0 else 0.0)
    if kind == LEAKY_RELU:
        return d * (1.0 if k > 0 else alpha)
    if kind == SIGMOID:
        return d * (k * (1.0 - k))
    if kind == TANH:
        return d * (1.0 - k * k)
    return d


@njit(cache=True)
def _act_rows(kind, alpha, r0, r1, n, z, b, has_b, y, keep, keep_y):
    for i in range(r0, r1):
        for j in range(n):
            v = z[i, j] + b[j] if has_b else z[i, j]
            if kind != IDENTITY:
                z[i, j] = v
            a = _act1(kind, v, alpha)
            y[i, j] = a
            if keep_y:
                keep[i, j] = a


@njit(cache=True, parallel=True)
def _act_all(kind, alpha, z, b, has_b, y, keep, keep_y, parallel):
    """y = act(z + b) by rows (z receives z + b where it is kept)."""
    m, n = z.shape
    if parallel:
        chunk = max(1, 4096 // max(n, 1))
        for c in prange((m + chunk - 1) // chunk):
            _act_rows(kind, alpha, c * chunk, min(m, (c + 1) * chunk), n, z, b, has_b, y, keep, keep_y)
    else:
        _act_rows(kind, alpha, 0, m, n, z, b, has_b, y, keep, keep_y)


def linear_forward(x, w, b, activation, alpha):
    M, K = x.shape
    N = w.shape[0]
    kind = _KIND[activation]
    y = _empty((M, N), dtype=x.dtype)
    keep = None if kind == IDENTITY else _empty((M, N), dtype=x.dtype)
    if M * N:
        z = y if kind == IDENTITY else keep
        gemm(False, True, M, N, K, x.reshape(-1), 0, K, w.reshape(-1), 0, K, False, z.reshape(-1), 0, N,
             scalars(x))
        if kind != IDENTITY or b is not None:
            has_b = b is not None
            bias = b if has_b else np.zeros(1, dtype=x.dtype)
            _act_all(kind, x.dtype.type(alpha), z, bias, has_b, y, keep if keep is not None else y,
                     kind in (SIGMOID, TANH), M * N >= _PARALLEL_ELEMENTS)
    return y, (x, w, b is not None, kind, alpha, keep)


@njit(cache=True)
def _grad_chunk(kind, alpha, r0, r1, n, dy, keep, dz, partial, c, has_b):
    for i in range(r0, r1):
        for j in range(n):
            d = _grad1(kind, dy[i, j], keep[i, j], alpha) if kind != IDENTITY else dy[i, j]
            if kind != IDENTITY:
                dz[i, j] = d
            if has_b:
                if i == r0:
                    partial[c, j] = d
                else:
                    partial[c, j] += d


@njit(cache=True, parallel=True)
def _grad_and_sums(kind, alpha, dy, keep, dz, partial, has_b, db, parallel):
    """dz = dy * act'(keep); partial[c] = column sums of dz's chunk c of DB_ROWS rows;
    db = the chunks' sums added in chunk order."""
    m, n = dy.shape
    chunks = (m + DB_ROWS - 1) // DB_ROWS
    if parallel:
        for c in prange(chunks):
            _grad_chunk(kind, alpha, c * DB_ROWS, min(m, (c + 1) * DB_ROWS), n, dy, keep, dz, partial, c, has_b)
    else:
        for c in range(chunks):
            _grad_chunk(kind, alpha, c * DB_ROWS, min(m, (c + 1) * DB_ROWS), n, dy, keep, dz, partial, c, has_b)
    if has_b:
        for j in range(n):
            db[j] = 0.0
        for c in range(chunks):
            for j in range(n):
                db[j] += partial[c, j]


def linear_backward(dy, state):
    x, w, has_bias, kind, alpha, keep = state
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
        _grad_and_sums(kind, x.dtype.type(alpha), dy, keep if keep is not None else dy, dz, partial, has_bias,
                       db if has_bias else np.empty(0, dtype=x.dtype), M * N >= _PARALLEL_ELEMENTS)
    one_zero = scalars(x)
    # dx (M, K) = dz @ w; dw (N, K) = dz^T @ x (gemm zero-fills when the reduction is empty)
    gemm(False, False, M, K, N, dz.reshape(-1), 0, N, w.reshape(-1), 0, K, False, dx.reshape(-1), 0, K, one_zero)
    gemm(True, False, N, K, M, dz.reshape(-1), 0, N, x.reshape(-1), 0, K, False, dw.reshape(-1), 0, K, one_zero)
    return dx, dw, db


@njit(cache=True, parallel=True)
def _act_flat(kind, alpha, z, a, keep, keep_a, parallel):
    n = z.shape[0]
    block = 4096
    if parallel:
        for c in prange((n + block - 1) // block):
            for i in range(c * block, min(n, (c + 1) * block)):
                v = _act1(kind, z[i], alpha)
                a[i] = v
                if keep_a:
                    keep[i] = v
    else:
        for i in range(n):
            v = _act1(kind, z[i], alpha)
            a[i] = v
            if keep_a:
                keep[i] = v


def activation_forward(z, kind, alpha):
    code = _KIND[kind]
    a = _empty(z.shape[0], dtype=z.dtype)
    keep_a = code in (SIGMOID, TANH)
    keep = _empty(z.shape[0], dtype=z.dtype) if keep_a else (z if code != IDENTITY else None)
    if z.shape[0]:
        _act_flat(code, z.dtype.type(alpha), z, a, keep if keep_a else a, keep_a, z.shape[0] >= _PARALLEL_ELEMENTS)
    return a, (code, alpha, keep)


@njit(cache=True, parallel=True)
def _grad_flat(kind, alpha, d, keep, dz, parallel):
    n = d.shape[0]
    block = 4096
    if parallel:
        for c in prange((n + block - 1) // block):
            for i in range(c * block, min(n, (c + 1) * block)):
                dz[i] = _grad1(kind, d[i], keep[i], alpha)
    else:
        for i in range(n):
            dz[i] = _grad1(kind, d[i], keep[i], alpha)


def activation_backward(da, state):
    code, alpha, keep = state
    dz = _empty(da.shape[0], dtype=da.dtype)
    if da.shape[0]:
        _grad_flat(code, da.dtype.type(alpha), da, keep if keep is not None else da, dz,
                   da.shape[0] >= _PARALLEL_ELEMENTS)
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
