"""Embedding, RNN/GRU/LSTM over whole sequences, and TimeDistributed.

Layout: the layers take batch-major sequences ``(batch, T, features)`` (Keras' and
PyTorch's ``batch_first=True``) and convert to the kernels' time-major ``(T, batch,
features)`` and back (glue: one transpose each way). Weights are the kernels' (the
course's stacking, acting on ``[h_prev, x_t]``): RNN ``w (n_a, n_a + n_x)``, GRU
``(3 n_a, n_a + n_x)`` rows ``[W_u; W_r; W_c]``, LSTM ``(4 n_a, n_a + n_x)`` rows
``[W_f; W_u; W_c; W_o]``; biases ``b`` of ``k * n_a``, starting at zero. The state
starts at zero for every batch.
"""
import numpy as np

from .. import (embedding_backward, embedding_forward, gru_backward, gru_forward, lstm_backward, lstm_forward,
                rnn_backward, rnn_forward)
from . import init as _init
from ._base import (Layer, as_float_input, check_choice, check_dtype, check_dy, check_int, check_rng, from_config,
                    register)
from .conv import _wrap_errors


@register
class Embedding(Layer):
    """Lookup ``y = w[ids]``: integer ids of any shape -> ``ids.shape + (D,)``.

    ``w`` is ``(V, D)`` (one row per id; the course's ``E`` is its transpose).
    ``backward(dy)`` stores the gradient of ``w`` and returns None (ids have no gradient).
    """

    prefix = "embedding"

    def __init__(self, V, D, *, init="glorot_uniform", rng=None, dtype=np.float32):
        super().__init__()
        self.V = check_int("Embedding", "V", V)
        self.D = check_int("Embedding", "D", D)
        self.init = init
        self.dtype = check_dtype("Embedding", dtype)
        rng = check_rng("Embedding", rng)
        self._add_param("w", _init.make("Embedding", init, (self.V, self.D), self.V, self.D, rng, self.dtype))
        self._cache = None
        self._out_shape = None

    def forward(self, x, training=True):
        ids = np.asarray(x)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding.forward: ids must be integers, got dtype {ids.dtype}")
        y, self._cache = _wrap_errors("Embedding", embedding_forward, ids, self._params["w"])
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("Embedding", dy, self._out_shape, self.dtype)
        self._grads["w"] = embedding_backward(dy, self._cache)
        return None

    def _config_args(self):
        return {"V": self.V, "D": self.D, "init": self.init if isinstance(self.init, str) else "glorot_uniform",
                "dtype": self.dtype.name}


class _Recurrent(Layer):
    gates = 1

    def __init__(self, n_x, n_a, return_sequences=True, *, init="xavier", rng=None, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.n_x = check_int(name, "n_x", n_x)
        self.n_a = check_int(name, "n_a", n_a)
        self.return_sequences = bool(return_sequences)
        self.init = init
        self.dtype = check_dtype(name, dtype)
        rng = check_rng(name, rng)
        k = self.gates
        self._add_param("w", _init.make(name, init, (k * self.n_a, self.n_a + self.n_x), self.n_a + self.n_x,
                                        self.n_a, rng, self.dtype))
        self._add_param("b", np.zeros(k * self.n_a, self.dtype))
        self._cache = None
        self._out_shape = None
        self._T = None

    def _check_x(self, x):
        name = type(self).__name__
        x = as_float_input(name, x, ndim=3, dtype=self.dtype)
        if x.shape[2] != self.n_x:
            raise ValueError(f"{name}.forward: x has {x.shape[2]} features (last axis of shape {x.shape}, "
                             f"layout (batch, T, n_x)) but the layer expects n_x = {self.n_x}")
        return np.ascontiguousarray(x.transpose(1, 0, 2))  # the kernels' (T, batch, n_x)

    def _output(self, h):
        self._T = h.shape[0]
        y = np.ascontiguousarray(h.transpose(1, 0, 2)) if self.return_sequences else h[-1].copy()
        self._out_shape = y.shape
        return y

    def _dh(self, dy):
        dy = check_dy(type(self).__name__, dy, self._out_shape, self.dtype)
        if self.return_sequences:
            return np.ascontiguousarray(dy.transpose(1, 0, 2))
        dh = np.zeros((self._T,) + dy.shape, self.dtype)
        dh[-1] = dy
        return dh

    def _store(self, dx, dw, db):
        self._grads["w"], self._grads["b"] = dw, db
        return np.ascontiguousarray(dx.transpose(1, 0, 2))

    def _config_args(self):
        return {"n_x": self.n_x, "n_a": self.n_a, "return_sequences": self.return_sequences,
                "init": self.init if isinstance(self.init, str) else "xavier", "dtype": self.dtype.name}


@register
class RNN(_Recurrent):
    """Basic RNN ``h<t> = tanh([h<t-1>, x<t>] @ w.T + b)`` (``activation="relu"`` for ReLU).

    x ``(batch, T, n_x)`` -> ``(batch, T, n_a)``, or ``(batch, n_a)`` (the last state)
    with ``return_sequences=False``.
    """

    prefix = "rnn"
    gates = 1

    def __init__(self, n_x, n_a, return_sequences=True, *, activation="tanh", init="xavier", rng=None,
                 dtype=np.float32):
        self.activation = check_choice("RNN", "activation", activation, ("tanh", "relu"))
        super().__init__(n_x, n_a, return_sequences, init=init, rng=rng, dtype=dtype)

    def forward(self, x, training=True):
        h, self._cache = _wrap_errors("RNN", rnn_forward, self._check_x(x), None, self._params["w"],
                                      self._params["b"], activation=self.activation)
        return self._output(h)

    def backward(self, dy):
        dx, _, dw, db = rnn_backward(self._dh(dy), self._cache)
        return self._store(dx, dw, db)

    def _config_args(self):
        return {**super()._config_args(), "activation": self.activation}


@register
class GRU(_Recurrent):
    """The course's full GRU over a sequence; shapes as ``RNN``, ``w`` ``(3 n_a, n_a + n_x)``."""

    prefix = "gru"
    gates = 3

    def forward(self, x, training=True):
        h, self._cache = _wrap_errors("GRU", gru_forward, self._check_x(x), None, self._params["w"],
                                      self._params["b"])
        return self._output(h)

    def backward(self, dy):
        dx, _, dw, db = gru_backward(self._dh(dy), self._cache)
        return self._store(dx, dw, db)


@register
class LSTM(_Recurrent):
    """The course's LSTM over a sequence; shapes as ``RNN``, ``w`` ``(4 n_a, n_a + n_x)``
    rows ``[W_f; W_u; W_c; W_o]`` (``fastnn.lstm_weights_from_torch`` converts PyTorch's)."""

    prefix = "lstm"
    gates = 4

    def forward(self, x, training=True):
        h, _, self._cache = _wrap_errors("LSTM", lstm_forward, self._check_x(x), None, None, self._params["w"],
                                         self._params["b"])
        return self._output(h)

    def backward(self, dy):
        dx, _, _, dw, db = lstm_backward(self._dh(dy), self._cache)
        return self._store(dx, dw, db)


@register
class TimeDistributed(Layer):
    """Apply ``layer`` to every time step: ``(batch, T, ...) -> (batch, T, ...)``.

    The steps are folded into the batch (``(batch * T, ...)``), so the wrapped layer
    runs once per call. Its parameters keep their own names (``timedistributed1.w``
    in a Sequential): the wrapper adds no level.
    """

    prefix = "timedistributed"

    def __init__(self, layer):
        super().__init__()
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: layer must be a fastnn.nn Layer, got {type(layer).__name__}")
        self.layer = layer
        self._in_shape = None
        self._out_shape = None

    @property
    def params(self):
        return self.layer.params

    @property
    def grads(self):
        return self.layer.grads

    @property
    def buffers(self):
        return self.layer.buffers

    def layers_iter(self):
        yield self
        yield from self.layer.layers_iter()

    def set_params(self, values, strict=True):
        self.layer.set_params(values, strict=strict)

    load_state_dict = set_params

    def forward(self, x, training=True):
        arr = np.asarray(x)
        if arr.ndim < 2:
            raise ValueError(f"TimeDistributed.forward: x must be (batch, T, ...), got shape {arr.shape}")
        self._in_shape = arr.shape
        y = self.layer.forward(arr.reshape((arr.shape[0] * arr.shape[1],) + arr.shape[2:]),
                               training=self._mode(training))
        y = y.reshape(arr.shape[:2] + y.shape[1:])
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("TimeDistributed", dy, self._out_shape, None)
        dx = self.layer.backward(dy.reshape((dy.shape[0] * dy.shape[1],) + dy.shape[2:]))
        return None if dx is None else dx.reshape(self._in_shape)

    def config(self):
        return {"type": "TimeDistributed", "layer": self.layer.config()}

    @classmethod
    def _from_config(cls, kwargs):
        return cls(from_config(kwargs["layer"]))
