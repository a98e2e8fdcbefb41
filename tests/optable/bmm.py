"""Batch matrix multiply."""
from fastnn import bmm, bmm_backward

from . import Op

DIMS = {
    "small": dict(N=2, C=2, m=3, k=3, n=2),
    "empty": dict(N=0, C=2, m=0, k=3, n=2),
    "ones": dict(N=1, C=1, m=1, k=1, n=1),
}


def _forward(be, size, r):
    d = DIMS[size]
    a, b = r((d["N"], 1, d["m"] + 1, d["k"])), r((d["C"], d["k"], d["n"]))
    return [a, b], [bmm(a, b, backend=be)], (be, a, b)


def _backward(outputs, cache, r):
    be, a, b = cache
    dc = r(outputs[0].shape)
    return [dc], list(bmm_backward(dc, a, b, backend=be))


OPS = [Op("bmm", {"bmm": ["a", "b"], "bmm_backward": ["dc", "a", "b"]}, ("bmm", "bmm_backward"),
          _forward, _backward, bench=("B1", "B2", "B3"))]
