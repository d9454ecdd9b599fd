"""max_pool2d / avg_pool2d, forward and backward, on the GPU (NCHW, viewed as P = N*C planes of H x W).

Kernels, in order (3-D grid: x -> ow, y -> oh, z -> plane, so no thread divides to find its coordinates):
  max_pool2d_fwd__naive       one thread per output, window scanned in row-major order (first max / first NaN wins).
  max_pool2d_fwd__fixed(KH,KW) window size compiled in: unrolled loops, loads clamped into the input so all of them
                              issue before the first compare (the naive kernel waits on each load in turn).
  max_pool2d_fwd__k2s2        2x2 window, stride 2, no padding: two planes per thread, all eight loads issued before
                              any compare (8x the bytes in flight per thread: what a memory-bound kernel needs).
  max_pool2d_bwd__gather      one thread per input element sums dy over the windows that cover it and chose it:
                              overlapping windows without atomics, every dx element written once (no memset);
                              no 64-bit integer division (emulated on the GPU: it made the kernel 6x slower).
  max_pool2d_bwd__k2s2        2x2/2: one thread per input element, two planes each (coalesced stores; the cells
                              kernel below writes with stride 2 and ran at 1.1 TB/s).
  max_pool2d_bwd__cells       stride >= kernel: one thread per output owns the stride-sized cell its window lies
                              in and writes all of it (dy at the argmax, 0 elsewhere) - no races, no memset.
  max_pool2d_bwd__scatter     the contract's call carries no window geometry: zero dx, then atomic adds at the
                              argmax (correct for any geometry; pass kernel_size/stride/padding for the kernels above).
  avg_pool2d_fwd__naive / __fixed / __k2s2, avg_pool2d_bwd__gather   the same ideas for the window mean.
"""
import functools

import numpy as np
from numba import cuda

from .._checks import bad_pool_index
from .._shapes import out_size as _out, pair as _pair
from ._launch import empty as _empty, kind_of, launch, result as _result, view

TX, TY = 32, 8          # a warp spans 32 adjacent output columns: coalesced loads and stores
MAX_Z = 65535           # gridDim.z limit; kernels loop over planes beyond it
MAX_FIXED = 25          # windows up to 5x5 get a kernel compiled for their size (unrolled); larger run the naive


def _grid(ow, oh, planes):
    return ((ow + TX - 1) // TX, (oh + TY - 1) // TY, min(planes, MAX_Z))


# ---------------------------------------------------------------------------------------------- max forward

@cuda.jit
def max_pool2d_fwd__naive(x, y, ind, H, W, OH, OW, kh, kw, sh, sw, ph, pw):
    ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
    oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if ow >= OW or oh >= OH:
        return
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + kh, H)
    w1 = min(w0 + kw, W)
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    for p in range(cuda.blockIdx.z, x.shape[0], cuda.gridDim.z):
        best = x[p, h0, w0]          # padding <= k//2, so every window holds an input element
        bi = h0 * W + w0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                v = x[p, ih, iw]
                if v > best or (v != v and best == best):    # strict >: first max wins; NaN beats non-NaN
                    best = v
                    bi = ih * W + iw
        y[p, oh, ow] = best
        ind[p, oh, ow] = bi


@cuda.jit(device=True, inline=True)
def _max4(a, b, c, d):
    """(max, position 0..3) in row-major window order: first max wins, the first NaN wins."""
    best = a
    k = 0
    if b > best or (b != b and best == best):
        best = b
        k = 1
    if c > best or (c != c and best == best):
        best = c
        k = 2
    if d > best or (d != d and best == best):
        best = d
        k = 3
    return best, k


@cuda.jit
def max_pool2d_fwd__k2s2(x, y, ind, H, W, OH, OW):
    ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
    oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if ow >= OW or oh >= OH:
        return
    ih = 2 * oh
    iw = 2 * ow
    P = x.shape[0]
    for p0 in range(2 * cuda.blockIdx.z, P, 2 * cuda.gridDim.z):   # two planes per thread: 8 loads in flight
        p1 = min(p0 + 1, P - 1)                                       # (P odd: the last plane done twice)
        a0, b0, c0, d0 = x[p0, ih, iw], x[p0, ih, iw + 1], x[p0, ih + 1, iw], x[p0, ih + 1, iw + 1]
        a1, b1, c1, d1 = x[p1, ih, iw], x[p1, ih, iw + 1], x[p1, ih + 1, iw], x[p1, ih + 1, iw + 1]
        best, k = _max4(a0, b0, c0, d0)
        y[p0, oh, ow] = best
        ind[p0, oh, ow] = (ih + (k >> 1)) * W + iw + (k & 1)
        best, k = _max4(a1, b1, c1, d1)
        y[p1, oh, ow] = best
        ind[p1, oh, ow] = (ih + (k >> 1)) * W + iw + (k & 1)


@functools.cache
def max_pool2d_fwd__fixed(KH, KW):
    """The naive kernel with the window size compile-time: the loops unroll and all KH*KW loads (clamped into the
    input, so unconditional) can issue before the first compare. One compiled kernel per window size."""
    @cuda.jit
    def kernel(x, y, ind, H, W, OH, OW, sh, sw, ph, pw):
        ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
        oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
        if ow >= OW or oh >= OH:
            return
        h0 = oh * sh - ph
        w0 = ow * sw - pw
        for p in range(cuda.blockIdx.z, x.shape[0], cuda.gridDim.z):
            best = x[p, max(h0, 0), max(w0, 0)]
            bi = max(h0, 0) * W + max(w0, 0)
            for i in range(KH):
                ih = h0 + i
                for j in range(KW):
                    iw = w0 + j
                    v = x[p, min(max(ih, 0), H - 1), min(max(iw, 0), W - 1)]
                    if 0 <= ih < H and 0 <= iw < W and (v > best or (v != v and best == best)):
                        best = v
                        bi = ih * W + iw
            y[p, oh, ow] = best
            ind[p, oh, ow] = bi
    return kernel


# --------------------------------------------------------------------------------------------- max backward

@cuda.jit
def max_pool2d_bwd__gather(dy, ind, dx, H, W, OH, OW, kh, kw, sh, sw, ph, pw, ish, isw, bad):
    iw = cuda.blockIdx.x * TX + cuda.threadIdx.x
    ih = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if iw >= W or ih >= H:
        return
    # outputs whose window [o*s - p, o*s - p + k) holds i: walk down from o = (i + p) // s while o*s - p + k > i;
    # the quotient via float (exact: (a + 0.5)/s lies >= 0.5/s away from an integer) - 64-bit integer division
    # is a long emulated sequence on the GPU and made this kernel 6x slower
    ohx = min(OH - 1, int((ih + ph + 0.5) * ish))
    owx = min(OW - 1, int((iw + pw + 0.5) * isw))
    me = ih * W + iw
    for p in range(cuda.blockIdx.z, dx.shape[0], cuda.gridDim.z):
        acc = 0.0                    # float64 sum (not dy*0: that is NaN when dy holds inf)
        oh = ohx
        while oh >= 0 and oh * sh - ph + kh > ih:
            ow = owx
            while ow >= 0 and ow * sw - pw + kw > iw:
                at = ind[p, oh, ow]
                if at == me:
                    acc += dy[p, oh, ow]
                elif at < 0 or at >= H * W:     # matches no position: flag it (the call raises)
                    bad[0] = (p * OH + oh) * OW + ow
                ow -= 1
            oh -= 1
        dx[p, ih, iw] = acc


@cuda.jit
def max_pool2d_bwd__k2s2(dy, ind, dx, H, W, OH, OW, bad):
    iw = cuda.blockIdx.x * TX + cuda.threadIdx.x
    ih = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if iw >= W or ih >= H:
        return
    oh = ih >> 1
    ow = iw >> 1
    inside = oh < OH and ow < OW          # odd H/W: the last row/column is in no window
    me = ih * W + iw
    P = dx.shape[0]
    for p0 in range(2 * cuda.blockIdx.z, P, 2 * cuda.gridDim.z):   # two planes per thread: 4 loads in flight
        p1 = min(p0 + 1, P - 1)
        if inside:
            i0, g0, i1, g1 = ind[p0, oh, ow], dy[p0, oh, ow], ind[p1, oh, ow], dy[p1, oh, ow]
            dx[p0, ih, iw] = g0 if i0 == me else 0
            dx[p1, ih, iw] = g1 if i1 == me else 0
            if i0 < 0 or i0 >= H * W:
                bad[0] = (p0 * OH + oh) * OW + ow
            if i1 < 0 or i1 >= H * W:
                bad[0] = (p1 * OH + oh) * OW + ow
        else:
            dx[p0, ih, iw] = 0
            dx[p1, ih, iw] = 0


@cuda.jit
def max_pool2d_bwd__cells(dy, ind, dx, H, W, OH, OW, sh, sw, ph, pw, bad):
    ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
    oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if ow >= OW or oh >= OH:
        return
    # cell rows [oh*sh - ph, oh*sh - ph + sh), clipped to the input; the first/last cells reach the edges, so the
    # cells tile the whole input and every dx element has exactly one writer
    h0 = 0 if oh == 0 else oh * sh - ph
    w0 = 0 if ow == 0 else ow * sw - pw
    h1 = H if oh == OH - 1 else min(H, oh * sh - ph + sh)
    w1 = W if ow == OW - 1 else min(W, ow * sw - pw + sw)
    for p in range(cuda.blockIdx.z, dx.shape[0], cuda.gridDim.z):
        g = dy[p, oh, ow]
        at = ind[p, oh, ow]
        if at < 0 or at >= H * W:
            bad[0] = (p * OH + oh) * OW + ow
        z = 0.0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                dx[p, ih, iw] = g if ih * W + iw == at else z


@cuda.jit
def _zero(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 0


@cuda.jit
def max_pool2d_bwd__scatter(dy, ind, dx, bad):      # dy, ind (P, OH*OW); dx (P, H*W), zeroed; bad (1,) = -1
    q = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if q >= dy.shape[1]:
        return
    for p in range(cuda.blockIdx.y, dy.shape[0], cuda.gridDim.y):
        i = ind[p, q]
        if i < 0 or i >= dx.shape[1]:
            bad[0] = p * dy.shape[1] + q        # never written (no bounds checks on the GPU); the call raises
        else:
            cuda.atomic.add(dx, (p, i), dy[p, q])


# ---------------------------------------------------------------------------------------------- avg forward

@cuda.jit
def avg_pool2d_fwd__naive(x, y, H, W, OH, OW, kh, kw, sh, sw, ph, pw, include_pad):
    ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
    oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if ow >= OW or oh >= OH:
        return
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + kh, H + ph)       # clipped to the padded input (PyTorch's divisor with padding)
    w1 = min(w0 + kw, W + pw)
    div = (h1 - h0) * (w1 - w0)
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    h1 = min(h1, H)
    w1 = min(w1, W)
    if not include_pad:
        div = (h1 - h0) * (w1 - w0)
    for p in range(cuda.blockIdx.z, x.shape[0], cuda.gridDim.z):
        acc = 0.0
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                acc += x[p, ih, iw]
        y[p, oh, ow] = acc / div


@cuda.jit
def avg_pool2d_fwd__k2s2(x, y, H, W, OH, OW):
    ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
    oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if ow >= OW or oh >= OH:
        return
    ih = 2 * oh
    iw = 2 * ow
    for p in range(cuda.blockIdx.z, x.shape[0], cuda.gridDim.z):
        a = x[p, ih, iw]
        b = x[p, ih, iw + 1]
        c = x[p, ih + 1, iw]
        d = x[p, ih + 1, iw + 1]
        y[p, oh, ow] = (((a + b) + c) + d) / 4      # same order of additions as the naive loop


@functools.cache
def avg_pool2d_fwd__fixed(KH, KW):
    """avg_pool2d_fwd__naive with a compile-time window, as max_pool2d_fwd__fixed (padding reads count as 0)."""
    @cuda.jit
    def kernel(x, y, H, W, OH, OW, sh, sw, ph, pw, include_pad):
        ow = cuda.blockIdx.x * TX + cuda.threadIdx.x
        oh = cuda.blockIdx.y * TY + cuda.threadIdx.y
        if ow >= OW or oh >= OH:
            return
        h0 = oh * sh - ph
        w0 = ow * sw - pw
        div = KH * KW if include_pad else (min(h0 + KH, H) - max(h0, 0)) * (min(w0 + KW, W) - max(w0, 0))
        for p in range(cuda.blockIdx.z, x.shape[0], cuda.gridDim.z):
            acc = 0.0
            for i in range(KH):
                ih = h0 + i
                for j in range(KW):
                    iw = w0 + j
                    v = x[p, min(max(ih, 0), H - 1), min(max(iw, 0), W - 1)]
                    if 0 <= ih < H and 0 <= iw < W:
                        acc += v
            y[p, oh, ow] = acc / div
    return kernel


# --------------------------------------------------------------------------------------------- avg backward

@cuda.jit
def avg_pool2d_bwd__gather(dy, dx, H, W, OH, OW, kh, kw, sh, sw, ph, pw, include_pad, ish, isw, inv_area):
    iw = cuda.blockIdx.x * TX + cuda.threadIdx.x
    ih = cuda.blockIdx.y * TY + cuda.threadIdx.y
    if iw >= W or ih >= H:
        return
    ohx = min(OH - 1, int((ih + ph + 0.5) * ish))      # as in max_pool2d_bwd__gather
    owx = min(OW - 1, int((iw + pw + 0.5) * isw))
    for p in range(cuda.blockIdx.z, dx.shape[0], cuda.gridDim.z):
        acc = 0.0
        oh = ohx
        while oh >= 0 and oh * sh - ph + kh > ih:
            a0 = oh * sh - ph
            r = min(a0 + kh, H) - max(a0, 0)
            ow = owx
            while ow >= 0 and ow * sw - pw + kw > iw:
                if include_pad:      # windows never pass the padded edge, so the divisor is kh*kw
                    acc += dy[p, oh, ow] * inv_area
                else:
                    b0 = ow * sw - pw
                    acc += dy[p, oh, ow] / (r * (min(b0 + kw, W) - max(b0, 0)))
                ow -= 1
            oh -= 1
        dx[p, ih, iw] = acc


# ------------------------------------------------------------------------------------------------ launchers

def _geometry(shape, kernel_size, stride, padding, out_hw=None):
    """Sizes and normalised pairs; out_hw (OH, OW) when known (checked by fastnn._checks, or dy's shape)."""
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = _pair(kernel_size if stride is None else stride)
    H, W = (int(v) for v in tuple(shape)[-2:])     # tuple(): the simulator's shapes lack negative indexing
    OH, OW = (int(n) for n in out_hw) if out_hw else (_out(H, kh, sh, ph), _out(W, kw, sw, pw))
    return H, W, OH, OW, kh, kw, sh, sw, ph, pw


# --------------------------------------------------------------------------------------------------- public
# kernels launch through _launch.launch(kernel, key, grid, block, *args); key = the float dtype's char

def max_pool2d(x, kernel_size, stride, padding, out_hw=None):
    kind = kind_of(x)
    d = view(x)
    N, C = d.shape[:2]
    H, W, OH, OW, kh, kw, sh, sw, ph, pw = _geometry(d.shape, kernel_size, stride, padding, out_hw)
    P = N * C
    y = _empty((N, C, OH, OW), d.dtype, kind)
    ind = _empty((N, C, OH, OW), np.int64, kind)
    xv, yv, iv = d.reshape(P, H, W), y[1].reshape(P, OH, OW), ind[1].reshape(P, OH, OW)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        launch(max_pool2d_fwd__k2s2, d.dtype.char, _grid(OW, OH, (P + 1) // 2), (TX, TY), xv, yv, iv, H, W, OH, OW)
    elif kh * kw <= MAX_FIXED:
        launch(max_pool2d_fwd__fixed(kh, kw), d.dtype.char, _grid(OW, OH, P), (TX, TY), xv, yv, iv, H, W, OH, OW,
               sh, sw, ph, pw)
    else:
        launch(max_pool2d_fwd__naive, d.dtype.char, _grid(OW, OH, P), (TX, TY), xv, yv, iv, H, W, OH, OW,
               kh, kw, sh, sw, ph, pw)
    return _result(y, kind), _result(ind, kind)


def max_pool2d_backward(dy, indices, input_shape, kernel_size=None, stride=None, padding=0):
    """dx. The contract passes no window geometry: then zero + atomic scatter (right for any geometry).
    Given kernel_size/stride/padding, a race-free kernel without atomics or memset runs instead."""
    kind = kind_of(dy)
    g, ind = view(dy), view(indices)
    N, C, H, W = (int(s) for s in input_shape)
    P, OH, OW = N * C, g.shape[2], g.shape[3]
    dx = _empty((N, C, H, W), g.dtype, kind)
    k = g.dtype.char
    bad = cuda.to_device(np.full(1, -1, np.int64))   # a kernel that meets an index outside its plane sets it
    if kernel_size is None:
        launch(_zero, k, (P * H * W + 255) // 256, 256, dx[1].reshape(P * H * W))
        launch(max_pool2d_bwd__scatter, k, ((OH * OW + 255) // 256, min(P, MAX_Z)), 256,
               g.reshape(P, OH * OW), ind.reshape(P, OH * OW), dx[1].reshape(P, H * W), bad)
    else:
        _, _, _, _, kh, kw, sh, sw, ph, pw = _geometry(input_shape, kernel_size, stride, padding, (OH, OW))
        gv, iv, dxv = g.reshape(P, OH, OW), ind.reshape(P, OH, OW), dx[1].reshape(P, H, W)
        if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
            launch(max_pool2d_bwd__k2s2, k, _grid(W, H, (P + 1) // 2), (TX, TY), gv, iv, dxv, H, W, OH, OW, bad)
        elif sh >= kh and sw >= kw:
            launch(max_pool2d_bwd__cells, k, _grid(OW, OH, P), (TX, TY), gv, iv, dxv, H, W, OH, OW, sh, sw, ph, pw,
                   bad)
        else:
            launch(max_pool2d_bwd__gather, k, _grid(W, H, P), (TX, TY), gv, iv, dxv, H, W, OH, OW,
                   kh, kw, sh, sw, ph, pw, 1.0 / sh, 1.0 / sw, bad)
    pos = int(bad.copy_to_host()[0])      # synchronises: the error must be raised by this call
    if pos >= 0:
        raise bad_pool_index(ind.device().reshape(P * OH * OW)[pos:pos + 1].copy_to_host()[0], pos, H * W)
    return _result(dx, kind)


def avg_pool2d(x, kernel_size, stride, padding, count_include_pad, out_hw=None):
    kind = kind_of(x)
    d = view(x)
    N, C = d.shape[:2]
    H, W, OH, OW, kh, kw, sh, sw, ph, pw = _geometry(d.shape, kernel_size, stride, padding, out_hw)
    P = N * C
    y = _empty((N, C, OH, OW), d.dtype, kind)
    xv, yv = d.reshape(P, H, W), y[1].reshape(P, OH, OW)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        launch(avg_pool2d_fwd__k2s2, d.dtype.char, _grid(OW, OH, P), (TX, TY), xv, yv, H, W, OH, OW)
    elif kh * kw <= MAX_FIXED:
        launch(avg_pool2d_fwd__fixed(kh, kw), d.dtype.char, _grid(OW, OH, P), (TX, TY), xv, yv, H, W, OH, OW,
               sh, sw, ph, pw, bool(count_include_pad))
    else:
        launch(avg_pool2d_fwd__naive, d.dtype.char, _grid(OW, OH, P), (TX, TY), xv, yv, H, W, OH, OW,
               kh, kw, sh, sw, ph, pw, bool(count_include_pad))
    return _result(y, kind)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride, padding, count_include_pad):
    kind = kind_of(dy)
    g = view(dy)
    N, C, H, W = (int(s) for s in input_shape)
    _, _, OH, OW, kh, kw, sh, sw, ph, pw = _geometry(input_shape, kernel_size, stride, padding, g.shape[2:])
    P = N * C
    dx = _empty((N, C, H, W), g.dtype, kind)
    launch(avg_pool2d_bwd__gather, g.dtype.char, _grid(W, H, P), (TX, TY), g.reshape(P, OH, OW),
           dx[1].reshape(P, H, W), H, W, OH, OW, kh, kw, sh, sw, ph, pw, bool(count_include_pad),
           1.0 / sh, 1.0 / sw, 1.0 / (kh * kw))
    return _result(dx, kind)
