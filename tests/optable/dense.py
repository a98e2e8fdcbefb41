"""Dense layers (linear + activation), elementwise activations and softmax."""
import numpy as np

from fastnn import activation_backward, activation_forward, linear_backward, linear_forward, softmax

from . import Op

DIMS = {
    "small": dict(N=3, T=2, n_in=4, n_out=5),
    "empty": dict(N=0, T=2, n_in=4, n_out=5),
    "ones": dict(N=1, T=1, n_in=1, n_out=1),
}
LINEAR_API = {"linear_forward": ["x", "w", "b"], "linear_backward": ["dy", "cache"]}
LINEAR_KERNELS = ("linear_forward", "linear_backward")
ACTIVATION_API = {"activation_forward": ["z", "kind"], "activation_backward": ["da", "cache"]}
ACTIVATION_KERNELS = ("activation_forward", "activation_backward")

# PyTorch's version of each activation (leaky_relu's slope passed separately)
TORCH_ACT = {None: lambda F, z, alpha: z, "relu": lambda F, z, alpha: F.relu(z),
             "leaky_relu": lambda F, z, alpha: F.leaky_relu(z, alpha),
             "sigmoid": lambda F, z, alpha: F.sigmoid(z), "tanh": lambda F, z, alpha: F.tanh(z)}


def _linear(name, activation, bias_shape, batch_3d, alpha=0.01, bench=()):
    """An op running linear_forward with `activation`; bias_shape(n_out) is b's shape
    (None: no bias); batch_3d: x of shape (N, T, n_in) instead of (N, n_in)."""
    def shapes(d):
        lead = (d["N"], d["T"]) if batch_3d else (d["N"],)
        return lead + (d["n_in"],), (d["n_out"], d["n_in"])

    def forward(be, size, r):
        d = DIMS[size]
        x_shape, w_shape = shapes(d)
        x, w = r(x_shape), r(w_shape, 0.5)
        b = None if bias_shape is None else r.keep(r(bias_shape(d["n_out"])) + 0.5)
        y, cache = linear_forward(x, w, b, activation=activation, alpha=alpha, backend=be)
        return [a for a in (x, w, b) if a is not None], [y], cache

    def backward(outputs, cache, r):
        dy = r(outputs[0].shape)
        return [dy], list(linear_backward(dy, cache))

    def gradcheck(be, rng):
        x_shape, w_shape = shapes(DIMS["small"])
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape) * 0.5
        b = None if bias_shape is None else rng.standard_normal(bias_shape(w_shape[0])) + 0.5
        weights = rng.standard_normal(x_shape[:-1] + (w_shape[0],))

        def loss():
            return float(np.sum(linear_forward(x, w, b, activation=activation, alpha=alpha, backend=be)[0]
                                * weights))

        dx, dw, db = linear_backward(weights, linear_forward(x, w, b, activation=activation, alpha=alpha,
                                                             backend=be)[1])
        arrays, grads = {"x": x, "w": w}, {"x": dx, "w": dw}
        if b is not None:
            arrays["b"], grads["b"] = b, db
        return loss, arrays, grads

    def torch_check(be, dtype, rng):
        import torch
        import torch.nn.functional as F
        x_shape, w_shape = (5, 3, 7) if batch_3d else (9, 7), (6, 7)
        x, w = rng.standard_normal(x_shape).astype(dtype), (rng.standard_normal(w_shape) * 0.5).astype(dtype)
        b = None if bias_shape is None else (rng.standard_normal(bias_shape(6)) + 0.5).astype(dtype)
        dy = rng.standard_normal(x_shape[:-1] + (6,)).astype(dtype)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        tb = None if b is None else torch.tensor(b.reshape(-1), requires_grad=True)
        ty = TORCH_ACT[activation](F, F.linear(tx, tw, tb), alpha)
        ty.backward(torch.tensor(dy))
        y, cache = linear_forward(x, w, b, activation=activation, alpha=alpha, backend=be)
        dx, dw, db = linear_backward(dy, cache)
        out = [("y", y, ty.detach().numpy()), ("dx", dx, tx.grad.numpy()), ("dw", dw, tw.grad.numpy())]
        if b is not None:
            out.append(("db", db, tb.grad.numpy().reshape(b.shape)))
        return out

    return Op(name, LINEAR_API, LINEAR_KERNELS, forward, backward, gradcheck, torch_check, bench=bench)


def _activation(name, kind, alpha=0.01):
    def forward(be, size, r):
        d = DIMS[size]
        z = r((d["N"], d["T"], d["n_out"]))
        a, cache = activation_forward(z, kind, alpha=alpha, backend=be)
        return [z], [a], cache

    def backward(outputs, cache, r):
        da = r(outputs[0].shape)
        return [da], [activation_backward(da, cache)]

    def gradcheck(be, rng):
        z = rng.standard_normal((3, 4))
        weights = rng.standard_normal(z.shape)

        def loss():
            return float(np.sum(activation_forward(z, kind, alpha=alpha, backend=be)[0] * weights))

        dz = activation_backward(weights, activation_forward(z, kind, alpha=alpha, backend=be)[1])
        return loss, {"z": z}, {"z": dz}

    def torch_check(be, dtype, rng):
        import torch
        import torch.nn.functional as F
        z = rng.standard_normal((4, 3, 5)).astype(dtype)
        da = rng.standard_normal(z.shape).astype(dtype)
        tz = torch.tensor(z, requires_grad=True)
        ta = TORCH_ACT[kind](F, tz, alpha)
        ta.backward(torch.tensor(da))
        a, cache = activation_forward(z, kind, alpha=alpha, backend=be)
        return [("a", a, ta.detach().numpy()), ("dz", activation_backward(da, cache), tz.grad.numpy())]

    return Op(name, ACTIVATION_API, ACTIVATION_KERNELS, forward, backward, gradcheck, torch_check)


def _softmax_forward(be, size, r):
    d = DIMS[size]
    z = r((d["N"], d["T"], d["n_out"]), 3.0)
    return [z], [softmax(z, backend=be), softmax(z, axis=1, backend=be)], None


def _softmax_torch(be, dtype, rng):
    import torch
    z = (rng.standard_normal((4, 3, 6)) * 5).astype(dtype)
    tz = torch.tensor(z)
    return [("p", softmax(z, backend=be), torch.softmax(tz, -1).numpy()),
            ("p axis=0", softmax(z, axis=0, backend=be), torch.softmax(tz, 0).numpy())]


OPS = [
    _linear("linear", "relu", lambda n: (n,), False, bench=("N3",)),
    _linear("linear_sigmoid_nobias", "sigmoid", None, True),
    _linear("linear_leaky_course_bias", "leaky_relu", lambda n: (n, 1), False, alpha=0.2),
    _linear("linear_tanh", "tanh", lambda n: (n,), True),
    _linear("linear_plain", None, lambda n: (1, n), True),
    _activation("activation_relu", "relu"),
    _activation("activation_leaky_relu", "leaky_relu", alpha=0.1),
    _activation("activation_sigmoid", "sigmoid"),
    _activation("activation_tanh", "tanh"),
    Op("softmax", {"softmax": ["z", "axis"]}, ("softmax",), _softmax_forward, None, None, _softmax_torch),
]
