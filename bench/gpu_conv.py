"""fastnn cuda conv2d on a real GPU: correctness at realistic sizes, then timings against cuDNN (PyTorch).

    python3 bench/gpu_conv.py [--reps 20] [--fwd-tiles auto,64x64,128x128] [--dx-tiles ...] [--dw-tiles ...]

Prints, per shape: TFLOP/s of each fastnn variant and of cuDNN (TF32 off), and the ratio fastnn/cuDNN; plus
the two ceilings (device copy, cuBLAS sgemm) and each kernel's registers / local memory (spills).
Times are the median of CUDA-event timings of single calls after warm-up; both sides see the same inputs.
"auto" is the tile the library picks (conv2d.fwd_tile_for / dw_tile_for, gemm.pick_tile); dx/dw tiles pair up.

Measured 2026-11-22 on the lent H100 (device copy 2.85 TB/s, cuBLAS sgemm 50.6 TFLOP/s), best tile per shape:
  shape N,C,H,W,K,R,S,s,p     fwd ms (TFLOP/s)  cuDNN ms   x cuDNN | dx+dw+db ms  cuDNN dx+dw  x cuDNN
  32,64,56,56,64,3,3,1,1      0.736 (10.0)      0.280      0.38    | 1.811        0.544        0.30
  32,128,28,28,128,3,3,1,1    0.718 (10.3)      0.170      0.24    | 1.594        0.374        0.23
  32,256,14,14,256,3,3,1,1    0.729 (10.2)      0.200      0.27    | 1.407        0.445        0.32
"""
import argparse
import importlib
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
C = importlib.import_module("fastnn.cuda.conv2d")
gemm = importlib.import_module("fastnn.cuda.gemm")
from numba import cuda  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True

SHAPES = [  # N, C, H, W, K, R, S, stride, pad
    (32, 64, 56, 56, 64, 3, 3, 1, 1),
    (32, 128, 28, 28, 128, 3, 3, 1, 1),
    (32, 256, 14, 14, 256, 3, 3, 1, 1),
]


def bench(fn, reps, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(ts)


def poison():
    """Fill the allocator's free blocks with NaN so that an unwritten output element shows up."""
    t = torch.full((torch.cuda.mem_get_info()[0] // 8 // 4,), float("nan"), device="cuda")
    del t


def close(out, ref, L, eps):
    """|out-ref| <= atol + rtol*|ref|, with rtol = 4*sqrt(L)*eps and atol = rtol*max|ref| (L = sum length)."""
    out, ref = out.double(), ref.double()
    rtol = 4 * (L ** 0.5) * eps
    atol = rtol * ref.abs().max().item()
    err = (out - ref).abs()
    ok = bool(torch.all(err <= atol + rtol * ref.abs()).item()) and not torch.isnan(out).any().item()
    return ok, (err.max() / ref.abs().max()).item()


def resources(k):
    """Registers, local memory (bytes per thread: spills or a local array) and LDL/STL count in the SASS."""
    try:
        regs = list(k.get_regs_per_thread().values())[0]
        loc = list(k.get_local_mem_per_thread().values())[0]
        try:
            sass = list(k.inspect_sass().values())[0]
            spills = sass.count("LDL") + sass.count("STL")
        except Exception:
            spills = "?"
        return f"regs {regs} local {loc}B ldl/stl {spills}"
    except Exception as e:  # pragma: no cover - reporting only
        return f"({e})"


def auto(tile):
    return None if tile == "auto" else tile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--fwd-tiles", default="auto,64x64,128x128")
    ap.add_argument("--dx-tiles", default="auto,128x128")
    ap.add_argument("--dw-tiles", default="auto,128x128")
    ap.add_argument("--gemm-tiles", default="64x64,128x128")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
    lines = []

    # ceilings: device copy and cuBLAS sgemm (TF32 off)
    a = torch.empty(256 * 2**20 // 4, device=dev)
    b = torch.empty_like(a)
    t = bench(lambda: b.copy_(a), args.reps)
    lines.append(f"device copy: {2 * a.numel() * 4 / t / 1e12:.2f} TB/s")
    n = 4096
    A, B = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    tc = bench(lambda: A @ B, args.reps)
    lines.append(f"cuBLAS sgemm n={n}: {2 * n**3 / tc / 1e12:.1f} TFLOP/s")
    ref = (A.double() @ B.double())
    for tile in args.gemm_tiles.split(","):
        Cm = torch.empty(n, n, device=dev)
        ad, bd, cd = cuda.as_cuda_array(A), cuda.as_cuda_array(B), cuda.as_cuda_array(Cm)
        f = lambda: gemm.matmul(ad, bd, cd, variant=tile)  # noqa: E731
        f()
        ok, rel = close(Cm, ref, n, 2.0**-24)
        tg = bench(f, args.reps)
        k = gemm.gemm__tiled(np.dtype(np.float32), False, False, tile)
        lines.append(f"fastnn gemm {tile}: {2 * n**3 / tg / 1e12:.1f} TFLOP/s ({tc / tg:.2f} x cuBLAS) "
                     f"ok={ok} rel={rel:.1e} | {resources(k)}")
    del A, B, ref

    hdr = f"{'shape N,C,H,W,K,R,S,s,p':28s} {'op':9s} {'variant':14s} {'ms':>8s} {'TFLOP/s':>8s} {'x cuDNN':>8s} ok"
    rows = [hdr]
    for (N, Cc, H, W, K, R, S, st, pd) in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(N, Cc, H, W, device=dev)
        w = torch.randn(K, Cc, R, S, device=dev) / (Cc * R * S) ** 0.5
        bias = torch.randn(K, device=dev)
        y_ref = torch.nn.functional.conv2d(x.double(), w.double(), bias.double(), st, pd)
        OH, OW = y_ref.shape[2:]
        flops = 2.0 * N * K * OH * OW * Cc * R * S
        name = f"{N},{Cc},{H},{W},{K},{R},{S},{st},{pd}"
        t_cudnn = bench(lambda: torch.nn.functional.conv2d(x, w, bias, st, pd), args.reps)
        rows.append(f"{name:28s} {'fwd':9s} {'cuDNN':14s} {t_cudnn*1e3:8.3f} {flops/t_cudnn/1e12:8.1f} {1:8.2f}")
        for tile in args.fwd_tiles.split(","):
            f = lambda: C.conv2d_forward_device(cuda.as_cuda_array(x), cuda.as_cuda_array(w),  # noqa: E731
                                                cuda.as_cuda_array(bias), st, pd, 1, 1, tile=auto(tile),
                                                kind="torch")
            poison()
            y = torch.as_tensor(f(), device="cuda")
            ok, rel = close(y, y_ref, Cc * R * S, 2.0**-24)
            tt = bench(f, args.reps)
            rows.append(f"{'':28s} {'fwd':9s} {'igemm '+tile:14s} {tt*1e3:8.3f} {flops/tt/1e12:8.1f} "
                        f"{t_cudnn/tt:8.2f} {ok} {rel:.1e}")
        del y_ref
        # backward: cuDNN's dx and dweight separately
        dy = torch.randn(N, K, OH, OW, device=dev)
        xd64, wd64 = x.double(), w.double()
        dx_ref = torch.nn.grad.conv2d_input(x.shape, wd64, dy.double(), st, pd)
        dw_ref = torch.nn.grad.conv2d_weight(xd64, w.shape, dy.double(), st, pd)
        db_ref = dy.double().sum((0, 2, 3))
        t_dx = bench(lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, st, pd), args.reps)
        t_dw = bench(lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, st, pd), args.reps)
        rows.append(f"{'':28s} {'dx':9s} {'cuDNN':14s} {t_dx*1e3:8.3f} {flops/t_dx/1e12:8.1f} {1:8.2f}")
        rows.append(f"{'':28s} {'dweight':9s} {'cuDNN':14s} {t_dw*1e3:8.3f} {flops/t_dw/1e12:8.1f} {1:8.2f}")
        dyd, xd, wd = cuda.as_cuda_array(dy), cuda.as_cuda_array(x), cuda.as_cuda_array(w)
        for dxt, dwt in zip(args.dx_tiles.split(","), args.dw_tiles.split(",")):
            f = lambda: C.conv2d_backward_device(dyd, xd, wd, st, pd, 1, 1, dx_tile=auto(dxt),  # noqa: E731
                                                 dw_tile=auto(dwt), kind="torch")
            poison()
            dx, dwg, db = (torch.as_tensor(o, device="cuda") for o in f())
            okx, relx = close(dx, dx_ref, K * R * S, 2.0**-24)
            okw, relw = close(dwg, dw_ref, N * OH * OW, 2.0**-24)
            okb, relb = close(db, db_ref, N * OH * OW, 2.0**-24)
            tt = bench(f, args.reps)
            rows.append(f"{'':28s} {'dx+dw+db':9s} {dxt+'/'+dwt:14s} {tt*1e3:8.3f} {2*flops/tt/1e12:8.1f} "
                        f"{(t_dx+t_dw)/tt:8.2f} {okx and okw and okb} {max(relx, relw, relb):.1e}")
            # the dx GEMM on its own (the rest of the backward: col2im, dweight, dbias)
            col = torch.empty(N * Cc * R * S * OH * OW, device=dev)
            colD = cuda.as_cuda_array(col)
            CRS = Cc * R * S
            P = OH * OW
            g1 = lambda: gemm.launch_tiled(gemm.flat(wd), gemm.flat(dyd), colD, CRS, P, K, CRS, P, P,  # noqa
                                           ta=True, batch=N, sb=(K * P, 0), sc=(CRS * P, 0), tile=auto(dxt))
            tg1 = bench(g1, args.reps)
            rows.append(f"{'':28s} {'  dx gemm':9s} {dxt:14s} {tg1*1e3:8.3f} {flops/tg1/1e12:8.1f}")
            del col
        torch.cuda.empty_cache()
    for key, fn in (("fwd", C.conv2d__igemm), ("dw", C.conv2d_dw__igemm)):
        for tile in (args.fwd_tiles if key == "fwd" else args.dw_tiles).split(","):
            if tile != "auto":
                lines.append(f"{key} igemm {tile}: {resources(fn(np.dtype(np.float32), 3, 3, tile))}")
    for tile in args.dx_tiles.split(","):
        if tile != "auto":
            lines.append(f"dx gemm(ta) {tile}: {resources(gemm.gemm__tiled(np.dtype(np.float32), True, False, tile))}")
    print("\n".join(lines))
    print("\n".join(rows))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"total {time.time() - t0:.0f} s")
