// Row helpers of the (virtual) im2col matrix, shared by im2col.cpp and conv2d.cpp (internal header).
// For one input plane and one kernel tap (kh, kw), output positions j = oh*OW + ow map to input (ih, iw) =
// (oh*sh - ph + kh*dh, ow*sw - pw + kw*dw). Within an output row the valid ow form one interval, so a run is
// zeros | a (strided) copy | zeros — no per-element bounds test.
#pragma once
#include <algorithm>
#include <cstring>

#include "gemm_packed.h"
#include "simd.h"

namespace fastnn {

// d[i] = s[2*i] for i < n: a stride-2 phase row (the 7x7/2 stem's input rows), 16 lanes from two loads.
FASTNN_AVX512 inline void every_other__avx512f(const float* s, float* d, i64 n) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    i64 i = 0;
    for (; i + 17 <= n; i += 16)  // the second load ends at s[2i + 31]: keep it before s[2n - 2], the last one read
        _mm512_storeu_ps(d + i, _mm512_permutex2var_ps(_mm512_loadu_ps(s + 2 * i), even, _mm512_loadu_ps(s + 2 * i + 16)));
    for (; i < n; ++i) d[i] = s[2 * i];
}
// d[i] = s[i] for i < n: 16 lanes and a masked tail, no library call (the 14-float rows of a 14x14 plane went
// through memmove, 3 % of the 256-channel conv).
FASTNN_AVX512 inline void copy_row__avx512f(const float* s, float* d, i64 n) {
    i64 i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
}
// d[i] = s[i] for i < n, through copy_row__avx512f where it runs.
template <typename T>
inline void copy_run(const T* s, T* d, i64 n) {
    if constexpr (std::is_same<T, float>::value)
        if (packed::has_avx512f()) return copy_row__avx512f(s, d, n);
    for (i64 i = 0; i < n; ++i) d[i] = s[i];
}
// d[i] = s[i*stride] for i < n. Stride 1 stays an inline loop: for im2col's 56-float runs the call into the
// AVX-512 copy was 8 % slower (45 -> 49 ms on (32,64,56,56)); the stride-2 permutes made the stem's im2col 19 %
// faster.
template <typename T>
inline void strided_row(const T* s, i64 stride, T* d, i64 n) {
    if constexpr (std::is_same<T, float>::value)
        if (stride == 2 && packed::has_avx512f()) return every_other__avx512f(s, d, n);
    if (stride == 1)
        for (i64 i = 0; i < n; ++i) d[i] = s[i];  // contiguous: the compiler vectorises it
    else
        for (i64 i = 0; i < n; ++i) d[i] = s[i * stride];
}

// Valid ow interval [lo, hi) for tap column kw (iw = ow*sw + off in [0, W)); lo == hi when none is valid.
inline void valid_ow(const ConvShape& s, i64 kw, i64& off, i64& lo, i64& hi) {
    off = kw * s.dw - s.pw;
    lo = off >= 0 ? 0 : (-off + s.sw - 1) / s.sw;
    hi = off > s.W - 1 ? 0 : std::min(s.OW, (s.W - 1 - off) / s.sw + 1);
    lo = std::min(lo, s.OW);
    if (hi < lo) hi = lo;
}

// out[0:len] = patch values of plane `xc` for tap (kh, kw) at output positions j0 .. j0+len-1.
template <typename T>
inline void patch_row(const T* xc, const ConvShape& s, i64 kh, i64 kw, i64 j0, i64 len, T* out) {
    i64 off, lo, hi;
    valid_ow(s, kw, off, lo, hi);
    i64 oh = j0 / s.OW, ow = j0 % s.OW;
    for (i64 done = 0; done < len; ow = 0, ++oh) {
        const i64 n = std::min(s.OW - ow, len - done), end = ow + n;
        T* o = out + done;  // o[q - ow] is the value for column q of this output row
        const i64 ih = oh * s.sh - s.ph + kh * s.dh;
        if (ih < 0 || ih >= s.H) {
            std::fill(o, o + n, T(0));
        } else {
            const T* row = xc + ih * s.W;  // row[q*sw + off] is the input value for column q
            const i64 a = std::clamp(lo, ow, end), b = std::clamp(hi, a, end);
            std::fill(o, o + (a - ow), T(0));
            strided_row(row + a * s.sw + off, s.sw, o + (a - ow), b - a);
            std::fill(o + (b - ow), o + n, T(0));
        }
        done += n;
    }
}

// The adjoint of patch_row: plane xc[ih, iw] += in[j - j0] over the valid positions (col2im of one row).
template <typename T>
inline void patch_row_add(T* xc, const ConvShape& s, i64 kh, i64 kw, i64 j0, i64 len, const T* in) {
    i64 off, lo, hi;
    valid_ow(s, kw, off, lo, hi);
    i64 oh = j0 / s.OW, ow = j0 % s.OW;
    for (i64 done = 0; done < len; ow = 0, ++oh) {
        const i64 n = std::min(s.OW - ow, len - done), end = ow + n;
        const T* v = in + done;  // v[q - ow] belongs to column q
        const i64 ih = oh * s.sh - s.ph + kh * s.dh;
        if (ih >= 0 && ih < s.H) {
            T* row = xc + ih * s.W;
            const i64 a = std::clamp(lo, ow, end), b = std::clamp(hi, a, end);
            if (s.sw == 1) for (i64 q = a; q < b; ++q) row[q + off] += v[q - ow];
            else for (i64 q = a; q < b; ++q) row[q * s.sw + off] += v[q - ow];
        }
        done += n;
    }
}

}  // namespace fastnn
