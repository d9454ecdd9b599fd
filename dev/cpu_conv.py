"""Dev timing for the C++ conv2d/gemm kernels against PyTorch CPU, side by side in one process.

    PYTHONPATH=. python dev/cpu_conv.py [--threads 2] [--reps 5] [--bwd] [--f64] [--cpu-time]

Each case times fastnn and torch in alternating blocks of calls and keeps the best (the machine is shared; the best
time is the least disturbed one). --cpu-time runs one thread and measures the calling thread's CPU time
(time.thread_time), which time slices lost to other processes do not inflate: the stable number on a loaded box. GFLOP/s counts 2*N*K*OH*OW*C/groups*KH*KW per pass (backward: 2 passes, dx + dweight)."""
import argparse
import time

import numpy as np

from fastnn import _C

SHAPES = [  # N, C, H, W, K, R, S, stride, pad
    (100, 1, 28, 28, 30, 5, 5, 1, 0),
    (32, 64, 56, 56, 64, 3, 3, 1, 1),
    (32, 128, 28, 28, 128, 3, 3, 1, 1),
    (32, 256, 14, 14, 256, 3, 3, 1, 1),
    (8, 3, 224, 224, 64, 7, 7, 2, 3),
    (32, 256, 14, 14, 64, 1, 1, 1, 0),
]


CLOCK = time.perf_counter


def best(fns, reps):
    """Best time of each function. Each function runs in its own block of calls (after a warm-up call), blocks
    alternate over two rounds: thread pools (torch's OpenMP, OpenBLAS) keep their threads spinning after a call, so
    calls interleaved one by one would time fastnn against torch's (or OpenBLAS's) spinning threads and vice versa."""
    t = [float("inf")] * len(fns)
    for _ in range(2):
        for i, f in enumerate(fns):
            f()  # warm-up: allocations, packing buffers, waking the thread pool
            for _ in range(max(1, reps // 2)):
                t0 = CLOCK()
                f()
                t[i] = min(t[i], CLOCK() - t0)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bwd", action="store_true", help="also time the backward (dx, dweight, dbias)")
    ap.add_argument("--f64", action="store_true")
    ap.add_argument("--only", type=int, default=None, help="index of one shape")
    ap.add_argument("--cpu-time", action="store_true", help="1 thread, CPU time of the calling thread")
    ap.add_argument("--im2col", action="store_true", help="time im2col/col2im against the NumPy reference instead")
    args = ap.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK, args.threads = time.thread_time, 1
        import threadpoolctl
        threadpoolctl.threadpool_limits(1)  # numpy's BLAS for the sgemm line
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    _C.set_num_threads(args.threads)
    dt = np.float64 if args.f64 else np.float32
    rng = np.random.default_rng(0)
    if args.im2col:
        return bench_im2col(args, dt, rng)

    n = 2048
    A, B = rng.standard_normal((n, n)).astype(dt), rng.standard_normal((n, n)).astype(dt)
    C = np.empty((n, n), dt)
    tf, tn = best([lambda: _C.gemm(False, False, A, B, C, 1.0, 0.0), lambda: A @ B], max(4, args.reps))
    clock = "CPU time" if args.cpu_time else "wall clock"
    print(f"[{clock}] gemm {n}^3 {np.dtype(dt).name}, {args.threads} threads: fastnn {2 * n**3 / tf / 1e9:.0f} GFLOP/s, "
          f"numpy {2 * n**3 / tn / 1e9:.0f} GFLOP/s  (fastnn simd={_C.config()['simd']})")

    print(f"{'shape (N,C,H,W,K,R,S,s,p)':34} {'pass':4} {'fastnn ms':>10} {'torch ms':>9} {'speedup':>8} {'GFLOP/s':>8}")
    for i, (N, Cc, H, W, K, R, S, st, pd) in enumerate(SHAPES):
        if args.only is not None and i != args.only:
            continue
        x = rng.standard_normal((N, Cc, H, W)).astype(dt)
        w = (rng.standard_normal((K, Cc, R, S)) / np.sqrt(Cc * R * S)).astype(dt)
        b = rng.standard_normal(K).astype(dt)
        OH, OW = (H + 2 * pd - R) // st + 1, (W + 2 * pd - S) // st + 1
        flop = 2.0 * N * K * OH * OW * Cc * R * S
        y = np.empty((N, K, OH, OW), dt)
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        s2, p2, d2 = (st, st), (pd, pd), (1, 1)

        def f_fwd():
            _C.conv2d_fwd(x, w, b, np.empty_like(y), s2, p2, d2, 1)

        def t_fwd():
            with torch.no_grad():
                F.conv2d(tx, tw, tb, st, pd)

        ta, tt = best([f_fwd, t_fwd], args.reps)
        name = str((N, Cc, H, W, K, R, S, st, pd))
        print(f"{name:34} fwd  {ta * 1e3:10.2f} {tt * 1e3:9.2f} {tt / ta:7.2f}x {flop / ta / 1e9:8.1f}")
        if not args.bwd:
            continue
        dy = rng.standard_normal(y.shape).astype(dt)
        gx, gw, gb = (tx.clone().requires_grad_(), tw.clone().requires_grad_(), tb.clone().requires_grad_())
        ty = F.conv2d(gx, gw, gb, st, pd)
        tdy = torch.from_numpy(dy)

        def f_bwd():
            _C.conv2d_bwd(dy, x, w, np.empty_like(x), np.empty_like(w), np.empty(K, dt), s2, p2, d2, 1)

        def t_bwd():
            torch.autograd.grad(ty, (gx, gw, gb), tdy, retain_graph=True)

        ta, tt = best([f_bwd, t_bwd], args.reps)
        print(f"{name:34} bwd  {ta * 1e3:10.2f} {tt * 1e3:9.2f} {tt / ta:7.2f}x {2 * flop / ta / 1e9:8.1f}")


def bench_im2col(args, dt, rng):
    from fastnn import reference as ref
    print(f"im2col/col2im, {args.threads} threads, {np.dtype(dt).name}: fastnn vs the NumPy reference "
          f"(GB/s = bytes of col written or read, once)")
    print(f"{'shape (N,C,H,W,R,S,s,p)':30} {'op':7} {'fastnn ms':>10} {'numpy ms':>9} {'speedup':>8} {'GB/s':>6}")
    for (N, Cc, H, W, K, R, S, st, pd) in SHAPES:
        x = rng.standard_normal((N, Cc, H, W)).astype(dt)
        ks, s2, p2, d2 = (R, S), (st, st), (pd, pd), (1, 1)
        OH, OW = (H + 2 * pd - R) // st + 1, (W + 2 * pd - S) // st + 1
        col = np.empty((N * OH * OW, Cc * R * S), dt)
        xo = np.empty_like(x)
        name = str((N, Cc, H, W, R, S, st, pd))
        ta, tr = best([lambda: _C.im2col(x, col, ks, s2, p2, d2), lambda: ref.im2col(x, ks, s2, p2, d2)], args.reps)
        print(f"{name:30} im2col  {ta * 1e3:10.2f} {tr * 1e3:9.2f} {tr / ta:7.2f}x {col.nbytes / ta / 1e9:6.1f}")
        ta, tr = best([lambda: _C.col2im(col, xo, ks, s2, p2, d2),
                       lambda: ref.col2im(col, x.shape, ks, s2, p2, d2)], args.reps)
        print(f"{name:30} col2im  {ta * 1e3:10.2f} {tr * 1e3:9.2f} {tr / ta:7.2f}x {col.nbytes / ta / 1e9:6.1f}")


if __name__ == "__main__":
    main()
