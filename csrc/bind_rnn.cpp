// _C bindings of the rnn family (rnn_cell, rnn, gru_cell, gru).
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_rnn(py::module_& m) {
    (void)m;
}

}  // namespace bind
}  // namespace fastnn
