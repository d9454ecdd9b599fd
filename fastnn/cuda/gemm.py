"""GEMM on Numba device arrays: out = op(a) @ op(b) + beta*out, float32 or float64 (no fast-math).

Versions, in order:
  gemm__tiled        a BMxBN block tile; BK-deep slabs of A and B staged in shared memory, double buffered,
                     the next slab prefetched into registers while this one is used (hides global latency);
                     each thread keeps TMxTN outputs in registers -> TM+TN shared loads feed TM*TN FMAs.
                     slab_mma, its inner product, is shared with the conv2d implicit GEMMs: 128-bit shared
                     loads and a hand-unrolled slab (a quarter of the load instructions, no loop counter).
It is also batched (blockIdx.z), which conv2d_backward uses for W^T @ dy per (image, group), and
launch_split_k uses for split-K: the skinny LSTM GEMMs (64x512 @ 512x2048 filled 32 of 132 SMs) run as
4-16 reduction slices whose sum the consumer kernel forms. Every launch goes through _launch.launch.
The tile is picked by pick_tile; what the tiles measured on the H100 against cuBLAS is in docs/log.md.
"""
import functools

import numpy as np
from numba import config, cuda, float32, float64, uint64

from . import _launch as _fl

NT = 256          # threads per block: a 16x16 grid of threads, each owning a TMxTN block of outputs
BK = 8            # depth of one shared-memory slab
PAD = 4           # row padding of the shared tiles: slab stores with k fastest hit 32 distinct banks
# tile name "BMxBN" or "BMxBN/B" -> (TM, TN, B): a 16*TM x 16*TN block tile, TMxTN outputs per thread; with /B
# the compiler must fit B blocks per SM (a register cap of 65536 / (256*B), launch_bounds), else it is free
TILES = {"64x64": (4, 4, None), "128x128": (8, 8, None), "128x64": (8, 4, None), "64x128": (4, 8, None),
         "64x64/3": (4, 4, 3), "64x128/2": (4, 8, 2), "128x64/2": (8, 4, 2)}
DEFAULT_TILE = "64x64"


def pick_tile(M, N, batch=1):
    """128x128 tiles ran fastest on the H100 (26.7 vs 19.4 TFLOP/s for 64x64 at n=4096, dev/gpu_conv.py)
    when there are enough of them to fill its 132 SMs; smaller problems keep 64x64 for more blocks."""
    return "128x128" if batch * -(-M // 128) * -(-N // 128) >= 132 else DEFAULT_TILE
INLINE = {} if config.ENABLE_CUDASIM else {"forceinline": True}   # the simulator lacks these options
ALIGN = None if config.ENABLE_CUDASIM else 16


def kernel_options(min_blocks):
    if min_blocks is None or config.ENABLE_CUDASIM:
        return {"fastmath": False}
    return {"fastmath": False, "launch_bounds": (NT, min_blocks)}


def nbtype(dtype):
    return float32 if np.dtype(dtype) == np.float32 else float64


@cuda.jit(device=True, **INLINE)
def put(tile, f, v):
    """tile[f] = v for flat index f of a shared tile stored as rows of 4 (see slab_mma)."""
    tile[uint64(f >> 2), uint64(f & 3)] = v


@functools.cache
def slab_mma(dtype, TM, TN):
    """Device function: acc += (one BK-deep slab of As)^T (the slab of Bs) for this thread's TMxTN outputs.
    A thread owns rows 4*ty + {0..3} (+64 per further group of four) and the same pattern of columns, so its
    operands are runs of 4 contiguous, 16-byte aligned floats: 128-bit shared loads, a quarter of the
    instructions of scalar ones. a, b: offset of (row 4*ty, col 4*tx) in the current buffer. Indices are
    unsigned so that Numba drops its negative-index wrap-around and the loads become [register + immediate]."""
    LDA, LDB = 16 * TM + PAD, 16 * TN + PAD

    @cuda.jit(device=True, **INLINE)
    def step(As, Bs, a, b, acc, av, bv):
        for i in range(TM):
            av[i] = As[uint64(a // 4 + (i // 4) * 16), i % 4]
        for j in range(TN):
            bv[j] = Bs[uint64(b // 4 + (j // 4) * 16), j % 4]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = cuda.fma(av[i], bv[j], acc[i, j])

    assert BK == 8
    @cuda.jit(device=True, **INLINE)
    def mma(As, Bs, a, b, acc, av, bv):
        # unrolled by hand: Numba's range(BK) stays a loop (LLVM unrolls it only 2x) whose counter costs
        # about 10 instructions per 16 FMAs at the 64x64 tile
        step(As, Bs, a, b, acc, av, bv)
        step(As, Bs, a + LDA, b + LDB, acc, av, bv)
        step(As, Bs, a + 2 * LDA, b + 2 * LDB, acc, av, bv)
        step(As, Bs, a + 3 * LDA, b + 3 * LDB, acc, av, bv)
        step(As, Bs, a + 4 * LDA, b + 4 * LDB, acc, av, bv)
        step(As, Bs, a + 5 * LDA, b + 5 * LDB, acc, av, bv)
        step(As, Bs, a + 6 * LDA, b + 6 * LDB, acc, av, bv)
        step(As, Bs, a + 7 * LDA, b + 7 * LDB, acc, av, bv)
    return mma


@functools.cache
def gemm__tiled(dtype, ta, tb, tile=DEFAULT_TILE):
    """Kernel for C[z] = op(A[z]) @ op(B[z]) + beta*C[z] on flat arrays; batch z -> offset (z//G)*s1 + (z%G)*s2.
    ta/tb are compile-time, so each operand is loaded with its contiguous index fastest (coalesced)."""
    TM, TN, min_blocks = TILES[tile]
    BM, BN = 16 * TM, 16 * TN
    LA, LB = BM * BK // NT, BN * BK // NT       # slab elements each thread loads per step
    ft = nbtype(dtype)
    LDA, LDB = BM + PAD, BN + PAD                       # shared tiles: 2 buffers x BK rows, flat
    SA, SB = (2 * BK * LDA // 4, 4), (2 * BK * LDB // 4, 4)    # rows of 4 floats: 16-byte shared loads
    mma = slab_mma(dtype, TM, TN)

    @cuda.jit(**kernel_options(min_blocks))
    def kernel(a, b, c, M, N, K, lda, ldb, ldc, G, sa1, sa2, sb1, sb2, sc1, sc2, beta, y0, z0):
        z = cuda.blockIdx.z + z0                # y0, z0: where this launch starts (see launch_tiled)
        oa = (z // G) * sa1 + (z % G) * sa2
        ob = (z // G) * sb1 + (z % G) * sb2
        oc = (z // G) * sc1 + (z % G) * sc2
        tid = cuda.threadIdx.x
        tx = tid % 16
        ty = tid // 16
        m0 = (cuda.blockIdx.y + y0) * BM
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
        nk = (K + BK - 1) // BK
        for t in range(nk + 1):
            # 1. fetch slab t from global memory into registers
            if t < nk:
                k0 = t * BK
                for l in range(LA):
                    e = tid + NT * l
                    if ta:                       # A stored K x M: m fastest
                        ii = e % BM
                        kk = e // BM
                    else:                        # A stored M x K: k fastest
                        kk = e % BK
                        ii = e // BK
                    gi = m0 + ii
                    gk = k0 + kk
                    v = ft(0)
                    if gi < M and gk < K:
                        v = a[uint64(oa + gk * lda + gi)] if ta else a[uint64(oa + gi * lda + gk)]
                    ra[l] = v
                for l in range(LB):
                    e = tid + NT * l
                    if tb:                       # B stored N x K: k fastest
                        kk = e % BK
                        jj = e // BK
                    else:                        # B stored K x N: n fastest
                        jj = e % BN
                        kk = e // BN
                    gj = n0 + jj
                    gk = k0 + kk
                    v = ft(0)
                    if gj < N and gk < K:
                        v = b[uint64(ob + gj * ldb + gk)] if tb else b[uint64(ob + gk * ldb + gj)]
                    rb[l] = v
            # 2. multiply slab t-1 (already in shared memory) while the loads above are in flight
            if t > 0:
                buf = (t - 1) & 1
                mma(As, Bs, buf * BK * LDA + 4 * ty, buf * BK * LDB + 4 * tx, acc, av, bv)
            # 3. store slab t into the other buffer; one barrier per slab suffices with two buffers
            if t < nk:
                buf = t & 1
                for l in range(LA):
                    e = tid + NT * l
                    if ta:
                        ii = e % BM
                        kk = e // BM
                    else:
                        kk = e % BK
                        ii = e // BK
                    put(As, (buf * BK + kk) * LDA + ii, ra[l])
                for l in range(LB):
                    e = tid + NT * l
                    if tb:
                        kk = e % BK
                        jj = e // BK
                    else:
                        jj = e % BN
                        kk = e // BN
                    put(Bs, (buf * BK + kk) * LDB + jj, rb[l])
            cuda.syncthreads()
        for i in range(TM):
            gi = m0 + (i // 4) * 64 + 4 * ty + i % 4      # the rows/cols slab_mma gave this thread
            if gi < M:
                for j in range(TN):
                    gj = n0 + (j // 4) * 64 + 4 * tx + j % 4
                    if gj < N:
                        idx = uint64(oc + gi * ldc + gj)
                        v = acc[i, j]
                        if beta != 0:            # BLAS semantics: beta == 0 never reads out (may hold NaN)
                            v += beta * c[idx]
                        c[idx] = v

    kernel.tile = (BM, BN)
    return kernel


def launch_tiled(a, b, c, M, N, K, lda, ldb, ldc, ta=False, tb=False, beta=0.0, batch=1, G=1,
                 sa=(0, 0), sb=(0, 0), sc=(0, 0), tile=None):
    """Run gemm__tiled on flat (1-D) device arrays or _launch Views; batch = number of z slices
    (z//G, z%G pick the offsets). Launched through _launch.launch: Numba's dispatcher costs ~100 us a call.
    Row tiles or batch slices beyond the grid's y/z limits (65535: a depthwise backward with N*G > 65535 slices
    has them) run as several launches."""
    k = gemm__tiled(np.dtype(c.dtype), bool(ta), bool(tb), tile or pick_tile(M, N, batch))
    BM, BN = k.tile
    ny, (_, ymax, zmax) = (M + BM - 1) // BM, _fl.GRID_MAX
    for z0 in range(0, batch, zmax):
        for y0 in range(0, ny, ymax):
            grid = ((N + BN - 1) // BN, min(ymax, ny - y0), min(zmax, batch - z0))
            _fl.launch(k, c.dtype.char, grid, NT, a, b, c, M, N, K, lda, ldb, ldc, G, sa[0], sa[1], sb[0], sb[1],
                       sc[0], sc[1], c.dtype.type(beta), y0, z0)


def split_k_for(M, N, K, tile="64x64"):
    """How many K-chunks a skinny GEMM should be split into so that ~132+ blocks run (the H100 has 132 SMs);
    a divisor of K that leaves whole 8-deep slabs, 1 when the output alone fills the GPU."""
    BM, BN = 16 * TILES[tile][0], 16 * TILES[tile][1]
    blocks_ = -(-M // BM) * -(-N // BN)
    best = 1
    for s in (2, 4, 8, 16):
        if blocks_ * best >= 132 or K % (s * BK) or K // s < 64:
            break
        best = s
    return best


def launch_split_k(a, b, part, M, N, K, split, ta=False, tb=False, tile="64x64"):
    """part[z] = op(A)[:, z*K/split : ...] @ op(B)[z*K/split : ..., :] for z < split: a skinny GEMM's reduction
    cut into `split` slices that run as the batch of gemm__tiled (skinny LSTM GEMMs: 32 -> 128 blocks); the
    consumer sums the slices (the LSTM pointwise kernels do, for free). a, b: 2-D row-major, part: flat."""
    kc = K // split
    lda, ldb = a.shape[1], b.shape[1]
    sa = kc * lda if ta else kc                     # where slice z of op(a) starts
    sb = kc if tb else kc * ldb
    launch_tiled(_flat(a), _flat(b), part, M, N, kc, lda, ldb, N, ta, tb, batch=split,
                 sa=(sa, 0), sb=(sb, 0), sc=(M * N, 0), tile=tile)


def _flat(d):
    """A 1-D View of a C-contiguous Numba device array or View (no Numba array is built)."""
    if isinstance(d, _fl.View):
        return d.reshape(d.size)
    return _fl.View(d, _fl._ptr(d), (d.size,), d.dtype)


flat = _flat


def matmul(a, b, out=None, trans_a=False, trans_b=False, beta=0.0, variant=None):
    """out = op(a) @ op(b) + beta*out on 2-D C-contiguous Numba device arrays (float32/float64); returns out.
    variant: None or "tiled" (tile picked by size), or a tile name from TILES. (NumPy is the reference.)"""
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is {M}x{K}, op(b) is {Kb}x{N}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a is {a.dtype}, b is {b.dtype}")
    if out is None:
        if beta != 0:
            raise ValueError("matmul: beta != 0 needs out")
        out = cuda.device_array((M, N), dtype=a.dtype)
    elif tuple(out.shape) != (M, N) or out.dtype != a.dtype:
        raise ValueError(f"matmul: out must be ({M}, {N}) {a.dtype}, got {tuple(out.shape)} {out.dtype}")
    if M == 0 or N == 0:
        return out
    launch_tiled(_flat(a), _flat(b), _flat(out), M, N, K, a.shape[1], b.shape[1], N, trans_a, trans_b, beta,
                 tile=None if variant in (None, "tiled") else variant)
    return out
