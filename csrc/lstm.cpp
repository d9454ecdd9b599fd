// lstm.cpp: an LSTM over T steps (the cell is T == 1); the 4H gate axis holds blocks in gate order (s.pos).
// Forward:  gates = xs @ w_ih for all N*T rows in one GEMM; per step gates[:,t] += h_{t-1} @ w_hh (strided C; w_hh
//           packed into microkernel panels once per call, gemm_packed_b), then
//           the pointwise step per row (bias, sigmoid/tanh in place, c, h): with AVX-512 (float) one loop over the
//           row (step_row__avx512f), else a loop per operation.
// Backward: per step (t = T-1 .. 0) one fused pointwise pass -> dgates[:,t], then dh_{t-1} = dgates[:,t] @ w_hh^T
//           (w_hh^T packed once per call); both recurrences run by batch rows, a block of rows per thread, when
//           there are enough rows (rows_per_thread);
//           after the loop one GEMM each for dxs, dw_ih and dw_hh (over a copy of the states entering each step),
//           and dbias = column sums of dgates. No weight copies; the GEMMs read strided rows in place.
// The activations (vmath.h) run over contiguous H-long blocks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastnn.h"
#include "gemm_packed.h"
#include "simd.h"
#include "vmath.h"

namespace fastnn {
namespace {

using namespace vmath;

// The k lanes of v, plus b[j..] when there is a bias.
FASTNN_AVX512 inline __m512 pre16(__mmask16 k, const float* v, const float* b, i64 j) {
    const __m512 x = _mm512_maskz_loadu_ps(k, v);
    return b ? _mm512_add_ps(x, _mm512_maskz_loadu_ps(k, b + j)) : x;
}

// One row of one step in a single pass (AVX-512, float): the four gate blocks of a (bias added, activated in
// place), c = f*c_prev + i*g, h = o*tanh(c), 16 units at a time, the tail masked. The pass-per-operation version
// below (act_rows, cell, mul) walks the row six times.
FASTNN_AVX512 void step_row__avx512f(float* a, const int pos[4], const float* bias, const float* c_prev, float* c,
                              float* h, i64 H) {
    float *pi = a + pos[0] * H, *pf = a + pos[1] * H, *pg = a + pos[2] * H, *po = a + pos[3] * H;
    const float *bi = bias ? bias + pos[0] * H : nullptr, *bf = bias ? bias + pos[1] * H : nullptr;
    const float *bg = bias ? bias + pos[2] * H : nullptr, *bo = bias ? bias + pos[3] * H : nullptr;
    for (i64 j = 0; j < H; j += 16) {
        const __mmask16 k = H - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (H - j)) - 1);
        const __m512 i = sigmoid16(pre16(k, pi + j, bi, j)), f = sigmoid16(pre16(k, pf + j, bf, j)),
                     g = tanh16(pre16(k, pg + j, bg, j)), o = sigmoid16(pre16(k, po + j, bo, j));
        _mm512_mask_storeu_ps(pi + j, k, i), _mm512_mask_storeu_ps(pf + j, k, f);
        _mm512_mask_storeu_ps(pg + j, k, g), _mm512_mask_storeu_ps(po + j, k, o);
        const __m512 cn = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(k, c_prev + j), _mm512_mul_ps(i, g));
        _mm512_mask_storeu_ps(c + j, k, cn);
        _mm512_mask_storeu_ps(h + j, k, _mm512_mul_ps(tanh16(cn), o));
    }
}

// The backward's step for one row in one pass (AVX-512, float): tc = tanh(c_t) recomputed in registers, then the
// gradient of grad_body below (same formulas), 16 units at a time.
FASTNN_AVX512 void grad_row__avx512f(const float* a, const int pos[4], const float* c, const float* c_prev,
                              const float* dh, const float* dhs, float* dc, float* da, i64 H) {
    const float *pi = a + pos[0] * H, *pf = a + pos[1] * H, *pg = a + pos[2] * H, *po = a + pos[3] * H;
    float *di = da + pos[0] * H, *df = da + pos[1] * H, *dg = da + pos[2] * H, *dO = da + pos[3] * H;
    const __m512 one = _mm512_set1_ps(1.f);
    for (i64 j = 0; j < H; j += 16) {
        const __mmask16 k = H - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (H - j)) - 1);
        const __m512 i = _mm512_maskz_loadu_ps(k, pi + j), f = _mm512_maskz_loadu_ps(k, pf + j);
        const __m512 g = _mm512_maskz_loadu_ps(k, pg + j), o = _mm512_maskz_loadu_ps(k, po + j);
        const __m512 tc = tanh16(_mm512_maskz_loadu_ps(k, c + j));
        const __m512 dhj = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dh + j), _mm512_maskz_loadu_ps(k, dhs + j));
        const __m512 dct = _mm512_fmadd_ps(_mm512_mul_ps(dhj, o), _mm512_fnmadd_ps(tc, tc, one),
                                           _mm512_maskz_loadu_ps(k, dc + j));
        _mm512_mask_storeu_ps(di + j, k, _mm512_mul_ps(_mm512_mul_ps(dct, g), _mm512_mul_ps(i, _mm512_sub_ps(one, i))));
        _mm512_mask_storeu_ps(df + j, k, _mm512_mul_ps(_mm512_mul_ps(dct, _mm512_maskz_loadu_ps(k, c_prev + j)),
                                                       _mm512_mul_ps(f, _mm512_sub_ps(one, f))));
        _mm512_mask_storeu_ps(dg + j, k, _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one)));
        _mm512_mask_storeu_ps(dO + j, k,
                              _mm512_mul_ps(_mm512_mul_ps(dhj, tc), _mm512_mul_ps(o, _mm512_sub_ps(one, o))));
        _mm512_mask_storeu_ps(dc + j, k, _mm512_mul_ps(dct, f));
    }
}

// --------------------------------------------------------------------------------------------- pointwise rows
// The arithmetic loops are written once and compiled twice (AVX2/FMA copy chosen at run time): plain elementwise
// code that the compiler vectorises.
// `omp simd` tells the compiler the rows do not overlap (too many pointers for its own alias checks).
// c = f*c_prev + i*g; h = c (tanh and *o follow).
template <typename T>
FASTNN_INLINE void cell_body(const T* i, const T* f, const T* g, const T* c_prev, T* c, T* h, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        c[j] = f[j] * c_prev[j] + i[j] * g[j];
        h[j] = c[j];
    }
}
template <typename T> FASTNN_INLINE void mul_body(T* h, const T* o, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) h[j] *= o[j];
}
// One step's gradient for one row. In: the activated gates, tc = tanh(c_t), c_prev, dh (from the step after) plus
// dhs (this step's output gradient), dc (in: from the step after; out: dc_prev). Out: pre-activation grads da_*.
template <typename T>
FASTNN_INLINE void grad_body(const T* i, const T* f, const T* g, const T* o, const T* tc, const T* c_prev, const T* dh,
                  const T* dhs, T* dc, T* da_i, T* da_f, T* da_g, T* da_o, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        T dhj = dh[j] + dhs[j];
        T dct = dc[j] + dhj * o[j] * (T(1) - tc[j] * tc[j]);
        da_i[j] = dct * g[j] * i[j] * (T(1) - i[j]);
        da_f[j] = dct * c_prev[j] * f[j] * (T(1) - f[j]);
        da_g[j] = dct * i[j] * (T(1) - g[j] * g[j]);
        da_o[j] = dhj * tc[j] * o[j] * (T(1) - o[j]);
        dc[j] = dct * f[j];
    }
}
FASTNN_SIMD_DISPATCH(cell)
FASTNN_SIMD_DISPATCH(mul)
FASTNN_SIMD_DISPATCH(grad)

// The batch rows are independent through the recurrence: row n of step t needs only row n of step t-1 (h, c,
// and in the backward dh, dc). With enough rows per thread, each thread takes its own rows through all T steps:
// no barrier per step (two fork/joins per step before), and each pointwise pass reads the gates its own GEMM has
// just written. Below 16 rows per thread the threads share each step's GEMM by column panels instead.
bool rows_per_thread(i64 N, i64 TT, int nt) { return TT > 1 && nt > 1 && N >= 16 * i64(nt); }

}  // namespace

template <typename T>
void lstm_fwd(const T* xs, const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* bias, T* hs, T* cs,
              T* gates, const LstmShape& s) {
    const i64 N = s.N, TT = s.T, D = s.D, H = s.H, G = 4 * H;
    const i64 pi = s.pos[0] * H, pf = s.pos[1] * H, pg = s.pos[2] * H, po = s.pos[3] * H;
    if (N == 0) return;
    gemm<T>(false, false, N * TT, G, D, T(1), xs, D, w_ih, G, T(0), gates, G);  // every step's x @ w_ih at once
    const std::vector<T> zeros(H, T(0));  // stands for a missing c0 (keeps the pointwise loops branch-free)
    PackedB<T> whh;  // w_hh packed once for the T steps (a single step packs inside gemm as before)
    if (TT > 1) pack_b<T>(false, H, G, w_hh, G, whh);
    // gates[rows n0..n1, t] += h_{t-1} @ w_hh, on `threads` threads
    auto recur = [&](i64 t, i64 n0, i64 n1, int threads) {
        T* gt = gates + (n0 * TT + t) * G;  // row n at gt + (n - n0)*TT*G
        const T* h_prev = t ? hs + (n0 * TT + t - 1) * H : (h0 ? h0 + n0 * H : nullptr);
        const i64 ldh = t ? TT * H : H;
        if (h_prev && TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), h_prev, ldh, whh, T(1), gt, TT * G, threads);
        else if (h_prev) gemm<T>(false, false, n1 - n0, G, H, T(1), h_prev, ldh, w_hh, G, T(1), gt, TT * G);
    };
    auto pointwise = [&](i64 t, i64 n) {
        T* a = gates + (n * TT + t) * G;
        const T* c_prev = t ? cs + (n * TT + t - 1) * H : (c0 ? c0 + n * H : zeros.data());
        T *c = cs + (n * TT + t) * H, *h = hs + (n * TT + t) * H;
        if constexpr (std::is_same<T, float>::value)
            if (packed::has_avx512f()) return step_row__avx512f(a, s.pos, bias, c_prev, c, h, H);
        act_rows(Act::sigmoid, a + pi, a + pi, bias ? bias + pi : nullptr, H);
        act_rows(Act::sigmoid, a + pf, a + pf, bias ? bias + pf : nullptr, H);
        act_rows(Act::tanh, a + pg, a + pg, bias ? bias + pg : nullptr, H);
        act_rows(Act::sigmoid, a + po, a + po, bias ? bias + po : nullptr, H);
        cell(a + pi, a + pf, a + pg, c_prev, c, h, H);
        act_rows(Act::tanh, h, h, (const T*)nullptr, H);
        mul(h, (const T*)(a + po), H);
    };
    const int nt = get_num_threads();
    if (rows_per_thread(N, TT, nt)) {
        parallel_tasks(nt, [&](i64 part) {
            const i64 n0 = N * part / nt, n1 = N * (part + 1) / nt;
            for (i64 t = 0; t < TT; ++t) {
                recur(t, n0, n1, 1);
                for (i64 n = n0; n < n1; ++n) pointwise(t, n);
            }
        }, nt);
        return;
    }
    for (i64 t = 0; t < TT; ++t) {
        recur(t, 0, N, 0);
        parallel_items(N, double(G), [&](i64 n) { pointwise(t, n); });
    }
}

template <typename T>
void lstm_bwd(const T* dhs, const T* dh_n, const T* dc_n, const T* xs, const T* h0, const T* c0, const T* w_ih,
              const T* w_hh, const T* gates, const T* hs, const T* cs, T* dxs, T* dh0, T* dc0, T* dw_ih, T* dw_hh,
              T* dbias, const LstmShape& s) {
    const i64 N = s.N, TT = s.T, D = s.D, H = s.H, G = 4 * H;
    const i64 pi = s.pos[0] * H, pf = s.pos[1] * H, pg = s.pos[2] * H, po = s.pos[3] * H;
    // dh0/dc0 carry dh and dc backwards through the steps; they end up holding the gradients of h0/c0.
    if (dh_n) std::memcpy(dh0, dh_n, sizeof(T) * N * H); else std::fill(dh0, dh0 + N * H, T(0));
    if (dc_n) std::memcpy(dc0, dc_n, sizeof(T) * N * H); else std::fill(dc0, dc0 + N * H, T(0));
    // dgates and the states entering each step live in this thread's scratch buffers, kept between calls: a fresh
    // 16 MB allocation per call (B64 T32 H512) cost ~5% of the backward in page faults.
    packed::Buffer<T>& dg_buf = packed::scratch<T>(packed::Slot::lstm_dgates);
    packed::Buffer<T>& hp_buf = packed::scratch<T>(packed::Slot::lstm_states);
    if ((i64)dg_buf.size() < N * TT * G) dg_buf.resize(N * TT * G);
    if ((i64)hp_buf.size() < N * TT * H) hp_buf.resize(N * TT * H);
    T* const dgates = dg_buf.data();
    std::unique_ptr<T[]> tc_buf(new T[N * H]);
    const std::vector<T> zeros(H, T(0));  // stands for a missing c0 or dhs
    PackedB<T> whhT;  // w_hh^T (4H x H) packed once for the T steps
    if (TT > 1) pack_b<T>(true, G, H, w_hh, G, whhT);
    auto pointwise = [&](i64 t, i64 n) {
        const T* a = gates + (n * TT + t) * G;
        T* da = dgates + (n * TT + t) * G;
        T* tc = tc_buf.get() + n * H;
        const T* c_prev = t ? cs + (n * TT + t - 1) * H : (c0 ? c0 + n * H : zeros.data());
        if constexpr (std::is_same<T, float>::value)
            if (packed::has_avx512f())
                return grad_row__avx512f(a, s.pos, cs + (n * TT + t) * H, c_prev, dh0 + n * H,
                                         dhs ? dhs + (n * TT + t) * H : zeros.data(), dc0 + n * H, da, H);
        act_rows(Act::tanh, tc, cs + (n * TT + t) * H, (const T*)nullptr, H);
        grad(a + pi, a + pf, a + pg, a + po, (const T*)tc, c_prev, (const T*)(dh0 + n * H),
             dhs ? dhs + (n * TT + t) * H : zeros.data(), dc0 + n * H, da + pi, da + pf, da + pg, da + po, H);
    };
    // dh_{t-1}[rows n0..n1] = dgates[rows, t] @ w_hh^T (overwrites the dh just consumed), on `threads` threads
    auto recur = [&](i64 t, i64 n0, i64 n1, int threads) {
        const T* dg = dgates + (n0 * TT + t) * G;
        if (TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), dg, TT * G, whhT, T(0), dh0 + n0 * H, H, threads);
        else gemm<T>(false, true, n1 - n0, H, G, T(1), dg, TT * G, w_hh, G, T(0), dh0 + n0 * H, H);
    };
    const int nt = get_num_threads();
    if (rows_per_thread(N, TT, nt)) {
        parallel_tasks(nt, [&](i64 part) {
            const i64 n0 = N * part / nt, n1 = N * (part + 1) / nt;
            for (i64 t = TT - 1; t >= 0; --t) {
                for (i64 n = n0; n < n1; ++n) pointwise(t, n);
                recur(t, n0, n1, 1);
            }
        }, nt);
    } else {
        for (i64 t = TT - 1; t >= 0; --t) {
            parallel_items(N, double(G), [&](i64 n) { pointwise(t, n); });
            recur(t, 0, N, 0);
        }
    }
    const i64 R = N * TT;  // every (n, t) row at once
    gemm<T>(false, true, R, D, G, T(1), dgates, G, w_ih, G, T(0), dxs, D);
    gemm<T>(true, false, D, G, R, T(1), xs, D, dgates, G, T(0), dw_ih, G);
    // The state entering each step: h0 (or 0) at t = 0, hs[:, t-1] after.
    T* const h_prev = hp_buf.data();
    parallel_items(N, double(TT) * H, [&](i64 n) {
        T* dst = h_prev + n * TT * H;
        if (h0) std::memcpy(dst, h0 + n * H, sizeof(T) * H); else std::fill(dst, dst + H, T(0));
        std::memcpy(dst + H, hs + n * TT * H, sizeof(T) * (TT - 1) * H);
    });
    gemm<T>(true, false, H, G, R, T(1), h_prev, H, dgates, G, T(0), dw_hh, G);
    // dbias: column sums in double, split over column ranges (no reduction across threads).
    const i64 parts = std::max<i64>(1, std::min<i64>(parallel_work(double(R) * G), G / 64));
    parallel_tasks(parts, [&](i64 k) {
        const i64 j0 = G * k / parts, j1 = G * (k + 1) / parts;
        std::vector<double> acc(j1 - j0, 0.0);
        for (i64 r = 0; r < R; ++r)
            for (i64 j = j0; j < j1; ++j) acc[j - j0] += double(dgates[r * G + j]);
        for (i64 j = j0; j < j1; ++j) dbias[j] = T(acc[j - j0]);
    });
}

#define INST(T)                                                                                                 \
    template void lstm_fwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,           \
                              const LstmShape&);                                                                \
    template void lstm_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*,   \
                              const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, const LstmShape&);
INST(float)
INST(double)

}  // namespace fastnn
