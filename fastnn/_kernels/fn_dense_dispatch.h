/* The dense kernels' entry points for one element type (fn_kernels.h includes this
 * file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_dense.h. */

FN_UNUSED static size_t FN_D(dense_slots_size, FN_TS)(ptrdiff_t K, int threads)
{
    FN_PICK(return, dense_slots_size, FN_TS, (K, threads))
    return 0;
}

FN_UNUSED static int FN_D(dense_dw_direct, FN_TS)(ptrdiff_t M, ptrdiff_t N)
{
    FN_PICK(return, dense_dw_direct, FN_TS, (M, N))
    return 0;
}

FN_UNUSED static void FN_D(dense_linear_forward, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *x,
                                                        const FN_T *w, const FN_T *bias, int kind, FN_T alpha,
                                                        FN_T *y, FN_T *keep, int8_t *mask, FN_T *slots,
                                                        int threads)
{
    FN_PICK(, dense_linear_forward, FN_TS, (M, N, K, x, w, bias, kind, alpha, y, keep, mask, slots, threads))
}

FN_UNUSED static int FN_D(dense_linear_backward, FN_TS)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *dy,
                                                        const FN_T *x, const FN_T *w, const FN_T *keep,
                                                        const int8_t *mask, int kind, FN_T alpha, FN_T *dz,
                                                        FN_T *dzt, FN_T *slots, FN_T *dx, FN_T *dw, FN_T *db,
                                                        int threads)
{
    FN_PICK(return, dense_linear_backward, FN_TS,
            (M, N, K, dy, x, w, keep, mask, kind, alpha, dz, dzt, slots, dx, dw, db, threads))
    return 0;
}

FN_UNUSED static void FN_D(dense_act_mt, FN_TS)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                                FN_T *keep, int8_t *mask, int threads)
{
    FN_PICK(, dense_act_mt, FN_TS, (kind, alpha, n, z, y, keep, mask, threads))
}

FN_UNUSED static void FN_D(dense_grad_mt, FN_TS)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d,
                                                 const FN_T *keep, const int8_t *mask, FN_T *dz, int threads)
{
    FN_PICK(, dense_grad_mt, FN_TS, (kind, alpha, n, d, keep, mask, dz, threads))
}

FN_UNUSED static void FN_D(dense_softmax, FN_TS)(ptrdiff_t rows, ptrdiff_t n, const FN_T *z, FN_T *p, int threads)
{
    FN_PICK(, dense_softmax, FN_TS, (rows, n, z, p, threads))
}

FN_UNUSED static void FN_D(column_sums_mt, FN_TS)(ptrdiff_t M, ptrdiff_t N, const FN_T *g, FN_T *db, int threads)
{
    FN_PICK(, column_sums_mt, FN_TS, (M, N, g, db, threads))
}
