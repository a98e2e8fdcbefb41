"""Convert recurrent weights from the course's dictionaries and from PyTorch into fastnn's.

fastnn stacks a cell's weights into one matrix ``W`` that acts on
``concat = [h_prev, x_t]`` (hidden state first, the course's ``[a_prev; x_t]``), with
one row block per gate, and one bias vector ``b`` with the same blocks:

=====  =======================================  ===========================
cell   W (rows, in this order)                  b
=====  =======================================  ===========================
RNN    ``[W]``, ``(n_a, n_a + n_x)``            ``(n_a,)``
GRU    ``[W_u; W_r; W_c]``, ``(3 n_a, ...)``    ``(3 n_a,)``, same blocks
LSTM   ``[W_f; W_u; W_c; W_o]``, ``(4 n_a, ...)``  ``(4 n_a,)``, same blocks
=====  =======================================  ===========================

Sources:

- The course's parameter dictionaries. LSTM: ``Wf, bf`` (forget), ``Wi, bi``
  (update, the course's Γu, named ``i`` there), ``Wc, bc`` (candidate), ``Wo, bo``
  (output). GRU: ``Wu, bu, Wr, br, Wc, bc``. RNN: ``Waa`` ``(n_a, n_a)``, ``Wax``
  ``(n_a, n_x)``, ``ba``. Each ``W*`` of a gate is ``(n_a, n_a + n_x)`` acting on
  ``[a_prev; x_t]``; biases are ``(n_a, 1)`` or ``(n_a,)``. Other keys (``Wy``,
  ``by``) are ignored.
- PyTorch's ``torch.nn.LSTM`` / ``torch.nn.RNN`` layer weights ``weight_ih_l0``,
  ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``. PyTorch's LSTM gate order is
  ``i, f, g, o`` (input = update, forget, cell candidate, output); it computes
  ``W_ih x + b_ih + W_hh h + b_hh``, so each fastnn row block is ``[W_hh_k, W_ih_k]``
  and ``b = b_ih + b_hh``. A missing bias counts as zeros. PyTorch's GRU applies its
  reset gate after the hidden product (``r * (W_hn h + b_hn)``), a different cell
  from the course's GRU, so it has no converter.

Arrays (or anything ``np.asarray`` accepts, including detached-able tensors) are
never modified; the results are new C-contiguous arrays, float32 when every input
is float32 and float64 otherwise.
"""
from collections.abc import Mapping

import numpy as np

from . import _args as A

__all__ = [
    "gru_weights_from_course",
    "lstm_weights_from_course",
    "lstm_weights_from_torch",
    "rnn_weights_from_course",
    "rnn_weights_from_torch",
]


def _as_array(fn, name, value):
    """value as a real NumPy array; TypeError for what is not numeric."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()  # a PyTorch tensor, possibly requiring grad
    return A.as_arrays(fn, **{name: value})[0][name]


def _result_dtype(fn, arrays):
    """fastnn's dtype rule: float32 stays float32; mixes, integers and bools give float64."""
    return np.result_type(*(A.float_dtype(fn, "weights", a) for a in arrays))


def _shape(array):
    return tuple(array.shape)


def _check_matrix(fn, name, array, rows=None, cols=None):
    if array.ndim != 2:
        raise ValueError(f"{fn}: {name} must be 2-D, got shape {_shape(array)}")
    if (rows is not None and array.shape[0] != rows) or (cols is not None and array.shape[1] != cols):
        want = f"({'?' if rows is None else rows}, {'?' if cols is None else cols})"
        raise ValueError(f"{fn}: {name} has shape {_shape(array)}, expected {want}")


def _as_bias(fn, name, array, size):
    """A bias holding `size` values, shaped (size,), (size, 1) or (1, size), as a vector."""
    if array.shape not in ((size,), (size, 1), (1, size)):
        raise ValueError(f"{fn}: {name} has shape {_shape(array)}, expected ({size},) or ({size}, 1)")
    return array.reshape(size)


def _get(fn, parameters, keys):
    if not isinstance(parameters, Mapping):
        raise TypeError(f"{fn}: parameters must be a dict of arrays, got {type(parameters).__name__}")
    missing = [key for key in keys if key not in parameters]
    if missing:
        raise ValueError(f"{fn}: parameters lacks key(s) {', '.join(missing)} (expected {', '.join(keys)})")
    return {key: _as_array(fn, key, parameters[key]) for key in keys}


def _stack_gates(fn, arrays, gates):
    """Stack course gate matrices W<g> (n_a, n_a + n_x) and biases b<g> in the order given."""
    first = "W" + gates[0]
    _check_matrix(fn, first, arrays[first])
    n_a, n_concat = arrays[first].shape
    if n_concat < n_a:
        raise ValueError(f"{fn}: {first} has shape {_shape(arrays[first])}; a gate matrix is "
                         f"(n_a, n_a + n_x), so it needs at least n_a = {n_a} columns")
    for gate in gates[1:]:
        name = "W" + gate
        _check_matrix(fn, name, arrays[name])
        if arrays[name].shape != (n_a, n_concat):
            raise ValueError(f"{fn}: {name} has shape {_shape(arrays[name])} but {first} has shape "
                             f"{(n_a, n_concat)}; every gate matrix is (n_a, n_a + n_x)")
    dtype = _result_dtype(fn, arrays.values())
    W = np.concatenate([arrays["W" + g].astype(dtype) for g in gates], axis=0)
    b = np.concatenate([_as_bias(fn, "b" + g, arrays["b" + g], n_a).astype(dtype) for g in gates])
    return W, b


def lstm_weights_from_course(parameters):
    """(W, b) of fastnn's LSTM from the course's dict ``Wf, bf, Wi, bi, Wc, bc, Wo, bo``.

    The course's update gate ``i`` becomes fastnn's ``u``: W rows ``[Wf; Wi; Wc; Wo]``.
    """
    fn = "lstm_weights_from_course"
    arrays = _get(fn, parameters, ("Wf", "bf", "Wi", "bi", "Wc", "bc", "Wo", "bo"))
    return _stack_gates(fn, arrays, ("f", "i", "c", "o"))


def gru_weights_from_course(parameters):
    """(W, b) of fastnn's GRU from the course's dict ``Wu, bu, Wr, br, Wc, bc``."""
    fn = "gru_weights_from_course"
    arrays = _get(fn, parameters, ("Wu", "bu", "Wr", "br", "Wc", "bc"))
    return _stack_gates(fn, arrays, ("u", "r", "c"))


def rnn_weights_from_course(parameters):
    """(W, b) of fastnn's RNN from the course's dict ``Waa, Wax, ba``: ``W = [Waa, Wax]``."""
    fn = "rnn_weights_from_course"
    arrays = _get(fn, parameters, ("Waa", "Wax", "ba"))
    Waa, Wax = arrays["Waa"], arrays["Wax"]
    _check_matrix(fn, "Waa", Waa)
    n_a = Waa.shape[0]
    _check_matrix(fn, "Waa", Waa, n_a, n_a)
    _check_matrix(fn, "Wax", Wax)
    if Wax.shape[0] != n_a:
        raise ValueError(f"{fn}: Wax has shape {_shape(Wax)} but Waa has shape {_shape(Waa)}; "
                         f"Wax must be (n_a, n_x) with n_a = {n_a}")
    dtype = _result_dtype(fn, arrays.values())
    W = np.concatenate([Waa.astype(dtype), Wax.astype(dtype)], axis=1)
    b = _as_bias(fn, "ba", arrays["ba"], n_a).astype(dtype)  # astype copies: never the input
    return W, b


def _from_torch(fn, n_gates, torch_order, weight_ih, weight_hh, bias_ih, bias_hh):
    """Rebuild [W_hh_k, W_ih_k] row blocks in fastnn's gate order; b = b_ih + b_hh."""
    weight_ih = _as_array(fn, "weight_ih", weight_ih)
    weight_hh = _as_array(fn, "weight_hh", weight_hh)
    _check_matrix(fn, "weight_hh", weight_hh)
    rows = weight_hh.shape[0]
    n_a = rows // n_gates
    if rows != n_gates * n_a or weight_hh.shape[1] != n_a:
        raise ValueError(f"{fn}: weight_hh has shape {_shape(weight_hh)}, expected "
                         f"({n_gates} * n_a, n_a) = ({n_gates * weight_hh.shape[1]}, {weight_hh.shape[1]})")
    _check_matrix(fn, "weight_ih", weight_ih)
    if weight_ih.shape[0] != rows:
        raise ValueError(f"{fn}: weight_ih has shape {_shape(weight_ih)} but weight_hh has shape "
                         f"{_shape(weight_hh)}; both need {rows} rows ({n_gates} * n_a)")
    arrays = [weight_ih, weight_hh]
    biases = []
    for name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if bias is not None:
            bias = _as_array(fn, name, bias)
            arrays.append(bias)
            biases.append(_as_bias(fn, name, bias, rows))
    dtype = _result_dtype(fn, arrays)
    blocks = [slice(k * n_a, (k + 1) * n_a) for k in torch_order]
    W = np.concatenate([np.concatenate([weight_hh[rows_k], weight_ih[rows_k]], axis=1) for rows_k in blocks],
                       axis=0).astype(dtype)
    b = np.zeros(n_gates * n_a, dtype=dtype)
    for bias in biases:
        b += np.concatenate([bias[rows_k] for rows_k in blocks]).astype(dtype)
    return W, b


def lstm_weights_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """(W, b) of fastnn's LSTM from ``torch.nn.LSTM`` weights (gate order i, f, g, o).

    weight_ih ``(4 n_a, n_x)``, weight_hh ``(4 n_a, n_a)``, biases ``(4 n_a,)`` or None.
    """
    # fastnn's f, u, c, o are PyTorch's blocks 1 (f), 0 (i), 2 (g), 3 (o).
    return _from_torch("lstm_weights_from_torch", 4, (1, 0, 2, 3), weight_ih, weight_hh, bias_ih, bias_hh)


def rnn_weights_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """(W, b) of fastnn's RNN from ``torch.nn.RNN`` weights: ``W = [weight_hh, weight_ih]``.

    weight_ih ``(n_a, n_x)``, weight_hh ``(n_a, n_a)``, biases ``(n_a,)`` or None.
    """
    return _from_torch("rnn_weights_from_torch", 1, (0,), weight_ih, weight_hh, bias_ih, bias_hh)
