/* fn_check.c: a C-level check of every entry point of fastnn's C kernels (the
 * dispatchers fn_<name>_f / fn_<name>_d of fastnn/_kernels/fn_dispatch.h and of the
 * training ops' fn_dense/loss/norm/optim/dropout/embedding_dispatch.h), on every
 * CPU tier this CPU runs (fn_cpu_tier() down to generic) in float and double,
 * against naive loops in double on small deterministic inputs (a 64-bit LCG).
 *
 *   cc -O2 -fwrapv -ffp-contract=off -fopenmp -I fastnn/_kernels tests/c/fn_check.c -o fn_check -lm
 *   ./fn_check [-v] [--selftest]
 *
 * tests/test_portable.py builds and runs it natively and, with Debian's
 * aarch64-linux-gnu-gcc, for ARM64 under qemu-aarch64 (the generic tier as NEON).
 * Built with -fsanitize=address the guard zones below are left out and ASan itself
 * reports any access past a buffer, reads included (not part of the test suite: the
 * build takes long):
 *
 *   cc -O1 -fwrapv -fsanitize=address -fopenmp -I fastnn/_kernels tests/c/fn_check.c -o fn_check_asan -lm
 *
 * (-fwrapv as Python builds the extension modules: GCC 12 at -O2 without it stops
 * with an internal error in fn_dense.h's generic double activation.)
 *
 * What is covered, with sizes taken from the active tier's panel width NR and
 * vector length VL so that full and partial 6-row tiles, full, half and partial
 * panels all occur:
 *   packed_size, pack (row- and column-major sources), pack_t: the documented
 *     panel layout, exactly; K = 0.
 *   gemm_nn_mt: M 0..100, N around NR / 2 and NR, K 0, 1, 7, 33 and 2100 (chunks
 *     of the reduction, A past the cached size, the one-row kernel), bias or not,
 *     accumulate 0 / 1, threads 1 and 2.
 *   gemm_list: products with repeated operands, accumulating pairs, narrow panels,
 *     one row, K = 0, M = 0, none, too large to fetch ahead: bitwise gemm_any_mt's.
 *   gemm_any_mt: the four trans_a / trans_b forms, rows with gaps or tight (a B of
 *     one full or half panel used in place), scratch of any_scratch's size (nothing
 *     written past it), M = 0, K = 0; narrow products (N 1 .. 9, K 5 .. 700) on the
 *     dot-product tiles and the panels.
 *   gemm_tn2_mt, gemm_tn_mt: R of 513, 600 and 1100 (chunks of 512), N1 = 0,
 *     N2 = 0, R = 0, M = 0, more columns than a transpose block; returns 1.
 *   transpose_matrix: rows and cols 0, 1, VL - 1, VL, VL + 1, 2 VL + 3, 33.
 *   conv_forward, conv_weight_grad: a naive NHWC convolution with padding (uneven
 *     too), stride, dilation, a group's channel offset and pixel stride, tiles
 *     whose every tap is padding, parts of the pixels / output rows and empty
 *     ones, bias or not; scratch of conv_scratch / conv_dw_scratch's size.
 *   lstm_packed_size, lstm_pack (the documented layout), lstm_step_mt: x in the
 *     step (n_x 0 or 5), the input projection gx, gx = g in place; m 0, 1, 2, 4,
 *     7, 13, 50; n_a 0, 1, VL - 1, VL + 3, 2 VL + 1, 32; stream.
 *   lstm_steps: T steps against lstm_step_mt called step by step (x in the step and
 *     the projection in g, stream or not, T = 0), bitwise, on 2 threads.
 *   lstm_backward_steps, rnn_forward_steps, rnn_backward_steps, gru_forward_steps,
 *     gru_backward_steps: against their passes and gemm_nn_mt called step by step,
 *     bitwise, on 1 and 2 threads (split by rows and by steps; T = 0, m = 0).
 *   rnn_forward_rows, rnn_backward_rows (tanh, relu; a NaN, ReLU' at 0),
 *     lstm_backward_rows, gru_gates_rows, gru_output_rows, gru_backward_out_rows,
 *     gru_backward_reset_rows: their formulas, derived here, and that the parts of
 *     g and dz a pass does not own keep their values; rows 0 too.
 *   activate (sigmoid, tanh, relu): 0, -0, denormals, tiny, the float and double
 *     clamps, large values, the largest finite ones, +-inf and NaN of both signs,
 *     and a grid over [-30, 30], more than one block of 4096.
 *   The training ops, against plain loops here:
 *   dense_linear_forward / _backward (every activation, bias or not, M = 0, K = 0,
 *     more than one chunk of db's rows; keep = y, the mask of z > 0; slots of
 *     dense_slots_size and dz^T when dense_dw_direct, nothing written past them;
 *     threads 1 and 2 bitwise), dense_act_mt, dense_grad_mt, dense_softmax,
 *     column_sums_mt (against a double sum; M = 0, partial tasks of columns, many
 *     chunks of rows; threads 1 and 2 bitwise).
 *   softmax_xent_forward / _backward (indices or probabilities, g per row or one
 *     g0; the three numbers a row; the returned total), sigmoid_xent_forward /
 *     _backward (over several chunks of partial sums), loss_math (log, log1p).
 *   bn_forward, bn_inference, bn_backward: rows, planes, more than one chunk, the
 *     (M, 1, 1) case; an offset mean.
 *   sgd_step (plain, momentum, Nesterov), rmsprop_step, adam_step, with and without
 *     weight decay, over three arrays (one empty, one over several chunks).
 *   drop_mask, drop_apply: the reference's bits exactly (NaN, -0, a draw equal to
 *     keep_prob). emb_gather, emb_sum_row, emb_zero (ordinary and streamed stores,
 *     rows on and off the vector boundaries; emb_fence): exact copies and in-order
 *     sums.
 *
 * Each check is one comparison of a kernel's output with its reference, or of the
 * memory a call must leave alone (inputs, the gaps between rows of an output, the
 * guard zones around every buffer, the rows outside a range) with a copy taken
 * before the call, or of a result on two threads with the one on one thread
 * (bitwise: the kernels promise results independent of the thread count), or of a
 * size or return value. Write-only outputs start as NaN, so a kernel that read one
 * would show. A failed check prints one line (entry point, what, tier, type, sizes,
 * the worst element); the program ends with a tally per entry point and exits 0
 * only when every check passed (2: out of memory or bad arguments).
 *
 * Tolerances. A sum's error is bounded by K u sum|terms| (u the unit roundoff), so
 * a product's elements are compared as |got - ref| <= tol * sum|terms| with tol
 * 1e-5 (float) and 1e-12 (double); the double reference's own error is at most
 * 2100 * 1.1e-16 = 2.3e-13 of that scale at the longest reduction here, under the
 * double tolerance, so no wider type is needed. Elementwise results are compared
 * against the same tolerance of their magnitude with every subtraction made an
 * addition (the cancellation-free scale), plus a floor of 1e-37 (float) or 1e-300
 * (double) for results below the normal range (sigmoid is documented to return
 * its value at the clamp, 6e-39 or 3e-308, at -inf). Copies are compared exactly.
 * The summary prints each entry point's worst passing error as a fraction of the
 * allowed one.
 *
 * --selftest perturbs the kernel's output as each check sees it (the first
 * element compared: by 1e-2 (float) or 1e-7 (double) of 1 + |value|, a NaN or an
 * infinity made 0.5; a size or return value off by one; the first element a call
 * must leave alone) so that every check must fail: the run is expected to exit 1
 * with as many failures as checks, which shows that no check passes vacuously
 * (comparisons over nothing are not counted) and every tolerance is tighter than
 * that.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fn_kernels.h"

/* ---- state of the run ---- */

static int g_dbl;           /* the element type under check: 1 double, 0 float */
static int g_tier;          /* the active tier */
static int g_selftest;      /* perturb every check's view of the kernel's output */
static int g_verbose;
static double g_tol;        /* relative tolerance of the type */
static double g_floor;      /* absolute floor of the type (below the normal range) */
static long g_checks, g_failures;
static char g_ctx[320];     /* the sizes of the case under check */

#define ES (g_dbl ? sizeof(double) : sizeof(float))
#define CALL(name, ...) (g_dbl ? fn_##name##_d(__VA_ARGS__) : fn_##name##_f(__VA_ARGS__))

static const char *tier_name(int t) { return t == 2 ? "avx512" : (t == 1 ? "avx2" : "generic"); }
static const char *type_name(void) { return g_dbl ? "double" : "float"; }

/* the vector width of the active tier in elements (fn_kernels.h's table) */
static int vec_len(void) { return (g_tier == 2 ? 64 : (g_tier == 1 ? 32 : 16)) / (int)ES; }

/* ---- the tally per entry point ---- */

#define MAX_NAMES 64
static const char *t_name[MAX_NAMES];
static long t_checks[MAX_NAMES], t_fail[MAX_NAMES];
static double t_worst[MAX_NAMES];  /* the largest error / allowed error of a passed comparison */
static int t_count;

static int tally(const char *fn, int ok)
{
    int i;
    for (i = 0; i < t_count; i++)
        if (strcmp(t_name[i], fn) == 0)
            break;
    if (i == t_count) {
        if (t_count == MAX_NAMES) {
            fprintf(stderr, "fn_check: too many names\n");
            exit(2);
        }
        t_name[t_count++] = fn;
    }
    t_checks[i]++;
    g_checks++;
    if (!ok) {
        t_fail[i]++;
        g_failures++;
    }
    return i;
}

static void fail_line(const char *fn, const char *what, const char *detail)
{
    printf("FAIL %s %s [%s %s] %s: %s\n", fn, what, tier_name(g_tier), type_name(), g_ctx, detail);
}

/* a scalar check: a size, a return value, the active tier */
static void expect_int(const char *fn, const char *what, long got, long want)
{
    char detail[120];
    if (g_selftest)
        got += 1;
    tally(fn, got == want);
    if (got != want) {
        snprintf(detail, sizeof detail, "got %ld, want %ld", got, want);
        fail_line(fn, what, detail);
    }
}

/* ---- deterministic inputs: a 64-bit LCG (no libc rand) ---- */

static uint64_t g_lcg;
static void seed(uint64_t s) { g_lcg = s * 0x9E3779B97F4A7C15ull + 1; }
static double uni(double lo, double hi)   /* uniform in [lo, hi) */
{
    g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * ((double)(g_lcg >> 11) * (1.0 / 9007199254740992.0));
}

/* ---- buffers of the type under check, with guard zones ---- */

/* each side; a multiple of 64 keeps the data 64-byte aligned. Under AddressSanitizer
 * (-fsanitize=address) the guards are left out, so that ASan itself reports any
 * access past a buffer, reads included. */
#ifndef GUARD_BYTES
#if defined(__SANITIZE_ADDRESS__)
#define GUARD_BYTES 0
#else
#define GUARD_BYTES 64
#endif
#endif
#define SENTINEL (-7777.25) /* exact in both types */

typedef struct {
    void *base, *p;
    ptrdiff_t n, g;   /* elements, guard elements per side */
} Buf;

static double raw_get(const Buf *b, ptrdiff_t i)
{
    return g_dbl ? ((const double *)b->p)[i] : (double)((const float *)b->p)[i];
}
static void raw_set(const Buf *b, ptrdiff_t i, double v)
{
    if (g_dbl)
        ((double *)b->p)[i] = v;
    else
        ((float *)b->p)[i] = (float)v;
}
#define GET(b, i) raw_get(&(b), (i))
#define SET(b, i, v) raw_set(&(b), (i), (v))

static Buf bnew(ptrdiff_t n)
{
    Buf b;
    ptrdiff_t i;
    b.n = n > 0 ? n : 0;
    b.g = GUARD_BYTES / (ptrdiff_t)ES;
    b.base = fn_alloc((size_t)(b.n + 2 * b.g) * ES);
    if (b.base == NULL) {
        fprintf(stderr, "fn_check: out of memory\n");
        exit(2);
    }
    b.p = (char *)b.base + GUARD_BYTES;
    for (i = -b.g; i < b.n + b.g; i++)
        SET(b, i, SENTINEL);
    return b;
}
static void bfree(Buf *b) { fn_free(b->base); b->base = b->p = NULL; }
static void *at(Buf b, ptrdiff_t i) { return (char *)b.p + i * (ptrdiff_t)ES; }

/* rows x cols at off, row stride ld: uniform in [lo, hi) */
static void fill(Buf b, ptrdiff_t off, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t cols, double lo, double hi)
{
    ptrdiff_t i, j;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++)
            SET(b, off + i * ld + j, uni(lo, hi));
}
static void fill_value(Buf b, ptrdiff_t off, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t cols, double v)
{
    ptrdiff_t i, j;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++)
            SET(b, off + i * ld + j, v);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes > 0 ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "fn_check: out of memory\n");
        exit(2);
    }
    return p;
}

/* the logical (rows, cols) matrix at b (row stride ld) as doubles; trans: the
 * matrix is stored transposed, element (r, c) at c * ld + r */
static double *dense(Buf b, ptrdiff_t off, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t cols, int trans)
{
    double *d = (double *)xmalloc((size_t)(rows * cols) * sizeof(double));
    ptrdiff_t i, j;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++)
            d[i * cols + j] = GET(b, off + (trans ? j * ld + i : i * ld + j));
    return d;
}

/* a copy of a whole buffer, guard zones included */
typedef struct {
    double *v;
    ptrdiff_t n, g;
} Snap;

static Snap snap(Buf b)
{
    Snap s;
    ptrdiff_t i;
    s.n = b.n;
    s.g = b.g;
    s.v = (double *)xmalloc((size_t)(b.n + 2 * b.g) * sizeof(double));
    for (i = -b.g; i < b.n + b.g; i++)
        s.v[i + b.g] = GET(b, i);
    return s;
}
static void restore(Buf b, Snap s)
{
    ptrdiff_t i;
    for (i = -b.g; i < b.n + b.g; i++)
        SET(b, i, s.v[i + b.g]);
}
static void sfree(Snap *s) { free(s->v); s->v = NULL; }

/* --selftest: what a check sees of an element of the kernel's output */
static double perturb(double v)
{
    if (v != v || v - v != 0)
        return 0.5;
    return v + (g_dbl ? 1e-7 : 1e-2) * (1 + fabs(v));
}

static int same_value(double a, double b) { return a == b || (a != a && b != b); }

/* every element of b outside the region (rows x cols at off, row stride ld) is as
 * in s, guard zones included: the call wrote nothing else */
static void unchanged(const char *fn, const char *what, Buf b, Snap s, ptrdiff_t off, ptrdiff_t ld,
                      ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t i, bad = 0, first = 0, seen = 0;
    char detail[320];
    double firstv = 0;
    for (i = -b.g; i < b.n + b.g; i++) {
        double v = GET(b, i);
        if (i >= off && rows > 0 && cols > 0) {
            ptrdiff_t q = (i - off) / ld, r = (i - off) % ld;
            if (q < rows && r < cols)
                continue;
        }
        if (g_selftest && seen == 0)
            v = perturb(v);
        seen++;
        if (!same_value(v, s.v[i + b.g])) {
            if (bad++ == 0) {
                first = i;
                firstv = v;
            }
        }
    }
    if (seen == 0)
        return;  /* nothing outside the output (and no guards): no check */
    tally(fn, bad == 0);
    if (bad) {
        snprintf(detail, sizeof detail, "%ld elements changed outside the output, first at %ld (%s; %g, was %g)",
                 (long)bad, (long)first, first < 0 || first >= b.n ? "guard zone" : "inside", firstv,
                 s.v[first + b.g]);
        fail_line(fn, what, detail);
    }
}

/* the guard zones of b are intact (the whole buffer may have been written) */
static void guards(const char *fn, const char *what, Buf b, Snap s)
{
    unchanged(fn, what, b, s, 0, b.n > 0 ? b.n : 1, 1, b.n);
}

/* a check that b was not written at all */
static void untouched(const char *fn, const char *what, Buf b, Snap s)
{
    unchanged(fn, what, b, s, 0, 1, 0, 0);
}

/* the region rows x cols of got (at off, row stride ld) against ref (dense,
 * rows x cols): |got - ref| <= rel * scale + floor with scale the element of sc,
 * or |ref| when sc is NULL; a NaN ref wants NaN, an infinite ref the same
 * infinity. rel = floor = 0 asks for equal values. */
static void cmp(const char *fn, const char *what, Buf got, ptrdiff_t off, ptrdiff_t ld, ptrdiff_t rows,
                ptrdiff_t cols, const double *ref, const double *sc, double rel, double floor)
{
    ptrdiff_t i, j, bad = 0, wi = 0, wj = 0;
    int t;
    double worst = -1, wg = 0, wr = 0, wallow = 0;
    char detail[320];
    if (rows <= 0 || cols <= 0)
        return;  /* nothing to compare: no check (unchanged() sees that nothing was written) */
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            double g = GET(got, off + i * ld + j), r = ref[i * cols + j], allowed = 0, ratio;
            int ok;
            if (g_selftest && i == 0 && j == 0)
                g = perturb(g);
            if (r != r) {
                ok = g != g;
                ratio = ok ? 0 : INFINITY;
            } else if (r - r != 0) {
                ok = g == r;
                ratio = ok ? 0 : INFINITY;
            } else if (g != g || g - g != 0) {
                ok = 0;
                ratio = INFINITY;
            } else {
                double e = fabs(g - r);
                allowed = rel * (sc != NULL ? sc[i * cols + j] : fabs(r)) + floor;
                ok = e <= allowed;
                ratio = allowed > 0 ? e / allowed : (e > 0 ? INFINITY : 0);
            }
            if (!ok)
                bad++;
            if (ratio > worst) {
                worst = ratio;
                wi = i;
                wj = j;
                wg = g;
                wr = r;
                wallow = allowed;
            }
        }
    t = tally(fn, bad == 0);
    if (!bad && worst > t_worst[t])
        t_worst[t] = worst;
    if (bad) {
        snprintf(detail, sizeof detail,
                 "%ld of %ld elements off; worst at [%ld,%ld]: got %.17g, want %.17g, error %.3g (allowed %.3g)",
                 (long)bad, (long)(rows * cols), (long)wi, (long)wj, wg, wr, fabs(wg - wr), wallow);
        fail_line(fn, what, detail);
    }
}

/* the region of a (a result on two threads) equals that of b (on one), bitwise; a
 * NaN equals any NaN (which of two NaN operands an instruction passes on, and so
 * the sign and payload of the result, is the compiler's choice of operand order) */
static void same(const char *fn, const char *what, Buf a, Buf b, ptrdiff_t off, ptrdiff_t ld, ptrdiff_t rows,
                 ptrdiff_t cols)
{
    ptrdiff_t i, j, bad = 0, fi = 0, fj = 0;
    char detail[320];
    if (rows <= 0 || cols <= 0)
        return;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            ptrdiff_t k = off + i * ld + j;
            int differ = memcmp(at(a, k), at(b, k), ES) != 0 && !(isnan(GET(a, k)) && isnan(GET(b, k)));
            if (g_selftest && i == 0 && j == 0)
                differ = !same_value(perturb(GET(a, k)), GET(b, k));
            if (differ && bad++ == 0) {
                fi = i;
                fj = j;
            }
        }
    tally(fn, bad == 0);
    if (bad) {
        snprintf(detail, sizeof detail, "%ld elements differ from the one-thread result, first at [%ld,%ld]: %.17g vs %.17g",
                 (long)bad, (long)fi, (long)fj, GET(a, off + fi * ld + fj), GET(b, off + fi * ld + fj));
        fail_line(fn, what, detail);
    }
}

/* a copy of a buffer (guards included) */
static Buf buf_copy(Buf b)
{
    Buf c = bnew(b.n);
    memcpy(c.base, b.base, (size_t)(b.n + 2 * b.g) * ES);
    return c;
}

/* sizes from a list, each once, those in [lo, hi] */
static int uniq(const ptrdiff_t *in, int n, ptrdiff_t lo, ptrdiff_t *out)
{
    int i, j, m = 0;
    for (i = 0; i < n; i++) {
        if (in[i] < lo)
            continue;
        for (j = 0; j < m; j++)
            if (out[j] == in[i])
                break;
        if (j == m)
            out[m++] = in[i];
    }
    return m;
}

/* ======================= the tier API ======================= */

static void check_tier_api(void)
{
    const int top = fn_cpu_tier();
    g_tier = top;
    snprintf(g_ctx, sizeof g_ctx, "cpu tier %d", top);
#if !FN_X86_TIERS
    expect_int("fn_cpu_tier", "generic only off x86-64", top, 0);
#endif
    expect_int("fn_set_tier", "clamped above", fn_set_tier(top + 1), top);
    expect_int("fn_set_tier", "clamped below", fn_set_tier(-1), 0);
    expect_int("fn_set_tier", "fn_tier", fn_tier(), 0);
    expect_int("fn_set_tier", "the top tier", fn_set_tier(top), top);
}

/* ======================= packing ======================= */

/* The packed form of B (K, N), as fn_gemm.h documents it: panels of NR columns,
 * panel p holding B[k, p NR + j] at P[p K NR + k w + j] with w its width, NR,
 * except a last, partial panel no wider than half a panel, packed NR / 2 wide;
 * the columns past N zero. */
static ptrdiff_t packed_width(ptrdiff_t N, ptrdiff_t p, ptrdiff_t NR)
{
    const ptrdiff_t rest = N - p * NR;
    return rest > NR / 2 ? NR : NR / 2;
}

static void check_pack(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    const ptrdiff_t n_in[] = {1, NR / 2 - 1, NR / 2, NR / 2 + 1, NR - 1, NR, NR + 1, 2 * NR + 3};
    const ptrdiff_t k_in[] = {0, 1, 5, 13};
    ptrdiff_t ns[8];
    const int nn = uniq(n_in, 8, 1, ns);
    int a, b, form;
    expect_int("fn_panel_width", "vectors per panel", NR, (g_tier == 2 ? 4 : 2) * vec_len());
    for (a = 0; a < 4; a++)
        for (b = 0; b < nn; b++) {
            const ptrdiff_t K = k_in[a], N = ns[b], panels = (N + NR - 1) / NR;
            ptrdiff_t size = 0, p, k, j;
            double *ref;
            Buf B, S;
            snprintf(g_ctx, sizeof g_ctx, "K=%ld N=%ld NR=%ld", (long)K, (long)N, (long)NR);
            for (p = 0; p < panels; p++)
                size += packed_width(N, p, NR) * K;
            expect_int("packed_size", "elements", (long)CALL(packed_size, K, N), (long)size);
            /* B (K, N) row-major at row stride N + 3; S = B^T (N, K) at row stride K + 2 */
            B = bnew(K * (N + 3));
            S = bnew(N * (K + 2));
            fill(B, 0, N + 3, K, N, -1, 1);
            for (k = 0; k < K; k++)
                for (j = 0; j < N; j++)
                    SET(S, j * (K + 2) + k, GET(B, k * (N + 3) + j));
            ref = (double *)xmalloc((size_t)(size > 0 ? size : 1) * sizeof(double));
            for (p = 0; p < panels; p++) {
                const ptrdiff_t w = packed_width(N, p, NR);
                for (k = 0; k < K; k++)
                    for (j = 0; j < w; j++)
                        ref[p * K * NR + k * w + j] = p * NR + j < N ? GET(B, k * (N + 3) + p * NR + j) : 0.0;
            }
            for (form = 0; form < 3; form++) {
                static const char *what[] = {"row-major source", "column-major source", "pack_t"};
                const char *fn = form == 2 ? "pack_t" : "pack";
                Buf P = bnew(size);
                Snap sB = snap(B), sS = snap(S), sP = snap(P);
                if (form == 0)
                    CALL(pack, K, N, B.p, N + 3, 1, P.p);
                else if (form == 1)
                    CALL(pack, K, N, S.p, 1, K + 2, P.p);
                else
                    CALL(pack_t, K, N, S.p, K + 2, P.p);
                cmp(fn, what[form], P, 0, size > 0 ? size : 1, size > 0 ? 1 : 0, size, ref, NULL, 0, 0);
                guards(fn, "guard zones", P, sP);
                untouched(fn, "B", B, sB);
                untouched(fn, "S", S, sS);
                sfree(&sB);
                sfree(&sS);
                sfree(&sP);
                bfree(&P);
            }
            free(ref);
            bfree(&B);
            bfree(&S);
        }
}

/* ======================= products ======================= */

/* ref (M, N) = A (M, K) @ B (K, N) (+ bias) (+ C0), sc the sums of |terms| */
static void ref_mm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const double *A, const double *B, const double *bias,
                   const double *C0, double *ref, double *sc)
{
    ptrdiff_t i, j, k;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = 0, a = 0;
            for (k = 0; k < K; k++) {
                const double t = A[i * K + k] * B[k * N + j];
                s += t;
                a += fabs(t);
            }
            if (bias != NULL) {
                s += bias[j];
                a += fabs(bias[j]);
            }
            if (C0 != NULL) {
                s += C0[i * N + j];
                a += fabs(C0[i * N + j]);
            }
            ref[i * N + j] = s;
            sc[i * N + j] = a;
        }
}

/* C's region before a call: random when accumulated, else NaN (which a read would
 * carry into the result) */
static void init_out(Buf C, ptrdiff_t ldc, ptrdiff_t M, ptrdiff_t N, int accumulate)
{
    if (accumulate)
        fill(C, 0, ldc, M, N, -1, 1);
    else
        fill_value(C, 0, ldc, M, N, NAN);
}

static void run_gemm_nn(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int with_bias, int accumulate)
{
    const char *fn = "gemm_nn_mt";
    const ptrdiff_t lda = K + 3, ldc = N + 2;
    Buf A = bnew(M * lda), B = bnew(K * N), bias = bnew(N), C = bnew(M * ldc), P = bnew((ptrdiff_t)CALL(packed_size, K, N));
    double *dA, *dB, *dbias, *C0, *ref, *sc;
    Snap sA, sP, sbias, sC;
    Buf C1;
    snprintf(g_ctx, sizeof g_ctx, "M=%ld N=%ld K=%ld bias=%d accumulate=%d", (long)M, (long)N, (long)K, with_bias,
             accumulate);
    fill(A, 0, lda, M, K, -1, 1);
    fill(B, 0, N, K, N, -1, 1);
    fill(bias, 0, N, 1, N, -1, 1);
    init_out(C, ldc, M, N, accumulate);
    CALL(pack, K, N, B.p, N, 1, P.p);
    dA = dense(A, 0, lda, M, K, 0);
    dB = dense(B, 0, N, K, N, 0);
    dbias = dense(bias, 0, N, 1, N, 0);
    C0 = dense(C, 0, ldc, M, N, 0);
    ref = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    sc = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    ref_mm(M, N, K, dA, dB, with_bias ? dbias : NULL, accumulate ? C0 : NULL, ref, sc);
    sA = snap(A);
    sP = snap(P);
    sbias = snap(bias);
    sC = snap(C);
    CALL(gemm_nn_mt, M, N, K, A.p, lda, P.p, with_bias ? bias.p : NULL, C.p, ldc, accumulate, 1);
    cmp(fn, "C", C, 0, ldc, M, N, ref, sc, g_tol, g_floor);
    unchanged(fn, "C outside (M, N)", C, sC, 0, ldc, M, N);
    untouched(fn, "A", A, sA);
    untouched(fn, "P", P, sP);
    untouched(fn, "bias", bias, sbias);
    /* two threads: the same bits */
    C1 = buf_copy(C);
    restore(C, sC);
    CALL(gemm_nn_mt, M, N, K, A.p, lda, P.p, with_bias ? bias.p : NULL, C.p, ldc, accumulate, 2);
    same(fn, "threads=2", C, C1, 0, ldc, M, N);
    unchanged(fn, "C outside (M, N), threads=2", C, sC, 0, ldc, M, N);
    bfree(&C1);
    sfree(&sA);
    sfree(&sP);
    sfree(&sbias);
    sfree(&sC);
    free(dA);
    free(dB);
    free(dbias);
    free(C0);
    free(ref);
    free(sc);
    bfree(&A);
    bfree(&B);
    bfree(&bias);
    bfree(&C);
    bfree(&P);
}

static void check_gemm_nn(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    const ptrdiff_t m_in[] = {0, 1, 5, 6, 7, 13, 33};
    const ptrdiff_t n_in[] = {1, NR / 2 - 1, NR / 2, NR / 2 + 1, NR - 1, NR, NR + NR / 2, 2 * NR + 3};
    const ptrdiff_t k_in[] = {0, 1, 7, 33};
    ptrdiff_t ns[8];
    const int nn = uniq(n_in, 8, 1, ns);
    int a, b, c, bias, acc;
    for (a = 0; a < 7; a++)
        for (b = 0; b < nn; b++)
            for (c = 0; c < 4; c++)
                for (bias = 0; bias < 2; bias++)
                    for (acc = 0; acc < 2; acc++)
                        run_gemm_nn(m_in[a], ns[b], k_in[c], bias, acc);
    /* more rows than a block of tiles (96), by block and by panel */
    run_gemm_nn(100, NR + 3, 40, 1, 0);
    run_gemm_nn(100, NR / 2, 9, 0, 1);
    /* a reduction cut in chunks (2048), A past the cached size: block order */
    run_gemm_nn(100, NR + 1, 2100, 1, 1);
    /* the matrix-vector kernel over a long reduction */
    run_gemm_nn(1, 2 * NR + 1, 2100, 1, 0);
}

/* tight: the rows of A and B one after the other (a B of one panel is then used as
 * it lies), else with gaps between them */
static void run_gemm_any(int ta, int tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int accumulate, int tight)
{
    const char *fn = "gemm_any_mt";
    /* A: (M, K), or (K, M) when ta; B: (K, N), or (N, K) when tb */
    const ptrdiff_t lda = (ta ? M : K) + (tight ? 0 : 2), ldb = (tb ? K : N) + (tight ? 0 : 1), ldc = N + 3;
    const ptrdiff_t arows = ta ? K : M, brows = tb ? N : K;
    const ptrdiff_t nscr = (ptrdiff_t)CALL(any_scratch, M, N, K, ta);
    Buf A = bnew(arows * lda), B = bnew(brows * ldb), C = bnew(M * ldc), W = bnew(nscr), C1;
    double *dA, *dB, *C0, *ref, *sc;
    Snap sA, sB, sC, sW;
    snprintf(g_ctx, sizeof g_ctx, "trans_a=%d trans_b=%d M=%ld N=%ld K=%ld accumulate=%d lda=%ld ldb=%ld", ta, tb,
             (long)M, (long)N, (long)K, accumulate, (long)lda, (long)ldb);
    fill(A, 0, lda, arows, ta ? M : K, -1, 1);
    fill(B, 0, ldb, brows, tb ? K : N, -1, 1);
    init_out(C, ldc, M, N, accumulate);
    dA = dense(A, 0, lda, M, K, ta);
    dB = dense(B, 0, ldb, K, N, tb);
    C0 = dense(C, 0, ldc, M, N, 0);
    ref = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    sc = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    ref_mm(M, N, K, dA, dB, NULL, accumulate ? C0 : NULL, ref, sc);
    sA = snap(A);
    sB = snap(B);
    sC = snap(C);
    sW = snap(W);
    CALL(gemm_any_mt, ta, tb, M, N, K, A.p, lda, B.p, ldb, accumulate, C.p, ldc, W.p, 1);
    cmp(fn, "C", C, 0, ldc, M, N, ref, sc, g_tol, g_floor);
    unchanged(fn, "C outside (M, N)", C, sC, 0, ldc, M, N);
    /* the size any_scratch gives is enough: nothing written past it */
    guards("any_scratch", "gemm_any_mt within the scratch", W, sW);
    untouched(fn, "A", A, sA);
    untouched(fn, "B", B, sB);
    C1 = buf_copy(C);
    restore(C, sC);
    CALL(gemm_any_mt, ta, tb, M, N, K, A.p, lda, B.p, ldb, accumulate, C.p, ldc, W.p, 2);
    same(fn, "threads=2", C, C1, 0, ldc, M, N);
    bfree(&C1);
    sfree(&sA);
    sfree(&sB);
    sfree(&sC);
    sfree(&sW);
    free(dA);
    free(dB);
    free(C0);
    free(ref);
    free(sc);
    bfree(&A);
    bfree(&B);
    bfree(&C);
    bfree(&W);
}

static void check_gemm_any(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    const ptrdiff_t m_in[] = {0, 1, 6, 7, 13};
    const ptrdiff_t n_in[] = {1, NR / 2, NR + 1, NR + NR / 2, 2 * NR + 3};
    const ptrdiff_t k_in[] = {0, 1, 7, 33};
    ptrdiff_t ns[5];
    const int nn = uniq(n_in, 5, 1, ns);
    int ta, tb, a, b, c, acc;
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++)
            for (a = 0; a < 5; a++)
                for (b = 0; b < nn; b++)
                    for (c = 0; c < 4; c++)
                        for (acc = 0; acc < 2; acc++)
                            run_gemm_any(ta, tb, m_in[a], ns[b], k_in[c], acc, 0);
    /* tight rows: B of one full or half panel used in place */
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++)
            for (b = 0; b < 3; b++)
                for (c = 0; c < 4; c++)
                    run_gemm_any(ta, tb, 7, b == 0 ? NR / 2 : (b == 1 ? NR : NR + 1), k_in[c], c & 1, 1);
    run_gemm_any(0, 0, 1, NR, 33, 0, 1);
    run_gemm_any(0, 0, 100, NR / 2, 65, 1, 1);
    run_gemm_any(1, 1, 100, 2 * NR + 1, 65, 0, 0);
    run_gemm_any(0, 0, 100, NR + NR / 2, 65, 1, 0);
    /* narrow products, on the dot-product tiles where they pay (N of 1 .. 9 and a
     * K of whole and partial vectors; every column-group width, a row block's last
     * rows, two tasks of rows) and on the panels where they do not (K short) */
    {
        const ptrdiff_t nn_[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, kk_[] = {5, 64, 100, 301}, mm_[] = {1, 7, 9, 100};
        int i, j;
        for (i = 0; i < 9; i++)
            for (j = 0; j < 4; j++)
                run_gemm_any(i & 1, (i >> 1) & 1, mm_[(i + j) % 4], nn_[i], kk_[j], j & 1, i % 3 == 0);
        run_gemm_any(0, 0, 100, 1, 700, 1, 1);
        run_gemm_any(1, 1, 57, 3, 256, 0, 0);
    }
}

/* gemm_list over `count` products: operand i is A[i % na] and B[i % nb] (so some
 * repeat, as broadcast batch entries do), result C[i / 2] when `pairs` (two products
 * summed into one result, the second accumulating: a backward's group), else C[i]
 * (accumulating into it when i is odd). Each product must equal gemm_any_mt's, run
 * in the same order, bitwise; nothing past the results or the scratch is written. */
static void run_gemm_list(int ta, int tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, ptrdiff_t count, int pairs)
{
    const char *fn = "gemm_list";
    const ptrdiff_t na = 3, nb = 2, lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 1;
    const ptrdiff_t asz = (ta ? K : M) * lda, bsz = (tb ? N : K) * ldb, csz = M * ldc;
    const ptrdiff_t nc = pairs ? (count + 1) / 2 : count;
    const ptrdiff_t nscr = (ptrdiff_t)CALL(any_scratch, M, N, K, ta);
    Buf A = bnew(na * asz), B = bnew(nb * bsz), C = bnew(nc * csz), W = bnew(nscr), R = bnew(nscr);
    Buf Cr;
    Snap sA, sB, sC, sW;
    void **pa = (void **)xmalloc((size_t)(count + 1) * sizeof(void *));
    void **pb = (void **)xmalloc((size_t)(count + 1) * sizeof(void *));
    void **pc = (void **)xmalloc((size_t)(count + 1) * sizeof(void *));
    unsigned char *acc = (unsigned char *)xmalloc((size_t)count + 1);
    ptrdiff_t i;
    snprintf(g_ctx, sizeof g_ctx, "trans_a=%d trans_b=%d M=%ld N=%ld K=%ld count=%ld pairs=%d", ta, tb, (long)M,
             (long)N, (long)K, (long)count, pairs);
    fill(A, 0, 1, 1, na * asz, -1, 1);
    fill(B, 0, 1, 1, nb * bsz, -1, 1);
    fill(C, 0, 1, 1, nc * csz, -1, 1);
    for (i = 0; i < count; i++) {
        pa[i] = at(A, (i % na) * asz);
        pb[i] = at(B, (i % nb) * bsz);
        pc[i] = at(C, (pairs ? i / 2 : i) * csz);
        acc[i] = (unsigned char)(i % 2);
    }
    Cr = buf_copy(C);
    sA = snap(A);
    sB = snap(B);
    sC = snap(C);
    sW = snap(W);
    /* the expected: gemm_any_mt product by product, in order */
    for (i = 0; i < count; i++)
        CALL(gemm_any_mt, ta, tb, M, N, K, at(A, (i % na) * asz), lda, at(B, (i % nb) * bsz), ldb, acc[i],
             at(Cr, (pairs ? i / 2 : i) * csz), ldc, R.p, 1);
    if (g_dbl)
        fn_gemm_list_d(ta, tb, M, N, K, (const double *const *)pa, lda, (const double *const *)pb, ldb,
                       (double *const *)pc, ldc, acc, count, (double *)W.p);
    else
        fn_gemm_list_f(ta, tb, M, N, K, (const float *const *)pa, lda, (const float *const *)pb, ldb,
                       (float *const *)pc, ldc, acc, count, (float *)W.p);
    /* the whole of C, the gaps between rows included (gemm_any_mt leaves them) */
    same(fn, "C equals gemm_any_mt's", C, Cr, 0, nc * csz > 0 ? nc * csz : 1, 1, nc * csz);
    guards(fn, "C within its results", C, sC);
    guards("any_scratch", "gemm_list within the scratch", W, sW);
    untouched(fn, "A", A, sA);
    untouched(fn, "B", B, sB);
    sfree(&sA);
    sfree(&sB);
    sfree(&sC);
    sfree(&sW);
    free(pa);
    free(pb);
    free(pc);
    free(acc);
    bfree(&A);
    bfree(&B);
    bfree(&C);
    bfree(&Cr);
    bfree(&W);
    bfree(&R);
}

static void check_gemm_list(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    int ta, tb;
    for (ta = 0; ta < 2; ta++)
        for (tb = 0; tb < 2; tb++) {
            /* narrow panels (the tall tile and its remainders), full and partial ones */
            run_gemm_list(ta, tb, 32, NR / 2, 19, 5, 0);
            run_gemm_list(ta, tb, 13, NR + 3, 7, 4, 1);
            run_gemm_list(ta, tb, 25, NR / 2 - 1, 33, 6, 1);
        }
    run_gemm_list(0, 0, 1, NR, 9, 3, 0);    /* one row: the matrix-vector kernel */
    run_gemm_list(0, 0, 7, 5, 0, 3, 0);     /* K = 0 */
    run_gemm_list(0, 0, 0, 5, 4, 2, 0);     /* M = 0 */
    run_gemm_list(0, 0, 6, 4, 3, 0, 0);     /* no products */
    run_gemm_list(0, 0, 140, 2 * NR + 1, 70, 2, 0);   /* too large to fetch ahead */
}

/* C (M, N1 + N2) (+)= A^T [B1 | B2]; two = 0: gemm_tn_mt (N2 must be 0) */
static void run_gemm_tn(int two, ptrdiff_t M, ptrdiff_t N1, ptrdiff_t N2, ptrdiff_t R, int accumulate)
{
    const char *fn = two ? "gemm_tn2_mt" : "gemm_tn_mt";
    const ptrdiff_t N = N1 + N2, lda = M + 1, ldb1 = N1 + 2, ldb2 = N2 + 1, ldc = N + 3;
    Buf A = bnew(R * lda), B1 = bnew(R * ldb1), B2 = bnew(R * ldb2), C = bnew(M * ldc), C1;
    double *dA, *dB, *C0, *ref, *sc;
    Snap sA, sB1, sB2, sC;
    ptrdiff_t r, j;
    int ret;
    snprintf(g_ctx, sizeof g_ctx, "M=%ld N1=%ld N2=%ld R=%ld accumulate=%d", (long)M, (long)N1, (long)N2, (long)R,
             accumulate);
    fill(A, 0, lda, R, M, -1, 1);
    fill(B1, 0, ldb1, R, N1, -1, 1);
    fill(B2, 0, ldb2, R, N2, -1, 1);
    init_out(C, ldc, M, N, accumulate);
    dA = dense(A, 0, lda, M, R, 1);
    dB = (double *)xmalloc((size_t)(R * N + 1) * sizeof(double));
    for (r = 0; r < R; r++)
        for (j = 0; j < N; j++)
            dB[r * N + j] = j < N1 ? GET(B1, r * ldb1 + j) : GET(B2, r * ldb2 + j - N1);
    C0 = dense(C, 0, ldc, M, N, 0);
    ref = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    sc = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    ref_mm(M, N, R, dA, dB, NULL, accumulate ? C0 : NULL, ref, sc);
    sA = snap(A);
    sB1 = snap(B1);
    sB2 = snap(B2);
    sC = snap(C);
    if (two)
        ret = CALL(gemm_tn2_mt, M, N1, N2, R, A.p, lda, B1.p, ldb1, B2.p, ldb2, C.p, ldc, accumulate, 1);
    else
        ret = CALL(gemm_tn_mt, M, N1, R, A.p, lda, B1.p, ldb1, C.p, ldc, accumulate, 1);
    expect_int(fn, "returns 1", ret, 1);
    cmp(fn, "C", C, 0, ldc, M, N, ref, sc, g_tol, g_floor);
    unchanged(fn, "C outside (M, N)", C, sC, 0, ldc, M, N);
    untouched(fn, "A", A, sA);
    untouched(fn, "B1", B1, sB1);
    untouched(fn, "B2", B2, sB2);
    C1 = buf_copy(C);
    restore(C, sC);
    if (two)
        ret = CALL(gemm_tn2_mt, M, N1, N2, R, A.p, lda, B1.p, ldb1, B2.p, ldb2, C.p, ldc, accumulate, 2);
    else
        ret = CALL(gemm_tn_mt, M, N1, R, A.p, lda, B1.p, ldb1, C.p, ldc, accumulate, 2);
    expect_int(fn, "returns 1, threads=2", ret, 1);
    same(fn, "threads=2", C, C1, 0, ldc, M, N);
    bfree(&C1);
    sfree(&sA);
    sfree(&sB1);
    sfree(&sB2);
    sfree(&sC);
    free(dA);
    free(dB);
    free(C0);
    free(ref);
    free(sc);
    bfree(&A);
    bfree(&B1);
    bfree(&B2);
    bfree(&C);
}

static void check_gemm_tn(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    int acc;
    for (acc = 0; acc < 2; acc++) {
        /* reductions longer than a chunk (512): 2 and 3 chunks, a last chunk of 1 */
        run_gemm_tn(1, 7, NR + 1, 3, 600, acc);
        run_gemm_tn(1, 13, 5, 0, 1100, acc);
        run_gemm_tn(1, 1, NR / 2, NR, 513, acc);
        /* more columns of A than a transpose block (64) */
        run_gemm_tn(1, 65, NR - 1, NR / 2 + 1, 40, acc);
        run_gemm_tn(1, 33, 2 * NR + 3, NR + NR / 2, 7, acc);
        run_gemm_tn(1, 6, 0, 5, 20, acc);
        /* R = 0 and M = 0 */
        run_gemm_tn(1, 5, 3, 2, 0, acc);
        run_gemm_tn(1, 0, 4, 4, 10, acc);
        run_gemm_tn(0, 7, NR + 3, 0, 600, acc);
        run_gemm_tn(0, 5, 1, 0, 1, acc);
        run_gemm_tn(0, 100, NR / 2, 0, 33, acc);
        run_gemm_tn(0, 5, 3, 0, 0, acc);
    }
}

static void check_transpose(void)
{
    const ptrdiff_t VL = vec_len();
    const ptrdiff_t s_in[] = {0, 1, VL - 1, VL, VL + 1, 2 * VL + 3, 33};
    ptrdiff_t ss[7];
    const int n = uniq(s_in, 7, 0, ss);
    int a, b;
    for (a = 0; a < n; a++)
        for (b = 0; b < n; b++) {
            const ptrdiff_t rows = ss[a], cols = ss[b], lda = cols + 2, ldt = rows + 3;
            Buf A = bnew(rows * lda), T = bnew(cols * ldt);
            double *ref;
            Snap sA, sT;
            snprintf(g_ctx, sizeof g_ctx, "rows=%ld cols=%ld", (long)rows, (long)cols);
            fill(A, 0, lda, rows, cols, -1, 1);
            ref = dense(A, 0, lda, cols, rows, 1);
            sA = snap(A);
            sT = snap(T);
            CALL(transpose_matrix, rows, cols, A.p, lda, T.p, ldt);
            cmp("transpose_matrix", "At", T, 0, ldt, cols, rows, ref, NULL, 0, 0);
            unchanged("transpose_matrix", "At outside (cols, rows)", T, sT, 0, ldt, cols, rows);
            untouched("transpose_matrix", "A", A, sA);
            sfree(&sA);
            sfree(&sT);
            free(ref);
            bfree(&A);
            bfree(&T);
        }
}

/* ======================= convolutions ======================= */

typedef struct {
    ptrdiff_t N, H, W, C, c0, Cg, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
} Geo;

static fn_conv_geom geom(const Geo *s)
{
    fn_conv_geom g;
    g.N = s->N;
    g.H = s->H;
    g.W = s->W;
    g.C = s->C;
    g.Ho = (s->H + s->pt + s->pb - s->dh * (s->kh - 1) - 1) / s->sh + 1;
    g.Wo = (s->W + s->pl + s->pr - s->dw * (s->kw - 1) - 1) / s->sw + 1;
    g.kh = s->kh;
    g.kw = s->kw;
    g.sh = s->sh;
    g.sw = s->sw;
    g.dh = s->dh;
    g.dw = s->dw;
    g.pt = s->pt;
    g.pl = s->pl;
    g.Cg = s->Cg;
    return g;
}

/* a pointer scratch with 8 marked slots after it */
#define PTR_MARK ((void *)(uintptr_t)0x5A5A5A5Au)
static void **ptr_scratch(size_t n)
{
    void **s = (void **)xmalloc((n + 8) * sizeof(void *));
    size_t i;
    for (i = 0; i < n + 8; i++)
        s[i] = PTR_MARK;
    return s;
}
static void ptr_scratch_check(const char *fn, const char *what, void **s, size_t n)
{
    int i, bad = 0;
    for (i = 0; i < 8; i++)
        bad += s[n + i] != PTR_MARK;
    if (g_selftest)
        bad++;
    tally(fn, bad == 0);
    if (bad)
        fail_line(fn, what, "written past its size");
}

static void run_conv(const Geo *s, ptrdiff_t Cog, int with_bias, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t q0,
                     ptrdiff_t q1)
{
    const fn_conv_geom g = geom(s);
    const ptrdiff_t K = g.kh * g.kw * g.Cg, M = g.N * g.Ho * g.Wo, ldy = Cog + 2;
    const ptrdiff_t co0 = 3, ldd = co0 + Cog + 1, ldw = Cog + 2;
    const ptrdiff_t nx = g.N * g.H * g.W * g.C;
    Buf x = bnew(nx), Wm = bnew(K * Cog), P = bnew((ptrdiff_t)CALL(packed_size, K, Cog)), bias = bnew(Cog);
    Buf zeros = bnew(g.Cg), y = bnew(M * ldy), dy = bnew(M * ldd), dw = bnew(K * ldw);
    double *ref = (double *)xmalloc((size_t)(M * Cog + K * Cog + 1) * sizeof(double));
    double *sc = (double *)xmalloc((size_t)(M * Cog + K * Cog + 1) * sizeof(double));
    double *dX, *dWm, *dB, *dD, *dw0;
    Snap sx, sP, sbias, szeros, sy, sdy, sdw;
    void **scr;
    size_t nscr;
    ptrdiff_t m, co, i, j, c, q, ow;
    snprintf(g_ctx, sizeof g_ctx,
             "N=%ld H=%ld W=%ld C=%ld c0=%ld Cg=%ld k=%ldx%ld s=%ld,%ld d=%ld,%ld pad=%ld,%ld,%ld,%ld Cog=%ld "
             "bias=%d m=%ld..%ld q=%ld..%ld",
             (long)g.N, (long)g.H, (long)g.W, (long)g.C, (long)s->c0, (long)g.Cg, (long)g.kh, (long)g.kw, (long)g.sh,
             (long)g.sw, (long)g.dh, (long)g.dw, (long)s->pt, (long)s->pl, (long)s->pb, (long)s->pr, (long)Cog,
             with_bias, (long)m0, (long)m1, (long)q0, (long)q1);
    fill(x, 0, 1, 1, nx, -1, 1);
    fill(Wm, 0, Cog, K, Cog, -1, 1);
    fill(bias, 0, Cog, 1, Cog, -1, 1);
    fill_value(zeros, 0, 1, 1, g.Cg, 0);
    fill_value(y, 0, ldy, M, Cog, NAN);
    fill(dy, 0, ldd, M, ldd, -1, 1);
    fill(dw, 0, ldw, K, Cog, -1, 1);
    CALL(pack, K, Cog, Wm.p, Cog, 1, P.p);
    dX = dense(x, 0, 1, 1, nx, 0);
    dWm = dense(Wm, 0, Cog, K, Cog, 0);
    dB = dense(bias, 0, Cog, 1, Cog, 0);
    dD = dense(dy, 0, ldd, M, ldd, 0);
    dw0 = dense(dw, 0, ldw, K, Cog, 0);

    /* forward: pixels m0 .. m1 */
    for (m = m0; m < m1; m++) {
        const ptrdiff_t pw = m % g.Wo, qq = m / g.Wo, oh = qq % g.Ho, n = qq / g.Ho;
        for (co = 0; co < Cog; co++) {
            double sum = with_bias ? dB[co] : 0, a = with_bias ? fabs(dB[co]) : 0;
            for (i = 0; i < g.kh; i++)
                for (j = 0; j < g.kw; j++) {
                    const ptrdiff_t ih = oh * g.sh - g.pt + i * g.dh, iw = pw * g.sw - g.pl + j * g.dw;
                    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W)
                        continue;
                    for (c = 0; c < g.Cg; c++) {
                        const double t = dX[((n * g.H + ih) * g.W + iw) * g.C + s->c0 + c] *
                                         dWm[((i * g.kw + j) * g.Cg + c) * Cog + co];
                        sum += t;
                        a += fabs(t);
                    }
                }
            ref[(m - m0) * Cog + co] = sum;
            sc[(m - m0) * Cog + co] = a;
        }
    }
    nscr = CALL(conv_scratch, &g);
    scr = ptr_scratch(nscr);
    sx = snap(x);
    sP = snap(P);
    sbias = snap(bias);
    szeros = snap(zeros);
    sy = snap(y);
    CALL(conv_forward, &g, x.p, s->c0, P.p, Cog, with_bias ? bias.p : NULL, y.p, ldy, m0, m1, zeros.p, scr);
    cmp("conv_forward", "y", y, m0 * ldy, ldy, m1 - m0, Cog, ref, sc, g_tol, g_floor);
    unchanged("conv_forward", "y outside pixels m0..m1", y, sy, m0 * ldy, ldy, m1 - m0, Cog);
    untouched("conv_forward", "x", x, sx);
    untouched("conv_forward", "P", P, sP);
    untouched("conv_forward", "bias", bias, sbias);
    untouched("conv_forward", "zeros", zeros, szeros);
    /* the size conv_scratch gives is enough */
    ptr_scratch_check("conv_scratch", "conv_forward within the scratch", scr, nscr);
    free(scr);

    /* weight gradient: output rows q0 .. q1 */
    for (i = 0; i < g.kh; i++)
        for (j = 0; j < g.kw; j++)
            for (c = 0; c < g.Cg; c++)
                for (co = 0; co < Cog; co++) {
                    const ptrdiff_t row = (i * g.kw + j) * g.Cg + c;
                    double sum = dw0[row * Cog + co], a = fabs(sum);
                    for (q = q0; q < q1; q++) {
                        const ptrdiff_t n = q / g.Ho, oh = q % g.Ho, ih = oh * g.sh - g.pt + i * g.dh;
                        if (ih < 0 || ih >= g.H)
                            continue;
                        for (ow = 0; ow < g.Wo; ow++) {
                            const ptrdiff_t iw = ow * g.sw - g.pl + j * g.dw;
                            double t;
                            if (iw < 0 || iw >= g.W)
                                continue;
                            t = dX[((n * g.H + ih) * g.W + iw) * g.C + s->c0 + c] *
                                dD[(q * g.Wo + ow) * ldd + co0 + co];
                            sum += t;
                            a += fabs(t);
                        }
                    }
                    ref[row * Cog + co] = sum;
                    sc[row * Cog + co] = a;
                }
    nscr = CALL(conv_dw_scratch, q1 - q0);
    scr = ptr_scratch(nscr);
    sdy = snap(dy);
    sdw = snap(dw);
    CALL(conv_weight_grad, &g, x.p, s->c0, dy.p, ldd, co0, Cog, dw.p, ldw, q0, q1, scr);
    cmp("conv_weight_grad", "dw", dw, 0, ldw, K, Cog, ref, sc, g_tol, g_floor);
    unchanged("conv_weight_grad", "dw outside (K, Cog)", dw, sdw, 0, ldw, K, Cog);
    untouched("conv_weight_grad", "x", x, sx);
    untouched("conv_weight_grad", "dy", dy, sdy);
    ptr_scratch_check("conv_dw_scratch", "conv_weight_grad within the scratch", scr, nscr);
    free(scr);

    sfree(&sx);
    sfree(&sP);
    sfree(&sbias);
    sfree(&szeros);
    sfree(&sy);
    sfree(&sdy);
    sfree(&sdw);
    free(ref);
    free(sc);
    free(dX);
    free(dWm);
    free(dB);
    free(dD);
    free(dw0);
    bfree(&x);
    bfree(&Wm);
    bfree(&P);
    bfree(&bias);
    bfree(&zeros);
    bfree(&y);
    bfree(&dy);
    bfree(&dw);
}

static void check_conv(void)
{
    const ptrdiff_t NR = fn_panel_width(g_dbl);
    /*                N  H   W  C  c0 Cg kh kw sh sw dh dw pt pl pb pr */
    static const Geo geos[] = {
        {2, 5, 7, 3, 0, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},  /* 3x3 "same" */
        {1, 9, 8, 5, 3, 2, 3, 2, 2, 3, 2, 1, 2, 1, 0, 2},  /* strides, dilation, uneven padding, a group */
        {1, 11, 10, 4, 1, 2, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},/* 1x1 over 110 pixels: two blocks of tiles */
        {1, 2, 2, 1, 0, 1, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3},  /* tiles whose every tap is padding */
        {3, 4, 3, 7, 0, 7, 2, 3, 1, 1, 1, 2, 0, 2, 1, 2},  /* dilated taps wider than the input */
        {1, 6, 13, 13, 0, 13, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2},
    };
    const ptrdiff_t co_in[] = {1, NR / 2, NR + 3, 2 * NR + 1};
    ptrdiff_t cos[4];
    const int nco = uniq(co_in, 4, 1, cos);
    int a, b, bias;
    for (a = 0; a < (int)(sizeof geos / sizeof geos[0]); a++) {
        const fn_conv_geom g = geom(&geos[a]);
        const ptrdiff_t M = g.N * g.Ho * g.Wo, Q = g.N * g.Ho;
        for (b = 0; b < nco; b++)
            for (bias = 0; bias < 2; bias++) {
                run_conv(&geos[a], cos[b], bias, 0, M, 0, Q);
                if (bias)
                    run_conv(&geos[a], cos[b], bias, M > 6 ? 3 : 0, M > 6 ? M - 2 : M, Q > 2 ? 1 : 0,
                             Q > 2 ? Q - 1 : Q);
            }
    }
    /* empty ranges of pixels and of output rows */
    run_conv(&geos[1], NR + 3, 1, 5, 5, 2, 2);
}

/* the direct kernels of a one-channel convolution (conv1_rows, conv1_dw_rows): the
 * input padded by the caller, (N, Hp, Wp); weights (taps, Cp), zeros past Cout */
static void run_conv1(const Geo *s, ptrdiff_t Cout, int with_bias, ptrdiff_t q0, ptrdiff_t q1)
{
    const fn_conv_geom g = geom(s);
    const ptrdiff_t taps = g.kh * g.kw, Cp = (Cout + 7) / 8 * 8, Q = g.N * g.Ho;
    const ptrdiff_t Hp = (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1 > g.H + g.pt
                         ? (g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1 : g.H + g.pt;
    const ptrdiff_t Wp = (g.Wo - 1) + (g.kw - 1) * g.dw + 1 > g.W + g.pl ? (g.Wo - 1) + (g.kw - 1) * g.dw + 1
                                                                          : g.W + g.pl;
    const ptrdiff_t Wv = (g.Wo + 15) / 16 * 16, nsc = (q1 - q0) * Cp * Wv;
    Buf xp = bnew(g.N * Hp * Wp), wp = bnew(taps * Cp), bias = bnew(Cout), y = bnew(Q * g.Wo * Cout);
    Buf dy = bnew(Q * g.Wo * Cout), part = bnew(taps * Cp), scr = bnew(nsc);
    double *ref = (double *)xmalloc((size_t)(Q * g.Wo * Cout + taps * Cp + 1) * sizeof(double));
    double *sc = (double *)xmalloc((size_t)(Q * g.Wo * Cout + taps * Cp + 1) * sizeof(double));
    double *dX, *dW, *dB, *dD;
    Snap sxp, swp, sbias, sy, sdy, spart, sscr;
    ptrdiff_t n, q, ow, co, i, j;
    snprintf(g_ctx, sizeof g_ctx, "N=%ld H=%ld W=%ld k=%ldx%ld sh=%ld d=%ld,%ld pad=%ld,%ld Cout=%ld bias=%d q=%ld..%ld",
             (long)g.N, (long)g.H, (long)g.W, (long)g.kh, (long)g.kw, (long)g.sh, (long)g.dh, (long)g.dw,
             (long)s->pt, (long)s->pl, (long)Cout, with_bias, (long)q0, (long)q1);
    /* the padded input: the image at (pt, pl), zeros around it */
    fill_value(xp, 0, 1, 1, g.N * Hp * Wp, 0);
    for (n = 0; n < g.N; n++)
        fill(xp, (n * Hp + g.pt) * Wp + g.pl, Wp, g.H, g.W, -1, 1);
    fill_value(wp, 0, 1, 1, taps * Cp, 0);
    fill(wp, 0, Cp, taps, Cout, -1, 1);
    fill(bias, 0, Cout, 1, Cout, -1, 1);
    fill_value(y, 0, 1, 1, Q * g.Wo * Cout, NAN);
    fill(dy, 0, 1, 1, Q * g.Wo * Cout, -1, 1);
    fill_value(part, 0, 1, 1, taps * Cp, NAN);
    dX = dense(xp, 0, 1, 1, g.N * Hp * Wp, 0);
    dW = dense(wp, 0, Cp, taps, Cp, 0);
    dB = dense(bias, 0, Cout, 1, Cout, 0);
    dD = dense(dy, 0, 1, 1, Q * g.Wo * Cout, 0);
    for (q = q0; q < q1; q++) {
        const ptrdiff_t nn = q / g.Ho, oh = q % g.Ho;
        for (ow = 0; ow < g.Wo; ow++)
            for (co = 0; co < Cout; co++) {
                double sum = with_bias ? dB[co] : 0, a = fabs(sum);
                for (i = 0; i < g.kh; i++)
                    for (j = 0; j < g.kw; j++) {
                        const double t = dX[(nn * Hp + oh * g.sh + i * g.dh) * Wp + ow + j * g.dw] * dW[(i * g.kw + j) * Cp + co];
                        sum += t;
                        a += fabs(t);
                    }
                ref[((q - q0) * g.Wo + ow) * Cout + co] = sum;
                sc[((q - q0) * g.Wo + ow) * Cout + co] = a;
            }
    }
    sxp = snap(xp);
    swp = snap(wp);
    sbias = snap(bias);
    sy = snap(y);
    CALL(conv1_rows, &g, xp.p, Hp, Wp, wp.p, Cp, Cout, with_bias ? bias.p : NULL, y.p, q0, q1);
    cmp("conv1_rows", "y", y, q0 * g.Wo * Cout, Cout, (q1 - q0) * g.Wo, Cout, ref, sc, g_tol, g_floor);
    unchanged("conv1_rows", "y outside rows q0..q1", y, sy, q0 * g.Wo * Cout, Cout, (q1 - q0) * g.Wo, Cout);
    untouched("conv1_rows", "xp", xp, sxp);
    untouched("conv1_rows", "wp", wp, swp);
    untouched("conv1_rows", "bias", bias, sbias);

    for (i = 0; i < g.kh; i++)
        for (j = 0; j < g.kw; j++)
            for (co = 0; co < Cout; co++) {
                double sum = 0, a = 0;
                for (q = q0; q < q1; q++) {
                    const ptrdiff_t nn = q / g.Ho, oh = q % g.Ho;
                    for (ow = 0; ow < g.Wo; ow++) {
                        const double t = dX[(nn * Hp + oh * g.sh + i * g.dh) * Wp + ow + j * g.dw] *
                                         dD[(q * g.Wo + ow) * Cout + co];
                        sum += t;
                        a += fabs(t);
                    }
                }
                ref[(i * g.kw + j) * Cout + co] = sum;
                sc[(i * g.kw + j) * Cout + co] = a;
            }
    sdy = snap(dy);
    spart = snap(part);
    sscr = snap(scr);
    CALL(conv1_dw_rows, &g, xp.p, Hp, Wp, dy.p, Cout, Cp, part.p, q0, q1, scr.p);
    cmp("conv1_dw_rows", "part", part, 0, Cp, taps, Cout, ref, sc, g_tol, g_floor);
    unchanged("conv1_dw_rows", "part past Cout", part, spart, 0, Cp, taps, Cout);
    untouched("conv1_dw_rows", "xp", xp, sxp);
    untouched("conv1_dw_rows", "dy", dy, sdy);
    /* the scratch's guards: (q1 - q0) Cp Wv elements are enough */
    guards("conv1_dw_rows", "scratch", scr, sscr);

    sfree(&sxp);
    sfree(&swp);
    sfree(&sbias);
    sfree(&sy);
    sfree(&sdy);
    sfree(&spart);
    sfree(&sscr);
    free(ref);
    free(sc);
    free(dX);
    free(dW);
    free(dB);
    free(dD);
    bfree(&xp);
    bfree(&wp);
    bfree(&bias);
    bfree(&y);
    bfree(&dy);
    bfree(&part);
    bfree(&scr);
}

static void check_conv1(void)
{
    /*                N  H   W  C  c0 Cg kh kw sh sw dh dw pt pl pb pr */
    static const Geo geos[] = {
        {2, 8, 8, 1, 0, 1, 5, 5, 1, 1, 1, 1, 0, 0, 0, 0},   /* LeNet-5's first layer, smaller */
        {1, 9, 21, 1, 0, 1, 3, 3, 2, 1, 2, 2, 2, 1, 1, 2},  /* row stride, dilation, uneven padding */
        {3, 4, 37, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},  /* 1x1, rows wider than two vectors */
    };
    static const ptrdiff_t couts[] = {1, 6, 8, 9, 17};
    int a, b;
    for (a = 0; a < (int)(sizeof geos / sizeof geos[0]); a++) {
        const fn_conv_geom g = geom(&geos[a]);
        const ptrdiff_t Q = g.N * g.Ho;
        for (b = 0; b < (int)(sizeof couts / sizeof couts[0]); b++) {
            run_conv1(&geos[a], couts[b], b & 1, 0, Q);
            if (Q > 2)
                run_conv1(&geos[a], couts[b], 1, 1, Q - 1);
        }
    }
}

/* ======================= the fused LSTM step ======================= */

static double sigm(double z) { return 1.0 / (1.0 + exp(-z)); }

/* mode 0: x in the step (K = n_a + n_x, bias b); 1: the input projection gx;
 * 2: gx is g itself */
static void run_lstm(ptrdiff_t m, ptrdiff_t n_a, ptrdiff_t n_x, int mode, int stream)
{
    const char *fn = "lstm_step_mt";
    /* a panel holds a 64-byte line of units of each gate */
    const ptrdiff_t LU = 64 / (ptrdiff_t)ES, LNR = 4 * LU, panels = (n_a + LU - 1) / LU;
    const ptrdiff_t K = n_a + (mode == 0 ? n_x : 0), ldw = n_a + n_x + 1, G = 4 * n_a;
    const ptrdiff_t size = (ptrdiff_t)CALL(lstm_packed_size, n_a, K);
    Buf W = bnew(G * ldw), P = bnew(size), h = bnew(m * n_a), cp = bnew(m * n_a), x = bnew(m * n_x);
    Buf b = bnew(G), gx = bnew(m * G), gxn = bnew(m * G), g = bnew(m * G), cn = bnew(m * n_a);
    Buf tc = bnew(m * n_a), hn = bnew(m * n_a);
    Buf g1, cn1, tc1, hn1;
    double *pref, *rg, *rc, *rt, *rh, *sg, *sa;
    double *dW, *dh, *dcp, *dx, *db, *dgx;
    Snap sW, sP, sh, scp, sx, sb, sgx, sgxn, sgo, scn, stc, shn;
    fn_lstm_io_f iof;
    fn_lstm_io_d iod;
    ptrdiff_t p, k, gate, j, r, u;
    snprintf(g_ctx, sizeof g_ctx, "m=%ld n_a=%ld n_x=%ld %s stream=%d", (long)m, (long)n_a, (long)n_x,
             mode == 0 ? "x in the step" : (mode == 1 ? "gx" : "gx = g"), stream);
    expect_int("lstm_packed_size", "elements", (long)size, (long)(panels * LNR * K));
    fill(W, 0, ldw, G, n_a + n_x, -1, 1);
    sW = snap(W);
    CALL(lstm_pack, n_a, K, W.p, ldw, P.p);
    pref = (double *)xmalloc((size_t)(size + 1) * sizeof(double));
    for (p = 0; p < panels; p++)
        for (k = 0; k < K; k++)
            for (gate = 0; gate < 4; gate++)
                for (j = 0; j < LU; j++)
                    pref[(p * K + k) * LNR + gate * LU + j] =
                        p * LU + j < n_a ? GET(W, (gate * n_a + p * LU + j) * ldw + k) : 0.0;
    cmp("lstm_pack", "P", P, 0, 1, 1, size, pref, NULL, 0, 0);
    untouched("lstm_pack", "W", W, sW);
    free(pref);

    fill(h, 0, n_a, m, n_a, -1, 1);
    fill(cp, 0, n_a, m, n_a, -2, 2);
    fill(x, 0, n_x, m, n_x, -1, 1);
    fill(b, 0, G, 1, G, -1, 1);
    fill(gx, 0, G, m, G, -2, 2);
    fill(gxn, 0, G, m, G, -2, 2);
    if (mode == 2)
        fill(g, 0, G, m, G, -2, 2);
    else
        fill_value(g, 0, G, m, G, NAN);
    fill_value(cn, 0, n_a, m, n_a, NAN);
    fill_value(tc, 0, n_a, m, n_a, NAN);
    fill_value(hn, 0, n_a, m, n_a, NAN);
    dW = dense(W, 0, ldw, G, n_a + n_x, 0);
    dh = dense(h, 0, n_a, m, n_a, 0);
    dcp = dense(cp, 0, n_a, m, n_a, 0);
    dx = dense(x, 0, n_x, m, n_x, 0);
    db = dense(b, 0, G, 1, G, 0);
    dgx = dense(mode == 2 ? g : gx, 0, G, m, G, 0);
    rg = (double *)xmalloc((size_t)(m * G + 1) * sizeof(double));
    sg = (double *)xmalloc((size_t)(m * G + 1) * sizeof(double));
    rc = (double *)xmalloc((size_t)(m * n_a + 1) * sizeof(double));
    rt = (double *)xmalloc((size_t)(m * n_a + 1) * sizeof(double));
    rh = (double *)xmalloc((size_t)(m * n_a + 1) * sizeof(double));
    sa = (double *)xmalloc((size_t)(m * n_a + 1) * sizeof(double));
    for (r = 0; r < m; r++)
        for (u = 0; u < n_a; u++) {
            double z[4], smax = 0, f, ug, cc, o, c;
            for (gate = 0; gate < 4; gate++) {
                const double *wr = dW + (gate * n_a + u) * (n_a + n_x);
                double s = 0, a = 0;
                for (k = 0; k < n_a; k++) {
                    s += dh[r * n_a + k] * wr[k];
                    a += fabs(dh[r * n_a + k] * wr[k]);
                }
                if (mode == 0) {
                    for (k = 0; k < n_x; k++) {
                        s += dx[r * n_x + k] * wr[n_a + k];
                        a += fabs(dx[r * n_x + k] * wr[n_a + k]);
                    }
                    s += db[gate * n_a + u];
                    a += fabs(db[gate * n_a + u]);
                } else {
                    s += dgx[r * G + gate * n_a + u];
                    a += fabs(dgx[r * G + gate * n_a + u]);
                }
                z[gate] = s;
                if (a > smax)
                    smax = a;
            }
            f = sigm(z[0]);
            ug = sigm(z[1]);
            cc = tanh(z[2]);
            o = sigm(z[3]);
            c = f * dcp[r * n_a + u] + ug * cc;
            rg[r * G + u] = f;
            rg[r * G + n_a + u] = ug;
            rg[r * G + 2 * n_a + u] = cc;
            rg[r * G + 3 * n_a + u] = o;
            rc[r * n_a + u] = c;
            rt[r * n_a + u] = tanh(c);
            rh[r * n_a + u] = o * tanh(c);
            /* an error e in a pre-activation moves a gate by at most e, c by about
             * (|c_prev| + 2) e, h by as much again */
            sa[r * n_a + u] = (1 + smax) * (2 + fabs(dcp[r * n_a + u]));
            for (gate = 0; gate < 4; gate++)
                sg[r * G + gate * n_a + u] = sa[r * n_a + u];
        }
    sP = snap(P);
    sh = snap(h);
    scp = snap(cp);
    sx = snap(x);
    sb = snap(b);
    sgx = snap(gx);
    sgxn = snap(gxn);
    sgo = snap(g);
    scn = snap(cn);
    stc = snap(tc);
    shn = snap(hn);
    iof.n_a = iod.n_a = n_a;
    iof.n_x = iod.n_x = n_x;
    iof.h_prev = (const float *)h.p;
    iod.h_prev = (const double *)h.p;
    iof.c_prev = (const float *)cp.p;
    iod.c_prev = (const double *)cp.p;
    iof.x = mode == 0 ? (const float *)x.p : NULL;
    iod.x = mode == 0 ? (const double *)x.p : NULL;
    iof.bias = mode == 0 ? (const float *)b.p : NULL;
    iod.bias = mode == 0 ? (const double *)b.p : NULL;
    iof.gx = mode == 0 ? NULL : (const float *)(mode == 2 ? g.p : gx.p);
    iod.gx = mode == 0 ? NULL : (const double *)(mode == 2 ? g.p : gx.p);
    iof.gx_next = mode == 0 ? NULL : (const float *)gxn.p;
    iod.gx_next = mode == 0 ? NULL : (const double *)gxn.p;
    iof.g = (float *)g.p;
    iod.g = (double *)g.p;
    iof.c_next = (float *)cn.p;
    iod.c_next = (double *)cn.p;
    iof.tanh_c = (float *)tc.p;
    iod.tanh_c = (double *)tc.p;
    iof.h_next = (float *)hn.p;
    iod.h_next = (double *)hn.p;
    iof.stream = iod.stream = stream;
    if (g_dbl)
        fn_lstm_step_mt_d(m, &iod, (const double *)P.p, 1);
    else
        fn_lstm_step_mt_f(m, &iof, (const float *)P.p, 1);
    cmp(fn, "g", g, 0, G, m, G, rg, sg, g_tol, g_floor);
    cmp(fn, "c_next", cn, 0, n_a, m, n_a, rc, sa, g_tol, g_floor);
    cmp(fn, "tanh_c", tc, 0, n_a, m, n_a, rt, sa, g_tol, g_floor);
    cmp(fn, "h_next", hn, 0, n_a, m, n_a, rh, sa, g_tol, g_floor);
    unchanged(fn, "g outside", g, sgo, 0, G, m, G);
    unchanged(fn, "c_next outside", cn, scn, 0, n_a, m, n_a);
    unchanged(fn, "tanh_c outside", tc, stc, 0, n_a, m, n_a);
    unchanged(fn, "h_next outside", hn, shn, 0, n_a, m, n_a);
    untouched(fn, "P", P, sP);
    untouched(fn, "h_prev", h, sh);
    untouched(fn, "c_prev", cp, scp);
    untouched(fn, "x", x, sx);
    untouched(fn, "bias", b, sb);
    untouched(fn, "gx", gx, sgx);
    untouched(fn, "gx_next", gxn, sgxn);
    /* two threads: the same bits */
    g1 = buf_copy(g);
    cn1 = buf_copy(cn);
    tc1 = buf_copy(tc);
    hn1 = buf_copy(hn);
    restore(g, sgo);
    restore(cn, scn);
    restore(tc, stc);
    restore(hn, shn);
    if (g_dbl)
        fn_lstm_step_mt_d(m, &iod, (const double *)P.p, 2);
    else
        fn_lstm_step_mt_f(m, &iof, (const float *)P.p, 2);
    same(fn, "g, threads=2", g, g1, 0, G, m, G);
    same(fn, "c_next, threads=2", cn, cn1, 0, n_a, m, n_a);
    same(fn, "tanh_c, threads=2", tc, tc1, 0, n_a, m, n_a);
    same(fn, "h_next, threads=2", hn, hn1, 0, n_a, m, n_a);
    bfree(&g1);
    bfree(&cn1);
    bfree(&tc1);
    bfree(&hn1);
    sfree(&sgo);
    sfree(&sW);
    sfree(&sP);
    sfree(&sh);
    sfree(&scp);
    sfree(&sx);
    sfree(&sb);
    sfree(&sgx);
    sfree(&sgxn);
    sfree(&scn);
    sfree(&stc);
    sfree(&shn);
    free(rg);
    free(sg);
    free(rc);
    free(rt);
    free(rh);
    free(sa);
    free(dW);
    free(dh);
    free(dcp);
    free(dx);
    free(db);
    free(dgx);
    bfree(&W);
    bfree(&P);
    bfree(&h);
    bfree(&cp);
    bfree(&x);
    bfree(&b);
    bfree(&gx);
    bfree(&gxn);
    bfree(&g);
    bfree(&cn);
    bfree(&tc);
    bfree(&hn);
}

/* lstm_steps: T steps of lstm_step_mt as documented (each step's blocks of h, c,
 * tanh_c and g, x or the projection in g, gx_next the next step's), against the steps called one by one, bitwise, on 2 threads */
static void run_lstm_steps(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, ptrdiff_t n_x, int x_in_step, int stream)
{
    const char *fn = "lstm_steps";
    const ptrdiff_t K = n_a + (x_in_step ? n_x : 0), ldw = n_a + n_x, G = 4 * n_a, step = m * n_a;
    Buf W = bnew(G * ldw), P = bnew((ptrdiff_t)CALL(lstm_packed_size, n_a, K)), b = bnew(G);
    Buf x = bnew(T * m * n_x), h = bnew((T + 1) * step), c = bnew((T + 1) * step);
    Buf g = bnew(T * m * G), tc = bnew(T * step);
    Buf h1, c1, g1, tc1;
    Snap sP, sx, sb;
    fn_lstm_io_f iof;
    fn_lstm_io_d iod;
    ptrdiff_t t;
    snprintf(g_ctx, sizeof g_ctx, "T=%ld m=%ld n_a=%ld n_x=%ld %s stream=%d", (long)T, (long)m, (long)n_a,
             (long)n_x, x_in_step ? "x in the step" : "projection in g", stream);
    fill(W, 0, ldw, G, ldw, -1, 1);
    CALL(lstm_pack, n_a, K, W.p, ldw, P.p);
    fill(b, 0, G, 1, G, -1, 1);
    fill(x, 0, n_x, T * m, n_x, -1, 1);
    fill_value(h, 0, n_a, (T + 1) * m, n_a, NAN);
    fill_value(c, 0, n_a, (T + 1) * m, n_a, NAN);
    fill(h, 0, n_a, m, n_a, -1, 1);
    fill(c, 0, n_a, m, n_a, -2, 2);
    if (x_in_step)
        fill_value(g, 0, G, T * m, G, NAN);
    else
        fill(g, 0, G, T * m, G, -2, 2);
    fill_value(tc, 0, n_a, T * m, n_a, NAN);
    h1 = buf_copy(h);
    c1 = buf_copy(c);
    g1 = buf_copy(g);
    tc1 = buf_copy(tc);
    sP = snap(P);
    sx = snap(x);
    sb = snap(b);
    CALL(lstm_steps, T, m, n_x, n_a, x.p, b.p, g.p, h.p, c.p, tc.p, P.p, x_in_step, stream, 2);
    for (t = 0; t < T; t++) {
        char *hp = (char *)h1.p, *cpp = (char *)c1.p, *gp = (char *)g1.p, *tp = (char *)tc1.p;
        const char *xp = (const char *)x.p;
        const ptrdiff_t gs = m * G * (ptrdiff_t)ES, as = step * (ptrdiff_t)ES;
        iof.n_a = iod.n_a = n_a;
        iof.n_x = iod.n_x = n_x;
        iof.h_prev = (const float *)(hp + t * as);
        iod.h_prev = (const double *)(hp + t * as);
        iof.c_prev = (const float *)(cpp + t * as);
        iod.c_prev = (const double *)(cpp + t * as);
        iof.x = x_in_step ? (const float *)(xp + t * m * n_x * (ptrdiff_t)ES) : NULL;
        iod.x = x_in_step ? (const double *)(xp + t * m * n_x * (ptrdiff_t)ES) : NULL;
        iof.bias = (const float *)b.p;
        iod.bias = (const double *)b.p;
        iof.gx = x_in_step ? NULL : (const float *)(gp + t * gs);
        iod.gx = x_in_step ? NULL : (const double *)(gp + t * gs);
        iof.gx_next = !x_in_step && t + 1 < T ? (const float *)(gp + (t + 1) * gs) : NULL;
        iod.gx_next = !x_in_step && t + 1 < T ? (const double *)(gp + (t + 1) * gs) : NULL;
        iof.g = (float *)(gp + t * gs);
        iod.g = (double *)(gp + t * gs);
        iof.c_next = (float *)(cpp + (t + 1) * as);
        iod.c_next = (double *)(cpp + (t + 1) * as);
        iof.tanh_c = (float *)(tp + t * as);
        iod.tanh_c = (double *)(tp + t * as);
        iof.h_next = (float *)(hp + (t + 1) * as);
        iod.h_next = (double *)(hp + (t + 1) * as);
        iof.stream = iod.stream = stream;
        if (g_dbl)
            fn_lstm_step_mt_d(m, &iod, (const double *)P.p, 1);
        else
            fn_lstm_step_mt_f(m, &iof, (const float *)P.p, 1);
    }
    same(fn, "h", h, h1, 0, n_a, (T + 1) * m, n_a);
    same(fn, "c", c, c1, 0, n_a, (T + 1) * m, n_a);
    same(fn, "g", g, g1, 0, G, T * m, G);
    same(fn, "tanh_c", tc, tc1, 0, n_a, T * m, n_a);
    untouched(fn, "P", P, sP);
    untouched(fn, "x", x, sx);
    untouched(fn, "bias", b, sb);
    bfree(&W);
    bfree(&P);
    bfree(&b);
    bfree(&x);
    bfree(&h);
    bfree(&c);
    bfree(&g);
    bfree(&tc);
    bfree(&h1);
    bfree(&c1);
    bfree(&g1);
    bfree(&tc1);
    sfree(&sP);
    sfree(&sx);
    sfree(&sb);
}

/* lstm_backward_steps: the documented time loop (per step lstm_backward_rows, then
 * dh_prev = dh_{t-1} + dz_t @ W_h by gemm_nn_mt, both checked on their own), built
 * here from those two on one thread, against the call on one thread and on two
 * (split by batch rows where the weights are small, by steps where not), bitwise;
 * nothing written but dz, dh_prev and dc. */
static void run_lstm_backward_steps(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a)
{
    const char *fn = "lstm_backward_steps";
    const ptrdiff_t K = 4 * n_a, step = m * n_a, gstep = m * K;
    Buf W = bnew(K * n_a), P = bnew((ptrdiff_t)CALL(packed_size, K, n_a));
    Buf g = bnew(T * gstep), c = bnew((T + 1) * step), tc = bnew(T * step), dh = bnew(T * step);
    Buf dc = bnew(step), dz = bnew(T * gstep), dhp = bnew(step);
    Buf dc_ref, dz_ref, dhp_ref;
    Snap sP, sg, sc, stc, sdh;
    ptrdiff_t t, r;
    int th;
    snprintf(g_ctx, sizeof g_ctx, "T=%ld m=%ld n_a=%ld", (long)T, (long)m, (long)n_a);
    fill(W, 0, n_a, K, n_a, -1, 1);
    CALL(pack, K, n_a, W.p, n_a, 1, P.p);
    fill(g, 0, K, T * m, K, 0.01, 0.99);
    for (r = 0; r < T * m; r++)
        fill(g, r * K + 2 * n_a, 1, 1, n_a, -0.99, 0.99);  /* c~ = tanh(.) */
    fill(c, 0, n_a, (T + 1) * m, n_a, -2, 2);
    fill(tc, 0, n_a, T * m, n_a, -0.99, 0.99);
    fill(dh, 0, n_a, T * m, n_a, -1, 1);
    fill(dc, 0, n_a, m, n_a, -1, 1);
    fill_value(dz, 0, K, T * m, K, NAN);
    fill_value(dhp, 0, n_a, m, n_a, NAN);
    dc_ref = buf_copy(dc);
    dz_ref = buf_copy(dz);
    dhp_ref = buf_copy(dhp);
    if (T > 0 && m > 0)
        memcpy(dhp_ref.p, at(dh, (T - 1) * step), (size_t)step * ES);
    for (t = T - 1; t >= 0 && m > 0; t--) {
        CALL(lstm_backward_rows, m, n_a, at(g, t * gstep), at(c, t * step), at(tc, t * step), dhp_ref.p,
             dc_ref.p, at(dz_ref, t * gstep), 1);
        if (t > 0)
            memcpy(dhp_ref.p, at(dh, (t - 1) * step), (size_t)step * ES);
        CALL(gemm_nn_mt, m, n_a, K, at(dz_ref, t * gstep), K, P.p, NULL, dhp_ref.p, n_a, t > 0, 1);
    }
    sP = snap(P);
    sg = snap(g);
    sc = snap(c);
    stc = snap(tc);
    sdh = snap(dh);
    for (th = 1; th <= 2; th++) {
        Buf dc2 = buf_copy(dc), dz2 = buf_copy(dz), dhp2 = buf_copy(dhp);
        CALL(lstm_backward_steps, T, m, n_a, g.p, c.p, tc.p, dh.p, dc2.p, dz2.p, dhp2.p, P.p, th, th);
        same(fn, "dz", dz2, dz_ref, 0, K, T * m, K);
        same(fn, "dh_prev", dhp2, dhp_ref, 0, n_a, m, n_a);
        same(fn, "dc", dc2, dc_ref, 0, n_a, m, n_a);
        if (T == 0 || m == 0) {
            Snap s0 = snap(dz);
            untouched(fn, "dz (nothing to do)", dz2, s0);
            sfree(&s0);
        }
        bfree(&dc2);
        bfree(&dz2);
        bfree(&dhp2);
    }
    untouched(fn, "P", P, sP);
    untouched(fn, "g", g, sg);
    untouched(fn, "c", c, sc);
    untouched(fn, "tanh_c", tc, stc);
    untouched(fn, "dh", dh, sdh);
    bfree(&W);
    bfree(&P);
    bfree(&g);
    bfree(&c);
    bfree(&tc);
    bfree(&dh);
    bfree(&dc);
    bfree(&dz);
    bfree(&dhp);
    bfree(&dc_ref);
    bfree(&dz_ref);
    bfree(&dhp_ref);
    sfree(&sP);
    sfree(&sg);
    sfree(&sc);
    sfree(&stc);
    sfree(&sdh);
}

static void check_lstm(void)
{
    const ptrdiff_t VL = vec_len();
    const ptrdiff_t m_in[] = {1, 2, 4, 7, 13};
    const ptrdiff_t a_in[] = {1, VL - 1, VL + 3, 2 * VL + 1, 32};
    ptrdiff_t as[5];
    const int na = uniq(a_in, 5, 1, as);
    int a, b, mode, stream;
    for (a = 0; a < 5; a++)
        for (b = 0; b < na; b++)
            for (stream = 0; stream < 2; stream++) {
                run_lstm(m_in[a], as[b], 5, 0, stream);
                run_lstm(m_in[a], as[b], 0, 0, stream);
                for (mode = 1; mode < 3; mode++)
                    run_lstm(m_in[a], as[b], 5, mode, stream);
            }
    /* more rows than a block of tiles (8 tiles) */
    run_lstm(50, VL + 3, 4, 0, 0);
    run_lstm(50, 2 * VL, 4, 1, 1);
    /* no rows, no units */
    run_lstm(0, VL + 3, 5, 0, 0);
    run_lstm(0, VL + 3, 5, 1, 0);
    run_lstm(3, 0, 5, 0, 0);
    /* the time loop */
    run_lstm_steps(3, 13, vec_len() + 3, 5, 1, 0);
    run_lstm_steps(4, 7, 2 * vec_len() + 1, 5, 0, 1);
    run_lstm_steps(2, 50, 32, 4, 0, 0);
    run_lstm_steps(0, 7, 8, 5, 0, 0);
    /* the backward time loop: split by rows on two threads (13 = 6 + 6 + 1 rows,
     * 50), by steps (2 rows: one tile; 512 units: weights larger than half any
     * level-2 cache), nothing to do */
    run_lstm_backward_steps(5, 13, vec_len() + 3);
    run_lstm_backward_steps(3, 50, 2 * vec_len() + 1);
    run_lstm_backward_steps(4, 2, 9);
    run_lstm_backward_steps(2, 7, 512);
    run_lstm_backward_steps(0, 7, 8);
    run_lstm_backward_steps(3, 0, 8);
}

/* ======================= the recurrent cells' elementwise passes ======================= */

/* the output buffers of one pass are compared whole against references that hold
 * the values they must keep where the pass does not write */
typedef struct {
    const char *name;
    Buf b;
    double *ref, *sc;
    Snap before;
    Buf one;   /* the one-thread result */
} Out;

static void out_begin(Out *o, const char *name, Buf b)
{
    ptrdiff_t i;
    o->name = name;
    o->b = b;
    o->ref = (double *)xmalloc((size_t)(b.n + 1) * sizeof(double));
    o->sc = (double *)xmalloc((size_t)(b.n + 1) * sizeof(double));
    for (i = 0; i < b.n; i++) {
        o->ref[i] = GET(b, i);  /* kept unless the reference says otherwise */
        o->sc[i] = fabs(o->ref[i]);
    }
    o->before = snap(b);
}

static void out_check(const char *fn, Out *o)
{
    char what[80];
    cmp(fn, o->name, o->b, 0, 1, 1, o->b.n, o->ref, o->sc, g_tol, g_floor);
    snprintf(what, sizeof what, "%s guard zones", o->name);
    guards(fn, what, o->b, o->before);
    o->one = buf_copy(o->b);
    restore(o->b, o->before);
}

static void out_end(const char *fn, Out *o)
{
    char what[80];
    snprintf(what, sizeof what, "%s, threads=2", o->name);
    same(fn, what, o->b, o->one, 0, 1, 1, o->b.n);
    free(o->ref);
    free(o->sc);
    sfree(&o->before);
    bfree(&o->one);
}

static void run_rows(ptrdiff_t rows, ptrdiff_t n)
{
    const ptrdiff_t E = rows * n;
    Buf h = bnew(E), dh = bnew(E), dz = bnew(E), g4 = bnew(4 * E), cp = bnew(E), tcb = bnew(E), dc = bnew(E);
    Buf dz4 = bnew(4 * E), g3 = bnew(3 * E), rh = bnew(E), hn = bnew(E), dhp = bnew(E), dz3 = bnew(3 * E);
    Out o[3];
    ptrdiff_t i, r, j;
    int relu, t, th;
    snprintf(g_ctx, sizeof g_ctx, "rows=%ld n=%ld", (long)rows, (long)n);

    /* rnn_forward_rows: tanh or max(0, .) in place, a NaN kept */
    for (relu = 0; relu < 2; relu++) {
        const char *fn = "rnn_forward_rows";
        snprintf(g_ctx, sizeof g_ctx, "rows=%ld n=%ld relu=%d", (long)rows, (long)n, relu);
        fill(h, 0, 1, 1, E, -3, 3);
        if (E > 0)
            SET(h, E / 2, NAN);
        if (E > 2)
            SET(h, 1, 0.0);
        out_begin(&o[0], "h", h);
        for (i = 0; i < E; i++) {
            const double z = o[0].ref[i];
            o[0].ref[i] = relu ? (z != z ? z : (z > 0 ? z : 0.0)) : tanh(z);
            o[0].sc[i] = fabs(o[0].ref[i]);
        }
        for (th = 1; th <= 2; th++) {
            CALL(rnn_forward_rows, rows, n, h.p, relu, th);
            if (th == 1)
                out_check(fn, &o[0]);
        }
        out_end(fn, &o[0]);
    }

    /* rnn_backward_rows: dz = dh act'(z) from h = act(z) */
    for (relu = 0; relu < 2; relu++) {
        const char *fn = "rnn_backward_rows";
        Snap sh, sdh;
        snprintf(g_ctx, sizeof g_ctx, "rows=%ld n=%ld relu=%d", (long)rows, (long)n, relu);
        fill(h, 0, 1, 1, E, relu ? -1 : -0.999, 1);
        if (relu && E > 2)
            SET(h, 2, 0.0);  /* ReLU' is 0 at 0 */
        fill(dh, 0, 1, 1, E, -1, 1);
        fill_value(dz, 0, 1, 1, E, NAN);
        out_begin(&o[0], "dz", dz);
        for (i = 0; i < E; i++) {
            const double hv = GET(h, i), d = GET(dh, i);
            o[0].ref[i] = relu ? (hv > 0 ? d : 0.0) : d * (1 - hv * hv);
            o[0].sc[i] = relu ? fabs(o[0].ref[i]) : fabs(d) * (1 + hv * hv);
        }
        sh = snap(h);
        sdh = snap(dh);
        for (th = 1; th <= 2; th++) {
            CALL(rnn_backward_rows, rows, n, h.p, dh.p, dz.p, relu, th);
            if (th == 1)
                out_check(fn, &o[0]);
        }
        out_end(fn, &o[0]);
        untouched(fn, "h", h, sh);
        untouched(fn, "dh", dh, sdh);
        sfree(&sh);
        sfree(&sdh);
    }
    snprintf(g_ctx, sizeof g_ctx, "rows=%ld n=%ld", (long)rows, (long)n);

    /* lstm_backward_rows: from h = o tanh(c), c = f c_prev + u c~ */
    {
        const char *fn = "lstm_backward_rows";
        Snap sg, scp, stc, sdh;
        fill(g4, 0, 1, 1, 4 * E, 0.01, 0.99);
        for (r = 0; r < rows; r++)
            fill(g4, r * 4 * n + 2 * n, 1, 1, n, -0.99, 0.99);  /* c~ = tanh(.) */
        fill(cp, 0, 1, 1, E, -2, 2);
        fill(tcb, 0, 1, 1, E, -0.99, 0.99);
        fill(dh, 0, 1, 1, E, -1, 1);
        fill(dc, 0, 1, 1, E, -1, 1);
        fill_value(dz4, 0, 1, 1, 4 * E, NAN);
        out_begin(&o[0], "dc", dc);
        out_begin(&o[1], "dz", dz4);
        for (r = 0; r < rows; r++)
            for (j = 0; j < n; j++) {
                const ptrdiff_t e = r * n + j, q = r * 4 * n + j;
                const double f = GET(g4, q), u = GET(g4, q + n), cc = GET(g4, q + 2 * n), og = GET(g4, q + 3 * n);
                const double tv = GET(tcb, e), d = GET(dh, e), dcn = GET(dc, e), cpv = GET(cp, e);
                /* dL/dc = dc_next + dh o tanh'(c); its cancellation-free scale */
                const double k = dcn + d * og * (1 - tv * tv), ks = fabs(dcn) + fabs(d) * og * (1 + tv * tv);
                o[0].ref[e] = k * f;
                o[0].sc[e] = ks * f;
                o[1].ref[q] = k * cpv * f * (1 - f);
                o[1].sc[q] = ks * fabs(cpv) * f * (1 + f);
                o[1].ref[q + n] = k * cc * u * (1 - u);
                o[1].sc[q + n] = ks * fabs(cc) * u * (1 + u);
                o[1].ref[q + 2 * n] = k * u * (1 - cc * cc);
                o[1].sc[q + 2 * n] = ks * u * (1 + cc * cc);
                o[1].ref[q + 3 * n] = d * tv * og * (1 - og);
                o[1].sc[q + 3 * n] = fabs(d * tv) * og * (1 + og);
            }
        sg = snap(g4);
        scp = snap(cp);
        stc = snap(tcb);
        sdh = snap(dh);
        for (th = 1; th <= 2; th++) {
            CALL(lstm_backward_rows, rows, n, g4.p, cp.p, tcb.p, dh.p, dc.p, dz4.p, th);
            if (th == 1)
                for (t = 0; t < 2; t++)
                    out_check(fn, &o[t]);
        }
        for (t = 0; t < 2; t++)
            out_end(fn, &o[t]);
        untouched(fn, "g", g4, sg);
        untouched(fn, "c_prev", cp, scp);
        untouched(fn, "tanh_c", tcb, stc);
        untouched(fn, "dh", dh, sdh);
        sfree(&sg);
        sfree(&scp);
        sfree(&stc);
        sfree(&sdh);
    }

    /* gru_gates_rows: g rows [u, r, c~] of pre-activations; u, r in place, rh = r h_prev */
    {
        const char *fn = "gru_gates_rows";
        Snap shp;
        fill(g3, 0, 1, 1, 3 * E, -6, 6);
        fill(h, 0, 1, 1, E, -1, 1);
        fill_value(rh, 0, 1, 1, E, NAN);
        out_begin(&o[0], "g", g3);
        out_begin(&o[1], "rh", rh);
        for (r = 0; r < rows; r++)
            for (j = 0; j < n; j++) {
                const ptrdiff_t q = r * 3 * n + j, e = r * n + j;
                const double u = sigm(GET(g3, q)), rr = sigm(GET(g3, q + n));
                o[0].ref[q] = u;
                o[0].sc[q] = u;
                o[0].ref[q + n] = rr;
                o[0].sc[q + n] = rr;
                o[1].ref[e] = rr * GET(h, e);
                o[1].sc[e] = fabs(o[1].ref[e]);
            }
        shp = snap(h);
        for (th = 1; th <= 2; th++) {
            CALL(gru_gates_rows, rows, n, g3.p, h.p, rh.p, th);
            if (th == 1)
                for (t = 0; t < 2; t++)
                    out_check(fn, &o[t]);
        }
        for (t = 0; t < 2; t++)
            out_end(fn, &o[t]);
        untouched(fn, "h_prev", h, shp);
        sfree(&shp);
    }

    /* gru_output_rows: c~ = tanh in place; h_next = u c~ + (1 - u) h_prev */
    {
        const char *fn = "gru_output_rows";
        Snap shp;
        fill(g3, 0, 1, 1, 3 * E, 0.01, 0.99);
        for (r = 0; r < rows; r++)
            fill(g3, r * 3 * n + 2 * n, 1, 1, n, -4, 4);
        fill(h, 0, 1, 1, E, -1, 1);
        fill_value(hn, 0, 1, 1, E, NAN);
        out_begin(&o[0], "g", g3);
        out_begin(&o[1], "h_next", hn);
        for (r = 0; r < rows; r++)
            for (j = 0; j < n; j++) {
                const ptrdiff_t q = r * 3 * n + j, e = r * n + j;
                const double u = GET(g3, q), cc = tanh(GET(g3, q + 2 * n)), hp = GET(h, e);
                o[0].ref[q + 2 * n] = cc;
                o[0].sc[q + 2 * n] = fabs(cc);
                o[1].ref[e] = u * cc + (1 - u) * hp;
                o[1].sc[e] = u * fabs(cc) + (1 + u) * fabs(hp);
            }
        shp = snap(h);
        for (th = 1; th <= 2; th++) {
            CALL(gru_output_rows, rows, n, g3.p, h.p, hn.p, th);
            if (th == 1)
                for (t = 0; t < 2; t++)
                    out_check(fn, &o[t]);
        }
        for (t = 0; t < 2; t++)
            out_end(fn, &o[t]);
        untouched(fn, "h_prev", h, shp);
        sfree(&shp);
    }

    /* gru_backward_out_rows and gru_backward_reset_rows (g rows [u, r, c~] of gate values) */
    for (t = 0; t < 2; t++) {
        const char *fn = t == 0 ? "gru_backward_out_rows" : "gru_backward_reset_rows";
        Snap sg, shp, sdh;
        int v;
        fill(g3, 0, 1, 1, 3 * E, 0.01, 0.99);
        for (r = 0; r < rows; r++)
            fill(g3, r * 3 * n + 2 * n, 1, 1, n, -0.99, 0.99);
        fill(h, 0, 1, 1, E, -1, 1);
        fill(dh, 0, 1, 1, E, -1, 1);   /* dh, or drh */
        fill(dhp, 0, 1, 1, E, -1, 1);
        fill(dz3, 0, 1, 1, 3 * E, -1, 1);  /* the parts a pass does not write keep these */
        out_begin(&o[0], "dh_prev", dhp);
        out_begin(&o[1], "dz", dz3);
        for (r = 0; r < rows; r++)
            for (j = 0; j < n; j++) {
                const ptrdiff_t q = r * 3 * n + j, e = r * n + j;
                const double u = GET(g3, q), rr = GET(g3, q + n), cc = GET(g3, q + 2 * n);
                const double hp = GET(h, e), d = GET(dh, e), dp = GET(dhp, e);
                if (t == 0) {
                    /* h_next = u c~ + (1 - u) h_prev */
                    o[1].ref[q + 2 * n] = d * u * (1 - cc * cc);
                    o[1].sc[q + 2 * n] = fabs(d) * u * (1 + cc * cc);
                    o[1].ref[q] = d * (cc - hp) * u * (1 - u);
                    o[1].sc[q] = fabs(d) * (fabs(cc) + fabs(hp)) * u * (1 + u);
                    o[0].ref[e] = dp + d * (1 - u);
                    o[0].sc[e] = fabs(dp) + fabs(d) * (1 + u);
                } else {
                    /* rh = r h_prev */
                    o[1].ref[q + n] = d * hp * rr * (1 - rr);
                    o[1].sc[q + n] = fabs(d * hp) * rr * (1 + rr);
                    o[0].ref[e] = dp + d * rr;
                    o[0].sc[e] = fabs(dp) + fabs(d) * rr;
                }
            }
        sg = snap(g3);
        shp = snap(h);
        sdh = snap(dh);
        for (th = 1; th <= 2; th++) {
            if (t == 0)
                CALL(gru_backward_out_rows, rows, n, g3.p, h.p, dh.p, dhp.p, dz3.p, th);
            else
                CALL(gru_backward_reset_rows, rows, n, g3.p, h.p, dh.p, dhp.p, dz3.p, th);
            if (th == 1)
                for (v = 0; v < 2; v++)
                    out_check(fn, &o[v]);
        }
        for (v = 0; v < 2; v++)
            out_end(fn, &o[v]);
        untouched(fn, "g", g3, sg);
        untouched(fn, "h_prev", h, shp);
        untouched(fn, t == 0 ? "dh" : "drh", dh, sdh);
        sfree(&sg);
        sfree(&shp);
        sfree(&sdh);
    }

    bfree(&h);
    bfree(&dh);
    bfree(&dz);
    bfree(&g4);
    bfree(&cp);
    bfree(&tcb);
    bfree(&dc);
    bfree(&dz4);
    bfree(&g3);
    bfree(&rh);
    bfree(&hn);
    bfree(&dhp);
    bfree(&dz3);
}

/* ======================= the RNN's and GRU's time loops ======================= */

/* Each loop against the documented composition of its passes and products (checked
 * on their own above), called step by step here on one thread, bitwise, with the
 * loop on one thread and on two (split by batch rows where the weights are small,
 * by steps where not); nothing written but its outputs. */
typedef struct {
    const char *name;
    Buf got, want;
} Pair;

static Pair pair_of(const char *name, Buf b)
{
    Pair p;
    p.name = name;
    p.got = buf_copy(b);
    p.want = buf_copy(b);
    return p;
}
static void pair_free(Pair *p)
{
    bfree(&p->got);
    bfree(&p->want);
}

static void run_rnn_steps(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a, int relu)
{
    const ptrdiff_t step = m * n_a;
    Buf W = bnew(n_a * n_a), P = bnew((ptrdiff_t)CALL(packed_size, n_a, n_a));
    Buf h = bnew((T + 1) * step), dh = bnew(T * step), dz = bnew(T * step), dhp = bnew(step);
    Snap sP, sh, sdh;
    ptrdiff_t t;
    int th;
    snprintf(g_ctx, sizeof g_ctx, "T=%ld m=%ld n_a=%ld %s", (long)T, (long)m, (long)n_a, relu ? "relu" : "tanh");
    fill(W, 0, n_a, n_a, n_a, -1, 1);
    CALL(pack, n_a, n_a, W.p, n_a, 1, P.p);
    sP = snap(P);
    for (th = 1; th <= 2; th++) {
        /* forward: h_0, then each step's projection, in h */
        Pair hp;
        fill(h, 0, n_a, (T + 1) * m, n_a, -1, 1);
        hp = pair_of("h", h);
        for (t = 0; t < T && m > 0; t++) {
            CALL(gemm_nn_mt, m, n_a, n_a, at(hp.want, t * step), n_a, P.p, NULL, at(hp.want, (t + 1) * step), n_a,
                 1, 1);
            CALL(rnn_forward_rows, m, n_a, at(hp.want, (t + 1) * step), relu, 1);
        }
        CALL(rnn_forward_steps, T, m, n_a, hp.got.p, P.p, relu, th, th);
        same("rnn_forward_steps", "h", hp.got, hp.want, 0, n_a, (T + 1) * m, n_a);
        {
            Snap sw = snap(hp.want);
            guards("rnn_forward_steps", "h", hp.got, sw);
            sfree(&sw);
        }
        pair_free(&hp);
    }
    for (th = 1; th <= 2; th++) {
        Pair zp, ap;
        fill(h, 0, n_a, (T + 1) * m, n_a, -0.99, 0.99);
        fill(dh, 0, n_a, T * m, n_a, -1, 1);
        fill_value(dz, 0, n_a, T * m, n_a, NAN);
        fill_value(dhp, 0, n_a, m, n_a, NAN);
        sh = snap(h);
        sdh = snap(dh);
        zp = pair_of("dz", dz);
        ap = pair_of("dh_prev", dhp);
        if (T > 0 && m > 0)
            memcpy(ap.want.p, at(dh, (T - 1) * step), (size_t)step * ES);
        for (t = T - 1; t >= 0 && m > 0; t--) {
            CALL(rnn_backward_rows, m, n_a, at(h, (t + 1) * step), ap.want.p, at(zp.want, t * step), relu, 1);
            if (t > 0)
                memcpy(ap.want.p, at(dh, (t - 1) * step), (size_t)step * ES);
            CALL(gemm_nn_mt, m, n_a, n_a, at(zp.want, t * step), n_a, P.p, NULL, ap.want.p, n_a, t > 0, 1);
        }
        CALL(rnn_backward_steps, T, m, n_a, h.p, dh.p, zp.got.p, ap.got.p, P.p, relu, th, th);
        same("rnn_backward_steps", "dz", zp.got, zp.want, 0, n_a, T * m, n_a);
        same("rnn_backward_steps", "dh_prev", ap.got, ap.want, 0, n_a, m, n_a);
        untouched("rnn_backward_steps", "h", h, sh);
        untouched("rnn_backward_steps", "dh", dh, sdh);
        sfree(&sh);
        sfree(&sdh);
        pair_free(&zp);
        pair_free(&ap);
    }
    untouched("rnn_forward_steps", "P", P, sP);
    sfree(&sP);
    bfree(&W);
    bfree(&P);
    bfree(&h);
    bfree(&dh);
    bfree(&dz);
    bfree(&dhp);
}

static void run_gru_steps(ptrdiff_t T, ptrdiff_t m, ptrdiff_t n_a)
{
    const ptrdiff_t step = m * n_a, G = 3 * n_a, gstep = m * G;
    Buf Wg = bnew(2 * n_a * n_a), Wc = bnew(n_a * n_a);
    Buf Pg = bnew((ptrdiff_t)CALL(packed_size, n_a, 2 * n_a)), Pc = bnew((ptrdiff_t)CALL(packed_size, n_a, n_a));
    Buf Pgb = bnew((ptrdiff_t)CALL(packed_size, 2 * n_a, n_a));
    Buf g = bnew(T * gstep), h = bnew((T + 1) * step), rh = bnew(T * step), dh = bnew(T * step);
    Buf dz = bnew(T * gstep), drh = bnew(step), nxt = bnew(step), dhp = bnew(step);
    Snap sPg, sPc, sPgb, sg, sh, sdh;
    ptrdiff_t t, r;
    int th;
    snprintf(g_ctx, sizeof g_ctx, "T=%ld m=%ld n_a=%ld", (long)T, (long)m, (long)n_a);
    fill(Wg, 0, 2 * n_a, n_a, 2 * n_a, -1, 1);
    fill(Wc, 0, n_a, n_a, n_a, -1, 1);
    CALL(pack, n_a, 2 * n_a, Wg.p, 2 * n_a, 1, Pg.p);
    CALL(pack, n_a, n_a, Wc.p, n_a, 1, Pc.p);
    CALL(pack, 2 * n_a, n_a, Wg.p, n_a, 1, Pgb.p);
    sPg = snap(Pg);
    sPc = snap(Pc);
    sPgb = snap(Pgb);
    for (th = 1; th <= 2; th++) {
        Pair gp, hp, rp;
        fill(g, 0, G, T * m, G, -2, 2);
        fill_value(h, 0, n_a, (T + 1) * m, n_a, NAN);
        fill(h, 0, n_a, m, n_a, -1, 1);
        fill_value(rh, 0, n_a, T * m, n_a, NAN);
        gp = pair_of("g", g);
        hp = pair_of("h", h);
        rp = pair_of("rh", rh);
        for (t = 0; t < T && m > 0; t++) {
            void *gt = at(gp.want, t * gstep), *hpv = at(hp.want, t * step), *rt = at(rp.want, t * step);
            CALL(gemm_nn_mt, m, 2 * n_a, n_a, hpv, n_a, Pg.p, NULL, gt, G, 1, 1);
            CALL(gru_gates_rows, m, n_a, gt, hpv, rt, 1);
            CALL(gemm_nn_mt, m, n_a, n_a, rt, n_a, Pc.p, NULL, at(gp.want, t * gstep + 2 * n_a), G, 1, 1);
            CALL(gru_output_rows, m, n_a, gt, hpv, at(hp.want, (t + 1) * step), 1);
        }
        CALL(gru_forward_steps, T, m, n_a, gp.got.p, hp.got.p, rp.got.p, Pg.p, Pc.p, th, th);
        same("gru_forward_steps", "g", gp.got, gp.want, 0, G, T * m, G);
        same("gru_forward_steps", "h", hp.got, hp.want, 0, n_a, (T + 1) * m, n_a);
        same("gru_forward_steps", "rh", rp.got, rp.want, 0, n_a, T * m, n_a);
        pair_free(&gp);
        pair_free(&hp);
        pair_free(&rp);
    }
    for (th = 1; th <= 2; th++) {
        Pair zp, ap;
        Buf acc, next, dr, swap;
        fill(g, 0, G, T * m, G, 0.01, 0.99);
        for (r = 0; r < T * m; r++)
            fill(g, r * G + 2 * n_a, 1, 1, n_a, -0.99, 0.99);  /* c~ = tanh(.) */
        fill(h, 0, n_a, (T + 1) * m, n_a, -1, 1);
        fill(dh, 0, n_a, T * m, n_a, -1, 1);
        fill_value(dz, 0, G, T * m, G, NAN);
        fill_value(dhp, 0, n_a, m, n_a, NAN);
        sg = snap(g);
        sh = snap(h);
        sdh = snap(dh);
        zp = pair_of("dz", dz);
        ap = pair_of("dh_prev", dhp);
        acc = buf_copy(dhp);
        next = buf_copy(dhp);
        dr = buf_copy(dhp);
        if (T > 0 && m > 0)
            memcpy(acc.p, at(dh, (T - 1) * step), (size_t)step * ES);
        for (t = T - 1; t >= 0 && m > 0; t--) {
            void *gt = at(g, t * gstep), *hpv = at(h, t * step), *dzt = at(zp.want, t * gstep);
            if (t > 0)
                memcpy(next.p, at(dh, (t - 1) * step), (size_t)step * ES);
            else
                memset(next.p, 0, (size_t)step * ES);
            CALL(gru_backward_out_rows, m, n_a, gt, hpv, acc.p, next.p, dzt, 1);
            CALL(gemm_nn_mt, m, n_a, n_a, at(zp.want, t * gstep + 2 * n_a), G, Pc.p, NULL, dr.p, n_a, 0, 1);
            CALL(gru_backward_reset_rows, m, n_a, gt, hpv, dr.p, next.p, dzt, 1);
            CALL(gemm_nn_mt, m, n_a, 2 * n_a, dzt, G, Pgb.p, NULL, next.p, n_a, 1, 1);
            swap = acc;
            acc = next;
            next = swap;
        }
        if (T > 0 && m > 0)
            memcpy(ap.want.p, acc.p, (size_t)step * ES);
        CALL(gru_backward_steps, T, m, n_a, g.p, h.p, dh.p, zp.got.p, drh.p, nxt.p, ap.got.p, Pgb.p, Pc.p, th, th);
        same("gru_backward_steps", "dz", zp.got, zp.want, 0, G, T * m, G);
        same("gru_backward_steps", "dh_prev", ap.got, ap.want, 0, n_a, m, n_a);
        untouched("gru_backward_steps", "g", g, sg);
        untouched("gru_backward_steps", "h", h, sh);
        untouched("gru_backward_steps", "dh", dh, sdh);
        sfree(&sg);
        sfree(&sh);
        sfree(&sdh);
        pair_free(&zp);
        pair_free(&ap);
        bfree(&acc);
        bfree(&next);
        bfree(&dr);
    }
    untouched("gru_forward_steps", "Pg", Pg, sPg);
    untouched("gru_forward_steps", "Pc", Pc, sPc);
    untouched("gru_backward_steps", "Pg", Pgb, sPgb);
    sfree(&sPg);
    sfree(&sPc);
    sfree(&sPgb);
    bfree(&Wg);
    bfree(&Wc);
    bfree(&Pg);
    bfree(&Pc);
    bfree(&Pgb);
    bfree(&g);
    bfree(&h);
    bfree(&rh);
    bfree(&dh);
    bfree(&dz);
    bfree(&drh);
    bfree(&nxt);
    bfree(&dhp);
}

static void check_recurrent_loops(void)
{
    const ptrdiff_t VL = vec_len();
    /* split by rows on two threads (13 = 6 + 6 + 1 rows, 50), by steps (2 rows: one
     * tile; 600 units: weights larger than half any level-2 cache), nothing to do */
    const ptrdiff_t cases[][3] = {{5, 13, 0}, {3, 50, 1}, {4, 2, 9}, {2, 7, 600}, {0, 7, 8}, {3, 0, 8}};
    int i;
    for (i = 0; i < 6; i++) {
        const ptrdiff_t n_a = cases[i][2] == 0 ? VL + 3 : (cases[i][2] == 1 ? 2 * VL + 1 : cases[i][2]);
        run_rnn_steps(cases[i][0], cases[i][1], n_a, i % 2);
        run_gru_steps(cases[i][0], cases[i][1], n_a);
    }
}

static void check_rows(void)
{
    const ptrdiff_t VL = vec_len();
    const ptrdiff_t r_in[] = {1, 3, 7};
    const ptrdiff_t n_in[] = {1, VL - 1, VL + 1, 2 * VL + 3, 37};
    ptrdiff_t ns[5];
    const int nn = uniq(n_in, 5, 1, ns);
    int a, b;
    for (a = 0; a < 3; a++)
        for (b = 0; b < nn; b++)
            run_rows(r_in[a], ns[b]);
    run_rows(0, VL + 1);
}

/* ======================= activations ======================= */

static void check_activate(void)
{
    static const double special[] = {0.0, -0.0, 1e-45, 5e-324, 1e-40, 1e-30, 1e-8, 0.1, 0.124, 0.125, 0.126,
                                     0.5, 1, 2.5, 5, 9, 9.01, 9.5, 9.6, 15, 19.5, 20, 40, 87, 87.9, 88, 88.5,
                                     100, 700, 708, 709, 710, 1000, 1e30, 1e300, FLT_MAX, DBL_MAX, INFINITY};
    const int ns = (int)(sizeof special / sizeof special[0]);
    const ptrdiff_t grid = 6001, n = grid + 2 * ns + 2;  /* over one block of 4096 */
    Buf x = bnew(n), y = bnew(n), y1;
    ptrdiff_t i;
    int kind;
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    Snap sx, sy;
    /* the specials of both signs, then NaNs, then a grid over [-30, 30], at
     * positions that are no multiple of a vector */
    for (i = 0; i < ns; i++) {
        SET(x, 2 * i, special[i]);
        SET(x, 2 * i + 1, -special[i]);
    }
    SET(x, 2 * ns, NAN);
    SET(x, 2 * ns + 1, -NAN);
    for (i = 0; i < grid; i++)
        SET(x, 2 * ns + 2 + i, -30.0 + 60.0 * (double)i / (double)(grid - 1) + 1e-4);
    sx = snap(x);
    for (kind = 0; kind < 3; kind++) {
        static const char *names[] = {"sigmoid", "tanh", "relu"};
        snprintf(g_ctx, sizeof g_ctx, "kind=%s n=%ld (specials, NaN, a grid over [-30, 30])", names[kind], (long)n);
        for (i = 0; i < n; i++) {
            const double v = GET(x, i);
            ref[i] = kind == FN_ACT_SIGMOID ? (v != v ? v : sigm(v))
                     : kind == FN_ACT_TANH ? tanh(v) : (v != v ? v : (v > 0 ? v : 0.0));
        }
        fill_value(y, 0, 1, 1, n, NAN);
        sy = snap(y);
        CALL(activate, kind, n, x.p, y.p, 1);
        cmp("activate", names[kind], y, 0, 1, 1, n, ref, NULL, g_tol, g_floor);
        guards("activate", "guard zones", y, sy);
        untouched("activate", "x", x, sx);
        y1 = buf_copy(y);
        restore(y, sy);
        CALL(activate, kind, n, x.p, y.p, 2);
        same("activate", "threads=2", y, y1, 0, 1, 1, n);
        bfree(&y1);
        sfree(&sy);
    }
    /* the edges of the sweep by name: NaN propagates, tanh(+-inf) = +-1 */
    for (kind = 0; kind < 3; kind++) {
        Buf e = bnew(4), o = bnew(4);
        double want[4], sc[4] = {0, 0, 0, 0};
        SET(e, 0, NAN);
        SET(e, 1, INFINITY);
        SET(e, 2, -INFINITY);
        SET(e, 3, -NAN);
        want[0] = want[3] = NAN;
        want[1] = kind == FN_ACT_RELU ? INFINITY : 1.0;
        want[2] = kind == FN_ACT_TANH ? -1.0 : 0.0;
        /* sigmoid(inf) within the tolerance of 1 (AVX2's float quotient makes it
         * 1 - 2^-24), the rest exact (sigmoid(-inf) below the floor) */
        sc[1] = kind == FN_ACT_SIGMOID ? 1.0 : 0.0;
        snprintf(g_ctx, sizeof g_ctx, "kind=%d x=[nan, inf, -inf, -nan]", kind);
        CALL(activate, kind, 4, e.p, o.p, 1);
        cmp("activate", "NaN and infinities", o, 0, 1, 1, 4, want, sc, g_tol, g_floor);
        bfree(&e);
        bfree(&o);
    }
    free(ref);
    sfree(&sx);
    bfree(&x);
    bfree(&y);
}

/* ======================= main ======================= */

/* ======================= the training ops ======================= */

/* v rounded to the type under check: one IEEE operation on values of the type,
 * made in double and rounded once, is that operation in the type */
static double rt(double v) { return g_dbl ? v : (double)(float)v; }

/* the bytes got[0:n] equal want[0:n] where care[i] (all when care is NULL); with
 * truth, any nonzero byte of got counts as 1 (a mask of z > 0 holds 0 or -1) */
static void cmp_bytes(const char *fn, const char *what, const void *got_, const unsigned char *want,
                      const unsigned char *care, ptrdiff_t n, int truth)
{
    const unsigned char *got = (const unsigned char *)got_;
    ptrdiff_t i, bad = 0, first = 0, seen = 0;
    char detail[200];
    for (i = 0; i < n; i++) {
        unsigned char g = truth ? got[i] != 0 : got[i];
        if (care != NULL && !care[i])
            continue;
        if (g_selftest && seen == 0)
            g ^= 1;
        seen++;
        if (g != want[i] && bad++ == 0)
            first = i;
    }
    if (seen == 0)
        return;
    tally(fn, bad == 0);
    if (bad) {
        snprintf(detail, sizeof detail, "%ld of %ld bytes off, first at %ld: got %d, want %d", (long)bad,
                 (long)seen, (long)first, got[first], want[first]);
        fail_line(fn, what, detail);
    }
}

/* the activation of fn_dense.h (kind FN_ACT_*) and its derivative from the output a
 * (sigmoid, tanh) or from z > 0 (relu, leaky relu) */
static double act(int kind, double alpha, double z)
{
    switch (kind) {
    case FN_ACT_SIGMOID: return sigm(z);
    case FN_ACT_TANH: return tanh(z);
    case FN_ACT_RELU: return z > 0 ? z : 0.0;
    case FN_ACT_LEAKY_RELU: return z > 0 ? z : alpha * z;
    default: return z;
    }
}
static double act_grad(int kind, double alpha, double a, int positive)
{
    switch (kind) {
    case FN_ACT_SIGMOID: return a * (1 - a);
    case FN_ACT_TANH: return 1 - a * a;
    case FN_ACT_RELU: return positive ? 1.0 : 0.0;
    case FN_ACT_LEAKY_RELU: return positive ? 1.0 : alpha;
    default: return 1.0;
    }
}

/* linear_forward / linear_backward, and the elementwise passes and softmax of
 * fn_dense.h: y = act(x w^T + b), keep (a copy of y) or mask (z > 0) as the kind
 * records; dx = dz w, dw = dz^T x, db = column sums of dz, dz = dy act'. */
static void run_dense(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, int kind, int has_bias)
{
    const double alpha = kind == FN_ACT_LEAKY_RELU ? 0.125 : 0.0;
    const int keeps = kind == FN_ACT_SIGMOID || kind == FN_ACT_TANH;
    const int masks = kind == FN_ACT_RELU || kind == FN_ACT_LEAKY_RELU;
    const size_t nslots = g_dbl ? fn_dense_slots_size_d(K, 2) : fn_dense_slots_size_f(K, 2);
    const size_t bslots = g_dbl ? fn_dense_slots_size_d(M > N ? M : N, 2) : fn_dense_slots_size_f(M > N ? M : N, 2);
    const int direct = g_dbl ? fn_dense_dw_direct_d(M, N) : fn_dense_dw_direct_f(M, N);
    Buf x = bnew(M * K), w = bnew(N * K), b = bnew(N), y = bnew(M * N), keep = bnew(keeps ? M * N : 0);
    Buf slots = bnew((ptrdiff_t)nslots), y2, dy = bnew(M * N), dz = bnew(M * N), dzt = bnew(direct ? N * M : 0);
    Buf bsl = bnew((ptrdiff_t)bslots);
    Buf dx = bnew(M * K), dw = bnew(N * K), db = bnew(N);
    int8_t *mask = (int8_t *)xmalloc((size_t)(M * N + 1));
    unsigned char *mref = (unsigned char *)xmalloc((size_t)(M * N + 1)), *care = (unsigned char *)xmalloc((size_t)(M * N + 1));
    double *ref = (double *)xmalloc((size_t)(M * N + M * K + N * K + N + 1) * sizeof(double));
    double *sc = (double *)xmalloc((size_t)(M * N + M * K + N * K + N + 1) * sizeof(double));
    double *dzr = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    double *dza = (double *)xmalloc((size_t)(M * N + 1) * sizeof(double));
    ptrdiff_t i, j, k;
    Snap ss, sx, sw;
    int ok;
    snprintf(g_ctx, sizeof g_ctx, "M=%ld N=%ld K=%ld kind=%d bias=%d", (long)M, (long)N, (long)K, kind, has_bias);
    fill(x, 0, K, M, K, -1, 1);
    fill(w, 0, K, N, K, -1, 1);
    fill(b, 0, 1, 1, N, -0.5, 0.5);
    fill(dy, 0, N, M, N, -1, 1);
    fill_value(y, 0, N, M, N, NAN);
    sx = snap(x);
    sw = snap(w);
    ss = snap(slots);
    /* forward (the driver makes no call with M or N 0) */
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double z = has_bias ? GET(b, j) : 0.0, s = has_bias ? fabs(GET(b, j)) : 0.0;
            for (k = 0; k < K; k++) {
                z += GET(x, i * K + k) * GET(w, j * K + k);
                s += fabs(GET(x, i * K + k) * GET(w, j * K + k));
            }
            ref[i * N + j] = act(kind, alpha, z);
            sc[i * N + j] = s + fabs(ref[i * N + j]);
            mref[i * N + j] = z > 0;
            care[i * N + j] = fabs(z) > 1e-3 * s;  /* a z this near 0 may round to either side */
        }
    if (M * N > 0) {
    CALL(dense_linear_forward, M, N, K, x.p, w.p, has_bias ? b.p : NULL, kind, alpha, y.p, keeps ? keep.p : NULL,
         masks ? mask : NULL, slots.p, 1);
    cmp("dense_linear_forward", "y", y, 0, N, M, N, ref, sc, g_tol, g_floor);
    if (keeps)
        same("dense_linear_forward", "keep = y", keep, y, 0, N, M, N);
    if (masks)
        cmp_bytes("dense_linear_forward", "mask = z > 0", mask, mref, care, M * N, 1);
    untouched("dense_linear_forward", "x", x, sx);
    untouched("dense_linear_forward", "w", w, sw);
    guards("dense_slots_size", "slots of dense_slots_size(K, 2)", slots, ss);
    y2 = buf_copy(y);
    fill_value(y, 0, N, M, N, NAN);
    CALL(dense_linear_forward, M, N, K, x.p, w.p, has_bias ? b.p : NULL, kind, alpha, y.p, keeps ? keep.p : NULL,
         masks ? mask : NULL, slots.p, 2);
    same("dense_linear_forward", "threads=2", y, y2, 0, N, M, N);
    bfree(&y2);
    }
    /* backward, from the forward's record */
    for (i = 0; i < M * N; i++) {
        const double a = keeps ? GET(keep, i) : 0.0, d = act_grad(kind, alpha, a, masks ? mask[i] != 0 : 0);
        dzr[i] = GET(dy, i) * d;
        dza[i] = fabs(GET(dy, i)) * (fabs(d) + fabs(a) * (1 + fabs(a)));  /* 1 - a^2 cancels */
    }
    fill_value(dx, 0, K, M, K, NAN);
    fill_value(dw, 0, K, N, K, NAN);
    fill_value(db, 0, 1, 1, N, NAN);
    {
        Snap sdzt = snap(dzt);
        ok = CALL(dense_linear_backward, M, N, K, dy.p, x.p, w.p, keeps ? keep.p : NULL, masks ? mask : NULL, kind,
                  alpha, kind != FN_ACT_IDENTITY ? dz.p : NULL, direct && K > 0 ? dzt.p : NULL, bsl.p,
                  dx.p, dw.p, has_bias ? db.p : NULL, 2);
        expect_int("dense_linear_backward", "returns 1", ok, 1);
        if (direct && dzt.n > 0)
            guards("dense_dw_direct", "dz^T of N x M when direct", dzt, sdzt);
        sfree(&sdzt);
    }
    for (i = 0; i < M; i++)
        for (k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (j = 0; j < N; j++) {
                s += dzr[i * N + j] * GET(w, j * K + k);
                a += dza[i * N + j] * fabs(GET(w, j * K + k));
            }
            ref[i * K + k] = s;
            sc[i * K + k] = a + fabs(s);
        }
    cmp("dense_linear_backward", "dx", dx, 0, K, M, K, ref, sc, 4 * g_tol, g_floor);
    for (j = 0; j < N; j++)
        for (k = 0; k < K; k++) {
            double s = 0, a = 0;
            for (i = 0; i < M; i++) {
                s += dzr[i * N + j] * GET(x, i * K + k);
                a += dza[i * N + j] * fabs(GET(x, i * K + k));
            }
            ref[j * K + k] = s;
            sc[j * K + k] = a + fabs(s);
        }
    cmp("dense_linear_backward", "dw", dw, 0, K, N, K, ref, sc, 4 * g_tol, g_floor);
    if (has_bias) {
        for (j = 0; j < N; j++) {
            double s = 0, a = 0;
            for (i = 0; i < M; i++) {
                s += dzr[i * N + j];
                a += dza[i * N + j];
            }
            ref[j] = s;
            sc[j] = a + fabs(s);
        }
        cmp("dense_linear_backward", "db", db, 0, N, 1, N, ref, sc, 4 * g_tol, g_floor);
    }
    /* the elementwise passes on the same values, flat: y = act(z) and dz = dy act' */
    if (M * N > 0) {
        Buf z = bnew(M * N), a1 = bnew(M * N), k1 = bnew(M * N), d1 = bnew(M * N);
        int8_t *m1 = (int8_t *)xmalloc((size_t)(M * N));
        fill(z, 0, 1, 1, M * N, -6, 6);
        fill_value(a1, 0, 1, 1, M * N, NAN);
        for (i = 0; i < M * N; i++) {
            ref[i] = act(kind, alpha, GET(z, i));
            sc[i] = fabs(ref[i]);
        }
        CALL(dense_act_mt, kind, alpha, M * N, z.p, a1.p, keeps ? k1.p : NULL, masks ? m1 : NULL, 2);
        cmp("dense_act_mt", "a", a1, 0, 1, 1, M * N, ref, sc, g_tol, g_floor);
        for (i = 0; i < M * N; i++) {
            const double a = keeps ? GET(k1, i) : 0.0, d = act_grad(kind, alpha, a, masks ? m1[i] != 0 : 0);
            mref[i] = GET(z, i) > 0;
            dzr[i] = GET(dy, i) * d;
            sc[i] = fabs(GET(dy, i)) * (fabs(d) + fabs(a) * (1 + fabs(a)));
        }
        if (masks)
            cmp_bytes("dense_act_mt", "mask = z > 0", m1, mref, NULL, M * N, 1);
        if (keeps)
            same("dense_act_mt", "keep = a", k1, a1, 0, 1, 1, M * N);
        fill_value(d1, 0, 1, 1, M * N, NAN);
        CALL(dense_grad_mt, kind, alpha, M * N, dy.p, keeps ? k1.p : NULL, masks ? m1 : NULL, d1.p, 2);
        cmp("dense_grad_mt", "dz", d1, 0, 1, 1, M * N, dzr, sc, g_tol, g_floor);
        free(m1);
        bfree(&z);
        bfree(&a1);
        bfree(&k1);
        bfree(&d1);
    }
    free(mask);
    free(mref);
    free(care);
    free(ref);
    free(sc);
    free(dzr);
    free(dza);
    sfree(&ss);
    sfree(&sx);
    sfree(&sw);
    bfree(&x); bfree(&w); bfree(&b); bfree(&y); bfree(&keep); bfree(&slots); bfree(&dy); bfree(&dz);
    bfree(&dzt); bfree(&bsl); bfree(&dx); bfree(&dw); bfree(&db);
}

static void run_dense_softmax(ptrdiff_t rows, ptrdiff_t n)
{
    Buf z = bnew(rows * n), p = bnew(rows * n), p1;
    double *ref = (double *)xmalloc((size_t)(rows * n + 1) * sizeof(double));
    ptrdiff_t i, j;
    Snap sp;
    snprintf(g_ctx, sizeof g_ctx, "rows=%ld n=%ld", (long)rows, (long)n);
    fill(z, 0, n, rows, n, -20, 20);
    if (n > 1)
        SET(z, 1, -INFINITY);  /* exp(-inf) is exactly 0 */
    for (i = 0; i < rows; i++) {
        double m = -INFINITY, s = 0;
        for (j = 0; j < n; j++)
            m = GET(z, i * n + j) > m ? GET(z, i * n + j) : m;
        for (j = 0; j < n; j++)
            s += exp(GET(z, i * n + j) - m);
        for (j = 0; j < n; j++)
            ref[i * n + j] = exp(GET(z, i * n + j) - m) / s;
    }
    fill_value(p, 0, n, rows, n, NAN);
    sp = snap(p);
    CALL(dense_softmax, rows, n, z.p, p.p, 1);
    cmp("dense_softmax", "p", p, 0, n, rows, n, ref, NULL, 4 * g_tol, g_floor);
    guards("dense_softmax", "guard zones", p, sp);
    p1 = buf_copy(p);
    restore(p, sp);
    CALL(dense_softmax, rows, n, z.p, p.p, 2);
    same("dense_softmax", "threads=2", p, p1, 0, n, rows, n);
    free(ref);
    sfree(&sp);
    bfree(&z); bfree(&p); bfree(&p1);
}

/* column_sums_mt: db = the column sums of g (M, N) against a sum in double (error
 * scaled by the sum of magnitudes), nothing written past db's N, the same bits on 1
 * and 2 threads */
static void run_column_sums(ptrdiff_t M, ptrdiff_t N)
{
    Buf g = bnew(M * N), db = bnew(N), db1;
    double *ref = (double *)xmalloc((size_t)(N + 1) * sizeof(double));
    double *sc = (double *)xmalloc((size_t)(N + 1) * sizeof(double));
    ptrdiff_t i, j;
    Snap sd;
    snprintf(g_ctx, sizeof g_ctx, "M=%ld N=%ld", (long)M, (long)N);
    fill(g, 0, N, M, N, -1, 1);
    for (j = 0; j < N; j++) {
        ref[j] = sc[j] = 0;
        for (i = 0; i < M; i++) {
            ref[j] += GET(g, i * N + j);
            sc[j] += fabs(GET(g, i * N + j));
        }
    }
    fill_value(db, 0, N, 1, N, NAN);
    sd = snap(db);
    CALL(column_sums_mt, M, N, g.p, db.p, 1);
    cmp("column_sums_mt", "db", db, 0, N, 1, N, ref, sc, g_tol, g_floor);
    guards("column_sums_mt", "guard zones", db, sd);
    db1 = buf_copy(db);
    restore(db, sd);
    CALL(column_sums_mt, M, N, g.p, db.p, 2);
    same("column_sums_mt", "threads=2", db, db1, 0, N, 1, N);
    free(ref);
    free(sc);
    sfree(&sd);
    bfree(&g); bfree(&db); bfree(&db1);
}

static void check_dense(void)
{
    const ptrdiff_t VL = vec_len();
    int kind;
    for (kind = 0; kind <= FN_ACT_IDENTITY; kind++) {
        run_dense(7, VL + 3, 13, kind, 1);
        run_dense(1, 2 * VL + 1, 33, kind, kind % 2);
    }
    run_dense(40, 9, 70, FN_ACT_RELU, 1);   /* more than one chunk of db's rows */
    /* a few outputs: the dot-product tiles (N up to 9, K whole and partial vectors,
     * more than one task of 48 rows), or the panels where K is too short for them */
    for (kind = 0; kind <= FN_ACT_IDENTITY; kind++) {
        run_dense(100, 1 + kind, 300, kind, kind % 2);
        run_dense(9, 3 + 2 * kind, 64 + kind, kind, 1);
    }
    run_dense(50, 1, 5, FN_ACT_IDENTITY, 1);
    run_dense(0, 5, 4, FN_ACT_TANH, 1);     /* M = 0: dw and db zero */
    run_dense(6, 5, 0, FN_ACT_IDENTITY, 1); /* K = 0 */
    run_dense_softmax(3, 1);
    run_dense_softmax(5, VL + 3);
    run_dense_softmax(70, 1000);            /* more than one task */
    run_column_sums(0, VL + 3);             /* M = 0: zeros */
    run_column_sums(1, 1);
    run_column_sums(33, 4 * VL + 5);        /* two chunks of rows, a second, partial task */
    run_column_sums(700, 2 * VL + 7);       /* many chunks, on 2 threads */
    run_column_sums(300, 9 * VL + 1);       /* three tasks of columns, on 2 threads */
}

/* ---- cross-entropy (fn_loss.h) ---- */

static void run_softmax_xent(ptrdiff_t N, ptrdiff_t C, int indexed)
{
    Buf x = bnew(N * C), prob = bnew(indexed ? 0 : N * C), loss = bnew(N), stats = bnew(3 * N), stats1;
    Buf g = bnew(N), dx = bnew(N * C), dx1;
    int64_t *index = (int64_t *)xmalloc((size_t)(N + 1) * sizeof(int64_t));
    /* ref and sc: the losses (N), the stats (3 N), then dx (N C) */
    double *ref = (double *)xmalloc((size_t)(4 * N + N * C + 1) * sizeof(double));
    double *sc = (double *)xmalloc((size_t)(4 * N + N * C + 1) * sizeof(double));
    double total, rtotal = 0, stotal = 0, got;
    ptrdiff_t r, j;
    int pass;
    snprintf(g_ctx, sizeof g_ctx, "N=%ld C=%ld %s", (long)N, (long)C, indexed ? "indices" : "probabilities");
    fill(x, 0, C, N, C, -8, 8);
    fill(g, 0, 1, 1, N, -2, 2);
    for (r = 0; r < N; r++) {
        index[r] = (int64_t)(uni(0, (double)C));
        if (!indexed) {
            for (j = 0; j < C; j++)
                SET(prob, r * C + j, uni(0, 1));  /* any target mass: the kernels scale by it */
        }
    }
    fill_value(loss, 0, 1, 1, N, NAN);
    fill_value(stats, 0, 1, 1, 3 * N, NAN);
    total = CALL(softmax_xent_forward, N, C, x.p, indexed ? index : NULL, indexed ? NULL : prob.p, loss.p, stats.p, 1);
    for (r = 0; r < N; r++) {
        double m = -INFINITY, s = 0, mass = 0, tx = 0, atx = 0;
        for (j = 0; j < C; j++)
            m = GET(x, r * C + j) > m ? GET(x, r * C + j) : m;
        for (j = 0; j < C; j++) {
            const double t = indexed ? (j == index[r]) : GET(prob, r * C + j);
            s += exp(GET(x, r * C + j) - m);
            mass += t;
            tx += t * GET(x, r * C + j);
            atx += fabs(t * GET(x, r * C + j));
        }
        ref[r] = (m + log(s)) * mass - tx;
        sc[r] = (fabs(m) + fabs(log(s))) * mass + atx + fabs(ref[r]);
        rtotal += ref[r];
        stotal += sc[r];
        ref[N + 3 * r] = m;
        ref[N + 3 * r + 1] = log(s);
        ref[N + 3 * r + 2] = mass;
        sc[N + 3 * r] = fabs(m);
        sc[N + 3 * r + 1] = fabs(log(s)) + 1;
        sc[N + 3 * r + 2] = mass;
    }
    cmp("softmax_xent_forward", "loss", loss, 0, 1, 1, N, ref, sc, 4 * g_tol, g_floor);
    cmp("softmax_xent_forward", "stats (max, log-sum, mass)", stats, 0, 3, N, 3, ref + N, sc + N, 4 * g_tol, g_floor);
    got = g_selftest ? total + 1e-2 * (1 + fabs(total)) : total;
    tally("softmax_xent_forward", fabs(got - rtotal) <= 4 * g_tol * stotal + g_floor);
    if (fabs(got - rtotal) > 4 * g_tol * stotal + g_floor) {
        char detail[160];
        snprintf(detail, sizeof detail, "total %.17g, want %.17g", got, rtotal);
        fail_line("softmax_xent_forward", "the returned total", detail);
    }
    stats1 = buf_copy(stats);
    fill_value(stats, 0, 1, 1, 3 * N, NAN);
    CALL(softmax_xent_forward, N, C, x.p, indexed ? index : NULL, indexed ? NULL : prob.p, loss.p, stats.p, 2);
    same("softmax_xent_forward", "threads=2", stats, stats1, 0, 3, N, 3);
    /* backward: dx_rj = g_r (p_rj mass_r - t_rj), with g per row, then one g0 for all */
    for (pass = 0; pass < 2; pass++) {
        const double g0 = 0.75;
        for (r = 0; r < N; r++) {
            const double gr = pass == 0 ? GET(g, r) : rt(g0);
            const double m = ref[N + 3 * r], ls = ref[N + 3 * r + 1], mass = ref[N + 3 * r + 2];
            for (j = 0; j < C; j++) {
                const double t = indexed ? (j == index[r]) : GET(prob, r * C + j);
                const double p = exp(GET(x, r * C + j) - m - ls);
                ref[4 * N + r * C + j] = gr * (p * mass - t);
                sc[4 * N + r * C + j] = fabs(gr) * (p * mass * (1 + fabs(GET(x, r * C + j)) + fabs(m) + fabs(ls)) + t);
            }
        }
        fill_value(dx, 0, C, N, C, NAN);
        CALL(softmax_xent_backward, N, C, x.p, indexed ? index : NULL, indexed ? NULL : prob.p, stats.p,
             pass == 0 ? g.p : NULL, g0, dx.p, 1);
        cmp("softmax_xent_backward", pass == 0 ? "dx, g per row" : "dx, one g0", dx, 0, C, N, C, ref + 4 * N,
            sc + 4 * N, 8 * g_tol, g_floor);
        dx1 = buf_copy(dx);
        fill_value(dx, 0, C, N, C, NAN);
        CALL(softmax_xent_backward, N, C, x.p, indexed ? index : NULL, indexed ? NULL : prob.p, stats.p,
             pass == 0 ? g.p : NULL, g0, dx.p, 2);
        same("softmax_xent_backward", "threads=2", dx, dx1, 0, C, N, C);
        bfree(&dx1);
    }
    free(index);
    free(ref);
    free(sc);
    bfree(&x); bfree(&prob); bfree(&loss); bfree(&stats); bfree(&stats1); bfree(&g); bfree(&dx);
}

static void run_sigmoid_xent(ptrdiff_t n)
{
    const ptrdiff_t chunks = (n + FN_XENT_CHUNK - 1) / FN_XENT_CHUNK;
    Buf x = bnew(n), t = bnew(n), loss = bnew(n), g = bnew(n), dx = bnew(n);
    double *partial = (double *)xmalloc((size_t)(chunks + 1) * sizeof(double));
    double *ref = (double *)xmalloc((size_t)(n + 1) * sizeof(double)), *sc = (double *)xmalloc((size_t)(n + 1) * sizeof(double));
    double total, rtotal = 0, stotal = 0, got;
    ptrdiff_t i;
    int pass;
    snprintf(g_ctx, sizeof g_ctx, "n=%ld", (long)n);
    fill(x, 0, 1, 1, n, -30, 30);
    fill(t, 0, 1, 1, n, 0, 1);
    fill(g, 0, 1, 1, n, -2, 2);
    fill_value(loss, 0, 1, 1, n, NAN);
    for (i = 0; i < n; i++) {
        const double z = GET(x, i), tt = GET(t, i);
        ref[i] = (z > 0 ? z : 0) - z * tt + log1p(exp(-fabs(z)));
        sc[i] = fabs(z) * (1 + tt) + log1p(exp(-fabs(z))) + fabs(ref[i]);
        rtotal += ref[i];
        stotal += sc[i];
    }
    total = CALL(sigmoid_xent_forward, n, x.p, t.p, loss.p, partial, 2);
    cmp("sigmoid_xent_forward", "loss", loss, 0, 1, 1, n, ref, sc, 4 * g_tol, g_floor);
    got = g_selftest ? total + 1e-2 * (1 + fabs(total)) : total;
    tally("sigmoid_xent_forward", fabs(got - rtotal) <= 4 * g_tol * stotal + g_floor);
    if (fabs(got - rtotal) > 4 * g_tol * stotal + g_floor) {
        char detail[160];
        snprintf(detail, sizeof detail, "total %.17g, want %.17g", got, rtotal);
        fail_line("sigmoid_xent_forward", "the returned total", detail);
    }
    for (pass = 0; pass < 2; pass++) {
        const double g0 = -1.25;
        for (i = 0; i < n; i++) {
            const double gi = pass == 0 ? GET(g, i) : g0, s = sigm(GET(x, i));
            ref[i] = gi * (s - GET(t, i));
            sc[i] = fabs(gi) * (s + GET(t, i));
        }
        fill_value(dx, 0, 1, 1, n, NAN);
        CALL(sigmoid_xent_backward, n, x.p, t.p, pass == 0 ? g.p : NULL, g0, dx.p, 2);
        cmp("sigmoid_xent_backward", pass == 0 ? "dx, g per element" : "dx, one g0", dx, 0, 1, 1, n, ref, sc,
            4 * g_tol, g_floor);
    }
    free(partial);
    free(ref);
    free(sc);
    bfree(&x); bfree(&t); bfree(&loss); bfree(&g); bfree(&dx);
}

static void check_loss(void)
{
    const ptrdiff_t VL = vec_len(), n = 4 * VL + 5;
    Buf x = bnew(n), y = bnew(n);
    double *ref = (double *)xmalloc((size_t)n * sizeof(double));
    ptrdiff_t i;
    int kind;
    run_softmax_xent(5, VL + 3, 1);
    run_softmax_xent(4, 2 * VL + 1, 0);
    run_softmax_xent(3, 1, 1);
    /* a few classes with indices: a row per lane (VL rows at a time, a last partial
     * block, one transpose or several, the most classes that take it and one more) */
    run_softmax_xent(2 * VL + 5, 2, 1);
    run_softmax_xent(VL + 1, 3, 1);
    run_softmax_xent(3 * VL - 1, VL, 1);
    run_softmax_xent(VL, VL + 1, 1);
    run_softmax_xent(VL + 2, 4 * VL + 1, 1);
    run_softmax_xent(VL + 3, 128, 1);
    run_softmax_xent(7, 129, 1);
    run_softmax_xent(5000, 2, 1);           /* more than one task */
    run_softmax_xent(9, 300, 1);
    run_sigmoid_xent(VL + 1);
    run_sigmoid_xent(2 * FN_XENT_CHUNK + 37);  /* three chunks of the partial sums */
    /* loss_math: fn_math.h's log (kind 0) and log1p (1) */
    for (kind = 0; kind < 2; kind++) {
        snprintf(g_ctx, sizeof g_ctx, "kind=%s n=%ld", kind ? "log1p" : "log", (long)n);
        for (i = 0; i < n; i++) {
            const double v = kind ? uni(-0.9, 20) : exp(uni(-40, 40));
            SET(x, i, v);
            ref[i] = kind ? log1p(GET(x, i)) : log(GET(x, i));
        }
        fill_value(y, 0, 1, 1, n, NAN);
        CALL(loss_math, kind, n, x.p, y.p);
        cmp("loss_math", kind ? "log1p" : "log", y, 0, 1, 1, n, ref, NULL, g_tol, g_floor);
    }
    free(ref);
    bfree(&x);
    bfree(&y);
}

/* ---- batch normalisation (fn_norm.h) ---- */

static void run_bn(ptrdiff_t P, ptrdiff_t C, ptrdiff_t S)
{
    const ptrdiff_t n = P * C * S, M = P * S;
    const double eps = 1e-5;
    fn_bn_geom geom;
    Buf x = bnew(n), gamma = bnew(C), beta = bnew(C), y = bnew(n), mean = bnew(C), var = bnew(C), y1;
    Buf dy = bnew(n), dx = bnew(n), dgamma = bnew(C), dbeta = bnew(C), yi = bnew(n);
    double *mean_d = (double *)xmalloc((size_t)(C + 1) * sizeof(double));
    double *invstd_d = (double *)xmalloc((size_t)(C + 1) * sizeof(double));
    double *rm = (double *)xmalloc((size_t)(C + 1) * sizeof(double)), *rv = (double *)xmalloc((size_t)(C + 1) * sizeof(double));
    double *ref = (double *)xmalloc((size_t)(n + 1) * sizeof(double)), *sc = (double *)xmalloc((size_t)(n + 1) * sizeof(double));
    double *rg = (double *)xmalloc((size_t)(C + 1) * sizeof(double)), *rb = (double *)xmalloc((size_t)(C + 1) * sizeof(double));
    double *sg = (double *)xmalloc((size_t)(C + 1) * sizeof(double)), *sb = (double *)xmalloc((size_t)(C + 1) * sizeof(double));
    ptrdiff_t p, c, s;
#define BN_AT(p, c, s) (((p) * C + (c)) * S + (s))
    geom.P = P;
    geom.C = C;
    geom.S = S;
    snprintf(g_ctx, sizeof g_ctx, "P=%ld C=%ld S=%ld", (long)P, (long)C, (long)S);
    fill(x, 0, 1, 1, n, 2, 4);  /* an offset mean: the two-pass sums must remove it */
    fill(gamma, 0, 1, 1, C, 0.5, 1.5);
    fill(beta, 0, 1, 1, C, -1, 1);
    /* dy with a mean and a part along x, so that dbeta and dgamma are far from 0
     * (a sum near 0 next to its sum of magnitudes would hide --selftest's shift) */
    for (p = 0; p < n; p++)
        SET(dy, p, uni(-1, 1) + 0.5 + 0.5 * (GET(x, p) - 3));
    for (c = 0; c < C; c++) {
        double m = 0, v = 0;
        for (p = 0; p < P; p++)
            for (s = 0; s < S; s++)
                m += GET(x, BN_AT(p, c, s));
        m /= (double)M;
        for (p = 0; p < P; p++)
            for (s = 0; s < S; s++)
                v += (GET(x, BN_AT(p, c, s)) - m) * (GET(x, BN_AT(p, c, s)) - m);
        rm[c] = m;
        rv[c] = v / (double)M;
    }
    for (p = 0; p < P; p++)
        for (c = 0; c < C; c++)
            for (s = 0; s < S; s++) {
                const double xn = (GET(x, BN_AT(p, c, s)) - rm[c]) / sqrt(rv[c] + eps);
                ref[BN_AT(p, c, s)] = GET(gamma, c) * xn + GET(beta, c);
                sc[BN_AT(p, c, s)] = fabs(GET(gamma, c)) * (fabs(xn) + 1) + fabs(GET(beta, c));
            }
    fill_value(y, 0, 1, 1, n, NAN);
    expect_int("bn_forward", "returns 0",
               CALL(bn_forward, &geom, x.p, gamma.p, beta.p, eps, y.p, mean.p, var.p, mean_d, invstd_d, 1), 0);
    cmp("bn_forward", "y", y, 0, 1, 1, n, ref, sc, 8 * g_tol, g_floor);
    cmp("bn_forward", "mean", mean, 0, 1, 1, C, rm, NULL, 4 * g_tol, g_floor);
    cmp("bn_forward", "var", var, 0, 1, 1, C, rv, NULL, 64 * g_tol, g_floor);
    y1 = buf_copy(y);
    fill_value(y, 0, 1, 1, n, NAN);
    CALL(bn_forward, &geom, x.p, gamma.p, beta.p, eps, y.p, mean.p, var.p, mean_d, invstd_d, 2);
    same("bn_forward", "threads=2", y, y1, 0, 1, 1, n);
    /* inference with the batch's own statistics gives the forward's y */
    fill_value(yi, 0, 1, 1, n, NAN);
    expect_int("bn_inference", "returns 0",
               CALL(bn_inference, &geom, x.p, gamma.p, beta.p, mean.p, var.p, eps, yi.p, 2), 0);
    for (c = 0; c < C; c++) {
        const double m = GET(mean, c), is = 1 / sqrt(GET(var, c) + eps);
        for (p = 0; p < P; p++)
            for (s = 0; s < S; s++)
                ref[BN_AT(p, c, s)] = GET(gamma, c) * (GET(x, BN_AT(p, c, s)) - m) * is + GET(beta, c);
    }
    cmp("bn_inference", "y", yi, 0, 1, 1, n, ref, sc, 8 * g_tol, g_floor);
    /* backward: dbeta = sum dy, dgamma = sum dy xn, dx = gamma invstd (dy - mean dy - xn mean(dy xn)) */
    for (c = 0; c < C; c++) {
        const double is = 1 / sqrt(rv[c] + eps);
        double gsum = 0, bsum = 0, ga = 0, ba = 0;
        for (p = 0; p < P; p++)
            for (s = 0; s < S; s++) {
                const double d = GET(dy, BN_AT(p, c, s)), xn = (GET(x, BN_AT(p, c, s)) - rm[c]) * is;
                bsum += d;
                gsum += d * xn;
                ba += fabs(d);
                ga += fabs(d * xn);
            }
        rg[c] = gsum;
        rb[c] = bsum;
        sg[c] = ga + fabs(gsum);
        sb[c] = ba + fabs(bsum);
        for (p = 0; p < P; p++)
            for (s = 0; s < S; s++) {
                const double d = GET(dy, BN_AT(p, c, s)), xn = (GET(x, BN_AT(p, c, s)) - rm[c]) * is;
                const double k = GET(gamma, c) * is;
                ref[BN_AT(p, c, s)] = k * (d - bsum / (double)M - xn * gsum / (double)M);
                sc[BN_AT(p, c, s)] = fabs(k) * (fabs(d) + ba / (double)M + fabs(xn) * ga / (double)M) * 4;
            }
    }
    fill_value(dx, 0, 1, 1, n, NAN);
    expect_int("bn_backward", "returns 0",
               CALL(bn_backward, &geom, x.p, dy.p, gamma.p, mean_d, invstd_d, dx.p, dgamma.p, dbeta.p, 2), 0);
    cmp("bn_backward", "dx", dx, 0, 1, 1, n, ref, sc, 8 * g_tol, g_floor);
    /* the sums are taken in double: one tolerance of the type (a looser one would let
     * --selftest's shift of a sum over 10 000 values pass) */
    cmp("bn_backward", "dgamma", dgamma, 0, 1, 1, C, rg, sg, g_tol, g_floor);
    cmp("bn_backward", "dbeta", dbeta, 0, 1, 1, C, rb, sb, g_tol, g_floor);
#undef BN_AT
    free(mean_d); free(invstd_d); free(rm); free(rv); free(ref); free(sc); free(rg); free(rb); free(sg); free(sb);
    bfree(&x); bfree(&gamma); bfree(&beta); bfree(&y); bfree(&mean); bfree(&var); bfree(&y1); bfree(&dy);
    bfree(&dx); bfree(&dgamma); bfree(&dbeta); bfree(&yi);
}

static void check_norm(void)
{
    const ptrdiff_t VL = vec_len();
    run_bn(37, VL + 3, 1);      /* rows */
    run_bn(3, 5, 2 * VL + 7);   /* planes */
    run_bn(1500, 3, 1);         /* rows in more than one chunk */
    run_bn(2, 2, 5000);         /* a plane in more than one chunk */
    run_bn(500, 1, 1);          /* (M, 1, 1) runs as (1, 1, M) */
}

/* ---- optimizers (fn_optim.h) ---- */

static void run_optim(int which, int nesterov, double wd)
{
    static const char *names[] = {"sgd_step", "sgd_step", "rmsprop_step", "adam_step"};
    const char *fn = names[which];
    const ptrdiff_t sizes[3] = {vec_len() + 3, 0, FN_OPTIM_CHUNK + 17};
    const double lr = 0.05, b1 = 0.9, b2 = 0.99, eps = 1e-8, t = 3;
    Buf w[3], g[3], v[3], s[3];
    void *wp[3], *vp[3], *sp[3];
    const void *gp[3];
    ptrdiff_t i, a;
    fn_optim_arrays arr;
    fn_optim_hyper h;
    int rc;
    memset(&h, 0, sizeof h);
    h.lr = lr;
    h.b1 = b1;
    h.c1 = 1 - b1;
    h.b2 = b2;
    h.c2 = 1 - b2;
    h.eps = eps;
    h.weight_decay = wd;
    h.step = lr / (1 - pow(b1, t));
    h.rbc2 = 1 / sqrt(1 - pow(b2, t));
    h.nesterov = nesterov;
    for (a = 0; a < 3; a++) {
        w[a] = bnew(sizes[a]);
        g[a] = bnew(sizes[a]);
        v[a] = bnew(sizes[a]);
        s[a] = bnew(sizes[a]);
        fill(w[a], 0, 1, 1, sizes[a], -1, 1);
        fill(g[a], 0, 1, 1, sizes[a], -1, 1);
        fill(v[a], 0, 1, 1, sizes[a], -0.1, 0.1);
        fill(s[a], 0, 1, 1, sizes[a], 0, 0.01);
        wp[a] = w[a].p;
        gp[a] = g[a].p;
        vp[a] = v[a].p;
        sp[a] = s[a].p;
    }
    arr.count = 3;
    arr.w = wp;
    arr.g = gp;
    arr.v = which == 0 || which == 2 ? NULL : vp;
    arr.s = which >= 2 ? sp : NULL;
    arr.size = sizes;
    snprintf(g_ctx, sizeof g_ctx, "%s momentum=%d nesterov=%d weight_decay=%g sizes %ld, 0, %ld", fn, which == 1,
             nesterov, wd, (long)sizes[0], (long)sizes[2]);
    {
        /* the references, per element in double from the type's coefficients */
        double *rw[3], *rv[3], *rs[3], *sc[3];
        const double klr = rt(lr), kb1 = rt(b1), kc1 = rt(1 - b1), kb2 = rt(b2), kc2 = rt(1 - b2), keps = rt(eps);
        const double kwd = rt(wd), kstep = rt(h.step), krbc2 = rt(h.rbc2);
        for (a = 0; a < 3; a++) {
            const size_t bytes = (size_t)(sizes[a] + 1) * sizeof(double);
            rw[a] = (double *)xmalloc(bytes);
            rv[a] = (double *)xmalloc(bytes);
            rs[a] = (double *)xmalloc(bytes);
            sc[a] = (double *)xmalloc(bytes);
            for (i = 0; i < sizes[a]; i++) {
                const double wv = GET(w[a], i), gv = GET(g[a], i) + (wd != 0 ? kwd * wv : 0.0);
                double vv = GET(v[a], i), sv = GET(s[a], i), step = 0;
                if (which == 0) {
                    step = klr * gv;
                } else if (which == 1) {
                    vv = kb1 * vv + kc1 * gv;
                    step = klr * (nesterov ? kb1 * vv + kc1 * gv : vv);
                } else if (which == 2) {
                    sv = kb2 * sv + kc2 * gv * gv;
                    step = klr * (gv / (sqrt(sv) + keps));
                } else {
                    vv = kb1 * vv + kc1 * gv;
                    sv = kb2 * sv + kc2 * gv * gv;
                    step = kstep * (vv / (sqrt(sv) * krbc2 + keps));
                }
                rw[a][i] = wv - step;
                rv[a][i] = vv;
                rs[a][i] = sv;
                sc[a][i] = fabs(wv) + 4 * fabs(step) + fabs(vv) + fabs(sv);
            }
        }
        rc = g_dbl ? (which <= 1 ? fn_sgd_step_d(&arr, &h, 2) : which == 2 ? fn_rmsprop_step_d(&arr, &h, 2)
                                                                            : fn_adam_step_d(&arr, &h, 2))
                   : (which <= 1 ? fn_sgd_step_f(&arr, &h, 2) : which == 2 ? fn_rmsprop_step_f(&arr, &h, 2)
                                                                            : fn_adam_step_f(&arr, &h, 2));
        expect_int(fn, "returns 0", rc, 0);
        for (a = 0; a < 3; a += 2) {
            cmp(fn, "w", w[a], 0, 1, 1, sizes[a], rw[a], sc[a], 4 * g_tol, g_floor);
            if (arr.v != NULL)
                cmp(fn, "v (first moment)", v[a], 0, 1, 1, sizes[a], rv[a], sc[a], 4 * g_tol, g_floor);
            if (arr.s != NULL)
                cmp(fn, "s (second moment)", s[a], 0, 1, 1, sizes[a], rs[a], sc[a], 4 * g_tol, g_floor);
        }
        for (a = 0; a < 3; a++) {
            free(rw[a]); free(rv[a]); free(rs[a]); free(sc[a]);
        }
    }
    for (a = 0; a < 3; a++) {
        bfree(&w[a]); bfree(&g[a]); bfree(&v[a]); bfree(&s[a]);
    }
}

static void check_optim(void)
{
    run_optim(0, 0, 0.0);
    run_optim(0, 0, 0.01);
    run_optim(1, 0, 0.0);
    run_optim(1, 1, 0.01);
    run_optim(2, 0, 0.0);
    run_optim(2, 0, 0.01);
    run_optim(3, 0, 0.0);
    run_optim(3, 0, 0.01);
}

/* ---- dropout (fn_dropout.h): the reference's bits exactly ---- */

static void check_dropout(void)
{
    const ptrdiff_t VL = vec_len(), ns[3] = {1, 4 * VL + 3, 1000};
    const double kps[3] = {0.5, 0.9, 1.0 / 3.0};
    int a, b;
    for (a = 0; a < 3; a++)
        for (b = 0; b < 3; b++) {
            const ptrdiff_t n = ns[a];
            const double kp = kps[b], kpt = rt(kp);
            double *draws = (double *)xmalloc((size_t)n * sizeof(double));
            double *ref = (double *)xmalloc((size_t)n * sizeof(double));
            unsigned char *mask = (unsigned char *)xmalloc((size_t)n + 1), *mref = (unsigned char *)xmalloc((size_t)n);
            Buf x = bnew(n), y = bnew(n);
            ptrdiff_t i;
            snprintf(g_ctx, sizeof g_ctx, "n=%ld keep_prob=%g", (long)n, kp);
            fill(x, 0, 1, 1, n, -3, 3);
            if (n > 3) {
                SET(x, 1, NAN);
                SET(x, 2, -0.0);
            }
            for (i = 0; i < n; i++) {
                draws[i] = i == 0 ? kp : uni(0, 1);  /* a draw equal to keep_prob drops */
                mref[i] = draws[i] < kp;
            }
            mask[n] = 0xA5;
            fn_drop_mask(draws, kp, mask, n);
            cmp_bytes("drop_mask", "mask = draws < keep_prob", mask, mref, NULL, n, 0);
            {
                const unsigned char guard = 0xA5;
                cmp_bytes("drop_mask", "the byte past the mask", mask + n, &guard, NULL, 1, 0);
            }
            for (i = 0; i < n; i++)
                ref[i] = rt(rt(GET(x, i) * (double)mref[i]) / kpt);
            fill_value(y, 0, 1, 1, n, NAN);
            if (g_dbl)
                fn_drop_apply_d((const double *)x.p, mref, kpt, (double *)y.p, n);
            else
                fn_drop_apply_f((const float *)x.p, mref, (float)kpt, (float *)y.p, n);
            cmp("drop_apply", "y = (x * mask) / kp, exactly", y, 0, 1, 1, n, ref, NULL, 0, 0);
            free(draws); free(ref); free(mask); free(mref);
            bfree(&x); bfree(&y);
        }
}

/* ---- embedding (fn_embedding.h): copies and in-order sums, exactly ---- */

static void check_embedding(void)
{
    const ptrdiff_t VL = vec_len();
    const ptrdiff_t widths[4] = {1, VL + 3, 8 * VL + 1, 100};
    const ptrdiff_t V = 13, P = 29;
    int a, stream, off;
    for (a = 0; a < 4; a++) {
        const ptrdiff_t D = widths[a];
        Buf table = bnew(V * D), y = bnew(P * D), dy = bnew(P * D), out = bnew(V * D + 1);
        int64_t *ids = (int64_t *)xmalloc((size_t)P * sizeof(int64_t)), *order = (int64_t *)xmalloc((size_t)P * sizeof(int64_t));
        double *ref = (double *)xmalloc((size_t)(P * D + V * D + 1) * sizeof(double));
        ptrdiff_t p, d, v, q;
        Snap sy;
        snprintf(g_ctx, sizeof g_ctx, "V=%ld D=%ld P=%ld", (long)V, (long)D, (long)P);
        fill(table, 0, 1, 1, V * D, -1, 1);
        fill(dy, 0, 1, 1, P * D, -1, 1);
        for (p = 0; p < P; p++)
            ids[p] = (int64_t)uni(0, (double)(V - 3));  /* the last rows unused */
        /* gather: positions 3..P-2 only */
        fill_value(y, 0, 1, 1, P * D, NAN);
        sy = snap(y);
        CALL(emb_gather, ids, table.p, y.p, 3, P - 1, D);
        for (p = 3; p < P - 1; p++)
            for (d = 0; d < D; d++)
                ref[(p - 3) * D + d] = GET(table, ids[p] * D + d);
        cmp("emb_gather", "y[p] = table[ids[p]], exactly", y, 3 * D, D, P - 4, D, ref, NULL, 0, 0);
        unchanged("emb_gather", "rows outside p0:p1", y, sy, 3 * D, D, P - 4, D);
        sfree(&sy);
        /* the counting sort the driver makes: positions grouped by id, in order */
        {
            ptrdiff_t k = 0;
            for (v = 0; v < V; v++)
                for (p = 0; p < P; p++)
                    if (ids[p] == v)
                        order[k++] = p;
        }
        for (stream = 0; stream < 2; stream++)
            for (off = 0; off < 2; off++) {  /* off: the rows start one element past a vector boundary */
                ptrdiff_t s0 = 0;
                Buf o = out;
                char *base = (char *)o.p + off * (ptrdiff_t)ES;
                Snap so;
                fill_value(o, 0, 1, 1, o.n, NAN);
                so = snap(o);
                for (v = 0; v < V; v++) {
                    ptrdiff_t e = s0;
                    while (e < P && ids[order[e]] == v)
                        e++;
                    if (e > s0)
                        CALL(emb_sum_row, (void *)(base + v * D * (ptrdiff_t)ES), dy.p, D, order, s0, e, stream);
                    else
                        CALL(emb_zero, (void *)(base + v * D * (ptrdiff_t)ES), D, stream);
                    for (d = 0; d < D; d++) {
                        double acc = 0;
                        for (q = s0; q < e; q++)
                            acc = rt(acc + GET(dy, order[q] * D + d));
                        ref[v * D + d] = acc;
                    }
                    s0 = e;
                }
                fn_emb_fence(stream);
                snprintf(g_ctx, sizeof g_ctx, "V=%ld D=%ld P=%ld stream=%d offset=%d", (long)V, (long)D, (long)P,
                         stream, off);
                cmp("emb_sum_row", "rows = 0 + dy[p1] + dy[p2] + ..., exactly", o, off, D, V - 3, D, ref, NULL, 0, 0);
                cmp("emb_zero", "unused rows are 0", o, off + (V - 3) * D, D, 3, D, ref + (V - 3) * D, NULL, 0, 0);
                unchanged("emb_sum_row", "outside the rows", o, so, off, V * D, 1, V * D);
                sfree(&so);
            }
        free(ids); free(order); free(ref);
        bfree(&table); bfree(&y); bfree(&dy); bfree(&out);
    }
}

int main(int argc, char **argv)
{
    int i, t, d, top;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--selftest") == 0)
            g_selftest = 1;
        else if (strcmp(argv[i], "-v") == 0)
            g_verbose = 1;
        else {
            fprintf(stderr, "usage: %s [-v] [--selftest]\n", argv[0]);
            return 2;
        }
    }
    top = fn_cpu_tier();
    check_tier_api();
    for (t = top; t >= 0; t--) {
        fn_set_tier(t);
        g_tier = fn_tier();
        snprintf(g_ctx, sizeof g_ctx, "set %d", t);
        expect_int("fn_set_tier", "the tier set", g_tier, t);
        for (d = 0; d < 2; d++) {
            const clock_t c0 = clock();
            g_dbl = d;
            g_tol = d ? 1e-12 : 1e-5;
            g_floor = d ? 1e-300 : 1e-37;
            seed((uint64_t)(t * 2 + d + 1));
            check_pack();
            check_gemm_nn();
            check_gemm_any();
            check_gemm_list();
            check_gemm_tn();
            check_transpose();
            check_conv();
            check_conv1();
            check_lstm();
            check_rows();
            check_recurrent_loops();
            check_activate();
            check_dense();
            check_loss();
            check_norm();
            check_optim();
            check_dropout();
            check_embedding();
            if (g_verbose)
                printf("tier %s, %s: done, %.2f s of CPU\n", tier_name(t), type_name(),
                       (double)(clock() - c0) / CLOCKS_PER_SEC);
        }
    }
    printf("fn_check: cpu tier %s, openmp %s%s\n", tier_name(top), fn_openmp() ? "yes" : "no",
           g_selftest ? ", selftest (every check perturbed)" : "");
    for (i = 0; i < t_count; i++)
        printf("  %-24s %6ld checks, %ld failed; worst passing error %.3f of the allowed\n", t_name[i],
               t_checks[i], t_fail[i], t_worst[i]);
    printf("fn_check: %ld checks, %ld failed\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
