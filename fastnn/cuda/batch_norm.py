"""batch_norm forward (training / inference) and backward on the GPU, for (N,C) and (N,C,H,W).

The data is viewed as (N, C, HW) (HW = 1 for 2-D input). Channel c holds M = N*HW elements; block (s, c) of a
(S, C) grid owns the contiguous slice [s*chunk, (s+1)*chunk) of them, walked with the thread index fastest, so
the warps read consecutive addresses inside each HW row (coalesced for HW >= 32).

Kernels, in order:
  bn_fwd__naive        one thread per channel: shifted float64 sums, then normalise (the algorithmic reference).
  bn_fwd_stats         per-block partial sums of (x - K) and (x - K)^2 in float64, K = the channel's first
                       element (shifted data: no cancellation when |mean| >> std); four loads in flight per thread.
  bn_fwd_apply         every block folds the S partials of its channel (finalisation fused: no extra launch),
                       block s = 0 writes mean/invstd and updates the running stats in place, then y = (x-mean)*scale
                       + beta; the blocks run in reverse order so the tail that stats left in L2 is read first.
  bn_bwd_stats         partial sums of dy and dy*(x - mean) in float64.
  bn_bwd_apply         folds them, writes dgamma/dbeta (block s = 0) and dx in one pass.
  With these, training forward = 2 launches, 3 passes over memory (read x, read x + write y); backward = 2
  launches, 5 passes. Small channels are then bound by launches and latency, not bandwidth (on the H100 the
  (32,256,14,14) forward ran at 0.20x cuDNN's speed; docs/log.md). Hence, for M <= BLOCK_MAX:
  bn_fwd__block        block c (up to 1024 threads, R elements each in registers) loads channel c once, sums it
  bn_bwd__block        in the block (forward: mean, then squared deviations, in float64) and writes from the
                       registers: 1 launch, 2 passes (forward) / 3 (backward), without spills (ptxas, sm_90:
                       scripts/ptx_check.py).
"""
import math

import numpy as np
from numba import config, cuda, float64

from . import _launch as _fl
from ._launch import dummy as _dummy, empty as _empty, kind_of, launch, of, result as _result, view

BS = 256             # threads per block
TARGET_BLOCKS = 2048  # enough blocks to fill 132 SMs several times over
MIN_PER_THREAD = 16   # elements each thread should reduce at least
R = 8                 # elements each thread keeps in registers on the one-block path
BLOCK_T = 1024        # most threads per block
BLOCK_MAX = R * BLOCK_T   # channels of at most this many elements take the one-block path (0: never)


# ------------------------------------------------------------------------------------------- the reference

@cuda.jit
def bn_fwd__naive(x, y, mean_out, invstd_out, C, HW, M, eps):
    c = cuda.grid(1)
    if c >= C:
        return
    K = float64(x[c * HW])
    s1 = 0.0
    s2 = 0.0
    for j in range(M):
        u = float64(x[((j // HW) * C + c) * HW + j % HW]) - K
        s1 += u
        s2 += u * u
    d = s1 / M
    invstd = 1.0 / math.sqrt(max(s2 / M - d * d, 0.0) + eps)
    mean_out[c] = K + d
    invstd_out[c] = invstd
    for j in range(M):
        i = ((j // HW) * C + c) * HW + j % HW
        y[i] = (x[i] - (K + d)) * invstd


# ---------------------------------------------------------------------------------- walking a channel slice

@cuda.jit(device=True, inline=True)
def _start(j, c, C, HW):
    """(k, flat index) of element j of channel c; j = n*HW + k."""
    n = j // HW
    k = j - n * HW
    return k, (n * C + c) * HW + k


@cuda.jit(device=True, inline=True)
def _step(k, i, dk, di, HW, wrap_):
    """Advance by B elements of the channel (B = BS, or the threads T of the one-block path): dk = B % HW,
    di = (B // HW)*C*HW + dk, wrap_ = C*HW - HW."""
    k += dk
    i += di
    if k >= HW:
        k -= HW
        i += wrap_
    return k, i


@cuda.jit(device=True, inline=True)
def _block_sum2(a, b, sh):
    """Sum a and b over the block (float64, tree in shared memory); the result is valid in thread 0."""
    t = cuda.threadIdx.x
    sh[0, t] = a
    sh[1, t] = b
    cuda.syncthreads()
    w = BS // 2
    while w > 0:
        if t < w:
            sh[0, t] += sh[0, t + w]
            sh[1, t] += sh[1, t + w]
        cuda.syncthreads()
        w //= 2
    return sh[0, 0], sh[1, 0]


@cuda.jit(device=True, inline=True)
def _fwd_finish(mean, var, c, M, gamma, beta, rmean, rvar, mean_out, invstd_out, has_gamma, has_beta,
                update_mean, update_var, momentum, eps, write, cst):
    """Channel c's statistics -> cst = (mean, invstd*gamma, beta) in the input dtype (as the reference); the block
    that `write`s also stores mean/invstd and updates the running stats in place."""
    invstd = 1.0 / math.sqrt(var + eps)
    if write:
        mean_out[c] = mean
        invstd_out[c] = invstd
        if update_mean:
            rmean[c] = (1 - momentum) * rmean[c] + momentum * mean
        if update_var:
            rvar[c] = (1 - momentum) * rvar[c] + momentum * var * (M / (M - 1.0))
    cst[0] = mean
    cst[1] = invstd
    if has_gamma:
        cst[1] = cst[1] * gamma[c]
    cst[2] = beta[c] if has_beta else 0


@cuda.jit(device=True, inline=True)
def _bwd_finish(s1, s2, c, M, gamma, mean, invstd, dgamma, dbeta, has_gamma, write, cst):
    """From s1 = sum dy, s2 = sum dy*(x-mean): cst = (mean, invstd, gamma*invstd, mean(dy), mean(dy*xhat)) in the
    input dtype; the block that `write`s also stores dgamma/dbeta."""
    iv = float64(invstd[c])
    if write:
        dbeta[c] = s1
        dgamma[c] = s2 * iv
    cst[0] = mean[c]
    cst[1] = invstd[c]
    cst[2] = cst[1] * gamma[c] if has_gamma else cst[1]
    cst[3] = s1 / M
    cst[4] = s2 * iv / M


# ----------------------------------------------------------------------------------------------- forward

@cuda.jit
def bn_fwd_stats(x, part, C, HW, M, chunk, dk, di, wrap_):
    s, c, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    sh = cuda.shared.array((2, BS), float64)
    K = float64(x[c * HW])
    j = s * chunk + t
    j1 = min(M, (s + 1) * chunk)
    k, i = _start(j, c, C, HW)
    s1 = 0.0
    s2 = 0.0
    while j + 3 * BS < j1:          # four independent loads per iteration
        i0 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i1 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i2 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i3 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        u0 = float64(x[i0]) - K
        u1 = float64(x[i1]) - K
        u2 = float64(x[i2]) - K
        u3 = float64(x[i3]) - K
        s1 += (u0 + u1) + (u2 + u3)
        s2 += (u0 * u0 + u1 * u1) + (u2 * u2 + u3 * u3)
        j += 4 * BS
    while j < j1:
        u = float64(x[i]) - K
        s1 += u
        s2 += u * u
        k, i = _step(k, i, dk, di, HW, wrap_)
        j += BS
    s1, s2 = _block_sum2(s1, s2, sh)
    if t == 0:
        part[0, c, s] = s1
        part[1, c, s] = s2


@cuda.jit
def bn_fwd_apply(x, y, part, gamma, beta, rmean, rvar, mean_out, invstd_out, C, HW, M, chunk, dk, di, wrap_,
                 training, has_gamma, has_beta, update_mean, update_var, momentum, eps):
    S = cuda.gridDim.x
    s, c, t = S - 1 - cuda.blockIdx.x, cuda.gridDim.y - 1 - cuda.blockIdx.y, cuda.threadIdx.x
    cst = cuda.shared.array(3, dtype=x.dtype)     # see _fwd_finish
    if t == 0:
        if training:
            s1 = 0.0
            s2 = 0.0
            for q in range(S):
                s1 += part[0, c, q]
                s2 += part[1, c, q]
            d = s1 / M
            var = max(s2 / M - d * d, 0.0)
            mean = float64(x[c * HW]) + d
        else:
            mean = float64(rmean[c])
            var = float64(rvar[c])
        _fwd_finish(mean, var, c, M, gamma, beta, rmean, rvar, mean_out, invstd_out, has_gamma, has_beta,
                    update_mean, update_var, momentum, eps, s == 0, cst)
    cuda.syncthreads()
    mu, sc, b = cst[0], cst[1], cst[2]
    j = s * chunk + t
    j1 = min(M, (s + 1) * chunk)
    k, i = _start(j, c, C, HW)
    while j + 3 * BS < j1:
        i0 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i1 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i2 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i3 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        v0, v1, v2, v3 = x[i0], x[i1], x[i2], x[i3]
        y[i0] = (v0 - mu) * sc + b
        y[i1] = (v1 - mu) * sc + b
        y[i2] = (v2 - mu) * sc + b
        y[i3] = (v3 - mu) * sc + b
        j += 4 * BS
    while j < j1:
        y[i] = (x[i] - mu) * sc + b
        k, i = _step(k, i, dk, di, HW, wrap_)
        j += BS


# ---------------------------------------------------------------------------------------------- backward

@cuda.jit
def bn_bwd_stats(dy, x, mean, part, C, HW, M, chunk, dk, di, wrap_):
    s, c, t = cuda.blockIdx.x, cuda.blockIdx.y, cuda.threadIdx.x
    sh = cuda.shared.array((2, BS), float64)
    mu = float64(mean[c])
    j = s * chunk + t
    j1 = min(M, (s + 1) * chunk)
    k, i = _start(j, c, C, HW)
    s1 = 0.0
    s2 = 0.0
    while j + 3 * BS < j1:
        i0 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i1 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i2 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i3 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        g0, g1, g2, g3 = float64(dy[i0]), float64(dy[i1]), float64(dy[i2]), float64(dy[i3])
        u0, u1, u2, u3 = float64(x[i0]) - mu, float64(x[i1]) - mu, float64(x[i2]) - mu, float64(x[i3]) - mu
        s1 += (g0 + g1) + (g2 + g3)
        s2 += (g0 * u0 + g1 * u1) + (g2 * u2 + g3 * u3)
        j += 4 * BS
    while j < j1:
        g = float64(dy[i])
        s1 += g
        s2 += g * (float64(x[i]) - mu)
        k, i = _step(k, i, dk, di, HW, wrap_)
        j += BS
    s1, s2 = _block_sum2(s1, s2, sh)
    if t == 0:
        part[0, c, s] = s1
        part[1, c, s] = s2


@cuda.jit
def bn_bwd_apply(dy, x, dx, part, gamma, mean, invstd, dgamma, dbeta, C, HW, M, chunk, dk, di, wrap_,
                 training, has_gamma):
    S = cuda.gridDim.x
    s, c, t = S - 1 - cuda.blockIdx.x, cuda.gridDim.y - 1 - cuda.blockIdx.y, cuda.threadIdx.x
    cst = cuda.shared.array(5, dtype=x.dtype)     # see _bwd_finish
    if t == 0:
        s1 = 0.0
        s2 = 0.0
        for q in range(S):
            s1 += part[0, c, q]
            s2 += part[1, c, q]
        _bwd_finish(s1, s2, c, M, gamma, mean, invstd, dgamma, dbeta, has_gamma, s == 0, cst)
    cuda.syncthreads()
    mu, iv, gi, a, b = cst[0], cst[1], cst[2], cst[3], cst[4]
    j = s * chunk + t
    j1 = min(M, (s + 1) * chunk)
    k, i = _start(j, c, C, HW)
    if not training:                # statistics are constants: dx = dy * gamma * invstd
        while j < j1:
            dx[i] = dy[i] * gi
            k, i = _step(k, i, dk, di, HW, wrap_)
            j += BS
        return
    while j + 3 * BS < j1:
        i0 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i1 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i2 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        i3 = i
        k, i = _step(k, i, dk, di, HW, wrap_)
        g0, g1, g2, g3 = dy[i0], dy[i1], dy[i2], dy[i3]
        v0, v1, v2, v3 = x[i0], x[i1], x[i2], x[i3]
        dx[i0] = gi * (g0 - a - (v0 - mu) * iv * b)
        dx[i1] = gi * (g1 - a - (v1 - mu) * iv * b)
        dx[i2] = gi * (g2 - a - (v2 - mu) * iv * b)
        dx[i3] = gi * (g3 - a - (v3 - mu) * iv * b)
        j += 4 * BS
    while j < j1:
        dx[i] = gi * (dy[i] - a - (x[i] - mu) * iv * b)
        k, i = _step(k, i, dk, di, HW, wrap_)
        j += BS


# ---------------------------------------------------------------------------- one block per channel

@cuda.jit(device=True, inline=True)
def _block_sum(a, sh):
    """Sum a over the block (blockDim.x a power of two; float64 tree in shared memory), returned to every thread."""
    t = cuda.threadIdx.x
    sh[t] = a
    cuda.syncthreads()
    w = cuda.blockDim.x // 2
    while w > 0:
        if t < w:
            sh[t] += sh[t + w]
        cuda.syncthreads()
        w //= 2
    total = sh[0]
    cuda.syncthreads()          # everyone has read sh[0] before the next sum overwrites it
    return total


# a block of BLOCK_T = 1024 threads launches only if each needs at most 64 registers: tell the compiler so
# (the simulator takes no bounds). R = 16 with 512-thread blocks, two per SM, spilled 32-640 bytes (ptxas).
BOUNDS = {} if config.ENABLE_CUDASIM else {"launch_bounds": (BLOCK_T,)}


@cuda.jit(**BOUNDS)
def bn_fwd__block(x, y, gamma, beta, rmean, rvar, mean_out, invstd_out, C, HW, M, dk, di, wrap_, has_gamma,
                  has_beta, update_mean, update_var, momentum, eps):
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(BLOCK_T, float64)
    cst = cuda.shared.array(3, dtype=x.dtype)     # see _fwd_finish
    v = cuda.local.array(R, dtype=x.dtype)
    s1 = 0.0
    k, i = _start(t, c, C, HW)  # thread t holds elements t, t+T, ... of the channel (coalesced along HW)
    for r in range(R):
        if t + r * T < M:
            v[r] = x[i]
            s1 += float64(v[r])
        k, i = _step(k, i, dk, di, HW, wrap_)
    mean = _block_sum(s1, sh) / M
    s2 = 0.0
    for r in range(R):
        if t + r * T < M:
            u = float64(v[r]) - mean
            s2 += u * u
    var = _block_sum(s2, sh) / M
    if t == 0:
        _fwd_finish(mean, var, c, M, gamma, beta, rmean, rvar, mean_out, invstd_out, has_gamma, has_beta,
                    update_mean, update_var, momentum, eps, True, cst)
    cuda.syncthreads()
    mu, sc, b = cst[0], cst[1], cst[2]
    k, i = _start(t, c, C, HW)
    for r in range(R):
        if t + r * T < M:
            y[i] = (v[r] - mu) * sc + b
        k, i = _step(k, i, dk, di, HW, wrap_)


@cuda.jit(**BOUNDS)
def bn_bwd__block(dy, x, dx, gamma, mean, invstd, dgamma, dbeta, C, HW, M, dk, di, wrap_, training, has_gamma):
    c, t, T = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(BLOCK_T, float64)
    cst = cuda.shared.array(5, dtype=x.dtype)     # see _bwd_finish
    g = cuda.local.array(R, dtype=x.dtype)
    v = cuda.local.array(R, dtype=x.dtype)
    mu = float64(mean[c])
    s1 = 0.0
    s2 = 0.0
    k, i = _start(t, c, C, HW)
    for r in range(R):
        if t + r * T < M:
            g[r] = dy[i]
            v[r] = x[i]
            s1 += float64(g[r])
            s2 += float64(g[r]) * (float64(v[r]) - mu)
        k, i = _step(k, i, dk, di, HW, wrap_)
    s1 = _block_sum(s1, sh)
    s2 = _block_sum(s2, sh)
    if t == 0:
        _bwd_finish(s1, s2, c, M, gamma, mean, invstd, dgamma, dbeta, has_gamma, True, cst)
    cuda.syncthreads()
    mu_, iv_, gi, a, b = cst[0], cst[1], cst[2], cst[3], cst[4]
    k, i = _start(t, c, C, HW)
    for r in range(R):
        if t + r * T < M:
            if training:
                dx[i] = gi * (g[r] - a - (v[r] - mu_) * iv_ * b)
            else:                   # statistics are constants: dx = dy * gamma * invstd
                dx[i] = g[r] * gi
        k, i = _step(k, i, dk, di, HW, wrap_)


def _block_plan(C, HW, M):
    """(threads, dk, di, wrap_) of the one-block path: a power of two of threads, at least a warp, enough for R
    elements each; the walk steps by that many elements (see _step)."""
    T = max(32, 1 << (-(-M // R) - 1).bit_length())
    return T, T % HW, (T // HW) * C * HW + T % HW, C * HW - HW


# ---------------------------------------------------------------------------------------------- launcher

_scratch = {}


def _partials(C, S):
    """The (2, C, S) float64 partial-sum buffer, reused across calls (kernels are stream-ordered)."""
    key = (getattr(cuda.get_current_device(), "id", 0), C, S)
    if key not in _scratch:
        _scratch[key] = of(cuda.device_array((2, C, S), dtype=np.float64))
    return _scratch[key]




def _plan(shape):
    """(C, HW, M, S, chunk, dk, di, wrap_) for the (S, C) grid."""
    shape = tuple(int(v) for v in shape)
    N, C = shape[0], shape[1]
    HW = math.prod(shape[2:])
    M = N * HW
    S = max(1, min(-(-TARGET_BLOCKS // C), M // (BS * MIN_PER_THREAD)))
    chunk = -(-M // S)
    S = -(-M // chunk)
    dk = BS % HW
    di = (BS // HW) * C * HW + dk
    return C, HW, M, S, chunk, dk, di, C * HW - HW


def _flat(d):
    return d.reshape(d.size)


def _split_grid(C, S):
    """The (S, C) grid of the split path; its channels are gridDim.y, at most 65535 (the one-block path, which
    puts channels on x, has no such limit)."""
    if C > _fl.GRID_MAX[1]:
        raise ValueError(f"batch_norm on the GPU takes at most {_fl.GRID_MAX[1]} channels when a channel holds "
                         f"more than {BLOCK_MAX} values (or training=False), got {C}")
    return S, C


# ------------------------------------------------------------------------------------------------- public

def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    kind = kind_of(x)
    d, g, b, rm, rv = (view(a) for a in (x, gamma, beta, running_mean, running_var))
    C, HW, M, S, chunk, dk, di, wrap_ = _plan(d.shape)
    if training and rv is not None and M < 2:
        raise ValueError("batch_norm: training with running statistics needs more than 1 value per channel")
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm: training=False needs running_mean and running_var")
    dummy = _dummy(d.dtype)
    opt = [dummy if a is None else a for a in (g, b, rm, rv)]
    y = _empty(d.shape, d.dtype, kind)
    mean = _empty((C,), d.dtype, kind)
    invstd = _empty((C,), d.dtype, kind)
    xf, yf = _flat(d), _flat(y[1])
    k = d.dtype.char
    if training and M <= BLOCK_MAX:
        T, bdk, bdi, bwrap = _block_plan(C, HW, M)
        launch(bn_fwd__block, k, C, T, xf, yf, *opt, mean[1], invstd[1], C, HW, M, bdk, bdi, bwrap, g is not None,
               b is not None, rm is not None, rv is not None, float(momentum), float(eps))
    else:
        grid = _split_grid(C, S)
        part = _partials(C, S)
        if training:
            launch(bn_fwd_stats, k, grid, BS, xf, part, C, HW, M, chunk, dk, di, wrap_)
        launch(bn_fwd_apply, k, grid, BS, xf, yf, part, *opt, mean[1], invstd[1], C, HW, M, chunk, dk, di, wrap_,
               bool(training), g is not None, b is not None, bool(training) and rm is not None,
               bool(training) and rv is not None, float(momentum), float(eps))
    if training and kind == "numpy":     # host running stats: the device copies were updated, write them back
        for host, dev in ((running_mean, rm), (running_var, rv)):
            if host is not None:
                host[...] = dev.device().copy_to_host()
    return _result(y, kind), _result(mean, kind), _result(invstd, kind)


def batch_norm_backward(dy, x, gamma, mean, invstd, training=True):
    kind = kind_of(dy, x)
    gd, d, g, mu, iv = (view(a) for a in (dy, x, gamma, mean, invstd))
    C, HW, M, S, chunk, dk, di, wrap_ = _plan(d.shape)
    dx = _empty(d.shape, d.dtype, kind)
    dgamma = _empty((C,), d.dtype, kind)
    dbeta = _empty((C,), d.dtype, kind)
    gf, xf = _flat(gd), _flat(d)
    k = d.dtype.char
    gam = _dummy(d.dtype) if g is None else g
    if M <= BLOCK_MAX:
        T, bdk, bdi, bwrap = _block_plan(C, HW, M)
        launch(bn_bwd__block, k, C, T, gf, xf, _flat(dx[1]), gam, mu, iv, dgamma[1], dbeta[1], C, HW, M, bdk, bdi,
               bwrap, bool(training), g is not None)
    else:
        grid = _split_grid(C, S)
        part = _partials(C, S)
        launch(bn_bwd_stats, k, grid, BS, gf, xf, mu, part, C, HW, M, chunk, dk, di, wrap_)
        launch(bn_bwd_apply, k, grid, BS, gf, xf, _flat(dx[1]), part, gam, mu, iv, dgamma[1], dbeta[1],
               C, HW, M, chunk, dk, di, wrap_, bool(training), g is not None)
    return _result(dx, kind), _result(dgamma, kind), _result(dbeta, kind)
