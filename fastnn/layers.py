"""Drop-in layers for NumPy deep-learning code written after *Deep Learning from Scratch* (books 1 and 2).

``Convolution``, ``Pooling`` and ``BatchNormalization`` follow book 1's ``common/layers.py``; ``LSTM`` and
``TimeLSTM`` follow book 2's ``common/time_layers.py``: same constructor arguments, same ``forward``/``backward``
signatures, same public attributes and the same numbers (to float tolerance). Swapping the import is the only
change a user makes::

    # from common.layers import Convolution, Pooling, BatchNormalization
    from fastnn.layers import Convolution, Pooling, BatchNormalization
    # from common.time_layers import LSTM, TimeLSTM
    from fastnn.layers import LSTM, TimeLSTM

The work is done by the public fastnn API (``fastnn.conv2d``, ``fastnn.max_pool2d``, ``fastnn.batch_norm``,
``fastnn.lstm``, ...), so a layer runs on whatever backend fits its arrays: NumPy arrays go to the C++ ``cpu``
backend, CuPy (or other ``__cuda_array_interface__``) arrays stay on the GPU and go to the ``cuda`` backend.
Every layer also takes a keyword-only ``backend=None`` (``"numpy"``, ``"cpu"``, ``"cuda"``) that is passed to
every call, e.g. to time the same network on the NumPy reference.

Differences from the originals (all deliberate, each also said in the class docstring):

- dtypes: the computation runs in the promoted dtype of the input and the parameters (as NumPy's operators
  would: float32 input with float64 weights computes in float64, as the book does). The originals' silent dtype
  changes are not reproduced: float32 convolutions stay float32 (the book's im2col makes float64 columns),
  Pooling's backward returns the dtype of ``dout`` (the book's is float64), lazily created running statistics
  have the compute dtype (the book's are float64), TimeLSTM keeps the dtype of its inputs (the book hard-codes
  float32 for ``hs``/``dxs``).
- Intermediate arrays that only the backward pass of the original needed (``Convolution.col``,
  ``Pooling.arg_max``, ``BatchNormalization.xc``/``xn``/``std``, ``LSTM.cache``, ``TimeLSTM.layers``) are not
  stored; they are properties computed on demand from what the fast kernels keep, with the book's shapes and
  values.
- ``Pooling`` with ``pad > 0``: see its docstring (the book's output-size formula ignores ``pad``).
"""
import numpy as np

import fastnn as _F
from fastnn._shapes import pair as _pair

__all__ = ["Convolution", "Pooling", "BatchNormalization", "LSTM", "TimeLSTM"]

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
