"""The cython backend's own AVX-512 float32 kernels (fastnn/_kernels/fn_sgemm.h).

The general harness runs small channel counts, which stay on the BLAS route; these
cases have enough channels per group for the own kernels (an implicit GEMM with
64-wide tiles of 6 rows), with partial tiles, padding, strides, dilation and groups,
and check them against the float64 naive twin and the reference, and against the
BLAS route of the same backend with the own kernels switched off.
"""
import numpy as np
import pytest

import fastnn
import naive
from helpers import assert_close, assert_unchanged, randn, snapshot

cy_conv = pytest.importorskip("fastnn._kernels.cy_conv")
cy_recurrent = pytest.importorskip("fastnn._kernels.cy_recurrent")
cy_matmul = pytest.importorskip("fastnn._kernels.cy_matmul")
MODULES = (cy_conv, cy_recurrent, cy_matmul)


def cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return None
    return all(flag in flags for flag in ("avx512f", "avx512vl", "avx512dq", "avx512bw", "fma"))


def test_own_kernels_are_on_where_the_cpu_has_avx512():
    has = cpu_has_avx512()
    if has is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's features from")
    for module in MODULES:
        assert module.own_kernels() is has, module.__name__


@pytest.mark.parametrize("module", MODULES, ids=["conv", "recurrent", "matmul"])
def test_own_kernels_switch(module):
    before = module.own_kernels(False)
    try:
        assert module.own_kernels() is False
        assert module.own_kernels(True) is False
        assert module.own_kernels() is (cpu_has_avx512() is not False and before)
    finally:
        module.own_kernels(before)


@pytest.fixture(params=[True, False], ids=["own", "blas"])
def own(request):
    """Run the test with the own kernels on (where the CPU has them) and off."""
    if request.param and not cy_conv.own_kernels():
        pytest.skip("this CPU has no AVX-512: the own kernels are off")
    before = [module.own_kernels(request.param) for module in MODULES]
    yield request.param
    for module, flag in zip(MODULES, before):
        module.own_kernels(flag)


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


def arrays(c, rng):
    kh, kw = naive.pair(c["k"])
    x = randn(rng, (c["N"], c["H"], c["W"], c["C_in"]), np.float32)
    w = randn(rng, (kh, kw, c["C_in"] // c["groups"], c["C_out"]), np.float32)
    b = randn(rng, (c["C_out"],), np.float32) if c["bias"] else None
    return x, w, b


def kwargs_of(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


def f64(a):
    return None if a is None else a.astype(np.float64)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", CASES)
def test_conv_float32_against_float64_twins(c, layout, own, rng):
    x, w, b = arrays(c, rng)
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
    assert y.dtype == np.float32
    assert_close(y, want, np.float32, "y vs the float64 naive twin")

    dy = randn(rng, y.shape, np.float32)
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    _, cache_ref = fastnn.reference.conv2d_forward(f64(x), f64(w), f64(b), layout=layout, **kw)
    dx_ref, dw_ref, db_ref = fastnn.reference.conv2d_backward(f64(dy), cache_ref)
    assert dx.dtype == dw.dtype == np.float32
    assert_close(dx, dx_ref, np.float32, "dx vs the float64 reference")
    assert_close(dw, dw_ref, np.float32, "dw vs the float64 reference")
    if b is None:
        assert db is None
    else:
        assert_close(db, db_ref, np.float32, "db vs the float64 reference")
    assert_unchanged(before, (x, w, b), "conv2d")


@pytest.mark.parametrize("c", CASES[:6])
def test_own_and_blas_routes_agree(c, rng):
    if not cy_conv.own_kernels():
        pytest.skip("this CPU has no AVX-512: the own kernels are off")
    x, w, b = arrays(c, rng)
    kw = kwargs_of(c)
    results = []
    for flag in (True, False):
        before = cy_conv.own_kernels(flag)
        try:
            y, cache = fastnn.conv2d_forward(x, w, b, backend="cython", **kw)
            dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
            results.append((y,) + fastnn.conv2d_backward(dy, cache))
        finally:
            cy_conv.own_kernels(before)
    for got, want, name in zip(results[0], results[1], ("y", "dx", "dw", "db")):
        assert_close(got, want, np.float32, name)


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


def test_own_kernels_threads_agree_and_repeat(rng):
    c = dict(N=5, H=12, W=11, C_in=32, C_out=64, k=3, stride=1, padding=1, dilation=1, groups=1, bias=True)
    x, w, b = arrays(c, rng)
    dy = randn(rng, (5, 12, 11, 64), np.float32)

    def run():
        y, cache = fastnn.conv2d_forward(x, w, b, padding=1, backend="cython")
        return (y,) + fastnn.conv2d_backward(dy, cache)

    out = run_on_threads(run, (1, 2, 1, 2))
    # the forward pass is the same sum in the same order at any thread count
    np.testing.assert_array_equal(out[1][0], out[2][0])


def test_own_kernels_nan_and_inf_propagate(rng):
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

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


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
    pytest.param(13, 45, 20, 37, id="weight-gradient-in-chunks"),  # T * m > FN_TN_RC
])
def test_sequences_float32_against_float64_reference(kind, T, m, n_x, n_a, own, rng):
    gates = GATES[kind]
    x = randn(rng, (T, m, n_x), np.float32)
    h0 = randn(rng, (m, n_a), np.float32) * 0.5
    c0 = randn(rng, (m, n_a), np.float32) * 0.5
    W = randn(rng, (gates * n_a, n_a + n_x), np.float32) * np.float32((n_a + n_x) ** -0.5)
    b = randn(rng, (gates * n_a,), np.float32) * 0.1
    dh = randn(rng, (T, m, n_a), np.float32)
    dc = randn(rng, (m, n_a), np.float32)
    before = snapshot(x, h0, c0, W, b, dh, dc)
    got = run_sequence(kind, x, h0, c0, W, b, dh, dc, "cython")
    want = run_sequence(kind, f64(x), f64(h0), f64(c0), f64(W), f64(b), f64(dh), f64(dc), "reference")
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.float32
        assert_close(g, w, np.float32, f"output {i} of the {kind} sequence")
    assert_unchanged(before, (x, h0, c0, W, b, dh, dc), kind)


@pytest.mark.parametrize("T, m, n_x, n_a", [
    pytest.param(4, 40, 48, 96, id="x-in-the-step"),
    pytest.param(8, 64, 32, 512, id="streamed-gates"),   # 4 MiB of gate values
])
def test_lstm_own_kernels_threads_agree_and_repeat(T, m, n_x, n_a, rng):
    x = randn(rng, (T, m, n_x), np.float32)
    W = randn(rng, (4 * n_a, n_a + n_x), np.float32) * np.float32(0.1)
    b = randn(rng, (4 * n_a,), np.float32)
    dh = randn(rng, (T, m, n_a), np.float32)
    run_on_threads(lambda: run_sequence("lstm", x, None, None, W, b, dh, None, "cython"), (1, 2, 2, 1))


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def fused(request):
    """The float32 LSTM forward with the fused step kernel (fn_lstm.h) and without."""
    before = cy_recurrent.fused_lstm(request.param)
    yield request.param
    cy_recurrent.fused_lstm(before)


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
def test_lstm_forward_fused_and_unfused(T, m, n_x, n_a, own, fused, rng):
    x = randn(rng, (T, m, n_x), np.float32) * np.float32(2)
    h0 = randn(rng, (m, n_a), np.float32) * 0.5
    c0 = randn(rng, (m, n_a), np.float32) * 2
    W = randn(rng, (4 * n_a, n_a + n_x), np.float32) * np.float32(2 * (n_a + n_x) ** -0.5)
    b = randn(rng, (4 * n_a,), np.float32)
    dh = randn(rng, (T, m, n_a), np.float32)
    got = run_sequence("lstm", x, h0, c0, W, b, dh, None, "cython")
    want = run_sequence("lstm", f64(x), f64(h0), f64(c0), f64(W), f64(b), f64(dh), None, "reference")
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, np.float32, f"output {i}")


@pytest.mark.parametrize("batch", [
    pytest.param(True, id="x-in-the-step"),       # one step of a large batch: [h, x] @ W^T
    pytest.param(False, id="input-projection"),   # batch 1: the projection made up front
])
def test_lstm_fused_step_activations_are_accurate(batch):
    """The fused step's own sigmoid and tanh, read from the gate values it keeps.

    With W_h = 0, W_x = 1 and b = 0 every gate's pre-activation is x itself, so the
    cache holds sigmoid(x) (f, u, o), tanh(x) (c~) and tanh(c) for c = u tanh(x);
    over a sweep of x they must be within a few float32 roundings of the float64
    functions.
    """
    if not cy_recurrent.own_kernels():
        pytest.skip("this CPU has no AVX-512: the fused step is not used")
    n_a = 16
    sweep = np.concatenate([np.linspace(-30, 30, 40001), np.geomspace(1e-30, 100, 9999),
                            -np.geomspace(1e-30, 100, 9999), [0.0, 88.5, -88.5, 1e30, -1e30]])
    x = sweep.astype(np.float32).reshape((1, -1, 1) if batch else (-1, 1, 1))
    W = np.zeros((4 * n_a, n_a + 1), np.float32)
    W[:, n_a] = 1
    h, c, cache = fastnn.lstm_forward(x, None, None, W, np.zeros(4 * n_a, np.float32), backend="cython")
    g, cs, tanh_c = cache.state[2], cache.state[4], cache.state[5]
    z = x.astype(np.float64)
    with np.errstate(over="ignore"):
        sigmoid = 1 / (1 + np.exp(-z))  # e^1e30 overflows to inf: sigmoid 0
    for got, want, what in [(g[..., :n_a], sigmoid, "sigmoid"),
                            (g[..., 2 * n_a:3 * n_a], np.tanh(z), "tanh"),
                            (tanh_c, np.tanh(cs[1:].astype(np.float64)), "tanh of c")]:
        # relative where the value is a normal float, within the smallest normal below
        bad = np.abs(got - want) > np.maximum(4e-7 * np.abs(want), 1.2e-38)
        assert not bad.any(), (what, z[bad.any(axis=-1)][:5].ravel())
    assert (np.abs(g) <= 1).all() and (g[..., :n_a] >= 0).all()
    big = np.abs(z[..., 0]) > 10
    assert (np.abs(g[..., 2 * n_a:3 * n_a][big]) == 1).all(), "tanh saturates at +-1 exactly"


def test_lstm_fused_step_propagates_nan_and_saturates(rng):
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
]


def operand(rng, shape, transposed):
    """An operand of `shape`, given as the transposed view of a C array when asked."""
    if transposed:
        return np.swapaxes(randn(rng, shape[:-2] + shape[-2:][::-1], np.float32), -1, -2)
    return randn(rng, shape, np.float32)


@pytest.mark.parametrize("a_shape, b_shape, ta, tb", BMM_CASES)
def test_bmm_float32_against_float64(a_shape, b_shape, ta, tb, own, rng):
    a = operand(rng, a_shape, ta)
    b = operand(rng, b_shape, tb)
    before = snapshot(a, b)
    c = fastnn.bmm(a, b, backend="cython")
    a64, b64 = f64(a), f64(b)
    c64 = np.matmul(a64, b64)
    assert c.dtype == np.float32
    assert_close(c, c64, np.float32, "bmm")
    dc = randn(rng, c.shape, np.float32)
    da, db = fastnn.bmm_backward(dc, a, b, backend="cython")
    da64 = np.matmul(f64(dc), np.swapaxes(b64, -1, -2))
    db64 = np.matmul(np.swapaxes(a64, -1, -2), f64(dc))
    if da64.shape != a.shape:
        da64 = da64.sum(axis=0, keepdims=True)
    if db64.shape != b.shape:
        db64 = db64.sum(axis=0, keepdims=True)
    assert_close(da, da64, np.float32, "da")
    assert_close(db, db64, np.float32, "db")
    assert_unchanged(before, (a, b), "bmm")


def test_bmm_own_kernels_threads_agree_and_repeat(rng):
    a = randn(rng, (6, 70, 65), np.float32)
    b = randn(rng, (6, 65, 80), np.float32)
    dc = randn(rng, (6, 70, 80), np.float32)
    single = randn(rng, (1, 300, 200), np.float32), randn(rng, (1, 200, 100), np.float32)

    def run():
        c = fastnn.bmm(a, b, backend="cython")
        return (c, *fastnn.bmm_backward(dc, a, b, backend="cython"), fastnn.bmm(*single, backend="cython"))

    run_on_threads(run, (1, 2, 2, 1))
