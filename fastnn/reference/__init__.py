"""The pure-Python reference of every fastnn op: the course's algorithms as loops.

Same names and signatures as the top-level ``fastnn`` functions, minus ``backend=``:
every call here runs the ``reference`` backend (``fastnn/reference/<family>.py``),
which defines what correct means for the compiled backends. It is slow; use it on small shapes.
"""
import functools
import inspect

from .._ops import CONVERTERS, OP_MODULES


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


for _module in OP_MODULES + (CONVERTERS,):
    _export(_module, _module.__all__)
del _module
