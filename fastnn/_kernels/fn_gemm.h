/* fastnn's one matrix-multiply core: register-tiled micro-kernels and the drivers
 * of GEMMs and convolutions built on them. Written once over vector extensions;
 * fn_kernels.h instantiates it per CPU tier and element type (no include guard).
 *
 * Why not BLAS: the products of a convolution or a recurrent step are thin (64 to
 * 256 output columns) and, for a convolution, their left operand is the im2col
 * matrix, which BLAS needs written out in memory first. These kernels read the
 * left operand through a table of row pointers instead, so a convolution reads its
 * input pixels where they lie (an "implicit GEMM": no im2col buffer at all), and
 * the right operand is packed once per call into panels of FN_NR columns.
 *
 * A tile of the result is FN_MR rows by FN_NR = FN_NV vectors, held in registers:
 * 6 x 4 vectors of the 32 AVX-512 registers, 6 x 2 of the 16 AVX2 (or SSE/NEON)
 * ones. Two micro-kernels:
 *   ukr_nn  C_tile = init + sum_k A[i][k] * P[k][j]    (A rows through pointers,
 *           the reduction cut into segments, e.g. one per kernel tap)
 *   ukr_tn  C_tile += sum_r a_r[i] * b_r[j]             (both operands read along
 *           the reduction in runs of fixed stride: a weight gradient)
 * No function reads or writes outside the rows, columns and pointers it is given:
 * partial tiles use the tier's masked loads and stores, and rows past the end of
 * a tile repeat the last valid row's pointer (their results are never stored).
 */

#define FN_NR (FN_NV * FN_VL)   /* columns per packed panel */
#define FN_TILES 16              /* tiles per block of a convolution's pointer table */

/* The packed form of B (K, N): panels of FN_NR columns, panel p holding
 * B[k, p FN_NR + j] at P[p K FN_NR + k w + j] with w its width, FN_NR, except a last,
 * partial panel no wider than half a panel, which is packed FN_NR / 2 wide (the half
 * tile runs it: no multiply-adds on columns of zeros); columns past N are zero. */
FN_INLINE ptrdiff_t FN(panel_width)(ptrdiff_t N, ptrdiff_t p)
{
    const ptrdiff_t rest = N - p * FN_NR;
    return rest >= FN_NR || rest > FN_NR / 2 ? FN_NR : FN_NR / 2;
}

/* Elements in the packed form of a (K, N) matrix. */
FN_UNUSED static inline size_t FN(packed_size)(ptrdiff_t K, ptrdiff_t N)
{
    const ptrdiff_t full = N / FN_NR;
    const ptrdiff_t width = full * FN_NR + (N > full * FN_NR ? FN(panel_width)(N, full) : 0);
    return (size_t)width * (size_t)(K > 0 ? K : 0);
}

/* Pack B (K, N), element (k, n) at src[k * sk + n * sn], in the packed form above. */
FN_TARGET FN_UNUSED static void FN(pack)(ptrdiff_t K, ptrdiff_t N, const FN_T *src, ptrdiff_t sk,
                                         ptrdiff_t sn, FN_T *P)
{
    ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, p, k, j;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t width = N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR, w = FN(panel_width)(N, p);
        FN_T *out = P + p * K * FN_NR;
        if (sn == 1) {
            for (k = 0; k < K; k++) {
                memcpy(out + k * w, src + k * sk + p * FN_NR, (size_t)width * sizeof(FN_T));
                for (j = width; j < w; j++)
                    out[k * w + j] = 0;
            }
        } else {
            /* column by column, so a transposed source is read along its rows */
            for (j = 0; j < w; j++) {
                if (j < width) {
                    const FN_T *col = src + (p * FN_NR + j) * sn;
                    for (k = 0; k < K; k++)
                        out[k * w + j] = col[k * sk];
                } else {
                    for (k = 0; k < K; k++)
                        out[k * w + j] = 0;
                }
            }
        }
    }
}

/* FN(pack) of B = S^T with S (N, K) at row stride ls (a weight matrix used
 * transposed), by VL x VL transposes in registers: several times the speed of the
 * element-by-element copy, which shows in the per-call cost of a short sequence. */
FN_TARGET FN_UNUSED static void FN(pack_t)(ptrdiff_t K, ptrdiff_t N, const FN_T *S, ptrdiff_t ls, FN_T *P)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR;
    ptrdiff_t p, k0, v;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t w = FN(panel_width)(N, p);
        for (k0 = 0; k0 < K; k0 += FN_VL)
            for (v = 0; v < w; v += FN_VL) {
                const ptrdiff_t n0 = p * FN_NR + v;
                const int rows = (int)(N - n0 < 0 ? 0 : (N - n0 < FN_VL ? N - n0 : FN_VL));
                FN(transpose)(S + (rows > 0 ? n0 : 0) * ls + k0, ls, rows, (int)(K - k0 < FN_VL ? K - k0 : FN_VL),
                              P + p * K * FN_NR + k0 * w + v, w);
            }
    }
}

/* acc += a (K) @ one packed panel of NV_ vectors: two interleaved chains keep twice
 * the FMAs in flight (a matrix-vector step, where a tile of FN_MR rows would waste
 * most of its work). row_acc: a GEMM panel; row_acc_h: a half one. */
#define FN_DEFINE_ROW_ACC(NAME, NV_) \
    FN_TARGET FN_INLINE void FN(NAME)(ptrdiff_t K, const FN_T *a, const FN_T *bp, FN_V acc[NV_]) \
    { \
        FN_V c[NV_], d[NV_]; \
        ptrdiff_t k = 0; \
        int v; \
        _Pragma("GCC unroll 4") \
        for (v = 0; v < (NV_); v++) { \
            c[v] = acc[v]; \
            d[v] = FN(bc)(0); \
        } \
        for (; k + 1 < K; k += 2, bp += 2 * (NV_) * FN_VL) { \
            const FN_V a0 = FN(bc)(a[k]), a1 = FN(bc)(a[k + 1]); \
            _Pragma("GCC unroll 4") \
            for (v = 0; v < (NV_); v++) { \
                c[v] = FN(fma)(a0, FN(ld)(bp + v * FN_VL), c[v]); \
                d[v] = FN(fma)(a1, FN(ld)(bp + ((NV_) + v) * FN_VL), d[v]); \
            } \
        } \
        if (k < K) { \
            const FN_V a0 = FN(bc)(a[k]); \
            _Pragma("GCC unroll 4") \
            for (v = 0; v < (NV_); v++) \
                c[v] = FN(fma)(a0, FN(ld)(bp + v * FN_VL), c[v]); \
        } \
        _Pragma("GCC unroll 4") \
        for (v = 0; v < (NV_); v++) \
            acc[v] = c[v] + d[v]; \
    }
FN_DEFINE_ROW_ACC(row_acc, FN_NV)
FN_DEFINE_ROW_ACC(row_acc_h, FN_NV / 2)
#undef FN_DEFINE_ROW_ACC

#define FN_TMR FN_MR
#define FN_TNV FN_NV
#define FN_TILE(name) FN(name)
#include "fn_tile.h"
#undef FN_TNV
#undef FN_TILE
/* the half-width tile: FN(ukr_nn_h), FN(ukr_tn_h), FN(ukr_row_h) */
#define FN_TNV (FN_NV / 2)
#define FN_TILE(name) FN(name##_h)
#include "fn_tile.h"
#undef FN_TNV
#undef FN_TILE
#undef FN_TMR
/* the short tiles: FN(ukr_nn_s), FN(ukr_nn_sh), ... */
#define FN_TMR (FN_MR / 2)
#define FN_TNV FN_NV
#define FN_TILE(name) FN(name##_s)
#include "fn_tile.h"
#undef FN_TNV
#undef FN_TILE
#define FN_TNV (FN_NV / 2)
#define FN_TILE(name) FN(name##_sh)
#include "fn_tile.h"
#undef FN_TNV
#undef FN_TILE
#undef FN_TMR
/* the 4-row tile FN(ukr_nn_q) (FN_MR - 2 rows): a product's last, partial tile of
 * that many rows (64 rows on 6-row tiles end in one: an LSTM's batch of 64) runs
 * without multiplying two rows that do not exist; its 16 (AVX-512) or 8 sums are
 * still enough independent chains for the multiply-add latency. */
#define FN_TMR (FN_MR - 2)
#define FN_TNV FN_NV
#define FN_TILE(name) FN(name##_q)
#define FN_TILE_NN_ONLY
#include "fn_tile.h"
#undef FN_TILE_NN_ONLY
#undef FN_TNV
#undef FN_TILE
#undef FN_TMR
/* the tall tile FN(ukr_nn_t): FN_MRT rows (at most 2 FN_MR) on a half-width panel.
 * A half tile of FN_MR rows leaves registers idle and, on the 16-register tiers, has
 * too few independent sums to hide the multiply-add latency: there the tall tile has
 * twice its rows (the full tile's count of accumulators); on AVX-512, 8 rows, which
 * divide the usual row counts (a 32-row product is four tiles, not five and a bit).
 * Plain products only (one segment: FN(gemm_panel)), since a convolution's pointer
 * table holds FN_MR rows per segment. */
#define FN_TMR FN_MRT
#define FN_TNV (FN_NV / 2)
#define FN_TILE(name) FN(name##_t)
#define FN_TILE_NN_ONLY
#include "fn_tile.h"
#undef FN_TILE_NN_ONLY
#undef FN_TNV
#undef FN_TILE
#undef FN_TMR
#undef FN_HAVE_VTILE
#undef FN_MRV
#if FN_NV == 4
/* the one-vector tile FN(ukr_nn_v) (AVX-512): FN_MRV rows by FN_VL columns, for a
 * product of at most FN_VL columns, which a half-width panel (2 FN_VL) would run
 * with at least half its multiply-adds on columns of zeros; its B is a panel FN_VL
 * wide (FN(gemm_vtile)). The 16-register tiers' half-width panel is one vector
 * already. */
#define FN_HAVE_VTILE 1
#define FN_MRV 12
#define FN_TMR FN_MRV
#define FN_TNV 1
#define FN_TILE(name) FN(name##_v)
#define FN_TILE_NN_ONLY
#include "fn_tile.h"
#undef FN_TILE_NN_ONLY
#undef FN_TNV
#undef FN_TILE
#undef FN_TMR
#else
#define FN_HAVE_VTILE 0
#endif

/* C[0:mr, 0:nr] (+)= ... (see ukr_nn in fn_tile.h) on the tile that fits the rows
 * and the panel: half height when mr <= FN_MR / 2, FN_MR - 2 rows when mr is that
 * (full width), half width for a panel packed FN_NR / 2 wide (ldbp) or no wider than
 * that. */
FN_TARGET FN_INLINE void FN(ukr_nn_any)(ptrdiff_t nseg, ptrdiff_t seglen, const FN_T *const *a, ptrdiff_t aoff,
                                        const ptrdiff_t *boff, const FN_T *bp, ptrdiff_t ldbp, const FN_T *init,
                                        FN_T *c, ptrdiff_t ldc, int mr, int nr, int accumulate, const char *pf,
                                        ptrdiff_t pf_n)
{
    const int narrow = nr <= FN_NR / 2 || ldbp == FN_NR / 2, low = mr <= FN_MR / 2;
    if (low && narrow)
        FN(ukr_nn_sh)(nseg, seglen, a, aoff, boff, bp, ldbp, init, c, ldc, mr, nr, accumulate, pf, pf_n);
    else if (low)
        FN(ukr_nn_s)(nseg, seglen, a, aoff, boff, bp, ldbp, init, c, ldc, mr, nr, accumulate, pf, pf_n);
    else if (mr == FN_MR - 2 && !narrow)
        FN(ukr_nn_q)(nseg, seglen, a, aoff, boff, bp, ldbp, init, c, ldc, mr, nr, accumulate, pf, pf_n);
    else if (narrow)
        FN(ukr_nn_h)(nseg, seglen, a, aoff, boff, bp, ldbp, init, c, ldc, mr, nr, accumulate, pf, pf_n);
    else
        FN(ukr_nn)(nseg, seglen, a, aoff, boff, bp, ldbp, init, c, ldc, mr, nr, accumulate, pf, pf_n);
}

/* the same for ukr_tn */
FN_TARGET FN_INLINE void FN(ukr_tn_any)(ptrdiff_t nrun, const FN_T *const *ar, const FN_T *const *br,
                                        const ptrdiff_t *len, ptrdiff_t aoff, ptrdiff_t boff, ptrdiff_t sa,
                                        ptrdiff_t sb, FN_T *c, ptrdiff_t ldc, int mr, int nr)
{
    const int narrow = nr <= FN_NR / 2, low = mr <= FN_MR / 2;
    if (low && narrow)
        FN(ukr_tn_sh)(nrun, ar, br, len, aoff, boff, sa, sb, c, ldc, mr, nr);
    else if (low)
        FN(ukr_tn_s)(nrun, ar, br, len, aoff, boff, sa, sb, c, ldc, mr, nr);
    else if (narrow)
        FN(ukr_tn_h)(nrun, ar, br, len, aoff, boff, sa, sb, c, ldc, mr, nr);
    else
        FN(ukr_tn)(nrun, ar, br, len, aoff, boff, sa, sb, c, ldc, mr, nr);
}

/* Where the panels of a right operand B (K, N) lie: panel p (columns p FN_NR ..)
 * at B + p * step, k rows ld apart, except the last, partial one (when N is not a
 * multiple of FN_NR), at tail with rows tail_ld apart. raw (NULL: none): the full
 * panels are still to be packed there (B writable, ld FN_NR) from raw + p FN_NR,
 * rows raw_ld apart, by the first tile that multiplies each (one thread only). */
typedef struct {
    const FN_T *B, *tail, *raw;
    ptrdiff_t step, ld, tail_ld, raw_ld;
} FN(panels);

/* The panels of FN(pack)'s P. */
FN_TARGET FN_INLINE FN(panels) FN(packed_panels)(const FN_T *P, ptrdiff_t K, ptrdiff_t N)
{
    FN(panels) src;
    src.B = P;
    src.step = K * FN_NR;
    src.ld = FN_NR;
    src.tail = P + N / FN_NR * src.step;
    src.tail_ld = FN(panel_width)(N, N / FN_NR);
    src.raw = NULL;
    src.raw_ld = 0;
    return src;
}

/* FN(ukr_nn)'s full tile over one segment of kc steps, its full-width panel read in
 * place from src (rows ldsrc apart) and written packed to P (rows FN_NR apart) as it
 * goes: a product's first tile on a panel packs the panel, its loads and stores
 * hidden among the multiply-adds, where packing before the product cost a 128^3
 * product a tenth of its time. Sums exactly as FN(ukr_nn). */
FN_TARGET FN_UNUSED static void FN(ukr_nn_packing)(ptrdiff_t kc, const FN_T *const *a, ptrdiff_t aoff,
                                                   const FN_T *src, ptrdiff_t ldsrc, FN_T *P, const FN_T *init,
                                                   FN_T *c, ptrdiff_t ldc, int mr, int accumulate)
{
    FN_V acc[FN_MR][FN_NV];
    const FN_T *ar[FN_MR];
    ptrdiff_t k;
    int r, v;
    FN(tile_init)(init, FN_NR, acc);
#pragma GCC unroll 6
    for (r = 0; r < FN_MR; r++)
        ar[r] = a[r] + aoff;
    for (k = 0; k < kc; k++, src += ldsrc, P += FN_NR) {
        FN_V bv[FN_NV];
#pragma GCC unroll 4
        for (v = 0; v < FN_NV; v++) {
            bv[v] = FN(ld)(src + v * FN_VL);
            FN(st)(P + v * FN_VL, bv[v]);
        }
#pragma GCC unroll 6
        for (r = 0; r < FN_MR; r++) {
            const FN_V av = FN(bc)(ar[r][k]);
#pragma GCC unroll 4
            for (v = 0; v < FN_NV; v++)
                acc[r][v] = FN(fma)(av, bv[v], acc[r][v]);
        }
    }
    FN(tile_store)(acc, c, ldc, mr, FN_NR, accumulate);
}

/* Long reductions are cut so that a tile's share of the panel stays in the level-2
 * cache. */
#define FN_KC 2048

/* C (M, nr) = A (M, K) @ one panel (nr columns, row stride ldbp) (+ bias, a row of nr,
 * when not NULL) (+ C when accumulate); one thread. Rows go in blocks whose A rows
 * stay cached across the reduction's chunks; a panel no wider than half a full one
 * runs on the tall tile (the half tile for its last FN_MR rows or fewer). */
FN_TARGET FN_UNUSED static void FN(gemm_panel_ahead)(ptrdiff_t M, ptrdiff_t K, const FN_T *A, ptrdiff_t lda,
                                                     const FN_T *bp, ptrdiff_t ldbp, int nr, const FN_T *bias,
                                                     FN_T *C, ptrdiff_t ldc, int accumulate, const FN_T *raw,
                                                     ptrdiff_t ldraw, fn_ahead *ahead)
{
    const ptrdiff_t MB = FN_MR * FN_TILES, zero = 0;
    const int narrow = nr <= FN_NR / 2 || ldbp == FN_NR / 2;
    ptrdiff_t m0, i, k0, r;
    int mr;
    const FN_T *rows[FN_MRT > FN_MR ? FN_MRT : FN_MR];
    if (M <= 0 || nr <= 0)
        return;
    if (K <= 0) {
        for (r = 0; r < M; r++) {
            if (!accumulate)
                memset(C + r * ldc, 0, (size_t)nr * sizeof(FN_T));
            if (bias != NULL)
                for (i = 0; i < nr; i++)
                    C[r * ldc + i] += bias[i];
        }
        return;
    }
    for (m0 = 0; m0 < M; m0 += MB) {
        ptrdiff_t m1 = M - m0 < MB ? M : m0 + MB;
        for (k0 = 0; k0 < K; k0 += FN_KC) {
            ptrdiff_t kc = K - k0 < FN_KC ? K - k0 : FN_KC;
            const FN_T *init = k0 == 0 ? bias : NULL;
            for (i = m0; i < m1; i += mr) {
                /* more rows than a tile on a narrow panel: the tall tile */
                const int tall = narrow && m1 - i > FN_MR, height = tall ? FN_MRT : FN_MR;
                mr = (int)(m1 - i < height ? m1 - i : height);
                for (r = 0; r < height; r++)
                    rows[r] = A + (i + (r < mr ? r : mr - 1)) * lda;
                ptrdiff_t pf_n;
                const char *pf = fn_ahead_take(ahead, 2 * kc, &pf_n);
                if (raw != NULL && m0 == 0 && i == 0 && nr == FN_NR) {
                    /* the panel's first tile packs it (FN_MR rows whatever mr) */
                    mr = (int)(m1 - i < FN_MR ? m1 - i : FN_MR);
                    for (r = 0; r < FN_MR; r++)
                        rows[r] = A + (i + (r < mr ? r : mr - 1)) * lda;
                    FN(ukr_nn_packing)(kc, rows, k0, raw + k0 * ldraw, ldraw, (FN_T *)bp + k0 * ldbp, init,
                                       C + i * ldc, ldc, mr, accumulate || k0 > 0);
                } else if (tall)
                    FN(ukr_nn_t)(1, kc, rows, k0, &zero, bp + k0 * ldbp, ldbp, init, C + i * ldc, ldc, mr, nr,
                                 accumulate || k0 > 0, pf, pf_n);
                else
                    FN(ukr_nn_any)(1, kc, rows, k0, &zero, bp + k0 * ldbp, ldbp, init, C + i * ldc, ldc, mr,
                                   nr, accumulate || k0 > 0, pf, pf_n);
            }
        }
    }
}

/* FN(gemm_panel_ahead) fetching nothing ahead. */
FN_TARGET FN_UNUSED static void FN(gemm_panel)(ptrdiff_t M, ptrdiff_t K, const FN_T *A, ptrdiff_t lda,
                                               const FN_T *bp, ptrdiff_t ldbp, int nr, const FN_T *bias,
                                               FN_T *C, ptrdiff_t ldc, int accumulate)
{
    FN(gemm_panel_ahead)(M, K, A, lda, bp, ldbp, nr, bias, C, ldc, accumulate, NULL, 0, NULL);
}

/* C (M, N) = A (M, K) @ B (panels src) (+ bias) (+ C when accumulate) on `threads`
 * OpenMP threads (when the build has OpenMP): tasks of a block of about
 * FN_TASK_TILES tiles of rows by one panel, each written by one thread. Blocks
 * differ by at most one tile (a last block of 16 rows next to ones of 48 would
 * leave a thread idle for a third of a recurrent step). When A fits in half the
 * level-2 cache (a recurrent step) the tasks go panel by panel, so each thread keeps
 * its panel cached across all rows and reads only its share of B from the shared
 * cache; a larger A goes block by block, so a block of A stays cached across the
 * panels. A tile's sums do not depend on the blocks or their order, so neither does
 * the result on the thread count. A single row takes the matrix-vector kernel
 * (packed panels only). ahead (NULL: none): lines to fetch between the tiles, on one
 * thread only. */
#define FN_TASK_TILES 8
#define FN_A_CACHED (512 * 1024)
FN_TARGET FN_UNUSED static void FN(gemm_src_mt)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A,
                                                ptrdiff_t lda, const FN(panels) *src, const FN_T *bias, FN_T *C,
                                                ptrdiff_t ldc, int accumulate, int threads, fn_ahead *ahead)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, full = N / FN_NR, tiles = (M + FN_MR - 1) / FN_MR;
    const ptrdiff_t blocks = (tiles + FN_TASK_TILES - 1) / FN_TASK_TILES;
    const int by_panel = (double)M * (double)K * sizeof(FN_T) <= FN_A_CACHED;
    if (M <= 0 || N <= 0)
        return;
    if (panels * blocks < 2)
        threads = 1;
    if (src->raw != NULL)
        threads = 1;  /* a panel is packed by the first tile that uses it */
    if (threads > 1)
        ahead = NULL;
    else if (ahead != NULL)  /* spread over the product's tiles */
        ahead->per_tile = 1 + (ahead->end[0] - ahead->cur[0] + ahead->end[1] - ahead->cur[1] + ahead->end[2]
                               - ahead->cur[2]) / 64 / (panels * tiles);
    FN_TASKS(panels * blocks,
        ptrdiff_t p = by_panel ? task / blocks : task % panels;
        ptrdiff_t q = by_panel ? task % blocks : task / panels;
        ptrdiff_t r0 = q * tiles / blocks * FN_MR, r1 = (q + 1) * tiles / blocks * FN_MR;
        int width = (int)(N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR);
        const FN_T *bp = p < full ? src->B + p * src->step : src->tail;
        ptrdiff_t ldbp = p < full ? src->ld : src->tail_ld;
        if (r1 > M)
            r1 = M;
        if (M == 1 && K > 0 && ldbp == FN_NR)
            FN(ukr_row)(K, A, bp, bias != NULL ? bias + p * FN_NR : NULL, C + p * FN_NR, width, accumulate);
        else if (M == 1 && K > 0 && ldbp == FN_NR / 2)
            FN(ukr_row_h)(K, A, bp, bias != NULL ? bias + p * FN_NR : NULL, C + p * FN_NR, width, accumulate);
        else
            FN(gemm_panel_ahead)(r1 - r0, K, A + r0 * lda, lda, bp, ldbp, width,
                                 bias != NULL ? bias + p * FN_NR : NULL, C + r0 * ldc + p * FN_NR, ldc, accumulate,
                                 src->raw != NULL && p < full && q == 0 ? src->raw + p * FN_NR : NULL, src->raw_ld, ahead);
    );
}

/* FN(gemm_src_mt) with B packed by FN(pack) into P. */
FN_TARGET FN_UNUSED static void FN(gemm_nn_mt)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A,
                                               ptrdiff_t lda, const FN_T *P, const FN_T *bias, FN_T *C,
                                               ptrdiff_t ldc, int accumulate, int threads)
{
    const FN(panels) src = FN(packed_panels)(P, K, N);
    FN(gemm_src_mt)(M, N, K, A, lda, &src, bias, C, ldc, accumulate, threads, NULL);
}

/* At (cols, rows) = A (rows, cols)^T, in blocks of VL x VL transposed in registers. */
FN_TARGET FN_UNUSED static void FN(transpose_matrix)(ptrdiff_t rows, ptrdiff_t cols, const FN_T *A,
                                                     ptrdiff_t lda, FN_T *At, ptrdiff_t ldt)
{
    ptrdiff_t i0, j0, i, j;
    for (j0 = 0; j0 < cols; j0 += FN_VL) {
        const int nc = (int)(cols - j0 < FN_VL ? cols - j0 : FN_VL);
        for (i0 = 0; i0 + FN_VL <= rows; i0 += FN_VL)
            FN(transpose)(A + i0 * lda + j0, lda, FN_VL, nc, At + j0 * ldt + i0, ldt);
        /* the last rows, fewer than a block: the block transpose would write past them */
        for (j = j0; j < j0 + nc; j++)
            for (i = i0; i < rows; i++)
                At[j * ldt + i] = A[i * lda + j];
    }
}

/* C (M, N1 + N2) (+)= A^T [B1 | B2] with A (R, M), B1 (R, N1) and B2 (R, N2) (a weight
 * gradient: the reduction runs along the rows of all three). The reduction goes in
 * chunks of FN_TN_RC rows: each chunk of A is transposed and each of B packed (in
 * tasks over `threads` threads), then FN(gemm_nn_mt) multiplies them, so the tiles
 * read both operands contiguously where reading A^T in place would stride through
 * memory a row per multiply-add. The chunk order is fixed, so the result does not
 * depend on the thread count. Returns 0, having done nothing, when its scratch
 * cannot be allocated. */
#define FN_TN_RC 512
#define FN_TN_COLS 64
FN_TARGET FN_UNUSED static int FN(gemm_tn2_mt)(ptrdiff_t M, ptrdiff_t N1, ptrdiff_t N2, ptrdiff_t R,
                                               const FN_T *A, ptrdiff_t lda, const FN_T *B1,
                                               ptrdiff_t ldb1, const FN_T *B2, ptrdiff_t ldb2,
                                               FN_T *C, ptrdiff_t ldc, int accumulate, int threads)
{
    const ptrdiff_t rc = R < FN_TN_RC ? R : FN_TN_RC, N = N1 + N2;
    const ptrdiff_t p1 = (N1 + FN_NR - 1) / FN_NR, p2 = (N2 + FN_NR - 1) / FN_NR;
    const ptrdiff_t blocks = (M + FN_TN_COLS - 1) / FN_TN_COLS;
    FN_T *At, *P;
    ptrdiff_t r0, r;
    if (M <= 0 || N <= 0)
        return 1;
    if (R <= 0) {
        if (!accumulate)
            for (r = 0; r < M; r++)
                memset(C + r * ldc, 0, (size_t)N * sizeof(FN_T));
        return 1;
    }
    At = (FN_T *)fn_alloc(((size_t)M + (size_t)(p1 + p2) * FN_NR) * (size_t)rc * sizeof(FN_T));
    if (At == NULL)
        return 0;
    P = At + M * rc;
    for (r0 = 0; r0 < R; r0 += rc) {
        const ptrdiff_t len = R - r0 < rc ? R - r0 : rc;
        const FN_T *a = A + r0 * lda;
        FN_TASKS(blocks + p1 + p2,
            if (task < blocks) {
                ptrdiff_t c0 = task * FN_TN_COLS;
                FN(transpose_matrix)(len, M - c0 < FN_TN_COLS ? M - c0 : FN_TN_COLS, a + c0, lda,
                                     At + c0 * len, len);
            } else if (task < blocks + p1) {
                ptrdiff_t p = task - blocks, c0 = p * FN_NR;
                FN(pack)(len, N1 - c0 < FN_NR ? N1 - c0 : FN_NR, B1 + r0 * ldb1 + c0, ldb1, 1,
                         P + p * len * FN_NR);
            } else {
                ptrdiff_t p = task - blocks - p1, c0 = p * FN_NR;
                FN(pack)(len, N2 - c0 < FN_NR ? N2 - c0 : FN_NR, B2 + r0 * ldb2 + c0, ldb2, 1,
                         P + (p1 + p) * len * FN_NR);
            }
        );
        FN(gemm_nn_mt)(M, N1, len, At, len, P, NULL, C, ldc, accumulate || r0 > 0, threads);
        FN(gemm_nn_mt)(M, N2, len, At, len, P + p1 * len * FN_NR, NULL, C + N1, ldc,
                       accumulate || r0 > 0, threads);
    }
    fn_free(At);
    return 1;
}

/* C (M, N) (+)= A^T B: FN(gemm_tn2_mt) with one right operand. */
FN_TARGET FN_UNUSED static int FN(gemm_tn_mt)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t R, const FN_T *A,
                                              ptrdiff_t lda, const FN_T *B, ptrdiff_t ldb, FN_T *C,
                                              ptrdiff_t ldc, int accumulate, int threads)
{
    return FN(gemm_tn2_mt)(M, N, 0, R, A, lda, B, ldb, B, ldb, C, ldc, accumulate, threads);
}

/* Narrow products: C (M, N) = A (M, K) @ S^T with S (N, K) and N a few columns (a
 * classifier's last layer, a logistic regression, a batch of products with a
 * handful of outputs). A panel of FN_NR / 2 columns would spend most of its
 * multiply-adds on columns of zeros (31 of 32 for one output column on AVX-512), so
 * each value is a dot product along K instead: a tile of R rows of A by G rows of S
 * (every column of a group of up to 8) holds R G vector sums, the last step's
 * vectors partial, and the lanes of each sum are added by halves at the end
 * (FN(hsum)). One tile per G = 1 .. 8, with R = FN_DOT_ACC / G rows (at most 8),
 * so the sums fill half the vector registers; all of a group's columns in one tile
 * read each row of A once. Every value is one tile's sum in a fixed order, whatever
 * the rows, blocks or threads. */
#define FN_DOT_ACC (FN_VBYTES == 64 ? 16 : 8)
#define FN_DOT_ROWS(G) (FN_DOT_ACC / (G) > 8 ? 8 : (FN_DOT_ACC / (G) < 1 ? 1 : FN_DOT_ACC / (G)))
#define FN_DEFINE_DOT(G) \
    FN_TARGET FN_UNUSED static void FN(dot_##G)(ptrdiff_t K, const FN_T *const *a, const FN_T *const *s, \
                                                const FN_T *bias, FN_T *c, ptrdiff_t ldc, int mr, \
                                                int accumulate, const char *pf, ptrdiff_t pf_n) \
    { \
        enum { R = FN_DOT_ROWS(G) }; \
        FN_V acc[R][G]; \
        ptrdiff_t k = 0, step = 0; \
        int r, g; \
        _Pragma("GCC unroll 8") \
        for (r = 0; r < R; r++) \
            _Pragma("GCC unroll 8") \
            for (g = 0; g < (G); g++) \
                acc[r][g] = FN(bc)(0); \
        for (; k + FN_VL <= K; k += FN_VL, step++) { \
            FN_V av[R]; \
            if (2 * step < pf_n) { /* the next rows' lines, two a step */ \
                __builtin_prefetch(pf + 128 * step, 0, 3); \
                __builtin_prefetch(pf + 128 * step + 64, 0, 3); \
            } \
            _Pragma("GCC unroll 8") \
            for (r = 0; r < R; r++) \
                av[r] = FN(ld)(a[r] + k); \
            _Pragma("GCC unroll 8") \
            for (g = 0; g < (G); g++) { \
                const FN_V sv = FN(ld)(s[g] + k); \
                _Pragma("GCC unroll 8") \
                for (r = 0; r < R; r++) \
                    acc[r][g] = FN(fma)(av[r], sv, acc[r][g]); \
            } \
        } \
        if (k < K) { \
            const int n = (int)(K - k); \
            FN_V av[R]; \
            _Pragma("GCC unroll 8") \
            for (r = 0; r < R; r++) \
                av[r] = FN(ldn)(a[r] + k, n); \
            _Pragma("GCC unroll 8") \
            for (g = 0; g < (G); g++) { \
                const FN_V sv = FN(ldn)(s[g] + k, n); \
                _Pragma("GCC unroll 8") \
                for (r = 0; r < R; r++) \
                    acc[r][g] = FN(fma)(av[r], sv, acc[r][g]); \
            } \
        } \
        _Pragma("GCC unroll 8") \
        for (r = 0; r < R; r++) \
            if (r < mr) \
                _Pragma("GCC unroll 8") \
                for (g = 0; g < (G); g++) { \
                    FN_T v = FN(hsum)(acc[r][g]); \
                    if (bias != NULL) \
                        v = bias[g] + v; \
                    if (accumulate) \
                        v += c[r * ldc + g]; \
                    c[r * ldc + g] = v; \
                } \
    }
FN_DEFINE_DOT(1)
FN_DEFINE_DOT(2)
FN_DEFINE_DOT(3)
FN_DEFINE_DOT(4)
FN_DEFINE_DOT(5)
FN_DEFINE_DOT(6)
FN_DEFINE_DOT(7)
FN_DEFINE_DOT(8)
#undef FN_DEFINE_DOT

/* How a product of N columns and a reduction of K runs: FN_NARROW_PANELS (the
 * usual panels), FN_NARROW_VTILE (at most FN_VL columns on AVX-512: the one-vector
 * tile on a panel FN_VL wide) or FN_NARROW_DOT (the dot-product tiles). The panel
 * tile for a narrow product is W columns wide whatever N (FN_NR / 2, or FN_VL for
 * the one-vector tile), so it costs about W K per row; the dot tiles cost about
 * 1.5 K per column (their rows of A are loaded, not broadcast) plus about
 * 1.25 VL^2 per column for adding the lanes. Fitted to both paths timed on every
 * tier and type (N 1 .. 16, K 16 .. 784: the crossovers, e.g. N 4 at K 64 on
 * AVX-512 against the half-width panel, fall where the model puts them within a
 * step of the grid). A choice by the sizes alone, so the sums do not depend on the
 * rows, blocks or threads. */
#define FN_NARROW_PANELS 0
#define FN_NARROW_VTILE 1
#define FN_NARROW_DOT 2
FN_INLINE int FN(narrow_path)(ptrdiff_t N, ptrdiff_t K)
{
    const int vtile = FN_HAVE_VTILE && N <= FN_VL;
    const double W = vtile ? FN_VL : FN_NR / 2, vl = FN_VL;
    if (N < 1 || K < 1 || N > FN_NR / 2)
        return FN_NARROW_PANELS;
    if ((double)N * (6.0 * (double)K + 5.0 * vl * vl) < 4.0 * W * (double)K)
        return FN_NARROW_DOT;
    return vtile ? FN_NARROW_VTILE : FN_NARROW_PANELS;
}

/* P (K, FN_VL) = op(B)'s N <= FN_VL columns, zeros past them: B (K, N) rows ldb apart,
 * or, when trans, B = S^T with S (N, K) rows ldb apart (register transposes). The
 * panel of FN(gemm_vtile). */
FN_TARGET FN_UNUSED static void FN(pack_v)(ptrdiff_t K, ptrdiff_t N, const FN_T *B, ptrdiff_t ldb, int trans,
                                           FN_T *P)
{
    ptrdiff_t k, j;
    if (trans) {
        for (k = 0; k < K; k += FN_VL)
            FN(transpose)(B + k, ldb, (int)N, (int)(K - k < FN_VL ? K - k : FN_VL), P + k * FN_VL, FN_VL);
        return;
    }
    for (k = 0; k < K; k++)
        for (j = 0; j < FN_VL; j++)
            P[k * FN_VL + j] = j < N ? B[k * ldb + j] : (FN_T)0;
}

#if FN_HAVE_VTILE
/* Rows 0 .. M of C (N <= FN_VL columns) (+)= A @ P (+ bias) on the one-vector tile,
 * P from FN(pack_v); one thread. */
FN_TARGET FN_UNUSED static void FN(gemm_vtile)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A, ptrdiff_t lda,
                                               const FN_T *P, const FN_T *bias, FN_T *C, ptrdiff_t ldc,
                                               int accumulate)
{
    const FN_T *rows[FN_MRV];
    const ptrdiff_t zero = 0;
    ptrdiff_t i;
    int r;
    for (i = 0; i < M; i += FN_MRV) {
        const int mr = (int)(M - i < FN_MRV ? M - i : FN_MRV);
        for (r = 0; r < FN_MRV; r++)
            rows[r] = A + (i + (r < mr ? r : mr - 1)) * lda;
        FN(ukr_nn_v)(1, K, rows, 0, &zero, P, FN_VL, bias, C + i * ldc, ldc, mr, (int)N, accumulate, NULL, 0);
    }
}
#endif

/* Rows 0 .. M of C (+)= A @ S^T (+ bias, N values, or NULL), one thread; see above.
 * The columns go in groups of 8 (the last one what is left), the rows in blocks of
 * 8 through every group (a block's rows of A stay cached across them). */
#define FN_DOT_CALL(G) \
    FN(dot_##G)(K, a, s, bias != NULL ? bias + j : NULL, C + i * ldc + j, ldc, mr, accumulate, pf, pf_n)
FN_TARGET FN_UNUSED static void FN(gemm_dot)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FN_T *A, ptrdiff_t lda,
                                             const FN_T *S, ptrdiff_t ls, const FN_T *bias, FN_T *C,
                                             ptrdiff_t ldc, int accumulate)
{
    const FN_T *a[8], *s[8];
    ptrdiff_t i0, i, j;
    int r, g;
    for (i0 = 0; i0 < M; i0 += 8) {
        const ptrdiff_t i1 = M - i0 < 8 ? M : i0 + 8;
        /* the next block's rows are fetched along this block's tiles: a row of A is
         * read in one short pass, too short for the prefetchers to get ahead */
        const char *pf = (const char *)(A + i1 * lda), *pf_end = (const char *)(A + (M - i1 < 8 ? M : i1 + 8) * lda);
        for (j = 0; j < N; j += 8) {
            const int G = (int)(N - j < 8 ? N - j : 8), R = FN_DOT_ROWS(G);
            for (g = 0; g < G; g++)
                s[g] = S + (j + g) * ls;
            for (i = i0; i < i1; i += R) {
                const int mr = (int)(i1 - i < R ? i1 - i : R);
                const ptrdiff_t pf_n = pf < pf_end ? (pf_end - pf + 63) / 64 : 0;
                for (r = 0; r < R; r++)
                    a[r] = A + (i + (r < mr ? r : mr - 1)) * lda;
                switch (G) {
                case 1: FN_DOT_CALL(1); break;
                case 2: FN_DOT_CALL(2); break;
                case 3: FN_DOT_CALL(3); break;
                case 4: FN_DOT_CALL(4); break;
                case 5: FN_DOT_CALL(5); break;
                case 6: FN_DOT_CALL(6); break;
                case 7: FN_DOT_CALL(7); break;
                default: FN_DOT_CALL(8); break;
                }
                pf += 128 * (K / FN_VL);
            }
        }
    }
}
#undef FN_DOT_CALL

/* Rows 0 .. M of C (N columns) (+)= A @ op(B) (+ bias, N values, or NULL) on the
 * narrow path `path` (FN(narrow_path)'s, not FN_NARROW_PANELS) on `threads` threads,
 * in tasks of blocks of rows. op(B) is S^T, S (N, K) with rows ls apart, for the dot
 * tiles; P from FN(pack_v) for the one-vector tile. */
#define FN_DOT_TASK_ROWS 48
FN_TARGET FN_UNUSED static void FN(gemm_narrow_mt)(int path, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                                   const FN_T *A, ptrdiff_t lda, const FN_T *S, ptrdiff_t ls,
                                                   const FN_T *P, const FN_T *bias, FN_T *C, ptrdiff_t ldc,
                                                   int accumulate, int threads)
{
    const ptrdiff_t tasks = (M + FN_DOT_TASK_ROWS - 1) / FN_DOT_TASK_ROWS;
    if (tasks < 2)
        threads = 1;
    (void)P;
    (void)path;
    FN_TASKS(tasks,
        const ptrdiff_t r0 = task * FN_DOT_TASK_ROWS;
        const ptrdiff_t r1 = M - r0 < FN_DOT_TASK_ROWS ? M : r0 + FN_DOT_TASK_ROWS;
#if FN_HAVE_VTILE
        if (path == FN_NARROW_VTILE)
            FN(gemm_vtile)(r1 - r0, N, K, A + r0 * lda, lda, P, bias, C + r0 * ldc, ldc, accumulate);
        else
#endif
            FN(gemm_dot)(r1 - r0, N, K, A + r0 * lda, lda, S, ls, bias, C + r0 * ldc, ldc, accumulate);
    );
}

/* Elements of scratch FN(gemm_any_mt) needs. */
FN_UNUSED static inline size_t FN(any_scratch)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int trans_a)
{
    return FN(packed_size)(K, N) + (trans_a ? (size_t)M * (size_t)(K > 0 ? K : 0) : 0) + 1;
}

/* C (M, N) = op(A) @ op(B) (+ C when accumulate) for one product of moderate size:
 * op(B) is packed into scratch (FN(any_scratch) elements; a transposed B by register
 * transposes), a transposed A is transposed there first, and `threads` split the
 * tiles. op(A) is A (M, K) or, when trans_a, A^T with A (K, M); op(B) likewise
 * (K, N) or B^T. Packing is worth its cost even for a small product: read in
 * place, the rows of a B whose row stride is a power of two fall into a few cache
 * sets and evict each other, which costs a 128^3 product much of its speed.
 * ahead: cache lines to fetch between the tiles (NULL: none; one thread only). */
FN_TARGET FN_UNUSED static void FN(gemm_any_ahead)(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                                                   ptrdiff_t K, const FN_T *A, ptrdiff_t lda, const FN_T *B,
                                                   ptrdiff_t ldb, int accumulate, FN_T *C, ptrdiff_t ldc,
                                                   FN_T *scratch, int threads, fn_ahead *ahead)
{
    const FN_T *P = scratch;
    const ptrdiff_t full = N / FN_NR;
    const int path = M > 0 ? FN(narrow_path)(N, K) : FN_NARROW_PANELS;
    if (trans_a) {  /* op(A) = A^T, transposed after the space of op(B)'s packed form */
        FN_T *At = scratch + FN(packed_size)(K, N);
        FN(transpose_matrix)(K, M, A, lda, At, K);
        A = At;
        lda = K;
    }
    if (path != FN_NARROW_PANELS) {
        /* a few columns: dot products along K against the rows of op(B)^T, or the
         * one-vector tile on op(B) packed FN_VL wide */
        const FN_T *S = B;
        ptrdiff_t ls = ldb;
        if (path == FN_NARROW_VTILE)
            FN(pack_v)(K, N, B, ldb, trans_b, scratch);
        else if (!trans_b) {
            FN(transpose_matrix)(K, N, B, ldb, scratch, K);
            S = scratch;
            ls = K;
        }
        FN(gemm_narrow_mt)(path, M, N, K, A, lda, S, ls, scratch, NULL, C, ldc, accumulate, threads);
        return;
    }
    /* on one thread, the full panels of a B used as it lies are packed by their first
     * tiles (FN(ukr_nn_packing)); only a partial last panel here */
    const int lazy = !trans_b && threads <= 1 && full > 0 && M > 1 && K > 0 && !(ldb == N && N == FN_NR);
    FN(panels) src;
    if (trans_b)
        FN(pack_t)(K, N, B, ldb, scratch);
    else if (ldb == N && N == FN(panel_width)(N, 0))
        P = B;  /* one panel whose rows lie one after the other: packed already */
    else if (lazy && N > full * FN_NR)
        FN(pack)(K, N - full * FN_NR, B + full * FN_NR, ldb, 1, scratch + full * K * FN_NR);
    else if (!lazy)
        FN(pack)(K, N, B, ldb, 1, scratch);
    src = FN(packed_panels)(P, K, N);
    if (lazy) {
        src.raw = B;
        src.raw_ld = ldb;
    }
    FN(gemm_src_mt)(M, N, K, A, lda, &src, NULL, C, ldc, accumulate, threads, ahead);
}

/* FN(gemm_any_ahead) fetching nothing ahead. */
FN_TARGET FN_UNUSED static void FN(gemm_any_mt)(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                                                ptrdiff_t K, const FN_T *A, ptrdiff_t lda, const FN_T *B,
                                                ptrdiff_t ldb, int accumulate, FN_T *C, ptrdiff_t ldc,
                                                FN_T *scratch, int threads)
{
    FN(gemm_any_ahead)(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, scratch, threads, NULL);
}

/* Products i = 0 .. count - 1, one after another on one thread: C[i] (M, N) =
 * op(A[i]) @ op(B[i]) (+ C[i] when accumulate[i]), op and the leading dimensions as
 * in FN(gemm_any_mt), scratch of FN(any_scratch) elements. While a product runs,
 * the next one's operands and result are fetched into the cache between its tiles:
 * a batch of small products otherwise spends much of its time waiting for memory at
 * the start of each (for 32 x 64 @ 64 x 32 products, a third). Each product sums
 * exactly as FN(gemm_any_mt) does. */
FN_TARGET FN_UNUSED static void FN(gemm_list)(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                              const FN_T *const *A, ptrdiff_t lda, const FN_T *const *B,
                                              ptrdiff_t ldb, FN_T *const *C, ptrdiff_t ldc,
                                              const unsigned char *accumulate, ptrdiff_t count, FN_T *scratch)
{
    /* the extent of an operand of `rows` rows of `cols` elements, ld apart */
#define FN_SPAN(rows, cols, ld) ((ptrdiff_t)(((rows) - 1) * (ld) + (cols)) * (ptrdiff_t)sizeof(FN_T))
    const ptrdiff_t a_bytes = trans_a ? FN_SPAN(K, M, lda) : FN_SPAN(M, K, lda);
    const ptrdiff_t b_bytes = trans_b ? FN_SPAN(N, K, ldb) : FN_SPAN(K, N, ldb);
    const ptrdiff_t c_bytes = FN_SPAN(M, N, ldc);
#undef FN_SPAN
    /* larger products run long enough for the hardware prefetchers, and their next
     * operands would evict the running product's from the level-2 cache: fetch
     * while this product's data and the next one's fit in half of it */
    const int fetch = a_bytes + b_bytes + c_bytes <= fn_l2_bytes() / 4;
    ptrdiff_t i;
    for (i = 0; i < count; i++) {
        const int next = fetch && i + 1 < count;
        fn_ahead ahead;
        ahead.region = 0;
        ahead.per_tile = 1;
        fn_ahead_set(&ahead, 0, next ? (const void *)A[i + 1] : NULL, a_bytes);
        fn_ahead_set(&ahead, 1, next ? (const void *)B[i + 1] : NULL, b_bytes);
        fn_ahead_set(&ahead, 2, next ? (const void *)C[i + 1] : NULL, c_bytes);
        FN(gemm_any_ahead)(trans_a, trans_b, M, N, K, A[i], lda, B[i], ldb, accumulate != NULL && accumulate[i],
                           C[i], ldc, scratch, 1, &ahead);
    }
}

/* Size of the per-thread scratch of FN(conv_forward), in pointers. */
FN_UNUSED static inline size_t FN(conv_scratch)(const fn_conv_geom *g)
{
    return (size_t)FN_TILES * (size_t)(g->kh * g->kw) * (FN_MR + 1) + FN_TILES;
}

/* Output pixels m0 .. m1 (m = (n * Ho + oh) * Wo + ow) of one group of an NHWC
 * convolution as an implicit GEMM: y[m, 0:Cog] = bias + sum over taps (i, j) and
 * channels c of x[n, ih, iw, c0 + c] * P[(i * kw + j) * Cg + c, :], with P the
 * packed (kh * kw * Cg, Cog) weights. Taps falling in the padding read `zeros`
 * (at least Cg elements); a tap in the padding for all pixels of a tile is skipped.
 * scratch: FN(conv_scratch)(g) pointers. */
FN_TARGET FN_UNUSED static void FN(conv_forward)(const fn_conv_geom *g, const FN_T *x, ptrdiff_t c0,
                                                 const FN_T *P, ptrdiff_t Cog, const FN_T *bias,
                                                 FN_T *y, ptrdiff_t ldy, ptrdiff_t m0, ptrdiff_t m1,
                                                 const FN_T *zeros, void **scratch)
{
    const ptrdiff_t taps = g->kh * g->kw, K = taps * g->Cg;
    const ptrdiff_t panels = (Cog + FN_NR - 1) / FN_NR;
    const FN_T **ptrs = (const FN_T **)scratch;
    ptrdiff_t *boff = (ptrdiff_t *)(scratch + (size_t)FN_TILES * taps * FN_MR);
    ptrdiff_t *nseg = boff + FN_TILES * taps;
    ptrdiff_t b0, t, p, i, j, r;
    for (b0 = m0; b0 < m1; b0 += FN_MR * FN_TILES) {
        ptrdiff_t b1 = m1 - b0 < FN_MR * FN_TILES ? m1 : b0 + FN_MR * FN_TILES;
        ptrdiff_t ntiles = (b1 - b0 + FN_MR - 1) / FN_MR;
        /* the pointer table of the block's tiles */
        for (t = 0; t < ntiles; t++) {
            ptrdiff_t first = b0 + t * FN_MR;
            int mr = (int)(b1 - first < FN_MR ? b1 - first : FN_MR);
            ptrdiff_t ih0[FN_MR], iw0[FN_MR], base[FN_MR];
            const FN_T **tp = ptrs + t * taps * FN_MR;
            ptrdiff_t *tb = boff + t * taps, ns = 0;
            for (r = 0; r < FN_MR; r++) {
                ptrdiff_t mm = first + (r < mr ? r : mr - 1);
                ptrdiff_t ow = mm % g->Wo, q = mm / g->Wo, oh = q % g->Ho, n = q / g->Ho;
                ih0[r] = oh * g->sh - g->pt;
                iw0[r] = ow * g->sw - g->pl;
                base[r] = n * g->H;
            }
            for (i = 0; i < g->kh; i++)
                for (j = 0; j < g->kw; j++) {
                    int any = 0;
                    for (r = 0; r < FN_MR; r++) {
                        ptrdiff_t ih = ih0[r] + i * g->dh, iw = iw0[r] + j * g->dw;
                        if (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) {
                            tp[ns * FN_MR + r] = x + ((base[r] + ih) * g->W + iw) * g->C + c0;
                            any = 1;
                        } else {
                            tp[ns * FN_MR + r] = zeros;
                        }
                    }
                    if (any)
                        tb[ns++] = (i * g->kw + j) * g->Cg;
                }
            nseg[t] = ns;
        }
        for (p = 0; p < panels; p++) {
            int nr = (int)(Cog - p * FN_NR < FN_NR ? Cog - p * FN_NR : FN_NR);
            for (t = 0; t < ntiles; t++) {
                ptrdiff_t first = b0 + t * FN_MR;
                int mr = (int)(b1 - first < FN_MR ? b1 - first : FN_MR);
                FN(ukr_nn_any)(nseg[t], g->Cg, ptrs + t * taps * FN_MR, 0, boff + t * taps, P + p * K * FN_NR,
                               FN(panel_width)(Cog, p), bias != NULL ? bias + p * FN_NR : NULL,
                               y + first * ldy + p * FN_NR, ldy, mr, nr, 0, NULL, 0);
            }
        }
    }
}

/* Output channels per pass of FN(conv1_rows): one accumulator each. */
#define FN_CONV1_CB 8

/* Output rows q0 .. q1 (q = n * Ho + oh) of a convolution of a one-channel input
 * with a few output channels (a network's first layer on grey images), directly:
 * the input padded already, xp (N, Hp, Wp); stride 1 along the width, so a vector
 * holds FN_VL neighbouring output pixels and each tap is one load times a broadcast
 * weight per channel. wp (kh * kw, Cp): the weights, Cp a multiple of FN_CONV1_CB
 * (zero past Cout). y[(q * Wo + ow) * Cout + co] = bias[co] + sum over the taps in
 * order of x * w. The implicit GEMM would run a panel of FN_NR columns for these few
 * channels, and a reduction step of one element per tap. */
FN_TARGET FN_UNUSED static void FN(conv1_rows)(const fn_conv_geom *g, const FN_T *xp, ptrdiff_t Hp, ptrdiff_t Wp,
                                               const FN_T *wp, ptrdiff_t Cp, ptrdiff_t Cout, const FN_T *bias,
                                               FN_T *y, ptrdiff_t q0, ptrdiff_t q1)
{
    FN_T tmp[FN_CONV1_CB][FN_VL];
    ptrdiff_t q, ow0, c0, i, j, p, c;
    for (q = q0; q < q1; q++) {
        const ptrdiff_t n = q / g->Ho, oh = q % g->Ho;
        for (ow0 = 0; ow0 < g->Wo; ow0 += FN_VL) {
            const int nv = (int)(g->Wo - ow0 < FN_VL ? g->Wo - ow0 : FN_VL);
            for (c0 = 0; c0 < Cout; c0 += FN_CONV1_CB) {
                const int cc = (int)(Cout - c0 < FN_CONV1_CB ? Cout - c0 : FN_CONV1_CB);
                FN_V acc[FN_CONV1_CB];
#pragma GCC unroll 8
                for (c = 0; c < FN_CONV1_CB; c++)
                    acc[c] = FN(bc)(bias != NULL && c < cc ? bias[c0 + c] : 0);
                for (i = 0; i < g->kh; i++) {
                    const FN_T *row = xp + (n * Hp + oh * g->sh + i * g->dh) * Wp + ow0;
                    for (j = 0; j < g->kw; j++) {
                        const FN_V xv = nv == FN_VL ? FN(ld)(row + j * g->dw) : FN(ldn)(row + j * g->dw, nv);
                        const FN_T *wt = wp + (i * g->kw + j) * Cp + c0;
#pragma GCC unroll 8
                        for (c = 0; c < FN_CONV1_CB; c++)
                            acc[c] = FN(fma)(xv, FN(bc)(wt[c]), acc[c]);
                    }
                }
#pragma GCC unroll 8
                for (c = 0; c < FN_CONV1_CB; c++)
                    FN(st)(tmp[c], acc[c]);
                for (p = 0; p < nv; p++) {
                    FN_T *out = y + ((q * g->Wo) + ow0 + p) * Cout + c0;
                    for (c = 0; c < cc; c++)
                        out[c] = tmp[c][p];
                }
            }
        }
    }
}

/* The weight gradient of FN(conv1_rows)'s convolution over output rows q0 .. q1:
 * part[t * Cp + c] = sum over the rows and their output columns of the input under
 * tap t times dy[q, ow, c], for c < Cout (Cp as in conv1_rows). dy (rows, Wo, Cout)
 * is first laid out channel by channel in scratch ((q1 - q0) * Cp * Wv elements, Wv =
 * Wo rounded up to FN_VL), so that a vector of neighbouring pixels of one channel is
 * one load. Each sum runs over the rows in order, vectors lane-wise, then the lanes. */
FN_TARGET FN_UNUSED static void FN(conv1_dw_rows)(const fn_conv_geom *g, const FN_T *xp, ptrdiff_t Hp, ptrdiff_t Wp,
                                                  const FN_T *dy, ptrdiff_t Cout, ptrdiff_t Cp, FN_T *part,
                                                  ptrdiff_t q0, ptrdiff_t q1, FN_T *scratch)
{
    const ptrdiff_t Wv = (g->Wo + FN_VL - 1) / FN_VL * FN_VL;
    FN_T tmp[FN_VL];
    ptrdiff_t q, c, c0, ow, i, j, v;
    int l;
    for (q = q0; q < q1; q++) {
        const FN_T *src = dy + q * g->Wo * Cout;
        FN_T *d = scratch + (q - q0) * Cp * Wv;
        for (ow = 0; ow < g->Wo; ow++)
            for (c = 0; c < Cout; c++)
                d[c * Wv + ow] = src[ow * Cout + c];
        for (c = 0; c < Cp; c++)
            for (ow = c < Cout ? g->Wo : 0; ow < Wv; ow++)
                d[c * Wv + ow] = 0;
    }
    for (c0 = 0; c0 < Cout; c0 += FN_CONV1_CB)
        for (i = 0; i < g->kh; i++)
            for (j = 0; j < g->kw; j++) {
                FN_V acc[FN_CONV1_CB];
#pragma GCC unroll 8
                for (c = 0; c < FN_CONV1_CB; c++)
                    acc[c] = FN(bc)(0);
                for (q = q0; q < q1; q++) {
                    const ptrdiff_t n = q / g->Ho, oh = q % g->Ho;
                    const FN_T *row = xp + (n * Hp + oh * g->sh + i * g->dh) * Wp + j * g->dw;
                    const FN_T *d = scratch + ((q - q0) * Cp + c0) * Wv;
                    for (v = 0; v < Wv; v += FN_VL) {
                        const int nv = (int)(g->Wo - v < FN_VL ? g->Wo - v : FN_VL);
                        const FN_V xv = nv == FN_VL ? FN(ld)(row + v) : FN(ldn)(row + v, nv);
#pragma GCC unroll 8
                        for (c = 0; c < FN_CONV1_CB; c++)
                            acc[c] = FN(fma)(xv, FN(ld)(d + c * Wv + v), acc[c]);
                    }
                }
                for (c = 0; c < FN_CONV1_CB && c0 + c < Cout; c++) {
                    FN_T sum = 0;
                    FN(st)(tmp, acc[c]);
                    for (l = 0; l < FN_VL; l++)
                        sum += tmp[l];
                    part[(i * g->kw + j) * Cp + c0 + c] = sum;
                }
            }
}

/* Size of the scratch of FN(conv_weight_grad) for `rows` output rows, in pointers. */
FN_UNUSED static inline size_t FN(conv_dw_scratch)(ptrdiff_t rows)
{
    return (size_t)(rows > 0 ? rows : 0) * 3;
}

/* dw[(i * kw + j) * Cg + c, 0:Cog] += sum over the output pixels of output rows
 * q0 .. q1 (q = n * Ho + oh) of x[n, ih, iw, c0 + c] * dy[pixel, co0 : co0 + Cog],
 * the taps in the padding left out: one group's weight gradient over a chunk of
 * the batch, dw with row stride ldw. scratch: FN(conv_dw_scratch)(q1 - q0). */
FN_TARGET FN_UNUSED static void FN(conv_weight_grad)(const fn_conv_geom *g, const FN_T *x, ptrdiff_t c0,
                                                     const FN_T *dy, ptrdiff_t ldy, ptrdiff_t co0,
                                                     ptrdiff_t Cog, FN_T *dw, ptrdiff_t ldw,
                                                     ptrdiff_t q0, ptrdiff_t q1, void **scratch)
{
    const ptrdiff_t rows = q1 - q0;
    const FN_T **ar = (const FN_T **)scratch, **br = ar + rows;
    ptrdiff_t *len = (ptrdiff_t *)(scratch + 2 * rows);
    ptrdiff_t i, j, q, cb, p;
    for (i = 0; i < g->kh; i++)
        for (j = 0; j < g->kw; j++) {
            /* output columns ow whose tap j lies inside the input: [lo, hi) */
            ptrdiff_t num = g->pl - j * g->dw, lo, hi, nrun = 0;
            lo = num <= 0 ? 0 : (num + g->sw - 1) / g->sw;
            num = g->W + g->pl - j * g->dw;
            hi = num <= 0 ? 0 : (num + g->sw - 1) / g->sw;
            if (hi > g->Wo)
                hi = g->Wo;
            if (hi <= lo)
                continue;
            for (q = q0; q < q1; q++) {
                ptrdiff_t n = q / g->Ho, oh = q % g->Ho;
                ptrdiff_t ih = oh * g->sh - g->pt + i * g->dh;
                if (ih < 0 || ih >= g->H)
                    continue;
                ar[nrun] = x + ((n * g->H + ih) * g->W + lo * g->sw - g->pl + j * g->dw) * g->C + c0;
                br[nrun] = dy + (q * g->Wo + lo) * ldy + co0;
                len[nrun] = hi - lo;
                nrun++;
            }
            if (nrun == 0)
                continue;
            for (cb = 0; cb < g->Cg; cb += FN_MR) {
                int mr = (int)(g->Cg - cb < FN_MR ? g->Cg - cb : FN_MR);
                for (p = 0; p < Cog; p += FN_NR) {
                    int nr = (int)(Cog - p < FN_NR ? Cog - p : FN_NR);
                    FN(ukr_tn_any)(nrun, ar, br, len, cb, p, g->sw * g->C, ldy,
                                   dw + ((i * g->kw + j) * g->Cg + cb) * ldw + p, ldw, mr, nr);
                }
            }
        }
}

#undef FN_TILE_STEP
