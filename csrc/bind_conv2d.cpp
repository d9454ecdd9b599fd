// _C.conv2d_fwd / _C.conv2d_bwd (with an optional forced variant: algo=, dw_algo=, dx_algo=; "" = the rule), and
// the queries: conv2d_fwd_algo / conv2d_dw_algo / conv2d_dx_algo (the variant a call would run) and
// conv2d_fwd_algos / conv2d_dw_algos / conv2d_dx_algos (every variant's name).
#include "bind.h"

namespace fastnn {
namespace bind {

static ConvShape conv_shape_of(const Shape4& x, const Shape4& w, Pair st, Pair pd, Pair dl, i64 groups) {
    if (w[1] * groups != x[1]) throw py::value_error("weight.shape[1] * groups must equal x.shape[1]");
    return conv_shape({x[0], 0}, x[1], x[2], x[3], w[0], {w[2], w[3]}, st, pd, dl, groups);
}

static ConvShape conv_shape_of(const py::array& x, const py::array& w, Pair st, Pair pd, Pair dl, i64 groups) {
    if (x.ndim() != 4 || w.ndim() != 4) throw py::value_error("x and weight must be 4-D");
    return conv_shape_of(Shape4{x.shape(0), x.shape(1), x.shape(2), x.shape(3)},
                         Shape4{w.shape(0), w.shape(1), w.shape(2), w.shape(3)}, st, pd, dl, groups);
}

// The name of what `rule<T>(s)` returns for the dtype `dt` (float32 or float64).
template <class Rule>
static std::string algo_query(const py::object& dt, const ConvShape& s, Rule rule) {
    const py::dtype d = py::dtype::from_args(dt);
    if (d.equal(py::dtype::of<float>())) return algo_name(rule(float{}, s));
    if (d.equal(py::dtype::of<double>())) return algo_name(rule(double{}, s));
    throw py::type_error("expected float32 or float64, got " + py::str(d).cast<std::string>());
}

void bind_conv2d(py::module_& m) {
    m.def("conv2d_fwd", [](py::array x, py::array w, py::object b, py::array y, Pair st, Pair pd, Pair dl, i64 groups,
                           const std::string& algo) {
        auto s = conv_shape_of(x, w, st, pd, dl, groups);
        const Conv2dFwdAlgo a = algo_from_name<Conv2dFwdAlgo>(algo);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size()); auto pw = ptr<T>(w, "weight", w.size());
            auto pb = opt_ptr<T>(b, "bias", s.K);
            auto py_ = ptr<T>(y, "y", s.N * s.K * s.OH * s.OW, true);
            py::gil_scoped_release nogil;
            conv2d_fwd<T>(px, pw, pb, py_, s, a);
        });
    }, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("stride"), py::arg("padding"),
       py::arg("dilation"), py::arg("groups"), py::arg("algo") = "");
    m.def("conv2d_bwd", [](py::array dy, py::array x, py::array w, py::array dx, py::array dw, py::array db, Pair st,
                           Pair pd, Pair dl, i64 groups, const std::string& dw_algo, const std::string& dx_algo) {
        auto s = conv_shape_of(x, w, st, pd, dl, groups);
        const Conv2dDwAlgo dwa = algo_from_name<Conv2dDwAlgo>(dw_algo);
        const Conv2dDxAlgo dxa = algo_from_name<Conv2dDxAlgo>(dx_algo);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", s.N * s.K * s.OH * s.OW);
            auto px = ptr<T>(x, "x", x.size()); auto pw = ptr<T>(w, "weight", w.size());
            auto pdx = ptr<T>(dx, "dx", x.size(), true); auto pdw = ptr<T>(dw, "dweight", w.size(), true);
            auto pdb = ptr<T>(db, "dbias", s.K, true);
            py::gil_scoped_release nogil;
            conv2d_bwd<T>(pdy, px, pw, pdx, pdw, pdb, s, dwa, dxa);
        });
    }, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("dx"), py::arg("dw"), py::arg("db"), py::arg("stride"),
       py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("dw_algo") = "", py::arg("dx_algo") = "");

    m.def("conv2d_fwd_algo", [](Shape4 xs, Shape4 ws, Pair st, Pair pd, Pair dl, i64 groups, py::object dtype) {
        return algo_query(dtype, conv_shape_of(xs, ws, st, pd, dl, groups),
                          [](auto z, const ConvShape& s) { return conv2d_fwd_algo<decltype(z)>(s); });
    }, "the forward variant conv2d_fwd would run (x and weight shapes, stride, padding, dilation, groups, dtype)");
    m.def("conv2d_dw_algo", [](Shape4 xs, Shape4 ws, Pair st, Pair pd, Pair dl, i64 groups, py::object dtype) {
        return algo_query(dtype, conv_shape_of(xs, ws, st, pd, dl, groups),
                          [](auto z, const ConvShape& s) { return conv2d_dw_algo<decltype(z)>(s); });
    }, "the dweight variant conv2d_bwd would run");
    m.def("conv2d_dx_algo", [](Shape4 xs, Shape4 ws, Pair st, Pair pd, Pair dl, i64 groups, py::object dtype) {
        return algo_query(dtype, conv_shape_of(xs, ws, st, pd, dl, groups),
                          [](auto z, const ConvShape& s) { return conv2d_dx_algo<decltype(z)>(s); });
    }, "the dx variant conv2d_bwd would run");
    m.def("conv2d_fwd_algos", &algo_names<Conv2dFwdAlgo>);
    m.def("conv2d_dw_algos", &algo_names<Conv2dDwAlgo>);
    m.def("conv2d_dx_algos", &algo_names<Conv2dDxAlgo>);
}

}  // namespace bind
}  // namespace fastnn
