"""The installation under test has the backends it is supposed to have.

CI sets FASTNN_REQUIRE_BACKENDS (e.g. "cython,numba,reference") so that a build that
silently lost its compiled extension, or a backend that lacks a kernel, fails the run
instead of quietly testing less.
"""
import os

import pytest

import fastnn
from fastnn._backends import _load, unavailable_backends
from fastnn._kernels._collect import KERNEL_NAMES

REQUIRED = [name for name in os.environ.get("FASTNN_REQUIRE_BACKENDS", "").split(",") if name]


@pytest.mark.skipif(not REQUIRED, reason="FASTNN_REQUIRE_BACKENDS is not set")
@pytest.mark.parametrize("name", REQUIRED or ["-"])
def test_required_backend_is_complete(name):
    assert name in fastnn.available_backends(), unavailable_backends().get(name, "unknown backend")
    module = _load(name)
    missing = [kernel for kernel in KERNEL_NAMES if not hasattr(module, kernel)]
    assert not missing, f"backend {name!r} lacks kernels {missing}"


def test_reference_backend_is_complete():
    module = _load("reference")
    assert [kernel for kernel in KERNEL_NAMES if not hasattr(module, kernel)] == []
