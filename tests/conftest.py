"""Fixtures shared by every test file: the backend parametrisation and state resets."""
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _backends

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # Hypothesis is optional; the tests using it skip
    pass
else:
    settings.register_profile(
        "fastnn", max_examples=25, deadline=None, derandomize=True, print_blob=True,
        # the function-scoped fixtures used with @given are an immutable backend name
        # and a reset of global settings, both fine to share between examples
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )
    settings.load_profile("fastnn")

def _unbuilt_checkout():
    """The source checkout fastnn was imported from when it holds no compiled extension
    modules (``python -m pytest`` puts the current directory first on sys.path, so a
    checkout shadows the installed, compiled build), else None."""
    package = Path(fastnn.__file__).resolve().parent
    root = package.parent
    if not (root / "setup.py").is_file():
        return None
    kernels = package / "_kernels"
    if any(kernels.glob("cy_*.so")) or any(kernels.glob("cy_*.pyd")):
        return None
    return root


def pytest_configure(config):
    root = _unbuilt_checkout()
    if root is not None:
        pytest.exit(
            f"fastnn was imported from the source checkout {root}, which has no compiled "
            "extension modules, so the cython backend would be missing and its tests "
            "skipped. `python -m pytest` puts the current directory first on sys.path: "
            "run `pytest` (or `python -P -m pytest`) to test the installed build, or "
            "build the checkout in place first (`python setup.py build_ext --inplace`).",
            returncode=4,
        )


BACKENDS = fastnn.available_backends()
COMPILED = [b for b in BACKENDS if b != "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend that imports on this installation (the reference included)."""
    return request.param


@pytest.fixture(params=COMPILED or [pytest.param(None, marks=pytest.mark.skip(reason="no compiled backend"))])
def compiled_backend(request):
    return request.param


def _tiers():
    """The CPU tiers the compiled kernels can run here, highest first."""
    top = _backends.cpu_isa()
    if top is None:
        return []
    return list(_backends.ISAS[:_backends.ISAS.index(top) + 1])[::-1]


TIERS = _tiers()


@pytest.fixture(params=TIERS or [pytest.param(None, marks=pytest.mark.skip(reason="no compiled backend"))])
def tier(request):
    """Every CPU tier this CPU can run (the cython backend's kernels switched to it)."""
    before = _backends._isa
    _backends.set_isa(request.param)
    yield request.param
    _backends.set_isa(before)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Tests may change the process-wide settings; put them back afterwards."""
    backend = fastnn.get_backend()
    limit = fastnn.get_workspace_limit()
    threads = fastnn.get_num_threads()
    yield
    fastnn.set_backend(backend)
    fastnn.set_workspace_limit(limit)
    if fastnn.get_num_threads() != threads:
        fastnn.set_num_threads(threads)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, different per test."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
