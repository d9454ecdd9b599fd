"""The one table of shapes and parameters for every op: the conformance tests (tests/test_ops.py) and the
benchmarks iterate over it, so a new awkward case is tested and timed by adding one line.

A case names a forward op; its backward is exercised with it (im2col covers col2im). `tiny` cases (a few hundred
output elements at most) also run in the CUDA simulator, which executes every GPU thread in Python. `realistic`
cases are network-sized: GPU tests (marker `gpu`) and benchmarks only.
"""
from typing import NamedTuple

import numpy as np


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


def _out(size, k, s, p, d=1):
    """Output length along one axis (docs/internals.md)."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, tiny=False, realistic=False):
    return Case("im2col", dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation),
                tiny, realistic)


def conv(x, k, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, tiny=False, realistic=False):
    return Case("conv2d", dict(x=x, k=k, kernel_size=kernel_size, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, bias=bias), tiny, realistic)


def pool(op, x, kernel_size, stride=None, padding=0, tiny=False, realistic=False, **extra):
    return Case(op, dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding, **extra), tiny, realistic)


def bn(x, training=True, affine=True, running=True, momentum=0.1, eps=1e-5, tiny=False, realistic=False):
    return Case("batch_norm", dict(x=x, training=training, affine=affine, running=running, momentum=momentum,
                                   eps=eps), tiny, realistic)


def lstm_cell(n, d, h, gate_order="ifgo", bias=True, none=(), tiny=False, realistic=False):
    """`none`: which of h, c, dh_next, dc_next are passed as None."""
    return Case("lstm_cell", dict(n=n, d=d, h=h, gate_order=gate_order, bias=bias, none=none), tiny, realistic)


def lstm(n, t, d, h, gate_order="ifgo", bias=True, none=(), tiny=False, realistic=False):
    """`none`: which of h0, c0, dhs, dh_n, dc_n are passed as None."""
    return Case("lstm", dict(n=n, t=t, d=d, h=h, gate_order=gate_order, bias=bias, none=none), tiny, realistic)


CASES = {
    "im2col": [
        im2col((1, 1, 4, 4), 2, tiny=True),
        im2col((2, 2, 5, 4), (3, 2), (2, 1), 1, tiny=True),               # non-square kernel and stride
        im2col((1, 2, 5, 5), 2, 1, 1, 2, tiny=True),                       # dilation 2
        im2col((1, 1, 5, 7), 1, 3, tiny=True),                             # 1x1 kernel, stride > kernel
        im2col((1, 3, 3, 3), 3, 1, 1, tiny=True),
        im2col((2, 3, 17, 15), 3, 1, 1),
        im2col((3, 5, 20, 13), (5, 3), 2, (2, 1), (1, 2)),
        im2col((8, 64, 56, 56), 3, 1, 1, realistic=True),
    ],
    "conv2d": [
        conv((1, 1, 4, 4), 1, 1, tiny=True),                               # 1x1, one channel
        conv((2, 2, 5, 5), 3, 3, 1, 1, tiny=True),
        conv((1, 2, 6, 5), 2, (3, 2), 2, 1, bias=False, tiny=True),        # stride 2, no bias
        conv((1, 4, 5, 5), 4, 3, 1, 1, groups=2, tiny=True),               # groups 2
        conv((1, 2, 7, 7), 2, 3, 1, 2, 2, tiny=True),                      # dilation 2
        conv((1, 1, 7, 5), 3, 1, 3, tiny=True),                            # stride > kernel
        conv((1, 3, 3, 4), 3, 3, 1, 1, groups=3, tiny=True),               # depthwise
        conv((2, 8, 17, 15), 12, 3, 1, 1),
        conv((3, 6, 13, 11), 10, (5, 3), 2, (2, 1), groups=2),
        conv((1, 16, 16, 16), 32, 3, 1, 2, 2, groups=4),
        conv((4, 3, 23, 19), 7, (7, 5), 3, 2),
        conv((2, 6, 9, 9), 6, 1, 2, groups=3, bias=False),
        conv((1, 1, 31, 29), 1, 3, 1, 1),
        conv((8, 64, 56, 56), 64, 3, 1, 1, realistic=True),                # ResNet stage 1
        conv((4, 3, 224, 224), 64, 7, 2, 3, realistic=True),               # ResNet stem
        conv((8, 256, 14, 14), 256, 3, 1, 1, realistic=True),
    ],
    "max_pool2d": [
        pool("max_pool2d", (1, 1, 4, 4), 2, tiny=True),
        pool("max_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True),              # overlapping windows, padding
        pool("max_pool2d", (1, 2, 5, 4), (3, 2), (1, 2), (1, 0), tiny=True),
        pool("max_pool2d", (1, 1, 7, 7), 2, 3, tiny=True),                 # stride > kernel
        pool("max_pool2d", (1, 3, 3, 3), 3, 1, 1, tiny=True),
        pool("max_pool2d", (2, 8, 17, 15), 3, 2, 1),
        pool("max_pool2d", (3, 5, 20, 13), 2),
        pool("max_pool2d", (2, 4, 11, 9), (3, 5), (2, 1), (1, 2)),
        pool("max_pool2d", (8, 64, 112, 112), 3, 2, 1, realistic=True),    # ResNet stem pool
    ],
    "avg_pool2d": [
        pool("avg_pool2d", (1, 1, 4, 4), 2, tiny=True, count_include_pad=True),
        pool("avg_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True, count_include_pad=True),
        pool("avg_pool2d", (2, 2, 5, 6), 3, 2, 1, tiny=True, count_include_pad=False),
        pool("avg_pool2d", (1, 2, 5, 4), (3, 2), (1, 2), (1, 0), tiny=True, count_include_pad=False),
        pool("avg_pool2d", (1, 1, 7, 7), 2, 3, tiny=True, count_include_pad=True),
        pool("avg_pool2d", (2, 8, 17, 15), 3, 2, 1, count_include_pad=False),
        pool("avg_pool2d", (3, 5, 20, 13), 2, count_include_pad=True),
        pool("avg_pool2d", (2, 4, 11, 9), (3, 5), (2, 1), (1, 2), count_include_pad=True),
        pool("avg_pool2d", (8, 512, 7, 7), 7, realistic=True, count_include_pad=True),          # global pool
        pool("avg_pool2d", (8, 64, 56, 56), 3, 2, 1, realistic=True, count_include_pad=False),
    ],
    "batch_norm": [
        bn((6, 3), tiny=True),
        bn((1, 2, 3, 4), tiny=True),                                       # batch 1 (4-D: M = 12)
        bn((4, 1), affine=False, running=False, tiny=True),                # one channel, gamma/beta None
        bn((2, 3, 3, 5), momentum=0.3, eps=1e-3, tiny=True),
        bn((3, 2, 2, 3), training=False, tiny=True),
        bn((5, 4), training=False, affine=False, tiny=True),
        bn((64, 100)),
        bn((4, 16, 13, 11)),
        bn((128, 33), affine=False),
        bn((8, 10, 9, 7), training=False),
        bn((32, 64, 56, 56), realistic=True),
        bn((32, 256, 14, 14), training=False, realistic=True),
        bn((32, 256, 14, 14), realistic=True),                             # cuda: one block per channel, full
    ],
    "lstm_cell": [
        lstm_cell(2, 3, 4, tiny=True),
        lstm_cell(1, 5, 3, "fgio", none=("h", "c"), tiny=True),
        lstm_cell(3, 2, 5, bias=False, none=("dc_next",), tiny=True),
        lstm_cell(2, 4, 2, "fgio", none=("dh_next",), tiny=True),
        lstm_cell(16, 33, 20),
        lstm_cell(7, 64, 50, "fgio"),
        lstm_cell(64, 512, 512, realistic=True),
    ],
    "lstm": [
        lstm(2, 3, 3, 4, tiny=True),
        lstm(1, 3, 2, 3, "fgio", none=("h0", "c0", "dh_n", "dc_n"), tiny=True),
        lstm(2, 2, 4, 2, bias=False, none=("dhs",), tiny=True),
        lstm(8, 10, 17, 12, "fgio"),
        lstm(5, 7, 32, 24, none=("h0", "c0")),
        lstm(64, 32, 256, 256, realistic=True),
    ],
}


def arrays(case, dtype, seed=0):
    """The input arrays of a case, in `dtype`: forward inputs plus the upstream gradient(s) of the backward.

    Convolution, im2col and pooling get small integers, so their sums are exact in float32 (and max-pool ties are
    common, which tests first-max-wins); batch norm and LSTM get Gaussian data.
    """
    rng = np.random.default_rng(seed)
    p = case.p

    def ints(*shape):
        return rng.integers(-4, 5, shape).astype(dtype)

    def gauss(*shape, scale=1.0, shift=0.0):
        return (rng.standard_normal(shape) * scale + shift).astype(dtype)

    if case.op in ("im2col", "conv2d", "max_pool2d", "avg_pool2d"):
        n, c, h, w = p["x"]
        (kh, kw) = _pair(p["kernel_size"])
        (ph, pw) = _pair(p["padding"])
        (dh, dw) = _pair(p.get("dilation", 1))
        (sh, sw) = _pair(p["kernel_size"] if p["stride"] is None else p["stride"])
        oh, ow = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
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
