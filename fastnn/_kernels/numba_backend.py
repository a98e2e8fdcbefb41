"""The numba backend: @njit kernels, compiled on first use and cached on disk.

Each kernel runs on fastnn's thread count (fastnn.set_num_threads), read at every
call: numba's own setting is per Python thread, so a call from any thread (a web
server's, a Dask worker's) uses the same count; and the BLAS its products call runs
on that count during the call only (_threads.py; from the Python thread that controls
BLAS's shared pool, as threadpoolctl arranges).
"""
try:
    import numba
except ImportError as exc:  # degraded install: the other backends still work
    AVAILABLE = False
    UNAVAILABLE_REASON = f"numba is not installed ({exc})"
else:
    from ._collect import collect, export
    from ._threads import blas_limited

    AVAILABLE = True
    KERNELS = {}
    _modules = collect(KERNELS, __package__, (
        "numba_conv", "numba_pool", "numba_matmul", "numba_recurrent",
        "numba_dense", "numba_loss", "numba_norm", "numba_dropout", "numba_embedding", "numba_optim"))

    import numpy as np

    def _run(threads, module, kernel, args, kwargs):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        # an infinite or NaN input gives infinite or NaN results silently, as in the
        # cython backend, not NumPy's "invalid value encountered in matmul"
        with blas_limited(threads), np.errstate(all="ignore"):
            return kernel(*args, **kwargs)

    export(globals(), KERNELS, _run)
