"""The cuda backend's GEMM, im2col/col2im and conv2d kernels, each variant against fastnn.reference (float64).

Without a GPU this runs in Numba's simulator (one Python thread per GPU thread), so shapes are tiny: a few hundred
outputs, one or a few blocks. Integer-valued inputs make float64 results exact; float32 cases use
|out - ref| <= atol + rtol*|ref| with rtol = 4*sqrt(L)*eps32 (L = length of the sum) and atol = rtol*max|ref|.
The awkward shapes: 1x1 kernel, stride > kernel, padding, dilation 2, groups 2, non-square, batch 1, one
channel, and sizes that are not multiples of the 64-wide tiles or of the 8-deep slabs (partial tiles on
every edge); dweight's split-K with splits that start mid-image.
"""
import importlib
import os

if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

numba_cuda = pytest.importorskip("numba.cuda")
from numba import cuda  # noqa: E402

from fastnn import reference as R  # noqa: E402

gemm = importlib.import_module("fastnn.cuda.gemm")
conv = importlib.import_module("fastnn.cuda.conv2d")      # the modules, not the functions fastnn.cuda exports
i2c = importlib.import_module("fastnn.cuda.im2col")
fl = importlib.import_module("fastnn.cuda._launch")

EPS = {np.float64: 2.0**-53, np.float32: 2.0**-24}


def ints(rng, shape, dtype):
    return rng.integers(-3, 4, shape).astype(dtype)


def check(out, ref, L, dtype):
    out = out.copy_to_host() if hasattr(out, "copy_to_host") else np.asarray(out)
    assert out.shape == ref.shape and out.dtype == np.dtype(dtype)
    rtol = 4 * np.sqrt(max(L, 1)) * EPS[dtype]
    atol = rtol * max(np.abs(ref).max(), 1.0)
    bad = ~(np.abs(out.astype(np.float64) - ref) <= atol + rtol * np.abs(ref))   # NaN counts as bad
    assert not bad.any(), f"{bad.sum()} of {bad.size} wrong, max err {np.nanmax(np.abs(out - ref))}"


# ----------------------------------------------------------------------------------------------- GEMM
LAYOUTS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("variant,ta,tb", [(v, ta, tb) for v in ("tiled", "64x64") for ta, tb in LAYOUTS]
                         + [("64x128", False, False), ("128x128", False, True)])
def test_matmul(variant, ta, tb):
    rng = np.random.default_rng(1)
    M, N, K = 5, 70, 11                     # N > 64: two column tiles; K not a multiple of 8
    a = ints(rng, (K, M) if ta else (M, K), np.float64)
    b = ints(rng, (N, K) if tb else (K, N), np.float64)
    c0 = ints(rng, (M, N), np.float64)
    ref = (a.T if ta else a) @ (b.T if tb else b) + 2 * c0
    out = cuda.to_device(c0)
    gemm.matmul(cuda.to_device(a), cuda.to_device(b), out, ta, tb, beta=2.0, variant=variant)
    check(out, ref, K, np.float64)


def test_matmul_float32_beta0_ignores_nan_out():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 9)).astype(np.float32), rng.standard_normal((9, 7)).astype(np.float32)
    out = cuda.to_device(np.full((6, 7), np.nan, np.float32))
    gemm.matmul(cuda.to_device(a), cuda.to_device(b), out)
    check(out, a.astype(np.float64) @ b, 9, np.float32)


@pytest.mark.parametrize("ta,tb", [(False, False), (False, True)])
def test_split_k(ta, tb):
    """launch_split_k: the reduction cut into slices written side by side (their sum is the product)."""
    rng = np.random.default_rng(11)
    M, N, K, S = 3, 70, 32, 4
    a = ints(rng, (K, M) if ta else (M, K), np.float64)
    b = ints(rng, (N, K) if tb else (K, N), np.float64)
    part = cuda.to_device(np.full(S * M * N, np.nan))
    gemm.launch_split_k(cuda.to_device(a), cuda.to_device(b), part, M, N, K, S, ta, tb)
    parts = part.copy_to_host().reshape(S, M, N)
    A, B = (a.T if ta else a), (b.T if tb else b)
    for z in range(S):
        check(parts[z], A[:, z * 8:(z + 1) * 8] @ B[z * 8:(z + 1) * 8], 8, np.float64)


# ------------------------------------------------------------------------------------ im2col / col2im
IM2COL = [  # x shape, kernel, stride, padding, dilation
    ((2, 3, 5, 4), (3, 2), (1, 2), (1, 0), 1),
    ((1, 1, 6, 7), 3, 2, 1, 2),
    ((1, 2, 7, 7), 2, 3, 0, 1),
]


@pytest.mark.parametrize("shape,k,s,p,d", IM2COL)
def test_im2col_col2im(shape, k, s, p, d):
    rng = np.random.default_rng(3)
    x = ints(rng, shape, np.float64)
    ref = R.im2col(x, k, s, p, d)
    check(i2c.im2col(x, k, s, p, d), ref, 1, np.float64)
    col = ints(rng, ref.shape, np.float64)
    check(i2c.col2im(col, shape, k, s, p, d), R.col2im(col, shape, k, s, p, d), 9, np.float64)


# ------------------------------------------------------------------------------------------------ conv2d
CONV = {  # N, C, H, W, K, (KH, KW), stride, padding, dilation, groups, bias
    "1x1":               (1, 3, 4, 5, 4, (1, 1), 1, 0, 1, 1, True),
    "stride>kernel":     (1, 2, 7, 7, 3, (2, 2), 3, 0, 1, 1, True),
    "pad,dil2,nonsq":    (1, 2, 6, 7, 3, (3, 2), (1, 2), (2, 1), 2, 1, False),
    "groups2":           (2, 4, 5, 5, 6, (3, 3), 1, 1, 1, 2, True),
    "one-channel,b1":    (1, 1, 5, 5, 1, (3, 3), 1, 0, 1, 1, True),
    "crs>slabs":         (1, 5, 4, 4, 3, (3, 3), 1, 1, 1, 1, True),
    "two-tiles-each":    (1, 2, 9, 9, 70, (3, 3), 1, 0, 1, 1, True),
}
BACKWARD = ["1x1", "stride>kernel", "pad,dil2,nonsq", "groups2", "one-channel,b1", "crs>slabs"]


def make(name, dtype, seed=4):
    N, C, H, W, K, ks, s, p, d, g, has_bias = CONV[name]
    rng = np.random.default_rng(seed)
    x = ints(rng, (N, C, H, W), dtype)
    w = ints(rng, (K, C // g) + ks, dtype)
    b = ints(rng, (K,), dtype) if has_bias else None
    return x, w, b, (s, p, d, g)


@pytest.mark.parametrize("variant,tile", [("naive", None), ("igemm", "64x64"), ("igemm1", "64x64")])
@pytest.mark.parametrize("name", [n for n in CONV if n != "two-tiles-each"])
def test_conv2d_forward(name, variant, tile):
    x, w, b, (s, p, d, g) = make(name, np.float64)
    ref = R.conv2d(x, w, b, s, p, d, g)
    tdev = lambda a: None if a is None else cuda.to_device(a)  # noqa: E731
    y = conv.conv2d_forward_device(tdev(x), tdev(w), tdev(b), s, p, d, g, variant=variant, tile=tile or "64x64")
    check(y, ref, w[0].size, np.float64)


@pytest.mark.parametrize("name,tile", [("two-tiles-each", "64x64"), ("groups2", "64x128"), ("groups2", "128x64"),
                                       ("crs>slabs", "64x64:s2"), ("groups2", "64x64:s3")])   # :sN split-K
def test_conv2d_forward_tiles(name, tile):
    x, w, b, (s, p, d, g) = make(name, np.float64)
    y = conv.conv2d_forward_device(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b), s, p, d, g, tile=tile)
    check(y, R.conv2d(x, w, b, s, p, d, g), w[0].size, np.float64)


@pytest.mark.parametrize("name", BACKWARD)
def test_conv2d_backward(name):
    x, w, _, (s, p, d, g) = make(name, np.float64)
    y = R.conv2d(x, w, None, s, p, d, g)
    dy = ints(np.random.default_rng(5), y.shape, np.float64)
    rdx, rdw, rdb = R.conv2d_backward(dy, x, w, s, p, d, g)
    dx, dw, db = conv.conv2d_backward(dy, x, w, s, p, d, g)          # the public function: NumPy in, out
    check(dx, rdx, w.shape[0] * w[0, 0].size, np.float64)
    check(dw, rdw, dy[:, 0].size, np.float64)
    check(db, rdb, dy[:, 0].size, np.float64)


@pytest.mark.parametrize("name", ["1x1", "groups2"])
def test_conv2d_backward_dx_col2im(name):
    """The gemm + col2im dx (the default only for stride > 1) on stride-1 cases too."""
    x, w, _, (s, p, d, g) = make(name, np.float64)
    dy = ints(np.random.default_rng(5), R.conv2d(x, w, None, s, p, d, g).shape, np.float64)
    rdx, _, _ = R.conv2d_backward(dy, x, w, s, p, d, g)
    dx, _, _ = conv.conv2d_backward(dy, x, w, s, p, d, g, dx_variant="gemm_col2im")
    check(dx, rdx, w.shape[0] * w[0, 0].size, np.float64)


def test_conv2d_backward_dx_negative_padding():
    """dx as a forward convolution with padding dh*(KH-1)-ph < 0 (1x1 kernel, padding 1)."""
    rng = np.random.default_rng(12)
    x, w = ints(rng, (1, 2, 3, 4), np.float64), ints(rng, (3, 2, 1, 1), np.float64)
    dy = ints(rng, R.conv2d(x, w, None, 1, 1, 1, 1).shape, np.float64)
    rdx, rdw, rdb = R.conv2d_backward(dy, x, w, 1, 1, 1, 1)
    dx, dw, db = conv.conv2d_backward(dy, x, w, 1, 1, 1, 1)
    check(dx, rdx, 3, np.float64)
    check(dw, rdw, dy[:, 0].size, np.float64)


def test_conv2d_backward_dx_beyond_grid_limits(monkeypatch):
    """The col2im dx's GEMM runs one z slice per (image, group): a depthwise stride-2 backward at N*G > 65535
    (MobileNet at batch 128) would exceed gridDim.z. With the limits lowered to y <= 1, z <= 4, N*G = 6 slices
    and 2 row tiles of W^T (CRS = 72 > 64) must run as 2 x 2 launches and still give the reference."""
    monkeypatch.setattr(fl, "GRID_MAX", (2**31 - 1, 1, 4))
    grids = []
    launch = fl.launch
    monkeypatch.setattr(fl, "launch", lambda k, key, grid, *a: grids.append((k, grid)) or launch(k, key, grid, *a))
    rng = np.random.default_rng(13)
    x, w = ints(rng, (3, 16, 5, 5), np.float64), ints(rng, (4, 8, 3, 3), np.float64)   # groups 2: Cg = 8
    dy = ints(rng, R.conv2d(x, w, None, 2, 1, 1, 2).shape, np.float64)
    rdx, rdw, _ = R.conv2d_backward(dy, x, w, 2, 1, 1, 2)
    dx, dw, _ = conv.conv2d_backward(dy, x, w, 2, 1, 1, 2)
    check(dx, rdx, 2 * 9, np.float64)
    check(dw, rdw, dy[:, 0].size, np.float64)
    python = lambda k: getattr(k, "py_func", None) or k.fn            # noqa: E731  (GPU / simulator kernel)
    tiled = [g for k, g in grids if python(k).__qualname__.startswith("gemm__tiled")]
    assert sorted(tiled) == [(1, 1, 2), (1, 1, 2), (1, 1, 4), (1, 1, 4)]


def test_grid_beyond_limits_is_refused(monkeypatch):
    out = cuda.to_device(np.zeros(1))
    with pytest.raises(ValueError, match="grid.y = 65536"):      # before Numba or the driver see it
        fl.launch(conv.sum_splits, "d", (1, 65536), 32, out, out, 1, 1)
    monkeypatch.setattr(fl, "GRID_MAX", (2**31 - 1, 65535, 2))
    with pytest.raises(ValueError, match="groups=3"):             # one group per blockIdx.z
        conv.conv2d(np.zeros((1, 3, 3, 3)), np.zeros((3, 1, 1, 1)), groups=3)


@pytest.mark.parametrize("name", ["groups2", "pad,dil2,nonsq"])
def test_conv2d_backward_naive(name):
    x, w, _, (s, p, d, g) = make(name, np.float64)
    dy = ints(np.random.default_rng(6), R.conv2d(x, w, None, s, p, d, g).shape, np.float64)
    ref = R.conv2d_backward(dy, x, w, s, p, d, g)
    outs = conv.conv2d_backward_device(*(cuda.to_device(a) for a in (dy, x, w)), s, p, d, g, variant="naive")
    for o, r in zip(outs, ref):
        check(o, r, 50, np.float64)


@pytest.mark.parametrize("nsplit", [3, 7])
def test_conv2d_dweight_split_k(nsplit):
    """Splits of the N*OH*OW reduction that start mid-image (OH*OW = 4 < the slab depth 8)."""
    x, w, _, (s, p, d, g) = make("stride>kernel", np.float64)
    x = np.concatenate([x, x[:, ::-1], -x])                          # N = 3: Q = 3*2*2 = 12 positions
    dy = ints(np.random.default_rng(7), R.conv2d(x, w, None, s, p, d, g).shape, np.float64)
    _, rdw, _ = R.conv2d_backward(dy, x, w, s, p, d, g)
    _, dw, _ = conv.conv2d_backward_device(*(cuda.to_device(a) for a in (dy, x, w)), s, p, d, g, nsplit=nsplit)
    check(dw, rdw, 12, np.float64)


def test_conv2d_float32():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = conv.conv2d(x, w, b, 1, 1, 1, 2)
    check(y, R.conv2d(*(a.astype(np.float64) for a in (x, w, b)), 1, 1, 1, 2), 18, np.float32)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref = R.conv2d_backward(*(a.astype(np.float64) for a in (dy, x, w)), 1, 1, 1, 2)
    for o, r, L in zip(conv.conv2d_backward(dy, x, w, 1, 1, 1, 2), ref, (27, 50, 50)):
        check(o, r, L, np.float32)
