/* The optimizer steps (SGD with momentum or Nesterov, RMSprop, Adam) as fused
 * in-place kernels, instantiated per CPU tier and element type by fn_kernels.h (no
 * include guard; the shared part below has one).
 *
 * One call updates every array of one element type: the arrays come as tables of
 * pointers and sizes (fn_optim_arrays), each array is cut into chunks of
 * FN_OPTIM_CHUNK elements (the last one shorter), and the chunks of all the arrays
 * are the tasks of the OpenMP threads. A chunk is one pass over its elements that
 * does the whole update of each: weight decay, the moments, the bias-corrected
 * step and the parameter, with the moments and the parameter written back in place
 * (Adam reads four streams and writes three; PyTorch's foreach Adam makes eight
 * passes over 19 streams and allocates a temporary). The update of an element uses
 * that element alone and the same vector code wherever the element falls (a tail is
 * the same arithmetic on masked lanes), so the results do not depend on the thread
 * count, the chunk size or the order of the arrays.
 *
 * The coefficients come from the caller in double (fn_optim_hyper; the bias
 * corrections of step t already folded in: step = lr / (1 - beta1^t) and
 * rbc2 = 1 / sqrt(1 - beta2^t)) and are rounded once to the element type, as
 * PyTorch does. Per element, g the gradient (plus weight_decay * w when
 * weight_decay != 0; with weight_decay == 0 nothing is added, so an infinite w
 * does not turn g into NaN):
 *
 *   SGD       w -= lr * g                                            (no momentum)
 *             v = b1 v + c1 g;  w -= lr * v                          (momentum)
 *             v = b1 v + c1 g;  w -= lr * (b1 v + c1 g)              (Nesterov)
 *   RMSprop   s = b2 s + c2 g^2;  w -= lr * (g / (sqrt(s) + eps))
 *   Adam      v = b1 v + c1 g;  s = b2 s + c2 g^2;
 *             w -= step * (v / (sqrt(s) * rbc2 + eps))
 *
 * with c1 = 1 - b1 and c2 = 1 - b2 (given, not recomputed). The products b v + c g
 * are fused multiply-adds on the tiers that have them (FN(fma)). The quotients are
 * IEEE divisions, not FN(div): a gradient whose square overflows makes s infinite,
 * and v / inf must be 0 (no step), where a refined reciprocal gives NaN. In the
 * caches the division costs a third of the time (61 440 float elements: 35 against
 * 22 us); over 10 M elements, which come from memory, nothing.
 */
#ifndef FASTNN_FN_OPTIM_SHARED
#define FASTNN_FN_OPTIM_SHARED

/* Elements per task: a multiple of every tier's vector length, large enough that
 * handing out a task costs nothing next to it (32 KiB of each float stream), small
 * enough that 2 threads share a 500 000-element array evenly. */
#define FN_OPTIM_CHUNK ((ptrdiff_t)8192)

/* The arrays of one call, all of one element type and C-contiguous: w[i], g[i] and
 * (where the optimizer has them) v[i], s[i] hold size[i] elements each. v and s are
 * NULL when the optimizer does not use them. */
typedef struct {
    ptrdiff_t count;
    void *const *w;
    const void *const *g;
    void *const *v;
    void *const *s;
    const ptrdiff_t *size;
} fn_optim_arrays;

/* The coefficients of one step (see the top of this file). */
typedef struct {
    double lr, b1, c1, b2, c2, eps, weight_decay, step, rbc2;
    int nesterov;
} fn_optim_hyper;

/* first[i]: the task number of array i's first chunk; first[count]: the number of
 * tasks. Returns NULL when the table cannot be allocated. */
FN_UNUSED static ptrdiff_t *fn_optim_chunks(const fn_optim_arrays *a)
{
    ptrdiff_t i, *first = (ptrdiff_t *)fn_alloc((size_t)(a->count + 1) * sizeof(ptrdiff_t));
    if (first == NULL)
        return NULL;
    first[0] = 0;
    for (i = 0; i < a->count; i++)
        first[i + 1] = first[i] + (a->size[i] + FN_OPTIM_CHUNK - 1) / FN_OPTIM_CHUNK;
    return first;
}

/* The array that task belongs to: the last i with first[i] <= task (arrays with no
 * elements own no task and are skipped). */
FN_UNUSED static inline ptrdiff_t fn_optim_owner(const ptrdiff_t *first, ptrdiff_t count, ptrdiff_t task)
{
    ptrdiff_t lo = 0, hi = count - 1;
    while (lo < hi) {
        const ptrdiff_t mid = (lo + hi + 1) / 2;
        if (first[mid] <= task)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* A call with fewer elements than this runs on the calling thread: waking a team
 * costs more than the update (the results are the same either way). */
#define FN_OPTIM_SERIAL_BELOW ((ptrdiff_t)32768)

#endif

/* the m (<= VL) elements at p as a vector, and back; m is the constant FN_VL in the
 * main loop, so the test folds away */
#define FN_OGET(p, m) ((m) == FN_VL ? FN(ld)(p) : FN(ldn)((p), (m)))
#define FN_OPUT(p, m, x) do { if ((m) == FN_VL) FN(st)((p), (x)); else FN(stn)((p), (m), (x)); } while (0)
/* BODY for every vector of the n elements from 0: j its first element, m its lanes
 * (whole vectors first, then one masked tail) */
#define FN_OEACH(n, ...) \
    do { \
        ptrdiff_t j = 0; \
        for (; j + FN_VL <= (n); j += FN_VL) { \
            const int m = FN_VL; \
            __VA_ARGS__ \
        } \
        if (j < (n)) { \
            const int m = (int)((n) - j); \
            __VA_ARGS__ \
        } \
    } while (0)

/* the lane-wise square root (correctly rounded on every tier, so every tier's
 * instruction gives the same bits) */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return _mm512_sqrt_pd(x); }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return _mm512_sqrt_ps(x); }
#elif FN_TIER_ID == FN_TIER_AVX2 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return _mm256_sqrt_pd(x); }
#elif FN_TIER_ID == FN_TIER_AVX2
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return _mm256_sqrt_ps(x); }
#elif defined(__SSE2__) && FN_VBYTES == 16 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return (FN_V)_mm_sqrt_pd((__m128d)x); }
#elif defined(__SSE2__) && FN_VBYTES == 16
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return (FN_V)_mm_sqrt_ps((__m128)x); }
#elif defined(__aarch64__) && FN_VBYTES == 16 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return (FN_V)vsqrtq_f64((float64x2_t)x); }
#elif defined(__aarch64__) && FN_VBYTES == 16
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x) { return (FN_V)vsqrtq_f32((float32x4_t)x); }
#else
FN_TARGET FN_INLINE FN_V FN(optim_sqrt)(FN_V x)
{
    int i;
    for (i = 0; i < FN_VL; i++)
        x[i] = FN_DOUBLE ? (FN_T)__builtin_sqrt((double)x[i]) : (FN_T)__builtin_sqrtf((float)x[i]);
    return x;
}
#endif

/* The gradient of the m lanes at j, weight decay added when `decay` (a constant at
 * every call, so each chunk function is compiled with and without it). */
#define FN_OGRAD(gp, wv, m, decay, wd) ((decay) ? FN(fma)((wd), (wv), FN_OGET((gp) + j, (m))) : FN_OGET((gp) + j, (m)))

/* mode: 0 plain SGD, 1 momentum, 2 Nesterov */
FN_TARGET FN_INLINE void FN(sgd_chunk)(FN_T *w, const FN_T *g, FN_T *v, ptrdiff_t n, const FN_T *k,
                                       const int mode, const int decay)
{
    const FN_V lr = FN(bc)(k[0]), b1 = FN(bc)(k[1]), c1 = FN(bc)(k[2]), wd = FN(bc)(k[3]);
    FN_OEACH(n,
        const FN_V wv = FN_OGET(w + j, m), gv = FN_OGRAD(g, wv, m, decay, wd);
        if (mode == 0) {
            FN_OPUT(w + j, m, wv - lr * gv);
        } else {
            const FN_V vv = FN(fma)(b1, FN_OGET(v + j, m), c1 * gv);
            FN_OPUT(v + j, m, vv);
            FN_OPUT(w + j, m, wv - lr * (mode == 2 ? FN(fma)(b1, vv, c1 * gv) : vv));
        }
    );
}

FN_TARGET FN_INLINE void FN(rmsprop_chunk)(FN_T *w, const FN_T *g, FN_T *s, ptrdiff_t n, const FN_T *k,
                                           const int decay)
{
    const FN_V lr = FN(bc)(k[0]), b2 = FN(bc)(k[1]), c2 = FN(bc)(k[2]), eps = FN(bc)(k[3]), wd = FN(bc)(k[4]);
    FN_OEACH(n,
        const FN_V wv = FN_OGET(w + j, m), gv = FN_OGRAD(g, wv, m, decay, wd);
        const FN_V sv = FN(fma)(b2, FN_OGET(s + j, m), c2 * (gv * gv));
        FN_OPUT(s + j, m, sv);
        FN_OPUT(w + j, m, wv - lr * (gv / (FN(optim_sqrt)(sv) + eps)));
    );
}

FN_TARGET FN_INLINE void FN(adam_chunk)(FN_T *w, const FN_T *g, FN_T *v, FN_T *s, ptrdiff_t n, const FN_T *k,
                                        const int decay)
{
    const FN_V step = FN(bc)(k[0]), b1 = FN(bc)(k[1]), c1 = FN(bc)(k[2]), b2 = FN(bc)(k[3]);
    const FN_V c2 = FN(bc)(k[4]), eps = FN(bc)(k[5]), rbc2 = FN(bc)(k[6]), wd = FN(bc)(k[7]);
    FN_OEACH(n,
        const FN_V wv = FN_OGET(w + j, m), gv = FN_OGRAD(g, wv, m, decay, wd);
        const FN_V vv = FN(fma)(b1, FN_OGET(v + j, m), c1 * gv);
        const FN_V sv = FN(fma)(b2, FN_OGET(s + j, m), c2 * (gv * gv));
        FN_OPUT(v + j, m, vv);
        FN_OPUT(s + j, m, sv);
        FN_OPUT(w + j, m, wv - step * (vv / FN(fma)(FN(optim_sqrt)(sv), rbc2, eps)));
    );
}

/* The task loop of every step: CHUNK(i, j0, n) for the n elements of array i from
 * j0, over the chunks of all the arrays. Returns -1 when the chunk table cannot be
 * allocated (nothing is updated then), else 0. */
#define FN_OPTIM_TASKS(a, threads_in, CHUNK) \
    do { \
        ptrdiff_t *first_ = fn_optim_chunks(a), total_ = 0, i_; \
        int threads; \
        if (first_ == NULL) \
            return -1; \
        for (i_ = 0; i_ < (a)->count; i_++) \
            total_ += (a)->size[i_]; \
        threads = total_ < FN_OPTIM_SERIAL_BELOW ? 1 : (threads_in); \
        FN_TASKS(first_[(a)->count], \
            const ptrdiff_t i = fn_optim_owner(first_, (a)->count, task); \
            const ptrdiff_t j0 = (task - first_[i]) * FN_OPTIM_CHUNK; \
            const ptrdiff_t n = (a)->size[i] - j0 < FN_OPTIM_CHUNK ? (a)->size[i] - j0 : FN_OPTIM_CHUNK; \
            CHUNK \
        ); \
        fn_free(first_); \
        return 0; \
    } while (0)

#define FN_OPTIM_ARRAY(table, i, j0) ((FN_T *)(table)[i] + (j0))

FN_TARGET FN_UNUSED static int FN(sgd_step)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads_in)
{
    const FN_T k[4] = {(FN_T)h->lr, (FN_T)h->b1, (FN_T)h->c1, (FN_T)h->weight_decay};
    const int mode = a->v == NULL ? 0 : (h->nesterov ? 2 : 1), decay = h->weight_decay != 0.0;
    FN_OPTIM_TASKS(a, threads_in,
        FN_T *w = FN_OPTIM_ARRAY(a->w, i, j0);
        const FN_T *g = (const FN_T *)a->g[i] + j0;
        FN_T *v = mode == 0 ? NULL : FN_OPTIM_ARRAY(a->v, i, j0);
        if (mode == 0) {
            if (decay) FN(sgd_chunk)(w, g, v, n, k, 0, 1); else FN(sgd_chunk)(w, g, v, n, k, 0, 0);
        } else if (mode == 1) {
            if (decay) FN(sgd_chunk)(w, g, v, n, k, 1, 1); else FN(sgd_chunk)(w, g, v, n, k, 1, 0);
        } else {
            if (decay) FN(sgd_chunk)(w, g, v, n, k, 2, 1); else FN(sgd_chunk)(w, g, v, n, k, 2, 0);
        }
    );
}

FN_TARGET FN_UNUSED static int FN(rmsprop_step)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads_in)
{
    const FN_T k[5] = {(FN_T)h->lr, (FN_T)h->b2, (FN_T)h->c2, (FN_T)h->eps, (FN_T)h->weight_decay};
    const int decay = h->weight_decay != 0.0;
    FN_OPTIM_TASKS(a, threads_in,
        FN_T *w = FN_OPTIM_ARRAY(a->w, i, j0);
        const FN_T *g = (const FN_T *)a->g[i] + j0;
        FN_T *s = FN_OPTIM_ARRAY(a->s, i, j0);
        if (decay) FN(rmsprop_chunk)(w, g, s, n, k, 1); else FN(rmsprop_chunk)(w, g, s, n, k, 0);
    );
}

FN_TARGET FN_UNUSED static int FN(adam_step)(const fn_optim_arrays *a, const fn_optim_hyper *h, int threads_in)
{
    const FN_T k[8] = {(FN_T)h->step, (FN_T)h->b1, (FN_T)h->c1, (FN_T)h->b2,
                       (FN_T)h->c2, (FN_T)h->eps, (FN_T)h->rbc2, (FN_T)h->weight_decay};
    const int decay = h->weight_decay != 0.0;
    FN_OPTIM_TASKS(a, threads_in,
        FN_T *w = FN_OPTIM_ARRAY(a->w, i, j0);
        const FN_T *g = (const FN_T *)a->g[i] + j0;
        FN_T *v = FN_OPTIM_ARRAY(a->v, i, j0);
        FN_T *s = FN_OPTIM_ARRAY(a->s, i, j0);
        if (decay) FN(adam_chunk)(w, g, v, s, n, k, 1); else FN(adam_chunk)(w, g, v, s, n, k, 0);
    );
}

#undef FN_OGET
#undef FN_OPUT
#undef FN_OEACH
#undef FN_OGRAD
#undef FN_OPTIM_TASKS
#undef FN_OPTIM_ARRAY
