/* Batch normalisation kernels (training statistics, normalise-and-scale, backward),
 * instantiated per CPU tier and element type by fn_kernels.h (no include guard; the
 * shared geometry below has one). docs/KERNELS.md has the contract.
 *
 * x is (P, C, S), the channel in the middle: NHWC images and dense batches are
 * (N * H * W, C, 1), NCHW images (N, C, H * W). A channel's M = P * S values are
 * reduced; the work has one of two shapes:
 * - rows (S == 1): a row's C channels are contiguous, so every loop body works on U
 *   vectors of channels (FN_BGET/FN_BPUT take the first n lanes at the channel tail)
 *   and walks the rows around it; per-channel coefficients stay in registers.
 * - planes (S > 1): a channel's values are runs of S contiguous values, one per
 *   image; the loops run along the runs with the channel's coefficients broadcast.
 *   (x (M, 1, 1) is the same memory as (1, 1, M) and runs as planes.)
 *
 * Statistics, forward: a channel's values are cut into chunks of a size fixed by
 * the shape alone (rows: fn_bn_chunk_rows(C) rows; planes: FN_BN_CHUNK consecutive
 * values of the channel in (n, s) order, across images when S is small). Each
 * chunk takes the corrected two-pass algorithm on data it has just brought into
 * the level-1 cache: m = the chunk's mean (sum of x / n), then d = sum(x - m) and
 * q = sum((x - m)^2), so that its mean is m + d / n and its sum of squared
 * deviations q - d^2 / n, accurate even where the mean dwarfs the spread
 * (1e4 + N(0, 1) in float32: x - m is exact there). The chunks are merged in double
 * in chunk order with Chan's pairwise update; chunks are computed by whichever
 * thread takes them but merged in a fixed order, so the bits do not depend on the
 * thread count. Backward's two sums (dy and dy * (x - mean)) are one pass over the
 * same chunks, summed in double in chunk order.
 *
 * Normalise: y = (x - m_hi) * scale + shift, with the mean split into m_hi (the
 * element type's rounding of the double mean) and m_lo (the rest, folded into
 * shift = beta - m_lo * scale): x - m_hi is exact for x near the mean, so float32
 * keeps the double mean's accuracy at the cost of one subtraction and one
 * multiply-add per value. dx = a * (dy - mean(dy)) + b * (x - m_hi) + c with
 * per-channel a, b, c from the same sums (the course's / CS231n's formula
 * rearranged; docs/KERNELS.md).
 */
#ifndef FASTNN_FN_NORM_GEOM
#define FASTNN_FN_NORM_GEOM
#include <math.h>

/* x (P, C, S), see above */
typedef struct {
    ptrdiff_t P, C, S;
} fn_bn_geom;

/* values of a channel per statistics chunk (planes), and the rows path's target */
#define FN_BN_CHUNK 4096
/* values per task of a parallel pass (a few hundred KiB: enough to balance two
 * threads on a busy machine and few enough tasks that handing them out is cheap) */
#define FN_BN_TASK 32768
/* below this many values a call runs on the calling thread alone */
#define FN_BN_SERIAL 32768
/* channels per task of the merges */
#define FN_BN_MERGE_BLOCK 64

/* rows per statistics chunk of the rows path: about FN_BN_CHUNK values, at least 32 rows */
FN_UNUSED static inline ptrdiff_t fn_bn_chunk_rows(ptrdiff_t C)
{
    const ptrdiff_t r = FN_BN_CHUNK / (C > 0 ? C : 1);
    return r < 32 ? 32 : r;
}

/* How the statistics are cut: K chunks of len values of each channel (the last
 * one shorter) out of total = M; chunk k of channel c keeps its partial sums at
 * k * ks + c * cs. */
typedef struct {
    ptrdiff_t K, len, total, ks, cs;
    int rows;
} fn_bn_plan;

/* Rows of an elementwise pass done together, each run of channel vectors going
 * over all of them before the next run: few enough that the block's rows are still
 * in the level-1 cache when the next run comes (where a row has several runs: 64
 * float channels on AVX2 are two), enough to amortise loading the coefficients. */
FN_UNUSED static inline ptrdiff_t fn_bn_block_rows(ptrdiff_t C)
{
    const ptrdiff_t r = 2048 / (C > 0 ? C : 1);
    return r < 4 ? 4 : r;
}

/* (M, 1, 1) is (1, 1, M): a lone channel runs along its values */
FN_UNUSED static inline fn_bn_geom fn_bn_canon(const fn_bn_geom *g)
{
    fn_bn_geom h = *g;
    if (h.S == 1 && h.C == 1) {
        h.S = h.P;
        h.P = 1;
    }
    return h;
}

FN_UNUSED static inline fn_bn_plan fn_bn_plan_of(const fn_bn_geom *g)
{
    fn_bn_plan p;
    p.rows = g->S == 1;
    p.total = g->P * g->S;
    p.len = p.rows ? fn_bn_chunk_rows(g->C) : FN_BN_CHUNK;
    p.K = (p.total + p.len - 1) / p.len;
    p.ks = p.rows ? g->C : 1;
    p.cs = p.rows ? 1 : p.K;
    return p;
}

/* the values in chunk k */
FN_UNUSED static inline ptrdiff_t fn_bn_chunk_count(const fn_bn_plan *p, ptrdiff_t k)
{
    const ptrdiff_t left = p->total - k * p->len;
    return left < p->len ? left : p->len;
}

/* the thread count for a call on `values` values */
FN_UNUSED static inline int fn_bn_team(ptrdiff_t values, int threads)
{
    return values < FN_BN_SERIAL ? 1 : threads;
}

/* The per-channel sums of the backward pass in double, the merged moments of the
 * forward pass, and the finishing arithmetic in double (type-independent). */

/* mean and biased variance from the merged moments; a channel whose values hold an
 * infinity of one sign has that infinity as its mean (`naive`: the plain mean,
 * which is inf there while the corrected one is NaN) */
FN_UNUSED static inline void fn_bn_finish(double mu, double m2, double naive, ptrdiff_t total, double *mean,
                                          double *var)
{
    double v = m2 / (double)total;
    if (mu != mu && isinf(naive))
        mu = naive;
    if (v < 0.0)
        v = 0.0;  /* rounding of a constant channel's q - d^2 / n; NaN stays NaN */
    *mean = mu;
    *var = v;
}

#endif

/* the n (<= VL) values at p as a vector, and back */
#define FN_BGET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_BPUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)

/* Every rows-path loop runs on U vectors of channels at once (the channel tail one
 * vector at a time), through an always-inline helper called with constant U and n,
 * so that the full-vector paths compile without lane masks. */
#define FN_BN_U 4

/* for each channel run in [c0, c1) of U vectors, then the tail: BODY(c, U, n) with constants */
#define FN_BN_CHANNELS(c0, c1, BODY) \
    do { \
        ptrdiff_t c_ = (c0); \
        for (; c_ + FN_BN_U * FN_VL <= (c1); c_ += FN_BN_U * FN_VL) \
            BODY(c_, FN_BN_U, FN_VL); \
        for (; c_ < (c1); c_ += FN_VL) { \
            if ((c1) - c_ >= FN_VL) \
                BODY(c_, 1, FN_VL); \
            else \
                BODY(c_, 1, (int)((c1) - c_)); \
        } \
    } while (0)

/* ---- statistics: the chunks' partial moments ---- */

/* Rows: the chunk of `rows` rows (stride ld) at x, U vectors of n channels: its
 * mean estimate m, d = sum(x - m), q = sum((x - m)^2) to pm, pd, pq. */
FN_TARGET FN_INLINE void FN(bn_rows_moments)(const FN_T *x, ptrdiff_t ld, ptrdiff_t rows, FN_T inv, int U, int n,
                                             FN_T *pm, FN_T *pd, FN_T *pq, int fetch_next)
{
    FN_V s[FN_BN_U], d[FN_BN_U], q[FN_BN_U];
    const FN_V vinv = FN(bc)(inv);
    const FN_T *xr;
    ptrdiff_t r;
    int u;
    for (u = 0; u < U; u++)
        s[u] = d[u] = q[u] = FN(bc)(0);
    /* the sum of x / rows: the mean, without an overflow of the sum */
    for (r = 0, xr = x; r < rows; r++, xr += ld)
        for (u = 0; u < U; u++)
            s[u] = FN(fma)(FN_BGET(xr + u * FN_VL, n), vinv, s[u]);
    /* the second pass reads the level-1 cache: it asks for the next chunk's rows
     * meanwhile (the next chunk starts `rows` rows on), or memory would idle */
    for (r = 0, xr = x; r < rows; r++, xr += ld)
        for (u = 0; u < U; u++) {
            const FN_V e = FN_BGET(xr + u * FN_VL, n) - s[u];
            if (fetch_next)
                __builtin_prefetch(xr + rows * ld + u * FN_VL);
            d[u] += e;
            q[u] = FN(fma)(e, e, q[u]);
        }
    for (u = 0; u < U; u++) {
        FN_BPUT(pm + u * FN_VL, n, s[u]);
        FN_BPUT(pd + u * FN_VL, n, d[u]);
        FN_BPUT(pq + u * FN_VL, n, q[u]);
    }
}

/* Planes: for each run of channel c's values in its flat (n, s) range [lo, hi),
 * BODY(offset of the run in x, its length) */
#define FN_BN_RUNS(g, c, lo, hi, BODY) \
    do { \
        ptrdiff_t pos_ = (lo); \
        while (pos_ < (hi)) { \
            const ptrdiff_t n_ = pos_ / (g)->S, s_ = pos_ - n_ * (g)->S; \
            const ptrdiff_t end_ = (n_ + 1) * (g)->S < (hi) ? (n_ + 1) * (g)->S : (hi); \
            BODY((n_ * (g)->C + (c)) * (g)->S + s_, end_ - pos_); \
            pos_ = end_; \
        } \
    } while (0)

/* sum of f(x[j]) over a run of len values at p: four vectors at a time, then one,
 * then the scalar tail, added into the vector accumulators acc[4] and *tail; with
 * ahead != 0, asking for the values `ahead` elements on meanwhile */
#define FN_BN_RUN_SUM(p, len, VEXPR, SEXPR, ahead) \
    do { \
        const FN_T *p_ = (p); \
        const ptrdiff_t len_ = (len); \
        ptrdiff_t j_ = 0; \
        for (; j_ + 4 * FN_VL <= len_; j_ += 4 * FN_VL) { \
            if (ahead) { \
                __builtin_prefetch(p_ + j_ + (ahead)); \
                __builtin_prefetch(p_ + j_ + (ahead) + 2 * FN_VL); \
            } \
            VEXPR(0, FN(ld)(p_ + j_)); \
            VEXPR(1, FN(ld)(p_ + j_ + FN_VL)); \
            VEXPR(2, FN(ld)(p_ + j_ + 2 * FN_VL)); \
            VEXPR(3, FN(ld)(p_ + j_ + 3 * FN_VL)); \
        } \
        for (; j_ + FN_VL <= len_; j_ += FN_VL) \
            VEXPR(0, FN(ld)(p_ + j_)); \
        for (; j_ < len_; j_++) \
            SEXPR(p_[j_]); \
    } while (0)

/* Planes: chunk [lo, hi) of channel c; `ahead` (0: none) is where the next chunk's
 * values are from this one's, which the second pass asks for while it reads the
 * level-1 cache */
FN_TARGET FN_INLINE void FN(bn_plane_moments)(const fn_bn_geom *g, const FN_T *x, ptrdiff_t c, ptrdiff_t lo,
                                              ptrdiff_t hi, ptrdiff_t ahead, FN_T *pm, FN_T *pd, FN_T *pq)
{
    const FN_T inv = (FN_T)1 / (FN_T)(hi - lo);
    const FN_V vinv = FN(bc)(inv);
    FN_V s[4], d[4], q[4], vm;
    FN_T st = 0, dt = 0, qt = 0, m;
    int u;
    for (u = 0; u < 4; u++)
        s[u] = d[u] = q[u] = FN(bc)(0);
#define FN_BN_VA(u, v) (s[u] = FN(fma)((v), vinv, s[u]))
#define FN_BN_SA(v) (st += (v) * inv)
#define FN_BN_A(off, len) FN_BN_RUN_SUM(x + (off), (len), FN_BN_VA, FN_BN_SA, 0)
    FN_BN_RUNS(g, c, lo, hi, FN_BN_A);
    m = FN(hsum)((s[0] + s[1]) + (s[2] + s[3])) + st;
    vm = FN(bc)(m);
#define FN_BN_VB(u, v) do { const FN_V e_ = (v) - vm; d[u] += e_; q[u] = FN(fma)(e_, e_, q[u]); } while (0)
#define FN_BN_SB(v) do { const FN_T e_ = (v) - m; dt += e_; qt += e_ * e_; } while (0)
#define FN_BN_B(off, len) FN_BN_RUN_SUM(x + (off), (len), FN_BN_VB, FN_BN_SB, ahead)
    FN_BN_RUNS(g, c, lo, hi, FN_BN_B);
    *pm = m;
    *pd = FN(hsum)((d[0] + d[1]) + (d[2] + d[3])) + dt;
    *pq = FN(hsum)((q[0] + q[1]) + (q[2] + q[3])) + qt;
#undef FN_BN_VA
#undef FN_BN_SA
#undef FN_BN_A
#undef FN_BN_VB
#undef FN_BN_SB
#undef FN_BN_B
}

/* every chunk's (m, d, q), in parallel */
FN_TARGET FN_UNUSED static void FN(bn_moments)(const fn_bn_geom *g, const fn_bn_plan *pl, const FN_T *x, FN_T *pm,
                                               FN_T *pd, FN_T *pq, int threads)
{
    const ptrdiff_t C = g->C;
    if (pl->rows) {
        /* tasks: G chunks by a block of at most 256 channels */
        const ptrdiff_t R = pl->len, CB = C < 256 ? C : 256, nb = (C + CB - 1) / CB;
        const ptrdiff_t G = FN_BN_TASK / (R * CB) > 1 ? FN_BN_TASK / (R * CB) : 1, ng = (pl->K + G - 1) / G;
#define FN_BN_BODY(c, U, n) FN(bn_rows_moments)(xk + (c), C, rows, inv, U, n, a + (c), b + (c), e + (c), next)
        FN_TASKS(ng * nb,
            const ptrdiff_t kg = task / nb, c0 = task % nb * CB, c1 = c0 + CB < C ? c0 + CB : C;
            ptrdiff_t k;
            for (k = kg * G; k < pl->K && k < (kg + 1) * G; k++) {
                const ptrdiff_t rows = fn_bn_chunk_count(pl, k);
                const FN_T *xk = x + k * R * C;
                const FN_T inv = (FN_T)1 / (FN_T)rows;
                const int next = k + 1 < pl->K && fn_bn_chunk_count(pl, k + 1) == rows;
                FN_T *a = pm + k * C, *b = pd + k * C, *e = pq + k * C;
                FN_BN_CHANNELS(c0, c1, FN_BN_BODY);
            }
        );
#undef FN_BN_BODY
    } else {
        /* tasks: G chunks of one channel. The next chunk's values are this one's
         * moved by a fixed distance when chunks are whole images' runs or each a
         * piece of one run: the distance between the chunks' first values. */
        const ptrdiff_t G = FN_BN_TASK / FN_BN_CHUNK, ng = (pl->K + G - 1) / G, S = g->S;
        const int shifted = pl->len % S == 0 || S % pl->len == 0;
        FN_TASKS(C * ng,
            const ptrdiff_t c = task / ng, kg = task % ng;
            ptrdiff_t k;
            for (k = kg * G; k < pl->K && k < (kg + 1) * G; k++) {
                const ptrdiff_t lo = k * pl->len, hi = lo + fn_bn_chunk_count(pl, k), at = c * pl->cs + k;
                const ptrdiff_t ahead = shifted && k + 1 < pl->K && fn_bn_chunk_count(pl, k + 1) == hi - lo
                    ? (hi / S - lo / S) * C * S + (hi % S - lo % S) : 0;
                FN(bn_plane_moments)(g, x, c, lo, hi, ahead, pm + at, pd + at, pq + at);
            }
        );
    }
}

/* One Chan update of the running moments of nc channels (partials at stride cs)
 * with chunk k of nk values after `have` values; `naive` sums chunk means * nk. */
FN_TARGET FN_INLINE void FN(bn_merge_step)(ptrdiff_t nc, ptrdiff_t cs, const FN_T *a, const FN_T *b, const FN_T *e,
                                           double nk, double have, double *mu, double *m2, double *naive)
{
    const double inv = 1.0 / nk, f = nk / (have + nk), w = have * f;
    ptrdiff_t i;
    for (i = 0; i < nc; i++) {
        const double dk = (double)b[i * cs], mk = (double)a[i * cs] + dk * inv;
        const double delta = mk - mu[i];
        mu[i] += delta * f;
        m2[i] += ((double)e[i * cs] - dk * dk * inv) + delta * delta * w;
        naive[i] += (double)a[i * cs] * nk;
    }
}

/* the merged mean and biased variance of every channel, in double, chunks in order */
FN_TARGET FN_UNUSED static void FN(bn_merge_moments)(const fn_bn_plan *pl, ptrdiff_t C, const FN_T *pm,
                                                     const FN_T *pd, const FN_T *pq, double *mean, double *var,
                                                     int threads)
{
    const ptrdiff_t B = FN_BN_MERGE_BLOCK, blocks = (C + B - 1) / B;
    if (pl->K * C < 8 * FN_BN_SERIAL || blocks < 2)
        threads = 1;
    FN_TASKS(blocks,
        const ptrdiff_t c0 = task * B, nc = C - c0 < B ? C - c0 : B;
        double mu[FN_BN_MERGE_BLOCK], m2[FN_BN_MERGE_BLOCK], naive[FN_BN_MERGE_BLOCK];
        double have = 0.0;
        ptrdiff_t i, k;
        for (i = 0; i < nc; i++)
            mu[i] = m2[i] = naive[i] = 0.0;
        for (k = 0; k < pl->K; k++) {
            const ptrdiff_t at = k * pl->ks + c0 * pl->cs;
            const double nk = (double)fn_bn_chunk_count(pl, k);
            if (pl->cs == 1)  /* rows: contiguous channels, a vector loop */
                FN(bn_merge_step)(nc, 1, pm + at, pd + at, pq + at, nk, have, mu, m2, naive);
            else
                FN(bn_merge_step)(nc, pl->cs, pm + at, pd + at, pq + at, nk, have, mu, m2, naive);
            have += nk;
        }
        for (i = 0; i < nc; i++)
            fn_bn_finish(mu[i], m2[i], naive[i] / (double)pl->total, pl->total, mean + c0 + i, var + c0 + i);
    );
}

/* ---- normalise and scale: y = (x - m) * a + b per channel ---- */

FN_TARGET FN_INLINE void FN(bn_rows_apply)(const FN_T *x, FN_T *y, ptrdiff_t ld, ptrdiff_t rows, const FN_T *m,
                                           const FN_T *a, const FN_T *b, int U, int n)
{
    FN_V vm[FN_BN_U], va[FN_BN_U], vb[FN_BN_U];
    ptrdiff_t r;
    int u;
    for (u = 0; u < U; u++) {
        vm[u] = FN_BGET(m + u * FN_VL, n);
        va[u] = FN_BGET(a + u * FN_VL, n);
        vb[u] = FN_BGET(b + u * FN_VL, n);
    }
    for (r = 0; r < rows; r++, x += ld, y += ld)
        for (u = 0; u < U; u++)
            FN_BPUT(y + u * FN_VL, n, FN(fma)(FN_BGET(x + u * FN_VL, n) - vm[u], va[u], vb[u]));
}

FN_TARGET FN_INLINE void FN(bn_run_apply)(const FN_T *x, FN_T *y, ptrdiff_t len, FN_T m, FN_T a, FN_T b)
{
    const FN_V vm = FN(bc)(m), va = FN(bc)(a), vb = FN(bc)(b);
    ptrdiff_t j = 0;
    for (; j + 2 * FN_VL <= len; j += 2 * FN_VL) {
        FN(st)(y + j, FN(fma)(FN(ld)(x + j) - vm, va, vb));
        FN(st)(y + j + FN_VL, FN(fma)(FN(ld)(x + j + FN_VL) - vm, va, vb));
    }
    for (; j < len; j += FN_VL) {
        const int w = len - j < FN_VL ? (int)(len - j) : FN_VL;
        FN_BPUT(y + j, w, FN(fma)(FN_BGET(x + j, w) - vm, va, vb));
    }
}

/* y from the per-channel m, a, b, in parallel blocks of rows or of planes */
FN_TARGET FN_UNUSED static void FN(bn_apply)(const fn_bn_geom *g, const FN_T *x, FN_T *y, const FN_T *m,
                                             const FN_T *a, const FN_T *b, int threads)
{
    const ptrdiff_t C = g->C, S = g->S;
    if (S == 1) {
        const ptrdiff_t R = FN_BN_TASK / C > 1 ? FN_BN_TASK / C : 1, nt = (g->P + R - 1) / R;
        const ptrdiff_t RB = fn_bn_block_rows(C);
#define FN_BN_BODY(c, U, n) FN(bn_rows_apply)(xr + (c), yr + (c), C, rows, m + (c), a + (c), b + (c), U, n)
        FN_TASKS(nt,
            const ptrdiff_t r1 = (task + 1) * R < g->P ? (task + 1) * R : g->P;
            ptrdiff_t r0;
            for (r0 = task * R; r0 < r1; r0 += RB) {
                const ptrdiff_t rows = r1 - r0 < RB ? r1 - r0 : RB;
                const FN_T *xr = x + r0 * C;
                FN_T *yr = y + r0 * C;
                FN_BN_CHANNELS(0, C, FN_BN_BODY);
            }
        );
#undef FN_BN_BODY
    } else {
        const ptrdiff_t planes = g->P * C, G = FN_BN_TASK / S > 1 ? FN_BN_TASK / S : 1, nt = (planes + G - 1) / G;
        FN_TASKS(nt,
            ptrdiff_t q;
            for (q = task * G; q < planes && q < (task + 1) * G; q++) {
                const ptrdiff_t c = q % C;
                FN(bn_run_apply)(x + q * S, y + q * S, S, m[c], a[c], b[c]);
            }
        );
    }
}

/* ---- entry points ---- */

/* Training forward: y, the batch mean and biased variance (element type, and in
 * double for the backward pass with invstd = 1 / sqrt(var + eps)). Returns 0, or
 * -1 when the scratch memory could not be allocated. */
FN_TARGET FN_UNUSED static int FN(bn_forward)(const fn_bn_geom *g0, const FN_T *x, const FN_T *gamma,
                                              const FN_T *beta, double eps, FN_T *y, FN_T *mean, FN_T *var,
                                              double *mean_d, double *invstd_d, int threads)
{
    const fn_bn_geom g = fn_bn_canon(g0);
    const fn_bn_plan pl = fn_bn_plan_of(&g);
    const ptrdiff_t C = g.C, KC = pl.K * C;
    FN_T *part, *coef;
    ptrdiff_t c;
    if (C == 0 || pl.total == 0)
        return 0;
    part = (FN_T *)fn_alloc((size_t)(3 * KC + 3 * C) * sizeof(FN_T));
    if (part == NULL)
        return -1;
    coef = part + 3 * KC;
    threads = fn_bn_team(g.P * C * g.S, threads);
    FN(bn_moments)(&g, &pl, x, part, part + KC, part + 2 * KC, threads);
    /* invstd_d holds the variances until the coefficients below */
    FN(bn_merge_moments)(&pl, C, part, part + KC, part + 2 * KC, mean_d, invstd_d, threads);
    for (c = 0; c < C; c++) {
        const double v = invstd_d[c], inv = 1.0 / sqrt(v + eps), scale = (double)gamma[c] * inv;
        const FN_T hi = (FN_T)mean_d[c];
        mean[c] = hi;
        var[c] = (FN_T)v;
        invstd_d[c] = inv;
        coef[c] = hi;
        coef[C + c] = (FN_T)scale;
        coef[2 * C + c] = (FN_T)((double)beta[c] - (mean_d[c] - (double)hi) * scale);
    }
    FN(bn_apply)(&g, x, y, coef, coef + C, coef + 2 * C, threads);
    fn_free(part);
    return 0;
}

/* Inference: y = gamma (x - mean) / sqrt(var + eps) + beta with the given statistics.
 * Returns 0, or -1 when the coefficients' memory could not be allocated. */
FN_TARGET FN_UNUSED static int FN(bn_inference)(const fn_bn_geom *g0, const FN_T *x, const FN_T *gamma,
                                                const FN_T *beta, const FN_T *mean, const FN_T *var, double eps,
                                                FN_T *y, int threads)
{
    const fn_bn_geom g = fn_bn_canon(g0);
    const ptrdiff_t C = g.C;
    FN_T *coef;
    ptrdiff_t c;
    if (C == 0 || g.P * g.S == 0)
        return 0;
    coef = (FN_T *)fn_alloc((size_t)(2 * C) * sizeof(FN_T));
    if (coef == NULL)
        return -1;
    for (c = 0; c < C; c++) {
        const double scale = (double)gamma[c] / sqrt((double)var[c] + eps);
        coef[c] = (FN_T)scale;
        coef[C + c] = beta[c];
    }
    FN(bn_apply)(&g, x, y, mean, coef, coef + C, fn_bn_team(g.P * C * g.S, threads));
    fn_free(coef);
    return 0;
}

/* ---- backward ---- */

/* Rows: sums of dy and dy * (x - m) over a chunk, U vectors of n channels */
FN_TARGET FN_INLINE void FN(bn_rows_grad_sums)(const FN_T *x, const FN_T *dy, ptrdiff_t ld, ptrdiff_t rows,
                                               const FN_T *m, int U, int n, FN_T *pg, FN_T *pxg)
{
    FN_V sg[FN_BN_U], sx[FN_BN_U], vm[FN_BN_U];
    ptrdiff_t r;
    int u;
    for (u = 0; u < U; u++) {
        sg[u] = sx[u] = FN(bc)(0);
        vm[u] = FN_BGET(m + u * FN_VL, n);
    }
    for (r = 0; r < rows; r++, x += ld, dy += ld)
        for (u = 0; u < U; u++) {
            const FN_V d = FN_BGET(dy + u * FN_VL, n);
            sg[u] += d;
            sx[u] = FN(fma)(d, FN_BGET(x + u * FN_VL, n) - vm[u], sx[u]);
        }
    for (u = 0; u < U; u++) {
        FN_BPUT(pg + u * FN_VL, n, sg[u]);
        FN_BPUT(pxg + u * FN_VL, n, sx[u]);
    }
}

/* Planes: the same sums over chunk [lo, hi) of channel c */
FN_TARGET FN_INLINE void FN(bn_plane_grad_sums)(const fn_bn_geom *g, const FN_T *x, const FN_T *dy, ptrdiff_t c,
                                                ptrdiff_t lo, ptrdiff_t hi, FN_T m, FN_T *pg, FN_T *pxg)
{
    const FN_V vm = FN(bc)(m);
    FN_V sg[4], sx[4];
    FN_T gt = 0, xt = 0;
    int u;
    for (u = 0; u < 4; u++)
        sg[u] = sx[u] = FN(bc)(0);
    /* the run's dy and x at the same offset: the accumulating expressions index x
     * through the distance between the two arrays */
#define FN_BN_RUN(off, len) \
    do { \
        const FN_T *d_ = dy + (off), *x_ = x + (off); \
        const ptrdiff_t len_ = (len); \
        ptrdiff_t j_ = 0; \
        for (; j_ + 4 * FN_VL <= len_; j_ += 4 * FN_VL) \
            for (u = 0; u < 4; u++) { \
                const FN_V dv = FN(ld)(d_ + j_ + u * FN_VL); \
                sg[u] += dv; \
                sx[u] = FN(fma)(dv, FN(ld)(x_ + j_ + u * FN_VL) - vm, sx[u]); \
            } \
        for (; j_ + FN_VL <= len_; j_ += FN_VL) { \
            const FN_V dv = FN(ld)(d_ + j_); \
            sg[0] += dv; \
            sx[0] = FN(fma)(dv, FN(ld)(x_ + j_) - vm, sx[0]); \
        } \
        for (; j_ < len_; j_++) { \
            gt += d_[j_]; \
            xt += d_[j_] * (x_[j_] - m); \
        } \
    } while (0)
    FN_BN_RUNS(g, c, lo, hi, FN_BN_RUN);
#undef FN_BN_RUN
    *pg = FN(hsum)((sg[0] + sg[1]) + (sg[2] + sg[3])) + gt;
    *pxg = FN(hsum)((sx[0] + sx[1]) + (sx[2] + sx[3])) + xt;
}

/* dx = a (dy - md) + b (x - m) + e per channel (rows: U vectors of n channels) */
FN_TARGET FN_INLINE void FN(bn_rows_dx)(const FN_T *x, const FN_T *dy, FN_T *dx, ptrdiff_t ld, ptrdiff_t rows,
                                        const FN_T *co, ptrdiff_t C, int U, int n)
{
    FN_V vm[FN_BN_U], va[FN_BN_U], vd[FN_BN_U], vb[FN_BN_U], ve[FN_BN_U];
    ptrdiff_t r;
    int u;
    for (u = 0; u < U; u++) {
        vm[u] = FN_BGET(co + u * FN_VL, n);
        va[u] = FN_BGET(co + C + u * FN_VL, n);
        vd[u] = FN_BGET(co + 2 * C + u * FN_VL, n);
        vb[u] = FN_BGET(co + 3 * C + u * FN_VL, n);
        ve[u] = FN_BGET(co + 4 * C + u * FN_VL, n);
    }
    for (r = 0; r < rows; r++, x += ld, dy += ld, dx += ld)
        for (u = 0; u < U; u++) {
            const FN_V t = FN(fma)(vb[u], FN_BGET(x + u * FN_VL, n) - vm[u], ve[u]);
            FN_BPUT(dx + u * FN_VL, n, FN(fma)(va[u], FN_BGET(dy + u * FN_VL, n) - vd[u], t));
        }
}

FN_TARGET FN_INLINE void FN(bn_run_dx)(const FN_T *x, const FN_T *dy, FN_T *dx, ptrdiff_t len, FN_T m, FN_T a,
                                       FN_T md, FN_T b, FN_T e)
{
    const FN_V vm = FN(bc)(m), va = FN(bc)(a), vd = FN(bc)(md), vb = FN(bc)(b), ve = FN(bc)(e);
    ptrdiff_t j = 0;
    for (; j < len; j += FN_VL) {
        const int w = len - j < FN_VL ? (int)(len - j) : FN_VL;
        const FN_V t = FN(fma)(vb, FN_BGET(x + j, w) - vm, ve);
        FN_BPUT(dx + j, w, FN(fma)(va, FN_BGET(dy + j, w) - vd, t));
    }
}

/* Training backward: dx, dgamma = sum(dy * xhat), dbeta = sum(dy), from the forward
 * pass's double mean and invstd. Returns 0, or -1 when the scratch memory could not
 * be allocated. */
FN_TARGET FN_UNUSED static int FN(bn_backward)(const fn_bn_geom *g0, const FN_T *x, const FN_T *dy,
                                               const FN_T *gamma, const double *mean_d, const double *invstd_d,
                                               FN_T *dx, FN_T *dgamma, FN_T *dbeta, int threads)
{
    const fn_bn_geom g = fn_bn_canon(g0);
    const fn_bn_plan pl = fn_bn_plan_of(&g);
    const ptrdiff_t C = g.C, KC = pl.K * C;
    FN_T *part, *co, *pg, *px;
    double *sums;
    ptrdiff_t c;
    if (C == 0 || pl.total == 0)
        return 0;
    part = (FN_T *)fn_alloc((size_t)(2 * KC + 5 * C) * sizeof(FN_T) + (size_t)(2 * C) * sizeof(double));
    if (part == NULL)
        return -1;
    pg = part;
    px = part + KC;
    co = part + 2 * KC;
    sums = (double *)(co + 5 * C);
    threads = fn_bn_team(g.P * C * g.S, threads);
    for (c = 0; c < C; c++)
        co[c] = (FN_T)mean_d[c];
    /* the chunks' sums */
    if (pl.rows) {
        const ptrdiff_t R = pl.len, CB = C < 256 ? C : 256, nb = (C + CB - 1) / CB;
        const ptrdiff_t G = FN_BN_TASK / (R * CB) > 1 ? FN_BN_TASK / (R * CB) : 1, ng = (pl.K + G - 1) / G;
#define FN_BN_BODY(cc, U, n) \
    FN(bn_rows_grad_sums)(xk + (cc), dk + (cc), C, rows, co + (cc), U, n, pg + k * C + (cc), px + k * C + (cc))
        FN_TASKS(ng * nb,
            const ptrdiff_t kg = task / nb, c0 = task % nb * CB, c1 = c0 + CB < C ? c0 + CB : C;
            ptrdiff_t k;
            for (k = kg * G; k < pl.K && k < (kg + 1) * G; k++) {
                const ptrdiff_t rows = fn_bn_chunk_count(&pl, k);
                const FN_T *xk = x + k * R * C, *dk = dy + k * R * C;
                FN_BN_CHANNELS(c0, c1, FN_BN_BODY);
            }
        );
#undef FN_BN_BODY
    } else {
        const ptrdiff_t G = FN_BN_TASK / FN_BN_CHUNK, ng = (pl.K + G - 1) / G;
        FN_TASKS(C * ng,
            const ptrdiff_t cc = task / ng, kg = task % ng;
            ptrdiff_t k;
            for (k = kg * G; k < pl.K && k < (kg + 1) * G; k++) {
                const ptrdiff_t lo = k * pl.len, hi = lo + fn_bn_chunk_count(&pl, k), at = cc * pl.cs + k;
                FN(bn_plane_grad_sums)(&g, x, dy, cc, lo, hi, co[cc], pg + at, px + at);
            }
        );
    }
    /* summed in double, chunks in order (a loop over channels inside: vectorised) */
    for (c = 0; c < C; c++)
        sums[c] = sums[C + c] = 0.0;
    {
        ptrdiff_t k;
        for (k = 0; k < pl.K; k++) {
            const FN_T *a = pg + k * pl.ks, *b = px + k * pl.ks;
            if (pl.cs == 1) {
                for (c = 0; c < C; c++) {
                    sums[c] += (double)a[c];
                    sums[C + c] += (double)b[c];
                }
            } else {
                for (c = 0; c < C; c++) {
                    sums[c] += (double)a[c * pl.cs];
                    sums[C + c] += (double)b[c * pl.cs];
                }
            }
        }
    }
    /* dgamma = sum(dy (x - mean)) invstd, with x - mean = (x - m_hi) - m_lo;
     * dx = a (dy - mean(dy)) + b (x - mean), a = gamma invstd, b = -a invstd dgamma / M */
    for (c = 0; c < C; c++) {
        const double M = (double)pl.total, inv = invstd_d[c], hi = (double)co[c], lo = mean_d[c] - hi;
        const double sg = sums[c], dot = sums[C + c] - lo * sg, dg = dot * inv;
        const double a = (double)gamma[c] * inv, b = -a * inv * (dg / M);
        dgamma[c] = (FN_T)dg;
        dbeta[c] = (FN_T)sg;
        co[C + c] = (FN_T)a;
        co[2 * C + c] = (FN_T)(sg / M);
        co[3 * C + c] = (FN_T)b;
        co[4 * C + c] = (FN_T)(-b * lo);
    }
    if (g.S == 1) {
        const ptrdiff_t R = FN_BN_TASK / C > 1 ? FN_BN_TASK / C : 1, nt = (g.P + R - 1) / R;
        const ptrdiff_t RB = fn_bn_block_rows(C);
#define FN_BN_BODY(cc, U, n) FN(bn_rows_dx)(xr + (cc), dr + (cc), or_ + (cc), C, rows, co + (cc), C, U, n)
        FN_TASKS(nt,
            const ptrdiff_t r1 = (task + 1) * R < g.P ? (task + 1) * R : g.P;
            ptrdiff_t r0;
            for (r0 = task * R; r0 < r1; r0 += RB) {
                const ptrdiff_t rows = r1 - r0 < RB ? r1 - r0 : RB;
                const FN_T *xr = x + r0 * C, *dr = dy + r0 * C;
                FN_T *or_ = dx + r0 * C;
                FN_BN_CHANNELS(0, C, FN_BN_BODY);
            }
        );
#undef FN_BN_BODY
    } else {
        const ptrdiff_t S = g.S, planes = g.P * C, G = FN_BN_TASK / S > 1 ? FN_BN_TASK / S : 1;
        const ptrdiff_t nt = (planes + G - 1) / G;
        FN_TASKS(nt,
            ptrdiff_t q;
            for (q = task * G; q < planes && q < (task + 1) * G; q++) {
                const ptrdiff_t cc = q % C;
                FN(bn_run_dx)(x + q * S, dy + q * S, dx + q * S, S, co[cc], co[C + cc], co[2 * C + cc],
                              co[3 * C + cc], co[4 * C + cc]);
            }
        );
    }
    fn_free(part);
    return 0;
}

#undef FN_BGET
#undef FN_BPUT
#undef FN_BN_U
#undef FN_BN_CHANNELS
#undef FN_BN_RUNS
#undef FN_BN_RUN_SUM
