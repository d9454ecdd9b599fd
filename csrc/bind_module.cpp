// The extension's one PYBIND11_MODULE: each op's bindings live in its own bind_*.cpp (bind.h).
#include "bind.h"

PYBIND11_MODULE(_C, m) {
    using namespace fastnn::bind;
    m.doc() = "fastnn C++ CPU kernels (see fastnn/_cpu.py for the Python side)";
    bind_config(m);
    bind_blas_share(m);
    bind_buffer_cache(m);
    bind_gemm(m);
    bind_im2col(m);
    bind_conv2d(m);
    bind_pool2d(m);
    bind_batch_norm(m);
    bind_lstm(m);
    bind_activations(m);
    bind_dense(m);
    bind_rnn(m);
    bind_optim(m);
}
