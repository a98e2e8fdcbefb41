"""The one handle on the BLAS libraries' thread pools (NumPy's and SciPy's OpenBLAS or
MKL): set_num_threads holds them to fastnn's thread count, and kernels that run their
own threads, each calling BLAS on a small block, hold them to one thread meanwhile."""

_controller = None


def _blas_controller():
    """A threadpoolctl controller over the BLAS libraries loaded with NumPy and SciPy,
    made once; None when threadpoolctl cannot be used."""
    global _controller
    if _controller is None:
        try:
            import numpy  # noqa: F401  (loads NumPy's BLAS)
            try:
                import scipy.linalg  # noqa: F401  (and SciPy's, which numba's compiled products call)
            except ImportError:
                pass
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        except Exception:  # optional at run time: BLAS then keeps its own setting
            _controller = False
    return _controller or None


def set_blas_threads(n):
    """Hold the BLAS libraries to n threads (until the next call)."""
    controller = _blas_controller()
    if controller is not None:
        controller.limit(limits=n, user_api="blas")


def blas_on_one_thread():
    """A context holding BLAS to the calling thread, or None when that cannot be done.

    Kernels that run their own threads, each calling BLAS on a small block, use it so
    that BLAS's thread pool does not start beside theirs and oversubscribe the cores.
    """
    controller = _blas_controller()
    return None if controller is None else controller.limit(limits=1, user_api="blas")
