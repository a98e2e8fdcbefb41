"""RNN, GRU and LSTM: single cell steps and whole sequences, forward and backward.

Batch-major arrays, time-major sequences, weights stacked the course's way acting
on concat = [h_prev, x_t] (hidden state first):

    RNN   W (n_a, n_a + n_x),    b (n_a,)      h = tanh(z) (or relu)
    GRU   W (3 n_a, n_a + n_x),  b (3 n_a,)    rows [W_u; W_r; W_c]
    LSTM  W (4 n_a, n_a + n_x),  b (4 n_a,)    rows [W_f; W_u; W_c; W_o]

b may have any shape holding those values (the course's (n_a, 1) included); db
comes back in b's shape.
"""
import numpy as np

from . import _args as A
from . import _backends

__all__ = ["rnn_cell_forward", "rnn_cell_backward", "gru_cell_forward", "gru_cell_backward", "lstm_cell_forward",
           "lstm_cell_backward", "rnn_forward", "rnn_backward", "gru_forward", "gru_backward", "lstm_forward",
           "lstm_backward"]

_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_ACTIVATIONS = ("tanh", "relu")


_NAMES = {True: ("x", "h0", "c0", "W", "b"), False: ("x_t", "h_prev", "c_prev", "W", "b")}


def _prepare(fn, kind, x, h, c, W, b, sequence):
    """Validate and normalise the arguments of one recurrent forward call (kept lean:
    at batch 1 a whole LSTM sequence takes about 100 microseconds)."""
    gates = _GATES[kind]
    names = _NAMES[sequence]
    xname, hname, cname = names[:3]
    (x, h, c, W, b), dtype = A.as_array_list(fn, names, (x, h, c, W, b), optional=names[1:3])
    A.check_ndim(fn, xname, x, 3 if sequence else 2, "(T, m, n_x)" if sequence else "(m, n_x)")
    if sequence and x.shape[0] < 1:
        raise ValueError(f"{fn}: x must hold at least one time step, got shape {x.shape}")
    m, n_x = x.shape[-2:]
    A.check_ndim(fn, "W", W, 2, f"({gates} n_a, n_a + n_x)" if gates > 1 else "(n_a, n_a + n_x)")
    if W.shape[0] % gates:
        raise ValueError(f"{fn}: W must have {gates} * n_a rows ({kind.upper()} gates stacked), got shape {W.shape}")
    n_a = W.shape[0] // gates
    if W.shape[1] != n_a + n_x:
        raise ValueError(
            f"{fn}: W must have shape ({gates * n_a}, n_a + n_x) = ({gates * n_a}, {n_a + n_x}) "
            f"for n_a={n_a} and {xname} {x.shape}, got {W.shape}"
        )
    if sequence:
        A.check_output_size(fn, "h", (x.shape[0], m, n_a), dtype)
    shape = (m, n_a)
    states = []
    for name, arr in ((hname, h), (cname, c)):
        if name == cname and kind != "lstm":
            states.append(None)
            continue
        if arr is None:
            arr = np.zeros(shape, dtype)
        elif arr.shape != shape:
            raise ValueError(f"{fn}: {name} must have shape (m, n_a) = {shape} for {xname} {x.shape} "
                             f"and W {W.shape}, got {arr.shape}")
        states.append(np.ascontiguousarray(arr, dtype=dtype))
    b_shape = b.shape
    b = A.bias_vector(fn, "b", b, gates * n_a, f"{gates} * n_a")
    return dict(x=np.ascontiguousarray(x, dtype=dtype), h=states[0], c=states[1],
                W=np.ascontiguousarray(W, dtype=dtype), b=np.ascontiguousarray(b, dtype=dtype),
                dtype=dtype, b_shape=b_shape, shape=shape)


def _grad(fn, name, value, shape, dtype):
    return A.contiguous(A.grad_array(fn, name, value, shape), dtype)


def _finish(cache, grads):
    """Put db back into b's shape (the last gradient of every backward)."""
    return grads[:-1] + (grads[-1].reshape(cache.meta["b_shape"]),)


def _run_forward(fn, kernel_name, backend, args, p, **meta):
    name, kernel = _backends.resolve(fn, kernel_name, backend)
    *outputs, state = kernel(*args)
    outputs = A.owned_outputs(outputs, state)
    cache = A.Cache(kernel_name.rsplit("_", 1)[0], name, state, dtype=p["dtype"], b_shape=p["b_shape"],
                    out_shape=outputs[0].shape, **meta)
    return (*outputs, cache)


# ---------------------------------------------------------------- cells

def rnn_cell_forward(x_t, h_prev, W, b, *, activation="tanh", backend=None):
    """One RNN step: h_next = tanh([h_prev, x_t] @ W.T + b) (or relu). Returns (h_next, cache)."""
    fn = "rnn_cell_forward"
    activation = A.choice(fn, "activation", activation, _ACTIVATIONS)
    p = _prepare(fn, "rnn", x_t, h_prev, None, W, b, sequence=False)
    return _run_forward(fn, "rnn_cell_forward", backend, (p["x"], p["h"], p["W"], p["b"], activation), p)


def rnn_cell_backward(dh_next, cache):
    """Gradients (dx_t, dh_prev, dW, db) of one RNN step."""
    fn = "rnn_cell_backward"
    A.check_cache(fn, cache, "rnn_cell")
    dh = _grad(fn, "dh_next", dh_next, cache.meta["out_shape"], cache.meta["dtype"])
    return _finish(cache, _backends.kernel_of(cache.backend, "rnn_cell_backward")(dh, cache.state))


def gru_cell_forward(x_t, h_prev, W, b, *, backend=None):
    """One GRU step (the course's full GRU). Returns (h_next, cache)."""
    fn = "gru_cell_forward"
    p = _prepare(fn, "gru", x_t, h_prev, None, W, b, sequence=False)
    return _run_forward(fn, "gru_cell_forward", backend, (p["x"], p["h"], p["W"], p["b"]), p)


def gru_cell_backward(dh_next, cache):
    """Gradients (dx_t, dh_prev, dW, db) of one GRU step."""
    fn = "gru_cell_backward"
    A.check_cache(fn, cache, "gru_cell")
    dh = _grad(fn, "dh_next", dh_next, cache.meta["out_shape"], cache.meta["dtype"])
    return _finish(cache, _backends.kernel_of(cache.backend, "gru_cell_backward")(dh, cache.state))


def lstm_cell_forward(x_t, h_prev, c_prev, W, b, *, backend=None):
    """One LSTM step. Returns (h_next, c_next, cache)."""
    fn = "lstm_cell_forward"
    p = _prepare(fn, "lstm", x_t, h_prev, c_prev, W, b, sequence=False)
    return _run_forward(fn, "lstm_cell_forward", backend, (p["x"], p["h"], p["c"], p["W"], p["b"]), p)


def lstm_cell_backward(dh_next, dc_next, cache):
    """Gradients (dx_t, dh_prev, dc_prev, dW, db) of one LSTM step."""
    fn = "lstm_cell_backward"
    A.check_cache(fn, cache, "lstm_cell")
    shape, dtype = cache.meta["out_shape"], cache.meta["dtype"]
    dh = _grad(fn, "dh_next", dh_next, shape, dtype)
    dc = _grad(fn, "dc_next", dc_next, shape, dtype)
    return _finish(cache, _backends.kernel_of(cache.backend, "lstm_cell_backward")(dh, dc, cache.state))


# ---------------------------------------------------------------- sequences

def rnn_forward(x, h0, W, b, *, activation="tanh", backend=None):
    """RNN over a time-major sequence x (T, m, n_x). Returns (h (T, m, n_a), cache); h0 may be None."""
    fn = "rnn_forward"
    activation = A.choice(fn, "activation", activation, _ACTIVATIONS)
    p = _prepare(fn, "rnn", x, h0, None, W, b, sequence=True)
    return _run_forward(fn, "rnn_forward", backend, (p["x"], p["h"], p["W"], p["b"], activation), p)


def rnn_backward(dh, cache):
    """Backward through time: dh (T, m, n_a) is dLoss/dh<t> for every t. Returns (dx, dh0, dW, db)."""
    fn = "rnn_backward"
    A.check_cache(fn, cache, "rnn")
    dh = _grad(fn, "dh", dh, cache.meta["out_shape"], cache.meta["dtype"])
    return _finish(cache, _backends.kernel_of(cache.backend, "rnn_backward")(dh, cache.state))


def gru_forward(x, h0, W, b, *, backend=None):
    """GRU over a time-major sequence. Returns (h (T, m, n_a), cache); h0 may be None."""
    fn = "gru_forward"
    p = _prepare(fn, "gru", x, h0, None, W, b, sequence=True)
    return _run_forward(fn, "gru_forward", backend, (p["x"], p["h"], p["W"], p["b"]), p)


def gru_backward(dh, cache):
    """Backward through time of gru_forward. Returns (dx, dh0, dW, db)."""
    fn = "gru_backward"
    A.check_cache(fn, cache, "gru")
    dh = _grad(fn, "dh", dh, cache.meta["out_shape"], cache.meta["dtype"])
    return _finish(cache, _backends.kernel_of(cache.backend, "gru_backward")(dh, cache.state))


def lstm_forward(x, h0, c0, W, b, *, backend=None):
    """LSTM over a time-major sequence. Returns (h (T, m, n_a), c_last (m, n_a), cache);
    h0 and c0 may be None (zeros)."""
    fn = "lstm_forward"
    p = _prepare(fn, "lstm", x, h0, c0, W, b, sequence=True)
    return _run_forward(fn, "lstm_forward", backend, (p["x"], p["h"], p["c"], p["W"], p["b"]), p,
                        state_shape=p["shape"])


def lstm_backward(dh, cache, dc_last=None):
    """Backward through time of lstm_forward; dc_last = dLoss/dc_last (None: zeros).
    Returns (dx, dh0, dc0, dW, db)."""
    fn = "lstm_backward"
    A.check_cache(fn, cache, "lstm")
    dtype = cache.meta["dtype"]
    dh = _grad(fn, "dh", dh, cache.meta["out_shape"], dtype)
    if dc_last is None:
        dc_last = np.zeros(cache.meta["state_shape"], dtype)
    dc_last = _grad(fn, "dc_last", dc_last, cache.meta["state_shape"], dtype)
    return _finish(cache, _backends.kernel_of(cache.backend, "lstm_backward")(dh, dc_last, cache.state))
