// SIMD targets and CPU features, in one place (internal header of the kernels; the public declarations are in
// fastnn.h).
//
// The build uses portable flags only (no native-arch tuning, no fast math): each AVX2/AVX-512 kernel carries a
// function-level target attribute and is chosen at run time from the features detected once at load time
// (cpu_features.cpp), with a portable fallback. FASTNN_SIMD=scalar (or avx2) switches the wider variants off, so
// the tests can check the fallbacks on a machine that has AVX-512.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FASTNN_X86 1
#endif

// Target attribute strings (also for macros that build a kernel per target, gemm.cpp) and the attributes.
#define FASTNN_TARGET_AVX2 "avx2,fma"
#define FASTNN_TARGET_AVX512 "avx512f"
#define FASTNN_AVX2 __attribute__((target(FASTNN_TARGET_AVX2)))
#define FASTNN_AVX512 __attribute__((target(FASTNN_TARGET_AVX512)))
// A loop body written once and compiled into each target's copy of its caller.
#define FASTNN_INLINE inline __attribute__((always_inline))

namespace fastnn {

bool has_avx2_fma();         // CPUID + OS support for AVX2 and FMA, and FASTNN_SIMD not "scalar"
const char* simd_variant();  // "avx512f", "avx2_fma" or "scalar": the widest kernels in use

namespace packed {
bool has_avx512f();  // CPU + OS support, and FASTNN_SIMD not set to "scalar" or "avx2"
}  // namespace packed

}  // namespace fastnn

// A loop body `name##_body` (FASTNN_INLINE) compiled twice: `name(a...)` runs the AVX2/FMA copy when the CPU has
// it, else the baseline copy. Plain elementwise code that the compiler vectorises for each target.
// FASTNN_SIMD_DISPATCH(name) plus `name##_wide(a...)`: an AVX-512 copy where the CPU has it (16 lanes for loops of
// 32-bit integer work, which the AVX2 copy left compute-bound), else `name(a...)`.
#define FASTNN_SIMD_DISPATCH_WIDE(name)                                                                 \
    FASTNN_SIMD_DISPATCH(name)                                                                          \
    template <typename... A> FASTNN_AVX512 void name##__avx512(A&&... a) { name##_body(a...); }        \
    template <typename... A> void name##_wide(A&&... a) {                                               \
        if (packed::has_avx512f()) name##__avx512(a...);                                                \
        else name(a...);                                                                                \
    }

#define FASTNN_SIMD_DISPATCH(name)                                                                    \
    template <typename... A> FASTNN_AVX2 void name##__avx2(A&&... a) { name##_body(a...); }          \
    template <typename... A> void name##__scalar(A&&... a) { name##_body(a...); }                     \
    template <typename... A> void name(A&&... a) {                                                    \
        if (has_avx2_fma()) name##__avx2(a...);                                                       \
        else name##__scalar(a...);                                                                    \
    }
