"""The NumPy layers of *Deep Learning from Scratch* books 1 and 2, rewritten as a test oracle and benchmark baseline.

What is here (each book's names, constructors, attributes and arithmetic, written anew but computing the same
floating-point operations in the same order, so results are bit-identical to the originals):

- ``b1``: book 1 (oreilly-japan/deep-learning-from-scratch) ``common/functions.py`` (identity_function,
  step_function, sigmoid, sigmoid_grad, relu, relu_grad, softmax, sum_squared_error, cross_entropy_error,
  softmax_loss), ``common/util.py``'s ``im2col``/``col2im``/``conv_output_size`` and ``common/layers.py`` (Relu,
  Sigmoid, Affine, SoftmaxWithLoss, Dropout, BatchNormalization, Convolution, Pooling).
- ``b2``: book 2 (oreilly-japan/deep-learning-from-scratch-2) ``common/functions.py`` (sigmoid, relu, softmax,
  cross_entropy_error), ``common/layers.py`` (MatMul, Affine, Softmax, SoftmaxWithLoss, Sigmoid, SigmoidWithLoss,
  Dropout, Embedding) and ``common/time_layers.py`` (RNN, TimeRNN, LSTM, TimeLSTM, TimeEmbedding, TimeAffine,
  TimeSoftmaxWithLoss, TimeDropout, TimeBiLSTM, TimeSigmoidWithLoss, GRU, TimeGRU (the later version with a bias
  ``b``), Simple_TimeSoftmaxWithLoss, Simple_TimeAffine). Faithful to the letter, including the hard-coded
  float32 (``dtype='f'``) buffers of the Time layers (``hs``, ``dxs``, zero states, TimeEmbedding's output).
- ``b2x``: book 2 with one change: those hard-coded float32 buffers take the dtype of the input instead, so a
  float64 run stays float64 (an oracle for float64 tests; everything else identical to ``b2``).

Each is a module object: ``import book_numpy; book_numpy.b2.TimeLSTM(...)``, or, once ``book_numpy`` is imported,
``from book_numpy.b1 import Affine, Relu``. ``book1(xp)`` / ``book2(xp, time_dtype)`` build further copies, e.g.
``book2(cupy)`` for the books' GPU mode (book 2's ``common/np.py`` swaps numpy for cupy; Embedding's backward then
uses ``cupyx.scatter_add`` as the book's ``np.scatter_add``).

Import it after ``sys.path.insert(0, "<repo>/bench")``. Deliberate departures from the letter of the books: none
in ``b1``/``b2`` except ``Simple_TimeAffine.backward``, which sums the step layers' ``grads`` (the book reads
``layer.dW``, which book 2's Affine never sets, so the original raises AttributeError).
"""
import sys
import types

import numpy

__all__ = ["b1", "b2", "b2x", "book1", "book2"]


def _as_module(name, namespace, doc):
    mod = types.ModuleType(f"{__name__}.{name}", doc)
    public = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in ("xp", "time_dtype")}
    mod.__dict__.update(public)
    mod.__all__ = sorted(public)
    return mod


# ============================================================================================== book 1

def book1(xp=numpy):
    """Book 1's functions, im2col/col2im and layers as a fresh module object, on array module ``xp``."""
    np = xp

    # --------------------------------------------------------------------------------- common/functions.py
    def identity_function(x):
        return x

    def step_function(x):
        return np.array(x > 0, dtype=int)

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def sigmoid_grad(x):
        return (1.0 - sigmoid(x)) * sigmoid(x)

    def relu(x):
        return np.maximum(0, x)

    def relu_grad(x):
        g = np.zeros_like(x)
        g[x >= 0] = 1
        return g

    def softmax(x):
        shifted = x - np.max(x, axis=-1, keepdims=True)      # guards exp against overflow
        return np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)

    def sum_squared_error(y, t):
        return 0.5 * np.sum((y - t) ** 2)

    def cross_entropy_error(y, t):
        if y.ndim == 1:                       # one sample: make it a batch of one
            t = t.reshape(1, t.size)
            y = y.reshape(1, y.size)
        if t.size == y.size:                  # one-hot targets -> class indices
            t = t.argmax(axis=1)
        n = y.shape[0]
        return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n

    def softmax_loss(X, t):
        return cross_entropy_error(softmax(X), t)

    # ------------------------------------------------------------------------------------- common/util.py
    def conv_output_size(input_size, filter_size, stride=1, pad=0):
        return (input_size + 2 * pad - filter_size) / stride + 1

    def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
        N, C, H, W = input_data.shape
        oh = (H + 2 * pad - filter_h) // stride + 1
        ow = (W + 2 * pad - filter_w) // stride + 1
        padded = np.pad(input_data, [(0, 0), (0, 0), (pad, pad), (pad, pad)], 'constant')
        cols = np.zeros((N, C, filter_h, filter_w, oh, ow))          # float64, whatever the input
        for ky in range(filter_h):
            for kx in range(filter_w):
                cols[:, :, ky, kx, :, :] = padded[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
        return cols.transpose(0, 4, 5, 1, 2, 3).reshape(N * oh * ow, -1)

    def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
        N, C, H, W = input_shape
        oh = (H + 2 * pad - filter_h) // stride + 1
        ow = (W + 2 * pad - filter_w) // stride + 1
        cols = col.reshape(N, oh, ow, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
        img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
        for ky in range(filter_h):
            for kx in range(filter_w):
                img[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += cols[:, :, ky, kx, :, :]
        return img[:, :, pad:H + pad, pad:W + pad]

    # ----------------------------------------------------------------------------------- common/layers.py
    class Relu:
        def __init__(self):
            self.mask = None

        def forward(self, x):
            self.mask = (x <= 0)
            out = x.copy()
            out[self.mask] = 0
            return out

        def backward(self, dout):
            dout[self.mask] = 0                 # the book zeroes dout in place and returns it
            return dout

    class Sigmoid:
        def __init__(self):
            self.out = None

        def forward(self, x):
            self.out = sigmoid(x)
            return self.out

        def backward(self, dout):
            return dout * (1.0 - self.out) * self.out

    class Affine:
        def __init__(self, W, b):
            self.W, self.b = W, b
            self.x = None
            self.original_x_shape = None
            self.dW = None
            self.db = None

        def forward(self, x):
            self.original_x_shape = x.shape     # tensors are flattened per sample
            self.x = x.reshape(x.shape[0], -1)
            return np.dot(self.x, self.W) + self.b

        def backward(self, dout):
            dx = np.dot(dout, self.W.T)
            self.dW = np.dot(self.x.T, dout)
            self.db = np.sum(dout, axis=0)
            return dx.reshape(*self.original_x_shape)

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

        def backward(self, dout=1):             # dout is not used (the book's gradient is for dout == 1)
            n = self.t.shape[0]
            if self.t.size == self.y.size:      # one-hot
                return (self.y - self.t) / n
            dx = self.y.copy()
            dx[np.arange(n), self.t] -= 1
            return dx / n

    class Dropout:
        def __init__(self, dropout_ratio=0.5):
            self.dropout_ratio = dropout_ratio
            self.mask = None

        def forward(self, x, train_flg=True):
            if train_flg:
                self.mask = np.random.rand(*x.shape) > self.dropout_ratio
                return x * self.mask
            return x * (1.0 - self.dropout_ratio)   # book 1/2 Dropout: scaled at test time

        def backward(self, dout):
            return dout * self.mask

    class BatchNormalization:
        def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
            self.gamma, self.beta = gamma, beta
            self.momentum = momentum
            self.input_shape = None
            self.running_mean, self.running_var = running_mean, running_var
            self.batch_size = None
            self.xc = None
            self.std = None
            self.dgamma = None
            self.dbeta = None

        def forward(self, x, train_flg=True):
            self.input_shape = x.shape
            if x.ndim != 2:
                N, C, H, W = x.shape            # the book only knows 2-D and 4-D inputs
                x = x.reshape(N, -1)
            return self._forward(x, train_flg).reshape(*self.input_shape)

        def _forward(self, x, train_flg):
            if self.running_mean is None:
                D = x.shape[1]
                self.running_mean = np.zeros(D)
                self.running_var = np.zeros(D)
            if train_flg:
                mu = x.mean(axis=0)
                xc = x - mu
                var = np.mean(xc ** 2, axis=0)
                std = np.sqrt(var + 10e-7)
                xn = xc / std
                self.batch_size = x.shape[0]
                self.xc, self.xn, self.std = xc, xn, std
                m = self.momentum
                self.running_mean = m * self.running_mean + (1 - m) * mu
                self.running_var = m * self.running_var + (1 - m) * var
            else:
                xc = x - self.running_mean
                xn = xc / ((np.sqrt(self.running_var + 10e-7)))
            return self.gamma * xn + self.beta

        def backward(self, dout):
            if dout.ndim != 2:
                N, C, H, W = dout.shape
                dout = dout.reshape(N, -1)
            return self._backward(dout).reshape(*self.input_shape)

        def _backward(self, dout):
            dbeta = dout.sum(axis=0)
            dgamma = np.sum(self.xn * dout, axis=0)
            dxn = self.gamma * dout
            dxc = dxn / self.std
            dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
            dvar = 0.5 * dstd / self.std
            dxc += (2.0 / self.batch_size) * self.xc * dvar
            dmu = np.sum(dxc, axis=0)
            dx = dxc - dmu / self.batch_size
            self.dgamma, self.dbeta = dgamma, dbeta
            return dx

    class Convolution:
        def __init__(self, W, b, stride=1, pad=0):
            self.W, self.b = W, b
            self.stride, self.pad = stride, pad
            self.x = None
            self.col = None
            self.col_W = None
            self.dW = None
            self.db = None

        def forward(self, x):
            FN, C, FH, FW = self.W.shape
            N, C, H, W = x.shape
            oh = 1 + int((H + 2 * self.pad - FH) / self.stride)
            ow = 1 + int((W + 2 * self.pad - FW) / self.stride)
            col = im2col(x, FH, FW, self.stride, self.pad)
            col_W = self.W.reshape(FN, -1).T
            out = np.dot(col, col_W) + self.b
            out = out.reshape(N, oh, ow, -1).transpose(0, 3, 1, 2)     # a transposed view, as in the book
            self.x, self.col, self.col_W = x, col, col_W
            return out

        def backward(self, dout):
            FN, C, FH, FW = self.W.shape
            dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
            self.db = np.sum(dout, axis=0)
            self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
            dcol = np.dot(dout, self.col_W.T)
            return col2im(dcol, self.x.shape, FH, FW, self.stride, self.pad)

    class Pooling:
        def __init__(self, pool_h, pool_w, stride=1, pad=0):
            self.pool_h, self.pool_w = pool_h, pool_w
            self.stride, self.pad = stride, pad
            self.x = None
            self.arg_max = None

        def forward(self, x):
            N, C, H, W = x.shape
            oh = int(1 + (H - self.pool_h) / self.stride)     # the book ignores pad here
            ow = int(1 + (W - self.pool_w) / self.stride)
            col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
            col = col.reshape(-1, self.pool_h * self.pool_w)
            self.arg_max = np.argmax(col, axis=1)
            out = np.max(col, axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2)
            self.x = x
            return out

        def backward(self, dout):
            dout = dout.transpose(0, 2, 3, 1)
            k = self.pool_h * self.pool_w
            dmax = np.zeros((dout.size, k))
            dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
            dmax = dmax.reshape(dout.shape + (k,))
            dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
            return col2im(dcol, self.x.shape, self.pool_h, self.pool_w, self.stride, self.pad)

    return _as_module("b1", locals(), "Book 1: common/functions.py, common/util.py (im2col), common/layers.py")


# ============================================================================================== book 2

def book2(xp=numpy, time_dtype='f'):
    """Book 2's functions, layers and time layers as a fresh module object, on array module ``xp``.

    time_dtype: the dtype of the buffers the book's Time layers allocate ('f' = float32, as the book); None makes
    them take the dtype of the input they are filled from.
    """
    np = xp

    def _buf_dtype(like):
        return time_dtype if time_dtype is not None else like.dtype

    # --------------------------------------------------------------------------------- common/functions.py
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def relu(x):
        return np.maximum(0, x)

    def softmax(x):
        if x.ndim == 2:
            x = x - x.max(axis=1, keepdims=True)
            x = np.exp(x)
            x /= x.sum(axis=1, keepdims=True)
        elif x.ndim == 1:
            x = x - np.max(x)
            x = np.exp(x) / np.sum(np.exp(x))
        return x                                 # other ndims come back unchanged (as in the book)

    def cross_entropy_error(y, t):
        if y.ndim == 1:
            t = t.reshape(1, t.size)
            y = y.reshape(1, y.size)
        if t.size == y.size:
            t = t.argmax(axis=1)
        n = y.shape[0]
        return -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n

    # ----------------------------------------------------------------------------------- common/layers.py
    class MatMul:
        def __init__(self, W):
            self.params = [W]
            self.grads = [np.zeros_like(W)]
            self.x = None

        def forward(self, x):
            W, = self.params
            self.x = x
            return np.dot(x, W)

        def backward(self, dout):
            W, = self.params
            dx = np.dot(dout, W.T)
            self.grads[0][...] = np.dot(self.x.T, dout)
            return dx

    class Affine:
        def __init__(self, W, b):
            self.params = [W, b]
            self.grads = [np.zeros_like(W), np.zeros_like(b)]
            self.x = None

        def forward(self, x):
            W, b = self.params
            self.x = x
            return np.dot(x, W) + b

        def backward(self, dout):
            W, b = self.params
            dx = np.dot(dout, W.T)
            dW = np.dot(self.x.T, dout)
            db = np.sum(dout, axis=0)
            self.grads[0][...] = dW
            self.grads[1][...] = db
            return dx

    class Softmax:
        def __init__(self):
            self.params, self.grads = [], []
            self.out = None

        def forward(self, x):
            self.out = softmax(x)
            return self.out

        def backward(self, dout):
            dx = self.out * dout
            s = np.sum(dx, axis=1, keepdims=True)
            dx -= self.out * s
            return dx

    class SoftmaxWithLoss:
        def __init__(self):
            self.params, self.grads = [], []
            self.y = None
            self.t = None

        def forward(self, x, t):
            self.t = t
            self.y = softmax(x)
            if self.t.size == self.y.size:       # one-hot -> indices (kept as self.t)
                self.t = self.t.argmax(axis=1)
            return cross_entropy_error(self.y, self.t)

        def backward(self, dout=1):
            n = self.t.shape[0]
            dx = self.y.copy()
            dx[np.arange(n), self.t] -= 1
            dx *= dout
            dx = dx / n
            return dx

    class Sigmoid:
        def __init__(self):
            self.params, self.grads = [], []
            self.out = None

        def forward(self, x):
            self.out = 1 / (1 + np.exp(-x))
            return self.out

        def backward(self, dout):
            return dout * (1.0 - self.out) * self.out

    class SigmoidWithLoss:
        def __init__(self):
            self.params, self.grads = [], []
            self.loss = None
            self.y = None
            self.t = None

        def forward(self, x, t):
            self.t = t
            self.y = 1 / (1 + np.exp(-x))
            # two-class probabilities [1 - y, y] scored with the label as the column index
            self.loss = cross_entropy_error(np.c_[1 - self.y, self.y], self.t)
            return self.loss

        def backward(self, dout=1):
            n = self.t.shape[0]
            return (self.y - self.t) * dout / n

    class Dropout:
        def __init__(self, dropout_ratio=0.5):
            self.params, self.grads = [], []
            self.dropout_ratio = dropout_ratio
            self.mask = None

        def forward(self, x, train_flg=True):
            if train_flg:
                self.mask = np.random.rand(*x.shape) > self.dropout_ratio
                return x * self.mask
            return x * (1.0 - self.dropout_ratio)

        def backward(self, dout):
            return dout * self.mask

    def _scatter_add(dW, idx, dout):
        if np is numpy:
            np.add.at(dW, idx, dout)
        else:                                    # the book's GPU branch (np.scatter_add of old CuPy)
            import cupyx
            cupyx.scatter_add(dW, idx, dout)

    class Embedding:
        def __init__(self, W):
            self.params = [W]
            self.grads = [np.zeros_like(W)]
            self.idx = None

        def forward(self, idx):
            W, = self.params
            self.idx = idx
            return W[idx]

        def backward(self, dout):
            dW, = self.grads
            dW[...] = 0
            _scatter_add(dW, self.idx, dout)
            return None

    # ------------------------------------------------------------------------------ common/time_layers.py
    class RNN:
        def __init__(self, Wx, Wh, b):
            self.params = [Wx, Wh, b]
            self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
            self.cache = None

        def forward(self, x, h_prev):
            Wx, Wh, b = self.params
            h_next = np.tanh(np.dot(h_prev, Wh) + np.dot(x, Wx) + b)     # (the book adds h @ Wh first)
            self.cache = (x, h_prev, h_next)
            return h_next

        def backward(self, dh_next):
            Wx, Wh, b = self.params
            x, h_prev, h_next = self.cache
            da = dh_next * (1 - h_next ** 2)
            db = np.sum(da, axis=0)
            dWh = np.dot(h_prev.T, da)
            dh_prev = np.dot(da, Wh.T)
            dWx = np.dot(x.T, da)
            dx = np.dot(da, Wx.T)
            self.grads[0][...] = dWx
            self.grads[1][...] = dWh
            self.grads[2][...] = db
            return dx, dh_prev

    class TimeRNN:
        def __init__(self, Wx, Wh, b, stateful=False):
            self.params = [Wx, Wh, b]
            self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
            self.layers = None
            self.h, self.dh = None, None
            self.stateful = stateful

        def forward(self, xs):
            Wx, Wh, b = self.params
            N, T, D = xs.shape
            D, H = Wx.shape
            self.layers = []
            hs = np.empty((N, T, H), dtype=_buf_dtype(xs))
            if not self.stateful or self.h is None:
                self.h = np.zeros((N, H), dtype=_buf_dtype(xs))
            for t in range(T):
                step = RNN(*self.params)
                self.h = step.forward(xs[:, t, :], self.h)
                hs[:, t, :] = self.h
                self.layers.append(step)
            return hs

        def backward(self, dhs):
            Wx, Wh, b = self.params
            N, T, H = dhs.shape
            D, H = Wx.shape
            dxs = np.empty((N, T, D), dtype=_buf_dtype(dhs))
            dh = 0
            total = [0, 0, 0]
            for t in reversed(range(T)):
                step = self.layers[t]
                dx, dh = step.backward(dhs[:, t, :] + dh)
                dxs[:, t, :] = dx
                for k, g in enumerate(step.grads):
                    total[k] += g
            for k, g in enumerate(total):
                self.grads[k][...] = g
            self.dh = dh
            return dxs

        def set_state(self, h):
            self.h = h

        def reset_state(self):
            self.h = None

    class LSTM:
        def __init__(self, Wx, Wh, b):
            self.params = [Wx, Wh, b]           # the four gate blocks side by side: f, g, i, o
            self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
            self.cache = None

        def forward(self, x, h_prev, c_prev):
            Wx, Wh, b = self.params
            N, H = h_prev.shape
            A = np.dot(x, Wx) + np.dot(h_prev, Wh) + b
            f = sigmoid(A[:, :H])
            g = np.tanh(A[:, H:2 * H])
            i = sigmoid(A[:, 2 * H:3 * H])
            o = sigmoid(A[:, 3 * H:])
            c_next = f * c_prev + g * i
            h_next = o * np.tanh(c_next)
            self.cache = (x, h_prev, c_prev, i, f, g, o, c_next)
            return h_next, c_next

        def backward(self, dh_next, dc_next):
            Wx, Wh, b = self.params
            x, h_prev, c_prev, i, f, g, o, c_next = self.cache
            tc = np.tanh(c_next)
            ds = dc_next + (dh_next * o) * (1 - tc ** 2)
            dc_prev = ds * f
            di = ds * g
            df = ds * c_prev
            do = dh_next * tc
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

    class TimeLSTM:
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
            self.layers = []
            hs = np.empty((N, T, H), dtype=_buf_dtype(xs))
            if not self.stateful or self.h is None:
                self.h = np.zeros((N, H), dtype=_buf_dtype(xs))
            if not self.stateful or self.c is None:
                self.c = np.zeros((N, H), dtype=_buf_dtype(xs))
            for t in range(T):
                step = LSTM(*self.params)
                self.h, self.c = step.forward(xs[:, t, :], self.h, self.c)
                hs[:, t, :] = self.h
                self.layers.append(step)
            return hs

        def backward(self, dhs):
            Wx, Wh, b = self.params
            N, T, H = dhs.shape
            D = Wx.shape[0]
            dxs = np.empty((N, T, D), dtype=_buf_dtype(dhs))
            dh, dc = 0, 0
            total = [0, 0, 0]
            for t in reversed(range(T)):
                step = self.layers[t]
                dx, dh, dc = step.backward(dhs[:, t, :] + dh, dc)
                dxs[:, t, :] = dx
                for k, g in enumerate(step.grads):
                    total[k] += g
            for k, g in enumerate(total):
                self.grads[k][...] = g
            self.dh = dh
            return dxs

        def set_state(self, h, c=None):
            self.h, self.c = h, c

        def reset_state(self):
            self.h, self.c = None, None

    class TimeEmbedding:
        def __init__(self, W):
            self.params = [W]
            self.grads = [np.zeros_like(W)]
            self.layers = None
            self.W = W

        def forward(self, xs):
            N, T = xs.shape
            V, D = self.W.shape
            out = np.empty((N, T, D), dtype=_buf_dtype(self.W))
            self.layers = []
            for t in range(T):
                step = Embedding(self.W)
                out[:, t, :] = step.forward(xs[:, t])
                self.layers.append(step)
            return out

        def backward(self, dout):
            N, T, D = dout.shape
            total = 0
            for t in range(T):
                step = self.layers[t]
                step.backward(dout[:, t, :])
                total += step.grads[0]
            self.grads[0][...] = total
            return None

    class TimeAffine:
        def __init__(self, W, b):
            self.params = [W, b]
            self.grads = [np.zeros_like(W), np.zeros_like(b)]
            self.x = None

        def forward(self, x):
            N, T, D = x.shape
            W, b = self.params
            out = np.dot(x.reshape(N * T, -1), W) + b
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
            dx = np.dot(dout, W.T).reshape(*x.shape)
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
            if ts.ndim == 3:                     # one-hot labels
                ts = ts.argmax(axis=2)
            mask = (ts != self.ignore_label)
            xs = xs.reshape(N * T, V)
            ts = ts.reshape(N * T)
            mask = mask.reshape(N * T)
            ys = softmax(xs)
            ls = np.log(ys[np.arange(N * T), ts])   # no 1e-7 here, unlike cross_entropy_error
            ls *= mask
            loss = -np.sum(ls)
            loss /= mask.sum()
            self.cache = (ts, ys, mask, (N, T, V))
            return loss

        def backward(self, dout=1):
            ts, ys, mask, (N, T, V) = self.cache
            dx = ys                               # (the book reuses ys in place)
            dx[np.arange(N * T), ts] -= 1
            dx *= dout
            dx /= mask.sum()
            dx *= mask[:, np.newaxis]
            return dx.reshape((N, T, V))

    class TimeDropout:
        def __init__(self, dropout_ratio=0.5):
            self.params, self.grads = [], []
            self.dropout_ratio = dropout_ratio
            self.mask = None
            self.train_flg = True

        def forward(self, xs):
            if self.train_flg:
                keep = np.random.rand(*xs.shape) > self.dropout_ratio
                scale = 1 / (1.0 - self.dropout_ratio)
                self.mask = keep.astype(np.float32) * scale    # a float32 mask (scale rounded to float32)
                return xs * self.mask
            return xs                                           # inverted dropout: nothing at test time

        def backward(self, dout):
            return dout * self.mask

    class TimeBiLSTM:
        def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False):
            self.forward_lstm = TimeLSTM(Wx1, Wh1, b1, stateful)
            self.backward_lstm = TimeLSTM(Wx2, Wh2, b2, stateful)
            self.params = self.forward_lstm.params + self.backward_lstm.params
            self.grads = self.forward_lstm.grads + self.backward_lstm.grads

        def forward(self, xs):
            o1 = self.forward_lstm.forward(xs)
            o2 = self.backward_lstm.forward(xs[:, ::-1])[:, ::-1]
            return np.concatenate((o1, o2), axis=2)

        def backward(self, dhs):
            H = dhs.shape[2] // 2
            d1, d2 = dhs[:, :, :H], dhs[:, :, H:]
            dxs1 = self.forward_lstm.backward(d1)
            dxs2 = self.backward_lstm.backward(d2[:, ::-1])[:, ::-1]
            return dxs1 + dxs2

    class TimeSigmoidWithLoss:
        def __init__(self):
            self.params, self.grads = [], []
            self.xs_shape = None
            self.layers = None

        def forward(self, xs, ts):
            N, T = xs.shape
            self.xs_shape = xs.shape
            self.layers = []
            loss = 0
            for t in range(T):
                step = SigmoidWithLoss()
                loss += step.forward(xs[:, t], ts[:, t])
                self.layers.append(step)
            return loss / T

        def backward(self, dout=1):
            N, T = self.xs_shape
            dxs = np.empty(self.xs_shape, dtype=time_dtype if time_dtype is not None else
                           self.layers[0].y.dtype)
            dout *= 1 / T
            for t in range(T):
                dxs[:, t] = self.layers[t].backward(dout)
            return dxs

    class GRU:
        def __init__(self, Wx, Wh, b):
            self.params = [Wx, Wh, b]           # gate blocks z, r, h~
            self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
            self.cache = None

        def forward(self, x, h_prev):
            Wx, Wh, b = self.params
            H = Wh.shape[0]
            Wxz, Wxr, Wxh = Wx[:, :H], Wx[:, H:2 * H], Wx[:, 2 * H:]
            Whz, Whr, Whh = Wh[:, :H], Wh[:, H:2 * H], Wh[:, 2 * H:]
            bz, br, bh = b[:H], b[H:2 * H], b[2 * H:]
            z = sigmoid(np.dot(x, Wxz) + np.dot(h_prev, Whz) + bz)
            r = sigmoid(np.dot(x, Wxr) + np.dot(h_prev, Whr) + br)
            h_hat = np.tanh(np.dot(x, Wxh) + np.dot(r * h_prev, Whh) + bh)
            h_next = (1 - z) * h_prev + z * h_hat
            self.cache = (x, h_prev, z, r, h_hat)
            return h_next

        def backward(self, dh_next):
            Wx, Wh, b = self.params
            H = Wh.shape[0]
            Wxz, Wxr, Wxh = Wx[:, :H], Wx[:, H:2 * H], Wx[:, 2 * H:]
            Whz, Whr, Whh = Wh[:, :H], Wh[:, H:2 * H], Wh[:, 2 * H:]
            x, h_prev, z, r, h_hat = self.cache

            dh_hat = dh_next * z
            dh_prev = dh_next * (1 - z)
            # candidate (tanh)
            da = dh_hat * (1 - h_hat ** 2)
            dbh = np.sum(da, axis=0)
            dWhh = np.dot((r * h_prev).T, da)
            dhr = np.dot(da, Whh.T)
            dWxh = np.dot(x.T, da)
            dx = np.dot(da, Wxh.T)
            dh_prev += r * dhr
            # update gate z
            dz = dh_next * h_hat - dh_next * h_prev
            da = dz * z * (1 - z)
            dbz = np.sum(da, axis=0)
            dWhz = np.dot(h_prev.T, da)
            dh_prev += np.dot(da, Whz.T)
            dWxz = np.dot(x.T, da)
            dx += np.dot(da, Wxz.T)
            # reset gate r
            dr = dhr * h_prev
            da = dr * r * (1 - r)
            dbr = np.sum(da, axis=0)
            dWhr = np.dot(h_prev.T, da)
            dh_prev += np.dot(da, Whr.T)
            dWxr = np.dot(x.T, da)
            dx += np.dot(da, Wxr.T)

            self.dWx = np.hstack((dWxz, dWxr, dWxh))
            self.dWh = np.hstack((dWhz, dWhr, dWhh))
            self.db = np.hstack((dbz, dbr, dbh))
            self.grads[0][...] = self.dWx
            self.grads[1][...] = self.dWh
            self.grads[2][...] = self.db
            return dx, dh_prev

    class TimeGRU:
        def __init__(self, Wx, Wh, b, stateful=False):
            self.params = [Wx, Wh, b]
            self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
            self.layers = None
            self.h, self.dh = None, None
            self.stateful = stateful

        def forward(self, xs):
            Wx, Wh, b = self.params
            N, T, D = xs.shape
            H = Wh.shape[0]
            self.layers = []
            hs = np.empty((N, T, H), dtype=_buf_dtype(xs))
            if not self.stateful or self.h is None:
                self.h = np.zeros((N, H), dtype=_buf_dtype(xs))
            for t in range(T):
                step = GRU(*self.params)
                self.h = step.forward(xs[:, t, :], self.h)
                hs[:, t, :] = self.h
                self.layers.append(step)
            return hs

        def backward(self, dhs):
            Wx, Wh, b = self.params
            N, T, H = dhs.shape
            D = Wx.shape[0]
            dxs = np.empty((N, T, D), dtype=_buf_dtype(dhs))
            dh = 0
            total = [0, 0, 0]
            for t in reversed(range(T)):
                step = self.layers[t]
                dx, dh = step.backward(dhs[:, t, :] + dh)
                dxs[:, t, :] = dx
                for k, g in enumerate(step.grads):
                    total[k] += g
            for k, g in enumerate(total):
                self.grads[k][...] = g
            self.dh = dh
            return dxs

        def set_state(self, h):
            self.h = h

        def reset_state(self):
            self.h = None

    class Simple_TimeSoftmaxWithLoss:
        def __init__(self):
            self.params, self.grads = [], []
            self.cache = None

        def forward(self, xs, ts):
            N, T, V = xs.shape
            steps = []
            loss = 0
            for t in range(T):
                step = SoftmaxWithLoss()
                loss += step.forward(xs[:, t, :], ts[:, t])
                steps.append(step)
            loss /= T
            self.cache = (steps, xs)
            return loss

        def backward(self, dout=1):
            steps, xs = self.cache
            dxs = np.empty(xs.shape, dtype=_buf_dtype(xs))
            dout *= 1 / xs.shape[1]
            for t, step in enumerate(steps):
                dxs[:, t, :] = step.backward(dout)
            return dxs

    class Simple_TimeAffine:
        def __init__(self, W, b):
            self.W, self.b = W, b
            self.dW, self.db = None, None
            self.layers = None

        def forward(self, xs):
            N, T, D = xs.shape
            D, M = self.W.shape
            self.layers = []
            out = np.empty((N, T, M), dtype=_buf_dtype(xs))
            for t in range(T):
                step = Affine(self.W, self.b)
                out[:, t, :] = step.forward(xs[:, t, :])
                self.layers.append(step)
            return out

        def backward(self, dout):
            N, T, M = dout.shape
            D, M = self.W.shape
            dxs = np.empty((N, T, D), dtype=_buf_dtype(dout))
            self.dW, self.db = 0, 0
            for t in range(T):
                step = self.layers[t]
                dxs[:, t, :] = step.backward(dout[:, t, :])
                self.dW += step.grads[0]          # (the book reads layer.dW, which its Affine never sets)
                self.db += step.grads[1]
            return dxs

    return _as_module("b2", locals(), "Book 2: common/functions.py, common/layers.py, common/time_layers.py")


b1 = book1()
b2 = book2()
b2x = book2(time_dtype=None)
b2x.__name__ = f"{__name__}.b2x"
for _m in (b1, b2, b2x):           # so that `from book_numpy.b2 import TimeLSTM` works after `import book_numpy`
    sys.modules[_m.__name__] = _m
