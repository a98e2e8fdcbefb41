"""Thread helpers shared by the kernels."""

_blas_controller = None


def blas_on_one_thread():
    """A context holding BLAS to the calling thread, or None when that cannot be done.

    Kernels that run their own threads, each calling BLAS on a small block, use it so
    that BLAS's thread pool does not start beside theirs and oversubscribe the cores.
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas_controller = ThreadpoolController()
        except Exception:  # optional dependency: the caller then runs on one thread
            _blas_controller = False
    if _blas_controller is False:
        return None
    return _blas_controller.limit(limits=1, user_api="blas")
