// Vectorised exp, sigmoid and tanh (internal header): for the recurrent cells (LSTM now; GRU, RNN), softmax and
// activations. They run over contiguous blocks (act_rows): AVX2 and AVX-512 float versions (Cephes-style exp, the
// same operations, so the 8- and 16-lane results agree to the bit), an AVX2 double version, and the scalar std::
// version (the fallback without AVX2). Measured in float32: sigmoid and tanh within 2e-7 relative.
#pragma once
#include <cmath>
#include <type_traits>

#include "parallel.h"  // i64
#include "simd.h"

namespace fastnn {
namespace vmath {

template <typename T> inline T sigmoid1(T a) { return T(1) / (T(1) + std::exp(-a)); }  // exp overflow -> 0, fine

// exp(x) for x clamped to [-87, 88]: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r (Cephes expf).
// x86 min/max return their second operand when one is NaN: x goes second, so a NaN stays NaN (not -87).
FASTNN_AVX2 inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(88.f), _mm256_max_ps(_mm256_set1_ps(-87.f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
FASTNN_AVX2 inline __m256 sigmoid8(__m256 a) {
    const __m256 one = _mm256_set1_ps(1.f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
}
// tanh: 1 - 2/(e^{2|a|}+1) with the sign put back; below 0.625 the Cephes odd polynomial (no cancellation near 0).
FASTNN_AVX2 inline __m256 tanh8(__m256 a) {
    const __m256 sign = _mm256_set1_ps(-0.f), one = _mm256_set1_ps(1.f);
    __m256 z = _mm256_andnot_ps(sign, a);
    __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(exp8(_mm256_add_ps(z, z)), one)));
    big = _mm256_or_ps(big, _mm256_and_ps(a, sign));
    __m256 s = _mm256_mul_ps(a, a);
    __m256 p = _mm256_set1_ps(-5.70498872745e-3f);
    p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-3.33332819422e-1f));
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, s), a, a);
    return _mm256_blendv_ps(big, small, _mm256_cmp_ps(z, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

// dst[j] = act(src[j] + bias[j]) (bias may be nullptr), j < n; dst may alias src.
enum class Act { sigmoid, tanh };
FASTNN_AVX2 inline void act_rows__avx2(Act act, float* dst, const float* src, const float* bias, i64 n) {
    i64 j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 a = _mm256_loadu_ps(src + j);
        if (bias) a = _mm256_add_ps(a, _mm256_loadu_ps(bias + j));
        _mm256_storeu_ps(dst + j, act == Act::sigmoid ? sigmoid8(a) : tanh8(a));
    }
    if (j < n) {  // the tail through a padded copy, so every element sees the same approximation
        float in[8] = {0}, out[8];
        for (i64 k = j; k < n; ++k) in[k - j] = src[k] + (bias ? bias[k] : 0.f);
        _mm256_storeu_ps(out, act == Act::sigmoid ? sigmoid8(_mm256_loadu_ps(in)) : tanh8(_mm256_loadu_ps(in)));
        for (i64 k = j; k < n; ++k) dst[k] = out[k - j];
    }
}

// Double precision, 4 lanes: Cephes exp (x = n ln2 + r, exp(r) = 1 + 2r P(r^2) / (Q(r^2) - r P(r^2)), about 1 ulp)
// and tanh (below 0.625 the odd rational x + x^3 P(x^2)/Q(x^2), else 1 - 2/(e^{2|x|}+1)), as scalar Cephes does.
// 2^n is built in the exponent bits: AVX2 has no double -> int64 conversion, so n goes through int32.
FASTNN_AVX2 inline __m256d exp4d(__m256d x) {
    x = _mm256_min_pd(_mm256_set1_pd(709.0), _mm256_max_pd(_mm256_set1_pd(-708.0), x));
    const __m256d n = _mm256_floor_pd(_mm256_fmadd_pd(x, _mm256_set1_pd(1.4426950408889634073599), _mm256_set1_pd(0.5)));
    x = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93145751953125E-1), x);
    x = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.42860682030941723212E-6), x);
    const __m256d xx = _mm256_mul_pd(x, x);
    __m256d p = _mm256_fmadd_pd(xx, _mm256_set1_pd(1.26177193074810590878E-4), _mm256_set1_pd(3.02994407707441961300E-2));
    p = _mm256_mul_pd(x, _mm256_fmadd_pd(p, xx, _mm256_set1_pd(9.99999999999999999910E-1)));
    __m256d q = _mm256_fmadd_pd(xx, _mm256_set1_pd(3.00198505138664455042E-6), _mm256_set1_pd(2.52448340349684104192E-3));
    q = _mm256_fmadd_pd(q, xx, _mm256_set1_pd(2.27265548208155028766E-1));
    q = _mm256_fmadd_pd(q, xx, _mm256_set1_pd(2.00000000000000000009E0));
    const __m256d e = _mm256_fmadd_pd(_mm256_set1_pd(2.0), _mm256_div_pd(p, _mm256_sub_pd(q, p)), _mm256_set1_pd(1.0));
    const __m256i k = _mm256_slli_epi64(
        _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)), 52);
    return _mm256_mul_pd(e, _mm256_castsi256_pd(k));
}
FASTNN_AVX2 inline __m256d sigmoid4d(__m256d a) {
    const __m256d one = _mm256_set1_pd(1.0);
    return _mm256_div_pd(one, _mm256_add_pd(one, exp4d(_mm256_sub_pd(_mm256_setzero_pd(), a))));
}
FASTNN_AVX2 inline __m256d tanh4d(__m256d a) {
    const __m256d sign = _mm256_set1_pd(-0.0), one = _mm256_set1_pd(1.0);
    const __m256d z = _mm256_andnot_pd(sign, a);
    __m256d big = _mm256_sub_pd(one, _mm256_div_pd(_mm256_set1_pd(2.0), _mm256_add_pd(exp4d(_mm256_add_pd(z, z)), one)));
    big = _mm256_or_pd(big, _mm256_and_pd(a, sign));
    const __m256d s = _mm256_mul_pd(a, a);
    __m256d p = _mm256_fmadd_pd(s, _mm256_set1_pd(-9.64399179425052238628E-1), _mm256_set1_pd(-9.92877231001918586564E1));
    p = _mm256_fmadd_pd(p, s, _mm256_set1_pd(-1.61468768441708447952E3));
    __m256d q = _mm256_add_pd(s, _mm256_set1_pd(1.12811678491632931402E2));
    q = _mm256_fmadd_pd(q, s, _mm256_set1_pd(2.23548839060100448583E3));
    q = _mm256_fmadd_pd(q, s, _mm256_set1_pd(4.84406305325125486048E3));
    const __m256d small = _mm256_fmadd_pd(_mm256_mul_pd(a, s), _mm256_div_pd(p, q), a);
    return _mm256_blendv_pd(big, small, _mm256_cmp_pd(z, _mm256_set1_pd(0.625), _CMP_LT_OQ));
}
FASTNN_AVX2 inline void act_rows__avx2(Act act, double* dst, const double* src, const double* bias, i64 n) {
    i64 j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d a = _mm256_loadu_pd(src + j);
        if (bias) a = _mm256_add_pd(a, _mm256_loadu_pd(bias + j));
        _mm256_storeu_pd(dst + j, act == Act::sigmoid ? sigmoid4d(a) : tanh4d(a));
    }
    if (j < n) {  // the tail through a padded copy, as in the float version
        double in[4] = {0}, out[4];
        for (i64 k = j; k < n; ++k) in[k - j] = src[k] + (bias ? bias[k] : 0.0);
        _mm256_storeu_pd(out, act == Act::sigmoid ? sigmoid4d(_mm256_loadu_pd(in)) : tanh4d(_mm256_loadu_pd(in)));
        for (i64 k = j; k < n; ++k) dst[k] = out[k - j];
    }
}

// The same three functions on 16 lanes, operation for operation: tanh16 and tanh8 agree to the bit, so the
// backward's recomputed tanh(c) is the forward's whichever width runs. AVX-512F has no float and/or/andnot: the
// sign goes through epi32.
FASTNN_AVX512 inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.f), _mm512_max_ps(_mm512_set1_ps(-87.f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}
FASTNN_AVX512 inline __m512 sigmoid16(__m512 a) {
    const __m512 one = _mm512_set1_ps(1.f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), a))));
}
FASTNN_AVX512 inline __m512 tanh16(__m512 a) {
    const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
    const __m512 one = _mm512_set1_ps(1.f);
    __m512 z = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(a)));
    __m512 big = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(exp16(_mm512_add_ps(z, z)), one)));
    big = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(big),
                                              _mm512_and_si512(_mm512_castps_si512(a), sign)));
    __m512 s = _mm512_mul_ps(a, a);
    __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-3.33332819422e-1f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, s), a, a);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(z, _mm512_set1_ps(0.625f), _CMP_LT_OQ), big, small);
}

// act_rows on 16 lanes, the tail masked: the same bits as act_rows__avx2 (the same operations) at twice the width.
// The cells call it once per row of H (rnn_cell B20 H100: the 8-lane tanh was 16% of the step).
FASTNN_AVX512 inline void act_rows__avx512(Act act, float* dst, const float* src, const float* bias, i64 n) {
    for (i64 j = 0; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(k, src + j);
        if (bias) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(k, bias + j));
        _mm512_mask_storeu_ps(dst + j, k, act == Act::sigmoid ? sigmoid16(a) : tanh16(a));
    }
}

template <typename T>
inline void act_rows(Act act, T* dst, const T* src, const T* bias, i64 n) {
    if constexpr (std::is_same<T, float>::value)
        if (packed::has_avx512f()) return act_rows__avx512(act, dst, src, bias, n);
    if (has_avx2_fma()) return act_rows__avx2(act, dst, src, bias, n);
    for (i64 j = 0; j < n; ++j) {
        T a = src[j] + (bias ? bias[j] : T(0));
        dst[j] = act == Act::sigmoid ? sigmoid1(a) : std::tanh(a);
    }
}

}  // namespace vmath
}  // namespace fastnn
