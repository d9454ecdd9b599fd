// conv2d forward and backward (NCHW, stride, padding, dilation, groups) as implicit GEMMs on the packed GEMM
// driver of gemm_packed.h. Per image n and group g, with P = OH*OW and CRS = (C/groups)*KH*KW:
//   forward   y[n,g] (Kg x P)    = W[g] (Kg x CRS) . patches[n,g] (CRS x P)          (+ bias)
//   dweight   dW[g]  (Kg x CRS) += dy[n,g] (Kg x P) . patches[n,g]^T (P x CRS)      summed over n
//   dx        dcol   (CRS x P)   = W[g]^T (CRS x Kg) . dy[n,g] (Kg x P), then col2im of dcol into dx[n,g]
//   dbias     sum of dy over n and positions
// patches[n,g] is never materialised: the forward reads its rows in place from a polyphase copy of the input rows,
// dweight packs its B panels straight from the input.
//
// Variants:
//   conv2d_fwd__polyphase_gemm     any stride/padding/dilation/groups: per (image, group, block of output rows) the
//                                  input rows are copied once into zero-padded polyphase planes, where every tap's
//                                  run of output positions is contiguous: the microkernel reads B rows in place.
//   conv2d_fwd__polyphase_packed   the same copy for a few whole small images per task, but B packed (gathered) from
//                                  the valid output columns only: no junk columns (14x14: 196 of 224 were valid).
//   conv2d_fwd__direct             AVX-512 float, stride 1 or 2, 32-channel output blocks, OW near a multiple of 14:
//                                  a direct convolution (weight vectors x broadcast input values), no GEMM operand
//                                  packed per call but the weights; the conv shapes of the README table but two.
//   conv2d_fwd__winograd           float (AVX2/FMA or AVX-512), 3x3 stride 1, one group, >= 32 channels in and
//                                  out: Winograd F(2x2, 3x3), 16 GEMMs over the channels per block of 96 tiles.
//   conv2d_fwd__1x1_gemm           1x1/s1/p0: a plain GEMM on the NCHW planes.
//   conv2d_bwd_cfg                 dbias: threads over channels (double accumulators).
//                                  dweight, 3x3 (column dilation 1), 32-channel output blocks, AVX-512 float:
//                                  conv2d_dw__direct, the direct forward's tile turned around (below);
//                                  dweight otherwise (conv2d_dw__gemm):
//                                  threads take images (dynamic), each summing into a private dW (no
//                                  races), then the partials are added; B = patches^T gathered with AVX-512 from
//                                  a polyphase copy of the image (PackGatherCols), else packed from tap lines
//                                  (patch_row) with SSE2 block transposes (PackPatchesT).
//                                  dx, stride 1 and >= MR input channels: the forward of dy with flipped, transposed
//                                  weights (the "full" correlation); otherwise dcol in ~1 MiB row blocks + col2im,
//                                  threads over (image, group).
#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "gemm_packed.h"
#include "im2col.h"
#include "simd.h"

namespace fastnn {

namespace {

bool is_1x1_s1_p0(const ConvShape& s) {
    return s.KH == 1 && s.KW == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
}

// The transpose for dweight: B(k = output position, j = tap). A few taps (panel columns) are gathered into lines,
// then transposed into the panel together.
template <class Cf, typename T = typename Cf::T>
struct PackPatchesT {
    const T* x;
    const ConvShape* s;
    i64 jbase = 0;  // first tap (column) of this GEMM
    void operator()(i64 p0, i64 kc, i64 j0, i64 nc, T* dst) const {
        j0 += jbase;
        constexpr i64 NR = Cf::NR, L = packed::transpose_block<T>();  // lanes per transpose block
        static_assert(NR % L == 0, "panel width must be a multiple of the transpose block");
        const i64 KK = s->KH * s->KW;
        packed::Buffer<T>& lines = packed::scratch<T>(packed::Slot::patch_lines);
        if ((i64)lines.size() < L * kc) lines.resize(L * kc);
        for (i64 j = 0; j < packed::round_up(nc, NR); j += L) {
            for (i64 i = 0; i < L; ++i) {
                T* line = lines.data() + i * kc;
                if (j + i >= nc) {
                    std::fill(line, line + kc, T(0));
                    continue;
                }
                const i64 crs = j0 + j + i, c = crs / KK, r = crs % KK;
                patch_row(x + c * s->H * s->W, *s, r / s->KW, r % s->KW, p0, kc, line);
            }
            packed::transpose_lines(lines.data(), kc, kc, dst + (j / NR) * NR * kc + j % NR, NR);
        }
    }
};

// B(k = tap c,kh,kw, j' = r*Wq + ow) over a polyphase, zero-padded copy of the input rows. The padded input
// (width Wp = W + 2pw) is split into sh x sw phases (padded row ihp -> phase ihp % sh, row ihp / sh; column likewise),
// each an (Hq x Wq) plane. Output (r, ow) at tap (kh, kw) then reads phase ((kh*dh) % sh, (kw*dw) % sw) at row
// r + (kh*dh)/sh, column ow + (kw*dw)/sw: for a fixed tap, consecutive j' are consecutive addresses, so every panel
// row is a contiguous run, whatever the stride: the microkernel reads B rows in place through a table of tap
// offsets (gemm_blocked_rows), nothing is packed. Columns with ow >= OW are junk (computed, then dropped).
struct Polyphase {
    i64 Hq, Wq, plane;  // plane = Hq * Wq
    i64 tap_offset(const ConvShape& s, i64 c, i64 kh, i64 kw) const {
        const i64 a = kh * s.dh, b = kw * s.dw;
        return ((c * s.sh + a % s.sh) * s.sw + b % s.sw) * plane + (a / s.sh) * Wq + b / s.sw;
    }
};

// Row length of a phase plane. With sw == 1 the rows are W + pw long, not W + 2pw: a row's right padding is the
// next row's left padding (or the zero slack after the last plane), which halves the junk columns
// (3x3 pad 1 on 14x14: 14 of 15 columns are valid instead of 14 of 16). It needs OW <= W + pw, i.e. pw <= dw*(KW-1).
inline i64 polyphase_wq(const ConvShape& s) {
    const bool shared_pad = s.sw == 1 && s.pw <= s.dw * (s.KW - 1);
    return shared_pad ? s.W + s.pw : (s.W + 2 * s.pw + s.sw - 1) / s.sw;
}

// Channels [c0, c1) of one image's group planes xg, output rows from oh0 on, into zero-padded polyphase planes at dst
// (channel c at (c - c0) * sh * sw * plane).
template <typename T>
void copy_polyphase(const T* xg, const ConvShape& s, i64 c0, i64 c1, i64 oh0, const Polyphase& q, T* dst) {
    const i64 Wq = q.Wq;
    for (i64 c = c0; c < c1; ++c)
        for (i64 a = 0; a < s.sh; ++a)
            for (i64 r = 0; r < q.Hq; ++r) {
                const i64 ih = (oh0 + r) * s.sh + a - s.ph;
                const T* src = xg + (c * s.H + ih) * s.W;
                const bool row_in = ih >= 0 && ih < s.H;
                for (i64 b = 0; b < s.sw; ++b) {
                    T* d = dst + (((c - c0) * s.sh + a) * s.sw + b) * q.plane + r * Wq;
                    // u with iw = u*sw + b - pw inside [0, W): [u0, u1); zeros around
                    const i64 u0 = std::min(Wq, (s.pw - b + s.sw - 1 + s.sw * Wq) / s.sw - Wq);
                    const i64 u1 = std::clamp((s.W + s.pw - b + s.sw - 1) / s.sw, u0, Wq);
                    if (!row_in) {
                        std::fill(d, d + Wq, T(0));
                        continue;
                    }
                    std::fill(d, d + u0, T(0));
                    if (s.sw == 1) copy_run(src + u0 - s.pw, d + u0, u1 - u0);
                    else strided_row(src + u0 * s.sw + b - s.pw, s.sw, d + u0, u1 - u0);
                    std::fill(d + u1, d + Wq, T(0));
                }
            }
}

inline std::vector<i64>& tap_offsets() {
    static thread_local std::vector<i64> v;
    return v;
}

// B packer for conv2d_fwd__polyphase_packed (and dweight, with the roles of rows and columns swapped: toff = output
// positions, col = taps): B(k, j) = base[toff[k] + col[j]] over the valid output columns only
// (col[j] = image offset + r*Wq + ow; entries past the last column point at 0 and land in the panel's zero-use
// padding). Per depth row: NR/16 16-lane gathers per float panel (AVX-512F), else a scalar loop.
template <int NV>
FASTNN_AVX512 static void gather_rows__avx512f(const float* base, const i64* toff, i64 kc,
                                                                   const int* col, float* dst) {
    __m512i ix[NV];
    for (int v = 0; v < NV; ++v) ix[v] = _mm512_loadu_si512(col + 16 * v);
    for (i64 k = 0; k < kc; ++k, dst += 16 * NV) {
        const float* src = base + toff[k];
        for (int v = 0; v < NV; ++v) _mm512_storeu_ps(dst + 16 * v, _mm512_i32gather_ps(ix[v], src, 4));
    }
}
template <class Cf, typename T = typename Cf::T>
struct PackGatherCols {
    const T* base;
    const i64* toff;  // depth row k -> offset of its tap
    const int* col;   // column j -> offset of its output position (round_up(N, NR) entries)
    void operator()(i64 p0, i64 kc, i64 j0, i64 nc, T* dst) const {
        constexpr i64 NR = Cf::NR;
        for (i64 jr = 0; jr < nc; jr += NR, dst += NR * kc) {
            const int* cj = col + j0 + jr;
            if constexpr (std::is_same<T, float>::value && NR % 16 == 0) {
                if (packed::has_avx512f()) {
                    gather_rows__avx512f<NR / 16>(base, toff + p0, kc, cj, dst);
                    continue;
                }
            }
            for (i64 k = 0; k < kc; ++k) {
                const T* src = base + toff[p0 + k];
                for (i64 c = 0; c < NR; ++c) dst[k * NR + c] = src[cj[c]];
            }
        }
    }
};

// y for ni images from a GEMM tile yt (Kg x ni*P, image i's columns at i*P): image i, channel k at
// y + i*ystride + k*P, plus bias[k] when bias is given.
template <typename T>
void unpack_images(const T* yt, i64 ni, i64 Kg, i64 P, const T* bias, T* y, i64 ystride) {
    for (i64 i = 0; i < ni; ++i)
        for (i64 k = 0; k < Kg; ++k) {
            const T* src = yt + k * ni * P + i * P;
            T* d = y + i * ystride + k * P;
            if (bias) {
                const T b = bias[k];
                for (i64 j = 0; j < P; ++j) d[j] = src[j] + b;
            } else {
                std::memcpy(d, src, sizeof(T) * P);
            }
        }
}

}  // namespace

// conv2d_fwd__polyphase_gemm: task = (image, group, block of output rows). The task copies its input rows into the
// polyphase planes once (amortised over the KH*KW taps that read them), runs the GEMM over the Wq-wide columns into
// a scratch tile and keeps the valid columns (+ bias).
template <class Cf, typename T = typename Cf::T>
static void conv2d_fwd__polyphase_gemm(const T* x, const std::vector<packed::PrepackedA<Cf>>& wp, const T* bias,
                                       T* y, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.KH * s.KW, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 Wq = polyphase_wq(s), nt = get_num_threads();
    // About 4096 GEMM columns per task (input copy + output tile ~1.7 MB on 64x56x56: L2 is 2 MB here; 1024 was
    // 4-7% slower on 64x56x56 and 7x7/2 on 224x224), but enough tasks to balance the threads (x4).
    i64 rows = std::max<i64>(1, std::min<i64>(s.OH, 4096 / Wq));
    const i64 want = (4 * nt + s.N * G - 1) / (s.N * G);
    if ((s.OH + rows - 1) / rows < want) rows = std::max<i64>(1, s.OH / want);
    const i64 nblk = (s.OH + rows - 1) / rows;
    // conv2d_fwd__polyphase_packed: small images (one row block each) whose Wq-wide rows and last partial panel
    // waste many columns (14x14, 3x3 pad 1: 224 computed per 196 valid) take `ipt` whole images per task and pack
    // B from the valid columns only (gathers), when the columns saved outweigh the packing (~12 FMA rows'
    // worth per packed element, a guess from the gather rate).
    i64 ipt = 1;
    bool gather = false;
    if (nblk == 1) {
        ipt = std::max<i64>(1, std::min<i64>(1024 / P, s.N / (4 * nt)));
        const double ind_cols = (double)packed::round_up(s.OH * Wq, Cf::NR);
        const double gat_cols = (double)packed::round_up(ipt * P, Cf::NR) / ipt;
        const i64 img = Cg * s.sh * s.sw * (s.OH + (s.KH - 1) * s.dh / s.sh) * Wq;  // xq elements per image
        gather = ind_cols * Kg > gat_cols * (Kg + 12) && ipt * img < (i64(1) << 30);  // int32 gather indices
        if (!gather) ipt = 1;
    }
    const i64 nchunk = (s.N + ipt - 1) / ipt;
    parallel_tasks(nchunk * G * nblk, [&](i64 t) {
        const i64 ng = t / nblk, n = (ng / G) * ipt, g = ng % G, oh0 = (t % nblk) * rows, nr = std::min(rows, s.OH - oh0);
        const i64 ni = std::min(ipt, s.N - n);
        const i64 Hq = nr + (s.KH - 1) * s.dh / s.sh, ncols = nr * Wq;
        const Polyphase q{Hq, Wq, Hq * Wq};
        const i64 img = Cg * s.sh * s.sw * q.plane;  // one image's planes in xq
        // Slack past the last plane for the junk columns of the last rows (and the last panel's padding).
        const i64 xsize = ni * img + 2 * Wq + s.pw + 2 * Cf::NR;
        packed::Buffer<T>& xq = packed::scratch<T>(packed::Slot::conv_input);
        if ((i64)xq.size() < xsize) xq.resize(xsize);
        for (i64 i = 0; i < ni; ++i)
            copy_polyphase(x + ((n + i) * s.C + g * Cg) * HW, s, 0, Cg, oh0, q, xq.data() + i * img);
        std::fill(xq.data() + ni * img, xq.data() + xsize, T(0));
        std::vector<i64>& toff = tap_offsets();
        toff.resize(CRS);
        for (i64 crs = 0; crs < CRS; ++crs) {
            const i64 r = crs % (s.KH * s.KW);
            toff[crs] = q.tap_offset(s, crs / (s.KH * s.KW), r / s.KW, r % s.KW);
        }
        if (gather) {  // columns j = (image i, oh, ow), valid ones only
            const i64 nv = ni * P, nvp = packed::round_up(nv, Cf::NR);
            static thread_local std::vector<int> col;
            col.assign(nvp, 0);
            for (i64 j = 0; j < nv; ++j) {
                const i64 i = j / P, oh = (j % P) / s.OW, ow = j % s.OW;
                col[j] = (int)(i * img + oh * Wq + ow);
            }
            packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
            if ((i64)yt.size() < Kg * nv) yt.resize(Kg * nv);
            packed::gemm_blocked<Cf>(Kg, nv, CRS, T(1), wp[g], PackGatherCols<Cf>{xq.data(), toff.data(), col.data()},
                                     T(0), yt.data(), nv);
            unpack_images(yt.data(), ni, Kg, P, bias ? bias + g * Kg : nullptr, y + (n * s.K + g * Kg) * P, s.K * P);
            return;
        }
        packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
        if ((i64)yt.size() < Kg * ncols) yt.resize(Kg * ncols);
        packed::gemm_blocked_rows<Cf>(Kg, ncols, CRS, wp[g], xq.data(), toff.data(), T(0), yt.data(), ncols);
        T* yg = y + (n * s.K + g * Kg) * P + oh0 * s.OW;
        for (i64 k = 0; k < Kg; ++k) {
            const T b = bias ? bias[g * Kg + k] : T(0);
            for (i64 r = 0; r < nr; ++r) {
                const T* src = yt.data() + k * ncols + r * Wq;
                T* d = yg + k * P + r * s.OW;
                if (bias) for (i64 ow = 0; ow < s.OW; ++ow) d[ow] = src[ow] + b;
                else std::memcpy(d, src, sizeof(T) * s.OW);
            }
        }
    });
}

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
template <int KWC, int SW>  // KWC: KW when known at compile time (3: its loop unrolled), else 0; SW: the stride
FASTNN_AVX512 static void direct_tile__avx512f(const float* xr0, i64 plane, i64 Wp, i64 Cg,
                                                                   i64 KH, i64 KW_, i64 dh, i64 dw,
                                                                   const float* wk, float* out, bool first) {
#define FASTNN_DDECL(p) __m512 a##p##0 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + p * 32), \
                               a##p##1 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + p * 32 + 16);
#define FASTNN_DFMA(p)                                                  \
    {                                                                   \
        const __m512 v = _mm512_set1_ps(xs[p * SW]);                    \
        a##p##0 = _mm512_fmadd_ps(v, w0, a##p##0);                      \
        a##p##1 = _mm512_fmadd_ps(v, w1, a##p##1);                      \
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
// valid positions at y + j*ystride.
FASTNN_AVX512 static void direct_store__avx512f(const float* tile, i64 np, const float* bias,
                                                                    float* y, i64 ystride) {
    const __mmask16 m = (__mmask16)((1u << std::min(np, kDirectPos)) - 1);
    for (int h = 0; h < kDirectOc / 16; ++h) {
        __m512 r[16], out[16];
        for (int p = 0; p < 16; ++p) r[p] = p < kDirectPos ? _mm512_loadu_ps(tile + p * kDirectOc + 16 * h) : _mm512_setzero_ps();
        transpose16x16__avx512f(r, out);
        for (int j = 0; j < 16; ++j) {
            __m512 v = out[j];
            if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(bias[16 * h + j]));
            _mm512_mask_storeu_ps(y + (16 * h + j) * ystride, m, v);
        }
    }
}

// Where conv2d_fwd__direct runs: AVX-512 float, stride 1 or 2, whole 32-channel output blocks per group, and no
// more than 10 % of the tile positions past the row ends (OW = 14, 28, 56, 112: none).
static bool direct_fits(const ConvShape& s) {
    const i64 Kg = s.K / s.groups, ow_tiles = (s.OW + kDirectPos - 1) / kDirectPos * kDirectPos;
    return packed::has_avx512f() && (s.sw == 1 || s.sw == 2) && Kg % kDirectOc == 0 && ow_tiles * 10 <= s.OW * 11;
}

// Task = (image, group, block of output rows): the block's input rows are copied into zero-padded planes (the
// broadcasts then need no bounds test), then per 32-channel output block the tiles accumulate over chunks of
// CB = 16 input channels, whose weights (16 x 9 taps x 32 x 4 B = 18 KB on 3x3) stay in L1 across the block's
// tiles; a tile is written to y (with its bias) after its last chunk.
static void conv2d_fwd__direct(const float* x, const float* w, const float* bias, float* y, const ConvShape& s) {
    constexpr i64 NP = kDirectPos, OCB = kDirectOc, TS = NP * OCB, CB = 16;
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW, CRS = Cg * KK, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 nob = Kg / OCB, ntile = (s.OW + NP - 1) / NP, ncb = (Cg + CB - 1) / CB;
    const i64 Wp = std::max(s.W + 2 * s.pw, (ntile * NP - 1) * s.sw + (s.KW - 1) * s.dw + 1);
    // Output rows per task: the block's partial tiles (when there are several channel chunks) within 256 KB, and
    // enough tasks to balance the threads (x4).
    const i64 nt = get_num_threads();
    i64 rows = std::max<i64>(1, std::min<i64>(s.OH, (i64(256) << 10) / (i64)sizeof(float) / (ntile * TS)));
    const i64 want = (4 * nt + s.N * G - 1) / (s.N * G);
    if ((s.OH + rows - 1) / rows < want) rows = std::max<i64>(1, s.OH / want);
    const i64 nblk = (s.OH + rows - 1) / rows;
    // weights as [g][oc block][c][kh][kw][32 output channels], in a buffer kept between calls (a fresh 2.4 MB one per
    // call was paid again in page faults); the caller's buffer, seen by its threads through wk
    packed::Buffer<float>& wk_buf = packed::scratch<float>(packed::Slot::conv_weights);
    if ((i64)wk_buf.size() < s.K * CRS) wk_buf.resize(s.K * CRS);
    float* const wk = wk_buf.data();
    parallel_items(s.K, double(CRS), [&](i64 k) {
        for (i64 r = 0; r < CRS; ++r) wk[((k / OCB) * CRS + r) * OCB + k % OCB] = w[k * CRS + r];
    });
    auto tile_fn = s.sw == 2 ? direct_tile__avx512f<0, 2> : s.KW == 3 ? direct_tile__avx512f<3, 1> : direct_tile__avx512f<0, 1>;
    parallel_tasks(s.N * G * nblk, [&](i64 task) {
        const i64 ng = task / nblk, n = ng / G, g = ng % G, oh0 = (task % nblk) * rows, nr = std::min(rows, s.OH - oh0);
        const i64 Hq = (nr - 1) * s.sh + (s.KH - 1) * s.dh + 1, plane = Hq * Wp;  // padded input rows of the block
        packed::Buffer<float>& xp = packed::scratch<float>(packed::Slot::conv_input);
        if ((i64)xp.size() < Cg * plane) xp.resize(Cg * plane);
        copy_padded_rows(x + (n * s.C + g * Cg) * HW, s, Cg, oh0 * s.sh - s.ph, Hq, Wp, xp.data());
        packed::Buffer<float>& acc = packed::scratch<float>(packed::Slot::conv_output);
        const i64 nacc = ncb > 1 ? nr * ntile : 1;  // one tile's worth unless tiles must wait for later chunks
        if ((i64)acc.size() < nacc * TS) acc.resize(nacc * TS);
        for (i64 ob = 0; ob < nob; ++ob) {
            const float* wb = wk + (g * nob + ob) * CRS * OCB;
            const i64 k0 = g * Kg + ob * OCB;
            for (i64 cb = 0; cb < ncb; ++cb) {
                const i64 c0 = cb * CB;
                for (i64 r = 0; r < nr; ++r)
                    for (i64 t = 0; t < ntile; ++t) {
                        float* tile = acc.data() + (ncb > 1 ? (r * ntile + t) * TS : 0);
                        tile_fn(xp.data() + c0 * plane + r * s.sh * Wp + t * NP * s.sw, plane, Wp, std::min(CB, Cg - c0),
                                s.KH, s.KW, s.dh, s.dw, wb + c0 * KK * OCB, tile, cb == 0);
                        if (cb == ncb - 1)
                            direct_store__avx512f(tile, s.OW - t * NP, bias ? bias + k0 : nullptr,
                                                  y + (n * s.K + k0) * P + (oh0 + r) * s.OW + t * NP, P);
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
static bool direct_dw_fits(const ConvShape& s) {
    return packed::has_avx512f() && s.KH == 3 && s.KW == 3 && s.dw == 1 && (s.K / s.groups) % kDirectOc == 0;
}

// acc (9 taps x 32 channels) += the taps of one input channel over an image: dyt: position-major dy at the first of
// the 32 channels (position stride K); xc: the channel's padded plane (row stride Wp).
FASTNN_AVX512 static void dw_tile3x3__avx512f(const float* dyt, i64 K, const float* xc, i64 Wp,
                                                                  i64 dh, i64 sh, i64 sw, i64 OH, i64 OW,
                                                                  float* acc) {
#define FASTNN_WT(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8)
#define FASTNN_WDECL(t) __m512 a##t##0 = _mm512_loadu_ps(acc + t * 32), a##t##1 = _mm512_loadu_ps(acc + t * 32 + 16);
#define FASTNN_WFMA(t)                                                   \
    {                                                                    \
        const __m512 v = _mm512_set1_ps(r[t / 3][t % 3]);                \
        a##t##0 = _mm512_fmadd_ps(v, d0, a##t##0);                       \
        a##t##1 = _mm512_fmadd_ps(v, d1, a##t##1);                       \
    }
#define FASTNN_WSTORE(t) _mm512_storeu_ps(acc + t * 32, a##t##0); _mm512_storeu_ps(acc + t * 32 + 16, a##t##1);
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
#undef FASTNN_WT
#undef FASTNN_WDECL
#undef FASTNN_WFMA
#undef FASTNN_WSTORE
}

// Threads take images (dynamic) and sum them into their own tile-major buffer ([g][32-channel block][c][tap][32]),
// added up into dw's layout at the end. With fewer images than threads (batch 1) they split the tiles instead,
// each going through every image, into one shared buffer.
static void conv2d_dw__direct(const float* dy, const float* x, float* dw, const ConvShape& s) {
    constexpr i64 OCB = kDirectOc, TB = 9 * OCB;  // one tile
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, nob = Kg / OCB, P = s.OH * s.OW, HW = s.H * s.W;
    // (the stride-1 loop reads up to column OW + 1 = W + 2pw - 1: inside the padded row)
    const i64 Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp, WS = s.K * Cg * 9, ntl = G * nob * Cg;
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
            for (i64 tl = tl0; tl < tl1; ++tl) {  // tile tl = (g * nob + ob) * Cg + c
                const i64 gb = tl / Cg, g = gb / nob, c = tl % Cg;
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
    // dw[k][c][tap] = the buffers' tiles, added in buffer order
    parallel_tasks(s.K, [&](i64 k) {
        const i64 j = k % OCB, gb = k / OCB;  // gb = g * nob + ob
        for (i64 c = 0; c < Cg; ++c)
            for (i64 t = 0; t < 9; ++t) {
                float v = 0.f;
                for (int th = 0; th < nbuf; ++th) v += pp[th * WS + (gb * Cg + c) * TB + t * OCB + j];
                dw[(k * Cg + c) * 9 + t] = v;
            }
    });
}

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
static bool winograd_fits(const ConvShape& s) {
    const i64 tiles = s.N * ((s.OH + 1) / 2) * ((s.OW + 1) / 2);
    return has_avx2_fma() && s.KH == 3 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
           s.groups == 1 && s.C >= 32 && s.K >= 32 && tiles >= 2 * kWinoTiles;
}

template <class Cf>
static void conv2d_fwd__winograd(const float* x, const float* w, const float* bias, float* y, const ConvShape& s) {
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

// The forward for one kernel configuration: Winograd or the direct convolution where they fit, else weights
// prepacked once (shared read-only by all threads), then the polyphase implicit GEMM, or for 1x1/s1/p0 convs a plain
// GEMM on the input planes (conv2d_fwd__1x1_gemm).
template <class Cf, typename T = typename Cf::T>
static void conv2d_fwd_cfg(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    constexpr i64 NR = Cf::NR;
    if (s.N == 0) return;
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.KH * s.KW, P = s.OH * s.OW, HW = s.H * s.W;
    if constexpr (std::is_same<T, float>::value) {
        if (winograd_fits(s)) return conv2d_fwd__winograd<Cf>(x, w, bias, y, s);
        if (!is_1x1_s1_p0(s) && direct_fits(s)) return conv2d_fwd__direct(x, w, bias, y, s);
    }
    std::vector<packed::PrepackedA<Cf>> wp(G);
    for (i64 g = 0; g < G; ++g) wp[g].pack(Kg, CRS, packed::PackMatA<Cf>{w + g * Kg * CRS, CRS, false});
    if (!is_1x1_s1_p0(s)) return conv2d_fwd__polyphase_gemm<Cf>(x, wp, bias, y, s);
    const i64 nt = get_num_threads();
    // Small planes (14x14: 196 columns, computed as 240 in 48-wide panels): B gathered straight from `ipt` images'
    // planes into one GEMM (columns j = (image, position)), when that cuts the computed columns by more than 5 %.
    const i64 ipt = std::max<i64>(1, std::min<i64>(1024 / P, s.N / (4 * nt)));
    if (std::is_same<T, float>::value && Cf::NR % 16 == 0 && packed::has_avx512f() && ipt > 1 &&
        (double)packed::round_up(P, Cf::NR) > 1.05 * packed::round_up(ipt * P, Cf::NR) / ipt &&
        ipt * s.C * HW < (i64(1) << 31)) {
        const i64 nchunk = (s.N + ipt - 1) / ipt;
        std::vector<i64> toff(Cg);
        for (i64 c = 0; c < Cg; ++c) toff[c] = c * HW;
        parallel_tasks(nchunk * G, [&](i64 t) {
            const i64 n = (t / G) * ipt, g = t % G, ni = std::min(ipt, s.N - n), nv = ni * P;
            static thread_local std::vector<int> col;
            col.assign(packed::round_up(nv, Cf::NR), 0);
            for (i64 j = 0; j < nv; ++j) col[j] = (int)((j / P) * s.C * HW + j % P);
            packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
            if ((i64)yt.size() < Kg * nv) yt.resize(Kg * nv);
            packed::gemm_blocked<Cf>(Kg, nv, CRS, T(1), wp[g],
                                     PackGatherCols<Cf>{x + (n * s.C + g * Cg) * HW, toff.data(), col.data()}, T(0),
                                     yt.data(), nv);
            unpack_images(yt.data(), ni, Kg, P, bias ? bias + g * Kg : nullptr, y + (n * s.K + g * Kg) * P, s.K * P);
        });
        return;
    }
    // Column blocks of P: enough tasks to balance threads (x4), none wider than 1024 (B block of L2 size).
    i64 nchunk = std::max<i64>((4 * nt + s.N * G - 1) / (s.N * G), (P + 1023) / 1024);
    const i64 chunk = packed::round_up((P + nchunk - 1) / nchunk, NR);
    nchunk = (P + chunk - 1) / chunk;
    parallel_tasks(s.N * G * nchunk, [&](i64 t) {
        const i64 ng = t / nchunk, n = ng / G, g = ng % G, j0 = (t % nchunk) * chunk, len = std::min(chunk, P - j0);
        const T* xg = x + (n * s.C + g * Cg) * HW;
        T* yg = y + (n * s.K + g * Kg) * P + j0;
        packed::gemm_blocked<Cf>(Kg, len, CRS, T(1), wp[g], packed::PackMatB<Cf>{xg + j0, HW, false}, T(0), yg, P);
        if (bias)
            for (i64 k = 0; k < Kg; ++k) {
                const T b = bias[g * Kg + k];
                for (i64 j = 0; j < len; ++j) yg[k * P + j] += b;
            }
    });
}

// dweight on the packed GEMM (any shape).
template <class Cf, typename T = typename Cf::T>
static void conv2d_dw__gemm(const T* dy, const T* x, T* dw, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW, CRS = Cg * KK, P = s.OH * s.OW,
              HW = s.H * s.W;
    const bool plain = is_1x1_s1_p0(s);
    const int nt = (int)std::max<i64>(1, std::min<i64>(get_num_threads(), s.N));
    // dweight: each thread sums the images it takes (dynamic schedule: a descheduled thread on a shared machine
    // does not hold up the others) into its own buffer (thread 0: dw itself), then the buffers are added up.
    // No races; the rounding order depends on which thread took which image.
    // Tasks are chunks of images; within one, a block of dw columns (<= 512 KiB of dw: it stays in L2) takes every
    // image of the chunk before the next block, instead of each image passing over all of dw (> L2 on the
    // 256-channel shapes: every microkernel call then waited for its C tile from L3).
    const i64 WS = s.K * CRS;
    const i64 ipc = std::max<i64>(1, s.N / (4 * nt)), nchunk = (s.N + ipc - 1) / ipc;
    const i64 jnb = std::max<i64>(1, (Kg * CRS * (i64)sizeof(T) + (512 << 10) - 1) / (512 << 10));
    const i64 jw = packed::round_up((CRS + jnb - 1) / jnb, Cf::NR);
    // B = patches^T gathered (AVX-512): the image's channels of a column block are copied into polyphase planes
    // (as in the forward), then depth row p (output position) of an NR-tap panel is NR/16 16-lane gathers at
    // offsets tap[j] from pos[p]: one pass instead of patch_row lines + 4x4 transposes.
    const Polyphase qd{s.OH + (s.KH - 1) * s.dh / s.sh, polyphase_wq(s), (s.OH + (s.KH - 1) * s.dh / s.sh) * polyphase_wq(s)};
    const i64 dimg = Cg * s.sh * s.sw * qd.plane, dslack = 2 * qd.Wq + s.pw + 2 * Cf::NR;
    const bool dgather = !plain && std::is_same<T, float>::value && Cf::NR % 16 == 0 && packed::has_avx512f() &&
                         dimg + dslack < (i64(1) << 30);
    std::vector<i64> dpos(dgather ? P : 0);
    for (i64 p = 0; p < (i64)dpos.size(); ++p) dpos[p] = (p / s.OW) * qd.Wq + p % s.OW;
    // dy[n, g] (Kg x P) in A panels, packed once per image and reused by every block of dw columns (it was packed
    // again for each of them: 5 times per image on the 256-channel 3x3 shape)
    auto pack_dy = [&](i64 n, i64 g, packed::PrepackedA<Cf>& a) {
        a.pack(Kg, P, packed::PackMatA<Cf>{dy + (n * s.K + g * Kg) * P, P, false});
    };
    // images n0..n1 of group g (their packed dy: dya[n - n0]) into the dw columns j0..j0+nc (c: their first
    // element, row stride CRS); the first image overwrites c when `zero`, the rest accumulate.
    auto dw_block = [&](i64 n0, i64 n1, i64 g, i64 j0, i64 nc, T* c, bool zero, const packed::PrepackedA<Cf>* dya) {
        const i64 c0 = j0 / KK, c1 = (j0 + nc - 1) / KK + 1;
        static thread_local std::vector<int> tap;
        if (dgather) {
            tap.assign(packed::round_up(nc, Cf::NR), 0);
            for (i64 j = 0; j < nc; ++j) {
                const i64 r = (j0 + j) % KK;
                tap[j] = (int)qd.tap_offset(s, (j0 + j) / KK - c0, r / s.KW, r % s.KW);
            }
        }
        for (i64 n = n0; n < n1; ++n) {
            const T beta = zero && n == n0 ? T(0) : T(1);
            const packed::PrepackedA<Cf>& a = dya[n - n0];
            const T* xg = x + (n * s.C + g * Cg) * HW;
            if (dgather) {
                packed::Buffer<T>& xq = packed::scratch<T>(packed::Slot::conv_input);
                const i64 used = (c1 - c0) * s.sh * s.sw * qd.plane;
                if ((i64)xq.size() < used + dslack) xq.resize(used + dslack);
                copy_polyphase(xg, s, c0, c1, 0, qd, xq.data());
                std::fill(xq.data() + used, xq.data() + used + dslack, T(0));
                packed::gemm_blocked<Cf>(Kg, nc, P, T(1), a, PackGatherCols<Cf>{xq.data(), dpos.data(), tap.data()},
                                         beta, c, CRS);
            } else if (plain) {
                packed::gemm_blocked<Cf>(Kg, nc, P, T(1), a, packed::PackMatB<Cf>{xg + j0 * HW, HW, true}, beta, c,
                                         CRS);
            } else {
                packed::gemm_blocked<Cf>(Kg, nc, P, T(1), a, PackPatchesT<Cf>{xg, &s, j0}, beta, c, CRS);
            }
        }
    };
    // Fewer images than threads (a single-image batch ran on one thread): tasks are blocks of dw columns, each
    // taking every image, written straight into dw (no partial sums).
    const i64 nt_all = get_num_threads(), npan = (CRS + Cf::NR - 1) / Cf::NR;
    if (s.N < nt_all && G * npan >= 2) {
        const i64 per = std::max<i64>(1, npan * G / (4 * nt_all)), jwc = per * Cf::NR, nbc = (CRS + jwc - 1) / jwc;
        std::vector<packed::PrepackedA<Cf>> dya(G * s.N);  // dy[n, g] at g*N + n, shared by the tasks
        parallel_tasks(G * s.N, [&](i64 t) { pack_dy(t % s.N, t / s.N, dya[t]); });
        parallel_tasks(G * nbc, [&](i64 t) {
            const i64 g = t / nbc, j0 = (t % nbc) * jwc;
            dw_block(0, s.N, g, j0, std::min(jwc, CRS - j0), dw + g * Kg * CRS + j0, true, dya.data() + g * s.N);
        });
        return;
    }
    // the extra threads' sums live in the calling thread's scratch buffer, kept between calls (a fresh allocation
    // per call was paid again in page faults)
    packed::Buffer<T>& partial = packed::scratch<T>(packed::Slot::conv_dw_partial);
    if ((i64)partial.size() < (nt - 1) * WS) partial.resize((nt - 1) * WS);
    std::atomic<i64> next_chunk{0};
    parallel_tasks(nt, [&](i64 t) {  // task t sums its chunks into its own buffer (t == 0: dw itself)
        T* acc = t == 0 ? dw : partial.data() + (t - 1) * WS;
        bool first = true;
        std::vector<packed::PrepackedA<Cf>> dya(ipc);
        for (i64 ch; (ch = next_chunk.fetch_add(1)) < nchunk;) {
            const i64 n0 = ch * ipc, n1 = std::min(s.N, n0 + ipc);
            for (i64 g = 0; g < G; ++g) {
                for (i64 n = n0; n < n1; ++n) pack_dy(n, g, dya[n - n0]);
                for (i64 j0 = 0; j0 < CRS; j0 += jw)  // a block of dw columns, then the chunk's images into it
                    dw_block(n0, n1, g, j0, std::min(jw, CRS - j0), acc + g * Kg * CRS + j0, first, dya.data());
            }
            first = false;
        }
        if (first) std::fill(acc, acc + WS, T(0));
    }, nt);
    if (nt > 1) {
        parallel_for(WS, 4096, [&](i64 b, i64 e) {
            for (i64 i = b; i < e; ++i)
                for (int t = 1; t < nt; ++t) dw[i] += partial[(t - 1) * WS + i];
        });
    }
}

template <class Cf, typename T = typename Cf::T>
static void conv2d_bwd_cfg(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW, CRS = Cg * KK, P = s.OH * s.OW,
              HW = s.H * s.W;
    const bool plain = is_1x1_s1_p0(s);

    // dbias: one channel per iteration, accumulated in double (N*P terms) in 8 independent partial sums: one
    // chain of dependent double adds ran at 4 cycles per element (10 ms of a 150 ms backward on 32x64x56x56);
    // independent lanes need no reassociation, so the compiler vectorises them without fast-math.
    parallel_for(s.K, 8, [&](i64 k0, i64 k1) { for (i64 k = k0; k < k1; ++k) {
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0;
        for (i64 n = 0; n < s.N; ++n) {
            const T* d = dy + (n * s.K + k) * P;
            i64 j = 0;
            for (; j + 8 <= P; j += 8)
                for (int l = 0; l < 8; ++l) acc[l] += double(d[j + l]);
            for (; j < P; ++j) tail += double(d[j]);
        }
        db[k] = T(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail);
    } }, parallel_work(double(s.N) * s.K * P));

    bool dw_done = false;
    if constexpr (std::is_same<T, float>::value) {
        if (direct_dw_fits(s)) conv2d_dw__direct(dy, x, dw, s), dw_done = true;
    }
    if (!dw_done) conv2d_dw__gemm<Cf>(dy, x, dw, s);

    // dx, stride 1 (and padding <= the dilated kernel extent - 1): a forward conv of dy with the transposed,
    // flipped weights W'[c,k,kh,kw] = W[k,c,KH-1-kh,KW-1-kw] and padding d*(k-1)-p, on the fast forward path.
    // Its GEMM rows are the input channels, so it needs at least a register tile of them (else dcol below).
    if (s.sh == 1 && s.sw == 1 && !plain && s.ph <= s.dh * (s.KH - 1) && s.pw <= s.dw * (s.KW - 1) &&
        Cg >= Cf::MR) {
        std::vector<T> wf((size_t)(s.C * Kg * KK));
        for (i64 g = 0; g < G; ++g)
            for (i64 k = 0; k < Kg; ++k)
                for (i64 c = 0; c < Cg; ++c)
                    for (i64 r = 0; r < KK; ++r)
                        wf[((g * Cg + c) * Kg + k) * KK + (KK - 1 - r)] = w[((g * Kg + k) * Cg + c) * KK + r];
        const ConvShape t{s.N, s.K, s.OH, s.OW, s.C, s.KH, s.KW, 1, 1, s.dh * (s.KH - 1) - s.ph,
                          s.dw * (s.KW - 1) - s.pw, s.dh, s.dw, G, s.H, s.W};
        conv2d_fwd_cfg<Cf>(dy, wf.data(), (const T*)nullptr, dx, t);
        return;
    }

    // dx: W[g]^T prepacked once; per (image, group) the dcol rows are produced a block of output rows at a time
    // (about 1 MiB, so it stays in L2) and gathered into dx right away.
    std::vector<packed::PrepackedA<Cf>> wt(G);
    for (i64 g = 0; g < G; ++g) wt[g].pack(CRS, Kg, packed::PackMatA<Cf>{w + g * Kg * CRS, CRS, true});
    const i64 rows = std::max<i64>(1, std::min<i64>(s.OH, (i64(1) << 20) / (i64)sizeof(T) / (CRS * s.OW)));
    parallel_tasks(s.N * G, [&](i64 ng) {
        const i64 n = ng / G, g = ng % G;
        const T* dyg = dy + (n * s.K + g * Kg) * P;
        T* dxg = dx + (n * s.C + g * Cg) * HW;
        if (plain) {
            packed::gemm_blocked<Cf>(Cg, P, Kg, T(1), wt[g], packed::PackMatB<Cf>{dyg, P, false}, T(0), dxg, HW);
            return;
        }
        std::fill(dxg, dxg + Cg * HW, T(0));
        packed::Buffer<T>& dcol = packed::scratch<T>(packed::Slot::conv_dcol);
        if ((i64)dcol.size() < CRS * rows * s.OW) dcol.resize(CRS * rows * s.OW);
        for (i64 oh0 = 0; oh0 < s.OH; oh0 += rows) {
            const i64 j0 = oh0 * s.OW, len = std::min(rows, s.OH - oh0) * s.OW;
            packed::gemm_blocked<Cf>(CRS, len, Kg, T(1), wt[g], packed::PackMatB<Cf>{dyg + j0, P, false}, T(0),
                                    dcol.data(), len);
            for (i64 crs = 0; crs < CRS; ++crs) {
                const i64 c = crs / KK, r = crs % KK;
                patch_row_add(dxg + c * HW, s, r / s.KW, r % s.KW, j0, len, dcol.data() + crs * len);
            }
        }
    });
}

template <typename T>
void conv2d_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { conv2d_fwd_cfg<decltype(cfg)>(x, w, bias, y, s); });
}

template <typename T>
void conv2d_bwd(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { conv2d_bwd_cfg<decltype(cfg)>(dy, x, w, dx, dw, db, s); });
}

template void conv2d_fwd<float>(const float*, const float*, const float*, float*, const ConvShape&);
template void conv2d_fwd<double>(const double*, const double*, const double*, double*, const ConvShape&);
template void conv2d_bwd<float>(const float*, const float*, const float*, float*, float*, float*, const ConvShape&);
template void conv2d_bwd<double>(const double*, const double*, const double*, double*, double*, double*,
                                 const ConvShape&);

}  // namespace fastnn
