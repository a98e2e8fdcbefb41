/* The loss kernels' entry points for one element type (fn_kernels.h includes this
 * file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_loss.h. */

FN_UNUSED static double FN_D(softmax_xent_forward, FN_TS)(ptrdiff_t N, ptrdiff_t C, const FN_T *x,
                                                          const int64_t *index, const FN_T *prob, FN_T *loss,
                                                          FN_T *stats, int threads)
{
    FN_PICK(return, softmax_xent_forward, FN_TS, (N, C, x, index, prob, loss, stats, threads))
    return 0.0;
}

FN_UNUSED static void FN_D(softmax_xent_backward, FN_TS)(ptrdiff_t N, ptrdiff_t C, const FN_T *x,
                                                         const int64_t *index, const FN_T *prob, const FN_T *stats,
                                                         const FN_T *g, FN_T g0, FN_T *dx, int threads)
{
    FN_PICK(, softmax_xent_backward, FN_TS, (N, C, x, index, prob, stats, g, g0, dx, threads))
}

FN_UNUSED static double FN_D(sigmoid_xent_forward, FN_TS)(ptrdiff_t n, const FN_T *x, const FN_T *t, FN_T *loss,
                                                          double *partial, int threads)
{
    FN_PICK(return, sigmoid_xent_forward, FN_TS, (n, x, t, loss, partial, threads))
    return 0.0;
}

FN_UNUSED static void FN_D(sigmoid_xent_backward, FN_TS)(ptrdiff_t n, const FN_T *x, const FN_T *t, const FN_T *g,
                                                         FN_T g0, FN_T *dx, int threads)
{
    FN_PICK(, sigmoid_xent_backward, FN_TS, (n, x, t, g, g0, dx, threads))
}

FN_UNUSED static void FN_D(loss_math, FN_TS)(int kind, ptrdiff_t n, const FN_T *x, FN_T *y)
{
    FN_PICK(, loss_math, FN_TS, (kind, n, x, y))
}
