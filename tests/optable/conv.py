"""Convolution and im2col / col2im."""
from fastnn import col2im, conv2d_backward, conv2d_forward, im2col

from . import Op

DIMS = {
    "small": dict(N=2, H=5, W=4, C=2, k=3),
    "empty": dict(N=0, H=5, W=4, C=2, k=3),
    "ones": dict(N=1, H=1, W=1, C=1, k=1),
}
API = {"conv2d": ["x", "w", "b"], "conv2d_forward": ["x", "w", "b"], "conv2d_backward": ["dy", "cache"]}
KERNELS = ("conv2d_forward", "conv2d_backward")


def _conv_forward(be, size, r):
    d = DIMS[size]
    x, w, b = r((d["N"], d["H"], d["W"], 2 * d["C"])), r((d["k"], d["k"], d["C"], 2 * d["C"])), r((2 * d["C"],))
    y, cache = conv2d_forward(x, w, b, padding="same", groups=2, backend=be)
    return [x, w, b], [y], cache


def _conv_nchw_forward(be, size, r):
    d = DIMS[size]
    x, w = r((d["N"], d["C"], d["H"] + 2, d["W"] + 2)), r((3, d["C"], d["k"], d["k"]))
    y, cache = conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2 if d["k"] < 3 else 1), layout="NCHW", backend=be)
    return [x, w], [y], cache


def _conv_backward(outputs, cache, r):
    dy = r(outputs[0].shape)
    return [dy], list(conv2d_backward(dy, cache))


def _im2col_forward(be, size, r):
    d = DIMS[size]
    x = r((d["N"], d["H"], d["W"], d["C"]))
    return [x], [im2col(x, d["k"], padding=d["k"] // 2, backend=be)], (be, x.shape, d["k"])


def _col2im(outputs, cache, r):
    be, shape, k = cache
    dcols = r(outputs[0].shape)
    return [dcols], [col2im(dcols, shape, k, padding=k // 2, backend=be)]


OPS = [
    Op("conv", API, KERNELS, _conv_forward, _conv_backward, bench=("C1", "C2", "C3", "C4", "C5", "C6")),
    Op("conv_nchw", API, KERNELS, _conv_nchw_forward, _conv_backward),
    Op("im2col", {"im2col": ["x", "kernel_size"], "col2im": ["cols", "x_shape", "kernel_size"]},
       ("im2col", "col2im"), _im2col_forward, _col2im),
]
