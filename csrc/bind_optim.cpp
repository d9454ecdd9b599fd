// _C bindings of the optim family (fused optimizer steps).
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_optim(py::module_& m) {
    (void)m;
}

}  // namespace bind
}  // namespace fastnn
