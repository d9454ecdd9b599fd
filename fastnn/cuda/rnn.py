"""The tanh RNN and the GRU (book 2's "zrh", PyTorch's "rzn"), cells and sequences, forward and backward, on the GPU.

Built as the LSTM is (fastnn/cuda/lstm.py, whose helpers it uses): one GEMM for every step's x @ w_ih, then per
step a split-K recurrent GEMM (partial slices summed by the step's pointwise kernel) and one fused pointwise kernel;
after the backward's loop one GEMM each for dxs, dw_ih, dw_hh and a column-sum kernel for the biases. A cell is a
sequence of one step. Per step:
  RNN         h @ w_hh -> rnn_fwd_step (tanh in place in hs, which doubles as the gate buffer).
  GRU "rzn"   h @ w_hh -> gru_rzn_fwd_step (r, z, hn = h U_n + b_hn, n, h').
  GRU "zrh"   h @ U_zr -> gru_zrh_fwd_mid (z, r, r*h) -> (r*h) @ U_h -> gru_zrh_fwd_step (h~, h'): the candidate's
              product needs r first, so two GEMMs (U_zr, U_h: w_hh's column blocks, copied apart once per call).
  Backward (reversed): the step kernel sums the carried dh (the part of dh_{t-1} that bypasses w_hh, written by the
  previous kernel) and the recurrent GEMM's partials; "zrh" again needs two GEMMs per step (da_h @ U_h^T before
  d r is known, then [da_z, da_r] @ U_zr^T).

Kernels, in order:
  split_cols        w_hh (H,3H) -> U_zr (H,2H), U_h (H,H); put_cols: a block back into a (rows, 3H) array.
  rnn_fwd_step      one thread per (n, j): tanh(x part + partials + bias) into hs and a contiguous h for the GEMM.
  gru_rzn_fwd_step  the activated gates (in place over x @ w_ih: the cache), hn, h', contiguous h.
  gru_zrh_fwd_mid   z, r (in place), r*h into the cache's hn and a contiguous copy for the second GEMM.
  gru_zrh_fwd_step  h~ (in place), h', contiguous h.
  rnn_bwd_step      da = dh * (1 - y^2) into dgates (N,T,H) and a contiguous copy; h_{t-1} for dw_hh.
  gru_rzn_bwd_step  da_r, da_z, da_n (x side) and da_r, da_z, da_n*r (h side: dw_hh, db_hh, the GEMM), dh*z.
  gru_zrh_bwd_step  da_z, da_h, dh*(1-z); gru_zrh_bwd_mid: d(r*h) from its GEMM -> da_r, dh += r*d(r*h).
Activations in float64 (latency-bound kernels: the accuracy is free), as the LSTM's.
"""
import math

from numba import cuda, float64

from ..reference import GRUCache, RNNCache
from ._launch import dummy as _dummy, empty as _empty, kind_of, launch, of as _of, result as _result, view
from .gemm import flat as _flat, launch_split_k, launch_tiled, matmul, split_k_for
from .lstm import BS, _buffer, _cache_for as _lstm_cache_for, _cache_on_device, _dev, _hold, _sigmoid, _zeros, colsum

# ----------------------------------------------------------------------------------------------- kernels


@cuda.jit
def split_cols(w, a, b):                   # w (H, 3H) -> a = w[:, :2H], b = w[:, 2H:]
    q = cuda.grid(1)
    if q >= w.size:
        return
    H3 = w.shape[1]
    H = H3 // 3
    i = q // H3
    j = q - i * H3
    if j < 2 * H:
        a[i, j] = w[i, j]
    else:
        b[i, j - 2 * H] = w[i, j]


@cuda.jit
def put_cols(src, dst, col0):              # dst[:, col0:col0+n] = src (rows, n)
    q = cuda.grid(1)
    if q >= src.size:
        return
    n = src.shape[1]
    i = q // n
    j = q - i * n
    dst[i, col0 + j] = src[i, j]


@cuda.jit
def rnn_fwd_step(hs, p, S, bias, t, h_out, has_bias):
    """hs[:, t] holds x @ w_ih; adds the S partial slices of h @ w_hh and the bias, activates in place."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    v = float64(hs[n, t, j])
    for z in range(S):
        v += p[z, n, j]
    if has_bias:
        v += bias[j]
    y = math.tanh(v)
    hs[n, t, j] = y
    h_out[n, j] = y


@cuda.jit(device=True, inline=True)
def _pre(G, p, S, b_ih, b_hh, n, t, col, pcol, has_bi, has_bh):
    """x part + the S partials of the recurrent product (column pcol of p) + both biases (column col)."""
    v = float64(G[n, t, col])
    for z in range(S):
        v += p[z, n, pcol]
    if has_bi:
        v += b_ih[col]
    if has_bh:
        v += b_hh[col]
    return v


@cuda.jit
def gru_rzn_fwd_step(G, p, S, b_ih, b_hh, h0, t, hs, hn, h_out, has_bi, has_bh):
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    r = _sigmoid(_pre(G, p, S, b_ih, b_hh, n, t, j, j, has_bi, has_bh))
    z = _sigmoid(_pre(G, p, S, b_ih, b_hh, n, t, H + j, H + j, has_bi, has_bh))
    gh = 0.0
    for s in range(S):
        gh += p[s, n, 2 * H + j]
    if has_bh:
        gh += b_hh[2 * H + j]
    a = float64(G[n, t, 2 * H + j]) + r * gh
    if has_bi:
        a += b_ih[2 * H + j]
    c = math.tanh(a)
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    h = (1.0 - z) * c + z * hp
    G[n, t, j] = r
    G[n, t, H + j] = z
    G[n, t, 2 * H + j] = c
    hn[n, t, j] = gh
    hs[n, t, j] = h
    h_out[n, j] = h


@cuda.jit
def gru_zrh_fwd_mid(G, p, S, b_ih, b_hh, h0, t, hs, rh, rh_out, has_bi, has_bh):
    """p: partials of h @ U_zr (S, N, 2H)."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    z = _sigmoid(_pre(G, p, S, b_ih, b_hh, n, t, j, j, has_bi, has_bh))
    r = _sigmoid(_pre(G, p, S, b_ih, b_hh, n, t, H + j, H + j, has_bi, has_bh))
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    G[n, t, j] = z
    G[n, t, H + j] = r
    v = r * hp
    rh[n, t, j] = v
    rh_out[n, j] = v


@cuda.jit
def gru_zrh_fwd_step(G, p, S, b_ih, b_hh, h0, t, hs, h_out, has_bi, has_bh):
    """p: partials of (r*h) @ U_h (S, N, H)."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    c = math.tanh(_pre(G, p, S, b_ih, b_hh, n, t, 2 * H + j, j, has_bi, has_bh))
    z = float64(G[n, t, j])
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    h = (1.0 - z) * hp + z * c
    G[n, t, 2 * H + j] = c
    hs[n, t, j] = h
    h_out[n, j] = h


@cuda.jit(device=True, inline=True)
def _dh(dhs, dh_in, dhp, ndhp, n, t, j, has_dhs, has_dh):
    """The gradient reaching h_t: carried part + the ndhp partials of the recurrent GEMM + dhs[:, t]."""
    dh = float64(dh_in[n, j]) if has_dh else 0.0
    for z in range(ndhp):
        dh += dhp[z, n, j]
    if has_dhs:
        dh += dhs[n, t, j]
    return dh


@cuda.jit
def rnn_bwd_step(hs, h0, dhs, dh_in, dhp, ndhp, t, dg_all, dg_t, hprev, has_dhs, has_dh, write_hprev):
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    y = float64(hs[n, t, j])
    da = _dh(dhs, dh_in, dhp, ndhp, n, t, j, has_dhs, has_dh) * (1.0 - y * y)
    dg_all[n, t, j] = da
    dg_t[n, j] = da
    if write_hprev:
        hprev[n, t, j] = hs[n, t - 1, j] if t > 0 else h0[n, j]


@cuda.jit
def gru_rzn_bwd_step(gates, hs, hn, h0, dhs, dh_in, dhp, ndhp, t, dg_all, dgh_all, dg_t, dh_out, hprev,
                     has_dhs, has_dh, write_hprev):
    """dg_all: x-side gate gradients; dgh_all and dg_t: h-side ([da_r, da_z, da_n*r]); dh_out = dh*z (may alias
    dh_in: each thread reads its element first)."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    dh = _dh(dhs, dh_in, dhp, ndhp, n, t, j, has_dhs, has_dh)
    r = float64(gates[n, t, j])
    z = float64(gates[n, t, H + j])
    c = float64(gates[n, t, 2 * H + j])
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    dan = dh * (1.0 - z) * (1.0 - c * c)
    daz = dh * (hp - c) * z * (1.0 - z)
    dar = dan * float64(hn[n, t, j]) * r * (1.0 - r)
    dgh = dan * r
    dg_all[n, t, j] = dar
    dg_all[n, t, H + j] = daz
    dg_all[n, t, 2 * H + j] = dan
    dgh_all[n, t, j] = dar
    dgh_all[n, t, H + j] = daz
    dgh_all[n, t, 2 * H + j] = dgh
    dg_t[n, j] = dar
    dg_t[n, H + j] = daz
    dg_t[n, 2 * H + j] = dgh
    dh_out[n, j] = dh * z
    if write_hprev:
        hprev[n, t, j] = hs[n, t - 1, j] if t > 0 else h0[n, j]


@cuda.jit
def gru_zrh_bwd_step(gates, hs, h0, dhs, dh_in, dhp, ndhp, t, dg_all, dgh_all, dgh_t, dh_out, has_dhs, has_dh):
    """da_z, da_h (also into dgh_all for dU_h, dgh_t for the GEMM d(r*h) = da_h @ U_h^T); dh_out = dh*(1-z)."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    dh = _dh(dhs, dh_in, dhp, ndhp, n, t, j, has_dhs, has_dh)
    z = float64(gates[n, t, j])
    c = float64(gates[n, t, 2 * H + j])
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    dah = dh * z * (1.0 - c * c)
    dg_all[n, t, j] = dh * (c - hp) * z * (1.0 - z)
    dg_all[n, t, 2 * H + j] = dah
    dgh_all[n, t, j] = dah
    dgh_t[n, j] = dah
    dh_out[n, j] = dh * (1.0 - z)


@cuda.jit
def gru_zrh_bwd_mid(gates, hs, h0, pm, S, t, dg_all, dg_zr_t, dh_out, hprev, write_hprev):
    """m = d(r*h) (the S partials pm): da_r, dh_out += r*m; [da_z, da_r] contiguous for the GEMM with U_zr^T."""
    q = cuda.grid(1)
    N, H = hs.shape[0], hs.shape[2]
    if q >= N * H:
        return
    n = q // H
    j = q - n * H
    m = 0.0
    for z in range(S):
        m += pm[z, n, j]
    r = float64(gates[n, t, H + j])
    hp = float64(hs[n, t - 1, j]) if t > 0 else float64(h0[n, j])
    dar = m * hp * r * (1.0 - r)
    dg_all[n, t, H + j] = dar
    dg_zr_t[n, j] = dg_all[n, t, j]        # da_z, written by this thread in gru_zrh_bwd_step
    dg_zr_t[n, H + j] = dar
    dh_out[n, j] = float64(dh_out[n, j]) + r * m
    if write_hprev:
        hprev[n, t, j] = hs[n, t - 1, j] if t > 0 else h0[n, j]


# ---------------------------------------------------------------------------------------------- launchers

def _grid(N, H):
    return (N * H + BS - 1) // BS


def _split_hh(w_hh, dt, tag):
    """U_zr (H,2H) and U_h (H,H): w_hh's column blocks as contiguous device arrays (GEMM operands)."""
    H = w_hh.shape[0]
    a, b = _buffer(tag + "_uzr", (H, 2 * H), dt), _buffer(tag + "_uh", (H, H), dt)
    launch(split_cols, dt.char, (3 * H * H + BS - 1) // BS, BS, w_hh, _of(a), _of(b))
    return _of(a), _of(b)


def _partials(tag, M, N, K, dt):
    S = split_k_for(M, N, K)
    return S, _of(_buffer(tag, (S, M, N), dt))


def _rnn_forward(xs, h0, w_ih, w_hh, bias, hs, h_last):
    """T steps on Views; h0 None: no first recurrent GEMM."""
    N, T, D = xs.shape
    H = w_hh.shape[0]
    dt = xs.dtype
    matmul(xs.reshape(N * T, D), w_ih, out=hs.reshape(N * T, H))          # every step's x @ w_ih, into hs
    S, p = _partials("rnn_p", N, H, H, dt)
    hbuf = [_of(_buffer(f"rnn_h{i}", (N, H), dt)) for i in range(min(T - 1, 2))]
    h = h0
    for t in range(T):
        if h is not None:
            launch_split_k(h, w_hh, p.reshape(p.size), N, H, H, S)
        h_out = h_last if t == T - 1 else hbuf[t % 2]
        launch(rnn_fwd_step, dt.char, _grid(N, H), BS, hs, p, S if h is not None else 0,
               _dummy(dt, 1) if bias is None else bias, t, h_out, bias is not None)
        h = h_out


def _gru_forward(xs, h0, h0z, w_ih, w_hh, b_ih, b_hh, order, hs, h_last, G, hn):
    """T steps on Views; h0 None: no first recurrent GEMM (h0z: the zeros the kernels read instead)."""
    N, T, D = xs.shape
    H = w_hh.shape[0]
    dt = xs.dtype
    matmul(xs.reshape(N * T, D), w_ih, out=G.reshape(N * T, 3 * H))
    bi = _dummy(dt, 1) if b_ih is None else b_ih
    bh = _dummy(dt, 1) if b_hh is None else b_hh
    flags = (b_ih is not None, b_hh is not None)
    hbuf = [_of(_buffer(f"gru_h{i}", (N, H), dt)) for i in range(min(T - 1, 2))]
    grid = _grid(N, H)
    h = h0
    if order == "rzn":
        S, p = _partials("gru_p", N, 3 * H, H, dt)
        for t in range(T):
            if h is not None:
                launch_split_k(h, w_hh, p.reshape(p.size), N, 3 * H, H, S)
            h_out = h_last if t == T - 1 else hbuf[t % 2]
            launch(gru_rzn_fwd_step, dt.char, grid, BS, G, p, S if h is not None else 0, bi, bh, h0z, t, hs, hn,
                   h_out, *flags)
            h = h_out
        return
    uzr, uh = _split_hh(w_hh, dt, "gru_f")
    S1, p1 = _partials("gru_p1", N, 2 * H, H, dt)
    S2, p2 = _partials("gru_p2", N, H, H, dt)
    rh_t = _of(_buffer("gru_rh", (N, H), dt))
    for t in range(T):
        if h is not None:
            launch_split_k(h, uzr, p1.reshape(p1.size), N, 2 * H, H, S1)
        launch(gru_zrh_fwd_mid, dt.char, grid, BS, G, p1, S1 if h is not None else 0, bi, bh, h0z, t, hs, hn,
               rh_t, *flags)
        launch_split_k(rh_t, uh, p2.reshape(p2.size), N, H, H, S2)
        h_out = h_last if t == T - 1 else hbuf[t % 2]
        launch(gru_zrh_fwd_step, dt.char, grid, BS, G, p2, S2, bi, bh, h0z, t, hs, h_out, *flags)
        h = h_out


def _rnn_backward(dhs, dh_n, c, dxs, dh0, dw_ih, dw_hh, dbias):
    """BPTT over the (N,T,...) cache on device arrays; writes the five gradients."""
    xs, hs, h0 = c.x, c.hs, c.h
    N, T, D = xs.shape
    H = hs.shape[2]
    dt = xs.dtype
    R = N * T
    dg_all = _buffer("rnn_dg_all", (N, T, H), dt)
    dg_t = _buffer("rnn_dg_t", (N, H), dt) if T > 1 else dg_all.reshape(N, H)
    hprev = _buffer("rnn_hprev", (N, T, H), dt) if T > 1 else h0.reshape(N, 1, H)
    S, dhp = _partials("rnn_dhp", N, H, H, dt)
    dummy2, dummy3 = _dummy(dt, 2), _dummy(dt, 3)
    for t in reversed(range(T)):
        first = t == T - 1
        launch(rnn_bwd_step, dt.char, _grid(N, H), BS, hs, h0, dummy3 if dhs is None else dhs,
               dummy2 if dh_n is None or not first else dh_n, dummy3 if first else dhp, 0 if first else S, t,
               dg_all, dg_t, hprev, dhs is not None, first and dh_n is not None, T > 1)
        if t == 0:
            matmul(dg_t, c.w_hh, out=dh0, trans_b=True)
        else:
            launch_split_k(dg_t, c.w_hh, dhp.reshape(dhp.size), N, H, H, S, tb=True)
    dg = dg_all.reshape(R, H)
    matmul(dg, c.w_ih, out=dxs.reshape(R, D), trans_b=True)
    matmul(xs.reshape(R, D), dg, out=dw_ih, trans_a=True)
    matmul(hprev.reshape(R, H), dg, out=dw_hh, trans_a=True)
    launch(colsum, dt.char, (H + 31) // 32, (32, 32), dg, dbias)


def _gru_backward(dhs, dh_n, c, dxs, dh0, dw_ih, dw_hh, db_ih, db_hh):
    """BPTT over the (N,T,...) GRU cache on device arrays; db_ih/db_hh may be None (not wanted)."""
    xs, hs, h0, gates, hn = c.x, c.hs, c.h, c.gates, c.hn
    N, T, D = xs.shape
    H = hs.shape[2]
    dt = xs.dtype
    R = N * T
    dg_all = _buffer("gru_dg_all", (N, T, 3 * H), dt)
    hprev = _buffer("gru_hprev", (N, T, H), dt) if T > 1 else h0.reshape(N, 1, H)
    dh_dir = _buffer("gru_dh_dir", (N, H), dt)     # the carried part of dh_{t-1} (bypasses w_hh)
    dummy2, dummy3 = _dummy(dt, 2), _dummy(dt, 3)
    dhs_ = dummy3 if dhs is None else dhs
    grid = _grid(N, H)
    if c.gate_order == "rzn":
        dgh_all = _buffer("gru_dgh_all", (N, T, 3 * H), dt)
        dg_t = _buffer("gru_dg_t", (N, 3 * H), dt)
        S, dhp = _partials("gru_dhp", N, H, 3 * H, dt)
        for t in reversed(range(T)):
            first = t == T - 1
            dh_in = (dh_n if dh_n is not None else dummy2) if first else dh_dir
            launch(gru_rzn_bwd_step, dt.char, grid, BS, gates, hs, hn, h0, dhs_, dh_in, dummy3 if first else dhp,
                   0 if first else S, t, dg_all, dgh_all, dg_t, dh0 if t == 0 else dh_dir, hprev, dhs is not None,
                   not first or dh_n is not None, T > 1)
            if t == 0:
                matmul(dg_t, c.w_hh, out=dh0, trans_b=True, beta=1.0)
            else:
                launch_split_k(dg_t, c.w_hh, dhp.reshape(dhp.size), N, H, 3 * H, S, tb=True)
        matmul(hprev.reshape(R, H), dgh_all.reshape(R, 3 * H), out=dw_hh, trans_a=True)
        if db_hh is not None:
            launch(colsum, dt.char, (3 * H + 31) // 32, (32, 32), dgh_all.reshape(R, 3 * H), db_hh)
    else:
        uzr, uh = _split_hh(c.w_hh, dt, "gru_b")
        dgh_all = _buffer("gru_dgh_all", (N, T, H), dt)       # da_h alone: dU_h = (r*h)^T @ da_h
        dgh_t = _buffer("gru_dgh_t", (N, H), dt)
        dg_zr_t = _buffer("gru_dg_zr_t", (N, 2 * H), dt)
        Sm, pm = _partials("gru_pm", N, H, H, dt)
        S, dhp = _partials("gru_dhp", N, H, 2 * H, dt)
        for t in reversed(range(T)):
            first = t == T - 1
            dh_in = (dh_n if dh_n is not None else dummy2) if first else dh_dir
            dh_out = dh0 if t == 0 else dh_dir
            launch(gru_zrh_bwd_step, dt.char, grid, BS, gates, hs, h0, dhs_, dh_in, dummy3 if first else dhp,
                   0 if first else S, t, dg_all, dgh_all, dgh_t, dh_out, dhs is not None,
                   not first or dh_n is not None)
            launch_split_k(dgh_t, uh, pm.reshape(pm.size), N, H, H, Sm, tb=True)
            launch(gru_zrh_bwd_mid, dt.char, grid, BS, gates, hs, h0, pm, Sm, t, dg_all, dg_zr_t, dh_out, hprev,
                   T > 1)
            if t == 0:
                matmul(dg_zr_t, uzr, out=dh0, trans_b=True, beta=1.0)
            else:
                launch_split_k(dg_zr_t, uzr, dhp.reshape(dhp.size), N, H, 2 * H, S, tb=True)
        # dw_hh[:, :2H] = h_prev^T @ dg[:, :2H] (the first 2H columns of both, strided); dw_hh[:, 2H:] apart
        launch_tiled(_flat(hprev), _flat(dg_all), _flat(dw_hh), H, 2 * H, R, H, 3 * H, 3 * H, True, False)
        du = _buffer("gru_du", (H, H), dt)
        matmul(hn.reshape(R, H), dgh_all.reshape(R, H), out=du, trans_a=True)
        launch(put_cols, dt.char, (H * H + BS - 1) // BS, BS, _of(du), dw_hh, 2 * H)
        if db_hh is not None:
            launch(colsum, dt.char, (3 * H + 31) // 32, (32, 32), dg_all.reshape(R, 3 * H), db_hh)
    dg = dg_all.reshape(R, 3 * H)
    matmul(dg, c.w_ih, out=dxs.reshape(R, D), trans_b=True)
    matmul(xs.reshape(R, D), dg, out=dw_ih, trans_a=True)
    if db_ih is not None:
        launch(colsum, dt.char, (3 * H + 31) // 32, (32, 32), dg, db_ih)


# ------------------------------------------------------------------------------------------------- public

_RNN_ARRAYS = ("x", "h", "w_ih", "w_hh", "hs")
_GRU_ARRAYS = ("x", "h", "w_ih", "w_hh", "gates", "hs", "hn")


def _fields(cache):
    return _GRU_ARRAYS if isinstance(cache, GRUCache) else _RNN_ARRAYS


def _cache_for(kind, cache):
    return _lstm_cache_for(kind, cache, _fields(cache))


def _on_device(cache):
    return _cache_on_device(cache, _fields(cache))


def _h0(h0, hd, shape, dt, kind):
    """(caller array, View) of the initial state: the given one, else zeros (the cache holds them)."""
    return (h0, hd) if hd is not None else _zeros(shape, dt, kind)


def _rnn(x, h, w_ih, w_hh, bias, cell):
    kind = kind_of(x)
    d, hd, wi, wh, b = (view(a) for a in (x, h, w_ih, w_hh, bias))
    N, D = d.shape[0], d.shape[-1]
    T = 1 if cell else d.shape[1]
    H = wh.shape[0]
    dt = d.dtype
    hs, h_n = _empty((N, H) if cell else (N, T, H), dt, kind), _empty((N, H), dt, kind)
    h0 = _h0(h, hd, (N, H), dt, kind)
    _rnn_forward(d.reshape(N, T, D), hd, wi, wh, b, hs[1].reshape(N, T, H), (hs if cell else h_n)[1])
    cache = RNNCache("cuda", *(_hold(kind, v, o) for o, v in ((x, d), h0, (w_ih, wi), (w_hh, wh), hs)))
    return _result(hs, kind), None if cell else _result(h_n, kind), _cache_for(kind, cache)


def rnn_cell(x, h, w_ih, w_hh, bias):
    h_next, _, cache = _rnn(x, h, w_ih, w_hh, bias, True)
    return h_next, cache


def rnn(xs, h0, w_ih, w_hh, bias):
    return _rnn(xs, h0, w_ih, w_hh, bias, False)


def _as_sequence(c):
    """A cell's cache as a sequence of one step (device arrays)."""
    N, D = c.x.shape
    H = c.w_hh.shape[0]
    fields = dict(x=c.x.reshape(N, 1, D), hs=c.hs.reshape(N, 1, H))
    if isinstance(c, GRUCache):
        fields.update(gates=c.gates.reshape(N, 1, 3 * H), hn=c.hn.reshape(N, 1, H))
    return c._replace(**fields)


def _grads(c, dhs, dh_n, cell, kind):
    """The backward of either op on a device cache (a cell's as one step): outputs in the caller's type."""
    gru = isinstance(c, GRUCache)
    N, D = tuple(c.x.shape)[0], tuple(c.x.shape)[-1]
    H = c.w_hh.shape[0]
    G = 3 * H if gru else H
    dt = c.x.dtype
    shapes = [c.x.shape, (N, H), (D, G), (H, G)]
    shapes += [(G,) if c.has_b_ih else None, (G,) if c.has_b_hh else None] if gru else [(G,)]
    out = [None if s is None else _empty(s, dt, kind) for s in shapes]
    dev = [None if o is None else o[1].device() for o in out]
    seq = _as_sequence(c) if cell else c
    (_gru_backward if gru else _rnn_backward)(dhs, dh_n, seq, *dev)
    return tuple(None if o is None else _result(o, kind) for o in out)


def rnn_cell_backward(dh_next, cache):
    kind = kind_of(dh_next, cache.x)
    c = _on_device(cache)
    dh = _dev(dh_next)
    return _grads(c, None if dh is None else dh.reshape(dh.shape[0], 1, dh.shape[1]), None, True, kind)


def rnn_backward(dhs, dh_n, cache):
    return _grads(_on_device(cache), _dev(dhs), _dev(dh_n), False, kind_of(dhs, dh_n, cache.x))


def _gru(x, h, w_ih, w_hh, b_ih, b_hh, gate_order, cell):
    kind = kind_of(x)
    d, hd, wi, wh, bi, bh = (view(a) for a in (x, h, w_ih, w_hh, b_ih, b_hh))
    N, D = d.shape[0], d.shape[-1]
    T = 1 if cell else d.shape[1]
    H = wh.shape[0]
    dt = d.dtype
    lead = (N,) if cell else (N, T)
    hs, hn, G = (_empty(lead + (k,), dt, kind) for k in (H, H, 3 * H))
    h_n = _empty((N, H), dt, kind)
    h0 = _h0(h, hd, (N, H), dt, kind)
    seq = lambda v, k: v.reshape(N, T, k)
    _gru_forward(d.reshape(N, T, D), hd, h0[1], wi, wh, bi, bh, gate_order, seq(hs[1], H), (hs if cell else h_n)[1],
                 seq(G[1], 3 * H), seq(hn[1], H))
    cache = GRUCache("cuda", gate_order, *(_hold(kind, v, o) for o, v in ((x, d), h0, (w_ih, wi), (w_hh, wh), G,
                                                                          hs, hn)), bi is not None, bh is not None)
    return _result(hs, kind), None if cell else _result(h_n, kind), _cache_for(kind, cache)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh"):
    h_next, _, cache = _gru(x, h, w_ih, w_hh, b_ih, b_hh, gate_order, True)
    return h_next, cache


def gru(xs, h0, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh"):
    return _gru(xs, h0, w_ih, w_hh, b_ih, b_hh, gate_order, False)


def gru_cell_backward(dh_next, cache):
    kind = kind_of(dh_next, cache.x)
    dh = _dev(dh_next)
    return _grads(_on_device(cache), None if dh is None else dh.reshape(dh.shape[0], 1, dh.shape[1]), None, True,
                  kind)


def gru_backward(dhs, dh_n, cache):
    return _grads(_on_device(cache), _dev(dhs), _dev(dh_n), False, kind_of(dhs, dh_n, cache.x))
