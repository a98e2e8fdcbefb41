/* What every C kernel of fastnn shares: the CPU tiers and the one check of the
 * CPU's features, aligned allocation, and the task loop over OpenMP threads.
 *
 * A tier is an instruction set the kernels are compiled for (fn_kernels.h
 * instantiates each kernel source once per tier): FN_TIER_AVX512 (AVX-512
 * F/VL/DQ/BW + FMA), FN_TIER_AVX2 (AVX2 + FMA) and FN_TIER_GENERIC (no intrinsics:
 * 16-byte vectors the compiler maps to SSE2, NEON or plain code). The highest tier
 * the CPU and the compiler allow is active unless fn_set_tier chose a lower one
 * (FASTNN_ISA, through fastnn/_backends.py). Each extension module holds its own
 * copy of the setting; the Python layer sets them all together.
 */
#ifndef FASTNN_FN_BASE_H
#define FASTNN_FN_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(_WIN32)
#include <malloc.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FN_UNUSED __attribute__((unused))
#define FN_INLINE static inline __attribute__((always_inline))
#else
#define FN_UNUSED
#define FN_INLINE static inline
#endif

#define FN_TIER_GENERIC 0
#define FN_TIER_AVX2 1
#define FN_TIER_AVX512 2

/* The x86-64 tiers need a compiler that takes per-function target attributes and
 * vector extensions (GCC 8+, Clang 8+); the rest of a module keeps the baseline
 * instruction set, so it loads on any x86-64 CPU. */
#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8) || \
                            (defined(__clang__) && __clang_major__ >= 8))
#define FN_X86_TIERS 1
#else
#define FN_X86_TIERS 0
#endif

/* The highest tier this CPU and this build can run: the one check of the CPU's
 * features in fastnn. */
FN_UNUSED static int fn_cpu_tier(void)
{
#if FN_X86_TIERS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return FN_TIER_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FN_TIER_AVX2;
#endif
    return FN_TIER_GENERIC;
}

static int fn_tier_setting = -1;

/* The active tier: tier if the CPU has it, else the highest it has. Returns it. */
FN_UNUSED static int fn_set_tier(int tier)
{
    const int top = fn_cpu_tier();
    fn_tier_setting = tier < FN_TIER_GENERIC ? FN_TIER_GENERIC : (tier > top ? top : tier);
    return fn_tier_setting;
}

FN_UNUSED static inline int fn_tier(void)
{
    if (fn_tier_setting < 0)
        fn_tier_setting = fn_cpu_tier();
    return fn_tier_setting;
}

/* malloc and free for buffers that start on a 64-byte boundary (a cache line, one
 * AVX-512 vector): malloc's 16-byte alignment has vector loads of a packed operand
 * straddle two lines, which slows the matrix-vector steps that stream one. */
FN_UNUSED static inline void *fn_alloc(size_t bytes)
{
#if defined(_WIN32)
    return _aligned_malloc(bytes > 0 ? bytes : 1, 64);
#else
    void *p = NULL;
    return posix_memalign(&p, 64, bytes > 0 ? bytes : 1) == 0 ? p : NULL;
#endif
}

FN_UNUSED static inline void fn_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

FN_UNUSED static inline int fn_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

FN_UNUSED static inline int fn_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* for (task = 0; task < count; task++) BODY, over `threads` OpenMP threads when
 * above 1 (one thread enters no parallel region: a step may take a microsecond).
 * The static schedule gives every task to the same thread at every call. */
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

/* The geometry of an NHWC convolution (the caller's arguments, normalised). */
typedef struct {
    ptrdiff_t N, H, W, C;   /* input; C is the pixel stride of x */
    ptrdiff_t Ho, Wo;
    ptrdiff_t kh, kw, sh, sw, dh, dw;
    ptrdiff_t pt, pl;       /* top and left padding */
    ptrdiff_t Cg;           /* input channels per group (the length of a tap) */
} fn_conv_geom;

#endif
