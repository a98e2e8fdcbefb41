/* A fused float32 LSTM step for x86-64 CPUs with AVX-512 (fastnn's own kernels,
 * next to fn_sgemm.h, whose tile macros it uses).
 *
 * A step is z = g_in + h_prev @ W_h^T followed by the cell's elementwise work,
 * where g_in (rows of 4 * n_a: the gates [f, u, c~, o]) already holds the input
 * projection and bias. Here the product's tile holds all four gates of the same 16
 * units: W_h^T is packed with its columns reordered, panel p holding
 * [f, u, c~, o] of units 16p .. 16p + 15. So the tile's epilogue has everything a
 * cell needs in registers and writes the gate values, c, tanh(c) and h directly:
 * no pass over the gate buffer after the product, and one parallel region per step
 * instead of two.
 *
 * sigmoid and tanh are vector functions here: e^x as a degree-7 polynomial times
 * 2^n (scalef), 1 / d as rcp14 refined by one Newton step (a relative error near
 * 2^-23), and tanh by its odd Taylor series below 0.25 (where 1 - e^-2|x| would
 * lose relative precision). NaN propagates through all of them; +-inf gives the
 * limits.
 */
#ifndef FASTNN_FN_LSTM_H
#define FASTNN_FN_LSTM_H

#include "fn_sgemm.h"

#define FN_LSTM_UNITS 16  /* units per panel: one vector of each gate */

/* Per-step arrays: rows of g have 4 * n_a floats, the others n_a. g_next is the
 * next step's g (NULL at the last step), fetched ahead. */
typedef struct {
    ptrdiff_t n_a;
    const float *h_prev, *c_prev;
    float *g, *c_next, *tanh_c, *h_next;
    const float *g_next;
} fn_lstm_io;

/* Floats in the packed form of an LSTM's W_h^T (n_a inputs, 4 * n_a gate columns). */
static inline size_t fn_lstm_packed_size(ptrdiff_t n_a)
{
    return (size_t)((n_a + FN_LSTM_UNITS - 1) / FN_LSTM_UNITS) * FN_NR * (size_t)(n_a > 0 ? n_a : 0);
}

#ifdef FN_SGEMM_AVX512

/* Pack W_h^T for fn_lstm_step_mt: W (4 * n_a rows, row stride ldw) holds W_h in its
 * first n_a columns; panel p holds W[gate * n_a + 16p + j, k] at
 * P[(p * n_a + k) * FN_NR + gate * 16 + j], zero for units past n_a: a 16 x 16
 * transpose per gate and block of 16 k. */
FN_AVX512 FN_UNUSED static void fn_lstm_pack(ptrdiff_t n_a, const float *W, ptrdiff_t ldw, float *P)
{
    const ptrdiff_t panels = (n_a + FN_LSTM_UNITS - 1) / FN_LSTM_UNITS;
    ptrdiff_t p, k0, gate;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t u0 = p * FN_LSTM_UNITS;
        const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
        for (k0 = 0; k0 < n_a; k0 += 16)
            for (gate = 0; gate < 4; gate++)
                fn_transpose16(W + (gate * n_a + u0) * ldw + k0, ldw, units,
                               (int)(n_a - k0 < 16 ? n_a - k0 : 16),
                               P + (p * n_a + k0) * FN_NR + gate * FN_LSTM_UNITS, FN_NR);
    }
}

/* e^x for x <= 0 (or NaN): x below -104 gives 0 like the true value's float. */
FN_AVX512 static inline __m512 fn_v_exp_neg(__m512 x)
{
    __m512 n, r, p;
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  /* a NaN x is kept (second operand) */
    n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  /* ln 2 in two parts */
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0f / 5040.0f), _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 1 / d for d in [1, 2] */
FN_AVX512 static inline __m512 fn_v_recip12(__m512 d)
{
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

/* 1 / (1 + e^-x), through e^-|x| <= 1 so nothing overflows */
FN_AVX512 static inline __m512 fn_v_sigmoid(__m512 x)
{
    const __m512 e = fn_v_exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    const __m512 s = fn_v_recip12(_mm512_add_ps(e, _mm512_set1_ps(1.0f)));
    return _mm512_mask_mul_ps(s, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), e, s);
}

FN_AVX512 static inline __m512 fn_v_tanh(__m512 x)
{
    const __m512 a = _mm512_abs_ps(x), z = _mm512_mul_ps(a, a);
    const __m512 e = fn_v_exp_neg(_mm512_mul_ps(a, _mm512_set1_ps(-2.0f)));
    const __m512 q = _mm512_mul_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), e),
                                   fn_v_recip12(_mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    __m512 p = _mm512_fmadd_ps(z, _mm512_set1_ps(62.0f / 2835.0f), _mm512_set1_ps(-17.0f / 315.0f));
    p = _mm512_fmadd_ps(z, p, _mm512_set1_ps(2.0f / 15.0f));
    p = _mm512_fmadd_ps(z, p, _mm512_set1_ps(-1.0f / 3.0f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(a, z), p, a);
    p = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(0.25f), _CMP_LT_OQ), q, p);
    /* the sign of x on |tanh x| */
    return _mm512_or_ps(p, _mm512_and_ps(x, _mm512_set1_ps(-0.0f)));
}

/* The cell of 16 units (mask: those that exist) from the gates' pre-activations:
 * g row (at the panel's first unit, gates n_a apart) gets the gate values. */
FN_AVX512 static inline void fn_lstm_cell(__m512 zf, __m512 zu, __m512 zc, __m512 zo, __mmask16 mk,
                                          float *g, ptrdiff_t n_a, const float *cp, float *cn,
                                          float *tc, float *hn)
{
    const __m512 f = fn_v_sigmoid(zf), u = fn_v_sigmoid(zu), cc = fn_v_tanh(zc), o = fn_v_sigmoid(zo);
    const __m512 c = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(mk, cp), _mm512_mul_ps(u, cc));
    const __m512 t = fn_v_tanh(c);
    _mm512_mask_storeu_ps(g, mk, f);
    _mm512_mask_storeu_ps(g + n_a, mk, u);
    _mm512_mask_storeu_ps(g + 2 * n_a, mk, cc);
    _mm512_mask_storeu_ps(g + 3 * n_a, mk, o);
    _mm512_mask_storeu_ps(cn, mk, c);
    _mm512_mask_storeu_ps(tc, mk, t);
    _mm512_mask_storeu_ps(hn, mk, _mm512_mul_ps(o, t));
}

/* the tile's share of g, c_prev and the outputs is touched only after the product:
 * fetch it now, into the level-2 cache (the panel streaming through level 1 during
 * the product would evict it from there); and the tile's share of the next step's
 * g, which the input projection left in the last-level cache or memory (11 % of an
 * L1 step) */
#define FN_LSTM_PREFETCH(r) \
    if (r < mr) { \
        const char *gi = (const char *)(io->g + (i + r) * 4 * n_a + u0); \
        _mm_prefetch(gi, _MM_HINT_T1); \
        _mm_prefetch(gi + n_a * sizeof(float), _MM_HINT_T1); \
        _mm_prefetch(gi + 2 * n_a * sizeof(float), _MM_HINT_T1); \
        _mm_prefetch(gi + 3 * n_a * sizeof(float), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->c_prev + (i + r) * n_a + u0), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->c_next + (i + r) * n_a + u0), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->tanh_c + (i + r) * n_a + u0), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->h_next + (i + r) * n_a + u0), _MM_HINT_T1); \
        if (io->g_next != NULL) { \
            const char *gn = (const char *)(io->g_next + (i + r) * 4 * n_a + u0); \
            _mm_prefetch(gn, _MM_HINT_T2); \
            _mm_prefetch(gn + n_a * sizeof(float), _MM_HINT_T2); \
            _mm_prefetch(gn + 2 * n_a * sizeof(float), _MM_HINT_T2); \
            _mm_prefetch(gn + 3 * n_a * sizeof(float), _MM_HINT_T2); \
        } \
    }
/* the tile's sums leave the registers for the epilogue, whose functions need them */
#define FN_LSTM_SAVE(r) \
    _mm512_store_ps(acc[r][0], c##r##0); _mm512_store_ps(acc[r][1], c##r##1); \
    _mm512_store_ps(acc[r][2], c##r##2); _mm512_store_ps(acc[r][3], c##r##3);

/* Rows r0 .. r1 of the units of panel p, in tiles of FN_MR rows. */
FN_AVX512 static void fn_lstm_rows(const fn_lstm_io *io, const float *P, ptrdiff_t p, ptrdiff_t r0,
                                   ptrdiff_t r1)
{
    const ptrdiff_t n_a = io->n_a, u0 = p * FN_LSTM_UNITS;
    const float *bp0 = P + p * n_a * FN_NR;
    const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
    const __mmask16 mk = (__mmask16)((1u << units) - 1);
    float acc[FN_MR][4][16] __attribute__((aligned(64)));
    ptrdiff_t i, k;
    int r;
    for (i = r0; i < r1; i += FN_MR) {
        const int mr = (int)(r1 - i < FN_MR ? r1 - i : FN_MR);
        const float *a0 = io->h_prev + i * n_a;
        const float *a1 = a0 + (mr > 1 ? 1 : 0) * n_a, *a2 = a0 + (mr > 2 ? 2 : mr - 1) * n_a;
        const float *a3 = a0 + (mr > 3 ? 3 : mr - 1) * n_a, *a4 = a0 + (mr > 4 ? 4 : mr - 1) * n_a;
        const float *a5 = a0 + (mr > 5 ? 5 : mr - 1) * n_a;
        const float *b = bp0;
        const __m512 zero = _mm512_setzero_ps();
        FN_TILE_DECL
        FN_LSTM_PREFETCH(0) FN_LSTM_PREFETCH(1) FN_LSTM_PREFETCH(2)
        FN_LSTM_PREFETCH(3) FN_LSTM_PREFETCH(4) FN_LSTM_PREFETCH(5)
        FN_TILE_SET(zero, zero, zero, zero)
        if (mr > 4) {
            for (k = 0; k < n_a; k++, b += FN_NR) {
                __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
                __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48);
                FN_TILE_FMA(a0[k], a1[k], a2[k], a3[k], a4[k], a5[k])
            }
        } else {
            /* a short last tile (64 rows = 10 x 6 + 4) does only its own rows' work */
            for (k = 0; k < n_a; k++, b += FN_NR) {
                __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
                __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48), av;
                av = _mm512_set1_ps(a0[k]); FN_ACC_FMA(0, av)
                av = _mm512_set1_ps(a1[k]); FN_ACC_FMA(1, av)
                av = _mm512_set1_ps(a2[k]); FN_ACC_FMA(2, av)
                av = _mm512_set1_ps(a3[k]); FN_ACC_FMA(3, av)
            }
        }
        FN_LSTM_SAVE(0) FN_LSTM_SAVE(1) FN_LSTM_SAVE(2) FN_LSTM_SAVE(3) FN_LSTM_SAVE(4) FN_LSTM_SAVE(5)
        for (r = 0; r < mr; r++) {
            const ptrdiff_t row = i + r;
            float *gi = io->g + row * 4 * n_a + u0;
            fn_lstm_cell(_mm512_add_ps(_mm512_load_ps(acc[r][0]), _mm512_maskz_loadu_ps(mk, gi)),
                         _mm512_add_ps(_mm512_load_ps(acc[r][1]), _mm512_maskz_loadu_ps(mk, gi + n_a)),
                         _mm512_add_ps(_mm512_load_ps(acc[r][2]), _mm512_maskz_loadu_ps(mk, gi + 2 * n_a)),
                         _mm512_add_ps(_mm512_load_ps(acc[r][3]), _mm512_maskz_loadu_ps(mk, gi + 3 * n_a)),
                         mk, gi, n_a, io->c_prev + row * n_a + u0, io->c_next + row * n_a + u0,
                         io->tanh_c + row * n_a + u0, io->h_next + row * n_a + u0);
        }
    }
}

/* A batch of one row: the matrix-vector kernel, started from the gates' input part. */
FN_AVX512 static void fn_lstm_row(const fn_lstm_io *io, const float *P, ptrdiff_t p)
{
    const ptrdiff_t n_a = io->n_a, u0 = p * FN_LSTM_UNITS;
    const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
    const __mmask16 mk = (__mmask16)((1u << units) - 1);
    __m512 acc[4];
    int v;
    for (v = 0; v < 4; v++)
        acc[v] = _mm512_maskz_loadu_ps(mk, io->g + u0 + v * n_a);
    fn_row_acc(n_a, io->h_prev, P + p * n_a * FN_NR, acc);
    fn_lstm_cell(acc[0], acc[1], acc[2], acc[3], mk, io->g + u0, n_a, io->c_prev + u0, io->c_next + u0,
                 io->tanh_c + u0, io->h_next + u0);
}

/* One LSTM step over m rows on `threads` threads: g (m, 4 n_a) holds the input
 * projection (and bias) on entry and the gate values [f, u, c~, o] on exit; c_next,
 * tanh_c and h_next (m, n_a) are written; P is fn_lstm_pack's W_h^T. Tasks are a
 * block of rows by one panel of 16 units, panel by panel (h_prev, read by every
 * task, stays cached); every unit is computed by one task, so the result does not
 * depend on the thread count. */
FN_AVX512 FN_UNUSED static void fn_lstm_step_mt(ptrdiff_t m, const fn_lstm_io *io, const float *P,
                                                int threads)
{
    const ptrdiff_t panels = (io->n_a + FN_LSTM_UNITS - 1) / FN_LSTM_UNITS;
    const ptrdiff_t tiles = (m + FN_MR - 1) / FN_MR;
    const ptrdiff_t blocks = (tiles + FN_TASK_TILES - 1) / FN_TASK_TILES;
    if (m <= 0 || io->n_a <= 0)
        return;
    if (panels * blocks < 2)
        threads = 1;
    FN_TASKS(panels * blocks,
        ptrdiff_t p = task / blocks, q = task % blocks;
        ptrdiff_t r0 = q * tiles / blocks * FN_MR, r1 = (q + 1) * tiles / blocks * FN_MR;
        if (m == 1)
            fn_lstm_row(io, P, p);
        else
            fn_lstm_rows(io, P, p, r0, r1 < m ? r1 : m);
    );
}

#else  /* no AVX-512 build: the callers take their other paths */

FN_UNUSED static void fn_lstm_pack(ptrdiff_t n_a, const float *W, ptrdiff_t ldw, float *P)
{
    (void)n_a; (void)W; (void)ldw; (void)P;
}

FN_UNUSED static void fn_lstm_step_mt(ptrdiff_t m, const fn_lstm_io *io, const float *P, int threads)
{
    (void)m; (void)io; (void)P; (void)threads;
}

#endif

#endif
