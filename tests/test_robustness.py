"""Trustworthy under odd input and threads: every op, forward and backward, on every backend.

What the per-op test files already check (odd array variants, dtype rules, NaN in
pooling/conv/bmm forward, determinism of the parallel paths) is not repeated here.
This file adds, for every op at once: empty batches and all-size-1 shapes against the
reference, inputs never modified and outputs never aliasing them (backward included),
no uninitialised memory in outputs, bit-identical reruns, concurrent calls from
Python threads; NaN/Inf propagation where the per-op files do not test it; huge but
valid requests refused up front; and degraded installs (no compiled extension, no
numba) in subprocesses.
"""
import concurrent.futures
import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from helpers import assert_close, assert_fresh, assert_unchanged, need, snapshot

BACKENDS = fastnn.available_backends()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

# --------------------------------------------------------------------------- one table of full runs
# size "small": a few of everything; "empty": batch N = 0 / m = 0; "ones": every
# dimension that may be 1 is 1.
DIMS = {
    "small": dict(N=2, H=5, W=4, C=2, k=3, T=3, m=3, n_x=3, n_a=2),
    "empty": dict(N=0, H=5, W=4, C=2, k=3, T=2, m=0, n_x=3, n_a=2),
    "ones": dict(N=1, H=1, W=1, C=1, k=1, T=1, m=1, n_x=1, n_a=1),
}


def _conv(be, d, r):
    x, w, b = r((d["N"], d["H"], d["W"], 2 * d["C"])), r((d["k"], d["k"], d["C"], 2 * d["C"])), r((2 * d["C"],))
    y, cache = fastnn.conv2d_forward(x, w, b, padding="same", groups=2, backend=be)
    dy = r(y.shape)
    return [x, w, b, dy], [y, *fastnn.conv2d_backward(dy, cache)]


def _conv_nchw(be, d, r):
    x, w = r((d["N"], d["C"], d["H"] + 2, d["W"] + 2)), r((3, d["C"], d["k"], d["k"]))
    y, cache = fastnn.conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2 if d["k"] < 3 else 1), layout="NCHW",
                                     backend=be)
    dy = r(y.shape)
    return [x, w, dy], [y, *fastnn.conv2d_backward(dy, cache)]


def _im2col(be, d, r):
    x = r((d["N"], d["H"], d["W"], d["C"]))
    cols = fastnn.im2col(x, d["k"], padding=d["k"] // 2, backend=be)
    dcols = r(cols.shape)
    return [x, dcols], [cols, fastnn.col2im(dcols, x.shape, d["k"], padding=d["k"] // 2, backend=be)]


def _pool(mode):
    def run(be, d, r):
        x = r((d["N"], d["H"], d["W"], d["C"]))
        y, cache = fastnn.pool2d_forward(x, d["k"], 1 if d["k"] == 1 else 2, d["k"] // 2, mode=mode, ceil_mode=True,
                                         backend=be)
        dy = r(y.shape)
        return [x, dy], [y, fastnn.pool2d_backward(dy, cache), fastnn.global_max_pool2d(x, backend=be),
                         fastnn.global_avg_pool2d(x, layout="NCHW", backend=be)]
    return run


def _bmm(be, d, r):
    a, b = r((d["N"], 1, d["m"] + 1, d["n_x"])), r((d["C"], d["n_x"], d["n_a"]))
    c = fastnn.bmm(a, b, backend=be)
    dc = r(c.shape)
    return [a, b, dc], [c, *fastnn.bmm_backward(dc, a, b, backend=be)]


GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _recurrent(kind, sequence):
    def run(be, d, r):
        g, m, n_x, n_a = GATES[kind], d["m"], d["n_x"], d["n_a"]
        x = r((d["T"], m, n_x) if sequence else (m, n_x))
        states = [r((m, n_a)) for _ in range(2 if kind == "lstm" else 1)]
        W, b = r((g * n_a, n_a + n_x), 0.5), r((g * n_a,))
        name = f"{kind}_forward" if sequence else f"{kind}_cell_forward"
        *outs, cache = getattr(fastnn, name)(x, *states, W, b, backend=be)
        douts = [r(o.shape) for o in outs]
        if sequence and kind == "lstm":
            grads = fastnn.lstm_backward(douts[0], cache, dc_last=douts[1])
        else:
            grads = getattr(fastnn, name.replace("forward", "backward"))(*douts, cache)
        return [x, *states, W, b, *douts], [*outs, *grads]
    return run


OPS = {"conv": _conv, "conv_nchw": _conv_nchw, "im2col": _im2col, "max_pool": _pool("max"),
       "avg_pool": _pool("avg"), "bmm": _bmm}
for _kind in GATES:
    OPS[f"{_kind}_cell"] = _recurrent(_kind, False)
    OPS[f"{_kind}_seq"] = _recurrent(_kind, True)


def run_op(op, backend, size="small", seed=0, dtype=np.float64):
    """(inputs, outputs) of one full forward + backward run of `op`."""
    rng = np.random.default_rng(seed)
    inputs, outputs = OPS[op](backend, DIMS[size],
                              lambda shape, scale=1.0: (rng.standard_normal(shape) * scale).astype(dtype))
    return inputs, [o for o in outputs if o is not None]  # db of a conv without bias


def _has_kernels(backend):
    from helpers import backend_kernels
    from fastnn._kernels._collect import KERNEL_NAMES
    return set(KERNEL_NAMES) <= backend_kernels(backend)


@pytest.fixture
def full_backend(backend):
    need(backend, "conv2d_forward", "pool2d_forward", "bmm", "lstm_forward")
    return backend


# --------------------------------------------------------------------------- odd sizes, aliasing, garbage

@pytest.mark.parametrize("size", ["empty", "ones"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_empty_batch_and_size_one_match_reference(full_backend, op, size):
    _, got = run_op(op, full_backend, size)
    _, want = run_op(op, "reference", size)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{op} output {k}"
        assert_close(g, w, what=f"{op} output {k} ({size})")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(OPS))
def test_inputs_unchanged_and_outputs_fresh(full_backend, op, dtype):
    """Forward and backward: no argument is written, no output is a view of one."""
    rng = np.random.default_rng(1)
    before = {}

    def r(shape, scale=1.0):
        a = (rng.standard_normal(shape) * scale).astype(dtype)
        before[id(a)] = a.copy()  # every input comes straight from here and stays alive
        return a

    inputs, outputs = OPS[op](full_backend, DIMS["small"], r)
    outputs = [o for o in outputs if o is not None]
    assert_unchanged([before[id(a)] for a in inputs], inputs, op)
    assert_fresh(outputs, inputs, op)
    for i, out in enumerate(outputs):
        for j, other in enumerate(outputs[:i]):
            assert not np.shares_memory(out, other), f"{op}: outputs {j} and {i} share memory"


def _poison_heap():
    """Leave NaN bit patterns in memory the allocator will hand out again."""
    blocks = [np.full(n, np.nan) for n in (16, 64, 256, 1024, 4096, 16384) for _ in range(40)]
    blocks += [np.full(2**20, np.nan, np.float32) for _ in range(4)]
    del blocks
    gc.collect()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(OPS))
def test_no_uninitialised_memory_in_outputs(full_backend, op, dtype):
    for size in ("small", "ones"):
        _poison_heap()
        _, outputs = run_op(op, full_backend, size, dtype=dtype)
        for k, out in enumerate(outputs):
            assert np.isfinite(out).all(), f"{op} ({size}, {np.dtype(dtype).name}): output {k} has non-finite values"


@pytest.mark.parametrize("op", sorted(OPS))
def test_rerun_is_bit_identical(full_backend, op):
    fastnn.set_num_threads(2)
    _, first = run_op(op, full_backend, seed=3)
    _, second = run_op(op, full_backend, seed=3)
    for k, (a, b) in enumerate(zip(first, second)):
        np.testing.assert_array_equal(a, b, err_msg=f"{op} output {k}")


def test_concurrent_calls_agree_with_serial():
    """Different ops and backends at once from Python threads, as a web server might."""
    jobs = [(op, be, seed) for op in sorted(OPS) for be in BACKENDS if _has_kernels(be) for seed in (0, 1)]
    serial = {job: run_op(job[0], job[1], seed=job[2])[1] for job in jobs}
    order = jobs * 3
    np.random.default_rng(0).shuffle(order)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = [(job, pool.submit(run_op, job[0], job[1], "small", job[2])) for job in order]
        for job, future in futures:
            for k, (got, want) in enumerate(zip(future.result()[1], serial[job])):
                assert_close(got, want, what=f"{job} output {k} from a thread")


# --------------------------------------------------------------------------- NaN / Inf propagation

@pytest.mark.parametrize("kind", sorted(GATES))
def test_recurrent_nan_stays_in_its_batch_row(backend, kind):
    """A NaN in one example's x<t> poisons that example from step t on, and nothing else."""
    need(backend, f"{kind}_forward", f"{kind}_backward")
    rng = np.random.default_rng(5)
    T, m, n_x, n_a, g = 4, 3, 2, 2, GATES[kind]
    x = rng.standard_normal((T, m, n_x))
    x[2, 1, 0] = np.nan
    W, b = rng.standard_normal((g * n_a, n_a + n_x)), rng.standard_normal(g * n_a)
    args = (x, None, None, W, b) if kind == "lstm" else (x, None, W, b)
    h, *_ = getattr(fastnn, f"{kind}_forward")(*args, backend=backend)
    expected = np.zeros(h.shape, bool)
    expected[2:, 1, :] = True
    np.testing.assert_array_equal(np.isnan(h), expected)


@pytest.mark.parametrize("sign", [1, -1])
def test_recurrent_inf_input_saturates_not_nan(backend, sign):
    """tanh and sigmoid of ±Inf are exact (±1, 1 or 0): an infinite input saturates the gates."""
    need(backend, "lstm_forward", "gru_forward", "rnn_forward")
    x, h0 = np.array([[[sign * np.inf]]]), np.zeros((1, 1))
    h, c, _ = fastnn.lstm_forward(x, h0, h0, np.ones((4, 2)), np.zeros(4), backend=backend)
    # +Inf: every gate 1 and c~ = 1, so c = 1 and h = tanh(1); -Inf: gates 0, c = h = 0
    np.testing.assert_allclose(c, [[1.0 if sign > 0 else 0.0]], atol=1e-15)
    np.testing.assert_allclose(h, [[[np.tanh(1.0) if sign > 0 else 0.0]]], rtol=1e-12, atol=1e-15)
    h, _ = fastnn.gru_forward(x, h0, np.ones((3, 2)), np.zeros(3), backend=backend)
    np.testing.assert_allclose(h, [[[1.0 if sign > 0 else 0.0]]], atol=1e-15)
    h, _ = fastnn.rnn_forward(x, h0, np.ones((1, 2)), np.zeros(1), backend=backend)
    np.testing.assert_array_equal(h, [[[float(sign)]]])


def test_conv_backward_inf_reaches_only_the_affected_gradients(backend):
    need(backend, "conv2d_forward", "conv2d_backward")
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 6, 6, 2)), rng.standard_normal((3, 3, 2, 3))
    y, cache = fastnn.conv2d_forward(x, w, np.ones(3), backend=backend)
    dy = rng.standard_normal(y.shape)
    dy[1, 0, 0, 2] = np.inf  # the top-left output of image 1, channel 2
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    bad_dx = np.zeros(dx.shape, bool)
    bad_dx[1, 0:3, 0:3, :] = True  # the window that produced it
    np.testing.assert_array_equal(~np.isfinite(dx), bad_dx)
    np.testing.assert_array_equal(~np.isfinite(dw), np.broadcast_to([False, False, True], dw.shape))
    np.testing.assert_array_equal(np.isinf(db), [False, False, True])


def test_max_pool_backward_nan_window(backend):
    """The gradient of a window holding NaN goes to the NaN (it is the maximum), and only there."""
    need(backend, "pool2d_forward", "pool2d_backward")
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    x[0, 0, 0, 0] = np.nan
    y, cache = fastnn.pool2d_forward(x, 2, backend=backend)
    np.testing.assert_array_equal(np.isnan(y[0, :, :, 0]), [[True, False], [False, False]])
    dx = fastnn.pool2d_backward(np.ones(y.shape), cache)
    want = np.zeros((4, 4))
    want[0, 0] = want[1, 3] = want[3, 1] = want[3, 3] = 1
    np.testing.assert_array_equal(dx[0, :, :, 0], want)


# --------------------------------------------------------------------------- huge requests

def _view(shape):
    """A valid input of any size that takes no memory (every element is the same)."""
    return np.broadcast_to(np.ones(1), shape)


HUGE = {
    "conv2d": lambda be: fastnn.conv2d(np.ones((1, 2, 2, 1)), np.ones((1, 1, 1, 1)), padding=2**30, backend=be),
    "conv2d-batch": lambda be: fastnn.conv2d(_view((10**7, 10**4, 10, 1)), np.ones((1, 1, 1, 8)), backend=be),
    "im2col": lambda be: fastnn.im2col(np.ones((1, 3, 3, 1)), 3, padding=2**30, backend=be),
    "col2im": lambda be: fastnn.col2im(np.ones((1, 1)), (2**30, 2**30, 1, 1), 1, stride=2**30, backend=be),
    "max_pool2d": lambda be: fastnn.max_pool2d(_view((10**7, 10**7, 10, 1)), 1, backend=be),
    "bmm": lambda be: fastnn.bmm(_view((10**7, 1, 2, 2)), _view((10**7, 2, 2)), backend=be),
    "bmm_backward": lambda be: fastnn.bmm_backward(
        _view((10**7, 10**7, 0, 0)), _view((10**7, 1, 0, 2)), _view((10**7, 2, 0)), backend=be),
    "rnn_forward": lambda be: fastnn.rnn_forward(_view((10**6, 10**6, 0)), None, np.ones((10, 10)), np.ones(10),
                                                 backend=be),
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_requests_are_refused_up_front(backend, case):
    """Terabyte outputs: a ValueError naming the function and the size, before any allocation."""
    fn = case.split("-")[0]
    with pytest.raises(ValueError, match=rf"^{fn}: .*GiB"):
        HUGE[case](backend)


@pytest.mark.parametrize("name", ["stride", "dilation", "padding"])
def test_geometry_beyond_c_integers_is_refused(backend, name):
    """Values the kernels could only overflow on; a stride of 2**70 over a 1x1 image is
    otherwise valid (one output), so it needs its own check."""
    x, w = np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    for call in (lambda: fastnn.conv2d(x, w, **{name: 2**70}, backend=backend),
                 lambda: fastnn.im2col(x, 1, **{name: (1, 2**70)}, backend=backend)):
        with pytest.raises(ValueError, match=rf"^(conv2d|im2col): {name} must be at most"):
            call()
    if name != "padding":  # pooling padding is bounded by the kernel already
        with pytest.raises(ValueError, match=rf"^max_pool2d: {name} must be at most"):
            fastnn.max_pool2d(x, 1, **{name: 2**70}, backend=backend)
    assert fastnn.conv2d(x, w, **{name: 2**31 - 1 if name != "padding" else 0}, backend=backend).shape == (1, 1, 1, 1)


def test_missing_required_array_is_a_type_error():
    for call, fn in ((lambda: fastnn.conv2d(None, np.ones((1, 1, 1, 1))), "conv2d"),
                     (lambda: fastnn.bmm(np.ones((2, 2)), None), "bmm"),
                     (lambda: fastnn.max_pool2d(None, 2), "max_pool2d"),
                     (lambda: fastnn.lstm_cell_forward(None, None, None, np.ones((4, 1)), np.ones(4)),
                      "lstm_cell_forward")):
        with pytest.raises(TypeError, match=rf"^{fn}: \w+ must be an array, got None"):
            call()


def test_conv_with_zero_input_channels(backend):
    """C_in = 0 is a valid (if degenerate) convolution: y is the bias, dx is empty, dw is empty."""
    need(backend, "conv2d_forward", "conv2d_backward")
    x, w, b = np.ones((1, 3, 3, 0)), np.ones((3, 3, 0, 2)), np.array([1.0, -2.0])
    y, cache = fastnn.conv2d_forward(x, w, b, backend=backend)
    np.testing.assert_array_equal(y, np.broadcast_to([1.0, -2.0], (1, 1, 1, 2)))
    dx, dw, db = fastnn.conv2d_backward(np.ones(y.shape), cache)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_array_equal(db, [1.0, 1.0])


# --------------------------------------------------------------------------- degraded installs

BLOCKERS = {
    "no-numba": "sys.modules['numba'] = None  # what Python does for a package that is not installed\n",
    "no-extension": textwrap.dedent("""\
        import importlib.abc
        class Blocker(importlib.abc.MetaPathFinder):
            # a source checkout that was never built: the compiled modules do not exist
            def find_spec(self, name, path=None, target=None):
                if name.startswith('fastnn._kernels.cy_'):
                    raise ModuleNotFoundError(f'No module named {name!r}', name=name)
                return None
        sys.meta_path.insert(0, Blocker())
        """),
}
BLOCKERS["neither"] = BLOCKERS["no-numba"] + BLOCKERS["no-extension"]
MISSING = {"no-numba": ["numba"], "no-extension": ["cython"], "neither": ["numba", "cython"]}

DEGRADED_CHECK = textwrap.dedent("""\
    import numpy as np
    import fastnn
    missing = {missing!r}
    have = fastnn.available_backends()
    print('available', have)
    assert have == [b for b in ('cython', 'numba', 'reference') if b not in missing], have
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 5, 5, 2)), rng.standard_normal((3, 3, 2, 3))
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 2))
    xs, W, bias = rng.standard_normal((2, 2, 3)), rng.standard_normal((8, 5)), rng.standard_normal(8)
    def calls(be):
        return [fastnn.conv2d(x, w, padding=1, backend=be), fastnn.max_pool2d(x, 2, backend=be),
                fastnn.bmm(a, b, backend=be), fastnn.lstm_forward(xs, None, None, W, bias, backend=be)[0]]
    want = calls('reference')
    for be in have + [None]:
        for got, ref in zip(calls(be), want):
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    for gone in missing:
        for func in (lambda: fastnn.conv2d(x, w, backend=gone), lambda: fastnn.set_backend(gone)):
            try:
                func()
            except ValueError as exc:
                assert 'available backends' in str(exc) and str(have) in str(exc), str(exc)
            else:
                raise AssertionError(f'backend {{gone!r}} was accepted although it is missing')
    print('DEGRADED OK')
    """)


@pytest.mark.parametrize("how", sorted(BLOCKERS))
def test_degraded_install_keeps_the_other_backends(how):
    code = "import sys\n" + BLOCKERS[how] + DEGRADED_CHECK.format(missing=MISSING[how])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("FASTNN_BACKEND", None)
    # cwd=ROOT: `python -c` puts the working directory first on sys.path, and the
    # source checkout's uncompiled tree must not stand in for the fastnn under test.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DEGRADED OK" in result.stdout
