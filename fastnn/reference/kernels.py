"""The reference backend's kernels: the course's loops (see docs/KERNELS.md)."""
from .._kernels._collect import collect

_modules = collect(globals(), "fastnn.reference", (
    "conv", "pool", "matmul", "recurrent",
    "dense", "loss", "norm", "dropout", "embedding", "optim"))
