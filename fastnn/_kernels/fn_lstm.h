/* A fused LSTM step: the gates' product and the cell's elementwise work in one
 * kernel, next to fn_gemm.h. Instantiated per CPU tier and element type by
 * fn_kernels.h (no include guard).
 *
 * A step is z = [h_prev, x_t] @ W^T + b followed by the cell's elementwise work.
 * W^T is packed with its columns reordered: a panel holds the four gates [f, u, c~,
 * o] of the same FN_LU units, a cache line of each (FN_LUV vectors: 1 on AVX-512, 2
 * on AVX2, 4 with 16-byte vectors), FN_LNR = 4 FN_LU columns. The tile's sums are
 * everything a cell needs, so its epilogue writes the gate values, c, tanh(c) and h
 * directly: no pass over a gate buffer after the product, and one parallel region
 * per step instead of two; and every output line is written whole by one epilogue,
 * so large outputs can go past the caches. A tile is FN_LMR rows by FN_LGV vectors
 * of the panel, taken in turn across it (6 by 4 on AVX-512: all four gates at
 * once; 6 by 2, four times, on the 16-register tiers: the shape of their GEMM tile,
 * faster than 3 rows by 4 although it reads the rows again). A batch of one row,
 * and on the 16-register tiers the rows of a partial tile, take matrix-vector
 * kernels instead (FN(lstm_row), FN(lstm_pair)): 8 FMA chains each, where a tile
 * of one to five real rows would keep fewer busy or multiply rows that do not exist.
 *
 * The input part x_t @ W_x^T + b is either in gx already (the input projection of
 * all steps, one GEMM before the time loop) or computed here in the same tile, the
 * product running over K = n_a + n_x (x_t given): at a batch of a few rows up the
 * second is faster, since the projection would write the pre-activations of every
 * step to memory only to read them back one step at a time.
 */

#define FN_LUV (64 / FN_VBYTES)      /* vectors of units per panel: a cache line */
#define FN_LU (FN_LUV * FN_VL)       /* units per panel */
#define FN_LNR (4 * FN_LU)           /* columns per panel */

/* Elements in the packed form of an LSTM's W^T for a product over K inputs (n_a:
 * h only; n_a + n_x: h and x), 4 * n_a gate columns. */
FN_UNUSED static inline size_t FN(lstm_packed_size)(ptrdiff_t n_a, ptrdiff_t K)
{
    return (size_t)((n_a + FN_LU - 1) / FN_LU) * FN_LNR * (size_t)(K > 0 ? K : 0);
}

/* Pack W^T for FN(lstm_step_mt): W (4 * n_a rows, row stride ldw) holds W_h in its
 * first n_a columns and W_x after them; the first K columns are packed, panel p
 * holding W[gate * n_a + LU p + j, k] at P[(p * K + k) * FN_LNR + gate * LU + j], zero
 * for units past n_a: a VL x VL transpose per vector of units, gate and block of VL
 * k. */
FN_TARGET FN_UNUSED static void FN(lstm_pack)(ptrdiff_t n_a, ptrdiff_t K, const FN_T *W, ptrdiff_t ldw,
                                              FN_T *P)
{
    const ptrdiff_t panels = (n_a + FN_LU - 1) / FN_LU;
    ptrdiff_t p, k0, gate, s;
    for (p = 0; p < panels; p++)
        for (k0 = 0; k0 < K; k0 += FN_VL)
            for (gate = 0; gate < 4; gate++)
                for (s = 0; s < FN_LUV; s++) {
                    const ptrdiff_t u0 = p * FN_LU + s * FN_VL;
                    const int units = (int)(n_a - u0 < 0 ? 0 : (n_a - u0 < FN_VL ? n_a - u0 : FN_VL));
                    FN(transpose)(W + (gate * n_a + (units > 0 ? u0 : 0)) * ldw + k0, ldw, units,
                                  (int)(K - k0 < FN_VL ? K - k0 : FN_VL),
                                  P + (p * K + k0) * FN_LNR + (gate * FN_LUV + s) * FN_VL, FN_LNR);
                }
}

/* One vector to p, `units` lanes of it: past the caches when asked and the panel's
 * whole line is written (the vectors of a line go out one after the other, so
 * the write-combining buffer fills). */
FN_TARGET FN_INLINE void FN(lstm_put)(FN_T *p, int units, FN_V v, int stream)
{
    if (units == FN_VL) {
        if (stream && FN_STREAM_ALIGN > 0 && ((uintptr_t)p % (FN_STREAM_ALIGN > 0 ? FN_STREAM_ALIGN : 1)) == 0)
            FN(stream)(p, v);
        else
            FN(st)(p, v);
    } else {
        FN(stn)(p, units, v);
    }
}

/* The cell of VL units (`units` of them exist) from the gates' pre-activations: g
 * (at the first unit, gates n_a apart) gets the gate values. */
FN_TARGET FN_INLINE void FN(lstm_cell)(FN_V zf, FN_V zu, FN_V zc, FN_V zo, int units, FN_T *g,
                                       ptrdiff_t n_a, const FN_T *cp, FN_T *cn, FN_T *tc, FN_T *hn,
                                       int stream)
{
    const FN_V f = FN(sigmoid)(zf), u = FN(sigmoid)(zu), cc = FN(tanh)(zc), o = FN(sigmoid)(zo);
    const FN_V cprev = units == FN_VL ? FN(ld)(cp) : FN(ldn)(cp, units);
    const FN_V c = FN(fma)(f, cprev, u * cc);
    const FN_V t = FN(tanh)(c);
    FN(lstm_put)(g, units, f, stream);
    FN(lstm_put)(g + n_a, units, u, stream);
    FN(lstm_put)(g + 2 * n_a, units, cc, stream);
    FN(lstm_put)(g + 3 * n_a, units, o, stream);
    FN(lstm_put)(tc, units, t, stream);
    FN(lstm_put)(cn, units, c, 0);
    FN(lstm_put)(hn, units, o * t, 0);
}

/* the tile's share of gx, c_prev and the outputs is touched only after the
 * product: fetch it now, into the level-2 cache (the panel streaming through level
 * 1 during the product would evict it from there); and the next step's input
 * projection, which the projection GEMM left in the last-level cache or memory.
 * A panel's units are one cache line of each. */
FN_TARGET FN_INLINE void FN(lstm_prefetch)(const FN_LSTM_IO *io, ptrdiff_t row, ptrdiff_t u0)
{
    const ptrdiff_t n_a = io->n_a;
    int v;
    for (v = 0; v < 4; v++) {
        if (io->gx != NULL)
            __builtin_prefetch(io->gx + row * 4 * n_a + v * n_a + u0, 0, 2);
        if (io->gx_next != NULL)
            __builtin_prefetch(io->gx_next + row * 4 * n_a + v * n_a + u0, 0, 1);
    }
    __builtin_prefetch(io->c_prev + row * n_a + u0, 0, 2);
    __builtin_prefetch(io->c_next + row * n_a + u0, 1, 2);
    __builtin_prefetch(io->h_next + row * n_a + u0, 1, 2);
    if (!io->stream)
        __builtin_prefetch(io->tanh_c + row * n_a + u0, 1, 2);
}

/* The epilogue of one row of a panel (its units from u0, `units` of them): the
 * pre-activations are the sums (vector gate * FN_LUV + s for the gate's s-th vector
 * of units), plus gx's input projection when the product did not include x. */
FN_TARGET FN_INLINE void FN(lstm_row_cell)(const FN_LSTM_IO *io, ptrdiff_t row, ptrdiff_t u0, int units,
                                           FN_V sums[4 * FN_LUV])
{
    const ptrdiff_t n_a = io->n_a;
    const int stream = io->stream && units == FN_LU;
    int s, v;
    for (s = 0; s < FN_LUV; s++) {
        const ptrdiff_t us = u0 + s * FN_VL;
        const int n = units - s * FN_VL < FN_VL ? units - s * FN_VL : FN_VL;
        FN_V z[4];
        if (n <= 0)
            break;
        for (v = 0; v < 4; v++)
            z[v] = sums[v * FN_LUV + s];
        if (io->gx != NULL) {
            const FN_T *gi = io->gx + row * 4 * n_a + us;
            for (v = 0; v < 4; v++)
                z[v] += n == FN_VL ? FN(ld)(gi + v * n_a) : FN(ldn)(gi + v * n_a, n);
        }
        FN(lstm_cell)(z[0], z[1], z[2], z[3], n, io->g + row * 4 * n_a + us, n_a, io->c_prev + row * n_a + us,
                      io->c_next + row * n_a + us, io->tanh_c + row * n_a + us, io->h_next + row * n_a + us,
                      stream);
    }
}

/* Rows i .. i + mr (mr <= R) of the panel at bp0: the product in a tile of R rows by
 * FN_LGV vectors over the two segments (h_prev against W_h^T, then x_t against
 * W_x^T), for each group of FN_LGV vectors of the panel in turn, then the cells. */
#define FN_LSTM_TILE(R) \
    do { \
        FN_V sums[R][4 * FN_LUV]; \
        const FN_T *a[R]; \
        ptrdiff_t k; \
        int r, v, seg, q; \
        for (r = 0; r < mr; r++) \
            FN(lstm_prefetch)(io, i + r, u0); \
        for (q = 0; q < 4 * FN_LUV; q += FN_LGV) { \
            FN_V acc[R][FN_LGV]; \
            const FN_T *b = bp0 + q * FN_VL; \
            _Pragma("GCC unroll 6") \
            for (r = 0; r < (R); r++) \
                for (v = 0; v < FN_LGV; v++) \
                    acc[r][v] = init[q + v]; \
            for (seg = 0; seg < 2; seg++) { \
                const ptrdiff_t len = seg == 0 ? n_a : n_x; \
                const FN_T *base = seg == 0 ? io->h_prev : io->x; \
                if (len == 0) \
                    continue; \
                _Pragma("GCC unroll 6") \
                for (r = 0; r < (R); r++) \
                    a[r] = base + (i + (r < mr ? r : mr - 1)) * len; \
                for (k = 0; k < len; k++, b += FN_LNR) { \
                    FN_V bv[FN_LGV]; \
                    _Pragma("GCC unroll 4") \
                    for (v = 0; v < FN_LGV; v++) \
                        bv[v] = FN(ld)(b + v * FN_VL); \
                    _Pragma("GCC unroll 6") \
                    for (r = 0; r < (R); r++) { \
                        const FN_V av = FN(bc)(a[r][k]); \
                        _Pragma("GCC unroll 4") \
                        for (v = 0; v < FN_LGV; v++) \
                            acc[r][v] = FN(fma)(av, bv[v], acc[r][v]); \
                    } \
                } \
            } \
            for (r = 0; r < (R); r++) \
                for (v = 0; v < FN_LGV; v++) \
                    sums[r][q + v] = acc[r][v]; \
        } \
        for (r = 0; r < mr; r++) \
            FN(lstm_row_cell)(io, i + r, u0, units, sums[r]); \
    } while (0)

/* The initial sums of the panel's vectors (vector gate * FN_LUV + s: the gate's s-th
 * vector of units from u0): b (x given) or zero. */
FN_TARGET FN_INLINE void FN(lstm_init)(const FN_LSTM_IO *io, ptrdiff_t u0, int units, FN_V init[4 * FN_LUV])
{
    int gate, s;
    for (gate = 0; gate < 4; gate++)
        for (s = 0; s < FN_LUV; s++) {
            const int n = units - s * FN_VL < FN_VL ? units - s * FN_VL : FN_VL;
            init[gate * FN_LUV + s] = io->x != NULL && n > 0 ? FN(ldn)(io->bias + gate * io->n_a + u0 + s * FN_VL, n)
                                                             : FN(bc)(0);
        }
}

/* The matrix-vector kernel of a batch of one row keeps 8 vectors of sums in flight
 * (two FMA units of 4 cycles' latency need 8 independent chains to stay busy): the
 * panel's 4 * FN_LUV vectors FN_LRV at a time, each summed in FN_LRC interleaved
 * chains. AVX-512 (4 vectors a panel): 4 vectors in 2 chains; AVX2 and the 16-byte
 * tiers (8 and 16 vectors a panel): 8 vectors in one chain each, so a pass reads
 * whole lines of the panel, and the h_prev element broadcast for them serves 8 FMAs
 * instead of 2. */
#define FN_LRV (4 * FN_LUV < 8 ? 4 * FN_LUV : 8)
#define FN_LRC (8 / FN_LRV)

/* acc (FN_LRV vectors) += a (len) @ the panel's rows at b (FN_LNR apart), in FN_LRC
 * interleaved chains (one: the terms in order of k). Returns b past the rows. */
FN_TARGET FN_INLINE const FN_T *FN(lstm_row_acc)(ptrdiff_t len, const FN_T *a, const FN_T *b, FN_V acc[FN_LRV])
{
    ptrdiff_t k = 0;
    int v;
#if FN_LRC == 1
    for (; k < len; k++, b += FN_LNR) {
        const FN_V a0 = FN(bc)(a[k]);
        _Pragma("GCC unroll 8")
        for (v = 0; v < FN_LRV; v++)
            acc[v] = FN(fma)(a0, FN(ld)(b + v * FN_VL), acc[v]);
    }
#else
    FN_V d[FN_LRV];
    for (v = 0; v < FN_LRV; v++)
        d[v] = FN(bc)(0);
    for (; k + 1 < len; k += 2, b += 2 * FN_LNR) {
        const FN_V a0 = FN(bc)(a[k]), a1 = FN(bc)(a[k + 1]);
        _Pragma("GCC unroll 4")
        for (v = 0; v < FN_LRV; v++) {
            acc[v] = FN(fma)(a0, FN(ld)(b + v * FN_VL), acc[v]);
            d[v] = FN(fma)(a1, FN(ld)(b + FN_LNR + v * FN_VL), d[v]);
        }
    }
    if (k < len) {
        const FN_V a0 = FN(bc)(a[k]);
        for (v = 0; v < FN_LRV; v++)
            acc[v] = FN(fma)(a0, FN(ld)(b + v * FN_VL), acc[v]);
        b += FN_LNR;
    }
    for (v = 0; v < FN_LRV; v++)
        acc[v] += d[v];
#endif
    return b;
}

/* Row i of panel p alone: the matrix-vector product of the panel, FN_LRV vectors at
 * a time, from the initial sums init (lstm_init's), then its cells. */
FN_TARGET FN_INLINE void FN(lstm_row_at)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p, ptrdiff_t i,
                                         const FN_V init[4 * FN_LUV])
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LU;
    const FN_T *bp = P + p * (n_a + n_x) * FN_LNR;
    const int units = (int)(n_a - u0 < FN_LU ? n_a - u0 : FN_LU);
    FN_V sums[4 * FN_LUV];
    int q;
    FN(lstm_prefetch)(io, i, u0);
    for (q = 0; q < 4 * FN_LUV; q++)
        sums[q] = init[q];
    for (q = 0; q < 4 * FN_LUV; q += FN_LRV) {
        const FN_T *b = FN(lstm_row_acc)(n_a, io->h_prev + i * n_a, bp + q * FN_VL, sums + q);
        if (n_x > 0)
            FN(lstm_row_acc)(n_x, io->x + i * n_x, b, sums + q);
    }
    FN(lstm_row_cell)(io, i, u0, units, sums);
}

/* A batch of one row: the same from b (x given) or zero. */
FN_TARGET FN_UNUSED static void FN(lstm_row)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LU;
    const FN_T *bp = P + p * (n_a + n_x) * FN_LNR;
    const int units = (int)(n_a - u0 < FN_LU ? n_a - u0 : FN_LU);
    FN_V sums[4 * FN_LUV];
    int q;
    FN(lstm_init)(io, u0, units, sums);
    FN(lstm_prefetch)(io, 0, u0);
    for (q = 0; q < 4 * FN_LUV; q += FN_LRV) {
        const FN_T *b = FN(lstm_row_acc)(n_a, io->h_prev, bp + q * FN_VL, sums + q);
        if (n_x > 0)
            FN(lstm_row_acc)(n_x, io->x, b, sums + q);
    }
    FN(lstm_row_cell)(io, 0, u0, units, sums);
}

/* The same for two rows (16-register tiers): FN_LRV / 2 vectors of the panel at a
 * time in one chain each, for both rows, so 8 chains again and each vector loaded
 * once for the two. Returns b past the rows. */
#define FN_LPV (FN_LRV / 2)
FN_TARGET FN_INLINE const FN_T *FN(lstm_pair_acc)(ptrdiff_t len, const FN_T *a0, const FN_T *a1, const FN_T *b,
                                                  FN_V acc0[FN_LPV], FN_V acc1[FN_LPV])
{
    ptrdiff_t k;
    int v;
    for (k = 0; k < len; k++, b += FN_LNR) {
        const FN_V x0 = FN(bc)(a0[k]), x1 = FN(bc)(a1[k]);
        _Pragma("GCC unroll 4")
        for (v = 0; v < FN_LPV; v++) {
            const FN_V bv = FN(ld)(b + v * FN_VL);
            acc0[v] = FN(fma)(x0, bv, acc0[v]);
            acc1[v] = FN(fma)(x1, bv, acc1[v]);
        }
    }
    return b;
}

/* Rows i and i + 1 of panel p (init: the initial sums, lstm_init's), then their cells. */
FN_TARGET FN_INLINE void FN(lstm_pair)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p, ptrdiff_t i,
                                       const FN_V init[4 * FN_LUV])
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LU;
    const FN_T *bp = P + p * (n_a + n_x) * FN_LNR;
    const int units = (int)(n_a - u0 < FN_LU ? n_a - u0 : FN_LU);
    FN_V s0[4 * FN_LUV], s1[4 * FN_LUV];
    int q;
    FN(lstm_prefetch)(io, i, u0);
    FN(lstm_prefetch)(io, i + 1, u0);
    for (q = 0; q < 4 * FN_LUV; q++)
        s0[q] = s1[q] = init[q];
    for (q = 0; q < 4 * FN_LUV; q += FN_LPV) {
        const FN_T *b = FN(lstm_pair_acc)(n_a, io->h_prev + i * n_a, io->h_prev + (i + 1) * n_a, bp + q * FN_VL,
                                          s0 + q, s1 + q);
        if (n_x > 0)
            FN(lstm_pair_acc)(n_x, io->x + i * n_x, io->x + (i + 1) * n_x, b, s0 + q, s1 + q);
    }
    FN(lstm_row_cell)(io, i, u0, units, s0);
    FN(lstm_row_cell)(io, i + 1, u0, units, s1);
}


/* Rows r0 .. r1 of the units of panel p, in tiles of FN_LMR rows (a last tile of at
 * most half that many rows does only the work of half a tile). */
FN_TARGET FN_UNUSED static void FN(lstm_rows)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p, ptrdiff_t r0,
                                              ptrdiff_t r1)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LU;
    const FN_T *bp0 = P + p * (n_a + n_x) * FN_LNR;
    const int units = (int)(n_a - u0 < FN_LU ? n_a - u0 : FN_LU);
    FN_V init[4 * FN_LUV];
    ptrdiff_t i;
    FN(lstm_init)(io, u0, units, init);
    for (i = r0; i < r1; i += FN_LMR) {
        const int mr = (int)(r1 - i < FN_LMR ? r1 - i : FN_LMR);
#if FN_LRC == 1
        /* a partial tile: its rows in pairs, then the odd one alone (the tile's
         * FN_LGV vectors by FN_LMR / 2 rows keep only 6 FMA chains in flight, and
         * would multiply rows that do not exist) */
        if (mr < FN_LMR) {
            int r;
            for (r = 0; r + 1 < mr; r += 2)
                FN(lstm_pair)(io, P, p, i + r, init);
            if (r < mr)
                FN(lstm_row_at)(io, P, p, i + r, init);
            continue;
        }
#else
        /* a partial tile of 4 or 5 rows (AVX-512's 6-row tile: a batch of 64 ends in
         * one) in a tile of its own height: 16 or 20 sums are enough FMA chains, and
         * the full tile would multiply rows that do not exist */
        if (mr == 4 && FN_LMR > 4) {
            FN_LSTM_TILE(4);
            continue;
        }
        if (mr == 5 && FN_LMR > 5) {
            FN_LSTM_TILE(5);
            continue;
        }
#endif
        if (mr > FN_LMR / 2)
            FN_LSTM_TILE(FN_LMR);
        else
            FN_LSTM_TILE(FN_LMR / 2);
    }
}

/* One LSTM step over m rows on `threads` threads: g (m, 4 n_a) gets the gate values
 * [f, u, c~, o], c_next, tanh_c and h_next (m, n_a) are written; P is
 * FN(lstm_pack)'s W^T (K = n_a, or n_a + n_x with x). Tasks are a block of rows by
 * one panel, panel by panel (h_prev, read by every task, stays cached); every unit
 * is computed by one task, so the result does not depend on the thread count. */
FN_TARGET FN_UNUSED static void FN(lstm_step_mt)(ptrdiff_t m, const FN_LSTM_IO *io, const FN_T *P,
                                                 int threads)
{
    const ptrdiff_t panels = (io->n_a + FN_LU - 1) / FN_LU;
    const ptrdiff_t tiles = (m + FN_LMR - 1) / FN_LMR;
    const ptrdiff_t blocks = (tiles + FN_TASK_TILES - 1) / FN_TASK_TILES;
    if (m <= 0 || io->n_a <= 0)
        return;
    if (panels * blocks < 2)
        threads = 1;
    FN_AFFINE_TASKS(panels * blocks,
        ptrdiff_t p = task / blocks, q = task % blocks;
        ptrdiff_t r0 = q * tiles / blocks * FN_LMR, r1 = (q + 1) * tiles / blocks * FN_LMR;
        if (m == 1)
            FN(lstm_row)(io, P, p);
        else
            FN(lstm_rows)(io, P, p, r0, r1 < m ? r1 : m);
        if (io->stream)
            FN(sfence)();  /* the streamed stores are seen by whoever reads them next */
    );
}

/* T steps of FN(lstm_step_mt), the time loop of a sequence: h and c (T + 1 blocks of
 * m x n_a, h_0 and c_0 first) get every step's state, tanh_c (T blocks) tanh(c), g
 * (T blocks of m x 4 n_a) the gate values; g holds each step's input projection on
 * entry (bias included) unless x_in_step, when each step multiplies [h_prev, x_t]
 * (x: T blocks of m x n_x) by the whole of W from the bias b. */
FN_TARGET FN_UNUSED static void FN(lstm_steps)(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_x, ptrdiff_t n_a,
                                               const FN_T *x, const FN_T *b, FN_T *g, FN_T *h, FN_T *c,
                                               FN_T *tanh_c, const FN_T *P, int x_in_step, int stream,
                                               int threads)
{
    const ptrdiff_t step = m * n_a, gstep = 4 * step, panels = (n_a + FN_LU - 1) / FN_LU;
    const ptrdiff_t blocks = m > 1 ? fn_batch_blocks(m, FN_LMR, FN(lstm_packed_size)(n_a, x_in_step ? n_a + n_x : n_a)
                                                                      * sizeof(FN_T), threads) : 0;
    FN_LSTM_IO io;
    ptrdiff_t t;
    io.n_a = n_a;
    io.n_x = n_x;
    io.bias = b;
    io.stream = stream;
#define FN_LSTM_AT(io, t) \
    do { \
        (io).h_prev = h + (t) * step; \
        (io).c_prev = c + (t) * step; \
        (io).x = x_in_step ? x + (t) * m * n_x : NULL; \
        (io).gx = x_in_step ? NULL : g + (t) * gstep; \
        (io).gx_next = !x_in_step && (t) + 1 < T ? g + ((t) + 1) * gstep : NULL; \
        (io).g = g + (t) * gstep; \
        (io).c_next = c + ((t) + 1) * step; \
        (io).tanh_c = tanh_c + (t) * step; \
        (io).h_next = h + ((t) + 1) * step; \
    } while (0)
    if (blocks > 0) {
        /* a block of rows (whole tiles) through every step, panel by panel: one
         * parallel region for the sequence (fn_batch_blocks) */
        const ptrdiff_t tiles = (m + FN_LMR - 1) / FN_LMR;
        FN_AFFINE_TASKS(blocks,
            const ptrdiff_t r0 = task * tiles / blocks * FN_LMR, r1 = (task + 1) * tiles / blocks * FN_LMR;
            FN_LSTM_IO own = io;  /* this task's: the region shares io */
            ptrdiff_t s, p;
            for (s = 0; s < T; s++) {
                FN_LSTM_AT(own, s);
                for (p = 0; p < panels; p++)
                    FN(lstm_rows)(&own, P, p, r0, r1 < m ? r1 : m);
            }
            if (stream)
                FN(sfence)();
        );
        return;
    }
    for (t = 0; t < T; t++) {
        FN_LSTM_AT(io, t);
        FN(lstm_step_mt)(m, &io, P, threads);
    }
#undef FN_LSTM_AT
}

#undef FN_LSTM_TILE
#undef FN_LRV
#undef FN_LRC
#undef FN_LPV
#undef FN_LUV
#undef FN_LU
#undef FN_LNR
