// conv2d forward and backward (NCHW, stride, padding, dilation, groups): the choice of algorithm and the entry
// points. The variants live with their algorithm (conv2d_impl.h):
//   conv2d_fwd__winograd           float (AVX2/FMA or AVX-512), 3x3 stride 1, one group, >= 32 channels in and
//                                  out: Winograd F(2x2, 3x3), 16 GEMMs over the channels per block of 96 tiles.
//   conv2d_fwd__direct             AVX-512 float, stride 1 or 2, 32-channel output blocks (the last padded), OW
//                                  near a multiple of 14 or 6-8 (two output rows per tile): a direct convolution
//                                  (weight vectors x broadcast input values), no GEMM operand packed per call but
//                                  the weights; the conv shapes of the README table but two.
//   conv2d_fwd__polyphase_gemm     the implicit GEMM for any stride/padding/dilation/groups,
//   conv2d_fwd__polyphase_packed   the same, B gathered from the valid columns of a few small images per task,
//   conv2d_fwd__gemm_1x1           1x1/s1/p0: a plain GEMM on the NCHW planes (or _packed: gathered from several).
//   dbias                          threads over channels (double accumulators), here.
//   conv2d_dw__direct              dweight, 3x3 (column dilation 1), 32-channel output blocks or groups of 16,
//                                  AVX-512 float: the direct forward's tile turned around; otherwise
//                                  conv2d_dw__gemm.
//   conv2d_dx__forward_flipped     dx, stride 1 and >= MR input channels: the forward of dy with flipped,
//                                  transposed weights; otherwise conv2d_dx__dcol (dcol + col2im), or for 1x1/s1/p0
//                                  conv2d_dx__gemm_1x1.
// The rule for each part is one function (conv2d_fwd_algo, conv2d_dw_algo, conv2d_dx_algo); the *_can_run
// predicates say what a forced variant needs.
#include <type_traits>

#include "conv2d_impl.h"

namespace fastnn {

namespace {
template <typename T> constexpr bool f32 = std::is_same<T, float>::value;

template <typename T>
bool fwd_can_run(Conv2dFwdAlgo a, const ConvShape& s) {
    switch (a) {
        case Conv2dFwdAlgo::winograd: return f32<T> && winograd_can_run(s);
        case Conv2dFwdAlgo::direct: return f32<T> && direct_can_run(s);
        case Conv2dFwdAlgo::polyphase_packed:
        case Conv2dFwdAlgo::polyphase_batch: return polyphase_packed_can_run<T>(s);
        case Conv2dFwdAlgo::gemm_1x1: return is_1x1_p0(s);  // at stride > 1 on a strided copy (conv2d_fwd)
        case Conv2dFwdAlgo::gemm_1x1_packed: return gemm_1x1_packed_can_run<T>(s);
        default: return true;  // polyphase_gemm: any shape
    }
}
template <typename T>
bool dw_can_run(Conv2dDwAlgo a, const ConvShape& s) {
    return a != Conv2dDwAlgo::direct || (f32<T> && direct_dw_can_run(s));
}
template <typename T>
bool dx_can_run(Conv2dDxAlgo a, const ConvShape& s) {
    if (a == Conv2dDxAlgo::forward_flipped) return dx_forward_flipped_can_run<T>(s);
    return a != Conv2dDxAlgo::gemm_1x1 || is_1x1_s1_p0(s);
}

// `automatic` resolved by the rule, a forced one checked.
template <typename T, class Algo, class Rule, class CanRun>
Algo resolve(Algo a, const ConvShape& s, Rule rule, CanRun can_run) {
    if (a == Algo::automatic) return rule(s);
    if (!can_run(a, s)) algo_cannot_run(AlgoNames<Algo>::op, algo_name(a));
    return a;
}

template <typename T>
void conv2d_db(const T* dy, T* db, const ConvShape& s) {
    const i64 P = s.OH * s.OW;
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
}

}  // namespace

// parallel_work's units for a conv (or one product of its backward): like gemm_work, its multiply-adds / 64.
inline double conv_work(const ConvShape& s) {
    return double(s.N) * s.K * s.OH * s.OW * (s.C / s.groups) * s.KH * s.KW / 64;
}

// The forward: Winograd or the direct convolution where they fit (float), else the implicit GEMMs: polyphase, or
// for 1x1/s1/p0 convs a plain GEMM on the input planes; each with its packed (gathered) form on small images.
template <typename T>
Conv2dFwdAlgo conv2d_fwd_algo(const ConvShape& s) {
    if constexpr (f32<T>) {
        // Below 64 channels the direct convolution beats Winograd where it fits (64 x 32ch 14x14: 0.73 vs 1.03 ms;
        // 32 x 32ch 56x56 a tie); from 64 on Winograd wins (ResNet's 64-256: 20-30 %), except on 6-7 wide outputs,
        // where the direct tiles take two rows and Winograd's 4x4 tiles waste the most: up to 128 channels there
        // (64ch 7x7, N64: 0.82 vs 1.10 ms; 128ch N32: 1.46 vs 1.60; 256ch: 6.5 vs 5.3); 8 wide, below 128
        // (64ch N64: 1.04 vs 1.10 ms; 128ch N32: 2.05 vs 1.66).
        const bool direct = !is_1x1_s1_p0(s) && direct_fits(s);
        const i64 direct_below = direct_two_rows(s) ? (s.OW == 8 ? 128 : 256) : 64;
        if (winograd_fits(s) && !(direct && std::min(s.C, s.K) < direct_below)) return Conv2dFwdAlgo::winograd;
        // Weights of 4 MiB or more on small planes: polyphase_batch reads them once, the direct tasks each
        // (batch 1, 512ch 7x7 -> 512: 1.45-1.55 vs 2.28 ms; batch 8: 5.7-5.9 vs 7.4)
        const bool heavy = polyphase_batch_pays<T>(s, i64(4) << 20);
        if (direct && !heavy) return Conv2dFwdAlgo::direct;
    }
    if (!is_1x1_s1_p0(s)) {
        if (is_1x1_p0(s)) return Conv2dFwdAlgo::gemm_1x1;
        if (polyphase_batch_pays<T>(s)) return Conv2dFwdAlgo::polyphase_batch;
        return polyphase_packed_pays<T>(s) ? Conv2dFwdAlgo::polyphase_packed : Conv2dFwdAlgo::polyphase_gemm;
    }
    return gemm_1x1_packed_pays<T>(s) ? Conv2dFwdAlgo::gemm_1x1_packed : Conv2dFwdAlgo::gemm_1x1;
}

template <typename T>
Conv2dDwAlgo conv2d_dw_algo(const ConvShape& s) {
    return f32<T> && direct_dw_can_run(s) ? Conv2dDwAlgo::direct : Conv2dDwAlgo::gemm;
}

template <typename T>
Conv2dDxAlgo conv2d_dx_algo(const ConvShape& s) {
    if (dx_forward_flipped_can_run<T>(s) && dx_forward_flipped_pays<T>(s)) return Conv2dDxAlgo::forward_flipped;
    return is_1x1_s1_p0(s) ? Conv2dDxAlgo::gemm_1x1 : Conv2dDxAlgo::dcol;
}

template <typename T>
void conv2d_fwd(const T* x, const T* w, const T* bias, T* y, const ConvShape& s, Conv2dFwdAlgo algo) {
    if (algo != Conv2dFwdAlgo::automatic && !fwd_can_run<T>(algo, s))
        algo_cannot_run(AlgoNames<Conv2dFwdAlgo>::op, algo_name(algo));
    if (s.N == 0) return;
    if (algo == Conv2dFwdAlgo::automatic) algo = conv2d_fwd_algo<T>(s);
    if (algo == Conv2dFwdAlgo::gemm_1x1 && !is_1x1_s1_p0(s)) {
        // 1x1 at stride > 1 reads one input position in sh*sw: those copied into dense planes, then the 1x1/s1 conv
        // (float64 128 x 64ch 14x14 -> 128 /2: 2.2 ms by the polyphase GEMM, which copied all sh*sw phases)
        ConvShape d = s;
        d.H = s.OH, d.W = s.OW, d.sh = d.sw = 1;
        std::vector<T> xs(s.N * s.C * s.OH * s.OW);
        parallel_items(s.N * s.C * s.OH, double(s.OW), [&](i64 r) {
            const T* src = x + (r / s.OH * s.H + r % s.OH * s.sh) * s.W;
            for (i64 ow = 0; ow < s.OW; ++ow) xs[r * s.OW + ow] = src[ow * s.sw];
        });
        return conv2d_fwd(xs.data(), w, bias, y, d, Conv2dFwdAlgo::automatic);
    }
    maybe_serially(conv_work(s), [&] {
        switch (algo) {
            case Conv2dFwdAlgo::winograd:
            case Conv2dFwdAlgo::direct:
                if constexpr (f32<T>) {
                    if (algo == Conv2dFwdAlgo::winograd) return conv2d_fwd__winograd(x, w, bias, y, s);
                    return conv2d_fwd__direct(x, w, bias, y, s);
                }
                return;  // not reached: fwd_can_run refuses them for double
            case Conv2dFwdAlgo::polyphase_packed: return conv2d_fwd__polyphase_packed(x, w, bias, y, s);
            case Conv2dFwdAlgo::polyphase_batch: return conv2d_fwd__polyphase_batch(x, w, bias, y, s);
            case Conv2dFwdAlgo::gemm_1x1: return conv2d_fwd__gemm_1x1(x, w, bias, y, s);
            case Conv2dFwdAlgo::gemm_1x1_packed: return conv2d_fwd__gemm_1x1_packed(x, w, bias, y, s);
            default: return conv2d_fwd__polyphase_gemm(x, w, bias, y, s);
        }
    });
}

template <typename T>
static void conv2d_bwd_parts(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, const ConvShape& s,
                             Conv2dDwAlgo dw_algo, Conv2dDxAlgo dx_algo) {
    conv2d_db(dy, db, s);
    if constexpr (f32<T>) {
        if (dw_algo == Conv2dDwAlgo::direct) conv2d_dw__direct(dy, x, dw, s);
    }
    if (dw_algo == Conv2dDwAlgo::gemm) conv2d_dw__gemm(dy, x, dw, s);
    if (dx_algo == Conv2dDxAlgo::forward_flipped) return conv2d_dx__forward_flipped(dy, w, dx, s);
    if (dx_algo == Conv2dDxAlgo::gemm_1x1) return conv2d_dx__gemm_1x1(dy, w, dx, s);
    conv2d_dx__dcol(dy, w, dx, s);
}

template <typename T>
void conv2d_bwd(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, const ConvShape& s, Conv2dDwAlgo dw_algo,
                Conv2dDxAlgo dx_algo) {
    dw_algo = resolve<T>(dw_algo, s, conv2d_dw_algo<T>, dw_can_run<T>);
    dx_algo = resolve<T>(dx_algo, s, conv2d_dx_algo<T>, dx_can_run<T>);
    maybe_serially(2 * conv_work(s), [&] { conv2d_bwd_parts(dy, x, w, dx, dw, db, s, dw_algo, dx_algo); });
}

#define INST(T)                                                                                                 \
    template Conv2dFwdAlgo conv2d_fwd_algo<T>(const ConvShape&);                                                \
    template Conv2dDwAlgo conv2d_dw_algo<T>(const ConvShape&);                                                  \
    template Conv2dDxAlgo conv2d_dx_algo<T>(const ConvShape&);                                                  \
    template void conv2d_fwd<T>(const T*, const T*, const T*, T*, const ConvShape&, Conv2dFwdAlgo);             \
    template void conv2d_bwd<T>(const T*, const T*, const T*, T*, T*, T*, const ConvShape&, Conv2dDwAlgo,       \
                                Conv2dDxAlgo);
INST(float)
INST(double)
#undef INST

}  // namespace fastnn
