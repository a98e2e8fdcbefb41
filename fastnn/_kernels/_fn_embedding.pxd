# The row copies of the embedding forward pass and the row writes of its backward pass
# (fn_embedding.h: instances per CPU tier; ordinary or non-temporal stores, the same
# sums either way).
from libc.stdint cimport int64_t

cdef extern from "fn_embedding.h":
    void fn_emb_gather(const int64_t* ids, const char* table, char* y, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t row_bytes) noexcept nogil
    void fn_emb_fence(int stream) noexcept nogil
    void fn_emb_zero(void* dst, Py_ssize_t nbytes, int stream) noexcept nogil
    void fn_emb_sum_row_f(float* row, const float* dy, Py_ssize_t width, const int64_t* order, int64_t s,
                          int64_t e, int stream) noexcept nogil
    void fn_emb_sum_row_d(double* row, const double* dy, Py_ssize_t width, const int64_t* order, int64_t s,
                          int64_t e, int stream) noexcept nogil
