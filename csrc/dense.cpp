// dense.cpp: the textbook dense layers - linear (x @ W + b, forward and backward), embedding (row gather and its
// scatter-add) and dropout (a counter-based mask regenerated from its seed).
//
// In order:
//   dense_gemm           the linear layer's GEMMs on the project's packed microkernels (gemm.cpp): its own packers,
//                        which append the bias as one more depth row of op(B) (a ones column of op(A)) or a ones
//                        row to op(A) (dbias as one more row of dW); narrow last panels (16/32 floats instead of 48
//                        on AVX-512, gemm_f32__avx512f_8x16/8x32) for the textbook widths (100 = 48+48+4 would
//                        compute 144 columns); and a split over rows, columns or depth by a cost model (split-K for
//                        the 100x100 layers and dy @ W^T of the LM's output layer, K = 10000).
//   gemm_small           float products too small to repay packing (batch 1-20, 10 outputs): both operands read as
//                        they lie, an R x V tile of zmm accumulators started from the bias, AVX-512.
//   linear_fwd/bwd       the three products; dx at most 4 rows goes to gemm() (gemm__rows: B read as it lies).
//   embedding_fwd/bwd    memcpy of rows; the backward zeroes and scatters one row range per task (no races, sums in
//                        index order: deterministic).
//   dropout_apply        lowbias32 twice over the element index (32-bit multiplies, vectorised), or a given mask.
#include "dense.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>

#include "gemm_packed.h"
#include "simd.h"

namespace fastnn {
namespace {

using namespace packed;

// ------------------------------------------------------------------------------------------------ dense_gemm

// C (Mv x N, row stride ldc) = op(A) @ op(B) over virtual sizes: with `bias`, op(A) has a column K of ones and op(B)
// a row K = bias (Kv = K + 1); with `ones_row`, op(A) has a row M of ones (Mv = M + 1; C's row M = column sums of
// op(B)). op(A)(i, k) = ta ? A[k*lda + i] : A[i*lda + k]; op(B)(k, j) = tb ? B[j*ldb + k] : B[k*ldb + j].
template <typename T>
struct Gemm {
    bool ta, tb;
    i64 M, N, K;
    const T* A;
    i64 lda;
    const T* B;
    i64 ldb;
    const T* bias;
    bool ones_row;
    T* C;
    i64 ldc;
    i64 Mv() const { return M + (ones_row ? 1 : 0); }
    i64 Kv() const { return K + (bias ? 1 : 0); }
};

// The width of the B panel holding the last n (< NR) columns: on AVX-512 float, 16 or 32 when that covers them
// (8x16 / 8x32 kernels below), else the configuration's NR.
template <class Cf>
constexpr i64 panel_width(i64 n) {
    if constexpr (std::is_same<Cf, Avx512F32>::value) return n <= 16 ? 16 : n <= 32 ? 32 : 48;
    return Cf::NR;
}

// A block: virtual rows i0..i0+mc, virtual depth p0..p0+kc -> MR-row panels (element (r, k) at k*MR + r).
template <class Cf, typename T>
void pack_a(const Gemm<T>& g, i64 i0, i64 mc, i64 p0, i64 kc, T* dst) {
    constexpr i64 MR = Cf::MR, TB = transpose_block<T>();
    const i64 kr = std::clamp<i64>(g.K - p0, 0, kc);  // real depth; the rest is the bias's ones column
    for (i64 ir = 0; ir < mc; ir += MR, dst += MR * kc) {
        const i64 r0 = i0 + ir, m = std::clamp<i64>(g.M - r0, 0, MR);
        if (g.ta) {
            for (i64 k = 0; k < kr; ++k) {
                const T* src = g.A + (p0 + k) * g.lda + r0;
                T* d = dst + k * MR;
                if (m == MR) std::memcpy(d, src, sizeof(T) * MR);
                else for (i64 r = 0; r < MR; ++r) d[r] = r < m ? src[r] : T(0);
            }
        } else {
            i64 r = 0;
            if (m == MR)
                for (; r + TB <= MR; r += TB) transpose_lines(g.A + (r0 + r) * g.lda + p0, g.lda, kr, dst + r, MR);
            for (; r < MR; ++r) {
                const T* src = g.A + (r0 + r) * g.lda + p0;
                for (i64 k = 0; k < kr; ++k) dst[k * MR + r] = r < m ? src[k] : T(0);
            }
        }
        for (i64 k = kr; k < kc; ++k)
            for (i64 r = 0; r < MR; ++r) dst[k * MR + r] = r < m ? T(1) : T(0);
        if (g.ones_row && g.M >= r0 && g.M < r0 + MR)
            for (i64 k = 0; k < kc; ++k) dst[k * MR + (g.M - r0)] = T(1);
    }
}

// B block: virtual depth p0..p0+kc, columns j0..j0+nc -> panels of NR columns (the last one panel_width wide), the
// panel of column jr at dst + jr*kc, element (k, c) at k*width + c.
template <class Cf, typename T>
void pack_b(const Gemm<T>& g, i64 p0, i64 kc, i64 j0, i64 nc, T* dst) {
    constexpr i64 TB = transpose_block<T>();
    const i64 kr = std::clamp<i64>(g.K - p0, 0, kc);
    for (i64 jr = 0; jr < nc; jr += Cf::NR) {
        const i64 n = std::min(Cf::NR, nc - jr), w = n == Cf::NR ? Cf::NR : panel_width<Cf>(n), j = j0 + jr;
        T* d = dst + jr * kc;
        if (!g.tb) {
            for (i64 k = 0; k < kr; ++k) {
                std::memcpy(d + k * w, g.B + (p0 + k) * g.ldb + j, sizeof(T) * n);
                std::fill(d + k * w + n, d + (k + 1) * w, T(0));
            }
        } else {
            i64 c = 0;
            for (; c + TB <= n; c += TB) transpose_lines(g.B + (j + c) * g.ldb + p0, g.ldb, kr, d + c, w);
            for (; c < w; ++c) {
                const T* src = g.B + (j + c) * g.ldb + p0;
                for (i64 k = 0; k < kr; ++k) d[k * w + c] = c < n ? src[k] : T(0);
            }
        }
        for (i64 k = kr; k < kc; ++k)
            for (i64 c = 0; c < w; ++c) d[k * w + c] = c < n ? g.bias[j + c] : T(0);
    }
}

#ifdef FASTNN_X86
// 8 rows x 16*NV floats of C (8 or 16 zmm accumulators) from a packed 8-row A panel and a 16*NV-wide B panel;
// stores masked to the m x n corner. beta is 0 (overwrite) or 1 (accumulate: later depth blocks).
#define FASTNN_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
template <int NV>
FASTNN_AVX512 void gemm_f32__avx512f_8xnarrow(i64 kc, const float* a, const float* b, float* c, i64 ldc, float beta,
                                              i64 m, i64 n) {
    constexpr i64 W = 16 * NV;
#define FASTNN_DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = c##i##0;
    FASTNN_ROWS8(FASTNN_DECL)
#undef FASTNN_DECL
#pragma GCC unroll 4
    for (i64 k = 0; k < kc; ++k, a += 8, b += W) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = NV > 1 ? _mm512_loadu_ps(b + 16) : b0;
#define FASTNN_FMA(i)                                                           \
    {                                                                           \
        const __m512 ai = _mm512_set1_ps(a[i]);                                 \
        c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);                             \
        if constexpr (NV > 1) c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);       \
    }
        FASTNN_ROWS8(FASTNN_FMA)
#undef FASTNN_FMA
    }
    const __mmask16 k0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
    const __mmask16 k1 = n >= 32 ? __mmask16(0xFFFF) : n > 16 ? __mmask16((1u << (n - 16)) - 1) : __mmask16(0);
#define FASTNN_STORE(i)                                                                        \
    if (i < m) {                                                                               \
        float* p = c + i * ldc;                                                                \
        if (beta != 0.0f) c##i##0 = _mm512_add_ps(c##i##0, _mm512_maskz_loadu_ps(k0, p));      \
        _mm512_mask_storeu_ps(p, k0, c##i##0);                                                 \
        if constexpr (NV > 1) {                                                                \
            if (beta != 0.0f) c##i##1 = _mm512_add_ps(c##i##1, _mm512_maskz_loadu_ps(k1, p + 16)); \
            _mm512_mask_storeu_ps(p + 16, k1, c##i##1);                                        \
        }                                                                                      \
    }
    FASTNN_ROWS8(FASTNN_STORE)
#undef FASTNN_STORE
}
#undef FASTNN_ROWS8
#endif

// The kernel for one panel: the configuration's microkernel for full-width panels, the narrow ones for the rest.
template <class Cf, typename T>
inline void panel_kernel(Ukernel<T> uk, i64 w, i64 kc, const T* a, const T* b, T* c, i64 ldc, T beta, i64 m, i64 n) {
#ifdef FASTNN_X86
    if constexpr (std::is_same<Cf, Avx512F32>::value) {
        if (w == 16) return gemm_f32__avx512f_8xnarrow<1>(kc, a, b, c, ldc, beta, m, n);
        if (w == 32) return gemm_f32__avx512f_8xnarrow<2>(kc, a, b, c, ldc, beta, m, n);
    }
#endif
    (void)w;
    uk(kc, a, b, c, ldc, T(1), beta, m, n);
}

// One thread's block: virtual rows [i0, i1), columns [j0, j1), depth [p0, p1) into C (row i at C + i*ldc). The loops
// of gemm_blocked (gemm_packed.h), with this file's packers and panel kernels.
template <class Cf, typename T>
void gemm_block(const Gemm<T>& g, i64 i0, i64 i1, i64 j0, i64 j1, i64 p0, i64 p1, T* C, i64 ldc) {
    if (i1 <= i0 || j1 <= j0 || p1 <= p0) return;
    const Ukernel<T> uk = ukernel<Cf>();
    Buffer<T>& abuf = scratch<T>(Slot::gemm_a);
    Buffer<T>& bbuf = scratch<T>(Slot::gemm_b);
    if ((i64)abuf.size() < Cf::MC * Cf::KC) abuf.resize(Cf::MC * Cf::KC);
    if ((i64)bbuf.size() < Cf::KC * Cf::NC) bbuf.resize(Cf::KC * Cf::NC);
    const i64 kb = depth_block<Cf>(p1 - p0);
    for (i64 jc = j0; jc < j1; jc += Cf::NC) {
        const i64 nc = std::min(Cf::NC, j1 - jc);
        for (i64 pc = p0; pc < p1; pc += kb) {
            const i64 kc = std::min(kb, p1 - pc);
            const T beta = pc == p0 ? T(0) : T(1);
            pack_b<Cf>(g, pc, kc, jc, nc, bbuf.data());
            for (i64 ic = i0; ic < i1; ic += Cf::MC) {
                const i64 mc = std::min(Cf::MC, i1 - ic);
                pack_a<Cf>(g, ic, mc, pc, kc, abuf.data());
                for (i64 jr = 0; jr < nc; jr += Cf::NR) {
                    const i64 n = std::min(Cf::NR, nc - jr), w = n == Cf::NR ? n : panel_width<Cf>(n);
                    for (i64 ir = 0; ir < mc; ir += Cf::MR)
                        panel_kernel<Cf>(uk, w, kc, abuf.data() + ir * kc, bbuf.data() + jr * kc,
                                         C + (ic + ir) * ldc + jc + jr, ldc, beta, std::min(Cf::MR, mc - ir), n);
                }
            }
        }
    }
}

// Columns computed for N real ones (full panels + the last panel's width).
template <class Cf>
i64 computed_columns(i64 N) {
    const i64 tail = N % Cf::NR;
    return N - tail + (tail ? panel_width<Cf>(tail) : 0);
}

// The threads take one block each, split along the rows (each thread then packs all of op(B)), the columns (each
// packs all of op(A)) or the depth (no operand packed twice; partial sums added at the end), whichever the cost
// model says is cheapest: FMA time of the most loaded thread + the duplicated packing or the reduction, in element
// operations (a microkernel FMA of 16 float lanes ~ 1/32 cycle per element; packing or adding ~ 1 per element).
template <class Cf, typename T>
void dense_gemm_cfg(const Gemm<T>& g) {
    constexpr i64 MR = Cf::MR, NR = Cf::NR;
    const i64 Mv = g.Mv(), N = g.N, Kv = g.Kv();
    const double lanes = 64.0 / sizeof(T) * 2;  // FMA lanes per cycle: two 512-bit FMA units (an estimate)
    const int nt = parallel_work(double(Mv) * N * Kv / 64);
    if (nt == 1) return gemm_block<Cf>(g, 0, Mv, 0, N, 0, Kv, g.C, g.ldc);
    const i64 rp = (Mv + MR - 1) / MR, cols = computed_columns<Cf>(N), npan = (N + NR - 1) / NR;
    const double rows_t = double((rp + nt - 1) / nt * MR), all_rows = double(rp * MR);
    const double cols_t = double(std::min<i64>(cols, (npan + nt - 1) / nt * NR));
    const double by_rows = rows_t * cols * Kv / lanes + double(Kv) * N;
    const double by_cols = all_rows * cols_t * Kv / lanes + double(Mv) * Kv;
    const i64 kpart = (Kv + nt - 1) / nt;
    const double by_depth = all_rows * cols * kpart / lanes + 2.0 * Mv * N * (nt - 1);
    if (kpart >= 32 && by_depth < by_rows && by_depth < by_cols) {
        // split-K: part 0 writes C, the others their own buffer (in the calling thread's gemm_shared slot, which no
        // other part of this call uses), summed into C after.
        Buffer<T>& part = scratch<T>(Slot::gemm_shared);
        const i64 plane = Mv * N;
        if ((i64)part.size() < plane * (nt - 1)) part.resize(plane * (nt - 1));
        T* const parts = part.data();
        parallel_tasks(nt, [&](i64 t) {
            const i64 p0 = t * kpart, p1 = std::min(Kv, p0 + kpart);
            if (t == 0) gemm_block<Cf>(g, 0, Mv, 0, N, p0, p1, g.C, g.ldc);
            else gemm_block<Cf>(g, 0, Mv, 0, N, p0, p1, parts + (t - 1) * plane, N);
        }, nt);
        const i64 nparts = std::min<i64>(nt, (Kv + kpart - 1) / kpart);
        parallel_for(Mv, std::max<i64>(1, (Mv + nt - 1) / nt), [&](i64 r0, i64 r1) {
            for (i64 t = 1; t < nparts; ++t)
                for (i64 r = r0; r < r1; ++r) {
                    T* c = g.C + r * g.ldc;
                    const T* q = parts + (t - 1) * plane + r * N;
#pragma omp simd
                    for (i64 j = 0; j < N; ++j) c[j] += q[j];
                }
        }, nt);
        return;
    }
    if (by_rows <= by_cols) {
        parallel_tasks(nt, [&](i64 t) {
            const i64 i0 = rp * t / nt * MR, i1 = std::min(Mv, rp * (t + 1) / nt * MR);
            gemm_block<Cf>(g, i0, i1, 0, N, 0, Kv, g.C, g.ldc);
        }, nt);
    } else {
        parallel_tasks(nt, [&](i64 t) {  // whole panels; the narrow last one counts for its width
            const i64 j0 = npan * t / nt * NR, j1 = std::min(N, npan * (t + 1) / nt * NR);
            gemm_block<Cf>(g, 0, Mv, j0, j1, 0, Kv, g.C, g.ldc);
        }, nt);
    }
}

template <typename T>
void dense_gemm(const Gemm<T>& g) {
    if (g.Mv() <= 0 || g.N <= 0) return;
    with_cfg<T>([&](auto cfg) { dense_gemm_cfg<decltype(cfg)>(g); });
}

// ------------------------------------------------------------------------------------------------ gemm_small
// Float products small enough that packing costs more than it saves (the MLP's 100x100 layers, batch 1-20, 10
// outputs): C = op(A) @ B (+ bias) with both operands read as they lie, AVX-512. A tile of R rows x V vectors of 16
// columns (the last masked) is held in R*V <= 28 zmm accumulators that start from the bias; row r's depth k is
// a[r*sr + k*sk] (sk = 1: x; sr = 1, sk = lda: x^T), B's depth row k is b + k*ldb.
#ifdef FASTNN_X86
using SmallFn = void (*)(i64, const float*, i64, i64, const float*, i64, const float*, float*, i64, __mmask16, bool);
constexpr int small_rows(int V) { return V <= 3 ? 8 : V == 4 ? 6 : V == 5 ? 5 : 4; }  // R for V = 1..7

template <int R, int V>
FASTNN_AVX512 void small_tile(i64 K, const float* a, i64 sr, i64 sk, const float* b, i64 ldb, const float* bias,
                              float* c, i64 ldc, __mmask16 last, bool accumulate) {
    __m512 acc[R][V];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
            const __mmask16 m = v == V - 1 ? last : __mmask16(0xFFFF);
            acc[r][v] = bias ? _mm512_maskz_loadu_ps(m, bias + 16 * v) : _mm512_setzero_ps();
            if (accumulate) acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(m, c + r * ldc + 16 * v));
        }
    for (i64 k = 0; k < K; ++k) {
        const float* bk = b + k * ldb;
        const float* ak = a + k * sk;
        __m512 bv[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v)
            bv[v] = _mm512_maskz_loadu_ps(v == V - 1 ? last : __mmask16(0xFFFF), bk + 16 * v);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512 x = _mm512_set1_ps(ak[r * sr]);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v)
            _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == V - 1 ? last : __mmask16(0xFFFF), acc[r][v]);
}

// table[V][R]: the tile of R rows (1..small_rows(V)) and V vectors.
template <int V, int... I>
constexpr std::array<SmallFn, 9> small_tiles(std::integer_sequence<int, I...>) {
    return {{nullptr, &small_tile<(I + 1 < small_rows(V) ? I + 1 : small_rows(V)), V>...}};
}
const std::array<SmallFn, 9> kSmall[8] = {
    {}, small_tiles<1>(std::make_integer_sequence<int, 8>{}), small_tiles<2>(std::make_integer_sequence<int, 8>{}),
    small_tiles<3>(std::make_integer_sequence<int, 8>{}), small_tiles<4>(std::make_integer_sequence<int, 8>{}),
    small_tiles<5>(std::make_integer_sequence<int, 8>{}), small_tiles<6>(std::make_integer_sequence<int, 8>{}),
    small_tiles<7>(std::make_integer_sequence<int, 8>{})};

// C (N x M, row stride ldc) = op(A) @ B + bias (+ C when accumulate) over column blocks of at most 7 vectors (as
// even as possible) and row tiles; the threads take (column block, row tile) tasks in contiguous runs.
void gemm_small(i64 N, i64 M, i64 K, const float* A, i64 sr, i64 sk, const float* B, i64 ldb, const float* bias,
                float* C, i64 ldc, bool accumulate = false) {
    const i64 nv = (M + 15) / 16, nb = (nv + 6) / 7, vb = (nv + nb - 1) / nb;
    const int R = small_rows(int(vb));
    const i64 tiles = (N + R - 1) / R, tasks = nb * tiles;
    const int nt = parallel_work(double(N) * M * K / 64);
    parallel_for(tasks, nt == 1 ? tasks : (tasks + nt - 1) / nt, [&](i64 t0, i64 t1) {
        for (i64 t = t0; t < t1; ++t) {
            const i64 jb = t / tiles, i0 = (t % tiles) * R;
            const i64 c0 = jb * vb * 16, c1 = std::min(M, c0 + vb * 16), V = (c1 - c0 + 15) / 16;
            const i64 tail = c1 - c0 - 16 * (V - 1);
            const __mmask16 last = tail == 16 ? __mmask16(0xFFFF) : __mmask16((1u << tail) - 1);
            const i64 rows = std::min<i64>(R, N - i0);
            kSmall[V][rows](K, A + i0 * sr, sr, sk, B + c0, ldb, bias ? bias + c0 : nullptr, C + i0 * ldc + c0, ldc,
                            last, accumulate);
        }
    }, nt);
}
#endif

// The small path runs where it measured faster than the packed driver (float, AVX-512, 2-core Xeon, medians of
// interleaved runs): B (K x M) within 512 KiB, so the row tiles stream it from L2, and few rows (batch 1-20:
// 4x784x100 6.5 vs 17.0 us, 20x100x100 4.0 vs 5.1), narrow outputs (100x100x10: 2.7 vs 4.5; 100x784x50: 58 vs
// 77) or a shallow depth (dW at batch <= 8), where packing costs more than it saves. The MLP's 100x100 and
// 100x784x100 layers stay packed (15.5 vs 18.1, 79 vs 86: the packed 8x48 tile needs fewer loads per FMA).
inline bool small_fits(i64 N, i64 M, i64 K) {
#ifdef FASTNN_X86
    return has_avx512f() && ((K * M * i64(sizeof(float)) <= (i64(512) << 10) && (N <= 32 || M <= 64 || K <= 8)) || N <= 8);
#else
    (void)N, (void)M, (void)K;
    return false;
#endif
}

}  // namespace

bool gemm_small_f32(i64 N, i64 M, i64 K, const float* A, i64 sr, i64 sk, const float* B, i64 ldb, const float* bias,
                    float* C, i64 ldc, bool accumulate) {
#ifdef FASTNN_X86
    if (N <= 0 || M <= 0 || K <= 0 || !small_fits(N, M, K)) return false;
    gemm_small(N, M, K, A, sr, sk, B, ldb, bias, C, ldc, accumulate);
    return true;
#else
    (void)A, (void)sr, (void)sk, (void)B, (void)ldb, (void)bias, (void)C, (void)ldc, (void)accumulate;
    return false;
#endif
}

namespace {

// ------------------------------------------------------------------------------------------------- dropout

FASTNN_INLINE std::uint32_t lowbias32(std::uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

template <typename T>
FASTNN_INLINE void dropout_body(const T* x, T* y, i64 n, std::uint32_t lo0, std::uint32_t k1, std::uint32_t k2,
                                std::uint32_t thr, T s) {
#pragma omp simd
    for (i64 i = 0; i < n; ++i) {
        const std::uint32_t u = lowbias32(lowbias32((lo0 + std::uint32_t(i)) ^ k1) ^ k2);
        y[i] = x[i] * (u >= thr ? s : T(0));
    }
}
// 16 lanes: the hash's four 32-bit multiplies per element made the AVX2 copy compute-bound (2.3 cycles/element)
FASTNN_SIMD_DISPATCH_WIDE(dropout)

// np.random.rand, as NumPy's legacy generator computes it (mt19937.c: mt19937_gen, mt19937_next, and
// mt19937_next_double: (a >> 5) * 2^26 + (b >> 6), over 2^53, from two consecutive outputs a, b), but in loops the
// compiler vectorises: the books' Dropout draws its mask with `np.random.rand(*x.shape) > p`, which was 34 of the
// 42 us of a 100x100 Dropout forward.
constexpr int kMtN = 624, kMtM = 397;

FASTNN_INLINE std::uint32_t mt_mix(std::uint32_t a, std::uint32_t b, std::uint32_t c) {
    const std::uint32_t y = (a & 0x80000000u) | (b & 0x7fffffffu);
    return c ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
}

// The twist in NumPy's three segments; in each, the words read ahead are old and those read behind (key[i - 227])
// were written at least 227 iterations before, so every loop vectorises.
FASTNN_INLINE void mt_twist_body(std::uint32_t* key) {
    for (int i = 0; i < kMtN - kMtM; ++i) key[i] = mt_mix(key[i], key[i + 1], key[i + kMtM]);
    for (int i = kMtN - kMtM; i < kMtN - 1; ++i) key[i] = mt_mix(key[i], key[i + 1], key[i + kMtM - kMtN]);
    key[kMtN - 1] = mt_mix(key[kMtN - 1], key[0], key[kMtM - 1]);
}
FASTNN_SIMD_DISPATCH_WIDE(mt_twist)

FASTNN_INLINE void mt_temper_body(const std::uint32_t* key, std::uint32_t* out, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) {
        std::uint32_t y = key[i];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        out[i] = y ^ (y >> 18);
    }
}
FASTNN_SIMD_DISPATCH_WIDE(mt_temper)

// Draws from pairs of outputs. For `keep`, draw > p is the 53-bit integer (a >> 5) * 2^26 + (b >> 6) > floor(p * 2^53)
// = ta * 2^26 + tb (p * 2^53 is exact), compared in 32-bit halves: bytes out of 32-bit lanes vectorise, doubles not.
FASTNN_INLINE void mt_pairs_body(const std::uint32_t* w, i64 n, double* u, std::uint8_t* keep, std::uint32_t ta,
                                 std::uint32_t tb) {
    if (u) {
#pragma omp simd
        for (i64 i = 0; i < n; ++i)
            u[i] = (double(w[2 * i] >> 5) * 67108864.0 + double(w[2 * i + 1] >> 6)) * (1.0 / 9007199254740992.0);
    } else {
#pragma omp simd
        for (i64 i = 0; i < n; ++i) {
            const std::uint32_t a = w[2 * i] >> 5, b = w[2 * i + 1] >> 6;
            keep[i] = (a > ta) | ((a == ta) & (b > tb));
        }
    }
}
FASTNN_SIMD_DISPATCH_WIDE(mt_pairs)

template <typename T>
FASTNN_INLINE void dropout_mask_body(const T* x, T* y, i64 n, const std::uint8_t* mb, const T* mf, T s) {
    if (mb) {
#pragma omp simd
        for (i64 i = 0; i < n; ++i) y[i] = x[i] * (T(mb[i]) * s);  // bool bytes are 0 or 1: s or 0
    } else {
#pragma omp simd
        for (i64 i = 0; i < n; ++i) y[i] = x[i] * (mf[i] * s);
    }
}
FASTNN_SIMD_DISPATCH(dropout_mask)

}  // namespace

bool mt19937_rand(MT19937State* st, i64 n, double* u, std::uint8_t* keep, double p) {
    if (st->pos < 0 || st->pos > kMtN) return false;
    // p < 0 keeps every draw (the integer test at p = 0 would drop a draw of exactly 0), p >= 1 none; otherwise
    // floor(p * 2^53) split at bit 26.
    std::uint32_t ta = 0, tb = 0;
    bool all = false, none = false;
    if (keep) {
        if (p != p || p >= 1) none = true;   // NaN: `draw > nan` is false
        else if (p < 0) all = true;
        else {
            const std::uint64_t t = std::uint64_t(p * 9007199254740992.0);
            ta = std::uint32_t(t >> 26);
            tb = std::uint32_t(t & ((1u << 26) - 1));
        }
    }
    constexpr i64 kBlock = 2048;  // draws per block: 16 KiB of outputs, in L1
    std::uint32_t w[2 * kBlock];
    for (i64 done = 0; done < n;) {
        const i64 m = std::min(kBlock, n - done);
        for (i64 got = 0; got < 2 * m;) {
            if (st->pos == kMtN) {
                mt_twist_wide(st->key);
                st->pos = 0;
            }
            const int k = int(std::min<i64>(kMtN - st->pos, 2 * m - got));
            mt_temper_wide(st->key + st->pos, w + got, k);
            st->pos += k;
            got += k;
        }
        mt_pairs_wide(w, m, u ? u + done : nullptr, keep ? keep + done : nullptr, ta, tb);
        if (all || none) std::memset(keep + done, all ? 1 : 0, size_t(m));
        done += m;
    }
    return true;
}

// ------------------------------------------------------------------------------------------------- linear

template <typename T>
FASTNN_INLINE void add_row_body(T* d, const T* s, i64 D) {
#pragma omp simd
    for (i64 j = 0; j < D; ++j) d[j] += s[j];
}
FASTNN_SIMD_DISPATCH(add_row)

// algo: 0 = the rule below, 1 = the packed driver (gemm__rows at <= 4 rows), 2 = gemm_small (float, AVX-512).
template <typename T>
static bool use_small(int algo, i64 N, i64 M, i64 K) {
    if (algo == 2 && !(std::is_same<T, float>::value && packed::has_avx512f()))
        throw std::invalid_argument("linear: algorithm 'small' cannot run this call (float32 on AVX-512 only)");
    return std::is_same<T, float>::value && (algo == 2 || (algo == 0 && small_fits(N, M, K)));
}

template <typename T>
void linear_fwd(const T* x, const T* w, const T* b, T* y, i64 N, i64 D, i64 M, int algo) {
#ifdef FASTNN_X86
    if constexpr (std::is_same<T, float>::value)
        if (use_small<T>(algo, N, M, D)) return gemm_small(N, M, D, x, D, 1, w, M, b, y, M);
#endif
    if (N <= 4) {  // a few rows: gemm__rows reads W as it lies (packing it would cost more than the product)
        for (i64 n = 0; n < N; ++n)
            if (b) std::memcpy(y + n * M, b, sizeof(T) * M);
        return gemm<T>(false, false, N, M, D, T(1), x, D, w, M, b ? T(1) : T(0), y, M);
    }
    dense_gemm<T>(Gemm<T>{false, false, N, M, D, x, D, w, M, b, false, y, M});
}

template <typename T>
void linear_bwd(const T* dy, const T* x, const T* w, T* dx, T* dw, i64 N, i64 D, i64 M, bool with_bias, int algo) {
    // dx = dy @ W^T (op(B) transposed: the small path would need W^T; the packed driver transposes while packing)
    if (N <= 4) gemm<T>(false, true, N, D, M, T(1), dy, M, w, M, T(0), dx, D);
    else dense_gemm<T>(Gemm<T>{false, true, N, D, M, dy, M, w, M, nullptr, false, dx, D});
#ifdef FASTNN_X86
    if constexpr (std::is_same<T, float>::value)
        if (use_small<T>(algo, D, M, N)) {  // dW = x^T @ dy: row d's depth n at x[n*D + d]
            gemm_small(D, M, N, x, 1, D, dy, M, nullptr, dw, M);
            if (with_bias) {
                T* db = dw + D * M;
                std::memcpy(db, dy, sizeof(T) * M);
                for (i64 n = 1; n < N; ++n) add_row(db, dy + n * M, M);
            }
            return;
        }
#endif
    dense_gemm<T>(Gemm<T>{true, false, D, M, N, x, D, dy, M, nullptr, with_bias, dw, M});
}

// ------------------------------------------------------------------------------------------------- embedding

std::string bad_embedding_index(i64 value, i64 position, i64 V) {
    return "indices: " + std::to_string(value) + " at position " + std::to_string(position) + " is outside [0, " +
           std::to_string(V) + "), the rows of weight";
}

template <typename I, typename T>
void embedding_fwd(const I* idx, const T* w, T* y, i64 N, i64 V, i64 D) {
    for (i64 n = 0; n < N; ++n)  // checked before any work: a bad index leaves y unwritten (the call returns none)
        if (idx[n] < 0 || i64(idx[n]) >= V) throw std::invalid_argument(bad_embedding_index(idx[n], n, V));
    const int nt = parallel_work(double(N) * D * 2);
    parallel_for(N, nt == 1 ? N : (N + 4 * nt - 1) / (4 * nt), [&](i64 n0, i64 n1) {
        for (i64 n = n0; n < n1; ++n) std::memcpy(y + n * D, w + i64(idx[n]) * D, sizeof(T) * D);
    }, nt);
}

template <typename I, typename T>
void embedding_bwd(const T* dy, const I* idx, T* dw, i64 N, i64 V, i64 D) {
    for (i64 n = 0; n < N; ++n)
        if (idx[n] < 0 || i64(idx[n]) >= V) throw std::invalid_argument(bad_embedding_index(idx[n], n, V));
    // Each task owns rows [v0, v1) of dw: zeroes them, then adds the dy rows whose index falls there, in order of n
    // (every task scans all N indices, which costs N reads against its share of the V*D zeroing and N*D adds).
    const int nt = parallel_work(double(V) * D + 2.0 * N * D);
    const i64 tasks = nt == 1 ? 1 : std::min<i64>(V, 4 * nt);
    parallel_tasks(tasks, [&](i64 t) {
        const i64 v0 = V * t / tasks, v1 = V * (t + 1) / tasks;
        std::memset(dw + v0 * D, 0, sizeof(T) * (v1 - v0) * D);
        for (i64 n = 0; n < N; ++n) {
            const i64 v = idx[n];
            if (v >= v0 && v < v1) add_row(dw + v * D, dy + n * D, D);
        }
    }, nt);
}

// ------------------------------------------------------------------------------------------------- dropout

std::uint64_t dropout_key(std::uint64_t seed, std::uint64_t hi) {
    std::uint64_t z = (seed ^ (hi * 0xD1B54A32D192ED03ULL)) + 0x9E3779B97F4A7C15ULL;  // splitmix64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

template <typename T>
void dropout_apply(const T* x, T* y, i64 n, std::uint64_t seed, std::uint64_t thr, T s, const std::uint8_t* mask_b,
                   const T* mask_f) {
    const int nt = parallel_work(2.0 * n);
    const i64 chunk = nt == 1 ? n : std::max<i64>(4096, (n + 8 * nt - 1) / (8 * nt));
    parallel_for(n, chunk, [&](i64 b, i64 e) {
        if (mask_b || mask_f) return dropout_mask(x + b, y + b, e - b, mask_b ? mask_b + b : nullptr,
                                                  mask_f ? mask_f + b : nullptr, s);
        if (thr >= (std::uint64_t(1) << 32)) {  // p == 1: nothing kept (x * 0 keeps NaN as NaN, like the others)
            for (i64 i = b; i < e; ++i) y[i] = x[i] * T(0);
            return;
        }
        while (b < e) {  // segments of one i >> 32 (one key)
            const std::uint64_t hi = std::uint64_t(b) >> 32;
            const i64 end = std::min<i64>(e, i64((hi + 1) << 32));
            const std::uint64_t key = dropout_key(seed, hi);
            dropout_wide(x + b, y + b, end - b, std::uint32_t(b), std::uint32_t(key), std::uint32_t(key >> 32),
                    std::uint32_t(thr), s);
            b = end;
        }
    }, nt);
}

#define FASTNN_DENSE(T)                                                                                            \
    template void linear_fwd<T>(const T*, const T*, const T*, T*, i64, i64, i64, int);                                 \
    template void linear_bwd<T>(const T*, const T*, const T*, T*, T*, i64, i64, i64, bool, int);                       \
    template void embedding_fwd<std::int32_t, T>(const std::int32_t*, const T*, T*, i64, i64, i64);                 \
    template void embedding_fwd<std::int64_t, T>(const std::int64_t*, const T*, T*, i64, i64, i64);                 \
    template void embedding_bwd<std::int32_t, T>(const T*, const std::int32_t*, T*, i64, i64, i64);                 \
    template void embedding_bwd<std::int64_t, T>(const T*, const std::int64_t*, T*, i64, i64, i64);                 \
    template void dropout_apply<T>(const T*, T*, i64, std::uint64_t, std::uint64_t, T, const std::uint8_t*, const T*);
FASTNN_DENSE(float)
FASTNN_DENSE(double)
#undef FASTNN_DENSE

}  // namespace fastnn
