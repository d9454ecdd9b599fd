// optim.cpp: the books' optimizer updates (Deep Learning from Scratch 1 and 2, common/optimizer.py), fused.
//
// The books loop over the parameters in Python and run 2-6 NumPy ufuncs per parameter, each a pass over memory
// with a temporary; here one call walks every parameter once, reading g and the state and writing p and the state
// in the same pass. Memory-bound (3-7 arrays touched per element), so the plan is about passes and threads:
//  - the parameters are one index space of total = sum(n) elements, split into chunks that may cross from one
//    parameter into the next, so a list of many small arrays and one big one is shared evenly between threads;
//  - below kMinParallelWork the whole list runs on the calling thread (a step of a small net is a few us);
//  - each rule's loop is written once (always_inline) and compiled twice: an AVX2/FMA copy chosen at run time
//    (has_avx2_fma) and the baseline copy. Scalars are rounded to T once, as NumPy does with a Python float.
#include "optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace fastnn {
namespace {

template <OptimRule R>
using Rule = std::integral_constant<OptimRule, R>;

// The per-rule coefficients in T, derived once per call from the hyperparameters.
template <typename T>
struct Coef {
    T a, b, c, d;
};

template <typename T>
Coef<T> coefficients(OptimRule rule, const OptimHyper& h) {
    switch (rule) {
    case OptimRule::sgd: return {T(h.lr), 0, 0, 0};
    case OptimRule::momentum: return {T(h.momentum), T(h.lr), 0, 0};
    case OptimRule::nesterov:  // p += m*m*v; p -= (1+m)*lr*g, the scalars formed in double as Python does
        return {T(h.momentum), T(h.lr), T(h.momentum * h.momentum), T((1 + h.momentum) * h.lr)};
    case OptimRule::adagrad: return {T(h.lr), T(h.eps), 0, 0};
    case OptimRule::rmsprop: return {T(h.lr), T(h.eps), T(h.decay_rate), T(1 - h.decay_rate)};
    case OptimRule::adam: {  // the bias correction folded into the step size: lr_t (the books' formula)
        const double lr_t = h.lr * std::sqrt(1.0 - std::pow(h.beta2, double(h.step))) /
                            (1.0 - std::pow(h.beta1, double(h.step)));
        return {T(lr_t), T(h.eps), T(1 - h.beta1), T(1 - h.beta2)};
    }
    }
    return {0, 0, 0, 0};
}

// Elements [b, e) of one parameter. The slices do not overlap (checked by the binding), hence `omp simd`.
template <OptimRule R, typename T>
FASTNN_INLINE void step_range_body(Rule<R>, const OptimSlice<T>& s, i64 b, i64 e, const Coef<T>& k) {
    T* __restrict p = s.p;
    const T* __restrict g = s.g;
    T* __restrict s1 = s.s1;
    T* __restrict s2 = s.s2;
    if constexpr (R == OptimRule::sgd) {  // p -= lr*g
#pragma omp simd
        for (i64 i = b; i < e; ++i) p[i] -= k.a * g[i];
    } else if constexpr (R == OptimRule::momentum) {  // v = m*v - lr*g; p += v
#pragma omp simd
        for (i64 i = b; i < e; ++i) {
            const T v = k.a * s1[i] - k.b * g[i];
            s1[i] = v;
            p[i] += v;
        }
    } else if constexpr (R == OptimRule::nesterov) {  // v = m*v - lr*g; p += m*m*v - (1+m)*lr*g
#pragma omp simd
        for (i64 i = b; i < e; ++i) {
            const T v = k.a * s1[i] - k.b * g[i];
            s1[i] = v;
            p[i] = p[i] + k.c * v - k.d * g[i];
        }
    } else if constexpr (R == OptimRule::adagrad) {  // h += g*g; p -= lr*g/(sqrt(h)+eps)
#pragma omp simd
        for (i64 i = b; i < e; ++i) {
            const T h = s1[i] + g[i] * g[i];
            s1[i] = h;
            p[i] -= k.a * g[i] / (std::sqrt(h) + k.b);
        }
    } else if constexpr (R == OptimRule::rmsprop) {  // h = d*h + (1-d)*g*g; p -= lr*g/(sqrt(h)+eps)
#pragma omp simd
        for (i64 i = b; i < e; ++i) {
            const T h = k.c * s1[i] + k.d * g[i] * g[i];
            s1[i] = h;
            p[i] -= k.a * g[i] / (std::sqrt(h) + k.b);
        }
    } else {  // adam: m += (1-b1)*(g-m); v += (1-b2)*(g*g-v); p -= lr_t*m/(sqrt(v)+eps)
#pragma omp simd
        for (i64 i = b; i < e; ++i) {
            const T m = s1[i] + k.c * (g[i] - s1[i]);
            const T v = s2[i] + k.d * (g[i] * g[i] - s2[i]);
            s1[i] = m;
            s2[i] = v;
            p[i] -= k.a * m / (std::sqrt(v) + k.b);
        }
    }
}
FASTNN_SIMD_DISPATCH(step_range)

// Elements and arrays touched per element (reads + writes), for the work threshold.
constexpr double touched(OptimRule r) {
    return r == OptimRule::sgd ? 3 : r == OptimRule::adam ? 7 : 5;
}

template <OptimRule R, typename T>
void run(const OptimSlice<T>* s, i64 count, const Coef<T>& k) {
    std::vector<i64> start(count + 1, 0);  // global index of each slice's first element
    for (i64 j = 0; j < count; ++j) start[j + 1] = start[j] + s[j].n;
    const i64 total = start[count];
    // Global elements [b, e): the slices they fall in, each from its local offset.
    auto range = [&](i64 b, i64 e) {
        i64 j = std::upper_bound(start.begin(), start.end(), b) - start.begin() - 1;
        for (; b < e; ++j) {
            const i64 lo = b - start[j], hi = std::min(e, start[j + 1]) - start[j];
            if (hi > lo) step_range(Rule<R>{}, s[j], lo, hi, k);
            b = start[j] + hi;
        }
    };
    const int nt = parallel_work(double(total) * touched(R));
    if (nt == 1) return range(0, total);
    // ~8 chunks per thread (the pool gives each thread one contiguous part first), whole cache lines each.
    const i64 chunk = std::max<i64>(4096, ((total + 8 * nt - 1) / (8 * nt) + 63) / 64 * 64);
    parallel_for(total, chunk, range, nt);
}

}  // namespace

template <typename T>
void optim_step(OptimRule rule, const OptimSlice<T>* slices, i64 count, const OptimHyper& h) {
    if (count <= 0) return;
    const Coef<T> k = coefficients<T>(rule, h);
    switch (rule) {
    case OptimRule::sgd: return run<OptimRule::sgd>(slices, count, k);
    case OptimRule::momentum: return run<OptimRule::momentum>(slices, count, k);
    case OptimRule::nesterov: return run<OptimRule::nesterov>(slices, count, k);
    case OptimRule::adagrad: return run<OptimRule::adagrad>(slices, count, k);
    case OptimRule::rmsprop: return run<OptimRule::rmsprop>(slices, count, k);
    case OptimRule::adam: return run<OptimRule::adam>(slices, count, k);
    }
}

template void optim_step<float>(OptimRule, const OptimSlice<float>*, i64, const OptimHyper&);
template void optim_step<double>(OptimRule, const OptimSlice<double>*, i64, const OptimHyper&);

}  // namespace fastnn
