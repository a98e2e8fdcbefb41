"""The pure-Python reference of every fastnn op: the course's algorithms as loops.

Same names and signatures as the top-level ``fastnn`` functions, minus ``backend=``:
every call here runs the ``reference`` backend (``fastnn/reference/conv.py``,
``pool.py``, ``matmul.py``, ``recurrent.py``), which defines what correct means for
the compiled backends. It is slow; use it on small shapes.
"""
import functools
import inspect

from .. import conv as _conv
from .. import converters as _converters
from .. import matmul as _matmul
from .. import pool as _pool
from .. import recurrent as _recurrent


def _on_reference(func):
    """func with backend="reference" fixed and the backend parameter removed."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, backend="reference", **kwargs)

    wrapper.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != "backend"])
    return wrapper


def _export(module, names):
    for name in names:
        func = getattr(module, name)
        globals()[name] = _on_reference(func) if "backend" in inspect.signature(func).parameters else func


_export(_conv, ("conv2d", "conv2d_forward", "conv2d_backward", "im2col", "col2im"))
_export(_pool, ("max_pool2d", "avg_pool2d", "pool2d_forward", "pool2d_backward",
                "global_avg_pool2d", "global_max_pool2d"))
_export(_matmul, ("bmm", "bmm_backward"))
_export(_recurrent, ("rnn_cell_forward", "rnn_cell_backward", "gru_cell_forward", "gru_cell_backward",
                     "lstm_cell_forward", "lstm_cell_backward", "rnn_forward", "rnn_backward",
                     "gru_forward", "gru_backward", "lstm_forward", "lstm_backward"))
_export(_converters, ("lstm_weights_from_course", "lstm_weights_from_torch", "rnn_weights_from_course",
                      "rnn_weights_from_torch", "gru_weights_from_course"))
