"""dropout_forward / dropout_backward (inverted dropout, the course's) on every backend."""
import numpy as np
import pytest

import fastnn
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, make_variant, need, on,
                     randn, snapshot)

KERNELS = ("dropout_forward", "dropout_backward")


def course_dropout(a, keep_prob, seed):
    """The course's lines, with a generator of the given seed in place of np.random:
    d3 = rand(...) < keep_prob; a3 = a3 * d3; a3 /= keep_prob."""
    d = np.random.default_rng(seed).random(a.shape) < keep_prob
    a = np.multiply(a, d)
    a = a / a.dtype.type(keep_prob)
    return a, d


# --------------------------------------------------------------------------- the course


def test_course_layer_three(backend, rng):
    """The lecture's example: a3 of 50 units, keep_prob 0.8."""
    need(backend, *KERNELS)
    a3 = randn(rng, (50, 7))
    y, cache = fastnn.dropout_forward(a3, 0.8, rng=11, **on(backend))
    want, d3 = course_dropout(a3, 0.8, 11)
    np.testing.assert_array_equal(y, want)
    dy = randn(rng, y.shape)
    np.testing.assert_array_equal(fastnn.dropout_backward(dy, cache), dy * d3 / 0.8)


def test_course_statistics(backend):
    """50 units at keep_prob 0.8 drop 10 on average, and dividing by keep_prob keeps
    the expected activation: over 4000 examples both hold to sampling error."""
    need(backend, *KERNELS)
    a3 = np.ones((50, 4000))
    y, _ = fastnn.dropout_forward(a3, 0.8, rng=3, **on(backend))
    dropped_per_example = (y == 0).sum(axis=0)
    # 200000 Bernoulli(0.2) draws: the mean count's standard error is about 0.03
    assert abs(dropped_per_example.mean() - 10.0) < 0.2
    assert abs(y.mean() - 1.0) < 0.01
    assert set(np.unique(y)) == {0.0, 1.0 / 0.8}


@pytest.mark.parametrize("keep_prob", [0.5, 0.9, 0.25])
def test_fraction_kept(backend, keep_prob):
    need(backend, *KERNELS)
    y, _ = fastnn.dropout_forward(np.ones(200_000, np.float32), keep_prob, rng=1, **on(backend))
    assert abs((y != 0).mean() - keep_prob) < 0.005


# --------------------------------------------------------------------------- the mask and the generator


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (7,), (), (40_000, 3)], ids=str)
def test_matches_reference_bitwise(backend, dtype, shape, rng):
    need(backend, *KERNELS)
    x = randn(rng, shape, dtype)
    dy = randn(rng, shape, dtype)
    y, cache = fastnn.dropout_forward(x, 0.65, rng=21, **on(backend))
    y_ref, cache_ref = fastnn.reference.dropout_forward(x, 0.65, rng=21)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(y, course_dropout(x, 0.65, 21)[0])
    dx = fastnn.dropout_backward(dy, cache)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_array_equal(dx, fastnn.reference.dropout_backward(dy, cache_ref))


def test_generator_draws_the_next_mask(backend, rng):
    need(backend, *KERNELS)
    x = randn(rng, (6, 9))
    g, twin = np.random.default_rng(7), np.random.default_rng(7)
    first = fastnn.dropout_forward(x, 0.5, rng=g, **on(backend))[0]
    second = fastnn.dropout_forward(x, 0.5, rng=g, **on(backend))[0]
    np.testing.assert_array_equal(first != 0, twin.random(x.shape) < 0.5)
    np.testing.assert_array_equal(second != 0, twin.random(x.shape) < 0.5)
    assert not np.array_equal(first, second)
    # the generator was advanced by exactly x.size doubles per call
    assert g.random() == twin.random()


def test_seed_forms(backend, rng):
    need(backend, *KERNELS)
    x = randn(rng, (8, 8)) + 5.0  # no zero inputs: y == 0 only where dropped
    by_int = fastnn.dropout_forward(x, 0.5, rng=4, **on(backend))[0]
    np.testing.assert_array_equal(by_int, fastnn.dropout_forward(x, 0.5, rng=np.int64(4), **on(backend))[0])
    np.testing.assert_array_equal(by_int != 0, np.random.default_rng(4).random(x.shape) < 0.5)
    seq = np.random.SeedSequence(9)
    np.testing.assert_array_equal(fastnn.dropout_forward(x, 0.5, rng=seq, **on(backend))[0] != 0,
                                  np.random.default_rng(np.random.SeedSequence(9)).random(x.shape) < 0.5)
    # no seed: fresh entropy, so two calls almost surely differ (2^-64)
    a = fastnn.dropout_forward(x, 0.5, **on(backend))[0]
    b = fastnn.dropout_forward(x, 0.5, rng=None, **on(backend))[0]
    assert not np.array_equal(a != 0, b != 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_same_mask_on_every_backend(dtype, rng):
    x = randn(rng, (33, 1001), dtype)
    results = {}
    for name in fastnn.available_backends():
        need(name, *KERNELS)
        results[name] = fastnn.dropout_forward(x, 0.3, rng=np.random.default_rng(2), backend=name)[0]
    first = next(iter(results.values()))
    for name, y in results.items():
        np.testing.assert_array_equal(y, first, err_msg=name)


def test_keep_prob_one_keeps_everything_and_draws_nothing(backend, rng):
    need(backend, *KERNELS)
    x = randn(rng, (4, 5))
    x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -0.0
    g, twin = np.random.default_rng(5), np.random.default_rng(5)
    y, cache = fastnn.dropout_forward(x, 1.0, rng=g, **on(backend))
    assert y is not x and not np.shares_memory(y, x)
    assert y.tobytes() == x.tobytes()  # bit for bit: NaN, inf and -0.0 included
    assert g.random() == twin.random()  # nothing was drawn
    dy = randn(rng, x.shape)
    dx = fastnn.dropout_backward(dy, cache)
    assert dx.tobytes() == dy.tobytes() and not np.shares_memory(dx, dy)
    y_int = fastnn.dropout_forward(np.arange(6).reshape(2, 3), 1, rng=g, **on(backend))[0]
    assert y_int.dtype == np.float64
    np.testing.assert_array_equal(y_int, np.arange(6).reshape(2, 3))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("keep_prob", [0.5, 0.8, 1.0])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)], ids=str)
def test_gradient_check(backend, keep_prob, shape, rng):
    need(backend, *KERNELS)
    x = randn(rng, shape)
    weights = randn(rng, shape)

    def loss():
        return float(np.sum(fastnn.dropout_forward(x, keep_prob, rng=13, **on(backend))[0] * weights))
    _, cache = fastnn.dropout_forward(x, keep_prob, rng=13, **on(backend))
    check_gradients(loss, {"x": x}, {"x": fastnn.dropout_backward(weights, cache)})


# --------------------------------------------------------------------------- values and types


def test_nan_and_inf_follow_the_formula(backend):
    """x * mask / keep_prob: a kept NaN or inf stays, a dropped NaN or inf is NaN
    (0 * inf), a dropped finite value is +-0 with x's sign, as NumPy computes it."""
    need(backend, *KERNELS)
    x = np.array([np.nan, np.inf, -np.inf, -2.0, 3.0] * 40)
    with np.errstate(invalid="ignore"):
        y, cache = fastnn.dropout_forward(x, 0.5, rng=8, **on(backend))
        want, mask = course_dropout(x, 0.5, 8)
        dy = np.array([1.0, np.nan, np.inf, -1.0, 0.0] * 40)
        dx = fastnn.dropout_backward(dy, cache)
        dx_want = dy * mask / 0.5
    assert mask.any() and not mask.all()
    np.testing.assert_array_equal(y, want)
    assert np.array_equal(np.signbit(y), np.signbit(want))
    np.testing.assert_array_equal(dx, dx_want)


@pytest.mark.parametrize("in_dtype, out_dtype", [(np.float16, np.float32), (np.float32, np.float32),
                                                 (np.float64, np.float64), (np.int32, np.float64),
                                                 (np.bool_, np.float64), (np.uint8, np.float64)])
def test_dtype_rules(backend, in_dtype, out_dtype, rng):
    need(backend, *KERNELS)
    x = (rng.standard_normal((3, 4)) * 3).astype(in_dtype)
    y, cache = fastnn.dropout_forward(x, 0.5, rng=1, **on(backend))
    assert y.dtype == out_dtype
    np.testing.assert_array_equal(y, course_dropout(x.astype(out_dtype), 0.5, 1)[0])
    assert fastnn.dropout_backward(np.ones((3, 4)), cache).dtype == out_dtype  # float64 dy -> the forward's dtype


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_odd_inputs(backend, variant, rng):
    need(backend, *KERNELS)
    x = randn(rng, (4, 6))
    odd, dtype = make_variant(variant, x)
    before = snapshot(odd)
    y, cache = fastnn.dropout_forward(odd, 0.6, rng=2, **on(backend))
    want, mask = course_dropout(np.asarray(odd, dtype=dtype or x.dtype), 0.6, 2)
    assert y.dtype == (dtype or x.dtype)
    np.testing.assert_array_equal(y, want)
    assert_unchanged(before, [odd], variant)
    dy_odd, _ = make_variant(variant, randn(rng, (4, 6)))
    dx = fastnn.dropout_backward(dy_odd, cache)
    np.testing.assert_array_equal(dx, np.asarray(dy_odd, dtype=y.dtype) * mask / 0.6)


def test_empty_and_scalar(backend):
    need(backend, *KERNELS)
    g, twin = np.random.default_rng(3), np.random.default_rng(3)
    y, cache = fastnn.dropout_forward(np.zeros((0, 5), np.float32), 0.5, rng=g, **on(backend))
    assert y.shape == (0, 5) and y.dtype == np.float32
    assert fastnn.dropout_backward(np.zeros((0, 5)), cache).shape == (0, 5)
    assert g.random() == twin.random()
    y, cache = fastnn.dropout_forward(2.0, 0.5, rng=1, **on(backend))
    assert y.shape == () and y == course_dropout(np.array(2.0), 0.5, 1)[0]
    assert fastnn.dropout_backward(1.0, cache).shape == ()


def test_inputs_unchanged_and_outputs_owned(backend, rng):
    need(backend, *KERNELS)
    x = randn(rng, (5, 6))
    dy = randn(rng, (5, 6))
    before = snapshot(x, dy)
    y, cache = fastnn.dropout_forward(x, 0.5, rng=6, **on(backend))
    dx = fastnn.dropout_backward(dy, cache)
    assert_unchanged(before, [x, dy])
    assert_fresh([y, dx], [x, dy])
    y[...] = 7.0  # writing into the output changes no later gradient
    dx[...] = 7.0
    np.testing.assert_array_equal(fastnn.dropout_backward(dy, cache), dy * (course_dropout(x, 0.5, 6)[1]) / 0.5)


def test_same_bits_at_any_thread_count(compiled_backend, rng):
    need(compiled_backend, *KERNELS)
    for dtype in (np.float32, np.float64):
        x = randn(rng, (300, 555), dtype)  # several blocks of work
        dy = randn(rng, x.shape, dtype)
        fastnn.set_num_threads(1)
        y1, c1 = fastnn.dropout_forward(x, 0.45, rng=4, backend=compiled_backend)
        dx1 = fastnn.dropout_backward(dy, c1)
        for threads in (2, 3):
            fastnn.set_num_threads(threads)
            y, cache = fastnn.dropout_forward(x, 0.45, rng=4, backend=compiled_backend)
            np.testing.assert_array_equal(y, y1)
            np.testing.assert_array_equal(fastnn.dropout_backward(dy, cache), dx1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tiers_match_reference(tier, dtype, rng):
    """Every CPU tier of the cython kernels gives the reference's bits (one multiply
    and one correctly rounded division per element), at sizes that leave partial vectors."""
    for n in (1, 15, 17, 16384 + 3, 70_001):
        x = randn(rng, (n,), dtype)
        x[::7] = np.nan
        dy = randn(rng, (n,), dtype)
        with np.errstate(invalid="ignore"):
            y, cache = fastnn.dropout_forward(x, 0.55, rng=n, backend="cython")
            y_ref, cache_ref = fastnn.reference.dropout_forward(x, 0.55, rng=n)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(fastnn.dropout_backward(dy, cache), fastnn.reference.dropout_backward(dy, cache_ref))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("keep_prob", [0, 0.0, -0.1, 1.0000001, 2, np.nan, np.inf, -np.inf, "0.5", None, True,
                                       np.float64(0.0), [0.5]], ids=repr)
def test_bad_keep_prob(keep_prob):
    with pytest.raises(ValueError) as info:
        fastnn.dropout_forward(np.ones(3), keep_prob, rng=0)
    message = str(info.value)
    shown = repr(float(keep_prob)) if isinstance(keep_prob, (int, float)) and not isinstance(keep_prob, bool) \
        else repr(keep_prob)
    assert "dropout_forward" in message and "keep_prob" in message and shown in message, message


@pytest.mark.parametrize("rng_value, error", [("seed", TypeError), (1.5, TypeError), (np.random.RandomState(0), TypeError),
                                              (-1, ValueError)], ids=["str", "float", "RandomState", "negative"])
def test_bad_rng(rng_value, error):
    with pytest.raises(error) as info:
        fastnn.dropout_forward(np.ones(3), 0.5, rng=rng_value)
    assert "dropout_forward" in str(info.value) and "rng" in str(info.value)


def test_validation_before_any_draw():
    """A call that fails draws nothing from the caller's generator."""
    g, twin = np.random.default_rng(1), np.random.default_rng(1)
    for bad in (dict(x=np.ones(3, complex), keep_prob=0.5), dict(x=np.ones(3), keep_prob=0.0),
                dict(x=np.ones(3), keep_prob=0.5, backend="fortran")):
        with pytest.raises((TypeError, ValueError)):
            fastnn.dropout_forward(rng=g, **bad)
    assert g.random() == twin.random()


@pytest.mark.parametrize("x", [np.ones(3, complex), np.array(["a", "b"]), np.array([1, None], dtype=object),
                               [[1.0, 2.0], [3.0]]], ids=["complex", "str", "object", "ragged"])
def test_bad_x(x):
    with pytest.raises(TypeError, match="dropout_forward"):
        fastnn.dropout_forward(x, 0.5, rng=0)


def test_backward_rejects_wrong_cache_and_dy(rng):
    x = randn(rng, (3, 4))
    _, cache = fastnn.dropout_forward(x, 0.5, rng=0)
    with pytest.raises(ValueError, match="dropout_backward") as info:
        fastnn.dropout_backward(np.ones((4, 3)), cache)
    assert "(3, 4)" in str(info.value) and "(4, 3)" in str(info.value)
    with pytest.raises(TypeError, match="dropout_backward"):
        fastnn.dropout_backward(np.ones((3, 4)), ("not", "a cache"))
    _, emb_cache = fastnn.embedding_forward([0, 1], np.ones((2, 2)))
    with pytest.raises(TypeError, match="dropout_forward"):
        fastnn.dropout_backward(np.ones((2, 2)), emb_cache)
    with pytest.raises(TypeError, match="dropout_backward"):
        fastnn.dropout_backward(np.ones((3, 4), complex), cache)


# --------------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 5, 17)], ids=str)
def test_against_torch(backend, dtype, shape, rng):
    """PyTorch's generator is not NumPy's, so the mask is the course's (recomputed from
    the seed) applied with torch ops and differentiated by autograd; F.dropout's own
    statistics are compared loosely."""
    torch = pytest.importorskip("torch")
    need(backend, *KERNELS)
    x = randn(rng, shape, dtype)
    dy = randn(rng, shape, dtype)
    y, cache = fastnn.dropout_forward(x, 0.75, rng=17, **on(backend))
    mask = torch.from_numpy(np.random.default_rng(17).random(shape) < 0.75)
    tx = torch.from_numpy(x).requires_grad_()
    ty = tx * mask / 0.75
    ty.backward(torch.from_numpy(dy))
    assert_close(y, ty.detach().numpy(), dtype, "y")
    assert_close(fastnn.dropout_backward(dy, cache), tx.grad.numpy(), dtype, "dx")


def test_statistics_like_torch():
    torch = pytest.importorskip("torch")
    x = np.ones((400, 500), np.float32)
    ours = fastnn.dropout_forward(x, 0.7, rng=0)[0]
    theirs = torch.nn.functional.dropout(torch.from_numpy(x), p=0.3, training=True).numpy()
    assert abs((ours != 0).mean() - (theirs != 0).mean()) < 0.01
    np.testing.assert_allclose(ours.max(), theirs.max(), rtol=1e-6)  # the same 1 / keep_prob scale
    assert abs(ours.mean() - theirs.mean()) < 0.01
