// _C bindings of the activations family (relu, sigmoid, tanh, softmax and the losses). The wrapper
// (fastnn/_cpu.py) validates and allocates; sizes here come from the arrays themselves.
#include <cstdint>

#include "activations.h"
#include "bind.h"

namespace fastnn {
namespace bind {
namespace {

Pointwise pointwise(const std::string& op) {
    if (op == "relu") return Pointwise::relu;
    if (op == "sigmoid") return Pointwise::sigmoid;
    if (op == "tanh") return Pointwise::tanh;
    throw py::value_error("unknown activation '" + op + "'");
}

// Call f(L{}) with L the label type of `t`: int32 or int64.
template <typename F>
void dispatch_labels(const py::array& t, F&& f) {
    if (py::isinstance<py::array_t<std::int32_t>>(t)) f(std::int32_t{});
    else if (py::isinstance<py::array_t<std::int64_t>>(t)) f(std::int64_t{});
    else throw py::type_error("target: expected int32 or int64 labels, got " + py::str(t.dtype()).cast<std::string>());
}

// The error every backend raises for a label outside [0, V) (fastnn/_checks.py bad_label words it the same).
[[noreturn]] void bad_label(const py::array& t, i64 pos, i64 V, i64 ignore) {
    const py::object v = t.attr("reshape")(-1).attr("__getitem__")(pos);
    throw py::value_error("target: label " + py::str(v).cast<std::string>() + " at position " + std::to_string(pos) +
                          " is outside [0, " + std::to_string(V) + ") and is not ignore_index (" +
                          std::to_string(ignore) + ")");
}

}  // namespace

void bind_activations(py::module_& m) {
    // op: "relu", "sigmoid" or "tanh". y = op(x); the backward dx = dy * op'(y).
    m.def("act_fwd", [](const std::string& op, py::array x, py::array y) {
        const Pointwise p = pointwise(op);
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            const i64 n = x.size();
            auto px = ptr<T>(x, "x", n); auto py_ = ptr<T>(y, "y", n, true);
            NoGil nogil(n);
            act_forward<T>(p, px, py_, n);
        });
    });
    m.def("act_bwd", [](const std::string& op, py::array dy, py::array y, py::array dx) {
        const Pointwise p = pointwise(op);
        dispatch(y, [&](auto z) {
            using T = decltype(z);
            const i64 n = y.size();
            auto pdy = ptr<T>(dy, "dy", n); auto py_ = ptr<T>(y, "y", n); auto pdx = ptr<T>(dx, "dx", n, true);
            NoGil nogil(n);
            act_backward<T>(p, pdy, py_, pdx, n);
        });
    });
    // Rows of V: the last axis.
    m.def("softmax_fwd", [](py::array x, py::array y, i64 V) {
        if (V <= 0 || x.size() % V) throw py::value_error("softmax: invalid row length");
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            const i64 n = x.size();
            auto px = ptr<T>(x, "x", n); auto py_ = ptr<T>(y, "y", n, true);
            NoGil nogil(n);
            softmax_fwd<T>(px, py_, n / V, V);
        });
    });
    m.def("softmax_bwd", [](py::array dy, py::array y, py::array dx, i64 V) {
        if (V <= 0 || y.size() % V) throw py::value_error("softmax_backward: invalid row length");
        dispatch(y, [&](auto z) {
            using T = decltype(z);
            const i64 n = y.size();
            auto pdy = ptr<T>(dy, "dy", n); auto py_ = ptr<T>(y, "y", n); auto pdx = ptr<T>(dx, "dx", n, true);
            NoGil nogil(n);
            softmax_bwd<T>(pdy, py_, pdx, n / V, V);
        });
    });
    // target: int32/int64 labels (R,) or a dense (R, V) array of x's dtype. Returns the loss.
    m.def("softmax_xent_fwd", [](py::array x, py::array target, py::array probs, i64 V, i64 ignore, double eps) {
        if (V <= 0 || x.size() % V) throw py::value_error("softmax_cross_entropy: invalid row length");
        const i64 n = x.size(), R = n / V;
        double loss = 0;
        i64 bad = -1;
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", n); auto pp = ptr<T>(probs, "probs", n, true);
            if (target.size() == n && py::isinstance<py::array_t<T>>(target)) {
                auto pt = ptr<T>(target, "target", n);
                NoGil nogil(n);
                loss = softmax_xent_dense_fwd<T>(px, pt, pp, R, V, eps);
                return;
            }
            dispatch_labels(target, [&](auto l) {
                using L = decltype(l);
                auto pt = ptr<L>(target, "target", R);
                NoGil nogil(n);
                loss = softmax_xent_fwd<T, L>(px, pt, pp, R, V, ignore, eps, &bad);
            });
        });
        if (bad >= 0) bad_label(target, bad, V, ignore);
        return loss;
    });
    m.def("softmax_xent_bwd", [](py::array probs, py::array target, py::array dx, i64 V, double dloss, i64 ignore) {
        if (V <= 0 || probs.size() % V) throw py::value_error("softmax_cross_entropy_backward: invalid row length");
        const i64 n = probs.size(), R = n / V;
        i64 bad = -1;
        dispatch(probs, [&](auto z) {
            using T = decltype(z);
            auto pp = ptr<T>(probs, "probs", n); auto pdx = ptr<T>(dx, "dx", n, true);
            if (target.size() == n && py::isinstance<py::array_t<T>>(target)) {
                auto pt = ptr<T>(target, "target", n);
                NoGil nogil(n);
                softmax_xent_dense_bwd<T>(pp, pt, pdx, R, V, dloss);
                return;
            }
            dispatch_labels(target, [&](auto l) {
                using L = decltype(l);
                auto pt = ptr<L>(target, "target", R);
                NoGil nogil(n);
                softmax_xent_bwd<T, L>(pp, pt, pdx, R, V, dloss, ignore, &bad);
            });
        });
        if (bad >= 0) bad_label(target, bad, V, ignore);
    });
    // target of x's shape: x's dtype, int32 or int64.
    m.def("sigmoid_xent_fwd", [](py::array x, py::array target, py::array y, double eps) {
        const i64 n = x.size();
        double loss = 0;
        dispatch(x, [&](auto z) {
            using T = decltype(z);
            auto px = ptr<T>(x, "x", n); auto py_ = ptr<T>(y, "y", n, true);
            if (py::isinstance<py::array_t<T>>(target)) {
                auto pt = ptr<T>(target, "target", n);
                NoGil nogil(n);
                loss = sigmoid_xent_fwd<T, T>(px, pt, py_, n, eps);
                return;
            }
            dispatch_labels(target, [&](auto l) {
                using L = decltype(l);
                auto pt = ptr<L>(target, "target", n);
                NoGil nogil(n);
                loss = sigmoid_xent_fwd<T, L>(px, pt, py_, n, eps);
            });
        });
        return loss;
    });
    m.def("sigmoid_xent_bwd", [](py::array y, py::array target, py::array dx, double dloss) {
        const i64 n = y.size();
        dispatch(y, [&](auto z) {
            using T = decltype(z);
            auto py_ = ptr<T>(y, "y", n); auto pdx = ptr<T>(dx, "dx", n, true);
            if (py::isinstance<py::array_t<T>>(target)) {
                auto pt = ptr<T>(target, "target", n);
                NoGil nogil(n);
                sigmoid_xent_bwd<T, T>(py_, pt, pdx, n, dloss);
                return;
            }
            dispatch_labels(target, [&](auto l) {
                using L = decltype(l);
                auto pt = ptr<L>(target, "target", n);
                NoGil nogil(n);
                sigmoid_xent_bwd<T, L>(py_, pt, pdx, n, dloss);
            });
        });
    });
}

}  // namespace bind
}  // namespace fastnn
