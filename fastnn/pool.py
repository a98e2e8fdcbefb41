"""Max and average pooling, each channel independently (no learnable parameters).

The kernels work in NHWC; NCHW callers are transposed on the way in and out.
"""
from . import _args as A
from . import _backends

__all__ = ["max_pool2d", "avg_pool2d", "pool2d_forward", "pool2d_backward", "global_avg_pool2d", "global_max_pool2d"]

_MODES = {"max": "max", "avg": "avg", "average": "avg"}
_X_DOC = {"NHWC": "(N, H, W, C)", "NCHW": "(N, C, H, W)"}


def _pool_forward(fn, x, kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad,
                  layout, backend):
    layout = A.check_layout(fn, layout)
    mode = _MODES[A.choice(fn, "mode", mode, tuple(_MODES))]
    count_include_pad = A.flag(fn, "count_include_pad", count_include_pad)
    arrays, dtype = A.as_arrays(fn, x=x)
    x = arrays["x"]
    A.check_ndim(fn, "x", x, 4, _X_DOC[layout])
    x = A.to_nhwc(x, layout)
    ksize, stride, pads, dilation, out_hw = A.pool_geometry(
        fn, x.shape[1:3], kernel_size, stride, padding, dilation, ceil_mode)
    if mode == "avg" and dilation != (1, 1):
        raise ValueError(f"{fn}: average pooling has no dilation, got dilation={dilation}")
    A.check_output_size(fn, "y", (x.shape[0],) + out_hw + (x.shape[3],), dtype)
    name, kernel = _backends.resolve(fn, "pool2d_forward", backend)
    y, state = kernel(A.contiguous(x, dtype), mode, ksize, stride, pads, dilation, out_hw, count_include_pad)
    y, = A.owned_outputs((y,), state)
    y = A.from_nhwc(y, layout)
    return y, A.Cache("pool2d", name, state, layout=layout, y_shape=y.shape, dtype=dtype)


def pool2d_forward(x, kernel_size, stride=None, padding=0, *, mode="max", dilation=1, ceil_mode=False,
                   count_include_pad=True, layout="NHWC", backend=None):
    """Pooling forward pass: returns (y, cache) for pool2d_backward.

    mode: "max" or "avg" ("average" accepted). stride=None means stride = kernel_size.
    padding: int or (ph, pw), symmetric, at most half the (dilated) kernel; max pooling
    pads with -inf, average pooling with zeros. ceil_mode and count_include_pad follow PyTorch.
    """
    return _pool_forward("pool2d_forward", x, kernel_size, stride, padding, mode, dilation, ceil_mode,
                         count_include_pad, layout, backend)


def max_pool2d(x, kernel_size, stride=None, padding=0, *, dilation=1, ceil_mode=False, layout="NHWC",
               backend=None):
    """Max pooling; see pool2d_forward."""
    return _pool_forward("max_pool2d", x, kernel_size, stride, padding, "max", dilation, ceil_mode,
                         True, layout, backend)[0]


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, ceil_mode=False, count_include_pad=True,
               layout="NHWC", backend=None):
    """Average pooling; see pool2d_forward."""
    return _pool_forward("avg_pool2d", x, kernel_size, stride, padding, "avg", 1, ceil_mode,
                         count_include_pad, layout, backend)[0]


def pool2d_backward(dy, cache):
    """Gradient dx of pool2d_forward. Max pooling routes each window's gradient to its
    first maximum (row-major window order); overlapping windows accumulate."""
    fn = "pool2d_backward"
    A.check_cache(fn, cache, "pool2d")
    layout = cache.meta["layout"]
    dy = A.grad_array(fn, "dy", dy, cache.meta["y_shape"])
    dy = A.contiguous(A.to_nhwc(dy, layout), cache.meta["dtype"])
    dx = _backends.kernel_of(cache.backend, "pool2d_backward")(dy, cache.state)
    return A.from_nhwc(dx, layout)


def _global_pool(fn, x, mode, layout, keepdims, backend):
    layout = A.check_layout(fn, layout)
    keepdims = A.flag(fn, "keepdims", keepdims)
    arrays, _ = A.as_arrays(fn, x=x)
    A.check_ndim(fn, "x", arrays["x"], 4, _X_DOC[layout])
    h, w = A.to_nhwc(arrays["x"], layout).shape[1:3]
    if h < 1 or w < 1:
        raise ValueError(f"{fn}: x must have H, W >= 1, got shape {arrays['x'].shape} (layout {layout})")
    y = _pool_forward(fn, arrays["x"], (h, w), (h, w), 0, mode, 1, False, True, layout, backend)[0]
    return y if keepdims else y.reshape(y.shape[0], A.prod(y.shape[1:]))


def global_avg_pool2d(x, *, layout="NHWC", keepdims=False, backend=None):
    """Mean over H and W: (N, C), or (N, 1, 1, C) / (N, C, 1, 1) with keepdims=True."""
    return _global_pool("global_avg_pool2d", x, "avg", layout, keepdims, backend)


def global_max_pool2d(x, *, layout="NHWC", keepdims=False, backend=None):
    """Maximum over H and W: (N, C), or (N, 1, 1, C) / (N, C, 1, 1) with keepdims=True."""
    return _global_pool("global_max_pool2d", x, "max", layout, keepdims, backend)
