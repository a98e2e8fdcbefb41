/* The batch normalisation kernels' entry points for one element type (fn_kernels.h
 * includes this file for float and double; no include guard): each runs the
 * instance of the active tier. The kernels are documented in fn_norm.h. */

FN_UNUSED static int FN_D(bn_forward, FN_TS)(const fn_bn_geom *g, const FN_T *x, const FN_T *gamma,
                                             const FN_T *beta, double eps, FN_T *y, FN_T *mean, FN_T *var,
                                             double *mean_d, double *invstd_d, int threads)
{
    FN_PICK(return, bn_forward, FN_TS, (g, x, gamma, beta, eps, y, mean, var, mean_d, invstd_d, threads))
    return -1;
}

FN_UNUSED static int FN_D(bn_inference, FN_TS)(const fn_bn_geom *g, const FN_T *x, const FN_T *gamma,
                                               const FN_T *beta, const FN_T *mean, const FN_T *var, double eps,
                                               FN_T *y, int threads)
{
    FN_PICK(return, bn_inference, FN_TS, (g, x, gamma, beta, mean, var, eps, y, threads))
    return -1;
}

FN_UNUSED static int FN_D(bn_backward, FN_TS)(const fn_bn_geom *g, const FN_T *x, const FN_T *dy,
                                              const FN_T *gamma, const double *mean_d, const double *invstd_d,
                                              FN_T *dx, FN_T *dgamma, FN_T *dbeta, int threads)
{
    FN_PICK(return, bn_backward, FN_TS, (g, x, dy, gamma, mean_d, invstd_d, dx, dgamma, dbeta, threads))
    return -1;
}
