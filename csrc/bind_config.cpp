// _C.config (what runs on this machine) and the thread count.
#include "bind.h"
#include "simd.h"

namespace fastnn {
namespace bind {

void bind_config(py::module_& m) {
    m.def("config", [] {
        py::dict d;
        d["simd"] = simd_variant();
        d["avx2_fma"] = has_avx2_fma();
#if defined(__clang__)
        d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
        d["compiler"] = "g++ " __VERSION__;
#else
        d["compiler"] = "unknown";
#endif
        return d;
    });
    m.def("set_num_threads", &set_num_threads);
    m.def("get_num_threads", &get_num_threads);
}

}  // namespace bind
}  // namespace fastnn
