"""Max and average pooling, and the global pools."""
from fastnn import global_avg_pool2d, global_max_pool2d, pool2d_backward, pool2d_forward

from . import Op
from .conv import DIMS

API = {"max_pool2d": ["x", "kernel_size", "stride", "padding"], "avg_pool2d": ["x", "kernel_size", "stride", "padding"],
       "pool2d_forward": ["x", "kernel_size", "stride", "padding"], "pool2d_backward": ["dy", "cache"],
       "global_avg_pool2d": ["x"], "global_max_pool2d": ["x"]}


def _forward(mode):
    def forward(be, size, r):
        d = DIMS[size]
        x = r((d["N"], d["H"], d["W"], d["C"]))
        y, cache = pool2d_forward(x, d["k"], 1 if d["k"] == 1 else 2, d["k"] // 2, mode=mode, ceil_mode=True,
                                  backend=be)
        return [x], [y, global_max_pool2d(x, backend=be), global_avg_pool2d(x, layout="NCHW", backend=be)], cache
    return forward


def _backward(outputs, cache, r):
    dy = r(outputs[0].shape)
    return [dy], [pool2d_backward(dy, cache)]


OPS = [Op(f"{mode}_pool", API, ("pool2d_forward", "pool2d_backward"), _forward(mode), _backward,
          bench={"max": ("P1", "P2"), "avg": ("P3",)}[mode])
       for mode in ("max", "avg")]
