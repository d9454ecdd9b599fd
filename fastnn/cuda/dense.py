"""The dense family on the GPU: linear, embedding, dropout.

Kernels, in order:
  linear               the bias broadcast into y (rows_fill), then gemm__tiled (gemm.py) accumulating x @ W onto it
                       (beta = 1); the backward is two gemm__tiled products and a column sum (dbias, float64 sums).
  embedding_fwd        one thread per output element: y[n, d] = W[idx[n], d]; an index outside [0, V) is not read
                       and its first position (atomic min) is reported, the call raises.
  embedding_bwd        deterministic without atomics: thread (d, vocabulary block) zeroes its rows of column d, then
                       walks all N indices in order and adds the dy rows that fall in its block (the sums run in the
                       order of n, like the cpu kernel; a warp reads one index and 32 consecutive dy elements).
  dropout_fwd          the counter-based mask of fastnn.reference.dropout_keep (lowbias32 twice over the index, 32-bit
                       arithmetic held in uint64), or a given mask; the backward is the same kernel on dy.
"""
import numpy as np
from numba import cuda, float64, uint64

from .._checks import bad_embedding_index
from ..reference import dropout_key, dropout_scale, dropout_threshold
from ._launch import empty as _empty, kind_of, launch, result as _result, view
from .gemm import flat, launch_tiled

BS = 256


@cuda.jit
def rows_fill(y, b, M):                     # y (R*M,) = b broadcast over the rows
    i = cuda.grid(1)
    if i < y.size:
        y[i] = b[i % M]


@cuda.jit
def colsum(a, out, R, M):                   # out[j] = sum over the R rows of a (R*M,), in float64
    j = cuda.grid(1)
    if j < M:
        s = float64(0.0)
        for r in range(R):
            s += a[r * M + j]
        out[j] = s


def linear(x, weight, bias):
    kind = kind_of(x)
    xv, wv, bv = view(x), view(weight), view(bias)
    D, M = wv.shape
    R = xv.size // D
    y = _empty(tuple(xv.shape[:-1]) + (M,), xv.dtype, kind)
    yf = y[1].reshape(R * M)
    if bv is not None:
        launch(rows_fill, xv.dtype.char, (R * M + BS - 1) // BS, BS, yf, bv, M)
    launch_tiled(flat(xv), flat(wv), yf, R, M, D, D, M, M, beta=1.0 if bv is not None else 0.0)
    return _result(y, kind)


def linear_backward(dy, x, weight, bias):
    kind = kind_of(dy, x)
    gv, xv, wv = view(dy), view(x), view(weight)
    D, M = wv.shape
    R = xv.size // D
    dx = _empty(tuple(xv.shape), xv.dtype, kind)
    dw = _empty((D, M), xv.dtype, kind)
    launch_tiled(flat(gv), flat(wv), dx[1].reshape(R * D), R, D, M, M, M, D, tb=True)       # dy @ W^T
    launch_tiled(flat(xv), flat(gv), dw[1].reshape(D * M), D, M, R, D, M, M, ta=True)       # x^T @ dy
    db = None
    if bias:
        db = _empty((M,), xv.dtype, kind)
        launch(colsum, xv.dtype.char, (M + BS - 1) // BS, BS, flat(gv), db[1], R, M)
        db = _result(db, kind)
    return _result(dx, kind), _result(dw, kind), db


# ------------------------------------------------------------------------------------------------ embedding

@cuda.jit
def embedding_fwd(idx, w, y, N, V, D, bad):          # idx (N,), w (V*D,), y (N*D,); bad (1,) = N
    i = cuda.grid(1)
    if i >= N * D:
        return
    n = i // D
    v = idx[n]
    if v < 0 or v >= V:
        cuda.atomic.min(bad, 0, n)
        return
    y[i] = w[v * D + (i - n * D)]


@cuda.jit
def check_indices(idx, N, V, bad):
    n = cuda.grid(1)
    if n < N and (idx[n] < 0 or idx[n] >= V):
        cuda.atomic.min(bad, 0, n)


@cuda.jit
def embedding_bwd(dy, idx, dw, N, V, D, VB):         # grid (ceil(D/32), VB), block 32: column d, vocabulary block
    d = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if d >= D:
        return
    vb = cuda.blockIdx.y
    v0 = V * vb // VB
    v1 = V * (vb + 1) // VB
    for v in range(v0, v1):
        dw[v * D + d] = 0
    for n in range(N):
        v = idx[n]
        if v >= v0 and v < v1:
            dw[v * D + d] += dy[n * D + d]


def _raise_bad(bad, iv, N, V):
    pos = int(bad.copy_to_host()[0])       # synchronises: the error must be raised by this call
    if pos < N:
        raise bad_embedding_index(iv.device().reshape(N)[pos:pos + 1].copy_to_host()[0], pos, V)


def embedding(indices, weight):
    kind = kind_of(weight, indices)
    iv, wv = view(indices), view(weight)
    V, D = wv.shape
    N = iv.size
    y = _empty(tuple(iv.shape) + (D,), wv.dtype, kind)
    bad = cuda.to_device(np.full(1, N, np.int64))
    launch(embedding_fwd, wv.dtype.char + iv.dtype.char, (N * D + BS - 1) // BS, BS, iv.reshape(N),
           wv.reshape(V * D), y[1].reshape(N * D), N, V, D, bad)
    _raise_bad(bad, iv, N, V)
    return _result(y, kind)


def embedding_backward(dy, indices, num_embeddings):
    kind = kind_of(dy, indices)
    gv, iv = view(dy), view(indices)
    V, D, N = num_embeddings, gv.shape[-1], iv.size
    bad = cuda.to_device(np.full(1, N, np.int64))
    launch(check_indices, iv.dtype.char, (N + BS - 1) // BS, BS, iv.reshape(N), N, V, bad)
    _raise_bad(bad, iv, N, V)
    dw = _empty((V, D), gv.dtype, kind)
    VB = min(V, 128)
    launch(embedding_bwd, gv.dtype.char + iv.dtype.char, ((D + 31) // 32, VB), 32, gv.reshape(N * D), iv.reshape(N),
           dw[1].reshape(V * D), N, V, D, VB)
    return _result(dw, kind)


# ------------------------------------------------------------------------------------------------- dropout

@cuda.jit(device=True, inline=True)
def _lowbias32(x):                         # x: a 32-bit value in a uint64 (Numba types uint32 arithmetic as 64-bit)
    x = x ^ (x >> uint64(16))
    x = (x * uint64(0x7FEB352D)) & uint64(0xFFFFFFFF)
    x = x ^ (x >> uint64(15))
    x = (x * uint64(0x846CA68B)) & uint64(0xFFFFFFFF)
    return x ^ (x >> uint64(16))


@cuda.jit
def dropout_fwd(x, y, off, n, k1, k2, thr, s):      # elements off .. off+n-1 (one value of i >> 32)
    i = cuda.grid(1)
    if i >= n:
        return
    u = _lowbias32(_lowbias32(uint64(i) ^ k1) ^ k2)  # off is a multiple of 2^32: i is the low 32 bits
    g = off + i
    y[g] = x[g] * (s if u >= thr else s - s)     # x * 0 when dropped: NaN stays NaN, as on the cpu


@cuda.jit
def dropout_mask(x, y, mask, s):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] * (mask[i] * s)


@cuda.jit
def dropout_bool_mask(x, y, mask, s):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] * (s if mask[i] else s - s)


def dropout(x, p, seed, scale, mask):
    kind = kind_of(x, mask)
    xv = view(x)
    n = xv.size
    y = _empty(tuple(xv.shape), xv.dtype, kind)
    xf, yf = xv.reshape(n), y[1].reshape(n)
    s = dropout_scale(p, scale, xv.dtype)
    k = xv.dtype.char
    if mask is not None:
        mv = view(mask)
        kern = dropout_bool_mask if mv.dtype == np.bool_ else dropout_mask
        launch(kern, k + mv.dtype.char, (n + BS - 1) // BS, BS, xf, yf, mv.reshape(n), s)
        return _result(y, kind)
    thr = np.uint64(min(dropout_threshold(p), 2 ** 32))
    for off in range(0, n, 1 << 32):
        m = min(n - off, 1 << 32)
        key = dropout_key(seed, off >> 32)
        launch(dropout_fwd, k, (m + BS - 1) // BS, BS, xf, yf, off, m, np.uint64(key & 0xFFFFFFFF),
               np.uint64(key >> 32), thr, s)
    return _result(y, kind)


def dropout_backward(dy, p, seed, scale, mask):
    return dropout(dy, p, seed, scale, mask)
