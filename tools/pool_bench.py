"""Pooling P1-P3 (PERF.md) side by side with PyTorch: fastnn time / torch time.

    python tools/pool_bench.py [--threads 1 2] [--dtypes f32 f64] [--tier 2] [--backends cython numba]
                               [--cases P1 P2 P3] [--reps 7]

Each timing alternates fastnn (each backend) and PyTorch in one process, after a
warm-up; a repetition times a loop of at least --min-ms, the median of --reps is
reported. To emulate an AVX2 machine: --tier 1 and start the process with
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
NUMBA_CPU_NAME=haswell.
"""
import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import fastnn
from fastnn._kernels import cy_pool

CASES = {
    "P1": ("max", (32, 32, 32, 64), 2, 2, 0),
    "P2": ("max", (8, 112, 112, 64), 3, 2, 1),
    "P3": ("avg", (32, 32, 32, 64), 2, 2, 0),
}


def loop_time(fn, min_s):
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= min_s:
            return t / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dtypes", nargs="+", default=["f32", "f64"])
    ap.add_argument("--tier", type=int, default=None)
    ap.add_argument("--backends", nargs="+", default=["cython", "numba"])
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--passes", nargs="+", default=["fwd", "fwdbwd"])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--min-ms", type=float, default=25)
    a = ap.parse_args()
    if a.tier is not None:
        cy_pool.set_tier(a.tier)
    print(f"# tier {cy_pool.active_tier()} (cpu {cy_pool.cpu_tier()}), torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}")
    rng = np.random.default_rng(0)
    for threads in a.threads:
        torch.set_num_threads(threads)
        fastnn.set_num_threads(threads)
        for dt in a.dtypes:
            dtype = np.float32 if dt == "f32" else np.float64
            for name in a.cases:
                mode, shape, k, s, p = CASES[name]
                x = rng.standard_normal(shape).astype(dtype)
                xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
                pool = F.max_pool2d if mode == "max" else F.avg_pool2d
                with torch.no_grad():
                    yt = pool(xt, k, s, p)
                dy = rng.standard_normal((shape[0], yt.shape[2], yt.shape[3], shape[3])).astype(dtype)
                dyt = torch.from_numpy(np.ascontiguousarray(dy.transpose(0, 3, 1, 2)))
                fpool = fastnn.max_pool2d if mode == "max" else fastnn.avg_pool2d

                def t_fwd():
                    with torch.no_grad():
                        return pool(xt, k, s, p)

                def t_fb():
                    return torch.autograd.grad(pool(xt, k, s, p), (xt,), dyt)

                funcs = {}
                for b in a.backends:
                    funcs[(b, "fwd")] = (lambda b=b: fpool(x, k, s, p, backend=b))
                    funcs[(b, "fwdbwd")] = (lambda b=b: fastnn.pool2d_backward(
                        dy, fastnn.pool2d_forward(x, k, s, p, mode=mode, backend=b)[1]))
                for ps in a.passes:
                    tf = t_fwd if ps == "fwd" else t_fb
                    names = [b for b in a.backends]
                    times = {b: [] for b in names}
                    times["torch"] = []
                    for b in names:
                        loop_time(funcs[(b, ps)], 0.01)
                    loop_time(tf, 0.01)
                    for _ in range(a.reps):
                        for b in names:
                            times[b].append(loop_time(funcs[(b, ps)], a.min_ms / 1e3))
                        times["torch"].append(loop_time(tf, a.min_ms / 1e3))
                    med = {b: statistics.median(v) for b, v in times.items()}
                    cells = "  ".join(f"{b} {med[b] / med['torch']:.2f}x ({med[b] * 1e3:.3f} ms)" for b in names)
                    print(f"{name} {ps:6s} {dt} t{threads} tier{cy_pool.active_tier()}: {cells}  "
                          f"torch {med['torch'] * 1e3:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
