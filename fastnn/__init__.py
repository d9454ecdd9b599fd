"""fastnn: fast neural-network kernels for NumPy and GPU arrays.

Every function validates its arguments (fastnn._checks), picks a backend (fastnn._dispatch: `backend=` or
$FASTNN_BACKEND, else "cuda" for GPU arrays and "cpu" for NumPy arrays) and runs the function of the same name
there. `fastnn.reference` is the NumPy specification every backend is tested against.
"""
from . import _checks, _dispatch
from .reference import LSTMCache

__version__ = "0.1.0"

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "batch_norm", "batch_norm_backward", "lstm_cell", "lstm_cell_backward", "lstm",
    "lstm_backward", "LSTMCache", "backends", "show_config", "set_num_threads", "get_num_threads", "empty_cache",
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
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
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


def empty_cache():
    """Free the output buffers the cpu backend keeps for reuse.

    Outputs of 1 MiB and more come from a cache of freed ones of the same size, so a training loop does not pay
    the kernel's page faults for fresh memory every step. At most FASTNN_CACHE_MB (default 512) MiB are kept."""
    from . import _C
    _C.empty_cache()


def show_config(file=None):
    """Print (and return) what runs here: version, backends, compiler, SIMD variant, threads, GPU."""
    import numpy as np
    cfg = {"fastnn": __version__, "numpy": np.__version__, "backends": backends()}
    try:
        from . import _C
        cfg["cpu"] = dict(_C.config(), threads=_C.get_num_threads(), buffer_cache=_C.buffer_cache_info())
    except ImportError as e:
        cfg["cpu"] = f"unavailable ({e})"
    try:
        cfg["cuda"] = _dispatch.module("cuda").describe()
    except Exception as e:  # numba missing, no driver, ...: say why rather than fail
        cfg["cuda"] = f"unavailable ({e})"
    for k, v in cfg.items():
        print(f"{k:>9}: {v}", file=file)
    return cfg
