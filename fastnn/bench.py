"""The benchmark behind ``python -m fastnn.bench``: what fastnn gains on this machine.

Every case of the suite (convolution C1-C6, pooling P1-P3, batch matmul B1-B3, LSTM
L1-L3; ``--list`` shows them) is timed for every available fast backend and for
PyTorch's CPU kernels when PyTorch is installed, side by side in one process: the
implementations of one case take turns (the order rotating every round) after a
warm-up, and the median of the rounds is kept, so a slow phase of a shared machine
hits them all alike. Each case is timed forward only and forward + backward. fastnn
runs in its native layout (NHWC), PyTorch in its own (NCHW), both float32, both with
the same thread count.

    python -m fastnn.bench --quick                  # a subset, under two minutes
    python -m fastnn.bench --threads 1,2 --json run.json --plot run.png
    python -m fastnn.bench --from-json run.json --markdown   # re-render, no timing

The same run measures the machine's limits (single-thread SGEMM GFLOP/s of the BLAS
fastnn calls, and the bandwidth of a large copy) so that every case also reads as a
fraction of what the hardware allows, times the pure-Python reference on scaled-down
shapes (the speed-up over it), checks the memory bound of convolution, and judges
the targets.

The module is layered so that each layer can be used (and tested) alone:

1. the suite: :class:`Case`, :data:`SUITE`, FLOP and byte counts, case selection;
2. arithmetic: ratios, geometric means, throughput, target verdicts (no timing);
3. workloads: the closures that run one case with fastnn or with PyTorch;
4. timing: :func:`measure`, alternating rounds after warm-up, medians;
5. the run: :func:`run` measures and returns a raw report (plain JSON data);
6. :func:`summarise` derives ratios, speed-ups and verdicts from a raw report;
7. reporting: Markdown, rich tables, the ratio chart; :func:`main` is the command.

rich (``pip install "fastnn[bench]"``) draws the tables and the progress bar;
without it the report is printed as Markdown. matplotlib is needed only for
``--plot`` (``pip install "fastnn[plot]"``); PyTorch only for the comparison.
"""
import argparse
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

import numpy as np

import fastnn
from fastnn import _backends

SCHEMA = "fastnn-bench/1"
PASSES = ("forward", "forward_backward")
PASS_LABEL = {"forward": "fwd", "forward_backward": "fwd+bwd", "both": "both"}
TORCH = "torch"
REFERENCE = "reference"


# --------------------------------------------------------------------------------------
# 1. The suite
# --------------------------------------------------------------------------------------

GROUP_OF_OP = {"conv2d": "conv", "max_pool2d": "pool", "avg_pool2d": "pool", "bmm": "bmm", "lstm": "lstm"}
GROUP_TITLE = {"conv": "conv2d", "pool": "pooling", "bmm": "bmm", "lstm": "LSTM"}
# The kernel whose backend=None choice is the group's default backend.
GROUP_KERNEL = {"conv": "conv2d_forward", "pool": "pool2d_forward", "bmm": "bmm", "lstm": "lstm_forward"}


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``target`` is the highest acceptable fastnn / PyTorch ratio."""

    id: str
    op: str
    dims: dict = field(hash=False)
    target: float
    note: str = ""

    @property
    def group(self):
        return GROUP_OF_OP[self.op]


def _conv(id, N, H, W, C_in, C_out, k, stride, pad, note=""):
    dims = dict(N=N, H=H, W=W, C_in=C_in, C_out=C_out, k=k, stride=stride, pad=pad)
    return Case(id, "conv2d", dims, 1.5, note)


def _pool(id, op, N, H, W, C, k, stride, pad=0, note=""):
    return Case(id, op, dict(N=N, H=H, W=W, C=C, k=k, stride=stride, pad=pad), 0.5, note)


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
    Case("B1", "bmm", dict(B=64, M=128, K=128, N=128), 1.05),
    Case("B2", "bmm", dict(B=512, M=32, K=64, N=32), 1.05, "many small matrices"),
    Case("B3", "bmm", dict(B=8, M=512, K=512, N=512), 1.05),
    Case("L1", "lstm", dict(T=50, m=64, n_x=128, n_a=256), 1.0),
    Case("L2", "lstm", dict(T=100, m=1, n_x=64, n_a=64), 0.5, "latency-bound"),
    Case("L3", "lstm", dict(T=20, m=256, n_x=512, n_a=512), 1.0, "GEMM-bound"),
)
CASES = {case.id: case for case in SUITE}

# One or two cases per group, chosen to finish in well under two minutes on 2 cores.
QUICK = ("C2", "C5", "P1", "P2", "B1", "B2", "L1", "L2")

# Targets beyond each case's own limit: a geometric mean for convolution, a fraction of
# the SGEMM roofline, a speed-up from 1 to 2 threads, and the memory of one big call.
GEOMEAN_LIMIT = {"conv": 1.0}
ROOFLINE_CASES, ROOFLINE_FRACTION = ("C2", "C3", "C4"), 0.75
SCALING_CASES, SCALING_THREADS, SCALING_TARGET = ("C2", "C3", "C4", "P2", "B1", "L3"), 2, 1.6
MEMORY_CASE, MEMORY_BATCH = "C3", 64
# backend=None should pick the fastest backend; closer than this is within timing noise.
DEFAULT_SLACK = 1.10


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
    return (d["T"], d["m"], d["n_a"])


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


def traffic_bytes(case, pass_):
    """The least memory traffic of a pooling pass (read x, write y; backward: read dy,
    write dx); None for the compute-bound groups."""
    if case.group != "pool":
        return None
    x_size = math.prod(case.dims[k] for k in ("N", "H", "W", "C"))
    forward = 4 * (x_size + math.prod(output_shape(case)))
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
    return f"T {d['T']}, m {d['m']}, n_x {d['n_x']}, n_a {d['n_a']}"


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
    else:
        d.update(T=min(d["T"], 20), m=min(d["m"], 8), n_x=min(d["n_x"], 32), n_a=min(d["n_a"], 32))
    return replace(case, dims=d)


def with_batch(case, batch):
    return replace(case, dims={**case.dims, "N": batch})


def select_cases(spec=None, quick=False):
    """Cases named by ``spec`` (comma-separated ids such as ``C1,P2``, group names
    ``conv``/``pool``/``bmm``/``lstm`` or group letters ``C``/``P``/``B``/``L``), in
    suite order; all of them (or the quick subset) when spec is empty."""
    if not spec:
        return [CASES[i] for i in QUICK] if quick else list(SUITE)
    letters = {"C": "conv", "P": "pool", "B": "bmm", "L": "lstm"}
    wanted = set()
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        upper, lower = token.upper(), token.lower()
        if upper in CASES:
            wanted.add(upper)
        elif lower in GROUP_TITLE or upper in letters:
            group = lower if lower in GROUP_TITLE else letters[upper]
            wanted.update(c.id for c in SUITE if c.group == group)
        else:
            raise ValueError(f"unknown case {token!r}; the cases are {', '.join(CASES)} "
                             f"(or a group: {', '.join(GROUP_TITLE)})")
    if not wanted:
        raise ValueError(f"no case selected by {spec!r}")
    return [case for case in SUITE if case.id in wanted]


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


# --------------------------------------------------------------------------------------
# 2. Arithmetic (pure functions of measured numbers)
# --------------------------------------------------------------------------------------

def ratio(seconds, baseline_seconds):
    """fastnn time / comparison time: below 1 fastnn wins. None when either is missing."""
    if not seconds or not baseline_seconds:
        return None
    return seconds / baseline_seconds


def speedup(slow_seconds, fast_seconds):
    """How many times faster ``fast`` is than ``slow``."""
    return ratio(slow_seconds, fast_seconds)


def geomean(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def rate(amount, seconds, unit=1e9):
    """amount per second in units of ``unit`` (GFLOP/s, GB/s); None when unknown."""
    if amount is None or not seconds:
        return None
    return amount / seconds / unit


def percent(value, limit):
    if value is None or not limit:
        return None
    return 100.0 * value / limit


def verdict(value, limit, at_most=True):
    """"pass"/"miss" against a limit, "n/a" when nothing was measured."""
    if value is None:
        return "n/a"
    ok = value <= limit if at_most else value >= limit
    return "pass" if ok else "miss"


# --------------------------------------------------------------------------------------
# 3. Workloads
# --------------------------------------------------------------------------------------

def make_inputs(case, seed=0):
    """float32 inputs of one case in fastnn's layout, plus the output gradient."""
    rng = np.random.default_rng([seed, sum(map(ord, case.id))])
    d = case.dims

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    grad = normal(*output_shape(case))
    if case.group == "conv":
        fan_in = d["k"] * d["k"] * d["C_in"]
        return dict(x=normal(d["N"], d["H"], d["W"], d["C_in"]),
                    w=normal(d["k"], d["k"], d["C_in"], d["C_out"], scale=fan_in ** -0.5),
                    b=normal(d["C_out"], scale=0.1), grad=grad)
    if case.group == "pool":
        return dict(x=normal(d["N"], d["H"], d["W"], d["C"]), grad=grad)
    if case.group == "bmm":
        return dict(a=normal(d["B"], d["M"], d["K"]), b=normal(d["B"], d["K"], d["N"]), grad=grad)
    n_a = d["n_a"]
    return dict(x=normal(d["T"], d["m"], d["n_x"]), W=normal(4 * n_a, n_a + d["n_x"], scale=n_a ** -0.5),
                b=normal(4 * n_a, scale=0.1), grad=grad)


def fastnn_workload(case, inputs, backend):
    """{"forward": f, "forward_backward": g} running the case with one fastnn backend.

    Forward only uses the function a user calls for inference (``conv2d``,
    ``max_pool2d``, ``bmm``...; the LSTM has only ``lstm_forward``); forward + backward
    is the ``*_forward``/``*_backward`` pair.
    """
    d, grad = case.dims, inputs["grad"]
    if case.group == "conv":
        x, w, b = inputs["x"], inputs["w"], inputs["b"]
        geometry = dict(stride=d["stride"], padding=d["pad"], backend=backend)

        def forward():
            return fastnn.conv2d(x, w, b, **geometry)

        def forward_backward():
            _, cache = fastnn.conv2d_forward(x, w, b, **geometry)
            return fastnn.conv2d_backward(grad, cache)
    elif case.group == "pool":
        x, mode = inputs["x"], "max" if case.op == "max_pool2d" else "avg"
        pool = fastnn.max_pool2d if mode == "max" else fastnn.avg_pool2d
        args = (x, d["k"], d["stride"], d["pad"])

        def forward():
            return pool(*args, backend=backend)

        def forward_backward():
            _, cache = fastnn.pool2d_forward(*args, mode=mode, backend=backend)
            return fastnn.pool2d_backward(grad, cache)
    elif case.group == "bmm":
        a, b = inputs["a"], inputs["b"]

        def forward():
            return fastnn.bmm(a, b, backend=backend)

        def forward_backward():
            fastnn.bmm(a, b, backend=backend)
            return _bmm_backward(grad, a, b, backend)
    else:
        x, W, b = inputs["x"], inputs["W"], inputs["b"]

        def forward():
            return fastnn.lstm_forward(x, None, None, W, b, backend=backend)

        def forward_backward():
            _, _, cache = fastnn.lstm_forward(x, None, None, W, b, backend=backend)
            return fastnn.lstm_backward(grad, cache)
    return {"forward": forward, "forward_backward": forward_backward}


def _bmm_backward(dc, a, b, backend):
    # bmm_backward takes no cache, so the backend is chosen per call; through the
    # process default when this version of fastnn has no backend= keyword for it.
    try:
        return fastnn.bmm_backward(dc, a, b, backend=backend)
    except TypeError as exc:
        if "backend" not in str(exc):
            raise
    previous = fastnn.get_backend()
    fastnn.set_backend(backend)
    try:
        return fastnn.bmm_backward(dc, a, b)
    finally:
        fastnn.set_backend(previous)


def torch_workload(case, inputs, torch):
    """The same work with PyTorch in its native layout (NCHW), float32.

    Forward only runs under ``torch.no_grad()`` (what inference code does); forward +
    backward records the graph and asks autograd for the gradients of every input.
    """
    d = case.dims
    F = torch.nn.functional

    def tensor(array, grad=False):
        return torch.from_numpy(np.ascontiguousarray(array)).requires_grad_(grad)

    if case.group == "conv":
        x = tensor(inputs["x"].transpose(0, 3, 1, 2), True)
        w = tensor(inputs["w"].transpose(3, 2, 0, 1), True)
        b = tensor(inputs["b"], True)
        dy = tensor(inputs["grad"].transpose(0, 3, 1, 2))
        params = (x, w, b)

        def run():
            return F.conv2d(x, w, b, stride=d["stride"], padding=d["pad"])
    elif case.group == "pool":
        x = tensor(inputs["x"].transpose(0, 3, 1, 2), True)
        dy = tensor(inputs["grad"].transpose(0, 3, 1, 2))
        pool = F.max_pool2d if case.op == "max_pool2d" else F.avg_pool2d
        params = (x,)

        def run():
            return pool(x, d["k"], d["stride"], d["pad"])
    elif case.group == "bmm":
        a, b = tensor(inputs["a"], True), tensor(inputs["b"], True)
        dy = tensor(inputs["grad"])
        params = (a, b)

        def run():
            return torch.bmm(a, b)
    else:
        lstm = torch.nn.LSTM(d["n_x"], d["n_a"])
        x = tensor(inputs["x"], True)
        dy = tensor(inputs["grad"])
        params = (x, *lstm.parameters())

        def run():
            return lstm(x)[0]

    def forward():
        with torch.no_grad():
            return run()

    def forward_backward():
        return torch.autograd.grad(run(), params, dy)

    return {"forward": forward, "forward_backward": forward_backward}


def load_torch():
    """PyTorch, or None when it is not installed (the comparison is then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def set_threads(n, torch=None):
    fastnn.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------------------
# 4. Timing
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How hard to time: ``repeat`` rounds at most (``min_repeat`` at least) within about
    ``budget_s`` per implementation; each round times enough calls to last
    ``min_sample_s``."""

    repeat: int = 7
    min_repeat: int = 3
    warmup: int = 1
    min_sample_s: float = 0.05
    budget_s: float = 4.0


FULL_PLAN = Plan()
QUICK_PLAN = Plan(repeat=5, min_repeat=3, warmup=1, min_sample_s=0.02, budget_s=1.0)
# The reference takes up to a second per call on the scaled-down shapes: one to three
# timed calls of it say all there is to say about a speed-up in the hundreds.
REFERENCE_PLAN = Plan(repeat=3, min_repeat=1, warmup=1, min_sample_s=0.02, budget_s=1.0)

_MISSING_KERNEL = re.compile(r"has no \w+ kernel")


def failure(exc):
    """A measurement entry for an implementation that could not run: a backend still
    lacking the kernel is skipped, anything else is an error worth showing."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError) and _MISSING_KERNEL.search(str(exc)):
        return {"skipped": str(exc)}
    return {"error": message}


def measure(funcs, plan, clock=time.perf_counter):
    """Time callables side by side: warm each up, then run rounds in which each takes
    its turn (the order rotating every round) and keep the median per call.

    Returns {label: {"median_s", "samples_s", "number"}} or, for a callable that
    raised, {label: {"skipped": why}} / {label: {"error": why}}.
    """
    results, live = {}, {}
    for label, func in funcs.items():
        try:
            for _ in range(plan.warmup):
                func()
            start = clock()
            func()
            once = max(clock() - start, 1e-9)
        except Exception as exc:  # a broken kernel must not end the whole benchmark
            results[label] = failure(exc)
            continue
        number = min(max(1, math.ceil(plan.min_sample_s / once)), 100_000)
        rounds = max(plan.min_repeat, min(plan.repeat, int(plan.budget_s / (once * number))))
        live[label] = (func, number, rounds, [])
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(max((entry[2] for entry in live.values()), default=0)):
            gc.collect()  # outside the timed calls: garbage of the last round is not charged to the next
            labels = [label for label, entry in live.items() if entry[2] > round_]
            shift = round_ % len(labels) if labels else 0
            for label in labels[shift:] + labels[:shift]:
                func, number, _, samples = live[label]
                try:
                    start = clock()
                    for _ in range(number):
                        func()
                    samples.append((clock() - start) / number)
                except Exception as exc:
                    results[label] = failure(exc)
                    del live[label]
    finally:
        if gc_was_enabled:
            gc.enable()
    for label, (_, number, _, samples) in live.items():
        results[label] = {"median_s": statistics.median(samples), "samples_s": samples, "number": number}
    return {label: results[label] for label in funcs}


# --------------------------------------------------------------------------------------
# 5. The run: environment, roofline, suite, reference, memory -> raw report
# --------------------------------------------------------------------------------------

def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def _version(module_name):
    try:
        from importlib.metadata import version
        return version(module_name)
    except Exception:
        return None


def blas_info():
    """The BLAS libraries loaded, each with the package that ships it (fastnn's
    kernels call SciPy's), without file paths."""
    try:
        from threadpoolctl import threadpool_info
        import scipy.linalg  # noqa: F401  (loads the BLAS that the kernels call)
    except ImportError:
        return []
    libraries = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        parts = re.split(r"[\\/]", lib.get("filepath", ""))
        owner = next((name.split(".")[0] for name in parts if name.split(".")[0] in ("numpy", "scipy", "torch")),
                     None)
        libraries.append({"owner": owner, **{k: lib.get(k) for k in
                                             ("internal_api", "version", "architecture", "threading_layer")}})
    return libraries


def environment(torch=None):
    """Versions, CPU, threads and date: what a reader needs to trust a result."""
    openmp = None
    if "cython" in fastnn.available_backends():
        from fastnn._kernels import cython_backend
        openmp = bool(cython_backend.openmp_enabled())
    thread_vars = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                   "NUMBA_THREADING_LAYER", "FASTNN_BACKEND")
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "fastnn": fastnn.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "numba": _version("numba"),
        "torch": torch.__version__ if torch is not None else _version("torch"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(),
        "blas": blas_info(),
        "openmp": openmp,
        "backends": fastnn.available_backends(),
        "unavailable_backends": _backends.unavailable_backends(),
        "environment_variables": {k: os.environ[k] for k in thread_vars if k in os.environ},
    }


def sgemm_gflops(plan, size=2048):
    """GFLOP/s of the float32 GEMM of the BLAS that fastnn's kernels call (SciPy's)."""
    from scipy.linalg.blas import sgemm
    rng = np.random.default_rng(1)
    a = np.asfortranarray(rng.standard_normal((size, size), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((size, size), dtype=np.float32))
    timing = measure({"sgemm": lambda: sgemm(1.0, a, b)}, plan)["sgemm"]
    return rate(2.0 * size ** 3, _best(timing))


def _best(timing):
    # A limit of the machine is its best showing, not its typical one.
    return min(timing["samples_s"]) if timing.get("samples_s") else None


def copy_gbps(threads, plan, nbytes=128 * 2**20):
    """GB/s of a large array copy (bytes read + bytes written), split over ``threads``
    Python threads: NumPy releases the GIL while it copies."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    if threads == 1:
        def copy():
            np.copyto(dst, src)
    else:
        from concurrent.futures import ThreadPoolExecutor
        bounds = np.linspace(0, src.size, threads + 1).astype(int)
        parts = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        pool = ThreadPoolExecutor(threads)

        def copy():
            list(pool.map(lambda part: np.copyto(dst[part], src[part]), parts))
    try:
        timing = measure({"copy": copy}, plan)["copy"]
    finally:
        if threads != 1:
            pool.shutdown()
    return rate(2.0 * src.nbytes, _best(timing))


def default_backends():
    """{group: backend} that ``backend=None`` picks."""
    return {group: _backends.resolve("bench", kernel, None)[0] for group, kernel in GROUP_KERNEL.items()}


def memory_check(backends, threads):
    """Peak traced allocation of conv2d_forward on C3 with batch 64, next to what it
    must keep (output, cache) and the workspace bound that chunking im2col over the
    batch guarantees."""
    import tracemalloc
    case = with_batch(CASES[MEMORY_CASE], MEMORY_BATCH)
    inputs = make_inputs(case)
    x, w, b, d = inputs["x"], inputs["w"], inputs["b"], case.dims
    del inputs
    limit = fastnn.get_workspace_limit()
    out = {"case": MEMORY_CASE, "batch": MEMORY_BATCH, "shape": describe(case), "threads": threads,
           "workspace_limit_bytes": limit, "backends": {}}
    for backend in backends:
        try:
            # Compile and warm up outside the trace so only the call itself is measured.
            fastnn.conv2d_forward(x[:1], w, b, stride=d["stride"], padding=d["pad"], backend=backend)
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                y, cache = fastnn.conv2d_forward(x, w, b, stride=d["stride"], padding=d["pad"], backend=backend)
                current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            output = y.nbytes
            del y, cache
            out["backends"][backend] = {"peak_bytes": peak - base, "retained_bytes": current - base,
                                        "output_bytes": output}
        except Exception as exc:
            out["backends"][backend] = failure(exc)
    return out


@dataclass
class Config:
    cases: list
    backends: list
    threads: list
    quick: bool = False
    compare_torch: bool = True
    reference: bool = True
    memory: bool = True
    plan: Plan = FULL_PLAN
    seed: int = 0


class Progress:
    """What the run tells about its progress; this one tells nothing."""

    def start(self, total):
        pass

    def step(self, label):
        pass

    def advance(self):
        pass

    def stop(self):
        pass


def roofline_threads(threads):
    """The single-thread roofline is always measured (the conv targets quote it), and
    the one of every thread count timed."""
    return sorted({1, *threads})


def count_steps(config):
    steps = 2 * len(roofline_threads(config.threads))
    steps += len(config.cases) * len(config.threads)
    if config.reference:
        steps += len(config.cases)
    if config.memory:
        steps += 1
    return steps


def run(config, progress=None, torch=None):
    """Measure everything ``config`` asks for; return the raw report (JSON data)."""
    progress = progress or Progress()
    progress.start(count_steps(config))
    previous_threads = fastnn.get_num_threads()
    report = {
        "schema": SCHEMA,
        "environment": {**environment(torch), "threads": list(config.threads)},
        "config": {"cases": [c.id for c in config.cases], "backends": list(config.backends),
                   "threads": list(config.threads), "quick": config.quick, "torch": torch is not None,
                   "plan": asdict(config.plan)},
        "defaults": default_backends(),
        "roofline": [],
        "cases": [case_entry(case) for case in config.cases],
        "timings": [],
        "reference": [],
        "memory": None,
    }
    try:
        report["roofline"] = measure_roofline(config, progress, torch)
        for case in config.cases:
            inputs = make_inputs(case, config.seed)
            impls = {name: fastnn_workload(case, inputs, name) for name in config.backends}
            if torch is not None:
                impls[TORCH] = torch_workload(case, inputs, torch)
            for n in config.threads:
                set_threads(n, torch)
                progress.step(f"{case.id} {describe(case)}, {_threads_label(n)}")
                # Both passes of every implementation in one rotation, so that a busy
                # spell of the machine cannot favour one pass or one implementation.
                timed = measure({(name, pass_): work[pass_] for name, work in impls.items() for pass_ in PASSES},
                                config.plan)
                for (impl, pass_), entry in timed.items():
                    report["timings"].append({"case": case.id, "pass": pass_, "threads": n, "impl": impl, **entry})
                progress.advance()
            del impls, inputs
        # Measured again after the suite, keeping the better figure: a machine that was
        # busy at the start must not make the cases look faster than its limit.
        later = measure_roofline(config, progress, torch, "roofline again")
        for entry, again in zip(report["roofline"], later):
            for key in ("sgemm_gflops", "copy_gbps"):
                entry[key] = max((v for v in (entry[key], again[key]) if v is not None), default=None)
        if config.reference:
            # One thread: the reference is one Python loop, and thread start-up on tiny
            # shapes would measure the machine's scheduler rather than the algorithm.
            n = 1
            set_threads(n, torch)
            for case in config.cases:
                small = scaled_down(case)
                inputs = make_inputs(small, config.seed)
                impls = {name: fastnn_workload(small, inputs, name) for name in [REFERENCE, *config.backends]}
                progress.step(f"{case.id} {describe(small)}, against the reference")
                timed = measure({(name, pass_): work[pass_] for name, work in impls.items() for pass_ in PASSES},
                                REFERENCE_PLAN)
                for (impl, pass_), entry in timed.items():
                    report["reference"].append({"case": case.id, "pass": pass_, "threads": n,
                                                "shape": describe(small), "impl": impl, **entry})
                progress.advance()
        if config.memory:
            progress.step(f"memory: conv2d_forward on {MEMORY_CASE} with batch {MEMORY_BATCH}")
            set_threads(config.threads[0], torch)
            report["memory"] = memory_check(config.backends, config.threads[0])
            progress.advance()
    finally:
        set_threads(previous_threads, torch)
        progress.stop()
    return report


def measure_roofline(config, progress, torch=None, label="roofline"):
    size = 1024 if config.quick else 2048
    roofline = []
    for n in roofline_threads(config.threads):
        progress.step(f"{label}, {_threads_label(n)}")
        set_threads(n, torch)
        roofline.append({"threads": n, "sgemm_gflops": sgemm_gflops(config.plan, size), "sgemm_size": size,
                         "copy_gbps": copy_gbps(n, config.plan)})
        progress.advance()
    return roofline


def case_entry(case):
    return {"id": case.id, "op": case.op, "group": case.group, "dims": dict(case.dims),
            "shape": describe(case), "note": case.note, "target": case.target,
            "flops": {p: flops(case, p) for p in PASSES}, "bytes": {p: traffic_bytes(case, p) for p in PASSES}}


# --------------------------------------------------------------------------------------
# 6. Summary: ratios, throughput, speed-ups and verdicts from a raw report
# --------------------------------------------------------------------------------------

def _index(entries, *keys):
    return {tuple(entry[k] for k in keys): entry for entry in entries}


def summarise(raw):
    """Return ``raw`` plus the derived sections "results", "speedups",
    "thread_scaling" and "targets", and the memory check's verdicts. They are
    recomputed, never trusted from the input, so a saved report can be re-rendered
    by a newer version."""
    report = {k: v for k, v in raw.items()
              if k not in ("results", "speedups", "thread_scaling", "targets")}
    cases = {c["id"]: c for c in raw["cases"]}
    roof = {r["threads"]: r for r in raw["roofline"]}
    timings = _index(raw["timings"], "case", "pass", "threads", "impl")
    backends = raw["config"]["backends"]
    defaults = raw["defaults"]
    results = []
    for case_id, case in cases.items():
        for n in raw["config"]["threads"]:
            for pass_ in PASSES:
                results.append(_result_row(case, pass_, n, timings, backends, defaults, roof.get(n, {})))
    report["results"] = results
    report["speedups"] = _reference_speedups(raw)
    report["thread_scaling"] = _thread_scaling(raw, timings, backends, defaults)
    if raw.get("memory"):
        report["memory"] = _memory_verdicts(raw["memory"])
    report["targets"] = _targets(report, cases)
    return report


def _result_row(case, pass_, n, timings, backends, defaults, roof):
    torch_entry = timings.get((case["id"], pass_, n, TORCH), {})
    torch_s = torch_entry.get("median_s")
    work = case["flops"][pass_] if case["group"] != "pool" else case["bytes"][pass_]
    limit = roof.get("sgemm_gflops") if case["group"] != "pool" else roof.get("copy_gbps")
    impls = {}
    for impl in [*backends, TORCH]:
        entry = timings.get((case["id"], pass_, n, impl))
        if entry is None:
            continue
        if "median_s" not in entry:
            impls[impl] = {k: entry[k] for k in ("skipped", "error") if k in entry}
            continue
        seconds = entry["median_s"]
        throughput = rate(work, seconds)
        impls[impl] = {
            "median_s": seconds,
            "ratio": ratio(seconds, torch_s) if impl != TORCH else None,
            "gflops": throughput if case["group"] != "pool" else None,
            "gbps": throughput if case["group"] == "pool" else None,
            "roofline_pct": percent(throughput, limit),
        }
    timed = {name: v["median_s"] for name, v in impls.items() if name != TORCH and "median_s" in v}
    fastest = min(timed, key=timed.get) if timed else None
    default = defaults.get(case["group"])
    default_ratio = impls.get(default, {}).get("ratio")
    return {"case": case["id"], "group": case["group"], "pass": pass_, "threads": n, "impls": impls,
            "torch_s": torch_s, "default": default, "fastest": fastest, "ratio": default_ratio,
            "target": case["target"], "status": verdict(default_ratio, case["target"])}


def _reference_speedups(raw):
    entries = _index(raw.get("reference", []), "case", "pass", "impl")
    rows = []
    for case in raw["cases"]:
        for pass_ in PASSES:
            ref = entries.get((case["id"], pass_, REFERENCE))
            if ref is None:
                continue
            ref_s = ref.get("median_s")
            impls = {}
            for impl in raw["config"]["backends"]:
                entry = entries.get((case["id"], pass_, impl))
                if entry is None:
                    continue
                impls[impl] = {"median_s": entry.get("median_s"),
                               "speedup": speedup(ref_s, entry.get("median_s"))}
            rows.append({"case": case["id"], "pass": pass_, "threads": ref["threads"], "shape": ref["shape"],
                         "reference_s": ref_s, "impls": impls,
                         **({"error": ref.get("error") or ref.get("skipped")} if ref_s is None else {})})
    return rows


def _thread_scaling(raw, timings, backends, defaults):
    threads = raw["config"]["threads"]
    if 1 not in threads or len(threads) < 2:
        return []
    rows = []
    for case in raw["cases"]:
        for n in (t for t in threads if t > 1):
            for pass_ in PASSES:
                impls = {}
                for impl in [*backends, TORCH]:
                    one = timings.get((case["id"], pass_, 1, impl), {}).get("median_s")
                    many = timings.get((case["id"], pass_, n, impl), {}).get("median_s")
                    if one and many:
                        impls[impl] = speedup(one, many)
                default = defaults.get(case["group"])
                judged = case["id"] in SCALING_CASES and n == SCALING_THREADS
                target = SCALING_TARGET if judged else None
                value = impls.get(default)
                rows.append({"case": case["id"], "pass": pass_, "threads": n, "impls": impls, "default": default,
                             "speedup": value, "target": target,
                             "status": verdict(value, target, at_most=False) if judged else None})
    return rows


def _memory_verdicts(memory):
    memory = json.loads(json.dumps(memory))  # leave the raw section untouched
    slack = 2**20  # interpreter bookkeeping traced next to the arrays
    for entry in memory["backends"].values():
        if "peak_bytes" not in entry:
            continue
        cache = max(entry["retained_bytes"] - entry["output_bytes"], 0)
        bound = entry["output_bytes"] + cache + memory["workspace_limit_bytes"]
        entry["cache_bytes"] = cache
        entry["bound_bytes"] = bound
        if entry["retained_bytes"] < 0.9 * entry["output_bytes"]:
            # The output itself was not traced: the backend allocates outside NumPy's
            # allocator (Numba's runtime), which tracemalloc cannot see.
            entry["status"] = "untraced"
        else:
            entry["status"] = verdict(entry["peak_bytes"], bound + slack)
    return memory


def _targets(report, cases):
    """Every target that this run can judge, one verdict per thread count and pass."""
    rows = []
    results = _index(report["results"], "case", "pass", "threads")
    threads = report["config"]["threads"]
    selected = list(cases)
    by_group = {}
    for case_id in selected:
        by_group.setdefault(cases[case_id]["group"], []).append(case_id)
    full = {g: [c.id for c in SUITE if c.group == g] for g in GROUP_TITLE}

    def ids_label(ids, group):
        return f"{ids[0]}–{ids[-1]}" if ids == full[group] and len(ids) > 1 else ",".join(ids)

    for n in threads:
        for pass_ in PASSES:
            for group, ids in by_group.items():
                ratios = {i: results[(i, pass_, n)]["ratio"] for i in ids}
                label = f"{GROUP_TITLE[group]} {ids_label(ids, group)}"
                if group in GEOMEAN_LIMIT:
                    limit = GEOMEAN_LIMIT[group]
                    value = geomean(ratios.values()) if all(v is not None for v in ratios.values()) else None
                    rows.append(_target(f"{label}: geometric mean ≤ {limit:g}", n, pass_, value, limit))
                limits = {cases[i]["target"] for i in ids}
                if len(limits) == 1:
                    limit = limits.pop()
                    measured = [v for v in ratios.values() if v is not None]
                    value = max(measured) if len(measured) == len(ratios) else None
                    worst = max(ratios, key=lambda i: ratios[i]) if value is not None else None
                    rows.append(_target(f"{label}: every case ≤ {limit:g}", n, pass_, value, limit,
                                        worst=worst))
                else:
                    for i in ids:
                        limit = cases[i]["target"]
                        rows.append(_target(f"{GROUP_TITLE[group]} {i}: ≤ {limit:g}", n, pass_,
                                            ratios[i], limit))
            roof_ids = [i for i in ROOFLINE_CASES if i in cases]
            if roof_ids:
                pcts = {i: results[(i, pass_, n)]["impls"].get(results[(i, pass_, n)]["default"], {})
                        .get("roofline_pct") for i in roof_ids}
                value = min(pcts.values()) if all(v is not None for v in pcts.values()) else None
                worst = min(pcts, key=lambda i: pcts[i]) if value is not None else None
                rows.append(_target(f"conv2d {','.join(roof_ids)}: ≥ {100 * ROOFLINE_FRACTION:.0f} % of SGEMM",
                                    n, pass_, value, 100 * ROOFLINE_FRACTION, at_most=False, unit="%",
                                    worst=worst))
        for group, ids in by_group.items():
            slowdowns = {}
            for i in ids:
                for pass_ in PASSES:
                    row = results[(i, pass_, n)]
                    if row["fastest"] and "median_s" in row["impls"].get(row["default"], {}):
                        slowdowns[f"{i} {PASS_LABEL[pass_]}"] = (row["impls"][row["default"]]["median_s"]
                                                                  / row["impls"][row["fastest"]]["median_s"])
            others = [b for b in report["config"]["backends"] if b != report["defaults"].get(group)]
            if slowdowns and others:
                worst = max(slowdowns, key=slowdowns.get)
                rows.append(_target(f"{GROUP_TITLE[group]}: backend=None ({report['defaults'].get(group)}) within "
                                    f"{100 * (DEFAULT_SLACK - 1):.0f} % of the fastest backend", n, "both",
                                    slowdowns[worst], DEFAULT_SLACK, unit="×", worst=worst))
    scaling = [r for r in report.get("thread_scaling", []) if r["target"] is not None]
    for pass_ in PASSES:
        judged = [r for r in scaling if r["pass"] == pass_]
        if judged:
            values = {r["case"]: r["speedup"] for r in judged}
            value = min(values.values()) if all(v is not None for v in values.values()) else None
            worst = min(values, key=lambda i: values[i]) if value is not None else None
            label = f"{','.join(values)}: speed-up 1 → {SCALING_THREADS} threads ≥ {SCALING_TARGET:g}×"
            rows.append(_target(label,
                                SCALING_THREADS, pass_, value, SCALING_TARGET, at_most=False, unit="×",
                                worst=worst))
    memory = report.get("memory")
    if memory:
        for backend, entry in memory["backends"].items():
            if "status" in entry:
                rows.append({"target": f"memory, {memory['case']} batch {memory['batch']}, {backend}: "
                                       "peak ≤ output + cache + workspace",
                             "threads": memory["threads"], "pass": "forward", "value": entry["peak_bytes"],
                             "limit": entry["bound_bytes"], "unit": "bytes", "status": entry["status"],
                             "worst": None})
    return rows


def _target(name, threads, pass_, value, limit, at_most=True, unit="ratio", worst=None):
    return {"target": name, "threads": threads, "pass": pass_, "value": value, "limit": limit, "unit": unit,
            "status": verdict(value, limit, at_most), "worst": worst}


def validate_report(report):
    """Raise ValueError when ``report`` lacks what the renderers and readers of
    ``--json`` rely on; return it otherwise."""
    def need(mapping, keys, where):
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise ValueError(f"benchmark report: {where} lacks {', '.join(missing)}")

    need(report, ("schema", "environment", "config", "defaults", "roofline", "cases", "timings",
                  "reference", "memory", "results", "speedups", "thread_scaling", "targets"), "the report")
    if report["schema"] != SCHEMA:
        raise ValueError(f"benchmark report: schema {report['schema']!r}, expected {SCHEMA!r}")
    need(report["environment"], ("date", "fastnn", "python", "numpy", "torch", "cpu", "cpu_count", "blas",
                                 "backends"), "environment")
    need(report["config"], ("cases", "backends", "threads", "quick", "torch"), "config")
    for entry in report["roofline"]:
        need(entry, ("threads", "sgemm_gflops", "copy_gbps"), "a roofline entry")
    for entry in report["timings"]:
        need(entry, ("case", "pass", "threads", "impl"), "a timing")
        if not any(k in entry for k in ("median_s", "skipped", "error")):
            raise ValueError("benchmark report: a timing has neither median_s nor skipped nor error")
    for entry in report["results"]:
        need(entry, ("case", "pass", "threads", "impls", "torch_s", "default", "ratio", "target", "status"),
             "a result")
    for entry in report["targets"]:
        need(entry, ("target", "threads", "pass", "value", "limit", "status"), "a target")
    return report


def save_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")


def load_json(path):
    with open(path) as f:
        raw = json.load(f)
    return validate_report(summarise(raw))


# --------------------------------------------------------------------------------------
# 7. Reporting
# --------------------------------------------------------------------------------------

def fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs" if seconds >= 1e-5 else f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}×"


def fmt_factor(value):
    if value is None:
        return "—"
    return f"{value:,.0f}×" if value >= 100 else f"{value:.1f}×"


def fmt_bytes(nbytes):
    return "—" if nbytes is None else f"{nbytes / 2**20:.1f} MiB"


def fmt_throughput(impl, group):
    """GFLOP/s (GB/s for pooling) and the % of the roofline, e.g. "412 (78 %)"."""
    if not impl or "median_s" not in impl:
        return "—"
    value = impl.get("gbps") if group == "pool" else impl.get("gflops")
    if value is None:
        return "—"
    text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
    pct = impl.get("roofline_pct")
    return text if pct is None else f"{text} ({pct:.0f} %)"


def fmt_target_value(row):
    value = row["value"]
    if value is None:
        return "—"
    if row.get("unit") == "%":
        text = f"{value:.0f} %"
    elif row.get("unit") == "bytes":
        text = f"{fmt_bytes(value)} (bound {fmt_bytes(row['limit'])})"
    elif row.get("unit") == "×":
        text = f"{value:.2f}×"
    else:
        text = f"{value:.2f}"
    return f"{text} ({row['worst']})" if row.get("worst") else text


def _threads_label(n):
    return f"{n} thread{'s' * (n != 1)}"


def impl_cell(impl):
    """(text, outcome) of one implementation in the suite table; outcome is "win",
    "loss" or None (no comparison, skipped, failed)."""
    if impl is None:
        return "—", None
    if "median_s" not in impl:
        return ("no kernel" if "skipped" in impl else "error"), None
    text = fmt_time(impl["median_s"])
    r = impl.get("ratio")
    if r is None:
        return text, None
    return f"{text} · {fmt_ratio(r)}", ("win" if r < 1 else "loss")


def header_lines(report):
    env = report["environment"]
    libraries = env.get("blas") or []
    blas = next((b for b in libraries if b.get("owner") == "scipy"), libraries[0] if libraries else None)
    blas = f"{blas.get('internal_api')} {blas.get('version')}" if blas else "unknown"
    if not env.get("torch"):
        torch = "PyTorch not installed"
    else:
        torch = f"PyTorch {env['torch']}" + ("" if report["config"]["torch"] else " (not compared)")
    lines = [
        f"fastnn {env['fastnn']} · {env['date'][:16].replace('T', ' ')} · {env['cpu']} "
        f"({env['cpu_count']} CPUs) · threads {', '.join(map(str, report['config']['threads']))}",
        f"Python {env['python']} · NumPy {env['numpy']} · SciPy {env.get('scipy')} · Numba {env.get('numba')} "
        f"· BLAS {blas} (SciPy's, which the kernels call) · {torch}",
    ]
    roofs = [f"{_threads_label(r['threads'])}: SGEMM {r['sgemm_gflops']:.0f} GFLOP/s, copy {r['copy_gbps']:.1f} GB/s"
             for r in report["roofline"] if r.get("sgemm_gflops") and r.get("copy_gbps")]
    if roofs:
        lines.append("Roofline — " + "; ".join(roofs))
    defaults = ", ".join(f"{GROUP_TITLE[g]} {b}" for g, b in report["defaults"].items())
    lines.append(f"Default backend (backend=None): {defaults}")
    for name, reason in (env.get("unavailable_backends") or {}).items():
        lines.append(f"Backend {name} unavailable: {reason}")
    return lines


LEGEND = ("Cells: median time · ratio = fastnn time / PyTorch time (lower is better; below 1 fastnn wins). "
          "Throughput of the default backend: GFLOP/s (conv, bmm, LSTM) or GB/s (pooling), in % of the "
          "SGEMM or copy roofline at the same thread count. Status: the default backend's ratio against "
          "the case's target.")


def table_rows(report, threads):
    """The suite table at one thread count, as rows of (text, outcome) cells."""
    backends = report["config"]["backends"]
    no_torch = "not compared" if report["environment"].get("torch") else "not installed"
    cases = {c["id"]: c for c in report["cases"]}
    rows = []
    for row in report["results"]:
        if row["threads"] != threads:
            continue
        case = cases[row["case"]]
        first = row["pass"] == PASSES[0]
        cells = [(row["case"] if first else "", None), (case["shape"] if first else "", None),
                 (PASS_LABEL[row["pass"]], None)]
        torch_impl = row["impls"].get(TORCH)
        cells.append((fmt_time(torch_impl.get("median_s")) if torch_impl and "median_s" in torch_impl
                      else (no_torch if not report["config"]["torch"] else impl_cell(torch_impl)[0]), None))
        cells += [impl_cell(row["impls"].get(b)) for b in backends]
        default = row["default"] or "—"
        if row["fastest"] and row["default"] != row["fastest"] and "median_s" in row["impls"].get(row["default"], {}):
            slower = row["impls"][row["default"]]["median_s"] / row["impls"][row["fastest"]]["median_s"]
            if slower > DEFAULT_SLACK:
                default = f"{default} ({row['fastest']} faster)"
        cells.append((default, None))
        cells.append((fmt_throughput(row["impls"].get(row["default"]), case["group"]), None))
        cells.append((f"≤ {row['target']:g}", None))
        cells.append((row["status"], row["status"]))
        rows.append(cells)
    return rows


def table_columns(report):
    return ["case", "shape", "pass", "PyTorch", *report["config"]["backends"], "default", THROUGHPUT,
            "target", "status"]


THROUGHPUT = "GFLOP/s · GB/s (% roof)"


def speedup_rows(report):
    rows = []
    for row in report["speedups"]:
        cells = [row["case"], row["shape"], PASS_LABEL[row["pass"]], fmt_time(row["reference_s"])]
        for b in report["config"]["backends"]:
            impl = row["impls"].get(b, {})
            cells.append(f"{fmt_time(impl.get('median_s'))} · {fmt_factor(impl.get('speedup'))}"
                         if impl.get("speedup") else "—")
        rows.append(cells)
    return rows


def scaling_rows(report):
    rows = []
    for row in report["thread_scaling"]:
        cells = [row["case"], PASS_LABEL[row["pass"]], f"1 → {row['threads']}"]
        cells += [fmt_ratio(row["impls"].get(b)) for b in [*report["config"]["backends"], TORCH]]
        cells.append(f"≥ {row['target']:g}×" if row["target"] else "")
        cells.append(row["status"] or "")
        rows.append(cells)
    return rows


def memory_rows(report):
    memory = report.get("memory")
    if not memory:
        return []
    rows = []
    for backend, entry in memory["backends"].items():
        if "peak_bytes" not in entry:
            rows.append([backend, "—", "—", "—", "—", "—", entry.get("skipped") and "no kernel" or "error"])
            continue
        rows.append([backend, fmt_bytes(entry["peak_bytes"]), fmt_bytes(entry["output_bytes"]),
                     fmt_bytes(entry.get("cache_bytes")), fmt_bytes(memory["workspace_limit_bytes"]),
                     fmt_bytes(entry.get("bound_bytes")), entry.get("status", "—")])
    return rows


MEMORY_COLUMNS = ["backend", "peak traced", "output", "cache kept", "workspace limit", "bound", "status"]


def target_rows(report):
    return [[row["target"], _threads_label(row["threads"]), PASS_LABEL[row["pass"]], fmt_target_value(row),
             row["status"]] for row in report["targets"]]


def _md_table(columns, rows):
    def clean(text):
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report):
    """The whole report as Markdown (for a README)."""
    legend = LEGEND + " Bold: fastnn faster than PyTorch, or a missed target."
    out = ["\n".join(f"{line}  " for line in header_lines(report)), "", legend, ""]
    for n in report["config"]["threads"]:
        rows = []
        for cells in table_rows(report, n):
            rows.append([f"**{text}**" if outcome in ("win", "miss") else text for text, outcome in cells])
        out += [f"#### {_threads_label(n)}", "", _md_table(table_columns(report), rows), ""]
    if report["targets"]:
        rows = [[*r[:-1], f"**{r[-1]}**" if r[-1] == "miss" else r[-1]] for r in target_rows(report)]
        out += ["#### Targets", "", _md_table(["target", "threads", "pass", "measured (worst case)", "status"], rows),
                ""]
    if report["speedups"]:
        out += ["#### Speed-up over the reference (scaled-down shapes, 1 thread)", "",
                _md_table(["case", "shape", "pass", "reference", *report["config"]["backends"]],
                          speedup_rows(report)), ""]
    if report["thread_scaling"]:
        out += ["#### Thread speed-up", "",
                _md_table(["case", "pass", "threads", *report["config"]["backends"], "PyTorch", "target",
                           "status"], scaling_rows(report)), ""]
    if report.get("memory"):
        m = report["memory"]
        out += [f"#### Memory: conv2d_forward on {m['case']} with batch {m['batch']} ({m['shape']})", "",
                _md_table(MEMORY_COLUMNS, memory_rows(report)), ""]
    return "\n".join(out)


_STYLE = {"win": "bold green", "loss": "red", "pass": "green", "miss": "bold red", "untraced": "yellow",
          "n/a": "dim"}


def render_rich(report, console):
    """The report as rich tables: wins green, losses red, misses bold red."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def styled(text, outcome=None):
        return Text(str(text), style=_STYLE.get(outcome, ""))

    def table(title, columns, right=()):
        t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in columns:
            t.add_column(col, justify="right" if col in right else "left",
                         overflow="fold", no_wrap=col not in ("shape", "target"))
        return t

    for line in header_lines(report):
        console.print(line, highlight=False)
    console.print(Text(LEGEND + " Green: fastnn faster than PyTorch; red: slower.", style="dim"))
    columns = table_columns(report)
    for n in report["config"]["threads"]:
        t = table(f"fastnn vs PyTorch, {_threads_label(n)}", columns,
                  right=("PyTorch", *report["config"]["backends"], THROUGHPUT))
        for cells in table_rows(report, n):
            t.add_row(*(styled(text, outcome) for text, outcome in cells))
        console.print(t)

    def simple(title, columns, rows, status_col=None):
        t = table(title, columns)
        for row in rows:
            t.add_row(*(styled(c, c if i == status_col else None) for i, c in enumerate(row)))
        console.print(t)

    if report["targets"]:
        simple("Targets", ["target", "threads", "pass", "measured (worst case)", "status"], target_rows(report), 4)
    if report["speedups"]:
        simple("Speed-up over the reference (scaled-down shapes, 1 thread)",
               ["case", "shape", "pass", "reference", *report["config"]["backends"]], speedup_rows(report))
    if report["thread_scaling"]:
        cols = ["case", "pass", "threads", *report["config"]["backends"], "PyTorch", "target", "status"]
        simple("Thread speed-up", cols, scaling_rows(report), len(cols) - 1)
    if report.get("memory"):
        m = report["memory"]
        simple(f"Memory: conv2d_forward on {m['case']} with batch {m['batch']} ({m['shape']})", MEMORY_COLUMNS,
               memory_rows(report), len(MEMORY_COLUMNS) - 1)


def report_console(file=None):
    """A rich console; wide when writing to a file or pipe, where nothing wraps."""
    from rich.console import Console
    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=160)
    return console


def plot(report, path):
    """A chart of the ratios to PyTorch, one panel per thread count and pass: a bar per
    case and backend, the win region shaded green, each case's target dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = report["config"]["backends"]
    threads = report["config"]["threads"]
    case_ids = [c["id"] for c in report["cases"]]
    targets = {c["id"]: c["target"] for c in report["cases"]}
    results = _index(report["results"], "case", "pass", "threads")
    colors = dict(zip(backends, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig_height = (0.3 * len(case_ids) * max(len(backends), 1) + 1.5) * len(threads) + 1.2
    fig, axes = plt.subplots(len(threads), len(PASSES), squeeze=False, sharey=True, figsize=(12, fig_height))
    height = 0.8 / max(len(backends), 1)
    for row_axes, n in zip(axes, threads):
        for ax, pass_ in zip(row_axes, PASSES):
            values = []
            for k, backend in enumerate(backends):
                for i, case_id in enumerate(case_ids):
                    r = results[(case_id, pass_, n)]["impls"].get(backend, {}).get("ratio")
                    if r is None:
                        continue
                    y = i + (k - (len(backends) - 1) / 2) * height
                    ax.barh(y, r, height=height * 0.9, color=colors[backend])
                    ax.annotate(f"{r:.2f}", (r, y), xytext=(3, 0), textcoords="offset points", va="center",
                                fontsize="x-small")
                    values.append(r)
            for i, case_id in enumerate(case_ids):
                ax.plot([targets[case_id]] * 2, [i - 0.45, i + 0.45], color="black", linestyle=":", linewidth=1.2)
            low = min(values + [0.5]) / 1.5
            high = max(values + [2.0]) * 1.5
            ax.set_xscale("log")
            ax.set_xlim(low, high)
            ax.axvspan(low, 1.0, color="tab:green", alpha=0.08)
            ax.axvspan(1.0, high, color="tab:red", alpha=0.06)
            ax.axvline(1.0, color="black", linewidth=1)
            ax.set_title(f"{PASS_LABEL[pass_]}, {_threads_label(n)}")
            ax.set_xlabel("fastnn time / PyTorch time (log scale)")
    axes[0][0].set_yticks(range(len(case_ids)))
    axes[0][0].set_yticklabels(case_ids)
    axes[0][0].set_ylim(len(case_ids) - 0.5, -0.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[b]) for b in backends]
    handles.append(plt.Line2D([], [], color="black", linestyle=":"))
    fig.legend(handles, [*backends, "target"], loc="lower center", ncol=len(backends) + 1, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    env = report["environment"]
    fig.suptitle(f"fastnn {env['fastnn']} vs PyTorch {env.get('torch')}: below 1 fastnn is faster\n"
                 f"{env['cpu']} · {env['date'][:10]}")
    fig.tight_layout(rect=(0, 0.45 / fig_height, 1, 1 - 0.6 / fig_height))  # room for legend and title
    fig.savefig(path, dpi=120)
    plt.close(fig)


class RichProgress(Progress):
    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn
        self._bar = Bar(TextColumn("{task.description:<60}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
        self._task = None

    def start(self, total):
        self._bar.start()
        self._task = self._bar.add_task("starting", total=total)

    def step(self, label):
        self._bar.update(self._task, description=label)

    def advance(self):
        self._bar.advance(self._task)

    def stop(self):
        self._bar.stop()


class PlainProgress(Progress):
    """Progress lines on stderr, for when rich is not installed."""

    def __init__(self, stream=sys.stderr):
        self._stream, self._done, self._total = stream, 0, 0

    def start(self, total):
        self._total = total

    def step(self, label):
        print(f"[{self._done + 1}/{self._total}] {label}", file=self._stream, flush=True)

    def advance(self):
        self._done += 1


def _have(module):
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m fastnn.bench",
        description="Time fastnn against PyTorch (when installed) and its own reference on the suite of "
                    "conv2d, pooling, bmm and LSTM cases, with roofline, thread and memory checks.")
    p.add_argument("--quick", action="store_true",
                   help=f"a subset ({', '.join(QUICK)}) with shorter timing and no memory check; under two minutes "
                        "on 2 cores")
    p.add_argument("--cases", metavar="C1,P2,...",
                   help="cases to run: ids, group names (conv, pool, bmm, lstm) or letters (C, P, B, L)")
    p.add_argument("--backend", metavar="NAME[,NAME]", help="fastnn backends to time (default: all available)")
    p.add_argument("--threads", metavar="N[,N]",
                   help="thread counts, e.g. 1,2 (adds the thread speed-up table); 'all' = every core "
                        "(default: all)")
    p.add_argument("--json", metavar="FILE", help="write results and environment to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="draw the ratio chart (needs matplotlib)")
    p.add_argument("--markdown", action="store_true", help="print the report as Markdown tables")
    p.add_argument("--from-json", metavar="FILE", help="re-render a report saved with --json, measuring nothing")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-reference", action="store_true", help="skip the speed-up over the reference")
    p.add_argument("--no-memory", action="store_true", help="skip the conv2d memory check")
    p.add_argument("--repeat", type=int, metavar="N", help="timing rounds per measurement (default 7, quick 5)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    return p


def config_from_args(args, available=None):
    """A :class:`Config` from parsed arguments; ValueError on a bad selection."""
    available = fastnn.available_backends() if available is None else available
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.repeat is not None:
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        plan = replace(plan, repeat=args.repeat, min_repeat=min(plan.min_repeat, args.repeat))
    return Config(cases=select_cases(args.cases, args.quick), backends=select_backends(args.backend, available),
                  threads=parse_threads(args.threads), quick=args.quick, compare_torch=not args.no_torch,
                  reference=not args.no_reference, memory=not (args.no_memory or args.quick), plan=plan)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for case in SUITE:
            quick = " (quick)" if case.id in QUICK else ""
            print(f"{case.id}  {case.op:<10} {describe(case)}  target ≤ {case.target:g}{quick}")
        return 0
    # Refuse before measuring for minutes, not after.
    if args.plot and not _have("matplotlib"):
        parser.error("--plot needs matplotlib: pip install 'fastnn[plot]' (or matplotlib)")
    use_rich = _have("rich") and not args.markdown
    if args.from_json:
        report = load_json(args.from_json)
    else:
        try:
            config = config_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
        if not config.backends:
            parser.error("no fast backend is available; build fastnn with `pip install .`")
        torch = load_torch() if config.compare_torch else None
        progress = PlainProgress()
        if _have("rich"):
            from rich.console import Console
            console = Console(stderr=True)
            if console.is_terminal:  # a log file gets plain lines rather than a redrawn bar
                progress = RichProgress(console)
        report = summarise(run(config, progress, torch))
    if args.json:
        save_json(report, args.json)
    if use_rich:
        render_rich(report, report_console())
    else:
        print(render_markdown(report))
    if args.plot:
        if report["config"]["torch"]:
            plot(report, args.plot)
        else:
            print("--plot: the ratio chart needs the PyTorch comparison (pip install torch); no chart drawn",
                  file=sys.stderr)
    if args.json:
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader (`| head`) left; nothing more to say
        sys.stderr.close()
        sys.exit(1)
