// rnn.cpp: the tanh RNN and the GRU over T steps (a cell is T == 1), on recurrence.h's driver. Plain declarations.
#pragma once
#include "fastnn.h"

namespace fastnn {

// xs (N,T,D), h0 (N,H), w_ih (D,H), w_hh (H,H), bias (H) or nullptr. Writes hs (N,T,H).
template <typename T>
void rnn_fwd(const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* bias, T* hs, i64 N, i64 TT, i64 D,
             i64 H);
// dhs (N,T,H), dh_n (N,H) may be nullptr (zeros). Writes dxs (N,T,D), dh0 (N,H), dw_ih, dw_hh, dbias (H).
template <typename T>
void rnn_bwd(const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* hs,
             T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* dbias, i64 N, i64 TT, i64 D, i64 H);

// rzn false: book 2's GRU (blocks z, r, h~; hn = r*h_{t-1}); true: PyTorch's (blocks r, z, n; hn = h_{t-1} @ U_n +
// b_hn). xs (N,T,D), h0 (N,H), w_ih (D,3H), w_hh (H,3H), b_ih/b_hh (3H) or nullptr. Writes hs, hn (N,T,H) and
// gates (N,T,3H): the activated gates.
template <typename T>
void gru_fwd(bool rzn, const T* xs, const T* h0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, T* hs,
             T* gates, T* hn, i64 N, i64 TT, i64 D, i64 H);
// dhs, dh_n as for rnn_bwd; xs .. hn from gru_fwd; dhn: (N,T,H) scratch (rzn only). Writes dxs (N,T,D), dh0 (N,H),
// dw_ih (D,3H), dw_hh (H,3H), db_ih, db_hh (3H).
template <typename T>
void gru_bwd(bool rzn, const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih, const T* w_hh,
             const T* gates, const T* hs, const T* hn, T* dhn, T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh,
             i64 N, i64 TT, i64 D, i64 H);

}  // namespace fastnn
