/* exp, sigmoid and tanh as vector functions: the one copy of each in fastnn,
 * instantiated per tier and element type by fn_kernels.h (no include guard).
 *
 * exp(y) = 2^n e^r with n = round(y / ln 2) and |r| <= ln2 / 2 (ln 2 in two parts,
 * so r keeps its bits). n is rounded by adding 1.5 * 2^(mantissa bits), which
 * leaves n in the low bits of the sum; shifted into the exponent field it gives
 * 2^n with no float-to-integer conversion (the shift pushes the sum's own exponent
 * bits out). e^r: float, a degree-6 minimax polynomial (relative error 1.9e-9);
 * double, its Taylor polynomial of degree 12 (truncation 1.7e-16).
 *
 * sigmoid(x) = 1 / (1 + e^-x), x clamped where e^-x still fits (float +-88,
 * double +-708): sigmoid(-inf) is then the value at the clamp (6e-39, 3e-308)
 * and sigmoid(inf) is 1.
 *
 * tanh, float: a rational minimax fit x P(x^2) / Q(x^2) (degrees 4 and 4, all
 * coefficients positive, so Horner's rule adds no cancellation; relative error
 * 2.1e-8 on [0, 9]), x clamped to +-9.5 and the result to +-1 (past 9.01 tanh
 * rounds to +-1). double: (1 - e) / (1 + e) with e = e^(-2|x|), and below 0.125
 * the odd Taylor series to x^13, where 1 - e would cancel.
 *
 * Over every float, sigmoid is within 2.1e-7 and tanh within 3.3e-7 of the exact
 * value, relatively, with the AVX-512 reciprocal (tests/test_own_kernels.py
 * measures a sample on every tier); NaN propagates; tanh(+-inf) = +-1.
 */

FN_TARGET FN_INLINE FN_V FN(exp)(FN_V y)
{
#if FN_DOUBLE
    const FN_V shift = FN(bc)(6755399441055744.0);  /* 1.5 * 2^52 */
    const FN_V t = FN(fma)(y, FN(bc)(1.4426950408889634), shift), n = t - shift;
    const FN_V r = FN(fma)(n, FN(bc)(-1.90821492927058770002e-10), FN(fma)(n, FN(bc)(-6.93147180369123816490e-01), y));
    FN_V p = FN(bc)(1.0 / 479001600.0);
    p = FN(fma)(p, r, FN(bc)(1.0 / 39916800.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 3628800.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 362880.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 40320.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 5040.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 720.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 120.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 24.0));
    p = FN(fma)(p, r, FN(bc)(1.0 / 6.0));
    p = FN(fma)(p, r, FN(bc)(0.5));
    p = FN(fma)(p, r, FN(bc)(1.0));
    p = FN(fma)(p, r, FN(bc)(1.0));
    return p * (FN_V)(((FN_VB)t + 1023) << 52);
#else
    const FN_V shift = FN(bc)(12582912.0f);  /* 1.5 * 2^23 */
    const FN_V t = FN(fma)(y, FN(bc)(1.44269504088896341f), shift), n = t - shift;
    const FN_V r = FN(fma)(n, FN(bc)(2.12194440e-4f), FN(fma)(n, FN(bc)(-0.693359375f), y));
    FN_V p = FN(bc)(0.0013836845922111807f);
    p = FN(fma)(p, r, FN(bc)(0.008374815804204775f));
    p = FN(fma)(p, r, FN(bc)(0.04166822557075854f));
    p = FN(fma)(p, r, FN(bc)(0.16666420169851795f));
    p = FN(fma)(p, r, FN(bc)(0.4999999207981093f));
    p = FN(fma)(p, r, FN(bc)(1.0000000363231982f));
    p = FN(fma)(p, r, FN(bc)(1.0000000005541685f));
    return p * (FN_V)(((FN_VB)t + 127) << 23);
#endif
}

#if FN_DOUBLE
#define FN_EXP_LIMIT 708.0
#else
#define FN_EXP_LIMIT 88.0f
#endif

FN_TARGET FN_INLINE FN_V FN(sigmoid)(FN_V x)
{
    const FN_V e = FN(exp)(-FN(atmost)(FN(atleast)(x, -FN_EXP_LIMIT), FN_EXP_LIMIT));
    return FN(div)(FN(bc)(1), e + 1);
}

FN_TARGET FN_INLINE FN_V FN(tanh)(FN_V x)
{
#if FN_DOUBLE
    const FN_V a = FN(atmost)((FN_V)((FN_VB)x & 0x7FFFFFFFFFFFFFFFull), 19.5);  /* |x|, NaN kept */
    const FN_V e = FN(exp)(-2.0 * a), z = a * a;
    const FN_V sign = (FN_V)((FN_VB)x & 0x8000000000000000ull);
    FN_V s = FN(bc)(21844.0 / 6081075.0), big, small;
    s = FN(fma)(s, z, FN(bc)(-1382.0 / 155925.0));
    s = FN(fma)(s, z, FN(bc)(62.0 / 2835.0));
    s = FN(fma)(s, z, FN(bc)(-17.0 / 315.0));
    s = FN(fma)(s, z, FN(bc)(2.0 / 15.0));
    s = FN(fma)(s, z, FN(bc)(-1.0 / 3.0));
    small = FN(fma)(a * z, s, a);
    big = FN(div)(1.0 - e, 1.0 + e);
    return (FN_V)((FN_VB)FN(sel)(a < FN(bc)(0.125), small, big) | (FN_VB)sign);
#else
    const FN_V xc = FN(atmost)(FN(atleast)(x, -9.5f), 9.5f), y = xc * xc;
    FN_V p = FN(bc)(1.335455727327421e-08f), q = FN(bc)(7.776515006805797e-07f);
    p = FN(fma)(p, y, FN(bc)(2.0609005294865192e-05f));
    q = FN(fma)(q, y, FN(bc)(0.00032856271369997327f));
    p = FN(fma)(p, y, FN(bc)(0.0034955834317175164f));
    q = FN(fma)(q, y, FN(bc)(0.025876964363397995f));
    p = FN(fma)(p, y, FN(bc)(0.13381021696612522f));
    q = FN(fma)(q, y, FN(bc)(0.46714337291882696f));
    p = FN(fma)(p, y, FN(bc)(0.9999999794745632f));
    q = FN(fma)(q, y, FN(bc)(1.0f));
    return FN(atmost)(FN(atleast)(FN(div)(xc * p, q), -1.0f), 1.0f);
#endif
}
#undef FN_EXP_LIMIT

/* log and log1p as vector functions (the losses' log1p(e^-|x|)).
 *
 * log(x) = k ln 2 + log(m) with x = 2^k m, m in [sqrt(1/2), sqrt(2)): the exponent
 * and mantissa fields read with integer operations (a subnormal x scaled by 2^24,
 * double 2^54, first), k turned into a float by writing it into the mantissa of
 * 2^23 (2^52) and subtracting that, ln 2 in two parts. With f = m - 1: float,
 * log(1 + f) = f - f^2/2 + f^3 P(f), P of degree 8 (Cephes' logf, relative error
 * below 1e-7 on the interval); double, fdlibm's s = f / (2 + f) and
 * log(1 + f) = f - (f^2/2 - s (f^2/2 + R(s^2))), R of degree 7 (below 1 ulp).
 * log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN propagates.
 *
 * log1p(x) = log(u) - ((u - 1) - x) / u with u = 1 + x: the rounding of u undone to
 * first order (the second-order term is below an ulp); x itself where u rounds to 1
 * (tiny x, -0 kept), inf at inf, -inf at -1.
 */

FN_TARGET FN_INLINE FN_V FN(log)(FN_V x)
{
#if FN_DOUBLE
    const FN_VI sub = x < FN(bc)(2.2250738585072014e-308);  /* subnormal, 0, negative */
    FN_VB ix = (FN_VB)FN(sel)(sub, x * 18014398509481984.0, x) + (0x3FF0000000000000ull - 0x3FE6A09E667F3BCDull);
    const FN_V k = (FN_V)((ix >> 52) | 0x4330000000000000ull) - FN(bc)(4503599627370496.0 + 1023.0) -
                   (FN_V)((FN_VI)FN(bc)(54.0) & sub);
    const FN_V f = (FN_V)((ix & 0x000FFFFFFFFFFFFFull) + 0x3FE6A09E667F3BCDull) - 1.0;
    const FN_V s = FN(div)(f, f + 2.0), z = s * s, hfsq = 0.5 * f * f;
    FN_V R = FN(bc)(1.479819860511658591e-01), y;
    R = FN(fma)(R, z, FN(bc)(1.531383769920937332e-01));
    R = FN(fma)(R, z, FN(bc)(1.818357216161805012e-01));
    R = FN(fma)(R, z, FN(bc)(2.222219843214978396e-01));
    R = FN(fma)(R, z, FN(bc)(2.857142874366239149e-01));
    R = FN(fma)(R, z, FN(bc)(3.999999999940941908e-01));
    R = FN(fma)(R, z, FN(bc)(6.666666666666735130e-01));
    R = R * z;
    y = FN(fma)(k, FN(bc)(6.93147180369123816490e-01),
                -((hfsq - FN(fma)(s, hfsq + R, k * 1.90821492927058770002e-10)) - f));
    {
        const FN_V special = FN(sel)(x == FN(bc)(0.0), FN(bc)(-__builtin_inf()),
                                     FN(sel)(x < FN(bc)(0.0), FN(bc)(__builtin_nan("")), x));
        return FN(sel)((x > FN(bc)(0.0)) & (x < FN(bc)(__builtin_inf())), y, special);
    }
#else
    const FN_VI sub = x < FN(bc)(1.17549435e-38f);  /* subnormal, 0, negative */
    FN_VB ix = (FN_VB)FN(sel)(sub, x * 16777216.0f, x) + (0x3F800000u - 0x3F3504F3u);
    const FN_V k = (FN_V)((ix >> 23) | 0x4B000000u) - FN(bc)(8388608.0f + 127.0f) -
                   (FN_V)((FN_VI)FN(bc)(24.0f) & sub);
    const FN_V f = (FN_V)((ix & 0x007FFFFFu) + 0x3F3504F3u) - 1.0f, z = f * f;
    FN_V p = FN(bc)(7.0376836292e-2f), y;
    p = FN(fma)(p, f, FN(bc)(-1.1514610310e-1f));
    p = FN(fma)(p, f, FN(bc)(1.1676998740e-1f));
    p = FN(fma)(p, f, FN(bc)(-1.2420140846e-1f));
    p = FN(fma)(p, f, FN(bc)(1.4249322787e-1f));
    p = FN(fma)(p, f, FN(bc)(-1.6668057665e-1f));
    p = FN(fma)(p, f, FN(bc)(2.0000714765e-1f));
    p = FN(fma)(p, f, FN(bc)(-2.4999993993e-1f));
    p = FN(fma)(p, f, FN(bc)(3.3333331174e-1f));
    y = p * f * z;
    y = FN(fma)(k, FN(bc)(-2.12194440e-4f), y);
    y = FN(fma)(z, FN(bc)(-0.5f), y);
    y = FN(fma)(k, FN(bc)(0.693359375f), f + y);
    {
        const FN_V special = FN(sel)(x == FN(bc)(0.0f), FN(bc)(-__builtin_inff()),
                                     FN(sel)(x < FN(bc)(0.0f), FN(bc)(__builtin_nanf("")), x));
        return FN(sel)((x > FN(bc)(0.0f)) & (x < FN(bc)(__builtin_inff())), y, special);
    }
#endif
}

FN_TARGET FN_INLINE FN_V FN(log1p)(FN_V x)
{
    const FN_V u = x + 1, inf = FN(bc)((FN_T)__builtin_inf());
    const FN_VI inside = (u > FN(bc)(0)) & (u < inf);
    const FN_V c = FN(div)((u - 1) - x, FN(sel)(inside, u, FN(bc)(1)));
    const FN_V y = FN(log)(u) - FN(sel)(inside, c, FN(bc)(0));
    return FN(sel)(u == FN(bc)(1), x, FN(sel)(x == inf, inf, y));
}
