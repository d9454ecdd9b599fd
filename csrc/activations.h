// The activations family (activations.cpp): elementwise relu/sigmoid/tanh and their backwards, softmax over the
// last axis, and the fused softmax / sigmoid cross-entropy losses. Plain pointers and sizes, no pybind11.
// Rows: the last axis (length V) of a C-contiguous (R, V) array. L (label type) is int32_t or int64_t; the dense
// ("one-hot / probabilities") targets have x's type T.
#pragma once
#include <cstdint>

#include "parallel.h"

namespace fastnn {

enum class Pointwise { relu, sigmoid, tanh };

template <typename T> void act_forward(Pointwise op, const T* x, T* y, i64 n);
template <typename T> void act_backward(Pointwise op, const T* dy, const T* y, T* dx, i64 n);

template <typename T> void softmax_fwd(const T* x, T* y, i64 R, i64 V);
template <typename T> void softmax_bwd(const T* dy, const T* y, T* dx, i64 R, i64 V);

// Integer labels: one pass over the R labels first (how many rows count; the first label outside [0, V) that is
// not `ignore`: its position goes to *bad and nothing else is done, else *bad = -1).
// Forward returns the loss (mean over counted rows; 0 when none), probs written.
template <typename T, typename L>
double softmax_xent_fwd(const T* x, const L* labels, T* probs, i64 R, i64 V, i64 ignore, double eps, i64* bad);
template <typename T, typename L>
void softmax_xent_bwd(const T* probs, const L* labels, T* dx, i64 R, i64 V, double dloss, i64 ignore, i64* bad);
// Dense targets (R, V): every row counts.
template <typename T> double softmax_xent_dense_fwd(const T* x, const T* t, T* probs, i64 R, i64 V, double eps);
template <typename T> void softmax_xent_dense_bwd(const T* probs, const T* t, T* dx, i64 R, i64 V, double dloss);

// Targets of x's shape, L = T, int32_t or int64_t.
template <typename T, typename L> double sigmoid_xent_fwd(const T* x, const L* t, T* y, i64 n, double eps);
template <typename T, typename L> void sigmoid_xent_bwd(const T* y, const L* t, T* dx, i64 n, double dloss);

}  // namespace fastnn
