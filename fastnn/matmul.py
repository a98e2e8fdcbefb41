"""Batch matrix multiply with np.matmul's broadcasting, and its backward pass.

Broadcast batch dimensions reach the kernels as index arrays and transposed
operands as a flag, so neither is ever copied just to be multiplied.
"""
import functools

import numpy as np

from . import _args as A
from . import _backends

__all__ = ["bmm", "bmm_backward"]


def _operand(arr, dtype):
    """(the matrices as a C-contiguous (batch, rows, cols) array, transposed?).

    A transposed view (a Fortran-ordered matrix, x.swapaxes(-1, -2), ...) is passed
    as its contiguous transpose with the flag set, so BLAS reads it without a copy.
    """
    swapped = np.swapaxes(arr, -1, -2)
    if not arr.flags.c_contiguous and swapped.flags.c_contiguous and arr.ndim >= 2:
        rows, cols = swapped.shape[-2:]
        return A.contiguous(swapped, dtype).reshape(A.prod(arr.shape[:-2]), rows, cols), True
    rows, cols = arr.shape[-2:]
    return A.contiguous(arr, dtype).reshape(A.prod(arr.shape[:-2]), rows, cols), False


@functools.lru_cache(maxsize=16)
def _batch_index(count):
    """0 .. count - 1 as a read-only int64 array, made once per count."""
    index = np.arange(count, dtype=np.int64)
    index.flags.writeable = False
    return index


def _plain(fn, a, b, extra):
    """_prepare for the common call, in a few microseconds: a (batch, M, K) and b
    (batch, K, N) C-contiguous arrays of one native float dtype (and dc, when given,
    an array of that dtype); None for anything else, which takes the general path."""
    if not (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 3 and b.ndim == 3
            and a.dtype is b.dtype and (a.dtype is A.F32 or a.dtype is A.F64)
            and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]
            and a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    arrays = {"a": a, "b": b}
    for name, value in (extra or {}).items():
        if type(value) is not np.ndarray or value.dtype is not a.dtype:
            return None
        arrays[name] = value
    batch, m, n = a.shape[0], a.shape[1], b.shape[2]
    A.check_output_size(fn, "the result", (batch, m, n), a.dtype)
    index = _batch_index(batch)
    return dict(arrays=arrays, dtype=a.dtype, a3=a, ta=False, b3=b, tb=False, a_index=index, b_index=index,
                batch=(batch,), m=m, n=n, out_shape=(batch, m, n), a2_shape=a.shape, b2_shape=b.shape)


def _prepare(fn, a, b, extra=None):
    """Validate and normalise (a, b[, dc]): everything bmm and bmm_backward share."""
    plain = _plain(fn, a, b, extra)
    if plain is not None:
        return plain
    arrays, dtype = A.as_arrays(fn, a=a, b=b, **(extra or {}))
    a, b = arrays["a"], arrays["b"]
    for name, arr in (("a", a), ("b", b)):
        if arr.ndim < 1:
            raise ValueError(f"{fn}: {name} must have at least 1 dimension, got a scalar")
    # 1-D operands act like np.matmul: a vector a is a row, a vector b a column.
    a2 = a[np.newaxis, :] if a.ndim == 1 else a
    b2 = b[:, np.newaxis] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"{fn}: a (..., M, K) and b (..., K, N) must share K; got a {a.shape} and b {b.shape}")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"{fn}: the batch dimensions of a {a.shape} and b {b.shape} do not broadcast") from None
    m, n = a2.shape[-2], b2.shape[-1]
    out_shape = batch + (m, n)
    if a.ndim == 1:
        out_shape = out_shape[:-2] + (n,)
    if b.ndim == 1:
        out_shape = out_shape[:-1]
    # the result, and the two int64 batch index arrays built below
    A.check_output_size(fn, "the result", out_shape, dtype)
    A.check_output_size(fn, "the broadcast batch", batch + (2,), np.int64)
    index = {}
    if a2.shape[:-2] == b2.shape[:-2]:  # no broadcasting: entry i multiplies a[i] by b[i]
        index["a"] = index["b"] = np.arange(A.prod(batch), dtype=np.int64)
    else:
        for name, arr in (("a", a2), ("b", b2)):
            own = arr.shape[:-2]
            index[name] = np.broadcast_to(np.arange(A.prod(own), dtype=np.int64).reshape(own), batch).ravel()
    a3, ta = _operand(a2, dtype)
    b3, tb = _operand(b2, dtype)
    return dict(arrays=arrays, dtype=dtype, a3=a3, ta=ta, b3=b3, tb=tb, a_index=index["a"],
                b_index=index["b"], batch=batch, m=m, n=n, out_shape=out_shape,
                a2_shape=a2.shape, b2_shape=b2.shape)


def bmm(a, b, *, backend=None):
    """a (..., M, K) @ b (..., K, N) with np.matmul's broadcasting of the batch dimensions."""
    fn = "bmm"
    p = _prepare(fn, a, b)
    name, kernel = _backends.resolve(fn, "bmm", backend)
    c = kernel(p["a3"], p["b3"], p["a_index"], p["b_index"], p["ta"], p["tb"])
    return c.reshape(p["out_shape"])


def _unflatten(grad3, transposed, shape2, shape):
    """A kernel gradient (batch, rows, cols) back into the operand's own shape."""
    if transposed:
        grad3 = np.swapaxes(grad3.reshape(shape2[:-2] + shape2[-2:][::-1]), -1, -2)
    return np.ascontiguousarray(grad3.reshape(shape))


def bmm_backward(dc, a, b, *, backend=None):
    """Gradients (da, db) of c = bmm(a, b) given dc = dLoss/dc, in a's and b's shapes
    (summed over broadcast batch dimensions)."""
    fn = "bmm_backward"
    p = _prepare(fn, a, b, {"dc": dc})
    dc = p["arrays"]["dc"]
    if dc.shape != p["out_shape"]:
        raise ValueError(f"{fn}: dc must have the shape of bmm(a, b), {p['out_shape']}, got {dc.shape}")
    dc3 = A.contiguous(dc, p["dtype"]).reshape(len(p["a_index"]), p["m"], p["n"])
    name, kernel = _backends.resolve(fn, "bmm_backward", backend)
    da3, db3 = kernel(dc3, p["a3"], p["b3"], p["a_index"], p["b_index"], p["ta"], p["tb"])
    da = _unflatten(da3, p["ta"], p["a2_shape"], p["arrays"]["a"].shape)
    db = _unflatten(db3, p["tb"], p["b2_shape"], p["arrays"]["b"].shape)
    return da, db
