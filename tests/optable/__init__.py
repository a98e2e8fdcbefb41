"""One table of fastnn's ops for the generic tests.

Each family module here (``conv.py``, ``pool.py``, ...) lists its ops as ``Op``
entries in ``OPS``; the generic tests (``test_ops.py``, ``test_robustness.py``,
``test_outputs.py``, ``test_package.py``) run every entry: against the reference on
every backend and dtype at odd sizes, numerical gradients, PyTorch, inputs never
modified, outputs fresh and owned by the caller, reruns and threads, the
signatures the contract fixes. Adding an op is one entry here plus its kernels;
the family's own test file keeps only what is specific to it.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

# the sizes every op runs at: a few of everything; a batch of zero examples; every
# dimension that may be 1 equal to 1
SIZES = ("small", "empty", "ones")

# the family modules of this package, in the order of docs/API.md
FAMILIES = ("conv", "pool", "bmm", "recurrent", "dense", "loss", "norm", "dropout", "embedding")


@dataclass(frozen=True)
class Op:
    """One op of the table.

    name      -- the op's name in test ids ("conv", "lstm_seq", ...).
    api       -- {public function: [its positional parameters, as API.md / TRAINING.md fix them]}
                 for the functions this op calls.
    kernels   -- the kernel names a backend must provide to run it.
    forward   -- forward(backend, size, rand) -> (inputs, outputs, cache): one forward call
                 at `size` (one of SIZES) on inputs drawn with rand(shape, scale=1.0), which
                 returns arrays of the dtype under test, or with rand.rng (a Generator); an
                 input computed from draws goes through rand.keep(array). `cache` is
                 whatever backward needs.
    backward  -- backward(outputs, cache, rand) -> (upstream, gradients): the backward
                 call, on upstream gradients drawn with rand; None for an op without one.
    gradcheck -- gradcheck(backend, rng) -> (loss, {name: float64 array}, {name: analytic
                 gradient}): a scalar loss() of the op's arrays (perturbed in place by the
                 check) and the op's own gradients of it. When None and the op has a
                 backward, the check is derived from forward and backward (see
                 derived_gradcheck), with grad_of saying which input each gradient is of.
    grad_of   -- for each gradient backward returns, the index of the input it is the
                 gradient of (None: not an input's); None means the i-th gradient is the
                 i-th input's.
    torch     -- torch(backend, dtype, rng) -> [(what, got, want)]: fastnn's results next
                 to PyTorch's on the same data; None where PyTorch has no counterpart.
    tol32     -- (rtol, atol) of the float32 comparison with the reference, when the op
                 needs looser ones than helpers.tolerances (long reductions).
    bench     -- the ids of the fastnn-bench cases (PERF.md) that time this op.
    """
    name: str
    api: dict
    kernels: tuple
    forward: Callable
    backward: Optional[Callable] = None
    gradcheck: Optional[Callable] = None
    torch: Optional[Callable] = None
    tol32: Optional[tuple] = None
    grad_of: Optional[tuple] = None
    bench: tuple = ()

    def run(self, backend, size="small", seed=0, dtype=np.float64):
        """(inputs, outputs) of one full forward + backward run; None outputs (a
        gradient that does not exist, as db without a bias) are dropped."""
        rand = randomizer(seed, dtype)
        inputs, outputs, cache = self.forward(backend, size, rand)
        outputs = list(outputs)
        if self.backward is not None:
            upstream, grads = self.backward(outputs, cache, rand)
            inputs = list(inputs) + list(upstream)
            outputs += list(grads)
        return list(inputs), [o for o in outputs if o is not None]

    def derived_gradcheck(self, backend, rng):
        """The gradient check of a forward + backward pair at size "small" in float64:
        loss = sum over the outputs of <upstream gradient, output>, whose gradients
        are what backward returns for those upstream gradients. loss() reruns the
        forward on the very arrays the first run drew (replayed in the same order), so
        the check's in-place perturbations reach it."""
        first = recorder(randomizer(int(rng.integers(2**31)), np.float64))
        inputs, outputs, cache = self.forward(backend, "small", first)
        upstream, grads = self.backward(list(outputs), cache, randomizer(int(rng.integers(2**31)), np.float64))

        def loss():
            _, outs, _ = self.forward(backend, "small", replayer(first.drawn))
            return sum(float(np.sum(u * o)) for u, o in zip(upstream, outs))

        arrays, analytic = {}, {}
        for k, grad in enumerate(grads):
            index = k if self.grad_of is None else self.grad_of[k]
            if grad is None or index is None:
                continue
            arrays[f"input{index}"] = inputs[index]
            analytic[f"input{index}"] = grad
        return loss, arrays, analytic


def randomizer(seed, dtype):
    """rand(shape, scale=1.0): standard normal draws of `dtype` from one seeded generator;
    rand.rng is that generator, for other draws (class indices, probabilities), and
    rand.keep(array) is how an entry hands over an input it derived from draws (so
    that the tests can snapshot and replay it like a draw)."""
    rng = np.random.default_rng(seed)

    def rand(shape, scale=1.0):
        return np.array(rng.standard_normal(shape) * scale, dtype=dtype)  # an array even for shape ()
    rand.rng = rng
    rand.keep = lambda value: value
    return rand


class _Methods:
    """A generator whose draws go through `hook(method name, args, kwargs)`."""

    def __init__(self, hook):
        self._hook = hook

    def __getattr__(self, name):
        return lambda *args, **kwargs: self._hook(name, args, kwargs)


def recorder(rand, on_draw=None):
    """rand, remembering in .drawn everything it and its .rng draw, in order (and
    passing each array to on_draw)."""
    drawn = []

    def keep(value):
        drawn.append(value)
        if on_draw is not None and isinstance(value, np.ndarray):
            on_draw(value)
        return value

    def record(shape, scale=1.0):
        return keep(rand(shape, scale))
    record.rng = _Methods(lambda name, args, kwargs: keep(getattr(rand.rng, name)(*args, **kwargs)))
    record.keep = keep
    record.drawn = drawn
    return record


def replayer(drawn):
    """A rand that hands out `drawn` again, the very objects, in the same order."""
    items = iter(drawn)

    def replay(shape, scale=1.0):
        return next(items)
    replay.rng = _Methods(lambda name, args, kwargs: next(items))
    replay.keep = lambda value: next(items)
    return replay


def _gather():
    table = {}
    for family in FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        for op in module.OPS:
            assert op.name not in table, f"op {op.name!r} is in the table twice"
            table[op.name] = op
    return table


OPS = _gather()


def public_api():
    """{public function: positional parameters} of every op in the table."""
    api = {}
    for op in OPS.values():
        api.update(op.api)
    return api
