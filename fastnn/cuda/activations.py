"""relu / sigmoid / tanh, softmax over the last axis and the fused softmax / sigmoid cross-entropy on the GPU.

The elementwise ops are one grid-stride pass each; the row ops (softmax, softmax cross-entropy) take one block
per row (rows grid-strided), reduce the row max and sum in shared memory (float64) and write each output once.
The losses sum per row / per block in float64 on the device; the host adds those partials in order (the loss is
returned as a Python float, so the forward synchronises anyway). The class-id checks of the cross-entropy run on
the host, on the R labels copied back, before any launch (one small copy).

Kernels, in order:
  act_fwd           y = relu / sigmoid / tanh (x) (op 0 / 1 / 2), one thread per element, grid-stride.
  act_bwd           dx = dy * act'(y).
  softmax_rows      block per row: max, sum of exp(x - max) (float64), y = exp(x - max) / sum.
  softmax_bwd_rows  block per row: dot = sum(dy * y) (float64), dx = y * (dy - dot).
  xent_rows         softmax_rows + the row's loss (class id or dense target) into a float64 row buffer.
  xent_bwd_rows     dx = (probs - onehot) * scale, ignored rows 0 (class ids) / (probs - t) * scale (dense).
  sig_xent          y = sigmoid(x) and per-block float64 loss partials (the stable forms of the reference).
  sig_xent_bwd      dx = (y - t) * scale.
"""
import math

import numpy as np
from numba import config, cuda, float64, int64

from .. import _checks
from ._launch import empty as _empty, kind_of, launch, of as _of, result as _result, view

BS = 256                                        # threads of the elementwise kernels
ROW_BS = 32 if config.ENABLE_CUDASIM else 256   # threads per row block (the simulator runs a thread per thread)
MAX_BLOCKS = 4096
RELU, SIGMOID, TANH = 0, 1, 2


def _grid(n, threads=BS):
    return max(1, min(MAX_BLOCKS, (n + threads - 1) // threads))


# ------------------------------------------------------------------------------------------------ elementwise

@cuda.jit
def act_fwd(x, y, op):
    i0, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(i0, x.size, step):
        a = x[i]
        if op == RELU:
            y[i] = 0 if a <= 0 else a            # NaN fails the test: stays NaN
        elif op == SIGMOID:
            y[i] = 1.0 / (1.0 + math.exp(-a))    # exp overflow -> inf -> 0: right
        else:
            y[i] = math.tanh(a)


@cuda.jit
def act_bwd(dy, y, dx, op):
    i0, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(i0, y.size, step):
        v = y[i]
        if op == RELU:
            dx[i] = dy[i] if v > 0 else 0
        elif op == SIGMOID:
            dx[i] = dy[i] * v * (1 - v)
        else:
            dx[i] = dy[i] * (1 - v * v)


# ---------------------------------------------------------------------------------------------- row reductions

@cuda.jit(device=True, inline=True)
def _block_reduce(v, sh, is_max):
    """Sum (or max) of v over the block (blockDim.x a power of two), returned to every thread."""
    t = cuda.threadIdx.x
    sh[t] = v
    cuda.syncthreads()
    w = cuda.blockDim.x // 2
    while w > 0:
        if t < w:
            if is_max:
                if sh[t + w] > sh[t]:
                    sh[t] = sh[t + w]
            else:
                sh[t] += sh[t + w]
        cuda.syncthreads()
        w //= 2
    total = sh[0]
    cuda.syncthreads()          # everyone has read sh[0] before the next reduction overwrites it
    return total


@cuda.jit(device=True, inline=True)
def _softmax_row(x, y, base, V, sh):
    """probs of row x[base:base+V] into y; returns (max, sum of exp(x - max)) in float64."""
    t, T = cuda.threadIdx.x, cuda.blockDim.x
    m = -math.inf
    for j in range(t, V, T):
        a = float64(x[base + j])
        if a > m or a != a:     # a NaN wins (then the whole row is NaN, as in the reference)
            m = a
    m = _block_reduce(m, sh, True)
    s = 0.0
    for j in range(t, V, T):
        s += math.exp(float64(x[base + j]) - m)
    s = _block_reduce(s, sh, False)
    inv = 1.0 / s
    for j in range(t, V, T):
        y[base + j] = math.exp(float64(x[base + j]) - m) * inv
    return m, s


@cuda.jit
def softmax_rows(x, y, R, V):
    sh = cuda.shared.array(ROW_BS, float64)
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
        _softmax_row(x, y, r * V, V, sh)


@cuda.jit
def softmax_bwd_rows(dy, y, dx, R, V):
    sh = cuda.shared.array(ROW_BS, float64)
    t, T = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
        base = r * V
        d = 0.0
        for j in range(t, V, T):
            d += float64(dy[base + j]) * float64(y[base + j])
        d = _block_reduce(d, sh, False)
        for j in range(t, V, T):
            dx[base + j] = float64(y[base + j]) * (float64(dy[base + j]) - d)


@cuda.jit
def xent_rows(x, tgt, probs, row_loss, R, V, ignore, eps, dense):
    """Row r's loss: class ids: -log softmax(x)[t] (eps 0, log-sum-exp form) or -log(p[t] + eps), 0 if ignored;
    dense: sum_j t_j (max + log(sum) - x_j) (eps 0) or -sum_j t_j log(p_j + eps). Labels were checked on the host."""
    sh = cuda.shared.array(ROW_BS, float64)
    t, T = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
        base = r * V
        m, s = _softmax_row(x, probs, base, V, sh)
        if dense:
            c = m + math.log(s)
            acc = 0.0
            for j in range(t, V, T):
                tj = float64(tgt[base + j])
                if tj != 0:
                    if eps == 0:
                        acc += tj * (c - float64(x[base + j]))
                    else:
                        acc -= tj * math.log(math.exp(float64(x[base + j]) - m) / s + eps)
            acc = _block_reduce(acc, sh, False)
            if t == 0:
                row_loss[r] = acc
        elif t == 0:
            lab = int64(tgt[r])
            if lab == ignore:
                row_loss[r] = 0.0
            elif eps == 0:
                row_loss[r] = math.log(s) + m - float64(x[base + lab])
            else:
                row_loss[r] = -math.log(math.exp(float64(x[base + lab]) - m) / s + eps)


@cuda.jit
def xent_bwd_rows(probs, tgt, dx, R, V, ignore, scale, dense):
    t, T = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
        base = r * V
        if dense:
            for j in range(t, V, T):
                dx[base + j] = (float64(probs[base + j]) - float64(tgt[base + j])) * scale
        else:
            lab = int64(tgt[r])
            for j in range(t, V, T):
                if lab == ignore:
                    dx[base + j] = 0
                else:
                    dx[base + j] = (float64(probs[base + j]) - (1.0 if j == lab else 0.0)) * scale


# ------------------------------------------------------------------------------------------ sigmoid cross-entropy

@cuda.jit
def sig_xent(x, tgt, y, part, n, eps):
    sh = cuda.shared.array(BS, float64)
    i0, step = cuda.grid(1), cuda.gridsize(1)
    acc = 0.0
    for i in range(i0, n, step):
        a = float64(x[i])
        tj = float64(tgt[i])
        e = math.exp(-abs(a))
        r = 1.0 / (1.0 + e)
        yv = r if a >= 0 else e * r
        ym = e * r if a >= 0 else r          # 1 - y without cancellation
        y[i] = yv
        if eps == 0:
            acc += max(a, 0.0) - tj * a + math.log1p(e)
        else:
            acc -= tj * math.log(yv + eps) + (1 - tj) * math.log(ym + eps)
    acc = _block_reduce(acc, sh, False)
    if cuda.threadIdx.x == 0:
        part[cuda.blockIdx.x] = acc


@cuda.jit
def sig_xent_bwd(y, tgt, dx, n, scale):
    i0, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(i0, n, step):
        dx[i] = (float64(y[i]) - float64(tgt[i])) * scale


# ---------------------------------------------------------------------------------------------------- public

def _flat(v):
    return v.reshape(v.size)


def _act(op, x):
    kind = kind_of(x)
    d = view(x)
    y = _empty(d.shape, d.dtype, kind)
    launch(act_fwd, d.dtype.char, _grid(d.size), BS, _flat(d), _flat(y[1]), op)
    return _result(y, kind)


def _act_bwd(op, dy, y):
    kind = kind_of(dy, y)
    g, v = view(dy), view(y)
    dx = _empty(v.shape, v.dtype, kind)
    launch(act_bwd, v.dtype.char, _grid(v.size), BS, _flat(g), _flat(v), _flat(dx[1]), op)
    return _result(dx, kind)


def relu(x):
    return _act(RELU, x)


def relu_backward(dy, y):
    return _act_bwd(RELU, dy, y)


def sigmoid(x):
    return _act(SIGMOID, x)


def sigmoid_backward(dy, y):
    return _act_bwd(SIGMOID, dy, y)


def tanh(x):
    return _act(TANH, x)


def tanh_backward(dy, y):
    return _act_bwd(TANH, dy, y)


def _rows(d):
    V = int(d.shape[-1])
    return d.size // V, V


def _row_grid(R):
    return max(1, min(R, 65535))


def softmax(x):
    kind = kind_of(x)
    d = view(x)
    R, V = _rows(d)
    y = _empty(d.shape, d.dtype, kind)
    launch(softmax_rows, d.dtype.char, _row_grid(R), ROW_BS, _flat(d), _flat(y[1]), R, V)
    return _result(y, kind)


def softmax_backward(dy, y):
    kind = kind_of(dy, y)
    g, v = view(dy), view(y)
    R, V = _rows(v)
    dx = _empty(v.shape, v.dtype, kind)
    launch(softmax_bwd_rows, v.dtype.char, _row_grid(R), ROW_BS, _flat(g), _flat(v), _flat(dx[1]), R, V)
    return _result(dx, kind)


def _host(a, d):
    return a if isinstance(a, np.ndarray) else d.device().copy_to_host()


def _labels(target, t, R, V, ignore_index):
    """Counted rows of the class ids (copied to the host); a label outside [0, V) is refused before any launch."""
    lab = _host(target, t).reshape(-1)
    bad = np.flatnonzero((lab != ignore_index) & ((lab < 0) | (lab >= V)))
    if bad.size:
        raise _checks.bad_label(lab[bad[0]], bad[0], V, ignore_index)
    return int(np.count_nonzero(lab != ignore_index))


def softmax_cross_entropy(x, target, ignore_index=-100, eps=0.0):
    kind = kind_of(x)
    d, t = view(x), view(target)
    R, V = _rows(d)
    dense = tuple(t.shape) == tuple(d.shape)
    counted = R if dense else _labels(target, t, R, V, ignore_index)
    probs = _empty(d.shape, d.dtype, kind)
    row_loss = cuda.device_array(R, np.float64)
    launch(xent_rows, (d.dtype.char, t.dtype.char), _row_grid(R), ROW_BS, _flat(d), _flat(t), _flat(probs[1]),
           _of(row_loss), R, V, int(ignore_index), float(eps), dense)
    loss = float(row_loss.copy_to_host().sum()) / counted if counted else 0.0
    return loss, _result(probs, kind)


def softmax_cross_entropy_backward(probs, target, dloss=1.0, ignore_index=-100):
    kind = kind_of(probs)
    p, t = view(probs), view(target)
    R, V = _rows(p)
    dense = tuple(t.shape) == tuple(p.shape)
    counted = R if dense else _labels(target, t, R, V, ignore_index)
    dx = _empty(p.shape, p.dtype, kind)
    scale = float(dloss) / counted if counted else 0.0
    launch(xent_bwd_rows, (p.dtype.char, t.dtype.char), _row_grid(R), ROW_BS, _flat(p), _flat(t), _flat(dx[1]),
           R, V, int(ignore_index), scale, dense)
    return _result(dx, kind)


def sigmoid_cross_entropy(x, target, eps=0.0):
    kind = kind_of(x)
    d, t = view(x), view(target)
    n = d.size
    y = _empty(d.shape, d.dtype, kind)
    blocks = _grid(n)
    part = cuda.device_array(blocks, np.float64)
    launch(sig_xent, (d.dtype.char, t.dtype.char), blocks, BS, _flat(d), _flat(t), _flat(y[1]), _of(part), n,
           float(eps))
    return float(part.copy_to_host().sum()) / n, _result(y, kind)


def sigmoid_cross_entropy_backward(y, target, dloss=1.0):
    kind = kind_of(y)
    v, t = view(y), view(target)
    n = v.size
    dx = _empty(v.shape, v.dtype, kind)
    launch(sig_xent_bwd, (v.dtype.char, t.dtype.char), _grid(n), BS, _flat(v), _flat(t), _flat(dx[1]), n,
           float(dloss) / n)
    return _result(dx, kind)
