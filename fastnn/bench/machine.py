"""The machine a run measures: its CPU, libraries and settings (what a reader needs to
trust a result) and its limits, the GEMM and copy roofline that every case is read
against."""
import os
import platform
import re
from datetime import datetime

import numpy as np

import fastnn
from fastnn import _backends

from . import tier as tiers
from .suite import GROUP_KERNEL
from .timing import measure


def _version(module_name):
    try:
        from importlib.metadata import version
        return version(module_name)
    except Exception:
        return None


def blas_info():
    """The BLAS libraries loaded, each with the package that ships it (the numba
    backend's compiled products call SciPy's, its NumPy calls NumPy's; the cython
    kernels call none), without file paths."""
    try:
        from threadpoolctl import threadpool_info
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
    except ImportError:
        return []
    libraries = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        parts = re.split(r"[\\/]", lib.get("filepath", ""))
        owner = next((name.split(".")[0] for name in parts if name.split(".")[0] in ("numpy", "scipy", "torch")),
                     None)
        libraries.append({"owner": owner, **{k: lib.get(k) for k in
                                             ("internal_api", "version", "architecture", "threading_layer")}})
    return libraries


# Settings that change what a run measures, recorded when set.
SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
            "NUMBA_THREADING_LAYER", "FASTNN_BACKEND", "FASTNN_ISA", *tiers.EMULATION_VARIABLES)


def environment(torch=None, asked_isa=None):
    """Versions, CPU, its tier, threads and date."""
    info = fastnn.cpu_info()
    top = tiers.cpu_isa() or info.get("isa_max")
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "fastnn": fastnn.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "numba": _version("numba"),
        "torch": torch.__version__ if torch is not None else _version("torch"),
        "cpu": info.get("cpu"),
        "cpu_count": os.cpu_count(),
        "cpu_info": info,
        "tier": tiers.tier_report(info, asked_isa, top, observed=tiers.observe(torch)),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(),
        "blas": blas_info(),
        "openmp": info.get("openmp"),
        "backends": fastnn.available_backends(),
        "unavailable_backends": _backends.unavailable_backends(),
        "environment_variables": {k: os.environ[k] for k in SETTINGS if k in os.environ},
    }


def gemm_gflops(plan, size=2048, dtype="float32"):
    """GFLOP/s of SciPy's BLAS GEMM: the roofline the report's percentages refer to."""
    from scipy.linalg import blas
    gemm = blas.sgemm if dtype == "float32" else blas.dgemm
    rng = np.random.default_rng(1)
    a = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    timing = measure({"gemm": lambda: gemm(1.0, a, b)}, plan)["gemm"]
    return _rate(2.0 * size ** 3, _best(timing))


def _rate(amount, seconds):
    return amount / seconds / 1e9 if amount is not None and seconds else None


def _best(timing):
    # A limit of the machine is its best showing, not its typical one.
    return min(timing["samples_s"]) if timing.get("samples_s") else None


def copy_gbps(threads, plan, nbytes=128 * 2**20):
    """GB/s of a large array copy (bytes read + bytes written), split over ``threads``
    Python threads: NumPy releases the GIL while it copies."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    if threads == 1:
        def copy():
            np.copyto(dst, src)
    else:
        from concurrent.futures import ThreadPoolExecutor
        bounds = np.linspace(0, src.size, threads + 1).astype(int)
        parts = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        pool = ThreadPoolExecutor(threads)

        def copy():
            list(pool.map(lambda part: np.copyto(dst[part], src[part]), parts))
    try:
        timing = measure({"copy": copy}, plan)["copy"]
    finally:
        if threads != 1:
            pool.shutdown()
    return _rate(2.0 * src.nbytes, _best(timing))


def roofline_entry(threads, plan, size, dtypes):
    """The limits at one thread count: SGEMM (and DGEMM when float64 is measured) and copy."""
    return {"threads": threads, "sgemm_gflops": gemm_gflops(plan, size, "float32"),
            "dgemm_gflops": gemm_gflops(plan, size, "float64") if "float64" in dtypes else None,
            "sgemm_size": size, "copy_gbps": copy_gbps(threads, plan)}


def default_backends():
    """{group: backend} that ``backend=None`` picks."""
    return {group: _backends.resolve("bench", kernel, None)[0] for group, kernel in GROUP_KERNEL.items()}
