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
 *   output row do not overlap, the first tap row assigns (zeros between windows)
 *   and later ones add; otherwise the row is zeroed in the cache and accumulated.
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

/* output row oh of image x (H, W, C) into y (Wo, C) and its tap records at arg[at] */
FN_TARGET static void FN(pool_max_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y,
                                       void *arg, ptrdiff_t at)
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
            FN(pool_max_win)(x0 + (c), ilo, ihi, jlo, jhi, kw, rstep, cstep, (U), (n), b_, k_); \
            for (u_ = 0; u_ < (U); u_++) { \
                FN_PPUT(yp + (c) + u_ * FN_VL, (n), b_[u_]); \
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
    FN_TASKS(g->N * Ho,
        FN(pool_max_row)(g, x + (task / Ho) * image, task % Ho, y + task * row, arg, task * row);
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
            FN_PPUT(dp + u * FN_VL, n, assign ? add : FN_PGET(dp + u * FN_VL, n) + add);
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
            FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
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
FN_TARGET static void FN(pool_avg_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y)
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
                FN_PPUT(yp + (c) + u_ * FN_VL, (n), s_[u_] * scale); \
        } while (0)
        FN_POOL_CHANNELS(C, FN_POOL_AVG);
#undef FN_POOL_AVG
    }
}

/* y (N, Ho, Wo, C): the averages of x's windows */
FN_TARGET FN_UNUSED static void FN(pool_avg_forward)(const fn_pool_geom *g, const FN_T *x, FN_T *y, int threads)
{
    const ptrdiff_t Ho = g->Ho, image = g->H * g->W * g->C, row = g->Wo * g->C;
    FN_TASKS(g->N * Ho,
        FN(pool_avg_row)(g, x + (task / Ho) * image, task % Ho, y + task * row);
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
        for (u = 0; u < U; u++)
            FN_PPUT(dp + u * FN_VL, n, assign ? gv[u] : FN_PGET(dp + u * FN_VL, n) + gv[u]);
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
            FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
        } else {
#define FN_POOL_BACK(c, U, n) FN(pool_avg_back_win)(gp + (c), scale, dp0 + (c), jhi - jlo, C, (U), (n), 0)
            FN_POOL_CHANNELS(C, FN_POOL_BACK);
#undef FN_POOL_BACK
        }
    }
    if (assign && next < W)
        memset(dx + next * C, 0, (size_t)((W - next) * C) * sizeof(FN_T));
}

/* dx (N, H, W, C) from dy (N, Ho, Wo, C): one task per input row, which gathers the
 * output rows whose windows cover it, in increasing tap row i; every cell written.
 * arg: max pooling's tap records, or NULL for average pooling. */
FN_TARGET FN_UNUSED static void FN(pool_backward)(const fn_pool_geom *g, const FN_T *dy, const void *arg,
                                                  FN_T *dx, int threads)
{
    const ptrdiff_t H = g->H, Ho = g->Ho, row = g->W * g->C, orow = g->Wo * g->C;
    const int disjoint = fn_pool_cols_disjoint(g);
    FN_TASKS(g->N * H,
        const ptrdiff_t n = task / H, h = task % H;
        FN_T *dxr = dx + task * row;
        int first = 1;
        ptrdiff_t i;
        for (i = 0; i < g->kh; i++) {
            const ptrdiff_t t = h + g->ph - i * g->dh;
            ptrdiff_t oh, q;
            if (t < 0)
                break;
            if (t % g->sh != 0 || t / g->sh >= Ho)
                continue;
            oh = t / g->sh;
            q = n * Ho + oh;
            if (first && !disjoint)
                memset(dxr, 0, (size_t)row * sizeof(FN_T));
            if (arg)
                FN(pool_max_back_row)(g, dy + q * orow, arg, q * orow, i, dxr, first && disjoint);
            else
                FN(pool_avg_back_row)(g, dy + q * orow, oh, dxr, first && disjoint);
            first = 0;
        }
        if (first)
            memset(dxr, 0, (size_t)row * sizeof(FN_T));
    );
}

#undef FN_PGET
#undef FN_PPUT
#undef FN_POOL_U
#undef FN_POOL_CHANNELS
