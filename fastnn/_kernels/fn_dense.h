/* Dense layers: the fused linear layer (product, bias and activation in one pass),
 * its backward pass, elementwise activations and their derivatives, and softmax.
 * Instantiated per CPU tier and element type by fn_kernels.h (no include guard;
 * the constants below have one).
 *
 * - linear forward, y = act(x @ W^T + b): W^T is packed once per call into the
 *   GEMM core's panels (panels in parallel tasks, by register transposes). With
 *   enough rows, the threads take blocks of whole rows: each block's product runs
 *   on its thread alone, started from the bias (the tiles' initial value), and its
 *   activation follows at once, while the block's outputs (a few hundred KiB) are
 *   still in the level-2 cache. A block holds at least two tiles of rows, so the
 *   matrix-vector kernel (another summation order) only ever sees a one-row x, on
 *   every path. With fewer rows than that for each thread, the product is split
 *   over the threads by tiles and panels and the activation is a second pass.
 *   Either way every output is one tile's sum in a fixed order: the bits do not
 *   depend on the thread count or on the blocking.
 * - What the backward pass reads (`keep`): z for relu and leaky_relu (the
 *   derivative is 1 where z > 0, else the slope: any slope, negative ones too), the
 *   output y for sigmoid and tanh (s (1 - s), 1 - t^2), nothing for the identity.
 *   The product is written into `keep` and the activation reads it from there into
 *   y (and, for sigmoid and tanh, back into `keep`), so no pass copies an output.
 * - linear backward: dz = dy * act'(keep) in tasks of whole chunks of
 *   FN_DENSE_DB_ROWS rows, each chunk's column sums kept apart; db adds the chunks'
 *   sums in chunk order (a fixed order: the same bits on any thread count). Then
 *   dx = dz @ W (W packed as it lies) and dW = dz^T @ x (fn_gemm.h's gemm_tn2_mt:
 *   chunks of the batch in a fixed order).
 * - The derivative is a product, dz = dy * act'(.), so a NaN or an infinite dy
 *   gives NaN where act' is 0 (0 * inf), as the formula says.
 * - softmax over rows of n: max (NaN wins), e = exp(z - max) with z - max below
 *   the exponent's range flushed to 0 (exp(-inf) = 0), the sum of e in vector lanes
 *   added lane by lane in a fixed order, then e times 1 / sum (within an ulp of
 *   e / sum). A row holding NaN is NaN; a row holding +inf gives NaN where
 *   inf - inf appears, like the formula.
 */
#ifndef FASTNN_FN_DENSE_CONST
#define FASTNN_FN_DENSE_CONST
/* activation kinds beyond fn_kernels.h's FN_ACT_SIGMOID, FN_ACT_TANH, FN_ACT_RELU */
#define FN_ACT_LEAKY_RELU 3
#define FN_ACT_IDENTITY 4
/* rows per chunk of db's partial sums (fixed: the summation order of db) */
#define FN_DENSE_DB_ROWS 32
/* the most output bytes of one row block of the fused forward (held in the level-2
 * cache from its product to its activation) */
#define FN_DENSE_BLOCK_BYTES (256 * 1024)
/* calls with fewer multiply-adds than this run on one thread (waking threads costs
 * more than they save); a choice by sizes only */
#define FN_DENSE_SERIAL_MACS 1048576.0
/* elementwise passes: elements per task, and the fewest worth threads */
#define FN_DENSE_ELEMS_TASK 16384
#define FN_DENSE_ELEMS_MT 65536
#endif

/* the n (<= VL) elements at p as a vector, and back */
#define FN_DGET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_DPUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)

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

/* y = act(z) for n contiguous elements, kind FN_ACT_*; keep (NULL, or z itself for
 * in place) also receives y. relu(NaN) and leaky_relu(NaN) are NaN. */
FN_TARGET FN_UNUSED static void FN(dense_act)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                              FN_T *keep)
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
        FN_DENSE_MAP(FN(sel)(v <= zero, zero, v));
        break;
    case FN_ACT_LEAKY_RELU:
        FN_DENSE_MAP(FN(sel)(v > zero, v, slope * v));
        break;
    default:
        FN_DENSE_MAP(v);
        break;
    }
}

/* dz = d * act'(.) for n contiguous elements, from keep: z for relu and leaky_relu
 * (1 where z > 0, else alpha; relu's alpha is 0), y for sigmoid (y (1 - y)) and
 * tanh (1 - y^2); the identity copies d. */
FN_TARGET FN_UNUSED static void FN(dense_grad)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d, const FN_T *keep,
                                               FN_T *dz)
{
    const FN_V zero = FN(bc)(0), one = FN(bc)(1), slope = FN(bc)(kind == FN_ACT_RELU ? 0 : alpha);
    ptrdiff_t i;
    for (i = 0; i < n; i += FN_VL) {
        const int w = (int)(n - i < FN_VL ? n - i : FN_VL);
        const FN_V g = FN_DGET(d + i, w);
        FN_V r;
        if (kind == FN_ACT_IDENTITY) {
            r = g;
        } else {
            const FN_V k = FN_DGET(keep + i, w);
            if (kind == FN_ACT_SIGMOID)
                r = g * (k * (one - k));
            else if (kind == FN_ACT_TANH)
                r = g * (one - k * k);
            else
                r = g * FN(sel)(k > zero, one, slope);
        }
        FN_DPUT(dz + i, w, r);
    }
}

/* FN(dense_act) over n elements in tasks of FN_DENSE_ELEMS_TASK on `threads` threads */
FN_TARGET FN_UNUSED static void FN(dense_act_mt)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *z, FN_T *y,
                                                 FN_T *keep, int threads)
{
    const ptrdiff_t tasks = (n + FN_DENSE_ELEMS_TASK - 1) / FN_DENSE_ELEMS_TASK;
    if (n < FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        const ptrdiff_t j0 = task * FN_DENSE_ELEMS_TASK;
        FN(dense_act)(kind, alpha, n - j0 < FN_DENSE_ELEMS_TASK ? n - j0 : FN_DENSE_ELEMS_TASK, z + j0, y + j0,
                      keep != NULL ? keep + j0 : NULL);
    );
}

/* FN(dense_grad) over n elements in tasks on `threads` threads */
FN_TARGET FN_UNUSED static void FN(dense_grad_mt)(int kind, FN_T alpha, ptrdiff_t n, const FN_T *d,
                                                  const FN_T *keep, FN_T *dz, int threads)
{
    const ptrdiff_t tasks = (n + FN_DENSE_ELEMS_TASK - 1) / FN_DENSE_ELEMS_TASK;
    if (n < FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(tasks,
        const ptrdiff_t j0 = task * FN_DENSE_ELEMS_TASK;
        FN(dense_grad)(kind, alpha, n - j0 < FN_DENSE_ELEMS_TASK ? n - j0 : FN_DENSE_ELEMS_TASK, d + j0,
                       keep != NULL ? keep + j0 : NULL, dz + j0);
    );
}

/* P <- the packed form (fn_gemm.h) of B (K, N) = S^T (trans, S (N, K)) or of B = S
 * (K, N) itself, rows ls apart: one task per panel (a panel packed alone is laid
 * out as it is in the whole). */
FN_TARGET FN_UNUSED static void FN(dense_pack)(int trans, ptrdiff_t K, ptrdiff_t N, const FN_T *S, ptrdiff_t ls,
                                               FN_T *P, int threads)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR;
    if ((double)K * (double)N < (double)FN_DENSE_ELEMS_MT)
        threads = 1;
    FN_TASKS(panels,
        const ptrdiff_t n0 = task * FN_NR, width = N - n0 < FN_NR ? N - n0 : FN_NR;
        if (trans)
            FN(pack_t)(K, width, S + n0 * ls, ls, P + n0 * K);
        else
            FN(pack)(K, width, S + n0, ls, 1, P + n0 * K);
    );
}

/* Row blocks of the fused forward for M rows of N outputs on `threads` threads: the
 * number of blocks (0: too few rows to give each thread a block of two tiles; split
 * the product over the threads instead). Blocks split the tiles evenly, hold at
 * least two tiles each, and come in a multiple of the thread count. */
FN_TARGET FN_INLINE ptrdiff_t FN(dense_blocks)(ptrdiff_t M, ptrdiff_t N, int threads)
{
    const ptrdiff_t tiles = (M + FN_MR - 1) / FN_MR;
    ptrdiff_t per = FN_DENSE_BLOCK_BYTES / ((ptrdiff_t)FN_MR * (N > 0 ? N : 1) * (ptrdiff_t)sizeof(FN_T)), nb;
    per = per < 2 ? 2 : (per > 16 ? 16 : per);
    nb = (tiles + per - 1) / per;
    if (threads <= 1)
        return nb;
    if (tiles < 2 * threads)
        return 0;
    nb = (nb + threads - 1) / threads * threads;
    while (nb > tiles / 2)
        nb -= threads;
    return nb;
}

/* y (M, N) = act(x (M, K) @ w (N, K)^T + bias) (bias (N) or NULL); kind FN_ACT_*.
 * keep (M, N): what the backward pass reads (see the top of this file), unused for
 * FN_ACT_IDENTITY (may be NULL then). P: room for the packed W^T,
 * FN(packed_size)(K, N) elements. */
FN_TARGET FN_UNUSED static void FN(dense_linear_forward)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *x,
                                                         const FN_T *w, FN_T *P, const FN_T *bias, int kind,
                                                         FN_T alpha, FN_T *y, FN_T *keep, int threads)
{
    FN_T *z = kind == FN_ACT_IDENTITY ? y : keep;
    FN_T *keep_y = kind == FN_ACT_SIGMOID || kind == FN_ACT_TANH ? keep : NULL;
    const ptrdiff_t tiles = (M + FN_MR - 1) / FN_MR;
    ptrdiff_t blocks;
    if (M <= 0 || N <= 0)
        return;
    if ((double)M * (double)N * (double)(K + 1) < FN_DENSE_SERIAL_MACS)
        threads = 1;
    FN(dense_pack)(1, K, N, w, K, P, threads);
    blocks = FN(dense_blocks)(M, N, threads);
    if (blocks > 0) {
        FN_TASKS(blocks,
            const ptrdiff_t r0 = task * tiles / blocks * FN_MR;
            const ptrdiff_t r1 = (task + 1) * tiles / blocks * FN_MR < M ? (task + 1) * tiles / blocks * FN_MR : M;
            FN(gemm_nn_mt)(r1 - r0, N, K, x + r0 * K, K, P, bias, z + r0 * N, N, 0, 1);
            if (kind != FN_ACT_IDENTITY)
                FN(dense_act)(kind, alpha, (r1 - r0) * N, z + r0 * N, y + r0 * N,
                              keep_y != NULL ? keep_y + r0 * N : NULL);
        );
    } else {
        FN(gemm_nn_mt)(M, N, K, x, K, P, bias, z, N, 0, threads);
        if (kind != FN_ACT_IDENTITY)
            FN(dense_act_mt)(kind, alpha, M * N, z, y, keep_y, threads);
    }
}

/* The backward pass of FN(dense_linear_forward): dz = dy * act'(keep) (M, N), or dy
 * itself for FN_ACT_IDENTITY (dz may be NULL then); dx (M, K) = dz @ w;
 * dw (N, K) = dz^T @ x; db (N) = column sums of dz when db is not NULL. Scratch: P,
 * FN(packed_size)(N, K) elements; partial, ceil(M / FN_DENSE_DB_ROWS) * N elements
 * (when db is not NULL). Returns 0 when gemm_tn2_mt cannot allocate its scratch. */
FN_TARGET FN_UNUSED static int FN(dense_linear_backward)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *dy,
                                                         const FN_T *x, const FN_T *w, const FN_T *keep, int kind,
                                                         FN_T alpha, FN_T *dz, FN_T *P, FN_T *partial, FN_T *dx,
                                                         FN_T *dw, FN_T *db, int threads)
{
    const ptrdiff_t chunks = (M + FN_DENSE_DB_ROWS - 1) / FN_DENSE_DB_ROWS;
    const FN_T *g = kind == FN_ACT_IDENTITY ? dy : dz;
    ptrdiff_t per, tasks, r;
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
    /* dz and the chunks' column sums, tasks of whole chunks */
    if (kind != FN_ACT_IDENTITY || db != NULL) {
        per = FN_DENSE_ELEMS_TASK / (FN_DENSE_DB_ROWS * N);
        per = per < 1 ? 1 : per;
        tasks = (chunks + per - 1) / per;
        {
            const int team = (double)M * (double)N < (double)FN_DENSE_ELEMS_MT ? 1 : threads;
            {
                const int threads = team;
                FN_TASKS(tasks,
                    ptrdiff_t c, c1 = (task + 1) * per < chunks ? (task + 1) * per : chunks;
                    for (c = task * per; c < c1; c++) {
                        const ptrdiff_t r0 = c * FN_DENSE_DB_ROWS;
                        const ptrdiff_t r1 = r0 + FN_DENSE_DB_ROWS < M ? r0 + FN_DENSE_DB_ROWS : M;
                        ptrdiff_t i, j;
                        if (kind != FN_ACT_IDENTITY)
                            FN(dense_grad)(kind, alpha, (r1 - r0) * N, dy + r0 * N, keep + r0 * N, dz + r0 * N);
                        if (db != NULL) {
                            FN_T *s = partial + c * N;
                            memcpy(s, g + r0 * N, (size_t)N * sizeof(FN_T));
                            for (i = r0 + 1; i < r1; i++) {
                                const FN_T *row = g + i * N;
                                for (j = 0; j < N; j += FN_VL) {
                                    const int w_ = (int)(N - j < FN_VL ? N - j : FN_VL);
                                    FN_DPUT(s + j, w_, FN_DGET(s + j, w_) + FN_DGET(row + j, w_));
                                }
                            }
                        }
                    }
                );
            }
        }
        if (db != NULL) {
            /* db: the chunks' sums in chunk order, columns in tasks */
            const ptrdiff_t cols = 1024, ctasks = (N + cols - 1) / cols;
            const int team = (double)chunks * (double)N < (double)FN_DENSE_ELEMS_MT ? 1 : threads;
            {
                const int threads = team;
                FN_TASKS(ctasks,
                    const ptrdiff_t j0 = task * cols, j1 = j0 + cols < N ? j0 + cols : N;
                    ptrdiff_t c, j;
                    memcpy(db + j0, partial + j0, (size_t)(j1 - j0) * sizeof(FN_T));
                    for (c = 1; c < chunks; c++)
                        for (j = j0; j < j1; j += FN_VL) {
                            const int w_ = (int)(j1 - j < FN_VL ? j1 - j : FN_VL);
                            FN_DPUT(db + j, w_, FN_DGET(db + j, w_) + FN_DGET(partial + c * N + j, w_));
                        }
                );
            }
        }
    }
    if (K <= 0)
        return 1;
    /* dx = dz @ w, w (N, K) packed as it lies */
    FN(dense_pack)(0, N, K, w, K, P, threads);
    FN(gemm_nn_mt)(M, K, N, g, N, P, NULL, dx, K, 0, threads);
    /* dw = dz^T @ x */
    r = FN(gemm_tn2_mt)(N, K, 0, M, g, N, x, K, x, K, dw, K, 0, threads);
    return (int)r;
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
#undef FN_DENSE_MAP
#undef FN_DGET
#undef FN_DPUT
