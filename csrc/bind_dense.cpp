// _C bindings of the dense family (linear, embedding, dropout). The Python side (fastnn/_cpu.py) validates and
// allocates; these checks only keep a wrong call from reading or writing out of bounds.
#include "bind.h"
#include "dense.h"

namespace fastnn {
namespace bind {

// Call f(I{}) with I = int32 or int64, the dtype of the index array.
template <typename F>
static void dispatch_index(const py::array& a, F&& f) {
    if (py::isinstance<py::array_t<std::int32_t>>(a)) f(std::int32_t{});
    else if (py::isinstance<py::array_t<std::int64_t>>(a)) f(std::int64_t{});
    else throw py::type_error("indices must be int32 or int64, got " + py::str(a.dtype()).cast<std::string>());
}

void bind_dense(py::module_& m) {
    // x (N, D), w (D, M), b (M) or None, y (N, M)
    m.def("linear_fwd", [](py::array x, py::array w, py::object b, py::array y, int algo) {
        if (x.ndim() != 2 || w.ndim() != 2 || y.ndim() != 2) throw py::value_error("linear: 2-D operands");
        const i64 N = x.shape(0), D = x.shape(1), M = w.shape(1);
        if (w.shape(0) != D || y.shape(0) != N || y.shape(1) != M) throw py::value_error("linear: shapes differ");
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", N * D); auto pw = ptr<T>(w, "weight", D * M);
            auto pb = opt_ptr<T>(b, "bias", M); auto py_ = ptr<T>(y, "y", N * M, true);
            py::gil_scoped_release nogil;
            linear_fwd<T>(px, pw, pb, py_, N, D, M, algo);
        });
    });
    // dy (N, M), x (N, D), w (D, M) -> dx (N, D), dw (D + with_bias, M): row D of dw receives dbias
    m.def("linear_bwd", [](py::array dy, py::array x, py::array w, py::array dx, py::array dw, bool with_bias,
                           int algo) {
        if (x.ndim() != 2 || w.ndim() != 2) throw py::value_error("linear: 2-D operands");
        const i64 N = x.shape(0), D = x.shape(1), M = w.shape(1);
        if (w.shape(0) != D) throw py::value_error("linear: shapes differ");
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto pdy = ptr<T>(dy, "dy", N * M); auto px = ptr<T>(x, "x", N * D); auto pw = ptr<T>(w, "weight", D * M);
            auto pdx = ptr<T>(dx, "dx", N * D, true); auto pdw = ptr<T>(dw, "dweight", (D + with_bias) * M, true);
            py::gil_scoped_release nogil;
            linear_bwd<T>(pdy, px, pw, pdx, pdw, N, D, M, with_bias, algo);
        });
    });
    // indices (any shape, N elements), w (V, D), y (N*D elements)
    m.def("embedding_fwd", [](py::array idx, py::array w, py::array y) {
        if (w.ndim() != 2) throw py::value_error("embedding: weight must be 2-D");
        const i64 N = idx.size(), V = w.shape(0), D = w.shape(1);
        dispatch_index(idx, [&](auto zi) {
            using I = decltype(zi);
            dispatch(w, [&](auto z) {
                using T = decltype(z);
                auto pi = ptr<I>(idx, "indices", N); auto pw = ptr<T>(w, "weight", V * D);
                auto py_ = ptr<T>(y, "y", N * D, true);
                py::gil_scoped_release nogil;
                embedding_fwd<I, T>(pi, pw, py_, N, V, D);
            });
        });
    });
    // dy (N*D elements), indices (N), dw (V, D)
    m.def("embedding_bwd", [](py::array dy, py::array idx, py::array dw) {
        if (dw.ndim() != 2) throw py::value_error("embedding: dweight must be 2-D");
        const i64 N = idx.size(), V = dw.shape(0), D = dw.shape(1);
        dispatch_index(idx, [&](auto zi) {
            using I = decltype(zi);
            dispatch(dw, [&](auto z) {
                using T = decltype(z);
                auto pdy = ptr<T>(dy, "dy", N * D); auto pi = ptr<I>(idx, "indices", N);
                auto pdw = ptr<T>(dw, "dweight", V * D, true);
                py::gil_scoped_release nogil;
                embedding_bwd<I, T>(pdy, pi, pdw, N, V, D);
            });
        });
    });
    // y = x * keep * s; keep from (seed, thr) or from mask (bool or x's dtype, same size)
    m.def("dropout", [](py::array x, py::array y, std::uint64_t seed, std::uint64_t thr, double s, py::object mask) {
        const i64 n = x.size();
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", n); auto py_ = ptr<T>(y, "y", n, true);
            const std::uint8_t* mb = nullptr;
            const T* mf = nullptr;
            if (!mask.is_none()) {
                auto ma = mask.cast<py::array>();
                if (py::isinstance<py::array_t<bool>>(ma)) mb = ptr<std::uint8_t>(ma.view("uint8"), "mask", n);
                else mf = ptr<T>(ma, "mask", n);
            }
            NoGil nogil(n);
            dropout_apply<T>(px, py_, n, seed, thr, T(s), mb, mf);
        });
    });
    m.def("dropout_key", &dropout_key);
    // out: float64 (np.random.rand's draws) or bool (draw > p), C-contiguous; state: MT19937().ctypes.state_address
    m.def("mt19937_rand", [](std::uintptr_t state, py::array out, double p) {
        const i64 n = out.size();
        double* u = nullptr;
        std::uint8_t* keep = nullptr;
        if (py::isinstance<py::array_t<bool>>(out)) keep = ptr<std::uint8_t>(out.view("uint8"), "out", n, true);
        else u = ptr<double>(out, "out", n, true);
        bool ok;
        {
            py::gil_scoped_release nogil;
            ok = mt19937_rand(reinterpret_cast<MT19937State*>(state), n, u, keep, p);
        }
        if (!ok) throw py::value_error("mt19937_rand: the state's position is outside [0, 624]");
    });
}

}  // namespace bind
}  // namespace fastnn
