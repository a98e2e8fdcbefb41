"""fastnn against PyTorch on shapes outside the suite of fastnn-bench (run by hand):

    python benchmarks/bench_shapes.py [--threads 1] [--dtype float32] [--ops linear,bmm,...]

Products with a few output columns (a logistic regression, a classifier's head, bmm
with one to nine columns), softmax cross-entropy over a few classes, and
convolutions with few output channels: the shapes where a sweep of random shapes
found fastnn far behind (docs/KERNELS.md, "Narrow products"). Each case builds its
inputs and workloads as fastnn-bench does (fastnn.bench.workloads, backend=None
against PyTorch at the same thread count), then times the two in turn, 7 rounds of
enough calls for about 20 ms, and prints the fastest round of each and their ratio
(fastnn / PyTorch, lower is better). For a lower tier set FASTNN_ISA and limit
PyTorch likewise (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA),
as fastnn-bench --isa does.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastnn  # noqa: E402
from fastnn.bench import workloads  # noqa: E402
from fastnn.bench.suite import Case, _targets  # noqa: E402

CASES = (
    [Case("sce", "softmax_cross_entropy", dict(N=n, C=c), _targets(0.8, None))
     for n, c in [(5000, 2), (5000, 3), (5000, 10), (64, 10), (5000, 37), (1000, 1000)]]
    + [Case("lin", "linear", dict(N=n, n_in=i, n_out=o), _targets(1.0, None))
       for n, i, o in [(209, 12288, 1), (256, 512, 10), (1000, 784, 10), (64, 100, 1), (4096, 64, 8),
                       (256, 1024, 3)]]
    + [Case("conv", "conv2d", dict(N=n, H=h, W=w, C_in=ci, C_out=co, k=k, stride=s, pad=p), _targets(1.5, None))
       for n, h, w, ci, co, k, s, p in [(8, 30, 20, 192, 1, 7, 1, 3), (8, 30, 47, 160, 8, 3, 1, 1),
                                        (16, 32, 32, 64, 3, 3, 1, 1), (16, 32, 32, 64, 16, 3, 1, 1),
                                        (16, 32, 32, 16, 64, 3, 1, 1), (32, 28, 28, 1, 6, 5, 1, 0),
                                        (32, 14, 14, 6, 16, 5, 1, 0)]]
    + [Case("bmm", "bmm", dict(B=b, M=m, K=k, N=n), _targets(1.05, 1.05))
       for b, m, k, n in [(16, 165, 26, 9), (200, 226, 17, 45), (64, 128, 128, 8), (64, 128, 128, 1),
                          (64, 8, 128, 128), (64, 128, 8, 128), (32, 50, 64, 50)]]
)


def _mean_time(f, reps):
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--ops", default="", help="comma-separated ops (softmax_cross_entropy, linear, conv2d, "
                                                   "bmm); all by default")
    args = parser.parse_args(argv)
    torch = workloads.load_torch()
    if torch is None:
        sys.exit("bench_shapes: PyTorch is not installed (pip install torch==2.13.0)")
    workloads.set_threads(args.threads, torch)
    fastnn.set_num_threads(args.threads)
    ops = set(filter(None, args.ops.split(",")))
    print(f"fastnn {fastnn.__version__} · tier {fastnn.cpu_info()['isa']} · {args.threads} thread(s) · {args.dtype}")
    for case in CASES:
        if ops and case.op not in ops:
            continue
        inputs = workloads.make_inputs(case, 0, args.dtype)
        ours, theirs = workloads.fastnn_workload(case, inputs, None), workloads.torch_workload(case, inputs, torch)
        for phase in ("forward", "forward_backward"):
            f, t = ours.get(phase), theirs.get(phase)
            if f is None or t is None:
                continue
            f(), t()
            start = time.perf_counter()
            f()
            reps = max(1, min(200, int(0.02 / max(time.perf_counter() - start, 1e-6))))
            fs, ts = [], []
            for _ in range(7):
                fs.append(_mean_time(f, reps))
                ts.append(_mean_time(t, reps))
            ratio = min(fs) / min(ts)
            print(f"{case.op:10s} {phase[:8]:8s} {str(case.dims):75s} fn {min(fs) * 1e6:9.1f}us "
                  f"th {min(ts) * 1e6:9.1f}us r {ratio:5.2f}", flush=True)


if __name__ == "__main__":
    main()
