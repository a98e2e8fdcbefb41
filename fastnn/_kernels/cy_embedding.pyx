"""Embedding kernels of the cython backend (flat ids, normalised arguments; docs/KERNELS.md).

Forward copies one table row per position (rows are contiguous: vector copies of the
active tier's width, fn_embedding.h); blocks of positions are the threads' tasks.

Backward is a scatter-add without races: a counting sort groups the positions by id
(stable, so each group is in position order), then the rows of the table's gradient
are split over the threads, and each row is written once, by one thread: zeros for a
row no id selects, else ``0 + dy[p1] + dy[p2] + ...`` over its positions in
increasing order (the reference's np.add.at onto zeros, to the bit). No row is
zeroed first and added to later, so the gradient's memory is written once, and a
gradient larger than the caches is written with non-temporal stores (fn_embedding.h:
ordinary stores would read each line before writing it). The result is the same at
every thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from .._arena import empty as _empty
from ._fn_embedding cimport (fn_emb_fence, fn_emb_gather_d, fn_emb_gather_f, fn_emb_sum_row_d, fn_emb_sum_row_f,
                             fn_emb_zero_d, fn_emb_zero_f)

include "_module.pxi"
include "_tasks.pxi"

# bytes of output per task: enough to make handing out a task negligible, small
# enough that two threads share a (64, 50) x 256 float32 lookup evenly
cdef Py_ssize_t _TASK_BYTES = 32768
# a table gradient of at least this many bytes is written past the caches
# (fn_embedding.h): it is larger than a core's level-2 cache, and ordinary stores
# would first read every line they write
cdef Py_ssize_t _STREAM_BYTES = 4194304


def _set_stream_bytes(Py_ssize_t nbytes):
    """Stream table gradients of at least nbytes from now on (tests and measurements
    use it to reach both store paths); returns the previous threshold."""
    global _STREAM_BYTES
    old = _STREAM_BYTES
    _STREAM_BYTES = nbytes
    return old


cdef inline Py_ssize_t _rows_per_task(Py_ssize_t row_bytes) noexcept nogil:
    return max(1, _TASK_BYTES // max(row_bytes, 1))


cdef void _gather(const int64_t* ids, const floating* table, floating* y, Py_ssize_t n_pos, Py_ssize_t width,
                  int nthreads) noexcept nogil:
    cdef Py_ssize_t per = _rows_per_task(width * sizeof(floating))
    cdef Py_ssize_t ntasks = (n_pos + per - 1) // per
    cdef Py_ssize_t t
    cdef fn_region region
    cdef double t0
    nthreads = _team_begin(ntasks, nthreads, &region)
    for t in prange(ntasks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        if floating is float:
            fn_emb_gather_f(ids, table, y, t * per, min((t + 1) * per, n_pos), width)
        else:
            fn_emb_gather_d(ids, table, y, t * per, min((t + 1) * per, n_pos), width)
        fn_add_busy(&region.busy, t0)
    _team_end(nthreads, &region)


cdef void _group_by_id(const int64_t* ids, Py_ssize_t n_pos, Py_ssize_t n_rows, int64_t* start,
                       int64_t* order) noexcept nogil:
    """Counting sort: afterwards the positions with id v are order[start[v]:start[v + 1]],
    increasing. start has n_rows + 2 entries, zero on entry."""
    cdef Py_ssize_t p, v
    for p in range(n_pos):
        start[ids[p] + 2] += 1
    for v in range(1, n_rows + 2):
        start[v] += start[v - 1]
    # start[v + 1] is the first slot of id v; filling moves it to the first of v + 1
    for p in range(n_pos):
        v = ids[p] + 1
        order[start[v]] = p
        start[v] += 1


cdef inline void _zero_rows(floating* rows, Py_ssize_t n, int stream) noexcept nogil:
    if floating is float:
        fn_emb_zero_f(rows, n, stream)
    else:
        fn_emb_zero_d(rows, n, stream)


cdef void _scatter_rows(const floating* dy, Py_ssize_t width, const int64_t* start, const int64_t* order,
                        floating* out, Py_ssize_t n_rows, int nthreads) noexcept nogil:
    cdef Py_ssize_t row_bytes = width * sizeof(floating)
    cdef Py_ssize_t per = _rows_per_task(row_bytes)
    cdef Py_ssize_t ntasks = (n_rows + per - 1) // per
    cdef int stream = n_rows * row_bytes >= _STREAM_BYTES
    cdef Py_ssize_t t, v, v1, zero_from
    cdef fn_region region
    cdef double t0
    nthreads = _team_begin(ntasks, nthreads, &region)
    for t in prange(ntasks, nogil=True, schedule="dynamic", num_threads=nthreads):
        t0 = fn_main_clock()
        v1 = min((t + 1) * per, n_rows)
        zero_from = t * per  # the first of the unused rows not yet zeroed
        for v in range(t * per, v1):
            if start[v + 1] > start[v]:
                if v > zero_from:
                    _zero_rows(out + zero_from * width, (v - zero_from) * width, stream)
                if floating is float:
                    fn_emb_sum_row_f(out + v * width, dy, width, order, start[v], start[v + 1], stream)
                else:
                    fn_emb_sum_row_d(out + v * width, dy, width, order, start[v], start[v + 1], stream)
                zero_from = v + 1
        if v1 > zero_from:
            _zero_rows(out + zero_from * width, (v1 - zero_from) * width, stream)
        fn_emb_fence(stream)
        fn_add_busy(&region.busy, t0)
    _team_end(nthreads, &region)


def embedding_forward(ids, table):
    """(y, (ids, V)): y[p] = table[ids[p]], (P, D)."""
    cdef Py_ssize_t n_pos = ids.shape[0], width = table.shape[1]
    cdef int threads = _num_threads
    cdef bint single = table.dtype == np.float32
    cdef const int64_t* ip
    cdef const void* tp
    cdef void* yp
    y = _empty((n_pos, width), table.dtype)
    if n_pos * width > 0:
        ip = <const int64_t*>_data(ids)
        tp = _data(table)
        yp = _data(y)
        with nogil:
            if single:
                _gather(ip, <const float*>tp, <float*>yp, n_pos, width, threads)
            else:
                _gather(ip, <const double*>tp, <double*>yp, n_pos, width, threads)
    return y, (ids, table.shape[0])


def embedding_backward(dy, state):
    """dtable (V, D): row v = 0 + the dy rows of the positions with id v, in position order."""
    ids, n_rows_obj = state
    cdef Py_ssize_t n_rows = n_rows_obj
    cdef Py_ssize_t n_pos = dy.shape[0], width = dy.shape[1]
    cdef int threads = _num_threads
    cdef bint single = dy.dtype == np.float32
    cdef const int64_t* ip
    cdef int64_t* sp
    cdef int64_t* op
    cdef const void* dyp
    cdef void* outp
    out = _empty((n_rows, width), dy.dtype)
    if n_rows * width == 0:
        return out
    start = np.zeros(n_rows + 2, dtype=np.int64)
    order = np.empty(n_pos, dtype=np.int64)
    ip = <const int64_t*>_data(ids)
    sp = <int64_t*>_data(start)
    op = <int64_t*>_data(order)
    dyp = _data(dy)
    outp = _data(out)
    with nogil:
        _group_by_id(ip, n_pos, n_rows, sp, op)
        if single:
            _scatter_rows(<const float*>dyp, width, sp, op, <float*>outp, n_rows, threads)
        else:
            _scatter_rows(<const double*>dyp, width, sp, op, <double*>outp, n_rows, threads)
    return out
