"""bmm / bmm_backward on every backend: np.matmul's broadcasting, 1-D operands, empty batches."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, integer_valued,
                     need, on, randn, snapshot)

BMM_KERNELS = ("bmm", "bmm_backward")

SHAPES = [
    pytest.param((3, 4), (4, 5), id="2d"),
    pytest.param((2, 3, 4), (2, 4, 5), id="batch"),
    pytest.param((2, 3, 4), (4, 5), id="broadcast-b"),
    pytest.param((4, 5), (3, 5, 2), id="broadcast-a"),
    pytest.param((1, 3, 4), (5, 4, 2), id="batch-1-vs-5"),
    pytest.param((2, 1, 3, 4), (1, 5, 4, 6), id="4d-cross"),
    pytest.param((3, 1, 2, 2, 3), (4, 1, 3, 1), id="5d-vs-4d"),
    pytest.param((4,), (4, 5), id="vec-mat"),
    pytest.param((2, 3, 4), (4,), id="batch-mat-vec"),
    pytest.param((4,), (2, 4, 5), id="vec-batch"),
    pytest.param((6,), (6,), id="vec-vec"),
    pytest.param((0,), (0,), id="vec-vec-K0"),
    pytest.param((2, 1, 1, 0), (3, 0, 2), id="K0-broadcast"),
    pytest.param((0, 3, 4), (4, 5), id="empty-batch"),
    pytest.param((2, 0, 4), (2, 4, 3), id="M0"),
    pytest.param((2, 3, 4), (1, 4, 0), id="N0"),
    pytest.param((2, 3, 0), (2, 0, 4), id="K0"),
    pytest.param((1, 1), (1, 1), id="1x1"),
    pytest.param((7, 1, 9), (9, 2), id="odd"),
]


def bwd(backend, dc, a, b):
    return fastnn.bmm_backward(dc, a, b, **on(backend))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_bmm_matches_reference(backend, a_shape, b_shape, dtype, rng):
    need(backend, *BMM_KERNELS)
    a, b = randn(rng, a_shape, dtype), randn(rng, b_shape, dtype)
    before = snapshot(a, b)
    c = fastnn.bmm(a, b, **on(backend))
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert c.shape == want.shape and c.dtype == dtype
    assert_close(c, want, dtype, "c vs np.matmul")
    assert_close(c, fastnn.reference.bmm(a, b), dtype, "c vs reference")
    dc = randn(rng, c.shape, dtype)
    dc_before = snapshot(dc)
    da, db = bwd(backend, dc, a, b)
    assert_unchanged(dc_before, (dc,), "bmm_backward")
    assert da.shape == a.shape and db.shape == b.shape
    assert da.dtype == db.dtype == dtype
    da_naive, db_naive = naive.bmm_backward(dc, a, b)
    assert_close(da, da_naive, dtype, "da vs naive")
    assert_close(db, db_naive, dtype, "db vs naive")
    da_ref, db_ref = fastnn.reference.bmm_backward(dc, a, b)
    assert_close(da, da_ref, dtype, "da vs reference")
    assert_close(db, db_ref, dtype, "db vs reference")
    assert_unchanged(before, (a, b), "bmm")
    assert_fresh((c, da, db), (a, b, dc), "bmm")


@pytest.mark.parametrize("a_shape, b_shape", [
    pytest.param((3, 4), (4, 2), id="2d"),
    pytest.param((2, 1, 3, 2), (3, 2, 4), id="broadcast"),
    pytest.param((3,), (2, 3, 2), id="vec-batch"),
    pytest.param((2, 2, 3), (3,), id="batch-vec"),
])
def test_bmm_gradient_check(backend, a_shape, b_shape, rng):
    need(backend, *BMM_KERNELS)
    a, b = randn(rng, a_shape), randn(rng, b_shape)
    weights = randn(rng, np.matmul(a, b).shape)
    da, db = bwd(backend, weights, a, b)

    def loss():
        return float(np.sum(fastnn.bmm(a, b, **on(backend)) * weights))

    check_gradients(loss, {"a": a, "b": b}, {"a": da, "b": db})


def _matrix_transposed(a):
    """A view whose last two axes are swapped (what x.T of a batch of matrices gives)."""
    if a.ndim < 2:
        return a[::-1][::-1]
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)


ODD = dict(VARIANTS, matrix_transposed=(_matrix_transposed, None))


@pytest.mark.parametrize("variant", sorted(ODD))
@pytest.mark.parametrize("which", ["a", "b", "dc"])
@pytest.mark.parametrize("a_shape, b_shape", [((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 2)), ((2, 5), (5,))],
                         ids=["bcast-b", "bcast-a", "mat-vec"])
def test_bmm_odd_inputs(backend, a_shape, b_shape, which, variant, rng):
    need(backend, *BMM_KERNELS)
    a, b = integer_valued(rng, a_shape), integer_valued(rng, b_shape)
    dc = integer_valued(rng, np.matmul(a, b).shape)
    want_c = np.matmul(a, b)
    want_da, want_db = naive.bmm_backward(dc, a, b)
    args = {"a": a, "b": b, "dc": dc}
    func, _ = ODD[variant]
    args[which] = func(args[which])
    before = snapshot(*args.values())
    c = fastnn.bmm(args["a"], args["b"], **on(backend))
    da, db = bwd(backend, args["dc"], args["a"], args["b"])
    assert c.dtype == da.dtype == db.dtype == np.float64
    # integer data: every product and sum is exact
    np.testing.assert_array_equal(c, want_c)
    np.testing.assert_array_equal(da, want_da)
    np.testing.assert_array_equal(db, want_db)
    assert_unchanged(before, list(args.values()), f"bmm with {variant} {which}")
    assert_fresh((c, da, db), [v for v in args.values() if isinstance(v, np.ndarray)], "bmm")


def test_bmm_broadcast_views_are_not_written(backend, rng):
    """np.broadcast_to gives read-only zero-stride views: accepted, never written."""
    need(backend, *BMM_KERNELS)
    base = randn(rng, (3, 4))
    a = np.broadcast_to(base, (5, 3, 4))
    b = randn(rng, (5, 4, 2))
    c = fastnn.bmm(a, b, **on(backend))
    assert_close(c, np.matmul(base, b))
    da, db = bwd(backend, np.ones(c.shape), a, b)
    assert da.shape == (5, 3, 4)
    assert_close(da, np.matmul(np.ones(c.shape), np.swapaxes(b, -1, -2)))


@pytest.mark.parametrize("a_dtype, b_dtype, expected", [
    (np.float32, np.float32, np.float32),
    (np.float32, np.float64, np.float64),
    (np.int32, np.float32, np.float64),
    (np.int64, np.int64, np.float64),
    (np.bool_, np.bool_, np.float64),
    (np.float16, np.float16, np.float32),
    (np.float16, np.float64, np.float64),
])
def test_bmm_dtype_rules(backend, a_dtype, b_dtype, expected, rng):
    need(backend, *BMM_KERNELS)
    a = integer_valued(rng, (2, 3, 4), 0, 2).astype(a_dtype)
    b = integer_valued(rng, (4, 2), 0, 2).astype(b_dtype)
    c = fastnn.bmm(a, b, **on(backend))
    assert c.dtype == expected
    np.testing.assert_array_equal(c, np.matmul(a.astype(np.float64), b.astype(np.float64)))
    da, db = bwd(backend, np.ones(c.shape, expected), a, b)
    assert da.dtype == db.dtype == expected


def test_bmm_nan_inf_propagate(backend, rng):
    need(backend, "bmm")
    a = randn(rng, (2, 3, 4))
    b = randn(rng, (4, 2))
    a[0, 1, 2] = np.nan
    a[1, 0, 0] = np.inf
    c = fastnn.bmm(a, b, **on(backend))
    with np.errstate(invalid="ignore"):
        want = np.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(c), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(want))
    assert np.isnan(c[0, 1]).all()


def test_bmm_deterministic(backend, rng):
    need(backend, *BMM_KERNELS)
    a, b = randn(rng, (6, 1, 17, 13)), randn(rng, (5, 13, 11))
    c1, c2 = fastnn.bmm(a, b, **on(backend)), fastnn.bmm(a, b, **on(backend))
    np.testing.assert_array_equal(c1, c2)
    dc = randn(rng, c1.shape)
    for g1, g2 in zip(bwd(backend, dc, a, b), bwd(backend, dc, a, b)):
        np.testing.assert_array_equal(g1, g2)


def test_bmm_lists(backend):
    need(backend, *BMM_KERNELS)
    c = fastnn.bmm([[1, 2], [3, 4]], [[5], [6]], **on(backend))
    np.testing.assert_array_equal(c, [[17], [39]])
    assert c.dtype == np.float64


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("a_shape, b_shape, fragments", [
    pytest.param((2, 3, 4), (2, 5, 6), ["(2, 3, 4)", "(2, 5, 6)"], id="K-mismatch"),
    pytest.param((3, 4), (3, 4), ["(3, 4)"], id="K-mismatch-2d"),
    pytest.param((4,), (5,), ["(4,)", "(5,)"], id="vec-mismatch"),
    pytest.param((2, 3, 4), (3, 4, 5), ["(2, 3, 4)", "(3, 4, 5)"], id="batch-not-broadcastable"),
    pytest.param((2, 2, 3, 4), (3, 1, 4, 5), ["(2, 2, 3, 4)", "(3, 1, 4, 5)"], id="batch-not-broadcastable-4d"),
    pytest.param((), (3, 4), [], id="scalar-a"),
    pytest.param((3, 4), (), [], id="scalar-b"),
])
def test_bmm_bad_shapes(a_shape, b_shape, fragments):
    a, b = np.zeros(a_shape), np.zeros(b_shape)
    for fn, call in (("bmm", lambda: fastnn.bmm(a, b)),
                     ("bmm_backward", lambda: fastnn.bmm_backward(np.zeros((3, 5)), a, b))):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert fn in message, message
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bmm_backward_bad_dc():
    a, b = np.zeros((2, 3, 4)), np.zeros((4, 5))
    for bad in (np.zeros((2, 3, 4)), np.zeros((3, 5)), np.zeros((1, 3, 5)), np.zeros((2, 3, 5, 1))):
        with pytest.raises(ValueError, match="bmm_backward") as info:
            fastnn.bmm_backward(bad, a, b)
        assert "dc" in str(info.value)
    with pytest.raises(TypeError, match="bmm_backward"):
        fastnn.bmm_backward(np.zeros((2, 3, 5), dtype=complex), a, b)


def test_bmm_bad_types_and_backend():
    good = np.zeros((3, 3))
    for bad in (good.astype(complex), good.astype(object), np.full((3, 3), "s")):
        with pytest.raises(TypeError, match="bmm"):
            fastnn.bmm(bad, good)
        with pytest.raises(TypeError, match="bmm"):
            fastnn.bmm(good, bad)
    with pytest.raises(ValueError, match="bmm") as info:
        fastnn.bmm(good, good, backend="blas")
    for name in fastnn.available_backends():
        assert name in str(info.value)


# --------------------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("a_shape, b_shape", [((3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (3, 4, 2)),
                                              ((2, 3, 4), (4,))])
def test_bmm_against_torch(backend, a_shape, b_shape, rng):
    torch = pytest.importorskip("torch")
    need(backend, *BMM_KERNELS)
    a, b = randn(rng, a_shape), randn(rng, b_shape)
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ct = torch.matmul(at, bt)
    c = fastnn.bmm(a, b, **on(backend))
    assert_close(c, ct.detach().numpy())
    dc = randn(rng, c.shape)
    ct.backward(torch.tensor(dc))
    da, db = bwd(backend, dc, a, b)
    assert_close(da, at.grad.numpy())
    assert_close(db, bt.grad.numpy())
