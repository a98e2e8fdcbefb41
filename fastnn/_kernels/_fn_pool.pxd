# The pooling entry points of fastnn's C kernels (fn_pool.h, dispatched per CPU tier
# by fn_pool_dispatch.h), as cy_pool.pyx calls them; the shared ones are in _fn.pxd.

cdef extern from "fn_kernels.h":
    ctypedef struct fn_pool_geom:
        Py_ssize_t N, H, W, C
        Py_ssize_t Ho, Wo
        Py_ssize_t kh, kw, sh, sw
        Py_ssize_t ph, pw
        Py_ssize_t dh, dw
        int count_include_pad
        int arg_bytes

    int fn_pool_arg_bytes(Py_ssize_t kh, Py_ssize_t kw) noexcept nogil
    void fn_pool_max_forward_f(const fn_pool_geom *g, const float *x, float *y, void *arg,
                               int threads) noexcept nogil
    void fn_pool_max_forward_d(const fn_pool_geom *g, const double *x, double *y, void *arg,
                               int threads) noexcept nogil
    void fn_pool_avg_forward_f(const fn_pool_geom *g, const float *x, float *y, int threads) noexcept nogil
    void fn_pool_avg_forward_d(const fn_pool_geom *g, const double *x, double *y, int threads) noexcept nogil
    int fn_pool_backward_f(const fn_pool_geom *g, const float *dy, const void *arg, float *dx,
                           int threads) noexcept nogil
    int fn_pool_backward_d(const fn_pool_geom *g, const double *dy, const void *arg, double *dx,
                           int threads) noexcept nogil
