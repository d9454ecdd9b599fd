// The BLIS-style packed GEMM driver, shared by gemm.cpp and conv2d.cpp (internal; not part of the fastnn.h contract).
//
// C (M x N, row stride ldc) = alpha * A . B + beta * C, where A and B are never read directly: the caller supplies
// packers that produce cache-sized panels. This is what lets conv2d pack input patches straight into B panels
// (implicit GEMM) instead of materialising an im2col matrix.
//
// Packed layouts (what the microkernel reads):
//   A block (rows i0.., depth p0.., mc x kc): micro-panels of MR rows, panel q at q*MR*kc, element (r, k) at k*MR + r;
//   B block (depth p0.., cols j0.., kc x nc): micro-panels of NR columns, panel q at q*NR*kc, element (k, c) at k*NR + c.
//   Rows/columns past mc/nc are zero-filled to the full MR/NR, so the microkernel never branches on edges while
//   accumulating; only its store is masked.
#pragma once
#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "fastnn.h"
#include "simd.h"  // has_avx512f

namespace fastnn {
namespace packed {

// A kernel configuration: element type, the microkernel's register tile MR x NR, and cache blocking. KC x NR B
// micro-panels stay in L1, MC x KC A blocks in L2, KC x NC B blocks in L3. Every packer and driver below is a
// template on it, so one configuration's packed layout always matches its microkernel.
template <typename T_, i64 MR_, i64 NR_, i64 MC_>
struct Cfg {
    using T = T_;
    static constexpr i64 MR = MR_, NR = NR_, KC = 256, MC = MC_, NC = 3072;
};
// AVX2/FMA: 6x16 floats (6x8 doubles) = 12 ymm accumulators; the scalar fallback uses the same tile.
using Avx2F32 = Cfg<float, 6, 16, 144>;
using Avx2F64 = Cfg<double, 6, 8, 96>;
// AVX-512F: 8x48 floats = 24 zmm accumulators (8x16 doubles = 16); M stays a multiple of 8 (channel counts).
using Avx512F32 = Cfg<float, 8, 48, 192>;
using Avx512F64 = Cfg<double, 8, 16, 96>;

inline i64 round_up(i64 a, i64 b) { return (a + b - 1) / b * b; }

// Depth blocking: the fewest blocks of at most KC, of equal size (576 = 3 x 192, not 256 + 256 + 64), so no block
// is left short with the tile's load/store of C weighing on few FMAs.
template <class C>
inline i64 depth_block(i64 K) {
    const i64 nb = (K + C::KC - 1) / C::KC;
    return std::max<i64>(1, (K + nb - 1) / nb);
}

// C[0:m, 0:n] = alpha * (a: kc x MR panel) . (b: kc x NR panel) + beta * C; beta == 0 never reads C.
template <typename T>
using Ukernel = void (*)(i64 kc, const T* a, const T* b, T* c, i64 ldc, T alpha, T beta, i64 m, i64 n);
template <class C> Ukernel<typename C::T> ukernel();  // the microkernel of a configuration (gemm.cpp)
// The same, with B's depth row k at brow[k] + boff (NR contiguous elements) instead of a packed panel.
template <typename T>
using UkernelInd = void (*)(i64 kc, const T* a, const T* const* brow, i64 boff, T* c, i64 ldc, T alpha, T beta,
                            i64 m, i64 n);
template <class C> UkernelInd<typename C::T> ukernel_ind();
template <> UkernelInd<float> ukernel_ind<Avx2F32>();
template <> UkernelInd<double> ukernel_ind<Avx2F64>();
template <> UkernelInd<float> ukernel_ind<Avx512F32>();
template <> UkernelInd<double> ukernel_ind<Avx512F64>();
template <> Ukernel<float> ukernel<Avx2F32>();         // AVX2/FMA, or scalar when has_avx2_fma() is false
template <> Ukernel<double> ukernel<Avx2F64>();
template <> Ukernel<float> ukernel<Avx512F32>();
template <> Ukernel<double> ukernel<Avx512F64>();
// 64-byte aligned storage: a zmm load from a packed B panel then never straddles two cache lines.
template <typename T>
struct Aligned64 {
    using value_type = T;
    Aligned64() = default;
    template <typename U>
    Aligned64(const Aligned64<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <typename U>
    bool operator==(const Aligned64<U>&) const { return true; }
    template <typename U>
    bool operator!=(const Aligned64<U>&) const { return false; }
};
template <typename T> using Buffer = std::vector<T, Aligned64<T>>;
// Per-thread scratch buffers, kept between calls (the pool keeps its threads), so a kernel allocates nothing once
// warm. A slot is named by its owner. Owners share a slot only where they can never hold it at the same time on one
// thread (none of them calls another user of its slot while it holds it):
//   patch_lines  im2col, col2im (their tile lines) and PackPatchesT (the GEMM dweight's B packer): never nested.
//   conv_input   a conv task's input copy: polyphase planes (GEMM forward and dweight gather), padded rows (direct
//                forward and dweight), Winograd's V block;
//   conv_output  a conv task's output tile: GEMM tiles (polyphase, 1x1 gather), direct accumulators, the direct
//                dweight's transposed dy, Winograd's M block. Within a task these two are the only conv slots held,
//                and a task calls nothing but the GEMM drivers (gemm_a, gemm_b).
//   conv_weights the calling thread's transformed weights, read by all the tasks of one forward (or dx): Winograd's
//                U, the direct forward's channel-blocked copy or the GEMMs' packed W (a forward runs one algorithm).
//   conv_dw_partial  the dweight's per-thread sums (direct or GEMM: a backward runs one dweight algorithm).
// The backward runs dweight to completion before dx, and dx (its dcol blocks, or the forward of dy) uses other slots.
enum class Slot : int {
    gemm_a,            // gemm_blocked / gemm_blocked_rows: the packed A block
    gemm_b,            // gemm_blocked: the packed B block
    gemm_shared,       // gemm() on several threads: the operand packed once, in the calling thread's slot
    patch_lines,
    conv_input,
    conv_output,
    conv_weights,
    conv_dw_partial,
    conv_dcol,         // conv dx: a task's dcol block, scattered into dx by col2im
    recurrent_dgates,  // recurrence_bwd: dgates of every step (the calling thread's, held across its GEMMs)
    recurrent_states,  // recurrence_bwd: the state entering each step
    count
};
template <typename T> Buffer<T>& scratch(Slot which);

// Calls f(Cfg{}) with the configuration that runs on this machine (decided once, at load time).
template <typename T, class F>
void with_cfg(F&& f) {
    constexpr bool f32 = std::is_same<T, float>::value;
    if (has_avx512f()) f(std::conditional_t<f32, Avx512F32, Avx512F64>{});
    else f(std::conditional_t<f32, Avx2F32, Avx2F64>{});
}

// d[k*NR + i] = l[i*ld + k] for i < TL (4 floats or 2 doubles), k < kc: the transpose of a few rows into panel
// columns, in SSE2 register blocks (baseline x86-64) instead of one strided store per element.
inline void transpose_lines(const float* l, i64 ld, i64 kc, float* d, i64 NR) {
    i64 k = 0;
#ifdef __SSE2__
    for (; k + 4 <= kc; k += 4) {
        __m128 r0 = _mm_loadu_ps(l + k), r1 = _mm_loadu_ps(l + ld + k), r2 = _mm_loadu_ps(l + 2 * ld + k),
               r3 = _mm_loadu_ps(l + 3 * ld + k);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(d + k * NR, r0);
        _mm_storeu_ps(d + (k + 1) * NR, r1);
        _mm_storeu_ps(d + (k + 2) * NR, r2);
        _mm_storeu_ps(d + (k + 3) * NR, r3);
    }
#endif
    for (; k < kc; ++k)
        for (i64 i = 0; i < 4; ++i) d[k * NR + i] = l[i * ld + k];
}
inline void transpose_lines(const double* l, i64 ld, i64 kc, double* d, i64 NR) {
    i64 k = 0;
#ifdef __SSE2__
    for (; k + 2 <= kc; k += 2) {
        const __m128d r0 = _mm_loadu_pd(l + k), r1 = _mm_loadu_pd(l + ld + k);
        _mm_storeu_pd(d + k * NR, _mm_unpacklo_pd(r0, r1));
        _mm_storeu_pd(d + (k + 1) * NR, _mm_unpackhi_pd(r0, r1));
    }
#endif
    for (; k < kc; ++k)
        for (i64 i = 0; i < 2; ++i) d[k * NR + i] = l[i * ld + k];
}

template <typename T> constexpr i64 transpose_block() { return std::is_same<T, float>::value ? 4 : 2; }

// ---- packers for plain row-major matrices (op(A) is M x K, op(B) is K x N) ----
// A packer: returns a pointer to the packed block (here: dst after packing; a prepacked packer returns its own).
template <class C, typename T = typename C::T>
struct PackMatA {
    const T* A;
    i64 lda;
    bool trans;  // op(A)(i, k) = trans ? A[k*lda + i] : A[i*lda + k]
    const T* operator()(i64 i0, i64 mc, i64 p0, i64 kc, T* dst) const {
        constexpr i64 MR = C::MR;
        T* const out = dst;
        for (i64 ir = 0; ir < mc; ir += MR, dst += MR * kc) {
            const i64 m = std::min(MR, mc - ir);
            if (trans) {  // op(A)'s panel rows are runs of A's rows: a copy per depth step (zero-padded at the edge)
                for (i64 k = 0; k < kc; ++k) {
                    const T* src = A + (p0 + k) * lda + i0 + ir;
                    if (m == MR) {
                        std::memcpy(dst + k * MR, src, sizeof(T) * MR);
                        continue;
                    }
                    for (i64 r = 0; r < MR; ++r) dst[k * MR + r] = r < m ? src[r] : T(0);
                }
            } else {
                constexpr i64 TB = transpose_block<T>();
                i64 r = 0;
                if (m == MR)  // whole blocks of rows: register transposes
                    for (; r + TB <= MR; r += TB) transpose_lines(A + (i0 + ir + r) * lda + p0, lda, kc, dst + r, MR);
                for (; r < MR; ++r) {
                    if (r >= m) {
                        for (i64 k = 0; k < kc; ++k) dst[k * MR + r] = T(0);
                        continue;
                    }
                    const T* src = A + (i0 + ir + r) * lda + p0;
                    for (i64 k = 0; k < kc; ++k) dst[k * MR + r] = src[k];
                }
            }
        }
        return out;
    }
};

template <class C, typename T = typename C::T>
struct PackMatB {
    const T* B;
    i64 ldb;
    bool trans;  // op(B)(k, j) = trans ? B[j*ldb + k] : B[k*ldb + j]
    void operator()(i64 p0, i64 kc, i64 j0, i64 nc, T* dst) const {
        constexpr i64 NR = C::NR;
        for (i64 jr = 0; jr < nc; jr += NR, dst += NR * kc) {
            const i64 n = std::min(NR, nc - jr);
            if (trans) {
                constexpr i64 TB = transpose_block<T>();
                i64 c = 0;
                if (n == NR)
                    for (; c + TB <= NR; c += TB) transpose_lines(B + (j0 + jr + c) * ldb + p0, ldb, kc, dst + c, NR);
                for (; c < NR; ++c) {
                    const T* src = B + (j0 + jr + c) * ldb + p0;
                    for (i64 k = 0; k < kc; ++k) dst[k * NR + c] = c < n ? src[k] : T(0);
                }
            } else {
                for (i64 k = 0; k < kc; ++k) {
                    const T* src = B + (p0 + k) * ldb + j0 + jr;
                    T* d = dst + k * NR;
                    // the edge panel: copy and zero-fill (an element loop with a branch took half of a
                    // 20x100x100 GEMM's time)
                    std::memcpy(d, src, sizeof(T) * n);
                    if (n < NR) std::fill(d + n, d + NR, T(0));
                }
            }
        }
    }
};

// A packed once up front and reused by many GEMMs (conv weights): block (i0, p0) of the whole M x K matrix lives at
// p0 * round_up(M, MR) + i0 * kc, which is exactly where packing each depth block of all M rows puts it.
template <class C, typename T = typename C::T>
struct PrepackedA {
    std::vector<T> buf;
    i64 Mp = 0;
    template <class PackA>
    void pack(i64 M, i64 K, const PackA& packA) {
        Mp = round_up(M, C::MR);
        buf.resize(std::max<i64>(1, Mp * K));
        const i64 kb = depth_block<C>(K);
        for (i64 p0 = 0; p0 < K; p0 += kb) {
            const i64 kc = std::min(kb, K - p0);
            T* dst = buf.data() + p0 * Mp;
            const T* got = packA(0, M, p0, kc, dst);
            if (got != dst) std::memcpy(dst, got, sizeof(T) * Mp * kc);
        }
    }
    const T* operator()(i64 i0, i64, i64 p0, i64 kc, T*) const { return buf.data() + p0 * Mp + i0 * kc; }
};

// Rows m0.. of a packed A (m0 a multiple of MR): a task's block of output channels.
template <class A>
struct RowsFrom {
    const A& a;
    i64 m0;
    template <typename T>
    const T* operator()(i64 i0, i64 mc, i64 p0, i64 kc, T* buf) const { return a(i0 + m0, mc, p0, kc, buf); }
};

// B packed once up front and reused by many GEMMs (LSTM: w_hh across the T steps): block (p0, j0) of the whole
// K x N matrix lives at p0 * round_up(N, NR) + j0 * kc (j0 a multiple of NR), where packing each depth block of all
// N columns puts it. `data` points into storage the caller keeps alive (fastnn::PackedB).
template <class C, typename T = typename C::T>
struct PrepackedB {
    const T* data;
    i64 Np, K, kb;  // kb: the depth block the panels were packed with (depth_block<C>(K))
    i64 j_base;     // first column of this GEMM within the packed matrix (a multiple of NR)
    const T* operator()(i64 p0, i64, i64 j0, i64, T*) const {
        return data + p0 * Np + (j_base + j0) * std::min(kb, K - p0);
    }
};

// PrepackedA's layout over storage the caller owns (gemm(): op(A) packed once, shared by the threads).
template <class C, typename T = typename C::T>
struct PrepackedAView {
    const T* data;
    i64 Mp;
    const T* operator()(i64 i0, i64, i64 p0, i64 kc, T*) const { return data + p0 * Mp + i0 * kc; }
};

// The serial blocked GEMM (one thread; callers parallelise over independent output blocks).
// packA(i0, mc, p0, kc, buf) -> const T* packed block; packB(p0, kc, j0, nc, buf) fills buf.
template <class P, class PackA, class PackB, typename T = typename P::T>
void gemm_blocked(i64 M, i64 N, i64 K, T alpha, const PackA& packA, const PackB& packB, T beta, T* C, i64 ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == T(0)) {  // nothing to accumulate: C = beta * C (beta == 0 writes zeros, never reads C)
        for (i64 i = 0; i < M; ++i)
            for (i64 j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
        return;
    }
    const Ukernel<T> uk = ukernel<P>();
    Buffer<T>& abuf = scratch<T>(Slot::gemm_a);
    Buffer<T>& bbuf = scratch<T>(Slot::gemm_b);
    if ((i64)abuf.size() < P::MC * P::KC) abuf.resize(P::MC * P::KC);
    if ((i64)bbuf.size() < P::KC * P::NC) bbuf.resize(P::KC * P::NC);
    for (i64 jc = 0; jc < N; jc += P::NC) {
        const i64 nc = std::min(P::NC, N - jc);
        const i64 kb = depth_block<P>(K);
        for (i64 pc = 0; pc < K; pc += kb) {
            const i64 kc = std::min(kb, K - pc);
            const T b_ = pc == 0 ? beta : T(1);  // later depth blocks accumulate onto the first
            // a packer that returns a pointer may hand out its own (prepacked) block instead of filling bbuf
            const T* bp = bbuf.data();
            if constexpr (std::is_void<decltype(packB(pc, kc, jc, nc, bbuf.data()))>::value)
                packB(pc, kc, jc, nc, bbuf.data());
            else
                bp = packB(pc, kc, jc, nc, bbuf.data());
            for (i64 ic = 0; ic < M; ic += P::MC) {
                const i64 mc = std::min(P::MC, M - ic);
                const T* ap = packA(ic, mc, pc, kc, abuf.data());
                // jr outer: one B micro-panel stays in L1 while the A block streams from L2.
                for (i64 jr = 0; jr < nc; jr += P::NR)
                    for (i64 ir = 0; ir < mc; ir += P::MR)
                        uk(kc, ap + ir * kc, bp + jr * kc, C + (ic + ir) * ldc + jc + jr, ldc, alpha, b_,
                           std::min(P::MR, mc - ir), std::min(P::NR, nc - jr));
            }
        }
    }
}

// gemm_blocked with B read in place: B's depth row k is the NR-wide run at base + row_off[k] + j (j = column), so
// no B block is packed (conv: the rows are tap offsets into a padded input copy). Reads may run up to NR-1
// columns past N on the last panel: the caller provides that slack.
template <class P, class PackA, typename T = typename P::T>
void gemm_blocked_rows(i64 M, i64 N, i64 K, const PackA& packA, const T* base, const i64* row_off, T beta, T* C,
                       i64 ldc) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    const UkernelInd<T> uk = ukernel_ind<P>();
    Buffer<T>& abuf = scratch<T>(Slot::gemm_a);
    if ((i64)abuf.size() < P::MC * P::KC) abuf.resize(P::MC * P::KC);
    const T* brow[P::KC];
    const i64 kb = depth_block<P>(K);
    for (i64 pc = 0; pc < K; pc += kb) {
        const i64 kc = std::min(kb, K - pc);
        const T b_ = pc == 0 ? beta : T(1);
        for (i64 k = 0; k < kc; ++k) brow[k] = base + row_off[pc + k];
        for (i64 ic = 0; ic < M; ic += P::MC) {
            const i64 mc = std::min(P::MC, M - ic);
            const T* ap = packA(ic, mc, pc, kc, abuf.data());
            for (i64 jr = 0; jr < N; jr += P::NR)
                for (i64 ir = 0; ir < mc; ir += P::MR)
                    uk(kc, ap + ir * kc, brow, jr, C + (ic + ir) * ldc + jr, ldc, T(1), b_,
                       std::min(P::MR, mc - ir), std::min(P::NR, N - jr));
        }
    }
}

}  // namespace packed
}  // namespace fastnn
