/* The embedding kernels' entry points for one element type (fn_kernels.h includes
 * this file for float and double; no include guard): each runs the instance of the
 * active tier. The kernels are documented in fn_embedding.h; fn_emb_fence is shared
 * by every tier (defined there). */

FN_UNUSED static void FN_D(emb_gather, FN_TS)(const int64_t *ids, const FN_T *table, FN_T *y, ptrdiff_t p0,
                                              ptrdiff_t p1, ptrdiff_t width)
{
    FN_PICK(, emb_gather, FN_TS, (ids, table, y, p0, p1, width))
}

FN_UNUSED static void FN_D(emb_zero, FN_TS)(FN_T *dst, ptrdiff_t n, int stream)
{
    FN_PICK(, emb_zero, FN_TS, (dst, n, stream))
}

FN_UNUSED static void FN_D(emb_sum_row, FN_TS)(FN_T *row, const FN_T *dy, ptrdiff_t width, const int64_t *order,
                                               int64_t s, int64_t e, int stream)
{
    FN_PICK(, emb_sum_row, FN_TS, (row, dy, width, order, s, e, stream))
}
