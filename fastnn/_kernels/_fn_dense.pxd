# The dense kernels of fn_dense.h as the Cython drivers call them: each wrapper takes
# either element type (fused `floating`) and runs the instance of the active CPU
# tier. The C functions are documented in fn_dense.h.
from cython cimport floating

cdef extern from "fn_kernels.h":
    int FN_ACT_LEAKY_RELU
    int FN_ACT_IDENTITY
    int FN_DENSE_DB_ROWS

    void fn_dense_linear_forward_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* x, const float* w,
                                   float* P, const float* bias, int kind, float alpha, float* y, float* keep,
                                   int threads) noexcept nogil
    void fn_dense_linear_forward_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* x, const double* w,
                                   double* P, const double* bias, int kind, double alpha, double* y,
                                   double* keep, int threads) noexcept nogil
    int fn_dense_linear_backward_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* dy, const float* x,
                                   const float* w, const float* keep, int kind, float alpha, float* dz,
                                   float* P, float* partial, float* dx, float* dw, float* db,
                                   int threads) noexcept nogil
    int fn_dense_linear_backward_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* dy, const double* x,
                                   const double* w, const double* keep, int kind, double alpha, double* dz,
                                   double* P, double* partial, double* dx, double* dw, double* db,
                                   int threads) noexcept nogil
    void fn_dense_act_mt_f(int kind, float alpha, Py_ssize_t n, const float* z, float* y, float* keep,
                           int threads) noexcept nogil
    void fn_dense_act_mt_d(int kind, double alpha, Py_ssize_t n, const double* z, double* y, double* keep,
                           int threads) noexcept nogil
    void fn_dense_grad_mt_f(int kind, float alpha, Py_ssize_t n, const float* d, const float* keep, float* dz,
                            int threads) noexcept nogil
    void fn_dense_grad_mt_d(int kind, double alpha, Py_ssize_t n, const double* d, const double* keep,
                            double* dz, int threads) noexcept nogil
    void fn_dense_softmax_f(Py_ssize_t rows, Py_ssize_t n, const float* z, float* p, int threads) noexcept nogil
    void fn_dense_softmax_d(Py_ssize_t rows, Py_ssize_t n, const double* z, double* p, int threads) noexcept nogil


# ---- one name for both element types ----

cdef inline void dense_linear_forward(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* x,
                                      const floating* w, floating* P, const floating* bias, int kind,
                                      double alpha, floating* y, floating* keep, int threads) noexcept nogil:
    if floating is float:
        fn_dense_linear_forward_f(M, N, K, x, w, P, bias, kind, <float>alpha, y, keep, threads)
    else:
        fn_dense_linear_forward_d(M, N, K, x, w, P, bias, kind, alpha, y, keep, threads)


cdef inline bint dense_linear_backward(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* dy,
                                       const floating* x, const floating* w, const floating* keep, int kind,
                                       double alpha, floating* dz, floating* P, floating* partial, floating* dx,
                                       floating* dw, floating* db, int threads) noexcept nogil:
    if floating is float:
        return fn_dense_linear_backward_f(M, N, K, dy, x, w, keep, kind, <float>alpha, dz, P, partial, dx, dw,
                                          db, threads) != 0
    else:
        return fn_dense_linear_backward_d(M, N, K, dy, x, w, keep, kind, alpha, dz, P, partial, dx, dw, db,
                                          threads) != 0


cdef inline void dense_act_mt(int kind, double alpha, Py_ssize_t n, const floating* z, floating* y,
                              floating* keep, int threads) noexcept nogil:
    if floating is float:
        fn_dense_act_mt_f(kind, <float>alpha, n, z, y, keep, threads)
    else:
        fn_dense_act_mt_d(kind, alpha, n, z, y, keep, threads)


cdef inline void dense_grad_mt(int kind, double alpha, Py_ssize_t n, const floating* d, const floating* keep,
                               floating* dz, int threads) noexcept nogil:
    if floating is float:
        fn_dense_grad_mt_f(kind, <float>alpha, n, d, keep, dz, threads)
    else:
        fn_dense_grad_mt_d(kind, alpha, n, d, keep, dz, threads)


cdef inline void dense_softmax(Py_ssize_t rows, Py_ssize_t n, const floating* z, floating* p,
                               int threads) noexcept nogil:
    if floating is float:
        fn_dense_softmax_f(rows, n, z, p, threads)
    else:
        fn_dense_softmax_d(rows, n, z, p, threads)
