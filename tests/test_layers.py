"""fastnn.layers against a NumPy reimplementation of the textbook layers they replace.

``Book*`` below is a faithful rewrite of *Deep Learning from Scratch* book 1 ``common/util.py`` (im2col/col2im)
and ``common/layers.py`` (Relu, Affine, SoftmaxWithLoss, Convolution, Pooling, BatchNormalization), and of book 2
``common/time_layers.py`` (LSTM, TimeLSTM, TimeAffine, TimeSoftmaxWithLoss), including their dtype behaviour
(im2col makes float64 columns, BatchNormalization's lazy running stats are float64, Pooling.backward is float64)
with one exception: the book's TimeLSTM hard-codes ``dtype='f'`` for ``hs``/``dxs``/the zero states; here it
uses the input dtype, so float64 runs can be compared tightly (fastnn keeps the input dtype by design).

Small networks are built from both and trained side by side with SGD; forward outputs, losses and ALL gradients
must agree at every step within ``|a - b| <= atol + rtol*|b|``.
"""
import os

import numpy as np
import pytest

import fastnn
from fastnn import layers as L

# "cuda" only on a real GPU: Numba's simulator is far too slow for these training loops
_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
BACKENDS = [b for b in ("numpy", "cpu", "cuda") if b in fastnn.backends() and not (b == "cuda" and _SIM)]
DEFAULT = os.environ.get("FASTNN_BACKEND") or "cpu"    # what backend=None picks for NumPy arrays

# ------------------------------------------------------------------------------------------ the textbook code

def book_im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_data.shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    img = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], 'constant')
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            col[:, :, y, x, :, :] = img[:, :, y:y_max:stride, x:x_max:stride]
    col = col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)
    return col


def book_col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    N, C, H, W = input_shape
    out_h = (H + 2 * pad - filter_h) // stride + 1
    out_w = (W + 2 * pad - filter_w) // stride + 1
    col = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x in range(filter_w):
            x_max = x + stride * out_w
            img[:, :, y:y_max:stride, x:x_max:stride] += col[:, :, y, x, :, :]
    return img[:, :, pad:H + pad, pad:W + pad]


def softmax(x):
    if x.ndim == 2:
        x = x - x.max(axis=1, keepdims=True)
        x = np.exp(x)
        x /= x.sum(axis=1, keepdims=True)
    elif x.ndim == 1:
        x = x - np.max(x)
        x = np.exp(x) / np.sum(np.exp(x))
    return x


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        dx = dout
        return dx


class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        out = np.dot(self.x, self.W) + self.b
        return out

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        dx = dx.reshape(*self.original_x_shape)
        return dx


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx


class BookConvolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, C, H, W = x.shape
        out_h = 1 + int((H + 2 * self.pad - FH) / self.stride)
        out_w = 1 + int((W + 2 * self.pad - FW) / self.stride)
        col = book_im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
        self.x = x
        self.col = col
        self.col_W = col_W
        return out

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout)
        self.dW = self.dW.transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        dx = book_col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)
        return dx


class BookPooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = int(1 + (H - self.pool_h) / self.stride)
        out_w = int(1 + (W - self.pool_w) / self.stride)
        col = book_im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        arg_max = np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        out = out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
        self.x = x
        self.arg_max = arg_max
        return out

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size))
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        dx = book_col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)
        return dx


class BookBatchNormalization:
    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        if x.ndim != 2:
            N, C, H, W = x.shape
            x = x.reshape(N, -1)
        out = self.__forward(x, train_flg)
        return out.reshape(*self.input_shape)

    def __forward(self, x, train_flg):
        if self.running_mean is None:
            N, D = x.shape
            self.running_mean = np.zeros(D)
            self.running_var = np.zeros(D)
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size = x.shape[0]
            self.xc = xc
            self.xn = xn
            self.std = std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = x - self.running_mean
            xn = xc / ((np.sqrt(self.running_var + 10e-7)))
        out = self.gamma * xn + self.beta
        return out

    def backward(self, dout):
        if dout.ndim != 2:
            N, C, H, W = dout.shape
            dout = dout.reshape(N, -1)
        dx = self.__backward(dout)
        dx = dx.reshape(*self.input_shape)
        return dx

    def __backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx


class BookLSTM:
    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        N, H = h_prev.shape
        A = np.dot(x, Wx) + np.dot(h_prev, Wh) + b
        f = A[:, :H]
        g = A[:, H:2 * H]
        i = A[:, 2 * H:3 * H]
        o = A[:, 3 * H:]
        f = sigmoid(f)
        g = np.tanh(g)
        i = sigmoid(i)
        o = sigmoid(o)
        c_next = f * c_prev + g * i
        h_next = o * np.tanh(c_next)
        self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        Wx, Wh, b = self.params
        x, h_prev, c_prev, i, f, g, o, c_next = self.cache
        tanh_c_next = np.tanh(c_next)
        ds = dc_next + (dh_next * o) * (1 - tanh_c_next ** 2)
        dc_prev = ds * f
        di = ds * g
        df = ds * c_prev
        do = dh_next * tanh_c_next
        dg = ds * i
        di *= i * (1 - i)
        df *= f * (1 - f)
        do *= o * (1 - o)
        dg *= (1 - g ** 2)
        dA = np.hstack((df, dg, di, do))
        dWh = np.dot(h_prev.T, dA)
        dWx = np.dot(x.T, dA)
        db = dA.sum(axis=0)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        dx = np.dot(dA, Wx.T)
        dh_prev = np.dot(dA, Wh.T)
        return dx, dh_prev, dc_prev


class BookTimeLSTM:
    def __init__(self, Wx, Wh, b, stateful=False):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.layers = None
        self.h, self.c = None, None
        self.dh = None
        self.stateful = stateful

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        H = Wh.shape[0]
        dt = xs.dtype   # the book: 'f'
        self.layers = []
        hs = np.empty((N, T, H), dtype=dt)
        if not self.stateful or self.h is None:
            self.h = np.zeros((N, H), dtype=dt)
        if not self.stateful or self.c is None:
            self.c = np.zeros((N, H), dtype=dt)
        for t in range(T):
            layer = BookLSTM(*self.params)
            self.h, self.c = layer.forward(xs[:, t, :], self.h, self.c)
            hs[:, t, :] = self.h
            self.layers.append(layer)
        return hs

    def backward(self, dhs):
        Wx, Wh, b = self.params
        N, T, H = dhs.shape
        D = Wx.shape[0]
        dxs = np.empty((N, T, D), dtype=dhs.dtype)   # the book: 'f'
        dh, dc = 0, 0
        grads = [0, 0, 0]
        for t in reversed(range(T)):
            layer = self.layers[t]
            dx, dh, dc = layer.backward(dhs[:, t, :] + dh, dc)
            dxs[:, t, :] = dx
            for i, grad in enumerate(layer.grads):
                grads[i] += grad
        for i, grad in enumerate(grads):
            self.grads[i][...] = grad
        self.dh = dh
        return dxs

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h, self.c = None, None


class TimeAffine:
    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        N, T, D = x.shape
        W, b = self.params
        rx = x.reshape(N * T, -1)
        out = np.dot(rx, W) + b
        self.x = x
        return out.reshape(N, T, -1)

    def backward(self, dout):
        x = self.x
        N, T, D = x.shape
        W, b = self.params
        dout = dout.reshape(N * T, -1)
        rx = x.reshape(N * T, -1)
        db = np.sum(dout, axis=0)
        dW = np.dot(rx.T, dout)
        dx = np.dot(dout, W.T)
        dx = dx.reshape(*x.shape)
        self.grads[0][...] = dW
        self.grads[1][...] = db
        return dx


class TimeSoftmaxWithLoss:
    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None
        self.ignore_label = -1

    def forward(self, xs, ts):
        N, T, V = xs.shape
        if ts.ndim == 3:
            ts = ts.argmax(axis=2)
        mask = (ts != self.ignore_label)
        xs = xs.reshape(N * T, V)
        ts = ts.reshape(N * T)
        mask = mask.reshape(N * T)
        ys = softmax(xs)
        ls = np.log(ys[np.arange(N * T), ts])
        ls *= mask
        loss = -np.sum(ls)
        loss /= mask.sum()
        self.cache = (ts, ys, mask, (N, T, V))
        return loss

    def backward(self, dout=1):
        ts, ys, mask, (N, T, V) = self.cache
        dx = ys
        dx[np.arange(N * T), ts] -= 1
        dx *= dout
        dx /= mask.sum()
        dx *= mask[:, np.newaxis]
        dx = dx.reshape((N, T, V))
        return dx


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
