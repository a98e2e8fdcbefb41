"""RNN / GRU / LSTM cells and sequences, forward and backward, on every backend."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import (VARIANTS, assert_close, assert_fresh, assert_unchanged, check_gradients, integer_valued,
                     make_variant, need, nonzero, on, randn, snapshot)

from optable.recurrent import GATES
KINDS = [pytest.param(("rnn", "tanh"), id="rnn-tanh"), pytest.param(("rnn", "relu"), id="rnn-relu"),
         pytest.param(("gru", None), id="gru"), pytest.param(("lstm", None), id="lstm")]


def make_cell(kind, m, n_x, n_a, dtype, rng):
    arrays = dict(x_t=randn(rng, (m, n_x), dtype), h_prev=randn(rng, (m, n_a), dtype) * 0.8,
                  W=randn(rng, (GATES[kind] * n_a, n_a + n_x), dtype) * 0.6,
                  b=nonzero(rng, (GATES[kind] * n_a,), dtype))
    if kind == "lstm":
        arrays["c_prev"] = randn(rng, (m, n_a), dtype)
    return arrays


def cell_forward(kind, activation, a, backend=None, module=fastnn):
    """Call <kind>_cell_forward; returns (outputs tuple, cache)."""
    kw = {} if backend is None else on(backend)
    if kind == "rnn":
        h, cache = module.rnn_cell_forward(a["x_t"], a["h_prev"], a["W"], a["b"], activation=activation, **kw)
        return (h,), cache
    if kind == "gru":
        h, cache = module.gru_cell_forward(a["x_t"], a["h_prev"], a["W"], a["b"], **kw)
        return (h,), cache
    h, c, cache = module.lstm_cell_forward(a["x_t"], a["h_prev"], a["c_prev"], a["W"], a["b"], **kw)
    return (h, c), cache


def cell_backward(kind, douts, cache, module=fastnn):
    """Gradients as a dict keyed like the inputs."""
    if kind == "lstm":
        dx, dh, dc, dW, db = module.lstm_cell_backward(douts[0], douts[1], cache)
        return dict(x_t=dx, h_prev=dh, c_prev=dc, W=dW, b=db)
    dx, dh, dW, db = getattr(module, f"{kind}_cell_backward")(douts[0], cache)
    return dict(x_t=dx, h_prev=dh, W=dW, b=db)


def naive_cell(kind, activation, a):
    a = {k: np.asarray(v, dtype=np.float64) for k, v in a.items()}
    if kind == "rnn":
        return (naive.rnn_cell(a["x_t"], a["h_prev"], a["W"], a["b"], activation),)
    if kind == "gru":
        return (naive.gru_cell(a["x_t"], a["h_prev"], a["W"], a["b"]),)
    return naive.lstm_cell(a["x_t"], a["h_prev"], a["c_prev"], a["W"], a["b"])


def make_seq(kind, T, m, n_x, n_a, dtype, rng, initial=True):
    arrays = dict(x=randn(rng, (T, m, n_x), dtype), h0=randn(rng, (m, n_a), dtype) * 0.8 if initial else None,
                  W=randn(rng, (GATES[kind] * n_a, n_a + n_x), dtype) * 0.6,
                  b=nonzero(rng, (GATES[kind] * n_a,), dtype))
    if kind == "lstm":
        arrays["c0"] = randn(rng, (m, n_a), dtype) if initial else None
    return arrays


def seq_forward(kind, activation, a, backend=None, module=fastnn):
    kw = {} if backend is None else on(backend)
    if kind == "rnn":
        h, cache = module.rnn_forward(a["x"], a["h0"], a["W"], a["b"], activation=activation, **kw)
        return (h,), cache
    if kind == "gru":
        h, cache = module.gru_forward(a["x"], a["h0"], a["W"], a["b"], **kw)
        return (h,), cache
    h, c_last, cache = module.lstm_forward(a["x"], a["h0"], a["c0"], a["W"], a["b"], **kw)
    return (h, c_last), cache


def seq_backward(kind, douts, cache, module=fastnn):
    if kind == "lstm":
        if len(douts) > 1:
            dx, dh0, dc0, dW, db = module.lstm_backward(douts[0], cache, dc_last=douts[1])
        else:
            dx, dh0, dc0, dW, db = module.lstm_backward(douts[0], cache)
        return dict(x=dx, h0=dh0, c0=dc0, W=dW, b=db)
    dx, dh0, dW, db = getattr(module, f"{kind}_backward")(douts[0], cache)
    return dict(x=dx, h0=dh0, W=dW, b=db)


def naive_seq(kind, activation, a):
    f = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in a.items()}
    m, n_a = f["x"].shape[1], f["W"].shape[0] // GATES[kind]
    h0 = np.zeros((m, n_a)) if f["h0"] is None else f["h0"]
    if kind == "rnn":
        return (naive.run_sequence(lambda x, h: naive.rnn_cell(x, h, f["W"], f["b"], activation), f["x"], h0),)
    if kind == "gru":
        return (naive.run_sequence(lambda x, h: naive.gru_cell(x, h, f["W"], f["b"]), f["x"], h0),)
    c0 = np.zeros((m, n_a)) if f["c0"] is None else f["c0"]
    return naive.run_sequence(lambda x, h, c: naive.lstm_cell(x, h, c, f["W"], f["b"]), f["x"], h0, c0=c0)


def kernels(kind, seq):
    return (f"{kind}_forward", f"{kind}_backward") if seq else (f"{kind}_cell_forward", f"{kind}_cell_backward")


# --------------------------------------------------------------------------- course formulas

def test_course_rnn_cell_column_major_formula(backend, rng):
    """The course's a<t> = tanh(Waa a<t-1> + Wax x<t> + ba) in its (n, m) orientation,
    through rnn_weights_from_course."""
    need(backend, "rnn_cell_forward")
    n_x, n_a, m = 3, 5, 10
    xt, a_prev = randn(rng, (n_x, m)), randn(rng, (n_a, m))
    params = dict(Waa=randn(rng, (n_a, n_a)), Wax=randn(rng, (n_a, n_x)), ba=randn(rng, (n_a, 1)),
                  Wya=randn(rng, (2, n_a)), by=randn(rng, (2, 1)))
    W, b = fastnn.rnn_weights_from_course(params)
    expected = np.tanh(params["Wax"] @ xt + params["Waa"] @ a_prev + params["ba"])
    h, _ = fastnn.rnn_cell_forward(xt.T, a_prev.T, W, b, **on(backend))
    assert_close(h.T, expected)


def test_course_lstm_cell_column_major_formula(backend, rng):
    need(backend, "lstm_cell_forward")
    n_x, n_a, m = 3, 5, 10
    xt, a_prev, c_prev = randn(rng, (n_x, m)), randn(rng, (n_a, m)), randn(rng, (n_a, m))
    params = {k: randn(rng, (n_a, n_a + n_x)) for k in ("Wf", "Wi", "Wc", "Wo")}
    params.update({k: randn(rng, (n_a, 1)) for k in ("bf", "bi", "bc", "bo")})
    params.update(Wy=randn(rng, (2, n_a)), by=randn(rng, (2, 1)))
    concat = np.concatenate([a_prev, xt], axis=0)
    ft = naive.sigmoid(params["Wf"] @ concat + params["bf"])
    it = naive.sigmoid(params["Wi"] @ concat + params["bi"])
    cct = np.tanh(params["Wc"] @ concat + params["bc"])
    c_next = ft * c_prev + it * cct
    ot = naive.sigmoid(params["Wo"] @ concat + params["bo"])
    a_next = ot * np.tanh(c_next)  # the errata: tanh(c), not c
    W, b = fastnn.lstm_weights_from_course(params)
    h, c, _ = fastnn.lstm_cell_forward(xt.T, a_prev.T, c_prev.T, W, b, **on(backend))
    assert_close(h.T, a_next)
    assert_close(c.T, c_next)


def test_course_gru_cell_column_major_formula(backend, rng):
    need(backend, "gru_cell_forward")
    n_x, n_a, m = 4, 3, 6
    xt, c_prev = randn(rng, (n_x, m)), randn(rng, (n_a, m))
    params = {k: randn(rng, (n_a, n_a + n_x)) for k in ("Wu", "Wr", "Wc")}
    params.update({k: randn(rng, (n_a, 1)) for k in ("bu", "br", "bc")})
    concat = np.concatenate([c_prev, xt], axis=0)
    gu = naive.sigmoid(params["Wu"] @ concat + params["bu"])
    gr = naive.sigmoid(params["Wr"] @ concat + params["br"])
    cand = np.tanh(params["Wc"] @ np.concatenate([gr * c_prev, xt], axis=0) + params["bc"])  # b_c, per errata
    c_next = gu * cand + (1 - gu) * c_prev
    W, b = fastnn.gru_weights_from_course(params)
    h, _ = fastnn.gru_cell_forward(xt.T, c_prev.T, W, b, **on(backend))
    assert_close(h.T, c_next)


def test_relu_derivative_at_zero_is_zero(backend):
    need(backend, "rnn_cell_forward", "rnn_cell_backward")
    x_t, h_prev = np.ones((2, 3)), np.ones((2, 2))
    W, b = np.zeros((2, 5)), np.zeros(2)
    h, cache = fastnn.rnn_cell_forward(x_t, h_prev, W, b, activation="relu", **on(backend))
    np.testing.assert_array_equal(h, 0)
    for g in fastnn.rnn_cell_backward(np.ones((2, 2)), cache):
        np.testing.assert_array_equal(g, 0)


# --------------------------------------------------------------------------- harness: cells

CELL_SIZES = [pytest.param((3, 4, 5), id="m3"), pytest.param((1, 1, 1), id="scalar-sizes"),
              pytest.param((0, 3, 2), id="m0"), pytest.param((5, 2, 7), id="odd")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("sizes", CELL_SIZES)
@pytest.mark.parametrize("kind_act", KINDS)
def test_cell_matches_reference(backend, kind_act, sizes, dtype, rng):
    kind, act = kind_act
    need(backend, *kernels(kind, False))
    m, n_x, n_a = sizes
    a = make_cell(kind, m, n_x, n_a, dtype, rng)
    before = snapshot(*a.values())
    outs, cache = cell_forward(kind, act, a, backend)
    want = naive_cell(kind, act, a)
    outs_ref, cache_ref = cell_forward(kind, act, a, module=fastnn.reference)
    for got, w, r in zip(outs, want, outs_ref):
        assert got.dtype == dtype and got.shape == (m, n_a)
        assert_close(got, w, dtype, "vs naive")
        assert_close(got, r, dtype, "vs reference")
    douts = [randn(rng, o.shape, dtype) for o in outs]
    douts_before = snapshot(*douts)
    grads = cell_backward(kind, douts, cache)
    assert_unchanged(douts_before, douts, f"{kind}_cell_backward")
    grads_ref = cell_backward(kind, douts, cache_ref, module=fastnn.reference)
    for name, g in grads.items():
        assert g.shape == np.shape(a[name]) and g.dtype == dtype, name
        assert_close(g, grads_ref[name], dtype, f"d{name}")
    assert_unchanged(before, list(a.values()), f"{kind} cell")
    assert_fresh(tuple(outs) + tuple(grads.values()), list(a.values()) + douts, f"{kind} cell")


@pytest.mark.parametrize("kind_act", KINDS)
def test_cell_gradient_check(backend, kind_act, rng):
    kind, act = kind_act
    need(backend, *kernels(kind, False))
    a = make_cell(kind, 3, 3, 4, np.float64, rng)
    outs, cache = cell_forward(kind, act, a, backend)
    weights = [randn(rng, o.shape) for o in outs]
    grads = cell_backward(kind, weights, cache)

    def loss():
        return float(sum(np.sum(o * w) for o, w in zip(cell_forward(kind, act, a, backend)[0], weights)))

    check_gradients(loss, a, grads)


# --------------------------------------------------------------------------- harness: sequences

SEQ_SIZES = [pytest.param((3, 2, 3, 4), id="T3"), pytest.param((1, 3, 2, 2), id="T1"),
             pytest.param((4, 0, 3, 2), id="m0"), pytest.param((5, 1, 1, 3), id="odd")]


@pytest.mark.parametrize("initial", [True, False], ids=["h0", "h0-None"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("sizes", SEQ_SIZES)
@pytest.mark.parametrize("kind_act", KINDS)
def test_sequence_matches_reference(backend, kind_act, sizes, dtype, initial, rng):
    kind, act = kind_act
    need(backend, *kernels(kind, True))
    T, m, n_x, n_a = sizes
    a = make_seq(kind, T, m, n_x, n_a, dtype, rng, initial)
    before = snapshot(*a.values())
    outs, cache = seq_forward(kind, act, a, backend)
    want = naive_seq(kind, act, a)
    outs_ref, cache_ref = seq_forward(kind, act, a, module=fastnn.reference)
    assert outs[0].shape == (T, m, n_a)
    for got, w, r in zip(outs, want, outs_ref):
        assert got.dtype == dtype
        assert_close(got, w, dtype, "vs naive")
        assert_close(got, r, dtype, "vs reference")
    douts = [randn(rng, o.shape, dtype) for o in outs]
    douts_before = snapshot(*douts)
    grads = seq_backward(kind, douts, cache)
    assert_unchanged(douts_before, douts, f"{kind}_backward")
    grads_ref = seq_backward(kind, douts, cache_ref, module=fastnn.reference)
    for name, g in grads.items():
        shape = (m, n_a) if name in ("h0", "c0") else np.shape(a[name])
        assert g.shape == shape and g.dtype == dtype, name
        assert_close(g, grads_ref[name], dtype, f"d{name}")
    if kind == "lstm":  # without dc_last the gradient flows only through h
        grads_no_c = seq_backward(kind, douts[:1], cache)
        grads_zero_c = seq_backward(kind, [douts[0], np.zeros_like(douts[1])], cache)
        for name in grads_no_c:
            assert_close(grads_no_c[name], grads_zero_c[name], dtype, f"d{name} with dc_last=None")
    assert_unchanged(before, list(a.values()), f"{kind} sequence")
    assert_fresh(tuple(outs) + tuple(grads.values()), [v for v in a.values() if v is not None] + douts,
                 f"{kind} sequence")


@pytest.mark.parametrize("kind_act, with_dc_last", [(k.values[0], True) for k in KINDS] + [(("lstm", None), False)],
                         ids=[k.id for k in KINDS] + ["lstm-no-dc_last"])
def test_sequence_gradient_check(backend, kind_act, with_dc_last, rng):
    kind, act = kind_act
    need(backend, *kernels(kind, True))
    a = make_seq(kind, 3, 2, 3, 3, np.float64, rng)
    outs, cache = seq_forward(kind, act, a, backend)
    weights = [randn(rng, o.shape) for o in outs]
    if not with_dc_last:
        weights = weights[:1]
    grads = seq_backward(kind, weights, cache)

    def loss():
        return float(sum(np.sum(o * w) for o, w in zip(seq_forward(kind, act, a, backend)[0], weights)))

    check_gradients(loss, a, grads)


def test_sequence_equals_chained_cells(backend, rng):
    """A sequence is its cells applied in turn; its gradients are the cells' summed over time."""
    need(backend, "lstm_forward", "lstm_backward", "lstm_cell_forward", "lstm_cell_backward")
    a = make_seq("lstm", 3, 2, 3, 4, np.float64, rng)
    h, c_last, cache = fastnn.lstm_forward(a["x"], a["h0"], a["c0"], a["W"], a["b"], **on(backend))
    hs, caches, hp, cp = [], [], a["h0"], a["c0"]
    for t in range(3):
        hp, cp, cc = fastnn.lstm_cell_forward(a["x"][t], hp, cp, a["W"], a["b"], **on(backend))
        hs.append(hp)
        caches.append(cc)
    assert_close(h, np.stack(hs))
    assert_close(c_last, cp)
    dh, dc_last = randn(rng, h.shape), randn(rng, c_last.shape)
    dx, dh0, dc0, dW, db = fastnn.lstm_backward(dh, cache, dc_last=dc_last)
    dW_sum, db_sum, dxs = 0, 0, [None] * 3
    dh_next, dc_next = np.zeros_like(dh[0]), dc_last
    for t in reversed(range(3)):
        dxs[t], dh_next, dc_next, dWt, dbt = fastnn.lstm_cell_backward(dh[t] + dh_next, dc_next, caches[t])
        dW_sum, db_sum = dW_sum + dWt, db_sum + dbt
    assert_close(dx, np.stack(dxs))
    assert_close(dh0, dh_next)
    assert_close(dc0, dc_next)
    assert_close(dW, dW_sum)
    assert_close(db, db_sum)


def test_sequence_h0_none_means_zeros(backend, rng):
    need(backend, "gru_forward", "gru_backward", "lstm_forward", "lstm_backward")
    x, n_a = randn(rng, (3, 2, 4)), 3
    W, b = randn(rng, (3 * n_a, n_a + 4)), nonzero(rng, (3 * n_a,))
    h_none, cache_none = fastnn.gru_forward(x, None, W, b, **on(backend))
    h_zero, cache_zero = fastnn.gru_forward(x, np.zeros((2, n_a)), W, b, **on(backend))
    np.testing.assert_array_equal(h_none, h_zero)
    dh = randn(rng, h_none.shape)
    for g1, g2 in zip(fastnn.gru_backward(dh, cache_none), fastnn.gru_backward(dh, cache_zero)):
        np.testing.assert_array_equal(g1, g2)
    W4, b4 = randn(rng, (4 * n_a, n_a + 4)), nonzero(rng, (4 * n_a,))
    out_none = fastnn.lstm_forward(x, None, None, W4, b4, **on(backend))
    out_zero = fastnn.lstm_forward(x, np.zeros((2, n_a)), np.zeros((2, n_a)), W4, b4, **on(backend))
    np.testing.assert_array_equal(out_none[0], out_zero[0])
    np.testing.assert_array_equal(out_none[1], out_zero[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7])
def test_lstm_small_batches_match_reference(backend, m, dtype, rng):
    """Batches of a few rows take the compiled backends' matrix-vector kernels (one
    row, pairs of rows, a partial tile); 37 units leave a partial panel on every tier.
    Each row of the batch must match the reference, and a row's result must not
    depend on the rows beside it."""
    need(backend, "lstm_forward", "lstm_backward")
    T, n_x, n_a = 4, 9, 37
    a = make_seq("lstm", T, m, n_x, n_a, dtype, rng)
    (h, c_last), cache = seq_forward("lstm", None, a, backend)
    want = naive_seq("lstm", None, a)
    assert_close(h, want[0], dtype, "h")
    assert_close(c_last, want[1], dtype, "c_last")
    dh = randn(rng, h.shape, dtype)
    grads = seq_backward("lstm", [dh], cache)
    _, cache_ref = seq_forward("lstm", None, a, module=fastnn.reference)
    for name, g in seq_backward("lstm", [dh], cache_ref, module=fastnn.reference).items():
        assert_close(grads[name], g, dtype, f"d{name}")
    # the last row on its own
    last = dict(x=a["x"][:, -1:], h0=a["h0"][-1:], c0=a["c0"][-1:], W=a["W"], b=a["b"])
    (h1, _), _ = seq_forward("lstm", None, last, backend)
    assert_close(h1[:, 0], h[:, -1], dtype, "the last row alone")


# --------------------------------------------------------------------------- odd inputs and dtypes

def as_float(v):
    return None if v is None else np.array(v, dtype=np.float64)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("which", ["x", "h0", "c0", "W", "b", "dh", "dc_last"])
def test_lstm_sequence_odd_inputs(backend, which, variant, rng):
    """Each argument as an odd array gives what the plain float64 array of the same values gives."""
    need(backend, "lstm_forward", "lstm_backward")
    T, m, n_x, n_a = 3, 2, 3, 2
    args = dict(x=randn(rng, (T, m, n_x)), h0=randn(rng, (m, n_a)), c0=randn(rng, (m, n_a)),
                W=randn(rng, (4 * n_a, n_a + n_x)), b=nonzero(rng, (4 * n_a,)),
                dh=randn(rng, (T, m, n_a)), dc_last=randn(rng, (m, n_a)))
    args[which], _ = make_variant(variant, args[which])
    f = {k: as_float(v) for k, v in args.items()}
    h_ref, c_ref, cache_ref = fastnn.reference.lstm_forward(f["x"], f["h0"], f["c0"], f["W"], f["b"])
    grads_ref = fastnn.reference.lstm_backward(f["dh"], cache_ref, dc_last=f["dc_last"])
    before = snapshot(*args.values())
    h, c, cache = fastnn.lstm_forward(args["x"], args["h0"], args["c0"], args["W"], args["b"], **on(backend))
    grads = fastnn.lstm_backward(args["dh"], cache, dc_last=args["dc_last"])
    assert h.dtype == c.dtype == np.float64
    assert_close(h, h_ref, what=f"h with {variant} {which}")
    assert_close(c, c_ref, what=f"c with {variant} {which}")
    for name, g, gr in zip(("dx", "dh0", "dc0", "dW", "db"), grads, grads_ref):
        assert g.dtype == np.float64
        assert_close(g, gr, what=f"{name} with {variant} {which}")
    assert_unchanged(before, list(args.values()), f"lstm with {variant} {which}")
    assert_fresh((h, c) + tuple(grads), [v for v in args.values() if isinstance(v, np.ndarray)], "lstm")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kind_act", KINDS)
def test_cell_odd_inputs(backend, kind_act, variant, rng):
    """Every cell argument (and the incoming gradient) in turn as an odd array."""
    kind, act = kind_act
    need(backend, *kernels(kind, False))
    base = make_cell(kind, 2, 3, 2, np.float64, rng)
    douts = [randn(rng, (2, 2)) for _ in range(2 if kind == "lstm" else 1)]
    for which in list(base) + ["dout"]:
        a, d = dict(base), list(douts)
        if which == "dout":
            d[0], _ = make_variant(variant, d[0])
        else:
            a[which], _ = make_variant(variant, a[which])
        outs_ref, cache_ref = cell_forward(kind, act, {k: as_float(v) for k, v in a.items()},
                                           module=fastnn.reference)
        grads_ref = cell_backward(kind, [as_float(v) for v in d], cache_ref, module=fastnn.reference)
        before = snapshot(*a.values(), *d)
        outs, cache = cell_forward(kind, act, a, backend)
        grads = cell_backward(kind, d, cache)
        for got, want in zip(outs, outs_ref):
            assert got.dtype == np.float64
            assert_close(got, want, what=f"out with {variant} {which}")
        for name in grads:
            assert_close(grads[name], grads_ref[name], what=f"d{name} with {variant} {which}")
        assert_unchanged(before, list(a.values()) + d, f"{kind} cell with {variant} {which}")
        assert_fresh(tuple(outs) + tuple(grads.values()), [v for v in list(a.values()) + d
                                                            if isinstance(v, np.ndarray)], f"{kind} cell")


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32, np.float32), np.float32),
    ((np.float32, np.float64), np.float64),
    ((np.int64, np.float32), np.float64),
    ((np.bool_, np.float64), np.float64),
    ((np.float16, np.float16), np.float32),
])
def test_recurrent_dtype_rules(backend, dtypes, expected, rng):
    need(backend, "rnn_forward", "rnn_backward")
    x = integer_valued(rng, (2, 3, 4), 0, 2).astype(dtypes[0])
    W = (integer_valued(rng, (2, 6), -1, 2) / 2).astype(dtypes[1])
    b = np.array([0.5, -0.25], dtype=dtypes[1])
    h, cache = fastnn.rnn_forward(x, None, W, b, **on(backend))
    assert h.dtype == expected
    grads = fastnn.rnn_backward(np.ones(h.shape, expected), cache)
    assert all(g.dtype == expected for g in grads)
    want = naive.run_sequence(lambda xt, hp: naive.rnn_cell(xt, hp, W.astype(float), b.astype(float)),
                              x.astype(float), np.zeros((3, 2)))
    assert_close(h, want, expected)


# --------------------------------------------------------------------------- converters

def test_weight_converters_stack_the_course_way(rng):
    n_a, n_x = 3, 2
    p = {k: randn(rng, (n_a, n_a + n_x)) for k in ("Wf", "Wi", "Wc", "Wo", "Wu", "Wr")}
    p.update({k: randn(rng, (n_a, 1)) for k in ("bf", "bi", "bc", "bo", "bu", "br")})
    before = {k: v.copy() for k, v in p.items()}
    W, b = fastnn.lstm_weights_from_course(p)
    np.testing.assert_array_equal(W, np.vstack([p["Wf"], p["Wi"], p["Wc"], p["Wo"]]))
    np.testing.assert_array_equal(b, np.concatenate([p["bf"], p["bi"], p["bc"], p["bo"]]).ravel())
    W, b = fastnn.gru_weights_from_course(p)
    np.testing.assert_array_equal(W, np.vstack([p["Wu"], p["Wr"], p["Wc"]]))
    np.testing.assert_array_equal(b, np.concatenate([p["bu"], p["br"], p["bc"]]).ravel())
    q = dict(Waa=randn(rng, (n_a, n_a)), Wax=randn(rng, (n_a, n_x)), ba=randn(rng, (n_a,)))
    W, b = fastnn.rnn_weights_from_course(q)
    np.testing.assert_array_equal(W, np.hstack([q["Waa"], q["Wax"]]))
    np.testing.assert_array_equal(b, q["ba"])
    assert W.flags.c_contiguous and not np.shares_memory(b, q["ba"])
    for k, v in p.items():
        np.testing.assert_array_equal(v, before[k])


def test_weight_converters_from_torch_layout(rng):
    n_a, n_x = 3, 2
    w_ih, w_hh = randn(rng, (4 * n_a, n_x)), randn(rng, (4 * n_a, n_a))
    b_ih, b_hh = randn(rng, (4 * n_a,)), randn(rng, (4 * n_a,))
    W, b = fastnn.lstm_weights_from_torch(w_ih, w_hh, b_ih, b_hh)
    order = [1, 0, 2, 3]  # torch i, f, g, o -> fastnn f, u, c, o

    def blocks(a):
        return np.concatenate([a[k * n_a:(k + 1) * n_a] for k in order])

    np.testing.assert_array_equal(W, np.hstack([blocks(w_hh), blocks(w_ih)]))
    assert_close(b, blocks(b_ih) + blocks(b_hh))
    W0, b0 = fastnn.lstm_weights_from_torch(w_ih, w_hh)
    np.testing.assert_array_equal(W0, W)
    np.testing.assert_array_equal(b0, np.zeros(4 * n_a))
    r_ih, r_hh, rb_ih, rb_hh = randn(rng, (n_a, n_x)), randn(rng, (n_a, n_a)), randn(rng, n_a), randn(rng, n_a)
    W, b = fastnn.rnn_weights_from_torch(r_ih, r_hh, rb_ih, rb_hh)
    np.testing.assert_array_equal(W, np.hstack([r_hh, r_ih]))
    assert_close(b, rb_ih + rb_hh)


def test_weight_converters_reject_bad_input(rng):
    with pytest.raises((KeyError, ValueError)):
        fastnn.lstm_weights_from_course({"Wf": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="lstm_weights_from_torch"):
        fastnn.lstm_weights_from_torch(np.zeros((8, 2)), np.zeros((4, 2)))  # 4 n_a rows in both
    with pytest.raises(TypeError):
        fastnn.rnn_weights_from_course(dict(Waa=np.zeros((2, 2), complex), Wax=np.zeros((2, 1)), ba=np.zeros(2)))


# --------------------------------------------------------------------------- errors

def _cell_args(kind, m=2, n_x=3, n_a=4):
    a = dict(x_t=np.zeros((m, n_x)), h_prev=np.zeros((m, n_a)), W=np.zeros((GATES[kind] * n_a, n_a + n_x)),
             b=np.zeros(GATES[kind] * n_a))
    if kind == "lstm":
        a["c_prev"] = np.zeros((m, n_a))
    return a


BAD_CELL = [
    pytest.param("x_t", np.zeros(3), id="x_t-1d"),
    pytest.param("x_t", np.zeros((3, 3)), id="x_t-batch-mismatch"),
    pytest.param("x_t", np.zeros((2, 4)), id="x_t-n_x-mismatch"),
    pytest.param("h_prev", np.zeros((2, 5)), id="h_prev-n_a-mismatch"),
    pytest.param("h_prev", np.zeros((1, 4)), id="h_prev-batch-mismatch"),
    pytest.param("h_prev", np.zeros((2, 4, 1)), id="h_prev-3d"),
    pytest.param("W", np.zeros((5, 7)), id="W-rows"),
    pytest.param("W", np.zeros((4, 7, 1)), id="W-3d"),
    pytest.param("b", np.zeros(3), id="b-size"),
]


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("which, bad", BAD_CELL)
def test_cell_bad_shapes(kind, which, bad):
    a = _cell_args(kind)
    if kind != "rnn" and which == "W":
        bad = np.zeros((GATES[kind] * 4 + 1, 7)) if bad.ndim == 2 else bad
    if kind != "rnn" and which == "b":
        bad = np.zeros(GATES[kind] * 4 - 1)
    a[which] = bad
    fn = f"{kind}_cell_forward"
    with pytest.raises(ValueError) as info:
        cell_forward(kind, "tanh", a)
    message = str(info.value)
    assert fn in message and which in message, message
    assert str(bad.shape) in message, message


def test_lstm_cell_bad_c_prev():
    a = _cell_args("lstm")
    a["c_prev"] = np.zeros((2, 5))
    with pytest.raises(ValueError, match="lstm_cell_forward") as info:
        cell_forward("lstm", None, a)
    assert "c_prev" in str(info.value)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_sequence_bad_shapes(kind):
    n_a, n_x = 4, 3
    good = dict(x=np.zeros((3, 2, n_x)), h0=np.zeros((2, n_a)), W=np.zeros((GATES[kind] * n_a, n_a + n_x)),
                b=np.zeros(GATES[kind] * n_a), c0=np.zeros((2, n_a)))
    bads = [("x", np.zeros((2, n_x))), ("x", np.zeros((0, 2, n_x))), ("x", np.zeros((3, 2, n_x + 1))),
            ("h0", np.zeros((3, n_a))), ("h0", np.zeros((2, n_a + 1))), ("W", np.zeros((GATES[kind] * n_a, n_a + n_x + 1))),
            ("b", np.zeros((GATES[kind] * n_a + 1,)))]
    if kind == "lstm":
        bads.append(("c0", np.zeros((2, n_a - 1))))
    for which, bad in bads:
        a = dict(good)
        a[which] = bad
        with pytest.raises(ValueError) as info:
            seq_forward(kind, "tanh", {k: v for k, v in a.items() if kind == "lstm" or k != "c0"})
        message = str(info.value)
        assert f"{kind}_forward" in message and which in message, message


@pytest.mark.parametrize("fn", ["rnn_cell_forward", "rnn_forward"])
def test_unknown_activation(fn):
    a = _cell_args("rnn")
    args = (a["x_t"], a["h_prev"]) if fn == "rnn_cell_forward" else (a["x_t"][None], a["h_prev"])
    with pytest.raises(ValueError, match=fn) as info:
        getattr(fastnn, fn)(*args, a["W"], a["b"], activation="sigmoid")
    assert "activation" in str(info.value) and "sigmoid" in str(info.value)


def test_recurrent_non_real_and_backend_errors():
    a = _cell_args("gru")
    for bad in (np.zeros((2, 3), complex), np.zeros((2, 3), object), np.full((2, 3), "x")):
        with pytest.raises(TypeError, match="gru_cell_forward"):
            fastnn.gru_cell_forward(bad, a["h_prev"], a["W"], a["b"])
    with pytest.raises(ValueError, match="lstm_forward") as info:
        fastnn.lstm_forward(np.zeros((2, 1, 3)), None, None, np.zeros((16, 7)), np.zeros(16), backend="tpu")
    for name in fastnn.available_backends():
        assert name in str(info.value)


def test_recurrent_backward_wrong_cache_and_shapes(rng):
    a = make_cell("rnn", 2, 3, 4, np.float64, rng)
    h, rnn_cache = fastnn.rnn_cell_forward(a["x_t"], a["h_prev"], a["W"], a["b"], backend="reference")
    g = make_cell("gru", 2, 3, 4, np.float64, rng)
    _, gru_cache = fastnn.gru_cell_forward(g["x_t"], g["h_prev"], g["W"], g["b"], backend="reference")
    l_ = make_cell("lstm", 2, 3, 4, np.float64, rng)
    _, c, lstm_cache = fastnn.lstm_cell_forward(l_["x_t"], l_["h_prev"], l_["c_prev"], l_["W"], l_["b"],
                                                backend="reference")
    hs, seq_cache = fastnn.rnn_forward(a["x_t"][None], a["h_prev"], a["W"], a["b"], backend="reference")
    with pytest.raises(TypeError, match="rnn_cell_backward"):
        fastnn.rnn_cell_backward(h, gru_cache)
    with pytest.raises(TypeError, match="rnn_cell_backward"):
        fastnn.rnn_cell_backward(h, seq_cache)
    with pytest.raises(TypeError, match="gru_cell_backward"):
        fastnn.gru_cell_backward(h, rnn_cache)
    with pytest.raises(TypeError, match="lstm_cell_backward"):
        fastnn.lstm_cell_backward(h, c, gru_cache)
    with pytest.raises(TypeError, match="rnn_backward"):
        fastnn.rnn_backward(hs, rnn_cache)
    with pytest.raises(TypeError, match="lstm_backward"):
        fastnn.lstm_backward(hs, None)
    with pytest.raises(TypeError, match="gru_backward"):
        fastnn.gru_backward(hs, {"cache": 1})
    with pytest.raises(ValueError, match="rnn_cell_backward") as info:
        fastnn.rnn_cell_backward(np.zeros((2, 5)), rnn_cache)
    assert "(2, 5)" in str(info.value)
    with pytest.raises(ValueError, match="lstm_cell_backward"):
        fastnn.lstm_cell_backward(h, np.zeros((3, 4)), lstm_cache)
    with pytest.raises(ValueError, match="rnn_backward"):
        fastnn.rnn_backward(np.zeros((2, 2, 4)), seq_cache)
    x3 = randn(rng, (3, 2, 3))
    _, c_last, lstm_seq_cache = fastnn.lstm_forward(x3, None, None, l_["W"], l_["b"], backend="reference")
    with pytest.raises(ValueError, match="lstm_backward") as info:
        fastnn.lstm_backward(np.zeros((3, 2, 4)), lstm_seq_cache, dc_last=np.zeros((3, 2, 4)))
    assert "dc_last" in str(info.value)


# --------------------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_against_torch(backend, nonlinearity, rng):
    torch = pytest.importorskip("torch")
    need(backend, "rnn_forward", "rnn_backward")
    T, m, n_x, n_a = 4, 3, 5, 6
    torch.manual_seed(int(rng.integers(1 << 31)))
    layer = torch.nn.RNN(n_x, n_a, nonlinearity=nonlinearity).double()
    x, h0 = randn(rng, (T, m, n_x)), randn(rng, (m, n_a))
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0[None], requires_grad=True)
    out, _ = layer(xt, h0t)
    W, b = fastnn.rnn_weights_from_torch(layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                                         layer.bias_hh_l0)
    h, cache = fastnn.rnn_forward(x, h0, W, b, activation=nonlinearity, **on(backend))
    assert_close(h, out.detach().numpy())
    dh = randn(rng, h.shape)
    out.backward(torch.tensor(dh))
    dx, dh0, dW, db = fastnn.rnn_backward(dh, cache)
    assert_close(dx, xt.grad.numpy())
    assert_close(dh0, h0t.grad.numpy()[0])
    assert_close(dW, np.hstack([layer.weight_hh_l0.grad.numpy(), layer.weight_ih_l0.grad.numpy()]))
    assert_close(db, layer.bias_ih_l0.grad.numpy())


def test_lstm_against_torch(backend, rng):
    torch = pytest.importorskip("torch")
    need(backend, "lstm_forward", "lstm_backward")
    T, m, n_x, n_a = 4, 3, 5, 6
    torch.manual_seed(int(rng.integers(1 << 31)))
    layer = torch.nn.LSTM(n_x, n_a).double()
    x, h0, c0 = randn(rng, (T, m, n_x)), randn(rng, (m, n_a)), randn(rng, (m, n_a))
    xt = torch.tensor(x, requires_grad=True)
    h0t, c0t = torch.tensor(h0[None], requires_grad=True), torch.tensor(c0[None], requires_grad=True)
    out, (_, cn) = layer(xt, (h0t, c0t))
    W, b = fastnn.lstm_weights_from_torch(layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                                          layer.bias_hh_l0)
    h, c_last, cache = fastnn.lstm_forward(x, h0, c0, W, b, **on(backend))
    assert_close(h, out.detach().numpy())
    assert_close(c_last, cn.detach().numpy()[0])
    dh, dc_last = randn(rng, h.shape), randn(rng, c_last.shape)
    torch.autograd.backward([out, cn], [torch.tensor(dh), torch.tensor(dc_last[None])])
    dx, dh0, dc0, dW, db = fastnn.lstm_backward(dh, cache, dc_last=dc_last)
    assert_close(dx, xt.grad.numpy())
    assert_close(dh0, h0t.grad.numpy()[0])
    assert_close(dc0, c0t.grad.numpy()[0])
    order = [1, 0, 2, 3]  # torch i, f, g, o -> fastnn f, u, c, o

    def blocks(a):
        return np.concatenate([a[k * n_a:(k + 1) * n_a] for k in order])

    assert_close(dW, np.hstack([blocks(layer.weight_hh_l0.grad.numpy()), blocks(layer.weight_ih_l0.grad.numpy())]))
    assert_close(db, blocks(layer.bias_ih_l0.grad.numpy()))


# --------------------------------------------------------------------------- extreme values

@pytest.mark.parametrize("kind_act", KINDS)
def test_saturated_gates_stay_finite(backend, kind_act, rng):
    """Pre-activations of +-1000 saturate the gates; nothing overflows into NaN."""
    kind, act = kind_act
    need(backend, *kernels(kind, True))
    a = make_seq(kind, 3, 4, 2, 3, np.float64, rng)
    a["W"] = a["W"] * 0
    a["b"] = np.where(np.arange(a["b"].size) % 2 == 0, 1000.0, -1000.0)
    for dtype in (np.float64, np.float32):
        cast = {k: (None if v is None else v.astype(dtype)) for k, v in a.items()}
        outs, cache = seq_forward(kind, act, cast, backend)
        outs_ref, cache_ref = seq_forward(kind, act, cast, module=fastnn.reference)
        for o, r in zip(outs, outs_ref):
            assert np.isfinite(o).all()
            assert_close(o, r, dtype)
        douts = [np.ones(o.shape, dtype) for o in outs]
        grads = seq_backward(kind, douts, cache)
        grads_ref = seq_backward(kind, douts, cache_ref, module=fastnn.reference)
        for name, g in grads.items():
            assert np.isfinite(g).all(), name
            assert_close(g, grads_ref[name], dtype, name)
