"""The work of one case: its inputs, and closures that run it with fastnn, with
PyTorch, and with the plain NumPy a user would write instead.

Every workload is ``{"forward": f, "forward_backward": g}``; the same inputs feed all
of them, each library in its native layout (fastnn and NumPy NHWC, PyTorch NCHW).
"""
import sys

import numpy as np

import fastnn

from .suite import output_shape, numpy_comparable


def make_inputs(case, seed=0, dtype="float32"):
    """Inputs of one case in fastnn's layout, plus the output gradient. The same seed
    gives the same numbers in every dtype."""
    rng = np.random.default_rng([seed, sum(map(ord, case.id))])
    d = case.dims

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    grad = normal(*output_shape(case))
    if case.group == "conv":
        fan_in = d["k"] * d["k"] * d["C_in"]
        return dict(x=normal(d["N"], d["H"], d["W"], d["C_in"]),
                    w=normal(d["k"], d["k"], d["C_in"], d["C_out"], scale=fan_in ** -0.5),
                    b=normal(d["C_out"], scale=0.1), grad=grad)
    if case.group == "pool":
        return dict(x=normal(d["N"], d["H"], d["W"], d["C"]), grad=grad)
    if case.group == "bmm":
        return dict(a=normal(d["B"], d["M"], d["K"]), b=normal(d["B"], d["K"], d["N"]), grad=grad)
    if case.group == "norm":
        return dict(x=normal(d["N"], d["H"], d["W"], d["C"], scale=2.0) + 1, gamma=normal(d["C"]),
                    beta=normal(d["C"]), grad=grad)
    if case.group == "loss":
        return dict(logits=normal(d["N"], d["C"], scale=3.0), target=rng.integers(0, d["C"], d["N"]),
                    grad=np.ones((), dtype))
    if case.group == "dense":
        return dict(x=normal(d["N"], d["n_in"]), w=normal(d["n_out"], d["n_in"], scale=d["n_in"] ** -0.5),
                    b=normal(d["n_out"], scale=0.1), grad=grad)
    if case.group == "embedding":
        return dict(ids=rng.integers(0, d["V"], (d["B"], d["T"])), table=normal(d["V"], d["D"]), grad=grad)
    if case.group == "optim":
        sizes = [d["P"] // d["arrays"] + (i < d["P"] % d["arrays"]) for i in range(d["arrays"])]
        return dict(params=[normal(n, scale=0.1) for n in sizes], grads=[normal(n, scale=0.01) for n in sizes],
                    grad=grad)
    n_a = d["n_a"]
    return dict(x=normal(d["T"], d["m"], d["n_x"]), W=normal(4 * n_a, n_a + d["n_x"], scale=n_a ** -0.5),
                b=normal(4 * n_a, scale=0.1), grad=grad)


def fastnn_workload(case, inputs, backend):
    """The case with one fastnn backend (None: what ``backend=None`` picks).

    Forward only uses the function a user calls for inference (``conv2d``,
    ``max_pool2d``, ``bmm``...; the LSTM has only ``lstm_forward``); forward + backward
    is the ``*_forward``/``*_backward`` pair.
    """
    d, grad = case.dims, inputs["grad"]
    if case.group == "conv":
        x, w, b = inputs["x"], inputs["w"], inputs["b"]
        geometry = dict(stride=d["stride"], padding=d["pad"], backend=backend)

        def forward():
            return fastnn.conv2d(x, w, b, **geometry)

        def forward_backward():
            _, cache = fastnn.conv2d_forward(x, w, b, **geometry)
            return fastnn.conv2d_backward(grad, cache)
    elif case.group == "pool":
        x, mode = inputs["x"], "max" if case.op == "max_pool2d" else "avg"
        pool = fastnn.max_pool2d if mode == "max" else fastnn.avg_pool2d
        args = (x, d["k"], d["stride"], d["pad"])

        def forward():
            return pool(*args, backend=backend)

        def forward_backward():
            _, cache = fastnn.pool2d_forward(*args, mode=mode, backend=backend)
            return fastnn.pool2d_backward(grad, cache)
    elif case.group == "bmm":
        a, b = inputs["a"], inputs["b"]

        def forward():
            return fastnn.bmm(a, b, backend=backend)

        def forward_backward():
            fastnn.bmm(a, b, backend=backend)
            return fastnn.bmm_backward(grad, a, b, backend=backend)
    elif case.group == "lstm":
        x, W, b = inputs["x"], inputs["W"], inputs["b"]

        def forward():
            return fastnn.lstm_forward(x, None, None, W, b, backend=backend)

        def forward_backward():
            _, _, cache = fastnn.lstm_forward(x, None, None, W, b, backend=backend)
            return fastnn.lstm_backward(grad, cache)
    else:
        return _training_workload(case, inputs, backend)
    return {"forward": forward, "forward_backward": forward_backward}


def _training_workload(case, inputs, backend):
    """The training operations (N1-N5) with fastnn: the forward call and the forward +
    backward pair (the Adam step in both: an optimizer has no backward)."""
    grad = inputs["grad"]
    if case.group == "norm":
        x, gamma, beta = inputs["x"], inputs["gamma"], inputs["beta"]

        def forward():
            return fastnn.batch_norm_forward(x, gamma, beta, backend=backend)[0]

        def forward_backward():
            cache = fastnn.batch_norm_forward(x, gamma, beta, backend=backend)[-1]
            return fastnn.batch_norm_backward(grad, cache)
    elif case.group == "loss":
        logits, target = inputs["logits"], inputs["target"]

        def forward():
            return fastnn.softmax_cross_entropy_forward(logits, target, backend=backend)[0]

        def forward_backward():
            cache = fastnn.softmax_cross_entropy_forward(logits, target, backend=backend)[1]
            return fastnn.softmax_cross_entropy_backward(cache)
    elif case.group == "dense":
        x, w, b = inputs["x"], inputs["w"], inputs["b"]

        def forward():
            return fastnn.linear_forward(x, w, b, activation="relu", backend=backend)[0]

        def forward_backward():
            cache = fastnn.linear_forward(x, w, b, activation="relu", backend=backend)[1]
            return fastnn.linear_backward(grad, cache)
    elif case.group == "embedding":
        ids, table = inputs["ids"], inputs["table"]

        def forward():
            return fastnn.embedding_forward(ids, table, backend=backend)[0]

        def forward_backward():
            cache = fastnn.embedding_forward(ids, table, backend=backend)[1]
            return fastnn.embedding_backward(grad, cache)
    else:
        # the optimizer updates its own copies, so that the case's inputs stay as drawn
        params, grads = [p.copy() for p in inputs["params"]], inputs["grads"]
        optimizer = fastnn.optim.Adam(params, lr=1e-3, backend=backend)

        def forward():
            return optimizer.step(grads)
        forward_backward = forward
    return {"forward": forward, "forward_backward": forward_backward}


def torch_workload(case, inputs, torch):
    """The same work with PyTorch in its native layout (NCHW) and the inputs' dtype.

    Forward only runs under ``torch.no_grad()`` (what inference code does); forward +
    backward records the graph and asks autograd for the gradients of every input.
    """
    d = case.dims
    F = torch.nn.functional

    def tensor(array, grad=False):
        # (ascontiguousarray makes a 0-d array 1-d; the reshape keeps its shape)
        return torch.from_numpy(np.ascontiguousarray(array).reshape(np.shape(array))).requires_grad_(grad)

    if case.group == "conv":
        x = tensor(inputs["x"].transpose(0, 3, 1, 2), True)
        w = tensor(inputs["w"].transpose(3, 2, 0, 1), True)
        b = tensor(inputs["b"], True)
        dy = tensor(inputs["grad"].transpose(0, 3, 1, 2))
        params = (x, w, b)

        def run():
            return F.conv2d(x, w, b, stride=d["stride"], padding=d["pad"])
    elif case.group == "pool":
        x = tensor(inputs["x"].transpose(0, 3, 1, 2), True)
        dy = tensor(inputs["grad"].transpose(0, 3, 1, 2))
        pool = F.max_pool2d if case.op == "max_pool2d" else F.avg_pool2d
        params = (x,)

        def run():
            return pool(x, d["k"], d["stride"], d["pad"])
    elif case.group == "bmm":
        a, b = tensor(inputs["a"], True), tensor(inputs["b"], True)
        dy = tensor(inputs["grad"])
        params = (a, b)

        def run():
            return torch.bmm(a, b)
    elif case.group == "lstm":
        x = tensor(inputs["x"], True)
        lstm = torch.nn.LSTM(d["n_x"], d["n_a"]).to(x.dtype)
        dy = tensor(inputs["grad"])
        params = (x, *lstm.parameters())

        def run():
            return lstm(x)[0]
    elif case.group == "norm":
        x = tensor(inputs["x"].transpose(0, 3, 1, 2), True)
        gamma, beta = tensor(inputs["gamma"], True), tensor(inputs["beta"], True)
        dy = tensor(inputs["grad"].transpose(0, 3, 1, 2))
        params = (x, gamma, beta)

        def run():
            return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    elif case.group == "loss":
        x, target = tensor(inputs["logits"], True), torch.from_numpy(inputs["target"])
        dy = tensor(inputs["grad"])
        params = (x,)

        def run():
            return F.cross_entropy(x, target)
    elif case.group == "dense":
        x, w, b = tensor(inputs["x"], True), tensor(inputs["w"], True), tensor(inputs["b"], True)
        dy = tensor(inputs["grad"])
        params = (x, w, b)

        def run():
            return F.relu(F.linear(x, w, b))
    elif case.group == "embedding":
        ids, table = torch.from_numpy(inputs["ids"]), tensor(inputs["table"], True)
        dy = tensor(inputs["grad"])
        params = (table,)

        def run():
            return F.embedding(ids, table)
    else:
        params = [tensor(p.copy(), True) for p in inputs["params"]]
        for p, g in zip(params, inputs["grads"]):
            p.grad = tensor(g)
        optimizer = torch.optim.Adam(params, lr=1e-3, foreach=True)

        def step():
            optimizer.step()
        return {"forward": step, "forward_backward": step}

    def forward():
        with torch.no_grad():
            return run()

    def forward_backward():
        return torch.autograd.grad(run(), params, dy)

    return {"forward": forward, "forward_backward": forward_backward}


def numpy_workload(case, inputs):
    """The case as a NumPy user would write it, vectorised, or None where NumPy has no
    such form (see :func:`suite.numpy_comparable`): ``np.matmul`` for bmm, a reshape
    for pooling windows that tile the image, one matmul per step for the LSTM."""
    if not numpy_comparable(case):
        return None
    grad = inputs["grad"]
    if case.group == "bmm":
        a, b = inputs["a"], inputs["b"]

        def forward():
            return np.matmul(a, b)

        def forward_backward():
            np.matmul(a, b)
            return np.matmul(grad, b.swapaxes(-1, -2)), np.matmul(a.swapaxes(-1, -2), grad)
    elif case.group == "pool":
        return _numpy_pool(case, inputs["x"], grad)
    else:
        x, W, b = inputs["x"], inputs["W"], inputs["b"]

        def forward():
            return numpy_lstm_forward(x, W, b)[0]

        def forward_backward():
            h, saved = numpy_lstm_forward(x, W, b)
            return numpy_lstm_backward(grad, saved)
    return {"forward": forward, "forward_backward": forward_backward}


def _numpy_pool(case, x, grad):
    k = case.dims["k"]
    N, H, W, C = x.shape
    windows = (N, H // k, k, W // k, k, C)  # a view: window rows and columns as axes 2 and 4
    expand = (slice(None), slice(None), None, slice(None), None, slice(None))
    if case.op == "max_pool2d":
        def forward():
            return x.reshape(windows).max(axis=(2, 4))

        def forward_backward():
            xw = x.reshape(windows)
            y = xw.max(axis=(2, 4))
            return ((xw == y[expand]) * grad[expand]).reshape(x.shape)
    else:
        scale = x.dtype.type(1.0 / (k * k))

        def forward():
            return x.reshape(windows).mean(axis=(2, 4))

        def forward_backward():
            x.reshape(windows).mean(axis=(2, 4))
            return np.broadcast_to(grad[expand] * scale, windows).reshape(x.shape)
    return {"forward": forward, "forward_backward": forward_backward}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_lstm_forward(x, W, b):
    """The LSTM of fastnn (gates f, u, c~, o stacked on [h_prev, x_t]) in NumPy, one
    matmul per step; returns (h, saved) with what the backward pass needs."""
    T, m, n_x = x.shape
    n_a = W.shape[0] // 4
    concat = np.zeros((T, m, n_a + n_x), x.dtype)
    gates = np.empty((T, m, 4 * n_a), x.dtype)
    c = np.zeros((T + 1, m, n_a), x.dtype)
    tanh_c = np.empty((T, m, n_a), x.dtype)
    h = np.empty((T, m, n_a), x.dtype)
    h_prev = np.zeros((m, n_a), x.dtype)
    for t in range(T):
        concat[t, :, :n_a] = h_prev
        concat[t, :, n_a:] = x[t]
        z = concat[t] @ W.T
        z += b
        g = gates[t]
        g[:, :2 * n_a] = _sigmoid(z[:, :2 * n_a])
        g[:, 2 * n_a:3 * n_a] = np.tanh(z[:, 2 * n_a:3 * n_a])
        g[:, 3 * n_a:] = _sigmoid(z[:, 3 * n_a:])
        c[t + 1] = g[:, :n_a] * c[t] + g[:, n_a:2 * n_a] * g[:, 2 * n_a:3 * n_a]
        np.tanh(c[t + 1], out=tanh_c[t])
        h_prev = h[t] = g[:, 3 * n_a:] * tanh_c[t]
    return h, (concat, gates, c, tanh_c, W)


def numpy_lstm_backward(dh, saved):
    """Backward through time of :func:`numpy_lstm_forward`: (dx, dW, db)."""
    concat, gates, c, tanh_c, W = saved
    T, m, n_a = dh.shape
    dx = np.empty((T, m, concat.shape[2] - n_a), dh.dtype)
    dW = np.zeros_like(W)
    db = np.zeros(W.shape[0], dh.dtype)
    dz = np.empty((m, 4 * n_a), dh.dtype)
    dh_next = np.zeros((m, n_a), dh.dtype)
    dc_next = np.zeros((m, n_a), dh.dtype)
    for t in reversed(range(T)):
        f, u, g, o = (gates[t][:, i * n_a:(i + 1) * n_a] for i in range(4))
        dh_t = dh[t] + dh_next
        dc = dc_next + dh_t * o * (1 - tanh_c[t] ** 2)
        dz[:, :n_a] = dc * c[t] * f * (1 - f)
        dz[:, n_a:2 * n_a] = dc * g * u * (1 - u)
        dz[:, 2 * n_a:3 * n_a] = dc * u * (1 - g ** 2)
        dz[:, 3 * n_a:] = dh_t * tanh_c[t] * o * (1 - o)
        dW += dz.T @ concat[t]
        db += dz.sum(axis=0)
        d_concat = dz @ W
        dh_next, dx[t] = d_concat[:, :n_a], d_concat[:, n_a:]
        dc_next = dc * f
    return dx, dW, db


def load_torch():
    """PyTorch, or None when it cannot be imported (the comparison is then skipped; a
    PyTorch that is installed but fails to import says why on stderr)."""
    try:
        import torch
    except ImportError as exc:
        if getattr(exc, "name", None) != "torch":
            print(f"fastnn-bench: PyTorch is installed but does not import: {exc!r}", file=sys.stderr)
        return None
    return torch


def set_threads(n, torch=None):
    """n threads for fastnn (OpenMP, Numba), for the BLAS libraries of NumPy and SciPy
    (the roofline's GEMM and the plain-NumPy baselines: fastnn itself only holds
    them to its count during its own calls) and, when given, for PyTorch."""
    from .._kernels._threads import _blas_libraries
    fastnn.set_num_threads(n)
    for lib in _blas_libraries():
        lib.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
