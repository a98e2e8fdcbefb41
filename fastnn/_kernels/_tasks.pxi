# The two ends of a driver's parallel loop over tasks whose results do not depend on
# the thread count (fn_base.h's stall watch, as FN_TASKS keeps it in C): the team a
# loop of ntasks tasks may use, its region begun, and the region's end. The loop body
# brackets each task with fn_main_clock / fn_add_busy:
#
#     nthreads = _team_begin(ntasks, nthreads, &region)
#     for t in prange(ntasks, nogil=True, schedule="dynamic", num_threads=nthreads):
#         t0 = fn_main_clock()
#         ...
#         fn_add_busy(&region.busy, t0)
#     _team_end(nthreads, &region)
from ._fn cimport fn_add_busy, fn_main_clock, fn_region, fn_region_begin, fn_region_end, fn_region_threads


cdef inline int _team_begin(Py_ssize_t ntasks, int nthreads, fn_region* region) noexcept nogil:
    """The loop's thread count (one for fewer than two tasks, or while the module backs
    off after a stall), with its region begun."""
    nthreads = fn_region_threads(1 if ntasks < 2 else nthreads)
    fn_region_begin(region)
    return nthreads


cdef inline void _team_end(int nthreads, const fn_region* region) noexcept nogil:
    """After the loop: a team that waited long for its threads starts a back-off."""
    if nthreads > 1:
        fn_region_end(region)
