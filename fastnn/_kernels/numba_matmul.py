"""Numba batch matmul kernels, and the row-major GEMM the numba recurrent kernels share.

Every product goes to SciPy's BLAS through Numba's own ``numba_xxgemm`` helper (the
one behind ``np.dot``), called with explicit transposes and leading dimensions, so
transposed and broadcast operands are multiplied in place, and accumulation uses
BLAS's ``beta`` instead of a temporary.
"""
import contextlib

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

import scipy.linalg.cython_blas  # noqa: F401  (numba_xxgemm looks its functions up there)

from ._threads import blas_on_one_thread

_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char,                                  # kind: 's' or 'd'
    types.char, types.char,                      # transa, transb (column-major)
    types.intp, types.intp, types.intp,          # m, n, k
    types.voidptr, types.voidptr, types.intp,    # alpha, a, lda
    types.voidptr, types.intp,                   # b, ldb
    types.voidptr, types.voidptr, types.intp,    # beta, c, ldc
))

_TRANS = np.int8(ord("T"))
_NOTRANS = np.int8(ord("N"))

# OpenBLAS runs a GEMM on one thread when m * n * k is at most this; below it a
# prange over the batch cannot oversubscribe, above it BLAS's own threads do better.
SMALL_GEMM = 65536 * 4
# Up to this size a GEMM gains little from OpenBLAS's threads (128^3 barely does), so a
# batch of them is better split over the threads; larger ones keep BLAS's own threads.
MEDIUM_GEMM = 2**24


@intrinsic
def _address(typingctx, arr, offset):
    """Untyped pointer to element `offset` of a contiguous array's flat data."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
    return types.voidptr(arr, types.intp), codegen


@intrinsic
def _blas_kind(typingctx, arr):
    code = ord("s") if arr.dtype == types.float32 else ord("d")

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(8), code)
    return types.char(arr), codegen


@njit(cache=True)
def scalars(dtype_like):
    """[1, 0] in the dtype of `dtype_like`: the alpha/beta cells gemm points at."""
    s = np.empty(2, dtype_like.dtype)
    s[0] = 1.0
    s[1] = 0.0
    return s


@njit(cache=True)
def gemm(trans_a, trans_b, M, N, K, A, a_off, lda, B, b_off, ldb, accumulate, C, c_off, ldc, one_zero):
    """C = op(A) @ op(B) (+ C when accumulate), all row-major, on flat offsets.

    op(A) is (M, K): A holds (M, K) rows of stride lda, or (K, M) when trans_a;
    op(B) is (K, N) likewise; C holds (M, N) rows of stride ldc. BLAS being
    column-major, this is C^T = op(B)^T @ op(A)^T with the operands swapped.
    """
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        if not accumulate:
            for i in range(M):
                C[c_off + i * ldc:c_off + i * ldc + N] = 0.0
        return
    _xxgemm(_blas_kind(C), _TRANS if trans_b else _NOTRANS, _TRANS if trans_a else _NOTRANS,
            N, M, K, _address(one_zero, 0), _address(B, b_off), max(ldb, 1),
            _address(A, a_off), max(lda, 1), _address(one_zero, 0 if accumulate else 1),
            _address(C, c_off), max(ldc, 1))


def _batch_plan(mnk, count):
    """(run the batch in a prange?, context to call the kernel in).

    OpenBLAS keeps GEMMs up to SMALL_GEMM on one thread, so a prange over those cannot
    oversubscribe. Larger GEMMs also go one per thread when BLAS can be held to one
    thread and the batch splits evenly over the threads: independent matrices scale
    better than OpenBLAS's split of one medium GEMM (a 128^3 product barely gains
    from a second thread). Otherwise they run in turn on BLAS's own threads.
    """
    if count < 2:
        return False, contextlib.nullcontext()
    if mnk <= SMALL_GEMM:
        return True, contextlib.nullcontext()
    threads = numba.get_num_threads()
    if threads > 1 and mnk <= MEDIUM_GEMM and (count % threads == 0 or count >= 4 * threads):
        context = blas_on_one_thread()
        if context is not None:
            return True, context
    return False, contextlib.nullcontext()


@njit(cache=True, parallel=True)
def _bmm(a, b, a_index, b_index, trans_a, trans_b, c, batch_parallel):
    B, M, N = c.shape
    K = a.shape[1] if trans_a else a.shape[2]
    sa = a.shape[1] * a.shape[2]
    sb = b.shape[1] * b.shape[2]
    lda = a.shape[2]
    ldb = b.shape[2]
    af = a.reshape(-1)
    bf = b.reshape(-1)
    cf = c.reshape(-1)
    one_zero = scalars(c)
    if batch_parallel:
        for p in prange(B):
            gemm(trans_a, trans_b, M, N, K, af, a_index[p] * sa, lda, bf, b_index[p] * sb, ldb,
                 False, cf, p * M * N, N, one_zero)
    else:
        for p in range(B):
            gemm(trans_a, trans_b, M, N, K, af, a_index[p] * sa, lda, bf, b_index[p] * sb, ldb,
                 False, cf, p * M * N, N, one_zero)


def bmm(a, b, a_index, b_index, trans_a, trans_b):
    M = a.shape[2] if trans_a else a.shape[1]
    N = b.shape[1] if trans_b else b.shape[2]
    c = np.empty((a_index.shape[0], M, N), dtype=a.dtype)
    if c.size:
        K = a.shape[1] if trans_a else a.shape[2]
        batch_parallel, context = _batch_plan(M * N * K, c.shape[0])
        with context:
            _bmm(a, b, a_index, b_index, bool(trans_a), bool(trans_b), c, batch_parallel)
    return c


@njit(cache=True)
def _groups(index, count):
    """Batch entries grouped by operand: entries of operand i are order[start[i]:start[i+1]]."""
    start = np.zeros(count + 1, np.int64)
    for p in range(index.shape[0]):
        start[index[p] + 1] += 1
    for i in range(count):
        start[i + 1] += start[i]
    fill = start[:count].copy()
    order = np.empty(index.shape[0], np.int64)
    for p in range(index.shape[0]):  # ascending p within each group: a fixed summation order
        order[fill[index[p]]] = p
        fill[index[p]] += 1
    return order, start


@njit(cache=True)
def _grad_group(i, order, start, M, N, K, size, dest, first, second, ta, tb, lda_first, ldb_second,
                first_index, first_size, second_index, second_size, one_zero):
    """dest[i] = sum over the group of i of op(first) @ op(second), in group order."""
    if start[i] == start[i + 1]:
        dest[i * size:(i + 1) * size] = 0.0
        return
    for g in range(start[i], start[i + 1]):
        p = order[g]
        f_off = (first_index[p] if first_index.shape[0] else p) * first_size
        s_off = (second_index[p] if second_index.shape[0] else p) * second_size
        gemm(ta, tb, M, N, K, first, f_off, lda_first, second, s_off, ldb_second,
             g != start[i], dest, i * size, N, one_zero)


@njit(cache=True, parallel=True)
def _accumulate(order, start, count, M, N, K, dest, first, second, ta, tb, lda_first, ldb_second,
                first_index, first_size, second_index, second_size, one_zero, batch_parallel):
    """dest[i] (M, N) = sum of op(first[.]) @ op(second[.]) over the batch entries of group i.

    An empty first_index/second_index means "the batch entry itself" (that operand is dc).
    """
    size = M * N
    if batch_parallel:
        for i in prange(count):
            _grad_group(i, order, start, M, N, K, size, dest, first, second, ta, tb, lda_first,
                        ldb_second, first_index, first_size, second_index, second_size, one_zero)
    else:
        for i in range(count):
            _grad_group(i, order, start, M, N, K, size, dest, first, second, ta, tb, lda_first,
                        ldb_second, first_index, first_size, second_index, second_size, one_zero)


def bmm_backward(dc, a, b, a_index, b_index, trans_a, trans_b):
    trans_a = bool(trans_a)
    trans_b = bool(trans_b)
    B, M, N = dc.shape
    K = a.shape[1] if trans_a else a.shape[2]
    da = np.empty_like(a)
    db = np.empty_like(b)
    if B == 0 or M == 0 or N == 0 or K == 0:
        da.fill(0)
        db.fill(0)
        return da, db
    one_zero = scalars(dc)
    dcf = dc.reshape(-1)
    af = a.reshape(-1)
    bf = b.reshape(-1)
    own = np.empty(0, np.int64)  # "the batch entry itself"
    sa = a.shape[1] * a.shape[2]
    sb = b.shape[1] * b.shape[2]
    lda = a.shape[2]
    ldb = b.shape[2]

    # Both passes do B products of M * N * K multiply-adds, grouped by operand.
    order, start = _groups(a_index, a.shape[0])
    parallel, context = _batch_plan(M * N * K, a.shape[0])
    with context:
        if trans_a:  # da[i] (K, M) += op(b) (K, N) @ dc^T (N, M)
            _accumulate(order, start, a.shape[0], K, M, N, da.reshape(-1), bf, dcf, trans_b, True,
                        ldb, N, b_index, sb, own, M * N, one_zero, parallel)
        else:  # da[i] (M, K) += dc (M, N) @ op(b)^T (N, K)
            _accumulate(order, start, a.shape[0], M, K, N, da.reshape(-1), dcf, bf, False, not trans_b,
                        N, ldb, own, M * N, b_index, sb, one_zero, parallel)

    order, start = _groups(b_index, b.shape[0])
    parallel, context = _batch_plan(M * N * K, b.shape[0])
    with context:
        if trans_b:  # db[j] (N, K) += dc^T (N, M) @ op(a) (M, K)
            _accumulate(order, start, b.shape[0], N, K, M, db.reshape(-1), dcf, af, True, trans_a,
                        N, lda, own, M * N, a_index, sa, one_zero, parallel)
        else:  # db[j] (K, N) += op(a)^T (K, M) @ dc (M, N)
            _accumulate(order, start, b.shape[0], K, N, M, db.reshape(-1), af, dcf, not trans_a, False,
                        lda, N, a_index, sa, own, M * N, one_zero, parallel)
    return da, db
