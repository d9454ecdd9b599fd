// _C.max_pool2d_fwd / _bwd, _C.avg_pool2d_fwd / _bwd (with an optional forced variant: algo=, "" = the rule), and
// the queries pool2d_algo (the variant a pass would run) and pool2d_algos (every variant's name).
#include "bind.h"

namespace fastnn {
namespace bind {

static PoolShape pool_shape(const Shape4& in, Pair ks, Pair st, Pair pd) {
    PoolShape s{in[0], in[1], in[2], in[3], ks[0], ks[1], st[0], st[1], pd[0], pd[1], 0, 0};
    if (s.N < 0 || s.C < 0 || s.H <= 0 || s.W <= 0 || ks[0] <= 0 || ks[1] <= 0 || st[0] <= 0 || st[1] <= 0 ||
        pd[0] < 0 || pd[1] < 0 || 2 * pd[0] > ks[0] || 2 * pd[1] > ks[1])
        throw py::value_error("invalid pooling parameters");
    s.OH = out_size(s.H, ks[0], st[0], pd[0], 1);
    s.OW = out_size(s.W, ks[1], st[1], pd[1], 1);
    if (s.OH <= 0 || s.OW <= 0) throw py::value_error("pooling output size must be > 0");
    return s;
}

void bind_pool2d(py::module_& m) {
    m.def("max_pool2d_fwd", [](py::array x, py::array y, py::array idx, Pair ks, Pair st, Pair pd,
                               const std::string& algo) {
        auto s = pool_shape(shape4(x, "x"), ks, st, pd);
        const Pool2dAlgo a = algo_from_name<Pool2dAlgo>(algo);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            i64 n = s.N * s.C * s.OH * s.OW;
            auto px = ptr<T>(x, "x", x.size()); auto py_ = ptr<T>(y, "y", n, true);
            auto pi = ptr<i64>(idx, "indices", n, true);
            NoGil nogil(x.size());
            max_pool2d_fwd<T>(px, py_, pi, s, a);
        });
    }, py::arg("x"), py::arg("y"), py::arg("idx"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
       py::arg("algo") = "");
    m.def("max_pool2d_bwd", [](py::array dy, py::array idx, py::array dx) {
        // Scatter by index: only the plane sizes matter (window fields stay 0).
        auto in = shape4(dx, "dx");
        if (dy.ndim() != 4 || dy.shape(0) != in[0] || dy.shape(1) != in[1]) throw py::value_error("dy: shape mismatch");
        PoolShape s{in[0], in[1], in[2], in[3], 0, 0, 0, 0, 0, 0, dy.shape(2), dy.shape(3)};
        dispatch(dy, [&](auto z) {
            using T = decltype(z);
            i64 n = s.N * s.C * s.OH * s.OW;
            auto pdy = ptr<T>(dy, "dy", n); auto pi = ptr<i64>(idx, "indices", n);
            auto pdx = ptr<T>(dx, "dx", dx.size(), true);
            NoGil nogil(dx.size());
            max_pool2d_bwd<T>(pdy, pi, pdx, s);  // the kernel must bounds-check indices against H*W
        });
    });
    m.def("avg_pool2d_fwd", [](py::array x, py::array y, Pair ks, Pair st, Pair pd, bool cip, const std::string& algo) {
        auto s = pool_shape(shape4(x, "x"), ks, st, pd);
        const Pool2dAlgo a = algo_from_name<Pool2dAlgo>(algo);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", x.size()); auto py_ = ptr<T>(y, "y", s.N * s.C * s.OH * s.OW, true);
            NoGil nogil(x.size());
            avg_pool2d_fwd<T>(px, py_, s, cip, a);
        });
    }, py::arg("x"), py::arg("y"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
       py::arg("count_include_pad"), py::arg("algo") = "");
    m.def("avg_pool2d_bwd", [](py::array dy, py::array dx, Pair ks, Pair st, Pair pd, bool cip,
                               const std::string& algo) {
        auto s = pool_shape(shape4(dx, "dx"), ks, st, pd);
        const Pool2dAlgo a = algo_from_name<Pool2dAlgo>(algo);
        dispatch(dy, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", s.N * s.C * s.OH * s.OW); auto pdx = ptr<T>(dx, "dx", dx.size(), true);
            NoGil nogil(dx.size());
            avg_pool2d_bwd<T>(pdy, pdx, s, cip, a);
        });
    }, py::arg("dy"), py::arg("dx"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
       py::arg("count_include_pad"), py::arg("algo") = "");

    // pass: "max" (max forward), "avg" (average forward) or "avg_backward"; the max backward has no variants.
    m.def("pool2d_algo", [](const std::string& pass, Shape4 xs, Pair ks, Pair st, Pair pd, py::object dtype) {
        const PoolPass p = pass == "max" ? PoolPass::max_fwd : pass == "avg" ? PoolPass::avg_fwd
                           : pass == "avg_backward" ? PoolPass::avg_bwd
                           : throw py::value_error("pool2d_algo: pass must be 'max', 'avg' or 'avg_backward'");
        const PoolShape s = pool_shape(xs, ks, st, pd);
        const py::dtype d = py::dtype::from_args(dtype);
        if (d.equal(py::dtype::of<float>())) return std::string(algo_name(pool2d_algo<float>(p, s)));
        if (d.equal(py::dtype::of<double>())) return std::string(algo_name(pool2d_algo<double>(p, s)));
        throw py::type_error("expected float32 or float64, got " + py::str(d).cast<std::string>());
    }, "the variant a pooling pass would run (pass, x shape, kernel_size, stride, padding, dtype)");
    m.def("pool2d_algos", &algo_names<Pool2dAlgo>);
}

}  // namespace bind
}  // namespace fastnn
