"""RNN, GRU and LSTM cells and sequences, the course's way (see docs/KERNELS.md).

Batch-major: rows are examples, so the course's ``np.dot(W, concat) + b`` becomes
``concat @ W.T + b`` with ``concat = [h_prev, x_t]`` (hidden state first). A sequence
is a loop over time calling the cell; backpropagation through time loops the cell's
backward in reverse, summing dW and db and handing each step's dh_prev (plus the
gradient reaching h<t-1> from outside) and dc_prev to the step before.

Gate row blocks: RNN ``[W]``; GRU ``[W_u; W_r; W_c]``; LSTM ``[W_f; W_u; W_c; W_o]``.
"""
import numpy as np


def sigmoid(z):
    """The logistic function, without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _split_concat(dconcat, n_a):
    """The gradient of [h_prev, x_t] as (dh_prev, dx_t)."""
    return dconcat[:, :n_a].copy(), dconcat[:, n_a:].copy()


# ---------------------------------------------------------------------------- RNN

def rnn_cell_forward(x_t, h_prev, W, b, activation):
    concat = np.concatenate([h_prev, x_t], axis=1)
    z = np.dot(concat, W.T) + b
    h_next = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
    return h_next, (concat, z, h_next, W, activation)


def rnn_cell_backward(dh_next, state):
    concat, z, h_next, W, activation = state
    if activation == "tanh":
        dz = dh_next * (1 - h_next ** 2)
    else:
        dz = np.where(z > 0, dh_next, 0)  # ReLU's derivative at exactly 0 is taken as 0
    dW = np.dot(dz.T, concat)
    db = np.sum(dz, axis=0)
    dh_prev, dx_t = _split_concat(np.dot(dz, W), W.shape[0])
    return dx_t, dh_prev, dW, db


# ---------------------------------------------------------------------------- GRU

def gru_cell_forward(x_t, h_prev, W, b):
    n_a = h_prev.shape[1]
    W_u, W_r, W_c = W[:n_a], W[n_a:2 * n_a], W[2 * n_a:]
    b_u, b_r, b_c = b[:n_a], b[n_a:2 * n_a], b[2 * n_a:]
    concat = np.concatenate([h_prev, x_t], axis=1)
    gamma_u = sigmoid(np.dot(concat, W_u.T) + b_u)
    gamma_r = sigmoid(np.dot(concat, W_r.T) + b_r)
    # The reset gate scales only the hidden part of the candidate's input.
    concat_r = np.concatenate([gamma_r * h_prev, x_t], axis=1)
    c_tilde = np.tanh(np.dot(concat_r, W_c.T) + b_c)
    h_next = gamma_u * c_tilde + (1 - gamma_u) * h_prev
    return h_next, (concat, concat_r, h_prev, gamma_u, gamma_r, c_tilde, W)


def gru_cell_backward(dh_next, state):
    concat, concat_r, h_prev, gamma_u, gamma_r, c_tilde, W = state
    n_a = h_prev.shape[1]
    W_u, W_r, W_c = W[:n_a], W[n_a:2 * n_a], W[2 * n_a:]
    # h = Γu * c̃ + (1 - Γu) * h_prev
    dc_tilde = dh_next * gamma_u
    dgamma_u = dh_next * (c_tilde - h_prev)
    dh_prev = dh_next * (1 - gamma_u)
    # c̃ = tanh([Γr * h_prev, x_t] @ W_c.T + b_c)
    dz_c = dc_tilde * (1 - c_tilde ** 2)
    dW_c = np.dot(dz_c.T, concat_r)
    d_rh, dx_t = _split_concat(np.dot(dz_c, W_c), n_a)
    dgamma_r = d_rh * h_prev
    dh_prev = dh_prev + d_rh * gamma_r
    # Γu = σ(z_u), Γr = σ(z_r), both of concat = [h_prev, x_t]
    dz_u = dgamma_u * gamma_u * (1 - gamma_u)
    dz_r = dgamma_r * gamma_r * (1 - gamma_r)
    dW_u = np.dot(dz_u.T, concat)
    dW_r = np.dot(dz_r.T, concat)
    dh_gates, dx_gates = _split_concat(np.dot(dz_u, W_u) + np.dot(dz_r, W_r), n_a)
    dh_prev = dh_prev + dh_gates
    dx_t = dx_t + dx_gates
    dW = np.concatenate([dW_u, dW_r, dW_c], axis=0)
    db = np.concatenate([np.sum(dz_u, axis=0), np.sum(dz_r, axis=0), np.sum(dz_c, axis=0)])
    return dx_t, dh_prev, dW, db


# ---------------------------------------------------------------------------- LSTM

def lstm_cell_forward(x_t, h_prev, c_prev, W, b):
    n_a = h_prev.shape[1]
    concat = np.concatenate([h_prev, x_t], axis=1)
    z = np.dot(concat, W.T) + b
    gamma_f = sigmoid(z[:, :n_a])
    gamma_u = sigmoid(z[:, n_a:2 * n_a])
    c_tilde = np.tanh(z[:, 2 * n_a:3 * n_a])
    gamma_o = sigmoid(z[:, 3 * n_a:])
    c_next = gamma_f * c_prev + gamma_u * c_tilde
    tanh_c = np.tanh(c_next)
    h_next = gamma_o * tanh_c
    return h_next, c_next, (concat, c_prev, gamma_f, gamma_u, c_tilde, gamma_o, tanh_c, W)


def lstm_cell_backward(dh_next, dc_next, state):
    concat, c_prev, gamma_f, gamma_u, c_tilde, gamma_o, tanh_c, W = state
    n_a = c_prev.shape[1]
    dz_o = dh_next * tanh_c * gamma_o * (1 - gamma_o)
    # Everything that reaches c<t>: from outside and through h = Γo * tanh(c).
    dc = dc_next + dh_next * gamma_o * (1 - tanh_c ** 2)
    dz_c = dc * gamma_u * (1 - c_tilde ** 2)
    dz_u = dc * c_tilde * gamma_u * (1 - gamma_u)
    dz_f = dc * c_prev * gamma_f * (1 - gamma_f)
    dc_prev = dc * gamma_f
    dz = np.concatenate([dz_f, dz_u, dz_c, dz_o], axis=1)
    dW = np.dot(dz.T, concat)
    db = np.sum(dz, axis=0)
    dh_prev, dx_t = _split_concat(np.dot(dz, W), n_a)
    return dx_t, dh_prev, dc_prev, dW, db


# ---------------------------------------------------------------------------- sequences

def _sequence_forward(cell_forward, x, h0, W, b, *cell_options):
    """Run a cell over every time step, the course's rnn_forward loop."""
    h = np.zeros((x.shape[0],) + h0.shape, dtype=x.dtype)
    states = []
    h_prev = h0
    for t in range(x.shape[0]):
        h_prev, state = cell_forward(x[t], h_prev, W, b, *cell_options)
        h[t] = h_prev
        states.append(state)
    return h, (states, x.shape, W.shape, b.shape)


def _sequence_backward(cell_backward, dh, state):
    """Backward through time: each step receives dh<t> from outside plus dh_prev from the step after it."""
    states, x_shape, W_shape, b_shape = state
    dx = np.zeros(x_shape, dtype=dh.dtype)
    dW = np.zeros(W_shape, dtype=dh.dtype)
    db = np.zeros(b_shape, dtype=dh.dtype)
    dh_prev = np.zeros(dh.shape[1:], dtype=dh.dtype)
    for t in reversed(range(x_shape[0])):
        dx[t], dh_prev, dW_t, db_t = cell_backward(dh[t] + dh_prev, states[t])
        dW += dW_t
        db += db_t
    return dx, dh_prev, dW, db


def rnn_forward(x, h0, W, b, activation):
    return _sequence_forward(rnn_cell_forward, x, h0, W, b, activation)


def rnn_backward(dh, state):
    return _sequence_backward(rnn_cell_backward, dh, state)


def gru_forward(x, h0, W, b):
    return _sequence_forward(gru_cell_forward, x, h0, W, b)


def gru_backward(dh, state):
    return _sequence_backward(gru_cell_backward, dh, state)


def lstm_forward(x, h0, c0, W, b):
    h = np.zeros((x.shape[0],) + h0.shape, dtype=x.dtype)
    states = []
    h_prev, c_prev = h0, c0
    for t in range(x.shape[0]):
        h_prev, c_prev, state = lstm_cell_forward(x[t], h_prev, c_prev, W, b)
        h[t] = h_prev
        states.append(state)
    return h, c_prev, (states, x.shape, W.shape, b.shape)


def lstm_backward(dh, dc_last, state):
    states, x_shape, W_shape, b_shape = state
    dx = np.zeros(x_shape, dtype=dh.dtype)
    dW = np.zeros(W_shape, dtype=dh.dtype)
    db = np.zeros(b_shape, dtype=dh.dtype)
    dh_prev = np.zeros(dh.shape[1:], dtype=dh.dtype)
    dc_prev = np.zeros(dh.shape[1:], dtype=dh.dtype) if dc_last is None else dc_last
    for t in reversed(range(x_shape[0])):
        dx[t], dh_prev, dc_prev, dW_t, db_t = lstm_cell_backward(dh[t] + dh_prev, dc_prev, states[t])
        dW += dW_t
        db += db_t
    return dx, dh_prev, dc_prev, dW, db
