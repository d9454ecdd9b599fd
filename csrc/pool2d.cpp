// pool2d.cpp: max and average pooling, NCHW, forward and backward.
// In order: the generic scalar kernels (any geometry; also the fallback and the border code of the fast paths)
// -> fast paths for 2x2 s2 p0 and 3x3 s2 p1 (the ResNet shapes): average-pool backward kernels that write dx once
// instead of zero + scatter (plain loops, compiled twice: AVX2 and baseline) -> the separable and taps kernels for
// any geometry and either type (plain loops, compiled twice) -> AVX2 float forward fast paths -> the launchers,
// which run the variant pool2d_algo picks or the one forced.
// AVX2 variants run when has_avx2_fma() (FASTNN_SIMD=scalar switches them off).
// Forward work is split over (n, c, oh) output rows (taps: groups of planes; separable: bands of rows); backward
// over (n, c) planes or groups of them (a scatter never races).
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "fastnn.h"
#include "simd.h"

namespace fastnn {
namespace {

// The window of output o along one axis, clipped to the input [0, n). Never empty since padding <= kernel/2.
struct Span { i64 lo, hi; };
inline Span span(i64 o, i64 stride, i64 pad, i64 k, i64 n) {
    i64 a = o * stride - pad;
    return {std::max<i64>(a, 0), std::min(a + k, n)};
}

// Should v replace the current maximum? Strict > keeps the first maximum; a NaN beats any number and the first NaN stays.
template <typename T> inline bool better(T v, T best) { return v > best || (v != v && best == best); }

// ---------------------------------------------------------------------------------------------- generic kernels
// Output row oh, columns [ow0, ow1) of one plane (x: H*W, y/idx: OH*OW).
template <typename T>
void max_row__generic(const T* x, T* y, i64* idx, const PoolShape& s, i64 oh, i64 ow0, i64 ow1) {
    Span r = span(oh, s.sh, s.ph, s.KH, s.H);
    for (i64 ow = ow0; ow < ow1; ++ow) {
        Span c = span(ow, s.sw, s.pw, s.KW, s.W);
        i64 bi = r.lo * s.W + c.lo;
        T best = x[bi];
        for (i64 ih = r.lo; ih < r.hi; ++ih)
            for (i64 iw = c.lo; iw < c.hi; ++iw)
                if (better(x[ih * s.W + iw], best)) best = x[ih * s.W + iw], bi = ih * s.W + iw;
        y[oh * s.OW + ow] = best;
        idx[oh * s.OW + ow] = bi;
    }
}

// The window's size along one axis: with count_include_pad clipped to the padded input, otherwise the positions
// inside the input.
inline i64 window_size(i64 o, i64 stride, i64 pad, i64 k, i64 n, bool cip) {
    const i64 a = o * stride - pad;
    if (cip) return std::min(a + k, n + pad) - a;
    const Span c = span(o, stride, pad, k, n);
    return c.hi - c.lo;
}
inline i64 avg_divisor(const PoolShape& s, i64 oh, i64 ow, bool cip) {
    return window_size(oh, s.sh, s.ph, s.KH, s.H, cip) * window_size(ow, s.sw, s.pw, s.KW, s.W, cip);
}

template <typename T>
void avg_row__generic(const T* x, T* y, const PoolShape& s, bool cip, i64 oh, i64 ow0, i64 ow1) {
    Span r = span(oh, s.sh, s.ph, s.KH, s.H);
    for (i64 ow = ow0; ow < ow1; ++ow) {
        Span c = span(ow, s.sw, s.pw, s.KW, s.W);
        T sum = 0;
        for (i64 ih = r.lo; ih < r.hi; ++ih)
            for (i64 iw = c.lo; iw < c.hi; ++iw) sum += x[ih * s.W + iw];
        y[oh * s.OW + ow] = sum / T(avg_divisor(s, oh, ow, cip));
    }
}

// dx plane (already zeroed) += dy plane spread over each window.
template <typename T>
void avg_bwd_plane__generic(const T* dy, T* dx, const PoolShape& s, bool cip) {
    for (i64 oh = 0; oh < s.OH; ++oh) {
        Span r = span(oh, s.sh, s.ph, s.KH, s.H);
        for (i64 ow = 0; ow < s.OW; ++ow) {
            Span c = span(ow, s.sw, s.pw, s.KW, s.W);
            T g = dy[oh * s.OW + ow] / T(avg_divisor(s, oh, ow, cip));
            for (i64 ih = r.lo; ih < r.hi; ++ih)
                for (i64 iw = c.lo; iw < c.hi; ++iw) dx[ih * s.W + iw] += g;
        }
    }
}

// 2x2 s2 p0: the windows tile the input, so dx is written once, no zeroing first and no scatter (4x the generic
// speed): the even/odd column stores vectorise. Rows/columns past the last window get 0.
template <typename T>
FASTNN_INLINE void avg_bwd_plane__2x2s2_body(const T* dy, T* dx, const PoolShape& s) {
    for (i64 oh = 0; oh < s.OH; ++oh) {
        T *r0 = dx + 2 * oh * s.W, *r1 = r0 + s.W;
        const T* g = dy + oh * s.OW;
#pragma omp simd
        for (i64 ow = 0; ow < s.OW; ++ow) {
            T v = g[ow] * T(0.25);  // == g/4 exactly
            r0[2 * ow] = v, r0[2 * ow + 1] = v, r1[2 * ow] = v, r1[2 * ow + 1] = v;
        }
        for (i64 iw = 2 * s.OW; iw < s.W; ++iw) r0[iw] = r1[iw] = T(0);
    }
    std::memset(dx + 2 * s.OH * s.W, 0, sizeof(T) * (s.H - 2 * s.OH) * s.W);
}
template <typename T> void avg_bwd_plane__2x2s2(const T* dy, T* dx, const PoolShape& s) {
    avg_bwd_plane__2x2s2_body(dy, dx, s);
}

// 3x3 s2 p1 as a gather, dx written once: input column 2m is in window m only, column 2m+1 in windows m and m+1
// (the same for rows). So with g = dy/divisor, the "expanded" row e_oh[2m] = g[m], e_oh[2m+1] = g[m] + g[m+1],
// and dx row 2m = e_m, row 2m+1 = e_m + e_{m+1}. scratch: 2*W + OW + 1 elements.
template <typename T>
FASTNN_INLINE void avg_bwd_plane__3x3s2p1_body(const T* dy, T* dx, const PoolShape& s, bool cip, T* scratch) {
    const i64 H = s.H, W = s.W, OH = s.OH, OW = s.OW;
    T *e = scratch, *e_next = scratch + W, *g = scratch + 2 * W;
    auto expand = [&](i64 oh, T* out) {
        const i64 rows = cip ? 3 : std::min(2 * oh + 2, H) - std::max<i64>(2 * oh - 1, 0);
        for (i64 m = 0; m < OW; ++m)
            g[m] = dy[oh * OW + m] / T(rows * (cip ? 3 : std::min(2 * m + 2, W) - std::max<i64>(2 * m - 1, 0)));
        g[OW] = T(0);
#pragma omp simd
        for (i64 m = 0; m < W / 2; ++m) out[2 * m] = g[m], out[2 * m + 1] = g[m] + g[m + 1];
        if (W & 1) out[W - 1] = g[W / 2];
    };
    expand(0, e);
    for (i64 m = 0; 2 * m < H; ++m) {
        std::memcpy(dx + 2 * m * W, e, sizeof(T) * W);
        if (2 * m + 1 == H) break;
        T* row = dx + (2 * m + 1) * W;
        if (m + 1 < OH) {
            expand(m + 1, e_next);
#pragma omp simd
            for (i64 iw = 0; iw < W; ++iw) row[iw] = e[iw] + e_next[iw];
            std::swap(e, e_next);
        } else {
            std::memcpy(row, e, sizeof(T) * W);
        }
    }
}
template <typename T> void avg_bwd_plane__3x3s2p1(const T* dy, T* dx, const PoolShape& s, bool cip, T* scratch) {
    avg_bwd_plane__3x3s2p1_body(dy, dx, s, cip, scratch);
}

// --------------------------------------------------------------------------------------------- separable kernels
// Any geometry, either type: a window's max (sum) is the max (sum) over its rows of each row's max (sum) over the
// window's columns. Pass 1 reduces each input row a band of output rows needs to OW values (for max also the column
// each came from); pass 2 reduces each output row's window rows, element by element over OW. Both are plain loops
// the compiler vectorises, compiled per target (FASTNN_SIMD_DISPATCH): 2.5-5x the generic code on geometries that
// have no fast path (3x3/2 pad 0, 3x3/1 pad 1, 2x2/1, 4x4/4) and for float64. Strict > in both passes keeps the
// generic code's first maximum in row-major order (the earliest row holding the maximum, its first column); sums
// add row by row instead of in row-major order (within float tolerance).
template <typename T> using ColIndex = std::conditional_t<sizeof(T) == 4, std::int32_t, i64>;  // lanes as wide as T

// The outputs whose windows lie inside the input along one axis, [lo, hi): no clipping there.
inline Span interior(i64 stride, i64 pad, i64 k, i64 n, i64 on) {
    const i64 lo = std::min(on, (pad + stride - 1) / stride);
    const i64 hi = n + pad >= k ? std::min(on, (n + pad - k) / stride + 1) : 0;
    return {lo, std::max(lo, hi)};
}

// Pass 1 of one input row xr: h[ow] = the max (or sum) of the row over window ow's columns, hc[ow] its column.
template <typename T, bool Max>
FASTNN_INLINE void reduce_cols(const T* __restrict xr, T* __restrict h, ColIndex<T>* __restrict hc,
                               const PoolShape& s, Span in) {
    const i64 sw = s.sw, pw = s.pw;
    auto clipped = [&](i64 ow) {
        const Span c = span(ow, sw, pw, s.KW, s.W);
        T acc = Max ? xr[c.lo] : T(0);
        i64 at = c.lo;
        for (i64 iw = Max ? c.lo + 1 : c.lo; iw < c.hi; ++iw) {
            if (!Max) acc += xr[iw];
            else if (better(xr[iw], acc)) acc = xr[iw], at = iw;
        }
        h[ow] = acc;
        if (Max) hc[ow] = ColIndex<T>(at);
    };
    for (i64 ow = 0; ow < in.lo; ++ow) clipped(ow);
#pragma omp simd
    for (i64 ow = in.lo; ow < in.hi; ++ow) {
        h[ow] = Max ? xr[ow * sw - pw] : T(0) + xr[ow * sw - pw];
        if (Max) hc[ow] = ColIndex<T>(ow * sw - pw);
    }
    for (i64 j = 1; j < s.KW; ++j) {
#pragma omp simd
        for (i64 ow = in.lo; ow < in.hi; ++ow) {
            const T v = xr[ow * sw - pw + j], b = h[ow];
            if (!Max) {
                h[ow] = b + v;
            } else {
                const bool take = (v > b) | ((v != v) & (b == b));  // better(), written for the vectoriser
                h[ow] = take ? v : b;
                hc[ow] = take ? ColIndex<T>(ow * sw - pw + j) : hc[ow];
            }
        }
    }
    for (i64 ow = std::max(in.lo, in.hi); ow < s.OW; ++ow) clipped(ow);
}

// Output rows [oh0, oh1) of one plane. Scratch: h and hc of (rows the band needs) * OW, cw of OW.
template <typename T, bool Max>
FASTNN_INLINE void pool_band__separable_body(std::integral_constant<bool, Max>, const T* x, T* y, i64* idx,
                                             const PoolShape& s, bool cip, i64 oh0, i64 oh1, T* h,
                                             ColIndex<T>* hc, T* cw) {
    const i64 OW = s.OW, base = span(oh0, s.sh, s.ph, s.KH, s.H).lo;
    const Span in = interior(s.sw, s.pw, s.KW, s.W, OW);
    if (!Max)
        for (i64 ow = 0; ow < OW; ++ow) cw[ow] = T(window_size(ow, s.sw, s.pw, s.KW, s.W, cip));
    i64 done = base;  // input rows [base, done) reduced; windows move down, so each row is reduced once
    for (i64 oh = oh0; oh < oh1; ++oh) {
        const Span r = span(oh, s.sh, s.ph, s.KH, s.H);
        for (i64 ih = std::max(done, r.lo); ih < r.hi; ++ih)
            reduce_cols<T, Max>(x + ih * s.W, h + (ih - base) * OW, hc + (ih - base) * OW, s, in);
        done = std::max(done, r.hi);
        T* yo = y + oh * OW;
        const T* h0 = h + (r.lo - base) * OW;
        if (!Max) {
            const T rows = T(window_size(oh, s.sh, s.ph, s.KH, s.H, cip));
#pragma omp simd
            for (i64 ow = 0; ow < OW; ++ow) yo[ow] = T(0) + h0[ow];
            for (i64 ih = r.lo + 1; ih < r.hi; ++ih) {
                const T* hr = h + (ih - base) * OW;
#pragma omp simd
                for (i64 ow = 0; ow < OW; ++ow) yo[ow] += hr[ow];
            }
#pragma omp simd
            for (i64 ow = 0; ow < OW; ++ow) yo[ow] /= rows * cw[ow];  // == the divisor, a small integer, exactly
            continue;
        }
        i64* io = idx + oh * OW;
        const ColIndex<T>* c0 = hc + (r.lo - base) * OW;
#pragma omp simd
        for (i64 ow = 0; ow < OW; ++ow) yo[ow] = h0[ow], io[ow] = r.lo * s.W + c0[ow];
        for (i64 ih = r.lo + 1; ih < r.hi; ++ih) {
            const T* hr = h + (ih - base) * OW;
            const ColIndex<T>* cr = hc + (ih - base) * OW;
#pragma omp simd
            for (i64 ow = 0; ow < OW; ++ow) {
                const T v = hr[ow], b = yo[ow];
                const bool take = (v > b) | ((v != v) & (b == b));
                yo[ow] = take ? v : b;
                io[ow] = take ? ih * s.W + cr[ow] : io[ow];
            }
        }
    }
}
FASTNN_SIMD_DISPATCH(pool_band__separable)

// The average backward, transposed: g = dy / divisor is spread down the window rows into t (H x OW, pass 2
// reversed), then each row of t across the window columns into dx (pass 1 reversed). dx is written row by row,
// zeroed just before. Scratch: t of H*OW, g and cw of OW.
template <typename T>
FASTNN_INLINE void avg_bwd_plane__separable_body(const T* __restrict dy, T* __restrict dx, const PoolShape& s,
                                                 bool cip, T* __restrict t, T* __restrict g, T* __restrict cw) {
    const i64 OW = s.OW, sw = s.sw, pw = s.pw;
    const Span in = interior(sw, pw, s.KW, s.W, OW);
    for (i64 ow = 0; ow < OW; ++ow) cw[ow] = T(window_size(ow, sw, pw, s.KW, s.W, cip));
    std::memset(t, 0, sizeof(T) * s.H * OW);
    for (i64 oh = 0; oh < s.OH; ++oh) {
        const Span r = span(oh, s.sh, s.ph, s.KH, s.H);
        const T rows = T(window_size(oh, s.sh, s.ph, s.KH, s.H, cip));
#pragma omp simd
        for (i64 ow = 0; ow < OW; ++ow) g[ow] = dy[oh * OW + ow] / (rows * cw[ow]);
        for (i64 ih = r.lo; ih < r.hi; ++ih) {
            T* tr = t + ih * OW;
#pragma omp simd
            for (i64 ow = 0; ow < OW; ++ow) tr[ow] += g[ow];
        }
    }
    for (i64 ih = 0; ih < s.H; ++ih) {
        const T* tr = t + ih * OW;
        T* xr = dx + ih * s.W;
        std::memset(xr, 0, sizeof(T) * s.W);
        auto clipped = [&](i64 ow) {
            const Span c = span(ow, sw, pw, s.KW, s.W);
            for (i64 iw = c.lo; iw < c.hi; ++iw) xr[iw] += tr[ow];
        };
        for (i64 ow = 0; ow < in.lo; ++ow) clipped(ow);
        for (i64 j = 0; j < s.KW; ++j) {
#pragma omp simd
            for (i64 ow = in.lo; ow < in.hi; ++ow) xr[ow * sw - pw + j] += tr[ow];
        }
        for (i64 ow = std::max(in.lo, in.hi); ow < OW; ++ow) clipped(ow);
    }
}
FASTNN_SIMD_DISPATCH(avg_bwd_plane__separable)

// -------------------------------------------------------------------------------------------------- taps kernels
// Short output rows, where the separable loops run a few lanes each, and strided maxima: planes taken kLanes at a
// time, interleaved (element e of plane g at e*L + g) in a frame of padding (-inf for max: never better; 0 for
// sums), so that each window tap of each output is one vector load over the group's planes, whatever the geometry
// (gathers, the other way to vectorise a tap, are slow on CPUs with the Downfall mitigation). A max starts at its
// window's first input element and scans the taps in row-major order with strict >, and a sum adds them in that
// order (a padding 0 changes no partial sum): both give the generic code's results exactly.
template <typename T> constexpr i64 kLanes = 32 / sizeof(T);  // one AVX2 vector (two SSE2 vectors in the fallback)
// A group's lanes as GCC vector types (in a class: an alias template drops the attribute), and the lane masks.
template <typename T> struct GroupVec {
    typedef T V __attribute__((vector_size(32)));
    typedef ColIndex<T> M __attribute__((vector_size(32)));
};
template <typename T> struct TapsPlan {
    i64 Wp, plane;                            // the frame's row and size
    std::vector<i64> org, tap;                // window origin per output, tap offset, in interleaved frame elements
    std::vector<ColIndex<T>> first;           // max: the tap of the window's first input element
    std::vector<i64> base, tap_src;           // max: the window origins and tap offsets in the plane, for indices
    std::vector<T> div;                       // average: the divisor per output
    TapsPlan(const PoolShape& s, bool max, bool cip) : Wp(s.W + 2 * s.pw), plane(Wp * (s.H + 2 * s.ph)) {
        constexpr i64 L = kLanes<T>;
        for (i64 t = 0; t < s.KH * s.KW; ++t) {
            tap.push_back((t / s.KW * Wp + t % s.KW) * L);
            if (max) tap_src.push_back(t / s.KW * s.W + t % s.KW);
        }
        for (i64 oh = 0; oh < s.OH; ++oh)
            for (i64 ow = 0; ow < s.OW; ++ow) {
                const i64 ih = oh * s.sh - s.ph, iw = ow * s.sw - s.pw;
                org.push_back(((ih + s.ph) * Wp + iw + s.pw) * L);
                if (max) {
                    first.push_back(ColIndex<T>(std::max<i64>(-ih, 0) * s.KW + std::max<i64>(-iw, 0)));
                    base.push_back(ih * s.W + iw);
                } else {
                    div.push_back(T(avg_divisor(s, oh, ow, cip)));
                }
            }
    }
};

// q <= L planes (HW apart from src, plane g at lane g) into the interleaved frame f: the rows and columns some
// window reads (4x4/4 on 7x7 reads 16 of 49), and with padding the rest set to `pad`. Lanes from q on are left
// as they are: their outputs are never stored.
template <typename T>
FASTNN_INLINE void interleave(const T* src, i64 q, const PoolShape& s, const TapsPlan<T>& p, T pad, T* f) {
    constexpr i64 L = kLanes<T>;
    if (s.ph || s.pw) std::fill(f, f + p.plane * L, pad);
    const i64 H = std::min(s.H, (s.OH - 1) * s.sh + s.KH - s.ph), W = std::min(s.W, (s.OW - 1) * s.sw + s.KW - s.pw);
    for (i64 g = 0; g < q; ++g)
        for (i64 ih = 0; ih < H; ++ih) {
            const T* r = src + (g * s.H + ih) * s.W;
            T* d = f + ((ih + s.ph) * p.Wp + s.pw) * L + g;
            for (i64 iw = 0; iw < W; ++iw) d[iw * L] = r[iw];
        }
}

// q <= L planes of outputs y (OH*OW apart) from x (HW apart). f: scratch of the frame; yt, tb: of OH*OW*L.
template <typename T, bool Max>
FASTNN_INLINE void pool_group__taps_body(std::integral_constant<bool, Max>, const T* x, i64 q, T* y, i64* idx,
                                         const PoolShape& s, const TapsPlan<T>& p, T* f, T* yt, ColIndex<T>* tb) {
    constexpr i64 L = kLanes<T>;
    const i64 n = i64(p.org.size()), taps = i64(p.tap.size());
    interleave(x, q, s, p, Max ? -std::numeric_limits<T>::infinity() : T(0), f);
    using V = typename GroupVec<T>::V;
    using M = typename GroupVec<T>::M;
    for (i64 o = 0; o < n; ++o) {
        const T* w = f + p.org[o];
        const i64 t0 = Max ? p.first[o] : 0;
        V acc{}, v;  // loads by memcpy: unaligned, and no helper function that could be compiled without AVX
        if (Max) std::memcpy(&acc, w + p.tap[t0], sizeof acc);
        M at = M{} + ColIndex<T>(t0);
        for (i64 t = Max ? t0 + 1 : 0; t < taps; ++t) {
            std::memcpy(&v, w + p.tap[t], sizeof v);
            if (!Max) {
                acc += v;
            } else {
                const M take = (v > acc) | ((v != v) & (acc == acc));  // better(), lane by lane
                acc = take ? v : acc;
                at = take ? M{} + ColIndex<T>(t) : at;
            }
        }
        if (!Max) acc /= p.div[o];
        std::memcpy(yt + o * L, &acc, sizeof acc);
        if (Max) std::memcpy(tb + o * L, &at, sizeof at);
    }
    for (i64 g = 0; g < q; ++g)
        for (i64 o = 0; o < n; ++o) {
            y[g * n + o] = yt[o * L + g];
            if (Max) idx[g * n + o] = p.base[o] + p.tap_src[tb[o * L + g]];
        }
}
FASTNN_SIMD_DISPATCH(pool_group__taps)

// The average backward of q <= L planes: g = dy / divisor, interleaved, added tap by tap into the zeroed frame f,
// whose inside is then copied out to dx. gt: scratch of OH*OW*L.
template <typename T>
FASTNN_INLINE void avg_bwd_group__taps_body(const T* dy, i64 q, T* dx, const PoolShape& s, const TapsPlan<T>& p,
                                            T* f, T* gt) {
    constexpr i64 L = kLanes<T>;
    const i64 n = i64(p.org.size()), taps = i64(p.tap.size());
    std::fill(f, f + p.plane * L, T(0));
    std::fill(gt, gt + n * L, T(0));
    for (i64 g = 0; g < q; ++g)
        for (i64 o = 0; o < n; ++o) gt[o * L + g] = dy[g * n + o] / p.div[o];
    for (i64 o = 0; o < n; ++o)
        for (i64 t = 0; t < taps; ++t) {
            T* d = f + p.org[o] + p.tap[t];
#pragma omp simd
            for (i64 g = 0; g < L; ++g) d[g] += gt[o * L + g];
        }
    for (i64 g = 0; g < q; ++g)
        for (i64 ih = 0; ih < s.H; ++ih) {
            const T* r = f + ((ih + s.ph) * p.Wp + s.pw) * L + g;
            T* d = dx + (g * s.H + ih) * s.W;
            for (i64 iw = 0; iw < s.W; ++iw) d[iw] = r[iw * L];
        }
}
FASTNN_SIMD_DISPATCH(avg_bwd_group__taps)

// ---------------------------------------------------------------------------------------- AVX2 float fast paths
// Stride-2 windows read even and odd input columns: 16 floats from p split into 8 even + 8 odd (reads p[0..15]).
FASTNN_AVX2 inline void split8(const float* p, __m256& even, __m256& odd) {
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
// The three columns 2ow-1, 2ow, 2ow+1 of 8 stride-2 windows starting at p - 1 (reads p[-1..15]).
FASTNN_AVX2 inline void cols3(const float* p, __m256& l, __m256& c, __m256& r) {
    __m256 unused;
    split8(p - 1, l, c);
    split8(p, unused, r);
}

// Chunks of 8 outputs over [start, start+n), n >= 8: the last chunk is moved back to end at start+n, so there is no
// scalar tail (the overlap recomputes a few outputs, identically).
inline i64 last_chunk_overlaps(i64 start, i64 n, i64 i) { return start + std::min(i, n - 8); }

// Running (max, offset) of 8 windows; offsets are int32 (ih - ih0)*W + (iw - iw0), widened to int64 at the store.
struct MaxAcc {
    __m256 best;
    __m256i off;
};
// (v, off) where `take`.
FASTNN_AVX2 inline void max_take(MaxAcc& m, __m256 v, int off, __m256 take) {
    m.best = _mm256_blendv_ps(m.best, v, take);
    m.off = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(m.off), _mm256_castsi256_ps(_mm256_set1_epi32(off)), take));
}
// better(v, best) per lane: !(best >= v) is v > best, or either is NaN; "best is a number" then leaves exactly it.
FASTNN_AVX2 inline __m256 better8(__m256 v, __m256 best) {
    return _mm256_and_ps(_mm256_cmp_ps(best, v, _CMP_NGE_UQ), _mm256_cmp_ps(best, best, _CMP_ORD_Q));
}
FASTNN_AVX2 inline void max_step(MaxAcc& m, __m256 v, int off) { max_take(m, v, off, better8(v, m.best)); }
// idx of lane k = base + 2k + off_k (window origins 2 columns apart).
FASTNN_AVX2 inline void max_store(const MaxAcc& m, float* y, i64* idx, i64 base) {
    _mm256_storeu_ps(y, m.best);
    __m256i b = _mm256_set1_epi64x(base);
    __m256i lo = _mm256_add_epi64(_mm256_add_epi64(b, _mm256_setr_epi64x(0, 2, 4, 6)),
                                  _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m.off)));
    __m256i hi = _mm256_add_epi64(_mm256_add_epi64(b, _mm256_setr_epi64x(8, 10, 12, 14)),
                                  _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m.off, 1)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + 4), hi);
}

// Rows of fewer than 8 outputs (14x14 -> 7x7, 8x8 -> 4x4: the textbook CNNs' second pooling layers) take one
// masked vector per row instead of the scalar code (5x slower on them): lanes < n of 8.
FASTNN_AVX2 inline __m256i lanes_below(i64 n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
// split8 of the first n < 16 floats of p, reading nothing past them (the lanes from n on are zeros).
FASTNN_AVX2 inline void split8_first(const float* p, i64 n, __m256& even, __m256& odd) {
    __m256 a = _mm256_maskload_ps(p, lanes_below(n)), b = _mm256_maskload_ps(p + 8, lanes_below(n - 8));
    __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
// The first n < 8 lanes of a max_store.
FASTNN_AVX2 inline void max_store_first(const MaxAcc& m, float* y, i64* idx, i64 base, i64 n) {
    alignas(32) float yv[8];
    alignas(32) i64 iv[8];
    max_store(m, yv, iv, base);
    for (i64 k = 0; k < n; ++k) y[k] = yv[k], idx[k] = iv[k];
}

// 2x2 s2 p0: 8 outputs from two rows of 16 inputs. OW = floor(W/2), so the loads stay inside the row.
FASTNN_AVX2 void max_row__2x2s2_avx2(const float* x, float* y, i64* idx, const PoolShape& s, i64 oh) {
    const float* r0 = x + 2 * oh * s.W;
    const float* r1 = r0 + s.W;
    const int W = int(s.W);
    if (s.OW < 8) {
        __m256 a, b, c, d;
        split8_first(r0, 2 * s.OW, a, b);
        split8_first(r1, 2 * s.OW, c, d);
        MaxAcc m{a, _mm256_setzero_si256()};
        max_step(m, b, 1);
        max_step(m, c, W);
        max_step(m, d, W + 1);
        max_store_first(m, y + oh * s.OW, idx + oh * s.OW, 2 * oh * s.W, s.OW);
        _mm256_zeroupper();
        return;
    }
    for (i64 i = 0; i < s.OW; i += 8) {
        const i64 ow = last_chunk_overlaps(0, s.OW, i);
        __m256 a, b, c, d;
        split8(r0 + 2 * ow, a, b);
        split8(r1 + 2 * ow, c, d);
        MaxAcc m{a, _mm256_setzero_si256()};
        max_step(m, b, 1);
        max_step(m, c, W);
        max_step(m, d, W + 1);
        max_store(m, y + oh * s.OW + ow, idx + oh * s.OW + ow, 2 * oh * s.W + 2 * ow);
    }
    _mm256_zeroupper();  // GCC adds no vzeroupper here: legacy-SSE code after dirty ymm stalls on Intel
}

// 3x3 s2 p1 on planes at most 16 wide (at most 8 outputs a row: 7x7 -> 4x4, 13x13 -> 7x7), which the row code
// below left all to the generic code (2-3x PyTorch's time): a plane at a time, copied once into rows of 24 floats
// with a zero column on each side (kSmallLd apart, input column iw at 1 + iw), then one vector per output row. The
// padding columns (2ow-1 at ow = 0, 2ow+1 = W) are masked out of the max and counted out of the divisor.
constexpr i64 kSmallLd = 24;
FASTNN_AVX2 inline void copy_plane_padded(const float* x, i64 H, i64 W, float* buf) {
    const __m256i lo = lanes_below(W), hi = lanes_below(W - 8);
    for (i64 ih = 0; ih < H; ++ih, x += W, buf += kSmallLd) {  // cols3 reads columns 0..16 of a row
        buf[0] = 0.f;
        _mm256_storeu_ps(buf + 1, _mm256_maskload_ps(x, lo));  // lanes past W read as 0
        _mm256_storeu_ps(buf + 9, _mm256_maskload_ps(x + 8, hi));
    }
}
// max_step where `valid` (lanes whose column exists).
FASTNN_AVX2 inline void max_step_where(MaxAcc& m, __m256 v, int off, __m256 valid) {
    max_take(m, v, off, _mm256_and_ps(better8(v, m.best), valid));
}
// Lanes ow whose left (2ow-1 >= 0) and right (2ow+1 < W) columns exist.
FASTNN_AVX2 inline void small_sides(i64 W, __m256& left, __m256& right) {
    const __m256i ow = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    left = _mm256_castsi256_ps(_mm256_cmpgt_epi32(ow, _mm256_setzero_si256()));
    right = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(W)),
                                                   _mm256_add_epi32(_mm256_add_epi32(ow, ow), _mm256_set1_epi32(1))));
}
FASTNN_AVX2 void max_plane__3x3s2p1_small(const float* x, float* y, i64* idx, const PoolShape& s, float* buf) {
    copy_plane_padded(x, s.H, s.W, buf);
    const int W = int(s.W);
    __m256 left, right, l, c, rt;
    small_sides(W, left, right);
    for (i64 oh = 0; oh < s.OH; ++oh) {
        const Span r = span(oh, 2, 1, 3, s.H);
        cols3(buf + r.lo * kSmallLd + 1, l, c, rt);
        // the window starts at l where it exists: l stays unless c is better than it
        MaxAcc m{c, _mm256_set1_epi32(1)};
        max_take(m, l, 0, _mm256_andnot_ps(better8(c, l), left));
        max_step_where(m, rt, 2, right);
        for (i64 ih = r.lo + 1; ih < r.hi; ++ih) {
            const int o = int(ih - r.lo) * W;
            cols3(buf + ih * kSmallLd + 1, l, c, rt);
            max_step_where(m, l, o, left);
            max_step(m, c, o + 1);
            max_step_where(m, rt, o + 2, right);
        }
        max_store_first(m, y + oh * s.OW, idx + oh * s.OW, r.lo * s.W - 1, s.OW);
    }
    _mm256_zeroupper();
}
FASTNN_AVX2 void avg_plane__3x3s2p1_small(const float* x, float* y, const PoolShape& s, bool cip, float* buf) {
    copy_plane_padded(x, s.H, s.W, buf);
    __m256 left, right, l, c, rt;
    small_sides(s.W, left, right);
    const __m256 one = _mm256_set1_ps(1.f), store = _mm256_castsi256_ps(lanes_below(s.OW));
    const __m256 cols = _mm256_add_ps(_mm256_add_ps(one, _mm256_and_ps(left, one)), _mm256_and_ps(right, one));
    for (i64 oh = 0; oh < s.OH; ++oh) {
        const Span r = span(oh, 2, 1, 3, s.H);
        __m256 t = _mm256_setzero_ps();
        for (i64 ih = r.lo; ih < r.hi; ++ih) {  // the generic code's order (a padding +0 changes no sum from +0)
            cols3(buf + ih * kSmallLd + 1, l, c, rt);
            t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t, l), c), rt);
        }
        const __m256 div = cip ? _mm256_set1_ps(9.f) : _mm256_mul_ps(cols, _mm256_set1_ps(float(r.hi - r.lo)));
        _mm256_maskstore_ps(y + oh * s.OW, _mm256_castps_si256(store), _mm256_div_ps(t, div));
    }
    _mm256_zeroupper();
}

// 3x3 s2 p1: columns 2ow-1, 2ow, 2ow+1 = odd, even, odd of the 16 floats from 2ow-1 and 2ow. Output 0 and a
// window past the last column (and rows with fewer than 8 interior outputs) go through the generic code; clipped
// rows need nothing special: only window rows inside the input are visited, in order.
FASTNN_AVX2 void max_row__3x3s2p1_avx2(const float* x, float* y, i64* idx, const PoolShape& s, i64 oh) {
    Span r = span(oh, 2, 1, 3, s.H);
    const i64 vec_end = std::min(s.OW, s.W / 2);  // interior outputs: 2ow+1 <= W-1
    const int W = int(s.W);
    const i64 n = vec_end - 1;  // outputs 1 .. vec_end-1
    max_row__generic(x, y, idx, s, oh, 0, 1);
    for (i64 i = 0; n >= 8 && i < n; i += 8) {
        const i64 ow = last_chunk_overlaps(1, n, i);
        const float* p = x + r.lo * s.W + 2 * ow;
        __m256 l, c, rt;
        cols3(p, l, c, rt);
        MaxAcc m{l, _mm256_setzero_si256()};
        max_step(m, c, 1);
        max_step(m, rt, 2);
        for (i64 ih = r.lo + 1; ih < r.hi; ++ih) {
            p += s.W;
            int o = int(ih - r.lo) * W;
            cols3(p, l, c, rt);
            max_step(m, l, o);
            max_step(m, c, o + 1);
            max_step(m, rt, o + 2);
        }
        max_store(m, y + oh * s.OW + ow, idx + oh * s.OW + ow, r.lo * s.W + 2 * ow - 1);
    }
    _mm256_zeroupper();
    max_row__generic(x, y, idx, s, oh, n >= 8 ? vec_end : 1, s.OW);
}

// ((0 + a) + b) + c) + d: the generic code's order from +0, so four -0.0 average to +0.0 as there.
FASTNN_AVX2 inline __m256 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_setzero_ps(), a), b), c), d);
}

FASTNN_AVX2 void avg_row__2x2s2_avx2(const float* x, float* y, const PoolShape& s, i64 oh) {
    const float* r0 = x + 2 * oh * s.W;
    const float* r1 = r0 + s.W;
    if (s.OW < 8) {  // one masked vector (see lanes_below)
        __m256 a, b, c, d;
        split8_first(r0, 2 * s.OW, a, b);
        split8_first(r1, 2 * s.OW, c, d);
        __m256 t = sum4(a, b, c, d);
        _mm256_maskstore_ps(y + oh * s.OW, lanes_below(s.OW), _mm256_mul_ps(t, _mm256_set1_ps(0.25f)));
        _mm256_zeroupper();
        return;
    }
    for (i64 i = 0; i < s.OW; i += 8) {  // summed in the generic code's order; *0.25 == /4 exactly
        const i64 ow = last_chunk_overlaps(0, s.OW, i);
        __m256 a, b, c, d;
        split8(r0 + 2 * ow, a, b);
        split8(r1 + 2 * ow, c, d);
        __m256 t = sum4(a, b, c, d);
        _mm256_storeu_ps(y + oh * s.OW + ow, _mm256_mul_ps(t, _mm256_set1_ps(0.25f)));
    }
    _mm256_zeroupper();
}

FASTNN_AVX2 void avg_row__3x3s2p1_avx2(const float* x, float* y, const PoolShape& s, bool cip, i64 oh) {
    Span r = span(oh, 2, 1, 3, s.H);
    const i64 vec_end = std::min(s.OW, s.W / 2);
    const __m256 div = _mm256_set1_ps(float(cip ? 9 : 3 * (r.hi - r.lo)));
    const i64 n = vec_end - 1;
    avg_row__generic(x, y, s, cip, oh, 0, 1);
    for (i64 i = 0; n >= 8 && i < n; i += 8) {
        const i64 ow = last_chunk_overlaps(1, n, i);
        __m256 t = _mm256_setzero_ps();
        for (i64 ih = r.lo; ih < r.hi; ++ih) {
            __m256 l, c, rt;
            cols3(x + ih * s.W + 2 * ow, l, c, rt);
            t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t, l), c), rt);
        }
        _mm256_storeu_ps(y + oh * s.OW + ow, _mm256_div_ps(t, div));
    }
    _mm256_zeroupper();
    avg_row__generic(x, y, s, cip, oh, n >= 8 ? vec_end : 1, s.OW);
}

template <typename T> FASTNN_AVX2 void avg_bwd_plane__2x2s2_avx2(const T* dy, T* dx, const PoolShape& s) {
    avg_bwd_plane__2x2s2_body(dy, dx, s);
    _mm256_zeroupper();
}
template <typename T>
FASTNN_AVX2 void avg_bwd_plane__3x3s2p1_avx2(const T* dy, T* dx, const PoolShape& s, bool cip, T* scratch) {
    avg_bwd_plane__3x3s2p1_body(dy, dx, s, cip, scratch);
    _mm256_zeroupper();
}

// ---------------------------------------------------------------------------------------------------- launchers
// The geometry of the fast paths.
inline bool is_k2s2(const PoolShape& s) {
    return s.KH == 2 && s.KW == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
}
inline bool is_k3s2p1(const PoolShape& s) {
    return s.KH == 3 && s.KW == 3 && s.sh == 2 && s.sw == 2 && s.ph == 1 && s.pw == 1;
}

// Whether a variant can run: the fast paths need their geometry; the forward ones are AVX2 float kernels, the
// average backward ones plain loops for either type (compiled twice, the AVX2 copy where the CPU has it).
template <typename T>
bool can_run(PoolPass pass, Pool2dAlgo a, const PoolShape& s) {
    if (a == Pool2dAlgo::generic || a == Pool2dAlgo::separable || a == Pool2dAlgo::taps) return true;
    if (pass != PoolPass::avg_bwd && !(std::is_same<T, float>::value && has_avx2_fma())) return false;
    return a == Pool2dAlgo::k2s2 ? is_k2s2(s) : is_k3s2p1(s);
}

template <typename T>
Pool2dAlgo resolve(PoolPass pass, Pool2dAlgo a, const PoolShape& s) {
    if (a == Pool2dAlgo::automatic) return pool2d_algo<T>(pass, s);
    if (!can_run<T>(pass, a, s)) algo_cannot_run(AlgoNames<Pool2dAlgo>::op, algo_name(a));
    return a;
}

}  // namespace

// The rule, from timings on 2 threads (AVX-512 Xeon): the taps kernels wherever there are planes for two groups,
// for the max (2-7x the separable kernels: a strided max compares every column of pass 1) and for averages with
// output rows shorter than 24 (past that the separable ones, which reduce each input row once for several windows,
// win by 1.2-1.8x); the separable kernels on fewer planes (their bands of rows give the threads work). The fast
// paths where they can run, except on planes at most 5 wide, where the taps ones are 1.1-1.9x faster (not for the
// 2x2/2 average: 0.6-0.8x). The generic kernels run only when forced.
template <typename T>
Pool2dAlgo pool2d_algo(PoolPass pass, const PoolShape& s) {
    const bool groups = s.N * s.C >= 2 * kLanes<T>;
    const bool narrow = groups && s.W <= 5 && !(is_k2s2(s) && pass != PoolPass::max_fwd);
    if (!narrow)
        for (Pool2dAlgo a : {Pool2dAlgo::k2s2, Pool2dAlgo::k3s2p1})
            if (can_run<T>(pass, a, s)) return a;
    return groups && (pass == PoolPass::max_fwd || s.OW < 24) ? Pool2dAlgo::taps : Pool2dAlgo::separable;
}

// The taps kernels: a group of kLanes planes per item, with the frame and the interleaved outputs in the thread's
// scratch.
template <typename T, class F>
void taps_groups(const PoolShape& s, const TapsPlan<T>& plan, double work_each, F&& group) {
    constexpr i64 L = kLanes<T>;
    const i64 planes = s.N * s.C, OHW = s.OH * s.OW;
    parallel_items((planes + L - 1) / L, work_each * L, [&](i64 item) {
        static thread_local std::vector<T> scratch;
        static thread_local std::vector<ColIndex<T>> tb;
        if ((i64)scratch.size() < (plan.plane + OHW) * L) scratch.resize((plan.plane + OHW) * L);
        if ((i64)tb.size() < OHW * L) tb.resize(OHW * L);
        const i64 p0 = item * L;
        group(p0, std::min(L, planes - p0), scratch.data(), scratch.data() + plan.plane * L, tb.data());
    });
}
template <typename T, bool Max>
void taps_forward(const T* x, T* y, i64* idx, const PoolShape& s, bool cip) {
    const TapsPlan<T> plan(s, Max, cip);
    const i64 HW = s.H * s.W, OHW = s.OH * s.OW;
    taps_groups(s, plan, double(HW + OHW * s.KH * s.KW), [&](i64 p0, i64 q, T* f, T* yt, ColIndex<T>* tb) {
        pool_group__taps(std::integral_constant<bool, Max>(), x + p0 * HW, q, y + p0 * OHW,
                         Max ? idx + p0 * OHW : nullptr, s, plan, f, yt, tb);
    });
}

// The separable forward: bands of output rows, a plane's rows split when there are too few planes for the threads
// (a band recomputes the input rows it shares with the one above: at most KH - 1).
template <typename T, bool Max>
void separable_forward(const T* x, T* y, i64* idx, const PoolShape& s, bool cip) {
    const i64 planes = s.N * s.C;
    const int nt = parallel_work(double(planes) * (s.H * s.W + s.OH * s.OW * s.KH));
    const i64 bands = planes >= 4 * nt ? 1 : std::min(s.OH, (4 * nt + planes - 1) / planes);
    const i64 band_rows = (s.OH + bands - 1) / bands;
    const i64 in_rows = std::min(s.H, (band_rows - 1) * s.sh + s.KH);
    parallel_items(planes * bands, double(band_rows) * s.OW * (s.KH + s.KW), [&](i64 item) {
        static thread_local std::vector<T> h;
        static thread_local std::vector<ColIndex<T>> hc;
        if ((i64)h.size() < (in_rows + 1) * s.OW) h.resize((in_rows + 1) * s.OW);
        if (Max && (i64)hc.size() < in_rows * s.OW) hc.resize(in_rows * s.OW);
        const i64 p = item / bands, oh0 = item % bands * band_rows, o = p * s.OH * s.OW;
        if (oh0 >= s.OH) return;
        pool_band__separable(std::integral_constant<bool, Max>(), x + p * s.H * s.W, y + o, Max ? idx + o : nullptr,
                             s, cip, oh0, std::min(s.OH, oh0 + band_rows), h.data(), hc.data(),
                             h.data() + in_rows * s.OW);
    });
}

// The small-plane 3x3 s2 p1 kernels, a plane per item, over a padded copy in the thread's scratch.
template <class F>
void small_planes(const PoolShape& s, F&& plane) {
    parallel_items(s.N * s.C, double(s.H) * s.W * 2, [&](i64 p) {
        static thread_local std::vector<float> buf;
        if ((i64)buf.size() < s.H * kSmallLd) buf.resize(s.H * kSmallLd);
        plane(p, buf.data());
    });
}
inline bool small_plane(Pool2dAlgo a, const PoolShape& s) { return a == Pool2dAlgo::k3s2p1 && s.W <= 16; }

template <typename T>
void max_pool2d_fwd(const T* x, T* y, i64* idx, const PoolShape& s, Pool2dAlgo algo) {
    const Pool2dAlgo a = resolve<T>(PoolPass::max_fwd, algo, s);
    if (a == Pool2dAlgo::separable) return separable_forward<T, true>(x, y, idx, s, false);
    if (a == Pool2dAlgo::taps) return taps_forward<T, true>(x, y, idx, s, false);
    if constexpr (std::is_same<T, float>::value)
        if (small_plane(a, s))
            return small_planes(s, [&](i64 p, float* buf) {
                const i64 o = p * s.OH * s.OW;
                max_plane__3x3s2p1_small(x + p * s.H * s.W, y + o, idx + o, s, buf);
            });
    const i64 rows = s.N * s.C * s.OH;
    parallel_items(rows, double(s.OW) * s.KH * s.KW, [&](i64 row) {
        const i64 plane = row / s.OH, oh = row % s.OH;
        const T* xp = x + plane * s.H * s.W;
        T* yp = y + plane * s.OH * s.OW;
        i64* ip = idx + plane * s.OH * s.OW;
        if constexpr (std::is_same<T, float>::value) {
            if (a == Pool2dAlgo::k2s2) return max_row__2x2s2_avx2(xp, yp, ip, s, oh);
            if (a == Pool2dAlgo::k3s2p1) return max_row__3x3s2p1_avx2(xp, yp, ip, s, oh);
        }
        max_row__generic(xp, yp, ip, s, oh, 0, s.OW);
    });
}

std::string bad_pool_index(i64 value, i64 position, i64 HW) {
    return "indices: " + std::to_string(value) + " at position " + std::to_string(position) +
           " is outside [0, " + std::to_string(HW) + "), the flat positions ih*W+iw of an input plane";
}

template <typename T>
void max_pool2d_bwd(const T* dy, const i64* idx, T* dx, const PoolShape& s) {
    const i64 planes = s.N * s.C, HW = s.H * s.W, OHW = s.OH * s.OW;
    std::atomic<i64> bad{-1};  // the position in idx of a bad index (any one), found by the scatter itself
    parallel_items(planes, double(HW + 2 * OHW), [&](i64 p) {
        T* d = dx + p * HW;
        std::memset(d, 0, sizeof(T) * HW);
        for (i64 o = p * OHW; o < (p + 1) * OHW; ++o) {
            const i64 i = idx[o];
            if (static_cast<std::uint64_t>(i) < static_cast<std::uint64_t>(HW)) d[i] += dy[o];
            else bad.store(o, std::memory_order_relaxed);  // never written; the call raises below
        }
    });
    if (const i64 o = bad.load(); o >= 0)
        throw std::invalid_argument(bad_pool_index(idx[o], o, HW));
}

template <typename T>
void avg_pool2d_fwd(const T* x, T* y, const PoolShape& s, bool cip, Pool2dAlgo algo) {
    const Pool2dAlgo a = resolve<T>(PoolPass::avg_fwd, algo, s);
    if (a == Pool2dAlgo::separable) return separable_forward<T, false>(x, y, nullptr, s, cip);
    if (a == Pool2dAlgo::taps) return taps_forward<T, false>(x, y, nullptr, s, cip);
    if constexpr (std::is_same<T, float>::value)
        if (small_plane(a, s))
            return small_planes(s, [&](i64 p, float* buf) {
                avg_plane__3x3s2p1_small(x + p * s.H * s.W, y + p * s.OH * s.OW, s, cip, buf);
            });
    const i64 rows = s.N * s.C * s.OH;
    parallel_items(rows, double(s.OW) * s.KH * s.KW, [&](i64 row) {
        const i64 plane = row / s.OH, oh = row % s.OH;
        const T* xp = x + plane * s.H * s.W;
        T* yp = y + plane * s.OH * s.OW;
        if constexpr (std::is_same<T, float>::value) {
            if (a == Pool2dAlgo::k2s2) return avg_row__2x2s2_avx2(xp, yp, s, oh);
            if (a == Pool2dAlgo::k3s2p1) return avg_row__3x3s2p1_avx2(xp, yp, s, cip, oh);
        }
        avg_row__generic(xp, yp, s, cip, oh, 0, s.OW);
    });
}

template <typename T>
void avg_pool2d_bwd(const T* dy, T* dx, const PoolShape& s, bool cip, Pool2dAlgo algo) {
    const Pool2dAlgo a = resolve<T>(PoolPass::avg_bwd, algo, s);
    const i64 planes = s.N * s.C, HW = s.H * s.W, OHW = s.OH * s.OW;
    const bool k2s2 = a == Pool2dAlgo::k2s2, k3s2p1 = a == Pool2dAlgo::k3s2p1, sep = a == Pool2dAlgo::separable;
    const bool avx2 = has_avx2_fma();
    if (a == Pool2dAlgo::taps) {
        const TapsPlan<T> plan(s, false, cip);
        return taps_groups(s, plan, double(HW + OHW * s.KH * s.KW), [&](i64 p0, i64 q, T* f, T* gt, ColIndex<T>*) {
            avg_bwd_group__taps(dy + p0 * OHW, q, dx + p0 * HW, s, plan, f, gt);
        });
    }
    const int nt = parallel_work(double(planes) * (HW + OHW));
    parallel_for(planes, (planes + 4 * nt - 1) / (4 * nt), [&](i64 p0, i64 p1) {
        std::vector<T> scratch(k3s2p1 ? 2 * s.W + s.OW + 1 : sep ? (s.H + 2) * s.OW : 0);
        for (i64 p = p0; p < p1; ++p) {
            const T* d = dy + p * OHW;
            T* x = dx + p * HW;
            if (k2s2) {
                if (avx2) avg_bwd_plane__2x2s2_avx2(d, x, s);
                else avg_bwd_plane__2x2s2(d, x, s);
            } else if (k3s2p1) {
                if (avx2) avg_bwd_plane__3x3s2p1_avx2(d, x, s, cip, scratch.data());
                else avg_bwd_plane__3x3s2p1(d, x, s, cip, scratch.data());
            } else if (sep) {
                T* t = scratch.data();
                avg_bwd_plane__separable(d, x, s, cip, t, t + s.H * s.OW, t + (s.H + 1) * s.OW);
            } else {
                std::memset(x, 0, sizeof(T) * HW);
                avg_bwd_plane__generic(d, x, s, cip);
            }
        }
    }, nt);
}

#define INST(T)                                                                        \
    template Pool2dAlgo pool2d_algo<T>(PoolPass, const PoolShape&);                    \
    template void max_pool2d_fwd<T>(const T*, T*, i64*, const PoolShape&, Pool2dAlgo); \
    template void max_pool2d_bwd<T>(const T*, const i64*, T*, const PoolShape&);       \
    template void avg_pool2d_fwd<T>(const T*, T*, const PoolShape&, bool, Pool2dAlgo); \
    template void avg_pool2d_bwd<T>(const T*, T*, const PoolShape&, bool, Pool2dAlgo);
INST(float)
INST(double)

}  // namespace fastnn
