"""The cython backend's own kernels (fastnn/_kernels/fn_*.h) on every CPU tier.

The general harness runs small shapes; these cases are sized to reach the own
kernels' full and partial tiles (6-row tiles of 16- to 64-wide panels, the fused
LSTM step's four gate vectors per panel, the input projection at small batches and
the step over [h, x] from 12 rows on, both dx routes of a convolution), on every
tier the CPU can run (AVX-512, AVX2 + FMA, generic), in float32 and float64, and
check them against the float64 naive twin and the reference, the tiers against each
other, PyTorch in float32, and numerical gradients (central differences along random
directions, in float64).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
import naive
from fastnn import _backends
from helpers import assert_close, assert_unchanged, randn, snapshot
from optable.recurrent import GATES

pytest.importorskip("fastnn._kernels.cy_conv")

DTYPES = [np.float32, np.float64]


def test_cpu_info_names_the_tiers():
    info = fastnn.cpu_info()
    assert info["isa_max"] in _backends.ISAS
    assert info["isa"] in _backends.ISAS
    assert _backends.ISAS.index(info["isa"]) <= _backends.ISAS.index(info["isa_max"])
    assert info["threads"] == fastnn.get_num_threads()
    assert isinstance(info["cpu"], str) and info["cpu"]


def test_set_isa_switches_and_refuses_unknown_tiers(tier):
    assert fastnn.cpu_info()["isa"] == tier
    for module in ("cy_conv", "cy_matmul", "cy_recurrent"):
        kernels = __import__(f"fastnn._kernels.{module}", fromlist=["active_tier"])
        assert _backends.ISAS[kernels.active_tier()] == tier, module
    with pytest.raises(ValueError, match="set_isa: unknown instruction-set tier 'sse9'"):
        _backends.set_isa("sse9")


def test_a_tier_above_the_cpu_runs_the_highest_it_has():
    top = _backends.cpu_isa()
    if top == _backends.ISAS[-1]:
        pytest.skip("this CPU runs every tier")
    before = _backends._isa
    try:
        with pytest.warns(RuntimeWarning, match=f"this CPU has no avx512; running the {top} tier"):
            assert _backends.set_isa("avx512") == top
    finally:
        _backends.set_isa(before)


@pytest.mark.parametrize("isa", ["generic", "avx2", "bogus"])
def test_fastnn_isa_environment_variable(isa):
    """FASTNN_ISA picks the tier at import (numba is told to compile for it too); an
    unknown name is an error that lists the tiers."""
    code = ("import fastnn, os; print(fastnn.cpu_info()['isa'], os.environ.get('NUMBA_CPU_NAME'), "
            "os.environ.get('NUMBA_CPU_FEATURES'))")
    env = dict(os.environ, FASTNN_ISA=isa)
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(__file__), timeout=120)
    if isa == "bogus":
        assert run.returncode != 0
        assert "FASTNN_ISA: unknown instruction-set tier 'bogus'" in run.stderr
        return
    assert run.returncode == 0, run.stderr
    active, numba_cpu, numba_features = run.stdout.split()
    top = _backends.cpu_isa()
    expected = isa if _backends.ISAS.index(isa) <= _backends.ISAS.index(top) else top
    assert active == expected
    assert (numba_cpu, numba_features) == {"generic": ("x86-64", "+sse2"),
                                           "avx2": ("haswell", "+avx,+avx2,+fma")}[isa]


def case(name, N=2, H=7, W=9, C_in=16, C_out=64, k=3, stride=1, padding=0, dilation=1, groups=1,
         bias=True):
    return pytest.param(dict(N=N, H=H, W=W, C_in=C_in, C_out=C_out, k=k, stride=stride,
                             padding=padding, dilation=dilation, groups=groups, bias=bias), id=name)


CASES = [
    case("c2-like", padding=1),
    case("partial-tiles", N=1, H=5, W=5, C_in=17, C_out=80, padding=1),
    case("pointwise-3-panels", C_out=130, k=1),
    case("strided", H=9, W=8, C_out=32, k=5, stride=2, padding=2),
    case("dilated-asym-pad", C_in=24, C_out=48, k=(3, 2), dilation=(2, 1), padding=((2, 0), (1, 3))),
    case("groups", C_in=32, C_out=64, groups=2, padding=1),
    case("groups-3", C_in=48, C_out=96, groups=3, k=(2, 3), stride=(1, 2)),
    case("small-c-in", C_in=3, C_out=64, padding=1),
    case("thin-c-out", C_in=32, C_out=8, padding=1, bias=False),
    case("big-pad", N=1, H=2, W=3, C_out=20, padding=3),
    case("same-even-k", H=5, W=4, C_out=16, k=4, padding="same"),
    case("kernel-covers-input", N=3, H=3, W=4, C_in=20, C_out=70, k=(3, 4)),
    case("one-pixel", N=1, H=1, W=1, C_out=17, k=1, bias=False),
]


def arrays(c, rng, dtype=np.float32):
    kh, kw = naive.pair(c["k"])
    x = randn(rng, (c["N"], c["H"], c["W"], c["C_in"]), dtype)
    w = randn(rng, (kh, kw, c["C_in"] // c["groups"], c["C_out"]), dtype)
    b = randn(rng, (c["C_out"],), dtype) if c["bias"] else None
    return x, w, b


def kwargs_of(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


def f64(a):
    return None if a is None else a.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", CASES)
def test_conv_against_float64_twins(c, layout, dtype, tier, rng):
    x, w, b = arrays(c, rng, dtype)
    kw = kwargs_of(c)
    kh, kwid = w.shape[:2]
    pads = naive.conv_pads(c["padding"], x.shape[1:3], (kh, kwid), naive.pair(c["stride"]),
                           naive.pair(c["dilation"]))
    want = naive.conv2d_nhwc(f64(x), f64(w), f64(b), naive.pair(c["stride"]), pads,
                             naive.pair(c["dilation"]), c["groups"])
    if layout == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(w.transpose(3, 2, 0, 1))
        want = want.transpose(0, 3, 1, 2)
    before = snapshot(x, w, b)
    y, cache = fastnn.conv2d_forward(x, w, b, layout=layout, backend="cython", **kw)
    assert y.dtype == dtype
    assert_close(y, want, dtype, "y vs the float64 naive twin")

    dy = randn(rng, y.shape, dtype)
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    _, cache_ref = fastnn.reference.conv2d_forward(f64(x), f64(w), f64(b), layout=layout, **kw)
    dx_ref, dw_ref, db_ref = fastnn.reference.conv2d_backward(f64(dy), cache_ref)
    assert dx.dtype == dw.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx vs the float64 reference")
    assert_close(dw, dw_ref, dtype, "dw vs the float64 reference")
    if b is None:
        assert db is None
    else:
        assert_close(db, db_ref, dtype, "db vs the float64 reference")
    assert_unchanged(before, (x, w, b), "conv2d")


def on_every_tier(run):
    """run() on each tier this CPU has: {tier: results}."""
    before = _backends._isa
    out = {}
    try:
        for isa in reversed(_backends.ISAS[:_backends.ISAS.index(_backends.cpu_isa()) + 1]):
            _backends.set_isa(isa)
            out[isa] = run()
    finally:
        _backends.set_isa(before)
    return out


@pytest.mark.parametrize("c", CASES[:6])
def test_tiers_agree(c, rng):
    x, w, b = arrays(c, rng, np.float64)
    kw = kwargs_of(c)

    def run():
        y, cache = fastnn.conv2d_forward(x, w, b, backend="cython", **kw)
        dy = np.cos(np.arange(y.size, dtype=np.float64)).reshape(y.shape)
        return (y,) + fastnn.conv2d_backward(dy, cache)

    results = list(on_every_tier(run).values())
    for other in results[1:]:
        for got, want, name in zip(other, results[0], ("y", "dx", "dw", "db")):
            assert_close(got, want, np.float64, name)


def run_on_threads(run, order):
    """run() at each thread count of `order` (each twice at least): the same thread
    count must give the same bits, 1 and 2 threads close results. Returns them by count."""
    out = {}
    for threads in order:
        fastnn.set_num_threads(threads)
        got = run()
        if threads in out:
            for a, e in zip(got, out[threads]):
                np.testing.assert_array_equal(a, e)
        out[threads] = got
    for a, e in zip(out[1], out[2]):
        assert_close(a, e, np.float32, "1 vs 2 threads")
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_threads_agree_and_repeat(stride, tier, rng):
    c = dict(N=5, H=12, W=11, C_in=32, C_out=64, k=3, stride=stride, padding=1, dilation=1, groups=1,
             bias=True)
    x, w, b = arrays(c, rng)
    y0 = fastnn.conv2d(x, w, b, stride=stride, padding=1, backend="cython")
    dy = randn(rng, y0.shape, np.float32)

    def run():
        y, cache = fastnn.conv2d_forward(x, w, b, stride=stride, padding=1, backend="cython")
        return (y,) + fastnn.conv2d_backward(dy, cache)

    out = run_on_threads(run, (1, 2, 1, 2))
    # y, dx and dw are the same sums in the same order at any thread count (only the
    # bias gradient keeps per-thread partial sums)
    for i, name in enumerate(("y", "dx", "dw")):
        np.testing.assert_array_equal(out[1][i], out[2][i], err_msg=name)


def test_conv_nan_and_inf_propagate(tier, rng):
    x = randn(rng, (1, 6, 6, 16), np.float32)
    w = randn(rng, (3, 3, 16, 32), np.float32)
    x[0, 2, 3, 5] = np.nan
    x[0, 0, 0, 0] = np.inf
    y = fastnn.conv2d(x, w, padding=1, backend="cython")
    # the output pixels whose window holds the NaN are NaN, the others finite or inf
    assert np.isnan(y[0, 1:4, 2:5]).all()
    assert not np.isnan(y[0, 4:, :]).any()
    assert not np.isnan(y[0, :, :1]).any()
    assert np.isinf(y[0, 0, 0]).any() or np.isnan(y[0, 0, 0]).any()


# --------------------------------------------------------------------------- recurrent



def run_sequence(kind, x, h0, c0, W, b, dh, dc, backend):
    """Forward and backward of a whole sequence: (outputs..., gradients...)."""
    kw = dict(backend=backend)
    if kind == "lstm":
        h, c, cache = fastnn.lstm_forward(x, h0, c0, W, b, **kw)
        return (h, c) + fastnn.lstm_backward(dh, cache, dc_last=dc)
    if kind == "gru":
        h, cache = fastnn.gru_forward(x, h0, W, b, **kw)
        return (h,) + fastnn.gru_backward(dh, cache)
    h, cache = fastnn.rnn_forward(x, h0, W, b, activation="tanh", **kw)
    return (h,) + fastnn.rnn_backward(dh, cache)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("T, m, n_x, n_a", [
    pytest.param(6, 1, 20, 70, id="batch-1-partial-panel"),
    pytest.param(3, 7, 33, 40, id="partial-tiles"),
    pytest.param(2, 50, 16, 64, id="several-row-blocks"),
    pytest.param(1, 17, 30, 24, id="one-step"),
    pytest.param(3, 11, 9, 21, id="short-last-tiles"),
    pytest.param(13, 45, 20, 37, id="weight-gradient-in-chunks"),  # T * m > FN_TN_RC
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequences_against_float64_reference(kind, T, m, n_x, n_a, dtype, tier, rng):
    gates = GATES[kind]
    x = randn(rng, (T, m, n_x), dtype)
    h0 = randn(rng, (m, n_a), dtype) * 0.5
    c0 = randn(rng, (m, n_a), dtype) * 0.5
    W = randn(rng, (gates * n_a, n_a + n_x), dtype) * dtype((n_a + n_x) ** -0.5)
    b = randn(rng, (gates * n_a,), dtype) * 0.1
    dh = randn(rng, (T, m, n_a), dtype)
    dc = randn(rng, (m, n_a), dtype)
    before = snapshot(x, h0, c0, W, b, dh, dc)
    got = run_sequence(kind, x, h0, c0, W, b, dh, dc, "cython")
    want = run_sequence(kind, f64(x), f64(h0), f64(c0), f64(W), f64(b), f64(dh), f64(dc), "reference")
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == dtype
        assert_close(g, w, dtype, f"output {i} of the {kind} sequence")
    assert_unchanged(before, (x, h0, c0, W, b, dh, dc), kind)


@pytest.mark.parametrize("T, m, n_x, n_a", [
    pytest.param(4, 40, 48, 96, id="x-in-the-step"),
    pytest.param(8, 64, 32, 512, id="streamed-gates"),   # 4 MiB of gate values
    # weights small enough for any level-2 cache and over 2^24 multiply-adds: on 2
    # threads the batch is split into blocks of rows that run every step alone
    # (fn_batch_blocks), 29 rows = 4 tiles of 6 and one of 5, 13 = 6 + 6 + 1
    pytest.param(30, 29, 32, 64, id="batch-split"),
    pytest.param(60, 13, 32, 64, id="batch-split-one-row-tile"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_threads_agree_and_repeat(T, m, n_x, n_a, dtype, tier, rng):
    x = randn(rng, (T, m, n_x), dtype)
    W = randn(rng, (4 * n_a, n_a + n_x), dtype) * dtype(0.1)
    b = randn(rng, (4 * n_a,), dtype)
    dh = randn(rng, (T, m, n_a), dtype)
    out = run_on_threads(lambda: run_sequence("lstm", x, None, None, W, b, dh, None, "cython"), (1, 2, 2, 1))
    # every value is computed by one thread in a fixed order (docs/KERNELS.md)
    for a, e in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("kind", ["rnn", "gru"])
@pytest.mark.parametrize("T, m, n_x, n_a", [
    # over 2^24 multiply-adds and weights small enough for any level-2 cache: split
    # by batch rows on 2 threads (29 rows = 4 tiles of 6 and one of 5, 13 = 6 + 6 + 1)
    pytest.param(60, 29, 32, 96, id="batch-split"),
    pytest.param(160, 13, 32, 96, id="batch-split-one-row-tile"),
    # weights over half of a 2 MiB level-2 cache: each step split instead
    pytest.param(3, 40, 16, 600, id="steps-split"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rnn_gru_threads_agree_and_repeat(kind, T, m, n_x, n_a, dtype, tier, rng):
    gates = GATES[kind]
    x = randn(rng, (T, m, n_x), dtype)
    h0 = randn(rng, (m, n_a), dtype) * 0.5
    W = randn(rng, (gates * n_a, n_a + n_x), dtype) * dtype((n_a + n_x) ** -0.5)
    b = randn(rng, (gates * n_a,), dtype) * 0.1
    dh = randn(rng, (T, m, n_a), dtype)
    out = run_on_threads(lambda: run_sequence(kind, x, h0, None, W, b, dh, None, "cython"), (1, 2, 2, 1))
    for a, e in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, e)
    want = run_sequence(kind, f64(x), f64(h0), None, f64(W), f64(b), f64(dh), None, "reference")
    for i, (g, w) in enumerate(zip(out[2], want)):
        assert_close(g, w, dtype, f"output {i} of the {kind} sequence on 2 threads")


@pytest.mark.parametrize("T, m, n_x, n_a", [
    pytest.param(5, 1, 20, 70, id="batch-1-partial-panel"),
    pytest.param(3, 11, 33, 40, id="partial-tiles"),      # 11 rows = 6 + a short tile of 5
    pytest.param(2, 64, 16, 48, id="short-last-tile"),    # 64 rows = 10 x 6 + 4
    pytest.param(4, 100, 24, 16, id="several-row-blocks"),
    # the gate values go past the caches (4 MiB of them): aligned whole vectors
    # streamed, and with n_a = 500 the panels' masked last vectors stored as usual
    pytest.param(8, 64, 32, 512, id="streamed-gates"),
    pytest.param(9, 70, 24, 500, id="streamed-gates-partial-panel"),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_fused_step(T, m, n_x, n_a, dtype, tier, rng):
    x = randn(rng, (T, m, n_x), dtype) * dtype(2)
    h0 = randn(rng, (m, n_a), dtype) * 0.5
    c0 = randn(rng, (m, n_a), dtype) * 2
    W = randn(rng, (4 * n_a, n_a + n_x), dtype) * dtype(2 * (n_a + n_x) ** -0.5)
    b = randn(rng, (4 * n_a,), dtype)
    dh = randn(rng, (T, m, n_a), dtype)
    got = run_sequence("lstm", x, h0, c0, W, b, dh, None, "cython")
    want = run_sequence("lstm", f64(x), f64(h0), f64(c0), f64(W), f64(b), f64(dh), None, "reference")
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"output {i}")


@pytest.mark.parametrize("batch", [
    pytest.param(True, id="x-in-the-step"),       # one step of a large batch: [h, x] @ W^T
    pytest.param(False, id="input-projection"),   # batch 1: the projection made up front
])
@pytest.mark.parametrize("dtype, rtol, tiny", [(np.float32, 4e-7, 1.2e-38), (np.float64, 2e-15, 4e-308)])
def test_lstm_fused_step_activations_are_accurate(batch, dtype, rtol, tiny, tier):
    """The fused step's own sigmoid and tanh (fn_math.h), read from the gate values it keeps.

    With W_h = 0, W_x = 1 and b = 0 every gate's pre-activation is x itself, so the
    cache holds sigmoid(x) (f, u, o), tanh(x) (c~) and tanh(c) for c = u tanh(x);
    over a sweep of x they must be within a few roundings of the float64 functions
    (float32), or of the exact ones (float64; measured against long double).
    """
    n_a = 16
    sweep = np.concatenate([np.linspace(-30, 30, 40001), np.geomspace(1e-30, 100, 9999),
                            -np.geomspace(1e-30, 100, 9999), [0.0, 88.5, -88.5, 1e30, -1e30]])
    x = sweep.astype(dtype).reshape((1, -1, 1) if batch else (-1, 1, 1))
    W = np.zeros((4 * n_a, n_a + 1), dtype)
    W[:, n_a] = 1
    h, c, cache = fastnn.lstm_forward(x, None, None, W, np.zeros(4 * n_a, dtype), backend="cython")
    g, cs, tanh_c = cache.state[2], cache.state[4], cache.state[5]
    z = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-z))  # e^1e30 overflows to inf: sigmoid 0
    for got, want, what in [(g[..., :n_a], sigmoid, "sigmoid"),
                            (g[..., 2 * n_a:3 * n_a], np.tanh(z), "tanh"),
                            (tanh_c, np.tanh(cs[1:].astype(np.longdouble)), "tanh of c")]:
        # relative where the value is a normal float, within the smallest normal below
        # (above it in float64: sigmoid(-inf) is the value at the clamp of -708, 3e-308)
        bad = np.abs(got - want) > np.maximum(rtol * np.abs(want), tiny)
        assert not bad.any(), (what, z[bad.any(axis=-1)][:5].ravel())
    assert (np.abs(g) <= 1).all() and (g[..., :n_a] >= 0).all()
    big = np.abs(z[..., 0]) > (10 if dtype == np.float32 else 20)
    assert (np.abs(g[..., 2 * n_a:3 * n_a][big]) == 1).all(), "tanh saturates at +-1 exactly"


def test_lstm_fused_step_propagates_nan_and_saturates(tier, rng):
    T, m, n_x, n_a = 2, 7, 8, 20
    x = randn(rng, (T, m, n_x), np.float32)
    W = randn(rng, (4 * n_a, n_a + n_x), np.float32)
    b = np.zeros(4 * n_a, np.float32)
    x[0, 3, 0] = np.nan
    x[0, 5] = 1e30  # gates saturate at 0 and 1; tanh at +-1
    h, c, _ = fastnn.lstm_forward(x, None, None, W, b, backend="cython")
    assert np.isnan(h[:, 3]).any() and np.isnan(h[1, 3]).all()
    assert np.isfinite(h[:, [0, 1, 2, 4, 6]]).all()
    assert np.isfinite(h[0, 5]).all() and (np.abs(h[0, 5]) <= 1).all()


# --------------------------------------------------------------------------- bmm

BMM_CASES = [
    pytest.param((3, 70, 65), (3, 65, 80), False, False, id="plain"),
    pytest.param((2, 70, 65), (2, 65, 96), True, True, id="both-transposed"),
    pytest.param((2, 70, 130), (2, 130, 33), False, True, id="b-transposed-partial-panel"),
    pytest.param((1, 64, 70), (5, 70, 100), True, False, id="a-broadcast"),   # da sums 5 products
    pytest.param((4, 40, 96), (1, 96, 70), False, False, id="b-broadcast"),
    pytest.param((2, 3, 5, 7), (7, 9), False, True, id="tall-shared-b"),
    pytest.param((9, 4, 4), (9, 4, 4), True, False, id="tiny"),
    # a few columns: dot products along K (fn_gemm.h's gemm_dot) where they pay,
    # the panels where the reduction is too short for them
    pytest.param((3, 100, 300), (3, 300, 1), False, False, id="narrow-one-column"),
    pytest.param((2, 57, 64), (2, 64, 3), True, True, id="narrow-both-transposed"),
    pytest.param((2, 50, 777), (2, 777, 9), False, True, id="narrow-nine-columns"),
    pytest.param((4, 165, 26), (4, 26, 9), False, False, id="narrow-short-reduction"),
]


def operand(rng, shape, transposed, dtype=np.float32):
    """An operand of `shape`, given as the transposed view of a C array when asked."""
    if transposed:
        return np.swapaxes(randn(rng, shape[:-2] + shape[-2:][::-1], dtype), -1, -2)
    return randn(rng, shape, dtype)


def summed_to(grad, shape):
    """A gradient summed over the batch dimensions its operand was broadcast along."""
    lead = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(lead))) if lead else grad
    axes = tuple(i for i, n in enumerate(shape[:-2]) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a_shape, b_shape, ta, tb", BMM_CASES)
def test_bmm_against_float64(a_shape, b_shape, ta, tb, dtype, tier, rng):
    a = operand(rng, a_shape, ta, dtype)
    b = operand(rng, b_shape, tb, dtype)
    before = snapshot(a, b)
    c = fastnn.bmm(a, b, backend="cython")
    a64, b64 = f64(a), f64(b)
    c64 = np.matmul(a64, b64)
    assert c.dtype == dtype
    assert_close(c, c64, dtype, "bmm")
    dc = randn(rng, c.shape, dtype)
    da, db = fastnn.bmm_backward(dc, a, b, backend="cython")
    da64 = np.matmul(f64(dc), np.swapaxes(b64, -1, -2))
    db64 = np.matmul(np.swapaxes(a64, -1, -2), f64(dc))
    da64, db64 = summed_to(da64, a.shape), summed_to(db64, b.shape)
    assert_close(da, da64, dtype, "da")
    assert_close(db, db64, dtype, "db")
    assert_unchanged(before, (a, b), "bmm")


def test_bmm_threads_agree_and_repeat(tier, rng):
    a = randn(rng, (6, 70, 65), np.float32)
    b = randn(rng, (6, 65, 80), np.float32)
    dc = randn(rng, (6, 70, 80), np.float32)
    single = randn(rng, (1, 300, 200), np.float32), randn(rng, (1, 200, 100), np.float32)

    def run():
        c = fastnn.bmm(a, b, backend="cython")
        return (c, *fastnn.bmm_backward(dc, a, b, backend="cython"), fastnn.bmm(*single, backend="cython"))

    run_on_threads(run, (1, 2, 2, 1))


NARROW_LINEAR = [  # (batch, n_out, n_in): a logistic regression, a classifier's head, ...
    pytest.param(209, 1, 1200, id="logistic-regression"),
    pytest.param(100, 10, 784, id="ten-classes"),
    pytest.param(57, 3, 64, id="three-outputs"),
    pytest.param(50, 2, 5, id="short-reduction"),
    pytest.param(1, 4, 300, id="one-row"),
]


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n_out, n_in", NARROW_LINEAR)
def test_narrow_linear_against_float64(m, n_out, n_in, dtype, activation, tier, rng):
    """A linear layer with a few outputs (dot products along n_in where they pay):
    forward and gradients against float64 NumPy, and the same bits on 1 and 2 threads."""
    x, w, b = randn(rng, (m, n_in), dtype), randn(rng, (n_out, n_in), dtype), randn(rng, (n_out,), dtype)
    dy = randn(rng, (m, n_out), dtype)
    z64 = f64(x) @ f64(w).T + f64(b)
    y64 = {None: z64, "relu": np.maximum(z64, 0), "sigmoid": 1 / (1 + np.exp(-z64))}[activation]
    d64 = {None: 1.0, "relu": (z64 > 0).astype(np.float64), "sigmoid": y64 * (1 - y64)}[activation] * f64(dy)
    out = {}
    for threads in (1, 2, 1):
        fastnn.set_num_threads(threads)
        y, cache = fastnn.linear_forward(x, w, b, activation=activation, backend="cython")
        got = (y, *fastnn.linear_backward(dy, cache))
        if threads in out:
            for a, e in zip(got, out[threads]):
                np.testing.assert_array_equal(a, e)
        out[threads] = got
    for a, e in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, e)  # a choice by the sizes alone: the same sums
    y, dx, dw, db = out[1]
    assert y.dtype == dtype and y.shape == (m, n_out)
    assert_close(y, y64, dtype, f"y ({tier})")
    assert_close(dx, d64 @ f64(w), dtype, f"dx ({tier})")
    assert_close(dw, d64.T @ f64(x), dtype, f"dw ({tier})")
    assert_close(db, d64.sum(axis=0), dtype, f"db ({tier})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 10, 37, 128, 129])
def test_softmax_cross_entropy_few_classes(C, dtype, tier, rng):
    """Up to 128 classes with class indices run a row per vector lane (register
    transposes of the logits); more, row by row: losses and gradients against float64
    NumPy, PyTorch in float32, and the same bits on 1 and 2 threads (5000 rows: two
    tasks)."""
    x = randn(rng, (5000, C), dtype) * 4
    t = rng.integers(0, C, 5000)
    x64 = f64(x)
    z = x64 - x64.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    want = -logp[np.arange(5000), t]
    grad = np.exp(logp)
    grad[np.arange(5000), t] -= 1
    out = {}
    for threads in (1, 2, 1):
        fastnn.set_num_threads(threads)
        loss, cache = fastnn.softmax_cross_entropy_forward(x, t, reduction="none", backend="cython")
        got = (loss, fastnn.softmax_cross_entropy_backward(cache, np.ones(5000, dtype)))
        if threads in out:
            for a, e in zip(got, out[threads]):
                np.testing.assert_array_equal(a, e)
        out[threads] = got
    for a, e in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, e)
    loss, dx = out[1]
    assert loss.dtype == dtype and dx.dtype == dtype
    assert_close(loss, want, dtype, f"loss ({tier})")
    assert_close(dx, grad, dtype, f"dx ({tier})")
    if dtype == np.float32:
        torch = pytest.importorskip("torch")
        ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(t), reduction="none")
        assert_close(loss, ref.numpy(), np.float32, f"loss vs PyTorch ({tier})")


@pytest.mark.parametrize("m, k, n", [(100, 300, 1), (57, 64, 3), (50, 777, 9), (40, 100, 16)])
def test_narrow_linear_float32_against_torch(m, k, n, tier, rng):
    """The linear layer with one to sixteen outputs against PyTorch (bmm's narrow
    products: test_bmm_float32_against_torch)."""
    torch = pytest.importorskip("torch")
    x, w, b = randn(rng, (m, k), np.float32), randn(rng, (n, k), np.float32), randn(rng, (n,), np.float32)
    y, _ = fastnn.linear_forward(x, w, b, backend="cython")
    yt = torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b))
    assert_close(y, yt.numpy(), np.float32, f"linear ({m}, {k}) -> {n} vs PyTorch ({tier})")


# --------------------------------------------------------------------------- PyTorch and gradients

def _torch_conv(torch, x, w, b, stride, padding, groups, dy):
    """PyTorch's conv2d forward and gradients for NHWC x and (kh, kw, Cg, C_out) w."""
    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    yt.backward(torch.tensor(np.ascontiguousarray(dy.transpose(0, 3, 1, 2))))
    return (yt.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1),
            wt.grad.numpy().transpose(2, 3, 1, 0), bt.grad.numpy())


@pytest.mark.parametrize("stride, groups", [
    pytest.param(1, 2, id="stride-1-implicit-dx"),      # 16 channels per group: the implicit-GEMM dx
    pytest.param(2, 1, id="stride-2-dx-by-columns"),    # strided: dx by columns and col2im
])
def test_conv_float32_against_torch(stride, groups, tier, rng):
    torch = pytest.importorskip("torch")
    x = randn(rng, (3, 9, 8, 32), np.float32)
    w = randn(rng, (3, 3, 32 // groups, 40), np.float32) * np.float32(0.2)
    b = randn(rng, (40,), np.float32)
    y, cache = fastnn.conv2d_forward(x, w, b, stride=stride, padding=1, groups=groups, backend="cython")
    dy = randn(rng, y.shape, np.float32)
    want = _torch_conv(torch, x, w, b, stride, 1, groups, dy)
    got = (y,) + fastnn.conv2d_backward(dy, cache)
    for name, g, t in zip(("y", "dx", "dw", "db"), got, want):
        assert g.dtype == np.float32
        assert_close(g, t, np.float32, f"{name} vs PyTorch ({tier})")


def test_lstm_float32_against_torch(tier, rng):
    """Batch 16: the fused LSTM step of the own kernels, against torch.nn.LSTM in float32."""
    torch = pytest.importorskip("torch")
    T, m, n_x, n_a = 5, 16, 20, 40
    torch.manual_seed(int(rng.integers(1 << 31)))
    layer = torch.nn.LSTM(n_x, n_a)
    x = randn(rng, (T, m, n_x), np.float32)
    h0 = randn(rng, (m, n_a), np.float32) * np.float32(0.5)
    c0 = randn(rng, (m, n_a), np.float32) * np.float32(0.5)
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0[None], requires_grad=True), torch.tensor(c0[None], requires_grad=True)
    out, (_, cn) = layer(xt, (h0t, c0t))
    W, b = fastnn.lstm_weights_from_torch(layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                                          layer.bias_hh_l0)
    W, b = W.astype(np.float32), b.astype(np.float32)
    h, c_last, cache = fastnn.lstm_forward(x, h0, c0, W, b, backend="cython")
    assert h.dtype == np.float32
    assert_close(h, out.detach().numpy(), np.float32, f"h vs PyTorch ({tier})")
    assert_close(c_last, cn.detach().numpy()[0], np.float32, f"c_last vs PyTorch ({tier})")
    dh, dc = randn(rng, h.shape, np.float32), randn(rng, c_last.shape, np.float32)
    torch.autograd.backward([out, cn], [torch.tensor(dh), torch.tensor(dc[None])])
    dx, dh0, dc0, dW, db = fastnn.lstm_backward(dh, cache, dc_last=dc)
    assert_close(dx, xt.grad.numpy(), np.float32, f"dx vs PyTorch ({tier})")
    assert_close(dh0, h0t.grad.numpy()[0], np.float32, f"dh0 vs PyTorch ({tier})")
    assert_close(dc0, c0t.grad.numpy()[0], np.float32, f"dc0 vs PyTorch ({tier})")
    order = [1, 0, 2, 3]  # torch i, f, g, o -> fastnn f, u, c, o

    def blocks(a):
        return np.concatenate([a[k * n_a:(k + 1) * n_a] for k in order])

    assert_close(dW, np.hstack([blocks(layer.weight_hh_l0.grad.numpy()), blocks(layer.weight_ih_l0.grad.numpy())]),
                 np.float32, f"dW vs PyTorch ({tier})")
    assert_close(db, blocks(layer.bias_ih_l0.grad.numpy()), np.float32, f"db vs PyTorch ({tier})")


@pytest.mark.parametrize("bsz, m, k, n", [
    (5, 37, 70, 45),
    (3, 100, 300, 1), (2, 57, 64, 3), (2, 50, 777, 9),  # narrow: dot products, one-vector tile
])
def test_bmm_float32_against_torch(bsz, m, k, n, tier, rng):
    torch = pytest.importorskip("torch")
    a, b = randn(rng, (bsz, m, k), np.float32), randn(rng, (bsz, k, n), np.float32)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ct = torch.bmm(at, bt)
    c = fastnn.bmm(a, b, backend="cython")
    assert_close(c, ct.detach().numpy(), np.float32, f"bmm vs PyTorch ({tier})")
    dc = randn(rng, c.shape, np.float32)
    ct.backward(torch.tensor(dc))
    da, db = fastnn.bmm_backward(dc, a, b, backend="cython")
    assert_close(da, at.grad.numpy(), np.float32, f"da vs PyTorch ({tier})")
    assert_close(db, bt.grad.numpy(), np.float32, f"db vs PyTorch ({tier})")


def _directional_check(loss, arrays, grads, rng, directions=3, eps=1e-5):
    """Central differences of loss along random directions v of each array against
    <gradient, v>: a numerical gradient check whose cost does not grow with the size
    of the arrays, so it runs at shapes that reach the own kernels."""
    for name, array in arrays.items():
        for _ in range(directions):
            v = rng.standard_normal(array.shape)
            saved = array.copy()
            array += eps * v
            up = loss()
            array[...] = saved - eps * v
            down = loss()
            array[...] = saved
            numeric = (up - down) / (2 * eps)
            analytic = float(np.sum(grads[name] * v))
            assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), \
                f"d{name}: numerical {numeric!r} vs analytic {analytic!r}"


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_numerical_gradients_at_own_kernel_shapes(stride, tier, rng):
    x = rng.standard_normal((2, 8, 7, 32))
    w = rng.standard_normal((3, 3, 16, 24)) * 0.2
    b = rng.standard_normal(24)
    kw = dict(stride=stride, padding=1, groups=2, backend="cython")
    y, cache = fastnn.conv2d_forward(x, w, b, **kw)
    r = rng.standard_normal(y.shape)
    dx, dw, db = fastnn.conv2d_backward(r, cache)
    _directional_check(lambda: float(np.sum(fastnn.conv2d(x, w, b, **kw) * r)),
                       {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, rng)


def test_lstm_numerical_gradients_at_own_kernel_shapes(tier, rng):
    T, m, n_x, n_a = 4, 16, 12, 20
    x = rng.standard_normal((T, m, n_x))
    h0, c0 = 0.5 * rng.standard_normal((m, n_a)), 0.5 * rng.standard_normal((m, n_a))
    W = rng.standard_normal((4 * n_a, n_a + n_x)) * (n_a + n_x) ** -0.5
    b = 0.1 * rng.standard_normal(4 * n_a)
    rh, rc = rng.standard_normal((T, m, n_a)), rng.standard_normal((m, n_a))

    def loss():
        h, c, _ = fastnn.lstm_forward(x, h0, c0, W, b, backend="cython")
        return float(np.sum(h * rh) + np.sum(c * rc))

    _, _, cache = fastnn.lstm_forward(x, h0, c0, W, b, backend="cython")
    dx, dh0, dc0, dW, db = fastnn.lstm_backward(rh, cache, dc_last=rc)
    _directional_check(loss, {"x": x, "h0": h0, "c0": c0, "W": W, "b": b},
                       {"x": dx, "h0": dh0, "c0": dc0, "W": dW, "b": db}, rng)


def test_bmm_numerical_gradients_at_own_kernel_shapes(tier, rng):
    a, b = rng.standard_normal((3, 40, 50)), rng.standard_normal((3, 50, 70))
    r = rng.standard_normal((3, 40, 70))
    da, db = fastnn.bmm_backward(r, a, b, backend="cython")
    _directional_check(lambda: float(np.sum(fastnn.bmm(a, b, backend="cython") * r)),
                       {"a": a, "b": b}, {"a": da, "b": db}, rng)
