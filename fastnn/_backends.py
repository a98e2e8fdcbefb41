"""Backend registry: which kernel modules exist, which one an op uses, thread counts,
and the CPU tier the compiled kernels run on.

A backend is a module that provides some of the kernel functions described in
``docs/KERNELS.md``. ``backend=None`` resolves to the process default set with
:func:`set_backend` (or the ``FASTNN_BACKEND`` environment variable) when there is
one, otherwise to the fastest available backend for that op family on the active
CPU tier.

The tiers are the instruction sets the C kernels are compiled for: ``"avx512"``,
``"avx2"`` (with FMA) and ``"generic"`` (no intrinsics). The highest one the CPU has
is active unless ``FASTNN_ISA`` (or :func:`set_isa`) asks for a lower one; the
numba backend is then compiled for the same level (``NUMBA_CPU_NAME``, when numba
is not imported yet).
"""
import importlib
import os
import sys
import threading
import warnings

_MODULES = {
    "cython": "fastnn._kernels.cython_backend",
    "numba": "fastnn._kernels.numba_backend",
    "reference": "fastnn.reference.kernels",
}

# The one table of kernels: every kernel name a backend may provide (docs/KERNELS.md)
# and the op family it belongs to. A backend module gathers the kernels named here
# (_kernels/_collect.py); backend=None picks a family's backend from _PREFERENCE.
_FAMILY = {
    "conv2d_forward": "conv", "conv2d_backward": "conv", "im2col": "conv", "col2im": "conv",
    "pool2d_forward": "pool", "pool2d_backward": "pool",
    "bmm": "bmm", "bmm_backward": "bmm",
    **{cell + suffix: "recurrent" for cell in ("rnn", "gru", "lstm")
       for suffix in ("_cell_forward", "_cell_backward", "_forward", "_backward")},
    "linear_forward": "dense", "linear_backward": "dense", "activation_forward": "dense",
    "activation_backward": "dense", "softmax": "dense",
    "softmax_cross_entropy_forward": "loss", "softmax_cross_entropy_backward": "loss",
    "sigmoid_cross_entropy_forward": "loss", "sigmoid_cross_entropy_backward": "loss",
    "batch_norm_forward": "norm", "batch_norm_backward": "norm", "batch_norm_inference": "norm",
    "dropout_forward": "dropout", "dropout_backward": "dropout",
    "embedding_forward": "embedding", "embedding_backward": "embedding",
    "sgd_step": "optim", "rmsprop_step": "optim", "adam_step": "optim",
}
KERNEL_NAMES = tuple(_FAMILY)
FAMILIES = tuple(dict.fromkeys(_FAMILY.values()))

# The order in which backend=None tries the backends of each op family on each CPU
# tier, fastest first, as fastnn-bench measured them on that tier (the report
# checks that the default is within 10 % of the fastest; docs/BENCHMARKS.md). The
# tier is the compiled kernels' (without them, "generic").
_CYTHON_FIRST = ("cython", "numba", "reference")
_PREFERENCE = {isa: {family: _CYTHON_FIRST for family in FAMILIES} for isa in ("avx512", "avx2", "generic")}

# The CPU tiers, lowest first (their index is the C kernels' FN_TIER_*), and what
# numba is told to compile for when a lower tier is asked for (it uses the host's
# features whatever CPU it is named, unless the features are named too).
ISAS = ("generic", "avx2", "avx512")
NUMBA_TARGET = {
    "generic": {"NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "+sse2"},
    "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma"},
}

_loaded = {}
_import_errors = {}
_lock = threading.Lock()
_default = None


def _default_threads():
    """The thread count before set_num_threads: OMP_NUM_THREADS when set (OpenMP itself
    would follow it), else the CPUs this process may run on (its affinity mask, which a
    container or taskset narrows), else the CPU count."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) >= 1:
        return int(first)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# the one thread count: every compiled kernel reads it at its call (_kernels/_collect.py)
_num_threads = _default_threads()
_WORKSPACE_DEFAULT = 64 * 2**20
_workspace_bytes = _WORKSPACE_DEFAULT


def _load(name):
    """Import a backend module once; remember why it failed if it did."""
    if name in _loaded:
        return _loaded[name]
    with _lock:
        if name not in _loaded:
            try:
                module = importlib.import_module(_MODULES[name])
                if not getattr(module, "AVAILABLE", True):
                    raise ImportError(getattr(module, "UNAVAILABLE_REASON", "not available"))
            except ImportError as exc:
                module = None
                _import_errors[name] = f"{type(exc).__name__}: {exc}"
            _loaded[name] = module
            if module is not None and _isa is not None and hasattr(module, "set_tier"):
                if module.set_tier(ISAS.index(_isa)) < ISAS.index(_isa):
                    warnings.warn(f"FASTNN_ISA={_isa}: this CPU has no {_isa}; running the "
                                  f"{ISAS[module.active_tier()]} tier", RuntimeWarning, stacklevel=2)
            if name == "cython":
                _note_isa()
    return _loaded[name]


def available_backends():
    """Names of the backends that import on this installation, fastest first."""
    return [name for name in _MODULES if _load(name) is not None]


def unavailable_backends():
    """{name: reason} for the backends that failed to import."""
    available_backends()
    return dict(_import_errors)


def _check_name(fn, name):
    if not isinstance(name, str) or name not in _MODULES or _load(name) is None:
        raise ValueError(
            f"{fn}: unknown or unavailable backend {name!r}; available backends: {available_backends()}"
        )


def set_backend(name):
    """Set the process-wide default backend (None: the fastest per op)."""
    global _default
    if name is not None:
        _check_name("set_backend", name)
    _default = name


def get_backend():
    """The process-wide default backend name, or None (fastest per op)."""
    return _default


def resolve(fn, kernel, backend):
    """Return (backend_name, kernel_function) for public function `fn`."""
    if backend is None:
        backend = _default
    if backend is not None:
        _check_name(fn, backend)
        func = getattr(_loaded[backend], kernel, None)
        if func is None:
            having = [n for n in available_backends() if hasattr(_loaded[n], kernel)]
            raise ValueError(f"{fn}: backend {backend!r} has no {kernel} kernel; backends that have it: {having}")
        return backend, func
    if _active_isa is None:
        _load("cython")  # which tier its kernels run on picks the table
    for name in _PREFERENCE[_active_isa or "generic"][_FAMILY[kernel]]:
        module = _load(name)
        if module is not None and hasattr(module, kernel):
            return name, getattr(module, kernel)
    raise ValueError(f"{fn}: no available backend provides {kernel}")  # reference always does


def kernel_of(name, kernel):
    """The kernel function of an already-used backend (for backward passes)."""
    return getattr(_load(name), kernel)


def set_num_threads(n):
    """Use n threads in the compiled kernels (OpenMP, Numba, and BLAS during the calls
    of kernels that use it; BLAS keeps the user's setting otherwise)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    _num_threads = n


def get_num_threads():
    """The thread count the kernels use: set with set_num_threads, by default
    OMP_NUM_THREADS when set, else the CPUs this process may run on."""
    return _num_threads


def set_workspace_limit(nbytes):
    """Cap the scratch memory (im2col buffers) one convolution call may allocate."""
    global _workspace_bytes
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise ValueError(f"set_workspace_limit: nbytes must be an int >= 1, got {nbytes!r}")
    _workspace_bytes = nbytes


def get_workspace_limit():
    """The scratch-memory cap of one convolution call, in bytes (default 64 MiB)."""
    return _workspace_bytes


_isa = None  # the tier asked for (FASTNN_ISA or set_isa); None: the CPU's highest
_active_isa = None  # the tier the compiled kernels run on (kept by _note_isa)


def _note_isa():
    global _active_isa
    module = _loaded.get("cython")
    _active_isa = ISAS[module.active_tier()] if module is not None else None


def _check_isa(fn, name):
    if not isinstance(name, str) or name.lower() not in ISAS:
        raise ValueError(f"{fn}: unknown instruction-set tier {name!r}; the tiers are {list(ISAS)}")
    return name.lower()


def cpu_isa():
    """The highest tier this CPU (and this build of the compiled kernels) can run,
    or None when the cython backend is not available."""
    module = _load("cython")
    if module is None:
        return None
    return ISAS[module.cpu_tier()]


def get_isa():
    """The tier the compiled kernels run on now (None without the cython backend)."""
    module = _load("cython")
    if module is None:
        return None
    return ISAS[module.active_tier()]


def set_isa(name):
    """Run the compiled kernels on tier ``name`` ("avx512", "avx2" or "generic"), or
    on the CPU's highest when None. A tier above what the CPU has runs the highest
    it has (a warning says so). Returns the tier now active."""
    global _isa
    if name is not None:
        name = _check_isa("set_isa", name)
        top = cpu_isa()
        if top is not None and ISAS.index(name) > ISAS.index(top):
            warnings.warn(f"set_isa: this CPU has no {name}; running the {top} tier", RuntimeWarning,
                          stacklevel=2)
            name = top
    _isa = name
    module = _load("cython")
    if module is not None:
        module.set_tier(ISAS.index(name) if name is not None else len(ISAS) - 1)
    _note_isa()
    return get_isa()


def cpu_info():
    """What fastnn knows of the CPU it runs on: a dict with ``cpu`` (its name),
    ``isa`` (the tier the compiled kernels run on), ``isa_max`` (the highest this
    CPU can run), ``isa_forced`` (the tier asked for with FASTNN_ISA or set_isa, or
    None), ``openmp`` (whether the kernels were built with OpenMP), ``threads`` and
    ``cpus`` (the CPUs this process may use)."""
    module = _load("cython")
    return {
        "cpu": _cpu_name(),
        "isa": get_isa(),
        "isa_max": cpu_isa(),
        "isa_forced": _isa,
        "openmp": bool(module is not None and module.openmp_enabled()),
        "threads": get_num_threads(),
        "cpus": os.cpu_count() or 1,
    }


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "unknown CPU"


def _init_from_environment():
    global _isa
    isa = os.environ.get("FASTNN_ISA")
    if isa:
        _isa = _check_isa("FASTNN_ISA", isa)
        # numba compiles for the host CPU unless told otherwise; it must be told
        # before it is imported
        if _isa in NUMBA_TARGET and "numba" not in sys.modules:
            for name, value in NUMBA_TARGET[_isa].items():
                os.environ.setdefault(name, value)
    name = os.environ.get("FASTNN_BACKEND")
    if name:
        set_backend(name)


_init_from_environment()
