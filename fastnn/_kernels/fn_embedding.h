/* The row copies of the embedding forward pass and the row writes of the backward
 * pass (cy_embedding.pyx), instantiated per CPU tier and element type by
 * fn_kernels.h like every kernel source (no include guard; the shared part below
 * has one; entry points in fn_embedding_dispatch.h).
 *
 * A (V, D) table gradient larger than the caches, written with ordinary stores,
 * first reads every line it writes (read for ownership): on the N4 case (10000 x
 * 256 float32, 10 MB) that is most of the pass. With `stream` set, every row goes
 * past the caches with non-temporal stores of the tier's full vector width: zeros
 * directly, sums accumulated eight vectors at a time in registers and then stored.
 * Full-line stores matter: 64-byte non-temporal stores beat 16-byte ones, which beat
 * ordinary stores, on a gradient larger than the caches (the gap closes when the
 * gradient's block is still cached; docs/KERNELS.md).
 *
 * The one piece that does not take the house's primitive as it is: the generic
 * tier's FN(stream) (fn_simd.h) is an ordinary store, which the other kernels' tests
 * of FN_STREAM_ALIGN rely on to skip their streamed paths there; the table gradient
 * is worth streaming on every x86-64 CPU, so the generic instance here stores with
 * SSE2's 16-byte non-temporal stores where the build has SSE2 (all of x86-64), and
 * with ordinary stores elsewhere.
 *
 * The arithmetic does not depend on the store path or the tier: each element is
 * 0 + dy[p1] + dy[p2] + ... over the row's positions in the order given, compiled
 * without contraction or reassociation, so the result has the same bits whichever
 * way it is stored. A thread that streamed calls fn_emb_fence before its rows are
 * read by anyone.
 */
#ifndef FASTNN_FN_EMBEDDING_SHARED
#define FASTNN_FN_EMBEDDING_SHARED

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Elements before the first vb-byte boundary at or after p (at most n). */
FN_UNUSED static inline ptrdiff_t fn_emb_head(const void *p, ptrdiff_t vb, ptrdiff_t elem, ptrdiff_t n)
{
    const ptrdiff_t head = (ptrdiff_t)((uintptr_t)(vb - (ptrdiff_t)((uintptr_t)p % (uintptr_t)vb)) %
                                       (uintptr_t)vb) / elem;
    return head < n ? head : n;
}

/* Make this thread's non-temporal stores visible before the rows are read (every
 * tier's, the generic one's SSE2 stores included: not the generic FN(sfence)). */
FN_UNUSED static void fn_emb_fence(int stream)
{
#if defined(__SSE2__)
    if (stream)
        _mm_sfence();
#else
    (void)stream;
#endif
}

#endif

/* FN_EMB_SB: the bytes of one non-temporal store of this instance (0: none, ordinary
 * stores); FN_EMB_STREAM(p, v) stores the vector v at p, on such a boundary. */
#if FN_STREAM_ALIGN > 0
#define FN_EMB_SB FN_STREAM_ALIGN
#define FN_EMB_STREAM(p, v) FN(stream)((p), (v))
#elif defined(__SSE2__) && FN_VBYTES == 16 && FN_DOUBLE
#define FN_EMB_SB 16
#define FN_EMB_STREAM(p, v) _mm_stream_pd((p), (__m128d)(v))
#elif defined(__SSE2__) && FN_VBYTES == 16
#define FN_EMB_SB 16
#define FN_EMB_STREAM(p, v) _mm_stream_ps((p), (__m128)(v))
#else
#define FN_EMB_SB 0
#define FN_EMB_STREAM(p, v) FN(st)((p), (v))
#endif
/* the vectors of a chunk of a row, summed in registers */
#define FN_EMB_NV 8

/* y[p] = table[ids[p]] for p0 <= p < p1 (rows of width elements), with ordinary
 * stores (the next layer reads y right away). On the x86 tiers, copies of the tier's
 * vector width (64 bytes on AVX-512), faster than a memcpy per row; a memcpy per row
 * on the generic tier. */
FN_TARGET FN_UNUSED static void FN(emb_gather)(const int64_t *ids, const FN_T *table, FN_T *y, ptrdiff_t p0,
                                               ptrdiff_t p1, ptrdiff_t width)
{
    ptrdiff_t p;
    for (p = p0; p < p1; p++) {
        const FN_T *src = table + ids[p] * width;
        FN_T *dst = y + p * width;
        ptrdiff_t k = 0;
#if FN_TIER_ID != FN_TIER_GENERIC
        for (; k + FN_VL <= width; k += FN_VL)
            FN(st)(dst + k, FN(ld)(src + k));
#endif
        memcpy(dst + k, src + k, (size_t)(width - k) * sizeof(FN_T));
    }
}

/* n zeros at dst (past the caches with stream, where the instance can). */
FN_TARGET FN_UNUSED static void FN(emb_zero)(FN_T *dst, ptrdiff_t n, int stream)
{
    ptrdiff_t i = 0;
    if (stream && FN_EMB_SB > 0) {
        i = fn_emb_head(dst, FN_EMB_SB > 0 ? FN_EMB_SB : 1, (ptrdiff_t)sizeof(FN_T), n);
        memset(dst, 0, (size_t)i * sizeof(FN_T));
        for (; i + FN_VL <= n; i += FN_VL)
            FN_EMB_STREAM(dst + i, (FN_V){0});
    }
    memset(dst + i, 0, (size_t)(n - i) * sizeof(FN_T));
}

/* out[d0:d0 + n] = 0 + dy[order[s]][d0:d0 + n] + ... + dy[order[e - 1]][d0:d0 + n],
 * with ordinary stores (the parts of a row off the vector boundaries). */
FN_TARGET FN_INLINE void FN(emb_sum_plain)(FN_T *out, const FN_T *dy, ptrdiff_t width, const int64_t *order,
                                           int64_t s, int64_t e, ptrdiff_t d0, ptrdiff_t n)
{
    const FN_T *src = dy + order[s] * width + d0;
    ptrdiff_t k;
    int64_t q;
    for (k = 0; k < n; k++)
        out[d0 + k] = (FN_T)0 + src[k];
    for (q = s + 1; q < e; q++) {
        src = dy + order[q] * width + d0;
        for (k = 0; k < n; k++)
            out[d0 + k] += src[k];
    }
}

/* row[0:width] = 0 + dy[order[s]] + ... + dy[order[e - 1]] (rows of dy have width
 * elements; s < e), in chunks of FN_EMB_NV vectors summed in registers. With stream
 * (where the instance can), the elements before the row's first vector boundary and
 * after its last whole chunk are stored as usual and the chunks between go past the
 * caches; without, every chunk is an ordinary vector store. */
FN_TARGET FN_UNUSED static void FN(emb_sum_row)(FN_T *row, const FN_T *dy, ptrdiff_t width, const int64_t *order,
                                                int64_t s, int64_t e, int stream)
{
    enum { CHUNK = FN_EMB_NV * FN_VL };
    const int streamed = stream && FN_EMB_SB > 0;
    const ptrdiff_t head =
        streamed ? fn_emb_head(row, FN_EMB_SB > 0 ? FN_EMB_SB : 1, (ptrdiff_t)sizeof(FN_T), width) : 0;
    ptrdiff_t d = head;
    int64_t q;
    int j;
    if (head > 0)
        FN(emb_sum_plain)(row, dy, width, order, s, e, 0, head);
    for (; d + CHUNK <= width; d += CHUNK) {
        FN_V acc[FN_EMB_NV];
        const FN_T *src = dy + order[s] * width + d;
        for (j = 0; j < FN_EMB_NV; j++)
            acc[j] = (FN_V){0} + FN(ld)(src + j * FN_VL);
        for (q = s + 1; q < e; q++) {
            src = dy + order[q] * width + d;
            for (j = 0; j < FN_EMB_NV; j++)
                acc[j] += FN(ld)(src + j * FN_VL);
        }
        if (streamed)
            for (j = 0; j < FN_EMB_NV; j++)
                FN_EMB_STREAM(row + d + j * FN_VL, acc[j]);
        else
            for (j = 0; j < FN_EMB_NV; j++)
                FN(st)(row + d + j * FN_VL, acc[j]);
    }
    if (d < width)
        FN(emb_sum_plain)(row, dy, width, order, s, e, d, width - d);
}

#undef FN_EMB_SB
#undef FN_EMB_STREAM
#undef FN_EMB_NV
