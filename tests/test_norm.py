"""batch_norm_forward / batch_norm_backward / batch_norm_inference on every backend.

The generic checks (every backend against the reference at the op table's sizes,
numerical gradients, PyTorch) run from tests/optable/norm.py; this file keeps what is
specific to batch normalisation: the course's definition and its identity property,
accuracy where the mean dwarfs the spread, every layout against PyTorch at odd
shapes, the chunked reductions at sizes that cut them, errors, odd arrays,
NaN/Inf, and thread-count independence.
"""
import numpy as np
import pytest

import fastnn
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, make_variant, need,
                     on, randn, snapshot)

KERNELS = ("batch_norm_forward", "batch_norm_backward", "batch_norm_inference")
LAYOUTS = ("NHWC", "NCHW", "dense")


def layout_of(kind):
    return "NCHW" if kind == "NCHW" else "NHWC"


def channel_axis(kind):
    return 3 if kind == "NHWC" else 1


def x_shape(kind, n, h, w, c):
    return {"NHWC": (n, h, w, c), "NCHW": (n, c, h, w), "dense": (n * h * w, c)}[kind]


def reduce_axes(kind):
    return {"NHWC": (0, 1, 2), "NCHW": (0, 2, 3), "dense": (0,)}[kind]


def bcast(v, kind, ndim):
    """A (C,) vector shaped to broadcast along the channel axis."""
    shape = [1] * ndim
    shape[channel_axis(kind) if ndim == 4 else 1] = -1
    return np.asarray(v).reshape(shape)


def numpy_batch_norm(x, gamma, beta, kind, eps=1e-5):
    """The course's formulas in float64 NumPy, independently of fastnn."""
    xd = np.asarray(x, dtype=np.float64)
    axes = reduce_axes(kind) if xd.ndim == 4 else (0,)
    mu = xd.mean(axis=axes)
    var = xd.var(axis=axes)  # ddof=0: the biased sigma^2
    x_norm = (xd - bcast(mu, kind, xd.ndim)) / np.sqrt(bcast(var, kind, xd.ndim) + eps)
    return bcast(gamma, kind, xd.ndim) * x_norm + bcast(beta, kind, xd.ndim), mu, var


def make_case(rng, kind, n, h, w, c, dtype=np.float64, scale=2.0, offset=1.0):
    x = (rng.standard_normal(x_shape(kind, n, h, w, c)) * scale + offset).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-1.0, 1.0, c).astype(dtype) + np.where(rng.random(c) < 0.5, -0.5, 0.5).astype(dtype)
    return x, gamma, beta


def forward(backend, x, gamma, beta, kind, **kw):
    return fastnn.batch_norm_forward(x, gamma, beta, layout=layout_of(kind), **kw, **on(backend))


# --------------------------------------------------------------------------- the course's definition

def test_course_four_values(backend):
    need(backend, *KERNELS)
    # one feature, m = 4: mu = 2.5, sigma^2 = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    # z_norm = (z - 2.5) / sqrt(1.25) (eps = 0), z~ = gamma z_norm + beta
    z = np.array([[1.0], [2.0], [3.0], [4.0]])
    y, mean, var, _ = fastnn.batch_norm_forward(z, [2.0], [0.5], eps=0.0, **on(backend))
    np.testing.assert_allclose(mean, [2.5], rtol=1e-15)
    np.testing.assert_allclose(var, [1.25], rtol=1e-15)
    z_norm = np.array([-1.3416407864998738, -0.4472135954999579, 0.4472135954999579, 1.3416407864998738])
    np.testing.assert_allclose(y[:, 0], 2.0 * z_norm + 0.5, rtol=1e-14)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_course_identity_when_gamma_is_the_std_and_beta_the_mean(backend, kind, rng):
    """The course: with gamma = sqrt(sigma^2 + eps) and beta = mu, z~ = z."""
    need(backend, *KERNELS)
    x, _, _ = make_case(rng, kind, 3, 4, 5, 6)
    _, mu, var = numpy_batch_norm(x, np.ones(6), np.zeros(6), kind)
    y = forward(backend, x, np.sqrt(var + 1e-3), mu, kind, eps=1e-3)[0]
    assert_close(y, x)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_matches_numpy_formulas(backend, kind, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, kind, 3, 5, 7, 9)
    y, mean, var, _ = forward(backend, x, gamma, beta, kind, eps=1e-3)
    want_y, want_mu, want_var = numpy_batch_norm(x, gamma, beta, kind, eps=1e-3)
    assert mean.shape == var.shape == (9,)
    assert y.shape == x.shape and y.flags.c_contiguous
    assert_close(mean, want_mu)
    assert_close(var, want_var)
    assert_close(y, want_y)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_output_has_zero_mean_and_unit_variance_per_channel(compiled_backend, kind, rng):
    x, _, _ = make_case(rng, kind, 4, 6, 5, 7, scale=3.0, offset=-2.0)
    y = forward(compiled_backend, x, np.ones(7), np.zeros(7), kind, eps=0.0)[0]
    axes = reduce_axes(kind)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- accuracy: large mean

@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("kind", LAYOUTS)
def test_large_mean_float32_variance(backend, kind, offset, rng):
    """offset + N(0, 1) in float32: E[x^2] - E[x]^2 would lose every digit; the
    chunked two-pass statistics keep float64's answer for the float32 data."""
    need(backend, *KERNELS)
    x = (offset + rng.standard_normal(x_shape(kind, 16, 9, 11, 5))).astype(np.float32)
    gamma, beta = np.ones(5, np.float32), np.zeros(5, np.float32)
    y, mean, var, cache = forward(backend, x, gamma, beta, kind)
    want_y, want_mu, want_var = numpy_batch_norm(x, gamma, beta, kind)
    np.testing.assert_allclose(mean, want_mu, rtol=1e-7)
    np.testing.assert_allclose(var, want_var, rtol=1e-5)
    # the mean's rounding to float32 (half an ulp of 1e4: 5e-4) does not shift y
    np.testing.assert_allclose(y, want_y, rtol=0, atol=2e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dgamma, dbeta = fastnn.batch_norm_backward(dy, cache)
    dyd = dy.astype(np.float64)
    axes = reduce_axes(kind)
    np.testing.assert_allclose(dgamma, (dyd * want_y).sum(axis=axes), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dbeta, dyd.sum(axis=axes), rtol=1e-5, atol=1e-4)


def test_large_mean_many_chunks(compiled_backend, rng):
    """Enough values per channel for many chunks in both shapes of the work."""
    for kind, shape in (("NHWC", (20, 16, 16, 3)), ("NCHW", (3, 2, 90, 91))):
        x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
        c = x.shape[channel_axis(kind)]
        _, mean, var, _ = forward(compiled_backend, x, np.ones(c, np.float32), np.zeros(c, np.float32), kind)
        _, want_mu, want_var = numpy_batch_norm(x, np.ones(c), np.zeros(c), kind)
        np.testing.assert_allclose(mean, want_mu, rtol=1e-7)
        np.testing.assert_allclose(var, want_var, rtol=1e-5)


# --------------------------------------------------------------------------- PyTorch

TORCH_SHAPES = [
    ("NHWC", (3, 5, 7, 6)), ("NHWC", (2, 1, 1, 3)), ("NHWC", (4, 9, 11, 19)), ("NHWC", (3, 20, 20, 70)),
    ("NCHW", (3, 6, 5, 7)), ("NCHW", (5, 3, 1, 1)), ("NCHW", (2, 3, 70, 65)), ("NCHW", (7, 17, 3, 2)),
    ("dense", (5, 17)), ("dense", (300, 33)), ("dense", (2, 1)), ("NHWC", (4, 8, 8, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind, shape", TORCH_SHAPES)
def test_against_torch(backend, kind, shape, dtype, rng):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torch.nn.functional")
    need(backend, *KERNELS)
    to_nchw = (lambda a: a.transpose(0, 3, 1, 2)) if kind == "NHWC" else (lambda a: a)
    c = shape[channel_axis(kind)] if len(shape) == 4 else shape[1]
    x = (rng.standard_normal(shape) * 1.5 + 0.7).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-1.0, 1.0, c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, var, cache = forward(backend, x, gamma, beta, kind)
    dx, dgamma, dbeta = fastnn.batch_norm_backward(dy, cache)

    xt = torch.tensor(np.ascontiguousarray(to_nchw(x)), requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    rm, rv = torch.zeros(c, dtype=xt.dtype), torch.ones(c, dtype=xt.dtype)
    yt = F.batch_norm(xt, rm, rv, gt, bt, training=True, momentum=1.0, eps=1e-5)
    yt.backward(torch.tensor(np.ascontiguousarray(to_nchw(dy))))
    m = x.size // c
    assert_close(to_nchw(y), yt.detach().numpy(), dtype, "y")
    assert_close(mean, rm.numpy(), dtype, "mean")
    assert_close(var * (m / (m - 1)), rv.numpy(), dtype, "var (PyTorch keeps the unbiased one)")
    assert_close(to_nchw(dx), xt.grad.numpy(), dtype, "dx")
    assert_close(dgamma, gt.grad.numpy(), dtype, "dgamma")
    assert_close(dbeta, bt.grad.numpy(), dtype, "dbeta")
    yi = fastnn.batch_norm_inference(x, gamma, beta, mean, var, layout=layout_of(kind), **on(backend))
    assert_close(yi, y, dtype, "inference with the batch statistics")


# --------------------------------------------------------------------------- gradients

GRAD_CASES = [("NHWC", (3, 2, 3, 4)), ("NCHW", (2, 3, 3, 4)), ("dense", (7, 3)), ("NHWC", (5, 2, 2, 1)),
              ("NCHW", (3, 2, 1, 1)), ("dense", (3, 2))]


@pytest.mark.parametrize("kind, shape", GRAD_CASES)
def test_numerical_gradients(backend, kind, shape, rng):
    need(backend, *KERNELS)
    c = shape[channel_axis(kind)] if len(shape) == 4 else shape[1]
    x = rng.standard_normal(shape) * 2.0 + 1.0
    gamma = rng.uniform(0.5, 1.5, (c, 1))  # the course's (n, 1) shape
    beta = rng.uniform(-1.0, 1.0, c)
    weights = rng.standard_normal(shape)

    def loss():
        return float(np.sum(forward(backend, x, gamma, beta, kind)[0] * weights))

    dx, dgamma, dbeta = fastnn.batch_norm_backward(weights, forward(backend, x, gamma, beta, kind)[3])
    assert dgamma.shape == (c, 1) and dbeta.shape == (c,)
    check_gradients(loss, {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta})


def test_gradient_of_the_mean_and_variance_path(backend, rng):
    """dx sums to zero per channel and is orthogonal to x_norm: y is invariant to
    shifting and scaling a channel's x (with eps = 0), so the gradient has no
    component along either."""
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NHWC", 4, 3, 5, 6)
    y, mean, var, cache = forward(backend, x, gamma, beta, "NHWC", eps=0.0)
    dx = fastnn.batch_norm_backward(rng.standard_normal(x.shape), cache)[0]
    x_norm = (x - mean) / np.sqrt(var)
    np.testing.assert_allclose(dx.sum(axis=(0, 1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose((dx * x_norm).sum(axis=(0, 1, 2)), 0.0, atol=1e-12)


# --------------------------------------------------------------------------- edge sizes

@pytest.mark.parametrize("kind", LAYOUTS)
def test_one_value_per_channel(backend, kind, rng):
    """N * H * W == 1: var 0, y = beta, dx = 0, dgamma = 0, dbeta = dy."""
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, kind, 1, 1, 1, 4)
    y, mean, var, cache = forward(backend, x, gamma, beta, kind)
    np.testing.assert_array_equal(var, 0.0)
    np.testing.assert_array_equal(mean, x.reshape(4))
    np.testing.assert_allclose(y.reshape(4), beta, rtol=1e-15)
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = fastnn.batch_norm_backward(dy, cache)
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_array_equal(dgamma, 0.0)
    np.testing.assert_allclose(dbeta, dy.reshape(4), rtol=1e-15)


def test_constant_channel(backend, rng):
    need(backend, *KERNELS)
    for dtype in (np.float32, np.float64):
        x = np.full((6, 3, 2, 2), 3.7, dtype)
        x[:, 1] = rng.standard_normal((6, 2, 2))
        y, mean, var, _ = fastnn.batch_norm_forward(x, [1.0, 1.0, 2.0], [0.25, 0.5, -0.75], layout="NCHW",
                                                    **on(backend))
        np.testing.assert_allclose(mean[0], 3.7, rtol=np.finfo(dtype).eps)
        assert 0.0 <= var[0] <= 1e-12
        np.testing.assert_allclose(y[:, 0], 0.25, rtol=1e-6)
        np.testing.assert_allclose(y[:, 2], -0.75, rtol=1e-6)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_empty_batch_is_an_error_for_training(backend, kind):
    need(backend, *KERNELS)
    x = np.zeros(x_shape(kind, 0, 3, 4, 5))
    with pytest.raises(ValueError, match=r"batch_norm_forward: .*one value per channel.*\(0, "):
        forward(backend, x, np.ones(5), np.zeros(5), kind)


def test_empty_image_is_an_error_for_training(backend):
    need(backend, *KERNELS)
    with pytest.raises(ValueError, match="batch_norm_forward"):
        fastnn.batch_norm_forward(np.zeros((2, 0, 3, 4)), np.ones(4), np.zeros(4), **on(backend))


@pytest.mark.parametrize("kind", LAYOUTS)
def test_empty_batch_inference(backend, kind):
    need(backend, *KERNELS)
    for dtype in (np.float32, np.float64):
        x = np.zeros(x_shape(kind, 0, 3, 4, 5), dtype)
        y = fastnn.batch_norm_inference(x, np.ones(5), np.zeros(5), np.zeros(5), np.ones(5),
                                        layout=layout_of(kind), **on(backend))
        assert y.shape == x.shape and y.dtype == np.float64  # the statistics are float64
        y = fastnn.batch_norm_inference(x, *(np.ones(5, dtype),) * 4, layout=layout_of(kind), **on(backend))
        assert y.shape == x.shape and y.dtype == dtype


def test_zero_channels(backend):
    need(backend, *KERNELS)
    y, mean, var, cache = fastnn.batch_norm_forward(np.zeros((4, 0)), np.zeros(0), np.zeros(0), **on(backend))
    assert y.shape == (4, 0) and mean.shape == var.shape == (0,)
    dx, dgamma, dbeta = fastnn.batch_norm_backward(np.zeros((4, 0)), cache)
    assert dx.shape == (4, 0) and dgamma.shape == dbeta.shape == (0,)


def test_dense_layout_is_irrelevant(backend, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "dense", 6, 1, 1, 4)
    a = fastnn.batch_norm_forward(x, gamma, beta, layout="NHWC", **on(backend))
    b = fastnn.batch_norm_forward(x, gamma, beta, layout="NCHW", **on(backend))
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kind", ["NHWC", "NCHW"])
def test_layouts_agree(backend, kind, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NHWC", 3, 4, 5, 6)
    other = x if kind == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y, mean, var, cache = forward(backend, other, gamma, beta, kind)
    want = forward(backend, x, gamma, beta, "NHWC")
    back = (lambda a: a) if kind == "NHWC" else (lambda a: a.transpose(0, 2, 3, 1))
    assert_close(back(y), want[0])
    assert_close(mean, want[1])
    assert_close(var, want[2])


# --------------------------------------------------------------------------- inference

@pytest.mark.parametrize("kind", LAYOUTS)
def test_inference(backend, kind, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, kind, 3, 4, 5, 6)
    mean, var = rng.standard_normal(6), rng.uniform(0.5, 2.0, 6)
    y = fastnn.batch_norm_inference(x, gamma, beta, mean, var, eps=1e-3, layout=layout_of(kind), **on(backend))
    nd = x.ndim
    want = bcast(gamma, kind, nd) * (x - bcast(mean, kind, nd)) / np.sqrt(bcast(var, kind, nd) + 1e-3) \
        + bcast(beta, kind, nd)
    assert_close(y, want)


def test_inference_negative_variance_is_nan(backend):
    need(backend, *KERNELS)
    with np.errstate(invalid="ignore"):
        y = fastnn.batch_norm_inference(np.ones((3, 2)), [1, 1], [0, 0], [0, 0], [1.0, -1.0], **on(backend))
    assert np.isfinite(y[:, 0]).all() and np.isnan(y[:, 1]).all()


# --------------------------------------------------------------------------- errors

def test_bad_arguments(backend):
    need(backend, *KERNELS)
    x, g, b = np.zeros((2, 3, 4, 5)), np.ones(5), np.zeros(5)
    cases = [
        (lambda: fastnn.batch_norm_forward(np.zeros((2, 3, 5)), g, b), ValueError, r"batch_norm_forward: x must be.*\(2, 3, 5\)"),
        (lambda: fastnn.batch_norm_forward(np.zeros(5), g, b), ValueError, r"batch_norm_forward: x must be 2-D"),
        (lambda: fastnn.batch_norm_forward(x, np.ones(4), b), ValueError, r"batch_norm_forward: gamma .*5 values.*\(4,\)"),
        (lambda: fastnn.batch_norm_forward(x, g, np.ones(3)), ValueError, r"batch_norm_forward: beta .*\(3,\)"),
        (lambda: fastnn.batch_norm_forward(x, g, b, layout="NCHW"), ValueError, r"gamma .*3 values.*NCHW"),
        (lambda: fastnn.batch_norm_forward(x, g, b, layout="nhwc"), ValueError, r"batch_norm_forward: layout"),
        (lambda: fastnn.batch_norm_forward(x, g, b, eps=-1e-5), ValueError, r"batch_norm_forward: eps"),
        (lambda: fastnn.batch_norm_forward(x, g, b, eps=float("nan")), ValueError, r"batch_norm_forward: eps"),
        (lambda: fastnn.batch_norm_forward(x, g, b, eps="small"), ValueError, r"batch_norm_forward: eps"),
        (lambda: fastnn.batch_norm_forward(x.astype(complex), g, b), TypeError, r"batch_norm_forward: x"),
        (lambda: fastnn.batch_norm_forward(x, np.array(["a"] * 5), b), TypeError, r"batch_norm_forward: gamma"),
        (lambda: fastnn.batch_norm_forward(x, g, b, backend="cuda"), ValueError, r"batch_norm_forward: .*backend"),
        (lambda: fastnn.batch_norm_inference(x, g, b, np.zeros(4), np.ones(5)), ValueError,
         r"batch_norm_inference: mean .*\(4,\)"),
        (lambda: fastnn.batch_norm_inference(x, g, b, np.zeros(5), None), TypeError, r"batch_norm_inference: var"),
        (lambda: fastnn.batch_norm_inference(x, g, b, g, b, eps=-1.0), ValueError, r"batch_norm_inference: eps"),
        (lambda: fastnn.batch_norm_inference(np.zeros((2, 2, 2)), g, b, g, b), ValueError,
         r"batch_norm_inference: x must be"),
    ]
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()


def test_bad_backward_arguments(backend, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NHWC", 2, 3, 4, 5)
    cache = forward(backend, x, gamma, beta, "NHWC")[3]
    with pytest.raises(ValueError, match=r"batch_norm_backward: dy .*\(2, 3, 4, 5\).*\(2, 3, 5, 4\)"):
        fastnn.batch_norm_backward(np.zeros((2, 3, 5, 4)), cache)
    with pytest.raises(TypeError, match="batch_norm_backward: cache"):
        fastnn.batch_norm_backward(np.zeros(x.shape), None)
    _, pool_cache = fastnn.pool2d_forward(x, 2)
    with pytest.raises(TypeError, match="batch_norm_backward: cache"):
        fastnn.batch_norm_backward(np.zeros(x.shape), pool_cache)
    with pytest.raises(TypeError, match="batch_norm_backward: dy"):
        fastnn.batch_norm_backward(np.zeros(x.shape, complex), cache)


# --------------------------------------------------------------------------- dtypes, odd arrays

def test_dtypes(backend, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NHWC", 2, 3, 4, 5, np.float32)
    assert all(a.dtype == np.float32 for a in forward(backend, x, gamma, beta, "NHWC")[:3])
    y, mean, var, cache = forward(backend, x, gamma.astype(np.float64), beta, "NHWC")
    assert y.dtype == mean.dtype == var.dtype == np.float64  # a mix computes in float64
    dx, dgamma, dbeta = fastnn.batch_norm_backward(np.ones(x.shape, np.float32), cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float64
    assert forward(backend, x.astype(np.float16), gamma, beta, "NHWC")[0].dtype == np.float32
    assert forward(backend, np.arange(40).reshape(8, 5), np.ones(5, int), np.zeros(5, bool), "dense")[0].dtype \
        == np.float64


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_odd_arrays(backend, variant, rng):
    """Odd arrays give what the same values as plain C-contiguous arrays give."""
    need(backend, *KERNELS)
    for kind in ("NHWC", "NCHW"):
        x, gamma, beta = make_case(rng, kind, 2, 3, 4, 5)
        dy = randn(rng, x.shape)
        odd_x, dtype = make_variant(variant, x)
        odd_g, _ = make_variant(variant, gamma)
        odd_dy, _ = make_variant(variant, dy)
        expect = np.dtype(dtype or np.float64)
        plain = [np.array(a, dtype=expect) for a in (odd_x, odd_g, odd_dy)]
        want = forward(backend, plain[0], plain[1], beta, kind)
        want_grads = fastnn.batch_norm_backward(plain[2], want[3])
        got = forward(backend, odd_x, odd_g, beta, kind)
        got_grads = fastnn.batch_norm_backward(odd_dy, got[3])
        for g, w in zip(list(got[:3]) + list(got_grads), list(want[:3]) + list(want_grads)):
            assert g.dtype == expect
            assert_close(g, w, what=f"{variant} {kind}")
        yi = fastnn.batch_norm_inference(odd_x, odd_g, beta, got[1], got[2], layout=layout_of(kind), **on(backend))
        assert_close(yi, want[0], what=f"{variant} {kind} inference")


def test_inputs_unchanged_and_outputs_fresh(backend, rng):
    need(backend, *KERNELS)
    for kind in LAYOUTS:
        x, gamma, beta = make_case(rng, kind, 3, 4, 5, 6)
        dy = randn(rng, x.shape)
        before = snapshot(x, gamma, beta, dy)
        y, mean, var, cache = forward(backend, x, gamma, beta, kind)
        grads = fastnn.batch_norm_backward(dy, cache)
        yi = fastnn.batch_norm_inference(x, gamma, beta, mean, var, layout=layout_of(kind), **on(backend))
        assert_unchanged(before, [x, gamma, beta, dy], kind)
        assert_fresh([y, mean, var, *grads, yi], [x, gamma, beta, dy], kind)
        # writing into the results changes no later gradient
        again = fastnn.batch_norm_backward(dy, cache)
        for out in (y, mean, var):
            out[...] = 7.0
        for a, b in zip(fastnn.batch_norm_backward(dy, cache), again):
            np.testing.assert_array_equal(a, b)


def test_gamma_updated_in_place_before_backward(backend, rng):
    """An optimizer step on gamma between forward and backward does not change dx."""
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NCHW", 3, 4, 5, 6)
    dy = randn(rng, x.shape)
    want = fastnn.batch_norm_backward(dy, forward(backend, x, gamma, beta, "NCHW")[3])
    cache = forward(backend, x, gamma, beta, "NCHW")[3]
    gamma *= 3.0
    for a, b in zip(fastnn.batch_norm_backward(dy, cache), want):
        np.testing.assert_array_equal(a, b)


def test_reference_module(rng):
    x, gamma, beta = make_case(rng, "NHWC", 2, 3, 4, 5)
    y, mean, var, cache = fastnn.reference.batch_norm_forward(x, gamma, beta)
    assert cache.backend == "reference"
    assert_close(y, numpy_batch_norm(x, gamma, beta, "NHWC")[0])


# --------------------------------------------------------------------------- NaN / Inf

@pytest.mark.parametrize("kind", ["NHWC", "NCHW", "dense"])
def test_nan_and_inf_stay_in_their_channel(backend, kind, rng):
    need(backend, *KERNELS)
    for dtype in (np.float32, np.float64):
        x, gamma, beta = make_case(rng, kind, 3, 4, 5, 4, dtype)
        xc = np.moveaxis(x, channel_axis(kind) if x.ndim == 4 else 1, 0)  # a view, channel first
        xc[1].flat[7] = np.nan
        xc[2].flat[3] = np.inf
        with np.errstate(invalid="ignore"):
            y, mean, var, cache = forward(backend, x, gamma, beta, kind)
            dx, dgamma, dbeta = fastnn.batch_norm_backward(np.ones(x.shape, dtype), cache)
        yc = np.moveaxis(y, channel_axis(kind) if x.ndim == 4 else 1, 0)
        dxc = np.moveaxis(dx, channel_axis(kind) if x.ndim == 4 else 1, 0)
        assert np.isnan(mean[1]) and np.isnan(var[1]) and np.isnan(yc[1]).all() and np.isnan(dxc[1]).all()
        assert mean[2] == np.inf and np.isnan(var[2]) and np.isnan(yc[2]).all() and np.isnan(dxc[2]).all()
        assert np.isnan(dgamma[1:3]).all()
        good = [0, 3]
        assert np.isfinite(mean[good]).all() and np.isfinite(var[good]).all()
        assert np.isfinite(yc[good]).all() and np.isfinite(dxc[good]).all() and np.isfinite(dgamma[good]).all()
        want = numpy_batch_norm(np.take(x, good, axis=channel_axis(kind) if x.ndim == 4 else 1), gamma[good],
                                beta[good], kind)[0]
        assert_close(np.take(y, good, axis=channel_axis(kind) if x.ndim == 4 else 1), want, dtype)


def test_nan_gradient_stays_in_its_channel(backend, rng):
    need(backend, *KERNELS)
    x, gamma, beta = make_case(rng, "NHWC", 3, 4, 5, 4)
    dy = randn(rng, x.shape)
    dy[1, 2, 3, 2] = np.nan
    dx, dgamma, dbeta = fastnn.batch_norm_backward(dy, forward(backend, x, gamma, beta, "NHWC")[3])
    assert np.isnan(dx[..., 2]).all() and np.isnan(dgamma[2]) and np.isnan(dbeta[2])
    assert np.isfinite(dx[..., [0, 1, 3]]).all()


# --------------------------------------------------------------------------- threads and tiers

# sizes above the kernels' serial threshold, cut into many chunks in both shapes of the work
THREAD_CASES = [("NHWC", (6, 24, 24, 16)), ("NCHW", (3, 5, 70, 65)), ("dense", (4000, 37)), ("NHWC", (40000, 1, 1, 1))]


@pytest.mark.parametrize("kind, shape", THREAD_CASES)
def test_same_bits_at_any_thread_count(compiled_backend, kind, shape, rng):
    x = (rng.standard_normal(shape) + 5.0).astype(np.float32)
    c = shape[channel_axis(kind)] if len(shape) == 4 else shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        fastnn.set_num_threads(threads)
        y, mean, var, cache = forward(compiled_backend, x, gamma, beta, kind)
        results.append([y, mean, var, *fastnn.batch_norm_backward(dy, cache),
                        fastnn.batch_norm_inference(x, gamma, beta, mean, var, layout=layout_of(kind),
                                                    **on(compiled_backend))])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert a.tobytes() == b.tobytes()


def test_every_tier(tier, rng):
    for kind, shape in (("NHWC", (3, 5, 7, 21)), ("NCHW", (2, 19, 9, 7)), ("dense", (70, 3))):
        for dtype in (np.float32, np.float64):
            c = shape[channel_axis(kind)] if len(shape) == 4 else shape[1]
            x = (rng.standard_normal(shape) + 3.0).astype(dtype)
            gamma, beta = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            got = forward("cython", x, gamma, beta, kind)
            want = forward("reference", x, gamma, beta, kind)
            for a, b in zip(list(got[:3]) + list(fastnn.batch_norm_backward(dy, got[3])),
                            list(want[:3]) + list(fastnn.batch_norm_backward(dy, want[3]))):
                assert_close(a, b, dtype, f"{tier} {kind}")
