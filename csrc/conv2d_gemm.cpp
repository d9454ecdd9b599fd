// conv2d as implicit GEMMs on the packed GEMM driver of gemm_packed.h (float and double, any CPU). Per image n and
// group g, with P = OH*OW and CRS = (C/groups)*KH*KW:
//   forward   y[n,g] (Kg x P)    = W[g] (Kg x CRS) . patches[n,g] (CRS x P)          (+ bias)
//   dweight   dW[g]  (Kg x CRS) += dy[n,g] (Kg x P) . patches[n,g]^T (P x CRS)      summed over n
//   dx        dcol   (CRS x P)   = W[g]^T (CRS x Kg) . dy[n,g] (Kg x P), then col2im of dcol into dx[n,g]
// patches[n,g] is never materialised: the forward reads its rows in place from a polyphase copy of the input rows,
// dweight packs its B panels straight from the input.
//
// Variants:
//   conv2d_fwd__polyphase_gemm     any stride/padding/dilation/groups: per (image, group, block of output rows) the
//                                  input rows are copied once into zero-padded polyphase planes, where every tap's
//                                  run of output positions is contiguous: the microkernel reads B rows in place.
//   conv2d_fwd__polyphase_packed   the same copy for a few whole small images per task, but B packed (gathered) from
//                                  the valid output columns only: no junk columns (14x14: 196 of 224 were valid).
//   conv2d_fwd__polyphase_batch    deep convs on small planes: one GEMM over the whole batch's valid columns, the
//                                  threads splitting output channels (the weights read once, not once per image).
//   conv2d_fwd__gemm_1x1           1x1/s1/p0: a plain GEMM on the NCHW planes.
//   conv2d_fwd__gemm_1x1_packed    1x1/s1/p0 on small planes: B gathered from a few images' planes into one GEMM.
//   conv2d_dw__gemm                threads take images (dynamic), each summing into a private dW (no races), then
//                                  the partials are added; B = patches^T gathered with AVX-512 from a polyphase copy
//                                  of the image (PackGatherCols), else packed from tap lines (patch_row) with SSE2
//                                  block transposes (PackPatchesT).
//   conv2d_dx__forward_flipped     stride 1: the forward of dy with flipped, transposed weights (the "full"
//                                  correlation), on whichever forward variant conv2d_fwd_algo picks.
//   conv2d_dx__dcol                otherwise: dcol in ~1 MiB row blocks + col2im, threads over (image, group).
//   conv2d_dx__gemm_1x1            1x1/s1/p0: dx = W^T . dy per (image, group), a plain GEMM.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "conv2d_impl.h"
#include "gemm_packed.h"
#include "im2col.h"
#include "simd.h"
#include "dense.h"

namespace fastnn {

namespace {

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
    // out[j] = the offset of tap crs0 + j (channels counted from c0): the divisions once per kernel position,
    // not per tap (per tap they took a quarter of LeNet's 6->16 5x5 conv on 14x14)
    template <typename Out>
    void tap_offsets(const ConvShape& s, i64 crs0, i64 n, i64 c0, Out* out) const {
        const i64 KK = s.KH * s.KW, cstride = s.sh * s.sw * plane;
        static thread_local std::vector<i64> at;  // offset of kernel position r in channel 0
        at.resize(KK);
        for (i64 r = 0; r < KK; ++r) at[r] = tap_offset(s, 0, r / s.KW, r % s.KW);
        i64 c = crs0 / KK - c0, r = crs0 % KK;
        for (i64 j = 0; j < n; ++j) {
            out[j] = Out(c * cstride + at[r]);
            if (++r == KK) r = 0, ++c;
        }
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

// y for ni images from a GEMM tile yt (Kg x ni*P, or rows ld apart; image i's columns at i*P): image i, channel k at
// y + i*ystride + k*P, plus bias[k] when bias is given.
template <typename T>
void unpack_images(const T* yt, i64 ni, i64 Kg, i64 P, const T* bias, T* y, i64 ystride, i64 ld = 0) {
    if (ld == 0) ld = ni * P;  // yt's row stride
    for (i64 i = 0; i < ni; ++i)
        for (i64 k = 0; k < Kg; ++k) {
            const T* src = yt + k * ld + i * P;
            T* d = y + i * ystride + k * P;
            if (bias) {
                const T b = bias[k];
                for (i64 j = 0; j < P; ++j) d[j] = src[j] + b;
            } else {
                std::memcpy(d, src, sizeof(T) * P);
            }
        }
}

// W[g] (Kg x CRS) per group, or W[g]^T (CRS x Kg: the dx GEMMs') when `transposed`, prepacked once as GEMM A
// operands (shared read-only by all threads), in PrepackedA's layout in the calling thread's Slot::conv_weights
// (kept between calls: a fresh 1.2 MB per call was paid in page faults and zeroing). The blocks (group, depth
// block, row block) are packed in parallel: serially, the other thread waited through an eighth of a batch-1
// 128ch 7x7 float64 conv.
template <class Cf, typename T = typename Cf::T>
std::vector<packed::PrepackedAView<Cf>> prepack_weights(const T* w, const ConvShape& s, bool transposed = false) {
    const i64 G = s.groups, Kg = s.K / G, CRS = s.C / G * s.KH * s.KW;
    const i64 M = transposed ? CRS : Kg, K = transposed ? Kg : CRS, Mp = packed::round_up(M, Cf::MR);
    packed::Buffer<T>& store = packed::scratch<T>(packed::Slot::conv_weights);
    if ((i64)store.size() < G * Mp * K) store.resize(G * Mp * K);
    std::vector<packed::PrepackedAView<Cf>> wp;
    for (i64 g = 0; g < G; ++g) wp.push_back({store.data() + g * Mp * K, Mp});
    const i64 kb = packed::depth_block<Cf>(K), nkb = (K + kb - 1) / kb, nrb = (M + Cf::MC - 1) / Cf::MC;
    parallel_tasks(G * nkb * nrb, [&](i64 b) {
        const i64 g = b / (nkb * nrb), r = b % (nkb * nrb), p0 = (r / nrb) * kb, kc = std::min(kb, K - p0);
        const i64 i0 = (r % nrb) * Cf::MC;
        packed::PackMatA<Cf>{w + g * Kg * CRS, CRS, transposed}(i0, std::min(Cf::MC, M - i0), p0, kc,
                                                                 store.data() + g * Mp * K + p0 * Mp + i0 * kc);
    }, parallel_work(double(s.K) * CRS));
    return wp;
}

// How the polyphase forward splits its work: tasks of `rows` output rows (nblk blocks per image), or with `gather`
// (conv2d_fwd__polyphase_packed) `ipt` whole images per task.
struct PolyphasePlan {
    i64 rows, nblk, ipt;
    bool gather;
};

// xq elements of one image's polyphase planes when one task takes all its output rows (the packed variant).
inline i64 polyphase_image(const ConvShape& s) {
    return s.C / s.groups * s.sh * s.sw * (s.OH + (s.KH - 1) * s.dh / s.sh) * polyphase_wq(s);
}

// Images per task of the packed forwards: small planes share a GEMM of about 1024 columns, but enough tasks remain
// to balance the threads (x4).
inline i64 images_per_task(const ConvShape& s) {
    const i64 nt = get_num_threads();
    return std::max<i64>(1, std::min<i64>(1024 / (s.OH * s.OW), s.N / (4 * nt)));
}

template <class Cf>
PolyphasePlan polyphase_plan(const ConvShape& s) {
    const i64 G = s.groups, Kg = s.K / G, P = s.OH * s.OW;
    const i64 Wq = polyphase_wq(s), nt = get_num_threads();
    // About 4096 GEMM columns per task (input copy + output tile ~1.7 MB on 64x56x56: L2 is 2 MB here; 1024 was
    // 4-7% slower on 64x56x56 and 7x7/2 on 224x224), but enough tasks to balance the threads (x4).
    i64 rows = std::max<i64>(1, std::min<i64>(s.OH, 4096 / Wq));
    // Split rows for the threads down to two panels of columns a task: one 9-wide row a task put 9 columns in a
    // 48-wide panel (2 x 32ch 9x9 5x5 -> 128: 0.36 ms, 0.11 in whole images)
    const i64 want = (4 * nt + s.N * G - 1) / (s.N * G);
    if ((s.OH + rows - 1) / rows < want)
        rows = std::min(rows, std::max<i64>({1, s.OH / want, (2 * Cf::NR + Wq - 1) / Wq}));
    const i64 nblk = (s.OH + rows - 1) / rows;
    // conv2d_fwd__polyphase_packed: small images (one row block each) whose Wq-wide rows and last partial panel
    // waste many columns (14x14, 3x3 pad 1: 224 computed per 196 valid) take `ipt` whole images per task and pack
    // B from the valid columns only (gathers), when the columns saved outweigh the packing (~12 FMA rows'
    // worth per packed element, a guess from the gather rate).
    i64 ipt = 1;
    bool gather = false;
    if (nblk == 1) {
        ipt = images_per_task(s);
        const double ind_cols = (double)packed::round_up(s.OH * Wq, Cf::NR);
        const double gat_cols = (double)packed::round_up(ipt * P, Cf::NR) / ipt;
        gather = ind_cols * Kg > gat_cols * (Kg + 12) && ipt * polyphase_image(s) < (i64(1) << 30);  // int32 indices
        if (!gather) ipt = 1;
    }
    return {rows, nblk, ipt, gather};
}

// The polyphase forward: task = (image, group, block of output rows), or (ipt images, group) when p.gather. The
// task copies its input rows into the polyphase planes once (amortised over the KH*KW taps that read them), runs
// the GEMM over the Wq-wide columns (or the gathered valid ones) into a scratch tile and keeps the valid columns
// (+ bias).
template <class Cf, typename T = typename Cf::T>
void polyphase_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s, const PolyphasePlan& p) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg * s.KH * s.KW, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 Wq = polyphase_wq(s);
    const std::vector<packed::PrepackedAView<Cf>> wp = prepack_weights<Cf>(w, s);
    const i64 nchunk = (s.N + p.ipt - 1) / p.ipt;
    const i64 rows = p.rows, nblk = p.nblk, ipt = p.ipt;
    // Fewer (images, row block) tasks than threads (batch 1 on a small plane: one): the output channels are split
    // too, in blocks of at least two register tiles, each task copying its input rows again.
    const i64 tasks = nchunk * G * nblk, nt = get_num_threads();
    const i64 mblk = tasks >= nt ? 1 : std::max<i64>(1, std::min((nt + tasks - 1) / tasks, Kg / (2 * Cf::MR)));
    const i64 mstep = packed::round_up((Kg + mblk - 1) / mblk, Cf::MR);
    parallel_tasks(tasks * mblk, [&](i64 tm) {
        const i64 t = tm / mblk, m0 = (tm % mblk) * mstep, mk = std::min(mstep, Kg - m0);
        if (mk <= 0) return;
        const i64 ng = t / nblk, n = (ng / G) * ipt, g = ng % G, oh0 = (t % nblk) * rows, nr = std::min(rows, s.OH - oh0);
        const i64 ni = std::min(ipt, s.N - n);
        const packed::RowsFrom<packed::PrepackedAView<Cf>> wa{wp[g], m0};
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
        q.tap_offsets(s, 0, CRS, 0, toff.data());
        if (p.gather) {  // columns j = (image i, oh, ow), valid ones only
            const i64 nv = ni * P, nvp = packed::round_up(nv, Cf::NR);
            static thread_local std::vector<int> col;
            col.assign(nvp, 0);
            for (i64 j = 0; j < nv; ++j) {
                const i64 i = j / P, oh = (j % P) / s.OW, ow = j % s.OW;
                col[j] = (int)(i * img + oh * Wq + ow);
            }
            packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
            if ((i64)yt.size() < mk * nv) yt.resize(mk * nv);
            packed::gemm_blocked<Cf>(mk, nv, CRS, T(1), wa, PackGatherCols<Cf>{xq.data(), toff.data(), col.data()},
                                     T(0), yt.data(), nv);
            unpack_images(yt.data(), ni, mk, P, bias ? bias + g * Kg + m0 : nullptr, y + (n * s.K + g * Kg + m0) * P,
                          s.K * P);
            return;
        }
        packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
        if ((i64)yt.size() < mk * ncols) yt.resize(mk * ncols);
        packed::gemm_blocked_rows<Cf>(mk, ncols, CRS, wa, xq.data(), toff.data(), T(0), yt.data(), ncols);
        T* yg = y + (n * s.K + g * Kg) * P + oh0 * s.OW;
        for (i64 k = m0; k < m0 + mk; ++k) {
            const T b = bias ? bias[g * Kg + k] : T(0);
            for (i64 r = 0; r < nr; ++r) {
                const T* src = yt.data() + (k - m0) * ncols + r * Wq;
                T* d = yg + k * P + r * s.OW;
                // short rows by a plain loop: a memcpy call per 7-wide row was 15 % of 2 x 4ch 32x7 -> 256
                if (bias) for (i64 ow = 0; ow < s.OW; ++ow) d[ow] = src[ow] + b;
                else if (s.OW >= 32) std::memcpy(d, src, sizeof(T) * s.OW);
                else for (i64 ow = 0; ow < s.OW; ++ow) d[ow] = src[ow];
            }
        }
    });
}

// conv2d_fwd__polyphase_batch: deep convolutions on small planes (16 x 512ch 5x5 -> 256, 3x3: 25 columns an image)
// made one GEMM over the whole batch's valid columns. Per image the GEMMs are narrow and each reads all the weights
// again (4.7 MB there: from memory, 16 times); here the threads split the output channels (the columns when the
// channels are few), so each weight is read once per chunk of images. Images are taken in chunks whose polyphase
// copies stay within kBatchCopyBytes.
constexpr i64 kBatchCopyBytes = i64(16) << 20;
template <class Cf, typename T = typename Cf::T>
void polyphase_batch_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    const i64 Cg = s.C / s.groups, Kg = s.K / s.groups, CRS = Cg * s.KH * s.KW, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 Wq = polyphase_wq(s), Hq = s.OH + (s.KH - 1) * s.dh / s.sh, nt = get_num_threads();
    const Polyphase q{Hq, Wq, Hq * Wq};
    const i64 img = Cg * s.sh * s.sw * q.plane;
    const i64 chunk = std::clamp<i64>(kBatchCopyBytes / (img * i64(sizeof(T))), 1, s.N);
    // A block of output channels a thread (each reads its part of the weights once and packs all the columns: a
    // last partial panel wastes less than in column blocks: 16 x 5x5 -> 400 columns, 432 computed instead of 480),
    // or of columns when the channels are too few to split.
    const i64 mb = Kg >= 32 * nt ? packed::round_up((Kg + nt - 1) / nt, Cf::MR) : Kg, nmb = (Kg + mb - 1) / mb;
    // Each weight used by one GEMM block (one chunk, one block of columns): the threads pack their blocks from w as
    // they go instead of prepacking all of it first (a write and a read of the weights less: batch 1, 512ch 7x7).
    const bool pack_as_read = chunk == s.N && s.N * P <= Cf::NC && (nmb > 1 || nt == 1);
    const std::vector<packed::PrepackedAView<Cf>> wp = pack_as_read ? std::vector<packed::PrepackedAView<Cf>>()
                                                                     : prepack_weights<Cf>(w, s);
    std::vector<i64> toff(CRS);
    q.tap_offsets(s, 0, CRS, 0, toff.data());
    packed::Buffer<T> xq(chunk * img + 2 * Wq + s.pw + 2 * Cf::NR), yt(Kg * chunk * P);
    std::vector<int> col(packed::round_up(chunk * P, Cf::NR) + Cf::NR, 0);
    for (i64 n0 = 0; n0 < s.N; n0 += chunk) {
        const i64 ni = std::min(chunk, s.N - n0), nv = ni * P;
        for (i64 j = 0; j < nv; ++j) col[j] = int(j / P * img + (j % P) / s.OW * Wq + j % s.OW);
        std::fill(col.begin() + nv, col.end(), 0);
        for (i64 g = 0; g < s.groups; ++g) {
            parallel_items(ni, double(img), [&](i64 i) {
                copy_polyphase(x + ((n0 + i) * s.C + g * Cg) * HW, s, 0, Cg, 0, q, xq.data() + i * img);
            });
            const i64 cb = nmb > 1 ? nv : packed::round_up(std::max<i64>(Cf::NR, (nv + nt - 1) / nt), Cf::NR);
            parallel_tasks(nmb * ((nv + cb - 1) / cb), [&](i64 t) {
                const i64 m0 = t % nmb * mb, j0 = t / nmb * cb, nc = std::min(cb, nv - j0), mk = std::min(mb, Kg - m0);
                const PackGatherCols<Cf> pb{xq.data(), toff.data(), col.data() + j0};
                T* const yb = yt.data() + m0 * nv + j0;
                if (pack_as_read)
                    packed::gemm_blocked<Cf>(mk, nc, CRS, T(1), packed::PackMatA<Cf>{w + (g * Kg + m0) * CRS, CRS, false},
                                             pb, T(0), yb, nv);
                else
                    packed::gemm_blocked<Cf>(mk, nc, CRS, T(1), packed::RowsFrom<packed::PrepackedAView<Cf>>{wp[g], m0},
                                             pb, T(0), yb, nv);
            });
            parallel_items(ni, double(Kg * P), [&](i64 i) {
                unpack_images(yt.data() + i * P, 1, Kg, P, bias ? bias + g * Kg : nullptr,
                              y + ((n0 + i) * s.K + g * Kg) * P, s.K * P, nv);
            });
        }
    }
}

// How conv2d_fwd__gemm_1x1_packed splits its work: `ipt` images per task and `mblk` blocks of output channels. With
// many output channels (Kg >= 512, and at least the input's) the images per task are chosen for whole panels of
// columns (7x7: 4 images computed 240 columns for 196 valid, 16 images 816 for 784), up to ~1024 columns, and the
// channels split into blocks of at least 256 rows to keep 4 tasks a thread ((8,512,7,7) -> 2048: 4.3-4.5 ms on the
// plain GEMM, 2.7-2.9 here; N32: 11.8-11.9 -> 11.0-11.2). Deep ones gained nothing ((32,2048,7,7) -> 512: 12.9-13.1
// against 11.7-12.0 with 4 images a task).
struct GatherPlan { i64 ipt, mblk; };
template <class Cf>
GatherPlan gather_1x1_plan(const ConvShape& s) {
    const i64 G = s.groups, Kg = s.K / G, P = s.OH * s.OW, HW = s.H * s.W, nt = get_num_threads();
    i64 ipt = images_per_task(s), mblk = 1;
    if (Kg >= 512 && Kg >= s.C / G) {
        const auto eff = [&](i64 k) { return double(k * P) / double(packed::round_up(k * P, Cf::NR)); };
        const i64 cap = std::max<i64>(ipt, std::min<i64>(s.N, 1024 / P));
        for (i64 k = ipt + 1; k <= cap; ++k)
            if (eff(k) > eff(ipt) + 0.01 && k * s.C * HW < (i64(1) << 31)) ipt = k;
        const i64 tasks = (s.N + ipt - 1) / ipt * G;
        mblk = std::max<i64>(1, std::min((4 * nt + tasks - 1) / tasks, Kg / 256));
    }
    if (ipt * s.C * HW >= (i64(1) << 31)) ipt = 1;  // int32 gather indices
    return {ipt, mblk};
}

// conv2d_fwd__gemm_1x1_packed: B gathered straight from `ipt` images' planes into one GEMM (columns j = (image,
// position)), for a block of output channels.
template <class Cf, typename T = typename Cf::T>
void gemm_1x1_packed_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg, P = s.OH * s.OW, HW = s.H * s.W;
    const std::vector<packed::PrepackedAView<Cf>> wp = prepack_weights<Cf>(w, s);
    const GatherPlan plan = gather_1x1_plan<Cf>(s);
    const i64 ipt = plan.ipt, mblk = plan.mblk;
    const i64 nchunk = (s.N + ipt - 1) / ipt, mstep = packed::round_up((Kg + mblk - 1) / mblk, Cf::MR);
    std::vector<i64> toff(Cg);
    for (i64 c = 0; c < Cg; ++c) toff[c] = c * HW;
    parallel_tasks(nchunk * G * mblk, [&](i64 tm) {
        const i64 t = tm / mblk, m0 = (tm % mblk) * mstep, mk = std::min(mstep, Kg - m0);
        if (mk <= 0) return;
        const i64 n = (t / G) * ipt, g = t % G, ni = std::min(ipt, s.N - n), nv = ni * P;
        static thread_local std::vector<int> col;
        col.assign(packed::round_up(nv, Cf::NR), 0);
        for (i64 j = 0; j < nv; ++j) col[j] = (int)((j / P) * s.C * HW + j % P);
        packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
        if ((i64)yt.size() < mk * nv) yt.resize(mk * nv);
        packed::gemm_blocked<Cf>(mk, nv, CRS, T(1), packed::RowsFrom<packed::PrepackedAView<Cf>>{wp[g], m0},
                                 PackGatherCols<Cf>{x + (n * s.C + g * Cg) * HW, toff.data(), col.data()}, T(0),
                                 yt.data(), nv);
        unpack_images(yt.data(), ni, mk, P, bias ? bias + g * Kg + m0 : nullptr, y + (n * s.K + g * Kg + m0) * P,
                      s.K * P);
    });
}

// A 1x1 conv's planes narrower than two panels, with many output channels, on a few images (the gathered variant
// wins from 8 images on: 2.8 vs 3.5-4.0 ms on 8 x 512ch 7x7 -> 2048; on 2, 1.0-1.1 vs 0.87-0.96).
template <class Cf>
bool few_positions_1x1(const ConvShape& s) {
    return s.OH * s.OW < 2 * Cf::NR && s.K / s.groups >= 4 * Cf::NR && s.N <= 4;
}

// conv2d_fwd__gemm_1x1: column blocks of each image's planes, a plain GEMM with B read from the planes.
template <class Cf, typename T = typename Cf::T>
void gemm_1x1_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    constexpr i64 NR = Cf::NR;
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, CRS = Cg, P = s.OH * s.OW, HW = s.H * s.W;
    const i64 nt = get_num_threads();
    if (few_positions_1x1<Cf>(s)) {
        // Few positions, many output channels (batch 1, 7x7 -> 2048: 49 columns computed as 96, in two tasks of
        // a whole W each: 0.77 ms, PyTorch 0.54). Per image: gemm_small where it runs (float, AVX-512: W and x read
        // as they lie, no packing; 0.42 ms), else y^T = x^T . W^T with the positions as the GEMM's rows (0.48 ms),
        // transposed into y (+ bias). Both thread by channels.
        packed::Buffer<T>& yt = packed::scratch<T>(packed::Slot::conv_output);
        if ((i64)yt.size() < P * Kg) yt.resize(P * Kg);
        for (i64 n = 0; n < s.N; ++n)
            for (i64 g = 0; g < G; ++g) {
                if constexpr (std::is_same<T, float>::value) {  // (gemm_small's bias is per column)
                    T* yg = y + (n * s.K + g * Kg) * P;
                    if (gemm_small_f32(Kg, P, Cg, w + g * Kg * Cg, Cg, 1, x + (n * s.C + g * Cg) * HW, HW, nullptr,
                                       yg, P, false)) {
                        if (bias)
                            for (i64 k = 0; k < Kg; ++k)
                                for (i64 j = 0; j < P; ++j) yg[k * P + j] += bias[g * Kg + k];
                        continue;
                    }
                }
                gemm<T>(true, true, P, Kg, Cg, T(1), x + (n * s.C + g * Cg) * HW, HW, w + g * Kg * Cg, Cg, T(0),
                        yt.data(), Kg);
                T* yg = y + (n * s.K + g * Kg) * P;
                parallel_for(Kg, 64, [&](i64 k0, i64 k1) {
                    for (i64 k = k0; k < k1; ++k) {
                        const T b = bias ? bias[g * Kg + k] : T(0);
                        for (i64 j = 0; j < P; ++j) yg[k * P + j] = yt[j * Kg + k] + b;
                    }
                }, parallel_work(double(P) * Kg));
            }
        return;
    }
    const std::vector<packed::PrepackedAView<Cf>> wp = prepack_weights<Cf>(w, s);
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

// conv2d_dw__gemm: dweight on the packed GEMM (any shape).
template <class Cf, typename T = typename Cf::T>
void dw_gemm(const T* dy, const T* x, T* dw, const ConvShape& s) {
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
            qd.tap_offsets(s, j0, nc, c0, tap.data());
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

// dx: W[g]^T prepacked once; per (image, group) the dcol rows are produced a block of output rows at a time
// (about 1 MiB, so it stays in L2) and gathered into dx right away.
template <class Cf, typename T = typename Cf::T>
void dx_dcol(const T* dy, const T* w, T* dx, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW, CRS = Cg * KK, P = s.OH * s.OW,
              HW = s.H * s.W;
    const std::vector<packed::PrepackedAView<Cf>> wt = prepack_weights<Cf>(w, s, true);
    const i64 rows = std::max<i64>(1, std::min<i64>(s.OH, (i64(1) << 20) / (i64)sizeof(T) / (CRS * s.OW)));
    parallel_tasks(s.N * G, [&](i64 ng) {
        const i64 n = ng / G, g = ng % G;
        const T* dyg = dy + (n * s.K + g * Kg) * P;
        T* dxg = dx + (n * s.C + g * Cg) * HW;
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

template <class Cf, typename T = typename Cf::T>
void dx_gemm_1x1(const T* dy, const T* w, T* dx, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, P = s.OH * s.OW, HW = s.H * s.W;
    const std::vector<packed::PrepackedAView<Cf>> wt = prepack_weights<Cf>(w, s, true);
    parallel_tasks(s.N * G, [&](i64 ng) {
        const i64 n = ng / G, g = ng % G;
        const T* dyg = dy + (n * s.K + g * Kg) * P;
        T* dxg = dx + (n * s.C + g * Cg) * HW;
        packed::gemm_blocked<Cf>(Cg, P, Kg, T(1), wt[g], packed::PackMatB<Cf>{dyg, P, false}, T(0), dxg, HW);
    });
}

}  // namespace

// ---- the variants (conv2d_impl.h) ----
template <typename T>
bool polyphase_packed_can_run(const ConvShape& s) {
    return polyphase_image(s) < (i64(1) << 30);  // int32 gather indices
}
template <typename T>
bool polyphase_packed_pays(const ConvShape& s) {
    bool gather = false;
    packed::with_cfg<T>([&](auto cfg) { gather = polyphase_plan<decltype(cfg)>(s).gather; });
    return gather;
}
template <typename T>
void conv2d_fwd__polyphase_gemm(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) {
        using Cf = decltype(cfg);
        PolyphasePlan p = polyphase_plan<Cf>(s);
        p.ipt = 1, p.gather = false;
        polyphase_fwd<Cf>(x, w, bias, y, s, p);
    });
}
// A group's weights of min_bytes or more (from 1 MiB they no longer sit in L2 beside the work) over planes of at
// most 1024 positions.
template <typename T>
bool polyphase_batch_pays(const ConvShape& s, i64 min_bytes) {
    return s.K / s.groups * (s.C / s.groups) * s.KH * s.KW * i64(sizeof(T)) >= min_bytes && s.OH * s.OW <= 1024;
}
template <typename T>
void conv2d_fwd__polyphase_batch(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { polyphase_batch_fwd<decltype(cfg)>(x, w, bias, y, s); });
}
// Forced where the rule would not pick it: one task per whole image (ipt images as the rule would take them).
template <typename T>
void conv2d_fwd__polyphase_packed(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) {
        using Cf = decltype(cfg);
        PolyphasePlan p = polyphase_plan<Cf>(s);
        if (!p.gather) {
            p.rows = s.OH, p.nblk = 1, p.gather = true;
            p.ipt = images_per_task(s);
            if (p.ipt * polyphase_image(s) >= (i64(1) << 30)) p.ipt = 1;
        }
        polyphase_fwd<Cf>(x, w, bias, y, s, p);
    });
}

template <typename T>
bool gemm_1x1_packed_can_run(const ConvShape& s) {
    return is_1x1_s1_p0(s) && s.C * s.H * s.W < (i64(1) << 31);  // int32 gather indices
}
// Small planes (14x14: 196 columns, computed as 240 in 48-wide panels): the packed variant when that cuts the
// computed columns by more than 5 %.
template <typename T>
bool gemm_1x1_packed_pays(const ConvShape& s) {
    bool pays = false;
    packed::with_cfg<T>([&](auto cfg) {
        using Cf = decltype(cfg);
        const i64 ipt = gather_1x1_plan<Cf>(s).ipt, P = s.OH * s.OW;
        pays = std::is_same<T, float>::value && Cf::NR % 16 == 0 && packed::has_avx512f() && ipt > 1 &&
               !few_positions_1x1<Cf>(s) &&
               (double)packed::round_up(P, Cf::NR) > 1.05 * packed::round_up(ipt * P, Cf::NR) / ipt;
    });
    return pays;
}
template <typename T>
void conv2d_fwd__gemm_1x1(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { gemm_1x1_fwd<decltype(cfg)>(x, w, bias, y, s); });
}
template <typename T>
void conv2d_fwd__gemm_1x1_packed(const T* x, const T* w, const T* bias, T* y, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { gemm_1x1_packed_fwd<decltype(cfg)>(x, w, bias, y, s); });
}

template <typename T>
void conv2d_dw__gemm(const T* dy, const T* x, T* dw, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { dw_gemm<decltype(cfg)>(dy, x, dw, s); });
}

// dx, stride 1 (and padding <= the dilated kernel extent - 1): a forward conv of dy with the transposed,
// flipped weights W'[c,k,kh,kw] = W[k,c,KH-1-kh,KW-1-kw] and padding d*(k-1)-p, on the fast forward path.
template <typename T>
bool dx_forward_flipped_can_run(const ConvShape& s) {
    return s.sh == 1 && s.sw == 1 && s.ph <= s.dh * (s.KH - 1) && s.pw <= s.dw * (s.KW - 1);
}
// Its GEMM rows are the input channels, so it needs at least a register tile of them (else dcol); a 1x1/s1/p0
// conv takes the plain GEMM. It multiplies over every input position where dcol does over the output positions
// (then col2im): past 3x as many, dcol wins (8 x 48ch 5x28 5x5 pad 0: 1.86 vs 0.75 ms backward; at 2.25x,
// 64 x 32ch 12x12 5x5, the flipped forward still won, 2.6 vs 3.4).
template <typename T>
bool dx_forward_flipped_pays(const ConvShape& s) {
    i64 MR = 0;
    packed::with_cfg<T>([&](auto cfg) { MR = decltype(cfg)::MR; });
    return !is_1x1_s1_p0(s) && s.C / s.groups >= MR && s.H * s.W <= 3 * s.OH * s.OW;
}
template <typename T>
void conv2d_dx__forward_flipped(const T* dy, const T* w, T* dx, const ConvShape& s) {
    const i64 G = s.groups, Cg = s.C / G, Kg = s.K / G, KK = s.KH * s.KW;
    std::vector<T> wf((size_t)(s.C * Kg * KK));
    for (i64 g = 0; g < G; ++g)  // written in order (by k, the writes were Kg*KK apart)
        for (i64 c = 0; c < Cg; ++c)
            for (i64 k = 0; k < Kg; ++k)
                for (i64 r = 0; r < KK; ++r)
                    wf[((g * Cg + c) * Kg + k) * KK + (KK - 1 - r)] = w[((g * Kg + k) * Cg + c) * KK + r];
    const ConvShape t{s.N, s.K, s.OH, s.OW, s.C, s.KH, s.KW, 1, 1, s.dh * (s.KH - 1) - s.ph,
                      s.dw * (s.KW - 1) - s.pw, s.dh, s.dw, G, s.H, s.W};
    conv2d_fwd<T>(dy, wf.data(), (const T*)nullptr, dx, t);
}
template <typename T>
void conv2d_dx__dcol(const T* dy, const T* w, T* dx, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { dx_dcol<decltype(cfg)>(dy, w, dx, s); });
}
template <typename T>
void conv2d_dx__gemm_1x1(const T* dy, const T* w, T* dx, const ConvShape& s) {
    packed::with_cfg<T>([&](auto cfg) { dx_gemm_1x1<decltype(cfg)>(dy, w, dx, s); });
}

#define INST(T)                                                                                              \
    template bool polyphase_packed_can_run<T>(const ConvShape&);                                             \
    template bool polyphase_packed_pays<T>(const ConvShape&);                                                \
    template bool gemm_1x1_packed_can_run<T>(const ConvShape&);                                              \
    template bool gemm_1x1_packed_pays<T>(const ConvShape&);                                                 \
    template bool dx_forward_flipped_can_run<T>(const ConvShape&);                                           \
    template bool dx_forward_flipped_pays<T>(const ConvShape&);                                              \
    template void conv2d_fwd__polyphase_gemm<T>(const T*, const T*, const T*, T*, const ConvShape&);         \
    template void conv2d_fwd__polyphase_packed<T>(const T*, const T*, const T*, T*, const ConvShape&);       \
    template void conv2d_fwd__polyphase_batch<T>(const T*, const T*, const T*, T*, const ConvShape&);        \
    template bool polyphase_batch_pays<T>(const ConvShape&, i64);                                                 \
    template void conv2d_fwd__gemm_1x1<T>(const T*, const T*, const T*, T*, const ConvShape&);               \
    template void conv2d_fwd__gemm_1x1_packed<T>(const T*, const T*, const T*, T*, const ConvShape&);        \
    template void conv2d_dw__gemm<T>(const T*, const T*, T*, const ConvShape&);                              \
    template void conv2d_dx__forward_flipped<T>(const T*, const T*, T*, const ConvShape&);                   \
    template void conv2d_dx__dcol<T>(const T*, const T*, T*, const ConvShape&);                              \
    template void conv2d_dx__gemm_1x1<T>(const T*, const T*, T*, const ConvShape&);
INST(float)
INST(double)
#undef INST

}  // namespace fastnn
