"""pytest-benchmark suite over the benchmark cases of ``fastnn-bench``.

Run with ``pytest benchmarks/ --benchmark-only``; every case and pass is its own
group (fastnn's backends and PyTorch side by side), so two saved runs compare with
``--benchmark-compare``. This directory is not part of the test run (``testpaths``).
"""
import functools

import pytest

import fastnn
from fastnn import bench


def pytest_addoption(parser):
    group = parser.getgroup("fastnn", "fastnn benchmark suite")
    group.addoption("--fastnn-threads", type=int, default=None,
                    help="threads for fastnn and PyTorch (default: every core)")
    group.addoption("--fastnn-cases", default=None,
                    help="cases to run: ids, group names or letters, e.g. C1,P2 or conv (default: all)")
    group.addoption("--fastnn-quick", action="store_true", help=f"only the quick subset ({', '.join(bench.QUICK)})")
    group.addoption("--fastnn-dtype", default="float32", choices=("float32", "float64"),
                    help="dtype of the inputs (default: float32)")


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        config = metafunc.config
        cases = bench.select_cases(config.getoption("--fastnn-cases"), config.getoption("--fastnn-quick"))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session", autouse=True)
def threads(request):
    n = request.config.getoption("--fastnn-threads") or bench.parse_threads(None)[0]
    previous = fastnn.get_num_threads()
    bench.set_threads(n, bench.load_torch())
    yield n
    bench.set_threads(previous, bench.load_torch())


@pytest.fixture(scope="session")
def torch():
    module = bench.load_torch()
    if module is None:
        pytest.skip("PyTorch is not installed")
    return module


@functools.lru_cache(maxsize=None)
def inputs_of(case_id, dtype):
    """Inputs are made once per case and shared by every implementation."""
    return bench.make_inputs(bench.CASES[case_id], dtype=dtype)


@pytest.fixture
def inputs(case, request):
    return inputs_of(case.id, request.config.getoption("--fastnn-dtype"))
