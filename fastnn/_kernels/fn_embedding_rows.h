/* One instance of the streamed row writes of fn_embedding.h (no include guard):
 * included once per CPU tier and element type with FN_EMB_NAME(name) (the
 * instance's names), FN_EMB_TARGET (the tier's target attribute), FN_EMB_T,
 * FN_EMB_VB (the bytes of one vector, which one non-temporal store writes) and
 * FN_EMB_STREAM(dst, v) (store the vector v at dst, on an FN_EMB_VB boundary, past
 * the caches). A chunk of a row is FN_EMB_NV vectors, summed in registers. */
#define FN_EMB_NV 8

typedef FN_EMB_T FN_EMB_NAME(v) __attribute__((vector_size(FN_EMB_VB)));
/* the same vector at any element-aligned address */
typedef FN_EMB_T FN_EMB_NAME(vu) __attribute__((vector_size(FN_EMB_VB), aligned(sizeof(FN_EMB_T)), may_alias));

/* out[d0:d0 + n] = 0 + dy[order[s]][d0:d0 + n] + ... + dy[order[e - 1]][d0:d0 + n],
 * with ordinary stores (the parts of a row off the vector boundaries). */
FN_EMB_TARGET static inline void FN_EMB_NAME(sum_plain)(FN_EMB_T *out, const FN_EMB_T *dy, ptrdiff_t width,
                                                        const int64_t *order, int64_t s, int64_t e, ptrdiff_t d0,
                                                        ptrdiff_t n)
{
    const FN_EMB_T *src = dy + order[s] * width + d0;
    ptrdiff_t k;
    int64_t q;
    for (k = 0; k < n; k++)
        out[d0 + k] = (FN_EMB_T)0 + src[k];
    for (q = s + 1; q < e; q++) {
        src = dy + order[q] * width + d0;
        for (k = 0; k < n; k++)
            out[d0 + k] += src[k];
    }
}

/* row[0:width] = 0 + dy[order[s]] + ... + dy[order[e - 1]], in chunks of FN_EMB_NV
 * vectors summed in registers. With stream, the elements before the row's first
 * vector boundary and after its last whole chunk are stored as usual and the chunks
 * between go past the caches; without, every chunk is an ordinary vector store. */
FN_EMB_TARGET FN_UNUSED static void FN_EMB_NAME(sum_row)(FN_EMB_T *row, const FN_EMB_T *dy, ptrdiff_t width,
                                                         const int64_t *order, int64_t s, int64_t e, int stream)
{
    typedef FN_EMB_NAME(v) vec;
    typedef FN_EMB_NAME(vu) vecu;
    enum { LANES = FN_EMB_VB / sizeof(FN_EMB_T), CHUNK = FN_EMB_NV * LANES };
    const ptrdiff_t head = stream ? fn_emb_head(row, FN_EMB_VB, (ptrdiff_t)sizeof(FN_EMB_T), width) : 0;
    ptrdiff_t d = head;
    int64_t q;
    int j;
    if (head > 0)
        FN_EMB_NAME(sum_plain)(row, dy, width, order, s, e, 0, head);
    for (; d + CHUNK <= width; d += CHUNK) {
        vec acc[FN_EMB_NV];
        const FN_EMB_T *src = dy + order[s] * width + d;
        for (j = 0; j < FN_EMB_NV; j++)
            acc[j] = (vec){0} + *(const vecu *)(src + j * LANES);
        for (q = s + 1; q < e; q++) {
            src = dy + order[q] * width + d;
            for (j = 0; j < FN_EMB_NV; j++)
                acc[j] += *(const vecu *)(src + j * LANES);
        }
        if (stream)
            for (j = 0; j < FN_EMB_NV; j++)
                FN_EMB_STREAM(row + d + j * LANES, acc[j]);
        else
            for (j = 0; j < FN_EMB_NV; j++)
                *(vecu *)(row + d + j * LANES) = acc[j];
    }
    if (d < width)
        FN_EMB_NAME(sum_plain)(row, dy, width, order, s, e, d, width - d);
}

#undef FN_EMB_NV
#undef FN_EMB_NAME
#undef FN_EMB_T
#undef FN_EMB_STREAM
