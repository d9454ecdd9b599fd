// conv2d's variants, one function each (`what__how`), shared between the dispatch (conv2d.cpp: the rule that picks
// one, and the entry points) and the files of each algorithm (internal header):
//   conv2d_direct.cpp    AVX-512 float direct forward and dweight
//   conv2d_winograd.cpp  Winograd F(2x2, 3x3) forward (float, AVX2/FMA or AVX-512)
//   conv2d_gemm.cpp      the implicit GEMMs: polyphase forward (in place or packed), 1x1 forward, GEMM dweight, dx
// Each `*_can_run` says whether a variant can run a call at all (what forcing it needs); the `*_fits` / `*_pays`
// predicates add the cost rule on top and are only called by conv2d.cpp's choice.
#pragma once
#include "fastnn.h"

namespace fastnn {

inline bool is_1x1_p0(const ConvShape& s) { return s.KH == 1 && s.KW == 1 && s.ph == 0 && s.pw == 0; }
inline bool is_1x1_s1_p0(const ConvShape& s) { return is_1x1_p0(s) && s.sh == 1 && s.sw == 1; }

// ---- conv2d_direct.cpp (float, AVX-512) ----
bool direct_can_run(const ConvShape& s);
bool direct_fits(const ConvShape& s);  // direct_can_run and few tile positions past the row ends
bool direct_two_rows(const ConvShape& s);  // its tiles pair output rows (OW 6 to 8)
bool direct_dw_can_run(const ConvShape& s);
void conv2d_fwd__direct(const float* x, const float* w, const float* bias, float* y, const ConvShape& s);
void conv2d_dw__direct(const float* dy, const float* x, float* dw, const ConvShape& s);

// ---- conv2d_winograd.cpp (float, AVX2/FMA or AVX-512) ----
bool winograd_can_run(const ConvShape& s);
bool winograd_fits(const ConvShape& s);  // winograd_can_run, enough channels and tiles
void conv2d_fwd__winograd(const float* x, const float* w, const float* bias, float* y, const ConvShape& s);

// ---- conv2d_gemm.cpp (float and double, any CPU) ----
template <typename T> bool polyphase_packed_can_run(const ConvShape& s);
template <typename T> bool polyphase_packed_pays(const ConvShape& s);
template <typename T> bool polyphase_batch_pays(const ConvShape& s, i64 min_bytes = i64(1) << 20);
template <typename T> bool gemm_1x1_packed_can_run(const ConvShape& s);
template <typename T> bool gemm_1x1_packed_pays(const ConvShape& s);
template <typename T> bool dx_forward_flipped_can_run(const ConvShape& s);
template <typename T> bool dx_forward_flipped_pays(const ConvShape& s);
template <typename T> void conv2d_fwd__polyphase_gemm(const T* x, const T* w, const T* bias, T* y, const ConvShape& s);
template <typename T>
void conv2d_fwd__polyphase_packed(const T* x, const T* w, const T* bias, T* y, const ConvShape& s);
template <typename T>
void conv2d_fwd__polyphase_batch(const T* x, const T* w, const T* bias, T* y, const ConvShape& s);
template <typename T> void conv2d_fwd__gemm_1x1(const T* x, const T* w, const T* bias, T* y, const ConvShape& s);
template <typename T> void conv2d_fwd__gemm_1x1_packed(const T* x, const T* w, const T* bias, T* y, const ConvShape& s);
template <typename T> void conv2d_dw__gemm(const T* dy, const T* x, T* dw, const ConvShape& s);
template <typename T> void conv2d_dx__forward_flipped(const T* dy, const T* w, T* dx, const ConvShape& s);
template <typename T> void conv2d_dx__dcol(const T* dy, const T* w, T* dx, const ConvShape& s);
template <typename T> void conv2d_dx__gemm_1x1(const T* dy, const T* w, T* dx, const ConvShape& s);

}  // namespace fastnn
