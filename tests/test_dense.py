"""The dense family (linear, embedding, dropout): every backend against fastnn.reference on float64 copies, the
reference's gradients against finite differences, the dropout generator's statistics and its bit-identical masks
across backends, and the cpu kernels' paths (GEMM tails, thread splits, scatter by row ranges)."""
import numpy as np
import pytest

import fastnn
from fastnn import _cpu, reference as R
from fastnn.optable import arrays
from test_ops import ALL_BACKENDS, assert_unchanged, check, dtypes, f64, params, snapshot
from test_reference import numgrad


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _linear_checks(name_out_ref, dtype):
    """Sums of products with the classic bound |out - ref| <= 8*eps*sqrt(k) * (the same sum over absolute values):
    an output small only by cancellation (the dbias of one column) is judged by the size of its terms."""
    for name, out, ref, absref, k in name_out_ref:
        if ref is None:
            assert out is None, f"{name}: expected None without a bias"
            continue
        out = _host(out)
        assert out.shape == ref.shape and out.dtype == dtype, (name, out.shape, out.dtype)
        tol = 8 * np.finfo(dtype).eps * np.sqrt(k) * absref + np.finfo(dtype).tiny
        bad = ~(np.abs(out - ref) <= tol)
        assert not bad.any(), f"{name}: {bad.sum()} of {bad.size} off, e.g. {out[bad][:3]} vs {ref[bad][:3]}"


def _linear_vs_reference(backend, x, w, b, dy, dtype):
    """Forward and backward of one backend against the float64 reference with |terms| as the error scale."""
    X, W, B, DY = f64(x), f64(w), f64(b), f64(dy)
    aX, aW, aDY = np.abs(X), np.abs(W), np.abs(DY)
    rows = int(np.prod(x.shape[:-1]))
    y = fastnn.linear(x, w, b, backend=backend)
    assert type(y) is np.ndarray
    _linear_checks([("y", y, R.linear(X, W, B), R.linear(aX, aW, None if b is None else np.abs(B)), w.shape[0] + 1)],
                   dtype)
    grads = fastnn.linear_backward(dy, x, w, bias=b is not None, backend=backend)
    refs = R.linear_backward(DY, X, W, bias=b is not None)
    scales = R.linear_backward(aDY, aX, aW, bias=b is not None)
    assert len(grads) == 3
    _linear_checks(zip(("dx", "dweight", "dbias"), grads, refs, scales, (w.shape[1], rows, rows)), dtype)


# ---------------------------------------------------------------------------------------------------- linear

@dtypes
@pytest.mark.parametrize("backend,case", params("linear"))
def test_linear(backend, case, dtype):
    a = arrays(case, dtype)
    before = snapshot(a)
    _linear_vs_reference(backend, a["x"], a["weight"], a["bias"], a["dy"], dtype)
    assert_unchanged(before, a)


@pytest.mark.parametrize("shape,m,bias", [((3, 4), 5, True), ((2, 3, 4), 2, True), ((1, 3), 1, False)])
def test_linear_backward_fd(shape, m, bias):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(shape), rng.standard_normal((shape[-1], m))
    b = rng.standard_normal(m) if bias else None
    dy = rng.standard_normal(shape[:-1] + (m,))
    dx, dw, db = R.linear_backward(dy, x, w, bias)
    loss = lambda: float((R.linear(x, w, b) * dy).sum())       # noqa: E731
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numgrad(loss, w), rtol=1e-6, atol=1e-8)
    if bias:
        np.testing.assert_allclose(db, numgrad(loss, b), rtol=1e-6, atol=1e-8)
    else:
        assert db is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cpu_tails_and_splits(dtype):
    """Every width of the AVX-512 tail panel (1-48 columns mod 48), rows off the 8-row tile, batch 1-4 (gemm__rows),
    and shapes big enough for each thread split (rows, columns, depth), forward and backward with the bias fused."""
    rng = np.random.default_rng(2)
    shapes = [(n, d, m) for n, d in ((1, 7), (3, 9), (5, 16), (13, 33)) for m in (1, 2, 15, 16, 17, 31, 32, 33, 47,
                                                                               48, 49, 95, 97)]
    shapes += [(600, 40, 49), (64, 1500, 40), (40, 64, 3000), (9, 600, 600), (300, 257, 100)]
    for n, d, m in shapes:
        x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, d), (d, m), (m,)))
        dy = rng.standard_normal((n, m)).astype(dtype)
        _linear_vs_reference("cpu", x, w, b, dy, dtype)
        for algo in ("packed", "small"):      # each GEMM path by name (small: float32 on AVX-512 only)
            X, W, B, DY = f64(x), f64(w), f64(b), f64(dy)
            try:
                y = _cpu.linear(x, w, b, _algo=algo)
            except ValueError as e:
                assert algo == "small" and "cannot run" in str(e)
                continue
            scale = np.abs(X) @ np.abs(W) + np.abs(B)
            _linear_checks([("y " + algo, y, X @ W + B, scale, d + 1)], dtype)
            dx, dw, db = _cpu.linear_backward(dy, x, w, True, _algo=algo)
            _linear_checks([("dx " + algo, dx, DY @ W.T, np.abs(DY) @ np.abs(W.T), m),
                            ("dweight " + algo, dw, X.T @ DY, np.abs(X.T) @ np.abs(DY), n),
                            ("dbias " + algo, db, DY.sum(0), np.abs(DY).sum(0), n)], dtype)


def test_linear_dbias_is_its_own_array():
    """dweight and dbias share one buffer on the cpu (dbias is the GEMM's extra row): writing one leaves the other."""
    rng = np.random.default_rng(3)
    x, w, dy = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    dx, dw, db = fastnn.linear_backward(dy, x, w, backend="cpu")
    assert dw.shape == (4, 3) and db.shape == (3,) and dw.flags.c_contiguous and not np.shares_memory(dw, db)
    db0 = db.copy()
    dw[...] = 7
    np.testing.assert_array_equal(db, db0)


# ------------------------------------------------------------------------------------------------- embedding

@dtypes
@pytest.mark.parametrize("backend,case", params("embedding"))
def test_embedding(backend, case, dtype):
    a = arrays(case, dtype)
    before = snapshot(a)
    idx, w, dy = a["indices"], a["weight"], a["dy"]
    y = fastnn.embedding(idx, w, backend=backend)
    check("y", y, R.embedding(idx, f64(w)), dtype, 1)
    repeats = int(np.bincount(idx.reshape(-1)).max())
    check("dweight", fastnn.embedding_backward(dy, idx, w.shape[0], backend=backend),
          R.embedding_backward(f64(dy), idx, w.shape[0]), dtype, repeats)
    assert_unchanged(before, a)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_embedding_backward_sums_repeats_and_zeroes_unused_rows(backend):
    idx = np.array([[3, 1, 3], [3, 0, 1]])
    dy = np.arange(6 * 2, dtype=np.float64).reshape(2, 3, 2)
    dw = _host(fastnn.embedding_backward(dy, idx, 5, backend=backend))
    expected = np.zeros((5, 2))
    for (n, t), v in np.ndenumerate(idx):
        expected[v] += dy[n, t]
    np.testing.assert_array_equal(dw, expected)      # small integers: exact in any order
    assert not dw[[2, 4]].any()


def test_embedding_backward_fd_adjoint():
    """embedding_backward is the adjoint of embedding: <embedding(idx, W), dy> = <W, embedding_backward(dy, idx)>."""
    rng = np.random.default_rng(4)
    idx = rng.integers(0, 6, (4, 5))
    w, dy = rng.standard_normal((6, 3)), rng.standard_normal((4, 5, 3))
    dw = R.embedding_backward(dy, idx, 6)
    np.testing.assert_allclose(dw, numgrad(lambda: float((R.embedding(idx, w) * dy).sum()), w), rtol=1e-6, atol=1e-8)


def test_embedding_cpu_threads_deterministic():
    """Many positions on few rows (a Zipf-like skew) through the threaded scatter: twice the same bits, and the sums
    of each row in increasing position order, as np.add.at adds them."""
    rng = np.random.default_rng(5)
    idx = np.minimum(rng.zipf(1.3, 50000), 3000) - 1
    dy = rng.standard_normal((50000, 37)).astype(np.float32)
    a = fastnn.embedding_backward(dy, idx, 3000, backend="cpu")
    b = fastnn.embedding_backward(dy, idx, 3000, backend="cpu")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, R.embedding_backward(dy, idx, 3000))   # np.add.at: the same order, float32
    y = fastnn.embedding(idx.astype(np.int32), dy[:3000], backend="cpu")
    np.testing.assert_array_equal(y, dy[:3000][idx])


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("bad,where", [(-1, 0), (5, 4), (1 << 40, 2)])
def test_embedding_refuses_an_index_outside_the_rows(backend, bad, where):
    idx = np.array([0, 1, 2, 3, 4, 1], dtype=np.int64)
    idx[where] = bad
    before = idx.copy()
    msg = f"indices: {bad} at position {where} is outside [0, 5), the rows of weight"
    with pytest.raises(ValueError) as e:
        fastnn.embedding(idx, np.ones((5, 3), np.float32), backend=backend)
    assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        fastnn.embedding_backward(np.ones((6, 3), np.float32), idx, 5, backend=backend)
    assert str(e.value) == msg
    np.testing.assert_array_equal(idx, before)


# --------------------------------------------------------------------------------------------------- dropout

@dtypes
@pytest.mark.parametrize("backend,case", params("dropout"))
def test_dropout(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    kw = dict(p=p["p"], seed=p["seed"], scale=p["scale"], mask=a["mask"])
    y = fastnn.dropout(a["x"], **kw, backend=backend)
    check("y", y, R.dropout(f64(a["x"]), **kw), dtype, 1)
    dx = fastnn.dropout_backward(a["dy"], **kw, backend=backend)
    check("dx", dx, R.dropout_backward(f64(a["dy"]), **kw), dtype, 1)
    # the mask itself (scale off, x = 1) is the reference's, bit for bit
    ones = np.ones_like(a["x"])
    keep = _host(fastnn.dropout(ones, **dict(kw, scale=False), backend=backend))
    expected = R.dropout_keep(ones.shape, p["p"], p["seed"]) if a["mask"] is None else a["mask"]
    np.testing.assert_array_equal(keep, np.asarray(expected, dtype=dtype))
    assert_unchanged(before, a)


def test_dropout_masks_identical_across_backends():
    """numpy and cpu on a size off every SIMD width and chunk boundary (the cuda simulator on a small one): the
    same bits, and the backward regenerates the forward's mask from the seed."""
    x = np.random.default_rng(6).standard_normal(300_007).astype(np.float32)
    for seed, p in ((0, 0.5), (2 ** 63 + 12345, 0.1), (99, 0.9)):
        ref = R.dropout_keep(x.shape, p, seed)
        y = fastnn.dropout(x, p, seed, backend="cpu")
        np.testing.assert_array_equal(y != 0, ref & (x != 0))
        np.testing.assert_array_equal(fastnn.dropout_backward(x, p, seed, backend="cpu"), y)
        np.testing.assert_array_equal(y, R.dropout(x, p, seed))


@pytest.mark.parametrize("backend", [b for b in ALL_BACKENDS if b.values[0] == "cuda"])
def test_dropout_mask_cuda_matches(backend):
    x = np.ones((7, 45), np.float32)
    for seed, p in ((3, 0.5), (2 ** 64 - 1, 0.3)):
        np.testing.assert_array_equal(_host(fastnn.dropout(x, p, seed, scale=False, backend=backend)),
                                      R.dropout_keep(x.shape, p, seed).astype(np.float32))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_statistics(p):
    """Keep rate within 6 sigma of 1 - p; neighbours, strided elements and two seeds independent at the same loose
    bound; a broken generator (a constant, a short period, a mask shared by seeds) fails these."""
    n = 1 << 20
    keep = R.dropout_keep((n,), p, 1234)
    q = 1 - p

    def close(frac, expected, count):
        sigma = np.sqrt(expected * (1 - expected) / count)
        assert abs(frac - expected) < 6 * sigma, (frac, expected)

    close(keep.mean(), q, n)
    close(keep[1:][keep[:-1]].mean(), q, keep[:-1].sum())                 # P(keep | previous kept)
    close(keep[1024:][keep[:-1024]].mean(), q, keep[:-1024].sum())        # a power-of-two stride
    other = R.dropout_keep((n,), p, 1235)
    close((keep == other).mean(), q * q + p * p, n)                       # adjacent seeds agree by chance only
    assert np.array_equal(R.dropout_keep((n,), p, 1234), keep)            # and the same seed is the same mask


def test_dropout_extremes_and_books_mask():
    x = np.random.default_rng(7).standard_normal((4, 9)).astype(np.float32)
    for backend in ("numpy", "cpu"):
        np.testing.assert_array_equal(fastnn.dropout(x, 0.0, backend=backend), x)
        assert not fastnn.dropout(x, 1.0, backend=backend).any()
        mask = np.random.default_rng(8).random(x.shape) > 0.5             # the books' draw: x * mask, no scaling
        np.testing.assert_array_equal(fastnn.dropout(x, 0.5, mask=mask, scale=False, backend=backend), x * mask)
        np.testing.assert_array_equal(fastnn.dropout_backward(x, 0.5, mask=mask, scale=False, backend=backend),
                                      x * mask)
        np.testing.assert_allclose(fastnn.dropout(x, 0.25, 3, backend=backend),
                                   x * R.dropout_keep(x.shape, 0.25, 3) / 0.75, rtol=1e-6)


def test_dropout_backward_is_the_adjoint():
    rng = np.random.default_rng(9)
    x, dy = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    g = R.dropout_backward(dy, 0.4, 11)
    np.testing.assert_allclose(g, numgrad(lambda: float((R.dropout(x, 0.4, 11) * dy).sum()), x), rtol=1e-6,
                               atol=1e-8)


def test_dropout_keeps_nan_where_dropped():
    x = np.full(64, np.nan, np.float32)
    for backend in ("numpy", "cpu"):
        assert np.isnan(fastnn.dropout(x, 0.5, 1, backend=backend)).all()


@pytest.mark.parametrize("n", [1, 311, 312, 313, 624, 1249, 20001])
def test_rand_gt_is_np_random_rand(n):
    """The books' Dropout mask made in C++ from NumPy's global MT19937: the same draws as np.random.rand, at
    every position in the 624-word state (pairs that straddle a twist), and the stream continues identically."""
    for p in (-1.0, 0.0, 0.2, 0.5, 0.999, 1.0, float("nan")):
        np.random.seed(n)
        np.random.rand(n % 7)                                             # start mid-state
        state = np.random.get_state()
        keep = _cpu.rand_gt((n,), p)
        after = np.random.rand(5)
        np.random.set_state(state)
        ref = np.random.rand(n)
        assert keep.dtype == np.bool_ and keep.shape == (n,)
        np.testing.assert_array_equal(keep, ref > p)
        np.testing.assert_array_equal(after, np.random.rand(5))
    np.random.seed(1)
    u = np.random.rand(64)
    for v in u[:8]:                                                       # p exactly on a draw, and just below
        for q in (float(v), float(np.nextafter(v, 0))):
            np.random.seed(1)
            np.testing.assert_array_equal(_cpu.rand_gt((8, 8), q), (u > q).reshape(8, 8))


def test_rand_gt_falls_back_when_the_check_fails(monkeypatch):
    monkeypatch.setattr(_cpu, "_MT_OK", {id(np.random.mtrand._rand._bit_generator): False})
    np.random.seed(3)
    keep = _cpu.rand_gt((4, 5), 0.3)
    np.random.seed(3)
    np.testing.assert_array_equal(keep, np.random.rand(4, 5) > 0.3)
    monkeypatch.setattr(_cpu, "_MT_OK", {})
    np.random.seed(4)
    assert _cpu.rand_gt((3,), 0.5).shape == (3,) and _cpu._MT_OK[id(np.random.mtrand._rand._bit_generator)]
