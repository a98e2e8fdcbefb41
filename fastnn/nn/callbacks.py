"""Callbacks for Model.fit, the Keras way.

A callback is an instance of a :class:`Callback` subclass; ``fit`` calls
``set_model(model)`` once, then ``on_train_begin``, per epoch ``on_epoch_begin(epoch)``,
per batch ``on_batch_begin(batch)`` / ``on_batch_end(batch, logs)``,
``on_epoch_end(epoch, logs)`` and finally ``on_train_end`` (also when training stops
early). Epochs and batches count from 0. A callback stops training by setting
``self.model.stop_training = True``; fit finishes the current batch and ends.

Epoch logs hold ``loss`` (the running mean over the epoch's batches, in training
mode), ``accuracy`` (where the loss defines one), ``val_loss`` / ``val_accuracy``
(with validation_data, in eval mode), ``lr`` and ``time`` (seconds). Batch logs hold
``size`` (examples in the batch), ``loss`` and ``accuracy`` of that batch.
"""
import math
import numbers

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN"]


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


def _check_monitor(fn, monitor, mode):
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"{fn}: monitor must be the name of an epoch log entry (e.g. 'val_loss'), got {monitor!r}")
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{fn}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if monitor.endswith("accuracy") or monitor.endswith("acc") else "min"
    return mode


def _monitored(fn, monitor, logs):
    """The monitored value of an epoch's logs, or a clear error when it is not there."""
    logs = logs or {}
    if monitor not in logs or logs[monitor] is None:
        hint = " (pass validation_data to fit, or monitor 'loss')" if monitor.startswith("val_") else ""
        raise ValueError(f"{fn}: monitor {monitor!r} is not among this epoch's logs "
                         f"{sorted(k for k, v in logs.items() if v is not None)}{hint}")
    return float(logs[monitor])


class _Best:
    """The best value seen so far of a monitored quantity, min or max."""

    def __init__(self, mode, min_delta):
        self.mode = mode
        self.min_delta = min_delta
        self.value = math.inf if mode == "min" else -math.inf

    def improves(self, value):
        # NaN never improves (both comparisons are false)
        if self.mode == "min":
            return value < self.value - self.min_delta
        return value > self.value + self.min_delta


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience`
    epochs in a row (Keras' rule: patience 0 and 1 both stop at the first epoch that
    does not improve). mode "auto" minimises, or maximises a name ending in accuracy.

    With restore_best=True the parameters and buffers of the best epoch are copied back
    into the network (in place, so the optimizer keeps its arrays) when training ends,
    whether it stopped early or ran all its epochs. After fit: ``stopped_epoch`` (the
    epoch it stopped at, or None), ``best`` (the best value), ``best_epoch``."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best=True):
        fn = "EarlyStopping"
        self.mode = _check_monitor(fn, monitor, mode)
        self.monitor = monitor
        if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (numbers.Integral, np.integer)) \
                or patience < 0:
            raise ValueError(f"{fn}: patience must be an int >= 0, got {patience!r}")
        self.patience = int(patience)
        if isinstance(min_delta, (bool, np.bool_)) or not isinstance(min_delta, numbers.Real) \
                or not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"{fn}: min_delta must be a finite number >= 0, got {min_delta!r}")
        self.min_delta = float(min_delta)
        if not isinstance(restore_best, (bool, np.bool_)):
            raise ValueError(f"{fn}: restore_best must be True or False, got {restore_best!r}")
        self.restore_best = bool(restore_best)
        self._reset()

    def _reset(self):
        self._best = _Best(self.mode, self.min_delta)
        self.best = None
        self.best_epoch = None
        self.stopped_epoch = None
        self.wait = 0
        self._weights = None

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = _monitored("EarlyStopping", self.monitor, logs)
        if self._best.improves(value):
            self._best.value = value
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._weights = self.model._snapshot()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best and self._weights is not None:
            self.model._restore(self._weights)

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r}, restore_best={self.restore_best})")


class ModelCheckpoint(Callback):
    """Save the model (Model.save: parameters, buffers, optimizer state, history and
    the shuffling generator's state, so that it can resume) at the end of each epoch.

    `path` may hold str.format fields: ``{epoch}`` (counted from 1, the number of
    epochs done) and any epoch log entry, e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``.
    With save_best_only=True it saves only when `monitor` improved (mode as
    EarlyStopping's). After fit, ``saved`` lists the paths written, ``best`` the best
    monitored value."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto"):
        fn = "ModelCheckpoint"
        try:
            import os
            path = os.fspath(path)
        except TypeError:
            raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}") from None
        if not isinstance(path, str):
            raise TypeError(f"{fn}: path must be a str or os.PathLike naming a file, got bytes {path!r}")
        self.path = path
        self.mode = _check_monitor(fn, monitor, mode)
        self.monitor = monitor
        if not isinstance(save_best_only, (bool, np.bool_)):
            raise ValueError(f"{fn}: save_best_only must be True or False, got {save_best_only!r}")
        self.save_best_only = bool(save_best_only)
        self.saved = []
        self.best = None
        self._best = _Best(self.mode, 0.0)

    def on_train_begin(self, logs=None):
        self._best = _Best(self.mode, 0.0)
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            if not self._best.improves(value):
                return
            self._best.value = self.best = value
        try:
            path = self.path.format(epoch=epoch + 1, **{k: v for k, v in logs.items() if k != "epoch"})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} cannot be formatted with epoch and the epoch "
                             f"logs {sorted(logs)}: {exc!r}") from None
        self.model.save(path)
        self.saved.append(path)

    def __repr__(self):
        return (f"ModelCheckpoint({self.path!r}, monitor={self.monitor!r}, save_best_only={self.save_best_only}, "
                f"mode={self.mode!r})")


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.stopped_batch = batch
            self.model.stop_training = True
