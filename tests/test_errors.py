"""Bad input gets a TypeError/ValueError that names the argument, on every backend, before any kernel runs."""
import numpy as np
import pytest

import fastnn

f32 = np.float32
BACKENDS = ["numpy", "cpu", "cuda"]


def r(*shape, dtype=f32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _lstm_cache(backend="numpy"):
    return fastnn.lstm_cell(r(2, 3), None, None, r(3, 8), r(2, 8), r(8), backend=backend)[2]


def _seq_cache(backend="numpy"):
    return fastnn.lstm(r(2, 3, 3), None, None, r(3, 8), r(2, 8), r(8), backend=backend)[3]


# function -> valid keyword arguments (built lazily; the LSTM backward caches come from `backend`)
VALID = {
    "im2col": lambda: dict(x=r(2, 3, 5, 5), kernel_size=3),
    "col2im": lambda: dict(col=r(2 * 9, 27), input_shape=(2, 3, 5, 5), kernel_size=3),
    "conv2d": lambda: dict(x=r(2, 3, 5, 5), weight=r(4, 3, 3, 3), bias=r(4)),
    "conv2d_backward": lambda: dict(dy=r(2, 4, 3, 3), x=r(2, 3, 5, 5), weight=r(4, 3, 3, 3)),
    "max_pool2d": lambda: dict(x=r(2, 3, 4, 4), kernel_size=2),
    "max_pool2d_backward": lambda: dict(dy=r(2, 3, 2, 2), indices=np.zeros((2, 3, 2, 2), np.int64),
                                        input_shape=(2, 3, 4, 4)),
    "avg_pool2d": lambda: dict(x=r(2, 3, 4, 4), kernel_size=2),
    "avg_pool2d_backward": lambda: dict(dy=r(2, 3, 2, 2), input_shape=(2, 3, 4, 4), kernel_size=2),
    "batch_norm": lambda: dict(x=r(4, 3, 2, 2), gamma=r(3), beta=r(3), running_mean=np.zeros(3, f32),
                               running_var=np.ones(3, f32)),
    "batch_norm_backward": lambda: dict(dy=r(4, 3), x=r(4, 3), gamma=r(3), mean=r(3), invstd=r(3)),
    "lstm_cell": lambda: dict(x=r(2, 3), h=r(2, 2), c=r(2, 2), w_ih=r(3, 8), w_hh=r(2, 8), bias=r(8)),
    "lstm_cell_backward": lambda b="numpy": dict(dh_next=r(2, 2), dc_next=r(2, 2), cache=_lstm_cache(b)),
    "lstm": lambda: dict(xs=r(2, 3, 3), h0=None, c0=None, w_ih=r(3, 8), w_hh=r(2, 8), bias=r(8)),
    "lstm_backward": lambda b="numpy": dict(dhs=r(2, 3, 2), dh_n=None, dc_n=None, cache=_seq_cache(b)),
}

# (function, argument, bad value, exception, words the message must contain)
BAD = [
    ("im2col", "x", r(3, 5, 5), ValueError, "x must be 4-D"),
    ("im2col", "x", [[1.0]], TypeError, "x must be"),
    ("im2col", "x", r(2, 3, 5, 5).astype(np.int32), TypeError, "x must be float32 or float64"),
    ("im2col", "x", r(2, 3, 5, 5).astype(np.float16), TypeError, "float32 or float64"),
    ("im2col", "x", r(2, 3, 5, 5).astype(np.complex64), TypeError, "float32 or float64"),
    ("im2col", "x", r(2, 3, 5, 5).astype(bool), TypeError, "float32 or float64"),
    ("im2col", "x", r(2, 3, 5, 5).astype(object), TypeError, "float32 or float64"),
    ("im2col", "x", 3.0, TypeError, "x must be"),
    ("im2col", "kernel_size", 0, ValueError, "kernel_size must be >= 1"),
    ("im2col", "kernel_size", 7, ValueError, "output size"),
    ("im2col", "kernel_size", 2.5, TypeError, "kernel_size must be an int"),
    ("im2col", "kernel_size", (1, 2, 3), ValueError, "kernel_size"),
    ("im2col", "stride", -1, ValueError, "stride must be >= 1"),
    ("im2col", "padding", -1, ValueError, "padding must be >= 0"),
    ("im2col", "dilation", 0, ValueError, "dilation must be >= 1"),
    ("col2im", "col", r(17, 27), ValueError, "col must have shape"),
    ("col2im", "input_shape", (2, 3, 5), ValueError, "input_shape"),
    ("conv2d", "weight", r(4, 2, 3, 3), ValueError, "weight must have shape"),
    ("conv2d", "weight", r(4, 3, 3, 3, dtype=np.float64), TypeError, "mixed precision"),
    ("conv2d", "weight", r(4, 3, 9, 9), ValueError, "output size"),
    ("conv2d", "bias", r(5), ValueError, "bias must have shape"),
    ("conv2d", "groups", 2, ValueError, "groups=2 must divide"),
    ("conv2d", "groups", 0, ValueError, "groups must be >= 1"),
    ("conv2d", "x", r(2, 3, 0, 5), ValueError, "empty"),
    ("conv2d", "x", r(0, 3, 5, 5), ValueError, "empty"),  # zero-size batches are refused on every op
    ("conv2d", "weight", r(0, 3, 3, 3), ValueError, "weight of shape (0, 3, 3, 3) is empty"),
    ("conv2d_backward", "weight", r(0, 3, 3, 3), ValueError, "weight of shape (0, 3, 3, 3) is empty"),
    ("conv2d_backward", "x", r(0, 3, 5, 5), ValueError, "empty"),
    ("max_pool2d", "x", r(0, 3, 4, 4), ValueError, "empty"),
    ("batch_norm_backward", "x", r(0, 3), ValueError, "empty"),
    ("lstm_cell", "x", r(0, 3), ValueError, "x of shape (0, 3) is empty"),
    ("lstm", "xs", r(0, 3, 3), ValueError, "xs of shape (0, 3, 3) is empty"),
    ("conv2d_backward", "dy", r(2, 4, 3, 4), ValueError, "dy must have shape"),
    ("max_pool2d", "padding", 2, ValueError, "at most half the kernel"),
    ("max_pool2d", "kernel_size", 5, ValueError, "output size"),
    ("max_pool2d", "stride", 0, ValueError, "stride must be >= 1"),
    ("max_pool2d_backward", "indices", np.zeros((2, 3, 2, 2), np.int32), TypeError, "indices must be an int64"),
    ("max_pool2d_backward", "indices", np.zeros((2, 3, 2, 1), np.int64), ValueError, "indices must have shape"),
    ("max_pool2d_backward", "input_shape", (2, 4, 4, 4), ValueError, "does not match input_shape"),
    ("avg_pool2d_backward", "dy", r(2, 3, 3, 2), ValueError, "dy must have shape"),
    ("batch_norm", "x", r(4, 3, 2), ValueError, "x must be 2-D or 4-D"),
    ("batch_norm", "gamma", r(4), ValueError, "gamma must have shape (3,)"),
    ("batch_norm", "running_var", None, ValueError, "running_mean and running_var"),
    ("batch_norm", "running_mean", np.zeros(3, np.float64), TypeError, "running_mean has dtype"),
    ("batch_norm", "momentum", 1.5, ValueError, "momentum"),
    ("batch_norm", "eps", 0.0, ValueError, "eps must be > 0"),
    ("batch_norm", "x", r(1, 3), ValueError, "more than one value per channel"),
    ("batch_norm_backward", "invstd", r(2), ValueError, "invstd must have shape (3,)"),
    ("batch_norm_backward", "dy", r(4, 3, 1, 1), ValueError, "dy must be 2-D"),
    ("lstm_cell", "w_ih", r(4, 8), ValueError, "w_ih must have shape (3, 8)"),
    ("lstm_cell", "w_hh", r(2, 6), ValueError, "w_hh must have shape (2, 8)"),
    ("lstm_cell", "h", r(2, 3), ValueError, "h must have shape (2, 2)"),
    ("lstm_cell", "bias", r(7), ValueError, "bias must have shape (8,)"),
    ("lstm_cell", "gate_order", "ifgx", ValueError, "gate_order"),
    ("lstm_cell_backward", "cache", (1, 2), TypeError, "cache must be the LSTMCache"),
    ("lstm_cell_backward", "dh_next", r(2, 3), ValueError, "dh_next must have shape (2, 2)"),
    ("lstm", "xs", r(2, 0, 3), ValueError, "at least one time step"),
    ("lstm", "c0", r(3, 2), ValueError, "c0 must have shape (2, 2)"),
    ("lstm_backward", "dhs", r(2, 2, 2), ValueError, "dhs must have shape (2, 3, 2)"),
]


# The checks' one-pass paths for the common calls give what the per-argument checks give.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation", [
    ((2, 3, 7, 5), (4, 3, 3, 3), 1, 1, 1), ((1, 1, 4, 4), (1, 1, 1, 1), 2, 0, 1), ((2, 2, 9, 9), (3, 2, 3, 2), 3, 2, 2),
    ((1, 2, 5, 5), (2, 2, 5, 5), 1, 0, 1), ((1, 1, 3, 8), (1, 1, 3, 3), 4, 1, 1)])
def test_conv_checks_common_call_path_agrees_with_the_full_checks(monkeypatch, xs, ws, stride, padding, dilation,
                                                                    dtype):
    """_checks._conv_common accepts the common call in one pass; its result is the full checks' to the value."""
    from fastnn import _checks
    x, w, b, dy = np.zeros(xs, dtype), np.zeros(ws, dtype), np.zeros(ws[0], dtype), None
    assert _checks._conv_common(x, w, stride, padding, dilation, 1) is not None
    fast = _checks.conv2d(x, w, b, stride, padding, dilation, 1)
    with monkeypatch.context() as m:
        m.setattr(_checks, "_conv_common", lambda *a: None)
        full = _checks.conv2d(x, w, b, stride, padding, dilation, 1)
        dy = np.zeros((xs[0], ws[0]) + full[1], dtype)
        full_bwd = _checks.conv2d_backward(dy, x, w, stride, padding, dilation, 1)
    assert fast[0][3:] == full[0][3:] and fast[1] == full[1]
    assert all(a is c for a, c in zip(fast[0][:3], full[0][:3]))
    assert _checks.conv2d_backward(dy, x, w, stride, padding, dilation, 1)[3:] == full_bwd[3:]
    for bad in (dict(stride=True), dict(groups=2), dict(dilation=np.int64(1))):   # the full checks take these
        assert _checks._conv_common(x, w, **(dict(stride=stride, padding=padding, dilation=dilation, groups=1) | bad)) \
            is None


@pytest.mark.parametrize("xs, k, stride, padding", [
    ((2, 3, 4, 4), 2, None, 0), ((1, 1, 7, 5), 3, 2, 1), ((2, 2, 9, 9), 3, 1, 0), ((1, 1, 3, 8), 1, 4, 0)])
def test_pool_checks_int_window_path_agrees_with_the_pair_path(xs, k, stride, padding):
    """An int window takes _checks._pool's one-pass path, pairs the per-argument checks: the same result."""
    from fastnn import _checks
    x = np.zeros(xs, f32)
    pairs = ((k, k), None if stride is None else (stride, stride), (padding, padding))
    assert _checks.max_pool2d(x, k, stride, padding)[1:] == _checks.max_pool2d(x, *pairs)[1:]
    assert _checks.avg_pool2d(x, k, stride, padding, True)[1:] == _checks.avg_pool2d(x, *pairs, True)[1:]
    assert _checks.max_pool2d(x, k, stride, padding)[0][1:] == _checks.max_pool2d(x, *pairs)[0][1:]


# The textbook ops, one section per family: VALID.update({...}) and BAD += [...].
# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
_ids = lambda: np.array([0, 3, -100])  # noqa: E731
VALID.update({
    "relu": lambda: dict(x=r(2, 3)),
    "relu_backward": lambda: dict(dy=r(2, 3), y=r(2, 3)),
    "sigmoid": lambda: dict(x=r(2, 3)),
    "sigmoid_backward": lambda: dict(dy=r(2, 3), y=r(2, 3)),
    "tanh": lambda: dict(x=r(4)),
    "tanh_backward": lambda: dict(dy=r(4), y=r(4)),
    "softmax": lambda: dict(x=r(3, 4)),
    "softmax_backward": lambda: dict(dy=r(3, 4), y=r(3, 4)),
    "softmax_cross_entropy": lambda: dict(x=r(3, 4), target=_ids()),
    "softmax_cross_entropy_backward": lambda: dict(probs=r(3, 4), target=_ids(), dloss=2.0),
    "sigmoid_cross_entropy": lambda: dict(x=r(5), target=np.array([0, 1, 1, 0, 1])),
    "sigmoid_cross_entropy_backward": lambda: dict(y=r(5), target=r(5)),
})
BAD += [
    ("relu", "x", r(0, 3), ValueError, "x of shape (0, 3) is empty"),
    ("relu", "x", r(2, 3).astype(np.int64), TypeError, "x must be float32 or float64"),
    ("sigmoid", "x", [1.0, 2.0], TypeError, "x must be a NumPy or GPU array"),
    ("tanh_backward", "dy", r(3), ValueError, "dy must have shape (4,)"),
    ("relu_backward", "dy", r(2, 3, dtype=np.float64), TypeError, "dy has dtype float64"),
    ("sigmoid_backward", "y", r(0), ValueError, "y of shape (0,) is empty"),
    ("softmax", "x", np.ones((), np.float32), ValueError, "at least 1 dimension"),
    ("softmax", "x", r(3, 0), ValueError, "empty"),
    ("softmax_backward", "y", r(3, 5), ValueError, "dy must have shape (3, 5)"),
    ("softmax_cross_entropy", "target", np.array([0, 1]), ValueError, "target must have shape (3,) (class ids)"),
    ("softmax_cross_entropy", "target", np.array([0.0, 1.0, 2.0]), TypeError, "must be an integer array"),
    ("softmax_cross_entropy", "target", r(3, 4, dtype=np.float64), TypeError, "must have x's dtype"),
    ("softmax_cross_entropy", "target", [0, 1, 2], TypeError, "target must be a NumPy or GPU array"),
    ("softmax_cross_entropy", "target", np.array([0, 4, 1]), ValueError,
     "target: label 4 at position 1 is outside [0, 4) and is not ignore_index (-100)"),
    ("softmax_cross_entropy", "ignore_index", 1.5, TypeError, "ignore_index must be an int"),
    ("softmax_cross_entropy", "ignore_index", 1 << 64, ValueError, "ignore_index must fit in int64"),
    ("softmax_cross_entropy", "eps", -1e-7, ValueError, "eps must be in [0.0, None]"),
    ("softmax_cross_entropy", "eps", "0", TypeError, "eps must be a number"),
    ("softmax_cross_entropy", "x", r(0, 4), ValueError, "x of shape (0, 4) is empty"),
    ("softmax_cross_entropy_backward", "target", np.array([0, -1, 2]), ValueError,
     "target: label -1 at position 1 is outside [0, 4) and is not ignore_index (-100)"),
    ("softmax_cross_entropy_backward", "dloss", float("nan"), ValueError, "dloss must be in"),
    ("softmax_cross_entropy_backward", "probs", r(3, 4).astype(np.float16), TypeError, "float32 or float64"),
    ("sigmoid_cross_entropy", "target", np.array([0, 1, 1]), ValueError, "target must have x's shape (5,)"),
    ("sigmoid_cross_entropy", "target", r(5, dtype=np.float64), TypeError, "target has dtype float64"),
    ("sigmoid_cross_entropy", "eps", float("inf"), ValueError, "eps must be in"),
    ("sigmoid_cross_entropy_backward", "y", r(5, dtype=np.float64), TypeError, "target has dtype float32"),
    ("sigmoid_cross_entropy_backward", "dloss", None, TypeError, "dloss must be a number"),
]
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
VALID.update({
    "linear": lambda: dict(x=r(2, 5, 3), weight=r(3, 4), bias=r(4)),
    "linear_backward": lambda: dict(dy=r(2, 5, 4), x=r(2, 5, 3), weight=r(3, 4)),
    "embedding": lambda: dict(indices=np.array([[0, 2], [1, 2]]), weight=r(3, 4)),
    "embedding_backward": lambda: dict(dy=r(2, 2, 4), indices=np.array([[0, 2], [1, 2]], np.int32),
                                       num_embeddings=3),
    "dropout": lambda: dict(x=r(3, 4), p=0.5, seed=1),
    "dropout_backward": lambda: dict(dy=r(3, 4), p=0.5, seed=1, mask=r(3, 4) > 0),
})
BAD += [
    ("linear", "x", r(2, 5, 4), ValueError, "x must have shape (..., D) with D = weight.shape[0] = 3"),
    ("linear", "x", r(2, 0, 3), ValueError, "is empty"),
    ("linear", "x", r(2, 3).astype(np.int64), TypeError, "x must be float32 or float64"),
    ("linear", "weight", r(3, 4, 1), ValueError, "weight must be 2-D"),
    ("linear", "weight", r(3, 4, dtype=np.float64), TypeError, "mixed precision"),
    ("linear", "bias", r(5), ValueError, "bias must have shape (4,)"),
    ("linear_backward", "dy", r(2, 5, 3), ValueError, "dy must have shape (2, 5, 4)"),
    ("linear_backward", "dy", r(10, 4), ValueError, "dy must be 3-D"),
    ("embedding", "indices", np.array([0.0, 1.0]), TypeError, "indices must be an int32 or int64 array"),
    ("embedding", "indices", [0, 1], TypeError, "indices must be an int32 or int64 array"),
    ("embedding", "indices", np.array([0, 1], np.int16), TypeError, "int32 or int64"),
    ("embedding", "indices", np.zeros((2, 0), np.int64), ValueError, "indices of shape (2, 0) is empty"),
    ("embedding", "indices", np.array([0, 3]), ValueError, "indices: 3 at position 1 is outside [0, 3)"),
    ("embedding", "indices", np.array([-1, 0]), ValueError, "indices: -1 at position 0 is outside [0, 3)"),
    ("embedding", "weight", r(3), ValueError, "weight must be 2-D"),
    ("embedding_backward", "dy", r(2, 3, 4), ValueError, "dy must have shape indices.shape + (D,)"),
    ("embedding_backward", "num_embeddings", 0, ValueError, "num_embeddings must be >= 1"),
    ("embedding_backward", "num_embeddings", 2, ValueError, "indices: 2 at position 1 is outside [0, 2)"),
    ("embedding_backward", "num_embeddings", 3.0, TypeError, "num_embeddings must be an int"),
    ("dropout", "p", 1.5, ValueError, "p must be in [0.0, 1.0]"),
    ("dropout", "p", -0.1, ValueError, "p must be in"),
    ("dropout", "p", "0.5", TypeError, "p must be a number"),
    ("dropout", "seed", -1, ValueError, "seed must be >= 0"),
    ("dropout", "seed", 1 << 64, ValueError, "seed must be < 2**64"),
    ("dropout", "seed", 1.5, TypeError, "seed must be an int"),
    ("dropout", "x", r(3, 0), ValueError, "x of shape (3, 0) is empty"),
    ("dropout", "mask", r(3, 5) > 0, ValueError, "mask must have shape (3, 4)"),
    ("dropout", "mask", np.ones((3, 4), np.int32), TypeError, "mask must be bool or x's dtype float32"),
    ("dropout", "mask", [[True]], TypeError, "mask must be a NumPy or GPU array"),
    ("dropout_backward", "dy", [1.0], TypeError, "dy must be a NumPy or GPU array"),
    ("dropout_backward", "mask", r(3, 4, dtype=np.float64), TypeError, "mask must be bool or dy's dtype"),
]
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
def _rnn_cache(backend="numpy", seq=False):
    if seq:
        return fastnn.rnn(r(2, 3, 3), None, r(3, 2), r(2, 2), r(2), backend=backend)[2]
    return fastnn.rnn_cell(r(2, 3), None, r(3, 2), r(2, 2), r(2), backend=backend)[1]


def _gru_cache(backend="numpy", seq=False):
    if seq:
        return fastnn.gru(r(2, 3, 3), None, r(3, 6), r(2, 6), backend=backend)[2]
    return fastnn.gru_cell(r(2, 3), None, r(3, 6), r(2, 6), r(6), r(6), "rzn", backend=backend)[1]


VALID.update({
    "rnn_cell": lambda: dict(x=r(2, 3), h=r(2, 2), w_ih=r(3, 2), w_hh=r(2, 2), bias=r(2)),
    "rnn_cell_backward": lambda b="numpy": dict(dh_next=r(2, 2), cache=_rnn_cache(b)),
    "rnn": lambda: dict(xs=r(2, 3, 3), h0=None, w_ih=r(3, 2), w_hh=r(2, 2), bias=None),
    "rnn_backward": lambda b="numpy": dict(dhs=r(2, 3, 2), dh_n=None, cache=_rnn_cache(b, seq=True)),
    "gru_cell": lambda: dict(x=r(2, 3), h=r(2, 2), w_ih=r(3, 6), w_hh=r(2, 6), b_ih=r(6), b_hh=None),
    "gru_cell_backward": lambda b="numpy": dict(dh_next=r(2, 2), cache=_gru_cache(b)),
    "gru": lambda: dict(xs=r(2, 3, 3), h0=r(2, 2), w_ih=r(3, 6), w_hh=r(2, 6), gate_order="rzn"),
    "gru_backward": lambda b="numpy": dict(dhs=None, dh_n=r(2, 2), cache=_gru_cache(b, seq=True)),
})

BAD += [
    ("rnn_cell", "x", r(0, 3), ValueError, "x of shape (0, 3) is empty"),
    ("rnn_cell", "x", r(2, 3, 1), ValueError, "x must be 2-D"),
    ("rnn_cell", "w_ih", r(4, 2), ValueError, "w_ih must have shape (3, 2)"),
    ("rnn_cell", "w_hh", r(2, 3), ValueError, "w_hh must have shape (2, 2)"),
    ("rnn_cell", "w_hh", r(2, 2, dtype=np.float64), TypeError, "mixed precision"),
    ("rnn_cell", "h", r(3, 2), ValueError, "h must have shape (2, 2)"),
    ("rnn_cell", "bias", r(3), ValueError, "bias must have shape (2,)"),
    ("rnn_cell", "bias", [0.0, 1.0], TypeError, "bias must be a NumPy or GPU array"),
    ("rnn_cell_backward", "cache", (1, 2), TypeError, "cache must be the RNNCache"),
    ("rnn_cell_backward", "cache", _rnn_cache(seq=True), ValueError, "use rnn_backward"),
    ("rnn_cell_backward", "dh_next", r(2, 3), ValueError, "dh_next must have shape (2, 2)"),
    ("rnn", "xs", r(2, 0, 3), ValueError, "at least one time step"),
    ("rnn", "xs", r(0, 3, 3), ValueError, "xs of shape (0, 3, 3) is empty"),
    ("rnn", "h0", r(2, 3), ValueError, "h0 must have shape (2, 2)"),
    ("rnn", "w_hh", r(0, 0), ValueError, "hidden size > 0"),
    ("rnn_backward", "cache", _gru_cache(seq=True), TypeError, "cache must be the RNNCache"),
    ("rnn_backward", "dhs", r(2, 2, 2), ValueError, "dhs must have shape (2, 3, 2)"),
    ("rnn_backward", "dh_n", r(1, 2), ValueError, "dh_n must have shape (2, 2)"),
    ("gru_cell", "w_ih", r(3, 4), ValueError, "w_ih must have shape (3, 6)"),
    ("gru_cell", "w_hh", r(2, 8), ValueError, "w_hh must have shape (2, 6)"),
    ("gru_cell", "b_ih", r(4), ValueError, "b_ih must have shape (6,)"),
    ("gru_cell", "b_hh", r(6, dtype=np.float64), TypeError, "b_hh has dtype float64"),
    ("gru_cell", "gate_order", "ifgo", ValueError, "gate_order must be 'zrh'"),
    ("gru_cell", "gate_order", None, ValueError, "gate_order must be 'zrh'"),
    ("gru_cell_backward", "cache", _lstm_cache(), TypeError, "cache must be the GRUCache"),
    ("gru_cell_backward", "cache", _gru_cache(seq=True), ValueError, "use gru_backward"),
    ("gru_cell_backward", "dh_next", r(3, 2), ValueError, "dh_next must have shape (2, 2)"),
    ("gru", "xs", r(2, 3), ValueError, "xs must be 3-D"),
    ("gru", "h0", r(2, 3), ValueError, "h0 must have shape (2, 2)"),
    ("gru", "gate_order", "zrn", ValueError, "gate_order must be 'zrh'"),
    ("gru_backward", "cache", _gru_cache(), ValueError, "use gru_cell_backward"),
    ("gru_backward", "dhs", r(2, 3, 3), ValueError, "dhs must have shape (2, 3, 2)"),
]
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
def _plist(*shapes, dtype=f32, positive=False):
    return [np.abs(r(*s, dtype=dtype)) if positive else r(*s, dtype=dtype) for s in shapes]


def _read_only_param():
    a = r(3, 4)
    a.flags.writeable = False
    return [a, r(5)]


VALID.update({
    "sgd_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)), lr=0.1),
    "momentum_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)),
                                  velocities=_plist((3, 4), (5,)), lr=0.1, momentum=0.9),
    "nesterov_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)),
                                  velocities=_plist((3, 4), (5,)), lr=0.1),
    "adagrad_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)),
                                 sums=_plist((3, 4), (5,), positive=True), lr=0.1),
    "rmsprop_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)),
                                 sums=_plist((3, 4), (5,), positive=True), lr=0.1, decay_rate=0.9),
    "adam_step": lambda: dict(params=_plist((3, 4), (5,)), grads=_plist((3, 4), (5,)), ms=_plist((3, 4), (5,)),
                              vs=_plist((3, 4), (5,), positive=True), step=2),
})
BAD += [
    ("sgd_step", "grads", _plist((3, 4)), ValueError, "grads has 1 arrays but params has 2"),
    ("sgd_step", "grads", _plist((3, 4), (6,)), ValueError, "grads[1] must have the shape of its parameter, (5,)"),
    ("sgd_step", "grads", _plist((3, 4), (5,), dtype=np.float64), TypeError, "grads[0] has dtype float64"),
    ("sgd_step", "grads", [r(3, 4), [1.0] * 5], TypeError, "grads[1] must be a NumPy or GPU array"),
    ("sgd_step", "params", _read_only_param(), ValueError, "params[0] is updated in place"),
    ("sgd_step", "params", [r(4, 3).T, r(5)], ValueError, "params[0] is updated in place and must be a writable "
                                                         "C-contiguous array (not C-contiguous)"),
    ("sgd_step", "params", [r(3, 4), r(10)[::2]], ValueError, "params[1] is updated in place"),
    ("sgd_step", "params", [r(3, 4).astype(np.int32), r(5)], TypeError, "params[0] must be float32 or float64"),
    ("sgd_step", "params", {"W": r(3, 4), "b": r(5)}, TypeError, "params must be a list or tuple of arrays, got dict"),
    ("sgd_step", "params", r(3, 4), TypeError, "params must be a list or tuple"),
    ("sgd_step", "lr", float("nan"), ValueError, "lr must be"),
    ("sgd_step", "lr", "0.1", TypeError, "lr must be a number"),
    ("momentum_step", "velocities", _plist((3, 4)), ValueError, "velocities has 1 arrays but params has 2"),
    ("momentum_step", "velocities", _plist((4, 3), (5,)), ValueError, "velocities[0] must have the shape"),
    ("momentum_step", "momentum", 1.5, ValueError, "momentum must be in"),
    ("nesterov_step", "velocities", [r(3, 4), r(5, 2)[:, 0]], ValueError,
     "velocities[1] is updated in place"),
    ("adagrad_step", "sums", _plist((3, 4), (5,), dtype=np.float64), TypeError, "sums[0] has dtype float64"),
    ("adagrad_step", "eps", -1.0, ValueError, "eps must be in"),
    ("rmsprop_step", "decay_rate", 2.0, ValueError, "decay_rate must be in"),
    ("rmsprop_step", "sums", None, TypeError, "sums must be a list or tuple"),
    ("adam_step", "step", 0, ValueError, "step must be >= 1"),
    ("adam_step", "step", 1.5, TypeError, "step must be an int"),
    ("adam_step", "beta1", 1.0, ValueError, "beta1 must be < 1"),
    ("adam_step", "beta2", -0.1, ValueError, "beta2 must be in"),
    ("adam_step", "vs", _plist((3, 4), (5,))[:1] + [r(5, 1)], ValueError, "vs[1] must have the shape"),
    ("adam_step", "ms", _read_only_param(), ValueError, "ms[0] is updated in place"),
]
# ==== end optim ====


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn,arg,value,exc,words", BAD, ids=[f"{b[0]}-{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_argument(fn, arg, value, exc, words, backend):
    kwargs = VALID[fn]()
    kwargs[arg] = value
    with pytest.raises(exc) as e:
        getattr(fastnn, fn)(**kwargs, backend=backend)
    assert words in str(e.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-1, 16, 1 << 40])
@pytest.mark.parametrize("where", [0, 7, 23])
def test_max_pool2d_backward_refuses_an_index_outside_its_plane(bad, where, backend):
    """Found by the scatter itself on the fast backends; never a partial result, never a write out of the plane."""
    x = r(2, 3, 4, 4)
    y, idx = fastnn.max_pool2d(x, 2, backend="numpy")
    idx = idx.copy()
    idx.reshape(-1)[where] = bad
    before = idx.copy()
    with pytest.raises(ValueError) as e:
        fastnn.max_pool2d_backward(np.ones_like(y), idx, x.shape, backend=backend)
    assert str(e.value) == (f"indices: {bad} at position {where} is outside [0, 16), the flat positions ih*W+iw "
                            "of an input plane")
    np.testing.assert_array_equal(idx, before)


@pytest.mark.parametrize("fn", sorted(VALID))
def test_valid_arguments_pass_validation(fn):
    # The table's valid calls really are valid: the reference runs them.
    getattr(fastnn, fn)(**VALID[fn](), backend="numpy")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastnn.conv2d(r(1, 1, 3, 3), r(1, 1, 1, 1), backend="tpu")


def test_backward_on_another_backend_is_refused():
    with pytest.raises(ValueError, match="cache was made by backend 'numpy'"):
        fastnn.lstm_cell_backward(None, None, _lstm_cache(), backend="cpu")


def test_inputs_not_modified_by_validation_failure():
    x = r(2, 3, 5, 5)
    before = x.copy()
    with pytest.raises(ValueError):
        fastnn.conv2d(x, r(4, 3, 3, 3), stride=0)
    np.testing.assert_array_equal(x, before)


class FakeTorchCUDA:
    """Stands for a PyTorch CUDA tensor in validation (no GPU needed): torch's attribute names, a dtype that is not
    a NumPy dtype, and an interface that, like torch's, is built anew on each read and raises when grad is required."""
    __module__ = "torch"
    is_cuda, is_sparse = True, False
    reads = 0

    def __init__(self, a, requires_grad=False):
        self.a, self.requires_grad, self.shape, self.ndim = a, requires_grad, a.shape, a.ndim
        self.dtype = f"torch.{a.dtype}"

    @property
    def __cuda_array_interface__(self):
        if self.requires_grad:
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad.")
        FakeTorchCUDA.reads += 1
        return dict(typestr=self.a.dtype.str, shape=self.shape, strides=None, data=(0, False), version=2)


def _fake_lstm_args(grad=()):
    arrays = dict(x=r(2, 3), h=r(2, 2), c=r(2, 2), w_ih=r(3, 8), w_hh=r(2, 8), bias=r(8))
    return {k: FakeTorchCUDA(v, requires_grad=k in grad) for k, v in arrays.items()}


def test_torch_tensor_requiring_grad_is_refused_by_name():
    with pytest.raises(TypeError, match=r"w_hh requires grad: .* pass w_hh.detach\(\)"):
        fastnn.lstm_cell(**_fake_lstm_args(grad=("w_hh",)))


def test_torch_interface_read_once_per_dtype():
    # Validation and dispatch take is_cuda and a cached dtype instead of torch's per-read interface dict.
    from fastnn import _checks, _dispatch
    args = _fake_lstm_args()
    _checks.lstm_cell(**args, gate_order="ifgo")
    FakeTorchCUDA.reads = 0
    _checks.lstm_cell(**args, gate_order="ifgo")
    assert all(_dispatch.is_gpu_array(a) for a in args.values())
    assert FakeTorchCUDA.reads == 0
    with pytest.raises(TypeError, match="w_ih has dtype float64 but the other arguments are float32"):
        _checks.lstm_cell(**dict(args, w_ih=FakeTorchCUDA(r(3, 8, dtype=np.float64))), gate_order="ifgo")
