/* The micro-kernels of fn_gemm.h for one tile width: FN_TNV vectors (FN_TNR
 * columns) by FN_MR rows, named FN_TILE(name). fn_gemm.h includes this file twice,
 * for the full tile (FN_NV vectors) and the half tile (FN_NV / 2), which serves
 * panels no wider than half a full one (no include guard). */

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
FN_TARGET FN_INLINE void FN_TILE(tile_store)(FN_V acc[FN_MR][FN_TNV], FN_T *c, ptrdiff_t ldc, int mr,
                                             int nr, int accumulate)
{
    int r, v;
#pragma GCC unroll 6
    for (r = 0; r < FN_MR; r++) {
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

/* one reduction step of the tile: row r gets a_r[k] times the vectors b */
#undef FN_TILE_STEP
#define FN_TILE_STEP(acc, ar, k, b) \
    do { \
        int r_, v_; \
        _Pragma("GCC unroll 6") \
        for (r_ = 0; r_ < FN_MR; r_++) { \
            const FN_V av_ = FN(bc)(ar[r_][k]); \
            _Pragma("GCC unroll 4") \
            for (v_ = 0; v_ < FN_TNV; v_++) \
                acc[r_][v_] += av_ * b[v_]; \
        } \
    } while (0)

/* C[0:mr, 0:nr] (+= when accumulate) init + sum over segments s of
 * sum_{k < seglen} a[s * FN_MR + i][aoff + k] * bp[boff[s] + k * ldbp + j].
 * a holds FN_MR row pointers per segment (rows >= mr repeat a valid one); bp is a
 * panel of FN_TNR readable columns (zero past nr when nr < FN_TNR), row stride
 * ldbp; init is NULL (zeros) or a row of nr elements. */
FN_TARGET FN_UNUSED static void FN_TILE(ukr_nn)(ptrdiff_t nseg, ptrdiff_t seglen, const FN_T *const *a,
                                                ptrdiff_t aoff, const ptrdiff_t *boff, const FN_T *bp,
                                                ptrdiff_t ldbp, const FN_T *init, FN_T *c, ptrdiff_t ldc,
                                                int mr, int nr, int accumulate)
{
    FN_V acc[FN_MR][FN_TNV], iv[FN_TNV];
    ptrdiff_t s, k;
    int r, v;
    /* the tile of C is read or written only at the end: fetch it while the FMAs run */
    for (r = 0; r < mr; r++)
        for (v = 0; v < FN_TNV; v++)
            __builtin_prefetch(c + r * ldc + v * FN_VL, 1, 3);
    if (init != NULL)
        FN_TILE(load_row)(init, nr, iv);
    else
        for (v = 0; v < FN_TNV; v++)
            iv[v] = FN(bc)(0);
#pragma GCC unroll 6
    for (r = 0; r < FN_MR; r++)
#pragma GCC unroll 4
        for (v = 0; v < FN_TNV; v++)
            acc[r][v] = iv[v];
    for (s = 0; s < nseg; s++) {
        const FN_T *ar[FN_MR];
        const FN_T *b = bp + boff[s];
#pragma GCC unroll 6
        for (r = 0; r < FN_MR; r++)
            ar[r] = a[s * FN_MR + r] + aoff;
        for (k = 0; k < seglen; k++, b += ldbp) {
            FN_V bv[FN_TNV];
#pragma GCC unroll 4
            for (v = 0; v < FN_TNV; v++)
                bv[v] = FN(ld)(b + v * FN_VL);
            FN_TILE_STEP(acc, ar, k, bv);
        }
    }
    FN_TILE(tile_store)(acc, c, ldc, mr, nr, accumulate);
}

/* C[0:mr, 0:nr] += sum over runs q of sum_{r < len[q]} A_r[i] * B_r[j], with
 * A_r = ar[q] + aoff + r * sa and B_r = br[q] + boff + r * sb: a tile of a
 * transposed product A^T B whose operands are read along the reduction. Only
 * A_r[0:mr] and B_r[0:nr] are read. */
FN_TARGET FN_UNUSED static void FN_TILE(ukr_tn)(ptrdiff_t nrun, const FN_T *const *ar, const FN_T *const *br,
                                                const ptrdiff_t *len, ptrdiff_t aoff, ptrdiff_t boff,
                                                ptrdiff_t sa, ptrdiff_t sb, FN_T *c, ptrdiff_t ldc, int mr,
                                                int nr)
{
    FN_V acc[FN_MR][FN_TNV];
    ptrdiff_t off[FN_MR], q, k;
    int r, v;
    for (r = 0; r < FN_MR; r++)
        off[r] = r < mr ? r : mr - 1;
#pragma GCC unroll 6
    for (r = 0; r < FN_MR; r++)
#pragma GCC unroll 4
        for (v = 0; v < FN_TNV; v++)
            acc[r][v] = FN(bc)(0);
    for (q = 0; q < nrun; q++) {
        const FN_T *ap = ar[q] + aoff, *b = br[q] + boff;
        const FN_T *rows[FN_MR];
#pragma GCC unroll 6
        for (r = 0; r < FN_MR; r++)
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


#undef FN_TNR
