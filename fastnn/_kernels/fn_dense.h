/* Dense layers: the linear layer with its bias and activation fused into the
 * product's pass, its backward pass, elementwise activations and their
 * derivatives, and softmax. Instantiated per CPU tier and element type by
 * fn_kernels.h (no include guard; the constants below have one).
 *
 * - Products run on fastnn's GEMM core (fn_gemm.h: its packed panels and tiles,
 *   gemm_panel, ukr_row) through FN(dense_gemm): the tasks are panels of the right
 *   operand, each packed by its task into its thread's slot (so it stays in the
 *   level-2 cache), the rows of the left operand run on it, and the activation is
 *   applied to the finished strip of columns while it is still in cache. The
 *   forward's bias is the tiles' initial value.
 * - What the backward pass reads: for relu and leaky_relu a byte per value, -1
 *   where z > 0 and 0 elsewhere (the derivative is 1 there, else the slope, any
 *   slope: a quarter of z's memory, written by the activation's pass); for sigmoid
 *   and tanh a copy of y written by the same pass (s (1 - s), 1 - t^2); nothing for
 *   the identity. The product goes straight into y, activated in place.
 * - linear backward: dz = dy * act'(.) elementwise, db = FN(column_sums_mt) of dz
 *   (chunks of FN_DENSE_DB_ROWS rows summed apart, then added in chunk order: the
 *   same bits on any thread count; the bias gradient of every layer). Then
 *   dx = dz @ W and dW = dz^T @ x on FN(dense_gemm), W and x copied panel by panel
 *   as they lie (dz transposed once; fn_gemm.h's gemm_tn2_mt when dz^T would not
 *   stay in the level-2 cache, a choice by the sizes alone).
 * - Every output value is one tile's sum in a fixed order (a one-row product's the
 *   matrix-vector kernel's, on every path), computed by one thread, so the bits do
 *   not depend on the thread count or on how rows and panels are split.
 * - The derivative is a product, dz = dy * act'(.), so a NaN or an infinite dy
 *   gives NaN where act' is 0 (0 * inf), as the formula says. relu(NaN) and
 *   leaky_relu(NaN) are NaN (their derivative there is the slope's: NaN > 0 fails).
 * - softmax over rows of n: max (NaN wins), e = exp(z - max) with z - max below
 *   the exponent's range flushed to 0 (exp(-inf) = 0), the sum of e in vector lanes
 *   added lane by lane in a fixed order, then e times 1 / sum (within an ulp of
 *   e / sum). A row holding NaN is NaN; a row holding +inf gives NaN where
 *   inf - inf appears, like the formula.
 * The masks are stored and loaded with fn_pool.h's FN(pool_st8) / FN(pool_ld8) (each
 * tier's widening loads and narrowing stores of VL bytes).
 */
#ifndef FASTNN_FN_DENSE_CONST
#define FASTNN_FN_DENSE_CONST
/* activation kinds beyond fn_kernels.h's FN_ACT_SIGMOID, FN_ACT_TANH, FN_ACT_RELU */
#define FN_ACT_LEAKY_RELU 3
#define FN_ACT_IDENTITY 4
/* whether a kind's backward pass reads the byte mask (else the kept output) */
#define FN_DENSE_MASKED(kind) ((kind) == FN_ACT_RELU || (kind) == FN_ACT_LEAKY_RELU)
/* rows per chunk of db's partial sums (fixed: the summation order of db) */
#define FN_DENSE_DB_ROWS 32
/* calls with fewer multiply-adds than this run on one thread (waking threads costs
 * more than they save); a choice by sizes only */
#define FN_DENSE_SERIAL_MACS 1048576.0
/* elementwise passes: elements per task, and the fewest worth threads */
#define FN_DENSE_ELEMS_TASK 16384
#define FN_DENSE_ELEMS_MT 65536
/* the most bytes of the left operand of a product kept in the level-2 cache across
 * the panels of the right one (2 MiB per core on the Xeon this was tuned on: 2 MiB
 * of x ran as fast as 1 MiB; a block of A read from the last-level cache costs
 * little, a panel of B a lot) */
#define FN_DENSE_X_CACHED (2048 * 1024)
/* rows of a product's strip activated at a time (a multiple of the tile's 6 rows) */
#define FN_DENSE_ACT_ROWS 48
/* rows fetched ahead when panels are copied out of a matrix's rows */
#define FN_DENSE_AHEAD 8
#endif

/* the n (<= VL) elements at p as a vector, and back */
#define FN_DGET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_DPUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)

/* the n (<= VL) mask bytes at p as lanes of all ones or zeros, and back */
FN_TARGET FN_INLINE FN_VI FN(dense_ldmask)(const int8_t *p, int n)
{
    FN_VI k;
    int l;
    if (n == FN_VL)
        return FN(pool_ld8)(p);
    k = (FN_VI){0};
    for (l = 0; l < n; l++)
        k[l] = p[l];
    return k;
}

FN_TARGET FN_INLINE void FN(dense_stmask)(int8_t *p, int n, FN_VI k)
{
    int l;
    if (n == FN_VL) {
        FN(pool_st8)(p, k);
        return;
    }
    for (l = 0; l < n; l++)
        p[l] = (int8_t)k[l];
}

/* y = EXPR(v) over n elements of z (v the vector read); keep, when not NULL, gets y too */
#define FN_DENSE_MAP(EXPR) \
    do { \
        ptrdiff_t i_; \
        for (i_ = 0; i_ < n; i_ += FN_VL) { \
            const int w_ = (int)(n - i_ < FN_VL ? n - i_ : FN_VL); \
            const FN_V v = FN_DGET(z + i_, w_); \
            const FN_V r_ = (EXPR); \
            FN_DPUT(y + i_, w_, r_); \
            if (keep != NULL) \
                FN_DPUT(keep + i_, w_, r_); \
        } \
    } while (0)

/* y = act(z) then the mask of z > 0 (relu, leaky_relu), over n elements; mask NULL: none */
#define FN_DENSE_MAP_MASKED(EXPR) \
    do { \
        ptrdiff_t i_; \
        for (i_ = 0; i_ < n; i_ += FN_VL) { \
            const int w_ = (int)(n - i_ < FN_VL ? n - i_ : FN_VL); \
            const FN_V v = FN_DGET(z + i_, w_); \
            const FN_VI pos = v > zero; \
            FN_DPUT(y + i_, w_, (EXPR)); \
            if (mask != NULL) \
                FN(dense_stmask)(mask + i_, w_, pos); \
        } \
    } while (0)

/* y = act(z) for n contiguous elements (y may be z: in place), kind FN_ACT_*;
 * keep (sigmoid, tanh; NULL: none) receives y as well, mask (relu, leaky_relu;
 * NULL: none) the bytes of z > 0. */
FN_TARGET FN_UNUSED static void FN(dense_act)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                              FN_T *keep, int8_t *mask)
{
    const FN_V zero = FN(bc)(0), slope = FN(bc)(alpha);
    switch (kind) {
    case FN_ACT_SIGMOID:
        FN_DENSE_MAP(FN(sigmoid)(v));
        break;
    case FN_ACT_TANH:
        FN_DENSE_MAP(FN(tanh)(v));
        break;
    case FN_ACT_RELU:
        FN_DENSE_MAP_MASKED(FN(sel)(v <= zero, zero, v));
        break;
    case FN_ACT_LEAKY_RELU:
        FN_DENSE_MAP_MASKED(FN(sel)(pos, v, slope * v));
        break;
    default:
        keep = NULL;
        FN_DENSE_MAP(v);
        break;
    }
}

/* dz = d * act'(.) for n contiguous elements: from the mask for relu (1 or 0) and
 * leaky_relu (1 or alpha), from keep = y for sigmoid (y (1 - y)) and tanh
 * (1 - y^2); the identity copies d. */
FN_TARGET FN_UNUSED static void FN(dense_grad)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d, const FN_T *keep,
                                               const int8_t *mask, FN_T *dz)
{
    const FN_V one = FN(bc)(1), slope = FN(bc)(kind == FN_ACT_RELU ? 0 : alpha);
    ptrdiff_t i;
    for (i = 0; i < n; i += FN_VL) {
        const int w = (int)(n - i < FN_VL ? n - i : FN_VL);
        const FN_V g = FN_DGET(d + i, w);
        FN_V r;
        if (kind == FN_ACT_SIGMOID) {
            const FN_V k = FN_DGET(keep + i, w);
            r = g * (k * (one - k));
        } else if (kind == FN_ACT_TANH) {
            const FN_V k = FN_DGET(keep + i, w);
            r = g * (one - k * k);
        } else if (FN_DENSE_MASKED(kind)) {
            r = g * FN(sel)(FN(dense_ldmask)(mask + i, w), one, slope);
        } else {
            r = g;
        }
        FN_DPUT(dz + i, w, r);
    }
}

/* FN(dense_act) over n elements in tasks of FN_DENSE_ELEMS_TASK on `threads` threads */
FN_TARGET FN_UNUSED static void FN(dense_act_mt)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                                 FN_T *keep, int8_t *mask, int threads)
{
    const ptrdiff_t tasks = (n + FN_DENSE_ELEMS_TASK - 1) / FN_DENSE_ELEMS_TASK;
    if (n < FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        const ptrdiff_t j0 = task * FN_DENSE_ELEMS_TASK;
        FN(dense_act)(kind, alpha, n - j0 < FN_DENSE_ELEMS_TASK ? n - j0 : FN_DENSE_ELEMS_TASK, z + j0, y + j0,
                      keep != NULL ? keep + j0 : NULL, mask != NULL ? mask + j0 : NULL);
    );
}

/* FN(dense_grad) over n elements in tasks on `threads` threads */
FN_TARGET FN_UNUSED static void FN(dense_grad_mt)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d,
                                                  const FN_T *keep, const int8_t *mask, FN_T *dz, int threads)
{
    const ptrdiff_t tasks = (n + FN_DENSE_ELEMS_TASK - 1) / FN_DENSE_ELEMS_TASK;
    if (n < FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        const ptrdiff_t j0 = task * FN_DENSE_ELEMS_TASK;
        FN(dense_grad)(kind, alpha, n - j0 < FN_DENSE_ELEMS_TASK ? n - j0 : FN_DENSE_ELEMS_TASK, d + j0,
                       keep != NULL ? keep + j0 : NULL, mask != NULL ? mask + j0 : NULL, dz + j0);
    );
}

/* FN(pack_t) of B = S^T (S (N, K), rows ls apart) with the loops the other way
 * round: each group of VL rows of S is transposed along the whole of K before the
 * next, so the reads are VL sequential streams the prefetchers follow. Across the
 * group first (pack_t's order) a step reads a panel's rows at one column: with
 * rows 4 KiB apart (a layer 1024 wide) they all fall in one set of the level-1
 * cache, and packing a 1024 x 1024 float W took a sizeable part of the product's
 * time. Same layout, same values. */
FN_TARGET FN_UNUSED static void FN(dense_pack_t)(ptrdiff_t K, ptrdiff_t N, const FN_T *S, ptrdiff_t ls, FN_T *P)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR;
    ptrdiff_t p, k0, v;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t w = FN(panel_width)(N, p);
        for (v = 0; v < w; v += FN_VL) {
            const ptrdiff_t n0 = p * FN_NR + v;
            const int rows = (int)(N - n0 < 0 ? 0 : (N - n0 < FN_VL ? N - n0 : FN_VL));
            for (k0 = 0; k0 < K; k0 += FN_VL)
                FN(transpose)(S + (rows > 0 ? n0 : 0) * ls + k0, ls, rows, (int)(K - k0 < FN_VL ? K - k0 : FN_VL),
                              P + p * K * FN_NR + k0 * w + v, w);
        }
    }
}

/* Panels per task of a product whose right operand is copied as it lies (dx, dW): at
 * least 256 bytes of each row of it, four cache lines, so that the rows the copy
 * fetches ahead arrive whole (16-wide float panels of the AVX2 tier, copied one by
 * one, waited on memory at every row: 85 % of the packing's samples). */
#define FN_DENSE_GROUP (FN_NR * (ptrdiff_t)sizeof(FN_T) >= 256 ? 1 : 256 / (FN_NR * (ptrdiff_t)sizeof(FN_T)))

/* Panels p0 .. p1 of B (K, N) = S, rows of S ls apart, packed (fn_gemm.h's layout of
 * each panel) one after the other into out, each K FN_NR elements apart. Row by row,
 * the rows FN_DENSE_AHEAD on fetched ahead: each row of a wide S is a new page,
 * which no prefetcher enters on its own. */
FN_TARGET FN_UNUSED static void FN(dense_copy_panels)(ptrdiff_t K, ptrdiff_t N, ptrdiff_t p0, ptrdiff_t p1,
                                                      const FN_T *S, ptrdiff_t ls, FN_T *out)
{
    const ptrdiff_t n0 = p0 * FN_NR, span = (N < p1 * FN_NR ? N : p1 * FN_NR) - n0;
    ptrdiff_t k, p, j;
    for (k = 0; k < K; k++) {
        const FN_T *row = S + k * ls;
        if (k + FN_DENSE_AHEAD < K)
            for (j = 0; j < span; j += 64 / (ptrdiff_t)sizeof(FN_T))
                __builtin_prefetch(row + FN_DENSE_AHEAD * ls + n0 + j);
        for (p = p0; p < p1; p++) {
            const ptrdiff_t c0 = p * FN_NR, w = FN(panel_width)(N, p);
            const int width = (int)(N - c0 < FN_NR ? N - c0 : FN_NR);
            FN_T *dst = out + (p - p0) * K * FN_NR + k * w;
            for (j = 0; j < w; j += FN_VL) {
                const int n = (int)(width - j < FN_VL ? width - j : FN_VL);
                FN(st)(dst + j, n >= FN_VL ? FN(ld)(row + c0 + j) : (n > 0 ? FN(ldn)(row + c0 + j, n) : FN(bc)(0)));
            }
        }
    }
}

/* C[:, 0 : width] (rows ldc apart) = A (M, K) (rows lda apart) @ the packed panel bp
 * (row stride ldbp) (+ bias, a row of width, when not NULL): one thread.
 * row_kernel (set when the whole product has one row) takes the matrix-vector
 * kernel, as FN(gemm_src_mt) does for a one-row product, so that a one-row product
 * sums alike on every path. */
FN_TARGET FN_INLINE void FN(dense_panel)(ptrdiff_t M, ptrdiff_t K, const FN_T *A, ptrdiff_t lda, const FN_T *bp,
                                         ptrdiff_t ldbp, int width, const FN_T *bias, FN_T *C, ptrdiff_t ldc,
                                         int row_kernel)
{
    if (row_kernel && M == 1 && K > 0 && ldbp == FN_NR)
        FN(ukr_row)(K, A, bp, bias, C, width, 0);
    else if (row_kernel && M == 1 && K > 0)
        FN(ukr_row_h)(K, A, bp, bias, C, width, 0);
    else
        FN(gemm_panel)(M, K, A, lda, bp, ldbp, width, bias, C, ldc, 0);
}

/* The first n (0 .. FN_VL) elements at p as a vector, zeros past them. */
FN_TARGET FN_INLINE FN_V FN(dense_ldpart)(const FN_T *p, int n)
{
    return n >= FN_VL ? FN(ld)(p) : (n > 0 ? FN(ldn)(p, n) : FN(bc)(0));
}

/* One row of C (width <= FN_NR columns) = a (K) @ S[:, 0 : width] (+ bias), S's rows
 * ls apart read where they lie: FN(ukr_row)'s sums (even and odd k in two chains,
 * added at the end), lane for lane, without packing the panel first. A one-row
 * product whose right operand is a wide matrix as it lies (dW = dz^T x of a layer
 * with one output) copied all of x panel by panel to read it once. The rows are
 * fetched FN_DENSE_AHEAD ahead: each is a new page to the prefetchers. */
FN_TARGET FN_UNUSED static void FN(dense_row_inplace)(ptrdiff_t K, const FN_T *a, const FN_T *S, ptrdiff_t ls,
                                                      const FN_T *bias, FN_T *c, int width)
{
    FN_V cc[FN_NV], dd[FN_NV];
    ptrdiff_t k = 0;
    int v;
    for (v = 0; v < FN_NV; v++) {
        cc[v] = bias != NULL ? FN(dense_ldpart)(bias + v * FN_VL, width - v * FN_VL) : FN(bc)(0);
        dd[v] = FN(bc)(0);
    }
#define FN_ROW_STEP(LOAD) \
    for (; k + 1 < K; k += 2) { \
        const FN_V a0 = FN(bc)(a[k]), a1 = FN(bc)(a[k + 1]); \
        const FN_T *r0 = S + k * ls, *r1 = r0 + ls; \
        if (k + FN_DENSE_AHEAD + 1 < K) { \
            int j_; \
            for (j_ = 0; j_ < width; j_ += 64 / (int)sizeof(FN_T)) { \
                __builtin_prefetch(r0 + FN_DENSE_AHEAD * ls + j_); \
                __builtin_prefetch(r1 + FN_DENSE_AHEAD * ls + j_); \
            } \
        } \
        _Pragma("GCC unroll 4") \
        for (v = 0; v < FN_NV; v++) { \
            cc[v] = FN(fma)(a0, LOAD(r0, v), cc[v]); \
            dd[v] = FN(fma)(a1, LOAD(r1, v), dd[v]); \
        } \
    } \
    if (k < K) { \
        const FN_V a0 = FN(bc)(a[k]); \
        _Pragma("GCC unroll 4") \
        for (v = 0; v < FN_NV; v++) \
            cc[v] = FN(fma)(a0, LOAD(S + k * ls, v), cc[v]); \
    }
#define FN_ROW_FULL(r, v) FN(ld)((r) + (v) * FN_VL)
#define FN_ROW_PART(r, v) FN(dense_ldpart)((r) + (v) * FN_VL, width - (v) * FN_VL)
    if (width == FN_NR) {
        FN_ROW_STEP(FN_ROW_FULL)
    } else {
        FN_ROW_STEP(FN_ROW_PART)
    }
#undef FN_ROW_FULL
#undef FN_ROW_PART
#undef FN_ROW_STEP
    for (v = 0; v < FN_NV; v++) {
        const int w = width - v * FN_VL;
        if (w >= FN_VL)
            FN(st)(c + v * FN_VL, cc[v] + dd[v]);
        else if (w > 0)
            FN(stn)(c + v * FN_VL, w, cc[v] + dd[v]);
    }
}

/* the calling thread's number in a parallel region (0 outside one) */
FN_TARGET FN_INLINE int FN(dense_thread)(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The activation of a strip of y in place: rows r0 .. r1, columns n0 .. n0 + width,
 * rows ldc apart (keep and mask as in FN(dense_act), laid out as y). */
FN_TARGET FN_INLINE void FN(dense_act_strip)(int kind, FN_T alpha, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t n0,
                                             int width, ptrdiff_t ldc, FN_T *y, FN_T *keep, int8_t *mask)
{
    ptrdiff_t r;
    if (kind == FN_ACT_IDENTITY)
        return;
    for (r = r0; r < r1; r++) {
        const ptrdiff_t at = r * ldc + n0;
        FN(dense_act)(kind, alpha, width, y + at, y + at, keep != NULL ? keep + at : NULL,
                      mask != NULL ? mask + at : NULL);
    }
}

/* Elements of the per-thread panel slots of FN(dense_gemm) for a reduction of K on
 * `threads` threads. */
FN_UNUSED static inline size_t FN(dense_slots_size)(ptrdiff_t K, int threads)
{
    return (size_t)(threads > 1 ? threads : 1) * (size_t)FN_DENSE_GROUP * (size_t)(K > 0 ? K : 0) * FN_NR + 1;
}

/* y (M, N) (rows N apart) = act(A (M, K) (rows lda apart) @ B (+ bias, N values, or
 * NULL)), kind FN_ACT_* (keep and mask as in FN(dense_act), laid out as y): B (K, N)
 * is S^T with S (N, K) when trans, else S itself, rows of S ls apart. slots:
 * FN(dense_slots_size)(K, threads) elements.
 *
 * The tasks are panels of B's columns (FN_DENSE_GROUP of them together when B is S
 * itself; a block of rows split further when there are fewer than two tasks per
 * thread): each packs its panels into its thread's slot of `slots` (reused task
 * after task, so they stay in the level-2 cache), runs its rows of A on them, and
 * applies the activation to each strip while it is in cache. B is read once per
 * block of rows (blocks of A of at most FN_DENSE_X_CACHED, which stay in the level-2
 * cache across the panels), and neither its packed form nor the outputs go through
 * memory between the steps: a 1024 x 1024 float W^T packed whole first (4 MiB
 * written, then read back per block of 48 rows) cost a tenth of a 256-row product,
 * and packed whole for dx (written, then read back once) 5 % of the N3 backward. */
FN_TARGET FN_UNUSED static void FN(dense_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A, ptrdiff_t lda,
                                               int trans, const FN_T *S, ptrdiff_t ls, const FN_T *bias, int kind,
                                               FN_T alpha, FN_T *y, FN_T *keep, int8_t *mask, FN_T *slots,
                                               int threads)
{
    const ptrdiff_t tiles = (M + FN_MR - 1) / FN_MR, panels = (N + FN_NR - 1) / FN_NR;
    const ptrdiff_t group = trans ? 1 : FN_DENSE_GROUP, groups = (panels + group - 1) / group;
    const ptrdiff_t nb = (ptrdiff_t)((double)M * (double)K * sizeof(FN_T) / FN_DENSE_X_CACHED) + 1;
    const int row_kernel = M == 1;
    ptrdiff_t q;
    if (M <= 0 || N <= 0)
        return;
    for (q = 0; q < nb; q++) {
        const ptrdiff_t t0 = q * tiles / nb, t1 = (q + 1) * tiles / nb;
        /* splits of the block's rows: enough tasks for two per thread */
        ptrdiff_t splits = groups >= 2 * threads ? 1 : (2 * threads + groups - 1) / groups;
        if (splits > t1 - t0)
            splits = t1 - t0 > 0 ? t1 - t0 : 1;
        FN_TASKS(groups * splits,
            const ptrdiff_t g = task % groups, s = task / groups;
            const ptrdiff_t p0 = g * group, p1 = p0 + group < panels ? p0 + group : panels;
            const ptrdiff_t r0 = (t0 + s * (t1 - t0) / splits) * FN_MR;
            ptrdiff_t r1 = (t0 + (s + 1) * (t1 - t0) / splits) * FN_MR, r, p;
            FN_T *slot = slots + (ptrdiff_t)FN(dense_thread)() * group * K * FN_NR;
            if (r1 > M)
                r1 = M;
            if (row_kernel && !trans) {
                /* one row: S's panels read where they lie, not copied */
                for (p = p0; p < p1; p++) {
                    const ptrdiff_t n0 = p * FN_NR;
                    const int width = (int)(N - n0 < FN_NR ? N - n0 : FN_NR);
                    FN(dense_row_inplace)(K, A, S + n0, ls, bias != NULL ? bias + n0 : NULL, y + n0, width);
                    FN(dense_act_strip)(kind, alpha, 0, 1, n0, width, N, y, keep, mask);
                }
                r1 = r0;  /* done */
            }
            if (r1 > r0) {
                if (trans)
                    FN(dense_pack_t)(K, N - p0 * FN_NR < FN_NR ? N - p0 * FN_NR : FN_NR, S + p0 * FN_NR * ls, ls,
                                     slot);
                else
                    FN(dense_copy_panels)(K, N, p0, p1, S, ls, slot);
            }
            /* the rows in groups small enough that their strip is still in the level-1
             * cache when its activation reads it (the tiles' sums do not depend on it) */
            for (r = r0; r < r1; r += FN_DENSE_ACT_ROWS) {
                const ptrdiff_t e = r1 - r < FN_DENSE_ACT_ROWS ? r1 : r + FN_DENSE_ACT_ROWS;
                for (p = p0; p < p1; p++) {
                    const ptrdiff_t n0 = p * FN_NR;
                    const int width = (int)(N - n0 < FN_NR ? N - n0 : FN_NR);
                    FN(dense_panel)(e - r, K, A + r * lda, lda, slot + (p - p0) * K * FN_NR, FN(panel_width)(N, p),
                                    width, bias != NULL ? bias + n0 : NULL, y + r * N + n0, N, row_kernel);
                    FN(dense_act_strip)(kind, alpha, r, e, n0, width, N, y, keep, mask);
                }
            }
        );
    }
}

/* y (M, N) = act(x (M, K) @ w (N, K)^T + bias) (bias (N) or NULL); kind FN_ACT_*;
 * keep (sigmoid, tanh) and mask (relu, leaky_relu) (M, N): what the backward pass
 * reads (see the top of this file), NULL for the other kinds. slots:
 * FN(dense_slots_size)(K, threads) elements. */
FN_TARGET FN_UNUSED static void FN(dense_linear_forward)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *x,
                                                         const FN_T *w, const FN_T *bias, int kind, FN_T alpha,
                                                         FN_T *y, FN_T *keep, int8_t *mask, FN_T *slots,
                                                         int threads)
{
    if ((double)M * (double)N * (double)(K + 1) < FN_DENSE_SERIAL_MACS)
        threads = 1;
    const int path = M > 0 ? FN(narrow_path)(N, K) : FN_NARROW_PANELS;
    if (path != FN_NARROW_PANELS) {
        /* a few outputs (fn_gemm.h): dot products of x's rows with w's as they lie, or
         * the one-vector tile on w^T packed FN_VL wide into the slots; then the
         * activation over y (M N values, still in cache) */
        if (path == FN_NARROW_VTILE)
            FN(pack_v)(K, N, w, K, 1, slots);
        FN(gemm_narrow_mt)(path, M, N, K, x, K, w, K, slots, bias, y, N, 0, threads);
        if (kind != FN_ACT_IDENTITY)
            FN(dense_act_mt)(kind, alpha, M * N, y, y, keep, mask, threads);
        return;
    }
    FN(dense_gemm)(M, N, K, x, K, 1, w, K, bias, kind, alpha, y, keep, mask, slots, threads);
}

/* Whether FN(dense_linear_backward) forms dW from dz^T (which then needs M N
 * elements of scratch): when dz^T stays in the level-2 cache. */
FN_UNUSED static inline int FN(dense_dw_direct)(ptrdiff_t M, ptrdiff_t N)
{
    return (double)M * (double)N * sizeof(FN_T) <= FN_DENSE_X_CACHED;
}

/* db (N) = the column sums of g (M rows of N): each column summed in chunks of
 * FN_DENSE_DB_ROWS rows in row order, the chunks' sums added in chunk order, so the
 * bits do not depend on the thread count; tasks of FN_COLSUM_V vectors of columns,
 * the sums in registers (no scratch). A bias gradient: a linear layer's over its
 * batch, a convolution's over its output pixels, a recurrent layer's over its steps
 * and batch. */
#define FN_COLSUM_V 4
FN_TARGET FN_UNUSED static void FN(column_sums_mt)(ptrdiff_t M, ptrdiff_t N, const FN_T *g, FN_T *db, int threads)
{
    const ptrdiff_t cols = FN_COLSUM_V * FN_VL, tasks = (N + cols - 1) / cols;
    if (N <= 0)
        return;
    if (M <= 0) {
        memset(db, 0, (size_t)N * sizeof(FN_T));
        return;
    }
    if ((double)M * (double)N < (double)FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        const ptrdiff_t j0 = task * cols;
        FN_V total[FN_COLSUM_V], part[FN_COLSUM_V];
        int lanes[FN_COLSUM_V], v;
        ptrdiff_t r0, r;
        for (v = 0; v < FN_COLSUM_V; v++) {
            const ptrdiff_t left = N - j0 - v * FN_VL;
            lanes[v] = (int)(left <= 0 ? 0 : (left < FN_VL ? left : FN_VL));
            total[v] = FN(bc)(0);
        }
        for (r0 = 0; r0 < M; r0 += FN_DENSE_DB_ROWS) {
            const ptrdiff_t r1 = r0 + FN_DENSE_DB_ROWS < M ? r0 + FN_DENSE_DB_ROWS : M;
            for (v = 0; v < FN_COLSUM_V; v++)
                part[v] = lanes[v] > 0 ? FN_DGET(g + r0 * N + j0 + v * FN_VL, lanes[v]) : FN(bc)(0);
            for (r = r0 + 1; r < r1; r++) {
                const FN_T *row = g + r * N + j0;
                for (v = 0; v < FN_COLSUM_V; v++)
                    if (lanes[v] > 0)
                        part[v] = part[v] + FN_DGET(row + v * FN_VL, lanes[v]);
            }
            for (v = 0; v < FN_COLSUM_V; v++)
                total[v] = r0 == 0 ? part[v] : total[v] + part[v];
        }
        for (v = 0; v < FN_COLSUM_V; v++)
            if (lanes[v] > 0)
                FN_DPUT(db + j0 + v * FN_VL, lanes[v], total[v]);
    );
}

/* The backward pass of FN(dense_linear_forward): dz = dy * act'(.) (M, N) from keep
 * or mask, or dy itself for FN_ACT_IDENTITY (dz may be NULL then); dx (M, K) =
 * dz @ w; dw (N, K) = dz^T @ x; db (N) = column sums of dz when db is not NULL.
 * Scratch: slots, FN(dense_slots_size)(max(M, N), threads) elements; dzt, M N
 * elements when FN(dense_dw_direct)(M, N), else unused. Returns 0 when
 * gemm_tn2_mt cannot allocate its scratch. */
FN_TARGET FN_UNUSED static int FN(dense_linear_backward)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *dy,
                                                         const FN_T *x, const FN_T *w, const FN_T *keep,
                                                         const int8_t *mask, int kind, FN_T alpha, FN_T *dz,
                                                         FN_T *dzt, FN_T *slots, FN_T *dx, FN_T *dw,
                                                         FN_T *db, int threads)
{
    const FN_T *g = kind == FN_ACT_IDENTITY ? dy : dz;
    if (N <= 0) {
        if (M > 0 && K > 0)
            memset(dx, 0, (size_t)M * (size_t)K * sizeof(FN_T));
        return 1;
    }
    if (M <= 0) {
        if (K > 0)
            memset(dw, 0, (size_t)N * (size_t)K * sizeof(FN_T));
        if (db != NULL)
            memset(db, 0, (size_t)N * sizeof(FN_T));
        return 1;
    }
    if ((double)M * (double)N * (double)(K + 1) < FN_DENSE_SERIAL_MACS)
        threads = 1;
    if (kind != FN_ACT_IDENTITY)
        FN(dense_grad_mt)(kind, alpha, M * N, dy, keep, mask, dz, threads);
    if (db != NULL)
        FN(column_sums_mt)(M, N, g, db, threads);
    if (K <= 0)
        return 1;
    /* dx (M, K) = dz @ w, w (N, K) as it lies */
    FN(dense_gemm)(M, K, N, g, N, 0, w, K, NULL, FN_ACT_IDENTITY, 0, dx, NULL, NULL, slots, threads);
    /* dw (N, K) = dz^T @ x */
    if (FN(dense_dw_direct)(M, N)) {
        const ptrdiff_t cblocks = (N + 63) / 64;
        const int team = (double)M * (double)N < (double)FN_DENSE_ELEMS_MT ? 1 : threads;
        {
            const int threads = team;
            (void)threads;  /* FN_TASKS ignores it without OpenMP */
            FN_TASKS(cblocks,
                const ptrdiff_t c0 = task * 64;
                FN(transpose_matrix)(M, N - c0 < 64 ? N - c0 : 64, g + c0, N, dzt + c0 * M, M);
            );
        }
        FN(dense_gemm)(N, K, M, dzt, M, 0, x, K, NULL, FN_ACT_IDENTITY, 0, dw, NULL, NULL, slots, threads);
        return 1;
    }
    return FN(gemm_tn2_mt)(N, K, 0, M, g, N, x, K, x, K, dw, K, 0, threads);
}

/* p = softmax of each of `rows` rows of n elements of z (rows n apart), on `threads`
 * threads in tasks of whole rows. */
#if FN_DOUBLE
#define FN_DENSE_EXP_FLOOR (-708.0)
#else
#define FN_DENSE_EXP_FLOOR (-87.0f)
#endif
FN_TARGET FN_UNUSED static void FN(dense_softmax)(ptrdiff_t rows, ptrdiff_t n, const FN_T *z, FN_T *p, int threads)
{
    ptrdiff_t per, tasks;
    if (rows <= 0 || n <= 0)
        return;
    per = FN_DENSE_ELEMS_TASK / n;
    per = per < 1 ? 1 : per;
    tasks = (rows + per - 1) / per;
    if ((double)rows * (double)n < (double)FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        ptrdiff_t r, r1 = (task + 1) * per < rows ? (task + 1) * per : rows;
        FN_VI lane;
        int l;
        for (l = 0; l < FN_VL; l++)
            lane[l] = l;
        for (r = task * per; r < r1; r++) {
            const FN_T *zi = z + r * n;
            FN_T *pi = p + r * n;
            FN_V mv = FN(bc)(-(FN_T)__builtin_inf()), sv = FN(bc)(0);
            FN_T mx, sum, inv;
            ptrdiff_t j;
            /* the maximum; a NaN, once met, stays */
            for (j = 0; j < n; j += FN_VL) {
                const int w = (int)(n - j < FN_VL ? n - j : FN_VL);
                FN_V v = FN_DGET(zi + j, w);
                if (w < FN_VL)
                    v = FN(sel)(lane < lane * 0 + w, v, FN(bc)(-(FN_T)__builtin_inf()));
                mv = FN(sel)((v > mv) | (v != v), v, mv);
            }
            mx = mv[0];
            for (l = 1; l < FN_VL; l++)
                if (mv[l] != mv[l] || (mx == mx && mv[l] > mx))
                    mx = mv[l];
            /* e = exp(z - max), and their sum */
            for (j = 0; j < n; j += FN_VL) {
                const int w = (int)(n - j < FN_VL ? n - j : FN_VL);
                const FN_V d = FN_DGET(zi + j, w) - mx;
                FN_V e = FN(sel)(d < FN(bc)(FN_DENSE_EXP_FLOOR), FN(bc)(0), FN(exp)(FN(atleast)(d, FN_DENSE_EXP_FLOOR)));
                if (w < FN_VL)
                    e = FN(sel)(lane < lane * 0 + w, e, FN(bc)(0));
                sv += e;
                FN_DPUT(pi + j, w, e);
            }
            sum = sv[0];
            for (l = 1; l < FN_VL; l++)
                sum += sv[l];
            inv = (FN_T)1 / sum;
            for (j = 0; j < n; j += FN_VL) {
                const int w = (int)(n - j < FN_VL ? n - j : FN_VL);
                FN_DPUT(pi + j, w, FN_DGET(pi + j, w) * inv);
            }
        }
    );
}
#undef FN_DENSE_EXP_FLOOR
#undef FN_DENSE_GROUP
#undef FN_DENSE_MAP
#undef FN_DENSE_MAP_MASKED
#undef FN_DGET
#undef FN_DPUT
