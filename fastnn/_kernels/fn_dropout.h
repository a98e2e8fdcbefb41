/* The elementwise loops of dropout (cy_dropout.pyx), instantiated per CPU tier and
 * element type by fn_kernels.h like every kernel source (no include guard; entry
 * points in fn_dropout_dispatch.h).
 *
 * Each loop is plain C that the compiler vectorises by the tier's target attribute
 * (FN_TARGET) alone; the baseline build (SSE2) could not vectorise the comparison of
 * float64 draws into a byte mask, which made the forward pass several times slower
 * before the tiers. The mask is formed from float64 draws whatever x's type, so it
 * has one instance per tier, in the double pass (FN(drop_mask) = fn_drop_mask_<tier>_d).
 *
 * Every element is computed on its own, with one multiply and one correctly rounded
 * division (the build has -ffp-contract=off: nothing is fused), so every tier and
 * every vector width gives the same bits.
 */

#if FN_DOUBLE
/* mask[i] = draws[i] < keep_prob, for i < n */
FN_TARGET FN_UNUSED static void FN(drop_mask)(const double *draws, double keep_prob, uint8_t *mask, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        mask[i] = draws[i] < keep_prob;
}
#endif

/* y[i] = (x[i] * mask[i]) / kp, for i < n */
FN_TARGET FN_UNUSED static void FN(drop_apply)(const FN_T *x, const uint8_t *mask, FN_T kp, FN_T *y, ptrdiff_t n)
{
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        y[i] = (x[i] * (FN_T)mask[i]) / kp;
}
