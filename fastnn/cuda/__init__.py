"""fastnn's cuda backend: Numba CUDA kernels, one module per op (see docs/internals.md for the contract).

GPU arrays in (CuPy, PyTorch, Numba, anything with __cuda_array_interface__) -> the same array type out,
zero-copy; NumPy arrays are copied to the device and the results back. Under NUMBA_ENABLE_CUDASIM=1 every
kernel runs in Numba's simulator (the tests do this on tiny shapes)."""
from numba import cuda

from .im2col import im2col, col2im
from .conv2d import conv2d, conv2d_backward
from .pool2d import max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward
from .batch_norm import batch_norm, batch_norm_backward
from .lstm import lstm_cell, lstm_cell_backward, lstm, lstm_backward

__all__ = ["available", "describe", "im2col", "col2im", "conv2d", "conv2d_backward",
           "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "batch_norm", "batch_norm_backward", "lstm_cell", "lstm_cell_backward", "lstm", "lstm_backward"]


# The textbook ops, one section per family (imports, then `__all__ += [...]`).
# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
from .activations import (relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward, softmax,  # noqa: E402
                          softmax_backward, softmax_cross_entropy, softmax_cross_entropy_backward,
                          sigmoid_cross_entropy, sigmoid_cross_entropy_backward)
__all__ += ["relu", "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "softmax",
            "softmax_backward", "softmax_cross_entropy", "softmax_cross_entropy_backward", "sigmoid_cross_entropy",
            "sigmoid_cross_entropy_backward"]
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
from .dense import (linear, linear_backward, embedding, embedding_backward, dropout,  # noqa: E402
                    dropout_backward)
__all__ += ["linear", "linear_backward", "embedding", "embedding_backward", "dropout", "dropout_backward"]
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
from .rnn import (rnn_cell, rnn_cell_backward, rnn, rnn_backward, gru_cell, gru_cell_backward,  # noqa: E402
                  gru, gru_backward)

__all__ += ["rnn_cell", "rnn_cell_backward", "rnn", "rnn_backward", "gru_cell", "gru_cell_backward", "gru",
            "gru_backward"]
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
from .optim import sgd_step, momentum_step, nesterov_step, adagrad_step, rmsprop_step, adam_step

__all__ += ["sgd_step", "momentum_step", "nesterov_step", "adagrad_step", "rmsprop_step", "adam_step"]
# ==== end optim ====


def available():
    """True when kernels can run: a CUDA GPU with a working driver, or the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def describe():
    """The device name, or "simulator" under NUMBA_ENABLE_CUDASIM=1, or why there is none."""
    from numba import config
    if config.ENABLE_CUDASIM:
        return "simulator"
    if not available():
        return "no CUDA device"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)
