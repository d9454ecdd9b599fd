"""LSTM cell and sequence, forward and backward, on the GPU.

The GEMMs run on fastnn.cuda.gemm.matmul; everything between them is ONE fused pointwise kernel per step.
Forward : lstm computes xs @ w_ih for all T steps in one GEMM, then per step h @ w_hh (one split-K GEMM:
          S partial slices, summed by the step kernel, so that the 64x2048 output fills the GPU) and
          lstm_fwd_step (pre-activation sum + bias, the four activations, c' = f*c + i*g, h' = o*tanh(c')).
Backward: per step (reversed) lstm_bwd_step (dh from above + recurrent dh, dc, the gate-gradient formulas,
          dc_prev), then dh_prev = dgates_t @ w_hh^T (one split-K GEMM, summed by the next step's kernel).
          After the loop dxs, dw_ih, dw_hh are one GEMM each over all N*T rows, and dbias one column-sum kernel.

Kernels, in order:
  lstm_fwd_step   one thread per (n, j): reads the four gate pre-activations of unit j (coalesced over j),
                  writes the activated gates (in place over xs@w_ih: the cache), c_t, h_t and a contiguous
                  copy of h_t for the next GEMM. Activations in float64 (a latency-bound kernel: free accuracy).
  lstm_bwd_step   one thread per (n, j): gate gradients into the (N,T,4H) buffer and a contiguous (N,4H) copy
                  for the recurrent GEMM, dc_prev in place, and h_{t-1} into a (N,T,H) buffer so dw_hh is one GEMM.
  colsum          dbias: 32 columns per block, 32 row lanes summing in float64, then a shared-memory fold.
Host side (it dominates at (64, 512, 512)): every kernel, GEMMs included, launches through _launch.launch; the
forward works on Views (no Numba arrays built) and its cache holds the caller's arrays (torch/CuPy); scratch
buffers are reused across calls and arrays that outlive the call come from the caller's allocator.
"""
import math

import numpy as np
from numba import cuda, float64

from ..reference import LSTMCache
from ._launch import dummy as _dummy, empty as _empty, kind_of, launch, of as _of, result as _result, view
from .gemm import launch_split_k, matmul, split_k_for

BS = 256


def _dev(a):
    """A Numba device array (GEMM operands and the cache hold these); None stays None."""
    return None if a is None else view(a).device()


@cuda.jit(device=True, inline=True)
def _sigmoid(a):
    return 0.5 * (1.0 + math.tanh(0.5 * a))      # the reference's form: no overflow for large |a|


# ----------------------------------------------------------------------------------------------- kernels

@cuda.jit
def lstm_fwd_step(G, p1, n1, p2, n2, bias, c0, t, hs, cs, h_out, c_out, oi, of, og, oo, has_g, has_bias, write_c):
    """gates = G[:, t] (if has_g) + the n1 slices of p1 + the n2 of p2 (split-K GEMM partials) + bias."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    a = cuda.local.array(4, float64)
    for blk in range(4):
        col = blk * H + j
        v = float64(G[n, t, col]) if has_g else 0.0
        for z in range(n1):
            v += p1[z, n, col]
        for z in range(n2):
            v += p2[z, n, col]
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
def lstm_bwd_step(gates, cs, c0, h0, hs, dhs, dh_in, dhp, ndhp, dc_in, t, dg_all, dg_t, hprev, dc_out,
                  oi, of, og, oo, has_dhs, has_dh, has_dc, write_hprev):
    """dh = dh_in (if has_dh) + the ndhp slices of dhp (the split-K recurrent GEMM) + dhs[:, t]."""
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
    for z in range(ndhp):
        dh += dhp[z, n, j]
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



_scratch = {}


def _buffer(name, shape, dtype):
    """A scratch buffer reused across calls (never returned, never cached; kernels are stream-ordered):
    Numba allocates with cudaMalloc, which costs more host time than most of these kernels run."""
    key = (getattr(cuda.get_current_device(), "id", 0), name, tuple(shape), np.dtype(dtype))
    if key not in _scratch:
        _scratch[key] = cuda.device_array(shape, dtype=dtype)
    return _scratch[key]


def _order(gate_order):
    return tuple(gate_order.index(ch) for ch in "ifgo")


def _forward(xs, h0, c0, w_ih, w_hh, bias, gate_order, hs, cs, h_last, c_last, G):
    """Run T = xs.shape[1] steps on Views / device arrays (h0 None: no first recurrent GEMM; c0 given);
    hs/cs (N,T,H) receive the states, h_last/c_last the last ones, G (N,T,4H) the activated gates."""
    N, T, D = xs.shape
    H = w_hh.shape[0]
    matmul(xs.reshape(N * T, D), w_ih, out=G.reshape(N * T, 4 * H))        # all steps' x @ w_ih: one GEMM
    oi, of, og, oo = _order(gate_order)
    dummy3 = _dummy(xs.dtype, 3)
    S = split_k_for(N, 4 * H, H)             # the recurrent GEMM's reduction in S slices (64x2048: 32 -> 128 blocks)
    hh = _of(_buffer("hh", (S, N, 4 * H), xs.dtype)) if (T > 1 or h0 is not None) else dummy3
    hbuf = [_buffer(f"h{i}", (N, H), xs.dtype) for i in range(min(T - 1, 2))]
    h = h0
    grid = (N * H + BS - 1) // BS
    for t in range(T):
        if h is not None:
            launch_split_k(h, w_hh, hh.reshape(hh.size), N, 4 * H, H, S)
        last = t == T - 1
        h_out = h_last if last else hbuf[t % 2]
        launch(lstm_fwd_step, xs.dtype.char, grid, BS, G, hh, S if h is not None else 0, dummy3, 0,
               _dummy(xs.dtype, 1) if bias is None else bias, c0, t, hs, cs, h_out, c_last, oi, of, og, oo,
               True, bias is not None, last)
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
    S = split_k_for(N, H, 4 * H)            # dh_prev = dg_t @ w_hh^T in S slices (64x512, K=2048: 8 -> 128 blocks)
    dhp = _of(_buffer("dhp", (S, N, H), xs.dtype)) if T > 1 else None
    dummy2, dummy3 = _dummy(xs.dtype, 2), _dummy(xs.dtype, 3)
    grid = (N * H + BS - 1) // BS
    for t in reversed(range(T)):
        first = t == T - 1
        dc_in = dc_n if first else dc0
        launch(lstm_bwd_step, xs.dtype.char, grid, BS, gates, cs, c0, h0, hs, dummy3 if dhs is None else dhs,
               dummy2 if dh_n is None or not first else dh_n, dummy3 if first else dhp, 0 if first else S,
               dummy2 if dc_in is None else dc_in, t, dg_all, dg_t, hprev,
               dc0, oi, of, og, oo, dhs is not None, first and dh_n is not None, dc_in is not None, T > 1)
        if t == 0:
            matmul(dg_t, cache.w_hh, out=dh0, trans_b=True)
        else:
            launch_split_k(dg_t, cache.w_hh, dhp.reshape(dhp.size), N, H, 4 * H, S, tb=True)
    dg = dg_all.reshape(R, 4 * H)
    matmul(dg, cache.w_ih, out=dxs.reshape(R, D), trans_b=True)
    matmul(xs.reshape(R, D), dg, out=dw_ih, trans_a=True)
    matmul(hprev.reshape(R, H), dg, out=dw_hh, trans_a=True)
    launch(colsum, xs.dtype.char, (4 * H + 31) // 32, (32, 32), dg, dbias)


# ------------------------------------------------------------------------------------------------- public

_ARRAYS = ("x", "h", "c", "w_ih", "w_hh", "gates", "hs", "cs")


def _cache_for(kind, cache, fields=_ARRAYS):
    """NumPy in -> NumPy out holds for the cache too (its array `fields` are copied to the host once)."""
    if kind != "numpy":
        return cache
    return cache._replace(**{f: getattr(cache, f).copy_to_host() for f in fields})


def _cache_on_device(cache, fields=_ARRAYS):
    """The cache with Numba device arrays (it holds the caller's arrays: NumPy, torch, CuPy or Numba)."""
    return cache._replace(**{f: _dev(getattr(cache, f)) for f in fields})


def _hold(kind, v, orig):
    """What the cache keeps of an array: the caller's object for torch/CuPy (no Numba array is built on the
    forward's hot path), else a Numba device array of View v."""
    return orig if kind in ("torch", "cupy") and orig is not None else v.device()


def _zeros(shape, dtype, kind):
    """(caller-type array or None, View) of zeros."""
    z = _empty(shape, dtype, kind)
    launch(_zero, np.dtype(dtype).char, (z[1].size + BS - 1) // BS, BS, z[1].reshape(z[1].size))
    return z


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order="ifgo"):
    kind = kind_of(x)
    d, hd, cd, wi, wh, b = (view(a) for a in (x, h, c, w_ih, w_hh, bias))
    N, D = d.shape
    H = wh.shape[0]
    dt = d.dtype
    h_next, c_next, G = (_empty(s, dt, kind) for s in ((N, H), (N, H), (N, 4 * H)))
    # gates = x@w_ih + h@w_hh as split-K partial slices (64x512 @ 512x2048: 32 -> 2x128 blocks), summed by
    # lstm_fwd_step, which also adds the bias and writes the activated gates into G (the cache)
    S1 = split_k_for(N, 4 * H, D)
    p1 = _of(_buffer("cell_x", (S1, N, 4 * H), dt))
    launch_split_k(d, wi, p1.reshape(p1.size), N, 4 * H, D, S1)
    S2, p2 = 0, _dummy(dt, 3)
    if hd is not None:
        S2 = split_k_for(N, 4 * H, H)
        p2 = _of(_buffer("cell_h", (S2, N, 4 * H), dt))
        launch_split_k(hd, wh, p2.reshape(p2.size), N, 4 * H, H, S2)
    oi, of, og, oo = _order(gate_order)
    c0 = (c, cd) if cd is not None else _zeros((N, H), dt, kind)
    launch(lstm_fwd_step, dt.char, (N * H + BS - 1) // BS, BS, G[1].reshape(N, 1, 4 * H), p1, S1, p2, S2,
           _dummy(dt, 1) if b is None else b, c0[1], 0, h_next[1].reshape(N, 1, H), c_next[1].reshape(N, 1, H),
           h_next[1], c_next[1], oi, of, og, oo, False, b is not None, False)
    h0 = (h, hd) if hd is not None else _zeros((N, H), dt, kind)
    cache = LSTMCache("cuda", gate_order, *(_hold(kind, v, o) for o, v in
                                            ((x, d), h0, c0, (w_ih, wi), (w_hh, wh), G, h_next, c_next)))
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
    d, hd, cd, wi, wh, b = (view(a) for a in (xs, h0, c0, w_ih, w_hh, bias))
    N, T, D = d.shape
    H = wh.shape[0]
    dt = d.dtype
    hs, cs, h_n, c_n, G = (_empty(s, dt, kind) for s in ((N, T, H), (N, T, H), (N, H), (N, H), (N, T, 4 * H)))
    h0p = (h0, hd) if hd is not None else _zeros((N, H), dt, kind)     # the cache holds materialised zeros
    c0p = (c0, cd) if cd is not None else _zeros((N, H), dt, kind)
    _forward(d, hd, c0p[1], wi, wh, b, gate_order, hs[1], cs[1], h_n[1], c_n[1], G[1])
    cache = LSTMCache("cuda", gate_order, *(_hold(kind, v, o) for o, v in
                                            ((xs, d), h0p, c0p, (w_ih, wi), (w_hh, wh), G, hs, cs)))
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
