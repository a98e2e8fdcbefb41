# The batch normalisation kernels of fn_norm.h as the Cython driver (cy_norm.pyx)
# calls them: each wrapper takes either element type (fused `floating`) and runs the
# instance of the active CPU tier. Each returns 0, or -1 when its scratch memory
# could not be allocated.
from cython cimport floating

cdef extern from "fn_kernels.h":
    ctypedef struct fn_bn_geom:
        Py_ssize_t P, C, S

    int fn_bn_forward_f(const fn_bn_geom* g, const float* x, const float* gamma, const float* beta, double eps,
                        float* y, float* mean, float* var, double* mean_d, double* invstd_d,
                        int threads) noexcept nogil
    int fn_bn_forward_d(const fn_bn_geom* g, const double* x, const double* gamma, const double* beta,
                        double eps, double* y, double* mean, double* var, double* mean_d, double* invstd_d,
                        int threads) noexcept nogil
    int fn_bn_inference_f(const fn_bn_geom* g, const float* x, const float* gamma, const float* beta,
                          const float* mean, const float* var, double eps, float* y, int threads) noexcept nogil
    int fn_bn_inference_d(const fn_bn_geom* g, const double* x, const double* gamma, const double* beta,
                          const double* mean, const double* var, double eps, double* y, int threads) noexcept nogil
    int fn_bn_backward_f(const fn_bn_geom* g, const float* x, const float* dy, const float* gamma,
                         const double* mean_d, const double* invstd_d, float* dx, float* dgamma, float* dbeta,
                         int threads) noexcept nogil
    int fn_bn_backward_d(const fn_bn_geom* g, const double* x, const double* dy, const double* gamma,
                         const double* mean_d, const double* invstd_d, double* dx, double* dgamma,
                         double* dbeta, int threads) noexcept nogil


cdef inline int bn_forward(const fn_bn_geom* g, const floating* x, const floating* gamma, const floating* beta,
                           double eps, floating* y, floating* mean, floating* var, double* mean_d,
                           double* invstd_d, int threads) noexcept nogil:
    if floating is float:
        return fn_bn_forward_f(g, x, gamma, beta, eps, y, mean, var, mean_d, invstd_d, threads)
    else:
        return fn_bn_forward_d(g, x, gamma, beta, eps, y, mean, var, mean_d, invstd_d, threads)


cdef inline int bn_inference(const fn_bn_geom* g, const floating* x, const floating* gamma,
                             const floating* beta, const floating* mean, const floating* var, double eps,
                             floating* y, int threads) noexcept nogil:
    if floating is float:
        return fn_bn_inference_f(g, x, gamma, beta, mean, var, eps, y, threads)
    else:
        return fn_bn_inference_d(g, x, gamma, beta, mean, var, eps, y, threads)


cdef inline int bn_backward(const fn_bn_geom* g, const floating* x, const floating* dy, const floating* gamma,
                            const double* mean_d, const double* invstd_d, floating* dx, floating* dgamma,
                            floating* dbeta, int threads) noexcept nogil:
    if floating is float:
        return fn_bn_backward_f(g, x, dy, gamma, mean_d, invstd_d, dx, dgamma, dbeta, threads)
    else:
        return fn_bn_backward_d(g, x, dy, gamma, mean_d, invstd_d, dx, dgamma, dbeta, threads)
