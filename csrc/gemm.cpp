// GEMM shared by conv2d and LSTM: C = alpha * op(A) @ op(B) + beta * C (row-major).
//
// Variants, in order:
//   gemm__scalar<T, MR, NR>      portable microkernels with the packed structure below (compiler may use SSE2),
//                                one per configuration tile.
//   gemm_f32__avx2_fma_6x16,
//   gemm_f64__avx2_fma_6x8       register-blocked AVX2/FMA microkernels: 12 ymm accumulators, 2 B loads and
//                                6 broadcasts per depth step; compiled with a function-level target attribute and
//                                chosen at run time (fastnn::has_avx2_fma), so the library still runs without AVX2.
//   gemm_f32__avx512f_8x48,
//   gemm_f64__avx512f_8x16       the same with 24 (float: 3 B loads per step) or 16 zmm accumulators, where the
//                                CPU has AVX-512F.
//   *_ind                        the same kernels reading B rows through a pointer table (conv implicit GEMM).
//   gemm                         BLIS-style driver (gemm_packed.h): pack A/B into cache-sized panels, threads over
//                                independent output blocks.
#include <algorithm>
#include <vector>

#include "gemm_packed.h"
#include "simd.h"

namespace fastnn {

namespace packed {

// Store an accumulated tile: C = alpha * acc + beta * C for the m x n valid corner (beta == 0 never reads C,
// so NaN/garbage in an uninitialised C cannot leak into the result).
template <typename T, i64 MR, i64 NR>
static inline void store_tile(const T* acc, T* c, i64 ldc, T alpha, T beta, i64 m, i64 n) {
    for (i64 i = 0; i < m; ++i)
        for (i64 j = 0; j < n; ++j) {
            const T v = alpha * acc[i * NR + j];
            c[i * ldc + j] = beta == T(0) ? v : v + beta * c[i * ldc + j];
        }
}

// Portable fallback with the same packed layout as the SIMD kernels. BK(k) is the address of B's depth row k:
// the packed panel (b + k*NR) or, for the indirect variants, a row pointer table (brow[k] + boff).
template <typename T, i64 MR, i64 NR, class BK>
static inline void gemm__scalar_body(i64 kc, const T* a, BK bk, T* c, i64 ldc, T alpha, T beta, i64 m, i64 n) {
    T acc[MR * NR] = {};
    for (i64 k = 0; k < kc; ++k, a += MR) {
        const T* b = bk(k);
        for (i64 i = 0; i < MR; ++i)
            for (i64 j = 0; j < NR; ++j) acc[i * NR + j] += a[i] * b[j];
    }
    store_tile<T, MR, NR>(acc, c, ldc, alpha, beta, m, n);
}
template <typename T, i64 MR, i64 NR>
static void gemm__scalar(i64 kc, const T* a, const T* b, T* c, i64 ldc, T alpha, T beta, i64 m, i64 n) {
    gemm__scalar_body<T, MR, NR>(kc, a, [b](i64 k) { return b + k * NR; }, c, ldc, alpha, beta, m, n);
}
template <typename T, i64 MR, i64 NR>
static void gemm__scalar_ind(i64 kc, const T* a, const T* const* brow, i64 boff, T* c, i64 ldc, T alpha, T beta,
                             i64 m, i64 n) {
    gemm__scalar_body<T, MR, NR>(kc, a, [brow, boff](i64 k) { return brow[k] + boff; }, c, ldc, alpha, beta, m, n);
}

#ifdef FASTNN_X86
// One body for every SIMD microkernel: ROWS(X) lists the tile's rows, each row is two vectors of W lanes.
// The accumulators are named variables, not an array: GCC spills an array of vectors to the stack on every step.
#define FASTNN_DECL(i) V c##i##0 = SETZERO(), c##i##1 = c##i##0, c##i##2 = c##i##0;
#define FASTNN_FMA_ROW(i)                                 \
    {                                                     \
        const V ai = BCAST(a + i);                        \
        c##i##0 = FMA(ai, b0, c##i##0);                   \
        c##i##1 = FMA(ai, b1, c##i##1);                   \
        if constexpr (NV > 2) c##i##2 = FMA(ai, b2, c##i##2); \
    }
#define FASTNN_STORE_ROW(i)                                 \
    {                                                       \
        T* p = c + i * ldc;                                 \
        V v0 = MUL(va, c##i##0), v1 = MUL(va, c##i##1);     \
        if (beta != T(0)) {                                 \
            v0 = FMA(vb, LOADU(p), v0);                     \
            v1 = FMA(vb, LOADU(p + W), v1);                 \
        }                                                   \
        STOREU(p, v0);                                      \
        STOREU(p + W, v1);                                  \
        if constexpr (NV > 2) {                             \
            V v2 = MUL(va, c##i##2);                        \
            if (beta != T(0)) v2 = FMA(vb, LOADU(p + 2 * W), v2); \
            STOREU(p + 2 * W, v2);                          \
        }                                                   \
    }
#define FASTNN_SPILL_ROW(i) STOREU(t + NV * W * i, c##i##0); STOREU(t + NV * W * i + W, c##i##1); \
    if constexpr (NV > 2) STOREU(t + NV * W * i + 2 * W, c##i##2);
#define FASTNN_PREFETCH_ROW(i)                                                                   \
    for (i64 l = 0; l < NV * W * (i64)sizeof(T); l += 64)                                          \
        _mm_prefetch((const char*)(c + i * ldc) + l, _MM_HINT_T0);                                 \
    _mm_prefetch((const char*)(c + i * ldc + NV * W - 1), _MM_HINT_T0);
#define FASTNN_UKERNEL_BODY(MR, BK)                                         \
    ROWS(FASTNN_PREFETCH_ROW) /* C is touched only after the loop: start fetching it now */ \
    ROWS(FASTNN_DECL)                                                       \
    _Pragma("GCC unroll 4")                                                 \
    for (i64 k = 0; k < kc; ++k, a += MR) {                                 \
        _mm_prefetch((const char*)(a + 8 * MR), _MM_HINT_T0);               \
        const T* bk = BK;                                                   \
        const V b0 = LOADU(bk), b1 = LOADU(bk + W), b2 = NV > 2 ? LOADU(bk + 2 * W) : b0; \
        ROWS(FASTNN_FMA_ROW)                                                \
    }                                                                       \
    const V va = SET1(alpha), vb = SET1(beta);                              \
    if (m == MR && n == NV * W) {                                           \
        ROWS(FASTNN_STORE_ROW)                                              \
        return;                                                             \
    }                                                                       \
    T t[MR * NV * W];                                                       \
    ROWS(FASTNN_SPILL_ROW)                                                  \
    store_tile<T, MR, NV * W>(t, c, ldc, alpha, beta, m, n);

// Defines NAME (packed B panel) and NAME_ind (B rows through a pointer table: conv's implicit GEMM reads the
// input copy in place, no B packing) from the one body.
#define FASTNN_UKERNEL_PAIR(NAME, TARGET, TT, VV, WW, MR, NVV)                                                       \
    __attribute__((target(TARGET))) static void NAME(i64 kc, const TT* a, const TT* b, TT* c, i64 ldc,         \
                                                     TT alpha, TT beta, i64 m, i64 n) {                         \
        using T = TT;                                                                                           \
        using V = VV;                                                                                           \
        constexpr i64 W = WW, NV = NVV;                                                                         \
        FASTNN_UKERNEL_BODY(MR, b + k * NV * W)                                                                  \
    }                                                                                                           \
    __attribute__((target(TARGET))) static void NAME##_ind(i64 kc, const TT* a, const TT* const* brow,         \
                                                           i64 boff, TT* c, i64 ldc, TT alpha, TT beta, i64 m, \
                                                           i64 n) {                                             \
        using T = TT;                                                                                           \
        using V = VV;                                                                                           \
        constexpr i64 W = WW, NV = NVV;                                                                         \
        FASTNN_UKERNEL_BODY(MR, brow[k] + boff)                                                                 \
    }

// AVX2/FMA: 6 rows x 16 floats (6 x 8 doubles) of C in 12 ymm registers; per depth step 2 loads of B,
// 6 broadcasts of A, 12 FMAs.
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define SETZERO _mm256_setzero_ps
#define SET1 _mm256_set1_ps
#define LOADU _mm256_loadu_ps
#define STOREU _mm256_storeu_ps
#define BCAST _mm256_broadcast_ss
#define MUL _mm256_mul_ps
#define FMA _mm256_fmadd_ps
FASTNN_UKERNEL_PAIR(gemm_f32__avx2_fma_6x16, FASTNN_TARGET_AVX2, float, __m256, 8, 6, 2)
#undef SETZERO
#undef SET1
#undef LOADU
#undef STOREU
#undef BCAST
#undef MUL
#undef FMA
#define SETZERO _mm256_setzero_pd
#define SET1 _mm256_set1_pd
#define LOADU _mm256_loadu_pd
#define STOREU _mm256_storeu_pd
#define BCAST _mm256_broadcast_sd
#define MUL _mm256_mul_pd
#define FMA _mm256_fmadd_pd
FASTNN_UKERNEL_PAIR(gemm_f64__avx2_fma_6x8, FASTNN_TARGET_AVX2, double, __m256d, 4, 6, 2)
#undef SETZERO
#undef SET1
#undef LOADU
#undef STOREU
#undef BCAST
#undef MUL
#undef FMA
#undef ROWS

// AVX-512F: 8 rows x 48 floats in 24 zmm registers (8 x 16 doubles in 16): twice the lanes per FMA of AVX2.
// Float measured against 8x32 (16 accumulators) on one thread: 3x3 convs 1.5-9 % faster (three FMAs per broadcast
// instead of two); 12x32 ran as fast alone but wastes rows on 64-channel layers (64 = 5.3 x 12).
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define SETZERO _mm512_setzero_ps
#define SET1 _mm512_set1_ps
#define LOADU _mm512_loadu_ps
#define STOREU _mm512_storeu_ps
#define BCAST(p) _mm512_set1_ps(*(p))
#define MUL _mm512_mul_ps
#define FMA _mm512_fmadd_ps
FASTNN_UKERNEL_PAIR(gemm_f32__avx512f_8x48, FASTNN_TARGET_AVX512, float, __m512, 16, 8, 3)
#undef SETZERO
#undef SET1
#undef LOADU
#undef STOREU
#undef BCAST
#undef MUL
#undef FMA
#define SETZERO _mm512_setzero_pd
#define SET1 _mm512_set1_pd
#define LOADU _mm512_loadu_pd
#define STOREU _mm512_storeu_pd
#define BCAST(p) _mm512_set1_pd(*(p))
#define MUL _mm512_mul_pd
#define FMA _mm512_fmadd_pd
FASTNN_UKERNEL_PAIR(gemm_f64__avx512f_8x16, FASTNN_TARGET_AVX512, double, __m512d, 8, 8, 2)
#undef SETZERO
#undef SET1
#undef LOADU
#undef STOREU
#undef BCAST
#undef MUL
#undef FMA
#undef ROWS
#undef FASTNN_UKERNEL_PAIR
#undef FASTNN_UKERNEL_BODY
#undef FASTNN_SPILL_ROW
#undef FASTNN_PREFETCH_ROW
#undef FASTNN_STORE_ROW
#undef FASTNN_FMA_ROW
#undef FASTNN_DECL
#endif

// The microkernel of each configuration: SIMD when the CPU has it, else the scalar one with the same tile
// (the AVX-512 configurations are only chosen when has_avx512f(), see with_cfg).
#ifdef FASTNN_X86
#define FASTNN_PICK(COND, SIMD, SCALAR) return (COND) ? SIMD : SCALAR
#else
#define FASTNN_PICK(COND, SIMD, SCALAR) return SCALAR
#endif
template <> Ukernel<float> ukernel<Avx2F32>() { FASTNN_PICK(has_avx2_fma(), gemm_f32__avx2_fma_6x16, (gemm__scalar<float, 6, 16>)); }
template <> Ukernel<double> ukernel<Avx2F64>() { FASTNN_PICK(has_avx2_fma(), gemm_f64__avx2_fma_6x8, (gemm__scalar<double, 6, 8>)); }
template <> Ukernel<float> ukernel<Avx512F32>() { FASTNN_PICK(has_avx512f(), gemm_f32__avx512f_8x48, (gemm__scalar<float, 8, 48>)); }
template <> Ukernel<double> ukernel<Avx512F64>() { FASTNN_PICK(has_avx512f(), gemm_f64__avx512f_8x16, (gemm__scalar<double, 8, 16>)); }
template <> UkernelInd<float> ukernel_ind<Avx2F32>() { FASTNN_PICK(has_avx2_fma(), gemm_f32__avx2_fma_6x16_ind, (gemm__scalar_ind<float, 6, 16>)); }
template <> UkernelInd<double> ukernel_ind<Avx2F64>() { FASTNN_PICK(has_avx2_fma(), gemm_f64__avx2_fma_6x8_ind, (gemm__scalar_ind<double, 6, 8>)); }
template <> UkernelInd<float> ukernel_ind<Avx512F32>() { FASTNN_PICK(has_avx512f(), gemm_f32__avx512f_8x48_ind, (gemm__scalar_ind<float, 8, 48>)); }
template <> UkernelInd<double> ukernel_ind<Avx512F64>() { FASTNN_PICK(has_avx512f(), gemm_f64__avx512f_8x16_ind, (gemm__scalar_ind<double, 8, 16>)); }
#undef FASTNN_PICK

// Per-thread buffers by owner (gemm_packed.h), kept between calls (the pool keeps its threads).
template <typename T>
Buffer<T>& scratch(Slot which) {
    static thread_local Buffer<T> bufs[int(Slot::count)];
    return bufs[int(which)];
}
template Buffer<float>& scratch<float>(Slot);
template Buffer<double>& scratch<double>(Slot);

}  // namespace packed

// Several threads: the operand every block reads (op(A) for column blocks, op(B) for row blocks) is packed once,
// in parallel, into the calling thread's Slot::gemm_shared and shared read-only. Packing it again per block (4 blocks per
// thread) cost 7 extra passes over a 4 MB operand per GEMM on the LSTM backward's 2048x512x2048 products.
template <class Cf, typename T = typename Cf::T>
static void gemm_packed_shared(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B,
                               i64 ldb, T beta, T* C, i64 ldc, int nt, i64 nblk, i64 step) {
    const bool split_n = N >= M;
    const i64 kb = packed::depth_block<Cf>(K), nkb = (K + kb - 1) / kb;
    packed::Buffer<T>& sh = packed::scratch<T>(packed::Slot::gemm_shared);
    if (split_n) {  // op(A) (M x K) in PrepackedA's layout: block (i0, p0) at p0*Mp + i0*kc
        const i64 Mp = packed::round_up(M, Cf::MR), nmc = (M + Cf::MC - 1) / Cf::MC;
        if ((i64)sh.size() < Mp * K) sh.resize(Mp * K);
        const packed::PackMatA<Cf> pa{A, lda, ta};
        parallel_tasks(nkb * nmc, [&](i64 b) {
            const i64 p0 = (b / nmc) * kb, kc = std::min(kb, K - p0), i0 = (b % nmc) * Cf::MC;
            pa(i0, std::min(Cf::MC, M - i0), p0, kc, sh.data() + p0 * Mp + i0 * kc);
        }, nt);
        const packed::PrepackedAView<Cf> view{sh.data(), Mp};
        parallel_tasks(nblk, [&](i64 b) {
            const i64 lo = b * step, len = std::min(step, N - lo);
            if (len <= 0) return;
            packed::PackMatB<Cf> pb{tb ? B + lo * ldb : B + lo, ldb, tb};
            packed::gemm_blocked<Cf>(M, len, K, alpha, view, pb, beta, C + lo, ldc);
        }, nt);
    } else {  // op(B) (K x N) in PrepackedB's layout: block (p0, j0) at p0*Np + j0*kc
        const i64 Np = packed::round_up(N, Cf::NR), nnc = (N + Cf::NC - 1) / Cf::NC;
        if ((i64)sh.size() < Np * K) sh.resize(Np * K);
        const packed::PackMatB<Cf> pb{B, ldb, tb};
        parallel_tasks(nkb * nnc, [&](i64 b) {
            const i64 p0 = (b / nnc) * kb, kc = std::min(kb, K - p0), j0 = (b % nnc) * Cf::NC;
            pb(p0, kc, j0, std::min(Cf::NC, N - j0), sh.data() + p0 * Np + j0 * kc);
        }, nt);
        const packed::PrepackedB<Cf> view{sh.data(), Np, K, kb, 0};
        parallel_tasks(nblk, [&](i64 b) {
            const i64 lo = b * step, len = std::min(step, M - lo);
            if (len <= 0) return;
            packed::PackMatA<Cf> pa{ta ? A + lo : A + lo * lda, lda, ta};
            packed::gemm_blocked<Cf>(len, N, K, alpha, pa, view, beta, C + lo * ldc, ldc);
        }, nt);
    }
}

// parallel_work's units for an M x N x K product: the microkernel does ~64 multiply-adds in the time a memory-bound
// loop moves one element.
inline double gemm_work(i64 M, i64 N, i64 K) { return double(M) * N * std::max<i64>(K, 1) / 64; }

// Threads take independent column blocks (or row blocks when M is the larger side) and each runs the serial
// blocked GEMM on its block: no shared writes. Tiny problems stay on one thread.
template <class Cf, typename T = typename Cf::T>
static void gemm_packed(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B, i64 ldb,
                        T beta, T* C, i64 ldc) {
    const int nt = parallel_work(gemm_work(M, N, K));
    const bool split_n = N >= M;
    const i64 dim = split_n ? N : M, unit = split_n ? Cf::NR : Cf::MR;
    // 2 blocks per thread, taken dynamically: on a shared machine a descheduled thread does not hold up the rest.
    // (4 per thread made each block's A block serve too few B panels: 2048x2048x512 ran 296-302 GFLOP/s against
    // 324-345 with 2, and the LSTM forward and backward, made of such GEMMs, 6 % slower.)
    const i64 nblk = std::min<i64>(nt == 1 ? 1 : 2 * nt, (dim + unit - 1) / unit);
    const i64 step = packed::round_up((dim + nblk - 1) / nblk, unit);
    // (up to 2^21 elements: a larger shared operand no longer stays in cache between the blocks that read it;
    // 2048^3 ran ~3% slower shared, the LSTM's 4 MB operands 5-12% faster)
    if (nblk > 1 && K > 0 && alpha != T(0) && (split_n ? M : N) * K <= (i64(1) << 21))
        return gemm_packed_shared<Cf>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nt, nblk, step);
    parallel_tasks(nblk, [&](i64 b) {
        const i64 lo = b * step, len = std::min(step, dim - lo);
        if (len <= 0) return;
        if (split_n) {
            packed::PackMatA<Cf> pa{A, lda, ta};
            packed::PackMatB<Cf> pb{tb ? B + lo * ldb : B + lo, ldb, tb};
            packed::gemm_blocked<Cf>(M, len, K, alpha, pa, pb, beta, C + lo, ldc);
        } else {
            packed::PackMatA<Cf> pa{ta ? A + lo : A + lo * lda, lda, ta};
            packed::PackMatB<Cf> pb{B, ldb, tb};
            packed::gemm_blocked<Cf>(len, N, K, alpha, pa, pb, beta, C + lo * ldc, ldc);
        }
    }, nt);
}

// ---- gemm__rows: a few rows of A (M <= kRowsMaxM) ----
// An LSTM step at batch 1-4 multiplies a few rows by a weight matrix it uses once per call: packing B (K x N)
// into panels reads and writes all of B for a product that reads it once (lstm_cell at B1 H100: slower than NumPy).
// Here all M rows go through B together, B read once as it lies: c_m[:] += a_m[k] * B[k, :] four rows of B at a
// time (op(B) = B), or c_m[n..n+3] = dot(a_m, B[n..n+3, :]) in independent vector sums (op(B) = B^T, rows of B
// contiguous over k). Row by row, B was read M times and a single dot product's sum was one chain of dependent
// adds: lstm_cell_backward at B2 H256 took 142 us against NumPy's 123.
constexpr i64 kRowsMaxM = 4;

// alpha * op(A) as M contiguous rows for the few-row kernels: A itself, or a copy of at most 4 x K in `buf` when
// A is transposed or scaled.
template <typename T>
void few_rows_of(bool ta, T alpha, i64 M, i64 K, const T*& A, i64& lda, std::vector<T>& buf) {
    if (!ta && alpha == T(1)) return;
    buf.resize(M * K);
    for (i64 m = 0; m < M; ++m)
        for (i64 k = 0; k < K; ++k) buf[m * K + k] = alpha * (ta ? A[k * lda + m] : A[m * lda + k]);
    A = buf.data(), lda = K;
}
// parallel_work's units for a few-row product: ~4x fewer FLOPs per element than the microkernel, and B streamed
// once (from memory when it is large: a 1 MB w_hh is worth two threads at batch 1).
inline double few_rows_work(i64 M, i64 N, i64 K) { return std::max(gemm_work(M, N, K) * 4, double(N) * K / 8); }

template <typename T> struct RowVec {  // 32 bytes of T, loaded unaligned (GCC vector extension): one AVX2 register
    typedef T type __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));
    static constexpr i64 lanes = 32 / sizeof(T);
};

// c[0..M)[n..n+NB) for op(B) = B^T: M*NB sums in registers (at most 8: 11 of AVX2's 16 registers in use).
template <int M, int NB, typename T>
FASTNN_INLINE void rows_dot(i64 n, i64 K, const T* A, i64 lda, const T* B, i64 ldb, T beta, T* C, i64 ldc) {
    using V = typename RowVec<T>::type;
    constexpr i64 L = RowVec<T>::lanes;
    V acc[M][NB];
#pragma GCC unroll 4
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) acc[m][j] = V{};
    i64 k = 0;
    for (; k + L <= K; k += L) {
        V b[NB];
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) b[j] = *reinterpret_cast<const V*>(B + (n + j) * ldb + k);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
            const V a = *reinterpret_cast<const V*>(A + m * lda + k);
#pragma GCC unroll 4
            for (int j = 0; j < NB; ++j) acc[m][j] += a * b[j];
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
        for (int j = 0; j < NB; ++j) {
            T s = 0;
            for (i64 l = 0; l < L; ++l) s += acc[m][j][l];
            for (i64 kk = k; kk < K; ++kk) s += A[m * lda + kk] * B[(n + j) * ldb + kk];
            T* c = C + m * ldc + n + j;
            *c = s + (beta == T(0) ? T(0) : beta * *c);  // beta 0: C is not read (BLAS)
        }
}

template <class Rows, typename T>
FASTNN_INLINE void gemm_rows_body(Rows, bool tb, i64 n0, i64 n1, i64 K, const T* A, i64 lda, const T* B, i64 ldb,
                                  T beta, T* C, i64 ldc) {
    constexpr int M = Rows::value;
    if (tb) {
        i64 n = n0;
        constexpr int NB = M <= 2 ? 4 : 2;
        for (; n + NB <= n1; n += NB) rows_dot<M, NB>(n, K, A, lda, B, ldb, beta, C, ldc);
        for (; n < n1; ++n) rows_dot<M, 1>(n, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    T* c[M];
    for (int m = 0; m < M; ++m) {
        c[m] = C + m * ldc;
        if (beta == T(0)) std::fill(c[m] + n0, c[m] + n1, T(0));
        else if (beta != T(1)) for (i64 n = n0; n < n1; ++n) c[m][n] *= beta;
    }
    // column blocks whose M rows of C stay in L1 while the k loop passes over them
    constexpr i64 NB = 2048 / sizeof(T);
    for (i64 j0 = n0; j0 < n1; j0 += NB) {
        const i64 j1 = std::min(n1, j0 + NB);
        i64 k = 0;
        for (; k + 4 <= K; k += 4) {
            const T *b0 = B + k * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
            T a[M][4];
            for (int m = 0; m < M; ++m)
                for (int q = 0; q < 4; ++q) a[m][q] = A[m * lda + k + q];
#pragma omp simd
            for (i64 n = j0; n < j1; ++n) {
                const T x0 = b0[n], x1 = b1[n], x2 = b2[n], x3 = b3[n];
#pragma GCC unroll 4
                for (int m = 0; m < M; ++m) c[m][n] += (a[m][0] * x0 + a[m][1] * x1) + (a[m][2] * x2 + a[m][3] * x3);
            }
        }
        for (; k < K; ++k) {
            const T* b0 = B + k * ldb;
#pragma omp simd
            for (i64 n = j0; n < j1; ++n)
#pragma GCC unroll 4
                for (int m = 0; m < M; ++m) c[m][n] += A[m * lda + k] * b0[n];
        }
    }
}
FASTNN_SIMD_DISPATCH(gemm_rows)

template <typename T>
static void gemm__rows(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B, i64 ldb,
                       T beta, T* C, i64 ldc) {
    if (K <= 0 || alpha == T(0)) {  // C = beta*C without reading A or B, as the packed path (and BLAS) do
        for (i64 m = 0; m < M; ++m)
            for (i64 n = 0; n < N; ++n) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
        return;
    }
    std::vector<T> a_rows;
    few_rows_of(ta, alpha, M, K, A, lda, a_rows);
    const int nt = parallel_work(few_rows_work(M, N, K));
    // a contiguous share per thread: B's rows are read in long runs (4 shorter chunks a thread: 1x512x2048 took
    // 55 us against NumPy's sgemv 48)
    const i64 chunk = nt == 1 ? N : packed::round_up((N + nt - 1) / nt, 16);
    parallel_for(N, chunk, [&](i64 n0, i64 n1) {
        switch (M) {
            case 1: return gemm_rows(std::integral_constant<int, 1>{}, tb, n0, n1, K, A, lda, B, ldb, beta, C, ldc);
            case 2: return gemm_rows(std::integral_constant<int, 2>{}, tb, n0, n1, K, A, lda, B, ldb, beta, C, ldc);
            case 3: return gemm_rows(std::integral_constant<int, 3>{}, tb, n0, n1, K, A, lda, B, ldb, beta, C, ldc);
            default: return gemm_rows(std::integral_constant<int, 4>{}, tb, n0, n1, K, A, lda, B, ldb, beta, C, ldc);
        }
    }, nt);
}

template <typename T>
void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, T alpha, const T* A, i64 lda, const T* B, i64 ldb, T beta, T* C,
          i64 ldc) {
    if (M <= 0 || N <= 0) return;
    if (M <= kRowsMaxM) return gemm__rows(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    packed::with_cfg<T>([&](auto cfg) {
        gemm_packed<decltype(cfg)>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    });
}

// ---- B packed once, reused by many GEMMs (gemm_packed_b) ----
template <typename T>
void pack_b(bool tb, i64 K, i64 N, const T* B, i64 ldb, PackedB<T>& out) {
    packed::with_cfg<T>([&](auto cfg) {
        using Cf = decltype(cfg);
        out.K = K, out.N = N, out.Np = packed::round_up(N, Cf::NR), out.kb = packed::depth_block<Cf>(K);
        out.store.resize(out.Np * std::max<i64>(K, 1) + 64 / sizeof(T));
        T* const base = const_cast<T*>(out.panels());
        const i64 kb = out.kb, nkb = (K + kb - 1) / kb, ncb = (N + Cf::NC - 1) / Cf::NC;
        const packed::PackMatB<Cf> pb{B, ldb, tb};
        parallel_tasks(nkb * ncb, [&](i64 b) {
            const i64 p0 = (b / ncb) * kb, kc = std::min(kb, K - p0), j0 = (b % ncb) * Cf::NC;
            pb(p0, kc, j0, std::min(Cf::NC, N - j0), base + p0 * out.Np + j0 * kc);
        }, parallel_work(double(K) * N));
    });
}

// A few rows (M <= kRowsMaxM) times the prepacked B: an LSTM step at batch 1-4. The microkernel would compute its
// whole MR-row tile for them (8x the FMAs at batch 1: lstm B1 T20 H256 ran 0.7x PyTorch); here each panel's
// columns for the M rows stay in registers over the whole depth and B streams through once.
template <class Cf> struct PanelVec {  // a register: 64 bytes on the AVX-512 configurations, else 32
    using T = typename Cf::T;
    static constexpr i64 bytes = std::is_same<Cf, packed::Avx512F32>::value || std::is_same<Cf, packed::Avx512F64>::value
                                     ? 64 : 32;
    typedef T type __attribute__((vector_size(bytes), may_alias));  // read from T arrays
    static constexpr i64 lanes = bytes / sizeof(T), per_panel = Cf::NR / lanes;
};

template <class Cf, class Rows, typename T = typename Cf::T>
FASTNN_INLINE void panel_rows_body(Cf, Rows, i64 j0, i64 j1, const PackedB<T>& B, const T* A, i64 lda, T beta, T* C,
                                   i64 ldc) {
    constexpr int M = Rows::value;
    using PV = PanelVec<Cf>;
    using V = typename PV::type;
    constexpr i64 NR = Cf::NR, P = PV::per_panel, L = PV::lanes;
    static_assert(NR % L == 0, "a panel is whole registers");
    const T* panels = B.panels();
    for (i64 j = j0; j < j1; j += NR) {
        V acc[M][P];
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
            for (int v = 0; v < P; ++v) acc[m][v] = V{};
        for (i64 p0 = 0; p0 < B.K; p0 += B.kb) {
            const i64 kc = std::min(B.kb, B.K - p0);
            const T* b = panels + p0 * B.Np + j * kc;  // the panel's depth rows, NR apart (aligned)
            for (i64 k = 0; k < kc; ++k, b += NR) {
                V bv[P];
#pragma GCC unroll 8
                for (int v = 0; v < P; ++v) bv[v] = *reinterpret_cast<const V*>(b + v * L);
#pragma GCC unroll 4
                for (int m = 0; m < M; ++m) {
                    const T a = A[m * lda + p0 + k];
#pragma GCC unroll 8
                    for (int v = 0; v < P; ++v) acc[m][v] += a * bv[v];
                }
            }
        }
        const i64 n = std::min(NR, j1 - j);
        for (int m = 0; m < M; ++m) {
            T* c = C + m * ldc + j;
            for (i64 q = 0; q < n; ++q) c[q] = acc[m][q / L][q % L] + (beta == T(0) ? T(0) : beta * c[q]);
        }
    }
}
FASTNN_SIMD_DISPATCH_WIDE(panel_rows)

// Threads take column blocks (whole NR panels) of the prepacked B; each packs its own copy of op(A) (small in the
// LSTM: the batch rows of one step). Static blocks: the same thread reads the same B panels every call, so its
// share of B stays in its L2 across the steps.
template <class Cf, typename T = typename Cf::T>
static void gemm_packed_b_cfg(bool ta, i64 M, T alpha, const T* A, i64 lda, const PackedB<T>& B, T beta, T* C,
                              i64 ldc, int nt) {
    const i64 N = B.N, K = B.K;
    const bool few = M <= kRowsMaxM;
    if (parallel_work(few ? few_rows_work(M, N, K) : gemm_work(M, N, K)) == 1) nt = 1;
    const i64 npan = (N + Cf::NR - 1) / Cf::NR;
    const i64 nblk = std::min<i64>(nt, npan);
    const T* panels = B.panels();
    std::vector<T> a_rows;
    if (few) few_rows_of(ta, alpha, M, K, A, lda, a_rows);
    parallel_tasks(nblk, [&](i64 b) {
        const i64 lo = npan * b / nblk * Cf::NR, hi = std::min(N, npan * (b + 1) / nblk * Cf::NR);
        if (hi <= lo) return;
        if (few) {
            switch (M) {
                case 1: return panel_rows_wide(Cf{}, std::integral_constant<int, 1>{}, lo, hi, B, A, lda, beta, C, ldc);
                case 2: return panel_rows_wide(Cf{}, std::integral_constant<int, 2>{}, lo, hi, B, A, lda, beta, C, ldc);
                case 3: return panel_rows_wide(Cf{}, std::integral_constant<int, 3>{}, lo, hi, B, A, lda, beta, C, ldc);
                default: return panel_rows_wide(Cf{}, std::integral_constant<int, 4>{}, lo, hi, B, A, lda, beta, C, ldc);
            }
        }
        packed::PackMatA<Cf> pa{A, lda, ta};
        packed::PrepackedB<Cf> pb{panels, B.Np, K, B.kb, lo};
        packed::gemm_blocked<Cf>(M, hi - lo, K, alpha, pa, pb, beta, C + lo, ldc);
    }, nt);
}

template <typename T>
void gemm_packed_b(bool ta, i64 M, T alpha, const T* A, i64 lda, const PackedB<T>& B, T beta, T* C, i64 ldc,
                   int threads) {
    if (M <= 0 || B.N <= 0) return;
    const int nt = threads > 0 ? threads : get_num_threads();
    packed::with_cfg<T>([&](auto cfg) { gemm_packed_b_cfg<decltype(cfg)>(ta, M, alpha, A, lda, B, beta, C, ldc, nt); });
}

template void pack_b<float>(bool, i64, i64, const float*, i64, PackedB<float>&);
template void pack_b<double>(bool, i64, i64, const double*, i64, PackedB<double>&);
template void gemm_packed_b<float>(bool, i64, float, const float*, i64, const PackedB<float>&, float, float*, i64,
                                   int);
template void gemm_packed_b<double>(bool, i64, double, const double*, i64, const PackedB<double>&, double, double*,
                                    i64, int);

template void gemm<float>(bool, bool, i64, i64, i64, float, const float*, i64, const float*, i64, float, float*, i64);
template void gemm<double>(bool, bool, i64, i64, i64, double, const double*, i64, const double*, i64, double, double*,
                           i64);

}  // namespace fastnn
