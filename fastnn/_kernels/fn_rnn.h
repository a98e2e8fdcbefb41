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

/* The LSTM's backward time loop, steps T - 1 down to 0 over m rows of n_a units: g,
 * c (c_prev of step t at c + t * m * n_a: the forward's c_0 .. c_{T-1}), tanh_c and
 * dh (every step's dLoss/dh from above) as the forward left them, dc holding
 * dLoss/dc_T on entry and dc_0 on exit, dz getting every step's pre-activation
 * gradient and dh_prev dLoss/dh_0; P is W_h packed by FN(pack) as the right operand
 * (K = 4 n_a, N = n_a). Each step is the elementwise pass, then dh_prev = dh_{t-1} +
 * dz_t @ W_h. Split by batch rows when fn_batch_blocks says so (a block of rows
 * through every step, no synchronisation between the steps), else each step's pass
 * over row_threads threads and its product over `threads`. */
FN_TARGET FN_UNUSED static void FN(lstm_backward_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, const FN_T *g,
                                                        const FN_T *c, const FN_T *tanh_c, const FN_T *dh,
                                                        FN_T *dc, FN_T *dz, FN_T *dh_prev, const FN_T *P,
                                                        int row_threads, int threads)
{
    const ptrdiff_t step = m * n_a, gstep = 4 * step, K = 4 * n_a;
    const ptrdiff_t blocks = fn_batch_blocks(m, FN_MR, FN(packed_size)(K, n_a) * sizeof(FN_T), threads);
    const FN(panels) src = FN(packed_panels)(P, K, n_a);
    ptrdiff_t t;
    if (T <= 0 || m <= 0 || n_a <= 0)
        return;
    if (blocks > 0) {
        const ptrdiff_t tiles = (m + FN_MR - 1) / FN_MR, panels = (n_a + FN_NR - 1) / FN_NR;
        FN_AFFINE_TASKS(blocks,
            const ptrdiff_t r0 = task * tiles / blocks * FN_MR, r1 = (task + 1) * tiles / blocks * FN_MR;
            const ptrdiff_t rows = (r1 < m ? r1 : m) - r0;
            FN_T *acc = dh_prev + r0 * n_a;
            ptrdiff_t s, p;
            memcpy(acc, dh + (T - 1) * step + r0 * n_a, (size_t)(rows * n_a) * sizeof(FN_T));
            for (s = T - 1; s >= 0; s--) {
                FN_T *dzs = dz + s * gstep + r0 * K;
                FN(lstm_backward_rows)(rows, n_a, g + s * gstep + r0 * K, c + s * step + r0 * n_a,
                                       tanh_c + s * step + r0 * n_a, acc, dc + r0 * n_a, dzs, 1);
                if (s > 0)
                    memcpy(acc, dh + (s - 1) * step + r0 * n_a, (size_t)(rows * n_a) * sizeof(FN_T));
                /* the product by panels, as FN(gemm_src_mt) runs a whole step's
                 * (never the one-row kernel: its sums differ) */
                for (p = 0; p < panels; p++) {
                    const int width = (int)(n_a - p * FN_NR < FN_NR ? n_a - p * FN_NR : FN_NR);
                    const int full = p < n_a / FN_NR;
                    FN(gemm_panel)(rows, K, dzs, K, full ? src.B + p * src.step : src.tail,
                                   full ? src.ld : src.tail_ld, width, NULL, acc + p * FN_NR, n_a, s > 0);
                }
            }
        );
        return;
    }
    memcpy(dh_prev, dh + (T - 1) * step, (size_t)step * sizeof(FN_T));
    for (t = T - 1; t >= 0; t--) {
        FN(lstm_backward_rows)(m, n_a, g + t * gstep, c + t * step, tanh_c + t * step, dh_prev, dc, dz + t * gstep,
                               row_threads);
        if (t > 0)
            memcpy(dh_prev, dh + (t - 1) * step, (size_t)step * sizeof(FN_T));
        FN(gemm_nn_mt)(m, n_a, K, dz + t * gstep, K, P, NULL, dh_prev, n_a, t > 0, threads);
    }
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

#undef FN_GET
#undef FN_PUT
#undef FN_UNITS
