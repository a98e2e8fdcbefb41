/* fastnn's own float32 matrix-multiply kernels for x86-64 CPUs with AVX-512.
 *
 * Why not BLAS: the products of a convolution or a recurrent step are thin (64 to
 * 256 output columns) and, for a convolution, their left operand is the im2col
 * matrix, which BLAS needs written out in memory first. These kernels read the
 * left operand through a table of row pointers instead, so a convolution reads its
 * input pixels where they lie (an "implicit GEMM": no im2col buffer at all), and
 * the right operand is packed once per call into panels of FN_NR columns.
 *
 * Two micro-kernels hold an FN_MR x FN_NR tile of the result in 24 vector registers:
 *   fn_ukr_nn  C_tile = init + sum_k A[i][k] * P[k][j]    (A rows through pointers,
 *              the reduction cut into segments, e.g. one per kernel tap)
 *   fn_ukr_tn  C_tile += sum_r a_r[i] * b_r[j]             (both operands read along
 *              the reduction in runs of fixed stride: a weight gradient)
 * and the drivers below cut GEMMs and convolutions into tiles for them.
 *
 * Everything here is compiled for AVX-512 through function attributes, so the rest
 * of the module keeps the baseline instruction set; callers must check
 * fn_sgemm_supported() (the CPU's features, at run time) before calling anything
 * else, and fall back to BLAS when it returns 0. No function reads or writes
 * outside the rows, columns and pointers it is given: partial tiles use masked
 * loads and stores, and rows past the end of a tile repeat the last valid row's
 * pointer (their results are never stored).
 */
#ifndef FASTNN_FN_SGEMM_H
#define FASTNN_FN_SGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(_WIN32)
#include <malloc.h>
#endif

#define FN_NR 64        /* columns per packed panel: four vectors of 16 floats */
#define FN_MR 6         /* rows per tile: 6 x 4 accumulators of the 32 registers */
#define FN_TILES 16     /* tiles per block of a convolution's pointer table */

#if defined(__GNUC__) || defined(__clang__)
#define FN_UNUSED __attribute__((unused))
#else
#define FN_UNUSED
#endif

/* The geometry of an NHWC convolution (the caller's arguments, normalised). */
typedef struct {
    ptrdiff_t N, H, W, C;   /* input; C is the pixel stride of x */
    ptrdiff_t Ho, Wo;
    ptrdiff_t kh, kw, sh, sw, dh, dw;
    ptrdiff_t pt, pl;       /* top and left padding */
    ptrdiff_t Cg;           /* input channels per group (the length of a tap) */
} fn_conv_geom;

/* malloc and free for buffers that start on a 64-byte boundary (a cache line, one
 * AVX-512 vector): malloc's 16-byte alignment has vector loads of a packed operand
 * straddle two lines, which slows the matrix-vector steps that stream one. */
static inline void *fn_alloc(size_t bytes)
{
#if defined(_WIN32)
    return _aligned_malloc(bytes > 0 ? bytes : 1, 64);
#else
    void *p = NULL;
    return posix_memalign(&p, 64, bytes > 0 ? bytes : 1) == 0 ? p : NULL;
#endif
}

static inline void fn_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* Floats in the packed form of a (K, N) matrix. */
static inline size_t fn_sgemm_packed_size(ptrdiff_t K, ptrdiff_t N)
{
    return (size_t)((N + FN_NR - 1) / FN_NR) * FN_NR * (size_t)(K > 0 ? K : 0);
}

/* Pack B (K, N), element (k, n) at src[k * sk + n * sn], into panels of FN_NR
 * columns: panel p holds B[k, p * FN_NR + j] at P[(p * K + k) * FN_NR + j], the
 * columns past N zero. Plain C: it runs on any CPU. */
FN_UNUSED static void fn_sgemm_pack(ptrdiff_t K, ptrdiff_t N, const float *src, ptrdiff_t sk, ptrdiff_t sn,
                          float *P)
{
    ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, p, k, j;
    for (p = 0; p < panels; p++) {
        ptrdiff_t width = N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR;
        float *out = P + p * K * FN_NR;
        if (sn == 1) {
            for (k = 0; k < K; k++) {
                memcpy(out + k * FN_NR, src + k * sk + p * FN_NR, (size_t)width * sizeof(float));
                for (j = width; j < FN_NR; j++)
                    out[k * FN_NR + j] = 0.0f;
            }
        } else {
            /* column by column, so a transposed source is read along its rows */
            for (j = 0; j < FN_NR; j++) {
                if (j < width) {
                    const float *col = src + (p * FN_NR + j) * sn;
                    for (k = 0; k < K; k++)
                        out[k * FN_NR + j] = col[k * sk];
                } else {
                    for (k = 0; k < K; k++)
                        out[k * FN_NR + j] = 0.0f;
                }
            }
        }
    }
}

#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || \
                            (defined(__clang__) && __clang_major__ >= 8))
#define FN_SGEMM_AVX512 1
#include <immintrin.h>
#define FN_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma")))

FN_UNUSED static int fn_sgemm_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("fma");
}

/* The masks of the four vectors of a tile row holding nr (1 .. FN_NR) columns. */
FN_AVX512 FN_UNUSED static inline void fn_masks(int nr, __mmask16 m[4])
{
    int v;
    for (v = 0; v < 4; v++) {
        int n = nr - 16 * v;
        m[v] = n >= 16 ? (__mmask16)0xFFFF : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1));
    }
}

#define FN_ACC_DECL(r) __m512 c##r##0, c##r##1, c##r##2, c##r##3;
#define FN_ACC_SET(r, v0, v1, v2, v3) c##r##0 = v0; c##r##1 = v1; c##r##2 = v2; c##r##3 = v3;
#define FN_ACC_FMA(r, a) \
    c##r##0 = _mm512_fmadd_ps(a, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a, b1, c##r##1); \
    c##r##2 = _mm512_fmadd_ps(a, b2, c##r##2); c##r##3 = _mm512_fmadd_ps(a, b3, c##r##3);
/* one reduction step of the tile: row r gets the broadcast of x_r times b0..b3 */
#define FN_TILE_FMA(x0, x1, x2, x3, x4, x5) \
    { \
        __m512 av; \
        av = _mm512_set1_ps(x0); FN_ACC_FMA(0, av) \
        av = _mm512_set1_ps(x1); FN_ACC_FMA(1, av) \
        av = _mm512_set1_ps(x2); FN_ACC_FMA(2, av) \
        av = _mm512_set1_ps(x3); FN_ACC_FMA(3, av) \
        av = _mm512_set1_ps(x4); FN_ACC_FMA(4, av) \
        av = _mm512_set1_ps(x5); FN_ACC_FMA(5, av) \
    }
#define FN_TILE_DECL FN_ACC_DECL(0) FN_ACC_DECL(1) FN_ACC_DECL(2) FN_ACC_DECL(3) FN_ACC_DECL(4) FN_ACC_DECL(5)
#define FN_TILE_SET(v0, v1, v2, v3) \
    FN_ACC_SET(0, v0, v1, v2, v3) FN_ACC_SET(1, v0, v1, v2, v3) FN_ACC_SET(2, v0, v1, v2, v3) \
    FN_ACC_SET(3, v0, v1, v2, v3) FN_ACC_SET(4, v0, v1, v2, v3) FN_ACC_SET(5, v0, v1, v2, v3)
#define FN_TILE_STORE \
    FN_ACC_STORE(0) FN_ACC_STORE(1) FN_ACC_STORE(2) FN_ACC_STORE(3) FN_ACC_STORE(4) FN_ACC_STORE(5)

/* C row r (+)= the accumulators, through the column masks */
#define FN_ACC_STORE(r) \
    if (r < mr) { \
        float *cr = c + (ptrdiff_t)r * ldc; \
        if (accumulate) { \
            c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m[0], cr)); \
            c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m[1], cr + 16)); \
            c##r##2 = _mm512_add_ps(c##r##2, _mm512_maskz_loadu_ps(m[2], cr + 32)); \
            c##r##3 = _mm512_add_ps(c##r##3, _mm512_maskz_loadu_ps(m[3], cr + 48)); \
        } \
        _mm512_mask_storeu_ps(cr, m[0], c##r##0); \
        _mm512_mask_storeu_ps(cr + 16, m[1], c##r##1); \
        _mm512_mask_storeu_ps(cr + 32, m[2], c##r##2); \
        _mm512_mask_storeu_ps(cr + 48, m[3], c##r##3); \
    }

/* d[k * ld + j] = s[j * ls + k] for k < cols and j < 16 (cols <= 16): a 16 x 16
 * transpose in registers (32-, 64- then 128-bit interleaves), source rows from
 * `rows` on read as zeros. */
FN_AVX512 FN_UNUSED static inline void fn_transpose16(const float *s, ptrdiff_t ls, int rows, int cols,
                                                      float *d, ptrdiff_t ld)
{
    const __mmask16 cm = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    __m512 r[16], t[16], u[16];
    int i, c;
    for (i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, s + i * ls) : _mm512_setzero_ps();
    for (i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4i + c], 128-bit lane L: column 4L + c of rows 4i .. 4i + 3 */
    for (i = 0; i < 16; i += 4) {
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (c = 0; c < 4; c++) {
        const __m512 w0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), w1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        const __m512 x0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        const __m512 x1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        if (c < cols) _mm512_storeu_ps(d + c * ld, _mm512_shuffle_f32x4(w0, x0, 0x88));
        if (4 + c < cols) _mm512_storeu_ps(d + (4 + c) * ld, _mm512_shuffle_f32x4(w1, x1, 0x88));
        if (8 + c < cols) _mm512_storeu_ps(d + (8 + c) * ld, _mm512_shuffle_f32x4(w0, x0, 0xDD));
        if (12 + c < cols) _mm512_storeu_ps(d + (12 + c) * ld, _mm512_shuffle_f32x4(w1, x1, 0xDD));
    }
}

/* fn_sgemm_pack of B = S^T with S (N, K) at row stride ls (a weight matrix used
 * transposed), by 16 x 16 transposes in registers: about four times the speed of
 * the element-by-element copy, which shows in the per-call cost of a short
 * sequence. */
FN_AVX512 FN_UNUSED static void fn_sgemm_pack_t(ptrdiff_t K, ptrdiff_t N, const float *S, ptrdiff_t ls,
                                                float *P)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR;
    ptrdiff_t p, k0, v;
    for (p = 0; p < panels; p++)
        for (k0 = 0; k0 < K; k0 += 16)
            for (v = 0; v < FN_NR; v += 16) {
                const ptrdiff_t n0 = p * FN_NR + v;
                const int rows = (int)(N - n0 < 0 ? 0 : (N - n0 < 16 ? N - n0 : 16));
                fn_transpose16(S + (rows > 0 ? n0 : 0) * ls + k0, ls, rows, (int)(K - k0 < 16 ? K - k0 : 16),
                               P + (p * K + k0) * FN_NR + v, FN_NR);
            }
}

/* C[0:mr, 0:nr] (+= when accumulate) init + sum over segments s of
 * sum_{k < seglen} a[s * FN_MR + i][k] * bp[boff[s] + k * FN_NR + j].
 * a holds FN_MR row pointers per segment (rows >= mr repeat a valid one); bp is a
 * packed panel (zero past nr); init is NULL (zeros) or a row of nr floats. */
FN_AVX512 FN_UNUSED static void fn_ukr_nn(ptrdiff_t nseg, ptrdiff_t seglen, const float *const *a,
                                const ptrdiff_t *boff, const float *bp, const float *init,
                                float *c, ptrdiff_t ldc, int mr, int nr, int accumulate)
{
    __mmask16 m[4];
    __m512 i0, i1, i2, i3;
    ptrdiff_t s, k;
    FN_TILE_DECL
    fn_masks(nr, m);
    /* the tile of C is read or written only at the end: fetch it while the FMAs run */
    for (s = 0; s < mr; s++) {
        const char *cr = (const char *)(c + s * ldc);
        _mm_prefetch(cr, _MM_HINT_T0); _mm_prefetch(cr + 64, _MM_HINT_T0);
        _mm_prefetch(cr + 128, _MM_HINT_T0); _mm_prefetch(cr + 192, _MM_HINT_T0);
    }
    if (init != NULL) {
        i0 = _mm512_maskz_loadu_ps(m[0], init);
        i1 = _mm512_maskz_loadu_ps(m[1], init + 16);
        i2 = _mm512_maskz_loadu_ps(m[2], init + 32);
        i3 = _mm512_maskz_loadu_ps(m[3], init + 48);
    } else {
        i0 = i1 = i2 = i3 = _mm512_setzero_ps();
    }
    FN_TILE_SET(i0, i1, i2, i3)
    for (s = 0; s < nseg; s++) {
        const float *a0 = a[s * FN_MR], *a1 = a[s * FN_MR + 1], *a2 = a[s * FN_MR + 2];
        const float *a3 = a[s * FN_MR + 3], *a4 = a[s * FN_MR + 4], *a5 = a[s * FN_MR + 5];
        const float *b = bp + boff[s];
        for (k = 0; k < seglen; k++, b += FN_NR) {
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
            __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
            FN_TILE_FMA(a0[k], a1[k], a2[k], a3[k], a4[k], a5[k])
        }
    }
    FN_TILE_STORE
}

/* C[0:mr, 0:nr] += sum over runs q of sum_{r < len[q]} A_r[i] * B_r[j], with
 * A_r = ar[q] + aoff + r * sa and B_r = br[q] + boff + r * sb: a tile of a
 * transposed product A^T B whose operands are read along the reduction. Only
 * A_r[0:mr] and B_r[0:nr] are read. */
FN_AVX512 FN_UNUSED static void fn_ukr_tn(ptrdiff_t nrun, const float *const *ar, const float *const *br,
                                const ptrdiff_t *len, ptrdiff_t aoff, ptrdiff_t boff,
                                ptrdiff_t sa, ptrdiff_t sb, float *c, ptrdiff_t ldc, int mr, int nr)
{
    __mmask16 m[4];
    const int accumulate = 1;
    const ptrdiff_t o1 = mr > 1 ? 1 : mr - 1, o2 = mr > 2 ? 2 : mr - 1, o3 = mr > 3 ? 3 : mr - 1;
    const ptrdiff_t o4 = mr > 4 ? 4 : mr - 1, o5 = mr > 5 ? 5 : mr - 1;
    ptrdiff_t q, r;
    __m512 z = _mm512_setzero_ps();
    FN_TILE_DECL
    fn_masks(nr, m);
    FN_TILE_SET(z, z, z, z)
    for (q = 0; q < nrun; q++) {
        const float *ap = ar[q] + aoff, *b = br[q] + boff;
        for (r = 0; r < len[q]; r++, ap += sa, b += sb) {
            __m512 b0 = _mm512_maskz_loadu_ps(m[0], b), b1 = _mm512_maskz_loadu_ps(m[1], b + 16);
            __m512 b2 = _mm512_maskz_loadu_ps(m[2], b + 32), b3 = _mm512_maskz_loadu_ps(m[3], b + 48);
            FN_TILE_FMA(ap[0], ap[o1], ap[o2], ap[o3], ap[o4], ap[o5])
        }
    }
    FN_TILE_STORE
}

/* Long reductions are cut so that a tile's share of the packed panel stays in the
 * level-2 cache. */
#define FN_KC 2048

/* C (M, N) = A (M, K) @ B (+ bias, a row of N, when not NULL) (+ C when accumulate),
 * B packed by fn_sgemm_pack; one thread. Rows go in blocks whose A rows stay cached
 * across the panels. */
FN_AVX512 FN_UNUSED static void fn_sgemm_nn(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                                  ptrdiff_t lda, const float *P, const float *bias, float *C,
                                  ptrdiff_t ldc, int accumulate)
{
    const ptrdiff_t MB = FN_MR * FN_TILES, zero = 0;
    ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, m0, p, i, k0, r;
    const float *rows[FN_MR];
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (r = 0; r < M; r++) {
            if (!accumulate)
                memset(C + r * ldc, 0, (size_t)N * sizeof(float));
            if (bias != NULL)
                for (i = 0; i < N; i++)
                    C[r * ldc + i] += bias[i];
        }
        return;
    }
    for (m0 = 0; m0 < M; m0 += MB) {
        ptrdiff_t m1 = M - m0 < MB ? M : m0 + MB;
        for (k0 = 0; k0 < K; k0 += FN_KC) {
            ptrdiff_t kc = K - k0 < FN_KC ? K - k0 : FN_KC;
            for (p = 0; p < panels; p++) {
                int nr = (int)(N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR);
                for (i = m0; i < m1; i += FN_MR) {
                    int mr = (int)(m1 - i < FN_MR ? m1 - i : FN_MR);
                    for (r = 0; r < FN_MR; r++)
                        rows[r] = A + (i + (r < mr ? r : mr - 1)) * lda + k0;
                    fn_ukr_nn(1, kc, rows, &zero, P + (p * K + k0) * FN_NR,
                              k0 == 0 && bias != NULL ? bias + p * FN_NR : NULL,
                              C + i * ldc + p * FN_NR, ldc, mr, nr, accumulate || k0 > 0);
                }
            }
        }
    }
}

/* for (task = 0; task < count; task++) BODY, over `threads` OpenMP threads when
 * above 1 (one thread enters no parallel region: a step may take a microsecond) */
#ifdef _OPENMP
#define FN_TASKS(count, ...) \
    do { \
        ptrdiff_t task; \
        if (threads > 1) { \
            _Pragma("omp parallel for num_threads(threads) schedule(static)") \
            for (task = 0; task < (count); task++) { __VA_ARGS__ } \
        } else { \
            for (task = 0; task < (count); task++) { __VA_ARGS__ } \
        } \
    } while (0)
#else
#define FN_TASKS(count, ...) \
    do { ptrdiff_t task; for (task = 0; task < (count); task++) { __VA_ARGS__ } } while (0)
#endif

/* acc[0..3] += a (K) @ one packed panel: two interleaved chains of four vectors
 * keep eight FMAs in flight (a matrix-vector step, where a 6-row tile would waste
 * 5/6 of its work). */
FN_AVX512 FN_UNUSED static inline void fn_row_acc(ptrdiff_t K, const float *a, const float *bp, __m512 acc[4])
{
    __m512 c0 = acc[0], c1 = acc[1], c2 = acc[2], c3 = acc[3];
    __m512 d0 = _mm512_setzero_ps(), d1 = d0, d2 = d0, d3 = d0;
    ptrdiff_t k = 0;
    for (; k + 1 < K; k += 2, bp += 2 * FN_NR) {
        __m512 a0 = _mm512_set1_ps(a[k]), a1 = _mm512_set1_ps(a[k + 1]);
        c0 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp), c0);
        c1 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 16), c1);
        c2 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 32), c2);
        c3 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 48), c3);
        d0 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(bp + 64), d0);
        d1 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(bp + 80), d1);
        d2 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(bp + 96), d2);
        d3 = _mm512_fmadd_ps(a1, _mm512_loadu_ps(bp + 112), d3);
    }
    if (k < K) {
        __m512 a0 = _mm512_set1_ps(a[k]);
        c0 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp), c0);
        c1 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 16), c1);
        c2 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 32), c2);
        c3 = _mm512_fmadd_ps(a0, _mm512_loadu_ps(bp + 48), c3);
    }
    acc[0] = _mm512_add_ps(c0, d0); acc[1] = _mm512_add_ps(c1, d1);
    acc[2] = _mm512_add_ps(c2, d2); acc[3] = _mm512_add_ps(c3, d3);
}

/* One row of C (+)= init + a (K) @ P panel (init: NULL or a row of nr floats). */
FN_AVX512 FN_UNUSED static void fn_ukr_row(ptrdiff_t K, const float *a, const float *bp, const float *init,
                                           float *c, int nr, int accumulate)
{
    __mmask16 m[4];
    __m512 acc[4];
    int v;
    fn_masks(nr, m);
    for (v = 0; v < 4; v++)
        acc[v] = init != NULL ? _mm512_maskz_loadu_ps(m[v], init + 16 * v) : _mm512_setzero_ps();
    fn_row_acc(K, a, bp, acc);
    for (v = 0; v < 4; v++) {
        if (accumulate)
            acc[v] = _mm512_add_ps(acc[v], _mm512_maskz_loadu_ps(m[v], c + 16 * v));
        _mm512_mask_storeu_ps(c + 16 * v, m[v], acc[v]);
    }
}

/* fn_sgemm_nn on `threads` OpenMP threads (when the build has OpenMP): tasks of a
 * block of about FN_TASK_TILES tiles of rows by one panel, each written by one
 * thread. Blocks differ by at most one tile (a last block of 16 rows next to ones
 * of 48 left a thread idle for a third of an L1 step). When A fits in half the
 * level-2 cache (a recurrent step) the tasks go panel by panel, so each thread
 * keeps its panel cached across all rows and reads only its share of P from the
 * shared cache; a larger A goes block by block, so a block of A stays cached
 * across the panels. A tile's sums do not depend on the blocks or their order, so
 * neither does the result on the thread count. A single row takes the
 * matrix-vector kernel. */
#define FN_TASK_TILES 8
#define FN_A_CACHED (512 * 1024)
FN_AVX512 FN_UNUSED static void fn_sgemm_nn_mt(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                                               ptrdiff_t lda, const float *P, const float *bias, float *C,
                                               ptrdiff_t ldc, int accumulate, int threads)
{
    const ptrdiff_t panels = (N + FN_NR - 1) / FN_NR, tiles = (M + FN_MR - 1) / FN_MR;
    const ptrdiff_t blocks = (tiles + FN_TASK_TILES - 1) / FN_TASK_TILES;
    const int by_panel = (double)M * (double)K * sizeof(float) <= FN_A_CACHED;
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        fn_sgemm_nn(M, N, K, A, lda, P, bias, C, ldc, accumulate);
        return;
    }
    if (panels * blocks < 2)
        threads = 1;
    FN_TASKS(panels * blocks,
        ptrdiff_t p = by_panel ? task / blocks : task % panels;
        ptrdiff_t q = by_panel ? task % blocks : task / panels;
        ptrdiff_t r0 = q * tiles / blocks * FN_MR, r1 = (q + 1) * tiles / blocks * FN_MR;
        int width = (int)(N - p * FN_NR < FN_NR ? N - p * FN_NR : FN_NR);
        if (r1 > M)
            r1 = M;
        /* the panel is a packed (K, width) matrix of its own */
        if (M == 1)
            fn_ukr_row(K, A, P + p * K * FN_NR, bias != NULL ? bias + p * FN_NR : NULL, C + p * FN_NR,
                       width, accumulate);
        else
            fn_sgemm_nn(r1 - r0, width, K, A + r0 * lda, lda, P + p * K * FN_NR,
                        bias != NULL ? bias + p * FN_NR : NULL, C + r0 * ldc + p * FN_NR, ldc, accumulate);
    );
}

/* At (cols, rows) = A (rows, cols)^T, in blocks of 16 rows: a block's rows stay in
 * the level-1 cache while its columns are written out. */
FN_AVX512 FN_UNUSED static void fn_transpose(ptrdiff_t rows, ptrdiff_t cols, const float *A,
                                             ptrdiff_t lda, float *At, ptrdiff_t ldt)
{
    ptrdiff_t i0, i, j;
    for (i0 = 0; i0 < rows; i0 += 16) {
        ptrdiff_t i1 = rows - i0 < 16 ? rows : i0 + 16;
        for (j = 0; j < cols; j++)
            for (i = i0; i < i1; i++)
                At[j * ldt + i] = A[i * lda + j];
    }
}

/* C (M, N1 + N2) (+)= A^T [B1 | B2] with A (R, M), B1 (R, N1) and B2 (R, N2) (a weight
 * gradient: the reduction runs along the rows of all three). The reduction goes in
 * chunks of FN_TN_RC rows: each chunk of A is transposed and each of B packed (in
 * tasks over `threads` threads), then fn_sgemm_nn_mt multiplies them, so the tiles
 * read both operands contiguously where reading A^T in place would stride through
 * memory a row per multiply-add. The chunk order is fixed, so the result does not
 * depend on the thread count. Returns 0, having done nothing, when its scratch
 * cannot be allocated. */
#define FN_TN_RC 512
#define FN_TN_COLS 64
FN_AVX512 FN_UNUSED static int fn_sgemm_tn2_mt(ptrdiff_t M, ptrdiff_t N1, ptrdiff_t N2, ptrdiff_t R,
                                               const float *A, ptrdiff_t lda, const float *B1,
                                               ptrdiff_t ldb1, const float *B2, ptrdiff_t ldb2,
                                               float *C, ptrdiff_t ldc, int accumulate, int threads)
{
    const ptrdiff_t rc = R < FN_TN_RC ? R : FN_TN_RC, N = N1 + N2;
    const ptrdiff_t p1 = (N1 + FN_NR - 1) / FN_NR, p2 = (N2 + FN_NR - 1) / FN_NR;
    const ptrdiff_t blocks = (M + FN_TN_COLS - 1) / FN_TN_COLS;
    float *At, *P;
    ptrdiff_t r0, r;
    if (M <= 0 || N <= 0)
        return 1;
    if (R <= 0) {
        if (!accumulate)
            for (r = 0; r < M; r++)
                memset(C + r * ldc, 0, (size_t)N * sizeof(float));
        return 1;
    }
    At = (float *)fn_alloc(((size_t)M + (size_t)(p1 + p2) * FN_NR) * (size_t)rc * sizeof(float));
    if (At == NULL)
        return 0;
    P = At + M * rc;
    for (r0 = 0; r0 < R; r0 += rc) {
        const ptrdiff_t len = R - r0 < rc ? R - r0 : rc;
        const float *a = A + r0 * lda;
        FN_TASKS(blocks + p1 + p2,
            if (task < blocks) {
                ptrdiff_t c0 = task * FN_TN_COLS;
                fn_transpose(len, M - c0 < FN_TN_COLS ? M - c0 : FN_TN_COLS, a + c0, lda, At + c0 * len, len);
            } else if (task < blocks + p1) {
                ptrdiff_t p = task - blocks, c0 = p * FN_NR;
                fn_sgemm_pack(len, N1 - c0 < FN_NR ? N1 - c0 : FN_NR, B1 + r0 * ldb1 + c0, ldb1, 1,
                              P + p * len * FN_NR);
            } else {
                ptrdiff_t p = task - blocks - p1, c0 = p * FN_NR;
                fn_sgemm_pack(len, N2 - c0 < FN_NR ? N2 - c0 : FN_NR, B2 + r0 * ldb2 + c0, ldb2, 1,
                              P + (p1 + p) * len * FN_NR);
            }
        );
        fn_sgemm_nn_mt(M, N1, len, At, len, P, NULL, C, ldc, accumulate || r0 > 0, threads);
        fn_sgemm_nn_mt(M, N2, len, At, len, P + p1 * len * FN_NR, NULL, C + N1, ldc,
                       accumulate || r0 > 0, threads);
    }
    fn_free(At);
    return 1;
}

/* C (M, N) (+)= A^T B: fn_sgemm_tn2_mt with one right operand. */
FN_AVX512 FN_UNUSED static int fn_sgemm_tn_mt(ptrdiff_t M, ptrdiff_t N, ptrdiff_t R, const float *A,
                                              ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C,
                                              ptrdiff_t ldc, int accumulate, int threads)
{
    return fn_sgemm_tn2_mt(M, N, 0, R, A, lda, B, ldb, B, ldb, C, ldc, accumulate, threads);
}

/* Floats of scratch fn_sgemm_any_mt needs. */
static inline size_t fn_sgemm_any_scratch(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int trans_a)
{
    return fn_sgemm_packed_size(K, N) + (trans_a ? (size_t)M * (size_t)(K > 0 ? K : 0) : 0) + 1;
}

/* C (M, N) = op(A) @ op(B) (+ C when accumulate) for one product of moderate size:
 * op(B) is packed into scratch (fn_sgemm_any_scratch floats), a transposed A is
 * transposed there first, and `threads` split the tiles. op(A) is A (M, K) or, when
 * trans_a, A^T with A (K, M); op(B) likewise (K, N) or B^T. */
FN_AVX512 FN_UNUSED static void fn_sgemm_any_mt(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                                                ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                                                ptrdiff_t ldb, int accumulate, float *C, ptrdiff_t ldc,
                                                float *scratch, int threads)
{
    if (trans_b)
        fn_sgemm_pack_t(K, N, B, ldb, scratch);
    else
        fn_sgemm_pack(K, N, B, ldb, 1, scratch);
    if (trans_a) {
        float *At = scratch + fn_sgemm_packed_size(K, N);
        fn_transpose(K, M, A, lda, At, K);
        A = At;
        lda = K;
    }
    fn_sgemm_nn_mt(M, N, K, A, lda, scratch, NULL, C, ldc, accumulate, threads);
}

/* Size of the per-thread scratch of fn_conv_forward, in pointers. */
static inline size_t fn_conv_scratch(const fn_conv_geom *g)
{
    return (size_t)FN_TILES * (size_t)(g->kh * g->kw) * (FN_MR + 1) + FN_TILES;
}

/* Output pixels m0 .. m1 (m = (n * Ho + oh) * Wo + ow) of one group of an NHWC
 * convolution as an implicit GEMM: y[m, 0:Cog] = bias + sum over taps (i, j) and
 * channels c of x[n, ih, iw, c0 + c] * P[(i * kw + j) * Cg + c, :], with P the
 * packed (kh * kw * Cg, Cog) weights. Taps falling in the padding read `zeros`
 * (at least Cg floats); a tap in the padding for all pixels of a tile is skipped.
 * scratch: fn_conv_scratch(g) pointers. */
FN_AVX512 FN_UNUSED static void fn_conv_forward(const fn_conv_geom *g, const float *x, ptrdiff_t c0,
                                      const float *P, ptrdiff_t Cog, const float *bias,
                                      float *y, ptrdiff_t ldy, ptrdiff_t m0, ptrdiff_t m1,
                                      const float *zeros, void **scratch)
{
    const ptrdiff_t taps = g->kh * g->kw, K = taps * g->Cg;
    const ptrdiff_t panels = (Cog + FN_NR - 1) / FN_NR;
    const float **ptrs = (const float **)scratch;
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
            const float **tp = ptrs + t * taps * FN_MR;
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
                        tb[ns++] = (i * g->kw + j) * g->Cg * FN_NR;
                }
            nseg[t] = ns;
        }
        for (p = 0; p < panels; p++) {
            int nr = (int)(Cog - p * FN_NR < FN_NR ? Cog - p * FN_NR : FN_NR);
            for (t = 0; t < ntiles; t++) {
                ptrdiff_t first = b0 + t * FN_MR;
                int mr = (int)(b1 - first < FN_MR ? b1 - first : FN_MR);
                fn_ukr_nn(nseg[t], g->Cg, ptrs + t * taps * FN_MR, boff + t * taps,
                          P + p * K * FN_NR, bias != NULL ? bias + p * FN_NR : NULL,
                          y + first * ldy + p * FN_NR, ldy, mr, nr, 0);
            }
        }
    }
}

/* Size of the scratch of fn_conv_weight_grad for `rows` output rows, in pointers. */
static inline size_t fn_conv_dw_scratch(ptrdiff_t rows)
{
    return (size_t)(rows > 0 ? rows : 0) * 3;
}

/* dw[(i * kw + j) * Cg + c, 0:Cog] += sum over the output pixels of output rows
 * q0 .. q1 (q = n * Ho + oh) of x[n, ih, iw, c0 + c] * dy[pixel, co0 : co0 + Cog],
 * the taps in the padding left out: one group's weight gradient over a chunk of
 * the batch, dw with row stride ldw. scratch: fn_conv_dw_scratch(q1 - q0). */
FN_AVX512 FN_UNUSED static void fn_conv_weight_grad(const fn_conv_geom *g, const float *x, ptrdiff_t c0,
                                          const float *dy, ptrdiff_t ldy, ptrdiff_t co0,
                                          ptrdiff_t Cog, float *dw, ptrdiff_t ldw,
                                          ptrdiff_t q0, ptrdiff_t q1, void **scratch)
{
    const ptrdiff_t rows = q1 - q0;
    const float **ar = (const float **)scratch, **br = ar + rows;
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
                    fn_ukr_tn(nrun, ar, br, len, cb, p, g->sw * g->C, ldy,
                              dw + ((i * g->kw + j) * g->Cg + cb) * ldw + p, ldw, mr, nr);
                }
            }
        }
}

#else  /* no AVX-512 build: the callers take their BLAS paths */

FN_UNUSED static int fn_sgemm_supported(void) { return 0; }

FN_UNUSED static void fn_sgemm_pack_t(ptrdiff_t K, ptrdiff_t N, const float *S, ptrdiff_t ls, float *P)
{
    (void)K; (void)N; (void)S; (void)ls; (void)P;
}

static inline size_t fn_sgemm_any_scratch(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int trans_a)
{
    (void)M; (void)N; (void)K; (void)trans_a;
    return 1;
}

FN_UNUSED static void fn_sgemm_any_mt(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                      const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
                                      int accumulate, float *C, ptrdiff_t ldc, float *scratch, int threads)
{
    (void)trans_a; (void)trans_b; (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb;
    (void)accumulate; (void)C; (void)ldc; (void)scratch; (void)threads;
}

static inline size_t fn_conv_scratch(const fn_conv_geom *g) { (void)g; return 1; }
static inline size_t fn_conv_dw_scratch(ptrdiff_t rows) { (void)rows; return 1; }

FN_UNUSED static void fn_sgemm_nn_mt(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A,
                                     ptrdiff_t lda, const float *P, const float *bias, float *C,
                                     ptrdiff_t ldc, int accumulate, int threads)
{
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)P; (void)bias; (void)C; (void)ldc; (void)accumulate;
    (void)threads;
}

FN_UNUSED static int fn_sgemm_tn2_mt(ptrdiff_t M, ptrdiff_t N1, ptrdiff_t N2, ptrdiff_t R,
                                     const float *A, ptrdiff_t lda, const float *B1, ptrdiff_t ldb1,
                                     const float *B2, ptrdiff_t ldb2, float *C, ptrdiff_t ldc,
                                     int accumulate, int threads)
{
    (void)M; (void)N1; (void)N2; (void)R; (void)A; (void)lda; (void)B1; (void)ldb1; (void)B2;
    (void)ldb2; (void)C; (void)ldc; (void)accumulate; (void)threads;
    return 0;
}

FN_UNUSED static int fn_sgemm_tn_mt(ptrdiff_t M, ptrdiff_t N, ptrdiff_t R, const float *A,
                                    ptrdiff_t lda, const float *B, ptrdiff_t ldb, float *C,
                                    ptrdiff_t ldc, int accumulate, int threads)
{
    (void)M; (void)N; (void)R; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
    (void)accumulate; (void)threads;
    return 0;
}

FN_UNUSED static void fn_conv_forward(const fn_conv_geom *g, const float *x, ptrdiff_t c0, const float *P,
                            ptrdiff_t Cog, const float *bias, float *y, ptrdiff_t ldy,
                            ptrdiff_t m0, ptrdiff_t m1, const float *zeros, void **scratch)
{
    (void)g; (void)x; (void)c0; (void)P; (void)Cog; (void)bias; (void)y; (void)ldy;
    (void)m0; (void)m1; (void)zeros; (void)scratch;
}

FN_UNUSED static void fn_conv_weight_grad(const fn_conv_geom *g, const float *x, ptrdiff_t c0,
                                const float *dy, ptrdiff_t ldy, ptrdiff_t co0, ptrdiff_t Cog,
                                float *dw, ptrdiff_t ldw, ptrdiff_t q0, ptrdiff_t q1, void **scratch)
{
    (void)g; (void)x; (void)c0; (void)dy; (void)ldy; (void)co0; (void)Cog; (void)dw; (void)ldw;
    (void)q0; (void)q1; (void)scratch;
}
#endif

#endif
