"""max_pool2d / avg_pool2d / pool2d_forward / pool2d_backward / global pools on every backend."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, integer_valued,
                     make_variant, need, on, randn, snapshot, tie_free)

POOL_KERNELS = ("pool2d_forward", "pool2d_backward")


def nhwc(a, layout):
    return a if layout == "NHWC" else a.transpose(0, 2, 3, 1)


def from_nhwc(a, layout):
    return a if layout == "NHWC" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- course examples

def pool_single(backend, image, mode, f, s):
    image = np.asarray(image, dtype=np.float64)
    y = fastnn.pool2d_forward(image[None, :, :, None], f, s, mode=mode, **on(backend))[0]
    y_nchw = fastnn.pool2d_forward(image[None, None], f, s, mode=mode, layout="NCHW", **on(backend))[0]
    np.testing.assert_array_equal(y[0, :, :, 0], y_nchw[0, 0])
    return y[0, :, :, 0]


# The slides' matrices; the notes' text gives the outputs (9, 2, 6, 3 / 3.75, 1.25, 4, 2 /
# 9 9 5, 9 9 5, 8 6 9), re-derived here window by window.
MAX_4X4 = [[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]]
AVG_4X4 = [[1, 3, 2, 1], [2, 9, 1, 1], [1, 4, 2, 3], [5, 6, 1, 2]]
MAX_5X5 = [[1, 3, 2, 1, 3], [2, 9, 1, 1, 5], [1, 3, 2, 3, 2], [8, 3, 5, 1, 0], [5, 6, 1, 2, 9]]


def test_course_max_pool_f2_s2(backend):
    need(backend, "pool2d_forward")
    np.testing.assert_array_equal(pool_single(backend, MAX_4X4, "max", 2, 2), [[9, 2], [6, 3]])


def test_course_max_pool_f3_s1(backend):
    need(backend, "pool2d_forward")
    np.testing.assert_array_equal(pool_single(backend, MAX_5X5, "max", 3, 1), [[9, 9, 5], [9, 9, 5], [8, 6, 9]])


def test_course_avg_pool_f2_s2(backend):
    need(backend, "pool2d_forward")
    # (1+3+2+9)/4, (2+1+1+1)/4, (1+4+5+6)/4, (2+3+1+2)/4
    np.testing.assert_array_equal(pool_single(backend, AVG_4X4, "avg", 2, 2), [[3.75, 1.25], [4, 2]])


def test_course_pooling_each_channel_independently(backend):
    need(backend, "pool2d_forward")
    x = np.stack([np.array(MAX_5X5, float), -np.array(MAX_5X5, float)], axis=-1)[None]  # 1x5x5x2
    y = fastnn.max_pool2d(x, 3, 1, **on(backend))
    assert y.shape == (1, 3, 3, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[9, 9, 5], [9, 9, 5], [8, 6, 9]])
    # max of the negated image is minus the window minimum
    np.testing.assert_array_equal(y[0, :, :, 1], [[-1, -1, -1], [-1, -1, 0], [-1, -1, 0]])


@pytest.mark.parametrize("n, f, s, expected", [(32, 2, 2, 16), (28, 2, 2, 14), (10, 2, 2, 5), (55, 3, 2, 27),
                                                 (7, 3, 2, 3), (6, 3, 2, 2)])
def test_course_pool_output_size(backend, n, f, s, expected):
    need(backend, "pool2d_forward")
    y = fastnn.max_pool2d(np.zeros((1, n, n, 1)), f, s, **on(backend))
    assert y.shape == (1, expected, expected, 1)


def test_stride_defaults_to_kernel_size(backend, rng):
    need(backend, "pool2d_forward")
    x = randn(rng, (2, 6, 9, 3))
    assert_close(fastnn.max_pool2d(x, (2, 3), **on(backend)), fastnn.max_pool2d(x, (2, 3), (2, 3), **on(backend)))
    assert fastnn.avg_pool2d(x, 3, **on(backend)).shape == (2, 2, 3, 3)


# --------------------------------------------------------------------------- cases

def case(name, mode, N=2, H=6, W=7, C=3, k=2, stride=None, padding=0, dilation=1, ceil_mode=False,
         count_include_pad=True):
    return pytest.param(dict(mode=mode, N=N, H=H, W=W, C=C, k=k, stride=stride, padding=padding,
                             dilation=dilation, ceil_mode=ceil_mode, count_include_pad=count_include_pad),
                        id=f"{mode}-{name}")


CASES = []
for _mode in ("max", "avg"):
    CASES += [
        case("k2", _mode),
        case("k3s1", _mode, k=3, stride=1),
        case("k3s2-pad1", _mode, k=3, stride=2, padding=1),
        case("nonsquare", _mode, k=(2, 3), stride=(1, 2), padding=(1, 0)),
        case("ceil", _mode, k=2, stride=2, H=5, W=7, ceil_mode=True),
        case("ceil-pad", _mode, k=3, stride=2, H=6, W=5, padding=1, ceil_mode=True),
        case("ceil-overhang", _mode, k=2, stride=2, H=5, W=5, padding=1, ceil_mode=True),
        case("ceil-s3", _mode, k=(3, 2), stride=3, H=8, W=7, padding=(1, 1), ceil_mode=True),
        case("N0", _mode, N=0),
        case("kernel1", _mode, k=1, stride=1),
        case("global-window", _mode, k=(6, 7)),
        case("odd", _mode, N=1, H=9, W=3, C=1, k=(4, 1), stride=(3, 1)),
    ]
CASES += [
    case("dilation", "max", k=2, stride=1, dilation=2, H=7, W=7),
    case("dilation-pad-ceil", "max", k=3, stride=2, dilation=(2, 1), padding=(2, 1), H=7, W=6, ceil_mode=True),
    case("no-pad-count", "avg", k=3, stride=2, padding=1, count_include_pad=False),
    case("no-pad-count-ceil", "avg", k=3, stride=2, padding=1, H=6, W=6, ceil_mode=True, count_include_pad=False),
    case("no-pad-count-nonsq", "avg", k=(2, 3), stride=(2, 1), padding=(1, 1), count_include_pad=False),
]


def random_cases(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        mode = str(rng.choice(["max", "avg"]))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2)) if mode == "max" else (1, 1)
        ph = int(rng.integers(0, (dh * (kh - 1) + 1) // 2 + 1))
        pw = int(rng.integers(0, (dw * (kw - 1) + 1) // 2 + 1))
        H, W = (int(v) for v in rng.integers(1, 9, 2))
        ceil_mode = bool(rng.integers(0, 2))
        if (naive.pool_out(H, kh, sh, ph, dh, ceil_mode) < 1) or (naive.pool_out(W, kw, sw, pw, dw, ceil_mode) < 1):
            continue
        out.append(case(f"rand{len(out)}", mode, N=int(rng.integers(0, 3)), H=H, W=W, C=int(rng.integers(1, 4)),
                        k=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), ceil_mode=ceil_mode,
                        count_include_pad=bool(rng.integers(0, 2))))
    return out


RANDOM_CASES = random_cases(7031, 24)


def options(c, layout):
    kw = dict(mode=c["mode"], ceil_mode=c["ceil_mode"], layout=layout)
    if c["mode"] == "max":
        kw["dilation"] = c["dilation"]
    else:
        kw["count_include_pad"] = c["count_include_pad"]
    return kw


def make_x(c, layout, dtype, rng):
    x = tie_free(rng, (c["N"], c["H"], c["W"], c["C"]), dtype)
    return from_nhwc(x, layout)


def naive_pool(x, c, layout):
    stride = c["stride"] if c["stride"] is not None else c["k"]
    y = naive.pool2d_nhwc(nhwc(x, layout), c["mode"], naive.pair(c["k"]), naive.pair(stride),
                          naive.pair(c["padding"]), naive.pair(c["dilation"]), c["ceil_mode"],
                          c["count_include_pad"])
    return from_nhwc(y, layout)


def public_call(x, c, layout, backend):
    """The same pooling through max_pool2d / avg_pool2d."""
    if c["mode"] == "max":
        return fastnn.max_pool2d(x, c["k"], c["stride"], c["padding"], dilation=c["dilation"],
                                 ceil_mode=c["ceil_mode"], layout=layout, **on(backend))
    return fastnn.avg_pool2d(x, c["k"], c["stride"], c["padding"], ceil_mode=c["ceil_mode"],
                             count_include_pad=c["count_include_pad"], layout=layout, **on(backend))


# --------------------------------------------------------------------------- harness

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", CASES + RANDOM_CASES)
def test_pool_matches_reference(backend, c, layout, dtype, rng):
    need(backend, *POOL_KERNELS)
    x = make_x(c, layout, dtype, rng)
    kw = options(c, layout)
    before = snapshot(x)
    y, cache = fastnn.pool2d_forward(x, c["k"], c["stride"], c["padding"], **kw, **on(backend))
    assert y.dtype == dtype
    assert_close(y, naive_pool(x, c, layout), dtype, "y vs naive")
    y_ref, cache_ref = fastnn.reference.pool2d_forward(x, c["k"], c["stride"], c["padding"], **kw)
    assert_close(y, y_ref, dtype, "y vs reference")
    np.testing.assert_array_equal(public_call(x, c, layout, backend), y)
    dy = randn(rng, y.shape, dtype)
    dy_before = snapshot(dy)
    dx = fastnn.pool2d_backward(dy, cache)
    assert_unchanged(dy_before, (dy,), "pool2d_backward")
    assert dx.dtype == dtype and dx.shape == x.shape
    assert_close(dx, fastnn.reference.pool2d_backward(dy, cache_ref), dtype, "dx vs reference")
    assert_unchanged(before, (x,), "pool2d")
    assert_fresh((y, dx), (x, dy), "pool2d")


GRAD_CASES = [
    case("k2", "max", N=2, H=4, W=5, C=2),
    case("k3s2-pad-ceil", "max", N=1, H=6, W=5, C=2, k=3, stride=2, padding=1, ceil_mode=True),
    case("overlap-dil", "max", N=1, H=6, W=6, C=1, k=2, stride=1, dilation=(2, 1), padding=(1, 0)),
    case("k3s2-pad", "avg", N=2, H=5, W=5, C=2, k=3, stride=2, padding=1),
    case("no-pad-count", "avg", N=1, H=5, W=6, C=2, k=3, stride=2, padding=1, count_include_pad=False),
    case("ceil-overhang", "avg", N=1, H=5, W=5, C=2, k=2, stride=2, padding=1, ceil_mode=True),
    case("ceil-no-pad-count", "avg", N=1, H=6, W=5, C=1, k=(3, 2), stride=2, padding=1, ceil_mode=True,
         count_include_pad=False),
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", GRAD_CASES)
def test_pool_gradient_check(backend, c, layout, rng):
    need(backend, *POOL_KERNELS)
    x = make_x(c, layout, np.float64, rng)
    kw = options(c, layout)
    y, cache = fastnn.pool2d_forward(x, c["k"], c["stride"], c["padding"], **kw, **on(backend))
    weights = randn(rng, y.shape)
    dx = fastnn.pool2d_backward(weights, cache)

    def loss():
        return float(np.sum(public_call(x, c, layout, backend) * weights))

    check_gradients(loss, {"x": x}, {"x": dx})


# --------------------------------------------------------------------------- max-pool rules

def test_max_pool_backward_first_maximum_and_accumulation(backend):
    need(backend, *POOL_KERNELS)
    # all ties: each 2x2 window sends its gradient to its top-left cell
    x = np.ones((1, 4, 4, 1))
    y, cache = fastnn.pool2d_forward(x, 2, **on(backend))
    dx = fastnn.pool2d_backward(np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1), cache)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    # a tie inside one window: row-major order picks (0, 1) before (1, 0)
    x = np.array([[1.0, 5.0], [5.0, 1.0]]).reshape(1, 2, 2, 1)
    _, cache = fastnn.pool2d_forward(x, 2, **on(backend))
    dx = fastnn.pool2d_backward(np.full((1, 1, 1, 1), 7.0), cache)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 7], [0, 0]])
    # overlapping windows that share the maximum accumulate: the centre of 3x3 gets 1+2+3+4
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 1
    _, cache = fastnn.pool2d_forward(x, 2, 1, **on(backend))
    dx = fastnn.pool2d_backward(np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1), cache)
    expected = np.zeros((3, 3))
    expected[1, 1] = 10
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


def test_max_pool_ties_match_naive_rule(backend, rng):
    need(backend, *POOL_KERNELS)
    x = integer_valued(rng, (2, 7, 6, 3), 0, 3)  # many ties
    y, cache = fastnn.pool2d_forward(x, 3, 2, 1, **on(backend))
    dy = randn(rng, y.shape)
    dx = fastnn.pool2d_backward(dy, cache)
    assert_close(dx, naive.max_pool2d_backward_nhwc(dy, x, (3, 3), (2, 2), (1, 1)))


def test_max_pool_nan_propagates(backend, rng):
    need(backend, "pool2d_forward")
    x = tie_free(rng, (1, 4, 4, 2))
    x[0, 1, 2, 0] = np.nan
    x[0, 3, 3, 1] = np.inf
    y = fastnn.max_pool2d(x, 2, **on(backend))
    assert np.isnan(y[0, 0, 1, 0])
    assert np.isnan(y).sum() == 1
    assert y[0, 1, 1, 1] == np.inf
    yg = fastnn.global_max_pool2d(x, **on(backend))
    assert np.isnan(yg[0, 0]) and yg[0, 1] == np.inf


def test_max_pool_all_negative_with_padding(backend):
    """Padding is -inf, not 0: an all-negative input keeps its negative maxima."""
    need(backend, "pool2d_forward")
    x = -np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    y = fastnn.max_pool2d(x, 3, 1, 1, **on(backend))
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])


def test_avg_pool_count_include_pad_by_hand(backend):
    need(backend, "pool2d_forward")
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # [[1,2,3],[4,5,6],[7,8,9]]
    y_in = fastnn.avg_pool2d(x, 2, 2, 1, **on(backend))
    y_ex = fastnn.avg_pool2d(x, 2, 2, 1, count_include_pad=False, **on(backend))
    # windows: {1}, {2,3}, {4,7}, {5,6,8,9}
    np.testing.assert_allclose(y_in[0, :, :, 0], [[1 / 4, 5 / 4], [11 / 4, 28 / 4]])
    np.testing.assert_allclose(y_ex[0, :, :, 0], [[1, 5 / 2], [11 / 2, 28 / 4]])


def test_ceil_mode_sizes_by_hand(backend):
    need(backend, "pool2d_forward")
    cases = [  # (H, k, s, p, floor size, ceil size)
        (5, 2, 2, 0, 2, 3),
        (4, 2, 2, 1, 3, 3),
        (5, 2, 2, 1, 3, 3),  # a 4th window would start in the right padding: dropped
        (6, 3, 2, 1, 3, 4),
        (7, 3, 3, 0, 2, 3),
        (4, 1, 2, 0, 2, 2),  # kernel 1, stride 2: a 3rd window would start past the input
        (5, 1, 2, 0, 3, 3),
    ]
    for H, k, s, p, floor_size, ceil_size in cases:
        x = np.zeros((1, H, H, 1))
        assert fastnn.max_pool2d(x, k, s, p, **on(backend)).shape[1] == floor_size
        assert fastnn.max_pool2d(x, k, s, p, ceil_mode=True, **on(backend)).shape[1] == ceil_size, (H, k, s, p)


def test_pool_mode_average_alias(backend, rng):
    need(backend, "pool2d_forward")
    x = randn(rng, (1, 4, 4, 2))
    a = fastnn.pool2d_forward(x, 2, mode="average", **on(backend))[0]
    b = fastnn.pool2d_forward(x, 2, mode="avg", **on(backend))[0]
    np.testing.assert_array_equal(a, b)


def test_pool_kernel1_output_is_fresh(backend, rng):
    need(backend, "pool2d_forward")
    x = randn(rng, (2, 3, 3, 2))
    for mode in ("max", "avg"):
        y = fastnn.pool2d_forward(x, 1, 1, mode=mode, **on(backend))[0]
        np.testing.assert_array_equal(y, x)
        assert_fresh((y,), (x,), f"{mode} pool with kernel 1")


def test_pool_deterministic(backend, rng):
    need(backend, *POOL_KERNELS)
    x = randn(rng, (3, 9, 8, 5))
    for mode in ("max", "avg"):
        y1, c1 = fastnn.pool2d_forward(x, 3, 2, 1, mode=mode, **on(backend))
        y2, c2 = fastnn.pool2d_forward(x, 3, 2, 1, mode=mode, **on(backend))
        np.testing.assert_array_equal(y1, y2)
        dy = randn(rng, y1.shape)
        np.testing.assert_array_equal(fastnn.pool2d_backward(dy, c1), fastnn.pool2d_backward(dy, c2))


# --------------------------------------------------------------------------- global pools

@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_global_pools(backend, layout, rng):
    need(backend, "pool2d_forward")
    x = randn(rng, (3, 4, 5, 6)) if layout == "NHWC" else randn(rng, (3, 6, 4, 5))
    spatial = (1, 2) if layout == "NHWC" else (2, 3)
    before = snapshot(x)
    for func, ref in ((fastnn.global_avg_pool2d, np.mean), (fastnn.global_max_pool2d, np.max)):
        y = func(x, layout=layout, **on(backend))
        assert y.shape == (3, 6)
        assert_close(y, ref(x, axis=spatial))
        yk = func(x, layout=layout, keepdims=True, **on(backend))
        assert yk.shape == ((3, 1, 1, 6) if layout == "NHWC" else (3, 6, 1, 1))
        assert_close(yk, ref(x, axis=spatial, keepdims=True))
        assert_fresh((y, yk), (x,), func.__name__)
    assert_unchanged(before, (x,), "global pools")


def test_global_pools_dtype_and_empty(backend, rng):
    need(backend, "pool2d_forward")
    x32 = randn(rng, (2, 3, 3, 4), np.float32)
    assert fastnn.global_avg_pool2d(x32, **on(backend)).dtype == np.float32
    xi = integer_valued(rng, (2, 3, 3, 4)).astype(np.int32)
    y = fastnn.global_max_pool2d(xi, **on(backend))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, xi.max(axis=(1, 2)))
    assert fastnn.global_avg_pool2d(np.zeros((0, 3, 3, 4)), **on(backend)).shape == (0, 4)
    y1 = fastnn.global_max_pool2d(x32[:, :1, :1, :], **on(backend))  # a 1x1 image: still a new array
    np.testing.assert_array_equal(y1, x32[:, 0, 0, :])
    assert_fresh((y1,), (x32,), "global_max_pool2d")


def test_global_pools_bad_arguments():
    for func in (fastnn.global_avg_pool2d, fastnn.global_max_pool2d):
        with pytest.raises(ValueError, match=func.__name__):
            func(np.zeros((3, 3, 4)))
        with pytest.raises(ValueError, match=func.__name__):
            func(np.zeros((1, 3, 3, 4)), layout="HWC")
        with pytest.raises(TypeError, match=func.__name__):
            func(np.zeros((1, 3, 3, 4), dtype=complex))
        with pytest.raises(ValueError, match=func.__name__):
            func(np.zeros((1, 3, 3, 4)), backend="gpu")


# --------------------------------------------------------------------------- odd inputs

@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("which", ["x", "dy"])
def test_pool_odd_inputs(backend, which, variant, mode, rng):
    need(backend, *POOL_KERNELS)
    for layout in ("NHWC", "NCHW"):
        # the "int" variant needs integer values (ties then follow the first-maximum rule)
        values = integer_valued(rng, (2, 5, 6, 3), -50, 50) if variant == "int" else tie_free(rng, (2, 5, 6, 3))
        x = from_nhwc(values, layout)
        kw = dict(mode=mode, layout=layout)
        y_ref, cache_ref = fastnn.reference.pool2d_forward(x, 3, 2, 1, **kw)
        dy = integer_valued(rng, y_ref.shape)
        dx_ref = fastnn.reference.pool2d_backward(dy, cache_ref)
        args = {"x": x, "dy": dy}
        args[which], _ = make_variant(variant, args[which])
        before = snapshot(*args.values())
        y, cache = fastnn.pool2d_forward(args["x"], 3, 2, 1, **kw, **on(backend))
        dx = fastnn.pool2d_backward(args["dy"], cache)
        assert y.dtype == dx.dtype == np.float64
        assert_close(y, y_ref, what=f"y with {variant} {which}")
        assert_close(dx, dx_ref, what=f"dx with {variant} {which}")
        assert_unchanged(before, list(args.values()), f"pool2d with {variant} {which}")
        assert_fresh((y, dx), [a for a in args.values() if isinstance(a, np.ndarray)], "pool2d")


@pytest.mark.parametrize("in_dtype, expected", [(np.float32, np.float32), (np.float64, np.float64),
                                                (np.int16, np.float64), (np.bool_, np.float64),
                                                (np.uint8, np.float64), (np.float16, np.float32)])
def test_pool_dtype_rules(backend, in_dtype, expected, rng):
    need(backend, *POOL_KERNELS)
    x = integer_valued(rng, (1, 4, 4, 2), 0, 2).astype(in_dtype)
    for mode in ("max", "avg"):
        y, cache = fastnn.pool2d_forward(x, 2, mode=mode, **on(backend))
        assert y.dtype == expected
        assert fastnn.pool2d_backward(np.ones(y.shape, expected), cache).dtype == expected
        assert_close(y, naive.pool2d_nhwc(x.astype(np.float64), mode, (2, 2), (2, 2), (0, 0)), expected)


# --------------------------------------------------------------------------- errors

X = np.zeros((1, 6, 6, 2))


@pytest.mark.parametrize("fn", ["max_pool2d", "avg_pool2d", "pool2d_forward"])
@pytest.mark.parametrize("args, kwargs, fragments", [
    pytest.param((np.zeros((6, 6, 2)), 2), {}, ["x", "(6, 6, 2)"], id="x-3d"),
    pytest.param((X, 0), {}, ["kernel_size"], id="kernel-0"),
    pytest.param((X, -2), {}, ["kernel_size"], id="kernel-neg"),
    pytest.param((X, 2.5), {}, ["kernel_size"], id="kernel-float"),
    pytest.param((X, (2, 2, 2)), {}, ["kernel_size"], id="kernel-triple"),
    pytest.param((X, 2, 0), {}, ["stride", "0"], id="stride-0"),
    pytest.param((X, 2, -1), {}, ["stride"], id="stride-neg"),
    pytest.param((X, 2, 1.0), {}, ["stride"], id="stride-float"),
    pytest.param((X, 2, "2"), {}, ["stride"], id="stride-str"),
    pytest.param((X, 2, 2, 2), {}, ["padding"], id="padding-over-half-kernel"),
    pytest.param((X, 3, 1, 2), {}, ["padding"], id="padding-over-half-kernel-3"),
    pytest.param((X, (3, 2), 1, (1, 2)), {}, ["padding"], id="padding-over-half-kernel-pair"),
    pytest.param((X, 2, 2, -1), {}, ["padding"], id="padding-neg"),
    pytest.param((X, 2, 2, (1, 1, 1)), {}, ["padding"], id="padding-triple"),
    pytest.param((X, 2, 2, "same"), {}, ["padding"], id="padding-str"),
    pytest.param((X, 2, 2, 0.5), {}, ["padding"], id="padding-float"),
    pytest.param((X, 7), {}, [], id="output-too-small"),
    pytest.param((X, 2), {"layout": "CHW"}, ["layout", "CHW"], id="layout-unknown"),
])
def test_pool_bad_arguments(fn, args, kwargs, fragments):
    with pytest.raises(ValueError) as info:
        getattr(fastnn, fn)(*args, **kwargs, backend="reference")
    message = str(info.value)
    assert fn in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_pool_bad_mode_dilation_backend_and_types():
    with pytest.raises(ValueError, match="pool2d_forward") as info:
        fastnn.pool2d_forward(X, 2, mode="min")
    assert "mode" in str(info.value) and "min" in str(info.value)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_pool2d") as info:
            fastnn.max_pool2d(X, 2, dilation=bad)
        assert "dilation" in str(info.value)
    with pytest.raises(ValueError, match="max_pool2d") as info:
        fastnn.max_pool2d(X, 2, backend="fortran")
    for name in fastnn.available_backends():
        assert name in str(info.value)
    for bad in (X.astype(complex), X.astype(object), np.full(X.shape, "x")):
        for func in (fastnn.max_pool2d, fastnn.avg_pool2d):
            with pytest.raises(TypeError, match=func.__name__):
                func(bad, 2)


def test_pool_dilated_padding_limit(backend, rng):
    """The padding limit is half the dilated kernel: k=2, d=3 spans 4 cells, so p=2 is fine."""
    need(backend, "pool2d_forward")
    x = tie_free(rng, (1, 7, 7, 1))
    y = fastnn.max_pool2d(x, 2, 1, 2, dilation=3, **on(backend))
    assert_close(y, naive.pool2d_nhwc(x, "max", (2, 2), (1, 1), (2, 2), (3, 3)))
    with pytest.raises(ValueError, match="padding"):
        fastnn.max_pool2d(x, 2, 1, 3, dilation=3, **on(backend))


def test_pool_backward_rejects_wrong_cache_and_dy(rng):
    x = randn(rng, (1, 4, 4, 2))
    y, cache = fastnn.pool2d_forward(x, 2, backend="reference")
    _, conv_cache = fastnn.conv2d_forward(x, randn(rng, (1, 1, 2, 2)), backend="reference")
    _, rnn_cache = fastnn.rnn_cell_forward(randn(rng, (2, 3)), randn(rng, (2, 2)), randn(rng, (2, 5)),
                                           randn(rng, (2,)), backend="reference")
    for bad in (conv_cache, rnn_cache, None, 3, "cache", (y, x)):
        with pytest.raises(TypeError, match="pool2d_backward"):
            fastnn.pool2d_backward(y, bad)
    for bad_dy in (np.zeros((1, 4, 4, 2)), np.zeros((1, 2, 2)), np.zeros((2, 2, 2, 2)), np.zeros((1, 2, 2, 1))):
        with pytest.raises(ValueError, match="pool2d_backward"):
            fastnn.pool2d_backward(bad_dy, cache)


# --------------------------------------------------------------------------- PyTorch

TORCH_CASES = [
    pytest.param(dict(mode="max", k=2, stride=2, padding=0), id="max-k2"),
    pytest.param(dict(mode="max", k=3, stride=2, padding=1, ceil_mode=True), id="max-ceil-pad"),
    pytest.param(dict(mode="max", k=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1)), id="max-dil"),
    pytest.param(dict(mode="max", k=2, stride=2, padding=1, ceil_mode=True), id="max-ceil-overhang"),
    pytest.param(dict(mode="max", k=2, stride=3, padding=0, ceil_mode=True, dilation=2), id="max-ceil-dil"),
    pytest.param(dict(mode="avg", k=3, stride=2, padding=1), id="avg-pad"),
    pytest.param(dict(mode="avg", k=3, stride=2, padding=1, count_include_pad=False), id="avg-pad-exclude"),
    pytest.param(dict(mode="avg", k=2, stride=2, padding=1, ceil_mode=True), id="avg-ceil-overhang"),
    pytest.param(dict(mode="avg", k=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True,
                      count_include_pad=False), id="avg-ceil-exclude"),
    pytest.param(dict(mode="avg", k=3, stride=3, padding=1, ceil_mode=True), id="avg-ceil-include"),
]


@pytest.mark.parametrize("t", TORCH_CASES)
def test_pool_against_torch(backend, t, rng):
    torch = pytest.importorskip("torch")
    need(backend, *POOL_KERNELS)
    x = tie_free(rng, (2, 3, 7, 8))
    xt = torch.tensor(x, requires_grad=True)
    ceil_mode = t.get("ceil_mode", False)
    if t["mode"] == "max":
        yt = torch.nn.functional.max_pool2d(xt, t["k"], t["stride"], t["padding"], dilation=t.get("dilation", 1),
                                            ceil_mode=ceil_mode)
        kw = dict(mode="max", dilation=t.get("dilation", 1))
    else:
        cip = t.get("count_include_pad", True)
        yt = torch.nn.functional.avg_pool2d(xt, t["k"], t["stride"], t["padding"], ceil_mode=ceil_mode,
                                            count_include_pad=cip)
        kw = dict(mode="avg", count_include_pad=cip)
    y, cache = fastnn.pool2d_forward(x, t["k"], t["stride"], t["padding"], ceil_mode=ceil_mode, layout="NCHW",
                                     **kw, **on(backend))
    assert_close(y, yt.detach().numpy(), what="y vs torch")
    dy = randn(rng, y.shape)
    yt.backward(torch.tensor(dy))
    assert_close(fastnn.pool2d_backward(dy, cache), xt.grad.numpy(), what="dx vs torch")


# --------------------------------------------------------------------------- special values

def test_max_pool_nan_and_inf_backward_match_reference(backend, rng):
    """Windows holding NaN, +-Inf or only -Inf route their gradient like the reference."""
    need(backend, *POOL_KERNELS)
    x = tie_free(rng, (2, 6, 6, 2))
    x[0, 1, 1, 0] = np.nan
    x[0, 4, 2, 1] = np.inf
    x[1, 0:2, 0:2, 0] = -np.inf
    x[1, 3, 3, 1] = np.nan
    x[1, 3, 4, 1] = np.nan
    y, cache = fastnn.pool2d_forward(x, 2, **on(backend))
    y_ref, cache_ref = fastnn.reference.pool2d_forward(x, 2)
    assert_close(y, y_ref)
    assert y[1, 0, 0, 0] == -np.inf and np.isnan(y[1, 1, 1, 1]) and np.isnan(y[1, 1, 2, 1])
    dy = randn(rng, y.shape)
    assert_close(fastnn.pool2d_backward(dy, cache), fastnn.reference.pool2d_backward(dy, cache_ref))


def test_max_pool_window_entirely_in_padding(backend):
    """With dilation a window can miss the input entirely: its maximum is -inf and it
    sends no gradient anywhere."""
    need(backend, *POOL_KERNELS)
    x = np.array([[3.0]]).reshape(1, 1, 1, 1)
    # k=2, dilation=3 spans 4 cells; padding 2: window 0 reads rows -2 and 1, window 1 rows -1 and 2
    y, cache = fastnn.pool2d_forward(x, (2, 1), 1, (2, 0), dilation=(3, 1), **on(backend))
    assert y.shape == (1, 2, 1, 1)
    np.testing.assert_array_equal(y.ravel(), [-np.inf, -np.inf])
    dx = fastnn.pool2d_backward(np.ones(y.shape), cache)
    np.testing.assert_array_equal(dx, np.zeros((1, 1, 1, 1)))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_avg_pool_inf_propagates(backend, rng):
    need(backend, "pool2d_forward")
    x = randn(rng, (1, 4, 4, 1))
    x[0, 0, 0, 0] = np.inf
    x[0, 3, 3, 0] = -np.inf
    x[0, 2, 0, 0] = np.inf
    x[0, 3, 1, 0] = -np.inf
    y = fastnn.avg_pool2d(x, 2, **on(backend))
    assert y[0, 0, 0, 0] == np.inf and y[0, 1, 1, 0] == -np.inf and np.isnan(y[0, 1, 0, 0])
    assert np.isfinite(y[0, 0, 1, 0])


def test_pool_accepts_numpy_ints_and_lists_as_geometry(backend, rng):
    need(backend, "pool2d_forward")
    x = tie_free(rng, (1, 7, 6, 2))
    want = fastnn.max_pool2d(x, (3, 2), (2, 1), (1, 1), **on(backend))
    got = fastnn.max_pool2d(x, [np.int64(3), 2], np.array([2, 1]), (np.int32(1), 1), **on(backend))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 0, 4, 2), (1, 4, 0, 2)])
def test_pool_empty_spatial_is_an_error(shape):
    for func in (fastnn.max_pool2d, fastnn.avg_pool2d):
        with pytest.raises(ValueError, match=func.__name__):
            func(np.zeros(shape), 1)
    for func in (fastnn.global_avg_pool2d, fastnn.global_max_pool2d):
        with pytest.raises(ValueError, match=func.__name__):
            func(np.zeros(shape))


# --------------------------------------------------------------------------- CPU tiers (cython)
#
# The cython pooling kernels are compiled once per CPU tier (generic, avx2, avx512) and
# element type, with the channel loop on the tier's vectors: VL = 2 .. 16 lanes, four
# vectors at a time, and the channel tail masked. Every tier this CPU can run is checked
# against the reference, on channel counts around each VL (VL - 1, VL, VL + 1, 2 VL + 3,
# 4 VL + tail), every geometry option, NaN and +-inf, and across thread counts.

TIER_NAMES = ("generic", "avx2", "avx512")
# around VL = 2, 4, 8, 16 (float64/float32 on 16-, 32- and 64-byte vectors)
TIER_CHANNELS = (1, 2, 3, 4, 5, 7, 8, 9, 11, 15, 16, 17, 19, 33, 35, 67, 69)


@pytest.fixture(params=range(len(TIER_NAMES)), ids=TIER_NAMES)
def cy_tier(request):
    """The cython pooling module running on one CPU tier (skipped above this CPU's);
    the tier it ran on before is restored afterwards."""
    cy_pool = pytest.importorskip("fastnn._kernels.cy_pool")
    if "cython" not in fastnn.available_backends():
        pytest.skip("the cython backend is not available")
    tier = request.param
    if tier > cy_pool.cpu_tier():
        pytest.skip(f"this CPU has no {TIER_NAMES[tier]} tier")
    before = cy_pool.active_tier()
    assert cy_pool.set_tier(tier) == tier
    try:
        yield cy_pool
    finally:
        cy_pool.set_tier(before)


def tier_cases():
    """(geometry, channel count) pairs: each geometry meets several channel counts."""
    geometries = [
        case("k2", "max", N=2, H=6, W=7, k=2),
        case("k3s2p1", "max", N=2, H=9, W=8, k=3, stride=2, padding=1),
        case("k3s1", "max", N=1, H=6, W=6, k=3, stride=1),
        case("nonsq-ceil", "max", N=1, H=7, W=6, k=(2, 3), stride=(2, 1), padding=(1, 1), ceil_mode=True),
        case("dil", "max", N=1, H=7, W=8, k=(2, 3), stride=(1, 2), dilation=(2, 2), padding=(1, 2)),
        case("dil-empty", "max", N=1, H=1, W=3, k=(2, 1), stride=1, dilation=(3, 1), padding=(2, 0)),
        case("gap", "max", N=1, H=8, W=9, k=2, stride=3),
        case("int32-taps", "max", N=1, H=12, W=12, k=(12, 11), stride=1),
        # up to 17 output rows x 3 windows cover a cell: more terms than one flush holds
        case("many-terms", "max", N=1, H=34, W=8, k=(17, 3), stride=1, padding=(2, 1)),
        case("k2", "avg", N=2, H=6, W=7, k=2),
        case("k3s2p1", "avg", N=2, H=9, W=8, k=3, stride=2, padding=1),
        case("k3s1-excl", "avg", N=1, H=6, W=7, k=3, stride=1, padding=1, count_include_pad=False),
        case("ceil-overhang", "avg", N=1, H=5, W=5, k=2, stride=2, padding=1, ceil_mode=True),
        case("ceil-excl", "avg", N=1, H=6, W=5, k=(3, 2), stride=2, padding=1, ceil_mode=True,
             count_include_pad=False),
        case("gap", "avg", N=1, H=8, W=9, k=2, stride=3),
        case("global", "avg", N=2, H=12, W=11, k=(12, 11)),
        case("many-terms", "avg", N=1, H=34, W=8, k=(17, 3), stride=1, padding=(2, 1), count_include_pad=False),
    ]
    out = []
    for g_i, geometry in enumerate(geometries):
        for k, channels in enumerate(TIER_CHANNELS):
            if (g_i + k) % 3 == 0 or channels in (1, 8, 17):
                out.append((dict(geometry.values[0], C=channels), f"{geometry.id}-C{channels}"))
    return out


TIER_CASES = tier_cases()


def pool_both(c, x, dy, backend):
    kw = options(c, "NHWC")
    y, cache = fastnn.pool2d_forward(x, c["k"], c["stride"], c["padding"], **kw, backend=backend)
    return y, fastnn.pool2d_backward(dy, cache)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_tiers_match_reference(cy_tier, dtype, rng):
    for c, name in TIER_CASES:
        x = tie_free(rng, (c["N"], c["H"], c["W"], c["C"]), dtype)
        y_ref, cache_ref = fastnn.reference.pool2d_forward(x, c["k"], c["stride"], c["padding"], **options(c, "NHWC"))
        dy = randn(rng, y_ref.shape, dtype)
        y, dx = pool_both(c, x, dy, "cython")
        assert y.dtype == dx.dtype == dtype, name
        assert_close(y, y_ref, dtype, f"y {name}")
        assert_close(dx, fastnn.reference.pool2d_backward(dy, cache_ref), dtype, f"dx {name}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_tiers_nan_inf_and_ties(cy_tier, dtype, rng):
    """NaN wins a max window (the first NaN takes the gradient), +-inf and ties follow
    the first-maximum rule, and average pooling propagates them, on every tier."""
    for c, name in TIER_CASES:
        shape = (c["N"], c["H"], c["W"], c["C"])
        x = integer_valued(rng, shape, -2, 3).astype(dtype)  # many ties
        special = rng.random(shape)
        x[special < 0.06] = np.nan
        x[(special >= 0.06) & (special < 0.12)] = np.inf
        x[(special >= 0.12) & (special < 0.2)] = -np.inf
        kw = options(c, "NHWC")
        with np.errstate(invalid="ignore"):  # inf - inf and NaN in the reference's reductions
            y_ref, cache_ref = fastnn.reference.pool2d_forward(x, c["k"], c["stride"], c["padding"], **kw)
            dy = integer_valued(rng, y_ref.shape).astype(dtype)
            y, dx = pool_both(c, x, dy, "cython")
            dx_ref = fastnn.reference.pool2d_backward(dy, cache_ref)
        if c["mode"] == "max":
            np.testing.assert_array_equal(y, y_ref, err_msg=f"y {name}")  # NaN == NaN here
        else:
            assert_close(y, y_ref, dtype, f"y {name}")
        assert_close(dx, dx_ref, dtype, f"dx {name}")


@pytest.mark.parametrize("mode, k, stride, padding", [("max", 3, 1, 1), ("max", 3, 2, 1), ("max", 2, 2, 0),
                                                      ("avg", 3, 1, 1), ("avg", 3, 2, 1), ("avg", 2, 2, 0)])
def test_tiers_same_bits_at_any_thread_count(cy_tier, mode, k, stride, padding, rng):
    x = randn(rng, (3, 13, 11, 21), np.float32)
    y1, c1 = fastnn.pool2d_forward(x, k, stride, padding, mode=mode, backend="cython")
    dy = randn(rng, y1.shape, np.float32)
    fastnn.set_num_threads(1)
    y1, c1 = fastnn.pool2d_forward(x, k, stride, padding, mode=mode, backend="cython")
    dx1 = fastnn.pool2d_backward(dy, c1)
    for threads in (2, 3, 5):
        fastnn.set_num_threads(threads)
        y, cache = fastnn.pool2d_forward(x, k, stride, padding, mode=mode, backend="cython")
        np.testing.assert_array_equal(y, y1)
        np.testing.assert_array_equal(fastnn.pool2d_backward(dy, cache), dx1)


def test_tier_setting_is_clamped_and_restored():
    cy_pool = pytest.importorskip("fastnn._kernels.cy_pool")
    before = cy_pool.active_tier()
    top = cy_pool.cpu_tier()
    try:
        assert 0 <= top < len(TIER_NAMES)
        assert cy_pool.set_tier(len(TIER_NAMES) + 3) == top
        assert cy_pool.set_tier(-1) == 0 and cy_pool.active_tier() == 0
    finally:
        cy_pool.set_tier(before)
    assert cy_pool.active_tier() == before


@pytest.mark.parametrize("dtype, channels", [(np.float32, 96), (np.float64, 48)], ids=["f32", "f64"])
@pytest.mark.parametrize("mode, k, stride, padding", [("max", 2, 2, 0), ("max", 3, 1, 1), ("avg", 3, 1, 1),
                                                      ("avg", 2, 2, 0)])
def test_tiers_large_outputs(cy_tier, dtype, channels, mode, k, stride, padding, rng):
    """Outputs of 12 MiB and more that are written once per cell go past the caches
    (non-temporal stores): x and dx (2, 128, 128, C) are 12 MiB, and so is y at stride 1."""
    need("numba", *POOL_KERNELS)
    x = randn(rng, (2, 128, 128, channels), dtype)
    y, cache = fastnn.pool2d_forward(x, k, stride, padding, mode=mode, backend="cython")
    y_nb, cache_nb = fastnn.pool2d_forward(x, k, stride, padding, mode=mode, backend="numba")
    dy = randn(rng, y.shape, dtype)
    assert_close(y, y_nb, dtype, "y vs numba")
    assert_close(fastnn.pool2d_backward(dy, cache), fastnn.pool2d_backward(dy, cache_nb), dtype, "dx vs numba")
