"""fastnn.optim: SGD / RMSprop / Adam over fused in-place kernels, and the schedules.

Each optimizer is checked against the course's formulas written out here by hand,
against the reference kernels over several steps on every backend (and every CPU
tier of the cython kernels), and against torch.optim; then the state_dict round trip
through np.savez / np.load(allow_pickle=False), in-place updates, untouched
gradients, NaN/Inf, thread-count independence and every bad input.
"""
import math

import numpy as np
import pytest

import fastnn
from fastnn.optim import SGD, Adam, RMSprop, schedules
from helpers import VARIANTS, assert_close, assert_unchanged, make_variant, need, snapshot

OPTIM_KERNELS = ("sgd_step", "rmsprop_step", "adam_step")

# (name, class, keyword arguments) of every update rule the kernels have
CONFIGS = [
    ("sgd", SGD, {"lr": 0.1}),
    ("sgd_decay", SGD, {"lr": 0.1, "weight_decay": 0.05}),
    ("momentum", SGD, {"lr": 0.1, "momentum": 0.9}),
    ("momentum_decay", SGD, {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.01}),
    ("nesterov", SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("nesterov_decay", SGD, {"lr": 0.1, "momentum": 0.7, "nesterov": True, "weight_decay": 0.02}),
    ("rmsprop", RMSprop, {"lr": 0.01, "beta": 0.9}),
    ("rmsprop_decay", RMSprop, {"lr": 0.01, "beta": 0.8, "eps": 1e-6, "weight_decay": 0.03}),
    ("adam", Adam, {"lr": 0.01}),
    ("adam_decay", Adam, {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.05}),
]
CONFIG_IDS = [c[0] for c in CONFIGS]

# odd shapes: a scalar, an empty array, one element, several chunks of 8192 with a
# ragged tail, and a tail shorter than any vector
SHAPES = [(3, 5), (), (0, 4), (1,), (7, 2, 3), (20011,), (9,)]


@pytest.fixture(autouse=True)
def _kernels(request):
    if "backend" in request.fixturenames:
        need(request.getfixturevalue("backend"), *OPTIM_KERNELS)


def arrays(rng, shapes, dtypes):
    return [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def run(cls, kwargs, params, grad_list, backend):
    """Copies of params after one step per entry of grad_list; (params, optimizer)."""
    params = [p.copy() for p in params]
    opt = cls(params, **kwargs, backend=backend)
    for grads in grad_list:
        opt.step(grads)
    return params, opt


def grad_steps(rng, params, steps=4):
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


# --------------------------------------------------------------------------- the course's formulas by hand

def test_course_momentum_by_hand(backend):
    """v = beta v + (1 - beta) dW, W -= lr v, over two steps."""
    w = np.array([1.0, 2.0, -3.0])
    g = np.array([0.5, -1.0, 2.0])
    opt = SGD([w], 0.1, momentum=0.9, backend=backend)
    opt.step([g])
    v1 = 0.1 * g
    np.testing.assert_allclose(w, [1.0, 2.0, -3.0] - 0.1 * v1, rtol=1e-15)
    opt.step([g])
    v2 = 0.9 * v1 + 0.1 * g
    np.testing.assert_allclose(w, [1.0, 2.0, -3.0] - 0.1 * v1 - 0.1 * v2, rtol=1e-15)


def test_course_nesterov_by_hand(backend):
    """W -= lr (beta v + (1 - beta) dW) with v already updated."""
    w = np.array([0.5, -0.25])
    g = np.array([2.0, 4.0])
    SGD([w], 0.1, momentum=0.5, nesterov=True, backend=backend).step([g])
    v = 0.5 * g
    np.testing.assert_allclose(w, [0.5, -0.25] - 0.1 * (0.5 * v + 0.5 * g), rtol=1e-15)


def test_course_rmsprop_by_hand(backend):
    w = np.array([1.0, -1.0])
    g = np.array([3.0, -4.0])
    opt = RMSprop([w], 0.01, beta=0.9, eps=1e-8, backend=backend)
    opt.step([g])
    s = 0.1 * g**2
    want = np.array([1.0, -1.0]) - 0.01 * g / (np.sqrt(s) + 1e-8)
    np.testing.assert_allclose(w, want, rtol=1e-15)


def test_course_adam_first_step_is_lr_times_sign(backend):
    """Bias correction makes v^ = dW and s^ = dW^2 at t = 1: the step is lr * sign(dW)
    (to eps / |dW|)."""
    w = np.array([0.3, -0.7, 1.1, 0.0])
    g = np.array([5.0, -0.02, 1e-3, -7.5])
    opt = Adam([w], 0.01, backend=backend)
    opt.step([g])
    assert opt.t == 1
    w0 = np.array([0.3, -0.7, 1.1, 0.0])
    np.testing.assert_allclose(w, w0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14)
    np.testing.assert_allclose(w, w0 - 0.01 * np.sign(g), rtol=0, atol=0.01 * 1e-8 / 1e-3)


def test_course_adam_two_steps_by_hand(backend):
    b1, b2, lr, eps = 0.9, 0.999, 0.001, 1e-8
    w0 = np.array([1.0, -2.0])
    g1, g2 = np.array([0.1, 0.2]), np.array([-0.3, 0.4])
    w = w0.copy()
    opt = Adam([w], lr, backend=backend)
    opt.step([g1])
    opt.step([g2])
    v = (1 - b1) * g1
    s = (1 - b2) * g1**2
    want = w0 - lr * (v / (1 - b1)) / (np.sqrt(s / (1 - b2)) + eps)
    v = b1 * v + (1 - b1) * g2
    s = b2 * s + (1 - b2) * g2**2
    want = want - lr * (v / (1 - b1**2)) / (np.sqrt(s / (1 - b2**2)) + eps)
    np.testing.assert_allclose(w, want, rtol=1e-14)


def test_weight_decay_is_added_to_the_gradient(backend):
    """weight_decay = lam is plain SGD on dW + lam W."""
    w = np.array([2.0, -4.0])
    g = np.array([0.5, 0.5])
    SGD([w], 0.1, weight_decay=0.25, backend=backend).step([g])
    np.testing.assert_allclose(w, [2.0 - 0.1 * (0.5 + 0.5), -4.0 - 0.1 * (0.5 - 1.0)], rtol=1e-15)


# --------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_matches_reference_over_several_steps(backend, name, cls, kwargs, dtype, rng):
    params = arrays(rng, SHAPES, [dtype] * len(SHAPES))
    steps = grad_steps(rng, params)
    got, opt = run(cls, kwargs, params, steps, backend)
    want, ref = run(cls, kwargs, params, steps, "reference")
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == dtype and g.shape == SHAPES[i]
        assert_close(g, w, dtype, what=f"{name} params[{i}]")
    for key, value in ref.state_dict().items():
        if isinstance(value, np.ndarray):
            assert_close(opt.state_dict()[key], value, dtype, what=f"{name} state {key}")


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_mixed_dtypes_one_call_per_dtype(backend, name, cls, kwargs, rng):
    """float32 and float64 parameters side by side: each keeps its dtype and its own
    rounding (gradients of the other dtype are converted)."""
    dtypes = [np.float32, np.float64, np.float32, np.float64]
    shapes = [(4, 3), (5,), (9000,), (2, 2)]
    params = arrays(rng, shapes, dtypes)
    steps = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]  # float64 grads throughout
    got, _ = run(cls, kwargs, params, steps, backend)
    want, _ = run(cls, kwargs, params, steps, "reference")
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == dtypes[i]
        assert_close(g, w, dtypes[i], what=f"{name} params[{i}]")


def test_cython_every_tier_matches_reference(tier, rng):
    need("cython", *OPTIM_KERNELS)
    for name, cls, kwargs in CONFIGS:
        for dtype in (np.float32, np.float64):
            params = arrays(rng, [(37,), (8195,), (3, 3)], [dtype] * 3)
            steps = grad_steps(rng, params, 3)
            got, _ = run(cls, kwargs, params, steps, "cython")
            want, _ = run(cls, kwargs, params, steps, "reference")
            for g, w in zip(got, want):
                assert_close(g, w, dtype, what=f"{name} {np.dtype(dtype).name} on {tier}")


def test_dict_params_and_schedule_driven_lr(backend, rng):
    """A params dict (the course's parameters["W1"]) and lr set between epochs."""
    shapes = {"W1": (4, 3), "b1": (4,), "W2": (1, 4), "b2": (1,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    start = {k: v.copy() for k, v in params.items()}
    schedule = schedules.inverse_time(0.1, 1.0)
    opt = Adam(params, schedule(0), backend=backend)
    w = {k: v.copy() for k, v in start.items()}
    ref = Adam([w[k] for k in shapes], schedule(0), backend="reference")
    for epoch in range(3):
        opt.lr = schedule(epoch)
        ref.lr = schedule(epoch)
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        opt.step(grads)
        ref.step([grads[k] for k in shapes])
    for k in shapes:
        assert_close(params[k], w[k], np.float64, what=k)
    assert set(opt.params) == set(shapes) and all(opt.params[k] is params[k] for k in shapes)


def test_zero_state_starts_afresh(backend, rng):
    params = arrays(rng, [(5, 4), (6,)], [np.float64] * 2)
    opt = Adam(params, 0.01, backend=backend)
    for grads in grad_steps(rng, params, 3):
        opt.step(grads)
    opt.zero_state()
    assert opt.t == 0
    after = [p.copy() for p in params]
    grads = grad_steps(rng, params, 2)
    for g in grads:
        opt.step(g)
    want, _ = run(Adam, {"lr": 0.01}, after, grads, backend)
    for p, w in zip(params, want):
        np.testing.assert_array_equal(p, w)


# --------------------------------------------------------------------------- against PyTorch

def _torch_run(torch, make, params, steps, prime=None):
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    opt = make(tparams)
    if prime is not None:
        prime(opt, tparams)
    for grads in steps:
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(np.asarray(g, dtype=tp.detach().numpy().dtype).copy())
        opt.step()
    return [tp.detach().numpy() for tp in tparams]


TORCH_DTYPES = {"float32": [np.float32] * 3, "float64": [np.float64] * 3,
                "mixed": [np.float32, np.float64, np.float32]}
TORCH_SHAPES = [(17, 3), (9000,), (5,)]


@pytest.mark.parametrize("dtypes", list(TORCH_DTYPES), ids=list(TORCH_DTYPES))
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_momentum_matches_torch_with_scaled_lr(backend, nesterov, weight_decay, dtypes, rng):
    """PyTorch's buffer b = beta b + dW (dampening 0) is the course's v / (1 - beta) from
    the first step on, so the course's SGD(lr) is torch's SGD(lr * (1 - beta))."""
    torch = pytest.importorskip("torch")
    beta, lr = 0.9, 0.1
    params = arrays(rng, TORCH_SHAPES, TORCH_DTYPES[dtypes])
    steps = grad_steps(rng, params, 5)
    got, _ = run(SGD, {"lr": lr, "momentum": beta, "nesterov": nesterov, "weight_decay": weight_decay},
                 params, steps, backend)
    want = _torch_run(torch, lambda ps: torch.optim.SGD(ps, lr=lr * (1 - beta), momentum=beta, dampening=0,
                                                        nesterov=nesterov, weight_decay=weight_decay),
                      params, steps)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, g.dtype, what=f"params[{i}]")


@pytest.mark.parametrize("dtypes", list(TORCH_DTYPES), ids=list(TORCH_DTYPES))
def test_sgd_momentum_matches_torch_dampening_from_a_primed_buffer(backend, dtypes, rng):
    """torch's SGD(dampening=beta) is the course's rule except at its first step (it
    sets b = dW undamped): with its buffer primed by the course's v after one step,
    every later step agrees."""
    torch = pytest.importorskip("torch")
    beta, lr = 0.8, 0.05
    params = arrays(rng, TORCH_SHAPES, TORCH_DTYPES[dtypes])
    first, *later = grad_steps(rng, params, 5)
    after_first, opt = run(SGD, {"lr": lr, "momentum": beta}, params, [first], backend)
    velocity = [opt.state_dict()[f"v.{i}"] for i in range(len(params))]
    got = [p.copy() for p in after_first]
    opt2 = SGD(got, lr, momentum=beta, backend=backend)
    opt2.load_state_dict(opt.state_dict())
    for grads in later:
        opt2.step(grads)

    def prime(topt, tparams):
        for tp, v in zip(tparams, velocity):
            topt.state[tp]["momentum_buffer"] = torch.from_numpy(v.copy())

    want = _torch_run(torch, lambda ps: torch.optim.SGD(ps, lr=lr, momentum=beta, dampening=beta),
                      after_first, later, prime)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, g.dtype, what=f"params[{i}]")


@pytest.mark.parametrize("dtypes", list(TORCH_DTYPES), ids=list(TORCH_DTYPES))
@pytest.mark.parametrize("weight_decay", [0.0, 0.02])
def test_rmsprop_matches_torch(backend, weight_decay, dtypes, rng):
    torch = pytest.importorskip("torch")
    params = arrays(rng, TORCH_SHAPES, TORCH_DTYPES[dtypes])
    steps = grad_steps(rng, params, 5)
    got, _ = run(RMSprop, {"lr": 0.01, "beta": 0.95, "eps": 1e-6, "weight_decay": weight_decay},
                 params, steps, backend)
    want = _torch_run(torch, lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.95, eps=1e-6,
                                                            weight_decay=weight_decay), params, steps)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, g.dtype, what=f"params[{i}]")


@pytest.mark.parametrize("dtypes", list(TORCH_DTYPES), ids=list(TORCH_DTYPES))
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [False, True])
def test_adam_matches_torch(backend, foreach, weight_decay, dtypes, rng):
    torch = pytest.importorskip("torch")
    params = arrays(rng, TORCH_SHAPES, TORCH_DTYPES[dtypes])
    steps = grad_steps(rng, params, 6)
    got, _ = run(Adam, {"lr": 0.01, "beta1": 0.85, "beta2": 0.995, "eps": 1e-7, "weight_decay": weight_decay},
                 params, steps, backend)
    want = _torch_run(torch, lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.85, 0.995), eps=1e-7,
                                                         weight_decay=weight_decay, foreach=foreach),
                      params, steps)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, g.dtype, what=f"params[{i}]")


# --------------------------------------------------------------------------- schedules

def test_schedule_course_example():
    """The notes' example: lr0 = 0.2, decay_rate = 1 gives 0.1 at epoch 1, then
    0.067, 0.05, 0.04 (printed there as 0.67, 0.5, 0.4)."""
    sched = schedules.inverse_time(0.2, 1)
    assert sched(0) == 0.2
    assert sched(1) == pytest.approx(0.1, rel=1e-15)
    assert sched(2) == pytest.approx(0.2 / 3, rel=1e-15)
    assert sched(3) == pytest.approx(0.05, rel=1e-15)
    assert sched(4) == pytest.approx(0.04, rel=1e-15)


def test_schedule_values():
    assert schedules.exponential(0.2)(3) == pytest.approx(0.2 * 0.857375, rel=1e-15)  # 0.95^3
    assert schedules.exponential(1.0, base=0.5)(4) == pytest.approx(0.0625, rel=1e-15)
    assert schedules.exponential(0.3)(0) == 0.3
    assert schedules.inverse_sqrt(0.1, 2)(4) == pytest.approx(0.1, rel=1e-15)
    assert schedules.inverse_sqrt(0.1, 1)(1) == pytest.approx(0.1, rel=1e-15)
    assert schedules.inverse_sqrt(0.5, 3)(9) == pytest.approx(0.5, rel=1e-15)
    stairs = schedules.step(0.1, 0.5, 10)
    assert [stairs(e) for e in (0, 9, 10, 19, 20, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025],
                                                                        rel=1e-15)
    assert schedules.inverse_time(1.0, 0.5)(2.5) == pytest.approx(1 / 2.25, rel=1e-15)  # fractional epochs
    assert all(type(f(1)) is float for f in (schedules.inverse_time(1, 1), schedules.exponential(1),
                                             schedules.inverse_sqrt(1, 1), schedules.step(1, 0.5, 2)))
    assert repr(schedules.step(0.1, 0.5, 10)) == "step(lr0=0.1, drop=0.5, every=10)"


@pytest.mark.parametrize("make,args,match", [
    (schedules.inverse_time, (-0.1, 1), r"inverse_time: lr0 must be a finite number in \[0, inf\), got -0.1"),
    (schedules.inverse_time, (0.1, -1), r"inverse_time: decay_rate .* got -1"),
    (schedules.inverse_time, (float("nan"), 1), r"inverse_time: lr0 .* got nan"),
    (schedules.exponential, (0.1, 0.0), r"exponential: base must be a finite number in \(0, 1\], got 0.0"),
    (schedules.exponential, (0.1, 1.5), r"exponential: base .* got 1.5"),
    (schedules.inverse_sqrt, (0.1, 0), r"inverse_sqrt: k must be a finite number in \(0, inf\), got 0"),
    (schedules.step, (0.1, 0.5, 0), r"step: every must be >= 1, got 0"),
    (schedules.step, (0.1, 0.5, 2.5), r"step: every must be an int, got 2.5"),
    (schedules.step, (0.1, 2.0, 3), r"step: drop .* got 2.0"),
    (schedules.step, ("0.1", 0.5, 3), r"step: lr0 must be a real number, got '0.1'"),
])
def test_schedule_bad_arguments(make, args, match):
    with pytest.raises(ValueError, match=match):
        make(*args)


@pytest.mark.parametrize("epoch", [-1, -0.5, float("nan"), float("inf"), True, "3", None])
def test_schedule_bad_epoch(epoch):
    with pytest.raises(ValueError, match=r"inverse_time\(lr0=0.1, decay_rate=1.0\): epoch must be a finite "
                                         r"number >= 0, got"):
        schedules.inverse_time(0.1, 1)(epoch)


@pytest.mark.parametrize("epoch", [0, 0.5])
def test_inverse_sqrt_needs_epoch_at_least_one(epoch):
    with pytest.raises(ValueError, match=r"inverse_sqrt\(lr0=0.1, k=2.0\): epoch must be a finite number >= 1, "
                                         rf"got {epoch}"):
        schedules.inverse_sqrt(0.1, 2)(epoch)


# --------------------------------------------------------------------------- state_dict

@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_continues_identically(backend, name, cls, kwargs, as_dict, rng, tmp_path):
    """Train, save the state with np.savez, load it with allow_pickle=False into a new
    optimizer over copies of the parameters: both continue bit for bit alike."""
    shapes = [(4, 5), (3,), (2, 0)]
    dtypes = [np.float32, np.float64, np.float32]
    params = arrays(rng, shapes, dtypes)
    keys = ["W1", "b1", "empty"]
    holder = dict(zip(keys, params)) if as_dict else params
    opt = cls(holder, **kwargs, backend=backend)
    for grads in grad_steps(rng, params, 3):
        opt.step(dict(zip(keys, grads)) if as_dict else grads)
    opt.lr = kwargs["lr"] / 2  # a schedule moved it: the state carries it
    state = opt.state_dict()
    assert all(isinstance(v, (np.ndarray, float, int, bool, str)) for v in state.values())
    np.savez(tmp_path / "opt.npz", **state)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as loaded:
        copies = [p.copy() for p in params]
        other = cls(dict(zip(keys, copies)) if as_dict else copies, lr=1.0, backend=backend)
        other.load_state_dict(loaded)
    assert other.lr == opt.lr
    for grads in grad_steps(rng, params, 3):
        opt.step(dict(zip(keys, grads)) if as_dict else grads)
        other.step(dict(zip(keys, grads)) if as_dict else grads)
    for p, c in zip(params, copies):
        assert p.dtype == c.dtype
        np.testing.assert_array_equal(p, c)


def test_state_dict_contents_and_independence(backend, rng):
    params = {"W": rng.standard_normal((2, 3)).astype(np.float32), "b": rng.standard_normal(2)}
    opt = Adam(params, 0.01, beta1=0.8, backend=backend)
    opt.step({"W": np.ones((2, 3)), "b": np.ones(2)})
    state = opt.state_dict()
    assert set(state) == {"optimizer", "lr", "beta1", "beta2", "eps", "weight_decay", "t",
                          "v.W", "s.W", "v.b", "s.b"}
    assert state["optimizer"] == "Adam" and state["t"] == 1 and state["beta1"] == 0.8
    assert state["v.W"].dtype == np.float32 and state["s.b"].dtype == np.float64
    # (1 - 0.8) * 1 and (1 - 0.999) * 1
    np.testing.assert_allclose(state["v.W"], np.full((2, 3), 0.2, np.float32), rtol=1e-6)
    np.testing.assert_allclose(state["s.b"], np.full(2, 0.001), rtol=1e-12)
    state["v.W"][...] = 99  # a copy: the optimizer's state is not touched
    assert not np.any(opt.state_dict()["v.W"] == 99)
    mine = opt.state_dict()
    opt.load_state_dict(mine)
    mine["s.b"][...] = 5  # load_state_dict copies too
    assert not np.any(opt.state_dict()["s.b"] == 5)
    sgd = SGD([np.zeros(3)], 0.1, backend=backend).state_dict()
    assert set(sgd) == {"optimizer", "lr", "momentum", "nesterov", "weight_decay"}  # no momentum, no state


def test_load_state_dict_across_backends(backend, rng):
    """The state is plain arrays: saved on one backend, continued on another."""
    params = arrays(rng, [(6, 7), (5,)], [np.float64] * 2)
    opt = Adam([p.copy() for p in params], 0.01, backend="reference")
    first = grad_steps(rng, params, 2)
    for grads in first:
        opt.step(grads)
    copies = [p.copy() for p in opt.params]
    other = Adam(copies, backend=backend)
    other.load_state_dict(opt.state_dict())
    later = grad_steps(rng, params, 2)
    for grads in later:
        opt.step(grads)
        other.step(grads)
    for a, b in zip(opt.params, copies):
        assert_close(b, a, np.float64)


def _bad_state(opt, **changes):
    state = opt.state_dict()
    for k, v in changes.items():
        if v is KeyError:
            del state[k]
        else:
            state[k] = v
    return state


@pytest.mark.parametrize("change,error,match", [
    ({"optimizer": "SGD"}, ValueError, r"Adam.load_state_dict: state is not the state of a Adam optimizer "
                                       r"\(its 'optimizer' entry is 'SGD'\)"),
    ({"optimizer": KeyError}, ValueError, r"its 'optimizer' entry is None"),
    ({"beta2": KeyError}, ValueError, r"Adam.load_state_dict: state lacks the entries \['beta2'\]"),
    ({"v.0": KeyError}, ValueError, r"Adam.load_state_dict: state does not match these parameters: missing "
                                    r"entries \['v.0'\]"),
    ({"v.7": np.zeros(3)}, ValueError, r"unexpected entries \['v.7'\]"),
    ({"s.1": np.zeros((2, 2))}, ValueError, r"Adam.load_state_dict: state\['s.1'\] has shape \(2, 2\) but its "
                                            r"parameter has shape \(3,\)"),
    ({"s.0": -np.ones((2, 3))}, ValueError, r"state\['s.0'\] holds negative values"),
    ({"v.0": np.zeros((2, 3), complex)}, TypeError, r"state\['v.0'\] must hold real numbers, got dtype complex128"),
    ({"t": 2.5}, ValueError, r"Adam.load_state_dict: t \(the step count\) must be an int >= 0, got 2.5"),
    ({"t": -1}, ValueError, r"t \(the step count\) must be an int >= 0, got -1"),
    ({"beta1": 1.0}, ValueError, r"Adam.load_state_dict: beta1 must be a finite number in \[0, 1\), got 1.0"),
    ({"lr": np.array(-1.0)}, ValueError, r"Adam.load_state_dict: lr must be a finite number in \[0, inf\), "
                                         r"got -1.0"),
])
def test_load_state_dict_rejects_bad_states_and_changes_nothing(change, error, match, rng):
    params = [rng.standard_normal((2, 3)), rng.standard_normal(3)]
    opt = Adam(params, 0.01)
    opt.step([np.ones((2, 3)), np.ones(3)])
    before = opt.state_dict()
    with pytest.raises(error, match=match):
        opt.load_state_dict(_bad_state(opt, **change))
    after = opt.state_dict()
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_load_state_dict_checks_its_argument():
    opt = SGD([np.zeros(2)], 0.1, momentum=0.5)
    with pytest.raises(TypeError, match=r"SGD.load_state_dict: state must be a dict \(as state_dict returns\), "
                                        r"got list"):
        opt.load_state_dict([1, 2])
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: nesterov=True needs a momentum > 0, got "
                                         r"momentum=0.0"):
        opt.load_state_dict({**opt.state_dict(), "momentum": 0.0, "nesterov": True, "v.0": np.zeros(2)})
    # a loaded momentum brings its velocity
    plain = SGD([np.zeros(2)], 0.1)
    plain.load_state_dict(opt.state_dict())
    assert plain.momentum == 0.5 and "v.0" in plain.state_dict()


# --------------------------------------------------------------------------- in place, untouched gradients

@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_params_updated_in_place_grads_untouched(backend, name, cls, kwargs, rng):
    params = arrays(rng, [(3, 4), (5,)], [np.float32, np.float64])
    ids = [id(p) for p in params]
    addresses = [p.__array_interface__["data"][0] for p in params]
    before = [p.copy() for p in params]
    # float64 gradients for the float32 parameter, and a transposed view
    grads = [rng.standard_normal((4, 3)).T, rng.standard_normal(5).astype(np.float32)]
    kept = snapshot(*grads)
    opt = cls(params, **kwargs, backend=backend)
    opt.step(grads)
    assert [id(p) for p in opt.params] == ids
    assert [p.__array_interface__["data"][0] for p in params] == addresses
    assert all(not np.array_equal(p, b) for p, b in zip(params, before))
    assert_unchanged(kept, grads, what=name)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_odd_gradient_arrays(backend, variant, rng):
    """Any array-like gradient of the right shape and a real dtype gives the result of
    the plain array converted to the parameter's dtype, and is not modified."""
    w = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    odd, _ = make_variant(variant, g)
    kept = snapshot(odd)
    want, _ = run(Adam, {"lr": 0.1}, [w], [[np.asarray(odd, dtype=np.float64)]], backend)
    got, _ = run(Adam, {"lr": 0.1}, [w], [[odd]], backend)
    np.testing.assert_array_equal(got[0], want[0])
    if variant != "list":
        assert_unchanged(kept, [odd], what=variant)


def test_a_gradient_sharing_memory_with_a_parameter(backend):
    """A gradient that is (a view of) a parameter is read as it was before the step."""
    w = np.arange(6.0)
    u = np.arange(6.0) + 10
    want, _ = run(SGD, {"lr": 0.5}, [w, u], [[w.copy(), w[::-1].copy()]], "reference")
    SGD([w, u], 0.5, backend=backend).step([w, w[::-1]])
    np.testing.assert_array_equal(w, want[0])
    np.testing.assert_array_equal(u, want[1])


# --------------------------------------------------------------------------- NaN / Inf

@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_as_the_reference(backend, name, cls, kwargs, dtype):
    w = np.array([1.0, np.inf, -np.inf, np.nan, 2.0, 0.5, -1.0, 3.0, 4.0], dtype=dtype)
    g = np.array([np.nan, 1.0, -1.0, 1.0, np.inf, -np.inf, 0.0, 1e20, 1e200 if dtype == np.float64 else 3e19],
                 dtype=dtype)
    with np.errstate(all="ignore"):
        want, _ = run(cls, kwargs, [w], [[g], [np.ones_like(g)]], "reference")
        got, _ = run(cls, kwargs, [w], [[g], [np.ones_like(g)]], backend)
    assert_close(got[0], want[0], dtype, what=name)
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(want[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_overflowing_square_gives_no_step(backend, dtype):
    """|dW| so large that dW^2 overflows: s = inf and v^ / inf = 0, not NaN."""
    big = 1e20 if dtype == np.float32 else 1e160
    w = np.array([1.5, -2.5], dtype=dtype)
    with np.errstate(over="ignore"):
        Adam([w], 0.1, backend=backend).step([np.array([big, -big], dtype=dtype)])
    np.testing.assert_array_equal(w, np.array([1.5, -2.5], dtype=dtype))


def test_infinite_weight_without_decay_stays_infinite(backend):
    w = np.array([np.inf, -np.inf])
    SGD([w], 0.1, momentum=0.9, backend=backend).step([np.ones(2)])
    np.testing.assert_array_equal(w, [np.inf, -np.inf])


# --------------------------------------------------------------------------- threads

@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_one_and_two_threads_give_the_same_bits(compiled_backend, name, cls, kwargs, rng):
    need(compiled_backend, *OPTIM_KERNELS)
    shapes = [(30011,), (17,), (250, 201)]  # above the serial cut-off, several chunks
    for dtype in (np.float32, np.float64):
        params = arrays(rng, shapes, [dtype] * 3)
        steps = grad_steps(rng, params, 3)
        results = []
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            results.append(run(cls, kwargs, params, steps, compiled_backend)[0])
        for a, b in zip(*results):
            assert a.tobytes() == b.tobytes(), f"{name} {np.dtype(dtype).name}"


# --------------------------------------------------------------------------- bad arguments

def _ok():
    return [np.zeros((2, 3)), np.zeros(4, np.float32)]


def _readonly():
    a = np.zeros(3)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("params,error,match", [
    (np.zeros(3), TypeError, r"Adam: params must be a list \(or dict\) of arrays, got a single ndarray; wrap one "
                             r"array in a list"),
    (5, TypeError, r"Adam: params must be a list \(or dict\) of arrays, got int"),
    ([], ValueError, r"Adam: params is empty"),
    ([np.zeros(2), [1.0, 2.0]], TypeError, r"Adam: params\[1\] must be a NumPy array \(the optimizer updates it "
                                           r"in place\), got list"),
    ([np.zeros(2, np.int64)], TypeError, r"Adam: params\[0\] must be a float32 or float64 array in native byte "
                                         r"order, got dtype int64; it is updated in place"),
    ([np.zeros(2, np.float16)], TypeError, r"params\[0\] must be a float32 or float64 .* got dtype float16"),
    ([np.zeros(2, np.complex128)], TypeError, r"got dtype complex128"),
    ([np.zeros(2, ">f4")], TypeError, r"got dtype >f4"),
    ([_readonly()], ValueError, r"Adam: params\[0\] is read-only; the optimizer updates its parameters in place"),
    ([np.zeros((4, 6))[:, ::2]], ValueError, r"Adam: params\[0\] \(shape \(4, 3\), strides \(48, 16\)\) is not a "
                                             r"C-contiguous aligned array; it is updated in place, so a contiguous "
                                             r"copy would silently not be the caller's array"),
    ([np.zeros((3, 2)).T], ValueError, r"params\[0\] \(shape \(2, 3\), strides \(8, 16\)\) is not a C-contiguous"),
    ({"W": np.zeros(2), 3: np.zeros(2)}, TypeError, r"Adam: the keys of a params dict must be strings .* got 3"),
    ({"W": np.zeros(2), "b": [0.0]}, TypeError, r"Adam: params\['b'\] must be a NumPy array"),
])
def test_bad_params(params, error, match):
    with pytest.raises(error, match=match):
        Adam(params)


def test_params_that_share_memory():
    a = np.zeros(10)
    with pytest.raises(ValueError, match=r"SGD: params\[0\] and params\[2\] share memory; each parameter must be "
                                         r"its own array"):
        SGD([a, np.zeros(3), a], 0.1)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        SGD([a[:6], a[4:]], 0.1)
    SGD([a[:5], a[5:]], 0.1)  # neighbours, not overlapping


@pytest.mark.parametrize("make,match", [
    (lambda p: SGD(p, -0.1), r"SGD: lr must be a finite number in \[0, inf\), got -0.1"),
    (lambda p: SGD(p, float("inf")), r"SGD: lr must be a finite number in \[0, inf\), got inf"),
    (lambda p: SGD(p, "0.1"), r"SGD: lr must be a real number, got '0.1'"),
    (lambda p: SGD(p, 0.1, momentum=1.0), r"SGD: momentum must be a finite number in \[0, 1\), got 1.0"),
    (lambda p: SGD(p, 0.1, momentum=-0.5), r"SGD: momentum must be a finite number in \[0, 1\), got -0.5"),
    (lambda p: SGD(p, 0.1, momentum=0.9, nesterov=1), r"SGD: nesterov must be True or False, got 1"),
    (lambda p: SGD(p, 0.1, nesterov=True), r"SGD: nesterov=True needs a momentum > 0, got momentum=0.0"),
    (lambda p: SGD(p, 0.1, weight_decay=-1e-4), r"SGD: weight_decay must be a finite number in \[0, inf\), "
                                                r"got -0.0001"),
    (lambda p: RMSprop(p, beta=1.5), r"RMSprop: beta must be a finite number in \[0, 1\), got 1.5"),
    (lambda p: RMSprop(p, eps=-1e-8), r"RMSprop: eps must be a finite number in \[0, inf\), got -1e-08"),
    (lambda p: RMSprop(p, lr=float("nan")), r"RMSprop: lr must be a finite number in \[0, inf\), got nan"),
    (lambda p: Adam(p, beta1=1.0), r"Adam: beta1 must be a finite number in \[0, 1\), got 1.0"),
    (lambda p: Adam(p, beta2=-0.1), r"Adam: beta2 must be a finite number in \[0, 1\), got -0.1"),
    (lambda p: Adam(p, eps=None), r"Adam: eps must be a real number, got None"),
    (lambda p: Adam(p, weight_decay=True), r"Adam: weight_decay must be a real number, got True"),
    (lambda p: Adam(p, backend="cuda"), r"Adam: unknown or unavailable backend 'cuda'; available backends"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make(_ok())


@pytest.mark.parametrize("grads,error,match", [
    ({"a": 1}, TypeError, r"Adam.step: params is a list, so grads must be a list or tuple of the same length, "
                          r"got dict"),
    ([np.zeros((2, 3))], ValueError, r"Adam.step: grads has 1 arrays but params has 2"),
    ([np.zeros((3, 2)), np.zeros(4)], ValueError, r"Adam.step: grads\[0\] has shape \(3, 2\) but params\[0\] has "
                                                  r"shape \(2, 3\)"),
    ([np.zeros((2, 3)), np.zeros((4, 1), np.float32)], ValueError, r"grads\[1\] has shape \(4, 1\) but params\[1\] "
                                                                   r"has shape \(4,\)"),
    ([np.zeros((2, 3)), None], TypeError, r"Adam.step: grads\[1\] must be an array, got None"),
    ([np.zeros((2, 3)), np.zeros(4, complex)], TypeError, r"Adam.step: grads\[1\] must hold real numbers .*"
                                                          r"complex128"),
    ([np.zeros((2, 3)), ["a", "b", "c", "d"]], TypeError, r"grads\[1\] must hold real numbers"),
    ([np.zeros((2, 3)), [[1.0], [1.0, 2.0]]], TypeError, r"Adam.step: grads\[1\] cannot be read as a numeric "
                                                         r"array"),
])
def test_bad_grads(grads, error, match):
    params = _ok()
    before = [p.copy() for p in params]
    opt = Adam(params)
    with pytest.raises(error, match=match):
        opt.step(grads)
    assert opt.t == 0
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_bad_grads_for_a_dict():
    opt = SGD({"W": np.zeros(2), "b": np.zeros(1)}, 0.1)
    with pytest.raises(TypeError, match=r"SGD.step: params is a dict, so grads must be a dict with the same keys, "
                                        r"got list"):
        opt.step([np.zeros(2), np.zeros(1)])
    with pytest.raises(ValueError, match=r"SGD.step: grads must have the keys of params; missing \['b'\], "
                                         r"unexpected \['db'\]"):
        opt.step({"W": np.zeros(2), "db": np.zeros(1)})
    with pytest.raises(ValueError, match=r"SGD.step: grads\['b'\] has shape \(2,\) but params\['b'\] has shape"):
        opt.step({"W": np.zeros(2), "b": np.zeros(2)})


@pytest.mark.parametrize("lr,match", [(-1.0, r"must be a finite number in \[0, inf\), got -1.0"),
                                      ("fast", r"must be a real number, got 'fast'"),
                                      (None, r"must be a real number, got None")])
def test_bad_lr_attribute_is_caught_at_step(lr, match):
    opt = Adam(_ok())
    opt.lr = lr
    with pytest.raises(ValueError, match=r"Adam.step: lr \(the Adam.lr attribute\) " + match):
        opt.step(_ok())


def test_hyperparameters_are_read_only_lr_is_not():
    opt = RMSprop(_ok(), 0.01, beta=0.5)
    assert (opt.lr, opt.beta, opt.eps, opt.weight_decay) == (0.01, 0.5, 1e-8, 0.0)
    opt.lr = 0.001
    assert opt.lr == 0.001
    with pytest.raises(AttributeError):
        opt.beta = 0.9
    assert repr(opt) == "RMSprop(lr=0.001, beta=0.5, eps=1e-08, weight_decay=0.0; 2 arrays)"
    assert math.isclose(Adam(_ok()).lr, 1e-3) and Adam(_ok()).beta2 == 0.999
