// Row helpers of the (virtual) im2col matrix, shared by im2col.cpp and conv2d.cpp (internal header).
// For one input plane and one kernel tap (kh, kw), output positions j = oh*OW + ow map to input (ih, iw) =
// (oh*sh - ph + kh*dh, ow*sw - pw + kw*dw). Within an output row the valid ow form one interval, so a run is
// zeros | a (strided) copy | zeros — no per-element bounds test.
#pragma once
#include <algorithm>
#include <cstring>

#include "fastnn.h"

namespace fastnn {

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
            if (s.sw == 1) for (i64 q = a; q < b; ++q) o[q - ow] = row[q + off];  // short runs: no memcpy call
            else for (i64 q = a; q < b; ++q) o[q - ow] = row[q * s.sw + off];
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
