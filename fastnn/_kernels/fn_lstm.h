/* A fused LSTM step: the gates' product and the cell's elementwise work in one
 * kernel, next to fn_gemm.h (whose row kernel it shares). Instantiated per CPU tier
 * and element type by fn_kernels.h (no include guard).
 *
 * A step is z = [h_prev, x_t] @ W^T + b followed by the cell's elementwise work.
 * The product's tile holds all four gates of the same FN_VL units: W^T is packed
 * with its columns reordered, panel p holding [f, u, c~, o] of units VL p .. VL p +
 * VL - 1 (FN_LNR = 4 VL columns). So the tile's epilogue has everything a cell
 * needs in registers and writes the gate values, c, tanh(c) and h directly: no pass
 * over a gate buffer after the product, and one parallel region per step instead
 * of two. A tile is FN_LMR rows by the four gate vectors (6 rows on AVX-512, 3 on
 * the 16-register tiers).
 *
 * The input part x_t @ W_x^T + b is either in gx already (the input projection of
 * all steps, one GEMM before the time loop) or computed here in the same tile, the
 * product running over K = n_a + n_x (x_t given): at a batch of a few rows up the
 * second is faster, since the projection would write the pre-activations of every
 * step to memory only to read them back one step at a time.
 */

#define FN_LNR (4 * FN_VL)   /* columns per panel: one vector of each gate */

/* Elements in the packed form of an LSTM's W^T for a product over K inputs (n_a:
 * h only; n_a + n_x: h and x), 4 * n_a gate columns. */
FN_UNUSED static inline size_t FN(lstm_packed_size)(ptrdiff_t n_a, ptrdiff_t K)
{
    return (size_t)((n_a + FN_VL - 1) / FN_VL) * FN_LNR * (size_t)(K > 0 ? K : 0);
}

/* Pack W^T for FN(lstm_step_mt): W (4 * n_a rows, row stride ldw) holds W_h in its
 * first n_a columns and W_x after them; the first K columns are packed, panel p
 * holding W[gate * n_a + VL p + j, k] at P[(p * K + k) * FN_LNR + gate * VL + j], zero
 * for units past n_a: a VL x VL transpose per gate and block of VL k. */
FN_TARGET FN_UNUSED static void FN(lstm_pack)(ptrdiff_t n_a, ptrdiff_t K, const FN_T *W, ptrdiff_t ldw,
                                              FN_T *P)
{
    const ptrdiff_t panels = (n_a + FN_VL - 1) / FN_VL;
    ptrdiff_t p, k0, gate;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t u0 = p * FN_VL;
        const int units = (int)(n_a - u0 < FN_VL ? n_a - u0 : FN_VL);
        for (k0 = 0; k0 < K; k0 += FN_VL)
            for (gate = 0; gate < 4; gate++)
                FN(transpose)(W + (gate * n_a + u0) * ldw + k0, ldw, units, (int)(K - k0 < FN_VL ? K - k0 : FN_VL),
                              P + (p * K + k0) * FN_LNR + gate * FN_VL, FN_LNR);
    }
}

/* One vector to p, `units` lanes of it: past the caches when asked and the vector
 * is a whole aligned cache line. A narrower vector fills part of a line whose rest
 * another panel writes much later, and a write-combining buffer that goes out
 * partial costs far more than streaming saves (the AVX2 L1 forward ran ~30 %
 * slower). */
FN_TARGET FN_INLINE void FN(lstm_put)(FN_T *p, int units, FN_V v, int stream)
{
    if (units == FN_VL) {
        if (stream && FN_VBYTES >= 64 && ((uintptr_t)p & 63) == 0)
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
    const FN_V c = f * cprev + u * cc;
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
 * projection, which the projection GEMM left in the last-level cache or memory */
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

/* The epilogue of one row: its pre-activations are the sums, plus gx's input
 * projection when the product did not include x. */
FN_TARGET FN_INLINE void FN(lstm_row_cell)(const FN_LSTM_IO *io, ptrdiff_t row, ptrdiff_t u0, int units,
                                           FN_V sums[4])
{
    const ptrdiff_t n_a = io->n_a;
    int v;
    if (io->gx != NULL) {
        const FN_T *gi = io->gx + row * 4 * n_a + u0;
        for (v = 0; v < 4; v++)
            sums[v] += units == FN_VL ? FN(ld)(gi + v * n_a) : FN(ldn)(gi + v * n_a, units);
    }
    FN(lstm_cell)(sums[0], sums[1], sums[2], sums[3], units, io->g + row * 4 * n_a + u0, n_a,
                  io->c_prev + row * n_a + u0, io->c_next + row * n_a + u0, io->tanh_c + row * n_a + u0,
                  io->h_next + row * n_a + u0, io->stream);
}

/* Rows i .. i + mr (mr <= R) of panel p: the product in an R-row tile over the two
 * segments (h_prev against W_h^T, then x_t against W_x^T), then the cell. */
#define FN_LSTM_TILE(R) \
    do { \
        FN_V acc[R][4]; \
        const FN_T *a[R]; \
        const FN_T *b = bp0; \
        ptrdiff_t k; \
        int r, v, seg; \
        for (r = 0; r < mr; r++) \
            FN(lstm_prefetch)(io, i + r, u0); \
        _Pragma("GCC unroll 6") \
        for (r = 0; r < (R); r++) \
            for (v = 0; v < 4; v++) \
                acc[r][v] = init[v]; \
        for (seg = 0; seg < 2; seg++) { \
            const ptrdiff_t len = seg == 0 ? n_a : n_x; \
            const FN_T *base = seg == 0 ? io->h_prev : io->x; \
            if (len == 0) \
                continue; \
            _Pragma("GCC unroll 6") \
            for (r = 0; r < (R); r++) \
                a[r] = base + (i + (r < mr ? r : mr - 1)) * len; \
            for (k = 0; k < len; k++, b += FN_LNR) { \
                FN_V bv[4]; \
                _Pragma("GCC unroll 4") \
                for (v = 0; v < 4; v++) \
                    bv[v] = FN(ld)(b + v * FN_VL); \
                _Pragma("GCC unroll 6") \
                for (r = 0; r < (R); r++) { \
                    const FN_V av = FN(bc)(a[r][k]); \
                    _Pragma("GCC unroll 4") \
                    for (v = 0; v < 4; v++) \
                        acc[r][v] += av * bv[v]; \
                } \
            } \
        } \
        for (r = 0; r < mr; r++) \
            FN(lstm_row_cell)(io, i + r, u0, units, acc[r]); \
    } while (0)

/* The four gates' initial sums of the units of a panel: b (x given) or zero. */
FN_TARGET FN_INLINE void FN(lstm_init)(const FN_LSTM_IO *io, ptrdiff_t u0, int units, FN_V init[4])
{
    int v;
    for (v = 0; v < 4; v++)
        init[v] = io->x != NULL ? FN(ldn)(io->bias + v * io->n_a + u0, units) : FN(bc)(0);
}

/* Rows r0 .. r1 of the units of panels p0 .. p1, in tiles of FN_LMR rows (a last
 * tile of at most half that many rows does only the work of half a tile); each
 * tile of rows goes through all the panels before the next, so the parts of a
 * cache line of the outputs that neighbouring panels write are written together. */
FN_TARGET FN_UNUSED static void FN(lstm_rows)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p0, ptrdiff_t p1,
                                              ptrdiff_t r0, ptrdiff_t r1)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0;
    ptrdiff_t i, p;
    for (i = r0; i < r1; i += FN_LMR) {
        const int mr = (int)(r1 - i < FN_LMR ? r1 - i : FN_LMR);
        for (p = p0; p < p1; p++) {
            const ptrdiff_t u0 = p * FN_VL;
            const FN_T *bp0 = P + p * (n_a + n_x) * FN_LNR;
            const int units = (int)(n_a - u0 < FN_VL ? n_a - u0 : FN_VL);
            FN_V init[4];
            FN(lstm_init)(io, u0, units, init);
            if (mr > FN_LMR / 2)
                FN_LSTM_TILE(FN_LMR);
            else
                FN_LSTM_TILE(FN_LMR / 2);
        }
    }
}

/* A batch of one row: the matrix-vector kernel, started from b (x given) or zero. */
FN_TARGET FN_UNUSED static void FN(lstm_row)(const FN_LSTM_IO *io, const FN_T *P, ptrdiff_t p)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_VL;
    const FN_T *bp = P + p * (n_a + n_x) * FN_LNR;
    const int units = (int)(n_a - u0 < FN_VL ? n_a - u0 : FN_VL);
    FN_V sums[4];
    FN(lstm_init)(io, u0, units, sums);
    FN(lstm_prefetch)(io, 0, u0);
    FN(row_acc4)(n_a, io->h_prev, bp, sums);
    if (n_x > 0)
        FN(row_acc4)(n_x, io->x, bp + n_a * FN_LNR, sums);
    FN(lstm_row_cell)(io, 0, u0, units, sums);
}

/* Panels a task takes together: as many as write one cache line of an output row
 * (one AVX-512 vector, two AVX2 ones) */
#define FN_LSTM_GROUP (FN_VBYTES >= 64 ? 1 : 64 / FN_VBYTES)

/* One LSTM step over m rows on `threads` threads: g (m, 4 n_a) gets the gate values
 * [f, u, c~, o], c_next, tanh_c and h_next (m, n_a) are written; P is
 * FN(lstm_pack)'s W^T (K = n_a, or n_a + n_x with x). Tasks are a block of rows by
 * a group of panels of VL units, group by group (h_prev, read by every task, stays
 * cached); every unit is computed by one task, so the result does not depend on
 * the thread count. */
FN_TARGET FN_UNUSED static void FN(lstm_step_mt)(ptrdiff_t m, const FN_LSTM_IO *io, const FN_T *P,
                                                 int threads)
{
    const ptrdiff_t panels = (io->n_a + FN_VL - 1) / FN_VL;
    const ptrdiff_t groups = (panels + FN_LSTM_GROUP - 1) / FN_LSTM_GROUP;
    const ptrdiff_t tiles = (m + FN_LMR - 1) / FN_LMR;
    const ptrdiff_t blocks = (tiles + FN_TASK_TILES - 1) / FN_TASK_TILES;
    if (m <= 0 || io->n_a <= 0)
        return;
    if (groups * blocks < 2)
        threads = 1;
    FN_TASKS(groups * blocks,
        ptrdiff_t grp = (io->reverse ? groups * blocks - 1 - task : task) / blocks, q = task % blocks;
        ptrdiff_t r0 = q * tiles / blocks * FN_LMR, r1 = (q + 1) * tiles / blocks * FN_LMR;
        ptrdiff_t p0 = grp * FN_LSTM_GROUP, p1 = p0 + FN_LSTM_GROUP < panels ? p0 + FN_LSTM_GROUP : panels, p;
        if (m == 1)
            for (p = p0; p < p1; p++)
                FN(lstm_row)(io, P, p);
        else
            FN(lstm_rows)(io, P, p0, p1, r0, r1 < m ? r1 : m);
        if (io->stream)
            FN(sfence)();  /* the streamed stores are seen by whoever reads them next */
    );
}

#undef FN_LSTM_TILE
