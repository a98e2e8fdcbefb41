"""Trustworthy under odd input: NaN/Inf propagation where the per-op files do not test
it, huge but valid requests refused up front, and degraded installs (no compiled
extension, no numba) in subprocesses. What every op owes at once (odd sizes, inputs
unchanged, outputs fresh, reruns, threads) is test_ops.py's, over the op table.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from helpers import need
from optable.recurrent import GATES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

# --------------------------------------------------------------------------- NaN / Inf propagation

@pytest.mark.parametrize("kind", sorted(GATES))
def test_recurrent_nan_stays_in_its_batch_row(backend, kind):
    """A NaN in one example's x<t> poisons that example from step t on, and nothing else."""
    need(backend, f"{kind}_forward", f"{kind}_backward")
    rng = np.random.default_rng(5)
    T, m, n_x, n_a, g = 4, 3, 2, 2, GATES[kind]
    x = rng.standard_normal((T, m, n_x))
    x[2, 1, 0] = np.nan
    W, b = rng.standard_normal((g * n_a, n_a + n_x)), rng.standard_normal(g * n_a)
    args = (x, None, None, W, b) if kind == "lstm" else (x, None, W, b)
    h, *_ = getattr(fastnn, f"{kind}_forward")(*args, backend=backend)
    expected = np.zeros(h.shape, bool)
    expected[2:, 1, :] = True
    np.testing.assert_array_equal(np.isnan(h), expected)


@pytest.mark.parametrize("sign", [1, -1])
def test_recurrent_inf_input_saturates_not_nan(backend, sign):
    """tanh and sigmoid of ±Inf are exact (±1, 1 or 0): an infinite input saturates the gates."""
    need(backend, "lstm_forward", "gru_forward", "rnn_forward")
    x, h0 = np.array([[[sign * np.inf]]]), np.zeros((1, 1))
    h, c, _ = fastnn.lstm_forward(x, h0, h0, np.ones((4, 2)), np.zeros(4), backend=backend)
    # +Inf: every gate 1 and c~ = 1, so c = 1 and h = tanh(1); -Inf: gates 0, c = h = 0
    np.testing.assert_allclose(c, [[1.0 if sign > 0 else 0.0]], atol=1e-15)
    np.testing.assert_allclose(h, [[[np.tanh(1.0) if sign > 0 else 0.0]]], rtol=1e-12, atol=1e-15)
    h, _ = fastnn.gru_forward(x, h0, np.ones((3, 2)), np.zeros(3), backend=backend)
    np.testing.assert_allclose(h, [[[1.0 if sign > 0 else 0.0]]], atol=1e-15)
    h, _ = fastnn.rnn_forward(x, h0, np.ones((1, 2)), np.zeros(1), backend=backend)
    np.testing.assert_array_equal(h, [[[float(sign)]]])


@pytest.mark.filterwarnings("error::RuntimeWarning")  # silently, in every backend
def test_conv_backward_inf_reaches_only_the_affected_gradients(backend):
    need(backend, "conv2d_forward", "conv2d_backward")
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 6, 6, 2)), rng.standard_normal((3, 3, 2, 3))
    y, cache = fastnn.conv2d_forward(x, w, np.ones(3), backend=backend)
    dy = rng.standard_normal(y.shape)
    dy[1, 0, 0, 2] = np.inf  # the top-left output of image 1, channel 2
    dx, dw, db = fastnn.conv2d_backward(dy, cache)
    bad_dx = np.zeros(dx.shape, bool)
    bad_dx[1, 0:3, 0:3, :] = True  # the window that produced it
    np.testing.assert_array_equal(~np.isfinite(dx), bad_dx)
    np.testing.assert_array_equal(~np.isfinite(dw), np.broadcast_to([False, False, True], dw.shape))
    np.testing.assert_array_equal(np.isinf(db), [False, False, True])


def test_max_pool_backward_nan_window(backend):
    """The gradient of a window holding NaN goes to the NaN (it is the maximum), and only there."""
    need(backend, "pool2d_forward", "pool2d_backward")
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    x[0, 0, 0, 0] = np.nan
    y, cache = fastnn.pool2d_forward(x, 2, backend=backend)
    np.testing.assert_array_equal(np.isnan(y[0, :, :, 0]), [[True, False], [False, False]])
    dx = fastnn.pool2d_backward(np.ones(y.shape), cache)
    want = np.zeros((4, 4))
    want[0, 0] = want[1, 3] = want[3, 1] = want[3, 3] = 1
    np.testing.assert_array_equal(dx[0, :, :, 0], want)


# --------------------------------------------------------------------------- huge requests

def _view(shape):
    """A valid input of any size that takes no memory (every element is the same)."""
    return np.broadcast_to(np.ones(1), shape)


HUGE = {
    "conv2d": lambda be: fastnn.conv2d(np.ones((1, 2, 2, 1)), np.ones((1, 1, 1, 1)), padding=2**30, backend=be),
    "conv2d-batch": lambda be: fastnn.conv2d(_view((10**7, 10**4, 10, 1)), np.ones((1, 1, 1, 8)), backend=be),
    "im2col": lambda be: fastnn.im2col(np.ones((1, 3, 3, 1)), 3, padding=2**30, backend=be),
    "col2im": lambda be: fastnn.col2im(np.ones((1, 1)), (2**30, 2**30, 1, 1), 1, stride=2**30, backend=be),
    "max_pool2d": lambda be: fastnn.max_pool2d(_view((10**7, 10**7, 10, 1)), 1, backend=be),
    "bmm": lambda be: fastnn.bmm(_view((10**7, 1, 2, 2)), _view((10**7, 2, 2)), backend=be),
    "bmm_backward": lambda be: fastnn.bmm_backward(
        _view((10**7, 10**7, 0, 0)), _view((10**7, 1, 0, 2)), _view((10**7, 2, 0)), backend=be),
    "rnn_forward": lambda be: fastnn.rnn_forward(_view((10**6, 10**6, 0)), None, np.ones((10, 10)), np.ones(10),
                                                 backend=be),
}


@pytest.mark.parametrize("case", sorted(HUGE))
def test_huge_requests_are_refused_up_front(backend, case):
    """Terabyte outputs: a ValueError naming the function and the size, before any allocation."""
    fn = case.split("-")[0]
    with pytest.raises(ValueError, match=rf"^{fn}: .*GiB"):
        HUGE[case](backend)


@pytest.mark.parametrize("name", ["stride", "dilation", "padding"])
def test_geometry_beyond_c_integers_is_refused(backend, name):
    """Values the kernels could only overflow on; a stride of 2**70 over a 1x1 image is
    otherwise valid (one output), so it needs its own check."""
    x, w = np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1))
    for call in (lambda: fastnn.conv2d(x, w, **{name: 2**70}, backend=backend),
                 lambda: fastnn.im2col(x, 1, **{name: (1, 2**70)}, backend=backend)):
        with pytest.raises(ValueError, match=rf"^(conv2d|im2col): {name} must be at most"):
            call()
    if name != "padding":  # pooling padding is bounded by the kernel already
        with pytest.raises(ValueError, match=rf"^max_pool2d: {name} must be at most"):
            fastnn.max_pool2d(x, 1, **{name: 2**70}, backend=backend)
    assert fastnn.conv2d(x, w, **{name: 2**31 - 1 if name != "padding" else 0}, backend=backend).shape == (1, 1, 1, 1)


def test_missing_required_array_is_a_type_error():
    for call, fn in ((lambda: fastnn.conv2d(None, np.ones((1, 1, 1, 1))), "conv2d"),
                     (lambda: fastnn.bmm(np.ones((2, 2)), None), "bmm"),
                     (lambda: fastnn.max_pool2d(None, 2), "max_pool2d"),
                     (lambda: fastnn.lstm_cell_forward(None, None, None, np.ones((4, 1)), np.ones(4)),
                      "lstm_cell_forward")):
        with pytest.raises(TypeError, match=rf"^{fn}: \w+ must be an array, got None"):
            call()


def test_conv_with_zero_input_channels(backend):
    """C_in = 0 is a valid (if degenerate) convolution: y is the bias, dx is empty, dw is empty."""
    need(backend, "conv2d_forward", "conv2d_backward")
    x, w, b = np.ones((1, 3, 3, 0)), np.ones((3, 3, 0, 2)), np.array([1.0, -2.0])
    y, cache = fastnn.conv2d_forward(x, w, b, backend=backend)
    np.testing.assert_array_equal(y, np.broadcast_to([1.0, -2.0], (1, 1, 1, 2)))
    dx, dw, db = fastnn.conv2d_backward(np.ones(y.shape), cache)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_array_equal(db, [1.0, 1.0])


# --------------------------------------------------------------------------- degraded installs

BLOCKERS = {
    "no-numba": "sys.modules['numba'] = None  # what Python does for a package that is not installed\n",
    "no-extension": textwrap.dedent("""\
        import importlib.abc
        class Blocker(importlib.abc.MetaPathFinder):
            # a source checkout that was never built: the compiled modules do not exist
            def find_spec(self, name, path=None, target=None):
                if name.startswith('fastnn._kernels.cy_'):
                    raise ModuleNotFoundError(f'No module named {name!r}', name=name)
                return None
        sys.meta_path.insert(0, Blocker())
        """),
}
BLOCKERS["neither"] = BLOCKERS["no-numba"] + BLOCKERS["no-extension"]
MISSING = {"no-numba": ["numba"], "no-extension": ["cython"], "neither": ["numba", "cython"]}

DEGRADED_CHECK = textwrap.dedent("""\
    import numpy as np
    import fastnn
    missing = {missing!r}
    have = fastnn.available_backends()
    print('available', have)
    assert have == [b for b in ('cython', 'numba', 'reference') if b not in missing], have
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 5, 5, 2)), rng.standard_normal((3, 3, 2, 3))
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 2))
    xs, W, bias = rng.standard_normal((2, 2, 3)), rng.standard_normal((8, 5)), rng.standard_normal(8)
    def calls(be):
        return [fastnn.conv2d(x, w, padding=1, backend=be), fastnn.max_pool2d(x, 2, backend=be),
                fastnn.bmm(a, b, backend=be), fastnn.lstm_forward(xs, None, None, W, bias, backend=be)[0]]
    want = calls('reference')
    for be in have + [None]:
        for got, ref in zip(calls(be), want):
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    for gone in missing:
        for func in (lambda: fastnn.conv2d(x, w, backend=gone), lambda: fastnn.set_backend(gone)):
            try:
                func()
            except ValueError as exc:
                assert 'available backends' in str(exc) and str(have) in str(exc), str(exc)
            else:
                raise AssertionError(f'backend {{gone!r}} was accepted although it is missing')
    print('DEGRADED OK')
    """)


@pytest.mark.parametrize("how", sorted(BLOCKERS))
def test_degraded_install_keeps_the_other_backends(how):
    code = "import sys\n" + BLOCKERS[how] + DEGRADED_CHECK.format(missing=MISSING[how])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("FASTNN_BACKEND", None)
    # cwd=ROOT: `python -c` puts the working directory first on sys.path, and the
    # source checkout's uncompiled tree must not stand in for the fastnn under test.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DEGRADED OK" in result.stdout
