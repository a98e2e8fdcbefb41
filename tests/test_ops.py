"""The generic tests, run for every op of the table (tests/optable): what every op
owes its users whatever it computes.

- its results match the reference backend on every backend, in float32 and float64,
  at a few of everything, at a batch of zero examples and with every dimension 1;
- its analytic gradients match numerical ones (float64, the course's threshold) and
  its results match PyTorch's where PyTorch has the op;
- no argument is modified and every output is a new array that shares memory with
  no input and no other output, written in full (no uninitialised memory), and owned
  by the caller (writing into it changes no gradient);
- reruns give the same bits (on the cython backend at 1 and at 2 threads alike), and
  calls from several Python threads at once agree with serial ones.
"""
import concurrent.futures
import gc

import numpy as np
import pytest

import fastnn
from helpers import assert_close, assert_fresh, assert_unchanged, check_gradients, need
from optable import OPS, SIZES, randomizer, recorder

BACKENDS = fastnn.available_backends()
DTYPES = [np.float32, np.float64]
NAMES = sorted(OPS)
WITH_BACKWARD = sorted(name for name, op in OPS.items() if op.backward is not None)
WITH_GRADCHECK = sorted(name for name, op in OPS.items() if op.gradcheck is not None or op.backward is not None)
WITH_TORCH = sorted(name for name, op in OPS.items() if op.torch is not None)


def _op(name, backend):
    op = OPS[name]
    need(backend, *op.kernels)
    return op


def _close(op, got, want, dtype, what):
    if np.dtype(dtype) == np.float32 and op.tol32 is not None:
        rtol, atol = op.tol32
        scale = max(1.0, float(np.nanmax(np.abs(want), initial=0.0, where=np.isfinite(want))))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, equal_nan=True, err_msg=what)
    else:
        assert_close(got, want, dtype, what)


# --------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_the_reference(name, backend, size, dtype):
    op = _op(name, backend)
    _, got = op.run(backend, size, dtype=dtype)
    _, want = op.run("reference", size, dtype=dtype)
    assert len(got) == len(want), name
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{name} output {k}: shape {g.shape} != reference {w.shape}"
        assert g.dtype == w.dtype == np.dtype(dtype), f"{name} output {k}: dtype {g.dtype}, reference {w.dtype}"
        _close(op, g, w, dtype, f"{name} output {k} ({size}, {np.dtype(dtype).name}, {backend})")


@pytest.mark.parametrize("name", WITH_GRADCHECK)
def test_gradients_match_numerical_ones(name, backend):
    op = _op(name, backend)
    check = op.gradcheck or op.derived_gradcheck
    loss, arrays, analytic = check(backend, np.random.default_rng(11))
    assert arrays and set(arrays) <= set(analytic), name
    for a in arrays.values():
        assert a.dtype == np.float64
    check_gradients(loss, arrays, analytic)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WITH_TORCH)
def test_matches_pytorch(name, backend, dtype):
    pytest.importorskip("torch")
    op = _op(name, backend)
    pairs = op.torch(backend, dtype, np.random.default_rng(12))
    assert pairs, name
    for what, got, want in pairs:
        want = np.asarray(want)
        assert np.shape(got) == want.shape, f"{name} {what}: shape {np.shape(got)} != PyTorch's {want.shape}"
        _close(op, np.asarray(got), want, dtype, f"{name} {what} vs PyTorch ({np.dtype(dtype).name}, {backend})")


# --------------------------------------------------------------------------- inputs and outputs

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_inputs_unchanged_and_outputs_fresh(name, backend, dtype):
    """Forward and backward: no argument is written, no output is a view of one or of
    another output."""
    op = _op(name, backend)
    before = {}
    # every input comes from here (normal draws and rand.rng's) and stays alive
    r = recorder(randomizer(1, dtype), on_draw=lambda a: before.__setitem__(id(a), a.copy()))

    inputs, outputs, cache = op.forward(backend, "small", r)
    outputs = list(outputs)
    if op.backward is not None:
        upstream, grads = op.backward(outputs, cache, r)
        inputs, outputs = list(inputs) + list(upstream), outputs + list(grads)
    outputs = [o for o in outputs if o is not None]
    assert_unchanged([before[id(a)] for a in inputs], inputs, name)
    assert_fresh(outputs, inputs, name)
    for i, out in enumerate(outputs):
        for j, other in enumerate(outputs[:i]):
            assert not np.shares_memory(out, other), f"{name}: outputs {j} and {i} share memory"


@pytest.mark.parametrize("name", WITH_BACKWARD)
def test_writing_into_outputs_changes_no_gradient(name, backend):
    """The caller owns what a forward pass returns (``h *= mask``, ``y += 1``)."""
    op = _op(name, backend)
    _, outputs, cache = op.forward(backend, "small", randomizer(2, np.float64))
    _, expected = op.backward(list(outputs), cache, randomizer(3, np.float64))
    expected = [None if g is None else g.copy() for g in expected]
    _, outputs, cache = op.forward(backend, "small", randomizer(2, np.float64))
    for y in outputs:
        assert y.flags.writeable, f"{name} ({backend}): an output is read-only"
        y *= 0.0
        y += 7.0
    _, got = op.backward(list(outputs), cache, randomizer(3, np.float64))
    for g, e in zip(got, expected):
        if e is not None:
            np.testing.assert_array_equal(g, e, err_msg=f"{name} ({backend}): a write into an output changed a "
                                                        "gradient")


def _poison_heap():
    """Leave NaN bit patterns in memory the allocator will hand out again."""
    blocks = [np.full(n, np.nan) for n in (16, 64, 256, 1024, 4096, 16384) for _ in range(40)]
    blocks += [np.full(2**20, np.nan, np.float32) for _ in range(4)]
    del blocks
    gc.collect()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_no_uninitialised_memory_in_outputs(name, backend, dtype):
    op = _op(name, backend)
    for size in ("small", "ones"):
        _poison_heap()
        _, outputs = op.run(backend, size, dtype=dtype)
        for k, out in enumerate(outputs):
            assert np.isfinite(out).all(), f"{name} ({size}, {np.dtype(dtype).name}): output {k} is not finite"


# --------------------------------------------------------------------------- reruns and threads

# the backends whose results docs/KERNELS.md promises not to depend on the thread count
# (numba's parallel loops and BLAS calls split sums by thread)
THREAD_INDEPENDENT = ("cython", "reference")


@pytest.mark.parametrize("name", NAMES)
def test_reruns_give_the_same_bits(name, backend):
    op = _op(name, backend)
    counts = (2, 2, 1) if backend in THREAD_INDEPENDENT else (2, 2)
    results = []
    for threads in counts:
        fastnn.set_num_threads(threads)
        results.append(op.run(backend, "small", seed=3, dtype=np.float32)[1])
    for other in results[1:]:
        for k, (a, b) in enumerate(zip(results[0], other)):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} output {k}")


def test_concurrent_calls_agree_with_serial():
    """Different ops and backends at once from Python threads, as a web server might."""
    from helpers import backend_kernels
    jobs = [(name, be, seed) for name in NAMES for be in BACKENDS
            if set(OPS[name].kernels) <= backend_kernels(be) for seed in (0, 1)]
    serial = {job: OPS[job[0]].run(job[1], seed=job[2])[1] for job in jobs}
    order = jobs * 3
    np.random.default_rng(0).shuffle(order)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        futures = [(job, pool.submit(OPS[job[0]].run, job[1], "small", job[2])) for job in order]
        for job, future in futures:
            for k, (got, want) in enumerate(zip(future.result()[1], serial[job])):
                assert_close(got, want, what=f"{job} output {k} from a thread")


def test_every_benchmark_case_of_an_op_in_the_table_names_its_entry():
    """The bench cases that time one of the table's ops are named by exactly that
    op's entry (its `bench`), and the kernel a case's group times is one of the
    entry's; cases of ops outside the table (an optimizer step, a whole network) are
    named by none."""
    from fastnn import _backends
    from fastnn.bench import suite
    owner = {}
    for op in OPS.values():
        for case_id in op.bench:
            assert case_id in suite.CASES, f"op {op.name!r} names an unknown bench case {case_id!r}"
            assert case_id not in owner, f"bench case {case_id} is named by {owner[case_id]!r} and {op.name!r}"
            owner[case_id] = op.name
            assert suite.GROUP_KERNEL[suite.CASES[case_id].group] in op.kernels, (op.name, case_id)
    in_table = {_backends._FAMILY[k] for op in OPS.values() for k in op.kernels}
    for case in suite.SUITE:
        kernel = suite.GROUP_KERNEL.get(case.group)
        if kernel is not None and _backends._FAMILY.get(kernel) in in_table:
            assert case.id in owner, f"bench case {case.id} times {kernel}, but no op of the table names it"
