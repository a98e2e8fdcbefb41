"""Batch matrix multiply kernels of the cython backend (normalised arguments; docs/KERNELS.md).

float32 products of enough size run on fastnn's own AVX-512 kernels where the CPU
has them (fn_sgemm.h; see _own_enabled below). Every other product is one BLAS
GEMM on the operands as they lie in memory: transposes are GEMM flags and
broadcasting is an index per batch entry, so nothing is copied.

Threads: a GEMM small enough that BLAS runs it on one thread anyway (below
``_SMALL_GEMM``) is dominated by per-call overhead, so such batches run in parallel
over the batch entries with OpenMP, one single-threaded GEMM per entry. Larger
GEMMs run one after the other, each on BLAS's own threads. The two never nest,
so OpenMP and BLAS threads (both set by ``fastnn.set_num_threads``) never
oversubscribe the cores.

When one operand is shared by the whole batch and the other is used once per entry
in order (``x @ W`` with a broadcast ``W``), the batch is a single tall GEMM.

Backward sums the contributions of entries that share an operand in increasing
batch order (first GEMM with beta=0, the rest with beta=1); groups are independent,
so threads split the groups and the result does not depend on the thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from ._blas cimport gemm

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastnn_matmul_openmp(void) { return 1; }
    static int fastnn_matmul_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastnn_matmul_openmp(void) { return 0; }
    static int fastnn_matmul_max_threads(void) { return 1; }
    #endif
    """
    int fastnn_matmul_openmp() noexcept nogil
    int fastnn_matmul_max_threads() noexcept nogil

cdef extern from "fn_sgemm.h":
    int fn_sgemm_supported() noexcept nogil
    void* fn_alloc(size_t nbytes) noexcept nogil
    void fn_free(void* p) noexcept nogil
    size_t fn_sgemm_any_scratch(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int trans_a) noexcept nogil
    void fn_sgemm_any_mt(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, int accumulate,
                         float* C, Py_ssize_t ldc, float* scratch, int threads) noexcept nogil


cdef int _num_threads = max(1, fastnn_matmul_max_threads())

# OpenBLAS runs a GEMM with M*N*K up to 4 * 65536 on a single thread; above that it
# threads the GEMM itself and the batch loop must stay serial.
cdef double _SMALL_GEMM = 262144.0


# float32 products run on fastnn's own AVX-512 kernels (fn_sgemm.h) where the CPU has
# them and the product is large enough (below _OWN_MIN_MNK, OpenBLAS's single-threaded
# small-GEMM path is cheaper than packing) and wide enough for their 64-column tiles
# (_OWN_MIN_N): per batch entry the
# right operand is packed and the product runs on one thread, the entries split over
# the threads (a 128^3 product gains little from BLAS's threads, and a batch of them
# splits evenly); a single entry splits its own tiles instead. No BLAS call, so no
# BLAS threads beside the OpenMP ones. Results do not depend on the thread count.
cdef bint _own_supported = fn_sgemm_supported() != 0
cdef bint _own_enabled = _own_supported
cdef int _OWN_MIN_N = 32
cdef double _OWN_MIN_MNK = 262144.0


def own_kernels(enabled=None):
    """Whether float32 products use the own AVX-512 kernels; ``enabled`` switches them.

    Returns the setting in force before the call; they can only be enabled on a CPU
    with AVX-512.
    """
    global _own_enabled
    before = _own_enabled
    if enabled is not None:
        _own_enabled = bool(enabled) and _own_supported
    return before


cdef inline bint _use_own(int M, int N, int K) noexcept nogil:
    return _own_enabled and M > 0 and K > 0 and N >= _OWN_MIN_N and <double>M * N * K >= _OWN_MIN_MNK


cdef inline int _own_threads(Py_ssize_t jobs) noexcept nogil:
    """Threads over independent products (1: one at a time, each on all threads)."""
    if _num_threads <= 1 or jobs < _num_threads or not fastnn_matmul_openmp():
        return 1
    return _num_threads


def set_num_threads(n):
    """Use n OpenMP threads in these kernels (BLAS threads are set by the caller)."""
    global _num_threads
    _num_threads = max(1, int(n))


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fastnn_matmul_openmp())


cdef inline int _threads_for(Py_ssize_t jobs, double mnk) noexcept nogil:
    """OpenMP threads for `jobs` independent GEMMs of size mnk (1: run serially)."""
    if _num_threads <= 1 or jobs <= 1 or mnk > _SMALL_GEMM:
        return 1
    return _num_threads if jobs > _num_threads else <int>jobs


def _is_identity(index, n):
    return index.shape[0] == n and (n == 0 or (index[0] == 0 and bool(np.all(np.diff(index) == 1))))


def _shared_index(index):
    """The one operand index every batch entry uses, or -1."""
    if index.shape[0] == 0:
        return -1
    first = int(index[0])
    return first if bool(np.all(index == first)) else -1


def _groups(index, count):
    """Batch entries grouped by operand: (entries sorted by operand, group starts)."""
    order = np.argsort(index, kind="stable").astype(np.int64)
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(index, minlength=count), out=starts[1:])
    return order, starts


cdef inline void _product(bint trans_a, bint trans_b, int M, int N, int K, const floating* A, int lda,
                          const floating* B, int ldb, bint accumulate, floating* C, float* scratch,
                          int threads) noexcept nogil:
    """C (M, N) (+)= op(A) @ op(B): on the own kernels when given their scratch (float32,
    the product split over `threads`), else by BLAS."""
    if floating is float:
        if scratch != NULL:
            fn_sgemm_any_mt(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, N, scratch, threads)
            return
    gemm(trans_a, trans_b, M, N, K, <floating>1, A, lda, B, ldb, <floating>(1 if accumulate else 0), C, N)


cdef inline size_t _own_scratch_bytes(bint own, int M, int N, int K, bint trans_a) noexcept nogil:
    return fn_sgemm_any_scratch(M, N, K, trans_a) * sizeof(float) if own else 0


def _bmm_loop(const floating[:, :, ::1] a, const floating[:, :, ::1] b,
              const int64_t[::1] a_index, const int64_t[::1] b_index,
              floating[:, :, ::1] c, bint trans_a, bint trans_b, int M, int N, int K):
    cdef Py_ssize_t batch = a_index.shape[0], p
    cdef Py_ssize_t a_step = a.shape[1] * a.shape[2], b_step = b.shape[1] * b.shape[2]
    cdef Py_ssize_t c_step = <Py_ssize_t>M * N
    cdef int lda = <int>a.shape[2], ldb = <int>b.shape[2]
    cdef const floating* pa = &a[0, 0, 0]
    cdef const floating* pb = &b[0, 0, 0]
    cdef floating* pc = &c[0, 0, 0]
    cdef int threads = _threads_for(batch, <double>M * N * K), inner = 1
    cdef float* scratch
    cdef bint own = False
    if floating is float:
        own = _use_own(M, N, K)
    if own:
        # entries split over the threads, or each entry's product over them
        threads = _own_threads(batch)
        inner = 1 if threads > 1 or not fastnn_matmul_openmp() else _num_threads
    cdef size_t scratch_size = _own_scratch_bytes(own, M, N, K, trans_a)
    # no scratch (BLAS, or a failed allocation): the products go to BLAS
    with nogil:
        if threads > 1:
            for p in prange(batch, num_threads=threads, schedule="static"):
                scratch = <float*>fn_alloc(scratch_size) if own else NULL
                _product(trans_a, trans_b, M, N, K, pa + a_index[p] * a_step, lda, pb + b_index[p] * b_step,
                         ldb, False, pc + p * c_step, scratch, 1)
                fn_free(scratch)
        else:
            scratch = <float*>fn_alloc(scratch_size) if own else NULL
            for p in range(batch):
                _product(trans_a, trans_b, M, N, K, pa + a_index[p] * a_step, lda, pb + b_index[p] * b_step,
                         ldb, False, pc + p * c_step, scratch, inner)
            fn_free(scratch)


def _tall_gemm(const floating[:, :, ::1] a, const floating[:, :, ::1] b, Py_ssize_t j,
               floating[:, :, ::1] c, bint trans_b, int rows, int N, int K):
    """c (rows, N) = a (rows, K) @ op(b[j]): the batch stacked into one GEMM."""
    cdef const floating* pb = &b[0, 0, 0] + j * b.shape[1] * b.shape[2]
    with nogil:
        gemm(False, trans_b, rows, N, K, <floating>1, &a[0, 0, 0], K, pb, <int>b.shape[2],
             <floating>0, &c[0, 0, 0], N)


def bmm(a, b, a_index, b_index, trans_a, trans_b):
    cdef int M = a.shape[2] if trans_a else a.shape[1]
    cdef int K = a.shape[1] if trans_a else a.shape[2]
    cdef int N = b.shape[1] if trans_b else b.shape[2]
    cdef Py_ssize_t batch = a_index.shape[0]
    c = np.empty((batch, M, N), dtype=a.dtype)
    if c.size == 0:
        return c
    if not trans_a and _is_identity(a_index, a.shape[0]):
        j = _shared_index(b_index)
        if j >= 0 and batch * <Py_ssize_t>M < 2**31:
            _tall_gemm(a, b, j, c, trans_b, batch * M, N, K)
            return c
    _bmm_loop(a, b, a_index, b_index, c, trans_a, trans_b, M, N, K)
    return c


def _grad_loop(const floating[:, :, ::1] dc, const floating[:, :, ::1] other,
               const int64_t[::1] other_index, const int64_t[::1] order,
               const int64_t[::1] starts, floating[:, :, ::1] grad,
               bint dc_first, bint trans_dc, bint trans_other, int M, int N, int K):
    """grad[i] = sum over entries p of group i (in order) of op(dc[p]) @ op(other[other_index[p]])
    (or op(other) @ op(dc) when not dc_first); (M, N) is grad[i]'s shape, K the inner size."""
    cdef Py_ssize_t groups = grad.shape[0], i, q, p, r
    cdef Py_ssize_t dc_step = dc.shape[1] * dc.shape[2]
    cdef Py_ssize_t other_step = other.shape[1] * other.shape[2]
    cdef Py_ssize_t grad_step = <Py_ssize_t>M * N
    cdef int ld_dc = <int>dc.shape[2], ld_other = <int>other.shape[2]
    cdef const floating* pdc = &dc[0, 0, 0]
    cdef const floating* po = &other[0, 0, 0]
    cdef floating* pg = &grad[0, 0, 0]
    cdef floating* out
    cdef const floating* first
    cdef const floating* second
    cdef float* scratch
    cdef bint own = False
    cdef int threads = _threads_for(groups, <double>M * N * K), inner = 1
    if floating is float:
        own = _use_own(M, N, K)
    if own:
        # groups split over the threads, or a single group's products over them
        threads = _own_threads(groups)
        inner = 1 if threads > 1 or not fastnn_matmul_openmp() else _num_threads
    # the product is first @ second: op(dc) @ op(other), or op(other) @ op(dc)
    cdef bint ta = trans_dc if dc_first else trans_other, tb = trans_other if dc_first else trans_dc
    cdef int ld_first = ld_dc if dc_first else ld_other, ld_second = ld_other if dc_first else ld_dc
    cdef size_t scratch_size = _own_scratch_bytes(own, M, N, K, ta)
    with nogil:
        for i in prange(groups, num_threads=threads, schedule="static"):
            out = pg + i * grad_step
            if starts[i] == starts[i + 1]:
                for r in range(grad_step):
                    out[r] = 0
            # no scratch (BLAS, or a failed allocation): the products go to BLAS
            scratch = <float*>fn_alloc(scratch_size) if own and starts[i] < starts[i + 1] else NULL
            for q in range(starts[i], starts[i + 1]):
                p = order[q]
                first = pdc + p * dc_step if dc_first else po + other_index[p] * other_step
                second = po + other_index[p] * other_step if dc_first else pdc + p * dc_step
                _product(ta, tb, M, N, K, first, ld_first, second, ld_second, q != starts[i], out, scratch,
                         inner)
            fn_free(scratch)


def _tall_backward(const floating[:, :, ::1] dc, const floating[:, :, ::1] a,
                   const floating[:, :, ::1] b, Py_ssize_t j,
                   floating[:, :, ::1] da, floating[:, :, ::1] db,
                   bint trans_b, int rows, int M, int N, int K):
    """The backward of _tall_gemm: da = dc @ op(b[j])^T and db[j] = a^T @ dc (each one GEMM)."""
    cdef Py_ssize_t b_step = b.shape[1] * b.shape[2]
    cdef const floating* pb = &b[0, 0, 0] + j * b_step
    cdef floating* pdb = &db[0, 0, 0]
    cdef Py_ssize_t r
    with nogil:
        gemm(False, not trans_b, rows, K, N, <floating>1, &dc[0, 0, 0], N, pb, <int>b.shape[2],
             <floating>0, &da[0, 0, 0], K)
        for r in range(db.shape[0] * b_step):
            pdb[r] = 0
        if trans_b:
            gemm(True, False, N, K, rows, <floating>1, &dc[0, 0, 0], N, &a[0, 0, 0], K,
                 <floating>0, pdb + j * b_step, K)
        else:
            gemm(True, False, K, N, rows, <floating>1, &a[0, 0, 0], K, &dc[0, 0, 0], N,
                 <floating>0, pdb + j * b_step, N)


def bmm_backward(dc, a, b, a_index, b_index, trans_a, trans_b):
    cdef int M = a.shape[2] if trans_a else a.shape[1]
    cdef int K = a.shape[1] if trans_a else a.shape[2]
    cdef int N = b.shape[1] if trans_b else b.shape[2]
    cdef Py_ssize_t batch = a_index.shape[0]
    da = np.empty(a.shape, dtype=a.dtype)
    db = np.empty(b.shape, dtype=b.dtype)
    if batch == 0 or M == 0 or N == 0 or K == 0:
        da.fill(0)
        db.fill(0)
        return da, db
    if not trans_a and _is_identity(a_index, a.shape[0]):
        j = _shared_index(b_index)
        if j >= 0 and batch * <Py_ssize_t>M < 2**31:
            _tall_backward(dc, a, b, j, da, db, trans_b, batch * M, M, N, K)
            return da, db
    order, starts = _groups(a_index, a.shape[0])
    # da[i] = dc @ op(b)^T, stored as op(a) is: (M, K), or its transpose (K, M).
    if trans_a:
        _grad_loop(dc, b, b_index, order, starts, da, False, True, trans_b, K, M, N)
    else:
        _grad_loop(dc, b, b_index, order, starts, da, True, False, not trans_b, M, K, N)
    order, starts = _groups(b_index, b.shape[0])
    # db[j] = op(a)^T @ dc, stored as op(b) is: (K, N), or its transpose (N, K).
    if trans_b:
        _grad_loop(dc, a, a_index, order, starts, db, True, True, trans_a, N, K, M)
    else:
        _grad_loop(dc, a, a_index, order, starts, db, False, False, not trans_a, K, N, M)
    return da, db
