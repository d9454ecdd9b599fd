// _C.im2col and _C.col2im.
#include "bind.h"

namespace fastnn {
namespace bind {

void bind_im2col(py::module_& m) {
    m.def("im2col", [](py::array x, py::array col, Pair ks, Pair st, Pair pd, Pair dl) {
        auto in = shape4(x, "x");
        auto s = conv_shape({in[0], 0}, in[1], in[2], in[3], 1, ks, st, pd, dl, 1);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size());
            auto pc = ptr<T>(col, "col", s.N * s.OH * s.OW * s.C * s.KH * s.KW, true);
            py::gil_scoped_release nogil;
            im2col<T>(px, pc, s);
        });
    });
    m.def("col2im", [](py::array col, py::array x, Pair ks, Pair st, Pair pd, Pair dl) {
        auto in = shape4(x, "x");
        auto s = conv_shape({in[0], 0}, in[1], in[2], in[3], 1, ks, st, pd, dl, 1);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pc = ptr<T>(col, "col", s.N * s.OH * s.OW * s.C * s.KH * s.KW);
            auto px = ptr<T>(x, "x", x.size(), true);
            py::gil_scoped_release nogil;
            col2im<T>(pc, px, s);
        });
    });
}

}  // namespace bind
}  // namespace fastnn
