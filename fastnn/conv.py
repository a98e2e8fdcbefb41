"""Convolution (cross-correlation, no kernel flip), im2col and col2im.

The kernels work in NHWC with weights (kh, kw, C_in // groups, C_out); NCHW callers
are transposed on the way in and out. See docs/KERNELS.md.
"""
from . import _args as A
from . import _backends

__all__ = ["conv2d", "conv2d_forward", "conv2d_backward", "im2col", "col2im"]

_X_DOC = {"NHWC": "(N, H, W, C_in)", "NCHW": "(N, C_in, H, W)"}
_W_DOC = {"NHWC": "(kh, kw, C_in // groups, C_out)", "NCHW": "(C_out, C_in // groups, kh, kw)"}


def _w_to_kernel(w, layout):
    return w if layout == "NHWC" else w.transpose(2, 3, 1, 0)


def _w_from_kernel(w, layout):
    return w if layout == "NHWC" else A.contiguous(w.transpose(3, 2, 0, 1), w.dtype)


def _conv_forward(fn, x, w, b, stride, padding, dilation, groups, layout, backend):
    layout = A.check_layout(fn, layout)
    arrays, dtype = A.as_arrays(fn, optional=("b",), x=x, w=w, b=b)
    x, w, b = arrays["x"], arrays["w"], arrays["b"]
    A.check_ndim(fn, "x", x, 4, _X_DOC[layout])
    A.check_ndim(fn, "w", w, 4, _W_DOC[layout])
    x = A.to_nhwc(x, layout)
    w = _w_to_kernel(w, layout)
    n, h, wd, c_in = x.shape
    kh, kw, c_per_group, c_out = w.shape
    groups = A.as_int(fn, "groups", groups, 1)
    if c_in % groups or c_out % groups:
        raise ValueError(f"{fn}: groups={groups} must divide C_in={c_in} and C_out={c_out} (layout {layout})")
    if c_per_group * groups != c_in:
        raise ValueError(
            f"{fn}: w expects {c_per_group * groups} input channels ({c_per_group} per group, groups={groups}) "
            f"but x has {c_in} (layout {layout})"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: the kernel must be at least 1x1, got w of shape {arrays['w'].shape}")
    b_shape = None
    if b is not None:
        b_shape = b.shape
        b = A.bias_vector(fn, "b", b, c_out, "one per output channel")
    stride = A.pair(fn, "stride", stride)
    dilation = A.pair(fn, "dilation", dilation)
    ksize = (kh, kw)
    pads = A.conv_pads(fn, padding, (h, wd), ksize, stride, dilation)
    out_hw = A.conv_out_hw(fn, (h, wd), pads, ksize, stride, dilation)
    A.check_output_size(fn, "y", (n,) + out_hw + (c_out,), dtype)
    name, kernel = _backends.resolve(fn, "conv2d_forward", backend)
    limit = _backends.get_workspace_limit()
    if not (ksize == (1, 1) and stride == (1, 1) and pads == (0, 0, 0, 0)):
        A.check_workspace(fn, name, out_hw[0] * out_hw[1], kh * kw * c_in, dtype, limit)
    x, w, b = A.contiguous(x, dtype), A.contiguous(w, dtype), A.contiguous(b, dtype)
    y, state = kernel(x, w, b, stride, pads, dilation, groups, out_hw, limit)
    y, = A.owned_outputs((y,), state)
    y = A.from_nhwc(y, layout)
    cache = A.Cache("conv2d", name, state, layout=layout, y_shape=y.shape, dtype=dtype, b_shape=b_shape)
    return y, cache


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, layout="NHWC", backend=None):
    """Convolution (cross-correlation) forward pass: returns (y, cache) for conv2d_backward.

    x: (N, H, W, C_in) in NHWC (the course's (m, n_H, n_W, n_C)) or (N, C_in, H, W) in NCHW.
    w: (kh, kw, C_in // groups, C_out) in NHWC or (C_out, C_in // groups, kh, kw) in NCHW.
    b: None or any shape holding C_out values. padding: int, (ph, pw),
    ((top, bottom), (left, right)), "valid" or "same".
    """
    return _conv_forward("conv2d_forward", x, w, b, stride, padding, dilation, groups, layout, backend)


def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, layout="NHWC", backend=None):
    """Convolution (cross-correlation) forward pass; see conv2d_forward."""
    return _conv_forward("conv2d", x, w, b, stride, padding, dilation, groups, layout, backend)[0]


def conv2d_backward(dy, cache, *, need_dx=True):
    """Gradients (dx, dw, db) of conv2d_forward; db is None when b was None, else in b's shape.

    need_dx=False: the input gradient is not computed and dx is None (a network's first
    layer, whose input needs no gradient).
    """
    fn = "conv2d_backward"
    A.check_cache(fn, cache, "conv2d")
    if not isinstance(need_dx, bool):
        raise TypeError(f"{fn}: need_dx must be a bool, got {need_dx!r}")
    layout = cache.meta["layout"]
    dy = A.grad_array(fn, "dy", dy, cache.meta["y_shape"])
    dy = A.contiguous(A.to_nhwc(dy, layout), cache.meta["dtype"])
    dx, dw, db = _backends.kernel_of(cache.backend, "conv2d_backward")(dy, cache.state, bool(need_dx))
    if db is not None:
        db = db.reshape(cache.meta["b_shape"])
    return A.from_nhwc(dx, layout) if need_dx else None, _w_from_kernel(dw, layout), db


def _patch_geometry(fn, shape, kernel_size, stride, padding, dilation):
    ksize = A.pair(fn, "kernel_size", kernel_size)
    stride = A.pair(fn, "stride", stride)
    dilation = A.pair(fn, "dilation", dilation)
    pads = A.conv_pads(fn, padding, shape[1:3], ksize, stride, dilation)
    out_hw = A.conv_out_hw(fn, shape[1:3], pads, ksize, stride, dilation)
    return ksize, stride, pads, dilation, out_hw


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NHWC", backend=None):
    """Patches of x as rows: (N * H_out * W_out, kh * kw * C), rows ordered (n, oh, ow).

    Columns are ordered (kh, kw, C) in NHWC, so conv2d is cols @ w.reshape(-1, C_out);
    and (C, kh, kw) in NCHW, so conv2d is cols @ w.reshape(C_out, -1).T.
    """
    fn = "im2col"
    layout = A.check_layout(fn, layout)
    arrays, dtype = A.as_arrays(fn, x=x)
    x = arrays["x"]
    A.check_ndim(fn, "x", x, 4, _X_DOC[layout].replace("C_in", "C"))
    x = A.to_nhwc(x, layout)
    geometry = _patch_geometry(fn, x.shape, kernel_size, stride, padding, dilation)
    (kh, kw), out_hw = geometry[0], geometry[4]
    A.check_output_size(fn, "cols", (x.shape[0] * out_hw[0] * out_hw[1], kh * kw * x.shape[3]), dtype)
    name, kernel = _backends.resolve(fn, "im2col", backend)
    cols = kernel(A.contiguous(x, dtype), *geometry)
    if layout == "NCHW":
        (kh, kw), c = geometry[0], x.shape[3]
        cols = A.contiguous(cols.reshape(-1, kh, kw, c).transpose(0, 3, 1, 2).reshape(cols.shape), dtype)
    return cols


def col2im(cols, x_shape, kernel_size, *, stride=1, padding=0, dilation=1, layout="NHWC", backend=None):
    """The adjoint of im2col: sums every patch entry back into its cell of an x_shape array."""
    fn = "col2im"
    layout = A.check_layout(fn, layout)
    arrays, dtype = A.as_arrays(fn, cols=cols)
    cols = arrays["cols"]
    try:
        x_shape = tuple(A.as_int(fn, "x_shape", v, 0) for v in x_shape)
    except TypeError:
        raise ValueError(f"{fn}: x_shape must be a 4-tuple of ints, got {x_shape!r}") from None
    if len(x_shape) != 4:
        raise ValueError(f"{fn}: x_shape must be a 4-tuple {_X_DOC[layout].replace('C_in', 'C')}, got {x_shape!r}")
    nhwc = x_shape if layout == "NHWC" else (x_shape[0], x_shape[2], x_shape[3], x_shape[1])
    A.check_output_size(fn, "x", x_shape, dtype)
    geometry = _patch_geometry(fn, nhwc, kernel_size, stride, padding, dilation)
    (kh, kw), out_hw = geometry[0], geometry[4]
    expected = (nhwc[0] * out_hw[0] * out_hw[1], kh * kw * nhwc[3])
    if cols.shape != expected:
        raise ValueError(f"{fn}: cols must have shape {expected} for x_shape {x_shape} (layout {layout}), "
                         f"got {cols.shape}")
    if layout == "NCHW":
        cols = cols.reshape(-1, nhwc[3], kh, kw).transpose(0, 2, 3, 1)
    name, kernel = _backends.resolve(fn, "col2im", backend)
    x = kernel(A.contiguous(cols, dtype).reshape(expected), nhwc, *geometry)
    return A.from_nhwc(x, layout)
