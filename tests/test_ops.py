"""Conformance: every op x backend x dtype x case of fastnn/optable.py (CASES) through the public API, against
fastnn.reference run on float64 copies of the same inputs. Forward and backward, every output."""
import importlib.util
import os

import numpy as np
import pytest

import fastnn
from fastnn import reference as R
from fastnn._shapes import pair as npairs
from fastnn.optable import CASES, arrays

BACKENDS = ("numpy", "cpu", "cuda")
DTYPES = (np.float32, np.float64)
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# the cuda backend needs numba and the numba-cuda package (pip install 'fastnn[cuda]'); without them its tests skip
HAVE_NUMBA = all(importlib.util.find_spec(m) is not None for m in ("numba", "numba_cuda"))
NO_CUDA = pytest.mark.skipif(not HAVE_NUMBA, reason="numba/numba-cuda not installed: no cuda backend")
ALL_BACKENDS = [pytest.param(b, marks=[NO_CUDA] if b == "cuda" else []) for b in BACKENDS]   # for tiny ad-hoc tests


def params(op):
    """(backend, case) pairs. cuda: tiny cases everywhere, larger ones only on a real GPU (marker gpu);
    realistic cases are GPU-only (the host backends get the small and awkward ones)."""
    out = []
    for case in CASES[op]:
        for b in BACKENDS:
            marks = []
            if b == "cuda":
                marks.append(NO_CUDA)
                if not case.tiny:
                    marks += [pytest.mark.gpu, pytest.mark.skipif(
                        SIMULATOR, reason="not tiny: far too slow in the CUDA simulator, runs on a real GPU")]
            elif case.realistic:
                continue
            out.append(pytest.param(b, case, marks=marks, id=f"{b}-{case.id}"))
    return out


dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])


def f64(a):
    return None if a is None else np.array(a, dtype=np.float64)


def host(a):
    """A NumPy copy of a NumPy or GPU array (used for cache contents, which live on the backend)."""
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def check(name, out, ref, dtype, k, on_host=True):
    """|out - ref| <= atol + rtol*|ref| with rtol = 8*eps*sqrt(k) and atol = rtol*max|ref|.

    k is the length of the longest sum feeding one output: rounding errors of k terms grow like eps*sqrt(k);
    the atol term covers outputs that are small only through cancellation. Integer-valued inputs make most
    conv/pool/im2col results exact, so there any error beyond one rounding is a bug."""
    if on_host:
        assert type(out) is np.ndarray, f"{name}: NumPy in must give NumPy out, got {type(out).__name__}"
    else:
        out = host(out)
    assert out.shape == ref.shape, f"{name}: shape {out.shape}, expected {ref.shape}"
    assert out.dtype == dtype, f"{name}: dtype {out.dtype}, expected {np.dtype(dtype)}"
    rtol = 8 * np.finfo(dtype).eps * np.sqrt(k)
    atol = rtol * np.max(np.abs(ref), initial=0.0)
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))                    # ~(<=) also flags NaN
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
        pytest.fail(f"{name}: {bad.sum()} of {bad.size} elements off (rtol={rtol:.2g}, atol={atol:.2g}); "
                    f"at {i}: got {out[i]!r}, expected {ref[i]!r}")


def snapshot(a):
    return {k: v.copy() for k, v in a.items() if isinstance(v, np.ndarray)}


def assert_unchanged(before, a, skip=()):
    for k, v in before.items():
        if k not in skip:
            np.testing.assert_array_equal(a[k], v, err_msg=f"input {k} was modified")


def geometry(case):
    p = case.p
    return {k: p[k] for k in ("kernel_size", "stride", "padding", "dilation", "count_include_pad") if k in p}


# -------------------------------------------------------------------------------------------- im2col / col2im

@dtypes
@pytest.mark.parametrize("backend,case", params("im2col"))
def test_im2col_col2im(backend, case, dtype):
    a, geo = arrays(case, dtype), geometry(case)
    before = snapshot(a)
    kh, kw = npairs(geo["kernel_size"])
    check("col", fastnn.im2col(a["x"], **geo, backend=backend), R.im2col(f64(a["x"]), **geo), dtype, 1)
    check("col2im", fastnn.col2im(a["col"], case.p["x"], **geo, backend=backend),
          R.col2im(f64(a["col"]), case.p["x"], **geo), dtype, kh * kw)
    assert_unchanged(before, a)


# ----------------------------------------------------------------------------------------------------- conv2d

@dtypes
@pytest.mark.parametrize("backend,case", params("conv2d"))
def test_conv2d(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    geo = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"])
    x, w, dy = a["x"], a["weight"], a["dy"]
    n, c = x.shape[:2]
    k, cg, kh, kw = w.shape
    red = max(cg * kh * kw, k // p["groups"] * kh * kw, n * dy.shape[2] * dy.shape[3])   # longest sum
    check("y", fastnn.conv2d(x, w, a["bias"], **geo, backend=backend),
          R.conv2d(f64(x), f64(w), f64(a["bias"]), **geo), dtype, red)
    grads = fastnn.conv2d_backward(dy, x, w, **geo, backend=backend)
    refs = R.conv2d_backward(f64(dy), f64(x), f64(w), **geo)
    assert len(grads) == 3
    for name, g, r in zip(("dx", "dweight", "dbias"), grads, refs):
        check(name, g, r, dtype, red)
    assert_unchanged(before, a)


# ---------------------------------------------------------------------------------------------------- pooling

@dtypes
@pytest.mark.parametrize("backend,case", params("max_pool2d"))
def test_max_pool2d(backend, case, dtype):
    a, geo = arrays(case, dtype), geometry(case)
    before = snapshot(a)
    kh, kw = npairs(geo["kernel_size"])
    y, idx = fastnn.max_pool2d(a["x"], **geo, backend=backend)
    ry, ridx = R.max_pool2d(f64(a["x"]), **geo)
    check("y", y, ry, dtype, 1)
    assert type(idx) is np.ndarray and idx.dtype == np.int64, f"indices: {type(idx).__name__} {idx.dtype}"
    np.testing.assert_array_equal(idx, ridx, err_msg="indices (first maximum must win; inputs have many ties)")
    # the backward gets the reference's indices, so it is tested independently of the forward
    check("dx", fastnn.max_pool2d_backward(a["dy"], ridx, case.p["x"], backend=backend),
          R.max_pool2d_backward(f64(a["dy"]), ridx, case.p["x"]), dtype, kh * kw)
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("avg_pool2d"))
def test_avg_pool2d(backend, case, dtype):
    a, geo = arrays(case, dtype), geometry(case)
    before = snapshot(a)
    kh, kw = npairs(geo["kernel_size"])
    check("y", fastnn.avg_pool2d(a["x"], **geo, backend=backend), R.avg_pool2d(f64(a["x"]), **geo), dtype, kh * kw)
    check("dx", fastnn.avg_pool2d_backward(a["dy"], case.p["x"], **geo, backend=backend),
          R.avg_pool2d_backward(f64(a["dy"]), case.p["x"], **geo), dtype, kh * kw)
    assert_unchanged(before, a)


NAN_X = np.array([[[[1.0, np.nan, 3.0, np.nan, 0.0],
                    [np.nan, 2.0, -np.inf, -np.inf, 0.0],
                    [-np.inf, -np.inf, 4.0, 4.0, np.inf],
                    [-np.inf, -np.inf, 4.0, 4.0, np.inf]]]])


@dtypes
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("kernel_size,stride,padding", [(2, None, 0), (3, 1, 1), (2, 1, 1), (3, 2, 1)])
def test_max_pool2d_nan_inf(backend, kernel_size, stride, padding, dtype):
    """NaN is the maximum (the first NaN wins), padding is never chosen even over -inf, +inf beats numbers."""
    x = NAN_X.astype(dtype)
    y, idx = fastnn.max_pool2d(x, kernel_size, stride, padding, backend=backend)
    ry, ridx = R.max_pool2d(NAN_X, kernel_size, stride, padding)
    np.testing.assert_array_equal(y, ry.astype(dtype))     # assert_array_equal treats NaN == NaN
    np.testing.assert_array_equal(idx, ridx)


# ------------------------------------------------------------------------------------------------- batch norm

@dtypes
@pytest.mark.parametrize("backend,case", params("batch_norm"))
def test_batch_norm(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    x, gamma, beta, rm, rv, dy = (a[k] for k in ("x", "gamma", "beta", "running_mean", "running_var", "dy"))
    m = x.size // x.shape[1]
    opts = dict(training=p["training"], momentum=p["momentum"], eps=p["eps"])
    rm64, rv64 = f64(rm), f64(rv)
    outs = fastnn.batch_norm(x, gamma, beta, rm, rv, **opts, backend=backend)
    refs = R.batch_norm(f64(x), f64(gamma), f64(beta), rm64, rv64, **opts)
    for name, o, r in zip(("y", "mean", "invstd"), outs, refs):
        check(name, o, r, dtype, m)
    if p["running"] and p["training"]:      # updated in place, in the caller's arrays
        check("running_mean", rm, rm64, dtype, m)
        check("running_var", rv, rv64, dtype, m)
    # the backward gets the reference's statistics, so it is tested independently of the forward
    mean, invstd = refs[1].astype(dtype), refs[2].astype(dtype)
    grads = fastnn.batch_norm_backward(dy, x, gamma, mean, invstd, training=p["training"], backend=backend)
    rgrads = R.batch_norm_backward(f64(dy), f64(x), f64(gamma), f64(mean), f64(invstd), p["training"])
    for name, g, r in zip(("dx", "dgamma", "dbeta"), grads, rgrads):
        check(name, g, r, dtype, m)
    assert_unchanged(before, a, skip=("running_mean", "running_var") if p["training"] else ())


# ------------------------------------------------------------------------------------------------------- LSTM

CACHE_FIELDS = ("x", "h", "c", "w_ih", "w_hh", "gates", "hs", "cs")


def check_cache(cache, ref, backend, dtype, k):
    assert isinstance(cache, R.LSTMCache), f"cache must be fastnn.reference.LSTMCache, got {type(cache).__name__}"
    assert cache.backend == backend and cache.gate_order == ref.gate_order
    for name in CACHE_FIELDS:
        check(f"cache.{name}", getattr(cache, name), getattr(ref, name), dtype, k, on_host=False)


@dtypes
@pytest.mark.parametrize("backend,case", params("lstm_cell"))
def test_lstm_cell(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    k = p["d"] + p["h"] + p["n"]            # gates sum D+H terms, weight gradients N
    fwd = [a[n] for n in ("x", "h", "c", "w_ih", "w_hh", "bias")]
    h1, c1, cache = fastnn.lstm_cell(*fwd, gate_order=p["gate_order"], backend=backend)
    rh1, rc1, rcache = R.lstm_cell(*map(f64, fwd), gate_order=p["gate_order"])
    check("h_next", h1, rh1, dtype, k)
    check("c_next", c1, rc1, dtype, k)
    check_cache(cache, rcache, backend, dtype, k)
    grads = fastnn.lstm_cell_backward(a["dh_next"], a["dc_next"], cache)
    rgrads = R.lstm_cell_backward(f64(a["dh_next"]), f64(a["dc_next"]), rcache)
    for name, g, r in zip(("dx", "dh", "dc", "dw_ih", "dw_hh", "dbias"), grads, rgrads):
        check(name, g, r, dtype, k)     # dh, dc and dbias come back even when h, c or bias were None
    assert len(grads) == 6
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("lstm"))
def test_lstm(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    k = p["t"] * (p["d"] + p["h"] + p["n"])     # as for the cell, compounded over T steps
    fwd = [a[n] for n in ("xs", "h0", "c0", "w_ih", "w_hh", "bias")]
    outs = fastnn.lstm(*fwd, gate_order=p["gate_order"], backend=backend)
    refs = R.lstm(*map(f64, fwd), gate_order=p["gate_order"])
    for name, o, r in zip(("hs", "h_n", "c_n"), outs[:3], refs[:3]):
        check(name, o, r, dtype, k)
    check_cache(outs[3], refs[3], backend, dtype, k)
    grads = fastnn.lstm_backward(a["dhs"], a["dh_n"], a["dc_n"], outs[3])
    rgrads = R.lstm_backward(f64(a["dhs"]), f64(a["dh_n"]), f64(a["dc_n"]), refs[3])
    assert len(grads) == 6
    for name, g, r in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "dbias"), grads, rgrads):
        check(name, g, r, dtype, k)
    assert_unchanged(before, a)


# -------------------------------------------------------------------------------------------- non-contiguous

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs(backend):
    """Strided views give the same results as contiguous copies (the public API copies them once)."""
    rng = np.random.default_rng(1)
    big = rng.integers(-4, 5, (2, 4, 7, 12)).astype(np.float32)
    x = big[:, 1:3, :, ::2]                               # (2, 2, 7, 6), strided in C and W
    w = rng.integers(-4, 5, (2, 3, 3, 3)).astype(np.float32).transpose(1, 0, 2, 3)   # (3, 2, 3, 3) view
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    xc, wc = np.ascontiguousarray(x), np.ascontiguousarray(w)
    np.testing.assert_array_equal(fastnn.conv2d(x, w, None, 1, 1, backend=backend), R.conv2d(xc, wc, None, 1, 1))
    np.testing.assert_array_equal(fastnn.max_pool2d(x, 2, backend=backend)[1], R.max_pool2d(xc, 2)[1])
    xs = rng.standard_normal((4, 3, 5)).transpose(1, 0, 2)           # (3, 4, 5) view, float64
    wi, wh = rng.standard_normal((5, 8)), rng.standard_normal((8, 2)).T   # w_hh (2, 8) is a view
    np.testing.assert_allclose(fastnn.lstm(xs, None, None, wi, wh, None, backend=backend)[0],
                               R.lstm(np.ascontiguousarray(xs), None, None, wi, np.ascontiguousarray(wh), None)[0],
                               rtol=1e-12, atol=1e-12)
