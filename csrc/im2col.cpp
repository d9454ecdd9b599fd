// im2col / col2im in the public layout of docs/internals.md: col is (N*OH*OW, C*KH*KW), row (n*OH+oh)*OW+ow,
// column (c*KH+kh)*KW+kw; padding reads 0; col2im sums overlapping windows.
//
// Reference (what both compute, one element at a time):
//   for n, oh, ow, c, kh, kw:  ih = oh*sh - ph + kh*dh, iw = ow*sw - pw + kw*dw
//       col[(n*OH+oh)*OW+ow, (c*KH+kh)*KW+kw]  =  x[n,c,ih,iw] if inside else 0      (im2col)
//       x[n,c,ih,iw] += col[...] if inside                                            (col2im, x zeroed first)
// Both kernels work on tiles of (output positions) x (taps): one tap at a time on a run of
// positions (patch_row / patch_row_add in im2col.h: zeros | copy | zeros), and the tile is transposed to or from
// the position-major col in SSE2 register blocks (packed::transpose_lines). A tile spans up to 128 taps, so col is
// written/read in runs of whole cache lines, and few positions, so one tile touches few pages (TLB) of col.
#include <algorithm>
#include <vector>

#include "gemm_packed.h"
#include "im2col.h"

namespace fastnn {

namespace {
constexpr i64 kMaxTaps = 128;
// Positions per tile: a tile's rows of col should span at most ~128 KiB (32 pages), but runs of at least 16.
template <typename T>
i64 tile_positions(i64 P, i64 CRS) {
    return std::min(P, std::clamp<i64>((i64(128) << 10) / (CRS * (i64)sizeof(T)), 16, 256));
}

// d[q*ld + i] = lines[i*len + q] for i < ntaps, q < len (lines: ntaps x len, row-major).
template <typename T>
void lines_to_rows(const T* lines, i64 len, i64 ntaps, T* d, i64 ld) {
    constexpr i64 TB = packed::transpose_block<T>();
    i64 i = 0;
    for (; i + TB <= ntaps; i += TB) packed::transpose_lines(lines + i * len, len, len, d + i, ld);
    for (; i < ntaps; ++i)
        for (i64 q = 0; q < len; ++q) d[q * ld + i] = lines[i * len + q];
}

// lines[i*ldl + q] = src[q*ld + i] (ldl: len unless given): the inverse, TB positions at a time.
template <typename T>
void rows_to_lines(const T* src, i64 ld, i64 len, i64 ntaps, T* lines, i64 ldl = 0) {
    constexpr i64 TB = packed::transpose_block<T>();
    if (!ldl) ldl = len;
    i64 q = 0;
    for (; q + TB <= len; q += TB) packed::transpose_lines(src + q * ld, ld, ntaps, lines + q, ldl);
    for (; q < len; ++q)
        for (i64 i = 0; i < ntaps; ++i) lines[i * ldl + q] = src[q * ld + i];
}
}  // namespace

// Threads over (image, block of positions): each writes its own rows of col.
template <typename T>
void im2col(const T* x, T* col, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
    const i64 taps = std::min(CRS, kMaxTaps), pos = tile_positions<T>(P, CRS);
    const i64 nblk = (P + pos - 1) / pos;
    parallel_for(s.N * nblk, 1, [&](i64 b, i64 e) {
        packed::Buffer<T>& lines = packed::scratch<T>(packed::Slot::patch_lines);
        if ((i64)lines.size() < taps * pos) lines.resize(taps * pos);
        for (i64 t = b; t < e; ++t) {
            const i64 n = t / nblk, j0 = (t % nblk) * pos, len = std::min(pos, P - j0);
            T* out = col + (n * P + j0) * CRS;
            for (i64 t0 = 0; t0 < CRS; t0 += taps) {
                const i64 nt = std::min(taps, CRS - t0);
                for (i64 i = 0; i < nt; ++i) {
                    const i64 crs = t0 + i, c = crs / KK, r = crs % KK;
                    patch_row(x + (n * s.C + c) * HW, s, r / s.KW, r % s.KW, j0, len, lines.data() + i * len);
                }
                lines_to_rows(lines.data(), len, nt, out + t0, CRS);
            }
        }
    }, parallel_work(double(s.N) * P * CRS));
}

// Threads over (image, group of channels): a task owns its planes, so no two threads write one element; it reads
// the group's columns of col (at least 16 taps: whole cache lines) a block of positions at a time.
template <typename T>
void col2im(const T* col, T* x, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
    if (KK == 1 && P == HW && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0) {
        // 1x1, stride 1, no padding: every element is one col entry, col an (N, P, C) array to transpose, no sums
        // (zero-filling x and adding ran at half NumPy's speed: N64 C1 28x28 0.046 vs 0.022 ms)
        constexpr i64 pos = 256;
        const i64 nblk = (P + pos - 1) / pos;
        parallel_for(s.N * nblk, 1, [&](i64 b, i64 e) {
            for (i64 t = b; t < e; ++t) {
                const i64 n = t / nblk, j0 = (t % nblk) * pos, len = std::min(pos, P - j0);
                const T* src = col + (n * P + j0) * s.C;
                T* dst = x + n * s.C * P + j0;
                if (s.C == 1) std::copy(src, src + len, dst);
                else rows_to_lines(src, s.C, len, s.C, dst, P);
            }
        }, parallel_work(double(s.N) * P * s.C));
        return;
    }
    if (KK == 1 && s.ph == 0 && s.pw == 0) {
        // 1x1 at stride > 1: each col entry lands on one element of x (no sums; the rest is 0), so no lines: a
        // strided store per entry (N64 C1 56x56 /2: 0.065 ms by the general code, NumPy 0.063)
        parallel_items(s.N, double(s.C) * HW, [&](i64 n) {
            T* xn = x + n * s.C * HW;
            std::fill(xn, xn + s.C * HW, T(0));
            const T* src = col + n * P * s.C;
            for (i64 oh = 0; oh < s.OH; ++oh)
                for (i64 ow = 0; ow < s.OW; ++ow, src += s.C) {
                    T* d = xn + oh * s.sh * s.W + ow * s.sw;
                    if (s.C == 1) *d = *src;
                    else for (i64 c = 0; c < s.C; ++c) d[c * HW] = src[c];
                }
        });
        return;
    }
    const i64 cg = std::max<i64>(1, std::min<i64>(s.C, kMaxTaps / KK));  // channels per task
    const i64 ngrp = (s.C + cg - 1) / cg, pos = tile_positions<T>(P, CRS);
    parallel_for(s.N * ngrp, 1, [&](i64 b, i64 e) {
        packed::Buffer<T>& lines = packed::scratch<T>(packed::Slot::patch_lines);
        if ((i64)lines.size() < cg * KK * pos) lines.resize(cg * KK * pos);
        for (i64 t = b; t < e; ++t) {
            const i64 n = t / ngrp, c0 = (t % ngrp) * cg, nc = std::min(cg, s.C - c0), ntaps = nc * KK;
            T* planes = x + (n * s.C + c0) * HW;
            std::fill(planes, planes + nc * HW, T(0));
            for (i64 j0 = 0; j0 < P; j0 += pos) {
                const i64 len = std::min(pos, P - j0);
                rows_to_lines(col + (n * P + j0) * CRS + c0 * KK, CRS, len, ntaps, lines.data());
                for (i64 i = 0; i < ntaps; ++i)
                    patch_row_add(planes + (i / KK) * HW, s, (i % KK) / s.KW, i % s.KW, j0, len,
                                  lines.data() + i * len);
            }
        }
    }, parallel_work(double(s.N) * P * CRS));
}

template void im2col<float>(const float*, float*, const ConvShape&);
template void im2col<double>(const double*, double*, const ConvShape&);
template void col2im<float>(const float*, float*, const ConvShape&);
template void col2im<double>(const double*, double*, const ConvShape&);

}  // namespace fastnn
