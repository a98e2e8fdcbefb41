/* The cross-entropy losses, instantiated per CPU tier and element type by
 * fn_kernels.h (no include guard).
 *
 * Softmax cross-entropy, one row of C logits per example (docs/KERNELS.md):
 * - Forward, per row: the maximum m (one pass), s = sum e^(x - m) (a second pass,
 *   the row still in the level-1 cache), log s in double from libm; the loss
 *   (m - x_t) + log s for a class index t, sum_j t_j (m - x_j) + log s * sum_j t_j
 *   for probabilities t (terms with t_j = 0 left out: 0 log 0 = 0, and a masked
 *   -inf logit with no target mass adds nothing). It keeps m, log s and sum_j t_j
 *   per row (3 values, not a probability matrix: recomputing e^x in the backward
 *   pass costs less than writing and reading back N x C probabilities).
 * - Backward: dx_j = g (e^((x_j - m) - log s) sum t - t_j), with the one-hot's 1
 *   subtracted from the probability before the scaling (p_t - 1 is exact near 1).
 * - e^y is FN(exp) of fn_math.h with y clamped at FN_XENT_LO, where FN(exp) gives
 *   exactly 0 (float -88: 2^n with n = -127 has a zero exponent field; double -709,
 *   n = -1023): e^-inf = 0, so a row may mask classes with -inf.
 *
 * Sigmoid cross-entropy, every logit its own example: the loss
 * max(x, 0) - x t + log1p(e^-|x|) = |x| w + log1p(e^-|x|) with w = 1 - t for x >= 0
 * and t below (|x| w is 0 where w is: a logit of +-inf on its own target costs 0),
 * the gradient (sigmoid(x) - t) = ((1 - t) - t e) / (1 + e) for x >= 0 and
 * (e (1 - t) - t) / (1 + e) below, e = e^-|x| (no cancellation in sigmoid(x) - t
 * for a confident, correct logit).
 *
 * Threads: whole rows of about FN_XENT_TASK logits (softmax) or fixed chunks of
 * FN_XENT_CHUNK elements (sigmoid) are the tasks, and no call wakes more threads
 * than it has tasks; each value is computed by one thread in a fixed order, and the
 * sums over the batch are taken after the parallel part, in double, over per-row
 * losses (softmax) or per-chunk partial sums (sigmoid) in increasing order, so no
 * result depends on the thread count.
 */
#ifndef FASTNN_FN_LOSS_ONCE
#define FASTNN_FN_LOSS_ONCE
#include <math.h>
/* the elements of a sigmoid partial sum (a multiple of every tier's vector length;
 * the sum's grouping, so fixed whatever the thread count) */
#define FN_XENT_CHUNK 2048
/* the logits of one softmax task (whole rows; at least one): a call with fewer runs
 * on one thread, which costs less than waking a second for a few microseconds */
#define FN_XENT_TASK 8192
#endif

#if FN_DOUBLE
#define FN_XENT_LO (-709.0)
#else
#define FN_XENT_LO (-88.0f)
#endif

/* the n (<= VL) elements at p as a vector, and back */
#define FN_XGET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_XPUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)

/* the lane numbers 0, 1, ..., VL - 1 as values (masks from comparing them: the
 * generic tier's 16-byte code has no 64-bit integer comparison) */
FN_TARGET FN_INLINE FN_V FN(xent_lanes)(void)
{
    FN_V l;
    int i;
    for (i = 0; i < FN_VL; i++)
        l[i] = (FN_T)i;
    return l;
}

/* the larger of a and b (either when one is NaN: a NaN logit reaches the sum of
 * exponentials anyway) */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(xent_max)(FN_V a, FN_V b) { return _mm512_max_pd(a, b); }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_V FN(xent_max)(FN_V a, FN_V b) { return _mm512_max_ps(a, b); }
#elif FN_TIER_ID == FN_TIER_AVX2 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(xent_max)(FN_V a, FN_V b) { return _mm256_max_pd(a, b); }
#elif FN_TIER_ID == FN_TIER_AVX2
FN_TARGET FN_INLINE FN_V FN(xent_max)(FN_V a, FN_V b) { return _mm256_max_ps(a, b); }
#else
FN_TARGET FN_INLINE FN_V FN(xent_max)(FN_V a, FN_V b) { return FN(sel)(a > b, a, b); }
#endif

/* e^y for y <= 0 (a little above, from rounding, is fine): 0 below FN_XENT_LO, NaN kept */
FN_TARGET FN_INLINE FN_V FN(xent_exp)(FN_V y) { return FN(exp)(FN(atleast)(y, FN_XENT_LO)); }

/* the first n (< VL) elements at p, the other lanes `fill` */
FN_TARGET FN_INLINE FN_V FN(xent_tail)(const FN_T *p, int n, FN_V lanes, FN_T fill)
{
    return FN(sel)(lanes < (FN_T)n, FN(ldn)(p, n), FN(bc)(fill));
}

/* the maximum of a row (-inf for none) */
FN_TARGET FN_INLINE FN_T FN(xent_row_max)(const FN_T *x, ptrdiff_t C, FN_V lanes)
{
    const FN_T ninf = (FN_T)-__builtin_inf();
    FN_V m0 = FN(bc)(ninf), m1 = m0, m2 = m0, m3 = m0;
    FN_T m;
    ptrdiff_t j = 0;
    int i;
    for (; j + 4 * FN_VL <= C; j += 4 * FN_VL) {
        m0 = FN(xent_max)(m0, FN(ld)(x + j));
        m1 = FN(xent_max)(m1, FN(ld)(x + j + FN_VL));
        m2 = FN(xent_max)(m2, FN(ld)(x + j + 2 * FN_VL));
        m3 = FN(xent_max)(m3, FN(ld)(x + j + 3 * FN_VL));
    }
    for (; j + FN_VL <= C; j += FN_VL)
        m0 = FN(xent_max)(m0, FN(ld)(x + j));
    if (j < C)
        m1 = FN(xent_max)(m1, FN(xent_tail)(x + j, (int)(C - j), lanes, ninf));
    m0 = FN(xent_max)(FN(xent_max)(m0, m1), FN(xent_max)(m2, m3));
    m = m0[0];
    for (i = 1; i < FN_VL; i++)
        m = m0[i] > m ? m0[i] : m;
    return m;
}

/* sum_j e^(x_j - m) over a row */
FN_TARGET FN_INLINE FN_T FN(xent_row_sumexp)(const FN_T *x, ptrdiff_t C, FN_T m, FN_V lanes)
{
    const FN_V mv = FN(bc)(m);
    FN_V s0 = FN(bc)(0), s1 = s0, s2 = s0, s3 = s0;
    FN_T s = 0;
    ptrdiff_t j = 0;
    int i;
    for (; j + 4 * FN_VL <= C; j += 4 * FN_VL) {
        s0 += FN(xent_exp)(FN(ld)(x + j) - mv);
        s1 += FN(xent_exp)(FN(ld)(x + j + FN_VL) - mv);
        s2 += FN(xent_exp)(FN(ld)(x + j + 2 * FN_VL) - mv);
        s3 += FN(xent_exp)(FN(ld)(x + j + 3 * FN_VL) - mv);
    }
    for (; j + FN_VL <= C; j += FN_VL)
        s0 += FN(xent_exp)(FN(ld)(x + j) - mv);
    if (j < C)
        s1 += FN(xent_exp)(FN(xent_tail)(x + j, (int)(C - j), lanes, (FN_T)-__builtin_inf()) - mv);
    s0 = (s0 + s1) + (s2 + s3);
    for (i = 0; i < FN_VL; i++)
        s += s0[i];
    return s;
}

/* sum_j t_j (m - x_j) (terms with t_j = 0 left out) and sum_j t_j over a row */
FN_TARGET FN_INLINE void FN(xent_row_soft)(const FN_T *x, const FN_T *t, ptrdiff_t C, FN_T m,
                                           double *cross, double *mass)
{
    const FN_V mv = FN(bc)(m), zero = FN(bc)(0);
    FN_V a0 = zero, a1 = zero, t0 = zero, t1 = zero;
    ptrdiff_t j = 0;
    int i;
    for (; j + 2 * FN_VL <= C; j += 2 * FN_VL) {
        const FN_V u0 = FN(ld)(t + j), u1 = FN(ld)(t + j + FN_VL);
        a0 += FN(sel)(u0 != zero, u0 * (mv - FN(ld)(x + j)), zero);
        a1 += FN(sel)(u1 != zero, u1 * (mv - FN(ld)(x + j + FN_VL)), zero);
        t0 += u0;
        t1 += u1;
    }
    for (; j + FN_VL <= C; j += FN_VL) {
        const FN_V u = FN(ld)(t + j);
        a0 += FN(sel)(u != zero, u * (mv - FN(ld)(x + j)), zero);
        t0 += u;
    }
    a0 += a1;
    t0 += t1;
    *cross = 0.0;
    *mass = 0.0;
    for (i = 0; i < FN_VL; i++) {
        *cross += (double)a0[i];
        *mass += (double)t0[i];
    }
    /* the last C % VL one at a time (a masked load's compare and select here made
     * GCC 12 fail on the generic tier's double code) */
    for (; j < C; j++) {
        if (t[j] != 0)
            *cross += (double)t[j] * ((double)m - (double)x[j]);
        *mass += (double)t[j];
    }
}

/* The forward's rows r .. r + n (n <= FN_VL) of C <= FN_XENT_COLS classes with class
 * indices, a row per lane: register transposes of VL columns at a time put class j
 * of the n rows in one vector, so the maximum, the exponentials and the logarithm
 * run across rows. A row of a few classes (a binary classifier's two) otherwise
 * spent a vector exp on two lanes, two horizontal reductions and a scalar log: 2.5x
 * PyTorch's time at C = 2, 1.7x at 37 (the transposes win up to 128 classes and
 * more; a bounded buffer on the stack). Each lane's operations are the row's alone,
 * so the bits do not depend on where a row falls in a block. Same results as the
 * row-wise loop up to the rounding of log s, taken here in the logits' type. */
#define FN_XENT_COLS 128  /* a multiple of every tier's FN_VL */
FN_TARGET FN_INLINE void FN(xent_small_rows)(ptrdiff_t r, int n, ptrdiff_t C, const FN_T *x, const int64_t *index,
                                             FN_T *loss, FN_T *stats)
{
    FN_T cols[FN_XENT_COLS * FN_VL], mt[FN_VL], lt[FN_VL];
    FN_V m, s;
    ptrdiff_t j;
    int i;
    if (C < 1)
        return;  /* (none: the callers have C >= 1) */
    for (j = 0; j < C; j += FN_VL)
        FN(transpose)(x + r * C + j, C, n, (int)(C - j < FN_VL ? C - j : FN_VL), cols + j * FN_VL, FN_VL);
    m = FN(ld)(cols);
    for (j = 1; j < C; j++)
        m = FN(xent_max)(m, FN(ld)(cols + j * FN_VL));
    s = FN(xent_exp)(FN(ld)(cols) - m);
    for (j = 1; j < C; j++)
        s += FN(xent_exp)(FN(ld)(cols + j * FN_VL) - m);
    FN(st)(mt, m);
    FN(st)(lt, FN(log)(s));
    for (i = 0; i < n; i++) {
        const ptrdiff_t row = r + i;
        loss[row] = (FN_T)(((double)mt[i] - (double)x[row * C + index[row]]) + (double)lt[i]);
        stats[3 * row] = mt[i];
        stats[3 * row + 1] = lt[i];
        stats[3 * row + 2] = 1;
    }
}

/* Softmax cross-entropy forward over N rows of C >= 1 logits x, with class indices
 * `index` (N, in [0, C)) or, when index is NULL, probabilities `prob` (N, C). Writes
 * the per-row losses `loss` (N) and stats (N, 3): m, log s and sum_j t_j of each
 * row; returns the sum of the losses (double, in row order). */
FN_TARGET FN_UNUSED static double FN(softmax_xent_forward)(ptrdiff_t N, ptrdiff_t C, const FN_T *x,
                                                           const int64_t *index, const FN_T *prob, FN_T *loss,
                                                           FN_T *stats, int team)
{
    const ptrdiff_t per = C >= FN_XENT_TASK ? 1 : FN_XENT_TASK / C, tasks = (N + per - 1) / per;
    const int threads = tasks < team ? (int)tasks : team;
    double total = 0.0;
    ptrdiff_t i;
    FN_TASKS(tasks,
        const FN_V lanes = FN(xent_lanes)();
        const ptrdiff_t end = (task + 1) * per < N ? (task + 1) * per : N;
        ptrdiff_t r = task * per;
        if (index != NULL && C <= FN_XENT_COLS) {
            for (; r < end; r += FN_VL)
                FN(xent_small_rows)(r, (int)(end - r < FN_VL ? end - r : FN_VL), C, x, index, loss, stats);
        }
        for (; r < end; r++) {
            const FN_T *xr = x + r * C;
            const FN_T m = FN(xent_row_max)(xr, C, lanes);
            const double ls = log((double)FN(xent_row_sumexp)(xr, C, m, lanes));
            double cross, mass = 1.0;
            if (index != NULL)
                cross = (double)m - (double)xr[index[r]];
            else
                FN(xent_row_soft)(xr, prob + r * C, C, m, &cross, &mass);
            loss[r] = (FN_T)(cross + ls * mass);
            stats[3 * r] = m;
            stats[3 * r + 1] = (FN_T)ls;
            stats[3 * r + 2] = (FN_T)mass;
        }
    );
    for (i = 0; i < N; i++)
        total += (double)loss[i];
    return total;
}

/* dx (N, C) of the softmax cross-entropy from the forward's stats: the upstream
 * gradient of row r is g[r], or g0 for every row when g is NULL. */
FN_TARGET FN_UNUSED static void FN(softmax_xent_backward)(ptrdiff_t N, ptrdiff_t C, const FN_T *x,
                                                          const int64_t *index, const FN_T *prob,
                                                          const FN_T *stats, const FN_T *g, FN_T g0, FN_T *dx,
                                                          int team)
{
    const ptrdiff_t per = C >= FN_XENT_TASK ? 1 : FN_XENT_TASK / C, tasks = (N + per - 1) / per;
    const int threads = tasks < team ? (int)tasks : team;
    FN_TASKS(tasks,
        const FN_V lanes = FN(xent_lanes)();
        const ptrdiff_t end = (task + 1) * per < N ? (task + 1) * per : N;
        ptrdiff_t r, j;
        for (r = task * per; r < end; r++) {
            const FN_T *xr = x + r * C;
            FN_T *dr = dx + r * C;
            const FN_V m = FN(bc)(stats[3 * r]), ls = FN(bc)(stats[3 * r + 1]);
            const FN_V gv = FN(bc)(g != NULL ? g[r] : g0), one = FN(bc)(1), zero = FN(bc)(0);
            if (index != NULL) {
                const ptrdiff_t t = (ptrdiff_t)index[r];
                for (j = 0; j + 2 * FN_VL <= C; j += 2 * FN_VL) {
                    FN_V p0 = FN(xent_exp)((FN(ld)(xr + j) - m) - ls);
                    FN_V p1 = FN(xent_exp)((FN(ld)(xr + j + FN_VL) - m) - ls);
                    if ((size_t)(t - j) < (size_t)(2 * FN_VL)) {
                        p0 -= FN(sel)(lanes == (FN_T)(t - j), one, zero);
                        p1 -= FN(sel)(lanes == (FN_T)(t - j - FN_VL), one, zero);
                    }
                    FN(st)(dr + j, gv * p0);
                    FN(st)(dr + j + FN_VL, gv * p1);
                }
                for (; j < C; j += FN_VL) {
                    const int n = C - j < FN_VL ? (int)(C - j) : FN_VL;
                    FN_V p = FN(xent_exp)((FN(ldn)(xr + j, n) - m) - ls);
                    p -= FN(sel)(lanes == (FN_T)(t - j), one, zero);
                    FN(stn)(dr + j, n, gv * p);
                }
            } else {
                const FN_T *tr = prob + r * C;
                const FN_V mass = FN(bc)(stats[3 * r + 2]);
                for (j = 0; j < C; j += FN_VL) {
                    const int n = C - j < FN_VL ? (int)(C - j) : FN_VL;
                    const FN_V p = FN(xent_exp)((FN_XGET(xr + j, n) - m) - ls);
                    FN_XPUT(dr + j, n, gv * FN(fma)(p, mass, -FN_XGET(tr + j, n)));
                }
            }
        }
    );
}

/* |x| (NaN kept) */
FN_TARGET FN_INLINE FN_V FN(xent_abs)(FN_V x)
{
#if FN_DOUBLE
    return (FN_V)((FN_VB)x & 0x7FFFFFFFFFFFFFFFull);
#else
    return (FN_V)((FN_VB)x & 0x7FFFFFFFu);
#endif
}

/* the sigmoid cross-entropy of logits x and targets t, elementwise */
FN_TARGET FN_INLINE FN_V FN(sigmoid_xent_loss)(FN_V x, FN_V t)
{
    const FN_V zero = FN(bc)(0), a = FN(xent_abs)(x);
    const FN_V w = FN(sel)(x >= zero, 1 - t, t);
    return FN(sel)(w == zero, zero, a * w) + FN(log1p)(FN(xent_exp)(-a));
}

/* Sigmoid cross-entropy forward over n logits x and targets t: the losses into
 * `loss` unless it is NULL, the sum of each chunk of FN_XENT_CHUNK elements into
 * partial[ceil(n / FN_XENT_CHUNK)]; returns their sum (double, in chunk order). */
FN_TARGET FN_UNUSED static double FN(sigmoid_xent_forward)(ptrdiff_t n, const FN_T *x, const FN_T *t, FN_T *loss,
                                                           double *partial, int team)
{
    const ptrdiff_t tasks = (n + FN_XENT_CHUNK - 1) / FN_XENT_CHUNK;
    const int threads = tasks < team ? (int)tasks : team;
    double total = 0.0;
    ptrdiff_t i;
    FN_TASKS(tasks,
        const FN_V lanes = FN(xent_lanes)();
        const ptrdiff_t end = (task + 1) * FN_XENT_CHUNK < n ? (task + 1) * FN_XENT_CHUNK : n;
        const FN_V zero = FN(bc)(0);
        FN_V s0 = zero, s1 = zero;
        double sum = 0.0;
        ptrdiff_t j = task * FN_XENT_CHUNK;
        int l;
        for (; j + 2 * FN_VL <= end; j += 2 * FN_VL) {
            const FN_V l0 = FN(sigmoid_xent_loss)(FN(ld)(x + j), FN(ld)(t + j));
            const FN_V l1 = FN(sigmoid_xent_loss)(FN(ld)(x + j + FN_VL), FN(ld)(t + j + FN_VL));
            if (loss != NULL) {
                FN(st)(loss + j, l0);
                FN(st)(loss + j + FN_VL, l1);
            }
            s0 += l0;
            s1 += l1;
        }
        for (; j < end; j += FN_VL) {
            const int w = end - j < FN_VL ? (int)(end - j) : FN_VL;
            const FN_V v = FN(sigmoid_xent_loss)(FN(ldn)(x + j, w), FN(ldn)(t + j, w));
            if (loss != NULL)
                FN(stn)(loss + j, w, v);
            s0 += FN(sel)(lanes < (FN_T)w, v, zero);
        }
        s0 += s1;
        for (l = 0; l < FN_VL; l++)
            sum += (double)s0[l];
        partial[task] = sum;
    );
    for (i = 0; i < tasks; i++)
        total += partial[i];
    return total;
}

/* dx = g (sigmoid(x) - t) over n logits: the upstream gradient of element i is
 * g[i], or g0 for every element when g is NULL */
FN_TARGET FN_UNUSED static void FN(sigmoid_xent_backward)(ptrdiff_t n, const FN_T *x, const FN_T *t, const FN_T *g,
                                                          FN_T g0, FN_T *dx, int team)
{
    const ptrdiff_t tasks = (n + FN_XENT_CHUNK - 1) / FN_XENT_CHUNK;
    const int threads = tasks < team ? (int)tasks : team;
    FN_TASKS(tasks,
        const ptrdiff_t end = (task + 1) * FN_XENT_CHUNK < n ? (task + 1) * FN_XENT_CHUNK : n;
        const FN_V zero = FN(bc)(0), one = FN(bc)(1);
        ptrdiff_t j;
        for (j = task * FN_XENT_CHUNK; j < end; j += FN_VL) {
            const int w = end - j < FN_VL ? (int)(end - j) : FN_VL;
            const FN_V xv = FN_XGET(x + j, w), tv = FN_XGET(t + j, w);
            const FN_V gv = g == NULL ? FN(bc)(g0) : FN_XGET(g + j, w);
            const FN_V e = FN(xent_exp)(-FN(xent_abs)(xv)), u = one - tv;
            const FN_V num = FN(sel)(xv >= zero, FN(fma)(-tv, e, u), FN(fma)(e, u, -tv));
            FN_XPUT(dx + j, w, gv * FN(div)(num, one + e));
        }
    );
}

/* y = log(x) (kind 0) or log1p(x) (kind 1) elementwise: fn_math.h's functions, for the tests */
FN_TARGET FN_UNUSED static void FN(loss_math)(int kind, ptrdiff_t n, const FN_T *x, FN_T *y)
{
    ptrdiff_t j;
    for (j = 0; j < n; j += FN_VL) {
        const int w = n - j < FN_VL ? (int)(n - j) : FN_VL;
        const FN_V v = FN(ldn)(x + j, w);
        FN(stn)(y + j, w, kind == 0 ? FN(log)(v) : FN(log1p)(v));
    }
}

#undef FN_XENT_LO
#undef FN_XGET
#undef FN_XPUT
