"""fastnn.nn: layers, containers, initialisers and losses over fastnn's public ops.

Every layer has ``forward(x, training=True) -> y``, ``backward(dy) -> dx``, the dicts
``params``/``grads``/``buffers``, ``train()``/``eval()``, ``config()`` (rebuilt by
``from_config``) and ``set_params``. See docs/nn.md.
"""
from . import init
from ._base import Layer, from_config, register
from ._gradcheck import gradcheck
from .containers import Residual, Sequential
from .conv import AvgPool2d, BatchNorm, Conv2d, GlobalAvgPool2d, MaxPool2d
from .layers import Dropout, Flatten, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from .recurrent import GRU, LSTM, RNN, Embedding, TimeDistributed
from .losses import MSE, Loss, SigmoidCrossEntropy, SoftmaxCrossEntropy, loss_from_config

__all__ = ["Layer", "from_config", "register", "init", "gradcheck",
           "Sequential", "Residual",
           "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Dropout",
           "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm",
           "Embedding", "RNN", "GRU", "LSTM", "TimeDistributed",
           "Loss", "SoftmaxCrossEntropy", "SigmoidCrossEntropy", "MSE", "loss_from_config"]


def __getattr__(name):
    # Model lives in model.py (written separately); imported on first use so this
    # package works with or without it
    if name == "Model":
        from .model import Model
        return Model
    raise AttributeError(f"module 'fastnn.nn' has no attribute {name!r}")
