// _C bindings of the dense family (linear, embedding, dropout).
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_dense(py::module_& m) {
    (void)m;
}

}  // namespace bind
}  // namespace fastnn
