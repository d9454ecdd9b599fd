// The recurrence of the recurrent layers over T steps, generic over the cell: the LSTM (lstm.cpp), the tanh RNN and
// the two GRUs (rnn.cpp). Internal header.
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
//
// Two recurrent products (the GRU): a cell with `static constexpr bool two_products = true` splits w_hh's columns at
// `i64 split`. Columns [0, split) work as above (h_{t-1} @ w_hh[:, :split] added to the gates, their gradient
// dgates[:, :split] @ w_hh[:, :split]^T added to dh); columns [split, G) are a second product whose rows the cell
// names, because the GRU's candidate block multiplies something else (book 2: (r*h) @ U_h, known only after r) or
// must stay apart from the input's part (PyTorch: r * (h @ U_n + b_hn)). Per step:
//   forward:  first product -> mid_row(t, n, a) per row -> C (+)= A @ w_hh[:, split:] with A, C from
//             fwd_second(t, n0, gt) -> forward_row per row.
//   backward: backward_row per row, which also writes into dh the part of dh_{t-1} that bypasses w_hh -> C (+)= A @
//             w_hh[:, split:]^T with A, C from bwd_second(t, n0, dgt, dh) -> bwd_mid_row(t, n, a, da, dh) per row
//             -> dh += dgates[:, t, :split] @ w_hh[:, :split]^T.
//   gt/dgt: gates/dgates row n0 of step t (rows TT*G apart); dh: dh row n0. Rows n0.. of A and C, strides lda/ldc.
//   After the loop dw_hh[:, split:] = A^T @ B over all N*T rows, (A, B) = grad_second(); a null A stands for the
//   states entering each step, a null B for dgates[:, split:].
// A two-product cell needs h0 (the callers pass zeros for None).
#pragma once
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dense.h"
#include "fastnn.h"
#include "gemm_packed.h"

namespace fastnn {

// C = op(A) @ B + beta*C (beta 0 or 1) for a product whose B is a weight read once in the call (a single step's
// w_hh, all steps' w_ih, the weight gradients of a cell): small float products take gemm_small (dense.cpp), which
// reads B as it lies, where gemm would pack it first (rnn_cell B20 H100 took 17 us against NumPy's 10).
template <typename T>
void once_gemm(bool ta, i64 M, i64 N, i64 K, const T* A, i64 lda, const T* B, i64 ldb, T beta, T* C, i64 ldc) {
    if constexpr (std::is_same<T, float>::value)
        if (gemm_small_f32(M, N, K, A, ta ? 1 : lda, ta ? lda : 1, B, ldb, nullptr, C, ldc, beta != T(0))) return;
    gemm<T>(ta, false, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc);
}

// The batch rows are independent through the recurrence: row n of step t needs only row n of step t-1 (h, c,
// and in the backward dh, dc). Each thread can take its own rows through all T steps: no barrier per step (two
// fork/joins per step otherwise), and each pointwise pass reads the gates its own GEMM has just written. While
// w_hh fits a core's L2 (2 MB here) that wins from 2 rows a thread on (book 2's B20 T35 H100: forward 0.78-0.83 ->
// 0.55-0.58 ms, backward 1.63 -> 1.37; B4: 0.13 -> 0.10); past it each thread would stream all of w_hh every step,
// so the threads share each step's GEMM by column panels instead (the forward always: B64 T32 H512, alternating
// runs, 24.6-26.5 vs 26.0-26.4 ms by rows; the backward below 16 rows a thread: B8 T10 H512 1.58x vs 1.19x
// PyTorch by rows).
constexpr i64 kRowsMaxWhhBytes = i64(2) << 20;
inline bool rows_per_thread(i64 N, i64 TT, int nt, i64 whh_bytes) {
    return TT > 1 && nt > 1 && N >= (whh_bytes <= kRowsMaxWhhBytes ? 2 : 16) * i64(nt);
}

// The operands of a cell's second product: C = A @ op(w_hh[:, split:]) + beta*C (rows lda / ldc apart), or of its
// weight gradient (A, B).
template <typename T> struct Product { const T* a; i64 lda; T* c; i64 ldc; T beta; };
template <typename T> struct GradOperands { const T* a; i64 lda; const T* b; i64 ldb; };

template <class C, class = void> struct two_products : std::false_type {};
template <class C>
struct two_products<C, std::void_t<decltype(C::two_products)>> : std::bool_constant<C::two_products> {};

// Columns of w_hh that multiply h_{t-1} itself: all of them, or the cell's split.
template <class Cell> i64 first_columns(const Cell& cell, i64 G) {
    if constexpr (two_products<Cell>::value) return cell.split; else return G;
}

// xs (N,T,D); h0 (N,H) or nullptr (zeros); w_ih (D,G); w_hh (H,G), G = Cell::gates * H. Writes hs (N,T,H) and
// gates (N,T,G): the activated gates.
template <class Cell, typename T>
void recurrence_fwd(const Cell& cell, const T* xs, const T* h0, const T* w_ih, const T* w_hh, T* hs, T* gates, i64 N,
                    i64 TT, i64 D, i64 H) {
    constexpr bool two = two_products<Cell>::value;
    const i64 G = Cell::gates * H, S = first_columns(cell, G);
    if (N == 0) return;
    once_gemm<T>(false, N * TT, G, D, xs, D, w_ih, G, T(0), gates, G);  // every step's x @ w_ih at once
    PackedB<T> whh, whh2;  // w_hh packed once for the T steps (a single step packs inside gemm as before)
    if (TT > 1) pack_b<T>(false, H, S, w_hh, G, whh);
    if (two && TT > 1) pack_b<T>(false, H, G - S, w_hh + S, G, whh2);
    // gates[rows n0..n1, t, :S] += h_{t-1} @ w_hh[:, :S], on `threads` threads
    auto recur = [&](i64 t, i64 n0, i64 n1, int threads) {
        T* gt = gates + (n0 * TT + t) * G;  // row n at gt + (n - n0)*TT*G
        const T* h_prev = t ? hs + (n0 * TT + t - 1) * H : (h0 ? h0 + n0 * H : nullptr);
        const i64 ldh = t ? TT * H : H;
        if (h_prev && TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), h_prev, ldh, whh, T(1), gt, TT * G, threads);
        else if (h_prev) once_gemm<T>(false, n1 - n0, S, H, h_prev, ldh, w_hh, G, T(1), gt, TT * G);
    };
    auto pointwise = [&](i64 t, i64 n) { cell.forward_row(t, n, gates + (n * TT + t) * G, hs + (n * TT + t) * H); };
    // One step for rows n0..n1: `rows(f)` calls f(n) for each row (serially, or spread over the threads).
    auto step = [&](i64 t, i64 n0, i64 n1, int threads, auto&& rows) {
        recur(t, n0, n1, threads);
        if constexpr (two) {
            rows([&](i64 n) { cell.mid_row(t, n, gates + (n * TT + t) * G); });
            const Product<T> p = cell.fwd_second(t, n0, gates + (n0 * TT + t) * G);
            if (TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), p.a, p.lda, whh2, p.beta, p.c, p.ldc, threads);
            else once_gemm<T>(false, n1 - n0, G - S, H, p.a, p.lda, w_hh + S, G, p.beta, p.c, p.ldc);
        }
        rows([&](i64 n) { pointwise(t, n); });
    };
    const int nt = get_num_threads();
    const i64 whh_bytes = i64(sizeof(T)) * H * G;
    if (whh_bytes <= kRowsMaxWhhBytes && rows_per_thread(N, TT, nt, whh_bytes)) {
        parallel_tasks(nt, [&](i64 part) {
            const i64 n0 = N * part / nt, n1 = N * (part + 1) / nt;
            auto serial = [&](auto&& f) { for (i64 n = n0; n < n1; ++n) f(n); };
            for (i64 t = 0; t < TT; ++t) step(t, n0, n1, 1, serial);
        }, nt);
        return;
    }
    auto spread = [&](auto&& f) { parallel_items(N, double(G), f); };
    for (i64 t = 0; t < TT; ++t) step(t, 0, N, 0, spread);
}

// dhs (N,T,H), dh_n (N,H) may be nullptr (zeros); xs, h0, w_ih, w_hh, gates, hs as in (and from) recurrence_fwd.
// Writes dxs (N,T,D), dh0 (N,H), dw_ih (D,G), dw_hh (H,G), dbias (G).
template <class Cell, typename T>
void recurrence_bwd(const Cell& cell, const T* dhs, const T* dh_n, const T* xs, const T* h0, const T* w_ih,
                    const T* w_hh, const T* gates, const T* hs, T* dxs, T* dh0, T* dw_ih, T* dw_hh, T* dbias, i64 N,
                    i64 TT, i64 D, i64 H) {
    constexpr bool two = two_products<Cell>::value;
    const i64 G = Cell::gates * H, S = first_columns(cell, G);
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
    PackedB<T> whhT, whh2T;  // w_hh^T (G x H) packed once for the T steps (two cells: its two row blocks)
    if (TT > 1) pack_b<T>(true, S, H, w_hh, G, whhT);
    if (two && TT > 1) pack_b<T>(true, G - S, H, w_hh + S, G, whh2T);
    auto pointwise = [&](i64 t, i64 n) {
        cell.backward_row(t, n, gates + (n * TT + t) * G, dh0 + n * H, dhs ? dhs + (n * TT + t) * H : zeros.data(),
                          dgates + (n * TT + t) * G);
    };
    // dh_{t-1}[rows n0..n1] = dgates[rows, t, :S] @ w_hh[:, :S]^T: overwrites the dh just consumed, or (two products)
    // adds to the part the cell wrote; on `threads` threads
    const T beta = two ? T(1) : T(0);
    auto recur = [&](i64 t, i64 n0, i64 n1, int threads) {
        const T* dg = dgates + (n0 * TT + t) * G;
        if (TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), dg, TT * G, whhT, beta, dh0 + n0 * H, H, threads);
        else gemm<T>(false, true, n1 - n0, H, S, T(1), dg, TT * G, w_hh, G, beta, dh0 + n0 * H, H);
    };
    auto step = [&](i64 t, i64 n0, i64 n1, int threads, auto&& rows) {
        rows([&](i64 n) { pointwise(t, n); });
        if constexpr (two) {
            const Product<T> p = cell.bwd_second(t, n0, dgates + (n0 * TT + t) * G, dh0 + n0 * H);
            if (TT > 1) gemm_packed_b<T>(false, n1 - n0, T(1), p.a, p.lda, whh2T, p.beta, p.c, p.ldc, threads);
            else gemm<T>(false, true, n1 - n0, H, G - S, T(1), p.a, p.lda, w_hh + S, G, p.beta, p.c, p.ldc);
            rows([&](i64 n) {
                cell.bwd_mid_row(t, n, gates + (n * TT + t) * G, dgates + (n * TT + t) * G, dh0 + n * H);
            });
        }
        recur(t, n0, n1, threads);
    };
    const int nt = get_num_threads();
    if (rows_per_thread(N, TT, nt, i64(sizeof(T)) * H * G)) {
        parallel_tasks(nt, [&](i64 part) {
            const i64 n0 = N * part / nt, n1 = N * (part + 1) / nt;
            auto serial = [&](auto&& f) { for (i64 n = n0; n < n1; ++n) f(n); };
            for (i64 t = TT - 1; t >= 0; --t) step(t, n0, n1, 1, serial);
        }, nt);
    } else {
        auto spread = [&](auto&& f) { parallel_items(N, double(G), f); };
        for (i64 t = TT - 1; t >= 0; --t) step(t, 0, N, 0, spread);
    }
    const i64 R = N * TT;  // every (n, t) row at once
    gemm<T>(false, true, R, D, G, T(1), dgates, G, w_ih, G, T(0), dxs, D);
    once_gemm<T>(true, D, G, R, xs, D, dgates, G, T(0), dw_ih, G);
    // The state entering each step: h0 (or 0) at t = 0, hs[:, t-1] after (a single step with h0: h0 itself).
    const bool own = TT > 1 || !h0;
    T* const h_prev = own ? hp_buf.data() : const_cast<T*>(h0);
    if (own)
        parallel_items(N, double(TT) * H, [&](i64 n) {
            T* dst = h_prev + n * TT * H;
            if (h0) std::memcpy(dst, h0 + n * H, sizeof(T) * H); else std::fill(dst, dst + H, T(0));
            std::memcpy(dst + H, hs + n * TT * H, sizeof(T) * (TT - 1) * H);
        });
    once_gemm<T>(true, H, S, R, h_prev, H, dgates, G, T(0), dw_hh, G);
    if constexpr (two) {
        const GradOperands<T> g = cell.grad_second();
        gemm<T>(true, false, H, G - S, R, T(1), g.a ? g.a : h_prev, g.a ? g.lda : H, g.b ? g.b : dgates + S,
                g.b ? g.ldb : G, T(0), dw_hh + S, G);
    }
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
