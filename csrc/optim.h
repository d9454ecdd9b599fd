// The fused optimizer steps (optim.cpp): one call updates a whole list of parameters and their state in place.
#pragma once
#include "parallel.h"

namespace fastnn {

enum class OptimRule { sgd, momentum, nesterov, adagrad, rmsprop, adam };

// One parameter: p (and its state s1, s2, when the rule has them) is updated in place from g, n elements each.
// No array may overlap another (the binding checks): the elements are updated in any order, on any thread.
template <typename T>
struct OptimSlice {
    T* p;
    const T* g;
    T* s1;  // velocity (momentum, nesterov), sum of squares (adagrad, rmsprop), first moment m (adam)
    T* s2;  // second moment v (adam)
    i64 n;
};

// The rule's hyperparameters, as the public API names them (unused ones ignored):
//   sgd (lr); momentum, nesterov (lr, momentum); adagrad (lr, eps); rmsprop (lr, decay_rate, eps);
//   adam (lr, beta1, beta2, eps, step)
struct OptimHyper {
    double lr = 0, momentum = 0, decay_rate = 0, beta1 = 0, beta2 = 0, eps = 0;
    i64 step = 1;
};

template <typename T>
void optim_step(OptimRule rule, const OptimSlice<T>* slices, i64 count, const OptimHyper& h);

}  // namespace fastnn
