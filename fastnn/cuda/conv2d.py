"""conv2d forward and backward on the GPU (NCHW, groups, stride, padding, dilation, bias; float32/float64).

Per group g, with P = OH*OW and CRS = (C/G)*KH*KW:
  forward   y[n,k,p]   = sum_crs W[k,crs] * patch[n,crs,p]              GEMM  (K/G) x (N*P), reduce CRS
  dweight   dW[k,crs]  = sum_{n,p} dy[n,k,p] * patch[n,crs,p]           GEMM  (K/G) x CRS,  reduce N*P
  dx        col[n]     = W^T dy[n]  then  dx = col2im(col)              GEMM  CRS x P per (n, g), then a gather
            (stride 1: dx = conv(dy, W flipped and transposed), one implicit GEMM C x N*H*W, reduce K*KH*KW)
  dbias     db[k]      = sum_{n,p} dy[n,k,p]

Kernels, in order:
  conv2d__naive        one thread per output, direct loops (the reference and the algorithmic spec).
  conv2d_dx__naive     one thread per input element, gathers the dy entries it fed (reference).
  conv2d_dw__naive     one thread per weight element, loops over N*P (reference).
  conv2d__igemm        implicit GEMM: patches gathered straight into the shared-memory B tile (no im2col
                       buffer, x read from cache instead of a 9x larger col in DRAM), the gemm__tiled
                       register-blocked, double-buffered main loop; KH, KW are compile-time so the
                       crs -> (c, kh, kw) split is multiply-shift, and each thread's output column
                       (n, oh, ow) is decoded once, outside the loop. The first version (variant "igemm1"),
                       kept as the only forward for KH*KW > 62, where igemm2's tap mask (one int64) cannot go.
  conv2d__igemm2       the same with a cheaper gather (variant "igemm", the default): per column a base offset
                       and a bit mask of the taps inside the image, per slab row one offset from a shared table,
                       so an element costs a mask test, an add and a load; optional split-K (tile "BMxBN:sN").
  conv2d_dw__igemm     the same for dweight with dy as A and the patches (transposed) as B; the reduction
                       (N*P) is long and the output small, so it is split over blockIdx.z (split-K) into a
                       partial buffer summed by a second small kernel (deterministic, no atomics).
  dx, stride 1         flip_weights, then conv2d__igemm2 over dy: dx is the stride-1 convolution of dy with the
                       weights flipped and transposed, padding dh*(KH-1)-ph (no col buffer, no col2im pass).
  dx, stride > 1       gemm__tiled batched over (n, g) for W^T dy into an (N, C*KH*KW, OH*OW) buffer, then
                       col2im__gather (no atomics); dx_variant="gemm_col2im" picks it for any stride.
  conv2d_db__reduce    one block per output channel, shared-memory tree reduction (float64 partial sums).
The tile of each launch is picked from measurements on the H100 (fwd_tile_for, dw_tile_for, gemm.pick_tile).
"""
import functools

import numpy as np
from numba import cuda, uint64

from . import _launch as _fl     # the name bench/gpu_conv.py reads (C._fl.view)
from ._launch import blocks, dummy as _dummy, kind_of
from .gemm import ALIGN, BK, NT, PAD, TILES, flat, kernel_options, launch_tiled, nbtype, put, slab_mma
from .._shapes import out_hw as _out_hw, pair
from .im2col import launch_col2im


# ---------------------------------------------------------------- reference kernels
@cuda.jit
def conv2d__naive(x, w, b, y, has_bias, G, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    _, _, OH, OW = y.shape
    t = cuda.grid(1)
    if t >= N * K * OH * OW:
        return
    ow = t % OW
    oh = (t // OW) % OH
    k = (t // (OW * OH)) % K
    n = t // (OW * OH * K)
    g = k // (K // G)
    s = 0.0
    for c in range(Cg):
        for r in range(KH):
            ih = oh * sh - ph + r * dh
            for q in range(KW):
                iw = ow * sw - pw + q * dw
                if 0 <= ih < H and 0 <= iw < W:
                    s += x[n, g * Cg + c, ih, iw] * w[k, c, r, q]
    if has_bias:
        s += b[k]
    y[n, k, oh, ow] = s


@cuda.jit
def conv2d_dx__naive(dy, w, dx, G, sh, sw, ph, pw, dh, dw):
    N, C, H, W = dx.shape
    K, Cg, KH, KW = w.shape
    _, _, OH, OW = dy.shape
    t = cuda.grid(1)
    if t >= N * C * H * W:
        return
    iw = t % W
    ih = (t // W) % H
    ci = (t // (W * H)) % C
    n = t // (W * H * C)
    g = ci // Cg
    c = ci - g * Cg
    Kg = K // G
    s = 0.0
    for r in range(KH):
        a = ih + ph - r * dh
        if a < 0 or a % sh != 0 or a // sh >= OH:
            continue
        for q in range(KW):
            bb = iw + pw - q * dw
            if bb < 0 or bb % sw != 0 or bb // sw >= OW:
                continue
            for k in range(g * Kg, (g + 1) * Kg):
                s += dy[n, k, a // sh, bb // sw] * w[k, c, r, q]
    dx[n, ci, ih, iw] = s


@cuda.jit
def conv2d_dw__naive(dy, x, dwt, G, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    K, Cg, KH, KW = dwt.shape
    _, _, OH, OW = dy.shape
    t = cuda.grid(1)
    if t >= K * Cg * KH * KW:
        return
    q = t % KW
    r = (t // KW) % KH
    c = (t // (KW * KH)) % Cg
    k = t // (KW * KH * Cg)
    ci = (k // (K // G)) * Cg + c
    s = 0.0
    for n in range(N):
        for oh in range(OH):
            ih = oh * sh - ph + r * dh
            if 0 <= ih < H:
                for ow in range(OW):
                    iw = ow * sw - pw + q * dw
                    if 0 <= iw < W:
                        s += dy[n, k, oh, ow] * x[n, ci, ih, iw]
    dwt[k, c, r, q] = s


# ---------------------------------------------------------------- fast kernels
@functools.cache
def conv2d__igemm(dtype, KH, KW, tile):
    """Forward kernel for one (dtype, KH, KW, tile), compiled once; grid (ceil(N*P/BN), ceil(Kg/BM), G).
    The forward for KH*KW > 62 (conv2d__igemm2's tap mask is one int64), and variant "igemm1" for any size
    (the tests run it against the reference)."""
    TM, TN, min_blocks = TILES[tile]
    BM, BN = 16 * TM, 16 * TN
    LA, LB = BM * BK // NT, BN * BK // NT
    KK = KH * KW
    ft = nbtype(dtype)
    LDA, LDB = BM + PAD, BN + PAD                       # shared tiles: 2 buffers x BK rows, flat
    SA, SB = (2 * BK * LDA // 4, 4), (2 * BK * LDB // 4, 4)    # rows of 4 floats: 16-byte shared loads
    mma = slab_mma(dtype, TM, TN)

    @cuda.jit(**kernel_options(min_blocks))
    def kernel(x, w, bias, y, has_bias, N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw):
        g = cuda.blockIdx.z
        Cg = C // G
        Kg = K // G
        CRS = Cg * KK
        P = OH * OW
        NP = N * P
        tid = cuda.threadIdx.x
        tx = tid % 16
        ty = tid // 16
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        As = cuda.shared.array(SA, ft, alignment=ALIGN)
        Bs = cuda.shared.array(SB, ft, alignment=ALIGN)
        acc = cuda.local.array((TM, TN), ft)
        ra = cuda.local.array(LA, ft)
        rb = cuda.local.array(LB, ft)
        av = cuda.local.array(TM, ft)
        bv = cuda.local.array(TN, ft)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        # B loads: this thread fills slab row kb, columns jb + 32*l; each column (one output position
        # n, oh, ow) is decoded once here, each row (c, kh, kw) once per slab.
        kb = tid // 32
        jb = tid % 32
        xb = cuda.local.array(LB, np.int64)         # offset of x[n, g*Cg] or -1 past the last column
        ih0 = cuda.local.array(LB, np.int64)
        iw0 = cuda.local.array(LB, np.int64)
        for l in range(LB):
            gj = n0 + jb + 32 * l
            n = gj // P
            p = gj - n * P
            oh = p // OW
            ih0[l] = oh * sh - ph
            iw0[l] = (p - oh * OW) * sw - pw
            xb[l] = (n * C + g * Cg) * H * W if gj < NP else -1
        wb = g * Kg * CRS
        nk = (CRS + BK - 1) // BK
        for t in range(nk + 1):
            if t < nk:
                k0 = t * BK
                for l in range(LA):                 # weights: crs fastest (contiguous rows)
                    e = tid + NT * l
                    gi = m0 + e // BK
                    gk = k0 + e % BK
                    v = ft(0)
                    if gi < Kg and gk < CRS:
                        v = w[uint64(wb + gi * CRS + gk)]
                    ra[l] = v
                gk = k0 + kb                        # patches: output position fastest (ow contiguous in x)
                c = gk // KK                        # compile-time divisors
                rs = gk - c * KK
                r = rs // KW
                dr = r * dh
                ds = (rs - r * KW) * dw
                xc = c * H * W
                for l in range(LB):
                    ih = ih0[l] + dr
                    iw = iw0[l] + ds
                    v = ft(0)
                    if gk < CRS and xb[l] >= 0 and 0 <= ih < H and 0 <= iw < W:
                        v = x[uint64(xb[l] + xc + ih * W + iw)]
                    rb[l] = v
            if t > 0:
                buf = (t - 1) & 1
                mma(As, Bs, buf * BK * LDA + 4 * ty, buf * BK * LDB + 4 * tx, acc, av, bv)
            if t < nk:
                buf = t & 1
                for l in range(LA):
                    e = tid + NT * l
                    put(As, (buf * BK + e % BK) * LDA + e // BK, ra[l])
                for l in range(LB):
                    put(Bs, (buf * BK + kb) * LDB + jb + 32 * l, rb[l])
            cuda.syncthreads()
        yo = cuda.local.array(TN, np.int64)      # offset of y[n, 0, p] for each of this thread's columns
        for j in range(TN):
            gj = n0 + (j // 4) * 64 + 4 * tx + j % 4      # slab_mma's columns
            n = gj // P
            yo[j] = n * K * P + gj - n * P if gj < NP else -1
        for i in range(TM):
            gi = m0 + (i // 4) * 64 + 4 * ty + i % 4      # slab_mma's rows
            if gi < Kg:
                k = g * Kg + gi
                bk = bias[k] if has_bias else ft(0)
                for j in range(TN):
                    if yo[j] >= 0:
                        y[uint64(yo[j] + k * P)] = acc[i, j] + bk

    kernel.tile = (BM, BN)
    return kernel


@functools.cache
def conv2d__igemm2(dtype, KH, KW, tile):
    """conv2d__igemm with the gather cut to a mask test, an add and a load per element (KH*KW <= 62).
    Per output column (n, oh, ow): the offset of x[n, g*Cg, oh*sh-ph, ow*sw-pw] and a bit mask of the taps
    (kh, kw) inside the image, both once before the loop; per slab row (c, kh, kw): c*H*W + a tap offset from
    shared memory, advanced by BK without divisions. Weights: one base offset, + k0 per slab.
    (conv2d__igemm decodes ih, iw and tests four bounds per element, in 64-bit arithmetic, with 3 int64
    arrays per column held in registers.) Also the dx of stride-1 convolutions (conv2d_backward)."""
    TM, TN, min_blocks = TILES[tile]
    BM, BN = 16 * TM, 16 * TN
    LA, LB = BM * BK // NT, BN * BK // NT
    KK = KH * KW
    assert KK <= 62, "tap mask is one int64"
    KSTEP, KREM = BK // KK, BK % KK                     # advancing crs by BK: c += KSTEP, tap += KREM
    RA = NT // BK                                       # rows of the A slab one pass of the block loads
    ft = nbtype(dtype)
    LDA, LDB = BM + PAD, BN + PAD
    SA, SB = (2 * BK * LDA // 4, 4), (2 * BK * LDB // 4, 4)
    mma = slab_mma(dtype, TM, TN)

    @cuda.jit(**kernel_options(min_blocks))
    def kernel(x, w, bias, y, has_bias, N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw, nsplit, kchunk):
        z = cuda.blockIdx.z                             # (group, split): split reduces crs in [kbeg, kend)
        g = z // nsplit
        split = z - g * nsplit
        Cg = C // G
        Kg = K // G
        CRS = Cg * KK
        P = OH * OW
        NP = N * P
        HW = H * W
        kbeg = split * kchunk
        kend = min(CRS, kbeg + kchunk)
        tid = cuda.threadIdx.x
        tx = tid % 16
        ty = tid // 16
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        As = cuda.shared.array(SA, ft, alignment=ALIGN)
        Bs = cuda.shared.array(SB, ft, alignment=ALIGN)
        tapoff = cuda.shared.array(KK, np.int64)        # offset of tap (kh, kw) within an image plane
        acc = cuda.local.array((TM, TN), ft)
        ra = cuda.local.array(LA, ft)
        rb = cuda.local.array(LB, ft)
        av = cuda.local.array(TM, ft)
        bv = cuda.local.array(TN, ft)
        xb = cuda.local.array(LB, np.int64)             # offset of x[n, g*Cg, oh*sh-ph, ow*sw-pw] (may be < 0)
        msk = cuda.local.array(LB, np.int64)            # bit kh*KW+kw: that tap lies inside the image
        if tid < KK:
            tapoff[tid] = (tid // KW) * dh * W + (tid % KW) * dw
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        kb = tid // 32                                  # B: slab row kb, columns jb + 32*l
        jb = tid % 32
        for l in range(LB):
            gj = n0 + jb + 32 * l
            n = gj // P
            p = gj - n * P
            oh = p // OW
            ih = oh * sh - ph
            iw = (p - oh * OW) * sw - pw
            m = 0
            if gj < NP:
                for r in range(KH):
                    for q in range(KW):
                        if 0 <= ih + r * dh < H and 0 <= iw + q * dw < W:
                            m |= 1 << (r * KW + q)
            msk[l] = m
            xb[l] = (n * C + g * Cg) * HW + ih * W + iw
        c = (kbeg + kb) // KK                           # this thread's B row: crs = k0 + kb -> (c, tap)
        tap = kbeg + kb - c * KK
        coff = c * HW
        ka = tid % BK                                   # A: slab column ka, rows ra0 + RA*l
        ra0 = tid // BK
        aoff = g * Kg * CRS + (m0 + ra0) * CRS + ka
        nk = (kend - kbeg + BK - 1) // BK
        cuda.syncthreads()                              # tapoff
        for t in range(nk + 1):
            if t < nk:
                k0 = kbeg + t * BK
                a_ok = k0 + ka < kend
                for l in range(LA):                     # weights: crs fastest (contiguous rows)
                    v = ft(0)
                    if a_ok and m0 + ra0 + RA * l < Kg:
                        v = w[uint64(aoff + k0 + RA * l * CRS)]
                    ra[l] = v
                sel = 1 << tap
                d = coff + tapoff[tap]
                b_ok = k0 + kb < kend
                for l in range(LB):                     # patches: output position fastest
                    v = ft(0)
                    if b_ok and (msk[l] & sel) != 0:
                        v = x[uint64(xb[l] + d)]
                    rb[l] = v
                tap += KREM
                coff += KSTEP * HW
                if tap >= KK:
                    tap -= KK
                    coff += HW
            if t > 0:
                buf = (t - 1) & 1
                mma(As, Bs, buf * BK * LDA + 4 * ty, buf * BK * LDB + 4 * tx, acc, av, bv)
            if t < nk:
                buf = t & 1
                for l in range(LA):
                    put(As, (buf * BK + ka) * LDA + ra0 + RA * l, ra[l])
                for l in range(LB):
                    put(Bs, (buf * BK + kb) * LDB + jb + 32 * l, rb[l])
            cuda.syncthreads()
        yo = cuda.local.array(TN, np.int64)      # offset of y[n, 0, p] for each of this thread's columns
        for j in range(TN):
            gj = n0 + (j // 4) * 64 + 4 * tx + j % 4      # slab_mma's columns
            n = gj // P
            yo[j] = split * NP * K + n * K * P + gj - n * P if gj < NP else -1     # split > 0: partial sums
        for i in range(TM):
            gi = m0 + (i // 4) * 64 + 4 * ty + i % 4      # slab_mma's rows
            if gi < Kg:
                k = g * Kg + gi
                bk = bias[k] if has_bias and split == 0 else ft(0)
                for j in range(TN):
                    if yo[j] >= 0:
                        y[uint64(yo[j] + k * P)] = acc[i, j] + bk

    kernel.tile = (BM, BN)
    return kernel


@cuda.jit
def flip_weights(w, wt, Kg, Cg, KK, G, size):
    """wt[g*Cg + c, k, tap] = w[g*Kg + k, c, KK-1-tap]: the weights of dx as a stride-1 forward convolution."""
    t = cuda.grid(1)
    if t < size:
        tap = t % KK
        k = (t // KK) % Kg
        ci = t // (KK * Kg)
        g = ci // Cg
        wt[t] = w[((g * Kg + k) * Cg + ci - g * Cg) * KK + KK - 1 - tap]


@functools.cache
def conv2d_dw__igemm(dtype, KH, KW, tile):
    """dweight kernel; grid (ceil(CRS/BN), ceil(Kg/BM), G*nsplit), split z reduces q in [z*kchunk, +kchunk)."""
    TM, TN, min_blocks = TILES[tile]
    BM, BN = 16 * TM, 16 * TN
    LA, LB = BM * BK // NT, BN * BK // NT
    KK = KH * KW
    ft = nbtype(dtype)
    LDA, LDB = BM + PAD, BN + PAD                       # shared tiles: 2 buffers x BK rows, flat
    SA, SB = (2 * BK * LDA // 4, 4), (2 * BK * LDB // 4, 4)    # rows of 4 floats: 16-byte shared loads
    mma = slab_mma(dtype, TM, TN)

    @cuda.jit(**kernel_options(min_blocks))
    def kernel(dy, x, part, N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw, nsplit, kchunk):
        z = cuda.blockIdx.z
        g = z // nsplit
        split = z - g * nsplit
        Cg = C // G
        Kg = K // G
        CRS = Cg * KK
        P = OH * OW
        Q = N * P
        tid = cuda.threadIdx.x
        tx = tid % 16
        ty = tid // 16
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        As = cuda.shared.array(SA, ft, alignment=ALIGN)
        Bs = cuda.shared.array(SB, ft, alignment=ALIGN)
        acc = cuda.local.array((TM, TN), ft)
        ra = cuda.local.array(LA, ft)
        rb = cuda.local.array(LB, ft)
        av = cuda.local.array(TM, ft)
        bv = cuda.local.array(TN, ft)
        xoff = cuda.local.array(LB, np.int64)      # per B slot: its (c, kh, kw) decoded once
        dro = cuda.local.array(LB, np.int64)
        dso = cuda.local.array(LB, np.int64)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        kk = tid % BK                               # both operands load with the reduction index fastest
        for l in range(LB):
            gj = n0 + tid // BK + (NT // BK) * l
            c = gj // KK
            rs = gj - c * KK
            r = rs // KW
            xoff[l] = (g * Cg + c) * H * W if gj < CRS else -1
            dro[l] = r * dh - ph
            dso[l] = (rs - r * KW) * dw - pw
        kbeg = split * kchunk
        kend = min(Q, kbeg + kchunk)
        n = (kbeg + kk) // P                        # this thread's first reduction position q = (n, oh, ow)
        p = kbeg + kk - n * P
        oh = p // OW
        ow = p - oh * OW
        nk = (kend - kbeg + BK - 1) // BK
        for t in range(nk + 1):
            if t < nk:
                q = kbeg + t * BK + kk
                q_ok = q < kend
                if t > 0:                           # advance (n, oh, ow) by BK positions: no divisions
                    ow += BK
                    while ow >= OW:
                        ow -= OW
                        oh += 1
                    while oh >= OH:
                        oh -= OH
                        n += 1
                p = oh * OW + ow
                ohs = oh * sh
                ows = ow * sw
                for l in range(LA):                 # dy[n, k, p]
                    gi = m0 + tid // BK + (NT // BK) * l
                    v = ft(0)
                    if q_ok and gi < Kg:
                        v = dy[uint64((n * K + g * Kg + gi) * P + p)]
                    ra[l] = v
                for l in range(LB):                 # x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
                    ih = ohs + dro[l]
                    iw = ows + dso[l]
                    v = ft(0)
                    if q_ok and xoff[l] >= 0 and 0 <= ih < H and 0 <= iw < W:
                        v = x[uint64(n * C * H * W + xoff[l] + ih * W + iw)]
                    rb[l] = v
            if t > 0:
                buf = (t - 1) & 1
                mma(As, Bs, buf * BK * LDA + 4 * ty, buf * BK * LDB + 4 * tx, acc, av, bv)
            if t < nk:
                buf = t & 1
                for l in range(LA):
                    put(As, (buf * BK + kk) * LDA + tid // BK + (NT // BK) * l, ra[l])
                for l in range(LB):
                    put(Bs, (buf * BK + kk) * LDB + tid // BK + (NT // BK) * l, rb[l])
            cuda.syncthreads()
        for i in range(TM):
            gi = m0 + (i // 4) * 64 + 4 * ty + i % 4      # slab_mma's rows
            if gi < Kg:
                for j in range(TN):
                    gj = n0 + (j // 4) * 64 + 4 * tx + j % 4      # slab_mma's columns
                    if gj < CRS:
                        part[uint64((split * K + g * Kg + gi) * CRS + gj)] = acc[i, j]

    kernel.tile = (BM, BN)
    return kernel


@cuda.jit
def sum_splits(part, out, nsplit, size):
    t = cuda.grid(1)
    if t < size:
        s = part[t]
        for z in range(1, nsplit):
            s += part[z * size + t]
        out[t] = s


@cuda.jit
def conv2d_db__reduce(dy, db, N, K, P):
    k = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sm = cuda.shared.array(256, np.float64)          # float64 partial sums: N*P terms per channel
    s = 0.0
    for n in range(N):                                # no division per element (P need not be a multiple of 256)
        base = (n * K + k) * P
        for i in range(tid, P, 256):
            s += dy[base + i]
    sm[tid] = s
    cuda.syncthreads()
    h = 128
    while h > 0:
        if tid < h:
            sm[tid] += sm[tid + h]
        cuda.syncthreads()
        h //= 2
    if tid == 0:
        db[k] = sm[0]


# ---------------------------------------------------------------- launchers
# Every launch goes through _launch.launch (Numba's dispatcher costs ~100 us per launch of these 19-argument
# kernels, longer than the small convolutions run); arrays travel as _launch Views.

FWD_KERNELS = {"igemm": conv2d__igemm2, "igemm1": conv2d__igemm}     # "igemm": the default


def fwd_tile_for(Kg):
    """Forward tile by output channels per group (BM = channels): the fastest conv2d__igemm2 tile for each K
    on the H100 (dev/gpu_conv.py; the timings are in docs/log.md). Also the dx tile, by input channels per
    group."""
    return "64x128/2" if Kg <= 64 else "128x64/2" if Kg < 256 else "128x128"


def dw_tile_for(Kg):
    """dweight tile (BM = channels): with K=64 the 64x128/2 pair was fastest, 128x128 for K >= 128."""
    return "64x128/2" if Kg <= 64 else "128x128"


def _geometry(xd, wd, stride, padding, dilation, groups, out_hw=None):
    """Sizes and normalised pairs; out_hw (OH, OW) when known (checked by fastnn._checks, or dy's shape)."""
    if groups > _fl.GRID_MAX[2]:        # the kernels run one group per blockIdx.z
        raise ValueError(f"conv2d on the GPU takes at most {_fl.GRID_MAX[2]} groups, got groups={groups}")
    (sh, sw), (ph, pw), (dh, dw) = map(pair, (stride, padding, dilation))
    N, C, H, W = map(int, xd.shape)
    K, Cg, KH, KW = map(int, wd.shape)
    OH, OW = (int(n) for n in (out_hw or _out_hw((H, W), (KH, KW), stride, padding, dilation)))
    return N, C, H, W, K, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw


def _launch_igemm(variant, dtype, KH, KW, tile, x, w, b, y, has_bias, N, C, H, W, K, OH, OW, G,
                  sh, sw, ph, pw, dh, dw, kind="numba"):
    """y = conv(x, w) + b with an implicit-GEMM kernel (x: N,C,H,W -> y: N,K,OH,OW; Views or device arrays)."""
    if variant == "igemm1" or KH * KW > 62:
        k = conv2d__igemm(np.dtype(dtype), KH, KW, (tile or fwd_tile_for(K // G)).split(":")[0])  # no split-K
        BM, BN = k.tile
        grid = ((N * OH * OW + BN - 1) // BN, (K // G + BM - 1) // BM, G)
        _fl.launch(k, np.dtype(dtype).char, grid, NT, flat(x), flat(w), flat(b), flat(y), bool(has_bias),
                   N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw)
        return
    tile = tile or fwd_tile_for(K // G)
    nsplit = 1
    if ":s" in tile:                                    # "128x128:s2": the reduction split in 2 (split-K)
        tile, nsplit = tile.split(":s")
        nsplit = int(nsplit)
    k = conv2d__igemm2(np.dtype(dtype), KH, KW, tile)
    BM, BN = k.tile
    CRS = C // G * KH * KW
    kchunk = -(-(-(-CRS // nsplit)) // BK) * BK         # ceil(CRS / nsplit) in whole slabs
    nsplit = -(-CRS // kchunk)
    size = N * K * OH * OW
    part = flat(y) if nsplit == 1 else _fl.empty((nsplit * size,), dtype, kind)[1]
    grid = ((N * OH * OW + BN - 1) // BN, (K // G + BM - 1) // BM, G * nsplit)
    _fl.launch(k, np.dtype(dtype).char, grid, NT, flat(x), flat(w), flat(b), part, bool(has_bias),
               N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw, nsplit, kchunk)
    if nsplit > 1:
        _fl.launch(sum_splits, np.dtype(dtype).char, blocks(size), 256, part, flat(y), nsplit, size)


def _forward(xv, wv, bv, stride, padding, dilation, groups, variant, tile, kind, out_hw=None):
    """(caller-type array or None, View) of y."""
    N, C, H, W, K, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw = _geometry(xv, wv, stride, padding, dilation, groups,
                                                                      out_hw)
    dt = xv.dtype
    y = _fl.empty((N, K, OH, OW), dt, kind)
    has_bias = bv is not None
    bv = bv if has_bias else _dummy(dt)
    if variant == "naive":
        conv2d__naive[blocks(N * K * OH * OW), 256](xv.device(), wv.device(), bv.device(), y[1].device(),
                                                   has_bias, groups, sh, sw, ph, pw, dh, dw)
        return y
    _launch_igemm(variant, dt, KH, KW, tile, xv, wv, bv, y[1], has_bias, N, C, H, W, K, OH, OW, groups,
                  sh, sw, ph, pw, dh, dw, kind)
    return y


def conv2d_forward_device(xd, wd, bd, stride, padding, dilation, groups, variant="igemm", tile=None,
                          kind="numba"):
    """y as a Numba device array; `kind` picks the allocator (the caller's library when it has a caching one)."""
    v = _fl.view
    return _forward(v(xd), v(wd), v(bd), stride, padding, dilation, groups, variant, tile, kind)[1].device()


def _backward(dyv, xv, wv, stride, padding, dilation, groups, variant="igemm", dx_tile=None, dw_tile=None,
              kind="numba", nsplit=None, dx_variant=None):
    """(dx, dweight, dbias) as (caller-type array or None, View) pairs.
    dx_variant: "igemm" (stride 1: a forward implicit GEMM over dy with flipped weights, the default there)
    or "gemm_col2im" (W^T dy into a col buffer, then col2im; any stride)."""
    N, C, H, W, K, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw = _geometry(xv, wv, stride, padding, dilation, groups,
                                                                      dyv.shape[2:])
    G, Cg, Kg, P = groups, C // groups, K // groups, OH * OW
    KK = KH * KW
    CRS = Cg * KK
    dt = xv.dtype
    ch = dt.char
    dx = _fl.empty((N, C, H, W), dt, kind)
    dwt = _fl.empty((K, Cg, KH, KW), dt, kind)
    db = _fl.empty((K,), dt, kind)
    _fl.launch(conv2d_db__reduce, ch, K, 256, flat(dyv), db[1], N, K, P)
    if variant == "naive":
        conv2d_dx__naive[blocks(N * C * H * W), 256](dyv.device(), wv.device(), dx[1].device(),
                                                     G, sh, sw, ph, pw, dh, dw)
        conv2d_dw__naive[blocks(K * CRS), 256](dyv.device(), xv.device(), dwt[1].device(),
                                               G, sh, sw, ph, pw, dh, dw)
        return dx, dwt, db
    if dx_variant is None:
        dx_variant = "igemm" if sh == 1 and sw == 1 and KK <= 62 else "gemm_col2im"
    if dx_variant == "igemm":
        # dx[n,c,ih,iw] = sum_{k,kh,kw} W[k,c,kh,kw] dy[n,k,ih+ph-kh*dh,iw+pw-kw*dw]: the stride-1 forward
        # convolution of dy with W flipped and transposed, padding dh*(KH-1)-ph; no col buffer, no col2im
        assert sh == 1 and sw == 1
        wt = _fl.empty((C * Kg * KK,), dt, kind)
        _fl.launch(flip_weights, ch, blocks(wt[1].size), 256, flat(wv), wt[1], Kg, Cg, KK, G, wt[1].size)
        _launch_igemm("igemm", dt, KH, KW, dx_tile, dyv, wt[1], _dummy(dt), dx[1], False, N, K, OH, OW, C, H, W,
                      G, 1, 1, dh * (KH - 1) - ph, dw * (KW - 1) - pw, dh, dw, kind)
    else:
        # col[n, g] = W_g^T (CRS x Kg) @ dy[n, g] (Kg x P), batched over z = n*G + g; then the gather
        col = _fl.empty((N * C * KK * P,), dt, kind)
        launch_tiled(flat(wv), flat(dyv), col[1], CRS, P, Kg, CRS, P, P, ta=True, tb=False, batch=N * G, G=G,
                     sa=(0, Kg * CRS), sb=(K * P, Kg * P), sc=(C * KK * P, CRS * P), tile=dx_tile)
        launch_col2im(col[1], flat(dx[1]), N, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw,
                      (C * KK * P, P, 1))
    # dweight: implicit GEMM, split-K so that a small output still fills the GPU
    k = conv2d_dw__igemm(np.dtype(dt), KH, KW, dw_tile or dw_tile_for(Kg))
    BM, BN = k.tile
    tiles = ((CRS + BN - 1) // BN) * ((Kg + BM - 1) // BM) * G
    Q = N * P
    if nsplit is None:                                     # ~4 blocks per SM on 132 SMs, >= 512 terms each
        nsplit = max(1, min(-(-528 // tiles), Q // 512))
    kchunk = -(-(-(-Q // nsplit)) // BK) * BK             # ceil(Q / nsplit), rounded up to whole slabs
    nsplit = -(-Q // kchunk)                               # no empty split
    size = K * CRS
    part = flat(dwt[1]) if nsplit == 1 else _fl.empty((nsplit * size,), dt, kind)[1]
    _fl.launch(k, ch, (-(-CRS // BN), -(-Kg // BM), G * nsplit), NT, flat(dyv), flat(xv), part,
               N, C, H, W, K, OH, OW, G, sh, sw, ph, pw, dh, dw, nsplit, kchunk)
    if nsplit > 1:
        _fl.launch(sum_splits, ch, blocks(size), 256, part, flat(dwt[1]), nsplit, size)
    return dx, dwt, db


def conv2d_backward_device(dyd, xd, wd, stride, padding, dilation, groups, variant="igemm",
                           dx_tile=None, dw_tile=None, kind="numba", nsplit=None, dx_variant=None):
    """(dx, dweight, dbias) as Numba device arrays."""
    v = _fl.view
    outs = _backward(v(dyd), v(xd), v(wd), stride, padding, dilation, groups, variant, dx_tile, dw_tile, kind,
                     nsplit, dx_variant)
    return tuple(o[1].device() for o in outs)


# ---------------------------------------------------------------- public functions (backend contract)
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, variant="igemm", tile=None,
           out_hw=None):
    kind = kind_of(x)
    v = _fl.view
    y = _forward(v(x), v(weight), v(bias), stride, padding, dilation, int(groups), variant, tile, kind, out_hw)
    return _fl.result(y, kind)


def conv2d_backward(dy, x, weight, stride=1, padding=0, dilation=1, groups=1, variant="igemm", dx_variant=None):
    kind = kind_of(dy, x)
    v = _fl.view
    outs = _backward(v(dy), v(x), v(weight), stride, padding, dilation, int(groups), variant, kind=kind,
                     dx_variant=dx_variant)
    return tuple(_fl.result(o, kind) for o in outs)
