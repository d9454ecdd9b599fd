// fastnn C++ kernels: plain declarations (pointers + sizes), no pybind11 here.
// All arrays are C-contiguous; T is float or double (explicitly instantiated in each .cpp).
// Index arithmetic is 64-bit throughout (i64).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"

namespace fastnn {
using i64 = std::int64_t;

// ---- gemm.cpp: C = alpha * op(A) @ op(B) + beta * C, row-major ----
// op(A) is M x K (A is K x M when trans_a), op(B) is K x N; lda/ldb/ldc are row strides in elements.
template <typename T>
void gemm(bool trans_a, bool trans_b, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda,
          const T* B, i64 ldb, T beta, T* C, i64 ldc);
// op(B) (K x N) packed once into the microkernel's panels, for many GEMMs with the same B (LSTM: w_hh across the
// T steps, forward and backward). The layout belongs to the configuration chosen at load time.
template <typename T>
struct PackedB {
    i64 K = 0, N = 0, Np = 0, kb = 0;
    std::vector<T> store;  // the panels start at the first 64-byte boundary in it
    const T* panels() const {
        const auto a = reinterpret_cast<std::uintptr_t>(store.data());
        return reinterpret_cast<const T*>((a + 63) & ~std::uintptr_t(63));
    }
};
template <typename T> void pack_b(bool trans_b, i64 K, i64 N, const T* B, i64 ldb, PackedB<T>& out);
// C = alpha * op(A) @ B + beta * C with B from pack_b (op(A) is M x B.K; C is M x B.N), on `threads`
// threads (0: get_num_threads(); 1: the calling thread only).
template <typename T>
void gemm_packed_b(bool trans_a, i64 M, T alpha, const T* A, i64 lda, const PackedB<T>& B, T beta, T* C, i64 ldc,
                   int threads = 0);

// ---- algorithm choice: an op's variants are an enum whose `automatic` runs the op's rule (one function per op,
// e.g. conv2d_fwd_algo) and whose other values force that variant. A forced variant that cannot run the call
// (shape, dtype or CPU) throws std::invalid_argument naming it (ValueError in Python), before any work.
template <class Algo> struct AlgoNames;  // names[i]: the id of value i ("" for automatic)
template <class Algo> const char* algo_name(Algo a) { return AlgoNames<Algo>::names[int(a)]; }
template <class Algo> constexpr int algo_count() { return int(sizeof(AlgoNames<Algo>::names) / sizeof(const char*)); }
// The value named `name` ("" is automatic); throws std::invalid_argument listing the ids when there is none.
template <class Algo> Algo algo_from_name(const std::string& name) {
    std::string known;
    for (int i = 0; i < algo_count<Algo>(); ++i) {
        if (name == AlgoNames<Algo>::names[i]) return Algo(i);
        if (i) known += std::string(i > 1 ? ", " : "") + AlgoNames<Algo>::names[i];
    }
    throw std::invalid_argument(std::string(AlgoNames<Algo>::op) + ": unknown algorithm '" + name + "' (known: " +
                                known + ")");
}
// Throws the error of a forced variant that cannot run.
[[noreturn]] inline void algo_cannot_run(const char* op, const char* name) {
    throw std::invalid_argument(std::string(op) + ": algorithm '" + name +
                                "' cannot run this call (shape, dtype or CPU)");
}

// ---- im2col.cpp / conv2d*.cpp ----
struct ConvShape {
    i64 N, C, H, W;      // input
    i64 K, KH, KW;       // output channels, kernel (K unused by im2col/col2im)
    i64 sh, sw, ph, pw, dh, dw, groups;
    i64 OH, OW;          // output size, > 0
};
// col is (N*OH*OW, C*KH*KW): row (n*OH+oh)*OW+ow, column (c*KH+kh)*KW+kw; padding reads as 0.
template <typename T> void im2col(const T* x, T* col, const ConvShape& s);
template <typename T> void col2im(const T* col, T* x, const ConvShape& s);   // overwrites x; overlaps summed
// conv2d's variants (conv2d_impl.h), chosen by one function per part: conv2d_fwd_algo, conv2d_dw_algo,
// conv2d_dx_algo (conv2d.cpp). They never return `automatic`.
enum class Conv2dFwdAlgo : int {
    automatic, winograd, direct, polyphase_gemm, polyphase_packed, polyphase_batch, gemm_1x1, gemm_1x1_packed
};
enum class Conv2dDwAlgo : int { automatic, direct, gemm };
enum class Conv2dDxAlgo : int { automatic, forward_flipped, dcol, gemm_1x1 };
template <typename T> Conv2dFwdAlgo conv2d_fwd_algo(const ConvShape& s);
template <typename T> Conv2dDwAlgo conv2d_dw_algo(const ConvShape& s);
template <typename T> Conv2dDxAlgo conv2d_dx_algo(const ConvShape& s);
// x (N,C,H,W), w (K,C/groups,KH,KW), bias (K) or nullptr, y (N,K,OH,OW)
template <typename T>
void conv2d_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s,
                Conv2dFwdAlgo algo = Conv2dFwdAlgo::automatic);
// writes dx (N,C,H,W), dw (K,C/groups,KH,KW), db (K)
template <typename T>
void conv2d_bwd(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, const ConvShape& s,
                Conv2dDwAlgo dw_algo = Conv2dDwAlgo::automatic, Conv2dDxAlgo dx_algo = Conv2dDxAlgo::automatic);

// ---- pool2d.cpp ----
struct PoolShape { i64 N, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW; };
// The variants of the pooling passes that have a choice (max forward, average forward and backward), chosen by
// pool2d_algo; the max backward is one scatter.
enum class PoolPass : int { max_fwd, avg_fwd, avg_bwd };
enum class Pool2dAlgo : int { automatic, k2s2, k3s2p1, separable, taps, generic };
template <typename T> Pool2dAlgo pool2d_algo(PoolPass pass, const PoolShape& s);  // never `automatic`
// idx: flat ih*W+iw within the (H,W) plane; padding never selected; first max wins; NaN propagates.
template <typename T>
void max_pool2d_fwd(const T* x, T* y, i64* idx, const PoolShape& s, Pool2dAlgo algo = Pool2dAlgo::automatic);
// Backward scatters dy by index: only N, C, H, W, OH, OW are set. An index outside [0, H*W) is never written and
// throws std::invalid_argument (ValueError in Python) with bad_pool_index's message after the scatter.
template <typename T> void max_pool2d_bwd(const T* dy, const i64* idx, T* dx, const PoolShape& s);
// "indices: <value> at position <pos> is outside [0, <HW>) ..." (the same words as fastnn._checks.bad_pool_index)
std::string bad_pool_index(i64 value, i64 position, i64 HW);
template <typename T>
void avg_pool2d_fwd(const T* x, T* y, const PoolShape& s, bool count_include_pad,
                    Pool2dAlgo algo = Pool2dAlgo::automatic);
template <typename T>
void avg_pool2d_bwd(const T* dy, T* dx, const PoolShape& s, bool count_include_pad,
                    Pool2dAlgo algo = Pool2dAlgo::automatic);

template <> struct AlgoNames<Conv2dFwdAlgo> {
    static constexpr const char* op = "conv2d forward";
    static constexpr const char* names[] = {"", "winograd", "direct", "polyphase_gemm", "polyphase_packed", "polyphase_batch",
                                            "gemm_1x1", "gemm_1x1_packed"};
};
template <> struct AlgoNames<Conv2dDwAlgo> {
    static constexpr const char* op = "conv2d dweight";
    static constexpr const char* names[] = {"", "direct", "gemm"};
};
template <> struct AlgoNames<Conv2dDxAlgo> {
    static constexpr const char* op = "conv2d dx";
    static constexpr const char* names[] = {"", "forward_flipped", "dcol", "gemm_1x1"};
};
template <> struct AlgoNames<Pool2dAlgo> {
    static constexpr const char* op = "pool2d";
    static constexpr const char* names[] = {"", "k2s2", "k3s2p1", "separable", "taps", "generic"};
};

// ---- batch_norm.cpp: x viewed as (N, C, L), L = H*W (1 for 2-D input) ----
// training: computes mean/invstd (outputs) and, when running_mean/running_var are non-null, updates them in place
// with the unbiased variance. Not training: mean/invstd are inputs. gamma/beta may be nullptr (1/0).
template <typename T>
void batch_norm_fwd(const T* x, const T* gamma, const T* beta, T* y, T* mean, T* invstd,
                    T* running_mean, T* running_var, i64 N, i64 C, i64 L, bool training,
                    double momentum, double eps);
// training: full batch-statistics gradient; not training: dx = dy*gamma*invstd. gamma may be nullptr.
template <typename T>
void batch_norm_bwd(const T* dy, const T* x, const T* gamma, const T* mean, const T* invstd,
                    T* dx, T* dgamma, T* dbeta, i64 N, i64 C, i64 L, bool training);

// ---- lstm.cpp: a sequence of T steps; the cell is T == 1 ----
struct LstmShape {
    i64 N, T, D, H;
    int pos[4];          // block index (0..3) of gates i, f, g, o along the 4H axis (from gate_order)
};
// xs (N,T,D); h0, c0 (N,H) or nullptr (zeros); w_ih (D,4H); w_hh (H,4H); bias (4H) or nullptr.
// Writes hs, cs (N,T,H) and gates (N,T,4H): the activated gates, blocks in gate order (kept for backward).
template <typename T>
void lstm_fwd(const T* xs, const T* h0, const T* c0, const T* w_ih, const T* w_hh, const T* bias,
              T* hs, T* cs, T* gates, const LstmShape& s);
// dhs (N,T,H), dh_n, dc_n (N,H) may be nullptr (zeros). h0/c0 as in lstm_fwd.
// Writes dxs (N,T,D), dh0, dc0 (N,H), dw_ih (D,4H), dw_hh (H,4H), dbias (4H).
template <typename T>
void lstm_bwd(const T* dhs, const T* dh_n, const T* dc_n, const T* xs, const T* h0, const T* c0,
              const T* w_ih, const T* w_hh, const T* gates, const T* hs, const T* cs,
              T* dxs, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* dbias, const LstmShape& s);

}  // namespace fastnn
