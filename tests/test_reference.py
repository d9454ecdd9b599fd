"""The reference (the spec) checked on its own: every backward against central finite differences in float64,
plus hand-checked facts that pin down conventions (layouts, ties, divisors, running statistics)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastnn import reference as R
from fastnn._shapes import out_hw, pair

rng = np.random.default_rng(0)


def numgrad(loss, x, h=1e-6):
    """Central finite differences of the scalar loss() w.r.t. every element of x (mutated and restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = loss()
        x[i] = old - h
        down = loss()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def check_grads(loss, pairs):
    """pairs: [(name, array, analytic gradient)]; central differences have O(h^2) + O(eps/h) ~ 1e-9 error here."""
    for name, x, analytic in pairs:
        np.testing.assert_allclose(analytic, numgrad(loss, x), rtol=1e-6, atol=1e-7, err_msg=name)


def randn(*shape):
    return rng.standard_normal(shape)


# ----------------------------------------------------------------------------------------------------- conv2d

CONV = [  # (N, C, H, W, K, KH, KW, stride, padding, dilation, groups, bias)
    (2, 3, 5, 6, 4, 3, 3, 1, 0, 1, 1, True),
    (1, 2, 7, 6, 3, 3, 2, 2, 1, 1, 1, True),        # stride > 1, padding, non-square kernel
    (2, 2, 7, 7, 2, 3, 3, 1, (1, 2), 2, 1, False),  # dilation 2, no bias
    (2, 4, 5, 5, 6, 2, 3, (1, 2), 1, 1, 2, True),   # groups 2
    (1, 1, 4, 5, 2, 1, 1, 3, 0, 1, 1, True),        # 1x1 kernel, stride > kernel
]


@pytest.mark.parametrize("n,c,h,w,k,kh,kw,stride,padding,dilation,groups,bias", CONV)
def test_conv2d_backward_fd(n, c, h, w, k, kh, kw, stride, padding, dilation, groups, bias):
    x, wt = randn(n, c, h, w), randn(k, c // groups, kh, kw)
    b = randn(k) if bias else None
    args = (stride, padding, dilation, groups)
    y = R.conv2d(x, wt, b, *args)
    dy = randn(*y.shape)
    dx, dw, db = R.conv2d_backward(dy, x, wt, *args)
    assert dx.shape == x.shape and dw.shape == wt.shape and db.shape == (k,)
    loss = lambda: np.sum(R.conv2d(x, wt, b, *args) * dy)  # noqa: E731
    pairs = [("dx", x, dx), ("dweight", wt, dw)] + ([("dbias", b, db)] if bias else [])
    check_grads(loss, pairs)
    if not bias:
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)))


def conv2d_loops(x, wt, b, stride, padding, dilation, groups):
    """Convolution straight from its definition, one output element at a time (independent of im2col)."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, c, h, w = x.shape
    k, cg, kh, kw = wt.shape
    oh, ow = out_hw((h, w), (kh, kw), stride, padding, dilation)
    y = np.zeros((n, k, oh, ow))
    for ni, ki, i, j in np.ndindex(n, k, oh, ow):
        g = ki // (k // groups)
        s = 0.0 if b is None else b[ki]
        for ci, u, v in np.ndindex(cg, kh, kw):
            ih, iw = i * sh - ph + u * dh, j * sw - pw + v * dw
            if 0 <= ih < h and 0 <= iw < w:
                s += x[ni, g * cg + ci, ih, iw] * wt[ki, ci, u, v]
        y[ni, ki, i, j] = s
    return y


@pytest.mark.parametrize("n,c,h,w,k,kh,kw,stride,padding,dilation,groups,bias", CONV)
def test_conv2d_matches_definition(n, c, h, w, k, kh, kw, stride, padding, dilation, groups, bias):
    x, wt = randn(n, c, h, w), randn(k, c // groups, kh, kw)
    b = randn(k) if bias else None
    args = (stride, padding, dilation, groups)
    np.testing.assert_allclose(R.conv2d(x, wt, b, *args), conv2d_loops(x, wt, b, *args), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------- im2col/col2im

def test_im2col_known():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(R.im2col(x, 2), [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]])
    # padding reads 0; stride 2 on a 2x2 input padded by 1 -> four windows, each with one real pixel
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(R.im2col(x, 2, stride=2, padding=1),
                                  [[0, 0, 0, 1], [0, 0, 2, 0], [0, 3, 0, 0], [4, 0, 0, 0]])
    # column order is channel-major: (c*KH + kh)*KW + kw; row order (n*OH + oh)*OW + ow
    x = np.arange(16.0).reshape(2, 2, 2, 2)
    col = R.im2col(x, (1, 2))
    assert col.shape == (2 * 2 * 1, 2 * 1 * 2)
    np.testing.assert_array_equal(col[0], [0, 1, 4, 5])
    np.testing.assert_array_equal(col[3], [10, 11, 14, 15])   # n=1, oh=1
    # dilation 2: a 2x2 kernel reads the corners of a 3x3 patch
    np.testing.assert_array_equal(R.im2col(np.arange(9.0).reshape(1, 1, 3, 3), 2, dilation=2), [[0, 2, 6, 8]])


@pytest.mark.parametrize("shape,k,s,p,d", [((2, 3, 5, 6), 3, 1, 1, 1), ((1, 2, 7, 6), (3, 2), 2, (1, 0), 1),
                                           ((2, 1, 7, 7), 2, (1, 2), 2, 2), ((1, 2, 4, 5), 1, 3, 0, 1)])
def test_col2im_is_adjoint_of_im2col(shape, k, s, p, d):
    x = randn(*shape)
    col = R.im2col(x, k, s, p, d)
    y = randn(*col.shape)
    back = R.col2im(y, shape, k, s, p, d)
    assert back.shape == shape
    assert np.isclose(np.sum(col * y), np.sum(x * back), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2))
def test_col2im_adjoint_any_geometry(n, c, h, w, kh, kw, sh, sw, p, d):
    if h + 2 * p < d * (kh - 1) + 1 or w + 2 * p < d * (kw - 1) + 1:
        return                                    # no output: the public API rejects this geometry
    x = randn(n, c, h, w)
    col = R.im2col(x, (kh, kw), (sh, sw), p, d)
    y = randn(*col.shape)
    assert np.isclose(np.sum(col * y), np.sum(x * R.col2im(y, x.shape, (kh, kw), (sh, sw), p, d)), rtol=1e-12)


def test_col2im_sums_overlaps():
    # every pixel of a 3x3 input is covered by as many 2x2 stride-1 windows as it appears in im2col
    ones = R.col2im(np.ones((4, 4)), (1, 1, 3, 3), 2)
    np.testing.assert_array_equal(ones[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


# ---------------------------------------------------------------------------------------------------- pooling

POOL = [  # (shape, kernel_size, stride, padding)
    ((2, 2, 5, 6), 2, None, 0),
    ((1, 2, 7, 6), 3, 2, 1),              # overlapping windows, padding
    ((2, 1, 6, 7), (3, 2), (1, 2), (1, 1)),
    ((1, 1, 7, 5), 2, 3, 0),              # stride > kernel
]


@pytest.mark.parametrize("shape,k,s,p", POOL)
def test_max_pool2d_backward_fd(shape, k, s, p):
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1   # distinct values: the max is differentiable
    y, idx = R.max_pool2d(x, k, s, p)
    assert idx.dtype == np.int64
    dy = randn(*y.shape)
    dx = R.max_pool2d_backward(dy, idx, shape)
    check_grads(lambda: np.sum(R.max_pool2d(x, k, s, p)[0] * dy), [("dx", x, dx)])
    # indices point at the maxima
    planes = x.reshape(shape[0] * shape[1], -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, idx.reshape(len(planes), -1), 1).reshape(y.shape), y)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,k,s,p", POOL)
def test_avg_pool2d_backward_fd(shape, k, s, p, count_include_pad):
    x = randn(*shape)
    y = R.avg_pool2d(x, k, s, p, count_include_pad)
    dy = randn(*y.shape)
    dx = R.avg_pool2d_backward(dy, shape, k, s, p, count_include_pad)
    check_grads(lambda: np.sum(R.avg_pool2d(x, k, s, p, count_include_pad) * dy), [("dx", x, dx)])


def test_max_pool2d_ties_nan_padding():
    x = np.array([[[[1.0, 1.0, 0.0, 5.0],
                    [1.0, 1.0, 5.0, 0.0],
                    [1.0, np.nan, 2.0, 3.0],
                    [np.nan, 2.0, 3.0, 3.0]]]])
    y, idx = R.max_pool2d(x, 2)
    np.testing.assert_array_equal(idx[0, 0], [[0, 3], [9, 11]])   # ties: first in row-major window order wins
    np.testing.assert_array_equal(y[0, 0], [[1, 5], [np.nan, 3]])   # NaN is the maximum; the first NaN wins
    # padding is -inf: never selected, even when every real value is -inf
    y, idx = R.max_pool2d(np.full((1, 1, 2, 2), -np.inf), 3, 1, 1)
    assert np.all(y == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0], [0, 0]])
    # negative values next to padding: the real value wins over padding
    y, idx = R.max_pool2d(-np.ones((1, 1, 3, 3)), 2, 2, 1)
    assert np.all(y == -1) and idx[0, 0, 1, 1] == 4


def test_max_pool2d_backward_accumulates_overlaps():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0                   # the centre is the max of all four 2x2 windows
    y, idx = R.max_pool2d(x, 2, 1)
    assert np.all(idx == 4)
    dx = R.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert dx[0, 0, 1, 1] == 4 and dx.sum() == 4


def test_avg_pool2d_divisor():
    x = np.ones((1, 1, 2, 2))
    y = R.avg_pool2d(x, 2, 1, 1, count_include_pad=True)      # 3x3 output; windows hold 1, 2 or 4 real ones
    np.testing.assert_array_equal(y[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)
    y = R.avg_pool2d(x, 2, 1, 1, count_include_pad=False)
    np.testing.assert_array_equal(y[0, 0], np.ones((3, 3)))
    dx = R.avg_pool2d_backward(np.ones((1, 1, 3, 3)), x.shape, 2, 1, 1, False)
    np.testing.assert_allclose(dx[0, 0], [[1 + 1 / 2 + 1 / 2 + 1 / 4] * 2] * 2)


# ------------------------------------------------------------------------------------------------- batch norm

@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 4)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_fd(shape, affine, training):
    c = shape[1]
    x = randn(*shape) * 2 + 1
    gamma, beta = (randn(c), randn(c)) if affine else (None, None)
    rm, rv = randn(c), rng.uniform(0.5, 2, c)        # used (and left alone) when not training
    run = lambda: R.batch_norm(x, gamma, beta, None if training else rm, None if training else rv,  # noqa: E731
                               training, 0.1, 1e-5)
    y, mean, invstd = run()
    dy = randn(*shape)
    dx, dgamma, dbeta = R.batch_norm_backward(dy, x, gamma, mean, invstd, training)
    assert dgamma.shape == dbeta.shape == (c,)
    loss = lambda: np.sum(run()[0] * dy)  # noqa: E731
    check_grads(loss, [("dx", x, dx)] + ([("dgamma", gamma, dgamma), ("dbeta", beta, dbeta)] if affine else []))
    if not affine:   # gamma None is ones, beta None is zeros: same gradients as explicit ones/zeros
        ones = np.ones(c)
        y1 = R.batch_norm(x, ones, np.zeros(c), rm.copy(), rv.copy(), training, 0.1, 1e-5)[0]
        np.testing.assert_allclose(y, y1)
        for a, b in zip((dx, dgamma, dbeta), R.batch_norm_backward(dy, x, ones, mean, invstd, training)):
            np.testing.assert_allclose(a, b)


def test_batch_norm_running_stats_unbiased():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1)
    rm, rv = np.zeros(1), np.ones(1)
    y, mean, invstd = R.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
    np.testing.assert_allclose(mean, [2.5])
    np.testing.assert_allclose(invstd, [1 / np.sqrt(1.25 + 1e-5)])          # biased variance normalises
    np.testing.assert_allclose(rm, [0.1 * 2.5])
    np.testing.assert_allclose(rv, [0.9 + 0.1 * 5 / 3])                      # unbiased variance is tracked
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 2.5) / np.sqrt(1.25 + 1e-5))
    # 4-D: statistics per channel over (N, H, W)
    x = randn(3, 2, 4, 5)
    rm, rv = np.zeros(2), np.ones(2)
    _, mean, invstd = R.batch_norm(x, None, None, rm, rv, True, 0.25, 1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5))
    np.testing.assert_allclose(rv, 0.75 + 0.25 * x.var(axis=(0, 2, 3), ddof=1))


def test_batch_norm_inference():
    x, gamma, beta = randn(4, 3, 2, 2), randn(3), randn(3)
    rm, rv = randn(3), rng.uniform(0.5, 2, 3)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = R.batch_norm(x, gamma, beta, rm, rv, False, 0.1, 1e-3)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)                                   # untouched in inference
    assert mean is not rm and np.array_equal(mean, rm)                        # a copy
    np.testing.assert_allclose(invstd, 1 / np.sqrt(rv + 1e-3))
    b = (1, 3, 1, 1)
    np.testing.assert_allclose(y, (x - rm.reshape(b)) / np.sqrt(rv.reshape(b) + 1e-3) * gamma.reshape(b)
                               + beta.reshape(b))


# ------------------------------------------------------------------------------------------------------- LSTM

@pytest.mark.parametrize("gate_order", ["ifgo", "fgio"])
@pytest.mark.parametrize("with_state,with_bias", [(True, True), (False, False)])
def test_lstm_cell_backward_fd(gate_order, with_state, with_bias):
    n, d, hs = 2, 3, 4
    x, w_ih, w_hh = randn(n, d), randn(d, 4 * hs) * 0.5, randn(hs, 4 * hs) * 0.5
    h, c = (randn(n, hs), randn(n, hs)) if with_state else (None, None)
    bias = randn(4 * hs) if with_bias else None
    dh_next, dc_next = randn(n, hs), randn(n, hs)

    def loss():
        h1, c1, _ = R.lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order)
        return np.sum(h1 * dh_next) + np.sum(c1 * dc_next)

    h1, c1, cache = R.lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order)
    assert cache.backend == "numpy" and cache.gate_order == gate_order and cache.gates.shape == (n, 4 * hs)
    dx, dh, dc, dw_ih, dw_hh, dbias = R.lstm_cell_backward(dh_next, dc_next, cache)
    pairs = [("dx", x, dx), ("dw_ih", w_ih, dw_ih), ("dw_hh", w_hh, dw_hh)]
    pairs += [("dh", h, dh), ("dc", c, dc)] if with_state else []
    pairs += [("dbias", bias, dbias)] if with_bias else []
    check_grads(loss, pairs)
    if not with_state:   # h, c None are zeros: gradients w.r.t. them still come back, and the cache holds zeros
        assert not cache.h.any() and not cache.c.any()
        hz = np.zeros((n, hs))
        cache0 = R.lstm_cell(x, hz, hz, w_ih, w_hh, bias, gate_order)[2]
        for a, b in zip((dx, dh, dc, dw_ih, dw_hh, dbias), R.lstm_cell_backward(dh_next, dc_next, cache0)):
            np.testing.assert_array_equal(a, b)
    # None upstream gradients are zeros
    for a, b in zip(R.lstm_cell_backward(None, dc_next, cache), R.lstm_cell_backward(0 * dh_next, dc_next, cache)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gate_order", ["ifgo", "fgio"])
@pytest.mark.parametrize("with_state", [True, False])
def test_lstm_backward_fd(gate_order, with_state):
    n, t, d, hs = 2, 3, 3, 2
    xs, w_ih, w_hh, bias = randn(n, t, d), randn(d, 4 * hs) * 0.5, randn(hs, 4 * hs) * 0.5, randn(4 * hs)
    h0, c0 = (randn(n, hs), randn(n, hs)) if with_state else (None, None)
    dhs, dh_n, dc_n = randn(n, t, hs), randn(n, hs), randn(n, hs)

    def loss():
        out, h_n, c_n, _ = R.lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order)
        return np.sum(out * dhs) + np.sum(h_n * dh_n) + np.sum(c_n * dc_n)

    out, h_n, c_n, cache = R.lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order)
    assert out.shape == (n, t, hs) and cache.gates.shape == (n, t, 4 * hs) and cache.cs.shape == (n, t, hs)
    np.testing.assert_array_equal(h_n, out[:, -1])
    dxs, dh0, dc0, dw_ih, dw_hh, dbias = R.lstm_backward(dhs, dh_n, dc_n, cache)
    pairs = [("dxs", xs, dxs), ("dw_ih", w_ih, dw_ih), ("dw_hh", w_hh, dw_hh), ("dbias", bias, dbias)]
    pairs += [("dh0", h0, dh0), ("dc0", c0, dc0)] if with_state else []
    check_grads(loss, pairs)
    assert dh0.shape == dc0.shape == (n, hs)
    # None upstream gradients are zeros
    for a, b in zip(R.lstm_backward(None, None, dc_n, cache), R.lstm_backward(0 * dhs, 0 * dh_n, dc_n, cache)):
        np.testing.assert_array_equal(a, b)


def test_lstm_is_repeated_cell_and_gate_order_permutes_blocks():
    n, t, d, hs = 2, 3, 3, 4
    xs, w_ih, w_hh, bias = randn(n, t, d), randn(d, 4 * hs), randn(hs, 4 * hs), randn(4 * hs)
    h0, c0 = randn(n, hs), randn(n, hs)
    out, h_n, c_n, _ = R.lstm(xs, h0, c0, w_ih, w_hh, bias, "ifgo")
    h, c = h0, c0
    for s in range(t):
        h, c, _ = R.lstm_cell(xs[:, s], h, c, w_ih, w_hh, bias, "ifgo")
        np.testing.assert_allclose(out[:, s], h, rtol=1e-13)
    np.testing.assert_allclose(c_n, c, rtol=1e-13)
    # "fgio" with the same blocks rearranged into f, g, i, o order computes the same function
    blk = {ch: slice(k * hs, (k + 1) * hs) for k, ch in enumerate("ifgo")}
    perm = lambda a: np.concatenate([a[..., blk[ch]] for ch in "fgio"], axis=-1)  # noqa: E731
    out2, h_n2, c_n2, _ = R.lstm(xs, h0, c0, perm(w_ih), perm(w_hh), perm(bias), "fgio")
    np.testing.assert_allclose(out2, out, rtol=1e-13)
    np.testing.assert_allclose(c_n2, c_n, rtol=1e-13)
    # the classic textbook gates: i = sigmoid, f = sigmoid, g = tanh, o = sigmoid on the first step
    a = xs[:, 0] @ w_ih + h0 @ w_hh + bias
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c1 = sig(a[:, blk["f"]]) * c0 + sig(a[:, blk["i"]]) * np.tanh(a[:, blk["g"]])
    # atol: c1 can cancel to ~1e-6, where the last bit of a differently blocked matmul shows as 1e-12 relative
    np.testing.assert_allclose(out[:, 0], sig(a[:, blk["o"]]) * np.tanh(c1), rtol=1e-13, atol=1e-15)


def test_float32_in_float32_out():
    x = randn(2, 2, 5, 5).astype(np.float32)
    w = randn(3, 2, 3, 3).astype(np.float32)
    outs = [R.im2col(x, 3), R.conv2d(x, w, None, 1, 1), *R.conv2d_backward(R.conv2d(x, w), x, w),
            R.max_pool2d(x, 2)[0], R.avg_pool2d(x, 2), *R.batch_norm(x, None, None, np.zeros(2, np.float32),
                                                                     np.ones(2, np.float32))]
    assert all(o.dtype == np.float32 for o in outs)
    xs = randn(2, 3, 4).astype(np.float32)
    wi, wh = randn(4, 8).astype(np.float32), randn(2, 8).astype(np.float32)
    out, h_n, c_n, cache = R.lstm(xs, None, None, wi, wh, None)
    assert all(o.dtype == np.float32 for o in (out, h_n, c_n, *R.lstm_backward(out, None, None, cache)))
