# Row-major GEMM on top of SciPy's BLAS (callable without the GIL).
#
# BLAS is column-major; a row-major (M, N) matrix is the column-major (N, M) one, so
# C = op(A) @ op(B) in row-major is C^T = op(B)^T @ op(A)^T in column-major: call
# gemm with the operands swapped and no explicit transposes.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int M, int N, int K,
                      floating alpha, const floating* A, int lda,
                      const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C (M, N, row stride ldc) = alpha * op(A) @ op(B) + beta * C.

    op(A) is (M, K): A is (M, K) with row stride lda, or (K, M) when trans_a.
    op(B) is (K, N): B is (K, N) with row stride ldb, or (N, K) when trans_b.
    Empty sizes are handled here because BLAS rejects a zero leading dimension.
    """
    cdef int i, j
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        for i in range(M):
            for j in range(N):
                C[i * ldc + j] = 0 if beta == 0 else beta * C[i * ldc + j]
        return
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if ldc < 1:
        ldc = 1
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)
