"""`python -m fastnn.bench`: one table of every op, fastnn against the NumPy reference and PyTorch.

Performance is a ratio measured side by side in one process (docs: DESIGN.md, "Measuring"): for every op on the
shapes in SHAPES it times the NumPy reference, the fastnn backend and (when importable) PyTorch on the same inputs
and thread count, and prints the machine's own ceilings first (NumPy sgemm GFLOP/s and a memory copy GB/s on the
CPU; a device-to-device copy on the GPU) so that the GFLOP/s and GB/s columns can be read against them.

The story, in order: SHAPES (the one list of benchmark shapes, also used by the bench/ pytest-benchmark suites)
-> input makers -> PyTorch equivalents -> OPS (the op table: name, shape family, inputs, torch call, flop count)
-> timing (`timeit`) -> one `Row` per (op, shape) -> the table / JSON -> `main`.

A kernel that is not written yet (RuntimeError "not implemented yet"), or anything else that fails in one cell,
becomes "n/a" with the reason in the note column; the run goes on.
"""
import argparse
import io
import json
import math
import os
import platform
import sys
import time
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Optional

import numpy as np

import fastnn
from fastnn.reference import LSTMCache

# ------------------------------------------------------------------------------------------------------ shapes

Conv = namedtuple("Conv", "N C H W K R S stride pad")            # conv2d: x (N,C,H,W), weight (K,C,R,S)
Unfold = namedtuple("Unfold", "N C H W R S stride pad")          # im2col / col2im
Pool = namedtuple("Pool", "N C H W k stride pad")                # max_pool2d / avg_pool2d, square windows
BN = namedtuple("BN", "N C H W")                                 # batch_norm, training mode
Cell = namedtuple("Cell", "B D H")                               # lstm_cell: x (B,D), h/c (B,H)
Seq = namedtuple("Seq", "B T D H")                               # lstm: xs (B,T,D)

_RESNET = [Conv(32, 64, 56, 56, 64, 3, 3, 1, 1), Conv(32, 128, 28, 28, 128, 3, 3, 1, 1),
           Conv(32, 256, 14, 14, 256, 3, 3, 1, 1)]

# The one list of benchmark shapes: `python -m fastnn.bench` and the bench/ suites both read it.
# "cpu"/"cuda": the default shapes of that backend; "small": quick smoke shapes (any backend, the tests use them).
SHAPES = {
    "cpu": {
        "conv2d": [Conv(100, 1, 28, 28, 30, 5, 5, 1, 0), *_RESNET,            # MNIST-style, ResNet stages
                   Conv(8, 3, 224, 224, 64, 7, 7, 2, 3),                      # ResNet stem
                   Conv(32, 256, 14, 14, 64, 1, 1, 1, 0)],                    # 1x1 bottleneck
        "im2col": [Unfold(32, 64, 56, 56, 3, 3, 1, 1), Unfold(8, 3, 224, 224, 7, 7, 2, 3)],
        "pool2d": [Pool(32, 64, 56, 56, 2, 2, 0), Pool(32, 64, 56, 56, 3, 2, 1)],
        "batch_norm": [BN(32, 64, 56, 56)],
        "lstm_cell": [Cell(64, 512, 512)],
        "lstm": [Seq(64, 32, 512, 512)],
    },
    "cuda": {
        "conv2d": list(_RESNET),
        "im2col": [Unfold(32, 64, 56, 56, 3, 3, 1, 1)],
        "pool2d": [Pool(128, 64, 56, 56, 2, 2, 0)],
        "batch_norm": [BN(128, 64, 56, 56), BN(32, 256, 14, 14)],
        "lstm_cell": [Cell(64, 512, 512)],
        "lstm": [Seq(64, 32, 512, 512)],
    },
    # --mixed: the textbook networks' sizes, where a call is short enough that a thread pool's wake-up and spin
    # decide its time (DeepConvNet-style 16 channels on 28x28, book 2's LSTM: H=100, batch 20, 35 steps)
    "mixed": {
        "conv2d": [Conv(64, 16, 28, 28, 16, 3, 3, 1, 1)],
        "im2col": [Unfold(64, 16, 28, 28, 3, 3, 1, 1)],
        "pool2d": [Pool(64, 16, 28, 28, 2, 2, 0)],
        "batch_norm": [BN(64, 16, 28, 28)],
        "lstm_cell": [Cell(20, 100, 100)],
        "lstm": [Seq(20, 35, 100, 100)],
    },
    "small": {
        "conv2d": [Conv(4, 3, 16, 16, 8, 3, 3, 1, 1)],
        "im2col": [Unfold(4, 3, 16, 16, 3, 3, 1, 1)],
        "pool2d": [Pool(4, 8, 16, 16, 2, 2, 0), Pool(4, 8, 16, 16, 3, 2, 1)],
        "batch_norm": [BN(4, 8, 16, 16)],
        "lstm_cell": [Cell(8, 32, 32)],
        "lstm": [Seq(8, 4, 32, 32)],
    },
}


def shapes_for(family, sizes="default", backend="cpu"):
    """The shapes of one family: SHAPES["small"] or SHAPES["mixed"], else the backend's defaults."""
    return SHAPES[sizes if sizes in ("small", "mixed") else backend][family]


def shape_id(shape):
    """A short label, e.g. 'N32 C64 H56 W56 K64 R3 S3 stride1 pad1'."""
    return " ".join(f"{k}{v}" for k, v in shape._asdict().items())


# ------------------------------------------------------------------------------------------- input makers
# Each returns (args, kwargs) for the public API call `fastnn.<op>(*args, **kwargs)`, as NumPy arrays.
# Backward inputs that come from a forward pass (max-pool indices, batch-norm statistics, the LSTM cache) are made
# with the NumPy reference, so a backward row is timed even when the backend's forward is not written yet.

def _gauss(rng, dtype, *shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype, copy=False)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _conv(s, dtype, rng):
    return _gauss(rng, dtype, s.N, s.C, s.H, s.W), _gauss(rng, dtype, s.K, s.C, s.R, s.S), _gauss(rng, dtype, s.K)


def make_conv2d(s, dtype, rng):
    x, w, b = _conv(s, dtype, rng)
    return (x, w, b), dict(stride=s.stride, padding=s.pad)


def make_conv2d_backward(s, dtype, rng):
    x, w, _ = _conv(s, dtype, rng)
    dy = _gauss(rng, dtype, s.N, s.K, _out(s.H, s.R, s.stride, s.pad), _out(s.W, s.S, s.stride, s.pad))
    return (dy, x, w), dict(stride=s.stride, padding=s.pad)


def make_im2col(s, dtype, rng):
    return (_gauss(rng, dtype, s.N, s.C, s.H, s.W), (s.R, s.S)), dict(stride=s.stride, padding=s.pad)


def make_col2im(s, dtype, rng):
    rows = s.N * _out(s.H, s.R, s.stride, s.pad) * _out(s.W, s.S, s.stride, s.pad)
    col = _gauss(rng, dtype, rows, s.C * s.R * s.S)
    return (col, (s.N, s.C, s.H, s.W), (s.R, s.S)), dict(stride=s.stride, padding=s.pad)


def _pool_kw(s):
    return dict(stride=s.stride, padding=s.pad)


def make_pool(s, dtype, rng):
    return (_gauss(rng, dtype, s.N, s.C, s.H, s.W), s.k), _pool_kw(s)


def _pool_dy(s, dtype, rng):
    return _gauss(rng, dtype, s.N, s.C, _out(s.H, s.k, s.stride, s.pad), _out(s.W, s.k, s.stride, s.pad))


def make_max_pool2d_backward(s, dtype, rng):
    x = _gauss(rng, dtype, s.N, s.C, s.H, s.W)
    _, idx = fastnn.reference.max_pool2d(x, s.k, s.stride, s.pad)
    return (_pool_dy(s, dtype, rng), idx, x.shape), {}


def make_avg_pool2d_backward(s, dtype, rng):
    return (_pool_dy(s, dtype, rng), (s.N, s.C, s.H, s.W), s.k), _pool_kw(s)


def _bn(s, dtype, rng):
    x = _gauss(rng, dtype, s.N, s.C, s.H, s.W)
    return x, 1 + _gauss(rng, dtype, s.C, scale=0.1), _gauss(rng, dtype, s.C, scale=0.1)


def make_batch_norm(s, dtype, rng):
    x, gamma, beta = _bn(s, dtype, rng)
    running_mean, running_var = np.zeros(s.C, dtype), np.ones(s.C, dtype)
    return (x, gamma, beta, running_mean, running_var), dict(training=True)


def make_batch_norm_backward(s, dtype, rng):
    x, gamma, beta = _bn(s, dtype, rng)
    _, mean, invstd = fastnn.reference.batch_norm(x, gamma, beta)
    return (_gauss(rng, dtype, *x.shape), x, gamma, mean, invstd), dict(training=True)


def _lstm_weights(D, H, dtype, rng):
    scale = 1 / math.sqrt(H)
    return (_gauss(rng, dtype, D, 4 * H, scale=scale), _gauss(rng, dtype, H, 4 * H, scale=scale),
            _gauss(rng, dtype, 4 * H, scale=scale))


def make_lstm_cell(s, dtype, rng):
    x, h, c = _gauss(rng, dtype, s.B, s.D), _gauss(rng, dtype, s.B, s.H), _gauss(rng, dtype, s.B, s.H)
    return (x, h, c, *_lstm_weights(s.D, s.H, dtype, rng)), {}


def make_lstm_cell_backward(s, dtype, rng):
    args, _ = make_lstm_cell(s, dtype, rng)
    *_, cache = fastnn.reference.lstm_cell(*args[:-1], None)     # bias None: PyTorch rebuilds it as zeros
    return (_gauss(rng, dtype, s.B, s.H), _gauss(rng, dtype, s.B, s.H), cache), {}


def make_lstm(s, dtype, rng):
    xs, h0, c0 = _gauss(rng, dtype, s.B, s.T, s.D), _gauss(rng, dtype, s.B, s.H), _gauss(rng, dtype, s.B, s.H)
    return (xs, h0, c0, *_lstm_weights(s.D, s.H, dtype, rng)), {}


def make_lstm_backward(s, dtype, rng):
    args, _ = make_lstm(s, dtype, rng)
    *_, cache = fastnn.reference.lstm(*args[:-1], None)          # bias None: PyTorch rebuilds it as zeros
    dh = _gauss(rng, dtype, s.B, s.H)
    return (_gauss(rng, dtype, s.B, s.T, s.H), dh, dh.copy(), cache), {}


# ----------------------------------------------------------------------------------------- PyTorch equivalents
# Each takes (torch, device, shape, args, kwargs) - the same NumPy inputs as fastnn - and returns a zero-argument
# callable. Conversions (to tensors, weights to PyTorch's layout) happen here, once, outside the timing.
# Forwards run under no_grad; backwards time torch.autograd.grad of a graph built once (retain_graph=True).

def _t(torch, dev, *arrays, grad=False):
    return [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(dev).requires_grad_(grad)
            for a in arrays]


def _grad(torch, outputs, inputs, grads):
    return lambda: torch.autograd.grad(outputs, inputs, grads, retain_graph=True)


def _no_grad(torch, fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def torch_conv2d(torch, dev, s, args, kw):
    x, w, b = _t(torch, dev, *args)
    return _no_grad(torch, lambda: torch.nn.functional.conv2d(x, w, b, kw["stride"], kw["padding"]))


def torch_conv2d_backward(torch, dev, s, args, kw):
    dy, x, w = args
    dy, = _t(torch, dev, dy)
    x, w, b = _t(torch, dev, x, w, np.zeros(w.shape[0], w.dtype), grad=True)
    y = torch.nn.functional.conv2d(x, w, b, kw["stride"], kw["padding"])
    return _grad(torch, y, (x, w, b), dy)


def torch_im2col(torch, dev, s, args, kw):
    x, = _t(torch, dev, args[0])            # F.unfold: (N, C*R*S, L), the transpose of fastnn's layout
    return _no_grad(torch, lambda: torch.nn.functional.unfold(x, args[1], 1, kw["padding"], kw["stride"]))


def torch_col2im(torch, dev, s, args, kw):
    col, shape, ksize = args
    n, c, h, w = shape
    col, = _t(torch, dev, col.reshape(n, -1, col.shape[1]).transpose(0, 2, 1))   # (N, C*R*S, L) for F.fold
    return _no_grad(torch, lambda: torch.nn.functional.fold(col, (h, w), ksize, 1, kw["padding"], kw["stride"]))


def torch_max_pool2d(torch, dev, s, args, kw):
    x, = _t(torch, dev, args[0])
    return _no_grad(torch, lambda: torch.nn.functional.max_pool2d(x, args[1], kw["stride"], kw["padding"],
                                                                  return_indices=True))


def torch_max_pool2d_backward(torch, dev, s, args, kw):
    dy, idx, shape = args
    # the kernel autograd runs for F.max_pool2d(return_indices=True), fed fastnn's indices (x gives only the shape)
    dy, idx, x = _t(torch, dev, dy, idx, np.empty(shape, dy.dtype))
    k, st, p = [s.k] * 2, [s.stride] * 2, [s.pad] * 2
    return lambda: torch.ops.aten.max_pool2d_with_indices_backward(dy, x, k, st, p, [1, 1], False, idx)


def torch_avg_pool2d(torch, dev, s, args, kw):
    x, = _t(torch, dev, args[0])
    return _no_grad(torch, lambda: torch.nn.functional.avg_pool2d(x, args[1], kw["stride"], kw["padding"]))


def torch_avg_pool2d_backward(torch, dev, s, args, kw):
    dy, shape, k = args
    x, = _t(torch, dev, np.zeros(shape, dy.dtype), grad=True)
    y = torch.nn.functional.avg_pool2d(x, k, kw["stride"], kw["padding"])
    dy, = _t(torch, dev, dy)
    return _grad(torch, y, (x,), dy)


def torch_batch_norm(torch, dev, s, args, kw):
    x, gamma, beta, rm, rv = _t(torch, dev, *args)
    return _no_grad(torch, lambda: torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, training=True))


def torch_batch_norm_backward(torch, dev, s, args, kw):
    dy, x, gamma, _, _ = args
    dy, = _t(torch, dev, dy)
    x, gamma, beta = _t(torch, dev, x, gamma, np.zeros_like(gamma), grad=True)
    y = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True)
    return _grad(torch, y, (x, gamma, beta), dy)


def _torch_lstm_module(torch, dev, cls, w_ih, w_hh, bias, **extra):
    """nn.LSTMCell / nn.LSTM holding fastnn's weights in PyTorch's layout (W.T; bias_hh = 0)."""
    D, H4 = w_ih.shape
    m = cls(D, H4 // 4, **extra).to(device=dev, dtype=getattr(torch, w_ih.dtype.name))
    sfx = "_l0" if cls is torch.nn.LSTM else ""
    with torch.no_grad():
        for name, a in (("weight_ih", w_ih.T), ("weight_hh", w_hh.T), ("bias_ih", bias),
                        ("bias_hh", np.zeros_like(bias))):
            getattr(m, name + sfx).copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return m


# fastnn's LSTM forwards always keep what their backward needs (the cache); PyTorch's forward does that only with
# autograd recording. train=True times that forward (inputs and weights requiring grad), for a note next to the
# no_grad column: the like-for-like comparison when training.
def torch_lstm_cell(torch, dev, s, args, kw, train=False):
    x, h, c, w_ih, w_hh, bias = args
    cell = _torch_lstm_module(torch, dev, torch.nn.LSTMCell, w_ih, w_hh, bias)
    x, h, c = _t(torch, dev, x, h, c, grad=train)
    run = lambda: cell(x, (h, c))
    return run if train else _no_grad(torch, run)


def torch_lstm_cell_backward(torch, dev, s, args, kw):
    dh, dc, cache = args
    cell = _torch_lstm_module(torch, dev, torch.nn.LSTMCell, cache.w_ih, cache.w_hh, np.zeros(cache.w_ih.shape[1],
                                                                                               cache.x.dtype))
    x, h, c = _t(torch, dev, cache.x, cache.h, cache.c, grad=True)
    h1, c1 = cell(x, (h, c))
    return _grad(torch, (h1, c1), (x, h, c, *cell.parameters()), tuple(_t(torch, dev, dh, dc)))


def torch_lstm(torch, dev, s, args, kw, train=False):
    xs, h0, c0, w_ih, w_hh, bias = args
    m = _torch_lstm_module(torch, dev, torch.nn.LSTM, w_ih, w_hh, bias, batch_first=True)
    xs, h0, c0 = _t(torch, dev, xs, h0[None], c0[None], grad=train)
    run = lambda: m(xs, (h0, c0))
    return run if train else _no_grad(torch, run)


def torch_lstm_backward(torch, dev, s, args, kw):
    dhs, dh, dc, cache = args
    m = _torch_lstm_module(torch, dev, torch.nn.LSTM, cache.w_ih, cache.w_hh,
                           np.zeros(cache.w_ih.shape[1], cache.x.dtype), batch_first=True)
    xs, h0, c0 = _t(torch, dev, cache.x, cache.h[None], cache.c[None], grad=True)
    hs, (hn, cn) = m(xs, (h0, c0))
    return _grad(torch, (hs, hn, cn), (xs, h0, c0, *m.parameters()), tuple(_t(torch, dev, dhs, dh[None], dc[None])))


# ------------------------------------------------------------------------------------------------- op table

def conv_flops(s):
    return 2.0 * s.N * s.K * _out(s.H, s.R, s.stride, s.pad) * _out(s.W, s.S, s.stride, s.pad) * s.C * s.R * s.S


def cell_flops(s):
    return 2.0 * s.B * (s.D + s.H) * 4 * s.H           # the two GEMMs; the gate math is O(B*H)


def seq_flops(s):
    return s.T * cell_flops(s)


@dataclass(frozen=True)
class Op:
    """One benchmarked call: `fastnn.<name>(*args, **kwargs)` with the inputs `make(shape, dtype, rng)` returns.

    flops: shape -> floating-point operations (compute-bound ops, rate in GFLOP/s); None means memory-bound,
    rated in GB/s with bytes = array inputs read once + array outputs written once."""
    name: str
    family: str
    make: Callable
    torch: Optional[Callable] = None
    flops: Optional[Callable] = None
    torch_train: Optional[Callable] = None  # PyTorch's forward with autograd recording (LSTM), for a note


def _twice(f):
    return lambda s: 2 * f(s)          # a backward computes two products of the forward's size (dx and dweight)


OPS = [
    Op("conv2d", "conv2d", make_conv2d, torch_conv2d, conv_flops),
    Op("conv2d_backward", "conv2d", make_conv2d_backward, torch_conv2d_backward, _twice(conv_flops)),
    Op("im2col", "im2col", make_im2col, torch_im2col),
    Op("col2im", "im2col", make_col2im, torch_col2im),
    Op("max_pool2d", "pool2d", make_pool, torch_max_pool2d),
    Op("max_pool2d_backward", "pool2d", make_max_pool2d_backward, torch_max_pool2d_backward),
    Op("avg_pool2d", "pool2d", make_pool, torch_avg_pool2d),
    Op("avg_pool2d_backward", "pool2d", make_avg_pool2d_backward, torch_avg_pool2d_backward),
    Op("batch_norm", "batch_norm", make_batch_norm, torch_batch_norm),
    Op("batch_norm_backward", "batch_norm", make_batch_norm_backward, torch_batch_norm_backward),
    Op("lstm_cell", "lstm_cell", make_lstm_cell, torch_lstm_cell, cell_flops, partial(torch_lstm_cell, train=True)),
    Op("lstm_cell_backward", "lstm_cell", make_lstm_cell_backward, torch_lstm_cell_backward, _twice(cell_flops)),
    Op("lstm", "lstm", make_lstm, torch_lstm, seq_flops, partial(torch_lstm, train=True)),
    Op("lstm_backward", "lstm", make_lstm_backward, torch_lstm_backward, _twice(seq_flops)),
]
OPS_BY_NAME = {op.name: op for op in OPS}


def select_ops(names):
    """`--ops conv2d,max_pool2d`: a forward name selects its backward too; a `*_backward` name selects itself."""
    if not names:
        return list(OPS)
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - set(OPS_BY_NAME)
    if unknown:
        raise SystemExit(f"unknown op(s) {sorted(unknown)}; choose from {', '.join(OPS_BY_NAME)}")
    return [op for op in OPS if op.name in wanted or op.name.removesuffix("_backward") in wanted]


# -------------------------------------------------------------------------------------------------- devices

class CPU:
    """NumPy arrays; nothing to synchronise."""
    name, torch_device = "cpu", "cpu"

    def put(self, a):
        return a

    def sync(self):
        pass


class GPU:
    """CUDA arrays: CuPy if importable, else Numba device arrays; timing synchronises the device."""
    name, torch_device = "cuda", "cuda"

    def __init__(self):
        try:
            from numba import cuda
        except ImportError as e:
            raise SystemExit(f"--backend cuda needs numba-cuda: {e}") from e
        if not cuda.is_available():
            raise SystemExit("--backend cuda: no usable CUDA device (numba.cuda.is_available() is False)")
        self.cuda = cuda
        try:
            import cupy
            self.cupy = cupy
        except ImportError:
            self.cupy = None

    def put(self, a):
        return self.cupy.asarray(a) if self.cupy is not None else self.cuda.to_device(a)

    def sync(self):
        self.cuda.synchronize()


def on_device(device, args, backend):
    """The NumPy inputs on `device`; an LSTMCache is re-labelled for `backend` with its arrays moved too."""
    def move(a):
        if isinstance(a, np.ndarray):
            return device.put(a)
        if isinstance(a, LSTMCache):
            return a._replace(backend=backend, **{f: move(getattr(a, f)) for f in a._fields[2:]})
        return a
    return tuple(move(a) for a in args)


# ---------------------------------------------------------------------------------------------------- timing

def timeit(fn, budget=0.3, repeat=10, sync=lambda: None, warmup=1):
    """Time `fn()`: `warmup` untimed calls, then timed calls until there are `repeat` of them or `budget` seconds
    are spent (at least one). `sync` runs before and after each timed call (a device synchronize on the GPU).
    Returns (best_ms, median_ms, number_of_timed_runs)."""
    def once():
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeat and (not times or time.perf_counter() - start < budget):
        times.append(once())
    return 1e3 * min(times), 1e3 * float(np.median(times)), len(times)


def nbytes(obj):
    """Bytes of the arrays in a (nested) result or argument list; caches and non-arrays count 0."""
    if isinstance(obj, LSTMCache):
        return 0
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    return int(getattr(obj, "nbytes", 0) or 0) if hasattr(obj, "shape") else 0


def _reason(e):
    """One short line: the message of a RuntimeError (e.g. "conv2d: not implemented yet"), else type: message."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (msg if isinstance(e, RuntimeError) and msg else f"{type(e).__name__}: {msg}")[:80]


# ------------------------------------------------------------------------------------------------------ rows

@dataclass
class Row:
    """One (op, shape): times in ms (None = n/a, the reason in `notes`) and the work done."""
    op: str
    shape: str                              # shape_id(shape); `params` has the fields
    params: dict = field(default_factory=dict)
    numpy_ms: Optional[float] = None
    fastnn_ms: Optional[float] = None
    torch_ms: Optional[float] = None
    torch_train_ms: Optional[float] = None  # PyTorch's forward with autograd on (Op.torch_train)
    flops: Optional[float] = None           # compute-bound ops
    bytes: Optional[float] = None           # memory-bound ops: inputs read once + outputs written once
    runs: dict = field(default_factory=dict)    # per column: number of timed runs and their median ms
    notes: list = field(default_factory=list)

    @staticmethod
    def _ratio(other_ms, ms):
        return other_ms / ms if other_ms and ms else None

    @property
    def speedup_vs_numpy(self):
        return self._ratio(self.numpy_ms, self.fastnn_ms)

    @property
    def speedup_vs_torch(self):
        """fastnn speed / torch speed (torch ms / fastnn ms): > 1 means fastnn is faster."""
        return self._ratio(self.torch_ms, self.fastnn_ms)

    def rate(self, ms):
        """GFLOP/s (compute-bound) or GB/s (memory-bound) at `ms`."""
        work = self.flops if self.flops is not None else self.bytes
        return work / (ms * 1e6) if work and ms else None

    @property
    def unit(self):
        return "GFLOP/s" if self.flops is not None else "GB/s"

    def as_dict(self):
        d = asdict(self)
        d.update(speedup_vs_numpy=self.speedup_vs_numpy, speedup_vs_torch=self.speedup_vs_torch, unit=self.unit,
                 **{f"{c}_rate": self.rate(getattr(self, f"{c}_ms")) for c in ("numpy", "fastnn", "torch")})
        return d


@dataclass
class Config:
    """What one run measures: parsed from the command line."""
    backend: str = "cpu"
    dtype: str = "float32"
    sizes: str = "default"
    threads: Optional[int] = None
    repeat: int = 10
    budget: float = 0.3                     # seconds per cell (fastnn / torch)
    numpy_budget: float = 0.2               # the reference is slow: fewer runs
    numpy_max_bytes: float = 256e6          # on the GPU, skip the NumPy column above this input size
    torch: bool = True
    ops: list = field(default_factory=lambda: list(OPS))
    mixed: bool = False


def _cell(row, column, make_fn, budget, repeat, sync, slow_once=False):
    """Time one column of a row; any failure (kernel not written, torch missing an op...) is a note, not a crash.
    The first call is the warm-up and gives the result (returned; None on failure). With `slow_once` (the NumPy
    reference) a first call slower than the budget is the measurement itself, so slow references run once; other
    columns always get a timed call after the warm-up (which absorbs JIT compiles and cuDNN autotuning)."""
    try:
        fn = make_fn()
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        first = time.perf_counter() - t0
        if slow_once and first > budget:
            best = median = 1e3 * first
            runs = 1
        else:
            best, median, runs = timeit(fn, budget, repeat, sync, warmup=0)
    except Exception as e:  # noqa: BLE001 - report every failure in the table and carry on
        note = f"{column}: {_reason(e)}"
        if note not in row.notes:  # the second round fails the same way
            row.notes.append(note)
        return None
    prev = getattr(row, f"{column}_ms")
    if prev is None or best < prev:  # a later round of the same cell keeps the better time
        setattr(row, f"{column}_ms", best)
        row.runs[column] = {"runs": runs + row.runs.get(column, {}).get("runs", 0), "median_ms": median}
    else:
        row.runs[column]["runs"] += runs
    return result


def bind(op, impl, shape, args, kw, device, torch=None):
    """A zero-argument callable running `op` on `impl` ("numpy", "cpu", "cuda", "torch" or "torch_train") with the
    NumPy inputs `args, kw` from `op.make`; inputs are moved to `device` here, outside any timing."""
    if impl in ("torch", "torch_train"):
        return getattr(op, impl)(torch, device.torch_device, shape, args, kw)
    a = on_device(CPU() if impl == "numpy" else device, args, impl)
    return lambda: getattr(fastnn, op.name)(*a, backend=impl, **kw)


def winograd(shape, cfg, device):
    """Whether the cpu backend runs this conv shape as Winograd F(2x2,3x3) (csrc/conv2d.cpp, winograd_fits): it
    does 16 multiplies per 2x2 outputs and channel pair where the FLOP count assumes 36."""
    try:
        from fastnn import _C
        simd = _C.config()["simd"]
    except ImportError:
        return False
    if not (device.name == "cpu" and isinstance(shape, Conv) and cfg.dtype == "float32" and simd != "scalar"):
        return False
    oh, ow = (n + 2 * shape.pad - 2 for n in (shape.H, shape.W))  # 3x3, stride 1
    return (shape.R == shape.S == 3 and shape.stride == 1 and min(shape.C, shape.K) >= 32 and
            shape.N * ((oh + 1) // 2) * ((ow + 1) // 2) >= 192)


def measure(op, shape, cfg, device, torch=None):
    """One Row: the NumPy reference, the fastnn backend and (optionally) PyTorch on the same inputs."""
    args, kw = op.make(shape, np.dtype(cfg.dtype), np.random.default_rng(0))
    row = Row(op.name, shape_id(shape), shape._asdict(), flops=op.flops(shape) if op.flops else None)

    def cell(impl, column, budget, repeat, sync):
        return _cell(row, column, lambda: bind(op, impl, shape, args, kw, device, torch), budget, repeat, sync,
                     slow_once=impl == "numpy")

    out = None
    if device.name == "cpu" or nbytes(args) <= cfg.numpy_max_bytes:
        out = cell("numpy", "numpy", cfg.numpy_budget, max(1, cfg.repeat // 3), CPU().sync)
    else:
        row.notes.append("numpy: skipped (large shape on GPU)")
    # fastnn and PyTorch in two alternating rounds, the best of each kept: a transient at the start of one cell
    # (NumPy's BLAS threads still spinning after the reference made fastnn's first CPU row 6x slower in 2 of 4
    # runs) does not decide its ratio.
    fast_out = None
    for _ in range(2):
        got = cell(cfg.backend, "fastnn", cfg.budget, cfg.repeat, device.sync)
        fast_out = got if got is not None else fast_out
        for column in ("torch", "torch_train"):
            if torch is not None and getattr(op, column) is not None:
                cell(column, column, cfg.budget, cfg.repeat,
                     torch.cuda.synchronize if device.name == "cuda" else CPU().sync)
    out = out if out is not None else fast_out
    if row.torch_train_ms is not None and row.fastnn_ms:
        row.notes.append(f"torch with autograd on {_ms(row.torch_train_ms)} ms: "
                         f"{row.torch_train_ms / row.fastnn_ms:.2f}x")
    if winograd(shape, cfg, device):
        row.notes.append(("dx by " if op.name == "conv2d_backward" else "") +
                         "Winograd F(2x2,3x3): rate in direct-conv FLOPs")
    if op.flops is None and out is not None:
        row.bytes = float(nbytes(args) + nbytes(out))
    return row


# ------------------------------------------------------------------------------------------------- ceilings

def cpu_ceilings(repeat=3, n=2048, copy_elems=1 << 25, threads=1):
    """Measured in this run: NumPy sgemm GFLOP/s at n^3 (float32) and np.copyto GB/s (read + write), the copy split
    into `threads` parts copied at once from Python threads (np.copyto releases the GIL), as the kernels use them."""
    import threading
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    gemm_ms, _, _ = timeit(lambda: a @ b, budget=1.0, repeat=repeat)
    src, dst = np.ones(copy_elems, np.float32), np.empty(copy_elems, np.float32)
    parts = [(dst[i * copy_elems // threads:(i + 1) * copy_elems // threads],
              src[i * copy_elems // threads:(i + 1) * copy_elems // threads]) for i in range(threads)]

    def copy():
        ts = [threading.Thread(target=np.copyto, args=p) for p in parts[1:]]
        for t in ts:
            t.start()
        np.copyto(*parts[0])
        for t in ts:
            t.join()
    copy_ms, _, _ = timeit(copy, budget=1.0, repeat=repeat)
    return {"sgemm_gflops": 2 * n ** 3 / (gemm_ms * 1e6), "sgemm_n": n,
            "copy_gbs": 2 * src.nbytes / (copy_ms * 1e6), "copy_bytes": src.nbytes}


def gpu_ceilings(device, repeat=10, torch=None, elems=1 << 28, n=4096):
    """Measured in this run: a device-to-device copy GB/s (read + write) and, with PyTorch, cuBLAS sgemm GFLOP/s
    at n^3 (float32, TF32 off)."""
    src = device.cuda.device_array(elems, np.float32)
    dst = device.cuda.device_array(elems, np.float32)
    ms, _, _ = timeit(lambda: dst.copy_to_device(src), budget=1.0, repeat=repeat, sync=device.sync)
    out = {"device_copy_gbs": 2 * src.nbytes / (ms * 1e6), "copy_bytes": src.nbytes}
    if torch is not None:
        a = torch.randn(n, n, device="cuda")
        ms, _, _ = timeit(lambda: a @ a, budget=1.0, repeat=repeat, sync=torch.cuda.synchronize)
        out.update(sgemm_gflops=2 * n ** 3 / (ms * 1e6), sgemm_n=n)
    return out


# ------------------------------------------------------------------------------------------------- printing

def _ms(v):
    return "n/a" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _x(v):
    return "" if v is None else f"{v:.2f}x"


def _rate(row, ceilings):
    r = row.rate(row.fastnn_ms)
    if r is None:
        return ""
    peak = ceilings.get("sgemm_gflops") if row.flops is not None else (
        ceilings.get("copy_gbs") or ceilings.get("device_copy_gbs"))
    pct = f" ({100 * r / peak:.0f}%)" if peak else ""
    return f"{r:.1f} {row.unit}{pct}"


def format_table(rows, ceilings, with_torch):
    head = ["op", "shape", "numpy ms", "fastnn ms", "vs numpy"]
    head += ["torch ms", "fastnn/torch"] if with_torch else []
    head += ["fastnn rate (% of ceiling)", "notes"]
    body = []
    for r in rows:
        cells = [r.op, r.shape, _ms(r.numpy_ms), _ms(r.fastnn_ms), _x(r.speedup_vs_numpy)]
        cells += [_ms(r.torch_ms), _x(r.speedup_vs_torch)] if with_torch else []
        cells += [_rate(r, ceilings), "; ".join(r.notes)]
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    right = {2, 3, 4, 5, 6} if with_torch else {2, 3, 4}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(c) for c in body])


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load():
    """The 1-minute load average (other processes on a shared machine make every time noisier), or nan."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def machine_info(cfg, ceilings, torch, config):
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.platform(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "load_average": _load(), "fastnn_config": config,
            "python": sys.version.split()[0], "numpy": np.__version__,
            "torch": getattr(torch, "__version__", None), "backend": cfg.backend, "dtype": cfg.dtype,
            "sizes": cfg.sizes, "threads": cfg.threads, "repeat": cfg.repeat, "ceilings": ceilings}


# ----------------------------------------------------------------------------------------------------- --mixed
# fastnn in company: a training loop calls NumPy's BLAS and fastnn in turn. NumPy's OpenBLAS keeps a worker
# spinning for ~0.1 s after each parallel call, and a pool of fastnn's that spun after its work took the cores back
# from the next matmul (csrc/parallel.h). Each side is timed in the alternating loop ("company") and in the same
# loop with the other side's threads taken away ("quiet"): NumPy's BLAS on one thread (threadpoolctl) for the
# fastnn call, fastnn on one thread for the matmul. The loop and the caches it churns are the same in both, so
# company/quiet is what the two thread pools cost each other. "alone" is the call back to back with itself. The
# alone and quiet loops start after OpenBLAS's workers have stopped spinning: no earlier matmul's spin is in them.

MIXED_MATMUL = (512, 1024, 512)     # (M, K, N) of the NumPy matmul beside each call: ~1.7 ms on 2 threads here
OPENBLAS_SPIN_S = 0.15              # OpenBLAS's workers spin 2^28 TSC cycles (~0.1 s) after a call: wait them out


@dataclass
class MixedRow:
    op: str
    shape: str
    threads: int
    alone_ms: float = 0.0            # fastnn call back to back with itself
    quiet_ms: float = 0.0            # after a one-thread matmul
    company_ms: float = 0.0          # after a default matmul
    mm_quiet_ms: float = 0.0         # matmul after the fastnn call on one thread
    mm_company_ms: float = 0.0       # matmul after the fastnn call on `threads` threads

    @property
    def op_ratio(self):
        return self.company_ms / self.quiet_ms

    @property
    def mm_ratio(self):
        return self.mm_company_ms / self.mm_quiet_ms


def _loop(first, second, n):
    """Median ms of `second()` and of `first()` over n rounds of first(); second()."""
    a, b = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        b.append(time.perf_counter() - t1)
        a.append(t1 - t0)
    return 1e3 * float(np.median(b)), 1e3 * float(np.median(a))


def measure_mixed(fn, matmul, threads, rounds=3, n=15):
    """(alone, quiet, company, mm_quiet, mm_company) medians over `rounds` interleaved rounds of each loop."""
    from threadpoolctl import threadpool_limits
    got = {k: [] for k in ("alone", "quiet", "company", "mm_quiet", "mm_company")}
    fn()
    matmul()
    for _ in range(rounds):
        fastnn.set_num_threads(threads)
        time.sleep(OPENBLAS_SPIN_S)
        got["alone"].append(_loop(lambda: None, fn, n)[0])
        op_ms, mm_ms = _loop(matmul, fn, n)
        got["company"].append(op_ms)
        got["mm_company"].append(mm_ms)
        with threadpool_limits(1, user_api="blas"):
            time.sleep(OPENBLAS_SPIN_S)
            got["quiet"].append(_loop(matmul, fn, n)[0])
        fastnn.set_num_threads(1)
        got["mm_quiet"].append(_loop(matmul, fn, n)[1])
    fastnn.set_num_threads(threads)
    return {k: float(np.median(v)) for k, v in got.items()}


def run_mixed(cfg, out=None):
    """The --mixed table: every selected op on SHAPES["mixed"], fastnn on 1 and on cfg.threads threads."""
    out = out or sys.stdout
    try:
        import threadpoolctl  # noqa: F401
    except ImportError as e:
        raise SystemExit("--mixed needs threadpoolctl (pip install threadpoolctl): it runs NumPy's BLAS on one "
                         "thread for the quiet loop") from e
    dtype = np.dtype(cfg.dtype)
    rng = np.random.default_rng(0)
    m, k, n = MIXED_MATMUL
    a, b = _gauss(rng, dtype, m, k), _gauss(rng, dtype, k, n)
    matmul = lambda: a @ b  # noqa: E731
    counts = sorted({1, cfg.threads or fastnn.get_num_threads()})
    print(f"fastnn.bench --mixed: dtype={cfg.dtype}, each call after a NumPy matmul {m}x{k} @ {k}x{n} "
          f"(NumPy's BLAS on its default threads); load average {_load():.1f} on {os.cpu_count()} CPUs", file=out)
    rows = []
    for op in cfg.ops:
        for shape in shapes_for(op.family, "mixed"):
            args, kw = op.make(shape, dtype, rng)
            fn = bind(op, "cpu", shape, args, kw, CPU())
            for t in counts:
                if sys.stderr.isatty():
                    print(f"\r\033[K{op.name} {shape_id(shape)} threads={t}", end="", file=sys.stderr, flush=True)
                r = measure_mixed(fn, matmul, t)
                rows.append(MixedRow(op.name, shape_id(shape), t, *(r[c] for c in (
                    "alone", "quiet", "company", "mm_quiet", "mm_company"))))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(format_mixed(rows), file=out)
    print("op: the fastnn call's median ms back to back (alone), after a one-thread matmul (quiet), after the "
          "default matmul (company);\nmatmul: its median ms after the fastnn call on one thread (quiet) and on the "
          "row's threads (company). Ratios: company / quiet.", file=out)
    return rows


def format_mixed(rows):
    head = ["op", "shape", "threads", "alone", "quiet", "company", "op ratio", "matmul quiet", "matmul company",
            "matmul ratio"]
    body = [[r.op, r.shape, str(r.threads), _ms(r.alone_ms), _ms(r.quiet_ms), _ms(r.company_ms), _x(r.op_ratio),
             _ms(r.mm_quiet_ms), _ms(r.mm_company_ms), _x(r.mm_ratio)] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(c) for c in body])



# ----------------------------------------------------------------------------------------------------- setup

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m fastnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="", help="comma-separated op names (a forward name includes its backward)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--sizes", choices=("small", "default"), default="default")
    p.add_argument("--threads", type=int, default=None, help="threads for fastnn, PyTorch and NumPy's BLAS")
    p.add_argument("--repeat", type=int, default=10, help="at most this many timed runs per cell (>= 1)")
    p.add_argument("--json", metavar="PATH", help="write every row and the machine info to PATH")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch columns")
    p.add_argument("--mixed", action="store_true",
                   help="each cpu call in company with NumPy matmuls, on 1 and --threads threads (a table of its own)")
    a = p.parse_args(argv)
    cfg = Config(backend=a.backend, dtype=a.dtype, sizes=a.sizes, threads=a.threads, repeat=max(1, a.repeat),
                 torch=not a.no_torch, ops=select_ops(a.ops), mixed=a.mixed)
    if cfg.mixed and cfg.backend != "cpu":
        raise SystemExit("--mixed times the cpu backend beside NumPy's BLAS (drop --backend cuda)")
    return cfg, a.json


def import_torch(cfg):
    """PyTorch configured like fastnn (same threads; no TF32 on the GPU), or None."""
    if not cfg.torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    if cfg.backend == "cuda":
        if not torch.cuda.is_available():
            return None
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True          # cuDNN's best algorithm per shape (tuned in the warm-up)
    else:
        torch.set_num_threads(cfg.threads)
    return torch


def set_threads(cfg):
    """Use the same thread count everywhere: fastnn's (default: one per CPU), PyTorch, NumPy's BLAS."""
    try:
        if cfg.threads:
            fastnn.set_num_threads(cfg.threads)
        cfg.threads = fastnn.get_num_threads()
    except ImportError:                     # no C++ extension: keep the machine's count
        cfg.threads = cfg.threads or os.cpu_count()
    try:
        import threadpoolctl
        return threadpoolctl.threadpool_limits(cfg.threads)     # undone by main() when it returns
    except ImportError:
        return None


def run(cfg, torch=None, out=None):
    """Measure and print everything (to `out`, default stdout); returns (rows, ceilings, fastnn config)."""
    out = out or sys.stdout
    device = GPU() if cfg.backend == "cuda" else CPU()
    reps = min(3, cfg.repeat)
    ceilings = (gpu_ceilings(device, reps, torch) if device.name == "cuda" else
                cpu_ceilings(reps, threads=max(1, cfg.threads or 1)))
    print(f"fastnn.bench: backend={cfg.backend} dtype={cfg.dtype} sizes={cfg.sizes} threads={cfg.threads} "
          f"torch={getattr(torch, '__version__', 'no')} load average {_load():.1f} on {os.cpu_count()} CPUs", file=out)
    if device.name == "cuda":
        sgemm = (f"; cuBLAS sgemm {ceilings['sgemm_n']}^3 float32 (TF32 off) {ceilings['sgemm_gflops']:.0f} GFLOP/s"
                 if "sgemm_gflops" in ceilings else "")
        print(f"ceilings: device-to-device copy {ceilings['device_copy_gbs']:.0f} GB/s (read+write){sgemm}", file=out)
    else:
        print(f"ceilings: numpy sgemm {ceilings['sgemm_n']}^3 float32 {ceilings['sgemm_gflops']:.1f} GFLOP/s; "
              f"np.copyto {ceilings['copy_bytes'] >> 20} MiB on {cfg.threads} threads {ceilings['copy_gbs']:.1f} GB/s "
              f"(read+write)", file=out)
    config = fastnn.show_config(file=out)
    print(file=out)
    rows = []
    for op in cfg.ops:
        for shape in shapes_for(op.family, cfg.sizes, cfg.backend):
            if sys.stderr.isatty():         # progress while it runs (the table needs every row for its widths)
                print(f"\r\033[K{op.name} {shape_id(shape)}", end="", file=sys.stderr, flush=True)
            rows.append(measure(op, shape, cfg, device, torch))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(format_table(rows, ceilings, torch is not None), file=out)
    print("vs numpy, fastnn/torch: how many times faster fastnn is (other ms / fastnn ms); "
          "times are the best of the timed runs.", file=out)
    return rows, ceilings, config


def main(argv=None):
    cfg, json_path = parse_args(argv)
    if cfg.mixed:  # NumPy's BLAS keeps its own threads: that is the company being measured
        if cfg.threads:
            fastnn.set_num_threads(cfg.threads)
        cfg.threads = fastnn.get_num_threads()
        rows = run_mixed(cfg)
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"machine": machine_info(cfg, {}, None, fastnn.show_config(file=io.StringIO())),
                           "mixed": [dict(asdict(r), op_ratio=r.op_ratio, matmul_ratio=r.mm_ratio) for r in rows]},
                          f, indent=1)
        return rows
    blas_limit = set_threads(cfg)
    try:
        torch = import_torch(cfg)
        rows, ceilings, config = run(cfg, torch)
    finally:
        if blas_limit is not None:
            blas_limit.restore_original_limits()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": machine_info(cfg, ceilings, torch, config), "rows": [r.as_dict() for r in rows]}, f,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
