"""Argument validation shared by every backend: one place that turns bad input into a TypeError/ValueError naming
the argument, and normalises int-or-pair arguments to (h, w) tuples. Arrays keep their type (NumPy or GPU)."""
import math
import numbers

import numpy as np

from . import _shapes
from ._dispatch import is_gpu_array

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOATS  # NumPy's native float dtypes are singletons: fast paths test them with `is` (a dtype that is
                     # not one of them takes the full checks, which compare with ==)


# Fast paths first: a NumPy array, a Python int. They decide almost every call, and each check below costs a tiny
# op's call more than its kernel does (an isinstance against numbers.Integral alone ~0.3 us).
_ndarray = np.ndarray


def _is_array(a):
    return type(a) is _ndarray or isinstance(a, _ndarray) or is_gpu_array(a)


_DTYPES = {}      # torch.dtype -> NumPy dtype (read once from __cuda_array_interface__, which builds a dict)


def dtype_of(a):
    dt = getattr(a, "dtype", None)
    if isinstance(dt, np.dtype):  # NumPy, CuPy, Numba
        return dt
    if dt is None:
        return np.dtype(a.__cuda_array_interface__["typestr"])
    if dt not in _DTYPES:         # PyTorch
        _DTYPES[dt] = np.dtype(a.__cuda_array_interface__["typestr"])
    return _DTYPES[dt]


def array(a, name, ndim=None, dtype=None, optional=False):
    """Check that `a` is a float32/float64 NumPy or GPU array (of `ndim` dims, of `dtype` if given); return it."""
    if a is None and optional:
        return None
    if type(a) is _ndarray and a.dtype in FLOATS and (dtype is None or a.dtype == dtype) and (
            ndim is None or a.ndim == ndim or (type(ndim) is tuple and a.ndim in ndim)):
        return a  # a valid NumPy array; anything else takes the checks below, which word every refusal
    if not _is_array(a):
        raise TypeError(f"{name} must be a NumPy or GPU array, got {type(a).__name__}")
    if getattr(a, "requires_grad", False):
        raise TypeError(f"{name} requires grad: fastnn records no autograd graph, pass {name}.detach()")
    dt = dtype_of(a)
    if dt not in FLOATS:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    if dtype is not None and dt != dtype:
        raise TypeError(f"{name} has dtype {dt} but the other arguments are {dtype}: mixed precision is not supported")
    shape = tuple(a.shape)
    if ndim is not None and len(shape) not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name} must be {_dims(ndim)}, got shape {shape}")
    return a


def _dims(ndim):
    return " or ".join(f"{n}-D" for n in (ndim if isinstance(ndim, tuple) else (ndim,)))


def same_kind(**arrays):
    """All arrays on the host or all on the GPU."""
    for a in arrays.values():
        if a is not None and type(a) is not _ndarray:
            break
    else:
        return
    kinds = {name: isinstance(a, np.ndarray) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        host = [n for n, k in kinds.items() if k]
        gpu = [n for n, k in kinds.items() if not k]
        raise TypeError(f"mixing NumPy arrays ({', '.join(host)}) with GPU arrays ({', '.join(gpu)})")


def shape_is(a, name, shape):
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def integer(v, name, minimum):
    if type(v) is int and v >= minimum:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def pair(v, name, minimum):
    """int or (int, int) -> (int, int), each >= minimum."""
    if type(v) is int and v >= minimum:
        return v, v
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return integer(v[0], name, minimum), integer(v[1], name, minimum)
    v = integer(v, name, minimum)
    return v, v


def number(v, name, lo=None, hi=None):
    if type(v) is float and v - v == 0.0 and (lo is None or v >= lo) and (hi is None or v <= hi):  # finite
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def out_size(size, k, s, p, d, what):
    o = _shapes.out_size(size, k, s, p, d)
    if o <= 0:
        raise ValueError(f"{what}: output size would be {o} (input {size}, kernel {k}, dilation {d}, "
                         f"padding {p}, stride {s}); the kernel is larger than the padded input")
    return o


def bad_pool_index(value, position, hw):
    """The error of max_pool2d_backward for an index outside its plane; every backend raises it with these words
    (the C++ kernel builds the same string: bad_pool_index in csrc/pool2d.cpp)."""
    return ValueError(f"indices: {int(value)} at position {int(position)} is outside [0, {int(hw)}), the flat "
                      "positions ih*W+iw of an input plane")


def input_shape(shape, name, ndim=4):
    if not isinstance(shape, (tuple, list)) or len(shape) != ndim:
        raise ValueError(f"{name} must be a tuple of {ndim} ints, got {shape!r}")
    return tuple(integer(s, name, 1) for s in shape)


# ---- per-op checks: return the normalised arguments in backend order ----
# The window ops also return the output's (OH, OW), computed here once: the backends take it as out_hw=.

def window(x_shape, kernel_size, stride, padding, dilation, what):
    if 0 in x_shape:
        raise ValueError(f"{what}: input of shape {tuple(x_shape)} is empty")
    ks = pair(kernel_size, "kernel_size", 1)
    st = pair(stride, "stride", 1)
    pd = pair(padding, "padding", 0)
    dl = pair(dilation, "dilation", 1)
    oh = out_size(x_shape[2], ks[0], st[0], pd[0], dl[0], what)
    ow = out_size(x_shape[3], ks[1], st[1], pd[1], dl[1], what)
    return ks, st, pd, dl, (oh, ow)


def im2col(x, kernel_size, stride, padding, dilation):
    array(x, "x", 4)
    ks, st, pd, dl, out = window(x.shape, kernel_size, stride, padding, dilation, "im2col")
    return (x, ks, st, pd, dl), out


def col2im(col, input_shape_, kernel_size, stride, padding, dilation):
    array(col, "col", 2)
    shp = input_shape(input_shape_, "input_shape")
    ks, st, pd, dl, (oh, ow) = window(shp, kernel_size, stride, padding, dilation, "col2im")
    shape_is(col, "col", (shp[0] * oh * ow, shp[1] * ks[0] * ks[1]))
    return (col, shp, ks, st, pd, dl), (oh, ow)


def _conv_common(x, weight, stride, padding, dilation, groups):
    """_conv's result for the common call (NumPy arrays of one float dtype, int geometry, groups=1) in one pass, or
    None: then _conv checks everything and words any refusal (the per-argument checks cost 2.4 us a call)."""
    if not (type(x) is _ndarray and type(weight) is _ndarray and type(stride) is int and type(padding) is int and
            type(dilation) is int and type(groups) is int and groups == 1 and x.ndim == 4 and weight.ndim == 4 and
            x.dtype in FLOATS and weight.dtype == x.dtype):
        return None
    N, C, H, W = x.shape
    K, Cg, R, S = weight.shape
    if not (N and C and H and W and K and R and S and Cg == C and stride >= 1 and padding >= 0 and dilation >= 1):
        return None
    oh = _shapes.out_size(H, R, stride, padding, dilation)
    ow = _shapes.out_size(W, S, stride, padding, dilation)
    if oh <= 0 or ow <= 0:
        return None
    return (stride, stride), (padding, padding), (dilation, dilation), 1, (N, K, oh, ow)


def _conv(x, weight, stride, padding, dilation, groups):
    common = _conv_common(x, weight, stride, padding, dilation, groups)
    if common is not None:
        return common
    array(x, "x", 4)
    array(weight, "weight", 4, dtype_of(x))
    same_kind(x=x, weight=weight)
    groups = integer(groups, "groups", 1)
    N, C = x.shape[:2]
    K, Cg = weight.shape[:2]
    if K == 0:              # like a zero-size batch: refused on every backend (the GPU grid has no empty launch)
        raise ValueError(f"weight of shape {tuple(weight.shape)} is empty: conv2d needs at least one output channel")
    if C % groups or K % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({C}) and output channels ({K})")
    if Cg * groups != C:
        raise ValueError(f"weight must have shape (K, C/groups, KH, KW) = ({K}, {C // groups}, KH, KW), got "
                         f"{tuple(weight.shape)} for x of shape {tuple(x.shape)}")
    ks, st, pd, dl, out = window(x.shape, weight.shape[2:], stride, padding, dilation, "conv2d")
    return st, pd, dl, groups, (N, K) + out


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    st, pd, dl, groups, yshape = _conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        array(bias, "bias", 1, dtype_of(x))
        same_kind(x=x, bias=bias)
        shape_is(bias, "bias", (weight.shape[0],))
    return (x, weight, bias, st, pd, dl, groups), yshape[2:]


def conv2d_backward(dy, x, weight, stride, padding, dilation, groups):
    st, pd, dl, groups, yshape = _conv(x, weight, stride, padding, dilation, groups)
    array(dy, "dy", 4, dtype_of(x))
    same_kind(x=x, dy=dy)
    shape_is(dy, "dy", yshape)
    return dy, x, weight, st, pd, dl, groups


def _pool(x_shape, kernel_size, stride, padding, what):
    if type(kernel_size) is int and (stride is None or type(stride) is int) and type(padding) is int:
        # The common call (int window) in one pass; anything else, and every refusal, takes the checks below.
        k, p = kernel_size, padding
        s = k if stride is None else stride
        N, C, H, W = x_shape
        if N and C and H and W and k >= 1 and s >= 1 and 0 <= p <= k // 2:
            oh, ow = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
            if oh > 0 and ow > 0:
                return (k, k), (s, s), (p, p), (N, C, oh, ow)
    if 0 in x_shape:
        raise ValueError(f"{what}: input of shape {tuple(x_shape)} is empty")
    ks = pair(kernel_size, "kernel_size", 1)
    st = ks if stride is None else pair(stride, "stride", 1)
    pd = pair(padding, "padding", 0)
    if pd[0] > ks[0] // 2 or pd[1] > ks[1] // 2:
        raise ValueError(f"padding {pd} must be at most half the kernel size {ks}")
    out = (out_size(x_shape[2], ks[0], st[0], pd[0], 1, what), out_size(x_shape[3], ks[1], st[1], pd[1], 1, what))
    return ks, st, pd, tuple(x_shape[:2]) + out


def max_pool2d(x, kernel_size, stride, padding):
    array(x, "x", 4)
    ks, st, pd, yshape = _pool(x.shape, kernel_size, stride, padding, "max_pool2d")
    return (x, ks, st, pd), yshape[2:]


def max_pool2d_backward(dy, indices, input_shape_):
    array(dy, "dy", 4)
    shp = input_shape(input_shape_, "input_shape")
    if not _is_array(indices) or dtype_of(indices) != np.int64:
        raise TypeError(f"indices must be an int64 array (as returned by max_pool2d), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    same_kind(dy=dy, indices=indices)
    shape_is(indices, "indices", dy.shape)
    if tuple(dy.shape[:2]) != shp[:2]:
        raise ValueError(f"dy has shape {tuple(dy.shape)}, which does not match input_shape {shp}")
    return dy, indices, shp


def avg_pool2d(x, kernel_size, stride, padding, count_include_pad):
    array(x, "x", 4)
    ks, st, pd, yshape = _pool(x.shape, kernel_size, stride, padding, "avg_pool2d")
    return (x, ks, st, pd, bool(count_include_pad)), yshape[2:]


def avg_pool2d_backward(dy, input_shape_, kernel_size, stride, padding, count_include_pad):
    array(dy, "dy", 4)
    shp = input_shape(input_shape_, "input_shape")
    ks, st, pd, yshape = _pool(shp, kernel_size, stride, padding, "avg_pool2d_backward")
    shape_is(dy, "dy", yshape)
    return dy, shp, ks, st, pd, bool(count_include_pad)


def _channels(x, name="x"):
    array(x, name, (2, 4))
    if 0 in x.shape:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is empty")
    return x.shape[1]


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    C = _channels(x)
    dt = dtype_of(x)
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        array(v, name, 1, dt, optional=True)
        shape_is(v, name, (C,))
    same_kind(x=x, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if v is None:
            continue
        # Updated in place, so it must be writable and contiguous (a copy would silently drop the update).
        if isinstance(v, np.ndarray) and not (v.flags.writeable and v.flags.c_contiguous):
            raise ValueError(f"{name} is updated in place and must be a writable contiguous array")
    training = bool(training)
    if not training and running_mean is None:
        raise ValueError("training=False needs running_mean and running_var")
    m = x.shape[0] * math.prod(x.shape[2:])
    if training and m < 2:
        raise ValueError(f"batch_norm in training needs more than one value per channel, got x of shape "
                         f"{tuple(x.shape)}")
    momentum = number(momentum, "momentum", 0.0, 1.0)
    eps = number(eps, "eps", 0.0)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return x, gamma, beta, running_mean, running_var, training, momentum, eps


def batch_norm_backward(dy, x, gamma, mean, invstd, training):
    C = _channels(x)
    dt = dtype_of(x)
    array(dy, "dy", x.ndim, dt)
    shape_is(dy, "dy", x.shape)
    array(gamma, "gamma", 1, dt, optional=True)
    shape_is(gamma, "gamma", (C,))
    for name, v in (("mean", mean), ("invstd", invstd)):
        array(v, name, 1, dt)
        shape_is(v, name, (C,))
    same_kind(dy=dy, x=x, gamma=gamma, mean=mean, invstd=invstd)
    return dy, x, gamma, mean, invstd, bool(training)


GATES = "ifgo"


def _gate_order(gate_order):
    if not isinstance(gate_order, str) or sorted(gate_order) != sorted(GATES):
        raise ValueError(f"gate_order must be a permutation of 'ifgo' (e.g. 'ifgo', 'fgio'), got {gate_order!r}")
    return gate_order


def _lstm_weights(x, D, w_ih, w_hh, bias):
    dt = dtype_of(x)
    array(w_hh, "w_hh", 2, dt)
    H = w_hh.shape[0]
    shape_is(w_hh, "w_hh", (H, 4 * H))
    array(w_ih, "w_ih", 2, dt)
    shape_is(w_ih, "w_ih", (D, 4 * H))
    array(bias, "bias", 1, dt, optional=True)
    shape_is(bias, "bias", (4 * H,))
    if H == 0:
        raise ValueError("w_hh must have a hidden size > 0")
    return H


def _states(N, H, dt, **states):
    for name, v in states.items():
        array(v, name, 2, dt, optional=True)
        shape_is(v, name, (N, H))


def _lstm_inputs(name, x, w_ih, w_hh, bias, gate_order, **states):
    """The checks lstm_cell (x: N,D) and lstm (xs: N,T,D) share; returns the gate order."""
    N, D = x.shape[0], x.shape[-1]
    if N == 0 or D == 0:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is empty")
    H = _lstm_weights(x, D, w_ih, w_hh, bias)
    _states(N, H, dtype_of(x), **states)
    same_kind(**{name: x}, **states, w_ih=w_ih, w_hh=w_hh, bias=bias)
    return _gate_order(gate_order)


def lstm_cell(x, h, c, w_ih, w_hh, bias, gate_order):
    array(x, "x", 2)
    return x, h, c, w_ih, w_hh, bias, _lstm_inputs("x", x, w_ih, w_hh, bias, gate_order, h=h, c=c)


def lstm(xs, h0, c0, w_ih, w_hh, bias, gate_order):
    array(xs, "xs", 3)
    if xs.shape[1] == 0:
        raise ValueError("xs must have at least one time step, got shape " + str(tuple(xs.shape)))
    return xs, h0, c0, w_ih, w_hh, bias, _lstm_inputs("xs", xs, w_ih, w_hh, bias, gate_order, h0=h0, c0=c0)


def _cache(cache):
    from .reference import LSTMCache
    if not isinstance(cache, LSTMCache):
        raise TypeError(f"cache must be the LSTMCache returned by the forward call, got {type(cache).__name__}")
    return cache


def lstm_cell_backward(dh_next, dc_next, cache):
    cache = _cache(cache)
    if cache.x.ndim != 2:
        raise ValueError("cache comes from lstm(), not lstm_cell(); use lstm_backward")
    N, H = cache.hs.shape
    _states(N, H, dtype_of(cache.x), dh_next=dh_next, dc_next=dc_next)
    same_kind(x=cache.x, dh_next=dh_next, dc_next=dc_next)
    return dh_next, dc_next, cache


def lstm_backward(dhs, dh_n, dc_n, cache):
    cache = _cache(cache)
    if cache.x.ndim != 3:
        raise ValueError("cache comes from lstm_cell(), not lstm(); use lstm_cell_backward")
    N, T, H = cache.hs.shape
    dt = dtype_of(cache.x)
    array(dhs, "dhs", 3, dt, optional=True)
    shape_is(dhs, "dhs", (N, T, H))
    _states(N, H, dt, dh_n=dh_n, dc_n=dc_n)
    same_kind(x=cache.x, dhs=dhs, dh_n=dh_n, dc_n=dc_n)
    return dhs, dh_n, dc_n, cache


# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
_LABELS = (np.dtype(np.int32), np.dtype(np.int64))
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _nonempty(x, name):
    if x.size == 0:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is empty")
    return x


def _act1(x):
    """One float array, any shape, not empty."""
    if type(x) is _ndarray and x.dtype in FLOATS and x.size:
        return x
    return _nonempty(array(x, "x"), "x")


def _act2(dy, y):
    """The backwards' (dy, y): float arrays of one shape and dtype, on one side."""
    if type(dy) is _ndarray and type(y) is _ndarray and y.dtype in FLOATS and dy.dtype == y.dtype and \
            dy.shape == y.shape and y.size:
        return dy, y
    _nonempty(array(y, "y"), "y")
    array(dy, "dy", dtype=dtype_of(y))
    same_kind(dy=dy, y=y)
    shape_is(dy, "dy", y.shape)
    return dy, y


def relu(x):
    return _act1(x),


sigmoid = tanh = relu
relu_backward = sigmoid_backward = tanh_backward = _act2


def softmax(x):
    x = _act1(x)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (softmax runs over the last axis), got a 0-D array")
    return x,


def softmax_backward(dy, y):
    dy, y = _act2(dy, y)
    if y.ndim == 0:
        raise ValueError("y must have at least 1 dimension (softmax runs over the last axis), got a 0-D array")
    return dy, y


def _target_array(target, x):
    """target as an array of x's kind; a Python int stands for the one label of a 1-D x (NumPy only)."""
    if type(target) is _ndarray:
        return target
    if isinstance(target, numbers.Integral) and not isinstance(target, bool) and type(x) is _ndarray:
        return np.array(target, np.int64)
    if not _is_array(target):
        raise TypeError(f"target must be a NumPy or GPU array, got {type(target).__name__}")
    if getattr(target, "requires_grad", False):
        raise TypeError("target requires grad: fastnn records no autograd graph, pass target.detach()")
    same_kind(x=x, target=target)
    return target


def _convert(target, dtype, what):
    """A NumPy target of another integer/bool dtype as `dtype` (a GPU one must come in a supported dtype)."""
    if type(target) is not _ndarray:
        raise TypeError(f"target must be {what} on the GPU, got {dtype_of(target)}")
    return target.astype(dtype)


def _xent_target(target, x, name):
    """Class ids (shape x.shape[:-1], int32/int64) or a dense target (x's shape and dtype)."""
    target = _target_array(target, x)
    dt, shape, xshape = dtype_of(target), tuple(target.shape), tuple(x.shape)
    if shape == xshape:                                  # one-hot / probabilities
        if dt == x.dtype:
            return target
        if dt.kind in "iub":
            return _convert(target, x.dtype, f"{x.dtype} (or int32/int64 class ids)")
        raise TypeError(f"target has dtype {dt} but {name} is {x.dtype}: a one-hot / probability target must have "
                        f"{name}'s dtype")
    if shape == xshape[:-1]:                             # class ids
        if dt in _LABELS:
            return target
        if dt.kind in "iub":
            return _convert(target, np.int64, "int32 or int64")
        raise TypeError(f"target of shape {shape} holds class ids and must be an integer array, got {dt}")
    raise ValueError(f"target must have shape {xshape[:-1]} (class ids) or {xshape} (one-hot / probabilities), "
                     f"got {shape}")


def _ignore_index(v):
    if type(v) is int and _INT64[0] <= v <= _INT64[1]:
        return v
    v = integer(v, "ignore_index", _INT64[0])
    if v > _INT64[1]:
        raise ValueError(f"ignore_index must fit in int64, got {v}")
    return v


def _rows_x(x, name):
    x = _act1(x) if name == "x" else _nonempty(array(x, name), name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension (classes on the last axis), got a 0-D array")
    return x


def softmax_cross_entropy(x, target, ignore_index, eps):
    x = _rows_x(x, "x")
    return (x, _xent_target(target, x, "x"), _ignore_index(ignore_index),
            eps if eps == 0.0 and type(eps) is float else number(eps, "eps", 0.0))


def softmax_cross_entropy_backward(probs, target, dloss, ignore_index):
    probs = _rows_x(probs, "probs")
    return (probs, _xent_target(target, probs, "probs"), number(dloss, "dloss"),
            _ignore_index(ignore_index))


def _binary_target(target, x, name):
    """0/1 labels of x's shape: x's dtype, int32 or int64 (other NumPy integer/bool dtypes are converted)."""
    target = _target_array(target, x)
    dt = dtype_of(target)
    if tuple(target.shape) != tuple(x.shape):
        raise ValueError(f"target must have {name}'s shape {tuple(x.shape)}, got {tuple(target.shape)}")
    if dt == x.dtype or dt in _LABELS:
        return target
    if dt.kind in "iub":
        return _convert(target, np.int64, f"{x.dtype}, int32 or int64")
    raise TypeError(f"target has dtype {dt} but {name} is {x.dtype}: targets must have {name}'s dtype or be "
                    "integers")


def sigmoid_cross_entropy(x, target, eps):
    x = _act1(x)
    return x, _binary_target(target, x, "x"), eps if eps == 0.0 and type(eps) is float else number(eps, "eps", 0.0)


def sigmoid_cross_entropy_backward(y, target, dloss):
    y = _nonempty(array(y, "y"), "y")
    return y, _binary_target(target, y, "y"), number(dloss, "dloss")


def bad_label(value, position, num_classes, ignore_index):
    """The error of the cross-entropy ops for a class id outside [0, V) that is not ignore_index; every backend
    raises it with these words (csrc/bind_activations.cpp builds the same string)."""
    return ValueError(f"target: label {int(value)} at position {int(position)} is outside [0, {int(num_classes)}) "
                      f"and is not ignore_index ({int(ignore_index)})")
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def linear(x, weight, bias):
    if type(x) is _ndarray and type(weight) is _ndarray and weight.ndim == 2 and x.ndim:
        dt = x.dtype           # the common NumPy call (a tiny layer's call costs more here than in its GEMM)
        if (dt is _F32 or dt is _F64) and weight.dtype is dt:
            D, M = weight.shape
            if x.shape[-1] == D and D and M and x.size and (bias is None or (
                    type(bias) is _ndarray and bias.dtype is dt and bias.shape == (M,))):
                return x, weight, bias
    array(x, "x")
    dt = dtype_of(x)
    array(weight, "weight", 2, dt)
    array(bias, "bias", 1, dt, optional=True)
    same_kind(x=x, weight=weight, bias=bias)
    _linear_shapes(x, weight)
    shape_is(bias, "bias", (weight.shape[1],))
    return x, weight, bias


def _linear_shapes(x, weight):
    if x.ndim == 0 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"x must have shape (..., D) with D = weight.shape[0] = {weight.shape[0]}, got "
                         f"{tuple(x.shape)}")
    if 0 in x.shape or 0 in weight.shape:
        raise ValueError(f"x of shape {tuple(x.shape)} or weight of shape {tuple(weight.shape)} is empty")


def linear_backward(dy, x, weight, bias):
    if (type(x) is _ndarray and type(weight) is _ndarray and type(dy) is _ndarray and x.dtype in FLOATS
            and weight.dtype == x.dtype and dy.dtype == x.dtype and weight.ndim == 2 and x.ndim
            and x.shape[-1] == weight.shape[0] and x.size and weight.size
            and dy.shape == x.shape[:-1] + (weight.shape[1],)):
        return dy, x, weight, bool(bias)
    array(x, "x")
    dt = dtype_of(x)
    array(weight, "weight", 2, dt)
    array(dy, "dy", x.ndim, dt)
    same_kind(dy=dy, x=x, weight=weight)
    _linear_shapes(x, weight)
    shape_is(dy, "dy", tuple(x.shape[:-1]) + (weight.shape[1],))
    return dy, x, weight, bool(bias)


def bad_embedding_index(value, position, rows):
    """The error for an index outside [0, V): every backend raises it with these words (the C++ kernel builds the
    same string, bad_embedding_index in csrc/dense.cpp)."""
    return ValueError(f"indices: {int(value)} at position {int(position)} is outside [0, {int(rows)}), the rows "
                      "of weight")


def _indices(indices):
    if not _is_array(indices) or dtype_of(indices) not in _INDEX_DTYPES:
        raise TypeError(f"indices must be an int32 or int64 array, got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if 0 in indices.shape:
        raise ValueError(f"indices of shape {tuple(indices.shape)} is empty")
    return indices


def embedding(indices, weight):
    if (type(indices) is _ndarray and type(weight) is _ndarray and indices.dtype in _INDEX_DTYPES and indices.size
            and weight.dtype in FLOATS and weight.ndim == 2 and weight.size):
        return indices, weight
    _indices(indices)
    array(weight, "weight", 2)
    same_kind(indices=indices, weight=weight)
    if 0 in weight.shape:
        raise ValueError(f"weight of shape {tuple(weight.shape)} is empty")
    return indices, weight


def embedding_backward(dy, indices, num_embeddings):
    _indices(indices)
    array(dy, "dy", indices.ndim + 1)
    same_kind(dy=dy, indices=indices)
    if tuple(dy.shape[:-1]) != tuple(indices.shape) or dy.shape[-1] == 0:
        raise ValueError(f"dy must have shape indices.shape + (D,) = {tuple(indices.shape)} + (D,) with D >= 1, got "
                         f"{tuple(dy.shape)}")
    return dy, indices, integer(num_embeddings, "num_embeddings", 1)


def _dropout(x, name, p, seed, scale, mask):
    if (type(x) is _ndarray and x.dtype in FLOATS and x.size and type(p) is float and 0.0 <= p <= 1.0
            and type(seed) is int and 0 <= seed < 1 << 64 and mask is None):
        return x, p, seed, bool(scale), None
    array(x, name)
    if 0 in x.shape:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is empty")
    p = number(p, "p", 0.0, 1.0)
    seed = integer(seed, "seed", 0)
    if seed >= 1 << 64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    if mask is not None:
        if not _is_array(mask):
            raise TypeError(f"mask must be a NumPy or GPU array, got {type(mask).__name__}")
        mdt = dtype_of(mask)
        if mdt != np.bool_ and mdt != dtype_of(x):
            raise TypeError(f"mask must be bool or {name}'s dtype {dtype_of(x)}, got {mdt}")
        same_kind(**{name: x}, mask=mask)
        shape_is(mask, "mask", x.shape)
    return x, p, seed, bool(scale), mask


def dropout(x, p, seed, scale, mask):
    return _dropout(x, "x", p, seed, scale, mask)


def dropout_backward(dy, p, seed, scale, mask):
    return _dropout(dy, "dy", p, seed, scale, mask)
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
GRU_ORDERS = ("zrh", "rzn")


def _numpy_ok(x, w_ih, w_hh, blocks, b1, b2, h):
    """The usual call, checked in a few comparisons: NumPy arrays of one float dtype and the right shapes (x's ndim
    checked already). Anything else takes _recurrent_inputs, which names what is wrong. (`is` on the dtypes: NumPy's
    native float dtypes are singletons, and a dtype that is not one takes the full checks; this check was 0.7 us of
    a 4 us rnn_cell call.)"""
    nd = _ndarray
    if type(x) is not nd or type(w_ih) is not nd or type(w_hh) is not nd or w_hh.ndim != 2:
        return False
    dt = x.dtype
    if (dt is not _F32 and dt is not _F64) or w_ih.dtype is not dt or w_hh.dtype is not dt:
        return False
    H, G = w_hh.shape
    xs = x.shape
    if G != blocks * H or H == 0 or w_ih.shape != (xs[-1], G) or 0 in xs:
        return False
    if b1 is not None and (type(b1) is not nd or b1.dtype is not dt or b1.shape != (G,)):
        return False
    if b2 is not None and (type(b2) is not nd or b2.dtype is not dt or b2.shape != (G,)):
        return False
    return h is None or (type(h) is nd and h.dtype is dt and h.shape == (xs[0], H))


def _recurrent_inputs(name, x, w_ih, w_hh, blocks, biases, states):
    """The checks the RNN/GRU cells (x: N,D) and sequences (xs: N,T,D) share: w_ih (D, blocks*H), w_hh (H, blocks*H),
    each bias (blocks*H,) or None, each state (N,H) or None, all one dtype and one kind of array."""
    N, D = x.shape[0], x.shape[-1]
    if N == 0 or D == 0:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is empty")
    dt = dtype_of(x)
    array(w_hh, "w_hh", 2, dt)
    H = w_hh.shape[0]
    if H == 0:
        raise ValueError("w_hh must have a hidden size > 0")
    shape_is(w_hh, "w_hh", (H, blocks * H))
    array(w_ih, "w_ih", 2, dt)
    shape_is(w_ih, "w_ih", (D, blocks * H))
    for bname, b in biases.items():
        array(b, bname, 1, dt, optional=True)
        shape_is(b, bname, (blocks * H,))
    _states(N, H, dt, **states)
    same_kind(**{name: x}, **states, w_ih=w_ih, w_hh=w_hh, **biases)


def _sequence(xs):
    array(xs, "xs", 3)
    if xs.shape[1] == 0:
        raise ValueError("xs must have at least one time step, got shape " + str(tuple(xs.shape)))


def _gru_order(gate_order):
    if gate_order not in GRU_ORDERS:     # a str compared with str; anything else is refused by name too
        raise ValueError(f"gate_order must be 'zrh' (book 2's GRU) or 'rzn' (PyTorch's nn.GRU), got {gate_order!r}")
    return gate_order


def rnn_cell(x, h, w_ih, w_hh, bias):
    array(x, "x", 2)
    if not _numpy_ok(x, w_ih, w_hh, 1, bias, None, h):
        _recurrent_inputs("x", x, w_ih, w_hh, 1, {"bias": bias}, {"h": h})
    return x, h, w_ih, w_hh, bias


def rnn(xs, h0, w_ih, w_hh, bias):
    _sequence(xs)
    if not _numpy_ok(xs, w_ih, w_hh, 1, bias, None, h0):
        _recurrent_inputs("xs", xs, w_ih, w_hh, 1, {"bias": bias}, {"h0": h0})
    return xs, h0, w_ih, w_hh, bias


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, gate_order):
    array(x, "x", 2)
    if not _numpy_ok(x, w_ih, w_hh, 3, b_ih, b_hh, h):
        _recurrent_inputs("x", x, w_ih, w_hh, 3, {"b_ih": b_ih, "b_hh": b_hh}, {"h": h})
    return x, h, w_ih, w_hh, b_ih, b_hh, _gru_order(gate_order)


def gru(xs, h0, w_ih, w_hh, b_ih, b_hh, gate_order):
    _sequence(xs)
    if not _numpy_ok(xs, w_ih, w_hh, 3, b_ih, b_hh, h0):
        _recurrent_inputs("xs", xs, w_ih, w_hh, 3, {"b_ih": b_ih, "b_hh": b_hh}, {"h0": h0})
    return xs, h0, w_ih, w_hh, b_ih, b_hh, _gru_order(gate_order)


def _typed_cache(cache, kind, cell):
    """The cache of the matching forward: its type, and a cell's (x: N,D) or a sequence's (x: N,T,D)."""
    from . import reference   # (imported here, as _cache does: a cheap lookup once loaded)
    cls = getattr(reference, kind)
    if not isinstance(cache, cls):
        raise TypeError(f"cache must be the {kind} returned by the forward call, got {type(cache).__name__}")
    op = kind[:3].lower()
    if cell and cache.x.ndim != 2:
        raise ValueError(f"cache comes from {op}(), not {op}_cell(); use {op}_backward")
    if not cell and cache.x.ndim != 3:
        raise ValueError(f"cache comes from {op}_cell(), not {op}(); use {op}_cell_backward")
    return cache


def _cell_backward(dh_next, cache, kind):
    cache = _typed_cache(cache, kind, True)
    _states(*cache.hs.shape, dtype_of(cache.x), dh_next=dh_next)
    same_kind(x=cache.x, dh_next=dh_next)
    return dh_next, cache


def _seq_backward(dhs, dh_n, cache, kind):
    cache = _typed_cache(cache, kind, False)
    N, T, H = cache.hs.shape
    dt = dtype_of(cache.x)
    array(dhs, "dhs", 3, dt, optional=True)
    shape_is(dhs, "dhs", (N, T, H))
    _states(N, H, dt, dh_n=dh_n)
    same_kind(x=cache.x, dhs=dhs, dh_n=dh_n)
    return dhs, dh_n, cache


def rnn_cell_backward(dh_next, cache):
    return _cell_backward(dh_next, cache, "RNNCache")


def rnn_backward(dhs, dh_n, cache):
    return _seq_backward(dhs, dh_n, cache, "RNNCache")


def gru_cell_backward(dh_next, cache):
    return _cell_backward(dh_next, cache, "GRUCache")


def gru_backward(dhs, dh_n, cache):
    return _seq_backward(dhs, dh_n, cache, "GRUCache")
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
# The steps take lists of arrays: params[i], grads[i] and each state list's [i] have one shape, and every array of
# the call one dtype. params and the states are updated in place, so they must be writable and C-contiguous (a copy
# would silently drop the update); grads may be any layout (copied once where needed).

def _gpu_writable_contiguous(a):
    """(writable, C-contiguous) of a GPU array, from __cuda_array_interface__ (torch: its own attributes)."""
    if type(a).__module__.split(".")[0] == "torch":
        return True, a.is_contiguous()
    if type(a).__name__ == "FakeCUDAArray":              # the simulator's device array
        return True, a.is_c_contiguous()
    cai = a.__cuda_array_interface__
    strides, shape, item = cai.get("strides"), tuple(cai["shape"]), np.dtype(cai["typestr"]).itemsize
    contiguous = strides is None or tuple(strides) == tuple(_c_strides(shape, item)) or math.prod(shape) <= 1
    return not cai["data"][1], contiguous


def _c_strides(shape, item):
    out, acc = [], item
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return reversed(out)


def _param_item(a, name, dt, like, written):
    """The full checks of one list item (the slow path: GPU arrays, or a refusal to word)."""
    array(a, name, None, dt)
    if like is not None:
        if tuple(a.shape) != tuple(like.shape):
            raise ValueError(f"{name} must have the shape of its parameter, {tuple(like.shape)}, got {tuple(a.shape)}")
    if written:
        ok = (a.flags.writeable, a.flags.c_contiguous) if isinstance(a, _ndarray) else _gpu_writable_contiguous(a)
        if not all(ok):
            raise ValueError(f"{name} is updated in place and must be a writable C-contiguous array "
                             f"({'not writable' if not ok[0] else 'not C-contiguous'})")


def _param_lists(params, grads, **states):
    """Validate the lists of an optimizer step; every array of the call: one dtype, all on the host or the GPU."""
    lists = {"params": params, "grads": grads, **states}
    for name, seq in lists.items():
        if type(seq) is not list and not isinstance(seq, (list, tuple)):
            hint = " (the classes in fastnn.optimizer take the books' dicts)" if isinstance(seq, dict) else ""
            raise TypeError(f"{name} must be a list or tuple of arrays, got {type(seq).__name__}{hint}")
    n = len(params)
    for name, seq in lists.items():
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} arrays but params has {n}: one per parameter")
    if n == 0:
        return
    p0 = params[0]
    dt = p0.dtype if type(p0) is _ndarray and p0.dtype in FLOATS else None
    # Fast path: plain NumPy arrays of one dtype, a few attribute reads per array (flags.carray: C-contiguous,
    # aligned and writable in one read; an unaligned array takes the slow path, which accepts it).
    if dt is not None:
        for p, g in zip(params, grads):
            if not (type(p) is _ndarray and type(g) is _ndarray and p.dtype is dt and g.dtype is dt
                    and p.shape == g.shape and p.flags.carray):
                break
        else:
            for seq in states.values():
                for p, s in zip(params, seq):
                    if not (type(s) is _ndarray and s.dtype is dt and s.shape == p.shape and s.flags.carray):
                        break
                else:
                    continue
                break
            else:
                return
    # Slow path: every item checked and refused by name; host and GPU arrays not mixed.
    dt = None
    host = None
    for i in range(n):
        p = params[i]
        for name, seq in lists.items():
            a = seq[i]
            item = f"{name}[{i}]"
            _param_item(a, item, dt, None if a is p else p, name != "grads")
            dt = dtype_of(a) if dt is None else dt
            if host is None:
                host = (isinstance(a, _ndarray), item)
            elif isinstance(a, _ndarray) != host[0]:
                h, gpu = (host[1], item) if host[0] else (item, host[1])
                raise TypeError(f"mixing NumPy arrays ({h}) with GPU arrays ({gpu})")


def sgd_step(params, grads, lr):
    _param_lists(params, grads)
    return params, grads, number(lr, "lr")


def momentum_step(params, grads, velocities, lr, momentum):
    _param_lists(params, grads, velocities=velocities)
    return params, grads, velocities, number(lr, "lr"), number(momentum, "momentum", 0.0, 1.0)


def nesterov_step(params, grads, velocities, lr, momentum):
    return momentum_step(params, grads, velocities, lr, momentum)


def adagrad_step(params, grads, sums, lr, eps):
    _param_lists(params, grads, sums=sums)
    return params, grads, sums, number(lr, "lr"), number(eps, "eps", 0.0)


def rmsprop_step(params, grads, sums, lr, decay_rate, eps):
    _param_lists(params, grads, sums=sums)
    return params, grads, sums, number(lr, "lr"), number(decay_rate, "decay_rate", 0.0, 1.0), number(eps, "eps", 0.0)


def adam_step(params, grads, ms, vs, step, lr, beta1, beta2, eps):
    _param_lists(params, grads, ms=ms, vs=vs)
    beta1 = number(beta1, "beta1", 0.0, 1.0)
    if beta1 == 1.0:
        raise ValueError("beta1 must be < 1 (the bias correction divides by 1 - beta1**step)")
    return (params, grads, ms, vs, integer(step, "step", 1), number(lr, "lr"), beta1,
            number(beta2, "beta2", 0.0, 1.0), number(eps, "eps", 0.0))
# ==== end optim ====
