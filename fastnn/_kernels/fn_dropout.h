/* The elementwise loops of dropout (cy_dropout.pyx), compiled per CPU tier.
 *
 * Each loop is plain C that the compiler vectorises by the tier's target attribute
 * alone; the baseline build (SSE2) could not vectorise the comparison of float64
 * draws into a byte mask, which made the forward pass several times slower. The tiers are AVX-512 (F/VL/DQ/BW) and AVX2 on
 * x86-64 with target attributes (fn_base.h), and the baseline everywhere; the active
 * tier (fn_tier(), FASTNN_ISA) picks one.
 *
 * Every element is computed on its own, with one multiply and one correctly rounded
 * division (the build has -ffp-contract=off: nothing is fused), so every tier and
 * every vector width gives the same bits.
 */
#ifndef FASTNN_FN_DROPOUT_H
#define FASTNN_FN_DROPOUT_H

#include "fn_base.h"

#define FN_DROP_BODIES(SFX, TARGET)                                                                \
    TARGET FN_UNUSED static void fn_drop_mask_##SFX(const double *draws, double keep_prob, uint8_t *mask, \
                                                    ptrdiff_t n)                                   \
    {                                                                                              \
        ptrdiff_t i;                                                                               \
        for (i = 0; i < n; i++)                                                                    \
            mask[i] = draws[i] < keep_prob;                                                        \
    }                                                                                              \
    TARGET FN_UNUSED static void fn_drop_apply_##SFX##_f(const float *x, const uint8_t *mask, float kp, \
                                                         float *y, ptrdiff_t n)                    \
    {                                                                                              \
        ptrdiff_t i;                                                                               \
        for (i = 0; i < n; i++)                                                                    \
            y[i] = (x[i] * (float)mask[i]) / kp;                                                   \
    }                                                                                              \
    TARGET FN_UNUSED static void fn_drop_apply_##SFX##_d(const double *x, const uint8_t *mask, double kp, \
                                                         double *y, ptrdiff_t n)                   \
    {                                                                                              \
        ptrdiff_t i;                                                                               \
        for (i = 0; i < n; i++)                                                                    \
            y[i] = (x[i] * (double)mask[i]) / kp;                                                  \
    }

#if FN_X86_TIERS
FN_DROP_BODIES(avx512, __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw"))))
FN_DROP_BODIES(avx2, __attribute__((target("avx2"))))
#define FN_DROP_PICK(call, args)                                                                   \
    switch (fn_tier()) {                                                                           \
    case FN_TIER_AVX512: call(avx512) args; return;                                                \
    case FN_TIER_AVX2: call(avx2) args; return;                                                    \
    default: call(base) args; return;                                                              \
    }
#else
#define FN_DROP_PICK(call, args) call(base) args;
#endif
FN_DROP_BODIES(base, )

#define FN_DROP_MASK(t) fn_drop_mask_##t
#define FN_DROP_APPLY_F(t) fn_drop_apply_##t##_f
#define FN_DROP_APPLY_D(t) fn_drop_apply_##t##_d

/* mask[i] = draws[i] < keep_prob, for i < n */
FN_UNUSED static void fn_drop_mask(const double *draws, double keep_prob, uint8_t *mask, ptrdiff_t n)
{
    FN_DROP_PICK(FN_DROP_MASK, (draws, keep_prob, mask, n))
}

/* y[i] = (x[i] * mask[i]) / kp, for i < n */
FN_UNUSED static void fn_drop_apply_f(const float *x, const uint8_t *mask, float kp, float *y, ptrdiff_t n)
{
    FN_DROP_PICK(FN_DROP_APPLY_F, (x, mask, kp, y, n))
}

FN_UNUSED static void fn_drop_apply_d(const double *x, const uint8_t *mask, double kp, double *y, ptrdiff_t n)
{
    FN_DROP_PICK(FN_DROP_APPLY_D, (x, mask, kp, y, n))
}

#undef FN_DROP_BODIES
#undef FN_DROP_PICK
#undef FN_DROP_MASK
#undef FN_DROP_APPLY_F
#undef FN_DROP_APPLY_D

#endif
