"""fastnn.layers against the textbook layers they replace.

``Book*`` and the plain layers below are bench/book_numpy.py's rewrite of *Deep Learning from Scratch*: book 1
``common/layers.py`` as written, dtype behaviour included (im2col makes float64 columns, BatchNormalization's lazy
running stats are float64, Pooling.backward is float64), and book 2 ``common/time_layers.py`` with one exception:
the book's TimeLSTM hard-codes ``dtype='f'`` for ``hs``/``dxs``/the zero states; ``b2x`` uses the input dtype, so
float64 runs can be compared tightly (fastnn keeps the input dtype by design).

Small networks are built from both and trained side by side with SGD; forward outputs, losses and ALL gradients
must agree at every step within ``|a - b| <= atol + rtol*|b|``.
"""
import os
import sys

import numpy as np
import pytest

import fastnn
from fastnn import layers as L

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import book_numpy  # noqa: E402  (bench/ is not a package)

# "cuda" only on a real GPU: Numba's simulator is far too slow for these training loops
_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
BACKENDS = [b for b in ("numpy", "cpu", "cuda") if b in fastnn.backends() and not (b == "cuda" and _SIM)]
DEFAULT = os.environ.get("FASTNN_BACKEND") or "cpu"    # what backend=None picks for NumPy arrays

# ------------------------------------------------------------------------------------------ the textbook code
# bench/book_numpy.py: book 1 as written (b1), book 2 with its float32 buffers in the input dtype (b2x)

_b1, _b2 = book_numpy.b1, book_numpy.b2x
BookConvolution, BookPooling, BookBatchNormalization = _b1.Convolution, _b1.Pooling, _b1.BatchNormalization
Relu, Affine, SoftmaxWithLoss = _b1.Relu, _b1.Affine, _b1.SoftmaxWithLoss
BookLSTM, BookTimeLSTM, TimeAffine, TimeSoftmaxWithLoss = _b2.LSTM, _b2.TimeLSTM, _b2.TimeAffine, _b2.TimeSoftmaxWithLoss


# ------------------------------------------------------------------------------------------------------ helpers

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=1e-4, atol=1e-5)}


def assert_close(a, b, dtype, name="", scale=True):
    """|a - b| <= atol + rtol*|b|, with atol relative to the largest |b| (gradients can be tiny everywhere)."""
    tol = TOL[dtype]
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    atol = tol["atol"] * (max(1.0, float(np.abs(b).max(initial=0.0))) if scale else 1.0)
    err = np.abs(a - b)
    bad = err > atol + tol["rtol"] * np.abs(b)
    assert not bad.any(), (f"{name}: {bad.sum()} of {bad.size} elements differ; max |a-b| = {err.max():.3g} "
                           f"(atol {atol:.3g}, rtol {tol['rtol']})")


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------------------------------------------- CNN tests

def make_cnn(mod, params, backend, conv_stride=1, conv_pad=1):
    """conv -> batch norm -> relu -> max pool -> affine -> softmax loss; mod picks the Conv/BN/Pool classes."""
    kw = {} if mod == "book" else {"backend": backend}
    Conv, BN, Pool = ((BookConvolution, BookBatchNormalization, BookPooling) if mod == "book"
                      else (L.Convolution, L.BatchNormalization, L.Pooling))
    p = {k: v.copy() for k, v in params.items()}
    return dict(
        params=p,
        conv=Conv(p["W1"], p["b1"], stride=conv_stride, pad=conv_pad, **kw),
        bn=BN(p["gamma"], p["beta"], **kw),
        relu=Relu(),
        pool=Pool(2, 2, stride=2, **kw),
        affine=Affine(p["W2"], p["b2"]),
        loss=SoftmaxWithLoss(),
    )


def cnn_forward(net, x, t=None, train=True):
    h = net["conv"].forward(x)
    h = net["bn"].forward(h, train)
    h = net["relu"].forward(h)
    h = net["pool"].forward(h)
    scores = net["affine"].forward(h)
    loss = None if t is None else net["loss"].forward(scores, t)
    return scores, loss


def cnn_backward(net):
    d = net["loss"].backward(1)
    d = net["affine"].backward(d)
    d = net["pool"].backward(d)
    d = net["relu"].backward(d)
    d = net["bn"].backward(d)
    return net["conv"].backward(d)


def cnn_grads(net):
    return dict(W1=net["conv"].dW, b1=net["conv"].db, gamma=net["bn"].dgamma, beta=net["bn"].dbeta,
                W2=net["affine"].dW, b2=net["affine"].db)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("conv_stride,conv_pad", [(1, 1), (2, 0)])
def test_cnn_training_matches_book(dtype, backend, conv_stride, conv_pad):
    rng = np.random.default_rng(0)
    N, C, H, W, K, classes = 8, 2, 10, 10, 4, 5
    OH = (H + 2 * conv_pad - 3) // conv_stride + 1
    D = K * OH * OH
    params = dict(W1=rand(rng, (K, C, 3, 3), dtype, 0.3), b1=rand(rng, (K,), dtype, 0.1),
                  gamma=(1 + rand(rng, (D,), dtype, 0.1)).astype(dtype), beta=rand(rng, (D,), dtype, 0.1),
                  W2=rand(rng, (K * (OH // 2) ** 2, classes), dtype, 0.2), b2=np.zeros(classes, dtype))
    book, fast = make_cnn("book", params, backend, conv_stride, conv_pad), make_cnn("fast", params, backend,
                                                                                     conv_stride, conv_pad)
    lr = 0.1
    for step in range(4):
        x, t = rand(rng, (N, C, H, W), dtype), rng.integers(0, classes, N)
        s_b, l_b = cnn_forward(book, x, t)
        s_f, l_f = cnn_forward(fast, x, t)
        assert s_f.dtype == np.result_type(dtype, np.float32)
        assert_close(s_f, s_b, dtype, f"step {step} scores")
        assert_close(l_f, l_b, dtype, f"step {step} loss")
        dx_b, dx_f = cnn_backward(book), cnn_backward(fast)
        assert dx_f.dtype == dtype
        assert_close(dx_f, dx_b, dtype, f"step {step} dx")
        g_b, g_f = cnn_grads(book), cnn_grads(fast)
        for k in g_b:
            assert g_f[k].shape == params[k].shape and g_f[k].dtype == dtype, k
            assert_close(g_f[k], g_b[k], dtype, f"step {step} d{k}")
        for net, g in ((book, g_b), (fast, g_f)):
            for k in g:
                net["params"][k] -= lr * g[k]   # in place: the layers hold these arrays
        # the book's intermediates, available on demand
        assert_close(fast["conv"].col, book["conv"].col, dtype, "col")
        assert_close(fast["conv"].col_W, book["conv"].col_W, dtype, "col_W")
        np.testing.assert_array_equal(fast["pool"].arg_max, book["pool"].arg_max)
        for k in ("xc", "xn", "std"):
            assert_close(getattr(fast["bn"], k), getattr(book["bn"], k), dtype, k)
        assert fast["bn"].batch_size == book["bn"].batch_size == N
    # running statistics and test mode
    assert_close(fast["bn"].running_mean, book["bn"].running_mean, dtype, "running_mean")
    assert_close(fast["bn"].running_var, book["bn"].running_var, dtype, "running_var")
    x = rand(rng, (N, C, H, W), dtype)
    s_b, _ = cnn_forward(book, x, train=False)
    s_f, _ = cnn_forward(fast, x, train=False)
    assert_close(s_f, s_b, dtype, "test-mode scores")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_book1_mixed_dtypes_compute_in_float64(dtype):
    """Book 1 feeds float32 images to float64 weights: the result is float64, as with np.dot."""
    rng = np.random.default_rng(1)
    x = rand(rng, (3, 2, 6, 6), np.float32)
    W, b = rand(rng, (4, 2, 3, 3), np.float64), rand(rng, (4,), np.float64)
    fast, book = L.Convolution(W, b, 1, 1), BookConvolution(W, b, 1, 1)
    y_f, y_b = fast.forward(x), book.forward(x)
    assert y_f.dtype == np.float64
    assert_close(y_f, y_b, np.float64, "y")
    dy = rand(rng, y_b.shape, dtype)
    dx_f, dx_b = fast.backward(dy), book.backward(dy)
    assert fast.dW.dtype == np.float64 and dx_f.dtype == np.float64
    assert_close(dx_f, dx_b, np.float64, "dx")
    assert_close(fast.dW, book.dW, np.float64, "dW")
    # BatchNormalization with float64 gamma/beta on float32 activations
    g, be = 1 + rand(rng, (2 * 6 * 6,), np.float64, 0.1), rand(rng, (2 * 6 * 6,), np.float64, 0.1)
    bn_f, bn_b = L.BatchNormalization(g, be), BookBatchNormalization(g, be)
    xb = rand(rng, (5, 2, 6, 6), np.float32)
    y_f, y_b = bn_f.forward(xb), bn_b.forward(xb)
    assert y_f.dtype == np.float64
    assert_close(y_f, y_b, np.float32, "bn y")   # the book's statistics of a float32 input are float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_2d_running_stats_and_test_mode(backend):
    rng = np.random.default_rng(2)
    D = 7
    g, be = 1 + rand(rng, (D,), np.float64, 0.2), rand(rng, (D,), np.float64, 0.2)
    rm0, rv0 = rand(rng, (D,), np.float64), np.abs(rand(rng, (D,), np.float64))
    fast = L.BatchNormalization(g, be, momentum=0.8, running_mean=rm0.copy(), running_var=rv0.copy(),
                                backend=backend)
    book = BookBatchNormalization(g, be, momentum=0.8, running_mean=rm0.copy(), running_var=rv0.copy())
    for step in range(3):
        x = rand(rng, (6, D), np.float64, 3.0) + 2.0
        assert_close(fast.forward(x), book.forward(x), np.float64, "train y")
        dy = rand(rng, (6, D), np.float64)
        assert_close(fast.backward(dy), book.backward(dy), np.float64, "dx")
        assert_close(fast.dgamma, book.dgamma, np.float64, "dgamma")
        assert_close(fast.dbeta, book.dbeta, np.float64, "dbeta")
        # the book's formula: momentum * running + (1 - momentum) * batch, biased variance
        assert_close(fast.running_mean, book.running_mean, np.float64, "running_mean")
        assert_close(fast.running_var, book.running_var, np.float64, "running_var")
    x = rand(rng, (4, D), np.float64)
    assert_close(fast.forward(x, train_flg=False), book.forward(x, train_flg=False), np.float64, "test y")
    # backward after a test-mode forward: the inference-form gradient dy * gamma / sqrt(running_var + eps)
    dy = rand(rng, (4, D), np.float64)
    assert_close(fast.backward(dy), dy * g / np.sqrt(book.running_var + 10e-7), np.float64, "test dx")
    # the book zero-initialises running stats lazily; test mode then normalises with mean 0, var 0
    fresh, fresh_b = L.BatchNormalization(g, be, backend=backend), BookBatchNormalization(g, be)
    assert fresh.running_mean is None
    assert_close(fresh.forward(x, False), fresh_b.forward(x, False), np.float64, "fresh test y")
    assert fresh.running_mean.shape == (D,) and not fresh.running_var.any()
    # a training batch of one sample: variance 0, output beta, as the book computes
    one = rand(rng, (1, D), np.float64)
    assert_close(fresh.forward(one), fresh_b.forward(one), np.float64, "N=1 y")
    assert_close(fresh.backward(dy[:1]), fresh_b.backward(dy[:1]), np.float64, "N=1 dx")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool,stride", [((3, 3), 2), ((2, 3), 1), ((2, 2), 2)])
def test_pooling_matches_book(backend, pool, stride):
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (2, 3, 7, 8)).astype(np.float64)   # many ties: the first maximum must win
    fast, book = L.Pooling(*pool, stride=stride, backend=backend), BookPooling(*pool, stride=stride)
    y_f, y_b = fast.forward(x), book.forward(x)
    np.testing.assert_array_equal(y_f, y_b)
    np.testing.assert_array_equal(fast.arg_max, book.arg_max)
    dy = rng.integers(-3, 4, y_b.shape).astype(np.float64)
    np.testing.assert_array_equal(fast.backward(dy), book.backward(dy))   # overlaps accumulate
    x32 = x.astype(np.float32)
    assert fast.forward(x32).dtype == np.float32 and fast.backward(dy.astype(np.float32)).dtype == np.float32


def test_pooling_default_stride_is_one():
    assert L.Pooling(2, 2).stride == 1 and L.Pooling(2, 2).pad == 0
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(L.Pooling(2, 2).forward(x), BookPooling(2, 2).forward(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_pooling_with_pad_is_pytorch_style(backend):
    """Documented difference: the book's output size ignores pad (its forward fails); fastnn pads with -inf."""
    rng = np.random.default_rng(4)
    x = rand(rng, (2, 2, 5, 5), np.float64) - 1.0     # mostly negative: zero padding would win in the book
    with pytest.raises(ValueError):
        BookPooling(2, 2, stride=2, pad=1).forward(x)
    layer = L.Pooling(2, 2, stride=2, pad=1, backend=backend)
    y = layer.forward(x)
    assert y.shape == (2, 2, 3, 3)          # (5 + 2 - 2)//2 + 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    expect = np.empty_like(y)
    for i in range(3):
        for j in range(3):
            expect[:, :, i, j] = xp[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(2, 3))
    np.testing.assert_array_equal(y, expect)
    assert (y < 0).any()                     # the book's zero padding could never give a negative border max
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == y.size   # every window routes its gradient to a real input
    # with pad == 0 the book and fastnn agree (covered above); pad > pool//2 is refused, as in PyTorch
    with pytest.raises(ValueError):
        L.Pooling(2, 2, stride=2, pad=2, backend=backend).forward(x)


# --------------------------------------------------------------------------------------------------- LSTM tests

def make_lstm_model(mod, params, backend, stateful=False):
    p = [v.copy() for v in params]
    lstm = (BookTimeLSTM(p[0], p[1], p[2], stateful) if mod == "book"
            else L.TimeLSTM(p[0], p[1], p[2], stateful, backend=backend))
    return [lstm, TimeAffine(p[3], p[4]), TimeSoftmaxWithLoss()]


def lstm_model_params(rng, D, H, V, dtype):
    return [rand(rng, (D, 4 * H), dtype, 1 / np.sqrt(D)), rand(rng, (H, 4 * H), dtype, 1 / np.sqrt(H)),
            rand(rng, (4 * H,), dtype, 0.1), rand(rng, (H, V), dtype, 1 / np.sqrt(H)), np.zeros(V, dtype)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stateful", [False, True])
def test_time_lstm_training_matches_book(dtype, backend, stateful):
    rng = np.random.default_rng(5)
    N, T, D, H, V = 4, 6, 5, 8, 7
    params = lstm_model_params(rng, D, H, V, dtype)
    book, fast = make_lstm_model("book", params, backend, stateful), make_lstm_model("fast", params, backend,
                                                                                      stateful)
    grad_ids = [id(g) for g in fast[0].grads]
    lr = 0.5
    for step in range(4):
        xs, ts = rand(rng, (N, T, D), dtype), rng.integers(0, V, (N, T))
        outs = []
        for model in (book, fast):
            hs = model[0].forward(xs)
            loss = model[2].forward(model[1].forward(hs), ts)
            dxs = model[0].backward(model[1].backward(model[2].backward()))
            outs.append((hs, loss, dxs))
        (hs_b, l_b, dxs_b), (hs_f, l_f, dxs_f) = outs
        assert hs_f.dtype == dtype and dxs_f.dtype == dtype
        assert_close(hs_f, hs_b, dtype, f"step {step} hs")
        assert_close(l_f, l_b, dtype, f"step {step} loss")
        assert_close(dxs_f, dxs_b, dtype, f"step {step} dxs")
        assert_close(fast[0].dh, book[0].dh, dtype, f"step {step} dh")
        assert_close(fast[0].h, book[0].h, dtype, f"step {step} h")
        assert_close(fast[0].c, book[0].c, dtype, f"step {step} c")
        for k, (gf, gb) in enumerate(zip(fast[0].grads + fast[1].grads, book[0].grads + book[1].grads)):
            assert_close(gf, gb, dtype, f"step {step} grad {k}")
        assert [id(g) for g in fast[0].grads] == grad_ids     # updated in place, never rebound
        for model in (book, fast):                              # SGD, in place (as book 2's optimizers)
            for p, g in zip(model[0].params + model[1].params, model[0].grads + model[1].grads):
                p -= lr * g
    # the book's per-step layers, rebuilt from the fused cache
    lb, lf = book[0].layers, fast[0].layers
    assert len(lf) == T
    for t in (0, T - 1):
        for a, b in zip(lf[t].cache, lb[t].cache):
            assert_close(a, b, dtype, f"layers[{t}].cache")
        dh, dc = rand(rng, (N, H), dtype), rand(rng, (N, H), dtype)
        for a, b in zip(lf[t].backward(dh, dc), lb[t].backward(dh, dc)):
            assert_close(a, b, dtype, f"layers[{t}].backward")
        for a, b in zip(lf[t].grads, lb[t].grads):
            assert_close(a, b, dtype, f"layers[{t}].grads")


def test_time_lstm_state_api():
    rng = np.random.default_rng(6)
    N, T, D, H = 3, 4, 5, 6
    p = lstm_model_params(rng, D, H, 2, np.float64)[:3]
    fast, book = L.TimeLSTM(*p, stateful=True), BookTimeLSTM(*p, stateful=True)
    h0, c0 = rand(rng, (N, H), np.float64), rand(rng, (N, H), np.float64)
    for layer in (fast, book):
        layer.set_state(h0)               # c=None: zeros at the next forward
    xs = rand(rng, (N, T, D), np.float64)
    assert_close(fast.forward(xs), book.forward(xs), np.float64, "set_state(h) hs")
    for layer in (fast, book):
        layer.set_state(h0, c0)
    assert_close(fast.forward(xs), book.forward(xs), np.float64, "set_state(h, c) hs")
    hs1 = fast.forward(xs)                # stateful: continues from the previous call
    assert_close(hs1, book.forward(xs), np.float64, "continued hs")
    fast.reset_state()
    assert fast.h is None and fast.c is None
    stateless = L.TimeLSTM(*p)
    assert_close(fast.forward(xs), stateless.forward(xs), np.float64, "after reset_state")
    assert not stateless.stateful and fast.stateful


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_cell_matches_book(dtype, backend):
    rng = np.random.default_rng(7)
    N, D, H = 3, 4, 5
    p = lstm_model_params(rng, D, H, 2, dtype)[:3]
    fast, book = L.LSTM(*[a.copy() for a in p], backend=backend), BookLSTM(*p)
    grads = list(fast.grads)
    x, h, c = rand(rng, (N, D), dtype), rand(rng, (N, H), dtype), rand(rng, (N, H), dtype)
    for a, b in zip(fast.forward(x, h, c), book.forward(x, h, c)):
        assert a.dtype == dtype
        assert_close(a, b, dtype, "h_next/c_next")
    for a, b in zip(fast.cache, book.cache):
        assert_close(a, b, dtype, "cache")
    dh, dc = rand(rng, (N, H), dtype), rand(rng, (N, H), dtype)
    for a, b in zip(fast.backward(dh, dc), book.backward(dh, dc)):
        assert_close(a, b, dtype, "dx/dh_prev/dc_prev")
    for a, b in zip(fast.grads, book.grads):
        assert_close(a, b, dtype, "grads")
    assert all(a is b for a, b in zip(fast.grads, grads))
    # the book's TimeLSTM calls backward(dh, 0) at the last step
    for a, b in zip(fast.backward(dh, 0), book.backward(dh, 0)):
        assert_close(a, b, dtype, "dc_next=0")


# ------------------------------------------------------------------------------------------------------- GPU

def _cupy_gpu():
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0 and "cuda" in fastnn.backends():
            return cupy
    except Exception:
        pass
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cupy_gpu() is None, reason="needs CuPy and a CUDA GPU")
def test_layers_keep_cupy_arrays_on_the_gpu():
    cp = _cupy_gpu()
    rng = np.random.default_rng(8)
    params = dict(W1=rand(rng, (4, 2, 3, 3), np.float32, 0.3), b1=rand(rng, (4,), np.float32, 0.1),
                  gamma=np.ones(400, np.float32), beta=np.zeros(400, np.float32))
    x = rand(rng, (8, 2, 10, 10), np.float32)
    host = [L.Convolution(params["W1"], params["b1"], 1, 1, backend="numpy"),
            L.BatchNormalization(params["gamma"], params["beta"], backend="numpy"), L.Pooling(2, 2, 2, backend="numpy")]
    dev = [L.Convolution(cp.asarray(params["W1"]), cp.asarray(params["b1"]), 1, 1),
           L.BatchNormalization(cp.asarray(params["gamma"]), cp.asarray(params["beta"])), L.Pooling(2, 2, 2)]
    h, d = x, cp.asarray(x)
    for lh, ld in zip(host, dev):
        h, d = lh.forward(h), ld.forward(d)
        assert isinstance(d, cp.ndarray)
        assert_close(cp.asnumpy(d), h, np.float32)
    gh = rand(rng, h.shape, np.float32)
    gd = cp.asarray(gh)
    for lh, ld in zip(reversed(host), reversed(dev)):
        gh, gd = lh.backward(gh), ld.backward(gd)
        assert isinstance(gd, cp.ndarray)
        assert_close(cp.asnumpy(gd), gh, np.float32)
    assert isinstance(dev[1].running_mean, cp.ndarray)
    p = lstm_model_params(rng, 5, 6, 2, np.float32)[:3]
    lh, ld = L.TimeLSTM(*p, stateful=True, backend="numpy"), L.TimeLSTM(*[cp.asarray(a) for a in p], stateful=True)
    xs = rand(rng, (3, 4, 5), np.float32)
    for _ in range(2):
        hs, hd = lh.forward(xs), ld.forward(cp.asarray(xs))
        assert isinstance(hd, cp.ndarray) and isinstance(ld.h, cp.ndarray)
        assert_close(cp.asnumpy(hd), hs, np.float32)
    dhs = rand(rng, hs.shape, np.float32)
    assert_close(cp.asnumpy(ld.backward(cp.asarray(dhs))), lh.backward(dhs), np.float32)
    for a, b in zip(ld.grads, lh.grads):
        assert isinstance(a, cp.ndarray)
        assert_close(cp.asnumpy(a), b, np.float32)
