// CPU feature detection, once: which kernel variant runs. FASTNN_SIMD=scalar forces the portable fallback
// (so the tests can check it on an AVX2 machine).
#include <cstdlib>
#include <cstring>

#include "simd.h"

namespace fastnn {

static bool detect() {
    const char* force = std::getenv("FASTNN_SIMD");
    if (force && std::strcmp(force, "scalar") == 0) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

bool has_avx2_fma() {
    static const bool yes = detect();
    return yes;
}

namespace packed {
// AVX-512F doubles the FMA width where the CPU has it; FASTNN_SIMD=avx2 (or scalar) keeps the narrower kernels.
// Declared in simd.h. __builtin_cpu_supports also checks that the
// OS saves the zmm state.
static bool detect_avx512() {
    const char* force = std::getenv("FASTNN_SIMD");
    if (force && (std::strcmp(force, "scalar") == 0 || std::strcmp(force, "avx2") == 0)) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return has_avx2_fma() && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}
bool has_avx512f() {
    static const bool yes = detect_avx512();
    return yes;
}
}  // namespace packed

const char* simd_variant() { return packed::has_avx512f() ? "avx512f" : has_avx2_fma() ? "avx2_fma" : "scalar"; }

}  // namespace fastnn
