"""fastnn: fast CPU kernels for deep learning as the Deep Learning Specialization
defines it, and what it takes to train its networks.

Convolution (im2col + GEMM), max/average pooling, batch matrix multiply, RNN/GRU/LSTM
cells and sequences, dense layers and activations, softmax / sigmoid cross-entropy,
batch normalisation, dropout and embeddings, each forward and backward, on Cython
and Numba backends cross-checked against a pure-Python reference
(``fastnn.reference``); fused optimizer steps in ``fastnn.optim``; layers, losses and
``fastnn.gradcheck`` in ``fastnn.nn``.
"""
from ._version import __version__
from ._backends import (available_backends, cpu_info, get_backend, get_num_threads, get_workspace_limit,
                        set_backend, set_num_threads, set_workspace_limit)
from ._ops import CONVERTERS, OP_MODULES
from .conv import *  # noqa: F401,F403  (each op module's __all__ is its public functions)
from .pool import *  # noqa: F401,F403
from .matmul import *  # noqa: F401,F403
from .recurrent import *  # noqa: F401,F403
from .dense import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .embedding import *  # noqa: F401,F403
from .converters import *  # noqa: F401,F403

__all__ = ["__version__", "available_backends", "cpu_info", "get_backend", "set_backend", "get_num_threads",
           "set_num_threads", "get_workspace_limit", "set_workspace_limit", "reference", "optim", "nn",
           "gradcheck"]
for _module in OP_MODULES + (CONVERTERS,):
    __all__ += _module.__all__
del _module

from . import optim, reference  # noqa: E402
from . import nn  # noqa: E402  (layers over the public ops above)
from .nn import gradcheck  # noqa: E402
