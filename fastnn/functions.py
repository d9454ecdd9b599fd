"""The books' activation and loss functions, fast: a drop-in for book 1/2's ``common/functions.py``::

    # from common.functions import softmax, cross_entropy_error, sigmoid, relu
    from fastnn.functions import softmax, cross_entropy_error, sigmoid, relu

float32/float64 NumPy arrays run fastnn's kernels (``fastnn.softmax``, ``fastnn.sigmoid``, ``fastnn.relu``) on
the ``cpu`` backend, CuPy arrays on the ``cuda`` backend; anything else (Python scalars, lists, integer arrays,
0-d arrays) runs the books' NumPy expression, so results never change type. Every function takes a keyword-only
``backend=None``. Differences from the books: ``softmax`` works over the last axis for any ndim (book 1's
version; book 2's returns inputs of 3 or more dims unchanged); ``sigmoid`` does not warn on overflow.
"""
import numpy as np

import fastnn as _F
from .layers import _is_float_array, _xp

__all__ = ["softmax", "cross_entropy_error", "sigmoid", "relu"]


def sigmoid(x, *, backend=None):
    """``1 / (1 + exp(-x))`` elementwise."""
    if _is_float_array(x):
        return _F.sigmoid(x, backend=backend)
    return 1 / (1 + np.exp(-x))


def relu(x, *, backend=None):
    """``max(0, x)`` elementwise (``np.maximum(0, x)`` in the books)."""
    if _is_float_array(x):
        return _F.relu(x, backend=backend)
    return np.maximum(0, x)


def softmax(x, *, backend=None):
    """Softmax over the last axis (``exp(x - max) / sum``)."""
    if _is_float_array(x):
        return _F.softmax(x, backend=backend)
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """The books' mean cross-entropy of probabilities ``y`` (N, V) (or (V,) for one sample) against class indices
    ``t`` (N,) or one-hot labels of ``y``'s shape: ``-sum(log(y[n, t[n]] + 1e-7)) / N``.

    It only gathers N probabilities, so it stays in NumPy (CuPy for CuPy arrays)."""
    xp = _xp(y)
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    n = y.shape[0]
    return -xp.sum(xp.log(y[xp.arange(n), t] + 1e-7)) / n
