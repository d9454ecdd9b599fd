"""The `cpu` backend: allocates outputs and calls the C++ kernels in fastnn._C (which release the GIL).
Same functions and argument order as fastnn.reference (see docs/internals.md); arguments are already validated."""
import math
import os

import numpy as np

from . import _C
from ._shapes import out_hw as _out_hw
from .reference import LSTMCache

_c = np.ascontiguousarray

# NumPy's OpenBLAS runs its threaded calls on fastnn's pool from now on (csrc/blas_share.cpp; README "Threads, in
# company with NumPy"): its own worker spun ~0.1 s after each matmul on the core a fastnn call wanted next.
BLAS_SHARED = _C.share_blas_threads(True) if os.environ.get("FASTNN_SHARE_BLAS", "1") != "0" else []


def _opt(a):
    return None if a is None else _c(a)


# From glibc's default mmap threshold (128 KiB) on, a freed NumPy array's memory goes back to the kernel (munmap, or
# the heap's top trimmed), so the next output of that size page-faults on every 4 KiB: in the book MLP (784-100x5,
# float64, batch 100) that was 312 faults a call, and linear_backward took 529 us instead of 198.
_CACHED_MIN = 128 << 10


_INT64 = np.dtype(np.int64)


def _empty(shape, dtype):
    """An uninitialised output: from _C's buffer cache from 128 KiB on (freed outputs are reused, no page faults on
    the next call of the same size), else np.empty. dtype: a np.dtype (an array's; converting a type here cost
    more than np.empty itself on tiny outputs)."""
    if type(shape) is not tuple:
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
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
    if type(out_hw) is tuple and type(shape) is tuple:     # from the checks: the tuples as they are
        return shape[:2] + out_hw
    return tuple(shape[:2]) + tuple(out_hw or _out_hw(shape[2:], kernel_size, stride, padding))


def max_pool2d(x, kernel_size, stride, padding, out_hw=None, *, _algo=None):
    x = _c(x)
    shape = _pool_out(x.shape, kernel_size, stride, padding, out_hw)
    if math.prod(shape) * 8 < _CACHED_MIN:    # both outputs below the cache's size (_empty's test, once: ~0.2 us)
        y, idx = np.empty(shape, x.dtype), np.empty(shape, _INT64)
    else:
        y, idx = _empty(shape, x.dtype), _empty(shape, _INT64)
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
# Each op one _C call over the flat data (softmax and the losses by rows of the last axis, V = x.shape[-1]).

def _like(x):
    """_empty_like for a C-contiguous x, with less Python (these ops are often called on tiny arrays)."""
    return np.empty_like(x) if x.nbytes < _CACHED_MIN else _C.empty(x.shape, x.dtype)


def _act(op, x):
    x = _c(x)
    y = _like(x)
    _C.act_fwd(op, x, y)
    return y


def _act_bwd(op, dy, y):
    dy, y = _c(dy), _c(y)
    dx = _like(y)
    _C.act_bwd(op, dy, y, dx)
    return dx


def relu(x):
    return _act("relu", x)


def relu_backward(dy, y):
    return _act_bwd("relu", dy, y)


def sigmoid(x):
    return _act("sigmoid", x)


def sigmoid_backward(dy, y):
    return _act_bwd("sigmoid", dy, y)


def tanh(x):
    return _act("tanh", x)


def tanh_backward(dy, y):
    return _act_bwd("tanh", dy, y)


def softmax(x):
    x = _c(x)
    y = _like(x)
    _C.softmax_fwd(x, y, x.shape[-1])
    return y


def softmax_backward(dy, y):
    dy, y = _c(dy), _c(y)
    dx = _like(y)
    _C.softmax_bwd(dy, y, dx, y.shape[-1])
    return dx


def softmax_cross_entropy(x, target, ignore_index=-100, eps=0.0):
    x = _c(x)
    probs = _like(x)
    loss = _C.softmax_xent_fwd(x, _c(target), probs, x.shape[-1], ignore_index, eps)
    return loss, probs


def softmax_cross_entropy_backward(probs, target, dloss=1.0, ignore_index=-100):
    probs = _c(probs)
    dx = _like(probs)
    _C.softmax_xent_bwd(probs, _c(target), dx, probs.shape[-1], dloss, ignore_index)
    return dx


def sigmoid_cross_entropy(x, target, eps=0.0):
    x = _c(x)
    y = _like(x)
    loss = _C.sigmoid_xent_fwd(x, _c(target), y, eps)
    return loss, y


def sigmoid_cross_entropy_backward(y, target, dloss=1.0):
    y = _c(y)
    dx = _like(y)
    _C.sigmoid_xent_bwd(y, _c(target), dx, dloss)
    return dx
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
from .reference import dropout_scale as _dropout_scale, dropout_threshold as _dropout_threshold  # noqa: E402


_LINEAR_ALGOS = {None: 0, "packed": 1, "small": 2}   # _algo (private, tests and benchmarks): force a GEMM path


def linear(x, weight, bias, *, _algo=None):
    x, weight = _c(x), _c(weight)
    M = weight.shape[1]
    if x.ndim == 2:  # the usual call, with as little Python as it takes (a 1x784->100 layer's GEMM is ~3 us)
        N = x.shape[0]
        y = np.empty((N, M), x.dtype) if N * M * x.itemsize < _CACHED_MIN else _C.empty((N, M), x.dtype)
        _C.linear_fwd(x, weight, None if bias is None else _c(bias), y, _LINEAR_ALGOS[_algo] if _algo else 0)
        return y
    shape = x.shape[:-1] + (M,)
    y = np.empty(shape, x.dtype) if x.itemsize * M * (x.size // x.shape[-1]) < _CACHED_MIN else _empty(shape, x.dtype)
    _C.linear_fwd(x.reshape(-1, x.shape[-1]), weight, _opt(bias), y.reshape(-1, M), _LINEAR_ALGOS[_algo])
    return y


def linear_backward(dy, x, weight, bias, *, _algo=None):
    dy, x, weight = _c(dy), _c(x), _c(weight)
    D, M = weight.shape
    dx = _empty_like(x)
    dwb = _empty((D + 1 if bias else D, M), x.dtype)   # row D receives dbias (one more row of the dW GEMM)
    _C.linear_bwd(dy.reshape(-1, M), x.reshape(-1, D), weight, dx.reshape(-1, D), dwb, bias, _LINEAR_ALGOS[_algo])
    return (dx, dwb[:D], dwb[D]) if bias else (dx, dwb, None)


def embedding(indices, weight):
    indices, weight = _c(indices), _c(weight)
    shape = indices.shape + (weight.shape[1],)
    y = np.empty(shape, weight.dtype) if indices.size * weight.shape[1] * weight.itemsize < _CACHED_MIN else \
        _empty(shape, weight.dtype)
    _C.embedding_fwd(indices, weight, y)
    return y


def embedding_backward(dy, indices, num_embeddings):
    dy = _c(dy)
    dw = _empty((num_embeddings, dy.shape[-1]), dy.dtype)
    _C.embedding_bwd(dy, _c(indices), dw)
    return dw


_DROPOUT = {}     # (p, scale, dtype) -> (threshold, factor): computed once (numpy scalars cost a tiny call's time)


def dropout(x, p, seed, scale, mask):
    x = _c(x)
    y = np.empty_like(x) if x.nbytes < _CACHED_MIN else _empty_like(x)
    key = (p, scale, x.dtype.char)
    ts = _DROPOUT.get(key)
    if ts is None:
        ts = _DROPOUT[key] = (_dropout_threshold(p), float(_dropout_scale(p, scale, x.dtype)))
    _C.dropout(x, y, seed, ts[0], ts[1], None if mask is None else _c(mask))
    return y


dropout_backward = dropout   # the same mask applied to dy (one Python call less on a 4 us call)


_MT_OK = {}   # id of the global RandomState's MT19937 -> whether _C.mt19937_rand matched np.random.rand on it


def rand_gt(shape, p):
    """``np.random.rand(*shape) > p``: the same draws from NumPy's global generator, which they advance as
    ``np.random.rand`` does (the books' Dropout masks, 5x faster). _C.mt19937_rand runs NumPy's MT19937 on the
    state behind the generator's public ``ctypes.state_address``; the state's layout is NumPy's internal one, so
    the first call compares 1250 draws (two twists) and the state after them with np.random.rand's own (then
    puts the state back), and falls back to np.random.rand for good if they differ."""
    bg = getattr(getattr(np.random.mtrand, "_rand", None), "_bit_generator", None)   # NumPy's global RandomState's
    ok = _MT_OK.get(id(bg))
    if ok is None:
        ok = _MT_OK[id(bg)] = _mt_check(bg)
    if not ok:
        return np.random.rand(*shape) > p
    keep = np.empty(shape, np.bool_)
    with bg.lock:
        _C.mt19937_rand(bg.ctypes.state_address, keep, p)
    return keep


def _mt_check(bg):
    if type(bg) is not np.random.MT19937 or not hasattr(bg, "lock"):
        return False
    with bg.lock:
        before = bg.state
        ours = np.empty(1250)
        try:
            _C.mt19937_rand(bg.ctypes.state_address, ours, 0.0)
        except ValueError:
            pass
        after = bg.state["state"]
        bg.state = before
        ref = np.random.rand(1250)
        now = bg.state["state"]
        bg.state = before           # the check draws nothing from the user's stream
    return bool(np.array_equal(ours, ref) and after["pos"] == now["pos"] and np.array_equal(after["key"], now["key"]))
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
# _C's rnn/gru functions take a cell's (N,D) x as one step: the cells pass their arrays as they are (no reshapes,
# which cost more than a small step's kernel). h0 is always given (zeros materialised here; the cache keeps them, as
# the reference's does). Caches made elsewhere (the benchmark relabels the reference's) may hold strided arrays: _c.
from .reference import GRUCache, RNNCache  # noqa: E402


def _new(shape, dt):
    """_empty for a tuple shape and a NumPy dtype, without its normalisation (a tiny cell's whole kernel is ~2 us)."""
    return np.empty(shape, dt) if dt.itemsize * math.prod(shape) < _CACHED_MIN else _C.empty(shape, dt)


def _h0(h0, N, H, dtype):
    return np.zeros((N, H), dtype) if h0 is None else _c(h0)


_tuple_new = tuple.__new__   # a NamedTuple's own __new__ is a Python function: 0.25 us of a 4 us cell call


def _rnn_fwd(x, h0, w_ih, w_hh, bias):
    """-> (hs, cache). Inlined helpers: each Python call here costs about what a B1 H100 step's kernel does."""
    x, w_ih, w_hh = _c(x), _c(w_ih), _c(w_hh)
    dt, H = x.dtype, w_hh.shape[0]
    shape = x.shape[:-1] + (H,)
    hs = np.empty(shape, dt) if x.size // x.shape[-1] * H * dt.itemsize < _CACHED_MIN else _C.empty(shape, dt)
    h0 = np.zeros((x.shape[0], H), dt) if h0 is None else _c(h0)
    _C.rnn_fwd(x, h0, w_ih, w_hh, None if bias is None else _c(bias), hs, H)
    return hs, _tuple_new(RNNCache, ("cpu", x, h0, w_ih, w_hh, hs))


def _rnn_bwd(dhs, dh_n, c):
    _, x, h, w_ih, w_hh, hs = c
    x, hs, h, w_ih, w_hh = _c(x), _c(hs), _c(h), _c(w_ih), _c(w_hh)
    H = w_hh.shape[0]
    dt = x.dtype
    # all five outputs below the buffer cache's size: np.empty each, without _new's test per array
    new = np.empty if (x.size + w_ih.size + w_hh.size + 2 * h.size) * dt.itemsize < _CACHED_MIN else _new
    dx, dh0, dw_ih, dw_hh, dbias = new(x.shape, dt), new(h.shape, dt), new(w_ih.shape, dt), new(w_hh.shape, dt), \
        new((H,), dt)
    _C.rnn_bwd(None if dhs is None else _c(dhs), None if dh_n is None else _c(dh_n), x, h, w_ih, w_hh, hs, dx, dh0,
               dw_ih, dw_hh, dbias, H)
    return dx, dh0, dw_ih, dw_hh, dbias


def rnn_cell(x, h, w_ih, w_hh, bias):
    return _rnn_fwd(x, h, w_ih, w_hh, bias)


def rnn_cell_backward(dh_next, cache):
    return _rnn_bwd(dh_next, None, cache)     # the step's output gradient


def rnn(xs, h0, w_ih, w_hh, bias):
    hs, c = _rnn_fwd(xs, h0, w_ih, w_hh, bias)
    return hs, hs[:, -1].copy(), c


def rnn_backward(dhs, dh_n, cache):
    return _rnn_bwd(dhs, dh_n, cache)


def _gru_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, gate_order):
    x, w_ih, w_hh = _c(x), _c(w_ih), _c(w_hh)
    H = w_hh.shape[0]
    lead = x.shape[:-1]
    hs, gates, hn = _new(lead + (H,), x.dtype), _new(lead + (3 * H,), x.dtype), _new(lead + (H,), x.dtype)
    h0 = _h0(h0, x.shape[0], H, x.dtype)
    _C.gru_fwd(x, h0, w_ih, w_hh, _opt(b_ih), _opt(b_hh), hs, gates, hn, H, gate_order == "rzn")
    return GRUCache("cpu", gate_order, x, h0, w_ih, w_hh, gates, hs, hn, b_ih is not None, b_hh is not None)


def _gru_bwd(dhs, dh_n, c):
    x, gates, hs, hn, h, w_ih, w_hh = (_c(a) for a in (c.x, c.gates, c.hs, c.hn, c.h, c.w_ih, c.w_hh))
    H = w_hh.shape[0]
    rzn = c.gate_order == "rzn"
    dt = x.dtype
    dx, dh0, dw_ih, dw_hh = _new(x.shape, dt), _new(h.shape, dt), _new(w_ih.shape, dt), _new(w_hh.shape, dt)
    db_ih, db_hh = _new((3 * H,), dt), _new((3 * H,), dt)
    dhn = _new(hs.shape, dt) if rzn else None       # scratch: the gradient of hn
    _C.gru_bwd(_opt(dhs), _opt(dh_n), x, h, w_ih, w_hh, gates, hs, hn, dhn, dx, dh0, dw_ih, dw_hh, db_ih, db_hh, H,
               rzn)
    return dx, dh0, dw_ih, dw_hh, db_ih if c.has_b_ih else None, db_hh if c.has_b_hh else None


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, gate_order):
    c = _gru_fwd(x, h, w_ih, w_hh, b_ih, b_hh, gate_order)
    return c.hs, c


def gru_cell_backward(dh_next, cache):
    return _gru_bwd(dh_next, None, cache)


def gru(xs, h0, w_ih, w_hh, b_ih, b_hh, gate_order):
    c = _gru_fwd(xs, h0, w_ih, w_hh, b_ih, b_hh, gate_order)
    return c.hs, c.hs[:, -1].copy(), c


def gru_backward(dhs, dh_n, cache):
    return _gru_bwd(dhs, dh_n, cache)
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
