"""The suite of PERF.md: its cases, their targets, their work, and the selection of
what a run measures. Nothing here imports NumPy or times anything."""
import math
import os
from dataclasses import dataclass, field, replace

PASSES = ("forward", "forward_backward")
PASS_LABEL = {"forward": "fwd", "forward_backward": "fwd+bwd", "both": "both"}
TORCH = "torch"
NUMPY = "numpy"
REFERENCE = "reference"
DTYPES = ("float32", "float64")
ITEMSIZE = {"float32": 4, "float64": 8}

GROUP_OF_OP = {"conv2d": "conv", "max_pool2d": "pool", "avg_pool2d": "pool", "bmm": "bmm", "lstm": "lstm",
               "batch_norm": "norm", "softmax_cross_entropy": "loss", "linear": "dense", "embedding": "embedding",
               "adam": "optim"}
GROUP_TITLE = {"conv": "conv2d", "pool": "pooling", "bmm": "bmm", "lstm": "LSTM", "norm": "batch norm",
               "loss": "softmax CE", "dense": "linear", "embedding": "embedding", "optim": "Adam"}
# The kernel whose backend=None choice is the group's default backend.
GROUP_KERNEL = {"conv": "conv2d_forward", "pool": "pool2d_forward", "bmm": "bmm", "lstm": "lstm_forward",
                "norm": "batch_norm_forward", "loss": "softmax_cross_entropy_forward", "dense": "linear_forward",
                "embedding": "embedding_forward", "optim": "adam_step"}
# the training operations' groups (letter N in --cases)
TRAINING_GROUPS = ("norm", "loss", "dense", "embedding", "optim")


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``targets`` maps a dtype to the highest acceptable fastnn /
    PyTorch ratio of one case, or to None where only a group target applies."""

    id: str
    op: str
    dims: dict = field(hash=False)
    targets: dict = field(hash=False)
    note: str = ""

    @property
    def group(self):
        return GROUP_OF_OP[self.op]

    def target(self, dtype="float32"):
        return self.targets.get(dtype)


def _targets(float32, float64):
    return {"float32": float32, "float64": float64}


def _conv(id, N, H, W, C_in, C_out, k, stride, pad, note=""):
    dims = dict(N=N, H=H, W=W, C_in=C_in, C_out=C_out, k=k, stride=stride, pad=pad)
    # float64 convolutions are judged by the geometric mean alone.
    return Case(id, "conv2d", dims, _targets(1.5, None), note)


def _pool(id, op, N, H, W, C, k, stride, pad=0, note=""):
    return Case(id, op, dict(N=N, H=H, W=W, C=C, k=k, stride=stride, pad=pad), _targets(0.5, 0.5), note)


SUITE = (
    _conv("C1", 32, 32, 32, 3, 64, 3, 1, 1, "first layer, tiny C_in"),
    _conv("C2", 32, 32, 32, 64, 64, 3, 1, 1, "CIFAR block"),
    _conv("C3", 8, 56, 56, 64, 64, 3, 1, 1, "ResNet stage 1"),
    _conv("C4", 8, 14, 14, 256, 256, 3, 1, 1, "ResNet stage 3"),
    _conv("C5", 32, 16, 16, 64, 128, 1, 1, 0, "pointwise"),
    _conv("C6", 16, 28, 28, 32, 64, 5, 2, 2, "strided"),
    _pool("P1", "max_pool2d", 32, 32, 32, 64, 2, 2),
    _pool("P2", "max_pool2d", 8, 112, 112, 64, 3, 2, 1, "ResNet stem"),
    _pool("P3", "avg_pool2d", 32, 32, 32, 64, 2, 2),
    Case("B1", "bmm", dict(B=64, M=128, K=128, N=128), _targets(1.05, 1.05)),
    Case("B2", "bmm", dict(B=512, M=32, K=64, N=32), _targets(1.05, 1.05), "many small matrices"),
    Case("B3", "bmm", dict(B=8, M=512, K=512, N=512), _targets(1.05, 1.05)),
    Case("L1", "lstm", dict(T=50, m=64, n_x=128, n_a=256), _targets(1.0, 1.0)),
    Case("L2", "lstm", dict(T=100, m=1, n_x=64, n_a=64), _targets(0.5, None), "latency-bound"),
    Case("L3", "lstm", dict(T=20, m=256, n_x=512, n_a=512), _targets(1.0, 1.0), "GEMM-bound"),
    # the training operations: float32 targets (PERF.md); float64 is reported
    Case("N1", "batch_norm", dict(N=32, H=32, W=32, C=64), _targets(0.7, None), "training mode, NHWC"),
    Case("N2", "softmax_cross_entropy", dict(N=4096, C=1000), _targets(0.8, None), "integer targets, mean"),
    Case("N3", "linear", dict(N=256, n_in=1024, n_out=1024), _targets(1.0, None), "with ReLU"),
    Case("N4", "embedding", dict(B=64, T=50, V=10000, D=256), _targets(0.5, None)),
    Case("N5", "adam", dict(P=10_000_000, arrays=20), _targets(0.8, None),
         "one step (an optimizer has no backward: both passes time the step)"),
)
CASES = {case.id: case for case in SUITE}

# One or two cases per group, chosen to finish in well under two minutes on 2 cores.
QUICK = ("C2", "C5", "P1", "P2", "B1", "B2", "L1", "L2", "N1", "N2", "N3", "N4", "N5")

# Targets beyond each case's own limit (PERF.md): a geometric mean for convolution (in
# both dtypes), a fraction of the SGEMM roofline, a speed-up from 1 to 2 threads and
# the memory of one big call (float32).
GEOMEAN_LIMIT = {"conv": 1.0}
ROOFLINE_CASES, ROOFLINE_FRACTION = ("C2", "C3", "C4"), 0.75
SCALING_CASES, SCALING_THREADS, SCALING_TARGET = ("C2", "C3", "C4", "P2", "B1", "L3"), 2, 1.6
JUDGED_DTYPE = "float32"  # the dtype of the roofline, thread and memory targets
MEMORY_CASE, MEMORY_BATCH = "C3", 64
# backend=None should pick the fastest backend; closer than this is within timing noise.
DEFAULT_SLACK = 1.10
# Against plain NumPy: fastnn.bmm against np.matmul on the same arrays (both dtypes);
# pooling and the LSTM against the NumPy a user would write are reported, not judged.
NUMPY_TARGET = {"bmm": 1.0}
# Under load: these cases at 2 threads with one core kept busy by another process.
LOAD_CASES, LOAD_THREADS = ("L1", "L2", "C2"), 2
LOAD_SELF_TARGET = 1.0    # fastnn at 2 threads / fastnn at 1 thread, both loaded
LOAD_TORCH_TARGET = 0.5   # fastnn at 2 threads / PyTorch at 2 threads, both loaded
LOAD = "load"             # its name in --cases


def conv_out_hw(dims):
    k, s, p = dims["k"], dims["stride"], dims["pad"]
    return (dims["H"] + 2 * p - k) // s + 1, (dims["W"] + 2 * p - k) // s + 1


def output_shape(case):
    """Shape of the case's output in fastnn's layout (NHWC, time-major for LSTM)."""
    d = case.dims
    if case.group in ("conv", "pool"):
        h_out, w_out = conv_out_hw(d)
        return (d["N"], h_out, w_out, d["C_out"] if case.group == "conv" else d["C"])
    if case.group == "bmm":
        return (d["B"], d["M"], d["N"])
    if case.group == "lstm":
        return (d["T"], d["m"], d["n_a"])
    if case.group == "norm":
        return (d["N"], d["H"], d["W"], d["C"])
    if case.group == "loss":
        return ()
    if case.group == "dense":
        return (d["N"], d["n_out"])
    if case.group == "embedding":
        return (d["B"], d["T"], d["D"])
    return (d["P"],)


def flops(case, pass_):
    """Multiply-adds x 2 of the GEMM-shaped work; None for the memory-bound pooling.

    A backward pass does the forward's GEMM work twice (input and weight gradients),
    so forward + backward counts three times the forward.
    """
    d = case.dims
    if case.group == "conv":
        h_out, w_out = conv_out_hw(d)
        forward = 2 * d["N"] * h_out * w_out * d["C_out"] * d["k"] ** 2 * d["C_in"]
    elif case.group == "bmm":
        forward = 2 * d["B"] * d["M"] * d["K"] * d["N"]
    elif case.group == "lstm":
        forward = 2 * d["T"] * d["m"] * (d["n_a"] + d["n_x"]) * 4 * d["n_a"]
    else:
        return None
    return float(forward if pass_ == "forward" else 3 * forward)


def traffic_bytes(case, pass_, dtype="float32"):
    """The least memory traffic of a pooling pass (read x, write y; backward: read dy,
    write dx); None for the compute-bound groups."""
    if case.group != "pool":
        return None
    x_size = math.prod(case.dims[k] for k in ("N", "H", "W", "C"))
    forward = ITEMSIZE[dtype] * (x_size + math.prod(output_shape(case)))
    return float(forward if pass_ == "forward" else 2 * forward)


def describe(case):
    """The case's shape in one line, e.g. "(8, 56, 56, 64) → 64, 3×3 s1 p1"."""
    d = case.dims
    if case.group == "conv":
        return (f"({d['N']}, {d['H']}, {d['W']}, {d['C_in']}) → {d['C_out']}, "
                f"{d['k']}×{d['k']} s{d['stride']} p{d['pad']}")
    if case.group == "pool":
        kind = "max" if case.op == "max_pool2d" else "avg"
        pad = f" p{d['pad']}" if d["pad"] else ""
        return f"{kind} ({d['N']}, {d['H']}, {d['W']}, {d['C']}) k{d['k']} s{d['stride']}{pad}"
    if case.group == "bmm":
        return f"({d['B']}, {d['M']}, {d['K']}) @ ({d['B']}, {d['K']}, {d['N']})"
    if case.group == "lstm":
        return f"T {d['T']}, m {d['m']}, n_x {d['n_x']}, n_a {d['n_a']}"
    if case.group == "norm":
        return f"x ({d['N']}, {d['H']}, {d['W']}, {d['C']})"
    if case.group == "loss":
        return f"logits ({d['N']}, {d['C']})"
    if case.group == "dense":
        return f"x ({d['N']}, {d['n_in']}) @ w ({d['n_out']}, {d['n_in']})ᵀ"
    if case.group == "embedding":
        return f"ids ({d['B']}, {d['T']}) into ({d['V']}, {d['D']})"
    return f"{d['P']:,} parameters in {d['arrays']} arrays"


def numpy_comparable(case):
    """Whether plain NumPy has a vectorised form of the case worth timing: every bmm
    (np.matmul) and LSTM (one matmul per step), and pooling whose windows tile the
    image (a reshape), i.e. kernel = stride, no padding."""
    if case.group in ("bmm", "lstm"):
        return True
    if case.group == "pool":
        d = case.dims
        return d["k"] == d["stride"] and d["pad"] == 0 and d["H"] % d["k"] == 0 and d["W"] % d["k"] == 0
    return False


def scaled_down(case):
    """The case on a shape small enough for the pure-Python reference (same kernel
    size, stride and padding; fewer images, pixels, channels, steps), yet large enough
    that the fast backends' call overhead does not hide their speed."""
    d = dict(case.dims)
    if case.group == "conv":
        d.update(N=1, H=min(d["H"], 16), W=min(d["W"], 16), C_in=min(d["C_in"], 32), C_out=min(d["C_out"], 16))
    elif case.group == "pool":
        d.update(N=2, H=min(d["H"], 32), W=min(d["W"], 32), C=min(d["C"], 64))
    elif case.group == "bmm":
        d.update(B=min(d["B"], 4), M=min(d["M"], 48), K=min(d["K"], 48), N=min(d["N"], 48))
    elif case.group == "lstm":
        d.update(T=min(d["T"], 20), m=min(d["m"], 8), n_x=min(d["n_x"], 32), n_a=min(d["n_a"], 32))
    elif case.group == "norm":
        d.update(N=2, H=8, W=8)
    elif case.group == "loss":
        d.update(N=64, C=100)
    elif case.group == "dense":
        d.update(N=16, n_in=64, n_out=64)
    elif case.group == "embedding":
        d.update(B=8, T=10, V=500, D=32)
    else:
        d.update(P=100_000, arrays=4)
    return replace(case, dims=d)


def with_batch(case, batch):
    return replace(case, dims={**case.dims, "N": batch})


def case_entry(case):
    """A case as the JSON report records it."""
    return {"id": case.id, "op": case.op, "group": case.group, "dims": dict(case.dims),
            "shape": describe(case), "note": case.note, "targets": dict(case.targets),
            "numpy": numpy_comparable(case), "flops": {p: flops(case, p) for p in PASSES},
            "bytes": {dtype: {p: traffic_bytes(case, p, dtype) for p in PASSES} for dtype in DTYPES}}


def select(spec=None, quick=False):
    """(cases, load) named by ``spec``: comma-separated ids such as ``C1,P2``, group
    names (``conv``, ``pool``, ``bmm``, ``lstm``, ``norm``, ...), group letters
    ``C``/``P``/``B``/``L`` and ``N`` (the training operations)
    and ``load`` (the under-load case); cases in suite order. Without a spec: the
    whole suite and the load case, or the quick subset without it."""
    if not spec:
        return ([CASES[i] for i in QUICK], False) if quick else (list(SUITE), True)
    letters = {"C": ("conv",), "P": ("pool",), "B": ("bmm",), "L": ("lstm",), "N": TRAINING_GROUPS}
    wanted, load = set(), False
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        upper, lower = token.upper(), token.lower()
        if lower == LOAD:
            load = True
        elif upper in CASES:
            wanted.add(upper)
        elif lower in GROUP_TITLE or upper in letters:
            groups = (lower,) if lower in GROUP_TITLE else letters[upper]
            wanted.update(c.id for c in SUITE if c.group in groups)
        else:
            raise ValueError(f"unknown case {token!r}; the cases are {', '.join(CASES)} "
                             f"(or a group: {', '.join(GROUP_TITLE)}, or {LOAD})")
    if not wanted and not load:
        raise ValueError(f"no case selected by {spec!r}")
    return [case for case in SUITE if case.id in wanted], load


def select_cases(spec=None, quick=False):
    """The suite cases of :func:`select` (without the load case)."""
    return select(spec, quick)[0]


def parse_threads(spec, cpu_count=None):
    """``"1,2"`` -> [1, 2]; ``"all"`` is every core. Sorted, without repeats."""
    cpu_count = cpu_count or os.cpu_count() or 1
    if spec is None or str(spec).strip() == "":
        return [cpu_count]
    counts = set()
    for token in (t.strip().lower() for t in str(spec).split(",")):
        if token in ("all", "max"):
            counts.add(cpu_count)
        elif token.isdigit() and int(token) >= 1:
            counts.add(int(token))
        else:
            raise ValueError(f"--threads expects positive integers or 'all', got {token!r}")
    return sorted(counts)


def parse_dtypes(spec, quick=False):
    """``"float32,float64"`` -> both, in that order; without a spec float32 for a quick
    run and both for a full one. ``32``/``f32`` and ``64``/``f64`` are accepted."""
    if spec is None or str(spec).strip() == "":
        return ["float32"] if quick else list(DTYPES)
    aliases = {"32": "float32", "f32": "float32", "float32": "float32", "single": "float32",
               "64": "float64", "f64": "float64", "float64": "float64", "double": "float64"}
    wanted = set()
    for token in (t.strip().lower() for t in str(spec).split(",")):
        if token in ("all", "both"):
            wanted.update(DTYPES)
        elif token in aliases:
            wanted.add(aliases[token])
        elif token:
            raise ValueError(f"--dtype expects float32 and/or float64, got {token!r}")
    if not wanted:
        raise ValueError(f"no dtype selected by {spec!r}")
    return [dtype for dtype in DTYPES if dtype in wanted]


def select_backends(spec, available):
    """The fast backends to time: all available ones but the reference, or those named."""
    fast = [name for name in available if name != REFERENCE]
    if not spec:
        return fast
    chosen = []
    for token in (t.strip().lower() for t in spec.split(",")):
        if not token:
            continue
        if token == REFERENCE:
            raise ValueError("the reference is too slow for the suite; it is timed on scaled-down shapes "
                             "anyway (see the speed-up table)")
        if token not in fast:
            raise ValueError(f"backend {token!r} is not available; available: {', '.join(fast) or 'none'}")
        if token not in chosen:
            chosen.append(token)
    return chosen
