# What every cython kernel module has (each includes this file): its OpenMP thread
# count, and the CPU tier of its C kernels, a setting each extension module holds a
# copy of (fn_base.h) and the Python layer sets in all of them together
# (cython_backend.py, fastnn/_backends.py); and the one way a driver reaches an
# array's data.
cimport numpy as cnp

from ._fn cimport fn_cpu_tier, fn_max_threads, fn_openmp, fn_set_tier, fn_tier

cnp.import_array()


cdef inline void* _data(object a):
    """The data of an ndarray (C-contiguous, as every kernel argument is)."""
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _num_threads = max(1, fn_max_threads())


def set_num_threads(n):
    """Use n OpenMP threads in these kernels."""
    global _num_threads
    _num_threads = max(1, int(n))


def get_num_threads():
    """The OpenMP thread count of these kernels."""
    return _num_threads


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fn_openmp())


def cpu_tier():
    """The highest CPU tier this CPU can run (fn_base.h's FN_TIER_*)."""
    return fn_cpu_tier()


def set_tier(int tier):
    """Run this module's kernels on `tier` (at most the CPU's); returns the tier set."""
    return fn_set_tier(tier)


def active_tier():
    """The tier this module's kernels run on."""
    return fn_tier()


cdef extern from "fn_kernels.h":
    int _backing_off "fn_backing_off"() noexcept nogil


def backing_off():
    """True while this module runs its kernels on one thread after a stall (fn_base.h)."""
    return bool(_backing_off())
