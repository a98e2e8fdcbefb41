"""Shared test helpers: numerical gradients, tolerances, odd-array variants, kernel skips."""
import numpy as np
import pytest

from fastnn import _backends
from optable import public_api

# --------------------------------------------------------------------------- backends


def backend_kernels(backend):
    """The kernel names a backend module provides (empty when it does not import)."""
    module = _backends._load(backend)
    if module is None:
        return set()
    return {name for name in dir(module) if not name.startswith("_") and callable(getattr(module, name))}


def need(backend, *kernels):
    """Skip the test when `backend` does not (yet) provide one of `kernels`."""
    have = backend_kernels(backend)
    missing = [k for k in kernels if k not in have]
    if missing:
        pytest.skip(f"backend {backend!r} has no {', '.join(missing)} kernel")


def on(backend):
    """Keyword arguments selecting `backend` in a public call."""
    return {"backend": backend}


# --------------------------------------------------------------------------- comparisons

def tolerances(dtype):
    if np.dtype(dtype) == np.float32:
        return 2e-4, 2e-5
    return 1e-9, 1e-11


def assert_close(got, want, dtype=None, what=""):
    """Compare `got` with `want` to the rounding expected of `dtype` (NaN == NaN)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    rtol, atol = tolerances(dtype if dtype is not None else got.dtype)
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, equal_nan=True, err_msg=what)


def rel_diff(a, b):
    """The course's gradient-check measure ||a - b|| / (||a|| + ||b||)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def numerical_gradient(loss, array, eps=1e-6):
    """Two-sided differences of the scalar `loss()` w.r.t. every entry of `array`,
    which is perturbed in place (and restored)."""
    flat = array.reshape(-1)
    assert np.shares_memory(flat, array)
    grad = np.zeros(flat.shape)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = loss()
        flat[i] = orig - eps
        minus = loss()
        flat[i] = orig
        grad[i] = (plus - minus) / (2 * eps)
    return grad.reshape(array.shape)


GRAD_TOL = 1e-7


def check_gradients(loss, named_arrays, analytic, tol=GRAD_TOL):
    """Assert every analytic gradient matches the numerical one (course threshold)."""
    for name, array in named_arrays.items():
        numeric = numerical_gradient(loss, array)
        got = analytic[name]
        assert got.shape == array.shape, f"d{name}: shape {got.shape} != {array.shape}"
        diff = rel_diff(got, numeric)
        assert diff < tol, f"d{name}: relative difference {diff:.3g} >= {tol} (analytic vs numerical)"


# --------------------------------------------------------------------------- random data

def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def nonzero(rng, shape, dtype=np.float64):
    """Random values bounded away from zero (for biases: a zero bias hides bugs)."""
    v = rng.uniform(0.3, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return v.astype(dtype)


def tie_free(rng, shape, dtype=np.float64):
    """Distinct values with gaps much larger than a gradient check's eps."""
    size = int(np.prod(shape))
    v = (rng.permutation(size) - size / 2) / max(size, 1) * 4.0
    return v.reshape(shape).astype(dtype)


# --------------------------------------------------------------------------- odd arrays

def _swapped(a):
    return a.astype(a.dtype.newbyteorder())


def _noncontig(a):
    if a.ndim == 0:  # a 0-d array has no strides to spread
        return a.copy()
    big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _negstride(a):
    if a.ndim == 0:
        return a
    return np.flip(np.ascontiguousarray(np.flip(a, axis=0)), axis=0)


def _axes_swapped(a):
    if a.ndim < 2:
        return _noncontig(a)
    return np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# name -> (function, what the library must treat it as)
VARIANTS = {
    "noncontig": (_noncontig, None),
    "negstride": (_negstride, None),
    "transposed": (_axes_swapped, None),
    "fortran": (np.asfortranarray, None),
    "readonly": (_readonly, None),
    "byteswapped": (_swapped, None),
    "list": (lambda a: a.tolist(), np.float64),
    "int": (lambda a: a.astype(np.int64), np.float64),
}


def make_variant(name, a):
    """(odd version of a, the dtype the library must compute in or None for a's)."""
    func, dtype = VARIANTS[name]
    return func(a), dtype


def integer_valued(rng, shape, low=-3, high=4):
    return rng.integers(low, high, shape).astype(np.float64)


def snapshot(*arrays):
    """Copies of the array-like arguments, to check later that nothing was modified."""
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, arrays, what=""):
    for i, (old, a) in enumerate(zip(before, arrays)):
        if a is None:
            continue
        new = np.asarray(a)
        assert new.dtype == old.dtype and new.shape == old.shape, f"{what}: argument {i} changed dtype/shape"
        assert new.tobytes() == old.tobytes(), f"{what}: argument {i} was modified in place"


def assert_fresh(outputs, inputs, what=""):
    """Every output is a new C-contiguous ndarray sharing no memory with any input."""
    for k, out in enumerate(outputs):
        if out is None:
            continue
        assert isinstance(out, np.ndarray), f"{what}: output {k} is {type(out).__name__}, not ndarray"
        assert out.flags.c_contiguous, f"{what}: output {k} is not C-contiguous"
        for i, inp in enumerate(inputs):
            if isinstance(inp, np.ndarray):
                assert not np.shares_memory(out, inp), f"{what}: output {k} shares memory with input {i}"


# The public functions of the contract (docs/API.md), from the op table (tests/optable),
# written out independently of fastnn.__all__.
OPS = list(public_api())
CONVERTERS = ["lstm_weights_from_course", "lstm_weights_from_torch", "rnn_weights_from_course",
              "rnn_weights_from_torch", "gru_weights_from_course"]
