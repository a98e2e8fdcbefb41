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


def test_an_unbuilt_checkout_stops_the_tests_with_a_message(tmp_path):
    """`python -m pytest` run in a source checkout imports that checkout (the current
    directory comes first on sys.path); without compiled extension modules the run
    must stop at once and say what to do, not skip the cython backend's tests."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    source = Path(fastnn.__file__).resolve().parent
    tests = Path(__file__).resolve().parent
    shutil.copytree(source, tmp_path / "fastnn",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    shutil.copytree(tests, tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__", "c"))
    (tmp_path / "setup.py").write_text("# a checkout's setup.py\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_outputs.py"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 4, run.stdout + run.stderr
    assert "no compiled extension modules" in run.stdout + run.stderr
    assert "passed" not in run.stdout


def test_every_subpackage_is_installed():
    """pyproject.toml lists the packages a wheel holds: a subpackage missing there is
    missing from every install (the checkout's tests would not notice)."""
    import tomllib
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, root).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(root, "fastnn"))
             if "__init__.py" in files}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
