"""Batch normalisation: training forward/backward (NHWC, NCHW, dense) and inference.

Training-mode batch norm has no statistics for an empty batch (batch_norm_forward
raises ValueError), so size "empty" runs batch_norm_inference on N = 0 and the
training pair on the smallest batch that has statistics: one value per channel
(N = H = W = 1, where var = 0 and y = beta).
"""
import numpy as np

from fastnn import batch_norm_backward, batch_norm_forward, batch_norm_inference

from . import Op

DIMS = {
    "small": dict(N=2, H=3, W=4, C=5),
    "empty": dict(N=0, H=3, W=4, C=5),
    "ones": dict(N=1, H=1, W=1, C=1),
}
API = {"batch_norm_forward": ["x", "gamma", "beta"], "batch_norm_backward": ["dy", "cache"],
       "batch_norm_inference": ["x", "gamma", "beta", "mean", "var"]}
KERNELS = ("batch_norm_forward", "batch_norm_backward")

# x's shape for each layout, and its NCHW view's axes (for PyTorch)
_SHAPES = {
    "NHWC": lambda d: (d["N"], d["H"], d["W"], d["C"]),
    "NCHW": lambda d: (d["N"], d["C"], d["H"], d["W"]),
    "dense": lambda d: (d["N"] * d["H"], d["C"]),
}
_TO_NCHW = {"NHWC": lambda a: a.transpose(0, 3, 1, 2), "NCHW": lambda a: a, "dense": lambda a: a}


def _layout(kind):
    return "NCHW" if kind == "NCHW" else "NHWC"


def _params(r, c):
    """gamma around 1 and a non-zero beta (a zero beta hides a swapped one)."""
    return r.keep(1.0 + 0.5 * r((c,))), r.keep(0.5 + r((c,)))


def _training_forward(kind):
    def forward(be, size, r):
        d = DIMS[size]
        inputs, outputs = [], []
        if d["N"] == 0:
            x0 = r(_SHAPES[kind](d))
            gamma0, beta0 = _params(r, d["C"])
            mean0, var0 = r((d["C"],)), r.keep(np.abs(r((d["C"],))) + 0.5)
            inputs += [x0, gamma0, beta0, mean0, var0]
            outputs.append(batch_norm_inference(x0, gamma0, beta0, mean0, var0, layout=_layout(kind), backend=be))
            d = DIMS["ones"] | {"C": d["C"]}
        x = r.keep(3.0 + 2.0 * r(_SHAPES[kind](d)))
        gamma, beta = _params(r, d["C"])
        y, mean, var, cache = batch_norm_forward(x, gamma, beta, layout=_layout(kind), backend=be)
        return inputs + [x, gamma, beta], outputs + [y, mean, var], (cache, y.shape)
    return forward


def _training_backward(outputs, cache, r):
    cache, shape = cache
    dy = r(shape)
    return [dy], list(batch_norm_backward(dy, cache))


def _inference_forward(be, size, r):
    d = DIMS[size]
    x = r(_SHAPES["NCHW"](d))
    gamma, beta = _params(r, d["C"])
    mean, var = r((d["C"],)), r.keep(np.abs(r((d["C"],))) + 0.1)
    y = batch_norm_inference(x, gamma, beta, mean, var, layout="NCHW", eps=1e-3, backend=be)
    return [x, gamma, beta, mean, var], [y], None


def _gradcheck(kind):
    def gradcheck(be, rng):
        d = dict(N=3, H=2, W=3, C=4)
        x = rng.standard_normal(_SHAPES[kind](d)) * 2.0 + 1.0
        gamma = rng.uniform(0.5, 1.5, d["C"])
        beta = rng.uniform(-1.0, 1.0, d["C"])
        weights = rng.standard_normal(x.shape)

        def loss():
            return float(np.sum(batch_norm_forward(x, gamma, beta, layout=_layout(kind), backend=be)[0] * weights))
        cache = batch_norm_forward(x, gamma, beta, layout=_layout(kind), backend=be)[3]
        dx, dgamma, dbeta = batch_norm_backward(weights, cache)
        return loss, {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta}
    return gradcheck


def _torch(kind):
    def compare(be, dtype, rng):
        import torch
        import torch.nn.functional as F
        d = dict(N=3, H=5, W=7, C=6)
        x = (rng.standard_normal(_SHAPES[kind](d)) * 2.0 + 1.0).astype(dtype)
        gamma = rng.uniform(0.5, 1.5, d["C"]).astype(dtype)
        beta = rng.uniform(-1.0, 1.0, d["C"]).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        y, mean, var, cache = batch_norm_forward(x, gamma, beta, layout=_layout(kind), backend=be)
        dx, dgamma, dbeta = batch_norm_backward(dy, cache)
        xt = torch.tensor(np.ascontiguousarray(_TO_NCHW[kind](x)), requires_grad=True)
        gt = torch.tensor(gamma, requires_grad=True)
        bt = torch.tensor(beta, requires_grad=True)
        yt = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
        yt.backward(torch.tensor(np.ascontiguousarray(_TO_NCHW[kind](dy))))
        axes = [0] + list(range(2, xt.dim()))
        var_t, mean_t = torch.var_mean(xt.detach(), dim=axes, correction=0)
        return [("y", _TO_NCHW[kind](y), yt.detach().numpy()), ("mean", mean, mean_t.numpy()),
                ("var", var, var_t.numpy()), ("dx", _TO_NCHW[kind](dx), xt.grad.numpy()),
                ("dgamma", dgamma, gt.grad.numpy()), ("dbeta", dbeta, bt.grad.numpy())]
    return compare


OPS = [
    Op(f"batch_norm{'' if kind == 'NHWC' else '_' + kind.lower()}", API, KERNELS, _training_forward(kind),
       _training_backward, _gradcheck(kind), _torch(kind), bench=("N1",) if kind == "NHWC" else ())
    for kind in ("NHWC", "NCHW", "dense")
] + [Op("batch_norm_inference", {"batch_norm_inference": API["batch_norm_inference"]}, ("batch_norm_inference",),
        _inference_forward)]
