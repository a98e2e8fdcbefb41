"""Gather the kernel functions of a backend from its per-family modules."""
import importlib

from .._backends import KERNEL_NAMES


def collect(namespace, package, module_names):
    """Copy the kernels found in package.<module> into namespace; return the modules loaded.

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
                namespace[name] = getattr(module, name)
    return modules
