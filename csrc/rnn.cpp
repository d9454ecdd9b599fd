// rnn.cpp: the tanh RNN and the two GRUs as cells of the recurrence driver (recurrence.h: the GEMMs, the threads,
// the order of steps); this file is their pointwise steps, forward and backward, over contiguous H-long blocks.
//   RNN: gates = 1 block, activated in place in hs itself (the driver is given hs as its gates: h_t = tanh(a_t)).
//   GRU "zrh" (book 2): z, r = sig(x W + h U + b); h~ = tanh(x W_h + (r*h) U_h + b_h); h' = (1-z)*h + z*h~.
//       The candidate's product needs r first: w_hh's columns [2H, 3H) are the driver's second product over r*h.
//   GRU "rzn" (PyTorch): r, z as above; n = tanh(x W_n + b_in + r*(h U_n + b_hn)); h' = (1-z)*n + z*h.
//       h U_n must stay apart from x W_n: the second product writes it to hn (kept for the backward).
#include <algorithm>
#include <vector>

#include "recurrence.h"
#include "rnn.h"
#include "simd.h"
#include "vmath.h"

namespace fastnn {
namespace {

using namespace vmath;

// ------------------------------------------------------------------------------------------ pointwise rows
// Written once, compiled for AVX2/FMA and the baseline (FASTNN_SIMD_DISPATCH); `omp simd`: the rows never overlap.

// RNN backward: da = (dh + dhs) * (1 - y^2), y = tanh(a)
template <typename T>
FASTNN_INLINE void tanh_grad_body(const T* y, const T* dh, const T* dhs, T* da, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) da[j] = (dh[j] + dhs[j]) * (T(1) - y[j] * y[j]);
}
template <typename T> FASTNN_INLINE void mul_body(T* out, const T* a, const T* b, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) out[j] = a[j] * b[j];
}
// h = (1-z)*p + z*q
template <typename T> FASTNN_INLINE void blend_body(T* h, const T* z, const T* p, const T* q, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) h[j] = (T(1) - z[j]) * p[j] + z[j] * q[j];
}
// rzn: gh = h U_n + b_hn (kept), the candidate's pre-activation an += b_in + r*gh
template <typename T>
FASTNN_INLINE void cand_body(T* an, const T* r, T* gh, const T* b_in, const T* b_hn, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        gh[j] += b_hn[j];
        an[j] += b_in[j] + r[j] * gh[j];
    }
}
// zrh backward, first part: g = dh + dhs; da_h, da_z; dh = g*(1-z) (the path around w_hh)
template <typename T>
FASTNN_INLINE void zrh_grad_body(const T* z, const T* hh, const T* hp, T* dh, const T* dhs, T* da_z, T* da_h, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        const T g = dh[j] + dhs[j];
        da_h[j] = g * z[j] * (T(1) - hh[j] * hh[j]);
        da_z[j] = g * (hh[j] - hp[j]) * z[j] * (T(1) - z[j]);
        dh[j] = g * (T(1) - z[j]);
    }
}
// zrh backward, second part, m = d(r*h) = da_h @ U_h^T: da_r = m*h*r*(1-r); dh += r*m
template <typename T>
FASTNN_INLINE void zrh_mid_body(const T* r, const T* hp, const T* m, T* dh, T* da_r, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        da_r[j] = m[j] * hp[j] * r[j] * (T(1) - r[j]);
        dh[j] += r[j] * m[j];
    }
}
// rzn backward: g = dh + dhs; da_r, da_z, da_n, dgh = d(h U_n + b_hn) = da_n*r; dh = g*z (the path around w_hh)
template <typename T>
FASTNN_INLINE void rzn_grad_body(const T* r, const T* z, const T* n, const T* gh, const T* hp, T* dh, const T* dhs,
                                 T* da_r, T* da_z, T* da_n, T* dgh, i64 H) {
#pragma omp simd
    for (i64 j = 0; j < H; ++j) {
        const T g = dh[j] + dhs[j];
        const T dan = g * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
        da_n[j] = dan;
        da_z[j] = g * (hp[j] - n[j]) * z[j] * (T(1) - z[j]);
        da_r[j] = dan * gh[j] * r[j] * (T(1) - r[j]);
        dgh[j] = dan * r[j];
        dh[j] = g * z[j];
    }
}
FASTNN_SIMD_DISPATCH(tanh_grad)
FASTNN_SIMD_DISPATCH(mul)
FASTNN_SIMD_DISPATCH(blend)
FASTNN_SIMD_DISPATCH(cand)
FASTNN_SIMD_DISPATCH(zrh_grad)
FASTNN_SIMD_DISPATCH(zrh_mid)
FASTNN_SIMD_DISPATCH(rzn_grad)

// ------------------------------------------------------------------------------------------------ the cells

// tanh RNN: one block, activated in place (gates and hs are the same buffer, so a == h).
template <typename T>
struct RnnCell {
    static constexpr int gates = 1;
    const T* bias;  // (H) or nullptr
    i64 H;
    void forward_row(i64, i64, T* a, T* h) const { act_rows(Act::tanh, h, (const T*)a, bias, H); }
    void backward_row(i64, i64, const T* y, const T* dh, const T* dhs, T* da) const { tanh_grad(y, dh, dhs, da, H); }
};

// What both GRU cells share: the two-product split at 2H, the state entering each step, the combined biases.
template <typename T>
struct GruBase {
    static constexpr bool two_products = true;
    static constexpr int gates = 3;
    i64 split, TT, H;
    const T* bias;  // (3H): b_ih + b_hh per block (rzn: the n block is b_in alone), zeros when there is none
    const T* h0;    // (N,H)
    const T* hs;    // (N,T,H): written by the driver, read here for h_{t-1}
    T* hn;          // (N,T,H): zrh r*h_{t-1}, rzn h_{t-1} @ U_n + b_hn
    const T* h_prev(i64 t, i64 n) const { return t ? hs + (n * TT + t - 1) * H : h0 + n * H; }
    i64 row(i64 t, i64 n) const { return (n * TT + t) * H; }
};

// Book 2's GRU: blocks z, r, h~.
template <typename T>
struct GruZrhCell : GruBase<T> {
    using B = GruBase<T>;
    using B::H; using B::TT; using B::bias; using B::hn;
    T* m = nullptr;  // backward (N,H): d(r*h) of the current step
    void mid_row(i64 t, i64 n, T* a) const {
        act_rows(Act::sigmoid, a, (const T*)a, bias, 2 * H);  // z and r are adjacent: one pass
        mul(hn + B::row(t, n), (const T*)(a + H), B::h_prev(t, n), H);
    }
    Product<T> fwd_second(i64 t, i64 n0, T* gt) const {  // h~ pre-activation += (r*h) @ U_h
        return {hn + B::row(t, n0), TT * H, gt + 2 * H, TT * 3 * H, T(1)};
    }
    void forward_row(i64 t, i64 n, T* a, T* h) const {
        act_rows(Act::tanh, a + 2 * H, (const T*)(a + 2 * H), bias + 2 * H, H);
        blend(h, (const T*)a, B::h_prev(t, n), (const T*)(a + 2 * H), H);
    }
    void backward_row(i64 t, i64 n, const T* a, T* dh, const T* dhs, T* da) const {
        zrh_grad(a, a + 2 * H, B::h_prev(t, n), dh, dhs, da, da + 2 * H, H);
    }
    Product<T> bwd_second(i64, i64 n0, const T* dgt, T*) const {  // m = da_h @ U_h^T
        return {dgt + 2 * H, TT * 3 * H, m + n0 * H, H, T(0)};
    }
    void bwd_mid_row(i64 t, i64 n, const T* a, T* da, T* dh) const {
        zrh_mid(a + H, B::h_prev(t, n), (const T*)(m + n * H), dh, da + H, H);
    }
    GradOperands<T> grad_second() const { return {hn, H, nullptr, 0}; }  // dU_h = (r*h)^T @ da_h
};

// PyTorch's GRU: blocks r, z, n.
template <typename T>
struct GruRznCell : GruBase<T> {
    using B = GruBase<T>;
    using B::H; using B::TT; using B::bias; using B::hn;
    const T* b_hn = nullptr;  // (H), zeros when there is none
    T* dhn = nullptr;         // backward (N,T,H): the gradient of hn
    void mid_row(i64, i64, T*) const {}
    Product<T> fwd_second(i64 t, i64 n0, T*) const {  // hn = h @ U_n
        return {B::h_prev(t, n0), t ? TT * H : H, hn + B::row(t, n0), TT * H, T(0)};
    }
    void forward_row(i64 t, i64 n, T* a, T* h) const {
        act_rows(Act::sigmoid, a, (const T*)a, bias, 2 * H);
        cand(a + 2 * H, (const T*)a, hn + B::row(t, n), bias + 2 * H, b_hn, H);
        act_rows(Act::tanh, a + 2 * H, (const T*)(a + 2 * H), (const T*)nullptr, H);
        blend(h, (const T*)(a + H), (const T*)(a + 2 * H), B::h_prev(t, n), H);
    }
    void backward_row(i64 t, i64 n, const T* a, T* dh, const T* dhs, T* da) const {
        rzn_grad(a, a + H, a + 2 * H, (const T*)(hn + B::row(t, n)), B::h_prev(t, n), dh, dhs, da, da + H, da + 2 * H,
                 dhn + B::row(t, n), H);
    }
    Product<T> bwd_second(i64 t, i64 n0, const T*, T* dh) const {  // dh += dhn @ U_n^T
        return {dhn + B::row(t, n0), TT * H, dh, H, T(1)};
    }
    void bwd_mid_row(i64, i64, const T*, T*, T*) const {}
    GradOperands<T> grad_second() const { return {nullptr, 0, dhn, H}; }  // dU_n = h^T @ dhn
};

}  // namespace

template <typename T>
void rnn_fwd(const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* bias, T* hs, i64 N, i64 TT, i64 D,
             i64 H) {
    recurrence_fwd(RnnCell<T>{bias, H}, xs, h0, w_ih, w_hh, hs, hs, N, TT, D, H);  // hs is its own gate buffer
}

template <typename T>
void rnn_bwd(const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* hs,
             T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* dbias, i64 N, i64 TT, i64 D, i64 H) {
    recurrence_bwd(RnnCell<T>{nullptr, H}, dhs, dh_n, xs, h0, w_ih, w_hh, hs, hs, dxs, dh0, dw_ih, dw_hh, dbias, N,
                   TT, D, H);
}

template <typename T>
void gru_fwd(bool rzn, const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* hs,
             T* gates, T* hn, i64 N, i64 TT, i64 D, i64 H) {
    // The biases combined once (3H + H adds): zrh adds both everywhere; rzn keeps b_hn apart, inside r*(...).
    std::vector<T> bias(3 * H, T(0)), b_hn(H, T(0));
    for (i64 j = 0; j < 3 * H; ++j) {
        const T bi = b_ih ? b_ih[j] : T(0), bh = b_hh ? b_hh[j] : T(0);
        if (rzn && j >= 2 * H) bias[j] = bi, b_hn[j - 2 * H] = bh;
        else bias[j] = bi + bh;
    }
    const GruBase<T> base{2 * H, TT, H, bias.data(), h0, hs, hn};
    if (rzn) {
        GruRznCell<T> cell{base};
        cell.b_hn = b_hn.data();
        recurrence_fwd(cell, xs, h0, w_ih, w_hh, hs, gates, N, TT, D, H);
    } else {
        recurrence_fwd(GruZrhCell<T>{base}, xs, h0, w_ih, w_hh, hs, gates, N, TT, D, H);
    }
}

template <typename T>
void gru_bwd(bool rzn, const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih, const T* w_hh,
             const T* gates, const T* hs, const T* hn, T* dhn, T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh,
             i64 N, i64 TT, i64 D, i64 H) {
    // hn is only read here (the forward writes it)
    const GruBase<T> base{2 * H, TT, H, nullptr, h0, hs, const_cast<T*>(hn)};
    if (rzn) {
        GruRznCell<T> cell{base};
        cell.dhn = dhn;
        recurrence_bwd(cell, dhs, dh_n, xs, h0, w_ih, w_hh, gates, hs, dxs, dh0, dw_ih, dw_hh, db_ih, N, TT, D, H);
        // db_hh: r and z as db_ih; n: the column sums of dhn (in double, as the driver's)
        std::copy(db_ih, db_ih + 2 * H, db_hh);
        std::vector<double> acc(H, 0.0);
        for (i64 r = 0; r < N * TT; ++r)
            for (i64 j = 0; j < H; ++j) acc[j] += double(dhn[r * H + j]);
        for (i64 j = 0; j < H; ++j) db_hh[2 * H + j] = T(acc[j]);
    } else {
        std::vector<T> m(N * H);
        GruZrhCell<T> cell{base};
        cell.m = m.data();
        recurrence_bwd(cell, dhs, dh_n, xs, h0, w_ih, w_hh, gates, hs, dxs, dh0, dw_ih, dw_hh, db_ih, N, TT, D, H);
        std::copy(db_ih, db_ih + 3 * H, db_hh);  // b_ih and b_hh enter every block as their sum
    }
}

#define INST(T)                                                                                                    \
    template void rnn_fwd<T>(const T*, const T*, const T*, const T*, const T*, T*, i64, i64, i64, i64);            \
    template void rnn_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, \
                             T*, i64, i64, i64, i64);                                                              \
    template void gru_fwd<T>(bool, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, i64,    \
                             i64, i64, i64);                                                                       \
    template void gru_bwd<T>(bool, const T*, const T*, const T*, const T*, const T*, const T*, const T*,           \
                             const T*, const T*, T*, T*, T*, T*, T*, T*, T*, i64, i64, i64, i64);
INST(float)
INST(double)

}  // namespace fastnn
