"""The numba backend: @njit kernels, compiled on first use and cached on disk."""
try:
    import numba
except ImportError as exc:  # degraded install: the other backends still work
    AVAILABLE = False
    UNAVAILABLE_REASON = f"numba is not installed ({exc})"
else:
    from ._collect import collect

    AVAILABLE = True
    _modules = collect(globals(), __package__, (
        "numba_conv", "numba_pool", "numba_matmul", "numba_recurrent",
        "numba_dense", "numba_loss", "numba_norm", "numba_dropout", "numba_embedding", "numba_optim"))

    def set_num_threads(n):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
