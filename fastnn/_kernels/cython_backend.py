"""The cython backend: compiled extension modules (OpenMP when the build had it)."""
from ._collect import collect

_modules = collect(globals(), __package__, ("cy_conv", "cy_pool", "cy_matmul", "cy_recurrent"))
AVAILABLE = bool(_modules)
UNAVAILABLE_REASON = "the compiled extension modules are missing (build with `pip install .`)"


def set_num_threads(n):
    for module in _modules:
        if hasattr(module, "set_num_threads"):
            module.set_num_threads(n)


def openmp_enabled():
    """True when the extensions were compiled with OpenMP."""
    return any(getattr(module, "openmp_enabled", lambda: False)() for module in _modules)
