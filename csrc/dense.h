// The dense family's kernels (dense.cpp): linear, embedding, dropout. Plain pointers + sizes, C-contiguous arrays,
// T float or double, 64-bit indices. Internal to the extension, declared here rather than in fastnn.h so the
// families added side by side do not edit one shared header.
#pragma once
#include <cstdint>
#include <string>

#include "fastnn.h"

namespace fastnn {

// y (N, M) = x (N, D) @ w (D, M) + b (M,) (b may be nullptr). The bias rides through the GEMM as one more depth
// row (op(A) gains a column of ones), so no pass over y is added.
// algo: 0 automatic, 1 the packed driver, 2 gemm_small (float32 on AVX-512; std::invalid_argument elsewhere).
template <typename T> void linear_fwd(const T* x, const T* w, const T* b, T* y, i64 N, i64 D, i64 M, int algo = 0);
// dx (N, D) = dy @ w^T; dw = x^T @ dy. With with_bias, dw has D + 1 rows and row D receives db = dy.sum(0): op(A)
// gains a row of ones, so dbias costs one more GEMM row instead of a pass over dy.
template <typename T>
void linear_bwd(const T* dy, const T* x, const T* w, T* dx, T* dw, i64 N, i64 D, i64 M, bool with_bias, int algo = 0);

// C (N x M, row stride ldc) = op(A) @ B + bias (bias may be nullptr; + C when accumulate) on gemm_small, the unpacked
// AVX-512 float path for products too small to repay packing (A's row r, depth k at A[r*sr + k*sk]; B (K x M) as it
// lies). Returns false, having done nothing, where that path does not apply (no AVX-512, a size it measured slower
// at, an empty product): the caller falls back to gemm().
bool gemm_small_f32(i64 N, i64 M, i64 K, const float* A, i64 sr, i64 sk, const float* B, i64 ldb, const float* bias,
                    float* C, i64 ldc, bool accumulate);

// y (N, D) = w[idx] (w is (V, D)); throws std::invalid_argument (bad_embedding_index) for an index outside [0, V).
template <typename I, typename T> void embedding_fwd(const I* idx, const T* w, T* y, i64 N, i64 V, i64 D);
// dw (V, D) = zeros, then dw[idx[n]] += dy[n] in increasing n for every row (deterministic); threads own row ranges.
template <typename I, typename T> void embedding_bwd(const T* dy, const I* idx, T* dw, i64 N, i64 V, i64 D);
// "indices: <value> at position <pos> is outside [0, <V>) ..." (the words of fastnn._checks.bad_embedding_index)
std::string bad_embedding_index(i64 value, i64 position, i64 V);

// Dropout's counter-based generator: element i is kept when u32(seed, i) >= thr, thr = ceil(p * 2^32) (2^32:
// nothing kept). u32 = lowbias32(lowbias32(lo ^ k1) ^ k2) with lo = i mod 2^32 and (k1, k2) the two halves of
// splitmix64(seed ^ (i >> 32) * 0xD1B54A32D192ED03): the same integers in fastnn.reference and the cuda kernel.
std::uint64_t dropout_key(std::uint64_t seed, std::uint64_t hi);
// NumPy's legacy MT19937 state (numpy/random/src/mt19937/mt19937.h): what `MT19937().ctypes.state_address` points at.
struct MT19937State {
    std::uint32_t key[624];
    int pos;
};
// np.random.rand's next n draws from `st` (advanced as NumPy advances it): into u (doubles) when u is not null,
// else keep[i] = draw > p (the books' dropout mask, `np.random.rand(*shape) > p`). False when st->pos is out of
// range (not the layout expected: nothing drawn).
bool mt19937_rand(MT19937State* st, i64 n, double* u, std::uint8_t* keep, double p);
// y = x * (keep ? s : 0) for n elements (x == y allowed). keep from the generator when mask_b and mask_f are both
// nullptr, else from mask_b (bool bytes) or mask_f (y = x * (mask_f * s)).
template <typename T>
void dropout_apply(const T* x, T* y, i64 n, std::uint64_t seed, std::uint64_t thr, T s, const std::uint8_t* mask_b,
                   const T* mask_f);

}  // namespace fastnn
