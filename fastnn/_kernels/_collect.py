"""Gather the kernel functions of a backend from its per-family modules, and run each
one on fastnn's thread count.

fastnn's thread count has one owner, ``fastnn/_backends.py``; a compiled backend's
kernels do not keep their own. Each kernel a backend exports is a wrapper that reads
the count at every call and hands it to the kernel's runtime for that call (OpenMP's
count in the cython modules; numba's, which is per Python thread, and BLAS's during
the call for numba), so a call from any Python thread runs on the same count and
``get_num_threads()`` is what the kernels use.
"""
import functools
import importlib

from .. import _backends
from .._backends import KERNEL_NAMES


def collect(kernels, package, module_names):
    """Copy the kernels found in package.<module> into the dict `kernels` (name ->
    (module, function)); return the modules loaded.

    A family module that is missing is skipped (the backend then lacks that family);
    any other import error propagates, so a broken build is not silently hidden.
    """
    modules = []
    for short in module_names:
        full = f"{package}.{short}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            continue
        modules.append(module)
        for name in KERNEL_NAMES:
            if hasattr(module, name):
                kernels[name] = (module, getattr(module, name))
    return modules


def export(namespace, kernels, run):
    """Put into namespace, for each kernel, a function that calls
    ``run(threads, module, kernel, args, kwargs)`` with fastnn's thread count read at
    the call; the kernel is looked up in `kernels` at each call."""
    for name, (_, kernel) in kernels.items():
        def call(*args, _name=name, **kwargs):
            module, kernel = kernels[_name]
            return run(_backends.get_num_threads(), module, kernel, args, kwargs)
        namespace[name] = functools.wraps(kernel)(call)
