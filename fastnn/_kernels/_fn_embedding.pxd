# The row copies of the embedding forward pass and the row writes of its backward pass
# as the Cython driver (cy_embedding.pyx) calls them (entry points of
# fn_embedding_dispatch.h: each runs the instance of the active CPU tier; ordinary or
# non-temporal stores, the same sums either way). Documented in fn_embedding.h.
from libc.stdint cimport int64_t

cdef extern from "fn_kernels.h":
    void fn_emb_gather_f(const int64_t* ids, const float* table, float* y, Py_ssize_t p0, Py_ssize_t p1,
                         Py_ssize_t width) noexcept nogil
    void fn_emb_gather_d(const int64_t* ids, const double* table, double* y, Py_ssize_t p0, Py_ssize_t p1,
                         Py_ssize_t width) noexcept nogil
    void fn_emb_fence(int stream) noexcept nogil
    void fn_emb_zero_f(float* dst, Py_ssize_t n, int stream) noexcept nogil
    void fn_emb_zero_d(double* dst, Py_ssize_t n, int stream) noexcept nogil
    void fn_emb_sum_row_f(float* row, const float* dy, Py_ssize_t width, const int64_t* order, int64_t s,
                          int64_t e, int stream) noexcept nogil
    void fn_emb_sum_row_d(double* row, const double* dy, Py_ssize_t width, const int64_t* order, int64_t s,
                          int64_t e, int stream) noexcept nogil
