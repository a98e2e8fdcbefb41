"""Model: a network and a loss, trained the course's way.

``Model(network, loss)`` wraps any layer of :mod:`fastnn.nn` (usually a
``Sequential``) and a loss (``SoftmaxCrossEntropy``, ``SigmoidCrossEntropy``, ``MSE``).
``fit`` runs the course's mini-batch gradient descent: each epoch a fresh
permutation of the examples (from the model's own generator, so a seed reproduces a
run), cut into batches of ``batch_size`` (the last one smaller), and per batch
forward (training mode), loss, backward, ``optimizer.step(network.grads)``.
``predict`` / ``evaluate`` run in eval mode. ``save`` writes one ``.npz`` of plain
arrays plus a JSON string; ``Model.load`` reads it back with ``allow_pickle=False``
and rebuilds the network from its config, so a file never runs code.

The model does no arithmetic on the arrays beyond glue: batches are gathered, the
metrics are counted (argmax / threshold), the running loss is averaged.
"""
import collections.abc
import json
import numbers
import os
import tempfile
import time
import zipfile

import numpy as np

from .. import _args as A
from .. import optim as _optim
from . import _progress
from .callbacks import Callback

__all__ = ["Model", "History", "FORMAT", "FORMAT_VERSION"]

FORMAT = "fastnn.nn.Model"
FORMAT_VERSION = 1
_META = "__fastnn_model__"
_PARAMS, _BUFFERS, _OPTIM = "params/", "buffers/", "optimizer/"

_OPTIMIZERS = {"SGD": _optim.SGD, "RMSprop": _optim.RMSprop, "Adam": _optim.Adam}
_OPTIMIZER_NAMES = {"sgd": "SGD", "rmsprop": "RMSprop", "adam": "Adam"}
_DEFAULT_LR = {"SGD": 0.01, "RMSprop": 1e-3, "Adam": 1e-3}
# the loss classes Model.load may rebuild, and the accuracy each one defines
_LOSSES = {"SoftmaxCrossEntropy": "softmax", "SigmoidCrossEntropy": "sigmoid", "MSE": None}
_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class History:
    """What fit recorded per epoch: ``history`` maps loss, accuracy, val_loss,
    val_accuracy, lr and time to one value per epoch (None where an epoch did not
    have it), ``epoch`` lists the epochs' indices (from 0)."""

    def __init__(self, history=None, epoch=None):
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.epoch = list(epoch or [])

    def _append(self, epoch, logs):
        n = len(self.epoch)
        for key in logs:
            if key not in self.history:
                self.history[key] = [None] * n
        for key, values in self.history.items():
            values.append(logs.get(key))
        self.epoch.append(epoch)

    def __repr__(self):
        return f"History({len(self.epoch)} epochs: {', '.join(self.history)})"


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _class_names(obj):
    return [c.__name__ for c in type(obj).__mro__]


def _metric_kind(loss):
    for name in _class_names(loss):
        if name in _LOSSES:
            return _LOSSES[name]
    return None


def _loss_name(loss):
    for name in _class_names(loss):
        if name in _LOSSES:
            return name
    return type(loss).__name__


def _as_data(fn, name, value):
    """An array-like -> an ndarray (never a copy when it already is one: the caller's
    array is only read)."""
    if value is None:
        raise TypeError(f"{fn}: {name} must be an array, got None")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fn}: {name} cannot be read as a numeric array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold real numbers (or integer labels), got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{fn}: {name} must have a batch axis (shape (N, ...)), got a 0-d array")
    return arr


def _check_pair(fn, X, y, xname="X", yname="y"):
    X = _as_data(fn, xname, X)
    y = _as_data(fn, yname, y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{fn}: {xname} and {yname} must hold the same number of examples (first axis), got "
                         f"{xname} of shape {X.shape} and {yname} of shape {y.shape}")
    return X, y


class _Accumulator:
    """The running loss (mean over examples) and accuracy of an epoch or an evaluation."""

    def __init__(self, kind):
        self.kind = kind
        self.examples = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.predictions = 0

    def add(self, loss, n, y_pred, y_true):
        self.examples += n
        self.loss_sum += float(loss) * n
        batch_accuracy = None
        if self.kind is not None:
            correct, count = _correct(self.kind, y_pred, y_true)
            self.correct += correct
            self.predictions += count
            batch_accuracy = correct / count if count else None
        return batch_accuracy

    def logs(self, prefix=""):
        out = {prefix + "loss": self.loss_sum / self.examples if self.examples else None}
        if self.kind is not None:
            out[prefix + "accuracy"] = self.correct / self.predictions if self.predictions else None
        return out


def _correct(kind, y_pred, y_true):
    """(correct predictions, predictions) of one batch: softmax takes the argmax of the
    last axis against integer labels (or the argmax of one-hot/probability targets);
    sigmoid predicts 1 where the logit is > 0 (the probability > 0.5) against targets
    >= 0.5. A sequence's every step is a prediction."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if kind == "softmax":
        predicted = np.argmax(y_pred, axis=-1)
        truth = np.argmax(y_true, axis=-1) if y_true.shape == y_pred.shape else y_true
    else:
        predicted = y_pred > 0
        truth = y_true >= 0.5
    if predicted.shape != truth.shape:
        return 0, 0
    return int(np.count_nonzero(predicted == truth)), int(predicted.size)


class Model:
    """A network (a fastnn.nn layer) trained against a loss.

    Attributes: ``network``, ``loss``, ``optimizer`` (the one of the last fit, or the
    one Model.load rebuilt), ``history`` (a History of every epoch trained, loaded ones
    included), ``epoch`` (the number of epochs done), ``stop_training`` (a callback
    sets it to end fit)."""

    def __init__(self, network, loss):
        fn = "Model"
        for attr in ("forward", "backward"):
            if not callable(getattr(network, attr, None)):
                raise TypeError(f"{fn}: network must be a fastnn.nn layer (with forward, backward, params and "
                                f"grads), got {type(network).__name__} without {attr}()")
        if not isinstance(getattr(network, "params", None), collections.abc.Mapping):
            raise TypeError(f"{fn}: network.params must be a dict of arrays, got "
                            f"{type(getattr(network, 'params', None)).__name__}")
        if isinstance(loss, type):
            raise TypeError(f"{fn}: loss must be a loss instance, got the class {loss.__name__}; "
                            f"write {loss.__name__}()")
        for attr in ("forward", "backward"):
            if not callable(getattr(loss, attr, None)):
                raise TypeError(f"{fn}: loss must be a fastnn.nn loss (SoftmaxCrossEntropy(), "
                                f"SigmoidCrossEntropy(), MSE()), got {type(loss).__name__} without {attr}()")
        self.network = network
        self.loss = loss
        self.optimizer = None
        self.history = History()
        self.epoch = 0
        self.stop_training = False
        self._rng = None
        self._metric = _metric_kind(loss)

    def __repr__(self):
        return (f"Model({type(self.network).__name__}, {type(self.loss).__name__}; "
                f"{sum(p.size for p in self.network.params.values())} parameters, {self.epoch} epochs trained)")

    # ---- glue

    def _dtype(self):
        """The dtype the network computes in (its parameters'), or None when it has none."""
        dtypes = {p.dtype for p in self.network.params.values()}
        return dtypes.pop() if len(dtypes) == 1 else None

    def _inputs(self, xb, dtype):
        # float inputs go in the network's dtype; integer inputs (token ids) stay as they are
        if dtype is not None and xb.dtype.kind == "f" and xb.dtype != dtype:
            return xb.astype(dtype)
        return xb

    def _buffers(self):
        buffers = getattr(self.network, "buffers", None)
        return buffers if isinstance(buffers, collections.abc.Mapping) else {}

    def _layer_generators(self):
        """(position in network.layers_iter(), generator) of every layer that draws random
        numbers from its own generator (Dropout's rng): saved so a resumed run draws the
        same masks as an uninterrupted one."""
        layers = getattr(self.network, "layers_iter", None)
        if not callable(layers):
            return []
        return [(i, layer.rng) for i, layer in enumerate(layers())
                if isinstance(getattr(layer, "rng", None), np.random.Generator)]

    def _set_mode(self, training):
        method = getattr(self.network, "train" if training else "eval", None)
        if callable(method):
            method()

    def _modes(self):
        """Every layer's training flag, to put back after fit / predict / evaluate."""
        layers = getattr(self.network, "layers_iter", None)
        layers = list(layers()) if callable(layers) else [self.network]
        return [(layer, layer.training) for layer in layers if isinstance(getattr(layer, "training", None), bool)]

    @staticmethod
    def _put_back(modes):
        for layer, training in modes:
            layer.training = training

    def _drop_caches(self):
        """Inference keeps nothing: the activations the last forward pass kept for a
        backward pass are freed (Layer.clear_cache)."""
        clear = getattr(self.network, "clear_cache", None)
        if callable(clear):
            clear()

    def _snapshot(self):
        """Copies of every parameter and buffer (for EarlyStopping's restore_best)."""
        return {"params": {k: np.array(v, copy=True) for k, v in self.network.params.items()},
                "buffers": {k: np.array(v, copy=True) for k, v in self._buffers().items()}}

    def _restore(self, snapshot):
        """Copy a snapshot back into the network's own arrays (in place: the optimizer
        keeps updating the same arrays)."""
        self._assign(snapshot["params"], snapshot["buffers"])

    def _assign(self, params, buffers):
        """Copy values into the network's parameter and buffer arrays, in place (they
        keep their identity, as the layer interface promises for both)."""
        own_params, own_buffers = self.network.params, self._buffers()
        for k, v in params.items():
            np.copyto(own_params[k], v)
        for k, v in buffers.items():
            np.copyto(own_buffers[k], v)

    def _check_optimizer(self, fn, optimizer, lr):
        params = self.network.params
        if optimizer is None:
            if self.optimizer is None:
                raise ValueError(f"{fn}: optimizer is required: an optimizer of fastnn.optim built on "
                                 f"model.network.params (e.g. Adam(model.network.params, lr=1e-3)) or a name "
                                 f"'adam', 'sgd', 'rmsprop' with lr=")
            optimizer = self.optimizer
            if lr is not None:
                optimizer.lr = A.real(fn, "lr", lr, low=0)
        elif isinstance(optimizer, str):
            name = _OPTIMIZER_NAMES.get(optimizer.lower())
            if name is None:
                raise ValueError(f"{fn}: optimizer must be 'adam', 'sgd', 'rmsprop' or a fastnn.optim instance, "
                                 f"got {optimizer!r}")
            lr = _DEFAULT_LR[name] if lr is None else A.real(fn, "lr", lr, low=0)
            optimizer = _OPTIMIZERS[name](params, lr)
        else:
            if not isinstance(optimizer, tuple(_OPTIMIZERS.values())):
                raise TypeError(f"{fn}: optimizer must be a fastnn.optim optimizer (SGD, RMSprop, Adam) or one "
                                f"of 'adam', 'sgd', 'rmsprop', got {type(optimizer).__name__}")
            if lr is not None:
                raise ValueError(f"{fn}: lr= goes with an optimizer name; this optimizer already has "
                                 f"lr={optimizer.lr!r} (set optimizer.lr, or use schedule=)")
        own = optimizer.params
        if not isinstance(own, dict) or set(own) != set(params) or any(own[k] is not params[k] for k in params):
            raise ValueError(f"{fn}: the optimizer must be built on this network's parameters: "
                             f"{type(optimizer).__name__}(model.network.params, ...); it updates other arrays "
                             f"(keys {sorted(own)[:4] if isinstance(own, dict) else 'of a list'}...), so training "
                             f"would change nothing")
        return optimizer

    # ---- training

    def _check_batches(self, fn, X, y, epochs, batch_size, initial_epoch, shuffle):
        """The data and the epoch and batch arguments of a fit, checked: (X, y, n,
        epochs, batch_size, initial_epoch, shuffle)."""
        X, y = _check_pair(fn, X, y)
        n = X.shape[0]
        if n == 0:
            raise ValueError(f"{fn}: X holds no examples (shape {X.shape}); there is nothing to train on")
        epochs = A.as_int(fn, "epochs", epochs, 0)
        batch_size = A.as_int(fn, "batch_size", batch_size, 1)
        initial_epoch = A.as_int(fn, "initial_epoch", initial_epoch, 0)
        if initial_epoch > epochs:
            raise ValueError(f"{fn}: initial_epoch ({initial_epoch}) must be <= epochs ({epochs}); epochs is the "
                             f"index of the epoch to stop before, not a count (Keras' convention)")
        return X, y, n, epochs, batch_size, initial_epoch, A.flag(fn, "shuffle", shuffle)

    def _check_run(self, fn, callbacks, rng):
        """(the callbacks as a list, the generator of the shuffles): rng when given,
        else the model's own, which a loaded model continues."""
        if isinstance(callbacks, Callback):
            callbacks = [callbacks]
        try:
            callbacks = list(callbacks)
        except TypeError:
            raise TypeError(f"{fn}: callbacks must be a list of Callback instances, got "
                            f"{type(callbacks).__name__}") from None
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"{fn}: callbacks[{i}] must be a fastnn.nn.callbacks.Callback instance, got "
                                f"{type(cb).__name__}")
        if rng is not None or self._rng is None:
            return callbacks, A.generator(fn, "rng", rng)
        return callbacks, self._rng

    def fit(self, X, y, *, epochs, batch_size=64, optimizer=None, lr=None, shuffle=True, validation_data=None,
            schedule=None, rng=None, progress=True, callbacks=(), initial_epoch=0):
        """Train for epochs `initial_epoch` .. `epochs - 1` (Keras' convention: `epochs`
        is the index to stop before, so resuming after 2 of 4 epochs is
        ``fit(..., epochs=4, initial_epoch=2)``) and return a History of them.

        X (N, ...) and y (N, ...) hold N examples (y: integer labels, one-hot rows or
        targets as the loss takes them; for sequence models (N, T) labels for (N, T, V)
        logits). Per epoch a permutation of the N examples (shuffle=True) from the
        model's generator — `rng` (a Generator or a seed) replaces it, None keeps the
        model's own (continuing across fits and restored by Model.load; a fresh
        unseeded one the first time) — cut into batches of batch_size, the last one
        smaller. optimizer: a fastnn.optim instance built on ``model.network.params``,
        a name 'adam'/'sgd'/'rmsprop' (built with lr=, default 1e-3, 0.01 for SGD), or
        None for the model's own (the last fit's, or the loaded one). schedule: a
        callable epoch -> lr called at each epoch's start with the course's epoch
        number (the first epoch is 1, so inverse_time(0.2, 1) trains the first epoch at
        0.1), whose value becomes optimizer.lr. validation_data: (X_val, y_val),
        evaluated in eval mode at each epoch's end. progress: True (a rich bar, plain
        lines without rich), 'rich', 'plain' or False. callbacks: Callback instances."""
        fn = "Model.fit"
        X, y, n, epochs, batch_size, initial_epoch, shuffle = self._check_batches(
            fn, X, y, epochs, batch_size, initial_epoch, shuffle)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"{fn}: schedule must be a callable epoch -> lr (fastnn.optim.schedules), got "
                            f"{type(schedule).__name__}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"{fn}: validation_data must be a pair (X_val, y_val), got "
                                 f"{type(validation_data).__name__}"
                                 f"{' of length %d' % len(validation_data) if isinstance(validation_data, (tuple, list)) else ''}")
            X_val, y_val = _check_pair(fn, *validation_data, xname="validation_data[0]", yname="validation_data[1]")
            if X_val.shape[0] == 0:
                raise ValueError(f"{fn}: validation_data holds no examples")
        callbacks, generator = self._check_run(fn, callbacks, rng)
        display = _progress.make(fn, progress, epochs)
        optimizer = self._check_optimizer(fn, optimizer, lr)  # last: optimizer=None with lr= sets its lr

        # everything is checked: from here on the model changes
        self.optimizer = optimizer
        self._rng = generator
        self.stop_training = False
        dtype = self._dtype()
        modes = self._modes()
        self._set_mode(True)

        def run_batch(idx, acc):
            xb, yb = X[idx], y[idx]
            y_pred = self.network.forward(self._inputs(xb, dtype), training=True)
            loss = float(self.loss.forward(y_pred, yb))
            batch_accuracy = acc.add(loss, len(yb), y_pred, yb)  # the outputs before this step
            self.network.backward_params(self.loss.backward())
            optimizer.step(self.network.grads)
            return loss, batch_accuracy

        def validate():
            return self._evaluate(X_val, y_val, 256, "val_")

        try:
            return self._epochs(fn, n, epochs, initial_epoch, batch_size, shuffle, generator, optimizer, callbacks,
                                display, run_batch, schedule=schedule,
                                validate=None if validation_data is None else validate)
        finally:
            self._put_back(modes)

    def _epochs(self, fn, n, epochs, initial_epoch, batch_size, shuffle, generator, optimizer, callbacks, display,
                run_batch, schedule=None, validate=None):
        """The course's epoch loop, shared by fit and DataParallel.fit: each epoch a
        permutation of the n examples from `generator` (or their order, without
        shuffle) cut into batches of batch_size, the last one smaller;
        ``run_batch(idx, acc) -> (loss, batch accuracy)`` trains on the examples idx
        (a slice or an index array) and counts them into acc. The schedule, the
        callbacks, the progress display and the history are kept here."""
        history = History()
        n_batches = -(-n // batch_size)
        for cb in callbacks:
            cb.set_model(self)
        display.start()
        try:
            for cb in callbacks:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                if self.stop_training:
                    break
                start = time.perf_counter()
                if schedule is not None:
                    optimizer.lr = A.real(fn, f"schedule({epoch + 1})", schedule(epoch + 1), low=0)
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                display.epoch_begin(epoch, n_batches)
                order = generator.permutation(n) if shuffle else None
                acc = _Accumulator(self._metric)
                for batch in range(n_batches):
                    lo, hi = batch * batch_size, min(n, (batch + 1) * batch_size)
                    for cb in callbacks:
                        cb.on_batch_begin(batch, {"size": hi - lo})
                    loss, batch_accuracy = run_batch(slice(lo, hi) if order is None else order[lo:hi], acc)
                    batch_logs = {"size": hi - lo, "loss": loss}
                    if self._metric is not None:
                        batch_logs["accuracy"] = batch_accuracy
                    for cb in callbacks:
                        cb.on_batch_end(batch, batch_logs)
                    display.batch_end(batch, acc.logs())
                    if self.stop_training:
                        break
                logs = acc.logs()
                if validate is not None:
                    logs.update(validate())
                logs["lr"] = float(optimizer.lr)
                logs["time"] = time.perf_counter() - start
                self.epoch = epoch + 1
                history._append(epoch, logs)
                self.history._append(epoch, logs)
                display.epoch_end(epoch, logs, n_batches)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
            for cb in callbacks:
                cb.on_train_end({})
        finally:
            display.close()
        return history

    # ---- inference

    def _batches(self, X, batch_size):
        for lo in range(0, max(X.shape[0], 1), batch_size):
            yield X[lo:lo + batch_size]

    def predict(self, X, batch_size=256):
        """The network's outputs (logits for the cross-entropy losses: apply
        fastnn.softmax for probabilities) for X (N, ...), in eval mode (dropout off,
        batch norm's running averages), batch_size examples at a time. No layer keeps
        activations afterwards (the caches are cleared)."""
        fn = "Model.predict"
        X = _as_data(fn, "X", X)
        batch_size = A.as_int(fn, "batch_size", batch_size, 1)
        dtype = self._dtype()
        modes = self._modes()
        self._set_mode(False)
        try:
            outputs = [np.asarray(self.network.forward(self._inputs(xb, dtype), training=False))
                       for xb in self._batches(X, batch_size)]
        finally:
            self._put_back(modes)
            self._drop_caches()
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def _evaluate(self, X, y, batch_size, prefix=""):
        dtype = self._dtype()
        modes = self._modes()
        self._set_mode(False)
        acc = _Accumulator(self._metric)
        try:
            for lo in range(0, X.shape[0], batch_size):
                xb, yb = X[lo:lo + batch_size], y[lo:lo + batch_size]
                y_pred = self.network.forward(self._inputs(xb, dtype), training=False)
                acc.add(float(self.loss.forward(y_pred, yb)), xb.shape[0], y_pred, yb)
        finally:
            self._put_back(modes)
            self._drop_caches()
        return acc.logs(prefix)

    def evaluate(self, X, y, batch_size=256):
        """{'loss': mean loss over the N examples, 'accuracy': fraction right (only for
        the cross-entropy losses)} in eval mode."""
        fn = "Model.evaluate"
        X, y = _check_pair(fn, X, y)
        if X.shape[0] == 0:
            raise ValueError(f"{fn}: X holds no examples (shape {X.shape})")
        batch_size = A.as_int(fn, "batch_size", batch_size, 1)
        return self._evaluate(X, y, batch_size)

    # ---- save / load

    def _meta(self, fn):
        config = getattr(self.network, "config", None)
        if not callable(config):
            raise TypeError(f"{fn}: the network ({type(self.network).__name__}) has no config(); only fastnn.nn "
                            f"layers can be saved")
        loss_config = self.loss.config() if callable(getattr(self.loss, "config", None)) else {}
        loss_config = dict(loss_config, type=_loss_name(self.loss))
        rng_state = None
        if self._rng is not None:
            rng_state = _json_ready(self._rng.bit_generator.state)
        optimizer = None
        if self.optimizer is not None:
            state = self.optimizer.state_dict()
            optimizer = {"type": state["optimizer"],
                         "hyper": {k: _json_ready(v) for k, v in state.items()
                                   if k != "optimizer" and not isinstance(v, np.ndarray)}}
        dtype = self._dtype()
        layer_rngs = [[i, _json_ready(g.bit_generator.state)] for i, g in self._layer_generators()]
        from .. import __version__
        return {"format": FORMAT, "version": FORMAT_VERSION, "fastnn": __version__,
                "network": config(), "loss": loss_config, "dtype": None if dtype is None else dtype.name,
                "epoch": self.epoch, "history": {"epoch": self.history.epoch, "history": self.history.history},
                "rng": rng_state, "layer_rngs": layer_rngs, "optimizer": optimizer}

    def save(self, path):
        """Write the model to one .npz file at `path` (exactly that name): every
        parameter ("params/<name>") and buffer ("buffers/<name>"), the optimizer's state
        arrays ("optimizer/<entry>"), and a JSON string (a uint8 array of UTF-8 bytes,
        "__fastnn_model__") with the format version, the network's config, the loss,
        dtype, epochs done, history, the shuffling generator's state and the
        optimizer's hyperparameters. Written to a temporary file and renamed, so a
        crash never leaves half a checkpoint. Returns the path."""
        fn = "Model.save"
        try:
            path = os.fspath(path)
        except TypeError:
            raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}") from None
        meta = self._meta(fn)
        try:
            text = json.dumps(meta)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{fn}: the network's config (or the loss's) is not JSON-serialisable: {exc}") from None
        arrays = {_META: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
        for k, v in self.network.params.items():
            arrays[_PARAMS + k] = np.asarray(v)
        for k, v in self._buffers().items():
            arrays[_BUFFERS + k] = np.asarray(v)
        if self.optimizer is not None:
            for k, v in self.optimizer.state_dict().items():
                if isinstance(v, np.ndarray):
                    arrays[_OPTIM + k] = v
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".npz.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; the model file is not
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    @classmethod
    def load(cls, path):
        """A Model from a file Model.save wrote: the network rebuilt with
        fastnn.nn.from_config, its parameters and buffers, the loss, the optimizer (with
        its state, as ``model.optimizer``), history, epoch and the shuffling generator,
        so that ``model.fit(X, y, epochs=E, initial_epoch=model.epoch)`` continues the
        run. Read with allow_pickle=False: a file holding object arrays or pickled data
        is refused; so is a JSON that does not match the arrays (unknown layer type,
        missing or extra parameters, wrong shapes or dtypes) — a ValueError that names
        the file and what is wrong."""
        fn = "Model.load"
        try:
            where = os.fspath(path)
        except TypeError:
            raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}") from None

        def bad(what):
            return ValueError(f"{fn}: {where!r} is not a valid fastnn model file: {what}")

        try:
            archive = np.load(where, allow_pickle=False)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise bad(f"it cannot be read as a .npz of plain arrays ({exc})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise bad("it holds a single array, not the .npz archive Model.save writes")
        with archive:
            arrays = {}
            for key in archive.files:
                try:
                    value = archive[key]
                except ValueError as exc:  # an object array: np.load refuses to unpickle it
                    raise bad(f"entry {key!r} holds Python objects (pickled data), which are never loaded "
                              f"({exc})") from None
                except (OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise bad(f"entry {key!r} cannot be read ({exc})") from None
                if not isinstance(value, np.ndarray):
                    raise bad(f"entry {key!r} is not a .npy array")
                if value.dtype.hasobject or value.dtype.kind not in "biufU":
                    raise bad(f"entry {key!r} has dtype {value.dtype}; a model file holds numbers only")
                arrays[key] = value
        meta = _read_meta(bad, arrays.pop(_META, None))
        return cls._from_parts(fn, bad, meta, arrays)

    @classmethod
    def _from_parts(cls, fn, bad, meta, arrays):
        from . import from_config
        import fastnn.nn as nn

        try:
            network = from_config(meta["network"])
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, MemoryError) as exc:
            raise bad(f"its network config cannot be rebuilt ({type(exc).__name__}: {exc})") from None
        loss_config = dict(meta["loss"])
        loss_type = loss_config.pop("type", None)
        if loss_type not in _LOSSES:
            raise bad(f"unknown loss type {loss_type!r} (known: {sorted(_LOSSES)})")
        try:
            loss = getattr(nn, loss_type)(**loss_config)
        except (ValueError, TypeError) as exc:
            raise bad(f"the loss {loss_type} cannot be rebuilt from {loss_config} ({exc})") from None
        model = cls(network, loss)

        groups = {_PARAMS: {}, _BUFFERS: {}, _OPTIM: {}}
        for key, value in arrays.items():
            for prefix, group in groups.items():
                if key.startswith(prefix):
                    group[key[len(prefix):]] = value
                    break
            else:
                raise bad(f"unexpected entry {key!r} (a model file holds params/..., buffers/..., optimizer/... "
                          f"and {_META!r})")
        params = _matched(bad, "parameter", groups[_PARAMS], network.params)
        buffers = _matched(bad, "buffer", groups[_BUFFERS], model._buffers())
        if meta["dtype"] is not None:
            dtypes = {p.dtype.name for p in params.values()}
            if dtypes != {meta["dtype"]}:
                raise bad(f"the metadata says dtype {meta['dtype']} but the parameters are {sorted(dtypes)}")
        model._assign(params, buffers)

        opt_meta = meta["optimizer"]
        if opt_meta is None:
            if groups[_OPTIM]:
                raise bad(f"optimizer arrays {sorted(groups[_OPTIM])[:4]} without an optimizer in the metadata")
        else:
            if not isinstance(opt_meta, dict) or opt_meta.get("type") not in _OPTIMIZERS \
                    or not isinstance(opt_meta.get("hyper"), dict):
                raise bad(f"unknown optimizer {opt_meta!r} (known: {sorted(_OPTIMIZERS)})")
            kind, hyper = opt_meta["type"], opt_meta["hyper"]
            try:
                optimizer = _OPTIMIZERS[kind](network.params, hyper.get("lr", 0.0))
                optimizer.load_state_dict({"optimizer": kind, **hyper, **groups[_OPTIM]})
            except (ValueError, TypeError) as exc:
                raise bad(f"its {kind} optimizer state does not fit the network ({exc})") from None
            model.optimizer = optimizer

        model.epoch = meta["epoch"]
        model.history = History(meta["history"]["history"], meta["history"]["epoch"])
        if meta["rng"] is not None:
            model._rng = _generator(bad, meta["rng"])
        owners = dict(model._layer_generators())
        layers = list(network.layers_iter()) if owners else []
        entries = meta.get("layer_rngs") or []
        if not isinstance(entries, list):
            raise bad(f"the metadata's 'layer_rngs' must be a list, got {type(entries).__name__}")
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and _is_int(entry[0]) and entry[0] in owners):
                raise bad(f"a layer generator entry {json.dumps(entry)[:80]} names no layer with a generator")
            layers[entry[0]].rng = _generator(bad, entry[1])
        return model


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_ready(value):
    """A bit generator's state (or a hyperparameter) as plain JSON values."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__array__", "dtype"} and value["dtype"] in ("uint32", "uint64", "int64"):
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _generator(bad, state):
    if not isinstance(state, dict) or state.get("bit_generator") not in _GENERATORS:
        raise bad(f"the generator state names an unknown bit generator (known: {list(_GENERATORS)})")
    bit_generator = getattr(np.random, state["bit_generator"])()
    try:
        bit_generator.state = _from_json(state)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise bad(f"the generator state cannot be restored ({type(exc).__name__}: {exc})") from None
    return np.random.Generator(bit_generator)


def _read_meta(bad, raw):
    """The JSON metadata, checked for the entries and types load relies on."""
    if raw is None:
        raise bad(f"it has no {_META!r} entry (the metadata Model.save writes)")
    if raw.dtype == np.uint8 and raw.ndim == 1:
        try:
            text = raw.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad(f"the metadata is not UTF-8 ({exc})") from None
    elif raw.dtype.kind == "U" and raw.ndim == 0:
        text = str(raw[()])
    else:
        raise bad(f"the metadata entry must be a 1-d uint8 array (UTF-8 JSON), got dtype {raw.dtype} shape {raw.shape}")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise bad(f"the metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise bad(f"the metadata must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise bad(f"the metadata's format is {meta.get('format')!r}, not {FORMAT!r}")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise bad(f"the metadata's version must be an int >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise bad(f"format version {version} is newer than this fastnn reads ({FORMAT_VERSION}); upgrade fastnn")
    checks = {"network": lambda v: isinstance(v, dict) and isinstance(v.get("type"), str),
              "loss": lambda v: isinstance(v, dict),
              "dtype": lambda v: v is None or v in ("float32", "float64"),
              "epoch": lambda v: _is_int(v) and v >= 0,
              "history": lambda v: isinstance(v, dict) and isinstance(v.get("epoch"), list)
              and isinstance(v.get("history"), dict)
              and all(isinstance(x, list) and len(x) == len(v["epoch"]) for x in v["history"].values())
              and all(_is_int(e) for e in v["epoch"])
              and all(x is None or isinstance(x, (int, float)) for xs in v["history"].values() for x in xs),
              "rng": lambda v: v is None or isinstance(v, dict),
              "optimizer": lambda v: v is None or isinstance(v, dict)}
    for key, ok in checks.items():
        if key not in meta:
            raise bad(f"the metadata lacks {key!r}")
        if not ok(meta[key]):
            raise bad(f"the metadata's {key!r} is malformed: {json.dumps(meta[key])[:200]}")
    return meta


def _matched(bad, what, stored, expected):
    """The stored arrays, checked to be exactly the expected names with their shapes and dtypes."""
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise bad(f"its {what}s do not match the network its config builds: missing {missing[:6]}, "
                  f"unexpected {extra[:6]}")
    for name, value in stored.items():
        want = expected[name]
        if value.shape != want.shape:
            raise bad(f"{what} {name!r} has shape {value.shape}, but the network's has shape {want.shape}")
        if value.dtype != want.dtype:
            raise bad(f"{what} {name!r} has dtype {value.dtype}, but the network's is {want.dtype}")
    return stored
