"""Property-based tests: random shapes and parameters; every backend equals the float64 reference."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import reference as ref

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
# The CUDA simulator runs Python per GPU thread: few, tiny examples there.
BACKENDS = [("cpu", 40, 12), ("cuda", 6, 5), ("numpy", 5, 6)]


def close(got, want, dtype):
    got = np.asarray(got.copy_to_host() if hasattr(got, "copy_to_host") else got, np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max(initial=0))))


@st.composite
def conv_case(draw, limit):
    groups = draw(st.sampled_from([1, 1, 2]))
    C = groups * draw(st.integers(1, 3))
    K = groups * draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H = draw(st.integers(max(1, dh * (KH - 1) + 1 - 2 * ph), limit))
    W = draw(st.integers(max(1, dw * (KW - 1) + 1 - 2 * pw), limit))
    N = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31))
    return dict(N=N, C=C, H=H, W=W, K=K, KH=KH, KW=KW, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                groups=groups, dtype=dtype, seed=seed)


def _inputs(c):
    rng = np.random.default_rng(c["seed"])
    x = rng.integers(-3, 4, (c["N"], c["C"], c["H"], c["W"])).astype(c["dtype"])
    w = rng.integers(-3, 4, (c["K"], c["C"] // c["groups"], c["KH"], c["KW"])).astype(c["dtype"])
    return x, w, rng.integers(-3, 4, c["K"]).astype(c["dtype"])


@pytest.mark.parametrize("backend,examples,limit", BACKENDS)
def test_conv2d_forward_backward(backend, examples, limit):
    @settings(max_examples=examples, **SETTINGS)
    @given(conv_case(limit))
    def check(c):
        x, w, b = _inputs(c)
        p = (c["stride"], c["padding"], c["dilation"], c["groups"])
        y = fastnn.conv2d(x, w, b, *p, backend=backend)
        want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), *p)
        close(y, want, c["dtype"])
        dy = np.random.default_rng(1).integers(-3, 4, want.shape).astype(c["dtype"])
        got = fastnn.conv2d_backward(dy, x, w, *p, backend=backend)
        wants = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), *p)
        for g, wnt in zip(got, wants):
            close(g, wnt, c["dtype"])
        col = fastnn.im2col(x, (c["KH"], c["KW"]), *p[:3], backend=backend)
        close(col, ref.im2col(x.astype(np.float64), (c["KH"], c["KW"]), *p[:3]), c["dtype"])
    check()


@st.composite
def pool_case(draw, limit):
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2)))
    H = draw(st.integers(max(1, KH - 2 * padding[0]), limit))
    W = draw(st.integers(max(1, KW - 2 * padding[1]), limit))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    return dict(shape=shape, kernel_size=(KH, KW), stride=stride, padding=padding,
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**31)),
                count_include_pad=draw(st.booleans()))


@pytest.mark.parametrize("backend,examples,limit", BACKENDS)
def test_pooling_forward_backward(backend, examples, limit):
    @settings(max_examples=examples, **SETTINGS)
    @given(pool_case(limit))
    def check(c):
        rng = np.random.default_rng(c["seed"])
        x = rng.integers(-5, 6, c["shape"]).astype(c["dtype"])  # small integers: ties happen, first max wins
        k, s, p = c["kernel_size"], c["stride"], c["padding"]
        y, idx = fastnn.max_pool2d(x, k, s, p, backend=backend)
        wy, widx = ref.max_pool2d(x.astype(np.float64), k, s, p)
        close(y, wy, c["dtype"])
        np.testing.assert_array_equal(np.asarray(idx.copy_to_host() if hasattr(idx, "copy_to_host") else idx), widx)
        dy = rng.integers(-3, 4, wy.shape).astype(c["dtype"])
        close(fastnn.max_pool2d_backward(dy, widx, x.shape, backend=backend),
              ref.max_pool2d_backward(dy.astype(np.float64), widx, x.shape), c["dtype"])
        cip = c["count_include_pad"]
        close(fastnn.avg_pool2d(x, k, s, p, cip, backend=backend), ref.avg_pool2d(x.astype(np.float64), k, s, p, cip),
              c["dtype"])
        close(fastnn.avg_pool2d_backward(dy, x.shape, k, s, p, cip, backend=backend),
              ref.avg_pool2d_backward(dy.astype(np.float64), x.shape, k, s, p, cip), c["dtype"])
    check()


@pytest.mark.parametrize("backend,examples,limit", BACKENDS)
def test_batch_norm_and_lstm(backend, examples, limit):
    @settings(max_examples=examples, **SETTINGS)
    @given(st.integers(2, 4), st.integers(1, 3), st.sampled_from([(), (1, 1), (2, 3)]), st.integers(1, 3),
           st.integers(1, 3), st.sampled_from(["ifgo", "fgio", "oigf"]), st.sampled_from([np.float32, np.float64]),
           st.integers(0, 2**31))
    def check(N, C, hw, T, H, order, dtype, seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((N, C) + hw).astype(dtype)
        g, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
        y, mean, invstd = fastnn.batch_norm(x, g, b, backend=backend)
        f64 = [a.astype(np.float64) for a in (x, g, b)]
        wy, wm, wi = ref.batch_norm(*f64, None, None, True, 0.1, 1e-5)
        for got, want in ((y, wy), (mean, wm), (invstd, wi)):
            close(got, want, dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        for got, want in zip(fastnn.batch_norm_backward(dy, x, g, wm.astype(dtype), wi.astype(dtype), backend=backend),
                             ref.batch_norm_backward(dy.astype(np.float64), f64[0], f64[1], wm, wi, True)):
            close(got, want, dtype)
        D = C
        xs = rng.standard_normal((N, T, D)).astype(dtype)
        w_ih, w_hh = rng.standard_normal((D, 4 * H)).astype(dtype), rng.standard_normal((H, 4 * H)).astype(dtype)
        bias = rng.standard_normal(4 * H).astype(dtype)
        hs, h_n, c_n, cache = fastnn.lstm(xs, None, None, w_ih, w_hh, bias, order, backend=backend)
        whs, wh, wc, wcache = ref.lstm(*(a.astype(np.float64) for a in (xs,)), None, None, w_ih.astype(np.float64),
                                       w_hh.astype(np.float64), bias.astype(np.float64), order)
        close(hs, whs, dtype)
        close(c_n, wc, dtype)
        dhs = rng.standard_normal(whs.shape).astype(dtype)
        for got, want in zip(fastnn.lstm_backward(dhs, None, None, cache),
                             ref.lstm_backward(dhs.astype(np.float64), None, None, wcache)):
            close(got, want, dtype)
    check()
