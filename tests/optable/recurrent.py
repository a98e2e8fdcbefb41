"""RNN, GRU and LSTM cells and sequences."""
import fastnn

from . import Op

# the number of gate blocks stacked in W and b (the one copy the tests keep)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

DIMS = {
    "small": dict(T=3, m=12, n_x=3, n_a=2),  # m >= 12: the fused LSTM step over [h, x]
    "empty": dict(T=2, m=0, n_x=3, n_a=2),
    "ones": dict(T=1, m=1, n_x=1, n_a=1),
}

API = {
    "rnn_cell_forward": ["x_t", "h_prev", "W", "b"], "rnn_cell_backward": ["dh_next", "cache"],
    "gru_cell_forward": ["x_t", "h_prev", "W", "b"], "gru_cell_backward": ["dh_next", "cache"],
    "lstm_cell_forward": ["x_t", "h_prev", "c_prev", "W", "b"], "lstm_cell_backward": ["dh_next", "dc_next", "cache"],
    "rnn_forward": ["x", "h0", "W", "b"], "rnn_backward": ["dh", "cache"],
    "gru_forward": ["x", "h0", "W", "b"], "gru_backward": ["dh", "cache"],
    "lstm_forward": ["x", "h0", "c0", "W", "b"], "lstm_backward": ["dh", "cache", "dc_last"],
}


def _op(kind, sequence):
    name = f"{kind}_forward" if sequence else f"{kind}_cell_forward"
    backward_name = name.replace("forward", "backward")

    def forward(be, size, r):
        d = DIMS[size]
        g, m, n_x, n_a = GATES[kind], d["m"], d["n_x"], d["n_a"]
        x = r((d["T"], m, n_x) if sequence else (m, n_x))
        states = [r((m, n_a)) for _ in range(2 if kind == "lstm" else 1)]
        W, b = r((g * n_a, n_a + n_x), 0.5), r((g * n_a,))
        *outs, cache = getattr(fastnn, name)(x, *states, W, b, backend=be)
        return [x, *states, W, b], outs, cache

    def backward(outputs, cache, r):
        douts = [r(o.shape) for o in outputs]
        if sequence and kind == "lstm":
            return douts, list(fastnn.lstm_backward(douts[0], cache, dc_last=douts[1]))
        return douts, list(getattr(fastnn, backward_name)(*douts, cache))

    return Op(f"{kind}_seq" if sequence else f"{kind}_cell", {name: API[name], backward_name: API[backward_name]},
              (name, backward_name), forward, backward,
              bench=("L1", "L2", "L3") if sequence and kind == "lstm" else ())


OPS = [_op(kind, sequence) for kind in GATES for sequence in (False, True)]
