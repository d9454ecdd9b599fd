"""fastnn: fast neural-network kernels for NumPy and GPU arrays.

Every function validates its arguments (fastnn._checks), picks a backend (fastnn._dispatch: `backend=` or
$FASTNN_BACKEND, else "cuda" for GPU arrays and "cpu" for NumPy arrays) and runs the function of the same name
there. `fastnn.reference` is the NumPy specification every backend is tested against.
"""
from . import _checks, _dispatch
from .reference import GRUCache, LSTMCache, RNNCache

__version__ = "0.1.0"

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "batch_norm", "batch_norm_backward", "lstm_cell", "lstm_cell_backward", "lstm",
    "lstm_backward", "LSTMCache", "backends", "show_config", "set_num_threads", "get_num_threads",
    "share_blas_threads", "empty_cache",
]


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, backend=None):
    """Unfold (N,C,H,W) patches into a (N*OH*OW, C*KH*KW) matrix (row n,oh,ow; column c,kh,kw)."""
    args, out_hw = _checks.im2col(x, kernel_size, stride, padding, dilation)
    return _dispatch.pick(backend, x).im2col(*args, out_hw=out_hw)


def col2im(col, input_shape, kernel_size, stride=1, padding=0, dilation=1, backend=None):
    """Fold a (N*OH*OW, C*KH*KW) matrix back into an input_shape array, summing overlaps (im2col's adjoint)."""
    args, out_hw = _checks.col2im(col, input_shape, kernel_size, stride, padding, dilation)
    return _dispatch.pick(backend, col).col2im(*args, out_hw=out_hw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, backend=None):
    """2-D convolution (cross-correlation, as PyTorch): x (N,C,H,W), weight (K,C/groups,KH,KW) -> (N,K,OH,OW)."""
    args, out_hw = _checks.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _dispatch.pick(backend, x, weight, bias).conv2d(*args, out_hw=out_hw)


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1, backend=None):
    """Gradients of conv2d: returns (dx, dweight, dbias)."""
    args = _checks.conv2d_backward(dy, x, weight, stride, padding, dilation, groups)
    return _dispatch.pick(backend, dy, x, weight).conv2d_backward(*args)


def max_pool2d(x, kernel_size, stride=None, padding=0, backend=None):
    """Max pooling -> (y, indices); indices are int64 flat positions ih*W+iw in each (H,W) plane; first max wins."""
    args, out_hw = _checks.max_pool2d(x, kernel_size, stride, padding)
    return _dispatch.pick(backend, x).max_pool2d(*args, out_hw=out_hw)


def max_pool2d_backward(dy, indices, input_shape, backend=None):
    """Gradient of max_pool2d: routes dy to the positions in indices."""
    args = _checks.max_pool2d_backward(dy, indices, input_shape)
    return _dispatch.pick(backend, dy, indices).max_pool2d_backward(*args)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, backend=None):
    """Average pooling; the divisor counts padded positions when count_include_pad."""
    args, out_hw = _checks.avg_pool2d(x, kernel_size, stride, padding, count_include_pad)
    return _dispatch.pick(backend, x).avg_pool2d(*args, out_hw=out_hw)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, count_include_pad=True, backend=None):
    """Gradient of avg_pool2d."""
    args = _checks.avg_pool2d_backward(dy, input_shape, kernel_size, stride, padding, count_include_pad)
    return _dispatch.pick(backend, dy).avg_pool2d_backward(*args)


def batch_norm(x, gamma=None, beta=None, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5, backend=None):
    """Batch normalization per channel of (N,C) or (N,C,H,W) -> (y, mean, invstd).

    training: batch statistics; running_mean/running_var, when given, are updated IN PLACE as in PyTorch
    (running = (1-momentum)*running + momentum*batch, unbiased variance). Otherwise the running stats normalise."""
    args = _checks.batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    return _dispatch.pick(backend, x, gamma, beta, running_mean, running_var).batch_norm(*args)


def batch_norm_backward(dy, x, gamma, mean, invstd, training=True, backend=None):
    """Gradients of batch_norm -> (dx, dgamma, dbeta); mean/invstd as returned by batch_norm.
    training=False differentiates the inference form (fixed statistics)."""
    args = _checks.batch_norm_backward(dy, x, gamma, mean, invstd, training)
    return _dispatch.pick(backend, dy, x, gamma, mean, invstd).batch_norm_backward(*args)


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order="ifgo", backend=None):
    """One LSTM step -> (h_next, c_next, cache). w_ih (D,4H), w_hh (H,4H); gate_order names the 4H blocks."""
    args = _checks.lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order)
    return _dispatch.pick(backend, x, h, c, w_ih, w_hh, bias).lstm_cell(*args)


def lstm_cell_backward(dh_next, dc_next, cache, backend=None):
    """Gradients of lstm_cell -> (dx, dh, dc, dw_ih, dw_hh, dbias); runs on the backend that made the cache."""
    args = _checks.lstm_cell_backward(dh_next, dc_next, cache)
    return _backend_of(cache, backend).lstm_cell_backward(*args)


def lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order="ifgo", backend=None):
    """An LSTM over xs (N,T,D) -> (hs (N,T,H), h_n, c_n, cache)."""
    args = _checks.lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order)
    return _dispatch.pick(backend, xs, h0, c0, w_ih, w_hh, bias).lstm(*args)


def lstm_backward(dhs, dh_n, dc_n, cache, backend=None):
    """Backpropagation through time -> (dxs, dh0, dc0, dw_ih, dw_hh, dbias)."""
    args = _checks.lstm_backward(dhs, dh_n, dc_n, cache)
    return _backend_of(cache, backend).lstm_backward(*args)


# The textbook ops, one section per family (each adds its names to __all__).

# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
__all__ += ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax",
            "softmax_backward", "softmax_cross_entropy", "softmax_cross_entropy_backward", "sigmoid_cross_entropy",
            "sigmoid_cross_entropy_backward"]


def relu(x, backend=None):
    """max(x, 0) elementwise (NaN stays NaN)."""
    args = _checks.relu(x)
    return _dispatch.pick(backend, x).relu(*args)


def relu_backward(dy, y, backend=None):
    """Gradient of relu from its output y: dy where y > 0, else 0."""
    args = _checks.relu_backward(dy, y)
    return _dispatch.pick(backend, dy, y).relu_backward(*args)


def sigmoid(x, backend=None):
    """1 / (1 + exp(-x)) elementwise."""
    args = _checks.sigmoid(x)
    return _dispatch.pick(backend, x).sigmoid(*args)


def sigmoid_backward(dy, y, backend=None):
    """Gradient of sigmoid from its output y: dy * y * (1 - y)."""
    args = _checks.sigmoid_backward(dy, y)
    return _dispatch.pick(backend, dy, y).sigmoid_backward(*args)


def tanh(x, backend=None):
    """tanh(x) elementwise."""
    args = _checks.tanh(x)
    return _dispatch.pick(backend, x).tanh(*args)


def tanh_backward(dy, y, backend=None):
    """Gradient of tanh from its output y: dy * (1 - y*y)."""
    args = _checks.tanh_backward(dy, y)
    return _dispatch.pick(backend, dy, y).tanh_backward(*args)


def softmax(x, backend=None):
    """Softmax over the last axis: exp(x - max) / sum."""
    args = _checks.softmax(x)
    return _dispatch.pick(backend, x).softmax(*args)


def softmax_backward(dy, y, backend=None):
    """Gradient of softmax from its output y: y * (dy - sum(dy*y, last axis))."""
    args = _checks.softmax_backward(dy, y)
    return _dispatch.pick(backend, dy, y).softmax_backward(*args)


def softmax_cross_entropy(x, target, ignore_index=-100, eps=0.0, backend=None):
    """Fused softmax (last axis) + cross-entropy -> (loss: float, probs).

    target: int32/int64 class ids of shape x.shape[:-1] (rows whose label is ignore_index are not counted; a
    label outside [0, V) otherwise is a ValueError), or an array of x's shape (one-hot / probabilities; every row
    counted). loss = mean over counted rows of -log(probs[label] + eps); 0.0 when no row counts. The books add
    eps = 1e-7 inside the log (book 2's TimeSoftmaxWithLoss does not; its ignore_label is -1)."""
    args = _checks.softmax_cross_entropy(x, target, ignore_index, eps)
    return _dispatch.pick(backend, x, args[1]).softmax_cross_entropy(*args)


def softmax_cross_entropy_backward(probs, target, dloss=1.0, ignore_index=-100, backend=None):
    """Gradient of softmax_cross_entropy w.r.t. x: (probs - onehot(target)) * dloss / counted rows; ignored rows 0."""
    args = _checks.softmax_cross_entropy_backward(probs, target, dloss, ignore_index)
    return _dispatch.pick(backend, probs, args[1]).softmax_cross_entropy_backward(*args)


def sigmoid_cross_entropy(x, target, eps=0.0, backend=None):
    """Fused sigmoid + binary cross-entropy -> (loss: float, y = sigmoid(x)).

    target: 0/1 labels (or probabilities) of x's shape, float or int. loss = -mean(t*log(y + eps) +
    (1 - t)*log(1 - y + eps)) over all elements."""
    args = _checks.sigmoid_cross_entropy(x, target, eps)
    return _dispatch.pick(backend, x, args[1]).sigmoid_cross_entropy(*args)


def sigmoid_cross_entropy_backward(y, target, dloss=1.0, backend=None):
    """Gradient of sigmoid_cross_entropy w.r.t. x: (y - t) * dloss / t.size."""
    args = _checks.sigmoid_cross_entropy_backward(y, target, dloss)
    return _dispatch.pick(backend, y, args[1]).sigmoid_cross_entropy_backward(*args)
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
__all__ += ["linear", "linear_backward", "embedding", "embedding_backward", "dropout", "dropout_backward"]


def linear(x, weight, bias=None, backend=None):
    """y = x @ weight + bias over the last axis: x (..., D), weight (D, M) (the books' layout), bias (M,) or None."""
    args = _checks.linear(x, weight, bias)
    return _dispatch.pick(backend, x, weight, bias).linear(*args)


def linear_backward(dy, x, weight, bias=True, backend=None):
    """Gradients of linear -> (dx, dweight, dbias); dbias is None when bias is False."""
    args = _checks.linear_backward(dy, x, weight, bias)
    return _dispatch.pick(backend, dy, x, weight).linear_backward(*args)


def embedding(indices, weight, backend=None):
    """weight[indices]: the rows of weight (V, D) named by an int32/int64 array of any shape -> indices.shape + (D,)."""
    args = _checks.embedding(indices, weight)
    return _dispatch.pick(backend, indices, weight).embedding(*args)


def embedding_backward(dy, indices, num_embeddings, backend=None):
    """Gradient of embedding -> dweight (num_embeddings, D): dy's rows summed into the rows their indices name
    (repeated indices add up, unused rows are 0)."""
    args = _checks.embedding_backward(dy, indices, num_embeddings)
    return _dispatch.pick(backend, dy, indices).embedding_backward(*args)


def dropout(x, p=0.5, seed=0, scale=True, mask=None, backend=None):
    """Dropout: y = x * keep / (1 - p) (scale=False: x * keep). keep_i = u(seed, i) >= p with u a counter-based
    uniform of (seed, flat index i), bit-identical on every backend, so dropout_backward regenerates it from the
    seed. mask (bool or x's dtype, x's shape; e.g. the books' `np.random.rand(*x.shape) > p`) replaces it."""
    args = _checks.dropout(x, p, seed, scale, mask)
    return _dispatch.pick(backend, x, mask).dropout(*args)


def dropout_backward(dy, p=0.5, seed=0, scale=True, mask=None, backend=None):
    """Gradient of dropout: dx = dy * keep (/ (1 - p)), the forward's mask regenerated from the same seed and p."""
    args = _checks.dropout_backward(dy, p, seed, scale, mask)
    return _dispatch.pick(backend, dy, mask).dropout_backward(*args)
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
__all__ += ["rnn_cell", "rnn_cell_backward", "rnn", "rnn_backward", "gru_cell", "gru_cell_backward", "gru",
            "gru_backward", "RNNCache", "GRUCache"]


def rnn_cell(x, h, w_ih, w_hh, bias, backend=None):
    """One tanh RNN step h' = tanh(x @ w_ih + h @ w_hh + bias) -> (h_next, cache). w_ih (D,H), w_hh (H,H)."""
    args = _checks.rnn_cell(x, h, w_ih, w_hh, bias)
    return _dispatch.pick(backend, x, h, w_ih, w_hh, bias).rnn_cell(*args)


def rnn_cell_backward(dh_next, cache, backend=None):
    """Gradients of rnn_cell -> (dx, dh, dw_ih, dw_hh, dbias); runs on the backend that made the cache."""
    args = _checks.rnn_cell_backward(dh_next, cache)
    return _backend_of(cache, backend).rnn_cell_backward(*args)


def rnn(xs, h0, w_ih, w_hh, bias, backend=None):
    """A tanh RNN over xs (N,T,D) -> (hs (N,T,H), h_n, cache)."""
    args = _checks.rnn(xs, h0, w_ih, w_hh, bias)
    return _dispatch.pick(backend, xs, h0, w_ih, w_hh, bias).rnn(*args)


def rnn_backward(dhs, dh_n, cache, backend=None):
    """Backpropagation through time -> (dxs, dh0, dw_ih, dw_hh, dbias)."""
    args = _checks.rnn_backward(dhs, dh_n, cache)
    return _backend_of(cache, backend).rnn_backward(*args)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh", backend=None):
    """One GRU step -> (h_next, cache). w_ih (D,3H), w_hh (H,3H); gate_order "zrh" is book 2's GRU (reset gate on
    h before its product, h' = (1-z)*h + z*h~), "rzn" PyTorch's nn.GRU (reset after, h' = (1-z)*n + z*h)."""
    args = _checks.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, gate_order)
    return _dispatch.pick(backend, x, h, w_ih, w_hh, b_ih, b_hh).gru_cell(*args)


def gru_cell_backward(dh_next, cache, backend=None):
    """Gradients of gru_cell -> (dx, dh, dw_ih, dw_hh, db_ih, db_hh); db_* are None where the bias was None."""
    args = _checks.gru_cell_backward(dh_next, cache)
    return _backend_of(cache, backend).gru_cell_backward(*args)


def gru(xs, h0, w_ih, w_hh, b_ih=None, b_hh=None, gate_order="zrh", backend=None):
    """A GRU over xs (N,T,D) -> (hs (N,T,H), h_n, cache); gate_order as in gru_cell."""
    args = _checks.gru(xs, h0, w_ih, w_hh, b_ih, b_hh, gate_order)
    return _dispatch.pick(backend, xs, h0, w_ih, w_hh, b_ih, b_hh).gru(*args)


def gru_backward(dhs, dh_n, cache, backend=None):
    """Backpropagation through time -> (dxs, dh0, dw_ih, dw_hh, db_ih, db_hh)."""
    args = _checks.gru_backward(dhs, dh_n, cache)
    return _backend_of(cache, backend).gru_backward(*args)
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
# The books' optimizers as fused in-place steps over a list of parameters (the classes: fastnn.optimizer).
# Each returns None; params and the state lists are updated in place, one call for the whole list.
__all__ += ["sgd_step", "momentum_step", "nesterov_step", "adagrad_step", "rmsprop_step", "adam_step"]


def _first(seq):
    return seq[0] if len(seq) else None


def sgd_step(params, grads, lr, backend=None):
    """In place, for each i: params[i] -= lr * grads[i]. One call over the whole list (lists or tuples of arrays
    of one dtype; params C-contiguous and writable)."""
    args = _checks.sgd_step(params, grads, lr)
    _dispatch.pick(backend, _first(params)).sgd_step(*args)


def momentum_step(params, grads, velocities, lr, momentum=0.9, backend=None):
    """In place: v = momentum*v - lr*g; p += v (the books' Momentum; velocities start as zeros)."""
    args = _checks.momentum_step(params, grads, velocities, lr, momentum)
    _dispatch.pick(backend, _first(params)).momentum_step(*args)


def nesterov_step(params, grads, velocities, lr, momentum=0.9, backend=None):
    """In place: v *= m; v -= lr*g; p += m*m*v; p -= (1+m)*lr*g (the books' Nesterov: m*m multiplies the updated
    v, unlike PyTorch's SGD(nesterov=True), p += m*v_new - lr*g)."""
    args = _checks.nesterov_step(params, grads, velocities, lr, momentum)
    _dispatch.pick(backend, _first(params)).nesterov_step(*args)


def adagrad_step(params, grads, sums, lr, eps=1e-7, backend=None):
    """In place: h += g*g; p -= lr*g/(sqrt(h)+eps) (the books' AdaGrad; sums start as zeros)."""
    args = _checks.adagrad_step(params, grads, sums, lr, eps)
    _dispatch.pick(backend, _first(params)).adagrad_step(*args)


def rmsprop_step(params, grads, sums, lr, decay_rate=0.99, eps=1e-7, backend=None):
    """In place: h = d*h + (1-d)*g*g; p -= lr*g/(sqrt(h)+eps) (the books' RMSprop)."""
    args = _checks.rmsprop_step(params, grads, sums, lr, decay_rate, eps)
    _dispatch.pick(backend, _first(params)).rmsprop_step(*args)


def adam_step(params, grads, ms, vs, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7, backend=None):
    """In place, the books' Adam: lr_t = lr*sqrt(1-beta2**step)/(1-beta1**step); m += (1-beta1)*(g-m);
    v += (1-beta2)*(g*g-v); p -= lr_t*m/(sqrt(v)+eps). step counts from 1. PyTorch's Adam adds eps to
    sqrt(v_hat) (the bias-corrected v) instead, so its updates differ slightly for the same eps."""
    args = _checks.adam_step(params, grads, ms, vs, step, lr, beta1, beta2, eps)
    _dispatch.pick(backend, _first(params)).adam_step(*args)
# ==== end optim ====


def _backend_of(cache, backend):
    if backend is not None and backend != cache.backend:
        raise ValueError(f"cache was made by backend {cache.backend!r}; backend={backend!r} cannot use it")
    return _dispatch.module(cache.backend)


def backends():
    """The backends that work on this machine, e.g. ['numpy', 'cpu'] or ['numpy', 'cpu', 'cuda']."""
    return _dispatch.available()


def set_num_threads(n):
    """Threads used by the C++ kernels (the calling thread included): fastnn's own pool, see README "Threads"."""
    from . import _C
    _C.set_num_threads(_checks.integer(n, "n", 1))


def get_num_threads():
    from . import _C
    return _C.get_num_threads()


def share_blas_threads(on=True):
    """Run (on=True) or stop running (on=False) NumPy's OpenBLAS threaded calls on fastnn's pool.

    The cpu backend turns this on when it loads, unless FASTNN_SHARE_BLAS=0: OpenBLAS's own worker spins ~0.1 s
    after each call on the core the next fastnn call wants. OpenBLAS keeps choosing its thread count; only who runs
    the threads changes, and every result stays the same. Needs OpenBLAS >= 0.3.28 (older ones are left alone);
    call it again after loading another OpenBLAS (SciPy's). Returns the paths of the libraries changed."""
    from . import _C, _cpu
    if not isinstance(on, bool):
        raise TypeError(f"on must be a bool, got {type(on).__name__}")
    paths = _C.share_blas_threads(on)
    _cpu.BLAS_SHARED = paths if on else []
    return paths


def empty_cache():
    """Free the output buffers the cpu backend keeps for reuse.

    Outputs of 128 KiB and more come from a cache of freed ones of the same size, so a training loop does not pay
    the kernel's page faults for fresh memory every step. At most FASTNN_CACHE_MB (default 512) MiB are kept."""
    from . import _C
    _C.empty_cache()


def show_config(file=None):
    """Print (and return) what runs here: version, backends, compiler, SIMD variant, threads, GPU."""
    import numpy as np
    cfg = {"fastnn": __version__, "numpy": np.__version__, "backends": backends()}
    try:
        from . import _C
        from . import _cpu
        cfg["cpu"] = dict(_C.config(), threads=_C.get_num_threads(), buffer_cache=_C.buffer_cache_info(),
                          blas_on_fastnn_pool=[p.rsplit("/", 1)[-1] for p in _cpu.BLAS_SHARED])
    except ImportError as e:
        cfg["cpu"] = f"unavailable ({e})"
    try:
        cfg["cuda"] = _dispatch.module("cuda").describe()
    except Exception as e:  # numba missing, no driver, ...: say why rather than fail
        cfg["cuda"] = f"unavailable ({e})"
    for k, v in cfg.items():
        print(f"{k:>9}: {v}", file=file)
    return cfg
