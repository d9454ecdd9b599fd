// batch_norm.cpp: x viewed as (N, C, L). Memory-bound, so the plan is about passes over memory:
//  - forward (training): per channel, one pass for the statistics (sums of x - shift, shift = the channel's first
//    element, accumulated in double: no cancellation worth the name) then one pass y = (x - mean)*scale + beta.
//    A thread owns a whole channel when there are enough channels, so the second pass reads the channel's slab
//    from its L2/L3 instead of memory. With few channels, the rows of a channel are split over threads instead.
//    Outputs too big for the caches are written with non-temporal stores (no read-for-ownership).
//  - backward: per channel, one pass for sum(dy) and sum(dy*(x-mean)) (double), one pass for dx.
//  - L small (2-D input): the channel path would stride through memory, so the "row" path accumulates per column
//    of the (N, C*L) matrix instead, contiguous and vectorised.
// The loop bodies are written once (always_inline) and compiled twice: an AVX2/FMA copy chosen at run time by
// has_avx2_fma() and the baseline copy; `omp simd reduction` lets the compiler vectorise the double sums without
// fast-math.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <cmath>
#include <limits>
#include <vector>

#include "fastnn.h"
#include "simd.h"

namespace fastnn {
namespace {


// ------------------------------------------------------------------------------------------- loop bodies (T x L)
// s1 += sum(x - shift), s2 += sum((x - shift)^2) over n in [n0, n1) of one channel (rows of L, stride C*L).
template <typename T>
FASTNN_INLINE void stats_rows_body(const T* x, i64 stride, i64 n0, i64 n1, i64 L, double shift, double& s1, double& s2) {
    for (i64 n = n0; n < n1; ++n) {
        const T* p = x + n * stride;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (i64 i = 0; i < L; ++i) {
            double d = double(p[i]) - shift;
            a += d;
            b += d * d;
        }
        s1 += a, s2 += b;
    }
}

// y = (x - mean)*scale + beta over rows [n0, n1) of one channel.
template <typename T>
FASTNN_INLINE void norm_rows_body(const T* x, T* y, i64 stride, i64 n0, i64 n1, i64 L, T mean, T scale, T beta) {
    for (i64 n = n0; n < n1; ++n) {
        const T* p = x + n * stride;
        T* q = y + n * stride;
#pragma omp simd
        for (i64 i = 0; i < L; ++i) q[i] = (p[i] - mean) * scale + beta;
    }
}

// s1 += sum(dy), s2 += sum(dy*(x - mean)).
template <typename T>
FASTNN_INLINE void dstats_rows_body(const T* dy, const T* x, i64 stride, i64 n0, i64 n1, i64 L, double mean, double& s1,
                    double& s2) {
    for (i64 n = n0; n < n1; ++n) {
        const T *g = dy + n * stride, *p = x + n * stride;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (i64 i = 0; i < L; ++i) {
            double d = double(g[i]);
            a += d;
            b += d * (double(p[i]) - mean);
        }
        s1 += a, s2 += b;
    }
}

// dx = a*dy + b*(x - mean) + d.
template <typename T>
FASTNN_INLINE void dx_rows_body(const T* dy, const T* x, T* dx, i64 stride, i64 n0, i64 n1, i64 L, T mean, T a, T b, T d) {
    for (i64 n = n0; n < n1; ++n) {
        const T *g = dy + n * stride, *p = x + n * stride;
        T* q = dx + n * stride;
#pragma omp simd
        for (i64 i = 0; i < L; ++i) q[i] = a * g[i] + b * (p[i] - mean) + d;
    }
}

// Row path, columns [j0, j1) of the (N, CL) matrix; cshift/cmean etc. are per column.
template <typename T>
// Four rows per sweep: a quarter of the loads/stores of the accumulator arrays.
FASTNN_INLINE void col_stats_body(const T* x, i64 N, i64 CL, i64 j0, i64 j1, const double* shift, double* s1, double* s2) {
    i64 n = 0;
    for (; n + 4 <= N; n += 4) {
        const T* p = x + n * CL;
#pragma omp simd
        for (i64 j = j0; j < j1; ++j) {
            double d0 = double(p[j]) - shift[j], d1 = double(p[j + CL]) - shift[j];
            double d2 = double(p[j + 2 * CL]) - shift[j], d3 = double(p[j + 3 * CL]) - shift[j];
            s1[j] += (d0 + d1) + (d2 + d3);
            s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
    }
    for (; n < N; ++n) {
        const T* p = x + n * CL;
#pragma omp simd
        for (i64 j = j0; j < j1; ++j) {
            double d = double(p[j]) - shift[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
}
template <typename T>
FASTNN_INLINE void col_norm_body(const T* x, T* y, i64 CL, i64 n0, i64 n1, const T* mean, const T* scale, const T* beta) {
    for (i64 n = n0; n < n1; ++n) {
#pragma omp simd
        for (i64 j = 0; j < CL; ++j) y[n * CL + j] = (x[n * CL + j] - mean[j]) * scale[j] + beta[j];
    }
}
template <typename T>
FASTNN_INLINE void col_dstats_body(const T* dy, const T* x, i64 N, i64 CL, i64 j0, i64 j1, const T* mean, double* s1,
                        double* s2) {
    i64 n = 0;
    for (; n + 4 <= N; n += 4) {
        const T *g = dy + n * CL, *p = x + n * CL;
#pragma omp simd
        for (i64 j = j0; j < j1; ++j) {
            double m = double(mean[j]);
            double g0 = double(g[j]), g1 = double(g[j + CL]), g2 = double(g[j + 2 * CL]), g3 = double(g[j + 3 * CL]);
            s1[j] += (g0 + g1) + (g2 + g3);
            s2[j] += (g0 * (double(p[j]) - m) + g1 * (double(p[j + CL]) - m)) +
                     (g2 * (double(p[j + 2 * CL]) - m) + g3 * (double(p[j + 3 * CL]) - m));
        }
    }
    for (; n < N; ++n) {
        const T *g = dy + n * CL, *p = x + n * CL;
#pragma omp simd
        for (i64 j = j0; j < j1; ++j) {
            s1[j] += double(g[j]);
            s2[j] += double(g[j]) * (double(p[j]) - double(mean[j]));
        }
    }
}
template <typename T>
FASTNN_INLINE void col_dx_body(const T* dy, const T* x, T* dx, i64 CL, i64 n0, i64 n1, const T* mean, const T* a, const T* b,
                    const T* d) {
    for (i64 n = n0; n < n1; ++n) {
        const T *g = dy + n * CL, *p = x + n * CL;
        T* q = dx + n * CL;
#pragma omp simd
        for (i64 j = 0; j < CL; ++j) q[j] = a[j] * g[j] + b[j] * (p[j] - mean[j]) + d[j];
    }
}

FASTNN_SIMD_DISPATCH(stats_rows)
FASTNN_SIMD_DISPATCH(norm_rows)
FASTNN_SIMD_DISPATCH(dstats_rows)
FASTNN_SIMD_DISPATCH(dx_rows)
FASTNN_SIMD_DISPATCH(col_stats)
FASTNN_SIMD_DISPATCH(col_norm)
FASTNN_SIMD_DISPATCH(col_dstats)
FASTNN_SIMD_DISPATCH(col_dx)

// ------------------------------------------------------------------------------------------------- the plans
constexpr i64 kRowPathMaxL = 32;  // below this a channel row is too short to stream: use the column layout

// A task per channel whenever there are enough channels to balance the threads: one parallel loop, no
// synchronisation, and the channel's slab is still in that core's L2 for the second pass (1-2 MB L2 on current
// x86 parts; (32,64,56,56) float is 400 KB per channel). With few channels every channel is split into parts:
// one parallel loop sums the parts, one writes them (two fork/joins in all, not a barrier per channel).
bool thread_per_channel(i64 C) { return C >= 4 * get_num_threads(); }
// Outputs bigger than this go around the caches (non-temporal stores): they cannot stay cached anyway, and the
// store then costs no read-for-ownership.
constexpr i64 kStreamMinBytes = 16 << 20;

// f(n, l0, l1) for the row segments of the flat range [a, b) of a channel's N*L elements.
template <typename F>
inline void for_segments(i64 a, i64 b, i64 L, F&& f) {
    while (a < b) {
        i64 n = a / L, l0 = a % L, l1 = std::min(L, l0 + (b - a));
        f(n, l0, l1);
        a += l1 - l0;
    }
}

// Non-temporal variants of the elementwise passes (float, AVX2): y = (x - mean)*scale + beta, dx = a*dy + b*(x-mean) + d.
FASTNN_AVX2 void norm_row_stream__avx2(const float* x, float* y, i64 L, float mean, float scale, float beta) {
    i64 i = 0;
    for (; i < L && (reinterpret_cast<uintptr_t>(y + i) & 31); ++i) y[i] = (x[i] - mean) * scale + beta;
    const __m256 m = _mm256_set1_ps(mean), sc = _mm256_set1_ps(scale), b = _mm256_set1_ps(beta);
    for (; i + 8 <= L; i += 8)
        _mm256_stream_ps(y + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), sc, b));
    for (; i < L; ++i) y[i] = (x[i] - mean) * scale + beta;
}
FASTNN_AVX2 void dx_row_stream__avx2(const float* dy, const float* x, float* dx, i64 L, float mean, float a, float b,
                              float d) {
    i64 i = 0;
    for (; i < L && (reinterpret_cast<uintptr_t>(dx + i) & 31); ++i) dx[i] = a * dy[i] + b * (x[i] - mean) + d;
    const __m256 m = _mm256_set1_ps(mean), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vd = _mm256_set1_ps(d);
    for (; i + 8 <= L; i += 8) {
        __m256 t = _mm256_fmadd_ps(vb, _mm256_sub_ps(_mm256_loadu_ps(x + i), m), vd);
        _mm256_stream_ps(dx + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(dy + i), t));
    }
    for (; i < L; ++i) dx[i] = a * dy[i] + b * (x[i] - mean) + d;
}

// Both statistics passes of float channels: s1 += sum(u - um), s2 += sum((u - um)*(v - vm)); the forward takes
// u = v = x, um = vm = shift, the backward u = dy, um = 0, v = x, vm = mean. The double-per-element loop of the
// bodies above was bound by its two accumulators' add latency (~50 GB/s from L3 for x and dy together). Here
// each block of up to 256 elements is summed in float, in four independent accumulators per sum (a lane adds at
// most 8 values: relative error ~1e-6), and the block sums are added in double.
FASTNN_AVX2 void sums_row__avx2(const float* u, const float* v, i64 L, float um, float vm, double& s1, double& s2) {
    const __m256 mu = _mm256_set1_ps(um), mv = _mm256_set1_ps(vm);
    __m256d t1 = _mm256_setzero_pd(), t2 = _mm256_setzero_pd();
    i64 i = 0;
    while (i + 32 <= L) {
        const i64 e = i + std::min<i64>(256, (L - i) / 32 * 32);
        __m256 a[4], b[4];
        for (int k = 0; k < 4; ++k) a[k] = b[k] = _mm256_setzero_ps();
        for (; i < e; i += 32)
            for (int k = 0; k < 4; ++k) {
                const __m256 du = _mm256_sub_ps(_mm256_loadu_ps(u + i + 8 * k), mu);
                a[k] = _mm256_add_ps(a[k], du);
                b[k] = _mm256_fmadd_ps(du, _mm256_sub_ps(_mm256_loadu_ps(v + i + 8 * k), mv), b[k]);
            }
        const __m256 sa = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        const __m256 sb = _mm256_add_ps(_mm256_add_ps(b[0], b[1]), _mm256_add_ps(b[2], b[3]));
        t1 = _mm256_add_pd(t1, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(sa)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(sa, 1))));
        t2 = _mm256_add_pd(t2, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(sb)),
                                             _mm256_cvtps_pd(_mm256_extractf128_ps(sb, 1))));
    }
    alignas(32) double h1[4], h2[4];
    _mm256_store_pd(h1, t1), _mm256_store_pd(h2, t2);
    double a = (h1[0] + h1[1]) + (h1[2] + h1[3]), b = (h2[0] + h2[1]) + (h2[2] + h2[3]);
    for (; i < L; ++i) {
        const double du = double(u[i]) - double(um);
        a += du, b += du * (double(v[i]) - double(vm));
    }
    s1 += a, s2 += b;
}

// Per-channel scalars of the forward from the shifted sums.
struct Stats { double mean, var, invstd; };
inline Stats stats_of(double shift, double s1, double s2, i64 M, double eps) {
    double m1 = s1 / double(M), var = std::max(s2 / double(M) - m1 * m1, 0.0);
    return {shift + m1, var, 1.0 / std::sqrt(var + eps)};
}

// Writes mean/invstd and updates the running stats (unbiased variance) of channel c.
template <typename T>
void store_stats(i64 c, const Stats& st, i64 M, T* mean, T* invstd, T* rmean, T* rvar, double momentum) {
    mean[c] = T(st.mean), invstd[c] = T(st.invstd);
    if (rmean) rmean[c] = T((1 - momentum) * double(rmean[c]) + momentum * st.mean);
    if (rvar) rvar[c] = T((1 - momentum) * double(rvar[c]) + momentum * (M > 1 ? st.var * M / (M - 1) : st.var));
}

// Backward coefficients: dx = a*dy + b*(x - mean) + d (training), a*dy (inference).
struct DxCoef { double a, b, d; };
inline DxCoef dx_coef(double gamma, double invstd, double dgamma, double dbeta, i64 M, bool training) {
    double a = gamma * invstd;
    if (!training) return {a, 0.0, 0.0};
    return {a, -a * invstd * dgamma / double(M), -a * dbeta / double(M)};
}

// The channel path of both directions: pass 1 sums two quantities over the channel, `finish` turns the totals
// into per-channel coefficients (run once per channel, by one thread), pass 2 writes the output.
//   sums(c, n, l0, l1, s1, s2)  and  write(c, coef, n, l0, l1)
template <typename Coef, typename Sums, typename Finish, typename Write>
void two_pass_channels(i64 N, i64 C, i64 L, bool own_channels, Sums&& sums, Finish&& finish, Write&& write) {
    const i64 M = N * L;
    if (own_channels) {
        parallel_tasks(C, [&](i64 c) {
            double s1 = 0, s2 = 0;
            for (i64 n = 0; n < N; ++n) sums(c, n, i64(0), L, s1, s2);
            Coef k = finish(c, s1, s2);
            for (i64 n = 0; n < N; ++n) write(c, k, n, i64(0), L);
        }, parallel_work(3.0 * M * C));
        return;
    }
    // Parts of a fixed size split at fixed places: the totals, added in part order, do not depend on the threads.
    const int nt = parallel_work(3.0 * M * C);
    const i64 parts = std::max<i64>(1, std::min<i64>(4 * nt, M / 4096));
    std::vector<double> part(2 * C * parts);  // [channel][part][s1, s2]
    parallel_tasks(C * parts, [&](i64 t) {
        const i64 c = t / parts, p = t % parts;
        double s1 = 0, s2 = 0;
        for_segments(M * p / parts, M * (p + 1) / parts, L, [&](i64 n, i64 l0, i64 l1) { sums(c, n, l0, l1, s1, s2); });
        part[2 * t] = s1, part[2 * t + 1] = s2;
    }, nt);
    std::vector<Coef> coef;
    coef.reserve(C);
    for (i64 c = 0; c < C; ++c) {
        double t1 = 0, t2 = 0;
        for (i64 p = 0; p < parts; ++p) t1 += part[2 * (c * parts + p)], t2 += part[2 * (c * parts + p) + 1];
        coef.push_back(finish(c, t1, t2));
    }
    parallel_tasks(C * parts, [&](i64 t) {
        const i64 c = t / parts, p = t % parts;
        for_segments(M * p / parts, M * (p + 1) / parts, L, [&](i64 n, i64 l0, i64 l1) { write(c, coef[c], n, l0, l1); });
    }, nt);
}

template <typename T>
void fwd_channels(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* invstd, T* rmean, T* rvar, i64 N,
                  i64 C, i64 L, bool training, double momentum, double eps) {
    const i64 M = N * L, stride = C * L;
    const bool stream = std::is_same<T, float>::value && has_avx2_fma() && N * C * L * i64(sizeof(T)) >= kStreamMinBytes;
    struct Norm { T mean, scale, beta; };
    auto coef = [&](i64 c, T mu, T is) { return Norm{mu, is * (gamma ? gamma[c] : T(1)), beta ? beta[c] : T(0)}; };
    auto write = [&](i64 c, const Norm& k, i64 n, i64 l0, i64 l1) {
        const T* p = x + n * stride + c * L + l0;
        T* q = y + n * stride + c * L + l0;
        if constexpr (std::is_same<T, float>::value)
            if (stream) return norm_row_stream__avx2(p, q, l1 - l0, k.mean, k.scale, k.beta);
        norm_rows(p, q, stride, i64(0), i64(1), l1 - l0, k.mean, k.scale, k.beta);
    };
    if (!training) {
        parallel_items(N * C, 2.0 * L, [&](i64 r) { write(r % C, coef(r % C, mean[r % C], invstd[r % C]), r / C, 0, L); });
        if (stream) _mm_sfence();
        return;
    }
    // shift = the channel's first element: the sums of x - shift do not cancel catastrophically.
    auto shift = [&](i64 c) { return N > 0 ? double(x[c * L]) : 0.0; };
    auto sums = [&](i64 c, i64 n, i64 l0, i64 l1, double& s1, double& s2) {
        const T* p = x + n * stride + c * L + l0;
        if constexpr (std::is_same<T, float>::value)
            if (has_avx2_fma()) return sums_row__avx2(p, p, l1 - l0, T(shift(c)), T(shift(c)), s1, s2);
        stats_rows(p, stride, i64(0), i64(1), l1 - l0, shift(c), s1, s2);
    };
    auto finish = [&](i64 c, double s1, double s2) {
        Stats st = stats_of(shift(c), s1, s2, M, eps);
        store_stats(c, st, M, mean, invstd, rmean, rvar, momentum);
        return coef(c, T(st.mean), T(st.invstd));
    };
    two_pass_channels<Norm>(N, C, L, thread_per_channel(C), sums, finish, write);
    if (stream) _mm_sfence();
}

template <typename T>
void bwd_channels(const T* dy, const T* x, const T* gamma, const T* mean, const T* invstd, T* dx, T* dgamma,
                  T* dbeta, i64 N, i64 C, i64 L, bool training) {
    const i64 M = N * L, stride = C * L;
    const bool stream = std::is_same<T, float>::value && has_avx2_fma() && N * C * L * i64(sizeof(T)) >= kStreamMinBytes;
    auto sums = [&](i64 c, i64 n, i64 l0, i64 l1, double& s1, double& s2) {
        const i64 o = n * stride + c * L + l0;
        if constexpr (std::is_same<T, float>::value)
            if (has_avx2_fma()) return sums_row__avx2(dy + o, x + o, l1 - l0, 0.0f, mean[c], s1, s2);
        dstats_rows(dy + o, x + o, stride, i64(0), i64(1), l1 - l0, double(mean[c]), s1, s2);
    };
    auto finish = [&](i64 c, double s1, double s2) {
        dbeta[c] = T(s1), dgamma[c] = T(s2 * double(invstd[c]));
        return dx_coef(gamma ? double(gamma[c]) : 1.0, double(invstd[c]), s2 * double(invstd[c]), s1, M, training);
    };
    auto write = [&](i64 c, const DxCoef& k, i64 n, i64 l0, i64 l1) {
        const i64 o = n * stride + c * L + l0;
        if constexpr (std::is_same<T, float>::value)
            if (stream) return dx_row_stream__avx2(dy + o, x + o, dx + o, l1 - l0, mean[c], T(k.a), T(k.b), T(k.d));
        dx_rows(dy + o, x + o, dx + o, stride, i64(0), i64(1), l1 - l0, mean[c], T(k.a), T(k.b), T(k.d));
    };
    two_pass_channels<DxCoef>(N, C, L, thread_per_channel(C), sums, finish, write);
    if (stream) _mm_sfence();
}

// Row path: per-channel values are expanded to per-column arrays of the (N, C*L) matrix; the sums are split over
// column ranges (one per thread), the elementwise passes over rows.
template <typename T>
std::vector<T> per_column(i64 C, i64 L, const std::vector<T>& per_channel) {
    std::vector<T> v(C * L);
    for (i64 c = 0; c < C; ++c) std::fill(v.begin() + c * L, v.begin() + (c + 1) * L, per_channel[c]);
    return v;
}

template <typename T, typename F>
void over_column_ranges(i64 N, i64 CL, F&& f) {
    const i64 parts = std::min<i64>(parallel_work(2.0 * N * CL), std::max<i64>(1, CL / 64));
    parallel_tasks(parts, [&](i64 k) { f(CL * k / parts, CL * (k + 1) / parts); });
}

template <typename T>
void fwd_columns(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* invstd, T* rmean, T* rvar, i64 N,
                 i64 C, i64 L, bool training, double momentum, double eps) {
    const i64 CL = C * L, M = N * L;
    if (training) {
        std::vector<double> shift(C), s1(CL, 0.0), s2(CL, 0.0);
        for (i64 c = 0; c < C; ++c) shift[c] = N > 0 ? double(x[c * L]) : 0.0;
        std::vector<double> cshift = per_column(C, L, shift);
        over_column_ranges<T>(N, CL, [&](i64 j0, i64 j1) { col_stats(x, N, CL, j0, j1, cshift.data(), s1.data(), s2.data()); });
        for (i64 c = 0; c < C; ++c) {
            double a = 0, b = 0;
            for (i64 l = 0; l < L; ++l) a += s1[c * L + l], b += s2[c * L + l];
            store_stats(c, stats_of(shift[c], a, b, M, eps), M, mean, invstd, rmean, rvar, momentum);
        }
    }
    std::vector<T> m(mean, mean + C), sc(C), b(C);
    for (i64 c = 0; c < C; ++c) sc[c] = invstd[c] * (gamma ? gamma[c] : T(1)), b[c] = beta ? beta[c] : T(0);
    std::vector<T> cm = per_column(C, L, m), csc = per_column(C, L, sc), cb = per_column(C, L, b);
    parallel_items(N, 2.0 * CL, [&](i64 n) { col_norm(x, y, CL, n, n + 1, cm.data(), csc.data(), cb.data()); });
}

template <typename T>
void bwd_columns(const T* dy, const T* x, const T* gamma, const T* mean, const T* invstd, T* dx, T* dgamma,
                 T* dbeta, i64 N, i64 C, i64 L, bool training) {
    const i64 CL = C * L, M = N * L;
    std::vector<T> cm = per_column(C, L, std::vector<T>(mean, mean + C));
    std::vector<double> s1(CL, 0.0), s2(CL, 0.0);
    over_column_ranges<T>(N, CL, [&](i64 j0, i64 j1) { col_dstats(dy, x, N, CL, j0, j1, cm.data(), s1.data(), s2.data()); });
    std::vector<T> a(C), b(C), d(C);
    for (i64 c = 0; c < C; ++c) {
        double t1 = 0, t2 = 0;
        for (i64 l = 0; l < L; ++l) t1 += s1[c * L + l], t2 += s2[c * L + l];
        dbeta[c] = T(t1);
        dgamma[c] = T(t2 * double(invstd[c]));
        DxCoef k = dx_coef(gamma ? double(gamma[c]) : 1.0, double(invstd[c]), t2 * double(invstd[c]), t1, M, training);
        a[c] = T(k.a), b[c] = T(k.b), d[c] = T(k.d);
    }
    std::vector<T> ca = per_column(C, L, a), cb = per_column(C, L, b), cd = per_column(C, L, d);
    parallel_items(N, 3.0 * CL, [&](i64 n) { col_dx(dy, x, dx, CL, n, n + 1, cm.data(), ca.data(), cb.data(), cd.data()); });
}

}  // namespace

template <typename T>
void batch_norm_fwd(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* invstd, T* running_mean,
                    T* running_var, i64 N, i64 C, i64 L, bool training, double momentum, double eps) {
    if (L < kRowPathMaxL)
        fwd_columns(x, gamma, beta, y, mean, invstd, running_mean, running_var, N, C, L, training, momentum, eps);
    else
        fwd_channels(x, gamma, beta, y, mean, invstd, running_mean, running_var, N, C, L, training, momentum, eps);
}

template <typename T>
void batch_norm_bwd(const T* dy, const T* x, const T* gamma, const T* mean, const T* invstd, T* dx, T* dgamma,
                    T* dbeta, i64 N, i64 C, i64 L, bool training) {
    if (L < kRowPathMaxL)
        bwd_columns(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, N, C, L, training);
    else
        bwd_channels(dy, x, gamma, mean, invstd, dx, dgamma, dbeta, N, C, L, training);
}

#define INST(T)                                                                                                   \
    template void batch_norm_fwd<T>(const T*, const T*, const T*, T*, T*, T*, T*, T*, i64, i64, i64, bool, double, \
                                    double);                                                                      \
    template void batch_norm_bwd<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, i64, i64, i64, bool);
INST(float)
INST(double)

}  // namespace fastnn
