/* Pooling kernels, instantiated per CPU tier and element type by fn_kernels.h (no
 * include guard; the shared geometry below has one).
 *
 * NHWC: the C channels of a pixel are contiguous, so every loop body works on one
 * vector of FN_VL channels (FN_GET/FN_PUT take the first n lanes at the channel
 * tail) and the pixels, taps and windows are plain scalar loops around it.
 *
 * - Forward: one task per output row (n, oh); each output vector is built in
 *   registers over its window's taps and stored once.
 * - Max pooling records, per output value, the tap of its first maximum
 *   (i * kw + j; -1 for a window with no cell inside the input) as int8 when
 *   kh * kw < 128 (every usual window: a quarter of int32's memory traffic), else
 *   int32. A cell replaces the maximum when it is strictly larger, or NaN while the
 *   maximum is not: the first maximum in row-major window order wins, and the first
 *   NaN of a window is its maximum.
 * - Backward is a gather: one task per input row (n, h), which visits the output
 *   rows whose windows cover it (tap row i, in increasing i) and adds their
 *   gradients (max: where the recorded tap is this cell's; avg: gradient / divisor).
 *   A task owns every cell it writes, so overlapping windows need no atomics and
 *   the summation order is fixed: the bits do not depend on the thread count.
 *   Every cell is written (no zeroing pass over dx first): when the windows of one
 *   output row do not overlap, the first covering output row assigns (zeros
 *   between windows) and later ones add; when they overlap (ResNet's 3x3 stride 2),
 *   each cell sums all its terms in registers, from a table of the windows covering
 *   each input column, and is stored once.
 * - Outputs far larger than the caches (FN_POOL_STREAM_BYTES) written once per cell
 *   go out with non-temporal stores.
 * - Average pooling multiplies by the reciprocal of the divisor (one division per
 *   window; within an ulp of sum / divisor).
 */
#ifndef FASTNN_FN_POOL_GEOM
#define FASTNN_FN_POOL_GEOM

/* The geometry of a pooling call (docs/KERNELS.md, normalised by the caller). */
typedef struct {
    ptrdiff_t N, H, W, C;      /* input x (N, H, W, C) */
    ptrdiff_t Ho, Wo;          /* output (N, Ho, Wo, C) */
    ptrdiff_t kh, kw, sh, sw;  /* window and stride */
    ptrdiff_t ph, pw;          /* symmetric padding */
    ptrdiff_t dh, dw;          /* dilation (1 for average pooling) */
    int count_include_pad;     /* average pooling's divisor rule */
    int arg_bytes;             /* max pooling's tap record: 1 (int8) or 4 (int32) */
} fn_pool_geom;

/* The width of the tap record for a kh x kw window: int8 holds taps up to 127. */
FN_UNUSED static inline int fn_pool_arg_bytes(ptrdiff_t kh, ptrdiff_t kw)
{
    return kh * kw < 128 ? 1 : 4;
}

/* The taps t < k with 0 <= start + t * d < size: [*lo, *hi) (empty: lo == hi). */
FN_UNUSED static inline void fn_pool_taps(ptrdiff_t start, ptrdiff_t k, ptrdiff_t d, ptrdiff_t size,
                                          ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = start < 0 ? (-start + d - 1) / d : 0;
    ptrdiff_t b = start <= size - 1 ? (size - 1 - start) / d + 1 : 0;
    if (b > k)
        b = k;
    if (a > b)
        a = b;
    *lo = a;
    *hi = b;
}

/* One axis' factor of average pooling's divisor for a window starting at s0: the
 * window clipped to the padded input (count_include_pad; a ceil_mode overhang is
 * never counted) or its cells inside the input. The divisor is the product of the
 * two axes' factors. */
FN_UNUSED static inline ptrdiff_t fn_pool_span(ptrdiff_t s0, ptrdiff_t k, ptrdiff_t size, ptrdiff_t pad,
                                               int include_pad)
{
    ptrdiff_t s1 = s0 + k;
    if (include_pad) {
        if (s1 > size + pad)
            s1 = size + pad;
    } else {
        if (s1 > size)
            s1 = size;
        if (s0 < 0)
            s0 = 0;
    }
    return s1 > s0 ? s1 - s0 : 1;  /* an empty window sums to 0 anyway */
}

/* True when the windows of one output row never share an input column. */
FN_UNUSED static inline int fn_pool_cols_disjoint(const fn_pool_geom *g)
{
    return (g->kw - 1) * g->dw + 1 <= g->sw;
}

#endif

/* the n (<= VL) values at p as a vector, and back */
#define FN_PGET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_PPUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)

/* Outputs of at least this many bytes are written with non-temporal stores when
 * every vector of them is aligned: past the caches, with no read for ownership. An
 * output written once per cell and this large is evicted long before it is read
 * again; the stores halve its memory traffic (ResNet stem P2: a 26 MB dx, forward
 * + backward 8.0 -> 4.0 ms on one thread), while the 8 MiB dx of P1/P3 float32 is
 * faster through the caches. */
#ifndef FN_POOL_STREAM_BYTES
#define FN_POOL_STREAM_BYTES ((size_t)12 << 20)
#endif

/* whether to write an output of `bytes` at p (C channels a pixel) past the caches */
FN_TARGET FN_INLINE int FN(pool_stream)(const void *p, ptrdiff_t C, size_t bytes)
{
    return FN_STREAM_ALIGN > 0 && C % FN_VL == 0 &&
           (uintptr_t)p % (FN_STREAM_ALIGN > 0 ? FN_STREAM_ALIGN : 1) == 0 && bytes >= FN_POOL_STREAM_BYTES;
}
/* store the n lanes of v at p, past the caches when stream (and n == VL) */
#define FN_PSTORE(p, n, v, nt) \
    do { if ((nt) && (n) == FN_VL) FN(stream)((p), (v)); else FN_PPUT((p), (n), (v)); } while (0)

/* max pooling's tap record: VL lanes of int8, and of int32 (any alignment) */
typedef int8_t FN(pa8) __attribute__((vector_size(FN_VL), aligned(1), may_alias));
typedef int32_t FN(pa32) __attribute__((vector_size(4 * FN_VL), aligned(4), may_alias));

/* VL int8 taps at p to and from the tap vector: the tiers' widening loads and
 * narrowing stores (the generic conversion compiles to a lane-by-lane loop) */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_VI FN(pool_ld8)(const int8_t *p) { return (FN_VI)_mm512_cvtepi8_epi64(_mm_loadl_epi64((const __m128i *)p)); }
FN_TARGET FN_INLINE void FN(pool_st8)(int8_t *p, FN_VI k) { _mm_storel_epi64((__m128i *)p, _mm512_cvtepi64_epi8((__m512i)k)); }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_VI FN(pool_ld8)(const int8_t *p) { return (FN_VI)_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)); }
FN_TARGET FN_INLINE void FN(pool_st8)(int8_t *p, FN_VI k) { _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8((__m512i)k)); }
#elif FN_TIER_ID == FN_TIER_AVX2 && FN_DOUBLE
FN_TARGET FN_INLINE FN_VI FN(pool_ld8)(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return (FN_VI)_mm256_cvtepi8_epi64(_mm_cvtsi32_si128(v));
}
FN_TARGET FN_INLINE void FN(pool_st8)(int8_t *p, FN_VI k)
{
    /* the low halves of the four int64 lanes (taps fit in int8), packed to bytes */
    const __m128i d = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32((__m256i)k, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    const __m128i w = _mm_packs_epi32(d, d);
    const int32_t v = _mm_cvtsi128_si32(_mm_packs_epi16(w, w));
    memcpy(p, &v, 4);
}
#elif FN_TIER_ID == FN_TIER_AVX2
FN_TARGET FN_INLINE FN_VI FN(pool_ld8)(const int8_t *p) { return (FN_VI)_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
FN_TARGET FN_INLINE void FN(pool_st8)(int8_t *p, FN_VI k)
{
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128((__m256i)k), _mm256_extracti128_si256((__m256i)k, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(w, w));
}
#else
FN_TARGET FN_INLINE FN_VI FN(pool_ld8)(const int8_t *p) { return __builtin_convertvector(*(const FN(pa8) *)p, FN_VI); }
FN_TARGET FN_INLINE void FN(pool_st8)(int8_t *p, FN_VI k) { *(FN(pa8) *)p = __builtin_convertvector(k, FN(pa8)); }
#endif

/* store the first n lanes of the taps k at arg[at] (1- or 4-byte records) */
FN_TARGET FN_INLINE void FN(pool_put_arg)(void *arg, ptrdiff_t at, int n, int bytes, FN_VI k)
{
    int l;
    if (bytes == 1) {
        int8_t *a = (int8_t *)arg + at;
        if (n == FN_VL) {
            FN(pool_st8)(a, k);
        } else {
            for (l = 0; l < n; l++)
                a[l] = (int8_t)k[l];
        }
    } else {
        int32_t *a = (int32_t *)arg + at;
        if (n == FN_VL) {
            *(FN(pa32) *)a = __builtin_convertvector(k, FN(pa32));
        } else {
            for (l = 0; l < n; l++)
                a[l] = (int32_t)k[l];
        }
    }
}

/* the first n lanes of the taps recorded at arg[at]; the others -1 (no tap) */
FN_TARGET FN_INLINE FN_VI FN(pool_get_arg)(const void *arg, ptrdiff_t at, int n, int bytes)
{
    FN_VI k;
    int l;
    if (n == FN_VL) {
        if (bytes == 1)
            return FN(pool_ld8)((const int8_t *)arg + at);
        return __builtin_convertvector(*(const FN(pa32) *)((const int32_t *)arg + at), FN_VI);
    }
    k = (FN_VI){0} - 1;
    for (l = 0; l < n; l++)
        k[l] = bytes == 1 ? ((const int8_t *)arg)[at + l] : ((const int32_t *)arg)[at + l];
    return k;
}

/* Every window loop below runs on U vectors of channels at once (U independent
 * dependency chains per tap; the channel tail one vector at a time), through an
 * always-inline helper called with constant U and n, so that the full-vector paths
 * compile without lane masks or branches on them. */
#define FN_POOL_U 4

/* for each channel run of U vectors, then the tail: BODY(c, U, n) with constants */
#define FN_POOL_CHANNELS(C, BODY) \
    do { \
        ptrdiff_t c_ = 0; \
        for (; c_ + FN_POOL_U * FN_VL <= (C); c_ += FN_POOL_U * FN_VL) \
            BODY(c_, FN_POOL_U, FN_VL); \
        for (; c_ < (C); c_ += FN_VL) { \
            if ((C) - c_ >= FN_VL) \
                BODY(c_, 1, FN_VL); \
            else \
                BODY(c_, 1, (int)((C) - c_)); \
        } \
    } while (0)

/* ---- max pooling ---- */

/* the maxima over a window's taps (i, j) in [ilo, ihi) x [jlo, jhi) of the U vectors
 * at x0 + u * VL (n lanes), x0 the tap (ilo, jlo), and their first taps */
FN_TARGET FN_INLINE void FN(pool_max_win)(const FN_T *x0, ptrdiff_t ilo, ptrdiff_t ihi, ptrdiff_t jlo,
                                          ptrdiff_t jhi, ptrdiff_t kw, ptrdiff_t rstep, ptrdiff_t cstep,
                                          int U, int n, FN_V *best, FN_VI *kv)
{
    const FN_T *xr = x0;
    ptrdiff_t i, j;
    int u;
    for (u = 0; u < U; u++) {
        best[u] = FN_PGET(x0 + u * FN_VL, n);
        kv[u] = (FN_VI){0} + (int)(ilo * kw + jlo);
    }
    for (i = ilo; i < ihi; i++, xr += rstep) {
        const FN_T *xp = xr;
        j = jlo;
        if (i == ilo) {
            j++;
            xp += cstep;
        }
        for (; j < jhi; j++, xp += cstep) {
            const FN_VI k = (FN_VI){0} + (int)(i * kw + j);
            for (u = 0; u < U; u++) {
                const FN_V v = FN_PGET(xp + u * FN_VL, n);
                /* strictly larger, or NaN while the maximum is not */
                const FN_VI take = ~(v <= best[u]) & (best[u] == best[u]);
                best[u] = FN(sel)(take, v, best[u]);
                kv[u] = (kv[u] & ~take) | (k & take);
            }
        }
    }
}

#if FN_TIER_ID != FN_TIER_GENERIC
/* the tiers' max of two vectors (the second when they are equal, zeros of either
 * sign included, or when one is NaN), max of two tap vectors, and whether any lane
 * is NaN */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(pool_vmax)(FN_V a, FN_V b) { return _mm512_max_pd(a, b); }
FN_TARGET FN_INLINE FN_VI FN(pool_kmax)(FN_VI a, FN_VI b) { return (FN_VI)_mm512_max_epi64((__m512i)a, (__m512i)b); }
FN_TARGET FN_INLINE int FN(pool_anynan)(FN_V a) { return _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q) != 0; }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_V FN(pool_vmax)(FN_V a, FN_V b) { return _mm512_max_ps(a, b); }
FN_TARGET FN_INLINE FN_VI FN(pool_kmax)(FN_VI a, FN_VI b) { return (FN_VI)_mm512_max_epi32((__m512i)a, (__m512i)b); }
FN_TARGET FN_INLINE int FN(pool_anynan)(FN_V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) != 0; }
#elif FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(pool_vmax)(FN_V a, FN_V b) { return _mm256_max_pd(a, b); }
/* AVX2 has no 64-bit max: a select on the greater-than mask */
FN_TARGET FN_INLINE FN_VI FN(pool_kmax)(FN_VI a, FN_VI b)
{
    return (FN_VI)_mm256_blendv_pd((__m256d)b, (__m256d)a, (__m256d)(a > b));
}
FN_TARGET FN_INLINE int FN(pool_anynan)(FN_V a) { return _mm256_movemask_pd(_mm256_cmp_pd(a, a, _CMP_UNORD_Q)) != 0; }
#else
FN_TARGET FN_INLINE FN_V FN(pool_vmax)(FN_V a, FN_V b) { return _mm256_max_ps(a, b); }
FN_TARGET FN_INLINE FN_VI FN(pool_kmax)(FN_VI a, FN_VI b) { return (FN_VI)_mm256_max_epi32((__m256i)a, (__m256i)b); }
FN_TARGET FN_INLINE int FN(pool_anynan)(FN_V a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)) != 0; }
#endif

/* pool_max_win without NaN: a cell replaces the maximum when strictly larger
 * (max(v, best) keeps best on ties), and as the taps k increase, the tap of the
 * last replacement is the largest tap that replaced. Returns 0 when no lane of any
 * cell was NaN (a running sum per lane tells, once per window: NaN, or inf - inf
 * which only costs the exact loop for nothing), else 1 with best and kv undefined. */
FN_TARGET FN_INLINE int FN(pool_max_win_fast)(const FN_T *x0, ptrdiff_t ilo, ptrdiff_t ihi, ptrdiff_t jlo,
                                              ptrdiff_t jhi, ptrdiff_t kw, ptrdiff_t rstep, ptrdiff_t cstep,
                                              int U, int n, FN_V *best, FN_VI *kv)
{
    FN_V sum[FN_POOL_U];
    const FN_T *xr = x0;
    ptrdiff_t i, j;
    int u, nan = 0;
    for (u = 0; u < U; u++) {
        best[u] = sum[u] = FN_PGET(x0 + u * FN_VL, n);
        kv[u] = (FN_VI){0} + (int)(ilo * kw + jlo);
    }
    for (i = ilo; i < ihi; i++, xr += rstep) {
        const FN_T *xp = xr;
        j = jlo;
        if (i == ilo) {
            j++;
            xp += cstep;
        }
        for (; j < jhi; j++, xp += cstep) {
            const FN_VI k = (FN_VI){0} + (int)(i * kw + j);
            for (u = 0; u < U; u++) {
                const FN_V v = FN_PGET(xp + u * FN_VL, n);
                kv[u] = FN(pool_kmax)(kv[u], k & (best[u] < v));
                best[u] = FN(pool_vmax)(v, best[u]);
                sum[u] += v;
            }
        }
    }
    for (u = 0; u < U; u++)
        nan |= FN(pool_anynan)(sum[u]);
    return nan;
}
#else
/* the generic tier takes the exact loop every time */
FN_TARGET FN_INLINE int FN(pool_max_win_fast)(const FN_T *x0, ptrdiff_t ilo, ptrdiff_t ihi, ptrdiff_t jlo,
                                              ptrdiff_t jhi, ptrdiff_t kw, ptrdiff_t rstep, ptrdiff_t cstep,
                                              int U, int n, FN_V *best, FN_VI *kv)
{
    (void)x0, (void)ilo, (void)ihi, (void)jlo, (void)jhi, (void)kw, (void)rstep, (void)cstep;
    (void)U, (void)n, (void)best, (void)kv;
    return 1;
}
#endif

/* The memory one output row's work moves: its windows' input rows and the row. */
FN_TARGET FN_INLINE ptrdiff_t FN(pool_row_bytes)(const fn_pool_geom *g)
{
    return (g->kh * g->W + g->Wo) * g->C * (ptrdiff_t)sizeof(FN_T);
}

/* output row oh of image x (H, W, C) into y (Wo, C) and its tap records at arg[at] */
FN_TARGET static void FN(pool_max_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y,
                                       void *arg, ptrdiff_t at, int stream)
{
    const ptrdiff_t W = g->W, C = g->C, kw = g->kw, dh = g->dh, dw = g->dw;
    const ptrdiff_t ih0 = oh * g->sh - g->ph, rstep = dh * W * C, cstep = dw * C;
    const int bytes = g->arg_bytes;
    ptrdiff_t ilo, ihi, jlo, jhi, ow;
    fn_pool_taps(ih0, g->kh, dh, g->H, &ilo, &ihi);
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw, ya = at + ow * C;
        FN_T *yp = y + ow * C;
        const FN_T *x0;
        fn_pool_taps(iw0, kw, dw, W, &jlo, &jhi);
        if (ilo >= ihi || jlo >= jhi) {
#define FN_POOL_EMPTY(c, U, n) \
            do { \
                int u_; \
                for (u_ = 0; u_ < (U); u_++) { \
                    FN_PPUT(yp + (c) + u_ * FN_VL, (n), FN(bc)(-(FN_T)__builtin_inf())); \
                    FN(pool_put_arg)(arg, ya + (c) + u_ * FN_VL, (n), bytes, (FN_VI){0} - 1); \
                } \
            } while (0)
            FN_POOL_CHANNELS(C, FN_POOL_EMPTY);
#undef FN_POOL_EMPTY
            continue;
        }
        x0 = x + ((ih0 + ilo * dh) * W + iw0 + jlo * dw) * C;
#define FN_POOL_MAX(c, U, n) \
        do { \
            FN_V b_[FN_POOL_U]; \
            FN_VI k_[FN_POOL_U]; \
            int u_; \
            if (FN(pool_max_win_fast)(x0 + (c), ilo, ihi, jlo, jhi, kw, rstep, cstep, (U), (n), b_, k_)) \
                FN(pool_max_win)(x0 + (c), ilo, ihi, jlo, jhi, kw, rstep, cstep, (U), (n), b_, k_); \
            for (u_ = 0; u_ < (U); u_++) { \
                FN_PSTORE(yp + (c) + u_ * FN_VL, (n), b_[u_], stream); \
                FN(pool_put_arg)(arg, ya + (c) + u_ * FN_VL, (n), bytes, k_[u_]); \
            } \
        } while (0)
        FN_POOL_CHANNELS(C, FN_POOL_MAX);
#undef FN_POOL_MAX
    }
}

/* y (N, Ho, Wo, C): the maxima of x's windows; arg: their taps (g->arg_bytes each) */
FN_TARGET FN_UNUSED static void FN(pool_max_forward)(const fn_pool_geom *g, const FN_T *x, FN_T *y, void *arg,
                                                     int threads)
{
    const ptrdiff_t Ho = g->Ho, image = g->H * g->W * g->C, row = g->Wo * g->C;
    const int stream = FN(pool_stream)(y, g->C, (size_t)(g->N * Ho * row) * sizeof(FN_T));
    FN_ITEM_TASKS(g->N * Ho, FN(pool_row_bytes)(g),
        FN(pool_max_row)(g, x + (item / Ho) * image, item % Ho, y + item * row, arg, item * row, stream);
        if (stream)
            FN(sfence)();
    );
}

/* the U vectors of one window's gradient (gp, taps at arg[at]) at its taps (i, j),
 * j in [jlo, jhi), of one input row: dp0 the cell of tap jlo */
FN_TARGET FN_INLINE void FN(pool_max_back_win)(const FN_T *gp, const void *arg, ptrdiff_t at, FN_T *dp0,
                                               ptrdiff_t jlo, ptrdiff_t jhi, ptrdiff_t cstep, int kbase,
                                               int bytes, int U, int n, int assign)
{
    FN_V gv[FN_POOL_U];
    FN_VI av[FN_POOL_U];
    FN_T *dp = dp0;
    ptrdiff_t j;
    int u;
    for (u = 0; u < U; u++) {
        gv[u] = FN_PGET(gp + u * FN_VL, n);
        av[u] = FN(pool_get_arg)(arg, at + u * FN_VL, n, bytes);
    }
    for (j = jlo; j < jhi; j++, dp += cstep) {
        const FN_VI k = (FN_VI){0} + (int)(kbase + j);
        for (u = 0; u < U; u++) {
            const FN_V add = FN(sel)(av[u] == k, gv[u], FN(bc)(0));
            if (assign)
                FN_PSTORE(dp + u * FN_VL, n, add, assign == 2);
            else
                FN_PPUT(dp + u * FN_VL, n, FN_PGET(dp + u * FN_VL, n) + add);
        }
    }
}

/* dx row (W, C) += the gradients dy row (Wo, C) routes through tap row i, where the
 * recorded tap (arg at `at`) is the cell's; assign: write instead of add, zeros
 * where no window of the row reaches (windows of a row must not overlap) */
FN_TARGET static void FN(pool_max_back_row)(const fn_pool_geom *g, const FN_T *dy, const void *arg, ptrdiff_t at,
                                            ptrdiff_t i, FN_T *dx, int assign)
{
    const ptrdiff_t W = g->W, C = g->C, kw = g->kw, dw = g->dw, cstep = dw * C;
    const int bytes = g->arg_bytes, kbase = (int)(i * kw);
    ptrdiff_t ow, j, jlo, jhi, next = 0;
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw, a0 = at + ow * C;
        const FN_T *gp = dy + ow * C;
        FN_T *dp0;
        fn_pool_taps(iw0, kw, dw, W, &jlo, &jhi);
        if (jlo >= jhi)
            continue;
        dp0 = dx + (iw0 + jlo * dw) * C;
        if (assign) {
            /* zeros for the cells before each tap that no earlier window reached */
            for (j = jlo; j < jhi; j++) {
                const ptrdiff_t col = iw0 + j * dw;
                if (next < col)
                    memset(dx + next * C, 0, (size_t)((col - next) * C) * sizeof(FN_T));
                next = col + 1;
            }
#define FN_POOL_BACK(c, U, n) \
            FN(pool_max_back_win)(gp + (c), arg, a0 + (c), dp0 + (c), jlo, jhi, cstep, kbase, bytes, (U), (n), 1)
#define FN_POOL_BACK_STREAM(c, U, n) \
            FN(pool_max_back_win)(gp + (c), arg, a0 + (c), dp0 + (c), jlo, jhi, cstep, kbase, bytes, (U), (n), 2)
            if (assign == 2)
                FN_POOL_CHANNELS(C, FN_POOL_BACK_STREAM);
            else
                FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
#undef FN_POOL_BACK_STREAM
        } else {
#define FN_POOL_BACK(c, U, n) \
            FN(pool_max_back_win)(gp + (c), arg, a0 + (c), dp0 + (c), jlo, jhi, cstep, kbase, bytes, (U), (n), 0)
            FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
        }
    }
    if (assign && next < W)
        memset(dx + next * C, 0, (size_t)((W - next) * C) * sizeof(FN_T));
}

/* ---- average pooling (dilation 1) ---- */

/* the sums over a window (rows x cols taps from x0) of the U vectors at x0 + u * VL */
FN_TARGET FN_INLINE void FN(pool_avg_win)(const FN_T *x0, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t rstep,
                                          ptrdiff_t C, int U, int n, FN_V *s)
{
    const FN_T *xr = x0;
    ptrdiff_t i, j;
    int u;
    for (u = 0; u < U; u++)
        s[u] = FN(bc)(0);
    for (i = 0; i < rows; i++, xr += rstep)
        for (j = 0; j < cols; j++)
            for (u = 0; u < U; u++)
                s[u] += FN_PGET(xr + j * C + u * FN_VL, n);
}

/* output row oh of image x (H, W, C) into y (Wo, C) */
FN_TARGET static void FN(pool_avg_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y, int stream)
{
    const ptrdiff_t W = g->W, C = g->C;
    const ptrdiff_t ih0 = oh * g->sh - g->ph;
    const ptrdiff_t span_h = fn_pool_span(ih0, g->kh, g->H, g->ph, g->count_include_pad);
    ptrdiff_t ilo, ihi, jlo, jhi, ow;
    fn_pool_taps(ih0, g->kh, 1, g->H, &ilo, &ihi);
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        const FN_T scale = (FN_T)1 / (FN_T)(span_h * fn_pool_span(iw0, g->kw, W, g->pw, g->count_include_pad));
        const FN_T *x0;
        FN_T *yp = y + ow * C;
        fn_pool_taps(iw0, g->kw, 1, W, &jlo, &jhi);
        x0 = x + ((ih0 + ilo) * W + iw0 + jlo) * C;
#define FN_POOL_AVG(c, U, n) \
        do { \
            FN_V s_[FN_POOL_U]; \
            int u_; \
            FN(pool_avg_win)(x0 + (c), ihi - ilo, jhi - jlo, W * C, C, (U), (n), s_); \
            for (u_ = 0; u_ < (U); u_++) \
                FN_PSTORE(yp + (c) + u_ * FN_VL, (n), s_[u_] * scale, stream); \
        } while (0)
        FN_POOL_CHANNELS(C, FN_POOL_AVG);
#undef FN_POOL_AVG
    }
}

/* y (N, Ho, Wo, C): the averages of x's windows */
FN_TARGET FN_UNUSED static void FN(pool_avg_forward)(const fn_pool_geom *g, const FN_T *x, FN_T *y, int threads)
{
    const ptrdiff_t Ho = g->Ho, image = g->H * g->W * g->C, row = g->Wo * g->C;
    const int stream = FN(pool_stream)(y, g->C, (size_t)(g->N * Ho * row) * sizeof(FN_T));
    FN_ITEM_TASKS(g->N * Ho, FN(pool_row_bytes)(g),
        FN(pool_avg_row)(g, x + (item / Ho) * image, item % Ho, y + item * row, stream);
        if (stream)
            FN(sfence)();
    );
}

/* the U vectors of one window's gradient gp times scale at its cols cells from dp0 */
FN_TARGET FN_INLINE void FN(pool_avg_back_win)(const FN_T *gp, FN_T scale, FN_T *dp0, ptrdiff_t cols,
                                               ptrdiff_t C, int U, int n, int assign)
{
    FN_V gv[FN_POOL_U];
    FN_T *dp = dp0;
    ptrdiff_t j;
    int u;
    for (u = 0; u < U; u++)
        gv[u] = FN_PGET(gp + u * FN_VL, n) * scale;
    for (j = 0; j < cols; j++, dp += C)
        for (u = 0; u < U; u++) {
            if (assign)
                FN_PSTORE(dp + u * FN_VL, n, gv[u], assign == 2);
            else
                FN_PPUT(dp + u * FN_VL, n, FN_PGET(dp + u * FN_VL, n) + gv[u]);
        }
}

/* dx row (W, C) += the gradients / divisors of dy row (Wo, C) of output row oh;
 * assign as in pool_max_back_row */
FN_TARGET static void FN(pool_avg_back_row)(const fn_pool_geom *g, const FN_T *dy, ptrdiff_t oh, FN_T *dx,
                                            int assign)
{
    const ptrdiff_t W = g->W, C = g->C;
    const ptrdiff_t span_h = fn_pool_span(oh * g->sh - g->ph, g->kh, g->H, g->ph, g->count_include_pad);
    ptrdiff_t ow, jlo, jhi, next = 0;
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        const FN_T *gp = dy + ow * C;
        FN_T scale, *dp0;
        fn_pool_taps(iw0, g->kw, 1, W, &jlo, &jhi);
        if (jlo >= jhi)
            continue;
        scale = (FN_T)1 / (FN_T)(span_h * fn_pool_span(iw0, g->kw, W, g->pw, g->count_include_pad));
        dp0 = dx + (iw0 + jlo) * C;
        if (assign) {
            if (next < iw0 + jlo)
                memset(dx + next * C, 0, (size_t)((iw0 + jlo - next) * C) * sizeof(FN_T));
            next = iw0 + jhi;
#define FN_POOL_BACK(c, U, n) FN(pool_avg_back_win)(gp + (c), scale, dp0 + (c), jhi - jlo, C, (U), (n), 1)
#define FN_POOL_BACK_STREAM(c, U, n) FN(pool_avg_back_win)(gp + (c), scale, dp0 + (c), jhi - jlo, C, (U), (n), 2)
            if (assign == 2)
                FN_POOL_CHANNELS(C, FN_POOL_BACK_STREAM);
            else
                FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
#undef FN_POOL_BACK_STREAM
        } else {
#define FN_POOL_BACK(c, U, n) FN(pool_avg_back_win)(gp + (c), scale, dp0 + (c), jhi - jlo, C, (U), (n), 0)
            FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
        }
    }
    if (assign && next < W)
        memset(dx + next * C, 0, (size_t)((W - next) * C) * sizeof(FN_T));
}

/* ---- backward ---- */

/* dx at U vectors of one cell from its gradient terms e < ne: dy at off[e] (and max
 * pooling's taps at arg[off[e]]) where the tap is k[e] (max), or times scale[e] (avg);
 * first: start from 0, else add to dx; stream: store past the caches */
FN_TARGET FN_INLINE void FN(pool_gather_cell)(FN_T *dp, const FN_T *dy, const void *arg, int bytes,
                                              const ptrdiff_t *off, const int *k, const FN_T *scale, int ne,
                                              int first, int stream, int U, int n)
{
    FN_V acc[FN_POOL_U];
    int u, e;
    for (u = 0; u < U; u++)
        acc[u] = first ? FN(bc)(0) : FN_PGET(dp + u * FN_VL, n);
    if (arg) {
        for (e = 0; e < ne; e++) {
            const FN_VI ke = (FN_VI){0} + k[e];
            for (u = 0; u < U; u++) {
                const FN_VI av = FN(pool_get_arg)(arg, off[e] + u * FN_VL, n, bytes);
                acc[u] += FN(sel)(av == ke, FN_PGET(dy + off[e] + u * FN_VL, n), FN(bc)(0));
            }
        }
    } else {
        for (e = 0; e < ne; e++)
            for (u = 0; u < U; u++)
                acc[u] += FN_PGET(dy + off[e] + u * FN_VL, n) * scale[e];
    }
    for (u = 0; u < U; u++)
        FN_PSTORE(dp + u * FN_VL, n, acc[u], stream);
}

#define FN_POOL_PAIRS 16
#define FN_POOL_TERMS 32

/* dx row h of image n (W, C) when the windows of an output row overlap: each cell
 * sums its terms (covering output row, in increasing tap row i; covering window of
 * that row, col_ent[col_start[w] ..]) in registers and is stored once (past the
 * caches when stream). */
FN_TARGET static void FN(pool_gather_row)(const fn_pool_geom *g, const ptrdiff_t *col_start, const int32_t *col_ent,
                                          const FN_T *dy, const void *arg, ptrdiff_t n, ptrdiff_t h, FN_T *dxr,
                                          int stream)
{
    const ptrdiff_t C = g->C, W = g->W, Ho = g->Ho, orow = g->Wo * C;
    const int bytes = g->arg_bytes;
    ptrdiff_t poff[FN_POOL_PAIRS], pspan[FN_POOL_PAIRS], off[FN_POOL_TERMS];
    int pk[FN_POOL_PAIRS], k[FN_POOL_TERMS];
    FN_T scale[FN_POOL_TERMS];
    ptrdiff_t i = 0, w, e;
    int chunk = 0;
    do {
        int np = 0, p, last;
        /* the next output rows covering row h (tap row i of output row oh) */
        for (; i < g->kh && np < FN_POOL_PAIRS; i++) {
            const ptrdiff_t t = h + g->ph - i * g->dh;
            if (t < 0) {
                i = g->kh;
                break;
            }
            if (t % g->sh == 0 && t / g->sh < Ho) {
                const ptrdiff_t oh = t / g->sh;
                poff[np] = (n * Ho + oh) * orow;
                pk[np] = (int)(i * g->kw);
                pspan[np] = fn_pool_span(oh * g->sh - g->ph, g->kh, g->H, g->ph, g->count_include_pad);
                np++;
            }
        }
        if (np == 0 && chunk > 0)
            break;
        last = i >= g->kh;
        for (w = 0; w < W; w++) {
            FN_T *dp = dxr + w * C;
            int ne = 0, first = chunk == 0;
#define FN_POOL_GATHER(c, U, nl) \
            FN(pool_gather_cell)(dp + (c), dy + (c), arg ? (const int8_t *)arg + (c) * bytes : NULL, bytes, off, k, \
                                 scale, ne, first, 0, (U), (nl))
#define FN_POOL_GATHER_STREAM(c, U, nl) \
            FN(pool_gather_cell)(dp + (c), dy + (c), arg ? (const int8_t *)arg + (c) * bytes : NULL, bytes, off, k, \
                                 scale, ne, first, 1, (U), (nl))
            for (p = 0; p < np; p++) {
                for (e = col_start[w]; e < col_start[w + 1]; e++) {
                    const ptrdiff_t ow = col_ent[2 * e];
                    off[ne] = poff[p] + ow * C;
                    if (arg) {
                        k[ne] = pk[p] + col_ent[2 * e + 1];
                    } else {
                        const ptrdiff_t d = pspan[p] * fn_pool_span(ow * g->sw - g->pw, g->kw, W, g->pw,
                                                                    g->count_include_pad);
                        scale[ne] = (FN_T)1 / (FN_T)d;
                    }
                    if (++ne == FN_POOL_TERMS) {
                        FN_POOL_CHANNELS(C, FN_POOL_GATHER);
                        first = 0;
                        ne = 0;
                    }
                }
            }
            if (ne > 0 || first) {
                /* the cell's only store when the terms fit one flush */
                if (first && last && stream)
                    FN_POOL_CHANNELS(C, FN_POOL_GATHER_STREAM);
                else
                    FN_POOL_CHANNELS(C, FN_POOL_GATHER);
            }
#undef FN_POOL_GATHER
#undef FN_POOL_GATHER_STREAM
        }
        chunk++;
    } while (i < g->kh);
}

/* dx (N, H, W, C) from dy (N, Ho, Wo, C): one task per input row, which gathers the
 * output rows whose windows cover it, in increasing tap row i; every cell written.
 * arg: max pooling's tap records, or NULL for average pooling. Returns 0, or -1
 * when the column table could not be allocated. */
FN_TARGET FN_UNUSED static int FN(pool_backward)(const fn_pool_geom *g, const FN_T *dy, const void *arg,
                                                 FN_T *dx, int threads)
{
    const ptrdiff_t H = g->H, W = g->W, Ho = g->Ho, row = g->W * g->C, orow = g->Wo * g->C;
    const int stream = FN(pool_stream)(dx, g->C, (size_t)(g->N * H * row) * sizeof(FN_T));
    ptrdiff_t *col_start = NULL;
    int32_t *col_ent = NULL;
    if (!fn_pool_cols_disjoint(g)) {
        /* overlapping windows: the windows (ow, tap j) covering each input column */
        ptrdiff_t ow, j, jlo, jhi, total = 0, w;
        col_start = (ptrdiff_t *)calloc((size_t)(W + 1), sizeof(ptrdiff_t));
        for (ow = 0; col_start && ow < g->Wo; ow++) {
            fn_pool_taps(ow * g->sw - g->pw, g->kw, g->dw, W, &jlo, &jhi);
            for (j = jlo; j < jhi; j++)
                col_start[ow * g->sw - g->pw + j * g->dw + 1]++;
            total += jhi - jlo;
        }
        col_ent = col_start ? (int32_t *)malloc((size_t)(2 * total + 2) * sizeof(int32_t)) : NULL;
        if (!col_ent) {
            free(col_start);
            return -1;
        }
        for (w = 0; w < W; w++)
            col_start[w + 1] += col_start[w];
        /* filled from the last window back: each column's terms in increasing j */
        for (ow = g->Wo - 1; ow >= 0; ow--) {
            fn_pool_taps(ow * g->sw - g->pw, g->kw, g->dw, W, &jlo, &jhi);
            for (j = jhi - 1; j >= jlo; j--) {
                const ptrdiff_t col = ow * g->sw - g->pw + j * g->dw;
                col_ent[2 * col_start[col]] = (int32_t)ow;
                col_ent[2 * col_start[col] + 1] = (int32_t)j;
                col_start[col]++;
            }
        }
        /* col_start[w] now holds the end of column w: shift back */
        for (w = W; w > 0; w--)
            col_start[w] = col_start[w - 1];
        col_start[0] = 0;
    }
    /* an input row's work: the row and the output rows covering it */
    FN_ITEM_TASKS(g->N * H, (row + (g->kh + g->sh - 1) / g->sh * orow) * (ptrdiff_t)sizeof(FN_T),
        const ptrdiff_t n = item / H, h = item % H;
        FN_T *dxr = dx + item * row;
        if (col_start) {
            FN(pool_gather_row)(g, col_start, col_ent, dy, arg, n, h, dxr, stream);
            if (stream)
                FN(sfence)();
        } else {
            /* the output rows covering row h, in increasing tap row i: the first
             * assigns (past the caches when it is the only one), the others add */
            ptrdiff_t i, count = 0;
            int first = 1;
            for (i = 0; i < g->kh; i++) {
                const ptrdiff_t t = h + g->ph - i * g->dh;
                if (t < 0)
                    break;
                count += t % g->sh == 0 && t / g->sh < Ho;
            }
            for (i = 0; i < g->kh; i++) {
                const ptrdiff_t t = h + g->ph - i * g->dh;
                const int assign = first ? (stream && count == 1 ? 2 : 1) : 0;
                ptrdiff_t oh, q;
                if (t < 0)
                    break;
                if (t % g->sh != 0 || t / g->sh >= Ho)
                    continue;
                oh = t / g->sh;
                q = n * Ho + oh;
                if (arg)
                    FN(pool_max_back_row)(g, dy + q * orow, arg, q * orow, i, dxr, assign);
                else
                    FN(pool_avg_back_row)(g, dy + q * orow, oh, dxr, assign);
                first = 0;
            }
            if (first)
                memset(dxr, 0, (size_t)row * sizeof(FN_T));
            if (stream && count == 1)
                FN(sfence)();
        }
    );
    free(col_start);
    free(col_ent);
    return 0;
}

#undef FN_PGET
#undef FN_PPUT
#undef FN_PSTORE
#undef FN_POOL_U
#undef FN_POOL_CHANNELS
#undef FN_POOL_PAIRS
#undef FN_POOL_TERMS
