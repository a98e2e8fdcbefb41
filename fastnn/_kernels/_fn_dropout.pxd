# The elementwise loops of dropout (fn_dropout.h: one instance per CPU tier, the
# active one picked at each call; the same bits on every tier).
from libc.stdint cimport uint8_t

cdef extern from "fn_dropout.h":
    void fn_drop_mask(const double* draws, double keep_prob, uint8_t* mask, Py_ssize_t n) noexcept nogil
    void fn_drop_apply_f(const float* x, const uint8_t* mask, float kp, float* y, Py_ssize_t n) noexcept nogil
    void fn_drop_apply_d(const double* x, const uint8_t* mask, double kp, double* y, Py_ssize_t n) noexcept nogil
