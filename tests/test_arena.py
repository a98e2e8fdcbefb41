"""The buffer cache behind the compiled kernels' results and scratch (fastnn/_arena.py):
a block is reused only once nothing refers to it, so results a caller keeps are never
overwritten by a later call."""
import gc

import numpy as np
import pytest

import fastnn
from fastnn import _arena

BIG = (_arena._MIN_BYTES // 4) + 1000  # float32 elements: just over the size the cache takes


@pytest.fixture(autouse=True)
def empty_cache():
    _arena.clear()
    yield
    _arena.clear()


def test_small_requests_bypass_the_cache():
    a = _arena.empty((10, 10), np.float64)
    assert a.shape == (10, 10) and a.dtype == np.float64
    assert _arena.cached_bytes() == 0


def test_large_blocks_are_aligned_shaped_and_writable():
    a = _arena.empty((2, BIG), np.float32)
    assert a.shape == (2, BIG) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % 64 == 0
    a[...] = 3
    assert (a == 3).all()


def test_a_block_in_use_is_not_handed_out_again():
    a = _arena.empty(BIG, np.float32)
    a[...] = 1
    view = a[10:20]
    del a
    b = _arena.empty(BIG, np.float32)  # the first block is still referred to by `view`
    assert not np.shares_memory(view, b)
    b[...] = 2
    assert (view == 1).all()


def test_a_released_block_is_reused():
    a = _arena.empty(BIG, np.float32)
    address = a.ctypes.data
    del a
    gc.collect()
    b = _arena.empty(BIG, np.float32)
    assert b.ctypes.data == address
    assert _arena.cached_bytes() < 2 * BIG * 4


def test_no_block_is_kept_past_the_limit(monkeypatch):
    monkeypatch.setattr(_arena, "_LIMIT_BYTES", 3 * BIG * 4)
    kept = [_arena.empty(BIG, np.float32) for _ in range(5)]
    assert _arena.cached_bytes() <= 3 * BIG * 4
    for i, a in enumerate(kept):
        a[...] = i
    for i, a in enumerate(kept):  # forgotten blocks stay valid for their users
        assert (a == i).all()


def _lstm(rng, sign):
    T, m, n_x, n_a = 8, 64, 48, 96  # state of a few MiB
    x = rng.standard_normal((T, m, n_x)).astype(np.float32) * sign
    W = (rng.standard_normal((4 * n_a, n_a + n_x)) * 0.1).astype(np.float32)
    b = np.zeros(4 * n_a, np.float32)
    dh = rng.standard_normal((T, m, n_a)).astype(np.float32) * sign
    return lambda backend: fastnn.lstm_forward(x, None, None, W, b, backend=backend), \
        lambda cache: fastnn.lstm_backward(dh, cache)


def _linear(rng, sign):
    x = rng.standard_normal((256, 300)).astype(np.float32) * sign  # results of 300 KiB
    w = rng.standard_normal((300, 300)).astype(np.float32)
    b = rng.standard_normal(300).astype(np.float32)
    dy = rng.standard_normal((256, 300)).astype(np.float32) * sign
    return lambda backend: fastnn.linear_forward(x, w, b, activation="relu", backend=backend), \
        lambda cache: fastnn.linear_backward(dy, cache)


def _batch_norm(rng, sign):
    x = rng.standard_normal((16, 16, 16, 32)).astype(np.float32) * sign  # 512 KiB
    g, b = np.ones(32, np.float32), np.zeros(32, np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32) * sign
    return lambda backend: fastnn.batch_norm_forward(x, g, b, backend=backend), \
        lambda cache: fastnn.batch_norm_backward(dy, cache)


# the kernels that take their results from the cache, on each compiled backend (the
# numba recurrent kernels allocate inside compiled code, with NumPy)
CACHED = [("cython", _lstm), ("cython", _linear), ("numba", _linear), ("cython", _batch_norm),
          ("numba", _batch_norm)]


@pytest.mark.parametrize("backend, make", CACHED, ids=[f"{b}-{m.__name__[1:]}" for b, m in CACHED])
def test_results_kept_by_the_caller_survive_later_calls(backend, make):
    if backend not in fastnn.available_backends():
        pytest.skip(f"{backend} is not available")
    rng = np.random.default_rng(0)
    forward, backward = make(rng, 1.0)
    *outs1, cache1 = forward(backend)
    assert _arena.cached_bytes() > 0, "the case is too small to reach the cache"
    grads1 = [g for g in backward(cache1) if g is not None]
    kept = [a.copy() for a in (*outs1, *grads1)]
    forward2, backward2 = make(np.random.default_rng(0), -1.0)
    for _ in range(3):
        *outs2, cache2 = forward2(backend)
        grads2 = [g for g in backward2(cache2) if g is not None]
        for mine in (*outs1, *grads1):
            for theirs in (*outs2, *grads2):
                assert not np.shares_memory(mine, theirs)
        del outs2, cache2, grads2
        gc.collect()
    for a, copy in zip((*outs1, *grads1), kept):
        np.testing.assert_array_equal(a, copy)
    # and the first call's cache still gives its own gradients
    again = [g for g in backward(cache1) if g is not None]
    for a, copy in zip(again, kept[len(outs1):]):
        np.testing.assert_array_equal(a, copy)
