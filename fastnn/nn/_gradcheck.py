"""``fastnn.gradcheck``: the course's two-sided numerical gradient check."""
import numpy as np

from ._base import Layer


def _relative_difference(numeric, analytic):
    num = np.sqrt(sum(float(np.sum(a * a)) for a in numeric))
    ana = np.sqrt(sum(float(np.sum(a * a)) for a in analytic))
    diff = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(numeric, analytic)))
    if num + ana == 0.0:
        return 0.0
    return float(diff / (num + ana))


def gradcheck(f, inputs, *, eps=1e-7, loss=None, target=None, dy=None, seed=0, training=True,
              check_params=True, check_input=True, return_details=False):
    """The course's gradient check: ``||g_num - g|| / (||g_num|| + ||g||)``.

    ``g_num`` is the two-sided difference ``(J(θ + ε) - J(θ - ε)) / (2ε)`` of every
    element, ``g`` the analytic gradient; values below about 1e-7 (float64, the
    course's ``eps = 1e-7``) mean the backward pass is right.

    Two forms:

    - ``gradcheck(f, inputs)``: ``f(list_of_arrays) -> (J, grads)`` returns a scalar
      and one gradient per input (same shapes). ``inputs`` (an array or a list of
      them, float64) are copied; ``f`` gets the perturbed copies.
    - ``gradcheck(layer, x, loss=None, target=None, dy=None)``: a fastnn ``Layer``
      (or a whole network). ``J`` is ``loss.forward(layer.forward(x), target)`` when
      a loss is given, else ``sum(layer.forward(x) * dy)`` with ``dy`` a fixed
      random projection (drawn from ``seed`` when not given). Checks the gradient with
      respect to ``x`` (when it is a float array and ``check_input``) and every
      parameter (``check_params``). The layer's parameters must be float64; they are
      perturbed in place and restored bit for bit, as are its buffers (batch-norm
      running averages) and every Dropout generator, which is rewound before each
      evaluation so the mask stays fixed, as the course requires.

    Returns the relative difference (a float), or with ``return_details`` a dict
    ``{"difference", "per_array": {name: difference}, "numeric": {name: array},
    "analytic": {name: array}}``.
    """
    if not (isinstance(eps, float) and eps > 0):
        raise ValueError(f"gradcheck: eps must be a positive float, got {eps!r}")
    if isinstance(f, Layer):
        names, numeric, analytic = _check_layer(f, inputs, eps, loss, target, dy, seed, training, check_params,
                                                check_input)
    elif callable(f):
        names, numeric, analytic = _check_function(f, inputs, eps)
    else:
        raise TypeError(f"gradcheck: f must be a callable or a fastnn.nn.Layer, got {type(f).__name__}")
    difference = _relative_difference(numeric, analytic)
    if not return_details:
        return difference
    return {"difference": difference,
            "per_array": {n: _relative_difference([a], [b]) for n, a, b in zip(names, numeric, analytic)},
            "numeric": dict(zip(names, numeric)), "analytic": dict(zip(names, analytic))}


def _float64(name, value):
    arr = np.asarray(value)
    if arr.dtype != np.float64:
        raise TypeError(f"gradcheck: {name} must be float64 (a check with eps = 1e-7 needs double precision), "
                        f"got dtype {arr.dtype}")
    return arr


def _numeric(arrays, evaluate, eps):
    """Two-sided differences of evaluate() w.r.t. every element of each array (perturbed in place)."""
    out = []
    for arr in arrays:
        g = np.zeros(arr.shape, np.float64)
        flat = arr.reshape(-1)  # a view: arrays are C-contiguous
        gflat = g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            j_plus = evaluate()
            flat[j] = old - eps
            j_minus = evaluate()
            flat[j] = old
            gflat[j] = (j_plus - j_minus) / (2 * eps)
        out.append(g)
    return out


def _check_function(f, inputs, eps):
    single = not isinstance(inputs, (list, tuple))
    arrays = [np.array(_float64(f"inputs[{i}]", v), order="C")
              for i, v in enumerate([inputs] if single else inputs)]
    value, grads = f(arrays)
    if single and not isinstance(grads, (list, tuple)):
        grads = [grads]
    if not isinstance(grads, (list, tuple)) or len(grads) != len(arrays):
        raise ValueError(f"gradcheck: f must return (J, grads) with one gradient per input ({len(arrays)}), "
                         f"got {type(grads).__name__}")
    analytic = []
    for i, (g, a) in enumerate(zip(grads, arrays)):
        g = np.asarray(g, dtype=np.float64)
        if g.shape != a.shape:
            raise ValueError(f"gradcheck: grads[{i}] has shape {g.shape} but inputs[{i}] has shape {a.shape}")
        analytic.append(g.copy())
    numeric = _numeric(arrays, lambda: float(f(arrays)[0]), eps)
    return [f"inputs[{i}]" for i in range(len(arrays))], numeric, analytic


def _check_layer(layer, x, eps, loss, target, dy, seed, training, check_params, check_input):
    from .layers import Dropout

    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    x = np.array(x, order="C")  # our own copy: the caller's x is never perturbed
    differentiate_x = check_input and x.dtype.kind == "f"
    if differentiate_x:
        _float64("x", x)
    params = layer.params
    if check_params:
        for name, p in params.items():
            _float64(f"parameter {name}", p)
    saved_buffers = {k: v.copy() for k, v in layer.buffers.items()}
    dropouts = [d for d in layer.layers_iter() if isinstance(d, Dropout)]
    rng_states = [d.rng.bit_generator.state for d in dropouts]

    def rewind():
        for d, state in zip(dropouts, rng_states):
            d.rng.bit_generator.state = state

    proj = None

    def evaluate():
        rewind()
        y = layer.forward(x, training=training)
        if loss is not None:
            return float(loss.forward(y, target))
        return float(np.sum(y * proj))

    try:
        rewind()
        y = layer.forward(x, training=training)
        if loss is not None:
            loss.forward(y, target)
            dj_dy = loss.backward()
        else:
            if dy is None:
                proj = np.random.default_rng(seed).standard_normal(y.shape)
            else:
                proj = np.asarray(dy, dtype=np.float64)
                if proj.shape != y.shape:
                    raise ValueError(f"gradcheck: dy has shape {proj.shape} but the layer's output has shape {y.shape}")
            dj_dy = proj.astype(y.dtype)
        dx = layer.backward(dj_dy)
        names, analytic, targets = [], [], []
        if differentiate_x:
            names.append("x")
            analytic.append(np.asarray(dx, dtype=np.float64).copy())
            targets.append(x)
        if check_params:
            grads = layer.grads
            for name, p in params.items():
                names.append(name)
                analytic.append(np.asarray(grads[name], dtype=np.float64).copy())
                targets.append(p)
        numeric = _numeric(targets, evaluate, eps)
    finally:
        rewind()
        layer.set_params(saved_buffers, strict=False) if saved_buffers else None
    return names, numeric, analytic
