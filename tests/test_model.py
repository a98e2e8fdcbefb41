"""fastnn.nn.model: Model.fit / evaluate / predict / save / load, callbacks, progress.

Expected values come from the network's own forward pass and the losses of fastnn.nn
(independent of Model), from NumPy (the permutations), or from a second training run.
"""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from fastnn.nn import (LSTM, MSE, BatchNorm, Conv2d, Dropout, Embedding, Flatten, Layer, Linear, MaxPool2d, ReLU,
                       Sequential, SigmoidCrossEntropy, SoftmaxCrossEntropy, TimeDistributed)
from fastnn.nn import _progress
from fastnn.nn.callbacks import Callback, EarlyStopping, ModelCheckpoint, TerminateOnNaN
from fastnn.nn.model import FORMAT_VERSION, History, Model
from fastnn.optim import SGD, Adam, schedules


# ---------------------------------------------------------------- helpers

def blobs(n=240, seed=0, dtype=np.float32):
    """Two separable classes in 4-D: the label is the sign of x0 + x1 (with a margin)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    X[:, 0] += np.where(y == 1, 0.5, -0.5)
    return X.astype(dtype), y


def mlp(dtype=np.float32, seed=1, dropout=False, bn=False):
    layers = [Linear(4, 16, None if bn else "relu", rng=seed, dtype=dtype)]
    if bn:
        layers += [BatchNorm(16, dtype=dtype), ReLU()]
    if dropout:
        layers.append(Dropout(0.8, rng=seed + 10))
    layers.append(Linear(16, 2, rng=seed + 1, dtype=dtype))
    return Sequential(*layers)


class Recorder(Layer):
    """The identity, remembering column 0 of every batch it sees (the example's index)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, training=True):
        self.seen.append(np.array(x[:, 0]))
        return np.array(x)

    def backward(self, dy):
        return dy


class Snapshots(Callback):
    """Copies of the parameters at each epoch's end, and the lr at each epoch's start."""

    def __init__(self):
        self.params, self.lrs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.lrs.append(self.model.optimizer.lr)

    def on_epoch_end(self, epoch, logs=None):
        self.params.append({k: v.copy() for k, v in self.model.network.params.items()})
        self.params[-1].update({k: v.copy() for k, v in self.model.network.buffers.items()})


def indexed(n):
    X = np.zeros((n, 2), np.float32)
    X[:, 0] = np.arange(n)
    return X, np.zeros(n, np.int64)


def recorded_epochs(n, epochs, batch_size, rng, shuffle=True):
    rec = Recorder()
    net = Sequential(rec, Linear(2, 2, rng=0))
    X, y = indexed(n)
    Model(net, SoftmaxCrossEntropy()).fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=SGD(net.params, 0.0),
                                          rng=rng, shuffle=shuffle, progress=False)
    per_epoch = -(-n // batch_size)
    batches = [b.astype(np.int64) for b in rec.seen]
    assert len(batches) == epochs * per_epoch
    return [batches[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs)]


# ---------------------------------------------------------------- training

def test_loss_decreases_and_reaches_high_accuracy():
    X, y = blobs()
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    before = model.evaluate(X, y)
    history = model.fit(X, y, epochs=15, batch_size=32, optimizer=Adam(net.params, 0.01), rng=0, progress=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    after = model.evaluate(X, y)
    assert after["loss"] < before["loss"]
    assert after["accuracy"] >= 0.95
    assert history.history["accuracy"][-1] >= 0.9


def test_fit_equals_the_course_loop_written_out():
    X, y = blobs(100)
    net, ref = mlp(dropout=True), mlp(dropout=True)
    Model(net, SoftmaxCrossEntropy()).fit(X, y, epochs=3, batch_size=32, optimizer=Adam(net.params, 0.01), rng=7,
                                          progress=False)
    # the same training by hand: a permutation per epoch, slices of it, forward/loss/backward/step
    opt, loss, gen = Adam(ref.params, 0.01), SoftmaxCrossEntropy(), np.random.default_rng(7)
    for _ in range(3):
        perm = gen.permutation(100)
        for lo in range(0, 100, 32):
            idx = perm[lo:lo + 32]
            loss.forward(ref.forward(X[idx], training=True), y[idx])
            ref.backward(loss.backward())
            opt.step(ref.grads)
    for k, v in ref.params.items():
        np.testing.assert_array_equal(net.params[k], v)


def test_batches_sizes_order_and_coverage():
    n, bs = 103, 10
    run = recorded_epochs(n, 3, bs, rng=5)
    for epoch in run:
        assert [len(b) for b in epoch] == [10] * 10 + [3]  # the last one smaller
        order = np.concatenate(epoch)
        assert sorted(order.tolist()) == list(range(n))  # every example once per epoch
    orders = [np.concatenate(e) for e in run]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    # the course's shuffle: a permutation per epoch drawn from the generator
    gen = np.random.default_rng(5)
    for order in orders:
        np.testing.assert_array_equal(order, gen.permutation(n))
    # reproducible for a seed, different for another
    again = [np.concatenate(e) for e in recorded_epochs(n, 3, bs, rng=5)]
    other = [np.concatenate(e) for e in recorded_epochs(n, 3, bs, rng=6)]
    for a, b in zip(orders, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(orders[0], other[0])
    # shuffle=False: the examples in order; a batch_size above n: one batch
    plain = recorded_epochs(n, 2, bs, rng=5, shuffle=False)
    for epoch in plain:
        np.testing.assert_array_equal(np.concatenate(epoch), np.arange(n))
    whole = recorded_epochs(7, 1, 64, rng=0)
    assert [len(b) for b in whole[0]] == [7]


def test_history_contents_match_independent_losses():
    X, y = blobs(120)
    Xv, yv = blobs(50, seed=3)
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    # lr 0: the parameters stay put, so the epoch's running means equal one full pass
    history = model.fit(X, y, epochs=2, batch_size=16, optimizer=SGD(net.params, 0.0), rng=0,
                        validation_data=(Xv, yv), progress=False)
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert history.epoch == [0, 1]
    assert all(len(v) == 2 for v in h.values())
    logits = net.forward(X, training=False)
    expected_loss = SoftmaxCrossEntropy().forward(logits, y)
    expected_acc = np.mean(np.argmax(logits, axis=1) == y)
    val_logits = net.forward(Xv, training=False)
    for e in range(2):
        assert h["loss"][e] == pytest.approx(expected_loss, rel=1e-5)
        assert h["accuracy"][e] == pytest.approx(expected_acc)
        assert h["val_loss"][e] == pytest.approx(SoftmaxCrossEntropy().forward(val_logits, yv), rel=1e-5)
        assert h["val_accuracy"][e] == pytest.approx(np.mean(np.argmax(val_logits, axis=1) == yv))
        assert h["lr"][e] == 0.0
        assert h["time"][e] > 0
    assert model.epoch == 2 and model.history.epoch == [0, 1]
    ev = model.evaluate(Xv, yv, batch_size=7)
    assert ev["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-5)
    assert ev["accuracy"] == pytest.approx(h["val_accuracy"][-1])


def test_one_hot_targets_sequences_sigmoid_and_mse_metrics():
    rng = np.random.default_rng(4)
    # one-hot rows: accuracy against their argmax
    X, y = blobs(60)
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    h = model.fit(X, np.eye(2)[y], epochs=1, batch_size=8, optimizer=SGD(net.params, 0.0), rng=0, progress=False)
    assert h.history["accuracy"][0] == pytest.approx(np.mean(np.argmax(net.forward(X, training=False), 1) == y))
    # sequences: (N, T, V) logits, (N, T) labels, accuracy over every step
    Xs = rng.normal(size=(20, 5, 3)).astype(np.float32)
    ys = rng.integers(0, 4, size=(20, 5))
    seq = Linear(3, 4, rng=0)
    model = Model(seq, SoftmaxCrossEntropy())
    h = model.fit(Xs, ys, epochs=1, batch_size=6, optimizer=SGD(seq.params, 0.0), rng=0, progress=False)
    logits = seq.forward(Xs, training=False)
    assert h.history["loss"][0] == pytest.approx(SoftmaxCrossEntropy().forward(logits, ys), rel=1e-5)
    assert h.history["accuracy"][0] == pytest.approx(np.mean(np.argmax(logits, -1) == ys))
    assert model.predict(Xs).shape == (20, 5, 4)
    # sigmoid: a logit > 0 predicts 1
    yb = rng.integers(0, 2, size=(30, 1)).astype(np.float32)
    Xb = rng.normal(size=(30, 4)).astype(np.float32)
    lin = Linear(4, 1, rng=0)
    model = Model(lin, SigmoidCrossEntropy())
    h = model.fit(Xb, yb, epochs=1, batch_size=8, optimizer=SGD(lin.params, 0.0), rng=0, progress=False)
    assert h.history["accuracy"][0] == pytest.approx(np.mean((lin.forward(Xb, training=False) > 0) == (yb > 0.5)))
    # MSE: no accuracy anywhere
    model = Model(lin, MSE())
    h = model.fit(Xb, yb, epochs=1, batch_size=8, optimizer=SGD(lin.params, 0.0), rng=0, progress=False,
                  validation_data=(Xb, yb))
    assert set(h.history) == {"loss", "val_loss", "lr", "time"}
    assert set(model.evaluate(Xb, yb)) == {"loss"}
    assert model.evaluate(Xb, yb)["loss"] == pytest.approx(np.mean((lin.forward(Xb) - yb) ** 2), rel=1e-5)


def test_schedule_sets_lr_at_each_epoch_start():
    X, y = blobs(64)
    net = mlp()
    snap = Snapshots()
    model = Model(net, SoftmaxCrossEntropy())
    h = model.fit(X, y, epochs=4, batch_size=16, optimizer=SGD(net.params, 1.0), rng=0, progress=False,
                  schedule=schedules.inverse_time(0.2, 1), callbacks=[snap])
    # the course's example: epoch 1..4 -> 0.1, 0.0667, 0.05, 0.04
    expected = [0.2 / (1 + e) for e in (1, 2, 3, 4)]
    assert h.history["lr"] == pytest.approx(expected)
    assert snap.lrs == pytest.approx(expected)
    assert model.optimizer.lr == pytest.approx(0.04)
    # inverse_sqrt needs epoch >= 1, which the first epoch is
    h = model.fit(X, y, epochs=1, batch_size=16, optimizer=SGD(net.params, 1.0), rng=0, progress=False,
                  schedule=schedules.inverse_sqrt(0.1, 1.0))
    assert h.history["lr"] == pytest.approx([0.1])


def test_early_stopping_stops_and_restores_best():
    X, y = blobs(160)
    Xv, yv = blobs(60, seed=7)
    yv = 1 - yv  # the better the model learns the training set, the worse it does here
    net = mlp(bn=True)
    snap = Snapshots()
    stop = EarlyStopping(monitor="val_loss", patience=2)
    model = Model(net, SoftmaxCrossEntropy())
    h = model.fit(X, y, epochs=20, batch_size=16, optimizer=Adam(net.params, 0.01), rng=0,
                  validation_data=(Xv, yv), callbacks=[snap, stop], progress=False)
    vl = h.history["val_loss"]
    assert len(vl) == stop.stopped_epoch + 1 < 20
    best = int(np.argmin(vl))
    assert stop.best_epoch == best and stop.best == vl[best]
    assert all(v >= vl[best] for v in vl[best + 1:]) and len(vl) - 1 - best == 2
    assert set(net.buffers) == {"bn1.running_mean", "bn1.running_var"}
    for k, v in list(net.params.items()) + list(net.buffers.items()):
        np.testing.assert_array_equal(v, snap.params[best][k])
    assert model.evaluate(Xv, yv)["loss"] == pytest.approx(vl[best], rel=1e-6)
    # restore_best=False keeps the last epoch's parameters
    net2 = mlp()
    snap2 = Snapshots()
    Model(net2, SoftmaxCrossEntropy()).fit(X, y, epochs=20, batch_size=16, optimizer=Adam(net2.params, 0.01), rng=0,
                                           validation_data=(Xv, yv), progress=False,
                                           callbacks=[snap2, EarlyStopping(patience=2, restore_best=False)])
    for k, v in net2.params.items():
        np.testing.assert_array_equal(v, snap2.params[-1][k])
    # monitoring something that is not logged is an error that says what is there
    with pytest.raises(ValueError, match="EarlyStopping: monitor 'val_loss' is not among"):
        Model(mlp(), SoftmaxCrossEntropy()).fit(X, y, epochs=2, optimizer="sgd", progress=False,
                                                callbacks=[EarlyStopping()])


class _Dummy:
    stop_training = False


def test_early_stopping_rule_and_modes():
    def run(values, **kw):
        es = EarlyStopping(restore_best=False, **kw)
        es.set_model(_Dummy())
        es.on_train_begin()
        for e, v in enumerate(values):
            es.on_epoch_end(e, {kw.get("monitor", "val_loss"): v})
            if es.model.stop_training:
                return e
        return None

    assert run([1.0, 0.9, 0.95, 0.8], patience=0) == 2  # the first epoch that does not improve
    assert run([1.0, 0.9, 0.95, 0.8], patience=2) is None  # 0.8 improves in time
    assert run([1.0, 0.9, 0.95, 0.92, 0.8], patience=2) == 3
    assert run([1.0, 0.95, 0.9], patience=1, min_delta=0.1) == 1  # 0.05 better is not better enough
    assert run([0.5, 0.6, 0.6], monitor="val_accuracy", patience=1) == 2  # auto: accuracy is maximised
    assert run([0.5, 0.4], monitor="val_accuracy", patience=1, mode="min") is None
    assert run([1.0, float("nan")], patience=1) == 1  # NaN never improves


def test_terminate_on_nan():
    X, y = blobs(40)
    lin = Linear(4, 1, rng=0)
    target = np.full((40, 1), np.inf, np.float32)
    stop = TerminateOnNaN()
    h = Model(lin, MSE()).fit(X, target, epochs=5, batch_size=8, optimizer=SGD(lin.params, 0.1), rng=0,
                              progress=False, callbacks=[stop])
    assert stop.stopped_batch == 0 and len(h.epoch) == 1


def test_predict_equals_eval_forward_and_leaves_inputs_alone():
    X, y = blobs(75)
    net = mlp(dropout=True)
    model = Model(net, SoftmaxCrossEntropy())
    model.fit(X, y, epochs=2, batch_size=16, optimizer=Adam(net.params, 0.01), rng=0, progress=False)
    X_before = X.copy()
    X.setflags(write=False)
    out = model.predict(X, batch_size=8)
    np.testing.assert_allclose(out, net.forward(X, training=False), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out, model.predict(X, batch_size=8))  # dropout is off: deterministic
    np.testing.assert_array_equal(X, X_before)
    # no layer keeps the activations of inference: a backward pass has nothing to differentiate
    with pytest.raises(RuntimeError, match="backward"):
        net.backward(np.ones_like(out))
    model.evaluate(X, y)
    with pytest.raises(RuntimeError, match="backward"):
        net.backward(np.ones_like(out))
    # float64 data into a float32 network: computed in the network's dtype
    assert model.predict(X.astype(np.float64)).dtype == np.float32
    # fit never writes to X or y
    y_before = y.copy()
    model.fit(X, y, epochs=1, batch_size=16, optimizer=None, progress=False)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


class ModeProbe(Layer):
    """The identity, remembering whether each forward pass ran in training mode."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x, training=True):
        self.modes.append(self._mode(training))
        return np.array(x)

    def backward(self, dy):
        return dy


def test_modes_during_fit_predict_evaluate_and_after():
    X, y = blobs(32)
    probe = ModeProbe()
    net = Sequential(probe, Linear(4, 2, rng=0))
    model = Model(net, SoftmaxCrossEntropy())
    net.eval()
    model.fit(X, y, epochs=1, batch_size=16, optimizer="sgd", rng=0, progress=False, validation_data=(X, y))
    assert probe.modes == [True, True, False]  # two training batches, then validation in eval mode
    assert net.training is False and probe.training is False  # the mode the caller had set
    net.train()
    probe.modes.clear()
    model.predict(X)
    model.evaluate(X, y)
    assert probe.modes == [False, False]
    assert net.training is True and probe.training is True


def test_optimizer_by_name_and_reuse():
    X, y = blobs(64)
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    model.fit(X, y, epochs=1, batch_size=16, optimizer="adam", lr=0.02, rng=0, progress=False)
    assert isinstance(model.optimizer, Adam) and model.optimizer.lr == 0.02
    opt = model.optimizer
    model.fit(X, y, epochs=2, initial_epoch=1, batch_size=16, progress=False)  # the model's own optimizer
    assert model.optimizer is opt and opt.t == 8
    assert model.history.epoch == [0, 1]


# ---------------------------------------------------------------- save / load

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_predicts_identically(tmp_path, dtype):
    X, y = blobs(80, dtype=dtype)
    net = mlp(dtype=dtype, dropout=True)
    model = Model(net, SoftmaxCrossEntropy())
    model.fit(X, y, epochs=2, batch_size=16, optimizer=Adam(net.params, 0.01), rng=0, progress=False)
    path = model.save(tmp_path / "m.npz")
    assert os.fspath(path) == os.fspath(tmp_path / "m.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # an ordinary file, not mkstemp's private one
    loaded = Model.load(path)
    assert loaded.network.config() == net.config()
    for k, v in net.params.items():
        assert loaded.network.params[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded.network.params[k], v)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert type(loaded.loss) is SoftmaxCrossEntropy
    assert loaded.epoch == 2
    assert loaded.history.history == model.history.history and loaded.history.epoch == [0, 1]
    state, state2 = model.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert set(state) == set(state2)
    for k in state:
        np.testing.assert_array_equal(state[k], state2[k])
    # the file holds plain arrays only and a JSON string
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__fastnn_model__"].tobytes().decode())
        assert all(z[k].dtype != object for k in z.files)
    assert meta["version"] == FORMAT_VERSION and meta["dtype"] == np.dtype(dtype).name
    assert meta["network"] == net.config() and meta["loss"] == {"type": "SoftmaxCrossEntropy"}


def test_save_load_batchnorm_buffers(tmp_path):
    X, y = blobs(64, dtype=np.float64)
    net = mlp(np.float64, bn=True)
    model = Model(net, SoftmaxCrossEntropy())
    model.fit(X, y, epochs=2, batch_size=16, optimizer="rmsprop", rng=0, progress=False)
    assert not np.array_equal(net.buffers["bn1.running_var"], np.ones(16))  # training moved them
    model.save(tmp_path / "bn.npz")
    loaded = Model.load(tmp_path / "bn.npz")
    for k, v in net.buffers.items():
        np.testing.assert_array_equal(loaded.network.buffers[k], v)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    with np.load(tmp_path / "bn.npz", allow_pickle=False) as z:
        assert "buffers/bn1.running_mean" in z.files and "optimizer/s.linear1.w" in z.files


def test_char_lstm_sequences(tmp_path):
    # next-character prediction on a periodic text: Embedding -> LSTM -> TimeDistributed(Linear)
    text = np.array([0, 1, 2, 3, 1, 2] * 40)
    T = 8
    starts = np.arange(0, len(text) - T - 1, 3)
    X = np.stack([text[s:s + T] for s in starts])
    y = np.stack([text[s + 1:s + T + 1] for s in starts])
    net = Sequential(Embedding(4, 6, rng=0, dtype=np.float64), LSTM(6, 12, rng=1, dtype=np.float64),
                     TimeDistributed(Linear(12, 4, rng=2, dtype=np.float64)))
    model = Model(net, SoftmaxCrossEntropy())
    h = model.fit(X, y, epochs=12, batch_size=16, optimizer=Adam(net.params, 0.05), rng=0, progress=False)
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    logits = model.predict(X)
    assert logits.shape == X.shape + (4,)
    ev = model.evaluate(X, y)
    assert ev["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == y)) and ev["accuracy"] > 0.8
    model.save(tmp_path / "lstm.npz")
    np.testing.assert_array_equal(Model.load(tmp_path / "lstm.npz").predict(X), logits)


def test_small_convnet_trains_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 8, 8, 1)).astype(np.float32)
    y = (X[:, :4].mean(axis=(1, 2, 3)) > X[:, 4:].mean(axis=(1, 2, 3))).astype(np.int64)
    net = Sequential(Conv2d(1, 4, 3, padding=1, activation="relu", rng=0), MaxPool2d(2), Flatten(),
                     Linear(64, 2, rng=1))
    model = Model(net, SoftmaxCrossEntropy())
    h = model.fit(X, y, epochs=8, batch_size=16, optimizer=Adam(net.params, 0.01), rng=0, progress=False)
    assert h.history["loss"][-1] < h.history["loss"][0]
    model.save(tmp_path / "conv.npz")
    np.testing.assert_array_equal(Model.load(tmp_path / "conv.npz").predict(X), model.predict(X))


def test_save_without_training_and_other_losses(tmp_path):
    lin = Linear(4, 1, rng=0, dtype=np.float64)
    model = Model(lin, MSE())
    model.save(tmp_path / "fresh.npz")
    loaded = Model.load(tmp_path / "fresh.npz")
    assert loaded.optimizer is None and loaded.epoch == 0 and type(loaded.loss) is MSE
    X = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def _resume_setup(dtype=np.float64):
    X, y = blobs(90, dtype=dtype)
    Xv, yv = blobs(30, seed=9, dtype=dtype)
    return X, y, (Xv, yv)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_equals_uninterrupted_training(tmp_path, dtype):
    X, y, val = _resume_setup(dtype)
    sched = schedules.exponential(0.02, 0.9)
    kw = dict(batch_size=16, validation_data=val, schedule=sched, progress=False)
    full = Model(mlp(dtype, dropout=True, bn=True), SoftmaxCrossEntropy())
    full.fit(X, y, epochs=4, optimizer=Adam(full.network.params), rng=3, **kw)

    half = Model(mlp(dtype, dropout=True, bn=True), SoftmaxCrossEntropy())
    half.fit(X, y, epochs=2, optimizer=Adam(half.network.params), rng=3, **kw)
    half.save(tmp_path / "half.npz")
    resumed = Model.load(tmp_path / "half.npz")
    resumed.fit(X, y, epochs=4, initial_epoch=resumed.epoch, **kw)

    for k, v in list(full.network.params.items()) + list(full.network.buffers.items()):
        np.testing.assert_array_equal(resumed.network.state_dict()[k], v)
    assert resumed.history.history["loss"] == full.history.history["loss"]
    assert resumed.history.history["val_loss"] == full.history.history["val_loss"]
    assert resumed.history.epoch == [0, 1, 2, 3] and resumed.epoch == 4
    assert resumed.optimizer.t == full.optimizer.t


def test_model_checkpoint_files_resume(tmp_path):
    X, y, val = _resume_setup()
    kw = dict(batch_size=16, validation_data=val, progress=False)
    full = Model(mlp(np.float64), SoftmaxCrossEntropy())
    ckpt = ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.npz"), monitor="val_loss")
    full.fit(X, y, epochs=4, optimizer=SGD(full.network.params, 0.1, momentum=0.9), rng=11, callbacks=[ckpt], **kw)
    assert len(ckpt.saved) == 4 and os.path.basename(ckpt.saved[1]).startswith("ckpt-02-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(os.path.basename(p) for p in ckpt.saved)
    resumed = Model.load(ckpt.saved[1])
    assert resumed.epoch == 2
    resumed.fit(X, y, epochs=4, initial_epoch=2, **kw)
    for k, v in full.network.params.items():
        np.testing.assert_array_equal(resumed.network.params[k], v)
    # save_best_only on a validation loss that only gets worse: the first epoch alone
    Xv, yv = val
    best = ModelCheckpoint(tmp_path / "best-{epoch}.npz", save_best_only=True)
    m = Model(mlp(np.float64), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=4, optimizer=Adam(m.network.params, 0.01), rng=0, callbacks=[best], batch_size=16,
              validation_data=(Xv, 1 - yv), progress=False)
    vl = h.history["val_loss"]
    improving = [e for e in range(4) if vl[e] < min(vl[:e], default=np.inf)]
    assert best.saved == [str(tmp_path / f"best-{e + 1}.npz") for e in improving]
    assert best.best == min(vl)


class Evil:
    """Unpickling this writes a marker file: a loader that unpickles would be caught."""

    marker = None

    def __reduce__(self):
        return (open, (Evil.marker, "w"))


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)  # np.savez pickles object arrays: the tampering we test


def _meta_of(arrays):
    return json.loads(arrays["__fastnn_model__"].tobytes().decode())


def _set_meta(arrays, meta):
    arrays["__fastnn_model__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def test_tampered_files_give_clear_errors_and_never_unpickle(tmp_path):
    X, y = blobs(40)
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    model.fit(X, y, epochs=1, batch_size=16, optimizer=Adam(net.params, 0.01), rng=0, progress=False)
    good = model.save(tmp_path / "good.npz")
    Evil.marker = str(tmp_path / "UNPICKLED")
    bad = str(tmp_path / "bad.npz")

    def load_fails(match):
        with pytest.raises(ValueError, match=match) as info:
            Model.load(bad)
        assert "bad.npz" in str(info.value) and "Model.load" in str(info.value)
        assert not os.path.exists(Evil.marker)

    # an object array (pickled inside the .npy) in place of a parameter, and as the metadata
    _rewrite(good, bad, lambda a: a.update({"params/linear1.w": np.array([Evil()], dtype=object)}))
    load_fails("Python objects")
    _rewrite(good, bad, lambda a: a.update({"__fastnn_model__": np.array([Evil()], dtype=object)}))
    load_fails("Python objects")
    # a whole pickle file, a .npy, random bytes
    with open(bad, "wb") as f:
        pickle.dump(Evil(), f)
    load_fails("cannot be read")
    np.save(open(bad, "wb"), np.zeros(3))
    load_fails("single array")
    with open(bad, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    load_fails("cannot be read")
    # a non-.npy member (raw pickle bytes) inside the zip
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, zin.read(item))
        zout.writestr("evil.pkl", pickle.dumps(Evil()))
    load_fails("not a .npy array")

    # edited JSON
    def edit_meta(fn):
        def change(arrays):
            meta = _meta_of(arrays)
            fn(meta)
            _set_meta(arrays, meta)
        _rewrite(good, bad, change)

    edit_meta(lambda m: m["network"]["layers"][0][1].update(type="os.system"))
    load_fails("unknown layer type 'os.system'")
    edit_meta(lambda m: m.update(loss={"type": "Evil"}))
    load_fails("unknown loss type 'Evil'")
    edit_meta(lambda m: m.update(version=FORMAT_VERSION + 1))
    load_fails("newer")
    edit_meta(lambda m: m.pop("history"))
    load_fails("lacks 'history'")
    edit_meta(lambda m: m.update(epoch=-1))
    load_fails("'epoch' is malformed")
    edit_meta(lambda m: m["network"]["layers"][0][1].update(n_out=17))  # config no longer fits the arrays
    load_fails(r"parameter 'linear1.w' has shape \(16, 4\), but the network's has shape \(17, 4\)")
    edit_meta(lambda m: m["optimizer"].update(type="Pickler"))
    load_fails("unknown optimizer")
    edit_meta(lambda m: m.update(rng={"bit_generator": "Evil"}))
    load_fails("unknown bit generator")
    _rewrite(good, bad, lambda a: a.update({"__fastnn_model__": np.frombuffer(b"{not json", np.uint8)}))
    load_fails("not valid JSON")
    _rewrite(good, bad, lambda a: a.pop("__fastnn_model__"))
    load_fails("no '__fastnn_model__' entry")

    # arrays that do not fit the config
    _rewrite(good, bad, lambda a: a.update({"params/linear1.w": np.zeros((4, 16), np.float32)}))
    load_fails(r"parameter 'linear1.w' has shape \(4, 16\)")
    _rewrite(good, bad, lambda a: a.update({"params/linear1.w": np.zeros((16, 4), np.float64)}))
    load_fails("parameter 'linear1.w' has dtype float64")
    _rewrite(good, bad, lambda a: a.pop("params/linear2.b"))
    load_fails(r"missing \['linear2.b'\]")
    _rewrite(good, bad, lambda a: a.update({"params/linear9.w": np.zeros(3, np.float32)}))
    load_fails(r"unexpected \['linear9.w'\]")
    _rewrite(good, bad, lambda a: a.update({"something": np.zeros(3)}))
    load_fails("unexpected entry 'something'")
    _rewrite(good, bad, lambda a: a.update({"optimizer/v.linear1.w": np.zeros((2, 2), np.float32)}))
    load_fails("optimizer state does not fit")
    _rewrite(good, bad, lambda a: a.update({"params/linear1.w": np.array(["x"] * 64).reshape(16, 4)}))
    load_fails("has dtype <U1")
    # a missing file is the OS's error
    with pytest.raises(FileNotFoundError):
        Model.load(tmp_path / "nope.npz")
    # and the good file still loads
    np.testing.assert_array_equal(Model.load(good).predict(X), model.predict(X))


# ---------------------------------------------------------------- progress

def _fit_quietly(progress, epochs=2):
    X, y = blobs(40)
    net = mlp()
    return Model(net, SoftmaxCrossEntropy()).fit(X, y, epochs=epochs, batch_size=16, optimizer=SGD(net.params, 0.1),
                                                 rng=0, progress=progress, validation_data=(X, y))


def test_progress_with_rich(capsys):
    pytest.importorskip("rich")
    h = _fit_quietly(True)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2  # not a terminal: the transient bar leaves the per-epoch lines
    for e, line in enumerate(lines):
        assert line.startswith(f"Epoch {e + 1}/2 - 3 batches - ")
        assert f"loss {h.history['loss'][e]:.4f}" in line and f"val_accuracy {h.history['val_accuracy'][e]:.4f}" in line


def test_progress_rich_bar_in_a_terminal(capsys, monkeypatch):
    pytest.importorskip("rich")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its live display as on a terminal
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("TERM", "xterm")  # a dumb terminal gets no live display
    h = _fit_quietly(True)
    out = capsys.readouterr().out
    # the bar's last state (3 of 3 batches, the running loss and accuracy), then the epoch lines
    assert "3/3" in out
    assert f"loss {h.history['loss'][-1]:.4f}  accuracy {h.history['accuracy'][-1]:.4f}" in out
    assert "Epoch 2/2 - 3 batches - " in out


def test_progress_without_rich(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "rich_available", lambda: False)
    h = _fit_quietly(True, epochs=3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for e, line in enumerate(lines):
        assert line.startswith(f"Epoch {e + 1}/3 - 3 batches - ")
        assert f"accuracy {h.history['accuracy'][e]:.4f}" in line and "lr 0.1" in line
    with pytest.raises(ValueError, match="progress='rich' needs the rich package"):
        _fit_quietly("rich")
    _fit_quietly("plain")
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_progress_false_prints_nothing(capsys):
    _fit_quietly(False)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- bad arguments

def test_bad_arguments_give_clear_errors():
    X, y = blobs(20)
    net = mlp()
    model = Model(net, SoftmaxCrossEntropy())
    opt = SGD(net.params, 0.1)

    def fit(**kw):
        args = dict(epochs=1, optimizer=opt, progress=False)
        args.update(kw)
        Xa, ya = args.pop("X", X), args.pop("y", y)
        model.fit(Xa, ya, **args)

    cases = [
        (ValueError, "Model.fit: epochs must be an int", dict(epochs=1.5)),
        (ValueError, "Model.fit: epochs must be >= 0", dict(epochs=-1)),
        (ValueError, "Model.fit: batch_size must be >= 1", dict(batch_size=0)),
        (ValueError, r"initial_epoch \(3\) must be <= epochs \(2\)", dict(epochs=2, initial_epoch=3)),
        (ValueError, "same number of examples", dict(y=y[:-1])),
        (ValueError, "no examples", dict(X=X[:0], y=y[:0])),
        (TypeError, "X must hold real numbers", dict(X=np.array([["a"]] * 20))),
        (ValueError, "shuffle must be True or False", dict(shuffle="yes")),
        (TypeError, "schedule must be a callable", dict(schedule=0.1)),
        (ValueError, r"schedule\(1\) must be a finite number", dict(schedule=lambda e: -1.0)),
        (ValueError, "validation_data must be a pair", dict(validation_data=(X,))),
        (ValueError, "validation_data\\[0\\] and validation_data\\[1\\] must hold the same number",
         dict(validation_data=(X, y[:3]))),
        (TypeError, r"callbacks\[0\] must be a fastnn.nn.callbacks.Callback", dict(callbacks=[print])),
        (ValueError, "progress must be True, False, 'rich' or 'plain'", dict(progress="fancy")),
        (ValueError, "optimizer must be built on this network's parameters",
         dict(optimizer=SGD(mlp().params, 0.1))),
        (ValueError, "optimizer must be 'adam', 'sgd', 'rmsprop'", dict(optimizer="lbfgs")),
        (TypeError, "optimizer must be a fastnn.optim optimizer", dict(optimizer=object())),
        (ValueError, "lr= goes with an optimizer name", dict(lr=0.1)),
        (TypeError, "rng must be a numpy.random.Generator", dict(rng="seed")),
    ]
    for exc, match, kw in cases:
        with pytest.raises(exc, match=match):
            fit(**kw)
    with pytest.raises(ValueError, match="Model.fit: optimizer is required"):
        Model(mlp(), SoftmaxCrossEntropy()).fit(X, y, epochs=1, progress=False)
    assert model.epoch == 0 and model.history.epoch == []  # nothing ran
    with pytest.raises(TypeError, match="Model: network must be a fastnn.nn layer"):
        Model(object(), SoftmaxCrossEntropy())
    with pytest.raises(TypeError, match="write SoftmaxCrossEntropy()"):
        Model(net, SoftmaxCrossEntropy)
    with pytest.raises(TypeError, match="loss must be a fastnn.nn loss"):
        Model(net, "mse")
    with pytest.raises(ValueError, match="Model.predict: batch_size must be >= 1"):
        model.predict(X, batch_size=0)
    with pytest.raises(ValueError, match="Model.evaluate: X and y must hold the same number"):
        model.evaluate(X, y[:2])
    with pytest.raises(ValueError, match="EarlyStopping: patience must be an int >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="EarlyStopping: mode must be"):
        EarlyStopping(mode="up")
    with pytest.raises(TypeError, match="ModelCheckpoint: path must be"):
        ModelCheckpoint(3)
    with pytest.raises(ValueError, match="ModelCheckpoint: path .* cannot be formatted"):
        fit(callbacks=[ModelCheckpoint("/tmp/{nothing}.npz")])


def test_history_repr_and_alignment():
    h = History()
    h._append(0, {"loss": 1.0})
    h._append(1, {"loss": 0.5, "val_loss": 0.7})
    assert h.history == {"loss": [1.0, 0.5], "val_loss": [None, 0.7]} and h.epoch == [0, 1]
    assert "2 epochs" in repr(h)
