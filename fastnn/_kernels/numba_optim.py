"""Numba optimizer steps (see docs/KERNELS.md): one parallel pass per call.

The arrays of a call (one dtype) travel as typed lists of flat views. Each array is
cut into chunks of _CHUNK elements; the chunks of all the arrays are the iterations
of one prange, and a chunk does the whole update of its elements in one loop
(weight decay, moments, bias correction, parameter), in place. An element's update
uses that element alone, so the results do not depend on the thread count; a call
of fewer than _SERIAL_BELOW elements runs the same chunks on the calling thread
(starting the team would cost more than the update).

The coefficients are formed here in double (c = 1 - beta; Adam's step t folded into
step = lr / (1 - beta1^t) and rbc2 = 1 / sqrt(1 - beta2^t)) and rounded once to the
arrays' dtype, as the cython backend does; the arithmetic is in that dtype.
"""
import numpy as np
from numba import njit, prange, types
from numba.typed import List

_CHUNK = 8192
_SERIAL_BELOW = 32768

# (dtype, read-only) -> the type of a typed list's items: the gradients go in a list of
# read-only arrays (a read-only one may come from the caller, and is never written)
_LIST_TYPES = {(np.dtype(t), readonly): types.Array(item, 1, "C", readonly=readonly)
               for t, item in ((np.float32, types.float32), (np.float64, types.float64))
               for readonly in (False, True)}


def _typed(arrays, readonly=False):
    """A typed list of the flat views of `arrays` (C-contiguous: no copy)."""
    out = List.empty_list(_LIST_TYPES[arrays[0].dtype, readonly])
    for a in arrays:
        out.append(a.reshape(-1))
    return out


def _chunks(params):
    """first[i]: the first chunk (task) of array i; first[-1]: the number of tasks."""
    counts = [-(-a.size // _CHUNK) for a in params]
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


@njit(cache=True)
def _owner(first, task):
    """The last array i with first[i] <= task (an empty array owns no task)."""
    lo = 0
    hi = first.shape[0] - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if first[mid] <= task:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---- one chunk of each update, on views of the chunk's elements (indexed from 0:
# LLVM vectorises these loops, not ones over [j0, j1) of the whole array; and
# error_model="numpy" drops the division's zero check, which stops it too); k holds
# the coefficients in the arrays' dtype

@njit(cache=True, error_model="numpy")
def _sgd_chunk(w, g, v, k, mode, decay):
    """mode 0: w -= lr g; 1: momentum; 2: Nesterov. k: lr, b1, c1, wd."""
    lr, b1, c1, wd = k[0], k[1], k[2], k[3]
    for j in range(w.shape[0]):
        gj = g[j] + wd * w[j] if decay else g[j]
        if mode == 0:
            w[j] = w[j] - lr * gj
        else:
            vj = b1 * v[j] + c1 * gj
            v[j] = vj
            w[j] = w[j] - lr * (b1 * vj + c1 * gj if mode == 2 else vj)


@njit(cache=True, error_model="numpy")
def _rmsprop_chunk(w, g, s, k, decay):
    """k: lr, b2, c2, eps, wd."""
    lr, b2, c2, eps, wd = k[0], k[1], k[2], k[3], k[4]
    for j in range(w.shape[0]):
        gj = g[j] + wd * w[j] if decay else g[j]
        sj = b2 * s[j] + c2 * (gj * gj)
        s[j] = sj
        w[j] = w[j] - lr * (gj / (np.sqrt(sj) + eps))


@njit(cache=True, error_model="numpy")
def _adam_chunk(w, g, v, s, k, decay):
    """k: step, b1, c1, b2, c2, eps, rbc2, wd."""
    step, b1, c1, b2, c2, eps, rbc2, wd = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]
    for j in range(w.shape[0]):
        gj = g[j] + wd * w[j] if decay else g[j]
        vj = b1 * v[j] + c1 * gj
        sj = b2 * s[j] + c2 * (gj * gj)
        v[j] = vj
        s[j] = sj
        w[j] = w[j] - step * (vj / (np.sqrt(sj) * rbc2 + eps))


# ---- the task loops: every chunk of every array, over the threads or on this one

@njit(cache=True)
def _span(first, task, size):
    i = _owner(first, task)
    j0 = (task - first[i]) * _CHUNK
    return i, j0, min(j0 + _CHUNK, size[i])


@njit(cache=True, parallel=True)
def _sgd_par(ws, gs, vs, first, size, k, mode, decay):
    for task in prange(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _sgd_chunk(ws[i][j0:j1], gs[i][j0:j1], vs[i][j0:j1], k, mode, decay)


@njit(cache=True)
def _sgd_one(ws, gs, vs, first, size, k, mode, decay):
    for task in range(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _sgd_chunk(ws[i][j0:j1], gs[i][j0:j1], vs[i][j0:j1], k, mode, decay)


@njit(cache=True, parallel=True)
def _rmsprop_par(ws, gs, ss, first, size, k, decay):
    for task in prange(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _rmsprop_chunk(ws[i][j0:j1], gs[i][j0:j1], ss[i][j0:j1], k, decay)


@njit(cache=True)
def _rmsprop_one(ws, gs, ss, first, size, k, decay):
    for task in range(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _rmsprop_chunk(ws[i][j0:j1], gs[i][j0:j1], ss[i][j0:j1], k, decay)


@njit(cache=True, parallel=True)
def _adam_par(ws, gs, vs, ss, first, size, k, decay):
    for task in prange(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _adam_chunk(ws[i][j0:j1], gs[i][j0:j1], vs[i][j0:j1], ss[i][j0:j1], k, decay)


@njit(cache=True)
def _adam_one(ws, gs, vs, ss, first, size, k, decay):
    for task in range(first[-1]):
        i, j0, j1 = _span(first, task, size)
        _adam_chunk(ws[i][j0:j1], gs[i][j0:j1], vs[i][j0:j1], ss[i][j0:j1], k, decay)


def _layout(params):
    """(chunk table, sizes, whether to use the threads) of a call's arrays."""
    size = np.array([a.size for a in params], dtype=np.int64)
    return _chunks(params), size, int(size.sum()) >= _SERIAL_BELOW


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    if not params:
        return
    first, size, parallel = _layout(params)
    k = np.array([lr, momentum, 1.0 - momentum, weight_decay], dtype=params[0].dtype)
    mode = 0 if velocity is None else (2 if nesterov else 1)
    ws = _typed(params)
    vs = ws if velocity is None else _typed(velocity)  # never read without momentum
    kernel = _sgd_par if parallel else _sgd_one
    kernel(ws, _typed(grads, readonly=True), vs, first, size, k, mode, weight_decay != 0)


def rmsprop_step(params, grads, square_avg, lr, beta, eps, weight_decay):
    if not params:
        return
    first, size, parallel = _layout(params)
    k = np.array([lr, beta, 1.0 - beta, eps, weight_decay], dtype=params[0].dtype)
    kernel = _rmsprop_par if parallel else _rmsprop_one
    kernel(_typed(params), _typed(grads, readonly=True), _typed(square_avg), first, size, k, weight_decay != 0)


def adam_step(params, grads, v, s, t, lr, beta1, beta2, eps, weight_decay):
    if not params:
        return
    first, size, parallel = _layout(params)
    k = np.array([lr / (1.0 - beta1**t), beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                  1.0 / (1.0 - beta2**t) ** 0.5, weight_decay], dtype=params[0].dtype)
    kernel = _adam_par if parallel else _adam_one
    kernel(_typed(params), _typed(grads, readonly=True), _typed(v), _typed(s), first, size, k, weight_decay != 0)
