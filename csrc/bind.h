// What the per-op binding files share (internal to the extension): the array checks, the float/double dispatch,
// the shape helpers, and the bind_* functions that the one PYBIND11_MODULE (bind_module.cpp) calls.
// The Python wrapper (fastnn/_cpu.py) validates arguments and allocates outputs; the checks here only make sure
// a wrong call can never read or write out of bounds.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/numpy.h>

#include <array>
#include <string>

#include "fastnn.h"

namespace fastnn {
namespace bind {

namespace py = pybind11;
using Pair = std::array<i64, 2>;
using Shape4 = std::array<i64, 4>;

// The GIL released around a kernel that touches `elements` array elements, unless there are few: giving it up and
// taking it back cost ~40 ns a call (a 1x1x4x4 max_pool2d's binding: 0.39 -> 0.36 us), more than such a kernel
// runs; another Python thread then waits at most that long.
class NoGil {
  public:
    explicit NoGil(i64 elements) : saved_(elements >= (i64(1) << 14) ? PyEval_SaveThread() : nullptr) {}
    ~NoGil() {
        if (saved_) PyEval_RestoreThread(saved_);
    }
    NoGil(const NoGil&) = delete;
    NoGil& operator=(const NoGil&) = delete;

  private:
    PyThreadState* saved_;
};

void bind_config(py::module_& m);        // config, threads (bind_config.cpp)
void bind_blas_share(py::module_& m);    // share_blas_threads (blas_share.cpp)
void bind_buffer_cache(py::module_& m);  // empty, empty_cache, ... (bind_buffer_cache.cpp)
void bind_gemm(py::module_& m);
void bind_im2col(py::module_& m);
void bind_conv2d(py::module_& m);
void bind_pool2d(py::module_& m);
void bind_batch_norm(py::module_& m);
void bind_lstm(py::module_& m);
void bind_activations(py::module_& m);  // relu, sigmoid, tanh, softmax, losses
void bind_dense(py::module_& m);        // linear, embedding, dropout
void bind_rnn(py::module_& m);          // rnn, gru
void bind_optim(py::module_& m);        // fused optimizer steps

template <typename T>
inline T* ptr(const py::array& a, const char* name, i64 size, bool writable = false) {
    if (!py::isinstance<py::array_t<T>>(a))
        throw py::type_error(std::string(name) + ": expected dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                             ", got " + py::str(a.dtype()).cast<std::string>());
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
    if (a.size() != size)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(size) + " elements, got " +
                              std::to_string(a.size()));
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + ": must be writable");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
inline T* opt_ptr(const py::object& o, const char* name, i64 size, bool writable = false) {
    if (o.is_none()) return nullptr;
    return ptr<T>(o.cast<py::array>(), name, size, writable);
}

// Call f(T{}) with T = float or double, chosen by the dtype of `a`.
template <typename F>
inline void dispatch(const py::array& a, F&& f) {
    if (py::isinstance<py::array_t<float>>(a)) f(float{});
    else if (py::isinstance<py::array_t<double>>(a)) f(double{});
    else throw py::type_error("expected float32 or float64, got " + py::str(a.dtype()).cast<std::string>());
}

inline i64 out_size(i64 in, i64 k, i64 s, i64 p, i64 d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

inline fastnn::ConvShape conv_shape(const Pair& xs4n, i64 C, i64 H, i64 W, i64 K, Pair ks, Pair st, Pair pd, Pair dl,
                                    i64 groups) {
    fastnn::ConvShape s{xs4n[0], C, H, W, K, ks[0], ks[1], st[0], st[1], pd[0], pd[1], dl[0], dl[1], groups, 0, 0};
    if (s.N < 0 || C <= 0 || H <= 0 || W <= 0 || ks[0] <= 0 || ks[1] <= 0 || st[0] <= 0 || st[1] <= 0 ||
        pd[0] < 0 || pd[1] < 0 || dl[0] <= 0 || dl[1] <= 0 || groups <= 0 || C % groups || K % groups)
        throw py::value_error("invalid convolution parameters");
    s.OH = out_size(H, ks[0], st[0], pd[0], dl[0]);
    s.OW = out_size(W, ks[1], st[1], pd[1], dl[1]);
    if (s.OH <= 0 || s.OW <= 0) throw py::value_error("convolution output size must be > 0");
    return s;
}

inline std::array<i64, 4> shape4(const py::array& a, const char* name) {
    if (a.ndim() != 4) throw py::value_error(std::string(name) + " must be 4-D");
    return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

// The names of an op's variants, in enum order, without `automatic`: what the algo= arguments accept.
template <class Algo>
py::list algo_names() {
    py::list l;
    for (int i = 1; i < algo_count<Algo>(); ++i) l.append(AlgoNames<Algo>::names[i]);
    return l;
}

}  // namespace bind
}  // namespace fastnn
