/* The vector primitives of one tier and element type, under the names the kernel
 * sources use (FN(name) = fn_name_<tier>_<type>). fn_kernels.h includes this file
 * once per instantiation, with FN_TIER_ID, FN_T, FN_DOUBLE, FN_VBYTES and FN()
 * defined; no include guard.
 *
 * The kernels are written once over GCC/Clang vector extensions (FN_V, FN_VL lanes)
 * and compile to AVX-512, AVX2 or 16-byte code by the target attribute alone; what
 * a tier has to say for itself is only what plain vector code cannot express:
 * loads and stores of a vector's first n lanes, a quotient from an approximate
 * reciprocal refined to full precision, min and max that keep NaN, non-temporal stores, and a VL x VL transpose in registers.
 */

typedef FN_T FN(v) __attribute__((vector_size(FN_VBYTES)));
/* the same vector at any address (one element's alignment), aliasing anything */
typedef FN_T FN(vu) __attribute__((vector_size(FN_VBYTES), aligned(sizeof(FN_T)), may_alias));
#if FN_DOUBLE
typedef int64_t FN(vi) __attribute__((vector_size(FN_VBYTES)));
typedef uint64_t FN(vb) __attribute__((vector_size(FN_VBYTES)));
#else
typedef int32_t FN(vi) __attribute__((vector_size(FN_VBYTES)));
typedef uint32_t FN(vb) __attribute__((vector_size(FN_VBYTES)));
#endif

#define FN_V FN(v)
#define FN_VI FN(vi)
#define FN_VB FN(vb)
#define FN_VL ((int)(FN_VBYTES / sizeof(FN_T)))

FN_TARGET FN_INLINE FN_V FN(ld)(const FN_T *p) { return *(const FN(vu) *)p; }
FN_TARGET FN_INLINE void FN(st)(FN_T *p, FN_V v) { *(FN(vu) *)p = v; }
/* every lane x (x - 0 is x for every x, -0 and NaN included, so it folds away) */
FN_TARGET FN_INLINE FN_V FN(bc)(FN_T x) { return x - (FN_V){0}; }
/* the sum of a vector's lanes, by halves (lanes l and l + w added, w = VL / 2, VL / 4,
 * .. 1): a fixed order on every tier, and a chain of log2(VL) additions, not VL - 1 */
FN_TARGET FN_INLINE FN_T FN(hsum)(FN_V v)
{
    FN_T t[FN_VL];
    int w, l;
    FN(st)(t, v);
#pragma GCC unroll 4
    for (w = FN_VL / 2; w >= 1; w /= 2)
#pragma GCC unroll 8
        for (l = 0; l < w; l++)
            t[l] += t[l + w];
    return t[0];
}
/* a where the mask lane is all ones, else b */
FN_TARGET FN_INLINE FN_V FN(sel)(FN_VI mask, FN_V a, FN_V b)
{
    return (FN_V)(((FN_VI)a & mask) | ((FN_VI)b & ~mask));
}
/* a * b + c, rounded once where the tier has a fused multiply-add. The kernels are
 * compiled with -ffp-contract=off and fuse only here: otherwise the compiler may
 * fuse one copy of an expression and not another (a loop body compiled once for the
 * threads and once for the calling thread alone), and the bits would depend on the
 * thread count. */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return _mm512_fmadd_pd(a, b, c); }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return _mm512_fmadd_ps(a, b, c); }
#elif FN_TIER_ID == FN_TIER_AVX2 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return _mm256_fmadd_pd(a, b, c); }
#elif FN_TIER_ID == FN_TIER_AVX2
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return _mm256_fmadd_ps(a, b, c); }
#elif defined(__aarch64__) && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return (FN_V)vfmaq_f64((float64x2_t)c, (float64x2_t)a, (float64x2_t)b); }
#elif defined(__aarch64__)
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return (FN_V)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b); }
#else
FN_TARGET FN_INLINE FN_V FN(fma)(FN_V a, FN_V b, FN_V c) { return a * b + c; }
#endif

/* max(x, lo) and min(x, hi) that keep a NaN x: x86's max and min return their
 * second operand when one is NaN */
#if FN_TIER_ID == FN_TIER_AVX512 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(atleast)(FN_V x, FN_T lo) { return _mm512_max_pd(FN(bc)(lo), x); }
FN_TARGET FN_INLINE FN_V FN(atmost)(FN_V x, FN_T hi) { return _mm512_min_pd(FN(bc)(hi), x); }
#elif FN_TIER_ID == FN_TIER_AVX512
FN_TARGET FN_INLINE FN_V FN(atleast)(FN_V x, FN_T lo) { return _mm512_max_ps(FN(bc)(lo), x); }
FN_TARGET FN_INLINE FN_V FN(atmost)(FN_V x, FN_T hi) { return _mm512_min_ps(FN(bc)(hi), x); }
#elif FN_TIER_ID == FN_TIER_AVX2 && FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(atleast)(FN_V x, FN_T lo) { return _mm256_max_pd(FN(bc)(lo), x); }
FN_TARGET FN_INLINE FN_V FN(atmost)(FN_V x, FN_T hi) { return _mm256_min_pd(FN(bc)(hi), x); }
#elif FN_TIER_ID == FN_TIER_AVX2
FN_TARGET FN_INLINE FN_V FN(atleast)(FN_V x, FN_T lo) { return _mm256_max_ps(FN(bc)(lo), x); }
FN_TARGET FN_INLINE FN_V FN(atmost)(FN_V x, FN_T hi) { return _mm256_min_ps(FN(bc)(hi), x); }
#else
FN_TARGET FN_INLINE FN_V FN(atleast)(FN_V x, FN_T lo) { return FN(sel)(x < FN(bc)(lo), FN(bc)(lo), x); }
FN_TARGET FN_INLINE FN_V FN(atmost)(FN_V x, FN_T hi) { return FN(sel)(x > FN(bc)(hi), FN(bc)(hi), x); }
#endif

#if FN_TIER_ID == FN_TIER_AVX512

#if FN_DOUBLE
#define FN_MASK(n) ((__mmask8)((n) >= 8 ? 0xFF : ((1u << (n)) - 1)))
FN_TARGET FN_INLINE FN_V FN(ldn)(const FN_T *p, int n) { return _mm512_maskz_loadu_pd(FN_MASK(n), p); }
FN_TARGET FN_INLINE void FN(stn)(FN_T *p, int n, FN_V v) { _mm512_mask_storeu_pd(p, FN_MASK(n), v); }
/* 14 bits, two Newton steps on the reciprocal (28, 56), one on the quotient */
FN_TARGET FN_INLINE FN_V FN(div)(FN_V a, FN_V d)
{
    FN_V r = _mm512_rcp14_pd(d), q;
    r = r * FN(fma)(-d, r, FN(bc)(2.0));
    r = r * FN(fma)(-d, r, FN(bc)(2.0));
    q = a * r;
    return FN(fma)(r, FN(fma)(-d, q, a), q);
}
FN_TARGET FN_INLINE void FN(stream)(FN_T *p, FN_V v) { _mm512_stream_pd(p, v); }
#else
#define FN_MASK(n) ((__mmask16)((n) >= 16 ? 0xFFFF : ((1u << (n)) - 1)))
FN_TARGET FN_INLINE FN_V FN(ldn)(const FN_T *p, int n) { return _mm512_maskz_loadu_ps(FN_MASK(n), p); }
FN_TARGET FN_INLINE void FN(stn)(FN_T *p, int n, FN_V v) { _mm512_mask_storeu_ps(p, FN_MASK(n), v); }
/* 14 bits, then one Newton step on the quotient */
FN_TARGET FN_INLINE FN_V FN(div)(FN_V a, FN_V d)
{
    const FN_V r = _mm512_rcp14_ps(d), q = a * r;
    return FN(fma)(r, FN(fma)(-d, q, a), q);
}
FN_TARGET FN_INLINE void FN(stream)(FN_T *p, FN_V v) { _mm512_stream_ps(p, v); }

/* d[k * ld + j] = s[j * ls + k] for k < cols and j < 16 (cols <= 16): a 16 x 16
 * transpose in registers (32-, 64- then 128-bit interleaves); source rows from
 * `rows` on read as zeros. */
#define FN_HAVE_TRANSPOSE 1
FN_TARGET static inline void FN(transpose)(const FN_T *s, ptrdiff_t ls, int rows, int cols, FN_T *d,
                                           ptrdiff_t ld)
{
    const __mmask16 cm = FN_MASK(cols);
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
#endif
#define FN_STREAM_ALIGN 64
FN_TARGET FN_INLINE void FN(sfence)(void) { _mm_sfence(); }

#elif FN_TIER_ID == FN_TIER_AVX2

/* lanes below n all ones: the mask of AVX2's masked loads and stores */
FN_TARGET FN_INLINE __m256i FN(mask)(int n)
{
#if FN_DOUBLE
    const FN_VI lane = {0, 1, 2, 3};
#else
    const FN_VI lane = {0, 1, 2, 3, 4, 5, 6, 7};
#endif
    return (__m256i)(lane < lane * 0 + n);
}
#if FN_DOUBLE
FN_TARGET FN_INLINE FN_V FN(ldn)(const FN_T *p, int n) { return _mm256_maskload_pd(p, FN(mask)(n)); }
FN_TARGET FN_INLINE void FN(stn)(FN_T *p, int n, FN_V v) { _mm256_maskstore_pd(p, FN(mask)(n), v); }
/* AVX2 has no double reciprocal estimate: divide */
FN_TARGET FN_INLINE FN_V FN(div)(FN_V a, FN_V d) { return a / d; }
FN_TARGET FN_INLINE void FN(stream)(FN_T *p, FN_V v) { _mm256_stream_pd(p, v); }
#else
FN_TARGET FN_INLINE FN_V FN(ldn)(const FN_T *p, int n) { return _mm256_maskload_ps(p, FN(mask)(n)); }
FN_TARGET FN_INLINE void FN(stn)(FN_T *p, int n, FN_V v) { _mm256_maskstore_ps(p, FN(mask)(n), v); }
/* 12 bits, then two Newton steps on the quotient (one leaves 1 / 1 at 1 - 2^-24) */
FN_TARGET FN_INLINE FN_V FN(div)(FN_V a, FN_V d)
{
    const FN_V r = _mm256_rcp_ps(d);
    FN_V q = a * r;
    q = FN(fma)(r, FN(fma)(-d, q, a), q);
    return FN(fma)(r, FN(fma)(-d, q, a), q);
}
FN_TARGET FN_INLINE void FN(stream)(FN_T *p, FN_V v) { _mm256_stream_ps(p, v); }

/* d[k * ld + j] = s[j * ls + k] for k < cols and j < 8 (cols <= 8): an 8 x 8
 * transpose in registers; source rows from `rows` on read as zeros. */
#define FN_HAVE_TRANSPOSE 1
FN_TARGET static inline void FN(transpose)(const FN_T *s, ptrdiff_t ls, int rows, int cols, FN_T *d,
                                           ptrdiff_t ld)
{
    const __m256i cm = FN(mask)(cols);
    __m256 r[8], t[8], u[8];
    int i;
    for (i = 0; i < 8; i++)
        r[i] = i < rows ? _mm256_maskload_ps(s + i * ls, cm) : _mm256_setzero_ps();
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* u[c] (c < 4) holds columns c and c + 4 of rows 0..3, u[4 + c] of rows 4..7 */
    for (i = 0; i < 4; i++) {
        if (i < cols) _mm256_storeu_ps(d + i * ld, _mm256_permute2f128_ps(u[i], u[4 + i], 0x20));
        if (4 + i < cols) _mm256_storeu_ps(d + (4 + i) * ld, _mm256_permute2f128_ps(u[i], u[4 + i], 0x31));
    }
}
#endif
#define FN_STREAM_ALIGN 32
FN_TARGET FN_INLINE void FN(sfence)(void) { _mm_sfence(); }

#else  /* generic: plain vector code, lane loops where a tier would mask */

FN_TARGET FN_INLINE FN_V FN(ldn)(const FN_T *p, int n)
{
    FN_V v = {0};
    int i;
    for (i = 0; i < n && i < FN_VL; i++)
        v[i] = p[i];
    return v;
}
FN_TARGET FN_INLINE void FN(stn)(FN_T *p, int n, FN_V v)
{
    int i;
    for (i = 0; i < n && i < FN_VL; i++)
        p[i] = v[i];
}
FN_TARGET FN_INLINE FN_V FN(div)(FN_V a, FN_V d) { return a / d; }
FN_TARGET FN_INLINE void FN(stream)(FN_T *p, FN_V v) { FN(st)(p, v); }
#define FN_STREAM_ALIGN 0
FN_TARGET FN_INLINE void FN(sfence)(void) {}

#endif

#ifndef FN_HAVE_TRANSPOSE
/* d[k * ld + j] = s[j * ls + k] for k < cols and j < FN_VL; source rows from `rows`
 * on read as zeros */
FN_TARGET static inline void FN(transpose)(const FN_T *s, ptrdiff_t ls, int rows, int cols, FN_T *d,
                                           ptrdiff_t ld)
{
    int j, k;
    for (k = 0; k < cols; k++)
        for (j = 0; j < FN_VL; j++)
            d[k * ld + j] = j < rows ? s[j * ls + k] : (FN_T)0;
}
#endif
#undef FN_HAVE_TRANSPOSE
