"""Package level: version, backends registry, FASTNN_BACKEND, threads, the reference module."""
import inspect
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from helpers import CONVERTERS, OPS, assert_close, need, on, randn
from optable import public_api

PACKAGE = ["available_backends", "set_backend", "get_backend", "set_num_threads", "get_num_threads",
           "set_workspace_limit", "get_workspace_limit"]

# The positional parameters the contract fixes, in order (the op table's).
API_POSITIONAL = public_api()


def test_version():
    assert isinstance(fastnn.__version__, str)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?([.\-+]?\w+)*", fastnn.__version__)


def test_public_names_exist():
    for name in OPS + CONVERTERS + PACKAGE:
        assert callable(getattr(fastnn, name)), name
        assert name in fastnn.__all__, name
    assert inspect.ismodule(fastnn.reference)


@pytest.mark.parametrize("name", list(API_POSITIONAL))
def test_signatures_follow_the_api(name):
    params = inspect.signature(getattr(fastnn, name)).parameters
    positional = [p.name for p in params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional[:len(API_POSITIONAL[name])] == API_POSITIONAL[name]
    if not name.endswith("_backward"):
        assert "backend" in params and params["backend"].default is None
        assert params["backend"].kind == params["backend"].KEYWORD_ONLY


@pytest.mark.parametrize("name", OPS + CONVERTERS)
def test_reference_module_mirrors_the_package(name):
    ours = inspect.signature(getattr(fastnn, name))
    ref = inspect.signature(getattr(fastnn.reference, name))
    expected = [p for p in ours.parameters.values() if p.name != "backend"]
    assert list(ref.parameters.values()) == expected
    assert "backend" not in ref.parameters


def test_reference_module_computes_with_the_reference_backend(rng):
    x = randn(rng, (2, 5, 5, 3))
    w = randn(rng, (3, 3, 3, 2))
    assert_close(fastnn.reference.conv2d(x, w, padding=1), fastnn.conv2d(x, w, padding=1, backend="reference"))
    with pytest.raises(TypeError):
        fastnn.reference.conv2d(x, w, backend="reference")


def test_available_backends():
    names = fastnn.available_backends()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert "reference" in names
    assert set(names) <= {"cython", "numba", "reference"}
    assert len(set(names)) == len(names)


def test_set_and_get_backend():
    assert fastnn.get_backend() is None
    for name in fastnn.available_backends():
        fastnn.set_backend(name)
        assert fastnn.get_backend() == name
    fastnn.set_backend(None)
    assert fastnn.get_backend() is None


@pytest.mark.parametrize("bad", ["gpu", "", "Reference", 3, ["reference"]])
def test_set_backend_rejects_unknown(bad):
    with pytest.raises(ValueError) as info:
        fastnn.set_backend(bad)
    message = str(info.value)
    assert "set_backend" in message
    for name in fastnn.available_backends():
        assert name in message
    assert fastnn.get_backend() is None


def test_default_backend_is_used_when_backend_is_none(compiled_backend, rng):
    """The workspace cap applies to compiled convolutions only, which tells which backend ran."""
    need(compiled_backend, "conv2d_forward")
    x, w = randn(rng, (1, 6, 6, 2)), randn(rng, (3, 3, 2, 2))
    fastnn.set_workspace_limit(16)
    fastnn.set_backend("reference")
    y = fastnn.conv2d(x, w)
    fastnn.set_backend(compiled_backend)
    with pytest.raises(ValueError, match="conv2d"):
        fastnn.conv2d(x, w)
    assert_close(fastnn.conv2d(x, w, backend="reference"), y)  # an explicit backend= wins


def _run(code, **env):
    full = dict(os.environ)
    full.pop("FASTNN_BACKEND", None)
    full.update(env)
    # Run beside the fastnn under test (the installed one, or an in-place build), not in
    # the source checkout, whose uncompiled tree `python -c` would import first.
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=root,
                          timeout=300)


def test_fastnn_backend_environment_variable():
    for name in fastnn.available_backends():
        result = _run("import fastnn; print(fastnn.get_backend())", FASTNN_BACKEND=name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name
    result = _run("import fastnn; print(fastnn.get_backend())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_fastnn_backend_environment_variable_drives_dispatch():
    code = ("import numpy as np, fastnn\n"
            "fastnn.set_workspace_limit(16)\n"
            "x = np.ones((1, 6, 6, 2)); w = np.ones((3, 3, 2, 2))\n"
            "print(fastnn.conv2d(x, w)[0, 0, 0, 0])\n")
    result = _run(code, FASTNN_BACKEND="reference")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) == 18.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_validation(bad):
    before = fastnn.get_num_threads()
    with pytest.raises(ValueError, match="set_num_threads"):
        fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before


def test_set_num_threads_roundtrip_and_results(backend, rng):
    need(backend, "conv2d_forward", "bmm")
    assert isinstance(fastnn.get_num_threads(), int) and fastnn.get_num_threads() >= 1
    x, w = randn(rng, (4, 9, 8, 3)), randn(rng, (3, 3, 3, 5))
    a, b = randn(rng, (6, 7, 5)), randn(rng, (5, 4))
    results = []
    for n in (1, 2):
        fastnn.set_num_threads(n)
        assert fastnn.get_num_threads() == n
        results.append((fastnn.conv2d(x, w, padding=1, **on(backend)), fastnn.bmm(a, b, **on(backend))))
    for r1, r2 in zip(*results):
        assert_close(r1, r2)


def test_num_threads_one_is_deterministic(backend, rng):
    need(backend, "conv2d_forward")
    fastnn.set_num_threads(1)
    x, w = randn(rng, (3, 7, 7, 4)), randn(rng, (3, 3, 4, 4))
    np.testing.assert_array_equal(fastnn.conv2d(x, w, **on(backend)), fastnn.conv2d(x, w, **on(backend)))
