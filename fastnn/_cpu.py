"""The `cpu` backend: allocates outputs and calls the C++ kernels in fastnn._C (which release the GIL).
Same functions and argument order as fastnn.reference (see docs/internals.md); arguments are already validated."""
import math

import numpy as np

from . import _C
from ._shapes import out_hw as _out_hw
from .reference import LSTMCache

_c = np.ascontiguousarray


def _opt(a):
    return None if a is None else _c(a)


_CACHED_MIN = 1 << 20


def _empty(shape, dtype):
    """An uninitialised output: from _C's buffer cache from 1 MiB on (freed outputs are reused, no page faults on
    the next call of the same size), else np.empty."""
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    shape = shape if type(shape) is tuple else tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if dtype.itemsize * math.prod(shape) >= _CACHED_MIN:
        return _C.empty(shape, dtype)
    return np.empty(shape, dtype)


def _empty_like(a):
    return _empty(a.shape, a.dtype)


# out_hw: the output's (OH, OW) as fastnn._checks computed it; None (a direct call) computes it here.

def im2col(x, kernel_size, stride, padding, dilation, out_hw=None):
    x = _c(x)
    N, C = x.shape[:2]
    oh, ow = out_hw or _out_hw(x.shape[2:], kernel_size, stride, padding, dilation)
    col = _empty((N * oh * ow, C * kernel_size[0] * kernel_size[1]), x.dtype)
    _C.im2col(x, col, kernel_size, stride, padding, dilation)
    return col


def col2im(col, input_shape, kernel_size, stride, padding, dilation, out_hw=None):   # out_hw: _C derives it
    col = _c(col)
    x = _empty(input_shape, col.dtype)
    _C.col2im(col, x, kernel_size, stride, padding, dilation)
    return x


# _algo / _dw_algo / _dx_algo (private, for tests and benchmarks): force a variant by name (None: the kernel's rule);
# one that cannot run the call raises ValueError. conv2d_algo / pool2d_algo name what would run.
def conv2d(x, weight, bias, stride, padding, dilation, groups, out_hw=None, *, _algo=None):
    x, weight = _c(x), _c(weight)
    out_hw = out_hw or _out_hw(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    y = _empty((x.shape[0], weight.shape[0]) + tuple(out_hw), x.dtype)
    _C.conv2d_fwd(x, weight, _opt(bias), y, stride, padding, dilation, groups, _algo or "")
    return y


def conv2d_backward(dy, x, weight, stride, padding, dilation, groups, *, _dw_algo=None, _dx_algo=None):
    dy, x, weight = _c(dy), _c(x), _c(weight)
    dx, dw, db = _empty_like(x), _empty_like(weight), _empty(weight.shape[0], x.dtype)
    _C.conv2d_bwd(dy, x, weight, dx, dw, db, stride, padding, dilation, groups, _dw_algo or "", _dx_algo or "")
    return dx, dw, db


_CONV2D_PARTS = {"forward": (_C.conv2d_fwd_algo, _C.conv2d_fwd_algos),
                 "dweight": (_C.conv2d_dw_algo, _C.conv2d_dw_algos),
                 "dx": (_C.conv2d_dx_algo, _C.conv2d_dx_algos)}


def conv2d_algo(x_shape, w_shape, stride, padding, dilation, groups, dtype, part="forward"):
    """The name of the variant conv2d (part "forward") or conv2d_backward ("dweight", "dx") would run."""
    return _CONV2D_PARTS[part][0](x_shape, w_shape, stride, padding, dilation, groups, np.dtype(dtype))


def conv2d_algos(part="forward"):
    """Every variant name of a conv2d part (what _algo / _dw_algo / _dx_algo accept)."""
    return _CONV2D_PARTS[part][1]()


def pool2d_algo(pass_, x_shape, kernel_size, stride, padding, dtype):
    """The name of the variant a pooling pass ("max", "avg" or "avg_backward") would run."""
    return _C.pool2d_algo(pass_, x_shape, kernel_size, stride, padding, np.dtype(dtype))


def pool2d_algos():
    return _C.pool2d_algos()


def _pool_out(shape, kernel_size, stride, padding, out_hw=None):
    return tuple(shape[:2]) + tuple(out_hw or _out_hw(shape[2:], kernel_size, stride, padding))


def max_pool2d(x, kernel_size, stride, padding, out_hw=None, *, _algo=None):
    x = _c(x)
    shape = _pool_out(x.shape, kernel_size, stride, padding, out_hw)
    y, idx = _empty(shape, x.dtype), _empty(shape, np.int64)
    _C.max_pool2d_fwd(x, y, idx, kernel_size, stride, padding, _algo or "")
    return y, idx


def max_pool2d_backward(dy, indices, input_shape):
    dx = _empty(input_shape, dy.dtype)
    _C.max_pool2d_bwd(_c(dy), _c(indices), dx)  # scatters by index: the window geometry is not needed
    return dx


def avg_pool2d(x, kernel_size, stride, padding, count_include_pad, out_hw=None, *, _algo=None):
    x = _c(x)
    y = _empty(_pool_out(x.shape, kernel_size, stride, padding, out_hw), x.dtype)
    _C.avg_pool2d_fwd(x, y, kernel_size, stride, padding, count_include_pad, _algo or "")
    return y


def avg_pool2d_backward(dy, input_shape, kernel_size, stride, padding, count_include_pad, *, _algo=None):
    dy = _c(dy)
    dx = _empty(input_shape, dy.dtype)
    _C.avg_pool2d_bwd(dy, dx, kernel_size, stride, padding, count_include_pad, _algo or "")
    return dx


def _ncl(x):
    N, C = x.shape[:2]
    return N, C, math.prod(x.shape[2:])


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    x = _c(x)
    N, C, L = _ncl(x)
    y = _empty_like(x)
    if training:
        mean, invstd = _empty(C, x.dtype), _empty(C, x.dtype)
    else:
        mean = np.array(running_mean, dtype=x.dtype)
        invstd = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(x.dtype)
    # Running stats are updated in place, so they are passed as they are (validated contiguous and writable).
    _C.batch_norm_fwd(x, _opt(gamma), _opt(beta), y, mean, invstd, running_mean if training else None,
                      running_var if training else None, N, C, L, training, momentum, eps)
    return y, mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd, training):
    dy, x = _c(dy), _c(x)
    N, C, L = _ncl(x)
    dx, dgamma, dbeta = _empty_like(x), _empty(C, x.dtype), _empty(C, x.dtype)
    _C.batch_norm_bwd(dy, x, _opt(gamma), _c(mean), _c(invstd), dx, dgamma, dbeta, N, C, L, training)
    return dx, dgamma, dbeta


def _positions(gate_order):
    return [gate_order.index(g) for g in "ifgo"]


def _lstm_fwd(xs, h0, c0, w_ih, w_hh, bias, gate_order):
    xs, w_ih, w_hh = _c(xs), _c(w_ih), _c(w_hh)
    N, T, _ = xs.shape
    H = w_hh.shape[0]
    hs, cs, gates = _empty((N, T, H), xs.dtype), _empty((N, T, H), xs.dtype), _empty((N, T, 4 * H), xs.dtype)
    h0 = np.zeros((N, H), xs.dtype) if h0 is None else _c(h0)
    c0 = np.zeros((N, H), xs.dtype) if c0 is None else _c(c0)
    _C.lstm_fwd(xs, h0, c0, w_ih, w_hh, _opt(bias), hs, cs, gates, H, _positions(gate_order))
    return hs, cs, gates, h0, c0


def _lstm_bwd(dhs, dh_n, dc_n, cache):
    xs = cache.x if cache.x.ndim == 3 else cache.x[:, None, :]
    gates, hs, cs = (a if a.ndim == 3 else a[:, None, :] for a in (cache.gates, cache.hs, cache.cs))
    dxs = _empty_like(xs)
    dh0, dc0 = _empty_like(cache.h), _empty_like(cache.c)
    dw_ih, dw_hh = _empty_like(cache.w_ih), _empty_like(cache.w_hh)
    dbias = _empty(cache.w_hh.shape[1], xs.dtype)
    _C.lstm_bwd(_opt(dhs), _opt(dh_n), _opt(dc_n), xs, cache.h, cache.c, cache.w_ih, cache.w_hh, gates, hs, cs,
                dxs, dh0, dc0, dw_ih, dw_hh, dbias, cache.w_hh.shape[0], _positions(cache.gate_order))
    return dxs, dh0, dc0, dw_ih, dw_hh, dbias


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order):
    hs, cs, gates, h, c = _lstm_fwd(_c(x)[:, None, :], h, c, w_ih, w_hh, bias, gate_order)
    h_next, c_next = hs[:, 0], cs[:, 0]
    cache = LSTMCache("cpu", gate_order, _c(x), h, c, _c(w_ih), _c(w_hh), gates[:, 0], h_next, c_next)
    return h_next, c_next, cache


def lstm_cell_backward(dh_next, dc_next, cache):
    # The cell is a sequence of one step: dh_next is the step's output gradient.
    dxs, dh, dc, dw_ih, dw_hh, dbias = _lstm_bwd(None if dh_next is None else _c(dh_next)[:, None, :], None,
                                                  dc_next, cache)
    return dxs[:, 0], dh, dc, dw_ih, dw_hh, dbias


def lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order):
    hs, cs, gates, h0, c0 = _lstm_fwd(xs, h0, c0, w_ih, w_hh, bias, gate_order)
    cache = LSTMCache("cpu", gate_order, _c(xs), h0, c0, _c(w_ih), _c(w_hh), gates, hs, cs)
    return hs, hs[:, -1].copy(), cs[:, -1].copy(), cache


def lstm_backward(dhs, dh_n, dc_n, cache):
    return _lstm_bwd(dhs, dh_n, dc_n, cache)


# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
# The steps update in place: the lists go to _C as they are (validated there again, grads made contiguous there).

def sgd_step(params, grads, lr):
    _C.sgd_step(params, grads, lr)


def momentum_step(params, grads, velocities, lr, momentum=0.9):
    _C.momentum_step(params, grads, velocities, lr, momentum)


def nesterov_step(params, grads, velocities, lr, momentum=0.9):
    _C.nesterov_step(params, grads, velocities, lr, momentum)


def adagrad_step(params, grads, sums, lr, eps=1e-7):
    _C.adagrad_step(params, grads, sums, lr, eps)


def rmsprop_step(params, grads, sums, lr, decay_rate=0.99, eps=1e-7):
    _C.rmsprop_step(params, grads, sums, lr, decay_rate, eps)


def adam_step(params, grads, ms, vs, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    _C.adam_step(params, grads, ms, vs, step, lr, beta1, beta2, eps)
# ==== end optim ====
