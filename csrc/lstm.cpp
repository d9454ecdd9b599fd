// lstm.cpp: an LSTM over T steps (the cell is T == 1); the 4H gate axis holds blocks in gate order (s.pos).
// The recurrence (the GEMMs, the threads, the order of steps) is recurrence.h's; this file is the LSTM cell: its
// pointwise forward and backward steps, whose activations (vmath.h) run over contiguous H-long blocks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "fastnn.h"
#include "gemm_packed.h"
#include "recurrence.h"
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
FASTNN_INLINE void cell_state_body(const T* i, const T* f, const T* g, const T* c_prev, T* c, T* h, i64 H) {
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
FASTNN_INLINE void grad_body(const T* i, const T* f, const T* g, const T* o, const T* tc, const T* c_prev,
                             const T* dh, const T* dhs, T* dc, T* da_i, T* da_f, T* da_g, T* da_o, i64 H) {
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
FASTNN_SIMD_DISPATCH(cell_state)
FASTNN_SIMD_DISPATCH(mul)
FASTNN_SIMD_DISPATCH(grad)

// The LSTM cell of the recurrence driver (recurrence.h): its own state c (cs, c0) and, in the backward, the
// gradient dc it carries between steps (dc0) and a row of tanh(c_t) per batch row.
template <typename T>
struct LstmCell {
    static constexpr int gates = 4;
    const LstmShape& s;
    const T* bias;   // forward: (4H) or nullptr
    const T* c0;     // (N,H) or nullptr (zeros)
    T* cs;           // (N,T,H): written by the forward, read by the backward
    T* dc;           // backward: (N,H), dc of the step after in, dc_prev out
    T* tc;           // backward: (N,H) scratch for tanh(c_t)
    const T* zeros;  // H zeros: stands for a missing c0 (keeps the pointwise loops branch-free)

    // The pointwise step per row (bias, sigmoid/tanh in place, c, h): with AVX-512 (float) one loop over the row
    // (step_row__avx512f), else a loop per operation.
    void forward_row(i64 t, i64 n, T* a, T* h) const {
        const i64 TT = s.T, H = s.H;
        const i64 pi = s.pos[0] * H, pf = s.pos[1] * H, pg = s.pos[2] * H, po = s.pos[3] * H;
        const T* c_prev = t ? cs + (n * TT + t - 1) * H : (c0 ? c0 + n * H : zeros);
        T* c = cs + (n * TT + t) * H;
        if constexpr (std::is_same<T, float>::value)
            if (packed::has_avx512f()) return step_row__avx512f(a, s.pos, bias, c_prev, c, h, H);
        act_rows(Act::sigmoid, a + pi, a + pi, bias ? bias + pi : nullptr, H);
        act_rows(Act::sigmoid, a + pf, a + pf, bias ? bias + pf : nullptr, H);
        act_rows(Act::tanh, a + pg, a + pg, bias ? bias + pg : nullptr, H);
        act_rows(Act::sigmoid, a + po, a + po, bias ? bias + po : nullptr, H);
        cell_state(a + pi, a + pf, a + pg, c_prev, c, h, H);
        act_rows(Act::tanh, h, h, (const T*)nullptr, H);
        mul(h, (const T*)(a + po), H);
    }
    // One fused pointwise pass per row.
    void backward_row(i64 t, i64 n, const T* a, const T* dh, const T* dhs, T* da) const {
        const i64 TT = s.T, H = s.H;
        const i64 pi = s.pos[0] * H, pf = s.pos[1] * H, pg = s.pos[2] * H, po = s.pos[3] * H;
        const T* c_prev = t ? cs + (n * TT + t - 1) * H : (c0 ? c0 + n * H : zeros);
        if constexpr (std::is_same<T, float>::value)
            if (packed::has_avx512f())
                return grad_row__avx512f(a, s.pos, cs + (n * TT + t) * H, c_prev, dh, dhs, dc + n * H, da, H);
        T* tcn = tc + n * H;
        act_rows(Act::tanh, tcn, cs + (n * TT + t) * H, (const T*)nullptr, H);
        grad(a + pi, a + pf, a + pg, a + po, (const T*)tcn, c_prev, dh, dhs, dc + n * H, da + pi, da + pf, da + pg,
             da + po, H);
    }
};

}  // namespace

template <typename T>
void lstm_fwd(const T* xs, const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* bias, T* hs, T* cs,
              T* gates, const LstmShape& s) {
    const std::vector<T> zeros(s.H, T(0));
    const LstmCell<T> cell{s, bias, c0, cs, nullptr, nullptr, zeros.data()};
    recurrence_fwd(cell, xs, h0, w_ih, w_hh, hs, gates, s.N, s.T, s.D, s.H);
}

template <typename T>
void lstm_bwd(const T* dhs, const T* dh_n, const T* dc_n, const T* xs, const T* h0, const T* c0, const T* w_ih,
              const T* w_hh, const T* gates, const T* hs, const T* cs, T* dxs, T* dh0, T* dc0, T* dw_ih, T* dw_hh,
              T* dbias, const LstmShape& s) {
    const i64 N = s.N, H = s.H;
    // dc0 carries dc backwards through the steps (as dh0 does dh); it ends up holding the gradient of c0.
    if (dc_n) std::memcpy(dc0, dc_n, sizeof(T) * N * H); else std::fill(dc0, dc0 + N * H, T(0));
    std::unique_ptr<T[]> tc_buf(new T[N * H]);
    const std::vector<T> zeros(H, T(0));
    // cs is only read here (the cell's forward writes it)
    const LstmCell<T> cell{s, nullptr, c0, const_cast<T*>(cs), dc0, tc_buf.get(), zeros.data()};
    recurrence_bwd(cell, dhs, dh_n, xs, h0, w_ih, w_hh, gates, hs, dxs, dh0, dw_ih, dw_hh, dbias, N, s.T, s.D, H);
}

#define INST(T)                                                                                                 \
    template void lstm_fwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,           \
                              const LstmShape&);                                                                \
    template void lstm_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*,   \
                              const T*, const T*, const T*, T*, T*, T*, T*, T*, T*, const LstmShape&);
INST(float)
INST(double)

}  // namespace fastnn
