// activations.cpp: relu / sigmoid / tanh (forward and backward), softmax over the last axis, and the fused
// softmax and sigmoid cross-entropy losses. Everything here is memory-bound or close to it, so the plan is passes
// over memory:
//  - elementwise ops: one fused pass (read x, write y; the backwards read dy and y), no mask arrays.
//  - softmax rows: the row max (reads x from memory), exp(x - max) into y with the sum, y *= 1/sum; a row of the
//    books' largest case (V = 10000 floats, 40 KB) stays in L1/L2 between these, so memory sees one read of x and
//    one write of y. The cross-entropy forward takes its loss from the same row (log-sum-exp: log(sum) + max -
//    x[label]), the backward is one read of probs and one write of dx.
//  - threads: rows (or blocks of elements) through parallel_for, on the calling thread below kMinParallelWork.
//  - the losses are summed per row / per fixed block of elements in double, then in order: the loss does not
//    depend on the thread count.
// SIMD: float with AVX-512F runs hand-written loops over vmath.h's exp16/sigmoid16/tanh16 (tails masked) and a
// log16 below; everything else (AVX2/FMA float and double, scalar) runs vmath's AVX2 exp/sigmoid/tanh or plain
// loops compiled twice by FASTNN_SIMD_DISPATCH.
#include "activations.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "simd.h"
#include "vmath.h"

namespace fastnn {
namespace {

using namespace vmath;

template <typename T> constexpr bool kIsFloat = std::is_same<T, float>::value;

bool use_avx512() { return packed::has_avx512f(); }

// f(begin, end) over [0, n) elements: threads by parallel_work(n * cost), chunks of whole cache lines.
template <class F>
void for_elements(i64 n, double cost, F&& f) {
    const int nt = parallel_work(double(n) * cost);
    if (nt == 1) return f(i64(0), n);
    const i64 chunk = ((n + 4 * nt - 1) / (4 * nt) + 63) & ~i64(63);
    parallel_for(n, chunk, f, nt);
}

// f(begin, end) over [0, R) rows of V elements.
template <class F>
void for_rows(i64 R, i64 V, double cost, F&& f) {
    const int nt = parallel_work(double(R) * double(V) * cost);
    if (nt == 1) return f(i64(0), R);
    parallel_for(R, (R + 4 * nt - 1) / (4 * nt), f, nt);
}

// ------------------------------------------------------------------------------------------ AVX-512F, float

FASTNN_AVX512 inline __mmask16 tail16(i64 left) {
    return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}

// log(x) for finite x > 0 (Cephes logf: x = m 2^k with m in [sqrt(1/2), sqrt(2)), log(1+f) by a degree-9
// polynomial, k ln2 in two parts; about 1 ulp). getexp/getmant do the frexp.
FASTNN_AVX512 inline __m512 log16(__m512 x) {
    __m512 k = _mm512_getexp_ps(x);
    __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);  // [1, 2)
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356237f), _CMP_GT_OQ);
    m = _mm512_mask_mul_ps(m, big, m, _mm512_set1_ps(0.5f));
    k = _mm512_mask_add_ps(k, big, k, _mm512_set1_ps(1.f));
    const __m512 f = _mm512_sub_ps(m, _mm512_set1_ps(1.f));
    const __m512 z = _mm512_mul_ps(f, f);
    __m512 p = _mm512_set1_ps(7.0376836292E-2f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.1514610310E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.1676998740E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.2420140846E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.4249322787E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-1.6668057665E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.0000714765E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(-2.4999993993E-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(3.3333331174E-1f));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, f), z);
    y = _mm512_fmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), y);
    y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
    return _mm512_fmadd_ps(k, _mm512_set1_ps(0.693359375f), _mm512_add_ps(f, y));
}

// 1/d to ~2^-28 relative: rcp14 and one Newton step. vdivps zmm (throughput ~10 cycles) bounded vmath's
// sigmoid16/tanh16 (tanh over 803k floats: 429 us, np.tanh's SVML 284 us).
FASTNN_AVX512 inline __m512 recip16(__m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.f)), r);
}
// vmath's sigmoid16 with recip16 for the division (within 2 ulps, test_vmath_accuracy_in_ulps; not bit-equal
// to the LSTM's).
FASTNN_AVX512 inline __m512 sigmoid16r(__m512 a) {
    return recip16(_mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), a))));
}
// tanh(|a|) = E / (E + 2) with E = expm1(2|a|), sign put back. E = 2^n expm1(r) + (2^n - 1) with exp16's
// reduction (2|a| = n ln2 + r) and its polynomial (expm1(r) = r + r^2 P(r)): no cancellation near 0, so one
// formula for every |a| (vmath's tanh16 evaluates two branches and blends: 37 vs 25 instructions a vector).
// 2|a| is clamped to 40 (tanh is 1 in float long before; keeps 2^n finite); a NaN stays NaN.
FASTNN_AVX512 inline __m512 tanh16r(__m512 a) {
    const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
    const __m512 one = _mm512_set1_ps(1.f);
    const __m512 z = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(a)));
    const __m512 x = _mm512_min_ps(_mm512_set1_ps(40.f), _mm512_add_ps(z, z));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 q = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);                 // expm1(r)
    const __m512 t = _mm512_scalef_ps(one, n);                                   // 2^n
    const __m512 e = _mm512_fmadd_ps(q, t, _mm512_sub_ps(t, one));              // expm1(2|a|)
    const __m512 y = _mm512_mul_ps(e, recip16(_mm512_add_ps(e, _mm512_set1_ps(2.f))));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), _mm512_and_si512(_mm512_castps_si512(a), sign)));
}

FASTNN_AVX512 void act_fwd__avx512(Pointwise op, const float* x, float* y, i64 n) {
    i64 j = 0;
    if (op == Pointwise::sigmoid) {
        for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, sigmoid16r(_mm512_loadu_ps(x + j)));
    } else {
        for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, tanh16r(_mm512_loadu_ps(x + j)));
    }
    if (j < n) {
        const __mmask16 k = tail16(n - j);
        const __m512 a = _mm512_maskz_loadu_ps(k, x + j);
        _mm512_mask_storeu_ps(y + j, k, op == Pointwise::sigmoid ? sigmoid16r(a) : tanh16r(a));
    }
}

FASTNN_AVX512 float row_max__avx512(const float* x, i64 V) {
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512 m0 = ninf, m1 = ninf;
    i64 j = 0;
    for (; j + 32 <= V; j += 32) {
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(x + j));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(x + j + 16));
    }
    for (; j < V; j += 16) {
        const __mmask16 k = tail16(V - j);
        m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_maskz_loadu_ps(k, x + j));
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

// y = exp(x - m), returns the sum; then y *= 1/sum. (A NaN in x makes the sum NaN, so the whole row NaN.)
FASTNN_AVX512 float exp_sum_scale__avx512(const float* x, float* y, float m, i64 V) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    i64 j = 0;
    for (; j + 32 <= V; j += 32) {
        const __m512 e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm));
        const __m512 e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), vm));
        _mm512_storeu_ps(y + j, e0), _mm512_storeu_ps(y + j + 16, e1);
        s0 = _mm512_add_ps(s0, e0), s1 = _mm512_add_ps(s1, e1);
    }
    for (; j < V; j += 16) {
        const __mmask16 k = tail16(V - j);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vm));
        _mm512_mask_storeu_ps(y + j, k, e);
        s0 = _mm512_mask_add_ps(s0, k, s0, e);
    }
    const float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    const __m512 inv = _mm512_set1_ps(1.f / s);
    for (j = 0; j < V; j += 16) {
        const __mmask16 k = tail16(V - j);
        _mm512_mask_storeu_ps(y + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + j), inv));
    }
    return s;
}

// One softmax-backward row: dot = sum(dy * y) (four float accumulators: the generic loop's double sums ran the
// (700, 10000) backward at 7.2 ms, twice its memory time), then dx = y * (dy - dot).
FASTNN_AVX512 void softmax_bwd_row__avx512(const float* dy, const float* y, float* dx, i64 V) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    i64 j = 0;
    for (; j + 64 <= V; j += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + j), _mm512_loadu_ps(y + j), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + j + 16), _mm512_loadu_ps(y + j + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + j + 32), _mm512_loadu_ps(y + j + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(dy + j + 48), _mm512_loadu_ps(y + j + 48), s3);
    }
    for (; j < V; j += 16) {
        const __mmask16 k = tail16(V - j);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, dy + j), _mm512_maskz_loadu_ps(k, y + j), s0);
    }
    const __m512 d = _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3))));
    for (j = 0; j < V; j += 16) {
        const __mmask16 k = tail16(V - j);
        const __m512 yv = _mm512_maskz_loadu_ps(k, y + j);
        _mm512_mask_storeu_ps(dx + j, k, _mm512_mul_ps(yv, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dy + j), d)));
    }
}

// The sigmoid cross-entropy of n <= 16 elements: y written, returns the sum of the loss terms.
//   e = exp(-|x|), u = 1 + e: y = 1/u (x >= 0) or e/u, 1 - y = e/u or 1/u (no cancellation);
//   eps == 0: max(x, 0) - t x + log1p(e), log1p(e) = log(u) * e / (u - 1) (exact u - 1; e itself when u == 1);
//   eps > 0:  -(t log(y + eps) + (1 - t) log(1 - y + eps)).
// The k lanes of targets t as floats (labels converted in registers).
FASTNN_AVX512 inline __m512 load_t16(__mmask16 k, const float* t) { return _mm512_maskz_loadu_ps(k, t); }
FASTNN_AVX512 inline __m512 load_t16(__mmask16 k, const std::int32_t* t) {
    return _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, t));
}
FASTNN_AVX512 inline __m512 load_t16(__mmask16 k, const std::int64_t* t) {
    const __m256i lo = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64(__mmask8(k), t));
    const __m256i hi = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64(__mmask8(k >> 8), t + 8));
    return _mm512_cvtepi32_ps(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
}

template <typename L>
FASTNN_AVX512 float sigmoid_xent16__avx512(const float* x, const L* t, float* y, i64 n, float eps) {
    const __mmask16 k = tail16(n);
    const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
    const __m512 a = _mm512_maskz_loadu_ps(k, x), tv = load_t16(k, t);
    const __m512 z = _mm512_castsi512_ps(_mm512_andnot_si512(_mm512_set1_epi32(int(0x80000000u)),
                                                             _mm512_castps_si512(a)));
    const __m512 e = exp16(_mm512_sub_ps(zero, z));
    const __m512 u = _mm512_add_ps(one, e);
    const __m512 r = recip16(u), er = _mm512_mul_ps(e, r);
    const __mmask16 pos = _mm512_cmp_ps_mask(a, zero, _CMP_GE_OQ);
    const __m512 yv = _mm512_mask_blend_ps(pos, er, r), ym = _mm512_mask_blend_ps(pos, r, er);  // y, 1 - y
    _mm512_mask_storeu_ps(y, k, yv);
    __m512 term;
    if (eps == 0.f) {
        const __m512 um1 = _mm512_sub_ps(u, one);
        const __mmask16 exact = _mm512_cmp_ps_mask(um1, zero, _CMP_EQ_OQ);
        __m512 l1p = _mm512_mul_ps(_mm512_mul_ps(log16(u), e), recip16(_mm512_mask_blend_ps(exact, um1, one)));
        l1p = _mm512_mask_blend_ps(exact, l1p, e);
        term = _mm512_add_ps(_mm512_fnmadd_ps(tv, a, _mm512_max_ps(a, zero)), l1p);
    } else {
        const __m512 ve = _mm512_set1_ps(eps);
        const __m512 ly = log16(_mm512_add_ps(yv, ve)), lm = log16(_mm512_add_ps(ym, ve));
        term = _mm512_sub_ps(zero, _mm512_fmadd_ps(tv, ly, _mm512_mul_ps(_mm512_sub_ps(one, tv), lm)));
    }
    return _mm512_mask_reduce_add_ps(k, term);
}

// --------------------------------------------------------------------- generic loops (AVX2/FMA copy + baseline)

template <typename T> FASTNN_INLINE void relu_body(const T* x, T* y, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) y[j] = x[j] <= T(0) ? T(0) : x[j];  // NaN fails the test: stays NaN
}
template <typename T> FASTNN_INLINE void relu_bwd_body(const T* dy, const T* y, T* dx, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = y[j] > T(0) ? dy[j] : T(0);
}
template <typename T> FASTNN_INLINE void sigmoid_bwd_body(const T* dy, const T* y, T* dx, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = dy[j] * y[j] * (T(1) - y[j]);
}
template <typename T> FASTNN_INLINE void tanh_bwd_body(const T* dy, const T* y, T* dx, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = dy[j] * (T(1) - y[j] * y[j]);
}
template <typename T> FASTNN_INLINE void row_max_body(const T* x, i64 n, T& out) {
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (i64 j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
    out = m;
}
template <typename T> FASTNN_INLINE void row_sum_body(const T* x, i64 n, double& out) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (i64 j = 0; j < n; ++j) s += double(x[j]);
    out = s;
}
template <typename T> FASTNN_INLINE void scale_body(const T* x, T* y, T s, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) y[j] = x[j] * s;
}
// sum(dy * y) over a row (softmax backward), then dx = y * (dy - dot).
template <typename T> FASTNN_INLINE void dot_body(const T* a, const T* b, i64 n, double& out) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (i64 j = 0; j < n; ++j) s += double(a[j]) * double(b[j]);
    out = s;
}
template <typename T> FASTNN_INLINE void softmax_dx_body(const T* dy, const T* y, T* dx, T dot, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = y[j] * (dy[j] - dot);
}
// Dense-target loss of a row with eps = 0: sum t_j (c - x_j), c = max + log(sum) >= every x_j (terms >= 0; a t_j
// of 0 counts 0 even where x_j = -inf).
template <typename T> FASTNN_INLINE void dense_loss_body(const T* x, const T* t, double c, i64 n, double& out) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (i64 j = 0; j < n; ++j) s += t[j] != T(0) ? double(t[j]) * (c - double(x[j])) : 0.0;
    out = s;
}
template <typename T> FASTNN_INLINE void diff_scale_body(const T* p, const T* t, T* dx, T s, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = (p[j] - t[j]) * s;
}
template <typename T, typename L> FASTNN_INLINE void sig_xent_bwd_body(const T* y, const L* t, T* dx, T s, i64 n) {
#pragma omp simd
    for (i64 j = 0; j < n; ++j) dx[j] = (y[j] - T(t[j])) * s;
}
FASTNN_SIMD_DISPATCH(relu)
FASTNN_SIMD_DISPATCH(relu_bwd)
FASTNN_SIMD_DISPATCH(sigmoid_bwd)
FASTNN_SIMD_DISPATCH(tanh_bwd)
FASTNN_SIMD_DISPATCH(row_max)
FASTNN_SIMD_DISPATCH(row_sum)
FASTNN_SIMD_DISPATCH(scale)
FASTNN_SIMD_DISPATCH(dot)
FASTNN_SIMD_DISPATCH(softmax_dx)
FASTNN_SIMD_DISPATCH(dense_loss)
FASTNN_SIMD_DISPATCH(diff_scale)
FASTNN_SIMD_DISPATCH(sig_xent_bwd)

// y = exp(x - m) on AVX2 lanes (vmath's exp8 / exp4d; the tail through a padded copy, as act_rows does).
FASTNN_AVX2 void exp_shift__avx2(const float* x, float* y, float m, i64 n) {
    const __m256 vm = _mm256_set1_ps(m);
    i64 j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm)));
    if (j < n) {
        float in[8] = {0}, out[8];
        for (i64 k = j; k < n; ++k) in[k - j] = x[k];
        _mm256_storeu_ps(out, exp8(_mm256_sub_ps(_mm256_loadu_ps(in), vm)));
        for (i64 k = j; k < n; ++k) y[k] = out[k - j];
    }
}
FASTNN_AVX2 void exp_shift__avx2(const double* x, double* y, double m, i64 n) {
    const __m256d vm = _mm256_set1_pd(m);
    i64 j = 0;
    for (; j + 4 <= n; j += 4) _mm256_storeu_pd(y + j, exp4d(_mm256_sub_pd(_mm256_loadu_pd(x + j), vm)));
    if (j < n) {
        double in[4] = {0}, out[4];
        for (i64 k = j; k < n; ++k) in[k - j] = x[k];
        _mm256_storeu_pd(out, exp4d(_mm256_sub_pd(_mm256_loadu_pd(in), vm)));
        for (i64 k = j; k < n; ++k) y[k] = out[k - j];
    }
}
template <typename T> void exp_shift(const T* x, T* y, T m, i64 n) {
    if (has_avx2_fma()) return exp_shift__avx2(x, y, m, n);
    for (i64 j = 0; j < n; ++j) y[j] = std::exp(x[j] - m);
}

// One softmax row: probs into y; returns the row sum of exp(x - max) (in double) and the max.
template <typename T> double softmax_row(const T* x, T* y, i64 V, T& m) {
    if constexpr (kIsFloat<T>)
        if (use_avx512()) {
            m = row_max__avx512(x, V);
            return exp_sum_scale__avx512(x, y, m, V);
        }
    row_max(x, V, m);
    exp_shift(x, y, m, V);
    double s = 0;
    row_sum((const T*)y, V, s);
    scale((const T*)y, y, T(1 / s), V);
    return s;
}

// The first label outside [0, V) that is not `ignore` (-1 if none) and the number of counted rows.
template <typename L> i64 scan_labels(const L* labels, i64 R, i64 V, i64 ignore, i64* bad) {
    i64 counted = 0;
    *bad = -1;
    for (i64 r = 0; r < R; ++r) {
        const i64 t = i64(labels[r]);
        if (t == ignore) continue;
        if (t < 0 || t >= V) {
            *bad = r;
            return 0;
        }
        ++counted;
    }
    return counted;
}

double sum_in_order(const std::vector<double>& v) {
    double s = 0;
    for (double a : v) s += a;
    return s;
}

constexpr i64 kLossBlock = 4096;  // sigmoid cross-entropy: elements per partial loss sum (fixed: thread-independent)

}  // namespace

// ------------------------------------------------------------------------------------------------ elementwise

template <typename T> void act_forward(Pointwise op, const T* x, T* y, i64 n) {
    const double cost = op == Pointwise::relu ? 2.0 : 8.0;   // sigmoid/tanh: an exp and a division per element
    for_elements(n, cost, [&](i64 b, i64 e) {
        if (op == Pointwise::relu) return relu(x + b, y + b, e - b);
        if constexpr (kIsFloat<T>)
            if (use_avx512()) return act_fwd__avx512(op, x + b, y + b, e - b);
        act_rows(op == Pointwise::sigmoid ? Act::sigmoid : Act::tanh, y + b, x + b, (const T*)nullptr, e - b);
    });
}

template <typename T> void act_backward(Pointwise op, const T* dy, const T* y, T* dx, i64 n) {
    for_elements(n, 3.0, [&](i64 b, i64 e) {
        if (op == Pointwise::relu) relu_bwd(dy + b, y + b, dx + b, e - b);
        else if (op == Pointwise::sigmoid) sigmoid_bwd(dy + b, y + b, dx + b, e - b);
        else tanh_bwd(dy + b, y + b, dx + b, e - b);
    });
}

// ---------------------------------------------------------------------------------------------------- softmax

template <typename T> void softmax_fwd(const T* x, T* y, i64 R, i64 V) {
    for_rows(R, V, 4.0, [&](i64 b, i64 e) {
        T m;
        for (i64 r = b; r < e; ++r) softmax_row(x + r * V, y + r * V, V, m);
    });
}

template <typename T> void softmax_bwd(const T* dy, const T* y, T* dx, i64 R, i64 V) {
    for_rows(R, V, 3.0, [&](i64 b, i64 e) {
        for (i64 r = b; r < e; ++r) {
            if constexpr (kIsFloat<T>)
                if (use_avx512()) {
                    softmax_bwd_row__avx512(dy + r * V, y + r * V, dx + r * V, V);
                    continue;
                }
            double d = 0;
            dot(dy + r * V, y + r * V, V, d);
            softmax_dx(dy + r * V, y + r * V, dx + r * V, T(d), V);
        }
    });
}

// -------------------------------------------------------------------------------------- softmax cross-entropy

template <typename T, typename L>
double softmax_xent_fwd(const T* x, const L* labels, T* probs, i64 R, i64 V, i64 ignore, double eps, i64* bad) {
    const i64 counted = scan_labels(labels, R, V, ignore, bad);
    if (*bad >= 0) return 0;
    std::vector<double> row_loss(R);
    for_rows(R, V, 4.0, [&](i64 b, i64 e) {
        for (i64 r = b; r < e; ++r) {
            T m;
            const double s = softmax_row(x + r * V, probs + r * V, V, m);
            const i64 t = i64(labels[r]);
            if (t == ignore) row_loss[r] = 0;
            else if (eps == 0) row_loss[r] = std::log(s) + double(m) - double(x[r * V + t]);  // -log softmax
            else row_loss[r] = -std::log(double(probs[r * V + t]) + eps);
        }
    });
    return counted ? sum_in_order(row_loss) / double(counted) : 0.0;
}

template <typename T, typename L>
void softmax_xent_bwd(const T* probs, const L* labels, T* dx, i64 R, i64 V, double dloss, i64 ignore, i64* bad) {
    const i64 counted = scan_labels(labels, R, V, ignore, bad);
    if (*bad >= 0) return;
    const T s = T(counted ? dloss / double(counted) : 0.0);
    for_rows(R, V, 2.0, [&](i64 b, i64 e) {
        for (i64 r = b; r < e; ++r) {
            const i64 t = i64(labels[r]);
            T* d = dx + r * V;
            if (t == ignore) {
                std::memset(d, 0, sizeof(T) * size_t(V));
                continue;
            }
            scale(probs + r * V, d, s, V);
            d[t] = (probs[r * V + t] - T(1)) * s;
        }
    });
}

template <typename T> double softmax_xent_dense_fwd(const T* x, const T* t, T* probs, i64 R, i64 V, double eps) {
    std::vector<double> row_loss(R);
    for_rows(R, V, 5.0, [&](i64 b, i64 e) {
        for (i64 r = b; r < e; ++r) {
            T m;
            const double s = softmax_row(x + r * V, probs + r * V, V, m);
            const T *tr = t + r * V, *p = probs + r * V;
            double acc = 0;
            if (eps == 0) {
                dense_loss(x + r * V, tr, std::log(s) + double(m), V, acc);
            } else {
                for (i64 j = 0; j < V; ++j)   // a log only where t is nonzero (once per row for one-hot targets)
                    if (tr[j] != T(0)) acc -= double(tr[j]) * std::log(double(p[j]) + eps);
            }
            row_loss[r] = acc;
        }
    });
    return sum_in_order(row_loss) / double(R);
}

template <typename T> void softmax_xent_dense_bwd(const T* probs, const T* t, T* dx, i64 R, i64 V, double dloss) {
    const T s = T(dloss / double(R));
    for_rows(R, V, 3.0, [&](i64 b, i64 e) {
        diff_scale(probs + b * V, t + b * V, dx + b * V, s, (e - b) * V);
    });
}

// -------------------------------------------------------------------------------------- sigmoid cross-entropy

template <typename T, typename L> double sigmoid_xent_fwd(const T* x, const L* t, T* y, i64 n, double eps) {
    const i64 blocks = (n + kLossBlock - 1) / kLossBlock;
    std::vector<double> part(blocks);
    const int nt = parallel_work(double(n) * 12.0);
    parallel_for(blocks, nt == 1 ? blocks : (blocks + 2 * nt - 1) / (2 * nt), [&](i64 b0, i64 b1) {
        for (i64 blk = b0; blk < b1; ++blk) {
            const i64 j0 = blk * kLossBlock, j1 = std::min(n, j0 + kLossBlock);
            double acc = 0;
            if constexpr (kIsFloat<T>) {
                if (use_avx512()) {
                    for (i64 j = j0; j < j1; j += 16)
                        acc += sigmoid_xent16__avx512(x + j, t + j, y + j, std::min<i64>(16, j1 - j), float(eps));
                    part[blk] = acc;
                    continue;
                }
            }
            for (i64 j = j0; j < j1; ++j) {   // double precision, the same formulas as the AVX-512 loop
                const double a = double(x[j]), tj = double(t[j]);
                const double e = std::exp(-std::fabs(a)), r = 1 / (1 + e);
                const double yv = a >= 0 ? r : e * r, ym = a >= 0 ? e * r : r;
                y[j] = T(yv);
                acc += eps == 0 ? std::max(a, 0.0) - tj * a + std::log1p(e)
                                : -(tj * std::log(yv + eps) + (1 - tj) * std::log(ym + eps));
            }
            part[blk] = acc;
        }
    }, nt);
    return sum_in_order(part) / double(n);
}

template <typename T, typename L> void sigmoid_xent_bwd(const T* y, const L* t, T* dx, i64 n, double dloss) {
    const T s = T(dloss / double(n));
    for_elements(n, 3.0, [&](i64 b, i64 e) { sig_xent_bwd(y + b, t + b, dx + b, s, e - b); });
}

// ------------------------------------------------------------------------------------------ instantiations

#define FASTNN_ACT_T(T)                                                                                      \
    template void act_forward<T>(Pointwise, const T*, T*, i64);                                              \
    template void act_backward<T>(Pointwise, const T*, const T*, T*, i64);                                   \
    template void softmax_fwd<T>(const T*, T*, i64, i64);                                                    \
    template void softmax_bwd<T>(const T*, const T*, T*, i64, i64);                                          \
    template double softmax_xent_dense_fwd<T>(const T*, const T*, T*, i64, i64, double);                     \
    template void softmax_xent_dense_bwd<T>(const T*, const T*, T*, i64, i64, double);                       \
    FASTNN_ACT_TL(T, std::int32_t)                                                                           \
    FASTNN_ACT_TL(T, std::int64_t)                                                                           \
    template double sigmoid_xent_fwd<T, T>(const T*, const T*, T*, i64, double);                             \
    template void sigmoid_xent_bwd<T, T>(const T*, const T*, T*, i64, double);
#define FASTNN_ACT_TL(T, L)                                                                                  \
    template double softmax_xent_fwd<T, L>(const T*, const L*, T*, i64, i64, i64, double, i64*);             \
    template void softmax_xent_bwd<T, L>(const T*, const L*, T*, i64, i64, double, i64, i64*);               \
    template double sigmoid_xent_fwd<T, L>(const T*, const L*, T*, i64, double);                             \
    template void sigmoid_xent_bwd<T, L>(const T*, const L*, T*, i64, double);
FASTNN_ACT_T(float)
FASTNN_ACT_T(double)

}  // namespace fastnn
