"""linear_forward / linear_backward, activation_forward / activation_backward and
softmax on every backend: the course's values and formulas, PyTorch, numerical
gradients, bad inputs, odd arrays, NaN/Inf, threads."""
import math

import numpy as np
import pytest

import fastnn
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, integer_valued,
                     make_variant, need, nonzero, on, randn, snapshot)

LINEAR = ("linear_forward", "linear_backward")
ACT = ("activation_forward", "activation_backward")
KINDS = [None, "relu", "leaky_relu", "sigmoid", "tanh"]
KIND_IDS = ["identity", "relu", "leaky", "sigmoid", "tanh"]


# --------------------------------------------------------------------------- naive twins

def naive_act(kind, z, alpha=0.01):
    """The course's formulas, element by element in float64."""
    def one(v):
        if kind is None:
            return v
        if kind == "relu":
            return v if v > 0 or v != v else 0.0            # max(0, z), NaN kept
        if kind == "leaky_relu":
            return v if v > 0 else alpha * v                 # max(0.01 z, z) for alpha = 0.01
        if kind == "sigmoid":
            return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0
        return math.tanh(v)
    z = np.asarray(z, dtype=np.float64)
    return np.array([one(float(v)) for v in z.ravel()]).reshape(z.shape)


def naive_act_grad(kind, z, alpha=0.01):
    """g'(z): relu 1 / 0 (0 at z = 0, PyTorch's rule), leaky 1 / alpha, sigmoid a (1 - a),
    tanh 1 - a^2."""
    z = np.asarray(z, dtype=np.float64)
    a = naive_act(kind, z, alpha)
    if kind is None:
        return np.ones_like(z)
    if kind == "relu":
        return (z > 0).astype(np.float64)
    if kind == "leaky_relu":
        return np.where(z > 0, 1.0, alpha)
    if kind == "sigmoid":
        return a * (1 - a)
    return 1 - a * a


def naive_linear(x, w, b, kind, alpha=0.01):
    """y and z for x (..., n_in): z[..., o] = sum_i x[..., i] w[o, i] + b[o], by loops over o."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    z = np.zeros(x.shape[:-1] + (w.shape[0],))
    for o in range(w.shape[0]):
        z[..., o] = (x * w[o]).sum(axis=-1) + (0.0 if b is None else np.asarray(b, dtype=np.float64).ravel()[o])
    return naive_act(kind, z, alpha), z


def naive_linear_backward(dy, x, w, z, kind, alpha=0.01):
    dz = np.asarray(dy, dtype=np.float64) * naive_act_grad(kind, z, alpha)
    rows = math.prod(x.shape[:-1])
    x2 = np.asarray(x, dtype=np.float64).reshape(rows, x.shape[-1])
    dz2 = dz.reshape(rows, dz.shape[-1])
    dw = np.zeros((dz2.shape[1], x2.shape[1]))
    for r in range(x2.shape[0]):                      # dW = sum over examples of dz^T x
        dw += np.outer(dz2[r], x2[r])
    return (dz2 @ np.asarray(w, dtype=np.float64)).reshape(x.shape), dw, dz2.sum(axis=0)


# --------------------------------------------------------------------------- course values

def test_course_softmax_example(backend):
    """The course's softmax example: z = [5, 2, -1, 3], t = e^z = [148.4, 7.4, 0.4, 20.1],
    sum 176.3, a = t / 176.3 = [0.842, 0.042, 0.002, 0.114]."""
    need(backend, "softmax")
    for dtype in (np.float64, np.float32):
        p = fastnn.softmax(np.array([5, 2, -1, 3], dtype=dtype), **on(backend))
        assert p.dtype == dtype and p.shape == (4,)
        np.testing.assert_array_equal(np.round(p.astype(np.float64), 3), [0.842, 0.042, 0.002, 0.114])
        assert abs(float(p.sum()) - 1) < (1e-6 if dtype == np.float32 else 1e-15)
        # the course's column vector: softmax over its 4 rows
        col = fastnn.softmax(np.array([[5], [2], [-1], [3]], dtype=dtype), axis=0, **on(backend))
        np.testing.assert_allclose(col[:, 0], p, rtol=1e-6)


def test_course_leaky_relu_and_derivatives(backend):
    """The course's g(z) = max(0.01 z, z), g' = 0.01 for z < 0, 1 for z > 0; ReLU g' 0 / 1;
    sigmoid g' = a (1 - a); tanh g' = 1 - a^2."""
    need(backend, *ACT)
    z = np.array([-3.0, -0.5, 0.25, 2.0])
    a, cache = fastnn.activation_forward(z, "leaky_relu", **on(backend))
    np.testing.assert_array_equal(a, [-0.03, -0.005, 0.25, 2.0])
    np.testing.assert_array_equal(fastnn.activation_backward(np.ones(4), cache), [0.01, 0.01, 1, 1])
    a, cache = fastnn.activation_forward(z, "relu", **on(backend))
    np.testing.assert_array_equal(a, [0, 0, 0.25, 2.0])
    np.testing.assert_array_equal(fastnn.activation_backward(np.full(4, 3.0), cache), [0, 0, 3, 3])
    s, cache = fastnn.activation_forward(np.array([0.0]), "sigmoid", **on(backend))
    np.testing.assert_allclose(s, [0.5], rtol=1e-15)
    np.testing.assert_allclose(fastnn.activation_backward(np.ones(1), cache), [0.25], rtol=1e-15)
    t, cache = fastnn.activation_forward(np.array([0.0, 0.5]), "tanh", **on(backend))
    np.testing.assert_allclose(t, [0, math.tanh(0.5)], rtol=1e-15, atol=0)
    np.testing.assert_allclose(fastnn.activation_backward(np.ones(2), cache), [1, 1 - math.tanh(0.5) ** 2],
                               rtol=1e-14)


def test_derivative_at_zero_follows_pytorch(backend):
    """ReLU'(0) = 0 and leaky ReLU'(0) = alpha (PyTorch's rule), in both ops."""
    need(backend, *ACT, *LINEAR)
    z = np.zeros(5)
    for kind, want in (("relu", 0.0), ("leaky_relu", 0.3)):
        a, cache = fastnn.activation_forward(z, kind, alpha=0.3, **on(backend))
        np.testing.assert_array_equal(a, 0)
        np.testing.assert_array_equal(fastnn.activation_backward(np.ones(5), cache), want)
        # z = x @ w.T + b = 0 exactly
        y, cache = fastnn.linear_forward(np.ones((2, 3)), np.zeros((5, 3)), np.zeros(5), activation=kind, alpha=0.3,
                                         **on(backend))
        dx, dw, db = fastnn.linear_backward(np.ones((2, 5)), cache)
        np.testing.assert_array_equal(db, 2 * want)


def test_course_linear_layer_by_hand(backend):
    """Z = W A + b for the course's column layout is x @ W.T + b batch-major: a small case
    worked out by hand, with b of the course's shape (n_out, 1)."""
    need(backend, *LINEAR)
    W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])      # (n^[l], n^[l-1]) = (2, 3)
    b = np.array([[0.5], [-4.0]])                            # (n^[l], 1)
    A_prev = np.array([[2.0, 1.0], [1.0, 0.0], [4.0, -2.0]])  # (n^[l-1], m) = (3, 2), examples as columns
    y, cache = fastnn.linear_forward(A_prev.T, W, b, activation="relu", **on(backend))
    # example 1: [2 - 2 + 2 + 0.5, 0 + 3 - 4 - 4] = [2.5, -5]; example 2: [1 - 0 - 1 + 0.5, 0 + 0 + 2 - 4] = [0.5, -2]
    np.testing.assert_array_equal(y, [[2.5, 0.0], [0.5, 0.0]])
    dx, dw, db = fastnn.linear_backward(np.ones((2, 2)), cache)
    assert db.shape == (2, 1)
    np.testing.assert_array_equal(db, [[2.0], [0.0]])
    np.testing.assert_array_equal(dw, [[3.0, 1.0, 2.0], [0.0, 0.0, 0.0]])   # sum over examples of dz x
    np.testing.assert_array_equal(dx, [[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]])


# --------------------------------------------------------------------------- against naive and reference

LINEAR_SHAPES = [
    pytest.param((5, 4), 3, id="2d"),
    pytest.param((4,), 3, id="1d-x"),
    pytest.param((2, 3, 7), 5, id="3d-x"),
    pytest.param((1, 1), 1, id="1x1"),
    pytest.param((7, 33), 17, id="odd"),
    pytest.param((13, 9), 70, id="wide-partial-panel"),
    pytest.param((3, 0), 4, id="n_in-0"),
    pytest.param((0, 4), 3, id="N0"),
    pytest.param((2, 0, 4), 3, id="N0-3d"),
    pytest.param((3, 4), 0, id="n_out-0"),
]


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("x_shape, n_out", LINEAR_SHAPES)
def test_linear_matches_naive(backend, x_shape, n_out, dtype, kind, rng):
    need(backend, *LINEAR)
    x, w, b = randn(rng, x_shape, dtype), randn(rng, (n_out, x_shape[-1]), dtype), nonzero(rng, (n_out,), dtype)
    dy = randn(rng, x_shape[:-1] + (n_out,), dtype)
    before = snapshot(x, w, b, dy)
    y, cache = fastnn.linear_forward(x, w, b, activation=kind, alpha=0.05, **on(backend))
    want_y, z = naive_linear(x, w, b, kind, 0.05)
    assert y.shape == want_y.shape and y.dtype == dtype
    assert_close(y, want_y, dtype, "y")
    dx, dw, db = fastnn.linear_backward(dy, cache)
    want = naive_linear_backward(dy, x, w, z, kind, 0.05)
    for name, got, exp, shape in zip(("dx", "dw", "db"), (dx, dw, db), want, (x.shape, w.shape, b.shape)):
        assert got.shape == shape and got.dtype == dtype, name
        assert_close(got, exp, dtype, name)
    assert_unchanged(before, (x, w, b, dy), "linear")
    assert_fresh((y, dx, dw, db), (x, w, b, dy), "linear")


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_linear_without_bias(backend, kind, rng):
    need(backend, *LINEAR)
    x, w = randn(rng, (6, 5)), randn(rng, (4, 5))
    y, cache = fastnn.linear_forward(x, w, activation=kind, **on(backend))
    want_y, z = naive_linear(x, w, None, kind)
    assert_close(y, want_y)
    dy = randn(rng, y.shape)
    dx, dw, db = fastnn.linear_backward(dy, cache)
    assert db is None
    want_dx, want_dw, _ = naive_linear_backward(dy, x, w, z, kind)
    assert_close(dx, want_dx)
    assert_close(dw, want_dw)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 0, 3), (), (2, 3, 65)], ids=["1d", "2d", "empty", "0d", "3d"])
def test_activation_matches_naive(backend, shape, dtype, kind, rng):
    need(backend, *ACT)
    z, da = randn(rng, shape, dtype) * 3, randn(rng, shape, dtype)
    before = snapshot(z, da)
    a, cache = fastnn.activation_forward(z, kind, alpha=0.2, **on(backend))
    assert a.shape == z.shape and a.dtype == dtype
    assert_close(a, naive_act(kind, z, 0.2), dtype, "a")
    dz = fastnn.activation_backward(da, cache)
    assert dz.shape == z.shape and dz.dtype == dtype
    assert_close(dz, da.astype(np.float64) * naive_act_grad(kind, z, 0.2), dtype, "dz")
    assert_unchanged(before, (z, da), "activation")
    assert_fresh((a, dz), (z, da), "activation")


def test_activation_none_is_identity(backend, rng):
    """kind=None: a is a copy of z (not z itself) and dz a copy of da, as linear's
    activation=None adds no activation."""
    need(backend, *ACT)
    z = randn(rng, (3, 4))
    a, cache = fastnn.activation_forward(z, None, **on(backend))
    np.testing.assert_array_equal(a, z)
    assert not np.shares_memory(a, z)
    da = randn(rng, (3, 4))
    dz = fastnn.activation_backward(da, cache)
    np.testing.assert_array_equal(dz, da)
    assert not np.shares_memory(dz, da)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, axis", [((4,), -1), ((3, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((2, 1, 6), 1),
                                         ((0, 5), -1), ((3, 0), 0), ((2, 3, 70), -1)])
def test_softmax_matches_naive(backend, shape, axis, dtype, rng):
    need(backend, "softmax")
    z = randn(rng, shape, dtype) * 4
    before = snapshot(z)
    p = fastnn.softmax(z, axis=axis, **on(backend))
    z64 = z.astype(np.float64)
    want = np.exp(z64 - z64.max(axis=axis, keepdims=True)) if z.size else z64
    want = want / want.sum(axis=axis, keepdims=True) if z.size else want
    assert p.shape == z.shape and p.dtype == dtype and p.flags.c_contiguous
    assert_close(p, want, dtype, "p")
    assert_close(fastnn.reference.softmax(z, axis=axis), want, dtype, "reference")
    assert_unchanged(before, (z,), "softmax")
    assert_fresh((p,), (z,), "softmax")


def test_softmax_is_stable(backend):
    """Subtracting the maximum: logits of 1000 (e^1000 overflows) and -1000 work, and a
    shift of every logit changes nothing."""
    need(backend, "softmax")
    for dtype in (np.float64, np.float32):
        z = np.array([[1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1010.0], [0.0, -1.0, -10.0]], dtype=dtype)
        p = fastnn.softmax(z, **on(backend))
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p[0], p[2], rtol=1e-5)
        np.testing.assert_allclose(p[1], p[2], rtol=1e-5)
        e = np.exp([0.0, -1.0, -10.0])
        np.testing.assert_allclose(p[2], e / e.sum(), rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_softmax_nan_and_infinities(backend):
    need(backend, "softmax")
    z = np.array([[0.0, -np.inf, 1.0], [np.nan, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [np.inf, 0.0, 1.0]])
    with np.errstate(invalid="ignore"):
        p = fastnn.softmax(z, **on(backend))
    e = np.exp([-1.0, 0.0])
    np.testing.assert_allclose(p[0], [e[0] / e.sum(), 0.0, e[1] / e.sum()], rtol=1e-14)
    assert p[0, 1] == 0.0                  # exp(-inf) is exactly 0
    assert np.isnan(p[1]).all()            # a NaN logit: the whole row is NaN
    assert np.isnan(p[2]).all()            # -inf - (-inf)
    assert np.isnan(p[3, 0])               # inf - inf


# --------------------------------------------------------------------------- PyTorch

TORCH_ACT = {None: lambda F, z, alpha: z, "relu": lambda F, z, alpha: F.relu(z),
             "leaky_relu": lambda F, z, alpha: F.leaky_relu(z, alpha),
             "sigmoid": lambda F, z, alpha: F.sigmoid(z), "tanh": lambda F, z, alpha: F.tanh(z)}


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("x_shape, n_out, bias", [
    ((9, 7), 6, True), ((3, 5, 11), 13, False), ((1, 130), 67, True), ((37, 65), 129, True), ((5,), 1, True)],
    ids=["2d", "3d-nobias", "row", "panels", "1d"])
def test_linear_against_torch(backend, x_shape, n_out, bias, dtype, kind, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    need(backend, *LINEAR)
    x, w = randn(rng, x_shape, dtype), (randn(rng, (n_out, x_shape[-1])) / np.sqrt(x_shape[-1])).astype(dtype)
    b = nonzero(rng, (n_out,), dtype) if bias else None
    dy = randn(rng, x_shape[:-1] + (n_out,), dtype)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    ty = TORCH_ACT[kind](F, F.linear(tx, tw, tb), 0.07)
    ty.backward(torch.tensor(dy))
    y, cache = fastnn.linear_forward(x, w, b, activation=kind, alpha=0.07, **on(backend))
    dx, dw, db = fastnn.linear_backward(dy, cache)
    assert_close(y, ty.detach().numpy(), dtype, "y")
    assert_close(dx, tx.grad.numpy(), dtype, "dx")
    assert_close(dw, tw.grad.numpy(), dtype, "dw")
    if bias:
        assert_close(db, tb.grad.numpy(), dtype, "db")


@pytest.mark.parametrize("kind", KINDS[1:], ids=KIND_IDS[1:])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_activation_against_torch(backend, kind, dtype, rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    need(backend, *ACT)
    z, da = randn(rng, (7, 3, 19), dtype) * 4, randn(rng, (7, 3, 19), dtype)
    tz = torch.tensor(z, requires_grad=True)
    ta = TORCH_ACT[kind](F, tz, 0.02)
    ta.backward(torch.tensor(da))
    a, cache = fastnn.activation_forward(z, kind, alpha=0.02, **on(backend))
    assert_close(a, ta.detach().numpy(), dtype, "a")
    assert_close(fastnn.activation_backward(da, cache), tz.grad.numpy(), dtype, "dz")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, axis", [((6, 10), -1), ((4, 3, 5), 1), ((3, 1000), -1), ((2, 9), 0)])
def test_softmax_against_torch(backend, shape, axis, dtype, rng):
    torch = pytest.importorskip("torch")
    need(backend, "softmax")
    z = randn(rng, shape, dtype) * 6
    assert_close(fastnn.softmax(z, axis, **on(backend)), torch.softmax(torch.tensor(z), axis).numpy(), dtype)


# --------------------------------------------------------------------------- numerical gradients

@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("x_shape, b_shape", [((4, 3), (5,)), ((2, 3, 3), (5, 1)), ((3,), None)],
                         ids=["2d", "3d-course-bias", "1d-nobias"])
def test_linear_gradient_check(backend, kind, x_shape, b_shape, rng):
    need(backend, *LINEAR)
    x, w = randn(rng, x_shape), randn(rng, (5, x_shape[-1]))
    b = None if b_shape is None else nonzero(rng, b_shape)
    weights = randn(rng, x_shape[:-1] + (5,))

    def loss():
        return float(np.sum(fastnn.linear_forward(x, w, b, activation=kind, alpha=0.1, **on(backend))[0] * weights))

    _, cache = fastnn.linear_forward(x, w, b, activation=kind, alpha=0.1, **on(backend))
    dx, dw, db = fastnn.linear_backward(weights, cache)
    arrays, grads = {"x": x, "w": w}, {"x": dx, "w": dw}
    if b is not None:
        arrays["b"], grads["b"] = b, db
    check_gradients(loss, arrays, grads)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_activation_gradient_check(backend, kind, rng):
    need(backend, *ACT)
    z = randn(rng, (3, 5)) * 2
    weights = randn(rng, z.shape)

    def loss():
        return float(np.sum(fastnn.activation_forward(z, kind, alpha=0.3, **on(backend))[0] * weights))

    dz = fastnn.activation_backward(weights, fastnn.activation_forward(z, kind, alpha=0.3, **on(backend))[1])
    check_gradients(loss, {"z": z}, {"z": dz})


def test_softmax_gradient_through_torch_jacobian(backend, rng):
    """softmax has no backward of its own; its values are the ones whose Jacobian
    diag(p) - p p^T the loss ops use: check p against that identity numerically."""
    need(backend, "softmax")
    z = randn(rng, (6,))
    p = fastnn.softmax(z, **on(backend))
    eps = 1e-6
    jac = np.empty((6, 6))
    for i in range(6):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        jac[:, i] = (fastnn.softmax(zp, **on(backend)) - fastnn.softmax(zm, **on(backend))) / (2 * eps)
    assert np.abs(jac - (np.diag(p) - np.outer(p, p))).max() < 1e-8


# --------------------------------------------------------------------------- dtypes and odd arrays

@pytest.mark.parametrize("x_dtype, w_dtype, expected", [
    (np.float32, np.float32, np.float32), (np.float32, np.float64, np.float64), (np.int64, np.float32, np.float64),
    (np.int32, np.int64, np.float64), (np.bool_, np.bool_, np.float64), (np.float16, np.float16, np.float32)])
def test_linear_dtype_rules(backend, x_dtype, w_dtype, expected, rng):
    need(backend, *LINEAR, *ACT, "softmax")
    x = integer_valued(rng, (3, 4), 0, 2).astype(x_dtype)
    w = integer_valued(rng, (2, 4), 0, 2).astype(w_dtype)
    y, cache = fastnn.linear_forward(x, w, np.ones(2, dtype=x_dtype), activation="relu", **on(backend))
    assert y.dtype == expected
    np.testing.assert_array_equal(y, x.astype(np.float64) @ w.astype(np.float64).T + 1)
    assert all(g.dtype == expected for g in fastnn.linear_backward(np.ones((3, 2)), cache))
    alone = np.float32 if x_dtype in (np.float32, np.float16) else np.float64   # x's dtype on its own
    a, cache = fastnn.activation_forward(x, "tanh", **on(backend))
    assert a.dtype == alone
    assert fastnn.activation_backward(np.ones((3, 4), dtype=np.float64), cache).dtype == alone
    assert fastnn.softmax(x, **on(backend)).dtype == alone


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("which", ["x", "w", "b", "dy"])
def test_linear_odd_inputs(backend, which, variant, rng):
    """Non-contiguous, transposed, Fortran, read-only, byte-swapped, lists and ints:
    integer data, so every product and sum is exact."""
    need(backend, *LINEAR)
    args = {"x": integer_valued(rng, (2, 3, 5)), "w": integer_valued(rng, (4, 5)), "b": integer_valued(rng, (4,)),
            "dy": integer_valued(rng, (2, 3, 4))}
    want_y, z = naive_linear(args["x"], args["w"], args["b"], "leaky_relu", 0.5)
    want = naive_linear_backward(args["dy"], args["x"], args["w"], z, "leaky_relu", 0.5)
    args[which], _ = make_variant(variant, args[which])
    before = snapshot(*args.values())
    y, cache = fastnn.linear_forward(args["x"], args["w"], args["b"], activation="leaky_relu", alpha=0.5,
                                     **on(backend))
    grads = fastnn.linear_backward(args["dy"], cache)
    np.testing.assert_array_equal(y, want_y)
    for got, exp in zip(grads, want):
        np.testing.assert_array_equal(got, exp)
    assert_unchanged(before, list(args.values()), f"linear with {variant} {which}")
    assert_fresh((y,) + tuple(grads), [v for v in args.values() if isinstance(v, np.ndarray)], "linear")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_activation_and_softmax_odd_inputs(backend, variant, rng):
    need(backend, *ACT, "softmax")
    z = integer_valued(rng, (3, 4))
    want_a = naive_act("relu", z)
    want_p = np.exp(z - z.max(axis=0)) / np.exp(z - z.max(axis=0)).sum(axis=0)
    odd, _ = make_variant(variant, z)
    before = snapshot(odd)
    a, cache = fastnn.activation_forward(odd, "relu", **on(backend))
    np.testing.assert_array_equal(a, want_a)
    np.testing.assert_array_equal(fastnn.activation_backward(make_variant(variant, np.ones((3, 4)))[0], cache),
                                  (z > 0).astype(float))
    assert_close(fastnn.softmax(odd, axis=0, **on(backend)), want_p)
    assert_unchanged(before, (odd,), f"activation with {variant}")


def test_outputs_do_not_alias_the_cache(backend, rng):
    """Writing into y, a or the inputs' copies after the forward pass changes no gradient."""
    need(backend, *LINEAR, *ACT)
    x, w, b = randn(rng, (5, 4)), randn(rng, (3, 4)), nonzero(rng, (3,))
    dy = randn(rng, (5, 3))
    for kind in KINDS:
        y, cache = fastnn.linear_forward(x, w, b, activation=kind, **on(backend))
        want = fastnn.linear_backward(dy, cache)
        y[...] = 7.0
        for g, e in zip(fastnn.linear_backward(dy, cache), want):
            np.testing.assert_array_equal(g, e)
        a, cache = fastnn.activation_forward(x, kind, **on(backend))
        want_dz = fastnn.activation_backward(dy[:, :1] * np.ones((5, 4)), cache)
        a[...] = -7.0
        np.testing.assert_array_equal(fastnn.activation_backward(dy[:, :1] * np.ones((5, 4)), cache), want_dz)


# --------------------------------------------------------------------------- NaN and Inf

def test_linear_nan_inf_propagate(backend, rng):
    need(backend, *LINEAR)
    x, w, b = randn(rng, (4, 3)), randn(rng, (5, 3)), nonzero(rng, (5,))
    x[1, 0] = np.nan
    x[2, 2] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        for kind in ("relu", "sigmoid", "tanh"):
            y, cache = fastnn.linear_forward(x, w, b, activation=kind, **on(backend))
            assert np.isnan(y[1]).all()                       # NaN z: relu, sigmoid, tanh of NaN are NaN
            assert np.isfinite(y[[0, 3]]).all()
            assert not np.isnan(y[2]).any()                   # +-inf z: relu inf or 0, sigmoid 0 / 1, tanh -1 / 1
            if kind == "tanh":
                np.testing.assert_array_equal(np.abs(y[2]), 1.0)
            dx, dw, db = fastnn.linear_backward(np.ones((4, 5)), cache)
            # relu'(NaN) is 0 (NaN > 0 fails): row 1 adds nothing to db; sigmoid' and tanh' of NaN are NaN
            assert np.isfinite(db).all() if kind == "relu" else np.isnan(db).all()
            assert np.isfinite(dx[[0, 3]]).all()
            assert np.isnan(dw).any()                         # x's NaN reaches dW = dz^T x


def test_activation_special_values(backend):
    need(backend, *ACT)
    z = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 50.0, -50.0, 800.0, -800.0])
    with np.errstate(all="ignore"):
        relu = fastnn.activation_forward(z, "relu", **on(backend))[0]
        np.testing.assert_array_equal(relu, [np.nan, np.inf, 0, 0, 0, 50, 0, 800, 0])
        leaky, cache = fastnn.activation_forward(z, "leaky_relu", alpha=0.5, **on(backend))
        np.testing.assert_array_equal(leaky, [np.nan, np.inf, -np.inf, 0, 0, 50, -25, 800, -400])
        np.testing.assert_array_equal(fastnn.activation_backward(np.ones(9), cache),
                                      [0.5, 1, 0.5, 0.5, 0.5, 1, 0.5, 1, 0.5])
        sig = fastnn.activation_forward(z, "sigmoid", **on(backend))[0]
        assert np.isnan(sig[0]) and sig[1] == 1.0 and sig[7] == 1.0
        assert 0 <= sig[2] < 1e-300 and 0 <= sig[8] < 1e-300
        tanh = fastnn.activation_forward(z, "tanh", **on(backend))[0]
        assert np.isnan(tanh[0])
        np.testing.assert_array_equal(tanh[1:], [1, -1, 0, 0, 1, -1, 1, -1])
        # 0 * inf in dz = da * g'(z) is NaN, as the formula says
        _, cache = fastnn.activation_forward(np.array([-1.0, 1.0]), "relu", **on(backend))
        dz = fastnn.activation_backward(np.array([np.inf, np.nan]), cache)
        assert np.isnan(dz).all()


# --------------------------------------------------------------------------- threads and paths

PATH_SHAPES = [
    pytest.param(1, 300, 150, id="row"),                 # the matrix-vector kernel
    pytest.param(61, 70, 40, id="one-panel"),             # fewer panels than threads: rows split
    pytest.param(131, 97, 203, id="panels"),              # panel tasks, partial panels
    pytest.param(700, 450, 30, id="row-blocks"),          # x beyond the cached size: blocks of rows
    pytest.param(620, 40, 560, id="dw-chunks"),           # dz^T beyond the cached size: chunked dW
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("M, K, N", PATH_SHAPES)
def test_linear_same_bits_on_1_and_2_threads(compiled_backend, M, K, N, dtype, rng):
    need(compiled_backend, *LINEAR)
    x, w, b = randn(rng, (M, K), dtype), randn(rng, (N, K), dtype), nonzero(rng, (N,), dtype)
    dy = randn(rng, (M, N), dtype)
    results = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        y, cache = fastnn.linear_forward(x, w, b, activation="sigmoid", **on(compiled_backend))
        results.append((y,) + fastnn.linear_backward(dy, cache))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    y_ref, cache_ref = fastnn.reference.linear_forward(x, w, b, activation="sigmoid")
    for got, want in zip(results[0], (y_ref,) + fastnn.reference.linear_backward(dy, cache_ref)):
        assert_close(got, want, dtype)


def test_elementwise_same_bits_on_1_and_2_threads(compiled_backend, rng):
    need(compiled_backend, *ACT, "softmax")
    z, da = randn(rng, (300, 700)), randn(rng, (300, 700))
    results = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        out = [fastnn.softmax(z, **on(compiled_backend)), fastnn.softmax(z, axis=0, **on(compiled_backend))]
        for kind in KINDS:
            a, cache = fastnn.activation_forward(z, kind, **on(compiled_backend))
            out += [a, fastnn.activation_backward(da, cache)]
        results.append(out)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_linear_repeatable(backend, rng):
    need(backend, *LINEAR)
    x, w, b = randn(rng, (40, 30)), randn(rng, (20, 30)), nonzero(rng, (20,))
    first = fastnn.linear_forward(x, w, b, activation="tanh", **on(backend))
    second = fastnn.linear_forward(x, w, b, activation="tanh", **on(backend))
    np.testing.assert_array_equal(first[0], second[0])
    dy = randn(rng, (40, 20))
    for g1, g2 in zip(fastnn.linear_backward(dy, first[1]), fastnn.linear_backward(dy, second[1])):
        np.testing.assert_array_equal(g1, g2)


# --------------------------------------------------------------------------- errors

def _raises(exc, fn, fragments, call):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert fn in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("x_shape, w_shape, b_shape, fragments", [
    pytest.param((), (3, 4), None, ["x", "()"], id="0d-x"),
    pytest.param((2, 4), (3,), None, ["w", "(3,)", "(n_out, n_in)"], id="1d-w"),
    pytest.param((2, 4), (3, 4, 1), None, ["w", "(3, 4, 1)"], id="3d-w"),
    pytest.param((2, 5), (3, 4), None, ["x", "5", "(2, 5)", "(3, 4)", "n_in = 4"], id="n_in-mismatch"),
    pytest.param((2, 4), (3, 4), (4,), ["b", "3", "(4,)"], id="b-size"),
    pytest.param((2, 4), (3, 4), (3, 2), ["b", "(3, 2)"], id="b-2d-size"),
])
def test_linear_bad_shapes(x_shape, w_shape, b_shape, fragments):
    b = None if b_shape is None else np.zeros(b_shape)
    _raises(ValueError, "linear_forward", fragments, lambda: fastnn.linear_forward(np.zeros(x_shape), np.zeros(w_shape), b))


@pytest.mark.parametrize("options, fragments", [
    (dict(activation="gelu"), ["activation", "'gelu'", "relu"]),
    (dict(activation=1), ["activation", "1"]),
    (dict(activation="ReLU"), ["activation", "'ReLU'"]),
    (dict(alpha=float("nan")), ["alpha", "nan"]),
    (dict(alpha=float("inf")), ["alpha", "inf"]),
    (dict(alpha="0.1"), ["alpha", "'0.1'"]),
    (dict(alpha=True), ["alpha", "True"]),
    (dict(backend="blas"), ["backend", "'blas'", "reference"]),
])
def test_linear_bad_options(options, fragments):
    _raises(ValueError, "linear_forward", fragments,
            lambda: fastnn.linear_forward(np.zeros((2, 3)), np.zeros((4, 3)), **options))


def test_linear_bad_types():
    good = np.zeros((2, 3))
    for bad in (good.astype(complex), good.astype(object), np.full((2, 3), "s")):
        _raises(TypeError, "linear_forward", ["x"], lambda: fastnn.linear_forward(bad, np.zeros((4, 3))))
        _raises(TypeError, "linear_forward", ["w"], lambda: fastnn.linear_forward(np.zeros((2, 4)), bad))
        _raises(TypeError, "linear_forward", ["b"], lambda: fastnn.linear_forward(good, np.zeros((2, 3)), bad[0, :2]))


def test_linear_backward_bad_arguments(rng):
    y, cache = fastnn.linear_forward(randn(rng, (2, 3, 4)), randn(rng, (5, 4)), activation="relu")
    for bad in (np.zeros((2, 3, 4)), np.zeros((6, 5)), np.zeros((2, 3, 5, 1))):
        _raises(ValueError, "linear_backward", ["dy", "(2, 3, 5)", str(bad.shape)],
                lambda: fastnn.linear_backward(bad, cache))
    _raises(TypeError, "linear_backward", ["dy"], lambda: fastnn.linear_backward(np.zeros(y.shape, complex), cache))
    _, act_cache = fastnn.activation_forward(np.zeros(3), "relu")
    for bad_cache in (None, (1, 2), act_cache):
        _raises(TypeError, "linear_backward", ["cache", "linear_forward"],
                lambda: fastnn.linear_backward(np.zeros(y.shape), bad_cache))


def test_activation_bad_arguments(rng):
    z = randn(rng, (3, 2))
    _raises(ValueError, "activation_forward", ["kind", "'softplus'"],
            lambda: fastnn.activation_forward(z, "softplus"))
    _raises(ValueError, "activation_forward", ["alpha", "nan"],
            lambda: fastnn.activation_forward(z, "leaky_relu", alpha=float("nan")))
    _raises(TypeError, "activation_forward", ["z"], lambda: fastnn.activation_forward(z.astype(complex), "relu"))
    _raises(ValueError, "activation_forward", ["backend"], lambda: fastnn.activation_forward(z, "relu", backend="x"))
    with pytest.raises(TypeError):
        fastnn.activation_forward(z)                                 # kind is required (None for the identity)
    _, cache = fastnn.activation_forward(z, "tanh")
    _raises(ValueError, "activation_backward", ["da", "(3, 2)", "(2, 3)"],
            lambda: fastnn.activation_backward(np.zeros((2, 3)), cache))
    _, lin_cache = fastnn.linear_forward(z, np.zeros((1, 2)))
    _raises(TypeError, "activation_backward", ["cache", "activation_forward"],
            lambda: fastnn.activation_backward(np.zeros((3, 2)), lin_cache))


def test_softmax_bad_arguments(rng):
    z = randn(rng, (3, 2))
    for axis in (2, -3):
        _raises(ValueError, "softmax", ["axis", str(axis), "(3, 2)"], lambda: fastnn.softmax(z, axis))
    for axis in (1.0, "1", None, True):
        _raises(ValueError, "softmax", ["axis", repr(axis)], lambda: fastnn.softmax(z, axis))
    _raises(ValueError, "softmax", ["axis", "()"], lambda: fastnn.softmax(np.float64(3.0)))
    _raises(TypeError, "softmax", ["z"], lambda: fastnn.softmax(z.astype(complex)))
    _raises(ValueError, "softmax", ["backend"], lambda: fastnn.softmax(z, backend="gpu"))


def test_signatures():
    """The contract's positional parameters, and keyword-only options."""
    import inspect
    sig = inspect.signature(fastnn.linear_forward)
    assert list(sig.parameters)[:3] == ["x", "w", "b"]
    assert all(sig.parameters[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("activation", "alpha", "backend"))
    assert sig.parameters["activation"].default is None and sig.parameters["alpha"].default == 0.01
    assert list(inspect.signature(fastnn.linear_backward).parameters) == ["dy", "cache"]
    sig = inspect.signature(fastnn.activation_forward)
    assert list(sig.parameters)[:2] == ["z", "kind"]
    assert list(inspect.signature(fastnn.activation_backward).parameters) == ["da", "cache"]
    sig = inspect.signature(fastnn.softmax)
    assert list(sig.parameters)[:2] == ["z", "axis"] and sig.parameters["axis"].default == -1
    for name in ("linear_forward", "linear_backward", "activation_forward", "activation_backward", "softmax"):
        assert name in fastnn.__all__ and hasattr(fastnn.reference, name)
    assert "backend" not in inspect.signature(fastnn.reference.linear_forward).parameters


@pytest.mark.parametrize("shape, axis", [((0,), 0), ((3, 0), -1), ((0, 4), 0), ((0, 4), 1), ((2, 0, 3), 1)])
def test_softmax_of_an_empty_array_is_empty(backend, shape, axis):
    p = fastnn.softmax(np.ones(shape, np.float32), axis=axis, backend=backend)
    assert p.shape == shape and p.dtype == np.float32
