"""Drop-in optimizers for the *Deep Learning from Scratch* books: `SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam`
with the books' constructors, attributes (lr, momentum, decay_rate, beta1, beta2, iter, v, h, m) and
`update(params, grads)`, run as one fused fastnn step over all parameters.

The two books (common/optimizer.py of book 1 and of book 2) write the same formulas; they differ only in how the
parameters come: book 1 passes dicts keyed by name ({'W1': ..., 'b1': ...}), book 2 lists (model.params), and
book 2 may hold CuPy arrays (its common/np.py). Each class here takes either: the state (v, h, m) is a dict with
the same keys or a list in the same order, created with zeros on the first update as the books do.

When the arrays allow it - all NumPy, or all GPU arrays, float32 or float64, one dtype, params C-contiguous and
writable, no array sharing memory with another - one call of fastnn.<rule>_step updates everything in place.
Otherwise (a float64 grad for a float32 param, a non-contiguous or read-only param, a parameter listed twice, ...)
the update runs the books' NumPy loop itself, with the books' numbers: never a silently different result.
The state arrays are updated in place (Momentum in the books rebinds v to a new array each step; same values).
"""
import numpy as np

from . import adagrad_step, adam_step, momentum_step, nesterov_step, rmsprop_step, sgd_step

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]

_EPS = 1e-7   # the books' constant inside the square-root rules


def _zeros_like(a):
    """The books' np.zeros_like, also for GPU arrays (CuPy answers np.zeros_like itself; PyTorch does not)."""
    if type(a).__module__.split(".")[0] == "torch":
        import torch
        return torch.zeros_like(a)
    return np.zeros_like(a)


def _keys(params):
    """The iteration order of the books: dict keys (book 1) or list positions (book 2)."""
    return list(params.keys()) if isinstance(params, dict) else range(len(params))


def _as_lists(params, grads, *states):
    """params, grads and the states as lists in the books' order (the arrays themselves, no copies)."""
    if isinstance(params, dict):
        keys = list(params)
        return [params[k] for k in keys], [grads[k] for k in keys], *[[s[k] for k in keys] for s in states]
    return params, grads, *states


def _new_state(params):
    if isinstance(params, dict):
        return {k: _zeros_like(v) for k, v in params.items()}
    return [_zeros_like(p) for p in params]


def _fused(step, params, grads, *rest):
    """Run the fused step; False (nothing updated) when the arrays do not allow it: the caller runs the books' loop.
    Every check of a step runs before it writes anything."""
    try:
        step(params, grads, *rest)
    except (TypeError, ValueError):
        return False
    return True


class SGD:
    """Stochastic gradient descent: params[key] -= lr * grads[key] (books 1 and 2)."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        ps, gs = _as_lists(params, grads)
        if not _fused(sgd_step, ps, gs, self.lr):
            for key in _keys(params):
                params[key] -= self.lr * grads[key]


class Momentum:
    """Momentum SGD: v = momentum*v - lr*g; p += v (books 1 and 2). v: zeros at the first update."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = _new_state(params)
        ps, gs, vs = _as_lists(params, grads, self.v)
        if not _fused(momentum_step, ps, gs, vs, self.lr, self.momentum):
            for key in _keys(params):
                self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
                params[key] += self.v[key]


class Nesterov:
    """Nesterov's accelerated gradient as the books write it: v *= m; v -= lr*g; p += m*m*v; p -= (1+m)*lr*g.

    The books apply m*m to the updated v, where the paper they cite (arXiv:1212.0901) and PyTorch's
    SGD(nesterov=True) use the previous one (p += m*m*v_old - (1+m)*lr*g, i.e. p += m*v_new - lr*g): the
    trajectories differ. This class gives the books' numbers."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = _new_state(params)
        ps, gs, vs = _as_lists(params, grads, self.v)
        if not _fused(nesterov_step, ps, gs, vs, self.lr, self.momentum):
            m = self.momentum
            for key in _keys(params):
                self.v[key] *= m
                self.v[key] -= self.lr * grads[key]
                params[key] += m * m * self.v[key]
                params[key] -= (1 + m) * self.lr * grads[key]


class AdaGrad:
    """AdaGrad: h += g*g; p -= lr*g/(sqrt(h) + 1e-7) (books 1 and 2). h: zeros at the first update."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = _new_state(params)
        ps, gs, hs = _as_lists(params, grads, self.h)
        if not _fused(adagrad_step, ps, gs, hs, self.lr, _EPS):
            for key in _keys(params):
                self.h[key] += grads[key] * grads[key]
                params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + _EPS)


class RMSprop:
    """RMSprop: h = decay_rate*h + (1-decay_rate)*g*g; p -= lr*g/(sqrt(h) + 1e-7) (books 1 and 2)."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = _new_state(params)
        ps, gs, hs = _as_lists(params, grads, self.h)
        if not _fused(rmsprop_step, ps, gs, hs, self.lr, self.decay_rate, _EPS):
            for key in _keys(params):
                self.h[key] *= self.decay_rate
                self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
                params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + _EPS)


class Adam:
    """Adam as the books write it (http://arxiv.org/abs/1412.6980v8): iter += 1;
    lr_t = lr*sqrt(1-beta2**iter)/(1-beta1**iter); m += (1-beta1)*(g-m); v += (1-beta2)*(g*g-v);
    p -= lr_t*m/(sqrt(v) + 1e-7). (PyTorch's Adam adds eps to the bias-corrected sqrt(v) instead.)"""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = _new_state(params), _new_state(params)
        self.iter += 1
        ps, gs, ms, vs = _as_lists(params, grads, self.m, self.v)
        if not _fused(adam_step, ps, gs, ms, vs, self.iter, self.lr, self.beta1, self.beta2, _EPS):
            lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
            for key in _keys(params):
                self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
                self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
                params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + _EPS)
