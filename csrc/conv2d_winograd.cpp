// conv2d's Winograd forward (float, AVX2/FMA or AVX-512): conv2d_fwd__winograd.
#include <algorithm>
#include <vector>

#include "conv2d_impl.h"
#include "gemm_packed.h"
#include "simd.h"

namespace fastnn {

// conv2d_fwd__winograd: Winograd F(2x2, 3x3) (Lavin & Gray, 2015) for 3x3 stride-1 convs with one group and
// enough channels. Each 2x2 block of outputs ("tile") comes from a 4x4 input patch d and the 3x3 filter g as
//   y = A^T [ (G g G^T) .* (B^T d B) ] A,
// so the 9 x 4 = 36 multiplies per tile and channel pair become 16, done as 16 GEMMs over the channels:
//   M[e] (K x tiles) = U[e] (K x C) . V[e] (C x tiles),  U = G g G^T per (k, c),  V = B^T d B per (c, tile).
// The transforms only add and subtract (G has halves: exact in binary), so the result differs from a direct sum
// by float rounding of a few extra additions. U is packed once per call as the 16 GEMMs' A operands; the tiles
// go in blocks of kWinoTiles (all images' tiles in one sequence, so small planes fill whole B panels), a block per
// task: input transform -> V block, 16 GEMMs -> M block, output transform -> y (+ bias).
// Measured (2 threads, alternating builds), forward of N32 64/128/256-channel 3x3 layers: AVX-512 against the
// direct forward 19.8/19.3/20.2 -> 16.1/13.9/13.9 ms; AVX2 (FASTNN_SIMD=avx2, same CPU) against the implicit
// GEMM 37.0/36.6/34.3 -> 23.2/20.1/19.0 ms. 96 tiles per block beat 48 and 144.
constexpr i64 kWinoTiles = 96;

// Lanes j of a 16-float load at padded column c that lie in [lo, hi): the row's real columns (masked loads read
// nothing outside them, and give zeros for the padding).
FASTNN_AVX512 static inline __mmask16 cols_in(i64 c, i64 lo, i64 hi) {
    const i64 a = std::max<i64>(0, lo - c), b = std::min<i64>(16, hi - c);
    return b <= a ? __mmask16(0) : __mmask16(((1u << b) - 1) & ~((1u << a) - 1));
}

// V of a tile row's tiles t0 .. t0+n-1: x[i] points at padded column 0 of input row i of the tile row (nullptr:
// a padding row), whose real columns are [lo, hi); tile t covers padded columns 2t .. 2t+3. V[e] of tile t0+t
// goes to v[e*ve + t]. 16 tiles per vector: even/odd columns split with two-source permutes, the last masked.
FASTNN_AVX512 static void wino_in__avx512f(const float* const x[4], i64 t0, i64 n, i64 lo,
                                                                i64 hi, float* v, i64 ve) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (i64 t = 0; t < n; t += 16) {
        const __mmask16 k = n - t >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - t)) - 1);
        const i64 c = 2 * (t0 + t);  // first padded column of the 16 tiles
        __m512 d[4][4];
        for (int i = 0; i < 4; ++i) {
            __m512 a[4];  // columns c .. c+15, c+16 .. c+31, c+2 .. c+17, c+18 .. c+33
            for (int h = 0; h < 4; ++h) {
                const i64 ch = c + (h & 1) * 16 + (h >> 1) * 2;
                a[h] = x[i] ? _mm512_maskz_loadu_ps(cols_in(ch, lo, hi), x[i] + ch) : _mm512_setzero_ps();
            }
            d[i][0] = _mm512_permutex2var_ps(a[0], even, a[1]), d[i][1] = _mm512_permutex2var_ps(a[0], odd, a[1]);
            d[i][2] = _mm512_permutex2var_ps(a[2], even, a[3]), d[i][3] = _mm512_permutex2var_ps(a[2], odd, a[3]);
        }
        __m512 w[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
            w[0][j] = _mm512_sub_ps(d[0][j], d[2][j]), w[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
            w[2][j] = _mm512_sub_ps(d[2][j], d[1][j]), w[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
        }
        for (int i = 0; i < 4; ++i) {
            float* vi = v + 4 * i * ve + t;
            _mm512_mask_storeu_ps(vi, k, _mm512_sub_ps(w[i][0], w[i][2]));
            _mm512_mask_storeu_ps(vi + ve, k, _mm512_add_ps(w[i][1], w[i][2]));
            _mm512_mask_storeu_ps(vi + 2 * ve, k, _mm512_sub_ps(w[i][2], w[i][1]));
            _mm512_mask_storeu_ps(vi + 3 * ve, k, _mm512_sub_ps(w[i][1], w[i][3]));
        }
    }
}

// Output of n tiles of a tile row: tile t's M[e] at m[e*me + t]; its 2x2 outputs (+ bias) go to y0[2t..2t+1] and
// y1[2t..2t+1] (y1 nullptr: past the last output row), interleaved in registers; columns from ncols on are not
// stored (an odd output width cuts the last tile).
FASTNN_AVX512 static void wino_out__avx512f(const float* m, i64 me, i64 n, i64 ncols,
                                                                 float bias, float* y0, float* y1) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 b = _mm512_set1_ps(bias);
    for (i64 t = 0; t < n; t += 16) {
        const __mmask16 k = n - t >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - t)) - 1);
        const i64 w = std::min(ncols, 2 * n);  // the columns of these tiles that exist
        const __mmask16 klo = cols_in(2 * t, 0, w), khi = cols_in(2 * t + 16, 0, w);
        __m512 u[2][4];  // A^T m
        for (int j = 0; j < 4; ++j) {
            const __m512 m0 = _mm512_maskz_loadu_ps(k, m + j * me + t);
            const __m512 m1 = _mm512_maskz_loadu_ps(k, m + (4 + j) * me + t);
            const __m512 m2 = _mm512_maskz_loadu_ps(k, m + (8 + j) * me + t);
            const __m512 m3 = _mm512_maskz_loadu_ps(k, m + (12 + j) * me + t);
            u[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2), u[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        float* y[2] = {y0, y1};
        for (int i = 0; i < 2 && y[i]; ++i) {
            const __m512 e = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(u[i][0], u[i][1]), u[i][2]), b);
            const __m512 o = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(u[i][1], u[i][2]), u[i][3]), b);
            _mm512_mask_storeu_ps(y[i] + 2 * t, klo, _mm512_permutex2var_ps(e, lo, o));
            _mm512_mask_storeu_ps(y[i] + 2 * t + 16, khi, _mm512_permutex2var_ps(e, hi, o));
        }
    }
}

// The same two transforms with AVX2 (8 tiles per vector) for CPUs without AVX-512: masks are lane vectors,
// the even/odd split a shuffle and a 64-bit lane permute, the interleave unpacks and a 128-bit lane permute.
FASTNN_AVX2 static inline __m256i lanes_in(i64 c, i64 lo, i64 hi) {
    const __m256i j = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const i64 a = std::clamp<i64>(lo - c, 0, 8), b = std::clamp<i64>(hi - c, 0, 8);
    return _mm256_and_si256(_mm256_cmpgt_epi32(j, _mm256_set1_epi32(int(a) - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(int(b)), j));
}
FASTNN_AVX2 static void wino_in__avx2(const float* const x[4], i64 t0, i64 n, i64 lo,
                                                              i64 hi, float* v, i64 ve) {
    for (i64 t = 0; t < n; t += 8) {
        const __m256i k = lanes_in(t, 0, n);
        const i64 c = 2 * (t0 + t);
        __m256 d[4][4];
        for (int i = 0; i < 4; ++i) {
            __m256 a[4];  // columns c .. c+7, c+8 .. c+15, c+2 .. c+9, c+10 .. c+17
            for (int h = 0; h < 4; ++h) {
                const i64 ch = c + (h & 1) * 8 + (h >> 1) * 2;
                a[h] = x[i] ? _mm256_maskload_ps(x[i] + ch, lanes_in(ch, lo, hi)) : _mm256_setzero_ps();
            }
            for (int h = 0; h < 2; ++h) {  // [a0 a2 b0 b2 a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
                const __m256 e = _mm256_shuffle_ps(a[2 * h], a[2 * h + 1], _MM_SHUFFLE(2, 0, 2, 0));
                const __m256 o = _mm256_shuffle_ps(a[2 * h], a[2 * h + 1], _MM_SHUFFLE(3, 1, 3, 1));
                d[i][2 * h] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
                d[i][2 * h + 1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8));
            }
        }
        __m256 w[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
            w[0][j] = _mm256_sub_ps(d[0][j], d[2][j]), w[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
            w[2][j] = _mm256_sub_ps(d[2][j], d[1][j]), w[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
        }
        for (int i = 0; i < 4; ++i) {
            float* vi = v + 4 * i * ve + t;
            _mm256_maskstore_ps(vi, k, _mm256_sub_ps(w[i][0], w[i][2]));
            _mm256_maskstore_ps(vi + ve, k, _mm256_add_ps(w[i][1], w[i][2]));
            _mm256_maskstore_ps(vi + 2 * ve, k, _mm256_sub_ps(w[i][2], w[i][1]));
            _mm256_maskstore_ps(vi + 3 * ve, k, _mm256_sub_ps(w[i][1], w[i][3]));
        }
    }
}
FASTNN_AVX2 static void wino_out__avx2(const float* m, i64 me, i64 n, i64 ncols,
                                                               float bias, float* y0, float* y1) {
    const __m256 b = _mm256_set1_ps(bias);
    for (i64 t = 0; t < n; t += 8) {
        const __m256i k = lanes_in(t, 0, n);
        const i64 w = std::min(ncols, 2 * n);
        const __m256i klo = lanes_in(2 * t, 0, w), khi = lanes_in(2 * t + 8, 0, w);
        __m256 u[2][4];  // A^T m
        for (int j = 0; j < 4; ++j) {
            const __m256 m0 = _mm256_maskload_ps(m + j * me + t, k), m1 = _mm256_maskload_ps(m + (4 + j) * me + t, k);
            const __m256 m2 = _mm256_maskload_ps(m + (8 + j) * me + t, k);
            const __m256 m3 = _mm256_maskload_ps(m + (12 + j) * me + t, k);
            u[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2), u[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
        }
        float* y[2] = {y0, y1};
        for (int i = 0; i < 2 && y[i]; ++i) {
            const __m256 e = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(u[i][0], u[i][1]), u[i][2]), b);
            const __m256 o = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(u[i][1], u[i][2]), u[i][3]), b);
            const __m256 l = _mm256_unpacklo_ps(e, o), h = _mm256_unpackhi_ps(e, o);  // e0 o0 e1 o1 e4 o4 e5 o5, ...
            _mm256_maskstore_ps(y[i] + 2 * t, klo, _mm256_permute2f128_ps(l, h, 0x20));
            _mm256_maskstore_ps(y[i] + 2 * t + 8, khi, _mm256_permute2f128_ps(l, h, 0x31));
        }
    }
}

// At least two blocks of tiles: below that the weight transform (16 values per filter) and idle threads cost more
// than the multiplies saved (1 x 256 x 14x14, 49 tiles: 3.3 ms against 1.3 direct; 4 images, 196 tiles: parity).
// A fixed count, not one per thread, so the thread count never changes which algorithm (and rounding) runs.
// From 16 channels in and out: 64 x 16ch 28x28 ran 0.88 ms against 1.08 on the implicit GEMM (AVX2: 1.35 vs 1.50).
bool winograd_fits(const ConvShape& s) {
    const i64 tiles = s.N * ((s.OH + 1) / 2) * ((s.OW + 1) / 2);
    return winograd_can_run(s) && s.C >= 16 && s.K >= 16 && tiles >= 2 * kWinoTiles;
}
// Where it can run at all: float, AVX2/FMA, 3x3 stride 1 dilation 1, one group.
bool winograd_can_run(const ConvShape& s) {
    return has_avx2_fma() && s.KH == 3 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
           s.groups == 1;
}

template <class Cf>
static void winograd_fwd(const float* x, const float* w, const float* bias, float* y, const ConvShape& s) {
    using T = float;
    const i64 C = s.C, K = s.K, TH = (s.OH + 1) / 2, TW = (s.OW + 1) / 2, TT = TH * TW, P = s.N * TT;
    // U[e] (K x C) = (G g G^T)[e] per filter g = w[k, c], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1], written straight
    // into the GEMMs' packed A layout (PrepackedA: depth blocks of kb channels, MR-row panels), U[e] at U + e*Mp*C,
    // in the calling thread's Slot::conv_weights (kept between calls: a fresh 16*K*C allocation page-faulted every call).
    constexpr i64 MR = Cf::MR;
    const i64 Mp = packed::round_up(K, MR), kb = packed::depth_block<Cf>(C), UE = Mp * C;
    packed::Buffer<T>& ubuf = packed::scratch<T>(packed::Slot::conv_weights);
    if ((i64)ubuf.size() < 16 * UE) ubuf.resize(16 * UE);
    T* const U = ubuf.data();
    // A panel's MR filters (rows k0..k0+MR-1, one channel) at a time: their 16 values per e are MR contiguous floats.
    parallel_tasks((K + MR - 1) / MR, [&](i64 panel) {
        const i64 k0 = panel * MR, nk = std::min(MR, K - k0);
        for (i64 c = 0; c < C; ++c) {
            T g[9][MR] = {}, a[4][3][MR];
            for (i64 l = 0; l < nk; ++l)
                for (int t = 0; t < 9; ++t) g[t][l] = w[((k0 + l) * C + c) * 9 + t];
            for (int j = 0; j < 3; ++j)  // G g
#pragma omp simd
                for (i64 l = 0; l < MR; ++l) {
                    a[0][j][l] = g[j][l], a[3][j][l] = g[6 + j][l];
                    a[1][j][l] = T(0.5) * (g[j][l] + g[3 + j][l] + g[6 + j][l]);
                    a[2][j][l] = T(0.5) * (g[j][l] - g[3 + j][l] + g[6 + j][l]);
                }
            const i64 cb = c / kb * kb, kcur = std::min(kb, C - cb);
            T* u = U + cb * Mp + k0 * kcur + (c - cb) * MR;  // + e*UE + l
            for (int i = 0; i < 4; ++i) {  // (G g) G^T
                T *u0 = u + 4 * i * UE, *u1 = u0 + UE, *u2 = u1 + UE, *u3 = u2 + UE;
#pragma omp simd
                for (i64 l = 0; l < MR; ++l) {
                    u0[l] = a[i][0][l], u3[l] = a[i][2][l];
                    u1[l] = T(0.5) * (a[i][0][l] + a[i][1][l] + a[i][2][l]);
                    u2[l] = T(0.5) * (a[i][0][l] - a[i][1][l] + a[i][2][l]);
                }
            }
        }
    });

    constexpr i64 NR = Cf::NR;
    static_assert(kWinoTiles % NR == 0, "a block of tiles is whole B panels");
    const bool z = packed::has_avx512f();
    const auto wino_in = z ? wino_in__avx512f : wino_in__avx2;
    const auto wino_out = z ? wino_out__avx512f : wino_out__avx2;
    const i64 nblk = (P + kWinoTiles - 1) / kWinoTiles;
    parallel_tasks(nblk, [&](i64 b) {
        const i64 p0 = b * kWinoTiles, np = std::min(kWinoTiles, P - p0);
        packed::Buffer<T>& vbuf = packed::scratch<T>(packed::Slot::conv_input);
        packed::Buffer<T>& mbuf = packed::scratch<T>(packed::Slot::conv_output);
        if ((i64)vbuf.size() < 16 * C * kWinoTiles) vbuf.resize(16 * C * kWinoTiles);
        if ((i64)mbuf.size() < 16 * K * kWinoTiles) mbuf.resize(16 * K * kWinoTiles);
        T *V = vbuf.data(), *M = mbuf.data();
        // f(n, th, tw0, tw1, q): the tile-row segments of the block; q = the segment's first column in the block
        auto segments = [&](auto&& f) {
            for (i64 p = p0; p < p0 + np;) {
                const i64 n = p / TT, th = p % TT / TW, tw0 = p % TW, tw1 = std::min(TW, tw0 + (p0 + np - p));
                f(n, th, tw0, tw1, p - p0);
                p += tw1 - tw0;
            }
        };
        // V[e] (C x block columns) = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], written
        // straight into the GEMM's packed B layout (PrepackedB: depth blocks of kb rows, NR-column panels).
        // Channel by channel, so each input plane is read in order.
        const i64 VE = C * kWinoTiles;  // one e apart
        for (i64 c = 0; c < C; ++c) {
            const i64 cb = c / kb * kb, kcur = std::min(kb, C - cb);
            T* vc = V + cb * kWinoTiles + (c - cb) * NR;  // + (col / NR) * NR * kcur + col % NR
            segments([&](i64 n, i64 th, i64 tw0, i64 tw1, i64 q) {
                const T* xr[4];  // padded column 0 of the tile row's 4 input rows
                for (i64 i = 0; i < 4; ++i) {
                    const i64 ih = 2 * th - s.ph + i;
                    xr[i] = ih >= 0 && ih < s.H ? x + ((n * C + c) * s.H + ih) * s.W - s.pw : nullptr;
                }
                for (i64 t0 = tw0; t0 < tw1;) {  // runs of tiles inside one NR-column panel
                    const i64 col = q + t0 - tw0, t1 = std::min(tw1, t0 + NR - col % NR);
                    wino_in(xr, t0, t1 - t0, s.pw, s.W + s.pw, vc + col / NR * NR * kcur + col % NR, VE);
                    t0 = t1;
                }
            });
        }
        for (int e = 0; e < 16; ++e)
            packed::gemm_blocked<Cf>(K, np, C, T(1), packed::PrepackedAView<Cf>{U + e * UE, Mp},
                                     packed::PrepackedB<Cf>{V + e * VE, kWinoTiles, C, kb, 0},
                                     T(0), M + e * K * kWinoTiles, kWinoTiles);
        // y = A^T m A (+ bias), A^T = [1 1 1 0; 0 1 -1 -1]: two output rows per tile row, odd edges cut.
        segments([&](i64 n, i64 th, i64 tw0, i64 tw1, i64 q) {
            const i64 oh = 2 * th;
            for (i64 k = 0; k < K; ++k) {
                T* yk = y + ((n * K + k) * s.OH + oh) * s.OW + 2 * tw0;
                wino_out(M + k * kWinoTiles + q, K * kWinoTiles, tw1 - tw0, s.OW - 2 * tw0, bias ? bias[k] : T(0), yk,
                         oh + 1 < s.OH ? yk + s.OW : nullptr);
            }
        });
    });
}

void conv2d_fwd__winograd(const float* x, const float* w, const float* bias, float* y, const ConvShape& s) {
    packed::with_cfg<float>([&](auto cfg) { winograd_fwd<decltype(cfg)>(x, w, bias, y, s); });
}

}  // namespace fastnn
