"""The specification of fastnn: every op, forward and backward, in plain NumPy.

Every other backend (``cpu``, ``cuda``) must compute the same functions; the exact contract and semantics are
in docs/internals.md. The code here favours being obviously correct over being fast, with two exceptions that
keep it usable as the benchmark baseline: convolution is im2col + matrix multiply, and windowed ops loop over
the KH*KW kernel offsets (each step a strided slice of the whole batch), never over pixels.

Conventions: NCHW; computation in the input dtype, with sums that feed statistics or reductions accumulated in
float64; outputs have the input dtype (max-pool indices are int64). Nothing is validated here (the public API in
``fastnn/__init__.py`` validates), but pair arguments may be ints or pairs and pooling ``stride`` may be None.
"""
from typing import NamedTuple

import numpy as np

from ._shapes import out_size as _out_size, pair as _pair   # the output-size formula and pair normaliser, once

__all__ = [
    "LSTMCache", "im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward", "batch_norm", "batch_norm_backward", "lstm_cell",
    "lstm_cell_backward", "lstm", "lstm_backward",
]


def _window(k, s, d, out):
    """Slice of the padded axis read by kernel offset ``k``: positions k*d, k*d + s, ... (``out`` of them)."""
    return slice(k * d, k * d + s * (out - 1) + 1, s)


def _sum64(a, axis):
    """Sum in float64 (reductions lose precision in float32), returned in ``a.dtype``."""
    return a.sum(axis=axis, dtype=np.float64).astype(a.dtype)


# ----------------------------------------------------------------------------------------------- im2col / col2im

def _col_shape(input_shape, kernel_size, stride, padding, dilation, out_hw=None):
    """Normalised pairs and the output size of a convolution window over input_shape.

    out_hw: (OH, OW) when the caller has computed it already (the public API's checks), else computed here."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding, dilation))
    _, _, h, w = input_shape
    oh, ow = out_hw or (_out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw))
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), oh, ow


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out_hw=None):
    """(N,C,H,W) -> (N*OH*OW, C*KH*KW): row (n*OH + oh)*OW + ow, column (c*KH + kh)*KW + kw; padding reads 0."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), oh, ow = _col_shape(x.shape, kernel_size, stride, padding, dilation,
                                                                out_hw)
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, _window(i, sh, dh, oh), _window(j, sw, dw, ow)]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def col2im(col, input_shape, kernel_size, stride=1, padding=0, dilation=1, out_hw=None):
    """The adjoint of im2col: scatter-add the columns back into an (N,C,H,W) array (overlaps are summed)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), oh, ow = _col_shape(input_shape, kernel_size, stride, padding, dilation,
                                                                out_hw)
    n, c, h, w = input_shape
    cols = col.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            # within one kernel offset the strided slice touches each position once, so += is a true scatter-add
            xp[:, :, _window(i, sh, dh, oh), _window(j, sw, dw, ow)] += cols[:, :, i, j]
    return np.ascontiguousarray(xp[:, :, ph:ph + h, pw:pw + w])


# ------------------------------------------------------------------------------------------------------ conv2d

def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, out_hw=None):
    """y (N,K,OH,OW) = cross-correlation of x (N,C,H,W) with weight (K, C//groups, KH, KW), plus bias (K,)."""
    n = x.shape[0]
    k, cg, kh, kw = weight.shape
    *_, oh, ow = _col_shape(x.shape, (kh, kw), stride, padding, dilation, out_hw)
    col = im2col(x, (kh, kw), stride, padding, dilation, (oh, ow))       # (N*OH*OW, C*KH*KW)
    col = col.reshape(col.shape[0], groups, cg * kh * kw)
    wg = weight.reshape(groups, k // groups, cg * kh * kw)
    y = np.concatenate([col[:, g] @ wg[g].T for g in range(groups)], axis=1)  # (N*OH*OW, K)
    if bias is not None:
        y += bias
    return np.ascontiguousarray(y.reshape(n, oh, ow, k).transpose(0, 3, 1, 2))


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of conv2d: (dx like x, dweight like weight, dbias (K,))."""
    k, cg, kh, kw = weight.shape
    col = im2col(x, (kh, kw), stride, padding, dilation)
    col = col.reshape(col.shape[0], groups, cg * kh * kw)
    wg = weight.reshape(groups, k // groups, cg * kh * kw)
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, groups, k // groups)     # (N*OH*OW, G, K/G)
    dweight = np.concatenate([dy2[:, g].T @ col[:, g] for g in range(groups)], axis=0)
    dcol = np.concatenate([dy2[:, g] @ wg[g] for g in range(groups)], axis=1)
    dx = col2im(dcol, x.shape, (kh, kw), stride, padding, dilation)
    return dx, dweight.reshape(weight.shape), _sum64(dy, (0, 2, 3))


# ----------------------------------------------------------------------------------------------------- pooling

def _pool_geometry(x_shape, kernel_size, stride, padding, out_hw=None):
    """Normalised pairs (stride None = kernel_size) and the output size of a pooling window (out_hw if given)."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = _pair(kernel_size if stride is None else stride)
    h, w = x_shape[-2:]
    oh, ow = out_hw or (_out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw))
    return (kh, kw), (sh, sw), (ph, pw), oh, ow


def max_pool2d(x, kernel_size, stride=None, padding=0, out_hw=None):
    """(y, indices): window maxima and their flat int64 index ih*W + iw in the (H, W) plane.

    Padding is never selected; the first maximum in row-major window order wins; a NaN is the maximum (first NaN wins).
    """
    (kh, kw), (sh, sw), (ph, pw), oh, ow = _pool_geometry(x.shape, kernel_size, stride, padding, out_hw)
    h, w = x.shape[-2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.full(x.shape[:2] + (oh, ow), -np.inf, dtype=x.dtype)
    idx = np.full(y.shape, -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * sh - ph        # input row of kernel offset 0, per output row
    cols = np.arange(ow)[None, :] * sw - pw
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, _window(i, sh, 1, oh), _window(j, sw, 1, ow)]
            inside = (rows + i >= 0) & (rows + i < h) & (cols + j >= 0) & (cols + j < w)   # (OH, OW)
            # strict > keeps the first maximum; a NaN replaces any non-NaN; idx < 0 takes the first real element
            take = inside & ((idx < 0) | (v > y) | (np.isnan(v) & ~np.isnan(y)))
            y = np.where(take, v, y)
            idx = np.where(take, (rows + i) * w + (cols + j), idx)
    return y, idx


def max_pool2d_backward(dy, indices, input_shape):
    """dx (input_shape): each dy element added at its argmax position (overlapping windows accumulate)."""
    n, c, h, w = input_shape
    idx = indices.reshape(n * c, -1)
    bad = np.flatnonzero((idx < 0) | (idx >= h * w))   # a negative index would wrap around silently
    if bad.size:
        from ._checks import bad_pool_index
        raise bad_pool_index(idx.flat[bad[0]], bad[0], h * w)
    dx = np.zeros((n * c, h * w), dtype=dy.dtype)
    planes = np.arange(n * c)[:, None]
    np.add.at(dx, (planes, idx), dy.reshape(n * c, -1))
    return dx.reshape(input_shape)


def _avg_divisor(x_shape, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad):
    """(OH, OW) divisors: KH*KW, or the number of window positions inside the unpadded input."""
    if count_include_pad:
        return np.full((oh, ow), kh * kw)
    h, w = x_shape[-2:]
    rows = np.arange(oh) * sh - ph
    cols = np.arange(ow) * sw - pw
    nh = np.minimum(rows + kh, h) - np.maximum(rows, 0)
    nw = np.minimum(cols + kw, w) - np.maximum(cols, 0)
    return nh[:, None] * nw[None, :]


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, out_hw=None):
    """Window means; padding counts as 0 and, if count_include_pad, in the divisor."""
    (kh, kw), (sh, sw), (ph, pw), oh, ow = _pool_geometry(x.shape, kernel_size, stride, padding, out_hw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    total = np.zeros(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            total += xp[:, :, _window(i, sh, 1, oh), _window(j, sw, 1, ow)]
    div = _avg_divisor(x.shape, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad)
    return (total / div).astype(x.dtype)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    """dx (input_shape): each dy / divisor spread over its window (overlaps summed, padding dropped)."""
    (kh, kw), (sh, sw), (ph, pw), oh, ow = _pool_geometry(input_shape, kernel_size, stride, padding, dy.shape[2:])
    n, c, h, w = input_shape
    g = (dy / _avg_divisor(input_shape, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad)).astype(dy.dtype)
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, _window(i, sh, 1, oh), _window(j, sw, 1, ow)] += g
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


# -------------------------------------------------------------------------------------------------- batch norm

def _bn_axes_shape(x):
    """Reduction axes and the broadcast shape of a per-channel (C,) vector, for (N,C) or (N,C,H,W) input."""
    return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))


def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5):
    """(y, mean, invstd): per-channel normalisation, then y = gamma * xhat + beta.

    training: batch mean and biased variance (in float64); running stats, if given, are updated in place with the
    unbiased variance. Otherwise the running stats normalise and (y, running_mean copy, invstd) is returned.
    """
    axes, bshape = _bn_axes_shape(x)
    dt = x.dtype
    if training:
        m = x.size // x.shape[1]
        x64 = x.astype(np.float64)
        mean64 = x64.mean(axis=axes)
        var64 = ((x64 - mean64.reshape(bshape)) ** 2).mean(axis=axes)   # two-pass: no cancellation
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean64
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var64 * (m / (m - 1))
        mean, invstd = mean64.astype(dt), (1.0 / np.sqrt(var64 + eps)).astype(dt)
    else:
        mean = running_mean.astype(dt, copy=True)
        invstd = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(dt)
    scale = invstd if gamma is None else invstd * gamma
    y = (x - mean.reshape(bshape)) * scale.reshape(bshape)
    if beta is not None:
        y += beta.reshape(bshape)
    return y.astype(dt, copy=False), mean, invstd


def batch_norm_backward(dy, x, gamma, mean, invstd, training=True):
    """(dx, dgamma, dbeta) for batch_norm given its saved (mean, invstd); gamma None means ones.

    training=True differentiates through the batch statistics; training=False treats them as constants.
    """
    axes, bshape = _bn_axes_shape(x)
    dt = x.dtype
    m = x.size // x.shape[1]
    g = np.ones(x.shape[1], dtype=dt) if gamma is None else gamma
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    dbeta64 = dy.sum(axis=axes, dtype=np.float64)
    dgamma64 = (dy * xhat).sum(axis=axes, dtype=np.float64)
    gi = (g * invstd).reshape(bshape)
    if training:
        # dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat))
        dx = gi * (dy - (dbeta64 / m).astype(dt).reshape(bshape) - xhat * (dgamma64 / m).astype(dt).reshape(bshape))
    else:
        dx = dy * gi
    return dx.astype(dt, copy=False), dgamma64.astype(dt), dbeta64.astype(dt)


# -------------------------------------------------------------------------------------------------------- LSTM

class LSTMCache(NamedTuple):
    """What the LSTM backward needs; arrays belong to ``backend`` (see docs/internals.md)."""
    backend: str
    gate_order: str
    x: object       # (N,D) for lstm_cell, (N,T,D) for lstm
    h: object       # initial hidden state (N,H)
    c: object       # initial cell state (N,H)
    w_ih: object    # (D,4H)
    w_hh: object    # (H,4H)
    gates: object   # activated gates (N,4H) or (N,T,4H), blocks in gate_order
    hs: object      # hidden state after each step (N,H) or (N,T,H)
    cs: object      # cell state after each step (N,H) or (N,T,H)


def _sigmoid(a):
    """The logistic function."""
    # tanh form: no overflow warning for large |a|, unlike 1/(1+exp(-a))
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _blocks(gate_order, hsize):
    """{gate letter: slice of the 4H axis}."""
    return {ch: slice(k * hsize, (k + 1) * hsize) for k, ch in enumerate(gate_order)}


def _step(x, h, c, w_ih, w_hh, bias, gate_order):
    """One LSTM step: (activated gates (N,4H), h_next, c_next)."""
    a = x @ w_ih + h @ w_hh
    if bias is not None:
        a += bias
    b = _blocks(gate_order, h.shape[1])
    for ch in "ifo":
        a[:, b[ch]] = _sigmoid(a[:, b[ch]])
    a[:, b["g"]] = np.tanh(a[:, b["g"]])
    c_next = a[:, b["f"]] * c + a[:, b["i"]] * a[:, b["g"]]
    h_next = a[:, b["o"]] * np.tanh(c_next)
    return a, h_next, c_next


def _step_backward(dh, dc, gates, c, c_next, gate_order):
    """Gradient of one step w.r.t. the gate pre-activations (N,4H) and the previous cell state."""
    b = _blocks(gate_order, c.shape[1])
    i, f, g, o = (gates[:, b[ch]] for ch in "ifgo")
    tc = np.tanh(c_next)
    dc = dc + dh * o * (1 - tc * tc)
    da = np.empty_like(gates)
    da[:, b["i"]] = dc * g * i * (1 - i)
    da[:, b["f"]] = dc * c * f * (1 - f)
    da[:, b["g"]] = dc * i * (1 - g * g)
    da[:, b["o"]] = dh * tc * o * (1 - o)
    return da, dc * f


def _zeros_if_none(a, shape, dtype):
    """None means zeros (initial states, upstream gradients)."""
    return np.zeros(shape, dtype=dtype) if a is None else a


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order="ifgo"):
    """One step: (h_next, c_next, cache); h/c None mean zeros."""
    nh = (x.shape[0], w_hh.shape[0])
    h = _zeros_if_none(h, nh, x.dtype)
    c = _zeros_if_none(c, nh, x.dtype)
    gates, h_next, c_next = _step(x, h, c, w_ih, w_hh, bias, gate_order)
    return h_next, c_next, LSTMCache("numpy", gate_order, x, h, c, w_ih, w_hh, gates, h_next, c_next)


def lstm_cell_backward(dh_next, dc_next, cache):
    """(dx, dh, dc, dw_ih, dw_hh, dbias) of one step; dh_next/dc_next None mean zeros."""
    x, h, c = cache.x, cache.h, cache.c
    dh_next = _zeros_if_none(dh_next, h.shape, x.dtype)
    dc_next = _zeros_if_none(dc_next, h.shape, x.dtype)
    da, dc = _step_backward(dh_next, dc_next, cache.gates, c, cache.cs, cache.gate_order)
    return (da @ cache.w_ih.T, da @ cache.w_hh.T, dc, x.T @ da, h.T @ da, _sum64(da, 0))


def lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order="ifgo"):
    """Run the cell over xs (N,T,D): (hs (N,T,H), h_n, c_n, cache); h0/c0 None mean zeros."""
    n, t, _ = xs.shape
    hsize = w_hh.shape[0]
    h = h0 = _zeros_if_none(h0, (n, hsize), xs.dtype)
    c = c0 = _zeros_if_none(c0, (n, hsize), xs.dtype)
    gates = np.empty((n, t, 4 * hsize), dtype=xs.dtype)
    hs = np.empty((n, t, hsize), dtype=xs.dtype)
    cs = np.empty((n, t, hsize), dtype=xs.dtype)
    for s in range(t):
        gates[:, s], h, c = _step(xs[:, s], h, c, w_ih, w_hh, bias, gate_order)
        hs[:, s], cs[:, s] = h, c
    return hs, h.copy(), c.copy(), LSTMCache("numpy", gate_order, xs, h0, c0, w_ih, w_hh, gates, hs, cs)


def lstm_backward(dhs, dh_n, dc_n, cache):
    """Backpropagation through time: (dxs, dh0, dc0, dw_ih, dw_hh, dbias); dhs/dh_n/dc_n None mean zeros."""
    xs, hs, cs = cache.x, cache.hs, cache.cs
    n, t, d = xs.shape
    hsize = hs.shape[2]
    dh = _zeros_if_none(dh_n, (n, hsize), xs.dtype)
    dc = _zeros_if_none(dc_n, (n, hsize), xs.dtype)
    da = np.empty_like(cache.gates)
    for s in reversed(range(t)):
        if dhs is not None:
            dh = dh + dhs[:, s]
        c_prev = cache.c if s == 0 else cs[:, s - 1]
        da[:, s], dc = _step_backward(dh, dc, cache.gates[:, s], c_prev, cs[:, s], cache.gate_order)
        dh = da[:, s] @ cache.w_hh.T
    dxs = da @ cache.w_ih.T
    h_prev = np.concatenate([cache.h[:, None], hs[:, :-1]], axis=1)   # state entering each step
    da2 = da.reshape(n * t, -1)
    dw_ih = xs.reshape(n * t, d).T @ da2
    dw_hh = h_prev.reshape(n * t, hsize).T @ da2
    return dxs, dh, dc, dw_ih, dw_hh, _sum64(da2, 0)


# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
# Elementwise ops compute in the input dtype; softmax sums and the losses accumulate in float64. Backwards take
# the forward's output y (as the books' layers keep it), not x. The losses return (Python float, activations).
__all__ += ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax",
            "softmax_backward", "softmax_cross_entropy", "softmax_cross_entropy_backward", "sigmoid_cross_entropy",
            "sigmoid_cross_entropy_backward"]


def relu(x):
    """max(x, 0); NaN stays NaN (as the books' mask code and PyTorch)."""
    return np.where(x <= 0, x.dtype.type(0), x)


def relu_backward(dy, y):
    """dy where y > 0, else 0."""
    return np.where(y > 0, dy, dy.dtype.type(0))


def sigmoid(x):
    with np.errstate(over="ignore"):          # exp(-x) overflows to inf for x << 0: the result 0 is right
        return (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    return dy * (1 - y * y)


def _softmax64(x):
    """(probs, log of the row sums, row max) over the last axis, in float64."""
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=-1, keepdims=True)
    return e / s, np.log(s), m


def softmax(x):
    """exp(x - max) / sum over the last axis."""
    return _softmax64(x)[0].astype(x.dtype)


def softmax_backward(dy, y):
    y64 = y.astype(np.float64)
    dot = np.sum(dy.astype(np.float64) * y64, axis=-1, keepdims=True)
    return (y64 * (dy - dot)).astype(dy.dtype)


def _rows(x):
    """x (..., V) as (R, V): the rows the losses average over (a 1-D x is one row)."""
    return x.reshape(-1, x.shape[-1])


def _class_ids(target, num_classes, ignore_index):
    """Flat int64 class ids and the counted rows; a label outside [0, V) that is not ignore_index is an error."""
    t = np.asarray(target).reshape(-1).astype(np.int64)
    keep = t != ignore_index
    bad = np.flatnonzero(keep & ((t < 0) | (t >= num_classes)))
    if bad.size:
        from ._checks import bad_label
        raise bad_label(t[bad[0]], bad[0], num_classes, ignore_index)
    return t, np.flatnonzero(keep)


def softmax_cross_entropy(x, target, ignore_index=-100, eps=0.0):
    """(loss, probs): loss = mean over counted rows of -log(probs[label] + eps).

    target: integer class ids of shape x.shape[:-1] (rows labelled ignore_index are not counted), or a float
    array of x's shape (one-hot or probabilities: every row counted, loss -sum(t*log(p + eps)) / rows).
    With eps = 0 the log is taken as log-softmax, x - max - log(sum): the same number, finite where probs
    underflow. No counted row: loss 0.0."""
    p, lse, m = _softmax64(_rows(x))
    logp = _rows(x).astype(np.float64) - m - lse
    if target.shape == x.shape:                                   # one-hot / probabilities
        t = _rows(target).astype(np.float64)
        if eps == 0:
            tl = np.where(t != 0, t * logp, 0.0)                  # 0 * -inf (an underflowed p) counts 0
        else:
            tl = t * np.log(p + eps)
        loss = -tl.sum() / p.shape[0]
    else:
        t, rows = _class_ids(target, x.shape[-1], ignore_index)
        picked = logp[rows, t[rows]] if eps == 0 else np.log(p[rows, t[rows]] + eps)
        loss = -picked.sum() / len(rows) if len(rows) else 0.0
    return float(loss), p.astype(x.dtype).reshape(x.shape)


def softmax_cross_entropy_backward(probs, target, dloss=1.0, ignore_index=-100):
    """dx = (probs - onehot(target)) * dloss / counted_rows; ignored rows 0."""
    p = _rows(probs).astype(np.float64)
    if target.shape == probs.shape:
        dx = (p - _rows(target)) * (dloss / p.shape[0])
    else:
        t, rows = _class_ids(target, probs.shape[-1], ignore_index)
        dx = np.zeros_like(p)
        dx[rows] = p[rows]
        dx[rows, t[rows]] -= 1
        dx *= dloss / max(len(rows), 1)
    return dx.astype(probs.dtype).reshape(probs.shape)


def sigmoid_cross_entropy(x, target, eps=0.0):
    """(loss, y): y = sigmoid(x); loss = -mean(t*log(y + eps) + (1-t)*log(1 - y + eps)) over all elements.

    With eps = 0 the loss is taken in its stable form max(x, 0) - t*x + log(1 + exp(-|x|)) (the same number)."""
    x64, t = x.astype(np.float64), np.asarray(target, dtype=np.float64)
    e = np.exp(-np.abs(x64))
    y = np.where(x64 >= 0, 1, e) / (1 + e)
    if eps == 0:
        ls = np.maximum(x64, 0) - t * x64 + np.log1p(e)
    else:
        ls = -(t * np.log(y + eps) + (1 - t) * np.log(1 - y + eps))
    return float(ls.mean()), y.astype(x.dtype)


def sigmoid_cross_entropy_backward(y, target, dloss=1.0):
    """dx = (y - t) * dloss / t.size."""
    return ((y - np.asarray(target, dtype=np.float64)) * (dloss / y.size)).astype(y.dtype)
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
import math  # noqa: E402

__all__ += ["linear", "linear_backward", "embedding", "embedding_backward", "dropout", "dropout_backward"]

# The books' code: np.dot(x, W) + b over the last axis (TimeAffine reshapes (N*T, D)), W[idx], np.add.at, and a
# dropout whose mask comes from a counter-based generator (dropout_keep) so every backend draws the same one.

def linear(x, weight, bias=None):
    """y = x @ weight + bias over the last axis of x (..., D); weight (D, M) as the books store it."""
    y = np.dot(x.reshape(-1, x.shape[-1]), weight)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[1],))


def linear_backward(dy, x, weight, bias=True):
    """(dx, dweight, dbias or None): dx = dy @ W.T, dW = x.T @ dy, db = dy summed over every axis but the last."""
    d, m = weight.shape
    dy2, x2 = dy.reshape(-1, m), x.reshape(-1, d)
    dx = np.dot(dy2, weight.T).reshape(x.shape)
    return dx, np.dot(x2.T, dy2), (_sum64(dy2, 0) if bias else None)


def embedding(indices, weight):
    """weight[indices]: indices.shape + (D,)."""
    _check_rows(indices, weight.shape[0])
    return weight[indices]


def embedding_backward(dy, indices, num_embeddings):
    """dweight (num_embeddings, D): the dy rows added into the rows their indices name (np.add.at, as book 2)."""
    _check_rows(indices, num_embeddings)
    d = dy.shape[-1]
    dw = np.zeros((num_embeddings, d), dtype=dy.dtype)
    np.add.at(dw, indices.reshape(-1), dy.reshape(-1, d))
    return dw


def _check_rows(indices, v):
    """The out-of-range error every backend raises (negative indices would silently wrap in NumPy)."""
    flat = indices.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= v))
    if bad.size:
        from ._checks import bad_embedding_index
        raise bad_embedding_index(flat[bad[0]], bad[0], v)


_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _lowbias32(x):
    """A 32-bit integer hash (Chris Wellons' lowbias32) on a uint32 array; a bijection."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def dropout_key(seed, hi):
    """The 64-bit key of the elements i with i >> 32 == hi: splitmix64(seed ^ hi * 0xD1B54A32D192ED03)."""
    z = ((seed ^ (hi * 0xD1B54A32D192ED03)) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def dropout_threshold(p):
    """Element i is kept when its 32-bit draw u is >= ceil(p * 2^32), i.e. when u / 2^32 >= p (2^32: none kept)."""
    return math.ceil(p * 2.0 ** 32)


def dropout_keep(shape, p, seed):
    """The keep mask (bool) of dropout(x, p, seed) for x of `shape`: u(seed, i) >= p for the flat index i, with
    u = lowbias32(lowbias32(i_lo ^ k1) ^ k2) / 2^32, (k1, k2) = the halves of dropout_key(seed, i >> 32)."""
    n = math.prod(shape)
    thr = dropout_threshold(p)
    keep = np.zeros(n, dtype=bool)
    if thr < 2 ** 32:
        for hi in range(0, (n + _M32) >> 32):
            start, stop = hi << 32, min(n, (hi + 1) << 32)
            key = dropout_key(seed, hi)
            lo = np.arange(0, stop - start, dtype=np.uint32)       # start is a multiple of 2^32: lo counts from 0
            u = _lowbias32(_lowbias32(lo ^ np.uint32(key & _M32)) ^ np.uint32(key >> 32))
            keep[start:stop] = u >= np.uint32(thr)
    return keep.reshape(shape)


def dropout_scale(p, scale, dtype):
    """The factor kept elements are multiplied by: 1/(1-p) with scale (0 when p == 1: nothing is kept), else 1."""
    return np.dtype(dtype).type((1.0 / (1.0 - p) if p < 1 else 0.0) if scale else 1.0)


def dropout(x, p=0.5, seed=0, scale=True, mask=None):
    """y = x * keep * s: keep from the counter-based generator of (seed, flat index) (or `mask`, e.g. the books'
    `np.random.rand(*x.shape) > p`), s = 1/(1-p) when scale (inverted dropout), else 1."""
    keep = dropout_keep(x.shape, p, seed) if mask is None else mask
    return x * (keep * dropout_scale(p, scale, x.dtype))


def dropout_backward(dy, p=0.5, seed=0, scale=True, mask=None):
    """dx = dy * keep * s with the forward's mask (regenerated from the seed)."""
    return dropout(dy, p, seed, scale, mask)
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
# The tanh RNN and the GRU, in the LSTM's conventions above: w_ih (D,G), w_hh (H,G), h/h0 and upstream gradients
# None mean zeros, the cell is one step of the sequence. The GRU's gate_order names its two layouts:
#   "zrh" book 2's GRU: z = sig(x W_z + h U_z + b_z), r = sig(x W_r + h U_r + b_r),
#         h~ = tanh(x W_h + (r*h) U_h + b_h), h' = (1-z)*h + z*h~        (each b the sum of b_ih and b_hh)
#   "rzn" PyTorch's nn.GRU: r, z as above, n = tanh(x W_n + b_in + r*(h U_n + b_hn)), h' = (1-z)*n + z*h

__all__ += ["RNNCache", "GRUCache", "rnn_cell", "rnn_cell_backward", "rnn", "rnn_backward", "gru_cell",
            "gru_cell_backward", "gru", "gru_backward"]


class RNNCache(NamedTuple):
    """What the RNN backward needs; arrays belong to ``backend``."""
    backend: str
    x: object       # (N,D) for rnn_cell, (N,T,D) for rnn
    h: object       # initial hidden state (N,H) (zeros if None was passed)
    w_ih: object    # (D,H)
    w_hh: object    # (H,H)
    hs: object      # hidden state after each step (N,H) or (N,T,H)


class GRUCache(NamedTuple):
    """What the GRU backward needs; arrays belong to ``backend``."""
    backend: str
    gate_order: str  # "zrh" or "rzn"
    x: object        # (N,D) for gru_cell, (N,T,D) for gru
    h: object        # initial hidden state (N,H) (zeros if None was passed)
    w_ih: object     # (D,3H)
    w_hh: object     # (H,3H)
    gates: object    # activated gates (N,3H) or (N,T,3H): z, r, h~ ("zrh") or r, z, n ("rzn")
    hs: object       # hidden state after each step (N,H) or (N,T,H)
    hn: object       # the candidate's recurrent term per step: r*h_{t-1} ("zrh"), h_{t-1} @ U_n + b_hn ("rzn")
    has_b_ih: bool   # whether b_ih / b_hh were given (their gradients are None otherwise)
    has_b_hh: bool


def _rnn_step(x, h, w_ih, w_hh, bias):
    a = x @ w_ih + h @ w_hh
    if bias is not None:
        a += bias
    return np.tanh(a)


def rnn_cell(x, h, w_ih, w_hh, bias):
    """One step h' = tanh(x @ w_ih + h @ w_hh + bias): (h_next, cache); h None means zeros."""
    h = _zeros_if_none(h, (x.shape[0], w_hh.shape[0]), x.dtype)
    h_next = _rnn_step(x, h, w_ih, w_hh, bias)
    return h_next, RNNCache("numpy", x, h, w_ih, w_hh, h_next)


def rnn_cell_backward(dh_next, cache):
    """(dx, dh, dw_ih, dw_hh, dbias) of one step; dh_next None means zeros. dbias comes back even without a bias."""
    x, h = cache.x, cache.h
    dh_next = _zeros_if_none(dh_next, h.shape, x.dtype)
    da = dh_next * (1 - cache.hs * cache.hs)
    return da @ cache.w_ih.T, da @ cache.w_hh.T, x.T @ da, h.T @ da, _sum64(da, 0)


def rnn(xs, h0, w_ih, w_hh, bias):
    """Run the cell over xs (N,T,D): (hs (N,T,H), h_n, cache); h0 None means zeros."""
    n, t, _ = xs.shape
    h = h0 = _zeros_if_none(h0, (n, w_hh.shape[0]), xs.dtype)
    hs = np.empty((n, t, w_hh.shape[0]), dtype=xs.dtype)
    for s in range(t):
        h = hs[:, s] = _rnn_step(xs[:, s], h, w_ih, w_hh, bias)
    return hs, h.copy(), RNNCache("numpy", xs, h0, w_ih, w_hh, hs)


def rnn_backward(dhs, dh_n, cache):
    """Backpropagation through time: (dxs, dh0, dw_ih, dw_hh, dbias); dhs/dh_n None mean zeros."""
    xs, hs = cache.x, cache.hs
    n, t, d = xs.shape
    hsize = hs.shape[2]
    dh = _zeros_if_none(dh_n, (n, hsize), xs.dtype)
    da = np.empty_like(hs)
    for s in reversed(range(t)):
        if dhs is not None:
            dh = dh + dhs[:, s]
        da[:, s] = dh * (1 - hs[:, s] * hs[:, s])
        dh = da[:, s] @ cache.w_hh.T
    h_prev = np.concatenate([cache.h[:, None], hs[:, :-1]], axis=1)   # state entering each step
    da2 = da.reshape(n * t, hsize)
    return (da @ cache.w_ih.T, dh, xs.reshape(n * t, d).T @ da2, h_prev.reshape(n * t, hsize).T @ da2,
            _sum64(da2, 0))


GRU_ORDERS = ("zrh", "rzn")


def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh, gate_order):
    """One GRU step: (activated gates (N,3H), h_next, hn) - hn as in GRUCache."""
    H = h.shape[1]
    gi = x @ w_ih
    if b_ih is not None:
        gi += b_ih
    if gate_order == "zrh":
        zr = gi[:, :2 * H] + h @ w_hh[:, :2 * H]
        if b_hh is not None:
            zr += b_hh[:2 * H]
        z, r = _sigmoid(zr[:, :H]), _sigmoid(zr[:, H:])
        hn = r * h
        a = gi[:, 2 * H:] + hn @ w_hh[:, 2 * H:]
        if b_hh is not None:
            a += b_hh[2 * H:]
        hh = np.tanh(a)
        return np.concatenate([z, r, hh], axis=1), (1 - z) * h + z * hh, hn
    gh = h @ w_hh
    if b_hh is not None:
        gh += b_hh
    r, z = _sigmoid(gi[:, :H] + gh[:, :H]), _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    hn = gh[:, 2 * H:]
    n = np.tanh(gi[:, 2 * H:] + r * hn)
    return np.concatenate([r, z, n], axis=1), (1 - z) * n + z * h, hn


def _gru_step_backward(dh, gates, h, hn, w_hh, gate_order):
    """One step's gradients: (da_ih (N,3H): the gate pre-activations' on the input side, dh_prev, dw_hh, db_hh)."""
    H = h.shape[1]
    if gate_order == "zrh":
        z, r, hh = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        da_h = dh * z * (1 - hh * hh)
        drh = da_h @ w_hh[:, 2 * H:].T                      # gradient of r*h
        da_z = dh * (hh - h) * z * (1 - z)
        da_r = drh * h * r * (1 - r)
        da_zr = np.concatenate([da_z, da_r], axis=1)
        dh_prev = dh * (1 - z) + r * drh + da_zr @ w_hh[:, :2 * H].T
        da = np.concatenate([da_zr, da_h], axis=1)
        return da, dh_prev, np.concatenate([h.T @ da_zr, hn.T @ da_h], axis=1), da
    r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
    da_n = dh * (1 - z) * (1 - n * n)
    da_z = dh * (h - n) * z * (1 - z)
    da_r = da_n * hn * r * (1 - r)
    da_hh = np.concatenate([da_r, da_z, da_n * r], axis=1)  # gradient of h @ w_hh + b_hh
    return (np.concatenate([da_r, da_z, da_n], axis=1), dh * z + da_hh @ w_hh.T, h.T @ da_hh, da_hh)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh"):
    """One GRU step: (h_next, cache); h None means zeros."""
    h = _zeros_if_none(h, (x.shape[0], w_hh.shape[0]), x.dtype)
    gates, h_next, hn = _gru_step(x, h, w_ih, w_hh, b_ih, b_hh, gate_order)
    return h_next, GRUCache("numpy", gate_order, x, h, w_ih, w_hh, gates, h_next, hn, b_ih is not None,
                            b_hh is not None)


def _gru_bias_grads(cache, db_ih, db_hh):
    return db_ih if cache.has_b_ih else None, db_hh if cache.has_b_hh else None


def gru_cell_backward(dh_next, cache):
    """(dx, dh, dw_ih, dw_hh, db_ih, db_hh) of one step; dh_next None means zeros; db_* None where b_* was None."""
    x, h = cache.x, cache.h
    dh_next = _zeros_if_none(dh_next, h.shape, x.dtype)
    da, dh, dw_hh, da_hh = _gru_step_backward(dh_next, cache.gates, h, cache.hn, cache.w_hh, cache.gate_order)
    return (da @ cache.w_ih.T, dh, x.T @ da, dw_hh, *_gru_bias_grads(cache, _sum64(da, 0), _sum64(da_hh, 0)))


def gru(xs, h0, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh"):
    """Run the GRU over xs (N,T,D): (hs (N,T,H), h_n, cache); h0 None means zeros."""
    n, t, _ = xs.shape
    hsize = w_hh.shape[0]
    h = h0 = _zeros_if_none(h0, (n, hsize), xs.dtype)
    gates = np.empty((n, t, 3 * hsize), dtype=xs.dtype)
    hs = np.empty((n, t, hsize), dtype=xs.dtype)
    hn = np.empty((n, t, hsize), dtype=xs.dtype)
    for s in range(t):
        gates[:, s], h, hn[:, s] = _gru_step(xs[:, s], h, w_ih, w_hh, b_ih, b_hh, gate_order)
        hs[:, s] = h
    return hs, h.copy(), GRUCache("numpy", gate_order, xs, h0, w_ih, w_hh, gates, hs, hn, b_ih is not None,
                                  b_hh is not None)


def gru_backward(dhs, dh_n, cache):
    """Backpropagation through time: (dxs, dh0, dw_ih, dw_hh, db_ih, db_hh); dhs/dh_n None mean zeros."""
    xs, hs = cache.x, cache.hs
    n, t, d = xs.shape
    hsize = hs.shape[2]
    dh = _zeros_if_none(dh_n, (n, hsize), xs.dtype)
    da = np.empty_like(cache.gates)
    da_hh = np.empty_like(cache.gates)
    dw_hh = np.zeros_like(cache.w_hh)
    for s in reversed(range(t)):
        if dhs is not None:
            dh = dh + dhs[:, s]
        h_prev = cache.h if s == 0 else hs[:, s - 1]
        da[:, s], dh, dw, da_hh[:, s] = _gru_step_backward(dh, cache.gates[:, s], h_prev, cache.hn[:, s],
                                                           cache.w_hh, cache.gate_order)
        dw_hh += dw
    da2 = da.reshape(n * t, -1)
    return (da @ cache.w_ih.T, dh, xs.reshape(n * t, d).T @ da2, dw_hh,
            *_gru_bias_grads(cache, _sum64(da2, 0), _sum64(da_hh.reshape(n * t, -1), 0)))
# ==== end rnn ====

# ==== optim: fused optimizer steps ====

# The books' optimizer updates (Deep Learning from Scratch 1 and 2, common/optimizer.py, the same formulas in both),
# as their loop over the parameters: params and the state lists are updated IN PLACE, one array after the other.
__all__ += ["sgd_step", "momentum_step", "nesterov_step", "adagrad_step", "rmsprop_step", "adam_step"]


def sgd_step(params, grads, lr):
    """p -= lr*g for each parameter."""
    for p, g in zip(params, grads):
        p -= lr * g


def momentum_step(params, grads, velocities, lr, momentum=0.9):
    """v = momentum*v - lr*g; p += v."""
    for p, g, v in zip(params, grads, velocities):
        v[...] = momentum * v - lr * g
        p += v


def nesterov_step(params, grads, velocities, lr, momentum=0.9):
    """v *= m; v -= lr*g; p += m*m*v; p -= (1+m)*lr*g (Nesterov's momentum as the books write it)."""
    for p, g, v in zip(params, grads, velocities):
        v *= momentum
        v -= lr * g
        p += momentum * momentum * v
        p -= (1 + momentum) * lr * g


def adagrad_step(params, grads, sums, lr, eps=1e-7):
    """h += g*g; p -= lr*g/(sqrt(h)+eps)."""
    for p, g, h in zip(params, grads, sums):
        h += g * g
        p -= lr * g / (np.sqrt(h) + eps)


def rmsprop_step(params, grads, sums, lr, decay_rate=0.99, eps=1e-7):
    """h = d*h + (1-d)*g*g; p -= lr*g/(sqrt(h)+eps)."""
    for p, g, h in zip(params, grads, sums):
        h *= decay_rate
        h += (1 - decay_rate) * g * g
        p -= lr * g / (np.sqrt(h) + eps)


def adam_lr(lr, beta1, beta2, step):
    """Adam's step size with both bias corrections folded in: lr*sqrt(1-beta2**step)/(1-beta1**step)."""
    return float(lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step))


def adam_step(params, grads, ms, vs, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    """m += (1-b1)*(g-m); v += (1-b2)*(g*g-v); p -= lr_t*m/(sqrt(v)+eps), lr_t = adam_lr(...); step from 1."""
    lr_t = adam_lr(lr, beta1, beta2, step)
    for p, g, m, v in zip(params, grads, ms, vs):
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g * g - v)
        p -= lr_t * m / (np.sqrt(v) + eps)
# ==== end optim ====
