"""Losses: ``forward(y_pred, y_true) -> float`` (the mean), ``backward() -> dy_pred``.

``backward`` returns the gradient of that mean with respect to ``y_pred``, so it
feeds ``network.backward`` directly.
"""
import numpy as np

from .. import (sigmoid_cross_entropy_backward, sigmoid_cross_entropy_forward, softmax_cross_entropy_backward,
                softmax_cross_entropy_forward)
from ._base import register

_LOSSES = {}


def _register_loss(cls):
    _LOSSES[cls.__name__] = cls
    return register(cls)


def loss_from_config(cfg):
    """Rebuild a loss from ``loss.config()``."""
    if not isinstance(cfg, dict) or cfg.get("type") not in _LOSSES:
        raise ValueError(f"loss_from_config: unknown loss config {cfg!r}; known types: {sorted(_LOSSES)}")
    return _LOSSES[cfg["type"]]()


class Loss:
    def __init__(self):
        self._cache = None

    def __call__(self, y_pred, y_true):
        return self.forward(y_pred, y_true)

    def config(self):
        return {"type": type(self).__name__}

    @classmethod
    def _from_config(cls, kwargs):
        return cls(**kwargs)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def _pred(self, y_pred):
        name = type(self).__name__
        try:
            arr = np.asarray(y_pred)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name}.forward: y_pred cannot be read as an array ({exc})") from None
        if arr.dtype.kind != "f":
            raise TypeError(f"{name}.forward: y_pred must be a float array, got dtype {arr.dtype}")
        return arr

    def _need_forward(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")


@_register_loss
class SoftmaxCrossEntropy(Loss):
    """Softmax over the last axis of the logits, then cross-entropy, averaged over the
    examples (every leading position: a ``(batch, T, V)`` sequence averages over
    ``batch * T``). ``y_true``: integer class indices of shape ``logits.shape[:-1]``,
    or probability / one-hot rows of the logits' shape.
    """

    def forward(self, y_pred, y_true):
        logits = self._pred(y_pred)
        if logits.ndim < 1:
            raise ValueError(f"SoftmaxCrossEntropy.forward: y_pred must have a class axis, got shape {logits.shape}")
        target = np.asarray(y_true)
        if target.shape != logits.shape and target.shape != logits.shape[:-1]:
            raise ValueError(f"SoftmaxCrossEntropy.forward: y_true has shape {target.shape}; expected class indices "
                             f"of shape {logits.shape[:-1]} or probabilities of shape {logits.shape}")
        loss, self._cache = softmax_cross_entropy_forward(logits, target, reduction="mean")
        return float(loss)

    def backward(self):
        self._need_forward()
        return softmax_cross_entropy_backward(self._cache)


@_register_loss
class SigmoidCrossEntropy(Loss):
    """Sigmoid of every logit, then binary cross-entropy, averaged over every logit
    (PyTorch's ``binary_cross_entropy_with_logits``). ``y_true`` in [0, 1], the logits' shape.
    """

    def forward(self, y_pred, y_true):
        logits = self._pred(y_pred)
        target = np.asarray(y_true)
        if target.shape != logits.shape:
            raise ValueError(f"SigmoidCrossEntropy.forward: y_true has shape {target.shape} but y_pred has shape "
                             f"{logits.shape}")
        loss, self._cache = sigmoid_cross_entropy_forward(logits, target, reduction="mean")
        return float(loss)

    def backward(self):
        self._need_forward()
        return sigmoid_cross_entropy_backward(self._cache)


@_register_loss
class MSE(Loss):
    """Mean squared error over every element, ``mean((y_pred - y_true)**2)``
    (PyTorch's ``MSELoss``); no fastnn op computes it, so it is NumPy here.
    """

    def forward(self, y_pred, y_true):
        pred = self._pred(y_pred)
        target = np.asarray(y_true)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"MSE.forward: y_true must be real numbers, got dtype {target.dtype}")
        if target.shape != pred.shape:
            raise ValueError(f"MSE.forward: y_true has shape {target.shape} but y_pred has shape {pred.shape}")
        diff = pred - target.astype(pred.dtype)
        self._cache = (diff, pred.size)
        return float(np.mean(diff * diff)) if pred.size else float("nan")

    def backward(self):
        self._need_forward()
        diff, n = self._cache
        return (diff * (2.0 / max(n, 1))).astype(diff.dtype)
