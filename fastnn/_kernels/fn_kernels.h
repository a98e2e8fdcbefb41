/* fastnn's C kernels, instantiated for every CPU tier and element type, and the
 * functions the Cython drivers call, which pick the instance of the active tier.
 *
 * Each kernel source is written once (fn_gemm.h: the matrix-multiply core and the
 * convolutions; fn_lstm.h: the fused LSTM step; fn_rnn.h: the other recurrent
 * cells' elementwise passes; fn_pool.h: pooling; fn_math.h: exp, sigmoid, tanh; fn_dense.h,
 * fn_loss.h, fn_norm.h, fn_optim.h, fn_dropout.h and fn_embedding.h: the training
 * ops; fn_bodies.h lists them all) over the vector type
 * FN_V of FN_VL lanes of FN_T. fn_instance.h compiles them for float and double
 * with the tier's parameters:
 *
 *   tier     vector    GEMM tile (rows x vectors)   LSTM tile       target attribute
 *   avx512   64 bytes  6 x 4 (tall: 8 x 2)          6 x 4 gates     avx512f/vl/dq/bw, fma
 *   avx2     32 bytes  6 x 2 (tall: 12 x 1)         6 x 2 gates x2  avx2, fma
 *   generic  16 bytes  6 x 2 (tall: 12 x 1)         6 x 2 gates x2  none (SSE2, NEON, ...)
 *
 * so that a tile's accumulators fill most of the tier's vector registers (32 for
 * AVX-512, 16 otherwise) and leave room for the right operand's vectors. A function
 * fn_<name>_<f|d>(...) below runs fn_<name>_<tier>_<f|d>(...) of the tier fn_tier()
 * says is active (fn_base.h). Packed operands have a layout per tier (their panel
 * width is the tile's), so a call packs and multiplies on the same tier.
 */
#ifndef FASTNN_FN_KERNELS_H
#define FASTNN_FN_KERNELS_H

#include "fn_base.h"
#if FN_X86_TIERS
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#define FN_CAT_(a, b, c) a##_##b##_##c
#define FN_CAT(a, b, c) FN_CAT_(a, b, c)
/* fn_<name>_<tier>_<type> of the instantiation being compiled */
#define FN(name) FN_CAT(fn_##name, FN_TIER_NAME, FN_TS)

#define FN_ACT_SIGMOID 0
#define FN_ACT_TANH 1
#define FN_ACT_RELU 2

/* The per-step arrays of the fused LSTM step (fn_lstm.h): rows of g and gx have
 * 4 * n_a elements, the others n_a. x (rows of n_x) is the step's input when the
 * product includes it (then bias is b and gx is NULL); otherwise gx holds the
 * step's input projection (bias included; it may be g itself, read before g is
 * written) and gx_next the next step's (NULL at the last step), fetched ahead.
 * stream writes the gate values and tanh(c), which no later step reads, past the caches
 * (non-temporal stores, for sequences much larger than the level-2 cache). */
#define FN_DEFINE_LSTM_IO(T, NAME) \
    typedef struct { \
        ptrdiff_t n_a, n_x; \
        const T *h_prev, *c_prev, *x, *bias, *gx, *gx_next; \
        T *g, *c_next, *tanh_c, *h_next; \
        int stream; \
    } NAME;
FN_DEFINE_LSTM_IO(float, fn_lstm_io_f)
FN_DEFINE_LSTM_IO(double, fn_lstm_io_d)
#undef FN_DEFINE_LSTM_IO

#if FN_X86_TIERS
#define FN_TIER_ID FN_TIER_AVX512
#define FN_TIER_NAME avx512
#define FN_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma")))
#define FN_VBYTES 64
#define FN_MR 6
#define FN_NV 4
#define FN_MRT 8
#define FN_LMR 6
#define FN_LGV 4
#include "fn_instance.h"

#define FN_TIER_ID FN_TIER_AVX2
#define FN_TIER_NAME avx2
#define FN_TARGET __attribute__((target("avx2,fma")))
#define FN_VBYTES 32
#define FN_MR 6
#define FN_NV 2
#define FN_MRT 12
#define FN_LMR 6
#define FN_LGV 2
#include "fn_instance.h"
#endif

#define FN_TIER_ID FN_TIER_GENERIC
#define FN_TIER_NAME generic
#define FN_TARGET
#define FN_VBYTES 16
#define FN_MR 6
#define FN_NV 2
#define FN_MRT 12
#define FN_LMR 6
#define FN_LGV 2
#include "fn_instance.h"

/* ---- the dispatchers: fn_<name>_f and fn_<name>_d ---- */

#if FN_X86_TIERS
#define FN_PICK_(RET, name, ts, args) \
    switch (fn_tier()) { \
    case FN_TIER_AVX512: RET fn_##name##_avx512_##ts args; break; \
    case FN_TIER_AVX2: RET fn_##name##_avx2_##ts args; break; \
    default: RET fn_##name##_generic_##ts args; break; \
    }
#else
#define FN_PICK_(RET, name, ts, args) RET fn_##name##_generic_##ts args;
#endif
#define FN_PICK(RET, name, ts, args) FN_PICK_(RET, name, ts, args)
#define FN_D_(name, ts) fn_##name##_##ts
#define FN_D(name, ts) FN_D_(name, ts)

#define FN_T float
#define FN_TS f
#define FN_DOUBLE 0
#define FN_LSTM_IO fn_lstm_io_f
#include "fn_dispatch.h"
#include "fn_pool_dispatch.h"
#include "fn_dense_dispatch.h"
#include "fn_loss_dispatch.h"
#include "fn_norm_dispatch.h"
#include "fn_optim_dispatch.h"
#include "fn_dropout_dispatch.h"
#include "fn_embedding_dispatch.h"
#undef FN_T
#undef FN_TS
#undef FN_DOUBLE
#undef FN_LSTM_IO
#define FN_T double
#define FN_TS d
#define FN_DOUBLE 1
#define FN_LSTM_IO fn_lstm_io_d
#include "fn_dispatch.h"
#include "fn_pool_dispatch.h"
#include "fn_dense_dispatch.h"
#include "fn_loss_dispatch.h"
#include "fn_norm_dispatch.h"
#include "fn_optim_dispatch.h"
#include "fn_dropout_dispatch.h"
#include "fn_embedding_dispatch.h"
#undef FN_T
#undef FN_TS
#undef FN_DOUBLE
#undef FN_LSTM_IO

/* The tile of the active tier, for the drivers' task sizes: rows, and columns of a
 * float and a double panel. */
FN_UNUSED static inline int fn_tile_rows(void) { return 6; }
FN_UNUSED static inline int fn_panel_width(int is_double)
{
    const int vbytes = fn_tier() == FN_TIER_AVX512 ? 64 : (fn_tier() == FN_TIER_AVX2 ? 32 : 16);
    const int nv = fn_tier() == FN_TIER_AVX512 ? 4 : 2;
    return nv * vbytes / (is_double ? 8 : 4);
}

#endif
