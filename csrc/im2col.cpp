// im2col / col2im in the public layout of docs/internals.md: col is (N*OH*OW, C*KH*KW), row (n*OH+oh)*OW+ow,
// column (c*KH+kh)*KW+kw; padding reads 0; col2im sums overlapping windows.
//
// Reference (what both compute, one element at a time):
//   for n, oh, ow, c, kh, kw:  ih = oh*sh - ph + kh*dh, iw = ow*sw - pw + kw*dw
//       col[(n*OH+oh)*OW+ow, (c*KH+kh)*KW+kw]  =  x[n,c,ih,iw] if inside else 0      (im2col)
//       x[n,c,ih,iw] += col[...] if inside                                            (col2im, x zeroed first)
// Both kernels work on tiles of (up to 256 output positions) x (a group of 16 taps): one tap at a time on a run of
// positions (patch_row / patch_row_add in im2col.h: zeros | copy | zeros), and the tile is transposed to or from
// the position-major col in SSE2 register blocks (packed::transpose_lines), so col is read and written in whole
// cache lines rather than one element per line.
#include <algorithm>
#include <vector>

#include "gemm_packed.h"
#include "im2col.h"

namespace fastnn {

namespace {
constexpr i64 kTilePos = 256, kTileTaps = 16;

// d[q*ld + i] = lines[i*len + q] for i < ntaps, q < len (lines: ntaps x len, row-major).
template <typename T>
void lines_to_rows(const T* lines, i64 len, i64 ntaps, T* d, i64 ld) {
    constexpr i64 TB = packed::transpose_block<T>();
    i64 i = 0;
    for (; i + TB <= ntaps; i += TB) packed::transpose_lines(lines + i * len, len, len, d + i, ld);
    for (; i < ntaps; ++i)
        for (i64 q = 0; q < len; ++q) d[q * ld + i] = lines[i * len + q];
}

// lines[i*len + q] = src[q*ld + i]: the inverse, TB positions at a time.
template <typename T>
void rows_to_lines(const T* src, i64 ld, i64 len, i64 ntaps, T* lines) {
    constexpr i64 TB = packed::transpose_block<T>();
    i64 q = 0;
    for (; q + TB <= len; q += TB) packed::transpose_lines(src + q * ld, ld, ntaps, lines + q, len);
    for (; q < len; ++q)
        for (i64 i = 0; i < ntaps; ++i) lines[i * len + q] = src[q * ld + i];
}
}  // namespace

// Threads over (image, block of positions): each writes its own rows of col.
template <typename T>
void im2col(const T* x, T* col, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
    const i64 nblk = (P + kTilePos - 1) / kTilePos;
#pragma omp parallel
    {
        std::vector<T>& lines = packed::scratch<T>(2);
        if ((i64)lines.size() < kTileTaps * kTilePos) lines.resize(kTileTaps * kTilePos);
#pragma omp for schedule(dynamic)
        for (i64 t = 0; t < s.N * nblk; ++t) {
            const i64 n = t / nblk, j0 = (t % nblk) * kTilePos, len = std::min(kTilePos, P - j0);
            T* out = col + (n * P + j0) * CRS;
            for (i64 t0 = 0; t0 < CRS; t0 += kTileTaps) {
                const i64 nt = std::min(kTileTaps, CRS - t0);
                for (i64 i = 0; i < nt; ++i) {
                    const i64 crs = t0 + i, c = crs / KK, r = crs % KK;
                    patch_row(x + (n * s.C + c) * HW, s, r / s.KW, r % s.KW, j0, len, lines.data() + i * len);
                }
                lines_to_rows(lines.data(), len, nt, out + t0, CRS);
            }
        }
    }
}

// Threads over (image, group of channels): a task owns its planes, so no two threads write one element; it reads
// the group's columns of col (at least 16 taps: whole cache lines) a block of positions at a time.
template <typename T>
void col2im(const T* col, T* x, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
    const i64 cg = std::max<i64>(1, std::min<i64>(s.C, kTileTaps / KK));  // channels per task
    const i64 ngrp = (s.C + cg - 1) / cg;
#pragma omp parallel
    {
        std::vector<T>& lines = packed::scratch<T>(2);
        if ((i64)lines.size() < cg * KK * kTilePos) lines.resize(cg * KK * kTilePos);
#pragma omp for schedule(dynamic)
        for (i64 t = 0; t < s.N * ngrp; ++t) {
            const i64 n = t / ngrp, c0 = (t % ngrp) * cg, nc = std::min(cg, s.C - c0), ntaps = nc * KK;
            T* planes = x + (n * s.C + c0) * HW;
            std::fill(planes, planes + nc * HW, T(0));
            for (i64 j0 = 0; j0 < P; j0 += kTilePos) {
                const i64 len = std::min(kTilePos, P - j0);
                rows_to_lines(col + (n * P + j0) * CRS + c0 * KK, CRS, len, ntaps, lines.data());
                for (i64 i = 0; i < ntaps; ++i)
                    patch_row_add(planes + (i / KK) * HW, s, (i % KK) / s.KW, i % s.KW, j0, len,
                                  lines.data() + i * len);
            }
        }
    }
}

template void im2col<float>(const float*, float*, const ConvShape&);
template void im2col<double>(const double*, double*, const ConvShape&);
template void col2im<float>(const float*, float*, const ConvShape&);
template void col2im<double>(const double*, double*, const ConvShape&);

}  // namespace fastnn
