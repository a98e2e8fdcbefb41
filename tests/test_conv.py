"""conv2d / conv2d_forward / conv2d_backward / im2col / col2im on every backend."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, backend_kernels, check_gradients,
                     integer_valued, make_variant, need, nonzero, on, randn, snapshot)

CONV_KERNELS = ("conv2d_forward", "conv2d_backward")


# --------------------------------------------------------------------------- course examples

def conv_single(backend, image, kernel, **kwargs):
    """A one-image, one-channel convolution in both layouts (they must agree)."""
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    y_nhwc = fastnn.conv2d(image[None, :, :, None], kernel[:, :, None, None], **kwargs, **on(backend))
    y_nchw = fastnn.conv2d(image[None, None], kernel[None, None], layout="NCHW", **kwargs, **on(backend))
    np.testing.assert_array_equal(y_nhwc[0, :, :, 0], y_nchw[0, 0])
    return y_nhwc[0, :, :, 0]


VERTICAL = [[1, 0, -1]] * 3
HORIZONTAL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
IMAGE_6X6 = [[3, 0, 1, 2, 7, 4],
             [1, 5, 8, 9, 3, 1],
             [2, 7, 2, 5, 1, 3],
             [0, 1, 3, 1, 7, 8],
             [4, 2, 1, 6, 2, 8],
             [2, 4, 5, 2, 3, 9]]


def test_course_vertical_edge_6x6(backend):
    need(backend, "conv2d_forward")
    # Each entry checked by hand, e.g. top-left: (3+1+2) - (1+8+2) = -5,
    # bottom-right: (1+6+2) - (8+8+9) = -16.
    expected = [[-5, -4, 0, 8],
                [-10, -2, 2, 3],
                [0, -2, -4, -7],
                [-3, -2, -3, -16]]
    np.testing.assert_array_equal(conv_single(backend, IMAGE_6X6, VERTICAL), expected)


def test_course_step_edges(backend):
    need(backend, "conv2d_forward")
    light_to_dark = [[10, 10, 10, 0, 0, 0]] * 6
    dark_to_light = [[0, 0, 0, 10, 10, 10]] * 6
    np.testing.assert_array_equal(conv_single(backend, light_to_dark, VERTICAL), [[0, 30, 30, 0]] * 4)
    np.testing.assert_array_equal(conv_single(backend, dark_to_light, VERTICAL), [[0, -30, -30, 0]] * 4)


def test_course_horizontal_edge(backend):
    need(backend, "conv2d_forward")
    image = [[10, 10, 10, 0, 0, 0]] * 3 + [[0, 0, 0, 10, 10, 10]] * 3
    # Row 1, column 1: top row (10+10+0) minus bottom row (0+0+10) = 10.
    expected = [[0, 0, 0, 0],
                [30, 10, -10, -30],
                [30, 10, -10, -30],
                [0, 0, 0, 0]]
    np.testing.assert_array_equal(conv_single(backend, image, HORIZONTAL), expected)


def test_course_strided_example_with_errata(backend):
    need(backend, "conv2d_forward")
    image = [[2, 3, 7, 4, 6, 2, 9],
             [6, 6, 9, 8, 7, 4, 3],
             [3, 4, 8, 3, 8, 9, 7],
             [7, 8, 3, 6, 6, 3, 4],
             [4, 2, 1, 8, 3, 4, 6],
             [3, 2, 4, 1, 9, 8, 3],
             [0, 1, 3, 9, 2, 1, 4]]
    kernel = [[3, 4, 4], [1, 0, 2], [-1, 0, 3]]
    # The printed slide has 83 and 127; by hand the windows give
    # (18+8+36) + (7+0+6) + (-8+0+21) = 88 and (24+36+28) + (6+0+8) + (-3+0+18) = 117.
    expected = [[91, 100, 88],
                [69, 91, 117],
                [44, 72, 74]]
    np.testing.assert_array_equal(conv_single(backend, image, kernel, stride=2), expected)


@pytest.mark.parametrize("f, p", [(3, 1), (5, 2)])
def test_course_same_padding_is_f_minus_1_over_2(backend, f, p, rng):
    need(backend, "conv2d_forward")
    x = randn(rng, (1, 6, 6, 2))
    w = randn(rng, (f, f, 2, 3))
    same = fastnn.conv2d(x, w, padding="same", **on(backend))
    explicit = fastnn.conv2d(x, w, padding=p, **on(backend))
    assert same.shape == (1, 6, 6, 3)
    assert_close(same, explicit)


def test_course_volume_convolution_shapes(backend, rng):
    need(backend, "conv2d_forward")
    # 6x6x3 image, two 3x3x3 filters -> 4x4x2; 1x1 convolution is a per-pixel dense layer.
    x = randn(rng, (1, 6, 6, 3))
    w = randn(rng, (3, 3, 3, 2))
    assert fastnn.conv2d(x, w, **on(backend)).shape == (1, 4, 4, 2)
    w1 = randn(rng, (1, 1, 3, 5))
    y1 = fastnn.conv2d(x, w1, **on(backend))
    assert_close(y1, x @ w1[0, 0])


# --------------------------------------------------------------------------- cases

def case(name, N=2, H=5, W=6, C_in=3, C_out=4, k=3, stride=1, padding=0, dilation=1, groups=1, bias="vec"):
    return pytest.param(dict(N=N, H=H, W=W, C_in=C_in, C_out=C_out, k=k, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, bias=bias), id=name)


CASES = [
    case("basic"),
    case("k1x1", k=1),
    case("k1x1-stride2", k=1, stride=2, H=5, W=5),
    case("nonsquare-k", k=(2, 3), H=4, W=7),
    case("stride2", stride=2, H=7, W=6),
    case("stride-2x3", stride=(2, 3), H=7, W=8, k=(3, 2)),
    case("pad-int", padding=1),
    case("pad-pair", padding=(2, 1), k=(3, 2)),
    case("pad-4", padding=((2, 0), (1, 3))),
    case("valid", padding="valid"),
    case("same-s1", padding="same", k=(3, 2)),
    case("same-s2", padding="same", stride=2, H=7, W=6),
    case("same-s3x2-dil", padding="same", stride=(3, 2), dilation=(2, 1), H=8, W=7),
    case("same-even-k", padding="same", k=4, H=5, W=4),
    case("dilation2", dilation=2, H=7, W=7),
    case("dilation-1x2-pad", dilation=(1, 2), padding=1, W=8),
    case("groups2", groups=2, C_in=4, C_out=6, padding=1),
    case("groups3-mult", groups=3, C_in=3, C_out=6),
    case("depthwise", groups=4, C_in=4, C_out=4, padding=1, stride=2),
    case("no-bias", bias=None),
    case("bias-course", bias="course"),
    case("bias-column", bias="column"),
    case("N0", N=0),
    case("N1-odd", N=1, H=9, W=3, k=(4, 1), stride=(2, 1)),
    case("kernel-covers-input", H=3, W=4, k=(3, 4)),
    case("big-pad-tiny-input", H=1, W=2, k=3, padding=2, stride=2),
]


def random_cases(seed, count):
    """Seeded random configurations mixing every option."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in = groups * int(rng.integers(1, 3))
        c_out = groups * int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        H, W = (int(v) for v in rng.integers(1, 9, 2))
        form = rng.integers(0, 5)
        if form == 0:
            padding = int(rng.integers(0, 3))
        elif form == 1:
            padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        elif form == 2:
            padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
        elif form == 3:
            padding = "same"
        else:
            padding = "valid"
        pads = naive.conv_pads(padding, (H, W), (kh, kw), (sh, sw), (dh, dw))
        if naive.conv_out(H, pads[0], pads[1], kh, sh, dh) < 1 or naive.conv_out(W, pads[2], pads[3], kw, sw, dw) < 1:
            continue
        bias = str(rng.choice(["vec", "course", "none"]))
        out.append(case(f"rand{len(out)}", N=int(rng.integers(0, 3)), H=H, W=W, C_in=c_in, C_out=c_out,
                        k=(kh, kw), stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups,
                        bias=None if bias == "none" else bias))
    return out


RANDOM_CASES = random_cases(20240601, 24)


def make_arrays(c, layout, dtype, rng):
    """x, w, b in the given layout; b random non-zero in the case's bias shape."""
    kh, kw = naive.pair(c["k"])
    cg = c["C_in"] // c["groups"]
    x = randn(rng, (c["N"], c["H"], c["W"], c["C_in"]), dtype)
    w = randn(rng, (kh, kw, cg, c["C_out"]), dtype)
    b = None
    if c["bias"] is not None:
        shape = {"vec": (c["C_out"],), "course": (1, 1, 1, c["C_out"]),
                 "column": (1, c["C_out"], 1, 1) if layout == "NCHW" else (c["C_out"], 1)}[c["bias"]]
        b = nonzero(rng, shape, dtype)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    return x, w, b


def kwargs_of(c, layout):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"], layout=layout)


def naive_conv(x, w, b, c, layout):
    """The independent twin, in the caller's layout."""
    if layout == "NCHW":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    kh, kw = w.shape[:2]
    stride, dilation = naive.pair(c["stride"]), naive.pair(c["dilation"])
    pads = naive.conv_pads(c["padding"], x.shape[1:3], (kh, kw), stride, dilation)
    y = naive.conv2d_nhwc(x, w, b, stride, pads, dilation, c["groups"])
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------- harness

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", CASES + RANDOM_CASES)
def test_conv_matches_reference(backend, c, layout, dtype, rng):
    """Forward against the naive twin and the reference; backward against the reference."""
    need(backend, *CONV_KERNELS)
    x, w, b = make_arrays(c, layout, dtype, rng)
    kw = kwargs_of(c, layout)
    before = snapshot(x, w, b)
    y, cache = fastnn.conv2d_forward(x, w, b, **kw, **on(backend))
    assert y.dtype == dtype
    assert_close(y, naive_conv(x, w, b, c, layout), dtype, "y vs naive")
    y_ref, cache_ref = fastnn.reference.conv2d_forward(x, w, b, **kw)
    assert_close(y, y_ref, dtype, "y vs reference")
    np.testing.assert_array_equal(fastnn.conv2d(x, w, b, **kw, **on(backend)), y)

    dy = randn(rng, y.shape, dtype)
    dy_before = snapshot(dy)
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    assert_unchanged(dy_before, (dy,), "conv2d_backward")
    dx_ref, dw_ref, db_ref = fastnn.reference.conv2d_backward(dy, cache_ref)
    assert dx.dtype == dw.dtype == dtype
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dw, dw_ref, dtype, "dw")
    if b is None:
        assert db is None and db_ref is None
    else:
        assert db.shape == b.shape and db.dtype == dtype
        assert_close(db, db_ref, dtype, "db")
        # db is the plain sum of dy over everything but the channel axis
        axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
        assert_close(db.reshape(-1), dy.astype(np.float64).sum(axis=axes), dtype, "db = sum dy")
    assert_unchanged(before, (x, w, b), "conv2d forward/backward")
    assert_fresh((y, dx, dw, db), (x, w, b, dy), "conv2d")


GRAD_CASES = [
    case("basic", N=2, H=4, W=5, C_in=2, C_out=3, padding=1),
    case("stride-2x1-pad4", N=1, H=5, W=5, C_in=2, C_out=2, k=(3, 2), stride=(2, 1), padding=((1, 0), (0, 2))),
    case("same-s2-dil", N=1, H=5, W=6, C_in=2, C_out=2, stride=2, padding="same", dilation=(2, 1)),
    case("groups-depthwise", N=2, H=4, W=4, C_in=2, C_out=4, k=2, groups=2),
    case("bias-course", N=1, H=4, W=4, C_in=2, C_out=2, bias="course", padding=(1, 0)),
    case("no-bias", N=1, H=4, W=4, C_in=1, C_out=2, bias=None, k=(2, 3)),
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("c", GRAD_CASES)
def test_conv_gradient_check(backend, c, layout, rng):
    need(backend, *CONV_KERNELS)
    x, w, b = make_arrays(c, layout, np.float64, rng)
    kw = kwargs_of(c, layout)
    y, cache = fastnn.conv2d_forward(x, w, b, **kw, **on(backend))
    weights = randn(rng, y.shape)
    dx, dw, db = fastnn.conv2d_backward(weights, cache)

    def loss():
        return float(np.sum(fastnn.conv2d(x, w, b, **kw, **on(backend)) * weights))

    arrays = {"x": x, "w": w}
    grads = {"x": dx, "w": dw}
    if b is not None:
        arrays["b"], grads["b"] = b, db
    check_gradients(loss, arrays, grads)


# --------------------------------------------------------------------------- odd inputs

ODD_CASE = dict(N=2, H=5, W=4, C_in=2, C_out=3, k=(2, 3), stride=(1, 2), padding=((1, 0), (1, 1)),
                dilation=1, groups=1, bias="vec")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("which", ["x", "w", "b", "dy"])
def test_conv_odd_inputs(backend, which, variant, layout, rng):
    """Slices, transposes, Fortran order, read-only, byte-swapped, lists and ints behave
    like the plain C-contiguous float array holding the same values."""
    need(backend, *CONV_KERNELS)
    x, w, b = make_arrays(ODD_CASE, layout, np.float64, rng)
    x, w, b = (integer_valued(rng, a.shape) for a in (x, w, b))  # exact for the "int" variant
    kw = kwargs_of(ODD_CASE, layout)
    y_ref, cache_ref = fastnn.reference.conv2d_forward(x, w, b, **kw)
    dy = integer_valued(rng, y_ref.shape)
    grads_ref = fastnn.reference.conv2d_backward(dy, cache_ref)
    args = {"x": x, "w": w, "b": b, "dy": dy}
    odd, _ = make_variant(variant, args[which])
    args[which] = odd
    before = snapshot(*args.values())
    y, cache = fastnn.conv2d_forward(args["x"], args["w"], args["b"], **kw, **on(backend))
    grads = fastnn.conv2d_backward(args["dy"], cache)
    assert y.dtype == np.float64
    assert_close(y, y_ref, np.float64, f"y with {variant} {which}")
    for name, got, want in zip(("dx", "dw", "db"), grads, grads_ref):
        assert_close(got, want, np.float64, f"{name} with {variant} {which}")
    assert_unchanged(before, list(args.values()), f"conv2d with {variant} {which}")
    assert_fresh((y,) + tuple(grads), [a for a in args.values() if isinstance(a, np.ndarray)], "conv2d")


@pytest.mark.parametrize("dx_dtype, dw_dtype, expected", [
    (np.float32, np.float32, np.float32),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.int32, np.float32, np.float64),
    (np.bool_, np.float64, np.float64),
    (np.int64, np.int64, np.float64),
    (np.float16, np.float16, np.float32),
])
def test_conv_dtype_rules(backend, dx_dtype, dw_dtype, expected, rng):
    need(backend, *CONV_KERNELS)
    x = integer_valued(rng, (2, 4, 4, 2), 0, 2).astype(dx_dtype)
    w = integer_valued(rng, (2, 2, 2, 3), -2, 3).astype(dw_dtype)
    y, cache = fastnn.conv2d_forward(x, w, **on(backend))
    assert y.dtype == expected
    dx, dw, db = fastnn.conv2d_backward(np.ones(y.shape, expected), cache)
    assert dx.dtype == dw.dtype == expected
    assert db is None
    assert_close(y, naive.conv2d_nhwc(x.astype(np.float64), w.astype(np.float64), None, (1, 1),
                                      (0, 0, 0, 0), (1, 1), 1), expected)


def test_conv_nan_and_inf_propagate(backend, rng):
    need(backend, "conv2d_forward")
    x = randn(rng, (1, 6, 6, 2))
    x[0, 2, 3, 1] = np.nan
    x[0, 5, 0, 0] = np.inf
    w = nonzero(rng, (3, 3, 2, 2))
    y = fastnn.conv2d(x, w, **on(backend))
    # every output whose window covers the NaN is NaN (rows 0..2, cols 1..3), the others finite
    # except those covering the Inf (row 3, col 0) which are +-Inf
    want = naive.conv2d_nhwc(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert np.isnan(y[0, 0:3, 1:4, :]).all()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    assert np.isinf(y[0, 3, 0, :]).all()
    assert_close(y, want)


def test_conv_deterministic(backend, rng):
    need(backend, *CONV_KERNELS)
    x = randn(rng, (3, 7, 6, 4))
    w = randn(rng, (3, 3, 2, 4))
    b = nonzero(rng, (4,))
    first = fastnn.conv2d_forward(x, w, b, padding=1, groups=2, **on(backend))
    second = fastnn.conv2d_forward(x, w, b, padding=1, groups=2, **on(backend))
    np.testing.assert_array_equal(first[0], second[0])
    dy = randn(rng, first[0].shape)
    for g1, g2 in zip(fastnn.conv2d_backward(dy, first[1]), fastnn.conv2d_backward(dy, second[1])):
        np.testing.assert_array_equal(g1, g2)


def test_conv_backward_twice_same_cache(backend, rng):
    """A cache may be used for several backward passes (backward must not consume it)."""
    need(backend, *CONV_KERNELS)
    x = randn(rng, (2, 5, 5, 2))
    w = randn(rng, (3, 3, 2, 3))
    y, cache = fastnn.conv2d_forward(x, w, nonzero(rng, (3,)), **on(backend))
    dy1, dy2 = randn(rng, y.shape), randn(rng, y.shape)
    g1 = fastnn.conv2d_backward(dy1, cache)
    fastnn.conv2d_backward(dy2, cache)
    g1_again = fastnn.conv2d_backward(dy1, cache)
    for a, b in zip(g1, g1_again):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- im2col / col2im

IM2COL_CASES = [
    pytest.param(dict(k=3, stride=1, padding=0, dilation=1), id="k3"),
    pytest.param(dict(k=(2, 3), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=1), id="pad4-stride"),
    pytest.param(dict(k=2, stride=2, padding="same", dilation=(1, 2)), id="same-dil"),
    pytest.param(dict(k=1, stride=1, padding=0, dilation=1), id="k1"),
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("g", IM2COL_CASES)
def test_im2col_layout_and_column_order(backend, g, layout, rng):
    """Rows (n, oh, ow); columns (kh, kw, C) in NHWC, (C, kh, kw) in NCHW, so that a
    groups=1 convolution is one matrix product with the reshaped weights."""
    need(backend, "im2col", "conv2d_forward")
    N, H, W, C, C_out = 2, 5, 6, 3, 4
    kh, kw = naive.pair(g["k"])
    stride, dilation = naive.pair(g["stride"]), naive.pair(g["dilation"])
    x_nhwc = randn(rng, (N, H, W, C))
    w_nhwc = randn(rng, (kh, kw, C, C_out))
    pads = naive.conv_pads(g["padding"], (H, W), (kh, kw), stride, dilation)
    want = naive.im2col_nhwc(x_nhwc, (kh, kw), stride, pads, dilation)
    kwargs = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], layout=layout)
    if layout == "NHWC":
        x, w = x_nhwc, w_nhwc
    else:
        x, w = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)), np.ascontiguousarray(w_nhwc.transpose(3, 2, 0, 1))
        want = want.reshape(-1, kh, kw, C).transpose(0, 3, 1, 2).reshape(want.shape)
    before = snapshot(x)
    cols = fastnn.im2col(x, g["k"], **kwargs, **on(backend))
    assert_unchanged(before, (x,), "im2col")
    assert_fresh((cols,), (x,), "im2col")
    assert cols.shape == want.shape
    assert_close(cols, want)
    y = fastnn.conv2d(x, w, **kwargs, **on(backend))
    if layout == "NHWC":
        assert_close(cols @ w.reshape(-1, C_out), y.reshape(-1, C_out))
    else:
        assert_close(cols @ w.reshape(C_out, -1).T, y.transpose(0, 2, 3, 1).reshape(-1, C_out))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("g", IM2COL_CASES)
def test_col2im_is_adjoint_of_im2col(backend, g, layout, rng):
    need(backend, "im2col", "col2im")
    x_shape = (2, 5, 6, 3) if layout == "NHWC" else (2, 3, 5, 6)
    kwargs = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], layout=layout)
    x = randn(rng, x_shape)
    cols = fastnn.im2col(x, g["k"], **kwargs, **on(backend))
    r = randn(rng, cols.shape)
    before = snapshot(r)
    back = fastnn.col2im(r, x_shape, g["k"], **kwargs, **on(backend))
    assert_unchanged(before, (r,), "col2im")
    assert_fresh((back,), (r,), "col2im")
    assert back.shape == x_shape
    # <im2col(x), r> == <x, col2im(r)>
    assert abs(np.sum(cols * r) - np.sum(x * back)) < 1e-9 * (1 + abs(np.sum(cols * r)))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_dx_is_col2im_of_dcols(backend, layout, rng):
    need(backend, "im2col", "col2im", *CONV_KERNELS)
    N, H, W, C, C_out, k = 2, 6, 5, 3, 2, (3, 2)
    kwargs = dict(stride=(2, 1), padding=((1, 1), (0, 1)), dilation=1, layout=layout)
    if layout == "NHWC":
        x, w = randn(rng, (N, H, W, C)), randn(rng, k + (C, C_out))
    else:
        x, w = randn(rng, (N, C, H, W)), randn(rng, (C_out, C) + k)
    y, cache = fastnn.conv2d_forward(x, w, **kwargs, **on(backend))
    dy = randn(rng, y.shape)
    dx, _, _ = fastnn.conv2d_backward(dy, cache)
    if layout == "NHWC":
        dcols = dy.reshape(-1, C_out) @ w.reshape(-1, C_out).T
    else:
        dcols = dy.transpose(0, 2, 3, 1).reshape(-1, C_out) @ w.reshape(C_out, -1)
    assert_close(dx, fastnn.col2im(dcols, x.shape, k, **kwargs, **on(backend)))


def test_im2col_empty_batch_and_1x1_is_fresh(backend, rng):
    need(backend, "im2col", "col2im")
    assert fastnn.im2col(np.zeros((0, 4, 4, 2)), 3, **on(backend)).shape == (0, 18)
    assert fastnn.col2im(np.zeros((0, 18)), (0, 4, 4, 2), 3, **on(backend)).shape == (0, 4, 4, 2)
    x = randn(rng, (2, 3, 3, 2))
    cols = fastnn.im2col(x, 1, **on(backend))
    assert_close(cols, x.reshape(-1, 2))
    assert_fresh((cols,), (x,), "im2col 1x1")
    back = fastnn.col2im(cols, x.shape, 1, **on(backend))
    assert_fresh((back,), (cols, x), "col2im 1x1")


# --------------------------------------------------------------------------- workspace limit

def test_workspace_limit_default_and_validation():
    assert fastnn.get_workspace_limit() == 64 * 2**20
    for bad in (0, -1, 1.5, "1024", True, None):
        with pytest.raises(ValueError, match="set_workspace_limit"):
            fastnn.set_workspace_limit(bad)
    fastnn.set_workspace_limit(4096)
    assert fastnn.get_workspace_limit() == 4096


def test_workspace_limit_enforced_by_compiled_backends(compiled_backend, rng):
    need(compiled_backend, "conv2d_forward")
    x = randn(rng, (3, 8, 8, 4))
    w = randn(rng, (3, 3, 4, 2))
    one_image = 6 * 6 * 3 * 3 * 4 * 8  # H_out * W_out * kh * kw * C_in * itemsize (float64)
    fastnn.set_workspace_limit(one_image // 4)
    with pytest.raises(ValueError, match="conv2d"):
        fastnn.conv2d(x, w, **on(compiled_backend))
    # a 1x1 stride-1 unpadded convolution needs no workspace
    w1 = randn(rng, (1, 1, 4, 2))
    assert_close(fastnn.conv2d(x, w1, **on(compiled_backend)), x @ w1[0, 0])
    # room for a bit more than one image: the batch is processed in chunks, same result
    fastnn.set_workspace_limit(one_image + one_image // 2)
    b = nonzero(rng, (2,))
    y, cache = fastnn.conv2d_forward(x, w, b, **on(compiled_backend))
    assert_close(y, naive.conv2d_nhwc(x, w, b, (1, 1), (0, 0, 0, 0), (1, 1), 1))
    if "conv2d_backward" in backend_kernels(compiled_backend):
        dy = randn(rng, y.shape)
        y_ref, cache_ref = fastnn.reference.conv2d_forward(x, w, b)
        for got, want in zip(fastnn.conv2d_backward(dy, cache), fastnn.reference.conv2d_backward(dy, cache_ref)):
            assert_close(got, want)


# --------------------------------------------------------------------------- errors

def _x(layout="NHWC"):
    return np.zeros((2, 5, 5, 3)) if layout == "NHWC" else np.zeros((2, 3, 5, 5))


def _w(layout="NHWC", c_in=3, c_out=4, k=3):
    return np.zeros((k, k, c_in, c_out)) if layout == "NHWC" else np.zeros((c_out, c_in, k, k))


@pytest.mark.parametrize("fn", ["conv2d", "conv2d_forward"])
@pytest.mark.parametrize("args, kwargs, fragments", [
    pytest.param((np.zeros((5, 5, 3)), _w()), {}, ["x", "(5, 5, 3)"], id="x-3d"),
    pytest.param((_x(), np.zeros((3, 3, 3))), {}, ["w", "(3, 3, 3)"], id="w-3d"),
    pytest.param((_x(), _w(c_in=2)), {}, ["3", "2"], id="channel-mismatch"),
    pytest.param((np.zeros((2, 3, 5, 5)), _w("NCHW", c_in=2)), {"layout": "NCHW"}, ["3", "2"],
                 id="channel-mismatch-nchw"),
    pytest.param((_x(), _w(c_in=3, c_out=4)), {"groups": 3}, ["groups", "3"], id="groups-not-dividing-cout"),
    pytest.param((np.zeros((1, 5, 5, 4)), _w(c_in=2, c_out=6)), {"groups": 3}, ["groups"],
                 id="groups-not-dividing-cin"),
    pytest.param((_x(), _w()), {"groups": 0}, ["groups"], id="groups-0"),
    pytest.param((_x(), _w()), {"stride": 0}, ["stride", "0"], id="stride-0"),
    pytest.param((_x(), _w()), {"stride": -1}, ["stride", "-1"], id="stride-neg"),
    pytest.param((_x(), _w()), {"stride": 1.5}, ["stride", "1.5"], id="stride-float"),
    pytest.param((_x(), _w()), {"stride": "2"}, ["stride"], id="stride-str"),
    pytest.param((_x(), _w()), {"stride": (1, 0)}, ["stride"], id="stride-pair-0"),
    pytest.param((_x(), _w()), {"stride": (1, 1, 1)}, ["stride"], id="stride-triple"),
    pytest.param((_x(), _w()), {"dilation": 0}, ["dilation", "0"], id="dilation-0"),
    pytest.param((_x(), _w()), {"dilation": -2}, ["dilation", "-2"], id="dilation-neg"),
    pytest.param((_x(), _w()), {"dilation": 2.0}, ["dilation"], id="dilation-float"),
    pytest.param((_x(), _w()), {"padding": -1}, ["padding", "-1"], id="padding-neg"),
    pytest.param((_x(), _w()), {"padding": "full"}, ["padding", "full"], id="padding-unknown-str"),
    pytest.param((_x(), _w()), {"padding": 1.5}, ["padding"], id="padding-float"),
    pytest.param((_x(), _w()), {"padding": (1, 2, 3)}, ["padding"], id="padding-triple"),
    pytest.param((_x(), _w()), {"padding": ((1, 0), (0,))}, ["padding"], id="padding-ragged"),
    pytest.param((_x(), _w()), {"padding": ((1, -1), (0, 0))}, ["padding"], id="padding-neg-nested"),
    pytest.param((_x(), _w()), {"padding": ((1, 0), (0, 0), (0, 0))}, ["padding"], id="padding-3-pairs"),
    pytest.param((np.zeros((1, 2, 2, 3)), _w()), {}, ["2"], id="output-too-small"),
    pytest.param((np.zeros((1, 5, 5, 3)), _w()), {"dilation": 3}, [], id="output-too-small-dilated"),
    pytest.param((_x(), _w()), {"layout": "NWHC"}, ["layout", "NWHC"], id="layout-unknown"),
    pytest.param((_x(), _w()), {"layout": None}, ["layout"], id="layout-none"),
    pytest.param((_x(), _w(), np.zeros(3)), {}, ["b"], id="bias-wrong-size"),
    pytest.param((_x(), _w(), np.zeros((1, 1, 1, 5))), {}, ["b"], id="bias-wrong-size-4d"),
])
def test_conv_bad_arguments(fn, args, kwargs, fragments):
    with pytest.raises(ValueError) as info:
        getattr(fastnn, fn)(*args, **kwargs, backend="reference")
    message = str(info.value)
    assert "conv2d" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("bad", [
    np.zeros((1, 5, 5, 3), dtype=complex),
    np.zeros((1, 5, 5, 3), dtype=object),
    np.full((1, 5, 5, 3), "a"),
])
@pytest.mark.parametrize("which", ["x", "w", "b"])
def test_conv_non_real_arrays_are_type_errors(backend, bad, which):
    args = {"x": np.zeros((1, 5, 5, 3)), "w": np.zeros((3, 3, 3, 2)), "b": np.zeros(2)}
    shapes = {"x": (1, 5, 5, 3), "w": (3, 3, 3, 2), "b": (2,)}
    args[which] = np.resize(bad, shapes[which])
    with pytest.raises(TypeError, match="conv2d"):
        fastnn.conv2d(args["x"], args["w"], args["b"], **on(backend))


def test_conv_unknown_backend_lists_available():
    with pytest.raises(ValueError) as info:
        fastnn.conv2d(_x(), _w(), backend="cuda")
    message = str(info.value)
    assert "conv2d" in message and "cuda" in message
    for name in fastnn.available_backends():
        assert name in message


def test_conv_backward_rejects_wrong_cache_and_dy(rng):
    x, w = randn(rng, (1, 5, 5, 3)), randn(rng, (3, 3, 3, 2))
    y, cache = fastnn.conv2d_forward(x, w, backend="reference")
    _, pool_cache = fastnn.pool2d_forward(x, 2, backend="reference")
    for bad_cache in (pool_cache, None, "cache", (y, x), {"x": x}):
        with pytest.raises(TypeError, match="conv2d_backward"):
            fastnn.conv2d_backward(y, bad_cache)
    for bad_dy in (np.zeros((1, 3, 3, 3)), np.zeros((1, 2, 3, 3)), np.zeros((3, 3, 2)), np.zeros((2, 3, 3, 2))):
        with pytest.raises(ValueError, match="conv2d_backward") as info:
            fastnn.conv2d_backward(bad_dy, cache)
        assert "dy" in str(info.value)
    with pytest.raises(TypeError, match="conv2d_backward"):
        fastnn.conv2d_backward(np.zeros(y.shape, dtype=complex), cache)


@pytest.mark.parametrize("fn, args, fragment", [
    ("im2col", (np.zeros((5, 5, 3)), 3), "x"),
    ("im2col", (np.zeros((1, 5, 5, 3)), 0), "kernel_size"),
    ("im2col", (np.zeros((1, 5, 5, 3)), 6), ""),
    ("im2col", (np.zeros((1, 5, 5, 3)), (2, 2, 2)), "kernel_size"),
    ("col2im", (np.zeros((8, 27)), (1, 5, 5, 3), 3), "cols"),
    ("col2im", (np.zeros((9, 27)), (1, 5, 5), 3), "x_shape"),
])
def test_im2col_col2im_bad_arguments(fn, args, fragment):
    with pytest.raises(ValueError) as info:
        getattr(fastnn, fn)(*args, backend="reference")
    assert fn in str(info.value) and fragment in str(info.value)


# --------------------------------------------------------------------------- PyTorch

TORCH_CASES = [
    pytest.param(dict(stride=1, padding=0, dilation=1, groups=1), id="plain"),
    pytest.param(dict(stride=(2, 1), padding=(1, 2), dilation=1, groups=1), id="stride-pad"),
    pytest.param(dict(stride=1, padding="same", dilation=(2, 1), groups=1), id="same-dil"),
    pytest.param(dict(stride=1, padding="same", dilation=1, groups=1, k=(2, 4)), id="same-even-k"),
    pytest.param(dict(stride=2, padding=1, dilation=2, groups=2), id="groups2-dil"),
    pytest.param(dict(stride=1, padding=1, dilation=1, groups=4, c_out=8), id="depthwise"),
    pytest.param(dict(stride=(1, 2), padding=((2, 0), (1, 3)), dilation=1, groups=1), id="asymmetric-pad"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("t", TORCH_CASES)
def test_conv_against_torch(backend, t, rng):
    torch = pytest.importorskip("torch")
    need(backend, *CONV_KERNELS)
    N, C, H, W = 2, 4, 7, 6
    kh, kw = t.get("k", (3, 3))
    c_out = t.get("c_out", 6)
    x = randn(rng, (N, C, H, W))
    w = randn(rng, (c_out, C // t["groups"], kh, kw))
    b = nonzero(rng, (c_out,))
    kw_args = dict(stride=t["stride"], padding=t["padding"], dilation=t["dilation"], groups=t["groups"])
    y, cache = fastnn.conv2d_forward(x, w, b, layout="NCHW", **kw_args, **on(backend))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    padding = t["padding"]
    xin = xt
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        xin = torch.nn.functional.pad(xt, (left, right, top, bottom))
        padding = 0
    yt = torch.nn.functional.conv2d(xin, wt, bt, stride=t["stride"], padding=padding,
                                    dilation=t["dilation"], groups=t["groups"])
    assert_close(y, yt.detach().numpy(), what="y vs torch")
    dy = randn(rng, y.shape)
    yt.backward(torch.tensor(dy))
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    assert_close(dx, xt.grad.numpy(), what="dx vs torch")
    assert_close(dw, wt.grad.numpy(), what="dw vs torch")
    assert_close(db, bt.grad.numpy(), what="db vs torch")


def test_conv_accepts_numpy_ints_and_lists_as_geometry(backend, rng):
    need(backend, "conv2d_forward", "im2col")
    x, w = randn(rng, (1, 7, 6, 2)), randn(rng, (3, 2, 2, 3))
    want = fastnn.conv2d(x, w, stride=(2, 1), padding=((1, 0), (1, 1)), dilation=(1, 2), **on(backend))
    got = fastnn.conv2d(x, w, stride=[np.int64(2), 1], padding=[[1, np.int32(0)], (1, 1)],
                        dilation=np.array([1, 2]), groups=np.int64(1), **on(backend))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fastnn.im2col(x, [3, 2], stride=np.int8(2), **on(backend)),
                                  fastnn.im2col(x, (3, 2), stride=2, **on(backend)))


@pytest.mark.parametrize("shape", [(1, 0, 4, 2), (1, 4, 0, 2)])
def test_conv_empty_spatial_is_an_error(shape):
    with pytest.raises(ValueError, match="conv2d"):
        fastnn.conv2d(np.zeros(shape), np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="im2col"):
        fastnn.im2col(np.zeros(shape), 1)


def test_conv_gradients_come_back_in_the_compute_dtype(backend, rng):
    """A float64 dy on a float32 forward still gives float32 gradients; an int bias list
    with float32 x and w computes in float64."""
    need(backend, *CONV_KERNELS)
    x, w = randn(rng, (1, 4, 4, 2), np.float32), randn(rng, (3, 3, 2, 2), np.float32)
    y, cache = fastnn.conv2d_forward(x, w, np.array([1, -2], np.float32), **on(backend))
    grads = fastnn.conv2d_backward(np.ones(y.shape, np.float64), cache)
    assert [g.dtype for g in grads] == [np.float32] * 3
    y64, cache64 = fastnn.conv2d_forward(x, w, [1, -2], **on(backend))
    assert y64.dtype == np.float64
    assert_close(y64, y.astype(np.float64), np.float32)
    assert [g.dtype for g in fastnn.conv2d_backward(np.ones(y.shape, np.float32), cache64)] == [np.float64] * 3


@pytest.mark.parametrize("case", [
    dict(x=(2, 7, 7, 1), w=(5, 5, 1, 6), padding=2),          # one input channel (a first layer)
    dict(x=(2, 9, 9, 3), w=(3, 3, 3, 4), stride=2),           # strided: dx by columns
    dict(x=(2, 6, 6, 32), w=(3, 3, 32, 32), padding=1),       # dx as a transposed convolution
    dict(x=(2, 8, 8, 4), w=(3, 3, 1, 4), groups=4),           # depthwise
    dict(x=(2, 6, 6, 3), w=(1, 1, 3, 5)),                     # pointwise
])
def test_backward_without_dx_gives_the_same_weight_gradients(backend, case, rng):
    """need_dx=False (a network's first layer) skips the input gradient: dx is None and
    dw, db are the very bits of a full backward."""
    case = dict(case)
    x, w = randn(rng, case.pop("x")), randn(rng, case.pop("w"))
    b = randn(rng, (w.shape[-1],))
    y, cache = fastnn.conv2d_forward(x, w, b, **case, **on(backend))
    dy = randn(rng, y.shape)
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    none, dw2, db2 = fastnn.conv2d_backward(dy, cache, need_dx=False)
    assert none is None and dx is not None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_backward_need_dx_must_be_a_bool(rng):
    x, w = randn(rng, (1, 4, 4, 2)), randn(rng, (3, 3, 2, 2))
    _, cache = fastnn.conv2d_forward(x, w)
    with pytest.raises(TypeError, match="conv2d_backward: need_dx"):
        fastnn.conv2d_backward(np.ones((1, 2, 2, 2)), cache, need_dx="no")


@pytest.mark.parametrize("geometry", [
    dict(k=5, padding=0, stride=1, dilation=1, c_out=6),      # LeNet-5's first layer
    dict(k=3, padding=(1, 2), stride=(2, 1), dilation=1, c_out=17),
    dict(k=3, padding=2, stride=1, dilation=2, c_out=32),
    dict(k=1, padding=0, stride=1, dilation=1, c_out=1),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_input_channel_matches_the_reference_and_threads(backend, geometry, dtype, rng):
    """A one-channel input (grey images) with a few output channels, the case the cython
    backend runs on direct kernels: forward and gradients against the loops, at widths
    that leave partial vectors, and (cython) the same bits at 1 and 2 threads."""
    g = dict(geometry)
    k, c_out = g.pop("k"), g.pop("c_out")
    x = randn(rng, (3, 11, 21, 1)).astype(dtype)
    w = randn(rng, (k, k, 1, c_out)).astype(dtype)
    b = randn(rng, (c_out,)).astype(dtype)
    runs = []
    for threads in ((1, 2) if backend == "cython" else (None,)):
        before = fastnn.get_num_threads()
        if threads is not None:
            fastnn.set_num_threads(threads)
        try:
            y, cache = fastnn.conv2d_forward(x, w, b, **g, **on(backend))
            dy = np.cos(y * 3).astype(dtype)
            runs.append((y, *fastnn.conv2d_backward(dy, cache)))
        finally:
            fastnn.set_num_threads(before)
    if len(runs) == 2:  # y, dx, dw the same bits (db's per-thread partial sums are not: KERNELS.md)
        for one, two in zip(runs[0][:3], runs[1][:3]):
            np.testing.assert_array_equal(one, two)
    y, dx, dw, db = runs[0]
    assert y.dtype == dx.dtype == dw.dtype == np.dtype(dtype)
    want_y, want_cache = fastnn.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                               **g, backend="reference")
    want = fastnn.conv2d_backward(dy.astype(np.float64), want_cache)
    assert_close(y, want_y)
    for got, expected in zip((dx, dw, db), want):
        assert_close(got, expected)
