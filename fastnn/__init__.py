"""fastnn: fast CPU kernels for the core operations of deep learning.

Convolution (im2col + GEMM), max/average pooling, batch matrix multiply and
RNN/GRU/LSTM cells and sequences, each forward and backward, on Cython and Numba
backends cross-checked against a pure-Python reference (``fastnn.reference``).
"""
from ._version import __version__
from ._backends import (available_backends, cpu_info, get_backend, get_num_threads, get_workspace_limit,
                        set_backend, set_num_threads, set_workspace_limit)
from .conv import col2im, conv2d, conv2d_backward, conv2d_forward, im2col
from .pool import (avg_pool2d, global_avg_pool2d, global_max_pool2d, max_pool2d, pool2d_backward,
                   pool2d_forward)
from .matmul import bmm, bmm_backward
from .recurrent import (gru_backward, gru_cell_backward, gru_cell_forward, gru_forward, lstm_backward,
                        lstm_cell_backward, lstm_cell_forward, lstm_forward, rnn_backward, rnn_cell_backward,
                        rnn_cell_forward, rnn_forward)
from .converters import (gru_weights_from_course, lstm_weights_from_course, lstm_weights_from_torch,
                         rnn_weights_from_course, rnn_weights_from_torch)
from . import reference

__all__ = [
    "__version__", "available_backends", "cpu_info", "get_backend", "set_backend", "get_num_threads", "set_num_threads",
    "get_workspace_limit", "set_workspace_limit", "reference",
    "conv2d", "conv2d_forward", "conv2d_backward", "im2col", "col2im",
    "max_pool2d", "avg_pool2d", "pool2d_forward", "pool2d_backward", "global_avg_pool2d", "global_max_pool2d",
    "bmm", "bmm_backward",
    "rnn_cell_forward", "rnn_cell_backward", "gru_cell_forward", "gru_cell_backward",
    "lstm_cell_forward", "lstm_cell_backward",
    "rnn_forward", "rnn_backward", "gru_forward", "gru_backward", "lstm_forward", "lstm_backward",
    "lstm_weights_from_course", "lstm_weights_from_torch", "rnn_weights_from_course", "rnn_weights_from_torch",
    "gru_weights_from_course",
]
