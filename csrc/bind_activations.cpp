// _C bindings of the activations family (relu, sigmoid, tanh, softmax and the losses).
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_activations(py::module_& m) {
    (void)m;
}

}  // namespace bind
}  // namespace fastnn
