"""Shapes big enough for the compiled kernels' parallel paths, at 1 and 2 threads."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import assert_close, need, nonzero, on, randn, tie_free


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    fastnn.set_num_threads(request.param)
    return request.param


def _twice(func):
    """Run func twice; the results must be bit-identical (no order-dependent sums)."""
    first, second = func(), func()
    for a, b in zip(first, second):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    return first


def test_conv_parallel_paths(compiled_backend, threads, rng):
    need(compiled_backend, "conv2d_forward", "conv2d_backward")
    x, w, b = randn(rng, (8, 14, 13, 8)), randn(rng, (3, 3, 4, 16)), nonzero(rng, (16,))
    kw = dict(stride=(1, 2), padding="same", groups=2)
    y, cache = fastnn.conv2d_forward(x, w, b, **kw, **on(compiled_backend))
    pads = naive.conv_pads("same", (14, 13), (3, 3), (1, 2), (1, 1))
    assert_close(y, naive.conv2d_nhwc(x, w, b, (1, 2), pads, (1, 1), 2))
    dy = randn(rng, y.shape)
    grads = _twice(lambda: fastnn.conv2d_backward(dy, cache))
    y_ref, cache_ref = fastnn.reference.conv2d_forward(x, w, b, **kw)
    for g, r in zip(grads, fastnn.reference.conv2d_backward(dy, cache_ref)):
        assert_close(g, r)
    _twice(lambda: (fastnn.conv2d(x, w, b, **kw, **on(compiled_backend)),))


def test_conv_float32_wide_reduction(compiled_backend, threads, rng):
    """float32 with a 3*3*48 = 432-term reduction stays within float32 rounding of float64."""
    need(compiled_backend, "conv2d_forward")
    x, w = randn(rng, (4, 9, 9, 48), np.float32), randn(rng, (3, 3, 48, 8), np.float32)
    y = fastnn.conv2d(x, w, padding=1, **on(compiled_backend))
    want = naive.conv2d_nhwc(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_parallel_paths(compiled_backend, threads, mode, rng):
    need(compiled_backend, "pool2d_forward", "pool2d_backward")
    x = tie_free(rng, (8, 15, 14, 12))
    y, cache = fastnn.pool2d_forward(x, 3, 2, 1, mode=mode, ceil_mode=True, **on(compiled_backend))
    y_ref, cache_ref = fastnn.reference.pool2d_forward(x, 3, 2, 1, mode=mode, ceil_mode=True)
    assert_close(y, y_ref)
    dy = randn(rng, y.shape)
    (dx,) = _twice(lambda: (fastnn.pool2d_backward(dy, cache),))
    assert_close(dx, fastnn.reference.pool2d_backward(dy, cache_ref))


def test_bmm_parallel_paths(compiled_backend, threads, rng):
    need(compiled_backend, "bmm", "bmm_backward")
    a, b = randn(rng, (6, 1, 33, 17)), randn(rng, (5, 17, 29))
    c = fastnn.bmm(a, b, **on(compiled_backend))
    assert_close(c, np.matmul(a, b))
    dc = randn(rng, c.shape)
    da, db = _twice(lambda: fastnn.bmm_backward(dc, a, b, **on(compiled_backend)))
    assert_close(da, np.matmul(dc, np.swapaxes(b, -1, -2)).sum(axis=1, keepdims=True))
    assert_close(db, np.matmul(np.swapaxes(a, -1, -2), dc).sum(axis=0))


def test_lstm_parallel_paths(compiled_backend, threads, rng):
    need(compiled_backend, "lstm_forward", "lstm_backward")
    T, m, n_x, n_a = 5, 64, 12, 16
    x, h0, c0 = randn(rng, (T, m, n_x)), randn(rng, (m, n_a)), randn(rng, (m, n_a))
    W, b = randn(rng, (4 * n_a, n_a + n_x)) * 0.3, nonzero(rng, (4 * n_a,))
    h, c, cache = fastnn.lstm_forward(x, h0, c0, W, b, **on(compiled_backend))
    h_ref, c_ref, cache_ref = fastnn.reference.lstm_forward(x, h0, c0, W, b)
    assert_close(h, h_ref)
    assert_close(c, c_ref)
    dh, dc = randn(rng, h.shape), randn(rng, c.shape)
    grads = _twice(lambda: fastnn.lstm_backward(dh, cache, dc_last=dc))
    for g, r in zip(grads, fastnn.reference.lstm_backward(dh, cache_ref, dc_last=dc)):
        assert_close(g, r)


def test_aliased_arguments(backend, rng):
    """The same array passed as several arguments is read, never written."""
    need(backend, "bmm", "bmm_backward", "lstm_cell_forward", "lstm_cell_backward")
    a = randn(rng, (3, 4, 4))
    keep = a.copy()
    c = fastnn.bmm(a, a, **on(backend))
    assert_close(c, np.matmul(keep, keep))
    da, db = fastnn.bmm_backward(a, a, a, **on(backend))
    assert_close(da, np.matmul(keep, np.swapaxes(keep, -1, -2)))
    assert_close(db, np.matmul(np.swapaxes(keep, -1, -2), keep))
    np.testing.assert_array_equal(a, keep)
    s = randn(rng, (2, 3))
    W, b = randn(rng, (12, 6)), nonzero(rng, (12,))
    s_keep = s.copy()
    h, cn, cache = fastnn.lstm_cell_forward(s, s, s, W, b, **on(backend))
    want_h, want_c = naive.lstm_cell(s_keep, s_keep, s_keep, W, b)
    assert_close(h, want_h)
    assert_close(cn, want_c)
    fastnn.lstm_cell_backward(s, s, cache)
    np.testing.assert_array_equal(s, s_keep)


_REPORT_THREADS = """
import json, os, fastnn
from fastnn import _backends
out = {"public": fastnn.get_num_threads(), "modules": {}}
for name in fastnn.available_backends():
    module = _backends._load(name)
    if name in ("cython", "numba"):  # the count is set at each call: look from inside one
        import numpy as np
        if name == "numba":
            import numba
            count = numba.get_num_threads
        seen = []
        home, kernel = module.KERNELS["bmm"]
        if name == "cython":
            count = home.get_num_threads
        module.KERNELS["bmm"] = (home, lambda *args: seen.append(count()) or kernel(*args))
        fastnn.bmm(np.ones((2, 2)), np.ones((2, 2)), backend=name)
        out["modules"][name] = seen
print(json.dumps(out))
"""


@pytest.mark.parametrize("omp", [None, "1", "2"])
def test_get_num_threads_tells_what_every_backend_uses(omp):
    """Before any set_num_threads, get_num_threads() is the count every backend runs
    (OMP_NUM_THREADS when set, else the CPUs this process may use), not a guess."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    run = subprocess.run([sys.executable, "-c", _REPORT_THREADS], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if omp is not None:
        expected = int(omp)
    else:
        expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "numba" in report["modules"]:
        import numba
        expected_numba = min(expected, numba.config.NUMBA_NUM_THREADS)
        assert report["modules"]["numba"] == [expected_numba]
    assert report["public"] == expected
    if "cython" in report["modules"]:
        assert report["modules"]["cython"] == [expected]  # OpenMP's count in the kernel's module


def test_numba_kernels_run_on_fastnn_threads_and_blas_only_during_the_call(monkeypatch):
    """numba's thread count is per Python thread and BLAS's is the user's: a numba kernel
    called from any thread runs on fastnn's count, BLAS too while it runs (from the
    thread that controls BLAS's shared pool: threadpoolctl lets one Python thread set
    it), and the user's BLAS setting is back after the call."""
    import threading
    threadpoolctl = pytest.importorskip("threadpoolctl")
    pytest.importorskip("scipy.linalg")  # its BLAS is among those held
    numba = pytest.importorskip("numba")
    from fastnn import _backends
    module = _backends._load("numba")

    def blas_counts():
        return {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}

    seen = []
    home, kernel = module.KERNELS["bmm"]

    def spy(*args):
        seen.append((numba.get_num_threads(), blas_counts()))
        return kernel(*args)

    monkeypatch.setitem(module.KERNELS, "bmm", (home, spy))
    a = np.ones((3, 4))
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # the user's setting
        for n in (2, 1, 2):
            fastnn.set_num_threads(n)
            fastnn.bmm(a, a.T, backend="numba")
            worker = threading.Thread(target=fastnn.bmm, args=(a, a.T), kwargs={"backend": "numba"})
            worker.start()
            worker.join()
            assert blas_counts() == {1}, "BLAS kept fastnn's count after the call"
    counts = [min(n, numba.config.NUMBA_NUM_THREADS) for n in (2, 1, 2)]
    assert [numba_threads for numba_threads, _ in seen] == [n for n in counts for _ in range(2)]
    assert [blas for _, blas in seen[::2]] == [{n} for n in (2, 1, 2)]  # the calls from this thread


def test_cython_kernels_run_on_fastnn_threads_set_at_the_call(monkeypatch):
    """The cython modules keep no count of their own: each call hands fastnn's count
    to the kernel's module, whichever Python thread makes it."""
    import threading
    from fastnn import _backends
    module = _backends._load("cython")
    if module is None:
        pytest.skip("the cython backend is not built")
    home, kernel = module.KERNELS["bmm"]
    seen = []

    def spy(*args):
        seen.append(home.get_num_threads())
        return kernel(*args)

    monkeypatch.setitem(module.KERNELS, "bmm", (home, spy))
    a = np.ones((3, 4))
    before = fastnn.get_num_threads()
    try:
        for n in (2, 1, 3):
            fastnn.set_num_threads(n)
            fastnn.bmm(a, a.T, backend="cython")
            worker = threading.Thread(target=fastnn.bmm, args=(a, a.T), kwargs={"backend": "cython"})
            worker.start()
            worker.join()
    finally:
        fastnn.set_num_threads(before)
    assert seen == [2, 2, 1, 1, 3, 3]
