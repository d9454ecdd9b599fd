"""Drop-in layers for NumPy deep-learning code written after *Deep Learning from Scratch* (books 1 and 2).

Every layer class of book 1's ``common/layers.py`` and of book 2's ``common/layers.py`` and
``common/time_layers.py``, with the same constructor arguments, ``forward``/``backward`` signatures, public
attributes and numbers (to float tolerance): ``Relu``, ``Sigmoid``, ``Softmax``, ``Affine``, ``MatMul``,
``SoftmaxWithLoss``, ``SigmoidWithLoss``, ``Dropout``, ``Embedding``, ``BatchNormalization``, ``Convolution``,
``Pooling``, ``RNN``, ``TimeRNN``, ``LSTM``, ``TimeLSTM``, ``GRU``, ``TimeGRU``, ``TimeEmbedding``, ``TimeAffine``,
``TimeSoftmaxWithLoss``, ``TimeSigmoidWithLoss``, ``TimeDropout``, ``TimeBiLSTM``. Swapping the import is the only
change a network of either book needs::

    # from common.layers import *
    # from common.time_layers import *
    from fastnn.layers import *

(``fastnn.functions`` is the matching drop-in for ``common/functions.py``.) Where the two books have a class of the
same name, one class serves both: ``Affine`` keeps book 2's ``params``/``grads`` lists and book 1's ``W``, ``b``,
``dW``, ``db`` as aliases of the same arrays, ``SoftmaxWithLoss`` takes both books' label forms; book 1's and
book 2's ``Dropout`` are the same class (scaled at test time), book 2's ``TimeDropout`` is the inverted one. Book 2
style gradients are written IN PLACE into ``grads[i][...]``, so optimizers, ``params``/``grads`` lists collected
by a model, and the Trainer's weight sharing (tied embedding/affine weights) keep working.

The work is done by the public fastnn API (``fastnn.linear``, ``fastnn.softmax_cross_entropy``, ``fastnn.conv2d``,
``fastnn.lstm``, ``fastnn.gru``, ...), so a layer runs on whatever backend fits its arrays: NumPy arrays go to the
C++ ``cpu`` backend, CuPy (or other ``__cuda_array_interface__``) arrays stay on the GPU and go to the ``cuda``
backend. Every layer also takes a keyword-only ``backend=None`` (``"numpy"``, ``"cpu"``, ``"cuda"``) that is
passed to every call, e.g. to time the same network on the NumPy reference. Dropout layers draw their masks from
``np.random`` as the books do (same seed, same numbers) unless given ``seed=`` (fastnn's counter-based generator).

Differences from the originals (all deliberate, each also said in the class docstring):

- dtypes: the computation runs in the promoted dtype of the input and the parameters (as NumPy's operators
  would: float32 input with float64 weights computes in float64, as the book does). The originals' silent dtype
  changes are not reproduced: float32 convolutions stay float32 (the book's im2col makes float64 columns),
  Pooling's backward returns the dtype of ``dout`` (the book's is float64), lazily created running statistics
  have the compute dtype (the book's are float64), book 2's Time layers keep the dtype of their inputs (the book
  hard-codes float32 for ``hs``/``dxs``/states and TimeEmbedding's output). Gradients written into ``grads`` keep
  the dtype of their parameter (book 2's behaviour; book 1's ``dW`` could be wider).
- Intermediate arrays that only the backward pass of the original needed (``Convolution.col``,
  ``Pooling.arg_max``, ``BatchNormalization.xc``/``xn``/``std``, ``Relu.mask``, ``LSTM.cache``, ``RNN.cache``,
  ``GRU.cache``, ``TimeSoftmaxWithLoss.cache``, the Time layers' per-step ``layers``) are not stored; they are
  properties computed on demand from what the fast kernels keep, with the book's shapes and values.
- ``backward`` never modifies its argument (book 1's Relu zeroes ``dout`` in place); losses are Python floats;
  a TimeSoftmaxWithLoss batch whose labels are all ignored gives loss 0 (the book's 0/0).
- ``Pooling`` with ``pad > 0``: see its docstring (the book's output-size formula ignores ``pad``).
"""
import math

import numpy as np

import fastnn as _F
from fastnn import _dispatch
from fastnn._shapes import pair as _pair

__all__ = ["Convolution", "Pooling", "BatchNormalization", "LSTM", "TimeLSTM",
           # the layers of issue #19 (book 1 common/layers.py, book 2 common/layers.py and common/time_layers.py)
           "Relu", "Sigmoid", "Softmax", "Affine", "MatMul", "TimeAffine", "Embedding", "TimeEmbedding", "Dropout",
           "TimeDropout", "SoftmaxWithLoss", "SigmoidWithLoss", "TimeSigmoidWithLoss", "TimeSoftmaxWithLoss",
           "RNN", "TimeRNN", "GRU", "TimeGRU", "TimeBiLSTM"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ------------------------------------------------------------------------------------------------------ helpers

def _xp(a):
    """The array module of ``a``: cupy for CuPy arrays (imported only then), else numpy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return np


def _dtype(*arrays):
    """The dtype NumPy's operators would compute in, restricted to the float32/float64 that the kernels take."""
    dt = None
    for a in arrays:    # fast path: every array float32, or every array float64 (the layers' common case)
        if a is not None:
            d = getattr(a, "dtype", None)
            if d is None or (dt is not None and d != dt):
                break
            dt = d
    else:
        if dt in _FLOATS:
            return dt
    dts = [a.dtype for a in arrays if a is not None and hasattr(a, "dtype")]
    dt = np.result_type(*dts) if dts else np.dtype(np.float64)
    if dt in _FLOATS:
        return dt
    return np.dtype(np.float32) if dt == np.float16 else np.dtype(np.float64)


def _cast(a, dt):
    """``a`` in dtype ``dt`` (no copy when it already is); None stays None."""
    if a is None or a.dtype == dt:
        return a
    return a.astype(dt)


def _vector(v, size, dt, xp=np):
    """A per-feature parameter as the (size,) contiguous vector the kernels take (scalars are broadcast)."""
    if v is None:
        return None
    v = _cast(xp.asarray(v), dt)
    if v.size == 1 and size != 1:
        return xp.full((size,), v.reshape(()), dtype=dt)
    return xp.ascontiguousarray(v.reshape(size))


def _state(v, shape, dt):
    """An LSTM state/gradient argument: None or 0 (as the book's ``dh, dc = 0, 0``) mean zeros, a non-zero
    scalar is broadcast, an array is cast to ``dt``."""
    if v is None:
        return None
    if np.isscalar(v) or getattr(v, "ndim", None) == 0:
        if float(v) == 0.0:
            return None
        return np.full(shape, v, dtype=dt)
    return _cast(v, dt)


# --------------------------------------------------------------------------------------------------- Convolution

class Convolution:
    """Book 1's ``Convolution(W, b, stride=1, pad=0)``: ``W`` (FN, C, FH, FW), ``b`` (FN,).

    ``forward(x)`` -> ``(N, FN, OH, OW)``; ``backward(dout)`` -> ``dx`` and sets ``dW`` (shape of ``W``) and ``db``
    ((FN,)). ``W`` and ``b`` are read at every forward (optimizers may update them in place or rebind them).

    Attributes as in the book: ``W``, ``b``, ``stride``, ``pad``, ``x`` (the last input), ``dW``, ``db``.
    ``col`` (the im2col matrix, (N*OH*OW, C*FH*FW)) is not kept by the fast kernel: reading ``layer.col`` computes
    it from ``x``. ``col_W`` is ``W.reshape(FN, -1).T`` (a view, as in the book). Differences: the output is a
    contiguous array (the book returns a transposed view); float32 ``x`` and ``W`` stay float32 (the book's
    im2col builds float64 columns, so its output and gradients are float64 whatever the input); ``x`` and ``W``
    of different float dtypes compute in the wider one, as the book's ``np.dot`` does.
    """

    def __init__(self, W, b, stride=1, pad=0, *, backend=None):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.backend = backend
        # kept for backward, as in the book
        self.x = None
        # gradients
        self.dW = None
        self.db = None
        self._xk = self._Wk = None   # x and W as the kernels saw them (cast to the compute dtype)

    @property
    def col(self):
        """The book's im2col matrix of the last input (computed on demand)."""
        if self.x is None:
            return None
        _, _, FH, FW = self.W.shape
        return _F.im2col(self._xk, (FH, FW), self.stride, self.pad, backend=self.backend)

    @property
    def col_W(self):
        """``W.reshape(FN, -1).T`` as in the book (None before the first forward)."""
        if self.x is None:
            return None
        return self.W.reshape(self.W.shape[0], -1).T

    def forward(self, x):
        W, b = self.W, self.b
        dt = _dtype(x, W, b)
        FN = W.shape[0]
        xk, Wk = _cast(x, dt), _cast(W, dt)
        out = _F.conv2d(xk, Wk, _vector(b, FN, dt, _xp(x)), stride=self.stride, padding=self.pad,
                        backend=self.backend)
        self.x = x
        self._xk, self._Wk = xk, Wk
        return out

    def backward(self, dout):
        dt = _dtype(self._xk, dout)   # a wider dout widens the gradients, as np.dot would
        dx, dW, db = _F.conv2d_backward(_cast(dout, dt), _cast(self._xk, dt), _cast(self._Wk, dt),
                                        stride=self.stride, padding=self.pad, backend=self.backend)
        self.dW = dW
        self.db = db
        return dx


# ------------------------------------------------------------------------------------------------------ Pooling

class Pooling:
    """Book 1's max ``Pooling(pool_h, pool_w, stride=1, pad=0)``.

    ``forward(x)`` -> ``(N, C, OH, OW)`` window maxima (the first maximum in row-major window order wins, as the
    book's ``np.argmax``); ``backward(dout)`` -> ``dx`` (overlapping windows accumulate, as the book's col2im).

    Attributes as in the book: ``pool_h``, ``pool_w``, ``stride``, ``pad``, ``x``; ``arg_max`` (the book's flat
    array of in-window argmax positions, ordered (n, oh, ow, c)) is computed on demand from the kernel's indices.

    Differences from the book:

    - ``pad > 0``: the book computes ``OH = 1 + (H - pool_h) // stride``, ignoring ``pad``, so its forward raises
      a ValueError (a failed reshape) whenever the padding changes the output size, i.e. almost always. Here the
      output size is the correct, PyTorch-style ``OH = (H + 2*pad - pool_h) // stride + 1`` (same for W); for
      ``pad == 0`` both agree.
    - Padding is never selected: fastnn's max pooling treats padded positions as -inf, whereas the book's
      im2col pads with 0, so where a window overlaps the border and all its real values are negative the book
      would return 0 and route no gradient to the input; here the window's real maximum is returned and gets the
      gradient. ``pad`` must be at most half the pool size (``ValueError`` otherwise), as in PyTorch.
    - ``backward`` returns the dtype of ``dout`` (the book's always returns float64).
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0, *, backend=None):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.backend = backend
        self.x = None
        self._xk = None
        self._indices = None     # fastnn's int64 argmax indices ih*W + iw, shape (N, C, OH, OW)

    @property
    def arg_max(self):
        """The book's ``arg_max``: in-window position ``kh*pool_w + kw`` of each maximum, flat in (n, oh, ow, c)
        order (computed on demand)."""
        if self._indices is None:
            return None
        xp = _xp(self._indices)
        idx = self._indices
        W = self.x.shape[3]
        _, _, OH, OW = idx.shape
        (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
        kh = idx // W - (xp.arange(OH) * sh - ph)[:, None]
        kw = idx % W - (xp.arange(OW) * sw - pw)[None, :]
        return (kh * self.pool_w + kw).transpose(0, 2, 3, 1).ravel()

    def forward(self, x):
        xk = _cast(x, _dtype(x))
        out, self._indices = _F.max_pool2d(xk, (self.pool_h, self.pool_w), self.stride, self.pad,
                                           backend=self.backend)
        self.x = x
        self._xk = xk
        return out

    def backward(self, dout):
        dt = _dtype(dout)
        return _F.max_pool2d_backward(_cast(dout, dt), self._indices, tuple(self.x.shape), backend=self.backend)


# ------------------------------------------------------------------------------------------- BatchNormalization

class BatchNormalization:
    """Book 1's ``BatchNormalization(gamma, beta, momentum=0.9, running_mean=None, running_var=None)``.

    ``forward(x, train_flg=True)``, ``backward(dout)``; ``dgamma``/``dbeta`` are set by backward. The book's
    semantics, kept exactly:

    - a non-2-D input (N, C, H, W) is viewed as (N, C*H*W) and normalised **per activation** (every c, h, w
      position has its own statistics, ``gamma`` and ``beta``, of shape (C*H*W,)) - not per channel;
    - eps is ``10e-7`` (= 1e-6), the variance is the biased one (mean of squared deviations);
    - training updates ``running = momentum * running + (1 - momentum) * batch`` with the **biased** batch
      variance, rebinding ``running_mean``/``running_var`` to new arrays as the book does;
    - ``running_mean``/``running_var`` left as None are zero-initialised at the first forward (both of them,
      whenever ``running_mean`` is None); ``train_flg=False`` normalises with them.

    The batch statistics and normalisation run in ``fastnn.batch_norm`` on the (N, C*H*W) view (a 2-D batch norm
    is per feature); the running statistics are updated here with the book's formula, because fastnn's in-place
    update follows PyTorch (the other momentum convention and the unbiased variance).

    Attributes as in the book: ``gamma``, ``beta``, ``momentum``, ``input_shape``, ``running_mean``,
    ``running_var``, ``batch_size``, ``dgamma``, ``dbeta``; ``xc``, ``xn`` and ``std`` are computed on demand
    from the last forward. Differences: ``backward`` after a ``train_flg=False`` forward returns the gradient of
    the inference form (fixed statistics; the book would reuse stale training intermediates); a training batch of
    one sample is accepted as in the book (variance 0, output ``beta``).
    """

    eps = 10e-7   # the book's constant: np.sqrt(var + 10e-7)

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, *, backend=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None   # 4-D for a conv layer, 2-D for a fully connected one
        # used at test time
        self.running_mean = running_mean
        self.running_var = running_var
        # kept for backward
        self.batch_size = None
        self.dgamma = None
        self.dbeta = None
        self.backend = backend
        self._x2 = self._gamma = self._mean = self._invstd = None
        self._train = True

    # the book's intermediates, recomputed from (x, mean, invstd) only when someone reads them
    @property
    def xc(self):
        return None if self._x2 is None else self._x2 - self._mean

    @property
    def std(self):
        return None if self._invstd is None else 1 / self._invstd

    @property
    def xn(self):
        return None if self._x2 is None else (self._x2 - self._mean) * self._invstd

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        out = self._forward(x, train_flg)
        return out.reshape(*self.input_shape)

    def _forward(self, x, train_flg):
        N, D = x.shape
        xp = _xp(x)
        dt = _dtype(x, self.gamma, self.beta)
        if self.running_mean is None:
            self.running_mean = xp.zeros(D, dtype=dt)
            self.running_var = xp.zeros(D, dtype=dt)
        xk = _cast(x, dt)
        gamma, beta = _vector(self.gamma, D, dt, xp), _vector(self.beta, D, dt, xp)
        if train_flg:
            if N > 1:
                # running stats are NOT passed (fastnn would update them PyTorch's way: momentum 1 - ours and
                # the unbiased variance); they are updated below with the book's formula
                out, mean, invstd = _F.batch_norm(xk, gamma, beta, None, None, training=True, eps=self.eps,
                                                  backend=self.backend)
            else:   # one sample: the book's arithmetic gives variance 0 (fastnn refuses M == 1 in training)
                mean = xk[0].copy()
                invstd = xp.full(D, 1 / np.sqrt(self.eps), dtype=dt)
                out = xp.ascontiguousarray(xp.broadcast_to(beta if beta is not None else xp.zeros(D, dt), (N, D)))
            # biased batch variance from invstd = 1/sqrt(var + eps), in float64 (no extra pass over x)
            var = (1.0 / invstd.astype(np.float64) ** 2 - self.eps).clip(0).astype(dt)
            self.batch_size = N
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mean
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            out, mean, invstd = _F.batch_norm(xk, gamma, beta, xp.ascontiguousarray(_cast(self.running_mean, dt)),
                                              xp.ascontiguousarray(_cast(self.running_var, dt)), training=False,
                                              eps=self.eps, backend=self.backend)
        self._x2, self._gamma, self._mean, self._invstd, self._train = xk, gamma, mean, invstd, bool(train_flg)
        return out

    def backward(self, dout):
        if dout.ndim != 2:
            dout = dout.reshape(dout.shape[0], -1)
        dx = self._backward(dout)
        return dx.reshape(*self.input_shape)

    def _backward(self, dout):
        dt = _dtype(self._x2, dout)
        dx, dgamma, dbeta = _F.batch_norm_backward(_cast(dout, dt), _cast(self._x2, dt), _cast(self._gamma, dt),
                                                   _cast(self._mean, dt), _cast(self._invstd, dt),
                                                   training=self._train, backend=self.backend)
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx


# ---------------------------------------------------------------------------------------------------------- LSTM

_GATES = "fgio"   # the book's block order of the 4H axis: A[:, :H] f, [H:2H] g, [2H:3H] i, [3H:] o


def _with_current_weights(cache, params):
    """The book's backward reads Wx/Wh from ``params`` when it runs (an optimizer may have updated them in place
    since the forward). Host caches get the current arrays (a backend may have kept copies: the cuda backend
    does for NumPy input); GPU caches already alias the caller's weight memory."""
    if not isinstance(cache.x, np.ndarray):
        return cache
    dt = cache.x.dtype
    return cache._replace(w_ih=_cast(params[0], dt), w_hh=_cast(params[1], dt))


class LSTM:
    """Book 2's single-step ``LSTM(Wx, Wh, b)``: ``Wx`` (D, 4H), ``Wh`` (H, 4H), ``b`` (4H,), gate blocks f, g, i, o.

    ``forward(x, h_prev, c_prev)`` -> ``(h_next, c_next)``; ``backward(dh_next, dc_next)`` ->
    ``(dx, dh_prev, dc_prev)``, writing the weight gradients IN PLACE into ``grads`` (``grads[0][...] = dWx``), so
    an optimizer holding ``params``/``grads`` sees them. ``dh_next``/``dc_next`` may be 0 (or None) for zeros.

    Attributes: ``params`` = [Wx, Wh, b], ``grads``; ``cache`` is the book's tuple
    ``(x, h_prev, c_prev, i, f, g, o, c_next)``, rebuilt on demand from fastnn's ``LSTMCache`` (kept as
    ``fastnn_cache``). The computation runs in the promoted dtype of the inputs and weights.
    """

    def __init__(self, Wx, Wh, b, *, backend=None):
        self.params = [Wx, Wh, b]
        xp = _xp(Wx)
        self.grads = [xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)]
        self.backend = backend
        self.fastnn_cache = None

    @property
    def cache(self):
        c = self.fastnn_cache
        if c is None:
            return None
        H = c.w_hh.shape[0]
        blk = {ch: c.gates[:, k * H:(k + 1) * H] for k, ch in enumerate(c.gate_order)}
        return (c.x, c.h, c.c, blk["i"], blk["f"], blk["g"], blk["o"], c.cs)

    @cache.setter
    def cache(self, value):
        if value is not None:
            raise AttributeError("LSTM.cache is derived from fastnn_cache; it can only be cleared (set to None)")
        self.fastnn_cache = None

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        dt = _dtype(x, h_prev, c_prev, Wx, Wh, b)
        shape = (x.shape[0], Wh.shape[0])
        h_next, c_next, self.fastnn_cache = _F.lstm_cell(
            _cast(x, dt), _state(h_prev, shape, dt), _state(c_prev, shape, dt), _cast(Wx, dt), _cast(Wh, dt),
            _cast(b, dt), gate_order=_GATES, backend=self.backend)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        cache = _with_current_weights(self.fastnn_cache, self.params)
        dt = cache.x.dtype
        shape = cache.hs.shape
        dx, dh_prev, dc_prev, dWx, dWh, db = _F.lstm_cell_backward(
            _state(dh_next, shape, dt), _state(dc_next, shape, dt), cache)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        return dx, dh_prev, dc_prev


class TimeLSTM:
    """Book 2's ``TimeLSTM(Wx, Wh, b, stateful=False)``: an LSTM over ``xs`` (N, T, D) -> ``hs`` (N, T, H).

    ``forward(xs)``, ``backward(dhs)`` -> ``dxs`` (truncated BPTT: no gradient enters from after the last step;
    the gradient w.r.t. the initial hidden state is left in ``dh``), ``set_state(h, c=None)``,
    ``reset_state()``. With ``stateful=True`` the final ``h``/``c`` of one forward are the initial state of the
    next (zeros when None); otherwise every forward starts from zeros. Gradients are written IN PLACE into
    ``grads``. The whole sequence runs in one fused ``fastnn.lstm`` call (gate order f, g, i, o).

    Attributes: ``params``, ``grads``, ``stateful``, ``h``, ``c``, ``dh``; ``layers`` (the book's list of per-step
    ``LSTM`` objects) is rebuilt on demand from the fused cache - those step layers can run their own backward,
    but ``TimeLSTM.backward`` does not fill their ``grads``. Difference: ``hs``/``dxs``/states keep the dtype of
    the inputs and weights (the book always makes them float32).
    """

    def __init__(self, Wx, Wh, b, stateful=False, *, backend=None):
        self.params = [Wx, Wh, b]
        xp = _xp(Wx)
        self.grads = [xp.zeros_like(Wx), xp.zeros_like(Wh), xp.zeros_like(b)]
        self.h, self.c = None, None
        self.dh = None
        self.stateful = stateful
        self.backend = backend
        self.fastnn_cache = None
        self._layers = None

    @property
    def layers(self):
        """The book's per-step ``LSTM`` layers of the last forward (built on demand; None before it)."""
        cache = self.fastnn_cache
        if cache is None:
            return None
        if self._layers is None:
            xp = _xp(cache.x)
            c = xp.ascontiguousarray
            T = cache.x.shape[1]
            self._layers = []
            for t in range(T):
                layer = LSTM(*self.params, backend=self.backend)
                h_prev = cache.h if t == 0 else cache.hs[:, t - 1]
                c_prev = cache.c if t == 0 else cache.cs[:, t - 1]
                layer.fastnn_cache = cache._replace(
                    x=c(cache.x[:, t]), h=c(h_prev), c=c(c_prev), gates=c(cache.gates[:, t]),
                    hs=c(cache.hs[:, t]), cs=c(cache.cs[:, t]))
                self._layers.append(layer)
        return self._layers

    def forward(self, xs):
        Wx, Wh, b = self.params
        N, T, D = xs.shape
        H = Wh.shape[0]
        xp = _xp(xs)
        dt = _dtype(xs, Wx, Wh, b)
        if not self.stateful or self.h is None:
            self.h = xp.zeros((N, H), dtype=dt)
        if not self.stateful or self.c is None:
            self.c = xp.zeros((N, H), dtype=dt)
        hs, self.h, self.c, self.fastnn_cache = _F.lstm(
            _cast(xs, dt), _cast(self.h, dt), _cast(self.c, dt), _cast(Wx, dt), _cast(Wh, dt), _cast(b, dt),
            gate_order=_GATES, backend=self.backend)
        self._layers = None
        return hs

    def backward(self, dhs):
        cache = _with_current_weights(self.fastnn_cache, self.params)
        dxs, dh, _, dWx, dWh, db = _F.lstm_backward(_cast(dhs, cache.x.dtype), None, None, cache)
        self.grads[0][...] = dWx
        self.grads[1][...] = dWh
        self.grads[2][...] = db
        self.dh = dh
        return dxs

    def set_state(self, h, c=None):
        self.h, self.c = h, c

    def reset_state(self):
        self.h, self.c = None, None


# ================================================================================================ textbook layers
# Book 1's common/layers.py and book 2's common/layers.py + common/time_layers.py on the ops of issue #19.

def _is_float_array(x):
    """A float32/float64 NumPy or CuPy array the kernels take (anything else runs the book's own NumPy code)."""
    dt = getattr(x, "dtype", None)
    return dt in _FLOATS and getattr(x, "ndim", 0) > 0


def _alias(lst, i, doc):
    """Book 1's attribute name (``W``, ``dW``, ...) for element ``i`` of book 2's ``params``/``grads`` list."""
    def get(self):
        v = getattr(self, lst)
        return v[i] if i < len(v) else None     # (GRU without a bias: no params[2])

    def set_(self, value):
        if lst == "grads" and value is not None and getattr(self, lst)[i] is not None \
                and getattr(value, "shape", None) == getattr(self, lst)[i].shape:
            getattr(self, lst)[i][...] = value     # keep the array an optimizer may hold
        else:
            getattr(self, lst)[i] = value
    return property(get, set_, doc=doc)


def _zeros_like(*arrays):
    return [None if a is None else _xp(a).zeros_like(a) for a in arrays]


def _indices(idx):
    """Embedding indices as an int32/int64 array (the books pass int64 NumPy arrays; lists and scalars work too)."""
    if getattr(idx, "dtype", None) not in (np.int32, np.int64):
        idx = np.asarray(idx) if isinstance(idx, (int, list, tuple, np.integer)) else idx
        idx = idx.astype(np.int64)
    return idx


def _write(grads, i, g):
    """grads[i][...] = g: gradients are written IN PLACE, as book 2 does, so optimizers and the Trainer's weight
    sharing (which hold these arrays) see them."""
    grads[i][...] = g


# ------------------------------------------------------------------------------------------------- activations

class Relu:
    """Book 1's ``Relu``: ``forward(x)``, ``backward(dout)``; runs ``fastnn.relu`` / ``fastnn.relu_backward``.

    Differences: ``backward`` returns a new array (the book zeroes ``dout`` in place and returns it); ``mask``
    (the book's ``x <= 0``) is computed on demand from the kept output ``out``. Inputs other than float32/float64
    arrays run the book's NumPy code.
    """

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.out = None
        self.backend = backend

    @property
    def mask(self):
        return None if self.out is None else (self.out <= 0)

    def forward(self, x):
        if not _is_float_array(x):
            out = x.copy()
            out[x <= 0] = 0
        else:
            out = _F.relu(x, backend=self.backend)
        self.out = out
        return out

    def backward(self, dout):
        if not (_is_float_array(dout) and _is_float_array(self.out)):
            dx = dout.copy()
            dx[self.out <= 0] = 0
            return dx
        dt = _dtype(dout)
        return _F.relu_backward(dout, _cast(self.out, dt), backend=self.backend)


class Sigmoid:
    """Book 1/2's ``Sigmoid``: ``out`` kept for ``backward(dout)`` = ``dout * out * (1 - out)``
    (``fastnn.sigmoid`` / ``fastnn.sigmoid_backward``)."""

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.out = None
        self.backend = backend

    def forward(self, x):
        if not _is_float_array(x):
            self.out = 1 / (1 + np.exp(-x))
        else:
            self.out = _F.sigmoid(x, backend=self.backend)
        return self.out

    def backward(self, dout):
        dt = _dtype(dout, self.out)
        return _F.sigmoid_backward(_cast(dout, dt), _cast(self.out, dt), backend=self.backend)


class Softmax:
    """Book 2's ``Softmax`` layer over the last axis: ``out`` kept, ``backward(dout)`` = ``out * (dout - sum(dout *
    out))`` (``fastnn.softmax`` / ``fastnn.softmax_backward``). Difference: any ndim works over the last axis (the
    book's function handles 1-D and 2-D input and returns other inputs unchanged)."""

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.out = None
        self.backend = backend

    def forward(self, x):
        self.out = _F.softmax(_cast(x, _dtype(x)), backend=self.backend)
        return self.out

    def backward(self, dout):
        dt = _dtype(dout, self.out)
        return _F.softmax_backward(_cast(dout, dt), _cast(self.out, dt), backend=self.backend)


# ------------------------------------------------------------------------------------------------------- dense

class Affine:
    """``Affine(W, b)`` of book 1 and book 2 in one class: ``y = x @ W + b`` (``fastnn.linear``).

    Both books' attributes, aliasing the same arrays: book 2's ``params`` = [W, b] and ``grads`` = [dW, db], book
    1's ``W``, ``b``, ``dW``, ``db`` (properties reading/writing ``params[i]``/``grads[i]``). ``backward`` writes
    the gradients IN PLACE into ``grads`` (as book 2: optimizers and shared weights keep working; book 1 code that
    reads ``layer.dW`` after backward gets the same numbers). ``x`` and ``original_x_shape`` as in book 1.

    Input shapes: as book 1, an input of more than 2 dims whose per-sample size is ``W.shape[0]`` (a conv
    feature map) is flattened to (N, -1) and ``backward`` returns ``dx`` in the input's shape; an input whose
    last axis is ``W.shape[0]`` is otherwise taken as (..., D) (book 2's ``np.dot`` forward). Differences:
    ``dW``/``db`` are zeros (not None) before the first backward, and keep the dtype of ``W``/``b`` (book 1's
    ``dW`` takes the dtype of ``x`` and ``dout`` when those are wider).
    """

    W = _alias("params", 0, "the weight (D, M): params[0]")
    b = _alias("params", 1, "the bias (M,): params[1]")
    dW = _alias("grads", 0, "the weight gradient: grads[0]")
    db = _alias("grads", 1, "the bias gradient: grads[1]")

    def __init__(self, W, b, *, backend=None):
        self.params = [W, b]
        self.grads = _zeros_like(W, b)
        self.x = None
        self.original_x_shape = None
        self.backend = backend
        self._xc = (None, None)

    def forward(self, x):
        W, b = self.params
        self.original_x_shape = x.shape
        D = W.shape[0]
        if x.ndim > 2 and (x.shape[-1] != D or math.prod(x.shape[1:]) == D):
            x = x.reshape(x.shape[0], -1)     # book 1: a (N, C, H, W) feature map is flattened per sample
        self.x = x
        dt = _dtype(x, W, b)
        xc = _cast(x, dt)
        self._xc = (x, xc)   # for backward: book 1's float32 input to float64 weights is cast once (627 KB: ~48 us)
        return _F.linear(xc, _cast(W, dt), _cast(b, dt), backend=self.backend)

    def backward(self, dout):
        W, b = self.params
        dt = _dtype(self.x, W, dout)
        src, xc = self._xc
        if xc is None or src is not self.x or xc.dtype != dt:  # no forward yet, x replaced, or another dtype
            xc = _cast(self.x, dt)
        dx, dW, db = _F.linear_backward(_cast(dout, dt), xc, _cast(W, dt), bias=b is not None, backend=self.backend)
        _write(self.grads, 0, dW)
        if b is not None:
            _write(self.grads, 1, db)
        return dx.reshape(*self.original_x_shape)


class MatMul:
    """Book 2's ``MatMul(W)``: ``y = x @ W`` (``fastnn.linear`` without bias); ``params`` = [W], ``grads`` =
    [dW] written in place by ``backward``."""

    def __init__(self, W, *, backend=None):
        self.params = [W]
        self.grads = _zeros_like(W)
        self.x = None
        self.backend = backend

    def forward(self, x):
        W, = self.params
        self.x = x
        dt = _dtype(x, W)
        return _F.linear(_cast(x, dt), _cast(W, dt), None, backend=self.backend)

    def backward(self, dout):
        W, = self.params
        dt = _dtype(self.x, W, dout)
        dx, dW, _ = _F.linear_backward(_cast(dout, dt), _cast(self.x, dt), _cast(W, dt), bias=False,
                                       backend=self.backend)
        _write(self.grads, 0, dW)
        return dx


class TimeAffine(Affine):
    """Book 2's ``TimeAffine(W, b)``: (N, T, D) -> (N, T, M) in one ``fastnn.linear`` call; ``params``/``grads``
    as ``Affine`` (the book 1 aliases ``W``/``b``/``dW``/``db`` exist too)."""

    def forward(self, x):
        W, b = self.params
        self.x = x
        self.original_x_shape = x.shape
        dt = _dtype(x, W, b)
        return _F.linear(_cast(x, dt), _cast(W, dt), _cast(b, dt), backend=self.backend)


class Embedding:
    """Book 2's ``Embedding(W)``: ``forward(idx)`` = ``W[idx]`` (``fastnn.embedding``), ``backward(dout)`` writes the
    scatter-add of ``dout`` rows into ``grads[0]`` (``fastnn.embedding_backward``, the book's ``np.add.at``) and
    returns None. ``idx`` may have any shape (int32/int64; other integer arrays are converted). Difference:
    indices must lie in [0, V) (NumPy would wrap negative ones)."""

    W = _alias("params", 0, "the embedding matrix (V, D): params[0]")

    def __init__(self, W, *, backend=None):
        self.params = [W]
        self.grads = _zeros_like(W)
        self.idx = None
        self.backend = backend

    def forward(self, idx):
        W, = self.params
        self.idx = idx
        return _F.embedding(_indices(idx), W, backend=self.backend)

    def backward(self, dout):
        W, = self.params
        dW = _F.embedding_backward(_cast(dout, W.dtype), _indices(self.idx), W.shape[0], backend=self.backend)
        _write(self.grads, 0, dW)
        return None


class TimeEmbedding(Embedding):
    """Book 2's ``TimeEmbedding(W)``: ``xs`` (N, T) -> (N, T, D) in one ``fastnn.embedding`` call. Attributes
    ``params``, ``grads``, ``W``; ``layers`` (the book's per-step ``Embedding`` list) is built on demand.
    Difference: the output keeps the dtype of ``W`` (the book's is always float32)."""

    @property
    def layers(self):
        if self.idx is None:
            return None
        out = []
        for t in range(self.idx.shape[1]):
            layer = Embedding(self.W, backend=self.backend)
            layer.idx = self.idx[:, t]
            out.append(layer)
        return out


# ------------------------------------------------------------------------------------------------------ dropout

def _books_keep(shape, p):
    """The books' ``np.random.rand(*shape) > p``, drawn by the cpu backend from NumPy's own generator (the same
    draws, 5x faster); loaded on first use like every cpu call, so importing the layers loads no extension."""
    try:
        cpu = _dispatch.module("cpu")
    except RuntimeError:            # no compiled extension: NumPy draws it
        return np.random.rand(*shape) > p
    return cpu.rand_gt(shape, p)


class _DropoutBase:
    """Shared mask logic. ``seed=None`` (default): the mask is drawn as the books draw it,
    ``np.random.rand(*x.shape) > dropout_ratio`` (``cupy.random`` for CuPy arrays), so a network swapped from the
    books gives the original's numbers under the same ``np.random.seed``; the multiply runs in
    ``fastnn.dropout(..., mask=...)``. ``seed=<int>``: fastnn's counter-based generator (no random array is
    drawn or kept; much faster, identical on every backend); forward call k uses seed ``seed + k``, so every
    step gets a fresh, reproducible mask."""

    _scale = False      # scale kept units by 1/(1-p) at training time (inverted dropout)?

    def __init__(self, dropout_ratio=0.5, *, seed=None, backend=None):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.seed = seed
        self.backend = backend
        self._mask = None
        self._calls = 0
        self._step_seed = None      # the generator seed of the last training forward
        self._shape = None

    def _train(self, x):
        p = self.dropout_ratio
        dt = _dtype(x)
        xp = _xp(x)
        self._shape, self._dtype, self._xpm = x.shape, dt, xp
        x = _cast(x, dt)
        if self.seed is None:
            keep = _books_keep(x.shape, p) if xp is np else xp.random.rand(*x.shape) > p
            self._mask = self._book_mask(keep)
            self._step_seed = None
            return _F.dropout(x, p, mask=_cast(self._mask, dt) if self._scale else self._mask, scale=False,
                              backend=self.backend)
        self._mask = None
        self._step_seed = self.seed + self._calls
        self._calls += 1
        return _F.dropout(x, p, seed=self._step_seed, scale=self._scale, backend=self.backend)

    def backward(self, dout):
        p = self.dropout_ratio
        dt = _dtype(dout)
        if self._step_seed is None:
            mask = _cast(self._mask, dt) if self._scale else self._mask
            return _F.dropout_backward(_cast(dout, dt), p, mask=mask, scale=False, backend=self.backend)
        return _F.dropout_backward(_cast(dout, dt), p, seed=self._step_seed, scale=self._scale,
                                   backend=self.backend)

    @property
    def mask(self):
        """The book's mask of the last training forward (regenerated on demand with ``seed=``)."""
        if self._mask is None and self._step_seed is not None:
            ones = self._xpm.ones(self._shape, dtype=self._dtype)
            keep = _F.dropout(ones, self.dropout_ratio, seed=self._step_seed, scale=False, backend=self.backend) != 0
            return self._book_mask(keep)
        return self._mask

    @mask.setter
    def mask(self, value):
        self._mask, self._step_seed = value, None


class Dropout(_DropoutBase):
    """Book 1/2's ``Dropout(dropout_ratio=0.5)`` (both books' class is the same): ``forward(x, train_flg=True)``
    drops units without rescaling, and at test time scales by ``1 - dropout_ratio``; ``backward(dout)`` =
    ``dout * mask``. ``mask`` is the book's boolean array. Book 2's ``TimeDropout`` is the other convention
    (inverted: scaled at training time). Extra keyword arguments ``seed`` (see below) and ``backend``.

    """
    __doc__ += _DropoutBase.__doc__

    def _book_mask(self, keep):
        return keep

    def forward(self, x, train_flg=True):
        if train_flg:
            return self._train(x)
        return x * (1.0 - self.dropout_ratio)


class TimeDropout(_DropoutBase):
    """Book 2's ``TimeDropout(dropout_ratio=0.5)``: inverted dropout, ``forward(xs)`` keeps units with probability
    ``1 - dropout_ratio`` and scales them by ``1 / (1 - dropout_ratio)`` while ``train_flg`` (attribute, True by
    default; the book's models set it) is set, and returns ``xs`` unchanged otherwise. ``mask`` is the book's
    float32 array of 0 and the float32-rounded scale (so float64 input gives the book's numbers exactly).

    """
    __doc__ += _DropoutBase.__doc__

    _scale = True

    def __init__(self, dropout_ratio=0.5, *, seed=None, backend=None):
        super().__init__(dropout_ratio, seed=seed, backend=backend)
        self.train_flg = True

    def _book_mask(self, keep):
        return keep.astype(np.float32) * (1 / (1.0 - self.dropout_ratio))

    def forward(self, xs):
        if self.train_flg:
            return self._train(xs)
        return xs


# ------------------------------------------------------------------------------------------------------ losses

class SoftmaxWithLoss:
    """``SoftmaxWithLoss`` of book 1 and book 2: ``forward(x, t)`` -> loss, ``backward(dout=1)`` -> dx, one fused
    ``fastnn.softmax_cross_entropy`` (with the books' ``1e-7`` inside the log).

    ``t``: class indices (N,), or one-hot labels of ``x``'s shape. Float one-hot ``t`` is used as is (loss
    ``-sum(t*log(y + 1e-7))/N``, gradient ``(y - t)/N``: book 1's numbers); integer one-hot ``t`` (book 2's
    ``convert_one_hot`` makes int32 ones) is turned into indices with ``argmax``, as book 2 does. For one-hot
    labels the two books agree. Attributes ``loss``, ``y`` (the softmax), ``t`` (as given), ``params``/``grads``
    (empty). Differences: ``backward`` scales by ``dout`` in both cases (book 1 ignores it); soft (non one-hot)
    float labels give the true cross-entropy (both books score them at their argmax); the loss is a Python
    float."""

    eps = 1e-7

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.loss = None
        self.y = None
        self.t = None
        self.backend = backend
        self._target = None

    def forward(self, x, t):
        self.t = t
        dt = _dtype(x)
        x = _cast(x, dt)
        if t.shape == x.shape:
            target = _cast(t, dt) if t.dtype.kind == "f" else t.argmax(axis=-1)
        else:
            target = t
        self._target = target
        self.loss, self.y = _F.softmax_cross_entropy(x, target, eps=self.eps, backend=self.backend)
        return self.loss

    def backward(self, dout=1):
        return _F.softmax_cross_entropy_backward(self.y, self._target, float(dout), backend=self.backend)


class SigmoidWithLoss:
    """Book 2's ``SigmoidWithLoss``: binary cross-entropy of ``sigmoid(x)`` against 0/1 labels ``t`` (same shape,
    int or float) with the book's ``1e-7`` inside the logs; ``fastnn.sigmoid_cross_entropy``. ``loss``, ``y``,
    ``t`` as in the book. The loss is the mean over all elements (the book's formula only works for 1-D ``x``,
    where the two agree); ``backward(dout=1)`` = ``(y - t) * dout / t.size``."""

    eps = 1e-7

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.loss = None
        self.y = None
        self.t = None
        self.backend = backend

    def forward(self, x, t):
        self.t = t
        self.loss, self.y = _F.sigmoid_cross_entropy(_cast(x, _dtype(x)), t, eps=self.eps, backend=self.backend)
        return self.loss

    def backward(self, dout=1):
        return _F.sigmoid_cross_entropy_backward(self.y, self.t, float(dout), backend=self.backend)


class TimeSigmoidWithLoss(SigmoidWithLoss):
    """Book 2's ``TimeSigmoidWithLoss``: ``xs``, ``ts`` (N, T); the loss is the mean over all N*T elements (the
    book averages the T per-step means: the same number) and ``backward`` returns (N, T) in the input dtype (the
    book's is float32). ``xs_shape`` as in the book; the per-step ``layers`` are not kept (None)."""

    def __init__(self, *, backend=None):
        super().__init__(backend=backend)
        self.xs_shape = None
        self.layers = None

    def forward(self, xs, ts):
        self.xs_shape = xs.shape
        return super().forward(xs, ts)


class TimeSoftmaxWithLoss:
    """Book 2's ``TimeSoftmaxWithLoss``: ``xs`` (N, T, V), ``ts`` (N, T) class ids (or one-hot (N, T, V), turned
    into ids with argmax); labels equal to ``ignore_label`` (-1, read at every forward) are not counted. As in the
    book, no ``1e-7`` inside the log. One fused ``fastnn.softmax_cross_entropy`` call.

    ``cache`` is the book's ``(ts, ys, mask, (N, T, V))`` (built on demand; the book's ``backward`` overwrites its
    ``ys`` in place, fastnn's does not). Differences: when every label is ignored the loss is 0.0 and the
    gradient 0 (the book divides 0 by 0); the loss is a Python float (computed in float64: log-softmax, so it
    stays finite where a probability underflows to 0)."""

    def __init__(self, *, backend=None):
        self.params, self.grads = [], []
        self.ignore_label = -1
        self.backend = backend
        self._ts = self._ys = self._ignore = None

    @property
    def cache(self):
        if self._ys is None:
            return None
        N, T, V = self._ys.shape
        ts = self._ts.reshape(N * T)
        return ts, self._ys.reshape(N * T, V), ts != self._ignore, (N, T, V)

    def forward(self, xs, ts):
        if ts.ndim == 3:
            ts = ts.argmax(axis=2)
        self._ignore = self.ignore_label
        loss, self._ys = _F.softmax_cross_entropy(_cast(xs, _dtype(xs)), ts, ignore_index=self._ignore, eps=0.0,
                                                  backend=self.backend)
        self._ts = ts
        return loss

    def backward(self, dout=1):
        return _F.softmax_cross_entropy_backward(self._ys, self._ts, float(dout), ignore_index=self._ignore,
                                                 backend=self.backend)


# ------------------------------------------------------------------------------------------------- recurrent

def _current(cache, params):
    """``cache`` with the weights the book's backward would read now: ``params`` (an optimizer may have updated
    them since the forward). Host caches only; GPU caches alias the caller's weight memory (see
    ``_with_current_weights``)."""
    if not isinstance(cache.x, np.ndarray):
        return cache
    dt = cache.x.dtype
    return cache._replace(w_ih=_cast(params[0], dt), w_hh=_cast(params[1], dt))


def _zero_state(h, shape, dt, xp):
    """The initial state of a Time layer: zeros unless stateful and set (then cast to the compute dtype)."""
    return xp.zeros(shape, dtype=dt) if h is None else _cast(h, dt)


class RNN:
    """Book 2's single-step ``RNN(Wx, Wh, b)``: ``h_next = tanh(h_prev @ Wh + x @ Wx + b)`` (``fastnn.rnn_cell``).

    ``forward(x, h_prev)`` -> ``h_next``; ``backward(dh_next)`` -> ``(dx, dh_prev)``, writing the weight gradients
    IN PLACE into ``grads``. ``cache`` is the book's ``(x, h_prev, h_next)`` (from fastnn's ``RNNCache``, kept as
    ``fastnn_cache``). ``h_prev`` may be None for zeros."""

    def __init__(self, Wx, Wh, b, *, backend=None):
        self.params = [Wx, Wh, b]
        self.grads = _zeros_like(Wx, Wh, b)
        self.backend = backend
        self.fastnn_cache = None

    @property
    def cache(self):
        c = self.fastnn_cache
        return None if c is None else (c.x, c.h, c.hs)

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        dt = _dtype(x, h_prev, Wx, Wh, b)
        h_next, self.fastnn_cache = _F.rnn_cell(_cast(x, dt), _state(h_prev, (x.shape[0], Wh.shape[0]), dt),
                                                _cast(Wx, dt), _cast(Wh, dt), _cast(b, dt), backend=self.backend)
        return h_next

    def backward(self, dh_next):
        cache = _current(self.fastnn_cache, self.params)
        dx, dh_prev, dWx, dWh, db = _F.rnn_cell_backward(_cast(dh_next, cache.x.dtype), cache)
        for i, g in enumerate((dWx, dWh, db)):
            _write(self.grads, i, g)
        return dx, dh_prev


class _TimeRecurrent:
    """Shared by TimeRNN and TimeGRU: the book's stateful/``set_state``/``reset_state`` protocol around one fused
    sequence op."""

    def __init__(self, params, stateful, backend):
        self.params = params
        self.grads = _zeros_like(*params)
        self.h, self.dh = None, None
        self.stateful = stateful
        self.backend = backend
        self.fastnn_cache = None
        self._layers = None

    @property
    def layers(self):
        """The book's per-step layers (``RNN``/``GRU``) of the last forward, built on demand from the fused cache
        (their ``cache`` and ``backward`` work; ``backward`` of this layer does not fill their ``grads``)."""
        cache = self.fastnn_cache
        if cache is None:
            return None
        if self._layers is None:
            c = _xp(cache.x).ascontiguousarray
            self._layers = []
            for t in range(cache.x.shape[1]):
                step = self._cell(*self.params, backend=self.backend)
                h_prev = cache.h if t == 0 else cache.hs[:, t - 1]
                fields = dict(x=c(cache.x[:, t]), h=c(h_prev), hs=c(cache.hs[:, t]))
                fields.update({k: c(getattr(cache, k)[:, t]) for k in ("gates", "hn") if hasattr(cache, k)})
                step.fastnn_cache = cache._replace(**fields)
                self._layers.append(step)
        return self._layers

    def forward(self, xs):
        self._layers = None
        Wx, Wh = self.params[:2]
        N, T, D = xs.shape
        dt = _dtype(xs, *self.params)
        if not self.stateful or self.h is None:
            self.h = None
        h0 = _zero_state(self.h, (N, Wh.shape[0]), dt, _xp(xs))
        hs, self.h, self.fastnn_cache = self._run(_cast(xs, dt), h0, [_cast(p, dt) for p in self.params])
        return hs

    def backward(self, dhs):
        cache = _current(self.fastnn_cache, self.params)
        dxs, dh, *grads = self._run_backward(_cast(dhs, cache.x.dtype), cache)
        for i, g in enumerate(grads[:len(self.params)]):
            _write(self.grads, i, g)
        self.dh = dh
        return dxs

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None


class TimeRNN(_TimeRecurrent):
    """Book 2's ``TimeRNN(Wx, Wh, b, stateful=False)``: an RNN over ``xs`` (N, T, D) -> ``hs`` (N, T, H) in one
    fused ``fastnn.rnn`` call. ``forward(xs)``, ``backward(dhs)`` -> ``dxs`` (truncated BPTT; the gradient w.r.t.
    the initial state is left in ``dh``), ``set_state(h)``, ``reset_state()``; with ``stateful=True`` the last
    ``h`` of one forward starts the next. Gradients are written IN PLACE into ``grads``. Difference: ``hs``,
    ``dxs`` and ``h`` keep the dtype of the inputs (the book makes them float32); the per-step ``layers`` are
    built on demand from the fused cache."""

    _cell = RNN

    def __init__(self, Wx, Wh, b, stateful=False, *, backend=None):
        super().__init__([Wx, Wh, b], stateful, backend)

    def _run(self, xs, h0, params):
        return _F.rnn(xs, h0, *params, backend=self.backend)

    def _run_backward(self, dhs, cache):
        return _F.rnn_backward(dhs, None, cache)


class GRU:
    """Book 2's single-step ``GRU(Wx, Wh, b)``: gate blocks z, r, h~ of ``Wx`` (D, 3H), ``Wh`` (H, 3H), ``b``
    (3H,); ``h_next = (1 - z) * h_prev + z * h~`` (``fastnn.gru_cell`` with ``gate_order="zrh"``).

    ``forward(x, h_prev)`` -> ``h_next``, ``backward(dh_next)`` -> ``(dx, dh_prev)``; gradients are written IN
    PLACE into ``grads`` and are also the book's ``dWx``, ``dWh``, ``db``. The book's first version
    ``GRU(Wx, Wh)`` (no bias; attributes ``Wx``, ``Wh``, ``dWx``, ``dWh``) works too: then ``params`` = [Wx, Wh].
    ``cache`` is the book's ``(x, h_prev, z, r, h_hat)``, rebuilt from fastnn's ``GRUCache`` (``fastnn_cache``).
    """

    Wx = _alias("params", 0, "params[0]")
    Wh = _alias("params", 1, "params[1]")
    b = _alias("params", 2, "params[2] (None without a bias)")
    dWx = _alias("grads", 0, "grads[0]")
    dWh = _alias("grads", 1, "grads[1]")
    db = _alias("grads", 2, "grads[2] (None without a bias)")

    def __init__(self, Wx, Wh, b=None, *, backend=None):
        self.params = [Wx, Wh] if b is None else [Wx, Wh, b]
        self.grads = _zeros_like(*self.params)
        self.backend = backend
        self.fastnn_cache = None

    @property
    def cache(self):
        c = self.fastnn_cache
        if c is None:
            return None
        H = c.w_hh.shape[0]
        z, r, h_hat = (c.gates[:, k * H:(k + 1) * H] for k in range(3))
        return c.x, c.h, z, r, h_hat

    def forward(self, x, h_prev):
        Wx, Wh = self.params[:2]
        b = self.b
        dt = _dtype(x, h_prev, Wx, Wh, b)
        h_next, self.fastnn_cache = _F.gru_cell(_cast(x, dt), _state(h_prev, (x.shape[0], Wh.shape[0]), dt),
                                                _cast(Wx, dt), _cast(Wh, dt), _cast(b, dt), None, gate_order="zrh",
                                                backend=self.backend)
        return h_next

    def backward(self, dh_next):
        cache = _current(self.fastnn_cache, self.params)
        dx, dh_prev, dWx, dWh, db, _ = _F.gru_cell_backward(_cast(dh_next, cache.x.dtype), cache)
        for i, g in enumerate((dWx, dWh, db)[:len(self.params)]):
            _write(self.grads, i, g)
        return dx, dh_prev


class TimeGRU(_TimeRecurrent):
    """Book 2's ``TimeGRU(Wx, Wh, b, stateful=False)``: a GRU (gate blocks z, r, h~) over ``xs`` (N, T, D) in one
    fused ``fastnn.gru`` call; the protocol of ``TimeRNN``. The book's first version ``TimeGRU(Wx, Wh,
    stateful=False)`` (no bias) is accepted too (a bool third argument is ``stateful``)."""

    Wx = GRU.Wx
    Wh = GRU.Wh
    b = GRU.b
    _cell = GRU

    def __init__(self, Wx, Wh, b=None, stateful=False, *, backend=None):
        if isinstance(b, bool):
            b, stateful = None, b
        super().__init__([Wx, Wh] if b is None else [Wx, Wh, b], stateful, backend)

    def _run(self, xs, h0, params):
        b = params[2] if len(params) > 2 else None
        return _F.gru(xs, h0, params[0], params[1], b, None, gate_order="zrh", backend=self.backend)

    def _run_backward(self, dhs, cache):
        return _F.gru_backward(dhs, None, cache)


class TimeBiLSTM:
    """Book 2's ``TimeBiLSTM(Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False)``: a forward ``TimeLSTM`` over ``xs`` and
    a backward one over the time-reversed ``xs``, outputs concatenated on the last axis (N, T, 2H).
    ``forward_lstm``/``backward_lstm`` are fastnn ``TimeLSTM`` layers; ``params``/``grads`` are their lists
    joined (the same arrays)."""

    def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False, *, backend=None):
        self.forward_lstm = TimeLSTM(Wx1, Wh1, b1, stateful, backend=backend)
        self.backward_lstm = TimeLSTM(Wx2, Wh2, b2, stateful, backend=backend)
        self.params = self.forward_lstm.params + self.backward_lstm.params
        self.grads = self.forward_lstm.grads + self.backward_lstm.grads

    def forward(self, xs):
        xp = _xp(xs)
        o1 = self.forward_lstm.forward(xs)
        o2 = self.backward_lstm.forward(xp.ascontiguousarray(xs[:, ::-1]))
        return xp.concatenate((o1, o2[:, ::-1]), axis=2)

    def backward(self, dhs):
        xp = _xp(dhs)
        H = dhs.shape[2] // 2
        dxs1 = self.forward_lstm.backward(xp.ascontiguousarray(dhs[:, :, :H]))
        dxs2 = self.backward_lstm.backward(xp.ascontiguousarray(dhs[:, ::-1, H:]))
        return dxs1 + dxs2[:, ::-1]
