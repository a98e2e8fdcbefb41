# The dense kernels of fn_dense.h as the Cython drivers call them: each wrapper takes
# either element type (fused `floating`) and runs the instance of the active CPU
# tier. The C functions are documented in fn_dense.h; `mask` is the int8 record of
# z > 0 that relu and leaky_relu keep for their backward pass, `keep` the copy of y
# that sigmoid and tanh keep.
from cython cimport floating
from libc.stdint cimport int8_t

cdef extern from "fn_kernels.h":
    int FN_ACT_LEAKY_RELU
    int FN_ACT_IDENTITY

    size_t fn_dense_slots_size_f(Py_ssize_t K, int threads) noexcept nogil
    size_t fn_dense_slots_size_d(Py_ssize_t K, int threads) noexcept nogil
    int fn_dense_dw_direct_f(Py_ssize_t M, Py_ssize_t N) noexcept nogil
    int fn_dense_dw_direct_d(Py_ssize_t M, Py_ssize_t N) noexcept nogil
    void fn_dense_linear_forward_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* x, const float* w,
                                   const float* bias, int kind, float alpha, float* y, float* keep,
                                   int8_t* mask, float* slots, int threads) noexcept nogil
    void fn_dense_linear_forward_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* x, const double* w,
                                   const double* bias, int kind, double alpha, double* y, double* keep,
                                   int8_t* mask, double* slots, int threads) noexcept nogil
    int fn_dense_linear_backward_f(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* dy, const float* x,
                                   const float* w, const float* keep, const int8_t* mask, int kind, float alpha,
                                   float* dz, float* dzt, float* slots, float* dx, float* dw,
                                   float* db, int threads) noexcept nogil
    int fn_dense_linear_backward_d(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* dy, const double* x,
                                   const double* w, const double* keep, const int8_t* mask, int kind,
                                   double alpha, double* dz, double* dzt, double* slots,
                                   double* dx, double* dw, double* db, int threads) noexcept nogil
    void fn_dense_act_mt_f(int kind, float alpha, Py_ssize_t n, const float* z, float* y, float* keep,
                           int8_t* mask, int threads) noexcept nogil
    void fn_dense_act_mt_d(int kind, double alpha, Py_ssize_t n, const double* z, double* y, double* keep,
                           int8_t* mask, int threads) noexcept nogil
    void fn_dense_grad_mt_f(int kind, float alpha, Py_ssize_t n, const float* d, const float* keep,
                            const int8_t* mask, float* dz, int threads) noexcept nogil
    void fn_dense_grad_mt_d(int kind, double alpha, Py_ssize_t n, const double* d, const double* keep,
                            const int8_t* mask, double* dz, int threads) noexcept nogil
    void fn_dense_softmax_f(Py_ssize_t rows, Py_ssize_t n, const float* z, float* p, int threads) noexcept nogil
    void fn_dense_softmax_d(Py_ssize_t rows, Py_ssize_t n, const double* z, double* p, int threads) noexcept nogil
    void fn_column_sums_mt_f(Py_ssize_t M, Py_ssize_t N, const float* g, float* db, int threads) noexcept nogil
    void fn_column_sums_mt_d(Py_ssize_t M, Py_ssize_t N, const double* g, double* db, int threads) noexcept nogil


# ---- one name for both element types ----

cdef inline size_t dense_slots_size(bint is_double, Py_ssize_t K, int threads) noexcept nogil:
    return fn_dense_slots_size_d(K, threads) if is_double else fn_dense_slots_size_f(K, threads)


cdef inline bint dense_dw_direct(bint is_double, Py_ssize_t M, Py_ssize_t N) noexcept nogil:
    return (fn_dense_dw_direct_d(M, N) if is_double else fn_dense_dw_direct_f(M, N)) != 0


cdef inline void dense_linear_forward(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* x,
                                      const floating* w, const floating* bias, int kind, double alpha,
                                      floating* y, floating* keep, int8_t* mask, floating* slots,
                                      int threads) noexcept nogil:
    if floating is float:
        fn_dense_linear_forward_f(M, N, K, x, w, bias, kind, <float>alpha, y, keep, mask, slots, threads)
    else:
        fn_dense_linear_forward_d(M, N, K, x, w, bias, kind, alpha, y, keep, mask, slots, threads)


cdef inline bint dense_linear_backward(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* dy,
                                       const floating* x, const floating* w, const floating* keep,
                                       const int8_t* mask, int kind, double alpha, floating* dz, floating* dzt,
                                       floating* slots, floating* dx, floating* dw, floating* db,
                                       int threads) noexcept nogil:
    if floating is float:
        return fn_dense_linear_backward_f(M, N, K, dy, x, w, keep, mask, kind, <float>alpha, dz, dzt, slots,
                                          dx, dw, db, threads) != 0
    else:
        return fn_dense_linear_backward_d(M, N, K, dy, x, w, keep, mask, kind, alpha, dz, dzt, slots,
                                          dx, dw, db, threads) != 0


cdef inline void dense_act_mt(int kind, double alpha, Py_ssize_t n, const floating* z, floating* y,
                              floating* keep, int8_t* mask, int threads) noexcept nogil:
    if floating is float:
        fn_dense_act_mt_f(kind, <float>alpha, n, z, y, keep, mask, threads)
    else:
        fn_dense_act_mt_d(kind, alpha, n, z, y, keep, mask, threads)


cdef inline void dense_grad_mt(int kind, double alpha, Py_ssize_t n, const floating* d, const floating* keep,
                               const int8_t* mask, floating* dz, int threads) noexcept nogil:
    if floating is float:
        fn_dense_grad_mt_f(kind, <float>alpha, n, d, keep, mask, dz, threads)
    else:
        fn_dense_grad_mt_d(kind, alpha, n, d, keep, mask, dz, threads)


cdef inline void dense_softmax(Py_ssize_t rows, Py_ssize_t n, const floating* z, floating* p,
                               int threads) noexcept nogil:
    if floating is float:
        fn_dense_softmax_f(rows, n, z, p, threads)
    else:
        fn_dense_softmax_d(rows, n, z, p, threads)


cdef inline void column_sums_mt(Py_ssize_t M, Py_ssize_t N, const floating* g, floating* db,
                                int threads) noexcept nogil:
    if floating is float:
        fn_column_sums_mt_f(M, N, g, db, threads)
    else:
        fn_column_sums_mt_d(M, N, g, db, threads)
