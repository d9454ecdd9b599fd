"""im2col / col2im on the GPU (NCHW; col row (n*OH+oh)*OW+ow, column (c*KH+kh)*KW+kw; padding reads 0).

Kernels, in order:
  im2col__gather     one thread per col element, column index fastest: the col writes are coalesced.
  col2im__gather     one thread per input element sums the col entries that cover it (overlaps summed with
                     no atomics, so the result is deterministic). The col layout is given by three strides
                     (image, column, position), so conv2d_backward reuses it on its (N, C*KH*KW, OH*OW) buffer.
"""
from numba import cuda

from .._shapes import out_hw as _out_hw, pair
from ._launch import as_device, blocks, empty_device as empty, kind_of, launch, wrap


@cuda.jit
def im2col__gather(x, col, N, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    CKK = C * KH * KW
    if t >= N * OH * OW * CKK:
        return
    row = t // CKK
    q = t - row * CKK
    ow = row % OW
    oh = (row // OW) % OH
    n = row // (OW * OH)
    kw = q % KW
    kh = (q // KW) % KH
    c = q // (KW * KH)
    ih = oh * sh - ph + kh * dh
    iw = ow * sw - pw + kw * dw
    v = 0.0
    if 0 <= ih < H and 0 <= iw < W:
        v = x[((n * C + c) * H + ih) * W + iw]
    col[t] = v


@cuda.jit
def col2im__gather(col, x, N, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, s_n, s_q, s_p):
    t = cuda.grid(1)
    if t >= N * C * H * W:
        return
    iw = t % W
    ih = (t // W) % H
    c = (t // (W * H)) % C
    n = t // (W * H * C)
    s = 0.0 * col[0]                     # the accumulator takes col's dtype
    for kh in range(KH):
        a = ih + ph - kh * dh            # = oh*sh when this kernel row covers ih
        if a < 0 or a % sh != 0:
            continue
        oh = a // sh
        if oh >= OH:
            continue
        for kw in range(KW):
            b = iw + pw - kw * dw
            if b < 0 or b % sw != 0:
                continue
            ow = b // sw
            if ow >= OW:
                continue
            s += col[n * s_n + ((c * KH + kh) * KW + kw) * s_q + (oh * OW + ow) * s_p]
    x[t] = s


def launch_col2im(col_flat, x_flat, N, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, strides):
    """col_flat, x_flat: 1-D Numba device arrays or _launch Views (launched without Numba's dispatcher)."""
    launch(col2im__gather, x_flat.dtype.char, blocks(N * C * H * W), 256, col_flat, x_flat, N, C, H, W, KH, KW,
           OH, OW, sh, sw, ph, pw, dh, dw, *(int(s) for s in strides))


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, out_hw=None):
    kind = kind_of(x)
    xd = as_device(x)
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    N, C, H, W = xd.shape
    OH, OW = out_hw or _out_hw((H, W), kernel_size, stride, padding, dilation)
    col = empty((N * OH * OW, C * KH * KW), xd.dtype, kind)
    if col.size:
        im2col__gather[blocks(col.size), 256](xd.reshape(xd.size), col.reshape(col.size), N, C, H, W,
                                              KH, KW, OH, OW, sh, sw, ph, pw, dh, dw)
    return wrap(col, kind)


def col2im(col, input_shape, kernel_size, stride=1, padding=0, dilation=1, out_hw=None):
    kind = kind_of(col)
    cd = as_device(col)
    (KH, KW), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    N, C, H, W = map(int, input_shape)
    OH, OW = out_hw or _out_hw((H, W), kernel_size, stride, padding, dilation)
    x = empty((N, C, H, W), cd.dtype, kind)
    if x.size:
        CKK = C * KH * KW
        launch_col2im(cd.reshape(cd.size), x.reshape(x.size), N, C, H, W, KH, KW, OH, OW,
                      sh, sw, ph, pw, dh, dw, (OH * OW * CKK, 1, CKK))
    return wrap(x, kind)
