"""Convolution, pooling and batch normalisation layers over fastnn's public ops."""
import math
import numbers

import numpy as np

from .. import (activation_backward, activation_forward, batch_norm_backward, batch_norm_forward,
                batch_norm_inference, conv2d_backward, conv2d_forward, pool2d_backward, pool2d_forward)
from . import init as _init
from ._base import (Layer, as_float_input, check_choice, check_dtype, check_dy, check_int, check_pair, check_rng,
                    register)
from .layers import ACTIVATIONS, check_alpha, default_init

LAYOUTS = ("NHWC", "NCHW")


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def check_padding(layer, padding, allow_strings=True):
    """int p; (ph, pw); ((top, bottom), (left, right)); "same" / "valid" (conv only)."""
    if isinstance(padding, str):
        if allow_strings and padding in ("same", "valid"):
            return padding
        forms = 'an int, a pair, "same" or "valid"' if allow_strings else "an int or a pair"
        raise ValueError(f"{layer}: padding must be {forms}, got {padding!r}")
    if isinstance(padding, (list, tuple)):
        if len(padding) == 2 and all(isinstance(p, (list, tuple)) for p in padding) and allow_strings:
            return tuple(check_pair(layer, "padding", tuple(p), 0) for p in padding)
        return check_pair(layer, "padding", tuple(padding), 0)
    return check_pair(layer, "padding", padding, 0)


def _wrap_errors(layer, fn, *args, **kwargs):
    """Call an op; its ValueError (which names the op and the values) gains the layer's name."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise ValueError(f"{layer}.forward: {exc}") from None


def _channel_axis(layout, ndim):
    return 1 if (ndim == 2 or layout == "NCHW") else ndim - 1


@register
class Conv2d(Layer):
    """2-D convolution (cross-correlation, as the course and PyTorch), optional fused activation.

    ``layout="NHWC"`` (the course's ``(m, n_H, n_W, n_C)``): x ``(N, H, W, c_in)``, weight
    ``w`` ``(kh, kw, c_in // groups, c_out)`` (the course's ``(f, f, n_C_prev, n_C)``);
    ``layout="NCHW"`` (PyTorch): x ``(N, c_in, H, W)``, ``w`` ``(c_out, c_in // groups, kh, kw)``.
    ``b`` is ``(c_out,)``, starting at zero. ``padding``: int, pair, pair of pairs,
    ``"same"`` or ``"valid"`` (fastnn.conv2d's rules).
    """

    prefix = "conv"

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0, dilation=1, groups=1, activation=None,
                 layout="NHWC", *, alpha=0.01, bias=True, init=None, rng=None, dtype=np.float32):
        super().__init__()
        self.c_in = check_int("Conv2d", "c_in", c_in)
        self.c_out = check_int("Conv2d", "c_out", c_out)
        self.kernel_size = check_pair("Conv2d", "kernel_size", kernel_size)
        self.stride = check_pair("Conv2d", "stride", stride)
        self.padding = check_padding("Conv2d", padding)
        self.dilation = check_pair("Conv2d", "dilation", dilation)
        self.groups = check_int("Conv2d", "groups", groups)
        if self.c_in % self.groups or self.c_out % self.groups:
            raise ValueError(f"Conv2d: groups={self.groups} must divide c_in={self.c_in} and c_out={self.c_out}")
        self.activation = check_choice("Conv2d", "activation", activation, ACTIVATIONS)
        self.alpha = check_alpha("Conv2d", alpha)
        self.layout = check_choice("Conv2d", "layout", layout, LAYOUTS)
        self.bias = bool(bias)
        self.init = init
        self.dtype = check_dtype("Conv2d", dtype)
        rng = check_rng("Conv2d", rng)
        kh, kw = _pair(self.kernel_size)
        cin_g = self.c_in // self.groups
        shape = (kh, kw, cin_g, self.c_out) if self.layout == "NHWC" else (self.c_out, cin_g, kh, kw)
        fan_in, fan_out = kh * kw * cin_g, kh * kw * self.c_out // self.groups
        self._add_param("w", _init.make("Conv2d", init if init is not None else default_init(activation), shape,
                                        fan_in, fan_out, rng, self.dtype))
        if self.bias:
            self._add_param("b", np.zeros(self.c_out, self.dtype))
        self._cache = self._act_cache = None
        self._out_shape = None

    def forward(self, x, training=True):
        x = as_float_input("Conv2d", x, ndim=4, dtype=self.dtype)
        axis = _channel_axis(self.layout, 4)
        if x.shape[axis] != self.c_in:
            raise ValueError(f"Conv2d.forward: x has {x.shape[axis]} channels (axis {axis} of shape {x.shape}) but "
                             f"the layer expects c_in = {self.c_in} (layout {self.layout})")
        y, self._cache = _wrap_errors("Conv2d", conv2d_forward, x, self._params["w"], self._params.get("b"),
                                      stride=self.stride, padding=self.padding, dilation=self.dilation,
                                      groups=self.groups, layout=self.layout)
        if self.activation is not None:
            y, self._act_cache = activation_forward(y, self.activation, alpha=self.alpha)
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("Conv2d", dy, self._out_shape, self.dtype)
        if self.activation is not None:
            dy = activation_backward(dy, self._act_cache)
        dx, dw, db = conv2d_backward(dy, self._cache)
        self._grads["w"] = dw
        if self.bias:
            self._grads["b"] = db
        return dx

    def _config_args(self):
        return {"c_in": self.c_in, "c_out": self.c_out, "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                "activation": self.activation, "layout": self.layout, "alpha": self.alpha, "bias": self.bias,
                "init": self.init if isinstance(self.init, str) else None, "dtype": self.dtype.name}


class _Pool(Layer):
    mode = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True,
                 layout="NHWC"):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = check_pair(name, "kernel_size", kernel_size)
        self.stride = None if stride is None else check_pair(name, "stride", stride)
        self.padding = check_padding(name, padding, allow_strings=False)
        self.dilation = check_pair(name, "dilation", dilation)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.layout = check_choice(name, "layout", layout, LAYOUTS)
        self._cache = None
        self._out_shape = None
        self._dtype = None

    def forward(self, x, training=True):
        name = type(self).__name__
        x = as_float_input(name, x, ndim=4)
        y, self._cache = _wrap_errors(name, pool2d_forward, x, self.kernel_size, self.stride, self.padding,
                                      mode=self.mode, dilation=self.dilation, ceil_mode=self.ceil_mode,
                                      count_include_pad=self.count_include_pad, layout=self.layout)
        self._out_shape, self._dtype = y.shape, y.dtype
        return y

    def backward(self, dy):
        dy = check_dy(type(self).__name__, dy, self._out_shape, self._dtype)
        return pool2d_backward(dy, self._cache)


@register
class MaxPool2d(_Pool):
    """Max pooling of each channel; ``stride=None`` means ``stride = kernel_size``."""

    prefix = "pool"
    mode = "max"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, layout="NHWC"):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode, True, layout)

    def _config_args(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "ceil_mode": self.ceil_mode, "layout": self.layout}


@register
class AvgPool2d(_Pool):
    """Average pooling of each channel; ``stride=None`` means ``stride = kernel_size``."""

    prefix = "pool"
    mode = "avg"

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, layout="NHWC"):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode, count_include_pad, layout)

    def _config_args(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "ceil_mode": self.ceil_mode, "count_include_pad": self.count_include_pad, "layout": self.layout}


@register
class GlobalAvgPool2d(Layer):
    """Mean over H and W: ``(N, H, W, C) -> (N, C)`` (NHWC) or ``(N, C, H, W) -> (N, C)``."""

    prefix = "globalpool"

    def __init__(self, layout="NHWC"):
        super().__init__()
        self.layout = check_choice("GlobalAvgPool2d", "layout", layout, LAYOUTS)
        self._cache = None
        self._pooled_shape = None
        self._out_shape = None
        self._dtype = None

    def forward(self, x, training=True):
        x = as_float_input("GlobalAvgPool2d", x, ndim=4)
        hw = x.shape[1:3] if self.layout == "NHWC" else x.shape[2:4]
        if min(hw) < 1:
            raise ValueError(f"GlobalAvgPool2d.forward: x must have H, W >= 1, got shape {x.shape} "
                             f"(layout {self.layout})")
        y, self._cache = pool2d_forward(x, hw, hw, 0, mode="avg", layout=self.layout)
        self._pooled_shape = y.shape
        y = y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3])
        self._out_shape, self._dtype = y.shape, y.dtype
        return y

    def backward(self, dy):
        dy = check_dy("GlobalAvgPool2d", dy, self._out_shape, self._dtype)
        return pool2d_backward(dy.reshape(self._pooled_shape), self._cache)

    def _config_args(self):
        return {"layout": self.layout}


@register
class BatchNorm(Layer):
    """Batch normalisation of ``(N, C)`` (dense) or ``(N, H, W, C)`` / ``(N, C, H, W)`` inputs.

    Training: batch statistics (``fastnn.batch_norm_forward``, the biased variance),
    and the course's running averages ``running = momentum * running + (1 - momentum) * batch``
    in ``buffers["running_mean"]``/``["running_var"]`` (start: 0 and 1). Eval:
    ``fastnn.batch_norm_inference`` on the running averages. Parameters ``gamma``
    (ones) and ``beta`` (zeros), ``(c,)``.
    """

    prefix = "bn"

    def __init__(self, c, momentum=0.9, eps=1e-5, layout="NHWC", *, dtype=np.float32):
        super().__init__()
        self.c = check_int("BatchNorm", "c", c)
        for name, value, low in (("momentum", momentum, None), ("eps", eps, None)):
            if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value)):
                raise ValueError(f"BatchNorm: {name} must be a finite real number, got {value!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1], got {momentum!r}")
        if eps < 0:
            raise ValueError(f"BatchNorm: eps must be >= 0, got {eps!r}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.layout = check_choice("BatchNorm", "layout", layout, LAYOUTS)
        self.dtype = check_dtype("BatchNorm", dtype)
        self._add_param("gamma", np.ones(self.c, self.dtype))
        self._add_param("beta", np.zeros(self.c, self.dtype))
        self._buffers["running_mean"] = np.zeros(self.c, self.dtype)
        self._buffers["running_var"] = np.ones(self.c, self.dtype)
        self._cache = None
        self._out_shape = None

    def forward(self, x, training=True):
        x = as_float_input("BatchNorm", x, ndim=(2, 4), dtype=self.dtype)
        axis = _channel_axis(self.layout, x.ndim)
        if x.shape[axis] != self.c:
            raise ValueError(f"BatchNorm.forward: x has {x.shape[axis]} channels (axis {axis} of shape {x.shape}) "
                             f"but the layer expects c = {self.c}"
                             + ("" if x.ndim == 2 else f" (layout {self.layout})"))
        p, buf = self._params, self._buffers
        if self._mode(training):
            y, mean, var, self._cache = _wrap_errors("BatchNorm", batch_norm_forward, x, p["gamma"], p["beta"],
                                                     eps=self.eps, layout=self.layout)
            m = self.momentum
            # in place: the buffers keep their identity, like the parameters
            buf["running_mean"][...] = m * buf["running_mean"] + (1 - m) * mean
            buf["running_var"][...] = m * buf["running_var"] + (1 - m) * var
        else:
            y = _wrap_errors("BatchNorm", batch_norm_inference, x, p["gamma"], p["beta"], buf["running_mean"],
                             buf["running_var"], eps=self.eps, layout=self.layout)
            self._cache = None
        self._out_shape = y.shape
        return y

    def backward(self, dy):
        dy = check_dy("BatchNorm", dy, self._out_shape, self.dtype)
        if self._cache is None:
            raise RuntimeError("BatchNorm.backward: the last forward pass was in eval mode (running statistics); "
                               "only a training-mode forward pass can be differentiated")
        dx, dgamma, dbeta = batch_norm_backward(dy, self._cache)
        self._grads["gamma"], self._grads["beta"] = dgamma, dbeta
        return dx

    def _config_args(self):
        return {"c": self.c, "momentum": self.momentum, "eps": self.eps, "layout": self.layout,
                "dtype": self.dtype.name}
