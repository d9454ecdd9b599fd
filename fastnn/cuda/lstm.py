"""LSTM cell and sequence, forward and backward, on the GPU.

The GEMMs run on fastnn.cuda.gemm.matmul; everything between them is ONE fused pointwise kernel per step.
Forward : lstm computes xs @ w_ih for all T steps in one GEMM, then per step h @ w_hh (one GEMM) and
          lstm_fwd_step (pre-activation sum + bias, the four activations, c' = f*c + i*g, h' = o*tanh(c')).
Backward: per step (reversed) lstm_bwd_step (dh from above + recurrent dh, dc, the gate-gradient formulas,
          dc_prev), then dh_prev = dgates_t @ w_hh^T (one GEMM). After the loop dxs, dw_ih, dw_hh are one
          GEMM each over all N*T rows, and dbias one column-sum kernel.

Kernels, in order:
  lstm_fwd_step   one thread per (n, j): reads the four gate pre-activations of unit j (coalesced over j),
                  writes the activated gates (in place over xs@w_ih: the cache), c_t, h_t and a contiguous
                  copy of h_t for the next GEMM. Activations in float64 (a latency-bound kernel: free accuracy).
  lstm_bwd_step   one thread per (n, j): gate gradients into the (N,T,4H) buffer and a contiguous (N,4H) copy
                  for the recurrent GEMM, dc_prev in place, and h_{t-1} into a (N,T,H) buffer so dw_hh is one GEMM.
  colsum          dbias: 32 columns per block, 32 row lanes summing in float64, then a shared-memory fold.
Host side (it dominates at (64, 512, 512)): pointwise kernels launch through _fastlaunch; scratch buffers are
reused across calls and arrays that outlive the call come from the caller's allocator (torch/CuPy).
"""
import math

import numpy as np
from numba import cuda, float64

from ..reference import LSTMCache
from ._fastlaunch import empty as _empty, launch, of as _of, result as _result, view
from ._launch import kind_of
from .gemm import matmul

BS = 256


def _dev(a):
    """A Numba device array (GEMM operands and the cache hold these); None stays None."""
    return None if a is None else view(a).device()


@cuda.jit(device=True, inline=True)
def _sigmoid(a):
    return 0.5 * (1.0 + math.tanh(0.5 * a))      # the reference's form: no overflow for large |a|


# ----------------------------------------------------------------------------------------------- kernels

@cuda.jit
def lstm_fwd_step(G, hh, bias, c0, t, hs, cs, h_out, c_out, oi, of, og, oo, has_hh, has_bias, write_c):
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    a = cuda.local.array(4, float64)
    for blk in range(4):
        col = blk * H + j
        v = float64(G[n, t, col])
        if has_hh:
            v += hh[n, col]
        if has_bias:
            v += bias[col]
        a[blk] = v
    i = _sigmoid(a[oi])
    f = _sigmoid(a[of])
    g = math.tanh(a[og])
    o = _sigmoid(a[oo])
    cp = float64(cs[n, t - 1, j]) if t > 0 else float64(c0[n, j])
    cn = f * cp + i * g
    hn = o * math.tanh(cn)
    G[n, t, oi * H + j] = i          # G becomes the activated gates (each thread rewrites only what it read)
    G[n, t, of * H + j] = f
    G[n, t, og * H + j] = g
    G[n, t, oo * H + j] = o
    cs[n, t, j] = cn
    hs[n, t, j] = hn
    h_out[n, j] = hn
    if write_c:
        c_out[n, j] = cn


@cuda.jit
def lstm_bwd_step(gates, cs, c0, h0, hs, dhs, dh_in, dc_in, t, dg_all, dg_t, hprev, dc_out,
                  oi, of, og, oo, has_dhs, has_dh, has_dc, write_hprev):
    q = cuda.grid(1)
    N, H = cs.shape[0], cs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    i = float64(gates[n, t, oi * H + j])
    f = float64(gates[n, t, of * H + j])
    g = float64(gates[n, t, og * H + j])
    o = float64(gates[n, t, oo * H + j])
    cn = float64(cs[n, t, j])
    cp = float64(cs[n, t - 1, j]) if t > 0 else float64(c0[n, j])
    dh = float64(dh_in[n, j]) if has_dh else 0.0
    if has_dhs:
        dh += dhs[n, t, j]
    dc = float64(dc_in[n, j]) if has_dc else 0.0
    tc = math.tanh(cn)
    dc += dh * o * (1.0 - tc * tc)
    dai = dc * g * i * (1.0 - i)
    daf = dc * cp * f * (1.0 - f)
    dag = dc * i * (1.0 - g * g)
    dao = dh * tc * o * (1.0 - o)
    dg_all[n, t, oi * H + j] = dai
    dg_all[n, t, of * H + j] = daf
    dg_all[n, t, og * H + j] = dag
    dg_all[n, t, oo * H + j] = dao
    dg_t[n, oi * H + j] = dai
    dg_t[n, of * H + j] = daf
    dg_t[n, og * H + j] = dag
    dg_t[n, oo * H + j] = dao
    dc_out[n, j] = dc * f                  # may alias dc_in: this thread read its element above
    if write_hprev:
        hprev[n, t, j] = hs[n, t - 1, j] if t > 0 else h0[n, j]


@cuda.jit
def colsum(a, out):                        # out[col] = sum over rows of a (R, NC); block (32, 32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    col = cuda.blockIdx.x * 32 + tx
    sh = cuda.shared.array((32, 33), float64)
    acc = 0.0
    if col < a.shape[1]:
        for r in range(ty, a.shape[0], 32):
            acc += a[r, col]
    sh[ty, tx] = acc
    cuda.syncthreads()
    if ty == 0 and col < a.shape[1]:
        for r in range(1, 32):
            acc += sh[r, tx]
        out[col] = acc


@cuda.jit
def _zero(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 0


# ---------------------------------------------------------------------------------------------- launchers

_dummies = {}


def _dummy(dtype, ndim):
    """A stand-in for an absent optional array (the kernels take a flag instead)."""
    key = (getattr(cuda.get_current_device(), "id", 0), np.dtype(dtype), ndim)
    if key not in _dummies:
        _dummies[key] = cuda.device_array((1,) * ndim, dtype=dtype)
    return _dummies[key]


_scratch = {}


def _buffer(name, shape, dtype):
    """A scratch buffer reused across calls (never returned, never cached; kernels are stream-ordered):
    Numba allocates with cudaMalloc, which costs more host time than most of these kernels run."""
    key = (getattr(cuda.get_current_device(), "id", 0), name, tuple(shape), np.dtype(dtype))
    if key not in _scratch:
        _scratch[key] = cuda.device_array(shape, dtype=dtype)
    return _scratch[key]


def _new(shape, dtype, kind):
    """A fresh device array that outlives the call (the cache), from the caller's allocator when it has one."""
    return _empty(shape, dtype, kind)[1].device()


def _zeros(shape, dtype, kind):
    d = _new(shape, dtype, kind)
    launch(_zero, d.dtype.char, (d.size + BS - 1) // BS, BS, d.reshape(d.size))
    return d


def _order(gate_order):
    return tuple(gate_order.index(ch) for ch in "ifgo")


def _forward(xs, h0, c0, w_ih, w_hh, bias, gate_order, hs, cs, h_last, c_last, kind):
    """Run T = xs.shape[1] steps on device arrays (h0 None: no first recurrent GEMM; c0 given);
    hs/cs (N,T,H) receive the states, h_last/c_last the last ones."""
    N, T, D = xs.shape
    H = w_hh.shape[0]
    G = matmul(xs.reshape(N * T, D), w_ih, out=_new((N * T, 4 * H), xs.dtype, kind))   # all steps: one GEMM
    G = G.reshape(N, T, 4 * H)
    oi, of, og, oo = _order(gate_order)
    dummy2 = _dummy(xs.dtype, 2)
    hh = _buffer("hh", (N, 4 * H), xs.dtype) if (T > 1 or h0 is not None) else dummy2
    hbuf = [_buffer(f"h{i}", (N, H), xs.dtype) for i in range(min(T - 1, 2))]
    h = h0
    grid = (N * H + BS - 1) // BS
    for t in range(T):
        if h is not None:
            matmul(h, w_hh, out=hh)
        last = t == T - 1
        h_out = h_last if last else hbuf[t % 2]
        launch(lstm_fwd_step, xs.dtype.char, grid, BS, G, hh, _dummy(xs.dtype, 1) if bias is None else bias,
               c0, t, hs, cs, h_out, c_last, oi, of, og, oo, h is not None, bias is not None, last)
        h = h_out
    return G


def _backward(dhs, dh_n, dc_n, cache, dxs, dh0, dc0, dw_ih, dw_hh, dbias):
    """BPTT over the (N,T,...) cache on device arrays; writes the six gradients (views given by the caller)."""
    xs, gates, hs, cs, h0, c0 = cache.x, cache.gates, cache.hs, cache.cs, cache.h, cache.c
    N, T, D = xs.shape
    H = hs.shape[2]
    R = N * T
    oi, of, og, oo = _order(cache.gate_order)
    dg_all = _buffer("dg_all", (N, T, 4 * H), xs.dtype)
    dg_t = _buffer("dg_t", (N, 4 * H), xs.dtype) if T > 1 else dg_all.reshape(N, 4 * H)
    hprev = _buffer("hprev", (N, T, H), xs.dtype) if T > 1 else h0.reshape(N, 1, H)
    dh_rec = _buffer("dh_rec", (N, H), xs.dtype) if T > 1 else None
    dummy2, dummy3 = _dummy(xs.dtype, 2), _dummy(xs.dtype, 3)
    grid = (N * H + BS - 1) // BS
    for t in reversed(range(T)):
        first = t == T - 1
        dh_in = dh_n if first else dh_rec
        dc_in = dc_n if first else dc0
        launch(lstm_bwd_step, xs.dtype.char, grid, BS, gates, cs, c0, h0, hs, dummy3 if dhs is None else dhs,
               dummy2 if dh_in is None else dh_in, dummy2 if dc_in is None else dc_in, t, dg_all, dg_t, hprev,
               dc0, oi, of, og, oo, dhs is not None, dh_in is not None, dc_in is not None, T > 1)
        matmul(dg_t, cache.w_hh, out=dh0 if t == 0 else dh_rec, trans_b=True)
    dg = dg_all.reshape(R, 4 * H)
    matmul(dg, cache.w_ih, out=dxs.reshape(R, D), trans_b=True)
    matmul(xs.reshape(R, D), dg, out=dw_ih, trans_a=True)
    matmul(hprev.reshape(R, H), dg, out=dw_hh, trans_a=True)
    launch(colsum, xs.dtype.char, (4 * H + 31) // 32, (32, 32), dg, dbias)


# ------------------------------------------------------------------------------------------------- public

_ARRAYS = ("x", "h", "c", "w_ih", "w_hh", "gates", "hs", "cs")


def _cache_for(kind, cache):
    """NumPy in -> NumPy out holds for the cache too (its arrays are copied to the host once)."""
    if kind != "numpy":
        return cache
    return cache._replace(**{f: getattr(cache, f).copy_to_host() for f in _ARRAYS})


def _cache_on_device(cache):
    return cache._replace(**{f: _dev(getattr(cache, f)) for f in _ARRAYS}) if isinstance(cache.x, np.ndarray) \
        else cache


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order="ifgo"):
    kind = kind_of(x)
    d, hd, cd, wi, wh, b = (_dev(a) for a in (x, h, c, w_ih, w_hh, bias))
    N, D = d.shape
    H = wh.shape[0]
    h_next, c_next = _empty((N, H), d.dtype, kind), _empty((N, H), d.dtype, kind)
    G = matmul(d, wi, out=_new((N, 4 * H), d.dtype, kind))
    if hd is not None:
        matmul(hd, wh, out=G, beta=1.0)                        # gates = x@w_ih + h@w_hh in one buffer
    oi, of, og, oo = _order(gate_order)
    c0 = cd if cd is not None else _zeros((N, H), d.dtype, kind)
    launch(lstm_fwd_step, d.dtype.char, (N * H + BS - 1) // BS, BS, _of(G).reshape(N, 1, 4 * H), _dummy(d.dtype, 2),
           _dummy(d.dtype, 1) if b is None else b, c0, 0, h_next[1].reshape(N, 1, H), c_next[1].reshape(N, 1, H),
           h_next[1], c_next[1], oi, of, og, oo, False, b is not None, False)
    h0 = hd if hd is not None else _zeros((N, H), d.dtype, kind)
    cache = LSTMCache("cuda", gate_order, d, h0, c0, wi, wh, G, h_next[1].device(), c_next[1].device())
    return _result(h_next, kind), _result(c_next, kind), _cache_for(kind, cache)


def lstm_cell_backward(dh_next, dc_next, cache):
    kind = kind_of(dh_next, dc_next, cache.x)
    cache = _cache_on_device(cache)
    x = cache.x
    N, D = x.shape
    H = cache.w_hh.shape[0]
    dt = x.dtype
    seq = cache._replace(x=x.reshape(N, 1, D), gates=cache.gates.reshape(N, 1, 4 * H),
                         hs=cache.hs.reshape(N, 1, H), cs=cache.cs.reshape(N, 1, H))
    out = [_empty(s, dt, kind) for s in ((N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,))]
    dxs, dh0, dc0, dwi, dwh, db = (o[1].device() for o in out)
    _backward(None, _dev(dh_next), _dev(dc_next), seq, dxs.reshape(N, 1, D), dh0, dc0, dwi, dwh, db)
    return tuple(_result(o, kind) for o in out)


def lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order="ifgo"):
    kind = kind_of(xs)
    d, hd, cd, wi, wh, b = (_dev(a) for a in (xs, h0, c0, w_ih, w_hh, bias))
    N, T, D = d.shape
    H = wh.shape[0]
    hs, h_n, c_n = _empty((N, T, H), d.dtype, kind), _empty((N, H), d.dtype, kind), _empty((N, H), d.dtype, kind)
    cs = _new((N, T, H), d.dtype, kind)
    h0d = hd if hd is not None else _zeros((N, H), d.dtype, kind)     # the cache holds materialised zeros
    c0d = cd if cd is not None else _zeros((N, H), d.dtype, kind)
    hsd = hs[1].device()
    G = _forward(d, hd, c0d, wi, wh, b, gate_order, hsd, cs, h_n[1].device(), c_n[1], kind)
    cache = LSTMCache("cuda", gate_order, d, h0d, c0d, wi, wh, G, hsd, cs)
    return _result(hs, kind), _result(h_n, kind), _result(c_n, kind), _cache_for(kind, cache)


def lstm_backward(dhs, dh_n, dc_n, cache):
    kind = kind_of(dhs, dh_n, dc_n, cache.x)
    cache = _cache_on_device(cache)
    N, T, D = cache.x.shape
    H = cache.w_hh.shape[0]
    dt = cache.x.dtype
    out = [_empty(s, dt, kind) for s in ((N, T, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,))]
    _backward(_dev(dhs), _dev(dh_n), _dev(dc_n), cache, *(o[1].device() for o in out))
    return tuple(_result(o, kind) for o in out)
