"""RNN, GRU and LSTM kernels of the cython backend (normalised arguments; docs/KERNELS.md).

Layout: W acts on concat = [h_prev, x_t], so its first n_a columns (row stride
n_a + n_x) are W_h and the rest W_x; GEMMs read both blocks in place.

Forward of a sequence:
  1. the input projection of every time step in one GEMM, x (T*m, n_x) @ W_x^T + b,
     written into the buffer that will hold each step's gate pre-activations;
  2. per step one GEMM adding h_prev @ W_h^T for all gates at once (the GRU needs a
     second one for its candidate, which sees Γr * h_prev), then one fused
     elementwise pass that turns pre-activations into gate values in place and
     computes c and h. Every h (h0 first) is kept in one (T+1, m, n_a) buffer.
The whole time loop runs in C without the GIL and allocates nothing.

The returned h (and the LSTM's c_last) are views into the state, as in the course,
whose caches hold the a<t> they return: writing into them before the backward pass
changes the gradients it computes.

Backward through time keeps every step's pre-activation gradient dz in one
(T, m, gates * n_a) buffer; per step it runs one fused elementwise pass and one GEMM
for dh_prev (two for the GRU). After the loop, dx, dW_h and dW_x are one GEMM
each over all steps (dW_h = dz^T @ [h0 .. h_{T-1}]) and db the column sums of dz.

float32 on CPUs with AVX-512 runs every product on fastnn's own kernels
(fn_sgemm.h; docs/KERNELS.md): weights packed once per sequence, the input
projection with the bias as the tiles' initial value, dW as one A^T B call for
both blocks. The LSTM forward fuses each step's product and cell in one kernel
(fn_lstm.h): the tile holds the four gates of 16 units and its epilogue writes the
gate values, c, tanh(c) and h, so the elementwise pass below is not needed. From
a batch of _LSTM_X_IN_STEP_ROWS rows on, that kernel multiplies [h_prev, x_t] by
the whole of W in each step instead of taking step 1's projection (whose
pre-activations would make a round trip through memory).

Without AVX-512, float32 sequences on x86-64 with AVX2 and batches of up to
_PACKED_MAX_ROWS rows run the per-step GEMMs (and the input projection) on a small
GEMM kernel of this module instead of BLAS: it packs W_h once per sequence, where
BLAS repacks the whole block at every call, and has no per-call overhead (at m = 1
a step is a few hundred nanoseconds); its panels go alternately forwards and
backwards so that the half read last is still cached for the next step. Small
calls (under _SERIAL_MACS multiply-adds in all) run on one thread throughout and
do their float32 weight-gradient products on that kernel too, since a BLAS call
may wake BLAS's threads, whose hand-offs cost more than such products (and can
stall behind OpenMP threads still spinning from the forward). Everything else
goes to BLAS.

State and gradient arrays come from fastnn's buffer cache (fastnn/_arena.py), so
the tens of megabytes of a large call are not faulted in afresh every time.

The elementwise passes are C functions written once for float and double (macros
below). float uses a branch-free exp that the compiler vectorises; on x86-64 with
GCC the row loops are also compiled for AVX2 and AVX-512 and picked at load time.
double uses the C library's exp and tanh. Large steps split their rows over
OpenMP threads; BLAS runs the GEMMs on its own threads, never at the same time
as the OpenMP ones. Results do not depend on the thread count: rows are
independent and every sum is taken in a fixed order.
"""
import numpy as np

from .._arena import empty as _empty

from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from ._blas cimport gemm

cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>

    #ifdef _OPENMP
    #include <omp.h>
    static int fastnn_recurrent_openmp(void) { return 1; }
    static int fastnn_recurrent_max_threads(void) { return omp_get_max_threads(); }
    #define FN_SIMD _Pragma("omp simd")
    #define FN_PARALLEL_FOR _Pragma("omp parallel for num_threads(threads) schedule(static)")
    #else
    static int fastnn_recurrent_openmp(void) { return 0; }
    static int fastnn_recurrent_max_threads(void) { return 1; }
    #define FN_SIMD
    #define FN_PARALLEL_FOR
    #endif

    /* for (i = 0; i < count; i++) BODY, split over `threads` threads when above 1
       (one thread skips the OpenMP runtime: a step can take under a microsecond) */
    #define FN_FOR(count, ...) \
        do { \
            ptrdiff_t i; \
            if (threads > 1) { \
                FN_PARALLEL_FOR \
                for (i = 0; i < (count); i++) { __VA_ARGS__ } \
            } else { \
                for (i = 0; i < (count); i++) { __VA_ARGS__ } \
            } \
        } while (0)

    /* x86-64 levels 3 (AVX2, FMA) and 4 (AVX-512) */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 11
    #define FN_X86_LEVELS 1
    #define FN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define FN_X86_LEVELS 0
    #define FN_CLONES
    #endif

    /* e^x = 2^n * e^r with n = round(x / ln 2) and |r| <= ln2 / 2, e^r by its Taylor
       polynomial of degree 7 (truncation below 6e-9 relative, under float32's
       rounding; a higher degree only costs time); branch-free so that loops calling
       it vectorise. Saturates to 0 and inf like expf; NaN stays NaN. */
    static inline float fn_exp_f(float x)
    {
        const float shift = 12582912.0f;  /* 1.5 * 2^23: x + shift - shift rounds x */
        float xc = (x >= -87.0f && x <= 88.0f) ? x : (x > 88.0f ? 88.0f : -87.0f);
        float n = (xc * 1.44269504088896341f + shift) - shift;
        float r = xc - n * 0.693359375f;      /* ln 2 split in two: the first part */
        r = r + n * 2.12194440e-4f;           /* is exact in float, so r keeps its bits */
        float p = 1.0f / 720.0f + r * (1.0f / 5040.0f);
        p = 1.0f / 120.0f + r * p;
        p = 1.0f / 24.0f + r * p;
        p = 1.0f / 6.0f + r * p;
        p = 0.5f + r * p;
        p = 1.0f + r * p;
        p = 1.0f + r * p;
        int32_t bits = ((int32_t)n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        float y = p * scale;
        y = x > 88.0f ? INFINITY : y;
        y = x < -87.0f ? 0.0f : y;
        return x != x ? x : y;
    }

    /* Both forms use e^-|x| <= 1, so nothing overflows and small values keep
       their relative precision. */
    static inline float fn_sigmoid_f(float x)
    {
        float e = fn_exp_f(-fabsf(x));
        float s = 1.0f / (1.0f + e);
        return x >= 0.0f ? s : e * s;
    }

    static inline double fn_sigmoid_d(double x)
    {
        double e = exp(-fabs(x));
        double s = 1.0 / (1.0 + e);
        return x >= 0.0 ? s : e * s;
    }

    /* tanh through e^-2|x| loses relative precision near 0 to cancellation, so below
       0.25 its odd Taylor series is used (error below 1e-8 relative). */
    static inline float fn_tanh_f(float x)
    {
        float a = fabsf(x);
        float z = a * a;
        float p = 62.0f / 2835.0f;
        p = -17.0f / 315.0f + z * p;
        p = 2.0f / 15.0f + z * p;
        p = -1.0f / 3.0f + z * p;
        p = a + a * z * p;
        float e = fn_exp_f(-2.0f * a);
        float q = (1.0f - e) / (1.0f + e);
        return copysignf(a < 0.25f ? p : q, x);
    }

    static inline double fn_tanh_d(double x) { return tanh(x); }

    #define FN_RELU(x) ((x) <= 0 ? 0 : (x))  /* NaN stays NaN */

    /* One time step of each cell over `rows` batch rows (row i of every array at
       i * its row length). g holds the gate pre-activations (rows, gates * n) and
       is overwritten with the gate values. */
    #define FN_DEFINE_KERNELS(T, SUF, SIGMOID, TANH) \\
    \\
    FN_CLONES static void fn_rnn_forward_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            T *restrict h, int relu, int threads) \\
    { \\
        FN_FOR(rows, \\
            T *hi = h + i * n; \\
            ptrdiff_t j; \\
            if (relu) { \\
                FN_SIMD \\
                for (j = 0; j < n; j++) hi[j] = FN_RELU(hi[j]); \\
            } else { \\
                FN_SIMD \\
                for (j = 0; j < n; j++) hi[j] = TANH(hi[j]); \\
            } \\
        ); \\
    } \\
    \\
    /* dz = dh * act'(z), act' taken from h = act(z); ReLU' is 0 at 0 */ \\
    FN_CLONES static void fn_rnn_backward_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            const T *restrict h, const T *restrict dh, T *restrict dz, int relu, int threads) \\
    { \\
        FN_FOR(rows, \\
            const T *hi = h + i * n, *dhi = dh + i * n; \\
            T *dzi = dz + i * n; \\
            ptrdiff_t j; \\
            if (relu) { \\
                FN_SIMD \\
                for (j = 0; j < n; j++) dzi[j] = dhi[j] * (hi[j] > 0 ? (T)1 : (T)0); \\
            } else { \\
                FN_SIMD \\
                for (j = 0; j < n; j++) dzi[j] = dhi[j] * (1 - hi[j] * hi[j]); \\
            } \\
        ); \\
    } \\
    \\
    /* g rows [f, u, c~, o] */ \\
    FN_CLONES static void fn_lstm_forward_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            T *restrict g, const T *restrict c_prev, T *restrict c_next, \\
            T *restrict tanh_c, T *restrict h_next, int threads) \\
    { \\
        FN_FOR(rows, \\
            T *gf = g + i * 4 * n, *gu = gf + n, *gc = gu + n, *go = gc + n; \\
            const T *cp = c_prev + i * n; \\
            T *cn = c_next + i * n, *tc = tanh_c + i * n, *hn = h_next + i * n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T f = SIGMOID(gf[j]), u = SIGMOID(gu[j]), cc = TANH(gc[j]), o = SIGMOID(go[j]); \\
                T c = f * cp[j] + u * cc; \\
                T t = TANH(c); \\
                gf[j] = f; gu[j] = u; gc[j] = cc; go[j] = o; \\
                cn[j] = c; tc[j] = t; hn[j] = o * t; \\
            } \\
        ); \\
    } \\
    \\
    /* dc holds dLoss/dc_next on entry (dh's share not yet added) and dLoss/dc_prev on exit */ \\
    FN_CLONES static void fn_lstm_backward_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            const T *restrict g, const T *restrict c_prev, const T *restrict tanh_c, \\
            const T *restrict dh, T *restrict dc, T *restrict dz, int threads) \\
    { \\
        FN_FOR(rows, \\
            const T *gf = g + i * 4 * n, *gu = gf + n, *gc = gu + n, *go = gc + n; \\
            const T *cp = c_prev + i * n, *tc = tanh_c + i * n, *dhi = dh + i * n; \\
            T *dci = dc + i * n; \\
            T *dzf = dz + i * 4 * n, *dzu = dzf + n, *dzc = dzu + n, *dzo = dzc + n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T f = gf[j], u = gu[j], cc = gc[j], o = go[j], t = tc[j], d = dhi[j]; \\
                T k = dci[j] + d * o * (1 - t * t); \\
                dzo[j] = d * t * o * (1 - o); \\
                dzc[j] = k * u * (1 - cc * cc); \\
                dzu[j] = k * cc * u * (1 - u); \\
                dzf[j] = k * cp[j] * f * (1 - f); \\
                dci[j] = k * f; \\
            } \\
        ); \\
    } \\
    \\
    /* g rows [u, r, c~]: the gates, and rh = r * h_prev (the candidate's input) */ \\
    FN_CLONES static void fn_gru_gates_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            T *restrict g, const T *restrict h_prev, T *restrict rh, int threads) \\
    { \\
        FN_FOR(rows, \\
            T *gu = g + i * 3 * n, *gr = gu + n; \\
            const T *hp = h_prev + i * n; \\
            T *rhi = rh + i * n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T r = SIGMOID(gr[j]); \\
                gu[j] = SIGMOID(gu[j]); \\
                gr[j] = r; \\
                rhi[j] = r * hp[j]; \\
            } \\
        ); \\
    } \\
    \\
    FN_CLONES static void fn_gru_output_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            T *restrict g, const T *restrict h_prev, T *restrict h_next, int threads) \\
    { \\
        FN_FOR(rows, \\
            T *gu = g + i * 3 * n, *gc = gu + 2 * n; \\
            const T *hp = h_prev + i * n; \\
            T *hn = h_next + i * n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T u = gu[j], cc = TANH(gc[j]); \\
                gc[j] = cc; \\
                hn[j] = u * cc + (1 - u) * hp[j]; \\
            } \\
        ); \\
    } \\
    \\
    /* dz_u and dz_c; dh_prev += dh * (1 - u) (its direct share) */ \\
    FN_CLONES static void fn_gru_backward_out_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            const T *restrict g, const T *restrict h_prev, const T *restrict dh, \\
            T *restrict dh_prev, T *restrict dz, int threads) \\
    { \\
        FN_FOR(rows, \\
            const T *gu = g + i * 3 * n, *gc = gu + 2 * n; \\
            const T *hp = h_prev + i * n, *dhi = dh + i * n; \\
            T *dhp = dh_prev + i * n, *dzu = dz + i * 3 * n, *dzc = dzu + 2 * n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T u = gu[j], cc = gc[j], d = dhi[j]; \\
                dzc[j] = d * u * (1 - cc * cc); \\
                dzu[j] = d * (cc - hp[j]) * u * (1 - u); \\
                dhp[j] += d * (1 - u); \\
            } \\
        ); \\
    } \\
    \\
    /* given drh = dLoss/d(r * h_prev): dz_r; dh_prev += drh * r */ \\
    FN_CLONES static void fn_gru_backward_reset_rows_##SUF(ptrdiff_t rows, ptrdiff_t n, \\
            const T *restrict g, const T *restrict h_prev, const T *restrict drh, \\
            T *restrict dh_prev, T *restrict dz, int threads) \\
    { \\
        FN_FOR(rows, \\
            const T *gr = g + i * 3 * n + n; \\
            const T *hp = h_prev + i * n, *drhi = drh + i * n; \\
            T *dhp = dh_prev + i * n, *dzr = dz + i * 3 * n + n; \\
            ptrdiff_t j; \\
            FN_SIMD \\
            for (j = 0; j < n; j++) { \\
                T r = gr[j], d = drhi[j]; \\
                dzr[j] = d * hp[j] * r * (1 - r); \\
                dhp[j] += d * r; \\
            } \\
        ); \\
    }

    FN_DEFINE_KERNELS(float, f, fn_sigmoid_f, fn_tanh_f)
    FN_DEFINE_KERNELS(double, d, fn_sigmoid_d, fn_tanh_d)

    /* The per-step GEMM of a float sequence, C (m, N) += A (m, K) @ B (K, N), with B
       packed once per sequence: a BLAS call would repack the whole weight block at
       every step (a third of the step's time at n_a = 256) and costs microseconds of
       overhead when m is 1. The packed B is column panels of FN_PANEL floats, panel p
       holding B[k, p * FN_PANEL + j] at (p * K + k) * FN_PANEL + j, zero-padded. */
    #define FN_PANEL 32

    /* dst (cols, rows) = src (rows, cols)^T, in 8 x 8 blocks (whole ones unrolled) */
    static void fn_transpose_f(ptrdiff_t rows, ptrdiff_t cols, const float *restrict src, ptrdiff_t lds,
                               float *restrict dst, ptrdiff_t ldd)
    {
        ptrdiff_t i0, j0, i, j;
        for (i0 = 0; i0 < rows; i0 += 8)
            for (j0 = 0; j0 < cols; j0 += 8) {
                const float *s = src + i0 * lds + j0;
                float *d = dst + j0 * ldd + i0;
                if (i0 + 8 <= rows && j0 + 8 <= cols) {
                    for (j = 0; j < 8; j++)
                        for (i = 0; i < 8; i++)
                            d[j * ldd + i] = s[i * lds + j];
                } else {
                    for (j = 0; j < 8 && j0 + j < cols; j++)
                        for (i = 0; i < 8 && i0 + i < rows; i++)
                            d[j * ldd + i] = s[i * lds + j];
                }
            }
    }

    static void fn_pack_f(ptrdiff_t K, ptrdiff_t N, const float *src, ptrdiff_t sk, ptrdiff_t sn,
                          float *restrict packed)
    {
        ptrdiff_t panels = (N + FN_PANEL - 1) / FN_PANEL, p, k, j, col;
        /* the loop order follows the source's contiguous direction */
        if (sn == 1) {
            for (p = 0; p < panels; p++)
                for (k = 0; k < K; k++)
                    for (j = 0; j < FN_PANEL; j++) {
                        col = p * FN_PANEL + j;
                        packed[(p * K + k) * FN_PANEL + j] = col < N ? src[k * sk + col] : 0.0f;
                    }
        } else if (sk == 1) {
            /* a panel of a transposed source is a block transpose */
            for (p = 0; p < panels; p++) {
                ptrdiff_t width = N - p * FN_PANEL < FN_PANEL ? N - p * FN_PANEL : FN_PANEL;
                float *out = packed + p * K * FN_PANEL;
                fn_transpose_f(width, K, src + p * FN_PANEL * sn, sn, out, FN_PANEL);
                if (width < FN_PANEL)
                    for (k = 0; k < K; k++)
                        for (j = width; j < FN_PANEL; j++) out[k * FN_PANEL + j] = 0.0f;
            }
        } else {
            for (col = 0; col < panels * FN_PANEL; col++) {
                float *out = packed + (col / FN_PANEL) * K * FN_PANEL + col % FN_PANEL;
                if (col < N)
                    for (k = 0; k < K; k++) out[k * FN_PANEL] = src[k * sk + col * sn];
                else
                    for (k = 0; k < K; k++) out[k * FN_PANEL] = 0.0f;
            }
        }
    }

    /* R rows of C against one panel, the panel held in NV vectors of VW floats:
       R * NV independent accumulators hide the FMA latency. */
    #define FN_TILE(R, V, VU, VW) \\
        for (; r + (R) <= m; r += (R)) { \\
            V acc[R][FN_PANEL / VW]; \\
            for (i = 0; i < (R); i++) for (v = 0; v < FN_PANEL / VW; v++) acc[i][v] = (V){0}; \\
            for (k = 0; k < K; k++) { \\
                V b[FN_PANEL / VW]; \\
                for (v = 0; v < FN_PANEL / VW; v++) b[v] = *(const VU *)(Pp + k * FN_PANEL + v * VW); \\
                for (i = 0; i < (R); i++) { \\
                    float a = A[(r + i) * lda + k]; \\
                    for (v = 0; v < FN_PANEL / VW; v++) acc[i][v] += a * b[v]; \\
                } \\
            } \\
            for (i = 0; i < (R); i++) { \\
                float *c = C + (r + i) * ldc; \\
                if (width == FN_PANEL) { \\
                    for (v = 0; v < FN_PANEL / VW; v++) *(VU *)(c + v * VW) += acc[i][v]; \\
                } else { \\
                    for (v = 0; v < FN_PANEL / VW; v++) *(VU *)(tmp + v * VW) = acc[i][v]; \\
                    for (j = 0; j < width; j++) c[j] += tmp[j]; \\
                } \\
            } \\
        }

    /* Big tiles first, then smaller ones for the rows left over; a single row splits
       its k range into four interleaved chains to keep more FMAs in flight. Rows go
       in blocks of FN_ROW_BLOCK so a block of A stays in cache across the panels. */
    #define FN_ROW_BLOCK 128
    #define FN_DEFINE_PACKED_GEMM(SUF, TARGET, V, VU, VW, R1, R2) \\
    __attribute__((target(TARGET))) static inline void fn_panel_##SUF(ptrdiff_t m, ptrdiff_t K, \\
            ptrdiff_t width, const float *restrict A, ptrdiff_t lda, const float *restrict Pp, \\
            float *restrict C, ptrdiff_t ldc) \\
    { \\
        ptrdiff_t r = 0, k; \\
        int i, v, j; \\
        float tmp[FN_PANEL]; \\
        FN_TILE(R1, V, VU, VW) \\
        FN_TILE(R2, V, VU, VW) \\
        for (; r < m; r++) { \\
            V acc[4][FN_PANEL / VW]; \\
            const float *a = A + r * lda; \\
            float *c = C + r * ldc; \\
            for (i = 0; i < 4; i++) for (v = 0; v < FN_PANEL / VW; v++) acc[i][v] = (V){0}; \\
            for (k = 0; k + 3 < K; k += 4) \\
                for (i = 0; i < 4; i++) \\
                    for (v = 0; v < FN_PANEL / VW; v++) \\
                        acc[i][v] += a[k + i] * *(const VU *)(Pp + (k + i) * FN_PANEL + v * VW); \\
            for (i = 0; k < K; k++, i++) \\
                for (v = 0; v < FN_PANEL / VW; v++) acc[i][v] += a[k] * *(const VU *)(Pp + k * FN_PANEL + v * VW); \\
            if (width == FN_PANEL) { \\
                for (v = 0; v < FN_PANEL / VW; v++) \\
                    *(VU *)(c + v * VW) += (acc[0][v] + acc[1][v]) + (acc[2][v] + acc[3][v]); \\
            } else { \\
                for (v = 0; v < FN_PANEL / VW; v++) \\
                    *(VU *)(tmp + v * VW) = (acc[0][v] + acc[1][v]) + (acc[2][v] + acc[3][v]); \\
                for (j = 0; j < width; j++) c[j] += tmp[j]; \\
            } \\
        } \\
    } \\
    \\
    /* Panels go alternately forwards and backwards (flipped by `reverse`, which the \\
       time loops toggle every step): the panels read last are still in cache when \\
       the next pass starts, where a fixed order would evict every one of them first \\
       once the packed block outgrows the cache. Panels are independent, so the order \\
       changes no result. */ \\
    __attribute__((target(TARGET))) static void fn_packed_gemm_##SUF(ptrdiff_t m, ptrdiff_t K, \\
            ptrdiff_t N, const float *A, ptrdiff_t lda, const float *packed, float *C, \\
            ptrdiff_t ldc, int threads, int reverse) \\
    { \\
        ptrdiff_t r0, panels = (N + FN_PANEL - 1) / FN_PANEL; \\
        for (r0 = 0; r0 < m; r0 += FN_ROW_BLOCK, reverse = !reverse) { \\
            ptrdiff_t rows = m - r0 < FN_ROW_BLOCK ? m - r0 : FN_ROW_BLOCK; \\
            int back = reverse; \\
            FN_FOR(panels, \\
                ptrdiff_t p = back ? panels - 1 - i : i; \\
                ptrdiff_t width = N - p * FN_PANEL < FN_PANEL ? N - p * FN_PANEL : FN_PANEL; \\
                fn_panel_##SUF(rows, K, width, A + r0 * lda, lda, packed + p * K * FN_PANEL, \\
                               C + r0 * ldc + p * FN_PANEL, ldc); \\
            ); \\
        } \\
    }

    #if FN_X86_LEVELS
    typedef float fn_v8 __attribute__((vector_size(32)));
    typedef float fn_v8u __attribute__((vector_size(32), aligned(4)));
    typedef float fn_v16 __attribute__((vector_size(64)));
    typedef float fn_v16u __attribute__((vector_size(64), aligned(4)));
    FN_DEFINE_PACKED_GEMM(v3, "arch=x86-64-v3", fn_v8, fn_v8u, 8, 2, 1)
    FN_DEFINE_PACKED_GEMM(v4, "arch=x86-64-v4", fn_v16, fn_v16u, 16, 8, 4)

    /* 4: AVX-512, 3: AVX2 + FMA, 0: no packed kernel (BLAS does every GEMM) */
    static int fn_packed_level(void)
    {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
            __builtin_cpu_supports("fma"))
            return 4;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            return 3;
        return 0;
    }

    static void fn_packed_gemm_f(int level, ptrdiff_t m, ptrdiff_t K, ptrdiff_t N, const float *A,
                                 ptrdiff_t lda, const float *packed, float *C, ptrdiff_t ldc, int threads,
                                 int reverse)
    {
        if (level == 4)
            fn_packed_gemm_v4(m, K, N, A, lda, packed, C, ldc, threads, reverse);
        else
            fn_packed_gemm_v3(m, K, N, A, lda, packed, C, ldc, threads, reverse);
    }
    #else
    static int fn_packed_level(void) { return 0; }
    static void fn_packed_gemm_f(int level, ptrdiff_t m, ptrdiff_t K, ptrdiff_t N, const float *A,
                                 ptrdiff_t lda, const float *packed, float *C, ptrdiff_t ldc, int threads,
                                 int reverse)
    {
        (void)level; (void)m; (void)K; (void)N; (void)A; (void)lda; (void)packed; (void)C;
        (void)ldc; (void)threads; (void)reverse;
    }
    #endif

    /* C (M, N) = op(A) @ op(B) (+ C when accumulate) on one thread through the packed
       kernel, for the products of small calls: a BLAS call there may wake BLAS's own
       threads, whose hand-offs cost more than the product (and stall outright next to
       OpenMP threads still spinning). op(A) is A (M, K) or, when trans_a, A^T with A
       (K, M); op(B) likewise (K, N) or B^T. All sizes >= 1. Returns 0 (and does
       nothing) when its scratch cannot be allocated. */
    static int fn_small_gemm_f(int level, int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N,
                               ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B,
                               ptrdiff_t ldb, int accumulate, float *C, ptrdiff_t ldc)
    {
        size_t nb = (size_t)((N + FN_PANEL - 1) / FN_PANEL) * FN_PANEL * (size_t)K;
        size_t na = trans_a ? (size_t)M * (size_t)K : 0;
        float *buf = (float *)malloc((nb + na) * sizeof(float));
        ptrdiff_t i;
        if (buf == NULL)
            return 0;
        if (trans_b)
            fn_pack_f(K, N, B, 1, ldb, buf);
        else
            fn_pack_f(K, N, B, ldb, 1, buf);
        if (trans_a) {
            float *at = buf + nb;
            fn_transpose_f(K, M, A, lda, at, K);
            A = at;
            lda = K;
        }
        if (!accumulate)
            for (i = 0; i < M; i++)
                memset(C + i * ldc, 0, (size_t)N * sizeof(float));
        fn_packed_gemm_f(level, M, K, N, A, lda, buf, C, ldc, 1, 0);
        free(buf);
        return 1;
    }
    """
    int fastnn_recurrent_openmp() noexcept nogil
    int fastnn_recurrent_max_threads() noexcept nogil
    int fn_packed_level() noexcept nogil
    void fn_pack_f(Py_ssize_t K, Py_ssize_t N, const float* src, Py_ssize_t sk, Py_ssize_t sn,
                   float* packed) noexcept nogil
    void fn_packed_gemm_f(int level, Py_ssize_t m, Py_ssize_t K, Py_ssize_t N, const float* A,
                          Py_ssize_t lda, const float* packed, float* C, Py_ssize_t ldc,
                          int threads, int reverse) noexcept nogil
    int fn_small_gemm_f(int level, int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                        const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, int accumulate,
                        float* C, Py_ssize_t ldc) noexcept nogil
    void fn_transpose_f(Py_ssize_t rows, Py_ssize_t cols, const float* src, Py_ssize_t lds, float* dst,
                        Py_ssize_t ldd) noexcept nogil
    void fn_rnn_forward_rows_f(Py_ssize_t rows, Py_ssize_t n, float* h, int relu, int threads) noexcept nogil
    void fn_rnn_forward_rows_d(Py_ssize_t rows, Py_ssize_t n, double* h, int relu, int threads) noexcept nogil
    void fn_rnn_backward_rows_f(Py_ssize_t rows, Py_ssize_t n, const float* h, const float* dh,
                                float* dz, int relu, int threads) noexcept nogil
    void fn_rnn_backward_rows_d(Py_ssize_t rows, Py_ssize_t n, const double* h, const double* dh,
                                double* dz, int relu, int threads) noexcept nogil
    void fn_lstm_forward_rows_f(Py_ssize_t rows, Py_ssize_t n, float* g, const float* c_prev,
                                float* c_next, float* tanh_c, float* h_next, int threads) noexcept nogil
    void fn_lstm_forward_rows_d(Py_ssize_t rows, Py_ssize_t n, double* g, const double* c_prev,
                                double* c_next, double* tanh_c, double* h_next, int threads) noexcept nogil
    void fn_lstm_backward_rows_f(Py_ssize_t rows, Py_ssize_t n, const float* g, const float* c_prev,
                                 const float* tanh_c, const float* dh, float* dc, float* dz,
                                 int threads) noexcept nogil
    void fn_lstm_backward_rows_d(Py_ssize_t rows, Py_ssize_t n, const double* g, const double* c_prev,
                                 const double* tanh_c, const double* dh, double* dc, double* dz,
                                 int threads) noexcept nogil
    void fn_gru_gates_rows_f(Py_ssize_t rows, Py_ssize_t n, float* g, const float* h_prev, float* rh,
                             int threads) noexcept nogil
    void fn_gru_gates_rows_d(Py_ssize_t rows, Py_ssize_t n, double* g, const double* h_prev, double* rh,
                             int threads) noexcept nogil
    void fn_gru_output_rows_f(Py_ssize_t rows, Py_ssize_t n, float* g, const float* h_prev,
                              float* h_next, int threads) noexcept nogil
    void fn_gru_output_rows_d(Py_ssize_t rows, Py_ssize_t n, double* g, const double* h_prev,
                              double* h_next, int threads) noexcept nogil
    void fn_gru_backward_out_rows_f(Py_ssize_t rows, Py_ssize_t n, const float* g, const float* h_prev,
                                    const float* dh, float* dh_prev, float* dz, int threads) noexcept nogil
    void fn_gru_backward_out_rows_d(Py_ssize_t rows, Py_ssize_t n, const double* g, const double* h_prev,
                                    const double* dh, double* dh_prev, double* dz, int threads) noexcept nogil
    void fn_gru_backward_reset_rows_f(Py_ssize_t rows, Py_ssize_t n, const float* g, const float* h_prev,
                                      const float* drh, float* dh_prev, float* dz, int threads) noexcept nogil
    void fn_gru_backward_reset_rows_d(Py_ssize_t rows, Py_ssize_t n, const double* g, const double* h_prev,
                                      const double* drh, double* dh_prev, double* dz, int threads) noexcept nogil


cdef extern from "fn_sgemm.h":
    int fn_sgemm_supported() noexcept nogil
    void* fn_alloc(size_t nbytes) noexcept nogil
    void fn_free(void* p) noexcept nogil
    size_t fn_sgemm_packed_size(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    void fn_sgemm_pack(Py_ssize_t K, Py_ssize_t N, const float* src, Py_ssize_t sk, Py_ssize_t sn,
                       float* P) noexcept nogil
    void fn_sgemm_pack_t(Py_ssize_t K, Py_ssize_t N, const float* S, Py_ssize_t ls, float* P) noexcept nogil
    void fn_sgemm_nn_mt(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t lda,
                        const float* P, const float* bias, float* C, Py_ssize_t ldc, int accumulate,
                        int threads) noexcept nogil
    size_t fn_sgemm_any_scratch(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int trans_a) noexcept nogil
    void fn_sgemm_any_mt(int trans_a, int trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                         const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, int accumulate,
                         float* C, Py_ssize_t ldc, float* scratch, int threads) noexcept nogil
    int fn_sgemm_tn_mt(Py_ssize_t M, Py_ssize_t N, Py_ssize_t R, const float* A, Py_ssize_t lda,
                       const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc, int accumulate,
                       int threads) noexcept nogil
    int fn_sgemm_tn2_mt(Py_ssize_t M, Py_ssize_t N1, Py_ssize_t N2, Py_ssize_t R, const float* A,
                        Py_ssize_t lda, const float* B1, Py_ssize_t ldb1, const float* B2,
                        Py_ssize_t ldb2, float* C, Py_ssize_t ldc, int accumulate,
                        int threads) noexcept nogil


cdef extern from "fn_lstm.h":
    ctypedef struct fn_lstm_io:
        Py_ssize_t n_a
        Py_ssize_t n_x
        const float* h_prev
        const float* c_prev
        const float* x
        const float* bias
        float* g
        float* c_next
        float* tanh_c
        float* h_next
        const float* g_next
        int reverse
        int stream
    void fn_lstm_pack(Py_ssize_t n_a, Py_ssize_t K, const float* W, Py_ssize_t ldw, float* P) noexcept nogil
    void fn_lstm_step_mt(Py_ssize_t m, const fn_lstm_io* io, const float* P, int threads) noexcept nogil


cdef int _num_threads = max(1, fastnn_recurrent_max_threads())

# float32 products run on fastnn's own AVX-512 kernels (fn_sgemm.h) where the CPU has
# them: the per-step products from weights packed once per sequence, the input
# projection, and the weight and input gradients (as A^T B read along the batch,
# with no transposed copy). Other CPUs keep the packed AVX2 kernel below and BLAS.
cdef bint _own_supported = fn_sgemm_supported() != 0
cdef bint _own_enabled = _own_supported
# below this many multiply-adds a product is not worth packing an operand for
cdef double _OWN_MIN_MACS = 4096.0


cdef bint _fused_lstm = True
# From this many rows on, the fused LSTM step multiplies [h_prev, x_t] by the whole
# of W itself, instead of adding h_prev @ W_h^T to an input projection of all steps
# made up front: the projection's pre-activations would go to memory and come back
# one step at a time, which costs more than the one large GEMM saves (6 % of an L1
# forward); at batch 1 the projection is the faster (a step reads twice the
# weights otherwise).
cdef Py_ssize_t _LSTM_X_IN_STEP_ROWS = 12
# gate values of more than this many bytes in all go past the caches (no later
# step reads them; the backward pass, much later, finds them in memory either way)
cdef double _LSTM_STREAM_BYTES = 4194304.0


def fused_lstm(enabled=None):
    """Whether the float32 LSTM forward uses the fused step kernel (fn_lstm.h) when the
    own kernels are on; ``enabled`` switches it. Returns the setting before the call."""
    global _fused_lstm
    before = _fused_lstm
    if enabled is not None:
        _fused_lstm = bool(enabled)
    return before


def own_kernels(enabled=None):
    """Whether float32 products use the own AVX-512 kernels; ``enabled`` switches them.

    Returns the setting in force before the call; they can only be enabled on a CPU
    with AVX-512.
    """
    global _own_enabled
    before = _own_enabled
    if enabled is not None:
        _own_enabled = bool(enabled) and _own_supported
    return before


cdef inline int _own_threads(bint serial) noexcept nogil:
    if serial or not fastnn_recurrent_openmp():
        return 1
    return _num_threads

# A step's elementwise pass is split over threads only from this many gate values
# on, its packed GEMM from this many multiply-adds; below that waking the threads
# costs more than the work.
cdef Py_ssize_t _PARALLEL_ELEMENTS = 65536
cdef double _PARALLEL_MACS = 1048576.0

# A whole call (forward, or backward) below this many multiply-adds runs on one
# thread, its float32 products on the packed kernel instead of BLAS: at that size
# waking threads costs more than they save, and on a busy machine a parallel region
# or a threaded BLAS call can wait milliseconds for a thread to be scheduled. The
# choice depends on the sizes only, so small calls give the same bits at any thread
# count.
cdef double _SERIAL_MACS = 16777216.0
# OpenBLAS keeps a GEMM of at most this many multiply-adds on the calling thread,
# and its call is then cheaper than packing the operand for the kernel here.
cdef double _BLAS_SERIAL_MACS = 262144.0

# The packed step GEMM (float32, x86-64 with AVX2 or AVX-512) is used for batches of
# up to this many rows; larger batches amortise BLAS's own packing and go to BLAS.
cdef int _packed_level = fn_packed_level()
cdef Py_ssize_t _PACKED_MAX_ROWS = 512
cdef Py_ssize_t _PANEL = 32


def set_num_threads(n):
    """Use n OpenMP threads in these kernels (BLAS threads are set by the caller)."""
    global _num_threads
    _num_threads = max(1, int(n))


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fastnn_recurrent_openmp())


cdef bint _serial(int T, int m, int gates, int n_a, int n_x) noexcept nogil:
    """Whether a call of this size stays on one thread (the forward and the backward
    of a sequence do about the same multiply-adds, so one rule serves both)."""
    return <double>T * m * gates * n_a * (n_a + n_x) < _SERIAL_MACS


cdef int _row_threads(Py_ssize_t m, Py_ssize_t elements, bint serial) noexcept nogil:
    # `serial` is also passed when BLAS does the call's products (no packed weights):
    # an OpenMP team there would alternate with BLAS's own threads, each waiting for
    # the other's to stop spinning, which costs far more than the elementwise pass.
    if serial or _num_threads <= 1 or m < 2 or elements < _PARALLEL_ELEMENTS:
        return 1
    return _num_threads if m > _num_threads else <int>m


cdef int _gemm_threads(Py_ssize_t m, Py_ssize_t N, Py_ssize_t K, bint serial) noexcept nogil:
    cdef Py_ssize_t panels = (N + _PANEL - 1) // _PANEL
    if serial or _num_threads <= 1 or panels < 2 or <double>m * N * K < _PARALLEL_MACS:
        return 1
    return _num_threads if panels > _num_threads else <int>panels


def _packed_buffer(x, Py_ssize_t m, Py_ssize_t K, Py_ssize_t N, size_t extra=0):
    """Room for a packed (K, N) weight block (and `extra` floats after it) when the
    packed step GEMM applies, else empty."""
    T = x.shape[0]
    if not (_own_enabled and x.dtype == np.float32 and m >= 1 and (T >= 2 or m >= 16)):
        if x.dtype != np.float32 or _packed_level == 0 or T < 2 or m < 1 or m > _PACKED_MAX_ROWS:
            return np.empty(0, dtype=np.float32)
    # sized for the own kernels' 64-wide panels, which also holds the 32-wide ones:
    # own_kernels() switched while a call is under way cannot make it write past the end
    return _empty(max(1, fn_sgemm_packed_size(K, N) + extra), dtype=np.float32)


cdef inline const float* _packed_ptr(float[::1] packed) noexcept nogil:
    return &packed[0] if packed.shape[0] > 0 else NULL


cdef void _pack(const floating* W, int ldw, bint trans_w, int K, int N, float* packed) noexcept nogil:
    """packed <- op(W) (K, N) in the packed GEMM's layout; op(W) = W^T (W is (N, K)) when trans_w."""
    if floating is float:
        if packed != NULL and _own_enabled:
            if trans_w:
                fn_sgemm_pack_t(K, N, W, ldw, packed)
            else:
                fn_sgemm_pack(K, N, W, ldw, 1, packed)
        elif packed != NULL:
            if trans_w:
                fn_pack_f(K, N, W, 1, ldw, packed)
            else:
                fn_pack_f(K, N, W, ldw, 1, packed)


cdef void _gemm_any(bint serial, bint trans_a, bint trans_b, int M, int N, int K,
                    const floating* A, int lda, const floating* B, int ldb, bint accumulate,
                    floating* C, int ldc) noexcept nogil:
    """C (M, N) = op(A) @ op(B) (+ C when accumulate): on the packed kernel, single
    threaded, for float32 parts of small calls; by BLAS otherwise."""
    cdef float* buf
    if floating is float:
        if (_own_enabled and M > 0 and N > 0 and K > 0 and not (trans_a and trans_b)
                and <double>M * N * K >= _OWN_MIN_MACS):
            if trans_a:
                # long reductions (weight gradients): chunked, no full transposed copy
                if fn_sgemm_tn_mt(M, N, K, A, lda, B, ldb, C, ldc, accumulate, _own_threads(serial)):
                    return
            else:
                buf = <float*>fn_alloc(fn_sgemm_any_scratch(M, N, K, False) * sizeof(float))
                if buf != NULL:
                    fn_sgemm_any_mt(False, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, buf,
                                    _own_threads(serial))
                    fn_free(buf)
                    return
        if (serial and _packed_level != 0 and M > 0 and N > 0 and K > 0
                and <double>M * N * K > _BLAS_SERIAL_MACS):
            if fn_small_gemm_f(_packed_level, trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate,
                               C, ldc):
                return
    gemm(trans_a, trans_b, M, N, K, <floating>1, A, lda, B, ldb, <floating>(1 if accumulate else 0),
         C, ldc)


cdef void _step_gemm(int m, int N, int K, const floating* A, int lda, const floating* W, int ldw,
                     bint trans_w, const float* packed, bint accumulate, floating* C, int ldc,
                     bint serial, int reverse) noexcept nogil:
    """C (m, N) = A (m, K) @ op(W) (+ C when accumulate), from op(W)'s packed copy when
    given; `reverse` (toggled by the time loops) flips the order of its panels."""
    cdef Py_ssize_t r
    if floating is float:
        if packed != NULL and _own_enabled:
            fn_sgemm_nn_mt(m, N, K, A, lda, packed, NULL, C, ldc, accumulate, _own_threads(serial))
            return
        if packed != NULL:
            if not accumulate:
                for r in range(m):
                    memset(C + r * ldc, 0, N * sizeof(float))
            fn_packed_gemm_f(_packed_level, m, K, N, A, lda, packed, C, ldc,
                             _gemm_threads(m, N, K, serial), reverse)
            return
    _gemm_any(serial, False, trans_w, m, N, K, A, lda, W, ldw, accumulate, C, ldc)


cdef void _fill_rows(floating* out, const floating* row, Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(out + r * n, row, n * sizeof(floating))


cdef void _column_sums(const floating* a, Py_ssize_t rows, Py_ssize_t n, floating* out) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const floating* row
    memset(out, 0, n * sizeof(floating))
    for r in range(rows):
        row = a + r * n
        for j in range(n):
            out[j] += row[j]


cdef void _input_projection(const floating* x, const floating* W, const floating* b,
                            int rows, int n_x, int n_a, int width, floating* z,
                            float* packed, bint serial) noexcept nogil:
    """z (rows, width) = x (rows, n_x) @ W[:width, n_a:]^T + b[:width]; `packed` (when
    given) is room for the packed W_x^T."""
    _pack(W + n_a, n_a + n_x, True, n_x, width, packed)
    if floating is float:
        if packed != NULL and _own_enabled:
            # b enters as the tiles' initial value: no pass filling z with it first
            fn_sgemm_nn_mt(rows, width, n_x, x, n_x, packed, b, z, width, False, _own_threads(serial))
            return
    _fill_rows(z, b, rows, width)
    _step_gemm(rows, width, n_x, x, n_x, W + n_a, n_a + n_x, True, packed, True, z, width, serial, 0)


cdef void _weight_gradients(const floating* dz, const floating* h_stack, const floating* x,
                            int rows, int n_x, int n_a, int gates, floating* dW,
                            floating* db, floating* dx, const floating* W, bint serial) noexcept nogil:
    """dW[:, n_a:] = dz^T @ x, db = column sums of dz, dx = dz @ W_x; and when h_stack
    is given, dW[:, :n_a] = dz^T @ h_stack (all gates see the same h_prev)."""
    cdef int width = gates * n_a, ld = n_a + n_x
    cdef float* dzT
    if floating is float:
        # own kernels: both dW blocks in one A^T B product, dz^T formed once
        if (_own_enabled and h_stack != NULL and rows > 0
                and <double>rows * width * (n_a + n_x) >= _OWN_MIN_MACS):
            if fn_sgemm_tn2_mt(width, n_a, n_x, rows, dz, width, h_stack, n_a, x, n_x, dW, ld, False,
                               _own_threads(serial)):
                _gemm_any(serial, False, False, rows, n_x, width, dz, width, W + n_a, ld, False, dx, n_x)
                _column_sums(dz, rows, width, db)
                return
        # both dW blocks read dz^T: transpose it once rather than once per product
        if (not _own_enabled and serial and _packed_level != 0 and rows > 0
                and <double>rows * width * n_x > _BLAS_SERIAL_MACS):
            dzT = <float*>fn_alloc(<size_t>rows * width * sizeof(float))
            if dzT != NULL:
                fn_transpose_f(rows, width, dz, width, dzT, rows)
                if h_stack != NULL:
                    _gemm_any(serial, False, False, width, n_a, rows, dzT, rows, h_stack, n_a, False, dW, ld)
                _gemm_any(serial, False, False, width, n_x, rows, dzT, rows, x, n_x, False, dW + n_a, ld)
                fn_free(dzT)
                _gemm_any(serial, False, False, rows, n_x, width, dz, width, W + n_a, ld, False, dx, n_x)
                _column_sums(dz, rows, width, db)
                return
    if h_stack != NULL:
        _gemm_any(serial, True, False, width, n_a, rows, dz, width, h_stack, n_a, False, dW, ld)
    _gemm_any(serial, True, False, width, n_x, rows, dz, width, x, n_x, False, dW + n_a, ld)
    _gemm_any(serial, False, False, rows, n_x, width, dz, width, W + n_a, ld, False, dx, n_x)
    _column_sums(dz, rows, width, db)


# ---------------------------------------------------------------- RNN

def _rnn_forward(const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[::1] b,
                 floating[:, :, ::1] hs, bint relu, float[::1] packed, float[::1] packed_x):
    """hs[0] holds h0 on entry; hs[t + 1] = h<t> on exit."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, t
    cdef floating* ph = &hs[0, 0, 0]
    cdef const floating* pW = &W[0, 0]
    cdef bint serial = _serial(T, m, 1, n_a, n_x)
    cdef float* pk = <float*>_packed_ptr(packed)
    cdef float* pkx = <float*>_packed_ptr(packed_x)
    cdef int threads = _row_threads(m, step, serial or pk == NULL)
    with nogil:
        _pack(pW, n_a + n_x, True, n_a, n_a, pk)
        _input_projection(&x[0, 0, 0], pW, &b[0], T * m, n_x, n_a, n_a, ph + step, pkx, serial)
        for t in range(T):
            _step_gemm(m, n_a, n_a, ph + t * step, n_a, pW, n_a + n_x, True, pk, True,
                       ph + (t + 1) * step, n_a, serial, t & 1)
            if floating is float:
                fn_rnn_forward_rows_f(m, n_a, ph + (t + 1) * step, relu, threads)
            else:
                fn_rnn_forward_rows_d(m, n_a, ph + (t + 1) * step, relu, threads)


def _rnn_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                  const floating[:, ::1] W, const floating[:, :, ::1] hs, bint relu,
                  floating[:, :, ::1] dz, floating[:, :, ::1] dx, floating[:, ::1] dh0,
                  floating[:, ::1] dW, floating[::1] db, float[::1] packed):
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, t
    cdef float* pk = <float*>_packed_ptr(packed)
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* ph = &hs[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* acc = &dh0[0, 0]   # dLoss/dh of the current step, ends as dh0
    cdef bint serial = _serial(T, m, 1, n_a, n_x)
    cdef int threads = _row_threads(m, step, serial or pk == NULL)
    with nogil:
        _pack(pW, n_a + n_x, False, n_a, n_a, pk)
        memcpy(acc, pdh + (T - 1) * step, step * sizeof(floating))
        for t in range(T - 1, -1, -1):
            if floating is float:
                fn_rnn_backward_rows_f(m, n_a, ph + (t + 1) * step, acc, pdz + t * step, relu, threads)
            else:
                fn_rnn_backward_rows_d(m, n_a, ph + (t + 1) * step, acc, pdz + t * step, relu, threads)
            if t > 0:
                memcpy(acc, pdh + (t - 1) * step, step * sizeof(floating))
            _step_gemm(m, n_a, n_a, pdz + t * step, n_a, pW, n_a + n_x, False, pk, t > 0, acc, n_a,
                       serial, t & 1)
        _weight_gradients(pdz, ph, &x[0, 0, 0], T * m, n_x, n_a, 1, &dW[0, 0], &db[0],
                          &dx[0, 0, 0], pW, serial)


def _dtype_of(a):
    return np.float32 if a.dtype == np.float32 else np.float64


def _carve(dtype, *shapes):
    """C-contiguous arrays of these shapes cut from one block of fastnn's buffer
    cache (fastnn/_arena.py), which stays mapped from call to call where freshly
    allocated memory would be page-faulted in again each time."""
    return _carve_block(dtype, *shapes)[1]


def _carve_block(dtype, *shapes):
    """(the block, [the arrays]) of _carve: the arrays lie one after the other in it."""
    cdef Py_ssize_t total = 0, start = 0, size
    for shape in shapes:
        total += shape[0] * shape[1] * shape[2]
    block = _empty(total, dtype=dtype)
    arrays = []
    for shape in shapes:
        size = shape[0] * shape[1] * shape[2]
        arrays.append(block[start:start + size].reshape(shape))
        start += size
    return block, arrays


def rnn_forward(x, h0, W, b, activation):
    T, m, n_x = x.shape
    n_a = h0.shape[1]
    relu = activation == "relu"
    hs = _empty((T + 1, m, n_a), dtype=_dtype_of(x))
    hs[0] = h0
    _rnn_forward(x, W, b, hs, relu, _packed_buffer(x, m, n_a, n_a), _packed_buffer(x, m, n_x, n_a))
    return hs[1:], (x, W, hs, relu)


def rnn_backward(dh, state):
    x, W, hs, relu = state
    dz = _empty(hs[1:].shape, dtype=hs.dtype)
    dx = _empty(x.shape, dtype=x.dtype)
    dh0 = _empty(hs.shape[1:], dtype=hs.dtype)
    dW = _empty(W.shape, dtype=W.dtype)
    db = _empty(W.shape[0], dtype=W.dtype)
    _rnn_backward(dh, x, W, hs, relu, dz, dx, dh0, dW, db,
                  _packed_buffer(x, hs.shape[1], hs.shape[2], hs.shape[2]))
    return dx, dh0, dW, db


def rnn_cell_forward(x_t, h_prev, W, b, activation):
    h, state = rnn_forward(x_t[np.newaxis], h_prev, W, b, activation)
    return h[0], state


def rnn_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = rnn_backward(dh_next[np.newaxis], state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------- GRU

def _gru_forward(const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[::1] b,
                 floating[:, :, ::1] g, floating[:, :, ::1] hs, floating[:, :, ::1] rh,
                 float[::1] packed_gates, float[::1] packed_candidate, float[::1] packed_x):
    """hs[0] holds h0 on entry. On exit hs[t + 1] = h<t>, g[t] = [Γu, Γr, c~] and
    rh[t] = Γr * h<t-1> of every step."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef int ld = n_a + n_x
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 3 * step, t
    cdef floating* ph = &hs[0, 0, 0]
    cdef floating* pg = &g[0, 0, 0]
    cdef floating* prh = &rh[0, 0, 0]
    cdef const floating* pW = &W[0, 0]
    cdef bint serial = _serial(T, m, 3, n_a, n_x)
    cdef float* pk_gates = <float*>_packed_ptr(packed_gates)
    cdef float* pk_cand = <float*>_packed_ptr(packed_candidate)
    cdef float* pkx = <float*>_packed_ptr(packed_x)
    cdef int threads = _row_threads(m, gstep, serial or pk_gates == NULL)
    with nogil:
        _pack(pW, ld, True, n_a, 2 * n_a, pk_gates)
        _pack(pW + 2 * n_a * ld, ld, True, n_a, n_a, pk_cand)
        _input_projection(&x[0, 0, 0], pW, &b[0], T * m, n_x, n_a, 3 * n_a, pg, pkx, serial)
        for t in range(T):
            _step_gemm(m, 2 * n_a, n_a, ph + t * step, n_a, pW, ld, True, pk_gates, True,
                       pg + t * gstep, 3 * n_a, serial, t & 1)
            if floating is float:
                fn_gru_gates_rows_f(m, n_a, pg + t * gstep, ph + t * step, prh + t * step, threads)
            else:
                fn_gru_gates_rows_d(m, n_a, pg + t * gstep, ph + t * step, prh + t * step, threads)
            _step_gemm(m, n_a, n_a, prh + t * step, n_a, pW + 2 * n_a * ld, ld, True, pk_cand, True,
                       pg + t * gstep + 2 * n_a, 3 * n_a, serial, t & 1)
            if floating is float:
                fn_gru_output_rows_f(m, n_a, pg + t * gstep, ph + t * step, ph + (t + 1) * step, threads)
            else:
                fn_gru_output_rows_d(m, n_a, pg + t * gstep, ph + t * step, ph + (t + 1) * step, threads)


def _gru_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                  const floating[:, ::1] W, const floating[:, :, ::1] g,
                  const floating[:, :, ::1] hs, const floating[:, :, ::1] rh,
                  floating[:, :, ::1] dz, floating[:, ::1] drh, floating[:, ::1] acc_next,
                  floating[:, :, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dW, floating[::1] db,
                  float[::1] packed_gates, float[::1] packed_candidate):
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef int ld = n_a + n_x
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 3 * step, t
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* ph = &hs[0, 0, 0]
    cdef const floating* pg = &g[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* pdrh = &drh[0, 0]
    cdef floating* acc = &dh0[0, 0]        # dLoss/dh<t>
    cdef floating* nxt = &acc_next[0, 0]   # dLoss/dh<t-1>, being accumulated
    cdef floating* swap
    cdef floating* pdW = &dW[0, 0]
    cdef bint serial = _serial(T, m, 3, n_a, n_x)
    cdef float* pk_gates = <float*>_packed_ptr(packed_gates)
    cdef float* pk_cand = <float*>_packed_ptr(packed_candidate)
    cdef int threads = _row_threads(m, gstep, serial or pk_cand == NULL)
    with nogil:
        _pack(pW, ld, False, 2 * n_a, n_a, pk_gates)
        _pack(pW + 2 * n_a * ld, ld, False, n_a, n_a, pk_cand)
        memcpy(acc, pdh + (T - 1) * step, step * sizeof(floating))
        for t in range(T - 1, -1, -1):
            if t > 0:
                memcpy(nxt, pdh + (t - 1) * step, step * sizeof(floating))
            else:
                memset(nxt, 0, step * sizeof(floating))
            if floating is float:
                fn_gru_backward_out_rows_f(m, n_a, pg + t * gstep, ph + t * step, acc, nxt,
                                           pdz + t * gstep, threads)
            else:
                fn_gru_backward_out_rows_d(m, n_a, pg + t * gstep, ph + t * step, acc, nxt,
                                           pdz + t * gstep, threads)
            _step_gemm(m, n_a, n_a, pdz + t * gstep + 2 * n_a, 3 * n_a, pW + 2 * n_a * ld, ld, False,
                       pk_cand, False, pdrh, n_a, serial, t & 1)
            if floating is float:
                fn_gru_backward_reset_rows_f(m, n_a, pg + t * gstep, ph + t * step, pdrh, nxt,
                                             pdz + t * gstep, threads)
            else:
                fn_gru_backward_reset_rows_d(m, n_a, pg + t * gstep, ph + t * step, pdrh, nxt,
                                             pdz + t * gstep, threads)
            _step_gemm(m, n_a, 2 * n_a, pdz + t * gstep, 3 * n_a, pW, ld, False, pk_gates, True,
                       nxt, n_a, serial, t & 1)
            swap = acc
            acc = nxt
            nxt = swap
        if acc != &dh0[0, 0]:
            memcpy(&dh0[0, 0], acc, step * sizeof(floating))
        # dW_h of the update and reset gates sees h_prev, the candidate's sees Γr * h_prev.
        _gemm_any(serial, True, False, 2 * n_a, n_a, T * m, pdz, 3 * n_a, ph, n_a, False, pdW, ld)
        _gemm_any(serial, True, False, n_a, n_a, T * m, pdz + 2 * n_a, 3 * n_a, &rh[0, 0, 0], n_a,
                  False, pdW + 2 * n_a * ld, ld)
        _weight_gradients(pdz, NULL, &x[0, 0, 0], T * m, n_x, n_a, 3, pdW, &db[0], &dx[0, 0, 0], pW,
                          serial)


def gru_forward(x, h0, W, b):
    T, m, n_x = x.shape
    n_a = h0.shape[1]
    g, hs, rh = _carve(_dtype_of(x), (T, m, 3 * n_a), (T + 1, m, n_a), (T, m, n_a))
    hs[0] = h0
    _gru_forward(x, W, b, g, hs, rh, _packed_buffer(x, m, n_a, 2 * n_a), _packed_buffer(x, m, n_a, n_a),
                 _packed_buffer(x, m, n_x, 3 * n_a))
    return hs[1:], (x, W, g, hs, rh)


def gru_backward(dh, state):
    x, W, g, hs, rh = state
    dtype = hs.dtype
    m, n_a = hs.shape[1:]
    dz = _empty(g.shape, dtype=dtype)
    drh = _empty((m, n_a), dtype=dtype)
    acc_next = _empty((m, n_a), dtype=dtype)
    dx = _empty(x.shape, dtype=dtype)
    dh0 = _empty((m, n_a), dtype=dtype)
    dW = _empty(W.shape, dtype=dtype)
    db = _empty(W.shape[0], dtype=dtype)
    _gru_backward(dh, x, W, g, hs, rh, dz, drh, acc_next, dx, dh0, dW, db,
                  _packed_buffer(x, m, 2 * n_a, n_a), _packed_buffer(x, m, n_a, n_a))
    return dx, dh0, dW, db


def gru_cell_forward(x_t, h_prev, W, b):
    h, state = gru_forward(x_t[np.newaxis], h_prev, W, b)
    return h[0], state


def gru_cell_backward(dh_next, state):
    dx, dh_prev, dW, db = gru_backward(dh_next[np.newaxis], state)
    return dx[0], dh_prev, dW, db


# ---------------------------------------------------------------- LSTM

def _lstm_forward(const floating[:, :, ::1] x, const floating[:, ::1] W, const floating[::1] b,
                  floating[::1] block, float[::1] packed):
    """block holds g, hs, cs and tanh_c one after the other (lstm_forward's
    _carve_block; one argument instead of four: at batch 1 each typed argument costs
    a noticeable part of the call); hs[0], cs[0] hold h0, c0 on entry. On exit
    hs[t + 1], cs[t + 1] = h<t>, c<t>, g[t] = [Γf, Γu, c~, Γo] and
    tanh_c[t] = tanh(c<t>) of every step. packed (empty, or lstm_forward's
    _packed_buffer) is room for the packed W^T (or W_h^T) and, after it, W_x^T."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>(W.shape[0] // 4)
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 4 * step, t
    if block.shape[0] != T * gstep + (3 * T + 2) * step:
        raise ValueError("_lstm_forward: the state block does not match the shapes")
    if packed.shape[0] > 0 and <size_t>packed.shape[0] < (fn_sgemm_packed_size(n_a + n_x, 4 * n_a)
                                                           + fn_sgemm_packed_size(n_x, 4 * n_a)):
        raise ValueError("_lstm_forward: the packed-weight buffer is too small")
    cdef floating* pg = &block[0]
    cdef floating* ph = pg + T * gstep
    cdef floating* pc = ph + (T + 1) * step
    cdef floating* ptc = pc + (T + 1) * step
    cdef const floating* pW = &W[0, 0]
    cdef bint serial = _serial(T, m, 4, n_a, n_x)
    cdef float* pk = <float*>_packed_ptr(packed)
    cdef float* pkx = pk + fn_sgemm_packed_size(n_a + n_x, 4 * n_a) if pk != NULL else NULL
    cdef int threads = _row_threads(m, gstep, serial or pk == NULL)
    cdef fn_lstm_io io
    cdef bint fused = floating is float and pk != NULL and _own_enabled and _fused_lstm
    cdef bint x_in_step = fused and m >= _LSTM_X_IN_STEP_ROWS
    with nogil:
        if fused:
            # the fused step: product and cell in one kernel (fn_lstm.h)
            fn_lstm_pack(n_a, n_a + n_x if x_in_step else n_a, <const float*>pW, n_a + n_x, pk)
        else:
            _pack(pW, n_a + n_x, True, n_a, 4 * n_a, pk)
        if not x_in_step:
            _input_projection(&x[0, 0, 0], pW, &b[0], T * m, n_x, n_a, 4 * n_a, pg, pkx, serial)
        io.n_a = n_a
        io.n_x = n_x
        io.x = NULL
        io.bias = <const float*>&b[0]
        io.g_next = NULL
        io.stream = x_in_step and <double>T * gstep * sizeof(float) >= _LSTM_STREAM_BYTES
        for t in range(T):
            if fused:
                io.h_prev = <const float*>(ph + t * step)
                io.c_prev = <const float*>(pc + t * step)
                io.g = <float*>(pg + t * gstep)
                io.c_next = <float*>(pc + (t + 1) * step)
                io.tanh_c = <float*>(ptc + t * step)
                io.h_next = <float*>(ph + (t + 1) * step)
                if x_in_step:
                    io.x = <const float*>&x[t, 0, 0]
                elif t + 1 < T:
                    io.g_next = <const float*>(pg + (t + 1) * gstep)
                else:
                    io.g_next = NULL
                io.reverse = t & 1
                fn_lstm_step_mt(m, &io, pk, _own_threads(serial))
                continue
            _step_gemm(m, 4 * n_a, n_a, ph + t * step, n_a, pW, n_a + n_x, True, pk, True,
                       pg + t * gstep, 4 * n_a, serial, t & 1)
            if floating is float:
                fn_lstm_forward_rows_f(m, n_a, pg + t * gstep, pc + t * step, pc + (t + 1) * step,
                                       ptc + t * step, ph + (t + 1) * step, threads)
            else:
                fn_lstm_forward_rows_d(m, n_a, pg + t * gstep, pc + t * step, pc + (t + 1) * step,
                                       ptc + t * step, ph + (t + 1) * step, threads)


def _lstm_backward(const floating[:, :, ::1] dh, const floating[:, :, ::1] x,
                   const floating[:, ::1] W, const floating[:, :, ::1] g,
                   const floating[:, :, ::1] hs, const floating[:, :, ::1] cs,
                   const floating[:, :, ::1] tanh_c, floating[:, :, ::1] dz,
                   floating[:, :, ::1] dx, floating[:, ::1] dh0, floating[:, ::1] dc,
                   floating[:, ::1] dW, floating[::1] db, float[::1] packed):
    """dc holds dLoss/dc<T> on entry and dc0 on exit."""
    cdef int T = <int>x.shape[0], m = <int>x.shape[1], n_x = <int>x.shape[2], n_a = <int>hs.shape[2]
    cdef Py_ssize_t step = <Py_ssize_t>m * n_a, gstep = 4 * step, t
    cdef const floating* pW = &W[0, 0]
    cdef const floating* pdh = &dh[0, 0, 0]
    cdef const floating* pg = &g[0, 0, 0]
    cdef const floating* pc = &cs[0, 0, 0]
    cdef const floating* ptc = &tanh_c[0, 0, 0]
    cdef floating* pdz = &dz[0, 0, 0]
    cdef floating* pdc = &dc[0, 0]
    cdef floating* acc = &dh0[0, 0]   # dLoss/dh of the current step, ends as dh0
    cdef bint serial = _serial(T, m, 4, n_a, n_x)
    cdef float* pk = <float*>_packed_ptr(packed)
    cdef int threads = _row_threads(m, gstep, serial or pk == NULL)
    with nogil:
        _pack(pW, n_a + n_x, False, 4 * n_a, n_a, pk)
        memcpy(acc, pdh + (T - 1) * step, step * sizeof(floating))
        for t in range(T - 1, -1, -1):
            if floating is float:
                fn_lstm_backward_rows_f(m, n_a, pg + t * gstep, pc + t * step, ptc + t * step,
                                        acc, pdc, pdz + t * gstep, threads)
            else:
                fn_lstm_backward_rows_d(m, n_a, pg + t * gstep, pc + t * step, ptc + t * step,
                                        acc, pdc, pdz + t * gstep, threads)
            if t > 0:
                memcpy(acc, pdh + (t - 1) * step, step * sizeof(floating))
            _step_gemm(m, n_a, 4 * n_a, pdz + t * gstep, 4 * n_a, pW, n_a + n_x, False, pk, t > 0,
                       acc, n_a, serial, t & 1)
        _weight_gradients(pdz, &hs[0, 0, 0], &x[0, 0, 0], T * m, n_x, n_a, 4, &dW[0, 0], &db[0],
                          &dx[0, 0, 0], pW, serial)


def lstm_forward(x, h0, c0, W, b):
    T, m, n_x = x.shape
    n_a = h0.shape[1]
    block, (g, hs, cs, tanh_c) = _carve_block(_dtype_of(x), (T, m, 4 * n_a), (T + 1, m, n_a),
                                              (T + 1, m, n_a), (T, m, n_a))
    hs[0] = h0
    cs[0] = c0
    # the packed W^T (or W_h^T) and W_x^T in one buffer, W_x^T at the offset
    # _lstm_forward computes
    packed = _packed_buffer(x, m, n_a + n_x, 4 * n_a, extra=fn_sgemm_packed_size(n_x, 4 * n_a))
    _lstm_forward(x, W, b, block, packed)
    return hs[1:], cs[T], (x, W, g, hs, cs, tanh_c)


def lstm_backward(dh, dc_last, state):
    x, W, g, hs, cs, tanh_c = state
    dtype = hs.dtype
    m, n_a = hs.shape[1:]
    dz = _empty(g.shape, dtype=dtype)
    dx = _empty(x.shape, dtype=dtype)
    dh0 = _empty((m, n_a), dtype=dtype)
    dc0 = np.array(dc_last, dtype=dtype, order="C", copy=True)
    dW = _empty(W.shape, dtype=dtype)
    db = _empty(W.shape[0], dtype=dtype)
    _lstm_backward(dh, x, W, g, hs, cs, tanh_c, dz, dx, dh0, dc0, dW, db,
                   _packed_buffer(x, m, 4 * n_a, n_a))
    return dx, dh0, dc0, dW, db


def lstm_cell_forward(x_t, h_prev, c_prev, W, b):
    h, c, state = lstm_forward(x_t[np.newaxis], h_prev, c_prev, W, b)
    return h[0], c, state


def lstm_cell_backward(dh_next, dc_next, state):
    dx, dh_prev, dc_prev, dW, db = lstm_backward(dh_next[np.newaxis], dc_next, state)
    return dx[0], dh_prev, dc_prev, dW, db
