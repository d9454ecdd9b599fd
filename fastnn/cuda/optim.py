"""The fused optimizer steps on the GPU: the books' updates (common/optimizer.py of Deep Learning from Scratch 1
and 2), in place, one pass over each parameter.

Kernels, in order (one thread per element, grid-stride; every scalar is passed in the arrays' dtype, so float32
arrays compute in float32 as the books' NumPy does):
  sgd_kernel        p -= lr*g
  momentum_kernel   v = m*v - lr*g; p += v
  nesterov_kernel   v = m*v - lr*g; p += m*m*v - (1+m)*lr*g
  adagrad_kernel    h += g*g; p -= lr*g/(sqrt(h)+eps)
  rmsprop_kernel    h = d*h + (1-d)*g*g; p -= lr*g/(sqrt(h)+eps)
  adam_kernel       m += (1-b1)*(g-m); v += (1-b2)*(g*g-v); p -= lr_t*m/(sqrt(v)+eps)
One launch per parameter through the direct launcher (_launch.launch: a few us each); a Numba kernel cannot take
a table of pointers to arrays of different sizes, which PyTorch's multi-tensor kernels walk in one launch.
NumPy arrays (backend="cuda" with host arrays, the simulator tests) are copied to the device, updated there and
copied back into the same host arrays.
"""
import math

import numpy as np
from numba import cuda

from ..reference import adam_lr
from ._launch import blocks, kind_of, launch, view

BS = 256
MAX_BLOCKS = 8192     # the grid-stride loop covers larger arrays


@cuda.jit
def sgd_kernel(p, g, lr, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        p[i] -= lr * g[i]
        i += cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def momentum_kernel(p, g, v, m, lr, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        vi = m * v[i] - lr * g[i]
        v[i] = vi
        p[i] += vi
        i += cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def nesterov_kernel(p, g, v, m, lr, mm, mlr, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        gi = g[i]
        vi = m * v[i] - lr * gi
        v[i] = vi
        p[i] = p[i] + mm * vi - mlr * gi
        i += cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def adagrad_kernel(p, g, h, lr, eps, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        gi = g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        p[i] -= lr * gi / (math.sqrt(hi) + eps)
        i += cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def rmsprop_kernel(p, g, h, lr, eps, d, d1, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        gi = g[i]
        hi = d * h[i] + d1 * gi * gi
        h[i] = hi
        p[i] -= lr * gi / (math.sqrt(hi) + eps)
        i += cuda.gridDim.x * cuda.blockDim.x


@cuda.jit
def adam_kernel(p, g, m, v, lr_t, eps, b1, b2, n):
    i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while i < n:
        gi = g[i]
        mi = m[i] + b1 * (gi - m[i])
        vi = v[i] + b2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        p[i] -= lr_t * mi / (math.sqrt(vi) + eps)
        i += cuda.gridDim.x * cuda.blockDim.x


def _span(a, v):
    """(first byte, end) of an argument: the host array's own memory for NumPy arrays (each is copied to the device
    separately, so host aliases would otherwise be lost on the copy back), else the device buffer."""
    if isinstance(a, np.ndarray):
        return a.ctypes.data, a.ctypes.data + a.nbytes
    return v.ptr, v.ptr + v.size * v.itemsize


def _refuse_overlaps(lists, names, views):
    """As the cpu backend: an array the step writes must not share memory with any other argument. (Under the
    simulator device pointers are not known, View.ptr == 0: only host arrays are checked there.)"""
    spans = []
    for k, (seq, vs) in enumerate(zip(lists, views)):
        for i, (a, v) in enumerate(zip(seq, vs)):
            lo, hi = _span(a, v)
            if hi > lo and lo:
                spans.append((lo, hi, k != 1, k, i))
    spans.sort()
    far_all = far_w = None      # the spans reaching furthest so far (any / written)
    for s in spans:
        hit = far_w if far_w and s[0] < far_w[1] else far_all if s[2] and far_all and s[0] < far_all[1] else None
        if hit:
            w = s if s[2] else hit
            raise ValueError(f"{names[s[3]]}[{s[4]}] and {names[hit[3]]}[{hit[4]}] share memory: the step updates "
                             f"{names[w[3]]}[{w[4]}] in place, so it must not overlap any other argument")
        far_all = s if far_all is None or s[1] > far_all[1] else far_all
        far_w = s if s[2] and (far_w is None or s[1] > far_w[1]) else far_w


def _step(kernel, lists, names, scalars):
    """Launch `kernel` on every parameter: lists = (params, grads, *states), scalars as Python floats."""
    if not len(lists[0]):
        return
    kind = kind_of(lists[0][0])
    views = [[view(a) for a in seq] for seq in lists]
    _refuse_overlaps(lists, names, views)
    dt = views[0][0].dtype
    coefs = [dt.type(c) for c in scalars]
    for i in range(len(lists[0])):
        n = views[0][i].size
        if n == 0:
            continue
        arrays = [vs[i].reshape(n) for vs in views]
        launch(kernel, dt.char, min(blocks(n, BS), MAX_BLOCKS), BS, *arrays, *coefs, n)
    if kind == "numpy":     # host arrays: the device copies were updated, write them back (grads are read only)
        for k, seq in enumerate(lists):
            if k != 1:
                for host, v in zip(seq, views[k]):
                    if host.size:
                        host[...] = v.device().copy_to_host()


def sgd_step(params, grads, lr):
    _step(sgd_kernel, (params, grads), ("params", "grads"), (lr,))


def momentum_step(params, grads, velocities, lr, momentum=0.9):
    _step(momentum_kernel, (params, grads, velocities), ("params", "grads", "velocities"), (momentum, lr))


def nesterov_step(params, grads, velocities, lr, momentum=0.9):
    _step(nesterov_kernel, (params, grads, velocities), ("params", "grads", "velocities"),
          (momentum, lr, momentum * momentum, (1 + momentum) * lr))


def adagrad_step(params, grads, sums, lr, eps=1e-7):
    _step(adagrad_kernel, (params, grads, sums), ("params", "grads", "sums"), (lr, eps))


def rmsprop_step(params, grads, sums, lr, decay_rate=0.99, eps=1e-7):
    _step(rmsprop_kernel, (params, grads, sums), ("params", "grads", "sums"), (lr, eps, decay_rate, 1 - decay_rate))


def adam_step(params, grads, ms, vs, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    _step(adam_kernel, (params, grads, ms, vs), ("params", "grads", "ms", "vs"),
          (adam_lr(lr, beta1, beta2, step), eps, 1 - beta1, 1 - beta2))
