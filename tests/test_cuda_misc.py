"""fastnn/cuda pool2d, batch_norm and lstm kernels against fastnn.reference in float64 (NumPy in -> NumPy out).

Without a GPU they run in Numba's simulator (Python per GPU thread): tiny shapes only, odd ones on purpose
(batch 1, one channel, padding, stride > kernel, non-square, sizes not a multiple of the block).
Tolerance is a formula: |out - ref| <= atol + rtol*|ref|; pooling on integer-valued input is exact.
"""
import importlib
import os

if not os.path.exists("/dev/nvidia0") and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"        # must precede the first numba import

import numpy as np
import pytest

pytest.importorskip("numba")
from fastnn import reference as R  # noqa: E402

# fastnn.cuda re-exports functions under the module names, so fetch the modules themselves
P, B, L = (importlib.import_module("fastnn.cuda." + m) for m in ("pool2d", "batch_norm", "lstm"))

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def close(out, ref, rtol, atol_scale=1.0):
    """|out-ref| <= atol + rtol*|ref| with atol = rtol * max|ref| (cancellation in sums makes small entries noisy)."""
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape
    atol = rtol * atol_scale * max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    bad = ~(np.abs(out - ref) <= atol + rtol * np.abs(ref))
    assert not bad.any(), f"{bad.sum()} of {bad.size} off; max err {np.nanmax(np.abs(out - ref)):.3g}"


# ------------------------------------------------------------------------------------------------- pooling

# (shape, kernel, stride, padding): the 2x2/2 fast path, overlap + padding, stride > kernel, non-square, odd sizes
POOL = [((2, 3, 6, 8), (2, 2), (2, 2), (0, 0)),
        ((1, 3, 5, 7), (2, 2), (2, 2), (0, 0)),          # odd plane count and odd H, W: the 2x2/2 kernels' tails
        ((1, 2, 7, 5), (3, 3), (2, 2), (1, 1)),
        ((2, 1, 7, 9), (2, 2), (3, 3), (1, 0)),
        ((1, 2, 5, 9), (3, 2), (1, 2), (1, 1)),
        ((1, 1, 5, 5), (2, 3), (2, 3), (0, 1))]


@pytest.mark.parametrize("shape,k,s,p", POOL)
def test_max_pool2d(shape, k, s, p):
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, shape).astype(np.float64)       # few values: many ties, first max must win
    x_in = x.copy()
    y, ind = P.max_pool2d(x, k, s, p)
    yr, ir = R.max_pool2d(x, k, s, p)
    assert ind.dtype == np.int64 and np.array_equal(y, yr) and np.array_equal(ind, ir)
    dy = rng.integers(-4, 5, y.shape).astype(np.float64)
    dxr = R.max_pool2d_backward(dy, ir, shape)
    assert np.array_equal(P.max_pool2d_backward(dy, ind, shape), dxr)                 # contract call (scatter)
    assert np.array_equal(P.max_pool2d_backward(dy, ind, shape, k, s, p), dxr)       # cells or gather
    assert np.array_equal(x, x_in)


@pytest.mark.parametrize("shape,k,s,p", POOL)
@pytest.mark.parametrize("bad", [-1, 10**6])
def test_max_pool2d_backward_bad_index_on_every_kernel(shape, k, s, p, bad):
    """The geometry kernels (k2s2, cells, gather) flag an index outside the plane as the scatter does."""
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    y, ind = P.max_pool2d(x, k, s, p)
    ind = ind.copy_to_host() if hasattr(ind, "copy_to_host") else np.array(ind)
    ind.reshape(-1)[1] = bad
    for geometry in ((), (k, s, p)):
        with pytest.raises(ValueError, match=f"^indices: {bad} at position 1 is outside"):
            P.max_pool2d_backward(np.ones(ind.shape), ind, shape, *geometry)


def test_max_pool2d_nan_inf():
    x = np.full((1, 1, 4, 6), -np.inf)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan          # second NaN in the same window: the first one's index wins
    x[0, 0, 2, 3] = 5.0
    for k, s in (((2, 2), (2, 2)), ((3, 3), (1, 1))):
        y, ind = P.max_pool2d(x, k, s, (0, 0))
        yr, ir = R.max_pool2d(x, k, s, (0, 0))
        assert np.array_equal(y, yr, equal_nan=True) and np.array_equal(ind, ir)


@pytest.mark.parametrize("shape,k,s,p", POOL)
@pytest.mark.parametrize("cip", [True, False])
def test_avg_pool2d(shape, k, s, p, cip):
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 4, shape).astype(np.float64)
    close(P.avg_pool2d(x, k, s, p, cip), R.avg_pool2d(x, k, s, p, cip), 1e-15)
    dy = rng.integers(-4, 5, R.avg_pool2d(x, k, s, p, cip).shape).astype(np.float64)
    close(P.avg_pool2d_backward(dy, shape, k, s, p, cip), R.avg_pool2d_backward(dy, shape, k, s, p, cip), 1e-15)


def test_pool_naive_kernels(monkeypatch):
    """The generic (runtime window) forward kernels, which only windows over 5x5 reach otherwise."""
    monkeypatch.setattr(P, "MAX_FIXED", 0)
    rng = np.random.default_rng(13)
    for shape, k, s, p in POOL[2:4]:
        x = rng.integers(-3, 4, shape).astype(np.float64)
        y, ind = P.max_pool2d(x, k, s, p)
        yr, ir = R.max_pool2d(x, k, s, p)
        assert np.array_equal(y, yr) and np.array_equal(ind, ir)
        for cip in (True, False):
            close(P.avg_pool2d(x, k, s, p, cip), R.avg_pool2d(x, k, s, p, cip), 1e-15)


def test_pool_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 6, 7)).astype(np.float32)
    y, ind = P.max_pool2d(x, (3, 3), (2, 2), (1, 1))
    assert y.dtype == np.float32 and np.array_equal(y, R.max_pool2d(x, 3, 2, 1)[0])
    close(P.avg_pool2d(x, (2, 2), (2, 2), (0, 0), True), R.avg_pool2d(x.astype(np.float64), 2, 2), 1e-6)


# ---------------------------------------------------------------------------------------------- batch norm

@pytest.fixture
def many_blocks(monkeypatch):
    """Split each channel over several blocks even at simulator sizes (exercises the partials and their fold)."""
    monkeypatch.setattr(B, "MIN_PER_THREAD", 1)
    monkeypatch.setattr(B, "BLOCK_MAX", 0)


@pytest.fixture(params=["block", "split"])
def bn_path(request, monkeypatch):
    """Both schedules: one block per channel (channels up to BLOCK_MAX elements) and the (S, C) grid of the
    stats/apply kernels, which larger channels take."""
    if request.param == "split":
        monkeypatch.setattr(B, "BLOCK_MAX", 0)


# (3,1,19,19): M = 1083 > 4*256, so the four-loads loop runs (split) and 256 threads hold 4-5 values (block);
# (5,3): 2-D input; (1,2,3,1): batch 1, HW < 32
BN = [((3, 1, 19, 19), True), ((5, 3), False), ((1, 2, 3, 1), True), ((2, 3, 4, 5), False)]


def _bn_inputs(shape, dtype, shift=0.0, seed=4):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + shift).astype(dtype)
    return (x, rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype), (rng.random(C) + 0.5).astype(dtype))


@pytest.mark.parametrize("shape,affine", BN)
def test_batch_norm_training(shape, affine, bn_path):
    x, g, b, rm, rv = _bn_inputs(shape, np.float64, shift=100.0)     # |mean| >> std: the shifted sums matter
    g, b = (g, b) if affine else (None, None)
    rm2, rv2 = rm.copy(), rv.copy()
    out = B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
    ref = R.batch_norm(x, g, b, rm2, rv2, True, 0.1, 1e-5)
    for o, r in zip(out, ref):
        close(o, r, 1e-10)
    close(rm, rm2, 1e-12)
    close(rv, rv2, 1e-10)
    dy = np.random.default_rng(5).standard_normal(shape)
    for o, r in zip(B.batch_norm_backward(dy, x, g, out[1], out[2], True),
                    R.batch_norm_backward(dy, x, g, ref[1], ref[2], True)):
        close(o, r, 1e-9)


def test_bn_fwd_naive():
    """The one-thread-per-channel reference kernel (normalisation without gamma/beta)."""
    x = _bn_inputs((2, 3, 2, 3), np.float64, shift=20.0)[0]
    C, HW, M = 3, 6, 12
    y, mean, invstd = np.empty_like(x), np.empty(C), np.empty(C)
    B.bn_fwd__naive[1, 32](x.reshape(-1), y.reshape(-1), mean, invstd, C, HW, M, 1e-5)
    for o, r in zip((y, mean, invstd), R.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)):
        close(o, r, 1e-10)


def test_batch_norm_many_blocks(many_blocks):
    x, g, b, rm, rv = _bn_inputs((2, 2, 17, 19), np.float64)
    assert B._plan(x.shape)[3] > 1
    rm2, rv2 = rm.copy(), rv.copy()
    out = B.batch_norm(x, g, b, rm, rv, True, 0.3, 1e-3)
    ref = R.batch_norm(x, g, b, rm2, rv2, True, 0.3, 1e-3)
    for o, r in zip(out + (rm, rv), ref + (rm2, rv2)):
        close(o, r, 1e-11)
    dy = np.random.default_rng(6).standard_normal(x.shape)
    for o, r in zip(B.batch_norm_backward(dy, x, g, out[1], out[2], True),
                    R.batch_norm_backward(dy, x, g, ref[1], ref[2], True)):
        close(o, r, 1e-10)


def test_batch_norm_block_limit(monkeypatch):
    """The one-block path at its limit (M = BLOCK_MAX: 1024 threads holding R values each) and one element past
    it, where the (S, C) grid takes over."""
    used = []
    real = B.launch
    monkeypatch.setattr(B, "launch", lambda kern, *args: (used.append(kern.__name__), real(kern, *args)))
    for shape in ((2, 1, 64, 64), (B.BLOCK_MAX + 1, 1)):
        x, g, b, rm, rv = _bn_inputs(shape, np.float64, shift=10.0)
        rm2, rv2 = rm.copy(), rv.copy()
        out = B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
        ref = R.batch_norm(x, g, b, rm2, rv2, True, 0.1, 1e-5)
        for o, r in zip(out + (rm, rv), ref + (rm2, rv2)):
            close(o, r, 1e-11)
        dy = np.random.default_rng(6).standard_normal(shape)
        for o, r in zip(B.batch_norm_backward(dy, x, g, out[1], out[2], True),
                        R.batch_norm_backward(dy, x, g, ref[1], ref[2], True)):
            close(o, r, 1e-10)
    assert B._block_plan(1, 4096, 8192)[0] == B.BLOCK_T
    assert used == ["bn_fwd__block", "bn_bwd__block", "bn_fwd_stats", "bn_fwd_apply", "bn_bwd_stats", "bn_bwd_apply"]


def test_batch_norm_channels_beyond_grid_y(monkeypatch):
    """The split path puts channels on gridDim.y (at most 65535): more channels are refused by name, and leave
    the running stats as they were; the one-block path (channels on x) still runs them. Limit lowered to 2."""
    monkeypatch.setattr(importlib.import_module("fastnn.cuda._launch"), "GRID_MAX", (2**31 - 1, 2, 65535))
    x, g, b, rm, rv = _bn_inputs((4, 3), np.float64)
    rm0 = rm.copy()
    with pytest.raises(ValueError, match="at most 2 channels"):
        B.batch_norm(x, g, b, rm, rv, False, 0.1, 1e-5)
    assert np.array_equal(rm, rm0)
    rm2, rv2 = rm.copy(), rv.copy()
    for o, r in zip(B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5), R.batch_norm(x, g, b, rm2, rv2, True, 0.1, 1e-5)):
        close(o, r, 1e-12)
    monkeypatch.setattr(B, "BLOCK_MAX", 0)
    with pytest.raises(ValueError, match="at most 2 channels"):
        B.batch_norm_backward(x, x, g, rm, rv, True)


def test_batch_norm_one_running_stat(bn_path):
    x, g, b, rm, _ = _bn_inputs((4, 3), np.float64)
    rm2 = rm.copy()
    for o, r in zip(B.batch_norm(x, g, b, rm, None, True, 0.2, 1e-5), R.batch_norm(x, g, b, rm2, None, True, 0.2, 1e-5)):
        close(o, r, 1e-12)
    close(rm, rm2, 1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3)])
def test_batch_norm_inference(shape, bn_path):
    x, g, b, rm, rv = _bn_inputs(shape, np.float64)
    rm_in, rv_in = rm.copy(), rv.copy()
    out = B.batch_norm(x, g, b, rm, rv, False, 0.1, 1e-5)
    ref = R.batch_norm(x, g, b, rm.copy(), rv.copy(), False, 0.1, 1e-5)
    for o, r in zip(out, ref):
        close(o, r, 1e-12)
    assert np.array_equal(rm, rm_in) and np.array_equal(rv, rv_in)
    dy = np.random.default_rng(7).standard_normal(shape)
    for o, r in zip(B.batch_norm_backward(dy, x, g, out[1], out[2], False),
                    R.batch_norm_backward(dy, x, g, ref[1], ref[2], False)):
        close(o, r, 1e-11)


def test_batch_norm_float32(bn_path):
    x, g, b, rm, rv = _bn_inputs((2, 3, 4, 5), np.float32, shift=50.0)
    ref = R.batch_norm(*(a.astype(np.float64) for a in (x, g, b, rm.copy(), rv.copy())), True, 0.1, 1e-5)
    out = B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
    assert all(o.dtype == np.float32 for o in out)
    for o, r in zip(out, ref):
        close(o, r, 2e-5)
    dy = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
    for o, r in zip(B.batch_norm_backward(dy, x, g, out[1], out[2], True),
                    R.batch_norm_backward(dy.astype(np.float64), x.astype(np.float64), g.astype(np.float64),
                                          ref[1], ref[2], True)):
        close(o, r, 2e-5, atol_scale=4)


# ---------------------------------------------------------------------------------------------------- LSTM

def _lstm_inputs(N, T, D, H, dtype=np.float64, seed=9):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return f(N, T, D), f(N, H), f(N, H), f(D, 4 * H) * 0.5, f(H, 4 * H) * 0.5, f(4 * H)


@pytest.mark.parametrize("order,with_state,with_bias", [("ifgo", True, True), ("fgio", False, False)])
def test_lstm_cell(order, with_state, with_bias):
    xs, h, c, wi, wh, b = _lstm_inputs(2, 1, 3, 5)
    x = xs[:, 0]
    h, c, b = (h, c, b) if with_state else (None, None, b)
    b = b if with_bias else None
    out = L.lstm_cell(x, h, c, wi, wh, b, order)
    ref = R.lstm_cell(x, h, c, wi, wh, b, order)
    for o, r in zip(out[:2], ref[:2]):
        close(o, r, 1e-12)
    assert out[2].backend == "cuda" and out[2].gates.shape == (2, 20)
    rng = np.random.default_rng(10)
    dh, dc = rng.standard_normal((2, 5)), (rng.standard_normal((2, 5)) if with_state else None)
    for o, r in zip(L.lstm_cell_backward(dh, dc, out[2]), R.lstm_cell_backward(dh, dc, ref[2])):
        close(o, r, 1e-12)


@pytest.mark.parametrize("T,grads", [(3, "all"), (2, "none")])
def test_lstm(T, grads):
    xs, h0, c0, wi, wh, b = _lstm_inputs(2, T, 3, 5)
    out = L.lstm(xs, h0, c0, wi, wh, b, "ifgo")
    ref = R.lstm(xs, h0, c0, wi, wh, b, "ifgo")
    for o, r in zip(out[:3], ref[:3]):
        close(o, r, 1e-12)
    rng = np.random.default_rng(11)
    if grads == "all":
        dhs, dhn, dcn = rng.standard_normal((2, T, 5)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    else:
        dhs, dhn, dcn = rng.standard_normal((2, T, 5)), None, None
    for o, r in zip(L.lstm_backward(dhs, dhn, dcn, out[3]), R.lstm_backward(dhs, dhn, dcn, ref[3])):
        close(o, r, 1e-11)


def test_lstm_float32_zero_state():
    xs, _, _, wi, wh, b = _lstm_inputs(1, 2, 2, 3, np.float32)
    out = L.lstm(xs, None, None, wi, wh, b, "ifgo")
    ref = R.lstm(*(a.astype(np.float64) for a in (xs,)), None, None, wi.astype(np.float64),
                 wh.astype(np.float64), b.astype(np.float64), "ifgo")
    assert out[0].dtype == np.float32
    for o, r in zip(out[:3], ref[:3]):
        close(o, r, 1e-6)
    dhs = np.random.default_rng(12).standard_normal((1, 2, 3)).astype(np.float32)
    for o, r in zip(L.lstm_backward(dhs, None, None, out[3]), R.lstm_backward(dhs.astype(np.float64), None, None, ref[3])):
        close(o, r, 1e-5)
