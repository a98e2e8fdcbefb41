/* The dense kernels' entry points for one element type (fn_kernels.h includes this
 * file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_dense.h. */

FN_UNUSED static void FN_D(dense_linear_forward, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *x,
                                                        const FN_T *w, FN_T *P, const FN_T *bias, int kind,
                                                        FN_T alpha, FN_T *y, FN_T *keep, int threads)
{
    FN_PICK(, dense_linear_forward, FN_TS, (M, N, K, x, w, P, bias, kind, alpha, y, keep, threads))
}

FN_UNUSED static int FN_D(dense_linear_backward, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *dy,
                                                        const FN_T *x, const FN_T *w, const FN_T *keep, int kind,
                                                        FN_T alpha, FN_T *dz, FN_T *P, FN_T *partial, FN_T *dx,
                                                        FN_T *dw, FN_T *db, int threads)
{
    FN_PICK(return, dense_linear_backward, FN_TS,
            (M, N, K, dy, x, w, keep, kind, alpha, dz, P, partial, dx, dw, db, threads))
    return 0;
}

FN_UNUSED static void FN_D(dense_act_mt, FN_TS)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                                FN_T *keep, int threads)
{
    FN_PICK(, dense_act_mt, FN_TS, (kind, alpha, n, z, y, keep, threads))
}

FN_UNUSED static void FN_D(dense_grad_mt, FN_TS)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d,
                                                 const FN_T *keep, FN_T *dz, int threads)
{
    FN_PICK(, dense_grad_mt, FN_TS, (kind, alpha, n, d, keep, dz, threads))
}

FN_UNUSED static void FN_D(dense_softmax, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *z, FN_T *p, int threads)
{
    FN_PICK(, dense_softmax, FN_TS, (rows, n, z, p, threads))
}
