"""The C++ pool2d / batch_norm / lstm kernels (through fastnn._cpu) against float64 NumPy checks written here.

Tolerance: |out - ref| <= atol + rtol*|ref|. Max pooling uses integer-valued inputs (ties!) and is checked exactly.
The scalar fallback is covered by re-running this file in a subprocess with FASTNN_SIMD=scalar.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn.reference as reference
from fastnn import _C, _cpu
from fastnn import optable
from fastnn._shapes import out_size
from fastnn.optable import KERNEL_CASES

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-11}


def close(out, ref, tol, what=""):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    bad = np.abs(out - ref) > tol + tol * np.abs(ref)
    assert not bad.any(), f"{what}: {bad.sum()} bad, max err {np.abs(out - ref).max():.3g}"


# --------------------------------------------------------------------------------------------------- pooling
def windows(shape, k, s, p):
    """(oh, ow, rows slice, cols slice, padded-window size) for every output, windows clipped to the input."""
    _, _, H, W = shape
    for oh in range(out_size(H, k[0], s[0], p[0])):
        for ow in range(out_size(W, k[1], s[1], p[1])):
            a, b = oh * s[0] - p[0], ow * s[1] - p[1]
            padded = (min(a + k[0], H + p[0]) - a) * (min(b + k[1], W + p[1]) - b)
            yield oh, ow, slice(max(a, 0), min(a + k[0], H)), slice(max(b, 0), min(b + k[1], W)), padded


def max_pool_ref(x, k, s, p):
    N, C, H, W = x.shape
    y = np.empty((N, C, out_size(H, k[0], s[0], p[0]), out_size(W, k[1], s[1], p[1])), x.dtype)
    idx = np.empty(y.shape, np.int64)
    for oh, ow, r, c, _ in windows(x.shape, k, s, p):
        win = x[:, :, r, c].reshape(N, C, -1)
        j = np.argmax(win, axis=2)  # first maximum; a NaN counts as the maximum and the first NaN wins
        y[:, :, oh, ow] = np.take_along_axis(win, j[..., None], 2)[..., 0]
        idx[:, :, oh, ow] = (r.start + j // (c.stop - c.start)) * W + c.start + j % (c.stop - c.start)
    return y, idx


def avg_pool_ref(x, k, s, p, cip):
    N, C, H, W = x.shape
    y = np.empty((N, C, out_size(H, k[0], s[0], p[0]), out_size(W, k[1], s[1], p[1])))
    for oh, ow, r, c, padded in windows(x.shape, k, s, p):
        win = x[:, :, r, c].astype(np.float64)
        y[:, :, oh, ow] = win.sum((2, 3)) / (padded if cip else win.shape[2] * win.shape[3])
    return y


def avg_pool_bwd_ref(dy, shape, k, s, p, cip):
    dx = np.zeros(shape)
    for oh, ow, r, c, padded in windows(shape, k, s, p):
        n = padded if cip else (r.stop - r.start) * (c.stop - c.start)
        dx[:, :, r, c] += dy[:, :, oh, ow, None, None].astype(np.float64) / n
    return dx


POOL_CASES = KERNEL_CASES["pool2d"]     # shape, kernel, stride, padding
POOL_IDS = [f"{s}-k{k}-s{st}-p{p}".replace(" ", "") for s, k, st, p in POOL_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,s,p", POOL_CASES, ids=POOL_IDS)
def test_max_pool2d(shape, k, s, p, dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 3, shape).astype(dtype)          # small integers: many ties
    x.reshape(-1)[rng.random(x.size) < 0.03] = np.nan      # NaNs propagate, the first one wins
    x.reshape(-1)[rng.random(x.size) < 0.03] = -np.inf
    y, idx = _cpu.max_pool2d(x, k, s, p)
    yr, ir = max_pool_ref(x, k, s, p)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(idx, ir)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dxr = np.zeros((shape[0] * shape[1], shape[2] * shape[3]))
    np.add.at(dxr, (np.arange(len(dxr))[:, None], ir.reshape(len(dxr), -1)), dy.reshape(len(dxr), -1))
    close(_cpu.max_pool2d_backward(dy, idx, shape), dxr.reshape(shape), TOL[dtype], "dx")


def test_max_pool2d_all_neg_inf_and_bad_indices():
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    y, idx = _cpu.max_pool2d(x, (2, 2), (2, 2), (0, 0))
    assert np.all(y == -np.inf) and idx.tolist() == [[[[0, 2], [8, 10]]]]
    idx = np.array([[[[-1, 16], [5, 5]]]], np.int64)    # out of range: a ValueError naming one of them
    with pytest.raises(ValueError, match=r"^indices: (-1 at position 0|16 at position 1) is outside \[0, 16\)"):
        _cpu.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), idx, (1, 1, 4, 4))
    idx[0, 0, 0] = 5                                      # in range again: routed
    dx = _cpu.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), idx, (1, 1, 4, 4))
    assert dx.sum() == 4 and dx[0, 0, 1, 1] == 4


@pytest.mark.parametrize("w", [6, 20])                       # the masked (< 8 outputs) and the full-vector rows
def test_avg_pool2d_of_negative_zeros_is_positive_zero(w):
    """The fast path sums from +0 as the generic code and the reference do: four -0.0 average to +0.0."""
    y = _cpu.avg_pool2d(np.full((1, 2, 4, w), -0.0, np.float32), (2, 2), (2, 2), (0, 0), True)
    assert not np.signbit(y).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("shape,k,s,p", POOL_CASES, ids=POOL_IDS)
def test_avg_pool2d(shape, k, s, p, cip, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    y = _cpu.avg_pool2d(x, k, s, p, cip)
    assert y.dtype == dtype
    close(y, avg_pool_ref(x, k, s, p, cip), TOL[dtype], "y")
    dy = rng.standard_normal(y.shape).astype(dtype)
    close(_cpu.avg_pool2d_backward(dy, shape, k, s, p, cip), avg_pool_bwd_ref(dy, shape, k, s, p, cip), TOL[dtype],
          "dx")


# ------------------------------------------------------------------------------------------------ batch norm
def bn_ref(x, gamma, beta, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    bs = (1, -1) + (1,) * (x.ndim - 2)
    x = x.astype(np.float64)
    mean, var = x.mean(axes), x.var(axes)
    invstd = 1 / np.sqrt(var + eps)
    g = np.ones_like(mean) if gamma is None else gamma.astype(np.float64)
    b = np.zeros_like(mean) if beta is None else beta.astype(np.float64)
    y = (x - mean.reshape(bs)) * (invstd * g).reshape(bs) + b.reshape(bs)
    return y, mean, var, invstd


def bn_bwd_ref(dy, x, gamma, mean, invstd, training):
    axes = (0,) + tuple(range(2, x.ndim))
    bs = (1, -1) + (1,) * (x.ndim - 2)
    dy, x, mean, invstd = (a.astype(np.float64) for a in (dy, x, mean, invstd))
    g = np.ones_like(mean) if gamma is None else gamma.astype(np.float64)
    xhat = (x - mean.reshape(bs)) * invstd.reshape(bs)
    dbeta, dgamma = dy.sum(axes), (dy * xhat).sum(axes)
    m = x.size // x.shape[1]
    gi = (g * invstd).reshape(bs)
    dx = gi * (dy - dbeta.reshape(bs) / m - xhat * dgamma.reshape(bs) / m) if training else gi * dy
    return dx, dgamma, dbeta


BIG, BIG_C = optable.BIG, optable.BIG_C   # > 16 MB in float32: the non-temporal store path


def skip_big_unless_streaming(shape, dtype):
    """The big case exists for the float32 AVX2 streaming stores only; elsewhere it would just cost time."""
    if shape in (BIG, BIG_C) and (dtype != np.float32 or not _C.config()["avx2_fma"]):
        pytest.skip("the streaming path is float32 + AVX2 only")


BN_CASES = KERNEL_CASES["batch_norm"]     # shape, affine


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,affine", BN_CASES, ids=[str(s).replace(" ", "") for s, _ in BN_CASES])
def test_batch_norm_train(shape, affine, dtype):
    skip_big_unless_streaming(shape, dtype)
    rng = np.random.default_rng(3)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 50).astype(dtype)   # an offset mean: naive E[x^2]-E[x]^2 would fail
    gamma = rng.standard_normal(C).astype(dtype) if affine else None
    beta = rng.standard_normal(C).astype(dtype) if affine else None
    rm, rv = rng.standard_normal(C).astype(dtype), rng.random(C).astype(dtype) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = _cpu.batch_norm(x, gamma, beta, rm, rv, True, 0.1, 1e-5)
    yr, mr, varr, ivr = bn_ref(x, gamma, beta, 1e-5)
    tol = TOL[dtype] * (10 if dtype == np.float32 else 1)
    assert y.dtype == mean.dtype == invstd.dtype == dtype
    close(y, yr, tol, "y"), close(mean, mr, tol, "mean"), close(invstd, ivr, tol, "invstd")
    m = x.size // C
    close(rm, 0.9 * rm0.astype(np.float64) + 0.1 * mr, tol, "running_mean")
    close(rv, 0.9 * rv0.astype(np.float64) + 0.1 * varr * m / (m - 1), tol, "running_var")

    dy = rng.standard_normal(shape).astype(dtype)
    out = _cpu.batch_norm_backward(dy, x, gamma, mean, invstd, True)
    for o, r, w in zip(out, bn_bwd_ref(dy, x, gamma, mean, invstd, True), ("dx", "dgamma", "dbeta")):
        close(o, r, tol * (10 if w != "dx" else 1), w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 7, 9), (16, 5), (3, 64, 40, 40), BIG], ids=str)
def test_batch_norm_inference(shape, dtype):
    skip_big_unless_streaming(shape, dtype)
    rng = np.random.default_rng(4)
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C).astype(dtype), rng.random(C).astype(dtype) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = _cpu.batch_norm(x, gamma, beta, rm, rv, False, 0.1, 1e-5)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)          # not updated in inference
    bs = (1, -1) + (1,) * (x.ndim - 2)
    iv = 1 / np.sqrt(rv0.astype(np.float64) + 1e-5)
    close(y, (x - rm0.reshape(bs)) * (iv * gamma).reshape(bs) + beta.reshape(bs), TOL[dtype] * 10, "y")
    dy = rng.standard_normal(shape).astype(dtype)
    out = _cpu.batch_norm_backward(dy, x, gamma, mean, invstd, False)
    for o, r, w in zip(out, bn_bwd_ref(dy, x, gamma, mean, invstd, False), ("dx", "dgamma", "dbeta")):
        close(o, r, TOL[dtype] * 10, w)


# ------------------------------------------------------------------------------------------------------ LSTM
def sigmoid(a):
    return 0.5 * (1 + np.tanh(0.5 * a))


def lstm_ref(xs, h0, c0, w_ih, w_hh, bias, order):
    """float64 forward: (hs, cs, activated gates in gate order)."""
    N, T, _ = xs.shape
    H = w_hh.shape[0]
    blk = {g: slice(order.index(g) * H, (order.index(g) + 1) * H) for g in "ifgo"}
    h = np.zeros((N, H)) if h0 is None else h0.astype(np.float64)
    c = np.zeros((N, H)) if c0 is None else c0.astype(np.float64)
    hs, cs, gates = np.empty((N, T, H)), np.empty((N, T, H)), np.empty((N, T, 4 * H))
    for t in range(T):
        a = xs[:, t].astype(np.float64) @ w_ih + h @ w_hh + (0 if bias is None else bias.astype(np.float64))
        for g in "ifo":
            a[:, blk[g]] = sigmoid(a[:, blk[g]])
        a[:, blk["g"]] = np.tanh(a[:, blk["g"]])
        c = a[:, blk["f"]] * c + a[:, blk["i"]] * a[:, blk["g"]]
        h = a[:, blk["o"]] * np.tanh(c)
        hs[:, t], cs[:, t], gates[:, t] = h, c, a
    return hs, cs, gates


def lstm_bwd_ref(dhs, dh_n, dc_n, xs, h0, c0, w_ih, w_hh, bias, order):
    """float64 backpropagation through time, recomputing the forward: (dxs, dh0, dc0, dw_ih, dw_hh, dbias)."""
    N, T, D = xs.shape
    H = w_hh.shape[0]
    blk = {g: slice(order.index(g) * H, (order.index(g) + 1) * H) for g in "ifgo"}
    hs, cs, gates = lstm_ref(xs, h0, c0, w_ih, w_hh, bias, order)
    h0 = np.zeros((N, H)) if h0 is None else h0.astype(np.float64)
    c0 = np.zeros((N, H)) if c0 is None else c0.astype(np.float64)
    dh = np.zeros((N, H)) if dh_n is None else dh_n.astype(np.float64)
    dc = np.zeros((N, H)) if dc_n is None else dc_n.astype(np.float64)
    da = np.empty((N, T, 4 * H))
    for t in reversed(range(T)):
        if dhs is not None:
            dh = dh + dhs[:, t]
        i, f, g, o = (gates[:, t, blk[k]] for k in "ifgo")
        tc = np.tanh(cs[:, t])
        c_prev = c0 if t == 0 else cs[:, t - 1]
        dc = dc + dh * o * (1 - tc ** 2)
        da[:, t, blk["i"]] = dc * g * i * (1 - i)
        da[:, t, blk["f"]] = dc * c_prev * f * (1 - f)
        da[:, t, blk["g"]] = dc * i * (1 - g ** 2)
        da[:, t, blk["o"]] = dh * tc * o * (1 - o)
        dc = dc * f
        dh = da[:, t] @ w_hh.T
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], 1).reshape(N * T, H)
    da2 = da.reshape(N * T, 4 * H)
    return (da @ w_ih.T, dh, dc, xs.reshape(N * T, D).T.astype(np.float64) @ da2, h_prev.T @ da2, da2.sum(0))


LSTM_CASES = KERNEL_CASES["lstm"]     # N, T, D, H, gate order, with states/bias/dhs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T,D,H,order,full", LSTM_CASES, ids=[f"{c[:4]}-{c[4]}-{c[5]}".replace(" ", "")
                                                               for c in LSTM_CASES])
def test_lstm(N, T, D, H, order, full, dtype):
    rng = np.random.default_rng(5)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    xs, w_ih, w_hh = r(N, T, D), r(D, 4 * H) * dtype(0.5), r(H, 4 * H) * dtype(0.5)
    bias, h0, c0 = (r(4 * H), r(N, H), r(N, H)) if full else (None, None, None)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    hs, h_n, c_n, cache = _cpu.lstm(xs, h0, c0, w_ih, w_hh, bias, order)
    ref = lstm_ref(xs, h0, c0, w_ih.astype(np.float64), w_hh.astype(np.float64), bias, order)
    close(hs, ref[0], tol, "hs"), close(h_n, ref[0][:, -1], tol, "h_n"), close(c_n, ref[1][:, -1], tol, "c_n")
    close(cache.gates, ref[2], tol, "gates"), close(cache.cs, ref[1], tol, "cs")
    dhs, dh_n, dc_n = (r(N, T, H), r(N, H), r(N, H)) if full else (None, r(N, H), None)
    out = _cpu.lstm_backward(dhs, dh_n, dc_n, cache)
    w64 = w_ih.astype(np.float64), w_hh.astype(np.float64)
    ref_b = lstm_bwd_ref(dhs, dh_n, dc_n, xs, h0, c0, *w64, bias, order)
    for o, rr, w in zip(out, ref_b, ("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "dbias")):
        assert o.dtype == dtype
        close(o, rr, tol * 10, w)

    # the cell is the same computation with T = 1: h/c None mean zeros, dh/dc None mean zeros
    x = xs[:, 0].copy()
    h1, c1, cc = _cpu.lstm_cell(x, h0, c0, w_ih, w_hh, bias, order)
    ref = lstm_ref(xs[:, :1], h0, c0, w_ih.astype(np.float64), w_hh.astype(np.float64), bias, order)
    close(h1, ref[0][:, 0], tol, "h_next"), close(c1, ref[1][:, 0], tol, "c_next")
    dh, dc = (r(N, H), None) if full else (None, r(N, H))
    out = _cpu.lstm_cell_backward(dh, dc, cc)
    ref_b = lstm_bwd_ref(None if dh is None else dh[:, None], None, dc, xs[:, :1], h0, c0, *w64, bias, order)
    ref_b = (ref_b[0][:, 0],) + ref_b[1:]
    for o, rr, w in zip(out, ref_b, ("dx", "dh", "dc", "dw_ih", "dw_hh", "dbias")):
        close(o, rr, tol * 10, w)


def test_lstm_same_bits_on_any_thread_count():
    """With 16+ batch rows per thread each thread runs its own rows through every step (csrc/lstm.cpp); with fewer
    the threads split each step's GEMM by columns. Neither reorders any sum, so 1, 2 and 3 threads agree bitwise."""
    rng = np.random.default_rng(8)
    N, T, D, H = 50, 4, 6, 20
    xs, h0, c0 = (rng.standard_normal(s).astype(np.float32) for s in ((N, T, D), (N, H), (N, H)))
    w_ih, w_hh = (rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((D, 4 * H), (H, 4 * H)))
    bias, dhs = rng.standard_normal(4 * H).astype(np.float32), rng.standard_normal((N, T, H)).astype(np.float32)
    old, runs = _C.get_num_threads(), []
    try:
        for threads in (1, 2, 3):  # 2 and 3 threads: by rows (50 >= 16 * 3); 1 thread: the plain loop
            _C.set_num_threads(threads)
            out = _cpu.lstm(xs, h0, c0, w_ih, w_hh, bias, "ifgo")
            runs.append(out[:3] + tuple(_cpu.lstm_backward(dhs, None, None, out[3])))
    finally:
        _C.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_agrees_with_fastnn_reference():
    """The same kernels against the project's NumPy spec, one case per op."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 13, 14)).astype(np.float32)
    for a, b in zip(_cpu.max_pool2d(x, (3, 3), (2, 2), (1, 1)), reference.max_pool2d(x, 3, 2, 1)):
        np.testing.assert_array_equal(a, b)
    close(_cpu.avg_pool2d(x, (3, 3), (2, 2), (1, 1), False), reference.avg_pool2d(x, 3, 2, 1, False), 1e-5)
    for a, b in zip(_cpu.batch_norm(x, None, None, None, None, True, 0.1, 1e-5), reference.batch_norm(x, None, None)):
        close(a, b, 1e-4)
    xs, w_ih, w_hh = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 20)), rng.standard_normal((5, 20))
    out, ref = _cpu.lstm(xs, None, None, w_ih, w_hh, None, "fgio"), reference.lstm(xs, None, None, w_ih, w_hh, None,
                                                                                  "fgio")
    for a, b in zip(out[:3], ref[:3]):
        close(a, b, 1e-10)
    for a, b in zip(_cpu.lstm_backward(None, out[1], None, out[3]), reference.lstm_backward(None, ref[1], None, ref[3])):
        close(a, b, 1e-9)


@pytest.mark.skipif(os.environ.get("FASTNN_SIMD") == "scalar", reason="already the scalar run")
def test_scalar_fallback_subprocess():
    """Every test above once more with the AVX2 kernels switched off (the variant is fixed at load time)."""
    env = dict(os.environ, FASTNN_SIMD="scalar")
    code = "from fastnn import _C; assert _C.config()['simd'] == 'scalar'"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "not subprocess"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


# ------------------------------------------------------------------------------------------- buffer cache
@pytest.fixture
def fresh_cache():
    """An empty buffer cache with the default limit; restored (and emptied) afterwards."""
    limit = _C.buffer_cache_info()["limit_bytes"]
    _C.empty_cache()
    yield
    _C.set_buffer_cache_limit(limit)
    _C.empty_cache()


def test_buffer_cache_reuses_freed_outputs(fresh_cache):
    a = _C.empty((512, 1024), np.dtype(np.float32))
    assert a.shape == (512, 1024) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    addr = a.ctypes.data
    a[:] = 7
    v = a[3:5]  # a view keeps the block alive
    del a
    assert _C.buffer_cache_info()["cached_bytes"] == 0
    del v
    assert _C.buffer_cache_info()["cached_bytes"] == 512 * 1024 * 4
    other = _C.empty((1024, 1024), np.dtype(np.float32))  # another size does not take it
    assert other.ctypes.data != addr
    b = _C.empty((1024, 512), np.dtype(np.float32))  # the same size does
    assert b.ctypes.data == addr and _C.buffer_cache_info()["cached_bytes"] == 0
    c = _C.empty((1024, 512), np.dtype(np.float32))  # while b lives, a new block
    assert c.ctypes.data != addr


def test_buffer_cache_limit_and_empty_cache(fresh_cache):
    import fastnn
    _C.set_buffer_cache_limit(3 << 20)
    blocks = [_C.empty((1 << 20,), np.dtype(np.uint8)) for _ in range(5)]
    del blocks
    assert _C.buffer_cache_info()["cached_bytes"] == 3 << 20  # three 1 MiB blocks kept, two freed
    fastnn.empty_cache()
    assert _C.buffer_cache_info()["cached_bytes"] == 0
    _C.set_buffer_cache_limit(0)
    a = _C.empty((1 << 20,), np.dtype(np.uint8))
    del a
    assert _C.buffer_cache_info()["cached_bytes"] == 0


def test_ops_outputs_from_the_cache_are_independent(fresh_cache):
    # Outputs of >= 1 MiB come from the cache: two live results must not share memory, and a reused block must
    # hold the new result, not the old one.
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((4, 16, 64, 64)).astype(np.float32) for _ in range(2))
    y1 = _cpu.max_pool2d(x1, (1, 1), (1, 1), (0, 0))[0]
    y2 = _cpu.max_pool2d(x2, (1, 1), (1, 1), (0, 0))[0]
    assert y1.nbytes >= 1 << 20 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, x1)
    np.testing.assert_array_equal(y2, x2)
    addr = y1.ctypes.data
    del y1
    y3 = _cpu.max_pool2d(x2, (1, 1), (1, 1), (0, 0))[0]
    assert y3.ctypes.data == addr
    np.testing.assert_array_equal(y3, x2)
