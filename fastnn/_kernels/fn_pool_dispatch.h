/* The pooling kernels' entry points for one element type (fn_kernels.h includes
 * this file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_pool.h. */

FN_UNUSED static void FN_D(pool_max_forward, FN_TS)(const fn_pool_geom *g, const FN_T *x, FN_T *y, void *arg,
                                                    int threads)
{
    FN_PICK(, pool_max_forward, FN_TS, (g, x, y, arg, threads))
}

FN_UNUSED static void FN_D(pool_avg_forward, FN_TS)(const fn_pool_geom *g, const FN_T *x, FN_T *y, int threads)
{
    FN_PICK(, pool_avg_forward, FN_TS, (g, x, y, threads))
}

FN_UNUSED static int FN_D(pool_backward, FN_TS)(const fn_pool_geom *g, const FN_T *dy, const void *arg, FN_T *dx,
                                                int threads)
{
    FN_PICK(return, pool_backward, FN_TS, (g, dy, arg, dx, threads))
    return -1;
}
