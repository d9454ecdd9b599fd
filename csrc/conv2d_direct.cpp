// conv2d's direct AVX-512 kernels (float): the forward (conv2d_fwd__direct) and the dweight (conv2d_dw__direct),
// which share the 32-output-channel register tile and the zero-padded input rows. No GEMM operand is packed per
// call but the weights (the forward) and nothing at all for the dweight.
#include <algorithm>
#include <atomic>
#include <vector>

#include "conv2d_impl.h"
#include "gemm_packed.h"
#include "im2col.h"
#include "simd.h"

namespace fastnn {

// Zero-padded input rows for the direct kernels: dst row r of channel c (row stride Wp, channel stride nrows*Wp)
// holds input row ih0 + r of plane xc + c*H*W shifted right by pw, zeros elsewhere (rows outside the image too).
static void copy_padded_rows(const float* xc, const ConvShape& s, i64 nch, i64 ih0, i64 nrows, i64 Wp, float* dst) {
    for (i64 c = 0; c < nch; ++c)
        for (i64 r = 0; r < nrows; ++r, dst += Wp) {
            const i64 ih = ih0 + r;
            std::fill(dst, dst + Wp, 0.f);
            if (ih >= 0 && ih < s.H) copy_run(xc + (c * s.H + ih) * s.W, dst + s.pw, s.W);
        }
}

// conv2d_fwd__direct (AVX-512, float, stride 1 or 2): nothing packed per call but the weights. The accumulator
// tile is 14 output positions of one output row x 32 output channels (28 zmm): per tap (c, kh, kw) two weight
// vectors are loaded and each position's input value is broadcast straight from a zero-padded copy of the input
// rows. Against the implicit GEMM (conv2d_fwd__polyphase_*) there is no B panel to gather or read in place, no
// junk column when OW is a multiple of 14 (14, 28, 56, 112), and the output is written from the tile (no GEMM
// scratch tile to copy). Measured against it (2 threads): 256-ch 3x3 on 14x14 9-13 % faster, the 7x7/2 stem
// 12-13 %, 64/128 channels 5-10 %.
constexpr i64 kDirectPos = 14, kDirectOc = 32;
#define FASTNN_DP(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
// out (14 x 32, position-major) = (first ? 0 : out) + the taps of Cg channels; xr0: the tile's first input value
// of channel 0 (row stride Wp, channel stride plane); wk: the 32 weights of each tap, in (c, kh, kw) order.
// OW2 > 0 (6 or 7; 8 takes direct_tile16): the tile is two output rows of OW2 positions, the second one's input
// `row2` floats after the first's (positions past 2 * OW2 are not computed): a 7-wide output row alone left half
// the tile idle.
template <int KWC, int SW, int OW2 = 0>  // KWC: KW when known at compile time (3: unrolled), else 0; SW: the stride
FASTNN_AVX512 static void direct_tile__avx512f(const float* xr0, i64 plane, i64 Wp, i64 Cg,
                                                                   i64 KH, i64 KW_, i64 dh, i64 dw,
                                                                   const float* wk, float* out, bool first,
                                                                   i64 row2) {
#define FASTNN_DDECL(p) __m512 a##p##0 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + p * 32), \
                               a##p##1 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + p * 32 + 16);
#define FASTNN_DFMA(p)                                                                              \
    if (!OW2 || p < 2 * OW2) {                                                                      \
        const __m512 v = _mm512_set1_ps(OW2 && p >= OW2 ? xs[row2 + (p - OW2) * SW] : xs[p * SW]);  \
        a##p##0 = _mm512_fmadd_ps(v, w0, a##p##0);                                                  \
        a##p##1 = _mm512_fmadd_ps(v, w1, a##p##1);                                                  \
    }
#define FASTNN_DSTORE(p) _mm512_storeu_ps(out + p * 32, a##p##0); _mm512_storeu_ps(out + p * 32 + 16, a##p##1);
    FASTNN_DP(FASTNN_DDECL)
    const i64 KW = KWC ? KWC : KW_;
    for (i64 c = 0; c < Cg; ++c)
        for (i64 kh = 0; kh < KH; ++kh) {
            const float* xr = xr0 + c * plane + kh * dh * Wp;
            for (i64 kw = 0; kw < KW; ++kw, wk += 32) {
                const __m512 w0 = _mm512_loadu_ps(wk), w1 = _mm512_loadu_ps(wk + 16);
                const float* xs = xr + kw * dw;
                FASTNN_DP(FASTNN_DFMA)
            }
        }
    FASTNN_DP(FASTNN_DSTORE)
#undef FASTNN_DDECL
#undef FASTNN_DFMA
#undef FASTNN_DSTORE
}
#undef FASTNN_DP

// OW2 = 8: two 8-wide output rows are 16 positions, past the 14 x 32 tile, so they take a 16 x 16 one (16 zmm) per
// half of the 32-channel block: per tap one weight vector and 16 broadcasts, still bound by the FMAs (a broadcast
// is a scalar load, which any load port takes). out: 16 positions x 32 channels, position-major.
template <int KWC, int SW>
FASTNN_AVX512 static void direct_tile16__avx512f(const float* xr0, i64 plane, i64 Wp, i64 Cg, i64 KH, i64 KW_,
                                                 i64 dh, i64 dw, const float* wk, float* out, bool first, i64 row2) {
#define FASTNN_DP16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
    for (int h = 0; h < 2; ++h) {
        const float* wh = wk + 16 * h;
        float* oh = out + 16 * h;
#define FASTNN_D16DECL(p) __m512 a##p = first ? _mm512_setzero_ps() : _mm512_loadu_ps(oh + p * 32);
#define FASTNN_D16FMA(p) a##p = _mm512_fmadd_ps(_mm512_set1_ps(p < 8 ? xs[p * SW] : xs[row2 + (p - 8) * SW]), w, a##p);
#define FASTNN_D16STORE(p) _mm512_storeu_ps(oh + p * 32, a##p);
        FASTNN_DP16(FASTNN_D16DECL)
        const i64 KW = KWC ? KWC : KW_;
        for (i64 c = 0; c < Cg; ++c)
            for (i64 kh = 0; kh < KH; ++kh) {
                const float* xr = xr0 + c * plane + kh * dh * Wp;
                for (i64 kw = 0; kw < KW; ++kw, wh += 32) {
                    const __m512 w = _mm512_loadu_ps(wh);
                    const float* xs = xr + kw * dw;
                    FASTNN_DP16(FASTNN_D16FMA)
                }
            }
        FASTNN_DP16(FASTNN_D16STORE)
#undef FASTNN_D16DECL
#undef FASTNN_D16FMA
#undef FASTNN_D16STORE
    }
#undef FASTNN_DP16
}

// out[j][i] = r[i][j] for a 16 x 16 block of floats: 64 in-register shuffles (4 stages: 32-bit and 64-bit
// interleaves within 128-bit lanes, then two rounds of lane shuffles).
FASTNN_AVX512 static inline void transpose16x16__avx512f(const __m512 r[16], __m512 out[16]) {
    __m512 t[16], u[16], w[16];
    for (int i = 0; i < 16; i += 2) t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    for (int b = 0; b < 4; ++b) {  // u[4b + c], lane L: column 4L + c of rows 4b .. 4b + 3
        const __m512d t0 = _mm512_castps_pd(t[4 * b]), t1 = _mm512_castps_pd(t[4 * b + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * b + 2]), t3 = _mm512_castps_pd(t[4 * b + 3]);
        u[4 * b] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)), u[4 * b + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * b + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)), u[4 * b + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int c = 0; c < 4; ++c) {
        w[4 * c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), w[4 * c + 1] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        w[4 * c + 2] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        w[4 * c + 3] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        out[c] = _mm512_shuffle_f32x4(w[4 * c], w[4 * c + 2], 0x88);
        out[4 + c] = _mm512_shuffle_f32x4(w[4 * c], w[4 * c + 2], 0xDD);
        out[8 + c] = _mm512_shuffle_f32x4(w[4 * c + 1], w[4 * c + 3], 0x88);
        out[12 + c] = _mm512_shuffle_f32x4(w[4 * c + 1], w[4 * c + 3], 0xDD);
    }
}

// y rows from a finished tile: each 16-channel half of the 14 x 32 tile is transposed in registers (gathers cost
// 12 % of the 7x7/2 stem), then output channel j gets its positions plus bias[j], stored masked to the np (<= 14)
// valid positions at y + j*ystride. A two-row tile (ow2 > 0) stores positions [0, ow2) there and [ow2, 2*ow2) at
// y2 + j*ystride (none when y2 is null). Only the first nk (<= 32) channels are stored (a group's last block).
FASTNN_AVX512 static void direct_store__avx512f(const float* tile, i64 np, i64 nk, const float* bias, float* y,
                                                i64 ystride, float* y2 = nullptr, i64 ow2 = 0) {
    const __mmask16 m = (__mmask16)((1u << std::min(ow2 ? ow2 : np, kDirectPos)) - 1);
    const __mmask16 m2 = y2 ? (__mmask16)(m << ow2) : 0;
    if (y2) y2 -= ow2;   // lane ow2 + i goes to y2[i]
    for (int h = 0; h < kDirectOc / 16 && 16 * h < nk; ++h) {
        __m512 r[16], out[16];
        for (int p = 0; p < 16; ++p)
            r[p] = p < kDirectPos || ow2 == 8 ? _mm512_loadu_ps(tile + p * kDirectOc + 16 * h) : _mm512_setzero_ps();
        transpose16x16__avx512f(r, out);
        for (int j = 0; j < 16 && 16 * h + j < nk; ++j) {
            __m512 v = out[j];
            if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[16 * h + j]));
            _mm512_mask_storeu_ps(y + (16 * h + j) * ystride, m, v);
            if (m2) _mm512_mask_storeu_ps(y2 + (16 * h + j) * ystride, m2, v);
        }
    }
}

// Where conv2d_fwd__direct can run: AVX-512 float, stride 1 or 2 along rows. A group's output channels are taken in
// blocks of 32, the last one padded with zero weights.
bool direct_can_run(const ConvShape& s) { return packed::has_avx512f() && (s.sw == 1 || s.sw == 2); }
// The share of computed channels that are real: 1 for multiples of 32, 0.75 for 24.
static double direct_channel_use(const ConvShape& s) {
    const i64 Kg = s.K / s.groups;
    return double(Kg) / double(packed::round_up(Kg, kDirectOc));
}
// Two output rows per tile for these widths (7x7 and 6x6 outputs: textbook 7x7 layers, 13x13 or 14x14 at stride 2).
bool direct_two_rows(const ConvShape& s) { return s.OW >= 6 && s.OW <= 8; }
// Where it runs: no more than 10 % of the tile positions past the row ends (OW = 14, 28, 56, 112: none), or a
// two-row width (7, 8: none but an odd last row), and at least 3/4 of the computed output channels real; half of
// them on planes of at most 196 positions with 64 or more input channels, where the implicit GEMM's few rows of
// A make it pack-bound (128 x 128ch 16x16 -> 20, 3x3/2: 2.0 vs 4.2 ms; 128 x 256ch 7x7 -> 16: 2.8 vs 5.0 by
// Winograd; on 28x28 planes it lost: 32 x 64ch -> 16, 2.5 vs 1.9).
bool direct_fits(const ConvShape& s) {
    const i64 ow_tiles = (s.OW + kDirectPos - 1) / kDirectPos * kDirectPos;
    const double use = s.C / s.groups >= 64 && s.OH * s.OW <= 196 ? 0.5 : 0.75;
    return direct_can_run(s) && (ow_tiles * 10 <= s.OW * 11 || direct_two_rows(s)) && direct_channel_use(s) >= use;
}

// Task = (image, group, block of output rows): the block's input rows are copied into zero-padded planes (the
// broadcasts then need no bounds test), then per 32-channel output block the tiles accumulate over chunks of
// CB = 16 input channels, whose weights (16 x 9 taps x 32 x 4 B = 18 KB on 3x3) stay in L1 across the block's
// tiles; a tile is written to y (with its bias) after its last chunk.
void conv2d_fwd__direct(const float* x, const float* w, const float* bias, float* y, const ConvShape& s) {
    constexpr i64 NP = kDirectPos, OCB = kDirectOc, TS = 16 * OCB, CB = 16;  // TS: a 16-position tile's floats
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW, CRS = Cg * KK, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 ow2 = direct_two_rows(s) ? s.OW : 0;  // two-row tiles: ntile = 1, rows paired (an odd last one alone)
    const i64 Kgp = packed::round_up(Kg, OCB);  // the group's channels padded to whole blocks
    const i64 nob = Kgp / OCB, ntile = ow2 ? 1 : (s.OW + NP - 1) / NP, ncb = (Cg + CB - 1) / CB;
    const i64 Wp = std::max(s.W + 2 * s.pw, ((ow2 ? ow2 : ntile * NP) - 1) * s.sw + (s.KW - 1) * s.dw + 1);
    // Output rows per task: the block's partial tiles (when there are several channel chunks) within 256 KB, and
    // enough tasks to balance the threads (x4).
    const i64 nt = get_num_threads();
    i64 rows = std::max<i64>(1, std::min<i64>(s.OH, (i64(256) << 10) / (i64)sizeof(float) / (ntile * TS)));
    const i64 want = (4 * nt + s.N * G - 1) / (s.N * G);
    if ((s.OH + rows - 1) / rows < want) rows = std::max<i64>(1, s.OH / want);
    if (ow2) rows = std::min(s.OH, rows + (rows & 1));  // whole pairs of rows per task
    const i64 nblk = (s.OH + rows - 1) / rows;
    // weights as [g][oc block][c][kh][kw][32 output channels] (zeros past the group's channels), in a buffer kept
    // between calls (a fresh 2.4 MB one per call was paid again in page faults); the caller's buffer, seen by its
    // threads through wk
    packed::Buffer<float>& wk_buf = packed::scratch<float>(packed::Slot::conv_weights);
    if ((i64)wk_buf.size() < G * Kgp * CRS) wk_buf.resize(G * Kgp * CRS);
    float* const wk = wk_buf.data();
    // By block and tap, 32 channels at a time: the output written in order, the 32 weight rows read side by side
    // (a channel at a time wrote one float per 128-byte run: 64 of the 86 us of a batch-1 64ch 7x7 conv).
    parallel_items(G * nob, double(CRS) * OCB, [&](i64 b) {  // b = g * nob + ob
        const i64 g = b / nob, k0 = (b % nob) * OCB, nk = std::min(OCB, Kg - k0);
        const float* src = w + (g * Kg + k0) * CRS;
        float* dst = wk + b * CRS * OCB;
        for (i64 r = 0; r < CRS; ++r, dst += OCB) {
            for (i64 k = 0; k < nk; ++k) dst[k] = src[k * CRS + r];
            for (i64 k = nk; k < OCB; ++k) dst[k] = 0.f;
        }
    });
    auto tile_fn = ow2 == 8 ? (s.sw == 2 ? direct_tile16__avx512f<0, 2> : s.KW == 3 ? direct_tile16__avx512f<3, 1>
                                                                    : direct_tile16__avx512f<0, 1>)
                 : s.sw == 2 ? (ow2 == 7 ? direct_tile__avx512f<0, 2, 7> : ow2 == 6 ? direct_tile__avx512f<0, 2, 6>
                                                                       : direct_tile__avx512f<0, 2>)
                 : s.KW == 3 ? (ow2 == 7 ? direct_tile__avx512f<3, 1, 7> : ow2 == 6 ? direct_tile__avx512f<3, 1, 6>
                                                                       : direct_tile__avx512f<3, 1>)
                 : (ow2 == 7 ? direct_tile__avx512f<0, 1, 7> : ow2 == 6 ? direct_tile__avx512f<0, 1, 6>
                                                                 : direct_tile__avx512f<0, 1>);
    const i64 rstep = ow2 ? 2 : 1;  // output rows per tile
    // Two-row tiles take rows (0, 1), (2, 3), ... of an image; with an odd number of output rows and whole images
    // per task, a task takes two images and pairs their last rows (64ch 7x7: 8 -> 7 tiles per image pair).
    const bool img_pairs = ow2 && (s.OH & 1) && nblk == 1 && s.N > 1;
    const i64 ipt = img_pairs ? 2 : 1;  // images per task
    struct Tile { i64 x, row2, y, y2, t; };  // input offset in xp, second row (0: none), y offsets (y2 < 0: none)
    parallel_tasks((s.N + ipt - 1) / ipt * G * nblk, [&](i64 task) {
        const i64 ng = task / nblk, n0 = ng / G * ipt, g = ng % G, oh0 = (task % nblk) * rows;
        const i64 nr = std::min(rows, s.OH - oh0), ni = std::min(ipt, s.N - n0);
        const i64 Hq = (nr - 1) * s.sh + (s.KH - 1) * s.dh + 1, plane = Hq * Wp;  // padded input rows of the block
        packed::Buffer<float>& xp = packed::scratch<float>(packed::Slot::conv_input);
        if ((i64)xp.size() < ni * Cg * plane) xp.resize(ni * Cg * plane);
        for (i64 i = 0; i < ni; ++i)
            copy_padded_rows(x + ((n0 + i) * s.C + g * Cg) * HW, s, Cg, oh0 * s.sh - s.ph, Hq, Wp,
                             xp.data() + i * Cg * plane);
        std::vector<Tile> tiles;
        const auto xo = [&](i64 i, i64 r) { return i * Cg * plane + r * s.sh * Wp; };
        const auto yo = [&](i64 i, i64 r) { return ((n0 + i) * s.K + g * Kg) * P + (oh0 + r) * s.OW; };
        for (i64 i = 0; i < ni; ++i)
            for (i64 r = 0; r < nr; r += rstep)
                for (i64 t = 0; t < ntile; ++t) {
                    if (!ow2) tiles.push_back({xo(i, r) + t * NP * s.sw, 0, yo(i, r) + t * NP, -1, t});
                    else if (r + 1 < nr) tiles.push_back({xo(i, r), s.sh * Wp, yo(i, r), yo(i, r + 1), 0});
                    else if (ni == 1) tiles.push_back({xo(i, r), 0, yo(i, r), -1, 0});
                    else if (i == 1) tiles.push_back({xo(0, r), xo(1, r) - xo(0, r), yo(0, r), yo(1, r), 0});
                }
        packed::Buffer<float>& acc = packed::scratch<float>(packed::Slot::conv_output);
        const i64 nacc = ncb > 1 ? (i64)tiles.size() : 1;  // one tile unless tiles wait for later chunks
        if ((i64)acc.size() < nacc * TS) acc.resize(nacc * TS);
        for (i64 ob = 0; ob < nob; ++ob) {
            const float* wb = wk + (g * nob + ob) * CRS * OCB;
            const i64 kb = ob * OCB;  // the block's first output channel within the group
            for (i64 cb = 0; cb < ncb; ++cb) {
                const i64 c0 = cb * CB;
                for (size_t q = 0; q < tiles.size(); ++q) {
                    const Tile& T = tiles[q];
                    float* tile = acc.data() + (ncb > 1 ? i64(q) * TS : 0);
                    tile_fn(xp.data() + c0 * plane + T.x, plane, Wp, std::min(CB, Cg - c0), s.KH, s.KW, s.dh, s.dw,
                            wb + c0 * KK * OCB, tile, cb == 0, T.row2);
                    if (cb == ncb - 1)
                        direct_store__avx512f(tile, s.OW - T.t * NP, std::min(OCB, Kg - kb),
                                              bias ? bias + g * Kg + kb : nullptr,
                                              y + T.y + kb * P, P, T.y2 >= 0 ? y + T.y2 + kb * P : nullptr, ow2);
                }
            }
        }
    });
}

// conv2d_dw__direct (AVX-512, float, 3x3 kernels, column dilation 1): dweight with the roles of the direct forward.
// The tile is 32 output channels x the 9 taps of one input channel (18 zmm), summed over the output positions:
// per position two vectors of dy (32 channels, from a per-image transpose of dy: position-major) and the 9 input
// values under the kernel, broadcast from a zero-padded copy of the image. Nothing is gathered or packed, and the
// tile is summed over a whole image before it goes back to memory. Measured against conv2d_dw__gemm (whole
// backward, 2 threads, alternating builds): 64-ch 3x3 55-57 -> 47-48 ms, 128-ch 51-52 -> 44 ms, 256-ch 49-50 ->
// 45-46 ms; the stride-1 broadcast reuse (3 new values per position instead of 9) was 4-9 % of the dweight half.
bool direct_dw_can_run(const ConvShape& s) {
    const i64 Kg = s.K / s.groups;
    return packed::has_avx512f() && s.KH == 3 && s.KW == 3 && s.dw == 1 && (Kg % kDirectOc == 0 || Kg == 16);
}

// The dweight tiles' 9 taps, and their 18 accumulators' load and store (acc: 9 x 32 floats).
#define FASTNN_WT(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)
#define FASTNN_WDECL(t) __m512 a##t##0 = _mm512_loadu_ps(acc + t * 32), a##t##1 = _mm512_loadu_ps(acc + t * 32 + 16);
#define FASTNN_WSTORE(t) _mm512_storeu_ps(acc + t * 32, a##t##0); _mm512_storeu_ps(acc + t * 32 + 16, a##t##1);

// acc (9 taps x 32 channels) += the taps of one input channel over an image: dyt: position-major dy at the first of
// the 32 channels (position stride K); xc: the channel's padded plane (row stride Wp).
FASTNN_AVX512 static void dw_tile3x3__avx512f(const float* dyt, i64 K, const float* xc, i64 Wp,
                                                                  i64 dh, i64 sh, i64 sw, i64 OH, i64 OW,
                                                                  float* acc) {
#define FASTNN_WFMA(t)                                                   \
    {                                                                    \
        const __m512 v = _mm512_set1_ps(r[t / 3][t % 3]);                \
        a##t##0 = _mm512_fmadd_ps(v, d0, a##t##0);                       \
        a##t##1 = _mm512_fmadd_ps(v, d1, a##t##1);                       \
    }
    FASTNN_WT(FASTNN_WDECL)
    for (i64 oh = 0; oh < OH; ++oh) {
        const float* r[3] = {xc + oh * sh * Wp, xc + (oh * sh + dh) * Wp, xc + (oh * sh + 2 * dh) * Wp};
        const float* d = dyt + oh * OW * K;
        i64 ow = 0;
        if (sw == 1) {
            // Stride 1: a tap column at position ow is the next column at ow + 1, so each row's three input values
            // rotate through three registers (x<row><slot>): 3 new broadcasts per position instead of 9.
            __m512 x00 = _mm512_set1_ps(r[0][0]), x01 = _mm512_set1_ps(r[0][1]), x02;
            __m512 x10 = _mm512_set1_ps(r[1][0]), x11 = _mm512_set1_ps(r[1][1]), x12;
            __m512 x20 = _mm512_set1_ps(r[2][0]), x21 = _mm512_set1_ps(r[2][1]), x22;
#define FASTNN_WPOS(S0, S1, S2, NEW)                                                                        \
    {                                                                                                      \
        x0##S2 = _mm512_set1_ps(r[0][NEW]), x1##S2 = _mm512_set1_ps(r[1][NEW]), x2##S2 = _mm512_set1_ps(r[2][NEW]); \
        const __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16);                                 \
        a00 = _mm512_fmadd_ps(x0##S0, d0, a00), a01 = _mm512_fmadd_ps(x0##S0, d1, a01);                    \
        a10 = _mm512_fmadd_ps(x0##S1, d0, a10), a11 = _mm512_fmadd_ps(x0##S1, d1, a11);                    \
        a20 = _mm512_fmadd_ps(x0##S2, d0, a20), a21 = _mm512_fmadd_ps(x0##S2, d1, a21);                    \
        a30 = _mm512_fmadd_ps(x1##S0, d0, a30), a31 = _mm512_fmadd_ps(x1##S0, d1, a31);                    \
        a40 = _mm512_fmadd_ps(x1##S1, d0, a40), a41 = _mm512_fmadd_ps(x1##S1, d1, a41);                    \
        a50 = _mm512_fmadd_ps(x1##S2, d0, a50), a51 = _mm512_fmadd_ps(x1##S2, d1, a51);                    \
        a60 = _mm512_fmadd_ps(x2##S0, d0, a60), a61 = _mm512_fmadd_ps(x2##S0, d1, a61);                    \
        a70 = _mm512_fmadd_ps(x2##S1, d0, a70), a71 = _mm512_fmadd_ps(x2##S1, d1, a71);                    \
        a80 = _mm512_fmadd_ps(x2##S2, d0, a80), a81 = _mm512_fmadd_ps(x2##S2, d1, a81);                    \
        d += K;                                                                                            \
    }
            for (; ow + 3 <= OW; ow += 3) {
                FASTNN_WPOS(0, 1, 2, ow + 2)
                FASTNN_WPOS(1, 2, 0, ow + 3)
                FASTNN_WPOS(2, 0, 1, ow + 4)
            }
#undef FASTNN_WPOS
            r[0] += ow, r[1] += ow, r[2] += ow;
        }
        for (; ow < OW; ++ow, d += K, r[0] += sw, r[1] += sw, r[2] += sw) {
            const __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16);
            FASTNN_WT(FASTNN_WFMA)
        }
    }
    FASTNN_WT(FASTNN_WSTORE)
#undef FASTNN_WFMA
}

// The same for groups of 16 output channels: a tile is 9 taps x 16 channels of two input channels (c and the one
// `plane2` floats after it), so the 18 accumulators stay; per position one dy vector and 18 broadcasts, which are
// scalar loads any load port takes. acc: [tap][2 input channels][16].
FASTNN_AVX512 static void dw_tile3x3_k16__avx512f(const float* dyt, i64 K, const float* xc, i64 plane2, i64 Wp,
                                                  i64 dh, i64 sh, i64 sw, i64 OH, i64 OW, float* acc) {
#define FASTNN_WFMA(t)                                                                        \
    a##t##0 = _mm512_fmadd_ps(_mm512_set1_ps(r[t / 3][t % 3]), d0, a##t##0);                  \
    a##t##1 = _mm512_fmadd_ps(_mm512_set1_ps(r[t / 3][t % 3 + plane2]), d0, a##t##1);
    FASTNN_WT(FASTNN_WDECL)
    for (i64 oh = 0; oh < OH; ++oh) {
        const float* r[3] = {xc + oh * sh * Wp, xc + (oh * sh + dh) * Wp, xc + (oh * sh + 2 * dh) * Wp};
        const float* d = dyt + oh * OW * K;
        for (i64 ow = 0; ow < OW; ++ow, d += K, r[0] += sw, r[1] += sw, r[2] += sw) {
            const __m512 d0 = _mm512_loadu_ps(d);
            FASTNN_WT(FASTNN_WFMA)
        }
    }
    FASTNN_WT(FASTNN_WSTORE)
#undef FASTNN_WT
#undef FASTNN_WDECL
#undef FASTNN_WFMA
#undef FASTNN_WSTORE
}

// Threads take images (dynamic) and sum them into their own tile-major buffer ([g][32-channel block][c][tap][32]),
// added up into dw's layout at the end. With fewer images than threads (batch 1) they split the tiles instead,
// each going through every image, into one shared buffer.
void conv2d_dw__direct(const float* dy, const float* x, float* dw, const ConvShape& s) {
    constexpr i64 OCB = kDirectOc, TB = 9 * OCB;  // one tile
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, P = s.OH * s.OW, HW = s.H * s.W;
    // 16 channels a group: a tile per pair of input channels (an odd last one paired with itself, its second half
    // dropped); else a tile per (32-channel block, input channel)
    const bool k16 = Kg == 16;
    const i64 nob = k16 ? 1 : Kg / OCB, tpg = k16 ? nob * ((Cg + 1) / 2) : nob * Cg;  // tiles per group
    // (the stride-1 loop reads up to column OW + 1 = W + 2pw - 1: inside the padded row)
    const i64 Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp, ntl = G * tpg, WS = ntl * TB;
    const int nth = get_num_threads();
    const bool by_tiles = s.N < nth;
    const int nbuf = by_tiles ? 1 : nth;
    packed::Buffer<float>& part = packed::scratch<float>(packed::Slot::conv_dw_partial);  // the caller's; the threads see it through pp
    if ((i64)part.size() < nbuf * WS) part.resize(nbuf * WS);
    float* const pp = part.data();
    std::atomic<i64> next_image{0};
    parallel_tasks(nth, [&](i64 tid) {  // task tid owns buffer tid (or tile range tid); any thread may run it
        float* const acc = pp + (by_tiles ? 0 : tid * WS);
        const i64 tl0 = by_tiles ? ntl * tid / nth : 0, tl1 = by_tiles ? ntl * (tid + 1) / nth : ntl;
        std::fill(acc + tl0 * TB, acc + tl1 * TB, 0.f);
        packed::Buffer<float>& xp = packed::scratch<float>(packed::Slot::conv_input);
        packed::Buffer<float>& dyt = packed::scratch<float>(packed::Slot::conv_output);
        if ((i64)xp.size() < s.C * plane) xp.resize(s.C * plane);
        if ((i64)dyt.size() < P * s.K) dyt.resize(P * s.K);
        auto image = [&](i64 n) {
            // dy[n] (K x P) -> dyt (P x K), 4 channels at a time through SSE transposes
            for (i64 k = 0; k < s.K; k += 4)
                packed::transpose_lines(dy + (n * s.K + k) * P, P, P, dyt.data() + k, s.K);
            copy_padded_rows(x + n * s.C * HW, s, s.C, -s.ph, Hp, Wp, xp.data());
            for (i64 tl = tl0; tl < tl1; ++tl) {
                if (k16) {  // tile tl = g * tpg + c / 2
                    const i64 g = tl / tpg, c = 2 * (tl % tpg);
                    dw_tile3x3_k16__avx512f(dyt.data() + g * 16, s.K, xp.data() + (g * Cg + c) * plane,
                                            c + 1 < Cg ? plane : 0, Wp, s.dh, s.sh, s.sw, s.OH, s.OW, acc + tl * TB);
                    continue;
                }
                const i64 gb = tl / Cg, g = gb / nob, c = tl % Cg;  // tile tl = (g * nob + ob) * Cg + c
                dw_tile3x3__avx512f(dyt.data() + gb * OCB, s.K, xp.data() + (g * Cg + c) * plane, Wp, s.dh, s.sh,
                                    s.sw, s.OH, s.OW, acc + tl * TB);
            }
        };
        if (by_tiles) {
            for (i64 n = 0; n < s.N; ++n) image(n);
        } else {
            for (i64 n; (n = next_image.fetch_add(1)) < s.N;) image(n);
        }
    }, nth);
    // dw[k][c][tap] = the buffers' tiles, added in buffer order; a tile at a time, read in order (by output
    // channel, each read one float per 128-byte run: a fifth of a batch-1 128ch 7x7 backward)
    parallel_items(ntl, double(TB) * nbuf, [&](i64 tl) {
        const float* tile = pp + tl * TB;
        // tile tl: channels k0.. (16 or 32 of them) of input channel c (k16: c and c + 1, 16 floats apart)
        const i64 k0 = k16 ? (tl / tpg) * 16 : (tl / Cg) * OCB, c0 = k16 ? 2 * (tl % tpg) : tl % Cg;
        const i64 nk = k16 ? 16 : OCB, nc = k16 ? std::min<i64>(2, Cg - c0) : 1;
        float sum[TB];  // the buffers' tiles added (vectorised), then stored transposed
        std::copy(tile, tile + TB, sum);
        for (int th = 1; th < nbuf; ++th)
            for (i64 i = 0; i < TB; ++i) sum[i] += tile[th * WS + i];
        for (i64 h = 0; h < nc; ++h)
            for (i64 j = 0; j < nk; ++j) {
                float* d = dw + ((k0 + j) * Cg + c0 + h) * 9;
                for (i64 t = 0; t < 9; ++t) d[t] = sum[t * OCB + h * 16 + j];
            }
    });
}

}  // namespace fastnn
