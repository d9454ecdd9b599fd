"""The op table: for every op, its cases, its input makers, its PyTorch baseline and its work count, in one place.

The conformance tests (tests/test_ops.py), the kernel tests (tests/test_cpu_*.py), `python -m fastnn.bench` and the
pytest-benchmark suite (bench/) all read this module, so a new op or a new awkward case is tested and timed by
adding it here; tests/test_completeness.py fails while an op of OPS lacks a backend, a reference, a public function
or its section of docs/internals.md. Importable without PyTorch (the baselines receive the torch module).

In order:
  CASES         test cases per forward op (a backward is exercised with its forward; im2col covers col2im):
                `tiny` ones also run in the CUDA simulator, `realistic` ones are network-sized (GPU tests only);
                `arrays(case, dtype)` makes their inputs.
  KERNEL_CASES  shapes aimed at particular C++ kernel paths (tests/test_cpu_conv.py, tests/test_cpu_misc.py).
  SHAPES        benchmark shapes per family and size set ("cpu", "cuda", "mixed", "sweep", "small").
  make_*        benchmark inputs: (args, kwargs) for `fastnn.<op>(*args, **kwargs)`.
  torch_*       the PyTorch baselines.
  OPS           one Op per public op: name, shape family, test cases, maker, baseline, FLOP count.
"""
import math
from collections import namedtuple
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import reference
from ._shapes import out_size, pair

# ------------------------------------------------------------------------------------------------- test cases


class Case(NamedTuple):
    op: str
    p: dict
    tiny: bool = False
    realistic: bool = False

    @property
    def id(self):
        """A readable test id, e.g. "x=1x2x5x4,kernel_size=3x2,stride=1x2,padding=1x0"."""
        def fmt(v):
            if not isinstance(v, tuple):
                return v
            return ("+" if isinstance(v[0], str) else "x").join(map(str, v))   # none=h0+c0, shapes 1x2x5x4
        return ",".join(f"{k}={fmt(v)}" for k, v in self.p.items() if v != ())


def im2col_case(x, kernel_size, stride=1, padding=0, dilation=1, tiny=False, realistic=False):
    return Case("im2col", dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation),
                tiny, realistic)


def conv_case(x, k, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, tiny=False, realistic=False):
    return Case("conv2d", dict(x=x, k=k, kernel_size=kernel_size, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, bias=bias), tiny, realistic)


def pool_case(op, x, kernel_size, stride=None, padding=0, tiny=False, realistic=False, **extra):
    return Case(op, dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding, **extra), tiny, realistic)


def bn_case(x, training=True, affine=True, running=True, momentum=0.1, eps=1e-5, tiny=False, realistic=False):
    return Case("batch_norm", dict(x=x, training=training, affine=affine, running=running, momentum=momentum,
                                   eps=eps), tiny, realistic)


def lstm_cell_case(n, d, h, gate_order="ifgo", bias=True, none=(), tiny=False, realistic=False):
    """`none`: which of h, c, dh_next, dc_next are passed as None."""
    return Case("lstm_cell", dict(n=n, d=d, h=h, gate_order=gate_order, bias=bias, none=none), tiny, realistic)


def lstm_case(n, t, d, h, gate_order="ifgo", bias=True, none=(), tiny=False, realistic=False):
    """`none`: which of h0, c0, dhs, dh_n, dc_n are passed as None."""
    return Case("lstm", dict(n=n, t=t, d=d, h=h, gate_order=gate_order, bias=bias, none=none), tiny, realistic)


CASES = {
    "im2col": [
        im2col_case((1, 1, 4, 4), 2, tiny=True),
        im2col_case((2, 2, 5, 4), (3, 2), (2, 1), 1, tiny=True),               # non-square kernel and stride
        im2col_case((1, 2, 5, 5), 2, 1, 1, 2, tiny=True),                       # dilation 2
        im2col_case((1, 1, 5, 7), 1, 3, tiny=True),                             # 1x1 kernel, stride > kernel
        im2col_case((1, 3, 3, 3), 3, 1, 1, tiny=True),
        im2col_case((2, 5, 3, 7), 1, tiny=True),                                # 1x1/s1/p0: col2im transposes
        im2col_case((2, 1, 20, 17), 1),                                         # the same, one channel, 2 blocks
        im2col_case((2, 3, 6, 9), 1, (2, 3)),                                   # 1x1 at stride > 1: strided stores
        im2col_case((2, 3, 17, 15), 3, 1, 1),
        im2col_case((3, 5, 20, 13), (5, 3), 2, (2, 1), (1, 2)),
        im2col_case((8, 64, 56, 56), 3, 1, 1, realistic=True),
    ],
    "conv2d": [
        conv_case((1, 1, 4, 4), 1, 1, tiny=True),                               # 1x1, one channel
        conv_case((2, 2, 5, 5), 3, 3, 1, 1, tiny=True),
        conv_case((1, 2, 6, 5), 2, (3, 2), 2, 1, bias=False, tiny=True),        # stride 2, no bias
        conv_case((1, 4, 5, 5), 4, 3, 1, 1, groups=2, tiny=True),               # groups 2
        conv_case((1, 2, 7, 7), 2, 3, 1, 2, 2, tiny=True),                      # dilation 2
        conv_case((1, 1, 7, 5), 3, 1, 3, tiny=True),                            # stride > kernel
        conv_case((1, 3, 3, 4), 3, 3, 1, 1, groups=3, tiny=True),               # depthwise
        conv_case((2, 8, 17, 15), 12, 3, 1, 1),
        conv_case((3, 6, 13, 11), 10, (5, 3), 2, (2, 1), groups=2),
        conv_case((1, 16, 16, 16), 32, 3, 1, 2, 2, groups=4),
        conv_case((4, 3, 23, 19), 7, (7, 5), 3, 2),
        conv_case((2, 6, 9, 9), 6, 1, 2, groups=3, bias=False),
        conv_case((1, 1, 31, 29), 1, 3, 1, 1),
        conv_case((8, 64, 56, 56), 64, 3, 1, 1, realistic=True),                # ResNet stage 1
        conv_case((4, 3, 224, 224), 64, 7, 2, 3, realistic=True),               # ResNet stem
        conv_case((8, 256, 14, 14), 256, 3, 1, 1, realistic=True),
    ],
    "max_pool2d": [
        pool_case("max_pool2d", (1, 1, 4, 4), 2, tiny=True),
        pool_case("max_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True),              # overlapping windows, padding
        pool_case("max_pool2d", (1, 2, 5, 4), (3, 2), (1, 2), (1, 0), tiny=True),
        pool_case("max_pool2d", (1, 1, 7, 7), 2, 3, tiny=True),                 # stride > kernel
        pool_case("max_pool2d", (1, 3, 3, 3), 3, 1, 1, tiny=True),
        pool_case("max_pool2d", (2, 8, 17, 15), 3, 2, 1),
        pool_case("max_pool2d", (3, 5, 20, 13), 2),
        pool_case("max_pool2d", (2, 4, 11, 9), (3, 5), (2, 1), (1, 2)),
        pool_case("max_pool2d", (8, 64, 112, 112), 3, 2, 1, realistic=True),    # ResNet stem pool
    ],
    "avg_pool2d": [
        pool_case("avg_pool2d", (1, 1, 4, 4), 2, tiny=True, count_include_pad=True),
        pool_case("avg_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True, count_include_pad=True),
        pool_case("avg_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True, count_include_pad=False),
        pool_case("avg_pool2d", (1, 2, 5, 4), (3, 2), (1, 2), (1, 0), tiny=True, count_include_pad=False),
        pool_case("avg_pool2d", (1, 1, 7, 7), 2, 3, tiny=True, count_include_pad=True),
        pool_case("avg_pool2d", (2, 8, 17, 15), 3, 2, 1, count_include_pad=False),
        pool_case("avg_pool2d", (3, 5, 20, 13), 2, count_include_pad=True),
        pool_case("avg_pool2d", (2, 4, 11, 9), (3, 5), (2, 1), (1, 2), count_include_pad=True),
        pool_case("avg_pool2d", (8, 512, 7, 7), 7, realistic=True, count_include_pad=True),          # global pool
        pool_case("avg_pool2d", (8, 64, 56, 56), 3, 2, 1, realistic=True, count_include_pad=False),
    ],
    "batch_norm": [
        bn_case((6, 3), tiny=True),
        bn_case((1, 2, 3, 4), tiny=True),                                       # batch 1 (4-D: M = 12)
        bn_case((4, 1), affine=False, running=False, tiny=True),                # one channel, gamma/beta None
        bn_case((2, 3, 3, 5), momentum=0.3, eps=1e-3, tiny=True),
        bn_case((3, 2, 2, 3), training=False, tiny=True),
        bn_case((5, 4), training=False, affine=False, tiny=True),
        bn_case((64, 100)),
        bn_case((4, 16, 13, 11)),
        bn_case((128, 33), affine=False),
        bn_case((8, 10, 9, 7), training=False),
        bn_case((32, 64, 56, 56), realistic=True),
        bn_case((32, 256, 14, 14), training=False, realistic=True),
        bn_case((32, 256, 14, 14), realistic=True),                             # cuda: one block per channel, full
    ],
    "lstm_cell": [
        lstm_cell_case(2, 3, 4, tiny=True),
        lstm_cell_case(1, 5, 3, "fgio", none=("h", "c"), tiny=True),
        lstm_cell_case(3, 2, 5, bias=False, none=("dc_next",), tiny=True),
        lstm_cell_case(2, 4, 2, "fgio", none=("dh_next",), tiny=True),
        lstm_cell_case(16, 33, 20),
        lstm_cell_case(7, 64, 50, "fgio"),
        lstm_cell_case(64, 512, 512, realistic=True),
    ],
    "lstm": [
        lstm_case(2, 3, 3, 4, tiny=True),
        lstm_case(1, 3, 2, 3, "fgio", none=("h0", "c0", "dh_n", "dc_n"), tiny=True),
        lstm_case(2, 2, 4, 2, bias=False, none=("dhs",), tiny=True),
        lstm_case(8, 10, 17, 12, "fgio"),
        lstm_case(5, 7, 32, 24, none=("h0", "c0")),
        lstm_case(64, 32, 256, 256, realistic=True),
    ],
}


ARRAYS = {}   # op -> f(case, dtype, rng): the input makers of ops outside the branches of arrays() below


def arrays(case, dtype, seed=0):
    """The input arrays of a case, in `dtype`: forward inputs plus the upstream gradient(s) of the backward.

    Convolution, im2col and pooling get small integers, so their sums are exact in float32 (and max-pool ties are
    common, which tests first-max-wins); batch norm and LSTM get Gaussian data.
    """
    rng = np.random.default_rng(seed)
    if case.op in ARRAYS:
        return ARRAYS[case.op](case, dtype, rng)
    p = case.p

    def ints(*shape):
        return rng.integers(-4, 5, shape).astype(dtype)

    def gauss(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape) * scale + shift).astype(dtype)

    if case.op in ("im2col", "conv2d", "max_pool2d", "avg_pool2d"):
        n, c, h, w = p["x"]
        (kh, kw) = pair(p["kernel_size"])
        (ph, pw) = pair(p["padding"])
        (dh, dw) = pair(p.get("dilation", 1))
        (sh, sw) = pair(p["kernel_size"] if p["stride"] is None else p["stride"])
        oh, ow = out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw)
        a = dict(x=ints(n, c, h, w))
        if case.op == "im2col":
            a["col"] = ints(n * oh * ow, c * kh * kw)
        elif case.op == "conv2d":
            k = p["k"]
            a["weight"] = ints(k, c // p["groups"], kh, kw)
            a["bias"] = ints(k) if p["bias"] else None
            a["dy"] = ints(n, k, oh, ow)
        else:
            a["dy"] = ints(n, c, oh, ow)
        return a
    if case.op == "batch_norm":
        shape, c = p["x"], p["x"][1]
        return dict(x=gauss(*shape, scale=2.0, shift=0.5),
                    gamma=gauss(c) if p["affine"] else None, beta=gauss(c) if p["affine"] else None,
                    running_mean=gauss(c) if p["running"] else None,
                    running_var=rng.uniform(0.5, 2.0, c).astype(dtype) if p["running"] else None,
                    dy=gauss(*shape))
    n, d, h = p["n"], p["d"], p["h"]
    none = p["none"]
    scale = 1 / np.sqrt(h)           # keeps the gates away from saturation, where every backend agrees trivially
    weights = dict(w_ih=gauss(d, 4 * h, scale=scale), w_hh=gauss(h, 4 * h, scale=scale),
                   bias=gauss(4 * h, scale=scale) if p["bias"] else None)

    def opt(name, *shape):
        return None if name in none else gauss(*shape)

    if case.op == "lstm_cell":
        return dict(x=gauss(n, d), h=opt("h", n, h), c=opt("c", n, h), **weights,
                    dh_next=opt("dh_next", n, h), dc_next=opt("dc_next", n, h))
    t = p["t"]
    return dict(xs=gauss(n, t, d), h0=opt("h0", n, h), c0=opt("c0", n, h), **weights,
                dhs=opt("dhs", n, t, h), dh_n=opt("dh_n", n, h), dc_n=opt("dc_n", n, h))


# ---------------------------------------------------------------------------------------------- kernel cases
# Shapes aimed at particular paths of the C++ kernels (tiles, tails, thread splits, SIMD paths), run straight on
# fastnn._C / fastnn._cpu by tests/test_cpu_conv.py and tests/test_cpu_misc.py against their own float64 checks.

# > 16 MB in float32: the non-temporal store path (rows not 32-byte aligned), threads sharing a channel / not
BIG, BIG_C = (3, 2, 701, 1001), (1, 9, 701, 667)

KERNEL_CASES = {
    # conv2d, im2col/col2im: (N, C, H, W, K, KH, KW, stride, pad, dilation, groups)
    "conv2d": [
        (2, 3, 7, 9, 4, 1, 1, (1, 1), (0, 0), (1, 1), 1),      # 1x1 plain GEMM
        (2, 3, 7, 9, 4, 1, 1, (2, 2), (0, 0), (1, 1), 1),      # 1x1 strided (implicit path)
        (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0), (1, 1), 1),      # batch 1, one channel
        (3, 2, 11, 10, 7, 2, 2, (3, 3), (0, 0), (1, 1), 1),    # stride > kernel (gaps)
        (2, 4, 9, 8, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1),      # padding
        (2, 3, 12, 11, 6, 3, 3, (1, 2), (2, 1), (2, 2), 1),    # dilation 2, mixed stride/pad
        (2, 4, 8, 8, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2),      # groups 2
        (2, 6, 9, 9, 6, 3, 3, (2, 2), (1, 1), (1, 1), 6),      # depthwise
        (2, 6, 9, 9, 12, 3, 3, (1, 1), (1, 1), (1, 1), 6),     # depthwise, multiplier 2
        (2, 3, 13, 17, 19, 5, 3, (2, 1), (2, 0), (1, 1), 1),   # non-square
        (3, 5, 20, 21, 22, 3, 3, (1, 1), (1, 1), (1, 1), 1),   # sizes not multiples of the tile
        (2, 33, 6, 7, 13, 3, 3, (1, 1), (3, 3), (1, 1), 1),    # CRS > KC (two depth blocks), pad > kernel/2
        (1, 3, 4, 4, 2, 5, 5, (1, 1), (2, 2), (1, 1), 1),      # kernel larger than the input
        (2, 16, 10, 9, 12, 3, 3, (1, 1), (1, 1), (1, 1), 1),   # >= 8 channels: dx as a conv of dy (stride 1)
        (2, 16, 12, 11, 8, 3, 2, (1, 1), (2, 0), (2, 3), 2),   # the same with dilation, groups, uneven padding
        (1, 20, 6, 6, 9, 1, 3, (1, 1), (0, 1), (1, 1), 1),     # 1xk kernel, batch 1
        (2, 9, 7, 6, 10, 3, 3, (1, 1), (2, 2), (1, 1), 1),     # pad == kernel extent - 1 (no junk column), "full" conv
        (17, 8, 6, 6, 40, 3, 3, (1, 1), (1, 1), (1, 1), 1),    # small images, many channels: gathered B, 2 images/task
        (16, 6, 8, 8, 80, 3, 3, (2, 2), (1, 1), (1, 1), 2),    # the same strided, groups
        (19, 10, 7, 7, 12, 1, 1, (1, 1), (0, 0), (1, 1), 2),   # 1x1 on small planes: B gathered over images, groups
        (2, 3, 41, 47, 8, 7, 7, (2, 2), (3, 3), (1, 1), 1),    # stem-like 7x7/2: rows long enough for the vector copy
        # the direct AVX-512 path (float32: 32-channel output blocks, OW within 10 % of a multiple of 14)
        (2, 5, 14, 14, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1),   # one channel chunk, one tile per row
        (1, 35, 13, 28, 64, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # batch 1: 3 channel chunks (16+16+3), 2 output blocks
        (2, 6, 13, 15, 32, 3, 3, (1, 1), (1, 0), (1, 1), 1),   # OW 13: a partial tile
        (2, 4, 27, 27, 32, 3, 3, (2, 2), (1, 1), (1, 1), 1),   # stride 2
        (2, 3, 55, 55, 32, 7, 7, (2, 2), (3, 3), (1, 1), 1),   # stem-like 7x7/2, 2 tiles per row
        (2, 8, 14, 14, 64, 3, 3, (1, 1), (2, 2), (2, 2), 2),   # dilation 2, groups 2
        (2, 4, 10, 28, 32, 3, 5, (1, 1), (1, 2), (1, 1), 1),   # 3x5 kernel (KW not unrolled)
        (2, 3, 9, 27, 32, 3, 3, (3, 2), (1, 1), (1, 1), 1),    # stride 3 down, 2 across
        (2, 32, 14, 14, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1),   # dx of the backward (32 input channels) on the path
        (2, 4, 12, 14, 32, 3, 3, (1, 1), (2, 1), (2, 1), 1),   # row dilation 2 (dweight's direct path: columns at 1)
        # Winograd F(2x2,3x3) (float, 3x3/s1, >= 32 channels in and out, >= 192 2x2 tiles), forward and the dx:
        (5, 64, 15, 11, 72, 3, 3, (1, 1), (1, 1), (1, 1), 1),  # odd output (edge tiles cut), 240 tiles: a part block
        (2, 65, 20, 23, 68, 3, 3, (1, 1), (0, 0), (1, 1), 1),  # no padding, 198 tiles: blocks across images and rows
        (1, 300, 26, 27, 64, 3, 3, (1, 1), (2, 2), (1, 1), 1),  # 2 depth blocks of channels, padding 2, batch 1
    ],
    # max/avg pooling: shape, kernel, stride, padding
    "pool2d": [
        ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),          # 2x2 fast path, fewer than 8 outputs per row
        ((2, 3, 38, 37), (2, 2), (2, 2), (0, 0)),        # 2x2 fast path + tail, odd W
        ((1, 2, 35, 40), (2, 2), (2, 2), (0, 0)),        # odd H: last input row unused
        ((2, 3, 40, 57), (3, 3), (2, 2), (1, 1)),        # 3x3 s2 p1 fast path, odd W
        ((1, 2, 33, 38), (3, 3), (2, 2), (1, 1)),        # even W: last window hangs over the right edge
        ((2, 3, 7, 7), (3, 3), (2, 2), (1, 1)),          # 3x3 s2 p1 rows of at most 16 inputs: one vector a row
        ((1, 2, 5, 16), (3, 3), (2, 2), (1, 1)),         # the same, 8 outputs, the last window over the edge
        ((1, 2, 4, 1), (3, 3), (2, 2), (1, 1)),          # one column: both sides of every window padding
        ((1, 1, 5, 7), (3, 2), (4, 3), (1, 1)),          # batch 1, one channel, stride > kernel, non-square
        ((3, 2, 9, 11), (2, 3), (1, 1), (1, 1)),         # stride 1, overlapping windows
        ((2, 1, 1, 1), (1, 1), (1, 1), (0, 0)),          # 1x1 plane
        ((1, 2, 6, 20), (5, 4), (2, 3), (2, 2)),         # padding = kernel // 2
        ((2, 3, 13, 13), (3, 3), (2, 2), (0, 0)),        # the separable path: 3x3/2 without padding (AlexNet)
        ((1, 2, 9, 10), (4, 4), (4, 4), (0, 0)),         # windows that tile, a row and columns past the last one
        ((1, 1, 150, 70), (3, 3), (1, 1), (1, 1)),       # one plane split into bands of rows over the threads
        ((5, 20, 5, 5), (4, 4), (4, 4), (0, 0)),         # taps: one output a plane, 100 planes in groups, the last partial
        ((3, 30, 3, 3), (3, 3), (2, 2), (1, 1)),         # taps on 3x3 planes with padding, before the 3x3/2 fast path
    ],
    # batch norm in training: shape, affine
    "batch_norm": [
        ((4, 3, 7, 9), True),      # few channels: rows of a channel split over threads
        ((3, 64, 40, 40), True),   # a thread per channel
        ((16, 5), True),           # (N, C): the column path
        ((5, 4, 3, 3), False),     # small L: column path on 4-D input, gamma/beta None
        ((1, 1, 40, 40), False),   # batch 1, one channel
        ((2, 8, 1, 1), True),      # L == 1 on 4-D input
        ((7, 9, 6, 6), True),      # L = 36 > the column-path cut-off, odd sizes
        (BIG, True),
        (BIG_C, False),
    ],
    # lstm: N, T, D, H, gate order, with states/bias/dhs
    "lstm": [
        (3, 5, 4, 7, "ifgo", True),
        (1, 1, 3, 9, "fgio", False),     # batch 1, one step, None everywhere
        (4, 3, 17, 16, "fgio", True),    # H a multiple of 8 (no SIMD tail)
        (2, 4, 5, 3, "ifgo", False),
        (2, 6, 1, 11, "goif", True),     # D = 1, another order
        # big enough for the threaded per-step GEMM (op(A) packed once, shared): batch past one MC row block and not a
        # multiple of the MR rows, backward depth 4H = 320 in two depth blocks
        (197, 3, 5, 80, "ifgo", True),
        # batch 1-4 over T > 1: the few-row path over the packed w_hh (gemm_packed_b), threaded, 44 panels of 48 over
        # two depth blocks; the backward's dh = dgates @ w_hh^T has depth 4H = 2080
        (3, 3, 6, 520, "fgio", True),
        (1, 2, 2, 260, "ifgo", False),
    ],
}


# -------------------------------------------------------------------------------------------- benchmark shapes

Conv = namedtuple("Conv", "N C H W K R S stride pad")            # conv2d: x (N,C,H,W), weight (K,C,R,S)
Unfold = namedtuple("Unfold", "N C H W R S stride pad")          # im2col / col2im
Pool = namedtuple("Pool", "N C H W k stride pad")                # max_pool2d / avg_pool2d, square windows
BN = namedtuple("BN", "N C H W")                                 # batch_norm, training mode
Cell = namedtuple("Cell", "B D H")                               # lstm_cell: x (B,D), h/c (B,H)
Seq = namedtuple("Seq", "B T D H")                               # lstm: xs (B,T,D)

_RESNET = [Conv(32, 64, 56, 56, 64, 3, 3, 1, 1), Conv(32, 128, 28, 28, 128, 3, 3, 1, 1),
           Conv(32, 256, 14, 14, 256, 3, 3, 1, 1)]

# The benchmark shapes: `python -m fastnn.bench` and the bench/ pytest-benchmark suite both read them.
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
    # --sweep: every op from batch 1 through the textbook networks' sizes (28x28, 14x14 and 7x7 planes, 16-64
    # channels, H=100 LSTMs at batch 20), odd planes, up to the large shapes, roughly smallest call first.
    # Convs are 3x3/pad 1 unless the shape says.
    "sweep": {
        "conv2d": [Conv(1, 1, 28, 28, 16, 3, 3, 1, 1), Conv(1, 16, 28, 28, 16, 3, 3, 1, 1),
                   Conv(8, 16, 14, 14, 16, 3, 3, 1, 1), Conv(64, 16, 28, 28, 16, 3, 3, 1, 1),
                   Conv(64, 32, 14, 14, 32, 3, 3, 1, 1), Conv(64, 64, 7, 7, 64, 3, 3, 1, 1),
                   Conv(32, 16, 13, 13, 24, 3, 3, 2, 1), Conv(100, 1, 28, 28, 30, 5, 5, 1, 0),
                   Conv(32, 256, 14, 14, 64, 1, 1, 1, 0), Conv(32, 64, 56, 56, 64, 3, 3, 1, 1)],
        "im2col": [Unfold(1, 16, 28, 28, 3, 3, 1, 1), Unfold(64, 16, 28, 28, 3, 3, 1, 1),
                   Unfold(64, 64, 7, 7, 3, 3, 1, 1), Unfold(32, 64, 56, 56, 3, 3, 1, 1)],
        "pool2d": [Pool(1, 16, 28, 28, 2, 2, 0), Pool(64, 16, 28, 28, 2, 2, 0), Pool(64, 32, 14, 14, 2, 2, 0),
                   Pool(64, 64, 8, 8, 2, 2, 0), Pool(32, 16, 13, 13, 3, 2, 1), Pool(32, 64, 56, 56, 2, 2, 0),
                   Pool(32, 64, 56, 56, 3, 2, 1)],
        # BN(N, C, 1, 1): the (N, C) case (per channel over the batch; the same kernel path as 2-D input)
        "batch_norm": [BN(2, 4, 4, 4), BN(1, 16, 28, 28), BN(64, 16, 28, 28), BN(64, 64, 7, 7),
                       BN(100, 100, 1, 1), BN(100, 1000, 1, 1), BN(32, 64, 56, 56)],
        "lstm_cell": [Cell(1, 100, 100), Cell(8, 64, 64), Cell(20, 100, 100), Cell(64, 512, 512)],
        "lstm": [Seq(1, 10, 100, 100), Seq(20, 35, 100, 100), Seq(64, 32, 512, 512)],
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


def add_family(family, **sizes):
    """Register a shape family's benchmark shapes for every size set: add_family("relu", cpu=[...], cuda=[...],
    mixed=[...], sweep=[...], small=[...])."""
    assert set(sizes) == set(SHAPES), f"{family}: shapes for every size set {sorted(SHAPES)}, got {sorted(sizes)}"
    for name, shapes in sizes.items():
        SHAPES[name][family] = list(shapes)


def shapes_for(family, sizes="default", backend="cpu"):
    """The shapes of one family: SHAPES["small"], ["mixed"] or ["sweep"], else the backend's defaults."""
    return SHAPES[sizes if sizes in ("small", "mixed", "sweep") else backend][family]


def shape_id(shape):
    """A short label, e.g. 'N32 C64 H56 W56 K64 R3 S3 stride1 pad1'."""
    return " ".join(f"{k}{v}" for k, v in shape._asdict().items())


# ------------------------------------------------------------------------------------------- input makers
# Each returns (args, kwargs) for the public API call `fastnn.<op>(*args, **kwargs)`, as NumPy arrays.
# Backward inputs that come from a forward pass (max-pool indices, batch-norm statistics, the LSTM cache) are made
# with the NumPy reference, so a backward row is timed even when the backend's forward is not written yet.

def gauss(rng, dtype, *shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype, copy=False)


def _conv(s, dtype, rng):
    return gauss(rng, dtype, s.N, s.C, s.H, s.W), gauss(rng, dtype, s.K, s.C, s.R, s.S), gauss(rng, dtype, s.K)


def make_conv2d(s, dtype, rng):
    x, w, b = _conv(s, dtype, rng)
    return (x, w, b), dict(stride=s.stride, padding=s.pad)


def make_conv2d_backward(s, dtype, rng):
    x, w, _ = _conv(s, dtype, rng)
    dy = gauss(rng, dtype, s.N, s.K, out_size(s.H, s.R, s.stride, s.pad), out_size(s.W, s.S, s.stride, s.pad))
    return (dy, x, w), dict(stride=s.stride, padding=s.pad)


def make_im2col(s, dtype, rng):
    return (gauss(rng, dtype, s.N, s.C, s.H, s.W), (s.R, s.S)), dict(stride=s.stride, padding=s.pad)


def make_col2im(s, dtype, rng):
    rows = s.N * out_size(s.H, s.R, s.stride, s.pad) * out_size(s.W, s.S, s.stride, s.pad)
    col = gauss(rng, dtype, rows, s.C * s.R * s.S)
    return (col, (s.N, s.C, s.H, s.W), (s.R, s.S)), dict(stride=s.stride, padding=s.pad)


def _pool_kw(s):
    return dict(stride=s.stride, padding=s.pad)


def make_pool(s, dtype, rng):
    return (gauss(rng, dtype, s.N, s.C, s.H, s.W), s.k), _pool_kw(s)


def _pool_dy(s, dtype, rng):
    return gauss(rng, dtype, s.N, s.C, out_size(s.H, s.k, s.stride, s.pad), out_size(s.W, s.k, s.stride, s.pad))


def make_max_pool2d_backward(s, dtype, rng):
    x = gauss(rng, dtype, s.N, s.C, s.H, s.W)
    _, idx = reference.max_pool2d(x, s.k, s.stride, s.pad)
    return (_pool_dy(s, dtype, rng), idx, x.shape), {}


def make_avg_pool2d_backward(s, dtype, rng):
    return (_pool_dy(s, dtype, rng), (s.N, s.C, s.H, s.W), s.k), _pool_kw(s)


def _bn(s, dtype, rng):
    x = gauss(rng, dtype, s.N, s.C, s.H, s.W)
    return x, 1 + gauss(rng, dtype, s.C, scale=0.1), gauss(rng, dtype, s.C, scale=0.1)


def make_batch_norm(s, dtype, rng):
    x, gamma, beta = _bn(s, dtype, rng)
    running_mean, running_var = np.zeros(s.C, dtype), np.ones(s.C, dtype)
    return (x, gamma, beta, running_mean, running_var), dict(training=True)


def make_batch_norm_backward(s, dtype, rng):
    x, gamma, beta = _bn(s, dtype, rng)
    _, mean, invstd = reference.batch_norm(x, gamma, beta)
    return (gauss(rng, dtype, *x.shape), x, gamma, mean, invstd), dict(training=True)


def _lstm_weights(D, H, dtype, rng):
    scale = 1 / math.sqrt(H)
    return (gauss(rng, dtype, D, 4 * H, scale=scale), gauss(rng, dtype, H, 4 * H, scale=scale),
            gauss(rng, dtype, 4 * H, scale=scale))


def make_lstm_cell(s, dtype, rng):
    x, h, c = gauss(rng, dtype, s.B, s.D), gauss(rng, dtype, s.B, s.H), gauss(rng, dtype, s.B, s.H)
    return (x, h, c, *_lstm_weights(s.D, s.H, dtype, rng)), {}


def make_lstm_cell_backward(s, dtype, rng):
    args, _ = make_lstm_cell(s, dtype, rng)
    *_, cache = reference.lstm_cell(*args[:-1], None)     # bias None: PyTorch rebuilds it as zeros
    return (gauss(rng, dtype, s.B, s.H), gauss(rng, dtype, s.B, s.H), cache), {}


def make_lstm(s, dtype, rng):
    xs, h0, c0 = gauss(rng, dtype, s.B, s.T, s.D), gauss(rng, dtype, s.B, s.H), gauss(rng, dtype, s.B, s.H)
    return (xs, h0, c0, *_lstm_weights(s.D, s.H, dtype, rng)), {}


def make_lstm_backward(s, dtype, rng):
    args, _ = make_lstm(s, dtype, rng)
    *_, cache = reference.lstm(*args[:-1], None)          # bias None: PyTorch rebuilds it as zeros
    dh = gauss(rng, dtype, s.B, s.H)
    return (gauss(rng, dtype, s.B, s.T, s.H), dh, dh.copy(), cache), {}


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


# -------------------------------------------------------------------------------- work counts and the table

def conv_flops(s):
    return 2.0 * s.N * s.K * out_size(s.H, s.R, s.stride, s.pad) * out_size(s.W, s.S, s.stride, s.pad) * s.C * s.R * s.S


def cell_flops(s):
    return 2.0 * s.B * (s.D + s.H) * 4 * s.H           # the two GEMMs; the gate math is O(B*H)


def seq_flops(s):
    return s.T * cell_flops(s)


@dataclass(frozen=True)
class Op:
    """One op of the public API: `fastnn.<name>(*args, **kwargs)`, benchmarked with the inputs
    `make(shape, dtype, rng)` returns on the shapes of its `family` in SHAPES, and tested on `cases`.

    flops: shape -> floating-point operations (compute-bound ops, rate in GFLOP/s); None means memory-bound,
    rated in GB/s with bytes = array inputs read once + array outputs written once."""
    name: str
    family: str
    make: Callable
    torch: Optional[Callable] = None
    flops: Optional[Callable] = None
    torch_train: Optional[Callable] = None  # PyTorch's forward with autograd recording (LSTM), for a note

    @property
    def cases(self):
        """The test cases that exercise this op: its forward's (a backward runs with its forward; col2im with
        im2col, its adjoint)."""
        return CASES[{"col2im": "im2col"}.get(self.name, self.name.removesuffix("_backward"))]


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
# The textbook ops, one section per family: cases (CASES[op], ARRAYS[op]), shape families (add_family), makers,
# baselines, then `OPS += [...]`.

# ==== activations: relu, sigmoid, tanh, softmax and the losses ====
# Test cases: x's shape (the last axis is softmax's), plus the loss options; `target` "ids" (int64 class ids,
# some rows ignore_index), "ids32" (int32), "dense" (one-hot of x's dtype), "probs" (random distributions),
# "int" (sigmoid: int32 0/1 labels).

def act_case(op, x, tiny=False, realistic=False, **p):
    return Case(op, dict(x=x, **p), tiny, realistic)


_ELTWISE = [act_case("", (3, 5), tiny=True), act_case("", (1,), tiny=True), act_case("", (2, 3, 17)),
            act_case("", (100, 100)), act_case("", (7, 33)), act_case("", (4, 1000, 3)),
            act_case("", (64, 16, 28, 28), realistic=True)]
for _op in ("relu", "sigmoid", "tanh"):
    CASES[_op] = [c._replace(op=_op) for c in _ELTWISE]
CASES["softmax"] = [act_case("softmax", (3, 5), tiny=True), act_case("softmax", (1, 1), tiny=True),
                    act_case("softmax", (7,), tiny=True), act_case("softmax", (2, 3, 17)),
                    act_case("softmax", (100, 10)), act_case("softmax", (5, 1001)),
                    act_case("softmax", (33, 10000)), act_case("softmax", (700, 10000), realistic=True)]
CASES["softmax_cross_entropy"] = [
    act_case("softmax_cross_entropy", (4, 5), tiny=True, target="ids", eps=0.0),
    act_case("softmax_cross_entropy", (2, 3, 6), tiny=True, target="ids32", eps=1e-7),
    act_case("softmax_cross_entropy", (3, 4), tiny=True, target="dense", eps=0.0),
    act_case("softmax_cross_entropy", (3, 4), tiny=True, target="probs", eps=1e-7),
    act_case("softmax_cross_entropy", (6,), tiny=True, target="ids", eps=0.0),
    act_case("softmax_cross_entropy", (100, 10), target="dense", eps=1e-7),      # book 1: one-hot, eps
    act_case("softmax_cross_entropy", (100, 10), target="ids", eps=1e-7),
    act_case("softmax_cross_entropy", (20, 5, 37), target="ids32", eps=0.0),
    act_case("softmax_cross_entropy", (13, 1003), target="probs", eps=0.0),
    act_case("softmax_cross_entropy", (35, 10000), target="ids", eps=0.0),       # book 2: V = 10000
    act_case("softmax_cross_entropy", (700, 10000), target="ids", eps=0.0, realistic=True),
]
CASES["sigmoid_cross_entropy"] = [
    act_case("sigmoid_cross_entropy", (5,), tiny=True, target="int", eps=0.0),
    act_case("sigmoid_cross_entropy", (2, 3), tiny=True, target="dense", eps=1e-7),
    act_case("sigmoid_cross_entropy", (100,), target="int", eps=1e-7),            # book 2's negative sampling
    act_case("sigmoid_cross_entropy", (7, 1001), target="probs", eps=0.0),
    act_case("sigmoid_cross_entropy", (33, 517), target="dense", eps=1e-7),
    act_case("sigmoid_cross_entropy", (1000, 1000), target="int", eps=0.0, realistic=True),
]

IGNORE = -1          # the ignore_index the cases and the benchmark use (book 2's ignore_label)


def _act_arrays(case, dtype, rng):
    """x (scale 3: saturating sigmoids and tanhs too), dy, y = op(x) by the reference (for the backward), and for
    the losses the target."""
    p, shape = case.p, case.p["x"]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    a = dict(x=x, dy=rng.standard_normal(shape).astype(dtype))
    if case.op in ("relu", "sigmoid", "tanh", "softmax"):
        a["y"] = getattr(reference, case.op)(x)
        return a
    kind = p["target"]
    if case.op == "sigmoid_cross_entropy":
        if kind == "int":
            a["target"] = rng.integers(0, 2, shape).astype(np.int32)
        elif kind == "dense":
            a["target"] = rng.integers(0, 2, shape).astype(dtype)
        else:
            a["target"] = rng.uniform(0, 1, shape).astype(dtype)
        return a
    V = shape[-1]
    if kind in ("ids", "ids32"):
        t = rng.integers(0, V, shape[:-1])
        if t.size > 2:
            t.reshape(-1)[::3] = IGNORE                 # every third row ignored
        a["target"] = t.astype(np.int32 if kind == "ids32" else np.int64)
    elif kind == "dense":
        a["target"] = np.eye(V, dtype=dtype)[rng.integers(0, V, shape[:-1])]
    else:
        w = rng.uniform(0, 1, shape)
        a["target"] = (w / w.sum(axis=-1, keepdims=True)).astype(dtype)
    return a


for _op in ("relu", "sigmoid", "tanh", "softmax", "softmax_cross_entropy", "sigmoid_cross_entropy"):
    ARRAYS[_op] = _act_arrays

# Benchmark shapes. Elt(N, D): an (N, D) array (MLP layers, conv maps flattened: 30x24x24 = 17280, 16x28x28 =
# 12544); Rows(R, V): R rows of V classes (MNIST 100 x 10; book 2's language model 20 x 35 = 700 rows of 10000).
Elt = namedtuple("Elt", "N D")
Rows = namedtuple("Rows", "R V")

add_family("activation",
           cpu=[Elt(100, 100), Elt(100, 17280), Elt(64, 12544), Elt(2048, 4096)],
           cuda=[Elt(100, 17280), Elt(4096, 4096)],
           mixed=[Elt(100, 100), Elt(20, 100)],
           sweep=[Elt(1, 10), Elt(20, 100), Elt(100, 100), Elt(100, 1000), Elt(64, 12544), Elt(100, 17280),
                  Elt(2048, 4096)],
           small=[Elt(4, 50)])
add_family("softmax",
           cpu=[Rows(100, 10), Rows(20, 10000), Rows(700, 10000)],
           cuda=[Rows(700, 10000), Rows(4096, 32000)],
           mixed=[Rows(100, 10), Rows(700, 10000)],
           sweep=[Rows(1, 10), Rows(100, 10), Rows(100, 100), Rows(20, 10000), Rows(100, 10000), Rows(700, 10000)],
           small=[Rows(4, 10)])
add_family("sigmoid_xent",
           cpu=[Elt(100, 1), Elt(100, 6), Elt(1000, 1000)],
           cuda=[Elt(1000, 1000), Elt(4096, 4096)],
           mixed=[Elt(100, 1)],
           sweep=[Elt(1, 10), Elt(100, 1), Elt(100, 6), Elt(100, 100), Elt(1000, 1000), Elt(2048, 4096)],
           small=[Elt(4, 5)])


def make_x(s, dtype, rng):
    return (gauss(rng, dtype, *s, scale=3.0),), {}


def _make_act_backward(op):
    def make(s, dtype, rng):
        (x,), _ = make_x(s, dtype, rng)
        return (gauss(rng, dtype, *s), getattr(reference, op)(x)), {}
    make.__name__ = f"make_{op}_backward"
    return make


def _labels(s, rng):
    t = rng.integers(0, s.V, s.R)
    t[::50] = IGNORE                   # a few ignored rows, as book 2's padding
    return t


def make_softmax_cross_entropy(s, dtype, rng):
    return (gauss(rng, dtype, *s, scale=3.0), _labels(s, rng)), dict(ignore_index=IGNORE)


def make_softmax_cross_entropy_backward(s, dtype, rng):
    (x, t), kw = make_softmax_cross_entropy(s, dtype, rng)
    return (reference.softmax(x), t), kw


def make_sigmoid_cross_entropy(s, dtype, rng):
    return (gauss(rng, dtype, *s, scale=3.0), rng.integers(0, 2, s).astype(np.int32)), {}


def make_sigmoid_cross_entropy_backward(s, dtype, rng):
    (x, t), _ = make_sigmoid_cross_entropy(s, dtype, rng)
    return (reference.sigmoid(x), t), {}


def _torch_unary(fn_name):
    def run(torch, dev, s, args, kw):
        x, = _t(torch, dev, args[0])
        fn = {"relu": torch.nn.functional.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
              "softmax": lambda a: torch.nn.functional.softmax(a, -1)}[fn_name]
        return _no_grad(torch, lambda: fn(x))
    return run


def _torch_unary_backward(fn_name):
    """autograd's backward of the op, through its output (the y the makers give is recomputed from x = y's
    preimage-free stand-in: the gradient kernels read only y and dy)."""
    def run(torch, dev, s, args, kw):
        dy, y = args
        fn = {"relu": torch.nn.functional.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
              "softmax": lambda a: torch.nn.functional.softmax(a, -1)}[fn_name]
        x, = _t(torch, dev, y, grad=True)
        out = fn(x)
        return _grad(torch, out, (x,), _t(torch, dev, dy)[0])
    return run


def torch_softmax_cross_entropy(torch, dev, s, args, kw):
    x, t = _t(torch, dev, *args)
    return _no_grad(torch, lambda: torch.nn.functional.cross_entropy(x, t, ignore_index=kw["ignore_index"]))


def torch_softmax_cross_entropy_backward(torch, dev, s, args, kw):
    probs, t = args
    x, = _t(torch, dev, np.log(probs), grad=True)
    t, = _t(torch, dev, t)
    loss = torch.nn.functional.cross_entropy(x, t, ignore_index=kw["ignore_index"])
    return _grad(torch, loss, (x,), None)


def torch_sigmoid_cross_entropy(torch, dev, s, args, kw):
    x, t = _t(torch, dev, args[0], args[1].astype(args[0].dtype))
    return _no_grad(torch, lambda: torch.nn.functional.binary_cross_entropy_with_logits(x, t))


def torch_sigmoid_cross_entropy_backward(torch, dev, s, args, kw):
    y, t = args
    x, = _t(torch, dev, np.log(y / (1 - y)), grad=True)
    t, = _t(torch, dev, t.astype(y.dtype))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
    return _grad(torch, loss, (x,), None)


OPS += [
    Op("relu", "activation", make_x, _torch_unary("relu")),
    Op("relu_backward", "activation", _make_act_backward("relu"), _torch_unary_backward("relu")),
    Op("sigmoid", "activation", make_x, _torch_unary("sigmoid")),
    Op("sigmoid_backward", "activation", _make_act_backward("sigmoid"), _torch_unary_backward("sigmoid")),
    Op("tanh", "activation", make_x, _torch_unary("tanh")),
    Op("tanh_backward", "activation", _make_act_backward("tanh"), _torch_unary_backward("tanh")),
    Op("softmax", "softmax", make_x, _torch_unary("softmax")),
    Op("softmax_backward", "softmax", _make_act_backward("softmax"), _torch_unary_backward("softmax")),
    Op("softmax_cross_entropy", "softmax", make_softmax_cross_entropy, torch_softmax_cross_entropy),
    Op("softmax_cross_entropy_backward", "softmax", make_softmax_cross_entropy_backward,
       torch_softmax_cross_entropy_backward),
    Op("sigmoid_cross_entropy", "sigmoid_xent", make_sigmoid_cross_entropy, torch_sigmoid_cross_entropy),
    Op("sigmoid_cross_entropy_backward", "sigmoid_xent", make_sigmoid_cross_entropy_backward,
       torch_sigmoid_cross_entropy_backward),
]
# ==== end activations ====

# ==== dense: linear, embedding, dropout ====
# Test cases (tiny ones also run in the CUDA simulator): batch 1, sizes off the SIMD widths (the AVX-512 tail panels
# of 16/32/48 columns), a leading N-D shape (book 2's TimeAffine), one feature, a large vocabulary, repeated indices.
def linear_case(x, m, bias=True, tiny=False, realistic=False):
    return Case("linear", dict(x=x, m=m, bias=bias), tiny, realistic)


def embedding_case(indices, v, d, index_dtype="int64", tiny=False, realistic=False):
    return Case("embedding", dict(indices=indices, v=v, d=d, index_dtype=index_dtype), tiny, realistic)


def dropout_case(x, p=0.5, seed=0, scale=True, mask=None, tiny=False, realistic=False):
    """mask: None (the generator), "bool" or "float" (a mask drawn as the books do)."""
    return Case("dropout", dict(x=x, p=p, seed=seed, scale=scale, mask=mask), tiny, realistic)


CASES["linear"] = [
    linear_case((2, 3), 4, tiny=True),
    linear_case((1, 5), 3, bias=False, tiny=True),                  # batch 1, no bias
    linear_case((2, 3, 4), 5, tiny=True),                           # (N, T, D): TimeAffine
    linear_case((3, 1), 1, tiny=True),                              # one feature in and out
    linear_case((4, 7), 17, bias=False, tiny=True),
    linear_case((100, 784), 100),                                   # the books' MLP layers
    linear_case((100, 100), 10),
    linear_case((9, 33), 65),                                       # tail panels of 16 and 32 columns
    linear_case((37, 300), 97, bias=False),                         # two depth blocks, row/column tails
    linear_case((5, 7, 50), 130),                                   # N-D, 2 full panels + tail
    linear_case((600, 40), 49),                                     # split by rows
    linear_case((20, 35, 100), 1000),                               # book 2's TimeAffine (V reduced)
    linear_case((130, 2000), 24),                                   # split-K (deep, narrow)
    linear_case((20, 35, 100), 10000, realistic=True),
]
CASES["embedding"] = [
    embedding_case((2, 3), 5, 4, tiny=True),
    embedding_case((7,), 3, 2, "int32", tiny=True),                 # repeated indices, int32
    embedding_case((1, 1), 1, 1, tiny=True),                        # one row, one feature
    embedding_case((20, 35), 10000, 100),                           # book 2's PTB language model
    embedding_case((300,), 20, 33, "int32"),                        # heavy repetition, odd D
    embedding_case((4, 5, 6), 1000, 17),
    embedding_case((20, 35), 10000, 650, realistic=True),
]
CASES["dropout"] = [
    dropout_case((2, 3), tiny=True),
    dropout_case((5, 7), 0.25, seed=2 ** 64 - 1, scale=False, tiny=True),
    dropout_case((3, 4), 0.5, mask="bool", tiny=True),
    dropout_case((2, 5), 0.2, mask="float", scale=False, tiny=True),
    dropout_case((4, 4), 0.0, tiny=True),
    dropout_case((3, 3), 1.0, tiny=True),
    dropout_case((100, 100), 0.5, seed=7),
    dropout_case((3, 17, 33), 0.3, seed=123, scale=False),
    dropout_case((20, 35, 650), 0.5, seed=5, realistic=True),
]


def _dense_arrays(case, dtype, rng):
    p = case.p

    def gauss(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    if case.op == "linear":
        d = p["x"][-1]
        return dict(x=gauss(*p["x"]), weight=gauss(d, p["m"], scale=1 / np.sqrt(d)),
                    bias=gauss(p["m"]) if p["bias"] else None, dy=gauss(*p["x"][:-1], p["m"]))
    if case.op == "embedding":
        idx = rng.integers(0, p["v"], p["indices"]).astype(p["index_dtype"])
        return dict(indices=idx, weight=gauss(p["v"], p["d"]), dy=gauss(*p["indices"], p["d"]))
    mask = None
    if p["mask"]:
        mask = rng.random(p["x"]) > p["p"]                           # the books' draw
        mask = mask if p["mask"] == "bool" else mask.astype(dtype)
    return dict(x=gauss(*p["x"]), dy=gauss(*p["x"]), mask=mask)


ARRAYS.update(linear=_dense_arrays, embedding=_dense_arrays, dropout=_dense_arrays)

Dense = namedtuple("Dense", "N D M")               # linear: x (N, D), weight (D, M)
Emb = namedtuple("Emb", "N T V D")                 # embedding: indices (N, T) into weight (V, D)
Drop = namedtuple("Drop", "N D p")                 # dropout: x (N, D)

_MLP = [Dense(100, 784, 100), Dense(100, 100, 100), Dense(100, 100, 10)]     # book 1's MLP, batch 100
_LM = Dense(700, 100, 10000)                                                  # book 2's TimeAffine, (20*35, 100)
add_family("linear", cpu=[*_MLP, _LM], cuda=[_LM, Dense(4096, 1024, 1024)], mixed=[*_MLP],
           sweep=[Dense(1, 784, 100), Dense(20, 100, 100), *_MLP, Dense(700, 100, 1000), _LM],
           small=[Dense(8, 32, 16)])
add_family("embedding", cpu=[Emb(20, 35, 10000, 100)], cuda=[Emb(20, 35, 10000, 100), Emb(64, 35, 10000, 650)],
           mixed=[Emb(20, 35, 10000, 100)],
           sweep=[Emb(1, 1, 10000, 100), Emb(20, 1, 10000, 100), Emb(20, 35, 10000, 100), Emb(20, 35, 10000, 650)],
           small=[Emb(4, 5, 50, 16)])
add_family("dropout", cpu=[Drop(100, 100, 0.5), Drop(700, 650, 0.5)], cuda=[Drop(700, 650, 0.5),
                                                                            Drop(4096, 4096, 0.5)],
           mixed=[Drop(100, 100, 0.5)],
           sweep=[Drop(1, 100, 0.5), Drop(100, 100, 0.5), Drop(100, 1000, 0.5), Drop(700, 650, 0.5),
                  Drop(700, 10000, 0.5)],
           small=[Drop(8, 32, 0.5)])


def make_linear(s, dtype, rng):
    return (gauss(rng, dtype, s.N, s.D), gauss(rng, dtype, s.D, s.M, scale=1 / math.sqrt(s.D)),
            gauss(rng, dtype, s.M)), {}


def make_linear_backward(s, dtype, rng):
    (x, w, _), _ = make_linear(s, dtype, rng)
    return (gauss(rng, dtype, s.N, s.M), x, w), {}


def make_embedding(s, dtype, rng):
    return (rng.integers(0, s.V, (s.N, s.T)), gauss(rng, dtype, s.V, s.D)), {}


def make_embedding_backward(s, dtype, rng):
    return (gauss(rng, dtype, s.N, s.T, s.D), rng.integers(0, s.V, (s.N, s.T)), s.V), {}


def make_dropout(s, dtype, rng):
    return (gauss(rng, dtype, s.N, s.D),), dict(p=s.p, seed=1)


make_dropout_backward = make_dropout


def torch_linear(torch, dev, s, args, kw):
    x, w, b = args
    x, wt, b = _t(torch, dev, x, w.T, b)           # PyTorch's (out, in) weight: transposed once, outside the timing
    return _no_grad(torch, lambda: torch.nn.functional.linear(x, wt, b))


def torch_linear_backward(torch, dev, s, args, kw):
    dy, x, w = args
    dy, = _t(torch, dev, dy)
    x, wt, b = _t(torch, dev, x, w.T, np.zeros(w.shape[1], w.dtype), grad=True)
    y = torch.nn.functional.linear(x, wt, b)
    return _grad(torch, y, (x, wt, b), dy)


def torch_embedding(torch, dev, s, args, kw):
    idx, w = _t(torch, dev, *args)
    return _no_grad(torch, lambda: torch.nn.functional.embedding(idx, w))


def torch_embedding_backward(torch, dev, s, args, kw):
    dy, idx, v = args
    dy, idx = _t(torch, dev, dy, idx)
    w, = _t(torch, dev, np.zeros((v, dy.shape[-1]), args[0].dtype), grad=True)
    y = torch.nn.functional.embedding(idx, w)
    return _grad(torch, y, (w,), dy)


def torch_dropout(torch, dev, s, args, kw):
    x, = _t(torch, dev, *args)                     # PyTorch's generator differs: compare speed only
    return _no_grad(torch, lambda: torch.nn.functional.dropout(x, kw["p"], training=True))


def torch_dropout_backward(torch, dev, s, args, kw):
    dy, = _t(torch, dev, args[0])
    x, = _t(torch, dev, args[0], grad=True)
    y = torch.nn.functional.dropout(x, kw["p"], training=True)
    return _grad(torch, y, (x,), dy)


def linear_flops(s):
    return 2.0 * s.N * s.D * s.M


OPS += [
    Op("linear", "linear", make_linear, torch_linear, linear_flops),
    Op("linear_backward", "linear", make_linear_backward, torch_linear_backward, _twice(linear_flops)),
    Op("embedding", "embedding", make_embedding, torch_embedding),
    Op("embedding_backward", "embedding", make_embedding_backward, torch_embedding_backward),
    Op("dropout", "dropout", make_dropout, torch_dropout),
    Op("dropout_backward", "dropout", make_dropout_backward, torch_dropout_backward),
]
# ==== end dense ====

# ==== rnn: rnn_cell, rnn, gru_cell, gru ====
# Test cases: `none` names the arguments passed as None (h/h0, dh_next, dhs, dh_n, and the biases).

def rnn_cell_case(n, d, h, none=(), tiny=False, realistic=False):
    return Case("rnn_cell", dict(n=n, d=d, h=h, none=none), tiny, realistic)


def rnn_case(n, t, d, h, none=(), tiny=False, realistic=False):
    return Case("rnn", dict(n=n, t=t, d=d, h=h, none=none), tiny, realistic)


def gru_cell_case(n, d, h, gate_order="zrh", none=(), tiny=False, realistic=False):
    return Case("gru_cell", dict(n=n, d=d, h=h, gate_order=gate_order, none=none), tiny, realistic)


def gru_case(n, t, d, h, gate_order="zrh", none=(), tiny=False, realistic=False):
    return Case("gru", dict(n=n, t=t, d=d, h=h, gate_order=gate_order, none=none), tiny, realistic)


CASES["rnn_cell"] = [
    rnn_cell_case(2, 3, 4, tiny=True),
    rnn_cell_case(1, 5, 3, none=("h", "bias"), tiny=True),                 # batch 1, zeros state, no bias
    rnn_cell_case(3, 1, 5, none=("dh_next",), tiny=True),                  # one feature, no upstream gradient
    rnn_cell_case(16, 33, 20),
    rnn_cell_case(37, 64, 100),                                            # H not a multiple of the SIMD width
    rnn_cell_case(64, 512, 512, realistic=True),
]
CASES["rnn"] = [
    rnn_case(2, 3, 3, 4, tiny=True),
    rnn_case(1, 3, 2, 3, none=("h0", "dh_n", "bias"), tiny=True),
    rnn_case(2, 2, 4, 2, none=("dhs",), tiny=True),
    rnn_case(8, 10, 17, 12),
    rnn_case(37, 7, 32, 24, none=("h0",)),                                 # >= 16 rows per thread: rows split
    rnn_case(64, 32, 256, 256, realistic=True),
]
CASES["gru_cell"] = [
    gru_cell_case(2, 3, 4, "zrh", none=("b_ih", "b_hh"), tiny=True),       # book 2's GRU (no biases)
    gru_cell_case(2, 3, 4, "rzn", tiny=True),                              # PyTorch's nn.GRUCell
    gru_cell_case(1, 5, 3, "zrh", none=("h", "b_hh"), tiny=True),
    gru_cell_case(3, 1, 5, "rzn", none=("dh_next", "b_ih"), tiny=True),
    gru_cell_case(16, 33, 20, "zrh"),
    gru_cell_case(37, 64, 100, "rzn", none=("h",)),
    gru_cell_case(64, 512, 512, "rzn", realistic=True),
]
CASES["gru"] = [
    gru_case(2, 3, 3, 4, "zrh", none=("b_ih", "b_hh"), tiny=True),
    gru_case(2, 3, 3, 4, "rzn", tiny=True),
    gru_case(1, 3, 2, 3, "rzn", none=("h0", "dh_n", "b_hh"), tiny=True),
    gru_case(2, 2, 4, 2, "zrh", none=("dhs", "b_ih"), tiny=True),
    gru_case(8, 10, 17, 12, "zrh"),
    gru_case(8, 10, 17, 12, "rzn", none=("dhs",)),
    gru_case(37, 7, 32, 24, "zrh", none=("h0", "b_ih", "b_hh")),           # rows split over the threads
    gru_case(37, 7, 32, 24, "rzn"),
    gru_case(64, 32, 256, 256, "zrh", realistic=True),
    gru_case(64, 32, 256, 256, "rzn", realistic=True),
]


def _recurrent_arrays(case, dtype, rng):
    """Gaussian inputs, weights scaled 1/sqrt(H) (gates away from saturation), the upstream gradients."""
    p = case.p
    n, d, h, none = p["n"], p["d"], p["h"], p["none"]
    G = h if case.op.startswith("rnn") else 3 * h
    scale = 1 / np.sqrt(h)

    def gauss(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    def opt(name, *shape, scale=1.0):
        return None if name in none else gauss(*shape, scale=scale)

    a = dict(w_ih=gauss(d, G, scale=scale), w_hh=gauss(h, G, scale=scale))
    if G == h:
        a["bias"] = opt("bias", G, scale=scale)
    else:
        a["b_ih"], a["b_hh"] = opt("b_ih", G, scale=scale), opt("b_hh", G, scale=scale)
    if "t" in p:
        return dict(a, xs=gauss(n, p["t"], d), h0=opt("h0", n, h), dhs=opt("dhs", n, p["t"], h),
                    dh_n=opt("dh_n", n, h))
    return dict(a, x=gauss(n, d), h=opt("h", n, h), dh_next=opt("dh_next", n, h))


for _op in ("rnn_cell", "rnn", "gru_cell", "gru"):
    ARRAYS[_op] = _recurrent_arrays

# Benchmark shapes: book 2's language model (batch 20, T=35, D=H=100), batch 1..64, H up to 512. The GRU's
# shapes name their gate order; PyTorch's baseline is nn.GRU(Cell) on the same sizes (its one layout, "rzn").
GruCell = namedtuple("GruCell", "B D H order")
GruSeq = namedtuple("GruSeq", "B T D H order")

add_family("rnn_cell", cpu=[Cell(20, 100, 100), Cell(64, 512, 512)], cuda=[Cell(64, 512, 512)],
           mixed=[Cell(20, 100, 100)], small=[Cell(8, 32, 32)],
           sweep=[Cell(1, 100, 100), Cell(8, 64, 64), Cell(20, 100, 100), Cell(64, 512, 512)])
add_family("rnn", cpu=[Seq(20, 35, 100, 100), Seq(64, 32, 512, 512)], cuda=[Seq(64, 32, 512, 512)],
           mixed=[Seq(20, 35, 100, 100)], small=[Seq(8, 4, 32, 32)],
           sweep=[Seq(1, 10, 100, 100), Seq(20, 35, 100, 100), Seq(64, 32, 512, 512)])
add_family("gru_cell", cpu=[GruCell(20, 100, 100, "zrh"), GruCell(64, 512, 512, "rzn")],
           cuda=[GruCell(64, 512, 512, "rzn")], mixed=[GruCell(20, 100, 100, "zrh")],
           small=[GruCell(8, 32, 32, "zrh")],
           sweep=[GruCell(1, 100, 100, "zrh"), GruCell(8, 64, 64, "rzn"), GruCell(20, 100, 100, "zrh"),
                  GruCell(20, 100, 100, "rzn"), GruCell(64, 512, 512, "zrh"), GruCell(64, 512, 512, "rzn")])
add_family("gru", cpu=[GruSeq(20, 35, 100, 100, "zrh"), GruSeq(64, 32, 512, 512, "rzn")],
           cuda=[GruSeq(64, 32, 512, 512, "rzn")], mixed=[GruSeq(20, 35, 100, 100, "zrh")],
           small=[GruSeq(8, 4, 32, 32, "rzn")],
           sweep=[GruSeq(1, 10, 100, 100, "zrh"), GruSeq(20, 35, 100, 100, "zrh"), GruSeq(20, 35, 100, 100, "rzn"),
                  GruSeq(64, 32, 512, 512, "zrh"), GruSeq(64, 32, 512, 512, "rzn")])


def _rnn_weights(D, H, G, dtype, rng):
    scale = 1 / math.sqrt(H)
    return gauss(rng, dtype, D, G, scale=scale), gauss(rng, dtype, H, G, scale=scale), gauss(rng, dtype, G,
                                                                                             scale=scale)


def make_rnn_cell(s, dtype, rng):
    return (gauss(rng, dtype, s.B, s.D), gauss(rng, dtype, s.B, s.H), *_rnn_weights(s.D, s.H, s.H, dtype, rng)), {}


def make_rnn_cell_backward(s, dtype, rng):
    args, _ = make_rnn_cell(s, dtype, rng)
    return (gauss(rng, dtype, s.B, s.H), reference.rnn_cell(*args)[1]), {}


def make_rnn(s, dtype, rng):
    xs, h0 = gauss(rng, dtype, s.B, s.T, s.D), gauss(rng, dtype, s.B, s.H)
    return (xs, h0, *_rnn_weights(s.D, s.H, s.H, dtype, rng)), {}


def make_rnn_backward(s, dtype, rng):
    args, _ = make_rnn(s, dtype, rng)
    cache = reference.rnn(*args)[2]
    return (gauss(rng, dtype, s.B, s.T, s.H), gauss(rng, dtype, s.B, s.H), cache), {}


def _gru_weights(s, dtype, rng):
    w_ih, w_hh, b_ih = _rnn_weights(s.D, s.H, 3 * s.H, dtype, rng)
    return w_ih, w_hh, b_ih, gauss(rng, dtype, 3 * s.H, scale=1 / math.sqrt(s.H))


def make_gru_cell(s, dtype, rng):
    return (gauss(rng, dtype, s.B, s.D), gauss(rng, dtype, s.B, s.H), *_gru_weights(s, dtype, rng)), dict(
        gate_order=s.order)


def make_gru_cell_backward(s, dtype, rng):
    args, kw = make_gru_cell(s, dtype, rng)
    return (gauss(rng, dtype, s.B, s.H), reference.gru_cell(*args, **kw)[1]), {}


def make_gru(s, dtype, rng):
    xs, h0 = gauss(rng, dtype, s.B, s.T, s.D), gauss(rng, dtype, s.B, s.H)
    return (xs, h0, *_gru_weights(s, dtype, rng)), dict(gate_order=s.order)


def make_gru_backward(s, dtype, rng):
    args, kw = make_gru(s, dtype, rng)
    cache = reference.gru(*args, **kw)[2]
    return (gauss(rng, dtype, s.B, s.T, s.H), gauss(rng, dtype, s.B, s.H), cache), {}


def _torch_recurrent(torch, dev, cls, w_ih, w_hh, b_ih, b_hh, **extra):
    """nn.RNNCell / nn.RNN / nn.GRUCell / nn.GRU holding fastnn's weights in PyTorch's layout (W.T; a missing bias
    zeros). A "zrh" GRU's weights go in as they are: the same sizes and work, PyTorch's "rzn" arithmetic."""
    D, G = w_ih.shape
    H = w_hh.shape[0]
    m = cls(D, H, **extra).to(device=dev, dtype=getattr(torch, w_ih.dtype.name))
    sfx = "_l0" if cls in (torch.nn.RNN, torch.nn.GRU) else ""
    zeros = np.zeros(G, w_ih.dtype)
    with torch.no_grad():
        for name, a in (("weight_ih", w_ih.T), ("weight_hh", w_hh.T), ("bias_ih", zeros if b_ih is None else b_ih),
                        ("bias_hh", zeros if b_hh is None else b_hh)):
            getattr(m, name + sfx).copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return m


def torch_rnn_cell(torch, dev, s, args, kw):
    x, h, w_ih, w_hh, bias = args
    cell = _torch_recurrent(torch, dev, torch.nn.RNNCell, w_ih, w_hh, bias, None, nonlinearity="tanh")
    x, h = _t(torch, dev, x, h)
    return _no_grad(torch, lambda: cell(x, h))


def _torch_cell_backward(torch, dev, cls, dh, cache, **extra):
    c = cache
    b = np.zeros(c.w_ih.shape[1], c.x.dtype)
    cell = _torch_recurrent(torch, dev, cls, c.w_ih, c.w_hh, b, b, **extra)
    x, h = _t(torch, dev, c.x, c.h, grad=True)
    return _grad(torch, cell(x, h), (x, h, *cell.parameters()), _t(torch, dev, dh)[0])


def torch_rnn_cell_backward(torch, dev, s, args, kw):
    return _torch_cell_backward(torch, dev, torch.nn.RNNCell, *args, nonlinearity="tanh")


def torch_rnn(torch, dev, s, args, kw):
    xs, h0, w_ih, w_hh, bias = args
    m = _torch_recurrent(torch, dev, torch.nn.RNN, w_ih, w_hh, bias, None, nonlinearity="tanh", batch_first=True)
    xs, h0 = _t(torch, dev, xs, h0[None])
    return _no_grad(torch, lambda: m(xs, h0))


def _torch_seq_backward(torch, dev, cls, dhs, dh, cache, **extra):
    c = cache
    b = np.zeros(c.w_ih.shape[1], c.x.dtype)
    m = _torch_recurrent(torch, dev, cls, c.w_ih, c.w_hh, b, b, batch_first=True, **extra)
    xs, h0 = _t(torch, dev, c.x, c.h[None], grad=True)
    hs, hn = m(xs, h0)
    return _grad(torch, (hs, hn), (xs, h0, *m.parameters()), tuple(_t(torch, dev, dhs, dh[None])))


def torch_rnn_backward(torch, dev, s, args, kw):
    return _torch_seq_backward(torch, dev, torch.nn.RNN, *args, nonlinearity="tanh")


def torch_gru_cell(torch, dev, s, args, kw):
    x, h, w_ih, w_hh, b_ih, b_hh = args
    cell = _torch_recurrent(torch, dev, torch.nn.GRUCell, w_ih, w_hh, b_ih, b_hh)
    x, h = _t(torch, dev, x, h)
    return _no_grad(torch, lambda: cell(x, h))


def torch_gru_cell_backward(torch, dev, s, args, kw):
    return _torch_cell_backward(torch, dev, torch.nn.GRUCell, *args)


def torch_gru(torch, dev, s, args, kw):
    xs, h0, w_ih, w_hh, b_ih, b_hh = args
    m = _torch_recurrent(torch, dev, torch.nn.GRU, w_ih, w_hh, b_ih, b_hh, batch_first=True)
    xs, h0 = _t(torch, dev, xs, h0[None])
    return _no_grad(torch, lambda: m(xs, h0))


def torch_gru_backward(torch, dev, s, args, kw):
    return _torch_seq_backward(torch, dev, torch.nn.GRU, *args)


def _recurrent_flops(blocks):
    """The two GEMMs of a step (the pointwise math is O(B*H)); sequences T times that."""
    def flops(s):
        return 2.0 * s.B * (s.D + s.H) * blocks * s.H * getattr(s, "T", 1)
    return flops


OPS += [
    Op("rnn_cell", "rnn_cell", make_rnn_cell, torch_rnn_cell, _recurrent_flops(1)),
    Op("rnn_cell_backward", "rnn_cell", make_rnn_cell_backward, torch_rnn_cell_backward, _twice(_recurrent_flops(1))),
    Op("rnn", "rnn", make_rnn, torch_rnn, _recurrent_flops(1)),
    Op("rnn_backward", "rnn", make_rnn_backward, torch_rnn_backward, _twice(_recurrent_flops(1))),
    Op("gru_cell", "gru_cell", make_gru_cell, torch_gru_cell, _recurrent_flops(3)),
    Op("gru_cell_backward", "gru_cell", make_gru_cell_backward, torch_gru_cell_backward, _twice(_recurrent_flops(3))),
    Op("gru", "gru", make_gru, torch_gru, _recurrent_flops(3)),
    Op("gru_backward", "gru", make_gru_backward, torch_gru_backward, _twice(_recurrent_flops(3))),
]
# ==== end rnn ====

# ==== optim: fused optimizer steps ====
# Test cases: a named parameter list (PARAM_LISTS) and the hyperparameters; three steps are run from random states.
# "odd": sizes off every SIMD width, one of a single element; "threaded": big enough for the thread pool, with
# chunks that cross from one array into the next; "empty": a zero-size parameter in the list.
PARAM_LISTS = {
    "odd": [(3, 5), (1,), (7,), (2, 3, 4), (33,)],
    "one": [(1,)],
    "empty": [(4,), (0,), (2, 9)],
    "threaded": [(5,), (301, 257), (1,), (17, 3), (40001,)],
}
OPTIM_STATES = {"sgd_step": (), "momentum_step": ("velocities",), "nesterov_step": ("velocities",),
                "adagrad_step": ("sums",), "rmsprop_step": ("sums",), "adam_step": ("ms", "vs")}


def optim_case(op, params, tiny=False, **hyper):
    return Case(op, dict(params=params, **hyper), tiny)


def _optim_cases(op, **variant):
    return [optim_case(op, "odd", tiny=True), optim_case(op, "one", tiny=True, **variant),
            optim_case(op, "empty", tiny=True), optim_case(op, "threaded", **variant)]


CASES.update({
    "sgd_step": _optim_cases("sgd_step", lr=0.5),
    "momentum_step": _optim_cases("momentum_step", momentum=0.5),
    "nesterov_step": _optim_cases("nesterov_step", momentum=0.3),
    "adagrad_step": _optim_cases("adagrad_step", eps=1e-3),
    "rmsprop_step": _optim_cases("rmsprop_step", decay_rate=0.9),
    "adam_step": _optim_cases("adam_step", beta1=0.5, beta2=0.9),
})


def _optim_arrays(case, dtype, rng):
    """params, grads and the op's state lists (random: a state some steps in; sums and second moments >= 0)."""
    shapes = PARAM_LISTS[case.p["params"]]

    def lst(positive=False):
        return [(np.abs(x) if positive else x).astype(dtype) for x in (rng.standard_normal(s) for s in shapes)]
    out = dict(params=lst(), grads=lst())
    for name in OPTIM_STATES[case.op]:
        out[name] = lst(positive=name in ("sums", "vs"))
    return out


for _op in OPTIM_STATES:
    ARRAYS[_op] = _optim_arrays

# Benchmark shapes: the parameter lists of the books' networks (weights (D, M) as the books lay them out).
_MLP_PARAMS = [(784, 100), (100,)] + [(100, 100), (100,)] * 4 + [(100, 10), (10,)]
NETS = {
    "TwoLayerNet784-50-10": [(784, 50), (50,), (50, 10), (10,)],                         # book 1, ch. 4-5
    "SimpleConvNet": [(30, 1, 5, 5), (30,), (4320, 100), (100,), (100, 10), (10,)],      # book 1, ch. 7
    "MLP784-100x5-10": _MLP_PARAMS,                                                     # book 1, ch. 6
    "Rnnlm-V10000-H100": [(10000, 100), (100, 400), (100, 400), (400,), (100, 10000), (10000,)],   # book 2, ch. 6
    "BetterRnnlm-V10000-H650": [(10000, 650)] + [(650, 2600), (650, 2600), (2600,)] * 2 + [(10000,)],  # tied affine
}
Params = namedtuple("Params", "net arrays elems")        # one network's parameter list (NETS[net])


def _net(name):
    return Params(name, len(NETS[name]), sum(math.prod(s) for s in NETS[name]))


add_family("optim",
           cpu=[_net("MLP784-100x5-10"), _net("Rnnlm-V10000-H100"), _net("BetterRnnlm-V10000-H650")],
           cuda=[_net("Rnnlm-V10000-H100"), _net("BetterRnnlm-V10000-H650")],
           mixed=[_net("MLP784-100x5-10")],
           sweep=[_net("TwoLayerNet784-50-10"), _net("SimpleConvNet"), _net("MLP784-100x5-10"),
                  _net("Rnnlm-V10000-H100"), _net("BetterRnnlm-V10000-H650")],
           small=[_net("TwoLayerNet784-50-10")])


def _optim_inputs(s, dtype, rng, states):
    def lst(positive=False):
        return [np.abs(a) if positive else a for a in (gauss(rng, dtype, *shape) for shape in NETS[s.net])]
    return [lst(), lst(), *[lst(positive=name in ("sums", "vs")) for name in states]]


def make_sgd_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ()), 0.01), {}


def make_momentum_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ("velocities",)), 0.01), dict(momentum=0.9)


def make_nesterov_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ("velocities",)), 0.01), dict(momentum=0.9)


def make_adagrad_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ("sums",)), 0.01), {}


def make_rmsprop_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ("sums",)), 0.01), dict(decay_rate=0.99)


def make_adam_step(s, dtype, rng):
    return (*_optim_inputs(s, dtype, rng, ("ms", "vs")), 1), dict(lr=0.001)


# PyTorch: its optimizer over copies of the parameters with .grad set, foreach=True (its multi-tensor path), timed
# by .step(). Its rules differ in detail (SGD momentum v = m*v + g; Adam adds eps to the bias-corrected sqrt(v)):
# the same memory traffic and work, compared for speed, not numbers.
def _torch_optimizer(torch, dev, args, cls, **options):
    params = [torch.from_numpy(p.copy()).to(dev) for p in args[0]]
    for t, g in zip(params, args[1]):
        t.grad = torch.from_numpy(g.copy()).to(dev)
    return cls(params, foreach=True, **options).step


def torch_sgd_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.SGD, lr=args[2])


def torch_momentum_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.SGD, lr=args[3], momentum=kw["momentum"])


def torch_nesterov_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.SGD, lr=args[3], momentum=kw["momentum"], nesterov=True)


def torch_adagrad_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.Adagrad, lr=args[3], eps=1e-7)


def torch_rmsprop_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.RMSprop, lr=args[3], alpha=kw["decay_rate"], eps=1e-7)


def torch_adam_step(torch, dev, s, args, kw):
    return _torch_optimizer(torch, dev, args, torch.optim.Adam, lr=kw["lr"], eps=1e-7)


def _per_element(n):
    """Work counts of the elementwise rules (floating-point operations per parameter element): the table rates them
    in GFLOP/s, since the steps return nothing for a bytes count (each is memory-bound: 3-7 arrays per element)."""
    return lambda s: float(n * s.elems)


OPS += [
    Op("sgd_step", "optim", make_sgd_step, torch_sgd_step, _per_element(2)),
    Op("momentum_step", "optim", make_momentum_step, torch_momentum_step, _per_element(4)),
    Op("nesterov_step", "optim", make_nesterov_step, torch_nesterov_step, _per_element(7)),
    Op("adagrad_step", "optim", make_adagrad_step, torch_adagrad_step, _per_element(7)),
    Op("rmsprop_step", "optim", make_rmsprop_step, torch_rmsprop_step, _per_element(9)),
    Op("adam_step", "optim", make_adam_step, torch_adam_step, _per_element(13)),
]
# ==== end optim ====

OPS_BY_NAME = {op.name: op for op in OPS}

