"""softmax_cross_entropy_* / sigmoid_cross_entropy_* on every backend, and the vector
log / log1p of fn_math.h they use."""
import math

import numpy as np
import pytest

import fastnn
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, make_variant, need,
                     randn, snapshot)
from optable import OPS as OP_TABLE

SOFTMAX = ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward")
SIGMOID = ("sigmoid_cross_entropy_forward", "sigmoid_cross_entropy_backward")
REDUCTIONS = ("mean", "sum", "none")


def softmax(x, t, reduction="mean", backend=None, dloss=1.0):
    loss, cache = fastnn.softmax_cross_entropy_forward(x, t, reduction=reduction, backend=backend)
    return loss, fastnn.softmax_cross_entropy_backward(cache, dloss)


def sigmoid(x, t, reduction="mean", backend=None, dloss=1.0):
    loss, cache = fastnn.sigmoid_cross_entropy_forward(x, t, reduction=reduction, backend=backend)
    return loss, fastnn.sigmoid_cross_entropy_backward(cache, dloss)


def probabilities(rng, shape, dtype=np.float64):
    p = rng.uniform(0.05, 1.0, shape)
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


# --------------------------------------------------------------------------- the course's values

# The notes' softmax example: z = [5, 2, -1, 3] gives a = [0.842, 0.042, 0.002, 0.114]
# (printed to three decimals), and dz = ŷ - y.
COURSE_Z = [5.0, 2.0, -1.0, 3.0]
COURSE_A = [0.842, 0.042, 0.002, 0.114]


@pytest.mark.parametrize("cls", range(4))
def test_course_softmax_example(backend, cls):
    need(backend, *SOFTMAX)
    loss, dz = softmax(np.array([COURSE_Z]), np.array([cls]), backend=backend)
    assert abs(math.exp(-float(loss)) - COURSE_A[cls]) < 5e-4  # the loss is -log ŷ_cls
    want = np.array(COURSE_A)
    want[cls] -= 1
    np.testing.assert_allclose(dz[0], want, atol=5e-4)


def test_course_loss_of_one_example(backend):
    """The notes' y = [0, 1, 0, 0] against ŷ = [0.3, 0.2, 0.1, 0.4]: L = -log 0.2, as an
    index and as a one-hot row; logits log ŷ (softmax(log ŷ) = ŷ)."""
    need(backend, *SOFTMAX)
    z = np.log([[0.3, 0.2, 0.1, 0.4]])
    for target in (np.array([1]), np.array([[0.0, 1.0, 0.0, 0.0]])):
        loss, dz = softmax(z, target, backend=backend)
        assert abs(float(loss) - 1.6094379124341003) < 1e-12
        np.testing.assert_allclose(dz, [[0.3, -0.8, 0.1, 0.4]], atol=1e-12)


def test_course_cost_is_the_mean_over_examples(backend, rng):
    """J = 1/m sum L(ŷ^(i), y^(i)); "sum" is m J, "none" the L(ŷ^(i), y^(i))."""
    need(backend, *SOFTMAX)
    z = randn(rng, (6, 4))
    y = rng.integers(0, 4, 6)
    each = fastnn.softmax_cross_entropy_forward(z, y, reduction="none", backend=backend)[0]
    # -log softmax by hand, in float64
    want = [-(z[i, y[i]] - math.log(sum(math.exp(v) for v in z[i]))) for i in range(6)]
    np.testing.assert_allclose(each, want, rtol=1e-12)
    assert abs(float(fastnn.softmax_cross_entropy_forward(z, y, backend=backend)[0]) - sum(want) / 6) < 1e-12
    assert abs(float(fastnn.softmax_cross_entropy_forward(z, y, reduction="sum", backend=backend)[0])
               - sum(want)) < 1e-12


def test_course_logistic_loss(backend):
    """L(a, y) = -(y log a + (1 - y) log(1 - a)), a = σ(z); dz = a - y."""
    need(backend, *SIGMOID)
    z = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    y = np.array([1.0, 0.0, 1.0, 0.25, 0.0])
    loss, dz = sigmoid(z, y, reduction="none", backend=backend)
    a = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(loss, -(y * np.log(a) + (1 - y) * np.log(1 - a)), rtol=1e-13)
    np.testing.assert_allclose(dz, a - y, rtol=1e-13, atol=1e-16)
    assert abs(float(loss[2]) - math.log(2)) < 1e-15  # z = 0, y = 1: -log(1/2)


# --------------------------------------------------------------------------- the op table's entries

@pytest.mark.parametrize("name", ["softmax_xent", "softmax_xent_prob", "sigmoid_xent"])
@pytest.mark.parametrize("size", ["small", "empty", "ones"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_op_table_entries_match_reference(name, size, dtype, backend):
    op = OP_TABLE[name]
    need(backend, *op.kernels)
    inputs, outputs = op.run(backend, size, dtype=dtype)
    _, want = op.run("reference", size, dtype=dtype)
    assert len(outputs) == len(want) == 2
    for got, ref in zip(outputs, want):
        assert isinstance(got, np.ndarray) and got.dtype == dtype
        assert_close(got, ref, dtype, f"{name} {size}")
    assert_fresh(outputs, inputs, name)


@pytest.mark.parametrize("name", ["softmax_xent", "softmax_xent_prob", "sigmoid_xent"])
def test_op_table_gradchecks(name, backend):
    op = OP_TABLE[name]
    need(backend, *op.kernels)
    loss, arrays, analytic = op.gradcheck(backend, np.random.default_rng(3))
    check_gradients(loss, arrays, analytic)


# --------------------------------------------------------------------------- PyTorch

SOFTMAX_SHAPES = [(1, 1), (3, 7), (5,), (2, 3, 5), (17, 33), (4, 1), (9, 130)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_softmax_against_torch(backend, shape, dtype, kind, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    need(backend, *SOFTMAX)
    x = randn(rng, shape, dtype) * 3
    t = rng.integers(0, shape[-1], shape[:-1]) if kind == "index" else probabilities(rng, shape, dtype)
    # torch takes the class axis second: (N, C, d1, ...)
    xt = torch.tensor(np.moveaxis(x, -1, 1) if x.ndim > 2 else x, requires_grad=True)
    tt = torch.tensor(np.moveaxis(t, -1, 1) if kind == "prob" and t.ndim > 2 else t)
    for reduction in REDUCTIONS:
        loss, cache = fastnn.softmax_cross_entropy_forward(x, t, reduction=reduction, backend=backend)
        dloss = randn(rng, loss.shape, dtype)
        dx = fastnn.softmax_cross_entropy_backward(cache, dloss)
        xt.grad = None
        lt = F.cross_entropy(xt, tt, reduction=reduction)
        lt.backward(torch.tensor(dloss))
        assert loss.dtype == dx.dtype == dtype and loss.shape == tuple(lt.shape)
        assert_close(loss, lt.detach().numpy(), dtype, f"loss {reduction}")
        grad = xt.grad.numpy()
        assert_close(dx, np.moveaxis(grad, 1, -1) if x.ndim > 2 else grad, dtype, f"dlogits {reduction}")


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 4), (33, 65), ()], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_sigmoid_against_torch(backend, shape, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    need(backend, *SIGMOID)
    x = (randn(rng, shape) * 5).astype(dtype)
    t = rng.uniform(0, 1, shape).astype(dtype)
    t.ravel()[::3] = np.round(t.ravel()[::3])  # some hard 0/1 labels too
    xt = torch.tensor(x, requires_grad=True)
    for reduction in REDUCTIONS:
        loss, cache = fastnn.sigmoid_cross_entropy_forward(x, t, reduction=reduction, backend=backend)
        dloss = randn(rng, loss.shape, dtype)
        dx = fastnn.sigmoid_cross_entropy_backward(cache, dloss)
        xt.grad = None
        lt = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), reduction=reduction)
        lt.backward(torch.tensor(dloss))
        assert loss.dtype == dx.dtype == dtype and loss.shape == tuple(lt.shape) and dx.shape == shape
        assert_close(loss, lt.detach().numpy(), dtype, f"loss {reduction}")
        assert_close(dx, xt.grad.numpy(), dtype, f"dlogits {reduction}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_large_logits_against_torch(backend, dtype, rng):
    """Logits of 1e4 and 88+: the log-sum-exp keeps the losses finite and exact."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    need(backend, *SOFTMAX, *SIGMOID)
    x = (randn(rng, (6, 40)) * 1e4).astype(dtype)
    x[0] += 1e5
    x[1, :] = np.linspace(-100, 100, 40)
    t = rng.integers(0, 40, 6)
    loss, dx = softmax(x, t, "none", backend)
    xt = torch.tensor(x, requires_grad=True)
    F.cross_entropy(xt, torch.tensor(t), reduction="sum").backward()
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(loss, F.cross_entropy(torch.tensor(x), torch.tensor(t), reduction="none").numpy(),
                               rtol=1e-6 if dtype == np.float32 else 1e-12)
    assert_close(dx, xt.grad.numpy(), dtype)
    loss, dx = sigmoid(x, (rng.random(x.shape) < 0.5).astype(dtype), "none", backend)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dx))


# --------------------------------------------------------------------------- numerical gradients

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob", "onehot", "unnormalised"])
def test_softmax_gradient_check(backend, reduction, kind, rng):
    need(backend, *SOFTMAX)
    x = randn(rng, (3, 2, 5)) * 2
    if kind == "index":
        t = rng.integers(0, 5, (3, 2))
    elif kind == "onehot":
        t = np.eye(5)[rng.integers(0, 5, (3, 2))]
    elif kind == "prob":
        t = probabilities(rng, x.shape)
    else:  # label smoothing and the like need not sum to 1: dz = ŷ sum(t) - t
        t = rng.uniform(0, 1, x.shape)
        t[0, 0, 1] = 0.0
    w = randn(rng, (3, 2)) if reduction == "none" else 1.7

    def loss():
        return float(np.sum(w * fastnn.softmax_cross_entropy_forward(x, t, reduction=reduction, backend=backend)[0]))
    _, dx = softmax(x, t, reduction, backend, dloss=w)
    check_gradients(loss, {"logits": x}, {"logits": dx})


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sigmoid_gradient_check(backend, reduction, rng):
    need(backend, *SIGMOID)
    x = randn(rng, (4, 5)) * 4
    t = rng.uniform(0, 1, x.shape)
    t[0] = np.round(t[0])
    w = randn(rng, x.shape) if reduction == "none" else -0.6

    def loss():
        return float(np.sum(w * fastnn.sigmoid_cross_entropy_forward(x, t, reduction=reduction, backend=backend)[0]))
    _, dx = sigmoid(x, t, reduction, backend, dloss=w)
    check_gradients(loss, {"logits": x}, {"logits": dx})


@pytest.mark.parametrize("fn", ["softmax", "sigmoid"])
def test_none_with_a_scalar_dloss_is_the_sum(backend, fn, rng):
    """reduction "none" with one scalar dloss for every example is the gradient of the sum."""
    need(backend, *(SOFTMAX if fn == "softmax" else SIGMOID))
    x = randn(rng, (5, 7))
    t = rng.integers(0, 7, 5) if fn == "softmax" else rng.uniform(0, 1, x.shape)
    run = softmax if fn == "softmax" else sigmoid
    _, d_none = run(x, t, "none", backend, dloss=2.5)
    _, d_sum = run(x, t, "sum", backend, dloss=2.5)
    _, d_mean = run(x, t, "mean", backend, dloss=2.5)
    assert_close(d_none, d_sum, np.float64)
    assert_close(d_mean * (5 if fn == "softmax" else 35), d_sum, np.float64)


# --------------------------------------------------------------------------- dtypes, shapes, empties

def test_dtypes_and_loss_types(backend, rng):
    need(backend, *SOFTMAX, *SIGMOID)
    x32 = randn(rng, (4, 3), np.float32)
    t = rng.integers(0, 3, 4)
    loss, dx = softmax(x32, t, backend=backend)
    # mean / sum: a 0-d array of the logits' dtype (PyTorch: a 0-d tensor)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float32
    assert dx.dtype == np.float32 and dx.flags.c_contiguous
    # probability targets of another dtype do not change the computing dtype
    loss, dx = softmax(x32, np.eye(3)[t], backend=backend)
    assert loss.dtype == dx.dtype == np.float32
    loss, dx = sigmoid(x32, np.ones((4, 3), dtype=np.float64), "sum", backend)
    assert loss.dtype == dx.dtype == np.float32
    # integer (and bool) logits compute in float64; bool / int 0-1 labels are fine
    loss, dx = softmax(np.arange(12).reshape(4, 3), t, backend=backend)
    assert loss.dtype == dx.dtype == np.float64
    loss, dx = sigmoid(np.arange(6), np.array([True, False] * 3), "none", backend)
    assert loss.dtype == dx.dtype == np.float64 and loss.shape == (6,)
    # float16 logits compute in float32
    assert softmax(x32.astype(np.float16), t, backend=backend)[0].dtype == np.float32


def test_shapes(backend, rng):
    need(backend, *SOFTMAX, *SIGMOID)
    x = randn(rng, (2, 3, 4, 5))
    t = rng.integers(0, 5, (2, 3, 4))
    loss, dx = softmax(x, t, "none", backend, dloss=np.ones((2, 3, 4)))
    assert loss.shape == (2, 3, 4) and dx.shape == x.shape
    loss, dx = softmax(x[0, 0, 0], np.int64(2), "none", backend)  # one example: 1-D logits, 0-d index
    assert loss.shape == () and dx.shape == (5,)
    assert abs(float(loss) - float(softmax(x[0, 0, 0][None], [2], "sum", backend)[0])) < 1e-14
    loss, dx = sigmoid(np.float64(0.3), 1.0, "none", backend)  # a single logit
    assert loss.shape == () and dx.shape == ()
    loss, dx = sigmoid(x, np.zeros(x.shape), "none", backend, dloss=np.ones(x.shape))
    assert loss.shape == x.shape == dx.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_empty_batches(backend, dtype):
    need(backend, *SOFTMAX, *SIGMOID)
    x = np.zeros((0, 4), dtype=dtype)
    for t in (np.zeros(0, dtype=np.int64), np.zeros((0, 4))):
        loss, dx = softmax(x, t, "none", backend, dloss=np.zeros(0))
        assert loss.shape == (0,) and loss.dtype == dtype and dx.shape == (0, 4) and dx.dtype == dtype
        loss, dx = softmax(x, t, "sum", backend)
        assert float(loss) == 0.0 and dx.shape == (0, 4)
        loss, dx = softmax(x, t, "mean", backend)  # a mean over nothing, as np.mean and PyTorch
        assert np.isnan(loss) and dx.shape == (0, 4)
    loss, dx = softmax(np.zeros((3, 0, 7), dtype=dtype), np.zeros((3, 0), dtype=np.int64), "none", backend)
    assert loss.shape == (3, 0) and dx.shape == (3, 0, 7)
    loss, dx = sigmoid(np.zeros((0, 3), dtype=dtype), np.zeros((0, 3)), "sum", backend)
    assert float(loss) == 0.0 and dx.shape == (0, 3) and dx.dtype == dtype
    assert np.isnan(sigmoid(np.zeros(0, dtype=dtype), np.zeros(0), "mean", backend)[0])


def test_one_class_and_one_example(backend):
    need(backend, *SOFTMAX)
    loss, dx = softmax(np.array([[3.0], [-1e30]]), np.array([0, 0]), "none", backend)
    np.testing.assert_array_equal(loss, [0.0, 0.0])
    np.testing.assert_array_equal(dx, [[0.0], [0.0]])


# --------------------------------------------------------------------------- NaN and infinities

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_nan_and_inf(backend, dtype):
    need(backend, *SOFTMAX)
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, 2.0, 3.0, 0.5],
                  [1.0, nan, 3.0, 0.5],     # NaN: that row's loss and gradient are NaN
                  [1.0, -inf, 3.0, -inf],   # masked classes: e^-inf = 0, no gradient there
                  [-inf, 2.0, 3.0, 0.5],    # the target's logit is -inf: infinite loss
                  [1.0, inf, 3.0, 0.5],     # +inf: softmax undefined (inf / inf)
                  [-inf, -inf, -inf, -inf]], dtype=dtype)
    t = np.array([0, 0, 2, 0, 0, 1])
    with np.errstate(all="ignore"):
        loss, dx = softmax(x, t, "none", backend, dloss=np.ones(6))
        want, dwant = softmax(x, t, "none", "reference", dloss=np.ones(6))
    assert np.isfinite(loss[0]) and np.all(np.isfinite(dx[0]))
    assert np.isnan(loss[1]) and np.all(np.isnan(dx[1]))
    assert np.isfinite(loss[2]) and dx[2, 1] == 0 and dx[2, 3] == 0 and np.all(np.isfinite(dx[2]))
    assert loss[3] == inf and np.all(np.isfinite(dx[3]))
    assert np.isnan(loss[4]) and np.isnan(loss[5])
    assert_close(loss, want, dtype)
    assert_close(dx, dwant, dtype)
    # NaN in one row leaves the other rows' sum alone only in "none": the mean is NaN
    assert np.isnan(fastnn.softmax_cross_entropy_forward(x, t, backend=backend)[0])
    # probabilities: a zero target against -inf adds nothing (0 log 0 = 0), a positive one inf
    p = np.array([[0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    loss, dx = softmax(x[[2, 2]], p, "none", backend, dloss=np.ones(2))
    assert np.isfinite(loss[0]) and loss[1] == inf and np.all(np.isfinite(dx[0]))
    # a NaN target propagates
    assert np.isnan(softmax(x[:1], np.array([[nan, 0, 1, 0]]), "sum", backend)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_sigmoid_nan_and_inf(backend, dtype):
    need(backend, *SIGMOID)
    inf, nan = np.inf, np.nan
    x = np.array([inf, inf, -inf, -inf, inf, nan, 0.0, 200.0, -200.0, 1e30], dtype=dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0, nan, 1.0, 0.0, 0.0])
    with np.errstate(all="ignore"):
        loss, dx = sigmoid(x, t, "none", backend, dloss=np.ones(x.shape))
        want, dwant = sigmoid(x, t, "none", "reference", dloss=np.ones(x.shape))
    # a logit of +-inf on its own label costs nothing; on the other label, inf
    np.testing.assert_array_equal(loss[:5], [0.0, inf, 0.0, inf, inf])
    np.testing.assert_array_equal(dx[:5], [0.0, 1.0, 0.0, -1.0, 0.5])
    assert np.isnan(loss[5]) and np.isnan(dx[5]) and np.isnan(loss[6]) and np.isnan(dx[6])
    # log1p(e^-200), 0 in float32; a confident wrong logit costs the logit itself
    assert loss[7] == loss[8] == (0.0 if dtype == np.float32 else math.exp(-200)) and loss[9] == dtype(1e30)
    assert_close(loss, want, dtype)
    assert_close(dx, dwant, dtype)


# --------------------------------------------------------------------------- odd inputs

@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("which", ["logits", "target"])
def test_odd_inputs(backend, variant, which, rng):
    need(backend, *SOFTMAX, *SIGMOID)
    x = randn(rng, (4, 6))
    t_index = rng.integers(0, 6, 4)
    t_prob = probabilities(rng, (4, 6))
    t_sig = (rng.random((4, 6)) < 0.5).astype(np.float64)  # 0/1, so an int variant keeps the values
    cases = [(softmax, t_index), (softmax, t_prob), (sigmoid, t_sig)]
    for run, t in cases:
        want_loss, want_dx = run(x, t, "none", backend, dloss=np.ones((4,) if run is softmax else x.shape))
        if which == "logits":
            xv, dtype = make_variant(variant, x)
            args, dtype = (xv, t), dtype or np.float64
        else:
            if variant == "int" and run is softmax and t.ndim == 2:
                continue  # probabilities are not integers
            tv, _ = make_variant(variant, t)
            args, dtype = (x, tv), np.float64
        before = snapshot(*args)
        loss, dx = run(*args, "none", backend, dloss=np.ones(want_loss.shape))
        assert_unchanged(before, args, f"{variant} {which}")
        assert loss.dtype == dx.dtype == dtype
        xin = np.asarray(args[0], dtype=np.float64)
        if which == "logits" and variant == "int":  # the logits were truncated
            want_loss, want_dx = run(xin, t, "none", backend, dloss=np.ones(want_loss.shape))
        assert_close(loss, want_loss, dtype, f"{variant} {which}")
        assert_close(dx, want_dx, dtype, f"{variant} {which}")
        assert_fresh([loss, dx], [a for a in args if isinstance(a, np.ndarray)], variant)


def test_inputs_unchanged_and_outputs_owned(backend, rng):
    need(backend, *SOFTMAX, *SIGMOID)
    for dtype in (np.float32, np.float64):
        x = randn(rng, (5, 8), dtype)
        for run, t in ((softmax, rng.integers(0, 8, 5)), (softmax, probabilities(rng, (5, 8), dtype)),
                       (sigmoid, rng.uniform(0, 1, (5, 8)).astype(dtype))):
            for reduction in REDUCTIONS:
                before = snapshot(x, t)
                fwd = (fastnn.softmax_cross_entropy_forward if run is softmax
                       else fastnn.sigmoid_cross_entropy_forward)
                bwd = (fastnn.softmax_cross_entropy_backward if run is softmax
                       else fastnn.sigmoid_cross_entropy_backward)
                loss, cache = fwd(x, t, reduction=reduction, backend=backend)
                dloss = np.ones(loss.shape, dtype=dtype)
                dx1 = bwd(cache, dloss)
                assert loss.flags.writeable
                loss[...] = 123.0  # writing into the loss changes no gradient
                dx2 = bwd(cache, dloss)
                np.testing.assert_array_equal(dx1, dx2)
                assert not np.shares_memory(dx1, dx2)
                assert_fresh([loss, dx1], [x, t, dloss])
                assert_unchanged(before, [x, t])


def test_cache_keeps_its_own_class_indices(backend, rng):
    """A caller refilling its label buffer between forward and backward moves no gradient."""
    need(backend, *SOFTMAX)
    x = randn(rng, (6, 4))
    labels = rng.integers(0, 4, 6)
    want = softmax(x, labels, backend=backend)[1]
    _, cache = fastnn.softmax_cross_entropy_forward(x, labels, backend=backend)
    labels[:] = 0
    labels[0] = 1000  # out of range now: must never be read
    np.testing.assert_array_equal(fastnn.softmax_cross_entropy_backward(cache), want)


# --------------------------------------------------------------------------- bad arguments

SM_F = "softmax_cross_entropy_forward"
SG_F = "sigmoid_cross_entropy_forward"


@pytest.mark.parametrize("fn, logits, target, kwargs, error, fragments", [
    (SM_F, np.zeros((2, 3)), [0, 3], {}, ValueError, ["target", "[0, 3)", "got 3 at index (1,)"]),
    (SM_F, np.zeros((2, 3)), [-1, 0], {}, ValueError, ["target", "[0, 3)", "got -1 at index (0,)"]),
    (SM_F, np.zeros((2, 3)), np.array([0.0, 1.0]), {}, TypeError, ["target", "integers", "float64"]),
    (SM_F, np.zeros((2, 3)), np.array([True, False]), {}, TypeError, ["target", "integers", "bool"]),
    (SM_F, np.zeros((2, 3)), [0, 1, 2], {}, ValueError, ["target", "(2,)", "(2, 3)", "(3,)"]),
    (SM_F, np.zeros((2, 3)), np.zeros((2, 4)), {}, ValueError, ["target", "(2, 4)"]),
    (SM_F, np.zeros((2, 3)), np.full((2, 3), 1.5), {}, ValueError, ["target", "[0, 1]", "1.5", "(0, 0)"]),
    (SM_F, np.zeros((2, 3)), -np.eye(3)[:2], {}, ValueError, ["target", "[0, 1]", "-1.0", "(0, 0)"]),
    (SM_F, np.zeros((2, 3)), np.zeros((2, 3), dtype=complex), {}, TypeError, ["target", "complex"]),
    (SM_F, np.zeros((2, 3)), [[0, 1], [1]], {}, TypeError, ["target"]),
    (SM_F, np.zeros((2, 3)), [0, 1], {"reduction": "avg"}, ValueError, ["reduction", "'avg'", "mean"]),
    (SM_F, np.zeros((2, 3)), [0, 1], {"reduction": None}, ValueError, ["reduction", "None"]),
    (SM_F, np.zeros((2, 3), dtype=complex), [0, 1], {}, TypeError, ["logits", "complex"]),
    (SM_F, np.array(1.0), 0, {}, ValueError, ["logits", "C >= 1", "()"]),
    (SM_F, np.zeros((2, 0)), [0, 0], {}, ValueError, ["logits", "C >= 1", "(2, 0)"]),
    (SM_F, np.zeros((2, 3)), [0, 1], {"backend": "nope"}, ValueError, ["backend", "'nope'", "available"]),
    (SG_F, np.zeros((2, 3)), np.zeros(3), {}, ValueError, ["target", "(2, 3)", "(3,)"]),
    (SG_F, np.zeros((2, 3)), np.full((2, 3), 2), {}, ValueError, ["target", "[0, 1]", "(0, 0)"]),
    (SG_F, np.zeros(3), [0.5, -0.1, 1.0], {}, ValueError, ["target", "[0, 1]", "-0.1", "(1,)"]),
    (SG_F, np.zeros(3), np.array(["a", "b", "c"]), {}, TypeError, ["target"]),
    (SG_F, np.zeros(3, dtype=object), np.zeros(3), {}, TypeError, ["logits", "object"]),
    (SG_F, np.zeros(3), np.zeros(3), {"reduction": "MEAN"}, ValueError, ["reduction", "'MEAN'"]),
])
def test_bad_arguments(fn, logits, target, kwargs, error, fragments):
    with pytest.raises(error) as info:
        getattr(fastnn, fn)(logits, target, **kwargs)
    message = str(info.value)
    for fragment in [fn] + fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_backward_bad_arguments(rng):
    x = randn(rng, (3, 4))
    _, mean_cache = fastnn.softmax_cross_entropy_forward(x, [0, 1, 2])
    _, none_cache = fastnn.softmax_cross_entropy_forward(x, [0, 1, 2], reduction="none")
    _, sig_cache = fastnn.sigmoid_cross_entropy_forward(x, np.zeros((3, 4)), reduction="none")
    sm_b, sg_b = fastnn.softmax_cross_entropy_backward, fastnn.sigmoid_cross_entropy_backward
    cases = [
        (lambda: sm_b(sig_cache), TypeError, ["softmax_cross_entropy_backward", "cache", "sigmoid_cross_entropy"]),
        (lambda: sg_b(mean_cache), TypeError, ["sigmoid_cross_entropy_backward", "cache"]),
        (lambda: sm_b(None), TypeError, ["softmax_cross_entropy_backward", "NoneType"]),
        (lambda: sm_b(mean_cache, np.ones(3)), ValueError, ["dloss", "scalar", "'mean'", "(3,)"]),
        (lambda: sm_b(mean_cache, [1.0]), ValueError, ["dloss", "(1,)"]),
        (lambda: sm_b(none_cache, np.ones(4)), ValueError, ["dloss", "(3,)", "(4,)"]),
        (lambda: sm_b(none_cache, np.ones((3, 1))), ValueError, ["dloss", "(3, 1)"]),
        (lambda: sg_b(sig_cache, np.ones(12)), ValueError, ["sigmoid_cross_entropy_backward", "(3, 4)", "(12,)"]),
        (lambda: sm_b(mean_cache, 1j), TypeError, ["dloss", "complex"]),
        (lambda: sm_b(mean_cache, "a"), TypeError, ["dloss"]),
    ]
    for call, error, fragments in cases:
        with pytest.raises(error) as info:
            call()
        for fragment in fragments:
            assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


def test_nan_dloss_propagates(backend, rng):
    need(backend, *SOFTMAX)
    _, dx = softmax(randn(rng, (2, 3)), [0, 1], "sum", backend, dloss=np.nan)
    assert np.all(np.isnan(dx))


# --------------------------------------------------------------------------- threads and tiers

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_same_bits_at_any_thread_count(compiled_backend, dtype, rng):
    """Per-row (per-chunk) work in a fixed order: 1 and 2 threads give the same bits, the
    batch sums included."""
    need(compiled_backend, *SOFTMAX, *SIGMOID)
    x = randn(rng, (1031, 77), dtype) * 3
    t_index = rng.integers(0, 77, 1031)
    t_prob = probabilities(rng, x.shape, dtype)
    t_sig = rng.uniform(0, 1, x.shape).astype(dtype)
    dl = randn(rng, (1031,), dtype)
    runs = {}
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        out = []
        for reduction in REDUCTIONS:
            dloss = dl if reduction == "none" else 0.7
            out += softmax(x, t_index, reduction, compiled_backend, dloss)
            out += softmax(x, t_prob, reduction, compiled_backend, dloss)
            out += sigmoid(x, t_sig, reduction, compiled_backend, 0.7 if reduction != "none" else t_sig)
        runs[threads] = out
    for a, b in zip(runs[1], runs[2]):
        np.testing.assert_array_equal(a, b)


# class counts around every tier's vector length (2, 4, 8, 16 lanes; two vectors a step)
TIER_CLASSES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tiers_match_reference(tier, dtype, rng):
    for c in TIER_CLASSES:
        x = randn(rng, (5, c), dtype) * 4
        x[1, c // 2] = -np.inf  # a masked class
        for t in (rng.integers(0, c, 5), probabilities(rng, (5, c), dtype)):
            for reduction in REDUCTIONS:
                dloss = randn(rng, (5,), dtype) if reduction == "none" else 1.3
                got = softmax(x, t, reduction, "cython", dloss)
                want = softmax(x, t, reduction, "reference", dloss)
                for g, w in zip(got, want):
                    assert_close(g, w, dtype, f"{tier} C={c} {reduction}")
    for n in (1, 3, 15, 16, 17, 33, 2047, 2048, 2049, 4100):
        x = randn(rng, (n,), dtype) * 6
        t = rng.uniform(0, 1, n).astype(dtype)
        for reduction in REDUCTIONS:
            dloss = randn(rng, (n,), dtype) if reduction == "none" else 0.4
            for g, w in zip(sigmoid(x, t, reduction, "cython", dloss), sigmoid(x, t, reduction, "reference", dloss)):
                assert_close(g, w, dtype, f"{tier} n={n} {reduction}")


def _vector_math():
    cy_loss = pytest.importorskip("fastnn._kernels.cy_loss")
    if "cython" not in fastnn.available_backends():
        pytest.skip("the cython backend is not available")
    return cy_loss._vector_math


def _ulps(got, want, dtype):
    """|got - want| in units of the last place of want in `dtype` (want in long double)."""
    spacing = np.spacing(np.abs(want.astype(dtype))).astype(np.longdouble)
    return (np.abs(got.astype(np.longdouble) - want) / spacing).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_vector_log_against_numpy(tier, dtype, rng):
    """fn_math.h's log: within an ulp of the exact logarithm on random bit patterns over
    every positive exponent (subnormals included) and around 1; log(0) = -inf,
    log(x < 0) = NaN, log(inf) = inf, NaN stays NaN; on every tier."""
    vlog = _vector_math()
    finfo = np.finfo(dtype)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    top = 0x7F800000 if dtype == np.float32 else 0x7FF0000000000000
    x = rng.integers(1, top, 200_000, dtype=np.int64 if dtype == np.float32 else np.uint64).astype(uint).view(dtype)
    x = np.concatenate([x, np.linspace(0.5, 2.0, 20001, dtype=dtype),
                        (1 + np.arange(-300, 300) * finfo.eps).astype(dtype),
                        np.array([finfo.tiny, finfo.smallest_subnormal, finfo.max, 1, 2, 0.5], dtype=dtype)])
    err = _ulps(vlog("log", x), np.log(x.astype(np.longdouble)), dtype)
    assert err.max() < 1.0, f"log: {err.max():.3f} ulp at x = {x[np.argmax(err)]!r}"
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -finfo.tiny], dtype=dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(vlog("log", special), np.log(special))
    # the tail of a call (fewer elements than a vector) is computed the same way
    np.testing.assert_array_equal(vlog("log", x[:5]), vlog("log", x[:64])[:5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_vector_log1p_against_numpy(tier, dtype, rng):
    vlog = _vector_math()
    x = np.concatenate([np.exp(-rng.uniform(0, 100, 50_000)), rng.uniform(-1, 10, 50_000),
                        np.geomspace(1e-30, 1e10, 20_000), -np.geomspace(1e-30, 0.999, 5_000)]).astype(dtype)
    err = _ulps(vlog("log1p", x), np.log1p(x.astype(np.longdouble)), dtype)
    assert err.max() < 2.0, f"log1p: {err.max():.3f} ulp at x = {x[np.argmax(err)]!r}"
    special = np.array([0.0, -0.0, np.inf, -1.0, -2.0, np.nan, 1e-30, -1e-30], dtype=dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        got, want = vlog("log1p", special), np.log1p(special)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[:2]), [False, True])
