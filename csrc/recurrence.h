// The recurrence of the recurrent layers over T steps, generic over the cell: LSTM now (lstm.cpp); a plain tanh RNN
// or a GRU cell plugs in its pointwise step the same way. Internal header.
//
// Forward:  gates = xs @ w_ih for all N*T rows in one GEMM; per step gates[:,t] += h_{t-1} @ w_hh (strided C; w_hh
//           packed into microkernel panels once per call, gemm_packed_b), then the cell's pointwise step per row.
// Backward: per step (t = T-1 .. 0) the cell's pointwise backward -> dgates[:,t], then dh_{t-1} = dgates[:,t] @ w_hh^T
//           (w_hh^T packed once per call); after the loop one GEMM each for dxs, dw_ih and dw_hh (over a copy of the
//           states entering each step), and dbias = column sums of dgates. No weight copies; the GEMMs read strided
//           rows in place.
// Both recurrences run by batch rows, a block of rows per thread, when there are enough rows (rows_per_thread).
//
// A Cell provides (T: float or double; a gate row holds `gates` blocks of H):
//   static constexpr int gates;
//   void forward_row(i64 t, i64 n, T* a, T* h) const;
//       a: row n of step t, the gate pre-activations x @ w_ih + h_{t-1} @ w_hh (no bias): the cell adds its bias,
//       activates them in place (kept for the backward) and writes the new state h (and its own, e.g. the LSTM's c).
//   void backward_row(i64 t, i64 n, const T* a, const T* dh, const T* dhs, T* da) const;
//       a: the activated gates of the forward; dh: the gradient reaching h_t from step t+1; dhs: h_t's output
//       gradient (zeros when there is none); da (out): the gradient of the gate pre-activations. A gradient the cell
//       carries itself (the LSTM's dc) it keeps in its own buffer.
// (A GRU's candidate gate multiplies r by h_{t-1} @ w_hn alone: its cell will need that product kept apart from the
// input's, which the forward's single `gates` buffer does not do yet.)
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "fastnn.h"
#include "gemm_packed.h"

namespace fastnn {

// The batch rows are independent through the recurrence: row n of step t needs only row n of step t-1 (h, c,
// and in the backward dh, dc). With enough rows per thread, each thread takes its own rows through all T steps:
// no barrier per step (two fork/joins per step before), and each pointwise pass reads the gates its own GEMM has
// just written. Below 16 rows per thread the threads share each step's GEMM by column panels instead.
inline bool rows_per_thread(i64 N, i64 TT, int nt) { return TT > 1 && nt > 1 && N >= 16 * i64(nt); }

// xs (N,T,D); h0 (N,H) or nullptr (zeros); w_ih (D,G); w_hh (H,G), G = Cell::gates * H. Writes hs (N,T,H) and
// gates (N,T,G): the activated gates.
template <class Cell, typename T>
void recurrence_fwd(const Cell& cell, const T* xs, const T* h0, const T* w_ih, const T* w_hh, T* hs, T* gates, i64 N,
                    i64 TT, i64 D, i64 H) {
    const i64 G = Cell::gates * H;
    if (N == 0) return;
    gemm<T>(false, false, N * TT, G, D, T(1), xs, D, w_ih, G, T(0), gates, G);  // every step's x @ w_ih at once
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
    auto pointwise = [&](i64 t, i64 n) { cell.forward_row(t, n, gates + (n * TT + t) * G, hs + (n * TT + t) * H); };
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

// dhs (N,T,H), dh_n (N,H) may be nullptr (zeros); xs, h0, w_ih, w_hh, gates, hs as in (and from) recurrence_fwd.
// Writes dxs (N,T,D), dh0 (N,H), dw_ih (D,G), dw_hh (H,G), dbias (G).
template <class Cell, typename T>
void recurrence_bwd(const Cell& cell, const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih,
                    const T* w_hh, const T* gates, const T* hs, T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* dbias, i64 N,
                    i64 TT, i64 D, i64 H) {
    const i64 G = Cell::gates * H;
    // dh0 carries dh backwards through the steps; it ends up holding the gradient of h0.
    if (dh_n) std::memcpy(dh0, dh_n, sizeof(T) * N * H); else std::fill(dh0, dh0 + N * H, T(0));
    // dgates and the states entering each step live in this thread's scratch buffers, kept between calls: a fresh
    // 16 MB allocation per call (B64 T32 H512) cost ~5% of the backward in page faults.
    packed::Buffer<T>& dg_buf = packed::scratch<T>(packed::Slot::recurrent_dgates);
    packed::Buffer<T>& hp_buf = packed::scratch<T>(packed::Slot::recurrent_states);
    if ((i64)dg_buf.size() < N * TT * G) dg_buf.resize(N * TT * G);
    if ((i64)hp_buf.size() < N * TT * H) hp_buf.resize(N * TT * H);
    T* const dgates = dg_buf.data();
    const std::vector<T> zeros(H, T(0));  // stands for a missing dhs
    PackedB<T> whhT;  // w_hh^T (G x H) packed once for the T steps
    if (TT > 1) pack_b<T>(true, G, H, w_hh, G, whhT);
    auto pointwise = [&](i64 t, i64 n) {
        cell.backward_row(t, n, gates + (n * TT + t) * G, dh0 + n * H, dhs ? dhs + (n * TT + t) * H : zeros.data(),
                          dgates + (n * TT + t) * G);
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

}  // namespace fastnn
