"""Each case, forward and forward + backward, for every fastnn backend, PyTorch and,
where it has a vectorised form, plain NumPy."""
import pytest

import fastnn
from fastnn import bench

BACKENDS = [name for name in fastnn.available_backends() if name != bench.REFERENCE]


def run(benchmark, case, pass_, impl, func, dtype):
    benchmark.group = f"{case.id} {bench.PASS_LABEL[pass_]}, {dtype}: {bench.describe(case)}"
    benchmark.extra_info["dtype"] = dtype
    benchmark.name = impl
    try:
        func()  # also the warm-up that compiles Numba kernels before timing
    except ValueError as exc:
        if "skipped" in bench.failure(exc):
            pytest.skip(str(exc))
        raise
    benchmark(func)
    benchmark.extra_info.update({"case": case.id, "pass": pass_, "impl": impl})
    if benchmark.stats is None:  # --benchmark-disable: the call ran once, untimed
        return
    work = bench.flops(case, pass_)
    dtype = benchmark.extra_info.get("dtype", "float32")
    key, amount = ("gflops", work) if work is not None else ("gbps", bench.traffic_bytes(case, pass_, dtype))
    benchmark.extra_info[key] = bench.rate(amount, benchmark.stats.stats.median)


@pytest.mark.parametrize("pass_", bench.PASSES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fastnn(benchmark, case, inputs, backend, pass_):
    run(benchmark, case, pass_, backend, bench.fastnn_workload(case, inputs, backend)[pass_], dtype_of(inputs))


@pytest.mark.parametrize("pass_", bench.PASSES)
def test_torch(benchmark, case, inputs, torch, pass_):
    run(benchmark, case, pass_, "torch", bench.torch_workload(case, inputs, torch)[pass_], dtype_of(inputs))


@pytest.mark.parametrize("pass_", bench.PASSES)
def test_numpy(benchmark, case, inputs, pass_):
    work = bench.numpy_workload(case, inputs)
    if work is None:
        pytest.skip(f"{case.id}: no vectorised NumPy form")
    run(benchmark, case, pass_, "numpy", work[pass_], dtype_of(inputs))


def dtype_of(inputs):
    return str(inputs["grad"].dtype)
