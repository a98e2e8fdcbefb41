"""Softmax and sigmoid cross-entropy."""
import numpy as np

from fastnn import (sigmoid_cross_entropy_backward, sigmoid_cross_entropy_forward, softmax_cross_entropy_backward,
                    softmax_cross_entropy_forward)

from . import Op

DIMS = {
    "small": dict(N=4, C=5),
    "empty": dict(N=0, C=5),
    "ones": dict(N=1, C=1),
}
SOFTMAX_API = {"softmax_cross_entropy_forward": ["logits", "target"],
               "softmax_cross_entropy_backward": ["cache", "dloss"]}
SIGMOID_API = {"sigmoid_cross_entropy_forward": ["logits", "target"],
               "sigmoid_cross_entropy_backward": ["cache", "dloss"]}
SOFTMAX_KERNELS = ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward")
SIGMOID_KERNELS = ("sigmoid_cross_entropy_forward", "sigmoid_cross_entropy_backward")


def _probabilities(rng, shape, dtype):
    p = rng.uniform(0.05, 1.0, shape)
    return (p / p.sum(axis=-1, keepdims=True)).astype(dtype)


def _index_forward(be, size, r):
    d = DIMS[size]
    x = r((d["N"], d["C"]), scale=2.0)
    t = r.rng.integers(0, d["C"], d["N"])
    loss, cache = softmax_cross_entropy_forward(x, t, backend=be)
    return [x, t], [loss], cache


def _prob_forward(be, size, r):
    d = DIMS[size]
    x = r((2, d["N"], d["C"]), scale=2.0)
    t = r.keep(_probabilities(r.rng, x.shape, x.dtype))
    loss, cache = softmax_cross_entropy_forward(x, t, reduction="none", backend=be)
    return [x, t], [loss], cache


def _sigmoid_forward(be, size, r):
    d = DIMS[size]
    x = r((d["N"], d["C"] + 1), scale=3.0)
    t = r.keep(r.rng.uniform(0, 1, x.shape).astype(x.dtype))
    loss, cache = sigmoid_cross_entropy_forward(x, t, reduction="sum", backend=be)
    return [x, t], [loss], cache


def _softmax_backward(outputs, cache, r):
    dloss = r(outputs[0].shape)
    return [dloss], [softmax_cross_entropy_backward(cache, dloss)]


def _sigmoid_backward(outputs, cache, r):
    dloss = r(outputs[0].shape)
    return [dloss], [sigmoid_cross_entropy_backward(cache, dloss)]


def _gradcheck(forward, backward, make, reduction):
    """(loss, {"logits": x}, {"logits": analytic}) for loss = sum(w * L) with fixed weights."""
    def check(be, rng):
        x, t = make(rng)
        loss0, _ = forward(x, t, reduction=reduction, backend=be)
        w = rng.standard_normal(np.shape(loss0))

        def loss():
            return float(np.sum(w * forward(x, t, reduction=reduction, backend=be)[0]))
        _, cache = forward(x, t, reduction=reduction, backend=be)
        return loss, {"logits": x}, {"logits": backward(cache, w)}
    return check


def _make_index(rng):
    return rng.standard_normal((4, 6)) * 2, rng.integers(0, 6, 4)


def _make_prob(rng):
    x = rng.standard_normal((2, 3, 5)) * 2
    return x, _probabilities(rng, x.shape, np.float64)


def _make_sigmoid(rng):
    x = rng.standard_normal((3, 4)) * 3
    return x, rng.uniform(0, 1, x.shape)


def _torch_softmax(be, dtype, rng):
    import torch
    import torch.nn.functional as F
    out = []
    for kind in ("index", "prob"):
        x = (rng.standard_normal((7, 11)) * 3).astype(dtype)
        t = rng.integers(0, 11, 7) if kind == "index" else _probabilities(rng, x.shape, dtype)
        for reduction in ("mean", "sum", "none"):
            loss, cache = softmax_cross_entropy_forward(x, t, reduction=reduction, backend=be)
            dloss = rng.standard_normal(loss.shape).astype(dtype)
            dx = softmax_cross_entropy_backward(cache, dloss)
            xt = torch.tensor(x, requires_grad=True)
            lt = F.cross_entropy(xt, torch.tensor(t), reduction=reduction)
            lt.backward(torch.tensor(dloss))
            out += [(f"{kind} {reduction} loss", loss, lt.detach().numpy()),
                    (f"{kind} {reduction} dlogits", dx, xt.grad.numpy())]
    return out


def _torch_sigmoid(be, dtype, rng):
    import torch
    import torch.nn.functional as F
    out = []
    x = (rng.standard_normal((5, 9)) * 4).astype(dtype)
    t = rng.uniform(0, 1, x.shape).astype(dtype)
    for reduction in ("mean", "sum", "none"):
        loss, cache = sigmoid_cross_entropy_forward(x, t, reduction=reduction, backend=be)
        dloss = rng.standard_normal(loss.shape).astype(dtype)
        dx = sigmoid_cross_entropy_backward(cache, dloss)
        xt = torch.tensor(x, requires_grad=True)
        lt = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), reduction=reduction)
        lt.backward(torch.tensor(dloss))
        out += [(f"{reduction} loss", loss, lt.detach().numpy()), (f"{reduction} dlogits", dx, xt.grad.numpy())]
    return out


OPS = [
    Op("softmax_xent", SOFTMAX_API, SOFTMAX_KERNELS, _index_forward, _softmax_backward,
       _gradcheck(softmax_cross_entropy_forward, softmax_cross_entropy_backward, _make_index, "mean"),
       _torch_softmax, bench=("N2",)),
    Op("softmax_xent_prob", SOFTMAX_API, SOFTMAX_KERNELS, _prob_forward, _softmax_backward,
       _gradcheck(softmax_cross_entropy_forward, softmax_cross_entropy_backward, _make_prob, "none")),
    Op("sigmoid_xent", SIGMOID_API, SIGMOID_KERNELS, _sigmoid_forward, _sigmoid_backward,
       _gradcheck(sigmoid_cross_entropy_forward, sigmoid_cross_entropy_backward, _make_sigmoid, "mean"),
       _torch_sigmoid),
]
