/* The micro-kernels of fn_gemm.h for one tile shape: FN_TMR rows by FN_TNV vectors
 * (FN_TNR columns), named FN_TILE(name). fn_gemm.h includes this file for the full
 * tile (FN_MR rows, FN_NV vectors), the half-width one (FN_NV / 2 vectors: panels no
 * wider than half a full one) and the short ones (FN_MR / 2 rows: the last rows of a
 * product, when they fill no more than half a tile), so that no tile spends most of
 * its multiply-adds on rows or columns it does not store (no include guard). A
 * convolution's table of row pointers keeps FN_MR per segment whatever the tile. */

#define FN_TNR (FN_TNV * FN_VL)

/* A tile row's first nr (1 .. FN_TNR) columns from p: full vectors, then a partial one. */
FN_TARGET FN_INLINE void FN_TILE(load_row)(const FN_T *p, int nr, FN_V out[FN_TNV])
{
    int v;
#pragma GCC unroll 4
    for (v = 0; v < FN_TNV; v++) {
        const int w = nr - v * FN_VL;
        out[v] = w >= FN_VL ? FN(ld)(p + v * FN_VL) : (w > 0 ? FN(ldn)(p + v * FN_VL, w) : FN(bc)(0));
    }
}

/* C rows 0 .. mr (stride ldc) (+)= the tile, their first nr columns */
FN_TARGET FN_INLINE void FN_TILE(tile_store)(FN_V acc[FN_TMR][FN_TNV], FN_T *c, ptrdiff_t ldc, int mr,
                                             int nr, int accumulate)
{
    int r, v;
#pragma GCC unroll 12
    for (r = 0; r < FN_TMR; r++) {
        FN_T *cr = c + (ptrdiff_t)r * ldc;
        if (r >= mr)
            break;
        if (accumulate) {
            FN_V old[FN_TNV];
            FN_TILE(load_row)(cr, nr, old);
#pragma GCC unroll 4
            for (v = 0; v < FN_TNV; v++)
                acc[r][v] += old[v];
        }
#pragma GCC unroll 4
        for (v = 0; v < FN_TNV; v++) {
            const int w = nr - v * FN_VL;
            if (w >= FN_VL)
                FN(st)(cr + v * FN_VL, acc[r][v]);
            else if (w > 0)
                FN(stn)(cr + v * FN_VL, w, acc[r][v]);
        }
    }
}

/* every row of the tile's accumulators = init's first nr columns (zeros when NULL) */
FN_TARGET FN_INLINE void FN_TILE(tile_init)(const FN_T *init, int nr, FN_V acc[FN_TMR][FN_TNV])
{
    FN_V iv[FN_TNV];
    int r, v;
    if (init != NULL)
        FN_TILE(load_row)(init, nr, iv);
    else
        for (v = 0; v < FN_TNV; v++)
            iv[v] = FN(bc)(0);
#pragma GCC unroll 12
    for (r = 0; r < FN_TMR; r++)
#pragma GCC unroll 4
        for (v = 0; v < FN_TNV; v++)
            acc[r][v] = iv[v];
}

/* one reduction step of the tile: row r gets a_r[k] times the vectors b */
#undef FN_TILE_STEP
#define FN_TILE_STEP(acc, ar, k, b) \
    do { \
        int r_, v_; \
        _Pragma("GCC unroll 12") \
        for (r_ = 0; r_ < FN_TMR; r_++) { \
            const FN_V av_ = FN(bc)(ar[r_][k]); \
            _Pragma("GCC unroll 4") \
            for (v_ = 0; v_ < FN_TNV; v_++) \
                acc[r_][v_] = FN(fma)(av_, b[v_], acc[r_][v_]); \
        } \
    } while (0)

/* C[0:mr, 0:nr] (+= when accumulate) init + sum over segments s of
 * sum_{k < seglen} a[s * FN_TMR + i][aoff + k] * bp[(boff[s] + k) * ldbp + j].
 * a holds FN_MR row pointers per segment (rows >= mr repeat a valid one); bp is a
 * panel of FN_TNR readable columns (zero past nr when nr < FN_TNR), row stride
 * ldbp; init is NULL (zeros) or a row of nr elements. pf_n cache lines from pf (none
 * when pf_n is 0) are fetched into the level-2 cache along the first segment's
 * reduction, two a step (fn_ahead_take). */
FN_TARGET FN_UNUSED static void FN_TILE(ukr_nn)(ptrdiff_t nseg, ptrdiff_t seglen, const FN_T *const *a,
                                                ptrdiff_t aoff, const ptrdiff_t *boff, const FN_T *bp,
                                                ptrdiff_t ldbp, const FN_T *init, FN_T *c, ptrdiff_t ldc,
                                                int mr, int nr, int accumulate, const char *pf, ptrdiff_t pf_n)
{
    FN_V acc[FN_TMR][FN_TNV];
    ptrdiff_t s, k;
    int r, v;
    /* the tile of C is read or written only at the end: fetch it while the FMAs run */
    for (r = 0; r < mr; r++)
        for (v = 0; v < FN_TNV; v++)
            __builtin_prefetch(c + r * ldc + v * FN_VL, 1, 3);
    FN_TILE(tile_init)(init, nr, acc);
    for (s = 0; s < nseg; s++) {
        const FN_T *ar[FN_TMR];
        const FN_T *b = bp + boff[s] * ldbp;
#pragma GCC unroll 12
        for (r = 0; r < FN_TMR; r++)
            ar[r] = a[s * FN_MR + r] + aoff;
        for (k = 0; k < seglen; k++, b += ldbp) {
            FN_V bv[FN_TNV];
            if (2 * k < pf_n) {  /* lines fetched ahead for what runs next: two a step */
                __builtin_prefetch(pf + 128 * k, 0, 2);
                __builtin_prefetch(pf + 128 * k + 64, 0, 2);
            }
#pragma GCC unroll 4
            for (v = 0; v < FN_TNV; v++)
                bv[v] = FN(ld)(b + v * FN_VL);
            FN_TILE_STEP(acc, ar, k, bv);
        }
        pf_n = 0;
    }
    FN_TILE(tile_store)(acc, c, ldc, mr, nr, accumulate);
}

#ifndef FN_TILE_NN_ONLY
/* C[0:mr, 0:nr] += sum over runs q of sum_{r < len[q]} A_r[i] * B_r[j], with
 * A_r = ar[q] + aoff + r * sa and B_r = br[q] + boff + r * sb: a tile of a
 * transposed product A^T B whose operands are read along the reduction. Only
 * A_r[0:mr] and B_r[0:nr] are read. */
FN_TARGET FN_UNUSED static void FN_TILE(ukr_tn)(ptrdiff_t nrun, const FN_T *const *ar, const FN_T *const *br,
                                                const ptrdiff_t *len, ptrdiff_t aoff, ptrdiff_t boff,
                                                ptrdiff_t sa, ptrdiff_t sb, FN_T *c, ptrdiff_t ldc, int mr,
                                                int nr)
{
    FN_V acc[FN_TMR][FN_TNV];
    ptrdiff_t off[FN_TMR], q, k;
    int r, v;
    for (r = 0; r < FN_TMR; r++)
        off[r] = r < mr ? r : mr - 1;
#pragma GCC unroll 12
    for (r = 0; r < FN_TMR; r++)
#pragma GCC unroll 4
        for (v = 0; v < FN_TNV; v++)
            acc[r][v] = FN(bc)(0);
    for (q = 0; q < nrun; q++) {
        const FN_T *ap = ar[q] + aoff, *b = br[q] + boff;
        const FN_T *rows[FN_TMR];
#pragma GCC unroll 12
        for (r = 0; r < FN_TMR; r++)
            rows[r] = ap + off[r];
        if (nr == FN_TNR) {
            for (k = 0; k < len[q]; k++, b += sb) {
                FN_V bv[FN_TNV];
#pragma GCC unroll 4
                for (v = 0; v < FN_TNV; v++)
                    bv[v] = FN(ld)(b + v * FN_VL);
                FN_TILE_STEP(acc, rows, k * sa, bv);
            }
        } else {
            for (k = 0; k < len[q]; k++, b += sb) {
                FN_V bv[FN_TNV];
                FN_TILE(load_row)(b, nr, bv);
                FN_TILE_STEP(acc, rows, k * sa, bv);
            }
        }
    }
    FN_TILE(tile_store)(acc, c, ldc, mr, nr, 1);
}


#endif

#if FN_TMR == FN_MR  /* (the row kernel has no height) */
/* One row of C (+)= init + a (K) @ a packed panel of FN_TNR columns (init: NULL or a
 * row of nr elements): the matrix-vector kernel. */
FN_TARGET FN_UNUSED static void FN_TILE(ukr_row)(ptrdiff_t K, const FN_T *a, const FN_T *bp, const FN_T *init,
                                            FN_T *c, int nr, int accumulate)
{
    FN_V acc[FN_TNV];
    int v;
    if (init != NULL)
        FN_TILE(load_row)(init, nr, acc);
    else
        for (v = 0; v < FN_TNV; v++)
            acc[v] = FN(bc)(0);
    FN_TILE(row_acc)(K, a, bp, acc);
    if (accumulate) {
        FN_V old[FN_TNV];
        FN_TILE(load_row)(c, nr, old);
        for (v = 0; v < FN_TNV; v++)
            acc[v] += old[v];
    }
    for (v = 0; v < FN_TNV; v++) {
        const int w = nr - v * FN_VL;
        if (w >= FN_VL)
            FN(st)(c + v * FN_VL, acc[v]);
        else if (w > 0)
            FN(stn)(c + v * FN_VL, w, acc[v]);
    }
}

#endif

#undef FN_TNR
