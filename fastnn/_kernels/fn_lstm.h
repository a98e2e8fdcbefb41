/* A fused float32 LSTM step for x86-64 CPUs with AVX-512 (fastnn's own kernels,
 * next to fn_sgemm.h, whose tile macros it uses).
 *
 * A step is z = [h_prev, x_t] @ W^T + b followed by the cell's elementwise work.
 * The product's tile holds all four gates of the same 16 units: W^T is packed with
 * its columns reordered, panel p holding [f, u, c~, o] of units 16p .. 16p + 15.
 * So the tile's epilogue has everything a cell needs in registers and writes the
 * gate values, c, tanh(c) and h directly: no pass over a gate buffer after the
 * product, and one parallel region per step instead of two.
 *
 * The input part x_t @ W_x^T + b is either in g already (the input projection of
 * all steps, one GEMM before the time loop) or computed here in the same tile, the
 * product running over K = n_a + n_x (x_t given): at a batch of a few rows up the
 * second is faster, since the projection would write the pre-activations of every
 * step to memory only to read them back one step at a time.
 *
 * sigmoid and tanh are vector functions here. sigmoid: e^-x as 2^n times a degree-6
 * minimax polynomial (scalef), 1 / (1 + e^-x) as rcp14 refined by one Newton step;
 * tanh: a rational minimax fit x P(x^2) / Q(x^2) (degrees 4 and 4) on |x| <= 9,
 * divided the same way, and clamped to [-1, 1] (past 9.01 tanh rounds to +-1).
 * Over every float, sigmoid is within 2.1e-7 and tanh within 3.3e-7 of the exact
 * value, relatively (tests/test_own_kernels.py measures a sample); NaN propagates;
 * +-inf give +-1 and 1, 0 (sigmoid(-inf) is 6e-39, the value at the clamp of -88).
 */
#ifndef FASTNN_FN_LSTM_H
#define FASTNN_FN_LSTM_H

#include "fn_sgemm.h"

#define FN_LSTM_UNITS 16  /* units per panel: one vector of each gate */

/* Per-step arrays: rows of g have 4 * n_a floats, the others n_a. x (rows of n_x)
 * is the step's input when the product includes it (then bias is b and g is only
 * written), NULL when g holds the input projection on entry. g_next is the next
 * step's g (NULL at the last step) in that case, fetched ahead. reverse (the
 * step's parity) runs the panels last to first: the panels of W^T a step used last
 * are the ones still cached when the next step starts (a cyclic order over more
 * than the cache holds would find none of them there). stream writes the gate
 * values and tanh(c), which no later step reads, past the caches (non-temporal
 * stores, for sequences much larger than the level-2 cache). */
typedef struct {
    ptrdiff_t n_a, n_x;
    const float *h_prev, *c_prev, *x, *bias;
    float *g, *c_next, *tanh_c, *h_next;
    const float *g_next;
    int reverse, stream;
} fn_lstm_io;

/* Floats in the packed form of an LSTM's W^T for a product over K inputs (n_a: h
 * only; n_a + n_x: h and x), 4 * n_a gate columns. */
static inline size_t fn_lstm_packed_size(ptrdiff_t n_a, ptrdiff_t K)
{
    return (size_t)((n_a + FN_LSTM_UNITS - 1) / FN_LSTM_UNITS) * FN_NR * (size_t)(K > 0 ? K : 0);
}

#ifdef FN_SGEMM_AVX512

/* Pack W^T for fn_lstm_step_mt: W (4 * n_a rows, row stride ldw) holds W_h in its
 * first n_a columns and W_x after them; the first K columns are packed, panel p
 * holding W[gate * n_a + 16p + j, k] at P[(p * K + k) * FN_NR + gate * 16 + j], zero
 * for units past n_a: a 16 x 16 transpose per gate and block of 16 k. */
FN_AVX512 FN_UNUSED static void fn_lstm_pack(ptrdiff_t n_a, ptrdiff_t K, const float *W, ptrdiff_t ldw,
                                             float *P)
{
    const ptrdiff_t panels = (n_a + FN_LSTM_UNITS - 1) / FN_LSTM_UNITS;
    ptrdiff_t p, k0, gate;
    for (p = 0; p < panels; p++) {
        const ptrdiff_t u0 = p * FN_LSTM_UNITS;
        const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
        for (k0 = 0; k0 < K; k0 += 16)
            for (gate = 0; gate < 4; gate++)
                fn_transpose16(W + (gate * n_a + u0) * ldw + k0, ldw, units,
                               (int)(K - k0 < 16 ? K - k0 : 16),
                               P + (p * K + k0) * FN_NR + gate * FN_LSTM_UNITS, FN_NR);
    }
}

/* e^-x for x in [-88, 88]: n = round(-x / ln 2) and s = x + n ln 2 (ln 2 in two
 * parts) in [-ln2/2, ln2/2], e^-x = 2^n e^-s with e^-s a degree-6 minimax
 * polynomial (relative error 1.9e-9) */
FN_AVX512 static inline __m512 fn_v_exp_neg(__m512 x)
{
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 s = _mm512_fmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f),
                                     _mm512_fmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
    __m512 p = _mm512_fmadd_ps(s, _mm512_set1_ps(0.0013836845922111807f), _mm512_set1_ps(-0.008374815804204775f));
    p = _mm512_fmadd_ps(s, p, _mm512_set1_ps(0.04166822557075854f));
    p = _mm512_fmadd_ps(s, p, _mm512_set1_ps(-0.16666420169851795f));
    p = _mm512_fmadd_ps(s, p, _mm512_set1_ps(0.4999999207981093f));
    p = _mm512_fmadd_ps(s, p, _mm512_set1_ps(-1.0000000363231982f));
    p = _mm512_fmadd_ps(s, p, _mm512_set1_ps(1.0000000005541685f));
    return _mm512_scalef_ps(p, n);
}

/* lo <= x <= hi; min and max return their second operand when one is NaN, so a
 * NaN x is kept */
FN_AVX512 static inline __m512 fn_v_clamp(__m512 x, float lo, float hi)
{
    return _mm512_max_ps(_mm512_set1_ps(lo), _mm512_min_ps(_mm512_set1_ps(hi), x));
}

FN_AVX512 static inline __m512 fn_v_sigmoid(__m512 x)
{
    const __m512 d = _mm512_add_ps(fn_v_exp_neg(fn_v_clamp(x, -88.0f, 88.0f)), _mm512_set1_ps(1.0f));
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

/* The coefficients: a minimax fit of the relative error on [0, 9] (2.1e-8), all
 * positive, so Horner's rule adds no cancellation; at |x| = 9.5 the quotient is
 * above 1, so the clamp gives exactly +-1 from there on. */
FN_AVX512 static inline __m512 fn_v_tanh(__m512 x)
{
    const __m512 xc = fn_v_clamp(x, -9.5f, 9.5f), y = _mm512_mul_ps(xc, xc);
    __m512 p = _mm512_fmadd_ps(y, _mm512_set1_ps(1.335455727327421e-08f), _mm512_set1_ps(2.0609005294865192e-05f));
    __m512 q = _mm512_fmadd_ps(y, _mm512_set1_ps(7.776515006805797e-07f), _mm512_set1_ps(0.00032856271369997327f));
    __m512 num, r, t;
    p = _mm512_fmadd_ps(y, p, _mm512_set1_ps(0.0034955834317175164f));
    q = _mm512_fmadd_ps(y, q, _mm512_set1_ps(0.025876964363397995f));
    p = _mm512_fmadd_ps(y, p, _mm512_set1_ps(0.13381021696612522f));
    q = _mm512_fmadd_ps(y, q, _mm512_set1_ps(0.46714337291882696f));
    p = _mm512_fmadd_ps(y, p, _mm512_set1_ps(0.9999999794745632f));
    q = _mm512_fmadd_ps(y, q, _mm512_set1_ps(1.0f));
    /* num / q: rcp14 and one Newton step on the quotient */
    num = _mm512_mul_ps(xc, p);
    r = _mm512_rcp14_ps(q);
    t = _mm512_mul_ps(num, r);
    t = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(q, t, num), t);
    return fn_v_clamp(t, -1.0f, 1.0f);
}

/* A vector of 16 floats to p: past the caches when asked and the vector is a whole
 * aligned cache line, else through them (mk: the units that exist). */
FN_AVX512 static inline void fn_lstm_put(float *p, __mmask16 mk, __m512 v, int stream)
{
    if (stream && mk == (__mmask16)0xFFFF && ((uintptr_t)p & 63) == 0)
        _mm512_stream_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, mk, v);
}

/* The cell of 16 units (mask: those that exist) from the gates' pre-activations:
 * g row (at the panel's first unit, gates n_a apart) gets the gate values. */
FN_AVX512 static inline void fn_lstm_cell(__m512 zf, __m512 zu, __m512 zc, __m512 zo, __mmask16 mk,
                                          float *g, ptrdiff_t n_a, const float *cp, float *cn,
                                          float *tc, float *hn, int stream)
{
    const __m512 f = fn_v_sigmoid(zf), u = fn_v_sigmoid(zu), cc = fn_v_tanh(zc), o = fn_v_sigmoid(zo);
    const __m512 c = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(mk, cp), _mm512_mul_ps(u, cc));
    const __m512 t = fn_v_tanh(c);
    fn_lstm_put(g, mk, f, stream);
    fn_lstm_put(g + n_a, mk, u, stream);
    fn_lstm_put(g + 2 * n_a, mk, cc, stream);
    fn_lstm_put(g + 3 * n_a, mk, o, stream);
    fn_lstm_put(tc, mk, t, stream);
    _mm512_mask_storeu_ps(cn, mk, c);
    _mm512_mask_storeu_ps(hn, mk, _mm512_mul_ps(o, t));
}

/* the tile's share of g (when it holds the input projection), c_prev and the
 * outputs is touched only after the product: fetch it now, into the level-2 cache
 * (the panel streaming through level 1 during the product would evict it from
 * there); and the tile's share of the next step's g, which the input projection
 * left in the last-level cache or memory (11 % of an L1 step) */
#define FN_LSTM_PREFETCH(r) \
    if (r < mr) { \
        if (io->x == NULL) { \
            const char *gi = (const char *)(io->g + (i + r) * 4 * n_a + u0); \
            _mm_prefetch(gi, _MM_HINT_T1); \
            _mm_prefetch(gi + n_a * sizeof(float), _MM_HINT_T1); \
            _mm_prefetch(gi + 2 * n_a * sizeof(float), _MM_HINT_T1); \
            _mm_prefetch(gi + 3 * n_a * sizeof(float), _MM_HINT_T1); \
        } \
        _mm_prefetch((const char *)(io->c_prev + (i + r) * n_a + u0), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->c_next + (i + r) * n_a + u0), _MM_HINT_T1); \
        _mm_prefetch((const char *)(io->h_next + (i + r) * n_a + u0), _MM_HINT_T1); \
        if (!io->stream) \
            _mm_prefetch((const char *)(io->tanh_c + (i + r) * n_a + u0), _MM_HINT_T1); \
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
/* the tile += rows a0 .. a5 (K long) @ the panel at b, which moves past them */
#define FN_LSTM_FULL_TILE(K) \
    for (k = 0; k < (K); k++, b += FN_NR) { \
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16); \
        __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48); \
        FN_TILE_FMA(a0[k], a1[k], a2[k], a3[k], a4[k], a5[k]) \
    }
/* the same for a short tile of up to 4 rows, which does only its own rows' work
 * (64 rows = 10 x 6 + 4) */
#define FN_LSTM_SHORT_TILE(K) \
    for (k = 0; k < (K); k++, b += FN_NR) { \
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16); \
        __m512 b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48), av; \
        av = _mm512_set1_ps(a0[k]); FN_ACC_FMA(0, av) \
        av = _mm512_set1_ps(a1[k]); FN_ACC_FMA(1, av) \
        av = _mm512_set1_ps(a2[k]); FN_ACC_FMA(2, av) \
        av = _mm512_set1_ps(a3[k]); FN_ACC_FMA(3, av) \
    }
/* a0 .. a5: rows i .. i + 5 of `base` (row length ld), the ones past mr repeating
 * the last valid row */
#define FN_LSTM_ROWS(base, ld) \
    a0 = (base) + i * (ld); a1 = a0 + (mr > 1 ? 1 : 0) * (ld); a2 = a0 + (mr > 2 ? 2 : mr - 1) * (ld); \
    a3 = a0 + (mr > 3 ? 3 : mr - 1) * (ld); a4 = a0 + (mr > 4 ? 4 : mr - 1) * (ld); \
    a5 = a0 + (mr > 5 ? 5 : mr - 1) * (ld);

/* The four gates' initial sums of the units of a panel: b (x given) or zero. */
FN_AVX512 static inline void fn_lstm_init(const fn_lstm_io *io, ptrdiff_t u0, __mmask16 mk, __m512 init[4])
{
    int v;
    for (v = 0; v < 4; v++)
        init[v] = io->x != NULL ? _mm512_maskz_loadu_ps(mk, io->bias + v * io->n_a + u0) : _mm512_setzero_ps();
}

/* The gates' pre-activations of one row: the sums, plus g's input projection when
 * the product did not include x. */
#define FN_LSTM_Z(v) \
    (io->x != NULL ? sums[v] : _mm512_add_ps(sums[v], _mm512_maskz_loadu_ps(mk, gi + (v) * n_a)))

/* Rows r0 .. r1 of the units of panel p, in tiles of FN_MR rows. */
FN_AVX512 static void fn_lstm_rows(const fn_lstm_io *io, const float *P, ptrdiff_t p, ptrdiff_t r0,
                                   ptrdiff_t r1)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LSTM_UNITS;
    const float *bp0 = P + p * (n_a + n_x) * FN_NR;
    const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
    const __mmask16 mk = (__mmask16)((1u << units) - 1);
    float acc[FN_MR][4][16] __attribute__((aligned(64)));
    __m512 init[4];
    ptrdiff_t i, k;
    int r, seg;
    fn_lstm_init(io, u0, mk, init);
    for (i = r0; i < r1; i += FN_MR) {
        const int mr = (int)(r1 - i < FN_MR ? r1 - i : FN_MR);
        const float *a0, *a1, *a2, *a3, *a4, *a5;
        const float *b = bp0;
        FN_TILE_DECL
        FN_LSTM_PREFETCH(0) FN_LSTM_PREFETCH(1) FN_LSTM_PREFETCH(2)
        FN_LSTM_PREFETCH(3) FN_LSTM_PREFETCH(4) FN_LSTM_PREFETCH(5)
        FN_TILE_SET(init[0], init[1], init[2], init[3])
        /* the reduction in two segments: h_prev against W_h^T, then x_t against W_x^T */
        for (seg = 0; seg < 2; seg++) {
            const ptrdiff_t len = seg == 0 ? n_a : n_x;
            if (len == 0)
                continue;
            FN_LSTM_ROWS(seg == 0 ? io->h_prev : io->x, len)
            if (mr > 4)
                FN_LSTM_FULL_TILE(len)
            else
                FN_LSTM_SHORT_TILE(len)
        }
        FN_LSTM_SAVE(0) FN_LSTM_SAVE(1) FN_LSTM_SAVE(2) FN_LSTM_SAVE(3) FN_LSTM_SAVE(4) FN_LSTM_SAVE(5)
        for (r = 0; r < mr; r++) {
            const ptrdiff_t row = i + r;
            float *gi = io->g + row * 4 * n_a + u0;
            __m512 sums[4];
            int v;
            for (v = 0; v < 4; v++)
                sums[v] = _mm512_load_ps(acc[r][v]);
            fn_lstm_cell(FN_LSTM_Z(0), FN_LSTM_Z(1), FN_LSTM_Z(2), FN_LSTM_Z(3), mk, gi, n_a,
                         io->c_prev + row * n_a + u0, io->c_next + row * n_a + u0,
                         io->tanh_c + row * n_a + u0, io->h_next + row * n_a + u0, io->stream);
        }
    }
}

/* A batch of one row: the matrix-vector kernel, started from the gates' input part
 * (g) or from b and x_t's product. */
FN_AVX512 static void fn_lstm_row(const fn_lstm_io *io, const float *P, ptrdiff_t p)
{
    const ptrdiff_t n_a = io->n_a, n_x = io->x != NULL ? io->n_x : 0, u0 = p * FN_LSTM_UNITS;
    const float *bp = P + p * (n_a + n_x) * FN_NR;
    const int units = (int)(n_a - u0 < FN_LSTM_UNITS ? n_a - u0 : FN_LSTM_UNITS);
    const __mmask16 mk = (__mmask16)((1u << units) - 1);
    float *gi = io->g + u0;
    __m512 sums[4];
    fn_lstm_init(io, u0, mk, sums);
    fn_row_acc(n_a, io->h_prev, bp, sums);
    if (n_x > 0)
        fn_row_acc(n_x, io->x, bp + n_a * FN_NR, sums);
    fn_lstm_cell(FN_LSTM_Z(0), FN_LSTM_Z(1), FN_LSTM_Z(2), FN_LSTM_Z(3), mk, gi, n_a, io->c_prev + u0,
                 io->c_next + u0, io->tanh_c + u0, io->h_next + u0, io->stream);
}

/* One LSTM step over m rows on `threads` threads: g (m, 4 n_a) holds the input
 * projection (and bias) on entry unless x is given, and the gate values
 * [f, u, c~, o] on exit; c_next, tanh_c and h_next (m, n_a) are written; P is
 * fn_lstm_pack's W^T (K = n_a, or n_a + n_x with x). Tasks are a block of rows by
 * one panel of 16 units, panel by panel (h_prev, read by every task, stays cached);
 * every unit is computed by one task, so the result does not depend on the thread
 * count. */
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
        ptrdiff_t p = (io->reverse ? panels * blocks - 1 - task : task) / blocks, q = task % blocks;
        ptrdiff_t r0 = q * tiles / blocks * FN_MR, r1 = (q + 1) * tiles / blocks * FN_MR;
        if (m == 1)
            fn_lstm_row(io, P, p);
        else
            fn_lstm_rows(io, P, p, r0, r1 < m ? r1 : m);
        if (io->stream)
            _mm_sfence();  /* the streamed stores are seen by whoever reads them next */
    );
}

#else  /* no AVX-512 build: the callers take their other paths */

FN_UNUSED static void fn_lstm_pack(ptrdiff_t n_a, ptrdiff_t K, const float *W, ptrdiff_t ldw, float *P)
{
    (void)n_a; (void)K; (void)W; (void)ldw; (void)P;
}

FN_UNUSED static void fn_lstm_step_mt(ptrdiff_t m, const fn_lstm_io *io, const float *P, int threads)
{
    (void)m; (void)io; (void)P; (void)threads;
}

#endif

#endif
