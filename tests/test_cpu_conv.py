"""The C++ gemm, im2col/col2im and conv2d kernels (fastnn._C) against float64 NumPy checks written here.

Tolerance is |out - ref| <= atol + rtol*|ref|. The in-process tests run the widest microkernel the CPU has
(AVX-512F or AVX2/FMA); the scalar and AVX2 ones are checked in subprocesses with FASTNN_SIMD=scalar / avx2
(csrc/cpu_features.cpp reads it once, at load time)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn._shapes import out_size
from fastnn.optable import KERNEL_CASES

_C = pytest.importorskip("fastnn._C")
from fastnn import _cpu  # noqa: E402  (after the skip: _cpu needs _C)

TOL = {np.float32: (1e-4, 1e-4), np.float64: (1e-11, 1e-11)}
DTYPES = [np.float32, np.float64]


def assert_close(out, ref, dtype, scale=1.0):
    atol, rtol = TOL[dtype]
    err = np.abs(out.astype(np.float64) - ref)
    bad = err > atol * scale + rtol * np.abs(ref)
    assert not bad.any(), f"max err {err.max():.3g} at {np.argwhere(bad)[0]} (of {bad.sum()} bad)"


# ---- float64 NumPy checks (obvious, not fast) ----
def ref_im2col(x, k, s, p, d):
    N, C, H, W = x.shape
    OH, OW = (out_size(H, k[0], s[0], p[0], d[0]), out_size(W, k[1], s[1], p[1], d[1]))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    col = np.empty((N, OH, OW, C, k[0], k[1]))
    for kh in range(k[0]):
        for kw in range(k[1]):
            h0, w0 = kh * d[0], kw * d[1]
            col[:, :, :, :, kh, kw] = xp[:, :, h0:h0 + s[0] * (OH - 1) + 1:s[0],
                                         w0:w0 + s[1] * (OW - 1) + 1:s[1]].transpose(0, 2, 3, 1)
    return col.reshape(N * OH * OW, -1)


def ref_col2im(col, shape, k, s, p, d):
    N, C, H, W = shape
    OH, OW = (out_size(H, k[0], s[0], p[0], d[0]), out_size(W, k[1], s[1], p[1], d[1]))
    col = col.astype(np.float64).reshape(N, OH, OW, C, k[0], k[1])
    xp = np.zeros((N, C, H + 2 * p[0], W + 2 * p[1]))
    for kh in range(k[0]):
        for kw in range(k[1]):
            h0, w0 = kh * d[0], kw * d[1]
            xp[:, :, h0:h0 + s[0] * (OH - 1) + 1:s[0], w0:w0 + s[1] * (OW - 1) + 1:s[1]] += \
                col[:, :, :, :, kh, kw].transpose(0, 3, 1, 2)
    return xp[:, :, p[0]:p[0] + H, p[1]:p[1] + W]


def ref_conv(x, w, b, s, p, d, g):
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    OH, OW = out_size(H, KH, s[0], p[0], d[0]), out_size(W, KW, s[1], p[1], d[1])
    y = np.zeros((N, K, OH, OW))
    Kg = K // g
    for gi in range(g):
        col = ref_im2col(x[:, gi * Cg:(gi + 1) * Cg], (KH, KW), s, p, d)  # (N*P, Cg*KH*KW)
        wg = w[gi * Kg:(gi + 1) * Kg].reshape(Kg, -1).astype(np.float64)
        y[:, gi * Kg:(gi + 1) * Kg] = (col @ wg.T).reshape(N, OH, OW, Kg).transpose(0, 3, 1, 2)
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def ref_conv_bwd(dy, x, w, s, p, d, g):
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    Kg = K // g
    dx, dw = np.zeros(x.shape), np.zeros(w.shape)
    for gi in range(g):
        xs = x[:, gi * Cg:(gi + 1) * Cg]
        col = ref_im2col(xs, (KH, KW), s, p, d)
        dyg = dy[:, gi * Kg:(gi + 1) * Kg].astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, Kg)
        wg = w[gi * Kg:(gi + 1) * Kg].reshape(Kg, -1).astype(np.float64)
        dw[gi * Kg:(gi + 1) * Kg] = (dyg.T @ col).reshape(Kg, Cg, KH, KW)
        dx[:, gi * Cg:(gi + 1) * Cg] = ref_col2im(dyg @ wg, xs.shape, (KH, KW), s, p, d)
    return dx, dw, dy.astype(np.float64).sum(axis=(0, 2, 3))


# ---- gemm ----
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 5, 3), (37, 53, 301), (130, 17, 513), (6, 16, 256), (200, 300, 70),
                                   (2, 301, 70), (4, 19, 1), (3, 4099, 600)])      # M <= 4: gemm__rows (threaded)
def test_gemm(dtype, ta, tb, M, N, K):
    rng = np.random.default_rng(M * 1000 + N + K)
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    opA, opB = (A.T if ta else A).astype(np.float64), (B.T if tb else B).astype(np.float64)
    for alpha, beta in [(1.0, 0.0), (0.5, -1.5)]:
        out = C.copy()
        _C.gemm(ta, tb, A, B, out, alpha, beta)
        assert_close(out, alpha * opA @ opB + beta * C.astype(np.float64), dtype, scale=np.sqrt(K))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,tb", [(9, False), (2, False), (2, True)])
def test_gemm_beta0_ignores_nan(dtype, M, tb):
    A, B = np.ones((M, 4), dtype), np.ones((20, 4) if tb else (4, 20), dtype)
    C = np.full((M, 20), np.nan, dtype)
    _C.gemm(False, tb, A, B, C, 1.0, 0.0)
    assert (C == 4).all()


@pytest.mark.parametrize("M", [4, 5])                 # gemm__rows and the packed path alike
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("alpha,K", [(0.0, 3), (np.inf, 0)])
def test_gemm_reads_no_operand_when_alpha_is_0_or_k_is_0(M, tb, alpha, K):
    """C = beta*C: NaN/Inf in A and B do not reach C (BLAS semantics)."""
    A = np.full((M, K), np.nan, np.float32)
    B = np.full((7, K) if tb else (K, 7), np.inf, np.float32)
    C = np.ones((M, 7), np.float32)
    _C.gemm(False, tb, A, B, C, alpha, 2.0)
    assert (C == 2).all()


@pytest.mark.parametrize("tb", [False, True])
def test_gemm_few_rows_propagate_nan(tb):
    """gemm__rows adds every product (no skipped zeros): a NaN in B reaches C even where A is 0."""
    A = np.zeros((2, 5), np.float32)
    B = np.ones((7, 5) if tb else (5, 7), np.float32)
    B[(3, 2) if tb else (2, 3)] = np.nan
    C = np.zeros((2, 7), np.float32)
    _C.gemm(False, tb, A, B, C, 1.0, 0.0)
    assert np.isnan(C[:, 3]).all() and (C[:, [0, 1, 2, 4, 5, 6]] == 0).all()


def test_gemm_strided_ld():
    """Leading dimensions larger than the block width. The gemm binding takes C-contiguous arrays (ld = row
    length), so this goes through the 1x1 conv, whose GEMMs read x planes (ldb = H*W) and write y (ldc = H*W) in
    column blocks at offsets: one image, P = 1600 > 1024 gives two column blocks, and a 1-thread run gives one."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 40, 40)).astype(np.float32)
    w = rng.standard_normal((11, 5, 1, 1)).astype(np.float32)
    y = np.empty((1, 11, 40, 40), np.float32)
    _C.conv2d_fwd(x, w, None, y, (1, 1), (0, 0), (1, 1), 1)
    assert_close(y, ref_conv(x, w, None, (1, 1), (0, 0), (1, 1), 1), np.float32)


CASES = KERNEL_CASES["conv2d"]     # (N, C, H, W, K, KH, KW, stride, pad, dilation, groups)
IDS = [f"N{c[0]}C{c[1]}H{c[2]}W{c[3]}K{c[4]}k{c[5]}x{c[6]}s{c[7][0]}{c[7][1]}p{c[8][0]}{c[8][1]}d{c[9][0]}g{c[10]}"
       for c in CASES]


def make(case, dtype, seed=0, integer=False):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    rng = np.random.default_rng(seed)
    gen = (lambda *sh: rng.integers(-3, 4, sh)) if integer else (lambda *sh: rng.standard_normal(sh))
    x = gen(N, C, H, W).astype(dtype)
    w = gen(K, C // g, KH, KW).astype(dtype)
    b = gen(K).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_col2im(case, dtype):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x, _, _ = make(case, dtype, integer=True)  # integer values: im2col/col2im are exact
    ref = ref_im2col(x, (KH, KW), s, p, d)
    col = np.empty(ref.shape, dtype)
    _C.im2col(x, col, (KH, KW), s, p, d)
    np.testing.assert_array_equal(col, ref)
    colr = np.random.default_rng(1).integers(-3, 4, ref.shape).astype(dtype)
    out = np.full(x.shape, np.nan, dtype)  # col2im must overwrite every element
    _C.col2im(colr, out, (KH, KW), s, p, d)
    np.testing.assert_array_equal(out, ref_col2im(colr, x.shape, (KH, KW), s, p, d))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv2d(case, dtype):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x, w, b = make(case, dtype)
    ref = ref_conv(x, w, b, s, p, d, g)
    for bias, r in [(b, ref), (None, ref - b.astype(np.float64)[None, :, None, None])]:
        y = np.full(ref.shape, np.nan, dtype)
        _C.conv2d_fwd(x, w, bias, y, s, p, d, g)
        assert_close(y, r, dtype, scale=np.sqrt(C * KH * KW / g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv2d_backward(case, dtype):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x, w, _ = make(case, dtype)
    OH, OW = out_size(H, KH, s[0], p[0], d[0]), out_size(W, KW, s[1], p[1], d[1])
    dy = np.random.default_rng(2).standard_normal((N, K, OH, OW)).astype(dtype)
    rdx, rdw, rdb = ref_conv_bwd(dy, x, w, s, p, d, g)
    dx, dw, db = (np.full(a.shape, np.nan, dtype) for a in (rdx, rdw, rdb))
    _C.conv2d_bwd(dy, x, w, dx, dw, db, s, p, d, g)
    assert_close(dx, rdx, dtype, scale=np.sqrt(K))
    assert_close(dw, rdw, dtype, scale=np.sqrt(N * OH * OW))
    assert_close(db, rdb, dtype, scale=np.sqrt(N * OH * OW))


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_counts(threads):
    """Results must not depend on the thread split (other than float rounding in the dweight reduction)."""
    case = (5, 4, 10, 10, 7, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    x, w, b = make(case, np.float64)
    old = _C.get_num_threads()
    try:
        _C.set_num_threads(threads)
        y = np.empty((5, 7, 10, 10))
        _C.conv2d_fwd(x, w, b, y, (1, 1), (1, 1), (1, 1), 1)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(7)
        _C.conv2d_bwd(y, x, w, dx, dw, db, (1, 1), (1, 1), (1, 1), 1)
    finally:
        _C.set_num_threads(old)
    assert_close(y, ref_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1), np.float64)
    rdx, rdw, rdb = ref_conv_bwd(y, x, w, (1, 1), (1, 1), (1, 1), 1)
    assert_close(dx, rdx, np.float64, 10)
    assert_close(dw, rdw, np.float64, 30)


@pytest.mark.parametrize("case", [(2, 5, 14, 14, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1),
                                  (1, 35, 13, 28, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1),
                                  (2, 3, 9, 27, 32, 3, 3, (3, 2), (1, 1), (1, 1), 1),
                                  (4, 64, 17, 22, 80, 3, 3, (1, 1), (1, 1), (1, 1), 1)],
                         ids=["N2C5K32", "N1C35K64", "N2C3K32s32", "N4C64K80wino"])
def test_direct_paths_thread_counts(case):
    """The direct AVX-512 paths split work by row blocks (forward) and by images, or by tiles when there are fewer
    images than threads (dweight): every split must give the reference's results."""
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x, w, b = make(case, np.float32)
    OH, OW = out_size(H, KH, s[0], p[0], d[0]), out_size(W, KW, s[1], p[1], d[1])
    dy = np.random.default_rng(3).standard_normal((N, K, OH, OW)).astype(np.float32)
    ref = ref_conv(x, w, b, s, p, d, g)
    rdx, rdw, _ = ref_conv_bwd(dy, x, w, s, p, d, g)
    old = _C.get_num_threads()
    try:
        for threads in (1, 2, 3, 5):
            _C.set_num_threads(threads)
            y = np.full(ref.shape, np.nan, np.float32)
            _C.conv2d_fwd(x, w, b, y, s, p, d, g)
            assert_close(y, ref, np.float32, scale=np.sqrt(C * KH * KW / g))
            dx, dw, db = np.full(x.shape, np.nan, np.float32), np.full(w.shape, np.nan, np.float32), np.empty(K, np.float32)
            _C.conv2d_bwd(dy, x, w, dx, dw, db, s, p, d, g)
            assert_close(dx, rdx, np.float32, scale=np.sqrt(K))
            assert_close(dw, rdw, np.float32, scale=np.sqrt(N * OH * OW))
    finally:
        _C.set_num_threads(old)


def test_polyphase_batch_splits_and_chunks():
    """polyphase_batch (one GEMM over the batch's columns) splits output channels or columns by the thread count, and
    takes the images in chunks whose copies stay within 16 MB (float64 13 x 1024ch 16x16: chunks of 6, 6, 1). Each
    split gives polyphase_gemm's result (float64: rounding apart)."""
    rng = np.random.default_rng(4)
    old = _C.get_num_threads()
    try:
        for (N, C, H, K), threads in [((3, 64, 5, 64), (1, 2, 3, 5)), ((13, 1024, 16, 8), (2,))]:
            x = rng.standard_normal((N, C, H, H))
            w = rng.standard_normal((K, C, 3, 3))
            b = rng.standard_normal(K)
            _C.set_num_threads(2)
            ref = _cpu.conv2d(x, w, b, (1, 1), (1, 1), (1, 1), 1, _algo="polyphase_gemm")
            for t in threads:
                _C.set_num_threads(t)
                got = _cpu.conv2d(x, w, b, (1, 1), (1, 1), (1, 1), 1, _algo="polyphase_batch")
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-10 * np.sqrt(C * 9))
    finally:
        _C.set_num_threads(old)
    # the rule: weights of a MiB or more on small planes
    assert _cpu.conv2d_algo((16, 512, 5, 5), (256, 512, 3, 3), (1, 1), (1, 1), (1, 1), 1, np.float32) == \
        "polyphase_batch"


SCALAR_SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, {tests!r})
import test_cpu_conv as t
from fastnn import _C
assert _C.config()["simd"] == {simd!r}, _C.config()
for dtype in t.DTYPES:
    t.test_gemm(dtype, False, True, 37, 53, 301)
    t.test_gemm(dtype, True, False, 130, 17, 513)
    for case in (t.CASES[3], t.CASES[5], t.CASES[6], t.CASES[11], t.CASES[13], t.CASES[-2]):  # -2: Winograd
        t.test_conv2d(case, dtype)
        t.test_conv2d_backward(case, dtype)
print("fallback ok")
"""


@pytest.mark.parametrize("simd", ["scalar", "avx2"])
def test_fallback_kernels(simd):
    """FASTNN_SIMD=scalar runs the portable microkernels; FASTNN_SIMD=avx2 keeps the AVX2 ones on an AVX-512 CPU."""
    if simd == "avx2" and not _C.config()["avx2_fma"]:
        pytest.skip("no AVX2/FMA on this CPU")
    env = dict(os.environ, FASTNN_SIMD=simd)
    script = SCALAR_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)),
                                  simd="scalar" if simd == "scalar" else "avx2_fma")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "fallback ok" in r.stdout, r.stdout + r.stderr

