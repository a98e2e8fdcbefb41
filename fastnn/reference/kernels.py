"""The reference backend's kernels: the course's loops (see docs/KERNELS.md)."""
from .._kernels._collect import collect

KERNELS = {}
_modules = collect(KERNELS, "fastnn.reference", (
    "conv", "pool", "matmul", "recurrent",
    "dense", "loss", "norm", "dropout", "embedding", "optim"))
globals().update({name: kernel for name, (_, kernel) in KERNELS.items()})
