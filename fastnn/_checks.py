"""Argument validation shared by every backend: one place that turns bad input into a TypeError/ValueError naming
the argument, and normalises int-or-pair arguments to (h, w) tuples. Arrays keep their type (NumPy or GPU)."""
import math
import numbers

import numpy as np

from . import _shapes
from ._dispatch import is_gpu_array

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


def _conv(x, weight, stride, padding, dilation, groups):
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
    array(bias, "bias", 1, dtype_of(x), optional=True)
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
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
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
