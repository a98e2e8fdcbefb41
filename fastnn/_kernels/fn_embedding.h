/* The row copies of the embedding forward pass and the row writes of the backward
 * pass (cy_embedding.pyx).
 *
 * A (V, D) table gradient larger than the caches, written with ordinary stores,
 * first reads every line it writes (read for ownership): on the N4 case (10000 x
 * 256 float32, 10 MB) that is most of the pass. With `stream` set, every row goes
 * past the caches with non-temporal stores of the active tier's full vector width:
 * zeros directly, sums accumulated eight vectors at a time in registers and then
 * stored. Full-line stores matter: 64-byte non-temporal stores beat 16-byte ones,
 * which beat ordinary stores, on a gradient larger than the caches (the gap closes
 * when the gradient's block is still cached; docs/KERNELS.md). The instances per tier
 * are fn_embedding_rows.h, included below for AVX-512 and AVX2 (x86-64 with target
 * attributes, fn_base.h) and for the baseline (SSE2, x86-64's 16-byte stores;
 * elsewhere ordinary stores); the active tier (fn_tier(), FASTNN_ISA) picks one.
 *
 * The arithmetic does not depend on the store path or the tier: each element is
 * 0 + dy[p1] + dy[p2] + ... over the row's positions in the order given, compiled
 * without contraction or reassociation, so the result has the same bits whichever
 * way it is stored. A thread that streamed calls fn_emb_fence before its rows are
 * read by anyone.
 */
#ifndef FASTNN_FN_EMBEDDING_H
#define FASTNN_FN_EMBEDDING_H

#include "fn_base.h"
#if FN_X86_TIERS
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Elements before the first vb-byte boundary at or after p (at most n). */
FN_UNUSED static inline ptrdiff_t fn_emb_head(const void *p, ptrdiff_t vb, ptrdiff_t elem, ptrdiff_t n)
{
    const ptrdiff_t head = (ptrdiff_t)((uintptr_t)(vb - (ptrdiff_t)((uintptr_t)p % (uintptr_t)vb)) %
                                       (uintptr_t)vb) / elem;
    return head < n ? head : n;
}

#if FN_X86_TIERS
#define FN_EMB_TARGET __attribute__((target("avx512f")))
#define FN_EMB_VB 64
#define FN_EMB_NAME(name) fn_emb_##name##_avx512_f
#define FN_EMB_T float
#define FN_EMB_STREAM(dst, v) _mm512_stream_ps((dst), (__m512)(v))
#include "fn_embedding_rows.h"
#define FN_EMB_NAME(name) fn_emb_##name##_avx512_d
#define FN_EMB_T double
#define FN_EMB_STREAM(dst, v) _mm512_stream_pd((dst), (__m512d)(v))
#include "fn_embedding_rows.h"
FN_EMB_TARGET FN_UNUSED static void fn_emb_zero_avx512(char *p, ptrdiff_t n)
{
    ptrdiff_t i = fn_emb_head(p, 64, 1, n);
    memset(p, 0, (size_t)i);
    for (; i + 64 <= n; i += 64)
        _mm512_stream_si512((void *)(p + i), _mm512_setzero_si512());
    memset(p + i, 0, (size_t)(n - i));
}
FN_EMB_TARGET FN_UNUSED static void fn_emb_gather_avx512(const int64_t *ids, const char *table, char *y,
                                                         ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t row_bytes)
{
    ptrdiff_t p, k;
    for (p = p0; p < p1; p++) {
        const char *src = table + ids[p] * row_bytes;
        char *dst = y + p * row_bytes;
        for (k = 0; k + 64 <= row_bytes; k += 64)
            _mm512_storeu_si512((void *)(dst + k), _mm512_loadu_si512((const void *)(src + k)));
        memcpy(dst + k, src + k, (size_t)(row_bytes - k));
    }
}
#undef FN_EMB_TARGET
#undef FN_EMB_VB

#define FN_EMB_TARGET __attribute__((target("avx2")))
#define FN_EMB_VB 32
#define FN_EMB_NAME(name) fn_emb_##name##_avx2_f
#define FN_EMB_T float
#define FN_EMB_STREAM(dst, v) _mm256_stream_ps((dst), (__m256)(v))
#include "fn_embedding_rows.h"
#define FN_EMB_NAME(name) fn_emb_##name##_avx2_d
#define FN_EMB_T double
#define FN_EMB_STREAM(dst, v) _mm256_stream_pd((dst), (__m256d)(v))
#include "fn_embedding_rows.h"
FN_EMB_TARGET FN_UNUSED static void fn_emb_zero_avx2(char *p, ptrdiff_t n)
{
    ptrdiff_t i = fn_emb_head(p, 32, 1, n);
    memset(p, 0, (size_t)i);
    for (; i + 32 <= n; i += 32)
        _mm256_stream_si256((__m256i *)(p + i), _mm256_setzero_si256());
    memset(p + i, 0, (size_t)(n - i));
}
FN_EMB_TARGET FN_UNUSED static void fn_emb_gather_avx2(const int64_t *ids, const char *table, char *y,
                                                       ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t row_bytes)
{
    ptrdiff_t p, k;
    for (p = p0; p < p1; p++) {
        const char *src = table + ids[p] * row_bytes;
        char *dst = y + p * row_bytes;
        for (k = 0; k + 32 <= row_bytes; k += 32)
            _mm256_storeu_si256((__m256i *)(dst + k), _mm256_loadu_si256((const __m256i *)(src + k)));
        memcpy(dst + k, src + k, (size_t)(row_bytes - k));
    }
}
#undef FN_EMB_TARGET
#undef FN_EMB_VB
#endif

/* the baseline: 16-byte non-temporal stores where SSE2 is (all of x86-64) */
#if defined(__SSE2__)
#define FN_EMB_BASE_STREAM 1
#define FN_EMB_TARGET
#define FN_EMB_VB 16
#define FN_EMB_NAME(name) fn_emb_##name##_base_f
#define FN_EMB_T float
#define FN_EMB_STREAM(dst, v) _mm_stream_ps((dst), (__m128)(v))
#include "fn_embedding_rows.h"
#define FN_EMB_NAME(name) fn_emb_##name##_base_d
#define FN_EMB_T double
#define FN_EMB_STREAM(dst, v) _mm_stream_pd((dst), (__m128d)(v))
#include "fn_embedding_rows.h"
FN_UNUSED static void fn_emb_zero_base(char *p, ptrdiff_t n)
{
    ptrdiff_t i = fn_emb_head(p, 16, 1, n);
    memset(p, 0, (size_t)i);
    for (; i + 16 <= n; i += 16)
        _mm_stream_si128((__m128i *)(p + i), _mm_setzero_si128());
    memset(p + i, 0, (size_t)(n - i));
}
#undef FN_EMB_TARGET
#undef FN_EMB_VB
#else
#define FN_EMB_BASE_STREAM 0
#endif

/* y[p] = table[ids[p]] for p0 <= p < p1 (rows of row_bytes bytes), with ordinary
 * stores (the next layer reads y right away). Vector copies of the tier's width,
 * faster than a memcpy per row. */
FN_UNUSED static void fn_emb_gather(const int64_t *ids, const char *table, char *y, ptrdiff_t p0, ptrdiff_t p1,
                                    ptrdiff_t row_bytes)
{
    ptrdiff_t p;
#if FN_X86_TIERS
    switch (fn_tier()) {
    case FN_TIER_AVX512: fn_emb_gather_avx512(ids, table, y, p0, p1, row_bytes); return;
    case FN_TIER_AVX2: fn_emb_gather_avx2(ids, table, y, p0, p1, row_bytes); return;
    default: break;
    }
#endif
    for (p = p0; p < p1; p++)
        memcpy(y + p * row_bytes, table + ids[p] * row_bytes, (size_t)row_bytes);
}

/* Make this thread's non-temporal stores visible before the rows are read. */
FN_UNUSED static void fn_emb_fence(int stream)
{
#if defined(__SSE2__)
    if (stream)
        _mm_sfence();
#else
    (void)stream;
#endif
}

/* nbytes of zeros at dst (past the caches with stream). */
FN_UNUSED static void fn_emb_zero(void *dst, ptrdiff_t nbytes, int stream)
{
    if (stream) {
#if FN_X86_TIERS
        switch (fn_tier()) {
        case FN_TIER_AVX512: fn_emb_zero_avx512((char *)dst, nbytes); return;
        case FN_TIER_AVX2: fn_emb_zero_avx2((char *)dst, nbytes); return;
        default: break;
        }
#endif
#if FN_EMB_BASE_STREAM
        fn_emb_zero_base((char *)dst, nbytes);
        return;
#endif
    }
    memset(dst, 0, (size_t)nbytes);
}

/* row[0:width] = 0 + dy[order[s]] + dy[order[s + 1]] + ... + dy[order[e - 1]] (rows of
 * dy have width elements; s < e), past the caches with stream. */
#if FN_X86_TIERS
#define FN_EMB_PICK_TIERS(TS)                                                                      \
    switch (fn_tier()) {                                                                           \
    case FN_TIER_AVX512: fn_emb_sum_row_avx512_##TS(row, dy, width, order, s, e, stream); return;  \
    case FN_TIER_AVX2: fn_emb_sum_row_avx2_##TS(row, dy, width, order, s, e, stream); return;      \
    default: break;                                                                                \
    }
#else
#define FN_EMB_PICK_TIERS(TS)
#endif
#if FN_EMB_BASE_STREAM
#define FN_EMB_PICK(T, TS) FN_EMB_PICK_TIERS(TS) fn_emb_sum_row_base_##TS(row, dy, width, order, s, e, stream);
#else /* no vector instance: plain loops, ordinary stores */
#define FN_EMB_PICK(T, TS)                                                                         \
    const T *src = dy + order[s] * width;                                                          \
    ptrdiff_t d;                                                                                   \
    int64_t q;                                                                                     \
    (void)stream;                                                                                  \
    for (d = 0; d < width; d++)                                                                    \
        row[d] = (T)0 + src[d];                                                                    \
    for (q = s + 1; q < e; q++) {                                                                  \
        src = dy + order[q] * width;                                                               \
        for (d = 0; d < width; d++)                                                                \
            row[d] += src[d];                                                                      \
    }
#endif
#define FN_EMB_DISPATCH(T, TS)                                                                     \
    FN_UNUSED static void fn_emb_sum_row_##TS(T *row, const T *dy, ptrdiff_t width, const int64_t *order, \
                                              int64_t s, int64_t e, int stream)                    \
    {                                                                                              \
        FN_EMB_PICK(T, TS)                                                                         \
    }
FN_EMB_DISPATCH(float, f)
FN_EMB_DISPATCH(double, d)
#undef FN_EMB_DISPATCH
#undef FN_EMB_PICK
#undef FN_EMB_PICK_TIERS

#endif
