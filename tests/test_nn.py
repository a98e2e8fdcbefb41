"""fastnn.nn: layers, containers, initialisers, losses and fastnn.gradcheck.

Gradients are checked the course's way (two-sided differences in float64, relative
difference < 1e-7 where the layer is smooth); expected values elsewhere are written
out by hand or computed with plain NumPy formulas, never by the code under test.
"""
import json

import numpy as np
import pytest

import fastnn
from fastnn import nn

F64 = np.float64
TOL = 1e-7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # a gradient check makes thousands of tiny op calls; on a busy 2-core machine
    # each parallel region can wait milliseconds for a thread (grouped convolution:
    # 15-50 ms a call), so these run on one thread; the ops' threading is tested elsewhere
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(before)


def rand(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def nonzero_biases(layer, seed=1):
    """Random non-zero biases (a zero bias hides swapped-bias bugs)."""
    rng = np.random.default_rng(seed)
    layer.set_params({k: rng.standard_normal(v.shape) for k, v in layer.params.items() if k.endswith("b")},
                     strict=False)
    return layer


# ---------------------------------------------------------------- gradcheck itself

def test_gradcheck_function_form_matches_known_gradient():
    # J = sum(a**2 * b), dJ/da = 2 a b, dJ/db = a**2
    def f(arrays):
        a, b = arrays
        return float(np.sum(a ** 2 * b)), [2 * a * b, a ** 2]

    a, b = rand((3, 2)), rand((3, 2), 1)
    assert fastnn.gradcheck(f, [a, b]) < TOL


def test_gradcheck_detects_a_wrong_gradient():
    def f(arrays):
        (a,) = arrays
        return float(np.sum(a ** 3)), [2 * a ** 2]  # wrong: should be 3 a**2

    assert fastnn.gradcheck(f, [rand(5)]) > 0.1


def test_gradcheck_returns_details_and_leaves_inputs_alone():
    a = rand((2, 3))
    before = a.copy()
    out = fastnn.gradcheck(lambda arrs: (float(np.sum(np.sin(arrs[0]))), [np.cos(arrs[0])]), [a],
                           return_details=True)
    assert out["difference"] < TOL
    np.testing.assert_allclose(out["numeric"]["inputs[0]"], np.cos(a), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(a, before)


def test_gradcheck_rejects_float32_and_bad_returns():
    with pytest.raises(TypeError, match="float64"):
        fastnn.gradcheck(lambda arrs: (0.0, [arrs[0]]), [np.ones(3, np.float32)])
    with pytest.raises(ValueError, match="grads"):
        fastnn.gradcheck(lambda arrs: (0.0, [np.ones(2)]), [np.ones(3)])
    with pytest.raises(TypeError, match="float64"):
        fastnn.gradcheck(nn.Linear(2, 2), rand((3, 2)))  # a float32 layer
    with pytest.raises(TypeError, match="callable"):
        fastnn.gradcheck(3, [np.ones(2)])


def test_gradcheck_restores_parameters_exactly():
    layer = nonzero_biases(nn.Linear(3, 2, "tanh", rng=0, dtype=F64))
    before = {k: v.copy() for k, v in layer.params.items()}
    fastnn.gradcheck(layer, rand((4, 3)))
    for k, v in layer.params.items():
        np.testing.assert_array_equal(v, before[k])


# ---------------------------------------------------------------- dense layers and activations

@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu", "sigmoid", "tanh"])
def test_linear_gradcheck(activation):
    layer = nonzero_biases(nn.Linear(4, 3, activation, rng=0, dtype=F64))
    assert fastnn.gradcheck(layer, rand((5, 4), 2)) < TOL


def test_linear_forward_is_the_formula_and_takes_leading_axes():
    layer = nonzero_biases(nn.Linear(4, 3, "relu", rng=0, dtype=F64))
    x = rand((2, 5, 4), 3)
    w, b = layer.params["w"], layer.params["b"]
    np.testing.assert_allclose(layer.forward(x), np.maximum(x @ w.T + b, 0), rtol=1e-12, atol=1e-12)
    assert fastnn.gradcheck(layer, x) < TOL


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Flatten()],
                         ids=lambda l: type(l).__name__)
def test_parameterless_layer_gradcheck(layer):
    x = rand((3, 2, 4), 4) + 0.05  # values well away from relu's kink at 0
    x[np.abs(x) < 0.01] = 0.5
    assert fastnn.gradcheck(layer, x) < TOL


def test_activation_values():
    x = np.array([[-2.0, -0.5, 0.0, 1.5]])
    np.testing.assert_array_equal(nn.ReLU().forward(x), [[0, 0, 0, 1.5]])
    np.testing.assert_allclose(nn.LeakyReLU(0.1).forward(x), [[-0.2, -0.05, 0, 1.5]])
    np.testing.assert_allclose(nn.Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(nn.Tanh().forward(x), np.tanh(x), rtol=1e-12)
    f = nn.Flatten()
    assert f.forward(np.zeros((2, 3, 4, 5))).shape == (2, 60)
    assert f.backward(np.ones((2, 60))).shape == (2, 3, 4, 5)


# ---------------------------------------------------------------- initialisers

def test_initialisers_follow_the_course_scales():
    n_in, n_out = 400, 300
    he = nn.Linear(n_in, n_out, init="he", rng=0, dtype=F64).params["w"]
    xav = nn.Linear(n_in, n_out, init="xavier", rng=0, dtype=F64).params["w"]
    glorot = nn.Linear(n_in, n_out, init="glorot_uniform", rng=0, dtype=F64).params["w"]
    zeros = nn.Linear(n_in, n_out, init="zeros", rng=0).params["w"]
    assert abs(he.std() - np.sqrt(2 / n_in)) < 0.02 * np.sqrt(2 / n_in)
    assert abs(xav.std() - np.sqrt(1 / n_in)) < 0.02 * np.sqrt(1 / n_in)
    limit = np.sqrt(6 / (n_in + n_out))
    assert glorot.max() <= limit and glorot.min() >= -limit and glorot.max() > 0.95 * limit
    assert not zeros.any() and zeros.dtype == np.float32
    # the course's He draw: randn(n_out, n_in) * sqrt(2 / n_in) from the same generator
    expected = np.random.default_rng(7).standard_normal((3, 5)) * np.sqrt(2 / 5)
    np.testing.assert_array_equal(nn.Linear(5, 3, init="he", rng=7, dtype=F64).params["w"], expected)
    assert not nn.Linear(5, 3).params["b"].any()


def test_callable_init_and_errors():
    layer = nn.Linear(3, 2, init=lambda shape, fan_in, fan_out, rng, dtype: np.full(shape, fan_in + fan_out))
    np.testing.assert_array_equal(layer.params["w"], np.full((2, 3), 5.0, np.float32))
    with pytest.raises(ValueError, match="init"):
        nn.Linear(3, 2, init="uniformish")
    with pytest.raises(ValueError, match="shape"):
        nn.Linear(3, 2, init=lambda shape, *a: np.zeros(4))


def test_same_seed_same_weights_and_generator_accepted():
    a = nn.Linear(6, 4, rng=3).params["w"]
    b = nn.Linear(6, 4, rng=np.random.default_rng(3)).params["w"]
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- containers, naming, params

def test_sequential_names_children_and_params():
    net = nn.Sequential(nn.Linear(4, 5, "relu"), nn.Dropout(0.9), nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    assert net.names == ["linear1", "dropout1", "linear2", "relu1", "linear3"]
    assert list(net.params) == ["linear1.w", "linear1.b", "linear2.w", "linear2.b", "linear3.w", "linear3.b"]
    assert net["linear2"] is net[2]
    head = net[2:]
    assert head.names == ["linear2", "relu1", "linear3"] and head.params["linear3.w"] is net.params["linear3.w"]
    named = nn.Sequential(("body", nn.Sequential(nn.Linear(2, 2), nn.Tanh())), ("head", nn.Linear(2, 1)))
    assert list(named.params) == ["body.linear1.w", "body.linear1.b", "head.w", "head.b"]
    with pytest.raises(ValueError, match="twice"):
        nn.Sequential(("a", nn.ReLU()), ("a", nn.Tanh()))
    with pytest.raises(ValueError, match="dots"):
        nn.Sequential(("a.b", nn.ReLU()))
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(nn.ReLU(), "relu")


def test_params_are_the_same_arrays_every_step_and_optimizer_updates_them():
    net = nn.Sequential(nn.Linear(3, 4, "tanh", rng=0), nn.Linear(4, 2, rng=1))
    params = net.params
    opt = fastnn.optim.SGD(params, lr=0.1)
    before = {k: v.copy() for k, v in params.items()}
    x = rand((5, 3)).astype(np.float32)
    loss = nn.SoftmaxCrossEntropy()
    for _ in range(2):
        loss.forward(net.forward(x), np.array([0, 1, 0, 1, 1]))
        net.backward(loss.backward())
        grads = net.grads
        assert set(grads) == set(params)
        for k in params:
            assert net.params[k] is params[k]
            assert grads[k].shape == params[k].shape
        opt.step(grads)
    assert any(not np.array_equal(before[k], params[k]) for k in params)


def test_set_params_copies_in_place_and_validates():
    net = nn.Sequential(nn.Linear(3, 2, rng=0))
    w = net.params["linear1.w"]
    new = {"linear1.w": np.arange(6.0).reshape(2, 3), "linear1.b": np.array([1.0, -1.0])}
    net.set_params(new)
    assert net.params["linear1.w"] is w and w.dtype == np.float32
    np.testing.assert_array_equal(w, new["linear1.w"])
    with pytest.raises(ValueError, match="missing"):
        net.set_params({"linear1.w": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="unknown"):
        net.set_params({**new, "linear9.w": np.zeros(1)})
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        net.set_params({"linear1.w": np.zeros((3, 2)), "linear1.b": np.zeros(2)})
    np.testing.assert_array_equal(w, new["linear1.w"])  # a failed load changes nothing


def test_sequential_gradcheck_with_softmax_cross_entropy():
    net = nn.Sequential(nn.Linear(4, 6, "tanh", rng=0, dtype=F64), nn.Linear(6, 3, rng=1, dtype=F64))
    nonzero_biases(net)
    assert fastnn.gradcheck(net, rand((5, 4)), loss=nn.SoftmaxCrossEntropy(), target=np.array([0, 2, 1, 2, 0])) < TOL


# ---------------------------------------------------------------- config round trip

def roundtrip(layer):
    cfg = layer.config()
    text = json.dumps(cfg)
    rebuilt = nn.from_config(json.loads(text))
    assert type(rebuilt) is type(layer)
    assert rebuilt.config() == cfg
    assert {k: v.shape for k, v in rebuilt.params.items()} == {k: v.shape for k, v in layer.params.items()}
    return rebuilt


def test_config_round_trip_dense():
    net = nn.Sequential(nn.Linear(4, 5, "leaky_relu", alpha=0.2, init="he", dtype=F64), nn.Dropout(0.8),
                        nn.Sigmoid(), nn.Tanh(), nn.ReLU(), nn.LeakyReLU(0.3), nn.Flatten(),
                        nn.Linear(5, 2, bias=False))
    rebuilt = roundtrip(net)
    rebuilt.set_params(net.state_dict())
    x = rand((3, 4))
    np.testing.assert_array_equal(rebuilt.forward(x, training=False), net.forward(x, training=False))


def test_from_config_rejects_unknown_types():
    with pytest.raises(ValueError, match="unknown layer type"):
        nn.from_config({"type": "os.system"})
    with pytest.raises(ValueError, match="type"):
        nn.from_config({"n_in": 3})
    with pytest.raises(TypeError):
        nn.from_config("Linear")


# ---------------------------------------------------------------- losses

def test_losses_values_by_hand():
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    y = np.array([1, 2])
    ce = nn.SoftmaxCrossEntropy()
    lse = np.log(np.exp(z).sum(axis=1))
    expected = np.mean(lse - z[[0, 1], y])
    assert ce.forward(z, y) == pytest.approx(expected, rel=1e-12)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(ce.backward(), (p - onehot) / 2, rtol=1e-12)

    t = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bce = nn.SigmoidCrossEntropy()
    s = 1 / (1 + np.exp(-z))
    assert bce.forward(z, t) == pytest.approx(np.mean(-(t * np.log(s) + (1 - t) * np.log(1 - s))), rel=1e-12)
    np.testing.assert_allclose(bce.backward(), (s - t) / 6, rtol=1e-12)

    mse = nn.MSE()
    assert mse.forward(z, t) == pytest.approx(np.mean((z - t) ** 2), rel=1e-12)
    np.testing.assert_allclose(mse.backward(), 2 * (z - t) / 6, rtol=1e-12)


def test_losses_errors():
    with pytest.raises(RuntimeError, match="before forward"):
        nn.SoftmaxCrossEntropy().backward()
    with pytest.raises(ValueError, match="y_true"):
        nn.SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="y_true"):
        nn.MSE().forward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="float"):
        nn.MSE().forward(np.zeros((2, 3), int), np.zeros((2, 3)))


# ---------------------------------------------------------------- errors and inputs

def test_linear_errors_name_the_layer_and_values():
    layer = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"Linear.forward: x has 5 input features .*n_in = 4"):
        layer.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="Linear.forward: x must be a float array, got dtype int64"):
        layer.forward(np.zeros((2, 4), np.int64))
    with pytest.raises(RuntimeError, match="Linear.backward called before forward"):
        nn.Linear(4, 3).backward(np.zeros((2, 3)))
    layer.forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4\).*\(2, 3\)"):
        layer.backward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="activation"):
        nn.Linear(4, 3, "softplus")
    with pytest.raises(TypeError, match="n_in"):
        nn.Linear(4.0, 3)
    with pytest.raises(ValueError, match="dtype"):
        nn.Linear(4, 3, dtype=np.int32)
    with pytest.raises(ValueError, match="keep_prob"):
        nn.Dropout(0.0)
    with pytest.raises(ValueError, match="keep_prob"):
        nn.Dropout(1.5)


def test_inputs_are_not_modified():
    net = nn.Sequential(nn.Linear(4, 4, "relu", rng=0), nn.Dropout(0.5, rng=0), nn.Flatten(), nn.Linear(4, 2))
    x = rand((3, 4)).astype(np.float32)
    x_before = x.copy()
    y = net.forward(x)
    dy = np.ones_like(y)
    dy_before = dy.copy()
    net.backward(dy)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    y2 = nn.Flatten().forward(x)
    y2 += 1  # writing into an output leaves the input alone
    np.testing.assert_array_equal(x, x_before)


def test_dtype_follows_the_layer():
    x = rand((2, 3))
    assert nn.Linear(3, 2).forward(x).dtype == np.float32
    assert nn.Linear(3, 2, dtype=F64).forward(x.astype(np.float32)).dtype == np.float64
    assert nn.ReLU().forward(x.astype(np.float32)).dtype == np.float32


# ---------------------------------------------------------------- train / eval

def test_dropout_identity_in_eval_and_inverted_in_training():
    x = np.ones((200, 50))
    d = nn.Dropout(0.8, rng=0)
    np.testing.assert_array_equal(d.forward(x, training=False), x)
    d.eval()
    np.testing.assert_array_equal(d.forward(x), x)
    np.testing.assert_array_equal(d.backward(np.full_like(x, 2.0)), np.full_like(x, 2.0))
    d.train()
    y = d.forward(x)
    # the course's mask from the same generator: rand < keep_prob, divided by keep_prob
    mask = np.random.default_rng(0).random(x.shape) < 0.8
    np.testing.assert_allclose(y, mask / 0.8, rtol=1e-15)
    np.testing.assert_allclose(d.backward(np.ones_like(x)), mask / 0.8, rtol=1e-15)


def test_eval_propagates_through_containers():
    net = nn.Sequential(nn.Sequential(nn.Dropout(0.5)), nn.Linear(2, 2))
    net.eval()
    assert all(not layer.training for layer in net.layers_iter())
    net.train()
    assert all(layer.training for layer in net.layers_iter())


def test_dropout_gradcheck_with_a_fixed_mask():
    net = nn.Sequential(nn.Linear(4, 5, "tanh", rng=0, dtype=F64), nn.Dropout(0.6, rng=5),
                        nn.Linear(5, 2, rng=1, dtype=F64))
    assert fastnn.gradcheck(net, rand((6, 4))) < TOL


# ---------------------------------------------------------------- convolution, pooling, batch norm

def tie_free(shape, seed=0):
    """Distinct values (no ties for max pooling), shuffled."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-2, 2, n)).reshape(shape)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=(2, 3), stride=(2, 1)),
                                    dict(kernel_size=2, dilation=2, padding="same", activation="tanh"),
                                    dict(kernel_size=1, groups=2)], ids=["pad", "stride", "dil-same-tanh", "groups"])
def test_conv2d_gradcheck(layout, kwargs):
    layer = nonzero_biases(nn.Conv2d(2, 4, layout=layout, rng=0, dtype=F64, **kwargs))
    x = rand((2, 5, 4, 2) if layout == "NHWC" else (2, 2, 5, 4), 3)
    assert fastnn.gradcheck(layer, x) < TOL


def test_conv2d_weight_layouts_and_values():
    nhwc = nonzero_biases(nn.Conv2d(3, 2, (2, 3), rng=0, dtype=F64))
    assert nhwc.params["w"].shape == (2, 3, 3, 2)
    nchw = nn.Conv2d(3, 2, (2, 3), layout="NCHW", dtype=F64)
    assert nchw.params["w"].shape == (2, 3, 2, 3)
    x = rand((1, 4, 5, 3), 5)
    y = nhwc.forward(x)
    w, b = nhwc.params["w"], nhwc.params["b"]
    # the course's conv_single_step at output (0, 1, 2, 1)
    expected = np.sum(x[0, 1:3, 2:5, :] * w[:, :, :, 1]) + b[1]
    assert y.shape == (1, 3, 3, 2)
    assert y[0, 1, 2, 1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2, 1),
                                   nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
                                   nn.MaxPool2d(2, layout="NCHW"), nn.GlobalAvgPool2d(), nn.GlobalAvgPool2d("NCHW")],
                         ids=lambda l: repr(l))
def test_pool_gradcheck(layer):
    x = tie_free((2, 5, 4, 3), 6)
    assert fastnn.gradcheck(layer, x) < TOL


def test_pool_values():
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(nn.MaxPool2d(2).forward(x)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(nn.AvgPool2d(2).forward(x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    g = nn.GlobalAvgPool2d()
    np.testing.assert_array_equal(g.forward(x), [[7.5]])
    np.testing.assert_array_equal(g.backward(np.array([[16.0]])), np.ones((1, 4, 4, 1)))


@pytest.mark.parametrize("shape,layout", [((6, 3), "NHWC"), ((3, 2, 3, 3), "NHWC"), ((3, 3, 2, 3), "NCHW")])
def test_batchnorm_gradcheck(shape, layout):
    layer = nn.BatchNorm(3, layout=layout, dtype=F64)
    layer.set_params({"gamma": np.array([0.5, 1.5, -2.0]), "beta": np.array([0.1, -0.3, 0.7])}, strict=False)
    assert fastnn.gradcheck(layer, rand(shape, 8)) < TOL


def test_batchnorm_running_averages_are_the_course_formula():
    bn = nn.BatchNorm(2, momentum=0.8, dtype=F64)
    rm, rv = bn.buffers["running_mean"], bn.buffers["running_var"]
    mean, var = np.zeros(2), np.ones(2)  # the course's starting point
    for seed in range(3):
        x = rand((4, 3, 2, 2), seed, scale=2.0) + 5.0
        y = bn.forward(x)
        flat = x.reshape(-1, 2)
        mu = flat.mean(axis=0)
        sigma2 = ((flat - mu) ** 2).mean(axis=0)  # biased, the course's
        mean = 0.8 * mean + 0.2 * mu
        var = 0.8 * var + 0.2 * sigma2
        np.testing.assert_allclose(y, (x - mu) / np.sqrt(sigma2 + 1e-5), rtol=1e-10, atol=1e-12)
    assert bn.buffers["running_mean"] is rm and bn.buffers["running_var"] is rv
    np.testing.assert_allclose(rm, mean, rtol=1e-12)
    np.testing.assert_allclose(rv, var, rtol=1e-12)
    # eval: the running statistics, and they stay put
    x = rand((2, 3, 2, 2), 9)
    bn.eval()
    y = bn.forward(x)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10)
    np.testing.assert_allclose(rm, mean, rtol=1e-12)
    with pytest.raises(RuntimeError, match="eval mode"):
        bn.backward(np.ones_like(y))
    assert list(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm(2)).buffers) == ["bn1.running_mean", "bn1.running_var"]


def test_whole_small_network_gradcheck():
    # conv -> BN -> relu -> pool -> flatten -> linear + softmax cross-entropy
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False, rng=0, dtype=F64), nn.BatchNorm(3, dtype=F64),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 4, rng=1, dtype=F64))
    nonzero_biases(net)
    net.set_params({"bn1.gamma": np.array([1.2, 0.7, -0.9]), "bn1.beta": np.array([0.2, -0.1, 0.3])}, strict=False)
    x = rand((5, 4, 4, 2), 10)
    y = np.array([0, 3, 1, 2, 1])
    details = fastnn.gradcheck(net, x, loss=nn.SoftmaxCrossEntropy(), target=y, return_details=True)
    assert details["difference"] < TOL
    assert set(details["per_array"]) == {"x", "conv1.w", "bn1.gamma", "bn1.beta", "linear1.w", "linear1.b"}
    for name, diff in details["per_array"].items():
        assert diff < 1e-6, name


def test_residual_blocks_gradcheck_and_naming():
    identity = nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, rng=0, dtype=F64), nn.ReLU(),
                                         nn.Conv2d(3, 3, 3, padding=1, rng=1, dtype=F64)))
    conv_block = nn.Residual(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=2, dtype=F64),
                                           nn.BatchNorm(4, dtype=F64), nn.ReLU(),
                                           nn.Conv2d(4, 4, 3, padding=1, rng=3, dtype=F64)),
                             shortcut=nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, rng=4, dtype=F64),
                                                    nn.BatchNorm(4, dtype=F64)))
    net = nn.Sequential(identity, conv_block, nn.GlobalAvgPool2d(), nn.Linear(4, 2, dtype=F64))
    nonzero_biases(net)
    assert "block1.main.conv1.w" in net.params and "block2.shortcut.conv1.w" in net.params
    assert "block2.shortcut.bn1.running_var" in net.buffers
    assert fastnn.gradcheck(net, rand((2, 4, 4, 3), 11)) < TOL
    x = rand((2, 4, 4, 3), 12)
    # identity block by hand: relu(main(x) + x)
    np.testing.assert_allclose(identity.forward(x), np.maximum(identity.main.forward(x) + x, 0), rtol=1e-12)
    with pytest.raises(ValueError, match="shortcut"):
        nn.Residual(nn.Conv2d(3, 4, 1, dtype=F64)).forward(x)


def test_config_round_trip_conv_network():
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding="same", activation="relu", layout="NCHW"),
                        nn.MaxPool2d(2, layout="NCHW"), nn.AvgPool2d(3, 1, 1, count_include_pad=False, layout="NCHW"),
                        nn.BatchNorm(6, momentum=0.95, eps=1e-3, layout="NCHW"),
                        nn.Residual(nn.Conv2d(6, 6, (3, 1), padding=((1, 1), (0, 0)), layout="NCHW"), activation=None),
                        nn.GlobalAvgPool2d("NCHW"), nn.Linear(6, 3))
    rebuilt = roundtrip(net)
    rebuilt.set_params(net.state_dict())
    x = rand((2, 1, 8, 8), 13).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), net.forward(x))
    assert rebuilt.buffers.keys() == net.buffers.keys()


def test_conv_pool_bn_errors():
    with pytest.raises(ValueError, match=r"Conv2d.forward: x has 3 channels .* c_in = 2 \(layout NHWC\)"):
        nn.Conv2d(2, 4, 3).forward(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d.forward: x must be 4-D, got shape \(5, 5, 2\)"):
        nn.Conv2d(2, 4, 3).forward(np.zeros((5, 5, 2), np.float32))
    with pytest.raises(ValueError, match="Conv2d.forward: conv2d"):
        nn.Conv2d(2, 4, 7).forward(np.zeros((1, 5, 5, 2), np.float32))  # output smaller than 1
    with pytest.raises(ValueError, match="groups=3 must divide"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="layout"):
        nn.Conv2d(4, 6, 3, layout="NWHC")
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(4, 6, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.MaxPool2d(0)
    with pytest.raises(ValueError, match=r"BatchNorm.forward: x has 4 channels .* c = 3"):
        nn.BatchNorm(3).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="BatchNorm.forward: x must be 2-D or 4-D"):
        nn.BatchNorm(3).forward(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm(3, momentum=1.5)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.MaxPool2d(2).backward(np.zeros((1, 1, 1, 1)))


# ---------------------------------------------------------------- embedding and recurrent layers

@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_recurrent_gradcheck(cls, return_sequences):
    layer = nonzero_biases(cls(3, 4, return_sequences, rng=0, dtype=F64))
    assert fastnn.gradcheck(layer, rand((2, 5, 3), 14)) < TOL


def test_rnn_relu_gradcheck_and_value_by_hand():
    layer = nonzero_biases(nn.RNN(2, 3, activation="relu", rng=0, dtype=F64))
    x = rand((2, 4, 2), 15)
    assert fastnn.gradcheck(layer, x) < TOL
    tanh = nonzero_biases(nn.RNN(2, 3, rng=1, dtype=F64))
    w, b = tanh.params["w"], tanh.params["b"]
    h = np.zeros((2, 3))
    expected = []
    for t in range(4):  # the course's rnn_cell_forward, batch-major
        h = np.tanh(np.concatenate([h, x[:, t]], axis=1) @ w.T + b)
        expected.append(h)
    np.testing.assert_allclose(tanh.forward(x), np.stack(expected, axis=1), rtol=1e-12)


def test_lstm_value_by_hand_and_last_state():
    layer = nonzero_biases(nn.LSTM(2, 3, return_sequences=False, rng=0, dtype=F64))
    w, b = layer.params["w"], layer.params["b"]
    x = rand((2, 4, 2), 16)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h, c = np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(4):
        z = np.concatenate([h, x[:, t]], axis=1) @ w.T + b
        f, u, cc, o = sig(z[:, :3]), sig(z[:, 3:6]), np.tanh(z[:, 6:9]), sig(z[:, 9:])
        c = f * c + u * cc
        h = o * np.tanh(c)
    y = layer.forward(x)
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y, h, rtol=1e-12)


def test_embedding_and_char_lstm_network_gradcheck():
    emb = nn.Embedding(7, 3, rng=0, dtype=F64)
    ids = np.array([[1, 4, 4], [6, 0, 1]])
    y = emb.forward(ids)
    np.testing.assert_array_equal(y, emb.params["w"][ids])
    assert emb.backward(np.ones((2, 3, 3))) is None
    np.testing.assert_array_equal(emb.grads["w"][[0, 1, 4, 6]], [[1] * 3, [2] * 3, [2] * 3, [1] * 3])
    assert fastnn.gradcheck(emb, ids) < TOL

    net = nn.Sequential(nn.Embedding(7, 3, rng=0, dtype=F64), nn.LSTM(3, 4, rng=1, dtype=F64),
                        nn.TimeDistributed(nn.Linear(4, 7, dtype=F64)))
    nonzero_biases(net)
    assert list(net.params) == ["embedding1.w", "lstm1.w", "lstm1.b", "timedistributed1.w", "timedistributed1.b"]
    target = np.random.default_rng(17).integers(0, 7, (2, 5))
    ids = np.random.default_rng(18).integers(0, 7, (2, 5))
    assert fastnn.gradcheck(net, ids, loss=nn.SoftmaxCrossEntropy(), target=target) < TOL


def test_time_distributed_equals_per_step_application():
    inner = nonzero_biases(nn.Linear(3, 2, "tanh", rng=0, dtype=F64))
    td = nn.TimeDistributed(inner)
    x = rand((4, 5, 3), 19)
    y = td.forward(x)
    for t in range(5):
        np.testing.assert_allclose(y[:, t], np.tanh(x[:, t] @ inner.params["w"].T + inner.params["b"]), rtol=1e-12)
    assert fastnn.gradcheck(td, x) < TOL
    td_conv = nn.TimeDistributed(nn.Sequential(nn.Conv2d(1, 2, 2, rng=0, dtype=F64), nn.Flatten()))
    assert td_conv.forward(rand((2, 3, 3, 3, 1))).shape == (2, 3, 8)
    assert fastnn.gradcheck(td_conv, rand((2, 3, 3, 3, 1), 20)) < TOL


def test_recurrent_config_round_trip_and_errors():
    net = nn.Sequential(nn.Embedding(5, 4, init="he"), nn.GRU(4, 3), nn.RNN(3, 3, activation="relu"),
                        nn.LSTM(3, 2, return_sequences=False), nn.TimeDistributed(nn.Linear(2, 2)))
    rebuilt = roundtrip(net)
    assert rebuilt["lstm1"].return_sequences is False and rebuilt["rnn1"].activation == "relu"
    with pytest.raises(ValueError, match=r"LSTM.forward: x has 5 features .* n_x = 3"):
        nn.LSTM(3, 2).forward(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"GRU.forward: x must be 3-D"):
        nn.GRU(3, 2).forward(np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match="Embedding.forward: ids must be integers"):
        nn.Embedding(5, 2).forward(np.zeros(3))
    with pytest.raises(ValueError, match="Embedding.forward: embedding_forward"):
        nn.Embedding(5, 2).forward(np.array([1, 5]))
    with pytest.raises(ValueError, match="activation"):
        nn.RNN(3, 2, activation="sigmoid")
    with pytest.raises(ValueError, match="RNN.forward: rnn_forward: .*time step"):
        nn.RNN(3, 2).forward(np.zeros((2, 0, 3), np.float32))


def test_clear_cache_drops_the_activations_and_backward_then_asks_for_forward():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, activation="relu"), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    y = net.forward(np.ones((1, 4, 4, 1), np.float32))
    net.clear_cache()
    assert all(getattr(layer, "_cache", None) is None for layer in net.layers_iter())
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(np.ones_like(y))


# ---------------------------------------------------------------- dtypes, odd inputs, empty batches

def test_float32_network_keeps_float32_everywhere():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm(3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Dropout(0.9, rng=0), nn.Linear(12, 4, "sigmoid"))
    y = net.forward(rand((2, 4, 4, 2)))  # float64 data is cast to the layers' float32
    assert y.dtype == np.float32
    net.backward(np.ones_like(y))
    assert all(g.dtype == np.float32 for g in net.grads.values())
    assert all(b.dtype == np.float32 for b in net.buffers.values())
    seq = nn.Sequential(nn.Embedding(5, 3), nn.GRU(3, 2), nn.TimeDistributed(nn.Linear(2, 5)))
    out = seq.forward(np.array([[0, 4, 2]]))
    assert out.dtype == np.float32 and out.shape == (1, 3, 5)


def test_non_contiguous_and_read_only_inputs():
    layer = nonzero_biases(nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=F64))
    base = rand((2, 2, 5, 5), 21)
    x = base.transpose(0, 2, 3, 1)  # NHWC view of NCHW data: not C-contiguous
    x_c = np.ascontiguousarray(x)
    x_ro = x_c.copy()
    x_ro.flags.writeable = False
    y = layer.forward(x)
    np.testing.assert_array_equal(y, layer.forward(x_c))
    np.testing.assert_array_equal(y, layer.forward(x_ro))
    seq = nn.LSTM(5, 2, dtype=F64)
    xs = rand((3, 5, 4), 22).transpose(0, 2, 1)  # (batch, T, n_x) non-contiguous
    np.testing.assert_array_equal(seq.forward(xs), seq.forward(np.ascontiguousarray(xs)))


def test_empty_batch():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    y = net.forward(np.zeros((0, 4, 4, 1), np.float32))
    assert y.shape == (0, 3)
    dx = net.backward(np.zeros((0, 3), np.float32))
    assert dx.shape == (0, 4, 4, 1)
    assert not net.grads["linear1.w"].any()
    with pytest.raises(ValueError, match="BatchNorm.forward"):  # no batch statistics of nothing
        nn.BatchNorm(2).forward(np.zeros((0, 2), np.float32))
    assert nn.BatchNorm(2).eval().forward(np.zeros((0, 2), np.float32)).shape == (0, 2)


def test_forward_training_argument_and_layer_mode_combine():
    bn = nn.BatchNorm(2, dtype=F64)
    x = rand((5, 2), 23) * 3 + 4
    y_eval = bn.forward(x, training=False)  # running statistics (0, 1): y = x / sqrt(1 + eps)
    np.testing.assert_allclose(y_eval, x / np.sqrt(1 + 1e-5), rtol=1e-12)
    np.testing.assert_array_equal(bn.buffers["running_mean"], [0, 0])  # eval changes no buffer
    y_train = bn.forward(x)
    np.testing.assert_allclose(y_train.mean(axis=0), [0, 0], atol=1e-12)
    bn.eval()
    np.testing.assert_array_equal(bn.forward(x, training=True), bn.forward(x, training=False))


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Conv2d(2, 3, 3, padding="same", activation="tanh"), nn.BatchNorm(3), nn.MaxPool2d(2),
                           nn.Residual(nn.Conv2d(3, 3, 1)), nn.GlobalAvgPool2d(), nn.Linear(3, 2)), (3, 4, 4, 2)),
    (lambda: nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 2), nn.RNN(2, 2), nn.TimeDistributed(nn.Linear(2, 2))), (2, 5, 3)),
], ids=["conv", "recurrent"])
def test_no_layer_modifies_its_inputs_or_dy(make, shape):
    net = make()
    x = rand(shape, 24).astype(np.float32)
    x_before = x.copy()
    y = net.forward(x)
    dy = rand(y.shape, 25).astype(np.float32)
    dy_before = dy.copy()
    dx = net.backward(dy)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    assert dx.shape == x.shape and not np.shares_memory(dx, dy)
