# The loss kernels of fn_loss.h as the Cython drivers call them (entry points of
# fn_loss_dispatch.h: each runs the instance of the active CPU tier). Documented in
# fn_loss.h.
from libc.stdint cimport int64_t

cdef extern from "fn_kernels.h":
    # the elements of one partial sum of the sigmoid loss (the partial[] array's length
    # is their count, rounded up)
    enum: FN_XENT_CHUNK

    double fn_softmax_xent_forward_f(Py_ssize_t N, Py_ssize_t C, const float* x, const int64_t* index,
                                     const float* prob, float* loss, float* stats, int threads) noexcept nogil
    double fn_softmax_xent_forward_d(Py_ssize_t N, Py_ssize_t C, const double* x, const int64_t* index,
                                     const double* prob, double* loss, double* stats, int threads) noexcept nogil
    void fn_softmax_xent_backward_f(Py_ssize_t N, Py_ssize_t C, const float* x, const int64_t* index,
                                    const float* prob, const float* stats, const float* g, float g0, float* dx,
                                    int threads) noexcept nogil
    void fn_softmax_xent_backward_d(Py_ssize_t N, Py_ssize_t C, const double* x, const int64_t* index,
                                    const double* prob, const double* stats, const double* g, double g0,
                                    double* dx, int threads) noexcept nogil
    double fn_sigmoid_xent_forward_f(Py_ssize_t n, const float* x, const float* t, float* loss, double* partial,
                                     int threads) noexcept nogil
    double fn_sigmoid_xent_forward_d(Py_ssize_t n, const double* x, const double* t, double* loss,
                                     double* partial, int threads) noexcept nogil
    void fn_sigmoid_xent_backward_f(Py_ssize_t n, const float* x, const float* t, const float* g, float g0,
                                    float* dx, int threads) noexcept nogil
    void fn_sigmoid_xent_backward_d(Py_ssize_t n, const double* x, const double* t, const double* g, double g0,
                                    double* dx, int threads) noexcept nogil
    void fn_loss_math_f(int kind, Py_ssize_t n, const float* x, float* y) noexcept nogil
    void fn_loss_math_d(int kind, Py_ssize_t n, const double* x, double* y) noexcept nogil
