// im2col / col2im in the public layout of docs/internals.md: col is (N*OH*OW, C*KH*KW), row (n*OH+oh)*OW+ow,
// column (c*KH+kh)*KW+kw; padding reads 0; col2im sums overlapping windows.
//
// Reference (what both compute, one element at a time):
//   for n, oh, ow, c, kh, kw:  ih = oh*sh - ph + kh*dh, iw = ow*sw - pw + kw*dw
//       col[(n*OH+oh)*OW+ow, (c*KH+kh)*KW+kw]  =  x[n,c,ih,iw] if inside else 0      (im2col)
//       x[n,c,ih,iw] += col[...] if inside                                            (col2im, x zeroed first)
// Both kernels work one tap (c, kh, kw) at a time on a run of output positions (patch_row in im2col.h): a run is
// zeros | memcpy | zeros, and only the transpose into/out of the row-major col is strided.
#include <algorithm>
#include <vector>

#include "gemm_packed.h"
#include "im2col.h"

namespace fastnn {

// Threads over (image, block of output rows): each writes its own rows of col. The block (rows x CRS) is kept
// around 64 KiB so the strided transpose stays in L1/L2.
template <typename T>
void im2col(const T* x, T* col, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
    const i64 rows = std::max<i64>(1, std::min<i64>(s.OH, 16384 / std::max<i64>(1, s.OW * CRS)));
    const i64 nblk = (s.OH + rows - 1) / rows;
#pragma omp parallel
    {
        std::vector<T>& line = packed::scratch<T>(2);
        if ((i64)line.size() < rows * s.OW) line.resize(rows * s.OW);
#pragma omp for schedule(static)
        for (i64 t = 0; t < s.N * nblk; ++t) {
            const i64 n = t / nblk, oh0 = (t % nblk) * rows, oh1 = std::min(s.OH, oh0 + rows);
            const i64 j0 = oh0 * s.OW, len = (oh1 - oh0) * s.OW;
            T* out = col + (n * P + j0) * CRS;
            for (i64 c = 0; c < s.C; ++c)
                for (i64 kh = 0; kh < s.KH; ++kh)
                    for (i64 kw = 0; kw < s.KW; ++kw) {
                        const i64 crs = c * KK + kh * s.KW + kw;
                        patch_row(x + (n * s.C + c) * HW, s, kh, kw, j0, len, line.data());
                        for (i64 q = 0; q < len; ++q) out[q * CRS + crs] = line[q];
                    }
        }
    }
}

// Threads over (n, c) planes: a plane gathers every tap that lands in it, so no two threads write one element.
template <typename T>
void col2im(const T* col, T* x, const ConvShape& s) {
    const i64 P = s.OH * s.OW, KK = s.KH * s.KW, CRS = s.C * KK, HW = s.H * s.W;
#pragma omp parallel
    {
        std::vector<T>& line = packed::scratch<T>(2);
        if ((i64)line.size() < P) line.resize(P);
#pragma omp for schedule(static)
        for (i64 t = 0; t < s.N * s.C; ++t) {
            const i64 n = t / s.C, c = t % s.C;
            T* plane = x + t * HW;
            std::fill(plane, plane + HW, T(0));
            for (i64 kh = 0; kh < s.KH; ++kh)
                for (i64 kw = 0; kw < s.KW; ++kw) {
                    const T* in = col + n * P * CRS + c * KK + kh * s.KW + kw;
                    for (i64 q = 0; q < P; ++q) line[q] = in[q * CRS];
                    patch_row_add(plane, s, kh, kw, 0, P, line.data());
                }
        }
    }
}

template void im2col<float>(const float*, float*, const ConvShape&);
template void im2col<double>(const double*, double*, const ConvShape&);
template void col2im<float>(const float*, float*, const ConvShape&);
template void col2im<double>(const double*, double*, const ConvShape&);

}  // namespace fastnn
