# The elementwise loops of dropout as the Cython driver (cy_dropout.pyx) calls them
# (entry points of fn_dropout_dispatch.h: each runs the instance of the active CPU
# tier; the same bits on every tier). Documented in fn_dropout.h.
from libc.stdint cimport uint8_t

cdef extern from "fn_kernels.h":
    void fn_drop_mask(const double* draws, double keep_prob, uint8_t* mask, Py_ssize_t n) noexcept nogil
    void fn_drop_apply_f(const float* x, const uint8_t* mask, float kp, float* y, Py_ssize_t n) noexcept nogil
    void fn_drop_apply_d(const double* x, const uint8_t* mask, double kp, double* y, Py_ssize_t n) noexcept nogil
