"""Hypothesis-drawn geometries: every backend against the naive twins (and both raise or neither)."""
import numpy as np
import pytest

import fastnn
import naive
from helpers import assert_close, need, nonzero, on, tie_free

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

small = st.integers(1, 3)
pairs = st.one_of(small, st.tuples(small, small))


@st.composite
def conv_padding(draw):
    form = draw(st.sampled_from(["int", "pair", "four", "same", "valid"]))
    p = st.integers(0, 2)
    if form == "int":
        return draw(p)
    if form == "pair":
        return (draw(p), draw(p))
    if form == "four":
        return ((draw(p), draw(p)), (draw(p), draw(p)))
    return form


@given(data=st.data())
def test_conv_geometry_property(backend, data):
    need(backend, "conv2d_forward")
    groups = data.draw(st.sampled_from([1, 1, 2]), label="groups")
    c_in, c_out = groups * data.draw(small, label="c_in/g"), groups * data.draw(small, label="c_out/g")
    k, stride, dilation = data.draw(pairs, label="k"), data.draw(pairs, label="stride"), data.draw(
        st.one_of(st.integers(1, 2), st.tuples(st.integers(1, 2), st.integers(1, 2))), label="dilation")
    padding = data.draw(conv_padding(), label="padding")
    H, W, N = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W"), data.draw(
        st.integers(0, 2), label="N")
    layout = data.draw(st.sampled_from(["NHWC", "NCHW"]), label="layout")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    kh, kw = naive.pair(k)
    x = rng.standard_normal((N, H, W, c_in)).astype(dtype)
    w = rng.standard_normal((kh, kw, c_in // groups, c_out)).astype(dtype)
    b = nonzero(rng, (c_out,), dtype)
    pads = naive.conv_pads(padding, (H, W), (kh, kw), naive.pair(stride), naive.pair(dilation))
    h_out = naive.conv_out(H, pads[0], pads[1], kh, naive.pair(stride)[0], naive.pair(dilation)[0])
    w_out = naive.conv_out(W, pads[2], pads[3], kw, naive.pair(stride)[1], naive.pair(dilation)[1])
    xa, wa = (x, w) if layout == "NHWC" else (x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, layout=layout)
    if h_out < 1 or w_out < 1:
        with pytest.raises(ValueError, match="conv2d"):
            fastnn.conv2d(xa, wa, b, **kwargs, **on(backend))
        return
    y = fastnn.conv2d(xa, wa, b, **kwargs, **on(backend))
    want = naive.conv2d_nhwc(x, w, b, naive.pair(stride), pads, naive.pair(dilation), groups)
    if layout == "NCHW":
        want = want.transpose(0, 3, 1, 2)
    assert y.dtype == dtype
    assert_close(y, want, dtype)


@given(data=st.data())
def test_pool_geometry_property(backend, data):
    need(backend, "pool2d_forward")
    mode = data.draw(st.sampled_from(["max", "avg"]), label="mode")
    kh, kw = data.draw(small, label="kh"), data.draw(small, label="kw")
    stride = data.draw(st.one_of(st.none(), pairs), label="stride")
    dh, dw = (data.draw(st.integers(1, 2), label="dh"), data.draw(st.integers(1, 2), label="dw")) \
        if mode == "max" else (1, 1)
    ph = data.draw(st.integers(0, (dh * (kh - 1) + 1) // 2), label="ph")
    pw = data.draw(st.integers(0, (dw * (kw - 1) + 1) // 2), label="pw")
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    cip = data.draw(st.booleans(), label="count_include_pad")
    H, W = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    layout = data.draw(st.sampled_from(["NHWC", "NCHW"]), label="layout")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = tie_free(rng, (2, H, W, 2))
    s = naive.pair(stride if stride is not None else (kh, kw))
    h_out = naive.pool_out(H, kh, s[0], ph, dh, ceil_mode)
    w_out = naive.pool_out(W, kw, s[1], pw, dw, ceil_mode)
    xa = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
    extra = dict(dilation=(dh, dw)) if mode == "max" else dict(count_include_pad=cip)
    call = lambda: fastnn.pool2d_forward(xa, (kh, kw), stride, (ph, pw), mode=mode, ceil_mode=ceil_mode,  # noqa
                                         layout=layout, **extra, **on(backend))[0]
    if h_out < 1 or w_out < 1:
        with pytest.raises(ValueError, match="pool2d_forward"):
            call()
        return
    y = call()
    want = naive.pool2d_nhwc(x, mode, (kh, kw), s, (ph, pw), (dh, dw), ceil_mode, cip)
    if layout == "NCHW":
        want = want.transpose(0, 3, 1, 2)
    assert_close(y, want)


@given(data=st.data())
def test_bmm_broadcast_property(backend, data):
    need(backend, "bmm")
    batch = data.draw(st.lists(st.integers(0, 3), max_size=3), label="batch")
    a_batch = [d if data.draw(st.booleans()) else 1 for d in batch]
    b_batch = [d if data.draw(st.booleans()) else 1 for d in batch][data.draw(st.integers(0, len(batch))):]
    m, k, n = (data.draw(st.integers(0, 4), label=s) for s in "mkn")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    a = rng.standard_normal(tuple(a_batch) + (m, k))
    b = rng.standard_normal(tuple(b_batch) + (k, n))
    assert_close(fastnn.bmm(a, b, **on(backend)), np.matmul(a, b))
