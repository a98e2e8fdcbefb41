"""The one handle on the BLAS libraries' thread pools (NumPy's and SciPy's OpenBLAS or
MKL). fastnn leaves them as the user set them, except during a call of a kernel that
calls BLAS (the numba backend's): then they run on fastnn's thread count, and the
user's setting is restored when the call returns."""
import contextlib
import threading

_libraries = None
_lock = threading.Lock()
_active = 0  # kernel calls inside blas_limited now, from every Python thread


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded with NumPy and SciPy,
    found once; () when threadpoolctl cannot be used."""
    global _libraries
    if _libraries is None:
        try:
            import numpy  # noqa: F401  (loads NumPy's BLAS)
            try:
                import scipy.linalg  # noqa: F401  (and SciPy's, which numba's compiled products call)
            except ImportError:
                pass
            from threadpoolctl import ThreadpoolController
            _libraries = tuple(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # optional at run time: BLAS then keeps its own setting
            _libraries = ()
    return _libraries


@contextlib.contextmanager
def blas_limited(n):
    """Run BLAS on n threads inside the block, and as before after it. Calls from
    several Python threads at once share one setting: the first sets it, the last
    restores the user's."""
    global _active, _saved
    libraries = _blas_libraries()
    if not libraries:
        yield
        return
    with _lock:
        if _active == 0:
            _saved = [lib.num_threads for lib in libraries]
        _active += 1
        for lib in libraries:
            if lib.num_threads != n:
                lib.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                for lib, count in zip(libraries, _saved):
                    if lib.num_threads != count:
                        lib.set_num_threads(count)


_saved = []


def blas_on_one_thread():
    """A context holding BLAS to the calling thread (inside a kernel call, which
    blas_limited surrounds), or None when that cannot be done.

    Kernels that run their own threads, each calling BLAS on a small block, use it so
    that BLAS's thread pool does not start beside theirs and oversubscribe the cores.
    """
    libraries = _blas_libraries()
    if not libraries:
        return None
    return _one_thread(libraries)


@contextlib.contextmanager
def _one_thread(libraries):
    with _lock:
        before = [lib.num_threads for lib in libraries]
        for lib in libraries:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        with _lock:
            for lib, count in zip(libraries, before):
                lib.set_num_threads(count)
