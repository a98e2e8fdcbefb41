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

/* store the first n lanes of the taps k at arg[at] (1- or 4-byte records) */
FN_TARGET FN_INLINE void FN(pool_put_arg)(void *arg, ptrdiff_t at, int n, int bytes, FN_VI k)
{
    int l;
    if (bytes == 1) {
        int8_t *a = (int8_t *)arg + at;
        if (n == FN_VL) {
            *(FN(pa8) *)a = __builtin_convertvector(k, FN(pa8));
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
            return __builtin_convertvector(*(const FN(pa8) *)((const int8_t *)arg + at), FN_VI);
        return __builtin_convertvector(*(const FN(pa32) *)((const int32_t *)arg + at), FN_VI);
    }
    k = (FN_VI){0} - 1;
    for (l = 0; l < n; l++)
        k[l] = bytes == 1 ? ((const int8_t *)arg)[at + l] : ((const int32_t *)arg)[at + l];
    return k;
}

/* ---- max pooling ---- */

/* output row oh of image x (H, W, C) into y (Wo, C) and its tap records at arg[at] */
FN_TARGET static void FN(pool_max_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y,
                                       void *arg, ptrdiff_t at)
{
    const ptrdiff_t W = g->W, C = g->C, kw = g->kw, dh = g->dh, dw = g->dw;
    const ptrdiff_t ih0 = oh * g->sh - g->ph;
    const int bytes = g->arg_bytes;
    ptrdiff_t ilo, ihi, jlo, jhi, ow, c, i, j;
    fn_pool_taps(ih0, g->kh, dh, g->H, &ilo, &ihi);
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        FN_T *yp = y + ow * C;
        fn_pool_taps(iw0, kw, dw, W, &jlo, &jhi);
        if (ilo >= ihi || jlo >= jhi) {
            for (c = 0; c < C; c += FN_VL) {
                const int n = (int)(C - c < FN_VL ? C - c : FN_VL);
                FN_PPUT(yp + c, n, FN(bc)(-(FN_T)__builtin_inf()));
                FN(pool_put_arg)(arg, at + ow * C + c, n, bytes, (FN_VI){0} - 1);
            }
            continue;
        }
        {
            /* the window's first cell inside the input, and the taps from it */
            const FN_T *x0 = x + ((ih0 + ilo * dh) * W + iw0 + jlo * dw) * C;
            const ptrdiff_t row_step = dh * W * C, col_step = dw * C;
            for (c = 0; c < C; c += FN_VL) {
                const int n = (int)(C - c < FN_VL ? C - c : FN_VL);
                FN_V best = FN_PGET(x0 + c, n);
                FN_VI kv = (FN_VI){0} + (int)(ilo * kw + jlo);
                const FN_T *xr = x0 + c;
                for (i = ilo; i < ihi; i++, xr += row_step) {
                    const FN_T *xp = xr;
                    j = jlo;
                    if (i == ilo) {
                        j++;
                        xp += col_step;
                    }
                    for (; j < jhi; j++, xp += col_step) {
                        const FN_V v = FN_PGET(xp, n);
                        /* strictly larger, or NaN while the maximum is not */
                        const FN_VI take = ~(v <= best) & (best == best);
                        best = FN(sel)(take, v, best);
                        kv = (kv & ~take) | (((FN_VI){0} + (int)(i * kw + j)) & take);
                    }
                }
                FN_PPUT(yp + c, n, best);
                FN(pool_put_arg)(arg, at + ow * C + c, n, bytes, kv);
            }
        }
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

/* dx row (W, C) += the gradients dy row (Wo, C) routes through tap row i, where the
 * recorded tap (arg at `at`) is the cell's; assign: write instead of add, zeros
 * where no window of the row reaches (windows of a row must not overlap) */
FN_TARGET static void FN(pool_max_back_row)(const fn_pool_geom *g, const FN_T *dy, const void *arg, ptrdiff_t at,
                                            ptrdiff_t i, FN_T *dx, int assign)
{
    const ptrdiff_t W = g->W, C = g->C, kw = g->kw, dw = g->dw;
    const int bytes = g->arg_bytes;
    const FN_V zero = FN(bc)(0);
    ptrdiff_t ow, c, j, jlo, jhi, next = 0;
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        fn_pool_taps(iw0, kw, dw, W, &jlo, &jhi);
        if (jlo >= jhi)
            continue;
        if (assign) {
            /* zeros for the cells before each tap that no earlier window reached */
            for (j = jlo; j < jhi; j++) {
                const ptrdiff_t col = iw0 + j * dw;
                if (next < col)
                    memset(dx + next * C, 0, (size_t)((col - next) * C) * sizeof(FN_T));
                next = col + 1;
            }
        }
        for (c = 0; c < C; c += FN_VL) {
            const int n = (int)(C - c < FN_VL ? C - c : FN_VL);
            const FN_V gv = FN_PGET(dy + ow * C + c, n);
            const FN_VI av = FN(pool_get_arg)(arg, at + ow * C + c, n, bytes);
            FN_T *dp = dx + (iw0 + jlo * dw) * C + c;
            for (j = jlo; j < jhi; j++, dp += dw * C) {
                const FN_V add = FN(sel)(av == (FN_VI){0} + (int)(i * kw + j), gv, zero);
                FN_PPUT(dp, n, assign ? add : FN_PGET(dp, n) + add);
            }
        }
    }
    if (assign && next < W)
        memset(dx + next * C, 0, (size_t)((W - next) * C) * sizeof(FN_T));
}

/* ---- average pooling (dilation 1) ---- */

/* output row oh of image x (H, W, C) into y (Wo, C) */
FN_TARGET static void FN(pool_avg_row)(const fn_pool_geom *g, const FN_T *x, ptrdiff_t oh, FN_T *y)
{
    const ptrdiff_t W = g->W, C = g->C;
    const ptrdiff_t ih0 = oh * g->sh - g->ph;
    const ptrdiff_t span_h = fn_pool_span(ih0, g->kh, g->H, g->ph, g->count_include_pad);
    ptrdiff_t ilo, ihi, jlo, jhi, ow, c, i, j;
    fn_pool_taps(ih0, g->kh, 1, g->H, &ilo, &ihi);
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        const FN_T scale = (FN_T)1 / (FN_T)(span_h * fn_pool_span(iw0, g->kw, W, g->pw, g->count_include_pad));
        const FN_T *x0 = x + ((ih0 + ilo) * W + iw0) * C;
        FN_T *yp = y + ow * C;
        fn_pool_taps(iw0, g->kw, 1, W, &jlo, &jhi);
        for (c = 0; c < C; c += FN_VL) {
            const int n = (int)(C - c < FN_VL ? C - c : FN_VL);
            FN_V s = FN(bc)(0);
            const FN_T *xr = x0 + c;
            for (i = ilo; i < ihi; i++, xr += W * C)
                for (j = jlo; j < jhi; j++)
                    s += FN_PGET(xr + j * C, n);
            FN_PPUT(yp + c, n, s * scale);
        }
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

/* dx row (W, C) += the gradients / divisors of dy row (Wo, C) of output row oh;
 * assign as in pool_max_back_row */
FN_TARGET static void FN(pool_avg_back_row)(const fn_pool_geom *g, const FN_T *dy, ptrdiff_t oh, FN_T *dx,
                                            int assign)
{
    const ptrdiff_t W = g->W, C = g->C;
    const ptrdiff_t span_h = fn_pool_span(oh * g->sh - g->ph, g->kh, g->H, g->ph, g->count_include_pad);
    ptrdiff_t ow, c, j, jlo, jhi, next = 0;
    for (ow = 0; ow < g->Wo; ow++) {
        const ptrdiff_t iw0 = ow * g->sw - g->pw;
        FN_T scale;
        fn_pool_taps(iw0, g->kw, 1, W, &jlo, &jhi);
        if (jlo >= jhi)
            continue;
        scale = (FN_T)1 / (FN_T)(span_h * fn_pool_span(iw0, g->kw, W, g->pw, g->count_include_pad));
        if (assign) {
            if (next < iw0 + jlo)
                memset(dx + next * C, 0, (size_t)((iw0 + jlo - next) * C) * sizeof(FN_T));
            next = iw0 + jhi;
        }
        for (c = 0; c < C; c += FN_VL) {
            const int n = (int)(C - c < FN_VL ? C - c : FN_VL);
            const FN_V gv = FN_PGET(dy + ow * C + c, n) * scale;
            FN_T *dp = dx + (iw0 + jlo) * C + c;
            for (j = jlo; j < jhi; j++, dp += C)
                FN_PPUT(dp, n, assign ? gv : FN_PGET(dp, n) + gv);
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
