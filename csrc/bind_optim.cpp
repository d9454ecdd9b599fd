// _C.sgd_step ... _C.adam_step: the fused optimizer steps over lists of arrays (csrc/optim.cpp).
// fastnn/_checks.py has validated the lists; the checks here make sure a wrong call can never touch memory out of
// bounds, and refuse arrays that share memory with an array the step writes (the elements are updated in any
// order, on several threads, so an alias would give an order-dependent result instead of the books' loop's).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bind.h"
#include "optim.h"

namespace fastnn {
namespace bind {
namespace {

// The lists of one call: params, grads, then the rule's state lists (names as the public API calls them).
struct Lists {
    std::vector<py::sequence> seq;
    std::vector<const char*> names;
};

std::string item(const char* list, i64 i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

// Memory one array spans, for the overlap check.
struct Span {
    std::uintptr_t lo, hi;
    bool written;
    int list;
    i64 index;
};

void refuse_overlaps(std::vector<Span>& spans, const Lists& l) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.lo < b.lo; });
    const Span *far_all = nullptr, *far_written = nullptr;  // the spans reaching furthest so far (any / written)
    for (const Span& s : spans) {
        const Span* hit = far_written && s.lo < far_written->hi ? far_written
                          : s.written && far_all && s.lo < far_all->hi ? far_all : nullptr;
        if (hit)
            throw py::value_error(item(l.names[s.list], s.index) + " and " + item(l.names[hit->list], hit->index) +
                                  " share memory: the step updates " + (s.written ? item(l.names[s.list], s.index)
                                  : item(l.names[hit->list], hit->index)) + " in place, so it must not overlap any "
                                  "other argument (the books' loop would update it twice, one array after the other)");
        if (!far_all || s.hi > far_all->hi) far_all = &s;
        if (s.written && (!far_written || s.hi > far_written->hi)) far_written = &s;
    }
}

// Gather the slices of every parameter; grads that are not C-contiguous are copied into `keep`.
template <typename T>
std::vector<OptimSlice<T>> slices(const Lists& l, std::vector<py::object>& keep) {
    const i64 n = py::len(l.seq[0]);
    std::vector<OptimSlice<T>> out(n);
    std::vector<Span> spans;
    spans.reserve(n * l.seq.size());
    for (i64 i = 0; i < n; ++i) {
        T* ptrs[4] = {nullptr, nullptr, nullptr, nullptr};
        i64 size = 0;
        for (size_t k = 0; k < l.seq.size(); ++k) {
            py::object o = l.seq[k][i];
            const bool written = k != 1;
            if (!py::isinstance<py::array_t<T>>(o))
                throw py::type_error(item(l.names[k], i) + ": expected a " + py::str(py::dtype::of<T>()).cast<std::string>() +
                                     " NumPy array like params[0]");
            auto a = py::reinterpret_borrow<py::array>(o);
            if (k == 0) size = a.size();
            if (a.size() != size)
                throw py::value_error(item(l.names[k], i) + ": expected " + std::to_string(size) + " elements like " +
                                      item("params", i) + ", got " + std::to_string(a.size()));
            if (!(a.flags() & py::array::c_style)) {
                if (written)
                    throw py::value_error(item(l.names[k], i) + " is updated in place and must be C-contiguous");
                a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
                keep.push_back(a);
            }
            if (written && !a.writeable())
                throw py::value_error(item(l.names[k], i) + " is updated in place and must be writable");
            ptrs[k] = static_cast<T*>(const_cast<void*>(a.data()));
            if (size > 0) {
                const auto lo = reinterpret_cast<std::uintptr_t>(ptrs[k]);
                spans.push_back({lo, lo + std::uintptr_t(size) * sizeof(T), written, int(k), i});
            }
        }
        out[i] = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], size};
    }
    refuse_overlaps(spans, l);
    return out;
}

void step(OptimRule rule, const Lists& l, const OptimHyper& h) {
    const i64 n = py::len(l.seq[0]);
    for (size_t k = 1; k < l.seq.size(); ++k)
        if (i64(py::len(l.seq[k])) != n)
            throw py::value_error(std::string(l.names[k]) + " has " + std::to_string(py::len(l.seq[k])) +
                                  " arrays but params has " + std::to_string(n));
    if (n == 0) return;
    py::object first = l.seq[0][0];
    if (!py::isinstance<py::array>(first)) throw py::type_error("params[0]: expected a NumPy array");
    std::vector<py::object> keep;
    dispatch(py::reinterpret_borrow<py::array>(first), [&](auto z) {
        using T = decltype(z);
        auto s = slices<T>(l, keep);
        py::gil_scoped_release nogil;
        optim_step<T>(rule, s.data(), i64(s.size()), h);
    });
}

}  // namespace

void bind_optim(py::module_& m) {
    using S = py::sequence;
    m.def("sgd_step", [](S p, S g, double lr) {
        OptimHyper h;
        h.lr = lr;
        step(OptimRule::sgd, {{p, g}, {"params", "grads"}}, h);
    });
    m.def("momentum_step", [](S p, S g, S v, double lr, double momentum) {
        OptimHyper h;
        h.lr = lr, h.momentum = momentum;
        step(OptimRule::momentum, {{p, g, v}, {"params", "grads", "velocities"}}, h);
    });
    m.def("nesterov_step", [](S p, S g, S v, double lr, double momentum) {
        OptimHyper h;
        h.lr = lr, h.momentum = momentum;
        step(OptimRule::nesterov, {{p, g, v}, {"params", "grads", "velocities"}}, h);
    });
    m.def("adagrad_step", [](S p, S g, S sums, double lr, double eps) {
        OptimHyper h;
        h.lr = lr, h.eps = eps;
        step(OptimRule::adagrad, {{p, g, sums}, {"params", "grads", "sums"}}, h);
    });
    m.def("rmsprop_step", [](S p, S g, S sums, double lr, double decay_rate, double eps) {
        OptimHyper h;
        h.lr = lr, h.decay_rate = decay_rate, h.eps = eps;
        step(OptimRule::rmsprop, {{p, g, sums}, {"params", "grads", "sums"}}, h);
    });
    m.def("adam_step", [](S p, S g, S ms, S vs, i64 step_, double lr, double beta1, double beta2, double eps) {
        if (step_ < 1) throw py::value_error("step must be >= 1");
        OptimHyper h;
        h.lr = lr, h.beta1 = beta1, h.beta2 = beta2, h.eps = eps, h.step = step_;
        step(OptimRule::adam, {{p, g, ms, vs}, {"params", "grads", "ms", "vs"}}, h);
    });
}

}  // namespace bind
}  // namespace fastnn
