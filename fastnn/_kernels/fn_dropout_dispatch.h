/* The dropout kernels' entry points for one element type (fn_kernels.h includes this
 * file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_dropout.h. */

#if FN_DOUBLE
/* the draws are float64 for either type of x: one entry point, without a suffix */
FN_UNUSED static void fn_drop_mask(const double *draws, double keep_prob, uint8_t *mask, ptrdiff_t n)
{
    FN_PICK(, drop_mask, d, (draws, keep_prob, mask, n))
}
#endif

FN_UNUSED static void FN_D(drop_apply, FN_TS)(const FN_T *x, const uint8_t *mask, FN_T kp, FN_T *y, ptrdiff_t n)
{
    FN_PICK(, drop_apply, FN_TS, (x, mask, kp, y, n))
}
