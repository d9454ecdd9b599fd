"""Before/after table: this tree's fastnn, a baseline build of fastnn, and PyTorch, timed in one process.

    PYTHONPATH=. python dev/cpu_before_after.py --baseline /tmp/old/fastnn [--threads 2] [--reps 5] [--cpu-time]

--baseline is the `fastnn` package directory of another build (e.g. `git archive <commit>` unpacked and built with
`python setup.py build_ext --inplace`); it is imported under the name `fastnn_base`, so both extension modules live
side by side. Each case runs base, new and torch in alternating blocks of calls (dev/cpu_conv.py's `best`) and
keeps each one's best time; the numpy sgemm rate is measured in the same run. GFLOP/s is the new build's.
Conv FLOPs: 2*N*K*OH*OW*C*KH*KW per pass (backward: 2 passes). LSTM FLOPs: 3 x 2*B*T*(D+H)*4H (fwd + bwd).
"""
import argparse
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_conv  # noqa: E402
from cpu_conv import SHAPES, best  # noqa: E402
from cpu_pool_bn_lstm import lstm_case  # noqa: E402

from fastnn import _C, _cpu  # noqa: E402


def load_baseline(path):
    spec = importlib.util.spec_from_file_location("fastnn_base", os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fastnn_base"] = mod
    spec.loader.exec_module(mod)
    import fastnn_base._cpu as bcpu  # noqa: E402
    from fastnn_base import _C as bC
    return bC, bcpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cpu-time", action="store_true", help="1 thread, CPU time of the calling thread")
    args = ap.parse_args()
    if args.cpu_time:
        cpu_conv.CLOCK, args.threads = time.thread_time, 1
        import threadpoolctl
        threadpoolctl.threadpool_limits(1)
    import torch
    import torch.nn.functional as F
    bC, bcpu = load_baseline(args.baseline)
    for c in (_C, bC):
        c.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = 2048
    A, B = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    C = np.empty((n, n), np.float32)
    tb_, tn_, tnp = best([lambda: bC.gemm(False, False, A, B, C, 1.0, 0.0),
                          lambda: _C.gemm(False, False, A, B, C, 1.0, 0.0), lambda: A @ B], max(4, args.reps))
    g = lambda t: 2 * n ** 3 / t / 1e9  # noqa: E731
    print(f"[{'CPU time' if args.cpu_time else 'wall clock'}] threads {args.threads}; sgemm {n}^3 float32 GFLOP/s: numpy {g(tnp):.0f}, fastnn base {g(tb_):.0f}, "
          f"new {g(tn_):.0f}")
    print(f"{'case (float32)':38} {'base ms':>8} {'new ms':>8} {'torch ms':>9} {'base/t':>7} {'new/t':>7} "
          f"{'GFLOP/s':>8}")

    def line(name, tb, tn, tt, flop):
        gf = f"{flop / tn / 1e9:8.1f}" if flop else "       -"
        print(f"{name:38} {tb * 1e3:8.2f} {tn * 1e3:8.2f} {tt * 1e3:9.2f} {tt / tb:6.2f}x {tt / tn:6.2f}x {gf}",
              flush=True)

    for (N, Cc, H, W, K, R, S, st, pd) in SHAPES:
        x = rng.standard_normal((N, Cc, H, W), dtype=np.float32)
        w = (rng.standard_normal((K, Cc, R, S)) / np.sqrt(Cc * R * S)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        OH, OW = (H + 2 * pd - R) // st + 1, (W + 2 * pd - S) // st + 1
        flop = 2.0 * N * K * OH * OW * Cc * R * S
        y = np.empty((N, K, OH, OW), np.float32)
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        s2, p2, d2 = (st, st), (pd, pd), (1, 1)

        def t_fwd():
            with torch.no_grad():
                F.conv2d(tx, tw, tb, st, pd)

        fwds = [lambda c=c: c.conv2d_fwd(x, w, b, np.empty_like(y), s2, p2, d2, 1) for c in (bC, _C)]
        t = best(fwds + [t_fwd], args.reps)
        line(f"conv fwd {(N, Cc, H, W, K, R, S, st, pd)}", *t, flop)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        gx, gw, gb = (tx.clone().requires_grad_(), tw.clone().requires_grad_(), tb.clone().requires_grad_())
        ty = F.conv2d(gx, gw, gb, st, pd)
        tdy = torch.from_numpy(dy)

        def t_bwd():
            torch.autograd.grad(ty, (gx, gw, gb), tdy, retain_graph=True)

        bwds = [lambda c=c: c.conv2d_bwd(dy, x, w, np.empty_like(x), np.empty_like(w), np.empty(K, np.float32),
                                         s2, p2, d2, 1) for c in (bC, _C)]
        t = best(bwds + [t_bwd], args.reps)
        line(f"conv bwd {(N, Cc, H, W, K, R, S, st, pd)}", *t, 2 * flop)

    for name, Tn in [("lstm_cell fwd+bwd B64 D=H=512", 0), ("lstm fwd+bwd B64 T32 D=H=512", 32)]:
        mk, slow, flop = lstm_case(rng, Tn, torch)
        t = best([mk(bcpu), mk(_cpu), slow], max(args.reps, 7))
        line(name, *t, flop)

if __name__ == "__main__":
    main()
