"""The caller owns what a forward pass returns, on every backend: writing into an output
(``h *= mask``, ``y += 1``) changes nothing its backward pass computes, and no output
shares memory with the inputs or with another output."""
import numpy as np
import pytest

import fastnn

T, M, NX, NA = 4, 12, 5, 16  # m >= 12 reaches the cython backend's fused LSTM step


def _recurrent_cases(rng):
    x = rng.standard_normal((T, M, NX))
    xt = x[0]
    h0 = rng.standard_normal((M, NA))
    c0 = rng.standard_normal((M, NA))

    def w(gates):
        return (0.3 * rng.standard_normal((gates * NA, NA + NX)), 0.1 * rng.standard_normal(gates * NA))

    (wr, br), (wg, bg), (wl, bl) = w(1), w(3), w(4)
    dh = rng.standard_normal((T, M, NA))
    dht, dct = rng.standard_normal((M, NA)), rng.standard_normal((M, NA))
    return {
        "rnn": (lambda be: fastnn.rnn_forward(x, h0, wr, br, backend=be),
                lambda out, cache: fastnn.rnn_backward(dh, cache)),
        "gru": (lambda be: fastnn.gru_forward(x, h0, wg, bg, backend=be),
                lambda out, cache: fastnn.gru_backward(dh, cache)),
        "lstm": (lambda be: fastnn.lstm_forward(x, h0, c0, wl, bl, backend=be),
                 lambda out, cache: fastnn.lstm_backward(dh, cache, dc_last=dct)),
        "rnn_cell": (lambda be: fastnn.rnn_cell_forward(xt, h0, wr, br, backend=be),
                     lambda out, cache: fastnn.rnn_cell_backward(dht, cache)),
        "gru_cell": (lambda be: fastnn.gru_cell_forward(xt, h0, wg, bg, backend=be),
                     lambda out, cache: fastnn.gru_cell_backward(dht, cache)),
        "lstm_cell": (lambda be: fastnn.lstm_cell_forward(xt, h0, c0, wl, bl, backend=be),
                      lambda out, cache: fastnn.lstm_cell_backward(dht, dct, cache)),
    }


def _image_cases(rng):
    x = rng.standard_normal((2, 7, 7, 16))
    w = 0.2 * rng.standard_normal((3, 3, 16, 8))
    b = rng.standard_normal(8)
    dy_conv = rng.standard_normal((2, 7, 7, 8))
    dy_pool = rng.standard_normal((2, 3, 3, 16))
    return {
        "conv2d": (lambda be: fastnn.conv2d_forward(x, w, b, padding=1, backend=be),
                   lambda out, cache: fastnn.conv2d_backward(dy_conv, cache)),
        "max_pool": (lambda be: fastnn.pool2d_forward(x, 3, stride=2, mode="max", backend=be),
                     lambda out, cache: fastnn.pool2d_backward(dy_pool, cache)),
        "avg_pool": (lambda be: fastnn.pool2d_forward(x, 3, stride=2, mode="avg", backend=be),
                     lambda out, cache: fastnn.pool2d_backward(dy_pool, cache)),
    }


OPS = ["rnn", "gru", "lstm", "rnn_cell", "gru_cell", "lstm_cell", "conv2d", "max_pool", "avg_pool"]


def _case(op, rng):
    cases = {**_recurrent_cases(rng), **_image_cases(rng)}
    return cases[op]


@pytest.mark.parametrize("op", OPS)
def test_writing_into_outputs_changes_no_gradient(op, backend, rng):
    forward, backward = _case(op, rng)
    *outputs, cache = forward(backend)
    expected = [g.copy() for g in backward(outputs, cache)]

    *outputs, cache = forward(backend)
    for y in outputs:
        assert y.flags.writeable, f"{op} ({backend}): an output is read-only"
        y *= 0.0
        y += 7.0
    got = backward(outputs, cache)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e, err_msg=f"{op} ({backend}): a write into an output changed a gradient")


@pytest.mark.parametrize("op", OPS)
def test_outputs_share_no_memory(op, backend, rng):
    forward, _ = _case(op, rng)
    *outputs, cache = forward(backend)
    for i, y in enumerate(outputs):
        for z in outputs[i + 1:]:
            assert not np.shares_memory(y, z), f"{op} ({backend}): two outputs share memory"
