"""The benchmark behind ``fastnn-bench`` (``python -m fastnn.bench``): what fastnn
gains on this machine.

Every case of the suite (convolution C1-C6, pooling P1-P3, batch matmul B1-B3, LSTM
L1-L3; ``--list`` shows them) is timed for every available fast backend, for
PyTorch's CPU kernels when PyTorch is installed, and for the plain NumPy a user would
write where NumPy has a vectorised form, side by side in one process: the
implementations of one case take turns (the order rotating every round) after a
warm-up, and the median of the rounds is kept, so a slow phase of a shared machine
hits them all alike. Each case is timed forward only and forward + backward, in
float32 and float64, each library in its native layout (fastnn NHWC, PyTorch NCHW)
with the same thread count.

    fastnn-bench --quick                          # a float32 subset, under two minutes
    fastnn-bench --threads 1,2 --json run.json --plot run.png
    fastnn-bench --isa avx2 --cases C2,B1,L1      # the AVX2 tier, everything limited to AVX2
    fastnn-bench --cases load                     # only the under-load case
    fastnn-bench --from-json run.json --markdown  # re-render, no timing

The same run measures the machine's limits (GEMM GFLOP/s of the BLAS fastnn calls,
and the bandwidth of a large copy) so that every case also reads as a fraction of
what the hardware allows, times the pure-Python reference on scaled-down shapes,
checks the memory bound of convolution, runs L1, L2 and C2 with one CPU kept busy,
and judges the targets of PERF.md. The report names the CPU tier that ran.

The modules, each usable (and tested) alone:

- ``suite``: the cases, their targets and work, what a run selects;
- ``workloads``: inputs, and the closures running a case with fastnn, PyTorch, NumPy;
- ``timing``: plans and :func:`measure`;
- ``load``: a process keeping one CPU busy;
- ``tier``: the CPU tier, and the environment that limits every library to it;
- ``machine``: versions, BLAS, environment, the roofline;
- ``run``: one run, measuring into a raw report;
- ``report``: ratios, verdicts and targets derived from it, validation, JSON;
- ``render``: Markdown, rich tables, the chart, progress;
- ``cli``: the parser and the command.

rich (``pip install "fastnn[bench]"``) draws the tables and the progress bar;
without it the report is printed as Markdown. matplotlib is needed only for
``--plot`` (``pip install "fastnn[plot]"``); PyTorch only for its comparison.
"""
from .cli import main
from .suite import (CASES, PASS_LABEL, PASSES, QUICK, REFERENCE, SUITE, TORCH, describe, flops, parse_threads,
                    select_cases, traffic_bytes)
from .report import rate
from .timing import failure
from .workloads import fastnn_workload, load_torch, make_inputs, numpy_workload, set_threads, torch_workload

__all__ = ["main", "CASES", "PASS_LABEL", "PASSES", "QUICK", "REFERENCE", "SUITE", "TORCH", "describe", "flops",
           "parse_threads", "select_cases", "traffic_bytes", "rate", "failure", "fastnn_workload", "load_torch",
           "make_inputs", "numpy_workload", "set_threads", "torch_workload"]
