/* The elementwise passes of the recurrent cells that do not run fused into their
 * product (fn_lstm.h fuses the LSTM forward): one time step over `rows` batch rows,
 * row i of every array at i * its row length, rows split over `threads` threads.
 * Instantiated per CPU tier and element type by fn_kernels.h (no include guard).
 * Every element is computed by one thread in a fixed order, so the results do not
 * depend on the thread count.
 */

/* the n (<= VL) elements at p as a vector, and back */
#define FN_GET(p, n) ((n) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (n)))
#define FN_PUT(p, n, v) do { if ((n) == FN_VL) FN(st)((p), (v)); else FN(stn)((p), (n), (v)); } while (0)
/* for each block of VL units of a row: j its first, w how many */
#define FN_UNITS(n_units, ...) \
    do { \
        ptrdiff_t j; \
        for (j = 0; j < (n_units); j += FN_VL) { \
            const int w = (int)((n_units) - j < FN_VL ? (n_units) - j : FN_VL); \
            __VA_ARGS__ \
        } \
    } while (0)

/* h = tanh(h) or max(h, 0) in place (NaN stays NaN) */
FN_TARGET FN_UNUSED static void FN(rnn_forward_rows)(ptrdiff_t rows, ptrdiff_t n, FN_T *h, int relu,
                                                     int threads)
{
    FN_ITEM_TASKS(rows, 2 * n * (ptrdiff_t)sizeof(FN_T),
        FN_T *hi = h + item * n;
        FN_UNITS(n,
            const FN_V z = FN_GET(hi + j, w);
            FN_PUT(hi + j, w, relu ? FN(sel)(z <= FN(bc)(0), FN(bc)(0), z) : FN(tanh)(z));
        );
    );
}

/* dz = dh * act'(z), act' taken from h = act(z); ReLU' is 0 at 0 */
FN_TARGET FN_UNUSED static void FN(rnn_backward_rows)(ptrdiff_t rows, ptrdiff_t n, const FN_T *h,
                                                      const FN_T *dh, FN_T *dz, int relu, int threads)
{
    FN_ITEM_TASKS(rows, 3 * n * (ptrdiff_t)sizeof(FN_T),
        const FN_T *hi = h + item * n, *dhi = dh + item * n;
        FN_T *dzi = dz + item * n;
        FN_UNITS(n,
            const FN_V hv = FN_GET(hi + j, w), d = FN_GET(dhi + j, w);
            FN_PUT(dzi + j, w, relu ? FN(sel)(hv > FN(bc)(0), d, FN(bc)(0) * d) : d * (1 - hv * hv));
        );
    );
}

/* g rows [f, u, c~, o] of gate values; dc holds dLoss/dc_next on entry (dh's share
 * not yet added) and dLoss/dc_prev on exit */
FN_TARGET FN_UNUSED static void FN(lstm_backward_rows)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                       const FN_T *c_prev, const FN_T *tanh_c,
                                                       const FN_T *dh, FN_T *dc, FN_T *dz, int threads)
{
    FN_ITEM_TASKS(rows, 13 * n * (ptrdiff_t)sizeof(FN_T),
        const FN_T *gf = g + item * 4 * n, *gu = gf + n, *gc = gu + n, *go = gc + n;
        const FN_T *cp = c_prev + item * n, *tc = tanh_c + item * n, *dhi = dh + item * n;
        FN_T *dci = dc + item * n;
        FN_T *dzf = dz + item * 4 * n, *dzu = dzf + n, *dzc = dzu + n, *dzo = dzc + n;
        FN_UNITS(n,
            const FN_V f = FN_GET(gf + j, w), u = FN_GET(gu + j, w), cc = FN_GET(gc + j, w);
            const FN_V o = FN_GET(go + j, w), t = FN_GET(tc + j, w), d = FN_GET(dhi + j, w);
            const FN_V k = FN_GET(dci + j, w) + d * o * (1 - t * t);
            FN_PUT(dzo + j, w, d * t * o * (1 - o));
            FN_PUT(dzc + j, w, k * u * (1 - cc * cc));
            FN_PUT(dzu + j, w, k * cc * u * (1 - u));
            FN_PUT(dzf + j, w, k * FN_GET(cp + j, w) * f * (1 - f));
            FN_PUT(dci + j, w, k * f);
        );
    );
}

/* g rows [u, r, c~] of pre-activations: the gates u and r in place, and
 * rh = r * h_prev (the candidate's input) */
FN_TARGET FN_UNUSED static void FN(gru_gates_rows)(ptrdiff_t rows, ptrdiff_t n, FN_T *g,
                                                   const FN_T *h_prev, FN_T *rh, int threads)
{
    FN_ITEM_TASKS(rows, 6 * n * (ptrdiff_t)sizeof(FN_T),
        FN_T *gu = g + item * 3 * n, *gr = gu + n;
        const FN_T *hp = h_prev + item * n;
        FN_T *rhi = rh + item * n;
        FN_UNITS(n,
            const FN_V r = FN(sigmoid)(FN_GET(gr + j, w));
            FN_PUT(gu + j, w, FN(sigmoid)(FN_GET(gu + j, w)));
            FN_PUT(gr + j, w, r);
            FN_PUT(rhi + j, w, r * FN_GET(hp + j, w));
        );
    );
}

/* c~ = tanh of its pre-activation in place; h_next = u * c~ + (1 - u) * h_prev */
FN_TARGET FN_UNUSED static void FN(gru_output_rows)(ptrdiff_t rows, ptrdiff_t n, FN_T *g,
                                                    const FN_T *h_prev, FN_T *h_next, int threads)
{
    FN_ITEM_TASKS(rows, 5 * n * (ptrdiff_t)sizeof(FN_T),
        FN_T *gu = g + item * 3 * n, *gc = gu + 2 * n;
        const FN_T *hp = h_prev + item * n;
        FN_T *hn = h_next + item * n;
        FN_UNITS(n,
            const FN_V u = FN_GET(gu + j, w), cc = FN(tanh)(FN_GET(gc + j, w));
            FN_PUT(gc + j, w, cc);
            FN_PUT(hn + j, w, u * cc + (1 - u) * FN_GET(hp + j, w));
        );
    );
}

/* dz_u and dz_c; dh_prev += dh * (1 - u) (its direct share) */
FN_TARGET FN_UNUSED static void FN(gru_backward_out_rows)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                          const FN_T *h_prev, const FN_T *dh,
                                                          FN_T *dh_prev, FN_T *dz, int threads)
{
    FN_ITEM_TASKS(rows, 8 * n * (ptrdiff_t)sizeof(FN_T),
        const FN_T *gu = g + item * 3 * n, *gc = gu + 2 * n;
        const FN_T *hp = h_prev + item * n, *dhi = dh + item * n;
        FN_T *dhp = dh_prev + item * n, *dzu = dz + item * 3 * n, *dzc = dzu + 2 * n;
        FN_UNITS(n,
            const FN_V u = FN_GET(gu + j, w), cc = FN_GET(gc + j, w), d = FN_GET(dhi + j, w);
            FN_PUT(dzc + j, w, d * u * (1 - cc * cc));
            FN_PUT(dzu + j, w, d * (cc - FN_GET(hp + j, w)) * u * (1 - u));
            FN_PUT(dhp + j, w, FN_GET(dhp + j, w) + d * (1 - u));
        );
    );
}

/* given drh = dLoss/d(r * h_prev): dz_r; dh_prev += drh * r */
FN_TARGET FN_UNUSED static void FN(gru_backward_reset_rows)(ptrdiff_t rows, ptrdiff_t n, const FN_T *g,
                                                            const FN_T *h_prev, const FN_T *drh,
                                                            FN_T *dh_prev, FN_T *dz, int threads)
{
    FN_ITEM_TASKS(rows, 6 * n * (ptrdiff_t)sizeof(FN_T),
        const FN_T *gr = g + item * 3 * n + n;
        const FN_T *hp = h_prev + item * n, *drhi = drh + item * n;
        FN_T *dhp = dh_prev + item * n, *dzr = dz + item * 3 * n + n;
        FN_UNITS(n,
            const FN_V r = FN_GET(gr + j, w), d = FN_GET(drhi + j, w);
            FN_PUT(dzr + j, w, d * FN_GET(hp + j, w) * r * (1 - r));
            FN_PUT(dhp + j, w, FN_GET(dhp + j, w) + d * r);
        );
    );
}

/* y = act(x) for n elements (kind FN_ACT_*), in parallel blocks */
FN_TARGET FN_UNUSED static void FN(activate)(int kind, ptrdiff_t n, const FN_T *x, FN_T *y, int threads)
{
    const ptrdiff_t block = 4096, blocks = (n + block - 1) / block;
    FN_TASKS(blocks,
        const ptrdiff_t j0 = task * block, count = n - j0 < block ? n - j0 : block;
        FN_UNITS(count,
            const FN_V z = FN_GET(x + j0 + j, w);
            FN_PUT(y + j0 + j, w, kind == FN_ACT_SIGMOID ? FN(sigmoid)(z)
                                  : kind == FN_ACT_TANH ? FN(tanh)(z) : FN(sel)(z <= FN(bc)(0), FN(bc)(0), z));
        );
    );
}

/* ---- the time loops ----
 * A sequence's rows are independent sequences: when fn_batch_blocks says so, each
 * task is a block of rows (whole tiles of FN_MR) that runs every time step on one
 * thread, one parallel region per sequence; else each step's passes and products
 * are split over the threads (row_threads for the elementwise passes, `threads`
 * for the products). BODY sees its rows as r0_ (first) and rows_, and th_ / rth_:
 * the threads of its products and passes (1 in a block); split_ says which. */
#define FN_SEQUENCE_ROWS(m, weight_bytes, ...) \
    do { \
        const ptrdiff_t blocks_ = fn_batch_blocks((m), FN_MR, (weight_bytes), threads); \
        if (blocks_ > 0) { \
            const ptrdiff_t tiles_ = ((m) + FN_MR - 1) / FN_MR; \
            FN_AFFINE_TASKS(blocks_, \
                const ptrdiff_t r0_ = task * tiles_ / blocks_ * FN_MR; \
                const ptrdiff_t r1_ = (task + 1) * tiles_ / blocks_ * FN_MR; \
                const ptrdiff_t rows_ = (r1_ < (m) ? r1_ : (m)) - r0_; \
                const int split_ = 1, th_ = 1, rth_ = 1; \
                (void)split_; (void)th_; (void)rth_; \
                { __VA_ARGS__ }); \
        } else { \
            const ptrdiff_t r0_ = 0, rows_ = (m); \
            const int split_ = 0, th_ = threads, rth_ = row_threads; \
            (void)split_; (void)th_; (void)rth_; \
            { __VA_ARGS__ } \
        } \
    } while (0)

/* C (M, N) (+)= A (M, K) @ P (FN(pack)'s) for a time loop: split_, one thread, panel
 * by panel on the tiles FN(gemm_nn_mt) runs for the same rows in a whole batch
 * (never its one-row kernel, whose sums differ); else FN(gemm_nn_mt) on th_. */
FN_TARGET FN_INLINE void FN(gemm_seq)(int split, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A,
                                      ptrdiff_t lda, const FN_T *P, FN_T *C, ptrdiff_t ldc, int accumulate,
                                      int threads)
{
    if (split) {
        const FN(panels) src = FN(packed_panels)(P, K, N);
        const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, full = N / FN_NR;
        ptrdiff_t p;
        for (p = 0; p < panels; p++)
            FN(gemm_panel)(M, K, A, lda, p < full ? src.B + p * src.step : src.tail, p < full ? src.ld : src.tail_ld,
                           (int)(N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR), NULL, C + p * FN_NR, ldc,
                           accumulate);
    } else {
        FN(gemm_nn_mt)(M, N, K, A, lda, P, NULL, C, ldc, accumulate, threads);
    }
}

/* The backward time loop of the RNN and the LSTM (`gates` blocks of n_a per row of
 * dz): dh_prev (acc, the rows' share) starts as dh_{T-1}; per step t, PASS writes
 * dz_t (dzt) from acc, then acc = dh_{t-1} + dz_t @ W_h (P: W_h packed, K = gates
 * n_a, N = n_a), which ends as dLoss/dh_0. Needs T, m, n_a, dh, dz, dh_prev, P,
 * step (m n_a), row_threads and threads. */
#define FN_BACKWARD_STEPS(gates, ...) \
    FN_SEQUENCE_ROWS(m, FN(packed_size)((gates) * n_a, n_a) * sizeof(FN_T), \
        FN_T *acc = dh_prev + r0_ * n_a; \
        const size_t bytes = (size_t)(rows_ * n_a) * sizeof(FN_T); \
        ptrdiff_t t; \
        memcpy(acc, dh + (T - 1) * step + r0_ * n_a, bytes); \
        for (t = T - 1; t >= 0; t--) { \
            FN_T *dzt = dz + t * (gates) * step + r0_ * (gates) * n_a; \
            __VA_ARGS__; \
            if (t > 0) \
                memcpy(acc, dh + (t - 1) * step + r0_ * n_a, bytes); \
            FN(gemm_seq)(split_, rows_, n_a, (gates) * n_a, dzt, (gates) * n_a, P, acc, n_a, t > 0, th_); \
        })

/* The RNN's forward: h holds T + 1 blocks of m x n_a, h_0 first, then each step's
 * input projection (bias included), which becomes h_t: += h_{t-1} @ W_h^T (P:
 * W_h^T packed), then tanh or ReLU. */
FN_TARGET FN_UNUSED static void FN(rnn_forward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, FN_T *h,
                                                      const FN_T *P, int relu, int row_threads, int threads)
{
    const ptrdiff_t step = m * n_a;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    FN_SEQUENCE_ROWS(m, FN(packed_size)(n_a, n_a) * sizeof(FN_T),
        ptrdiff_t t;
        for (t = 0; t < T; t++) {
            FN_T *hn = h + (t + 1) * step + r0_ * n_a;
            FN(gemm_seq)(split_, rows_, n_a, n_a, h + t * step + r0_ * n_a, n_a, P, hn, n_a, 1, th_);
            FN(rnn_forward_rows)(rows_, n_a, hn, relu, rth_);
        });
}

/* The RNN's backward time loop: h the forward's (T + 1 blocks), dh every step's
 * dLoss/dh from above; dz gets every step's pre-activation gradient, dh_prev
 * dLoss/dh_0; P is W_h packed (K = N = n_a). */
FN_TARGET FN_UNUSED static void FN(rnn_backward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *h,
                                                       const FN_T *dh, FN_T *dz, FN_T *dh_prev, const FN_T *P,
                                                       int relu, int row_threads, int threads)
{
    const ptrdiff_t step = m * n_a;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    FN_BACKWARD_STEPS(1, FN(rnn_backward_rows)(rows_, n_a, h + (t + 1) * step + r0_ * n_a, acc, dzt, relu, rth_));
}

/* The GRU's forward: g (T blocks of m x 3 n_a) holds each step's input projection
 * (bias included) and gets [u, r, c~]; h (T + 1 blocks, h_0 first) every state, rh
 * (T blocks) r * h_prev. Pg: W_h^T of the gates u and r packed (n_a x 2 n_a), Pc:
 * the candidate's (n_a x n_a). */
FN_TARGET FN_UNUSED static void FN(gru_forward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, FN_T *g, FN_T *h,
                                                      FN_T *rh, const FN_T *Pg, const FN_T *Pc, int row_threads,
                                                      int threads)
{
    const ptrdiff_t step = m * n_a, gstep = 3 * step, G = 3 * n_a;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    FN_SEQUENCE_ROWS(m, (FN(packed_size)(n_a, 2 * n_a) + FN(packed_size)(n_a, n_a)) * sizeof(FN_T),
        ptrdiff_t t;
        for (t = 0; t < T; t++) {
            FN_T *gt = g + t * gstep + r0_ * G, *rht = rh + t * step + r0_ * n_a;
            const FN_T *hp = h + t * step + r0_ * n_a;
            FN(gemm_seq)(split_, rows_, 2 * n_a, n_a, hp, n_a, Pg, gt, G, 1, th_);
            FN(gru_gates_rows)(rows_, n_a, gt, hp, rht, rth_);
            FN(gemm_seq)(split_, rows_, n_a, n_a, rht, n_a, Pc, gt + 2 * n_a, G, 1, th_);
            FN(gru_output_rows)(rows_, n_a, gt, hp, h + (t + 1) * step + r0_ * n_a, rth_);
        });
}

/* The GRU's backward time loop: g, h as the forward left them, dh every step's
 * dLoss/dh; dz gets every step's pre-activation gradient, dh_prev dLoss/dh_0; drh
 * and nxt are m x n_a of scratch. Pg: W_h of the gates packed (K = 2 n_a, N = n_a),
 * Pc: the candidate's (n_a x n_a). */
FN_TARGET FN_UNUSED static void FN(gru_backward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *g,
                                                       const FN_T *h, const FN_T *dh, FN_T *dz, FN_T *drh,
                                                       FN_T *nxt, FN_T *dh_prev, const FN_T *Pg, const FN_T *Pc,
                                                       int row_threads, int threads)
{
    const ptrdiff_t step = m * n_a, gstep = 3 * step, G = 3 * n_a;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    FN_SEQUENCE_ROWS(m, (FN(packed_size)(2 * n_a, n_a) + FN(packed_size)(n_a, n_a)) * sizeof(FN_T),
        FN_T *acc = dh_prev + r0_ * n_a, *next = nxt + r0_ * n_a, *dr = drh + r0_ * n_a;
        const size_t bytes = (size_t)(rows_ * n_a) * sizeof(FN_T);
        ptrdiff_t t;
        memcpy(acc, dh + (T - 1) * step + r0_ * n_a, bytes);
        for (t = T - 1; t >= 0; t--) {
            const FN_T *gt = g + t * gstep + r0_ * G, *hp = h + t * step + r0_ * n_a;
            FN_T *dzt = dz + t * gstep + r0_ * G, *swap;
            if (t > 0)
                memcpy(next, dh + (t - 1) * step + r0_ * n_a, bytes);
            else
                memset(next, 0, bytes);
            FN(gru_backward_out_rows)(rows_, n_a, gt, hp, acc, next, dzt, rth_);
            FN(gemm_seq)(split_, rows_, n_a, n_a, dzt + 2 * n_a, G, Pc, dr, n_a, 0, th_);
            FN(gru_backward_reset_rows)(rows_, n_a, gt, hp, dr, next, dzt, rth_);
            FN(gemm_seq)(split_, rows_, n_a, 2 * n_a, dzt, G, Pg, next, n_a, 1, th_);
            swap = acc;
            acc = next;
            next = swap;
        }
        if (acc != dh_prev + r0_ * n_a)
            memcpy(dh_prev + r0_ * n_a, acc, bytes);
        );
}

/* The LSTM's backward time loop: g, c (c_prev of step t at c + t m n_a: the
 * forward's c_0 .. c_{T-1}) and tanh_c as the forward left them, dh every step's
 * dLoss/dh from above; dc holds dLoss/dc_T on entry and dc_0 on exit, dz gets every
 * step's pre-activation gradient and dh_prev dLoss/dh_0; P is W_h packed by
 * FN(pack) (K = 4 n_a, N = n_a). Per step the elementwise pass, then dh_prev =
 * dh_{t-1} + dz_t @ W_h. */
FN_TARGET FN_UNUSED static void FN(lstm_backward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *g,
                                                        const FN_T *c, const FN_T *tanh_c, const FN_T *dh,
                                                        FN_T *dc, FN_T *dz, FN_T *dh_prev, const FN_T *P,
                                                        int row_threads, int threads)
{
    const ptrdiff_t step = m * n_a, gstep = 4 * step, K = 4 * n_a;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    FN_BACKWARD_STEPS(4, FN(lstm_backward_rows)(rows_, n_a, g + t * gstep + r0_ * K, c + t * step + r0_ * n_a,
                                                tanh_c + t * step + r0_ * n_a, acc, dc + r0_ * n_a, dzt, rth_));
}
#undef FN_BACKWARD_STEPS
#undef FN_SEQUENCE_ROWS

#undef FN_GET
#undef FN_PUT
#undef FN_UNITS
