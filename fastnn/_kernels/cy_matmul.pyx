"""Batch matrix multiply kernels of the cython backend (normalised arguments; docs/KERNELS.md).

Every product runs on fastnn's own GEMM core (fn_gemm.h, through _fn.pxd) on the
active CPU tier, float32 and float64 alike: per product the right operand is packed
into the tile's panels (a transposed one by register transposes; a transposed left
operand is transposed once into the same scratch), then the tiles run. Transposes
reach the kernels as flags and broadcasting as an index per batch entry, so no
operand is copied to form the batch.

Threads: a batch of at least as many products as threads splits the products over
the threads in pieces of consecutive products, each product on one thread (a 128^3
product gains little from being split, and a batch splits evenly); a piece runs as
one list (fn_gemm.h's gemm_list), whose products fetch the next one's operands
into the cache while they compute. A smaller batch runs its products one after the
other, each split over the threads by tiles. When one operand is shared by the
whole batch and the other is used once per entry in order (``x @ W`` with a
broadcast ``W``), the batch is a single tall product.

Backward sums the contributions of entries that share an operand in increasing
batch order (the first product stored, the rest accumulated); groups are
independent, so threads split the groups. A tile is always summed whole by one
thread in a fixed order, so results do not depend on the thread count.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

from ._fn cimport (any_scratch, fn_add_busy, fn_alloc, fn_free, fn_main_clock, fn_region, fn_region_begin,
                   fn_region_end, fn_region_threads, gemm_any_mt, gemm_list, gemm_tn2_mt)


include "_module.pxi"


cdef inline int _outer_threads(Py_ssize_t jobs) noexcept nogil:
    """Threads over independent products (1: one at a time, each split over the threads;
    also while backing off after a stall, fn_base.h)."""
    if _num_threads <= 1 or jobs < _num_threads or not fn_openmp():
        return 1
    return fn_region_threads(_num_threads)


cdef inline int _inner_threads(int outer) noexcept nogil:
    return 1 if outer > 1 or not fn_openmp() else _num_threads


cdef bint _is_identity(const int64_t[::1] index, Py_ssize_t n):
    """index is 0, 1, ..., n - 1 (every batch entry its own operand, in order)."""
    cdef Py_ssize_t i
    if index.shape[0] != n:
        return False
    for i in range(n):
        if index[i] != i:
            return False
    return True


cdef Py_ssize_t _shared_index(const int64_t[::1] index):
    """The one operand index every batch entry uses, or -1."""
    cdef Py_ssize_t i
    if index.shape[0] == 0:
        return -1
    for i in range(1, index.shape[0]):
        if index[i] != index[0]:
            return -1
    return index[0]


def _groups(index, count):
    """Batch entries grouped by operand: (entries sorted by operand, group starts)."""
    if _is_identity(index, count):
        order = np.arange(count, dtype=np.int64)
        return order, np.arange(count + 1, dtype=np.int64)
    order = np.argsort(index, kind="stable").astype(np.int64)
    starts = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(index, minlength=count), out=starts[1:])
    return order, starts


cdef int _list_chunks(Py_ssize_t count, int threads) noexcept nogil:
    """Pieces a list of products is cut into for `threads` threads: several per thread
    (dynamic scheduling evens out a slow thread), each long enough that its products
    fetch the next one's data ahead (FN(gemm_list))."""
    return 1 if threads <= 1 else <int>(count if count < 8 * threads else 8 * threads)


cdef void _run_list(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                    const floating* const* A, Py_ssize_t lda, const floating* const* B, Py_ssize_t ldb,
                    floating* const* C, Py_ssize_t ldc, const unsigned char* accumulate,
                    const Py_ssize_t* bounds, int pieces, int threads, size_t scratch_size, bint* failed) noexcept nogil:
    """The products bounds[i] .. bounds[i + 1] of piece i, for every piece, the pieces
    split over `threads` threads (each piece on one thread, in order)."""
    cdef Py_ssize_t i
    cdef floating* scratch
    cdef fn_region region
    cdef double t0
    if threads > 1:
        fn_region_begin(&region)
        for i in prange(pieces, num_threads=threads, schedule="dynamic"):
            t0 = fn_main_clock()
            scratch = <floating*>fn_alloc(scratch_size)
            if scratch == NULL:
                failed[0] = True
            else:
                gemm_list(trans_a, trans_b, M, N, K, A + bounds[i], lda, B + bounds[i], ldb, C + bounds[i], ldc,
                          accumulate + bounds[i] if accumulate != NULL else NULL, bounds[i + 1] - bounds[i],
                          scratch)
            fn_free(scratch)
            fn_add_busy(&region.busy, t0)
        fn_region_end(&region)
    else:
        scratch = <floating*>fn_alloc(scratch_size)
        if scratch == NULL:
            failed[0] = True
        else:
            for i in range(pieces):
                gemm_list(trans_a, trans_b, M, N, K, A + bounds[i], lda, B + bounds[i], ldb, C + bounds[i], ldc,
                          accumulate + bounds[i] if accumulate != NULL else NULL, bounds[i + 1] - bounds[i],
                          scratch)
        fn_free(scratch)


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
    cdef int threads = _outer_threads(batch), inner = _inner_threads(threads), pieces, i
    cdef size_t scratch_size = any_scratch(floating is double, M, N, K, trans_a) * sizeof(floating)
    cdef floating* scratch
    cdef bint failed = False
    cdef const floating** As
    cdef const floating** Bs
    cdef floating** Cs
    cdef Py_ssize_t* bounds
    with nogil:
        if threads == 1 and inner > 1:
            # a small batch: one product after another, each split over the threads
            scratch = <floating*>fn_alloc(scratch_size)
            if scratch == NULL:
                failed = True
            else:
                for p in range(batch):
                    gemm_any_mt(trans_a, trans_b, M, N, K, pa + a_index[p] * a_step, lda,
                                pb + b_index[p] * b_step, ldb, False, pc + p * c_step, N, scratch, inner)
            fn_free(scratch)
        else:
            pieces = _list_chunks(batch, threads)
            As = <const floating**>fn_alloc(3 * batch * sizeof(void*) + (pieces + 1) * sizeof(Py_ssize_t))
            if As == NULL:
                failed = True
            else:
                Bs = As + batch
                Cs = <floating**>(Bs + batch)
                bounds = <Py_ssize_t*>(Cs + batch)
                for p in range(batch):
                    As[p] = pa + a_index[p] * a_step
                    Bs[p] = pb + b_index[p] * b_step
                    Cs[p] = pc + p * c_step
                for i in range(pieces + 1):
                    bounds[i] = batch * i // pieces
                _run_list(trans_a, trans_b, M, N, K, As, lda, Bs, ldb, Cs, N, NULL, bounds, pieces, threads,
                          scratch_size, &failed)
            fn_free(As)
    if failed:
        raise MemoryError("bmm: cannot allocate the scratch of a product")


cdef void _one_product(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* A, Py_ssize_t lda, const floating* B, Py_ssize_t ldb,
                       floating* C) except *:
    """C (M, N) = op(A) @ op(B), split over the threads."""
    cdef floating* scratch = <floating*>fn_alloc(any_scratch(floating is double, M, N, K, trans_a)
                                                 * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("bmm: cannot allocate the scratch of a product")
    with nogil:
        gemm_any_mt(trans_a, trans_b, M, N, K, A, lda, B, ldb, False, C, N, scratch, _inner_threads(1))
    fn_free(scratch)


def _tall_gemm(const floating[:, :, ::1] a, const floating[:, :, ::1] b, Py_ssize_t j,
               floating[:, :, ::1] c, bint trans_b, Py_ssize_t rows, int N, int K):
    """c (rows, N) = a (rows, K) @ op(b[j]): the batch stacked into one product."""
    _one_product(False, trans_b, rows, N, K, &a[0, 0, 0], K, &b[0, 0, 0] + j * b.shape[1] * b.shape[2],
                 b.shape[2], &c[0, 0, 0])


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
        if j >= 0:
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
    cdef Py_ssize_t groups = grad.shape[0], i, q, p, r, count = order.shape[0]
    cdef Py_ssize_t dc_step = dc.shape[1] * dc.shape[2]
    cdef Py_ssize_t other_step = other.shape[1] * other.shape[2]
    cdef Py_ssize_t grad_step = <Py_ssize_t>M * N
    cdef int ld_dc = <int>dc.shape[2], ld_other = <int>other.shape[2]
    cdef const floating* pdc = &dc[0, 0, 0]
    cdef const floating* po = &other[0, 0, 0]
    cdef floating* pg = &grad[0, 0, 0]
    cdef floating* scratch
    cdef bint failed = False
    # groups split over the threads (pieces of whole groups), or a single group's
    # products over them
    cdef int threads = _outer_threads(groups), inner = _inner_threads(threads), pieces, j
    # the product is first @ second: op(dc) @ op(other), or op(other) @ op(dc)
    cdef bint ta = trans_dc if dc_first else trans_other, tb = trans_other if dc_first else trans_dc
    cdef int ld_first = ld_dc if dc_first else ld_other, ld_second = ld_other if dc_first else ld_dc
    cdef size_t scratch_size = any_scratch(floating is double, M, N, K, ta) * sizeof(floating)
    cdef const floating** firsts
    cdef const floating** seconds
    cdef floating** outs
    cdef unsigned char* accumulate
    cdef Py_ssize_t* bounds
    with nogil:
        for i in range(groups):  # a group of no entries: a zero gradient
            if starts[i] == starts[i + 1]:
                for r in range(grad_step):
                    pg[i * grad_step + r] = 0
        if threads == 1 and inner > 1:
            # one group at a time, its products split over the threads
            scratch = <floating*>fn_alloc(scratch_size)
            if scratch == NULL:
                failed = True
            else:
                for i in range(groups):
                    for q in range(starts[i], starts[i + 1]):
                        p = order[q]
                        gemm_any_mt(ta, tb, M, N, K,
                                    pdc + p * dc_step if dc_first else po + other_index[p] * other_step, ld_first,
                                    po + other_index[p] * other_step if dc_first else pdc + p * dc_step, ld_second,
                                    q != starts[i], pg + i * grad_step, N, scratch, inner)
            fn_free(scratch)
        else:
            pieces = _list_chunks(groups, threads)
            firsts = <const floating**>fn_alloc(3 * count * sizeof(void*) + count + (pieces + 1) * sizeof(Py_ssize_t))
            if firsts == NULL:
                failed = True
            else:
                seconds = firsts + count
                outs = <floating**>(seconds + count)
                bounds = <Py_ssize_t*>(outs + count)
                accumulate = <unsigned char*>(bounds + pieces + 1)
                for i in range(groups):
                    for q in range(starts[i], starts[i + 1]):
                        p = order[q]
                        firsts[q] = pdc + p * dc_step if dc_first else po + other_index[p] * other_step
                        seconds[q] = po + other_index[p] * other_step if dc_first else pdc + p * dc_step
                        outs[q] = pg + i * grad_step
                        accumulate[q] = q != starts[i]
                for j in range(pieces + 1):  # pieces of whole groups: a group sums in order on one thread
                    bounds[j] = starts[groups * j // pieces]
                _run_list(ta, tb, M, N, K, firsts, ld_first, seconds, ld_second, outs, N, accumulate, bounds,
                          pieces, threads, scratch_size, &failed)
            fn_free(firsts)
    if failed:
        raise MemoryError("bmm_backward: cannot allocate the scratch of a product")


def _tall_backward(const floating[:, :, ::1] dc, const floating[:, :, ::1] a,
                   const floating[:, :, ::1] b, Py_ssize_t j,
                   floating[:, :, ::1] da, floating[:, :, ::1] db,
                   bint trans_b, Py_ssize_t rows, int M, int N, int K):
    """The backward of _tall_gemm: da = dc @ op(b[j])^T and db[j] = a^T @ dc (each one product)."""
    cdef Py_ssize_t b_step = b.shape[1] * b.shape[2]
    cdef const floating* pb = &b[0, 0, 0] + j * b_step
    cdef floating* pdb = &db[0, 0, 0]
    cdef Py_ssize_t r
    cdef bint done
    _one_product(False, not trans_b, rows, K, N, &dc[0, 0, 0], N, pb, b.shape[2], &da[0, 0, 0])
    with nogil:
        for r in range(db.shape[0] * b_step):
            pdb[r] = 0
        # a reduction over all the rows: chunks transposed and packed (fn_gemm.h)
        if trans_b:
            done = gemm_tn2_mt(N, K, 0, rows, &dc[0, 0, 0], N, &a[0, 0, 0], K, &a[0, 0, 0], K,
                               pdb + j * b_step, K, False, _inner_threads(1))
        else:
            done = gemm_tn2_mt(K, N, 0, rows, &a[0, 0, 0], K, &dc[0, 0, 0], N, &dc[0, 0, 0], N,
                               pdb + j * b_step, N, False, _inner_threads(1))
    if not done:
        raise MemoryError("bmm_backward: cannot allocate the scratch of a product")


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
        if j >= 0:
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
