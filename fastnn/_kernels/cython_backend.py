"""The cython backend: compiled extension modules (OpenMP when the build had it).

Each kernel runs on fastnn's thread count, handed to its module at every call
(_collect.py).
"""
from ._collect import collect, export

KERNELS = {}
_modules = collect(KERNELS, __package__, (
    "cy_conv", "cy_pool", "cy_matmul", "cy_recurrent",
    "cy_dense", "cy_loss", "cy_norm", "cy_dropout", "cy_embedding", "cy_optim"))
AVAILABLE = bool(_modules)
UNAVAILABLE_REASON = "the compiled extension modules are missing (build with `pip install .`)"


def _run(threads, module, kernel, args, kwargs):
    module.set_num_threads(threads)
    return kernel(*args, **kwargs)


export(globals(), KERNELS, _run)


def openmp_enabled():
    """True when the extensions were compiled with OpenMP."""
    return any(getattr(module, "openmp_enabled", lambda: False)() for module in _modules)


def cpu_tier():
    """The highest CPU tier (fn_base.h's FN_TIER_*) this CPU and build can run."""
    return min(module.cpu_tier() for module in _modules)


def set_tier(tier):
    """Run every module's kernels on `tier` (at most the CPU's); returns the tier set."""
    return min(module.set_tier(tier) for module in _modules)


def active_tier():
    """The tier the modules' kernels run on."""
    return min(module.active_tier() for module in _modules)
