"""The textbook layers of fastnn.layers (issue #19) against the books' own NumPy code (bench/book_numpy.py).

Every class is run side by side with its book original over several training steps (parameters updated in
place between steps, as the books' optimizers do): forward outputs, losses, dx and every gradient must agree
within ``|a - b| <= atol + rtol*|b|`` (test_layers.assert_close), in float32 and float64 where the book allows it
(``book_numpy.b2x`` is book 2 with its hard-coded float32 Time-layer buffers in the input dtype), at odd sizes and
batch 1. Then small networks of each book, written once against a layer namespace, are trained 3 steps with the
books' classes and with ``fastnn.layers`` (``from fastnn.layers import *`` is the only change) and must give the
same numbers; dropout masks come from ``np.random`` under the same seed in both.
"""
import os
import sys

import numpy as np
import pytest

import fastnn
from fastnn import functions as FF
from fastnn import layers as L
from test_layers import BACKENDS, assert_close, rand

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import book_numpy  # noqa: E402  (bench/ is not a package)

b1, b2, b2x = book_numpy.b1, book_numpy.b2, book_numpy.b2x
DTYPES = [np.float64, np.float32]


def book2_for(dtype):
    """Book 2 as written (float32 Time buffers) for float32 runs, b2x for float64 ones."""
    return b2 if dtype == np.float32 else b2x


def close_all(fast, book, dtype, name):
    assert len(fast) == len(book), name
    for k, (a, b) in enumerate(zip(fast, book)):
        assert_close(a, b, dtype, f"{name}[{k}]")


def sgd(params, grads, lr=0.1):
    for p, g in zip(params, grads):
        p -= lr * g


def copies(arrays):
    return [a.copy() for a in arrays]


# ---------------------------------------------------------------------------------------------- activations

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 7), (5, 13), (3, 2, 5, 5)])
def test_relu_sigmoid_softmax_match_book(backend, dtype, shape):
    rng = np.random.default_rng(10)
    for fast, book in ((L.Relu(backend=backend), b1.Relu()), (L.Sigmoid(backend=backend), b1.Sigmoid()),
                       (L.Sigmoid(backend=backend), b2.Sigmoid())):
        for step in range(2):
            x = rand(rng, shape, dtype, 3.0)
            x.flat[0] = 0.0                                  # the relu boundary: x <= 0 is masked
            x_keep = x.copy()
            y_f, y_b = fast.forward(x), book.forward(x)
            assert y_f.dtype == dtype
            assert_close(y_f, y_b, dtype, f"{type(book).__name__} y")
            dy = rand(rng, shape, dtype)
            dx_f, dx_b = fast.backward(dy.copy()), book.backward(dy.copy())
            assert dx_f.dtype == dtype
            assert_close(dx_f, dx_b, dtype, f"{type(book).__name__} dx")
            np.testing.assert_array_equal(x, x_keep)
            if isinstance(book, b1.Relu):
                np.testing.assert_array_equal(fast.mask, book.mask)
    if len(shape) == 2:   # book 2's Softmax layer (its softmax is 1-D/2-D only)
        fast, book = L.Softmax(backend=backend), b2.Softmax()
        x = rand(rng, shape, dtype, 4.0)
        assert_close(fast.forward(x), book.forward(x), dtype, "softmax y")
        dy = rand(rng, shape, dtype)
        assert_close(fast.backward(dy), book.backward(dy.copy()), dtype, "softmax dx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_functions_match_book(dtype):
    rng = np.random.default_rng(11)
    for shape in [(6,), (4, 9), (2, 3, 5)]:
        x = rand(rng, shape, dtype, 5.0)
        assert_close(FF.sigmoid(x), b1.sigmoid(x), dtype, "sigmoid")
        assert_close(FF.relu(x), b1.relu(x), dtype, "relu")
        assert_close(FF.softmax(x), b1.softmax(x), dtype, "softmax")
        assert FF.softmax(x).dtype == dtype
        if len(shape) <= 2:
            assert_close(FF.softmax(x), b2.softmax(x), dtype, "softmax (book 2)")
    # scalars, lists and integer arrays take the books' expression (same result types)
    assert FF.sigmoid(0.0) == 0.5 and FF.relu(-3) == 0 and isinstance(FF.relu(np.arange(-2, 3)), np.ndarray)
    np.testing.assert_array_equal(FF.relu(np.arange(-2, 3)), b1.relu(np.arange(-2, 3)))
    y = b1.softmax(rand(rng, (5, 7), dtype))
    t = rng.integers(0, 7, 5)
    assert_close(FF.cross_entropy_error(y, t), b1.cross_entropy_error(y, t), dtype, "cee labels")
    assert_close(FF.cross_entropy_error(y, np.eye(7)[t]), b2.cross_entropy_error(y, np.eye(7)[t]), dtype,
                 "cee one-hot")
    assert_close(FF.cross_entropy_error(y[0], t[:1]), b1.cross_entropy_error(y[0], t[:1]), dtype, "cee 1-D")


# ---------------------------------------------------------------------------------------------------- dense

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape", [(1, 5), (7, 5), (3, 1, 5), (4, 2, 3, 3)])
def test_affine_matches_both_books(backend, dtype, xshape):
    rng = np.random.default_rng(12)
    D, M = int(np.prod(xshape[1:])), 3
    W, b = rand(rng, (D, M), dtype), rand(rng, (M,), dtype)
    fast = L.Affine(W.copy(), b.copy(), backend=backend)
    one, two = b1.Affine(W.copy(), b.copy()), b2.Affine(W.copy(), b.copy())
    grads = list(fast.grads)
    for step in range(3):
        x = rand(rng, xshape, dtype)
        y = fast.forward(x)
        assert y.dtype == dtype and y.shape == (xshape[0], M)
        assert_close(y, one.forward(x), dtype, "y")
        assert_close(y, two.forward(x.reshape(xshape[0], -1)), dtype, "y (book 2)")
        dy = rand(rng, y.shape, dtype)
        dx = fast.backward(dy)
        assert dx.shape == xshape
        assert_close(dx, one.backward(dy), dtype, "dx")
        two.backward(dy)
        assert fast.dW is fast.grads[0] and fast.db is fast.grads[1]      # book 1 names alias book 2's lists
        assert all(a is g for a, g in zip(fast.grads, grads))              # written in place
        assert_close(fast.dW, one.dW, dtype, "dW")
        assert_close(fast.db, one.db, dtype, "db")
        close_all(fast.grads, two.grads, dtype, "grads (book 2)")
        for net in (fast, two):
            sgd(net.params, net.grads)
        one.W -= 0.1 * one.dW
        one.b -= 0.1 * one.db
        assert fast.W is fast.params[0]
        assert_close(fast.W, one.W, dtype, "W after step")


@pytest.mark.parametrize("backend", BACKENDS)
def test_affine_mixed_dtypes_and_rebinding(backend):
    """Book 1 feeds float32 images to float64 weights: float64 results; rebinding W (book 1 style) works."""
    rng = np.random.default_rng(13)
    W, b = rand(rng, (6, 4), np.float64), rand(rng, (4,), np.float64)
    fast, book = L.Affine(W, b, backend=backend), b1.Affine(W, b)
    x = rand(rng, (3, 6), np.float32)
    y = fast.forward(x)
    assert y.dtype == np.float64
    assert_close(y, book.forward(x), np.float64, "y")
    dy = rand(rng, (3, 4), np.float64)
    assert_close(fast.backward(dy), book.backward(dy), np.float64, "dx")
    assert_close(fast.dW, book.dW, np.float64, "dW")
    W2 = rand(rng, (6, 4), np.float64)
    fast.W = book.W = W2
    assert fast.params[0] is W2
    assert_close(fast.forward(x), book.forward(x), np.float64, "after rebinding W")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_and_time_affine_match_book(backend, dtype):
    rng = np.random.default_rng(14)
    W = rand(rng, (5, 3), dtype)
    fast, book = L.MatMul(W.copy(), backend=backend), b2.MatMul(W.copy())
    for step in range(3):
        x = rand(rng, (1 + 2 * step, 5), dtype)
        assert_close(fast.forward(x), book.forward(x), dtype, "matmul y")
        dy = rand(rng, (x.shape[0], 3), dtype)
        assert_close(fast.backward(dy), book.backward(dy), dtype, "matmul dx")
        close_all(fast.grads, book.grads, dtype, "matmul grads")
        for n in (fast, book):
            sgd(n.params, n.grads)
    Wt, bt = rand(rng, (4, 7), dtype), rand(rng, (7,), dtype)
    fast, book = L.TimeAffine(Wt.copy(), bt.copy(), backend=backend), b2.TimeAffine(Wt.copy(), bt.copy())
    for N, T in ((1, 1), (3, 5), (2, 4)):
        x = rand(rng, (N, T, 4), dtype)
        y = fast.forward(x)
        assert y.shape == (N, T, 7) and y.dtype == dtype
        assert_close(y, book.forward(x), dtype, "time affine y")
        dy = rand(rng, y.shape, dtype)
        assert_close(fast.backward(dy), book.backward(dy), dtype, "time affine dx")
        close_all(fast.grads, book.grads, dtype, "time affine grads")
        for n in (fast, book):
            sgd(n.params, n.grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_layers_match_book(backend, dtype):
    rng = np.random.default_rng(15)
    V, D = 11, 5
    W = rand(rng, (V, D), dtype)
    fast, book = L.Embedding(W.copy(), backend=backend), b2.Embedding(W.copy())
    grads = list(fast.grads)
    for idx in (np.array([3]), np.array([1, 4, 1, 1, 10, 0]), rng.integers(0, V, 9).astype(np.int32)):
        out = fast.forward(idx)
        assert out.dtype == dtype
        assert_close(out, book.forward(idx), dtype, "embedding out")
        dout = rand(rng, out.shape, dtype)
        assert fast.backward(dout) is None and book.backward(dout) is None
        close_all(fast.grads, book.grads, dtype, "embedding grads")      # repeated indices summed
        assert all(a is g for a, g in zip(fast.grads, grads))
        for n in (fast, book):
            sgd(n.params, n.grads)
    B2 = book2_for(dtype)
    fast, book = L.TimeEmbedding(W.copy(), backend=backend), B2.TimeEmbedding(W.copy())
    for N, T in ((1, 1), (3, 4), (2, 7)):
        xs = rng.integers(0, V, (N, T))
        xs[0, 0] = xs[-1, -1]
        out = fast.forward(xs)
        assert out.shape == (N, T, D) and out.dtype == dtype
        assert_close(out, book.forward(xs), dtype, "time embedding out")
        dout = rand(rng, out.shape, dtype)
        fast.backward(dout)
        book.backward(dout)
        close_all(fast.grads, book.grads, dtype, "time embedding grads")
        assert len(fast.layers) == T and fast.W is fast.params[0]
        for n in (fast, book):
            sgd(n.params, n.grads)


# -------------------------------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_reproduces_book_masks(backend, dtype):
    """Same np.random.seed -> the books' masks and numbers (Dropout: scaled at test time; TimeDropout: inverted,
    with the book's float32 mask, so float64 input gets the float32-rounded scale exactly as in the book)."""
    rng = np.random.default_rng(16)
    for fast, book, ratio in ((L.Dropout(0.3, backend=backend), b1.Dropout(0.3), 0.3),
                              (L.Dropout(backend=backend), b2.Dropout(), 0.5),
                              (L.TimeDropout(0.3, backend=backend), b2.TimeDropout(0.3), 0.3),
                              (L.TimeDropout(0.5, backend=backend), b2.TimeDropout(0.5), 0.5)):
        time = isinstance(fast, L.TimeDropout)
        for step in range(3):
            x = rand(rng, (4, 3, 6) if time else (5, 7), dtype)
            np.random.seed(100 + step)
            y_f = fast.forward(x)
            np.random.seed(100 + step)
            y_b = book.forward(x)
            assert y_f.dtype == dtype
            assert_close(y_f, y_b, dtype, "dropout y")
            np.testing.assert_array_equal(fast.mask, book.mask)
            assert fast.mask.dtype == book.mask.dtype
            dy = rand(rng, x.shape, dtype)
            assert_close(fast.backward(dy), book.backward(dy), dtype, "dropout dx")
        # test mode
        if time:
            fast.train_flg = book.train_flg = False
            assert_close(fast.forward(x), book.forward(x), dtype, "TimeDropout test mode")
        else:
            assert_close(fast.forward(x, train_flg=False), book.forward(x, False), dtype, "Dropout test mode")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,scale", [(L.Dropout, False), (L.TimeDropout, True)])
def test_dropout_counter_generator_option(backend, cls, scale):
    rng = np.random.default_rng(17)
    x = rand(rng, (6, 5, 4), np.float64) + 3.0          # never 0: kept units are visible in y
    a, b = cls(0.4, seed=7, backend=backend), cls(0.4, seed=7, backend=backend)
    state = np.random.get_state()[1].copy()
    y1, y2 = a.forward(x), a.forward(x)
    np.testing.assert_array_equal(np.random.get_state()[1], state)     # np.random is not consumed
    np.testing.assert_array_equal(b.forward(x), y1)                   # reproducible
    assert not np.array_equal(y1 != 0, y2 != 0)                       # a fresh mask per forward
    keep = y2 != 0
    assert 0.4 < keep.mean() < 0.8
    expect_mask = keep.astype(np.float32) * (1 / 0.6) if scale else keep
    np.testing.assert_array_equal(a.mask, expect_mask)
    np.testing.assert_allclose(y2, x * keep / 0.6 if scale else x * keep, rtol=1e-12)
    dy = rand(rng, x.shape, np.float64)
    np.testing.assert_allclose(a.backward(dy), dy * keep / 0.6 if scale else dy * keep, rtol=1e-12)


# --------------------------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(1, 4), (6, 9)])
def test_softmax_with_loss_matches_both_books(backend, dtype, N, V):
    rng = np.random.default_rng(18)
    fast = L.SoftmaxWithLoss(backend=backend)
    for step in range(3):
        x = rand(rng, (N, V), dtype, 3.0)
        t = rng.integers(0, V, N)
        # int labels (both books), float one-hot (book 1), int one-hot (book 2's convert_one_hot)
        for target, book in ((t, b1.SoftmaxWithLoss()), (t, b2.SoftmaxWithLoss()),
                             (np.eye(V, dtype=dtype)[t], b1.SoftmaxWithLoss()),
                             (np.eye(V, dtype=np.int32)[t], b2.SoftmaxWithLoss())):
            loss = fast.forward(x, target)
            assert_close(loss, book.forward(x, target), dtype, "loss")
            assert_close(fast.y, book.y, dtype, "y")
            assert fast.y.dtype == dtype
            dx = fast.backward()
            assert dx.dtype == dtype
            assert_close(dx, book.backward(), dtype, "dx")
        b = b2.SoftmaxWithLoss()
        b.forward(x, t)
        assert_close(fast.forward(x, t) and fast.backward(0.5), b.backward(0.5), dtype, "dout 0.5")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_losses_match_book(backend, dtype):
    rng = np.random.default_rng(19)
    for N in (1, 8):
        fast, book = L.SigmoidWithLoss(backend=backend), b2.SigmoidWithLoss()
        x, t = rand(rng, (N,), dtype, 3.0), rng.integers(0, 2, N)
        assert_close(fast.forward(x, t), book.forward(x, t), dtype, "loss")
        assert_close(fast.y, book.y, dtype, "y")
        assert_close(fast.backward(), book.backward(), dtype, "dx")
    B2 = book2_for(dtype)
    fast, book = L.TimeSigmoidWithLoss(backend=backend), B2.TimeSigmoidWithLoss()
    for N, T in ((1, 1), (4, 3)):
        xs, ts = rand(rng, (N, T), dtype, 3.0), rng.integers(0, 2, (N, T))
        assert_close(fast.forward(xs, ts), book.forward(xs, ts), dtype, "time loss")
        dx = fast.backward()
        assert dx.dtype == dtype and fast.xs_shape == (N, T)
        assert_close(dx, book.backward(), dtype, "time dx")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_time_softmax_with_loss_matches_book(backend, dtype):
    rng = np.random.default_rng(20)
    fast = L.TimeSoftmaxWithLoss(backend=backend)
    for N, T, V in ((1, 1, 3), (3, 5, 11), (2, 4, 7)):
        book = b2.TimeSoftmaxWithLoss()
        xs = rand(rng, (N, T, V), dtype, 3.0)
        ts = rng.integers(0, V, (N, T))
        ts.flat[1::3] = -1                                 # ignored labels
        assert_close(fast.forward(xs, ts), book.forward(xs, ts), dtype, "loss")
        close_all(fast.cache[:3], book.cache[:3], dtype, "cache")
        assert fast.cache[3] == book.cache[3]
        assert_close(fast.backward(), book.backward(), dtype, "dx")
        oh = np.eye(V, dtype=np.int32)[np.maximum(ts, 0)]  # one-hot labels (argmax: nothing ignored)
        book = b2.TimeSoftmaxWithLoss()
        assert_close(fast.forward(xs, oh), book.forward(xs, oh), dtype, "one-hot loss")
        assert_close(fast.backward(2.0), book.backward(2.0), dtype, "one-hot dx, dout 2")
    # every label ignored: 0 loss and gradient (the book divides 0 by 0)
    assert fast.forward(xs, np.full(ts.shape, -1)) == 0.0
    assert not fast.backward().any()


# ------------------------------------------------------------------------------------------------ recurrent

def rnn_params(rng, D, H, gates, dtype):
    return [rand(rng, (D, gates * H), dtype, 1 / np.sqrt(D)), rand(rng, (H, gates * H), dtype, 1 / np.sqrt(H)),
            rand(rng, (gates * H,), dtype, 0.1)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["RNN", "GRU"])
def test_recurrent_cells_match_book(backend, dtype, cell):
    rng = np.random.default_rng(21)
    N, D, H = 3, 4, 5
    p = rnn_params(rng, D, H, 3 if cell == "GRU" else 1, dtype)
    fast, book = getattr(L, cell)(*copies(p), backend=backend), getattr(b2, cell)(*copies(p))
    grads = list(fast.grads)
    for n in (1, N, 2):
        x, h = rand(rng, (n, D), dtype), rand(rng, (n, H), dtype)
        hn = fast.forward(x, h)
        assert hn.dtype == dtype
        assert_close(hn, book.forward(x, h), dtype, "h_next")
        close_all(fast.cache, book.cache, dtype, "cache")
        dh = rand(rng, (n, H), dtype)
        close_all(fast.backward(dh), book.backward(dh), dtype, "dx, dh_prev")
        close_all(fast.grads, book.grads, dtype, "grads")
        assert all(a is g for a, g in zip(fast.grads, grads))
        if cell == "GRU":
            for k in ("dWx", "dWh", "db"):
                assert_close(getattr(fast, k), getattr(book, k), dtype, k)
        for m in (fast, book):
            sgd(m.params, m.grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_without_bias_first_edition(backend):
    """The book's first GRU/TimeGRU had no bias: GRU(Wx, Wh), TimeGRU(Wx, Wh, stateful)."""
    rng = np.random.default_rng(22)
    N, T, D, H = 2, 3, 4, 5
    Wx, Wh, _ = rnn_params(rng, D, H, 3, np.float64)
    fast, book = L.GRU(Wx, Wh, backend=backend), b2.GRU(Wx, Wh, np.zeros(3 * H))
    x, h = rand(rng, (N, D), np.float64), rand(rng, (N, H), np.float64)
    assert_close(fast.forward(x, h), book.forward(x, h), np.float64, "h_next")
    dh = rand(rng, (N, H), np.float64)
    close_all(fast.backward(dh), book.backward(dh), np.float64, "dx, dh")
    assert fast.b is None and fast.db is None and len(fast.params) == 2
    assert_close(fast.dWx, book.dWx, np.float64, "dWx")
    assert_close(fast.dWh, book.dWh, np.float64, "dWh")
    tf, tb = L.TimeGRU(Wx, Wh, True, backend=backend), b2x.TimeGRU(Wx, Wh, np.zeros(3 * H), True)
    assert tf.stateful
    for _ in range(2):
        xs = rand(rng, (N, T, D), np.float64)
        assert_close(tf.forward(xs), tb.forward(xs), np.float64, "hs")
    dhs = rand(rng, (N, T, H), np.float64)
    assert_close(tf.backward(dhs), tb.backward(dhs), np.float64, "dxs")
    close_all(tf.grads, tb.grads[:2], np.float64, "grads")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ["TimeRNN", "TimeGRU", "TimeLSTM", "TimeBiLSTM"])
@pytest.mark.parametrize("stateful", [False, True])
def test_time_recurrent_layers_match_book(backend, dtype, cls, stateful):
    rng = np.random.default_rng(23)
    N, T, D, H = 3, 5, 4, 7
    gates = {"TimeRNN": 1, "TimeGRU": 3, "TimeLSTM": 4, "TimeBiLSTM": 4}[cls]
    p = rnn_params(rng, D, H, gates, dtype)
    if cls == "TimeBiLSTM":
        p += rnn_params(rng, D, H, gates, dtype)
    B2 = book2_for(dtype)
    fast, book = getattr(L, cls)(*copies(p), stateful, backend=backend), getattr(B2, cls)(*copies(p), stateful)
    grads = list(fast.grads)
    Hout = 2 * H if cls == "TimeBiLSTM" else H
    for step, (n, t) in enumerate(((N, T), (N, 1), (N, T))):  # same batch: stateful layers carry h (and c)
        xs = rand(rng, (n, t, D), dtype)
        hs = fast.forward(xs)
        assert hs.dtype == dtype and hs.shape == (n, t, Hout)
        assert_close(hs, book.forward(xs), dtype, f"step {step} hs")
        dhs = rand(rng, hs.shape, dtype)
        assert_close(fast.backward(dhs), book.backward(dhs), dtype, f"step {step} dxs")
        close_all(fast.grads, book.grads, dtype, f"step {step} grads")
        assert all(a is g for a, g in zip(fast.grads, grads))
        if cls != "TimeBiLSTM":
            assert_close(fast.h, book.h, dtype, f"step {step} h")
            assert_close(fast.dh, book.dh, dtype, f"step {step} dh")
        for m in (fast, book):
            sgd(m.params, m.grads)
    if cls in ("TimeRNN", "TimeGRU"):
        # the book's per-step layers, rebuilt from the fused cache (the last forward: T steps)
        lf, lb = fast.layers, book.layers
        assert len(lf) == len(lb) == T
        for t in (0, T - 1):
            close_all(lf[t].cache, lb[t].cache, dtype, f"layers[{t}].cache")
            dh = rand(rng, (N, H), dtype)
            close_all(lf[t].backward(dh), lb[t].backward(dh), dtype, f"layers[{t}].backward")
            close_all(lf[t].grads, lb[t].grads, dtype, f"layers[{t}].grads")
        # set_state / reset_state
        h0 = rand(rng, (N, H), dtype)
        for m in (fast, book):
            m.set_state(h0)
        xs = rand(rng, (N, T, D), dtype)
        assert_close(fast.forward(xs), book.forward(xs), dtype, "after set_state")
        fast.reset_state()
        assert fast.h is None


# ------------------------------------------------------------------------------------------------- networks

class TwoLayerNet:
    """Book 1's two-layer MLP (ch. 5), with an optional BatchNormalization/Dropout block as in ch. 6, written once
    against a layer namespace ``ns`` (``book_numpy.b1`` or ``fastnn.layers``)."""

    def __init__(self, ns, params, extended=False, **kw):
        self.params = {k: v.copy() for k, v in params.items()}
        p = self.params
        self.layers = [ns.Affine(p["W1"], p["b1"], **kw)]
        if extended:
            self.layers += [ns.BatchNormalization(p["gamma1"], p["beta1"], **kw)]
        self.layers += [ns.Relu(**kw)]
        if extended:
            self.layers += [ns.Dropout(0.3, **kw)]
        self.layers += [ns.Affine(p["W2"], p["b2"], **kw)]
        self.last = ns.SoftmaxWithLoss(**kw)
        self.extended = extended

    def loss(self, x, t, train_flg=True):
        for layer in self.layers:
            x = layer.forward(x, train_flg) if type(layer).__name__ in ("Dropout", "BatchNormalization") \
                else layer.forward(x)
        return self.last.forward(x, t)

    def gradient(self, x, t):
        loss = self.loss(x, t)
        d = self.last.backward(1)
        for layer in reversed(self.layers):
            d = layer.backward(d)
        a1, a2 = self.layers[0], self.layers[-1]
        grads = dict(W1=a1.dW, b1=a1.db, W2=a2.dW, b2=a2.db)
        if self.extended:
            grads.update(gamma1=self.layers[1].dgamma, beta1=self.layers[1].dbeta)
        return loss, d, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("extended", [False, True])
def test_book1_mlp_trains_identically(backend, dtype, extended):
    rng = np.random.default_rng(24)
    N, D, H, C = 9, 13, 10, 4
    params = dict(W1=rand(rng, (D, H), dtype, 0.3), b1=np.zeros(H, dtype), W2=rand(rng, (H, C), dtype, 0.3),
                  b2=np.zeros(C, dtype))
    if extended:
        params.update(gamma1=np.ones(H, dtype), beta1=np.zeros(H, dtype))
    book = TwoLayerNet(b1, params, extended)
    fast = TwoLayerNet(L, params, extended, backend=backend)
    for step in range(3):
        x = rand(rng, (N, D), dtype)
        t = np.eye(C, dtype=dtype)[rng.integers(0, C, N)] if step == 1 else rng.integers(0, C, N)
        out = []
        for net in (book, fast):
            np.random.seed(step)                     # the dropout masks
            out.append(net.gradient(x, t))
        (l_b, d_b, g_b), (l_f, d_f, g_f) = out
        assert_close(l_f, l_b, dtype, f"step {step} loss")
        assert_close(d_f, d_b, dtype, f"step {step} dx")
        for k in g_b:
            assert_close(g_f[k], g_b[k], dtype, f"step {step} d{k}")
        for net, g in ((book, g_b), (fast, g_f)):   # book 1's SGD.update: params[key] -= lr * grads[key]
            for k in net.params:
                net.params[k] -= 0.1 * g[k]
    x = rand(rng, (N, D), dtype)
    t = rng.integers(0, C, N)
    assert_close(fast.loss(x, t, False), book.loss(x, t, False), dtype, "test-mode loss")


class Rnnlm:
    """Book 2's language models (ch. 6 Rnnlm / BetterRnnlm): TimeEmbedding -> [TimeDropout] -> TimeLSTM or TimeGRU
    -> [TimeDropout] -> TimeAffine (weights tied to the embedding: ``embed_W.T``) -> TimeSoftmaxWithLoss, written
    once against a layer namespace ``ns``. ``params``/``grads`` collected as book 2's BaseModel does."""

    def __init__(self, ns, arrays, cell="TimeLSTM", ratio=0.5, **kw):
        embed_W, Wx, Wh, b, affine_b = (a.copy() for a in arrays)
        self.layers = [ns.TimeEmbedding(embed_W, **kw), ns.TimeDropout(ratio, **kw),
                       getattr(ns, cell)(Wx, Wh, b, stateful=True, **kw), ns.TimeDropout(ratio, **kw),
                       ns.TimeAffine(embed_W.T, affine_b, **kw)]
        self.loss_layer = ns.TimeSoftmaxWithLoss(**kw)
        self.rnn = self.layers[2]
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts, train_flg=True):
        for layer in self.layers:
            if type(layer).__name__ == "TimeDropout":
                layer.train_flg = train_flg
        for layer in self.layers:
            xs = layer.forward(xs)
        return self.loss_layer.forward(xs, ts)

    def backward(self, dout=1):
        d = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            d = layer.backward(d)
        return d

    def sgd_tied(self, lr):
        """Book 2's Trainer: remove_duplicate adds the tied affine weight's gradient (transposed) to the
        embedding's, then SGD updates each distinct parameter once (in place, so the tied view follows)."""
        self.grads[0] += self.grads[-2].T
        for k, (p, g) in enumerate(zip(self.params, self.grads)):
            if k != len(self.params) - 2:
                p -= lr * g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["TimeLSTM", "TimeGRU"])
def test_book2_language_model_trains_identically(backend, dtype, cell):
    rng = np.random.default_rng(25)
    N, T, V, H = 3, 5, 17, 6                         # tied weights: wordvec size == hidden size
    G = 4 if cell == "TimeLSTM" else 3
    arrays = [rand(rng, (V, H), dtype, 0.1), *rnn_params(rng, H, H, G, dtype), np.zeros(V, dtype)]
    B2 = book2_for(dtype)
    book, fast = Rnnlm(B2, arrays, cell), Rnnlm(L, arrays, cell, backend=backend)
    corpus = rng.integers(0, V, N * T * 3 + 1)
    for step in range(3):
        xs = corpus[step * N * T:(step + 1) * N * T].reshape(N, T)
        ts = corpus[step * N * T + 1:(step + 1) * N * T + 1].reshape(N, T)
        losses = []
        for model in (book, fast):
            np.random.seed(step)
            losses.append(model.forward(xs, ts))
            model.backward()
        assert_close(losses[1], losses[0], dtype, f"step {step} loss")
        close_all(fast.grads, book.grads, dtype, f"step {step} grads")
        assert_close(fast.rnn.h, book.rnn.h, dtype, f"step {step} h (stateful)")
        for model in (book, fast):
            model.sgd_tied(1.0)
        close_all(fast.params, book.params, dtype, f"step {step} params")
    # evaluation: no dropout, state carried on
    xs = corpus[:N * T].reshape(N, T)
    assert_close(fast.forward(xs, xs, False), book.forward(xs, xs, False), dtype, "eval loss")


def test_star_import_gives_every_book_class():
    ns = {}
    exec("from fastnn.layers import *", ns)
    names = set(b2.__all__ + b1.__all__) - {"np"} - set(dir(b1.np))
    classes = {n for n in names if n[0].isupper() and not n.startswith("Simple_")}
    assert classes <= set(ns), classes - set(ns)


# ---------------------------------------------------------------------------------------------- cuda backend

@pytest.mark.skipif("cuda" not in fastnn.backends(), reason="needs the cuda backend (a GPU or Numba's simulator)")
def test_cuda_backend_through_every_layer():
    """backend="cuda" reaches every op a layer calls (NumPy arrays in, NumPy arrays out): one tiny step per class
    against the book, float64 (the full tests above run on cuda too when a real GPU is present)."""
    rng = np.random.default_rng(26)
    kw = dict(backend="cuda")
    N, T, D, H, V = 2, 2, 3, 4, 5
    dt = np.float64

    def step(fast, book, *xs, loss=False, name=""):
        out_f, out_b = fast.forward(*xs), book.forward(*xs)
        assert_close(out_f, out_b, dt, f"{name} forward")
        if loss:
            r_f, r_b = fast.backward(), book.backward()
        else:
            d = rand(rng, np.shape(out_b), dt)
            r_f, r_b = fast.backward(d), book.backward(d.copy())
        if isinstance(r_b, tuple):
            close_all(r_f, r_b, dt, f"{name} backward")
        elif r_b is not None:
            assert_close(r_f, r_b, dt, f"{name} backward")
        close_all(getattr(fast, "grads", []), getattr(book, "grads", []), dt, f"{name} grads")

    x = rand(rng, (N, D), dt)
    step(L.Relu(**kw), b1.Relu(), x, name="Relu")
    step(L.Sigmoid(**kw), b2.Sigmoid(), x, name="Sigmoid")
    step(L.Softmax(**kw), b2.Softmax(), x, name="Softmax")
    W, b = rand(rng, (D, H), dt), rand(rng, (H,), dt)
    step(L.Affine(W, b, **kw), b2.Affine(W.copy(), b.copy()), x, name="Affine")
    step(L.MatMul(W, **kw), b2.MatMul(W.copy()), x, name="MatMul")
    step(L.TimeAffine(W, b, **kw), b2.TimeAffine(W.copy(), b.copy()), rand(rng, (N, T, D), dt), name="TimeAffine")
    E = rand(rng, (V, D), dt)
    step(L.TimeEmbedding(E, **kw), b2x.TimeEmbedding(E.copy()), rng.integers(0, V, (N, T)), name="TimeEmbedding")
    np.random.seed(0)
    fd = L.TimeDropout(0.5, **kw)
    y = fd.forward(x)
    np.random.seed(0)
    assert_close(y, b2.TimeDropout(0.5).forward(x), dt, "TimeDropout")
    xs = rand(rng, (N, T, V), dt)
    step(L.TimeSoftmaxWithLoss(**kw), b2x.TimeSoftmaxWithLoss(), xs, np.array([[1, -1], [4, 0]]), loss=True,
         name="TimeSoftmaxWithLoss")
    step(L.SoftmaxWithLoss(**kw), b1.SoftmaxWithLoss(), x, np.array([2, 0]), loss=True, name="SoftmaxWithLoss")
    step(L.SigmoidWithLoss(**kw), b2.SigmoidWithLoss(), x[:, 0], np.array([1, 0]), loss=True, name="SigmoidWithLoss")
    h = rand(rng, (N, H), dt)
    for cell, G in (("RNN", 1), ("GRU", 3)):
        p = rnn_params(rng, D, H, G, dt)
        step(getattr(L, cell)(*p, **kw), getattr(b2, cell)(*copies(p)), x, h, name=cell)
