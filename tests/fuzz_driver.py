"""Hypothesis fuzz driver for every public fastnn function, meant to run in a child process.

    python tests/fuzz_driver.py --seed 0 --examples 200 [--progress FILE]

Each example builds a valid call of one public function on small random shapes, then
perhaps spoils one argument (a bad value, dtype, shape or memory layout) and picks a
backend (sometimes a bad name). The call must either return what the same call on
the reference backend returns, or raise ValueError/TypeError whose message starts
with the function's name. Forward passes that succeed are followed by their backward
pass, fuzzed the same way. Inputs must come back unmodified and outputs must be new
arrays.

It runs apart from pytest so that a segfault or a hang is a reported failure rather
than a dead test session: before each call the case is written to the progress file,
and a faulthandler watchdog dumps the stacks and exits when one example hangs.
Exit status 0 means every example passed; 1 a contract violation (Hypothesis's
shrunk example is printed); anything else a crash or hang.
"""
import argparse
import faulthandler
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastnn  # noqa: E402
from helpers import VARIANTS, assert_close, assert_fresh, assert_unchanged  # noqa: E402
from optable.recurrent import GATES  # noqa: E402

from hypothesis import HealthCheck, given, seed as hyp_seed, settings, strategies as st  # noqa: E402

BACKENDS = fastnn.available_backends()
# Astronomically large values stay in: they must be refused, not attempted. Merely
# large ones (10**4) are left out because they are valid and slow on the reference.
BAD_SCALARS = [0, -1, -2, 1.5, 2.0, float("nan"), "2", "", None, True, False, 2**40, 2**70, -2**70,
               np.int64(2), np.int32(1), np.uint8(3), np.uint64(2**64 - 1), np.float64(1.0), np.bool_(True),
               (), (1,), (1, 2, 3), (1, "a"), (1.0, 2.0), [1, 2], ((1, 1),), ((1, 1), (1,)), ((1, -1), (0, 0)),
               (np.int64(1), np.int8(2)), "same", "valid", "SAME", b"1", 1j, object()]
BAD_ARRAYS = [None, 3.0, "abc", [[1, "a"]], [[1, 2], [3]], [], np.array(2.0), np.zeros((0,)),
              np.ones((2, 2), dtype=object), np.ones((2, 2), dtype=complex), np.array([["a"]])]
DTYPES = [np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int64, np.uint16, np.bool_,
          np.complex64, object, str]
CURRENT = {"case": "", "nonfinite": False}
OUTCOMES = {}  # (function, "ok" | "error") -> count, printed as evidence of what was exercised
PROGRESS = None


def note(text):
    """Record what is about to run, so a crash or hang can be attributed."""
    CURRENT["case"] = text
    if PROGRESS:
        with open(PROGRESS, "w") as fh:
            fh.write(text)


# --------------------------------------------------------------------------- random arrays

def floats(draw, shape, label):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label=f"{label} seed"))
    arr = np.asarray(rng.standard_normal(shape))
    if arr.size and draw(st.integers(0, 9), label=f"{label} special?") == 0:
        arr.flat[rng.integers(arr.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]), label=f"{label} special")
        CURRENT["nonfinite"] = True
    return arr


def spoil_array(draw, arr, label):
    """Maybe replace a valid array by an odd but valid one, or a bad one."""
    what = draw(st.sampled_from(["keep"] * 6 + ["variant", "dtype", "shape", "bad"]), label=f"{label} change")
    if what == "variant":
        name = draw(st.sampled_from(sorted(VARIANTS)), label=f"{label} variant")
        return VARIANTS[name][0](arr)
    if what == "dtype":
        dtype = draw(st.sampled_from(DTYPES), label=f"{label} dtype")
        if np.dtype(dtype).kind in "iub":
            return np.nan_to_num(np.round(arr * 2)).astype(dtype)
        return arr.astype(dtype)
    if what == "shape":
        shape = list(arr.shape)
        how = draw(st.sampled_from(["drop", "add", "resize"]), label=f"{label} reshape")
        if how == "drop" and shape:
            shape.pop(draw(st.integers(0, len(shape) - 1)))
        elif how == "add":
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(0, 2)))
        elif shape:
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 4))
        return np.ones(shape) * 0.5
    if what == "bad":
        return draw(st.sampled_from(BAD_ARRAYS), label=f"{label} bad")
    return arr


def spoil_params(draw, kwargs):
    """Maybe replace one keyword parameter by a bad value."""
    names = [k for k in kwargs if k != "backend"]
    if names and draw(st.integers(0, 3), label="spoil param?") == 0:
        name = draw(st.sampled_from(names), label="spoiled param")
        kwargs[name] = draw(st.sampled_from(BAD_SCALARS), label=f"bad {name}")
    return kwargs


def small_pair(draw, label, lo=1, hi=3):
    if draw(st.booleans(), label=f"{label} pair?"):
        return (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))
    return draw(st.integers(lo, hi), label=label)


# --------------------------------------------------------------------------- valid calls

def conv_call(draw):
    layout = draw(st.sampled_from(["NHWC", "NCHW"]), label="layout")
    groups = draw(st.sampled_from([1, 1, 2]), label="groups")
    c_in, c_out = groups * draw(st.integers(0, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = small_pair(draw, "dilation", 1, 2)
    dh, dw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    # mostly big enough for the dilated kernel, so that most calls are valid
    n = draw(st.integers(0, 2))
    h, w = (draw(st.integers(max(1, d * (k - 1)), d * (k - 1) + 3)) for k, d in ((kh, dh), (kw, dw)))
    x = floats(draw, (n, h, w, c_in), "x")
    wt = floats(draw, (kh, kw, c_in // groups, c_out), "w")
    if layout == "NCHW":
        x, wt = x.transpose(0, 3, 1, 2).copy(), wt.transpose(3, 2, 0, 1).copy()
    b = draw(st.sampled_from([None, (c_out,), (1, 1, 1, c_out)]), label="b shape")
    b = None if b is None else floats(draw, b, "b")
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["same", "valid"]),
                             st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                       st.tuples(st.integers(0, 2), st.integers(0, 2)))), label="padding")
    kwargs = dict(stride=small_pair(draw, "stride"), padding=padding, dilation=dilation, groups=groups, layout=layout)
    return [x, wt, b], kwargs


def patch_kwargs(draw):
    return dict(stride=small_pair(draw, "stride"), padding=draw(st.integers(0, 1), label="padding"),
                dilation=small_pair(draw, "dilation", 1, 2), layout=draw(st.sampled_from(["NHWC", "NCHW"])))


def im2col_call(draw):
    x = floats(draw, (draw(st.integers(0, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)),
                      draw(st.integers(1, 3))), "x")
    return [x, small_pair(draw, "kernel_size")], patch_kwargs(draw)


def col2im_call(draw):
    x_shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    ksize, kwargs = small_pair(draw, "kernel_size"), patch_kwargs(draw)
    try:
        rows, cols = fastnn.reference.im2col(np.zeros(x_shape), ksize, **kwargs).shape
    except ValueError:
        rows, cols = 2, 3  # the geometry is invalid anyway; col2im must say so
    return [floats(draw, (rows, cols), "cols"), x_shape, ksize], kwargs


def pool_call(draw, mode):
    layout = draw(st.sampled_from(["NHWC", "NCHW"]), label="layout")
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if mode == "max" else (1, 1)
    pads = tuple(draw(st.integers(0, (d * (k - 1) + 1) // 2)) for k, d in ((kh, dil[0]), (kw, dil[1])))
    x = floats(draw, (draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 6)),
                      draw(st.integers(1, 6))), "x")
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    kwargs = dict(ceil_mode=draw(st.booleans(), label="ceil_mode"), layout=layout)
    if mode == "max":
        kwargs["dilation"] = dil
    else:
        kwargs["count_include_pad"] = draw(st.booleans(), label="count_include_pad")
    return [x, (kh, kw), stride, pads], kwargs


def bmm_call(draw, with_dc=False):
    batch = draw(st.lists(st.integers(0, 2), max_size=2), label="batch")
    a_batch = [d if draw(st.booleans()) else 1 for d in batch]
    b_batch = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))):]
    m, k, n = (draw(st.integers(0, 3), label=s) for s in "mkn")
    a_shape = (k,) if draw(st.integers(0, 5)) == 0 else tuple(a_batch) + (m, k)
    b_shape = (k,) if draw(st.integers(0, 5)) == 0 else tuple(b_batch) + (k, n)
    a, b = floats(draw, a_shape, "a"), floats(draw, b_shape, "b")
    if not with_dc:
        return [a, b], {}
    return [floats(draw, np.matmul(a, b).shape, "dc"), a, b], {}


def recurrent_call(draw, kind, sequence):
    t, m, n_x, n_a = draw(st.integers(1, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(1, 3))
    x = floats(draw, (t, m, n_x) if sequence else (m, n_x), "x")
    states = [None if draw(st.integers(0, 3)) == 0 else floats(draw, (m, n_a), f"state{i}")
              for i in range(2 if kind == "lstm" else 1)]
    W = floats(draw, (GATES[kind] * n_a, n_a + n_x), "W") * 0.5
    b = floats(draw, draw(st.sampled_from([(GATES[kind] * n_a,), (GATES[kind] * n_a, 1)])), "b")
    kwargs = {"activation": draw(st.sampled_from(["tanh", "relu"]))} if kind == "rnn" else {}
    return [x, *states, W, b], kwargs


def converter_call(draw, name):
    n_a, n_x = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    if name.endswith("_torch"):
        gates = 4 if name.startswith("lstm") else 1
        args = [floats(draw, (gates * n_a, n_x), "weight_ih"), floats(draw, (gates * n_a, n_a), "weight_hh"),
                None if draw(st.booleans()) else floats(draw, (gates * n_a,), "bias_ih"),
                None if draw(st.booleans()) else floats(draw, (gates * n_a,), "bias_hh")]
        return args, {}
    if name.startswith("rnn"):
        params = {"Waa": floats(draw, (n_a, n_a), "Waa"), "Wax": floats(draw, (n_a, n_x), "Wax"),
                  "ba": floats(draw, (n_a, 1), "ba")}
    else:
        gates = "fico" if name.startswith("lstm") else "urc"
        params = {}
        for g in gates:
            params["W" + g] = floats(draw, (n_a, n_a + n_x), "W" + g)
            params["b" + g] = floats(draw, (n_a, 1), "b" + g)
    how = draw(st.sampled_from(["keep"] * 4 + ["drop", "spoil", "not a dict"]), label="params change")
    if how == "drop":
        params.pop(draw(st.sampled_from(sorted(params))))
    elif how == "spoil":
        key = draw(st.sampled_from(sorted(params)))
        params[key] = spoil_array(draw, params[key], key)
    elif how == "not a dict":
        params = draw(st.sampled_from([None, [1, 2], "params", list(params.items())]))
    return [params], {}


def linear_call(draw):
    n_in, n_out = draw(st.integers(0, 3), label="n_in"), draw(st.integers(1, 3), label="n_out")
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2), label="batch"))
    x, w = floats(draw, batch + (n_in,), "x"), floats(draw, (n_out, n_in), "w")
    b = draw(st.sampled_from([None, (n_out,), (1, n_out), (n_out, 1)]), label="b shape")
    kwargs = {"activation": draw(st.sampled_from(ACTIVATIONS), label="activation")}
    if kwargs["activation"] == "leaky_relu" and draw(st.booleans(), label="alpha?"):
        kwargs["alpha"] = draw(st.sampled_from([0.0, 0.2, 1.5]), label="alpha")
    return [x, w, None if b is None else floats(draw, b, "b")], kwargs


def activation_call(draw):
    z = floats(draw, tuple(draw(st.lists(st.integers(0, 3), max_size=3), label="shape")), "z")
    return [z, draw(st.sampled_from([k for k in ACTIVATIONS if k is not None]), label="kind")], {}


def softmax_call(draw):
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=3), label="shape"))
    return [floats(draw, shape, "z")], {"axis": draw(st.integers(-len(shape), len(shape) - 1), label="axis")}


def cross_entropy_call(draw, kind):
    lead = tuple(draw(st.lists(st.integers(0, 3), max_size=2), label="batch"))
    classes = draw(st.integers(1, 4), label="classes")
    logits = floats(draw, lead + (classes,), "logits")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="target seed"))
    if kind == "softmax" and draw(st.booleans(), label="indices?"):
        target = rng.integers(0, classes, lead)
    elif kind == "softmax":
        target = rng.dirichlet(np.ones(classes), lead) if lead else rng.dirichlet(np.ones(classes))
    else:
        target = rng.random(logits.shape)
    return [logits, target], {"reduction": draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")}


def batch_norm_call(draw, inference=False):
    layout = draw(st.sampled_from(["NHWC", "NCHW", "dense"]), label="layout")
    n, c = draw(st.integers(0 if inference else 1, 3), label="N"), draw(st.integers(1, 3), label="C")
    if layout == "dense":
        x, kwargs = floats(draw, (n, c), "x"), {}
    else:
        h, w = draw(st.integers(1, 3), label="H"), draw(st.integers(1, 3), label="W")
        x = floats(draw, (n, h, w, c) if layout == "NHWC" else (n, c, h, w), "x")
        kwargs = {"layout": layout}
    if draw(st.booleans(), label="eps?"):
        kwargs["eps"] = draw(st.sampled_from([1e-3, 1e-8, 0.5]), label="eps")
    args = [x, floats(draw, (c,), "gamma"), floats(draw, (c,), "beta")]
    if inference:
        args += [floats(draw, (c,), "mean"), np.abs(floats(draw, (c,), "var"))]
    return args, kwargs


def dropout_call(draw):
    x = floats(draw, tuple(draw(st.lists(st.integers(0, 3), max_size=3), label="shape")), "x")
    keep = draw(st.sampled_from([1.0, 0.5, 0.8, 0.999]), label="keep_prob")
    # a seed, so that the call and the reference's draw the same mask
    return [x, keep], {"rng": draw(st.integers(0, 2**32 - 1), label="rng seed")}


def embedding_call(draw):
    vocab, dim = draw(st.integers(1, 5), label="V"), draw(st.integers(0, 3), label="D")
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=2), label="ids shape"))
    ids = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="ids seed")).integers(0, vocab, shape)
    return [ids, floats(draw, (vocab, dim), "table")], {}


ACTIVATIONS = [None, "relu", "leaky_relu", "sigmoid", "tanh"]


def forward_calls():
    calls = {
        "conv2d": conv_call, "conv2d_forward": conv_call, "im2col": im2col_call, "col2im": col2im_call,
        "max_pool2d": lambda d: pool_call(d, "max"), "avg_pool2d": lambda d: pool_call(d, "avg"),
        "bmm": bmm_call, "bmm_backward": lambda d: bmm_call(d, True),
    }

    def pool_forward(draw):
        mode = draw(st.sampled_from(["max", "avg", "average"]), label="mode")
        args, kwargs = pool_call(draw, "avg" if mode == "average" else mode)
        return args, dict(kwargs, mode=mode)

    def global_pool(draw):
        return [floats(draw, (draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4)),
                              draw(st.integers(1, 4))), "x")], dict(
            layout=draw(st.sampled_from(["NHWC", "NCHW"])), keepdims=draw(st.booleans()))

    calls.update({
        "linear_forward": linear_call, "activation_forward": activation_call, "softmax": softmax_call,
        "softmax_cross_entropy_forward": lambda d: cross_entropy_call(d, "softmax"),
        "sigmoid_cross_entropy_forward": lambda d: cross_entropy_call(d, "sigmoid"),
        "batch_norm_forward": batch_norm_call, "batch_norm_inference": lambda d: batch_norm_call(d, True),
        "dropout_forward": dropout_call, "embedding_forward": embedding_call,
    })
    calls["pool2d_forward"] = pool_forward
    calls["global_avg_pool2d"] = calls["global_max_pool2d"] = global_pool
    for kind in GATES:
        calls[f"{kind}_cell_forward"] = (lambda k: lambda d: recurrent_call(d, k, False))(kind)
        calls[f"{kind}_forward"] = (lambda k: lambda d: recurrent_call(d, k, True))(kind)
    for name in ("lstm_weights_from_course", "lstm_weights_from_torch", "rnn_weights_from_course",
                 "rnn_weights_from_torch", "gru_weights_from_course"):
        calls[name] = (lambda n: lambda d: converter_call(d, n))(name)
    return calls


CALLS = forward_calls()
BACKWARD = {"conv2d_forward": "conv2d_backward", "pool2d_forward": "pool2d_backward",
            "rnn_cell_forward": "rnn_cell_backward", "gru_cell_forward": "gru_cell_backward",
            "lstm_cell_forward": "lstm_cell_backward", "rnn_forward": "rnn_backward",
            "gru_forward": "gru_backward", "lstm_forward": "lstm_backward",
            "linear_forward": "linear_backward", "activation_forward": "activation_backward",
            "softmax_cross_entropy_forward": "softmax_cross_entropy_backward",
            "sigmoid_cross_entropy_forward": "sigmoid_cross_entropy_backward",
            "batch_norm_forward": "batch_norm_backward", "dropout_forward": "dropout_backward",
            "embedding_forward": "embedding_backward"}
# backward passes called as (cache, dloss=...) rather than (gradient, cache)
CACHE_FIRST = ("softmax_cross_entropy_backward", "sigmoid_cross_entropy_backward")


# --------------------------------------------------------------------------- checking one call

def _arrays(values):
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(a for a in v.values() if isinstance(a, np.ndarray))
    return out


def _outputs(result):
    """(arrays to compare, cache or None) of a public call's result."""
    items = result if isinstance(result, tuple) else (result,)
    cache = items[-1] if items and type(items[-1]).__name__ == "Cache" else None
    return [i for i in items if i is not cache], cache


def attempt(fn_name, func, args, kwargs):
    """Run func; (result, None) or (None, exc) for an allowed error; anything else propagates."""
    note(f"{fn_name}(args={args!r}, kwargs={kwargs!r})")
    try:
        result = func(*args, **kwargs)
        OUTCOMES[fn_name, "ok"] = OUTCOMES.get((fn_name, "ok"), 0) + 1
        return result, None
    except (ValueError, TypeError) as exc:
        OUTCOMES[fn_name, "error"] = OUTCOMES.get((fn_name, "error"), 0) + 1
        msg = str(exc)
        if not msg.startswith(fn_name):
            raise AssertionError(f"{fn_name} raised {type(exc).__name__} not naming the function: {msg!r}") from exc
        return None, exc


def check_same(fn_name, got, want):
    got_arrays, _ = _outputs(got)
    want_arrays, _ = _outputs(want)
    assert len(got_arrays) == len(want_arrays), f"{fn_name}: {len(got_arrays)} outputs, reference {len(want_arrays)}"
    for k, (g, w) in enumerate(zip(got_arrays, want_arrays)):
        if w is None:
            assert g is None, f"{fn_name}: output {k} is not None like the reference's"
            continue
        assert isinstance(g, np.ndarray), f"{fn_name}: output {k} is a {type(g).__name__}"
        assert g.dtype == w.dtype, f"{fn_name}: output {k} dtype {g.dtype}, reference {w.dtype}"
        if CURRENT["nonfinite"]:
            # BLAS may skip products with an exact zero, so whether NaN * 0 and Inf * 0
            # reach the result depends on the library; compare where both are finite.
            # Targeted NaN/Inf propagation tests live in test_robustness.py.
            assert g.shape == w.shape, f"{fn_name}: output {k} shape {g.shape}, reference {w.shape}"
            both = np.isfinite(g) & np.isfinite(w)
            g, w = np.where(both, g, 0), np.where(both, w, 0)
        assert_close(g, w, g.dtype, what=f"{fn_name} output {k}")


def run_checked(fn_name, args, kwargs, backend):
    """The call on `backend` against the reference; returns both results (None after an error)."""
    inputs = _arrays(args) + _arrays(kwargs.values())
    before = [a.copy() for a in inputs]
    func = getattr(fastnn, fn_name)
    takes_backend = "backend" in func.__code__.co_varnames
    extra = {"backend": backend} if takes_backend else {}
    got, err = attempt(fn_name, func, args, {**kwargs, **extra})
    want = None
    if got is not None:
        ref_extra = {"backend": "reference"} if takes_backend else {}
        want, ref_err = attempt(fn_name, func, args, {**kwargs, **ref_extra})
        assert ref_err is None, f"{fn_name}: backend {backend!r} returned but the reference raised {ref_err!r}"
        check_same(fn_name, got, want)
        assert_fresh(_outputs(got)[0], inputs, fn_name)
    assert_unchanged(before, inputs, fn_name)
    return got, want


def run_backward(draw, fwd_name, got, want):
    """Fuzz the backward pass of a forward that succeeded; compare with the reference's."""
    bwd_name = BACKWARD[fwd_name]
    outs, cache = _outputs(got)
    ref_outs, ref_cache = _outputs(want)
    grads = [spoil_array(draw, floats(draw, o.shape, f"d{k}"), f"d{k}") for k, o in enumerate(outs)]
    if bwd_name == "lstm_backward" and draw(st.booleans(), label="dc_last None"):
        grads[1] = None
    which = draw(st.sampled_from(["own"] * 8 + ["reference's", "junk"]), label="cache")
    if which == "junk":
        cache = ref_cache = draw(st.sampled_from([None, "cache", (1, 2), {}]), label="junk cache")
    elif which == "reference's":
        cache = ref_cache  # a reference cache is a valid cache too

    def call(c):
        if bwd_name == "lstm_backward":
            return [grads[0], c], {"dc_last": grads[1]}
        if bwd_name == "lstm_cell_backward":
            return [grads[0], grads[1], c], {}
        if bwd_name in CACHE_FIRST:
            return [c], {"dloss": grads[0]}
        return [grads[0], c], {}

    inputs = _arrays(grads)
    before = [a.copy() for a in inputs]
    func = getattr(fastnn, bwd_name)
    args, kwargs = call(cache)
    res, err = attempt(bwd_name, func, args, kwargs)
    if res is not None:
        ref_args, ref_kwargs = call(ref_cache)
        ref, ref_err = attempt(bwd_name, func, ref_args, ref_kwargs)
        assert ref_err is None, f"{bwd_name}: returned but the reference raised {ref_err!r}"
        check_same(bwd_name, res, ref)
        assert_fresh(_outputs(res)[0], inputs, bwd_name)
    assert_unchanged(before, inputs, bwd_name)
    # Every backward must refuse what is not a cache of its own forward, whatever the gradients.
    junk_args, junk_kwargs = call(draw(st.sampled_from([None, "cache", (1, 2), {}]), label="junk probe"))
    _, junk_err = attempt(bwd_name, func, junk_args, junk_kwargs)
    assert junk_err is not None, f"{bwd_name} accepted a junk cache"


def one_example(data):
    draw = data.draw
    CURRENT["nonfinite"] = False
    fn_name = draw(st.sampled_from(sorted(CALLS)), label="function")
    args, kwargs = CALLS[fn_name](draw)
    if args and draw(st.integers(0, 2), label="spoil an array?") == 0:
        i = draw(st.integers(0, len(args) - 1), label="spoiled arg")
        if isinstance(args[i], np.ndarray):
            args[i] = spoil_array(draw, args[i], f"arg{i}")
        else:
            args[i] = draw(st.sampled_from(BAD_SCALARS + BAD_ARRAYS[:4]), label=f"bad arg{i}")
    kwargs = spoil_params(draw, kwargs)
    backend = draw(st.sampled_from(BACKENDS + BACKENDS + [None, "nope", 3, ""]), label="backend")
    got, want = run_checked(fn_name, args, kwargs, backend)
    if got is not None and fn_name in BACKWARD:
        run_backward(draw, fn_name, got, want)
    note("")


def main(argv=None):
    global PROGRESS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--hang-seconds", type=float, default=120.0,
                        help="a single example running this long counts as a hang")
    parser.add_argument("--progress", default=None, help="file holding the case being run")
    opts = parser.parse_args(argv)
    PROGRESS = opts.progress
    faulthandler.enable()  # a segfault prints the Python stack before the process dies
    np.seterr(all="ignore")  # NaN/Inf inputs are fuzzed on purpose
    count = {"n": 0}

    @hyp_seed(opts.seed)
    @settings(max_examples=opts.examples, deadline=None, database=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        count["n"] += 1
        faulthandler.dump_traceback_later(opts.hang_seconds, exit=True)
        try:
            one_example(data)
        finally:
            faulthandler.cancel_dump_traceback_later()

    try:
        fuzz()
    except Exception as exc:  # a contract violation: Hypothesis has printed the shrunk example
        import traceback
        traceback.print_exc()
        print(f"FUZZ FAILED after {count['n']} examples (seed {opts.seed}): "
              f"{type(exc).__name__}: {str(exc)[:2000]}\nlast case: {CURRENT['case'][:2000]}", flush=True)
        return 1
    for fn_name in sorted({k[0] for k in OUTCOMES}):
        print(f"  {fn_name}: {OUTCOMES.get((fn_name, 'ok'), 0)} results, {OUTCOMES.get((fn_name, 'error'), 0)} errors")
    print(f"FUZZ OK {count['n']} examples (seed {opts.seed}, backends {BACKENDS})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
